"""The tests' one harness (Python 3 standard library only), shared by
tests/integration, tests/interop (peers.py adds tang, clevis and jose),
tests/load, tests/boot and tests/bench: tether's programs and a tetherd on
loopback, raw HTTP, waiting for a server, running processes bounded and in
sessions of their own, and the P-521 arithmetic needed to check /rec answers
independently of the C code.

Tests find it with sys.path.insert(0, <tests/lib>) before `import tlib`."""

import base64
import hashlib
import json
import re
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

TETHERD = os.environ.get("TETHERD", "build/programs/tetherd")
TETHER_KEYS = os.environ.get("TETHER_KEYS", "build/programs/tether-keys")
TETHER = os.path.abspath(os.environ.get("TETHER", "build/programs/tether"))

# TETHERD_VALGRIND=1 (meson test --setup valgrind): every Tetherd runs under
# memcheck, and stopping one fails the test if valgrind saw an invalid access
# or a leak.
VALGRIND = os.environ.get("TETHERD_VALGRIND") == "1"
VALGRIND_ERROR = 99
# The exit status the sanitizer passes of tests/run.sh give a sanitizer report
# (TSAN_OPTIONS=exitcode=66): stopping such a tetherd fails the test.
SANITIZER_ERROR = 66

HOST = "127.0.0.1"


def log(*args):
    print(*args, flush=True)


def env_without_proxies(**extra):
    """This process's environment with no proxy setting at all (for tests of
    the proxy variables), messages in English, plus extra."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy", "ftp_proxy")}
    env["LC_ALL"] = "C"
    env.update(extra)
    return env


def no_proxy_env():
    """This process's environment without proxy settings: nothing may divert
    loopback traffic."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy")}
    env["no_proxy"] = env["NO_PROXY"] = "127.0.0.1,localhost,::1"
    return env

# ----------------------------------------------------------------- encoding


def b64u(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text):
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def int_to_b64u(n, width=66):
    return b64u(n.to_bytes(width, "big"))


def b64u_to_int(text):
    return int.from_bytes(unb64u(text), "big")


THP_HASHES = {"S1": "sha1", "S224": "sha224", "S256": "sha256", "S384": "sha384", "S512": "sha512"}


def canon(obj):
    """JSON with sorted keys and no spaces, for comparing JWKs and answers."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def thumbprint(jwk, hash_name="S256"):
    """RFC 7638 thumbprint of an EC key, computed here, not by tether."""
    return b64u(hashlib.new(THP_HASHES[hash_name], canon({k: jwk[k] for k in ("crv", "kty", "x", "y")}).encode()).digest())


def jwe_header(jwe):
    """The protected header of a compact JWE (bytes or str)."""
    if isinstance(jwe, bytes):
        jwe = jwe.decode()
    return json.loads(unb64u(jwe.split(".")[0]))


# ----------------------------------------------------------------- P-521

P = 2**521 - 1
N = 0x01FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFA51868783BF2F966B7FCC0148F709A5D03BB5C9B8899C47AEBB6FB71E91386409
B = 0x0051953EB9618E1C9A1F929A21A0B68540EEA2DA725B99B315F3B8B489918EF109E156193951EC7E937B1652C0BD3BB1BF073573DF883D2C34F1EF451FD46B503F00
GX = 0x00C6858E06B70404E9CD9E3ECB662395B4429C648139053FB521F828AF606B4D3DBAA14B5E77EFE75928FE1DC127A2FFA8DE3348B3C1856A429BF97E7E31C2E5BD66
GY = 0x011839296A789A3BC0045C8A5FB42C7D1BD998F54449579B446817AFBD17273E662C97EE72995EF42640C550B9013FAD0761353C7086A272C24088BE94769FD16650
G = (GX, GY)


def on_curve(x, y):
    return (y * y - (x * x * x - 3 * x + B)) % P == 0


def add(p1, p2):
    """p1 + p2 in affine coordinates; None is the point at infinity."""
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    (x1, y1), (x2, y2) = p1, p2
    if x1 == x2 and (y1 + y2) % P == 0:
        return None
    if p1 == p2:
        lam = (3 * x1 * x1 - 3) * pow(2 * y1, -1, P) % P
    else:
        lam = (y2 - y1) * pow(x2 - x1, -1, P) % P
    x3 = (lam * lam - x1 - x2) % P
    return (x3, (lam * (x1 - x3) - y1) % P)


def mul(k, point=G):
    """k * point (k taken mod N: every point here is in G's group); None is
    the point at infinity."""
    result, addend = None, point
    k %= N
    while k:
        if k & 1:
            result = add(result, addend)
        addend = add(addend, addend)
        k >>= 1
    return result


def random_scalar():
    return secrets.randbelow(N - 1) + 1


def random_point():
    """A fresh client point, as clevis makes one: (x, y) of k*G."""
    return mul(random_scalar())


def ecmr_jwk(x, y, crv="P-521", width=66, **extra):
    jwk = {"alg": "ECMR", "crv": crv, "key_ops": ["deriveKey"], "kty": "EC",
           "x": int_to_b64u(x, width), "y": int_to_b64u(y, width)}
    jwk.update(extra)
    return jwk


def jwk_point(jwk):
    """(x, y) of an EC JWK."""
    return b64u_to_int(jwk["x"]), b64u_to_int(jwk["y"])


# ----------------------------------------------------------------- keys


def load_keys(keydir):
    """Every *.jwk in keydir: list of dicts {file, hidden, jwk, role}."""
    keys = []
    for name in sorted(os.listdir(keydir)):
        if not name.endswith(".jwk"):
            continue
        with open(os.path.join(keydir, name)) as f:
            jwk = json.load(f)
        ops = jwk.get("key_ops", [])
        role = "sig" if "sign" in ops else "exc"
        keys.append({"file": name, "hidden": name.startswith("."), "jwk": jwk, "role": role})
    return keys


def key_of(keydir, role, hidden=False):
    found = [k["jwk"] for k in load_keys(keydir) if k["role"] == role and k["hidden"] == hidden]
    if not found:
        raise AssertionError(f"no {'hidden' if hidden else 'advertised'} {role} key in {keydir}")
    return found[0]


def tether_keys(*args, check=True, **kw):
    """tether-keys ARGS; output as text; CmdError when it fails, unless check=False."""
    return run(TETHER_KEYS, *args, check=check, text=True, **{"timeout": 60, **kw})


def tether_gen(keydir):
    """A fresh key pair in keydir (tether-keys gen); returns keydir."""
    tether_keys("gen", keydir)
    return keydir


# ----------------------------------------------------------------- processes


def group_members(pgid):
    """Live (non-zombie) processes of process group pgid."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        # fields[0] = state, fields[2] = pgrp
        if fields[0] != "Z" and int(fields[2]) == pgid:
            pids.append(int(d))
    return pids


def kill_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_empty(pgid, timeout):
    deadline = time.monotonic() + timeout
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def stop_process(proc, grace=5.0):
    """Stops a Popen started with start_new_session=True, and every process
    of its group (e.g. tangd children of systemd-socket-activate): SIGTERM,
    then SIGKILL after grace seconds. The leader is reaped last, so the group
    id cannot be reused meanwhile."""
    if proc is None:
        return
    pgid = proc.pid  # session leader: pgid == pid
    if group_members(pgid):
        kill_group(pgid, signal.SIGTERM)
        if not _wait_group_empty(pgid, grace):
            kill_group(pgid, signal.SIGKILL)
            _wait_group_empty(pgid, 5.0)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


class CmdError(AssertionError):
    """A command run() ran failed (with check) or ran past its timeout."""


def run(*args, input=None, env=None, check=False, timeout=120, cwd=None, text=False):
    """Runs a command in a session of its own (no controlling terminal, so
    nothing can sit on a prompt; stdin empty unless input is given), bounded
    by timeout: past it, every process of the session is killed and CmdError
    raised. Returns CompletedProcess with stdout and stderr (bytes, or str
    with text=True); with check, CmdError when it exits non-zero."""
    args = [str(a) for a in args]
    if isinstance(input, str) and not text:
        input = input.encode()
    proc = subprocess.Popen(args, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=cwd, text=text,
                            start_new_session=True)
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_group(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise CmdError(f"timed out after {timeout}s: {' '.join(args)}\nstderr: {_text(err)}")
    finally:
        if proc.poll() is None:
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
    if check and proc.returncode != 0:
        raise CmdError(f"command failed (exit {proc.returncode}): {' '.join(args)}\n"
                       f"stdout: {_text(out)[:2000]}\nstderr: {_text(err)[:2000]}")
    return subprocess.CompletedProcess(args, proc.returncode, out, err)


def _text(data):
    return data.decode(errors="replace") if isinstance(data, bytes) else data or ""


# ----------------------------------------------------------------- HTTP


def family_of(host):
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def free_port(family=None, host=HOST):
    """A TCP port nothing listens on now (on host; family from host if not given)."""
    with socket.socket(family or family_of(host), socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def url_host(host):
    """host as a URL has it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


def have_ipv6_loopback():
    try:
        free_port(host="::1")
        return True
    except OSError:
        return False


def raw_request(port, data, host=HOST, family=None, timeout=10):
    """Sends raw bytes on a fresh connection and reads until the server
    closes, a full response is in or timeout passes. A server that stops
    reading or resets the connection ends the exchange quietly: the caller
    gets what was answered (b"" for nothing)."""
    with socket.socket(family or family_of(host), socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect((host, port))
        try:
            s.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # it may have answered before closing (a 413 before the whole body)
        chunks = []
        while True:
            try:
                chunk = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
            resp = b"".join(chunks)
            if _complete(resp):
                break
        return b"".join(chunks)


def _complete(resp):
    head, sep, body = resp.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value)
    return False


class Response:
    """An HTTP response as read off the socket: status (None when there was
    no answer, e.g. the server closed the connection), headers (lower-case
    names), body."""

    def __init__(self, raw):
        self.raw = raw
        head, _, self.body = raw.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2) if lines and lines[0] else []
        self.status = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
        self.headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        if self.status is None:
            return f"<no response: {self.raw[:80]!r}>"
        return f"<{self.status} {self.body[:80]!r}>"


def request(port, method, target, body=None, headers=None, host=HOST, family=None, timeout=10):
    """One request on a fresh connection (Connection: close: tangd serves one
    request per connection anyway). A body goes with its Content-Length and,
    in a POST or PUT, as a JWK (Content-Type: application/jwk+json, as
    clevis sends it) unless headers say otherwise."""
    hdrs = {"Host": "localhost", "Connection": "close"}
    if body is not None:
        if isinstance(body, str):
            body = body.encode()
        hdrs["Content-Length"] = str(len(body))
        if method in ("POST", "PUT"):
            hdrs["Content-Type"] = "application/jwk+json"
    hdrs.update(headers or {})
    data = f"{method} {target} HTTP/1.1\r\n".encode()
    data += b"".join(f"{k}: {v}\r\n".encode() for k, v in hdrs.items()) + b"\r\n"
    data += body or b""
    return Response(raw_request(port, data, host=host, family=family, timeout=timeout))


def get(port, target, **kw):
    return request(port, "GET", target, **kw)


def post_json(port, target, obj, **kw):
    """POST a JWK: obj as JSON, or str/bytes as they are."""
    body = obj if isinstance(obj, (str, bytes)) else json.dumps(obj)
    return request(port, "POST", target, body=body, **kw)


def wait_http(port, path="/adv", proc=None, status=None, host=HOST, timeout=10.0, attempt_timeout=10,
              what="the server", logs=None):
    """Polls GET path, a fresh connection each time, until it is answered
    (with status, if given): returns the Response; None if proc exits first.
    Past timeout, AssertionError naming what, the last answer or error, and
    logs() if given."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return None
        try:
            r = get(port, path, host=host, timeout=attempt_timeout)
            if r.status is not None and (status is None or r.status == status):
                return r
            last = r
        except OSError as e:
            last = e
        time.sleep(0.02)
    raise AssertionError(f"{what} on port {port} did not answer GET {path} within {timeout:g}s (last: {last!r})"
                         + (f"\n{logs()}" if logs else ""))


# ----------------------------------------------------------------- JWS


def adv_payload(adv):
    """The key set an advertisement (a JWS: dict, or its JSON text) signs."""
    if not isinstance(adv, dict):
        adv = json.loads(adv)
    return json.loads(unb64u(adv["payload"]))


def adv_signatures(adv):
    if "signatures" in adv:
        return [s for s in adv["signatures"]]
    return [{"protected": adv["protected"], "signature": adv["signature"]}]


# ----------------------------------------------------------------- server


class Tetherd:
    """One tetherd on loopback with its own key directory; stopped on close."""

    def __init__(self, keydir=None, args=(), port=None, host="127.0.0.1", gen=True, wait_path="/health",
                 wait_status=None, user=None, wrap=()):
        """wrap: a command tetherd runs under (its arguments follow)."""
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-it-")
        self.keydir = keydir or os.path.join(self.tmp.name, "keys")
        if user is not None:
            # Unprivileged (uid = gid = user), so that permission faults bite:
            # the tests run as root. Its own key directory is its user's.
            os.chmod(self.tmp.name, 0o711)
        if not os.path.exists(self.keydir):
            os.mkdir(self.keydir)
            if user is not None:
                os.chown(self.keydir, user, user)
            if gen:
                tether_keys("gen", self.keydir)
        self.host = host
        self.family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.port = port or free_port(host=host)
        self.logpath = os.path.join(self.tmp.name, "tetherd.log")
        self.log = open(self.logpath, "wb")
        cmd = [TETHERD, "-a", host, "-p", str(self.port), *args, self.keydir]
        self.valgrind_log = os.path.join(self.tmp.name, "valgrind.log")
        if VALGRIND:
            cmd = ["valgrind", "--quiet", f"--error-exitcode={VALGRIND_ERROR}", "--leak-check=full",
                   "--errors-for-leak-kinds=definite,indirect", "--show-leak-kinds=definite,indirect",
                   f"--log-file={self.valgrind_log}", *cmd]
            if user is not None:
                with open(self.valgrind_log, "w"):
                    os.chown(self.valgrind_log, user, user)
        if user is not None:
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
        self.proc = subprocess.Popen([*wrap, *cmd], stdout=subprocess.DEVNULL, stderr=self.log,
                                     stdin=subprocess.DEVNULL)
        self.wait_ready(wait_path, wait_status)

    def wait_ready(self, path="/health", status=None, timeout=60 if VALGRIND else 10):
        """Waits until path answers (with status, if given); with path None,
        until the start-up line is logged, without opening a connection (which
        tetherd would count against the limits until it has seen it close)."""
        if path is None:
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None:
                if re.search(r"^tetherd: serving .* on ", self.logs(), re.M):
                    return None
                if time.monotonic() > deadline:
                    raise AssertionError(f"tetherd did not log its start-up line within {timeout}s: {self.logs()}")
                time.sleep(0.02)
            r = None
        else:
            r = wait_http(self.port, path, self.proc, status, self.host, timeout, what="tetherd", logs=self.logs)
        if r is None:
            raise AssertionError(f"tetherd exited with {self.proc.returncode}: {self.logs()}")
        return r

    def get(self, target, **kw):
        return get(self.port, target, host=self.host, family=self.family, **kw)

    def post(self, target, obj, **kw):
        return post_json(self.port, target, obj, host=self.host, family=self.family, **kw)

    def raw(self, data, **kw):
        return raw_request(self.port, data, host=self.host, family=self.family, **kw)

    def logs(self):
        self.log.flush()
        with open(self.logpath, "rb") as f:
            return f.read().decode(errors="replace")

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60 if VALGRIND else 10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if VALGRIND and os.environ.get("TETHERD_VALGRIND_RUNS"):
            with open(os.environ["TETHERD_VALGRIND_RUNS"], "a") as f:
                f.write(("errors" if self.proc.returncode == VALGRIND_ERROR else "clean") + "\n")
        if self.proc.returncode == SANITIZER_ERROR:
            with open(self.logpath, errors="replace") as f:
                raise AssertionError(f"a sanitizer found errors in tetherd:\n{f.read()}")
        if VALGRIND and self.proc.returncode == VALGRIND_ERROR:
            with open(self.valgrind_log) as f:
                raise AssertionError(f"valgrind found errors in tetherd:\n{f.read()}")
        return self.proc.returncode

    def close(self):
        self.stop()
        self.tmp.cleanup()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ----------------------------------------------------------------- a proxy

TINYPROXY = next((p for p in ("/usr/bin/tinyproxy", "/usr/sbin/tinyproxy") if os.access(p, os.X_OK)), None)


class Tinyproxy:
    """Debian's tinyproxy in the foreground on 127.0.0.1 (a directory of its
    own in tmp: configuration, log), optionally with BasicAuth (user, pass);
    requests() are the requests it logged."""

    def __init__(self, tmp, auth=None):
        self.dir = tempfile.mkdtemp(prefix="tinyproxy-", dir=tmp)
        self.port = free_port()
        self.logpath = os.path.join(self.dir, "tinyproxy.log")
        conf = os.path.join(self.dir, "tinyproxy.conf")
        with open(conf, "w") as f:
            # No ConnectPort line: CONNECT to any port (tetherd's and nginx's
            # are not 443 or 563).
            f.write(f"Port {self.port}\nListen 127.0.0.1\nTimeout 30\nLogFile \"{self.logpath}\"\n"
                    f"LogLevel Info\nMaxClients 20\nAllow 127.0.0.1\n")
            if auth:
                f.write("BasicAuth %s %s\n" % auth)
        self.proc = subprocess.Popen([TINYPROXY, "-d", "-c", conf], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if not eventually(lambda: "Accepting connections" in self.log() or self.proc.poll() is not None,
                          timeout=10) or self.proc.poll() is not None:
            raise AssertionError("tinyproxy did not start: " + self.log())

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def log(self):
        try:
            with open(self.logpath, errors="replace") as f:
                return f.read()
        except FileNotFoundError:
            return ""

    def requests(self):
        return [line for line in self.log().splitlines() if "Request (file descriptor" in line]

    def close(self):
        stop_process(self.proc)


def eventually(check, timeout=5.0, interval=0.02):
    """Retry check() until it returns truthy; for state that changes asynchronously."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def main():
    unittest.main(verbosity=2)


def script_main(fn):
    """Runs a test written as one function (the interop suite): prints a
    traceback and exits 1 when it raises, PASS and 0 otherwise; a SystemExit
    (77: skipped) passes through."""
    try:
        fn()
    except SystemExit:
        raise
    except BaseException:
        import traceback
        traceback.print_exc(file=sys.stdout)
        sys.stdout.flush()
        sys.exit(1)
    log("PASS")
    sys.exit(0)


# ----------------------------------------------------------------- LUKS images

# The passphrase of slot 0 in the tests' images.
PASSPHRASE = b"original passphrase"


def tether(*args, input=None, env=None):
    return run(TETHER, *args, input=input, env=env)


def luks_meta(img):
    return json.loads(run("cryptsetup", "luksDump", "--dump-json-metadata", img, check=True).stdout)


def opens(img, key, slot=None):
    """Whether key opens img (slot), the key alone: with tether's token plugin
    installed, cryptsetup would otherwise try the tokens first."""
    args = ["cryptsetup", "open", "--test-passphrase", "--disable-external-tokens", "--key-file", "-", img]
    if slot is not None:
        args[2:2] = ["--key-slot", str(slot)]
    return run(*args, input=key).returncode == 0


def on_terminal(args, typed=(), timeout=60):
    """tether with a pseudo-terminal as its controlling terminal and standard
    input: each of typed (prompt, answer) writes answer once prompt is shown
    (in order). Returns (what the terminal showed, exit status)."""
    import pty
    import select
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(TETHER, [TETHER, *args])
    out, deadline, todo = b"", time.monotonic() + timeout, list(typed)
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 0.5)[0]:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
        while todo and todo[0][0] in out.split(b"\x00")[-1]:
            prompt, answer = todo.pop(0)
            out += b"\x00"   # a mark: the next prompt must come after it
            os.write(fd, answer)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return out.replace(b"\x00", b"").decode(errors="replace"), os.waitstatus_to_exitcode(status)


class ServerCase(unittest.TestCase):
    """Tests sharing one quiet tetherd: self.srv, its self.url and a tang
    configuration for it, self.cfg."""

    @classmethod
    def setUpClass(cls):
        cls.srv = Tetherd(args=["-q"])
        cls.url = f"http://127.0.0.1:{cls.srv.port}"
        cls.cfg = json.dumps({"url": cls.url}, separators=(",", ":"))

    @classmethod
    def tearDownClass(cls):
        cls.srv.close()
