#!/bin/bash
# Regenerates the seed corpora in tests/fuzz/corpus/ from real peers:
# Debian's tangd on loopback behind socat (which records every request and
# reply as it passes), clevis, jose and cryptsetup, and tether's own client.
# The committed files are what the tests use; run this only to refresh them:
#
#   tests/fuzz/make-corpus.sh [BUILD_DIR]      (default: build)
#
# The server-request seeds name keys of tests/fuzz/keys/, the key directory
# the server-request harness loads, so that /rec requests reach the key; its
# hosts (keys/hosts/, made with tether-keys host add) are kept as they are.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
build=$(cd "${1:-$top/build}" && pwd)
tether=$build/programs/tether
corpus=$here/corpus
keys=$here/keys
tangd=/usr/libexec/tangd

for tool in socat jose clevis cryptsetup curl python3 "$tangd" "$tether"; do
        command -v "$tool" >/dev/null || { echo "make-corpus: $tool is missing" >&2; exit 1; }
done

work=$(mktemp -d /tmp/tether-corpus.XXXXXX)
servers=()
cleanup() {
        for pid in "${servers[@]}"; do
                kill "$pid" 2>/dev/null || true
                wait "$pid" 2>/dev/null || true
        done
        rm -rf "$work"
}
trap cleanup EXIT

free_port() {
        python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_tangd VAR KEYDIR CAPTURE_DIR: one tangd per connection, as
# tangd.socket runs it, each exchange recorded as CAPTURE_DIR/X.req and
# X.resp. Sets VAR to the server's URL.
start_tangd() {
        local -n url_out=$1
        local keydir=$2 cap=$3 port
        port=$(free_port)
        mkdir -p "$cap"
        socat "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork" \
                SYSTEM:"f=\$(mktemp $cap/XXXXXX); tee \$f.req | $tangd $keydir | tee \$f.resp" \
                </dev/null >/dev/null 2>>"$work/socat.log" &
        servers+=($!)
        for _ in $(seq 50); do
                curl -sf "http://127.0.0.1:$port/adv" >/dev/null 2>&1 && break
                sleep 0.1
        done
        url_out="http://127.0.0.1:$port"
}

# The committed key directory: a rotated (hidden) pair and a current pair,
# made by tangd-keygen, exactly what a real tang deployment holds.
if [ ! -d "$keys" ]; then
        mkdir -p "$keys"
        /usr/libexec/tangd-keygen "$keys" 2>/dev/null
        for f in "$keys"/*.jwk; do mv "$f" "$keys/.$(basename "$f")"; done
        /usr/libexec/tangd-keygen "$keys" 2>/dev/null
        chown root:root "$keys"/*.jwk "$keys"/.*.jwk
        chmod 0644 "$keys"/*.jwk "$keys"/.*.jwk
fi

# A second server on other curves: ES384 signing, P-256 exchange.
keys2=$work/keys2
mkdir -p "$keys2"
jose jwk gen -i '{"alg":"ES384"}' -o "$keys2/sig.jwk"
jose jwk gen -i '{"alg":"ECMR","crv":"P-256"}' -o "$keys2/exc.jwk"

start_tangd url "$keys" "$work/cap1"
start_tangd url2 "$keys2" "$work/cap2"
rm -f "$work"/cap*/*    # the readiness probes

mkdir -p "$work/jwe"
secret="a secret of no importance"
thp=$(jose jwk thp -i "$(ls "$keys"/*.jwk | head -1)")

# Real JWEs: clevis and tether, each pin, talking to the real tangd.
echo -n "$secret" | clevis encrypt tang "{\"url\":\"$url\"}" -y >"$work/jwe/clevis-tang.jwe"
echo -n "$secret" | clevis encrypt tang "{\"url\":\"$url2\"}" -y >"$work/jwe/clevis-tang-p256.jwe"
echo -n "$secret" | clevis encrypt null '{}' >"$work/jwe/clevis-null.jwe"
echo -n "$secret" | clevis encrypt sss "{\"t\":1,\"pins\":{\"null\":[{},{}]}}" >"$work/jwe/clevis-sss-null-t1.jwe"
echo -n "$secret" | clevis encrypt sss "{\"t\":2,\"pins\":{\"null\":[{},{},{}]}}" >"$work/jwe/clevis-sss-null-t2.jwe"
echo -n "$secret" | clevis encrypt sss \
        "{\"t\":2,\"pins\":{\"null\":{},\"sss\":{\"t\":1,\"pins\":{\"null\":[{},{}]}}}}" >"$work/jwe/clevis-sss-nested.jwe"
echo -n "$secret" | clevis encrypt sss \
        "{\"t\":2,\"pins\":{\"tang\":[{\"url\":\"$url\"},{\"url\":\"$url2\"}],\"null\":{}}}" -y >"$work/jwe/clevis-sss-tang.jwe"
echo -n "$secret" | "$tether" encrypt tang "{\"url\":\"$url\",\"thp\":\"$thp\"}" >"$work/jwe/tether-tang.jwe"
echo -n "$secret" | "$tether" encrypt null '{}' >"$work/jwe/tether-null.jwe"
echo -n "$secret" | "$tether" encrypt null '{"fail":true}' >"$work/jwe/tether-null-fail.jwe"
echo -n "$secret" | "$tether" encrypt sss \
        "{\"t\":2,\"pins\":{\"null\":[{},{\"fail\":true},{}]}}" >"$work/jwe/tether-sss-null.jwe"
echo -n "$secret" | "$tether" encrypt sss \
        "{\"t\":1,\"pins\":{\"sss\":{\"t\":1,\"pins\":{\"sss\":{\"t\":1,\"pins\":{\"null\":{}}}}}}}" >"$work/jwe/tether-sss-deep.jwe"

# Decrypting the tang JWEs with both clients sends the /rec requests.
for f in clevis-tang clevis-tang-p256 tether-tang; do
        clevis decrypt <"$work/jwe/$f.jwe" >/dev/null
        "$tether" decrypt <"$work/jwe/$f.jwe" >/dev/null
done
clevis decrypt <"$work/jwe/clevis-sss-tang.jwe" >/dev/null

# Advertisements as the client fetches them, signed by each signing key.
for k in "$keys"/*.jwk "$keys"/.*.jwk; do
        if jose jwk use -i "$k" -u verify 2>/dev/null; then
                curl -sf "$url/adv/$(jose jwk thp -i "$k")" >/dev/null
        fi
done
curl -sf "$url/adv/" >/dev/null
curl -sf "$url2/adv" >/dev/null
curl -s -o /dev/null "$url/adv/unknownthumbprint"
curl -s -o /dev/null -X POST "$url/adv"
curl -s -o /dev/null -X POST -H 'Content-Type: application/jwk+json' -d '{"kty":"EC"}' "$url/rec/$thp"

# LUKS2 tokens exactly as clevis luks bind writes them.
img=$work/luks.img
truncate -s 32M "$img"
printf 'passphrase' >"$work/pass"
cryptsetup luksFormat --batch-mode --type luks2 --pbkdf pbkdf2 --pbkdf-force-iterations 1000 \
        --luks2-metadata-size 256k \
        --key-file "$work/pass" "$img"
clevis luks bind -y -k "$work/pass" -d "$img" tang "{\"url\":\"$url\"}"
clevis luks bind -y -k "$work/pass" -d "$img" sss "{\"t\":1,\"pins\":{\"tang\":{\"url\":\"$url2\"},\"null\":{}}}"
"$tether" luks bind -y -k "$work/pass" -d "$img" null '{}'
"$tether" luks bind -y -k "$work/pass" -d "$img" tang "{\"url\":\"$url\"}"

# Sorts everything recorded into the per-target corpora (the hand-written
# ones, http-framing, initramfs and ledger, stay).
rm -rf "$corpus"/{server-request,jwk-point,adv,jwe,sss,luks-token}
mkdir -p "$corpus"/{server-request,jwk-point,adv,jwe,sss,luks-token}
python3 - "$work" "$corpus" <<'EOF'
import glob, json, os, subprocess, sys

work, corpus = sys.argv[1:]


def split_http(raw):
    head, _, body = raw.partition(b'\r\n\r\n')
    lines = head.split(b'\r\n')
    length = 0
    for h in lines[1:]:
        name, _, value = h.partition(b':')
        if name.strip().lower() == b'content-length':
            length = int(value)
    return lines[0], body[:length]


def put(target, name, data):
    with open(os.path.join(corpus, target, name), 'wb') as f:
        f.write(data)


seen = set()
n = 0
for req in sorted(glob.glob(os.path.join(work, 'cap*', '*.req'))):
    raw = open(req, 'rb').read()
    if not raw:
        continue
    line, body = split_http(raw)
    method, target, _ = line.split(b' ', 2)
    resp = open(req[:-4] + '.resp', 'rb').read()
    status_line, reply = split_http(resp)
    status = status_line.split(b' ')[1].decode()
    kind = target.split(b'/')[1].decode()
    seed = method + b' ' + target + b'\n' + body
    if seed not in seen:
        seen.add(seed)
        n += 1
        put('server-request', '%s-%s-%s-%02d' % (method.decode().lower(), kind, status, n), seed)
    if kind == 'rec' and body:
        put('jwk-point', 'rec-request-%02d.json' % n, body)
        if status == '200':
            put('jwk-point', 'rec-reply-%02d.json' % n, reply)
    # One advertisement per server and signer: tangd signs each anew.
    signer = (os.path.dirname(req), target.rstrip(b'/'))
    if kind == 'adv' and status == '200' and signer not in seen:
        seen.add(signer)
        put('adv', 'adv-%02d.json' % n, reply)

for path in sorted(glob.glob(os.path.join(work, 'jwe', '*.jwe'))):
    name = os.path.basename(path)[:-4]
    compact = open(path, 'rb').read().strip()
    put('jwe', name + '.jwe', compact)
    flattened = subprocess.run(['jose', 'jwe', 'fmt', '-i-', '-o-'], input=compact, check=True,
                               capture_output=True).stdout
    put('jwe', name + '.json', flattened)
    header = json.loads(subprocess.run(['jose', 'b64', 'dec', '-i-', '-O-'], input=compact.split(b'.')[0],
                                       check=True, capture_output=True).stdout)
    if 'sss' in name:
        put('sss', name + '.jwe', compact)
    if 'epk' in header:
        put('jwk-point', name + '-epk.json', json.dumps(header['epk']).encode())
EOF

# The per-host routes: tangd has none, so these are written by hand, their
# /rec bodies a recorded client's point (P-521, the curve of the hosts'
# keys) sent to the hosts of keys/hosts (web01 active, gone01 revoked; no
# held host: the harness must never unlink an allow token).
host_seeds() {
        local c=$corpus/server-request sig w256 w1 g256 body long
        sig=$(basename "$(ls "$keys"/*.jwk | head -1)" .jwk)
        for k in "$keys"/*.jwk; do
                jose jwk use -i "$k" -u verify 2>/dev/null && sig=$(basename "$k" .jwk)
        done
        local hidden_sig=
        for k in "$keys"/.*.jwk; do
                jose jwk use -i "$k" -u verify 2>/dev/null && hidden_sig=$(basename "$k" .jwk) && hidden_sig=${hidden_sig#.}
        done
        w256=$(jose jwk thp -i "$(ls "$keys"/hosts/web01/*.jwk | head -1)")
        w1=$(jose jwk thp -a S1 -i "$(ls "$keys"/hosts/web01/*.jwk | head -1)")
        g256=$(jose jwk thp -i "$(ls "$keys"/hosts/gone01/*.jwk | head -1)")
        shared_exc=$(basename "$(ls "$keys"/*.jwk | grep -v "$sig")" .jwk)
        body=$(sed -n 2p "$(grep -l P-521 "$c"/post-rec-200-* | head -1)")
        long=$(printf 'a%.0s' $(seq 64))
        seed() { printf '%s\n%s' "$2" "$3" >"$c/$1"; }
        seed get-hadv-200-web01 "GET /h/web01/adv" ""
        seed get-hadv-200-web01-slash "GET /h/web01/adv/" ""
        seed get-hadv-200-web01-thp "GET /h/web01/adv/$sig" ""
        [ -z "$hidden_sig" ] || seed get-hadv-200-web01-hidden-thp "GET /h/web01/adv/$hidden_sig" ""
        seed get-hadv-404-web01-own-kid "GET /h/web01/adv/$w256" ""
        seed get-hadv-404-web01-unknown-thp "GET /h/web01/adv/unknownthumbprint" ""
        seed get-hadv-403-gone01 "GET /h/gone01/adv" ""
        seed get-hadv-403-gone01-thp "GET /h/gone01/adv/$sig" ""
        seed get-hadv-404-unknown-host "GET /h/nosuchhost/adv" ""
        seed post-hadv-405-web01 "POST /h/web01/adv" ""
        seed post-hrec-200-web01 "POST /h/web01/rec/$w256" "$body"
        seed post-hrec-200-web01-s1 "POST /h/web01/rec/$w1" "$body"
        seed post-hrec-200-web01-slashes "POST //h//web01//rec//$w256" "$body"
        seed post-hrec-403-gone01 "POST /h/gone01/rec/$g256" "$body"
        seed post-hrec-404-web01-gone01-kid "POST /h/web01/rec/$g256" "$body"
        seed post-hrec-404-web01-shared-kid "POST /h/web01/rec/$shared_exc" "$body"
        seed post-hrec-404-web01-signing-kid "POST /h/web01/rec/$sig" "$body"
        seed post-rec-404-web01-kid "POST /rec/$w256" "$body"
        seed post-rec-404-gone01-kid "POST /rec/$g256" "$body"
        seed post-hrec-404-unknown-host "POST /h/nosuchhost/rec/$w256" "$body"
        seed post-hrec-400-web01-bad-body "POST /h/web01/rec/$w256" '{"kty":"EC"}'
        seed get-hrec-405-web01 "GET /h/web01/rec/$w256" ""
        seed get-h-404-no-route "GET /h/web01" ""
        seed get-h-404-dot-dot "GET /h/../adv" ""
        seed get-h-404-dot "GET /h/./adv" ""
        seed get-h-404-dot-dot-in-name "GET /h/web01..x/adv" ""
        seed get-h-404-traversal "GET /h/web01/../gone01/adv" ""
        seed get-h-404-trailing-dot "GET /h/web01./adv" ""
        seed get-h-404-leading-dot "GET /h/.web01/adv" ""
        seed get-h-404-percent "GET /h/%77eb01/adv" ""
        seed get-h-404-percent-dot "GET /h/%2e%2e/adv" ""
        seed get-h-404-upper "GET /h/WEB01/adv" ""
        seed get-h-404-name-64 "GET /h/$long/adv" ""
        seed get-h-404-name-63 "GET /h/${long:1}/adv" ""
        seed post-hrec-404-name-64 "POST /h/${long//a/w}/rec/$w256" "$body"
        printf 'GET /h/web01\0/adv\n' >"$c/get-h-404-nul-name"
        seed get-h-404-query "GET /h/web01/adv?x=1" ""
        seed get-h-404-name-dotted "GET /h/web01.example.org/adv" ""
}
host_seeds

# Client JWKs of every supported curve, and keys of other types, from jose.
for spec in '{"alg":"ECMR","crv":"P-256"}' '{"alg":"ECMR","crv":"P-384"}' '{"alg":"ECMR","crv":"P-521"}' \
            '{"alg":"ES256"}' '{"kty":"oct","bytes":32}' '{"kty":"RSA","bits":2048}'; do
        name=$(echo "$spec" | tr -dc 'A-Za-z0-9-')
        jose jwk gen -i "$spec" | jose jwk pub -i- -o "$corpus/jwk-point/jose-$name.json"
done
jose jwk gen -i '{"alg":"ECMR","crv":"P-384"}' -o "$corpus/jwk-point/jose-private-P-384.json"

for id in 0 1 2 3; do
        cryptsetup token export --token-id "$id" "$img" >"$corpus/luks-token/token-$id.json" 2>/dev/null ||
                rm -f "$corpus/luks-token/token-$id.json"
done

for t in "$corpus"/*; do
        printf '%-16s %3d files, %6d bytes\n' "$(basename "$t")" "$(ls "$t" | wc -l)" "$(cat "$t"/* | wc -c)"
done
