#!/usr/bin/env python3
"""tetherd's advertisements verified with Debian's jose, and compared with
tangd's advertisements for the same key directory.

For GET /adv, /adv/, /adv/{thp of an advertised signing key} and
/adv/{thp of a rotated (hidden) signing key}:
  * `jose jws ver -i ADV -k KEY` for every signing key of the directory:
    advertised keys must verify; a hidden key only when it was named in the
    URL.  The verdicts must be the same as for tangd's advertisement.
  * `jose jws ver -a` with all expected signers, and the clevis check (the
    payload's verify keys, `-a`).
  * the payload's keys equal `jose jwk pub` of every advertised key (and
    tangd's payload); hidden keys never appear.
  * JWS form (flattened with one signature, general with several), protected
    header and Content-Type as tangd's.
Done for a directory with one advertised signing key and, after adding a
second signing key while both servers run, with two.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import peers  # noqa: E402
import tlib  # noqa: E402
from peers import jose, jws_verifies, keys_where, load_keys  # noqa: E402
from tlib import adv_payload, canon, get, log, unb64u  # noqa: E402


def summarize(h, server, path, keys, tag):
    """Everything the checks look at, for one server's answer."""
    r = get(server.port, path)
    s = {'status': r.status, 'content-type': r.headers.get('content-type')}
    if r.status != 200:
        return s, None
    f = h.write('%s-%s.jws' % (tag, server.kind), r.body)
    obj = json.loads(r.body)
    sigs = obj.get('signatures') or [obj]
    s['form'] = 'general' if 'signatures' in obj else 'flattened'
    s['top-level members'] = sorted(obj)
    s['protected'] = sorted(canon(json.loads(unb64u(x['protected'])))
                            for x in sigs)
    s['payload'] = sorted(canon(k) for k in adv_payload(r.body)['keys'])
    sigkeys = keys_where(keys, signing=True)
    # jose jws ver -k KEY on the whole JWS, for every signing key
    s['verified by'] = {k.file: jws_verifies(f, k.path) for k in sigkeys}
    # which key made each signature (each one verified on its own)
    signers = []
    for i, x in enumerate(sigs):
        one = h.write('%s-%s-sig%d.jws' % (tag, server.kind, i), json.dumps(
            {'payload': obj['payload'], 'protected': x['protected'],
             'signature': x['signature']}))
        signers.append(','.join(k.file for k in sigkeys
                                if jws_verifies(one, k.path)) or '?')
    s['signers'] = sorted(signers)
    return s, f


def check_adv(h, tang, teth, path, keys, expect_hidden_signer, tag):
    failures = []
    ts, _ = summarize(h, tang, path, keys, tag)
    ws, wfile = summarize(h, teth, path, keys, tag)

    def fail(msg):
        failures.append('GET %s: %s\n  tangd:   %s\n  tetherd: %s'
                        % (path, msg, json.dumps(ts, indent=1),
                           json.dumps(ws, indent=1)))

    if ws['status'] != 200 or ts['status'] != 200:
        fail('status')
        return failures
    for field in ('content-type', 'payload', 'verified by'):
        if ts[field] != ws[field]:
            fail('%s differs from tangd' % field)
    if sorted(set(ts['signers'])) != sorted(set(ws['signers'])):
        fail('the set of signing keys differs from tangd')
    if len(set(ws['signers'])) != len(ws['signers']):
        fail('tetherd signed twice with the same key')
    if len(set(ts['signers'])) == len(ts['signers']):
        for field in ('form', 'top-level members', 'protected'):
            if ts[field] != ws[field]:
                fail('%s differs from tangd' % field)
    else:
        # tang 11 signs /adv/{thp of an ADVERTISED key} twice with that key
        # (once as advertised key, once as the requested one), so its JWS
        # has a duplicate signature and general form.  tetherd signs once.
        # Both verify with jose and clevis; the signer sets are compared
        # above, and tetherd's form must follow its distinct signers.
        log('NOTE GET %s: tangd signed twice with the same key %s; '
            'tetherd signed by %s (%s form)'
            % (path[:30] + '...', ts['signers'], ws['signers'],
               ws['form']))

    # Independent of tangd: what the directory says.
    advertised = keys_where(keys, hidden=False)
    pubs = sorted(canon(k.pub()) for k in advertised)
    if ws['payload'] != pubs:
        fail('payload keys != jose jwk pub of the advertised keys')
    signers = keys_where(keys, signing=True, hidden=False)
    if expect_hidden_signer is not None:
        signers = signers + [expect_hidden_signer]
    want = {k.file: (k in signers) for k in keys_where(keys, signing=True)}
    if ws['verified by'] != want:
        fail('verifying keys: want %s' % want)
    if ws['signers'] != sorted(k.file for k in signers):
        fail('signers: want %s' % sorted(k.file for k in signers))
    if ws['form'] != ('general' if len(signers) > 1 else 'flattened'):
        fail('JWS form')

    # jose jws ver -a: every one of the expected signers, as one JWKSet.
    jwks = h.write('%s-signers.jwks' % tag, json.dumps(
        {'keys': [k.pub() for k in signers]}))
    if not jws_verifies(wfile, jwks, all_keys=True):
        fail('jose jws ver -a with all expected signers fails')
    # ... and -a must fail when an extra, non-signing hidden key is added.
    others = [k for k in keys_where(keys, signing=True, hidden=True)
              if k not in signers]
    if others:
        jwks2 = h.write('%s-too-many.jwks' % tag, json.dumps(
            {'keys': [k.pub() for k in signers + others]}))
        if jws_verifies(wfile, jwks2, all_keys=True):
            fail('jose jws ver -a passes with a key that did not sign')

    # The check clevis-encrypt-tang makes: every verify key of the payload
    # must have signed (jose jwk use -r -u verify | jose jws ver -a).
    ver = jose('jwk', 'use', '-i-', '-r', '-u', 'verify', '-o-',
               input=json.dumps(adv_payload(open(wfile, 'rb').read())))
    if peers.run([peers.JOSE, 'jws', 'ver', '-i', wfile, '-k-', '-a'],
                 input=ver, check=False).returncode != 0:
        fail('clevis-style verification (payload verify keys, -a) fails')

    log('%-62s %s' % ('GET ' + path[:56], 'FAIL' if failures else 'ok'))
    return failures


def run_checks(h, tang, teth, keys, tag):
    failures = []
    sig = keys_where(keys, signing=True, hidden=False)[0]
    hidden_sigs = keys_where(keys, signing=True, hidden=True)
    failures += check_adv(h, tang, teth, '/adv', keys, None, tag + '-adv')
    failures += check_adv(h, tang, teth, '/adv/', keys, None, tag + '-adv-')
    failures += check_adv(h, tang, teth, '/adv/' + sig.thp('S512'), keys,
                          None, tag + '-adv-sig')
    for hs in hidden_sigs:
        for alg in ('S256', 'S1'):
            failures += check_adv(h, tang, teth, '/adv/' + hs.thp(alg), keys,
                                  hs, '%s-adv-hidden-%s' % (tag, alg))
    return failures


def test():
    peers.require('tetherd', 'tether-keys', 'tangd', 'systemd-socket-activate',
                  'jose')
    with peers.Harness() as h:
        kd = h.mkdir('keys')
        tlib.tether_gen(kd)
        tlib.tether_keys('rotate', kd)
        tang = h.tangd(kd)
        teth = h.tetherd(kd)

        log('-- one advertised signing key, one rotated')
        keys = load_keys(kd)
        failures = run_checks(h, tang, teth, keys, 'one')

        # A second advertised signing key, added while both servers run
        # (tang re-reads the directory on every request).
        log('-- a second advertised signing key, added at run time')
        extra = h.path('extra.jwk')
        jose('jwk', 'gen', '-i', '{"alg":"ES512"}', '-o', extra)
        thp = jose('jwk', 'thp', '-i', extra).decode().strip()
        os.rename(extra, os.path.join(kd, thp + '.jwk'))
        keys = load_keys(kd)
        assert len(keys_where(keys, signing=True, hidden=False)) == 2
        failures += run_checks(h, tang, teth, keys, 'two')

        if failures:
            for f in failures:
                log('\nFAIL ' + f)
            raise AssertionError('%d advertisement check(s) failed'
                                 % len(failures))


if __name__ == '__main__':
    tlib.script_main(test)
