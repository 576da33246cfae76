#!/usr/bin/env python3
"""/rec answers byte-identical to `jose jwk exc` and to tangd's answers.

This is the check tang's own test suite makes (latchset/tang tests/rec):

    good=`jose jwk exc -i '{"alg":"ECMR","key_ops":["deriveKey"]}' \
              -l CLIENT.jwk -r SERVER_EXC.jwk`
    test=`curl -sf -X POST -H "Content-Type: application/jwk+json" \
              --data-binary @- .../rec/$kid < CLIENT.pub.jwk`
    [ "$good" == "$test" ]

Here the same comparison runs against tetherd, and against tangd serving the
same key directory, for advertised and rotated (hidden) exchange keys, for
kids by S1/S256/S512, and for results whose coordinates have leading zero
bytes (the answer must keep fixed-width 66-byte coordinates, as jose does).
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import peers  # noqa: E402
import tlib  # noqa: E402
from peers import jose, keys_where, load_keys  # noqa: E402
from tlib import G, N, add, ecmr_jwk, jwk_point, log, mul, post_json, random_scalar, unb64u  # noqa: E402

TEMPLATE = '{"alg":"ECMR","key_ops":["deriveKey"]}'


class Checker:
    def __init__(self, h, tang, teth):
        self.h = h
        self.tang = tang
        self.teth = teth
        self.failures = []
        self.n = 0

    def check(self, what, kid, body, expected):
        """POST body to /rec/kid of both servers; both answers must be
        byte-identical to expected (jose's output)."""
        self.n += 1
        a = post_json(self.tang.port, '/rec/' + kid, body)
        b = post_json(self.teth.port, '/rec/' + kid, body)
        problems = []
        if a.status != 200 or a.body != expected:
            problems.append('tangd differs from jose (reference broken?): '
                            '%s %r' % (a.status, a.body))
        if b.status != 200:
            problems.append('tetherd status %s' % b.status)
        elif b.body != expected:
            problems.append('tetherd body differs from jose jwk exc')
        if b.body != a.body:
            problems.append('tetherd body differs from tangd body')
        if b.headers.get('content-type') != a.headers.get('content-type'):
            problems.append('content-type: tangd %r, tetherd %r'
                            % (a.headers.get('content-type'),
                               b.headers.get('content-type')))
        log('%-58s %s' % (what, 'ok' if not problems else 'FAIL'))
        if problems:
            self.failures.append(
                '%s\n  request:  POST /rec/%s\n  body:     %r\n'
                '  jose:     %r\n  tangd:    %s %r\n  tetherd:  %s %r\n  %s'
                % (what, kid, body, expected, a.status, a.body, b.status,
                   b.body, '\n  '.join(problems)))


def jose_exc(left, right, template=TEMPLATE):
    return jose('jwk', 'exc', '-i', template, '-l', left, '-r', right)


def point_with_short_result(s, want):
    """A client point X such that Y = sX has a coordinate below 2^512 (two
    leading zero bytes in its 66-byte encoding).  Walks Y = rG, (r+1)G, ...
    (one point addition per step), then X = (r / s) G."""
    r = random_scalar()
    Y = mul(r)
    idx = 0 if want == 'x' else 1
    for _ in range(100000):
        if Y[idx] < 2 ** 512:
            break
        Y = add(Y, G)
        r += 1
    else:
        raise AssertionError('no short coordinate found')
    X = mul(r * pow(s, -1, N) % N)
    return X, Y


def test():
    peers.require('tetherd', 'tether-keys', 'tangd', 'systemd-socket-activate',
                  'jose')
    with peers.Harness() as h:
        kd = h.mkdir('keys')
        tlib.tether_gen(kd)
        tlib.tether_keys('rotate', kd)
        keys = load_keys(kd)
        excs = keys_where(keys, exchange=True)
        assert len(excs) == 2 and len(keys_where(excs, hidden=True)) == 1, keys
        tang = h.tangd(kd)
        teth = h.tetherd(kd)
        c = Checker(h, tang, teth)

        for exc in excs:
            state = 'hidden' if exc.hidden else 'advertised'
            for i in range(3):
                client = h.path('client-%s-%d.jwk' % (state, i))
                client_pub = h.path('client-%s-%d.pub.jwk' % (state, i))
                jose('jwk', 'gen', '-i', '{"alg":"ECMR"}', '-o', client)
                jose('jwk', 'pub', '-i', client, '-o', client_pub)
                with open(client_pub, 'rb') as f:
                    body = f.read()

                # tang's invocation, and the server's view of the same
                # exchange: both must give the same bytes.
                good = jose_exc(client, exc.path)
                good2 = jose_exc(exc.path, client_pub)
                assert good == good2, ('jose disagrees with itself', good,
                                       good2)

                c.check('%s key, client %d, kid S256' % (state, i),
                        exc.thp('S256'), body, good)
                if i == 0:
                    for alg in ('S1', 'S512'):
                        c.check('%s key, client %d, kid %s' % (state, i, alg),
                                exc.thp(alg), body, good)
                    # clevis sends compact JSON plus a newline
                    c.check('%s key, clevis-style body' % state,
                            exc.thp(), body + b'\n', good)
                    # alg and key_ops are optional in the request
                    bare = json.loads(body)
                    for k in ('alg', 'key_ops'):
                        bare.pop(k)
                    c.check('%s key, body without alg/key_ops' % state,
                            exc.thp(), json.dumps(bare).encode(), good)

        # Results with leading zero bytes in a coordinate: both jose and the
        # servers must print fixed-width (66-byte) coordinates.
        exc = keys_where(excs, hidden=False)[0]
        s = int.from_bytes(unb64u(exc.jwk['d']), 'big')
        for want in ('x', 'y'):
            X, Y = point_with_short_result(s, want)
            xfile = h.write('short-%s.pub.jwk' % want,
                            json.dumps(ecmr_jwk(*X)))
            good = jose_exc(exc.path, xfile)
            got = json.loads(good)
            assert jwk_point(got) == Y, 'jose computed another point?'
            assert len(unb64u(got[want])) == 66, got
            c.check('result with %s < 2^512 (fixed-width coordinate)' % want,
                     exc.thp(), open(xfile, 'rb').read(), good)

        log('%d /rec comparisons' % c.n)
        if c.failures:
            for f in c.failures:
                log('\nFAIL ' + f)
            raise AssertionError('%d /rec answer(s) not byte-identical'
                                 % len(c.failures))


if __name__ == '__main__':
    tlib.script_main(test)
