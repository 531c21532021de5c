#!/usr/bin/env bash
# Installs Debian's Chromium, which the run-report test renders the page in,
# only when missing: machines are handed over fresh.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
    echo "ensure-browser: installing chromium" >&2
    export DEBIAN_FRONTEND=noninteractive
    log="$(mktemp)"
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } >"$log" 2>&1; then
        cat "$log" >&2
        rm -f "$log"
        echo "ensure-browser: installing chromium failed" >&2
        exit 1
    fi
    rm -f "$log"
fi
