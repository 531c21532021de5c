#!/usr/bin/env python3
"""A stand-in for the Jenkins master that slave_manager talks to.

No real Jenkins runs in tests or demos, so this serves the two faces of
Jenkins that the manager uses (SPEC A5.1, A11):

* HTTP, as a secured Jenkins answers anonymous users (see `HttpHandler`):
  `/login` names the SSH endpoint in `X-SSH-Endpoint` and the instance
  identity in `X-Instance-Identity`, the root and other pages answer 403
  without them (`--anonymous-read` grants Overall/Read to anonymous, as an
  open Jenkins does), `/jnlpJars/jenkins-cli.jar` serves a placeholder jar.
  `--tls-cert`/`--tls-key` serve it over HTTPS. Tests drive the emulator
  through `/emulator/...`; every other request is logged (`/emulator/requests`).
* SSH: the CLI. Its host key is the instance identity, an RSA key, as
  Jenkins' sshd module serves it; a test can make it serve another key (an
  impostor on the path, `POST /emulator/host-key`). Public-key auth for one
  user (its name matched ignoring
  case, as Jenkins' default user-id strategy does); each exec'd command line is
  split with a port of Jenkins' `hudson.util.QuotedStringTokenizer`, so a test
  can prove that the manager's quoting round-trips, and answered from the
  scenario: `groovy =` prints the dump, `build JOB` prints the job's output.

Every command is recorded (memory, and `--log` as JSON lines), with when its
connection was accepted and how long the command took. Once both servers
listen, one line `READY http=<port> ssh=<port>` goes to stdout.

With `--simulate` the emulator closes the loop (see `Simulation`): it follows
the agents in moto's EC2, registers their nodes after a boot delay, runs the
jobs of a trace on them and applies the idle policy (SPEC A6); the dump is
then made from that model, and `GET /emulator/sim` reports what happened.

Run: python3 tests/support/jenkins_emulator.py --user USER --authorized-keys FILE
         [--scenario FILE] [--log FILE] [--http-port N] [--ssh-port N]
         [--warning-line] [--anonymous-read] [--tls-cert FILE --tls-key FILE]
         [--simulate --moto-endpoint URL --environment FILE [--trace FILE]
          [--slave-name NAME] [--boot-delay S] [--time-scale X]
          [--idle-minutes M] [--poll-interval S] [--sim-out FILE]]
"""

import argparse
import base64
import hashlib
import heapq
import json
import signal
import socket
import ssl
import sys
import threading
import time
import urllib.parse
from collections import namedtuple
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paramiko
from cryptography.hazmat.primitives import serialization

HOST = "127.0.0.1"
JENKINS_VERSION = "2.479.3"
# Jenkins.SESSION_HASH: changes at each start of the master.
SESSION_HASH = hashlib.sha256(str(time.time()).encode()).hexdigest()[:8]
CERT_WARNING = ("Skipping HTTPS certificate checks altogether. "
                "Note that this is not secure at all.")
# An empty zip archive: a well-formed jar with nothing in it. The manager only
# downloads the jar; the `java` stand-in never opens it.
CLI_JAR = b"PK\x05\x06" + bytes(18)
GROOVY_FAULTS = ("fail", "garbage", "truncated", "hang", "denied")
HANG_SECONDS = 600
SCENARIO_KEYS = ("queue", "nodes", "jobs", "messages", "dumps")

# QuotedStringTokenizer's defaults: its blanks, and the only characters that a
# backslash escapes (before any other, the backslash stays in the word).
DELIMITERS = " \t\n\r"
ESCAPABLE = "\\\"' "


def tokenize(line):
    """Split a CLI command line into words exactly as Jenkins does.

    A port of `hudson.util.QuotedStringTokenizer.tokenize` with its default
    delimiters, quirks included, because the emulator is the judge of whether
    the manager's quoting survives Jenkins: a backslash that starts a word is
    an ordinary character, a backslash before anything but `\\ " '` or space
    stays in the word, a lone backslash at the very end disappears, and an
    unterminated quote still yields what was read.
    """
    words = []
    i = 0
    while i < len(line):
        word = []
        has_word = False
        quote = None          # the quote character we are inside, if any
        in_word = False       # past the first character of a word
        escape = False
        while i < len(line):
            c = line[i]
            i += 1
            if not in_word:
                if c in DELIMITERS:
                    continue
                in_word = True
                if c in "'\"":
                    quote = c
                else:
                    word.append(c)
                    has_word = True
                continue
            has_word = True
            if escape:
                escape = False
                if c not in ESCAPABLE:
                    word.append("\\")
                word.append(c)
            elif c == "\\":
                escape = True
            elif quote is not None:
                if c == quote:
                    quote = None
                else:
                    word.append(c)
            elif c in DELIMITERS:
                break
            elif c in "'\"":
                quote = c
            else:
                word.append(c)
        if has_word:
            words.append("".join(word))
    return words


class ScenarioError(ValueError):
    """A scenario or control request that does not have the documented shape."""


def check_scenario(scenario):
    """Return `scenario` with defaults filled in, or raise ScenarioError.

    Only the outer shape is checked: the values inside queue items and nodes
    are served as given, so a test can feed the manager a malformed dump on
    purpose. Unknown keys are refused because they are nearly always typos.
    """
    if not isinstance(scenario, dict):
        raise ScenarioError("a scenario is a JSON object")
    unknown = sorted(set(scenario) - set(SCENARIO_KEYS))
    if unknown:
        raise ScenarioError(f"unknown scenario keys {unknown}; "
                            f"known: {list(SCENARIO_KEYS)}")
    checked = {
        "queue": scenario.get("queue", []),
        "nodes": scenario.get("nodes", []),
        "jobs": scenario.get("jobs", {}),
        "messages": scenario.get("messages", []),
        "dumps": scenario.get("dumps"),
    }
    for key in ("queue", "nodes", "messages"):
        if not isinstance(checked[key], list):
            raise ScenarioError(f"'{key}' must be a list")
    if not isinstance(checked["jobs"], dict):
        raise ScenarioError("'jobs' must be an object of job name -> {output}")
    for name, job in checked["jobs"].items():
        if not (isinstance(job, dict) and isinstance(job.get("output", ""), str)
                and isinstance(job.get("exit", 0), int)):
            raise ScenarioError(f"job '{name}' must be {{\"output\": str, "
                                f"\"exit\": int (optional)}}")
    dumps = checked["dumps"]
    if dumps is not None and not (
            isinstance(dumps, list) and dumps
            and all(isinstance(d, dict) for d in dumps)):
        raise ScenarioError("'dumps' must be a non-empty list of dump objects")
    return checked


class Jenkins:
    """What the emulated Jenkins knows and has been asked; shared by threads.

    The SSH side reads the scenario and appends to the command log while the
    HTTP side lets a test replace the scenario, inject faults and read the
    log, so everything goes through one lock.
    """

    def __init__(self, scenario, user, authorized_keys, log_path,
                 warning_line, stop, simulation=None):
        self.user = user
        self.simulation = simulation
        self.authorized_keys = authorized_keys
        self.warning_line = warning_line
        self.stop = stop
        # Jenkins' instance identity: a 2048-bit RSA key pair (the
        # instance-identity module's InstanceIdentity), which the sshd module
        # serves as the SSH host key and /login publishes.
        self.identity = paramiko.RSAKey.generate(2048)
        self._impostor = None
        self._serve_impostor = False
        self._requests = []
        self.ssh_port = None
        self._lock = threading.Lock()
        self._log_path = log_path
        self._log = []
        self._fault = None
        self._fault_left = None
        self._scenario = check_scenario(scenario)
        self._dumps_served = 0

    def replace_scenario(self, scenario):
        """Install a new scenario; a `dumps` sequence starts again at its first."""
        checked = check_scenario(scenario)
        with self._lock:
            self._scenario = checked
            self._dumps_served = 0

    def state(self):
        """The scenario as served now, how many dumps went out whole, and
        the pending fault."""
        with self._lock:
            state = {k: v for k, v in self._scenario.items() if v is not None}
            state["dumps_served"] = self._dumps_served
            state["simulate"] = self.simulation is not None
            state["fault"] = {"groovy": self._fault, "count": self._fault_left}
            state["host_key"] = ("impostor" if self._serve_impostor
                                 else "identity")
            return state

    def set_fault(self, request):
        """Make the next groovy calls misbehave: `count` of them, or all until
        a request with `"groovy": null` clears it. `denied` answers as Jenkins
        does to a user without Overall/Administer."""
        if not isinstance(request, dict):
            raise ScenarioError("a fault is {\"groovy\": MODE|null, \"count\": N}")
        mode = request.get("groovy")
        count = request.get("count")
        if mode is not None and mode not in GROOVY_FAULTS:
            raise ScenarioError(f"groovy fault must be one of {GROOVY_FAULTS} or null")
        if count is not None and not (isinstance(count, int) and count > 0):
            raise ScenarioError("count must be a positive integer")
        with self._lock:
            self._fault = mode
            self._fault_left = count if mode is not None else None

    def take_fault(self):
        """The fault that applies to this groovy call, counting it down."""
        with self._lock:
            mode = self._fault
            if mode is not None and self._fault_left is not None:
                self._fault_left -= 1
                if self._fault_left == 0:
                    self._fault = self._fault_left = None
            return mode

    def next_dump(self, whole=True, words=()):
        """The dump JSON that `groovy =` prints.

        With a `dumps` list the Nth dump served whole is dumps[min(N, len-1)];
        calls that a fault spoiled (`whole=False` for a truncated one) do not
        advance it, so a test can script "pass 1 sees A, the dump fails once,
        pass 2 sees B". With a simulation the dump is the model's, made with
        the command's arguments `words`; the scenario's messages are added.
        """
        simulated = self.simulation.dump(words) if self.simulation else None
        with self._lock:
            scenario = self._scenario
            if simulated is not None:
                dump = simulated
                dump["messages"] = dump["messages"] + list(scenario["messages"])
            elif scenario["dumps"] is not None:
                dumps = scenario["dumps"]
                dump = dumps[min(self._dumps_served, len(dumps) - 1)]
            else:
                dump = {"build_queue": scenario["queue"],
                        "slave_queue": scenario["nodes"],
                        "messages": scenario["messages"]}
            self._dumps_served += whole
        return json.dumps(dump)

    def job(self, name):
        """The scenario's job of that name, or None."""
        with self._lock:
            return self._scenario["jobs"].get(name)

    def record(self, entry):
        """Append one command to the in-memory log and to the log file."""
        line = json.dumps(entry)
        with self._lock:
            self._log.append(entry)
            if self._log_path:
                with open(self._log_path, "a", encoding="utf-8") as log:
                    log.write(line + "\n")

    def log(self):
        """A copy of the command log, oldest first."""
        with self._lock:
            return list(self._log)

    def clear_log(self):
        """Forget the in-memory log (the file keeps its history)."""
        with self._lock:
            self._log.clear()

    def encoded_identity(self):
        """`X-Instance-Identity`: the base64 of the identity's public key in
        X.509 SubjectPublicKeyInfo DER (`RSAPublicKey.getEncoded()`), on one
        line, as `InstanceIdentity.getEncodedPublicKey` writes it."""
        der = self.identity.key.public_key().public_bytes(
            serialization.Encoding.DER,
            serialization.PublicFormat.SubjectPublicKeyInfo)
        return base64.b64encode(der).decode()

    def host_key(self):
        """Which key the SSH side presents now, and the key: the identity,
        or an impostor's (another RSA key, made once) while a test asks."""
        with self._lock:
            if not self._serve_impostor:
                return "identity", self.identity
            if self._impostor is None:
                self._impostor = paramiko.RSAKey.generate(2048)
            return "impostor", self._impostor

    def set_host_key(self, request):
        """`{"serve": "identity"|"impostor"}`: which key new SSH connections
        see. The HTTP side keeps publishing the identity: the impostor sits
        on the SSH path only, as a man in the middle would."""
        serve = request.get("serve") if isinstance(request, dict) else None
        if serve not in ("identity", "impostor"):
            raise ScenarioError('a host key request is {"serve": '
                                '"identity"|"impostor"}')
        with self._lock:
            self._serve_impostor = serve == "impostor"

    def note_request(self, entry):
        """Remember one HTTP request or SSH authentication attempt."""
        entry["time"] = time.time()
        with self._lock:
            self._requests.append(entry)

    def requests(self):
        """HTTP requests (not to /emulator/) and SSH authentication attempts,
        oldest first."""
        with self._lock:
            return list(self._requests)


# ------------------------------------------------------------- simulation

KILLED = "groovy_script_killed_me"
OLD_AMI = "groovy_script_says_old_ami"
CREATED_BY = "Created by Swarm"
SIM_ROLE_SESSION = "jenkins-emulator-sim"
ACTIVE_STATES = ("pending", "running")
# States in which an instance counts against the manager's caps.
CAPPED_STATES = ("pending", "running", "stopping", "stopped")
TICK_SECONDS = 0.02


def percentile(values, fraction):
    """Nearest-rank percentile of `values` (None when there are none)."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def parameters_text(parameters):
    """A trace job's parameters as the dump prints them: Jenkins'
    Queue.Item.getParams(), a newline before each K=V; NONE when none."""
    if parameters is None or parameters == {}:
        return "NONE"
    if isinstance(parameters, dict):
        return "".join(f"\n{k}={v}" for k, v in parameters.items())
    return str(parameters)


def load_trace(path):
    """The trace: a JSON list of {at_seconds, job, label, duration_seconds,
    parameters?}, sorted by arrival. ScenarioError on a bad shape."""
    if path is None:
        return []
    with open(path, encoding="utf-8") as source:
        trace = json.load(source)
    if not isinstance(trace, list):
        raise ScenarioError("a trace is a JSON list of jobs")
    jobs = []
    for number, entry in enumerate(trace):
        if not isinstance(entry, dict):
            raise ScenarioError(f"trace entry {number} is not an object")
        try:
            at = float(entry["at_seconds"])
            duration = float(entry["duration_seconds"])
            job, label = entry["job"], entry["label"]
        except (KeyError, TypeError, ValueError) as err:
            raise ScenarioError(
                f"trace entry {number} needs at_seconds, job, label and "
                f"duration_seconds: {err!r}") from err
        params = entry.get("parameters")
        if not (isinstance(job, str) and job and isinstance(label, str)
                and at >= 0 and duration >= 0
                and (params is None or isinstance(params, (dict, str)))):
            raise ScenarioError(f"trace entry {number} has a bad value")
        jobs.append({"at": at, "job": job, "label": label,
                     "duration": duration,
                     "parameters": parameters_text(params)})
    jobs.sort(key=lambda j: j["at"])
    return jobs


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


class SimClock:
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

    @property
    def started(self):
        return self._origin is not None

    def now(self):
        if self._origin is None:
            return 0.0
        return (time.monotonic() - self._origin) * self.scale

    def epoch_ms(self, sim_seconds):
        """A simulated instant as Jenkins prints times (epoch milliseconds)."""
        origin = self.origin_epoch if self.origin_epoch is not None else time.time()
        return int((origin + sim_seconds) * 1000)


class SimInstance:
    """One agent instance as the simulation sees it in moto."""

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
        self.boot_at = None         # when its node registers, while active
        self.intervals = []         # closed [start, end] active intervals
        self.starts = 0             # times it went from stopped to active
        self.stops = 0
        self.terminated_at = None
        self.node = None            # its node's name, once registered

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

    def active_seconds(self, now):
        total = sum(end - start for start, end in self.intervals)
        if self.running_since is not None:
            total += max(0.0, now - self.running_since)
        return total

    def billed_seconds(self, now):
        """EC2's per-second billing with its one-minute minimum per start."""
        spans = [end - start for start, end in self.intervals]
        if self.running_since is not None:
            spans.append(max(0.0, now - self.running_since))
        return sum(max(60.0, span) for span in spans)


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
    """A closed loop between the manager and a simulated Jenkins.

    A poller follows our agents (Name tag = slave name) in moto's EC2 in every
    env of environment.json, through the role the manager assumes. An
    instance active for `boot_delay` simulated seconds gets its node, as the
    Swarm client would register it; a stopped or terminated instance's node
    goes (a build on it is killed). The trace's jobs enter the queue at their
    time, take a free executor of an online node that carries their label
    (exact match; the node they last ran on first, else Jenkins-like
    consistent hashing) and run for their duration. The dump applies the idle
    policy of get_queue_jobs.groovy (SPEC A6) with the command's arguments.

    Simulated time runs `time_scale` times faster than real time, from the
    first dump on. Everything the benchmark needs is recorded: per job its
    enqueue, first dump, start and node; per instance its active intervals
    (billed instance-minutes); peaks per env.
    """

    def __init__(self, args):
        with open(args.environment, encoding="utf-8") as source:
            environment = json.load(source)
        try:
            self.role = environment["jenkins-master"]["jenkins-master-sg-name"]
            self.envs = {name: (env["account-id"], env["region"])
                         for name, env in environment["environments"].items()}
        except (KeyError, TypeError, AttributeError) as err:
            raise ScenarioError(f"{args.environment}: not an environment.json "
                                f"(SPEC A3): missing {err}") from err
        self.endpoint = args.moto_endpoint
        self.slave_name = args.slave_name
        self.boot_delay = args.boot_delay
        self.idle_minutes = args.idle_minutes
        self.poll_interval = args.poll_interval
        self.clock = SimClock(args.time_scale)
        self.trace = load_trace(args.trace)
        self._lock = threading.Lock()
        self._stop = threading.Event()
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
        self._clients = {}
        self._baseline_done = False

    # -- moto side ---------------------------------------------------------

    def _client(self, env):
        """An EC2 client in the env's account, by the manager's role."""
        if env not in self._clients:
            import boto3  # only --simulate needs boto3
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
                RoleSessionName=SIM_ROLE_SESSION)["Credentials"]
            self._clients[env] = boto3.client(
                "ec2", region_name=region, config=config,
                endpoint_url=self.endpoint,
                aws_access_key_id=creds["AccessKeyId"],
                aws_secret_access_key=creds["SecretAccessKey"],
                aws_session_token=creds["SessionToken"])
        return self._clients[env]

    def _describe(self, env):
        pages = self._client(env).get_paginator("describe_instances").paginate(
            Filters=[{"Name": "tag:Name", "Values": [self.slave_name]}])
        return [instance for page in pages
                for reservation in page["Reservations"]
                for instance in reservation["Instances"]]

    def poll_once(self):
        """Read every env once and fold what changed into the model."""
        started = time.monotonic()
        for env in self.envs:
            try:
                described = self._describe(env)
            except Exception as err:  # noqa: BLE001 - any failure: next poll
                with self._lock:
                    self.poll_errors += 1
                print(f"jenkins-emulator: sim: describe in {env} failed: "
                      f"{err!r}", file=sys.stderr)
                continue
            with self._lock:
                self._apply(env, described, self.clock.now())
        with self._lock:
            self.polls += 1
            self.poll_seconds.append(time.monotonic() - started)
            self._baseline_done = True

    def _apply(self, env, described, now):
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
                instance.boot_at = now + (0 if preexisting else self.boot_delay)
                if before in ("stopped", "stopping"):
                    instance.starts += 1
            return
        if instance.running_since is not None:
            instance.intervals.append([instance.running_since, now])
            instance.running_since = None
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

    # -- Jenkins side --------------------------------------------------------

    def _remove_node(self, instance, now):
        node = self.nodes.pop(instance.node, None)
        instance.node = None
        if node is None:
            return
        for job in node.busy:
            job["killed"] = now

    def _register(self, instance, at):
        node = SimNode(instance, at)
        stale = self.nodes.get(node.name)
        if stale is not None:
            self._remove_node(self.instances[stale.instance_id], at)
        self.nodes[node.name] = node
        instance.node = node.name

    def _advance(self, now):
        """Arrivals, completions, registrations and scheduling up to now."""
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
        """The dump for `groovy = WORDS…`, with the idle policy applied."""
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

    # -- running and reporting ----------------------------------------------

    def start(self):
        """Poll once (what exists now is pre-existing), then keep polling and
        ticking in the background."""
        self.poll_once()
        threading.Thread(target=self._poll_loop, daemon=True).start()
        threading.Thread(target=self._tick_loop, daemon=True).start()

    def stop(self):
        self._stop.set()

    def _poll_loop(self):
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll_once()
            self._stop.wait(max(0.0, self.poll_interval
                                - (time.monotonic() - started)))

    def _tick_loop(self):
        while not self._stop.wait(TICK_SECONDS):
            with self._lock:
                self._advance(self.clock.now())

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
                "terminated_at": i.terminated_at,
                "active_seconds": i.active_seconds(now),
                "billed_seconds": i.billed_seconds(now),
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
        summary = {
            "sim_seconds": now,
            "time_scale": self.clock.scale,
            "origin_epoch": self.clock.origin_epoch,
            "boot_delay": self.boot_delay,
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
            "nodes": nodes,
            "nodes_online": online,
            "peaks": peaks,
            "dumps": dumps,
            "polls": polls,
            "poll_errors": poll_errors,
            "poll_seconds_median": percentile(poll_seconds, 0.5),
        }
        summary["done"] = (summary["arrived_all"] and queued == 0
                           and summary["running"] == 0)
        return {"summary": summary, "jobs": jobs, "instances": instances}


def load_authorized_keys(path):
    """The key blobs of an OpenSSH authorized_keys file.

    Re-read at every attempt, so a test can register a key (as a user would
    on Jenkins' /me/configure page) while the emulator runs.
    """
    blobs = set()
    try:
        with open(path, encoding="utf-8") as keys:
            lines = keys.readlines()
    except OSError as err:
        print(f"jenkins-emulator: cannot read {path}: {err}", file=sys.stderr)
        return blobs
    for line in lines:
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        # Skip an options prefix: the key type is the first word that is one.
        for kind, blob in zip(fields, fields[1:]):
            if kind.startswith(("ssh-", "ecdsa-", "sk-")):
                blobs.add(base64.b64decode(blob))
                break
    return blobs


class SshSession(paramiko.ServerInterface):
    """Authentication and channel policy of one SSH connection.

    Like Jenkins' SSH CLI: public keys only, one session channel, and exec
    requests only (no shell, no pty). The exec'd command is handed to the
    connection's thread through `command`/`exec_requested`.
    """

    def __init__(self, jenkins, host_key="identity"):
        self.jenkins = jenkins
        self.host_key = host_key
        self.username = None
        self.command = None
        self.exec_requested = threading.Event()

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        # A client that checked our host key and refused it never gets here.
        self.jenkins.note_request({"kind": "ssh-auth", "user": username,
                                   "host_key": self.host_key})
        blobs = load_authorized_keys(self.jenkins.authorized_keys)
        # Jenkins' default IdStrategy ignores case: `Slave-Manager` logs in
        # as the user `slave-manager`, and who-am-i prints the latter.
        same_user = username.lower() == self.jenkins.user.lower()
        if same_user and key.asbytes() in blobs:
            self.username = username
            return paramiko.AUTH_SUCCESSFUL
        print(f"jenkins-emulator: refused {key.get_name()} key for user "
              f"{username!r}", file=sys.stderr)
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind, chanid):
        if kind == "session":
            return paramiko.OPEN_SUCCEEDED
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

    def check_channel_exec_request(self, channel, command):
        if self.command is not None:
            return False
        self.command = command
        self.exec_requested.set()
        return True


# What a command answers: its output, its exit status (None: the client went
# away before there was one) and how much of stdin it read.
Reply = namedtuple("Reply", "stdout stderr exit stdin_bytes",
                   defaults=("", "", 0, 0))


def read_stdin(channel):
    """Everything the client sends until it closes its stdin."""
    chunks = []
    while True:
        data = channel.recv(65536)
        if not data:
            return b"".join(chunks)
        chunks.append(data)


def wait_while_connected(channel, jenkins, seconds):
    """Sleep up to `seconds`; True if the client is still there afterwards.

    Used by the `hang` fault: it ends early when the manager gives up (kills
    its client) or the emulator stops, so the log shows the abandoned call.
    """
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if channel.closed or not channel.get_transport().is_active():
            return False
        if jenkins.stop.wait(0.2):
            return False
    return True


def cmd_groovy(jenkins, argv, channel):
    """`groovy = ARGS…`: read the script from stdin, print the dump."""
    if len(argv) < 2:
        return Reply(stderr='ERROR: Argument "SCRIPT" is required\n', exit=2)
    if argv[1] != "=":
        return Reply(stderr='ERROR: only "=" (read the script from stdin) '
                     'is supported here\n', exit=3)
    # Read before any answer, even a refusal, so the client's write of the
    # script never meets a closed channel.
    script = read_stdin(channel)
    fault = jenkins.take_fault()
    if fault == "denied":
        # GroovyCommand checks Jenkins.ADMINISTER; CLICommand answers an
        # AccessDeniedException with exit status 6 and this message.
        return Reply(stderr=f"\nERROR: {jenkins.user} is missing the "
                     "Overall/Administer permission\n",
                     exit=6, stdin_bytes=len(script))
    if fault == "fail":
        return Reply(stderr="ERROR: groovy.lang.MissingPropertyException: No "
                     "such property: emulatorFault for class: Script1\n",
                     exit=1, stdin_bytes=len(script))
    if fault == "garbage":
        return Reply(stdout="<html><body>Oops, this is not JSON</body></html>\n",
                     stdin_bytes=len(script))
    if fault == "hang" and not wait_while_connected(channel, jenkins,
                                                    HANG_SECONDS):
        return Reply(exit=None, stdin_bytes=len(script))
    if fault == "truncated":
        dump = jenkins.next_dump(whole=False, words=argv[2:])
        text = dump[:len(dump) // 2]
    else:
        text = jenkins.next_dump(words=argv[2:]) + "\n"
    if jenkins.warning_line:
        text = CERT_WARNING + "\n" + text
    return Reply(stdout=text, stdin_bytes=len(script))


BUILD_FLAGS = ("-s", "-v", "-f", "-w", "-c")


def cmd_build(jenkins, argv, channel):
    """`build JOB [-s] [-v] [-p K=V]…`: print the scenario job's output."""
    job_name = None
    words = iter(argv[1:])
    for word in words:
        if word in BUILD_FLAGS:
            continue
        if word == "-p":
            param = next(words, None)
            if param is None or "=" not in param:
                return Reply(stderr='ERROR: Option "-p" takes an operand '
                             'KEY=VALUE\n', exit=2)
        elif word.startswith("-"):
            return Reply(stderr=f'ERROR: "{word}" is not a valid option\n',
                         exit=2)
        elif job_name is None:
            job_name = word
        else:
            return Reply(stderr=f"ERROR: Too many arguments: {word}\n", exit=2)
    if job_name is None:
        return Reply(stderr='ERROR: Argument "JOB" is required\n', exit=2)
    job = jenkins.job(job_name)
    if job is None:
        return Reply(stderr=f"ERROR: No such job '{job_name}'\n", exit=3)
    output = job.get("output", "")
    if output and not output.endswith("\n"):
        output += "\n"
    return Reply(stdout=output, exit=job.get("exit", 0))


def cmd_who_am_i(jenkins, argv, channel):
    """`who-am-i`: the connected user, as Jenkins' WhoAmICommand prints it
    (its id as Jenkins stores it, whatever case the client logged in with)."""
    return Reply(stdout=f"Authenticated as: {jenkins.user}\n"
                        "Authorities:\n  authenticated\n")


COMMANDS = {"groovy": cmd_groovy, "build": cmd_build, "who-am-i": cmd_who_am_i}


def run_command(jenkins, session, channel, connected):
    """Answer one exec request and record it in the command log, with when
    the connection was accepted (`connected`), the command arrived (`time`)
    and its answer was sent (`finished`), all Unix times."""
    started = time.time()
    raw = session.command.decode("utf-8", errors="replace")
    argv = tokenize(raw)
    name = argv[0] if argv else ""
    handler = COMMANDS.get(name)
    if handler is None:
        reply = Reply(stderr=f"ERROR: No such command {name}\n", exit=255)
    else:
        reply = handler(jenkins, argv, channel)
    if reply.exit is not None:
        if reply.stdout:
            channel.sendall(reply.stdout.encode())
        if reply.stderr:
            channel.sendall_stderr(reply.stderr.encode())
        channel.send_exit_status(reply.exit)
        channel.shutdown_write()
        channel.close()
    jenkins.record({"time": started, "user": session.username, "raw": raw,
                    "argv": argv, "stdin_bytes": reply.stdin_bytes,
                    "exit": reply.exit, "connected": connected,
                    "finished": time.time()})


def serve_ssh_connection(jenkins, sock, connected):
    """Run one client connection: handshake, auth, one exec, then goodbye."""
    transport = paramiko.Transport(sock)
    try:
        served, key = jenkins.host_key()
        transport.add_server_key(key)
        session = SshSession(jenkins, served)
        transport.start_server(server=session)
        channel = transport.accept(timeout=30)
        if channel is None or not session.exec_requested.wait(timeout=30):
            return
        run_command(jenkins, session, channel, connected)
        # Let the client hang up first, so it never sees the connection drop
        # before it has read the exit status.
        transport.join(timeout=10)
    except (paramiko.SSHException, EOFError, OSError) as err:
        print(f"jenkins-emulator: ssh connection ended: {err!r}",
              file=sys.stderr)
    finally:
        transport.close()


def serve_ssh(jenkins, listener, nodelay=False):
    """Accept SSH clients for ever, one thread each."""
    while True:
        try:
            sock, _ = listener.accept()
        except OSError:
            return  # the listener was closed: we are stopping
        if nodelay:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=serve_ssh_connection,
                         args=(jenkins, sock, time.time()),
                         daemon=True).start()


class HttpHandler(BaseHTTPRequestHandler):
    """Jenkins' HTTP face, as an anonymous client sees it, plus the control
    endpoints for tests.

    GET    /login                     the login page, with X-SSH-Endpoint
                                      and X-Instance-Identity
    GET    /jnlpJars/jenkins-cli.jar  the placeholder jar
    GET    /emulator/log              the command log (JSON list)
    DELETE /emulator/log              forget the log
    GET    /emulator/requests         HTTP requests (but these) and SSH
                                      authentication attempts (JSON list)
    POST   /emulator/host-key         {"serve": "identity"|"impostor"}
    GET    /emulator/state            the scenario being served
    PUT    /emulator/state            replace it (same shape as --scenario)
    POST   /emulator/fault            {"groovy": MODE|null, "count": N}
    GET    /emulator/sim              the simulation's figures (--simulate)
    GET    anything else              403 (a page with X-SSH-Endpoint with
                                      --anonymous-read)

    As in Jenkins: the sshd plugin's `PortAdvertiser` (a PageDecorator) adds
    X-SSH-Endpoint through its httpHeaders fragment, and the
    instance-identity module's `PageDecoratorImpl` X-Instance-Identity
    through its own; only pages drawn with the layout include those
    fragments, and login.jelly ("needed for cli"). Anonymous
    users usually lack Overall/Read, so any other page is refused by
    `HudsonAuthenticationEntryPoint`: 403 with `Functions.advertiseHeaders`
    (X-Hudson, X-Jenkins, X-Jenkins-Session) and the diagnosis headers, but
    no X-SSH-Endpoint. `/login` and `/jnlpJars/` are always readable
    (`Jenkins.ALWAYS_READABLE_PATHS`, `getUnprotectedRootActions`).
    """

    def version_string(self):
        return "Jetty(12.0.16)"

    @property
    def jenkins(self):
        return self.server.jenkins

    def log_message(self, format, *args):
        """Silence the access log: the SSH command log is what tests read."""

    def advertised_headers(self):
        """`Functions.advertiseHeaders`: how clients recognise Jenkins."""
        return [("X-Hudson", "1.395"), ("X-Jenkins", JENKINS_VERSION),
                ("X-Jenkins-Session", SESSION_HASH)]

    def page_headers(self):
        """The headers of a page drawn with the layout, or of /login."""
        return self.advertised_headers() + [
            ("X-SSH-Endpoint", f"{HOST}:{self.jenkins.ssh_port}"),
            ("X-Instance-Identity", self.jenkins.encoded_identity())]

    def note(self):
        """Log a request that is not one of the test's control requests."""
        if not self.path.startswith("/emulator/"):
            self.jenkins.note_request({"kind": "http", "method": self.command,
                                       "path": self.path})

    def send_body(self, status, body, content_type, headers=()):
        """Send a complete answer (headers only for HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, value, status=HTTPStatus.OK):
        self.send_body(status, json.dumps(value).encode(), "application/json")

    def send_page(self, title):
        page = (f"<html><head><title>{title} [Jenkins]</title></head>"
                f"<body>Jenkins {JENKINS_VERSION} (emulated)</body></html>")
        self.send_body(HTTPStatus.OK, page.encode(), "text/html;charset=utf-8",
                       self.page_headers())

    def send_authentication_required(self, path):
        """What HudsonAuthenticationEntryPoint answers an anonymous user."""
        login = f"/login?from={urllib.parse.quote(path, safe='')}"
        page = (f"<html><head><meta http-equiv='refresh' "
                f"content='1;url={login}'/></head>"
                f"<body>Authentication required\n<!--\n"
                f"anonymous is missing the Overall/Read permission\n-->\n\n"
                f"</body></html>")
        headers = self.advertised_headers() + [
            ("X-You-Are-Authenticated-As", "anonymous"),
            ("X-You-Are-In-Group-Disabled",
             "JENKINS-39402: use -Dhudson.security.AccessDeniedException2."
             "REPORT_GROUP_HEADERS=true or use /whoAmI to diagnose"),
            ("X-Required-Permission", "hudson.model.Hudson.Read"),
            ("X-Permission-Implied-By", "hudson.security.Permission.GenericRead"),
            ("X-Permission-Implied-By", "hudson.model.Hudson.Administer")]
        self.send_body(HTTPStatus.FORBIDDEN, page.encode(),
                       "text/html;charset=UTF-8", headers)

    def read_json(self):
        """The request body as JSON; ScenarioError if it is not JSON."""
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length))
        except ValueError as err:
            raise ScenarioError(f"body is not JSON: {err}") from err

    def do_GET(self):
        self.note()
        path = self.path.split("?", 1)[0]
        if path == "/jnlpJars/jenkins-cli.jar":
            self.send_body(HTTPStatus.OK, CLI_JAR, "application/java-archive")
        elif path == "/emulator/log":
            self.send_json(self.jenkins.log())
        elif path == "/emulator/state":
            self.send_json(self.jenkins.state())
        elif path == "/emulator/requests":
            self.send_json(self.jenkins.requests())
        elif path == "/emulator/sim":
            if self.jenkins.simulation is None:
                self.send_json({"error": "not simulating (start with "
                                "--simulate)"}, HTTPStatus.NOT_FOUND)
            else:
                self.send_json(self.jenkins.simulation.stats())
        elif path.startswith("/emulator/"):
            self.send_json({"error": "no such endpoint"}, HTTPStatus.NOT_FOUND)
        elif path == "/login" or path.startswith("/login/"):
            self.send_page("Sign in")
        elif self.server.anonymous_read:
            self.send_page("Dashboard")
        else:
            self.send_authentication_required(self.path)

    do_HEAD = do_GET

    def do_PUT(self):
        self.note()
        if self.path != "/emulator/state":
            self.send_json({"error": "no such endpoint"}, HTTPStatus.NOT_FOUND)
            return
        self.apply(self.jenkins.replace_scenario)

    def do_POST(self):
        self.note()
        if self.path == "/emulator/host-key":
            self.apply(self.jenkins.set_host_key)
        elif self.path == "/emulator/fault":
            self.apply(self.jenkins.set_fault)
        else:
            self.send_json({"error": "no such endpoint"}, HTTPStatus.NOT_FOUND)

    def do_DELETE(self):
        self.note()
        if self.path != "/emulator/log":
            self.send_json({"error": "no such endpoint"}, HTTPStatus.NOT_FOUND)
            return
        self.jenkins.clear_log()
        self.send_json([])

    def apply(self, change):
        """Feed the JSON body to `change`; answer the new state or a 400."""
        try:
            change(self.read_json())
        except ScenarioError as err:
            self.send_json({"error": str(err)}, HTTPStatus.BAD_REQUEST)
            return
        self.send_json(self.jenkins.state())


class TlsHttpServer(ThreadingHTTPServer):
    """The HTTP side over TLS. The handshake runs in the request's own
    thread, so a client that refuses the certificate (and hangs up) or never
    speaks cannot stall the accept loop; a failed handshake is reported on
    stderr, as Jetty logs it."""

    def __init__(self, address, handler, context):
        super().__init__(address, handler)
        self.context = context

    def get_request(self):
        sock, address = super().get_request()
        return (self.context.wrap_socket(sock, server_side=True,
                                         do_handshake_on_connect=False),
                address)

    def finish_request(self, request, client_address):
        request.settimeout(30)
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as err:
            print(f"jenkins-emulator: TLS handshake failed: {err}",
                  file=sys.stderr)
            return
        request.settimeout(None)
        super().finish_request(request, client_address)


def load_scenario(path):
    """The scenario file's content; no file means an idle Jenkins."""
    if path is None:
        return {}
    with open(path, encoding="utf-8") as scenario:
        return json.load(scenario)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", required=True,
                        help="the only Jenkins user that may log in over SSH")
    parser.add_argument("--authorized-keys", required=True, metavar="FILE",
                        help="OpenSSH public keys registered for that user")
    parser.add_argument("--scenario", metavar="FILE",
                        help="JSON: queue, nodes, jobs, messages or dumps")
    parser.add_argument("--log", metavar="FILE",
                        help="also append each command as a JSON line here")
    parser.add_argument("--http-port", type=int, default=0,
                        help="0 (default) picks a free port")
    parser.add_argument("--ssh-port", type=int, default=0,
                        help="0 (default) picks a free port")
    parser.add_argument("--warning-line", action="store_true",
                        help="print the jar's HTTPS warning line before the dump")
    parser.add_argument("--anonymous-read", action="store_true",
                        help="grant anonymous users Overall/Read: every page "
                             "then carries X-SSH-Endpoint (by default only "
                             "/login does, as on a secured Jenkins)")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="serve HTTPS with this PEM certificate (chain)")
    parser.add_argument("--tls-key", metavar="FILE",
                        help="the private key of --tls-cert")
    parser.add_argument("--tcp-nodelay", action="store_true",
                        help="set TCP_NODELAY on SSH connections (off by "
                             "default: small writes then wait for the "
                             "client's delayed ACK, as Nagle's algorithm has it)")
    sim = parser.add_argument_group(
        "closed-loop simulation",
        "follow moto's EC2, register agents' nodes, run a trace's jobs on "
        "them; the dump then comes from that model")
    sim.add_argument("--simulate", action="store_true",
                     help="turn the simulation on")
    sim.add_argument("--moto-endpoint", metavar="URL",
                     help="moto's server (needed with --simulate)")
    sim.add_argument("--environment", metavar="FILE",
                     help="environment.json naming the envs (needed with "
                          "--simulate)")
    sim.add_argument("--slave-name", default="jslave-in-house",
                     help="Name tag of our agents (default jslave-in-house)")
    sim.add_argument("--trace", metavar="FILE",
                     help="JSON list of {at_seconds, job, label, "
                          "duration_seconds, parameters?}")
    sim.add_argument("--boot-delay", type=float, default=60.0,
                     metavar="SECONDS",
                     help="simulated seconds from start to node (default 60)")
    sim.add_argument("--time-scale", type=float, default=1.0, metavar="X",
                     help="simulated seconds per real second (default 1)")
    sim.add_argument("--idle-minutes", type=int, default=45, metavar="M",
                     help="idle limit when the groovy command gives no "
                          "idle_minutes= word (default 45)")
    sim.add_argument("--poll-interval", type=float, default=0.2,
                     metavar="SECONDS",
                     help="real seconds between reads of moto (default 0.2)")
    sim.add_argument("--sim-out", metavar="FILE",
                     help="write the simulation's figures here at exit")
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.simulate:
        if not (args.moto_endpoint and args.environment):
            parser.error("--simulate needs --moto-endpoint and --environment")
        if args.time_scale <= 0 or args.boot_delay < 0 or args.poll_interval <= 0:
            parser.error("--time-scale and --poll-interval must be positive, "
                         "--boot-delay not negative")
    return args


def main(argv):
    args = parse_args(argv)
    stop = threading.Event()
    simulation = None
    if args.simulate:
        try:
            simulation = Simulation(args)
        except (OSError, ValueError) as err:
            print(f"jenkins-emulator: cannot simulate: {err}", file=sys.stderr)
            return 2
    try:
        jenkins = Jenkins(load_scenario(args.scenario), args.user,
                          args.authorized_keys, args.log, args.warning_line,
                          stop, simulation)
    except (OSError, ValueError) as err:
        print(f"jenkins-emulator: bad scenario {args.scenario}: {err}",
              file=sys.stderr)
        return 2

    listener = socket.create_server((HOST, args.ssh_port))
    jenkins.ssh_port = listener.getsockname()[1]
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as err:
            print(f"jenkins-emulator: cannot load {args.tls_cert}: {err}",
                  file=sys.stderr)
            return 2
        httpd = TlsHttpServer((HOST, args.http_port), HttpHandler, context)
    else:
        httpd = ThreadingHTTPServer((HOST, args.http_port), HttpHandler)
    httpd.daemon_threads = True
    httpd.jenkins = jenkins
    httpd.anonymous_read = args.anonymous_read

    # Block the stop signals before starting any thread, so that every thread
    # inherits the mask and the main thread's sigwait() receives them at once
    # (a Python handler may wait for the main thread to wake up by itself).
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    threading.Thread(target=serve_ssh, args=(jenkins, listener, args.tcp_nodelay),
                     daemon=True).start()
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    if simulation is not None:
        simulation.start()

    print(f"READY http={httpd.server_address[1]} ssh={jenkins.ssh_port}",
          flush=True)
    signal.sigwait(stop_signals)
    stop.set()
    if simulation is not None:
        simulation.stop()
        if args.sim_out:
            with open(args.sim_out, "w", encoding="utf-8") as out:
                json.dump(simulation.stats(), out, indent=1)
                out.write("\n")
    httpd.shutdown()
    httpd.server_close()
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
