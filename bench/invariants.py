"""The soak's invariant checker (issue 15): judges slave_manager from the
outside, never from its logs or counters.

What it reads (fed by bench/soak.py, or by tests/tools/test_invariants.py
with made-up states):
- moto's EC2 state, read straight from moto (`snapshot`): every instance,
  its tags, lifecycle, key pair, AMI, launch time and state;
- every EC2 call that reached moto, with the instance ids it named or made
  and moto's answer (`call`): a recorder sits between the fault proxy and
  moto, so a call a fault stopped is not there, and one that happened
  although its answer was lost is;
- every dump the simulated Jenkins served (`dump`): queue items, nodes,
  busy executors, as the manager read them;
- the Jenkins CLI commands Jenkins ran (`command`), the manager's runs
  (start, end, killed, AMIs), the faults injected and when (`fault`), the
  SQS requests sent (`sqs_sent`), and at the end the simulation's jobs.

Words, as the manager defines them (SPEC, src/plan/mod.rs) but judged here
from the state:
- *ours*: `Name` tag = the slave name, key pair `jenkins.cloud`, and the
  `jenkins_master` tag naming the env's master (or, without that tag, the
  `jenkins_url` of `slave_data`). Anything else is foreign.
- *caps*: per env, our instances in pending, running, stopping or stopped,
  counted apart by lifecycle: spot against the spot cap, the rest against
  the on-demand cap.
- *busy*: the node of the instance had a busy executor in the last whole
  dump Jenkins served before the call (what the manager read). A build that
  lands after that dump (the `slip` fault) is a race the manager cannot
  see: counted, not a violation; any other build killed by a stop is one.
- *capacity* of a label at a pass: free executors of online nodes of our
  instances carrying it, plus the executors of our instances of it that run
  without a node yet (booting, launched less than the boot grace and the
  zombie limit ago); instances on an old AMI, or that the pass stops or
  terminates, count nothing. Where the checker cannot tell (a boundary
  within `margin` seconds) it takes the reading that favours the manager.
- a *clean* pass for an env: the dump was whole, the pass completed within
  its run (no kill), a DescribeInstances of the env succeeded around the
  dump, and no injected fault touched the env's AWS calls or Jenkins.

The invariants (names as printed):
- cap_exceeded: an env held more on-demand or spot agents of ours than its cap.
- busy_stopped: an instance whose node had a busy executor was stopped or
  terminated (by the dump the manager read, or by a build killed that no
  injected race explains).
- double_agent: a pass gave a label more new agents (launched or started)
  than its queue items beyond the capacity needed: a queue item got a second
  agent. (Counted per label rather than per item: the manager's markers and
  its capacity model both say the same, and a marker expiry that retries an
  item is fine exactly when the capacity for it is gone.)
- foreign_touched: a call named an instance that is not ours.
- starved: a queued item of a servable label was beyond capacity for
  `starve_passes` clean passes in a row while its env had room (a stopped
  agent of the label, or room under the cap, or a stopped on-demand agent to
  make room with).
- zombie_outlived: an agent of ours kept running without a node for
  `zombie_passes` clean passes past the zombie limit.
- old_ami_outlived: a stopped agent of ours on an old AMI was still there
  after a clean first pass of a run (each run's first pass runs the
  inventory; clean: its env described, no fault on it, no kill).
- sqs_built_twice / sqs_lost: a valid SQS request was built more than once,
  or never; sqs_refused_ran: a command ran that no valid request asks for.
- warned_build: a build started on an agent EC2 had warned it reclaims,
  after the manager had a whole pass to take its node offline (the second
  dump showing the node after the warning). Before that it is a race the
  manager cannot win; a build killed by the reclaim is EC2's doing.

Interruption events (`warned`, `rebalanced`) also change two readings: an
agent warned or drained counts no capacity for double agents from the pass
that may have read the event on (the manager takes it out of service), and
a warned agent that was busy allows its label one more new agent in the
passes right after the warning (the replacement for the build at risk).
"""

import bisect
import json
import math
import re
from collections import defaultdict

INVARIANTS = {
    "cap_exceeded": "an env held more agents of ours than its on-demand or spot cap",
    "busy_stopped": "an instance whose node had a busy executor was stopped or terminated",
    "double_agent": "a queue item got more than one new agent (per label and pass)",
    "foreign_touched": "an instance that is not ours was touched",
    "starved": "a servable item waited N clean passes while its env had room",
    "zombie_outlived": "an agent ran without a node past the zombie limit",
    "old_ami_outlived": "a stopped agent on an old AMI outlived the inventory",
    "sqs_built_twice": "an SQS request was built twice",
    "sqs_lost": "an SQS request was lost",
    "sqs_refused_ran": "a command no valid SQS request asks for ran",
    "warned_build": "a build started on a warned agent a whole pass after the warning",
}
# A replacement for a warned agent's build is launched in the pass that
# reads the warning: allowed in the dumps up to this long after it.
REPLACEMENT_WINDOW = 30.0

ACTIVE, STOPPED, GONE = "active", "stopped", "gone"
STATE_CLASS = {"pending": ACTIVE, "running": ACTIVE, "stopping": STOPPED,
               "stopped": STOPPED, "shutting-down": GONE, "terminated": GONE}
# EC2 actions that change an instance, and the state class they leave it in.
MUTATIONS = {"StartInstances": ACTIVE, "StopInstances": STOPPED,
             "TerminateInstances": GONE, "RebootInstances": None,
             "ModifyInstanceAttribute": None, "CreateTags": None,
             "DeleteTags": None}
INSTANCE_ID = re.compile(r"InstanceID=(\S+)")


def same_master(a, b):
    """The manager's comparison of master URLs (src/model.rs)."""
    return (a or "").rstrip("/") == (b or "").rstrip("/")


class CheckConfig:
    """What the checker is told about the world: envs (name -> region and
    master URL), the slave name, the caps, the servable labels (label ->
    env, spot?, executors), the manager's time limits (real seconds) and the
    checker's patience."""

    def __init__(self, envs, slave_name, on_demand_cap, spot_cap, labels,
                 boot_grace=600.0, zombie_limit=None, starve_passes=3,
                 zombie_passes=3, margin=2.0, key_name="jenkins.cloud",
                 sqs_job="soak-remote", commands=("groovy", "build", "who-am-i", "offline-node")):
        self.envs = envs
        self.slave_name = slave_name
        self.on_demand_cap = on_demand_cap
        self.spot_cap = spot_cap
        self.labels = labels
        self.boot_grace = boot_grace
        self.zombie_limit = zombie_limit
        self.starve_passes = starve_passes
        self.zombie_passes = zombie_passes
        self.margin = margin
        self.key_name = key_name
        self.sqs_job = sqs_job
        self.commands = set(commands)
        self.region_env = {e["region"]: name for name, e in envs.items()}
        if len(self.region_env) != len(envs):
            raise ValueError("the checker tells envs apart by region: one env per region")


class Instance:
    """One EC2 instance as the checker knows it."""

    def __init__(self, instance_id, env):
        self.id = instance_id
        self.env = env
        self.tags = {}
        # The tags it had when first read: whose it is is decided then, so a
        # tag the manager writes later (a stray TagMaster on another
        # master's agent) cannot make it ours after the fact.
        self.owner_tags = None
        self.spot = False
        self.key = None
        self.image = None
        self.ip = None
        self.transitions = []     # (time, state class, "call"|"snap"), in time order
        self.launches = []        # times it was launched or started

    def labels(self):
        try:
            data = json.loads(self.tags.get("slave_data", "{}"))
            return str(data.get("slave_labels", "")).split()
        except (ValueError, AttributeError):
            return []

    def master(self):
        try:
            return json.loads(self.tags.get("slave_data", "{}")).get("jenkins_url")
        except (ValueError, AttributeError):
            return None

    def why_foreign(self, cfg):
        """None when ours; else what makes it somebody else's."""
        tags = self.owner_tags if self.owner_tags is not None else self.tags
        if tags.get("Name") != cfg.slave_name:
            return f"Name tag {tags.get('Name')!r}"
        if self.key != cfg.key_name:
            return f"key pair {self.key!r}"
        master = cfg.envs[self.env]["master"]
        tag = tags.get("jenkins_master")
        if tag is not None and not same_master(tag, master):
            return f"jenkins_master {tag!r}"
        if tag is None and not same_master(self.master(), master):
            return f"slave_data jenkins_url {self.master()!r}"
        return None

    def state_at(self, t):
        state = None
        for when, cls, _ in self.transitions:
            if when > t:
                break
            state = cls
        return state

    def set_state(self, t, cls, source, margin=0.0):
        """A recorded call is exact: it replaces what snapshots made of it
        (one that already showed its effect, stamped a little before it) or
        read past it (one stamped after it that moto answered first)."""
        if source == "call":
            self.transitions = [x for x in self.transitions if not (x[2] == "snap" and (
                (x[1] == cls and t - margin <= x[0] <= t) or t < x[0] <= t + margin))]
        self.transitions.append((t, cls, source))
        self.transitions.sort(key=lambda x: x[0])
        merged = []
        for x in self.transitions:
            if not merged or merged[-1][1] != x[1]:
                merged.append(x)
        self.transitions = merged

    def launched_at(self, t):
        """The launch (or last start) before `t`: what EC2's LaunchTime says."""
        times = [x for x in self.launches if x <= t]
        return max(times) if times else None


class Dump:
    """One dump Jenkins served: its queue and nodes."""

    def __init__(self, record):
        self.index = record["index"]
        self.time = record["time"]
        self.sim_time = record.get("sim_time")
        self.whole = record.get("whole", True)
        dump = record["dump"]
        self.queue = [{"queue_id": q.get("queueId"), "job": q.get("jobName"),
                       "label": (q.get("labels") or "").strip()}
                      for q in dump.get("build_queue", [])]
        self.nodes = []
        for n in dump.get("slave_queue", []):
            found = INSTANCE_ID.search(n.get("description", ""))
            self.nodes.append({
                "name": n.get("slaveName", ""),
                "instance": found.group(1) if found else None,
                "busy": int(n.get("busy_executors") or 0),
                "idle": int(n.get("ope_idle_count") or 0),
                "offline": n.get("isOffLine") == "true",
                "terminate_me": n.get("terminate_me") == "true",
            })

    def node_of(self, inst):
        """The node of `inst`: by InstanceID=, else by the IP its name ends with."""
        for node in self.nodes:
            if node["instance"] == inst.id:
                return node
        for node in self.nodes:
            if inst.ip and node["name"].endswith("-" + inst.ip):
                return node
        return None


class Checker:
    """Collects the evidence and records violations; `evaluate(now)` judges
    every pass whose window has closed, `finish()` what needs the end."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.instances = {}
        self.dumps = []
        self.calls = []
        self.commands = []
        self.runs = []
        self.faults = []
        self.sqs = {}               # request id -> time sent
        self.builds = defaultdict(list)
        self.violations = []
        self.evidence = defaultdict(int)   # how often each check had material
        self.snap_time = {}          # env -> time of the latest snapshot applied
        self._pending = []           # snapshots waiting for the calls before them
        self._judged = 0             # dumps judged so far
        self._calls_judged = 0
        self._starve = defaultdict(int)     # (env, label, queue id) -> clean passes in a row
        self._zombie = defaultdict(int)     # instance -> clean passes past the limit
        self._zombie_seen = set()
        self._over_cap = {}          # (env, class) -> violation being extended
        self._runs_judged = set()
        self.race_stops = []        # stops of nodes busy only after the dump
        self.warnings = {}          # instance -> (env, time EC2 warned it)
        self.rebalances = {}        # instance -> (env, time of the recommendation)

    # --- evidence -------------------------------------------------------------

    def instance(self, instance_id, env):
        inst = self.instances.get(instance_id)
        if inst is None:
            inst = self.instances[instance_id] = Instance(instance_id, env)
        return inst

    def snapshot(self, env, t, described, complete=False):
        """Instances of `env` as moto describes them at `t` (read after
        `t`); `complete`: all that are not terminated, so any other known
        one is gone. Attributes (tags, AMI, …) are taken at once; states
        wait in `_pending` until every call before `t` is in (`evaluate`'s
        horizon), then fill only what no call explains."""
        for d in described:
            inst = self.instance(d["id"], env)
            inst.tags = dict(d.get("tags", {}))
            if inst.owner_tags is None:
                inst.owner_tags = dict(inst.tags)
            inst.spot = bool(d.get("spot"))
            inst.key = d.get("key")
            inst.image = d.get("image")
            inst.ip = d.get("ip") or inst.ip
            launch = d.get("launch_time")
            if launch is not None and all(abs(launch - x) > 1 for x in inst.launches):
                inst.launches.append(launch)
        states = {d["id"]: STATE_CLASS.get(d.get("state"), GONE) for d in described}
        self._pending.append((t, env, states, complete))

    def _apply_snapshots(self, horizon):
        """Applies the snapshots taken before `horizon` (every call that
        arrived before it is in): a state that disagrees with the timeline
        and that no recorded call around `t` explains is an outside change
        (or the first sight of an instance). Then the caps, at `t`."""
        margin = self.cfg.margin
        ready = sorted((x for x in self._pending if x[0] <= horizon - margin), key=lambda x: x[0])
        self._pending = [x for x in self._pending if x[0] > horizon - margin]
        for t, env, states, complete in ready:
            for inst in self.instances.values():
                if inst.env != env:
                    continue
                cls = states.get(inst.id, GONE if complete else None)
                if cls is None or inst.state_at(t) == cls:
                    continue
                # A read racing a call: one just before it that moto had not
                # yet applied (a stale read), or one just after it that the
                # read already shows. A read of the state before a later call
                # is the truth until that call.
                calls = [(when, c) for when, c, src in inst.transitions if src == "call"]
                if any(t - margin <= when <= t or (t < when <= t + margin and c == cls) for when, c in calls):
                    continue
                inst.set_state(t, cls, "snap")
            self.snap_time[env] = max(self.snap_time.get(env, 0), t)
            self._check_caps(env, t)

    def call(self, record):
        """One EC2 call that reached moto: {time, end, region, action,
        status, ids (named), made (instance ids RunInstances made)}."""
        self.calls.append(record)
        env = self.cfg.region_env.get(record.get("region"))
        if record.get("status") != 200 or env is None:
            return
        action = record["action"]
        if action == "RunInstances":
            for instance_id in record.get("made", []):
                inst = self.instance(instance_id, env)
                inst.set_state(record["time"], ACTIVE, "call", self.cfg.margin)
                inst.launches.append(record["time"])
        elif MUTATIONS.get(action):
            for instance_id in record.get("ids", []):
                inst = self.instance(instance_id, env)
                inst.set_state(record["time"], MUTATIONS[action], "call", self.cfg.margin)
                if action == "StartInstances":
                    inst.launches.append(record["time"])

    def dump(self, record):
        self.dumps.append(Dump(record))

    def command(self, record):
        """A CLI command Jenkins ran: {time, argv, exit}."""
        self.commands.append(record)
        argv = record.get("argv") or []
        if not argv:
            return
        if argv[0] not in self.cfg.commands or (
                argv[0] == "build" and (len(argv) < 2 or argv[1] != self.cfg.sqs_job)) or (
                # The manager's own scripts come on stdin (`groovy =`); a
                # script named by a request would be the script console.
                argv[0] == "groovy" and argv[1:2] != ["="]):
            self.violate("sqs_refused_ran", record["time"], None,
                         f"Jenkins ran {' '.join(argv)[:200]!r}")
        if argv[0] == "build":
            for word in argv:
                if word.startswith("REQUEST_ID="):
                    request = word.split("=", 1)[1]
                    self.builds[request].append(record)
                    if len(self.builds[request]) == 2:
                        self._judge_rebuild(request, self.builds[request][0], record)

    def _judge_rebuild(self, request, first, again):
        """A second build is a violation, unless the manager was killed while
        the first was on its way (it ran, but the manager never learnt it:
        no client can tell those apart)."""
        start, end = first["time"] - 0.5, (first.get("finished") or first["time"]) + 2.0
        if any(f.get("kill") and start <= f["start"] <= end for f in self.faults):
            self.evidence["sqs_rebuilt_after_kill_mid_build"] += 1
            return
        self.violate("sqs_built_twice", again["time"], None, f"request {request} built twice")

    def run(self, record):
        """A manager run: {number, start, end, killed, ami: {env: ami}};
        sent at its start and again at its end."""
        for i, known in enumerate(self.runs):
            if known["number"] == record["number"]:
                self.runs[i] = dict(record)
                return
        self.runs.append(dict(record))

    def fault(self, record):
        """An injected fault: {kind, start, end, envs: [...] or ["*"],
        jenkins: bool}. Kills are faults too (start == end)."""
        self.faults.append(record)

    def sqs_sent(self, request_id, t):
        self.sqs[request_id] = t

    def warned(self, instance_id, env, t):
        """EC2's spot interruption warning for the instance was queued at `t`."""
        self.warnings.setdefault(instance_id, (env, t))

    def rebalanced(self, instance_id, env, t):
        """A rebalance recommendation for the instance was queued at `t`."""
        self.rebalances.setdefault(instance_id, (env, t))

    def _out_of_service(self, instance_id, t):
        """Warned or drained at or before `t` (within the margin)."""
        for events in (self.warnings, self.rebalances):
            if instance_id in events and events[instance_id][1] <= t + self.cfg.margin:
                return True
        return False

    # --- verdicts ---------------------------------------------------------------

    def violate(self, invariant, t, env, detail, pass_=None):
        run = self.run_at(t)
        self.violations.append({
            "invariant": invariant, "time": t, "env": env, "detail": detail,
            "run": run["number"] if run else None,
            "pass": pass_ if pass_ is not None else self.pass_at(t)})

    def run_at(self, t):
        for run in self.runs:
            if run["start"] <= t and (run.get("end") is None or t <= run["end"]):
                return run
        return None

    def pass_at(self, t):
        """(global dump index, pass within its run) of the pass under way at
        `t`: the last dump served before it, and how many dumps its run had
        been served by then."""
        times = [d.time for d in self.dumps]
        at = bisect.bisect_right(times, t)
        if at == 0:
            return None
        last = self.dumps[at - 1]
        run = self.run_at(last.time)
        local = at - bisect.bisect_left(times, run["start"]) if run else None
        return {"dump": last.index, "run_pass": local}

    def _check_caps(self, env, t):
        counts = {"on-demand": 0, "spot": 0}
        for inst in self.instances.values():
            if inst.env != env or inst.why_foreign(self.cfg) is not None:
                continue
            if inst.state_at(t) in (ACTIVE, STOPPED):
                counts["spot" if inst.spot else "on-demand"] += 1
        self.evidence["cap_checks"] += 1
        for cls, cap in (("on-demand", self.cfg.on_demand_cap), ("spot", self.cfg.spot_cap)):
            key = (env, cls)
            if counts[cls] == cap:
                self.evidence["cap_reached_readings"] += 1
            if counts[cls] > cap:
                if key not in self._over_cap:
                    self.violate("cap_exceeded", t, env, f"{counts[cls]} {cls} agents of ours, cap {cap}")
                    self._over_cap[key] = self.violations[-1]
            else:
                self._over_cap.pop(key, None)

    def faulted(self, env, start, end, jenkins_too=True):
        """A fault touched `env` (or Jenkins, or the manager) in [start, end]."""
        for f in self.faults:
            if f["start"] > end or f["end"] < start:
                continue
            if f.get("jenkins") and jenkins_too:
                return True
            if f.get("kill") or "*" in f.get("envs", []) or env in f.get("envs", []):
                return True
        return False

    def evaluate(self, now, horizon=None):
        """Judge every call and every pass whose evidence is complete by
        `now`; `horizon`: every call that arrived before it is in (default
        `now`)."""
        self._apply_snapshots(now if horizon is None else horizon)
        self.dumps.sort(key=lambda d: d.time)
        self.calls.sort(key=lambda c: c["time"])
        self._call_times = [c["time"] for c in self.calls]
        # Calls: judged once the dumps before them are in (they are written
        # before the manager reads them) and a snapshot has named the
        # instances they made.
        settled = min(self.snap_time.values(), default=0) - self.cfg.margin
        while self._calls_judged < len(self.calls) and self.calls[self._calls_judged]["time"] <= settled:
            self._judge_call(self.calls[self._calls_judged])
            self._calls_judged += 1
        while self._judged < len(self.dumps):
            dump = self.dumps[self._judged]
            end = self._window_end(dump, now)
            if end is None or end > settled:
                break
            self._judge_pass(dump, end)
            self._judged += 1
        for run in self.runs:
            if run["number"] not in self._runs_judged and self._judge_run(run, settled):
                self._runs_judged.add(run["number"])

    def _window_end(self, dump, now):
        """When the pass of `dump` ended: the next dump of its run, or the
        run's end; None while unknown."""
        run = self.run_at(dump.time)
        at = self.dumps.index(dump, self._judged)
        later = [d.time for d in self.dumps[at + 1:at + 2]]
        if later and (run is None or run.get("end") is None or later[0] <= run["end"]):
            return later[0]
        if run is not None and run.get("end") is not None:
            return run["end"]
        return None

    def _judge_call(self, call):
        env = self.cfg.region_env.get(call.get("region"))
        if env is None or call["action"] not in MUTATIONS:
            return
        for instance_id in call.get("ids", []):
            inst = self.instances.get(instance_id)
            self.evidence["calls_on_instances"] += 1
            why = inst.why_foreign(self.cfg) if inst else "never seen in moto"
            if why is not None:
                self.violate("foreign_touched", call["time"], env,
                             f"{call['action']} {instance_id} ({why})")
            if call["action"] in ("StopInstances", "TerminateInstances") and call.get("status") == 200:
                self._judge_stop(call, env, instance_id, inst)

    def _judge_stop(self, call, env, instance_id, inst):
        last = None
        for dump in self.dumps:
            if dump.time > call["time"]:
                break
            if dump.whole:
                last = dump
        self.evidence["stops_checked"] += 1
        node = last.node_of(inst) if last is not None and inst is not None else None
        if node is not None and node["busy"] > 0:
            self.violate("busy_stopped", call["time"], env,
                         f"{call['action']} {instance_id}: node {node['name']} had "
                         f"{node['busy']} busy executor(s) in dump {last.index}")

    def _capacity(self, env, label, dump, claimed, generous):
        """Executors for `label` at the dump: what the manager's snapshot
        could count. `generous` takes the boundary readings in favour of
        more capacity (for starvation), else of less (for double agents)."""
        cfg = self.cfg
        spec = cfg.labels[label]
        run = self.run_at(dump.time) or {}
        current = (run.get("ami") or {}).get(env)
        slots = 0
        limit = min(cfg.boot_grace, cfg.zombie_limit or math.inf)
        for inst in self.instances.values():
            if inst.env != env or inst.why_foreign(cfg) is not None or label not in inst.labels():
                continue
            if inst.state_at(dump.time) != ACTIVE or inst.id in claimed:
                continue
            if current and inst.image != current:
                continue
            if not generous and self._out_of_service(inst.id, dump.time):
                continue
            node = dump.node_of(inst)
            if node is not None:
                slots += 0 if node["offline"] else node["idle"]
                continue
            launched = inst.launched_at(dump.time)
            age = dump.time - launched if launched is not None else 0.0
            edge = cfg.margin if generous else -cfg.margin
            if age < limit + edge:
                slots += spec["executors"]
        return slots

    def _pass_calls(self, start, end):
        lo = bisect.bisect_left(self._call_times, start)
        hi = bisect.bisect_left(self._call_times, end)
        return self.calls[lo:hi]

    def _clean(self, env, dump, end):
        """The pass of `dump` saw `env` cleanly (see the module's words)."""
        if not dump.whole or self.faulted(env, dump.time - self.cfg.margin, end):
            return False
        run = self.run_at(dump.time)
        if run is None or (run.get("killed") and run.get("end") is not None and run["end"] <= end):
            return False
        return self._described(env, dump)

    def _described(self, env, dump):
        """A DescribeInstances of `env` succeeded with the pass of `dump`."""
        region = self.cfg.envs[env]["region"]
        return any(c["action"] == "DescribeInstances" and c.get("region") == region
                   and c.get("status") == 200
                   for c in self._pass_calls(dump.time - self.cfg.margin, dump.time + 0.5))

    def _judge_pass(self, dump, end):
        cfg = self.cfg
        calls = self._pass_calls(dump.time, end)
        ok = [c for c in calls if c.get("status") == 200]
        claimed = {i for c in ok if c["action"] in ("StopInstances", "TerminateInstances")
                   for i in c.get("ids", [])}
        new = defaultdict(int)          # (env, label) -> agents made or started
        for c in ok:
            env = cfg.region_env.get(c.get("region"))
            ids = c.get("made", []) if c["action"] == "RunInstances" else (
                c.get("ids", []) if c["action"] == "StartInstances" else [])
            for instance_id in ids:
                inst = self.instances.get(instance_id)
                labels = [lb for lb in (inst.labels() if inst else []) if lb in cfg.labels]
                # A started agent of several labels: the one that needed it most.
                queued = {lb: sum(q["label"] == lb for q in dump.queue) for lb in labels}
                label = max(labels, key=lambda lb: queued[lb]) if labels else None
                new[(env, label)] += 1
        queued = defaultdict(int)
        for item in dump.queue:
            if item["label"] in cfg.labels:
                queued[item["label"]] += 1
        if dump.whole:
            for (env, label), count in new.items():
                self.evidence["agents_made"] += count
                if label is None:
                    continue
                spec = cfg.labels[label]
                capacity = self._capacity(env, label, dump, claimed, generous=False)
                need = max(0, queued[label] - capacity)
                allowed = -(-need // spec["executors"]) + self._replacements(env, label, dump)
                if count > allowed:
                    self.violate("double_agent", dump.time, env,
                                 f"label {label}: {count} new agent(s) for {queued[label]} queued "
                                 f"item(s) with capacity for {capacity} (dump {dump.index})",
                                 pass_=self.pass_at(dump.time + 0.001))
        for env in cfg.envs:
            if not self._clean(env, dump, end):
                continue
            self.evidence["clean_env_passes"] += 1
            self._judge_starvation(env, dump, claimed)
            self._judge_zombies(env, dump, claimed)
        self.evidence["passes"] += 1

    def _replacements(self, env, label, dump):
        """Warned agents of the label, busy in the dump, warned shortly
        before it: each may get a replacement in this pass."""
        count = 0
        for instance_id, (warned_env, t) in self.warnings.items():
            inst = self.instances.get(instance_id)
            if warned_env != env or inst is None or label not in inst.labels():
                continue
            if not t - self.cfg.margin <= dump.time <= t + REPLACEMENT_WINDOW:
                continue
            node = dump.node_of(inst)
            if node is not None and node["busy"] > 0:
                count += 1
                self.evidence["replacements_allowed"] += 1
        return count

    def _judge_warned_builds(self, sim_jobs):
        """Builds started on a warned agent once the manager had a whole
        pass to take its node offline: the second whole dump showing its
        node after the warning (a node that registers later is taken
        offline then). Excused while a fault touched its env or Jenkins."""
        for job in sim_jobs:
            instance_id = job.get("instance")
            started = job.get("started_at_real")
            if instance_id not in self.warnings or started is None:
                continue
            env, t = self.warnings[instance_id]
            inst = self.instances.get(instance_id)
            if started < t or inst is None:
                continue
            shown = [d.time for d in self.dumps
                     if d.time > t + self.cfg.margin and d.whole and d.node_of(inst) is not None]
            if len(shown) < 2 or started <= shown[1] + self.cfg.margin:
                self.evidence["warned_builds_in_the_race"] += 1
                continue
            if self.faulted(env, t, started):
                self.evidence["warned_builds_excused_by_faults"] += 1
                continue
            self.violate("warned_build", started, env,
                         f"build {job.get('job')} #{job.get('queue_id')} started on {job.get('node')} "
                         f"({instance_id}) {started - t:.1f} s after EC2 warned it")

    def _room(self, env, label, dump):
        """Whether the manager could give `label` an agent in `env` now."""
        cfg = self.cfg
        spec = cfg.labels[label]
        run = self.run_at(dump.time) or {}
        current = (run.get("ami") or {}).get(env)
        usage = {"spot": 0, "on-demand": 0}
        stopped_od = 0
        startable = 0
        for inst in self.instances.values():
            if inst.env != env or inst.why_foreign(cfg) is not None:
                continue
            state = inst.state_at(dump.time)
            if state not in (ACTIVE, STOPPED):
                continue
            usage["spot" if inst.spot else "on-demand"] += 1
            if state == STOPPED and not inst.spot:
                stopped_od += 1
                if label in inst.labels() and (not current or inst.image == current):
                    startable += 1
        if startable:
            return True
        if spec["spot"]:
            return usage["spot"] < cfg.spot_cap
        return usage["on-demand"] < cfg.on_demand_cap or stopped_od > 0

    def _judge_starvation(self, env, dump, claimed):
        """Per item: the newest items of a label beyond its capacity are the
        uncovered ones (the manager serves the queue in order, and the agents
        made for older items are in the capacity)."""
        for label, spec in self.cfg.labels.items():
            if spec["env"] != env:
                continue
            items = sorted((q for q in dump.queue if q["label"] == label),
                           key=lambda q: int(q["queue_id"] or 0))
            capacity = self._capacity(env, label, dump, claimed, generous=True)
            uncovered = items[capacity:] if self._room(env, label, dump) else []
            waiting = {q["queue_id"] for q in uncovered}
            for qid in [k for k in self._starve if k[0] == env and k[1] == label and k[2] not in waiting]:
                del self._starve[qid]
            for item in uncovered:
                key = (env, label, item["queue_id"])
                self.evidence["starvation_candidates"] += 1
                self._starve[key] += 1
                if self._starve[key] == self.cfg.starve_passes:
                    self.violate("starved", dump.time, env,
                                 f"item {item['job']} #{item['queue_id']} (label {label}) beyond "
                                 f"capacity for {self._starve[key]} clean passes in a row with room "
                                 f"(dump {dump.index})", pass_=self.pass_at(dump.time + 0.001))

    def _judge_zombies(self, env, dump, claimed):
        cfg = self.cfg
        if cfg.zombie_limit is None or not dump.nodes:
            return
        ours = [i for i in self.instances.values() if i.why_foreign(cfg) is None]
        # As the manager: a busy node that maps to no agent of ours it sees
        # (active, in an env its describe reached this pass) may be one under
        # a name it does not understand; no hunt that pass, in any env.
        seen = [i for i in ours if i.state_at(dump.time) in (ACTIVE, STOPPED) and self._described(i.env, dump)]
        for node in dump.nodes:
            if node["busy"] and not any(dump.node_of(i) is node for i in seen):
                return
        for inst in ours:
            if inst.env != env:
                continue
            if inst.state_at(dump.time) != ACTIVE or dump.node_of(inst) is not None or inst.id in claimed:
                self._zombie.pop(inst.id, None)
                continue
            launched = inst.launched_at(dump.time)
            if launched is None or dump.time - launched < cfg.zombie_limit / 2:
                continue
            if inst.id not in self._zombie_seen:
                self._zombie_seen.add(inst.id)
                self.evidence["zombies_seen"] += 1
            if dump.time - launched < cfg.zombie_limit + cfg.margin:
                continue
            self.evidence["zombie_passes_past_limit"] += 1
            self._zombie[inst.id] += 1
            if self._zombie[inst.id] == cfg.zombie_passes:
                self.violate("zombie_outlived", dump.time, env,
                             f"{inst.id} running {dump.time - launched:.0f} s without a node "
                             f"(limit {cfg.zombie_limit:.0f} s), {cfg.zombie_passes} clean passes",
                             pass_=self.pass_at(dump.time + 0.001))

    def _judge_run(self, run, settled):
        """The first pass of a run runs the inventory: a stopped agent of
        ours on an old AMI must be gone once the second pass starts."""
        groovy = sorted(c["time"] for c in self.commands
                        if (c.get("argv") or [""])[0] == "groovy" and c["time"] >= run["start"]
                        and (run.get("end") is None or c["time"] <= run["end"]))
        if len(groovy) < 2:
            return run.get("end") is not None and run["end"] < settled
        first, second = groovy[0], groovy[1]
        if second > settled:
            return False
        for env in self.cfg.envs:
            current = (run.get("ami") or {}).get(env)
            if not current or self.faulted(env, run["start"], second):
                continue
            # The inventory works on the pass's describe: none, no inventory.
            region = self.cfg.envs[env]["region"]
            if not any(c["action"] == "DescribeInstances" and c.get("region") == region
                       and c.get("status") == 200 for c in self._pass_calls(run["start"], second)):
                continue
            for inst in self.instances.values():
                if inst.env != env or inst.why_foreign(self.cfg) is not None or inst.image == current:
                    continue
                if inst.state_at(first) != STOPPED:
                    continue
                self.evidence["old_ami_checks"] += 1
                if inst.state_at(second + 0.5) == STOPPED:
                    self.violate("old_ami_outlived", second, env,
                                 f"{inst.id} stopped on old AMI {inst.image} (current {current}) "
                                 f"after run {run['number']}'s first pass",
                                 pass_=self.pass_at(second))
        return True

    def finish(self, now, sim_jobs=(), drained_after=None):
        """The verdicts that need the end: SQS requests never built (sent
        before `drained_after`), builds killed under a running job."""
        self.evaluate(now)
        for request, sent in sorted(self.sqs.items(), key=lambda x: x[1]):
            self.evidence["sqs_requests"] += 1
            if not self.builds.get(request) and (drained_after is None or sent <= drained_after):
                self.violate("sqs_lost", sent, None, f"request {request} sent, never built")
        self._judge_warned_builds(sim_jobs)
        for job in sim_jobs:
            if job.get("killed") is None:
                continue
            self.evidence["builds_killed"] += 1
            if job.get("slipped"):
                self.race_stops.append(job)
                continue
            if job.get("instance") in self.warnings:
                # EC2 reclaimed the agent after its warning: not ours.
                self.evidence["builds_killed_by_reclaim"] += 1
                continue
            self.violate("busy_stopped", job.get("killed_at_real") or now, None,
                         f"build {job.get('job')} #{job.get('queue_id')} on {job.get('node')} "
                         f"({job.get('instance')}) was killed")

    def state(self):
        """Everything the checker concluded from, for a post-mortem."""
        return {
            "instances": {i.id: {"env": i.env, "tags": i.tags, "spot": i.spot, "key": i.key,
                                 "image": i.image, "ip": i.ip, "transitions": i.transitions,
                                 "launches": i.launches, "foreign": i.why_foreign(self.cfg)}
                          for i in self.instances.values()},
            "runs": self.runs, "faults": self.faults, "violations": self.violations,
            "evidence": dict(self.evidence),
        }

    def counts(self):
        out = {name: 0 for name in INVARIANTS}
        for v in self.violations:
            out[v["invariant"]] += 1
        return out
