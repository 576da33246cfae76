"""Error messages and hints of the command-line programs (issue 13): each
says what happened and what to do, and names what it is about (the device,
the URL, the variable, the limit)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import http.server

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402

from tlib import PASSPHRASE, run, tether  # noqa: E402

NOBODY = 65534


def as_nobody(*args, **kw):
    return run("setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *args, **kw)


def make_image(path):
    with open(path, "wb") as f:
        f.truncate(32 * 1024 * 1024)
    run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
        "--pbkdf-force-iterations", "1000", "--key-file", "-", path, input=PASSPHRASE, check=True)
    return path


def last_line(r):
    """tether's own line: libcryptsetup may log one of its own before it."""
    text = r.stderr.decode() if isinstance(r.stderr, bytes) else r.stderr
    return text.strip().splitlines()[-1] if text.strip() else ""


class Devices(tlib.unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-msgs-")
        os.chmod(self.tmp.name, 0o755)

    def tearDown(self):
        self.tmp.cleanup()

    def test_missing_or_unreadable_device_says_so(self):
        missing = os.path.join(self.tmp.name, "missing")
        for cmd in (["list", "-d", missing], ["unlock", "-d", missing], ["report", "-d", missing, "-s", "1"],
                    ["unlock", "-t", "-1", "-d", missing]):
            with self.subTest(cmd=cmd):
                r = tether("luks", *cmd)
                self.assertEqual(r.returncode, 1)
                msg = last_line(r)
                self.assertIn(f"{missing}: no such device or file", msg)
                self.assertNotIn("Block device required", msg)
                self.assertNotIn("not a LUKS", msg)
        img = make_image(os.path.join(self.tmp.name, "img"))
        os.chmod(img, 0o600)
        r = as_nobody(tlib.TETHER, "luks", "list", "-d", img)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{img}: permission denied (run as root?)", last_line(r))
        self.assertNotIn("Block device required", r.stderr.decode())
        # A directory on the way that may not be searched.
        os.chmod(self.tmp.name, 0o700)
        r = as_nobody(tlib.TETHER, "luks", "list", "-d", img)
        self.assertEqual(r.returncode, 1)
        self.assertIn("permission denied", last_line(r))
        self.assertIn("run as root?", last_line(r))
        os.chmod(self.tmp.name, 0o755)
        r = tether("luks", "list", "-d", self.tmp.name)
        self.assertEqual(r.returncode, 1)
        self.assertIn(f"{self.tmp.name} is a directory", last_line(r))
        # Still distinct: a readable file that is not LUKS.
        plain = os.path.join(self.tmp.name, "plain")
        with open(plain, "wb") as f:
            f.truncate(1 << 20)
        for cmd in (["list", "-d", plain], ["unlock", "-d", plain]):
            r = tether("luks", *cmd)
            self.assertEqual(r.returncode, 1)
            self.assertEqual(last_line(r), f"tether luks {cmd[0]}: {plain} is not a LUKS device")


if __name__ == "__main__":
    tlib.main()
