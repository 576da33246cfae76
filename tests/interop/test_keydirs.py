#!/usr/bin/env python3
"""Key directories move freely between Debian's tangd and tetherd.

A. A directory made by `tether-keys gen`, served by tangd:
   GET /adv is 200 and verifies (`jose jws ver`) with the directory's
   signing key; its payload is the public part of the directory's keys; a
   clevis round trip through tangd works with the thp `tether-keys show`
   prints.  Then tangd is replaced by tetherd on the same URL: the JWE made
   through tangd decrypts through tetherd.
B. A directory made by `tangd-keygen`, served by tetherd:
   clevis round trip through tetherd; `tether-keys show DIR`,
   `tether-keys show --url` (tetherd and tangd) and `tang-show-keys PORT`
   (tangd on the same directory) all print the same thumbprints.  tetherd is
   replaced by tangd on the same URL: the JWE made through tetherd decrypts
   through tangd.
C. The directory from B rotated by `tangd-rotate-keys` while tetherd and
   tangd serve it: afterwards exactly the keys the tool made are advertised
   (as with an idle tangd on a copy: the control); tetherd serves the old
   JWE through tang's hidden keys, and the thumbprints from
   `tether-keys show` / `show --url` / `tang-show-keys` agree again; with
   one more advertised signing key too (compared as sets: each tool lists
   them in its own order).
"""

import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import peers  # noqa: E402
import tlib  # noqa: E402
from peers import (clevis_decrypt, clevis_encrypt_tang, jose, jws_verifies,  # noqa: E402
                   keys_where, load_keys, show_lines)
from tlib import adv_payload, canon, get, jwe_header, log  # noqa: E402


def tang_show_keys(port):
    # tang-show-keys fetches http://localhost:PORT/adv with curl
    return show_lines(peers.run([peers.TANG_SHOW_KEYS, str(port)],
                                timeout=30).stdout)


def show_dir(kd):
    return show_lines(tlib.tether_keys('show', kd).stdout)


def show_url(url):
    return show_lines(tlib.tether_keys('show', '--url', url, timeout=30,
                                       env=peers.clean_env()).stdout)


def check_adv_of(h, server, kd, tag):
    """GET /adv from server: 200, verified by every advertised signing key
    of kd, payload = jose jwk pub of the advertised keys."""
    r = get(server.port, '/adv')
    assert r.status == 200, '%s GET /adv: %r' % (server.kind, r)
    f = h.write('%s.jws' % tag, r.body)
    keys = load_keys(kd)
    for k in keys_where(keys, signing=True, hidden=False):
        assert jws_verifies(f, k.path), (
            '%s advertisement not verified by %s' % (server.kind, k.file))
    for k in keys_where(keys, signing=True, hidden=True):
        assert not jws_verifies(f, k.path), (
            '%s advertisement signed by hidden key %s' % (server.kind, k.file))
    got = sorted(canon(k) for k in adv_payload(r.body)['keys'])
    want = sorted(canon(k.pub()) for k in keys_where(keys, hidden=False))
    assert got == want, '%s payload != public advertised keys' % server.kind
    return r.body


def compare_show(kd, tang, teth, ordered=True):
    a = show_dir(kd)
    b = tang_show_keys(tang.port)
    c = show_url(teth.url)
    d = show_url(tang.url)
    log('   tether-keys show DIR:        %s' % a)
    log('   tang-show-keys (tangd):      %s' % b)
    log('   tether-keys show --url tetherd: %s' % c)
    log('   tether-keys show --url tangd:   %s' % d)
    if ordered:
        assert a == b == c == d, 'thumbprint lists differ'
    else:
        assert sorted(a) == sorted(b) == sorted(c) == sorted(d), \
            'thumbprint sets differ'
    assert b, 'tang-show-keys printed nothing'


def test():
    peers.require('tetherd', 'tether-keys', 'tangd', 'tangd-keygen',
                  'tangd-rotate-keys', 'systemd-socket-activate', 'jose',
                  'clevis', 'curl')
    secret = os.urandom(32) + b' keydir interop'
    with peers.Harness() as h:
        # ---------------------------------------------------------------- A
        log('-- A: tether-keys gen, served by tangd')
        kda = h.mkdir('tether-made')
        tlib.tether_gen(kda)
        tang = h.tangd(kda)
        check_adv_of(h, tang, kda, 'a-tangd')
        thp = show_dir(kda)
        assert len(thp) == 1, thp
        jwe = clevis_encrypt_tang({'url': tang.url, 'thp': thp[0]}, secret)
        exc = keys_where(load_keys(kda), exchange=True)[0]
        assert jwe_header(jwe)['kid'] == exc.thp(), 'kid is not the exc key'
        assert clevis_decrypt(jwe) == secret, 'round trip through tangd'
        log('   clevis round trip through tangd: ok')
        port = tang.port
        tang.stop()
        teth = h.tetherd(kda, port=port)
        assert clevis_decrypt(jwe) == secret, \
            'JWE made through tangd does not decrypt through tetherd'
        log('   JWE made through tangd decrypts through tetherd: ok')
        teth.stop()

        # ---------------------------------------------------------------- B
        log('-- B: tangd-keygen, served by tetherd')
        kdb = h.mkdir('tang-made')
        peers.tang_keygen(kdb)
        keys = load_keys(kdb)
        assert len(keys_where(keys, signing=True)) == 1 and \
            len(keys_where(keys, exchange=True)) == 1, keys
        teth = h.tetherd(kdb)
        tang = h.tangd(kdb)
        check_adv_of(h, teth, kdb, 'b-tetherd')
        sig = keys_where(keys, signing=True)[0]
        exc = keys_where(keys, exchange=True)[0]
        # thp as clevis' own help says to get it: jose jwk thp -i SIG.jwk
        sig_thp = jose('jwk', 'thp', '-i', sig.path).decode().strip()
        jwe_b = clevis_encrypt_tang({'url': teth.url, 'thp': sig_thp}, secret)
        assert jwe_header(jwe_b)['kid'] == exc.thp()
        assert clevis_decrypt(jwe_b) == secret, 'round trip through tetherd'
        log('   clevis round trip through tetherd: ok')
        compare_show(kdb, tang, teth)
        assert show_dir(kdb) == [sig_thp]

        port = teth.port
        teth.stop()
        tang2 = h.tangd(kdb, port=port)
        assert clevis_decrypt(jwe_b) == secret, \
            'JWE made through tetherd does not decrypt through tangd'
        log('   JWE made through tetherd decrypts through tangd: ok')
        tang2.stop()
        teth = h.tetherd(kdb, port=port)

        # ---------------------------------------------------------------- C
        # tang's rotation tool, run while the servers are up and idle.  As a
        # control, the same tool on a copy of the directory that only an idle
        # tangd serves: tang creates keys only when a request finds no
        # advertised key, so afterwards exactly the pair the tool made is
        # advertised.  tetherd must leave the directory the same way.
        log('-- C: tangd-rotate-keys while the servers run')
        kdc = h.path('tang-made-control')
        shutil.copytree(kdb, kdc)
        tang_c = h.tangd(kdc)
        peers.run([peers.TANGD_ROTATE, '-d', kdc])
        peers.run([peers.TANGD_ROTATE, '-d', kdb])
        time.sleep(0.5)   # let a server react to the change, if it does
        tang_c.stop()
        failures = []
        adv_c = sorted(k.file for k in load_keys(kdc) if not k.hidden)
        adv_b = sorted(k.file for k in load_keys(kdb) if not k.hidden)
        log('   advertised after rotation, tangd-only copy: %s' % adv_c)
        log('   advertised after rotation, tetherd running: %s' % adv_b)
        if len(adv_b) != len(adv_c):
            failures.append(
                'tangd-rotate-keys -d DIR while tetherd serves DIR leaves %d '
                'advertised keys %s, the same tool with an idle tangd leaves %d'
                ' (%s).  tangd-rotate-keys hides the old keys first and then '
                'creates the new pair; tetherd sees the directory without '
                'advertised keys in between and creates a pair of its own.\n'
                'tetherd log:\n%s' % (len(adv_b), adv_b, len(adv_c), adv_c,
                                      teth.log()[-1200:]))
        keys = load_keys(kdb)
        assert len(keys_where(keys, hidden=True)) == 2, keys
        check_adv_of(h, teth, kdb, 'c-tetherd')
        assert clevis_decrypt(jwe_b) == secret, \
            'old JWE after tangd-rotate-keys, through tetherd'
        log('   old JWE decrypts through tetherd (tang-hidden key): ok')
        compare_show(kdb, tang, teth,
                     ordered=len(keys_where(keys, signing=True,
                                            hidden=False)) == 1)
        new_thp = show_dir(kdb)
        assert sig_thp not in new_thp, 'show still prints the rotated key'
        for t in new_thp:
            jwe_c = clevis_encrypt_tang({'url': teth.url, 'thp': t}, secret)
            assert clevis_decrypt(jwe_c) == secret

        log('-- C2: one more advertised signing key')
        extra = h.path('extra.jwk')
        jose('jwk', 'gen', '-i', '{"alg":"ES512"}', '-o', extra)
        extra_thp = jose('jwk', 'thp', '-i', extra).decode().strip()
        os.rename(extra, os.path.join(kdb, extra_thp + '.jwk'))
        compare_show(kdb, tang, teth, ordered=False)
        assert extra_thp in show_dir(kdb)
        check_adv_of(h, teth, kdb, 'c2-tetherd')
        check_adv_of(h, tang, kdb, 'c2-tangd')
        jwe_d = clevis_encrypt_tang({'url': teth.url, 'thp': extra_thp},
                                    secret)
        assert clevis_decrypt(jwe_d) == secret

        if failures:
            for f in failures:
                log('\nFAIL ' + f)
            raise AssertionError('%d check(s) failed' % len(failures))


if __name__ == '__main__':
    tlib.script_main(test)
