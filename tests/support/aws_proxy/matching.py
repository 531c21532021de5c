"""What the proxy's rules share: which calls a rule is for, and checking the
numbers a control request gives.

A rule narrows by `service`, `action` and `region` (each a string or a list
of strings, compared ignoring case); a key it leaves out matches any call.
"""

MATCH_KEYS = ("service", "action", "region")


class BadRule(ValueError):
    """A control request or flag whose rules the proxy cannot apply."""


def matches(spec, call):
    """True when every match key the spec names has the call's value."""
    for key in MATCH_KEYS:
        wanted = spec.get(key)
        if wanted is None:
            continue
        values = wanted if isinstance(wanted, list) else [wanted]
        if str(call[key] or "").lower() not in {str(v).lower() for v in values}:
            return False
    return True


def check_spec(spec, keys, numbers):
    """Refuse a spec that is not an object, has keys outside `keys` or
    `MATCH_KEYS`, or whose `numbers` are not numbers >= 0; a copy of it."""
    if not isinstance(spec, dict):
        raise BadRule(f"a rule is a JSON object, not {spec!r}")
    unknown = set(spec) - set(keys) - set(MATCH_KEYS)
    if unknown:
        raise BadRule(f"unknown rule keys {sorted(unknown)}")
    for key in numbers:
        value = spec.get(key)
        if value is not None and (isinstance(value, bool)
                                  or not isinstance(value, (int, float))
                                  or value < 0):
            raise BadRule(f"{key} must be a number >= 0, not {value!r}")
    return dict(spec)
