#!/usr/bin/env python3
"""Benchmark (d): a burst at real AWS speed (issue 11).

moto answers a RunInstances in milliseconds; EC2 in about a second, and it
throttles each account and region with token buckets. Here the AWS proxy
(tests/support/fault_proxy.py) holds RunInstances, StartInstances,
StopInstances and TerminateInstances answers 1 s and DescribeInstances
answers 300 ms, and gives RunInstances a bucket of 5 tokens refilled at 2 per
second in each region (each env is a region here). N queue items, half
`dev_spot` and half `prod_spot` (two envs, two accounts), spot cap 50, one
pass (`--loop_counter 1`), served to the binary(ies) given.

Prints per binary and N: the first pass's wall time (the manager's own
figure), the EC2 calls of the pass (by action), the most EC2 calls in flight
at once (over both envs, and in one env), the throttled answers, and the
instances made. Figures only; nothing is asserted.
"""

import argparse
import os
import shutil

import bench_common as bc

LATENCY = {
    "delays": [
        {"action": ["RunInstances", "StartInstances", "StopInstances", "TerminateInstances"], "seconds": 1},
        {"action": "DescribeInstances", "seconds": 0.3},
    ],
    "buckets": [{"action": "RunInstances", "burst": 5, "refill": 2}],
}


def scenario(items):
    queue = [{"jobName": f"job-{k:03d}", "labels": "dev_spot" if k % 2 == 0 else "prod_spot",
              "lastBuiltOn": "UNKNOWN", "throttleEnabled": "false",
              "parameters": f"BUILD_NO={k}", "queueId": str(k + 1)}
             for k in range(items)]
    return {"queue": queue, "nodes": []}


def most_at_once(calls):
    edges = sorted([(c["time"], 1) for c in calls] + [(c["end"], -1) for c in calls])
    now = most = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def run_one(args, moto, proxy, jenkins, label, binary, items):
    bc.reset_aws(proxy)
    world = bc.two_env_world(moto, f"burst-{label}-{items}", args.workdir, jenkins)
    bc.http_json(f"{jenkins}emulator/state", method="PUT", body=scenario(items))
    bc.http_json(f"{proxy}/_proxy/latency", method="POST", body=LATENCY)
    run_dir = bc.workdir(f"run-burst-{label}-", args.workdir)
    mark = bc.proxy_mark(proxy)
    manager_args = bc.manager_args(jenkins, world, "ssh", "--loop_counter", "1",
                                   "--pass_interval", "0", "--max_num_of_spot_slaves_in_env", "50",
                                   *args.extra)
    log_path = os.path.join(args.workdir, f"manager-burst-{label}-{items}.log")
    run = bc.ManagerRun(binary, manager_args, bc.manager_env(proxy), run_dir, log_path)
    run.run(timeout=args.run_timeout)
    shutil.rmtree(run_dir, ignore_errors=True)
    calls = [c for c in bc.proxy_calls(proxy, mark) if c["service"] == "ec2" and c["end"] is not None]
    bc.http_json(f"{proxy}/_proxy/reset", method="POST", body={})
    passes = run.ordered()
    if run.status != 0 or len(passes) != 1:
        raise bc.BenchError(f"the manager exited {run.status} after {len(passes)} pass(es); see {log_path}")
    first = passes[0]
    in_pass = run.calls_in(first, calls)
    actions = sorted({c["action"] for c in in_pass})
    launches = [c for c in in_pass if c["action"] == "RunInstances"]
    return {
        "binary": label, "items": items, "first_pass_ms": first.ms,
        "created": first.created,
        "calls": len(in_pass),
        "by_action": {a: sum(c["action"] == a for c in in_pass) for a in actions},
        "most_in_flight": most_at_once(in_pass),
        "most_in_flight_one_env": max([most_at_once([c for c in in_pass if c["region"] == r])
                                       for r in {c["region"] for c in in_pass}] or [0]),
        "throttled": sum(bool(c.get("throttled")) for c in in_pass),
        "launch_window_s": (max(c["end"] for c in launches) - first.start) if launches else None,
    }


def markdown(results):
    header = ["binary", "items", "first pass", "last launch answered", "instances",
              "EC2 calls (pass)", "by action", "max in flight (both / one env)", "throttled"]
    rows = [[r["binary"], str(r["items"]), f"{r['first_pass_ms'] / 1000:.1f} s",
             "—" if r["launch_window_s"] is None else f"{r['launch_window_s']:.1f} s",
             str(r["created"]), str(r["calls"]),
             ", ".join(f"{a} {n}" for a, n in r["by_action"].items()),
             f"{r['most_in_flight']} / {r['most_in_flight_one_env']}", str(r["throttled"])]
            for r in results]
    return bc.table(header, rows)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", action="append", required=True,
                        help="LABEL=PATH or PATH; give it twice to compare (e.g. before=… after=…)")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--items", default="20,50")
    parser.add_argument("--run-timeout", type=float, default=600)
    parser.add_argument("--json")
    parser.add_argument("extra", nargs="*", help="more manager flags (after --)")
    args = parser.parse_args(argv)
    binaries = [b.split("=", 1) if "=" in b else ("ours", b) for b in args.binary]

    def each(moto, proxy, jenkins):
        for items in [int(n) for n in args.items.split(",") if n]:
            for label, binary in binaries:
                bc.log(f"burst: {items} spot items over 2 envs, {label}")
                yield run_one(args, moto, proxy, jenkins, label, binary, items)
    results = bc.measure(args, "emulator-burst", [], each)
    print(markdown(results))
    return 0


if __name__ == "__main__":
    bc.run_main(main, "bench_burst")
