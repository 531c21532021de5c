#!/usr/bin/env bash
# Runs every test: unit tests, and integration tests that drive the built
# binary against moto's server and the project's Jenkins emulator (both
# started by the tests themselves on loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-python-deps.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/slave-manager-target}"
cargo test --all-targets "$@"
