"""tether-keys: gen, rotate, show (directory and live server), list, and its errors."""

import os
import stat
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402
from tlib import thumbprint  # noqa: E402


class KeysCli(tlib.unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-keys-")
        self.dir = os.path.join(self.tmp.name, "keys")
        os.mkdir(self.dir)

    def tearDown(self):
        self.tmp.cleanup()

    def run_keys(self, *args):
        return subprocess.run([tlib.TETHER_KEYS, *args], capture_output=True, text=True, timeout=60)

    def test_gen_default_names_modes_and_curves(self):
        r = self.run_keys("gen", self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        keys = tlib.load_keys(self.dir)
        self.assertEqual(sorted(k["role"] for k in keys), ["exc", "sig"])
        for k in keys:
            jwk = k["jwk"]
            self.assertEqual(k["file"], thumbprint(jwk) + ".jwk")
            self.assertEqual((jwk["kty"], jwk["crv"]), ("EC", "P-521"))
            self.assertEqual(jwk["alg"], "ES512" if k["role"] == "sig" else "ECMR")
            self.assertEqual(len(tlib.unb64u(jwk["d"])), 66)
            self.assertEqual(stat.S_IMODE(os.stat(os.path.join(self.dir, k["file"])).st_mode), 0o440)
            # The public point is the private scalar times G: the file is a real key pair.
            d = tlib.b64u_to_int(jwk["d"])
            self.assertEqual(tlib.mul(d, (tlib.GX, tlib.GY)),
                             (tlib.b64u_to_int(jwk["x"]), tlib.b64u_to_int(jwk["y"])))

    def test_gen_explicit_names_never_overwrite(self):
        self.assertEqual(self.run_keys("gen", self.dir, "sig", "exc").returncode, 0)
        self.assertEqual(sorted(os.listdir(self.dir)), ["exc.jwk", "sig.jwk"])
        with open(os.path.join(self.dir, "sig.jwk")) as f:
            before = f.read()
        r = self.run_keys("gen", self.dir, "sig", "other")
        self.assertEqual(r.returncode, 1)
        self.assertIn("sig", r.stderr)
        with open(os.path.join(self.dir, "sig.jwk")) as f:
            self.assertEqual(f.read(), before)
        # Nothing half-written: no "other.jwk" without its partner, no temporary files.
        self.assertEqual(sorted(os.listdir(self.dir)), ["exc.jwk", "sig.jwk"])

    def test_rotate(self):
        self.run_keys("gen", self.dir)
        old = sorted(thumbprint(k["jwk"]) for k in tlib.load_keys(self.dir))
        r = self.run_keys("rotate", self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        keys = tlib.load_keys(self.dir)
        self.assertEqual(sorted(thumbprint(k["jwk"]) for k in keys if k["hidden"]), old)
        advertised = [k for k in keys if not k["hidden"]]
        self.assertEqual(sorted(k["role"] for k in advertised), ["exc", "sig"])
        self.assertFalse(set(old) & {thumbprint(k["jwk"]) for k in advertised})

    def snapshot(self):
        """{inode: (name, content)} of every file of the key directory."""
        out = {}
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            with open(path, "rb") as f:
                out[os.stat(path).st_ino] = (name, f.read())
        return out

    def test_rotate_with_rotated_keys_of_the_same_names(self):
        # X.jwk advertised, and .X.jwk already holding an older, rotated key.
        self.assertEqual(self.run_keys("gen", self.dir, "sig", "exc").returncode, 0)
        older = os.path.join(self.tmp.name, "older")
        os.mkdir(older)
        self.assertEqual(self.run_keys("gen", older, ".sig", ".exc").returncode, 0)
        for name in (".sig.jwk", ".exc.jwk"):
            os.rename(os.path.join(older, name), os.path.join(self.dir, name))
        before = self.snapshot()
        old_exc = tlib.key_of(self.dir, "exc")

        r = self.run_keys("rotate", self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        after = self.snapshot()
        # No key overwritten: every file is still there, same inode and bytes;
        # the advertised ones now under hidden names.
        for ino, (name, content) in before.items():
            self.assertIn(ino, after, f"{name} is gone")
            self.assertEqual(after[ino][1], content, f"{name} was changed")
            self.assertTrue(after[ino][0].startswith("."), f"{name} is still advertised as {after[ino][0]}")
        for name in (".sig.jwk", ".exc.jwk"):
            self.assertEqual(after[os.stat(os.path.join(self.dir, name)).st_ino][1],
                             before[os.stat(os.path.join(self.dir, name)).st_ino][1])
        advertised = [k for k in tlib.load_keys(self.dir) if not k["hidden"]]
        self.assertEqual(sorted(k["role"] for k in advertised), ["exc", "sig"])
        self.assertEqual(len(after), len(before) + 2)
        # The thumbprint to pin is printed, and it is what tetherd serves.
        new_sig = tlib.key_of(self.dir, "sig")
        self.assertIn(f"thumbprint to pin (thp): {thumbprint(new_sig)}\n", r.stdout)
        with tlib.Tetherd(self.dir) as srv:
            show = self.run_keys("show", "--url", f"http://127.0.0.1:{srv.port}")
            self.assertEqual(show.stdout, thumbprint(new_sig) + "\n", show.stderr)
            # Clients of the keys just hidden still recover.
            x, y = tlib.random_point()
            self.assertEqual(srv.post("/rec/" + thumbprint(old_exc), tlib.ecmr_jwk(x, y)).status, 200)

    def test_rotate_undone_when_a_key_cannot_be_hidden(self):
        # An advertised file whose hidden name would be longer than NAME_MAX.
        long_name = "k" * 251 + ".jwk"
        self.assertEqual(self.run_keys("gen", self.dir, "sig", "exc").returncode, 0)
        self.assertEqual(self.run_keys("gen", self.dir, long_name, "exc2").returncode, 0)
        before = self.snapshot()
        r = self.run_keys("rotate", self.dir)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn(long_name, r.stderr)
        self.assertIn("nothing changed", r.stderr)
        self.assertEqual(len(r.stderr.strip().splitlines()), 1, r.stderr)
        # The directory is as it was: same names, same inodes, same bytes.
        self.assertEqual(self.snapshot(), before)

    def test_show_and_list(self):
        self.run_keys("gen", self.dir)
        sig = tlib.key_of(self.dir, "sig")
        r = self.run_keys("show", self.dir)
        self.assertEqual((r.returncode, r.stdout), (0, thumbprint(sig) + "\n"))
        self.run_keys("rotate", self.dir)
        new_sig = tlib.key_of(self.dir, "sig")
        self.assertEqual(self.run_keys("show", self.dir).stdout, thumbprint(new_sig) + "\n")
        out = self.run_keys("list", self.dir).stdout
        for k in tlib.load_keys(self.dir):
            line = [ln for ln in out.splitlines() if ln.endswith(" " + k["file"])]
            self.assertEqual(len(line), 1, (k["file"], out))
            fields = line[0].split()
            self.assertEqual(fields[0], "rotated" if k["hidden"] else "advertised")
            self.assertEqual(fields[1], "signing" if k["role"] == "sig" else "exchange")
            self.assertEqual(fields[2:4], ["P-521", thumbprint(k["jwk"])])

    def test_show_url_verifies_live_server(self):
        with tlib.Tetherd() as srv:
            r = self.run_keys("show", "--url", f"http://127.0.0.1:{srv.port}")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, thumbprint(tlib.key_of(srv.keydir, "sig")) + "\n")
        # Nothing listening: a clear error naming the URL.
        port = tlib.free_port()
        r = self.run_keys("show", "--url", f"http://127.0.0.1:{port}")
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"127.0.0.1:{port}", r.stderr)

    def test_show_url_rejects_tampered_advertisement(self):
        # A server whose advertisement payload was swapped: signatures no longer match.
        with tlib.Tetherd() as good, tlib.Tetherd() as other:
            adv = good.get("/adv").json()
            adv["payload"] = other.get("/adv").json()["payload"]
            path = os.path.join(self.tmp.name, "adv")
            os.mkdir(path)
            with open(os.path.join(path, "adv"), "w") as f:
                tlib.json.dump(adv, f)
            port = tlib.free_port()
            srv = subprocess.Popen([sys.executable, "-m", "http.server", "-b", "127.0.0.1", "-d", path, str(port)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                tlib.eventually(lambda: self._answers(port))
                r = self.run_keys("show", "--url", f"http://127.0.0.1:{port}")
                self.assertEqual(r.returncode, 1, r.stdout)
                self.assertTrue(r.stderr.strip())
                self.assertEqual(r.stdout, "")
            finally:
                srv.terminate()
                srv.wait()

    @staticmethod
    def _answers(port):
        try:
            return tlib.get(port, "/adv").status == 200
        except OSError:
            return False

    def test_foreign_files_warned_by_name(self):
        self.run_keys("gen", self.dir)
        for name, content in (("junk.jwk", "}{"), ("empty.jwk", ""), ("rsa.jwk", '{"kty":"RSA","n":"AQAB","e":"AQAB"}')):
            with open(os.path.join(self.dir, name), "w") as f:
                f.write(content)
        r = self.run_keys("list", self.dir)
        self.assertEqual(r.returncode, 0)
        for name in ("junk.jwk", "empty.jwk", "rsa.jwk"):
            self.assertIn(name, r.stderr)
            self.assertNotIn(name, r.stdout)

    def test_file_names_in_warnings_are_escaped(self):
        """Anyone who may write the directory names its files: a name with
        terminal escapes reaches stderr escaped, as every message is."""
        self.run_keys("gen", self.dir)
        with open(os.path.join(self.dir, "bad\x1b[31m\nname.jwk"), "w") as f:
            f.write("not json")
        r = self.run_keys("list", self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("/bad\\x1b[31m\\x0aname.jwk is not valid JSON, skipped\n", r.stderr)
        self.assertNotIn("\x1b", r.stderr)

    def test_file_names_in_list_and_rotate_are_escaped(self):
        """The names list and rotate print come from the directory too: a
        valid key in a file whose name holds a terminal escape is shown
        escaped, as in the warnings."""
        self.run_keys("gen", self.dir, "sig", "exc")
        os.rename(os.path.join(self.dir, "sig.jwk"), os.path.join(self.dir, "\x1b[31mX.jwk"))
        r = self.run_keys("list", self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(" \\x1b[31mX.jwk\n", r.stdout)
        self.assertNotIn("\x1b", r.stdout)
        r = self.run_keys("rotate", self.dir)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("/\\x1b[31mX.jwk -> .\\x1b[31mX.jwk\n", r.stdout)
        self.assertNotIn("\x1b", r.stdout)

    def test_usage_errors(self):
        for args in ([], ["bogus"], ["gen"], ["show"], ["rotate"], ["gen", self.dir, "onlyone"]):
            r = self.run_keys(*args)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertTrue(r.stderr.strip(), args)
        r = self.run_keys("gen", os.path.join(self.tmp.name, "missing"))
        self.assertEqual(r.returncode, 1)
        self.assertIn("missing", r.stderr)


if __name__ == "__main__":
    tlib.main()
