#!/usr/bin/env python3
"""A stand-in for the Jenkins master that slave_manager talks to.

No real Jenkins runs in tests or demos, so this serves the two faces of
Jenkins that the manager uses (SPEC A5.1, A11):

* HTTP: every answer names the SSH endpoint in `X-SSH-Endpoint`, as Jenkins
  does, and `/jnlpJars/jenkins-cli.jar` serves a placeholder jar. Tests drive
  the emulator through `/emulator/...` (see `HttpHandler`).
* SSH: the CLI. Public-key auth for one user; each exec'd command line is
  split with a port of Jenkins' `hudson.util.QuotedStringTokenizer`, so a test
  can prove that the manager's quoting round-trips, and answered from the
  scenario: `groovy =` prints the dump, `build JOB` prints the job's output.

Every command is recorded (memory, and `--log` as JSON lines). Once both
servers listen, one line `READY http=<port> ssh=<port>` goes to stdout.

Run: python3 scripts/jenkins_emulator.py --user USER --authorized-keys FILE
         [--scenario FILE] [--log FILE] [--http-port N] [--ssh-port N]
         [--warning-line]
"""

import argparse
import base64
import json
import signal
import socket
import sys
import threading
import time
from collections import namedtuple
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import paramiko

HOST = "127.0.0.1"
JENKINS_VERSION = "2.479.3"
CERT_WARNING = ("Skipping HTTPS certificate checks altogether. "
                "Note that this is not secure at all.")
# An empty zip archive: a well-formed jar with nothing in it. The manager only
# downloads the jar; the `java` stand-in never opens it.
CLI_JAR = b"PK\x05\x06" + bytes(18)
GROOVY_FAULTS = ("fail", "garbage", "truncated", "hang")
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
                 warning_line, stop):
        self.user = user
        self.authorized_keys = authorized_keys
        self.warning_line = warning_line
        self.stop = stop
        self.host_key = paramiko.ECDSAKey.generate()
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
            state["fault"] = {"groovy": self._fault, "count": self._fault_left}
            return state

    def set_fault(self, request):
        """Make the next groovy calls misbehave: `count` of them, or all until
        a request with `"groovy": null` clears it."""
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

    def next_dump(self, whole=True):
        """The dump JSON that `groovy =` prints.

        With a `dumps` list the Nth dump served whole is dumps[min(N, len-1)];
        calls that a fault spoiled (`whole=False` for a truncated one) do not
        advance it, so a test can script "pass 1 sees A, the dump fails once,
        pass 2 sees B".
        """
        with self._lock:
            scenario = self._scenario
            if scenario["dumps"] is not None:
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

    def __init__(self, jenkins):
        self.jenkins = jenkins
        self.username = None
        self.command = None
        self.exec_requested = threading.Event()

    def get_allowed_auths(self, username):
        return "publickey"

    def check_auth_publickey(self, username, key):
        blobs = load_authorized_keys(self.jenkins.authorized_keys)
        if username == self.jenkins.user and key.asbytes() in blobs:
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
    script = read_stdin(channel)
    fault = jenkins.take_fault()
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
        dump = jenkins.next_dump(whole=False)
        text = dump[:len(dump) // 2]
    else:
        text = jenkins.next_dump() + "\n"
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
    """`who-am-i`: the connected user, as Jenkins prints it."""
    return Reply(stdout=f"Authenticated as: {jenkins.user}\n"
                        "Authorities:\n  authenticated\n")


COMMANDS = {"groovy": cmd_groovy, "build": cmd_build, "who-am-i": cmd_who_am_i}


def run_command(jenkins, session, channel):
    """Answer one exec request and record it in the command log."""
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
                    "exit": reply.exit})


def serve_ssh_connection(jenkins, sock):
    """Run one client connection: handshake, auth, one exec, then goodbye."""
    transport = paramiko.Transport(sock)
    try:
        transport.add_server_key(jenkins.host_key)
        session = SshSession(jenkins)
        transport.start_server(server=session)
        channel = transport.accept(timeout=30)
        if channel is None or not session.exec_requested.wait(timeout=30):
            return
        run_command(jenkins, session, channel)
        # Let the client hang up first, so it never sees the connection drop
        # before it has read the exit status.
        transport.join(timeout=10)
    except (paramiko.SSHException, EOFError, OSError) as err:
        print(f"jenkins-emulator: ssh connection ended: {err!r}",
              file=sys.stderr)
    finally:
        transport.close()


def serve_ssh(jenkins, listener):
    """Accept SSH clients for ever, one thread each."""
    while True:
        try:
            sock, _ = listener.accept()
        except OSError:
            return  # the listener was closed: we are stopping
        threading.Thread(target=serve_ssh_connection, args=(jenkins, sock),
                         daemon=True).start()


class HttpHandler(BaseHTTPRequestHandler):
    """Jenkins' HTTP face, plus the control endpoints for tests.

    GET    /jnlpJars/jenkins-cli.jar  the placeholder jar
    GET    /emulator/log              the command log (JSON list)
    DELETE /emulator/log              forget the log
    GET    /emulator/state            the scenario being served
    PUT    /emulator/state            replace it (same shape as --scenario)
    POST   /emulator/fault            {"groovy": MODE|null, "count": N}
    GET    anything else              a small HTML page
    Every answer carries X-SSH-Endpoint and X-Jenkins, as Jenkins' do.
    """

    def version_string(self):
        return "Jetty(12.0.16)"

    @property
    def jenkins(self):
        return self.server.jenkins

    def end_headers(self):
        self.send_header("X-SSH-Endpoint", f"{HOST}:{self.jenkins.ssh_port}")
        self.send_header("X-Jenkins", JENKINS_VERSION)
        super().end_headers()

    def log_message(self, format, *args):
        """Silence the access log: the SSH command log is what tests read."""

    def send_body(self, status, body, content_type):
        """Send a complete answer (headers only for HEAD)."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, value, status=HTTPStatus.OK):
        self.send_body(status, json.dumps(value).encode(), "application/json")

    def read_json(self):
        """The request body as JSON; ScenarioError if it is not JSON."""
        length = int(self.headers.get("Content-Length") or 0)
        try:
            return json.loads(self.rfile.read(length))
        except ValueError as err:
            raise ScenarioError(f"body is not JSON: {err}") from err

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path == "/jnlpJars/jenkins-cli.jar":
            self.send_body(HTTPStatus.OK, CLI_JAR, "application/java-archive")
        elif path == "/emulator/log":
            self.send_json(self.jenkins.log())
        elif path == "/emulator/state":
            self.send_json(self.jenkins.state())
        elif path.startswith("/emulator/"):
            self.send_json({"error": "no such endpoint"}, HTTPStatus.NOT_FOUND)
        else:
            page = (f"<html><head><title>Dashboard [Jenkins]</title></head>"
                    f"<body>Jenkins {JENKINS_VERSION} (emulated)</body></html>")
            self.send_body(HTTPStatus.OK, page.encode(), "text/html;charset=utf-8")

    do_HEAD = do_GET

    def do_PUT(self):
        if self.path != "/emulator/state":
            self.send_json({"error": "no such endpoint"}, HTTPStatus.NOT_FOUND)
            return
        self.apply(self.jenkins.replace_scenario)

    def do_POST(self):
        if self.path != "/emulator/fault":
            self.send_json({"error": "no such endpoint"}, HTTPStatus.NOT_FOUND)
            return
        self.apply(self.jenkins.set_fault)

    def do_DELETE(self):
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
    return parser.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    stop = threading.Event()
    try:
        jenkins = Jenkins(load_scenario(args.scenario), args.user,
                          args.authorized_keys, args.log, args.warning_line,
                          stop)
    except (OSError, ValueError) as err:
        print(f"jenkins-emulator: bad scenario {args.scenario}: {err}",
              file=sys.stderr)
        return 2

    listener = socket.create_server((HOST, args.ssh_port))
    jenkins.ssh_port = listener.getsockname()[1]
    httpd = ThreadingHTTPServer((HOST, args.http_port), HttpHandler)
    httpd.daemon_threads = True
    httpd.jenkins = jenkins

    # Block the stop signals before starting any thread, so that every thread
    # inherits the mask and the main thread's sigwait() receives them at once
    # (a Python handler may wait for the main thread to wake up by itself).
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    threading.Thread(target=serve_ssh, args=(jenkins, listener),
                     daemon=True).start()
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()

    print(f"READY http={httpd.server_address[1]} ssh={jenkins.ssh_port}",
          flush=True)
    signal.sigwait(stop_signals)
    stop.set()
    httpd.shutdown()
    httpd.server_close()
    listener.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
