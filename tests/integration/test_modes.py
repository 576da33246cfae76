"""How tetherd is started and stopped: addresses, IPv6, tangd's command line,
endpoint prefix, systemd socket activation (Accept=no and Accept=yes), inetd
mode, readiness notification, SIGTERM draining, idle timeouts and limits."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402
from tlib import ecmr_jwk, random_point, thumbprint  # noqa: E402


def wait_port(port, host="127.0.0.1", family=socket.AF_INET, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as s:
                s.settimeout(1)
                s.connect((host, port))
                return
        except OSError:
            time.sleep(0.02)
    raise AssertionError(f"nothing listens on {host}:{port}")


def listening_inodes():
    """Socket inodes of every TCP listener on this host (state 0A)."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(path) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    inodes.add(fields[9])
    return inodes


def listens(pid):
    """Whether process pid holds a listening TCP socket."""
    try:
        links = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except (FileNotFoundError, ProcessLookupError):
        return False
    mine = {link[len("socket:["):-1] for link in links if link.startswith("socket:[")}
    return bool(mine & listening_inodes())


class Proc:
    """A process of ours, stopped (and its children with it) on exit."""

    def __init__(self, cmd, **kw):
        self.logf = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.logf, stdin=subprocess.DEVNULL,
                                     start_new_session=True, **kw)

    def logs(self):
        self.logf.seek(0)
        return self.logf.read().decode(errors="replace")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        # Per-connection children outlive their parent briefly; wait for them
        # too, so none is still writing keys when the directory goes away.
        def group_gone():
            try:
                os.killpg(self.proc.pid, 0)
                return False
            except ProcessLookupError:
                return True
        if not tlib.eventually(group_gone, timeout=10):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.logf.close()


class Modes(tlib.unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-modes-")
        self.keydir = os.path.join(self.tmp.name, "keys")
        os.mkdir(self.keydir)
        tlib.tether_keys("gen", self.keydir)
        self.kid = thumbprint(tlib.key_of(self.keydir, "exc"))

    def tearDown(self):
        self.tmp.cleanup()

    def assert_serves(self, port, host="127.0.0.1", family=socket.AF_INET, prefix=""):
        self.assertEqual(tlib.get(port, prefix + "/adv", host=host, family=family).status, 200)
        x, y = random_point()
        r = tlib.post_json(port, f"{prefix}/rec/{self.kid}", ecmr_jwk(x, y), host=host, family=family)
        self.assertEqual(r.status, 200)

    def test_ipv6_loopback(self):
        with tlib.Tetherd(keydir=self.keydir, host="::1") as srv:
            self.assert_serves(srv.port, host="::1", family=socket.AF_INET6)

    def test_several_addresses(self):
        port = tlib.free_port()
        with Proc([tlib.TETHERD, "-a", "127.0.0.1", "-a", "::1", "-p", str(port), self.keydir]):
            wait_port(port)
            self.assert_serves(port)
            self.assert_serves(port, host="::1", family=socket.AF_INET6)

    def test_default_address_is_dual_stack(self):
        port = tlib.free_port(socket.AF_INET6, "::")
        with Proc([tlib.TETHERD, "-p", str(port), self.keydir]):
            wait_port(port)
            self.assert_serves(port)
            self.assert_serves(port, host="::1", family=socket.AF_INET6)

    def test_tangd_command_line(self):
        # tangd -l -p PORT -e ENDPOINT KEYDIR, options also after KEYDIR.
        port = tlib.free_port(socket.AF_INET6, "::")
        with Proc([tlib.TETHERD, self.keydir, "-l", "-p", str(port), "-e", "tang"]):
            wait_port(port)
            self.assert_serves(port, prefix="/tang")
            self.assert_serves(port, prefix="//tang/")
            self.assertEqual(tlib.get(port, "/adv").status, 404)
            self.assertEqual(tlib.get(port, "/other/adv").status, 404)

    def test_bad_command_lines(self):
        for args in ([], ["-p", "notaport", self.keydir], ["-p", "70000", self.keydir], ["--bogus", self.keydir],
                     [self.keydir, "extra"], ["-t", "0", self.keydir], [os.path.join(self.tmp.name, "missing")]):
            r = subprocess.run([tlib.TETHERD, *args], capture_output=True, text=True, timeout=10,
                               stdin=subprocess.DEVNULL)
            self.assertNotEqual(r.returncode, 0, args)
            self.assertTrue(r.stderr.strip(), args)

    def test_wildcard_ipv6_and_ipv4_together(self):
        # [::] and 0.0.0.0 on one port: the IPv6 socket must be IPv6-only
        # before it is bound, or the IPv4 bind finds the port taken.
        for addrs in (["::", "0.0.0.0"], ["0.0.0.0", "::"], ["::1", "127.0.0.1"], ["::", "127.0.0.1"]):
            port = tlib.free_port(socket.AF_INET6, "::")
            args = [a for addr in addrs for a in ("-a", addr)]
            with Proc([tlib.TETHERD, *args, "-p", str(port), self.keydir]) as p:
                wait_port(port)
                self.assertIsNone(p.proc.poll(), p.logs())
                self.assert_serves(port)
                self.assert_serves(port, host="::1", family=socket.AF_INET6)

    def test_ipv6_wildcard_alone_is_dual_stack(self):
        port = tlib.free_port(socket.AF_INET6, "::")
        with Proc([tlib.TETHERD, "-a", "::", "-p", str(port), self.keydir]):
            wait_port(port, host="::1", family=socket.AF_INET6)
            self.assert_serves(port, host="::1", family=socket.AF_INET6)
            self.assert_serves(port)

    def start_error(self, *args, user=None):
        cmd = [tlib.TETHERD, *args]
        if user is not None:
            cmd = ["setpriv", f"--reuid={user}", f"--regid={user}", "--clear-groups", *cmd]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
        self.assertNotEqual(r.returncode, 0, args)
        lines = r.stderr.strip().splitlines()
        self.assertTrue(lines, args)
        return lines[0]

    def test_startup_errors_name_their_cause(self):
        port = str(tlib.free_port())
        local = ["-a", "127.0.0.1", "-p", port]
        afile = os.path.join(self.tmp.name, "hostname")
        with open(afile, "w") as f:
            f.write("host\n")
        for path in ("/etc/hostname", afile):
            if not os.path.exists(path):
                continue
            # Without -p: its parsing happens to clear errno, hiding a stale one.
            msg = self.start_error("-a", "127.0.0.1", path)
            # Not the errno some earlier library call left behind.
            self.assertNotIn("No such file", msg)
            self.assertIn("not a directory", msg)
            self.assertIn("give the key directory", msg)
        msg = self.start_error(*local, os.path.join(self.tmp.name, "missing"))
        self.assertIn("No such file or directory", msg)
        # Unreadable to its user: the directory's open fails, and says why.
        os.chmod(self.tmp.name, 0o711)
        os.chmod(self.keydir, 0o700)
        msg = self.start_error(*local, self.keydir, user=65534)
        self.assertIn("permission denied: tetherd runs as user nobody (uid 65534)", msg)
        self.assertIn("tether-keys migrate --from " + self.keydir, msg)
        msg = self.start_error("-p", "http", self.keydir)
        self.assertIn("invalid port 'http'", msg)
        for bad in ("::1::2", "not an address"):
            msg = self.start_error("-a", bad, "-p", port, self.keydir)
            self.assertIn(bad, msg)
            self.assertIn("Name or service not known", msg)
            self.assertNotIn("No such file", msg)

    def test_pipe_on_stdin_never_listens(self):
        # Started as a filter (a shell pipeline, socat's pipes option, a file):
        # not inetd, and no reason to open [::]:9090 on every interface.
        request = b"GET /adv HTTP/1.0\r\n\r\n"
        reqfile = os.path.join(self.tmp.name, "request")
        with open(reqfile, "wb") as f:
            f.write(request)
        for kind in ("a pipe", "a regular file", "an unconnected socket"):
            with open(reqfile, "rb") as f, socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unconnected:
                stdin = {"a pipe": subprocess.PIPE, "a regular file": f}.get(kind, unconnected.fileno())
                proc = subprocess.Popen([tlib.TETHERD, self.keydir], stdin=stdin, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=True)
            try:
                if kind == "a pipe":
                    proc.stdin.write(request)
                    proc.stdin.close()
                deadline = time.monotonic() + 10
                while proc.poll() is None and time.monotonic() < deadline:
                    self.assertFalse(listens(proc.pid), f"stdin {kind}: tetherd opened a listening socket")
                    time.sleep(0.05)
                self.assertEqual(proc.wait(timeout=1), 2, kind)
                err = proc.stderr.read().decode()
                self.assertIn(f"standard input is {kind}; the inetd mode needs a connected socket", err)
                self.assertIn("-l", err)
                self.assertEqual(proc.stdout.read(), b"")
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                proc.stdout.close()
                proc.stderr.close()

    def test_pipe_on_stdin_with_listen_option_listens(self):
        port = tlib.free_port()
        proc = subprocess.Popen([tlib.TETHERD, "-a", "127.0.0.1", "-p", str(port), self.keydir],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            self.assert_serves(port)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
            proc.stdin.close()

    @tlib.unittest.skipUnless(shutil.which("socat"), "socat is not installed")
    def test_socat_pipes_is_refused_clearly(self):
        port = tlib.free_port()
        exe = f"{tlib.TETHERD} {self.keydir}"
        with Proc(["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"EXEC:{exe},pipes"]) as p:
            wait_port(port)
            resp = tlib.raw_request(port, b"GET /adv HTTP/1.0\r\n\r\n", timeout=10)
            self.assertEqual(resp, b"")
            self.assertTrue(tlib.eventually(lambda: "standard input is a pipe" in p.logs(), timeout=10), p.logs())
        # socat's default (a socketpair) is a connected socket: inetd mode.
        with Proc(["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"EXEC:{exe}"]):
            wait_port(port)
            self.assert_serves(port)

    def test_port_in_use(self):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            port = s.getsockname()[1]
            r = subprocess.run([tlib.TETHERD, "-a", "127.0.0.1", "-p", str(port), self.keydir],
                               capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
            self.assertEqual(r.returncode, 1)
            self.assertIn(str(port), r.stderr)

    def test_socket_activation_accept_no(self):
        port = tlib.free_port()
        with Proc(["systemd-socket-activate", "-l", f"127.0.0.1:{port}", tlib.TETHERD, self.keydir]) as p:
            wait_port(port)
            for _ in range(3):
                self.assert_serves(port)
            # One long-running process served them all.
            children = subprocess.run(["pgrep", "-P", str(p.proc.pid)], capture_output=True, text=True).stdout.split()
            self.assertLessEqual(len(children), 1)

    def test_socket_activation_accept_yes(self):
        # tangd@.service style: one process per connection, fd 3 connected.
        port = tlib.free_port()
        with Proc(["systemd-socket-activate", "-a", "-l", f"127.0.0.1:{port}", tlib.TETHERD, self.keydir]):
            wait_port(port)
            for _ in range(3):
                self.assert_serves(port)

    def test_inetd_mode(self):
        # xinetd / tangd@.service with StandardInput=socket: stdin is the connection.
        port = tlib.free_port()
        with Proc(["systemd-socket-activate", "--inetd", "-a", "-l", f"127.0.0.1:{port}", tlib.TETHERD,
                   self.keydir]):
            wait_port(port)
            for _ in range(3):
                self.assert_serves(port)
            # Keep-alive within one inetd connection works too.
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                for _ in range(2):
                    s.sendall(b"GET /adv HTTP/1.1\r\nHost: x\r\n\r\n")
                    resp = b""
                    while not tlib._complete(resp):
                        chunk = s.recv(65536)
                        self.assertTrue(chunk)
                        resp += chunk
                    self.assertEqual(tlib.Response(resp).status, 200)

    def test_inetd_process_exits_with_connection(self):
        a, b = socket.socketpair()
        with a, b:
            proc = subprocess.Popen([tlib.TETHERD, self.keydir], stdin=b.fileno(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE)
            b.close()
            a.sendall(b"GET /adv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            resp = b""
            while chunk := a.recv(65536):
                resp += chunk
            self.assertEqual(tlib.Response(resp).status, 200)
            a.close()
            self.assertEqual(proc.wait(timeout=10), 0)
            proc.stderr.close()

    def test_concurrent_inetd_servers_generate_one_pair(self):
        # After a power cut, many per-connection servers may start on an empty directory.
        empty = os.path.join(self.tmp.name, "empty")
        os.mkdir(empty)
        procs, socks = [], []
        for _ in range(8):
            a, b = socket.socketpair()
            procs.append(subprocess.Popen([tlib.TETHERD, empty], stdin=b.fileno(), stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
            b.close()
            socks.append(a)
        payloads = set()
        for a in socks:
            with a:
                a.sendall(b"GET /adv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                resp = b""
                while chunk := a.recv(65536):
                    resp += chunk
                r = tlib.Response(resp)
                self.assertEqual(r.status, 200)
                payloads.add(r.json()["payload"])
        for p in procs:
            p.wait(timeout=10)
        self.assertEqual(len(os.listdir(empty)), 2, os.listdir(empty))
        self.assertEqual(len(payloads), 1)

    def test_ready_notification(self):
        notify = os.path.join(self.tmp.name, "notify")
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as ns:
            ns.bind(notify)
            ns.settimeout(10)
            port = tlib.free_port()
            env = dict(os.environ, NOTIFY_SOCKET=notify)
            with Proc([tlib.TETHERD, "-a", "127.0.0.1", "-p", str(port), self.keydir], env=env) as p:
                msg = ns.recv(4096).decode()
                self.assertIn("READY=1", msg)
                # Ready means serving.
                self.assertEqual(tlib.get(port, "/adv").status, 200)
                p.proc.send_signal(signal.SIGTERM)
                self.assertIn("STOPPING=1", ns.recv(4096).decode())
                self.assertEqual(p.proc.wait(timeout=10), 0)

    def test_sigterm_drains_open_request(self):
        with tlib.Tetherd(keydir=self.keydir) as srv:
            x, y = random_point()
            body = tlib.json.dumps(ecmr_jwk(x, y)).encode()
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                # Half a request in flight when SIGTERM arrives ...
                s.sendall((f"POST /rec/{self.kid} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                           "Connection: close\r\n\r\n").encode() + body[:10])
                time.sleep(0.2)
                srv.signal(signal.SIGTERM)
                time.sleep(0.2)
                # ... new connections are refused, the open one is finished.
                with self.assertRaises(OSError):
                    socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
                s.sendall(body[10:])
                resp = b""
                while chunk := s.recv(65536):
                    resp += chunk
                self.assertEqual(tlib.Response(resp).status, 200)
            self.assertEqual(srv.proc.wait(timeout=10), 0)

    def test_sigterm_idle_server_exits_zero(self):
        with tlib.Tetherd(keydir=self.keydir) as srv:
            t0 = time.monotonic()
            srv.signal(signal.SIGTERM)
            self.assertEqual(srv.proc.wait(timeout=10), 0)
            self.assertLess(time.monotonic() - t0, 3)

    def test_idle_connection_timeout(self):
        with tlib.Tetherd(keydir=self.keydir, args=["--timeout", "1"]) as srv:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as s:
                s.sendall(b"GET /adv HTTP/1.1\r\n")  # and never finish
                t0 = time.monotonic()
                try:
                    data = s.recv(4096)
                except ConnectionResetError:
                    data = b""
                self.assertFalse(data.startswith(b"HTTP/1.1 200"))
                self.assertLess(time.monotonic() - t0, 5)
            self.assertEqual(srv.get("/adv").status, 200)

    def test_connection_limit(self):
        with tlib.Tetherd(keydir=self.keydir, args=["--connection-limit", "4", "--timeout", "30"]) as srv:
            held = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(4)]
            try:
                time.sleep(0.3)
                # Over the limit: refused, not queued forever.
                resp = srv.raw(b"GET /adv HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", timeout=3)
                self.assertFalse(resp.startswith(b"HTTP/1.1 200"), resp[:80])
            finally:
                for s in held:
                    s.close()
            self.assertTrue(tlib.eventually(lambda: srv.get("/adv").status == 200))


if __name__ == "__main__":
    tlib.main()
