#!/usr/bin/env python3
"""Helpers for bench-client.sh (Python 3 standard library only).

  client_runs.py time --runs N --input FILE [--expect FILE] [--timeout S]
                      [--max-total S] -- CMD...
      Runs CMD N times with FILE on stdin, each in its own session, and
      prints shell assignments: RUNS, OK, FAIL, TIMEOUTS, MEDIAN_MS, MIN_MS,
      MAX_MS, CPU_MS (median user+system time of CMD and the descendants it
      waited for), LEFT_BEHIND (processes of the run's session still alive when
      CMD itself had exited: they are killed after each run), LAST_ERR.
      Wall time is taken from the start until CMD exits (not until its
      descendants close their copies of stdout/stderr: both are files).
      A run counts as OK when CMD exits 0 and its stdout is exactly the
      expected plaintext (any stdout without --expect). A run past --timeout is killed and counted as a
      timeout with that duration. Stops early after --max-total seconds.

  client_runs.py execs --input FILE -- CMD...
      Runs CMD once under strace -f and prints EXECS (successful execve
      calls, i.e. programs run, including CMD itself) and PROCS (distinct
      processes that ran a program or were forked; threads excluded); "?"
      when strace recorded nothing.

  client_runs.py listen --mode silent|syndrop --port-file FILE [--life S]
      A dead tang server on 127.0.0.1, port written to FILE:
        silent   listens (backlog 128) and never accepts or answers: the
                 kernel completes the handshake, the request is never read
        syndrop  listens with a full accept queue: further SYNs are
                 dropped, connect() hangs until the client's connect timeout
      Exits after --life seconds (default 900) or on SIGTERM.
"""

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import tlib  # noqa: E402


def kill_group(pgid):
    tlib.kill_group(pgid, signal.SIGKILL)


env = tlib.no_proxy_env


def cmd_time(a):
    expect = None
    if a.expect:
        with open(a.expect, 'rb') as f:
            expect = f.read()
    times, cpu, ok, fail, timeouts, left = [], [], 0, 0, 0, 0
    last_err = ''
    start_all = time.monotonic()
    with tempfile.TemporaryDirectory(prefix='bench-client-') as tmp:
        out_path, err_path = os.path.join(tmp, 'out'), os.path.join(tmp, 'err')
        for _ in range(a.runs):
            if time.monotonic() - start_all > a.max_total and times:
                break
            with open(a.input, 'rb') as fin, open(out_path, 'wb') as fout, \
                    open(err_path, 'wb') as ferr:
                # A blocking wait (Popen.wait(timeout) polls with growing
                # sleeps, which would round the times up); a timer enforces
                # the timeout.
                ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
                t0 = time.monotonic()
                p = subprocess.Popen(a.cmd, stdin=fin, stdout=fout, stderr=ferr,
                                     env=env(), start_new_session=True)
                fired = []
                timer = threading.Timer(a.timeout, lambda: (fired.append(1),
                                                            kill_group(p.pid)))
                timer.start()
                rc = p.wait()
                dt = time.monotonic() - t0
                timer.cancel()
                ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu.append(1000 * (ru1.ru_utime - ru0.ru_utime +
                                   ru1.ru_stime - ru0.ru_stime))
                if fired:
                    rc = None
                    timeouts += 1
            alive = len(tlib.group_members(p.pid))
            left += alive
            kill_group(p.pid)
            times.append(dt * 1000)
            with open(out_path, 'rb') as f:
                out = f.read()
            with open(err_path, 'rb') as f:
                err = f.read().decode(errors='replace').strip()
            if rc == 0 and (expect is None or out == expect):
                ok += 1
            else:
                fail += 1
                last_err = ('exit %s; %s' % (rc, err.splitlines()[-1] if err
                                             else 'no message'))[:300]
    q = lambda s: "'" + s.replace("'", "'\\''") + "'"  # noqa: E731
    print('RUNS=%d' % len(times))
    print('OK=%d' % ok)
    print('FAIL=%d' % fail)
    print('TIMEOUTS=%d' % timeouts)
    print('MEDIAN_MS=%.1f' % statistics.median(times))
    print('MIN_MS=%.1f' % min(times))
    print('MAX_MS=%.1f' % max(times))
    print('CPU_MS=%.1f' % statistics.median(cpu))
    print('LEFT_BEHIND=%d' % left)
    print('LAST_ERR=%s' % q(last_err))


def cmd_execs(a):
    with tempfile.TemporaryDirectory(prefix='bench-client-') as tmp:
        log = os.path.join(tmp, 'strace')
        with open(a.input, 'rb') as fin:
            p = subprocess.Popen(
                ['strace', '-f', '-qq', '-o', log, '-e',
                 'trace=execve,fork,vfork,clone,clone3', '-e', 'signal=none']
                + a.cmd, stdin=fin, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, env=env(), start_new_session=True)
            try:
                p.wait(timeout=a.timeout)
            except subprocess.TimeoutExpired:
                pass
            kill_group(p.pid)
            p.wait()
        execs, procs = 0, set()
        with open(log, errors='replace') as f:
            for line in f:
                # "PID syscall(...) = R"; the PID is missing while only one
                # process is traced; a call may be split into "<unfinished
                # ...>" and "<... execve resumed>...".
                m = re.match(r'(?:(\d+)\s+)?(.*)', line.strip())
                pid, rest = int(m.group(1) or 0), m.group(2)
                if re.match(r'(execve\(|<\.\.\. execve resumed>)', rest) and \
                        re.search(r'= 0$', rest):
                    execs += 1
                    procs.add(pid)
                elif re.match(r'(fork|vfork|clone3?)\(', rest):
                    # a new process, not a thread
                    if 'CLONE_THREAD' not in rest:
                        r = re.search(r'= (\d+)', rest)
                        if r:
                            procs.add(int(r.group(1)))
    # 0 means strace saw nothing (it could not trace): unknown, not zero
    print('EXECS=%s' % (execs or '?'))
    print('PROCS=%s' % (len(procs) or '?'))


def cmd_listen(a):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    filler = []
    if a.mode == 'silent':
        s.listen(128)
    else:
        s.listen(0)
        port = s.getsockname()[1]
        # Fill the accept queue: once a connect times out, SYNs are dropped.
        for _ in range(8):
            c = socket.socket()
            c.settimeout(0.3)
            try:
                c.connect(('127.0.0.1', port))
                filler.append(c)
            except OSError:
                c.close()
                break
        else:
            sys.exit('syndrop: the accept queue never filled up')
    with open(a.port_file + '.tmp', 'w') as f:
        f.write('%d\n' % s.getsockname()[1])
    os.rename(a.port_file + '.tmp', a.port_file)
    time.sleep(a.life)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest='what', required=True)
    t = sub.add_parser('time')
    t.add_argument('--runs', type=int, required=True)
    t.add_argument('--input', required=True)
    t.add_argument('--expect', help='the expected stdout (default: any)')
    t.add_argument('--timeout', type=float, default=60)
    t.add_argument('--max-total', type=float, default=120)
    t.add_argument('cmd', nargs='+')
    e = sub.add_parser('execs')
    e.add_argument('--input', required=True)
    e.add_argument('--timeout', type=float, default=60)
    e.add_argument('cmd', nargs='+')
    li = sub.add_parser('listen')
    li.add_argument('--mode', choices=('silent', 'syndrop'), required=True)
    li.add_argument('--port-file', required=True)
    li.add_argument('--life', type=float, default=900)
    a = ap.parse_args()
    {'time': cmd_time, 'execs': cmd_execs, 'listen': cmd_listen}[a.what](a)


if __name__ == '__main__':
    main()
