#!/usr/bin/env python3
"""tests/summary.py reads the log meson writes for each setup, and its exit
status agrees with the line it prints."""
import json
import os
import subprocess
import sys
import tempfile

summary = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "summary.py")
failures = 0


def check(what, ok):
    global failures
    print(("ok   " if ok else "FAIL ") + what)
    failures += not ok


def write_log(build, name, results):
    os.makedirs(os.path.join(build, "meson-logs"), exist_ok=True)
    with open(os.path.join(build, "meson-logs", name), "w") as f:
        for r in results:
            f.write(json.dumps({"name": "t", "result": r}) + "\n")


def run(*specs):
    p = subprocess.run([sys.executable, summary, *specs], capture_output=True, text=True)
    return p.returncode, p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""


with tempfile.TemporaryDirectory() as tmp:
    build = os.path.join(tmp, "build")
    # `meson test --setup default` writes testlog-default.json, not testlog.json.
    write_log(build, "testlog-default.json", ["OK", "OK", "EXPECTEDFAIL", "SKIP"])
    rc, line = run(f"{build}:default")
    check("the default setup's log is testlog-default.json", (rc, line) == (0, "3 passed, 0 failed"))

    write_log(build, "testlog-full.json", ["OK", "FAIL", "TIMEOUT"])
    rc, line = run(f"{build}:default", f"{build}:full")
    check("failures of any log count and exit non-zero", (rc, line) == (1, "4 passed, 2 failed"))

    write_log(build, "testlog.json", ["OK"])
    rc, line = run(f"{build}:")
    check("no setup means testlog.json", (rc, line) == (0, "1 passed, 0 failed"))

    rc, line = run(f"{build}:valgrind")
    check("a missing log is a failure and exits non-zero", (rc, line) == (1, "0 passed, 1 failed"))

sys.exit(1 if failures else 0)
