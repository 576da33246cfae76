"""Key material does not outlive its key: a deleted key's private scalar is
nowhere in tetherd's memory, and no process holding keys or secrets can dump
core or be read by another process of the same user."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402
from tlib import ecmr_jwk, thumbprint  # noqa: E402

NOBODY = 65534
# server/keystore.c's REMOVAL_WINDOW_MS.
REMOVAL_WINDOW_S = 2


def readable_regions(pid):
    with open(f"/proc/{pid}/maps") as f:
        for line in f:
            fields = line.split()
            start, end = (int(v, 16) for v in fields[0].split("-"))
            name = fields[5] if len(fields) > 5 else ""
            if fields[1].startswith("r") and name not in ("[vvar]", "[vsyscall]"):
                yield start, end, name


def memory_hits(pid, needles):
    """{needle name: [region, ...]} for every needle found in the process's
    readable memory (as root: non-dumpable processes stay readable to root)."""
    hits = {}
    overlap = max(len(n) for n in needles.values())
    with open(f"/proc/{pid}/mem", "rb", buffering=0) as mem:
        for start, end, name in readable_regions(pid):
            tail = b""
            for off in range(start, end, 1 << 20):
                try:
                    mem.seek(off)
                    chunk = mem.read(min(1 << 20, end - off))
                except OSError:
                    break
                data = tail + chunk
                for what, needle in needles.items():
                    if needle in data:
                        hits.setdefault(what, []).append(f"{start:x}-{end:x} {name}")
                tail = data[-overlap:]
    return hits


def secret_forms(jwk, role):
    """Pieces of the private scalar, as text and as bytes: freeing memory
    overwrites the start of a chunk, so the whole value would be missed
    where most of it lingers."""
    text, raw = jwk["d"].encode(), tlib.unb64u(jwk["d"])
    forms = {}
    for i in range(0, len(text) - 32 + 1, 28):
        forms[f"{role} d as base64url [{i}:{i + 32}]"] = text[i:i + 32]
    for i in range(0, len(raw) - 24 + 1, 21):
        forms[f"{role} d as bytes [{i}:{i + 24}]"] = raw[i:i + 24]
    return forms


def process_hardening(pid):
    """(core size limit, whether /proc/PID belongs to root as it does for a
    non-dumpable process of another user)."""
    with open(f"/proc/{pid}/limits") as f:
        core = [ln.split()[4:6] for ln in f if ln.startswith("Max core file size")][0]
    return core, os.stat(f"/proc/{pid}/mem").st_uid


class Memory(tlib.unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-memory-")

    def tearDown(self):
        self.tmp.cleanup()

    def rec(self, srv, jwk):
        x, y = tlib.random_point()
        return srv.post("/rec/" + thumbprint(jwk), ecmr_jwk(x, y)).status

    def reload(self, srv):
        reloads = srv.logs().count(": loaded ")
        srv.signal(signal.SIGHUP)
        self.assertTrue(tlib.eventually(lambda: srv.logs().count(": loaded ") > reloads, timeout=20), srv.logs())

    def test_deleted_key_private_scalar_not_in_tetherd_memory(self):
        # What ships is the plain build: under a sanitizer or valgrind the
        # allocator is another one and the shadow memory takes hours to scan.
        if os.environ.get("TETHER_SANITIZE", "none") != "none" or os.environ.get("TETHERD_VALGRIND"):
            self.skipTest("memory scan of the plain build only (sanitizer or valgrind run)")
        keydir = os.path.join(self.tmp.name, "keys")
        os.mkdir(keydir)
        # Several pairs, so that what lingers is not all overwritten by chance.
        for _ in range(8):
            tlib.tether_keys("gen", keydir)
        old = [k for k in tlib.load_keys(keydir)]
        old_exc = [k["jwk"] for k in old if k["role"] == "exc"]
        needles = {}
        for k in old:
            needles.update(secret_forms(k["jwk"], f"{k['role']} key {k['file']}"))
        with tlib.Tetherd(keydir) as srv:
            # The keys are used, as clients' recoveries use them.
            for _ in range(2):
                for jwk in old_exc:
                    self.assertEqual(self.rec(srv, jwk), 200)
                self.assertEqual(srv.get("/adv").status, 200)
            # Each reload copies the keys it keeps and frees the old copies.
            for _ in range(5):
                self.reload(srv)
            tlib.tether_keys("rotate", srv.keydir)
            new_exc = tlib.key_of(srv.keydir, "exc")
            self.assertTrue(tlib.eventually(lambda: self.rec(srv, new_exc) == 200, timeout=20))
            for k in tlib.load_keys(srv.keydir):
                if k["hidden"]:
                    os.unlink(os.path.join(srv.keydir, k["file"]))
            self.assertTrue(tlib.eventually(lambda: all(self.rec(srv, k) == 404 for k in old_exc), timeout=20),
                            srv.logs())
            # tetherd keeps what it served before a removal for 2 s (in case
            # the whole directory is being removed), then lets go of it by
            # itself: no reload, no further change to the directory.
            time.sleep(REMOVAL_WINDOW_S + 1)
            # Right after the keys are freed, and again after a few requests.
            hits = memory_hits(srv.proc.pid, needles)
            for _ in range(5):
                self.assertEqual(self.rec(srv, new_exc), 200)
                self.assertEqual(srv.get("/adv").status, 200)
            hits.update(memory_hits(srv.proc.pid, needles))
            self.assertEqual(hits, {}, "a deleted key's private scalar is still in tetherd's memory")

    def test_tetherd_cannot_dump_core_or_be_read_by_its_user(self):
        with tlib.Tetherd(user=NOBODY) as srv:
            core, owner = process_hardening(srv.proc.pid)
            self.assertEqual(core, ["0", "0"])
            # Non-dumpable: /proc/PID is root's, so the server's own user
            # cannot read its memory or attach a debugger.
            self.assertEqual(owner, 0)
            r = subprocess.run(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
                                "dd", f"if=/proc/{srv.proc.pid}/mem", "of=/dev/null", "count=0"],
                               capture_output=True, text=True, timeout=30)
            self.assertNotEqual(r.returncode, 0, r.stderr)

    def _check_blocked(self, argv, **kw):
        """Runs argv as nobody until it waits for input, then checks that it
        made itself non-dumpable (exec made it dumpable: /proc/PID was
        nobody's) and has no core size."""
        exe = os.path.realpath(argv[0])
        proc = subprocess.Popen(["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)

        def state():
            try:
                if os.readlink(f"/proc/{proc.pid}/exe") != exe:
                    return None   # still setpriv
                return process_hardening(proc.pid)
            except OSError:
                return None
        try:
            seen = tlib.eventually(lambda: state() == (["0", "0"], 0), timeout=10)
            self.assertTrue(seen, f"{argv[0]}: core limit and owner of /proc/PID: {state()}; "
                                  f"exited: {proc.poll()}")
        finally:
            proc.kill()
            proc.wait()

    def test_tether_cli_cannot_dump_core(self):
        # Waiting for the secret on standard input.
        self._check_blocked([tlib.TETHER, "encrypt", "null", "{}"], stdin=subprocess.PIPE)

    def test_tether_keys_cannot_dump_core(self):
        # Waiting for an advertisement from a server that never answers.
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            self._check_blocked([tlib.TETHER_KEYS, "show", "--url", f"http://127.0.0.1:{s.getsockname()[1]}"],
                                stdin=subprocess.DEVNULL, env={**os.environ, "TETHER_TIMEOUT": "60"})


if __name__ == "__main__":
    tlib.unittest.main()
