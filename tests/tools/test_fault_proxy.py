"""The AWS proxy (tests/support/fault_proxy.py) end to end: moto's server and
the proxy on free loopback ports, driven with boto3 and raw HTTP.

It proves what fault tests of slave_manager and the benchmark rely on:
normal traffic passes untouched and is logged, each fault KIND reaches boto3
as the intended error code for EC2, STS and SQS, RunInstances with a
ClientToken seen before makes no second instance, resets and held answers
look to a client as they would from AWS, the latency model throttles with
EC2's error, holds answers without serialising them and fills launches only
in part, and the control API keeps its shapes.
"""

import contextlib
import errno
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError, ReadTimeoutError
from moto_server import MotoServer

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROXY = os.path.join(REPO, "tests", "support", "fault_proxy.py")
REGION = "us-east-2"
# The proxy starts with a latency model for a region no other test uses, so
# the flags' model can be read back and restored by a reset.
FLAG_REGION = "eu-west-1"
LATENCY_FLAGS = ["--delay", f"DescribeAvailabilityZones@{FLAG_REGION}=0.2",
                 "--bucket", f"DescribeAvailabilityZones,DescribeRegions@{FLAG_REGION}=3/1",
                 "--max-count", f"@{FLAG_REGION}=4"]
# EC2's error answer, as the query API sends it.
EC2_ERROR = re.compile(r'<\?xml version="1.0" encoding="UTF-8"\?>\n<Response><Errors><Error>'
                       r"<Code>(\w+)</Code><Message>([^<]*)</Message></Error></Errors>"
                       r"<RequestID>[0-9a-f-]{36}</RequestID></Response>")
NO_RETRY = Config(retries={"total_max_attempts": 1, "mode": "standard"})

# KIND -> service -> (HTTP status, the code boto3 reports)
EXPECTED = {
    "throttle": {"ec2": (503, "RequestLimitExceeded"), "sts": (400, "Throttling"),
                 "sqs": (400, "RequestThrottled")},
    "slowdown": {"ec2": (503, "SlowDown"), "sts": (503, "SlowDown"),
                 "sqs": (503, "SlowDown")},
    "error500": {"ec2": (500, "InternalError"), "sts": (500, "InternalFailure"),
                 "sqs": (500, "InternalFailure")},
    "insufficient_capacity": {"ec2": (500, "InsufficientInstanceCapacity")},
    "access_denied": {"ec2": (403, "UnauthorizedOperation"),
                      "sts": (403, "AccessDenied"), "sqs": (403, "AccessDenied")},
}


@contextlib.contextmanager
def fixture():
    world = World()
    try:
        yield world
    finally:
        world.stop()


class World:
    """moto and the proxy, with boto3 clients aimed at the proxy."""

    def __init__(self):
        self.moto = MotoServer()
        self.proxy = subprocess.Popen(
            [sys.executable, PROXY, "--target", self.moto.url, *LATENCY_FLAGS],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proxy.stdout.readline()
        assert line.startswith("READY port="), f"proxy said {line!r}"
        self.port = int(line.split("=")[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.ec2 = self.client("ec2")
        self.sts = self.client("sts")
        self.sqs = self.client("sqs")
        self.ami = an_ami(self.ec2)
        self.queue = self.sqs.create_queue(QueueName="jenkins-requests")["QueueUrl"]

    def client(self, service, config=NO_RETRY, region=REGION):
        return boto3.client(service, region_name=region, endpoint_url=self.endpoint,
                            aws_access_key_id="testing", aws_secret_access_key="testing",
                            config=config)

    def control(self, method, path, body=None):
        """(status, JSON) of a control request."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.endpoint + path, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    def faults(self, *rules):
        status, answer = self.control("POST", "/_proxy/faults", {"rules": list(rules)})
        assert status == 200, answer

    def calls(self):
        return self.control("GET", "/_proxy/calls")[1]

    def latency(self, **model):
        status, answer = self.control("POST", "/_proxy/latency", model)
        assert status == 200, answer

    def instances(self, ec2=None):
        reservations = (ec2 or self.ec2).describe_instances()["Reservations"]
        return [i["InstanceId"] for r in reservations for i in r["Instances"]]

    def stop(self):
        if self.proxy.poll() is None:
            self.proxy.terminate()
            try:
                self.proxy.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proxy.kill()
                self.proxy.wait()
        self.moto.stop()


def an_ami(ec2):
    """One of moto's stock AMIs, found by name: listing them all takes 2 s."""
    images = ec2.describe_images(Owners=["amazon"], Filters=[
        {"Name": "name", "Values": ["amzn2-ami-hvm-2.0.*-x86_64-gp2"]}])["Images"]
    return images[0]["ImageId"]


def error_of(call):
    """(HTTP status, boto3 error code) of a call expected to fail."""
    try:
        call()
    except ClientError as err:
        return err.response["ResponseMetadata"]["HTTPStatusCode"], err.response["Error"]["Code"]
    raise AssertionError("the call succeeded")


# --- the tests ------------------------------------------------------------------


def test_normal_traffic_passes(w):
    w.control("POST", "/_proxy/reset")
    assert w.sts.get_caller_identity()["Account"] == "123456789012"
    assert isinstance(w.instances(), list)
    w.sqs.send_message(QueueUrl=w.queue, MessageBody="hello")
    messages = w.sqs.receive_message(QueueUrl=w.queue).get("Messages", [])
    assert [m["Body"] for m in messages] == ["hello"], messages
    seen = [(c["service"], c["region"], c["action"], c["status"], c["fault"]) for c in w.calls()]
    assert seen == [("sts", REGION, "GetCallerIdentity", 200, None),
                    ("ec2", REGION, "DescribeInstances", 200, None),
                    ("sqs", REGION, "SendMessage", 200, None),
                    ("sqs", REGION, "ReceiveMessage", 200, None)], seen
    assert all(isinstance(c["time"], float) for c in w.calls())


def test_each_fault_is_parsed_as_its_code(w):
    actions = {
        "ec2": lambda: w.ec2.describe_instances(),
        "sts": lambda: w.sts.get_caller_identity(),
        "sqs": lambda: w.sqs.receive_message(QueueUrl=w.queue),
    }
    for kind, services in EXPECTED.items():
        for service, expected in services.items():
            w.faults({"fault": kind, "service": service})
            got = error_of(actions[service])
            assert got == expected, f"{kind} on {service}: {got} != {expected}"
    w.faults()


def test_sqs_json_error_carries_query_code_header(w):
    """aws-sdk-sqs and botocore read the code from x-amzn-query-error."""
    w.faults({"fault": "access_denied", "service": "sqs"})
    try:
        w.sqs.receive_message(QueueUrl=w.queue)
    except ClientError as err:
        headers = err.response["ResponseMetadata"]["HTTPHeaders"]
        assert headers["x-amzn-query-error"] == "AccessDenied;Sender", headers
        assert err.response["Error"]["QueryErrorCode"] == "AccessDeniedException"
    else:
        raise AssertionError("no error")
    w.faults()


def test_sqs_query_protocol_gets_xml(w):
    """An SQS client on the old query protocol gets <ErrorResponse>."""
    w.faults({"fault": "throttle", "service": "sqs"})
    body = "Action=ReceiveMessage&Version=2012-11-05&QueueUrl=" + w.queue
    status, text = raw_post(w.port, body, "sqs")
    assert status == 400 and "<Code>RequestThrottled</Code>" in text, text
    assert text.startswith("<ErrorResponse") and "<Type>Sender</Type>" in text, text
    w.faults()


def test_insufficient_capacity_names_spot_or_type(w):
    w.faults({"fault": "insufficient_capacity", "action": "RunInstances"})
    for market, needle in ((None, "sufficient c6i.large capacity"),
                           ("spot", "no Spot capacity")):
        extra = {"InstanceMarketOptions": {"MarketType": market}} if market else {}
        try:
            w.ec2.run_instances(ImageId=w.ami, MinCount=1, MaxCount=1,
                                InstanceType="c6i.large", **extra)
        except ClientError as err:
            assert needle in err.response["Error"]["Message"], err.response
        else:
            raise AssertionError("no error")
    w.faults()


def test_rules_match_region_action_and_count(w):
    w.control("POST", "/_proxy/reset")
    w.faults({"fault": "throttle", "service": "ec2", "region": "us-west-2", "count": 1},
             {"fault": "error500", "action": "DescribeInstances", "count": 1})
    west = w.client("ec2", region="us-west-2")
    assert error_of(west.describe_instances)[1] == "RequestLimitExceeded"
    assert error_of(west.describe_instances)[1] == "InternalError"   # first rule spent
    west.describe_instances()                                        # both spent
    w.ec2.describe_regions()                                         # never matched
    rules = w.control("GET", "/_proxy/faults")[1]["rules"]
    assert [r["count"] for r in rules] == [0, 0], rules
    faults = [c["fault"] for c in w.calls()]
    assert faults == ["throttle", "error500", None, None], faults
    w.faults()


def test_rules_match_request_parameters(w):
    # One offering out of capacity (an AZ's subnet, here an instance type):
    # the rest of the launches go through.
    w.faults({"fault": "insufficient_capacity", "action": "RunInstances",
              "params": {"InstanceType": "c6i.large"}})
    assert error_of(lambda: w.ec2.run_instances(
        ImageId=w.ami, MinCount=1, MaxCount=1, InstanceType="c6i.large"))[1] == \
        "InsufficientInstanceCapacity"
    w.ec2.run_instances(ImageId=w.ami, MinCount=1, MaxCount=1, InstanceType="t2.small")
    status, answer = w.control("POST", "/_proxy/faults",
                               {"rules": [{"fault": "error500", "params": {"A": 1}}]})
    assert status == 400 and "params" in answer["error"], answer
    w.faults()


def test_sdk_retry_outlasts_a_counted_fault(w):
    retrying = w.client("ec2", Config(retries={"total_max_attempts": 4, "mode": "standard"}))
    w.control("DELETE", "/_proxy/calls")
    w.faults({"fault": "throttle", "service": "ec2", "count": 2})
    retrying.describe_regions()
    assert [c["status"] for c in w.calls()] == [503, 503, 200], w.calls()
    w.faults()


def test_same_client_token_makes_one_instance(w):
    before = set(w.instances())
    w.control("DELETE", "/_proxy/calls")
    launch = dict(ImageId=w.ami, MinCount=1, MaxCount=1, InstanceType="t2.small",
                  ClientToken="selftest-token-1")
    first = w.ec2.run_instances(**launch)["Instances"][0]["InstanceId"]
    again = w.ec2.run_instances(**launch)["Instances"][0]["InstanceId"]
    assert first == again
    assert set(w.instances()) - before == {first}
    # Same token, other parameters: EC2's IdempotentParameterMismatch.
    code = error_of(lambda: w.ec2.run_instances(**{**launch, "InstanceType": "t2.micro"}))
    assert code == (400, "IdempotentParameterMismatch"), code
    # The same token in another region is another launch.
    west = w.client("ec2", region="us-west-2")
    other = west.run_instances(**{**launch, "ImageId": an_ami(west)})["Instances"][0]["InstanceId"]
    assert other != first
    faults = [c["fault"] for c in w.calls() if c["action"] == "RunInstances"]
    assert faults == [None, "idempotent-replay", "idempotent-mismatch", None], faults


def test_client_tokens_are_zonal_for_a_launch_into_a_subnet(w):
    # EC2's idempotency for RunInstances with a SubnetId is per AZ: the same
    # token in another AZ's subnet launches anew; in another subnet of the
    # same AZ it is a mismatch.
    vpc = w.ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    zones = [z["ZoneName"] for z in w.ec2.describe_availability_zones()["AvailabilityZones"]][:2]
    def subnet(cidr, zone):
        return w.ec2.create_subnet(VpcId=vpc, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"]["SubnetId"]
    first_a, second_a, first_b = subnet("10.9.1.0/24", zones[0]), subnet("10.9.2.0/24", zones[0]), \
        subnet("10.9.3.0/24", zones[1])
    w.control("DELETE", "/_proxy/calls")
    launch = dict(ImageId=w.ami, MinCount=1, MaxCount=1, InstanceType="t2.small",
                  ClientToken="selftest-zonal-token")
    def run(subnet):
        return w.ec2.run_instances(**launch, SubnetId=subnet)["Instances"][0]["InstanceId"]
    in_a = run(first_a)
    in_b = run(first_b)
    assert in_a != in_b, "another AZ launches anew"
    assert run(first_a) == in_a and run(first_b) == in_b, "each AZ replays its own"
    code = error_of(lambda: run(second_a))
    assert code == (400, "IdempotentParameterMismatch"), code
    faults = [c["fault"] for c in w.calls() if c["action"] == "RunInstances"]
    assert faults == [None, None, "idempotent-replay", "idempotent-replay", "idempotent-mismatch"], faults


def test_reset_is_a_tcp_reset(w):
    """A raw client reading the answer gets ECONNRESET, not an EOF."""
    w.faults({"fault": "reset", "action": "DescribeRegions", "count": 1})
    try:
        raw_post(w.port, "Action=DescribeRegions&Version=2016-11-15", "ec2")
    except ConnectionResetError as err:
        # http.client's RemoteDisconnected (a FIN) is a ConnectionResetError too
        assert err.errno == errno.ECONNRESET, repr(err)
    else:
        raise AssertionError("no connection reset")
    assert w.calls()[-1]["status"] is None and w.calls()[-1]["fault"] == "reset"
    w.faults()


def test_reset_seen_by_boto3_then_next_call_passes(w):
    w.faults({"fault": "reset", "action": "DescribeRegions", "count": 1})
    try:
        w.ec2.describe_regions()
    except ConnectionClosedError:
        pass
    else:
        raise AssertionError("no connection error")
    w.ec2.describe_regions()
    w.faults()


def test_delay_then_forward(w):
    w.faults({"fault": "delay", "action": "DescribeRegions", "delay": 0.6, "count": 1})
    start = time.monotonic()
    w.ec2.describe_regions()
    assert time.monotonic() - start >= 0.6
    assert w.calls()[-1]["fault"] == "delay" and w.calls()[-1]["status"] == 200
    w.faults()


def test_delayed_error(w):
    w.faults({"fault": "throttle", "service": "sts", "delay": 0.4, "count": 1})
    start = time.monotonic()
    assert error_of(w.sts.get_caller_identity)[1] == "Throttling"
    assert time.monotonic() - start >= 0.4
    w.faults()


def test_timed_out_launch_happened_and_retry_is_replayed(w):
    """The launch that timed out but succeeded: the client sees a timeout,
    EC2 has the instance, and the SDK's retry (same token) gets it back."""
    impatient = w.client("ec2", Config(read_timeout=1, connect_timeout=1,
                                       retries={"total_max_attempts": 1}))
    before = set(w.instances())
    w.faults({"fault": "succeed_then_timeout", "action": "RunInstances", "delay": 3, "count": 1})
    launch = dict(ImageId=w.ami, MinCount=1, MaxCount=1, InstanceType="t2.small",
                  ClientToken="selftest-token-timeout")
    try:
        impatient.run_instances(**launch)
    except ReadTimeoutError:
        pass
    else:
        raise AssertionError("no timeout")
    made = set(w.instances()) - before
    assert len(made) == 1, made
    retried = w.ec2.run_instances(**launch)["Instances"][0]["InstanceId"]
    assert {retried} == made
    faults = [c["fault"] for c in w.calls() if c["action"] == "RunInstances"][-2:]
    assert faults == ["succeed_then_timeout", "idempotent-replay"], faults
    w.faults()


def test_succeed_then_reset(w):
    before = set(w.instances())
    w.faults({"fault": "succeed_then_reset", "action": "RunInstances", "count": 1})
    try:
        w.ec2.run_instances(ImageId=w.ami, MinCount=1, MaxCount=1, ClientToken="selftest-reset")
    except ConnectionClosedError:
        pass
    else:
        raise AssertionError("no connection error")
    assert len(set(w.instances()) - before) == 1
    w.faults()


def test_keep_alive_chunked_and_errors_on_one_connection(w):
    connection = http.client.HTTPConnection("127.0.0.1", w.port, timeout=5)
    w.faults({"fault": "error500", "action": "DescribeRegions", "count": 1})
    for expected in (500, 200):
        connection.putrequest("POST", "/")
        for name, value in signed_headers("ec2").items():
            connection.putheader(name, value)
        connection.putheader("Transfer-Encoding", "chunked")
        connection.endheaders()
        for piece in (b"Action=DescribeRegions", b"&Version=2016-11-15"):
            connection.send(b"%x\r\n%s\r\n" % (len(piece), piece))
        connection.send(b"0\r\n\r\n")
        answer = connection.getresponse()
        body = answer.read()
        assert answer.status == expected, (answer.status, body)
    assert b"DescribeRegionsResponse" in body
    connection.close()
    w.faults()


def test_control_api(w):
    status, answer = w.control("POST", "/_proxy/faults", {"rules": [{"fault": "explode"}]})
    assert status == 400 and "explode" in answer["error"], answer
    status, answer = w.control("POST", "/_proxy/faults", {"rules": [{"fault": "delay", "when": 1}]})
    assert status == 400, answer
    assert w.control("GET", "/_proxy/nothing")[0] == 404
    w.faults({"fault": "throttle"})
    assert w.control("POST", "/_proxy/reset") == (200, {"ok": True})
    assert w.calls() == [] and w.control("GET", "/_proxy/faults")[1] == {"rules": []}
    w.ec2.describe_regions()
    assert len(w.calls()) == 1
    w.control("DELETE", "/_proxy/calls")
    assert w.calls() == []
    # moto-api calls go through, and never meet a fault
    w.faults({"fault": "error500"})
    with urllib.request.urlopen(w.endpoint + "/moto-api/", timeout=5) as answer:
        assert answer.status == 200
    w.faults()


def test_calls_log_answer_time_size_and_since(w):
    w.control("DELETE", "/_proxy/calls")
    w.ec2.describe_regions()
    w.ec2.describe_regions()
    first, second = w.calls()
    assert first["time"] <= first["end"] <= second["time"] <= second["end"], (first, second)
    assert first["bytes"] > 0 and first["throttled"] is False and first["delay"] is None
    assert w.control("GET", "/_proxy/calls?since=1")[1] == [second]


def test_empty_bucket_throttles_with_ec2_error_per_region_and_action(w):
    """Two tokens and no refill: the third DescribeRegions of a region is
    refused as EC2 refuses it; other regions and actions have their own."""
    w.control("DELETE", "/_proxy/calls")
    w.latency(buckets=[{"action": ["DescribeRegions", "DescribeAvailabilityZones"],
                        "burst": 2, "refill": 0}])
    body = "Action=DescribeRegions&Version=2016-11-15"
    assert [raw_post(w.port, body, "ec2")[0] for _ in range(2)] == [200, 200]
    status, text = raw_post(w.port, body, "ec2")
    assert status == 503, (status, text)
    assert EC2_ERROR.fullmatch(text).groups() == ("RequestLimitExceeded", "Request limit exceeded."), text
    assert error_of(w.ec2.describe_regions) == (503, "RequestLimitExceeded")
    w.ec2.describe_availability_zones()                       # another action's bucket
    w.client("ec2", region="us-west-2").describe_regions()    # another region's bucket
    w.ec2.describe_instances()                                # no bucket at all
    throttled = [(c["region"], c["action"]) for c in w.calls() if c["throttled"]]
    assert throttled == [(REGION, "DescribeRegions")] * 2, w.calls()
    assert all(c["status"] == 503 for c in w.calls() if c["throttled"])
    levels = w.control("GET", "/_proxy/latency")[1]["levels"]
    assert {(b["action"], b["region"], b["level"]) for b in levels} == {
        ("describeregions", REGION, 0), ("describeavailabilityzones", REGION, 1),
        ("describeregions", "us-west-2", 1)}, levels
    w.control("POST", "/_proxy/reset")


def test_throttled_call_meets_no_fault(w):
    """The bucket answers first: a throttled call spends no fault rule."""
    w.latency(buckets=[{"action": "DescribeRegions", "burst": 1, "refill": 0}])
    w.faults({"fault": "error500", "action": "DescribeRegions", "count": 2})
    w.control("DELETE", "/_proxy/calls")
    assert error_of(w.ec2.describe_regions) == (500, "InternalError")    # took the token
    assert error_of(w.ec2.describe_regions) == (503, "RequestLimitExceeded")
    assert [(c["fault"], c["throttled"]) for c in w.calls()] == [("error500", False), (None, True)]
    assert w.control("GET", "/_proxy/faults")[1]["rules"][0]["count"] == 1
    w.control("POST", "/_proxy/reset")


def test_delayed_answers_overlap(w):
    """Two calls held 2 s each, sent together: both held, neither waits for
    the other (the proxy serves each connection in its own thread)."""
    hold = 2.0
    w.latency(delays=[{"action": "DescribeRegions", "region": REGION, "seconds": hold}])
    w.control("DELETE", "/_proxy/calls")
    barrier = threading.Barrier(2)
    statuses = []

    def call():
        barrier.wait(timeout=10)
        statuses.append(raw_post(w.port, "Action=DescribeRegions&Version=2016-11-15", "ec2",
                                 timeout=30)[0])
    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert statuses == [200, 200], statuses
    first, second = sorted(w.calls(), key=lambda c: c["time"])
    assert second["time"] < first["end"], "the second call waited for the first"
    for c in (first, second):
        assert c["end"] - c["time"] >= hold and c["delay"] == hold, c
    w.control("POST", "/_proxy/reset")


def test_delayed_launch_happens_before_its_answer(w):
    """As on EC2, a slow answer does not mean a slow action: the instance
    is in moto while the RunInstances answer is still held."""
    w.latency(delays=[{"action": "RunInstances", "seconds": 3}])
    w.control("DELETE", "/_proxy/calls")
    direct = boto3.client("ec2", region_name=REGION, endpoint_url=w.moto.url,
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    before = set(w.instances(direct))
    launched = []
    thread = threading.Thread(target=lambda: launched.append(w.ec2.run_instances(
        ImageId=w.ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]))
    thread.start()
    seen_while_held = False
    deadline = time.monotonic() + 10
    while not seen_while_held and time.monotonic() < deadline and thread.is_alive():
        made = set(w.instances(direct)) - before
        held = [c for c in w.calls() if c["action"] == "RunInstances" and c["end"] is None]
        seen_while_held = bool(made) and bool(held)
        time.sleep(0.1)
    thread.join(30)
    assert seen_while_held, "the instance did not exist while the answer was held"
    assert set(w.instances(direct)) - before == set(launched)
    w.control("POST", "/_proxy/reset")


def test_max_count_cap_fills_a_launch_in_part(w):
    w.latency(max_count=[{"region": REGION, "limit": 2}])
    w.control("DELETE", "/_proxy/calls")
    launch = dict(ImageId=w.ami, InstanceType="t2.small", MinCount=1, MaxCount=5)
    assert len(w.ec2.run_instances(**launch)["Instances"]) == 2
    # The cap is per region; without one, a launch is filled up to MaxCount
    # as EC2 fills it (moto alone would launch MinCount).
    west = w.client("ec2", region="us-west-2")
    assert len(west.run_instances(**{**launch, "ImageId": an_ami(west), "MaxCount": 3})["Instances"]) == 3
    assert len(w.ec2.run_instances(**{**launch, "MaxCount": 2})["Instances"]) == 2
    # MinCount over the cap: EC2 cannot fill it at all.
    assert error_of(lambda: w.ec2.run_instances(**{**launch, "MinCount": 3})) == (
        500, "InsufficientInstanceCapacity")
    # A retry with the same token gets the same (partial) launch back.
    token = dict(launch, ClientToken="selftest-capped")
    first = [i["InstanceId"] for i in w.ec2.run_instances(**token)["Instances"]]
    again = [i["InstanceId"] for i in w.ec2.run_instances(**token)["Instances"]]
    assert len(first) == 2 and first == again
    seen = [(c["region"], c.get("max_count"), c["fault"]) for c in w.calls()
            if c["action"] == "RunInstances"]
    assert seen == [(REGION, [5, 2], None), ("us-west-2", None, None), (REGION, None, None),
                    (REGION, [5, 2], "insufficient_capacity"), (REGION, [5, 2], None),
                    (REGION, None, "idempotent-replay")], seen
    w.control("POST", "/_proxy/reset")


def test_latency_flags_are_the_model_a_reset_restores(w):
    flags_model = {
        "delays": [{"action": "DescribeAvailabilityZones", "region": FLAG_REGION, "seconds": 0.2}],
        "buckets": [{"action": ["DescribeAvailabilityZones", "DescribeRegions"], "region": FLAG_REGION,
                     "burst": 3, "refill": 1}],
        "max_count": [{"region": FLAG_REGION, "limit": 4}],
        "levels": []}
    assert w.control("GET", "/_proxy/latency")[1] == flags_model
    w.latency(delays=[{"action": "DescribeRegions", "seconds": 5}])
    assert w.control("GET", "/_proxy/latency")[1]["buckets"] == []
    w.control("POST", "/_proxy/reset")
    assert w.control("GET", "/_proxy/latency")[1] == flags_model
    for bad in ({"buckets": [{"burst": 1}]}, {"delays": [{"seconds": -1}]},
                {"delays": {"seconds": 1}}, {"jitter": []}, [],
                {"max_count": [{"limit": 1, "when": 2}]}):
        status, answer = w.control("POST", "/_proxy/latency", bad)
        assert status == 400 and "error" in answer, (bad, status, answer)
    assert w.control("GET", "/_proxy/latency")[1] == flags_model


def test_sigterm_exits_cleanly(w):
    w.proxy.send_signal(signal.SIGTERM)
    assert w.proxy.wait(timeout=5) == 0
    assert w.proxy.stderr.read() == "", "the proxy wrote to stderr"


# --- helpers --------------------------------------------------------------------


def signed_headers(service):
    """Headers that look like a SigV4-signed request (moto does not check)."""
    return {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
            "Authorization": f"AWS4-HMAC-SHA256 Credential=testing/20250101/{REGION}/"
                             f"{service}/aws4_request, SignedHeaders=host, Signature=0"}


def raw_post(port, body, service, timeout=5):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    connection.request("POST", "/", body=body, headers=signed_headers(service))
    answer = connection.getresponse()
    text = answer.read().decode()
    connection.close()
    return answer.status, text


