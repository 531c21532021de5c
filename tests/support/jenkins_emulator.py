#!/usr/bin/env python3
"""A stand-in for the Jenkins master that slave_manager talks to.

No real Jenkins runs in tests or demos, so this serves the two faces of
Jenkins that the manager uses (SPEC A5.1, A11), from the `emulator` package
beside this file:

* HTTP, as a secured Jenkins answers anonymous users (emulator/web.py):
  `/login` names the SSH endpoint in `X-SSH-Endpoint` and the instance
  identity in `X-Instance-Identity`, the root and other pages answer 403
  without them (`--anonymous-read` grants Overall/Read to anonymous, as an
  open Jenkins does), `/jnlpJars/jenkins-cli.jar` serves a placeholder jar.
  `--tls-cert`/`--tls-key` serve it over HTTPS. Tests drive the emulator
  through `/emulator/...`; every other request is logged (`/emulator/requests`).
* SSH: the CLI (emulator/ssh.py). Its host key is the instance identity, an
  RSA key, as Jenkins' sshd module serves it; a test can make it serve
  another key (an impostor on the path, `POST /emulator/host-key`).
  Public-key auth for one user (its name matched ignoring case, as Jenkins'
  default user-id strategy does); each exec'd command line is split with a
  port of Jenkins' `hudson.util.QuotedStringTokenizer` (emulator/tokenizer.py),
  so a test can prove that the manager's quoting round-trips, and answered
  from the scenario (emulator/scenario.py): `groovy =` prints the dump,
  `build JOB` prints the job's output.

Every command is recorded (memory, and `--log` as JSON lines), with when its
connection was accepted and how long the command took. Once both servers
listen, one line `READY http=<port> ssh=<port>` goes to stdout.

The benchmark's closed loop (bench/sim_jenkins.py) runs this emulator with
a simulation making the dumps.

Run: python3 tests/support/jenkins_emulator.py --user USER --authorized-keys FILE
         [--scenario FILE] [--log FILE] [--http-port N] [--ssh-port N]
         [--warning-line] [--anonymous-read] [--tls-cert FILE --tls-key FILE]
         [--tcp-nodelay]
"""

import sys

from emulator.main import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], __doc__.split("\n\n")[0]))
