"""What the emulated Jenkins knows and has been asked: the scenario it serves
(queue, nodes, jobs, messages, a scripted sequence of dumps), the faults a
test injects into its groovy calls, its instance identity, and the logs of
commands and requests. Shared by the SSH and HTTP sides' threads.
"""

import base64
import json
import threading
import time

import paramiko
from cryptography.hazmat.primitives import serialization

GROOVY_FAULTS = ("fail", "garbage", "truncated", "hang", "denied")
SCENARIO_KEYS = ("queue", "nodes", "jobs", "messages", "dumps")


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

    `simulation`, if given, makes the dumps instead of the scenario: any
    object with `dump(words) -> dict` (the dump for `groovy = WORDS…`) and
    `stats() -> dict` (served at /emulator/sim); the benchmark's closed loop
    (bench/sim_jenkins.py) is one.
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
        self.ssh_endpoint = None    # "host:port", once the SSH side listens
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
        simulated = self.simulation.dump(words, whole) if self.simulation else None
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

    def offline_node(self, name, cause):
        """`offline-node`: mark the node temporarily offline with `cause`, as
        Computer.cliOffline does; False when Jenkins has no such node. The
        scenario's node (and the same node in a `dumps` sequence) reports
        `isOffLine` "true" from now on; a simulation is told."""
        if self.simulation is not None and hasattr(self.simulation, "offline_node"):
            return self.simulation.offline_node(name, cause)
        with self._lock:
            scenario = self._scenario
            lists = [scenario["nodes"]] + [d.get("slave_queue", []) for d in scenario["dumps"] or []]
            found = False
            for nodes in lists:
                for node in nodes:
                    if isinstance(node, dict) and node.get("slaveName") == name:
                        node["isOffLine"] = "true"
                        node["offlineCause"] = cause
                        found = True
            return found

    def node_names(self):
        """Every node name the emulated Jenkins knows."""
        with self._lock:
            scenario = self._scenario
            lists = [scenario["nodes"]] + [d.get("slave_queue", []) for d in scenario["dumps"] or []]
            return sorted({n.get("slaveName") for nodes in lists for n in nodes
                           if isinstance(n, dict) and n.get("slaveName")})

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


def load_scenario(path):
    """The scenario file's content; no file means an idle Jenkins."""
    if path is None:
        return {}
    with open(path, encoding="utf-8") as scenario:
        return json.load(scenario)
