"""Every route and status code of Tang's API, and bad input, against one tetherd."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tlib  # noqa: E402
from tlib import P, ecmr_jwk, int_to_b64u, random_point, thumbprint  # noqa: E402


class Routes(tlib.unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.srv = tlib.Tetherd()
        cls.sig = tlib.key_of(cls.srv.keydir, "sig")
        cls.exc = tlib.key_of(cls.srv.keydir, "exc")
        cls.kid = thumbprint(cls.exc)

    @classmethod
    def tearDownClass(cls):
        cls.srv.close()

    def tearDown(self):
        # Whatever a test sent, the server must still be serving.
        self.assertEqual(self.srv.proc.poll(), None, "tetherd died")
        self.assertEqual(self.srv.get("/adv").status, 200)

    def rec(self, obj, kid=None):
        return self.srv.post(f"/rec/{kid or self.kid}", obj)

    # ------------------------------------------------------------ /adv

    def test_adv_variants(self):
        for target in ("/adv", "/adv/", "//adv//", "///adv"):
            r = self.srv.get(target)
            self.assertEqual(r.status, 200, target)
            self.assertEqual(r.headers["content-type"], "application/jose+json", target)

    def test_adv_payload_and_signature_header(self):
        adv = self.srv.get("/adv").json()
        # One signing key: flattened serialization.
        self.assertEqual(set(adv), {"payload", "protected", "signature"})
        protected = json.loads(tlib.unb64u(adv["protected"]))
        self.assertEqual(protected, {"alg": "ES512", "cty": "jwk-set+json"})
        keys = tlib.adv_payload(adv)["keys"]
        self.assertEqual(len(keys), 2)
        for k in keys:
            self.assertNotIn("d", k)
        thps = sorted(thumbprint(k) for k in keys)
        self.assertEqual(thps, sorted([thumbprint(self.sig), thumbprint(self.exc)]))
        ver = [k for k in keys if thumbprint(k) == thumbprint(self.sig)][0]
        self.assertEqual(ver["key_ops"], ["verify"])

    def test_adv_by_thumbprint(self):
        for h in tlib.THP_HASHES:
            r = self.srv.get("/adv/" + thumbprint(self.sig, h))
            self.assertEqual(r.status, 200, h)
            self.assertEqual(tlib.adv_payload(r.json()), tlib.adv_payload(self.srv.get("/adv").json()))

    def test_adv_unknown_or_exchange_thumbprint(self):
        self.assertEqual(self.srv.get("/adv/" + "A" * 43).status, 404)
        # An exchange key is not a signing key.
        self.assertEqual(self.srv.get("/adv/" + self.kid).status, 404)

    def test_not_found(self):
        for target in ("/", "/rec", "/rec/", "/adv?x=1", "/adv/abc?x=1", "/adv/a.b", "/advx", "/nope",
                       "/adv/%41", "/rec/" + self.kid + "/x"):
            self.assertEqual(self.srv.get(target).status, 404, target)

    def test_wrong_method(self):
        self.assertEqual(tlib.request(self.srv.port, "POST", "/adv", body="{}").status, 405)
        self.assertEqual(tlib.request(self.srv.port, "PUT", "/adv", body="{}").status, 405)
        self.assertEqual(tlib.request(self.srv.port, "DELETE", "/adv/abc").status, 405)
        self.assertEqual(self.srv.get("/rec/" + self.kid).status, 405)

    def test_health(self):
        r = self.srv.get("/health")
        self.assertEqual(r.status, 200)

    # ------------------------------------------------------------ /rec

    def check_rec_answer(self, r, x, y, exc):
        self.assertEqual(r.status, 200, r.raw[:200])
        self.assertEqual(r.headers["content-type"], "application/jwk+json")
        d = tlib.b64u_to_int(exc["d"])
        ex, ey = tlib.mul(d, (x, y))
        want = ecmr_jwk(ex, ey)
        # Sorted, compact, fixed width: byte-for-byte what tang answers.
        self.assertEqual(r.body, json.dumps(want, separators=(",", ":"), sort_keys=True).encode())

    def test_rec_all_kid_hashes(self):
        x, y = random_point()
        for h in tlib.THP_HASHES:
            self.check_rec_answer(self.rec(ecmr_jwk(x, y), thumbprint(self.exc, h)), x, y, self.exc)

    def test_rec_as_clevis_sends_it(self):
        x, y = random_point()
        body = json.dumps(ecmr_jwk(x, y)) + "\n"
        self.check_rec_answer(self.rec(body), x, y, self.exc)

    def test_rec_without_alg_or_key_ops(self):
        x, y = random_point()
        jwk = ecmr_jwk(x, y)
        del jwk["alg"], jwk["key_ops"]
        self.check_rec_answer(self.rec(jwk), x, y, self.exc)

    def test_rec_small_coordinates_fixed_width(self):
        # Many points have a leading zero byte; find one so the width rule is exercised.
        for _ in range(2000):
            x, y = random_point()
            if x < 2**512 or y < 2**512:
                break
        self.check_rec_answer(self.rec(ecmr_jwk(x, y)), x, y, self.exc)

    def test_rec_bad_json(self):
        for body in ("", "not json", "[1,2]", "42", '"str"', "{", "null"):
            self.assertEqual(self.rec(body).status, 400, repr(body))

    def test_rec_bad_jwk(self):
        x, y = random_point()
        good = ecmr_jwk(x, y)
        cases = {
            "empty": {},
            "kty RSA": dict(good, kty="RSA"),
            "kty missing": {k: v for k, v in good.items() if k != "kty"},
            "alg ES512": dict(good, alg="ES512"),
            "x missing": {k: v for k, v in good.items() if k != "x"},
            "y missing": {k: v for k, v in good.items() if k != "y"},
            "bad base64": dict(good, x="!!!" + good["x"][3:]),
            "crv P-256": dict(good, crv="P-256"),
        }
        for name, jwk in cases.items():
            self.assertEqual(self.rec(jwk).status, 400, name)

    def test_rec_bad_points(self):
        x, y = random_point()
        cases = {
            "off curve": ecmr_jwk(x, (y + 1) % P),
            "infinity": ecmr_jwk(0, 0),
            "x = p": ecmr_jwk(P, y),
            "y = p + y": ecmr_jwk(x, P + y, width=67),
            "x too wide": ecmr_jwk(x, y, width=67),
            "short coordinates": dict(ecmr_jwk(x, y), x=int_to_b64u(x, 66)[:40]),
        }
        for name, jwk in cases.items():
            self.assertEqual(self.rec(jwk).status, 400, name)

    def test_rec_p256_point_to_p521_key(self):
        # The P-256 generator, a valid P-256 point.
        gx = 0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296
        gy = 0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5
        self.assertEqual(self.rec(ecmr_jwk(gx, gy, crv="P-256", width=32)).status, 400)
        self.assertEqual(self.rec(ecmr_jwk(gx, gy, crv="P-521", width=32)).status, 400)

    def test_rec_forbids_derive(self):
        x, y = random_point()
        self.assertEqual(self.rec(dict(ecmr_jwk(x, y), key_ops=["sign"])).status, 403)
        self.assertEqual(self.rec(dict(ecmr_jwk(x, y), key_ops=["sign"], use="sig")).status, 403)

    def test_rec_kid_errors(self):
        x, y = random_point()
        self.assertEqual(self.rec(ecmr_jwk(x, y), "A" * 43).status, 404)
        self.assertEqual(self.rec(ecmr_jwk(x, y), thumbprint(self.sig)).status, 403)
        # Tang validates the body before the kid.
        self.assertEqual(self.rec({}, "A" * 43).status, 400)

    # ------------------------------------------------------------ HTTP limits

    def test_body_too_large(self):
        big = "x" * (65 * 1024)
        self.assertEqual(self.rec(big).status, 413)
        # Chunked, so the size is only known while reading.
        data = (f"POST /rec/{self.kid} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                "Connection: close\r\n\r\n").encode()
        chunk = b"y" * 16384
        for _ in range(5):
            data += b"%x\r\n" % len(chunk) + chunk + b"\r\n"
        data += b"0\r\n\r\n"
        self.assertEqual(tlib.Response(self.srv.raw(data)).status, 413)

    def test_uri_too_long(self):
        self.assertEqual(self.srv.get("/adv/" + "A" * 5000).status, 414)
        self.assertEqual(self.srv.get("/adv/" + "A" * 4000).status, 404)

    def test_garbage_request_lines(self):
        for data in (b"\x00\x01\x02garbage\r\n\r\n", b"GET\r\n\r\n", b"GET /adv HTTP/9.9\r\n\r\n",
                     b"HELLO WORLD\r\n\r\n", b"GET /adv HTTP/1.1\r\nBad Header Line\r\n\r\n"):
            resp = self.srv.raw(data, timeout=5)
            status = tlib.Response(resp).status if resp else 0
            # A clear 4xx/5xx or a closed connection; never a 200 and never a crash.
            self.assertTrue(status == 0 or 400 <= status < 600, (data, resp[:100]))
        # At least the plainly malformed request line gets an explicit 400 (tang just hangs up).
        self.assertEqual(tlib.Response(self.srv.raw(b"GET /adv HTTP/1.1\r\nBad Header Line\r\n\r\n")).status, 400)

    def test_expect_100_continue(self):
        x, y = random_point()
        body = json.dumps(ecmr_jwk(x, y)).encode()
        with tlib.socket.create_connection(("127.0.0.1", self.srv.port), timeout=5) as s:
            s.sendall((f"POST /rec/{self.kid} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
                       "Expect: 100-continue\r\nConnection: close\r\n\r\n").encode())
            interim = s.recv(4096)
            self.assertTrue(interim.startswith(b"HTTP/1.1 100"), interim)
            s.sendall(body)
            rest = b""
            while chunk := s.recv(65536):
                rest += chunk
        self.check_rec_answer(tlib.Response(rest), x, y, self.exc)

    def test_keep_alive_one_write_per_response(self):
        # Two requests on one connection, both answered; the server keeps it open.
        with tlib.socket.create_connection(("127.0.0.1", self.srv.port), timeout=5) as s:
            for _ in range(2):
                s.sendall(b"GET /adv HTTP/1.1\r\nHost: x\r\n\r\n")
                resp = b""
                while not tlib._complete(resp):
                    chunk = s.recv(65536)
                    self.assertTrue(chunk, "connection closed after a keep-alive request")
                    resp += chunk
                self.assertEqual(tlib.Response(resp).status, 200)

    def test_log_line_per_request(self):
        marker = "/adv/" + "Z" * 20
        self.srv.get(marker)
        line = tlib.eventually(lambda: [ln for ln in self.srv.logs().splitlines() if marker in ln])
        self.assertTrue(line, self.srv.logs()[-500:])
        # ADDR METHOD PATH STATUS NNus
        self.assertRegex(line[0], r"127\.0\.0\.1 GET " + marker + r" 404 \d+us$")


if __name__ == "__main__":
    tlib.main()
