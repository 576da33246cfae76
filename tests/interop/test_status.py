#!/usr/bin/env python3
"""Differential status codes: the same requests to Debian's tangd and to
tetherd, serving the same key directory, must get the same status code.

One fresh connection per request for both servers (tangd serves exactly one
request per connection in inetd mode).  A 200 must also carry the same
Content-Type, and a 200 from /rec the same body (the answer is deterministic).

Where tang answers something that nbde-facts.md or the JOSE RFCs call wrong,
tetherd's documented answer is asserted instead; the case says why, and tang's
own answer is printed next to it.
"""

import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import peers  # noqa: E402
import tlib  # noqa: E402
from peers import jose, keys_where, load_keys  # noqa: E402
from tlib import (P, b64u, ecmr_jwk, int_to_b64u, jwk_point, log, mul,  # noqa: E402
                  random_scalar, request)


def pub_of(template):
    return json.loads(jose('jwk', 'pub', '-i-',
                           input=jose('jwk', 'gen', '-i', template)))


class Listing:
    """A directory listing in the place of an answer in report()."""

    def __init__(self, body):
        self.status, self.body = None, body


def with_(jwk, **changes):
    j = dict(jwk)
    for k, v in changes.items():
        if v is None:
            j.pop(k, None)
        else:
            j[k] = v
    return json.dumps(j)


def build_cases(keys):
    sig = keys_where(keys, signing=True, hidden=False)[0]
    exc = keys_where(keys, exchange=True, hidden=False)[0]
    hsig = keys_where(keys, signing=True, hidden=True)[0]
    hexc = keys_where(keys, exchange=True, hidden=True)[0]
    kid = exc.thp()
    rec = '/rec/' + kid

    # A client key exactly as clevis makes one (jose jwk gen / jwk pub).
    client = pub_of('{"alg":"ECMR"}')
    valid = json.dumps(client)
    clevis_body = json.dumps(client, separators=(',', ':')) + '\n'
    pt = jwk_point(client)

    # Shorter-than-66-byte x: a point whose x has a leading zero byte,
    # sent without it (RFC 7518 wants full length; jose accepts it).
    while True:
        short_pt = mul(random_scalar())
        if short_pt[0] < 2 ** 520:
            break
    short_jwk = ecmr_jwk(*short_pt)
    short_x = with_(short_jwk, x=b64u(short_pt[0].to_bytes(66, 'big')[1:]))

    p256 = pub_of('{"alg":"ECMR","crv":"P-256"}')
    rsa = pub_of('{"alg":"RS256"}')
    off_curve = ecmr_jwk(pt[0], (pt[1] + 1) % P)

    # (name, method, path, body, expected-for-tetherd-if-tang-is-wrong, why)
    C = []

    def case(name, method, path, body=None, tetherd=None, why=None):
        C.append((name, method, path, body, tetherd, why))

    # --- routing
    case('GET /adv', 'GET', '/adv')
    case('GET /adv/', 'GET', '/adv/')
    case('GET //adv//', 'GET', '//adv//')
    case('GET /adv?x=1', 'GET', '/adv?x=1')
    case('GET /', 'GET', '/')
    case('GET /nope', 'GET', '/nope')
    case('GET /rec', 'GET', '/rec')
    case('GET /rec/', 'GET', '/rec/')
    case('GET /adv/unknown', 'GET', '/adv/unknown')
    for alg in ('S1', 'S224', 'S256', 'S384', 'S512'):
        case('GET /adv/{signing thp %s}' % alg, 'GET', '/adv/' + sig.thp(alg))
    for alg in ('S1', 'S256', 'S512'):
        case('GET /adv/{hidden signing thp %s}' % alg, 'GET',
             '/adv/' + hsig.thp(alg))
    case('GET /adv/{exchange thp}', 'GET', '/adv/' + exc.thp())
    case('GET /adv/{hidden exchange thp}', 'GET', '/adv/' + hexc.thp())
    case('POST /adv', 'POST', '/adv', valid)
    case('PUT /adv', 'PUT', '/adv', '')
    case('HEAD /adv', 'HEAD', '/adv')
    case('GET /rec/KID', 'GET', rec)
    case('DELETE /rec/KID', 'DELETE', rec)

    # --- /rec key lookup, valid body
    for alg in ('S1', 'S224', 'S256', 'S384', 'S512'):
        case('POST /rec/{exchange kid %s}' % alg, 'POST',
             '/rec/' + exc.thp(alg), valid)
    for alg in ('S1', 'S256'):
        case('POST /rec/{hidden exchange kid %s}' % alg, 'POST',
             '/rec/' + hexc.thp(alg), valid)
    case('POST /rec/unknown-kid', 'POST', '/rec/unknown-kid', valid)
    case('POST /rec/{signing kid}', 'POST', '/rec/' + sig.thp(), valid)
    case('POST /rec/{hidden signing kid}', 'POST', '/rec/' + hsig.thp(),
         valid)
    case('POST /rec/KID?a=1', 'POST', rec + '?a=1', valid)
    case('POST /rec/KID clevis body (compact + newline)', 'POST', rec,
         clevis_body)

    # --- /rec body validation
    case('invalid JSON', 'POST', rec, '{"kty": "EC", ')
    case('not JSON at all', 'POST', rec, 'hello')
    case('empty body', 'POST', rec, '')
    case('{}', 'POST', rec, '{}')
    case('JSON array', 'POST', rec, '[' + valid + ']')
    case('JSON string', 'POST', rec, '"EC"')
    case('JSON number', 'POST', rec, '42')
    case('JSON null', 'POST', rec, 'null')
    case('kty RSA (jose key, key_ops ["verify"])', 'POST', rec,
         json.dumps(rsa))
    case('kty RSA, no alg/key_ops', 'POST', rec,
         with_(rsa, alg=None, key_ops=None))
    case('kty oct', 'POST', rec, with_(client, kty='oct'))
    case('kty missing', 'POST', rec, with_(client, kty=None))
    case('alg missing', 'POST', rec, with_(client, alg=None))
    case('alg ES512', 'POST', rec, with_(client, alg='ES512'))
    case('key_ops ["sign"]', 'POST', rec, with_(client, key_ops=['sign']))
    case('key_ops missing', 'POST', rec, with_(client, key_ops=None))
    case('use "sig"', 'POST', rec, with_(client, key_ops=None, use='sig'))
    case('P-256 point', 'POST', rec, json.dumps(p256))
    case('crv P-384 with P-521 coordinates', 'POST', rec,
         with_(client, crv='P-384'))
    case('crv missing', 'POST', rec, with_(client, crv=None))
    case('off-curve P-521 point', 'POST', rec, json.dumps(off_curve))
    case('point (0,0)', 'POST', rec, with_(client, x=int_to_b64u(0), y=int_to_b64u(0)))
    case('x missing', 'POST', rec, with_(client, x=None))
    case('y missing', 'POST', rec, with_(client, y=None))
    case('x and y missing', 'POST', rec, with_(client, x=None, y=None))
    case('x not base64url', 'POST', rec, with_(client, x='!!not*base64url!!'))
    case('y standard base64 (+/)', 'POST', rec,
         with_(client, y=client['y'][:-4] + '+/+/'))
    case('x with = padding', 'POST', rec, with_(client, x=client['x'] + '=='))
    case('x truncated by one char', 'POST', rec,
         with_(client, x=client['x'][:-1]))
    case('x a number', 'POST', rec, with_(client, x=42))
    case('x 65 bytes (leading zero dropped), on curve', 'POST',
         '/rec/' + kid, short_x)
    # A client JWK that also carries its private scalar d: tang (jose)
    # imports the whole key, so a d that matches x/y is accepted and one
    # that does not match is refused as an invalid key.
    c = random_scalar()
    with_d = ecmr_jwk(*mul(c), d=int_to_b64u(c))
    case('private key (d) included, matching x/y', 'POST', rec,
         json.dumps(with_d))
    case('private key (d) included, not matching x/y', 'POST', rec,
         with_(client, d=int_to_b64u(random_scalar())))
    case('{} to unknown kid (body checked first)', 'POST', '/rec/unknown',
         '{}')
    case('garbage to signing kid', 'POST', '/rec/' + sig.thp(), 'garbage')

    # --- limits (tang: 4 KiB URL -> 414, 64 KiB body -> 413)
    case('URL of 5000 bytes', 'GET', '/adv/' + 'A' * 5000)
    case('body of 70000 bytes', 'POST', rec, ' ' * 70000)

    # --- tang is wrong here; tetherd's documented answer is asserted
    case('x = x + p (coordinate not < p)', 'POST', rec,
         with_(client, x=int_to_b64u(pt[0] + P)), tetherd=400,
         why='nbde-facts.md section 1: the server must check coordinates '
             '< p; tang 11 reduces x mod p and answers 200')
    case('x 67 bytes (extra leading zero byte)', 'POST', rec,
         with_(client, x=b64u(b'\0' + pt[0].to_bytes(66, 'big'))),
         tetherd=400,
         why='RFC 7518 6.2.1.2: x MUST be the full coordinate size '
             '(66 bytes for P-521); tang 11 accepts 67 bytes')
    return C


def compare(cases, tang_port, teth_port):
    failures = []
    for name, method, path, body, expected, why in cases:
        a = request(tang_port, method, path, body=body)
        b = request(teth_port, method, path, body=body)
        line = '%-48s tang %-4s tetherd %-4s' % (name[:48], a.status, b.status)
        bad = []
        if expected is None:
            if a.status is None:
                bad.append('tang gave no answer (%s)' % a.error)
            if a.status != b.status:
                bad.append('status differs')
            elif a.status == 200:
                if a.headers.get('content-type') != b.headers.get('content-type'):
                    bad.append('content-type %r vs %r' % (
                        a.headers.get('content-type'),
                        b.headers.get('content-type')))
                if path.startswith('/rec/') and a.body != b.body:
                    bad.append('/rec body differs:\n  tang    %r\n  tetherd %r'
                               % (a.body, b.body))
        else:
            line += ' (tang defect: expect %d: %s)' % (expected, why)
            if b.status != expected:
                bad.append('tetherd should answer %d' % expected)
        if bad:
            line += '  <-- FAIL: ' + '; '.join(bad)
            failures.append((name, method, path, body, a, b, bad))
        log(line)
    return failures


def report(failures):
    for name, method, path, body, a, b, bad in failures:
        log('\nFAIL %s\n  request: %s %s\n  body:    %r\n  tang:    %s %r'
            '\n  tetherd: %s %r\n  %s'
            % (name, method, path if len(path) < 200 else path[:200] + '...',
               body if body is None or len(body) < 400 else body[:400] + '...',
               a.status, a.body[:300], b.status, b.body[:300],
               '; '.join(bad)))


def test():
    peers.require('tetherd', 'tether-keys', 'tangd', 'systemd-socket-activate',
                  'jose')
    with peers.Harness() as h:
        kd = h.mkdir('keys')
        tlib.tether_gen(kd)
        tlib.tether_keys('rotate', kd)       # hidden keys for /adv, /rec
        keys = load_keys(kd)
        tang = h.tangd(kd)
        teth = h.tetherd(kd)
        failures = compare(build_cases(keys), tang.port, teth.port)

        # No signing key in the directory: both must refuse with 500, on
        # /adv and on /rec.  tang only generates keys when nothing at all is
        # advertised, so a lone advertised exchange key stays alone.
        log('\n-- directory with an exchange key only')
        kd2 = h.mkdir('exc-only')
        exc = keys_where(keys, exchange=True, hidden=False)[0]
        shutil.copy(exc.path, kd2)
        kd3 = h.path('exc-only-copy')
        shutil.copytree(kd2, kd3)
        tang2 = h.tangd(kd2)
        teth2 = h.tetherd(kd3)
        valid = json.dumps(ecmr_jwk(*mul(random_scalar())))
        failures += compare([
            ('no signing key: GET /adv', 'GET', '/adv', None, None, None),
            ('no signing key: POST /rec/KID', 'POST', '/rec/' + exc.thp(),
             valid, None, None),
        ], tang2.port, teth2.port)
        if sorted(os.listdir(kd2)) != sorted(os.listdir(kd3)):
            failures.append(('directories diverged', '', '', None,
                             Listing(str(os.listdir(kd2)).encode()),
                             Listing(str(os.listdir(kd3)).encode()),
                             ['one server wrote keys the other did not']))

        if failures:
            report(failures)
            raise AssertionError('%d request(s) answered differently'
                                 % len(failures))


if __name__ == '__main__':
    tlib.script_main(test)
