#!/usr/bin/env python3
"""Benchmark (warm): a working day, closed loop, without and with `--warm`.

Issue 14's benchmark. The trace (`day_trace`, seeded): a simulated working
day from 08:00 for `--hours` (default 9), pushes arriving as a Poisson
process whose rate follows DAY_SHAPE: a morning ramp, a lunch dip, an
afternoon peak, a quiet evening. A push queues a `dev` build (1 executor,
on-demand), often a `dev_spot` end-to-end test (spot); a release queues
`prod_shared` jobs (5 executors, on-demand). The day starts with what
bench_trace.py's trace starts with (PREEXISTING: two stopped `dev` agents,
one stopped on an old AMI, a running `prod` agent and a stopped
`prod_shared` one).

The simulated Jenkins boots agents with the boot model (bench/simulation.py's
BootModel): a created instance running ~15 s after its launch and its node
online ~60 s later; a started one running ~10 s after its start and online
~15 s later; each delay varied by up to 10 %, seeded by the trace's seed.
moto makes instances running at once; the delays are the simulation's.

The same day runs twice through bench_trace.py's closed loop: the manager
as it is (cold), then with `--warm LABEL=N` for each `--warm` given, and
`--spare LABEL=N` for each `--spare` given (warm; the spares' labels count
as warmed).
Figures per run: time to agent (enqueue → build started, simulated s) p50 /
p95 per kind (absorbed: no start or create for the item, including items an
executor took before the manager saw them; start; create: the manager's
action for that item, from its log), and for the warmed labels; instance-
minutes booting / busy / idle / stopped and paid (booting + busy + idle),
from the simulation; then the target: the warmed labels' p95 with the pool
at most half the cold p95, for at most 10 % more paid instance-minutes.

  bench_day.py generate [--hours H] [--seed S]     prints the day's trace
  bench_day.py run --binary PATH --workdir DIR [--warm dev=2 ...] [--spare dev=1 ...]
                   [--runs cold,warm | --runs warm --cold-json FILE] [--time-scale X] ...
"""

import argparse
import json
import os
import sys

import bench_common as bc
import bench_trace
import simulation

DAY_START = 8
# (hour of day, relative push rate): 1.0 is --peak pushes a minute.
DAY_SHAPE = [(8.0, 0.15), (9.0, 0.7), (10.0, 1.0), (11.75, 0.9), (12.25, 0.35),
             (13.25, 0.4), (13.75, 0.9), (14.25, 1.3), (15.25, 1.3), (16.0, 0.6),
             (16.5, 0.2), (17.0, 0.1)]
# push kind: (weight, [(label, probability, median duration s, job names)])
PUSHES = {
    "app": (0.75, [("dev", 1.0, 300, ["app/build", "app/unit-tests", "lib/build"]),
                   ("dev_spot", 0.4, 600, ["app/e2e", "app/integration"])]),
    "release": (0.25, [("prod_shared", 1.0, 120, ["release/package", "release/sign"]),
                       ("prod_shared", 0.5, 60, ["release/notify"])]),
}
KINDS = ("absorbed", "start", "create")
BOOT = {"create": "15,60", "start": "10,15", "jitter": 0.1}


def day_trace(hours, seed, peak):
    return simulation.generate_day_trace(DAY_START, hours, seed, peak, DAY_SHAPE, PUSHES)


def warm_labels(warm, spare=()):
    """The labels of `--warm` and `--spare` `LABEL=N[@HH-HH]` words."""
    return sorted({word.partition("=")[0] for word in [*warm, *spare]})


def warm_flags(args):
    """The warm run's manager flags: its `--warm` words, then its `--spare` ones."""
    return [f for w in args.warm for f in ("--warm", w)] + [f for w in args.spare for f in ("--spare", w)]


def figures(result, stats):
    """Time to agent per kind and the waits per label, and the minutes."""
    kinds = result["served_kinds"]
    waits = {kind: [] for kind in KINDS}
    by_label = {}
    for job in stats["jobs"]:
        if job["started"] is None:
            continue
        wait = job["started"] - job["enqueued"]
        waits[kinds.get(str(job["queue_id"]), "absorbed")].append(wait)
        by_label.setdefault(job["label"], []).append(wait)
    summary = stats["summary"]
    return {
        "kinds": {kind: spread(w) for kind, w in waits.items()},
        "label_waits": by_label,
        "all": spread([w for ws in waits.values() for w in ws]),
        "usage_minutes": summary["usage_minutes"],
        "usage_minutes_by_label": summary["usage_minutes_by_label"],
        "billed_minutes": summary["billed_instance_minutes"],
        "boots": summary["boots"],
        "created": summary["instances_created"], "starts": summary["instance_starts"],
        "stops": summary["instance_stops"],
        "never_started": result["never_started"], "killed": result["killed"],
        "caps_respected": result["caps_respected"],
        "passes": result["passes"], "pass_ms_median": result["pass_ms_median"],
        "pass_ms_p95": result["pass_ms_p95"], "wall_s": result["wall_s"],
        "sim_minutes": result["sim_minutes"],
    }


def warmed(run, labels):
    """The spread of the time to agent of the jobs of `labels`."""
    return spread([w for label in labels for w in run["label_waits"].get(label, [])])


def spread(values):
    return {"n": len(values), "p50": bc.percentile(values, 0.5),
            "p95": bc.percentile(values, 0.95)}


def verdict(cold, warm, labels):
    """The target's two ratios, and whether both hold."""
    p95 = None
    cold_p95, warm_p95 = warmed(cold, labels)["p95"], warmed(warm, labels)["p95"]
    if cold_p95 and warm_p95 is not None:
        p95 = warm_p95 / cold_p95
    paid = warm["usage_minutes"]["paid"] / cold["usage_minutes"]["paid"]
    return {"p95_ratio": p95, "paid_ratio": paid,
            "met": p95 is not None and p95 <= 0.5 and paid <= 1.10}


def markdown(runs, args):
    names = list(runs)
    labels = warm_labels(args.warm, args.spare)

    def cell(s):
        return f"{bc.fmt(s['p50'])} / {bc.fmt(s['p95'])} ({s['n']})"

    rows = [[f"time to agent, {kind}: p50 / p95 s (jobs)", *(cell(runs[n]["kinds"][kind])
                                                            for n in names)]
            for kind in KINDS]
    rows.append(["… all jobs", *(cell(runs[n]["all"]) for n in names)])
    rows += [[f"… label `{label}`", *(cell(warmed(runs[n], [label])) for n in names)]
             for label in labels]
    if len(labels) > 1:
        rows.append(["… the warmed labels together", *(cell(warmed(runs[n], labels))
                                                        for n in names)])
    for use in ("booting", "busy", "idle", "stopped", "paid"):
        rows.append([f"instance-minutes {use}",
                     *(bc.fmt(runs[n]["usage_minutes"][use], 1) for n in names)])
    rows += [
        ["… billed (EC2's 1-minute minimum per start)",
         *(bc.fmt(runs[n]["billed_minutes"], 1) for n in names)],
        ["… of the warmed labels: booting / busy / idle / stopped", *(
            " / ".join(bc.fmt(sum(runs[n]["usage_minutes_by_label"].get(label, {}).get(use, 0)
                                  for label in labels), 1)
                       for use in ("booting", "busy", "idle", "stopped")) for n in names)],
        ["instances created / starts / stops",
         *(f"{runs[n]['created']} / {runs[n]['starts']} / {runs[n]['stops']}" for n in names)],
        ["boots seen: create, start (median s to node online)", *(
            f"{runs[n]['boots']['create']['count']} ({bc.fmt(runs[n]['boots']['create']['online_median'])}), "
            f"{runs[n]['boots']['start']['count']} ({bc.fmt(runs[n]['boots']['start']['online_median'])})"
            for n in names)],
        ["jobs never started / killed", *(f"{runs[n]['never_started']} / {runs[n]['killed']}"
                                          for n in names)],
        ["caps respected", *("yes" if runs[n]["caps_respected"] else "**NO**" for n in names)],
        ["passes; pass latency median / p95 ms", *(
            f"{runs[n]['passes']}; {bc.fmt(runs[n]['pass_ms_median'])} / {bc.fmt(runs[n]['pass_ms_p95'])}"
            for n in names)],
        ["simulated min / real s", *(f"{bc.fmt(runs[n]['sim_minutes'], 1)} / {bc.fmt(runs[n]['wall_s'], 1)}"
                                     for n in names)],
    ]
    header = ["figure", *(f"{n}" + (f" (`{' '.join(warm_flags(args))}`)"
                                     if n == "warm" else "") for n in names)]
    head = (f"A working day: {runs[names[0]]['jobs']} jobs from {DAY_START:02d}:00 over "
            f"{args.hours} simulated hours (seed {args.seed}, peak {args.peak} pushes/min), "
            f"time scale {args.time_scale}, boot: create {BOOT['create']} s, start "
            f"{BOOT['start']} s (running, then online), jitter {BOOT['jitter']:.0%}; idle limit "
            f"{args.idle_minutes} min, caps on-demand {args.on_demand_cap} / spot "
            f"{args.spot_cap} per env, --cli {args.cli}")
    text = head + "\n\n" + bc.table(header, rows)
    if "cold" in runs and "warm" in runs:
        v = verdict(runs["cold"], runs["warm"], labels)
        text += (f"\n\nTarget (warmed labels' p95 ≤ 0.5 × cold, paid minutes ≤ 1.10 × cold): "
                 f"p95 ratio {bc.fmt(v['p95_ratio'], 2)}, paid ratio {bc.fmt(v['paid_ratio'], 2)}"
                 f" — **{'met' if v['met'] else 'missed'}**")
    return text


def run(args):
    bc.install_signal_exit()
    trace = day_trace(args.hours, args.seed, args.peak)
    labels = warm_labels(args.warm, args.spare)
    traced = {j["label"] for j in trace}
    if not set(labels) <= traced:
        raise bc.BenchError(f"--warm or --spare names labels the trace has none of: "
                            f"{sorted(set(labels) - traced)}")
    # The simulation sees a launch or a start when it next reads moto: read
    # it every 0.05 real s (4.5 simulated s at 90x), not the default 0.2.
    sim_flags = ["--create-boot", BOOT["create"], "--start-boot", BOOT["start"],
                 "--boot-jitter", str(BOOT["jitter"]), "--boot-seed", str(args.seed),
                 "--poll-interval", "0.05"]
    runs = {}
    if args.cold_json:
        with open(args.cold_json) as source:
            runs["cold"] = json.load(source)["cold"]
    for name in args.runs:
        flags = [] if name == "cold" else warm_flags(args)
        loop = argparse.Namespace(**vars(args))
        loop.workdir = os.path.join(args.workdir, name)
        bc.log(f"day: the {name} run")
        result, stats = bench_trace.closed_loop(loop, trace, bench_trace.PREEXISTING,
                                                sim_flags, flags)
        runs[name] = figures(result, stats)
        runs[name]["jobs"] = len(trace)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(runs, out, indent=1)
    print(markdown(runs, args))
    return 0


def main(argv):
    if argv[:1] == ["generate"]:
        parser = argparse.ArgumentParser(prog="bench_day.py generate")
        parser.add_argument("--hours", type=float, default=9)
        parser.add_argument("--seed", type=int, default=14)
        parser.add_argument("--peak", type=float, default=0.6)
        args = parser.parse_args(argv[1:])
        json.dump(day_trace(args.hours, args.seed, args.peak), sys.stdout, indent=0)
        print()
        return 0
    if argv[:1] == ["run"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="bench_day.py run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--cli", default="ssh")
    parser.add_argument("--hours", type=float, default=9)
    parser.add_argument("--seed", type=int, default=14)
    parser.add_argument("--peak", type=float, default=0.6, help="pushes a minute at rate 1.0")
    parser.add_argument("--time-scale", type=float, default=90)
    parser.add_argument("--idle-minutes", type=int, default=45)
    parser.add_argument("--on-demand-cap", type=int, default=8)
    parser.add_argument("--spot-cap", type=int, default=8)
    parser.add_argument("--warm", action="append", metavar="LABEL=N",
                        help="the warm run's --warm words (default dev=2)")
    parser.add_argument("--spare", action="append", default=[], metavar="LABEL=N",
                        help="the warm run's --spare words (default none)")
    parser.add_argument("--runs", default="cold,warm",
                        help="which runs, in order: cold, warm or both (default cold,warm)")
    parser.add_argument("--cold-json", metavar="FILE",
                        help="take the cold run from an earlier --json (with --runs warm)")
    parser.add_argument("--aws-latency", action="store_true",
                        help="the manager's AWS calls through the proxy's latency model, scaled")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    # Only dev by default: in the cold day prod_shared's five executors
    # served its jobs at once (p95 5 s), there is nothing for a pool to cut.
    args.warm = args.warm or ["dev=2"]
    args.runs = [r for r in args.runs.split(",") if r]
    if not args.runs or set(args.runs) - {"cold", "warm"}:
        parser.error("--runs: cold, warm or cold,warm")
    if args.cold_json and args.runs != ["warm"]:
        parser.error("--cold-json goes with --runs warm")
    # The closed loop's own settings: the day is `minutes` long, no wave.
    args.minutes = args.hours * 60
    args.interruption_at, args.interruption_share = -1, 0.0
    return run(args)


if __name__ == "__main__":
    bc.run_main(main, "bench_day")
