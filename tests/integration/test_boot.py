"""The boot pieces against a tetherd on loopback and LUKS2 image files (no
device-mapper: `cryptsetup open --test-passphrase` only checks a key).

1. The libcryptsetup token plugin (build/programs/libcryptsetup-token-clevis.so)
   for "clevis" tokens. libcryptsetup loads plugins from one directory fixed
   when it was built (`cryptsetup --help` names it), so the plugin is copied
   there for the run and the previous state is put back afterwards: needs
   root, exits 77 without.
2. The password agent (build/programs/tether-askpass) on systemd's password
   agent protocol: once with the real systemd-ask-password in
   /run/systemd/ask-password, otherwise with questions this test writes
   itself into a private directory (-d). A volume asking again after an
   answer gets the key once more only if the key really opens it (systemd-
   cryptsetup re-asks for reasons of its own); a third question, or one
   after a key that does not open the volume, is left to the user.

Waking up on network changes is checked in a private network namespace
(this file runs itself again under `unshare --net`), where the link change
that wakes the client touches nothing outside."""

import atexit
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402
from tlib import PASSPHRASE, TETHER, luks_meta, opens, run, tether  # noqa: E402
BUILD = os.path.dirname(os.path.dirname(TETHER))
PLUGIN = os.environ.get("TETHER_TOKEN_PLUGIN", os.path.join(BUILD, "programs", "libcryptsetup-token-clevis.so"))
ASKPASS = os.environ.get("TETHER_ASKPASS", os.path.join(BUILD, "programs", "tether-askpass"))


def preload_sanitizer_into_cryptsetup():
    """A sanitized build's plugin needs the sanitizer runtime loaded first in
    the program that dlopens it. Only cryptsetup gets it, through a wrapper
    first on PATH (clevis finds it too): preloaded into everything, curl in
    clevis hangs. cryptsetup's own leaks are not ours to report."""
    preload = os.environ.get("TETHER_SANITIZER_PRELOAD")
    if not preload:
        return
    wrapdir = tempfile.mkdtemp(prefix="tether-sanitized-path-")
    atexit.register(shutil.rmtree, wrapdir, ignore_errors=True)
    wrapper = os.path.join(wrapdir, "cryptsetup")
    with open(wrapper, "w") as f:
        f.write(f"#!/bin/sh\nLD_PRELOAD={preload} ASAN_OPTIONS=detect_leaks=0 exec {shutil.which('cryptsetup')} \"$@\"\n")
    os.chmod(wrapper, 0o755)
    os.environ["PATH"] = wrapdir + os.pathsep + os.environ["PATH"]


preload_sanitizer_into_cryptsetup()

SYSTEM_ASK_DIR = "/run/systemd/ask-password"
NETNS_ENV = "TETHER_TEST_IN_NETNS"

# Processes this file started and may have to end if it is interrupted.
CHILDREN = []


def spawn(*args, **kw):
    proc = subprocess.Popen(list(args), stdin=kw.pop("stdin", subprocess.DEVNULL), **kw)
    CHILDREN.append(proc)
    return proc


def end(proc, sig=signal.SIGTERM, timeout=5):
    """Ends one process this file started; returns its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def clean_env(**extra):
    """The environment without anything that changes how long boot waits."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("TETHER_BOOT_TIMEOUT", "TETHER_TIMEOUT", "JOURNAL_STREAM")}
    env.update(extra)
    return env


def tetherd(**kw):
    srv = tlib.Tetherd(args=["-q"], **kw)
    CHILDREN.append(srv.proc)
    return srv


def token_open(img, env=None, extra=()):
    """`cryptsetup open --token-only`: the plugin or nothing. (result, seconds)"""
    start = time.monotonic()
    r = run("cryptsetup", "open", "--test-passphrase", "--token-only", "-v", *extra, img, env=env or clean_env())
    return r, time.monotonic() - start


def token_open_in_initramfs(img, cmdline="", env=None):
    """token_open as in the initramfs: /etc/initrd-release present and
    /proc/cmdline saying cmdline, for this one command only (a mount
    namespace of its own: an overlay on /etc, a file over /proc/cmdline)."""
    stage = tempfile.mkdtemp(prefix="tether-initrd-")
    try:
        for d in ("upper", "work"):
            os.mkdir(os.path.join(stage, d))
        with open(os.path.join(stage, "upper", "initrd-release"), "w") as f:
            f.write("NAME=tether test initramfs\n")
        with open(os.path.join(stage, "cmdline"), "w") as f:
            f.write(cmdline + "\n")
        script = ('mount -t overlay overlay -o "lowerdir=/etc,upperdir=$1/upper,workdir=$1/work" /etc && '
                  'mount --bind "$1/cmdline" /proc/cmdline && shift && exec "$@"')
        start = time.monotonic()
        r = run("unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", stage,
                "cryptsetup", "open", "--test-passphrase", "--token-only", "-v", img, env=env or clean_env())
        return r, time.monotonic() - start
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def token_open_spawn(img, env):
    return spawn("cryptsetup", "open", "--test-passphrase", "--token-only", "-v", img, env=env,
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def unlink_quietly(path):
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def monotonic_us():
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def dead_pid():
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


# ----------------------------------------------------------------- the plugin's directory


def token_dir():
    out = run("cryptsetup", "--help").stdout.decode()
    m = re.search(r"external token plugin path: (\S+?)\.?$", out, re.M)
    return m.group(1) if m else None


def _place(src, dest):
    """Copies src to dest atomically: a cryptsetup running meanwhile loads
    the old file or the new one, never half of one."""
    tmp = dest + ".tether-test"
    shutil.copy2(src, tmp)
    os.rename(tmp, dest)


# Set in the copy of this file that runs in a mount namespace of its own.
MOUNTNS_ENV = "TETHER_BOOT_TEST_MOUNTNS"


def rerun_in_private_mounts():
    """Runs this file again in a mount namespace of its own (unshare -m), so
    that the plugin mounted over libcryptsetup's directory is seen only by
    this test's processes, never by a cryptsetup other suites run meanwhile
    (clevis's, whose `open --test-passphrase --key-slot N` would succeed
    through another slot's token). Returns if that cannot be done."""
    if os.environ.get(MOUNTNS_ENV):
        return
    if subprocess.run(["unshare", "-m", "--propagation", "private", "true"],
                      capture_output=True).returncode != 0:
        print("no mount namespaces here: the plugin goes into libcryptsetup's directory itself",
              file=sys.stderr)
        return
    env = dict(os.environ, **{MOUNTNS_ENV: "1"})
    os.execvpe("unshare", ["unshare", "-m", "--propagation", "private", sys.executable,
                           os.path.abspath(__file__), *sys.argv[1:]], env)


@contextlib.contextmanager
def plugin_mounted(directory):
    """The plugin in directory for this mount namespace only: a copy of the
    directory with the plugin added, bind-mounted over it."""
    stage = tempfile.mkdtemp(prefix="tether-tokendir-")
    try:
        for name in os.listdir(directory):
            shutil.copy2(os.path.join(directory, name), stage)
        dest = os.path.join(directory, os.path.basename(PLUGIN))
        shutil.copy2(PLUGIN, os.path.join(stage, os.path.basename(PLUGIN)))
        os.chmod(stage, 0o755)
        subprocess.run(["mount", "--bind", stage, directory], check=True)
        try:
            yield dest
        finally:
            subprocess.run(["umount", directory], check=False)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def plugin_installed(directory):
    dest = os.path.join(directory, os.path.basename(PLUGIN))
    saved = None
    link = os.readlink(dest) if os.path.islink(dest) else None
    if link is None and os.path.exists(dest):
        fd, saved = tempfile.mkstemp(prefix="tether-plugin-")
        os.close(fd)
        shutil.copy2(dest, saved)
    _place(PLUGIN, dest)
    with open(dest, "rb") as f:
        ours = f.read()
    try:
        yield dest
    finally:
        try:
            with open(dest, "rb") as f:
                still_ours = f.read() == ours
        except OSError:
            still_ours = False
        # Someone else put a plugin there meanwhile: theirs stays.
        if still_ours:
            if link is not None:
                tmp = dest + ".tether-test"
                os.symlink(link, tmp)
                os.rename(tmp, dest)
            elif saved:
                _place(saved, dest)
            else:
                os.unlink(dest)
        if saved:
            os.unlink(saved)


# ----------------------------------------------------------------- questions and the agent


class Question:
    """One passphrase question as systemd-ask-password writes it: an ask.*
    file (written elsewhere, then renamed in) naming our own datagram socket."""

    count = 0

    def __init__(self, qdir, ident, pid=None, not_after_us=0, message="Please enter passphrase"):
        Question.count += 1
        tag = f"{os.getpid()}-{Question.count}"
        self.sock_path = os.path.join(qdir, f"sck.{tag}")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.sock_path)
        self.path = os.path.join(qdir, f"ask.{tag}")
        text = (f"[Ask]\nPID={os.getpid() if pid is None else pid}\nSocket={self.sock_path}\nAcceptCached=0\n"
                f"Echo=0\nNotAfter={not_after_us}\nSilent=0\nMessage={message}\nId={ident}\n")
        tmp = os.path.join(qdir, f".tmp.{tag}")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, self.path)

    def answer(self, timeout):
        """The password sent, or None if nothing came within timeout."""
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(4096)
        except socket.timeout:
            return None
        if not data.startswith(b"+"):
            raise AssertionError(f"answer without '+': {data[:1]!r}")
        return data[1:]

    def withdraw(self):
        """As systemd does once answered (or when the asker gives up)."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    def close(self):
        self.withdraw()
        self.sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.sock_path)


class Agent:
    def __init__(self, qdir=None, linger=0, retry_max=None):
        cmd = [ASKPASS, "--linger", str(linger)]
        if qdir:
            cmd += ["-d", qdir]
        if retry_max is not None:
            cmd += ["--retry-max", str(retry_max)]
        self.log = tempfile.TemporaryFile()
        self.proc = spawn(*cmd, stdout=subprocess.DEVNULL, stderr=self.log, env=clean_env())

    def stderr(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def alive(self):
        return self.proc.poll() is None

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def cpu_seconds(self):
        """utime + stime of the agent, its threads included."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self):
        rc = end(self.proc)
        self.log.close()
        return rc


# ----------------------------------------------------------------- images


class Images(tlib.unittest.TestCase):
    """A temporary directory with LUKS2 images (cheap PBKDF2) and the user's
    passphrase in a key file."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-boot-")
        self.addCleanup(self.tmp.cleanup)
        self.keyfile = os.path.join(self.tmp.name, "pass")
        with open(self.keyfile, "wb") as f:
            f.write(PASSPHRASE)

    def make_image(self, name="img"):
        img = os.path.join(self.tmp.name, name)
        with open(img, "wb") as f:
            f.truncate(32 * 1024 * 1024)
        run("cryptsetup", "luksFormat", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--batch-mode",
            "--type", "luks2", "--key-file", "-", img, input=PASSPHRASE, check=True)
        return img

    def bind(self, img, srv, pin="tang", cfg=None):
        cfg = cfg or json.dumps({"url": f"http://127.0.0.1:{srv.port}"})
        r = tether("luks", "bind", "-y", "-d", img, "-k", self.keyfile, pin, cfg)
        self.assertEqual(r.returncode, 0, r.stderr)

    def server(self, **kw):
        srv = tetherd(**kw)
        self.addCleanup(srv.close)
        return srv

    def dead_server(self, img):
        """A server img is bound to, then stopped: its port and key directory
        stay for restart()."""
        srv = self.server()
        self.bind(img, srv)
        srv.stop()
        return srv

    def restart(self, srv):
        return self.server(keydir=srv.keydir, port=srv.port)

    def change_key(self, img, slot):
        """Makes the binding of slot stale: its key no longer opens it."""
        old = tether("luks", "pass", "-d", img, "-s", str(slot)).stdout
        new = os.path.join(self.tmp.name, "other key")
        with open(new, "wb") as f:
            f.write(b"not what the binding holds")
        oldfile = os.path.join(self.tmp.name, "old key")
        with open(oldfile, "wb") as f:
            f.write(old)
        run("cryptsetup", "luksChangeKey", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-slot",
            str(slot), "--key-file", oldfile, img, new, check=True)
        self.assertFalse(opens(img, old, slot))
        # Still bound: the token was not told.
        self.assertIn([str(slot)], [t["keyslots"] for t in luks_meta(img)["tokens"].values()])
        return old


# ----------------------------------------------------------------- 1. the token plugin


class TokenPlugin(Images):
    @classmethod
    def setUpClass(cls):
        cls.srv = tetherd()
        cls.url = f"http://127.0.0.1:{cls.srv.port}"

    @classmethod
    def tearDownClass(cls):
        cls.srv.close()

    def setUp(self):
        super().setUp()
        self.img = self.make_image()

    def test_token_only_unlocks_a_bound_volume(self):
        self.bind(self.img, self.srv)
        r, took = token_open(self.img)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"Key slot 1 unlocked", r.stdout)
        self.assertLess(took, 5)
        # Without the plugin the same command has nothing to open it with.
        r = run("cryptsetup", "open", "--test-passphrase", "--token-only", "--disable-external-tokens", self.img)
        self.assertNotEqual(r.returncode, 0)

    def test_luks_dump_shows_pin_and_config(self):
        self.bind(self.img, self.srv)
        sss = {"t": 1, "pins": {"tang": [{"url": self.url}]}}
        self.bind(self.img, self.srv, pin="sss", cfg=json.dumps(sss))
        out = run("cryptsetup", "luksDump", self.img, env=clean_env(TETHER_TOKEN_DUMP="1"), check=True).stdout.decode()
        tokens = out.split("\nTokens:\n", 1)[1].split("\nDigests:", 1)[0]
        blocks = re.split(r"^  (\d+): ", tokens, flags=re.M)[1:]
        dumped = {int(tid): body for tid, body in zip(blocks[::2], blocks[1::2])}
        self.assertEqual(sorted(dumped), [0, 1], out)
        for tid, pin, cfg in ((0, "tang", {"url": self.url}), (1, "sss", sss)):
            lines = dumped[tid].splitlines()
            self.assertEqual(lines[0], "clevis", out)
            self.assertIn("\tclevis pin: " + pin, lines, out)
            cfg_lines = [ln for ln in lines if ln.startswith("\tconfig:     ")]
            self.assertEqual(len(cfg_lines), 1, out)
            self.assertEqual(json.loads(cfg_lines[0].split(":", 1)[1]), cfg)
            self.assertIn(f"\tKeyslot:    {tid + 1}", lines, out)

    def test_clevis_still_reads_luks_dump_with_the_plugin_installed(self):
        # clevis finds a slot's token with grep -B1 on luksDump's text: the
        # summary must stay out of piped output.
        self.bind(self.img, self.srv)
        out = run("cryptsetup", "luksDump", self.img, env=clean_env(), check=True).stdout.decode()
        self.assertNotIn("clevis pin:", out)
        self.assertRegex(out, r"\n  0: clevis\n\tKeyslot:    1\n")
        r = run("clevis", "luks", "pass", "-d", self.img, "-s", "1", env=clean_env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, tether("luks", "pass", "-d", self.img, "-s", "1").stdout)

    def test_server_down_fails_quickly_by_default(self):
        if os.path.exists("/etc/initrd-release"):
            self.skipTest("this is an initramfs: the plugin waits for the boot deadline")
        self.dead_server(self.img)
        r, took = token_open(self.img)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"unreachable", r.stderr)
        self.assertLess(took, 3)

    # Issue 14: in the initramfs the plugin makes a short try, so that the
    # passphrase prompt comes at once; the agent does the waiting behind it.
    def test_initramfs_short_try_gives_up_within_a_second_whatever_the_server_does(self):
        hole = socket.socket()  # takes connections, never answers
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        self.addCleanup(hole.close)
        adv = os.path.join(self.tmp.name, "adv.jws")
        with open(adv, "wb") as f:
            f.write(self.srv.get("/adv").body)
        self.bind(self.img, None, cfg=json.dumps({"url": f"http://127.0.0.1:{hole.getsockname()[1]}", "adv": adv}))
        dead = self.server()
        self.bind(self.img, dead)
        dead.stop()
        r, took = token_open_in_initramfs(self.img)
        self.assertNotEqual(r.returncode, 0)
        out = r.stdout + r.stderr
        self.assertIn(b"short try in the initramfs", out)
        self.assertIn(b"tether-askpass answers it", out)
        # TC_BOOT_TRY_MS (1 s) for the whole process, both tokens, plus
        # cryptsetup's own start.
        self.assertLess(took, 2)

    def test_initramfs_short_try_still_unlocks_when_the_server_answers(self):
        self.bind(self.img, self.srv)
        r, took = token_open_in_initramfs(self.img)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"Key slot 1 unlocked", r.stdout)

    def test_initramfs_rd_tether_timeout_given_still_waits_that_long(self):
        self.dead_server(self.img)
        r, took = token_open_in_initramfs(self.img, cmdline="quiet rd.tether.timeout=3 ro")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"unreachable", r.stderr)
        self.assertGreaterEqual(took, 3)
        self.assertLess(took, 6)

    def test_boot_timeout_keeps_trying_until_the_deadline(self):
        self.dead_server(self.img)
        r, took = token_open(self.img, env=clean_env(TETHER_BOOT_TIMEOUT="3"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"unreachable", r.stderr)
        self.assertGreaterEqual(took, 3)
        self.assertLess(took, 5)

    def test_server_back_during_the_wait_unlocks_soon_after(self):
        srv = self.dead_server(self.img)
        proc = token_open_spawn(self.img, clean_env(TETHER_BOOT_TIMEOUT="20"))
        self.addCleanup(end, proc)
        time.sleep(3)
        self.assertIsNone(proc.poll(), "gave up before the deadline")
        self.restart(srv)
        # From when it answers (its start takes seconds under valgrind).
        started = time.monotonic()
        out, err = proc.communicate(timeout=20)
        took = time.monotonic() - started
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn(b"Key slot 1 unlocked", out)
        self.assertLess(took, 2.5)

    def test_dead_binding_does_not_hold_up_a_live_one(self):
        for dead_first in (True, False):
            with self.subTest(dead_first=dead_first):
                img = self.make_image(f"img-{dead_first}")
                dead = self.server()
                self.bind(img, dead if dead_first else self.srv)
                self.bind(img, self.srv if dead_first else dead)
                dead.stop()
                r, took = token_open(img, env=clean_env(TETHER_BOOT_TIMEOUT="20"))
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn(b"Key slot %d unlocked" % (2 if dead_first else 1), r.stdout)
                self.assertLess(took, 2)

    def test_stale_binding_that_answers_first_does_not_mask_a_good_one(self):
        # Token 0 (slot 1) works but its server is slow; token 1's server
        # answers first but its key no longer opens slot 2. The volume must
        # still open with token 0: before passing token 0 over for the race's
        # winner, the plugin checks that the winner's key opens its slot.
        slow = self.server()
        self.bind(self.img, slow)
        self.bind(self.img, self.srv)
        self.change_key(self.img, 2)
        slow.signal(signal.SIGSTOP)
        try:
            proc = token_open_spawn(self.img, clean_env())
            self.addCleanup(end, proc)
            time.sleep(0.5)
        finally:
            slow.signal(signal.SIGCONT)
        out, err = proc.communicate(timeout=30)
        self.assertEqual(proc.returncode, 0, err)
        self.assertIn(b"Key slot 1 unlocked", out)

    def test_malformed_token_is_refused_on_import(self):
        self.bind(self.img, self.srv)
        good = json.loads(run("cryptsetup", "token", "export", "--token-id", "0", self.img, check=True).stdout)
        before = luks_meta(self.img)

        def variant(name, change):
            token = json.loads(json.dumps(good))
            change(token)
            path = os.path.join(self.tmp.name, name + ".json")
            with open(path, "w") as f:
                json.dump(token, f)
            return path

        def compact(t):
            t["jwe"] = ".".join(t["jwe"][k] for k in ("protected", "encrypted_key", "iv", "ciphertext", "tag"))

        # Refused by the plugin's validate: without it libcryptsetup takes them.
        lacks = '"jwe" lacks protected, iv, ciphertext or tag'
        for name, change in (("jwe lacking ciphertext", lambda t: t["jwe"].pop("ciphertext")),
                             ("jwe not an object", compact), ("no jwe", lambda t: t.pop("jwe"))):
            with self.subTest(name):
                path = variant(name, change)
                r = run("cryptsetup", "token", "import", "--json-file", path, self.img)
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(lacks, r.stderr.decode())
                self.assertEqual(luks_meta(self.img), before)
                copy = os.path.join(self.tmp.name, "copy")
                shutil.copy(self.img, copy)
                r = run("cryptsetup", "token", "import", "--disable-external-tokens", "--json-file", path, copy)
                self.assertEqual(r.returncode, 0, r.stderr)
        # Keyslots that are not keyslot numbers: refused (libcryptsetup's own
        # checks catch these before the plugin is asked).
        for name, slots in (("numbers not strings", [1]), ("not a number", ["x"]), ("no such slot", ["31"])):
            with self.subTest(name):
                path = variant(name, lambda t: t.update(keyslots=slots))
                r = run("cryptsetup", "token", "import", "--json-file", path, self.img)
                self.assertNotEqual(r.returncode, 0)
                self.assertEqual(luks_meta(self.img), before)
        self.assertEqual(token_open(self.img)[0].returncode, 0)

    def test_malformed_token_already_there_is_shown_invalid_and_not_used(self):
        self.bind(self.img, self.srv)
        token = json.loads(run("cryptsetup", "token", "export", "--token-id", "0", self.img, check=True).stdout)
        del token["jwe"]["tag"]
        path = os.path.join(self.tmp.name, "token.json")
        with open(path, "w") as f:
            json.dump(token, f)
        run("cryptsetup", "token", "remove", "--token-id", "0", self.img, check=True)
        run("cryptsetup", "token", "import", "--disable-external-tokens", "--token-id", "0", "--json-file", path,
            self.img, check=True)
        out = run("cryptsetup", "luksDump", self.img, env=clean_env(TETHER_TOKEN_DUMP="1"), check=True).stdout.decode()
        self.assertIn('\tinvalid: clevis token: "jwe" lacks protected, iv, ciphertext or tag', out)
        # Nothing to wait for: it fails at once even with a boot deadline.
        r, took = token_open(self.img, env=clean_env(TETHER_BOOT_TIMEOUT="20"))
        self.assertNotEqual(r.returncode, 0)
        self.assertLess(took, 2)

    def test_control_characters_from_the_header_are_escaped_in_the_log(self):
        self.bind(self.img, self.srv)
        token = json.loads(run("cryptsetup", "token", "export", "--token-id", "0", self.img, check=True).stdout)
        header = json.loads(tlib.unb64u(token["jwe"]["protected"]))
        header["clevis"]["tang"]["url"] = f"http://127.0.0.1:{tlib.free_port()}/\x1b[31m\nforged\x7f"
        token["jwe"]["protected"] = tlib.b64u(json.dumps(header).encode())
        path = os.path.join(self.tmp.name, "token.json")
        with open(path, "w") as f:
            json.dump(token, f)
        run("cryptsetup", "token", "remove", "--token-id", "0", self.img, check=True)
        run("cryptsetup", "token", "import", "--token-id", "0", "--json-file", path, self.img, check=True)
        r, _ = token_open(self.img)
        self.assertNotEqual(r.returncode, 0)
        err = r.stderr.decode()
        self.assertIn("/\\x1b[31m\\x0aforged\\x7f/rec/", err)
        self.assertNotIn("\x1b", err)
        self.assertNotIn("\x7f", err)
        self.assertNotIn("\nforged", err)
        dump = run("cryptsetup", "luksDump", self.img, env=clean_env(TETHER_TOKEN_DUMP="1"), check=True).stdout
        self.assertIn(b"forged\\x7f", dump)
        self.assertNotIn(b"\x7f", dump)

    def test_volume_bound_by_clevis_unlocks(self):
        if not shutil.which("clevis"):
            self.skipTest("clevis is not installed")
        cfg = json.dumps({"url": self.url})
        r = run("clevis", "luks", "bind", "-y", "-d", self.img, "-k", self.keyfile, "tang", cfg)
        if r.returncode != 0 and b"not found" in r.stderr:
            self.skipTest(f"clevis luks: {r.stderr.decode()}")
        self.assertEqual(r.returncode, 0, r.stderr)
        r, took = token_open(self.img)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(b"Key slot 1 unlocked", r.stdout)
        self.assertLess(took, 5)


# ----------------------------------------------------------------- 2. the password agent


class AskpassSystemd(Images):
    """With systemd's own systemd-ask-password in /run/systemd/ask-password."""

    def test_answers_systemd_ask_password_with_the_bound_key(self):
        if not shutil.which("systemd-ask-password"):
            self.skipTest("systemd-ask-password is not installed")
        srv = self.server()
        img = self.make_image()
        self.bind(img, srv)
        ident = f"cryptsetup:{img}"
        ask = spawn("systemd-ask-password", "--no-tty", "--timeout=20", f"--id={ident}", "Please enter passphrase",
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.addCleanup(end, ask)

        def asked():
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(SYSTEM_ASK_DIR):
                    with contextlib.suppress(OSError), open(os.path.join(SYSTEM_ASK_DIR, name)) as f:
                        if name.startswith("ask.") and f"\nId={ident}\n" in f.read() + "\n":
                            return True
            return False

        self.assertTrue(tlib.eventually(lambda: asked() or ask.poll() is not None, timeout=10),
                        "systemd-ask-password asked nothing")
        if ask.poll() is not None:
            self.skipTest(f"another password agent answered first: {ask.communicate()[1].decode()}")
        agent = Agent()
        self.addCleanup(agent.stop)
        out, err = ask.communicate(timeout=20)
        self.assertEqual(ask.returncode, 0, err)
        key = out.rstrip(b"\n")
        self.assertTrue(opens(img, key, 1), "the answer does not open the bound keyslot")
        if f"{img}: cannot answer" in agent.stderr():
            self.skipTest("another password agent on this machine answered first")
        self.assertIn(f"{img}: answered with the key of token 0", agent.stderr())
        # Other questions on this machine may keep it; ours alone does not.
        if not any(n.startswith("ask.") for n in os.listdir(SYSTEM_ASK_DIR)):
            self.assertEqual(agent.wait(5), 0, agent.stderr())


class Askpass(Images):
    """Questions written by this test into a private directory."""

    @classmethod
    def setUpClass(cls):
        cls.srv = tetherd()

    @classmethod
    def tearDownClass(cls):
        cls.srv.close()

    def setUp(self):
        super().setUp()
        self.qdir = os.path.join(self.tmp.name, "ask")
        os.mkdir(self.qdir)
        self.img = self.make_image()
        self.bind(self.img, self.srv)

    def ask(self, img=None, ident=None, **kw):
        q = Question(self.qdir, f"cryptsetup:{img or self.img}" if ident is None else ident, **kw)
        self.addCleanup(q.close)
        return q

    def agent(self, **kw):
        a = Agent(qdir=self.qdir, **kw)
        self.addCleanup(a.stop)
        return a

    def assert_answered(self, q, img=None, slot=1, timeout=5):
        key = q.answer(timeout)
        self.assertIsNotNone(key, "no answer")
        self.assertTrue(opens(img or self.img, key, slot), "the answer does not open the bound keyslot")
        return key

    def test_answers_a_bound_volume(self):
        q = self.ask()
        a = self.agent()
        self.assert_answered(q)
        self.assertIn(f"{self.img}: answered with the key of token 0", a.stderr())

    def test_volume_without_binding_is_not_answered_and_agent_stays(self):
        q = self.ask(img=self.make_image("unbound"))
        a = self.agent()
        self.assertIsNone(q.answer(1.5))
        self.assertTrue(a.alive(), a.stderr())
        self.assertIn("no tether/clevis binding", a.stderr())
        q.withdraw()
        self.assertEqual(a.wait(3), 0, a.stderr())

    def test_question_not_from_cryptsetup_is_ignored(self):
        qs = [self.ask(ident=f"other:{self.img}"), self.ask(ident=self.img), self.ask(ident="")]
        a = self.agent()
        for q in qs:
            self.assertIsNone(q.answer(0.5))
        self.assertTrue(a.alive(), a.stderr())
        for q in qs:
            q.withdraw()
        self.assertEqual(a.wait(3), 0, a.stderr())

    def test_server_down_then_started_is_answered_within_retry_max(self):
        img = self.make_image("later")
        srv = self.dead_server(img)
        q = self.ask(img=img)
        a = self.agent(retry_max=2)
        self.assertIsNone(q.answer(2.5))
        self.assertIn("trying again", a.stderr())
        self.restart(srv)
        started = time.monotonic()
        self.assert_answered(q, img=img, timeout=5)
        self.assertLess(time.monotonic() - started, 2 + 1)

    def test_a_hanging_server_does_not_hold_up_another_volume(self):
        # The volumes are tried at once and each answer goes out as its key
        # comes in: a volume whose server takes connections and never answers
        # does not delay the answer to one whose server does.
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        hole.listen(16)
        self.addCleanup(hole.close)
        adv = os.path.join(self.tmp.name, "adv.jws")
        with open(adv, "wb") as f:
            f.write(self.srv.get("/adv").body)
        stuck = self.make_image("stuck")
        self.bind(stuck, None, cfg=json.dumps({"url": f"http://127.0.0.1:{hole.getsockname()[1]}", "adv": adv}))
        q_stuck = self.ask(img=stuck)
        # The agent reads the questions in the directory's order (a hash on
        # ext4): the one it can answer is placed after the stuck one.
        for _ in range(50):
            q = self.ask()
            names = os.listdir(self.qdir)
            if names.index(os.path.basename(q.path)) > names.index(os.path.basename(q_stuck.path)):
                break
            q.close()
        else:
            self.fail("could not place a question after the stuck one in the directory's order")
        a = self.agent()
        self.assert_answered(q, timeout=5)
        self.assertIsNone(q_stuck.answer(0))
        # SIGTERM while the stuck volume is still being tried ends the agent,
        # cleanly and soon.
        started = time.monotonic()
        self.assertEqual(a.stop(), 0)
        self.assertLess(time.monotonic() - started, 3)

    def test_asked_again_is_answered_once_more_with_a_checked_key_then_left_to_the_user(self):
        # systemd-cryptsetup may ask again for reasons of its own (it tries
        # other volumes' cached passphrases first): a key that opens the
        # volume is sent once more; a third question is the user's. The
        # question comes first: an agent that finds none exits at once (as
        # systemd starts it for a question), and one started first raced it.
        q1 = self.ask()
        a = self.agent(linger=30)
        key = self.assert_answered(q1)
        q1.withdraw()
        q2 = self.ask()
        self.assertEqual(self.assert_answered(q2), key)
        q2.withdraw()
        q3 = self.ask()
        self.assertIsNone(q3.answer(1.5))
        self.assertIn("leaving it to the passphrase prompt", a.stderr())
        self.assertTrue(a.alive())
        # SIGTERM ends it, cleanly.
        self.assertEqual(a.stop(), 0)

    def test_refused_key_is_not_sent_again(self):
        # The binding's key no longer opens its slot: cryptsetup refuses the
        # first answer and asks again; that question gets no answer.
        stale = self.change_key(self.img, 1)
        q1 = self.ask()
        a = self.agent(linger=30)
        self.assertEqual(q1.answer(5), stale)
        q1.withdraw()
        q2 = self.ask()
        self.assertIsNone(q2.answer(1.5))
        self.assertIn("does not open it; leaving it to the passphrase prompt", a.stderr())
        self.assertTrue(a.alive())

    def test_exits_once_no_question_is_left_after_the_linger(self):
        q = self.ask()
        # Before the agent starts: its answer, from which it lingers, comes later.
        started = time.monotonic()
        a = self.agent(linger=1)
        self.assert_answered(q)
        answered = time.monotonic()
        # Answered but still asked (systemd removes it): the agent stays.
        self.assertIsNone(a.wait(0.5))
        q.withdraw()
        self.assertEqual(a.wait(5), 0, a.stderr())
        self.assertGreaterEqual(time.monotonic() - started, 1)
        self.assertLess(time.monotonic() - answered, 3)
        # Without linger it leaves at once.
        q = self.ask()
        a = self.agent(linger=0)
        self.assert_answered(q)
        q.withdraw()
        self.assertEqual(a.wait(2), 0, a.stderr())

    def test_no_question_no_agent(self):
        a = self.agent()
        self.assertEqual(a.wait(2), 0, a.stderr())

    def test_waits_without_using_the_cpu(self):
        down = self.make_image("down")
        self.dead_server(down)
        answered = self.ask()
        unanswerable = [self.ask(img=down), self.ask(img=self.make_image("unbound")), self.ask(ident="other:x")]
        a = self.agent(retry_max=1)
        self.assert_answered(answered)  # and left in place
        cpu = a.cpu_seconds()
        time.sleep(3)
        used = a.cpu_seconds() - cpu
        self.assertTrue(a.alive(), a.stderr())
        self.assertLess(used, 0.2, f"{used:.2f} s of CPU in 3 s of waiting")
        for q in unanswerable:
            self.assertIsNone(q.answer(0))

    def test_expired_or_orphaned_question_is_not_answered(self):
        expired = self.ask(not_after_us=monotonic_us() - 1_000_000)
        orphaned = self.ask(pid=dead_pid())
        a = self.agent()
        self.assertIsNone(expired.answer(1))
        self.assertIsNone(orphaned.answer(0.5))
        self.assertTrue(a.alive(), a.stderr())
        # The same question, current and from a live process, is answered.
        live = self.ask(not_after_us=monotonic_us() + 60_000_000)
        self.assert_answered(live)
        self.assertIsNone(expired.answer(0))
        self.assertIsNone(orphaned.answer(0))

    def test_unsafe_question_files_are_skipped_and_a_good_one_answered(self):
        # Question files are systemd's: regular, root's, small. A FIFO once
        # blocked the agent, /dev/zero kept a core busy past SIGTERM; another
        # user's file or a huge one is no question of systemd's either.
        def fifo(path):
            os.mkfifo(path)

        def zero(path):
            os.symlink("/dev/zero", path)

        def huge(path):
            q = self.ask()
            with open(q.path, "a") as f:
                f.write("X=" + "x" * (1 << 20) + "\n")
            os.rename(q.path, path)
            return q

        def other_user(path):
            q = self.ask()
            os.chown(q.path, 65534, 65534)
            os.rename(q.path, path)
            return q

        cases = {"fifo": (fifo, "not a regular file"), "zero": (zero, "not a regular file"),
                 "huge": (huge, "larger than 65536 bytes"), "other": (other_user, "owned by uid 65534, not by root")}
        for name, (make, why) in cases.items():
            path = os.path.join(self.qdir, f"ask.{name}")
            with self.subTest(name), contextlib.ExitStack() as done:
                # Each case alone: whatever it leaves is gone before the next.
                done.callback(unlink_quietly, path)
                bad = make(path)
                good = self.ask()
                done.callback(good.close)
                a = Agent(qdir=self.qdir, linger=30)
                done.callback(a.stop)
                self.assert_answered(good, timeout=5)
                if bad:
                    self.assertIsNone(bad.answer(0.5), "the refused question was answered")
                self.assertIn(f"{path}: {why}; not answered", a.stderr())
                # Reported once, not on every round.
                good.withdraw()
                time.sleep(0.3)
                self.assertEqual(a.stderr().count(f"{path}: {why}"), 1, a.stderr())
                started = time.monotonic()
                a.proc.send_signal(signal.SIGTERM)
                self.assertEqual(a.wait(3), 0, a.stderr())
                self.assertLess(time.monotonic() - started, 2)

    def test_answer_goes_only_to_a_socket_not_through_a_symlink(self):
        # A question whose Socket= is a symlink to a socket elsewhere.
        q = self.ask()
        link = os.path.join(self.tmp.name, "sck.link")
        os.symlink(q.sock_path, link)
        with open(q.path) as f:
            text = f.read().replace(f"Socket={q.sock_path}", f"Socket={link}")
        tmp = os.path.join(self.qdir, ".tmp.link")
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, q.path)
        a = self.agent()
        self.assertIsNone(q.answer(2))
        self.assertIn(f"cannot answer on {link}: not a socket", a.stderr())

    def test_usage_errors(self):
        for args in (["--retry-max", "0"], ["--retry-max", "x"], ["--linger", "-1"], ["extra"], ["--bogus"]):
            r = run(ASKPASS, "-d", self.qdir, *args)
            self.assertEqual(r.returncode, 2, args)
        r = run(ASKPASS, "-d", os.path.join(self.tmp.name, "missing"))
        self.assertEqual(r.returncode, 1)


# ----------------------------------------------------------------- network changes


class NetworkChangeInNamespace(tlib.unittest.TestCase):
    def test_retries_at_once_when_the_network_changes(self):
        # cryptsetup with ThreadSanitizer's runtime preloaded dies with SIGSEGV
        # inside the namespace (not outside it); the normal and ASan runs
        # cover this test, the TSan run the races of everything else.
        if "libtsan" in os.environ.get("TETHER_SANITIZER_PRELOAD", ""):
            self.skipTest("cryptsetup crashes under ThreadSanitizer's runtime in a network namespace")
        for tool in ("unshare", "ip"):
            if not shutil.which(tool):
                self.skipTest(f"{tool} is not installed")
        # unshare execs the child: a SIGTERM for it reaches Python, which ends
        # what it started.
        proc = spawn("unshare", "--net", sys.executable, os.path.abspath(__file__),
                     env=dict(os.environ, **{NETNS_ENV: "1"}), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.addCleanup(end, proc)
        out = proc.communicate(timeout=90)[0].decode(errors="replace")
        if proc.returncode == 77 or "unshare failed" in out:
            self.skipTest(out.strip().splitlines()[-1] if out.strip() else "no network namespace here")
        self.assertEqual(proc.returncode, 0, out)


class NetworkChangeTests:
    """Run only inside a private network namespace: changing the loopback
    link's MTU there is a network change that wakes the waiting client, and
    nothing outside sees it."""

    mtu = 65536

    def link_change(self):
        NetworkChangeTests.mtu -= 1
        run("ip", "link", "set", "lo", "mtu", str(self.mtu), check=True)

    def test_agent_retries_at_once(self):
        srv = self.dead_server(self.img)
        qdir = os.path.join(self.tmp.name, "ask")
        os.mkdir(qdir)
        q = Question(qdir, f"cryptsetup:{self.img}")
        self.addCleanup(q.close)
        a = Agent(qdir=qdir, retry_max=30)
        self.addCleanup(a.stop)
        # Tries at 0, 0.5, 1.5, 3.5 s; the next would be at 7.5 s.
        self.assertIsNone(q.answer(4.2))
        self.restart(srv)
        changed = time.monotonic()
        self.link_change()
        key = q.answer(3)
        self.assertIsNotNone(key, "no answer after the network changed")
        self.assertLess(time.monotonic() - changed, 1.5)
        self.assertTrue(opens(self.img, key, 1))

    def test_plugin_retries_at_once(self):
        srv = self.dead_server(self.img)
        proc = token_open_spawn(self.img, clean_env(TETHER_BOOT_TIMEOUT="20"))
        self.addCleanup(end, proc)
        # Tries at 0, 0.25, 0.75, 1.75, 3.75 s; the next would be at 5.75 s.
        time.sleep(4.2)
        self.assertIsNone(proc.poll())
        self.restart(srv)
        changed = time.monotonic()
        self.link_change()
        out, err = proc.communicate(timeout=20)
        self.assertEqual(proc.returncode, 0, err)
        self.assertLess(time.monotonic() - changed, 0.8)


if os.environ.get(NETNS_ENV):
    class NetworkChange(NetworkChangeTests, Images):
        def setUp(self):
            super().setUp()
            self.img = self.make_image()


def main():
    def interrupted(sig, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    try:
        if os.environ.get(NETNS_ENV):
            # Inside the private namespace: the plugin is already in place.
            if run("ip", "link", "set", "lo", "up").returncode != 0:
                print("cannot bring up loopback in the new network namespace")
                sys.exit(77)
            tlib.unittest.main(verbosity=2, defaultTest="NetworkChange")
        if os.geteuid() != 0:
            print("needs root: the token plugin goes to libcryptsetup's own directory")
            sys.exit(77)
        directory = token_dir()
        if not directory:
            print("this libcryptsetup loads no external token plugins")
            sys.exit(77)
        for path in (PLUGIN, ASKPASS):
            if not os.path.exists(path):
                sys.exit(f"{path} is not built")
        rerun_in_private_mounts()
        with (plugin_mounted if os.environ.get(MOUNTNS_ENV) else plugin_installed)(directory):
            tlib.main()
    finally:
        for proc in CHILDREN:
            end(proc, timeout=2)


if __name__ == "__main__":
    main()
