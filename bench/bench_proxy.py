#!/usr/bin/env python3
"""A counting HTTP proxy in front of moto's server, for the benchmark.

The manager's AWS requests go through it (AWS_ENDPOINT_URL points here), so
the benchmark can count them per pass, by service and action, retries and STS
included, and time each one as the manager sees it. It forwards every request
unchanged to the target over a kept-alive connection and records

    {"start": unix time, "end": unix time, "service": "ec2", "region": ...,
     "action": "DescribeInstances", "status": 200, "bytes": N}

Control: GET /__bench_proxy__/log[?since=N] answers the records from the
N-th on (JSON list); DELETE /__bench_proxy__/log forgets them. Once listening
it prints `READY port=<port>` on stdout; SIGTERM or SIGINT stops it.

Run: python3 bench/bench_proxy.py --target http://127.0.0.1:PORT [--port N]
"""

import argparse
import http.client
import json
import re
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOST = "127.0.0.1"
CONTROL = "/__bench_proxy__/log"
# Headers that belong to one hop, never forwarded (RFC 9110 7.6.1).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate",
              "proxy-authorization", "te", "trailer", "transfer-encoding",
              "upgrade", "content-length"}
CREDENTIAL = re.compile(r"Credential=[^/]+/[^/]+/([^/]+)/([^/]+)/")


def request_action(headers, body):
    """(service, region, action) of an AWS request: the SigV4 scope names
    the service and region; the Query protocol (EC2, STS) puts the action in
    the form body, the JSON protocol (SQS) in X-Amz-Target."""
    match = CREDENTIAL.search(headers.get("Authorization", ""))
    service, region = (match.group(2), match.group(1)) if match else ("?", "?")
    target = headers.get("X-Amz-Target")
    if target:
        return service, region, target.rpartition(".")[2]
    try:
        form = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
    except ValueError:
        form = {}
    return service, region, form.get("Action", ["?"])[0]


class Recorder:
    """The request log, shared by the handler threads."""

    def __init__(self):
        self._lock = threading.Lock()
        self._records = []

    def add(self, record):
        with self._lock:
            self._records.append(record)

    def since(self, first):
        with self._lock:
            return self._records[first:]

    def clear(self):
        with self._lock:
            self._records.clear()


class ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"     # keep the client's connection alive

    def log_message(self, format, *args):
        """No access log: the records are the log."""

    def _upstream(self):
        """This thread's kept-alive connection to the target."""
        local = self.server.local
        if getattr(local, "conn", None) is None:
            local.conn = http.client.HTTPConnection(
                self.server.target_host, self.server.target_port, timeout=120)
        return local.conn

    def _read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _control(self):
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        if self.command == "DELETE":
            self.server.recorder.clear()
            records = []
        else:
            records = self.server.recorder.since(int(query.get("since", ["0"])[0]))
        body = json.dumps(records).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self):
        if self.path.startswith(CONTROL):
            self._control()
            return
        body = self._read_body()
        headers = {k: v for k, v in self.headers.items()
                   if k.lower() not in HOP_BY_HOP}
        if body or self.command in ("POST", "PUT", "PATCH"):
            headers["Content-Length"] = str(len(body))
        start = time.time()
        for attempt in (1, 2):
            conn = self._upstream()
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                answer = conn.getresponse()
                data = answer.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                self.server.local.conn = None
                if attempt == 2:
                    self.send_error(502, "moto did not answer")
                    return
        end = time.time()
        service, region, action = request_action(self.headers, body)
        self.server.recorder.add({
            "start": start, "end": end, "service": service, "region": region,
            "action": action, "status": answer.status, "bytes": len(data)})
        self.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in HOP_BY_HOP:
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _forward


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True, help="moto's URL")
    parser.add_argument("--port", type=int, default=0,
                        help="port to listen on (0, the default: a free one)")
    args = parser.parse_args(argv)
    target = urllib.parse.urlsplit(args.target)
    server = ThreadingHTTPServer((HOST, args.port), ProxyHandler)
    server.daemon_threads = True
    server.target_host = target.hostname
    server.target_port = target.port or 80
    server.recorder = Recorder()
    server.local = threading.local()
    stop_signals = {signal.SIGTERM, signal.SIGINT}
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
