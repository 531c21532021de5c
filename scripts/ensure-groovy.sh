#!/usr/bin/env bash
# Installs the Debian packages that the Jenkins-side tests need, and only
# those missing: groovy (2.4, the Groovy of current Jenkins LTS) with a Java
# 17 runtime, jq and curl (start_swarm.sh uses them) and shellcheck.
# Machines are handed over fresh, so every run must be able to bring them in;
# on a ready machine this costs nothing and prints nothing.
set -euo pipefail

missing=()
command -v groovy >/dev/null 2>&1 || missing+=(groovy)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v curl >/dev/null 2>&1 || missing+=(curl)
# groovy runs on any Java; the tests want Debian's Java 17 (see tests/groovy/run.sh).
[[ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]] || missing+=(openjdk-17-jre-headless)

if ((${#missing[@]})); then
    echo "ensure-groovy: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    log="$(mktemp)"
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "ensure-groovy: installing ${missing[*]} failed" >&2
        exit 1
    fi
    rm -f "$log"
fi
