#!/usr/bin/env python3
"""Per-host keys with unmodified peers: Debian's clevis 19 and tang 11.

  * `clevis encrypt tang '{"url":"http://..../h/web01","thp":<shared thp>}'`
    binds to the host's own exchange key (the JWE's kid), signed by the
    shared signing key; `clevis decrypt` recovers through /h/web01/rec.
  * revoked: the next `clevis decrypt` fails (tetherd answered 403);
    restored: it works again. held: refused; after `tether-keys host allow`
    exactly one decrypt succeeds, the next is refused.
  * a second host's JWE sent to the first host's URL: its kid is unknown
    there (404).
  * tangd still serves a key directory holding hosts/: /adv is the same
    key set tetherd's /adv advertises, a clevis binding made through tangd
    decrypts through it, and the hosts' files are neither read nor touched.
"""

import base64
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import peers  # noqa: E402
import tlib  # noqa: E402
from peers import clevis_decrypt, clevis_encrypt_tang  # noqa: E402
from tlib import adv_payload, canon, get, jwe_header, log, thumbprint  # noqa: E402


def host(kd, *args):
    return tlib.tether_keys('host', *args[:1], kd, *args[1:]).stdout


def full_log(teth):
    # Server.log() is the tail only: offsets need the whole file.
    with open(teth.logfile, 'rb') as f:
        return f.read().decode(errors='replace')


def refused(jwe, secret, teth, why):
    """clevis decrypt fails, and because tetherd answered its /rec with 403."""
    seen = len(full_log(teth))
    cp = clevis_decrypt(jwe, check=False)
    assert cp.returncode != 0 and cp.stdout != secret, '%s: clevis decrypt succeeded' % why

    def recs():
        return [line for line in full_log(teth)[seen:].splitlines() if 'POST /h/web01/rec/' in line]
    # The access log line may come a moment after the answer.
    assert tlib.eventually(recs) and all(' 403 ' in line for line in recs()), '%s: %r' % (why, recs())


def tree(path):
    out = {}
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(root, n)
            st = os.lstat(p)
            out[os.path.relpath(p, path)] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return out


def test():
    peers.require('tetherd', 'tether-keys', 'jose', 'clevis', 'curl')
    with peers.Harness() as h:
        kd = h.mkdir('keys')
        tlib.tether_gen(kd)
        out = host(kd, 'add', 'web01')
        thp = [line.split(': ')[1] for line in out.splitlines() if line.startswith('thp: ')]
        assert len(thp) == 1, out
        host(kd, 'add', 'db02')
        teth = h.tetherd(kd)
        secret = os.urandom(32) + b' per-host secret\n'
        web01 = tlib.key_of(os.path.join(kd, 'hosts', 'web01'), 'exc')

        log('-- clevis binds to /h/web01 with the shared thp')
        url = teth.url + '/h/web01'
        jwe = clevis_encrypt_tang({'url': url, 'thp': thp[0]}, secret)
        hdr = jwe_header(jwe)
        assert hdr['kid'] == thumbprint(web01), hdr
        assert hdr['clevis']['tang']['url'] == url, hdr
        assert clevis_decrypt(jwe) == secret

        log('-- revoke: refused; restore: recovered again')
        host(kd, 'revoke', 'web01')
        refused(jwe, secret, teth, 'revoked')
        host(kd, 'restore', 'web01')
        assert clevis_decrypt(jwe) == secret

        log('-- hold: refused; allow: exactly one recovery')
        host(kd, 'hold', 'web01')
        refused(jwe, secret, teth, 'held')
        host(kd, 'allow', 'web01')
        assert clevis_decrypt(jwe) == secret
        refused(jwe, secret, teth, 'held, allow spent')
        host(kd, 'restore', 'web01')

        log("-- another host's binding is not recovered through web01's URL")
        jwe_db = clevis_encrypt_tang({'url': teth.url + '/h/db02', 'thp': thp[0]}, secret)
        assert clevis_decrypt(jwe_db) == secret
        wrong = jwe_db.decode()  # the URL lives in the protected header: rewrite it
        prot = wrong.split('.')[0]
        hdr = json.loads(base64.urlsafe_b64decode(prot + '=' * (-len(prot) % 4)))
        hdr['clevis']['tang']['url'] = url
        new_prot = base64.urlsafe_b64encode(json.dumps(hdr).encode()).rstrip(b'=').decode()
        seen = len(full_log(teth))
        cp = clevis_decrypt((new_prot + wrong[len(prot):]).encode(), check=False)
        assert cp.returncode != 0 and cp.stdout != secret
        # Refused by tetherd (the exchange comes before the JWE's tag check).
        db02 = thumbprint(tlib.key_of(os.path.join(kd, 'hosts', 'db02'), 'exc'))
        line = 'POST /h/web01/rec/%s 404 ' % db02
        # The access log line may come a moment after the answer.
        assert tlib.eventually(lambda: line in full_log(teth)[seen:]), full_log(teth)[seen:]

        log('-- tangd serves the directory with hosts/ in it')
        peers.require('tangd', 'systemd-socket-activate')
        before = tree(os.path.join(kd, 'hosts'))
        tang = h.tangd(kd)
        r = get(tang.port, '/adv')
        assert r.status == 200, r
        theirs = sorted(canon(k) for k in adv_payload(r.body)['keys'])
        ours = sorted(canon(k) for k in adv_payload(get(teth.port, '/adv').body)['keys'])
        assert theirs == ours, 'tangd advertises other keys than tetherd /adv'
        jwe_t = clevis_encrypt_tang({'url': tang.url, 'thp': thp[0]}, secret)
        assert clevis_decrypt(jwe_t) == secret
        assert get(tang.port, '/h/web01/adv').status == 404
        assert tree(os.path.join(kd, 'hosts')) == before, 'tangd changed hosts/'


if __name__ == '__main__':
    tlib.script_main(test)
