"""The proxy's latency model in process, on a clock the test moves: EC2's
token buckets (burst, refill, one per action and region), the answer delays,
the launch caps, and the flags that set them."""

from aws_proxy.latency import LatencyModel, rule_from_flag
from aws_proxy.matching import BadRule


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def call(action, region="us-east-2", service="ec2"):
    return {"service": service, "action": action, "region": region}


def admitted(model, how_many, *args):
    """How many of `how_many` calls in a row the model lets through."""
    return sum(model.admit(call(*args)) for _ in range(how_many))


def test_bucket_gives_its_burst_then_refills_at_its_rate():
    clock = Clock()
    model = LatencyModel({"buckets": [{"action": "RunInstances", "burst": 5, "refill": 2}]}, clock)
    assert admitted(model, 7, "RunInstances") == 5
    clock.now = 0.25                     # half a token back: not one yet
    assert admitted(model, 1, "RunInstances") == 0
    clock.now = 0.5                      # one token back (the refused call took none)
    assert admitted(model, 3, "RunInstances") == 1
    clock.now = 1.5                      # two more
    assert admitted(model, 3, "RunInstances") == 2
    clock.now = 100                      # refilled, never past the burst
    assert admitted(model, 9, "RunInstances") == 5


def test_buckets_are_per_action_and_region():
    clock = Clock()
    model = LatencyModel({"buckets": [{"action": ["RunInstances", "StartInstances"],
                                       "burst": 2, "refill": 1}]}, clock)
    assert admitted(model, 3, "RunInstances", "us-east-2") == 2
    assert admitted(model, 3, "RunInstances", "us-west-2") == 2
    assert admitted(model, 3, "StartInstances", "us-east-2") == 2
    assert admitted(model, 9, "DescribeInstances", "us-east-2") == 9      # no bucket
    clock.now = 1
    assert [admitted(model, 2, a, r) for a, r in [("RunInstances", "us-east-2"),
                                                   ("RunInstances", "us-west-2"),
                                                   ("StartInstances", "us-east-2")]] == [1, 1, 1]


def test_first_matching_rule_applies_and_region_narrows_it():
    model = LatencyModel({
        "delays": [{"action": "RunInstances", "region": "us-west-2", "seconds": 30},
                   {"action": ["RunInstances", "StopInstances"], "seconds": 1},
                   {"action": "DescribeInstances", "seconds": 0.3}],
        "buckets": [{"action": "RunInstances", "region": "us-west-2", "burst": 1, "refill": 0},
                    {"action": "RunInstances", "burst": 3, "refill": 0}]}, Clock())
    assert model.delay(call("RunInstances", "us-west-2")) == 30
    assert model.delay(call("runinstances", "us-east-2")) == 1           # case ignored
    assert model.delay(call("StopInstances")) == 1
    assert model.delay(call("DescribeInstances")) == 0.3
    assert model.delay(call("TerminateInstances")) == 0
    assert admitted(model, 5, "RunInstances", "us-west-2") == 1
    assert admitted(model, 5, "RunInstances", "us-east-2") == 3


def test_max_count_caps_ec2_launches_only():
    model = LatencyModel({"max_count": [{"region": "us-east-2", "limit": 2},
                                        {"limit": 5}]})
    assert model.max_count(call("RunInstances", "us-east-2")) == 2
    assert model.max_count(call("RunInstances", "eu-west-1")) == 5
    assert model.max_count(call("StartInstances")) is None
    assert model.max_count(call("RunInstances", service="sqs")) is None
    assert LatencyModel().max_count(call("RunInstances")) is None


def test_flags_read_as_rules():
    assert rule_from_flag("delays", "RunInstances,StartInstances@us-west-2=1") == {
        "action": ["RunInstances", "StartInstances"], "region": "us-west-2", "seconds": 1}
    assert rule_from_flag("delays", "DescribeInstances=0.3") == {
        "action": "DescribeInstances", "seconds": 0.3}
    assert rule_from_flag("delays", "@us-east-2=2") == {"region": "us-east-2", "seconds": 2}
    assert rule_from_flag("buckets", "RunInstances=5/2") == {
        "action": "RunInstances", "burst": 5, "refill": 2}
    assert rule_from_flag("max_count", "3") == {"limit": 3}
    assert rule_from_flag("max_count", "@us-east-2=2") == {"region": "us-east-2", "limit": 2}
    for part, bad in [("delays", "RunInstances"), ("delays", "RunInstances=soon"),
                      ("buckets", "RunInstances=5"), ("max_count", "RunInstances=2")]:
        try:
            rule_from_flag(part, bad)
        except BadRule:
            continue
        raise AssertionError(f"{part} {bad!r} was accepted")


def test_bad_models_are_refused():
    for bad in [[], {"jitter": []}, {"delays": {}}, {"delays": [{"action": "X"}]},
                {"buckets": [{"burst": 1}]}, {"buckets": [{"burst": -1, "refill": 1}]},
                {"max_count": [{"limit": True}]}, {"delays": [{"seconds": 1, "when": 2}]}]:
        try:
            LatencyModel(bad)
        except BadRule:
            continue
        raise AssertionError(f"{bad!r} was accepted")
