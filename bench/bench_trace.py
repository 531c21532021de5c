#!/usr/bin/env python3
"""Benchmark (b): a simulated 30-minute day of builds, closed loop.

The Jenkins emulator runs with the closed-loop simulation (bench/sim_jenkins.py,
bench/simulation.py): it follows moto's EC2, registers the nodes of our agents
after a boot delay, runs a trace's jobs on them and applies the idle policy.
The manager runs against it, its passes 5 simulated seconds apart
(`--pass_interval 5/scale` real seconds), until every job has run and the
idle agents have been retired (idle limit + 3 simulated min), then gets
SIGTERM as an aborted Jenkins build would.

The trace (`generate`, seeded: simulation.generate_trace with LABELS' mix): ~300 jobs over 30 minutes, 60 % of them in
bursts (a dozen jobs within a minute), the rest spread out; labels on two envs:
on-demand (`dev`, `prod`), spot (`dev_spot`, `prod_spot_c5.large`) and shared
(`dev_shared`, `prod_shared`: 5 executors). Pre-existing agents: dev has two
stopped `dev` agents and one stopped on an old AMI; prod has one running `prod`
agent and a stopped `prod_shared` one.

Figures: for the jobs the manager served (an agent started or created for
the item, or the item counted against an agent already booting), the time
from enqueue to the manager's decision, and in which pass relative to the
first dump that showed the item (the target: the same pass); for every job,
enqueue to start; instance-minutes billed; instances created vs started;
make-room terminations; the peak of agents per env against the caps; builds
killed under a running job (must be 0 but for those EC2 reclaims).

The interruption wave (issue 13; `--interruption-at`, default minute 12,
`--interruption-share` 0.2, off with `--interruption-at -1`): EC2's spot
interruption warning for 20 % of the running spot agents at once, through
each env's EventBridge queue (`--interruption_queue`), and the instances
reclaimed two minutes later; a build killed by the reclaim is retried.
Figures: builds started on a warned agent after its warning (must be 0),
and the time from each warning until an agent of the same label came
online.

  bench_trace.py generate [--jobs N] [--minutes M] [--seed S]   prints a trace
  bench_trace.py run --binary PATH --workdir DIR [--time-scale X] ...
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import sys
import threading
import time

import bench_burst
import bench_common as bc
import simulation

# label: (share of jobs, median duration s, job names)
LABELS = {
    "dev": (0.30, 90, ["app/build", "app/unit-tests", "lib/build", "docs/publish"]),
    "dev_spot": (0.20, 120, ["app/integration", "app/e2e"]),
    "dev_shared": (0.15, 60, ["lint", "app/check-format", "lib/lint"]),
    "prod": (0.15, 120, ["release/package", "release/deploy"]),
    "prod_spot_c5.large": (0.10, 180, ["release/load-test"]),
    "prod_shared": (0.10, 45, ["release/sign", "release/notify"]),
}
PREEXISTING = [
    {"env": "dev", "labels": "dev", "state": "stopped"},
    {"env": "dev", "labels": "dev", "state": "stopped"},
    {"env": "dev", "labels": "dev", "state": "stopped", "ami": "old"},
    {"env": "prod", "labels": "prod", "state": "running"},
    {"env": "prod", "labels": "prod_shared", "state": "stopped"},
]
INTERRUPTION_QUEUE = "slave-manager-ec2-events"
ACTION = re.compile(r"^(\S+): (start|create) .*?for label (\S+) \((\S+?)[,)]")
TERMINATE = re.compile(r"^(\S+): terminate (\S+) \((.*)\)")
STOP = re.compile(r"^(\S+): stop (\S+) ")
ABSORBED = re.compile(r"^(.*): absorbed by ")
AT_CAP = re.compile(r"^(.*): \S+ is at its (?:on-demand|spot) cap")


def job_key(name, parameters):
    """The manager's key of a queue item (src/job_key.rs, SPEC A5)."""
    text = "".join("_" if c == " " else (c if c.isascii() else "?")
                   for c in (parameters or "NONE").strip())
    return (name.replace("/", "_CHILD_") + "___" + hashlib.md5(text.encode()).hexdigest())[:236]


def analyse(stats, run, caps, scale):
    """The figures, from the simulation's records and the manager's log."""
    summary = stats["summary"]
    origin = summary["origin_epoch"]
    jobs = {job_key(j["job"], j["parameters"]): j for j in stats["jobs"]}
    passes = run.ordered()

    def pass_of(when):
        """The pass a log line belongs to: 1 + summary lines before it."""
        return 1 + sum(p.end < when for p in passes)

    served = {}          # key -> (unix time, pass, how)
    make_room = stops = spot_or_old = 0
    absorbed = {}        # pass -> [(unix time, job name)]
    at_cap = {}          # job name -> passes in which an item of it waited at a cap
    for when, _level, message in run.actions:
        match = AT_CAP.match(message)
        if match:
            at_cap.setdefault(match.group(1), []).append(pass_of(when))
        match = ACTION.match(message)
        if match and match.group(4) in jobs:
            served.setdefault(match.group(4), (when, pass_of(when), match.group(2)))
        match = TERMINATE.match(message)
        if match:
            if "makes room" in match.group(3):
                make_room += 1
            else:
                spot_or_old += 1
        if STOP.match(message):
            stops += 1
    for line in run.lines:
        parsed = bc.LOG_LINE.match(line)
        if parsed and parsed.group(2) == "DEBUG":
            match = ABSORBED.match(parsed.group(3))
            if match:
                when = bc.log_time(parsed.group(1))
                absorbed.setdefault(pass_of(when), []).append((when, match.group(1)))
    # The debug note names the job, not the item. Within a pass the manager
    # goes through the queue in order, and among the unhandled items of one
    # label that nothing was started or created for, those absorbed come
    # first (once no executor is free, none frees up later in the pass). So
    # the n items named X absorbed in pass k are the first n items named X
    # that were queued then and had no launch of their own.
    by_name = {}
    for key, job in jobs.items():
        by_name.setdefault(job["job"], []).append((job["queue_id"], key))
    for number in sorted(absorbed):
        p = next((q for q in passes if q.number == number), None)
        seen_at = None if p is None else (p.end - p.ms / 1000 - origin) * scale
        names = [name for _, name in absorbed[number]]
        for name in set(names):
            candidates = [key for _, key in sorted(by_name.get(name, []))
                          if jobs[key]["first_dump_index"] is not None
                          and jobs[key]["first_dump_index"] <= number
                          and not (served.get(key, (0, 0, ""))[2] in ("start", "create")
                                   and served[key][1] <= number)
                          and (seen_at is None or jobs[key]["started"] is None
                               or jobs[key]["started"] >= seen_at)]
            when = next(w for w, n in absorbed[number] if n == name)
            for key in candidates[:names.count(name)]:
                served.setdefault(key, (when, number, "absorbed"))

    reaction, same_pass_reaction, pass_lag, by_how = [], [], [], {}
    late = {"at a cap first": 0, "no cap note": 0}
    late_items = []
    for key, (when, pass_number, how) in served.items():
        job = jobs[key]
        enqueued_real = origin + job["enqueued"] / scale
        reaction.append((when - enqueued_real) * scale)
        by_how[how] = by_how.get(how, 0) + 1
        if job["first_dump_index"] is None:
            continue
        lag = pass_number - job["first_dump_index"]
        pass_lag.append(lag)
        if lag == 0:
            same_pass_reaction.append((when - enqueued_real) * scale)
        else:
            capped = any(job["first_dump_index"] <= n < pass_number
                         for n in at_cap.get(job["job"], []))
            late["at a cap first" if capped else "no cap note"] += 1
            late_items.append({"key": key, "label": job["label"], "how": how,
                               "first_dump_pass": job["first_dump_index"],
                               "action_pass": pass_number, "at_cap_before": capped})
    waits = [j["started"] - j["enqueued"] for j in stats["jobs"] if j["started"] is not None]
    by_label = {}
    for j in stats["jobs"]:
        if j["started"] is not None:
            by_label.setdefault(j["label"], []).append(j["started"] - j["enqueued"])
    served_waits = [jobs[k]["started"] - jobs[k]["enqueued"] for k in served
                    if jobs[k]["started"] is not None]
    unserved_waits = [j["started"] - j["enqueued"] for k, j in jobs.items()
                      if k not in served and j["started"] is not None]
    csv = {}
    run_csv = os.path.join(run.cwd, "properties_run.csv")
    if os.path.exists(run_csv):
        with open(run_csv, newline="") as f:
            rows = [line.strip().split(",") for line in f if line.strip()]
        if len(rows) == 2:
            csv = dict(zip(rows[0], rows[1]))
    steady_ms = [p.ms for p in run.ordered()[1:]]
    return {
        "jobs": summary["trace_jobs"], "started": summary["started"],
        # queue id -> how the manager served it (absorbed, start, create).
        "served_kinds": {str(jobs[key]["queue_id"]): how for key, (_, _, how) in served.items()},
        "finished": summary["finished"], "killed": summary["killed"],
        # Retries of builds EC2 reclaimed are jobs too (started counts them).
        "never_started": sum(j["started"] is None for j in stats["jobs"]),
        "served_by_manager": len(served), "served_how": by_how,
        "reaction_sim_s_median": bc.median(reaction),
        "reaction_sim_s_p95": bc.percentile(reaction, 0.95),
        "reaction_real_ms_median": None if not reaction else bc.median(reaction) / scale * 1000,
        "reaction_real_ms_p95": None if not reaction else bc.percentile(reaction, 0.95) / scale * 1000,
        "same_pass_reaction_sim_s_median": bc.median(same_pass_reaction),
        "same_pass_reaction_sim_s_p95": bc.percentile(same_pass_reaction, 0.95),
        "pass_lag_counts": {str(k): pass_lag.count(k) for k in sorted(set(pass_lag))},
        "late": late, "late_items": late_items,
        "wait_sim_s_median": bc.median(waits), "wait_sim_s_p95": bc.percentile(waits, 0.95),
        "wait_by_label": {label: (len(w), bc.median(w), bc.percentile(w, 0.95))
                          for label, w in sorted(by_label.items())},
        "served_wait_sim_s_median": bc.median(served_waits),
        "served_wait_sim_s_p95": bc.percentile(served_waits, 0.95),
        "unserved_wait_sim_s_median": bc.median(unserved_waits),
        "unserved_wait_sim_s_p95": bc.percentile(unserved_waits, 0.95),
        "instance_minutes": summary["instance_minutes"],
        "billed_instance_minutes": summary["billed_instance_minutes"],
        "sim_instances_created": summary["instances_created"],
        "sim_instance_starts": summary["instance_starts"],
        "manager_csv": csv, "make_room_terminations": make_room,
        "other_terminations": spot_or_old, "stops": stops,
        "peaks": summary["peaks"], "caps": caps,
        "caps_respected": all(p["on_demand_capped"] <= caps["on_demand"]
                              and p["spot_capped"] <= caps["spot"]
                              for p in summary["peaks"].values()),
        "passes": len(run.ordered()),
        "pass_ms_median": bc.median(steady_ms), "pass_ms_p95": bc.percentile(steady_ms, 0.95),
        "sim_minutes": summary["sim_seconds"] / 60, "wall_s": run.wall,
        "dumps": summary["dumps"], "poll_seconds_median": summary["poll_seconds_median"],
        "warned": summary.get("warned", 0),
        "started_on_warned": summary.get("started_on_warned", 0),
        "started_on_warned_after_offline": summary.get("started_on_warned_after_offline", 0),
        "warning_to_offline": summary.get("warning_to_offline", []),
        "killed_by_reclaim": summary.get("killed_by_reclaim", 0),
        "retried": summary.get("retried", 0),
        "replacement_online": summary.get("replacement_online", []),
        "interruption_csv": interruption_csv(run.cwd),
    }


def interruption_csv(cwd):
    """The manager's interruption counters from properties_error.csv."""
    path = os.path.join(cwd, "properties_error.csv")
    if not os.path.exists(path):
        return {}
    with open(path, newline="") as f:
        rows = [line.strip().split(",") for line in f if line.strip()]
    if len(rows) != 2:
        return {}
    wanted = ("spot_interruptions", "replacements_launched", "interruption_dropped",
              "interruption_failed")
    return {k: v for k, v in zip(rows[0], rows[1]) if k in wanted}


def markdown(r, args):
    lag = ", ".join(f"{k}: {v}" for k, v in r["pass_lag_counts"].items()) or "—"
    peaks = "; ".join(
        f"{env} {p['active']} running ({p['active_spot']} spot), counted against caps: "
        f"on-demand {p['on_demand_capped']}/{r['caps']['on_demand']}, "
        f"spot {p['spot_capped']}/{r['caps']['spot']}"
        for env, p in sorted(r["peaks"].items()))
    csv = r["manager_csv"]
    rows = [
        ["jobs (started / finished / killed / never started)",
         f"{r['jobs']} ({r['started']} / {r['finished']} / {r['killed']} / {r['never_started']})"],
        ["jobs the manager served (how)",
         f"{r['served_by_manager']} ({', '.join(f'{k} {v}' for k, v in sorted(r['served_how'].items()))})"],
        ["enqueue → manager's launch/start/absorb, median / p95",
         f"{bc.fmt(r['reaction_sim_s_median'], 1)} / {bc.fmt(r['reaction_sim_s_p95'], 1)} sim s "
         f"= {bc.fmt(r['reaction_real_ms_median'])} / {bc.fmt(r['reaction_real_ms_p95'])} real ms"],
        ["… served in the pass that first saw them, median / p95",
         f"{bc.fmt(r['same_pass_reaction_sim_s_median'], 1)} / "
         f"{bc.fmt(r['same_pass_reaction_sim_s_p95'], 1)} sim s"],
        ["passes from the first dump showing the item to its action (passes: jobs)", lag],
        ["… served later: had waited at a cap / no cap note",
         f"{r['late']['at a cap first']} / {r['late']['no cap note']}"],
        ["enqueue → job start, all jobs, median / p95",
         f"{bc.fmt(r['wait_sim_s_median'], 1)} / {bc.fmt(r['wait_sim_s_p95'], 1)} sim s"],
        ["… jobs the manager served / jobs that found a free executor",
         f"{bc.fmt(r['served_wait_sim_s_median'], 1)} / {bc.fmt(r['served_wait_sim_s_p95'], 1)} s; "
         f"{bc.fmt(r['unserved_wait_sim_s_median'], 1)} / {bc.fmt(r['unserved_wait_sim_s_p95'], 1)} s"],
        ["… by label: jobs, median / p95 s", "; ".join(
            f"{label} {n}, {bc.fmt(m)} / {bc.fmt(p)}"
            for label, (n, m, p) in r["wait_by_label"].items())],
        ["instance-minutes (active / billed, 1-min minimum per start)",
         f"{bc.fmt(r['instance_minutes'], 1)} / {bc.fmt(r['billed_instance_minutes'], 1)}"],
        ["instances created vs started (manager's CSV; simulation's view)",
         f"{csv.get('instances_created', '?')} vs {csv.get('instances_started', '?')}; "
         f"{r['sim_instances_created']} vs {r['sim_instance_starts']}"],
        ["stops / make-room terminations / other terminations (spot, old AMI)",
         f"{r['stops']} / {r['make_room_terminations']} / {r['other_terminations']}"],
        ["peak agents per env", peaks],
        ["caps respected", "yes" if r["caps_respected"] else "**NO**"],
        *interruption_rows(r),
        ["passes; pass latency median / p95",
         f"{r['passes']}; {bc.fmt(r['pass_ms_median'])} / {bc.fmt(r['pass_ms_p95'])} ms"],
        ["simulated / real time", f"{bc.fmt(r['sim_minutes'], 1)} min / {bc.fmt(r['wall_s'], 1)} s"],
    ]
    head = (f"{r['jobs']} jobs over {args.minutes} simulated minutes, time scale {args.time_scale}, "
            f"boot delay {args.boot_delay} s, idle limit {args.idle_minutes} min, "
            f"caps on-demand {args.on_demand_cap} / spot {args.spot_cap} per env, --cli {args.cli}")
    return head + "\n\n" + bc.table(["figure", "value"], rows)


def interruption_rows(r):
    """The interruption wave's rows; none without a wave."""
    if not r["warned"]:
        return []
    online = [t for t in r["replacement_online"] if t is not None]
    csv = r["interruption_csv"]
    return [
        ["interruption wave: spot agents warned (manager's spot_interruptions / "
         "replacements_launched)",
         f"{r['warned']} ({csv.get('spot_interruptions', '?')} / "
         f"{csv.get('replacements_launched', '?')})"],
        ["… builds started on a warned agent after its warning (must be 0); of them, after "
         "Jenkins had the manager's offline-node",
         f"{r['started_on_warned']}; {r['started_on_warned_after_offline']}"],
        ["… warning → offline-node reached Jenkins, median / max",
         f"{bc.fmt(bc.median(r['warning_to_offline']), 1)} / "
         f"{bc.fmt(max(r['warning_to_offline']) if r['warning_to_offline'] else None, 1)} sim s"],
        ["… builds killed by the reclaim (retried)",
         f"{r['killed_by_reclaim']} ({r['retried']})"],
        ["… warning → an agent of its label online, median / max",
         f"{bc.fmt(bc.median(online), 1)} / {bc.fmt(max(online) if online else None, 1)} sim s"
         f" ({len(online)} of {r['warned']})"],
    ]


class MarkerClock:
    """Ages the manager's marker files in simulated time.

    The manager times its markers by file age (`working_on_*.working`: 300 s
    until an item is tried again; `*.start_instance`: an instance started
    less than 300 s ago is not stopped while its node looks stale). At time
    scale X those 300 real seconds would be 300·X simulated ones, far beyond
    the trace. So every 50 ms each marker's mtime is moved back so that its
    age reads X times its real age; a marker the manager writes anew starts
    over. Other real-time rules of the manager (a running instance without a
    node counts as booting for 600 s) are left alone: they only matter when
    an agent fails to register, which the simulation never does.
    """

    def __init__(self, directory, scale):
        self.directory = directory
        self.scale = scale
        self.born = {}          # name -> (real creation time, mtime we set)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.wait(0.05):
            now = time.time()
            try:
                names = os.listdir(self.directory)
            except OSError:
                continue
            for name in names:
                if not name.endswith((".working", ".start_instance")):
                    continue
                path = os.path.join(self.directory, name)
                try:
                    mtime = os.stat(path).st_mtime
                    born, set_to = self.born.get(name, (None, None))
                    if born is None or mtime > set_to + 0.001:
                        born = mtime         # new, or written again
                    aged = born - (now - born) * (self.scale - 1)
                    os.utime(path, (aged, aged))
                    self.born[name] = (born, aged)
                except OSError:
                    self.born.pop(name, None)   # removed meanwhile

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.stop.set()
        self.thread.join(5)


def run(args):
    bc.install_signal_exit()
    trace = simulation.generate_trace(args.jobs, args.minutes, args.seed, LABELS)
    result, _ = closed_loop(args, trace, PREEXISTING,
                            ["--boot-delay", str(args.boot_delay)])
    if args.json:
        with open(args.json, "w") as out:
            json.dump(result, out, indent=1)
    print(markdown(result, args))
    return 0


def closed_loop(args, trace, preexisting, sim_flags, manager_flags=()):
    """One closed-loop run of `trace` in `args.workdir` (its files there):
    moto, the simulated Jenkins (`sim_flags`: its boot model), the manager
    (`manager_flags` on top of the usual ones) until every job has run and
    the idle agents had time to go. (analyse's figures, the simulation's
    stats). `args` holds binary, workdir, cli, minutes (the trace's span),
    time_scale, idle_minutes, on_demand_cap, spot_cap, interruption_at (< 0:
    no wave) and interruption_share."""
    os.makedirs(args.workdir, exist_ok=True)
    trace_path = os.path.join(args.workdir, "trace.json")
    with open(trace_path, "w") as out:
        json.dump(trace, out, indent=0)
    agents_path = os.path.join(args.workdir, "trace-agents.json")
    with open(agents_path, "w") as out:
        json.dump(preexisting, out)
    services = bc.Services(args.workdir)
    run_dir = None
    try:
        bc.keygen(args.workdir)
        run_dir = bc.workdir("run-trace-", args.workdir)
        moto = services.moto()
        aws = moto
        if getattr(args, "aws_latency", False):
            # The manager's calls (not the simulation's) through the proxy's
            # latency model, in simulated time: each delay 1/scale as long
            # in real time, each bucket refilled scale times as fast.
            aws = services.proxy(moto)
            bc.http_json(f"{aws}/_proxy/latency", method="POST",
                         body=scaled_latency(args.time_scale))
        # The world first (the emulator needs its environment.json), with a
        # placeholder Jenkins URL in the agents' tags: only the manager's
        # --url is used to reach Jenkins.
        world = bc.two_env_world(moto, "trace", args.workdir, "http://jenkins.invalid/",
                                 "--agents", agents_path)
        sim_out = os.path.join(args.workdir, "sim-stats.json")
        wave, wave_flags = [], []
        if args.interruption_at >= 0:
            wave = ["--interruption-queue", INTERRUPTION_QUEUE,
                    "--interruption-at", str(args.interruption_at * 60),
                    "--interruption-share", str(args.interruption_share)]
            wave_flags = ["--interruption_queue", INTERRUPTION_QUEUE]
        jenkins, emulator = services.emulator("emulator-sim", [
            "--moto-endpoint", moto, "--environment", world["environment_json"],
            "--trace", trace_path, "--time-scale", str(args.time_scale), *sim_flags,
            "--idle-minutes", str(args.idle_minutes),
            "--sim-out", sim_out, "--http-port", "0", "--ssh-port", "0", *wave],
            script=os.path.join(bc.BENCH, "sim_jenkins.py"))
        manager_args = bc.manager_args(
            jenkins, world, args.cli,
            "--loop_counter", "1000000", "--pass_interval", f"{5 / args.time_scale:.3f}",
            "--idle_minutes", str(args.idle_minutes),
            "--max_num_of_slaves_in_env", str(args.on_demand_cap),
            "--max_num_of_spot_slaves_in_env", str(args.spot_cap), *wave_flags,
            *manager_flags)
        last_check = {"at": 0.0, "stop": False}
        limit_sim = (args.minutes + args.idle_minutes + 60) * 60

        def finished():
            """All jobs ran and the idle agents had time to go; or the
            simulation ran far past the trace (something is stuck)."""
            now = time.monotonic()
            if now - last_check["at"] < 1:
                return last_check["stop"]
            last_check["at"] = now
            sim = bc.http_json(f"{jenkins}emulator/sim")
            summary = sim["summary"]
            finish = max([j["finished"] or 0 for j in sim["jobs"]] + [0])
            stop = (summary["done"] and summary["sim_seconds"]
                    > finish + (args.idle_minutes + 3) * 60) \
                or summary["sim_seconds"] > limit_sim
            last_check["stop"] = stop
            return stop

        bc.log(f"trace: {len(trace)} jobs over {args.minutes} simulated min at "
               f"time scale {args.time_scale} (~{args.minutes * 60 / args.time_scale:.0f} s "
               f"real, plus draining)")
        manager = bc.ManagerRun(args.binary, manager_args, bc.manager_env(aws), run_dir,
                                os.path.join(args.workdir, "manager-trace.log"))
        with MarkerClock(run_dir, args.time_scale):
            manager.run(timeout=limit_sim / args.time_scale + 300, stop_when=finished)
        services.stop(emulator)
        with open(sim_out) as source:
            stats = json.load(source)
        caps = {"on_demand": args.on_demand_cap, "spot": args.spot_cap}
        result = analyse(stats, manager, caps, args.time_scale)
    finally:
        services.close()
        if run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
    return result, stats


def scaled_latency(time_scale):
    """bench_burst's AWS latency model (mutating calls 1 s, describes
    0.3 s, RunInstances 5 tokens refilled at 2/s) in simulated time."""
    model = bench_burst.LATENCY
    return {"delays": [dict(d, seconds=d["seconds"] / time_scale) for d in model["delays"]],
            "buckets": [dict(b, refill=b["refill"] * time_scale) for b in model["buckets"]]}


def main(argv):
    if argv[:1] == ["generate"]:
        parser = argparse.ArgumentParser(prog="bench_trace.py generate")
        parser.add_argument("--jobs", type=int, default=300)
        parser.add_argument("--minutes", type=float, default=30)
        parser.add_argument("--seed", type=int, default=6)
        args = parser.parse_args(argv[1:])
        json.dump(simulation.generate_trace(args.jobs, args.minutes, args.seed, LABELS),
                  sys.stdout, indent=0)
        print()
        return 0
    if argv[:1] == ["run"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="bench_trace.py run",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--cli", default="ssh")
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--time-scale", type=float, default=30)
    parser.add_argument("--boot-delay", type=float, default=60)
    parser.add_argument("--idle-minutes", type=int, default=10)
    parser.add_argument("--on-demand-cap", type=int, default=8)
    parser.add_argument("--spot-cap", type=int, default=8)
    parser.add_argument("--interruption-at", type=float, default=12, metavar="MINUTE",
                        help="simulated minute of the interruption wave (negative: none)")
    parser.add_argument("--interruption-share", type=float, default=0.2)
    parser.add_argument("--aws-latency", action="store_true",
                        help="the manager's AWS calls through the proxy's latency model, scaled")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    bc.run_main(main, "bench_trace")
