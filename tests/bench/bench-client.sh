#!/bin/bash
# Client benchmark: `tether decrypt` against `clevis decrypt` (Debian's clevis 19)
# on the same JWEs and the same local servers.
#
#   tests/bench/bench-client.sh [BUILD_DIR]        (default ./build; run as root)
#
# Environment:
#   RUNS        runs per measurement of a working setup (default 30)
#   DEAD_RUNS   runs per measurement with a dead server (default 10)
#   STARTUP_RUNS  runs of each client in the interleaved tang measurement (default 200)
#   INTERLEAVE  the timer for it (default BUILD_DIR/tests/bench/interleave)
#   ONLY_STARTUP=1  part 4 alone (minutes less: no dead-server runs)
#   DEAD_CAP    seconds after which a run with a dead server is killed (default 40)
#
# Three key directories (tether-keys gen), each served by
#   tetherd   127.0.0.1:PORT    tetherd -q -a 127.0.0.1 -p PORT DIR
#   tangd     127.0.0.1:PORT    systemd-socket-activate -a --inetd ... /usr/libexec/tangd DIR
#             (one process per connection, as tangd.socket Accept=yes deploys it)
# Measured (wall clock from start to exit, median of RUNS, every run checked to
# give back the plaintext):
#   1. a tang JWE (clevis encrypt tang) against server 1: tether vs clevis decrypt
#   2. an sss JWE, t=2 of the 3 servers
#   3. an sss JWE, t=2 of 3 where the first server is dead, three ways:
#        refused   a port with nothing listening (connection refused)
#        silent    a socket that listens and never accepts or answers
#        syndrop   a socket whose accept queue is full (SYNs dropped: connect hangs)
#      the other two servers are up. tether asks all three at once with its default
#      timeouts (connect 3 s, whole exchange 10 s, no TETHER_TIMEOUT).
# plus, once per case, the programs each client runs (strace -f, execve calls).
# Ends with a summary table, the ratios and the targets:
#   tang decrypt: tether >= 10x faster than clevis
# and, from part 4 (issue 13, start-up): a tang JWE, tether and clevis run in
# turn (tether, clevis, tether, ...) STARTUP_RUNS times each against the same
# server, timed by a small C program (posix_spawn to waitpid, no Python in
# between), so that both see the same moments of a busy machine:
#   tether decrypt median <= 6 ms (tetherd); clevis/tether >= 25x against
#   tetherd, >= 10x against tangd
# and the bytes each client adds to an initramfs (initramfs_size.py).
#   sss 2-of-3 with one dead server: tether done within the connect timeout (3 s),
#   not after a per-server timeout
# Exits non-zero only when the setup fails; a missed target prints "TARGET MISSED".
# Loopback only; every run is bounded; only processes started here are stopped.
# shellcheck disable=SC2317  # functions run from traps and via eval
set -euo pipefail
unset MALLOC_PERTURB_ TETHER_TIMEOUT

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BUILD=${1:-./build}
RUNS=${RUNS:-30}
DEAD_RUNS=${DEAD_RUNS:-10}
STARTUP_RUNS=${STARTUP_RUNS:-200}
ONLY_STARTUP=${ONLY_STARTUP:-0}   # 1: part 4 (interleaved tang, initramfs) alone
STARTUP_TARGET_MS=6
DEAD_CAP=${DEAD_CAP:-40}
CONNECT_TIMEOUT_S=3   # tether's default connect timeout (client/ctx.h)

die() { echo "bench-client: SETUP FAILED: $*" >&2; exit 1; }
log() { echo "bench-client: $*"; }

for v in RUNS DEAD_RUNS DEAD_CAP STARTUP_RUNS; do
        [[ ${!v} =~ ^[1-9][0-9]*$ ]] || die "$v must be a positive integer (got '${!v}')"
done
[[ $EUID -eq 0 ]] || die "run as root (apt-get, tangd's key directory)"

BUILD=$(cd "$BUILD" 2>/dev/null && pwd) || die "build directory '${1:-./build}' not found"
TETHERD=${TETHERD:-$BUILD/programs/tetherd}
TETHER_KEYS=${TETHER_KEYS:-$BUILD/programs/tether-keys}
TETHER=${TETHER:-$BUILD/programs/tether}
INTERLEAVE=${INTERLEAVE:-$BUILD/tests/bench/interleave}
for b in "$TETHERD" "$TETHER_KEYS" "$TETHER" "$INTERLEAVE"; do
        [[ -x $b ]] || die "$b not found (build first: ninja -C $BUILD)"
done

# --------------------------------------------------------------------------- cleanup
TMP=""
PIDS=()            # processes we started, each the leader of its own session (setsid)
POLICY_RC_CREATED=0

stop_pid() {       # stop_pid PID: TERM its process group, wait, then KILL
        local pid=$1 i
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
        done
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
}

cleanup() {
        local rc=$? pid
        set +e
        for pid in "${PIDS[@]}"; do
                stop_pid "$pid"
        done
        ((POLICY_RC_CREATED)) && rm -f /usr/sbin/policy-rc.d
        [[ -n $TMP && -d $TMP ]] && rm -rf "$TMP"
        exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------- tools
declare -A PKG_FOR=(
        [clevis]=clevis [jose]=jose [systemd-socket-activate]=systemd [curl]=curl
        [python3]=python3 [strace]=strace [setsid]=util-linux [timeout]=coreutils
)
missing=()
for cmd in "${!PKG_FOR[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || missing+=("${PKG_FOR[$cmd]}")
done
[[ -x /usr/libexec/tangd ]] || missing+=(tang)
# HTTP client libraries priced at start-up in part 4 (issue 13's evaluation):
# soname, then package.
HTTP_LIBS=(libcurl.so.4:libcurl4 libcurl-gnutls.so.4:libcurl3-gnutls libneon.so.27:libneon27
           libserf-1.so.1:libserf-1-1 libsoup-3.0.so.0:libsoup-3.0-0)
for entry in "${HTTP_LIBS[@]}"; do
        ldconfig -p | grep -q "^[[:space:]]*${entry%%:*} " || missing+=("${entry#*:}")
done
command -v cc >/dev/null 2>&1 || missing+=(gcc)
command -v readelf >/dev/null 2>&1 || missing+=(binutils)
if ((${#missing[@]})); then
        mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
        log "installing: ${missing[*]}"
        # Keep package scripts from starting tangd on port 80.
        if [[ ! -e /usr/sbin/policy-rc.d ]]; then
                printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
                chmod 755 /usr/sbin/policy-rc.d
                POLICY_RC_CREATED=1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq || die "apt-get update failed"
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
                die "apt-get install ${missing[*]} failed"
        if ((POLICY_RC_CREATED)); then rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=0; fi
fi
for cmd in "${!PKG_FOR[@]}"; do
        command -v "$cmd" >/dev/null 2>&1 || die "$cmd still missing"
done
[[ -x /usr/libexec/tangd ]] || die "/usr/libexec/tangd missing (package tang)"
PYTHON=$(command -v /usr/bin/python3 || command -v python3)
RUNNER=$HERE/client_runs.py
[[ -f $RUNNER ]] || die "$RUNNER missing"
# Loopback must not go through a proxy.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY
export no_proxy=127.0.0.1,localhost,::1 NO_PROXY=127.0.0.1,localhost,::1

TMP=$(mktemp -d /tmp/tether-bench-client.XXXXXX)
chmod 755 "$TMP"

# --------------------------------------------------------------------------- helpers
free_ports() {     # free_ports N: N distinct free TCP ports on 127.0.0.1
        "$PYTHON" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

start_bg() {       # start_bg NAME LOGFILE CMD...: start CMD in its own session, record its pid
        local name=$1 logf=$2
        shift 2
        setsid "$@" >"$logf" 2>&1 </dev/null &
        local pid=$!
        PIDS+=("$pid")
        eval "PID_$name=$pid"
}

wait_up() {        # wait_up NAME PID URL: until URL answers 200, at most 10 s
        local name=$1 pid=$2 url=$3 i code=000
        for ((i = 0; i < 100; i++)); do
                kill -0 "$pid" 2>/dev/null || die "$name exited at start-up (log: $(tail -n 5 "$TMP/$name.log" | tr '\n' ' '))"
                code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "$url" 2>/dev/null || true)
                [[ $code == 200 ]] && return 0
                sleep 0.1
        done
        die "$name does not answer 200 on $url (last: $code)"
}

json_tang() {      # json_tang URL THP: a tang pin config
        printf '{"url":"%s","thp":"%s"}' "$1" "$2"
}

# measure KEY JWE RUNS CAP CMD...: runs CMD RUNS times with JWE on stdin, each
# checked to print the plaintext (JWE "-": empty stdin, any output), results into R_*[KEY]
declare -A R_MED R_MAX R_OK R_RUNS R_TO R_LEFT R_ERR R_EXECS R_CPU
measure() {
        local key=$1 jwe=$2 runs=$3 cap=$4 out check=(--expect "$TMP/pt")
        shift 4
        if [[ $jwe == - ]]; then
                jwe=/dev/null check=()
        fi
        out=$("$PYTHON" "$RUNNER" time --runs "$runs" --input "$jwe" "${check[@]}" \
                --timeout "$cap" --max-total 150 -- "$@") || die "timing $key failed: $out"
        local RUNS=0 OK=0 TIMEOUTS=0 MEDIAN_MS=0 MIN_MS=0 MAX_MS=0 CPU_MS=0 LEFT_BEHIND=0 LAST_ERR=''
        eval "$(grep -v '^FAIL=' <<<"$out")"
        R_MED[$key]=$MEDIAN_MS R_MAX[$key]=$MAX_MS R_OK[$key]=$OK R_CPU[$key]=$CPU_MS
        R_RUNS[$key]=$RUNS R_TO[$key]=$TIMEOUTS R_LEFT[$key]=$LEFT_BEHIND R_ERR[$key]=$LAST_ERR
        local extra=""
        ((TIMEOUTS == 0)) || extra+="  killed at ${cap}s: $TIMEOUTS"
        ((LEFT_BEHIND == 0)) || extra+="  processes left running after exit: $LEFT_BEHIND"
        printf 'bench-client: %-30s median %9.1f ms  min %9.1f  max %9.1f  cpu %7.1f ms  ok %s/%s%s\n' \
                "$key" "$MEDIAN_MS" "$MIN_MS" "$MAX_MS" "$CPU_MS" "$OK" "$RUNS" "$extra"
        [[ -z $LAST_ERR ]] || log "  last failure: $LAST_ERR"
}

count_execs() {    # count_execs KEY JWE CAP CMD...: programs run by one decryption
        # (strace -f follows everything the command started, also what it left
        # running: CAP bounds that wait)
        local key=$1 jwe=$2 cap=$3 out EXECS=0
        shift 3
        out=$("$PYTHON" "$RUNNER" execs --input "$jwe" --timeout "$cap" -- "$@") || die "strace of $key failed: $out"
        eval "$(grep '^EXECS=' <<<"$out")"
        R_EXECS[$key]=$EXECS
}

# --------------------------------------------------------------------------- keys, servers
read -r -a PORTS < <(free_ports 6) || die "cannot find free ports"
THP=()
for i in 0 1 2; do
        mkdir -m 0755 "$TMP/keys$i"
        "$TETHER_KEYS" gen "$TMP/keys$i" >/dev/null || die "tether-keys gen $TMP/keys$i failed"
        THP[i]=$("$TETHER_KEYS" show "$TMP/keys$i") || die "tether-keys show failed"
        [[ ${THP[i]} =~ ^[A-Za-z0-9_-]{43}$ ]] || die "tether-keys show printed '${THP[i]}'"
        start_bg "tetherd$i" "$TMP/tetherd$i.log" "$TETHERD" -q -a 127.0.0.1 -p "${PORTS[i]}" "$TMP/keys$i"
        # tangd as Debian deploys it (tangd.socket, Accept=yes): one process per
        # connection. systemd 252's systemd-socket-activate needs -a with --inetd.
        start_bg "tangd$i" "$TMP/tangd$i.log" systemd-socket-activate -a --inetd \
                -l "127.0.0.1:${PORTS[i + 3]}" /usr/libexec/tangd "$TMP/keys$i"
done
declare -A URL
for i in 0 1 2; do
        URL[tetherd$i]=http://127.0.0.1:${PORTS[i]}
        URL[tangd$i]=http://127.0.0.1:${PORTS[i + 3]}
        eval "wait_up tetherd$i \$PID_tetherd$i ${URL[tetherd$i]}/adv"
        eval "wait_up tangd$i \$PID_tangd$i ${URL[tangd$i]}/adv"
        curl -sf --max-time 10 -o "$TMP/adv$i.jws" "${URL[tetherd$i]}/adv" || die "cannot fetch /adv $i"
done
log "tetherd ${URL[tetherd0]} ${URL[tetherd1]} ${URL[tetherd2]}; tangd ${URL[tangd0]} ${URL[tangd1]} ${URL[tangd2]} (same 3 key directories)"

# Dead servers for part 3.
DEAD_MODES=(refused silent syndrop)
read -r REFUSED_PORT < <(free_ports 1)
declare -A DEAD_URL=([refused]=http://127.0.0.1:$REFUSED_PORT)
for m in silent syndrop; do
        start_bg "dead_$m" "$TMP/dead_$m.log" "$PYTHON" "$RUNNER" listen --mode "$m" --port-file "$TMP/dead_$m.port"
        for ((i = 0; i < 100; i++)); do
                [[ -s $TMP/dead_$m.port ]] && break
                eval "kill -0 \$PID_dead_$m" 2>/dev/null || die "$m listener exited: $(cat "$TMP/dead_$m.log")"
                sleep 0.05
        done
        [[ -s $TMP/dead_$m.port ]] || die "$m listener did not start"
        DEAD_URL[$m]=http://127.0.0.1:$(cat "$TMP/dead_$m.port")
done
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "${DEAD_URL[refused]}/adv" 2>/dev/null || true)
[[ $code == 000 ]] || die "the 'refused' port ${DEAD_URL[refused]} answers ($code)"
log "dead servers: refused ${DEAD_URL[refused]}, silent ${DEAD_URL[silent]}, syndrop ${DEAD_URL[syndrop]}"

# --------------------------------------------------------------------------- JWEs
# The secret a LUKS binding holds: 64 random bytes.
head -c 64 /dev/urandom >"$TMP/pt"
for kind in tetherd tangd; do
        clevis encrypt tang "$(json_tang "${URL[${kind}0]}" "${THP[0]}")" <"$TMP/pt" >"$TMP/tang_$kind.jwe" ||
                die "clevis encrypt tang against $kind failed"
        cfg=$(printf '{"t":2,"pins":{"tang":[%s,%s,%s]}}' "$(json_tang "${URL[${kind}0]}" "${THP[0]}")" \
                "$(json_tang "${URL[${kind}1]}" "${THP[1]}")" "$(json_tang "${URL[${kind}2]}" "${THP[2]}")")
        clevis encrypt sss "$cfg" <"$TMP/pt" >"$TMP/sss_$kind.jwe" || die "clevis encrypt sss against $kind failed"
        for m in "${DEAD_MODES[@]}"; do
                # The dead server comes first; it was bound with server 0's advertisement.
                cfg=$(printf '{"t":2,"pins":{"tang":[{"url":"%s","adv":"%s"},%s,%s]}}' "${DEAD_URL[$m]}" "$TMP/adv0.jws" \
                        "$(json_tang "${URL[${kind}1]}" "${THP[1]}")" "$(json_tang "${URL[${kind}2]}" "${THP[2]}")")
                clevis encrypt sss "$cfg" <"$TMP/pt" >"$TMP/dead_${m}_$kind.jwe" || die "clevis encrypt sss ($m) failed"
        done
done
# Every JWE decrypts with both clients before anything is timed.
for f in tang_tetherd tang_tangd sss_tetherd sss_tangd dead_refused_tetherd; do
        cmp -s "$TMP/pt" <(timeout -k 2 60 "$TETHER" decrypt <"$TMP/$f.jwe") || die "tether decrypt of $f.jwe does not give the plaintext back"
        cmp -s "$TMP/pt" <(timeout -k 2 60 clevis decrypt <"$TMP/$f.jwe" 2>/dev/null) || die "clevis decrypt of $f.jwe does not give the plaintext back"
done
log "JWEs made with clevis encrypt; both clients decrypt them"

# --------------------------------------------------------------------------- runs
# What starting tether costs before any work (its shared libraries and
# their constructors): `tether --help`.
if [[ $ONLY_STARTUP != 1 ]]; then
log "part 0: start-up cost of tether, $RUNS runs"
measure "startup tether" - "$RUNS" 60 "$TETHER" --help
R_LIBS=$(ldd "$TETHER" | grep -c '=>' || true)
log "part 1+2: $RUNS runs per case (tang JWE, sss t=2 of 3)"
for kind in tetherd tangd; do
        for jwe in tang sss; do
                measure "$jwe $kind tether" "$TMP/${jwe}_$kind.jwe" "$RUNS" 60 "$TETHER" decrypt
                measure "$jwe $kind clevis" "$TMP/${jwe}_$kind.jwe" "$RUNS" 60 clevis decrypt
                count_execs "$jwe $kind tether" "$TMP/${jwe}_$kind.jwe" 60 "$TETHER" decrypt
                count_execs "$jwe $kind clevis" "$TMP/${jwe}_$kind.jwe" 60 clevis decrypt
        done
done
log "part 3: sss t=2 of 3, first server dead; $DEAD_RUNS runs per case, each killed after ${DEAD_CAP}s"
for kind in tetherd tangd; do
        for m in "${DEAD_MODES[@]}"; do
                measure "dead-$m $kind tether" "$TMP/dead_${m}_$kind.jwe" "$DEAD_RUNS" "$DEAD_CAP" "$TETHER" decrypt
                measure "dead-$m $kind clevis" "$TMP/dead_${m}_$kind.jwe" "$DEAD_RUNS" "$DEAD_CAP" clevis decrypt
        done
done
for m in "${DEAD_MODES[@]}"; do
        count_execs "dead-$m tetherd tether" "$TMP/dead_${m}_tetherd.jwe" 5 "$TETHER" decrypt
        count_execs "dead-$m tetherd clevis" "$TMP/dead_${m}_tetherd.jwe" 5 clevis decrypt
done
fi

# The floor (tests/bench/floor.c): tether's own shared libraries, linked as
# tether links them, and the cryptography of one recovery, without network or
# tether's code; and the same with each candidate HTTP library added, to price
# its start-up. Built here, against the tether under test.
build_probe() {    # build_probe OUT [SONAME]
        local needed=()
        mapfile -t needed < <(readelf -d "$TETHER" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | grep -v '^libc\.so')
        cc -O2 -o "$1" "$HERE/floor.c" -Wl,--no-as-needed "${needed[@]/#/-l:}" ${2:+"-l:$2"} ||
                die "cannot build the floor probe${2:+ with $2}"
}
PROBES=(floor)
build_probe "$TMP/floor"
for entry in "${HTTP_LIBS[@]}"; do
        build_probe "$TMP/floor+${entry%%:*}" "${entry%%:*}"
        PROBES+=("floor+${entry%%:*}")
done

# Interleaved: tether and clevis in turn on the same tang JWE and server (and,
# via tetherd, the probes in the same turn, so that all see the same moments).
declare -A S_MED S_P10 S_P90 S_OK S_RUNS
interleaved() {    # interleaved KIND: the tang JWE made through KIND's server 0
        local kind=$1 out line i=0 MEDIAN_MS P10_MS P90_MS OK RUNS who probe
        local cmds=("$TETHER" decrypt ::: "$(command -v clevis)" decrypt) whos=(tether clevis)
        if [[ $kind == tetherd ]]; then
                for probe in "${PROBES[@]}"; do
                        cmds+=(::: "$TMP/$probe" "$TMP/pt")
                        whos+=("$probe")
                done
        fi
        out=$(timeout 900 "$INTERLEAVE" "$STARTUP_RUNS" "$TMP/tang_$kind.jwe" "$TMP/pt" "${cmds[@]}") ||
                die "interleaved timing via $kind failed: $out"
        for who in "${whos[@]}"; do
                i=$((i + 1))   # not inside $(...): a subshell would lose it
                line=$(sed -n "${i}p" <<<"$out")
                eval "$line"
                S_MED[$kind $who]=$MEDIAN_MS S_P10[$kind $who]=$P10_MS S_P90[$kind $who]=$P90_MS
                S_OK[$kind $who]=$OK S_RUNS[$kind $who]=$RUNS
                printf 'bench-client: %-30s median %9.2f ms  p10 %8.2f  p90 %8.2f  ok %s/%s\n' \
                        "interleaved tang $kind $who" "$MEDIAN_MS" "$P10_MS" "$P90_MS" "$OK" "$RUNS"
        done
}
log "part 4: tang JWE, tether and clevis in turn, $STARTUP_RUNS runs each, per server"
for kind in tetherd tangd; do
        interleaved "$kind"
done
INITRAMFS=$("$PYTHON" "$HERE/initramfs_size.py" "$BUILD") || die "initramfs_size.py failed: $INITRAMFS"
TETHER_BYTES=0 TETHER_ALL_BYTES=0 CLEVIS_BYTES=0
eval "$(grep -E '^(TETHER_BYTES|TETHER_ALL_BYTES|CLEVIS_BYTES)=[0-9]+$' <<<"$INITRAMFS")"

# Servers still healthy?
for kind in tetherd tangd; do
        for i in 0 1 2; do
                eval "kill -0 \$PID_$kind$i" 2>/dev/null || die "$kind$i died during the runs"
        done
done

# --------------------------------------------------------------------------- summary
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b > 0 ? a / b : 0)}'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a >= b)}'; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a < b)}'; }
fmt_ms() {         # fmt_ms KEY: median, or ">CAP s killed" when every run was killed
        local k=$1
        if [[ -z ${R_MED[$k]:-} ]]; then
                printf -- '-'
        elif [[ ${R_TO[$k]:-0} -gt 0 && ${R_TO[$k]} -eq ${R_RUNS[$k]} ]]; then
                printf '>%ss killed' "$DEAD_CAP"
        else
                printf '%.1f' "${R_MED[$k]}"
        fi
}
fmt_cpu() { [[ -n ${R_CPU[$1]:-} ]] && printf '%.1f' "${R_CPU[$1]}" || printf -- '-'; }
okcol() { [[ -n ${R_RUNS[$1]:-} ]] && echo "${R_OK[$1]}/${R_RUNS[$1]}" || echo -; }
FMT='%-24s %-8s %10s %10s %8s %8s %8s %7s %7s %7s %7s   %s\n'
row() {            # row LABEL SERVER TETHER_KEY CLEVIS_KEY TARGET
        local t=$3 c=$4 r=-
        [[ -n ${R_MED[$c]:-} ]] && r="$(ratio "${R_MED[$c]}" "${R_MED[$t]}")x"
        # shellcheck disable=SC2059
        printf "$FMT" "$1" "$2" "$(fmt_ms "$t")" "$(fmt_ms "$c")" "$r" "$(fmt_cpu "$t")" "$(fmt_cpu "$c")" \
                "$(okcol "$t")" "$(okcol "$c")" "${R_EXECS[$t]:--}" "${R_EXECS[$c]:--}" "$5"
}

MISSED=()
echo
echo "=================================================== tether client benchmark summary ==================================================="
if [[ $ONLY_STARTUP != 1 ]]; then
echo "wall clock per decryption from start to exit, median of $RUNS runs (dead-server rows: $DEAD_RUNS runs); every run checked"
echo "against the plaintext. cpu = median user+system time of the command and the processes it waited for. execs = programs run"
echo "by one decryption (strace -f, successful execve calls)."
# shellcheck disable=SC2059
printf "$FMT" case server "tether ms" "clevis ms" "clevis/" "tether" "clevis" "tether" "clevis" "tether" "clevis" target
# shellcheck disable=SC2059
printf "$FMT" "" "" "" "" "tether" "cpu ms" "cpu ms" "ok" "ok" "execs" "execs" ""
for kind in tetherd tangd; do
        for jwe in tang sss; do
                t="$jwe $kind tether" c="$jwe $kind clevis"
                r=$(ratio "${R_MED[$c]}" "${R_MED[$t]}")
                target="(info)"
                if [[ $jwe == tang ]]; then
                        if ge "$r" 10; then target=">= 10x: met"; else
                                target=">= 10x: MISSED"
                                MISSED+=("tang decrypt via $kind: tether ${R_MED[$t]} ms vs clevis ${R_MED[$c]} ms = ${r}x (target >= 10x)")
                        fi
                fi
                label="tang"
                [[ $jwe == sss ]] && label="sss t=2 of 3"
                row "$label" "$kind" "$t" "$c" "$target"
        done
done
row "tether start-up only" - "startup tether" "-" "(info) tether --help: exec, ${R_LIBS} shared libraries"
cap_ms=$((CONNECT_TIMEOUT_S * 1000))
for kind in tetherd tangd; do
        for m in "${DEAD_MODES[@]}"; do
                t="dead-$m $kind tether" c="dead-$m $kind clevis"
                if [[ ${R_OK[$t]} -eq ${R_RUNS[$t]} ]] && lt "${R_MAX[$t]}" "$cap_ms"; then
                        target="< ${CONNECT_TIMEOUT_S} s: met (max $(printf '%.0f' "${R_MAX[$t]}") ms)"
                else
                        target="< ${CONNECT_TIMEOUT_S} s: MISSED"
                        MISSED+=("sss 2-of-3, first server $m, via $kind: tether median ${R_MED[$t]} ms, max ${R_MAX[$t]} ms, ok ${R_OK[$t]}/${R_RUNS[$t]} (target: every run done within the ${CONNECT_TIMEOUT_S} s connect timeout)")
                fi
                row "sss 2/3, 1 dead: $m" "$kind" "$t" "$c" "$target"
        done
done
echo
echo "dead servers: refused = nothing listens on the port; silent = listens, never accepts or answers (the request is sent, no"
echo "answer comes); syndrop = accept queue full, SYNs dropped (connect hangs). tether runs with its defaults (connect timeout"
echo "${CONNECT_TIMEOUT_S} s, 10 s per attempt, 3 attempts when unreachable); clevis (curl) has no timeout."
for k in "${!R_LEFT[@]}"; do
        if ((R_LEFT[$k] > 0)); then
                echo "note: $k: ${R_LEFT[$k]} process(es) of the runs still running when the command itself had exited (killed by the bench)"
        fi
done | sort
for k in "${!R_OK[@]}"; do
        if ((R_OK[$k] < R_RUNS[$k])); then
                echo "note: $k: ${R_OK[$k]}/${R_RUNS[$k]} runs gave the plaintext back; last failure: ${R_ERR[$k]}"
        fi
done | sort
fi
echo
echo "start-up (issue 13): tang JWE, tether and clevis decrypt run in turn, $STARTUP_RUNS runs each, same server; wall clock from"
echo "posix_spawn to exit (tests/bench/interleave.c), every run checked against the plaintext"
FMT4='%-10s %12s %12s %12s %12s %9s %9s   %s\n'
# shellcheck disable=SC2059
printf "$FMT4" server "tether ms" "tether p10" "clevis ms" "clevis p10" "clevis/" "ok" target
for kind in tetherd tangd; do
        t="$kind tether" c="$kind clevis"
        r=$(ratio "${S_MED[$c]}" "${S_MED[$t]}")
        want=25
        [[ $kind == tangd ]] && want=10
        target=">= ${want}x: met"
        if ! ge "$r" "$want"; then
                target=">= ${want}x: MISSED"
                MISSED+=("interleaved tang decrypt via $kind: tether ${S_MED[$t]} ms vs clevis ${S_MED[$c]} ms = ${r}x (target >= ${want}x)")
        fi
        if [[ $kind == tetherd ]]; then
                if lt "$STARTUP_TARGET_MS" "${S_MED[$t]}"; then
                        target+="; <= ${STARTUP_TARGET_MS} ms: MISSED"
                        MISSED+=("tether decrypt via tetherd: median ${S_MED[$t]} ms (target <= ${STARTUP_TARGET_MS} ms)")
                else
                        target+="; <= ${STARTUP_TARGET_MS} ms: met"
                fi
        fi
        # shellcheck disable=SC2059
        printf "$FMT4" "$kind" "${S_MED[$t]}" "${S_P10[$t]}" "${S_MED[$c]}" "${S_P10[$c]}" "${r}x" \
                "${S_OK[$t]}+${S_OK[$c]}/$((2 * ${S_RUNS[$t]}))" "$target"
        if ((S_OK[$t] < S_RUNS[$t] || S_OK[$c] < S_RUNS[$c])); then
                echo "note: interleaved $kind: tether ${S_OK[$t]}/${S_RUNS[$t]}, clevis ${S_OK[$c]}/${S_RUNS[$c]} runs gave the plaintext back"
        fi
done
floor=${S_MED[tetherd floor]}
echo
echo "the floor, in the same turns via tetherd: tether's shared libraries (as tether links them: their loading and constructors)"
echo "and one recovery's cryptography (OpenSSL's DRBG, SHA-256, AES-256-GCM, 3 P-521 multiplications), no network, no tether"
echo "code (tests/bench/floor.c):"
printf '  floor                                  median %8.2f ms   p10 %8.2f ms\n' "$floor" "${S_P10[tetherd floor]}"
printf '  tether decrypt above the floor                %8.2f ms   (HTTP, JSON, its own code, tetherd answering)\n' \
        "$(awk -v a="${S_MED[tetherd tether]}" -v b="$floor" 'BEGIN {print a - b}')"
printf '  %-36s %8.2f ms   (what %sx clevis allows; the floor is %sx clevis)\n' "clevis / 25" \
        "$(awk -v c="${S_MED[tetherd clevis]}" 'BEGIN {print c / 25}')" 25 "$(ratio "${S_MED[tetherd clevis]}" "$floor")"
echo "HTTP client libraries by start-up cost: the floor with the library linked too (what each adds before any request);"
echo "tether uses OpenSSL's own client (<openssl/http.h>, in libcrypto, which the floor already holds):"
for probe in "${PROBES[@]:1}"; do
        printf '  %-36s median %8.2f ms   +%.2f ms over the floor\n' "${probe#floor+}" "${S_MED[tetherd $probe]}" \
                "$(awk -v a="${S_MED[tetherd $probe]}" -v b="$floor" 'BEGIN {print a - b}')"
done
echo
echo "initramfs: bytes each client adds beyond what dracut's systemd and crypt modules already hold (ldd closure; our own"
echo "files without debug information):"
printf '  tether decrypt (tether alone)                      %10d bytes (%d KiB)\n' "$TETHER_BYTES" $((TETHER_BYTES / 1024))
printf '  tether, tether-askpass, token plugin (60tether)    %10d bytes (%d KiB)\n' "$TETHER_ALL_BYTES" $((TETHER_ALL_BYTES / 1024))
printf '  clevis: scripts, jose, curl, luksmeta, bash        %10d bytes (%d KiB)   clevis/tether: %sx (all of tether: %sx)\n' \
        "$CLEVIS_BYTES" $((CLEVIS_BYTES / 1024)) "$(ratio "$CLEVIS_BYTES" "$TETHER_BYTES")" "$(ratio "$CLEVIS_BYTES" "$TETHER_ALL_BYTES")"
grep '^initramfs:' <<<"$INITRAMFS" | sed 's/^/  /'
for m in "${MISSED[@]}"; do
        echo "TARGET MISSED: $m"
done
echo "======================================================================================================================================="
exit 0
