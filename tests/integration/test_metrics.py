"""tetherd --metrics-address: the counters after known traffic, exactly; the
listener apart from the client port (and none without the option); the text
as `promtool check metrics` judges it; a real Prometheus (Debian's) scraping
it; the shipped Grafana dashboard naming only metrics the server exports.
Prometheus and promtool come with Debian's prometheus package (tests/run.sh
installs it); without them those tests skip, naming it."""

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
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DASHBOARD = os.path.join(HERE, "..", "..", "contrib", "grafana", "tether.json")
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# The traffic every test sends (see traffic()).
N_ADV, M_GOOD, K_BAD, U_UNKNOWN, S_SIGNING, H_HEALTH, O_OTHER = 3, 4, 2, 1, 1, 2, 1

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset of (label, value)): float} and {family: type}."""
    samples, types = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
            continue
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        samples[(m.group(1), labels)] = float(m.group(3))
    return samples, types


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def exported_names(text):
    """Every name a PromQL expression may use for what text exports: the
    families, and a histogram's _bucket, _sum and _count."""
    samples, types = parse(text)
    names = {name for name, _ in samples} | set(types)
    for family, kind in types.items():
        if kind == "histogram":
            names |= {family + "_bucket", family + "_sum", family + "_count"}
    return names


def listening_ports(pid):
    """The TCP ports process pid listens on (ss)."""
    out = subprocess.run(["ss", "-H", "-ltnp"], capture_output=True, text=True, check=True).stdout
    ports = set()
    for line in out.splitlines():
        if f"pid={pid}," in line:
            local = line.split()[3]
            ports.add(int(local.rsplit(":", 1)[1]))
    return ports


class Server:
    """A tetherd with a metrics listener, and the traffic to count."""

    def __init__(self, host="127.0.0.1", extra=()):
        self.mhost = host
        self.mport = tlib.free_port(host=host)
        addr = f"[{host}]:{self.mport}" if ":" in host else f"{host}:{self.mport}"
        self.srv = tlib.Tetherd(args=("--metrics-address", addr, *extra))
        self.exc = tlib.key_of(self.srv.keydir, "exc")
        self.sig = tlib.key_of(self.srv.keydir, "sig")

    def scrape_raw(self, target="/metrics", method="GET"):
        return tlib.request(self.mport, method, target, host=self.mhost)

    def scrape_settled(self, total):
        """The text once total client requests are counted: each is counted
        just after its answer is sent, so the last one may still be on its
        way when the client has read that answer."""
        deadline = time.monotonic() + 10
        while True:
            text = self.scrape()
            m, _ = parse(text)
            n = sum(v for (name, _), v in m.items() if name == "tether_http_requests_total")
            if n >= total or time.monotonic() > deadline:
                return text
            time.sleep(0.02)

    def scrape(self):
        r = self.scrape_raw()
        assert r.status == 200, f"GET /metrics: {r!r}\n{self.srv.logs()}"
        return r.body.decode()

    def traffic(self):
        """N /adv, M good /rec, K bad /rec (one bad JSON, one point off the
        curve), an unknown kid, a signing key's kid, /health, one 404."""
        srv, kid = self.srv, tlib.thumbprint(self.exc)
        for _ in range(N_ADV):
            assert srv.get("/adv").status == 200
        for _ in range(M_GOOD):
            x, y = tlib.random_point()
            assert srv.post("/rec/" + kid, tlib.ecmr_jwk(x, y)).status == 200
        assert srv.post("/rec/" + kid, "{not json").status == 400
        x, y = tlib.random_point()
        assert srv.post("/rec/" + kid, tlib.ecmr_jwk(x, y + 1)).status == 400
        x, y = tlib.random_point()
        assert srv.post("/rec/" + "A" * 43, tlib.ecmr_jwk(x, y)).status == 404
        assert srv.post("/rec/" + tlib.thumbprint(self.sig), tlib.ecmr_jwk(x, y)).status == 403
        for _ in range(H_HEALTH):
            assert srv.get("/health").status == 200
        assert srv.get("/nope").status == 404

    def close(self):
        self.srv.close()


class MetricsBase(tlib.unittest.TestCase):
    def server(self, **kw):
        s = Server(**kw)
        self.addCleanup(s.close)
        return s


class Counters(MetricsBase):
    def test_counts_after_known_traffic(self):
        s = self.server()
        # The wait for readiness asked /health once.
        s.traffic()
        text = s.scrape_settled(N_ADV + M_GOOD + K_BAD + U_UNKNOWN + S_SIGNING + H_HEALTH + 1 + O_OTHER)
        m, types = parse(text)
        kid_s256 = tlib.thumbprint(s.exc)

        self.assertEqual(value(m, "tether_up"), 1)
        req = "tether_http_requests_total"
        self.assertEqual(types[req], "counter")
        self.assertEqual(value(m, req, route="adv", code="200"), N_ADV)
        self.assertEqual(value(m, req, route="rec", code="200"), M_GOOD)
        self.assertEqual(value(m, req, route="rec", code="400"), K_BAD)
        self.assertEqual(value(m, req, route="rec", code="404"), U_UNKNOWN)
        self.assertEqual(value(m, req, route="rec", code="403"), S_SIGNING)
        self.assertEqual(value(m, req, route="health", code="200"), H_HEALTH + 1)
        self.assertEqual(value(m, req, route="other", code="404"), O_OTHER)
        self.assertEqual(sum(v for (n, _), v in m.items() if n == req),
                         N_ADV + M_GOOD + K_BAD + U_UNKNOWN + S_SIGNING + H_HEALTH + 1 + O_OTHER, text)

        rec = "tether_recoveries_total"
        want = {"recovered": M_GOOD, "allowed": 0, "revoked": 0, "held": 0, "not_exchange": S_SIGNING,
                "unknown_key": U_UNKNOWN, "bad_request": K_BAD, "unavailable": 0}
        for outcome, n in want.items():
            self.assertEqual(value(m, rec, outcome=outcome), n, outcome)
        for reason in ("revoked", "held", "unknown_key", "not_exchange", "bad_request"):
            self.assertEqual(value(m, "tether_recovery_refusals_total", reason=reason), want[reason], reason)

        # Per key: the exchange key's S256 thumbprint, and nothing for the
        # unknown kid or the other keys.
        per_key = {dict(l)["key"]: v for (n, l), v in m.items() if n == "tether_key_recoveries_total"}
        self.assertEqual(per_key, {kid_s256: M_GOOD})

        hist = "tether_http_request_duration_seconds"
        self.assertEqual(types[hist], "histogram")
        for route, n in (("adv", N_ADV), ("rec", M_GOOD + K_BAD + U_UNKNOWN + S_SIGNING)):
            self.assertEqual(value(m, hist + "_count", route=route), n, route)
            self.assertEqual(value(m, hist + "_bucket", route=route, le="+Inf"), n, route)
            self.assertIsNotNone(value(m, hist + "_bucket", route=route, le="0.0005"), route)
            self.assertIsNotNone(value(m, hist + "_bucket", route=route, le="5"), route)
            self.assertGreater(value(m, hist + "_sum", route=route), 0, route)
        self.assertIsNone(value(m, hist + "_count", route="health"))

        for role, state, n in (("signing", "advertised", 1), ("exchange", "advertised", 1),
                               ("signing", "rotated", 0), ("exchange", "rotated", 0)):
            self.assertEqual(value(m, "tether_keys", role=role, state=state), n, (role, state))
        self.assertEqual(value(m, "tether_health", state="ok"), 1)
        self.assertEqual(value(m, "tether_health", state="degraded"), 0)
        self.assertEqual(value(m, "tether_health", state="unavailable"), 0)

        version = tlib.run(tlib.TETHERD, "--version", check=True, text=True).stdout.split()[-1]
        self.assertEqual(value(m, "tether_build_info", version=version), 1)
        start = value(m, "tether_process_start_time_seconds")
        self.assertLess(abs(start - time.time()), 120)
        self.assertEqual(value(m, "tether_reloads_total"), 1)
        self.assertEqual(value(m, "tether_reload_failures_total"), 0)
        self.assertEqual(value(m, "tether_recoveries_by_key_state_total", state="advertised"), M_GOOD)
        self.assertEqual(value(m, "tether_recoveries_by_key_state_total", state="rotated"), 0)

    def test_recoveries_with_rotated_keys(self):
        """A client not rebound since the rotation recovers with the hidden
        key: counted as rotated, the figure to see go to zero."""
        s = self.server()
        old = tlib.thumbprint(s.exc)
        tlib.tether_keys("rotate", s.srv.keydir)
        x, y = tlib.random_point()
        self.assertTrue(tlib.eventually(lambda: parse(s.scrape())[0].get(
            ("tether_keys", frozenset({("role", "exchange"), ("state", "rotated")}))) == 1))
        for _ in range(3):
            self.assertEqual(s.srv.post("/rec/" + old, tlib.ecmr_jwk(x, y)).status, 200)
        new = tlib.thumbprint(tlib.key_of(s.srv.keydir, "exc"))
        self.assertEqual(s.srv.post("/rec/" + new, tlib.ecmr_jwk(x, y)).status, 200)
        self.assertTrue(tlib.eventually(lambda: value(parse(s.scrape())[0], "tether_recoveries_by_key_state_total",
                                                      state="advertised") == 1))
        m, _ = parse(s.scrape())
        self.assertEqual(value(m, "tether_recoveries_by_key_state_total", state="rotated"), 3)
        self.assertEqual(value(m, "tether_recoveries_by_key_state_total", state="advertised"), 1)

    def test_keys_rotated_and_reloads(self):
        s = self.server()
        tlib.tether_keys("rotate", s.srv.keydir)
        deadline = time.monotonic() + 10
        while True:
            m, _ = parse(s.scrape())
            if value(m, "tether_keys", role="exchange", state="rotated") == 1:
                break
            self.assertLess(time.monotonic(), deadline, f"the rotation was not seen: {m}\n{s.srv.logs()}")
            time.sleep(0.05)
        self.assertEqual(value(m, "tether_keys", role="exchange", state="advertised"), 1)
        self.assertEqual(value(m, "tether_keys", role="signing", state="rotated"), 1)
        loads = value(m, "tether_reloads_total")
        self.assertGreaterEqual(loads, 2)
        # A reload asked for loads once more.
        s.srv.signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while value(m, "tether_reloads_total") != loads + 1:
            self.assertLess(time.monotonic(), deadline, f"SIGHUP did not count a reload: {m}")
            time.sleep(0.05)
            m, _ = parse(s.scrape())
        self.assertEqual(value(m, "tether_reload_failures_total"), 0)

        # The directory gone: loads fail, the keys in memory are served.
        os.rename(s.srv.keydir, s.srv.keydir + ".moved")
        self.addCleanup(lambda: os.path.exists(s.srv.keydir + ".moved") and
                        os.rename(s.srv.keydir + ".moved", s.srv.keydir))
        deadline = time.monotonic() + 10
        while True:
            m, _ = parse(s.scrape())
            if value(m, "tether_reload_failures_total") >= 1 and value(m, "tether_health", state="degraded") == 1:
                break
            self.assertLess(time.monotonic(), deadline, f"no failed reload counted: {m}\n{s.srv.logs()}")
            time.sleep(0.05)
        self.assertEqual(value(m, "tether_health", state="ok"), 0)


class Hosts(MetricsBase):
    def test_host_routes_and_states(self):
        s = self.server()
        d = s.srv.keydir
        for name in ("web01", "web02", "db01"):
            tlib.tether_keys("host", "add", d, name)
        tlib.tether_keys("host", "revoke", d, "web02")
        tlib.tether_keys("host", "hold", d, "db01")
        tlib.tether_keys("host", "allow", d, "db01")
        hkid = tlib.thumbprint(tlib.key_of(os.path.join(d, "hosts", "web01"), "exc"))
        x, y = tlib.random_point()
        assert s.srv.get("/h/web01/adv").status == 200
        assert s.srv.post("/h/web01/rec/" + hkid, tlib.ecmr_jwk(x, y)).status == 200
        rkid = tlib.thumbprint(tlib.key_of(os.path.join(d, "hosts", "web02"), "exc"))
        assert s.srv.post("/h/web02/rec/" + rkid, tlib.ecmr_jwk(x, y)).status == 403
        dkid = tlib.thumbprint(tlib.key_of(os.path.join(d, "hosts", "db01"), "exc"))
        assert s.srv.post("/h/db01/rec/" + dkid, tlib.ecmr_jwk(x, y)).status == 200    # the allow
        assert s.srv.post("/h/db01/rec/" + dkid, tlib.ecmr_jwk(x, y)).status == 403    # held again
        deadline = time.monotonic() + 10
        while True:
            m, _ = parse(s.scrape())
            # Requests are counted after their answer is sent: a moment later.
            # Each on its worker thread: the 403 may be counted before
            # the 200 answered just before it, so wait for both.
            if value(m, "tether_host_allow_tokens") == 0 and \
                    value(m, "tether_http_requests_total", route="rec", code="403") == 2 and \
                    value(m, "tether_http_requests_total", route="rec", code="200") == 2:
                break
            self.assertLess(time.monotonic(), deadline, f"the spent token is still counted: {m}")
            time.sleep(0.05)
        req = "tether_http_requests_total"
        # The host routes count as adv and rec: one series per route, not per host.
        self.assertEqual(value(m, req, route="adv", code="200"), 1)
        self.assertEqual(value(m, req, route="rec", code="200"), 2)
        self.assertEqual(value(m, req, route="rec", code="403"), 2)
        for outcome, n in (("recovered", 1), ("allowed", 1), ("revoked", 1), ("held", 1)):
            self.assertEqual(value(m, "tether_recoveries_total", outcome=outcome), n, outcome)
        for state, n in (("active", 1), ("revoked", 1), ("held", 1)):
            self.assertEqual(value(m, "tether_hosts", state=state), n, state)
        self.assertEqual(value(m, "tether_host_keys", state="advertised"), 3)
        self.assertEqual(value(m, "tether_host_keys", state="rotated"), 0)
        tlib.tether_keys("host", "rotate", d, "web01")
        self.assertTrue(tlib.eventually(lambda: value(parse(s.scrape())[0], "tether_host_keys", state="rotated") == 1))
        self.assertEqual(value(parse(s.scrape())[0], "tether_host_keys", state="advertised"), 3)
        per_key = {dict(l)["key"]: v for (n, l), v in m.items() if n == "tether_key_recoveries_total"}
        self.assertEqual(per_key, {hkid: 1, dkid: 1})
        self.assertNotIn("web01", s.scrape(), "host names are not labels")


class Listener(MetricsBase):
    def test_separate_port(self):
        s = self.server()
        self.assertEqual(s.srv.get("/metrics").status, 404)
        self.assertEqual(s.scrape_raw("/adv").status, 404)
        self.assertEqual(s.scrape_raw("/metrics/").status, 404)
        self.assertEqual(s.scrape_raw("/metrics", method="POST").status, 405)
        r = s.scrape_raw()
        self.assertEqual(r.status, 200)
        self.assertEqual(r.headers.get("content-type"), CONTENT_TYPE)
        self.assertEqual(listening_ports(s.srv.proc.pid), {s.srv.port, s.mport})
        # Scrapes are not requests of the client port: the one 404 is
        # /metrics asked there.
        m, _ = parse(s.scrape_settled(2))
        self.assertEqual(value(m, "tether_http_requests_total", route="other", code="404"), 1)
        self.assertEqual(value(m, "tether_http_requests_total", route="health", code="200"), 1)

    def test_ipv6(self):
        if not tlib.have_ipv6_loopback():
            self.skipTest("no IPv6 loopback (::1)")
        s = self.server(host="::1")
        s.srv.get("/adv")
        m, _ = parse(s.scrape_settled(2))
        self.assertEqual(value(m, "tether_http_requests_total", route="adv", code="200"), 1)
        # Logged once every listener is up, which may be after the first answers.
        self.assertTrue(tlib.eventually(lambda: f"metrics at http://[::1]:{s.mport}/metrics" in s.srv.logs()),
                        s.srv.logs())

    def test_nothing_without_the_option(self):
        with tlib.Tetherd() as srv:
            self.assertEqual(listening_ports(srv.proc.pid), {srv.port})
            self.assertEqual(srv.get("/metrics").status, 404)
            self.assertNotIn("metrics at", srv.logs())

    def test_bad_addresses(self):
        tmp = tempfile.mkdtemp(prefix="tether-metrics-")
        self.addCleanup(shutil.rmtree, tmp)
        for arg, said in (("127.0.0.1", "give ADDRESS:PORT"), ("::1:9100", "not a numeric IPv4 address"),
                          ("[::1]9100", "in brackets"), ("127.0.0.1:0", "from 1 to 65535"),
                          ("127.0.0.1:99999", "from 1 to 65535"), ("localhost:9100", "not a numeric IPv4"),
                          (":9100", "no address")):
            r = tlib.run(tlib.TETHERD, "-p", str(tlib.free_port()), "--metrics-address", arg, tmp, text=True)
            self.assertEqual(r.returncode, 2, (arg, r.stderr))
            self.assertIn(f"invalid metrics address '{arg}'", r.stderr)
            self.assertIn(said, r.stderr, arg)
        # A port in use stops tetherd before it serves anything.
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            r = tlib.run(tlib.TETHERD, "-a", "127.0.0.1", "-p", str(tlib.free_port()), "--metrics-address",
                         f"127.0.0.1:{port}", tmp, text=True, timeout=20)
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertIn(f"--metrics-address 127.0.0.1:{port}: cannot listen on 127.0.0.1:{port}", r.stderr)


class Promtool(MetricsBase):
    def test_promtool_check_metrics(self):
        if not PROMTOOL:
            self.skipTest("promtool is not installed (apt-get install prometheus)")
        s = self.server()
        s.traffic()
        text = s.scrape()
        self.assertIn("tether_key_recoveries_total{key=", text)
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, f"promtool: {r.stdout}{r.stderr}\n{text}")
        self.assertEqual(r.stdout + r.stderr, "")


class RealPrometheus(MetricsBase):
    def query(self, port, expr):
        url = f"/api/v1/query?query={urllib.parse.quote(expr)}"
        r = tlib.get(port, url, timeout=5)
        self.assertEqual(r.status, 200, f"{expr}: {r!r}")
        body = r.json()
        self.assertEqual(body["status"], "success", body)
        return {frozenset(x["metric"].items()): float(x["value"][1]) for x in body["data"]["result"]}

    def test_scraped_by_prometheus(self):
        if not PROMETHEUS:
            self.skipTest("prometheus is not installed (apt-get install prometheus)")
        s = self.server()
        s.traffic()
        tmp = tempfile.mkdtemp(prefix="tether-prometheus-")
        self.addCleanup(shutil.rmtree, tmp, True)
        config = os.path.join(tmp, "prometheus.yml")
        with open(config, "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                    "scrape_configs:\n  - job_name: tether\n"
                    f"    static_configs:\n      - targets: ['127.0.0.1:{s.mport}']\n")
        port = tlib.free_port()
        log = open(os.path.join(tmp, "prometheus.log"), "wb")
        self.addCleanup(log.close)
        proc = subprocess.Popen([PROMETHEUS, f"--config.file={config}", f"--storage.tsdb.path={tmp}/data",
                                 f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle"],
                                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        self.addCleanup(tlib.stop_process, proc)

        def logs():
            with open(log.name, "rb") as f:
                return f.read().decode(errors="replace")[-3000:]

        kid_s256 = tlib.thumbprint(s.exc)
        deadline = time.monotonic() + 30
        got = {}
        while time.monotonic() < deadline:
            self.assertIsNone(proc.poll(), f"prometheus exited with {proc.returncode}: {logs()}")
            try:
                got = self.query(port, 'tether_recoveries_total{outcome="recovered"}')
            except (OSError, AssertionError, ValueError):
                got = {}
            if got:
                break
            time.sleep(0.25)
        self.assertTrue(got, f"prometheus did not scrape tetherd's metrics within 30s: {logs()}")
        self.assertEqual(list(got.values()), [M_GOOD])
        self.assertEqual(self.query(port, f'up{{instance="127.0.0.1:{s.mport}"}}').popitem()[1], 1)

        def one(expr):
            r = self.query(port, expr)
            self.assertEqual(len(r), 1, f"{expr}: {r}")
            return r.popitem()[1]

        self.assertEqual(one('tether_http_requests_total{route="adv",code="200"}'), N_ADV)
        self.assertEqual(one('tether_http_requests_total{route="rec",code="400"}'), K_BAD)
        self.assertEqual(one('tether_recovery_refusals_total{reason="unknown_key"}'), U_UNKNOWN)
        self.assertEqual(one(f'tether_key_recoveries_total{{key="{kid_s256}"}}'), M_GOOD)
        self.assertEqual(one('tether_http_request_duration_seconds_count{route="adv"}'), N_ADV)
        self.assertEqual(one('sum(tether_keys{state="advertised"})'), 2)
        self.assertEqual(one('tether_health{state="ok"}'), 1)
        # Every query of the dashboard is PromQL this Prometheus takes, with
        # Grafana's variables as a dashboard showing everything sets them.
        with open(DASHBOARD) as f:
            dash = json.load(f)
        for p in Dashboard.panels(None, dash):
            for t in p.get("targets", []):
                expr = t["expr"].replace("$__rate_interval", "1m").replace("$job", ".*").replace("$instance", ".*")
                self.query(port, expr)


class Dashboard(MetricsBase):
    def panels(self, dash):
        for p in dash.get("panels", []):
            yield p
            yield from p.get("panels", [])

    def test_dashboard_names_only_exported_metrics(self):
        with open(DASHBOARD) as f:
            dash = json.load(f)
        s = self.server()
        s.traffic()
        exported = exported_names(s.scrape())
        used = set()
        panels = [p for p in self.panels(dash) if p.get("type") != "row"]
        self.assertGreaterEqual(len(panels), 8)
        for p in panels:
            exprs = [t["expr"] for t in p.get("targets", []) if t.get("expr")]
            self.assertTrue(exprs, f"panel {p.get('title')!r} queries nothing")
            for expr in exprs:
                names = set(re.findall(r"\b(tether_[a-zA-Z0-9_]+)", expr))
                self.assertTrue(names, f"panel {p.get('title')!r}: {expr!r} uses no tether metric")
                unknown = names - exported
                self.assertFalse(unknown, f"panel {p.get('title')!r}: {expr!r} uses {unknown}, which tetherd "
                                 f"does not export (it exports {sorted(exported)})")
                used |= names
        # What the dashboard is for: every part of the metrics has a panel.
        for name in ("tether_http_requests_total", "tether_http_request_duration_seconds_bucket",
                     "tether_recoveries_total", "tether_key_recoveries_total", "tether_recovery_refusals_total",
                     "tether_keys", "tether_reloads_total", "tether_reload_failures_total", "tether_health",
                     "tether_recoveries_by_key_state_total", "tether_hosts"):
            self.assertIn(name, used)

    def test_man_page_describes_every_exported_metric(self):
        with open(os.path.join(HERE, "..", "..", "man", "tetherd.8")) as f:
            page = f.read().replace("\\-", "-")
        s = self.server()
        s.traffic()
        _, families = parse(s.scrape())
        missing = sorted(name for name in families if name not in page)
        self.assertFalse(missing, f"tetherd.8's METRICS section does not describe {missing}")


if __name__ == "__main__":
    tlib.main()
