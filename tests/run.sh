#!/bin/sh
# Install what building and testing tether needs (Debian 12, as root), build,
# and run every test suite except the slow, fuzzing, load and benchmark ones.
# TETHER_TEST_SETUP=full runs them all, plus the sanitizer and valgrind passes.
#
#   tests/run.sh [BUILD_DIR]         (default: build)
#
# TETHER_WERROR=1 turns compiler warnings into errors (CI does).
# Ends with the line "N passed, N failed".
set -eu

cd "$(dirname "$0")/.."
build=${1:-build}

packages="build-essential meson ninja-build pkg-config libssl-dev libjose-dev
libjansson-dev zlib1g-dev libmicrohttpd-dev libcryptsetup-dev
tang clevis clevis-luks jose curl python3 systemd cryptsetup-bin wrk nginx-light tinyproxy procps
prometheus qemu-system-x86 dracut dracut-network clevis-dracut busybox-static socat e2fsprogs
initramfs-tools-core cryptsetup-initramfs klibc-utils zstd
clang libclang-rt-14-dev llvm valgrind"

missing=$(for p in $packages; do
        dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed || echo "$p"
done)
if [ -n "$missing" ]; then
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q
        # tang's package enables tangd.socket on port 80; the tests start their own.
        # shellcheck disable=SC2086
        apt-get install -y -q --no-install-recommends $missing
        # prometheus's package starts prometheus.service on port 9090,
        # tetherd's default; test_metrics starts its own on loopback.
        if echo "$missing" | grep -qx prometheus && command -v systemctl >/dev/null; then
                systemctl disable --now prometheus.service >/dev/null 2>&1 || true
        fi
fi

werror=false
[ "${TETHER_WERROR:-0}" = 1 ] && werror=true
# The tests inject faults (TETHER_FAULT); release builds leave that out.
if [ -f "$build/build.ninja" ]; then
        meson configure "$build" -Dwerror=$werror -Dfault_injection=true
else
        meson setup "$build" -Dwerror=$werror -Dfault_injection=true
fi
ninja -C "$build"

status=0
# The fault-injection tests skip on a build without it; here they must run.
export TETHER_REQUIRE_FAULT_INJECTION=1
setup=${TETHER_TEST_SETUP:-default}
# The default suites run the same way in both setups, so CI (full) exercises
# the path a fresh clone's `tests/run.sh` takes; the full setup then adds the
# suites the default one leaves out. meson names each log after its setup
# (testlog-default.json, testlog-full.json): tests/summary.py reads them.
meson test -C "$build" --print-errorlogs --setup default || status=$?
logs="$build:default"
if [ "$setup" = full ]; then
        meson test -C "$build" --print-errorlogs --setup full \
                --suite slow --suite bench --suite fuzz --suite load || status=$?
        logs="$logs $build:full"
elif [ "$setup" != default ]; then
        echo "TETHER_TEST_SETUP must be default or full, not '$setup'" >&2
        exit 2
fi

# The full run adds the memory checks: the unit and integration suites built
# with ASan and UBSan, the integration suite with every tetherd under
# valgrind, and the integration suite built with ThreadSanitizer.
# TETHER_MEMCHECK=1 runs them with the default setup too.
if [ "$setup" = full ] || [ "${TETHER_MEMCHECK:-0}" = 1 ]; then
        sanitized="$build-sanitize"
        if [ -f "$sanitized/build.ninja" ]; then
                meson configure "$sanitized" -Dwerror=$werror -Dfault_injection=true
        else
                meson setup "$sanitized" -Dwerror=$werror -Dfault_injection=true \
                        -Db_sanitize=address,undefined -Db_lundef=false
        fi
        ninja -C "$sanitized"
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
                meson test -C "$sanitized" --print-errorlogs --suite unit --suite integration || status=$?
        mkdir -p "$build/reliability"
        : >"$build/reliability/valgrind-runs.txt"
        meson test -C "$build" --print-errorlogs --setup valgrind --suite integration || status=$?
        logs="$logs $sanitized: $build:valgrind"
        # ThreadSanitizer: the integration suite with tetherd, tether-keys and
        # the client built with -fsanitize=thread; the first report ends the
        # process with status 66, which tlib's Tetherd.stop() turns into a
        # failed test. No suppressions: libmicrohttpd and OpenSSL are
        # not instrumented, their locks are pthread's (intercepted).
        tsan="$build-tsan"
        [ -f "$tsan/build.ninja" ] ||
                meson setup "$tsan" -Dwerror=$werror -Db_sanitize=thread -Db_lundef=false -Dfault_injection=true
        ninja -C "$tsan"
        TSAN_OPTIONS=halt_on_error=1:exitcode=66:second_deadlock_stack=1 \
                meson test -C "$tsan" --print-errorlogs --suite integration || status=$?
        logs="$logs $tsan:"
fi

# The figures for the README's Reliability section (tests/reliability.py --readme writes them there).
[ "$setup" = default ] || python3 tests/reliability.py "$build" || status=$?

# The closing line; its exit status is non-zero when it counts a failure.
# shellcheck disable=SC2086
python3 tests/summary.py $logs || status=1
exit $status
