"""tether boot check against real images: LUKS2 image files bound to tetherds
on loopback, and initramfs images built by Debian's mkinitramfs (with and
without tether's hook) and by dracut (with and without tether's module), each
built once (tests/lib/initramfs_images.py: private trees, nothing of the host
touched). The root is given with --root, the kernel command line with
--cmdline, the token plugin directory with --tokendir.

Checks: a good image of either system and a bound root whose binding
decrypts: exit 0; an image without tether, a volume the initramfs does not
open, a missing rd.neednet=1, a stopped server, a deleted key, an unbound
root: exit 1 naming the problem and its fix; --json carries the same.

Skipped (exit 77) when neither mkinitramfs nor dracut can build images here;
the tests of the missing one are skipped."""

import json
import os
import sys
import tempfile
import time
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import initramfs_images  # noqa: E402
import tlib  # noqa: E402
from initramfs_images import luks_image  # noqa: E402

TOOLS_MISSING = initramfs_images.missing_initramfs_tools()
DRACUT_MISSING = initramfs_images.missing_dracut()

S = {}  # what setUpModule made


def tang(srv):
    return f'{{"url":"http://127.0.0.1:{srv.port}"}}'


def setUpModule():
    tmp = tempfile.TemporaryDirectory(prefix="tether-bootcheck-")
    S["tmp"] = tmp
    d = tmp.name
    S["dir"] = d
    srv = tlib.Tetherd(args=["-q"])
    S["srv"] = srv
    S["root"] = luks_image(os.path.join(d, "root.img"), "tang", tang(srv))
    S["data"] = luks_image(os.path.join(d, "data.img"), "tang", tang(srv))
    S["plain"] = luks_image(os.path.join(d, "plain.img"))
    # A server that is then stopped.
    gone = tlib.Tetherd(args=["-q"])
    S["gone"] = luks_image(os.path.join(d, "gone.img"), "tang", tang(gone))
    S["gone_url"] = f"http://127.0.0.1:{gone.port}"
    gone.close()
    # A server replaced, on its port, by one with other keys: the key is gone.
    lost = tlib.Tetherd(args=["-q"])
    S["lost"] = luks_image(os.path.join(d, "lost.img"), "tang", tang(lost))
    S["lost_url"] = f"http://127.0.0.1:{lost.port}"
    lost.close()
    S["lost_srv"] = tlib.Tetherd(port=lost.port, args=["-q"])

    # The images, built at the same time (mkinitramfs takes 10-30 s each).
    builds, errors = [], []

    def build(name, fn):
        def run():
            try:
                S[name] = fn()
            except BaseException as e:  # reported by the tests that need it
                errors.append(f"{name}: {e}")
        builds.append(threading.Thread(target=run))

    if not TOOLS_MISSING:
        for name, with_tether in (("tools_good", True), ("tools_nohook", False)):
            def make(name=name, with_tether=with_tether):
                os.makedirs(os.path.join(d, name))
                t = initramfs_images.InitramfsTools(os.path.join(d, name), with_tether=with_tether)
                # The image's crypttab lists the root, as the cryptroot hook
                # would (it lists block devices only).
                t.crypttab_entries([f"root {S['root']} none luks"])
                return t.build("")
            build(name, make)
    if not DRACUT_MISSING:
        def make_dracut():
            base = initramfs_images.dracut_base(os.path.join(d))
            good = initramfs_images.dracut(os.path.join(d, "dracut-good.img"), base,
                                           initramfs_images.DRACUT_MODULES + " tether")
            bare = initramfs_images.dracut(os.path.join(d, "dracut-bare.img"), base, initramfs_images.DRACUT_MODULES)
            return good, bare
        build("dracut", make_dracut)
    for t in builds:
        t.start()
    for t in builds:
        t.join()
    S["errors"] = errors
    S["notokens"] = os.path.join(d, "no-tokens")
    os.makedirs(S["notokens"])
    S["tokens"] = os.path.join(d, "tokens")
    os.makedirs(S["tokens"])
    open(os.path.join(S["tokens"], "libcryptsetup-token-clevis.so"), "w").close()


def tearDownModule():
    S["srv"].close()
    S["lost_srv"].close()
    S["tmp"].cleanup()


class BootCheck(tlib.unittest.TestCase):
    def image(self, name):
        if name.startswith("tools") and TOOLS_MISSING:
            self.skipTest(TOOLS_MISSING)
        if name.startswith("dracut") and DRACUT_MISSING:
            self.skipTest(DRACUT_MISSING)
        key = "dracut" if name.startswith("dracut") else name
        self.assertIn(key, S, "\n".join(S["errors"]))
        return S["dracut"][name == "dracut_bare"] if key == "dracut" else S[key]

    def check(self, image, crypttab, root=None, cmdline="", tokendir=None, json_out=False):
        """Runs tether boot check; returns (exit status, output)."""
        d = tempfile.mkdtemp(dir=S["dir"])
        with open(os.path.join(d, "crypttab"), "w") as f:
            f.write("".join(line + "\n" for line in crypttab))
        with open(os.path.join(d, "cmdline"), "w") as f:
            f.write(cmdline + "\n")
        args = ["boot", "check", "--initramfs", self.image(image), "--crypttab", os.path.join(d, "crypttab"),
                "--cmdline", os.path.join(d, "cmdline"), "--tokendir", tokendir or S["notokens"]]
        args += ["--root", root] if root else ["--no-root"]
        if json_out:
            args.append("--json")
        r = tlib.run(tlib.TETHER, *args, env=dict(os.environ, TETHER_TIMEOUT="3"), text=True)
        self.assertEqual(r.stderr, "")
        return r.returncode, r.stdout

    # ------------------------------------------------------------ initramfs-tools

    def test_initramfs_tools_image_with_tether_unlocks_the_root(self):
        rc, out = self.check("tools_good", [f"root {S['root']} none luks"], root=S["root"])
        self.assertEqual(rc, 0, out)
        self.assertIn("root, crypttab line 1, opened in the initramfs): unlocks unattended\n", out)
        self.assertIn(f"tang http://127.0.0.1:{S['srv'].port}: decrypts now, and its key opens the slot", out)
        self.assertIn(": initramfs-tools, tether in it, network in it;", out)
        self.assertTrue(out.endswith("every volume the next boot opens unlocks unattended\n"), out)

    def test_initramfs_tools_image_without_the_hook_stops_at_the_prompt(self):
        rc, out = self.check("tools_nohook", [f"root {S['root']} none luks"], root=S["root"])
        self.assertEqual(rc, 1, out)
        self.assertIn("root, crypttab line 1, opened in the initramfs): STOPS AT A PASSPHRASE PROMPT\n", out)
        self.assertIn("has no tether agent (scripts/local-top/tether, tether-askpass): install tether's "
                      "initramfs-tools hook", out)
        self.assertIn("update-initramfs -u", out)
        self.assertIn("initramfs-tools, tether NOT in it", out)

    def test_a_data_volume_without_the_initramfs_option_is_named_with_its_line(self):
        crypttab = [f"root {S['root']} none luks", "# data", f"data {S['data']} none luks"]
        rc, out = self.check("tools_good", crypttab, root=S["root"])
        self.assertEqual(rc, 1, out)
        self.assertIn("data (" + S["data"] + ", crypttab line 3, opened after boot): STOPS AT A PASSPHRASE PROMPT",
                      out)
        self.assertRegex(out, r"add the `initramfs` option to \S+/crypttab line 3, then update-initramfs -u")
        # With the option, the image built before it lacks the volume.
        crypttab[2] += ",initramfs"
        rc, out = self.check("tools_good", crypttab, root=S["root"])
        self.assertEqual(rc, 1, out)
        self.assertIn("data (" + S["data"] + ", crypttab line 3, opened in the initramfs): STOPS", out)
        self.assertIn("not in the initramfs's crypttab: rebuild the initramfs: update-initramfs -u", out)
        # Opened after boot by systemd-cryptsetup with the token plugin, after
        # the network (_netdev): unattended; without _netdev, not.
        crypttab[2] = f"data {S['data']} none luks,_netdev"
        rc, out = self.check("tools_good", crypttab, root=S["root"], tokendir=S["tokens"])
        self.assertEqual(rc, 0, out)
        self.assertIn("crypttab line 3, opened after boot): unlocks unattended", out)
        crypttab[2] = f"data {S['data']} none luks"
        rc, out = self.check("tools_good", crypttab, root=S["root"], tokendir=S["tokens"])
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"add the `_netdev` option to \S+/crypttab line 3")

    # ------------------------------------------------------------ dracut

    def test_dracut_image_with_tether_unlocks_the_root(self):
        rc, out = self.check("dracut_good", [f"root {S['root']} none luks"], root=S["root"],
                             cmdline="root=/dev/mapper/root rd.neednet=1 ip=dhcp")
        self.assertEqual(rc, 0, out)
        self.assertIn("opened in the initramfs): unlocks unattended\n", out)
        self.assertIn(": dracut, tether in it, network in it;", out)
        # A generic image does not carry rd.neednet=1: the command line must.
        rc, out = self.check("dracut_good", [f"root {S['root']} none luks"], root=S["root"], cmdline="ip=dhcp")
        self.assertEqual(rc, 1, out)
        self.assertIn("neither the kernel command line nor the initramfs says rd.neednet=1", out)

    def test_dracut_image_without_tether_stops_at_the_prompt(self):
        rc, out = self.check("dracut_bare", [f"root {S['root']} none luks"], root=S["root"], cmdline="rd.neednet=1")
        self.assertEqual(rc, 1, out)
        self.assertIn("has no tether token plugin (libcryptsetup-token-clevis.so): install tether's dracut module, "
                      "then dracut -f --add tether", out)
        self.assertIn(": dracut, tether NOT in it", out)

    # ------------------------------------------------------------ bindings

    def test_a_stopped_server_is_named_on_the_binding_line(self):
        rc, out = self.check("tools_good", [f"root {S['gone']} none luks"], root=S["gone"])
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, rf"  token 0, slot 1: tang {S['gone_url']}: does not decrypt now: .*; make sure "
                         rf"{S['gone_url']} answers from this host's network at boot")
        self.assertIn("problem: no binding decrypts now", out)

    def test_a_deleted_key_is_named_on_the_binding_line(self):
        rc, out = self.check("tools_good", [f"root {S['lost']} none luks"], root=S["lost"])
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, rf"  token 0, slot 1: tang {S['lost_url']}: does not decrypt now: .*; if the server "
                         rf"no longer has the key, rebind: tether luks regen -d {S['lost']} -s 1")

    def test_an_unbound_root_needs_a_passphrase(self):
        rc, out = self.check("tools_good", [f"root {S['plain']} none luks"], root=S["plain"])
        self.assertEqual(rc, 1, out)
        self.assertIn("not bound: the boot asks for its passphrase: bind it: tether luks bind -d " + S["plain"], out)

    def test_volumes_opened_otherwise_are_not_problems(self):
        keyfile = os.path.join(S["dir"], "some.key")
        crypttab = [f"root {S['root']} none luks", f"swap {S['plain']} /dev/urandom swap",
                    f"later {S['plain']} none luks,noauto", f"extra {S['plain']} none luks,nofail",
                    f"keyed {S['plain']} {keyfile} luks"]
        rc, out = self.check("tools_good", crypttab, root=S["root"])
        self.assertEqual(rc, 0, out)
        self.assertIn("swap (" + S["plain"] + ", crypttab line 2, opened after boot): opened without tether: key "
                      "file /dev/urandom", out)
        self.assertIn("later (" + S["plain"] + ", crypttab line 3, not opened at boot): skipped: noauto", out)
        self.assertIn("skipped: not bound; nofail: the boot goes on without it", out)
        self.assertIn(f"opened without tether: key file {keyfile}", out)

    # ------------------------------------------------------------ --json

    def test_json_carries_the_same_verdict(self):
        for image, crypttab, rc_want in (("tools_good", [f"root {S['root']} none luks"], 0),
                                         ("tools_good", [f"root {S['gone']} none luks"], 1)):
            root = crypttab[0].split()[1]
            rc, out = self.check(image, crypttab, root=root, json_out=True)
            self.assertEqual(rc, rc_want, out)
            j = json.loads(out)
            self.assertEqual(j["unattended"], rc == 0)
            self.assertEqual(j["initramfs"]["kind"], "initramfs-tools")
            self.assertTrue(j["initramfs"]["tether"])
            self.assertTrue(j["initramfs"]["network"])
            [v] = j["volumes"]
            self.assertEqual((v["name"], v["device"], v["crypttab_line"], v["root"], v["stage"]),
                             ("root", root, 1, True, "initramfs"))
            self.assertEqual(v["verdict"], "unattended" if rc == 0 else "prompt")
            [b] = v["bindings"]
            self.assertEqual((b["token"], b["slot"], b["pin"], b["network"], b["decrypts"]),
                             (0, 1, "tang", True, rc == 0))
            # The text output's lines, the same.
            _, text = self.check(image, crypttab, root=root)
            for p in v["problems"]:
                self.assertIn(f"  problem: {p}\n", text)
            if b["error"]:
                self.assertIn(b["error"], text)

    def test_an_image_that_is_not_a_file_is_refused_at_once(self):
        """/dev/zero never ends and a FIFO nobody writes to never answers:
        neither may hang the check (its deadline only covers a
        decompressor)."""
        d = tempfile.mkdtemp(dir=S["dir"])
        fifo = os.path.join(d, "fifo")
        os.mkfifo(fifo)
        with open(os.path.join(d, "crypttab"), "w") as f:
            f.write(f"root {S['root']} none luks\n")
        for path in ("/dev/zero", fifo):
            t = time.monotonic()
            r = tlib.run(tlib.TETHER, "boot", "check", "--initramfs", path, "--crypttab", os.path.join(d, "crypttab"),
                         "--root", S["root"], "--tokendir", S["notokens"], text=True, timeout=30,
                         env=dict(os.environ, TETHER_TIMEOUT="3"))
            self.assertLess(time.monotonic() - t, 5, path)
            self.assertIn(f"{path}: not a regular file; give the initramfs image itself", r.stdout + r.stderr)

    def test_usage_errors_exit_2(self):
        r = tlib.run(tlib.TETHER, "boot", "check", "--root", "x", "--no-root", text=True)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("tether boot check: --root and --no-root exclude each other", r.stderr)
        r = tlib.run(tlib.TETHER, "boot", "check", "extra", text=True)
        self.assertEqual(r.returncode, 2, r.stderr)
        r = tlib.run(tlib.TETHER, "boot", "bogus", text=True)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("tether boot: unknown command 'bogus'", r.stderr)


if __name__ == "__main__":
    if TOOLS_MISSING and DRACUT_MISSING:
        print(f"SKIP: {TOOLS_MISSING}; {DRACUT_MISSING}")
        sys.exit(77)
    tlib.main()
