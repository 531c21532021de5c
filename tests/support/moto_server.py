"""moto's server on a free loopback port: started, waited for, reset and
stopped. For the Python tools' tests, the Jenkins side's tests and the
benchmark (the Rust tests and the demo start theirs in tests/common/mod.rs
and scripts/demo.sh).
"""

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HOST = "127.0.0.1"
# moto's server with EC2's RunInstances fill.
MOTO_EC2 = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moto_ec2.py")


def free_port():
    """A loopback port free now (moto's server cannot report one it picked)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class MotoServer:
    """moto's server (tests/support/moto_ec2.py) on a free port, ready once constructed.

    Its output goes to `log` (a file object); by default to a temporary
    file whose tail a failure to start shows. RuntimeError if it does not
    answer within `timeout` seconds (it is stopped then).
    """

    def __init__(self, log=None, timeout=30):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        own_log = tempfile.TemporaryFile() if log is None else None
        self.proc = subprocess.Popen(
            [sys.executable, MOTO_EC2, "-H", HOST, "-p", str(self.port)],
            stdout=own_log or log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.url + "/moto-api/", timeout=2).close()
                return
            except OSError as err:
                exited = self.proc.poll() is not None
                if exited or time.monotonic() > deadline:
                    self.stop()
                    why = "exited" if exited else f"did not answer within {timeout} s"
                    raise RuntimeError(f"moto's server {why}{tail(own_log)}") from err
                time.sleep(0.1)

    def reset(self):
        """Empty every account and region (POST /moto-api/reset)."""
        request = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=5).close()

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after `timeout` s; reaped either way."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def tail(log):
    """The last lines of a log file object we own, as a message's end."""
    if log is None:
        return ""
    log.seek(0)
    lines = log.read().decode(errors="replace").splitlines()[-15:]
    return ":\n" + "\n".join(lines) if lines else ""
