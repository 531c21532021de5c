#!/usr/bin/env bash
# Runs every check and test: rustfmt, ruff over the Python tools, the Jenkins
# side (Groovy under Debian's groovy, job definitions, start_swarm.sh, and
# every shell script through shellcheck), the Python tools' own tests
# (tests/tools: the AWS proxy, the emulator's tokenizer, the simulation, the
# soak's invariant checker), the links between the Markdown files, clippy
# (warnings are errors), then cargo's unit tests and the integration tests
# that drive the built binary against moto's server and the project's Jenkins
# emulator (started by the tests on loopback ports; tests/soak.rs is a short
# chaos soak), the run report rendered in headless Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-python-deps.sh
scripts/ensure-groovy.sh
scripts/ensure-browser.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/slave-manager-target}"
cargo fmt --check
"${PYTHON:-python3}" -m ruff check --quiet --no-cache .   # ruff.toml; the version pinned in requirements-dev.txt
tests/groovy/run.sh   # the Jenkins side: Groovy scripts, job definitions, start_swarm.sh, shellcheck
"${PYTHON:-python3}" tests/tools/run.py   # the Python tools' own tests: the AWS proxy, the emulator's tokenizer, the bench's simulation, the soak's checker
"${PYTHON:-python3}" tests/check_doc_links.py   # relative links between README, docs/ and bench/RESULTS.md
# --workspace: the pure core (crates/core) is a crate of its own.
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo test --workspace --all-targets "$@"
