#!/usr/bin/env bash
# The Jenkins side's tests (scripts/test.sh runs them before cargo test):
#   - the dump script and run_gc.groovy under Debian's groovy 2.4, against the
#     Jenkins API stubs in tests/groovy/stubs (tests/groovy/fixtures.groovy);
#   - the job definitions in jenkins/jobs (tests/groovy/test_jobs.py);
#   - shellcheck on every shell script of the repo;
#   - jenkins/agent/start_swarm.sh against moto's server and a loopback metadata
#     service (tests/start_swarm/test_start_swarm.py).
# Closes with "N passed, N failed"; exits non-zero on any failure.
#
#   tests/groovy/run.sh                      all of the above
#   tests/groovy/run.sh dump SCENARIO [ARG…] only print what the dump script
#       prints for a scenario of fixtures.groovy (used by tests/groovy_dump.rs)
# Needs groovy, jq, shellcheck (scripts/ensure-groovy.sh) and moto, boto3
# (scripts/ensure-python-deps.sh).
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
repo="$PWD"

# Groovy 2.4 runs on Debian's Java 17; other JDKs on the machine are not for it.
export JAVA_HOME="${SM_GROOVY_JAVA_HOME:-/usr/lib/jvm/java-17-openjdk-amd64}"

# Compiles the stubs once per content into a cache directory; prints its path.
stub_classes() {
    local hash dir tmp
    command -v groovyc >/dev/null || { echo "groovyc not found: run scripts/ensure-groovy.sh" >&2; return 1; }
    hash="$( (cd tests/groovy/stubs && find . -name '*.groovy' -print0 | sort -z | xargs -0 sha256sum; groovyc --version 2>&1) | sha256sum | cut -c1-16)"
    dir="${TMPDIR:-/tmp}/slave-manager-groovy-stubs-$hash"
    if [[ ! -d "$dir" ]]; then
        tmp="$(mktemp -d "${TMPDIR:-/tmp}/slave-manager-groovy-stubs.XXXXXX")"
        # shellcheck disable=SC2046 # file names without blanks
        if ! (cd tests/groovy/stubs && groovyc -d "$tmp" $(find . -name '*.groovy' | sort)) >&2; then
            rm -rf "$tmp"
            echo "compiling the Jenkins stubs failed" >&2
            return 1
        fi
        mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp"    # another run won the race
    fi
    printf '%s\n' "$dir"
}

if [[ "${1:-}" == dump ]]; then
    shift
    classes="$(stub_classes)" || exit 1
    exec groovy -cp "$classes" tests/groovy/fixtures.groovy "$repo" dump "$@"
fi

passed=0
failed=0
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

# suite NAME COMMAND…: runs a suite that prints "PASS …"/"FAIL …" lines.
suite() {
    local name="$1" status p f
    shift
    "$@" >"$out" 2>&1
    status=$?
    cat "$out"
    p="$(grep -c '^PASS ' "$out")"
    f="$(grep -c '^FAIL ' "$out")"
    if ((status != 0 && f == 0)); then
        echo "FAIL $name: exited with status $status without naming a failed test"
        f=1
    fi
    passed=$((passed + p))
    failed=$((failed + f))
}

groovy_suite() {
    local classes
    classes="$(stub_classes)" || return 1
    groovy -cp "$classes" tests/groovy/fixtures.groovy "$repo"
}

# Every shell script: *.sh files and files whose first line runs a shell.
shellcheck_suite() {
    local f
    command -v shellcheck >/dev/null || { echo "FAIL shellcheck: not installed (scripts/ensure-groovy.sh)"; return 1; }
    while IFS= read -r f; do
        [[ -f "$f" ]] || continue
        if [[ "$f" == *.sh ]] || head -n 1 "$f" | grep -Eq '^#!.*(/|env +)(ba|da|k)?sh([[:space:]]|$)'; then
            if shellcheck -x "$f" >"$out.sc" 2>&1; then
                echo "PASS shellcheck: $f"
            else
                echo "FAIL shellcheck: $f"
                sed 's/^/    /' "$out.sc"
            fi
        fi
    done < <(git ls-files --cached --others --exclude-standard | sort -u)
    rm -f "$out.sc"
}

suite groovy groovy_suite
suite jobs python3 tests/groovy/test_jobs.py
suite shellcheck shellcheck_suite
suite start_swarm python3 tests/start_swarm/test_start_swarm.py

echo "jenkins-side: $passed passed, $failed failed"
((failed == 0))
