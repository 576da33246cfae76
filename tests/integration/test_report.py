"""tether luks report for fleets: every binding of a device at once, --json,
and the state of each tang server of a binding (current, rotated but still
on the server, deleted, unreachable), with clevis luks report's exit status.
Two tetherd servers on loopback and a LUKS2 image file with two bindings:
slot 1 tang to server A, slot 2 sss (t=1) of A and B."""

import base64
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402

from tlib import PASSPHRASE, run, tether  # noqa: E402

SRCDIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ROTATED = "key rotated, still recoverable (server still has it)"
# Only signing keys the binding pinned are gone from /adv: whether the server
# still has them is not asked, and does not matter to the recovery.
SIGNING_ONLY = "key rotated, still recoverable (its exchange key is still advertised)"
DELETED = "key deleted, dead (server no longer has it)"


class Report(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-report-")
        self.a = tlib.Tetherd(args=["-q"])
        self.b = tlib.Tetherd(args=["-q"])
        self.url_a = f"http://127.0.0.1:{self.a.port}"
        self.url_b = f"http://127.0.0.1:{self.b.port}"
        self.img = os.path.join(self.tmp.name, "img")
        with open(self.img, "wb") as f:
            f.truncate(32 * 1024 * 1024)
        run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
            "--pbkdf-force-iterations", "1000", "--key-file", "-", self.img, input=PASSPHRASE, check=True)
        keyfile = os.path.join(self.tmp.name, "pass")
        with open(keyfile, "wb") as f:
            f.write(PASSPHRASE)
        sss = {"t": 1, "pins": {"tang": [{"url": self.url_a}, {"url": self.url_b}]}}
        for pin, cfg in (("tang", {"url": self.url_a}), ("sss", sss)):
            r = tether("luks", "bind", "-y", "-d", self.img, "-k", keyfile, pin, json.dumps(cfg))
            self.assertEqual(r.returncode, 0, r.stderr)

    def tearDown(self):
        self.a.close()
        self.b.close()
        self.tmp.cleanup()

    def report(self, *args):
        return tether("luks", "report", "-d", self.img, *args, env=dict(tlib.no_proxy_env(), TETHER_TIMEOUT="2"))

    def report_json(self, *args):
        r = self.report("--json", *args)
        return r, json.loads(r.stdout)

    def line(self, slot, url, what):
        return f"{self.img} slot {slot}: tang {url}: {what}"

    def states(self, doc):
        """{slot: (binding state, {url: server state})}"""
        return {b["slot"]: (b["state"], {s["url"]: s["state"] for s in b["servers"]}) for b in doc["bindings"]}

    def rotate_a(self):
        tlib.tether_keys("rotate", self.a.keydir)
        # The server sees its directory change on its next request.
        self.assertTrue(tlib.eventually(lambda: ROTATED in self.report("-s", "1").stdout.decode()))

    def delete_rotated_keys_of_a(self):
        hidden = glob.glob(os.path.join(self.a.keydir, ".*.jwk"))
        self.assertEqual(len(hidden), 2, hidden)
        for f in hidden:
            os.unlink(f)
        self.assertTrue(tlib.eventually(lambda: DELETED in self.report("-s", "1").stdout.decode()))

    # ------------------------------------------------------------ every binding

    def test_without_s_every_binding_is_reported(self):
        r = self.report()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode().splitlines(), [
            self.line(1, self.url_a, "key current"),
            self.line(2, self.url_a, "key current"),
            self.line(2, self.url_b, "key current"),
        ])
        # -q: nothing to say.
        r = self.report("-q")
        self.assertEqual((r.returncode, r.stdout, r.stderr), (0, b"", b""))
        # -s: that slot only.
        r = self.report("-s", "2")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual([ln.split(":")[0] for ln in r.stdout.decode().splitlines()], [f"{self.img} slot 2"] * 2)

    def test_json(self):
        r, doc = self.report_json()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(doc["device"], self.img)
        self.assertEqual([(b["slot"], b["pin"]) for b in doc["bindings"]], [(1, "tang"), (2, "sss")])
        self.assertEqual(self.states(doc), {1: ("current", {self.url_a: "current"}),
                                            2: ("current", {self.url_a: "current", self.url_b: "current"})})
        # The keys the binding uses: the server's signing and exchange keys.
        server = doc["bindings"][0]["servers"][0]
        want = {(tlib.thumbprint(tlib.key_of(self.a.keydir, "sig")), "signing"),
                (tlib.thumbprint(tlib.key_of(self.a.keydir, "exc")), "exchange")}
        self.assertEqual({(k["thp"], k["use"]) for k in server["keys"]}, want)
        self.assertTrue(all(k["advertised"] for k in server["keys"]))

    # ------------------------------------------------------------ states

    def test_rotated_key_still_on_the_server(self):
        old_sig = tlib.thumbprint(tlib.key_of(self.a.keydir, "sig"))
        self.rotate_a()
        r = self.report()
        self.assertEqual(r.returncode, 1, r.stderr)
        lines = r.stdout.decode().splitlines()
        self.assertEqual(len(lines), 3, lines)
        self.assertTrue(lines[0].startswith(self.line(1, self.url_a, ROTATED + ": ")), lines)
        self.assertIn(f"signing key {old_sig}", lines[0])
        self.assertTrue(lines[1].startswith(self.line(2, self.url_a, ROTATED)), lines)
        self.assertEqual(lines[2], self.line(2, self.url_b, "key current"))
        for slot in (1, 2):
            self.assertIn(f"run tether luks regen -d {self.img} -s {slot}\n", r.stderr.decode())
        r, doc = self.report_json()
        self.assertEqual(r.returncode, 1)
        self.assertEqual(self.states(doc), {1: ("rotated", {self.url_a: "rotated"}),
                                            2: ("rotated", {self.url_a: "rotated", self.url_b: "current"})})
        self.assertFalse(any(k["advertised"] for k in doc["bindings"][0]["servers"][0]["keys"]))
        # Still recoverable indeed: the binding unlocks.
        self.assertEqual(tether("luks", "unlock", "-d", self.img, "-t", "1").returncode, 0)

    def test_another_pair_deleted_is_not_this_binding_dead(self):
        """A server with two advertised pairs: deleting the pair a binding
        does not use leaves it stale (clevis's rule) but alive, not dead."""
        tlib.tether_keys("gen", self.a.keydir, "sig2", "exc2")

        def adv_keys():
            payload = json.loads(self.a.get("/adv").body)["payload"]
            return len(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["keys"])
        self.assertTrue(tlib.eventually(lambda: adv_keys() == 4))
        keyfile = os.path.join(self.tmp.name, "pass")
        r = tether("luks", "bind", "-y", "-d", self.img, "-k", keyfile, "tang", json.dumps({"url": self.url_a}))
        self.assertEqual(r.returncode, 0, r.stderr)
        token = json.loads(run("cryptsetup", "token", "export", "--token-id", "2", self.img,
                               check=True, text=True).stdout)
        protected = token["jwe"]["protected"]
        kid = json.loads(base64.urlsafe_b64decode(protected + "=" * (-len(protected) % 4)))["kid"]
        keys = tlib.load_keys(self.a.keydir)
        second = {"sig2.jwk", "exc2.jwk"}
        first = {k["file"] for k in keys} - second
        used = [k["file"] for k in keys if k["role"] == "exc" and tlib.thumbprint(k["jwk"]) == kid]
        self.assertEqual(len(used), 1, (kid, keys))
        for f in (first if used[0] in second else second):
            os.unlink(os.path.join(self.a.keydir, f))
        slot = str(token["keyslots"][0])
        self.assertTrue(tlib.eventually(lambda: adv_keys() == 2))
        out = self.report("-s", slot).stdout.decode()
        self.assertIn(SIGNING_ONLY, out)
        self.assertNotIn(DELETED, out)
        self.assertEqual(tether("luks", "unlock", "-d", self.img, "-t", "2").returncode, 0)

    def test_host_binding_after_shared_keys_pruned_is_not_said_kept(self):
        """A host's binding pins the shared signing key but recovers with the
        host's exchange key: once a shared rotation's hidden keys are deleted
        (prune), the line must not claim the server still has the signing key."""
        r = tlib.tether_keys("host", "add", self.a.keydir, "web01")
        keyfile = os.path.join(self.tmp.name, "pass")
        url = f"{self.url_a}/h/web01"
        r = tether("luks", "bind", "-y", "-d", self.img, "-k", keyfile, "tang", json.dumps({"url": url}))
        self.assertEqual(r.returncode, 0, r.stderr)
        slot = str(json.loads(run("cryptsetup", "token", "export", "--token-id", "2", self.img,
                                  check=True, text=True).stdout)["keyslots"][0])
        old_sig = tlib.thumbprint(tlib.key_of(self.a.keydir, "sig"))
        tlib.tether_keys("rotate", self.a.keydir)
        for f in glob.glob(os.path.join(self.a.keydir, ".*.jwk")):
            os.unlink(f)
        self.assertTrue(tlib.eventually(lambda: self.a.get(f"/adv/{old_sig}").status == 404))
        r = self.report("-s", slot)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(r.stdout.decode(), self.line(slot, url, f"{SIGNING_ONLY}: signing key {old_sig}") + "\n")
        self.assertEqual(tether("luks", "unlock", "-d", self.img, "-t", slot).returncode, 0)

    def test_revoked_host(self):
        """A per-host URL the administrator revoked: "host revoked", not
        "unreachable" (no network fault), exit 1 as for a dead key; restored,
        current again."""
        tlib.tether_keys("host", "add", self.a.keydir, "web01")
        keyfile = os.path.join(self.tmp.name, "pass")
        url = f"{self.url_a}/h/web01"
        r = tether("luks", "bind", "-y", "-d", self.img, "-k", keyfile, "tang", json.dumps({"url": url}))
        self.assertEqual(r.returncode, 0, r.stderr)
        slot = int(json.loads(run("cryptsetup", "token", "export", "--token-id", "2", self.img,
                                  check=True, text=True).stdout)["keyslots"][0])
        tlib.tether_keys("host", "revoke", self.a.keydir, "web01")
        r = self.report("-s", str(slot))
        self.assertEqual(r.returncode, 1, r.stderr)
        out = r.stdout.decode()
        self.assertTrue(out.startswith(self.line(slot, url, "host revoked: ")), out)
        self.assertIn("tether-keys host restore", out)
        r, doc = self.report_json("-s", str(slot))
        self.assertEqual(r.returncode, 1)
        self.assertEqual(self.states(doc), {slot: ("revoked", {url: "revoked"})})
        tlib.tether_keys("host", "restore", self.a.keydir, "web01")
        r = self.report("-s", str(slot))
        self.assertEqual((r.returncode, r.stdout.decode()), (0, self.line(slot, url, "key current") + "\n"), r.stderr)

    def test_deleted_key(self):
        self.rotate_a()
        self.delete_rotated_keys_of_a()
        r = self.report()
        self.assertEqual(r.returncode, 1, r.stderr)
        lines = r.stdout.decode().splitlines()
        self.assertTrue(lines[0].startswith(self.line(1, self.url_a, DELETED)), lines)
        self.assertTrue(lines[1].startswith(self.line(2, self.url_a, DELETED)), lines)
        r, doc = self.report_json()
        self.assertEqual(self.states(doc), {1: ("deleted", {self.url_a: "deleted"}),
                                            2: ("deleted", {self.url_a: "deleted", self.url_b: "current"})})
        # Dead indeed: slot 1 no longer unlocks.
        self.assertNotEqual(tether("luks", "unlock", "-d", self.img, "-t", "1").returncode, 0)

    def test_unreachable_server_in_sss(self):
        self.b.close()
        r = self.report()
        self.assertEqual(r.returncode, 3, r.stderr)
        lines = r.stdout.decode().splitlines()
        self.assertEqual(lines[:2], [self.line(1, self.url_a, "key current"), self.line(2, self.url_a, "key current")])
        self.assertTrue(lines[2].startswith(self.line(2, self.url_b, "unreachable: ")), lines)
        self.assertIn("connection refused", lines[2])
        r, doc = self.report_json()
        self.assertEqual(r.returncode, 3)
        self.assertEqual(self.states(doc), {1: ("current", {self.url_a: "current"}),
                                            2: ("unreachable", {self.url_a: "current", self.url_b: "unreachable"})})
        self.assertIn("connection refused", doc["bindings"][1]["servers"][1]["error"])
        # -q still names what cannot be checked.
        r = self.report("-q")
        self.assertEqual((r.returncode, len(r.stdout.decode().splitlines())), (3, 1))
        # Stale beats unreachable: a binding to regenerate is exit 1.
        self.rotate_a()
        r, doc = self.report_json()
        self.assertEqual(r.returncode, 1)
        self.assertEqual(self.states(doc)[2], ("rotated", {self.url_a: "rotated", self.url_b: "unreachable"}))

    # ------------------------------------------------------------ exit status, -r

    def test_exit_status_is_clevis_s(self):
        self.assertEqual(self.report("-s", "1").returncode, 0)
        self.rotate_a()
        # Stale: 1, with or without -q, as clevis luks report.
        for q in ([], ["-q"]):
            with self.subTest(q=q):
                self.assertEqual(self.report("-s", "1", *q).returncode, 1)
        # Regenerated: 0, and the binding current again; slot 2 is still stale.
        r = self.report("-s", "1", "-r")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{self.img} slot 1: regenerated", r.stdout.decode())
        self.assertEqual(self.report("-s", "1").returncode, 0)
        self.assertEqual(self.report().returncode, 1)

    def test_regen_needs_a_slot(self):
        self.rotate_a()
        before = tlib.luks_meta(self.img)
        r = self.report("-r")
        self.assertEqual(r.returncode, 2)
        self.assertIn("-r regenerates one binding: give -s SLOT", r.stderr.decode())
        self.assertEqual(tlib.luks_meta(self.img), before)

    def test_a_device_without_bindings(self):
        for s in ("1", "2"):
            self.assertEqual(tether("luks", "unbind", "-d", self.img, "-s", s).returncode, 0)
        r = self.report()
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{self.img} has no tether/clevis binding", r.stderr.decode())

    def test_a_binding_without_tang_server(self):
        r = tether("luks", "bind", "-d", self.img, "-k", os.path.join(self.tmp.name, "pass"), "-s", "3", "null", "{}")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.report()
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"{self.img} slot 3: null: nothing to check (no tang server)\n", r.stdout.decode())
        r, doc = self.report_json("-s", "3")
        self.assertEqual(doc["bindings"], [{"slot": 3, "token": 2, "pin": "null", "state": "unchecked", "servers": []}])

    def test_json_of_a_device_whose_name_is_not_utf8(self):
        # A path is bytes: JSON strings are UTF-8, so the name comes escaped
        # as the text lines show it, not as a failure ("out of memory").
        link = os.fsdecode(os.path.join(self.tmp.name.encode(), b"dev\xff"))
        os.symlink(self.img, link)
        r = tether("luks", "report", "--json", "-d", link, "-s", "1",
                   env=dict(tlib.no_proxy_env(), TETHER_TIMEOUT="2"))
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual(doc["device"], self.tmp.name + "/dev\\xff")
        self.assertEqual(self.states(doc), {1: ("current", {self.url_a: "current"})})

    def test_orphan_token_is_an_invalid_binding(self):
        run("cryptsetup", "luksKillSlot", "--batch-mode", self.img, "1", check=True)
        r = self.report()
        self.assertEqual(r.returncode, 1)
        # The kill unassigned the token: it is named by its id.
        self.assertIn(f"{self.img} token 0: invalid: token 0 is an orphan", r.stdout.decode())
        self.assertIn(self.line(2, self.url_b, "key current"), r.stdout.decode())
        r, doc = self.report_json()
        self.assertEqual(doc["bindings"][0]["state"], "invalid")

    def test_man_page_shows_the_lines_printed(self):
        with open(os.path.join(SRCDIR, "man", "tether-luks-report.1")) as f:
            text = " ".join(f.read().replace("\\-", "-").split("\n"))
        for said in (ROTATED, SIGNING_ONLY, DELETED, ": key current", ": unreachable: ", "nothing to check (no tang server)"):
            self.assertTrue(said in text, said)
        self.rotate_a()
        r = self.report("-s", "1")
        # The hint as the page shows it, folded there.
        hint = " ".join(r.stderr.decode().split()).replace(self.img, "/dev/sda2")
        self.assertTrue(hint in " ".join(text.split()), hint)

    def test_clevis_agrees(self):
        """clevis luks report on the same image: same exit status for current
        and rotated; an unreachable server is 1 there, 3 here."""
        if not shutil.which("clevis-luks-report"):
            self.skipTest("clevis is not installed")

        def clevis(slot):
            return subprocess.run(["clevis", "luks", "report", "-q", "-d", self.img, "-s", slot], capture_output=True,
                                  timeout=120, stdin=subprocess.DEVNULL, env=tlib.no_proxy_env()).returncode
        self.assertEqual((clevis("1"), self.report("-s", "1", "-q").returncode), (0, 0))
        self.b.close()
        self.assertEqual((clevis("2"), self.report("-s", "2", "-q").returncode), (1, 3))
        self.rotate_a()
        self.assertEqual((clevis("1"), self.report("-s", "1", "-q").returncode), (1, 1))


if __name__ == "__main__":
    tlib.main()
