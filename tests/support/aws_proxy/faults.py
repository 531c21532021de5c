"""Fault rules: on command, answer as the real service does when it
throttles, fails, denies, runs out of capacity, stalls or drops the
connection (see fault_proxy.py for the KINDs and a rule's keys).
"""

from aws_proxy.matching import BadRule, check_spec, matches
from aws_proxy.wire import ERRORS, service_error

OTHER_KINDS = {"delay", "reset", "succeed_then_timeout", "succeed_then_reset"}
KINDS = set(ERRORS) | OTHER_KINDS
RULE_KEYS = ("fault", "count", "delay", "status", "code", "message", "params")


class Rule:
    """One fault rule; `count` is None for unlimited."""

    def __init__(self, spec):
        self.spec = check_spec(spec, RULE_KEYS, ("count", "delay", "status"))
        if spec.get("fault") not in KINDS:
            raise BadRule(f"fault {spec.get('fault')!r} is not one of {sorted(KINDS)}")
        self.fault = spec["fault"]
        self.count = spec.get("count")
        self.delay = spec.get("delay")
        # Request parameters that must have exactly these values, e.g.
        # {"NetworkInterface.1.SubnetId": "subnet-1"}: one AZ out of capacity.
        self.params = spec.get("params", {})
        if not (isinstance(self.params, dict)
                and all(isinstance(v, str) for v in self.params.values())):
            raise BadRule(f"params must be an object of strings, not {self.params!r}")

    def matches(self, call, params=None):
        return matches(self.spec, call) and all(
            (params or {}).get(name) == value for name, value in self.params.items())

    def error(self, request):
        """(status, code, message) of this rule's error KIND for the request,
        with the rule's own status, code or message in their place if given."""
        status, code, message = service_error(self.fault, request)
        return (int(self.spec.get("status", status)), self.spec.get("code", code),
                self.spec.get("message", message))

    def to_json(self):
        return {**self.spec, "count": self.count}
