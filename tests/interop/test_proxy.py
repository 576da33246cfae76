#!/usr/bin/env python3
"""Proxy settings: tether decrypt goes where Debian's clevis 19 (curl 7.88)
goes. One JWE per URL host (127.0.0.1, localhost, [::1]), made by clevis
against tetherd; then, for each environment below, `clevis decrypt` and
`tether decrypt` run with it, and each must succeed exactly when the table
says, the same for both except the documented differences:

  * a dead proxy (a closed port) in http_proxy / all_proxy / ALL_PROXY:
    both fail unless no_proxy (or NO_PROXY) lists the host, by name (exact,
    suffix, leading dot, case), '*', IPv4 address or CIDR range;
  * HTTP_PROXY (upper case) is ignored by both; http_proxy wins over
    all_proxy; no_proxy over NO_PROXY;
  * a live proxy (Debian's tinyproxy): both succeed, and its log shows each
    one's request (the proxy was used, not bypassed).

Differences, on purpose: curl 7.88 compares an IPv6 host with no_proxy as a
name (only the exact text "::1" matches "[::1]"): tether matches IPv6
entries as addresses, so "[::1]", "::1/128" and "0:0::1" bypass the proxy
for tether and not for clevis.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import peers  # noqa: E402
import tlib  # noqa: E402
from tlib import log  # noqa: E402

SECRET = b'proxy parity secret\n'
env_with = tlib.env_without_proxies


def cases(dead, live):
    """(URL host, environment, clevis succeeds, tether succeeds)."""
    yield from [
        ('127.0.0.1', {'http_proxy': dead}, False, False),
        ('127.0.0.1', {'http_proxy': dead, 'no_proxy': '127.0.0.1'}, True, True),
        ('127.0.0.1', {'http_proxy': dead, 'no_proxy': '127.0.0.0/8'}, True, True),
        ('127.0.0.1', {'http_proxy': dead, 'no_proxy': '10.0.0.0/8'}, False, False),
        ('127.0.0.1', {'http_proxy': dead, 'no_proxy': ' x.test , 127.0.0.1/32 '}, True, True),
        ('127.0.0.1', {'http_proxy': dead, 'no_proxy': '*'}, True, True),
        ('127.0.0.1', {'http_proxy': dead, 'no_proxy': '*,x.test'}, False, False),
        ('127.0.0.1', {'http_proxy': dead, 'NO_PROXY': '127.0.0.1'}, True, True),
        ('127.0.0.1', {'http_proxy': dead, 'no_proxy': 'x.test', 'NO_PROXY': '127.0.0.1'}, False, False),
        ('127.0.0.1', {'all_proxy': dead}, False, False),
        ('127.0.0.1', {'ALL_PROXY': dead}, False, False),
        ('127.0.0.1', {'all_proxy': dead, 'no_proxy': '127.0.0.1'}, True, True),
        ('127.0.0.1', {'HTTP_PROXY': dead}, True, True),
        ('127.0.0.1', {'http_proxy': live}, True, True),
        ('127.0.0.1', {'http_proxy': live, 'all_proxy': dead}, True, True),
        ('localhost', {'all_proxy': live}, True, True),
        ('127.0.0.1', {'http_proxy': dead, 'all_proxy': live}, False, False),
        ('127.0.0.1', {'https_proxy': dead}, True, True),
        ('localhost', {'http_proxy': dead}, False, False),
        ('localhost', {'http_proxy': dead, 'no_proxy': 'localhost'}, True, True),
        ('localhost', {'http_proxy': dead, 'no_proxy': '.localhost'}, True, True),
        ('localhost', {'http_proxy': dead, 'no_proxy': 'LOCALHOST'}, True, True),
        ('localhost', {'http_proxy': dead, 'no_proxy': 'localhost.'}, True, True),
        ('localhost', {'http_proxy': dead, 'no_proxy': 'calhost'}, False, False),
        ('localhost', {'http_proxy': dead, 'no_proxy': '*.localhost'}, False, False),
        ('localhost', {'http_proxy': dead, 'no_proxy': '127.0.0.1'}, False, False),
        ('localhost', {'all_proxy': dead, 'no_proxy': 'localhost'}, True, True),
    ]
    if tlib.have_ipv6_loopback():
        yield from [
            ('[::1]', {'http_proxy': dead}, False, False),
            ('[::1]', {'http_proxy': live}, True, True),
            ('[::1]', {'http_proxy': dead, 'no_proxy': '::1'}, True, True),
            ('[::1]', {'http_proxy': dead, 'no_proxy': '*'}, True, True),
            ('[::1]', {'http_proxy': dead, 'no_proxy': 'fd00::/8'}, False, False),
            ('[::1]', {'http_proxy': dead, 'no_proxy': '127.0.0.1'}, False, False),
            # The differences (see above): curl 7.88 takes these as names.
            ('[::1]', {'http_proxy': dead, 'no_proxy': '[::1]'}, False, True),
            ('[::1]', {'http_proxy': dead, 'no_proxy': '::1/128'}, False, True),
            ('[::1]', {'http_proxy': dead, 'no_proxy': '0:0::1'}, False, True),
        ]


def test():
    peers.require('tetherd', 'tether-keys', 'jose', 'clevis', 'curl')
    if not tlib.TINYPROXY:
        log('SKIP: tinyproxy is not installed (apt-get install tinyproxy)')
        sys.exit(77)
    with peers.Harness() as h:
        kd = h.mkdir('keys')
        tlib.tether_gen(kd)
        thp = peers.show_lines(tlib.tether_keys('show', kd).stdout)[0]
        t4 = h.tetherd(kd)
        servers = {'127.0.0.1': t4, 'localhost': t4}
        if tlib.have_ipv6_loopback():
            servers['[::1]'] = h.tetherd(kd, host='::1')
        jwes = {host: peers.clevis_encrypt_tang({'url': 'http://%s:%d' % (host, s.port), 'thp': thp}, SECRET)
                for host, s in servers.items()}
        proxy = tlib.Tinyproxy(h.tmp)
        try:
            dead = 'http://127.0.0.1:%d' % tlib.free_port()
            failures = []
            for host, extra, want_clevis, want_tether in cases(dead, proxy.url):
                env = env_with(**extra)
                before = len(proxy.requests())
                c = peers.run([peers.CLEVIS, 'decrypt'], input=jwes[host], env=env, check=False)
                after_clevis = len(proxy.requests())
                t = tlib.run(tlib.TETHER, 'decrypt', input=jwes[host], env=env)
                after_tether = len(proxy.requests())
                got_c = c.returncode == 0 and c.stdout == SECRET
                got_t = t.returncode == 0 and t.stdout == SECRET
                what = '%s %s' % (host, ' '.join('%s=%r' % kv for kv in extra.items()))
                log('%-70s clevis %-4s tether %s' % (what, 'ok' if got_c else 'fail', 'ok' if got_t else 'fail'))
                if (got_c, got_t) != (want_clevis, want_tether):
                    failures.append('%s: clevis %s (want %s), tether %s (want %s): %s'
                                    % (what, got_c, want_clevis, got_t, want_tether,
                                       t.stderr.decode(errors='replace').strip()))
                # Through the live proxy: each one's request is in its log.
                used = extra.get('http_proxy') or extra.get('all_proxy') or extra.get('ALL_PROXY')
                if used == proxy.url and not extra.get('no_proxy') and got_c and got_t:
                    if not (after_clevis > before and after_tether > after_clevis):
                        failures.append('%s: the proxy did not log both requests' % what)
            assert not failures, '\n'.join(failures)
        finally:
            proxy.close()


if __name__ == '__main__':
    tlib.script_main(test)
