#!/usr/bin/env python3
"""The closing line of tests/run.sh: "N passed, N failed" over meson's test logs.

    tests/summary.py BUILD_DIR:SETUP [BUILD_DIR:SETUP ...]

meson writes the results of `meson test --setup NAME` to
BUILD_DIR/meson-logs/testlog-NAME.json; an empty SETUP (a plain `meson test`)
means testlog.json. A log that is missing counts as one failure, so a run
that produced no results never reads as passed. Exits 1 when anything failed,
so the exit status of run.sh agrees with the line it ends with.
"""
import json
import os
import sys


def log_path(spec):
    build, _, setup = spec.rpartition(":")
    name = f"testlog-{setup}.json" if setup else "testlog.json"
    return os.path.join(build, "meson-logs", name)


def count(paths):
    passed = failed = 0
    for path in paths:
        if not os.path.exists(path):
            print(f"no test results in {path}")
            failed += 1
            continue
        with open(path) as f:
            for line in f:
                result = json.loads(line)["result"]
                if result in ("OK", "EXPECTEDFAIL"):
                    passed += 1
                elif result != "SKIP":
                    failed += 1
    return passed, failed


def main(specs):
    if not specs:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    passed, failed = count([log_path(s) for s in specs])
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
