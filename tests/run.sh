#!/bin/sh
# Install what building and testing tether needs (Debian 12, as root), build,
# and run every test suite except the slow and benchmark ones.
#
#   tests/run.sh [BUILD_DIR]         (default: build)
#
# TETHER_WERROR=1 turns compiler warnings into errors (CI does).
# Ends with the line "N passed, N failed".
set -eu

cd "$(dirname "$0")/.."
build=${1:-build}

packages="build-essential meson ninja-build pkg-config libssl-dev libjose-dev
libjansson-dev libmicrohttpd-dev libcurl4-openssl-dev libcryptsetup-dev
tang clevis clevis-luks jose curl python3 systemd cryptsetup-bin wrk nginx-light procps
qemu-system-x86 dracut dracut-network clevis-dracut busybox-static socat e2fsprogs"

missing=$(for p in $packages; do
        dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || echo "$p"
done)
if [ -n "$missing" ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        # tang's package enables tangd.socket on port 80; the tests start their own.
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing
fi

werror=false
[ "${TETHER_WERROR:-0}" = 1 ] && werror=true
if [ -f "$build/build.ninja" ]; then
        meson configure "$build" -Dwerror=$werror
else
        meson setup "$build" -Dwerror=$werror
fi
ninja -C "$build"

status=0
meson test -C "$build" --print-errorlogs --setup "${TETHER_TEST_SETUP:-default}" || status=$?

# meson names the log after the test setup: testlog.json, testlog-full.json.
setup=${TETHER_TEST_SETUP:-default}
log="$build/meson-logs/testlog.json"
[ "$setup" = default ] || log="$build/meson-logs/testlog-$setup.json"
python3 - "$log" <<'PY'
import json, sys
import os
passed = failed = 0
if not os.path.exists(sys.argv[1]):
    print(f"0 passed, 1 failed (no test results in {sys.argv[1]})")
    sys.exit(0)
with open(sys.argv[1]) as f:
    for line in f:
        result = json.loads(line)["result"]
        if result in ("OK", "EXPECTEDFAIL"):
            passed += 1
        elif result != "SKIP":
            failed += 1
print(f"{passed} passed, {failed} failed")
PY
exit $status
