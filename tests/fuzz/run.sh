#!/bin/bash
# Fuzzes tether with libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer.
#
#   tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...]     (default: 60, all)
#
# Builds the harnesses with clang in a build directory of its own
# ($TETHER_FUZZ_BUILD_DIR, default <build>/fuzz-build, <build> being
# $TETHER_BUILD_DIR or build/), runs each target for the given time on a
# fresh copy of its seed corpus, $TETHER_FUZZ_JOBS (default 2) at a time,
# prints a summary and writes it to <build>/reliability/fuzz.md. Exits 1 if
# any target crashed, leaked, timed out or ran out of memory, printing the
# input that did it and the command that reproduces it.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
all_targets=(server-request jwk-point adv jwe sss luks-token http-framing initramfs ledger)

seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")
case $seconds in
''|*[!0-9]*) echo "run.sh: SECONDS_PER_TARGET must be a number, not '$seconds'" >&2; exit 2 ;;
esac
for t in "${targets[@]}"; do
        [ -d "$here/corpus/$t" ] || { echo "run.sh: no target '$t' (targets: ${all_targets[*]})" >&2; exit 2; }
done

build=$(mkdir -p "${TETHER_BUILD_DIR:-$top/build}" && cd "${TETHER_BUILD_DIR:-$top/build}" && pwd)
fuzz_build=${TETHER_FUZZ_BUILD_DIR:-$build/fuzz-build}
runs=$fuzz_build/runs
jobs=${TETHER_FUZZ_JOBS:-2}
report=$build/reliability/fuzz.md

# Per input: 10 s is a hang (the slowest seed takes milliseconds, a fraction
# of a second for http-framing, whose exchanges give up at 8 s); 2 GB of RSS
# a leak or a blow-up. Input length: libFuzzer's default, the longest seed
# (a few KiB), grown slowly; longer inputs mostly cost base64 time.
timeout_s=10
rss_mb=2048

build_fuzzers() {
        if [ ! -f "$fuzz_build/build.ninja" ]; then
                CC=clang meson setup "$fuzz_build" "$top" -Dfuzzing=true -Db_sanitize=address,undefined \
                        -Db_lundef=false -Dbuildtype=debugoptimized -Dwerror=true >"$runs/setup.log" 2>&1 || {
                        cat "$runs/setup.log" >&2
                        echo "run.sh: meson setup of $fuzz_build failed" >&2
                        exit 1
                }
        fi
        ninja -C "$fuzz_build" "${targets[@]/#/tests/fuzz/fuzz-}" >"$runs/build.log" 2>&1 || {
                tail -50 "$runs/build.log" >&2
                echo "run.sh: building the fuzzers failed (log: $runs/build.log)" >&2
                exit 1
        }
}

# fuzz TARGET: one libFuzzer run on a writable copy of the seed corpus.
fuzz() {
        local t=$1 dir=$runs/$1
        rm -rf "$dir"
        mkdir -p "$dir/corpus" "$dir/artifacts"
        cp "$here/corpus/$t"/* "$dir/corpus/"
        # halt_on_error: UBSan findings end the run like ASan's do.
        ASAN_OPTIONS=detect_leaks=1:allocator_may_return_null=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        TMPDIR=$dir \
                "$fuzz_build/tests/fuzz/fuzz-$t" -max_total_time="$seconds" -timeout="$timeout_s" \
                -rss_limit_mb="$rss_mb" -print_final_stats=1 \
                -artifact_prefix="$dir/artifacts/" "$dir/corpus" >"$dir/log" 2>&1
        echo $? >"$dir/rc"
}

stat_of() {
        sed -n "s/^stat::$2: *//p" "$runs/$1/log" | tail -1
}

# "cov: 123 ft: 456" of libFuzzer's last status line.
coverage_of() {
        grep -o 'cov: [0-9]* ft: [0-9]*' "$runs/$1/log" | tail -1 | awk '{ print $2 "/" $4 }'
}

result_of() {
        local t=$1 artifact
        artifact=$(ls "$runs/$t/artifacts" 2>/dev/null | head -1)
        if [ -n "$artifact" ]; then
                echo "${artifact%%-*}"
        elif [ "$(cat "$runs/$t/rc")" != 0 ]; then
                echo "error"
        else
                echo "ok"
        fi
}

mkdir -p "$fuzz_build" "$(dirname "$report")"
mkdir -p "$runs"
echo "run.sh: building the fuzzers in $fuzz_build"
build_fuzzers

echo "run.sh: fuzzing ${targets[*]} for ${seconds} s each, $jobs at a time"
for t in "${targets[@]}"; do
        while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do
                wait -n
        done
        fuzz "$t" &
done
wait

table=$(
        echo "| target | executions | exec/s | cov/ft | corpus (files, KiB) | result |"
        echo "| --- | ---: | ---: | ---: | ---: | --- |"
        for t in "${targets[@]}"; do
                files=$(ls "$runs/$t/corpus" | wc -l)
                kib=$(( $(cat "$runs/$t/corpus"/* | wc -c) / 1024 ))
                echo "| $t | $(stat_of "$t" number_of_executed_units) | $(stat_of "$t" average_exec_per_sec) |" \
                     "$(coverage_of "$t") | $files, $kib | $(result_of "$t") |"
        done
)
echo "$table"
{
        echo "### Fuzzing"
        echo
        echo "$table"
        echo
        echo "$(date -u +%Y-%m-%d), ${seconds} s per target, $jobs at a time on $(nproc) cores:" \
             "\`tests/fuzz/run.sh $seconds${*:+ $*}\` (libFuzzer, ASan, UBSan, clang $(clang -dumpversion))."
} >"$report"
echo "run.sh: summary written to $report"

failed=0
for t in "${targets[@]}"; do
        result=$(result_of "$t")
        [ "$result" = ok ] && continue
        failed=1
        echo
        echo "run.sh: $t: $result (log: $runs/$t/log)"
        grep -m1 -A12 -E '^==[0-9]+==ERROR|runtime error|property does not hold|ERROR: libFuzzer' "$runs/$t/log" | sed 's/^/    /'
        for a in "$runs/$t/artifacts"/*; do
                [ -e "$a" ] || continue
                echo "  input:     $a"
                echo "  reproduce: $fuzz_build/tests/fuzz/fuzz-$t $a"
                echo "  keep it:   cp $a $here/regressions/$t/  (then fix; the unit suite replays it)"
        done
done
exit $failed
