#!/usr/bin/env bash
# Shows slave_manager at work, with no AWS account and no Jenkins: moto's
# server plays EC2/STS/IAM, tests/support/jenkins_emulator.py plays the Jenkins
# master (its queue, its nodes, its SSH CLI). The manager runs 3 passes
# against them; the demo prints the fleet before and after, the manager's
# own log, its CSV statistics and the Jenkins commands it sent.
#
#   scripts/demo.sh [MANAGER FLAGS...]     e.g. --debug, --cli jar
#
# Flags are passed to the manager; one that the demo sets itself (--cli,
# --loop_counter, ...) replaces the demo's value. Everything happens in a
# temporary directory that is removed on exit, and every process the demo
# starts is stopped then too, whatever way it ends.

# Helpers below run only through `trap` or as wait_for's argument, which
# ShellCheck cannot follow: it would call their bodies unreachable.
# shellcheck disable=SC2317
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
python="${PYTHON:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/slave-manager-target}"
bin="$CARGO_TARGET_DIR/debug/slave_manager"

# The envs the world has: name:account:region. Two accounts, two regions, so
# the output shows that each agent lands where its label says.
envs="dev:111111111111:us-east-2,prod:222222222222:us-west-2"
# The master's security group lives here (the manager's default region).
master_region="us-west-2"

heading() { printf '\n== %s ==\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

for tool in cargo curl ssh-keygen "$python"; do
    command -v "$tool" >/dev/null || die "$tool is needed but not installed"
done

heading "build"
scripts/ensure-python-deps.sh
cargo build --quiet
echo "built $bin"

# --- Temporary world; torn down on any exit -------------------------------

work="$(mktemp -d "${TMPDIR:-/tmp}/slave-manager-demo.XXXXXX")"
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap cleanup EXIT
# Turn Ctrl-C and kill into an ordinary exit, so the EXIT trap cleans up.
trap 'exit 130' INT
trap 'exit 143' TERM
cd "$work"

# A free loopback port for moto (its server cannot report one it picked).
free_port() {
    "$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND until it succeeds.
wait_for() {
    local seconds="$1" what="$2" tries
    shift 2
    for ((tries = seconds * 10; tries > 0; tries--)); do
        "$@" && return 0
        sleep 0.1
    done
    die "$what did not come up within $seconds s"
}

# show_log_and_die FILE MESSAGE: a helper failed; its log says why.
show_log_and_die() {
    echo "--- $1" >&2
    tail -n 20 "$1" >&2 || true
    die "$2"
}

heading "setup"
# The manager's CLI key; the emulator accepts it for user slave-manager.
ssh-keygen -q -t ed25519 -N '' -f id_rsa
cp id_rsa.pub authorized_keys

moto_port="$(free_port)"
aws="http://127.0.0.1:$moto_port"
"$python" "$repo/tests/support/moto_ec2.py" -H 127.0.0.1 -p "$moto_port" >moto.log 2>&1 &
moto_pid=$!
pids+=("$moto_pid")
moto_up() {
    kill -0 "$moto_pid" 2>/dev/null || show_log_and_die moto.log "moto's server exited"
    curl -sf -o /dev/null "$aws/moto-api/"
}
wait_for 60 "moto's server" moto_up
echo "moto:    $aws"

"$python" "$repo/tests/support/jenkins_emulator.py" --user slave-manager \
    --authorized-keys authorized_keys --log commands.jsonl \
    --http-port 0 --ssh-port 0 >emulator.out 2>emulator.log &
emulator_pid=$!
pids+=("$emulator_pid")
emulator_up() {
    kill -0 "$emulator_pid" 2>/dev/null || show_log_and_die emulator.log "the Jenkins emulator exited"
    grep -q '^READY ' emulator.out
}
wait_for 30 "the Jenkins emulator" emulator_up
read -r _ http ssh <emulator.out
jenkins="http://127.0.0.1:${http#http=}/"
echo "jenkins: $jenkins (CLI over SSH on port ${ssh#ssh=})"

# The AWS side: envs, networks, the master's SG, and the agents that exist
# before the manager runs (tests/support/demo_scenario.py says which and why).
"$python" "$repo/tests/support/demo_scenario.py" agents >agents.json
"$python" "$repo/tests/support/moto_world.py" --endpoint "$aws" --envs "$envs" \
    --jenkins-url "$jenkins" --master-region "$master_region" \
    --agents agents.json --world-json world.json \
    --environment-json environment.json >/dev/null
ami_ids="$("$python" -c 'import json, sys; print(json.load(sys.stdin)["ami_ids"])' <world.json)"
echo "envs:    $envs"
echo "AMIs:    $ami_ids (the current ones)"

# The Jenkins side: its build queue and its nodes, which name the instances
# just launched, so the scenario is computed from the world.
"$python" "$repo/tests/support/demo_scenario.py" scenario world.json >scenario.json
curl -sf -o /dev/null -X PUT --data @scenario.json "${jenkins}emulator/state"

heading "Jenkins"
"$python" "$repo/tests/support/demo_scenario.py" describe scenario.json

heading "before"
"$python" "$repo/tests/support/moto_world.py" fleet --endpoint "$aws" --environment environment.json
"$python" "$repo/tests/support/moto_world.py" fleet --json --endpoint "$aws" --environment environment.json >before.json

# --- The manager -------------------------------------------------------------

# The demo's settings, each dropped when the caller passes that flag.
defaults=(--cli ssh --loop_counter 3 --pass_interval 1
          --max_num_of_slaves_in_env 4 --jenkins_master_region "$master_region")
manager_args=(--url "$jenkins" --id_rsa id_rsa --jenkins_user slave-manager
              --owner_email ops@example.com --ami_ids "$ami_ids")
for ((i = 0; i < ${#defaults[@]}; i += 2)); do
    flag="${defaults[i]}"
    overridden=no
    for arg in "$@"; do
        [[ "$arg" == "$flag" || "$arg" == "$flag="* ]] && overridden=yes
    done
    [[ $overridden == no ]] && manager_args+=("$flag" "${defaults[i + 1]}")
done
manager_args+=("$@")

heading "slave_manager ${manager_args[*]}"
# tests/support/bin holds a `java` stand-in, so `--cli jar` works without a
# JVM or a real jenkins-cli.jar; with `--cli ssh` it is never used.
started=$SECONDS
status=0
PATH="$repo/tests/support/bin:$PATH" \
    AWS_ENDPOINT_URL="$aws" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
    NO_COLOR='' "$bin" "${manager_args[@]}" || status=$?
echo "(exit status $status, $((SECONDS - started)) s)"

heading "after"
"$python" "$repo/tests/support/moto_world.py" fleet --endpoint "$aws" --environment environment.json
"$python" "$repo/tests/support/moto_world.py" fleet --json --endpoint "$aws" --environment environment.json >after.json

heading "what changed"
"$python" "$repo/tests/support/demo_scenario.py" changes world.json before.json after.json

heading "statistics (CSV files for the Jenkins Plot plugin)"
shopt -s nullglob
csvs=(properties_*.csv)
if ((${#csvs[@]})); then
    for csv in "${csvs[@]}"; do
        printf '==> %s <==\n' "$csv"
        cat "$csv"
    done
else
    echo "  no properties_*.csv written"
fi

heading "Jenkins CLI commands received"
if [[ -s commands.jsonl ]]; then
    "$python" "$repo/tests/support/demo_scenario.py" commands commands.jsonl
else
    echo "  none"
fi

exit "$status"
