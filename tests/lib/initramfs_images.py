"""Building initramfs images in tests without touching the host: Debian's
mkinitramfs with tether's initramfs-tools hook and scripts (from the build
tree), and dracut with tether's dracut module, each from a private copy of
its tree. Shared by test_initramfs_image.py and test_boot_check.py.

mkinitramfs reads hooks and scripts only from /usr/share/initramfs-tools;
`-d CONFDIR` replaces /etc/initramfs-tools only. So mkinitramfs runs in a
mount namespace of its own (unshare -m), with a private copy of
/usr/share/initramfs-tools (tether's hook and scripts added, or not)
bind-mounted over it, and empty /etc/crypttab and /etc/cryptsetup-initramfs,
and /boot when the kernel's config is not there (mkinitramfs reads it to
choose a compressor). dracut takes its tree from dracutbasedir. The programs
come from the build tree (TETHER_BUILDDIR)."""

import glob
import os
import platform
import shutil
import subprocess

import tlib
from tlib import PASSPHRASE, TETHER, run

BUILD = os.path.dirname(os.path.dirname(TETHER))
GLUE = os.path.join(BUILD, "initramfs-tools")
SHARE = "/usr/share/initramfs-tools"
SBIN_PATH = os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def missing_initramfs_tools():
    """Why mkinitramfs images cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (mount namespace, mkinitramfs)"
    for tool in ("mkinitramfs", "lsinitramfs", "unmkinitramfs", "unshare", "chroot"):
        if not shutil.which(tool, path=SBIN_PATH):
            return (f"{tool} not found (Debian's initramfs-tools-core, cryptsetup-initramfs and klibc-utils: "
                    "tests/run.sh installs them)")
    if not os.path.exists(os.path.join(SHARE, "hooks", "cryptroot")):
        return f"{SHARE}/hooks/cryptroot not found (Debian's cryptsetup-initramfs)"
    if subprocess.run(["unshare", "-m", "--propagation", "private", "true"], capture_output=True).returncode:
        return "no mount namespaces here (unshare -m)"
    for f in ("hook", "local-top", "local-bottom"):
        if not os.path.exists(os.path.join(GLUE, f)):
            raise AssertionError(f"{GLUE}/{f} not built")
    return None


def kernel_version():
    """An installed kernel with its modules, else the running one (mkinitramfs
    only warns that its modules are missing)."""
    for dep in sorted(glob.glob("/lib/modules/*/modules.dep"), reverse=True):
        return os.path.basename(os.path.dirname(dep))
    return platform.release()


def luks_image(path, pin=None, cfg=None):
    """A LUKS2 image file at path, bound with pin (cfg) unless pin is None."""
    with open(path, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    run("cryptsetup", "luksFormat", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--batch-mode",
        "--type", "luks2", "--key-file", "-", path, input=PASSPHRASE, check=True)
    if pin:
        keyfile = path + ".pass"
        with open(keyfile, "wb") as f:
            f.write(PASSPHRASE)
        r = tlib.tether("luks", "bind", "-y", "-d", path, "-k", keyfile, pin, cfg)
        if r.returncode != 0:
            raise AssertionError(f"tether luks bind {path}: {r.stderr}")
    return path


class InitramfsTools:
    """A private initramfs-tools tree and configuration under tmp (a
    directory), with tether's hook and boot scripts unless with_tether is
    false."""

    def __init__(self, tmp, with_tether=True):
        self.tmp = tmp
        self.share = os.path.join(tmp, "share")
        shutil.copytree(SHARE, self.share, symlinks=True)
        if with_tether:
            for f, dest in (("hook", "hooks"), ("local-top", "scripts/local-top"),
                            ("local-bottom", "scripts/local-bottom")):
                os.makedirs(os.path.join(self.share, dest), exist_ok=True)
                shutil.copy2(os.path.join(GLUE, f), os.path.join(self.share, dest, "tether"))
                # As meson installs them (the build tree's copies are not executable).
                os.chmod(os.path.join(self.share, dest, "tether"), 0o755)
        self.conf = os.path.join(tmp, "conf")
        shutil.copytree("/etc/initramfs-tools", self.conf, symlinks=True)
        self.kver = kernel_version()
        self.log = ""

    def crypttab_entries(self, lines):
        """The image's /cryptroot/crypttab gets lines, as if the cryptroot
        hook had found them (it lists block devices only; tests use image
        files): the private cryptroot hook is wrapped to append them."""
        hook = os.path.join(self.share, "hooks", "cryptroot")
        real = os.path.join(self.tmp, "cryptroot-hook")
        if not os.path.exists(real):  # the wrapper must never wrap itself
            shutil.move(hook, real)
        with open(hook, "w") as f:
            f.write(f'#!/bin/sh\n"{real}" "$@" || exit $?\n[ "$1" = prereqs ] && exit 0\n'
                    f'mkdir -p "$DESTDIR/cryptroot"\n')
            for line in lines:
                f.write(f"echo '{line}' >>\"$DESTDIR/cryptroot/crypttab\"\n")
        os.chmod(hook, 0o755)

    def build(self, conf_d, out=None):
        """Builds an image with conf.d/tether holding conf_d; returns its
        path (mkinitramfs's output is in self.log)."""
        with open(os.path.join(self.conf, "conf.d", "tether"), "w") as f:
            f.write(conf_d)
        out = out or os.path.join(self.tmp, "initrd.img")
        empty = os.path.join(self.tmp, "empty")
        os.makedirs(empty, exist_ok=True)
        crypttab = os.path.join(self.tmp, "crypttab")
        with open(crypttab, "w"):
            pass
        mounts = [f"mount --bind {self.share} {SHARE}"]
        if os.path.exists("/etc/crypttab"):
            mounts.append(f"mount --bind {crypttab} /etc/crypttab")
        if os.path.isdir("/etc/cryptsetup-initramfs"):
            mounts.append(f"mount --bind {empty} /etc/cryptsetup-initramfs")
        if not os.path.exists(f"/boot/config-{self.kver}"):
            boot = os.path.join(self.tmp, "boot")
            os.makedirs(boot, exist_ok=True)
            with open(os.path.join(boot, f"config-{self.kver}"), "w") as f:
                f.write("CONFIG_RD_GZIP=y\n")
            mounts.append(f"mount --bind {boot} /boot")
        script = " && ".join(mounts + [f"mkinitramfs -d {self.conf} -o {out} {self.kver}"])
        env = dict(os.environ, TETHER_BUILDDIR=BUILD, PATH=SBIN_PATH)
        p = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script], env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        self.log = p.stdout
        if p.returncode != 0:
            raise AssertionError(f"mkinitramfs failed:\n{p.stdout}")
        return out


def listing(img):
    """The names in an initramfs, as lsinitramfs lists them."""
    out = run("lsinitramfs", img, check=True).stdout.decode()
    return {line.strip().lstrip("./") for line in out.splitlines()}


# ---------------------------------------------------------------- dracut

# What a systemd initramfs that opens LUKS volumes over the network needs
# (tests/boot/boot_test.py boots such images).
DRACUT_MODULES = "systemd systemd-initrd dracut-systemd base rootfs-block fs-lib crypt dm network systemd-networkd"
TETHER_DRACUT_MODULE = os.path.join(BUILD, "dracut", "60tether")


def missing_dracut():
    """Why dracut images cannot be built here, or None."""
    if os.geteuid() != 0:
        return "needs root (dracut)"
    if not shutil.which("dracut", path=SBIN_PATH) or not os.path.isdir("/usr/lib/dracut/modules.d"):
        return "dracut not found"
    if not os.path.exists(os.path.join(TETHER_DRACUT_MODULE, "module-setup.sh")):
        raise AssertionError(f"{TETHER_DRACUT_MODULE}/module-setup.sh not built")
    return None


def dracut_base(tmp):
    """A private copy of the host's dracut tree with tether's module added."""
    base = os.path.join(tmp, "dracut-base")
    shutil.copytree("/usr/lib/dracut", base, symlinks=True)
    dest = os.path.join(base, "modules.d", "60tether")
    os.makedirs(dest)
    for f in os.listdir(TETHER_DRACUT_MODULE):
        if not f.endswith((".in", ".build")):
            shutil.copy2(os.path.join(TETHER_DRACUT_MODULE, f), dest)
    return base


def dracut(out, base, modules, compress=False):
    """A generic (not host-only) dracut image without kernel modules, from
    the dracut tree base (dracut_base); returns out."""
    p = subprocess.run(["dracut", "-q", "--force", "--no-hostonly", "--no-kernel"]
                       + ([] if compress else ["--no-compress"])
                       + ["--kver", kernel_version(), "-m", modules, out],
                       env=dict(os.environ, dracutbasedir=base, TETHER_BUILDDIR=BUILD, PATH=SBIN_PATH),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    if p.returncode != 0:
        raise AssertionError(f"dracut failed:\n{p.stdout}")
    return out
