#!/usr/bin/env bash
# start_swarm.sh: boot script of a slave_manager agent. Install it in the
# agent AMI as /var/lib/cloud/scripts/per-boot/start_swarm.sh (mode 0755):
# cloud-init runs it at every boot, including after the manager starts a
# stopped agent.
#
# It reads, from the instance metadata service (IMDSv2) and AWS:
#   - the instance id, private IP, AMI id and region (identity document);
#   - the instance's `slave_data` tag, written by slave_manager at launch:
#     {"slave_labels", "num_of_executors", "description", "jenkins_url", …};
#   - the Swarm password: SSM parameter `jenkins_slave` (SecureString);
# then starts the Jenkins Swarm client so that the node is what the manager
# expects: named ENV-<private ip> (ENV = first `_` part of the label), its
# description "<slave_data description> InstanceID=<id> AmiId=<ami>", its
# labels the slave_labels (Swarm adds `swarm`).
#
# Safe to run again: if a Swarm client started by it still runs, it does
# nothing. Every step logs to $SWARM_LOG; a missing piece (no IMDS token, no
# tag, no password, no jar…) is named there and the script exits non-zero.
#
# Settings (environment, or /etc/default/start_swarm, which is sourced):
#   SWARM_USER              Jenkins account the Swarm client logs in as (required)
#   SWARM_PASSWORD_PARAMETER SSM parameter holding its password   [jenkins_slave]
#   SWARM_JAR               the Swarm client jar        [/jenkins/swarm-client.jar]
#   SWARM_FSROOT            agent work directory                  [/jenkins/ws]
#   SWARM_LOG               log of this script and the client [/var/log/swarm.log]
#   SWARM_PIDFILE           pid of the running client     [/run/swarm-client.pid]
#   SWARM_EXTRA_ARGS        more Swarm client options, word-split (e.g. -webSocket)
#   TAG_WAIT_SECONDS        how long to wait for the slave_data tag          [60]
#   SWARM_START_CHECK_SECONDS how long the client must stay up to count as started [2]
#   START_SWARM_CONFIG      the settings file                [/etc/default/start_swarm]
# and, for tests, the tools and endpoints:
#   IMDS_URL [http://169.254.169.254]  AWS_CLI [aws]  JQ [jq]  JAVA [java]  CURL [curl]
set -uo pipefail

CONFIG="${START_SWARM_CONFIG:-/etc/default/start_swarm}"
if [[ -r "$CONFIG" ]]; then
    # shellcheck source=/dev/null
    . "$CONFIG"
fi

IMDS_URL="${IMDS_URL:-http://169.254.169.254}"
AWS_CLI="${AWS_CLI:-aws}"
JQ="${JQ:-jq}"
JAVA="${JAVA:-java}"
CURL="${CURL:-curl}"
SWARM_USER="${SWARM_USER:-}"
SWARM_PASSWORD_PARAMETER="${SWARM_PASSWORD_PARAMETER:-jenkins_slave}"
SWARM_JAR="${SWARM_JAR:-/jenkins/swarm-client.jar}"
SWARM_FSROOT="${SWARM_FSROOT:-/jenkins/ws}"
SWARM_LOG="${SWARM_LOG:-/var/log/swarm.log}"
SWARM_PIDFILE="${SWARM_PIDFILE:-/run/swarm-client.pid}"
SWARM_EXTRA_ARGS="${SWARM_EXTRA_ARGS:-}"
TAG_WAIT_SECONDS="${TAG_WAIT_SECONDS:-60}"

log() {
    local line
    line="$(date -u +%Y-%m-%dT%H:%M:%SZ) start_swarm: $*"
    printf '%s\n' "$line" >&2
    printf '%s\n' "$line" >>"$SWARM_LOG" 2>/dev/null || true
}

fail() {
    log "ERROR: $*"
    exit 1
}

# ---- the tools
for tool in "$CURL" "$JQ" "$AWS_CLI" "$JAVA"; do
    command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is not installed (or not on PATH); the agent AMI needs curl, jq, the aws CLI and java"
done
[[ -r "$SWARM_JAR" ]] || fail "the Swarm client jar $SWARM_JAR is missing; put it in the AMI or set SWARM_JAR"
[[ -n "$SWARM_USER" ]] || fail "SWARM_USER is not set: the Jenkins account the Swarm client logs in as (set it in $CONFIG)"

# ---- already running?
if [[ -r "$SWARM_PIDFILE" ]]; then
    pid="$(cat "$SWARM_PIDFILE" 2>/dev/null || true)"
    if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
        && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$SWARM_JAR"; then
        log "a Swarm client already runs (pid $pid); nothing to do"
        exit 0
    fi
fi
# Started some other way (by hand, before this script kept a pid file)?
if command -v pgrep >/dev/null 2>&1 && pid="$(pgrep -f -- "-jar $SWARM_JAR" | head -n 1)" && [[ -n "$pid" ]]; then
    log "a Swarm client already runs (pid $pid, not started by this script); nothing to do"
    exit 0
fi

# ---- instance metadata (IMDSv2: a session token first)
token="$("$CURL" -sf --max-time 5 --retry 5 --retry-connrefused -X PUT "$IMDS_URL/latest/api/token" \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 300')" || token=""
[[ -n "$token" ]] || fail "no IMDSv2 session token from $IMDS_URL/latest/api/token (is the metadata service reachable, hop limit high enough?)"

imds() {
    "$CURL" -sf --max-time 5 --retry 3 -H "X-aws-ec2-metadata-token: $token" "$IMDS_URL/latest/$1"
}

identity="$(imds dynamic/instance-identity/document)" || fail "cannot read the instance identity document from the metadata service"
region="$("$JQ" -r '.region // empty' <<<"$identity" 2>/dev/null)"
[[ -n "$region" ]] || fail "the instance identity document has no region"
ami_id="$("$JQ" -r '.imageId // empty' <<<"$identity" 2>/dev/null)"
[[ -n "$ami_id" ]] || fail "the instance identity document has no imageId"
instance_id="$(imds meta-data/instance-id)" || fail "cannot read meta-data/instance-id"
[[ -n "$instance_id" ]] || fail "meta-data/instance-id is empty"
private_ip="$(imds meta-data/local-ipv4)" || fail "cannot read meta-data/local-ipv4"
[[ -n "$private_ip" ]] || fail "meta-data/local-ipv4 is empty"
log "instance $instance_id ($private_ip) in $region on $ami_id"

# ---- the slave_data tag (set at launch; waits a little for older launchers that tag later)
slave_data=""
deadline=$((SECONDS + TAG_WAIT_SECONDS))
while :; do
    tags="$("$AWS_CLI" ec2 describe-tags \
        --filters "Name=resource-id,Values=$instance_id" "Name=key,Values=slave_data" \
        --region "$region" --output json)" || fail "aws ec2 describe-tags failed for $instance_id in $region (does the instance profile allow ec2:DescribeTags?)"
    slave_data="$("$JQ" -r '.Tags[0].Value // empty' <<<"$tags" 2>/dev/null)"
    if [[ -n "$slave_data" ]] || ((SECONDS >= deadline)); then break; fi
    sleep 5
done
[[ -n "$slave_data" ]] || fail "instance $instance_id has no slave_data tag: it was not launched by slave_manager (or the tag is not readable)"

field() {
    # shellcheck disable=SC2016 # $k is jq's variable
    "$JQ" -r --arg k "$1" '.[$k] // empty | tostring' <<<"$slave_data" 2>/dev/null
}
"$JQ" -e 'type == "object"' >/dev/null 2>&1 <<<"$slave_data" || fail "the slave_data tag is not a JSON object: $slave_data"
labels="$(field slave_labels)"
executors="$(field num_of_executors)"
description="$(field description)"
jenkins_url="$(field jenkins_url)"
[[ -n "$labels" ]] || fail "the slave_data tag has no slave_labels"
[[ "$executors" =~ ^[1-9][0-9]*$ ]] || fail "the slave_data tag's num_of_executors is not a positive number: '$executors'"
[[ -n "$jenkins_url" ]] || fail "the slave_data tag has no jenkins_url"
# The env is the first `_` part of the first label (env names contain no `_`).
first_label="${labels%% *}"
env_name="${first_label%%_*}"

# ---- the Swarm password
parameter="$("$AWS_CLI" ssm get-parameter --name "$SWARM_PASSWORD_PARAMETER" --with-decryption \
    --region "$region" --output json)" || fail "cannot read the SSM parameter $SWARM_PASSWORD_PARAMETER in $region (does it exist; does the instance profile allow ssm:GetParameter and kms:Decrypt?)"
password="$("$JQ" -r '.Parameter.Value // empty' <<<"$parameter" 2>/dev/null)"
[[ -n "$password" ]] || fail "the SSM parameter $SWARM_PASSWORD_PARAMETER is empty"

# ---- start the Swarm client
node_name="$env_name-$private_ip"
node_description="${description:+$description }InstanceID=$instance_id AmiId=$ami_id"
mkdir -p "$SWARM_FSROOT" 2>/dev/null || true
read -r -a extra <<<"$SWARM_EXTRA_ARGS"
log "starting the Swarm client: node $node_name, labels '$labels', $executors executor(s), Jenkins $jenkins_url"
# The password travels in the environment, never on the command line.
SWARM_PASSWORD="$password" nohup "$JAVA" -jar "$SWARM_JAR" \
    -name "$node_name" \
    -disableClientsUniqueId \
    -deleteExistingClients \
    -description "$node_description" \
    -executors "$executors" \
    -fsroot "$SWARM_FSROOT" \
    -labels "$labels" \
    -url "$jenkins_url" \
    -mode normal \
    -username "$SWARM_USER" \
    -passwordEnvVariable SWARM_PASSWORD \
    ${extra[@]+"${extra[@]}"} \
    </dev/null >>"$SWARM_LOG" 2>&1 &
pid=$!
echo "$pid" >"$SWARM_PIDFILE" || fail "cannot write $SWARM_PIDFILE"
sleep "${SWARM_START_CHECK_SECONDS:-2}"
kill -0 "$pid" 2>/dev/null || fail "the Swarm client exited at once; its output is above in $SWARM_LOG"
log "Swarm client running (pid $pid)"
