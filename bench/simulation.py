"""A closed-loop model of a Jenkins master and its Swarm agents.

The manager reads Jenkins' queue and nodes and acts on EC2; in the benchmark
no real Jenkins reacts to what it does, so this model does: it is fed what
EC2 holds (our agents, as DescribeInstances reports them), registers an
agent's node `boot_delay` simulated seconds after its instance became active
(as the Swarm client would), drops the node of a stopped or terminated
instance (killing a build on it), lets a trace's jobs arrive at their time,
gives each a free executor of an online node that carries its label (exact
match; the node the job last ran on first, else Jenkins-like consistent
hashing), runs it for its duration, and makes the dump that
get_queue_jobs.groovy would print, applying its idle policy (SPEC A6) with
the command's arguments. It records what a benchmark needs: per job its
enqueue, first dump, start and node; per instance its active intervals
(billed instance-minutes) and its minutes booting, busy, idle and stopped;
peaks per env.

The boot model: by default (`boot_delay`) a node registers a fixed delay
after its instance became active, however it became active. A `BootModel`
tells a create from a start, as real EC2 does: a created instance is
`running` some seconds after its launch and its node online a minute or so
later (the AMI boots, the Swarm client sets itself up); a started one,
already set up, is running and online in tens of seconds. moto makes every
instance running at once, so the delays are kept here, on the Jenkins side,
where the node registers.

The model does no I/O and reads time only from its clock, so it can be
stepped by hand (ManualClock) or run in scaled real time (ScaledClock); the
only randomness is the trace's and the boot model's jitter, both seeded. It is
thread-safe. bench/sim_jenkins.py runs it behind the Jenkins emulator,
following moto's EC2.

    sim = Simulation(["dev", "prod"], check_trace(generate_trace(...)), clock)
    sim.observe("dev", described)   # one env's DescribeInstances entries
    sim.end_poll(seconds, errors)   # a round over every env is done; the
                                    # first round is the baseline (what
                                    # exists then is pre-existing, booted)
    sim.advance()                   # arrivals, completions, registrations,
                                    # scheduling, up to clock.now()
    sim.dump(words)                 # the dump for `groovy = WORDS…`
    sim.stats()                     # {"summary", "jobs", "instances"}
    sim.fault({"no_boot": N, "slip": N})   # the soak's faults (bench/soak.py)
    sim.slip(dump)                  # after a dump went out whole
    sim.offline_node(name, cause)   # the CLI's `offline-node`
    sim.interrupt(share, seed)      # EC2 warns a share of the spot agents

An interruption wave: `interrupt` marks a share of the running spot agents
warned (EC2 reclaims them two minutes later; the harness sends the warnings
and terminates them); a build killed on a reclaimed agent is queued again,
as a retry. The stats then tell the builds that started on an agent after
its warning (a manager's failure) and how long until an agent of the same
label registered after each warning (the replacement).
"""

import hashlib
import heapq
import json
import math
import random
import threading
import time

from bench_common import percentile

KILLED = "groovy_script_killed_me"
OLD_AMI = "groovy_script_says_old_ami"
CREATED_BY = "Created by Swarm"
ACTIVE_STATES = ("pending", "running")
# States in which an instance counts against the manager's caps.
CAPPED_STATES = ("pending", "running", "stopping", "stopped")


class TraceError(ValueError):
    """A trace that does not have the documented shape."""


# ------------------------------------------------------------------ clocks


class ScaledClock:
    """Simulated seconds since the simulation started, `scale` times faster
    than real time. Frozen at 0 until `start()`: the simulation starts when
    the manager first asks for the dump, so the harness's start-up lag is
    not counted as queue wait."""

    def __init__(self, scale):
        self.scale = scale
        self._origin = None
        self.origin_epoch = None

    def start(self):
        if self._origin is None:
            self._origin = time.monotonic()
            self.origin_epoch = time.time()

    def now(self):
        if self._origin is None:
            return 0.0
        return (time.monotonic() - self._origin) * self.scale

    def epoch_ms(self, sim_seconds):
        """A simulated instant as Jenkins prints times (epoch milliseconds)."""
        origin = self.origin_epoch if self.origin_epoch is not None else time.time()
        return int((origin + sim_seconds) * 1000)


class ManualClock:
    """Simulated time that moves only when told (`set`, `advance`): for
    tests, and for a driver that steps the simulation itself."""

    scale = 1.0

    def __init__(self, origin_epoch=1_700_000_000.0):
        self.origin_epoch = origin_epoch
        self._now = 0.0

    def start(self):
        """Nothing to do: manual time starts at 0."""

    def now(self):
        return self._now

    def set(self, sim_seconds):
        self._now = float(sim_seconds)

    def advance(self, seconds):
        self._now += seconds

    def epoch_ms(self, sim_seconds):
        return int((self.origin_epoch + sim_seconds) * 1000)


# ------------------------------------------------------------------ booting


class BootModel:
    """How long an agent takes from its launch (`create`) or its start
    (`start`) to its instance `running`, and from there to its node online:
    (running, online) seconds per kind. `jitter` varies each delay by up to
    that share of itself, from a generator seeded with `seed`."""

    KINDS = ("create", "start")

    def __init__(self, create=(15.0, 60.0), start=(10.0, 15.0), jitter=0.0, seed=0):
        for delays in (create, start):
            if len(delays) != 2 or min(delays) < 0:
                raise ValueError("a boot delay is (running, online) seconds, not negative")
        if not 0 <= jitter < 1:
            raise ValueError("the boot jitter is a share in [0, 1)")
        self.delays = {"create": tuple(map(float, create)), "start": tuple(map(float, start))}
        self.jitter = jitter
        self._rng = random.Random(seed)

    @classmethod
    def fixed(cls, delay):
        """The old model: the node registers `delay` s after the instance
        became active, created or started alike."""
        return cls(create=(0, delay), start=(0, delay))

    def draw(self, kind):
        """(running, online) seconds after the launch or start, online
        counted from running."""
        return tuple(d * (1 + self._rng.uniform(-self.jitter, self.jitter)) if self.jitter else d
                     for d in self.delays[kind])

    def describe(self):
        return {"create": list(self.delays["create"]), "start": list(self.delays["start"]),
                "jitter": self.jitter}


# ------------------------------------------------------------------ traces


def parameters_text(parameters):
    """A trace job's parameters as the dump prints them: Jenkins'
    Queue.Item.getParams(), a newline before each K=V; NONE when none."""
    if parameters is None or parameters == {}:
        return "NONE"
    if isinstance(parameters, dict):
        return "".join(f"\n{k}={v}" for k, v in parameters.items())
    return str(parameters)


def check_trace(trace):
    """A trace (a list of {at_seconds, job, label, duration_seconds,
    parameters?}) as the model takes it, sorted by arrival; TraceError on a
    bad shape."""
    if not isinstance(trace, list):
        raise TraceError("a trace is a JSON list of jobs")
    jobs = []
    for number, entry in enumerate(trace):
        if not isinstance(entry, dict):
            raise TraceError(f"trace entry {number} is not an object")
        try:
            at = float(entry["at_seconds"])
            duration = float(entry["duration_seconds"])
            job, label = entry["job"], entry["label"]
        except (KeyError, TypeError, ValueError) as err:
            raise TraceError(
                f"trace entry {number} needs at_seconds, job, label and "
                f"duration_seconds: {err!r}") from err
        params = entry.get("parameters")
        if not (isinstance(job, str) and job and isinstance(label, str)
                and at >= 0 and duration >= 0
                and (params is None or isinstance(params, (dict, str)))):
            raise TraceError(f"trace entry {number} has a bad value")
        jobs.append({"at": at, "job": job, "label": label,
                     "duration": duration,
                     "parameters": parameters_text(params)})
    jobs.sort(key=lambda j: j["at"])
    return jobs


def load_trace(path):
    """The trace file's jobs (see check_trace); no file, no jobs."""
    if path is None:
        return []
    with open(path, encoding="utf-8") as source:
        return check_trace(json.load(source))


def generate_trace(jobs, minutes, seed, mix):
    """A seeded bursty trace of `jobs` jobs over `minutes`: 60 % of them in
    bursts (a dozen jobs within a minute), the rest spread out. `mix` is
    {label: (share of jobs, median duration s, [job names])}; durations are
    log-normal around the median, 20 s to 5 medians."""
    rng = random.Random(seed)
    span = minutes * 60
    labels = list(mix)
    weights = [mix[label][0] for label in labels]
    times = []
    burst_jobs = int(jobs * 0.6)
    bursts = max(1, burst_jobs // 12)
    for _ in range(bursts):
        center = rng.uniform(0, span - 60)
        times += [center + rng.uniform(0, 60) for _ in range(burst_jobs // bursts)]
    times += [rng.uniform(0, span) for _ in range(jobs - len(times))]
    trace = []
    for number, at in enumerate(sorted(times)):
        label = rng.choices(labels, weights)[0]
        _, median_s, names = mix[label]
        duration = min(median_s * 5, max(20, rng.lognormvariate(math.log(median_s), 0.5)))
        trace.append({"at_seconds": round(at, 1), "job": rng.choice(names), "label": label,
                      "duration_seconds": round(duration, 1),
                      "parameters": {"BRANCH": rng.choice(["main", "main", "release", "feature-x"]),
                                     "BUILD_NO": str(number)}})
    return trace


def day_rate(hour, shape):
    """The relative arrival rate at `hour` (of the day, fractional): linear
    between the (hour, rate) points of `shape`, 0 outside them."""
    for (h0, r0), (h1, r1) in zip(shape, shape[1:]):
        if h0 <= hour <= h1:
            return r0 if h1 == h0 else r0 + (r1 - r0) * (hour - h0) / (h1 - h0)
    return 0.0


def generate_day_trace(start_hour, hours, seed, peak_per_minute, shape, pushes):
    """A seeded working day: from `start_hour` for `hours`, pushes arrive as
    a Poisson process whose rate follows `shape` ([(hour, relative rate)],
    1.0 = `peak_per_minute` pushes a minute); each push is one of `pushes`
    ({name: (weight, [(label, probability, median duration s, [job names])])})
    and queues, for each of its (label, probability, …) entries, one job
    with that probability, within seconds of each other. Durations are
    log-normal around the median, 20 s to 5 medians. Times are seconds from
    `start_hour`."""
    rng = random.Random(seed)
    span = hours * 3600
    top = max(rate for _, rate in shape) * peak_per_minute / 60
    names = list(pushes)
    weights = [pushes[name][0] for name in names]
    trace = []
    at = 0.0
    while True:
        # Thinning: candidates at the top rate, each kept with the ratio of
        # the rate at its time to the top.
        at += rng.expovariate(top)
        if at >= span:
            break
        rate = day_rate(start_hour + at / 3600, shape) * peak_per_minute / 60
        if rng.random() * top > rate:
            continue
        _, jobs = pushes[rng.choices(names, weights)[0]]
        branch = rng.choice(["main", "main", "release", "feature-x", "feature-y"])
        for label, probability, median_s, job_names in jobs:
            if rng.random() >= probability:
                continue
            duration = min(median_s * 5,
                           max(20, rng.lognormvariate(math.log(median_s), 0.5)))
            trace.append({"at_seconds": round(at + rng.uniform(0, 10), 1),
                          "job": rng.choice(job_names), "label": label,
                          "duration_seconds": round(duration, 1),
                          "parameters": {"BRANCH": branch,
                                         "BUILD_NO": str(len(trace))}})
    trace.sort(key=lambda j: j["at_seconds"])
    return trace


# --------------------------------------------------------- the dump script


def groovy_arguments(words, default_idle_minutes):
    """The dump script's arguments, read as get_queue_jobs.groovy reads them:
    (AMIs, idle minutes, hourly billing, messages). AMIs are a dict env →
    AMI when `ami:ENV=ami-…` words are given (old = not its env's AMI), else
    the list of bare ids (old = in none of them)."""
    amis = []
    per_env = {}
    settings = {"idle_minutes": str(default_idle_minutes),
                "hourly_billing": "false"}
    messages = []
    for word in words:
        key, eq, value = word.partition("=")
        if eq and key.startswith("ami:"):
            per_env[key[len("ami:"):]] = value
        elif eq and key:
            if key in settings:
                settings[key] = value
            else:
                messages.append(f"unknown setting {word}, ignored")
        elif word.strip() and word.strip() not in amis:
            amis.append(word.strip())
    idle = settings["idle_minutes"]
    if idle.isdigit() and int(idle) > 0:
        idle_minutes = int(idle)
    else:
        messages.append(f"idle_minutes={idle} is not a positive number; using 45")
        idle_minutes = 45
    hourly = settings["hourly_billing"].lower() == "true"
    return per_env or amis, idle_minutes, hourly, messages


def is_old_ami(node, amis):
    """The node runs another AMI than its env's current one (SPEC A6)."""
    if isinstance(amis, dict):
        # As the script: a label that is an env, else the one env its parts
        # name; an env without a current AMI (`ami:ENV=`) never drains.
        for label in node.labels:
            named = [label] if label in amis else sorted({p for p in label.split("_") if p in amis})
            if len(named) == 1:
                current = amis[named[0]]
                return bool(current) and node.ami != current
        return False
    return bool(amis) and node.ami not in amis


# ------------------------------------------------------------------ the model


def replacement_online(warned, instances):
    """Per warned instance, seconds from its warning until the node of an
    instance first seen after it, sharing a label, registered (None: none
    did)."""
    out = []
    for lost in warned:
        labels = set(lost["labels"])
        times = [i["registered_at"] - lost["warned_at"] for i in instances
                 if i["registered_at"] is not None and i["first_seen"] >= lost["warned_at"]
                 and labels & set(i["labels"])]
        out.append(min(times) if times else None)
    return out


def usage_minutes(instances):
    """Minutes booting, busy, idle and stopped of these instances (stats'
    entries), and paid: all but stopped."""
    out = {use: sum(i["usage"][use] for i in instances) / 60
           for use in ("booting", "busy", "idle", "stopped")}
    out["paid"] = out["booting"] + out["busy"] + out["idle"]
    return out


def boot_summary(instances):
    """Per kind of boot (create, start): how many nodes registered after
    one, and the median seconds from active to running and to online."""
    out = {}
    for kind in BootModel.KINDS:
        boots = [b for i in instances for b in i["boots"] if b[0] == kind]
        out[kind] = {"count": len(boots),
                     "running_median": percentile([b[2] - b[1] for b in boots], 0.5),
                     "online_median": percentile([b[3] - b[1] for b in boots], 0.5)}
    return out


class SimInstance:
    """One agent instance as the simulation sees it in EC2."""

    def __init__(self, instance_id, env, now, preexisting):
        self.id = instance_id
        self.env = env
        self.state = None
        self.spot = False
        self.labels = []
        self.executors = 1
        self.ami = ""
        self.ip = None
        self.instance_type = ""
        self.first_seen = now
        self.preexisting = preexisting
        self.running_since = None   # sim time it became active, while active
        self.boot_kind = None       # "create" or "start", while active
        self.running_at = None      # when the boot model has it `running`
        self.boot_at = None         # when its node registers, while active
        self.boots = []             # [kind, active at, running at, node at]
        # Seconds spent booting (active, no node), busy (a build on its
        # node), idle (its node online, nothing running) and stopped.
        self.usage = {"booting": 0.0, "busy": 0.0, "idle": 0.0, "stopped": 0.0}
        self.intervals = []         # closed [start, end] active intervals
        self.starts = 0             # times it went from stopped to active
        self.stops = 0
        self.terminated_at = None
        self.node = None            # its node's name, once registered
        self.no_boot = False        # a soak fault: it never registers
        self.registered_at = None   # when its node first registered
        self.warned_at = None       # when EC2 warned it would reclaim it
        self.offline_at = None      # when `offline-node` first reached its node

    def update(self, description):
        """Tags and addresses from a DescribeInstances entry."""
        tags = {t["Key"]: t["Value"] for t in description.get("Tags", [])}
        try:
            data = json.loads(tags.get("slave_data", "{}"))
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        self.labels = str(data.get("slave_labels", "")).split()
        try:
            self.executors = max(1, int(data.get("num_of_executors", 1)))
        except (TypeError, ValueError):
            self.executors = 1
        self.ami = description.get("ImageId", "")
        self.ip = description.get("PrivateIpAddress") or self.ip
        self.instance_type = description.get("InstanceType", "")
        self.spot = description.get("InstanceLifecycle") == "spot"

    def spans(self, now):
        """Its active spans in seconds, the current one up to `now`."""
        spans = [end - start for start, end in self.intervals]
        if self.running_since is not None:
            spans.append(max(0.0, now - self.running_since))
        return spans

    def active_seconds(self, now):
        return sum(self.spans(now))

    def billed_seconds(self, now):
        """EC2's per-second billing with its one-minute minimum per start."""
        return sum(max(60.0, span) for span in self.spans(now))


class SimNode:
    """A Swarm agent's Jenkins node."""

    def __init__(self, instance, now):
        self.name = f"{instance.env}-{instance.ip}"
        self.env = instance.env
        self.instance_id = instance.id
        self.labels = sorted(set(instance.labels) | {"swarm"})
        self.executors = instance.executors
        self.ami = instance.ami
        self.description = (f"{CREATED_BY} InstanceID={instance.id} "
                            f"AmiId={instance.ami}")
        self.connected = now
        self.idle_since = now
        self.offline = None         # the offline cause, while offline
        self.busy = []              # the jobs running here


class Simulation:
    """The model (see the module's documentation for its interface)."""

    def __init__(self, envs, trace, clock, boot_delay=60.0, idle_minutes=45, boot=None):
        self.envs = list(envs)
        self.trace = trace
        self.clock = clock
        self.boot_delay = boot_delay
        self.boot = boot if boot is not None else BootModel.fixed(boot_delay)
        self._accounted_at = 0.0     # usage is accounted up to here
        self.idle_minutes = idle_minutes
        self._lock = threading.Lock()
        self._next_arrival = 0
        self._queue_ids = 0
        self.jobs = []              # every job that arrived, in order
        self.queue = []             # jobs waiting for an executor
        self._running = []          # heap of (end, seq, job)
        self.instances = {}
        self.nodes = {}
        self.last_built_on = {}
        self.peaks = {env: {"active": 0, "active_spot": 0,
                            "on_demand_capped": 0, "spot_capped": 0}
                      for env in self.envs}
        self.dumps = 0
        self.polls = 0
        self.poll_errors = 0
        self.poll_seconds = []
        self._baseline_done = False
        self._no_boot_left = 0       # new agents that will never register
        self._slip_left = 0          # builds that slip onto a retiring node
        self._doomed_before = set()  # nodes the previous dump said terminate_me

    # -- what EC2 holds --------------------------------------------------------

    def observe(self, env, described):
        """Fold one env's DescribeInstances entries (our agents, all of
        them: an instance no longer listed counts as terminated)."""
        with self._lock:
            now = self.clock.now()
            self._account(now)
            seen = set()
            for description in described:
                instance_id = description["InstanceId"]
                seen.add(instance_id)
                instance = self.instances.get(instance_id)
                if instance is None:
                    instance = SimInstance(instance_id, env, now,
                                           preexisting=not self._baseline_done)
                    self.instances[instance_id] = instance
                instance.update(description)
                self._set_state(instance, description["State"]["Name"], now)
            for instance in self.instances.values():
                if instance.env == env and instance.id not in seen:
                    self._set_state(instance, "terminated", now)
            self._count_peaks(env)

    def end_poll(self, seconds, errors=0):
        """One round of observations over every env took `seconds` (real
        time), `errors` of its describes failed."""
        with self._lock:
            self.polls += 1
            self.poll_errors += errors
            self.poll_seconds.append(seconds)
            self._baseline_done = True

    def _set_state(self, instance, state, now):
        before = instance.state
        if state == before:
            return
        instance.state = state
        if state in ACTIVE_STATES:
            if instance.running_since is None:
                instance.running_since = now
                # Running before the simulation: booted long ago.
                preexisting = before is None and not self._baseline_done
                kind = "start" if before in ("stopped", "stopping") else "create"
                running, online = (0.0, 0.0) if preexisting else self.boot.draw(kind)
                instance.boot_kind = None if preexisting else kind
                instance.running_at = now + running
                instance.boot_at = now + running + online
                if before is None and not preexisting and self._no_boot_left > 0:
                    self._no_boot_left -= 1
                    instance.no_boot = True
                if instance.no_boot:
                    instance.boot_at = math.inf    # its boot script is broken
                if before in ("stopped", "stopping"):
                    instance.starts += 1
            return
        if instance.running_since is not None:
            instance.intervals.append([instance.running_since, now])
            instance.running_since = None
            instance.boot_kind = None
        if state in ("stopping", "stopped") and before in ACTIVE_STATES:
            instance.stops += 1
        if state in ("shutting-down", "terminated") and instance.terminated_at is None:
            instance.terminated_at = now
        if instance.node is not None:
            self._remove_node(instance, now)

    def _count_peaks(self, env):
        counts = {"active": 0, "active_spot": 0, "on_demand_capped": 0,
                  "spot_capped": 0}
        for instance in self.instances.values():
            if instance.env != env:
                continue
            if instance.state in ACTIVE_STATES:
                counts["active"] += 1
                counts["active_spot"] += instance.spot
            if instance.state in CAPPED_STATES:
                counts["spot_capped" if instance.spot else "on_demand_capped"] += 1
        peaks = self.peaks[env]
        for key, value in counts.items():
            peaks[key] = max(peaks[key], value)

    # -- the Jenkins side --------------------------------------------------------

    def _remove_node(self, instance, now):
        node = self.nodes.pop(instance.node, None)
        instance.node = None
        if node is None:
            return
        for job in node.busy:
            job["killed"] = now
            if instance.warned_at is not None:
                # Reclaimed by EC2: the build is retried (Jenkins' retry of
                # a build whose agent went away).
                self._queue_ids += 1
                retry = dict(job, at=now, queue_id=self._queue_ids, enqueued=now,
                             first_dump=None, first_dump_index=None, started=None,
                             finished=None, node=None, instance=None, killed=None,
                             retry_of=job["queue_id"])
                self.jobs.append(retry)
                self.queue.append(retry)

    def _register(self, instance, at):
        node = SimNode(instance, at)
        stale = self.nodes.get(node.name)
        if stale is not None:
            self._remove_node(self.instances[stale.instance_id], at)
        self.nodes[node.name] = node
        instance.node = node.name
        if instance.registered_at is None:
            instance.registered_at = at
        if instance.boot_kind is not None:
            instance.boots.append([instance.boot_kind, instance.running_since,
                                   instance.running_at, at])

    def _account(self, now):
        """Adds the time since the last call to each instance's use as it
        is now (called before anything changes it)."""
        elapsed = now - self._accounted_at
        if elapsed <= 0:
            return
        self._accounted_at = now
        for instance in self.instances.values():
            if instance.state in ("stopping", "stopped"):
                use = "stopped"
            elif instance.state in ACTIVE_STATES:
                node = self.nodes.get(instance.node) if instance.node else None
                use = "booting" if node is None else ("busy" if node.busy else "idle")
            else:
                continue
            instance.usage[use] += elapsed

    def advance(self):
        """Arrivals, completions, registrations and scheduling up to now."""
        with self._lock:
            self._advance(self.clock.now())

    def _advance(self, now):
        self._account(now)
        while (self._next_arrival < len(self.trace)
               and self.trace[self._next_arrival]["at"] <= now):
            entry = self.trace[self._next_arrival]
            self._next_arrival += 1
            self._queue_ids += 1
            job = dict(entry, queue_id=self._queue_ids, enqueued=entry["at"],
                       first_dump=None, first_dump_index=None, started=None,
                       finished=None, node=None, instance=None, killed=None)
            self.jobs.append(job)
            self.queue.append(job)
        while self._running and self._running[0][0] <= now:
            end, _, job = heapq.heappop(self._running)
            if job["killed"] is not None:
                continue
            job["finished"] = end
            node = self.nodes.get(job["node"])
            if node is not None and job in node.busy:
                node.busy.remove(job)
                if not node.busy:
                    node.idle_since = end
        for instance in self.instances.values():
            if (instance.state == "running" and instance.node is None
                    and instance.running_since is not None and instance.ip
                    and now >= instance.boot_at):
                self._register(instance, instance.boot_at)
        self._schedule(now)

    def _schedule(self, now):
        waiting = []
        for job in self.queue:
            free = [n for n in self.nodes.values()
                    if n.offline is None and job["label"] in n.labels
                    and len(n.busy) < n.executors]
            if not free:
                waiting.append(job)
                continue
            last = self.last_built_on.get(job["job"])
            node = next((n for n in free if n.name == last), None) or min(
                free, key=lambda n: hashlib.md5(
                    f"{job['job']}|{n.name}".encode()).hexdigest())
            node.busy.append(job)
            job.update(started=now, node=node.name, instance=node.instance_id)
            self.last_built_on[job["job"]] = node.name
            heapq.heappush(self._running,
                           (now + job["duration"], job["queue_id"], job))
        self.queue = waiting

    def dump(self, words):
        """The dump for `groovy = WORDS…`, with the idle policy applied; the
        first dump starts the clock."""
        amis, idle_minutes, hourly, messages = groovy_arguments(
            words, self.idle_minutes)
        self.clock.start()
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            self.dumps += 1
            nodes = [self._node_entry(node, now, amis, idle_minutes, hourly,
                                      messages)
                     for node in sorted(self.nodes.values(),
                                        key=lambda n: n.name)]
            queue = []
            for job in self.queue:
                if job["first_dump"] is None:
                    job["first_dump"] = now
                    job["first_dump_index"] = self.dumps
                queue.append({
                    "jobName": job["job"], "labels": job["label"],
                    "lastBuiltOn": self.last_built_on.get(job["job"], "UNKNOWN"),
                    "throttleEnabled": "false",
                    "parameters": job["parameters"],
                    "queueId": str(job["queue_id"])})
        return {"build_queue": queue, "slave_queue": nodes,
                "messages": messages}

    # -- interruptions -----------------------------------------------------------

    def offline_node(self, name, cause):
        """The CLI's `offline-node`: the node takes no new build; False when
        there is no such node."""
        with self._lock:
            node = self.nodes.get(name)
            if node is None:
                return False
            node.offline = cause or "offline-node"
            instance = self.instances.get(node.instance_id)
            if instance is not None and instance.offline_at is None:
                instance.offline_at = self.clock.now()
            return True

    def interrupt(self, share, seed):
        """EC2 warns `share` of the running spot agents (at least one, if
        any) that it reclaims them; [(env, instance id)] of those warned."""
        with self._lock:
            now = self.clock.now()
            candidates = sorted((i for i in self.instances.values()
                                 if i.spot and i.state == "running" and i.warned_at is None),
                                key=lambda i: i.id)
            if not candidates:
                return []
            count = max(1, round(share * len(candidates)))
            picked = random.Random(seed).sample(candidates, count)
            for instance in picked:
                instance.warned_at = now
            return [(i.env, i.id) for i in picked]

    # -- the soak's faults -------------------------------------------------------

    def fault(self, request):
        """`{"no_boot": N, "slip": N, "warn": [ids]}`: the next N agents that
        appear never register a node (a broken boot script); the next N
        dumps that newly report a node `terminate_me` see a build land on it
        right after (see `slip`); EC2 warned these instances that it
        reclaims them (see `interrupt`). ValueError on another shape;
        answers what is pending."""
        if not isinstance(request, dict) or set(request) - {"no_boot", "slip", "warn"}:
            raise ValueError('a simulation fault is {"no_boot": N, "slip": N, "warn": [ids]}')
        warn = request.get("warn", [])
        if not (isinstance(warn, list) and all(isinstance(i, str) for i in warn)):
            raise ValueError("warn must be a list of instance ids")
        for key, value in request.items():
            if key != "warn" and not (isinstance(value, int) and not isinstance(value, bool)
                                      and value >= 0):
                raise ValueError(f"{key} must be an integer >= 0")
        with self._lock:
            now = self.clock.now()
            for instance_id in warn:
                instance = self.instances.get(instance_id)
                if instance is not None and instance.warned_at is None:
                    instance.warned_at = now
            self._no_boot_left += request.get("no_boot", 0)
            self._slip_left += request.get("slip", 0)
            return {"no_boot": self._no_boot_left, "slip": self._slip_left}

    def slip(self, dump):
        """After `dump` went out whole, while a `slip` fault is pending: a
        build lands on a node it newly reported `terminate_me` (marked
        offline as the build was being assigned). The manager acts on the
        dump it read and cannot know; the soak counts such builds apart."""
        with self._lock:
            doomed = [e["slaveName"] for e in dump["slave_queue"] if e["terminate_me"] == "true"]
            fresh = [name for name in doomed if name not in self._doomed_before]
            self._doomed_before = set(doomed)
            node = self.nodes.get(fresh[0]) if fresh else None
            if node is None or self._slip_left == 0:
                return
            self._slip_left -= 1
            self._queue_ids += 1
            now = self.clock.now()
            label = next((lb for lb in node.labels if lb != "swarm"), "swarm")
            job = {"at": now, "job": "soak/slipped", "label": label, "duration": 120.0,
                   "parameters": "NONE", "queue_id": self._queue_ids, "enqueued": now,
                   "first_dump": None, "first_dump_index": None, "started": now,
                   "finished": None, "node": node.name, "instance": node.instance_id,
                   "killed": None, "slipped": True}
            self.jobs.append(job)
            node.busy.append(job)
            heapq.heappush(self._running, (now + job["duration"], job["queue_id"], job))

    def _node_entry(self, node, now, amis, idle_minutes, hourly, messages):
        busy = len(node.busy)
        idle = max(0.0, now - node.idle_since) if busy == 0 else 0.0
        connected = max(0.0, now - node.connected)
        old_ami = is_old_ami(node, amis)
        if node.offline is None and old_ami:
            node.offline = OLD_AMI
            messages.append(f"{node.name}: AMI {node.ami} is not current, "
                            f"draining; marked offline ({OLD_AMI})")
        elif node.offline is None and busy == 0:
            if idle > idle_minutes * 60:
                node.offline = KILLED
                messages.append(f"{node.name}: idle {int(idle // 60)} min > "
                                f"{idle_minutes}; marked offline ({KILLED})")
            elif hourly and idle > 300 and connected > 3000:
                node.offline = KILLED
                messages.append(f"{node.name}: idle {int(idle // 60)} min near "
                                f"the end of a billed hour; marked offline "
                                f"({KILLED})")
        terminate_me = node.offline is not None and busy == 0
        return {
            "slaveName": node.name,
            "labels": "[" + ", ".join(node.labels) + "]",
            "isOffLine": str(node.offline is not None).lower(),
            "description": node.description,
            "ami_id": node.ami or "UNKNOWN",
            "ope_idle_count": str(node.executors - busy),
            "busy_executors": str(busy),
            "num_executors": str(node.executors),
            "connectTime": str(self.clock.epoch_ms(node.connected)),
            "idle_seconds": str(int(idle)),
            "terminate_me": str(terminate_me).lower(),
        }

    # -- reporting -------------------------------------------------------------

    def stats(self):
        """What happened so far: a summary, every job and every instance."""
        with self._lock:
            now = self.clock.now()
            self._advance(now)
            jobs = [dict(job) for job in self.jobs]
            instances = [{
                "id": i.id, "env": i.env, "state": i.state, "spot": i.spot,
                "labels": i.labels, "executors": i.executors,
                "instance_type": i.instance_type, "ami": i.ami,
                "preexisting": i.preexisting, "first_seen": i.first_seen,
                "intervals": i.intervals + ([[i.running_since, now]]
                                            if i.running_since is not None
                                            else []),
                "starts": i.starts, "stops": i.stops,
                "terminated_at": i.terminated_at, "no_boot": i.no_boot,
                "registered_at": i.registered_at, "warned_at": i.warned_at,
                "offline_at": i.offline_at,
                "active_seconds": i.active_seconds(now),
                "billed_seconds": i.billed_seconds(now),
                "usage": dict(i.usage), "boots": [list(b) for b in i.boots],
            } for i in self.instances.values()]
            nodes = len(self.nodes)
            online = sum(n.offline is None for n in self.nodes.values())
            peaks = {env: dict(p) for env, p in self.peaks.items()}
            polls, poll_errors, dumps = self.polls, self.poll_errors, self.dumps
            poll_seconds = list(self.poll_seconds)
            arrived = self._next_arrival
            queued = len(self.queue)
        waits = [j["started"] - j["enqueued"] for j in jobs
                 if j["started"] is not None]
        warned = {i["id"]: i for i in instances if i["warned_at"] is not None}
        summary = {
            "sim_seconds": now,
            "time_scale": self.clock.scale,
            "origin_epoch": self.clock.origin_epoch,
            "boot_delay": self.boot_delay,
            "boot_model": self.boot.describe(),
            "trace_jobs": len(self.trace),
            "arrived": arrived,
            "arrived_all": arrived == len(self.trace),
            "queued": queued,
            "running": sum(j["started"] is not None and j["finished"] is None
                           and j["killed"] is None for j in jobs),
            "started": len(waits),
            "finished": sum(j["finished"] is not None for j in jobs),
            "killed": sum(j["killed"] is not None for j in jobs),
            "wait_median": percentile(waits, 0.5),
            "wait_p95": percentile(waits, 0.95),
            "wait_max": max(waits) if waits else None,
            "instances_seen": len(instances),
            "instances_preexisting": sum(i["preexisting"] for i in instances),
            "instances_created": sum(not i["preexisting"] for i in instances),
            "instance_starts": sum(i["starts"] for i in instances),
            "instance_stops": sum(i["stops"] for i in instances),
            "instances_terminated": sum(i["terminated_at"] is not None
                                        for i in instances),
            "instance_minutes": sum(i["active_seconds"] for i in instances) / 60,
            "billed_instance_minutes": sum(i["billed_seconds"]
                                           for i in instances) / 60,
            # What the instances did, in minutes: paid = booting + busy +
            # idle (stopped instances pay their volumes only).
            "usage_minutes": usage_minutes(instances),
            "usage_minutes_by_label": {
                label: usage_minutes([i for i in instances if " ".join(i["labels"]) == label])
                for label in sorted({" ".join(i["labels"]) for i in instances})},
            "boots": boot_summary(instances),
            "nodes": nodes,
            "nodes_online": online,
            "peaks": peaks,
            "dumps": dumps,
            "polls": polls,
            "poll_errors": poll_errors,
            "poll_seconds_median": percentile(poll_seconds, 0.5),
            "warned": len(warned),
            "started_on_warned": sum(
                j["started"] is not None and j["instance"] in warned
                and j["started"] >= warned[j["instance"]]["warned_at"] for j in jobs),
            # Of those, the ones that started once Jenkins had the manager's
            # offline-node (a node that registered after it, say): 0 is the aim.
            "started_on_warned_after_offline": sum(
                j["started"] is not None and j["instance"] in warned
                and warned[j["instance"]]["offline_at"] is not None
                and j["started"] >= warned[j["instance"]]["offline_at"] for j in jobs),
            "warning_to_offline": [i["offline_at"] - i["warned_at"] for i in warned.values()
                                   if i["offline_at"] is not None],
            "killed_by_reclaim": sum(j["killed"] is not None and j["instance"] in warned
                                     for j in jobs),
            "retried": sum("retry_of" in j for j in jobs),
            "replacement_online": replacement_online(warned.values(), instances),
        }
        summary["done"] = (summary["arrived_all"] and queued == 0
                           and summary["running"] == 0)
        return {"summary": summary, "jobs": jobs, "instances": instances}
