#!/usr/bin/env python3
"""The Python tools' own tests: the test doubles in tests/support (the Jenkins
emulator's tokenizer, the AWS proxy and its latency model) and the
benchmark's simulation in bench/. Run by scripts/test.sh.

  python3 tests/tools/run.py [MODULE...]    e.g. test_latency; all by default

Each `test_*.py` here holds `test_*` functions, run in the order written. A
module with a `fixture()` context manager (e.g. moto and the proxy on free
ports) runs its tests inside it, each given the fixture's value. Prints one
line per test and closes with "N passed, N failed"; exits 1 on a failure.
No pytest: the tests need nothing beyond requirements-dev.txt.
"""

import contextlib
import glob
import importlib
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
# What the tests import: the test doubles and the benchmark's modules.
for path in (os.path.join(REPO, "tests", "support"), os.path.join(REPO, "bench"), HERE):
    if path not in sys.path:
        sys.path.insert(0, path)


def run_module(name):
    """(passed, failed) of one module's tests."""
    module = importlib.import_module(name)
    tests = [(n, f) for n, f in vars(module).items() if n.startswith("test_") and callable(f)]
    fixture = getattr(module, "fixture", None)
    passed = failed = 0
    with (fixture() if fixture else contextlib.nullcontext()) as value:
        for test_name, test in tests:
            began = time.monotonic()
            try:
                test(value) if fixture else test()
                passed += 1
                print(f"ok   {name}.{test_name} ({time.monotonic() - began:.1f} s)", flush=True)
            except Exception:
                failed += 1
                print(f"FAIL {name}.{test_name}", flush=True)
                traceback.print_exc(file=sys.stdout)
    return passed, failed


def main(argv):
    start = time.monotonic()
    names = argv or sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(HERE, "test_*.py")))
    passed = failed = 0
    for name in names:
        try:
            ok, bad = run_module(name)
        except Exception:
            ok, bad = 0, 1
            print(f"FAIL {name} (could not run)")
            traceback.print_exc(file=sys.stdout)
        passed += ok
        failed += bad
    print(f"{passed} passed, {failed} failed ({time.monotonic() - start:.1f} s)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
