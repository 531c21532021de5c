#!/usr/bin/env python3
"""Shows that the soak's checker catches what it claims (issue 15): for each
patch under bench/soak/breakages/ (a tiny diff that breaks one promise of
the manager), build the patched manager in a throwaway copy of the tree,
run a short soak against it, and report which invariants fired.

  soak_breakages.py [--patches GLOB] [--seed N] [--sim-minutes M]
                    [--target-dir DIR] [--workdir DIR] [--markdown FILE]

Each patch starts with `Breaks: <invariant>` and a line saying what it
does; an optional third line `Soak: <soak.py arguments>` is added to its
soak's (a liveness invariant is judged on clean passes only, so its patch
may need a soak without the faults that excuse passes). The copy is
`git archive HEAD` (committed code only) extracted anew for each patch;
the builds share one cargo target directory (default
`$CARGO_TARGET_DIR/soak-breakages`), so after the first only the
workspace's own crates are rebuilt. Never run in CI (a build and a soak
per patch). Exit status 0 when every patch made its invariant fire, 1
otherwise.
"""

import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(BENCH)


def log(message):
    print(f"breakages: {message}", file=sys.stderr, flush=True)


def header(path):
    """(invariant it should trip, what it does, extra soak arguments) from
    the patch's first lines."""
    with open(path) as source:
        first, second, third = (source.readline().strip() for _ in range(3))
    if not first.startswith("Breaks: "):
        raise SystemExit(f"{path}: the first line must be 'Breaks: <invariant>'")
    extra = third.split(": ", 1)[1].split() if third.startswith("Soak: ") else []
    return first.split(": ", 1)[1], second, extra


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patches", default=os.path.join(BENCH, "soak", "breakages", "*.patch"))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--sim-minutes", type=float, default=30)
    parser.add_argument("--time-scale", type=float, default=10)
    default_target = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO, "target")),
                                  "soak-breakages")
    parser.add_argument("--target-dir", default=default_target)
    parser.add_argument("--workdir")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    patches = sorted(glob.glob(args.patches))
    if not patches:
        raise SystemExit(f"no patch matches {args.patches}")
    work = args.workdir or tempfile.mkdtemp(prefix="slave-manager-breakages.")
    tree = os.path.join(work, "tree")
    rows = []
    env = dict(os.environ, CARGO_TARGET_DIR=args.target_dir)
    try:
        for patch in patches:
            name = os.path.basename(patch)[:-len(".patch")]
            expected, what, extra = header(patch)
            if extra:
                what += f" (soaked with `{' '.join(extra)}`)"
            shutil.rmtree(tree, ignore_errors=True)
            os.makedirs(tree)
            archive = subprocess.run(["git", "-C", REPO, "archive", "HEAD"], check=True,
                                     capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
            # git archive stamps every file with the commit's time: a crate the
            # previous patch changed would look older than its last build and
            # keep that patch. Every file is new, so every crate is rebuilt.
            now = time.time()
            for root, _, files in os.walk(tree):
                for file_name in files:
                    os.utime(os.path.join(root, file_name), (now, now))
            subprocess.run(["git", "apply", os.path.abspath(patch)], cwd=tree, check=True)
            log(f"{name}: building")
            started = time.monotonic()
            subprocess.run(["cargo", "build", "--quiet"], cwd=tree, env=env, check=True)
            binary = os.path.join(args.target_dir, "debug", "slave_manager")
            log(f"{name}: built in {time.monotonic() - started:.0f} s; soaking")
            result = os.path.join(work, f"{name}.json")
            soak = subprocess.run(
                [sys.executable, os.path.join(BENCH, "soak.py"), "--binary", binary,
                 "--seed", str(args.seed), "--sim-minutes", str(args.sim_minutes),
                 "--time-scale", str(args.time_scale), "--every-kind", "--drain", "20",
                 "--json", result, "--workdir", os.path.join(work, name)] + extra,
                capture_output=True, text=True)
            if soak.returncode not in (0, 1):
                log(f"{name}: the soak could not run:\n{soak.stderr[-2000:]}")
                rows.append((name, what, expected, "soak failed", False, ""))
                continue
            figures = json.load(open(result))["faults"]
            fired = {k: v for k, v in figures["violations"].items() if v}
            first = next((line for line in figures["violation_lines"]
                          if line.startswith(f"VIOLATION {expected}:")), "")
            rows.append((name, what, expected, ", ".join(f"{k} ({v})" for k, v in sorted(fired.items())) or "none",
                         expected in fired, first))
            log(f"{name}: {rows[-1][3]}")
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    lines = ["| patch | what it breaks | expected | invariants that fired (violations) | caught |",
             "|---|---|---|---|---|"]
    for name, what, expected, fired, caught, _ in rows:
        lines.append(f"| `{name}` | {what} | {expected} | {fired} | {'yes' if caught else '**no**'} |")
    table = "\n".join(lines)
    print(table)
    print()
    for name, _, _, _, _, first in rows:
        if first:
            print(f"- `{name}`: {first}")
    if args.markdown:
        with open(args.markdown, "w") as out:
            out.write(table + "\n")
    return 0 if all(row[4] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
