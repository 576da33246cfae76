"""Faults, and what tetherd and the tether client make of them.

Server: key files that cannot be read, the key directory removed or made
unreadable, a full disk when the first keys are created. tetherd runs
unprivileged (the tests run as root, which no permission stops) and must
name the file or directory and the cause in its log, keep answering /rec
(and /adv while the directory is there) with the keys it had (checked with
real `tether decrypt` exchanges of a JWE made before the fault), and say on
/health only the state (the reasons, which name files, go to the log).

Client: small fault servers on loopback that reset the connection, answer
slowly or never finish, answer garbage, or (a proxy in front of a real
tetherd) answer with a valid point for another key. `tether encrypt tang`
and `tether decrypt` must fail with one clear line naming the server and
the cause, within a bound derived from the client's documented timeouts.

Every fault tried is printed as a table at the end and written as a
markdown fragment to BUILD/reliability/faults.md for the README."""

import ctypes
import datetime
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402
from tlib import thumbprint  # noqa: E402

NOBODY = 65534
PLAINTEXT = b"the volume key, or near enough"

# The client's documented limits (client/include/ctx.h, tether-decrypt(1)): each
# attempt takes at most TETHER_TIMEOUT; a server that cannot be reached is
# tried 3 times, 250 ms and then 500 ms apart; a server that took the
# connection and then stalled is not asked again.
TIMEOUT_S = 2.0
RETRY_PAUSES_S = 0.25 + 0.5
# Process start, scheduling on shared CI cores.
MARGIN_S = 1.5
BOUNDS = {"once": MARGIN_S, "retried": RETRY_PAUSES_S + MARGIN_S, "timeout": TIMEOUT_S + MARGIN_S}
BOUND_WHY = {"once": "margin", "retried": "retry pauses + margin", "timeout": "TETHER_TIMEOUT + margin"}

ROWS = []


# ----------------------------------------------------------------- the table


class Fault:
    """One row of the table: the checks of the with-block decide its verdict."""

    def __init__(self, name, side, expected):
        self.name, self.side, self.expected = name, side, expected
        self.observed, self.seconds = "", None

    def saw(self, observed, seconds=None):
        self.observed, self.seconds = observed, seconds

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            verdict = "as expected"
        elif issubclass(exc_type, tlib.unittest.SkipTest):
            verdict, self.observed = "skipped", str(exc)
        else:
            verdict = "FAILED"
            first = (str(exc).strip().splitlines() or [exc_type.__name__])[0]
            self.observed = f"{self.observed} / {first}" if self.observed else first
        ROWS.append((self.name, self.side, self.expected, self.observed, self.seconds, verdict))
        return False


def stable(text):
    """What varies from run to run (ports, thumbprints, temporary paths) out
    of a message, so that the README changes only when behaviour does."""
    text = re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", text)
    text = re.sub(r"/tmp/tether-[\w-]+/keys", "KEYDIR", text)
    text = re.sub(r"(?<![\w-])[\w-]{43}(?![\w-])", "KID", text)
    return text


def cell(text):
    return stable(str(text)).replace("|", "\\|").replace("\n", " ")


def table():
    lines = ["| fault | side | expected | observed | s | verdict |", "|---|---|---|---|---|---|"]
    for name, side, expected, observed, seconds, verdict in ROWS:
        secs = "" if seconds is None else f"{seconds:.2f}"
        lines.append(f"| {cell(name)} | {side} | {cell(expected)} | {cell(observed)} | {secs} | {verdict} |")
    return lines


def summary():
    tried = [r for r in ROWS if r[5] != "skipped"]
    server = sum(1 for r in tried if r[1] == "server")
    good = sum(1 for r in tried if r[5] == "as expected")
    skipped = len(ROWS) - len(tried)
    return (f"{len(tried)} faults tried ({server} server, {len(tried) - server} client), {good} handled as expected"
            + (f", {skipped} skipped" if skipped else "")
            + f"; measured {datetime.date.today()} by `meson test -C build integration-faults` "
              f"(TETHER_TIMEOUT={TIMEOUT_S:g}).")


def tearDownModule():
    lines = table()
    print("\n" + "\n".join(lines) + "\n" + summary(), file=sys.stderr)
    # TETHERD is BUILD/programs/tetherd.
    build = os.path.dirname(os.path.dirname(os.path.abspath(tlib.TETHERD)))
    out = os.path.join(build, "reliability")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "faults.md.tmp"), "w") as f:
        f.write("### Faults\n\n" + "\n".join(lines) + "\n\n" + summary() + "\n")
    os.replace(os.path.join(out, "faults.md.tmp"), os.path.join(out, "faults.md"))


# ----------------------------------------------------------------- helpers


def private_mounts():
    """A mount namespace of this test's own, so that the tiny file systems
    of the disk-full faults are seen by it and its children only, and go
    away with it. Must run while the process has a single thread. Returns
    None, or why there is none."""
    if os.geteuid() != 0:
        return "needs root for a mount namespace"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x00020000) != 0:  # CLONE_NEWNS
        return f"unshare(CLONE_NEWNS): {os.strerror(ctypes.get_errno())}"
    r = subprocess.run(["mount", "--make-rprivate", "/"], capture_output=True, text=True)
    return f"mount --make-rprivate /: {r.stderr.strip()}" if r.returncode else None


NO_MOUNTS = private_mounts()


def tether(*args, input=b""):
    """Runs the client; returns (exit code, stdout, stderr, seconds). A hang
    shows up as a failure (tlib.CmdError), not as a stuck test."""
    env = dict(os.environ, TETHER_TIMEOUT=f"{TIMEOUT_S:g}")
    t0 = time.monotonic()
    r = tlib.run(tlib.TETHER, *args, input=input, env=env, timeout=60)
    return r.returncode, r.stdout, r.stderr.decode(errors="replace"), time.monotonic() - t0


def encrypt_to(srv):
    sig = thumbprint(tlib.key_of(srv.keydir, "sig"))
    rc, out, err, _ = tether("encrypt", "tang", json.dumps({"url": f"http://127.0.0.1:{srv.port}", "thp": sig}),
                             input=PLAINTEXT)
    if rc != 0:
        raise AssertionError(f"tether encrypt: {err}")
    return out


def adv_thps(srv):
    r = srv.get("/adv")
    if r.status != 200:
        return None
    return sorted(thumbprint(k) for k in tlib.adv_payload(r.json())["keys"])


def health(srv):
    r = srv.get("/health")
    return r.status, r.body.decode(errors="replace").strip()


def health_logged(srv, state):
    """The reasons behind a /health state, as logged when it changed."""
    return log_line(srv, f"/health: {state}").split("/health: ", 1)[1]


def log_line(srv, needle, timeout=5.0):
    """The first log line containing needle, waiting for it to appear."""
    def find():
        return next((line for line in srv.logs().splitlines() if needle in line), None)
    line = tlib.eventually(find, timeout=timeout)
    if not line:
        raise AssertionError(f"no log line with {needle!r} in:\n{srv.logs()}")
    return line


def since(t0):
    return time.monotonic() - t0


class DirEvents:
    """inotify on a directory: which *.jwk names appeared in it (created or
    renamed into place) and which were deleted, in order."""
    IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x80, 0x100, 0x200

    def __init__(self, path):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0 or libc.inotify_add_watch(self.fd, path.encode(),
                                                 self.IN_MOVED_TO | self.IN_CREATE | self.IN_DELETE) < 0:
            raise OSError(ctypes.get_errno(), "inotify")

    def read(self):
        events, data = [], b""
        while True:
            try:
                data += os.read(self.fd, 65536)
            except BlockingIOError:
                break
        while data:
            _, mask, _, length = struct.unpack_from("iIII", data)
            name = data[16:16 + length].rstrip(b"\0").decode()
            data = data[16 + length:]
            if name.endswith(".jwk"):
                events.append(("deleted" if mask & self.IN_DELETE else "appeared", name))
        return events

    def close(self):
        os.close(self.fd)


# ----------------------------------------------------------------- server


class ServerFaults(tlib.unittest.TestCase):
    def check_still_serves(self, srv, before, jwe):
        """/adv advertises what it did, and a JWE bound before still opens."""
        self.assertEqual(adv_thps(srv), before)
        rc, out, err, _ = tether("decrypt", input=jwe)
        self.assertEqual((rc, out), (0, PLAINTEXT), f"tether decrypt: {err}")

    def test_key_files_made_unreadable(self):
        with Fault("key files made unreadable (chmod 000) while serving", "server",
                   "log names each file and EACCES; /adv and /rec serve the keys loaded before; "
                   "/health 200 degraded") as f, tlib.Tetherd(user=NOBODY) as srv:
            jwe, before = encrypt_to(srv), adv_thps(srv)
            files = [k["file"] for k in tlib.load_keys(srv.keydir)]
            t0 = time.monotonic()
            for name in files:
                os.chmod(os.path.join(srv.keydir, name), 0)
            for name in files:
                line = log_line(srv, f"{name} cannot be read: Permission denied; serving the key loaded from it before")
            status, body = tlib.eventually(lambda: health(srv)[1].startswith("degraded") and health(srv))
            seconds = since(t0)
            self.assertEqual((status, body), (200, "degraded"))
            why = health_logged(srv, "degraded")
            self.assertIn("Permission denied", why)
            self.assertTrue(any(name in why for name in files), why)
            self.check_still_serves(srv, before, jwe)
            f.saw(f"log: {line}; /health {status}: {body}; log: /health: {why}", seconds)
            # Readable again: healthy again.
            for name in files:
                os.chmod(os.path.join(srv.keydir, name), 0o440)
            self.assertEqual(tlib.eventually(lambda: health(srv) == (200, "ok") and health(srv)), (200, "ok"))

    def test_unreadable_key_file_appears(self):
        with Fault("new key files appear that the server cannot read (root's, mode 0440)", "server",
                   "log names the file and EACCES; old keys served; /health 200 degraded") as f, \
                tlib.Tetherd(user=NOBODY) as srv:
            jwe, before = encrypt_to(srv), adv_thps(srv)
            staging = os.path.join(srv.tmp.name, "staging")
            os.mkdir(staging, 0o700)
            tlib.tether_keys("gen", staging, "new-sig", "new-exc")
            t0 = time.monotonic()
            for name in ("new-sig.jwk", "new-exc.jwk"):
                os.rename(os.path.join(staging, name), os.path.join(srv.keydir, name))
            line = log_line(srv, "new-sig.jwk cannot be read: Permission denied; skipped")
            why = health_logged(srv, "degraded: key file ")
            status, body = health(srv)
            seconds = since(t0)
            self.assertEqual((status, body), (200, "degraded"))
            self.assertIn("Permission denied", why)
            self.check_still_serves(srv, before, jwe)
            f.saw(f"log: {line}; /health {status}: {body}; log: /health: {why}", seconds)
            # Given to the server's user, they are served.
            for name in ("new-sig.jwk", "new-exc.jwk"):
                os.chown(os.path.join(srv.keydir, name), NOBODY, NOBODY)
            self.assertEqual(tlib.eventually(lambda: health(srv) == (200, "ok") and health(srv)), (200, "ok"))
            self.assertEqual(len(adv_thps(srv)), 4)

    def test_key_directory_made_unreadable(self):
        with Fault("key directory made unreadable (chmod 000) while serving", "server",
                   "log names the directory and EACCES; keys in memory served; /health 200 degraded") as f, \
                tlib.Tetherd(user=NOBODY) as srv:
            jwe, before = encrypt_to(srv), adv_thps(srv)
            t0 = time.monotonic()
            os.chmod(srv.keydir, 0)
            line = log_line(srv, "cannot read: Permission denied; keeping the keys already loaded")
            status, body = tlib.eventually(lambda: health(srv)[1].startswith("degraded") and health(srv))
            seconds = since(t0)
            self.assertEqual((status, body), (200, "degraded"))
            why = health_logged(srv, "degraded")
            self.assertIn(f"key directory {srv.keydir} cannot be read (Permission denied)", why)
            self.check_still_serves(srv, before, jwe)
            f.saw(f"log: {line}; /health {status}: {body}; log: /health: {why}", seconds)
            os.chmod(srv.keydir, 0o755)
            self.assertEqual(tlib.eventually(lambda: health(srv) == (200, "ok") and health(srv)), (200, "ok"))

    def test_key_directory_removed_then_recreated(self):
        with tlib.Tetherd(user=NOBODY) as srv:
            with Fault("key directory removed while serving, as a slow rm -r does it (each key file, "
                       "then the directory)", "server",
                       "log says so; /rec still recovers with the keys it held, /adv 500 (they are on disk no "
                       "more: a client must not bind to them); /health 200 degraded") as f:
                jwe, before = encrypt_to(srv), adv_thps(srv)
                t0 = time.monotonic()
                # The server sees (and serves) the directory losing its keys
                # one by one before the directory itself goes.
                for k in tlib.load_keys(srv.keydir):
                    loads = srv.logs().count(" loaded ")
                    os.unlink(os.path.join(srv.keydir, k["file"]))
                    self.assertTrue(tlib.eventually(lambda: srv.logs().count(" loaded ") > loads), srv.logs())
                os.rmdir(srv.keydir)
                log_line(srv, "removed or replaced")
                line = log_line(srv, "removed together with its key files; serving the 1 signing, 1 exchange")
                why = health_logged(srv, "degraded: key directory")
                status, body = health(srv)
                seconds = since(t0)
                self.assertEqual((status, body), (200, "degraded"))
                self.assertIn("is gone", why)
                adv_status = srv.get("/adv").status
                self.assertEqual(adv_status, 500)
                rc, out, err, _ = tether("decrypt", input=jwe)
                self.assertEqual((rc, out), (0, PLAINTEXT), f"tether decrypt: {err}")
                f.saw(f"log: {line}; /adv {adv_status}; tether decrypt recovers; /health {status}: {body}; "
                      f"log: /health: {why}", seconds)

            with Fault("key directory re-created with other keys", "server",
                       "picked up at once (the parent directory is watched); /health 200 ok") as f:
                fresh = os.path.join(srv.tmp.name, "fresh")
                os.mkdir(fresh)
                os.chown(fresh, NOBODY, NOBODY)
                tlib.tether_keys("gen", fresh)
                want = sorted(thumbprint(k["jwk"]) for k in tlib.load_keys(fresh))
                t0 = time.monotonic()
                os.rename(fresh, srv.keydir)
                self.assertEqual(tlib.eventually(lambda: adv_thps(srv) == want and want, timeout=5), want)
                seconds = since(t0)
                line = log_line(srv, "watching again")
                self.assertEqual(health(srv), (200, "ok"))
                rc, out, err, _ = tether("decrypt", input=encrypt_to(srv))
                self.assertEqual((rc, out), (0, PLAINTEXT), err)
                f.saw(f"log: {line}; /health 200: ok; new keys advertised and recovering", seconds)

    def full_disk(self, size_opts):
        """An empty key directory on a tmpfs this small, the server's."""
        if NO_MOUNTS:
            self.skipTest(NO_MOUNTS)
        base = tempfile.mkdtemp(prefix="tether-full-")
        self.addCleanup(shutil.rmtree, base, ignore_errors=True)
        os.chmod(base, 0o711)
        keydir = os.path.join(base, "keys")
        os.mkdir(keydir)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"{size_opts},mode=0700,uid={NOBODY},gid={NOBODY}",
                        "tether-faults", keydir], check=True)
        self.addCleanup(subprocess.run, ["umount", keydir], check=True)
        return keydir

    def check_disk_full(self, name, size_opts, cause, half_pair):
        keydir = self.full_disk(size_opts)
        events = DirEvents(keydir)
        self.addCleanup(events.close)
        with tlib.Tetherd(keydir=keydir, user=NOBODY, wait_status=503) as srv:
            with Fault(name, "server", "log and /health 503 say ENOSPC; no file left behind; /adv 500"
                       + ("; the key that fitted is removed again" if half_pair else "")) as f:
                line = log_line(srv, "no advertised key and cannot create one")
                self.assertRegex(line, f"{cause}: No space left on device$")
                seen = events.read()
                if half_pair:
                    # The signing key was written and renamed into place, then
                    # removed when the exchange key did not fit (once per
                    # attempt: a request may have retried already).
                    self.assertTrue(seen, "no key was written: the fault did not happen half way")
                    for appeared, deleted in zip(seen[::2], seen[1::2]):
                        self.assertEqual((appeared[0], deleted[0], appeared[1]), ("appeared", "deleted", deleted[1]))
                    self.assertEqual(len(seen) % 2, 0, seen)
                else:
                    self.assertEqual(seen, [])
                status, body = health(srv)
                self.assertEqual(status, 503)
                self.assertEqual(body, "unavailable")
                why = health_logged(srv, "unavailable: no usable signing key; no advertised key")
                self.assertTrue(why.startswith(f"unavailable: no usable signing key; no advertised key, and "
                                               f"creating one in {keydir} failed ("), why)
                self.assertIn("No space left on device", why)
                # Not half a pair, not a temporary file.
                self.assertEqual(os.listdir(keydir), [])
                # Requests retry it (at most once a second), logged once.
                for _ in range(5):
                    self.assertEqual(srv.get("/adv").status, 500)
                self.assertEqual(srv.logs().count("cannot create one"), 1, srv.logs())
                written = "the signing key, deleted again" if half_pair else "none"
                f.saw(f"log: {line}; /health {status}: {body}; log: /health: {why}; "
                      f"key files written: {written}; left: none")

            with Fault(f"space again after: {name}", "server",
                       "a request creates the pair (retried at most once a second); /health 200 ok") as f:
                subprocess.run(["mount", "-o", "remount,size=1m,nr_inodes=1024", keydir], check=True)
                t0 = time.monotonic()
                self.assertTrue(tlib.eventually(lambda: srv.get("/adv").status == 200, timeout=5), srv.logs())
                seconds = since(t0)
                line = log_line(srv, "no advertised key; created")
                self.assertEqual(health(srv), (200, "ok"))
                self.assertEqual(sorted(k["role"] for k in tlib.load_keys(keydir)), ["exc", "sig"])
                self.assertEqual(len(os.listdir(keydir)), 2)
                rc, out, err, _ = tether("decrypt", input=encrypt_to(srv))
                self.assertEqual((rc, out), (0, PLAINTEXT), err)
                f.saw(f"log: {line}; /health 200: ok", seconds)

    def test_disk_full_creating_the_first_file(self):
        self.check_disk_full("disk full creating the first keys: no inode left (tmpfs nr_inodes=1)", "nr_inodes=1",
                             "cannot create a file in the key directory", half_pair=False)

    def test_disk_full_writing_the_second_key(self):
        # One page: the signing key fits, the exchange key does not.
        self.check_disk_full("disk full half way through the pair (tmpfs size=4k)", "size=4k",
                             r"cannot write [\w-]+\.jwk", half_pair=True)


# ----------------------------------------------------------------- client


def read_request(conn):
    """Reads one request (headers and Content-Length body); (target, body)."""
    conn.settimeout(5)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None, b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)", head)
    while m and len(body) < int(m.group(1)):
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head.split(b" ")[1].decode(), body


class FaultServer:
    """A listening socket on loopback; each connection goes to handler(conn, stop)."""

    def __init__(self, handler):
        self.handler, self.stop = handler, threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        try:
            self.handler(conn, self.stop)
        except OSError:
            pass
        finally:
            conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.sock.close()


def reset(conn):
    # SO_LINGER with a zero timeout: close() sends RST, not FIN.
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def reset_on_accept(conn, stop):
    reset(conn)


def reset_after_request(conn, stop):
    read_request(conn)
    reset(conn)


def silent(conn, stop):
    read_request(conn)
    stop.wait(30)


def headers_trickle(conn, stop):
    read_request(conn)
    for byte in b"HTTP/1.1 200 OK\r\n" + b"X-Slow: yes\r\n" * 100:
        if stop.wait(0.2):
            return
        conn.sendall(bytes([byte]))


def body_never_ends(conn, stop):
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"keys\":[")
    stop.wait(30)


def cut_short(conn, stop):
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n{\"keys\":[")


def not_http(conn, stop):
    read_request(conn)
    conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\nProtocol mismatch.\r\n")


def answer(body, content_type="application/json"):
    def handler(conn, stop):
        read_request(conn)
        conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                     "Connection: close\r\n\r\n".encode() + body)
    return handler


class Proxy:
    """In front of a real tetherd: POST /rec/KID goes to /rec/rewrite(KID)."""

    def __init__(self, srv, rewrite):
        self.srv, self.rewrite = srv, rewrite

    def __call__(self, conn, stop):
        target, body = read_request(conn)
        kid = target.rsplit("/", 1)[-1]
        r = tlib.post_json(self.srv.port, f"/rec/{self.rewrite(kid)}", body)
        conn.sendall(r.raw)


# (fault, handler, bound, what the message says for encrypt (GET /adv), for decrypt (POST /rec))
CLIENT_FAULTS = [
    ("connection reset (RST) on accept", reset_on_accept, "retried",
     "connection reset by the server after 3 attempts", "connection reset by the server after 3 attempts"),
    ("connection reset (RST) after reading the request", reset_after_request, "retried",
     "connection reset by the server after 3 attempts", "connection reset by the server after 3 attempts"),
    ("takes the request, never answers", silent, "timeout",
     "no answer within 2.0 s after 1 attempt", "no answer within 2.0 s after 1 attempt"),
    ("headers trickle, one byte per 200 ms", headers_trickle, "timeout",
     "no answer within 2.0 s after 1 attempt", "no answer within 2.0 s after 1 attempt"),
    ("headers, then a body that never ends", body_never_ends, "timeout",
     "answer (HTTP 200) not complete within 2.0 s", "answer (HTTP 200) not complete within 2.0 s"),
    ("body cut short (connection closed before Content-Length)", cut_short, "once",
     "connection closed before the end of the answer", "connection closed before the end of the answer"),
    ("not HTTP (an SSH banner)", not_http, "once", "the answer is not HTTP", "the answer is not HTTP"),
    ("HTTP 200, HTML body", answer(b"<html><body>It works!</body></html>", "text/html"), "once",
     "is not a JSON object", "answered the recovery request with something that is not a JWK"),
    ("HTTP 200, truncated JSON", answer(b'{"kty":"EC","crv":"P-5'), "once",
     "is not a JSON object", "answered the recovery request with something that is not a JWK"),
    ("HTTP 200, JSON that is no JWS/JWK", answer(b'{"kty":"EC","crv":"P-521","x":"AQ"}'), "once",
     "rejected: advertisement is not a JWS object with a payload", "the tang server's answer"),
]


class ClientFaults(tlib.unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = tlib.Tetherd()
        cls.adv = cls.srv.get("/adv").json()
        cls.sig = thumbprint(tlib.key_of(cls.srv.keydir, "sig"))

    @classmethod
    def tearDownClass(cls):
        cls.srv.close()

    def jwe_for(self, url):
        """A JWE bound to this server's keys whose recovery goes to url."""
        rc, out, err, _ = tether("encrypt", "tang", json.dumps({"url": url, "adv": self.adv}), input=PLAINTEXT)
        self.assertEqual(rc, 0, err)
        return out

    def check_failure(self, url, command, result, bound, want):
        """Failed with one clear line naming the server and the cause, in time."""
        rc, out, err, seconds = result
        line = err.strip()
        self.assertEqual(rc, 1, f"exit code {rc} (a signal if negative): {err}")
        self.assertEqual(out, b"", "nothing may be written on failure")
        self.assertEqual(len(line.splitlines()), 1, f"one line expected: {err}")
        self.assertTrue(line.startswith(f"tether {command}: "), line)
        self.assertIn(url.split("//")[1], line, "the message names the server")
        self.assertIn(want, line)
        self.assertLessEqual(seconds, BOUNDS[bound], f"{seconds:.2f} s, bound {BOUNDS[bound]:.2f} s")
        return f"exit {rc}: {line}"

    def bound_text(self, bound):
        return f"within {BOUNDS[bound]:.2f} s ({BOUND_WHY[bound]})"

    def test_fault_servers(self):
        # Each fault on its own: one that fails does not hide the others.
        for name, handler, bound, want_enc, want_dec in CLIENT_FAULTS:
            with FaultServer(handler) as fs:
                with self.subTest(fault=name, route="adv"), \
                        Fault(f"{name}: GET /adv", "client",
                              f"tether encrypt tang fails: \"...{want_enc}\", {self.bound_text(bound)}") as f:
                    config = json.dumps({"url": fs.url, "thp": self.sig})
                    result = tether("encrypt", "tang", config, input=PLAINTEXT)
                    f.saw(self.check_failure(fs.url, "encrypt tang", result, bound, want_enc), result[3])
                with self.subTest(fault=name, route="rec"), \
                        Fault(f"{name}: POST /rec", "client",
                              f"tether decrypt fails: \"...{want_dec}\", {self.bound_text(bound)}") as f:
                    result = tether("decrypt", input=self.jwe_for(fs.url))
                    f.saw(self.check_failure(fs.url, "decrypt", result, bound, want_dec), result[3])

    def test_valid_point_for_another_key(self):
        tlib.tether_keys("gen", self.srv.keydir, "second-sig", "second-exc")
        adv = self.srv.get("/adv").json()
        kids = [thumbprint(k) for k in tlib.adv_payload(adv)["keys"] if "deriveKey" in k["key_ops"]]
        self.assertEqual(len(kids), 2)

        # Control: the same proxy, passing the kid through, recovers.
        with FaultServer(Proxy(self.srv, lambda kid: kid)) as fs:
            rc, out, err, _ = tether("decrypt", input=self.jwe_for(fs.url))
            self.assertEqual((rc, out), (0, PLAINTEXT), err)

        other = {kids[0]: kids[1], kids[1]: kids[0]}
        with FaultServer(Proxy(self.srv, lambda kid: other[kid])) as fs, \
                Fault("a valid point for another key (proxy rewrites /rec/KID to the other exchange key)", "client",
                      f"tether decrypt fails naming the server and the wrong key, {self.bound_text('once')}") as f:
            result = tether("decrypt", input=self.jwe_for(fs.url))
            f.saw(self.check_failure(fs.url, "decrypt", result, "once", "with another key's point"), result[3])


if __name__ == "__main__":
    tlib.main()
