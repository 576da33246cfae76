"""Per-host exchange keys: /h/NAME/adv and /h/NAME/rec/KID, the host states
(active, revoked, held with allow tokens), their effect on a running tetherd,
and tether-keys host. Clevis itself is in tests/interop/test_hosts.py."""

import json
import os
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402
from tlib import ecmr_jwk, random_point, thumbprint  # noqa: E402


def keys_cmd(*args, check=True):
    return tlib.tether_keys(*args, check=check)


def host_key(keydir, name, hidden=False):
    return tlib.key_of(os.path.join(keydir, "hosts", name), "exc", hidden)


def tree(path):
    """Every path under path, with its size: what a request must not change."""
    out = {}
    for root, dirs, files in os.walk(path):
        for n in dirs + files:
            p = os.path.join(root, n)
            out[os.path.relpath(p, path)] = os.lstat(p).st_size
    return out


class HostTestCase(tlib.unittest.TestCase):
    args = ()

    def setUp(self):
        self.srv = tlib.Tetherd(args=self.args)
        self.addCleanup(self.srv.close)
        self.dir = self.srv.keydir
        out = keys_cmd("host", "add", self.dir, "web01").stdout
        self.assertIn("url: /h/web01\n", out)
        self.sig = tlib.key_of(self.dir, "sig")
        self.assertIn("thp: %s\n" % thumbprint(self.sig), out)
        self.exc = tlib.key_of(self.dir, "exc")
        self.hkey = host_key(self.dir, "web01")
        self.prefix = ""

    def rec(self, kid, host="web01", point=None):
        x, y = point or random_point()
        target = "%s/h/%s/rec/%s" % (self.prefix, host, kid) if host else "%s/rec/%s" % (self.prefix, kid)
        return self.srv.post(target, ecmr_jwk(x, y)), (x, y)

    def assert_recovers(self, key, host="web01", kid=None):
        r, (x, y) = self.rec(kid or thumbprint(key), host)
        self.assertEqual(r.status, 200, r.body)
        d = tlib.b64u_to_int(key["d"])
        got = json.loads(r.body)
        self.assertEqual((tlib.b64u_to_int(got["x"]), tlib.b64u_to_int(got["y"])), tlib.mul(d, (x, y)))

    def state(self, cmd, name="web01"):
        keys_cmd("host", cmd, self.dir, name)


class Routes(HostTestCase):
    def test_adv_has_shared_signers_and_host_exchange_key(self):
        r = self.srv.get("/h/web01/adv")
        self.assertEqual(r.status, 200, r.body)
        self.assertEqual(r.headers.get("content-type"), "application/jose+json")
        adv = json.loads(r.body)
        keys = tlib.adv_payload(adv)["keys"]
        thps = sorted(thumbprint(k) for k in keys)
        self.assertEqual(thps, sorted([thumbprint(self.sig), thumbprint(self.hkey)]))
        # The shared exchange key is not offered to this host.
        self.assertNotIn(thumbprint(self.exc), thps)
        # Signed by the shared signing key alone, as /adv is: the thp a
        # client pins is the same for every host.
        shared = json.loads(self.srv.get("/adv").body)
        self.assertEqual(len(tlib.adv_signatures(adv)), 1)
        self.assertEqual([k for k in keys if "verify" in k.get("key_ops", [])],
                         [k for k in tlib.adv_payload(shared)["keys"] if "verify" in k.get("key_ops", [])])
        self.assertFalse([k for k in keys if "d" in k])
        # /adv/{thp} of the shared signing key, by any hash; not of the exchange keys.
        for h in ("S1", "S256", "S512"):
            self.assertEqual(self.srv.get("/h/web01/adv/" + thumbprint(self.sig, h)).status, 200)
        self.assertEqual(self.srv.get("//h//web01//adv//").status, 200)
        self.assertEqual(self.srv.get("/h/web01/adv/" + thumbprint(self.hkey)).status, 404)
        self.assertEqual(self.srv.get("/h/web01/adv/" + thumbprint(self.exc)).status, 404)
        # Every request after the first is the cached signature.
        self.assertEqual(self.srv.get("/h/web01/adv").body, r.body)

    def test_rec_uses_the_hosts_keys_only(self):
        self.assert_recovers(self.hkey)
        self.assert_recovers(self.hkey, kid=thumbprint(self.hkey, "S1"))
        # Never a shared key on a host route, never a host key on /rec.
        self.assertEqual(self.rec(thumbprint(self.exc))[0].status, 404)
        self.assertEqual(self.rec(thumbprint(self.sig))[0].status, 404)
        self.assertEqual(self.rec(thumbprint(self.hkey), host=None)[0].status, 404)
        self.assert_recovers(self.exc, host=None)
        # Another host's key is unknown to this one.
        keys_cmd("host", "add", self.dir, "db02")
        other = host_key(self.dir, "db02")
        self.assertEqual(self.rec(thumbprint(other))[0].status, 404)
        self.assert_recovers(other, host="db02")
        # Requests are checked as on /rec: a bad body is 400 before the key.
        r = self.srv.post("/h/web01/rec/" + thumbprint(self.hkey), {"kty": "RSA"})
        self.assertEqual(r.status, 400)
        self.assertEqual(self.srv.get("/h/web01/rec/" + thumbprint(self.hkey)).status, 405)

    def test_unknown_host_is_404_and_creates_nothing(self):
        before = tree(self.dir)
        for target in ("/h/nohost/adv", "/h/nohost/adv/" + thumbprint(self.sig), "/h/../adv", "/h/.x/adv",
                       "/h/Web01/adv", "/h/web01/../adv", "/h/web01"):
            self.assertEqual(self.srv.get(target).status, 404, target)
        self.assertEqual(self.rec(thumbprint(self.hkey), host="nohost")[0].status, 404)
        self.assertEqual(self.rec(thumbprint(self.hkey), host="..")[0].status, 404)
        self.assertEqual(tree(self.dir), before)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "hosts", "nohost")))

    def test_hosts_appear_and_disappear_while_running(self):
        self.assertEqual(self.srv.get("/h/db02/adv").status, 404)
        keys_cmd("host", "add", self.dir, "db02")
        self.assertEqual(self.srv.get("/h/db02/adv").status, 200)
        self.assert_recovers(host_key(self.dir, "db02"), host="db02")
        self.state("revoke", "db02")
        keys_cmd("host", "delete", self.dir, "db02")
        self.assertEqual(self.srv.get("/h/db02/adv").status, 404)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "hosts", "db02")))

    def test_symlinked_host_directory_is_not_served(self):
        """tetherd watches a host directory itself, not what a link points
        to: a host behind a symbolic link would be served with a state it
        never rereads (a revocation there unseen). It is skipped, and
        tether-keys says why it cannot manage it."""
        self.assert_recovers(self.hkey)
        out = os.path.join(self.srv.tmp.name, "elsewhere")
        os.mkdir(out)
        os.rename(os.path.join(self.dir, "hosts", "web01"), os.path.join(out, "web01"))
        os.symlink(os.path.join(out, "web01"), os.path.join(self.dir, "hosts", "web01"))
        self.assertEqual(self.rec(thumbprint(self.hkey))[0].status, 404)
        self.assertEqual(self.srv.get("/h/web01/adv").status, 404)
        self.assertIn("hosts/web01", self.srv.logs())
        self.assertIn("a symbolic link?", self.srv.logs())
        r = keys_cmd("host", "revoke", self.dir, "web01", check=False)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("web01 is no directory (a symbolic link?)", r.stderr)

    def test_rotate_keeps_the_old_key_for_recovery(self):
        old = self.hkey
        first = self.srv.get("/h/web01/adv").body
        out = keys_cmd("host", "rotate", self.dir, "web01").stdout
        new = host_key(self.dir, "web01")
        self.assertIn(thumbprint(new), out)
        self.assertEqual(host_key(self.dir, "web01", hidden=True), old)
        adv = self.srv.get("/h/web01/adv")
        self.assertNotEqual(adv.body, first)
        thps = [thumbprint(k) for k in tlib.adv_payload(adv.body)["keys"]]
        self.assertIn(thumbprint(new), thps)
        self.assertNotIn(thumbprint(old), thps)
        self.assert_recovers(old)
        self.assert_recovers(new)


class States(HostTestCase):
    def test_revoke_then_restore(self):
        self.assert_recovers(self.hkey)
        self.state("revoke")
        r, _ = self.rec(thumbprint(self.hkey))
        self.assertEqual(r.status, 403)
        self.assertIn(b"revoked", r.body)
        self.assertEqual(r.body.count(b"\n"), 1)
        adv = self.srv.get("/h/web01/adv")
        self.assertEqual(adv.status, 403)
        self.assertIn(b"revoked", adv.body)
        # Other hosts and the shared routes go on.
        self.assert_recovers(self.exc, host=None)
        self.state("restore")
        self.assert_recovers(self.hkey)
        self.assertEqual(self.srv.get("/h/web01/adv").status, 200)

    def test_hold_and_allow_exactly_one(self):
        self.state("hold")
        # A held host can still be bound.
        self.assertEqual(self.srv.get("/h/web01/adv").status, 200)
        r, _ = self.rec(thumbprint(self.hkey))
        self.assertEqual(r.status, 403)
        self.assertEqual(r.body, b"held: waiting for an administrator to allow this recovery\n")
        self.state("allow")
        hostdir = os.path.join(self.dir, "hosts", "web01")
        self.assertEqual(len([n for n in os.listdir(hostdir) if n.startswith("allow-")]), 1)
        # A request that fails anyway spends no permission.
        x, y = random_point()
        bad = self.srv.post("/h/web01/rec/" + thumbprint(self.hkey), ecmr_jwk(x, (y + 1) % tlib.P))
        self.assertEqual(bad.status, 400)
        self.assert_recovers(self.hkey)
        self.assertEqual([n for n in os.listdir(hostdir) if n.startswith("allow-")], [])
        self.assertEqual(self.rec(thumbprint(self.hkey))[0].status, 403)
        self.state("restore")
        self.assert_recovers(self.hkey)

    def test_allow_tokens_spent_once_under_concurrency(self):
        self.state("hold")
        self.state("allow")
        self.state("allow")
        results = []
        lock = threading.Lock()

        def worker():
            r, _ = self.rec(thumbprint(self.hkey))
            with lock:
                results.append(r.status)

        threads = [threading.Thread(target=worker) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(sorted(results), [200] * 2 + [403] * 10)

    def test_allow_survives_a_restart(self):
        self.state("hold")
        self.state("allow")
        self.srv.stop()
        srv = tlib.Tetherd(keydir=self.dir)
        self.addCleanup(srv.close)
        self.srv = srv
        self.assert_recovers(self.hkey)
        self.assertEqual(self.rec(thumbprint(self.hkey))[0].status, 403)

    def test_revoke_under_load(self):
        """8 threads recover in a loop while the host is revoked: every
        answer is 200 or 403, and none that started after revoke returned
        is a 200."""
        stop = threading.Event()
        revoked_at = [None]
        seen = []
        lock = threading.Lock()
        point = random_point()
        kid = thumbprint(self.hkey)

        def worker():
            while not stop.is_set():
                started = time.monotonic()
                r, _ = self.rec(kid, point=point)
                with lock:
                    seen.append((started, r.status))

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        self.state("revoke")
        revoked_at[0] = time.monotonic()
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join()
        statuses = {s for _, s in seen}
        self.assertLessEqual(statuses, {200, 403}, statuses)
        before = [s for t, s in seen if t < revoked_at[0]]
        after = [s for t, s in seen if t > revoked_at[0]]
        self.assertIn(200, before)
        self.assertTrue(after)
        self.assertEqual(set(after), {403}, "a request started after revoke returned was answered 200")


class Prefix(HostTestCase):
    args = ("-e", "tang")

    def test_host_routes_under_the_endpoint(self):
        self.prefix = "/tang"
        self.assertEqual(self.srv.get("/tang/h/web01/adv").status, 200)
        self.assertEqual(self.srv.get("//tang//h//web01//adv").status, 200)
        self.assertEqual(self.srv.get("/h/web01/adv").status, 404)
        self.assert_recovers(self.hkey)


class Cli(tlib.unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-hosts-")
        self.addCleanup(self.tmp.cleanup)
        self.dir = os.path.join(self.tmp.name, "keys")
        os.mkdir(self.dir)
        keys_cmd("gen", self.dir)

    def run_host(self, *args):
        return subprocess.run([tlib.TETHER_KEYS, "host", *args], capture_output=True, text=True, timeout=60)

    def test_add_layout_and_list(self):
        r = self.run_host("add", self.dir, "web01")
        self.assertEqual(r.returncode, 0, r.stderr)
        hostdir = os.path.join(self.dir, "hosts", "web01")
        with open(os.path.join(hostdir, "state")) as f:
            self.assertEqual(f.read(), "active\n")
        keys = tlib.load_keys(hostdir)
        self.assertEqual([k["role"] for k in keys], ["exc"])
        self.assertEqual(keys[0]["file"], thumbprint(keys[0]["jwk"]) + ".jwk")
        self.assertEqual(keys[0]["jwk"]["alg"], "ECMR")
        self.assertEqual(oct(os.stat(os.path.join(hostdir, keys[0]["file"])).st_mode & 0o777), "0o440")
        # Nothing half-made is left beside it.
        self.assertEqual(os.listdir(os.path.join(self.dir, "hosts")), ["web01"])
        self.assertEqual(self.run_host("hold", self.dir, "web01").returncode, 0)
        self.assertEqual(self.run_host("allow", self.dir, "web01").returncode, 0)
        listed = json.loads(self.run_host("list", self.dir, "--json").stdout)
        self.assertEqual(listed, [{"name": "web01", "state": "held", "thp": thumbprint(keys[0]["jwk"]), "allow": 1}])
        text = self.run_host("list", self.dir).stdout
        self.assertRegex(text, r"^HOST +STATE +EXCHANGE KEY \(S256; not the thp to pin\) +ALLOW TOKENS\n"
                               r"web01 +held +%s +1\n$" % thumbprint(keys[0]["jwk"]))

    def test_errors(self):
        self.assertEqual(self.run_host("add", self.dir, "web01").returncode, 0)
        cases = [
            (("add", self.dir, "web01"), 1, "host web01 exists already"),
            (("add", self.dir, "../x"), 2, "invalid host name '../x'"),
            (("add", self.dir, "a..b"), 2, "invalid host name"),
            (("revoke", self.dir, "nohost"), 1, "no host nohost in"),
            (("restore", self.dir, "web01"), 1, "host web01 is active already"),
            (("allow", self.dir, "web01"), 1, "host web01 is active, not held"),
            (("delete", self.dir, "web01"), 1, "revoke it first"),
            (("frob", self.dir, "web01"), 2, "unknown command 'frob'"),
            (("revoke", self.dir), 2, "missing NAME"),
            (("list", self.dir, "--force"), 2, "--force is for host delete only"),
        ]
        for args, code, msg in cases:
            r = self.run_host(*args)
            self.assertEqual(r.returncode, code, (args, r.stderr))
            self.assertIn(msg, r.stderr, args)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "x")))
        self.assertEqual(self.run_host("revoke", self.dir, "web01").returncode, 0)
        r = self.run_host("revoke", self.dir, "web01")
        self.assertEqual((r.returncode, r.stderr.strip()), (1, "tether-keys host revoke: host web01 is revoked already"))
        r = self.run_host("delete", self.dir, "web01")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("can no longer be recovered", r.stdout)
        self.assertEqual(os.listdir(os.path.join(self.dir, "hosts")), [])
        self.assertEqual(self.run_host("add", self.dir, "db02").returncode, 0)
        self.assertEqual(self.run_host("delete", self.dir, "db02", "--force").returncode, 0)

    def test_state_file_written_atomically(self):
        self.run_host("add", self.dir, "web01")
        hostdir = os.path.join(self.dir, "hosts", "web01")
        ino = os.stat(os.path.join(hostdir, "state")).st_ino
        self.assertEqual(self.run_host("revoke", self.dir, "web01").returncode, 0)
        # A new file renamed over the old one, no temporary left.
        self.assertNotEqual(os.stat(os.path.join(hostdir, "state")).st_ino, ino)
        self.assertEqual(sorted(n for n in os.listdir(hostdir) if not n.endswith(".jwk")), ["state"])

    def test_tether_client_binds_and_recovers_through_a_host_url(self):
        self.run_host("add", self.dir, "web01")
        with tlib.Tetherd(keydir=self.dir) as srv:
            url = "http://127.0.0.1:%d/h/web01" % srv.port
            cfg = json.dumps({"url": url, "thp": thumbprint(tlib.key_of(self.dir, "sig"))})
            jwe = tlib.run(tlib.TETHER, "encrypt", "tang", cfg, input=b"per-host secret", check=True).stdout
            hdr = tlib.jwe_header(jwe)
            self.assertEqual(hdr["kid"], thumbprint(tlib.key_of(os.path.join(self.dir, "hosts", "web01"), "exc")))
            self.assertEqual(tlib.run(tlib.TETHER, "decrypt", input=jwe, check=True).stdout, b"per-host secret")
            self.assertEqual(self.run_host("revoke", self.dir, "web01").returncode, 0)
            r = tlib.run(tlib.TETHER, "decrypt", input=jwe)
            self.assertNotEqual(r.returncode, 0)
            err = r.stderr.decode(errors="replace")
            self.assertIn("403", err)
            self.assertIn("administrator revoked this host", err)
            # Binding to it: the 403 of /adv names who can undo it, not a log.
            r = tlib.run(tlib.TETHER, "encrypt", "tang", cfg, input=b"x")
            self.assertNotEqual(r.returncode, 0)
            err = r.stderr.decode(errors="replace")
            self.assertIn("HTTP 403", err)
            self.assertIn("revoked this host; tether-keys host restore there undoes it", err)
            self.assertNotIn("log says why", err)
            # Held: the message says who must act, and how.
            self.assertEqual(self.run_host("hold", self.dir, "web01").returncode, 0)
            r = tlib.run(tlib.TETHER, "decrypt", input=jwe)
            self.assertNotEqual(r.returncode, 0)
            self.assertIn("this host is held", r.stderr.decode(errors="replace"))
            self.assertIn("tether-keys host allow", r.stderr.decode(errors="replace"))


class UnreadableHostKey(tlib.unittest.TestCase):
    def test_unreadable_host_key_is_503_not_404(self):
        """A host's key file the server may not read (a chmod, a restore
        without the chown): /h/NAME/rec answers 503 "cannot read its key
        file", as /rec does, not 404, which tells a client to rebind."""
        nobody = 65534
        tmp = tempfile.TemporaryDirectory(prefix="tether-hostkey-")
        self.addCleanup(tmp.cleanup)
        os.chmod(tmp.name, 0o711)
        keydir = os.path.join(tmp.name, "keys")
        os.mkdir(keydir)
        os.chown(keydir, nobody, nobody)
        tlib.tether_keys("gen", keydir)
        keys_cmd("host", "add", keydir, "web01")
        for root, dirs, files in os.walk(keydir):
            for n in dirs + files:
                os.chown(os.path.join(root, n), nobody, nobody)
        key = host_key(keydir, "web01")
        kid = thumbprint(key)
        path = os.path.join(keydir, "hosts", "web01", kid + ".jwk")
        with tlib.Tetherd(keydir=keydir, user=nobody) as srv:
            x, y = random_point()
            self.assertEqual(srv.post("/h/web01/rec/" + kid, ecmr_jwk(x, y)).status, 200, srv.logs())
            os.chmod(path, 0)
            self.assertTrue(tlib.eventually(lambda: srv.post("/h/web01/rec/" + kid, ecmr_jwk(x, y)).status != 200))
            r = srv.post("/h/web01/rec/" + kid, ecmr_jwk(x, y))
            self.assertEqual(r.status, 503, srv.logs())
            self.assertIn(b"cannot read its key file", r.body)
            # A kid with no file at all is still 404.
            self.assertEqual(srv.post("/h/web01/rec/" + "A" * 43, ecmr_jwk(x, y)).status, 404)


class OutOfWatches(tlib.unittest.TestCase):
    def test_unwatched_host_is_polled(self):
        """inotify out of watches (fs.inotify.max_user_watches): the hosts it
        cannot watch are read again every second, so a revocation still
        applies, a second late at most, and the log says why."""
        tmp = tempfile.TemporaryDirectory(prefix="tether-watches-")
        self.addCleanup(tmp.cleanup)
        keydir = os.path.join(tmp.name, "keys")
        os.mkdir(keydir)
        tlib.tether_keys("gen", keydir)
        for name in ("web01", "web02", "web03"):
            keys_cmd("host", "add", keydir, name)
        # A user namespace of its own, whose limit is 4 watches: the key
        # directory, its parent, hosts/ and one host.
        wrap = ("unshare", "--user", "--map-root-user", "sh", "-c",
                'echo 4 > /proc/sys/user/max_inotify_watches && exec "$0" "$@"')
        srv = tlib.Tetherd(keydir=keydir, wrap=wrap)
        self.addCleanup(srv.close)
        self.assertTrue(tlib.eventually(lambda: "cannot watch 2 host directories" in srv.logs()), srv.logs())
        self.assertIn("max_user_watches", srv.logs())
        keys = {n: thumbprint(host_key(keydir, n)) for n in ("web01", "web02", "web03")}
        for name, kid in keys.items():
            x, y = random_point()
            self.assertEqual(srv.post("/h/%s/rec/%s" % (name, kid), ecmr_jwk(x, y)).status, 200, name)
        for name in keys:
            keys_cmd("host", "revoke", keydir, name)
        t0 = time.monotonic()
        for name, kid in keys.items():
            x, y = random_point()
            self.assertTrue(tlib.eventually(
                lambda: srv.post("/h/%s/rec/%s" % (name, kid), ecmr_jwk(x, y)).status == 403, timeout=5),
                "%s still recovers after its revocation:\n%s" % (name, srv.logs()))
        self.assertLess(time.monotonic() - t0, 3)


if __name__ == "__main__":
    tlib.main()
