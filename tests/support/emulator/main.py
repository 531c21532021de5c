"""The emulator's command line and start-up: parse the flags, build the
Jenkins state, start the SSH and HTTP sides, print `READY http=<port>
ssh=<port>`, run until SIGTERM or SIGINT.

`build_parser` and `serve` are also the hooks of bench/sim_jenkins.py, which
adds its own flags and hands `serve` a simulation that makes the dumps.
"""

import argparse
import signal
import socket
import ssl
import sys
import threading
from http.server import ThreadingHTTPServer

from emulator.scenario import Jenkins, load_scenario
from emulator.ssh import serve_ssh
from emulator.web import HttpHandler, TlsHttpServer

HOST = "127.0.0.1"


def build_parser(description):
    """The emulator's flags (the bench adds its simulation's to them)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--user", required=True,
                        help="the only Jenkins user that may log in over SSH")
    parser.add_argument("--authorized-keys", required=True, metavar="FILE",
                        help="OpenSSH public keys registered for that user")
    parser.add_argument("--scenario", metavar="FILE",
                        help="JSON: queue, nodes, jobs, messages or dumps")
    parser.add_argument("--log", metavar="FILE",
                        help="also append each command as a JSON line here")
    for side in ("http", "ssh"):
        parser.add_argument(f"--{side}-port", type=int, default=0,
                            help="0 (default) picks a free port")
    parser.add_argument("--warning-line", action="store_true",
                        help="print the jar's HTTPS warning line before the dump")
    parser.add_argument("--anonymous-read", action="store_true",
                        help="grant anonymous users Overall/Read: every page "
                             "then carries X-SSH-Endpoint (by default only "
                             "/login does, as on a secured Jenkins)")
    parser.add_argument("--tls-cert", metavar="FILE",
                        help="serve HTTPS with this PEM certificate (chain)")
    parser.add_argument("--tls-key", metavar="FILE", help="the private key of --tls-cert")
    parser.add_argument("--tcp-nodelay", action="store_true",
                        help="set TCP_NODELAY on SSH connections (off by "
                             "default: small writes then wait for the "
                             "client's delayed ACK, as Nagle's algorithm has it)")
    return parser


def check_args(parser, args):
    """Refuse flag combinations that cannot work (exits with usage)."""
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")


def http_server(args, jenkins):
    """The HTTP side, plain or over TLS; None if the certificate is bad."""
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as err:
            print(f"jenkins-emulator: cannot load {args.tls_cert}: {err}",
                  file=sys.stderr)
            return None
        httpd = TlsHttpServer((HOST, args.http_port), HttpHandler, context)
    else:
        httpd = ThreadingHTTPServer((HOST, args.http_port), HttpHandler)
    httpd.daemon_threads = True
    httpd.jenkins = jenkins
    httpd.anonymous_read = args.anonymous_read
    return httpd


def serve(args, simulation=None):
    """Run the emulator until SIGTERM/SIGINT; the exit status.

    `simulation` (see `Jenkins`) also gets `start()`, called before READY is
    printed, and `stop()`, called once a stop signal arrived.
    """
    stop = threading.Event()
    try:
        jenkins = Jenkins(load_scenario(args.scenario), args.user,
                          args.authorized_keys, args.log, args.warning_line,
                          stop, simulation)
    except (OSError, ValueError) as err:
        print(f"jenkins-emulator: bad scenario {args.scenario}: {err}",
              file=sys.stderr)
        return 2

    listener = socket.create_server((HOST, args.ssh_port))
    ssh_port = listener.getsockname()[1]
    jenkins.ssh_endpoint = f"{HOST}:{ssh_port}"
    httpd = http_server(args, jenkins)
    if httpd is None:
        return 2

    # Block the stop signals before starting any thread, so that every thread
    # inherits the mask and the main thread's sigwait() receives them at once
    # (a Python handler may wait for the main thread to wake up by itself).
    stop_signals = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    threading.Thread(target=serve_ssh, args=(jenkins, listener, args.tcp_nodelay),
                     daemon=True).start()
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1},
                     daemon=True).start()
    if simulation is not None:
        simulation.start()

    print(f"READY http={httpd.server_address[1]} ssh={ssh_port}", flush=True)
    signal.sigwait(stop_signals)
    stop.set()
    if simulation is not None:
        simulation.stop()
    httpd.shutdown()
    httpd.server_close()
    listener.close()
    return 0


def main(argv, description):
    parser = build_parser(description)
    args = parser.parse_args(argv)
    check_args(parser, args)
    return serve(args)
