"""tether's agent for Debian's cryptroot (`tether-askpass --cryptroot`, over
client/boot/passfifo.c) against a tetherd on loopback and LUKS2 image files.

cryptroot asks for each volume with /lib/cryptsetup/askpass, which makes the
FIFO /lib/cryptsetup/passfifo, reads it (and the console) and passes on
whatever comes first; the asking process carries CRYPTTAB_NAME and
CRYPTTAB_SOURCE in its environment. Here a small Python program does what
askpass does with a FIFO in a temporary directory (--fifo), in a process of
its own with that environment: the agent finds it as it would at boot, as
the process reading the FIFO. The volumes come from a crypttab file and a
kernel command line file with cryptopts= (--crypttab, --cmdline). The key
that comes out of the FIFO must open the image (`cryptsetup open
--test-passphrase --key-file=-`)."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402
from tlib import PASSPHRASE, TETHER, run, tether  # noqa: E402

BUILD = os.path.dirname(os.path.dirname(TETHER))
ASKPASS = os.environ.get("TETHER_ASKPASS", os.path.join(BUILD, "programs", "tether-askpass"))

# What Debian's /lib/cryptsetup/askpass does with its FIFO: make it unless
# it is there, open it for reading without blocking, read until the writer
# closes it. It never removes it: the next askpass opens the same FIFO.
FAKE_ASKPASS = r"""
import os, select, sys
fifo = sys.argv[1]
try:
    os.mkfifo(fifo, 0o600)
except FileExistsError:
    pass
fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
print("reading", flush=True)
p = select.poll()
p.register(fd, select.POLLIN)
data = b""
while True:
    p.poll()
    try:
        chunk = os.read(fd, 4096)
    except BlockingIOError:
        continue
    if not chunk:
        break
    data += chunk
os.close(fd)
sys.stdout.buffer.write(data)
"""


# An askpass reading a descriptor it inherited (argv[1]: its number).
FAKE_ASKPASS_FD = r"""
import os, select, sys
fd = int(sys.argv[1])
p = select.poll()
p.register(fd, select.POLLIN)
data = b""
while True:
    p.poll()
    try:
        chunk = os.read(fd, 4096)
    except BlockingIOError:
        continue
    if not chunk:
        break
    data += chunk
sys.stdout.buffer.write(data)
"""

# Opens the FIFO for reading with no CRYPTTAB_NAME; on "go", starts the
# askpass argv[2] with the descriptor (and CRYPTTAB_* from LATER_CRYPTTAB_*),
# then closes its own: the FIFO's reader changes with no open or close of it.
HANDOVER = r"""
import os, subprocess, sys
fifo, child = sys.argv[1], sys.argv[2]
os.mkfifo(fifo, 0o600)
fd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
print("reading", flush=True)
sys.stdin.readline()
env = {k[6:]: v for k, v in os.environ.items() if k.startswith("LATER_")}
proc = subprocess.Popen([sys.executable, "-c", child, str(fd)], pass_fds=[fd], env=env, stdout=subprocess.DEVNULL)
os.close(fd)
print("handed over", proc.pid, flush=True)
proc.wait()
"""


def kill_quietly(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def voluntary_switches(pid):
    """How often the process's main thread has gone to sleep (each poll() that waited counts)."""
    with open(f"/proc/{pid}/task/{pid}/status") as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError(f"no voluntary_ctxt_switches for {pid}")


def opens_with_key_file(img, key):
    """`cryptsetup open --test-passphrase --key-file=-`: what cryptroot does with askpass's output."""
    return run("cryptsetup", "open", "--test-passphrase", "--disable-external-tokens", "--key-file=-", img,
               input=key).returncode == 0


class Askpass:
    """One askpass for volume name (source img), reading fifo."""

    def __init__(self, fifo, name, img):
        env = dict(os.environ, CRYPTTAB_NAME=name, CRYPTTAB_SOURCE=img)
        # Unbuffered: a buffered readline() may read the key too when it comes
        # right after "reading", and communicate() reads the pipe itself,
        # past that buffer: the test then saw 0 bytes (1 run in 4 with the
        # keys recovered ahead).
        self.proc = subprocess.Popen([sys.executable, "-c", FAKE_ASKPASS, fifo], env=env, stdout=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, bufsize=0)
        line = self.proc.stdout.readline()
        assert line == b"reading\n", line

    def key(self, timeout):
        """What came through the FIFO, or None if nothing within timeout."""
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return out

    def type(self, fifo, text):
        """As cryptroot-unlock (or a person at the console) would answer."""
        with open(fifo, "wb") as f:
            f.write(text)

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc.stdout.close()


class Agent:
    def __init__(self, fifo, crypttab, cmdline, linger=0, retry_max=1):
        self.log = tempfile.TemporaryFile()
        env = {k: v for k, v in os.environ.items() if k not in ("TETHER_BOOT_TIMEOUT", "TETHER_TIMEOUT",
                                                                  "JOURNAL_STREAM")}
        self.proc = subprocess.Popen(
            [ASKPASS, "--cryptroot", "--fifo", fifo, "--crypttab", crypttab, "--cmdline", cmdline,
             "--linger", str(linger), "--retry-max", str(retry_max)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self.log, env=env)

    def stderr(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait(self, timeout):
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            if self.wait(5) is None:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Case(tlib.unittest.TestCase):
    """A temporary directory standing in for /lib/cryptsetup, a crypttab and
    a kernel command line file, LUKS2 images, tetherds, agents, askpasses."""

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="tether-passfifo-")
        self.addCleanup(self.tmp.cleanup)
        self.keyfile = self.path("pass")
        with open(self.keyfile, "wb") as f:
            f.write(PASSPHRASE)
        # Stands in for /lib/cryptsetup, with /lib a symbolic link to usr/lib
        # as in Debian's merged-/usr images.
        os.makedirs(self.path("usr", "lib", "cryptsetup"))
        os.symlink("usr/lib", self.path("lib"))
        self.fifo = self.path("lib", "cryptsetup", "passfifo")
        self.crypttab = self.path("crypttab")
        self.cmdline = self.path("cmdline")
        self.write(self.crypttab, "")
        self.write(self.cmdline, "quiet\n")

    def path(self, *names):
        return os.path.join(self.tmp.name, *names)

    def write(self, path, text):
        with open(path, "w") as f:
            f.write(text)

    def image(self, name):
        img = self.path(name)
        with open(img, "wb") as f:
            f.truncate(32 * 1024 * 1024)
        run("cryptsetup", "luksFormat", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--batch-mode",
            "--type", "luks2", "--key-file", "-", img, input=PASSPHRASE, check=True)
        return img

    def server(self, **kw):
        srv = tlib.Tetherd(args=["-q"], **kw)
        self.addCleanup(srv.close)
        return srv

    def bind(self, img, srv):
        r = tether("luks", "bind", "-y", "-d", img, "-k", self.keyfile, "tang",
                   f'{{"url":"http://127.0.0.1:{srv.port}"}}')
        self.assertEqual(r.returncode, 0, r.stderr)

    def agent(self, **kw):
        agent = Agent(self.fifo, self.crypttab, self.cmdline, **kw)
        self.addCleanup(agent.close)
        return agent

    def askpass(self, name, img):
        asker = Askpass(self.fifo, name, img)
        self.addCleanup(asker.close)
        return asker



class Cryptroot(Case):
    def test_two_volumes_recovered_at_once_and_answered_when_asked(self):
        """Both keys are recovered before anything asks (the server is then
        stopped); cryptroot then asks for one volume after the other through
        the same FIFO path, and each askpass gets its own volume's key."""
        srv = self.server()
        root, data = self.image("root.img"), self.image("data.img")
        self.bind(root, srv)
        self.bind(data, srv)
        # One from crypttab (with entries cryptroot asks nobody for), one from cryptopts=.
        self.write(self.crypttab, f"# <target> <source> <key> <options>\nroot {root} none luks,discard\n"
                                  f"keyed /dev/null /etc/keyfile luks\nscripted /dev/null none keyscript=/bin/cat\n")
        self.write(self.cmdline, f"quiet cryptopts=target=data,source={data},luks ro\n")
        agent = self.agent()
        self.assertTrue(tlib.eventually(lambda: all(f"{n}: key recovered" in agent.stderr() for n in ("root", "data")),
                                        timeout=20), agent.stderr())
        self.assertNotIn("keyed", agent.stderr())
        self.assertNotIn("scripted", agent.stderr())
        srv.stop()
        for name, img in (("root", root), ("data", data)):
            key = self.askpass(name, img).key(timeout=10)
            self.assertIsNotNone(key, f"{name}: nothing written into the FIFO:\n{agent.stderr()}")
            self.assertTrue(opens_with_key_file(img, key),
                            f"{name}: the {len(key)} bytes read do not open {img}:\n{agent.stderr()}")
            self.assertFalse(opens_with_key_file(root if img == data else data, key))
            self.assertIn(f"{name}: answered with the key of token 0", agent.stderr())
        # Everything answered, no linger: the agent ends by itself.
        self.assertEqual(agent.wait(10), 0, agent.stderr())

    def test_volume_known_only_from_its_askpass_and_a_server_that_comes_back_late(self):
        """Nothing listed in crypttab: the volume comes from the askpass's
        environment. Its server is down when it asks; once it is back, the
        key goes into the FIFO with nothing typed."""
        srv = self.server()
        img = self.image("late.img")
        self.bind(img, srv)
        port, keydir = srv.port, srv.keydir
        srv.stop()
        agent = self.agent(retry_max=1)
        asker = self.askpass("late", img)
        self.assertTrue(tlib.eventually(lambda: "trying again" in agent.stderr(), timeout=15), agent.stderr())
        self.assertIsNone(asker.key(timeout=0.5))
        self.server(keydir=keydir, port=port)
        key = asker.key(timeout=15)
        self.assertIsNotNone(key, agent.stderr())
        self.assertTrue(opens_with_key_file(img, key))

    def test_typing_still_works_and_an_unbound_volume_is_left_alone(self):
        """A volume without a binding: the agent says so and writes nothing;
        what is typed (written into the FIFO by someone else) is what the
        askpass passes on. With nothing else to do, the agent ends."""
        img = self.image("plain.img")
        self.write(self.crypttab, f"plain {img} none luks\n")
        agent = self.agent()
        self.assertTrue(tlib.eventually(lambda: "no tether/clevis binding" in agent.stderr(), timeout=10),
                        agent.stderr())
        asker = self.askpass("plain", img)
        self.assertIsNone(asker.key(timeout=1))
        asker.type(self.fifo, PASSPHRASE)
        self.assertEqual(asker.key(timeout=5), PASSPHRASE)
        self.assertEqual(agent.wait(10), 0, agent.stderr())

    def test_a_key_refused_once_is_not_sent_again(self):
        """The binding's key no longer opens its keyslot (changed behind the
        token's back). The first askpass gets it (the agent does not pay a
        PBKDF run for every answer); when cryptroot asks again, the agent
        checks the key, finds it wrong and leaves the volume to the person
        at the console: it never uses up cryptroot's tries."""
        srv = self.server()
        img = self.image("stale.img")
        self.bind(img, srv)
        old = tether("luks", "pass", "-d", img, "-s", "1").stdout
        self.write(self.path("old"), "")
        with open(self.path("old"), "wb") as f:
            f.write(old)
        self.write(self.path("new"), "not what the binding holds")
        run("cryptsetup", "luksChangeKey", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-slot", "1",
            "--key-file", self.path("old"), img, self.path("new"), check=True)
        self.write(self.crypttab, f"stale {img} none luks\n")
        # It stays after an answer for this long, to see a re-ask.
        agent = self.agent(linger=5)
        first = self.askpass("stale", img).key(timeout=10)
        self.assertEqual(first, old, agent.stderr())
        self.assertFalse(opens_with_key_file(img, first))
        again = self.askpass("stale", img)
        self.assertTrue(tlib.eventually(lambda: "leaving it to the passphrase prompt" in agent.stderr(), timeout=10),
                        agent.stderr())
        self.assertIsNone(again.key(timeout=1))
        again.type(self.fifo, PASSPHRASE)
        self.assertEqual(again.key(timeout=5), PASSPHRASE)
        self.assertEqual(agent.wait(10), 0, agent.stderr())

    def test_no_polling_while_an_askpass_waits_for_its_key(self):
        """The FIFO's reader is found only on a later look (here: a process
        without CRYPTTAB_NAME opened it, then handed its descriptor to the
        askpass, which no inotify event shows, while the agent looked again
        after another file's event; at boot: the askpass's fd not
        yet in /proc at IN_OPEN). Its server is down: while it waits, the
        agent sleeps until an event or a key, instead of scanning /proc on
        the short pauses (every 10-80 ms) for as long as the server stays
        down."""
        srv = self.server()
        img = self.image("late.img")
        self.bind(img, srv)
        srv.stop()
        self.write(self.crypttab, f"late {img} none luks\n")
        holder = subprocess.Popen([sys.executable, "-c", HANDOVER, self.fifo, FAKE_ASKPASS_FD],
                                  env=dict(os.environ, LATER_CRYPTTAB_NAME="late", LATER_CRYPTTAB_SOURCE=img),
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.addCleanup(holder.kill)
        self.assertEqual(holder.stdout.readline(), b"reading\n")
        agent = self.agent(retry_max=30)
        deadline = time.monotonic() + 10
        while "has no CRYPTTAB_NAME" not in agent.stderr() and time.monotonic() < deadline:
            time.sleep(0.002)
        self.assertIn("has no CRYPTTAB_NAME", agent.stderr())
        # Any event in the directory (cryptroot reads its scripts there) starts the short pauses.
        open(self.path("lib", "cryptsetup", "functions"), "w").close()
        holder.stdin.write(b"go\n")
        holder.stdin.flush()
        line = holder.stdout.readline().split()
        self.assertEqual(line[:2], [b"handed", b"over"])
        self.addCleanup(kill_quietly, int(line[2]))  # it would read on after the agent ends
        # Past the short pauses' 2.5 s, then the main thread's wake-ups.
        time.sleep(3)
        before = voluntary_switches(agent.proc.pid)
        time.sleep(2)
        woke = voluntary_switches(agent.proc.pid) - before
        self.assertLess(woke, 5, f"the agent woke {woke} times in 2 s while nothing happened:\n{agent.stderr()}")
        self.assertIsNone(agent.proc.poll(), agent.stderr())

    def test_nothing_bound_the_agent_ends_by_itself(self):
        """Every listed volume unbound and nothing asking: nothing to do, so
        the agent ends at once rather than sit in the initramfs."""
        img = self.image("plain.img")
        self.write(self.crypttab, f"plain {img} none luks\n")
        agent = self.agent(linger=60)
        self.assertEqual(agent.wait(10), 0, agent.stderr())
        self.assertIn("no tether/clevis binding", agent.stderr())

    def test_options(self):
        r = run(ASKPASS, "--fifo", self.fifo)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(b"go with --cryptroot", r.stderr)
        r = run(ASKPASS, "--cryptroot", "--fifo", "/")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"not a path to a file", r.stderr)


# Set in the copy of this file that runs in a network namespace of its own.
NETNS_ENV = "TETHER_TEST_PASSFIFO_IN_NETNS"


class NetworkChange(Case):
    """A volume whose server was down is tried again as soon as the network
    changes, not at the end of its backoff. Checked in a private network
    namespace (this file runs itself again under `unshare --net`), where
    changing the loopback link's MTU is a network change nothing outside
    sees."""

    def test_retries_at_once_when_the_network_changes(self):
        if os.environ.get(NETNS_ENV):
            return self.inside()
        for tool in ("unshare", "ip"):
            if not shutil.which(tool):
                self.skipTest(f"{tool} is not installed")
        proc = subprocess.run(["unshare", "--net", sys.executable, os.path.abspath(__file__),
                               "NetworkChange.test_retries_at_once_when_the_network_changes"],
                              env=dict(os.environ, **{NETNS_ENV: "1"}), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=120)
        out = proc.stdout.decode(errors="replace")
        if proc.returncode == 77 or "unshare failed" in out:
            self.skipTest(out.strip().splitlines()[-1] if out.strip() else "no network namespace here")
        self.assertEqual(proc.returncode, 0, out)

    def inside(self):
        srv = self.server()
        img = self.image("late.img")
        self.bind(img, srv)
        port, keydir = srv.port, srv.keydir
        srv.stop()
        self.write(self.crypttab, f"late {img} none luks\n")
        agent = self.agent(retry_max=30)
        asker = self.askpass("late", img)
        # Tries at 0, 0.5, 1.5, 3.5 s; the next would be at 7.5 s.
        self.assertIsNone(asker.key(timeout=4.2))
        self.server(keydir=keydir, port=port)
        changed = time.monotonic()
        run("ip", "link", "set", "lo", "mtu", "65000", check=True)
        key = asker.key(timeout=3)
        self.assertIsNotNone(key, f"no key after the network changed:\n{agent.stderr()}")
        self.assertLess(time.monotonic() - changed, 1.5)
        self.assertTrue(opens_with_key_file(img, key))


if __name__ == "__main__":
    if os.environ.get(NETNS_ENV) and run("ip", "link", "set", "lo", "up").returncode != 0:
        print("cannot bring up loopback in the new network namespace")
        sys.exit(77)
    tlib.main()
