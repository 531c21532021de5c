#!/usr/bin/env python3
"""moto's server, one step closer to EC2 where the manager relies on it.

RunInstances: EC2 launches as many instances as MaxCount asks when it has
the capacity (MinCount is only the least it accepts); moto launches
MinCount, so every batched launch would look like a short fill.

  moto_ec2.py -H 127.0.0.1 -p PORT     (the arguments of moto.server)
"""

import sys

from moto.ec2.responses.instances import InstanceResponse
from moto.server import main

_get_param = InstanceResponse._get_param


def _get_param_as_ec2(self, param_name, if_none=None):
    if param_name == "MinCount":
        wanted = _get_param(self, "MaxCount")
        if wanted is not None:
            return wanted
    return _get_param(self, param_name, if_none)


InstanceResponse._get_param = _get_param_as_ec2

if __name__ == "__main__":
    main(sys.argv[1:])
