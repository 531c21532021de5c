#!/usr/bin/env bash
# Prints how fast slave_manager is, measured against moto's server (AWS) and
# the project's Jenkins emulator (issue 6). Figures only, never asserted:
#
#   a. pass cost for queue length Q, agents I, envs E, for --cli ssh and jar
#      (bench/bench_pass.py: latency, AWS requests, CPU, peak RSS);
#   b. a simulated 30-minute trace of 300 jobs, closed loop through the
#      emulator with bench/simulation.py's model (bench/bench_trace.py: queue
#      wait, billed instance-minutes, launches, caps);
#   c. the original Python script's measured scenario, and the ratio
#      (bench/bench_reference.py);
#   d. a 20- and a 50-item spot burst over two envs under the proxy's model
#      of real AWS latency and throttling (bench/bench_burst.py: first pass,
#      EC2 calls, calls in flight, throttled answers, the original's modelled
#      figure), then the isolation run (prod's calls held 30 s: when dev's
#      launches were answered); --before PATH runs a second binary (e.g. an
#      earlier build) beside this one.
#   warm. a working day (9 simulated hours, ~340 jobs: morning ramp, lunch
#      dip, afternoon peak) with the boot model that tells a create from a
#      start, run cold and then with --warm (bench/bench_day.py: time to
#      agent per kind and for the warmed labels, instance-minutes booting /
#      busy / idle / stopped and paid; issue 14's target). ~15 min.
#   soak. the long chaos soak (issue 15; only when asked, ~30 min): hours of
#      simulated time with every fault kind and an independent invariant
#      checker, then the same seed without faults (bench/soak.py).
#
#   scripts/bench.sh [--parts a,b,c,d,warm,soak] [--grid subset|full|smoke] [--cli ssh,jar]
#                    [--profile release|debug | --binary PATH] [--before PATH] [--out FILE] [--keep]
#                    [--soak-seed N] [--soak-minutes M] [--soak-scale X]
#                    [--warm LABEL=N]... [--spare LABEL=N]... [--day-scale X]
#
# --grid subset (default) runs 10 (Q, I, E) points of the 27, full runs all
# 27 (about an hour: moto takes seconds to describe 1000 instances), smoke
# two small ones. --profile release (default) builds with `cargo build
# --release` (~11 min cold on 2 cores); debug uses the test build; --binary
# measures a binary already built (nothing is built). --out also
# writes the Markdown to FILE. --soak-seed (default 7) and --soak-minutes
# (simulated, default 120) and --soak-scale (time scale, default 10; lower it
# on a loaded machine, where a pass outlasts its 5 simulated seconds) shape the
# soak; it replays from its seed. --warm (repeatable; default dev=2) is the
# warm run's pool, --spare (repeatable; default none) its spare executors,
# --day-scale (default 90) the day's
# time scale. Everything runs on 127.0.0.1 in a temporary
# directory, removed on exit unless --keep; every process started is stopped.

# cleanup runs only through `trap`, which ShellCheck cannot follow.
# shellcheck disable=SC2317
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"
python="${PYTHON:-python3}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/slave-manager-target}"

parts="a,b,c"
grid="subset"
clis="ssh,jar"
profile="release"
out=""
keep=no
binary=""
before=""
soak_seed=7
soak_minutes=120
soak_scale=10
warm=()
spare=()
day_scale=90

die() { echo "bench: $*" >&2; exit 2; }
usage() { sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; }

while (($#)); do
    case "$1" in
        --parts) parts="${2:?--parts needs a value}"; shift 2 ;;
        --grid) grid="${2:?--grid needs a value}"; shift 2 ;;
        --cli) clis="${2:?--cli needs a value}"; shift 2 ;;
        --profile) profile="${2:?--profile needs a value}"; shift 2 ;;
        --binary) binary="${2:?--binary needs a value}"; shift 2 ;;
        --before) before="${2:?--before needs a value}"; shift 2 ;;
        --out) out="${2:?--out needs a value}"; shift 2 ;;
        --keep) keep=yes; shift ;;
        --soak-seed) soak_seed="${2:?--soak-seed needs a value}"; shift 2 ;;
        --soak-minutes) soak_minutes="${2:?--soak-minutes needs a value}"; shift 2 ;;
        --soak-scale) soak_scale="${2:?--soak-scale needs a value}"; shift 2 ;;
        --warm) warm+=(--warm "${2:?--warm needs a value}"); shift 2 ;;
        --spare) spare+=(--spare "${2:?--spare needs a value}"); shift 2 ;;
        --day-scale) day_scale="${2:?--day-scale needs a value}"; shift 2 ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown argument $1 (see --help)" ;;
    esac
done
case "$grid" in subset | full | smoke) ;; *) die "--grid: subset, full or smoke" ;; esac
case "$profile" in release | debug) ;; *) die "--profile: release or debug" ;; esac
[[ -z "$out" || "$out" == /* ]] || out="$PWD/$out"

for tool in cargo ssh ssh-keygen "$python"; do
    command -v "$tool" >/dev/null || die "$tool is needed but not installed"
done
scripts/ensure-python-deps.sh

if [[ -n "$binary" ]]; then
    bin="$(cd "$(dirname "$binary")" && pwd)/$(basename "$binary")"
    profile="given"
elif [[ $profile == release ]]; then
    echo "bench: cargo build --release (about 11 minutes the first time on 2 cores)" >&2
    cargo build --release --quiet
    bin="$CARGO_TARGET_DIR/release/slave_manager"
else
    cargo build --quiet
    bin="$CARGO_TARGET_DIR/debug/slave_manager"
fi
[[ -x "$bin" ]] || die "no binary at $bin"

work="$(mktemp -d "${TMPDIR:-/tmp}/slave-manager-bench.XXXXXX")"
driver=""
cleanup() {
    if [[ -n "$driver" ]] && kill -0 "$driver" 2>/dev/null; then
        kill -TERM "$driver" 2>/dev/null || true
        wait "$driver" 2>/dev/null || true
    fi
    if [[ $keep == yes ]]; then
        echo "bench: kept $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# run_part LIMIT SCRIPT ARGS...: one driver, in the background so the traps
# can stop it, bounded by `timeout`; its Markdown goes to $work/part.md.
run_part() {
    local limit="$1" script="$2"
    shift 2
    timeout -k 30 "$limit" "$python" "bench/$script" "$@" >"$work/part.md" &
    driver=$!
    local status=0
    wait "$driver" || status=$?
    driver=""
    ((status == 0)) || die "$script failed (status $status); run with --keep to see $work"
}

report="$work/report.md"
{
    echo "# slave_manager benchmark"
    echo
    echo "Command: \`scripts/bench.sh --parts $parts --grid $grid --cli $clis $(if [[ -n $binary ]]; then echo "--binary $binary"; else echo "--profile $profile"; fi)\`"
    echo
    echo "Machine: $(nproc) cores, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n1)," \
        "$(awk '/MemTotal/ {printf "%.0f GB", $2 / 1048576}' /proc/meminfo) RAM, Linux $(uname -r);" \
        "moto $("$python" -c 'import moto; print(moto.__version__)'), $(rustc --version | cut -d' ' -f1-2)," \
        "binary: $bin ($(date -u -r "$bin" '+%Y-%m-%d %H:%M UTC'));" \
        "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)."
} >"$report"

if [[ ",$parts," == *,a,* ]]; then
    echo "bench: (a) pass cost, grid $grid" >&2
    run_part 7200 bench_pass.py --binary "$bin" --workdir "$work" --grid "$grid" \
        --cli "$clis" --json "$work/pass.json"
    { echo; echo "## (a) Pass cost"; echo; cat "$work/part.md"; } >>"$report"
fi
if [[ ",$parts," == *,b,* ]]; then
    echo "bench: (b) simulated 30-minute trace" >&2
    run_part 1800 bench_trace.py run --binary "$bin" --workdir "$work/trace" \
        --json "$work/trace.json"
    { echo; echo "## (b) 30-minute trace, closed loop"; echo; cat "$work/part.md"; } >>"$report"
fi
if [[ ",$parts," == *,c,* ]]; then
    echo "bench: (c) the original's scenario" >&2
    run_part 1800 bench_reference.py --binary "$bin" --workdir "$work" --cli "$clis" \
        --json "$work/reference.json"
    { echo; echo "## (c) The original script's scenario"; echo; cat "$work/part.md"; } >>"$report"
fi
if [[ ",$parts," == *,d,* ]]; then
    echo "bench: (d) burst under the latency model" >&2
    burst_binaries=(--binary "ours=$bin")
    [[ -z "$before" ]] || burst_binaries=(--binary "before=$before" "${burst_binaries[@]}")
    run_part 1800 bench_burst.py "${burst_binaries[@]}" --workdir "$work" --json "$work/burst.json"
    { echo; echo "## (d) Burst under the latency model"; echo; cat "$work/part.md"; } >>"$report"
fi
if [[ ",$parts," == *,warm,* ]]; then
    echo "bench: (warm) a working day, cold and with --warm, at ${day_scale}x" >&2
    run_part 2400 bench_day.py run --binary "$bin" --workdir "$work/day" \
        --time-scale "$day_scale" ${warm[@]+"${warm[@]}"} ${spare[@]+"${spare[@]}"} --json "$work/day.json"
    { echo; echo "## Time to agent: a working day, cold and warm"; echo; cat "$work/part.md"; } >>"$report"
fi

if [[ ",$parts," == *,soak,* ]]; then
    echo "bench: the long chaos soak, seed $soak_seed, $soak_minutes simulated minutes at ${soak_scale}x" >&2
    # Violations are figures here (status 1): the table still goes out.
    timeout -k 30 14400 "$python" bench/soak.py --binary "$bin" --seed "$soak_seed" \
        --sim-minutes "$soak_minutes" --time-scale "$soak_scale" --every-kind --baseline \
        --workdir "$work/soak" --json "$work/soak.json" >"$work/part.md" &
    driver=$!
    status=0
    wait "$driver" || status=$?
    driver=""
    ((status <= 1)) || die "soak.py failed (status $status); run with --keep to see $work"
    { echo; echo "## The long chaos soak (seed $soak_seed)"; echo; cat "$work/part.md"; } >>"$report"
fi

cat "$report"
if [[ -n "$out" ]]; then
    cp "$report" "$out"
    echo "bench: wrote $out" >&2
fi
