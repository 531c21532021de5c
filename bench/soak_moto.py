#!/usr/bin/env python3
"""moto's server for the soak, closer to EC2: RunInstances fills MaxCount
(tests/support/moto_ec2.py), and a started instance's LaunchTime becomes
the time of the start, as EC2 reports it (moto keeps the
first launch's). The manager times a running agent's boot from LaunchTime
(its zombie limit, its boot grace); with moto's value an agent restarted
after the limit would look like an agent that never registered.

  soak_moto.py -H 127.0.0.1 -p PORT     (the arguments of moto.server)
"""

import os
import sys

from moto.core.utils import utcnow

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tests", "support"))
import moto_ec2  # noqa: E402,F401 - EC2's RunInstances fill, on import
from moto.ec2.models.instances import Instance
from moto.server import main

_start = Instance.start


def start(self):
    previous = _start(self)
    self.launch_time = utcnow()
    return previous


Instance.start = start

if __name__ == "__main__":
    main(sys.argv[1:])
