#!/usr/bin/env bash
# Installs the Python packages that the test tools need (the Jenkins emulator
# needs paramiko; the tests start moto's server), and only those missing:
# machines are handed over fresh, so every run must be able to bring them in,
# yet a run on a ready machine should cost nothing and print nothing.
set -euo pipefail

python="${PYTHON:-python3}"
missing=()

# need MODULE PACKAGE: queue PACKAGE when MODULE does not import.
need() {
    if ! "$python" -c "import $1" >/dev/null 2>&1; then
        missing+=("$2")
    fi
}

need paramiko paramiko
need moto.server 'moto[server]'

if ((${#missing[@]})); then
    echo "ensure-python-deps: installing ${missing[*]}" >&2
    "$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "${missing[@]}"
fi
