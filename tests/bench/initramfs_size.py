#!/usr/bin/env python3
"""Bytes a client adds to an initramfs: its programs plus the shared
libraries they need (ldd's closure) that the base initramfs does not already
have. Base: what dracut's systemd and crypt modules put there anyway
(systemd, systemd-cryptsetup, cryptsetup and their libraries).

  initramfs_size.py TETHER_BUILD_DIR

Prints a table per client and shell assignments (last lines):
  TETHER_BYTES (tether alone: what `tether decrypt` needs),
  TETHER_ALL_BYTES (tether, tether-askpass, the token plugin: what
  dracut/60tether installs), CLEVIS_BYTES (what Debian's clevis dracut
  modules install for tang and sss: clevis's scripts, jose, curl, luksmeta,
  bash, and their libraries).
Files are counted once, by their real path, at their size on disk; tether's
own (a debugoptimized build) without their debug information, as installed."""

import os
import re
import shutil
import subprocess
import sys

BASE = ["/lib/systemd/systemd", "/lib/systemd/systemd-cryptsetup", "/usr/sbin/cryptsetup"]
CLEVIS = ["clevis", "clevis-decrypt", "clevis-decrypt-tang", "clevis-decrypt-sss", "clevis-decrypt-null",
          "clevis-luks-common-functions", "clevis-luks-list", "clevis-luks-unlock", "/usr/libexec/clevis-luks-askpass",
          "luksmeta", "jose", "curl", "bash"]


def which(name):
    if name.startswith("/"):
        return name if os.path.exists(name) else None
    return shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")


def libs(path):
    """The shared libraries path loads (ldd), real paths."""
    try:
        out = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return set()
    found = set()
    for line in out.splitlines():
        m = re.search(r"=>\s*(/\S+)", line) or re.match(r"\s*(/\S+)\s+\(", line)
        if m:
            found.add(os.path.realpath(m.group(1)))
    return found


def closure(files):
    out = set()
    for f in files:
        real = os.path.realpath(f)
        out.add(real)
        out |= libs(real)
    return out


def stripped_size(path):
    """Size without debug information, for our own build's files (a
    debugoptimized build carries -g; what gets installed is stripped)."""
    tmp = path + ".stripped-for-size"
    try:
        if subprocess.run(["strip", "--strip-debug", "-o", tmp, path], capture_output=True).returncode == 0:
            return os.path.getsize(tmp)
    except OSError:
        pass
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return os.path.getsize(path)


def report(name, files, base, build):
    missing = [f for f in files if not f or not os.path.exists(f)]
    files = [f for f in files if f and os.path.exists(f)]
    added = sorted(closure(files) - base)
    total = 0
    print(f"initramfs: {name}: {len(added)} files beyond the base")
    for f in added:
        ours = f.startswith(os.path.realpath(build) + os.sep)
        size = stripped_size(f) if ours else os.path.getsize(f)
        total += size
        print(f"initramfs:   {size:>10,d}  {f}{'  (without debug information)' if ours else ''}")
    print(f"initramfs:   {total:>10,d}  total ({total / 1024:.0f} KiB)")
    if missing:
        print(f"initramfs:   (not found, not counted: {', '.join(str(m) for m in missing)})")
    return total


def main():
    build = sys.argv[1] if len(sys.argv) > 1 else "build"
    base = closure([b for b in BASE if os.path.exists(b)])
    tether = os.path.join(build, "programs", "tether")
    tether_all = [tether, os.path.join(build, "programs", "tether-askpass"),
                  os.path.join(build, "programs", "libcryptsetup-token-clevis.so")]
    t = report("tether (decrypt)", [tether], base, build)
    ta = report("tether, tether-askpass, token plugin (dracut/60tether)", tether_all, base, build)
    c = report("clevis (its dracut modules: scripts, jose, curl, luksmeta, bash)", [which(n) for n in CLEVIS], base, build)
    print(f"TETHER_BYTES={t}")
    print(f"TETHER_ALL_BYTES={ta}")
    print(f"CLEVIS_BYTES={c}")


if __name__ == "__main__":
    main()
