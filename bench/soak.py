#!/usr/bin/env python3
"""A chaos soak with an independent invariant checker (issue 15).

The closed loop of the benchmark's trace (bench/sim_jenkins.py: queue
arrivals, agents booting into nodes, builds taking executors, the idle
policy) runs for hours of simulated time against moto,
with the manager run as the cron job runs it: consecutive bounded runs
(`--loop_counter`) in one working directory. Meanwhile faults are injected
at random, several at once (bench/soak_faults.py: EC2 throttling, 500s,
launches whose answer is lost, no capacity in an AZ, an env unreachable,
STS refusing an env, the dump hanging, cut short or garbage, SSH refused, a
build slipping onto a retiring node, SQS garbage and failed deletes, EC2's
interruption events (warnings with the reclaim after them, rebalance
recommendations, state changes, duplicates, foreign events, garbage), agents
that never boot, an AMI rollout, and `kill -9` of the manager at random
points and right after a launch or a stop). bench/invariants.py judges every
pass and every EC2 call from moto's state (read straight from moto), the
recorder's log of the calls that reached moto, and the dumps Jenkins served,
never from the manager's logs or counters.

  soak.py --binary PATH [--seed N] [--sim-minutes M] [--time-scale X]
          [--faults all|none|KIND,...] [--every-kind] [--baseline]
          [--workdir DIR] [--keep] [--json FILE] [--markdown FILE]

The processes: moto (bench/soak_moto.py), the recorder (in this process),
the fault proxy (tests/support/fault_proxy.py) in front of it, the Jenkins
emulator with the simulation making its dumps (bench/sim_jenkins.py, which
reads moto directly), and the manager with AWS_ENDPOINT_URL at the proxy. Every violation is printed as it is found
with the seed, the run and the pass; the same seed replays the same trace
and fault schedule (in simulated time), not the same interleaving: the
manager's random picks, moto's ids and the wall-clock timing of runs and
kills differ from one replay to the next. Exit status: 0 no violation, 1
violations, 2 the soak itself could not run, 3 no violation but the net had
a gap (a fault that never took effect in a run of every kind, an invariant
the checker never had a chance to judge).
"""

import argparse
import json
import os
import queue
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

import boto3
import invariants
import soak_faults
from botocore.config import Config
from soak_recorder import Recorder

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
SUPPORT = os.path.join(REPO, "tests", "support")
PYTHON = sys.executable
USER = "slave-manager"
SLAVE_NAME = "jslave-in-house"
KEY_NAME = "jenkins.cloud"
JENKINS_URL = "http://jenkins.invalid/"       # the envs' jenkins_url: whose agents are ours
OTHER_MASTER = "https://other-jenkins.example.com/"
ENVS = [("dev", "111111111111", "us-east-2"), ("prod", "222222222222", "us-west-2")]
MASTER_REGION = "us-west-2"
SQS_REGION = "us-east-2"
SQS_JOB = "soak-remote"
INTERRUPTION_QUEUE = "slave-manager-ec2-events"
RECLAIM_SIM_SECONDS = 120.0
ROLE = "jenkins_master"
DUMMY = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}
PASS_SIM_SECONDS = 5.0
BOOT_DELAY = 60.0
IDLE_MINUTES = 10
ZOMBIE_MINUTES = 1          # real minutes: the manager's clock is real time
AWS_TIMEOUT = 6             # each attempt gets a third; run_timeout holds 3 s
JENKINS_TIMEOUT = 4
RUN_TIMEOUT_HOLD = 3.0
# label -> (share of jobs, median duration s, job names); the env is the
# label's first word, spot and shared as SPEC A4 says.
LABELS = {
    "dev": (0.27, 90, ["app/build", "app/unit-tests", "lib/build"]),
    "dev_spot": (0.18, 120, ["app/integration", "app/e2e"]),
    "dev_shared": (0.14, 60, ["lint", "lib/lint"]),
    "prod": (0.14, 120, ["release/package", "release/deploy"]),
    "prod_spot_c5.large": (0.11, 180, ["release/load-test"]),
    "prod_shared": (0.12, 45, ["release/sign", "release/notify"]),
    # Never served: an instance type --instance_types refuses, an unknown env.
    "dev_x1e.32xlarge": (0.02, 60, ["big/build"]),
    "qa": (0.02, 60, ["qa/run"]),
}
UNSERVABLE = {"dev_x1e.32xlarge", "qa"}
PREEXISTING = [
    {"env": "dev", "labels": "dev", "state": "stopped"},
    {"env": "dev", "labels": "dev", "state": "stopped"},
    {"env": "dev", "labels": "dev", "state": "stopped", "ami": "old"},
    {"env": "prod", "labels": "prod", "state": "running"},
    {"env": "prod", "labels": "prod_shared", "state": "stopped"},
]
# Instances of somebody else's, in every env: none may ever be touched.
FOREIGN = [
    {"what": "no Name tag (otherwise like ours)", "name": None, "state": "running"},
    # Its label names our env but no job asks for it: its node idles,
    # Jenkins says terminate_me, and only ownership keeps it.
    {"what": "another master's agent", "name": SLAVE_NAME, "master": OTHER_MASTER,
     "labels": "{env}_shared_c5.xlarge", "state": "running"},
    {"what": "another master's stopped agent of our label", "name": SLAVE_NAME,
     "master": OTHER_MASTER, "state": "stopped"},
    {"what": "our Name and master, another key pair", "name": SLAVE_NAME, "key": "someone.else",
     "state": "stopped"},
    {"what": "somebody's CI runner", "name": "ci-runner", "state": "running"},
]
GARBAGE = [
    "this is not JSON",
    "{}",
    '{"name": "soak-remote", "action": "delete-job"}',
    '{"name": "soak-remote", "action": "safe-restart"}',
    '{"name": "soak-remote", "action": "groovy"}',
    '{"name": "soak-remote", "action": "install-plugin"}',
    '{"name": "../../etc/passwd", "action": "build"}',
    '{"name": "soak-remote; rm -rf /", "action": "build"}',
    '[1, 2, 3]',
    '{"name": "x' + "y" * 5000 + '"}',
]


class SoakError(RuntimeError):
    """The soak could not run (not a violation)."""


def log(message):
    print(f"soak: {message}", file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http(url, method="GET", body=None, timeout=30):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.load(answer)


def percentile(values, fraction):
    """Nearest-rank percentile; None when there are no values."""
    ordered = sorted(values)
    if not ordered:
        return None
    return ordered[int(max(1, -(-len(ordered) * fraction // 1))) - 1]


def label_spec(label):
    """env, spot?, executors of a servable label (SPEC A4)."""
    words = label.split("_")
    return {"env": words[0], "spot": "spot" in words, "executors": 5 if "shared" in words else 1}


class Services:
    """The helper processes, each stopped (TERM, then KILL) by its own pid."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def spawn(self, name, argv, stdout=subprocess.DEVNULL):
        out = open(os.path.join(self.workdir, f"{name}.log"), "ab")
        try:
            proc = subprocess.Popen(argv, stdout=stdout, stderr=out, stdin=subprocess.DEVNULL)
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def ready(self, name, proc, timeout=60):
        result = {}
        reader = threading.Thread(target=lambda: result.update(line=proc.stdout.readline().decode()),
                                  daemon=True)
        reader.start()
        reader.join(timeout)
        line = result.get("line", "")
        if not line.startswith("READY"):
            raise SoakError(f"{name} did not start (see {self.workdir}/{name}.log)")
        return dict(word.split("=", 1) for word in line.split()[1:])

    def moto(self):
        port = free_port()
        proc = self.spawn("moto", [PYTHON, os.path.join(BENCH, "soak_moto.py"), "-H", "127.0.0.1",
                                   "-p", str(port)])
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SoakError("moto's server exited")
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
                return url
            except OSError:
                time.sleep(0.1)
        raise SoakError("moto's server did not start")

    def stop(self, proc, timeout=10):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self):
        for proc in reversed(self.procs):
            self.stop(proc)


class Aws:
    """boto3 straight to moto, in each env's account (the checker's own
    eyes, and the driver's hands for the world and SQS)."""

    def __init__(self, endpoint):
        self.endpoint = endpoint
        self.config = Config(retries={"max_attempts": 3}, read_timeout=60)
        self.clients = {}

    def client(self, service, region, account=None):
        key = (service, region, account)
        if key not in self.clients:
            creds = DUMMY
            if account is not None:
                sts = boto3.client("sts", region_name=region, endpoint_url=self.endpoint,
                                   config=self.config, **DUMMY)
                answer = sts.assume_role(RoleArn=f"arn:aws:iam::{account}:role/{ROLE}",
                                         RoleSessionName="soak-checker")["Credentials"]
                creds = {"aws_access_key_id": answer["AccessKeyId"],
                         "aws_secret_access_key": answer["SecretAccessKey"],
                         "aws_session_token": answer["SessionToken"]}
            self.clients[key] = boto3.client(service, region_name=region, endpoint_url=self.endpoint,
                                             config=self.config, **creds)
        return self.clients[key]

    def describe(self, account, region):
        """Every instance not terminated, in the checker's shape."""
        ec2 = self.client("ec2", region, account)
        out = []
        pages = ec2.get_paginator("describe_instances").paginate(Filters=[{
            "Name": "instance-state-name",
            "Values": ["pending", "running", "stopping", "stopped", "shutting-down"]}])
        for page in pages:
            for reservation in page["Reservations"]:
                for i in reservation["Instances"]:
                    out.append({"id": i["InstanceId"], "state": i["State"]["Name"],
                                "tags": {t["Key"]: t["Value"] for t in i.get("Tags", [])},
                                "spot": i.get("InstanceLifecycle") == "spot",
                                "key": i.get("KeyName"), "image": i.get("ImageId"),
                                "ip": i.get("PrivateIpAddress"),
                                "launch_time": i["LaunchTime"].timestamp()})
        return out


class Tail:
    """New JSON lines of a file another process appends to."""

    def __init__(self, path):
        self.path = path
        self.offset = 0
        self.partial = b""

    def read(self):
        try:
            with open(self.path, "rb") as source:
                source.seek(self.offset)
                data = source.read()
        except FileNotFoundError:
            return []
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return [json.loads(line) for line in lines if line.strip()]


class MarkerClock:
    """Ages the manager's marker files in simulated time: every 50 ms each
    marker's mtime moves back so that its age reads `scale` times its real
    age (the manager ages `working_on_*` and `*.start_instance` files by
    mtime; its other clocks, LaunchTime-based, stay real)."""

    def __init__(self, directory, scale):
        self.directory = directory
        self.scale = scale
        self.born = {}
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
                        born = mtime
                    aged = born - (now - born) * (self.scale - 1)
                    os.utime(path, (aged, aged))
                    self.born[name] = (born, aged)
                except OSError:
                    self.born.pop(name, None)


class Soak:
    """One soak: a world, a trace, a fault schedule, the cron and the checker."""

    def __init__(self, args, faults, workdir):
        self.args = args
        self.fault_kinds = faults
        self.workdir = workdir
        self.scale = args.time_scale
        self.services = Services(workdir)
        self.events = queue.Queue()        # ("run"|"fault"|"sqs", record) for the checker
        self.stop_cron = threading.Event()
        self.finished = threading.Event()
        self.cron_lock = threading.Lock()
        self.proc = None                   # the manager's process, while a run is on
        self.run_number = 0
        self.kills = {}                    # kind -> kills done
        self.applied = {}                  # kind -> faults applied
        self.apply_errors = []
        self.rules = []                    # (rule, until real time) active in the proxy
        self.buckets = []                  # (token-bucket rule, until real time)
        self.keys_refused_until = 0.0
        self.sqs_valid = {}
        self.reported = 0
        self.origin = None
        self.amis = {}
        self.stock_amis = {}
        self.checker = None
        self.violation_lines = []
        self.check_lock = threading.Lock()

    # --- setup --------------------------------------------------------------------

    def start(self):
        a = self.args
        w = self.workdir
        self.moto = self.services.moto()
        self.aws = Aws(self.moto)
        self.recorder = Recorder(self.moto).start()
        proxy = self.services.spawn("proxy", [PYTHON, os.path.join(SUPPORT, "fault_proxy.py"),
                                              "--target", self.recorder.url], stdout=subprocess.PIPE)
        self.proxy = f"http://127.0.0.1:{self.services.ready('proxy', proxy)['port']}"
        key = os.path.join(w, "id_rsa")
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key], check=True, timeout=30)
        with open(key + ".pub") as pub:
            self.public_key = pub.read()
        self.keys_file = os.path.join(w, "authorized_keys")
        self.write_keys(True)
        agents = os.path.join(w, "agents.json")
        with open(agents, "w") as out:
            json.dump(PREEXISTING, out)
        env_json = os.path.join(w, "environment.json")
        world_json = os.path.join(w, "world.json")
        subprocess.run([PYTHON, os.path.join(SUPPORT, "moto_world.py"), "--endpoint", self.moto,
                        "--envs", ",".join(f"{n}:{acct}:{r}" for n, acct, r in ENVS),
                        "--jenkins-url", JENKINS_URL, "--master-region", MASTER_REGION,
                        "--agents", agents, "--environment-json", env_json, "--world-json", world_json,
                        "--sqs-region", SQS_REGION], check=True, stdout=subprocess.DEVNULL, timeout=300)
        with open(world_json) as source:
            self.world = json.load(source)
        self.amis = {name: env["ami"] for name, env in self.world["envs"].items()}
        self.foreign = self.make_foreign()
        self.trace = soak_faults.trace(a.seed, a.sim_seconds, LABELS, a.jobs_per_hour)
        trace_path = os.path.join(w, "trace.json")
        with open(trace_path, "w") as out:
            json.dump(self.trace, out)
        self.schedule = soak_faults.schedule(a.seed, a.sim_seconds, self.fault_kinds,
                                             [n for n, _, _ in ENVS], every_kind=a.every_kind)
        with open(os.path.join(w, "schedule.json"), "w") as out:
            json.dump(self.schedule, out, indent=0)
        self.dump_log = os.path.join(w, "dumps.jsonl")
        self.command_log = os.path.join(w, "commands.jsonl")
        self.tails = (Tail(self.dump_log), Tail(self.command_log))
        emulator = self.services.spawn("emulator", [
            PYTHON, os.path.join(BENCH, "sim_jenkins.py"), "--user", USER,
            "--authorized-keys", self.keys_file, "--log", self.command_log,
            "--moto-endpoint", self.moto, "--environment", env_json,
            "--trace", trace_path, "--time-scale", str(self.scale), "--boot-delay", str(BOOT_DELAY),
            "--idle-minutes", str(IDLE_MINUTES), "--dump-log", self.dump_log,
            "--sim-out", os.path.join(w, "sim.json"), "--http-port", "0", "--ssh-port", "0"],
            stdout=subprocess.PIPE)
        self.emulator_proc = emulator
        self.jenkins = f"http://127.0.0.1:{self.services.ready('emulator', emulator)['http']}/"
        http(self.jenkins + "emulator/state", "PUT",
             {"jobs": {SQS_JOB: {"output": f"Started {SQS_JOB} #1"}}})
        self.run_dir = os.path.join(w, "run")
        os.makedirs(self.run_dir)
        shutil.copy(key, self.run_dir)
        self.sqs = self.aws.client("sqs", SQS_REGION)
        self.queue_url = self.world["sqs"]["queue_url"]
        self.checker = invariants.Checker(invariants.CheckConfig(
            envs={n: {"region": r, "master": JENKINS_URL} for n, _, r in ENVS},
            slave_name=SLAVE_NAME, on_demand_cap=a.on_demand_cap, spot_cap=a.spot_cap,
            labels={lb: label_spec(lb) for lb in LABELS if lb not in UNSERVABLE},
            zombie_limit=ZOMBIE_MINUTES * 60.0, starve_passes=a.starve_passes,
            sqs_job=SQS_JOB))
        for name, account, region in ENVS:
            self.stock_amis[name] = self.stock_images(account, region)
        # Each env's queue of EC2 events, in its account and region.
        self.event_queues = {
            name: self.aws.client("sqs", region, account).create_queue(
                QueueName=INTERRUPTION_QUEUE)["QueueUrl"]
            for name, account, region in ENVS}

    def write_keys(self, accept):
        """The emulator re-reads the keys at every login: an empty file is
        Jenkins refusing the manager's key."""
        with open(self.keys_file, "w") as out:
            out.write(self.public_key if accept else "")

    def stock_images(self, account, region):
        ec2 = self.aws.client("ec2", region, account)
        images = ec2.describe_images(Owners=["amazon"], Filters=[
            {"Name": "architecture", "Values": ["x86_64"]},
            {"Name": "root-device-type", "Values": ["ebs"]}])["Images"]
        return sorted(i["ImageId"] for i in images)

    def make_foreign(self):
        """Somebody else's instances in every env (FOREIGN)."""
        made = []
        for name, account, region in ENVS:
            env = self.world["envs"][name]
            ec2 = self.aws.client("ec2", region, account)
            ec2.create_key_pair(KeyName="someone.else")
            for number, spec in enumerate(FOREIGN):
                master = spec.get("master", JENKINS_URL)
                tags = {"slave_data": json.dumps({
                    "num_of_executors": 1, "environment": "infra",
                    "slave_labels": spec.get("labels", "{env}").format(env=name),
                    "description": "Created by Swarm",
                    "jenkins_url": master}), "jenkins_master": master, "owner": "someone@example.com"}
                if spec["name"]:
                    tags["Name"] = spec["name"]
                instance = ec2.run_instances(
                    ImageId=env["ami"], MinCount=1, MaxCount=1, InstanceType="t2.small",
                    KeyName=spec.get("key", KEY_NAME),
                    SubnetId=env["subnets"][number % 2]["id"], SecurityGroupIds=[env["sg"]],
                    TagSpecifications=[{"ResourceType": "instance",
                                        "Tags": [{"Key": k, "Value": v} for k, v in tags.items()]}],
                )["Instances"][0]["InstanceId"]
                if spec["state"] == "stopped":
                    ec2.stop_instances(InstanceIds=[instance])
                made.append({"env": name, "id": instance, "what": spec["what"]})
        return made

    # --- time ------------------------------------------------------------------------

    def sim_now(self):
        return None if self.origin is None else (time.time() - self.origin) * self.scale

    def real_at(self, sim_seconds):
        return self.origin + sim_seconds / self.scale

    # --- the cron ------------------------------------------------------------------------

    def manager_args(self, loops):
        a = self.args
        amis = ",".join(f"{env}:{ami}" for env, ami in sorted(self.amis.items()))
        return [a.binary, "--url", self.jenkins, "--id_rsa", "id_rsa", "--jenkins_user", USER,
                "--owner_email", "ops@example.com", "--ami_ids", amis,
                "--environment", os.path.join(self.workdir, "environment.json"), "--cli", "ssh",
                "--loop_counter", str(loops), "--pass_interval", f"{PASS_SIM_SECONDS / self.scale:.3f}",
                "--skip_security_group", "--gc_job", "", "--idle_minutes", str(IDLE_MINUTES),
                "--max_num_of_slaves_in_env", str(a.on_demand_cap),
                "--max_num_of_spot_slaves_in_env", str(a.spot_cap),
                "--jenkins_master_region", MASTER_REGION,
                "--aws_sqs_account_id", self.world["master_account"], "--aws_sqs_region", SQS_REGION,
                "--zombie_minutes", str(ZOMBIE_MINUTES), "--aws_timeout", str(AWS_TIMEOUT),
                "--interruption_queue", INTERRUPTION_QUEUE,
                "--jenkins_timeout", str(JENKINS_TIMEOUT), "--debug"]

    def manager_env(self):
        env = dict(os.environ)
        for key in ("JAVA_HOME", "RUST_LOG", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION",
                    "AWS_DEFAULT_REGION"):
            env.pop(key, None)
        env.update(AWS_ENDPOINT_URL=self.proxy, NO_COLOR="1", **{k.upper(): v for k, v in DUMMY.items()})
        return env

    def cron(self):
        """Consecutive bounded runs in one directory, as the Jenkins job."""
        rng = random.Random(self.args.seed * 31 + 5)
        env = self.manager_env()
        with open(os.path.join(self.workdir, "manager.log"), "ab") as out:
            while not self.stop_cron.is_set():
                loops = rng.randint(20, 50)
                with self.cron_lock:
                    self.run_number += 1
                    number = self.run_number
                    out.write(f"\n=== soak run {number}: {loops} passes\n".encode())
                    out.flush()
                    record = {"number": number, "start": time.time(), "end": None, "killed": False,
                              "ami": dict(self.amis), "loops": loops}
                    self.proc = subprocess.Popen(self.manager_args(loops), cwd=self.run_dir, env=env,
                                                 stdout=out, stderr=subprocess.STDOUT,
                                                 stdin=subprocess.DEVNULL)
                    self.current = record
                self.events.put(("run", dict(record)))
                status = self.proc.wait()
                with self.cron_lock:
                    record["end"] = time.time()
                    record["status"] = status
                    self.proc = None
                self.events.put(("run", dict(record)))
                if status not in (0, -signal.SIGKILL, -signal.SIGTERM):
                    log(f"run {number} exited with status {status} (see manager.log)")
                    record["bad_exit"] = True
                self.stop_cron.wait(rng.uniform(0.2, 1.0))

    def kill(self, kind):
        """kill -9 of the manager, if a run is on."""
        with self.cron_lock:
            if self.proc is None or self.proc.poll() is not None:
                return False
            os.kill(self.proc.pid, signal.SIGKILL)
            self.current["killed"] = True
        now = time.time()
        self.kills[kind] = self.kills.get(kind, 0) + 1
        self.events.put(("fault", {"kind": kind, "start": now - 0.05, "end": now + 0.05,
                                   "envs": ["*"], "kill": True}))
        return True

    # --- faults ----------------------------------------------------------------------------

    def injector(self):
        """Applies the schedule at its simulated times, and the SQS load."""
        rng = random.Random(self.args.seed * 13 + 1)
        pending = list(self.schedule)
        next_request = 0.0
        while not self.finished.is_set():
            now_sim = self.sim_now()
            if now_sim is None:
                self.finished.wait(0.1)
                continue
            while pending and pending[0]["at"] <= now_sim:
                entry = pending.pop(0)
                try:
                    self.apply(entry)
                    self.applied[entry["kind"]] = self.applied.get(entry["kind"], 0) + 1
                except Exception as err:  # noqa: BLE001 - one fault lost, not the soak
                    log(f"could not apply {entry}: {err!r}")
                    self.apply_errors.append(f"{entry}: {err!r}")
            if now_sim >= next_request and now_sim < self.args.sim_seconds:
                self.send_request()
                next_request = now_sim + rng.expovariate(self.args.sqs_per_hour / 3600)
            try:
                self.expire_rules()
            except OSError as err:
                log(f"could not expire faults: {err!r}")
            self.finished.wait(0.05)

    def envs_of(self, entry):
        return [entry["env"]]

    def window(self, entry, seconds=None, jenkins=False):
        """Tells the checker a fault is on from now for `seconds` real s."""
        now = time.time()
        seconds = entry["duration"] / self.scale if seconds is None else seconds
        kind = soak_faults.BY_NAME[entry["kind"]]
        if kind.unclean:
            self.events.put(("fault", {"kind": entry["kind"], "start": now, "end": now + seconds + 0.5,
                                       "envs": [] if jenkins else self.envs_of(entry),
                                       "jenkins": jenkins}))
        return now + seconds

    def add_rule(self, rule, until):
        self.rules.append((rule, until))
        self.post_rules()

    def add_bucket(self, rule, until):
        self.buckets.append((rule, until))
        self.post_buckets()

    def post_buckets(self):
        """The proxy's latency model: the token buckets of the throttling
        bursts on now (a new model starts its buckets full)."""
        http(self.proxy + "/_proxy/latency", "POST", {"buckets": [r for r, _ in self.buckets]})

    def expire_rules(self):
        now = time.time()
        if any(until <= now for _, until in self.rules):
            self.rules = [(r, u) for r, u in self.rules if u > now]
            self.post_rules()
        if any(until <= now for _, until in self.buckets):
            self.buckets = [(r, u) for r, u in self.buckets if u > now]
            self.post_buckets()
        if self.keys_refused_until and self.keys_refused_until <= now:
            self.keys_refused_until = 0.0
            self.write_keys(True)

    def post_rules(self):
        """The proxy takes the whole rule list; counted rules keep what is
        left of their count."""
        current = http(self.proxy + "/_proxy/faults")["rules"]
        left = [r.get("count") for r in current]
        rules = []
        for i, (rule, _) in enumerate(self.rules):
            if rule.get("count") is not None and i < len(left) and left[i] is not None:
                rule = dict(rule, count=left[i])
            rules.append(rule)
        http(self.proxy + "/_proxy/faults", "POST", {"rules": rules})

    def region(self, env):
        return next(r for n, _, r in ENVS if n == env)

    def apply(self, entry):
        kind = entry["kind"]
        getattr(self, f"apply_{kind}")(entry)

    def apply_ec2_throttle(self, e):
        # EC2's own throttle: a token bucket per action in the env's region,
        # nearly dry (a burst of 2, refilled at one token every 2 s).
        self.add_bucket({"service": "ec2", "region": self.region(e["env"]), "burst": 2, "refill": 0.5},
                        self.window(e))

    def apply_ec2_500(self, e):
        rule = {"fault": "error500", "service": "ec2", "region": self.region(e["env"])}
        if e.get("action"):
            rule["action"] = e["action"]
        self.add_rule(rule, self.window(e))

    def apply_run_timeout(self, e):
        self.add_rule({"fault": "succeed_then_timeout", "service": "ec2", "action": "RunInstances",
                       "region": self.region(e["env"]), "delay": RUN_TIMEOUT_HOLD, "count": 1},
                      self.window(e))

    def apply_ice_az(self, e):
        subnet = self.world["envs"][e["env"]]["subnets"][e["subnet"]]["id"]
        self.add_rule({"fault": "insufficient_capacity", "service": "ec2", "action": "RunInstances",
                       "region": self.region(e["env"]), "params": {"NetworkInterface.1.SubnetId": subnet}},
                      self.window(e))

    def apply_env_unreachable(self, e):
        self.add_rule({"fault": "reset", "service": "ec2", "region": self.region(e["env"])}, self.window(e))

    def apply_sts_refused(self, e):
        self.add_rule({"fault": "access_denied", "service": "sts", "region": self.region(e["env"])},
                      self.window(e))

    def groovy_fault(self, e, mode, count):
        http(self.jenkins + "emulator/fault", "POST", {"groovy": mode, "count": count})
        per = JENKINS_TIMEOUT + 1.0 if mode == "hang" else PASS_SIM_SECONDS / self.scale + 0.5
        self.window(e, seconds=count * per + 1.0, jenkins=True)

    def apply_dump_hang(self, e):
        self.groovy_fault(e, "hang", 1)

    def apply_dump_truncated(self, e):
        self.groovy_fault(e, "truncated", e["count"])

    def apply_dump_garbage(self, e):
        self.groovy_fault(e, "garbage", e["count"])

    def apply_ssh_refused(self, e):
        self.write_keys(False)
        self.keys_refused_until = self.window(e, jenkins=True)

    def apply_busy_slip(self, e):
        http(self.jenkins + "emulator/sim/fault", "POST", {"slip": 1})

    def apply_no_boot(self, e):
        http(self.jenkins + "emulator/sim/fault", "POST", {"no_boot": 1})

    def apply_sqs_garbage(self, e):
        for i in range(e["count"]):
            self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=GARBAGE[i % len(GARBAGE)])

    def apply_sqs_delete_fails(self, e):
        self.add_rule({"fault": "error500", "service": "sqs", "action": "DeleteMessage"}, self.window(e))

    def apply_kill(self, e):
        # Into a pass, mostly: a short random wait first.
        time.sleep(e["jitter"] * PASS_SIM_SECONDS / self.scale)
        self.kill("kill")

    def apply_kill_after_launch(self, e):
        # A start writes its marker after the call as a launch does; once the
        # fleet is at its caps, starts are most of what a pass launches.
        self.recorder.on_next(lambda c: c["action"] in ("RunInstances", "StartInstances") and c["status"] == 200,
                              lambda c: self.kill("kill_after_launch"))

    def apply_kill_after_stop(self, e):
        self.recorder.on_next(
            lambda c: c["action"] in ("StopInstances", "TerminateInstances") and c["status"] == 200,
            lambda c: self.kill("kill_after_stop"))

    def apply_ami_rollout(self, e):
        env = e["env"]
        used = {self.amis[env], self.world["envs"][env]["old_ami"]}
        fresh = [i for i in self.stock_amis[env] if i not in used]
        self.amis[env] = fresh[int(e["at"]) % len(fresh)]
        log(f"{env}: AMI {self.amis[env]} from the next run on")

    def event(self, env, detail_type, detail, event_id=None):
        """An EventBridge envelope as EC2 sends it to the env's queue."""
        account, region = next((a, r) for n, a, r in ENVS if n == env)
        return json.dumps({
            "version": "0", "id": event_id or f"soak-{random.getrandbits(64):016x}",
            "detail-type": detail_type, "source": "aws.ec2", "account": account,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": region,
            "resources": [f"arn:aws:ec2:{region}a:instance/{detail.get('instance-id')}"],
            "detail": detail})

    def apply_interruption(self, e):
        """A batch of EC2 events in one env's queue: a warning for a running
        spot agent of ours, twice (EC2 reclaims it two minutes later), a
        rebalance recommendation for another agent, state changes as they
        are, a warning for an instance that is not ours, one for an
        instance that does not exist, and garbage."""
        env = e["env"]
        account, region = next((a, r) for n, a, r in ENVS if n == env)
        rng = random.Random(e["pick"])
        ours = [i for i in self.aws.describe(account, region)
                if i["tags"].get("Name") == SLAVE_NAME and i["key"] == KEY_NAME
                and i["tags"].get("jenkins_master") == JENKINS_URL and i["state"] == "running"]
        spot = sorted((i for i in ours if i["spot"]), key=lambda i: i["id"])
        warned = rng.choice(spot) if spot else None
        others = sorted((i for i in ours if i is not warned), key=lambda i: i["id"])
        rebalanced = rng.choice(others) if others else None
        bodies = []
        now = time.time()
        if warned is not None:
            warning = self.event(env, "EC2 Spot Instance Interruption Warning",
                                 {"instance-id": warned["id"], "instance-action": "terminate"})
            bodies += [warning, warning]
            http(self.jenkins + "emulator/sim/fault", "POST", {"warn": [warned["id"]]})
            self.events.put(("warned", (warned["id"], env, now)))
            threading.Timer(RECLAIM_SIM_SECONDS / self.scale, self.reclaim,
                            args=(env, warned["id"])).start()
        if rebalanced is not None:
            bodies.append(self.event(env, "EC2 Instance Rebalance Recommendation",
                                     {"instance-id": rebalanced["id"]}))
            self.events.put(("rebalanced", (rebalanced["id"], env, now)))
        for i in ours[:2]:
            bodies.append(self.event(env, "EC2 Instance State-change Notification",
                                     {"instance-id": i["id"], "state": i["state"]}))
        foreign = [f["id"] for f in self.foreign if f["env"] == env]
        bodies.append(self.event(env, "EC2 Spot Instance Interruption Warning",
                                 {"instance-id": rng.choice(foreign), "instance-action": "terminate"}))
        bodies.append(self.event(env, "EC2 Instance Rebalance Recommendation",
                                 {"instance-id": "i-0000000000000dead"}))
        bodies += ["this is not JSON", self.event(env, "EC2 Instance Launch Successful",
                                                  {"instance-id": "i-1"}), "[]"]
        sqs = self.aws.client("sqs", region, account)
        for body in bodies:
            sqs.send_message(QueueUrl=self.event_queues[env], MessageBody=body)

    def reclaim(self, env, instance_id):
        """EC2 takes the warned instance back, and says so."""
        if self.finished.is_set():
            return
        account, region = next((a, r) for n, a, r in ENVS if n == env)
        try:
            self.aws.client("ec2", region, account).terminate_instances(InstanceIds=[instance_id])
            self.aws.client("sqs", region, account).send_message(
                QueueUrl=self.event_queues[env],
                MessageBody=self.event(env, "EC2 Instance State-change Notification",
                                       {"instance-id": instance_id, "state": "shutting-down"}))
        except Exception as err:  # noqa: BLE001 - one reclaim lost, not the soak
            log(f"could not reclaim {instance_id}: {err!r}")

    def requests_settled(self):
        """The build-request queue is empty (visible or in flight) and every
        valid request sent has been built."""
        attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        waiting = sum(int(v) for v in attributes.values())
        with self.check_lock:
            built = set(self.checker.builds)
        return waiting == 0 and all(r in built for r in self.sqs_valid)

    def send_request(self):
        request = f"r{len(self.sqs_valid):05d}"
        body = json.dumps({"name": SQS_JOB, "action": "build", "parameters": {"REQUEST_ID": request}})
        self.sqs.send_message(QueueUrl=self.queue_url, MessageBody=body)
        now = time.time()
        self.sqs_valid[request] = now
        self.events.put(("sqs", (request, now)))

    # --- the checker ------------------------------------------------------------------------

    def watch(self):
        """Feeds the checker: the recorder's calls, moto read directly, the
        dumps and the commands Jenkins ran; judges; reports."""
        interval = self.args.check_interval or PASS_SIM_SECONDS / self.scale
        while True:
            last = self.finished.is_set()
            self.recorder.wake.wait(interval)
            self.recorder.wake.clear()
            self.check_once(*self.tails)
            if last:
                return

    def check_once(self, dumps, commands):
        with self.check_lock:
            self._check_once(dumps, commands)

    def _check_once(self, dumps, commands):
        c = self.checker
        while True:
            try:
                kind, record = self.events.get_nowait()
            except queue.Empty:
                break
            if kind == "run":
                c.run(record)
            elif kind == "fault":
                c.fault(record)
            elif kind == "sqs":
                c.sqs_sent(*record)
            elif kind == "warned":
                c.warned(*record)
            elif kind == "rebalanced":
                c.rebalanced(*record)
        # moto first, then the calls: a snapshot is applied once every call
        # that arrived before it is in.
        for name, account, region in ENVS:
            t = time.time()
            try:
                c.snapshot(name, t, self.aws.describe(account, region), complete=True)
            except Exception as err:  # noqa: BLE001 - moto busy: next cycle
                log(f"checker: cannot read {name} from moto: {err!r}")
        calls, horizon = self.recorder.drain()
        for call in calls:
            c.call(call)
        for record in dumps.read():
            c.dump(record)
        for record in commands.read():
            c.command(record)
        c.evaluate(time.time(), horizon)
        self.report()

    def report(self):
        for v in self.checker.violations[self.reported:]:
            where = v["pass"] or {}
            line = (f"VIOLATION {v['invariant']}: seed {self.args.seed}, run {v['run']}, "
                    f"pass {where.get('run_pass')} (dump {where.get('dump')}), "
                    f"env {v['env'] or '-'}: {v['detail']}")
            self.violation_lines.append(line)
            print(f"soak: {line}", flush=True)
        self.reported = len(self.checker.violations)

    # --- the whole soak -----------------------------------------------------------------------

    def run(self):
        a = self.args
        self.start()
        clock = MarkerClock(self.run_dir, self.scale)
        clock.thread.start()
        # The checker's first look at moto comes before the first run's.
        watcher = threading.Thread(target=self.watch, daemon=True)
        self.check_once(*self.tails)
        watcher.start()
        cron = threading.Thread(target=self.cron, daemon=True)
        cron.start()
        deadline = time.monotonic() + 120
        while self.origin is None:
            if time.monotonic() > deadline:
                raise SoakError("the manager never asked for a dump (see manager.log)")
            self.origin = http(self.jenkins + "emulator/sim")["summary"]["origin_epoch"]
            time.sleep(0.1)
        injector = threading.Thread(target=self.injector, daemon=True)
        injector.start()
        log(f"seed {a.seed}: {a.sim_seconds / 3600:.2f} simulated hours at time scale {self.scale} "
            f"(~{a.sim_seconds / self.scale / 60:.1f} min), {len(self.schedule)} faults, "
            f"{len(self.trace)} jobs")
        while self.sim_now() < a.sim_seconds:
            time.sleep(0.2)
        # Faults off; the drain: requests handled, agents settle.
        faults_end = time.time()
        self.schedule_done = True
        self.rules = []
        self.post_rules()
        self.buckets = []
        self.post_buckets()
        http(self.jenkins + "emulator/fault", "POST", {"groovy": None})
        self.keys_refused_until = 0.0
        self.write_keys(True)
        # At least `drain` seconds; then until the request queue is empty
        # and every valid request was built, up to `drain_max`.
        began = time.monotonic()
        while time.monotonic() < began + a.drain_max:
            if time.monotonic() > began + a.drain and self.requests_settled():
                break
            time.sleep(0.5)
        self.stop_cron.set()
        with self.cron_lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
        cron.join(60)
        time.sleep(1.0)
        self.finished.set()
        injector.join(10)
        watcher.join(120)
        clock.stop.set()
        sim = http(self.jenkins + "emulator/sim")
        for job in sim["jobs"]:
            if job.get("killed") is not None:
                job["killed_at_real"] = self.real_at(job["killed"])
            if job.get("started") is not None:
                job["started_at_real"] = self.real_at(job["started"])
        self.checker.finish(time.time(), sim["jobs"], drained_after=faults_end)
        self.report()
        with open(os.path.join(self.workdir, "checker.json"), "w") as out:
            json.dump(self.checker.state(), out, indent=1)
        return self.figures(sim, faults_end)

    def figures(self, sim, faults_end):
        c = self.checker
        jobs = [j for j in sim["jobs"] if not j.get("slipped")]
        waits = [j["started"] - j["enqueued"] for j in jobs
                 if j["started"] is not None and j["label"] not in UNSERVABLE]
        dumps = c.dumps
        return {
            "seed": self.args.seed,
            "sim_hours": sim["summary"]["sim_seconds"] / 3600,
            "fault_sim_hours": self.args.sim_seconds / 3600,
            "time_scale": self.scale,
            "real_minutes": (time.time() - self.origin) / 60,
            "passes": len(dumps), "whole_dumps": sum(d.whole for d in dumps),
            "runs": self.run_number, "kills": dict(self.kills),
            "faults_scheduled": {k: sum(e["kind"] == k for e in self.schedule) for k in self.fault_kinds},
            "faults_applied": dict(self.applied), "apply_errors": self.apply_errors,
            "violations": c.counts(), "violation_lines": self.violation_lines,
            "evidence": dict(c.evidence),
            "jobs": len(jobs), "jobs_started": sum(j["started"] is not None for j in jobs),
            "jobs_servable": sum(j["label"] not in UNSERVABLE for j in jobs),
            "wait_p50": percentile(waits, 0.5), "wait_p95": percentile(waits, 0.95),
            # The jobs that found no free executor when they arrived.
            "waited": len([w for w in waits if w > 1.0]),
            "waited_p50": percentile([w for w in waits if w > 1.0], 0.5),
            "waited_p95": percentile([w for w in waits if w > 1.0], 0.95),
            "builds_killed": sum(j.get("killed") is not None for j in sim["jobs"]),
            "slipped_builds": sum(1 for j in sim["jobs"] if j.get("slipped")),
            "slipped_killed": sum(1 for j in sim["jobs"] if j.get("slipped") and j.get("killed") is not None),
            "warned": len(c.warnings),
            "reclaim_killed": sum(1 for j in sim["jobs"]
                                  if j.get("killed") is not None and j.get("instance") in c.warnings),
            "sqs_requests": len(self.sqs_valid),
            "sqs_built": sum(1 for r in self.sqs_valid if c.builds.get(r)),
            "instances_seen": len(c.instances),
            # Agents that never became nodes and lived (in real time, as the
            # manager counts) past the zombie limit: what the hunt is judged on.
            "zombie_chances": sum(1 for i in sim["instances"] if i.get("no_boot")
                                  and i["active_seconds"] / self.scale > ZOMBIE_MINUTES * 60),
            "foreign": self.foreign,
        }

    def close(self):
        self.stop_cron.set()
        self.finished.set()
        with self.cron_lock:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "recorder"):
            self.recorder.close()
        self.services.close()


def markdown(results):
    """The figures as Markdown: one column per soak (faulted, baseline)."""
    names = list(results)
    first = results[names[0]]
    kinds = sorted(set().union(*(r["faults_scheduled"] for r in results.values())))
    rows = [
        ("seed", lambda r: r["seed"]),
        ("simulated hours (faults on / whole, drain included)",
         lambda r: f"{r['fault_sim_hours']:.2f} / {r['sim_hours']:.2f}"),
        ("real minutes (time scale)", lambda r: f"{r['real_minutes']:.1f} ({r['time_scale']:g})"),
        ("passes (dumps served; whole)", lambda r: f"{r['passes']}; {r['whole_dumps']}"),
        ("runs; kills", lambda r: f"{r['runs']}; {sum(r['kills'].values())} "
                                  f"({', '.join(f'{k} {v}' for k, v in sorted(r['kills'].items())) or '-'})"),
        ("jobs (started / servable / all)",
         lambda r: f"{r['jobs_started']} / {r['jobs_servable']} / {r['jobs']}"),
        ("time to agent (queued → build started), p50 / p95 sim s",
         lambda r: f"{fmt(r['wait_p50'])} / {fmt(r['wait_p95'])}"),
        ("… jobs that found no free executor on arrival: count, p50 / p95 sim s",
         lambda r: f"{r['waited']}, {fmt(r['waited_p50'])} / {fmt(r['waited_p95'])}"),
        ("builds killed: slipped onto a retiring node after its dump / reclaimed by EC2 / any other",
         lambda r: f"{r['slipped_killed']} of {r['slipped_builds']} slipped / "
                   f"{r.get('reclaim_killed', 0)} of {r.get('warned', 0)} warned agents / "
                   f"{r['builds_killed'] - r['slipped_killed'] - r.get('reclaim_killed', 0)}"),
        ("SQS requests built / sent", lambda r: f"{r['sqs_built']} / {r['sqs_requests']}"),
        ("instances seen", lambda r: r["instances_seen"]),
    ]
    for kind in kinds:
        rows.append((f"fault: {kind} (applied / scheduled)",
                     lambda r, k=kind: f"{done(r, k)} / {r['faults_scheduled'].get(k, 0)}"))
    for name in invariants.INVARIANTS:
        rows.append((f"violations: {name}", lambda r, n=name: r["violations"][n]))
    for key in sorted(first["evidence"]):
        rows.append((f"checked: {key}", lambda r, k=key: r["evidence"].get(k, 0)))
    lines = ["| figure | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for title, get in rows:
        lines.append(f"| {title} | " + " | ".join(str(get(results[n])) for n in names) + " |")
    return "\n".join(lines)


# Kinds whose effect is a kill -9: applied when the manager was killed, not
# when the kill was scheduled or its hook armed (a hook may never fire).
KILLS = ("kill", "kill_after_launch", "kill_after_stop")
def always(_result):
    return True


# What the checker must have judged at least once for a soak to mean
# anything: always, or when what makes it possible happened.
EVIDENCE_NEEDED = {"passes": always, "clean_env_passes": always, "agents_made": always, "cap_checks": always,
                   "cap_reached_readings": always, "calls_on_instances": always, "stops_checked": always,
                   "sqs_requests": always, "zombies_seen": lambda r: r["zombie_chances"] > 0,
                   "old_ami_checks": lambda r: done(r, "ami_rollout") > 0}


def done(result, kind):
    if kind in KILLS:
        return result["kills"].get(kind, 0)
    return result["faults_applied"].get(kind, 0)


def net_gaps(result, every_kind):
    """Why a soak without violations would still prove little: a fault that
    could not be applied, a kind that never happened in a run of every kind,
    an invariant the checker never had a chance to judge."""
    gaps = [f"a fault could not be applied: {e}" for e in result["apply_errors"]]
    for kind, scheduled in sorted(result["faults_scheduled"].items()):
        if every_kind and scheduled and not done(result, kind):
            gaps.append(f"fault {kind}: scheduled {scheduled}, never took effect")
    for key, needs in EVIDENCE_NEEDED.items():
        if needs(result) and not result["evidence"].get(key):
            gaps.append(f"the checker never judged {key}")
    return gaps


def fmt(value):
    return "—" if value is None else f"{value:.0f}"


def soak_once(args, faults, workdir):
    soak = Soak(args, faults, workdir)
    try:
        return soak.run()
    finally:
        soak.close()


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--binary", required=True, help="the slave_manager binary")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sim-minutes", type=float, default=240,
                        help="simulated minutes with faults (then a drain without)")
    parser.add_argument("--time-scale", type=float, default=20)
    parser.add_argument("--faults", default="all",
                        help="all, none, or a comma list of kinds: "
                             + ", ".join(k.name for k in soak_faults.KINDS))
    parser.add_argument("--every-kind", action="store_true",
                        help="every kind at least once, whatever the draw")
    parser.add_argument("--baseline", action="store_true",
                        help="then the same seed without faults, for the time-to-agent figures")
    parser.add_argument("--jobs-per-hour", type=float, default=240)
    parser.add_argument("--sqs-per-hour", type=float, default=30)
    # Caps the trace reaches often: the cap and make-room paths run.
    parser.add_argument("--on-demand-cap", type=int, default=4)
    parser.add_argument("--spot-cap", type=int, default=4)
    parser.add_argument("--starve-passes", type=int, default=3)
    parser.add_argument("--check-interval", type=float, default=None,
                        help="real seconds between the checker's reads of moto (default: the pass interval)")
    parser.add_argument("--drain", type=float, default=30.0,
                        help="real seconds without faults at the end, at least (agents settle)")
    parser.add_argument("--drain-max", type=float, default=240.0,
                        help="real seconds at most for the build-request queue to empty")
    parser.add_argument("--workdir", help="keep everything here (default: a temporary directory)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("--markdown", help="write the figures' table here")
    args = parser.parse_args(argv)
    args.sim_seconds = args.sim_minutes * 60
    if args.faults == "all":
        args.kinds = [k.name for k in soak_faults.KINDS]
    elif args.faults == "none":
        args.kinds = []
    else:
        args.kinds = args.faults.split(",")
        unknown = set(args.kinds) - set(soak_faults.BY_NAME)
        if unknown:
            parser.error(f"unknown fault kinds {sorted(unknown)}")
    args.binary = os.path.abspath(args.binary)
    return args


def main(argv):
    args = parse_args(argv)

    def leave(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)
    base = args.workdir or tempfile.mkdtemp(prefix="slave-manager-soak.")
    os.makedirs(base, exist_ok=True)
    results = {}
    try:
        plan = [("faults", args.kinds)] + ([("no faults", [])] if args.baseline else [])
        for name, kinds in plan:
            workdir = os.path.join(base, name.replace(" ", "-"))
            os.makedirs(workdir, exist_ok=False)
            log(f"{name}: in {workdir}")
            results[name] = soak_once(args, kinds, workdir)
    except (SoakError, subprocess.SubprocessError, OSError) as err:
        log(f"the soak could not run: {err}")
        return 2
    finally:
        if not (args.workdir or args.keep):
            shutil.rmtree(base, ignore_errors=True)
        else:
            log(f"kept {base}")
    table = markdown(results)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write(table + "\n")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=1)
    total = sum(sum(r["violations"].values()) for r in results.values())
    if total:
        log(f"{total} violation(s); replay with --seed {args.seed}")
        return 1
    gaps = net_gaps(results["faults"], args.every_kind)
    if gaps:
        for gap in gaps:
            log(f"NET GAP: {gap}")
        log(f"the soak held no violation but did not test what it claims; seed {args.seed}")
        return 3
    log("no violation")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
