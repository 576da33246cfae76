"""External pins and sss under attack, through the real CLI: a pin program
that never exits (cancelled by sss, stopped at the time limit, its whole
process group killed), one that exits without reading its input (no SIGPIPE
death), where pin programs are looked for and what environment they get,
the bound on sss worker threads for a crafted nested header, and the time
limit of a whole decryption however many blocking leaves it holds."""

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402

from tlib import PASSPHRASE, run, tether  # noqa: E402

# client/proto/sss-internal.h TC_SSS_MAX_THREADS
SSS_MAX_THREADS = 32


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def fake_jwe(header):
    """A compact JWE with this header and random content: enough for a pin
    that is never reached or never answers."""
    return ".".join([b64(json.dumps(header).encode()), "", b64(os.urandom(12)), b64(os.urandom(32)),
                     b64(os.urandom(16))])


def sss_header(t, jwes):
    p = b"\xff" * 31 + b"\x13"  # a 32-byte number (sss does not check primality before combining)
    return {"alg": "dir", "enc": "A256GCM", "clevis": {"pin": "sss", "sss": {"t": t, "p": b64(p), "jwe": jwes}}}


def alive(pid):
    """Running (not gone, not a zombie waiting for a reaper)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def threads(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except FileNotFoundError:
        return 0


HANG_JWE = fake_jwe({"alg": "dir", "enc": "A256GCM", "clevis": {"pin": "hang", "hang": {}}})
HANGMANY_JWE = fake_jwe({"alg": "dir", "enc": "A256GCM", "clevis": {"pin": "hangmany", "hangmany": {}}})
PLAIN_JWE = fake_jwe({"alg": "dir", "enc": "A256GCM", "clevis": {"pin": "plain", "plain": {}}})

PINS = {
    # Never exits; a grandchild sleeps too. Writes both pids for the test.
    "clevis-decrypt-hang": """#!/bin/sh
sleep 1000 &
echo $! > "$PIDS/grandchild"
echo $$ > "$PIDS/child"
sleep 1000
""",
    "clevis-encrypt-hang": """#!/bin/sh
cat > /dev/null
printf '%s' '""" + HANG_JWE + """'
""",
    # A share kept in a file, given back once the hang pin is surely
    # running (so that sss has something to cancel).
    "clevis-encrypt-plain": """#!/bin/sh
cat > "$PIDS/share"
printf '%s' '""" + PLAIN_JWE + """'
""",
    "clevis-decrypt-plain": """#!/bin/sh
cat > /dev/null
for i in $(seq 100); do [ -s "$PIDS/child" ] && break; sleep 0.1; done
cat "$PIDS/share"
""",
    # Closes its (large) input without reading it, exits a little later
    # (so that tether's next write surely meets a closed pipe).
    "clevis-decrypt-early": "#!/bin/sh\nexec 0<&-\nsleep 0.3\nexit 3\n",
    # Never exits, one of many: each writes its own and its grandchild's pid.
    "clevis-decrypt-hangmany": """#!/bin/sh
sleep 1000 &
echo $$ $! > "$PIDS/many.$$"
sleep 1000
""",
    # Answers, then exits leaving a daemon (its own session: out of reach of
    # the group kill) that holds its stdout; not its stderr, so that the
    # test's own capture of tether's stderr is not held open too.
    "clevis-decrypt-daemon": """#!/bin/sh
cat > /dev/null
setsid sleep 30 2>/dev/null &
echo $! > "$PIDS/daemon"
printf 'the secret'
exit 0
""",
    # Exits at once, writing nothing, while a process it started holds stdout.
    "clevis-decrypt-quiet": """#!/bin/sh
cat > /dev/null
sleep 30 2>/dev/null &
echo $! > "$PIDS/quiet"
exit 0
""",
    # Dumps its environment, then fails.
    "clevis-decrypt-envdump": "#!/bin/sh\nenv > \"$DUMP\"\nexit 4\n",
}


class Pins(tlib.unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-pins-")
        self.dir = os.path.join(self.tmp.name, "pins")
        self.pids = os.path.join(self.tmp.name, "pids")
        os.mkdir(self.dir)
        os.mkdir(self.pids)
        for name, text in PINS.items():
            path = os.path.join(self.dir, name)
            with open(path, "w") as f:
                f.write(text.replace('"$PIDS', f'"{self.pids}').replace('"$DUMP"', f'"{self.tmp.name}/env"'))
            os.chmod(path, 0o755)

    def tearDown(self):
        for name in ("child", "grandchild", "daemon", "quiet"):
            try:
                with open(os.path.join(self.pids, name)) as f:
                    os.kill(int(f.read()), signal.SIGKILL)
            except (FileNotFoundError, ValueError, ProcessLookupError):
                pass
        self.tmp.cleanup()

    def env(self, opt_in=True, **extra):
        env = dict(os.environ)
        env.pop("TETHER_TIMEOUT", None)
        env.pop("TETHER_PIN_PATH", None)
        if opt_in:
            env["TETHER_PIN_PATH"] = self.dir
            # Also on PATH (ignored by tether): the same tests then show what
            # a tether that still searched PATH would do.
            env["PATH"] = self.dir + ":" + env.get("PATH", "")
        env.update(extra)
        return env

    def assert_hang_pin_gone(self):
        for name in ("child", "grandchild"):
            with open(os.path.join(self.pids, name)) as f:
                pid = int(f.read())
            tlib.eventually(lambda: not alive(pid), timeout=5)
            self.assertFalse(alive(pid), f"the pin's {name} (pid {pid}) still runs")

    def timed(self, *args, input=None, env=None, limit=60):
        t0 = time.monotonic()
        r = tlib.run(tlib.TETHER, *args, input=input, env=env, timeout=limit)
        return r, time.monotonic() - t0

    # ------------------------------------------------------- item 1: no hang

    def encrypt_sss_plain_hang(self):
        cfg = json.dumps({"t": 1, "pins": {"plain": {}, "hang": {}}})
        r = tether("encrypt", "sss", cfg, input=b"secret", env=self.env())
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_sss_cancels_a_pin_that_never_exits(self):
        jwe = self.encrypt_sss_plain_hang()
        # The plain share is in within a second: the hung pin is cancelled and killed.
        r, took = self.timed("decrypt", input=jwe, env=self.env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"secret")
        self.assertLess(took, 8, "sss waited for a pin it no longer needed")
        self.assert_hang_pin_gone()

    def test_pin_that_never_exits_is_stopped_at_the_time_limit(self):
        # 3 x TETHER_TIMEOUT, then SIGTERM, then SIGKILL after 1 s.
        r, took = self.timed("decrypt", input=HANG_JWE.encode(), env=self.env(TETHER_TIMEOUT="1"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(b"clevis-decrypt-hang did not finish within 3.0 s", r.stderr)
        self.assertGreater(took, 2.5)
        self.assertLess(took, 15)
        self.assert_hang_pin_gone()

    def test_luks_unlock_does_not_hang_on_a_pin(self):
        img = os.path.join(self.tmp.name, "img")
        with open(img, "wb") as f:
            f.truncate(32 * 1024 * 1024)
        run("cryptsetup", "luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2",
            "--pbkdf-force-iterations", "1000", "--key-file", "-", img, input=PASSPHRASE, check=True)
        keyfile = os.path.join(self.tmp.name, "pass")
        with open(keyfile, "wb") as f:
            f.write(PASSPHRASE)
        cfg = json.dumps({"t": 1, "pins": {"plain": {}, "hang": {}}})
        r = tether("luks", "bind", "-y", "-d", img, "-k", keyfile, "sss", cfg, env=self.env())
        self.assertEqual(r.returncode, 0, r.stderr)
        r, took = self.timed("luks", "unlock", "-d", img, "-t", "-1", env=self.env())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLess(took, 10)
        self.assert_hang_pin_gone()
        # The hung pin alone: stopped at 3 x TETHER_TIMEOUT.
        r = tether("luks", "bind", "-y", "-d", img, "-k", keyfile, "hang", "{}", env=self.env())
        self.assertEqual(r.returncode, 0, r.stderr)
        r, took = self.timed("luks", "unlock", "-d", img, "-t", "2", env=self.env(TETHER_TIMEOUT="1"))
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn(b"did not finish", r.stderr)
        self.assertLess(took, 15)
        self.assert_hang_pin_gone()

    # ----------------------------------------------------- item 2: SIGPIPE

    def test_pin_exiting_without_reading_does_not_kill_tether(self):
        header = b64(json.dumps({"alg": "dir", "enc": "A256GCM", "clevis": {"pin": "early"}}).encode())
        jwe = (header + ".." + "A" * (4 * 1024 * 1024) + ".AAAA.AAAA").encode()
        for _ in range(3):
            r = tether("decrypt", input=jwe, env=self.env())
            self.assertNotEqual(r.returncode, -signal.SIGPIPE, "killed by SIGPIPE")
            self.assertNotEqual(r.returncode, 141, "killed by SIGPIPE")
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(b"clevis-decrypt-early failed (exit status 3)", r.stderr)

    # ------------------------------------------- item 7: where, and with what

    def test_pin_on_path_only_is_not_run_without_opt_in(self):
        env = self.env(opt_in=False, PATH=self.dir + ":" + os.environ.get("PATH", ""))
        r = tether("decrypt", input=fake_jwe({"clevis": {"pin": "envdump"}}).encode(), env=env)
        self.assertEqual(r.returncode, 1)
        err = r.stderr.decode()
        self.assertIn('unsupported pin "envdump"', err)
        self.assertIn("no clevis-decrypt-envdump in /usr/local/bin:/usr/bin:/bin", err)
        self.assertIn("TETHER_PIN_PATH", err)
        self.assertFalse(os.path.exists(os.path.join(self.tmp.name, "env")), "the pin on PATH ran")

    def test_pin_gets_a_cleaned_environment(self):
        env = self.env(LD_LIBRARY_PATH="/nonexistent", MY_SECRET="hunter2", TPM2TOOLS_TCTI="device:/dev/null",
                       TSS2_LOG="all+none", LANG="C.UTF-8", TMPDIR="/tmp",
                       PATH="/opt/evil/bin:" + os.environ.get("PATH", ""))
        jwe = fake_jwe({"alg": "dir", "enc": "A256GCM", "clevis": {"pin": "envdump"}})
        r = tether("decrypt", input=jwe.encode(), env=env)
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"clevis-decrypt-envdump failed (exit status 4)", r.stderr)
        with open(os.path.join(self.tmp.name, "env")) as f:
            seen = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
        for gone in ("LD_LIBRARY_PATH", "MY_SECRET", "TETHER_PIN_PATH"):
            self.assertNotIn(gone, seen)
        for kept in ("TPM2TOOLS_TCTI", "TSS2_LOG", "LANG", "TMPDIR"):
            self.assertEqual(seen.get(kept), env[kept], kept)
        self.assertEqual(seen["PATH"], self.dir + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")

    def test_relative_pin_path_is_refused(self):
        r = tether("decrypt", input=HANG_JWE.encode(), env=self.env(opt_in=False, TETHER_PIN_PATH="pins:/usr/bin"))
        self.assertEqual(r.returncode, 1)
        self.assertIn(b"TETHER_PIN_PATH", r.stderr)
        self.assertIn(b"absolute", r.stderr)

    # ---------------------------------------------- item 6: thread budget

    def test_nested_sss_threads_are_bounded(self):
        # Leaves that block: tang bindings to a server that takes connections
        # and never answers.
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        hole.listen(4096)
        url = f"http://127.0.0.1:{hole.getsockname()[1]}"
        with tlib.Tetherd(args=["-q"]) as srv:
            adv = os.path.join(self.tmp.name, "adv.jws")
            with open(adv, "wb") as f:
                f.write(srv.get("/adv").body)
        r = tether("encrypt", "tang", json.dumps({"url": url, "adv": adv}), input=os.urandom(64))
        self.assertEqual(r.returncode, 0, r.stderr)
        leaf = r.stdout.decode()
        # 2 nodes of 120 leaves each (256 pins in all at most): ~240 threads
        # at once without a bound.
        inner = [fake_jwe(sss_header(1, [leaf] * 120)) for _ in range(2)]
        jwe = fake_jwe(sss_header(1, inner)).encode()
        p = subprocess.Popen([tlib.TETHER, "decrypt"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, env=self.env(TETHER_TIMEOUT="5"))
        p.stdin.write(jwe)
        p.stdin.close()
        peak, t0 = 0, time.monotonic()
        try:
            while time.monotonic() - t0 < 6 and p.poll() is None:
                peak = max(peak, threads(p.pid))
                time.sleep(0.01)
            self.assertIsNone(p.poll(), "decryption ended before the threads could be counted")
        finally:
            p.kill()
            p.wait()
            hole.close()
        # main + the sss workers; glibc may add a resolver thread (getaddrinfo_a) per worker.
        print(f"peak threads: {peak}", file=sys.stderr)
        self.assertGreater(peak, SSS_MAX_THREADS // 2, "the test did not exercise the workers")
        self.assertLessEqual(peak, 2 * SSS_MAX_THREADS + 4)

    def test_nested_sss_beyond_the_thread_budget_decrypts(self):
        inner = {"t": 40, "pins": {"null": [{}] * 50}}
        cfg = json.dumps({"t": 3, "pins": {"sss": [inner] * 4}})
        r = tether("encrypt", "sss", cfg, input=b"many shares")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = tether("decrypt", input=r.stdout)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"many shares")

    # --------------------------------- the whole decryption's time limit

    # client/proto/ctx.c tc_ctx_limit_ms() with TETHER_TIMEOUT=1: 3 attempts x 1 s,
    # pauses of 0.25 and 0.5 s between them, and 1 s to spare.
    LIMIT = 4.75
    # Starting the process, and stopping what runs at the limit (a pin gets
    # SIGTERM, then SIGKILL after 1 s), on a loaded machine.
    MARGIN = 4

    def assert_time_limit(self, r, took, without):
        print(f"took {took:.1f} s (limit {self.LIMIT} s, about {without} s without it)", file=sys.stderr)
        self.assertLess(took, self.LIMIT + self.MARGIN, "the whole decryption was not bounded in time")
        self.assertEqual(r.returncode, 1, r.stderr)
        err = r.stderr.decode()
        self.assertRegex(err, r"^tether decrypt: gave up after [0-9.]+ s: the whole decryption has a time limit "
                              r"of 4\.[78] s \(what one pin may take: 3 tries x TETHER_TIMEOUT=1 s with pauses, "
                              r"plus 1 s; raise TETHER_TIMEOUT to wait longer\); by then: ")

    def test_nested_sss_of_blocking_tang_leaves_has_a_time_limit(self):
        # 250 leaves (256 pins in all at most) to a server that takes
        # connections and never answers, and one to a closed port: nothing
        # can succeed. 32 threads at 3 x 1 s a leaf would take about
        # 250 / 32 x 3 = 24 s.
        hole = socket.socket()
        hole.bind(("127.0.0.1", 0))
        hole.listen(4096)
        url = f"http://127.0.0.1:{hole.getsockname()[1]}"
        with tlib.Tetherd(args=["-q"]) as srv:
            adv = os.path.join(self.tmp.name, "adv.jws")
            with open(adv, "wb") as f:
                f.write(srv.get("/adv").body)
        leaves = []
        for u in (url, f"http://127.0.0.1:{tlib.free_port()}"):
            r = tether("encrypt", "tang", json.dumps({"url": u, "adv": adv}), input=os.urandom(64))
            self.assertEqual(r.returncode, 0, r.stderr)
            leaves.append(r.stdout.decode())
        inner = [fake_jwe(sss_header(1, [leaves[0]] * 125)) for _ in range(2)]
        jwe = fake_jwe(sss_header(1, inner + [leaves[1]])).encode()
        try:
            r, took = self.timed("decrypt", input=jwe, env=self.env(TETHER_TIMEOUT="1"))
        finally:
            hole.close()
        self.assert_time_limit(r, took, 24)

    def test_many_pins_that_never_exit_have_a_time_limit(self):
        # 200 pins that never exit, each stopped after 3 x 1 s: 32 threads
        # would take about 200 / 32 x 3 = 19 s.
        jwe = fake_jwe(sss_header(1, [HANGMANY_JWE] * 200)).encode()
        def started():
            pids = []
            for name in os.listdir(self.pids):
                if name.startswith("many."):
                    with open(os.path.join(self.pids, name)) as f:
                        pids += [int(pid) for pid in f.read().split()]
            return pids
        try:
            r, took = self.timed("decrypt", input=jwe, env=self.env(TETHER_TIMEOUT="1"))
            self.assert_time_limit(r, took, 19)
            self.assertGreater(len(started()), SSS_MAX_THREADS, "the pins did not run")
            # Every pin, and what each left behind, is gone.
            tlib.eventually(lambda: not any(alive(pid) for pid in started()), timeout=5)
            self.assertEqual([pid for pid in started() if alive(pid)], [], "pins still running")
        finally:
            for pid in started():
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass

    # ------------------------------------- what a pin leaves behind

    def test_pin_leaving_a_daemon_on_its_output_returns_at_once(self):
        jwe = fake_jwe({"alg": "dir", "enc": "A256GCM", "clevis": {"pin": "daemon"}}).encode()
        r, took = self.timed("decrypt", input=jwe, env=self.env(TETHER_TIMEOUT="5"))
        print(f"took {took:.2f} s", file=sys.stderr)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, b"the secret")
        # Its output was complete when it exited: no wait for the daemon
        # (30 s) or the time limit (15 s). 0.5 s of grace, and a loaded machine.
        self.assertLess(took, 2.5)

    def test_pin_exiting_while_its_output_is_held_open_says_so(self):
        jwe = fake_jwe({"alg": "dir", "enc": "A256GCM", "clevis": {"pin": "quiet"}}).encode()
        r, took = self.timed("decrypt", input=jwe, env=self.env(TETHER_TIMEOUT="5"))
        print(f"took {took:.2f} s", file=sys.stderr)
        self.assertEqual(r.returncode, 1)
        err = r.stderr.decode()
        self.assertIn("clevis-decrypt-quiet exited, but its output stayed open "
                      "(a process it started still holds it)", err)
        self.assertNotIn("did not finish", err)
        self.assertLess(took, 2.5)
        # In the pin's group: killed with it.
        with open(os.path.join(self.pids, "quiet")) as f:
            pid = int(f.read())
        tlib.eventually(lambda: not alive(pid), timeout=5)
        self.assertFalse(alive(pid), "what the pin left in its group still runs")


# programs/tether/main.c INPUT_MAX; client/proto/jwe.h TC_JWE_MAX / 2
INPUT_MAX = 16 * 1024 * 1024
PLAINTEXT_MAX = 8 * 1024 * 1024


class Input(tlib.unittest.TestCase):
    """What tether encrypt and decrypt read from standard input: every byte
    (the buffer grows from 4 KiB), up to their bound and not beyond."""

    def test_input_of_any_size_up_to_the_bound_round_trips(self):
        for size in (0, 1, 4095, 4096, 4097, 8192, 100000, PLAINTEXT_MAX):
            pt = os.urandom(size)
            enc = tether("encrypt", "null", "{}", input=pt)
            self.assertEqual(enc.returncode, 0, (size, enc.stderr))
            dec = tether("decrypt", input=enc.stdout)
            self.assertEqual(dec.returncode, 0, (size, dec.stderr))
            self.assertEqual(dec.stdout, pt, size)

    def test_input_beyond_the_bound_is_refused(self):
        # Each says which limit, in MiB (issue 13: not "Message too long").
        for cmd, size, msg in ((["encrypt", "null", "{}"], PLAINTEXT_MAX + 1,
                                "the plaintext on standard input is larger than 8 MiB, the most tether encrypts"),
                               (["encrypt", "null", "{}"], INPUT_MAX + 1,
                                "the plaintext on standard input is larger than 8 MiB, the most tether encrypts"),
                               (["decrypt"], INPUT_MAX + 1,
                                "the input on standard input is larger than 16 MiB, the most a JWE may be")):
            r = tether(*cmd, input=b"x" * size)
            self.assertEqual(r.returncode, 1, cmd)
            self.assertEqual(r.stderr.decode(), f"tether {cmd[0]}: {msg}\n")
            self.assertEqual(r.stdout, b"")

    def test_input_of_exactly_the_bound_is_read(self):
        # The buffer is full at the bound: only a byte more is too much.
        r = tether("decrypt", input=b"x" * INPUT_MAX)
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.decode(), "tether decrypt: input is not a compact JWE (five base64url parts "
                                            "separated by dots)\n")


if __name__ == "__main__":
    tlib.main()
