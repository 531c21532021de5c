"""A latency model of real AWS, which moto (answering at once, never
throttling, always filling a launch) is not.

Three parts, each a list of rules matched as fault rules are (service,
action, region; see matching.py), the first matching rule applying:

  delays     {"action": ..., "region": ..., "seconds": S}: the call is
             answered S seconds after it arrived (it reaches moto at once,
             as a real call takes effect before its slow answer comes back).
  buckets    {"action": ..., "region": ..., "burst": B, "refill": R}: EC2's
             request token bucket, one per action and region of the calls
             the rule matches: it starts full with B tokens, each call takes
             one, R come back per second up to B; a call that finds it empty
             is throttled (EC2: RequestLimitExceeded, HTTP 503) at once.
  max_count  {"region": ..., "limit": N}: RunInstances fills at most N of a
             launch, as EC2 does when capacity is short (the proxy asks
             moto for that many); MinCount above N fails with
             InsufficientInstanceCapacity.

On the command line: `--delay [ACTION,...][@REGION]=SECONDS`,
`--bucket [ACTION,...][@REGION]=BURST/REFILL`, `--max-count [@REGION=]N`
(see `rule_from_flag`). Time comes from an injectable clock, so the buckets
can be tested without waiting.
"""

import threading
import time

from aws_proxy.matching import BadRule, check_spec, matches

PARTS = {"delays": ("seconds",), "buckets": ("burst", "refill"), "max_count": ("limit",)}


class TokenBucket:
    """EC2's request token bucket: `burst` tokens, `refill` per second."""

    def __init__(self, burst, refill, now):
        self.burst = burst
        self.refill = refill
        self.level = float(burst)
        self.stamp = now

    def take(self, now):
        """Take a token at time `now`; False if there is none."""
        self.level = min(self.burst, self.level + (now - self.stamp) * self.refill)
        self.stamp = now
        if self.level < 1:
            return False
        self.level -= 1
        return True


class LatencyModel:
    """Delays, token buckets and launch caps; thread-safe.

    `spec` is {"delays": [...], "buckets": [...], "max_count": [...]} (any
    part may be left out); BadRule if it is not.
    """

    def __init__(self, spec=None, clock=time.monotonic):
        spec = {} if spec is None else spec
        if not isinstance(spec, dict) or set(spec) - set(PARTS):
            raise BadRule(f"a latency model is an object of {sorted(PARTS)}")
        self.rules = {}
        for part, values in PARTS.items():
            rules = spec.get(part, [])
            if not isinstance(rules, list):
                raise BadRule(f"{part} must be a list")
            self.rules[part] = [check_spec(rule, values, values) for rule in rules]
            for rule in self.rules[part]:
                missing = [v for v in values if rule.get(v) is None]
                if missing:
                    raise BadRule(f"a {part} rule needs {missing}: {rule}")
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets = {}        # (rule index, action, region) -> TokenBucket

    def _first(self, part, call):
        return next(((i, r) for i, r in enumerate(self.rules[part]) if matches(r, call)),
                    (None, None))

    def delay(self, call):
        """Seconds after its arrival that the call is answered (0: at once)."""
        _, rule = self._first("delays", call)
        return rule["seconds"] if rule else 0

    def admit(self, call):
        """False when the call's token bucket is empty (it is throttled)."""
        index, rule = self._first("buckets", call)
        if rule is None:
            return True
        key = (index, (call["action"] or "").lower(), (call["region"] or "").lower())
        with self._lock:
            now = self._clock()
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self._buckets[key] = TokenBucket(rule["burst"], rule["refill"], now)
            return bucket.take(now)

    def max_count(self, call):
        """The most instances a RunInstances call may get, or None."""
        if (call["service"] or "").lower() != "ec2" or call["action"] != "RunInstances":
            return None
        _, rule = self._first("max_count", call)
        return int(rule["limit"]) if rule else None

    def to_json(self):
        """The rules, and the level of every bucket in use."""
        with self._lock:
            levels = [{"rule": index, "action": action, "region": region,
                       "level": round(bucket.level, 3)}
                      for (index, action, region), bucket in sorted(self._buckets.items())]
        return {**self.rules, "levels": levels}


def rule_from_flag(part, text):
    """One rule of `part` from its command-line form:
    delays `[ACTION,...][@REGION]=SECONDS`, buckets
    `[ACTION,...][@REGION]=BURST/REFILL`, max_count `[@REGION=]N`."""
    target, eq, value = text.rpartition("=")
    if not eq and part != "max_count":
        raise BadRule(f"{text!r}: expected [ACTION,...][@REGION]=VALUE")
    actions, _, region = target.partition("@")
    rule = {}
    if actions:
        if part == "max_count":
            raise BadRule(f"{text!r}: --max-count takes [@REGION=]N (RunInstances only)")
        names = actions.split(",")
        rule["action"] = names if len(names) > 1 else names[0]
    if region:
        rule["region"] = region
    try:
        if part == "buckets":
            burst, slash, refill = value.partition("/")
            if not slash:
                raise ValueError(value)
            rule.update(burst=float(burst), refill=float(refill))
        else:
            rule[PARTS[part][0]] = float(value)
    except ValueError as err:
        raise BadRule(f"{text!r}: not a number where one is expected") from err
    return rule
