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
instances made; beside them, the original script's figure for the same burst
under the same latency model, from its measured per-call cost.

Then the isolation run: 10 `dev` and 10 `prod` items, every call of prod's
region but the describe held 30 s: when dev's launches were answered, and
prod's. Figures only; nothing is asserted.
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


# Prod's region (bench_common.TWO_ENVS): its launches, starts, stops and
# terminations answered after 30 s; its describe as everywhere.
PROD_REGION = "us-west-2"
ISOLATION = {
    "delays": [
        {"action": ["RunInstances", "StartInstances", "StopInstances", "TerminateInstances"],
         "region": PROD_REGION, "seconds": 30},
        *LATENCY["delays"],
    ],
    "buckets": LATENCY["buckets"],
}

# The original (NOTES.md, bench/RESULTS.md): one `aws` CLI call at a time,
# each 0.5-0.7 s of its own, and at least a describe and a launch per item.
ORIGINAL_CLI_CALL_S = 0.6


def original_seconds(items):
    """A lower bound for the original's burst under LATENCY: per item, two
    CLI calls, the describe's 0.3 s and the launch's 1 s, one after another."""
    return items * (2 * ORIGINAL_CLI_CALL_S + 0.3 + 1.0)


def scenario(items, labels=("dev_spot", "prod_spot")):
    queue = [{"jobName": f"job-{k:03d}", "labels": labels[k % 2],
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


def run_one(args, moto, proxy, jenkins, label, binary, items, isolation=False):
    bc.reset_aws(proxy)
    name = f"{'isolation' if isolation else 'burst'}-{label}-{items}"
    world = bc.two_env_world(moto, name, args.workdir, jenkins)
    labels = ("dev", "prod") if isolation else ("dev_spot", "prod_spot")
    bc.http_json(f"{jenkins}emulator/state", method="PUT", body=scenario(items, labels))
    bc.http_json(f"{proxy}/_proxy/latency", method="POST", body=ISOLATION if isolation else LATENCY)
    run_dir = bc.workdir(f"run-{name}-", args.workdir)
    mark = bc.proxy_mark(proxy)
    # Isolation: an attempt must outlast prod's 30 s (a third of the timeout).
    timeout = ["--aws_timeout", "120"] if isolation else []
    manager_args = bc.manager_args(jenkins, world, "ssh", "--loop_counter", "1",
                                   "--pass_interval", "0", "--max_num_of_spot_slaves_in_env", "50",
                                   "--max_num_of_slaves_in_env", "50", *timeout, *args.extra)
    log_path = os.path.join(args.workdir, f"manager-{name}.log")
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
        "launch_window_by_region_s": {r: max(c["end"] for c in launches if c["region"] == r) - first.start
                                      for r in sorted({c["region"] for c in launches})},
    }


def markdown(results):
    header = ["binary", "items", "first pass", "last launch answered", "instances",
              "EC2 calls (pass)", "by action", "max in flight (both / one env)", "throttled"]
    rows = []
    for items in sorted({r["items"] for r in results}):
        rows.append(["original (modelled, lower bound)", str(items), f"≥ {original_seconds(items):.0f} s",
                     f"≥ {original_seconds(items):.0f} s", str(items), f"≥ {2 * items}",
                     f"DescribeInstances {items}, launches {items}", "1 / 1", "0"])
        rows += [[r["binary"], str(r["items"]), f"{r['first_pass_ms'] / 1000:.1f} s",
                  "—" if r["launch_window_s"] is None else f"{r['launch_window_s']:.1f} s",
                  str(r["created"]), str(r["calls"]),
                  ", ".join(f"{a} {n}" for a, n in r["by_action"].items()),
                  f"{r['most_in_flight']} / {r['most_in_flight_one_env']}", str(r["throttled"])]
                 for r in results if r["items"] == items]
    return bc.table(header, rows)


def isolation_markdown(results):
    header = ["binary", "items (dev + prod)", "dev's launches answered", "prod's launches answered",
              "first pass", "instances", "EC2 calls (pass)", "by action"]
    regions = {"dev": "us-east-2", "prod": PROD_REGION}
    rows = [[r["binary"], f"{r['items'] // 2} + {r['items'] // 2}",
             *(f"{r['launch_window_by_region_s'][regions[e]]:.1f} s"
               if regions[e] in r["launch_window_by_region_s"] else "—" for e in ("dev", "prod")),
             f"{r['first_pass_ms'] / 1000:.1f} s", str(r["created"]), str(r["calls"]),
             ", ".join(f"{a} {n}" for a, n in r["by_action"].items())]
            for r in results]
    return bc.table(header, rows)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", action="append", required=True,
                        help="LABEL=PATH or PATH; give it twice to compare (e.g. before=… after=…)")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--items", default="20,50")
    parser.add_argument("--isolation-items", type=int, default=20,
                        help="items of the isolation run, half dev, half prod (0: no such run)")
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
        if args.isolation_items:
            for label, binary in binaries:
                bc.log(f"isolation: {args.isolation_items} items, prod's calls held 30 s, {label}")
                result = run_one(args, moto, proxy, jenkins, label, binary, args.isolation_items,
                                 isolation=True)
                result["isolation"] = True
                yield result
    results = bc.measure(args, "emulator-burst", [], each)
    print(markdown([r for r in results if not r.get("isolation")]))
    isolated = [r for r in results if r.get("isolation")]
    if isolated:
        print()
        print(isolation_markdown(isolated))
    return 0


if __name__ == "__main__":
    bc.run_main(main, "bench_burst")
