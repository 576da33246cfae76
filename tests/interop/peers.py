"""Shared helpers for the interop suite: tetherd against Debian's tang, clevis and jose.

Everything listens on loopback only (127.0.0.1; ::1 where a test asks for
it).  Every process is started by us, in its own session (process group),
and is stopped through that group on exit, also when the test fails or
meson's timeout sends SIGTERM.  Every wait is bounded.
"""

import base64
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

HOST = '127.0.0.1'

SKIP = 77  # meson: exit code of a skipped test

TETHERD = os.environ.get('TETHERD', '')
TETHER_KEYS = os.environ.get('TETHER_KEYS', '')


def _first_existing(*paths):
    for p in paths:
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


TANGD = _first_existing('/usr/libexec/tangd', '/usr/lib/tang/tangd')
TANGD_KEYGEN = _first_existing('/usr/libexec/tangd-keygen',
                               '/usr/lib/tang/tangd-keygen')
TANGD_ROTATE = _first_existing('/usr/libexec/tangd-rotate-keys',
                               '/usr/lib/tang/tangd-rotate-keys')
TANG_SHOW_KEYS = shutil.which('tang-show-keys')
SOCKET_ACTIVATE = shutil.which('systemd-socket-activate')
JOSE = shutil.which('jose')
CLEVIS = shutil.which('clevis')


def log(*args):
    print(*args, flush=True)


# --------------------------------------------------------------------------
# process hygiene

def _sigterm_to_exit(signum, frame):
    # meson sends SIGTERM on timeout: turn it into an exception so that every
    # finally/with block below still stops the servers and removes temp dirs.
    raise SystemExit('terminated by signal %d' % signum)


signal.signal(signal.SIGTERM, _sigterm_to_exit)


def clean_env():
    """Environment for peers: no proxy may divert loopback traffic."""
    env = dict(os.environ)
    for k in list(env):
        if k.lower() in ('http_proxy', 'https_proxy', 'all_proxy', 'ftp_proxy'):
            del env[k]
    env['no_proxy'] = env['NO_PROXY'] = '127.0.0.1,localhost,::1'
    env['LC_ALL'] = 'C'
    return env


def _kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _group_members(pgid):
    """Live (non-zombie) processes in process group pgid."""
    pids = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(')') + 2:].split()
        # fields[0] = state, fields[2] = pgrp
        if fields[0] != 'Z' and int(fields[2]) == pgid:
            pids.append(int(d))
    return pids


def _wait_group_empty(pgid, timeout):
    deadline = time.monotonic() + timeout
    while _group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def stop_process(proc, grace=5.0):
    """Stop a Popen started with start_new_session=True, and every process
    of its group (e.g. tangd children of systemd-socket-activate).  The
    leader is reaped last, so the group id cannot be reused meanwhile."""
    if proc is None:
        return
    pgid = proc.pid  # session leader: pgid == pid
    if _group_members(pgid):
        _kill_group(pgid, signal.SIGTERM)
        if not _wait_group_empty(pgid, grace):
            _kill_group(pgid, signal.SIGKILL)
            _wait_group_empty(pgid, 5.0)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class CmdError(AssertionError):
    pass


def run(args, input=None, timeout=60, check=True, env=None, cwd=None):
    """Run a command in its own session (no controlling tty, so clevis can
    never sit on a trust prompt), bounded by timeout.  Returns
    CompletedProcess with bytes stdout/stderr."""
    args = [str(a) for a in args]
    if isinstance(input, str):
        input = input.encode()
    proc = subprocess.Popen(args, stdin=subprocess.PIPE if input is not None
                            else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env or clean_env(), cwd=cwd,
                            start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise CmdError('timed out after %ss: %s\nstderr: %s'
                       % (timeout, ' '.join(args), err.decode(errors='replace')))
    finally:
        if proc.poll() is None:
            _kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
    cp = subprocess.CompletedProcess(args, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise CmdError('command failed (exit %d): %s\nstdout: %s\nstderr: %s'
                       % (proc.returncode, ' '.join(args),
                          out.decode(errors='replace')[:2000],
                          err.decode(errors='replace')[:2000]))
    return cp


def require(*tools):
    """Skip (exit 77) when a peer program is not installed."""
    names = {
        'tetherd': TETHERD, 'tether-keys': TETHER_KEYS, 'tangd': TANGD,
        'tangd-keygen': TANGD_KEYGEN, 'tangd-rotate-keys': TANGD_ROTATE,
        'tang-show-keys': TANG_SHOW_KEYS,
        'systemd-socket-activate': SOCKET_ACTIVATE, 'jose': JOSE,
        'clevis': CLEVIS, 'curl': shutil.which('curl'),
    }
    missing = [t for t in tools if not names.get(t)]
    if missing:
        log('SKIP: missing peer program(s): ' + ', '.join(missing))
        sys.exit(SKIP)


# --------------------------------------------------------------------------
# ports and HTTP

def free_port(host=HOST):
    family = socket.AF_INET6 if ':' in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def have_ipv6_loopback():
    try:
        free_port('::1')
        return True
    except OSError:
        return False


def url_host(host):
    return '[%s]' % host if ':' in host else host


class Response:
    def __init__(self, status, headers, body, error=None):
        self.status = status      # None: connection closed without answer
        self.headers = headers    # dict, lower-case names
        self.body = body
        self.error = error

    def __repr__(self):
        if self.status is None:
            return '<no response: %s>' % self.error
        return '<%d %r>' % (self.status, self.body[:80])


def request(port, method, path, body=None, headers=None, host=HOST,
            timeout=10):
    """One request on a fresh connection (tangd serves one request per
    connection in inetd mode).  Returns Response; status None if the server
    closed the connection without answering."""
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        hdrs = {'Connection': 'close'}
        if isinstance(body, str):
            body = body.encode()
        if body is not None or method in ('POST', 'PUT'):
            body = body or b''
            hdrs['Content-Length'] = str(len(body))
            hdrs['Content-Type'] = 'application/jwk+json'
        hdrs.update(headers or {})
        for k, v in hdrs.items():
            conn.putheader(k, v)
        conn.endheaders(body if body else None)
        r = conn.getresponse()
        data = r.read()
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()},
                        data)
    except (http.client.RemoteDisconnected, ConnectionResetError,
            http.client.BadStatusLine, BrokenPipeError) as e:
        return Response(None, {}, b'', error=repr(e))
    finally:
        conn.close()


def get(port, path, **kw):
    return request(port, 'GET', path, **kw)


def post(port, path, body, **kw):
    return request(port, 'POST', path, body=body, **kw)


def wait_http(port, proc, logfile, what, timeout=15.0, host=HOST):
    """Wait until GET /adv gets an HTTP answer, any status (bounded); return
    False if proc dies first.  Tests assert the status themselves."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            r = get(port, '/adv', timeout=2, host=host)
            if r.status is not None:
                return True
            last = r
        except OSError as e:
            last = e
        time.sleep(0.05)
    raise AssertionError('%s on port %d did not answer GET /adv within '
                         '%.0fs (last: %r)\n%s' % (what, port, timeout, last,
                                                   read_log(logfile)))


def read_log(path):
    try:
        with open(path, 'rb') as f:
            return f.read().decode(errors='replace')[-4000:]
    except OSError:
        return ''


# --------------------------------------------------------------------------
# servers

class Server:
    kind = '?'

    def __init__(self, keydir, logfile, port=None, host=HOST):
        self.host = host
        self.keydir = keydir
        self.logfile = logfile
        self.fixed_port = port
        self.port = None
        self.proc = None

    @property
    def url(self):
        return 'http://%s:%d' % (url_host(self.host), self.port)

    def command(self, port):
        raise NotImplementedError

    def start(self):
        # A fixed port (restarting another server on the same URL) may need
        # a moment to become free again; a random one may have been taken.
        for attempt in range(5):
            if attempt and self.fixed_port:
                time.sleep(0.3)
            port = self.fixed_port or free_port(self.host)
            with open(self.logfile, 'ab') as lf:
                self.proc = subprocess.Popen(
                    self.command(port), stdin=subprocess.DEVNULL, stdout=lf,
                    stderr=subprocess.STDOUT, env=clean_env(),
                    start_new_session=True)
            self.port = port
            if wait_http(port, self.proc, self.logfile, self.kind,
                         host=self.host):
                return self
            stop_process(self.proc)  # died: probably the port was taken
            self.proc = None
        raise AssertionError('%s could not be started:\n%s'
                             % (self.kind, read_log(self.logfile)))

    def stop(self):
        stop_process(self.proc)
        self.proc = None

    def log(self):
        return read_log(self.logfile)


class Tetherd(Server):
    kind = 'tetherd'

    def command(self, port):
        return [TETHERD, '-a', self.host, '-p', str(port), '-t', '2',
                '--drain-timeout', '500', self.keydir]


class Tangd(Server):
    """Debian's tangd as deployed: socket activation, one process per
    connection (tangd.socket has Accept=true)."""
    kind = 'tangd'

    def command(self, port):
        return [SOCKET_ACTIVATE, '--inetd', '-a', '-l',
                '%s:%d' % (url_host(self.host), port), TANGD, self.keydir]


class Harness:
    """with Harness() as h: temp dir + servers, all cleaned up on exit."""

    def __init__(self):
        self.tmp = None
        self.servers = []
        self._n = 0

    def __enter__(self):
        self.tmp = tempfile.mkdtemp(prefix='tether-interop-')
        return self

    def __exit__(self, exc_type, exc, tb):
        # A second SIGTERM must not cut the cleanup short.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if exc_type is not None:
            for s in self.servers:
                if s.proc is not None or os.path.exists(s.logfile):
                    log('--- %s log, tail (%s) ---\n%s'
                        % (s.kind, s.keydir, s.log()[-1500:]))
        for s in self.servers:
            try:
                s.stop()
            except Exception as e:  # keep cleaning up
                log('cleanup: %r' % e)
        shutil.rmtree(self.tmp, ignore_errors=True)
        signal.signal(signal.SIGTERM, _sigterm_to_exit)
        return False

    def path(self, *parts):
        return os.path.join(self.tmp, *parts)

    def mkdir(self, name):
        p = self.path(name)
        os.makedirs(p)
        return p

    def _logfile(self, kind):
        self._n += 1
        return self.path('%s-%d.log' % (kind, self._n))

    def tetherd(self, keydir, port=None, host=HOST):
        s = Tetherd(keydir, self._logfile('tetherd'), port, host)
        self.servers.append(s)
        return s.start()

    def tangd(self, keydir, port=None, host=HOST):
        s = Tangd(keydir, self._logfile('tangd'), port, host)
        self.servers.append(s)
        return s.start()

    def write(self, name, data):
        p = self.path(name)
        with open(p, 'wb' if isinstance(data, bytes) else 'w') as f:
            f.write(data)
        return p


# --------------------------------------------------------------------------
# key directories

def tether_keys(*args, **kw):
    return run([TETHER_KEYS] + list(args), **kw)


def tether_gen(keydir):
    tether_keys('gen', keydir)
    return keydir


def tang_keygen(keydir):
    # tangd-keygen warns when it cannot chown to _tang: harmless here.
    run([TANGD_KEYGEN, keydir])
    return keydir


def show_lines(out):
    return [l for l in out.decode().splitlines() if l.strip()]


class Key:
    def __init__(self, path):
        self.path = path
        self.file = os.path.basename(path)
        self.hidden = self.file.startswith('.')
        with open(path) as f:
            self.jwk = json.load(f)
        # Classify with jose, the library tang itself uses.
        self.signing = run([JOSE, 'jwk', 'use', '-i', path, '-a',
                            '-u', 'sign', '-u', 'verify'],
                           check=False).returncode == 0
        self.exchange = (not self.signing and
                         run([JOSE, 'jwk', 'use', '-i', path, '-u',
                              'deriveKey'], check=False).returncode == 0)
        self._thp = {}

    def thp(self, alg='S256'):
        if alg not in self._thp:
            self._thp[alg] = jose('jwk', 'thp', '-i', self.path,
                                  '-a', alg).decode().strip()
        return self._thp[alg]

    def pub(self):
        return json.loads(jose('jwk', 'pub', '-i', self.path))

    def __repr__(self):
        return '<%s%s %s>' % ('hidden ' if self.hidden else '',
                              'sig' if self.signing else
                              'exc' if self.exchange else 'other', self.file)


def load_keys(keydir):
    keys = []
    for name in sorted(os.listdir(keydir)):
        if name.endswith('.jwk'):
            keys.append(Key(os.path.join(keydir, name)))
    return keys


def keys_where(keys, signing=None, exchange=None, hidden=None):
    out = []
    for k in keys:
        if signing is not None and k.signing != signing:
            continue
        if exchange is not None and k.exchange != exchange:
            continue
        if hidden is not None and k.hidden != hidden:
            continue
        out.append(k)
    return out


# --------------------------------------------------------------------------
# jose / clevis

def jose(*args, input=None, timeout=30):
    return run([JOSE] + list(args), input=input, timeout=timeout).stdout


def jws_verifies(jws_path, key_path, all_keys=False):
    args = [JOSE, 'jws', 'ver', '-i', jws_path, '-k', key_path]
    if all_keys:
        args.append('-a')
    return run(args, check=False).returncode == 0


def clevis_encrypt_tang(cfg, plaintext, timeout=60):
    return run([CLEVIS, 'encrypt', 'tang', json.dumps(cfg)],
               input=plaintext, timeout=timeout).stdout


def clevis_decrypt(jwe, check=True, timeout=60):
    cp = run([CLEVIS, 'decrypt'], input=jwe, timeout=timeout, check=check)
    return cp if not check else cp.stdout


def jwe_header(jwe):
    hdr = jwe.split(b'.')[0]
    return json.loads(b64d(hdr.decode()))


def b64d(s):
    return base64.urlsafe_b64decode(s + '=' * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b'=').decode()


def canon(obj):
    return json.dumps(obj, sort_keys=True, separators=(',', ':'))


def adv_payload(adv_bytes):
    return json.loads(b64d(json.loads(adv_bytes)['payload']))


# --------------------------------------------------------------------------
# P-521 arithmetic (affine, pure Python) for crafting edge-case points

P521_P = 2 ** 521 - 1
P521_N = int('01ff' + 'ffffffff' * 7 + 'fffffffa'
             '51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409',
             16)
P521_B = int('0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef1'
             '09e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b50'
             '3f00', 16)
P521_G = (int('00c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b'
              '4d3dbaa14b5e77efe75928fe1dc127a2ffa8de3348b3c1856a429bf97e7e31c2'
              'e5bd66', 16),
          int('011839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd1727'
              '3e662c97ee72995ef42640c550b9013fad0761353c7086a272c24088be94769f'
              'd16650', 16))


def ec_on_curve(pt):
    x, y = pt
    return (y * y - (x * x * x - 3 * x + P521_B)) % P521_P == 0


def ec_add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    p = P521_P
    if a[0] == b[0]:
        if (a[1] + b[1]) % p == 0:
            return None
        lam = (3 * a[0] * a[0] - 3) * pow(2 * a[1], -1, p) % p
    else:
        lam = (b[1] - a[1]) * pow(b[0] - a[0], -1, p) % p
    x = (lam * lam - a[0] - b[0]) % p
    return (x, (lam * (a[0] - x) - a[1]) % p)


def ec_mul(k, pt=P521_G):
    r = None
    k %= P521_N
    while k:
        if k & 1:
            r = ec_add(r, pt)
        pt = ec_add(pt, pt)
        k >>= 1
    return r


def coord(n, size=66):
    return b64e(n.to_bytes(size, 'big'))


def ecmr_jwk(pt, **extra):
    jwk = {'alg': 'ECMR', 'crv': 'P-521', 'key_ops': ['deriveKey'],
           'kty': 'EC', 'x': coord(pt[0]), 'y': coord(pt[1])}
    jwk.update(extra)
    return jwk


def jwk_point(jwk):
    return (int.from_bytes(b64d(jwk['x']), 'big'),
            int.from_bytes(b64d(jwk['y']), 'big'))


def random_scalar():
    return secrets.randbelow(P521_N - 1) + 1


# --------------------------------------------------------------------------

def main(fn):
    """Run a test function; print a result line; exit 0/1/77."""
    try:
        fn()
    except SystemExit:
        raise
    except BaseException:
        import traceback
        traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
        sys.exit(1)
    log('PASS')
    sys.exit(0)
