#!/bin/sh
# Deployment hardening of the installed units, as systemd itself rates it:
# `systemd-analyze security --offline=yes` on the units meson configured.
# Every unit must forbid core dumps (LimitCORE=0): keys and secrets.
# tetherd's units must rate "OK" or better (exposure below 4.0, systemd's
# threshold 39) and run as an unprivileged user; tether-askpass runs as root
# in the initramfs (block devices, the ask-password sockets) and is reported
# only. Then tetherd, as an unprivileged user, must serve a key directory it
# cannot write to.
#
#   tests/deploy/unit-security.sh BUILD_DIR
#
# Writes BUILD_DIR/reliability/security.md for the README.
set -eu

build=$(cd "$1" && pwd)
work=$(mktemp -d)
server=
cleanup() {
        [ -z "$server" ] || kill "$server" 2>/dev/null || true
        rm -rf "$work"
}
trap cleanup EXIT

failed=0
rows=
rate() {   # unit-file name-to-analyse required(yes/no)
        cp "$1" "$work/$2"
        line=$(systemd-analyze security --offline=yes "$work/$2" 2>&1 | grep 'Overall exposure level' || true)
        exposure=$(echo "$line" | sed -n 's/.*: \([0-9.]*\) \([A-Z]*\).*/\1/p')
        level=$(echo "$line" | sed -n 's/.*: \([0-9.]*\) \([A-Z]*\).*/\2/p')
        user=$(sed -n 's/^User=//p' "$1")
        if [ -z "$exposure" ]; then
                verdict="FAILED: systemd-analyze gave no rating"
                failed=1
        elif ! grep -qx 'LimitCORE=0' "$1"; then
                # Every unit: tetherd holds private keys, tether-askpass unlocked secrets.
                verdict="FAILED: core dumps allowed (no LimitCORE=0)"
                failed=1
        elif [ "$3" = no ]; then
                verdict="reported (root, in the initramfs too)"
        elif ! systemd-analyze security --offline=yes --threshold=39 "$work/$2" >/dev/null 2>&1; then
                verdict="FAILED: above OK"
                failed=1
        elif [ -z "$user" ] || [ "$user" = root ]; then
                verdict="FAILED: runs as root"
                failed=1
        else
                verdict="ok"
        fi
        echo "unit-security: $2: exposure $exposure $level, User=${user:-root}: $verdict"
        rows="$rows| $2 | $exposure | $level | ${user:-root} | $verdict |
"
}

rate "$build/systemd/tetherd.service" tetherd.service yes
rate "$build/systemd/tetherd-inetd@.service" tetherd-inetd@0.service yes
rate "$build/systemd/tether-askpass.service" tether-askpass.service no

# Unprivileged and read-only: keys 0444 in a root-owned 0755 directory.
keys="$work/keys"
mkdir "$keys"
"$build/programs/tether-keys" gen "$keys" >/dev/null
chmod 0755 "$work" "$keys"
chmod 0444 "$keys"/*.jwk
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
setpriv --reuid=65534 --regid=65534 --clear-groups \
        "$build/programs/tetherd" -a 127.0.0.1 -p "$port" "$keys" 2>"$work/log" &
server=$!
readonly_verdict="FAILED: no advertisement"
for _ in $(seq 50); do
        if curl -sf "http://127.0.0.1:$port/adv" >"$work/adv" 2>/dev/null; then
                readonly_verdict=ok
                break
        fi
        sleep 0.1
done
# A JWE bound to it decrypts: /rec works too.
if [ "$readonly_verdict" = ok ]; then
        secret=$(echo hardened | "$build/programs/tether" encrypt tang "{\"url\":\"http://127.0.0.1:$port\"}" -y |
                 "$build/programs/tether" decrypt) || secret=
        [ "$secret" = hardened ] || readonly_verdict="FAILED: /rec"
fi
uid=$(awk '/^Uid:/ {print $2}' "/proc/$server/status")
[ "$uid" = 65534 ] || readonly_verdict="FAILED: runs as uid $uid"
[ "$readonly_verdict" = ok ] || failed=1
echo "unit-security: tetherd as uid 65534 on a directory it cannot write: $readonly_verdict"

mkdir -p "$build/reliability"
{
        echo "### Deployment hardening"
        echo
        echo "| unit | exposure | systemd's rating | runs as | verdict |"
        echo "|---|---|---|---|---|"
        printf '%s' "$rows"
        echo
        echo "tetherd as an unprivileged user (uid 65534) on a key directory it cannot write to: adv and rec $readonly_verdict."
        echo
        echo "Measured $(date -u +%Y-%m-%d) by \`tests/deploy/unit-security.sh\` (\`systemd-analyze security --offline=yes\`, systemd $(systemd-analyze --version | sed -n '1s/^systemd \([0-9]*\).*/\1/p'))."
} >"$build/reliability/security.md"
exit $failed
