"""Jenkins' SSH CLI, as its sshd module serves it (SPEC A5.1).

The host key is the instance identity (or an impostor's, while a test asks);
public-key auth for one user, its name matched ignoring case as Jenkins'
default user-id strategy does; one exec per connection, split into words as
Jenkins splits them (tokenizer.py) and answered from the scenario:
`groovy =` prints the dump (or misbehaves as the injected fault says),
`build JOB` prints the job's output, `who-am-i` names the user,
`offline-node NAME… -m CAUSE` takes nodes offline. Every command
is recorded with when its connection was accepted and how long it took.
"""

import base64
import difflib
import socket
import sys
import threading
import time
from collections import namedtuple

import paramiko

from emulator.tokenizer import tokenize

CERT_WARNING = ("Skipping HTTPS certificate checks altogether. "
                "Note that this is not secure at all.")
HANG_SECONDS = 600


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


def cmd_offline_node(jenkins, argv, channel):
    """`offline-node NAME… [-m CAUSE]`, as Jenkins' OfflineNodeCommand: every
    named node goes temporarily offline with the cause. An unknown node
    fails the command (exit 3, IllegalArgumentException) when it is the only
    one named; among several, each unknown one is reported and the command
    ends with exit 5 (AbortException) after the others went offline."""
    names, cause = [], None
    words = iter(argv[1:])
    for word in words:
        if word == "-m":
            cause = next(words, None)
            if cause is None:
                return Reply(stderr='ERROR: Option "-m" takes an operand\n', exit=2)
        elif word.startswith("-") and word != "-":
            return Reply(stderr=f'ERROR: "{word}" is not a valid option\n', exit=2)
        else:
            names.append(word)
    if not names:
        return Reply(stderr='ERROR: Argument "NAME" is required\n', exit=2)
    unique = list(dict.fromkeys(names))
    errors = []
    for name in unique:
        if not jenkins.offline_node(name, cause):
            known = jenkins.node_names()
            advice = difflib.get_close_matches(name, known, n=1)
            message = (f'No such agent "{name}" exists. Did you mean "{advice[0]}"?'
                       if advice else f'No such agent "{name}" exists.')
            if len(unique) == 1:
                return Reply(stderr=f"ERROR: {message}\n", exit=3)
            errors.append(f"{name}: {message}\n")
    if errors:
        return Reply(stderr="".join(errors) + "\nERROR: Error occurred while "
                     "performing this command, see previous stderr output.\n",
                     exit=5)
    return Reply()


COMMANDS = {"groovy": cmd_groovy, "build": cmd_build, "who-am-i": cmd_who_am_i,
            "offline-node": cmd_offline_node}


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
