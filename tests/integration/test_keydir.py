"""The key directory while serving: auto-generation, rotation, plain mv/rm,
thumbprint lookups of rotated keys, and no window with a half-loaded key set."""

import json
import os
import shutil
import signal
import socket
import stat
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402
from tlib import ecmr_jwk, random_point, thumbprint  # noqa: E402


def adv_thps(srv, target="/adv"):
    r = srv.get(target)
    if r.status != 200:
        return None
    return sorted(thumbprint(k) for k in tlib.adv_payload(r.json())["keys"])


def dir_thps(keydir, hidden=False):
    return sorted(thumbprint(k["jwk"]) for k in tlib.load_keys(keydir) if k["hidden"] == hidden)


NOBODY = 65534
# tetherd's /adv 500 bodies (server/routes.h).
ADV_REMOVED = b"no usable signing key: the key files were just removed; new ones are created shortly\n"
ADV_UNREADABLE = b"no usable signing key: the key files exist but the server cannot read them\n"
# server/keystore.c's REMOVAL_WINDOW_MS: no pair is created in a directory
# whose keys went missing less than this ago.
REMOVAL_WINDOW_S = 2


class KeyDir(tlib.unittest.TestCase):
    def test_autogen_in_empty_directory(self):
        with tlib.Tetherd(gen=False) as srv:
            keys = tlib.load_keys(srv.keydir)
            self.assertEqual(sorted(k["role"] for k in keys), ["exc", "sig"])
            for k in keys:
                path = os.path.join(srv.keydir, k["file"])
                self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o440, k["file"])
                self.assertEqual(k["file"], thumbprint(k["jwk"]) + ".jwk")
                self.assertEqual(k["jwk"]["crv"], "P-521")
            self.assertEqual(sorted(f for f in os.listdir(srv.keydir)), sorted(k["file"] for k in keys),
                             "temporary files left behind")
            self.assertEqual(adv_thps(srv), dir_thps(srv.keydir))

    def test_autogen_when_only_hidden_keys(self):
        with tlib.Tetherd() as srv:
            for name in os.listdir(srv.keydir):
                os.rename(os.path.join(srv.keydir, name), os.path.join(srv.keydir, "." + name))
            hidden = dir_thps(srv.keydir, hidden=True)
            # The next request sees a directory with no advertised key: a fresh pair.
            thps = tlib.eventually(lambda: adv_thps(srv))
            self.assertTrue(thps)
            self.assertEqual(thps, dir_thps(srv.keydir))
            self.assertFalse(set(thps) & set(hidden))

    def test_no_keygen(self):
        with tlib.Tetherd(gen=False, args=["--no-keygen"], wait_path="/health", wait_status=503) as srv:
            self.assertEqual(os.listdir(srv.keydir), [])
            self.assertEqual(srv.get("/adv").status, 500)
            x, y = random_point()
            self.assertEqual(srv.post("/rec/" + "A" * 43, ecmr_jwk(x, y)).status, 500)
            self.assertEqual(srv.get("/health").status, 503)
            # Keys arriving later are picked up without a restart.
            tlib.tether_keys("gen", srv.keydir)
            self.assertEqual(srv.get("/health").status, 200)
            self.assertEqual(adv_thps(srv), dir_thps(srv.keydir))

    def test_only_exchange_key_is_unusable(self):
        with tlib.Tetherd(args=["--no-keygen"]) as srv:
            for k in tlib.load_keys(srv.keydir):
                if k["role"] == "sig":
                    os.unlink(os.path.join(srv.keydir, k["file"]))
            self.assertEqual(srv.get("/health").status, 503)
            self.assertEqual(srv.get("/adv").status, 500)

    def test_rotation_by_the_tool(self):
        with tlib.Tetherd() as srv:
            old_sig = tlib.key_of(srv.keydir, "sig")
            old_exc = tlib.key_of(srv.keydir, "exc")
            before = adv_thps(srv)
            tlib.tether_keys("rotate", srv.keydir)
            # Next request: new keys advertised, old ones hidden.
            after = adv_thps(srv)
            self.assertEqual(after, dir_thps(srv.keydir))
            self.assertFalse(set(before) & set(after))
            # The old signing key is reachable by every hash, signing the new set.
            for h in tlib.THP_HASHES:
                r = srv.get("/adv/" + thumbprint(old_sig, h))
                self.assertEqual(r.status, 200, h)
                adv = r.json()
                self.assertEqual(len(adv["signatures"]), 2, "general JWS with both signers")
                self.assertEqual(sorted(thumbprint(k) for k in tlib.adv_payload(adv)["keys"]), after)
            # The old exchange key still recovers, by every hash.
            x, y = random_point()
            d = tlib.b64u_to_int(old_exc["d"])
            want = json.dumps(ecmr_jwk(*tlib.mul(d, (x, y))), separators=(",", ":"), sort_keys=True).encode()
            for h in tlib.THP_HASHES:
                r = srv.post("/rec/" + thumbprint(old_exc, h), ecmr_jwk(x, y))
                self.assertEqual((r.status, r.body), (200, want), h)

    def test_two_signing_keys_general_jws(self):
        with tlib.Tetherd() as srv:
            tlib.tether_keys("gen", srv.keydir, "second-sig", "second-exc")
            adv = srv.get("/adv").json()
            self.assertEqual(set(adv), {"payload", "signatures"})
            self.assertEqual(len(adv["signatures"]), 2)
            self.assertEqual(len(tlib.adv_payload(adv)["keys"]), 4)

    def test_plain_mv_and_rm(self):
        with tlib.Tetherd(args=["--no-keygen"]) as srv:
            exc = tlib.key_of(srv.keydir, "exc")
            kid = thumbprint(exc)
            name = kid + ".jwk"
            x, y = random_point()
            self.assertEqual(srv.post("/rec/" + kid, ecmr_jwk(x, y)).status, 200)
            # mv out of the directory: gone for the next request.
            shutil.move(os.path.join(srv.keydir, name), os.path.join(srv.tmp.name, name))
            self.assertEqual(srv.post("/rec/" + kid, ecmr_jwk(x, y)).status, 404)
            self.assertNotIn(kid, adv_thps(srv) or [])
            # mv back in under a hidden name: recovers, not advertised.
            shutil.move(os.path.join(srv.tmp.name, name), os.path.join(srv.keydir, "." + name))
            self.assertEqual(srv.post("/rec/" + kid, ecmr_jwk(x, y)).status, 200)
            self.assertNotIn(kid, adv_thps(srv))
            # rm: gone.
            os.unlink(os.path.join(srv.keydir, "." + name))
            self.assertEqual(srv.post("/rec/" + kid, ecmr_jwk(x, y)).status, 404)

    def test_foreign_files_skipped_with_warning(self):
        with tlib.Tetherd() as srv:
            before = adv_thps(srv)
            for name, content in (("garbage.jwk", "not json"), ("empty.jwk", ""),
                                  ("array.jwk", "[1]"), ("notes.txt", "hello"),
                                  # Would sign the advertisement if taken for a signing key.
                                  ("rsa.jwk", '{"kty":"RSA","n":"AQAB","e":"AQAB"}'),
                                  # A signing key whose private part is not its public point's.
                                  ("mismatch.jwk", json.dumps(dict(tlib.key_of(srv.keydir, "sig"),
                                                                   d=tlib.int_to_b64u(12345))))):
                with open(os.path.join(srv.keydir, name), "w") as f:
                    f.write(content)
            self.assertEqual(adv_thps(srv), before)
            logs = tlib.eventually(lambda: all(n in srv.logs() for n in ("garbage.jwk", "empty.jwk", "array.jwk", "rsa.jwk",
                                                                            "mismatch.jwk"))
                                   and srv.logs())
            self.assertTrue(logs, srv.logs())
            self.assertNotIn("notes.txt", srv.logs())

    def test_sighup_reloads(self):
        with tlib.Tetherd() as srv:
            srv.signal(signal.SIGHUP)
            self.assertTrue(tlib.eventually(lambda: srv.logs().count("loaded") >= 2), srv.logs())
            self.assertEqual(srv.get("/adv").status, 200)
            self.assertIsNone(srv.proc.poll())

    def test_directory_replaced(self):
        # Deploy tools swap whole directories; the watch must follow the path.
        with tlib.Tetherd(args=["--no-keygen"]) as srv:
            old = adv_thps(srv)
            fresh = os.path.join(srv.tmp.name, "fresh")
            os.mkdir(fresh)
            tlib.tether_keys("gen", fresh)
            shutil.rmtree(srv.keydir)
            os.rename(fresh, srv.keydir)
            new = tlib.eventually(lambda: (adv_thps(srv) or old) != old and adv_thps(srv))
            self.assertEqual(new, dir_thps(srv.keydir))

    def test_unreadable_key_files_count_as_present(self):
        """A copied Tang directory whose files tetherd cannot read (a forgotten
        chown): no new pair is created and advertised (old bindings would get
        404 and their owners would be told to rebind), /rec names the cause."""
        nobody = 65534
        tmp = tlib.tempfile.TemporaryDirectory(prefix="tether-it-")
        self.addCleanup(tmp.cleanup)
        os.chmod(tmp.name, 0o711)
        keydir = os.path.join(tmp.name, "keys")
        os.mkdir(keydir)
        os.chown(keydir, nobody, nobody)
        tlib.tether_keys("gen", keydir)
        for name in os.listdir(keydir):
            os.chown(os.path.join(keydir, name), 0, 0)
            os.chmod(os.path.join(keydir, name), 0o400)
        before = sorted(os.listdir(keydir))
        kid = thumbprint(tlib.key_of(keydir, "exc"))
        with tlib.Tetherd(keydir=keydir, user=nobody, wait_status=503) as srv:
            r = srv.get("/adv")
            self.assertEqual((r.status, r.body), (500, ADV_UNREADABLE))
            # The client shows the server's one line, and where to look.
            url = f"http://127.0.0.1:{srv.port}"
            for args in ((tlib.TETHER, "encrypt", "tang", json.dumps({"url": url}), "-y"),
                         (tlib.TETHER_KEYS, "show", "--url", url)):
                rc = tlib.run(*args, input=b"secret", timeout=60)
                self.assertNotEqual(rc.returncode, 0, args)
                self.assertIn(f'{url}/adv/ answered HTTP 500: "{ADV_UNREADABLE.decode().strip()}" '
                              "(the server's log says why)", rc.stderr.decode(), args)
            x, y = random_point()
            r = srv.post("/rec/" + kid, ecmr_jwk(x, y))
            self.assertEqual(r.status, 503)
            self.assertIn(b"cannot read its key file", r.body)
            self.assertEqual(srv.get("/health").status, 503)
            self.assertEqual(sorted(os.listdir(keydir)), before, "keys were created next to unreadable ones")
            line = next((ln for ln in srv.logs().splitlines() if kid + ".jwk cannot be read" in ln), "")
            self.assertIn("Permission denied", line, srv.logs())
            self.assertIn(f"chown or chmod it so that uid {nobody} can read it", line)
            # The client says what it means: not "bind again".
            rc = tlib.run(tlib.TETHER, "decrypt", input=self.jwe_for(keydir, srv), timeout=60)
            self.assertNotEqual(rc.returncode, 0)
            self.assertIn(b"the server has the key but cannot read it", rc.stderr)
            # Given to the server's user: served, still no new key.
            for name in before:
                os.chown(os.path.join(keydir, name), nobody, nobody)
            self.assertEqual(tlib.eventually(lambda: srv.get("/health").status == 200 and 200), 200)
            self.assertEqual(srv.post("/rec/" + kid, ecmr_jwk(x, y)).status, 200)
            self.assertEqual(sorted(os.listdir(keydir)), before)

    def jwe_for(self, keydir, srv):
        """A JWE bound to keydir's keys, recovered through srv, made offline."""
        adv_srv = tlib.Tetherd(keydir=keydir)
        try:
            adv = adv_srv.get("/adv").json()
        finally:
            adv_srv.close()
        cfg = json.dumps({"url": f"http://127.0.0.1:{srv.port}", "adv": adv})
        r = tlib.run(tlib.TETHER, "encrypt", "tang", cfg, input=b"secret", timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_health_names_no_path_or_key_file(self):
        """/health is on the client port: the state only, the reasons in the log."""
        with tlib.Tetherd() as srv:
            shutil.rmtree(srv.keydir)
            for _ in range(3):
                r = srv.get("/health")
                body = r.body.decode()
                self.assertNotIn(srv.keydir, body)
                self.assertNotIn(".jwk", body)
                self.assertIn(body.strip(), ("ok", "degraded", "unavailable"))
            self.assertEqual(body, "degraded\n")
            self.assertTrue(tlib.eventually(lambda: "/health: degraded: key directory" in srv.logs()), srv.logs())
            self.assertEqual(srv.logs().count("/health: degraded"), 1, "logged once per change, not per request")

    def test_removed_and_recreated_directory_never_advertises_gone_keys(self):
        """rm -rf DIR; mkdir DIR; GET /adv at once: every advertised key is a
        file in DIR right after (tangd creates new keys on that request), never
        a key that exists only in memory and is lost at the next restart."""
        with tlib.Tetherd(args=["-q"]) as srv:
            for i in range(40):
                shutil.rmtree(srv.keydir)
                os.mkdir(srv.keydir)
                thps = adv_thps(srv)
                on_disk = dir_thps(srv.keydir)
                self.assertTrue(thps, f"iteration {i}: /adv failed")
                self.assertEqual(thps, on_disk, f"iteration {i}: advertised keys not on disk")
            # Removed and not re-created: /adv advertises nothing, /rec still recovers.
            kid = thumbprint(tlib.key_of(srv.keydir, "exc"))
            shutil.rmtree(srv.keydir)
            self.assertEqual(srv.get("/adv").status, 500)
            x, y = random_point()
            self.assertEqual(srv.post("/rec/" + kid, ecmr_jwk(x, y)).status, 200)
            self.assertEqual(srv.get("/health").status, 200)

    def test_rm_r_creates_no_key_in_the_directory_it_removes(self):
        """rm -r deletes the key files one by one, then the directory: requests
        in between must not get a new pair created there (rmdir would fail
        with "Directory not empty" and leave a key nobody asked for)."""
        with tlib.Tetherd() as srv:
            tlib.tether_keys("rotate", srv.keydir)
            names = sorted(os.listdir(srv.keydir))
            self.assertEqual(len(names), 4)
            for i, name in enumerate(names):
                os.unlink(os.path.join(srv.keydir, name))
                for _ in range(3):
                    self.assertIn(srv.get("/adv").status, (200, 500))
                self.assertEqual(sorted(os.listdir(srv.keydir)), names[i + 1:],
                                 "a key was created in the directory being removed")
            r = srv.get("/adv")
            self.assertEqual((r.status, r.body), (500, ADV_REMOVED))
            os.rmdir(srv.keydir)
            self.assertNotIn("created", srv.logs())

    def test_keys_deleted_on_purpose_are_replaced_after_the_window(self):
        """Emptying the directory (without removing it) is how one asks tangd
        for a new pair: tetherd creates it too, once the 2 s in which the
        deletions may still be an rm -r are over."""
        with tlib.Tetherd() as srv:
            old = dir_thps(srv.keydir)
            t0 = time.monotonic()
            for name in os.listdir(srv.keydir):
                os.unlink(os.path.join(srv.keydir, name))
            r = srv.get("/adv")
            if time.monotonic() - t0 < 1.5:
                self.assertEqual((r.status, r.body), (500, ADV_REMOVED))
                self.assertEqual(os.listdir(srv.keydir), [])
            new = tlib.eventually(lambda: adv_thps(srv), timeout=10)
            self.assertTrue(new, srv.logs())
            self.assertEqual(new, dir_thps(srv.keydir))
            self.assertFalse(set(new) & set(old))

    def test_key_file_churn_cannot_hold_keygen_off(self):
        """Something that keeps adding and deleting a key file after the keys
        were deleted (a buggy config tool, a local user who may write in the
        directory) does not hold the new pair off forever: the hold of a run
        of deletions ends 2 windows after its first one at the latest."""
        with tlib.Tetherd() as srv:
            spare = os.path.join(srv.tmp.name, "spare")
            os.mkdir(spare)
            tlib.tether_keys("gen", spare)
            churned = json.dumps(tlib.key_of(spare, "exc"))
            old = dir_thps(srv.keydir)
            stop, created, errors = threading.Event(), [], []

            def churn():
                # Written aside and renamed in: the server never loads half
                # a file. Each copy lives long enough to be loaded (served),
                # so that each deletion is a key lost.
                tmp, path = os.path.join(srv.keydir, "churn.tmp"), os.path.join(srv.keydir, ".churn.jwk")
                try:
                    while not stop.is_set():
                        with open(tmp, "w") as f:
                            f.write(churned)
                        os.rename(tmp, path)
                        created.append(time.monotonic())
                        stop.wait(0.25)
                        os.unlink(path)
                        stop.wait(0.25)
                except OSError as e:
                    errors.append(e)

            for name in os.listdir(srv.keydir):
                os.unlink(os.path.join(srv.keydir, name))
            t0 = time.monotonic()
            churner = threading.Thread(target=churn)
            churner.start()
            try:
                # The churn goes on for longer than the deadline: without a
                # bound on the hold, no pair is ever created.
                deadline = t0 + (5 if tlib.VALGRIND else 3) * REMOVAL_WINDOW_S
                first = None
                while first is None and time.monotonic() < deadline:
                    r = srv.get("/adv")
                    if r.status == 200:
                        first = time.monotonic()
                    else:
                        self.assertEqual(r.status, 500)
                        time.sleep(0.05)
                self.assertIsNotNone(first, f"no key advertised {deadline - t0:.0f} s after the keys were deleted "
                                     f"while a key file was churned\n{srv.logs()}")
                # Not before the window of the deletions (rm -r guarantee).
                self.assertGreaterEqual(first - t0, REMOVAL_WINDOW_S - 0.5)
                new = adv_thps(srv)
                self.assertTrue(new)
                self.assertFalse(set(new) & set(old))
                # The pair stays advertised while the churn goes on.
                for _ in range(10):
                    self.assertEqual(adv_thps(srv), new)
                    time.sleep(0.1)
            finally:
                stop.set()
                churner.join()
            self.assertEqual(errors, [])
            self.assertGreater(len(created), 2 * REMOVAL_WINDOW_S, "the key file was not churned")
            self.assertEqual(new, dir_thps(srv.keydir))
            self.assertEqual(srv.logs().count("; created "), 1, srv.logs())
            self.assertIn("key files kept disappearing for ", srv.logs())

    def test_key_file_names_cannot_forge_log_lines(self):
        """A file name is anybody's bytes: newlines and terminal escapes in it
        reach the log as '?', so one event stays one harmless line."""
        with tlib.Tetherd() as srv:
            name = "bad\nname\x1b[31mX.jwk"
            with open(os.path.join(srv.keydir, name), "w") as f:
                f.write("not json")
            with open(os.path.join(srv.keydir, "\x1b]0;title\x07.jwk"), "w"):
                pass
            self.assertTrue(tlib.eventually(lambda: "bad?name?[31mX.jwk" in srv.logs()), srv.logs())
            self.assertTrue(tlib.eventually(lambda: "?]0;title?.jwk is empty" in srv.logs()), srv.logs())
            with open(srv.logpath, "rb") as f:
                raw = f.read()
            self.assertNotIn(b"\x1b", raw)
            self.assertNotIn(b"\x07", raw)
            self.assertFalse([ln for ln in raw.splitlines() if ln.startswith(b"name")], raw)

    def test_links_to_nothing_are_not_keys(self):
        """A dangling symbolic link, a loop of them or a socket named X.jwk
        is no key the server has: skipped (a pair is created as in an empty
        directory), /rec for it 404. A link to a regular file the server may
        not read is one: /rec 503, "cannot read its key file"."""
        tmp = tlib.tempfile.TemporaryDirectory(prefix="tether-it-")
        self.addCleanup(tmp.cleanup)
        os.chmod(tmp.name, 0o711)
        keydir = os.path.join(tmp.name, "keys")
        os.mkdir(keydir)
        os.chown(keydir, NOBODY, NOBODY)
        kids = {what: what[0].upper() * 43 for what in ("loop", "dangling", "socket", "unreadable")}
        os.symlink(kids["loop"] + ".jwk", os.path.join(keydir, kids["loop"] + ".jwk"))
        os.symlink("/nonexistent/key.jwk", os.path.join(keydir, kids["dangling"] + ".jwk"))
        sock = socket.socket(socket.AF_UNIX)
        self.addCleanup(sock.close)
        sock.bind(os.path.join(keydir, kids["socket"] + ".jwk"))
        secret = os.path.join(tmp.name, "secret.jwk")
        tlib.tether_keys("gen", tmp.name, "secret", "other")
        os.chmod(secret, 0o400)
        os.symlink(secret, os.path.join(keydir, "." + kids["unreadable"] + ".jwk"))
        with tlib.Tetherd(keydir=keydir, user=NOBODY) as srv:
            self.assertTrue(adv_thps(srv), srv.logs())
            created = [n for n in os.listdir(keydir) if not os.path.islink(os.path.join(keydir, n))
                       and stat.S_ISREG(os.stat(os.path.join(keydir, n)).st_mode)]
            self.assertEqual(len(created), 2, "no pair created")
            x, y = random_point()
            for what in ("loop", "dangling", "socket"):
                self.assertEqual(srv.post("/rec/" + kids[what], ecmr_jwk(x, y)).status, 404, what)
            r = srv.post("/rec/" + kids["unreadable"], ecmr_jwk(x, y))
            self.assertEqual(r.status, 503)
            self.assertIn(b"cannot read its key file", r.body)
            logs = srv.logs()
            self.assertIn(f"{kids['loop']}.jwk cannot be opened (Too many levels of symbolic links), skipped: "
                          "not a key file", logs)
            self.assertIn(f"{kids['dangling']}.jwk cannot be opened (No such file or directory), skipped", logs)
            self.assertIn(f".{kids['unreadable']}.jwk cannot be read: Permission denied; skipped, but counted "
                          "as present", logs)

    def test_unreadable_key_file_logged_once(self):
        """A key file made unreadable is logged when that happens, not again at
        every reload while it lasts; again if it is fixed and breaks again."""
        with tlib.Tetherd(user=NOBODY) as srv:
            tlib.tether_keys("rotate", srv.keydir)
            self.assertTrue(adv_thps(srv))
            hidden = tlib.key_of(srv.keydir, "exc", hidden=True)
            path = os.path.join(srv.keydir, "." + thumbprint(hidden) + ".jwk")
            line = "." + thumbprint(hidden) + ".jwk cannot be read: Permission denied; serving the key loaded"

            def reload_after(change):
                loads = srv.logs().count(" loaded ")
                change()
                self.assertTrue(tlib.eventually(lambda: srv.logs().count(" loaded ") > loads), srv.logs())

            reload_after(lambda: os.chmod(path, 0))
            self.assertEqual(srv.logs().count(line), 1, srv.logs())
            for i in range(4):
                reload_after(lambda: open(os.path.join(srv.keydir, f"notes{i}.txt"), "w").close())
            x, y = random_point()
            self.assertEqual(srv.post("/rec/" + thumbprint(hidden), ecmr_jwk(x, y)).status, 200)
            self.assertEqual(srv.logs().count(line), 1, srv.logs())
            reload_after(lambda: os.chmod(path, 0o440))
            reload_after(lambda: os.chmod(path, 0))
            self.assertEqual(srv.logs().count(line), 2, srv.logs())

    def test_no_half_loaded_key_set_under_load(self):
        """Rotate repeatedly while clients hammer /adv: every answer is complete
        (one signing and one exchange key, properly signed), never an error."""
        with tlib.Tetherd(args=["-q"]) as srv:
            failures, stop = [], threading.Event()

            def client():
                while not stop.is_set():
                    r = srv.get("/adv")
                    if r.status != 200:
                        failures.append(r.status)
                        continue
                    # tether-keys rotate writes the new pair before hiding the old
                    # one, so a request may see either pair or both; what it must
                    # never see is a set whose signers and keys disagree.
                    adv = r.json()
                    keys = tlib.adv_payload(adv)["keys"]
                    verify = [k for k in keys if k["key_ops"] == ["verify"]]
                    derive = [k for k in keys if k["key_ops"] == ["deriveKey"]]
                    if not verify or not derive or len(verify) + len(derive) != len(keys) \
                            or len(tlib.adv_signatures(adv)) != len(verify):
                        failures.append([k["key_ops"] for k in keys])

            threads = [threading.Thread(target=client) for _ in range(4)]
            for t in threads:
                t.start()
            try:
                for _ in range(15):
                    tlib.tether_keys("rotate", srv.keydir)
            finally:
                stop.set()
                for t in threads:
                    t.join()
            self.assertEqual(failures, [])
            self.assertEqual(adv_thps(srv), dir_thps(srv.keydir))


if __name__ == "__main__":
    tlib.main()
