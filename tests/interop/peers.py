"""The peers of the interop suite: Debian's tang, clevis and jose, run next
to tetherd. What is not about them (ports, HTTP, waiting, processes, P-521,
tether's programs) is in tests/lib/tlib.py.

Everything listens on loopback only (127.0.0.1; ::1 where a test asks for
it).  Every process is started by us, in its own session (process group),
and is stopped through that group on exit, also when the test fails or
meson's timeout sends SIGTERM.  Every wait is bounded.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import tlib  # noqa: E402
from tlib import HOST, TETHERD, TETHER_KEYS, log  # noqa: E402

SKIP = 77  # meson: exit code of a skipped test


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


# --------------------------------------------------------------------------
# process hygiene

def _sigterm_to_exit(signum, frame):
    # meson sends SIGTERM on timeout: turn it into an exception so that every
    # finally/with block below still stops the servers and removes temp dirs.
    raise SystemExit('terminated by signal %d' % signum)


signal.signal(signal.SIGTERM, _sigterm_to_exit)


def clean_env():
    """Environment for peers: no proxy may divert loopback traffic; messages
    in the C locale."""
    env = tlib.no_proxy_env()
    env['LC_ALL'] = 'C'
    return env


def run(args, input=None, timeout=60, check=True, env=None, cwd=None):
    """tlib.run as the interop tests run every program: in clean_env()
    unless env is given, and failing (tlib.CmdError) unless check=False."""
    return tlib.run(*args, input=input, timeout=timeout, check=check, env=env or clean_env(), cwd=cwd)


def _program(path):
    return path if path and os.path.isfile(path) and os.access(path, os.X_OK) else None


def require(*tools):
    """Skip (exit 77) when a peer program is not installed."""
    names = {
        'tetherd': _program(TETHERD), 'tether-keys': _program(TETHER_KEYS), 'tangd': TANGD,
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
# servers

def read_log(path):
    try:
        with open(path, 'rb') as f:
            return f.read().decode(errors='replace')[-4000:]
    except OSError:
        return ''


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
        return 'http://%s:%d' % (tlib.url_host(self.host), self.port)

    def command(self, port):
        raise NotImplementedError

    def start(self):
        # A fixed port (restarting another server on the same URL) may need
        # a moment to become free again; a random one may have been taken.
        for attempt in range(5):
            if attempt and self.fixed_port:
                time.sleep(0.3)
            port = self.fixed_port or tlib.free_port(host=self.host)
            with open(self.logfile, 'ab') as lf:
                self.proc = subprocess.Popen(
                    self.command(port), stdin=subprocess.DEVNULL, stdout=lf,
                    stderr=subprocess.STDOUT, env=clean_env(),
                    start_new_session=True)
            self.port = port
            # Any answer will do: the tests assert the status themselves.
            if tlib.wait_http(port, '/adv', self.proc, host=self.host, timeout=15, attempt_timeout=2,
                              what=self.kind, logs=lambda: read_log(self.logfile)):
                return self
            tlib.stop_process(self.proc)  # died: probably the port was taken
            self.proc = None
        raise AssertionError('%s could not be started:\n%s'
                             % (self.kind, read_log(self.logfile)))

    def stop(self):
        tlib.stop_process(self.proc)
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
                '%s:%d' % (tlib.url_host(self.host), port), TANGD, self.keydir]


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

def tang_keygen(keydir):
    # tangd-keygen warns when it cannot chown to _tang: harmless here.
    run([TANGD_KEYGEN, keydir])
    return keydir


def show_lines(out):
    """The non-empty lines of tang-show-keys or tether-keys show (bytes or str)."""
    if isinstance(out, bytes):
        out = out.decode()
    return [l for l in out.splitlines() if l.strip()]


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
