#!/usr/bin/env python3
"""Benchmark (c): the original Python script's measured scenario, run by us.

NOTES.md measured the original (Python 2 script under Python 3, against
moto, fake `java`): 2 envs, N queue items alternating `dev`/`dev_spot`,
on-demand cap 2, `--loop_counter 3`. With N = 50 its first pass (creating 27
instances: 2 on-demand at the cap, 25 spot) took 85.6 s of work, each steady
pass 34 s with 46 `aws` CLI calls, the whole run 181.1 s. Here the same
world (tests/support/moto_world.py: dev and prod in two accounts, no agent yet) and
the same static queue (no node registers: the original was measured against
a fixed dump too) are served to our binary, 5 s between passes as the
original slept, through the AWS proxy (counting), once per `--cli`.

Prints our figures next to the original's, and the ratios.
"""

import argparse
import os
import shutil

import bench_common as bc

ORIGINAL = {"items": 50, "first_pass_s": 85.6, "steady_pass_s": 34.0,
            "steady_calls": 46, "whole_run_s": 181.1, "created": 27}


def scenario(items):
    queue = [{"jobName": f"job-{k:03d}", "labels": "dev" if k % 2 == 0 else "dev_spot",
              "lastBuiltOn": "UNKNOWN", "throttleEnabled": "false",
              "parameters": f"BRANCH=master BUILD_NO={k}", "queueId": str(k + 1)}
             for k in range(items)]
    return {"queue": queue, "nodes": []}


def run_cli(args, moto, proxy, jenkins, cli):
    bc.reset_aws(proxy)
    world = bc.two_env_world(moto, "ref", args.workdir, jenkins)
    bc.http_json(f"{jenkins}emulator/state", method="PUT", body=scenario(ORIGINAL["items"]))
    run_dir = bc.workdir("run-ref-", args.workdir)
    mark = bc.proxy_mark(proxy)
    manager_args = bc.manager_args(jenkins, world, cli, "--loop_counter", "3",
                                   "--pass_interval", "5", "--max_num_of_slaves_in_env", "2")
    log_path = os.path.join(args.workdir, f"manager-reference-{cli}.log")
    run = bc.ManagerRun(args.binary, manager_args, bc.manager_env(proxy), run_dir, log_path)
    run.run(timeout=args.run_timeout)
    shutil.rmtree(run_dir, ignore_errors=True)
    requests = bc.proxy_calls(proxy, mark)
    passes = run.ordered()
    if run.status != 0 or len(passes) != 3:
        raise bc.BenchError(f"the manager exited {run.status} after {len(passes)} "
                            f"of 3 passes; see {log_path}")

    first, steady = passes[0], passes[1:]
    first_calls = run.calls_in(first, requests)
    return {
        "cli": cli, "whole_run_s": run.wall,
        "first_pass_ms": first.ms, "first_pass_created": first.created,
        "first_pass_started": first.started,
        "later_passes_created": sum(p.created + p.started for p in steady),
        "first_pass_requests": len(first_calls),
        "first_pass_actions": {str(a): sum(r["action"] == a for r in first_calls)
                               for a in sorted({r["action"] for r in first_calls}, key=str)},
        "steady_pass_ms": [p.ms for p in steady],
        "steady_requests": [len(run.calls_in(p, requests)) for p in steady],
        "steady_ec2_requests": [p.ec2_requests for p in steady],
        "cpu_s": run.total_cpu(), "log": log_path,
    }


def markdown(results):
    o = ORIGINAL
    header = ["", "original (NOTES.md)"] + [f"ours, --cli {r['cli']}" for r in results] + \
             [f"ratio ({r['cli']})" for r in results]

    def ratio(theirs, ours):
        return "—" if not ours else f"{theirs / ours:,.0f}×"
    steady = [bc.median(r["steady_pass_ms"]) for r in results]
    rows = [
        ["first pass (work)", f"{o['first_pass_s']} s"]
        + [f"{r['first_pass_ms']} ms" for r in results]
        + [ratio(o["first_pass_s"] * 1000, r["first_pass_ms"]) for r in results],
        ["instances created in pass 1", str(o["created"])]
        + [str(r["first_pass_created"]) for r in results] + ["" for _ in results],
        ["AWS requests in pass 1 (proxy, STS incl.)", "—"]
        + [str(r["first_pass_requests"]) for r in results] + ["" for _ in results],
        ["steady pass (work), median", f"{o['steady_pass_s']} s"]
        + [f"{bc.fmt(s)} ms" for s in steady]
        + [ratio(o["steady_pass_s"] * 1000, s) for s in steady],
        ["AWS calls per steady pass", str(o["steady_calls"])]
        + [", ".join(str(n) for n in r["steady_requests"]) for r in results]
        + [ratio(o["steady_calls"], bc.median(r["steady_requests"])) for r in results],
        ["whole run (3 passes, 5 s apart)", f"{o['whole_run_s']} s"]
        + [f"{r['whole_run_s']:.1f} s" for r in results]
        + [ratio(o["whole_run_s"], r["whole_run_s"]) for r in results],
    ]
    return bc.table(header, rows)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--cli", default="ssh,jar")
    parser.add_argument("--run-timeout", type=float, default=600)
    parser.add_argument("--json")
    args = parser.parse_args(argv)

    def each(moto, proxy, jenkins):
        for cli in [c for c in args.cli.split(",") if c]:
            bc.log(f"reference: 50 items, 2 envs, on-demand cap 2, 3 passes, --cli {cli}")
            yield run_cli(args, moto, proxy, jenkins, cli)
    results = bc.measure(args, "emulator-ref", [], each)
    print(markdown(results))
    for r in results:
        print(f"\n--cli {r['cli']}: pass 1 requests by action: "
              + ", ".join(f"{k} {v}" for k, v in r["first_pass_actions"].items())
              + f"; launches in later passes: {r['later_passes_created']}")
    return 0


if __name__ == "__main__":
    bc.run_main(main, "bench_reference")
