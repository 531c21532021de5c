#!/usr/bin/env bash
# Installs the Debian packages that the Jenkins-side tests need, and only
# those missing: groovy (2.4, the Groovy of current Jenkins LTS) with a Java
# 17 runtime, jq (start_swarm.sh reads JSON with it) and shellcheck.
# Machines are handed over fresh, so every run must be able to bring them in;
# on a ready machine this costs nothing and prints nothing.
set -euo pipefail

missing=()
command -v groovy >/dev/null 2>&1 || missing+=(groovy)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
# groovy runs on any Java; the tests want Debian's Java 17 (see tests/groovy/run.sh).
[[ -x /usr/lib/jvm/java-17-openjdk-amd64/bin/java ]] || missing+=(openjdk-17-jdk-headless)

if ((${#missing[@]})); then
    echo "ensure-groovy: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
