#!/usr/bin/env python3
"""Hold N idle TCP connections open to a server and report the server's memory.

Used by tests/bench/bench.sh:

    idle_conns.py --port PORT --pid PID [--count 1000] [--hold 2] [--payload partial]

Each connection sends the start of a request (request line and one header, no
blank line), so the server has read something into its per-connection buffer
and is waiting for the rest: an idle, half-sent request, the usual cost of a
slow or stalled client.  With --payload none nothing is sent; with --payload
keepalive a complete keep-alive GET /adv is sent and its answer read.

Prints KEY=VALUE lines: BASE_KB (VmRSS before connecting), RSS_KB (VmRSS with
every connection open), HWM_KB (VmHWM), OPEN (connections still open when RSS
was read), CLOSED (closed by the server), ANSWERED (got bytes back).
Loopback only; every wait is bounded.
"""

import argparse
import resource
import socket
import sys
import time


def status_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not found for pid {pid}")


def raise_nofile(need):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= need:
        return
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return
        except (ValueError, OSError):
            need = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (need, hard))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--hold", type=float, default=2.0,
                    help="seconds to wait after the last connect before reading RSS")
    ap.add_argument("--payload", choices=("partial", "none", "keepalive"), default="partial")
    ap.add_argument("--deadline", type=float, default=60.0, help="give up after this many seconds")
    a = ap.parse_args()

    if a.host not in ("127.0.0.1", "::1", "localhost"):
        sys.exit("idle_conns.py: loopback addresses only")

    raise_nofile(a.count + 64)
    start = time.monotonic()
    base = status_kb(a.pid, "VmRSS")
    payload = {
        "partial": b"GET /adv HTTP/1.1\r\nHost: 127.0.0.1\r\n",
        "none": b"",
        "keepalive": b"GET /adv HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n\r\n",
    }[a.payload]

    socks = []
    try:
        for i in range(a.count):
            if time.monotonic() - start > a.deadline:
                sys.exit(f"idle_conns.py: deadline hit after {i} connections")
            s = socket.create_connection((a.host, a.port), timeout=5)
            if payload:
                s.sendall(payload)
            socks.append(s)
        if a.payload == "keepalive":
            # Read each answer's head so the server is done with the request.
            for s in socks:
                s.settimeout(5)
                try:
                    s.recv(65536)
                except OSError:
                    pass
        time.sleep(a.hold)

        rss = status_kb(a.pid, "VmRSS")
        hwm = status_kb(a.pid, "VmHWM")
        open_, closed, answered = 0, 0, 0
        for s in socks:
            s.setblocking(False)
            try:
                data = s.recv(1, socket.MSG_PEEK)
            except BlockingIOError:
                open_ += 1
                continue
            except OSError:
                closed += 1
                continue
            if data:
                answered += 1
                # An answered keep-alive connection is still open and idle.
                if a.payload == "keepalive":
                    open_ += 1
            else:
                closed += 1
        print(f"BASE_KB={base}")
        print(f"RSS_KB={rss}")
        print(f"HWM_KB={hwm}")
        print(f"OPEN={open_}")
        print(f"CLOSED={closed}")
        print(f"ANSWERED={answered}")
        print(f"COUNT={len(socks)}")
    finally:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass


if __name__ == "__main__":
    main()
