"""Jenkins' HTTP face, as an anonymous client sees it, plus the control
endpoints through which tests drive the emulator (`/emulator/...`).

`/login` names the SSH endpoint in X-SSH-Endpoint and the instance identity
in X-Instance-Identity; the root and other pages answer 403 without them
(unless anonymous users may read, as on an open Jenkins);
`/jnlpJars/jenkins-cli.jar` serves a placeholder jar. Optionally over TLS.
"""

import hashlib
import json
import ssl
import sys
import time
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from emulator.scenario import ScenarioError

JENKINS_VERSION = "2.479.3"
# Jenkins.SESSION_HASH: changes at each start of the master.
SESSION_HASH = hashlib.sha256(str(time.time()).encode()).hexdigest()[:8]
# An empty zip archive: a well-formed jar with nothing in it. The manager only
# downloads the jar; the `java` stand-in never opens it.
CLI_JAR = b"PK\x05\x06" + bytes(18)


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
    GET    /emulator/sim              the simulation's figures (when one
                                      makes the dumps: bench/sim_jenkins.py)
    POST   /emulator/sim/fault        a fault in the simulation's model
                                      (bench/sim_jenkins.py says which)
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
            ("X-SSH-Endpoint", self.jenkins.ssh_endpoint),
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
                self.send_json({"error": "not simulating (run "
                                "bench/sim_jenkins.py)"}, HTTPStatus.NOT_FOUND)
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
        elif self.path == "/emulator/sim/fault" and self.jenkins.simulation is not None:
            try:
                self.send_json(self.jenkins.simulation.fault(self.read_json()))
            except ScenarioError as err:
                self.send_json({"error": str(err)}, HTTPStatus.BAD_REQUEST)
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
