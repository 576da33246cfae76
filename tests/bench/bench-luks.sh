#!/bin/bash
# LUKS benchmark: `tether luks bind/pass` against Debian's `clevis luks bind/pass`.
#
#   tests/bench/bench-luks.sh [BUILD_DIR]        (default ./build; run as root)
#
# Environment:
#   RUNS_ARGON2   timed runs per command on the argon2id image (default 3)
#   RUNS_PBKDF2   timed runs per command on the PBKDF2 image (default 7)
#   PBKDF2_ITER   iterations of the PBKDF2 image's user keyslot (default 1000:
#                 that image measures each tool's own overhead, not the KDF)
#
# Two 32 MiB sparse LUKS2 images, the user's passphrase in a key file:
#   argon2id  `cryptsetup luksFormat --type luks2 --batch-mode --key-file KEY`,
#             i.e. cryptsetup's DEFAULT PBKDF, benchmarked on this machine
#             (about 1-2 s per unlock: the cost clevis pays several times)
#   pbkdf2    the same with --pbkdf pbkdf2 --pbkdf-force-iterations PBKDF2_ITER
# and a local tetherd (127.0.0.1, tether-keys gen). Measured, wall-clock:
#   bind   `tether luks bind -y -d IMG -k KEY tang CFG` and
#          `clevis luks bind -y -d IMG -k KEY tang CFG`, each on a fresh copy
#          of the image (cp --sparse=always, not timed); the order alternates
#   pass   `tether luks pass -d IMG -s 1` and `clevis luks pass -d IMG -s 1`
#          on an image holding one binding (same bytes checked once)
#   unlock `cryptsetup open --test-passphrase --key-slot 0` (one argon2 run)
# Prints medians, the ratio clevis/tether, the targets (argon2id: bind >= 2.5x,
# pass >= 20x faster than clevis) and how many argon2 runs each command does:
# inferred as time / unlock time, and counted (with strace, in one extra
# untimed run: each argon2 run maps its memory cost in one anonymous mmap).
# Exits non-zero only when the setup fails; a missed target prints
# "TARGET MISSED: ...". Loopback only; every command is bounded by timeout.
set -euo pipefail
unset MALLOC_PERTURB_   # meson test sets it; it slows every allocation

BUILD=${1:-./build}
RUNS_ARGON2=${RUNS_ARGON2:-3}
RUNS_PBKDF2=${RUNS_PBKDF2:-7}
PBKDF2_ITER=${PBKDF2_ITER:-1000}
CMD_TIMEOUT=120

die() { echo "bench-luks: SETUP FAILED: $*" >&2; exit 1; }
log() { echo "bench-luks: $*"; }

for v in RUNS_ARGON2 RUNS_PBKDF2 PBKDF2_ITER; do
        [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $EUID -eq 0 ]] || die "run as root (cryptsetup on image files, its lock directory)"

BUILD=$(cd "$BUILD" 2>/dev/null && pwd) || die "build directory '${1:-./build}' not found"
TETHERD=${TETHERD:-$BUILD/programs/tetherd}
TETHER_KEYS=${TETHER_KEYS:-$BUILD/programs/tether-keys}
TETHER=${TETHER:-$BUILD/programs/tether}
for b in "$TETHERD" "$TETHER_KEYS" "$TETHER"; do
        [[ -x $b ]] || die "$b not found (build first: ninja -C $BUILD)"
done

declare -A PKG_FOR=(
        [cryptsetup]=cryptsetup-bin [clevis]=clevis [clevis-luks-bind]=clevis-luks
        [clevis-luks-pass]=clevis-luks [jose]=jose [curl]=curl [setsid]=util-linux
        [timeout]=coreutils [python3]=python3
)
missing=()
for cmd in "${!PKG_FOR[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG_FOR[$cmd]}")
done
if ((${#missing[@]})); then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        die "missing programs; install: ${missing[*]}"
fi
HAVE_STRACE=0
command -v strace >/dev/null 2>&1 && HAVE_STRACE=1

# --------------------------------------------------------------------------- cleanup
TMP=""
SRV_PID=""
cleanup() {
        local rc=$? i
        set +e
        if [[ -n $SRV_PID ]] && kill -0 "$SRV_PID" 2>/dev/null; then
                kill -TERM -- "-$SRV_PID" 2>/dev/null || kill -TERM "$SRV_PID" 2>/dev/null
                for ((i = 0; i < 50; i++)); do
                        kill -0 "$SRV_PID" 2>/dev/null || break
                        sleep 0.1
                done
                kill -KILL -- "-$SRV_PID" 2>/dev/null
        fi
        [[ -n $SRV_PID ]] && wait "$SRV_PID" 2>/dev/null
        [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
        exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

TMP=$(mktemp -d /tmp/tether-bench-luks.XXXXXX)
KEY=$TMP/passphrase
printf 'bench passphrase' >"$KEY"
T_START=$EPOCHREALTIME
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)   # before our own argon2 runs add to it

# --------------------------------------------------------------------------- helpers
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {if (NR % 2) printf "%.3f", v[(NR + 1) / 2]; else printf "%.3f", (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
ratio() { awk -v c="$1" -v t="$2" 'BEGIN {if (t > 0) printf "%.1f", c / t; else print "inf"}'; }
div() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.1f", a / b; else print "?"}'; }

# timed OUTFILE CMD...: run CMD bounded, stdout to OUTFILE; print the seconds taken.
timed() {
        local outf=$1 t0 t1 rc=0
        shift
        t0=$(now)
        timeout "$CMD_TIMEOUT" "$@" >"$outf" 2>"$TMP/last.err" </dev/null || rc=$?
        t1=$(now)
        ((rc == 0)) || die "exit $rc: $* ($(head -c 600 "$TMP/last.err" | tr '\n' ' '))"
        elapsed "$t0" "$t1"
}

fresh() {          # fresh BASE NAME: a sparse copy of an image, its path
        local p=$TMP/$2
        rm -f "$p"
        cp --sparse=always "$1" "$p" || die "cp $1 $p"
        echo "$p"
}

# argon2_runs CMD...: run CMD once under strace and count the anonymous mmaps of
# (about) the argon2 memory cost: one per argon2 run, in any process it starts.
argon2_runs() {
        local st=$TMP/strace.out min=$((ARGON2_KB * 1024 * 9 / 10))
        ((HAVE_STRACE)) || { echo "?"; return 0; }
        rm -f "$st"
        if ! timeout "$CMD_TIMEOUT" strace -f -qq -e trace=mmap -o "$st" "$@" \
                        >/dev/null 2>"$TMP/last.err" </dev/null; then
                echo "?"
                return 0
        fi
        awk -v min="$min" -F', ' '/mmap\(NULL, / && /MAP_ANONYMOUS/ && /PROT_READ\|PROT_WRITE/ {
                        if ($2 + 0 >= min) n++ } END {print n + 0}' "$st"
}

# --------------------------------------------------------------------------- setup
mkdir -m 0755 "$TMP/keys"
"$TETHER_KEYS" gen "$TMP/keys" >/dev/null || die "tether-keys gen"
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
setsid "$TETHERD" -q -a 127.0.0.1 -p "$PORT" "$TMP/keys" >"$TMP/tetherd.log" 2>&1 </dev/null &
SRV_PID=$!
URL=http://127.0.0.1:$PORT
for ((i = 0; i < 100; i++)); do
        kill -0 "$SRV_PID" 2>/dev/null || die "tetherd exited at start-up: $(tail -n 5 "$TMP/tetherd.log" | tr '\n' ' ')"
        [[ $(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$URL/adv" 2>/dev/null || true) == 200 ]] && break
        sleep 0.1
done
((i < 100)) || die "tetherd does not answer on $URL/adv"
CFG="{\"url\":\"$URL\"}"
export no_proxy=127.0.0.1 NO_PROXY=127.0.0.1
unset http_proxy HTTP_PROXY https_proxy HTTPS_PROXY all_proxy ALL_PROXY

log "formatting the argon2id image (cryptsetup's default PBKDF, benchmarked here)..."
A2=$TMP/argon2.img
truncate -s 32M "$A2"
FMT_A2=$(timed /dev/null cryptsetup luksFormat --type luks2 --batch-mode --key-file "$KEY" "$A2")
P2=$TMP/pbkdf2.img
truncate -s 32M "$P2"
timed /dev/null cryptsetup luksFormat --type luks2 --batch-mode --pbkdf pbkdf2 \
        --pbkdf-force-iterations "$PBKDF2_ITER" --key-file "$KEY" "$P2" >/dev/null

read -r A2_TYPE ARGON2_KB A2_TIME A2_CPUS < <(cryptsetup luksDump --dump-json-metadata "$A2" |
        python3 -c 'import json, sys; k = json.load(sys.stdin)["keyslots"]["0"]["kdf"]; print(k["type"], k.get("memory", 0), k.get("time", 0), k.get("cpus", 0))') ||
        die "cannot read the argon2 image's keyslot"
[[ $A2_TYPE == argon2* ]] || die "cryptsetup's default PBKDF here is $A2_TYPE, not argon2"
log "argon2 image: $A2_TYPE, memory $ARGON2_KB KiB, time cost $A2_TIME, $A2_CPUS thread(s); luksFormat took ${FMT_A2}s"
((ARGON2_KB * 1024 > 4 * 1024 * 1024)) || HAVE_STRACE=0   # too small to tell apart from other mmaps

# One argon2 run: cryptsetup's own check-only unlock of the user's slot. Sampled
# in every round, between the tools' runs, so that the "time / unlock time"
# estimate sees the same machine load as the runs it divides.
declare -A US=([argon2]="" [pbkdf2]="")
unlock_sample() {  # unlock_sample IMG BASE
        US[$1]+=" $(timed /dev/null cryptsetup open --test-passphrase --disable-external-tokens --key-slot 0 --key-file "$KEY" "$2")"
}
timed /dev/null cryptsetup open --test-passphrase --disable-external-tokens --key-slot 0 --key-file "$KEY" "$A2" >/dev/null  # warm-up
# --------------------------------------------------------------------------- measure
declare -A MED RUNS UNLOCK
for img in argon2 pbkdf2; do
        if [[ $img == argon2 ]]; then base=$A2; n=$RUNS_ARGON2; else base=$P2; n=$RUNS_PBKDF2; fi
        tb=() cb=()
        for ((r = 0; r < n; r++)); do
                unlock_sample "$img" "$base"
                for tool in tether clevis; do
                        # alternate who goes first, so that neither always runs on a warm cache
                        if ((r % 2)); then [[ $tool == tether ]] && tool=clevis || tool=tether; fi
                        dev=$(fresh "$base" "bind-$tool.img")
                        if [[ $tool == tether ]]; then
                                tb+=("$(timed /dev/null "$TETHER" luks bind -y -d "$dev" -k "$KEY" tang "$CFG")")
                        else
                                cb+=("$(timed /dev/null clevis luks bind -y -d "$dev" -k "$KEY" tang "$CFG")")
                        fi
                done
        done
        MED[$img bind tether]=$(median "${tb[@]}")
        MED[$img bind clevis]=$(median "${cb[@]}")
        log "$img bind: tether ${tb[*]} s; clevis ${cb[*]} s"

        # pass: one image holding one tether binding in slot 1.
        bound=$(fresh "$base" "bound-$img.img")
        timed /dev/null "$TETHER" luks bind -y -d "$bound" -k "$KEY" tang "$CFG" >/dev/null
        timed "$TMP/pass.tether" "$TETHER" luks pass -d "$bound" -s 1 >/dev/null
        timed "$TMP/pass.clevis" clevis luks pass -d "$bound" -s 1 >/dev/null
        cmp -s "$TMP/pass.tether" "$TMP/pass.clevis" || die "$img: tether luks pass and clevis luks pass print different keys"
        [[ -s $TMP/pass.tether ]] || die "$img: tether luks pass printed nothing"
        tp=() cp_=()
        for ((r = 0; r < n; r++)); do
                unlock_sample "$img" "$base"
                if ((r % 2)); then
                        cp_+=("$(timed /dev/null clevis luks pass -d "$bound" -s 1)")
                        tp+=("$(timed /dev/null "$TETHER" luks pass -d "$bound" -s 1)")
                else
                        tp+=("$(timed /dev/null "$TETHER" luks pass -d "$bound" -s 1)")
                        cp_+=("$(timed /dev/null clevis luks pass -d "$bound" -s 1)")
                fi
        done
        MED[$img pass tether]=$(median "${tp[@]}")
        MED[$img pass clevis]=$(median "${cp_[@]}")
        RUNS[$img]=$n
        log "$img pass: tether ${tp[*]} s; clevis ${cp_[*]} s"
        # shellcheck disable=SC2086
        UNLOCK[$img]=$(median ${US[$img]})
        log "$img unlock (cryptsetup open --test-passphrase --key-slot 0):${US[$img]} s"
done
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

# Counted argon2 runs (one untimed run each, under strace).
declare -A COUNT
if ((HAVE_STRACE)); then
        for tool in tether clevis; do
                dev=$(fresh "$A2" "count-$tool.img")
                if [[ $tool == tether ]]; then
                        COUNT[bind $tool]=$(argon2_runs "$TETHER" luks bind -y -d "$dev" -k "$KEY" tang "$CFG")
                        COUNT[pass $tool]=$(argon2_runs "$TETHER" luks pass -d "$TMP/bound-argon2.img" -s 1)
                else
                        COUNT[bind $tool]=$(argon2_runs clevis luks bind -y -d "$dev" -k "$KEY" tang "$CFG")
                        COUNT[pass $tool]=$(argon2_runs clevis luks pass -d "$TMP/bound-argon2.img" -s 1)
                fi
        done
        COUNT[unlock]=$(argon2_runs cryptsetup open --test-passphrase --disable-external-tokens --key-slot 0 --key-file "$KEY" "$A2")
else
        log "strace missing (or argon2 memory too small): argon2 runs are only inferred"
fi

# --------------------------------------------------------------------------- report
declare -A TARGET=([bind]=2.5 [pass]=20)
MISSED=()
echo "==================================================================================================="
printf 'tether luks vs clevis luks %s, wall-clock medians; %s core(s); tetherd on %s\n' \
        "$(dpkg-query -W -f '${Version}' clevis-luks 2>/dev/null || echo '?')" "$(nproc)" "$URL"
printf 'argon2id image: memory %s KiB, time cost %s, %s thread(s); one unlock (cryptsetup open --test-passphrase): %ss\n' \
        "$ARGON2_KB" "$A2_TIME" "$A2_CPUS" "${UNLOCK[argon2]}"
printf 'pbkdf2 image:   %s iterations; one unlock: %ss\n' "$PBKDF2_ITER" "${UNLOCK[pbkdf2]}"
printf 'load average before the bench: %s; at the end (includes its own runs): %s\n' "$LOAD_START" "$LOAD_END"
if awk -v l="${LOAD_START%% *}" -v n="$(nproc)" 'BEGIN {exit !(l > 0.5 * n)}'; then
        echo "note: the machine was busy with other work: the figures are noisy; rerun on an idle machine"
fi
echo
printf '%-9s %-5s %4s %9s %9s %8s   %-22s %s\n' image op runs "tether s" "clevis s" ratio "target" "argon2 runs ~= time / unlock time (counted)"
for img in argon2 pbkdf2; do
        for op in bind pass; do
                t=${MED[$img $op tether]} c=${MED[$img $op clevis]}
                r=$(ratio "$c" "$t")
                tgt="-" runs=""
                if [[ $img == argon2 ]]; then
                        if awk -v r="$r" -v g="${TARGET[$op]}" 'BEGIN {exit !(r >= g)}'; then
                                tgt=">= ${TARGET[$op]}x: met"
                        else
                                tgt=">= ${TARGET[$op]}x: MISSED"
                                MISSED+=("argon2id $op: tether ${t}s vs clevis ${c}s = ${r}x (target >= ${TARGET[$op]}x)")
                        fi
                        runs="tether ~$(div "$t" "${UNLOCK[argon2]}") (${COUNT[$op tether]:-?}), clevis ~$(div "$c" "${UNLOCK[argon2]}") (${COUNT[$op clevis]:-?})"
                fi
                printf '%-9s %-5s %4s %9s %9s %7sx   %-22s %s\n' "$img" "$op" "${RUNS[$img]}" "$t" "$c" "$r" "$tgt" "$runs"
        done
done
if ((HAVE_STRACE)); then
        printf '(counted: anonymous mmaps of the argon2 memory cost under strace -f; cryptsetup open --test-passphrase alone: %s)\n' "${COUNT[unlock]:-?}"
fi
echo "tether's floor on the argon2 image: bind needs 1 argon2 run (the passphrase must be checked), pass 0."
for m in "${MISSED[@]}"; do
        echo "TARGET MISSED: $m"
done
noise=$(grep -v -e '^key directory .*: loaded' -e '^tetherd: serving ' "$TMP/tetherd.log" || true)
[[ -z $noise ]] || { echo "tetherd -q logged:"; head -n 5 <<<"$noise" | sed 's/^/  /'; }
printf 'total %ss\n' "$(elapsed "$T_START" "$(now)")"
echo "==================================================================================================="
exit 0
