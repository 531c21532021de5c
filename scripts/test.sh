#!/usr/bin/env bash
# Runs every check and test: rustfmt and clippy (warnings are errors), the
# Jenkins side (Groovy under Debian's groovy, job definitions, start_swarm.sh,
# and every shell script through shellcheck), then cargo's unit tests and the
# integration tests that drive the built binary against moto's server and the
# project's Jenkins emulator (started by the tests on loopback ports), the run
# report rendered in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-python-deps.sh
scripts/ensure-groovy.sh
scripts/ensure-browser.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/slave-manager-target}"
cargo fmt --check
tests/groovy/run.sh   # the Jenkins side: Groovy scripts, job definitions, start_swarm.sh, shellcheck
cargo clippy --all-targets --quiet -- -D warnings
cargo test --all-targets "$@"
