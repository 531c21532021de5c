#!/usr/bin/env python3
"""The Jenkins emulator with a closed-loop simulation making its dumps.

tests/support/jenkins_emulator.py serves whatever dump a test scripts; here
the dump comes from bench/simulation.py's model instead, kept in step with
moto's EC2: a poller reads our agents (Name tag = slave name) in every env of
environment.json through the role the manager assumes, and feeds them to the
model; a ticker advances it. Simulated time runs `--time-scale` times faster
than real time, from the first dump on. `GET /emulator/sim` reports what
happened (the model's stats); `--sim-out` also writes them at exit;
`--dump-log` appends every dump served, as a JSON line {index, time,
sim_time, whole, dump}; `POST /emulator/sim/fault` {"no_boot": N, "slip":
N} injects the soak's faults into the model (bench/simulation.py).
`--create-boot R,O --start-boot R,O` replace the single `--boot-delay` by the
boot model (bench/simulation.py's BootModel): a created instance running R s
after the launch and its node online O s later, likewise for a started one;
`--boot-jitter F` varies each delay by up to that share, seeded by
`--boot-seed`. `--interruption-at S` makes an interruption wave at simulated second S:
EC2's spot interruption warning for `--interruption-share` of the running
spot agents, sent as EventBridge envelopes to the queue
`--interruption-queue` in each env's account and region (made at start),
and the warned instances terminated in moto `--reclaim-after` simulated
seconds later, as EC2 reclaims them. `offline-node` reaches the model.
Every other flag, endpoint and the READY line are the emulator's.

The poller reads moto directly, never through the fault proxy: faults
injected on the manager's path do not blur what the simulation sees.

Run: python3 bench/sim_jenkins.py --user USER --authorized-keys FILE
         --moto-endpoint URL --environment FILE [--trace FILE]
         [--slave-name NAME] [--boot-delay S | --create-boot R,O
         --start-boot R,O [--boot-jitter F] [--boot-seed N]] [--time-scale X]
         [--idle-minutes M] [--poll-interval S] [--sim-out FILE]
         [--dump-log FILE] [--interruption-queue NAME --interruption-at S
         [--interruption-share F] [--reclaim-after S]]
         [emulator flags: --http-port N --ssh-port N --log FILE ...]
"""

import argparse
import json
import sys
import threading
import time
import uuid

import bench_common  # noqa: F401  (puts tests/support, where the emulator lives, on sys.path)
import simulation
from emulator import main as emulator
from emulator.scenario import ScenarioError

ROLE_SESSION = "jenkins-emulator-sim"
TICK_SECONDS = 0.02


class Ec2Follower:
    """Our agents in moto's EC2, env by env, through the manager's role."""

    def __init__(self, endpoint, environment_path, slave_name):
        with open(environment_path, encoding="utf-8") as source:
            environment = json.load(source)
        try:
            self.role = environment["jenkins-master"]["jenkins-master-sg-name"]
            self.envs = {name: (env["account-id"], env["region"])
                         for name, env in environment["environments"].items()}
        except (KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{environment_path}: not an environment.json "
                             f"(SPEC A3): missing {err}") from err
        self.endpoint = endpoint
        self.slave_name = slave_name
        self._clients = {}
        self._queues = {}

    def _client(self, env, service="ec2"):
        """A client of `service` in the env's account, by the manager's role."""
        if (env, service) not in self._clients:
            import boto3  # imported late: only the simulation needs boto3
            from botocore.config import Config
            account, region = self.envs[env]
            config = Config(connect_timeout=5, read_timeout=60,
                            retries={"max_attempts": 2})
            keys = {"aws_access_key_id": "testing",
                    "aws_secret_access_key": "testing"}
            sts = boto3.client("sts", region_name=region, config=config,
                               endpoint_url=self.endpoint, **keys)
            creds = sts.assume_role(
                RoleArn=f"arn:aws:iam::{account}:role/{self.role}",
                RoleSessionName=ROLE_SESSION)["Credentials"]
            self._clients[(env, service)] = boto3.client(
                service, region_name=region, config=config,
                endpoint_url=self.endpoint,
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"])
        return self._clients[(env, service)]

    def make_queues(self, name):
        """The interruption queue `name` in every env (made if missing)."""
        for env in self.envs:
            self._queues[env] = self._client(env, "sqs").create_queue(QueueName=name)["QueueUrl"]

    def warn(self, env, instance_id):
        """EC2's spot interruption warning for the instance, as EventBridge
        puts it on the env's queue."""
        account, region = self.envs[env]
        body = {"version": "0", "id": str(uuid.uuid4()),
                "detail-type": "EC2 Spot Instance Interruption Warning",
                "source": "aws.ec2", "account": account,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "region": region,
                "resources": [f"arn:aws:ec2:{region}a:instance/{instance_id}"],
                "detail": {"instance-id": instance_id, "instance-action": "terminate"}}
        self._client(env, "sqs").send_message(QueueUrl=self._queues[env],
                                              MessageBody=json.dumps(body))

    def reclaim(self, env, instance_id):
        """EC2 takes the instance back."""
        self._client(env).terminate_instances(InstanceIds=[instance_id])

    def describe(self, env):
        """Every instance of ours in the env, as DescribeInstances lists it."""
        pages = self._client(env).get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:Name", "Values": [self.slave_name]}])
        return [instance for page in pages
                for reservation in page["Reservations"]
                for instance in reservation["Instances"]]


class ClosedLoop:
    """The model in real time: polls EC2 into it every `poll_interval` real
    seconds and advances it every tick, in two background threads. What the
    emulator asks of a simulation (`dump`, `stats`, `start`, `stop`)."""

    def __init__(self, model, follower, poll_interval, sim_out=None, dump_log=None,
                 wave=None):
        self.model = model
        self.follower = follower
        self.poll_interval = poll_interval
        self.sim_out = sim_out
        self.dump_log = dump_log
        # {"at", "share", "reclaim_after"} in simulated seconds, or None.
        self.wave = wave
        self._log_lock = threading.Lock()
        self._stop = threading.Event()

    def poll_once(self):
        """Read every env once and fold what it holds into the model."""
        started = time.monotonic()
        errors = 0
        for env in self.follower.envs:
            try:
                described = self.follower.describe(env)
            except Exception as err:  # noqa: BLE001 - any failure: next poll
                errors += 1
                print(f"sim-jenkins: describe in {env} failed: {err!r}",
                      file=sys.stderr)
                continue
            self.model.observe(env, described)
        self.model.end_poll(time.monotonic() - started, errors)

    def start(self):
        """Poll once (what exists now is pre-existing), then keep polling and
        ticking in the background."""
        self.poll_once()
        threading.Thread(target=self._poll_loop, daemon=True).start()
        threading.Thread(target=self._tick_loop, daemon=True).start()

    def stop(self):
        self._stop.set()
        if self.sim_out:
            with open(self.sim_out, "w", encoding="utf-8") as out:
                json.dump(self.stats(), out, indent=1)
                out.write("\n")

    def _poll_loop(self):
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll_once()
            self._stop.wait(max(0.0, self.poll_interval
                                - (time.monotonic() - started)))

    def _tick_loop(self):
        while not self._stop.wait(TICK_SECONDS):
            self.model.advance()
            if self.wave is not None and self.model.clock.now() >= self.wave["at"]:
                wave, self.wave = self.wave, None
                threading.Thread(target=self._interrupt, args=(wave,), daemon=True).start()

    def _interrupt(self, wave):
        """Warn, then reclaim after the warning's time."""
        warned = self.model.interrupt(wave["share"], seed=int(wave["at"]))
        started = self.model.clock.now()
        for env, instance_id in warned:
            try:
                self.follower.warn(env, instance_id)
            except Exception as err:  # noqa: BLE001 - the figures will show it
                print(f"sim-jenkins: warning {instance_id} failed: {err!r}", file=sys.stderr)
        print(f"sim-jenkins: interruption wave at {started:.0f} s: warned {len(warned)} "
              f"spot agents", file=sys.stderr)
        while self.model.clock.now() < started + wave["reclaim_after"]:
            if self._stop.wait(TICK_SECONDS):
                return
        for env, instance_id in warned:
            try:
                self.follower.reclaim(env, instance_id)
            except Exception as err:  # noqa: BLE001
                print(f"sim-jenkins: reclaiming {instance_id} failed: {err!r}", file=sys.stderr)

    def offline_node(self, name, cause):
        return self.model.offline_node(name, cause)

    def dump(self, words, whole=True):
        """The model's dump; `whole`: it goes out whole (not cut by a
        fault), so a pending slip may follow it."""
        dump = self.model.dump(words)
        if self.dump_log:
            record = {"index": self.model.dumps, "time": time.time(),
                      "sim_time": self.model.clock.now(), "whole": whole, "dump": dump}
            with self._log_lock, open(self.dump_log, "a", encoding="utf-8") as out:
                out.write(json.dumps(record) + "\n")
        if whole:
            self.model.slip(dump)
        return dump

    def fault(self, request):
        try:
            return self.model.fault(request)
        except ValueError as err:
            raise ScenarioError(str(err)) from err

    def stats(self):
        return self.model.stats()


def delays(text):
    """`R,O`: two seconds, not negative (argparse type)."""
    try:
        running, online = (float(part) for part in text.split(","))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not RUNNING,ONLINE seconds") from err
    if min(running, online) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a delay is not negative")
    return running, online


def parse_args(argv):
    parser = emulator.build_parser(__doc__.split("\n\n")[0])
    sim = parser.add_argument_group(
        "closed-loop simulation",
        "follow moto's EC2, register agents' nodes, run a trace's jobs on "
        "them; the dump comes from that model")
    sim.add_argument("--moto-endpoint", metavar="URL", required=True,
                     help="moto's server")
    sim.add_argument("--environment", metavar="FILE", required=True,
                     help="environment.json naming the envs")
    sim.add_argument("--slave-name", default="jslave-in-house",
                     help="Name tag of our agents (default jslave-in-house)")
    sim.add_argument("--trace", metavar="FILE",
                     help="JSON list of {at_seconds, job, label, "
                          "duration_seconds, parameters?}")
    sim.add_argument("--boot-delay", type=float, default=60.0, metavar="SECONDS",
                     help="simulated seconds from start to node (default 60)")
    sim.add_argument("--create-boot", type=delays, metavar="R,O",
                     help="a created instance: simulated seconds from launch to "
                          "running, then to its node online (with --start-boot, "
                          "instead of --boot-delay)")
    sim.add_argument("--start-boot", type=delays, metavar="R,O",
                     help="a started instance: seconds from start to running, "
                          "then to its node online")
    sim.add_argument("--boot-jitter", type=float, default=0.0, metavar="F",
                     help="vary each boot delay by up to this share (default 0)")
    sim.add_argument("--boot-seed", type=int, default=0, metavar="N",
                     help="seed of the boot jitter (default 0)")
    sim.add_argument("--time-scale", type=float, default=1.0, metavar="X",
                     help="simulated seconds per real second (default 1)")
    sim.add_argument("--idle-minutes", type=int, default=45, metavar="M",
                     help="idle limit when the groovy command gives no "
                          "idle_minutes= word (default 45)")
    sim.add_argument("--poll-interval", type=float, default=0.2, metavar="SECONDS",
                     help="real seconds between reads of moto (default 0.2)")
    sim.add_argument("--sim-out", metavar="FILE",
                     help="write the simulation's figures here at exit")
    sim.add_argument("--dump-log", metavar="FILE",
                     help="append every dump served as a JSON line "
                          "{index, time, sim_time, whole, dump}")
    sim.add_argument("--interruption-queue", metavar="NAME",
                     help="the envs' queue of EC2 events (made at start)")
    sim.add_argument("--interruption-at", type=float, metavar="SECONDS",
                     help="simulated second of the interruption wave")
    sim.add_argument("--interruption-share", type=float, default=0.2, metavar="F",
                     help="share of the running spot agents warned (default 0.2)")
    sim.add_argument("--reclaim-after", type=float, default=120.0, metavar="SECONDS",
                     help="simulated seconds from warning to reclaim (default 120)")
    args = parser.parse_args(argv)
    emulator.check_args(parser, args)
    if (args.interruption_at is None) != (args.interruption_queue is None):
        parser.error("--interruption-at and --interruption-queue go together")
    if (args.create_boot is None) != (args.start_boot is None):
        parser.error("--create-boot and --start-boot go together")
    if not 0 <= args.boot_jitter < 1:
        parser.error("--boot-jitter is a share in [0, 1)")
    if args.time_scale <= 0 or args.boot_delay < 0 or args.poll_interval <= 0:
        parser.error("--time-scale and --poll-interval must be positive, "
                     "--boot-delay not negative")
    return args


def main(argv):
    args = parse_args(argv)
    try:
        follower = Ec2Follower(args.moto_endpoint, args.environment, args.slave_name)
        boot = None
        if args.create_boot is not None:
            boot = simulation.BootModel(create=args.create_boot, start=args.start_boot,
                                        jitter=args.boot_jitter, seed=args.boot_seed)
        model = simulation.Simulation(
            follower.envs, simulation.load_trace(args.trace),
            simulation.ScaledClock(args.time_scale),
            boot_delay=args.boot_delay, idle_minutes=args.idle_minutes, boot=boot)
    except (OSError, ValueError) as err:
        print(f"sim-jenkins: cannot simulate: {err}", file=sys.stderr)
        return 2
    wave = None
    if args.interruption_at is not None:
        follower.make_queues(args.interruption_queue)
        wave = {"at": args.interruption_at, "share": args.interruption_share,
                "reclaim_after": args.reclaim_after}
    return emulator.serve(args, ClosedLoop(model, follower, args.poll_interval,
                                           args.sim_out, args.dump_log, wave))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
