#!/usr/bin/env python3
"""Benchmark (a): what one pass costs, for queue length Q, agents I, envs E.

For each (I, E) a world is built in moto (bench/bench_world.py: I running
agents spread over E envs, a quarter spot); for each Q the emulator serves a
static dump of Q queue items (labels `ENV` and `ENV_spot`, round-robin over
the envs) and one busy node per agent. The caps are set to what each env
holds, so every item is planned in full every pass (no free executor, no
stopped agent, at the cap) and no pass launches anything: a steady pass is
observation plus planning. The manager runs `--passes` passes back to back
(`--pass_interval 0 --debug --skip_security_group --gc_job ''`) through the
AWS proxy (tests/support/fault_proxy.py), counting, for each `--cli`.

Figures per run, over the steady passes (all but the first, which also
assumes the roles, fetches the jar and runs the inventory):
  pass latency median / p95 (the manager's own "(N ms)"), the observation
  phase (its --debug line), the slowest single observation of each pass (the
  dump as the emulator served it, from accepting the SSH connection to the
  answer; the slowest DescribeInstances as the proxy timed it) and the ratio
  pass / slowest; EC2 requests per pass (the manager's count and the proxy's,
  STS included); the manager's CPU per pass (/proc utime+stime between the
  ends of the first and last passes; its children, i.e. the `java` stand-in,
  apart); peak RSS (VmHWM sampled every pass, and ru_maxrss from wait4).

Prints a Markdown table and writes every figure as JSON (--json).
"""

import argparse
import os
import shutil

import bench_common as bc
import bench_world

DEFAULT_GRID = "subset"
# The representative subset: each dimension swept around (Q, I, E) =
# (100, 100, 3), plus the corners the targets name.
SUBSET = [(10, 100, 3), (100, 100, 3), (1000, 100, 3),
          (100, 10, 3), (100, 1000, 3),
          (100, 100, 1), (100, 100, 10),
          (10, 10, 1), (1000, 1000, 1), (1000, 1000, 10)]
FULL = [(q, i, e) for i in (10, 100, 1000) for e in (1, 3, 10) for q in (10, 100, 1000)]


def scenario(world, queue_length):
    """The static dump: Q queue items and one busy node per agent."""
    envs = list(world["envs"])
    nodes, by_env = [], {env: [] for env in envs}
    for agent in world["agents"]:
        name = f"{agent['env']}-{agent['ip']}"
        by_env[agent["env"]].append(name)
        nodes.append({
            "slaveName": name, "labels": f"[{agent['labels']}, swarm]",
            "isOffLine": "false",
            "description": f"Created by Swarm InstanceID={agent['id']} AmiId={agent['ami']}",
            "ami_id": agent["ami"], "ope_idle_count": "0", "busy_executors": "1",
            "num_executors": "1", "connectTime": "1700000000000", "idle_seconds": "0",
            "terminate_me": "false"})
    queue = []
    for k in range(queue_length):
        env = envs[k % len(envs)]
        label = env if (k // len(envs)) % 2 == 0 else f"{env}_spot"
        names = by_env[env]
        queue.append({
            "jobName": f"bench/job-{k:04d}", "labels": label,
            "lastBuiltOn": names[k % len(names)] if names else "UNKNOWN",
            "throttleEnabled": "false", "parameters": f"BRANCH=main BUILD_NO={k}",
            "queueId": str(k + 1)})
    return {"queue": queue, "nodes": nodes}


def caps(world):
    """(on-demand, spot) caps that every env is at or over."""
    on_demand = {env: 0 for env in world["envs"]}
    spot = dict(on_demand)
    for agent in world["agents"]:
        (spot if agent["spot"] else on_demand)[agent["env"]] += 1
    return min(on_demand.values()), min(spot.values())


def observations(run, proxy_log, commands, java):
    """Per steady pass: the slowest single observation and its parts, and
    the requests the proxy counted. The dump's time is the `java` call's as
    the wrapper timed it (jar CLI), else the emulator's, from accepting the
    SSH connection to sending the answer (ssh CLI)."""
    rows = []
    for p in run.steady():
        lo, hi = run.window(p)
        inside = run.calls_in(p, proxy_log)
        describes = [(r["end"] - r["time"]) * 1000 for r in inside
                     if r["action"] == "DescribeInstances"]
        dumps = [(c["finished"] - c["connected"]) * 1000 for c in commands
                 if c["argv"][:1] == ["groovy"] and c.get("connected")
                 and lo <= c["time"] <= hi]
        javas = [(end - start) * 1000 for start, end in java if lo <= start <= hi]
        if javas:
            dumps = javas
        dump = max(dumps) if dumps else None
        describe = max(describes) if describes else None
        slowest = max([x for x in (dump, describe) if x is not None], default=None)
        rows.append({"pass": p.number, "ms": p.ms, "observe_ms": p.observe_ms,
                     "slowest_ms": slowest, "dump_ms": dump, "describe_ms": describe,
                     "requests": len(inside),
                     "ec2_requests": sum(r["service"] == "ec2" for r in inside),
                     "sts_requests": sum(r["service"] == "sts" for r in inside),
                     "describe_sum_ms": sum(describes),
                     "describe_bytes": sum(r["bytes"] for r in inside
                                           if r["action"] == "DescribeInstances")})
    return rows


def run_one(args, binary, world, jenkins, proxy, q, cli, passes):
    on_demand_cap, spot_cap = caps(world)
    run_dir = bc.workdir(f"run-pass-{q}-", args.workdir)
    proxy_mark = bc.proxy_mark(proxy)
    bc.http_json(f"{jenkins}emulator/log", method="DELETE")
    manager_args = bc.manager_args(
        jenkins, world, cli, "--loop_counter", str(passes), "--pass_interval", "0",
        "--max_num_of_slaves_in_env", str(on_demand_cap),
        "--max_num_of_spot_slaves_in_env", str(spot_cap))
    log_path = os.path.join(args.workdir, f"manager-q{q}-i{len(world['agents'])}"
                            f"-e{len(world['envs'])}-{cli}.log")
    java_log = os.path.join(run_dir, "java.log")
    env = bc.manager_env(proxy, bc.java_wrapper(args.workdir), java_log)
    run = bc.ManagerRun(binary, manager_args, env, run_dir, log_path)
    run.run(timeout=args.run_timeout)
    java = bc.java_spans(java_log)
    shutil.rmtree(run_dir, ignore_errors=True)
    proxy_log = bc.proxy_calls(proxy, proxy_mark)
    commands = bc.http_json(f"{jenkins}emulator/log")
    if run.status != 0 or len(run.ordered()) != passes:
        raise bc.BenchError(f"the manager exited {run.status} after "
                            f"{len(run.ordered())} of {passes} passes; see {log_path}")
    steady = run.steady()
    obs = observations(run, proxy_log, commands, java)
    ratios = [o["ms"] / o["slowest_ms"] for o in obs if o["slowest_ms"]]
    own_cpu, child_cpu = run.cpu_per_steady_pass()
    hwm, maxrss = run.peak_rss_mb()
    first = run.first()
    actions = sum(p.started + p.created + p.stopped + p.terminated for p in steady)
    return {
        "q": q, "i": len(world["agents"]), "e": len(world["envs"]), "cli": cli,
        "passes": passes, "steady_passes": len(steady),
        "pass_ms_median": bc.median([p.ms for p in steady]),
        "pass_ms_p95": bc.percentile([p.ms for p in steady], 0.95),
        "first_pass_ms": first.ms if first else None,
        "observe_ms_median": bc.median([p.observe_ms for p in steady if p.observe_ms is not None]),
        "slowest_observation_ms_median": bc.median([o["slowest_ms"] for o in obs if o["slowest_ms"]]),
        "dump_ms_median": bc.median([o["dump_ms"] for o in obs if o["dump_ms"]]),
        "describe_ms_median": bc.median([o["describe_ms"] for o in obs if o["describe_ms"]]),
        "describe_sum_ms_median": bc.median([o["describe_sum_ms"] for o in obs]),
        "describe_bytes_median": bc.median([o["describe_bytes"] for o in obs]),
        "ratio_median": bc.median(ratios), "ratio_p95": bc.percentile(ratios, 0.95),
        "ec2_requests_median": bc.median([p.ec2_requests for p in steady if p.ec2_requests is not None]),
        "ec2_requests_max": max((p.ec2_requests for p in steady if p.ec2_requests is not None), default=None),
        "proxy_requests_median": bc.median([o["requests"] for o in obs]),
        "proxy_requests_max": max((o["requests"] for o in obs), default=None),
        "first_pass_ec2_requests": first.ec2_requests if first else None,
        "steady_actions": actions,
        "cpu_ms_per_pass": own_cpu, "children_cpu_ms_per_pass": child_cpu,
        "total_cpu_s": run.total_cpu(), "wall_s": run.wall,
        "peak_rss_mb_hwm": hwm, "peak_rss_mb_maxrss": maxrss,
        "log": log_path, "per_pass": obs,
    }


def markdown(results):
    header = ["Q", "I", "E", "cli", "pass ms median", "p95", "slowest obs ms",
              "pass/slowest", "EC2 req/pass (mgr)", "AWS req/pass (proxy)",
              "CPU ms/pass", "+children", "peak RSS MB", "1st pass ms"]
    rows = []
    for r in results:
        rows.append([
            r["q"], r["i"], r["e"], r["cli"],
            bc.fmt(r["pass_ms_median"]), bc.fmt(r["pass_ms_p95"]),
            bc.fmt(r["slowest_observation_ms_median"]),
            bc.fmt(r["ratio_median"], 2),
            f"{bc.fmt(r['ec2_requests_median'])} (max {bc.fmt(r['ec2_requests_max'])})",
            f"{bc.fmt(r['proxy_requests_median'])} (max {bc.fmt(r['proxy_requests_max'])})",
            bc.fmt(r["cpu_ms_per_pass"], 1), bc.fmt(r["children_cpu_ms_per_pass"], 1),
            bc.fmt(r["peak_rss_mb_hwm"], 1), bc.fmt(r["first_pass_ms"])])
    return bc.table(header, rows)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--grid", choices=("subset", "full", "smoke", "largest"), default=DEFAULT_GRID)
    parser.add_argument("--cli", default="ssh,jar", help="comma list of --cli values")
    parser.add_argument("--passes", type=int, default=12,
                        help="passes per run when I < 1000 (default 12)")
    parser.add_argument("--passes-large", type=int, default=6,
                        help="passes per run when I >= 1000 (default 6: moto "
                             "takes seconds to describe 1000 instances)")
    parser.add_argument("--run-timeout", type=float, default=900)
    parser.add_argument("--server-nodelay", action="store_true",
                        help="the emulator sets TCP_NODELAY on SSH connections")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args(argv)
    grid = {"subset": SUBSET, "full": FULL, "smoke": [(10, 10, 1), (100, 10, 3)],
            "largest": [(1000, 1000, 1)]}[args.grid]
    clis = [c for c in args.cli.split(",") if c]

    def each(moto, proxy, jenkins):
        for i, e in sorted({(i, e) for _, i, e in grid}):
            bc.log(f"pass cost: building a world of {i} agents in {e} envs")
            world = bench_world.build(moto, e, i, jenkins,
                                      os.path.join(args.workdir, f"environment-{i}-{e}.json"))
            for q in sorted(q for q, i2, e2 in grid if (i2, e2) == (i, e)):
                bc.http_json(f"{jenkins}emulator/state", method="PUT", body=scenario(world, q))
                for cli in clis:
                    passes = args.passes_large if i >= 1000 else args.passes
                    bc.log(f"pass cost: Q={q} I={i} E={e} --cli {cli}, {passes} passes")
                    result = run_one(args, args.binary, world, jenkins, proxy, q, cli, passes)
                    bc.log(f"  pass {bc.fmt(result['pass_ms_median'])} ms median, "
                           f"{bc.fmt(result['ec2_requests_median'])} EC2 requests, "
                           f"CPU {bc.fmt(result['cpu_ms_per_pass'], 1)} ms/pass")
                    yield result
    nodelay = ["--tcp-nodelay"] if args.server_nodelay else []
    print(markdown(bc.measure(args, "emulator-pass", nodelay, each)))
    return 0


if __name__ == "__main__":
    bc.run_main(main, "bench_pass")
