"""The key directory while serving: auto-generation, rotation, plain mv/rm,
thumbprint lookups of rotated keys, and no window with a half-loaded key set."""

import json
import os
import shutil
import signal
import stat
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tlib  # noqa: E402
from tlib import ecmr_jwk, random_point, thumbprint  # noqa: E402


def adv_thps(srv, target="/adv"):
    r = srv.get(target)
    if r.status != 200:
        return None
    return sorted(thumbprint(k) for k in tlib.adv_payload(r.json())["keys"])


def dir_thps(keydir, hidden=False):
    return sorted(thumbprint(k["jwk"]) for k in tlib.load_keys(keydir) if k["hidden"] == hidden)


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
