"""initramfs-tools images with tether's hook and boot scripts (initramfs-tools/
in the build tree), built by Debian's mkinitramfs without touching the host's
configuration (tests/lib/initramfs_images.py says how).

Checks: with TETHER=y the image holds the agent, its libraries (libcryptsetup
and the NSS modules, which it loads with dlopen, too), the boot scripts, the
CA certificates and the network setting; the agent runs inside the image
(chroot) and reads a LUKS2 header there (libcryptsetup loaded); without a
bound volume and without TETHER=y nothing of tether goes in.

Skipped (exit 77, saying why) without root, mount namespaces, or Debian's
initramfs-tools-core and cryptsetup-initramfs (tests/run.sh installs them;
they install next to dracut)."""

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import initramfs_images  # noqa: E402
import tlib  # noqa: E402
from tlib import PASSPHRASE, run  # noqa: E402

# Where the hook puts the agent: where meson installs it.
PREFIX = os.environ.get("TETHER_PREFIX", "/usr/local")
LIBEXECDIR = dict(e.split("=", 1) for e in os.environ.get("TETHER_INSTALL_DIRS", "tether-askpass=libexec").split()
                  )["tether-askpass"]
AGENT = os.path.join(PREFIX, LIBEXECDIR, "tether-askpass").lstrip("/")


def preflight():
    why = initramfs_images.missing_initramfs_tools()
    if why:
        print(f"SKIP: {why}")
        sys.exit(77)


def fake_jwe(header):
    """A compact JWE with this header and random content: what the hook
    reads of a binding is its header."""
    def b64(b):
        return base64.urlsafe_b64encode(b).rstrip(b"=").decode()
    return ".".join([b64(json.dumps(header).encode()), "", b64(os.urandom(12)), b64(os.urandom(32)),
                     b64(os.urandom(16))])


class Image(tlib.unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-initramfs-")
        self.addCleanup(self.tmp.cleanup)
        self.tools = initramfs_images.InitramfsTools(self.tmp.name)

    def path(self, *names):
        return os.path.join(self.tmp.name, *names)

    def image_file(self, name, pin=None, cfg=None):
        """A LUKS2 image file, bound with pin (cfg) unless pin is None."""
        return initramfs_images.luks_image(self.path(name), pin, cfg)

    def crypttab_entries(self, lines):
        self.tools.crypttab_entries(lines)

    def mkinitramfs(self, conf_d):
        """Builds an image with conf.d/tether holding conf_d; returns its path."""
        out = self.tools.build(conf_d)
        self.build_log = self.tools.log
        return out

    def listing(self, img):
        return initramfs_images.listing(img)

    def test_forced_image_holds_the_agent_and_what_it_needs(self):
        img = self.mkinitramfs("TETHER=y\nTETHER_NETWORK=y\n")
        files = self.listing(img)
        basenames = {os.path.basename(f) for f in files}
        self.assertIn(AGENT, files, self.build_log)
        for need in ("scripts/local-top/tether", "scripts/local-bottom/tether", "conf/tether.conf",
                     "etc/ssl/certs/ca-certificates.crt", "etc/nsswitch.conf"):
            self.assertIn(need, files, self.build_log)
        # Linked (copy_exec follows ldd) and loaded (dlopen: the hook copies them).
        for lib in ("libjose.so.0", "libssl.so.3", "libcrypto.so.3", "libjansson.so.4",
                    "libcryptsetup.so.12", "libnss_dns.so.2", "libnss_files.so.2"):
            self.assertIn(lib, basenames, f"{lib} not in the image:\n{self.build_log}")

        root = self.path("unpacked")
        run("unmkinitramfs", img, root, check=True)
        # With microcode or early parts, the main archive lands in main/.
        if os.path.isdir(os.path.join(root, "main")):
            root = os.path.join(root, "main")
        with open(os.path.join(root, "conf", "tether.conf")) as f:
            self.assertEqual(f.read(), "TETHER_NETWORK=y\n")
        with open(os.path.join(root, "etc", "nsswitch.conf")) as f:
            self.assertIn("dns", f.read())

        # The agent runs inside the image (chroot, with /dev and /proc as at
        # boot), with only the image's libraries: it reads the headers
        # (libcryptsetup, loaded with dlopen) and recovers a bound volume's key
        # from a tetherd on loopback (libssl, jose); the unbound one is left
        # alone.
        srv = tlib.Tetherd(args=["-q"])
        self.addCleanup(srv.close)
        os.makedirs(os.path.join(root, "tmp"), exist_ok=True)
        keyfile = self.path("pass")
        with open(keyfile, "wb") as f:
            f.write(PASSPHRASE)
        for name in ("bound", "plain"):
            img = os.path.join(root, "tmp", name + ".img")
            with open(img, "wb") as f:
                f.truncate(32 * 1024 * 1024)
            run("cryptsetup", "luksFormat", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--batch-mode",
                "--type", "luks2", "--key-file", "-", img, input=PASSPHRASE, check=True)
        r = tlib.tether("luks", "bind", "-y", "-d", os.path.join(root, "tmp", "bound.img"), "-k", keyfile, "tang",
                        f'{{"url":"http://127.0.0.1:{srv.port}"}}')
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(root, "tmp", "crypttab"), "w") as f:
            f.write("bound /tmp/bound.img none luks\nplain /tmp/plain.img none luks\n")
        for d in ("dev", "proc", "lib/cryptsetup"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        log = self.path("agent.log")
        with open(log, "wb") as out:
            agent = subprocess.Popen(
                ["unshare", "-m", "--propagation", "private", "sh", "-c",
                 f"mount --rbind /dev {root}/dev && mount -t proc proc {root}/proc && "
                 f"exec chroot {root} /{AGENT} --cryptroot --crypttab /tmp/crypttab --cmdline /tmp/none"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})

        def logged():
            with open(log, errors="replace") as f:
                return f.read()
        try:
            self.assertTrue(tlib.eventually(lambda: "bound: key recovered" in logged() and
                                            "plain (/tmp/plain.img): no tether/clevis binding" in logged(),
                                            timeout=30), logged())
        finally:
            agent.terminate()
            agent.wait(10)
        self.assertEqual(agent.returncode, 0, logged())

    def test_boot_scripts_start_the_agent_at_once_and_stop_it(self):
        """The image's own shell runs local-top/tether (chrooted, in private
        mount, network and pid namespaces: no network card, as on a host
        whose NIC never comes up): it returns at once although the network
        it starts in the background waits for a device, the agent runs, and
        local-bottom/tether stops it."""
        img = self.mkinitramfs("TETHER=y\nTETHER_NETWORK=y\n")
        root = self.path("unpacked")
        run("unmkinitramfs", img, root, check=True)
        if os.path.isdir(os.path.join(root, "main")):
            root = os.path.join(root, "main")
        for d in ("dev", "proc", "run", "lib/cryptsetup"):
            os.makedirs(os.path.join(root, d), exist_ok=True)
        inside = (
            # As init exports them: no ip=, and the time configure_networking
            # counts its 180 s wait for a network device from.
            "export IP= quiet=y starttime=$(cut -d. -f1 /proc/uptime); "
            "timeout 5 /scripts/local-top/tether; echo local-top=$?; "
            "read -r pid </run/tether/agent.pid; sleep 1; "
            "echo agent=$(readlink /proc/$pid/exe); "
            "/scripts/local-bottom/tether; echo local-bottom=$?; sleep 1; "
            "[ -e /proc/$pid/exe ] && echo still-running || echo stopped")
        out = self.in_image(root, inside)
        self.assertIn("local-top=0\n", out)
        self.assertIn(f"agent=/{AGENT}\n", out)
        self.assertIn("local-bottom=0\n", out)
        self.assertIn("stopped\n", out)

        # Once ipconfig has configured a device (here: its file is already
        # there, so configure_networking returns at once), its DNS servers
        # become /etc/resolv.conf, for servers named by host name.
        out = self.in_image(root, (
            "export IP=dhcp DEVICE=lo quiet=y starttime=$(cut -d. -f1 /proc/uptime); "
            "printf \"DEVICE=lo\\nIPV4DNS0=192.0.2.53\\nIPV4DNS1=0.0.0.0\\nDOMAINSEARCH=example.org\\n\" "
            ">/run/net-lo.conf; rm -f /etc/resolv.conf; "
            "/scripts/local-top/tether; sleep 1; cat /etc/resolv.conf; /scripts/local-bottom/tether"))
        self.assertIn("search example.org\nnameserver 192.0.2.53\n", out)
        self.assertNotIn("0.0.0.0", out)

    def in_image(self, root, script):
        """Runs script with the unpacked image's shell, chrooted, in private
        mount, network and pid namespaces (what it starts ends with it)."""
        p = subprocess.run(
            ["unshare", "-m", "-n", "-p", "-f", "--propagation", "private", "sh", "-c",
             f"mount --rbind /dev {root}/dev && mount -t proc proc {root}/proc && "
             f"chroot {root} /bin/sh -c '{script}'"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60,
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        return p.stdout

    def tether_conf(self, img):
        root = self.path("unpacked-conf")
        shutil.rmtree(root, ignore_errors=True)
        run("unmkinitramfs", img, root, check=True)
        if os.path.isdir(os.path.join(root, "main")):
            root = os.path.join(root, "main")
        with open(os.path.join(root, "conf", "tether.conf")) as f:
            return f.read()

    def test_bound_volumes_decide_agent_and_network(self):
        """No TETHER=y: a volume of the image's crypttab bound with tang
        brings the agent and the network; one bound with null only, the
        agent without the network."""
        srv = tlib.Tetherd(args=["-q"])
        self.addCleanup(srv.close)
        tang = self.image_file("tang.img", "tang", f'{{"url":"http://127.0.0.1:{srv.port}"}}')
        null = self.image_file("null.img", "null", "{}")
        plain = self.image_file("plain.img")
        self.crypttab_entries([f"plain {plain} none luks", f"local {null} none luks"])
        img = self.mkinitramfs("")
        self.assertIn(AGENT, self.listing(img), self.build_log)
        self.assertEqual(self.tether_conf(img), "TETHER_NETWORK=n\n")
        self.crypttab_entries([f"plain {plain} none luks", f"local {null} none luks", f"remote {tang} none luks"])
        img = self.mkinitramfs("")
        self.assertIn(AGENT, self.listing(img), self.build_log)
        self.assertEqual(self.tether_conf(img), "TETHER_NETWORK=y\n")
        # Forced off, whatever the bindings say.
        img = self.mkinitramfs("TETHER_NETWORK=n\n")
        self.assertEqual(self.tether_conf(img), "TETHER_NETWORK=n\n")

    def test_external_pins_are_named_at_build_time(self):
        """A binding with a pin tether does not put into the image (Clevis's
        external programs, tpm2 for one), alone or inside sss: the hook says
        so when the image is built, naming the device and the pin; tang and
        null bindings beside it still bring the agent."""
        srv = tlib.Tetherd(args=["-q"])
        self.addCleanup(srv.close)
        img = self.image_file("mixed.img", "tang", f'{{"url":"http://127.0.0.1:{srv.port}"}}')
        # Tokens as Clevis writes them, with a JWE whose header names the
        # pin: only the header is read at build time.
        for slot, header in (("5", {"alg": "dir", "enc": "A256GCM", "clevis": {"pin": "tpm2", "tpm2": {}}}),
                             ("6", {"alg": "dir", "enc": "A256GCM", "clevis": {
                                 "pin": "sss", "sss": {"t": 1, "p": "AA", "jwe": [fake_jwe(
                                     {"alg": "dir", "enc": "A256GCM",
                                      "clevis": {"pin": "yubikey", "yubikey": {}}})]}}})):
            with open(self.path("pass-" + slot), "wb") as f:
                f.write(os.urandom(16))
            run("cryptsetup", "luksAddKey", "--batch-mode", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000",
                "--key-slot", slot, img, self.path("pass-" + slot), input=PASSPHRASE, check=True)
            token = {"type": "clevis", "keyslots": [slot], "jwe": dict(zip(
                ("protected", "encrypted_key", "iv", "ciphertext", "tag"), fake_jwe(header).split(".")))}
            run("cryptsetup", "token", "import", "--key-slot", slot, img, input=json.dumps(token).encode(),
                check=True)
        listed = tlib.tether("luks", "list", "-d", img).stdout.decode()
        self.assertIn("tpm2", listed)
        self.crypttab_entries([f"mixed {img} none luks"])
        built = self.mkinitramfs("")
        self.assertIn(AGENT, self.listing(built), self.build_log)
        for pin in ("tpm2", "yubikey"):
            self.assertIn(f"{img} is bound with the external pin '{pin}'", self.build_log, listed)
        for pin in ("tang", "sss", "null"):
            self.assertNotIn(f"external pin '{pin}'", self.build_log)

    def test_nothing_bound_nothing_included(self):
        # A LUKS2 volume in the image's crypttab, but not bound.
        self.crypttab_entries([f"plain {self.image_file('plain.img')} none luks"])
        img = self.mkinitramfs("")
        files = self.listing(img)
        self.assertNotIn(AGENT, files, self.build_log)
        self.assertNotIn("conf/tether.conf", files)
        # The boot scripts come with every image (mkinitramfs copies them
        # all); without the agent they do nothing.
        self.assertIn("scripts/local-top/tether", files)


if __name__ == "__main__":
    preflight()
    tlib.main()
