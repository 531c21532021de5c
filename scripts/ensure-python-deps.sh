#!/usr/bin/env bash
# Installs the Python packages pinned in requirements-dev.txt (the test
# doubles import paramiko, boto3 and cryptography; the tests start moto's
# server; scripts/test.sh runs ruff) when one is missing or at another
# version: machines are handed over fresh, so every run must be able to bring
# them in, yet a run on a ready machine should cost nothing and print nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
requirements="requirements-dev.txt"

# Exit status 0 when every pin is met (and moto's server extra imports).
pins_met() {
    "$python" - "$requirements" <<'PY' >/dev/null 2>&1
import re, sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#", 1)[0].strip()
    if not line:
        continue
    name, pinned = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==(\S+)", line).groups()
    try:
        if version(name) != pinned:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
import moto.server  # noqa: F401  (the [server] extra's dependencies)
PY
}

if ! pins_met; then
    echo "ensure-python-deps: installing $requirements" >&2
    "$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore -r "$requirements"
fi
