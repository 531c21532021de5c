#!/usr/bin/env python3
"""A fault-injecting HTTP proxy between slave_manager and moto's server.

moto answers every AWS call correctly and at once; the manager's promises
(bounded retries, nothing doubled, failures counted) only show under a bad
minute at AWS. This proxy forwards every request to moto and, on command,
answers instead as the real service does when it throttles, fails, denies,
runs out of capacity, stalls or drops the connection. It also gives
RunInstances the ClientToken idempotency that real EC2 has and moto lacks, so
"a retried launch does not make a second instance" can be tested, and fills
a launch up to its MaxCount as EC2 does (moto launches MinCount). And it
models real AWS's latency (aws_proxy/latency.py): answers held per action and
region, EC2's token buckets, launches filled only in part. The benchmark
uses it to count calls. The code is in the aws_proxy package beside this file.

  fault_proxy.py --target http://127.0.0.1:MOTOPORT [--port 0] [--verbose]
      [--delay [ACTION,...][@REGION]=SECONDS]...
      [--bucket [ACTION,...][@REGION]=BURST/REFILL]... [--max-count [@REGION=]N]...

e.g. `--delay RunInstances,StartInstances,StopInstances,TerminateInstances=1
--delay DescribeInstances=0.3 --bucket RunInstances=5/2`: those calls are
answered after 1 s and 300 ms, and RunInstances has a bucket of 5 tokens
refilled at 2 per second in each region.

Once it listens, one line `READY port=<n>` goes to stdout. Point
AWS_ENDPOINT_URL (or boto3's endpoint_url) at http://127.0.0.1:<n>.

Control API, same port (never forwarded):

  POST   /_proxy/faults  {"rules": [RULE, ...]}  replace the rules
  GET    /_proxy/faults  the rules, with the count each has left
  POST   /_proxy/latency {"delays": [...], "buckets": [...], "max_count": [...]}
                         replace the latency model (buckets start full); the
                         flags' form as JSON: {"action": "RunInstances" or a
                         list, "region": ..., "seconds": S}, {..., "burst": B,
                         "refill": R}, {"region": ..., "limit": N}
  GET    /_proxy/latency the latency model, and each bucket's level
  GET    /_proxy/calls[?since=N]  the proxied calls (from the N-th on):
                         [{"time", "end", "service", "region", "action",
                         "status", "fault", "throttled", "delay", "bytes"}, ...]
  DELETE /_proxy/calls   forget the calls
  POST   /_proxy/reset   forget rules and calls, and go back to the flags'
                         latency model (not the ClientTokens: those mirror
                         moto's state, and go when /moto-api/reset is sent
                         through the proxy)

RULE: {"fault": KIND, "service": "ec2", "action": "RunInstances",
"region": "us-east-2", "params": {"NAME": "VALUE"}, "count": N,
"delay": SECONDS, "status": N, "code": "...", "message": "..."}; only
"fault" is required. service, action and region narrow the rule
(case-insensitive; each a string or a list), and so do params (each
request parameter named must have exactly that value, e.g.
{"NetworkInterface.1.SubnetId": "subnet-1"}: one AZ out of capacity);
count (default unlimited) is spent one per hit; the first matching rule
with count left applies. status, code and message override the error answer
of the error KINDs.

KIND: throttle, slowdown, error500, insufficient_capacity, access_denied (an
error answer in the service's own shape; `delay` first, if given), delay
(wait `delay` s, then forward), reset (no answer: the connection is reset),
succeed_then_timeout (forward, so the action happens, then hold the answer
`delay` s, default 30, past the client's timeout), succeed_then_reset
(forward, then reset the connection).

A throttled call (its token bucket empty) meets no fault rule. The latency
delay holds every other answer, error answers included, until that long
after the call arrived.

Call fields: time (Unix seconds at arrival), end (Unix seconds when the
answer was sent or the connection dropped; null while in flight), service
and region (from the SigV4 credential scope), action (form `Action=` or
`X-Amz-Target`), status (of the answer moto or the proxy produced; null when
none was: reset, or the client left during a delay), fault (the KIND
applied, "idempotent-replay", "idempotent-mismatch", "upstream-error",
"insufficient_capacity" for a launch whose MinCount is over the cap, or
null), throttled (true when the token bucket refused it), delay (the latency
model's seconds, or null), bytes (the answer's body length, or null), and
max_count ([asked, given]) on a RunInstances whose MaxCount was lowered.
"""

import argparse
import signal
import sys
import threading
from urllib.parse import urlsplit

from aws_proxy.latency import rule_from_flag
from aws_proxy.matching import BadRule
from aws_proxy.server import ProxyServer


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True,
                        help="moto's server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0,
                        help="port to listen on, 127.0.0.1; 0 (default) picks one")
    parser.add_argument("--verbose", action="store_true",
                        help="log each request and fault on stderr")
    parser.add_argument("--delay", action="append", default=[], dest="delays",
                        metavar="[ACTION,...][@REGION]=SECONDS",
                        help="answer these calls that long after they arrive")
    parser.add_argument("--bucket", action="append", default=[], dest="buckets",
                        metavar="[ACTION,...][@REGION]=BURST/REFILL",
                        help="EC2's token bucket for these calls, per action and region")
    parser.add_argument("--max-count", action="append", default=[], dest="max_count",
                        metavar="[@REGION=]N",
                        help="RunInstances launches at most N instances a call")
    args = parser.parse_args(argv)
    target = urlsplit(args.target)
    if target.scheme != "http" or not target.hostname:
        parser.error(f"--target {args.target!r} is not http://HOST:PORT")
    try:
        args.latency = {part: [rule_from_flag(part, flag) for flag in getattr(args, part)]
                        for part in ("delays", "buckets", "max_count")}
    except BadRule as err:
        parser.error(str(err))
    return args


def main(argv):
    args = parse_args(argv)
    server = ProxyServer(args.port, args.target, args.verbose, args.latency)
    # Block the stop signals before any thread starts, so all inherit the
    # mask and the main thread's sigwait() receives them (as the emulator
    # does). An ignored signal is discarded, never waited for, and a shell
    # starts background jobs with SIGINT ignored: restore the default first.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    for stop_signal in stop_signals:
        signal.signal(stop_signal, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    print(f"READY port={server.server_address[1]}", flush=True)
    signal.sigwait(stop_signals)
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
