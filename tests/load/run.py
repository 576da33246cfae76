#!/usr/bin/env python3
"""Load and abuse tests of tetherd, on loopback, bounded in count and time.

    tests/load/run.py BUILD_DIR [--quick] [--only NAME ...]

Each scenario gets its own tetherd (tlib.Tetherd: 127.0.0.1, free port, fresh
key directory, -q) and fails on any broken requirement of the issue:

  keepalive  1,000 keep-alive connections for 60 s: two wrk at once, 500 on
             GET /adv and 500 on POST /rec/KID (tests/bench/rec.lua); zero
             socket errors, zero non-2xx; requests, req/s, p50/p99/max.
  slowloris  500 slow connections (silent, half a request, one header byte
             every 3 s) held for 20 s, reopened when the server drops them,
             while a normal client asks every 75 ms (new connection and
             keep-alive, /adv and /rec): every answer right and within 100 ms.
             Then the server must still answer once they are closed.
  churn      tether-load churn: the key directory rotates every 100 ms for
             20 s while clients bind and recover through the client library
             and raw /adv answers are verified: no failure, no 500, no torn
             advertisement. Rotated keys pile up (400 files at the end).
  churn-prune  the same for 10 s, deleting rotated keys once no client can
             need them (deletions are churn too; ~26 files).
  reboot     tether-load reboot: 2,000 clients released at once, each doing
             adv + rec through the client library: completion time, p50/p99,
             server CPU seconds and peak RSS; no failure.
  per-address  1,100 slow connections from 127.0.0.1, reopened as the server
             drops them, against --connection-limit 1000 and the default
             per-address limit (128): a client on 127.0.0.2 asking every 75 ms
             gets every answer, right (without the limit, 127.0.0.1 takes
             every connection and the other client gets none).
  deadline   200 slowloris connections from 127.0.0.1-4, each sending one
             header byte a second (which resets any idle timeout): every one
             is cut at the default request deadline (10 s), none later than
             15 s, while a normal client is served throughout.

The scenarios before per-address run all their clients from 127.0.0.1, as
stand-ins for a whole fleet: their tetherd gets --per-address-limit 10000.

Prints a summary table, writes BUILD_DIR/reliability/load.md (the README's
"Reliability" fragment) and exits 1 if any requirement failed, 2 if the run
could not be set up. --quick shortens every duration (for development; the
fragment says so). Everything started here is stopped by its pid.
"""

import argparse
import datetime
import json
import os
import re
import select
import shutil
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
WRK_TIMEOUT_S = 10          # what the client library waits by default (TC_DEFAULT_TIMEOUT_MS)
PROBE_LIMIT_MS = 100        # the bound for the normal client among slow ones

tlib = idle_conns = None    # tests/lib/tlib.py, tests/bench/idle_conns.py: imported by configure()


class SetupError(Exception):
    """The run could not be set up: not a verdict on tetherd."""


# ----------------------------------------------------------------- environment


def configure(build):
    """Points tlib at BUILD's binaries, then imports the shared helpers."""
    build = os.path.abspath(build)
    tools = {
        "TETHERD": os.path.join(build, "programs", "tetherd"),
        "TETHER_KEYS": os.path.join(build, "programs", "tether-keys"),
        "TETHER_LOAD": os.path.join(build, "tests", "load", "tether-load"),
    }
    for var, path in tools.items():
        os.environ.setdefault(var, path)
        if not os.access(os.environ[var], os.X_OK):
            raise SetupError(f"{os.environ[var]} not found (build first: ninja -C {build})")
    # Load figures under valgrind would measure valgrind.
    os.environ.pop("TETHERD_VALGRIND", None)
    # meson fills every allocation when MALLOC_PERTURB_ is set: not how tetherd runs.
    os.environ.pop("MALLOC_PERTURB_", None)
    sys.path.insert(0, os.path.join(HERE, "..", "lib"))
    sys.path.insert(0, os.path.join(HERE, "..", "bench"))
    global tlib, idle_conns
    import tlib
    import idle_conns
    # Every scenario opens hundreds of sockets in this process or its children.
    idle_conns.raise_nofile(4096)
    if not shutil.which("wrk"):
        raise SetupError("wrk not found (apt-get install wrk)")
    return build


def start_server(*args, fleet=True):
    """A tetherd of our own, quiet (-q): its log holds only what goes wrong.
    fleet: its clients, all on 127.0.0.1, stand for many machines, so the
    per-address limit is lifted."""
    return tlib.Tetherd(args=("-q", *(("--per-address-limit", "10000") if fleet else ()), *args))


def server_log_notes(srv):
    """Lines tetherd -q logged besides its start-up and reloads."""
    routine = re.compile(r"^(key directory .*: loaded |tetherd: serving )")
    lines = [l for l in srv.logs().splitlines() if l and not routine.match(l)]
    return lines


def established(port):
    """TCP connections to port on this machine, counted at the server's end
    (local port = port) in state ESTABLISHED: what tetherd holds or is about
    to accept. Closed ones (TIME_WAIT, FIN_WAIT) are not counted."""
    n = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        n += 1
        except FileNotFoundError:
            pass
    return n


# ----------------------------------------------------------------- /rec bodies


class RecFixture:
    """A client point X for POST /rec/KID and the answer tetherd must give,
    computed here with the server's private key (tlib's P-521 arithmetic)."""

    def __init__(self, keydir):
        exc = tlib.key_of(keydir, "exc")
        self.kid = tlib.thumbprint(exc)
        x, y = tlib.random_point()
        self.body = json.dumps(tlib.ecmr_jwk(x, y)).encode()
        yx, yy = tlib.mul(tlib.b64u_to_int(exc["d"]), (x, y))
        self.answer = (tlib.int_to_b64u(yx), tlib.int_to_b64u(yy))

    def check(self, body):
        try:
            jwk = json.loads(body)
        except ValueError:
            return False
        return (jwk.get("x"), jwk.get("y")) == self.answer


# ----------------------------------------------------------------- scenario results


class Result:
    def __init__(self, name, title):
        self.name, self.title = name, title
        self.figures = []       # short "figure" strings for the table
        self.problems = []      # broken requirements
        self.notes = []         # worth reading, not failures

    @property
    def passed(self):
        return not self.problems

    def require(self, ok, problem):
        if not ok:
            self.problems.append(problem)


def parse_kv(text):
    return {k: v for k, v in re.findall(r"^([A-Z0-9_]+)=(\S+)$", text, re.M)}


def fmt_int(n):
    return f"{int(n):,}"


# ----------------------------------------------------------------- keepalive: wrk


def wrk_ms(text):
    """'12.34ms' / '850.00us' / '1.20s' / '2.00m' in milliseconds."""
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000, "m": 60000}[m.group(2)]


def parse_wrk(out):
    """Requests, req/s, latency p50/p99/max (ms), socket errors and non-2xx of one wrk run."""
    r = {}
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+)", out, re.M)
    r["requests"] = int(m.group(1)) if m else 0
    m = re.search(r"^Requests/sec:\s*([\d.]+)", out, re.M)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    r["max_ms"] = wrk_ms(m.group(3)) if m else None
    for pct in ("50", "99"):
        m = re.search(rf"^\s*{pct}%\s+(\S+)", out, re.M)
        r[f"p{pct}_ms"] = wrk_ms(m.group(1)) if m else None
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["socket_errors"] = sum(int(g) for g in m.groups()) if m else 0
    r["socket_errors_text"] = m.group(0) if m else "none"
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    return r


def scenario_keepalive(seconds, per_endpoint=500):
    res = Result("keepalive", f"{2 * per_endpoint:,} keep-alive connections, {seconds} s (500 /adv + 500 /rec)")
    with start_server() as srv:
        rec = RecFixture(srv.keydir)
        first = srv.post(f"/rec/{rec.kid}", rec.body)
        if first.status != 200 or not rec.check(first.body):
            raise SetupError(f"POST /rec/{rec.kid} before the load: {first.status} {first.body[:200]!r}")
        body_path = os.path.join(srv.tmp.name, "rec-body.jwk")
        with open(body_path, "wb") as f:
            f.write(rec.body)
        url = f"http://127.0.0.1:{srv.port}"
        env = dict(os.environ, BENCH_REC_BODY=body_path)
        common = ["wrk", "-t1", f"-c{per_endpoint}", f"-d{seconds}s", "--timeout", f"{WRK_TIMEOUT_S}s", "--latency"]
        runs = {
            "adv": common + [f"{url}/adv"],
            "rec": common + ["-s", os.path.join(HERE, "..", "bench", "rec.lua"), f"{url}/rec/{rec.kid}"],
        }
        procs = {k: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
                 for k, cmd in runs.items()}
        held = []
        try:
            deadline = time.monotonic() + seconds + 60
            while any(p.poll() is None for p in procs.values()):
                if time.monotonic() > deadline:
                    raise SetupError("wrk did not finish in time")
                if srv.proc.poll() is not None:
                    break
                held.append(established(srv.port))
                time.sleep(1)
            outs = {k: p.communicate(timeout=30)[0] for k, p in procs.items()}
        finally:
            for p in procs.values():
                if p.poll() is None:
                    p.kill()
                    p.wait()
        alive = srv.proc.poll() is None
        after = srv.get("/adv") if alive else None
        res.notes += server_log_notes(srv)

    res.require(alive, "tetherd died under the load")
    res.require(after is not None and after.status == 200, "tetherd does not answer /adv after the load")
    stats = {}
    for k, p in procs.items():
        out = outs[k]
        if p.returncode != 0 or "Requests/sec" not in out:
            raise SetupError(f"wrk {k} failed (exit {p.returncode}): {out[-500:]}")
        s = stats[k] = parse_wrk(out)
        res.require(s["socket_errors"] == 0, f"/{k}: socket errors ({s['socket_errors_text']})")
        res.require(s["non2xx"] == 0, f"/{k}: {s['non2xx']} non-2xx answers")
        res.require(s["requests"] > 0, f"/{k}: no request completed")
    peak = max(held) if held else 0
    # The point of the scenario: that many connections at once, all the time.
    res.require(peak >= 2 * per_endpoint, f"tetherd held at most {peak} connections, not {2 * per_endpoint}")
    total = sum(s["requests"] for s in stats.values())
    res.figures.append(f"{peak:,} connections held")
    res.figures.append(f"{fmt_int(total)} requests, {sum(s['rps'] for s in stats.values()):,.0f} req/s")
    for k in ("adv", "rec"):
        s = stats[k]
        res.figures.append(f"/{k} {s['rps']:,.0f} req/s, p50 {s['p50_ms']:.1f} ms, p99 {s['p99_ms']:.1f} ms, "
                           f"max {s['max_ms']:.1f} ms")
    errs = sum(s["socket_errors"] for s in stats.values())
    non2xx = sum(s["non2xx"] for s in stats.values())
    res.figures.append(f"{errs} socket errors, {non2xx} non-2xx")
    return res


# ----------------------------------------------------------------- slowloris


class SlowConnections:
    """Slow clients: silent, half a request then silent, or one header byte
    every TRICKLE_S seconds. One the server drops is reopened, as an
    attacker would."""

    TRICKLE_S = 3.0
    PARTIAL = b"GET /adv HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    TRICKLE_START = b"GET /adv HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "

    def __init__(self, port, kinds):
        self.port = port
        self.socks = {}        # fd -> [socket, kind, next trickle time]
        self.dropped = 0       # closed by the server
        self.answered = 0      # got an answer (a slow request must not be answered)
        self.poller = select.poll()
        for kind, n in kinds.items():
            for _ in range(n):
                self.open(kind)

    def open(self, kind):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        if kind == "partial":
            s.sendall(self.PARTIAL)
        elif kind == "trickle":
            s.sendall(self.TRICKLE_START)
        s.setblocking(False)
        self.socks[s.fileno()] = [s, kind, time.monotonic() + self.TRICKLE_S]
        self.poller.register(s.fileno(), select.POLLIN)

    def service(self):
        """Reopens what the server dropped, feeds the trickling ones."""
        for fd, _ in self.poller.poll(0):
            s, kind, _ = self.socks.pop(fd)
            self.poller.unregister(fd)
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if data:
                self.answered += 1
            else:
                self.dropped += 1
            s.close()
            self.open(kind)
        now = time.monotonic()
        for entry in self.socks.values():
            s, kind, due = entry
            if kind == "trickle" and now >= due:
                try:
                    s.send(b"a")
                except OSError:
                    pass    # dropped: poll() reports it next time
                entry[2] = now + self.TRICKLE_S

    def __len__(self):
        return len(self.socks)

    def close(self):
        for s, _, _ in self.socks.values():
            s.close()
        self.socks.clear()


def read_response(sock, deadline):
    """One HTTP response from sock (blocking until deadline): tlib.Response or None."""
    data = b""
    while not tlib._complete(data):
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except (socket.timeout, OSError):
            return None
        if not chunk:
            return None
        data += chunk
    return tlib.Response(data)


class Prober:
    """The normal client: GET /adv and POST /rec, each on a new connection
    and on one kept alive, in turn; times each from before connect (or
    send) to the last byte of the answer."""

    def __init__(self, port, rec, adv_bytes, source="127.0.0.1"):
        self.port, self.rec, self.adv_bytes = port, rec, adv_bytes
        self.source = (source, 0)
        self.keepalive = None
        self.latencies = []
        self.wrong = []
        self.turn = 0

    def request_bytes(self, kind, keepalive):
        conn = "keep-alive" if keepalive else "close"
        if kind == "adv":
            return f"GET /adv HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {conn}\r\n\r\n".encode()
        return (f"POST /rec/{self.rec.kid} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: {conn}\r\n"
                f"Content-Type: application/jwk+json\r\nContent-Length: {len(self.rec.body)}\r\n\r\n").encode() + \
            self.rec.body

    def right(self, kind, resp):
        if resp is None or resp.status != 200:
            return False
        return resp.body == self.adv_bytes if kind == "adv" else self.rec.check(resp.body)

    def probe(self):
        kind = ("adv", "rec")[self.turn % 2]
        keepalive = (self.turn // 2) % 2 == 1
        self.turn += 1
        start = time.monotonic()
        deadline = start + WRK_TIMEOUT_S
        try:
            if keepalive:
                if self.keepalive is None:
                    self.keepalive = socket.create_connection(("127.0.0.1", self.port), timeout=WRK_TIMEOUT_S,
                                                              source_address=self.source)
                sock = self.keepalive
            else:
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=WRK_TIMEOUT_S,
                                                source_address=self.source)
            sock.sendall(self.request_bytes(kind, keepalive))
            resp = read_response(sock, deadline)
        except OSError as e:
            resp, sock = None, None
            self.wrong.append(f"{kind} ({'keep-alive' if keepalive else 'new connection'}): {e}")
        ms = (time.monotonic() - start) * 1000
        if sock is not None and not keepalive:
            sock.close()
        if keepalive and (resp is None or resp.headers.get("connection", "").lower() == "close"):
            if self.keepalive is not None:
                self.keepalive.close()
            self.keepalive = None
        self.latencies.append(ms)
        if sock is not None and not self.right(kind, resp):
            status = resp.status if resp else "no answer"
            self.wrong.append(f"{kind} ({'keep-alive' if keepalive else 'new connection'}): {status}")
        return ms

    def close(self):
        if self.keepalive is not None:
            self.keepalive.close()


def percentile(values, p):
    if not values:
        return 0.0
    v = sorted(values)
    rank = max(1, min(len(v), int(-(-p * len(v) // 100))))
    return v[rank - 1]


def scenario_slowloris(seconds, kinds=None, interval=0.075):
    kinds = kinds or {"silent": 200, "partial": 100, "trickle": 200}
    total = sum(kinds.values())
    res = Result("slowloris", f"{total} slow connections ({kinds['silent']} silent, {kinds['partial']} half a request, "
                              f"{kinds['trickle']} a header byte every {SlowConnections.TRICKLE_S:.0f} s) for {seconds} s, "
                              f"a normal client asking every {int(interval * 1000)} ms")
    with start_server() as srv:
        rec = RecFixture(srv.keydir)
        adv = srv.get("/adv")
        if adv.status != 200:
            raise SetupError(f"GET /adv before the load: {adv.status}")
        slow = SlowConnections(srv.port, kinds)
        prober = Prober(srv.port, rec, adv.body)
        held_client, held_server = [], []
        rss_kb = 0
        try:
            time.sleep(0.5)     # let the server accept them all before the first probe
            end = time.monotonic() + seconds
            next_probe = time.monotonic()
            while time.monotonic() < end and srv.proc.poll() is None:
                slow.service()
                held_client.append(len(slow))
                if time.monotonic() >= next_probe:
                    prober.probe()
                    next_probe += interval
                    if len(prober.latencies) % 13 == 0:
                        held_server.append(established(srv.port))
                        rss_kb = max(rss_kb, idle_conns.status_kb(srv.proc.pid, "VmRSS"))
                time.sleep(min(0.005, max(0.0, next_probe - time.monotonic())))
        finally:
            slow.close()
            prober.close()
        alive = srv.proc.poll() is None
        # Once they are gone: the server lets go of them and still answers.
        released = alive and tlib.eventually(lambda: established(srv.port) == 0, timeout=5)
        after = Prober(srv.port, rec, adv.body)
        if alive:
            for _ in range(4):
                after.probe()
        after.close()
        res.notes += server_log_notes(srv)

    lat = prober.latencies
    res.require(alive, "tetherd died holding the slow connections")
    res.require(not prober.wrong, f"{len(prober.wrong)} wrong or missing answers, e.g. {prober.wrong[:3]}")
    slow_ones = [ms for ms in lat if ms > PROBE_LIMIT_MS]
    res.require(not slow_ones, f"{len(slow_ones)} of {len(lat)} answers took over {PROBE_LIMIT_MS} ms "
                               f"(max {max(lat):.1f} ms)" if lat else "no answer")
    res.require(slow.answered == 0, f"{slow.answered} unfinished requests got an answer")
    res.require(released, "tetherd still holds connections after the slow clients closed them")
    res.require(alive and not after.wrong, f"no right answer once the slow clients were gone: {after.wrong[:2]}")
    res.require(len(lat) > 0, "no probe was made")
    res.figures.append(f"{min(held_client, default=0)} held throughout (at tetherd's end "
                       f"{min(held_server, default=0)}-{max(held_server, default=0)} with the normal client's); "
                       f"{slow.dropped} idle ones dropped by its timeout and reopened")
    res.figures.append(f"{len(lat)} probes: p50 {percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms, "
                       f"max {max(lat, default=0):.1f} ms (limit {PROBE_LIMIT_MS} ms)")
    res.figures.append(f"tetherd RSS {rss_kb / 1024:.1f} MB")
    res.figures.append("answers after they closed" if alive and not after.wrong else "NO answer after they closed")
    return res


# ----------------------------------------------------------------- churn and reboot: tether-load


def run_driver(args, timeout):
    cmd = [os.environ["TETHER_LOAD"], *args]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise SetupError(f"{' '.join(cmd)} did not finish within {timeout} s")
    if p.returncode == 2:
        raise SetupError(f"{' '.join(cmd)}: {p.stderr.strip()[-800:]}")
    return p.returncode, parse_kv(p.stdout), p.stderr.strip()


def scenario_churn(seconds, keep_hidden, clients=8, rotate_ms=100):
    fate = "kept (the directory grows)" if keep_hidden else "deleted once no client needs them"
    res = Result("churn", f"key rotation every {rotate_ms} ms for {seconds} s, rotated keys {fate}; "
                          f"{clients} clients + 2 /adv checkers")
    with start_server() as srv:
        url = f"http://127.0.0.1:{srv.port}"
        rc, kv, err = run_driver(["churn", "--url", url, "--keydir", srv.keydir, "--seconds", str(seconds),
                                  "--clients", str(clients), "--rotate-ms", str(rotate_ms),
                                  *(["--keep-hidden"] if keep_hidden else [])], timeout=seconds + 120)
        alive = srv.proc.poll() is None
        notes = server_log_notes(srv)
    # Reading a file deleted between readdir and open is routine here (the
    # driver deletes hidden keys); tetherd throws such a load away and reloads.
    skipped = [l for l in notes if "cannot be opened, skipped" in l]
    res.notes += [l for l in notes if l not in skipped]
    if skipped:
        res.notes.append(f"{len(skipped)} log line(s) about a key file renamed or deleted while tetherd read the directory (expected: that load is redone)")
    if err:
        res.notes += err.splitlines()
    g = lambda k: int(kv.get(k, "0"))
    res.require(alive, "tetherd died under churn")
    res.require(rc == 0 and g("FAILURES") == 0, f"{g('FAILURES')} failed exchanges (tether-load exit {rc})")
    res.require(g("HTTP_500") == 0, f"{g('HTTP_500')} answers were 500")
    res.require(g("ADVS_TORN") == 0, f"{g('ADVS_TORN')} advertisements did not verify")
    # Guards against a run that checked nothing.
    res.require(g("ROTATIONS") > 0 and g("BINDS") > 0 and g("ADVS_VERIFIED") > 0, "nothing was exercised")
    res.require(g("OLD_RECOVERS_ROTATED") > 0, "no binding to a rotated (hidden) key was recovered")
    res.figures.append(f"{g('ROTATIONS')} rotations; up to {g('MAX_KEY_FILES')} key files"
                       + (f" ({g('HIDDEN_DELETED')} hidden keys deleted)" if not keep_hidden else ""))
    res.figures.append(f"{fmt_int(g('BINDS'))} binds, {fmt_int(g('RECOVERS') + g('OLD_RECOVERS'))} recoveries "
                       f"({fmt_int(g('OLD_RECOVERS_ROTATED'))} by a rotated key), "
                       f"{fmt_int(g('ADVS_VERIFIED'))} raw /adv verified")
    res.figures.append(f"/rec through the library p50 {kv.get('RECOVER_P50_MS')} ms, p99 {kv.get('RECOVER_P99_MS')} ms, "
                       f"max {kv.get('RECOVER_MAX_MS')} ms")
    res.figures.append(f"{g('FAILURES')} failures, {g('HTTP_500')} 500s, {g('ADVS_TORN')} torn")
    return res


def scenario_reboot(clients):
    res = Result("reboot", f"mass reboot: {clients:,} clients at once, adv + rec each")
    with start_server() as srv:
        url = f"http://127.0.0.1:{srv.port}"
        rc, kv, err = run_driver(["reboot", "--url", url, "--server-pid", str(srv.proc.pid),
                                  "--clients", str(clients)], timeout=300)
        alive = srv.proc.poll() is None
        res.notes += server_log_notes(srv)
    if err:
        res.notes += err.splitlines()
    g = lambda k: int(kv.get(k, "0"))
    res.require(alive, "tetherd died in the mass reboot")
    res.require(rc == 0 and g("FAILURES") == 0 and g("OK") == clients,
                f"{g('FAILURES')} of {clients} clients failed, {g('OK')} succeeded (tether-load exit {rc})")
    res.figures.append(f"{g('OK'):,} of {clients:,} done, the last after {float(kv.get('COMPLETION_MS', 0)) / 1000:.2f} s")
    res.figures.append(f"per client p50 {float(kv.get('P50_MS', 0)) / 1000:.2f} s, p99 {float(kv.get('P99_MS', 0)) / 1000:.2f} s")
    res.figures.append(f"tetherd CPU {kv.get('SERVER_CPU_S')} s (the clients' own: {kv.get('CLIENTS_CPU_S')} s, "
                       f"same cores), peak RSS {g('SERVER_HWM_KB') / 1024:.1f} MB")
    res.figures.append(f"{g('FAILURES')} failures")
    return res


# ----------------------------------------------------------------- per-address and deadline


class Hog:
    """Slow connections (half a request each) from one address, topped up
    to n every 0.25 s as the server closes them: one client trying to hold
    every connection."""

    def __init__(self, port, n, source="127.0.0.1"):
        self.port, self.n, self.source = port, n, (source, 0)
        self.socks = []
        self.attempts = 0
        self.next_top_up = 0.0

    def service(self):
        if time.monotonic() < self.next_top_up:
            return
        self.next_top_up = time.monotonic() + 0.25
        alive = []
        for s in self.socks:
            try:
                gone = s.recv(4096) == b""
            except BlockingIOError:
                gone = False
            except OSError:
                gone = True
            if gone:
                s.close()
            else:
                alive.append(s)
        self.socks = alive
        for _ in range(min(200, self.n - len(self.socks))):    # bounded: 800 attempts a second at most
            self.attempts += 1
            try:
                s = socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=self.source)
                s.sendall(b"GET /adv HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            except OSError:
                break
            s.setblocking(False)
            self.socks.append(s)

    def close(self):
        for s in self.socks:
            s.close()
        self.socks = []


def probe_loop(srv, prober, seconds, interval, background, rss=None):
    """Probes every interval for seconds, calling background() in between."""
    end = time.monotonic() + seconds
    next_probe = time.monotonic()
    held = []
    while time.monotonic() < end and srv.proc.poll() is None:
        background()
        if time.monotonic() >= next_probe:
            prober.probe()
            next_probe += interval
            if len(prober.latencies) % 13 == 0:
                held.append(established(srv.port))
        time.sleep(min(0.005, max(0.0, next_probe - time.monotonic())))
    return held


def scenario_per_address(seconds, hog=1100, conn_limit=1000, interval=0.075):
    res = Result("per-address", f"{hog:,} slow connections from 127.0.0.1 (reopened when dropped) for {seconds} s, "
                                f"--connection-limit {conn_limit}, default per-address limit; a client on "
                                f"127.0.0.2 asking every {int(interval * 1000)} ms")
    with start_server("--connection-limit", str(conn_limit), fleet=False) as srv:
        rec = RecFixture(srv.keydir)
        adv = srv.get("/adv")
        if adv.status != 200:
            raise SetupError(f"GET /adv before the load: {adv.status}")
        hogger = Hog(srv.port, hog)
        prober = Prober(srv.port, rec, adv.body, source="127.0.0.2")
        try:
            hogger.service()
            time.sleep(0.5)
            held = probe_loop(srv, prober, seconds, interval, hogger.service)
        finally:
            hogger.close()
            prober.close()
        alive = srv.proc.poll() is None
        notes = server_log_notes(srv)
    refused = [l for l in notes if l.startswith("http: refused ")]
    res.notes += [l for l in notes if l not in refused]
    lat = prober.latencies
    res.require(alive, "tetherd died")
    res.require(lat and not prober.wrong, f"{len(prober.wrong)} of {len(lat)} answers to 127.0.0.2 wrong or missing, "
                                          f"e.g. {prober.wrong[:3]}")
    res.require(max(held, default=0) <= 128 + 2, f"tetherd held up to {max(held, default=0)} connections, "
                                                 f"more than 127.0.0.1's 128 and the prober's")
    res.figures.append(f"{hogger.attempts:,} connection attempts from 127.0.0.1, tetherd held "
                       f"{min(held, default=0)}-{max(held, default=0)} (limit 128 per address); "
                       f"{sum(int(l.split()[2]) for l in refused):,} refusals logged in {len(refused)} line(s)")
    res.figures.append(f"127.0.0.2: {len(lat)} probes, {len(prober.wrong)} wrong or missing; p50 "
                       f"{percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms, max {max(lat, default=0):.1f} ms")
    return res


def scenario_deadline(n=200, sources=4, interval=0.075, deadline_s=10, margin_s=5):
    res = Result("deadline", f"{n} slowloris connections from 127.0.0.1-{sources}, one header byte a second each, "
                             f"default --request-timeout ({deadline_s} s); a normal client asking every "
                             f"{int(interval * 1000)} ms")
    with start_server(fleet=False) as srv:
        rec = RecFixture(srv.keydir)
        adv = srv.get("/adv")
        if adv.status != 200:
            raise SetupError(f"GET /adv before the load: {adv.status}")
        opened = {}     # socket -> monotonic time of connect
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=5,
                                         source_address=(f"127.0.0.{1 + i % sources}", 0))
            s.sendall(b"GET /adv HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            s.setblocking(False)
            opened[s] = time.monotonic()
        lifetimes = []
        next_byte = [time.monotonic() + 1]

        def trickle():
            now = time.monotonic()
            for s in list(opened):
                try:
                    gone = s.recv(4096) == b""   # a slow request must never be answered
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    lifetimes.append(now - opened.pop(s))
                    s.close()
            if now >= next_byte[0]:
                next_byte[0] = now + 1
                for s in opened:
                    try:
                        s.send(b"a")
                    except OSError:
                        pass

        prober = Prober(srv.port, rec, adv.body, source=f"127.0.0.{sources + 1}")
        try:
            probe_loop(srv, prober, deadline_s + margin_s, interval, trickle)
        finally:
            survivors = len(opened)
            for s in opened:
                s.close()
            prober.close()
        alive = srv.proc.poll() is None
        notes = server_log_notes(srv)
    cuts = [l for l in notes if "whose request took over" in l]
    res.notes += [l for l in notes if l not in cuts]
    lat = prober.latencies
    res.require(alive, "tetherd died")
    res.require(survivors == 0, f"{survivors} of {n} trickling connections outlived {deadline_s + margin_s} s")
    early = [t for t in lifetimes if t < deadline_s - 1]
    res.require(not early, f"{len(early)} connections cut before the deadline (first after {min(early, default=0):.1f} s)")
    res.require(lat and not prober.wrong, f"{len(prober.wrong)} of {len(lat)} normal answers wrong or missing, "
                                          f"e.g. {prober.wrong[:3]}")
    res.figures.append(f"{len(lifetimes)} of {n} cut after p50 {percentile(lifetimes, 50):.1f} s, "
                       f"max {max(lifetimes, default=0):.1f} s (deadline {deadline_s} s); {survivors} left")
    res.figures.append(f"normal client: {len(lat)} probes, {len(prober.wrong)} wrong or missing; p50 "
                       f"{percentile(lat, 50):.1f} ms, p99 {percentile(lat, 99):.1f} ms, max {max(lat, default=0):.1f} ms")
    return res


# ----------------------------------------------------------------- report


def print_summary(results):
    print()
    print("=" * 30, "tetherd load and abuse", "=" * 30)
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL'}  {r.title}")
        for f in r.figures:
            print(f"        {f}")
        for p in r.problems:
            print(f"        FAILED: {p}")
        for n in r.notes[:10]:
            print(f"        note: {n}")
        if len(r.notes) > 10:
            print(f"        note: ... {len(r.notes) - 10} more")
    print("=" * 84)


def write_fragment(build, results, quick, only):
    lines = ["### Load", "", "| scenario | figures | verdict |", "|---|---|---|"]
    for r in results:
        verdict = "pass" if r.passed else "FAIL: " + "; ".join(r.problems)
        cells = (r.title, "; ".join(r.figures), verdict)
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    repo = os.path.dirname(os.path.dirname(HERE))
    shown = os.path.relpath(build, repo) if build.startswith(repo + os.sep) else build
    cmd = " ".join(["tests/load/run.py", shown, *(["--quick"] if quick else []),
                    *(f"--only {n}" for n in (only or []))])
    lines += ["", f"Measured {when} on {os.cpu_count()} cores, loopback, with `{cmd}`"
                  f"{' (shortened durations)' if quick else ''}; client and server share the cores."]
    out_dir = os.path.join(build, "reliability")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "load.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("build")
    ap.add_argument("--quick", action="store_true", help="shorter runs, for development")
    ap.add_argument("--only", action="append", choices=("keepalive", "slowloris", "churn", "churn-prune", "reboot",
                                                     "per-address", "deadline"),
                    help="run only this scenario (repeatable)")
    a = ap.parse_args()
    try:
        build = configure(a.build)
    except SetupError as e:
        print(f"load: SETUP FAILED: {e}", file=sys.stderr)
        return 2

    scenarios = {
        "keepalive": lambda: scenario_keepalive(10 if a.quick else 60),
        "slowloris": lambda: scenario_slowloris(8 if a.quick else 20),
        "churn": lambda: scenario_churn(8 if a.quick else 20, keep_hidden=True),
        "churn-prune": lambda: scenario_churn(5 if a.quick else 10, keep_hidden=False),
        "reboot": lambda: scenario_reboot(2000),
        "per-address": lambda: scenario_per_address(5 if a.quick else 10),
        "deadline": lambda: scenario_deadline(),
    }
    results = []
    for name, run in scenarios.items():
        if a.only and name not in a.only:
            continue
        print(f"load: {name} ...", flush=True)
        started = time.monotonic()
        try:
            r = run()
        except SetupError as e:
            print(f"load: SETUP FAILED in {name}: {e}", file=sys.stderr)
            return 2
        print(f"load: {name}: {'pass' if r.passed else 'FAIL'} ({time.monotonic() - started:.0f} s)", flush=True)
        results.append(r)
    print_summary(results)
    path = write_fragment(build, results, a.quick, a.only)
    print(f"load: wrote {path}")
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
