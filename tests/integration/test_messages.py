"""Error messages and hints of the command-line programs (issue 13): each
says what happened and what to do, and names what it is about (the device,
the URL, the variable, the limit)."""

import json
import os
import shutil
import signal
import subprocess
import time
import sys
import tempfile
import threading
import http.server

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402

from tlib import PASSPHRASE, run, tether  # noqa: E402

NOBODY = 65534


def as_nobody(*args, **kw):
    return run("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args, **kw)


def make_image(path):
    with open(path, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
        "--pbkdf-force-iterations", "1000", "--key-file", "-", path, input=PASSPHRASE, check=True)
    return path


def last_line(r):
    """tether's own line: libcryptsetup may log one of its own before it."""
    text = r.stderr.decode() if isinstance(r.stderr, bytes) else r.stderr
    return text.strip().splitlines()[-1] if text.strip() else ""


class Devices(tlib.unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-msgs-")
        os.chmod(self.tmp.name, 0o755)

    def tearDown(self):
        self.tmp.cleanup()

    def test_missing_or_unreadable_device_says_so(self):
        missing = os.path.join(self.tmp.name, "missing")
        for cmd in (["list", "-d", missing], ["unlock", "-d", missing], ["report", "-d", missing, "-s", "1"],
                    ["unlock", "-t", "-1", "-d", missing]):
            with self.subTest(cmd=cmd):
                r = tether("luks", *cmd)
                self.assertEqual(r.returncode, 1)
                msg = last_line(r)
                self.assertIn(f"{missing}: no such device or file", msg)
                self.assertNotIn("Block device required", msg)
                self.assertNotIn("not a LUKS", msg)
        img = make_image(os.path.join(self.tmp.name, "img"))
        os.chmod(img, 0o600)
        r = as_nobody(tlib.TETHER, "luks", "list", "-d", img)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{img}: permission denied (run as root?)", last_line(r))
        self.assertNotIn("Block device required", r.stderr.decode())
        # A directory on the way that may not be searched.
        os.chmod(self.tmp.name, 0o700)
        r = as_nobody(tlib.TETHER, "luks", "list", "-d", img)
        self.assertEqual(r.returncode, 1)
        self.assertIn("permission denied", last_line(r))
        self.assertIn("run as root?", last_line(r))
        os.chmod(self.tmp.name, 0o755)
        r = tether("luks", "list", "-d", self.tmp.name)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{self.tmp.name} is a directory", last_line(r))
        # Still distinct: a readable file that is not LUKS.
        plain = os.path.join(self.tmp.name, "plain")
        with open(plain, "wb") as f:
            f.truncate(1 << 20)
        for cmd in (["list", "-d", plain], ["unlock", "-d", plain]):
            r = tether("luks", *cmd)
            self.assertEqual(r.returncode, 1)
            self.assertEqual(last_line(r), f"tether luks {cmd[0]}: {plain} is not a LUKS device")


class NotTang(http.server.BaseHTTPRequestHandler):
    """A web server that is not tang: an HTML page at /adv/, 404 elsewhere."""

    def do_GET(self):
        if self.path == "/adv/":
            body, status = b"<html><body>It works!</body></html>\n", 200
        else:
            body, status = b"<html><body>Not Found</body></html>\n", 404
        self.send_response(status)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


class Servers(tlib.unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = tlib.Tetherd(args=["-q"])
        cls.url = f"http://127.0.0.1:{cls.srv.port}"
        cls.web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotTang)
        cls.web_url = f"http://127.0.0.1:{cls.web.server_address[1]}"
        threading.Thread(target=cls.web.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.web.shutdown()
        cls.web.server_close()
        cls.srv.close()

    def encrypt(self, cfg):
        r = tether("encrypt", "tang", json.dumps(cfg), "-y", input=b"secret")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout, b"")
        msg = r.stderr.decode()
        self.assertEqual(msg.count("\n"), 1, msg)
        return msg

    def sig_thp(self, keydir, hidden=False):
        return tlib.thumbprint(tlib.key_of(keydir, "sig", hidden=hidden))

    @staticmethod
    def advertised(srv):
        keys = tlib.adv_payload(srv.get("/adv").json())["keys"]
        return [tlib.thumbprint(k) for k in keys if "verify" in k.get("key_ops", [])]

    def test_rotated_signing_key_as_thp(self):
        # Clevis refuses a thp that is not among the advertised signing keys
        # ("did not sign the advertisement"), though tang serves /adv/{thp}
        # for a rotated key: tether refuses it too, saying what it is and
        # which keys to use.
        with tlib.Tetherd(args=["-q"]) as srv:
            url = f"http://127.0.0.1:{srv.port}"
            old = self.sig_thp(srv.keydir)
            tlib.tether_keys("rotate", srv.keydir)
            new = self.sig_thp(srv.keydir)
            # tetherd sees the rotation (inotify), and still serves /adv/{old}.
            self.assertTrue(tlib.eventually(lambda: self.advertised(srv) == [new]), self.advertised(srv))
            self.assertEqual(srv.get(f"/adv/{old}").status, 200)
            msg = self.encrypt({"url": url, "thp": old})
            self.assertNotIn("did not sign", msg)
            self.assertIn(f"signing key {old} is no longer advertised by {url}", msg)
            self.assertIn("rotated away", msg)
            self.assertIn(f"the server advertises {new}", msg)
            self.assertIn("tether-keys show", msg)
            # The current key works.
            r = tether("encrypt", "tang", json.dumps({"url": url, "thp": new}), input=b"secret")
            self.assertEqual(r.returncode, 0, r.stderr)

    def test_unknown_thp_on_a_tang_server(self):
        bogus = tlib.b64u(os.urandom(32))
        msg = self.encrypt({"url": self.url, "thp": bogus})
        self.assertIn(f"tang server {self.url} refused signing key {bogus}", msg)
        self.assertIn("HTTP 404", msg)
        self.assertIn(f"its signing keys: {self.sig_thp(self.srv.keydir)}", msg)

    def test_wrong_url_says_no_tang_server_there(self):
        for url in (self.url + "/tang", self.web_url + "/tang"):
            for cfg in ({"url": url}, {"url": url, "thp": self.sig_thp(self.srv.keydir)}):
                with self.subTest(cfg=cfg):
                    msg = self.encrypt(cfg)
                    self.assertIn(f"{url}/adv/ answered HTTP 404: there is no tang server at that URL; check the URL",
                                  msg)
                    self.assertNotIn("no signing key", msg)
        # A web server answering /adv/ with a page.
        for cfg in ({"url": self.web_url}, {"url": self.web_url, "thp": self.sig_thp(self.srv.keydir)}):
            with self.subTest(cfg=cfg):
                msg = self.encrypt(cfg)
                self.assertIn(f"{self.web_url}/adv/ did not answer with an advertisement", msg)
                self.assertIn("is there a tang server at that URL? check the URL", msg)
                self.assertNotIn("no signing key", msg)
        r = tlib.tether_keys("show", "--url", self.url + "/tang", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("there is no tang server at that URL", r.stderr)

    def test_https_to_an_http_server(self):
        for url in (self.url, self.web_url):
            with self.subTest(url=url):
                msg = self.encrypt({"url": url.replace("http://", "https://")})
                # How a plain HTTP server answers a ClientHello (an HTTP 400,
                # or closing first) decides how OpenSSL words it; either way
                # the message says what to try.
                self.assertIn("TLS handshake failed", msg)
                self.assertRegex(msg, r"(does not speak TLS|check that the server speaks TLS) on that port")
                self.assertIn("try http://", msg)
                self.assertNotIn("SSL connect error", msg)


class Luks(tlib.ServerCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-msgs-")
        self.img = make_image(os.path.join(self.tmp.name, "img"))
        self.keyfile = os.path.join(self.tmp.name, "pass")
        with open(self.keyfile, "wb") as f:
            f.write(PASSPHRASE)

    def tearDown(self):
        self.tmp.cleanup()

    def bind(self, pin="tang", cfg=None, keyfile=None):
        r = tether("luks", "bind", "-y", "-d", self.img, "-k", keyfile or self.keyfile, pin, cfg or self.cfg)
        return r

    def test_edit_with_another_pins_configuration(self):
        self.assertEqual(self.bind().returncode, 0)
        sss = json.dumps({"t": 1, "pins": {"tang": [{"url": self.url}]}})
        self.assertEqual(self.bind(pin="sss", cfg=sss).returncode, 0, "slot 2")
        listed = tether("luks", "list", "-d", self.img).stdout
        for slot, cfg, has, given in (("1", sss, "tang", "sss"), ("2", self.cfg, "sss", "tang")):
            with self.subTest(slot=slot):
                r = tether("luks", "edit", "-y", "-d", self.img, "-s", slot, "-c", cfg)
                self.assertEqual(r.returncode, 1)
                msg = r.stderr.decode()
                self.assertNotIn("has no", msg)
                self.assertIn(f"{self.img} slot {slot} is bound with the {has} pin, but the configuration given is for the "
                              f"{given} pin", msg)
                self.assertIn(f"give a {has} configuration (tether luks list -d {self.img} -s {slot}", msg)
                self.assertIn(f"tether luks bind -d {self.img} {given} CONFIG) and then unbind slot {slot}", msg)
        self.assertEqual(tether("luks", "list", "-d", self.img).stdout, listed)

    def test_report_hint_carries_the_device(self):
        self.assertEqual(self.bind().returncode, 0)
        # The class's other tests bind with -y: the new keys do for them.
        tlib.tether_keys("rotate", self.srv.keydir)
        self.assertTrue(tlib.eventually(lambda: b"key rotated" in
                                        tether("luks", "report", "-d", self.img, "-s", "1").stdout))
        r = tether("luks", "report", "-d", self.img, "-s", "1")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(f"run tether luks regen -d {self.img} -s 1\n", r.stderr.decode())
        r = tether("luks", "report", "-q", "-d", self.img, "-s", "1")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr, b"")

    def test_list_hint_carries_the_device(self):
        # An orphan token: its cryptsetup command names the device.
        self.assertEqual(self.bind().returncode, 0)
        run("cryptsetup", "luksKillSlot", "--batch-mode", self.img, "1", check=True)
        r = tether("luks", "list", "-d", self.img)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"remove it with cryptsetup token remove --token-id 0 {self.img}\n", r.stderr.decode())

    def test_key_file_with_a_trailing_newline(self):
        nl = os.path.join(self.tmp.name, "pass-nl")
        with open(nl, "wb") as f:
            f.write(PASSPHRASE + b"\n")
        before = tlib.luks_meta(self.img)
        r = self.bind(keyfile=nl)
        self.assertEqual(r.returncode, 1)
        msg = r.stderr.decode()
        self.assertIn(f"{self.img}: no keyslot opens with that passphrase; the key file {nl} ends with a newline", msg)
        self.assertIn(f"truncate -s -1 {nl}", msg)
        self.assertEqual(tlib.luks_meta(self.img), before)
        # A wrong passphrase without one: no such hint.
        wrong = os.path.join(self.tmp.name, "wrong")
        with open(wrong, "wb") as f:
            f.write(b"wrong")
        r = self.bind(keyfile=wrong)
        self.assertEqual(r.returncode, 1)
        self.assertNotIn("newline", r.stderr.decode())
        self.assertIn("no keyslot opens with that passphrase", r.stderr.decode())
        # From standard input the line end is not part of it (as cryptsetup).
        r = tether("luks", "bind", "-y", "-d", self.img, "-k", "-", "tang", self.cfg, input=PASSPHRASE + b"\n")
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_passphrase_mistyped_at_the_terminal_may_be_typed_again(self):
        prompt = f"Enter existing LUKS password for {self.img}: ".encode()
        args = ["luks", "bind", "-y", "-d", self.img, "tang", self.cfg]
        out, rc = tlib.on_terminal(args, [(prompt, b"wrong\n"), (prompt, PASSPHRASE + b"\n")])
        self.assertEqual(rc, 0, out)
        self.assertEqual(out.count("Enter existing LUKS password"), 2, out)
        self.assertIn("no keyslot opens with that passphrase; try again", out)
        self.assertEqual(tether("luks", "list", "-d", self.img).stdout.decode(), f"1: tang '{self.cfg}'\n")
        # Three tries, as cryptsetup gives; then it fails.
        before = tlib.luks_meta(self.img)
        out, rc = tlib.on_terminal(args, [(prompt, b"wrong1\n"), (prompt, b"wrong2\n"), (prompt, b"wrong3\n")])
        self.assertEqual(rc, 1, out)
        self.assertEqual(out.count("Enter existing LUKS password"), 3, out)
        self.assertEqual(out.count("try again"), 2, out)
        self.assertTrue(out.rstrip().endswith("no keyslot opens with that passphrase"), out)
        self.assertEqual(tlib.luks_meta(self.img), before)
        # A key file is not typed: one try.
        wrong = os.path.join(self.tmp.name, "wrong")
        with open(wrong, "wb") as f:
            f.write(b"wrong")
        out, rc = tlib.on_terminal(["luks", "bind", "-y", "-d", self.img, "-k", wrong, "tang", self.cfg])
        self.assertEqual(rc, 1, out)
        self.assertNotIn("try again", out)
        self.assertEqual(tlib.luks_meta(self.img), before)


    def test_ctrl_c_at_the_prompt_gives_the_terminal_its_echo_back(self):
        import pty
        import select
        import termios
        pid, fd = pty.fork()
        if pid == 0:
            os.execv(tlib.TETHER, [tlib.TETHER, "luks", "bind", "-y", "-d", self.img, "tang", self.cfg])
        try:
            out, deadline = b"", time.monotonic() + 30
            while b"LUKS password for" not in out and time.monotonic() < deadline:
                if select.select([fd], [], [], 0.5)[0]:
                    out += os.read(fd, 4096)
            self.assertIn(b"LUKS password for", out)
            self.assertFalse(termios.tcgetattr(fd)[3] & termios.ECHO, "echo is on at the prompt")
            os.write(fd, b"\x03")   # Ctrl-C: SIGINT to the terminal's foreground group
            _, status = os.waitpid(pid, 0)
            self.assertEqual(os.waitstatus_to_exitcode(status), -signal.SIGINT)
            self.assertTrue(termios.tcgetattr(fd)[3] & termios.ECHO, "Ctrl-C left the terminal without echo")
        finally:
            os.close(fd)

class Decrypt(tlib.unittest.TestCase):
    def test_standard_input_on_a_terminal_gets_a_hint_and_is_read(self):
        jwe = tether("encrypt", "null", "{}", input=b"secret").stdout
        self.assertTrue(jwe)
        out, rc = tlib.on_terminal(["decrypt"], [(b"Ctrl-D", jwe + b"\n\x04")])
        self.assertEqual(rc, 0, out)
        self.assertIn("tether decrypt: reading a JWE from standard input (the terminal); end it with Ctrl-D", out)
        self.assertIn("secret", out)
        # Not from a pipe.
        r = tether("decrypt", input=jwe)
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, b"secret", b""))


class Environment(tlib.unittest.TestCase):
    def test_tether_timeout_must_be_positive(self):
        env = dict(os.environ, TETHER_TIMEOUT="0")
        for prog, args in ((tlib.TETHER, ["encrypt", "null", "{}"]), (tlib.TETHER, ["decrypt"]),
                           (os.path.join(os.path.dirname(tlib.TETHER), "tether-askpass"), []),
                           (tlib.TETHER_KEYS, ["show", "--url", "http://127.0.0.1:9"])):
            with self.subTest(prog=prog):
                r = run(prog, *args, input=b"", env=env)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn('TETHER_TIMEOUT must be a positive number of seconds, at most 3600 (got "0")',
                              r.stderr.decode())


class KeysCli(tlib.unittest.TestCase):
    def test_show_url_without_a_url_is_a_usage_error(self):
        for args, said in ((["--url"], "tether-keys show: option '--url' requires an argument"),
                           (["--url="], "tether-keys show: --url needs a URL: tether-keys show --url "
                                        "http://SERVER[:PORT]")):
            with self.subTest(args=args):
                r = tlib.tether_keys("show", *args, check=False)
                self.assertEqual(r.returncode, 2)
                self.assertEqual(r.stderr.splitlines()[0], said)


class Tetherd(tlib.unittest.TestCase):
    def test_startup_line_names_every_socket_also_socket_activated(self):
        if not shutil.which("systemd-socket-activate"):
            self.skipTest("no systemd-socket-activate")
        with tempfile.TemporaryDirectory(prefix="tether-msgs-") as tmp:
            keydir = os.path.join(tmp, "keys")
            os.mkdir(keydir)
            tlib.tether_gen(keydir)
            ports = [tlib.free_port(), tlib.free_port()]
            logpath = os.path.join(tmp, "log")
            with open(logpath, "wb") as log:
                proc = subprocess.Popen(["systemd-socket-activate", *(f"-l127.0.0.1:{p}" for p in ports),
                                         tlib.TETHERD, keydir], stdout=log, stderr=log, start_new_session=True)
            try:
                # It starts tetherd at the first connection.
                tlib.wait_http(ports[1], "/adv", status=200)
                # Its threads may answer before the line is written.
                deadline, line = time.monotonic() + 10, []
                while not line and time.monotonic() < deadline:
                    with open(logpath) as f:
                        line = [l for l in f.read().splitlines() if l.startswith("tetherd: serving")]
                    time.sleep(0.05)
                self.assertEqual(len(line), 1, line)
                self.assertIn(f" on 127.0.0.1:{ports[0]}, 127.0.0.1:{ports[1]}, ", line[0])
            finally:
                tlib.stop_process(proc)


if __name__ == "__main__":
    tlib.main()
