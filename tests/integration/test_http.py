"""The HTTP client against real peers on loopback: proxies as curl (what
Clevis users had) chooses them, through Debian's tinyproxy; https through
Debian's nginx terminating TLS in front of tetherd, with a throwaway CA;
IPv6 ([::1]) direct and through the proxy. A test that needs a peer that is
not installed is skipped, naming it."""

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
SECRET = b"the secret"
base_env = tlib.env_without_proxies


def dead_port():
    return tlib.free_port()


def encrypt(url, env):
    return tlib.run(tlib.TETHER, "encrypt", "tang", '{"url":"%s"}' % url, "-y", input=SECRET, env=env)


def decrypt(jwe, env):
    return tlib.run(tlib.TETHER, "decrypt", input=jwe, env=env)


def err(r):
    return r.stderr.decode(errors="replace")


class HttpBase(tlib.unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="tether-http-")
        self.cleanups = []

    def tearDown(self):
        for c in reversed(self.cleanups):
            c()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def tetherd(self, host="127.0.0.1"):
        t = tlib.Tetherd(host=host)
        self.cleanups.append(t.close)
        return t

    def tinyproxy(self, auth=None):
        if not tlib.TINYPROXY:
            self.skipTest("tinyproxy is not installed (apt-get install tinyproxy)")
        p = tlib.Tinyproxy(self.tmp, auth)
        self.cleanups.append(p.close)
        return p

    def round_trip(self, url, env, enc_env=None):
        """Encrypts (in enc_env, default env) and decrypts (in env); returns
        the decrypt's CompletedProcess."""
        r = encrypt(url, enc_env or env)
        self.assertEqual(r.returncode, 0, err(r))
        return r.stdout, decrypt(r.stdout, env)

    def assertRoundTrip(self, url, env):
        jwe, d = self.round_trip(url, env)
        self.assertEqual(d.returncode, 0, err(d))
        self.assertEqual(d.stdout, SECRET)


class Proxy(HttpBase):
    def test_http_proxy_carries_both_requests(self):
        t, p = self.tetherd(), self.tinyproxy()
        url = f"http://127.0.0.1:{t.port}"
        self.assertRoundTrip(url, base_env(http_proxy=p.url))
        reqs = p.requests()
        self.assertTrue(any(f"GET {url}/adv" in line for line in reqs), reqs)
        self.assertTrue(any(f"POST {url}/rec/" in line for line in reqs), reqs)

    def test_proxy_without_scheme_is_http(self):
        t, p = self.tetherd(), self.tinyproxy()
        self.assertRoundTrip(f"http://127.0.0.1:{t.port}", base_env(http_proxy=f"127.0.0.1:{p.port}"))
        self.assertTrue(p.requests())

    def test_dead_proxy_fails_naming_it(self):
        t = self.tetherd()
        port = dead_port()
        r = encrypt(f"http://127.0.0.1:{t.port}", base_env(http_proxy=f"http://127.0.0.1:{port}"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"the proxy 127.0.0.1:{port} (http_proxy): connection refused", err(r))
        self.assertIn("no_proxy", err(r))

    def test_no_proxy_entries_bypass_a_dead_proxy(self):
        t = self.tetherd()
        dead = f"http://127.0.0.1:{dead_port()}"
        cases = [  # (URL host, no_proxy, bypassed)
            ("127.0.0.1", "127.0.0.1", True),
            ("127.0.0.1", "127.0.0.0/8", True),
            ("127.0.0.1", " example.com , 127.0.0.1/32 ", True),
            ("127.0.0.1", "10.0.0.0/8", False),
            ("127.0.0.1", "*", True),
            ("localhost", "localhost", True),
            ("localhost", "LocalHost", True),
            ("localhost", ".localhost", True),
            ("localhost", "calhost", False),
            ("localhost", "*.localhost", False),
            ("localhost", ",,x.example,,localhost", True),
        ]
        for host, no_proxy, bypassed in cases:
            with self.subTest(host=host, no_proxy=no_proxy):
                r = encrypt(f"http://{host}:{t.port}", base_env(http_proxy=dead, no_proxy=no_proxy))
                self.assertEqual(r.returncode == 0, bypassed, err(r))
                if not bypassed:
                    self.assertIn("(http_proxy): connection refused", err(r))

    def test_upper_case_no_proxy_is_read_when_lower_is_unset(self):
        t = self.tetherd()
        dead = f"http://127.0.0.1:{dead_port()}"
        r = encrypt(f"http://127.0.0.1:{t.port}", base_env(http_proxy=dead, NO_PROXY="127.0.0.1"))
        self.assertEqual(r.returncode, 0, err(r))
        # Lower case first, as curl: NO_PROXY is not looked at then.
        r = encrypt(f"http://127.0.0.1:{t.port}", base_env(http_proxy=dead, no_proxy="x", NO_PROXY="127.0.0.1"))
        self.assertNotEqual(r.returncode, 0)

    def test_all_proxy_when_http_proxy_is_unset(self):
        t, p = self.tetherd(), self.tinyproxy()
        url = f"http://127.0.0.1:{t.port}"
        for var in ("all_proxy", "ALL_PROXY"):
            with self.subTest(var=var):
                before = len(p.requests())
                self.assertRoundTrip(url, base_env(**{var: p.url}))
                self.assertGreater(len(p.requests()), before)
        # http_proxy wins over all_proxy.
        r = encrypt(url, base_env(http_proxy=f"http://127.0.0.1:{dead_port()}", all_proxy=p.url))
        self.assertIn("(http_proxy)", err(r))

    def test_upper_case_http_proxy_is_ignored_like_curl(self):
        t = self.tetherd()
        r = encrypt(f"http://127.0.0.1:{t.port}", base_env(HTTP_PROXY=f"http://127.0.0.1:{dead_port()}"))
        self.assertEqual(r.returncode, 0, err(r))

    def test_socks_and_https_proxies_are_refused_clearly(self):
        t = self.tetherd()
        for var, scheme in (("http_proxy", "socks5"), ("all_proxy", "socks5h"), ("http_proxy", "socks4a"),
                            ("all_proxy", "https")):
            with self.subTest(var=var, scheme=scheme):
                r = encrypt(f"http://127.0.0.1:{t.port}", base_env(**{var: f"{scheme}://127.0.0.1:1080"}))
                self.assertNotEqual(r.returncode, 0)
                self.assertIn(f"{var}: {scheme}:// proxies are not supported: tether speaks to http:// proxies only",
                              err(r))
                self.assertIn("no_proxy", err(r))

    def test_credentials_reach_the_proxy(self):
        t, p = self.tetherd(), self.tinyproxy(auth=("tuser", "tpass"))
        url = f"http://127.0.0.1:{t.port}"
        # Percent-encoded in the URL ("p"), decoded as curl does.
        self.assertRoundTrip(url, base_env(http_proxy=f"http://tuser:t%70ass@127.0.0.1:{p.port}"))
        r = encrypt(url, base_env(http_proxy=f"http://tuser:wrong@127.0.0.1:{p.port}"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(f"the proxy 127.0.0.1:{p.port} (http_proxy) refused the credentials", err(r))
        self.assertNotIn("wrong", err(r))
        r = encrypt(url, base_env(http_proxy=p.url))
        self.assertIn("asks for credentials", err(r))


def make_ca(d):
    """A throwaway CA and certificates for localhost / 127.0.0.1 / ::1 and
    for another name; returns the paths."""
    def ossl(*args):
        tlib.run("openssl", *args, check=True, cwd=d)
    ossl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
         "-subj", "/CN=tether test CA", "-keyout", "ca.key", "-out", "ca.pem")
    for name, san in (("good", "DNS:localhost,IP:127.0.0.1,IP:::1"), ("other", "DNS:other.example")):
        ossl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", f"/CN={name}",
             "-keyout", f"{name}.key", "-out", f"{name}.csr")
        with open(os.path.join(d, f"{name}.ext"), "w") as f:
            f.write(f"subjectAltName={san}\n")
        ossl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-extfile", f"{name}.ext", "-out", f"{name}.pem")
    return {k: os.path.join(d, v) for k, v in (("ca", "ca.pem"), ("good", "good.pem"), ("good_key", "good.key"),
                                              ("other", "other.pem"), ("other_key", "other.key"))}


class Nginx:
    """nginx in the foreground (own prefix), TLS on 127.0.0.1 and [::1]
    (cert) and on 127.0.0.1 (other cert), proxying to tetherd."""

    def __init__(self, tmp, certs, backend_port, v6):
        self.dir = tempfile.mkdtemp(prefix="nginx-", dir=tmp)
        self.port, self.other_port = tlib.free_port(), tlib.free_port()
        v6_listen = f"listen [::1]:{self.port} ssl;" if v6 else ""
        d = self.dir
        conf = os.path.join(d, "nginx.conf")
        with open(conf, "w") as f:
            f.write(f"""daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    server {{
        listen 127.0.0.1:{self.port} ssl;
        {v6_listen}
        ssl_certificate {certs['good']};
        ssl_certificate_key {certs['good_key']};
        location / {{ proxy_pass http://127.0.0.1:{backend_port}; }}
    }}
    server {{
        listen 127.0.0.1:{self.other_port} ssl;
        ssl_certificate {certs['other']};
        ssl_certificate_key {certs['other_key']};
        location / {{ proxy_pass http://127.0.0.1:{backend_port}; }}
    }}
}}
""")
        with open(os.path.join(d, "stderr"), "wb") as stderr:
            self.proc = subprocess.Popen([NGINX, "-p", d, "-e", f"{d}/error.log", "-c", conf],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr,
                                         start_new_session=True)
        def up():
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return self.proc.poll() is not None
        if not tlib.eventually(up, timeout=10) or self.proc.poll() is not None:
            raise AssertionError("nginx did not start: " + open(os.path.join(d, "stderr")).read())

    def close(self):
        tlib.stop_process(self.proc)


class Https(HttpBase):
    def setUp(self):
        super().setUp()
        if not NGINX:
            self.skipTest("nginx is not installed (apt-get install nginx-light)")
        self.certs = make_ca(self.tmp)
        self.t = self.tetherd()
        self.v6 = tlib.have_ipv6_loopback()
        self.nginx = Nginx(self.tmp, self.certs, self.t.port, self.v6)
        self.cleanups.append(self.nginx.close)

    def trusted(self, **extra):
        return base_env(SSL_CERT_FILE=self.certs["ca"], **extra)

    def test_https_with_the_ca_works_for_names_and_addresses(self):
        hosts = ["localhost", "127.0.0.1"] + (["[::1]"] if self.v6 else [])
        for host in hosts:
            with self.subTest(host=host):
                self.assertRoundTrip(f"https://{host}:{self.nginx.port}", self.trusted())

    def test_https_without_the_ca_is_not_trusted(self):
        r = encrypt(f"https://localhost:{self.nginx.port}", base_env(SSL_CERT_FILE="/dev/null"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("TLS certificate not trusted", err(r))

    def test_certificate_for_another_name_is_refused(self):
        # A name, and an address literal (checked against the certificate's
        # IP entries, not its names: a CA-trusted certificate for anything
        # else must not do for https://127.0.0.1).
        for host in ("localhost", "127.0.0.1"):
            with self.subTest(host=host):
                r = encrypt(f"https://{host}:{self.nginx.other_port}", self.trusted())
                self.assertNotEqual(r.returncode, 0)
                self.assertIn("TLS certificate not trusted", err(r))
        # Control: the same server is trusted otherwise (its CA is ours).
        r = tlib.run("openssl", "verify", "-CAfile", self.certs["ca"], self.certs["other"])
        self.assertEqual(r.returncode, 0)

    def test_https_through_the_proxy_uses_connect(self):
        p = self.tinyproxy()
        url = f"https://localhost:{self.nginx.port}"
        self.assertRoundTrip(url, self.trusted(https_proxy=p.url))
        self.assertTrue(any(f"CONNECT localhost:{self.nginx.port}" in line for line in p.requests()), p.log())
        # HTTPS_PROXY too; http_proxy is not for https:// URLs.
        before = len(p.requests())
        self.assertRoundTrip(url, self.trusted(HTTPS_PROXY=p.url, http_proxy=f"http://127.0.0.1:{dead_port()}"))
        self.assertGreater(len(p.requests()), before)

    def test_connect_credentials(self):
        p = self.tinyproxy(auth=("cu", "cp"))
        url = f"https://localhost:{self.nginx.port}"
        self.assertRoundTrip(url, self.trusted(https_proxy=f"http://cu:cp@127.0.0.1:{p.port}"))
        r = encrypt(url, self.trusted(https_proxy=f"http://cu:bad@127.0.0.1:{p.port}"))
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("(https_proxy) refused the credentials (HTTP 40", err(r))

    def test_https_to_a_plain_http_port(self):
        r = encrypt(f"https://127.0.0.1:{self.t.port}", self.trusted())
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("does not speak TLS", err(r))


class IPv6(HttpBase):
    def setUp(self):
        super().setUp()
        if not tlib.have_ipv6_loopback():
            self.skipTest("no IPv6 loopback (::1)")

    def test_direct(self):
        t = self.tetherd(host="::1")
        self.assertRoundTrip(f"http://[::1]:{t.port}", base_env())

    def test_through_the_proxy(self):
        t, p = self.tetherd(host="::1"), self.tinyproxy()
        url = f"http://[::1]:{t.port}"
        self.assertRoundTrip(url, base_env(http_proxy=p.url))
        self.assertTrue(any(f"GET {url}/adv" in line for line in p.requests()), p.log())

    def test_no_proxy_ipv6_entries(self):
        t = self.tetherd(host="::1")
        dead = f"http://127.0.0.1:{dead_port()}"
        for no_proxy, bypassed in (("::1", True), ("[::1]", True), ("::1/128", True), ("[::1]/128", True),
                                   ("::/0", False), ("fd00::/8", False), ("::2", False), ("127.0.0.1", False)):
            with self.subTest(no_proxy=no_proxy):
                r = encrypt(f"http://[::1]:{t.port}", base_env(http_proxy=dead, no_proxy=no_proxy))
                self.assertEqual(r.returncode == 0, bypassed, err(r))


class HostileServer:
    """A server on 127.0.0.1 (TLS with certs) answering every connection
    with respond(conn, request): the misbehaviour no real server has."""

    def __init__(self, respond, certs=None):
        self.respond = respond
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.tls = None
        if certs:
            self.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self.tls.load_cert_chain(certs["good"], certs["good_key"])
        self.closed = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while not self.closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self.one, args=(conn,), daemon=True).start()

    def one(self, conn):
        try:
            conn.settimeout(10)
            if self.tls:
                conn = self.tls.wrap_socket(conn, server_side=True)
            request = b""
            while b"\r\n\r\n" not in request:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                request += chunk
            self.respond(conn, request)
        except (OSError, ssl.SSLError):
            pass
        finally:
            conn.close()

    def close(self):
        self.closed = True
        self.sock.close()


def flood(conn, request):
    """A status line, then header lines without end, as fast as they go."""
    conn.sendall(b"HTTP/1.0 200 OK\r\n")
    lines = b"X-A: b\r\n" * 8192
    while True:
        conn.sendall(lines)


class HostileHeaders(HttpBase):
    """Servers that misbehave in the headers or past the body."""

    def hostile(self, respond, certs=None):
        s = HostileServer(respond, certs)
        self.cleanups.append(s.close)
        return s

    def adv(self):
        t = self.tetherd()
        return tlib.get(t.port, "/adv").body

    def encrypt_bounded(self, url, env):
        # OpenSSL's header loop did not return at all before: bounded here
        # so that the test fails instead of hanging.
        start = time.monotonic()
        r = tlib.run(tlib.TETHER, "encrypt", "tang", '{"url":"%s"}' % url, "-y", input=SECRET, env=env, timeout=15)
        return r, time.monotonic() - start

    def test_header_flood_ends_in_time(self):
        s = self.hostile(flood)
        r, took = self.encrypt_bounded(f"http://127.0.0.1:{s.port}", base_env(TETHER_TIMEOUT="1"))
        self.assertNotEqual(r.returncode, 0)
        self.assertLess(took, 3.0, err(r))
        self.assertIn("answer headers larger than 64 KiB", err(r))

    def test_header_flood_over_tls_ends_in_time(self):
        certs = make_ca(self.tmp)
        s = self.hostile(flood, certs)
        r, took = self.encrypt_bounded(f"https://localhost:{s.port}",
                                       base_env(TETHER_TIMEOUT="1", SSL_CERT_FILE=certs["ca"]))
        self.assertNotEqual(r.returncode, 0)
        self.assertLess(took, 3.0, err(r))
        self.assertIn("answer headers larger than 64 KiB", err(r))

    def many_headers(self, adv):
        """An answer with 40 KiB of headers (the guard's pauses between
        lines must lose nothing), then the advertisement."""
        def respond(conn, request):
            head = b"HTTP/1.0 200 OK\r\n" + b"".join(b"X-Filler-%05d: %s\r\n" % (i, b"v" * 20) for i in range(1200))
            conn.sendall(head + b"Content-Type: application/jose+json\r\nContent-Length: %d\r\n\r\n" % len(adv) + adv)
        return respond

    def test_large_headers_under_the_cap_still_work(self):
        s = self.hostile(self.many_headers(self.adv()))
        r, _ = self.encrypt_bounded(f"http://127.0.0.1:{s.port}", base_env())
        self.assertEqual(r.returncode, 0, err(r))

    def test_large_headers_under_the_cap_still_work_over_tls(self):
        certs = make_ca(self.tmp)
        s = self.hostile(self.many_headers(self.adv()), certs)
        r, _ = self.encrypt_bounded(f"https://localhost:{s.port}", base_env(SSL_CERT_FILE=certs["ca"]))
        self.assertEqual(r.returncode, 0, err(r))

    def test_bytes_past_content_length_are_dropped(self):
        adv = self.adv()

        def respond(conn, request):
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/jose+json\r\nContent-Length: %d\r\n\r\n"
                         % len(adv) + adv + b"GARBAGE")
        s = self.hostile(respond)
        r, _ = self.encrypt_bounded(f"http://127.0.0.1:{s.port}", base_env())
        self.assertEqual(r.returncode, 0, err(r))


class DroppingFirstAddress(HttpBase):
    """A host name whose first address drops packets: the next address
    must get its turn within the connect budget (as curl does). The name
    comes from an /etc/hosts of our own, bind-mounted in a user and mount
    namespace (unshare -rm); the addresses are loopback ones."""

    def test_the_next_address_gets_its_turn(self):
        if not shutil.which("unshare") or tlib.run("unshare", "-rm", "true").returncode != 0:
            self.skipTest("no user namespaces (unshare -rm)")
        t = self.tetherd(host="127.0.0.2")
        # A listener that never accepts, its queue full: the kernel drops
        # further SYNs, as a black-holed address does.
        hole = socket.socket()
        self.cleanups.append(hole.close)
        hole.bind(("127.0.0.1", t.port))
        hole.listen(0)
        for _ in range(3):
            c = socket.socket()
            self.cleanups.append(c.close)
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", t.port))
        time.sleep(0.2)
        hosts = os.path.join(self.tmp, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.1 tether-dual\n127.0.0.2 tether-dual\n")

        def in_ns(*args, env):
            return tlib.run("unshare", "-rm", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$@"', hosts, *args,
                            input=SECRET, env=env, timeout=30)
        # Controls: the dropping address comes first, and does drop.
        r = in_ns("getent", "ahostsv4", "tether-dual", env=base_env())
        self.assertTrue(r.stdout.decode().startswith("127.0.0.1 "), r.stdout)
        r = encrypt(f"http://127.0.0.1:{t.port}", base_env(TETHER_TIMEOUT="1"))
        self.assertIn("no connection within", err(r))

        url = '{"url":"http://tether-dual:%d"}' % t.port
        r = in_ns(tlib.TETHER, "encrypt", "tang", url, "-y", env=base_env(TETHER_TIMEOUT="4"))
        self.assertEqual(r.returncode, 0, err(r))


if __name__ == "__main__":
    tlib.main()
