"""The proxy itself: an HTTP/1.1 server, one thread per client connection
(so a held answer never holds up another call), that forwards each AWS
request to moto, applies the latency model and the fault rules, gives
RunInstances EC2's ClientToken idempotency (zonal for a launch into a
subnet, as EC2's), logs every call, and serves the
control API under /_proxy/.
"""

import json
import re
import socket
import struct
import sys
import threading
import time
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from aws_proxy.faults import Rule
from aws_proxy.latency import LatencyModel
from aws_proxy.matching import BadRule
from aws_proxy.wire import (
    ERRORS,
    IDEMPOTENT_MISMATCH,
    Request,
    error_answer,
    hop_by_hop,
    kind_answer,
)

HOST = "127.0.0.1"
CONTROL = "/_proxy/"
UPSTREAM_TIMEOUT = 120
DEFAULT_HOLD = 30.0     # succeed_then_timeout: past the manager's 20 s attempt timeout


class State:
    """Rules, the latency model, the call log and the ClientToken memory,
    shared by all threads. `latency_spec` is the command line's model, which
    a reset restores."""

    def __init__(self, latency_spec=None):
        self.lock = threading.Lock()
        self.rules = []
        self.calls = []
        self.tokens = {}          # (region, zone, token) -> (params, status, headers, body)
        self.token_locks = {}     # (region, zone, token) -> Lock: one launch at a time
        self.zones = {}           # (region, subnet) -> its AZ, as moto described it
        self.latency_spec = latency_spec
        self.latency = LatencyModel(latency_spec)

    def set_rules(self, specs):
        rules = [Rule(spec) for spec in specs]
        with self.lock:
            self.rules = rules

    def set_latency(self, spec):
        model = LatencyModel(spec)
        with self.lock:
            self.latency = model

    def take_rule(self, call, params=None):
        """The first matching rule with count left, its count spent by one;
        `params`: the request's parameters, for rules that name some."""
        with self.lock:
            for rule in self.rules:
                if rule.count != 0 and rule.matches(call, params):
                    if rule.count is not None:
                        rule.count -= 1
                    return rule
        return None

    def record(self, call):
        """Log a call as it arrives; its outcome is filled in later, so a
        test sees a call that is still being held."""
        with self.lock:
            self.calls.append(call)

    def update(self, call, **fields):
        with self.lock:
            call.update(fields)

    def calls_since(self, first):
        with self.lock:
            return [dict(c) for c in self.calls[first:]]

    def rules_json(self):
        with self.lock:
            return [r.to_json() for r in self.rules]

    def clear(self, rules=False, tokens=False):
        """Forget the calls; with `rules`, also the fault rules and the
        latency model's changes (back to the command line's, buckets full)."""
        with self.lock:
            self.calls = []
            if rules:
                self.rules = []
                self.latency = LatencyModel(self.latency_spec)
            if tokens:
                self.tokens = {}
                self.zones = {}

    def token_lock(self, key):
        with self.lock:
            return self.token_locks.setdefault(key, threading.Lock())


class Handler(BaseHTTPRequestHandler):
    """One client connection; HTTP/1.1, so the SDK's pooled connections are
    kept alive between requests."""

    protocol_version = "HTTP/1.1"
    server_version = "fault-proxy"

    def log_message(self, format, *args):
        if self.server.verbose:
            super().log_message(format, *args)

    def do_any(self):
        body = self.read_body()
        if body is None:
            return
        if self.path.startswith(CONTROL):
            self.control(body)
        else:
            self.proxy(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_any

    # --- reading and writing -------------------------------------------------

    def read_body(self):
        """The request body, Content-Length or chunked (then de-chunked,
        forwarded with a length); None if the client sent garbage."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                line = self.rfile.readline(65537)
                try:
                    size = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    self.send_error(400, "bad chunk size")
                    return None
                if size == 0:
                    while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass                     # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline(3)
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            self.send_error(400, "bad Content-Length")
            return None
        return self.rfile.read(length) if length > 0 else b""

    def answer(self, status, headers, body):
        """Send a whole answer with a Content-Length, keeping the connection."""
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()

    def answer_json(self, value, status=200):
        self.answer(status, [("Content-Type", "application/json")],
                    json.dumps(value).encode())

    def reset_connection(self):
        """Drop the connection with a TCP RST: what a client sees when a load
        balancer or the network gives up on it mid-request."""
        self.close_connection = True
        sock = self.connection
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.rfile.close()     # the makefile() holds the fd open otherwise
            sock.close()
        except OSError:
            pass

    def client_gone_within(self, seconds):
        """Wait up to `seconds`; True as soon as the client hangs up (its
        timeout fired), so a held answer does not outlive its reader."""
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.connection.settimeout(min(left, 0.5))
            try:
                if self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return True
                time.sleep(min(left, 0.5))    # pipelined bytes: keep waiting
            except TimeoutError:
                pass
            except OSError:
                return True
            finally:
                self.connection.settimeout(None)

    # --- the control API -------------------------------------------------------

    def control(self, body):
        """/_proxy/...: set faults and the latency model, read or clear the
        call log."""
        state = self.server.state
        url = urlsplit(self.path)
        route = (self.command, url.path.rstrip("/"))
        try:
            if route == ("POST", "/_proxy/faults"):
                request = json.loads(body or b"{}")
                rules = request.get("rules") if isinstance(request, dict) else None
                if not isinstance(rules, list):
                    raise BadRule('expected {"rules": [...]}')
                state.set_rules(rules)
                self.answer_json({"rules": state.rules_json()})
            elif route == ("GET", "/_proxy/faults"):
                self.answer_json({"rules": state.rules_json()})
            elif route == ("POST", "/_proxy/latency"):
                state.set_latency(json.loads(body or b"{}"))
                self.answer_json(state.latency.to_json())
            elif route == ("GET", "/_proxy/latency"):
                self.answer_json(state.latency.to_json())
            elif route == ("GET", "/_proxy/calls"):
                since = parse_qs(url.query).get("since", ["0"])[0]
                self.answer_json(state.calls_since(int(since)))
            elif route == ("DELETE", "/_proxy/calls"):
                state.clear()
                self.answer_json({"ok": True})
            elif route == ("POST", "/_proxy/reset"):
                state.clear(rules=True)
                self.answer_json({"ok": True})
            else:
                self.answer_json({"error": f"no route {route[0]} {route[1]}"}, 404)
        except (ValueError, BadRule) as err:
            self.answer_json({"error": str(err)}, 400)

    # --- proxying ---------------------------------------------------------------

    def proxy(self, body):
        """Forward one AWS request, or answer it as a throttle or the fault a
        rule names, each answer held as the latency model says. Calls that
        no SigV4 signature identifies (moto-api, health checks) pass
        straight through."""
        state = self.server.state
        request = Request(self.headers, body, urlsplit(self.path).query)
        call = {"time": time.time(), "service": request.service, "region": request.region,
                "action": request.action, "status": None, "fault": None,
                "throttled": False, "delay": None, "end": None, "bytes": None}
        if request.action == "RunInstances":
            # The subnet (AZ) a launch asked for: what capacity tests check.
            call["subnet"] = (request.params.get("NetworkInterface.1.SubnetId")
                              or request.params.get("SubnetId"))
        state.record(call)
        if request.service is None:
            self.send(call, *self.forward(call, body))
            return
        latency = state.latency
        if not latency.admit(call):
            # EC2 refuses at its front door, before any work and at once.
            state.update(call, throttled=True)
            self.send(call, *kind_answer("throttle", request))
            return
        delay = latency.delay(call)
        answer_at = time.monotonic() + delay
        if delay:
            state.update(call, delay=delay)
        rule = state.take_rule(call, request.params)
        kind = rule.fault if rule else None
        if rule:
            state.update(call, fault=kind)
            self.log_message("fault %s on %s %s %s", kind, request.service,
                             request.region, request.action)

        if kind not in ("succeed_then_timeout", "succeed_then_reset"):
            # Faults that strike before the service sees the request.
            if rule and rule.delay and self.client_gone_within(rule.delay):
                self.gone(call)              # the client gave up: moto never hears of it
                return
            if kind == "reset":
                self.reset_connection()
                state.update(call, end=time.time())
                return
            if kind in ERRORS:
                self.send(call, *error_answer(request.service, request.json_protocol,
                                              *rule.error(request)), answer_at=answer_at)
                return

        status, headers, answer = self.upstream_or_memory(call, request, body)
        if kind == "succeed_then_reset":
            state.update(call, status=status)
            self.reset_connection()
            state.update(call, end=time.time())
            return
        if kind == "succeed_then_timeout":
            hold = DEFAULT_HOLD if rule.delay is None else rule.delay
            answer_at = max(answer_at, time.monotonic() + hold)
        self.send(call, status, headers, answer, answer_at=answer_at)

    def send(self, call, status, headers, body, answer_at=None):
        """Answer the call, not before `answer_at` (monotonic), and log its
        outcome; if the client leaves meanwhile, no answer."""
        state = self.server.state
        state.update(call, status=status)
        if answer_at is not None and self.client_gone_within(answer_at - time.monotonic()):
            self.gone(call)
            return
        try:
            self.answer(status, headers, body)
        except OSError:
            self.close_connection = True
        state.update(call, end=time.time(), bytes=len(body))

    def gone(self, call):
        """The client hung up before its answer."""
        self.close_connection = True
        self.server.state.update(call, end=time.time())

    def upstream_or_memory(self, call, request, body):
        """moto's answer, except that RunInstances with a ClientToken seen
        before is answered from memory as EC2 does (or refused if its
        parameters differ), so a retried launch makes no second instance.
        Tokens are per region and, for a launch into a subnet, per AZ as on
        EC2: the same token in another AZ launches anew. Launches with one
        token are serialised."""
        if not (request.service == "ec2" and request.action == "RunInstances"):
            return self.forward(call, body)
        token = request.params.get("ClientToken")
        if not token:
            return self.launch(call, request, body)
        state = self.server.state
        key = (request.region, self.zone_of(request), token)
        params = sorted((k, v) for k, v in request.params.items() if k != "ClientToken")
        with state.token_lock(key):
            remembered = state.tokens.get(key)
            if remembered:
                if remembered[0] != params:
                    state.update(call, fault="idempotent-mismatch")
                    return error_answer("ec2", False, *IDEMPOTENT_MISMATCH)
                if call["fault"] is None:
                    state.update(call, fault="idempotent-replay")
                return remembered[1:]
            status, headers, answer = self.launch(call, request, body)
            if status == 200:
                with state.lock:
                    state.tokens[key] = (params, status, headers, answer)
            return status, headers, answer

    def zone_of(self, request):
        """The AZ a launch goes to: its subnet's (asked of moto once), else
        the one it names, else None (regional)."""
        subnet = (request.params.get("NetworkInterface.1.SubnetId")
                  or request.params.get("SubnetId"))
        if not subnet:
            return request.params.get("Placement.AvailabilityZone")
        state = self.server.state
        with state.lock:
            zone = state.zones.get((request.region, subnet))
        if zone is None:
            zone = self.describe_zone(subnet)
            if zone is None:
                return subnet     # unknown to moto: the launch fails there anyway
            with state.lock:
                state.zones[(request.region, subnet)] = zone
        return zone

    def describe_zone(self, subnet):
        """The AZ of `subnet`, from moto's DescribeSubnets under the client's
        own credentials (its account and region; moto checks no signature)."""
        target = self.server.target
        body = f"Action=DescribeSubnets&Version=2016-11-15&SubnetId.1={subnet}".encode()
        headers = {name: self.headers[name] for name in
                   ("Authorization", "X-Amz-Date", "X-Amz-Security-Token") if self.headers.get(name)}
        headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
        connection = HTTPConnection(target.hostname, target.port or 80, timeout=UPSTREAM_TIMEOUT)
        try:
            connection.request("POST", "/", body=body, headers=headers)
            response = connection.getresponse()
            answer = response.read().decode("utf-8", "replace")
        except OSError:
            return None
        finally:
            connection.close()
        found = re.search(r"<availabilityZone>([^<]+)</availabilityZone>", answer)
        return found.group(1) if response.status == 200 and found else None

    def launch(self, call, request, body):
        """A RunInstances to moto, filled as EC2 fills it: as many instances
        as MaxCount asks, or the latency model's cap if lower (moto itself
        launches MinCount); MinCount over the cap fails as on EC2, with
        InsufficientInstanceCapacity."""
        state = self.server.state
        try:
            least = int(request.params.get("MinCount", 1))
            asked = int(request.params.get("MaxCount", least))
        except ValueError:
            return self.forward(call, body)      # moto's own error answers it
        limit = state.latency.max_count(call)
        given = asked if limit is None else min(asked, limit)
        if given < asked:
            state.update(call, max_count=[asked, given])
        if least > given:
            state.update(call, fault="insufficient_capacity")
            return kind_answer("insufficient_capacity", request)
        if given != least:
            body = request.with_form_fields(body, MinCount=given, MaxCount=given)
        return self.forward(call, body)

    def forward(self, call, body):
        """(status, headers, body) from the target; a 502 if it is down."""
        target = self.server.target
        connection = HTTPConnection(target.hostname, target.port or 80,
                                    timeout=UPSTREAM_TIMEOUT)
        try:
            connection.putrequest(self.command, self.path, skip_host=True,
                                  skip_accept_encoding=True)
            dropped = hop_by_hop(self.headers)
            for name, value in self.headers.items():
                if name.lower() not in dropped:
                    connection.putheader(name, value)
            if body or self.command in ("POST", "PUT", "PATCH"):
                connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            answer = response.read()
            dropped = hop_by_hop(response.headers)
            headers = [(n, v) for n, v in response.headers.items()
                       if n.lower() not in dropped]
            status = response.status
        except OSError as err:
            self.server.state.update(call, fault="upstream-error")
            return 502, [("Content-Type", "text/plain")], f"fault_proxy: {err}".encode()
        finally:
            connection.close()
        if self.path.startswith("/moto-api/reset") and status == 200:
            self.server.state.clear(tokens=True)
        return status, headers, answer


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    # A burst opens many connections at once; socketserver's default backlog
    # of 5 would make the kernel drop SYNs (a 1 s retransmit) and serialise
    # what is meant to overlap.
    request_queue_size = 128

    def __init__(self, port, target, verbose, latency_spec=None):
        super().__init__((HOST, port), Handler)
        self.target = urlsplit(target)
        self.verbose = verbose
        self.state = State(latency_spec)

    def handle_error(self, request, client_address):
        """A client that vanished mid-answer is an expected event here."""
        if not isinstance(sys.exc_info()[1], OSError) or self.verbose:
            super().handle_error(request, client_address)
