#!/usr/bin/env python3
"""Debian's clevis 19 (tang pin) round trips through tetherd.

  * `clevis encrypt tang '{"url":..,"thp":<tether-keys show DIR>}'`, then
    `clevis decrypt` gives the secret back; the JWE names the directory's
    exchange key (S256 kid) and carries tetherd's advertised key set.
  * the same with "adv" given as a file fetched from tetherd, and inline.
  * a thumbprint of a key that is not a signing key is refused by clevis.
  * `tether-keys rotate DIR` while tetherd runs: old JWEs still decrypt
    (through the rotated, hidden exchange key), `tether-keys show` names the
    new signing key and a new encryption uses the new exchange key.
  * an "old clevis" JWE whose kid is the S1 (SHA-1) thumbprint, made by
    clevis-encrypt-tang itself with its default hash switched to S1:
    clevis decrypt finds the key by S1 and asks tetherd /rec/{S1 kid},
    before and after rotation.
  * over IPv6 loopback ([::1]) if available.
  * with tetherd stopped, decryption fails (the secret really comes from
    the server).
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import peers  # noqa: E402
import tlib  # noqa: E402
from peers import clevis_decrypt, clevis_encrypt_tang, keys_where, load_keys  # noqa: E402
from tlib import adv_payload, canon, get, jwe_header, log  # noqa: E402


def only(seq, what):
    assert len(seq) == 1, 'expected one %s, got %r' % (what, seq)
    return seq[0]


def check_jwe(jwe, url, exc, adv_keys, kid_alg='S256'):
    hdr = jwe_header(jwe)
    assert hdr.get('alg') == 'ECDH-ES' and hdr.get('enc') == 'A256GCM', hdr
    assert hdr['clevis']['pin'] == 'tang', hdr
    assert hdr['clevis']['tang']['url'] == url, hdr
    want_kid = exc.thp(kid_alg)
    assert hdr['kid'] == want_kid, (
        'JWE kid %r is not the %s thumbprint %r of exchange key %s'
        % (hdr['kid'], kid_alg, want_kid, exc.file))
    got = sorted(canon(k) for k in hdr['clevis']['tang']['adv']['keys'])
    assert got == sorted(canon(k) for k in adv_keys), (
        'clevis.tang.adv is not the key set tetherd advertises')


def round_trip(cfg, secret):
    jwe = clevis_encrypt_tang(cfg, secret)
    assert jwe.count(b'.') == 4, jwe[:200]
    out = clevis_decrypt(jwe)
    assert out == secret, 'clevis decrypt returned other bytes: %r' % out[:80]
    return jwe


def s1_encrypt(h, cfg, secret):
    """clevis-encrypt-tang as an old clevis ran it: kid = S1 thumbprint."""
    src = shutil.which('clevis-encrypt-tang') or \
        '/usr/bin/clevis-encrypt-tang'
    with open(src) as f:
        script = f.read()
    marker = 'CLEVIS_DEFAULT_THP_ALG=S256'
    assert marker in script, 'clevis-encrypt-tang changed; update the test'
    path = h.write('clevis-encrypt-tang-s1', script.replace(
        marker, 'CLEVIS_DEFAULT_THP_ALG=S1'))
    return peers.run(['bash', path, json.dumps(cfg)], input=secret).stdout


def test():
    peers.require('tetherd', 'tether-keys', 'jose', 'clevis', 'curl')
    with peers.Harness() as h:
        kd = h.mkdir('keys')
        tlib.tether_gen(kd)
        teth = h.tetherd(kd)
        url = teth.url
        secret = os.urandom(40) + b'\n\x00 tether interop secret \xff\n'

        keys = load_keys(kd)
        exc = only(keys_where(keys, exchange=True), 'exchange key')
        sig = only(keys_where(keys, signing=True), 'signing key')
        thp = only(peers.show_lines(tlib.tether_keys('show', kd).stdout),
                   'thumbprint from tether-keys show')
        assert thp == sig.thp('S256'), (thp, sig.thp())

        r = get(teth.port, '/adv')
        assert r.status == 200, r
        adv_keys = adv_payload(r.body)['keys']

        log('-- clevis encrypt with thp from tether-keys show')
        jwe1 = round_trip({'url': url, 'thp': thp}, secret)
        check_jwe(jwe1, url, exc, adv_keys)

        log('-- clevis encrypt with adv from a file')
        adv_file = h.write('adv.jws', r.body)
        jwe2 = round_trip({'url': url, 'adv': adv_file}, secret)
        check_jwe(jwe2, url, exc, adv_keys)

        log('-- clevis encrypt with adv inline')
        jwe3 = round_trip({'url': url, 'adv': json.loads(r.body)}, secret)
        check_jwe(jwe3, url, exc, adv_keys)

        log('-- thp of the exchange key is refused by clevis')
        cp = peers.run([peers.CLEVIS, 'encrypt', 'tang',
                        json.dumps({'url': url, 'thp': exc.thp()})],
                       input=secret, check=False)
        assert cp.returncode != 0 and not cp.stdout, cp

        log('-- old-clevis JWE with an S1 kid')
        # old clevis also printed and took S1 thumbprints: GET /adv/{S1 thp}
        jwe_s1 = s1_encrypt(h, {'url': url, 'thp': sig.thp('S1')}, secret)
        check_jwe(jwe_s1, url, exc, adv_keys, kid_alg='S1')
        assert clevis_decrypt(jwe_s1) == secret

        log('-- tether-keys rotate while tetherd runs')
        tlib.tether_keys('rotate', kd)
        keys2 = load_keys(kd)
        new_exc = only(keys_where(keys2, exchange=True, hidden=False),
                       'advertised exchange key')
        new_sig = only(keys_where(keys2, signing=True, hidden=False),
                       'advertised signing key')
        assert {k.file for k in keys_where(keys2, hidden=True)} == \
            {'.' + exc.file, '.' + sig.file}, keys2
        new_thp = only(peers.show_lines(tlib.tether_keys('show', kd).stdout),
                       'thumbprint after rotation')
        assert new_thp == new_sig.thp() and new_thp != thp, (new_thp, thp)

        for name, jwe in (('thp', jwe1), ('adv file', jwe2),
                          ('adv inline', jwe3), ('S1 kid', jwe_s1)):
            out = clevis_decrypt(jwe)
            assert out == secret, 'old JWE (%s) after rotation' % name
            log('   old JWE (%s) decrypts through the hidden key' % name)

        r = get(teth.port, '/adv')
        assert r.status == 200, r
        new_adv = adv_payload(r.body)['keys']
        jwe4 = round_trip({'url': url, 'thp': new_thp}, secret)
        check_jwe(jwe4, url, new_exc, new_adv)
        assert jwe_header(jwe4)['kid'] != jwe_header(jwe1)['kid']
        log('   new JWE uses the new exchange key %s' % new_exc.file)

        if tlib.have_ipv6_loopback():
            log('-- over [::1]')
            teth6 = h.tetherd(kd, host='::1')
            jwe6 = round_trip({'url': teth6.url, 'thp': new_thp}, secret)
            check_jwe(jwe6, teth6.url, new_exc, new_adv)
        else:
            log('-- no IPv6 loopback: [::1] part skipped')

        log('-- with tetherd stopped, decrypt must fail')
        teth.stop()
        cp = clevis_decrypt(jwe4, check=False)
        assert cp.returncode != 0 and cp.stdout != secret, cp


if __name__ == '__main__':
    tlib.script_main(test)
