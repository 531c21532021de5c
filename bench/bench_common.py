"""Shared pieces of the benchmark (scripts/bench.sh): the helper servers,
the frame of a bench part, the manager run with its per-pass figures, and
small statistics.

Everything listens on 127.0.0.1 on free ports; every process started here is
stopped at exit (`Services.close`, also on SIGTERM/SIGINT through
`install_signal_exit`), and every wait has a timeout.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)
# The test doubles (emulator, fault proxy, moto world builder), which the
# bench also runs and imports. The one place that puts them on sys.path:
# every bench script imports this module first.
SUPPORT = os.path.join(REPO, "tests", "support")
if SUPPORT not in sys.path:
    sys.path.insert(0, SUPPORT)

from moto_server import MotoServer  # noqa: E402

PYTHON = sys.executable
USER = "slave-manager"
# The two-env world of parts (b) and (c), as the original was measured.
TWO_ENVS = "dev:111111111111:us-east-2,prod:222222222222:us-west-2"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024

# The manager's log lines (tracing's default format, no colour).
LOG_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)\s+(\w+)\s+(.*)$")
PASS_LINE = re.compile(
    r"pass (\d+)/(\d+)\b[^:]*: queue (\S+), agents (\d+).*?started (\d+), created (\d+), "
    r"stopped (\d+), terminated (\d+), errors (\d+) \((\d+) ms\)")
COST_LINE = re.compile(r"pass (\d+) cost (\d+) EC2 requests(?: \((\d+) envs observed in (\d+) ms\))?")


class BenchError(RuntimeError):
    """A step of the benchmark could not be done; the message says which."""


def install_signal_exit():
    """Turn SIGTERM/SIGINT into SystemExit so `finally` blocks clean up."""
    def leave(signum, _frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGINT, leave)


def log(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def percentile(values, fraction):
    """Nearest-rank percentile of `values` (None when there are none)."""
    ordered = sorted(values)
    if not ordered:
        return None
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def median(values):
    return percentile(values, 0.5)


def fmt(value, digits=0, unit=""):
    """A figure for a table; `—` when there is none."""
    if value is None:
        return "—"
    if isinstance(value, float):
        value = round(value, digits)
        text = f"{value:.{digits}f}" if digits else f"{int(round(value))}"
    else:
        text = str(value)
    return text + unit


def table(header, rows):
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def http_json(url, method="GET", body=None, timeout=60):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.load(answer)


def reset_aws(proxy):
    """Empties moto through the proxy, so that the proxy also forgets the
    ClientTokens of the launches that are gone: the manager's tokens repeat
    from run to run, and a remembered one would be answered with instances
    moto no longer has."""
    urllib.request.urlopen(urllib.request.Request(f"{proxy}/moto-api/reset", method="POST"),
                           timeout=60).close()


def proxy_mark(proxy):
    """How many calls the proxy has logged: where a run's calls will start."""
    return len(http_json(f"{proxy}/_proxy/calls"))


def proxy_calls(proxy, mark):
    """The calls the proxy logged from `mark` on: {"time" (arrival), "end",
    "service", "region", "action", "status", "bytes", ...}."""
    return http_json(f"{proxy}/_proxy/calls?since={mark}")


class Services:
    """The helper processes of one benchmark: moto, the proxy, emulators.

    Each is started on a free port and waited for with a deadline; `close()`
    stops them all (SIGTERM, then SIGKILL after 10 s), by their own pids.
    """

    def __init__(self, workdir):
        self.workdir = workdir
        self.procs = []

    def _spawn(self, name, argv, **kwargs):
        out = open(os.path.join(self.workdir, f"{name}.log"), "ab")
        try:
            proc = subprocess.Popen(argv, stderr=out, stdin=subprocess.DEVNULL,
                                    **kwargs)
        finally:
            out.close()
        self.procs.append(proc)
        return proc

    def _log_tail(self, name):
        try:
            with open(os.path.join(self.workdir, f"{name}.log"), errors="replace") as f:
                return "".join(f.readlines()[-15:])
        except OSError:
            return ""

    def _ready_line(self, name, proc, timeout):
        """The READY line a helper prints on stdout, within `timeout` s."""
        result = {}

        def read():
            result["line"] = proc.stdout.readline().decode(errors="replace")
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(timeout)
        line = result.get("line", "")
        if not line.startswith("READY"):
            raise BenchError(f"{name} did not start within {timeout} s:\n"
                             f"{self._log_tail(name)}")
        return dict(word.split("=", 1) for word in line.split()[1:])

    def moto(self, timeout=60):
        """Starts moto's server; returns its URL."""
        with open(os.path.join(self.workdir, "moto.log"), "ab") as out:
            try:
                server = MotoServer(log=out, timeout=timeout)
            except RuntimeError as err:
                raise BenchError(f"{err}:\n{self._log_tail('moto')}") from err
        self.procs.append(server.proc)
        return server.url

    def proxy(self, target, flags=(), timeout=30):
        """Starts the AWS proxy (tests/support/fault_proxy.py: it logs every
        call; `flags` may add its latency model) in front of `target`;
        returns its URL."""
        proc = self._spawn("proxy", [PYTHON, os.path.join(SUPPORT, "fault_proxy.py"),
                                     "--target", target, *flags], stdout=subprocess.PIPE)
        ready = self._ready_line("proxy", proc, timeout)
        return f"http://127.0.0.1:{ready['port']}"

    def emulator(self, name, args, timeout=60, script=None):
        """Starts the Jenkins emulator (or `script`, which takes the same
        flags and more: bench/sim_jenkins.py) with `args`; returns
        (http URL, proc)."""
        keys = os.path.join(self.workdir, "authorized_keys")
        script = script or os.path.join(SUPPORT, "jenkins_emulator.py")
        proc = self._spawn(name, [PYTHON, script,
                                  "--user", USER, "--authorized-keys", keys,
                                  "--log", os.path.join(self.workdir, f"{name}.commands.jsonl"),
                                  *args], stdout=subprocess.PIPE)
        ready = self._ready_line(name, proc, timeout)
        return f"http://127.0.0.1:{ready['http']}/", proc

    def stop(self, proc, timeout=10):
        """Stops one helper (SIGTERM, then SIGKILL) and reaps it."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self):
        for proc in list(self.procs):
            self.stop(proc)


def keygen(workdir):
    """The manager's key, registered for the emulator's user."""
    key = os.path.join(workdir, "id_rsa")
    if not os.path.exists(key):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key],
                       check=True, timeout=30)
    with open(key + ".pub") as pub, open(os.path.join(workdir, "authorized_keys"), "w") as out:
        out.write(pub.read())
    return key


JAVA_WRAPPER = """#!/usr/bin/env bash
# Written by bench/bench_common.py: times each `java` call (the jar CLI) for
# the benchmark, then runs the test stand-in. No forks: bash's own clock.
start=$EPOCHREALTIME
"{standin}" "$@"
status=$?
printf '%s %s %s\\n' "$start" "$EPOCHREALTIME" "$status" >>"${{BENCH_JAVA_LOG:-/dev/null}}"
exit "$status"
"""


def java_wrapper(workdir):
    """A directory holding a timing `java` wrapper around the stand-in."""
    directory = os.path.join(workdir, "javabin")
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "java")
    with open(path, "w") as out:
        out.write(JAVA_WRAPPER.format(
            standin=os.path.join(REPO, "tests", "support", "bin", "java")))
    os.chmod(path, 0o755)
    return directory


def java_spans(path):
    """(start, end) Unix times of the `java` calls a wrapper logged."""
    spans = []
    try:
        with open(path) as lines:
            for line in lines:
                fields = line.split()
                if len(fields) == 3:
                    spans.append((float(fields[0]), float(fields[1])))
    except OSError:
        pass
    return spans


def manager_env(aws_url, java_dir=None, java_log=None):
    """The manager's environment: moto (or the proxy) as AWS, dummy keys,
    the `java` stand-in first on PATH (or `java_dir`'s timing wrapper, which
    logs to `java_log`) and no JAVA_HOME (so `--cli jar` runs the stand-in,
    never a real JVM), no colour."""
    env = dict(os.environ)
    for key in ("JAVA_HOME", "RUST_LOG", "AWS_PROFILE", "AWS_SESSION_TOKEN",
                "AWS_REGION", "AWS_DEFAULT_REGION"):
        env.pop(key, None)
    first = java_dir or os.path.join(REPO, "tests", "support", "bin")
    env.update(AWS_ENDPOINT_URL=aws_url, AWS_ACCESS_KEY_ID="testing",
               AWS_SECRET_ACCESS_KEY="testing", NO_COLOR="1",
               PATH=first + os.pathsep + env.get("PATH", ""))
    if java_log:
        env["BENCH_JAVA_LOG"] = java_log
    return env


def log_time(stamp):
    """A log timestamp as Unix time."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def proc_cpu(pid):
    """(own CPU s, reaped children's CPU s) of a live process, from /proc."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def proc_hwm_kb(pid):
    """VmHWM (peak RSS) of a live process in KiB."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


class Pass:
    """One pass as the manager's log tells it."""

    def __init__(self, number):
        self.number = number
        self.end = None          # Unix time of the summary line
        self.ms = None           # the pass's own duration
        self.observe_ms = None   # --debug: the observation phase
        self.ec2_requests = None
        self.queue = None
        self.started = self.created = self.stopped = self.terminated = 0
        self.errors = 0
        self.cpu = None          # (own, children) CPU s when the line was read

    @property
    def start(self):
        return None if self.end is None or self.ms is None else self.end - self.ms / 1000


class ManagerRun:
    """Runs slave_manager to completion (or until `stop_when` says so),
    following its log: per-pass latency, EC2 requests and CPU, actions with
    their timestamps, peak RSS, and the total CPU from wait4()."""

    def __init__(self, binary, args, env, cwd, log_path):
        self.argv = [binary, *args]
        self.env = env
        self.cwd = cwd
        self.log_path = log_path
        self.passes = {}
        self.actions = []        # (unix time, message) of INFO action lines
        self.lines = []
        self.status = None
        self.rusage = None
        self.hwm_kb = None
        self.wall = None

    def _pass(self, number):
        return self.passes.setdefault(number, Pass(number))

    def _read(self, line, pid):
        self.lines.append(line)
        match = LOG_LINE.match(line)
        if not match:
            return
        stamp, level, message = match.groups()
        when = log_time(stamp)
        cost = COST_LINE.search(message)
        summary = PASS_LINE.search(message)
        if cost:
            p = self._pass(int(cost.group(1)))
            p.ec2_requests = int(cost.group(2))
            if cost.group(4) is not None:
                p.observe_ms = int(cost.group(4))
        elif summary:
            p = self._pass(int(summary.group(1)))
            p.end, p.ms = when, int(summary.group(10))
            p.queue = summary.group(3)
            (p.started, p.created, p.stopped, p.terminated,
             p.errors) = (int(summary.group(i)) for i in range(5, 10))
            p.cpu = proc_cpu(pid)
            hwm = proc_hwm_kb(pid)
            if hwm is not None:
                self.hwm_kb = max(self.hwm_kb or 0, hwm)
        elif level in ("INFO", "WARN", "ERROR"):
            self.actions.append((when, level, message))

    def run(self, timeout, stop_when=None, poll=0.5):
        """Runs the manager; `stop_when()` (checked every `poll` s) may end it
        early with SIGTERM, as an aborted Jenkins build would."""
        started = time.monotonic()
        with open(self.log_path, "w") as out:
            proc = subprocess.Popen(self.argv, cwd=self.cwd, env=self.env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, text=True, bufsize=1)
            reader_done = threading.Event()

            def reader():
                for line in proc.stdout:
                    out.write(line)
                    self._read(line.rstrip("\n"), proc.pid)
                reader_done.set()
            thread = threading.Thread(target=reader, daemon=True)
            thread.start()
            deadline = started + timeout
            stopping = False
            try:
                while not reader_done.wait(poll):
                    if time.monotonic() > deadline:
                        raise BenchError(f"the manager ran over {timeout} s "
                                         f"(see {self.log_path})")
                    if not stopping and stop_when is not None and stop_when():
                        # os.kill, not Popen's: those poll(), which could
                        # reap the child before wait4() reads its rusage.
                        os.kill(proc.pid, signal.SIGTERM)
                        stopping = True
                        deadline = min(deadline, time.monotonic() + 60)
            finally:
                if not reader_done.is_set():
                    os.kill(proc.pid, signal.SIGKILL)   # unreaped: pid still ours
                _, status, self.rusage = os.wait4(proc.pid, 0)
                proc.returncode = os.waitstatus_to_exitcode(status)
                thread.join(10)
        self.status = proc.returncode
        self.wall = time.monotonic() - started
        return self

    # -- figures ------------------------------------------------------------

    def ordered(self):
        return [self.passes[n] for n in sorted(self.passes) if self.passes[n].end]

    def window(self, p):
        """(from, to) Unix times that hold pass `p`'s requests. Its start is
        estimated from its summary line's time less its duration, with 50 ms
        of slack (the line is stamped when written, which can lag under load),
        but never before the previous pass's line."""
        earlier = [q.end for q in self.ordered() if q.number < p.number]
        start = p.end - p.ms / 1000 - 0.05
        return (max([start] + earlier[-1:]), p.end)

    def calls_in(self, p, calls):
        """The proxy's calls that arrived during pass `p`."""
        lo, hi = self.window(p)
        return [c for c in calls if lo <= c["time"] <= hi]

    def steady(self):
        """Every pass but the first (its set-up work: role assumption, the
        inventory, the jar download; see `first`)."""
        return self.ordered()[1:]

    def first(self):
        passes = self.ordered()
        return passes[0] if passes else None

    def cpu_per_steady_pass(self):
        """(own ms, children ms) of CPU per pass, from the end of the first
        pass to the end of the last."""
        passes = self.ordered()
        if len(passes) < 2 or passes[0].cpu is None or passes[-1].cpu is None:
            return None, None
        count = len(passes) - 1
        own = (passes[-1].cpu[0] - passes[0].cpu[0]) / count * 1000
        children = (passes[-1].cpu[1] - passes[0].cpu[1]) / count * 1000
        return own, children

    def total_cpu(self):
        """Whole run (own + reaped children) CPU s, from wait4()."""
        if self.rusage is None:
            return None
        return self.rusage.ru_utime + self.rusage.ru_stime

    def peak_rss_mb(self):
        """(VmHWM sampled at each pass, ru_maxrss from wait4) in MiB."""
        hwm = None if self.hwm_kb is None else self.hwm_kb / 1024
        maxrss = None if self.rusage is None else self.rusage.ru_maxrss / 1024
        return hwm, maxrss


def workdir(prefix, parent):
    """A fresh directory for one manager run (its markers, CSVs, jar), with
    the manager's key (`keygen`) copied from `parent`; inside the
    benchmark's own directory so an interrupted run leaves nothing behind
    once bench.sh removes that."""
    directory = tempfile.mkdtemp(prefix=prefix, dir=parent)
    shutil.copy(os.path.join(parent, "id_rsa"), directory)
    return directory


def two_env_world(moto, name, parent, jenkins_url, *flags):
    """Builds TWO_ENVS in moto (tests/support/moto_world.py, more `flags`
    passed on; the master's security group in us-west-2); returns the world
    JSON, which names the environment.json written in `parent`."""
    world_json = os.path.join(parent, f"world-{name}.json")
    subprocess.run([PYTHON, os.path.join(SUPPORT, "moto_world.py"), "--endpoint", moto,
                    "--envs", TWO_ENVS, "--jenkins-url", jenkins_url,
                    "--master-region", "us-west-2",
                    "--environment-json", os.path.join(parent, f"environment-{name}.json"),
                    "--world-json", world_json, *flags],
                   check=True, stdout=subprocess.DEVNULL, timeout=300)
    with open(world_json) as source:
        return json.load(source)


def manager_args(jenkins, world, cli, *more):
    """The manager's flags in every bench run (the emulator's user, the key
    that `workdir` copied, the world's AMIs and environment.json, --debug
    for the per-pass figures, no security-group or GC job), then `more`."""
    return ["--url", jenkins, "--id_rsa", "id_rsa", "--jenkins_user", USER,
            "--owner_email", "ops@example.com", "--ami_ids", world["ami_ids"],
            "--environment", world["environment_json"], "--cli", cli, "--debug",
            "--skip_security_group", "--gc_job", "",
            "--jenkins_master_region", "us-west-2", *more]


def measure(args, emulator_name, emulator_flags, each):
    """The frame of a bench part: the manager's key, moto, the AWS proxy and
    the Jenkins emulator started; `each(moto, proxy, jenkins)` yields the
    results one by one. Every process is stopped at the end and the results
    so far are written to `args.json`, even when a step failed."""
    install_signal_exit()
    services = Services(args.workdir)
    results = []
    try:
        keygen(args.workdir)
        moto = services.moto()
        proxy = services.proxy(moto)
        jenkins, _ = services.emulator(emulator_name, ["--http-port", "0", "--ssh-port", "0",
                                                       *emulator_flags])
        for result in each(moto, proxy, jenkins):
            results.append(result)
    finally:
        services.close()
        if args.json:
            with open(args.json, "w") as out:
                json.dump(results, out, indent=1)
    return results


def run_main(main, name):
    """Runs a bench script's `main(argv)` and exits with its status; a
    BenchError is one line on stderr and status 1."""
    try:
        sys.exit(main(sys.argv[1:]))
    except BenchError as err:
        print(f"{name}: {err}", file=sys.stderr)
        sys.exit(1)
