"""tether luks on LUKS2 image files (check-only activation, no device-mapper),
against a tetherd on loopback: every command, every error path, and fault
injection at every step of the mutating commands, after which the volume must
still open with the original passphrase and hold no half-made binding."""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402

from tlib import PASSPHRASE, luks_meta, opens, run, tether  # noqa: E402


def detached(*args, env=None, input=None):
    """tether in a new session: no controlling terminal, so nothing can be
    asked (as from cron or a script), whatever terminal runs the tests;
    standard input empty unless input is given."""
    return subprocess.run([tlib.TETHER, *args], capture_output=True, timeout=120, env=env, start_new_session=True,
                          input=input, stdin=None if input is not None else subprocess.DEVNULL)


SRCDIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def man_examples(page):
    """The example blocks (.EX ... .EE) of man/page as one line each, folds
    undone and roff escapes removed: the messages as the program prints them."""
    with open(os.path.join(SRCDIR, "man", page)) as f:
        text = f.read()
    blocks = [b.split(".EE", 1)[0] for b in text.split(".EX\n")[1:]]
    return [" ".join(b.split("\n")).replace("\\-", "-").replace("\\(aq", "'").strip() for b in blocks]


def edit_luks2_json(img, edit):
    """Rewrites the JSON metadata of both LUKS2 header copies with edit(meta),
    with fresh checksums: how a header that cryptsetup would not write itself
    (damaged, or made by hand or by another tool) gets onto a test image."""
    with open(img, "r+b") as f:
        hdr_size = struct.unpack(">Q", f.read(16)[8:16])[0]
        for off in (0, hdr_size):
            f.seek(off)
            area = bytearray(f.read(hdr_size))
            meta = edit(json.loads(bytes(area[4096:]).split(b"\0", 1)[0]))
            text = json.dumps(meta, separators=(",", ":")).encode()
            area[4096:] = text + b"\0" * (hdr_size - 4096 - len(text))
            area[448:512] = b"\0" * 64
            area[448:480] = hashlib.sha256(bytes(area)).digest()
            f.seek(off)
            f.write(area)


class Luks(tlib.ServerCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-luks-")
        self.img = self.make_image("img")
        self.keyfile = os.path.join(self.tmp.name, "pass")
        with open(self.keyfile, "wb") as f:
            f.write(PASSPHRASE)

    def tearDown(self):
        self.tmp.cleanup()

    def make_image(self, name, luks_type="luks2", pbkdf="pbkdf2"):
        img = os.path.join(self.tmp.name, name)
        with open(img, "wb") as f:
            f.truncate(32 * 1024 * 1024)
        args = ["cryptsetup", "luksFormat", "--batch-mode", "--type", luks_type, "--key-file", "-", img]
        if pbkdf == "pbkdf2":
            args[2:2] = ["--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000"]
        else:
            args[2:2] = ["--pbkdf", "argon2id", "--pbkdf-memory", "32768", "--pbkdf-force-iterations", "4"]
        run(*args, input=PASSPHRASE, check=True)
        return img

    def bind(self, *extra, pin="tang", cfg=None, img=None, env=None):
        return tether("luks", "bind", "-y", "-d", img or self.img, "-k", self.keyfile, *extra, pin, cfg or self.cfg,
                      env=env)

    def bound_to_a_server(self):
        """Slot 1 bound to a tetherd of its own. Returns the server (the
        caller closes it) and the binding's config."""
        a = tlib.Tetherd(args=["-q"])
        cfg = json.dumps({"url": f"http://127.0.0.1:{a.port}"}, separators=(",", ":"))
        try:
            self.assertEqual(self.bind(cfg=cfg).returncode, 0)
        except BaseException:
            a.close()
            raise
        return a, cfg

    def bind_then_lose_key(self):
        """Slot 1 bound to a tetherd that is then replaced, on the same port,
        by one with other keys: the binding's key is lost (404). Returns the
        new server (the caller closes it) and the binding's config."""
        a, cfg = self.bound_to_a_server()
        a.close()
        return tlib.Tetherd(port=a.port, args=["-q"]), cfg

    def kill_rekey_at_home(self):
        """A re-key of slot 1 killed after slot 1 was removed: the binding
        works on slot 2, marked as slot 1's."""
        r = detached("luks", "regen", "-y", "-k", self.keyfile, "-d", self.img, "-s", "1",
                     env=dict(os.environ, TETHER_FAULT="rekey-home:kill"))
        self.assertEqual(r.returncode, 99, r.stderr)

    def assert_consistent(self, img=None):
        """The user's slot 0 opens; every other keyslot is reachable through a
        clevis token whose key opens it; no token points at a missing slot."""
        img = img or self.img
        self.assertTrue(opens(img, PASSPHRASE, 0), "the original passphrase no longer opens slot 0")
        meta = luks_meta(img)
        slots = set(meta["keyslots"])
        tokens = {tid: t for tid, t in meta["tokens"].items() if t["type"] == "clevis"}
        assigned = {s for t in tokens.values() for s in t["keyslots"]}
        self.assertLessEqual(assigned, slots, "a token points at a missing keyslot")
        # A bind interrupted between adding the keyslot and assigning the token
        # leaves the key in an unassigned token: still recoverable.
        unassigned = [t for t in tokens.values() if not t["keyslots"]]
        for s in slots - {"0"}:
            if s in assigned:
                r = tether("luks", "pass", "-d", img, "-s", s)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertTrue(opens(img, r.stdout, int(s)))
                continue
            keys = [tether("decrypt", input=self.compact(t).encode()).stdout for t in unassigned]
            self.assertTrue(any(opens(img, k, int(s)) for k in keys), f"keyslot {s} has no token: its key is lost")

    @staticmethod
    def compact(token):
        j = token["jwe"]
        return ".".join([j["protected"], j.get("encrypted_key", ""), j["iv"], j["ciphertext"], j["tag"]])

    # ------------------------------------------------------------ the commands

    def test_bind_list_pass_unlock(self):
        r = self.bind()
        self.assertEqual(r.returncode, 0, r.stderr)
        meta = luks_meta(self.img)
        self.assertEqual(sorted(meta["keyslots"]), ["0", "1"])
        self.assertEqual(meta["keyslots"]["1"]["kdf"]["type"], "pbkdf2")
        self.assertEqual(meta["keyslots"]["1"]["kdf"]["iterations"], 1000)
        token = meta["tokens"]["0"]
        self.assertEqual((token["type"], token["keyslots"]), ("clevis", ["1"]))
        self.assertEqual(sorted(token["jwe"]), ["ciphertext", "encrypted_key", "iv", "protected", "tag"])
        self.assertEqual(tether("luks", "list", "-d", self.img).stdout.decode(), f"1: tang '{self.cfg}'\n")
        key = tether("luks", "pass", "-d", self.img, "-s", "1").stdout
        self.assertGreaterEqual(len(key), 43)  # 256 bits as base64url
        self.assertTrue(opens(self.img, key, 1))
        self.assertFalse(opens(self.img, key, 0))
        self.assertEqual(tether("luks", "unlock", "-d", self.img, "-t", "1").returncode, 0)
        self.assert_consistent()

    def test_bind_from_stdin_and_chosen_slot_and_token(self):
        r = tether("luks", "bind", "-y", "-d", self.img, "-k", "-", "-s", "5", "-t", "7", "tang", self.cfg,
                   input=PASSPHRASE + b"\n")
        self.assertEqual(r.returncode, 0, r.stderr)
        meta = luks_meta(self.img)
        self.assertEqual(meta["tokens"]["7"]["keyslots"], ["5"])
        self.assert_consistent()

    def test_bind_with_existing_token(self):
        self.assertEqual(self.bind().returncode, 0)
        r = tether("luks", "bind", "-y", "-d", self.img, "-e", "0", "null", "{}")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("2: null '{}'", tether("luks", "list", "-d", self.img).stdout.decode())
        self.assert_consistent()

    def test_sss_binding_lists_every_pin(self):
        cfg = json.dumps({"t": 1, "pins": {"tang": [{"url": self.url}, {"url": self.url}],
                                           "null": {}, "sss": {"t": 1, "pins": {"null": [{}]}}}})
        self.assertEqual(self.bind(pin="sss", cfg=cfg).returncode, 0)
        out = tether("luks", "list", "-d", self.img).stdout.decode()
        listed = json.loads(out.split(" ", 2)[2].strip().strip("'"))
        self.assertEqual(listed["t"], 1)
        self.assertEqual(listed["pins"]["tang"], [{"url": self.url}, {"url": self.url}])
        self.assertEqual(listed["pins"]["null"], [{}])
        self.assertEqual(listed["pins"]["sss"], {"t": 1, "pins": {"null": [{}]}})
        self.assert_consistent()

    def test_unbind(self):
        self.assertEqual(self.bind().returncode, 0)
        r = tether("luks", "unbind", "-d", self.img, "-s", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        meta = luks_meta(self.img)
        self.assertEqual(list(meta["keyslots"]), ["0"])
        self.assertEqual(meta["tokens"], {})
        # Slot 0 is not a binding, and the last keyslot: refused.
        r = tether("luks", "unbind", "-d", self.img, "-s", "0")
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a tether/clevis binding", r.stderr.decode())
        r = tether("luks", "unbind", "-d", self.img, "-s", "0", "-f")
        self.assertEqual(r.returncode, 1)
        self.assertIn("last keyslot", r.stderr.decode())
        self.assert_consistent()

    def test_regen_and_report_after_rotation(self):
        self.assertEqual(self.bind().returncode, 0)
        key = tether("luks", "pass", "-d", self.img, "-s", "1").stdout
        self.assertEqual(tether("luks", "report", "-d", self.img, "-s", "1", "-q").returncode, 0)
        tlib.tether_keys("rotate", self.srv.keydir)
        try:
            r = tether("luks", "report", "-d", self.img, "-s", "1", "-q")
            self.assertEqual(r.returncode, 1)
            self.assertIn("key rotated", r.stdout.decode())
            old_jwe = luks_meta(self.img)["tokens"]["0"]["jwe"]["protected"]
            r = tether("luks", "regen", "-d", self.img, "-s", "1", "-q")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(tether("luks", "report", "-d", self.img, "-s", "1", "-q").returncode, 0)
            meta = luks_meta(self.img)
            self.assertNotEqual(meta["tokens"]["0"]["jwe"]["protected"], old_jwe)
            # Same keyslot, same key: nothing but the token changed.
            self.assertEqual(tether("luks", "pass", "-d", self.img, "-s", "1").stdout, key)
            self.assert_consistent()
        finally:
            pass


    # ------------------------------------------------------------ regen trust

    def token_adv_thps(self, img, token="0"):
        """The signing keys the binding in token trusts (its JWE header's adv)."""
        prot = json.loads(tlib.unb64u(luks_meta(img)["tokens"][token]["jwe"]["protected"]))
        keys = prot["clevis"]["tang"]["adv"]["keys"]
        return {tlib.thumbprint(k) for k in keys if "verify" in k.get("key_ops", [])}

    def test_regen_after_rotation_trusts_what_the_old_key_vouches_for(self):
        # (a) A normal rotation: the old (now hidden) signing key signs
        # /adv/{old thp}, so regen needs neither -y nor a terminal.
        with tlib.Tetherd(args=["-q"]) as a:
            cfg = json.dumps({"url": f"http://127.0.0.1:{a.port}"})
            self.assertEqual(self.bind(cfg=cfg).returncode, 0)
            old_sig = tlib.thumbprint(tlib.key_of(a.keydir, "sig"))
            tlib.tether_keys("rotate", a.keydir)
            new_sig = tlib.thumbprint(tlib.key_of(a.keydir, "sig"))
            for args in (["regen", "-d", self.img, "-s", "1"], ["regen", "-q", "-d", self.img, "-s", "1"]):
                r = detached("luks", *args)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(self.token_adv_thps(self.img), {new_sig})
            # The new binding needs only the new keys: the rotated ones deleted.
            for k in tlib.load_keys(a.keydir):
                if k["hidden"]:
                    os.unlink(os.path.join(a.keydir, k["file"]))
            r = tether("luks", "pass", "-d", self.img, "-s", "1")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertTrue(opens(self.img, r.stdout, 1))
            self.assertNotIn(old_sig, self.token_adv_thps(self.img))
            self.assert_consistent()

    def replaced_server(self, a):
        """Server B's key directory: new keys, and A's exchange key kept
        hidden (as a proxy forwarding /rec to A would answer), but none of
        A's signing keys: nothing A signed vouches for B."""
        bdir = os.path.join(self.tmp.name, "b-keys")
        os.mkdir(bdir)
        tlib.tether_keys("gen", bdir)
        for k in tlib.load_keys(a.keydir):
            if k["role"] == "exc":
                shutil.copy(os.path.join(a.keydir, k["file"]), os.path.join(bdir, "." + k["file"].lstrip(".")))
        return bdir

    def test_regen_refuses_keys_no_old_key_vouches_for(self):
        # (b) and (c): server A replaced by B on the same address.
        a = tlib.Tetherd(args=["-q"])
        port, adir = a.port, a.keydir
        cfg = json.dumps({"url": f"http://127.0.0.1:{port}"})
        img2 = self.make_image("img2")
        try:
            self.assertEqual(self.bind(cfg=cfg).returncode, 0)
            self.assertEqual(self.bind(cfg=cfg, img=img2).returncode, 0)
            a_sig = self.token_adv_thps(self.img)
            bdir = self.replaced_server(a)
            a.stop()
            b_sig = tlib.thumbprint(tlib.key_of(bdir, "sig"))
            before = luks_meta(self.img)
            with tlib.Tetherd(keydir=bdir, port=port, args=["-q"]):
                for args in (["regen", "-d", self.img, "-s", "1"], ["regen", "-q", "-d", self.img, "-s", "1"],
                             ["report", "-r", "-d", self.img, "-s", "1"]):
                    with self.subTest(args=args):
                        r = detached("luks", *args)
                        self.assertEqual(r.returncode, 1, r.stderr)
                        msg = r.stderr.decode()
                        self.assertIn("no key the binding trusted vouches for the keys", msg)
                        self.assertIn(b_sig, msg)
                        self.assertIn("tether-keys show (or tang-show-keys) on the server", msg)
                        self.assertIn("-y", msg)
                        self.assertEqual(luks_meta(self.img), before)
                out, rc = tlib.on_terminal(["luks", "regen", "-d", self.img, "-s", "1"], [(b"[ynYN]", b"n\n")])
                self.assertEqual(rc, 1, out)
                self.assertIn("tether-keys show (or tang-show-keys) on", out)
                self.assertIn(b_sig, out)
                self.assertIn("were not trusted; the binding is unchanged", out)
                self.assertEqual(luks_meta(self.img), before)
            # Still A's binding: A back, and it opens.
            with tlib.Tetherd(keydir=adir, port=port, args=["-q"]):
                r = tether("luks", "pass", "-d", self.img, "-s", "1")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertTrue(opens(self.img, r.stdout, 1))
            # -y: the user has checked B's keys.
            with tlib.Tetherd(keydir=bdir, port=port, args=["-q"]):
                r = detached("luks", "regen", "-y", "-d", self.img, "-s", "1")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertEqual(self.token_adv_thps(self.img), {b_sig})
                r = detached("luks", "report", "-r", "-y", "-d", img2, "-s", "1")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("regenerated", r.stdout.decode())
                self.assertEqual(self.token_adv_thps(img2), {b_sig})
                self.assertNotEqual(a_sig, {b_sig})
                for img in (self.img, img2):
                    self.assert_consistent(img)
        finally:
            a.close()

    def test_regen_of_a_binding_whose_key_is_gone_asks_for_the_passphrase(self):
        # Bound, rotated and regenerated, then the server replaced by one with
        # a new, empty key directory on the same port: the binding's key is
        # gone for good. No -y or terminal answer can bring it back; as
        # Clevis's regen does, a passphrase that opens the volume lets slot 1
        # take a new key. The recovery, which uses only the keys the binding
        # already trusts, comes first: the passphrase is asked before any
        # trust question, and without one nothing suggests -y.
        a, cfg = self.bound_to_a_server()
        port = a.port
        try:
            tlib.tether_keys("rotate", a.keydir)
            r = detached("luks", "regen", "-d", self.img, "-s", "1")
            self.assertEqual(r.returncode, 0, r.stderr)
            a.stop()
            before = luks_meta(self.img)
            with tlib.Tetherd(port=port, args=["-q"]):
                for args in (["regen", "-d", self.img, "-s", "1"], ["regen", "-y", "-d", self.img, "-s", "1"],
                             ["regen", "-q", "-d", self.img, "-s", "1"],
                             ["report", "-r", "-y", "-d", self.img, "-s", "1"]):
                    with self.subTest(args=args):
                        r = detached("luks", *args)
                        self.assertEqual(r.returncode, 1, r.stderr)
                        msg = r.stderr.decode()
                        self.assertEqual(msg.count("\n"), 1, msg)
                        self.assertIn("no longer has the key this binding uses: it can be regenerated only with a "
                                      "passphrase that opens the volume", msg)
                        self.assertIn("(standard input, the terminal, or -k KEYFILE): cannot read it from standard "
                                      "input: it is empty", msg)
                        self.assertNotIn("vouches", msg)
                        self.assertNotIn("rerun", msg)
                        self.assertEqual(luks_meta(self.img), before)
                shown = msg.strip().split(": ", 1)[1].replace(self.img, "/dev/sda2").replace(f"http://127.0.0.1:{port}",
                                                                          "http://keys.example")
                self.assertTrue(any(shown in b for b in man_examples("tether-luks-regen.1")),
                                f"tether-luks-regen(1) does not show: {shown}")
                # A passphrase that opens nothing: refused, unchanged.
                r = detached("luks", "regen", "-y", "-d", self.img, "-s", "1", input=b"wrong\n")
                self.assertEqual(r.returncode, 1)
                self.assertIn("no keyslot opens with the passphrase given", r.stderr.decode())
                self.assertEqual(luks_meta(self.img), before)
                # edit likewise.
                r = detached("luks", "edit", "-f", "-y", "-d", self.img, "-s", "1", "-c", cfg)
                self.assertEqual(r.returncode, 1, r.stderr)
                msg = r.stderr.decode()
                self.assertIn("no longer has the key this binding uses: it can be edited only with a passphrase", msg)
                self.assertEqual(luks_meta(self.img), before)
                # The passphrase, but the new server's keys are vouched for by
                # nothing the binding trusts: -q refuses them, naming -y.
                r = detached("luks", "regen", "-q", "-d", self.img, "-s", "1", input=PASSPHRASE + b"\n")
                self.assertEqual(r.returncode, 1)
                self.assertIn("rerun with -y", r.stderr.decode())
                self.assertEqual(luks_meta(self.img), before)
                # On a terminal: the passphrase is asked first, then the keys.
                out, rc = tlib.on_terminal(["luks", "regen", "-d", self.img, "-s", "1"],
                                           [(b"LUKS password for", PASSPHRASE + b"\n"), (b"[ynYN]", b"y\n")])
                self.assertEqual(rc, 0, out)
                self.assertLess(out.index("LUKS password for"), out.index("trust these keys"), out)
                self.assert_consistent()
                self.assertEqual(sorted(luks_meta(self.img)["keyslots"]), ["0", "1"])
                self.assertEqual(tether("luks", "list", "-d", self.img).stdout.decode(), f"1: tang '{cfg}'\n")
            self.assertTrue(opens(self.img, PASSPHRASE, 0))
        finally:
            a.close()

    def test_regen_of_a_lost_key_from_stdin_and_key_file(self):
        # The same with the passphrase from a script: -k KEYFILE, -k - and
        # plain standard input (its first line), each after the key is lost.
        a, cfg = self.bound_to_a_server()
        port = a.port
        try:
            for how in (["-k", self.keyfile], ["-k", "-"], []):
                with self.subTest(how=how):
                    a.close()
                    a = tlib.Tetherd(port=port, args=["-q"])
                    r = detached("luks", "regen", "-y", *how, "-d", self.img, "-s", "1", input=PASSPHRASE + b"\nx\n")
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assert_consistent()
                    self.assertEqual(sorted(luks_meta(self.img)["keyslots"]), ["0", "1"])
                    r = tether("luks", "unlock", "-d", self.img, "-t", "1")
                    self.assertEqual(r.returncode, 0, r.stderr)
        finally:
            a.close()

    def assert_bound_on(self, img, slot, cfg):
        """slot is a working binding to cfg: listed, unlocked through, its
        key opening it."""
        self.assertEqual(tether("luks", "list", "-d", img).stdout.decode(), f"{slot}: tang '{cfg}'\n")
        r = tether("luks", "unlock", "-d", img, "-t", str(slot))
        self.assertEqual(r.returncode, 0, r.stderr)
        key = tether("luks", "pass", "-d", img, "-s", str(slot))
        self.assertEqual(key.returncode, 0, key.stderr)
        self.assertTrue(opens(img, key.stdout, slot))
        return key.stdout

    def test_fault_injection_regen_of_a_lost_key(self):
        # A re-key moves the binding through a spare keyslot (2 here): the new
        # key into slot 2, the token onto it (marked as slot 1's), slot 1
        # removed and added again with the new key, the token back on it,
        # slot 2 removed. Failed or killed at any step, the passphrase still
        # opens the volume, the header holds the old binding (which a rerun
        # re-keys again) or a working one, and one more regen, given the
        # passphrase, ends with a working binding on slot 1.
        self.require_fault_injection()
        points = ("rebind-token", "rekey-keyslot", "rekey-token", "rekey-destroy", "rekey-home", "rekey-assign",
                  "rekey-cleanup")
        for point in points:
            for mode in ("", ":kill"):
                with self.subTest(point=point + mode):
                    img = self.make_image(f"k-{point}{mode}")
                    with tlib.Tetherd(args=["-q"]) as a:
                        cfg = json.dumps({"url": f"http://127.0.0.1:{a.port}"}, separators=(",", ":"))
                        self.assertEqual(self.bind(img=img, cfg=cfg).returncode, 0)
                        for name in os.listdir(a.keydir):
                            os.unlink(os.path.join(a.keydir, name))
                        tlib.tether_gen(a.keydir)
                        before = luks_meta(img)
                        r = detached("luks", "regen", "-y", "-k", self.keyfile, "-d", img, "-s", "1",
                                     env=dict(os.environ, TETHER_FAULT=point + mode))
                        self.assertEqual(r.returncode, 99 if mode else 1, r.stderr)
                        msg = r.stderr.decode()
                        self.assertTrue(opens(img, PASSPHRASE, 0))
                        meta = luks_meta(img)
                        stray = []
                        if point in ("rebind-token", "rekey-keyslot") or point + mode == "rekey-token":
                            # Nothing written, or undone.
                            self.assertEqual(meta, before)
                        elif point == "rekey-token":
                            # Killed just after the spare keyslot was added:
                            # the old binding, and slot 2 with a key nobody has.
                            self.assertEqual(meta["tokens"], before["tokens"])
                            self.assertEqual(sorted(meta["keyslots"]), ["0", "1", "2"])
                            stray = ["2"]
                        elif point == "rekey-cleanup":
                            # The binding is back on slot 1; slot 2, which held
                            # its key meanwhile, is left (named on failure).
                            key = self.assert_bound_on(img, 1, cfg)
                            self.assertTrue(opens(img, key, 2))
                            if not mode:
                                self.assertIn("slot 2, which held its key during the change, is left: remove it "
                                              f"(cryptsetup luksKillSlot {img} 2)", msg)
                            stray = ["2"]
                        else:
                            # The new binding works, on slot 2 for now.
                            self.assert_bound_on(img, 2, cfg)
                            if not mode:
                                said = ("the binding works, on slot 2 for now: run the same command again to move "
                                        "it back to slot 1")
                                self.assertIn(said, msg)
                                self.assertTrue(any(said in e for e in man_examples("tether-luks-regen.1")))
                        # Once more, the passphrase on standard input; after a
                        # kill mid-move, by the slot the binding is on now.
                        slot = "2" if point + mode == "rekey-assign:kill" else "1"
                        r = detached("luks", "regen", "-y", "-d", img, "-s", slot, input=PASSPHRASE + b"\n")
                        self.assertEqual(r.returncode, 0, r.stderr)
                        self.assertTrue(opens(img, PASSPHRASE, 0))
                        self.assert_bound_on(img, 1, cfg)
                        self.assertEqual(sorted(luks_meta(img)["keyslots"]), sorted(["0", "1", *stray]))
                        self.assertNotIn("tether-rekey", json.dumps(luks_meta(img)["tokens"]))

    def test_resumed_rekey_never_removes_a_keyslot_added_meanwhile(self):
        # Killed after slot 1 (whose key was lost) was removed: the binding
        # works on slot 2, marked as slot 1's. The admin then adds a recovery
        # passphrase, which cryptsetup puts in the first free slot, 1. A later
        # regen (no passphrase: the key is recovered) must not remove it.
        self.require_fault_injection()
        a, cfg = self.bind_then_lose_key()
        try:
            self.kill_rekey_at_home()
            run("cryptsetup", "luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
                "--key-file", self.keyfile, self.img, "-", input=b"recovery", check=True)
            self.assertTrue(opens(self.img, b"recovery", 1))
            r = detached("luks", "regen", "-y", "-d", self.img, "-s", "2")
            self.assertTrue(opens(self.img, b"recovery", 1), r.stderr)
            # Nothing lost, so exit 0, saying where the binding is now.
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(f"{self.img}: slot 1 changed since the binding's move from it began", r.stderr.decode())
            self.assertIn("nothing was removed; the binding now lives on slot 2, and works", r.stderr.decode())
            shown = r.stderr.decode().strip().replace(self.img, "/dev/sda2")
            self.assertIn(shown, man_examples("tether-luks-regen.1"))
            self.assert_bound_on(self.img, 2, cfg)
            self.assertNotIn("tether-rekey", json.dumps(luks_meta(self.img)["tokens"]))
            self.assertTrue(opens(self.img, PASSPHRASE, 0))
        finally:
            a.close()

    def test_a_crafted_rekey_mark_never_removes_the_passphrase(self):
        # The header is untrusted: a token marked "tether-rekey": "0" (the
        # user's passphrase slot) must not make regen remove slot 0.
        self.assertEqual(self.bind().returncode, 0)
        tok = json.loads(run("cryptsetup", "token", "export", "--token-id", "0", self.img, check=True).stdout)
        tok["tether-rekey"] = "0"
        run("cryptsetup", "token", "import", "--token-id", "0", "--token-replace", self.img,
            input=json.dumps(tok).encode(), check=True)
        r = detached("luks", "regen", "-y", "-d", self.img, "-s", "1")
        self.assertTrue(opens(self.img, PASSPHRASE, 0), r.stderr)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("slot 0 changed since the binding's move from it began", r.stderr.decode())
        self.assertNotIn("tether-rekey", json.dumps(luks_meta(self.img)["tokens"]))
        self.assert_consistent()

    def test_a_rekey_mark_with_the_identity_of_another_keyslot_removes_nothing(self):
        # A mark in tether's own form, naming slot 0 with an identity that is
        # not slot 0's (as after luksChangeKey, which draws a new salt): slot 0
        # stays, whatever key it holds; so does a mark that is not in the form.
        self.assertEqual(self.bind().returncode, 0)
        # A second passphrase: slot 0 is not the last way in without a server.
        run("cryptsetup", "luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
            "--key-file", self.keyfile, self.img, "-", input=b"recovery", check=True)
        for mark in ("0:" + "ab" * 32, "0:" + "AB" * 32, "00", "0:", " 0"):
            with self.subTest(mark=mark):
                tok = json.loads(run("cryptsetup", "token", "export", "--token-id", "0", self.img, check=True).stdout)
                tok["tether-rekey"] = mark
                run("cryptsetup", "token", "import", "--token-id", "0", "--token-replace", self.img,
                    input=json.dumps(tok).encode(), check=True)
                r = detached("luks", "regen", "-y", "-d", self.img, "-s", "1")
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertTrue(opens(self.img, PASSPHRASE, 0), r.stderr)
                self.assertEqual(sorted(luks_meta(self.img)["keyslots"]), ["0", "1", "2"])
                self.assertNotIn("tether-rekey", json.dumps(luks_meta(self.img)["tokens"]))
                self.assertTrue(opens(self.img, b"recovery", 2))
                self.assertTrue(opens(self.img, PASSPHRASE, 0))
                key = tether("luks", "pass", "-d", self.img, "-s", "1")
                self.assertTrue(opens(self.img, key.stdout, 1), key.stderr)

    def test_a_rekey_mark_never_removes_the_last_keyslot_that_opens_without_a_server(self):
        # A mark written by hand with slot 0's very identity (the SHA-256 of
        # its salt, which anyone with the header can compute): slot 0 is the
        # only passphrase, so it stays all the same.
        self.assertEqual(self.bind().returncode, 0)
        salt = luks_meta(self.img)["keyslots"]["0"]["kdf"]["salt"]
        tok = json.loads(run("cryptsetup", "token", "export", "--token-id", "0", self.img, check=True).stdout)
        tok["tether-rekey"] = "0:" + hashlib.sha256(salt.encode()).hexdigest()
        run("cryptsetup", "token", "import", "--token-id", "0", "--token-replace", self.img,
            input=json.dumps(tok).encode(), check=True)
        r = detached("luks", "regen", "-y", "-d", self.img, "-s", "1")
        self.assertTrue(opens(self.img, PASSPHRASE, 0), r.stderr)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("slot 0 changed since the binding's move from it began", r.stderr.decode())
        self.assertEqual(sorted(luks_meta(self.img)["keyslots"]), ["0", "1"])
        self.assert_consistent()

    def test_regen_of_a_slot_prefers_its_own_binding_to_a_marked_one(self):
        # Slot 1 and slot 2 are both bindings; slot 2's token says (a mark
        # written by hand, or left over) that it belongs on slot 1. regen -s 1
        # is about slot 1's binding: slot 2's is left as it is.
        self.assertEqual(self.bind().returncode, 0)
        self.assertEqual(self.bind().returncode, 0)
        tok = json.loads(run("cryptsetup", "token", "export", "--token-id", "1", self.img, check=True).stdout)
        self.assertEqual(tok["keyslots"], ["2"])
        tok["tether-rekey"] = "1"
        run("cryptsetup", "token", "import", "--token-id", "1", "--token-replace", self.img,
            input=json.dumps(tok).encode(), check=True)
        before = luks_meta(self.img)["tokens"]
        r = detached("luks", "regen", "-y", "-d", self.img, "-s", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        after = luks_meta(self.img)["tokens"]
        self.assertEqual(after["1"], before["1"], "slot 2's binding was regenerated instead of slot 1's")
        self.assertNotEqual(after["0"]["jwe"], before["0"]["jwe"], "slot 1's binding was not regenerated")
        self.assertEqual(after["0"]["keyslots"], ["1"])

    def test_resumed_rekey_says_which_slot_the_binding_came_back_from(self):
        # Killed after slot 1 was removed: regen -s 1 (no binding is on slot 1)
        # finds the binding on slot 2 by its mark, moves it back and says so.
        self.require_fault_injection()
        a, cfg = self.bind_then_lose_key()
        try:
            self.kill_rekey_at_home()
            r = detached("luks", "regen", "-y", "-d", self.img, "-s", "1")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn(f"{self.img}: the binding of slot 1, left on slot 2 by an interrupted re-key, is back on "
                          "slot 1", r.stderr.decode())
            shown = r.stderr.decode().strip().replace(self.img, "/dev/sda2")
            self.assertIn(shown, man_examples("tether-luks-regen.1"))
            self.assert_bound_on(self.img, 1, cfg)
            self.assertEqual(sorted(luks_meta(self.img)["keyslots"]), ["0", "1"])
        finally:
            a.close()

    def test_resumed_rekey_whose_key_is_lost_again_says_the_binding_does_not_work(self):
        # Killed after slot 1 was removed, and then the server loses its keys
        # again: the binding on slot 2 does not work either. A rerun with the
        # passphrase that fails before the token is written must not claim it
        # does; it says the passphrase still opens the volume, leaves no
        # keyslot with a key nobody has, and one more run ends on slot 1.
        self.require_fault_injection()
        a, cfg = self.bind_then_lose_key()
        try:
            self.kill_rekey_at_home()
            a.close()
            a = tlib.Tetherd(port=a.port, args=["-q"])
            r = detached("luks", "regen", "-y", "-k", self.keyfile, "-d", self.img, "-s", "1",
                         env=dict(os.environ, TETHER_FAULT="rekey-assign"))
            self.assertEqual(r.returncode, 1, r.stderr)
            msg = r.stderr.decode()
            self.assertNotIn("the binding works", msg)
            self.assertIn("the binding does not work yet (the key of slot 2's token is gone too), but the passphrase "
                          "still opens the volume: run the same command again, with the passphrase", msg)
            self.assertEqual(sorted(luks_meta(self.img)["keyslots"]), ["0", "2"])
            self.assertTrue(opens(self.img, PASSPHRASE, 0))
            r = detached("luks", "regen", "-y", "-k", self.keyfile, "-d", self.img, "-s", "1")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assert_bound_on(self.img, 1, cfg)
            self.assertEqual(sorted(luks_meta(self.img)["keyslots"]), ["0", "1"])
        finally:
            a.close()

    def test_regen_of_a_lost_key_when_the_header_changes_meanwhile(self):
        # While regen waits for the passphrase, cryptsetup luksAddKey writes
        # the header (into slot 2, the free slot regen picked too): libcryptsetup
        # refuses the stale write. The message says so, not "no free keyslot";
        # nothing of tether's is written, and a rerun works.
        a, cfg = self.bind_then_lose_key()
        try:
            before = luks_meta(self.img)["tokens"]
            p = subprocess.Popen([tlib.TETHER, "luks", "regen", "-y", "-d", self.img, "-s", "1"], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
            try:
                # Once it reads standard input (read(0, ...)), its header is loaded.
                for _ in range(600):
                    with open(f"/proc/{p.pid}/syscall") as f:
                        if f.read().split()[:2] == ["0", "0x0"]:
                            break
                    time.sleep(0.05)
                else:
                    self.fail("tether luks regen never read its standard input")
                run("cryptsetup", "luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations",
                    "1000", "--key-file", self.keyfile, self.img, "-", input=b"recovery", check=True)
                _, err = p.communicate(PASSPHRASE + b"\n", timeout=60)
            finally:
                p.kill()
                p.wait()
            self.assertEqual(p.returncode, 1, err)
            self.assertIn("cannot add a keyslot: the LUKS2 header changed meanwhile (another cryptsetup or tether "
                          "running?): nothing was added; run the same command again", err.decode())
            self.assertNotIn("no free keyslot", err.decode())
            self.assertEqual(luks_meta(self.img)["tokens"], before)
            self.assertEqual(sorted(luks_meta(self.img)["keyslots"]), ["0", "1", "2"])
            self.assertTrue(opens(self.img, b"recovery", 2))
            r = detached("luks", "regen", "-y", "-d", self.img, "-s", "1", input=PASSPHRASE + b"\n")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assert_bound_on(self.img, 1, cfg)
            self.assertTrue(opens(self.img, b"recovery", 2))
        finally:
            a.close()

    def test_regen_of_a_lost_key_needs_a_free_keyslot(self):
        # Every keyslot taken: refused before anything is written.
        a, cfg = self.bound_to_a_server()
        port = a.port
        try:
            for s in range(2, 32):
                run("cryptsetup", "luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations",
                    "1000", "--key-file", self.keyfile, "--key-slot", str(s), self.img, "-", input=f"k{s}".encode(),
                    check=True)
            a.close()
            a = tlib.Tetherd(port=port, args=["-q"])
            before = luks_meta(self.img)
            r = detached("luks", "regen", "-y", "-d", self.img, "-s", "1", input=PASSPHRASE + b"\n")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn("slot 1: no free keyslot: a new key needs one for a moment, while slot 1 is replaced; "
                          "nothing was changed", r.stderr.decode())
            self.assertEqual(luks_meta(self.img), before)
            shown = r.stderr.decode().strip().replace(self.img, "/dev/sda2")
            self.assertIn(shown, man_examples("tether-luks-regen.1"))
        finally:
            a.close()

    # ------------------------------------------------------------ the docs say what the program does

    def test_readme_synopsis_is_every_usage_line(self):
        with open(os.path.join(SRCDIR, "README.md")) as f:
            readme = f.read()
        synopsis = readme.split("## tether luks\n", 1)[1].split("```\n")[1].splitlines()
        for cmd in ("bind", "unbind", "list", "pass", "unlock", "regen", "report", "edit"):
            usage = tether("luks", cmd, "-h").stdout.decode().splitlines()[0].removeprefix("Usage: ")
            self.assertIn(usage, synopsis, f"README's tether luks synopsis lacks: {usage}")

    def test_unbind_man_page_shows_the_real_refusal(self):
        r = tether("luks", "unbind", "-d", self.img, "-s", "0")
        self.assertEqual(r.returncode, 1)
        shown = r.stderr.decode().strip().replace(self.img, "/dev/sda2")
        examples = man_examples("tether-luks-unbind.1")
        self.assertTrue(any(shown in b for b in examples), f"tether-luks-unbind(1) does not show: {shown}")
        self.assertFalse(any("removes it anyway" in b for b in examples))

    # ------------------------------------------------------------ unbind keeps a way in

    def test_unbind_keeps_the_last_passphrase(self):
        self.assertEqual(self.bind().returncode, 0)
        self.assertEqual(self.bind(pin="null", cfg="{}").returncode, 0)
        before = luks_meta(self.img)
        # Only network and null bindings would be left: refused, even with -f.
        r = tether("luks", "unbind", "-d", self.img, "-s", "0", "-f")
        self.assertEqual(r.returncode, 1)
        msg = r.stderr.decode()
        self.assertIn("last keyslot that opens without a server", msg)
        self.assertIn("cryptsetup luksAddKey", msg)
        self.assertIn("--remove-last-passphrase", msg)
        self.assertEqual(luks_meta(self.img), before)
        # A second passphrase: slot 0 may go.
        run("cryptsetup", "luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
            "--key-file", self.keyfile, "--key-slot", "5", self.img, "-", input=b"second", check=True)
        r = tether("luks", "unbind", "-d", self.img, "-s", "0", "-f")
        self.assertEqual(r.returncode, 0, r.stderr)
        # Now slot 5 is the last one; the explicit option removes it.
        r = tether("luks", "unbind", "-d", self.img, "-s", "5", "-f")
        self.assertEqual(r.returncode, 1)
        self.assertIn("--remove-last-passphrase", r.stderr.decode())
        r = tether("luks", "unbind", "-d", self.img, "-s", "5", "-f", "--remove-last-passphrase")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sorted(luks_meta(self.img)["keyslots"]), ["1", "2"])
        r = tether("luks", "unlock", "-d", self.img, "-t", "1")
        self.assertEqual(r.returncode, 0, r.stderr)

    # ------------------------------------------------------------ malformed tokens

    def test_malformed_token_is_not_a_binding(self):
        # Tokens libcryptsetup loads but Clevis never writes: assigned to two
        # keyslots, or to keyslot "32" (beyond LUKS2's 0..31; cryptsetup only
        # checks that a keyslot of that name exists).
        for case in ("two", "32"):
            with self.subTest(case=case):
                img = self.make_image(f"m-{case}")
                self.assertEqual(self.bind(img=img).returncode, 0)

                def edit(meta):
                    if case == "two":
                        meta["tokens"]["0"]["keyslots"] = ["1", "0"]
                    else:
                        meta["keyslots"]["32"] = meta["keyslots"].pop("1")
                        for d in meta["digests"].values():
                            d["keyslots"] = ["32" if s == "1" else s for s in d["keyslots"]]
                        meta["tokens"]["0"]["keyslots"] = ["32"]
                    return meta
                edit_luks2_json(img, edit)
                before = luks_meta(img)
                r = tether("luks", "list", "-d", img)
                self.assertEqual(r.returncode, 1)
                self.assertEqual(r.stdout, b"")
                self.assertIn("token 0 is not a valid clevis token", r.stderr.decode())
                for args in (["unbind", "-d", img, "-s", "1"], ["unbind", "-d", img, "-s", "0"],
                             ["report", "-d", img, "-s", "1"], ["regen", "-d", img, "-s", "1"],
                             ["pass", "-d", img, "-s", "1"]):
                    r = tether("luks", *args)
                    self.assertEqual(r.returncode, 1, args)
                    self.assertIn("token 0 is not a valid clevis token", r.stderr.decode(), args)
                r = tether("luks", "unlock", "-d", img, "-t", "-1")
                self.assertEqual(r.returncode, 1)
                self.assertIn("no usable", r.stderr.decode())
                self.assertEqual(luks_meta(img), before)

    # ------------------------------------------------------------ allocation failure

    def test_report_survives_a_failed_allocation(self):
        # asprintf() leaves its pointer undefined when it fails; a shim makes
        # it fail, with a poisoned pointer, for the lines report prints.
        cc = shutil.which("cc")
        if not cc:
            self.skipTest("no C compiler")
        src = os.path.join(self.tmp.name, "shim.c")
        shim = os.path.join(self.tmp.name, "shim.so")
        with open(src, "w") as f:
            f.write(ASPRINTF_SHIM)
        run(cc, "-shared", "-fPIC", "-O1", "-o", shim, src, check=True)
        with tlib.Tetherd(args=["-q"]) as a:
            cfg = json.dumps({"url": f"http://127.0.0.1:{a.port}"})
            self.assertEqual(self.bind(cfg=cfg).returncode, 0)
            tlib.tether_keys("rotate", a.keydir)
            env = dict(os.environ, LD_PRELOAD=shim, ASAN_OPTIONS="verify_asan_link_order=0")
            r = tether("luks", "report", "-d", self.img, "-s", "1", env=env)
            self.assertEqual(r.returncode, 1, f"{r.returncode}: {r.stderr}")
            self.assertIn("out of memory", r.stderr.decode())
            # Without the shim: the stale keys reported.
            r = tether("luks", "report", "-d", self.img, "-s", "1")
            self.assertIn("key rotated, still recoverable", r.stdout.decode())

    def test_edit(self):
        self.assertEqual(self.bind().returncode, 0)
        cfg = json.dumps({"t": 1, "pins": {"tang": [{"url": self.url}]}})
        # edit keeps the pin; changing tang's url to a list of one is still tang.
        new = json.dumps({"url": self.url + "/"}, separators=(",", ":"))
        r = tether("luks", "edit", "-d", self.img, "-s", "1", "-c", new, "-y")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(tether("luks", "list", "-d", self.img).stdout.decode(), f"1: tang '{new}'\n")
        r = tether("luks", "edit", "-d", self.img, "-s", "1", "-c", "not json", "-y")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(tether("luks", "list", "-d", self.img).stdout.decode(), f"1: tang '{new}'\n")
        del cfg
        self.assert_consistent()

    def test_misspelled_config_key_is_refused_everywhere(self):
        # "tph" for "thp": ignored, it would bind with no thumbprint check.
        typo = json.dumps({"url": self.url, "tph": "x"})
        nested = json.dumps({"t": 1, "pins": {"sss": {"t": 1, "pins": {"tang": [{"url": self.url, "tph": "x"}]}}}})
        msg = 'unknown key "tph" (known: url, thp, adv)'
        r = tether("encrypt", "-y", "tang", typo, input=b"secret")
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stdout, b"")
        self.assertEqual(r.stderr.decode(), f"tether encrypt tang: tang configuration: {msg}\n")
        before = luks_meta(self.img)
        for pin, cfg in (("tang", typo), ("sss", nested)):
            r = self.bind(pin=pin, cfg=cfg)
            self.assertEqual(r.returncode, 1, pin)
            self.assertIn(msg, r.stderr.decode())
        self.assertEqual(luks_meta(self.img), before)
        self.assertEqual(self.bind().returncode, 0)
        listed = tether("luks", "list", "-d", self.img).stdout
        r = tether("luks", "edit", "-d", self.img, "-s", "1", "-c", typo, "-y")
        self.assertEqual(r.returncode, 1)
        self.assertIn(msg, r.stderr.decode())
        self.assertEqual(tether("luks", "list", "-d", self.img).stdout, listed)
        self.assert_consistent()

    def test_control_characters_from_a_header_are_escaped(self):
        # A header's URL reaches messages and listings; a terminal must not
        # obey what it holds (colours, a forged second line, DEL).
        self.assertEqual(self.bind().returncode, 0)
        nasty = f"http://127.0.0.1:{tlib.free_port()}/\x1b[31m\nforged\x7f"
        token = json.loads(run("cryptsetup", "token", "export", "--token-id", "0", self.img, check=True).stdout)
        header = json.loads(tlib.unb64u(token["jwe"]["protected"]))
        header["clevis"]["tang"]["url"] = nasty
        token["jwe"]["protected"] = tlib.b64u(json.dumps(header).encode())
        path = os.path.join(self.tmp.name, "token.json")
        with open(path, "w") as f:
            json.dump(token, f)
        run("cryptsetup", "token", "remove", "--token-id", "0", self.img, check=True)
        run("cryptsetup", "token", "import", "--disable-external-tokens", "--token-id", "0", "--json-file", path,
            self.img, check=True)
        escaped = "\\x1b[31m\\x0aforged\\x7f"
        env = dict(os.environ, TETHER_TIMEOUT="1")
        runs = {
            "decrypt": tether("decrypt", input=self.compact(token).encode(), env=env),
            "luks pass": tether("luks", "pass", "-d", self.img, "-s", "1", env=env),
            "luks report": tether("luks", "report", "-d", self.img, "-s", "1", env=env),
            "luks list": tether("luks", "list", "-d", self.img, env=env),
        }
        for name, r in runs.items():
            with self.subTest(name):
                # report names an unreachable server on its line of the report.
                out = r.stdout if name in ("luks list", "luks report") else r.stderr
                self.assertEqual(out.count(b"\n"), 1, out)
                self.assertTrue(out.endswith(b"\n"), out)
                self.assertFalse(any(b < 0x20 and b != 0x0a or b == 0x7f for b in out), out)
                if name != "luks list":
                    self.assertNotEqual(r.returncode, 0)
                    self.assertIn(escaped, out.decode())
                else:
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertIn("\\x7f", out.decode())

    # ------------------------------------------------------------ errors

    def test_errors_leave_the_header_alone(self):
        before = luks_meta(self.img)
        cases = {
            "wrong passphrase": (["-k", os.devnull], "no keyslot opens"),
            "busy slot": (["-s", "0"], "slot 0 is already in use"),
            "unreachable server": ([], "unreachable"),
            "bad config": ([], "not valid JSON"),
        }
        for name, (extra, msg) in cases.items():
            cfg = self.cfg
            if name == "unreachable server":
                cfg = json.dumps({"url": f"http://127.0.0.1:{tlib.free_port()}"})
            if name == "bad config":
                cfg = "{"
            args = ["luks", "bind", "-y", "-d", self.img, *(extra or ["-k", self.keyfile]), "tang", cfg]
            if extra and extra[0] != "-k":
                args[5:5] = ["-k", self.keyfile]
            r = tether(*args, env=dict(os.environ, TETHER_TIMEOUT="2"))
            self.assertEqual(r.returncode, 1, name)
            self.assertIn(msg, r.stderr.decode(), name)
            self.assertEqual(luks_meta(self.img), before, name)
        self.assert_consistent()

    def test_no_free_slot(self):
        meta_slots = 32
        for s in range(1, meta_slots):
            run("cryptsetup", "luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
                "--key-file", self.keyfile, "--key-slot", str(s), self.img, "-", input=f"k{s}".encode(), check=True)
        before = luks_meta(self.img)
        r = self.bind()
        self.assertEqual(r.returncode, 1)
        self.assertIn("no free keyslot", r.stderr.decode())
        self.assertEqual(luks_meta(self.img), before)

    def test_not_luks_and_luks1(self):
        plain = os.path.join(self.tmp.name, "plain")
        with open(plain, "wb") as f:
            f.truncate(1 << 20)
        r = tether("luks", "list", "-d", plain)
        self.assertEqual(r.returncode, 1)
        self.assertIn("not a LUKS device", r.stderr.decode())
        luks1 = self.make_image("luks1", luks_type="luks1")
        before = open(luks1, "rb").read(1 << 20)
        for args in (["list", "-d", luks1], ["bind", "-y", "-d", luks1, "-k", self.keyfile, "tang", self.cfg]):
            r = tether("luks", *args)
            self.assertEqual(r.returncode, 1)
            self.assertIn("LUKS1 is not supported; convert with cryptsetup convert", r.stderr.decode())
        self.assertEqual(open(luks1, "rb").read(1 << 20), before)

    def test_usage_errors(self):
        for args in (["luks"], ["luks", "bogus"], ["luks", "bind", "-d", self.img], ["luks", "pass", "-d", self.img],
                     ["luks", "unbind", "-s", "1"], ["luks", "list"], ["luks", "pass", "-d", self.img, "-s", "x"]):
            r = tether(*args)
            self.assertEqual(r.returncode, 2, args)

    def test_unlock_needs_device_mapper_or_t(self):
        self.assertEqual(self.bind().returncode, 0)
        if os.path.exists("/dev/mapper/control"):
            self.skipTest("device-mapper present")
        r = tether("luks", "unlock", "-d", self.img, "-n", "x")
        self.assertEqual(r.returncode, 1)
        self.assertIn("device-mapper", r.stderr.decode())

    def test_unlock_tries_bindings_until_one_works(self):
        # A binding to a dead server and one that works: unlock succeeds.
        self.assertEqual(self.bind(pin="null", cfg='{"fail":true}').returncode, 0)
        self.assertEqual(self.bind().returncode, 0)
        self.assertEqual(tether("luks", "unlock", "-d", self.img, "-t", "-1").returncode, 0)
        r = tether("luks", "unlock", "-d", self.img, "-t", "1")
        self.assertEqual(r.returncode, 1)

    def test_orphan_token_reported(self):
        self.assertEqual(self.bind().returncode, 0)
        run("cryptsetup", "luksKillSlot", "--batch-mode", self.img, "1", check=True)
        r = tether("luks", "list", "-d", self.img)
        self.assertEqual(r.returncode, 1)
        self.assertIn("orphan", r.stderr.decode())
        r = tether("luks", "report", "-d", self.img, "-s", "1")
        self.assertEqual(r.returncode, 1)
        self.assertIn("orphan", r.stderr.decode())

    # ------------------------------------------------------------ faults

    def require_fault_injection(self):
        """On a build that ignores TETHER_FAULT (the default, a release build)
        the fault tests are skipped, saying so; tests/run.sh, which CI runs,
        turns fault injection on and sets TETHER_REQUIRE_FAULT_INJECTION=1, so
        there they fail instead of being skipped unnoticed."""
        if os.environ.get("TETHER_FAULT_INJECTION", "1") == "1":
            return
        why = "this build ignores TETHER_FAULT: configure it with -Dfault_injection=true (tests/run.sh does)"
        if os.environ.get("TETHER_REQUIRE_FAULT_INJECTION") == "1":
            self.fail(why)
        self.skipTest(why)

    def test_fault_injection_is_off_by_default(self):
        # A release build must not carry a switch that can kill a bind half-way.
        top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        r = run("meson", "introspect", "--buildoptions", os.path.join(top, "meson.build"))
        self.assertEqual(r.returncode, 0, r.stderr)
        options = {o["name"]: o["value"] for o in json.loads(r.stdout)}
        self.assertIs(options["fault_injection"], False)

    def test_build_without_fault_injection_ignores_tether_fault(self):
        # What the build says it is (meson's option, passed in by tests/meson.build)
        # is what the binary does.
        enabled = os.environ.get("TETHER_FAULT_INJECTION")
        if enabled is None:
            self.skipTest("not run by meson: the build's fault_injection option is unknown")
        with open(tlib.TETHER, "rb") as f:
            self.assertEqual(b"TETHER_FAULT" in f.read(), enabled == "1")
        r = self.bind(env=dict(os.environ, TETHER_FAULT="bind-token:kill"))
        if enabled == "1":
            self.assertEqual(r.returncode, 99)
            self.assert_consistent()
        else:
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assert_consistent()
            self.assertEqual(len(luks_meta(self.img)["tokens"]), 1)

    def test_fault_injection_bind(self):
        self.require_fault_injection()
        for point in ("bind-token", "bind-keyslot", "bind-assign"):
            for mode in ("", ":kill"):
                with self.subTest(point=point + mode):
                    img = self.make_image(f"f-{point}{mode}")
                    r = self.bind(img=img, env=dict(os.environ, TETHER_FAULT=point + mode))
                    self.assertNotEqual(r.returncode, 0)
                    if mode == "":
                        self.assertIn(f"fault injected at {point}", r.stderr.decode())
                        # Failure: rolled back to exactly one keyslot and no token.
                        meta = luks_meta(img)
                        self.assertEqual(list(meta["keyslots"]), ["0"])
                        self.assertEqual(meta["tokens"], {})
                    self.assert_consistent(img)
                    # A clean bind works afterwards.
                    self.assertEqual(self.bind(img=img).returncode, 0)
                    self.assert_consistent(img)

    def test_fault_injection_unbind_and_rebind(self):
        self.require_fault_injection()
        for point in ("unbind-keyslot", "unbind-token", "rebind-token"):
            for mode in ("", ":kill"):
                with self.subTest(point=point + mode):
                    img = self.make_image(f"u-{point}{mode}")
                    self.assertEqual(self.bind(img=img).returncode, 0)
                    env = dict(os.environ, TETHER_FAULT=point + mode)
                    if point.startswith("unbind"):
                        r = tether("luks", "unbind", "-d", img, "-s", "1", env=env)
                    else:
                        r = tether("luks", "regen", "-d", img, "-s", "1", "-q", env=env)
                    self.assertNotEqual(r.returncode, 0)
                    self.assertTrue(opens(img, PASSPHRASE, 0))
                    if point == "unbind-token":
                        # The keyslot is gone, its token left: reported as an orphan.
                        self.assertIn("orphan", tether("luks", "list", "-d", img).stderr.decode())
                    else:
                        self.assert_consistent(img)


ASPRINTF_SHIM = r"""
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static int fake(char **strp, const char *fmt, va_list ap) {
        if (strcmp(fmt, "%s slot %d: %s") == 0) {
                *strp = (char *) (uintptr_t) 0x10;   /* "undefined" */
                return -1;
        }
        return vasprintf(strp, fmt, ap);
}

int asprintf(char **strp, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int r = fake(strp, fmt, ap);
        va_end(ap);
        return r;
}

int __asprintf_chk(char **strp, int flag, const char *fmt, ...) {
        va_list ap;
        (void) flag;
        va_start(ap, fmt);
        int r = fake(strp, fmt, ap);
        va_end(ap);
        return r;
}
"""


if __name__ == "__main__":
    tlib.main()
