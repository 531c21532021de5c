"""The soak's faults (issue 15): what can go wrong, how often, and the
seeded schedule of when it does. Pure: bench/soak.py applies each entry
through the fault proxy's, the emulator's and the simulation's control
APIs, and tells the checker when each was active.

Every kind names its layer and how often it comes per simulated hour;
`schedule()` draws the times and parameters from the seed alone, so a seed
replays the same faults at the same simulated times (the manager's own
timing still varies from run to run). To add a kind (a RunInstances
MaxCount cap, a token-bucket burst): add it to KINDS and give soak.py's
`Injector` an `apply_<name>` method.
"""

import math
import random


class Kind:
    """A fault kind: `per_hour` occurrences per simulated hour (at least
    `minimum` in a run of every kind), each lasting `duration` simulated
    seconds (a range; 0 for an instant); `unclean` says whether the env's
    passes during it are excused from the liveness checks (starved, zombie,
    old AMI); `jenkins` whether it excuses every env's."""

    def __init__(self, name, layer, per_hour, duration, what, unclean=True, jenkins=False, minimum=1,
                 within=(0.0, 1.0)):
        self.name = name
        self.within = within
        self.layer = layer
        self.per_hour = per_hour
        self.duration = duration
        self.what = what
        self.unclean = unclean
        self.jenkins = jenkins
        self.minimum = minimum


KINDS = [
    # EC2, per env (one account and region each).
    Kind("ec2_throttle", "ec2", 6, (20, 90),
         "a throttling burst: EC2's token bucket per action in one env nearly dry "
         "(burst 2, refill 0.5/s), the rest answered RequestLimitExceeded"),
    Kind("ec2_500", "ec2", 6, (10, 60),
         "one env's EC2 calls (all, or one action) answered 500 InternalError"),
    Kind("run_timeout", "ec2", 4, (60, 240),
         "a RunInstances that succeeds but whose answer never comes back in time"),
    Kind("ice_az", "ec2", 3, (60, 300),
         "InsufficientInstanceCapacity for launches into one subnet (AZ) of one env"),
    Kind("env_unreachable", "ec2", 2, (120, 300),
         "one env's EC2 endpoint resets every connection, for minutes"),
    Kind("sts_refused", "sts", 2, (120, 400),
         "STS refuses AssumeRole into one env (matters when a run starts)"),
    # Jenkins.
    Kind("dump_hang", "jenkins", 3, (0, 0), "the dump hangs until the manager gives up",
         jenkins=True),
    Kind("dump_truncated", "jenkins", 4, (0, 0), "the dump is cut in half", jenkins=True),
    Kind("dump_garbage", "jenkins", 4, (0, 0), "the dump is an HTML page", jenkins=True),
    Kind("ssh_refused", "jenkins", 3, (60, 240), "Jenkins refuses the manager's SSH key",
         jenkins=True),
    Kind("busy_slip", "jenkins", 6, (0, 0),
         "a build lands on a node right after the dump that said it was idle", unclean=False),
    # SQS.
    Kind("sqs_garbage", "sqs", 3, (0, 0),
         "a storm of garbage and refused requests in the build-request queue", unclean=False),
    Kind("sqs_delete_fails", "sqs", 3, (60, 300), "SQS DeleteMessage answers 500",
         unclean=False),
    # EC2's events, through one env's interruption queue (issue 13). Not
    # before the first minute: agents must exist to be warned.
    Kind("interruption", "events", 4, (0, 0),
         "EC2 events in one env's interruption queue: a spot interruption warning (the "
         "instance reclaimed two minutes later), a rebalance recommendation, state changes, "
         "the same event twice, events for instances not ours, garbage", unclean=False,
         within=(0.1, 0.8)),
    # The manager itself.
    Kind("kill", "manager", 8, (0, 0), "kill -9 of the manager at a random time, then the next run"),
    # Early: launches come mostly while the fleet fills up to its caps.
    Kind("kill_after_launch", "manager", 4, (0, 0),
         "kill -9 right after a RunInstances or StartInstances reached EC2, before its markers",
         within=(0.0, 0.3)),
    Kind("kill_after_stop", "manager", 3, (0, 0),
         "kill -9 right after a stop or terminate reached EC2"),
    # The fleet.
    # Early: the zombie limit is a real minute, which a short soak must outlast.
    Kind("no_boot", "fleet", 4, (0, 0),
         "a new agent never becomes a node (its boot script fails)", unclean=False,
         within=(0.0, 0.5)),
    Kind("ami_rollout", "fleet", 1, (0, 0),
         "an env's AMI changes from the next run on: its agents drain", unclean=False),
]
BY_NAME = {k.name: k for k in KINDS}
EC2_ACTIONS = [None, "RunInstances", "StartInstances", "StopInstances", "TerminateInstances",
               "DescribeInstances"]


def poisson(rng, mean):
    """A Poisson draw (Knuth; the means here are small)."""
    limit, k, p = math.exp(-mean), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def schedule(seed, sim_seconds, kinds, envs, every_kind=False, warmup=60.0, cooldown=120.0):
    """The faults of a soak: [{at, kind, duration, env, ...params}] sorted by
    `at` (simulated seconds). `every_kind`: each kind at least `minimum`
    times (the long soak's promise)."""
    rng = random.Random(seed * 7919 + 17)
    span = max(1.0, sim_seconds - warmup - cooldown)
    entries = []
    for name in kinds:
        kind = BY_NAME[name]
        count = poisson(rng, kind.per_hour * sim_seconds / 3600)
        if every_kind:
            count = max(count, kind.minimum)
        for _ in range(count):
            low, high = kind.duration
            low_at, high_at = kind.within
            entry = {"at": round(warmup + rng.uniform(low_at, high_at) * span, 1), "kind": name,
                     "duration": round(rng.uniform(low, high), 1), "env": rng.choice(envs)}
            if name == "ec2_500":
                entry["action"] = rng.choice(EC2_ACTIONS)
            elif name == "ice_az":
                entry["subnet"] = rng.randrange(2)
            elif name in ("dump_truncated", "dump_garbage"):
                entry["count"] = rng.randint(1, 3)
            elif name == "sqs_garbage":
                entry["count"] = rng.randint(10, 25)
            elif name == "kill":
                entry["jitter"] = round(rng.random(), 3)
            elif name == "interruption":
                entry["pick"] = rng.randrange(1 << 30)
            entries.append(entry)
    entries.sort(key=lambda e: (e["at"], e["kind"]))
    return entries


def trace(seed, sim_seconds, labels, per_hour):
    """Queue arrivals: [{at_seconds, job, label, duration_seconds,
    parameters}], half spread out, half in bursts of ~8 within a minute.
    `labels`: label -> (share, median duration s, job names)."""
    rng = random.Random(seed * 104729 + 3)
    count = max(1, int(per_hour * sim_seconds / 3600))
    times = []
    while len(times) < count // 2:
        center = rng.uniform(0, max(1.0, sim_seconds - 60))
        times += [center + rng.uniform(0, 60) for _ in range(8)]
    times = times[:count // 2] + [rng.uniform(0, sim_seconds) for _ in range(count - count // 2)]
    names = list(labels)
    weights = [labels[n][0] for n in names]
    jobs = []
    for number, at in enumerate(sorted(times)):
        label = rng.choices(names, weights)[0]
        _, median, job_names = labels[label]
        duration = min(median * 5, max(20.0, rng.lognormvariate(math.log(median), 0.5)))
        jobs.append({"at_seconds": round(at, 1), "job": rng.choice(job_names), "label": label,
                     "duration_seconds": round(duration, 1),
                     "parameters": {"BRANCH": rng.choice(["main", "main", "release"]),
                                    "BUILD_NO": str(number)}})
    return jobs
