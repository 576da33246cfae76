"""The usage ledger: tetherd --ledger records every /rec, `tether-keys usage`
shows it, the ledger survives SIGKILL and a torn tail, and `tether-keys prune`
deletes exactly the rotated keys nobody used (and never breaks a binding)."""

import json
import re
import os
import signal
import stat
import struct
import sys
import tempfile
import time
import zlib

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402


def read_segment(path):
    """The records of a segment, decoded here (independently of the C code):
    [(time_ms, outcome, key, host, address)], and the bytes after the last
    valid one."""
    with open(path, "rb") as f:
        data = f.read()
    out, pos = [], 0
    while pos + 8 <= len(data):
        n, crc = struct.unpack_from("<II", data, pos)
        payload = data[pos + 8:pos + 8 + n]
        if n > 1024 or len(payload) < n or zlib.crc32(payload) != crc or payload[0] != 1:
            break
        t, = struct.unpack_from("<q", payload, 1)
        fields, off = [], 9
        for _ in range(4):
            ln = payload[off]
            fields.append(payload[off + 1:off + 1 + ln].decode())
            off += 1 + ln
        out.append((t, *fields))
        pos += 8 + n
    return out, len(data) - pos


def segments(ledger):
    return sorted(n for n in os.listdir(ledger) if n.startswith("seg-") and n.endswith(".log"))


class Ledger(tlib.unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-ledger-")
        self.keydir = os.path.join(self.tmp.name, "keys")
        self.ledger = os.path.join(self.tmp.name, "ledger")
        os.mkdir(self.keydir)
        tlib.tether_keys("gen", self.keydir)
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            s.close()
        self.tmp.cleanup()

    def start(self, *args):
        srv = tlib.Tetherd(keydir=self.keydir, args=("--ledger", self.ledger, *args))
        self.servers.append(srv)
        return srv

    def usage(self):
        r = tlib.tether_keys("usage", self.keydir, "--ledger", self.ledger, "--json")
        return json.loads(r.stdout)

    def key(self, report, thp):
        found = [k for k in report["keys"] if k["thp"] == thp]
        self.assertEqual(len(found), 1, report)
        return found[0]

    def recover(self, srv, kid, n=1):
        for _ in range(n):
            x, y = tlib.random_point()
            r = srv.post(f"/rec/{kid}", tlib.ecmr_jwk(x, y))
            self.assertEqual(r.status, 200, r)

    def wait_recoveries(self, thp, n):
        got = tlib.eventually(lambda: self.key(self.usage(), thp)["recoveries"] >= n, timeout=10)
        self.assertTrue(got, self.usage())

    def test_usage_counts_recoveries_refusals_and_addresses(self):
        srv = self.start()
        st = os.stat(self.ledger)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o700)
        exc = tlib.thumbprint(tlib.key_of(self.keydir, "exc"))
        sig = tlib.thumbprint(tlib.key_of(self.keydir, "sig"))
        t0 = int(time.time() * 1000)
        self.recover(srv, exc, 3)
        # The S1 kid of old clevis bindings counts under the key's S256 thumbprint.
        self.recover(srv, tlib.thumbprint(tlib.key_of(self.keydir, "exc"), "S1"))
        x, y = tlib.random_point()
        self.assertEqual(srv.post(f"/rec/{sig}", tlib.ecmr_jwk(x, y)).status, 403)
        self.assertEqual(srv.post("/rec/no-such-key", tlib.ecmr_jwk(x, y)).status, 404)
        self.assertEqual(srv.get("/adv").status, 200)    # not a /rec: not recorded
        t1 = int(time.time() * 1000) + 1
        # The writer appends every 100 ms or so.
        self.assertTrue(tlib.eventually(lambda: self.usage()["ledger"]["records"] >= 6, timeout=10), self.usage())
        report = self.usage()
        k = self.key(report, exc)
        self.assertEqual((k["state"], k["role"], k["recoveries"], k["last_addresses"]),
                         ("advertised", "exchange", 4, ["127.0.0.1"]), k)
        self.assertTrue(t0 <= k["first_recovery_ms"] <= k["last_recovery_ms"] <= t1, (t0, k, t1))
        self.assertIn("host", k)    # the column per-host keys fill
        self.assertIsNone(k["rotated"])
        s = self.key(report, sig)
        self.assertEqual((s["recoveries"], s["refused"], s["last_recovery"]), (0, {"not_exchange": 1}, None), s)
        self.assertEqual(report["unknown_key"], {"unknown_key": 1})
        self.assertEqual(report["ledger"]["records"], 6)
        # The text form names the same.
        text = tlib.tether_keys("usage", self.keydir, "--ledger", self.ledger).stdout
        self.assertRegex(text, rf"advertised\s+exchange\s+-\s+{exc}\s+4\s")
        self.assertIn("1 request(s) named a key this server does not have", text)

    def test_ledger_inside_key_directory_refused(self):
        inside = os.path.join(self.keydir, "ledger")
        r = tlib.run(tlib.TETHERD, "-a", "127.0.0.1", "-p", str(tlib.free_port()), "--ledger", inside, self.keydir,
                     text=True, timeout=30)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("is inside the key directory", r.stderr)
        self.assertFalse(os.path.exists(inside))

    def test_usage_without_ledger_says_so(self):
        os.mkdir(self.ledger)
        r = tlib.tether_keys("usage", self.keydir, "--ledger", self.ledger, check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no ledger here", r.stderr)
        self.assertIn("--ledger", r.stderr)
        # A directory that does not exist: which one creates it.
        r = tlib.tether_keys("usage", self.keydir, "--ledger", self.ledger + ".typo", check=False)
        self.assertEqual(r.returncode, 1)
        self.assertIn("No such file or directory (tetherd --ledger DIR creates it", r.stderr)

    def test_survives_sigkill_and_a_torn_tail(self):
        srv = self.start()
        exc = tlib.thumbprint(tlib.key_of(self.keydir, "exc"))
        n = 20
        self.recover(srv, exc, n)
        time.sleep(1.5)
        srv.proc.send_signal(signal.SIGKILL)
        srv.proc.wait()
        self.assertGreaterEqual(self.key(self.usage(), exc)["recoveries"], n)
        # A crash in the middle of a write: half a record, then garbage.
        seg = os.path.join(self.ledger, segments(self.ledger)[-1])
        records, tail = read_segment(seg)
        self.assertEqual((len(records), tail), (n, 0))
        self.assertEqual({r[1:] for r in records}, {("recovered", exc, "", "127.0.0.1")})
        with open(seg, "ab") as f:
            f.write(struct.pack("<II", 60, 12345) + b"\x01" + b"x" * 20)
        self.assertEqual(self.key(self.usage(), exc)["recoveries"], n)   # the torn tail is ignored
        srv = self.start()
        self.assertIn("torn or corrupt", srv.logs())
        self.recover(srv, exc, 5)
        self.assertEqual(srv.stop(), 0)
        # Nothing after the tail is lost: it was cut off before appending.
        records, tail = read_segment(os.path.join(self.ledger, segments(self.ledger)[-1]))
        self.assertEqual(tail, 0)
        self.assertEqual(self.key(self.usage(), exc)["recoveries"], n + 5)

    def test_snapshot_at_shutdown(self):
        srv = self.start()
        exc = tlib.thumbprint(tlib.key_of(self.keydir, "exc"))
        self.recover(srv, exc, 4)
        self.assertEqual(srv.stop(), 0)
        seg = os.path.join(self.ledger, segments(self.ledger)[-1])
        records, _ = read_segment(seg)
        self.assertEqual(len(records), 4)
        # The snapshot counted them at shutdown, up to the segment's end.
        with open(os.path.join(self.ledger, "snapshot.json")) as f:
            snap = json.load(f)
        self.assertEqual(snap["keys"][exc]["recoveries"], 4)
        self.assertEqual(snap["offset"], os.path.getsize(seg))

    def luks_image(self, name):
        img = os.path.join(self.tmp.name, name)
        with open(img, "wb") as f:
            f.truncate(32 * 1024 * 1024)
        r = tlib.run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
                     "--pbkdf-force-iterations", "1000", "--key-file", "-", img, input=tlib.PASSPHRASE)
        self.assertEqual(r.returncode, 0, r.stderr)
        return img

    def unlocks(self, img):
        """The binding's key recovered from the server opens its keyslot
        (check only: this kernel has no device-mapper)."""
        return tlib.tether("luks", "unlock", "-d", img, "-t", "-1", env=tlib.no_proxy_env())

    def test_prune(self):
        window = 5
        srv = self.start()
        url = f"http://127.0.0.1:{srv.port}"
        keyfile = os.path.join(self.tmp.name, "pass")
        with open(keyfile, "wb") as f:
            f.write(tlib.PASSPHRASE)
        k0 = {k["role"]: tlib.thumbprint(k["jwk"]) for k in tlib.load_keys(self.keydir)}
        # A volume bound to k0 by tether, one to k2 by Debian's clevis.
        img0 = self.luks_image("img0")
        r = tlib.tether("luks", "bind", "-y", "-d", img0, "-k", keyfile, "tang", json.dumps({"url": url}))
        self.assertEqual(r.returncode, 0, r.stderr)
        jwe0 = tlib.tether("encrypt", "tang", json.dumps({"url": url}), "-y", input=b"bound to k0")
        self.assertEqual(jwe0.returncode, 0, jwe0.stderr)
        self.assertEqual(tlib.jwe_header(jwe0.stdout)["kid"], k0["exc"])
        tlib.tether_keys("rotate", self.keydir)
        k1 = {k["role"]: tlib.thumbprint(k["jwk"]) for k in tlib.load_keys(self.keydir) if not k["hidden"]}
        time.sleep(1.5)     # two rotations, told apart by their times
        tlib.tether_keys("rotate", self.keydir)
        rotated_at = time.time()
        k2 = {k["role"]: tlib.thumbprint(k["jwk"]) for k in tlib.load_keys(self.keydir) if not k["hidden"]}
        img2 = self.luks_image("img2")
        r = tlib.run("clevis", "luks", "bind", "-y", "-d", img2, "-k", keyfile, "tang", json.dumps({"url": url}))
        self.assertEqual(r.returncode, 0, r.stderr)
        jwe2 = tlib.tether("encrypt", "tang", json.dumps({"url": url}), "-y", input=b"bound to k2")
        self.assertEqual(jwe2.returncode, 0, jwe2.stderr)
        # Age everything honestly: the ledger, both rotations.
        time.sleep(max(0, rotated_at + window + 0.3 - time.time()))
        # The k0 volume unlocks (a recovery with k0, within the window).
        r = self.unlocks(img0)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.wait_recoveries(k0["exc"], 1)

        def files():
            return {k["file"]: (k["hidden"], tlib.thumbprint(k["jwk"])) for k in tlib.load_keys(self.keydir)}
        before = files()
        self.assertEqual(len(before), 6)

        # A window longer than the ledger's life: refused, saying why.
        r = tlib.tether_keys("prune", self.keydir, "--ledger", self.ledger, "--unused-for", "1h", check=False)
        self.assertEqual(r.returncode, 1, r.stdout)
        self.assertIn("cannot know about recoveries before it existed", r.stderr)

        args = ("prune", self.keydir, "--ledger", self.ledger, "--unused-for", f"{window}s")
        dry = tlib.tether_keys(*args)
        self.assertEqual(files(), before, dry.stdout)
        would = set(re.findall(r"^would delete: \S+ \(\w+ ([\w-]+)\)", dry.stdout, re.M))
        self.assertEqual(would, {k1["exc"], k1["sig"]}, dry.stdout)
        self.assertIn("run again with --yes", dry.stdout)

        done = tlib.tether_keys(*args, "--yes")
        after = files()
        gone = {thp for _, thp in before.values()} - {thp for _, thp in after.values()}
        self.assertEqual(gone, {k1["exc"], k1["sig"]}, done.stdout)
        # Never an advertised key; the used rotated key and its signing key stay.
        self.assertEqual({thp for hidden, thp in after.values() if not hidden}, set(k2.values()))
        self.assertEqual({thp for hidden, thp in after.values() if hidden}, set(k0.values()))
        self.assertIn("used", done.stdout)
        # Every volume and secret bound to a kept key still opens.
        for img in (img0, img2):
            r = self.unlocks(img)
            self.assertEqual(r.returncode, 0, (img, r.stderr))
        for jwe, text in ((jwe0, b"bound to k0"), (jwe2, b"bound to k2")):
            d = tlib.tether("decrypt", input=jwe.stdout)
            self.assertEqual((d.returncode, d.stdout), (0, text), d.stderr)

    def host_exc(self, name, hidden=False):
        return tlib.thumbprint(tlib.key_of(os.path.join(self.keydir, "hosts", name), "exc", hidden))

    def host_row(self, report, name):
        found = [h for h in report["hosts"] if h["host"] == name]
        self.assertEqual(len(found), 1, report["hosts"])
        return found[0]

    def test_usage_per_host(self):
        for name in ("web01", "db01", "idle01", "old01"):
            tlib.tether_keys("host", "add", self.keydir, name)
        tlib.tether_keys("host", "hold", self.keydir, "db01")
        srv = self.start()
        web, db, old = self.host_exc("web01"), self.host_exc("db01"), self.host_exc("old01")
        for _ in range(2):
            x, y = tlib.random_point()
            self.assertEqual(srv.post(f"/h/web01/rec/{web}", tlib.ecmr_jwk(x, y)).status, 200)
        for _ in range(3):      # held: refused, pending until an administrator allows one
            x, y = tlib.random_point()
            self.assertEqual(srv.post(f"/h/db01/rec/{db}", tlib.ecmr_jwk(x, y)).status, 403)
        x, y = tlib.random_point()
        self.assertEqual(srv.post(f"/h/old01/rec/{old}", tlib.ecmr_jwk(x, y)).status, 200)
        self.assertTrue(tlib.eventually(lambda: self.usage()["ledger"]["records"] >= 6, timeout=10), self.usage())
        tlib.tether_keys("host", "allow", self.keydir, "db01")
        tlib.tether_keys("host", "revoke", self.keydir, "old01")
        tlib.tether_keys("host", "delete", self.keydir, "old01")
        report = self.usage()

        k = self.key(report, web)
        self.assertEqual((k["state"], k["role"], k["host"], k["recoveries"], k["last_addresses"], k["file"]),
                         ("advertised", "exchange", "web01", 2, ["127.0.0.1"], f"hosts/web01/{web}.jwk"), k)
        self.assertIsNotNone(k["created"])
        k = self.key(report, db)
        self.assertEqual((k["state"], k["host"], k["recoveries"], k["refused"]),
                         ("advertised", "db01", 0, {"held": 3}), k)
        self.assertEqual(self.key(report, old)["state"], "gone")
        shared = self.key(report, tlib.thumbprint(tlib.key_of(self.keydir, "exc")))
        self.assertIsNone(shared["host"])

        self.assertEqual([h["host"] for h in report["hosts"]], ["db01", "idle01", "old01", "web01"])
        got = {h["host"]: (h["state"], h["allow_tokens"], h["recoveries"], h["refused_total"], h["pending"],
                           h["last_addresses"]) for h in report["hosts"]}
        self.assertEqual(got, {
            "web01": ("active", 0, 2, 0, 0, ["127.0.0.1"]),
            "db01": ("held", 1, 0, 3, 3, []),
            "idle01": ("active", 0, 0, 0, 0, []),     # no record: listed all the same
            "old01": ("gone", 0, 1, 0, 0, ["127.0.0.1"]),
        }, report["hosts"])
        self.assertIsNotNone(self.host_row(report, "web01")["last_recovery"])
        self.assertIsNone(self.host_row(report, "idle01")["last_recovery"])

        # The text form says the same as --json.
        text = tlib.tether_keys("usage", self.keydir, "--ledger", self.ledger).stdout
        self.assertRegex(text, rf"advertised\s+exchange\s+web01\s+{web}\s+2\s")
        self.assertRegex(text, rf"advertised\s+exchange\s+db01\s+{db}\s+0\s")
        rows = {m[0]: m[1:] for m in re.findall(r"^(\S+)\s+(active|held|revoked|gone)\s+(\d+)\s+(\d+)\s+(\S+)\s+"
                                                 r"(\d+)\s+(\d+)\s+(\S+)$", text, re.M)}
        self.assertEqual(set(rows), {h["host"] for h in report["hosts"]}, text)
        for h in report["hosts"]:
            self.assertEqual(rows[h["host"]], (h["state"], str(h["allow_tokens"]), str(h["recoveries"]),
                                               h["last_recovery"] or "-", str(h["refused_total"]),
                                               str(h["pending"]), ",".join(h["last_addresses"]) or "-"), text)

    def test_prune_host_keys(self):
        window = 5
        for name in ("web01", "rev01"):
            tlib.tether_keys("host", "add", self.keydir, name)
        srv = self.start()
        url = f"http://127.0.0.1:{srv.port}/h/web01"
        k0 = self.host_exc("web01")
        jwe0 = tlib.tether("encrypt", "tang", json.dumps({"url": url}), "-y", input=b"bound to k0")
        self.assertEqual(jwe0.returncode, 0, jwe0.stderr)
        self.assertEqual(tlib.jwe_header(jwe0.stdout)["kid"], k0)
        tlib.tether_keys("host", "rotate", self.keydir, "web01")
        tlib.tether_keys("host", "rotate", self.keydir, "rev01")
        k1 = self.host_exc("web01")
        time.sleep(1.5)
        tlib.tether_keys("host", "rotate", self.keydir, "web01")
        rotated_at = time.time()
        k2 = self.host_exc("web01")
        tlib.tether_keys("host", "revoke", self.keydir, "rev01")
        time.sleep(max(0, rotated_at + window + 0.3 - time.time()))
        d = tlib.tether("decrypt", input=jwe0.stdout)
        self.assertEqual((d.returncode, d.stdout), (0, b"bound to k0"), d.stderr)
        self.assertTrue(tlib.eventually(lambda: self.usage()["ledger"]["records"] >= 1, timeout=10), self.usage())

        def files(name):
            return {k["file"]: (k["hidden"], tlib.thumbprint(k["jwk"]))
                    for k in tlib.load_keys(os.path.join(self.keydir, "hosts", name))}
        web_before, rev_before, shared_before = files("web01"), files("rev01"), tlib.load_keys(self.keydir)
        self.assertEqual(len(web_before), 3)
        self.assertEqual(len(rev_before), 2)

        args = ("prune", self.keydir, "--ledger", self.ledger, "--unused-for", f"{window}s")
        dry = tlib.tether_keys(*args)
        self.assertEqual(files("web01"), web_before, dry.stdout)
        would = re.findall(r"^would delete: \S+/hosts/(\S+)/\.\S+ \(exchange ([\w-]+), host (\S+)\)", dry.stdout, re.M)
        self.assertEqual(would, [("web01", k1, "web01")], dry.stdout)
        self.assertRegex(dry.stdout, rf"(?m)^keep: \S+/hosts/web01/\.{k0}\.jwk \(exchange {k0}, host web01\): used ")
        self.assertRegex(dry.stdout, r"(?m)^not judged: \S+/hosts/rev01 .*revoked.*host delete")
        self.assertIn("1 key(s) would be deleted", dry.stdout)

        done = tlib.tether_keys(*args, "--yes")
        after = files("web01")
        self.assertEqual({thp for _, thp in after.values()}, {k0, k2}, done.stdout)
        self.assertEqual({thp for hidden, thp in after.values() if not hidden}, {k2})
        self.assertEqual(files("rev01"), rev_before, done.stdout)
        self.assertEqual(tlib.load_keys(self.keydir), shared_before)
        d = tlib.tether("decrypt", input=jwe0.stdout)
        self.assertEqual((d.returncode, d.stdout), (0, b"bound to k0"), d.stderr)
        # The report says the same: k1 gone from the directory, k0 rotated and used.
        report = self.usage()
        self.assertEqual([k["state"] for k in report["keys"] if k["thp"] == k1], [])
        self.assertEqual((self.key(report, k0)["state"], self.key(report, k0)["host"]), ("rotated", "web01"))

    def test_prune_keeps_signing_keys_host_bindings_may_pin(self):
        """A host's bindings pin the shared signing key with their own
        exchange key: after a shared rotation, the old signing key stays
        while a host key made before that rotation does (regen needs it to
        vouch for the new keys), and goes once none does."""
        window = 3
        tlib.tether_keys("host", "add", self.keydir, "web01")
        srv = self.start()
        sig0 = tlib.thumbprint(tlib.key_of(self.keydir, "sig"))
        exc0 = tlib.thumbprint(tlib.key_of(self.keydir, "exc"))
        jwe = tlib.tether("encrypt", "tang", json.dumps({"url": f"http://127.0.0.1:{srv.port}/h/web01"}), "-y",
                          input=b"web01")
        self.assertEqual(jwe.returncode, 0, jwe.stderr)
        time.sleep(1.1)     # the host key older than the rotation, to the file clock
        tlib.tether_keys("rotate", self.keydir)
        rotated_at = time.time()
        time.sleep(1.1)
        tlib.tether_keys("host", "add", self.keydir, "new01")     # made after the rotation: pins nothing old
        time.sleep(max(0, rotated_at + window + 0.3 - time.time()))
        args = ("prune", self.keydir, "--ledger", self.ledger, "--unused-for", f"{window}s")
        dry = tlib.tether_keys(*args).stdout
        would = set(re.findall(r"^would delete: \S+ \(\w+ ([\w-]+)\)", dry, re.M))
        self.assertEqual(would, {exc0}, dry)
        self.assertRegex(dry, rf"(?m)^keep: \S+/\.{sig0}\.jwk .*host web01's exchange key .*predates its rotation")
        d = tlib.tether("decrypt", input=jwe.stdout)
        self.assertEqual((d.returncode, d.stdout), (0, b"web01"), d.stderr)
        # No host key from before the rotation left: the signing key goes.
        tlib.tether_keys("host", "delete", "--force", self.keydir, "web01")
        dry = tlib.tether_keys(*args).stdout
        would = set(re.findall(r"^would delete: \S+ \(\w+ ([\w-]+)\)", dry, re.M))
        self.assertEqual(would, {exc0, sig0}, dry)

    def test_prune_durations(self):
        self.start()
        for bad in ("30", "1w", "-3d", "0d", "d", "3dd"):
            r = tlib.tether_keys("prune", self.keydir, "--ledger", self.ledger, "--unused-for", bad, check=False)
            self.assertEqual(r.returncode, 2, (bad, r.stderr))
            self.assertIn(f"invalid --unused-for '{bad}'", r.stderr)


if __name__ == "__main__":
    tlib.main()
