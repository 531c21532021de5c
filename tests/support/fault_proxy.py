#!/usr/bin/env python3
"""A fault-injecting HTTP proxy between slave_manager and moto's server.

moto answers every AWS call correctly and at once; the manager's promises
(bounded retries, nothing doubled, failures counted) only show under a bad
minute at AWS. This proxy forwards every request to moto and, on command,
answers instead as the real service does when it throttles, fails, denies,
runs out of capacity, stalls or drops the connection. It also gives
RunInstances the ClientToken idempotency that real EC2 has and moto lacks, so
"a retried launch does not make a second instance" can be tested.

  fault_proxy.py --target http://127.0.0.1:MOTOPORT [--port 0] [--verbose]

Once it listens, one line `READY port=<n>` goes to stdout. Point
AWS_ENDPOINT_URL (or boto3's endpoint_url) at http://127.0.0.1:<n>.

Control API, same port (never forwarded):

  POST   /_proxy/faults  {"rules": [RULE, ...]}  replace the rules
  GET    /_proxy/faults  the rules, with the count each has left
  GET    /_proxy/calls   every proxied call: [{"time", "service", "region",
                         "action", "status", "fault"}, ...]
  DELETE /_proxy/calls   forget the calls
  POST   /_proxy/reset   forget rules and calls (not the ClientTokens: those
                         mirror moto's state, and go when /moto-api/reset is
                         sent through the proxy)

RULE: {"fault": KIND, "service": "ec2", "action": "RunInstances",
"region": "us-east-2", "count": N, "delay": SECONDS, "status": N,
"code": "...", "message": "..."}; only "fault" is required. service, action
and region narrow the rule (case-insensitive); count (default unlimited) is
spent one per hit; the first matching rule with count left applies. status,
code and message override the error answer of the error KINDs.

KIND: throttle, slowdown, error500, insufficient_capacity, access_denied (an
error answer in the service's own shape; `delay` first, if given), delay
(wait `delay` s, then forward), reset (no answer: the connection is reset),
succeed_then_timeout (forward, so the action happens, then hold the answer
`delay` s, default 30, past the client's timeout), succeed_then_reset
(forward, then reset the connection).

Call fields: time (Unix seconds at arrival), service and region (from the
SigV4 credential scope), action (form `Action=` or `X-Amz-Target`), status
(of the answer moto or the proxy produced; null when none was: reset, or the
client left during a delay), fault (the KIND applied, "idempotent-replay",
"idempotent-mismatch", "upstream-error" or null).
"""

import argparse
import json
import re
import signal
import socket
import struct
import sys
import threading
import time
import uuid
from email.utils import formatdate
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit
from xml.sax.saxutils import escape

HOST = "127.0.0.1"
CONTROL = "/_proxy/"
UPSTREAM_TIMEOUT = 120
DEFAULT_HOLD = 30.0     # succeed_then_timeout: past the manager's 20 s attempt timeout

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "trailers",
              "transfer-encoding", "upgrade", "expect", "content-length"}

CREDENTIAL = re.compile(r"Credential=([^,\s]+)")
RULE_KEYS = {"service", "action", "region", "fault", "count", "delay",
             "status", "code", "message"}

# kind -> service -> (HTTP status, error code, message). "*" is any other
# service. Each is what the real service sends; error_answer gives the wire
# form per protocol.
ERRORS = {
    "throttle": {
        "ec2": (503, "RequestLimitExceeded", "Request limit exceeded."),
        "sqs": (400, "RequestThrottled", "Request is throttled."),
        "*": (400, "Throttling", "Rate exceeded"),
    },
    "slowdown": {
        "*": (503, "SlowDown", "Please reduce your request rate."),
    },
    "error500": {
        "ec2": (500, "InternalError", "An internal error has occurred."),
        "*": (500, "InternalFailure", "The request processing has failed "
              "because of an unknown error, exception or failure."),
    },
    "insufficient_capacity": {
        "*": (500, "InsufficientInstanceCapacity", None),   # see ice_message
    },
    "access_denied": {
        "ec2": (403, "UnauthorizedOperation",
                "You are not authorized to perform this operation."),
        "*": (403, "AccessDenied", None),                    # see denied_message
    },
}
OTHER_KINDS = {"delay", "reset", "succeed_then_timeout", "succeed_then_reset"}
KINDS = set(ERRORS) | OTHER_KINDS

# SQS's JSON protocol names modelled errors in its own namespace and the
# rest in Coral's, with the query-protocol code in x-amzn-query-error.
SQS_JSON_TYPES = {
    "RequestThrottled": "com.amazonaws.sqs#RequestThrottled",
    "AccessDenied": "com.amazon.coral.service#AccessDeniedException",
}
IDEMPOTENT_MISMATCH = (400, "IdempotentParameterMismatch",
                       "Arguments on this idempotent request are inconsistent "
                       "with arguments used in previous request(s).")
QUERY_NAMESPACES = {
    "sts": "https://sts.amazonaws.com/doc/2011-06-15/",
    "iam": "https://iam.amazonaws.com/doc/2010-05-08/",
    "sqs": "http://queue.amazonaws.com/doc/2012-11-05/",
}


class BadRule(ValueError):
    """A control request whose rules the proxy cannot apply."""


class Rule:
    """One fault rule; `count` is None for unlimited."""

    def __init__(self, spec):
        if not isinstance(spec, dict):
            raise BadRule(f"a rule is a JSON object, not {spec!r}")
        unknown = set(spec) - RULE_KEYS
        if unknown:
            raise BadRule(f"unknown rule keys {sorted(unknown)}")
        if spec.get("fault") not in KINDS:
            raise BadRule(f"fault {spec.get('fault')!r} is not one of {sorted(KINDS)}")
        for key in ("count", "delay", "status"):
            value = spec.get(key)
            if value is not None and (isinstance(value, bool)
                                      or not isinstance(value, (int, float))
                                      or value < 0):
                raise BadRule(f"{key} must be a number >= 0, not {value!r}")
        self.spec = dict(spec)
        self.fault = spec["fault"]
        self.count = spec.get("count")
        self.delay = spec.get("delay")

    def matches(self, call):
        """True when every field the rule names equals the call's."""
        return all(self.spec.get(key) is None
                   or str(self.spec[key]).lower() == str(call[key] or "").lower()
                   for key in ("service", "action", "region"))

    def to_json(self):
        return {**self.spec, "count": self.count}


class State:
    """Rules, the call log and the ClientToken memory, shared by all threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.rules = []
        self.calls = []
        self.tokens = {}          # (region, token) -> (params, status, headers, body)
        self.token_locks = {}     # (region, token) -> Lock: one launch at a time

    def set_rules(self, specs):
        rules = [Rule(spec) for spec in specs]
        with self.lock:
            self.rules = rules

    def take_rule(self, call):
        """The first matching rule with count left, its count spent by one.
        Calls that no SigV4 signature identifies (moto-api, health checks)
        never meet a fault."""
        if call["service"] is None:
            return None
        with self.lock:
            for rule in self.rules:
                if rule.count != 0 and rule.matches(call):
                    if rule.count is not None:
                        rule.count -= 1
                    return rule
        return None

    def record(self, call):
        """Log a call as it arrives; its status is filled in later, so a test
        sees a call that is still being held."""
        with self.lock:
            self.calls.append(call)

    def update(self, call, **fields):
        with self.lock:
            call.update(fields)

    def snapshot(self):
        with self.lock:
            return {"calls": [dict(c) for c in self.calls],
                    "rules": [r.to_json() for r in self.rules]}

    def clear(self, rules=False, tokens=False):
        with self.lock:
            self.calls = []
            if rules:
                self.rules = []
            if tokens:
                self.tokens = {}

    def token_lock(self, key):
        with self.lock:
            return self.token_locks.setdefault(key, threading.Lock())


class Request:
    """Who an AWS request is for and what it asks: service and region from
    the SigV4 credential scope (header or presigned query), action from the
    query protocol's `Action=` or a JSON protocol's X-Amz-Target, and its
    parameters (form fields, or the JSON body's top level)."""

    def __init__(self, headers, body, query):
        self.service = self.region = None
        scope = CREDENTIAL.search(headers.get("Authorization", ""))
        credential = scope.group(1) if scope else dict(parse_qsl(query)).get("X-Amz-Credential")
        parts = (credential or "").split("/")
        if len(parts) == 5 and parts[4] == "aws4_request":
            self.region, self.service = parts[2], parts[3]
        target = headers.get("X-Amz-Target")
        content_type = headers.get("Content-Type", "")
        self.json_protocol = bool(target) or "amz-json" in content_type
        if self.json_protocol:
            self.params = json_object(body)
            self.action = target.rsplit(".", 1)[-1] if target else None
        else:
            self.params = form_fields(body, content_type, query)
            self.action = self.params.get("Action")


def form_fields(body, content_type, query):
    """The query-protocol parameters (form body, else the query string)."""
    if body and "x-www-form-urlencoded" in content_type:
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            return {}
    return dict(parse_qsl(query, keep_blank_values=True))


def json_object(body):
    """A JSON-protocol body as a dict ({} if it is not an object)."""
    try:
        value = json.loads(body or b"{}")
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def ice_message(params, region):
    """EC2's InsufficientInstanceCapacity text, spot or on-demand."""
    if params.get("InstanceMarketOptions.MarketType") == "spot":
        return "There is no Spot capacity available that matches your request."
    kind = params.get("InstanceType", "t2.small")
    zone = params.get("Placement.AvailabilityZone") or f"{region or 'us-east-1'}a"
    return (f"We currently do not have sufficient {kind} capacity in the "
            f"Availability Zone you requested ({zone}). Our system will be "
            f"working on provisioning additional capacity. You can currently "
            f"get {kind} capacity by not specifying an Availability Zone in "
            f"your request or choosing a different Availability Zone.")


def denied_message(service, action, params):
    """IAM's refusal text, naming the action and the role or queue."""
    resource = params.get("RoleArn") or params.get("QueueUrl") or "*"
    return (f"User: arn:aws:iam::123456789012:user/testing is not authorized "
            f"to perform: {service}:{action} on resource: {resource}")


def error_for(rule, request):
    """(status, code, message) the real service sends for a rule's KIND,
    with the rule's own status, code or message in their place if given."""
    table = ERRORS[rule.fault]
    status, code, message = table.get(request.service, table["*"])
    if message is None and rule.fault == "insufficient_capacity":
        message = ice_message(request.params, request.region)
    elif message is None:
        message = denied_message(request.service, request.action, request.params)
    return (int(rule.spec.get("status", status)), rule.spec.get("code", code),
            rule.spec.get("message", message))


def error_answer(service, json_protocol, status, code, message):
    """(status, headers, body) of an error in the shape the service's SDK
    parses: EC2's <Response><Errors>, the query protocol's <ErrorResponse>,
    or SQS's JSON with the query code in x-amzn-query-error."""
    request_id = str(uuid.uuid4())
    party = "Sender" if status < 500 else "Receiver"
    headers = [("x-amzn-RequestId", request_id), ("Date", formatdate(usegmt=True))]
    if json_protocol:
        prefix = "com.amazonaws.sqs#" if service == "sqs" else "com.amazon.coral.service#"
        body = {"__type": SQS_JSON_TYPES.get(code, prefix + code), "message": message}
        headers += [("Content-Type", "application/x-amz-json-1.0"),
                    ("x-amzn-query-error", f"{code};{party}")]
        return status, headers, json.dumps(body).encode()
    headers.append(("Content-Type", "text/xml;charset=UTF-8"))
    if service == "ec2":
        xml = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
               f"<Code>{escape(code)}</Code><Message>{escape(message)}</Message>"
               f"</Error></Errors><RequestID>{request_id}</RequestID></Response>")
    else:
        namespace = QUERY_NAMESPACES.get(service, "https://amazonaws.com/doc/")
        xml = (f'<ErrorResponse xmlns="{namespace}">\n  <Error>\n'
               f"    <Type>{party}</Type>\n    <Code>{escape(code)}</Code>\n"
               f"    <Message>{escape(message)}</Message>\n  </Error>\n"
               f"  <RequestId>{request_id}</RequestId>\n</ErrorResponse>\n")
    return status, headers, xml.encode()


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
        """/_proxy/...: set faults, read or clear the call log."""
        state = self.server.state
        route = (self.command, self.path.split("?")[0].rstrip("/"))
        try:
            if route == ("POST", "/_proxy/faults"):
                request = json.loads(body or b"{}")
                rules = request.get("rules") if isinstance(request, dict) else None
                if not isinstance(rules, list):
                    raise BadRule('expected {"rules": [...]}')
                state.set_rules(rules)
                self.answer_json({"rules": state.snapshot()["rules"]})
            elif route == ("GET", "/_proxy/faults"):
                self.answer_json({"rules": state.snapshot()["rules"]})
            elif route == ("GET", "/_proxy/calls"):
                self.answer_json(state.snapshot()["calls"])
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
        """Forward one AWS request, or answer it with the fault a rule names."""
        state = self.server.state
        request = Request(self.headers, body, urlsplit(self.path).query)
        call = {"time": time.time(), "service": request.service, "region": request.region,
                "action": request.action, "status": None, "fault": None}
        state.record(call)
        rule = state.take_rule(call)
        kind = rule.fault if rule else None
        if rule:
            state.update(call, fault=kind)
            self.log_message("fault %s on %s %s %s", kind, request.service,
                             request.region, request.action)

        if kind not in ("succeed_then_timeout", "succeed_then_reset"):
            # Faults that strike before the service sees the request.
            if rule and rule.delay and self.client_gone_within(rule.delay):
                self.close_connection = True     # the client gave up: moto never hears of it
                return
            if kind == "reset":
                self.reset_connection()
                return
            if kind in ERRORS:
                status, headers, answer = error_answer(
                    request.service, request.json_protocol, *error_for(rule, request))
                state.update(call, status=status)
                self.answer(status, headers, answer)
                return

        status, headers, answer = self.upstream_or_memory(call, request, body)
        state.update(call, status=status)
        if kind == "succeed_then_reset":
            self.reset_connection()
            return
        if kind == "succeed_then_timeout":
            hold = DEFAULT_HOLD if rule.delay is None else rule.delay
            if self.client_gone_within(hold):
                self.close_connection = True
                return
        try:
            self.answer(status, headers, answer)
        except OSError:
            self.close_connection = True

    def upstream_or_memory(self, call, request, body):
        """moto's answer, except that RunInstances with a ClientToken seen
        before is answered from memory as EC2 does (or refused if its
        parameters differ), so a retried launch makes no second instance.
        Tokens are per region; launches with one token are serialised."""
        token = request.params.get("ClientToken")
        if not (token and request.service == "ec2" and request.action == "RunInstances"):
            return self.forward(call, body)
        state = self.server.state
        key = (request.region, token)
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
            status, headers, answer = self.forward(call, body)
            if status == 200:
                with state.lock:
                    state.tokens[key] = (params, status, headers, answer)
            return status, headers, answer

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


def hop_by_hop(headers):
    """Lower-case names not to pass on: RFC 9110's hop-by-hop set, those the
    Connection header lists, and the framing the proxy redoes itself."""
    listed = {h.strip().lower() for v in headers.get_all("Connection") or []
              for h in v.split(",")}
    return HOP_BY_HOP | listed


class ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, port, target, verbose):
        super().__init__((HOST, port), Handler)
        self.target = urlsplit(target)
        self.verbose = verbose
        self.state = State()

    def handle_error(self, request, client_address):
        """A client that vanished mid-answer is an expected event here."""
        if not isinstance(sys.exc_info()[1], OSError) or self.verbose:
            super().handle_error(request, client_address)


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True,
                        help="moto's server, e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0,
                        help="port to listen on, 127.0.0.1; 0 (default) picks one")
    parser.add_argument("--verbose", action="store_true",
                        help="log each request and fault on stderr")
    args = parser.parse_args(argv)
    target = urlsplit(args.target)
    if target.scheme != "http" or not target.hostname:
        parser.error(f"--target {args.target!r} is not http://HOST:PORT")
    return args


def main(argv):
    args = parse_args(argv)
    server = ProxyServer(args.port, args.target, args.verbose)
    # Block the stop signals before any thread starts, so all inherit the
    # mask and the main thread's sigwait() receives them (as the emulator
    # does). An ignored signal is discarded, never waited for, and a shell
    # starts background jobs with SIGINT ignored: restore the default first.
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    for stop_signal in stop_signals:
        signal.signal(stop_signal, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    print(f"READY port={server.server_address[1]}", flush=True)
    signal.sigwait(stop_signals)
    server.shutdown()
    server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
