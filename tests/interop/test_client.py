#!/usr/bin/env python3
"""The tether client (`tether encrypt` / `tether decrypt`) against Debian's
clevis 19, jose 11 and tang 11, and against tetherd.

Every section runs against BOTH servers: Debian's tangd (socket-activated,
one process per connection, as deployed) and tetherd, each with its own key
directories.  Results are compared with what the real peers do: a JWE made by
one side must decrypt on the other, and where tether must fail, clevis is run
on the same input and must fail too.

  1. round trips, pins tang, sss (3 servers, t=2) and null, plaintexts binary
     (random bytes with NULs), empty and 1 MiB: clevis -> tether,
     tether -> clevis, tether -> tether; the JWE tether writes names the
     server's exchange key (S256 kid) and carries the server's advertisement.
  2. tang configurations: thp from `tether-keys show`, adv as a file, adv
     inline, -y; a wrong thp (unknown key, the exchange key, another
     server's key with an adv) fails with exit 1; no thp/adv/-y and no
     terminal (own session, stdin a pipe) fails with exit 1 naming thp and -y.
  3. sss over 3 servers, t=2, one server stopped: clevis-made JWE decrypted
     by tether and tether-made by clevis; nested sss both ways (two servers
     stopped); t=3 with one stopped fails with exit 1 naming the dead server.
  4. old bindings: a JWE whose kid is the S1 (SHA-1) thumbprint, made by
     clevis-encrypt-tang with its default hash switched to S1, decrypts.
  5. validation: a corrupted ciphertext byte, a corrupted tag, a header that
     is not JSON, truncated JWEs; a malicious /rec server (a small Python
     http.server: off-curve point, point on another curve, not JSON, a
     wrong but valid point, an oversized answer) gives a clean error; a key
     deleted on the server gives an error naming HTTP 404.
  6. external pins: a toy pin (clevis-encrypt-toy / clevis-decrypt-toy shell
     scripts on PATH and TETHER_PIN_PATH, using jose: the content key is wrapped (A256KW) with an
     oct key from the configuration, stored in the header) and a "dir"
     variant of it; alone and inside sss, both directions; -y is passed on;
     an unknown pin fails with "unsupported pin".
  7. error messages: connection refused (URL, "connection refused", the
     number of attempts), TETHER_TIMEOUT=0.5 against a server that accepts
     and never answers (fails in about the timeout, says so) and against one
     that drops SYNs ("no connection within 0.5 s", retried as documented,
     bounded); a malformed TETHER_TIMEOUT and bad usage exit 2; round trips
     over [::1] with both servers.

    test_client.py [SECTION ...]     (default: all; e.g. `test_client.py 3 5`)

Needs TETHER, TETHERD and TETHER_KEYS in the environment (meson sets them).
Loopback only.  Exit 0 pass, 1 fail, 77 when a peer program is missing.
"""

import http.server
import json
import os
import re
import shutil
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import peers  # noqa: E402
import tlib  # noqa: E402
from peers import keys_where, load_keys  # noqa: E402
from tlib import adv_payload, b64u, canon, get, jwe_header, log  # noqa: E402
from test_clevis import s1_encrypt  # noqa: E402

TETHER = os.environ.get('TETHER', '')
KINDS = ('tangd', 'tetherd')

FAILURES = []


# --------------------------------------------------------------------------
# running the programs

def env_with(extra=None, path_prepend=None):
    env = peers.clean_env()
    env.pop('TETHER_TIMEOUT', None)
    if path_prepend:
        # clevis looks in PATH; tether only where TETHER_PIN_PATH says.
        env['PATH'] = path_prepend + os.pathsep + env.get('PATH', '')
        env['TETHER_PIN_PATH'] = path_prepend
    env.update(extra or {})
    return env


def tether(args, input=b'', env=None, timeout=60):
    """Run tether in its own session (no controlling terminal) with stdin a
    pipe; never raises on a non-zero exit."""
    return peers.run([TETHER] + list(args), input=input, env=env or env_with(),
                     timeout=timeout, check=False)


def clevis(args, input=b'', env=None, timeout=120):
    return peers.run([peers.CLEVIS] + list(args), input=input,
                     env=env or env_with(), timeout=timeout, check=False)


def show(cp):
    return ('exit %s; stdout %d bytes; stderr: %s'
            % (cp.returncode, len(cp.stdout),
               cp.stderr.decode(errors='replace').strip()[:1500]))


def ok(cp, what):
    assert cp.returncode == 0, '%s failed: %s' % (what, show(cp))
    return cp.stdout


def failed(cp, what, rc=1, words=()):
    """cp must have failed with exit rc, written nothing on stdout and a
    message on stderr containing every one of words (case-insensitive)."""
    err = cp.stderr.decode(errors='replace')
    assert cp.returncode == rc, ('%s: expected exit %d, got %s'
                                 % (what, rc, show(cp)))
    assert cp.stdout == b'', ('%s: failed but wrote %d bytes on stdout'
                              % (what, len(cp.stdout)))
    assert err.strip(), '%s: failed without a message' % what
    for w in words:
        assert w.lower() in err.lower(), (
            '%s: message does not mention %r: %s' % (what, w, err.strip()))
    return err


def peer_fails(cp, what):
    """The real peer must refuse the same input (a sanity check of the
    input: it is really broken, not just something tether dislikes)."""
    assert cp.returncode != 0, ('%s: clevis accepted it (so tether should '
                                'too): %s' % (what, show(cp)))


def t_enc(pin, cfg, pt, yes=False, env=None, what=None):
    args = ['encrypt', pin, cfg if isinstance(cfg, str) else json.dumps(cfg)]
    if yes:
        args.append('-y')
    jwe = ok(tether(args, pt, env=env), what or 'tether encrypt %s' % pin)
    assert jwe.count(b'.') == 4 and b'\n' not in jwe, jwe[:200]
    return jwe


def t_dec(jwe, env=None, what='tether decrypt'):
    return ok(tether(['decrypt'], jwe, env=env), what)


def c_enc(pin, cfg, pt, yes=False, env=None, what=None):
    args = ['encrypt', pin, cfg if isinstance(cfg, str) else json.dumps(cfg)]
    if yes:
        args.append('-y')
    return ok(clevis(args, pt, env=env), what or 'clevis encrypt %s' % pin)


def c_dec(jwe, env=None, what='clevis decrypt'):
    return ok(clevis(['decrypt'], jwe, env=env), what)


def same(got, want, what):
    assert got == want, ('%s: plaintext differs (got %d bytes, want %d; '
                         'first bytes %r vs %r)'
                         % (what, len(got), len(want), got[:24], want[:24]))


def section(name):
    log('\n== %s' % name)


def check(what, fn, *args):
    """Run one check; record a failure and go on, so that one run reports
    every defect.  The test fails at the end if any check failed."""
    t0 = time.monotonic()
    try:
        fn(*args)
    except (AssertionError, tlib.CmdError) as e:
        FAILURES.append((what, str(e)))
        log('   FAIL %s (%.1fs)\n        %s'
            % (what, time.monotonic() - t0, str(e).replace('\n', '\n        ')))
        return False
    log('   ok   %s (%.1fs)' % (what, time.monotonic() - t0))
    return True


# --------------------------------------------------------------------------
# JWE surgery

def parts(jwe):
    p = jwe.strip().split(b'.')
    assert len(p) == 5, 'not a compact JWE: %r' % jwe[:80]
    return p


def join(p):
    return b'.'.join(p)


def flip_char(seg, i):
    """Replace base64url character i of seg by another one, so that the
    decoded bytes differ (i must not be the last character)."""
    alphabet = b'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_'
    c = seg[i]
    new = alphabet[(alphabet.index(c) + 17) % 64]
    return seg[:i] + bytes([new]) + seg[i + 1:]


# --------------------------------------------------------------------------
# stand-in servers: a malicious /rec server, and one that never answers

class EvilHandler(http.server.BaseHTTPRequestHandler):
    """POST /rec/KID: asks the real server (server.upstream), then answers
    according to server.mode.  Not a peer: a malicious or broken server."""

    def log_message(self, fmt, *args):
        pass

    def do_POST(self):
        n = int(self.headers.get('Content-Length') or 0)
        body = self.rfile.read(n)
        self.server.requests += 1
        mode = self.server.mode
        ctype = 'application/jwk+json'
        if mode == 'status404':
            return self.answer(404, b'', ctype)
        r = tlib.post_json(self.server.upstream, self.path, body)
        if r.status != 200:
            return self.answer(502, b'upstream: %r' % r, 'text/plain')
        jwk = json.loads(r.body)
        if mode == 'proxy':
            out = r.body
        elif mode == 'offcurve':
            x, y = tlib.jwk_point(jwk)
            bad = (x, (y + 1) % tlib.P)
            assert not tlib.on_curve(*bad)
            out = json.dumps(tlib.ecmr_jwk(*bad)).encode()
        elif mode == 'othercurve':
            # The P-256 generator: a valid point, on the wrong curve.
            out = json.dumps({
                'alg': 'ECMR', 'crv': 'P-256', 'key_ops': ['deriveKey'],
                'kty': 'EC', 'x': b64u(bytes.fromhex(P256_GX)),
                'y': b64u(bytes.fromhex(P256_GY))}).encode()
        elif mode == 'p256coords':
            # "P-521" with the P-256 generator's 32-byte coordinates.
            out = json.dumps({
                'alg': 'ECMR', 'crv': 'P-521', 'key_ops': ['deriveKey'],
                'kty': 'EC', 'x': b64u(bytes.fromhex(P256_GX)),
                'y': b64u(bytes.fromhex(P256_GY))}).encode()
        elif mode == 'wrongpoint':
            # A valid P-521 point, but not s*X: decryption must fail cleanly.
            out = json.dumps(tlib.ecmr_jwk(*tlib.G)).encode()
        elif mode == 'notjson':
            out = b'<html>this is not a JWK</html>'
        elif mode == 'huge':
            out = b'{"pad":"' + b'A' * (2 << 20) + b'"}'
        else:
            out = b''
        self.answer(200, out, ctype)

    def answer(self, status, body, ctype):
        self.send_response(status)
        self.send_header('Content-Type', ctype)
        self.send_header('Content-Length', str(len(body)))
        self.send_header('Connection', 'close')
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass


P256_GX = '6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296'
P256_GY = '4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5'


class EvilServer:
    def __init__(self, upstream_port):
        self.httpd = http.server.ThreadingHTTPServer((tlib.HOST, 0),
                                                     EvilHandler)
        self.httpd.daemon_threads = True
        self.httpd.upstream = upstream_port
        self.httpd.mode = 'proxy'
        self.httpd.requests = 0
        self.port = self.httpd.server_address[1]
        self.url = 'http://%s:%d' % (tlib.HOST, self.port)
        self.thread = threading.Thread(target=self.httpd.serve_forever,
                                       kwargs={'poll_interval': 0.05},
                                       daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)
        return False


class Blackhole:
    """Listens and accepts, never reads, never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((tlib.HOST, 0))
        self.sock.listen(64)
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.url = 'http://%s:%d' % (tlib.HOST, self.port)
        self.conns = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.stop.is_set():
            try:
                c, _ = self.sock.accept()
                self.conns.append(c)
            except (socket.timeout, OSError):
                pass

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(5)
        for c in self.conns:
            c.close()
        self.sock.close()
        return False


class SynDrop:
    """Listens with a full accept queue: the kernel drops further SYNs, so a
    client's connect() hangs until its connect timeout."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((tlib.HOST, 0))
        self.sock.listen(0)
        self.port = self.sock.getsockname()[1]
        self.url = 'http://%s:%d' % (tlib.HOST, self.port)
        self.fill = []

    def __enter__(self):
        for _ in range(8):
            c = socket.socket()
            c.settimeout(0.3)
            try:
                c.connect((tlib.HOST, self.port))
                self.fill.append(c)
            except OSError:
                c.close()
                return self
        raise AssertionError('the accept queue of the SYN-dropping socket '
                             'never filled up')

    def __exit__(self, *exc):
        for c in self.fill:
            c.close()
        self.sock.close()
        return False


# --------------------------------------------------------------------------
# fixtures

class Site:
    """One kind of server (tangd or tetherd): three servers on fixed ports
    (so a stopped one can be restarted on the same URL), their key
    directories and the facts a JWE must reflect."""

    def __init__(self, h, kind):
        self.h = h
        self.kind = kind
        self.servers = []
        self.dirs = []
        for i in range(3):
            kd = h.mkdir('%s-keys-%d' % (kind, i))
            if kind == 'tangd':
                peers.tang_keygen(kd)
                srv = h.tangd(kd, port=tlib.free_port())
            else:
                tlib.tether_gen(kd)
                srv = h.tetherd(kd, port=tlib.free_port())
            self.dirs.append(kd)
            self.servers.append(srv)
        self.thp = [peers.show_lines(tlib.tether_keys('show', kd).stdout)[0]
                    for kd in self.dirs]
        self.keys = [load_keys(kd) for kd in self.dirs]
        self.adv = []
        for i, srv in enumerate(self.servers):
            r = get(srv.port, '/adv')
            assert r.status == 200, '%s %d: GET /adv: %r' % (kind, i, r)
            self.adv.append(r.body)
            sig = keys_where(self.keys[i], signing=True, hidden=False)
            assert [k.thp() for k in sig] == [self.thp[i]], (
                'tether-keys show %s: %s, jose: %s'
                % (self.dirs[i], self.thp[i], [k.thp() for k in sig]))

    def url(self, i=0):
        return self.servers[i].url

    def cfg(self, i=0, **extra):
        c = {'url': self.url(i), 'thp': self.thp[i]}
        c.update(extra)
        return c

    def sss_cfg(self, t=2, idx=(0, 1, 2)):
        return {'t': t, 'pins': {'tang': [self.cfg(i) for i in idx]}}

    def exc(self, i=0):
        e = keys_where(self.keys[i], exchange=True, hidden=False)
        assert len(e) == 1, e
        return e[0]

    def stop(self, i):
        self.servers[i].stop()

    def start(self, i):
        if self.servers[i].proc is None:
            self.servers[i].start()

    def start_all(self):
        for i in range(3):
            self.start(i)


def check_tang_jwe(site, i, jwe):
    """The JWE tether wrote for server i names its exchange key and carries
    the key set the server advertises (as clevis-encrypt-tang writes it)."""
    hdr = jwe_header(jwe)
    assert hdr.get('alg') == 'ECDH-ES' and hdr.get('enc') == 'A256GCM', hdr
    assert hdr['clevis']['pin'] == 'tang', hdr['clevis']
    assert hdr['clevis']['tang']['url'] == site.url(i), hdr['clevis']
    assert hdr['kid'] == site.exc(i).thp('S256'), (
        'kid %s is not the S256 thumbprint of %s'
        % (hdr['kid'], site.exc(i).file))
    got = sorted(canon(k) for k in hdr['clevis']['tang']['adv']['keys'])
    want = sorted(canon(k) for k in adv_payload(site.adv[i])['keys'])
    assert got == want, 'clevis.tang.adv is not what %s advertises' % site.kind
    assert jwe.split(b'.')[1] == b'', 'tang JWE with an encrypted key'


def plaintexts():
    binary = (os.urandom(100) + b'\x00\x00\x00 NUL inside \x00' +
              bytes(range(256)) + os.urandom(100) + b'\x00')
    return [('binary', binary), ('empty', b''),
            ('1MiB', os.urandom(1 << 20))]


# --------------------------------------------------------------------------
# 1. round trips

def section_roundtrips(sites):
    section('1. round trips clevis <-> tether, pins tang, sss, null')
    pts = plaintexts()
    for site in sites:
        k = site.kind
        pins = [('tang', site.cfg(0)), ('sss', site.sss_cfg(2)),
                ('null', {})]
        if k != sites[0].kind:
            pins = pins[:2]  # null needs no server: once is enough
        for pin, cfg in pins:
            for name, pt in pts:
                def clevis_to_tether():
                    jwe = c_enc(pin, cfg, pt)
                    same(t_dec(jwe), pt, 'tether decrypt of clevis JWE')

                def tether_to_clevis():
                    jwe = t_enc(pin, cfg, pt)
                    if pin == 'tang':
                        check_tang_jwe(site, 0, jwe)
                    elif pin == 'sss':
                        hdr = jwe_header(jwe)['clevis']
                        assert hdr['pin'] == 'sss' and hdr['sss']['t'] == 2, hdr
                        assert len(hdr['sss']['jwe']) == 3, hdr
                        for i, child in enumerate(hdr['sss']['jwe']):
                            check_tang_jwe(site, i, child.encode())
                    same(c_dec(jwe), pt, 'clevis decrypt of tether JWE')
                    same(t_dec(jwe), pt, 'tether decrypt of tether JWE')

                where = '' if pin == 'null' else ' via %s' % k
                check('%s %s%s: clevis -> tether' % (pin, name, where),
                      clevis_to_tether)
                check('%s %s%s: tether -> clevis, tether' % (pin, name, where),
                      tether_to_clevis)

    def null_fail():
        for enc in (t_enc, c_enc):
            jwe = enc('null', {'fail': True}, b'secret')
            failed(tether(['decrypt'], jwe), 'tether decrypt of a '
                   'null {"fail":true} JWE from %s' % enc.__name__)
            peer_fails(clevis(['decrypt'], jwe), 'null fail')
    check('null {"fail":true} (both encrypters): tether decrypt exit 1',
          null_fail)


# --------------------------------------------------------------------------
# 2. tang configurations

def section_tang_config(h, sites):
    section('2. tang configuration variants')
    pt = os.urandom(32) + b'\x00config'
    for site in sites:
        k = site.kind
        url = site.url(0)
        adv_file = h.write('adv-%s.jws' % k, site.adv[0])

        def round_trip(cfg, yes=False):
            jwe = t_enc('tang', cfg, pt, yes=yes)
            check_tang_jwe(site, 0, jwe)
            same(c_dec(jwe), pt, 'clevis decrypt')
            same(t_dec(jwe), pt, 'tether decrypt')

        check('%s: thp from tether-keys show' % k, round_trip, site.cfg(0))
        check('%s: adv as a file' % k, round_trip,
              {'url': url, 'adv': adv_file})
        check('%s: adv inline' % k, round_trip,
              {'url': url, 'adv': json.loads(site.adv[0])})
        check('%s: -y, no thp' % k, round_trip, {'url': url}, True)

        def sss_y():
            cfg = {'t': 1, 'pins': {'tang': [{'url': url}]}}
            jwe = t_enc('sss', cfg, pt, yes=True)
            same(c_dec(jwe), pt, 'clevis decrypt')

        check('%s: sss of a tang without thp, -y passed on' % k, sss_y)

        def wrong_thp_unknown():
            bogus = b64u(os.urandom(32))
            cfg = {'url': url, 'thp': bogus}
            err = failed(tether(['encrypt', 'tang', json.dumps(cfg)], pt),
                         'thp of no key', words=[url])
            peer_fails(clevis(['encrypt', 'tang', json.dumps(cfg)], pt),
                       'clevis with a thp of no key')
            # The server answers GET /adv/{thp} with 404; say so.
            r = get(site.servers[0].port, '/adv/' + bogus)
            assert str(r.status) in err, (
                'the server answered HTTP %s to /adv/%s, the message does '
                'not say so: %s' % (r.status, bogus, err.strip()))

        check('%s: thp of no key -> exit 1, message names the server '
              'and its answer' % k, wrong_thp_unknown)

        def wrong_thp_exchange():
            cfg = {'url': url, 'thp': site.exc(0).thp()}
            failed(tether(['encrypt', 'tang', json.dumps(cfg)], pt),
                   'thp of the exchange key')
            peer_fails(clevis(['encrypt', 'tang', json.dumps(cfg)], pt),
                       'clevis with the exchange key thp')

        check('%s: thp of the exchange key -> exit 1' % k, wrong_thp_exchange)

        def wrong_thp_with_adv():
            cfg = {'url': url, 'adv': adv_file, 'thp': site.thp[1]}
            failed(tether(['encrypt', 'tang', json.dumps(cfg)], pt),
                   'adv file with another server\'s thp', words=[site.thp[1]])
            peer_fails(clevis(['encrypt', 'tang', json.dumps(cfg)], pt),
                       'clevis with adv file and another server\'s thp')

        check('%s: adv file + another server\'s thp -> exit 1' % k,
              wrong_thp_with_adv)

        def no_trust_no_tty():
            cfg = json.dumps({'url': url})
            # The premise: in this session /dev/tty cannot be opened.
            probe = peers.run(['sh', '-c', 'exec 3</dev/tty'], input=b'',
                              check=False)
            assert probe.returncode != 0, '/dev/tty can be opened here'
            for args in (['setsid', '-w', TETHER, 'encrypt', 'tang', cfg],
                         [TETHER, 'encrypt', 'tang', cfg]):
                cp = peers.run(args, input=pt, env=env_with(), check=False,
                               timeout=30)
                failed(cp, 'no thp, no adv, no -y, no terminal',
                       words=['thp', '-y'])
            peer_fails(clevis(['encrypt', 'tang', cfg], pt, timeout=30),
                       'clevis without thp/-y and without a terminal')

        check('%s: no thp/adv/-y without a terminal -> exit 1 naming thp '
              'and -y' % k, no_trust_no_tty)


# --------------------------------------------------------------------------
# 3. sss with dead servers

def section_sss(sites):
    section('3. sss over 3 servers with servers stopped')
    pt = os.urandom(48) + b'\x00sss'
    for site in sites:
        k = site.kind
        site.start_all()
        cfg2 = site.sss_cfg(2)
        cfg3 = site.sss_cfg(3)
        # nested: t=2 of {tang0, sss(t=1 of tang1, tang2)}
        nested = {'t': 2, 'pins': {
            'tang': [site.cfg(0)],
            'sss': {'t': 1, 'pins': {'tang': [site.cfg(1), site.cfg(2)]}}}}
        c2, t2 = c_enc('sss', cfg2, pt), t_enc('sss', cfg2, pt)
        c3, t3 = c_enc('sss', cfg3, pt), t_enc('sss', cfg3, pt)
        cn, tn = c_enc('sss', nested, pt), t_enc('sss', nested, pt)
        hdr = jwe_header(tn)['clevis']['sss']
        inner = [jwe_header(j.encode())['clevis']['pin'] for j in hdr['jwe']]
        assert sorted(inner) == ['sss', 'tang'], inner

        site.stop(0)
        try:
            check('%s: t=2, server 0 stopped: clevis JWE -> tether' % k,
                  lambda: same(t_dec(c2), pt, 'tether decrypt'))
            check('%s: t=2, server 0 stopped: tether JWE -> clevis' % k,
                  lambda: same(c_dec(t2), pt, 'clevis decrypt'))
            check('%s: t=2, server 0 stopped: tether JWE -> tether' % k,
                  lambda: same(t_dec(t2), pt, 'tether decrypt'))

            def t3_dead():
                dead = site.url(0)
                for name, jwe in (('clevis', c3), ('tether', t3)):
                    err = failed(tether(['decrypt'], jwe),
                                 't=3 with %s stopped (%s JWE)' % (dead, name),
                                 words=[dead])
                    peer_fails(clevis(['decrypt'], jwe), 't=3, one stopped')
                log('        %s' % err.strip())

            check('%s: t=3, server 0 stopped -> exit 1 naming it' % k, t3_dead)
        finally:
            site.start(0)

        site.stop(1)
        try:
            check('%s: nested sss, server 1 stopped: clevis JWE -> tether' % k,
                  lambda: same(t_dec(cn), pt, 'tether decrypt'))
            check('%s: nested sss, server 1 stopped: tether JWE -> clevis' % k,
                  lambda: same(c_dec(tn), pt, 'clevis decrypt'))

            def nested_too_few():
                site.stop(2)  # the inner sss now has no share
                try:
                    for name, jwe in (('clevis', cn), ('tether', tn)):
                        failed(tether(['decrypt'], jwe),
                               'nested, servers 1 and 2 stopped (%s JWE)'
                               % name, words=[site.url(1)])
                        peer_fails(clevis(['decrypt'], jwe), 'nested, 2 dead')
                finally:
                    site.start(2)

            check('%s: nested sss, servers 1+2 stopped -> exit 1' % k,
                  nested_too_few)
        finally:
            site.start(1)

        def all_back():
            same(t_dec(c3), pt, 'tether decrypt t=3')
            same(c_dec(t3), pt, 'clevis decrypt t=3')

        check('%s: t=3 with all servers back' % k, all_back)


# --------------------------------------------------------------------------
# 4. SHA-1 kids

def section_s1(h, sites):
    section('4. old bindings with SHA-1 (S1) kids')
    pt = os.urandom(40) + b'\x00old binding'
    for site in sites:
        k = site.kind

        def s1():
            sig = keys_where(site.keys[0], signing=True, hidden=False)[0]
            jwe = s1_encrypt(h, {'url': site.url(0), 'thp': sig.thp('S1')}, pt)
            kid = jwe_header(jwe)['kid']
            assert kid == site.exc(0).thp('S1') and len(kid) == 27, (
                'not an S1 kid: %s' % kid)
            same(c_dec(jwe), pt, 'clevis decrypt (the peer)')
            same(t_dec(jwe), pt, 'tether decrypt')

        check('%s: S1 kid made by clevis-encrypt-tang (S1) -> tether' % k, s1)


# --------------------------------------------------------------------------
# 5. validation

def section_validation(h, sites):
    section('5. validation: corrupted JWEs, malicious and broken servers')
    pt = os.urandom(64) + b'\x00validation'
    site = sites[-1]
    inputs = [('null', c_enc('null', {}, pt))]
    for s in sites:
        inputs.append(('tang via %s' % s.kind, t_enc('tang', s.cfg(0), pt)))
        inputs.append(('clevis tang via %s' % s.kind,
                       c_enc('tang', s.cfg(0), pt)))
    inputs.append(('sss via %s' % site.kind, t_enc('sss', site.sss_cfg(2), pt)))

    for name, jwe in inputs:
        def corrupt_ct():
            p = parts(jwe)
            p[3] = flip_char(p[3], len(p[3]) // 2)
            bad = join(p)
            failed(tether(['decrypt'], bad), 'corrupted ciphertext',
                   words=['authentication'])
            peer_fails(clevis(['decrypt'], bad), 'corrupted ciphertext')

        def corrupt_tag():
            p = parts(jwe)
            p[4] = flip_char(p[4], 0)
            bad = join(p)
            failed(tether(['decrypt'], bad), 'corrupted tag',
                   words=['authentication'])
            peer_fails(clevis(['decrypt'], bad), 'corrupted tag')

        check('%s: a corrupted ciphertext byte -> exit 1, authentication'
              % name, corrupt_ct)
        check('%s: a corrupted tag -> exit 1, authentication' % name,
              corrupt_tag)

    jwe = inputs[1][1]

    def header_not_json():
        p = parts(jwe)
        for hdr in (b'this is not JSON', b'["an","array"]', b'{"clevis":',
                    b''):
            bad = join([b64u(hdr).encode()] + p[1:])
            failed(tether(['decrypt'], bad), 'header %r' % hdr,
                   words=['header'])
            peer_fails(clevis(['decrypt'], bad), 'header %r' % hdr)

    check('a header that is not a JSON object -> exit 1', header_not_json)

    def truncated():
        p = parts(jwe)
        cuts = {
            'half': jwe[:len(jwe) // 2],
            'no tag': join(p[:4]),
            'tag cut short': join(p[:4] + [p[4][:-3]]),
            'ciphertext cut short': join(p[:3] + [p[3][:len(p[3]) // 2], p[4]]),
            'header only': p[0],
            'one byte': jwe[:1],
            'nothing': b'',
        }
        for what, bad in cuts.items():
            failed(tether(['decrypt'], bad), 'truncated (%s)' % what)
            peer_fails(clevis(['decrypt'], bad), 'truncated (%s)' % what)

    check('truncated JWEs -> exit 1, nothing on stdout', truncated)

    for s in sites:
        adv_file = h.write('adv-evil-%s.jws' % s.kind, s.adv[0])
        with EvilServer(s.servers[0].port) as evil:
            evil_jwe = t_enc('tang', {'url': evil.url, 'adv': adv_file}, pt)
            clevis_jwe = c_enc('tang', {'url': evil.url, 'adv': adv_file}, pt)

            def proxy():
                evil.httpd.mode = 'proxy'
                same(t_dec(evil_jwe), pt, 'tether decrypt through the proxy')
                same(c_dec(evil_jwe), pt, 'clevis decrypt through the proxy')
                same(t_dec(clevis_jwe), pt, 'tether decrypt (clevis JWE)')

            check('%s behind a stand-in proxy: decrypts (control)' % s.kind,
                  proxy)
            cases = [('offcurve', ['point']), ('othercurve', ['curve']),
                     ('p256coords', []), ('notjson', []),
                     ('wrongpoint', ['authentication']), ('huge', []),
                     ('empty', [])]
            for mode, words in cases:
                def bad_answer():
                    evil.httpd.mode = mode
                    before = evil.httpd.requests
                    err = failed(tether(['decrypt'], evil_jwe),
                                 '/rec answer %s' % mode, words=words)
                    assert evil.httpd.requests > before, 'server not asked'
                    if mode != 'wrongpoint':
                        assert '127.0.0.1:%d' % evil.port in err, (
                            'message does not name the server: %s' % err)
                    assert len(err.strip().splitlines()) == 1, (
                        'more than one line: %s' % err)
                    log('        %s' % err.strip())
                    peer_fails(clevis(['decrypt'], evil_jwe), mode)

                check('%s: /rec answers %s -> clean error' % (s.kind, mode),
                      bad_answer)

            def rec_404_evil():
                evil.httpd.mode = 'status404'
                failed(tether(['decrypt'], evil_jwe), '/rec 404',
                       words=['404', evil.url])

            check('%s: stand-in /rec answers 404 -> message with the status'
                  % s.kind, rec_404_evil)

    for s in sites:
        def deleted_key():
            kd = h.mkdir('deleted-%s' % s.kind)
            for f in os.listdir(s.dirs[2]):
                shutil.copy2(os.path.join(s.dirs[2], f), kd)
            srv = h.tangd(kd) if s.kind == 'tangd' else h.tetherd(kd)
            try:
                thp = peers.show_lines(tlib.tether_keys('show', kd).stdout)[0]
                cfg = {'url': srv.url, 'thp': thp}
                tj, cj = t_enc('tang', cfg, pt), c_enc('tang', cfg, pt)
                same(t_dec(tj), pt, 'before the key is deleted')
                exc = keys_where(load_keys(kd), exchange=True)[0]
                kid = exc.thp()
                assert jwe_header(tj)['kid'] == kid
                os.unlink(exc.path)
                r = tlib.post_json(srv.port, '/rec/' + kid,
                                    json.dumps(tlib.ecmr_jwk(*tlib.G)))
                assert r.status == 404, (
                    '%s answers %r for a deleted key' % (s.kind, r))
                for name, jwe in (('tether', tj), ('clevis', cj)):
                    # At once: tangd keeps the connection open after its
                    # empty 404 ("Content-Length: 0"); waiting for the close
                    # took the whole 10 s attempt and said "not complete".
                    began = time.monotonic()
                    err = failed(tether(['decrypt'], jwe),
                                 'deleted key (%s JWE)' % name,
                                 words=['404', srv.url])
                    took = time.monotonic() - began
                    assert took < 3 and 'not complete' not in err, (
                        'deleted key (%s JWE): the 404 took %.1f s: %s'
                        % (name, took, err.strip()))
                    peer_fails(clevis(['decrypt'], jwe), 'deleted key')
            finally:
                srv.stop()

        check('%s: exchange key deleted on the server -> HTTP 404 in the '
              'message' % s.kind, deleted_key)


# --------------------------------------------------------------------------
# 6. external pins

TOY_ENCRYPT = r'''#!/bin/bash -e
# Toy pin for tests: wraps the content key (A256KW) with the oct key "kek"
# of the configuration, and stores that key in the header (no protection).
# Records whether -y was given.
kek="$(jose fmt -j "$1" -Og kek -Oo-)" || { echo "toy: no kek" >&2; exit 1; }
y=false
[ "${2:-}" = "-y" ] && y=true
jwe="{\"protected\":{\"alg\":\"%ALG%\",\"enc\":\"A256GCM\",\"clevis\":{\"pin\":\"%PIN%\",\"%PIN%\":{\"kek\":$kek,\"y\":$y}}}}"
exec jose jwe enc -i "$jwe" -k- -I- -c < <(echo -n "$kek"; /bin/cat)
'''

TOY_DECRYPT = r'''#!/bin/bash -e
read -r -d . hdr
if [ "$(jose fmt -q "$hdr" -SyOg clevis -g pin -u-)" != "%PIN%" ]; then
    echo "%PIN%: JWE pin mismatch" >&2
    exit 1
fi
kek="$(jose fmt -q "$hdr" -SyOg clevis -g %PIN% -g kek -Oo-)" || exit 1
exec jose jwe dec -k- -i- < <(echo -n "$kek$hdr."; /bin/cat)
'''


def write_toy_pins(h):
    d = h.mkdir('pins')
    for pin, alg in (('toy', 'A256KW'), ('toydir', 'dir')):
        for kind, text in (('encrypt', TOY_ENCRYPT), ('decrypt', TOY_DECRYPT)):
            p = os.path.join(d, 'clevis-%s-%s' % (kind, pin))
            with open(p, 'w') as f:
                f.write(text.replace('%PIN%', pin).replace('%ALG%', alg))
            os.chmod(p, 0o755)
    return d


def section_external(h, sites):
    section('6. external pins (clevis-encrypt-PIN / clevis-decrypt-PIN)')
    pin_dir = write_toy_pins(h)
    env = env_with(path_prepend=pin_dir)
    pt = os.urandom(50) + b'\x00toy pin\x00'
    for pin, alg in (('toydir', 'dir'), ('toy', 'A256KW')):
        kek = json.loads(peers.jose('jwk', 'gen', '-i',
                                    json.dumps({'alg': alg if alg != 'dir'
                                                else 'A256GCM'})))
        cfg = {'kek': kek}

        def peer_works():
            jwe = c_enc(pin, cfg, pt, env=env)
            same(c_dec(jwe, env=env), pt, 'clevis decrypt (the toy pin works)')
            hdr = jwe_header(jwe)
            assert hdr['alg'] == alg and hdr['clevis'][pin]['kek'] == kek, hdr

        def clevis_to_tether():
            jwe = c_enc(pin, cfg, pt, env=env)
            same(t_dec(jwe, env=env), pt, 'tether decrypt (%s, alg %s)'
                 % (pin, alg))

        def tether_to_clevis():
            for yes in (False, True):
                jwe = t_enc(pin, cfg, pt, yes=yes, env=env)
                hdr = jwe_header(jwe)
                assert hdr['clevis']['pin'] == pin, hdr
                assert hdr['clevis'][pin]['kek'] == kek, 'config not passed'
                assert hdr['clevis'][pin]['y'] is yes, (
                    '-y %s passed to clevis-encrypt-%s'
                    % ('not' if yes else 'wrongly', pin))
                same(c_dec(jwe, env=env), pt, 'clevis decrypt')

        def tether_to_tether():
            jwe = t_enc(pin, cfg, pt, env=env)
            same(t_dec(jwe, env=env), pt, 'tether decrypt (%s, alg %s)'
                 % (pin, alg))

        def in_sss():
            sss = {'t': 2, 'pins': {pin: [cfg, cfg], 'null': {}}}
            tj = t_enc('sss', sss, pt, env=env)
            same(c_dec(tj, env=env), pt, 'clevis decrypt of tether sss')
            cj = c_enc('sss', sss, pt, env=env)
            same(t_dec(cj, env=env), pt, 'tether decrypt of clevis sss')

        check('%s (alg %s): clevis -> clevis (the pin itself works)'
              % (pin, alg), peer_works)
        check('%s (alg %s): tether encrypt -> clevis decrypt; -y passed on'
              % (pin, alg), tether_to_clevis)
        check('%s (alg %s): clevis encrypt -> tether decrypt' % (pin, alg),
              clevis_to_tether)
        check('%s (alg %s): tether -> tether' % (pin, alg), tether_to_tether)
        check('%s (alg %s): inside sss, both directions' % (pin, alg), in_sss)

    def pin_fails():
        kek = json.loads(peers.jose('jwk', 'gen', '-i', '{"alg":"A256GCM"}'))
        jwe = t_enc('toydir', {'kek': kek}, pt, env=env)
        p = parts(jwe)
        p[4] = flip_char(p[4], 0)
        bad = join(p)
        failed(tether(['decrypt'], bad, env=env),
               'failing clevis-decrypt-toydir', words=['clevis-decrypt-toydir'])
        peer_fails(clevis(['decrypt'], bad, env=env), 'failing toydir')
        failed(tether(['encrypt', 'toydir', '{}'], pt, env=env),
               'failing clevis-encrypt-toydir', words=['clevis-encrypt-toydir'])

    check('a failing external pin program -> exit 1 naming it', pin_fails)

    def unknown_pin():
        failed(tether(['encrypt', 'nosuchpin', '{}'], pt, env=env),
               'tether encrypt nosuchpin', words=['unsupported pin'])
        peer_fails(clevis(['encrypt', 'nosuchpin', '{}'], pt, env=env),
                   'clevis encrypt nosuchpin')
        # a JWE naming a pin nobody has
        hdr = b64u(json.dumps({'alg': 'dir', 'enc': 'A256GCM', 'clevis': {
            'pin': 'nosuchpin', 'nosuchpin': {}}}).encode())
        jwe = ('%s..%s.%s.%s' % (hdr, b64u(os.urandom(12)),
                                 b64u(os.urandom(20)),
                                 b64u(os.urandom(16)))).encode()
        failed(tether(['decrypt'], jwe, env=env), 'tether decrypt nosuchpin',
               words=['unsupported pin', 'nosuchpin'])
        peer_fails(clevis(['decrypt'], jwe, env=env), 'clevis decrypt nosuchpin')
        # the toy pin is not found without its directory in TETHER_PIN_PATH
        failed(tether(['encrypt', 'toydir', '{}'], pt),
               'toydir not in TETHER_PIN_PATH',
               words=['unsupported pin', 'TETHER_PIN_PATH'])

    check('unknown pin -> exit 1, "unsupported pin"', unknown_pin)


# --------------------------------------------------------------------------
# 7. error messages and timeouts

def section_errors(h, sites):
    section('7. unreachable servers, timeouts, TETHER_TIMEOUT')
    pt = b'timeouts\x00'
    for s in sites:
        adv_file = h.write('adv-err-%s.jws' % s.kind, s.adv[0])

        def refused():
            port = tlib.free_port()
            url = 'http://%s:%d' % (tlib.HOST, port)
            jwe = t_enc('tang', {'url': url, 'adv': adv_file}, pt)
            t0 = time.monotonic()
            cp = tether(['decrypt'], jwe, timeout=60)
            took = time.monotonic() - t0
            err = failed(cp, 'decrypt, nothing listening',
                         words=[url, 'connection refused'])
            m = re.search(r'(\d+) attempts?', err)
            assert m, 'message does not give the number of attempts: %s' % err
            log('        (%s attempts, %.2fs): %s'
                % (m.group(1), took, err.strip()))
            peer_fails(clevis(['decrypt'], jwe), 'nothing listening')
            cp = tether(['encrypt', 'tang', json.dumps({'url': url}), '-y'], pt)
            failed(cp, 'encrypt, nothing listening',
                   words=[url, 'connection refused', 'attempt'])

        check('%s adv, nothing listening -> URL, "connection refused", '
              'attempts' % s.kind, refused)

    s = sites[-1]
    adv_file = h.write('adv-bh.jws', s.adv[0])

    def silent_server():
        problems = []
        with Blackhole() as bh:
            jwe = t_enc('tang', {'url': bh.url, 'adv': adv_file}, pt)
            for args, what in ((['decrypt'], 'decrypt'),
                               (['encrypt', 'tang',
                                 json.dumps({'url': bh.url}), '-y'],
                                'encrypt')):
                n0 = len(bh.conns)
                t0 = time.monotonic()
                cp = tether(args, jwe if what == 'decrypt' else pt,
                            env=env_with({'TETHER_TIMEOUT': '0.5'}),
                            timeout=60)
                took = time.monotonic() - t0
                err = failed(cp, '%s, TETHER_TIMEOUT=0.5, silent server'
                             % what, words=[bh.url])
                log('        %s: %.2fs, %d connection(s): %s'
                    % (what, took, len(bh.conns) - n0, err.strip()))
                assert re.search(r'time|no answer|within', err, re.I) and \
                    '0.5' in err, 'message does not say it timed out (0.5 s)'
                assert took >= 0.45, 'gave up after %.2fs, before 0.5 s' % took
                if took > 1.5:
                    problems.append(
                        '%s took %.2fs with TETHER_TIMEOUT=0.5 (%d connections '
                        'to the silent server): expected about the timeout'
                        % (what, took, len(bh.conns) - n0))
        assert not problems, '; '.join(problems)

    check('TETHER_TIMEOUT=0.5, server accepts and never answers -> fails in '
          'about 0.5 s, says so', silent_server)

    def no_connection():
        # Unreachable (connect times out): retried, as documented ("3
        # attempts when the server cannot be reached"), each attempt bounded.
        with SynDrop() as sd:
            jwe = t_enc('tang', {'url': sd.url, 'adv': adv_file}, pt)
            t0 = time.monotonic()
            cp = tether(['decrypt'], jwe,
                        env=env_with({'TETHER_TIMEOUT': '0.5'}), timeout=60)
            took = time.monotonic() - t0
            err = failed(cp, 'decrypt, TETHER_TIMEOUT=0.5, SYNs dropped',
                         words=[sd.url, 'no connection', '0.5'])
            m = re.search(r'(\d+) attempts?', err)
            assert m, 'message does not give the number of attempts: %s' % err
            n = int(m.group(1))
            log('        %.2fs: %s' % (took, err.strip()))
            # n attempts of 0.5 s, pauses of 0.25 s doubling, 1 s of slack
            bound = n * 0.5 + 0.25 * (2 ** (n - 1) - 1) + 1.0
            assert 0.45 * n <= took <= bound, (
                '%d attempts took %.2fs (expected %.2f..%.2f)'
                % (n, took, 0.45 * n, bound))

    check('TETHER_TIMEOUT=0.5, SYNs dropped -> "no connection within 0.5 s", '
          'attempts, bounded', no_connection)

    def bad_timeout():
        jwe = c_enc('null', {}, pt)
        for v in ('abc', '0', '-1', '1x', 'nan'):
            env = env_with({'TETHER_TIMEOUT': v})
            failed(tether(['decrypt'], jwe, env=env),
                   'TETHER_TIMEOUT=%s decrypt' % v, rc=2,
                   words=['TETHER_TIMEOUT'])
            failed(tether(['encrypt', 'null', '{}'], pt, env=env),
                   'TETHER_TIMEOUT=%s encrypt' % v, rc=2)
        # a valid one works
        same(t_dec(jwe, env=env_with({'TETHER_TIMEOUT': '2.5'})), pt,
             'TETHER_TIMEOUT=2.5')

    check('TETHER_TIMEOUT=abc (and 0, -1, ...) -> exit 2', bad_timeout)

    def usage():
        for args in ([], ['encrypt'], ['encrypt', 'null'], ['decrypt', 'x'],
                     ['nosuchcommand']):
            failed(tether(args), 'tether %s' % ' '.join(args), rc=2)

    check('usage errors -> exit 2', usage)

    if not tlib.have_ipv6_loopback():
        log('   (no IPv6 loopback: [::1] checks skipped)')
        return
    for s in sites:
        def ipv6():
            kd = s.dirs[0]
            srv = h.tetherd(kd, host='::1') if s.kind == 'tetherd' \
                else h.tangd(kd, host='::1')
            try:
                cfg = {'url': srv.url, 'thp': s.thp[0]}
                jwe = t_enc('tang', cfg, pt)
                same(c_dec(jwe), pt, 'clevis decrypt over [::1]')
                same(t_dec(c_enc('tang', cfg, pt)), pt,
                     'tether decrypt over [::1]')
                sss = {'t': 2, 'pins': {'tang': [cfg, s.cfg(1)]}}
                same(c_dec(t_enc('sss', sss, pt)), pt, 'sss [::1] + 127.0.0.1')
            finally:
                srv.stop()

        check('%s over [::1]: both directions' % s.kind, ipv6)


# --------------------------------------------------------------------------

SECTIONS = {
    '1': lambda h, sites: section_roundtrips(sites),
    '2': section_tang_config,
    '3': lambda h, sites: section_sss(sites),
    '4': section_s1,
    '5': section_validation,
    '6': section_external,
    '7': section_errors,
}


def test():
    peers.require('tetherd', 'tether-keys', 'tangd', 'tangd-keygen',
                  'systemd-socket-activate', 'jose', 'clevis')
    if not TETHER or not os.access(TETHER, os.X_OK):
        log('SKIP: TETHER (the tether client) is not set or not executable')
        sys.exit(peers.SKIP)
    if not shutil.which('setsid'):
        log('SKIP: setsid missing')
        sys.exit(peers.SKIP)
    wanted = sys.argv[1:] or sorted(SECTIONS)
    unknown = [w for w in wanted if w not in SECTIONS]
    assert not unknown, 'unknown section(s) %s' % unknown
    t0 = time.monotonic()
    with peers.Harness() as h:
        sites = [Site(h, kind) for kind in KINDS]
        for s in sites:
            log('%s: %s' % (s.kind, ', '.join(srv.url for srv in s.servers)))
        for w in wanted:
            SECTIONS[w](h, sites)
    # Failed checks are reported here, after the servers are stopped (their
    # logs are not what a client failure needs).
    log('\n%d check(s) failed in %.0fs' % (len(FAILURES), time.monotonic() - t0))
    for what, msg in FAILURES:
        log('FAILED: %s\n    %s' % (what, msg.splitlines()[0][:400]))
    assert not FAILURES, '%d client check(s) failed' % len(FAILURES)


if __name__ == '__main__':
    tlib.script_main(test)
