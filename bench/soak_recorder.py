"""The soak's recorder: an HTTP hop between the fault proxy and moto that
writes down every AWS call that reached moto, with the instance ids it
named, the ones RunInstances made and moto's answer.

It sits behind the fault proxy on purpose: a call a fault refused never
reaches it, one whose answer a fault held back or lost does. So what it
records is what happened to moto's state, at the time it happened, which
is what the invariant checker (bench/invariants.py) judges. It can also
kill the manager right after a call of a given kind reached moto (a
`kill -9` between a launch and the marker that should follow it).

Only the soak driver (bench/soak.py) uses it; it runs in the driver's
process: `Recorder(target).start()`, then `drain()` the finished calls.
"""

import re
import threading
import time
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

CREDENTIAL = re.compile(r"Credential=([^,\s]+)")
MADE = re.compile(r"<instanceId>(i-[0-9a-f]+)</instanceId>")
ERROR_CODE = re.compile(r"<Code>([^<]+)</Code>")
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization",
              "te", "trailer", "trailers", "transfer-encoding", "upgrade", "expect",
              "content-length"}
# Request parameters that name instances, per EC2 action.
NAMED = re.compile(r"^(InstanceId(\.\d+)?|ResourceId\.\d+)$")


class Recorder:
    """Forwards to `target`, records each call; thread-safe."""

    def __init__(self, target):
        self.target = urlsplit(target)
        self.lock = threading.Lock()
        self.calls = []          # in arrival order; a call is complete once "end" is set
        self._taken = 0
        self.hooks = []          # (predicate(call), action(call)), each used once
        self.wake = threading.Event()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_):
                pass

            def do_any(self):
                recorder.handle(self)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self):
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
        return self

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def on_next(self, predicate, action):
        """Run `action(call)` after the next finished call that `predicate`
        accepts, before its answer goes back."""
        with self.lock:
            self.hooks.append((predicate, action))

    def drain(self):
        """(the finished calls not taken yet, in arrival order; the horizon:
        every call that arrived before it is among those taken so far).
        Stops at the first call still under way, so none is ever taken out
        of order."""
        with self.lock:
            out = []
            while self._taken < len(self.calls) and "end" in self.calls[self._taken]:
                out.append(self.calls[self._taken])
                self._taken += 1
            pending = self.calls[self._taken:self._taken + 1]
            return out, pending[0]["time"] if pending else time.time()

    def handle(self, handler):
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length > 0 else b""
        call = describe(handler.headers, body, urlsplit(handler.path).query)
        with self.lock:
            call["time"] = time.time()
            self.calls.append(call)
        status, headers, answer = self.forward(handler, body)
        text = answer.decode("utf-8", errors="replace") if call["service"] == "ec2" else ""
        made = list(dict.fromkeys(MADE.findall(text))) if call["action"] == "RunInstances" and status == 200 else []
        code = ERROR_CODE.search(text) if status != 200 else None
        hook = None
        with self.lock:
            call.update(status=status, made=made, code=code.group(1) if code else None,
                        end=time.time())
            for i, (predicate, _) in enumerate(self.hooks):
                if predicate(call):
                    hook = self.hooks.pop(i)[1]
                    break
        if call["action"] == "RunInstances":
            self.wake.set()          # the checker reads moto at once: caps
        if hook is not None:
            hook(call)
        try:
            handler.send_response_only(status)
            for name, value in headers:
                handler.send_header(name, value)
            handler.send_header("Content-Length", str(len(answer)))
            handler.end_headers()
            handler.wfile.write(answer)
            handler.wfile.flush()
        except OSError:
            handler.close_connection = True

    def forward(self, handler, body):
        connection = HTTPConnection(self.target.hostname, self.target.port, timeout=120)
        try:
            connection.putrequest(handler.command, handler.path, skip_host=True,
                                  skip_accept_encoding=True)
            for name, value in handler.headers.items():
                if name.lower() not in HOP_BY_HOP:
                    connection.putheader(name, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body or None)
            response = connection.getresponse()
            answer = response.read()
            headers = [(n, v) for n, v in response.headers.items() if n.lower() not in HOP_BY_HOP]
            return response.status, headers, answer
        except OSError as err:
            return 502, [("Content-Type", "text/plain")], f"recorder: {err}".encode()
        finally:
            connection.close()


def describe(headers, body, query):
    """service, region, action and the instance ids a request names."""
    scope = CREDENTIAL.search(headers.get("Authorization", ""))
    parts = (scope.group(1) if scope else "").split("/")
    service = region = None
    if len(parts) == 5:
        region, service = parts[2], parts[3]
    target = headers.get("X-Amz-Target")
    if target:
        return {"service": service, "region": region, "action": target.rsplit(".", 1)[-1],
                "ids": []}
    try:
        params = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True)) if body else \
            dict(parse_qsl(query, keep_blank_values=True))
    except UnicodeDecodeError:
        params = {}
    ids = [v for k, v in params.items() if NAMED.match(k) and v.startswith("i-")]
    return {"service": service, "region": region, "action": params.get("Action"), "ids": ids}
