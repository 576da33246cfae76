#!/usr/bin/env python3
"""What `meson install` puts on a machine is what the documentation says,
and the installed units are valid for systemd.

    tests/deploy/install.py SOURCE_DIR BUILD_DIR

1. `meson install --no-rebuild --destdir TMP` into a fresh root, with
   stand-ins for systemd-sysusers, systemd-tmpfiles and systemctl first on
   PATH: none of them may run (a DESTDIR install is a package being built).
2. The installed files are exactly README's table under "Deployment
   (systemd)" (directory | files | what): each listed file is installed and
   each installed file is listed. Every path in a FILES section of an
   installed man page that tether provides (not /dev, /run) is installed, a
   unit named there is installed, and a /var path is created by the
   installed tmpfiles.d entry. The User= of every unit is created by the
   installed sysusers.d entry.
3. The tetherd sockets listen where Debian's tangd.socket does (port 80).
   `systemd-analyze verify` accepts every installed unit, warnings
   included. systemd 252 (Debian 12) with --root=DESTDIR looks for
   everything inside DESTDIR: sysinit.target, /bin/kill of ExecReload=, the
   man pages, none of which a DESTDIR holds, so it cannot pass there. Given
   unit files by path instead, verify resolves units they depend on from
   the host and checks that ExecStart= binaries exist and Documentation=
   man pages open, on the host: so it runs in a mount namespace of its own
   (unshare -m) where DESTDIR's prefix (/usr/local) is bind-mounted over the
   host's. The installed binaries and man pages are then where the units
   name them, and nothing of the host changes.
4. The install hook (systemd/install-hook.sh) is in meson's install plan,
   given the installed sysusers.d and tmpfiles.d entries; run with stand-in
   tools: into the live root it runs systemd-sysusers and
   systemd-tmpfiles --create on the installed entries, and daemon-reload
   only when systemd runs; with DESTDIR set it runs nothing; without the
   tools it says nothing and succeeds.

Exit 0 when all holds, 1 otherwise; 77 (skipped) without meson or
systemd-analyze."""

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

SKIP = 77
TOOLS = ('systemd-sysusers', 'systemd-tmpfiles', 'systemctl')
UNIT_SUFFIXES = ('.service', '.socket', '.path', '.target', '.timer', '.mount')

failures = []


def fail(msg):
    print('FAIL: ' + msg, flush=True)
    failures.append(msg)


def run(args, env=None, check=True, timeout=120):
    cp = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    if check and cp.returncode != 0:
        raise SystemExit('%s failed (exit %d):\n%s%s' % (' '.join(args), cp.returncode, cp.stdout, cp.stderr))
    return cp


def canonical(path):
    """Debian 12 has merged /usr: /lib is /usr/lib. libcryptsetup names its
    token directory /lib/..., systemd its unit directory /lib/systemd/system;
    the documentation may write either."""
    path = os.path.normpath(path)
    return '/usr' + path if path == '/lib' or path.startswith('/lib/') else path


def stubs(tmp):
    """Stand-ins for the install hook's tools that log their command lines."""
    d = os.path.join(tmp, 'stubs')
    os.makedirs(d)
    calls = os.path.join(tmp, 'calls')
    for t in TOOLS:
        with open(os.path.join(d, t), 'w') as f:
            f.write('#!/bin/sh\necho "%s $*" >> "%s"\n' % (t, calls))
        os.chmod(os.path.join(d, t), 0o755)
    return d, calls


def read_calls(calls):
    try:
        with open(calls) as f:
            lines = f.read().splitlines()
        os.unlink(calls)
        return lines
    except FileNotFoundError:
        return []


def installed_files(root):
    """{canonical path: the file under root} of every file installed."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in filenames:
            real = os.path.join(dirpath, n)
            out[canonical('/' + os.path.relpath(real, root))] = real
    return out


def readme_table(source, prefix):
    """Files of README's Deployment table, prefix /usr/local replaced by the
    build's."""
    with open(os.path.join(source, 'README.md')) as f:
        text = f.read()
    m = re.search(r'^## Deployment \(systemd\)\n(.*?)^## ', text, re.M | re.S)
    if not m:
        raise SystemExit('README.md has no "## Deployment (systemd)" section')
    rows = [l for l in m.group(1).splitlines() if l.startswith('| `')]
    if not rows:
        raise SystemExit('README.md\'s Deployment section has no table of installed files')
    files = set()
    for row in rows:
        cols = [c.strip() for c in row.strip('|').split('|')]
        d = re.findall(r'`([^`]+)`', cols[0])[0]
        if d == '/usr/local' or d.startswith('/usr/local/'):
            d = prefix + d[len('/usr/local'):]
        for name in re.findall(r'`([^`]+)`', cols[1]):
            files.add(canonical(os.path.join(d, name)))
    return files


def man_files_entries(path):
    """The paths that head the entries (.TP) of a man page's FILES section."""
    with open(path) as f:
        lines = f.read().splitlines()
    out, in_files, after_tp = [], False, False
    for line in lines:
        if line.startswith('.SH'):
            in_files = line.strip() == '.SH FILES'
            continue
        if not in_files:
            continue
        if line.startswith('.TP'):
            after_tp = True
            continue
        if after_tp:
            after_tp = False
            for word in re.split(r'[\s",]+', line.replace('\\-', '-')):
                if word.startswith('/') or word.endswith(UNIT_SUFFIXES):
                    out.append(word)
    return out


def config_fields(root, config_dir, keep):
    """The second field of each line of the files under config_dir whose
    first field keep accepts (tmpfiles.d: paths; sysusers.d 'u': users)."""
    found = set()
    for dirpath, _, names in os.walk(os.path.join(root, config_dir.lstrip('/'))):
        for n in names:
            with open(os.path.join(dirpath, n)) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) > 1 and keep(parts[0]):
                        found.add(parts[1])
    return found


def check_docs(source, root, prefix):
    installed = installed_files(root)
    documented = readme_table(source, prefix)
    for p in sorted(documented - installed.keys()):
        fail('README lists %s, which meson install does not install' % p)
    for p in sorted(installed.keys() - documented):
        fail('meson install installs %s, which README\'s Deployment table does not list' % p)

    units = {os.path.basename(p) for p in installed if '/systemd/system/' in p}
    tmpfiles = config_fields(root, prefix + '/lib/tmpfiles.d', lambda kind: not kind.startswith('#'))
    sysusers = config_fields(root, prefix + '/lib/sysusers.d', lambda kind: kind == 'u')
    mans = sorted(p for p in installed if '/share/man/' in p)
    if not mans:
        fail('no man page installed')
    checked = 0
    for man in mans:
        for entry in man_files_entries(installed[man]):
            checked += 1
            where = '%s FILES names %s' % (os.path.basename(man), entry)
            if entry.startswith(('/dev/', '/run/', '/proc/')):
                continue
            if not entry.startswith('/'):
                if entry not in units:
                    fail(where + ', which is not an installed unit')
            elif entry.startswith('/var/'):
                # Other programs' state (Tang's key directories, which
                # tether-keys migrate reads) is not ours to create.
                if 'tether' in entry and entry.rstrip('/') not in tmpfiles:
                    fail(where + ', which no installed tmpfiles.d entry creates')
            else:
                p = canonical(entry)
                if p.endswith('/') or entry.endswith('/'):
                    if not any(f.startswith(p.rstrip('/') + '/') for f in installed):
                        fail(where + ', but nothing is installed there')
                elif p not in installed:
                    fail(where + ', which is not installed')
    print('%d installed files as README lists them; %d FILES entries of %d man pages checked'
          % (len(installed), checked, len(mans)), flush=True)
    for p in sorted(installed):
        if '/systemd/system/' not in p:
            continue
        with open(installed[p]) as f:
            for user in re.findall(r'^User=(\S+)', f.read(), re.M):
                if user != 'root' and user not in sysusers:
                    fail('%s runs as %s, which the installed sysusers.d entry does not create'
                         % (os.path.basename(p), user))
    return sorted(real for p, real in installed.items() if '/systemd/system/' in p)


def listen_streams(path):
    with open(path) as f:
        return re.findall(r'^ListenStream=(\S+)', f.read(), re.M)


def check_ports(unit_files):
    """The sockets listen where Tang's do (Debian's tangd.socket: port 80),
    so that clients bound to http://server keep working after the switch."""
    tang = next((p for p in ('/lib/systemd/system/tangd.socket', '/usr/lib/systemd/system/tangd.socket')
                 if os.path.exists(p)), None)
    want = listen_streams(tang) if tang else ['80']
    for u in unit_files:
        if u.endswith('.socket') and os.path.basename(u).startswith('tetherd'):
            got = listen_streams(u)
            if got != want:
                fail('%s listens on %s, Tang\'s tangd.socket%s on %s' % (os.path.basename(u), got,
                     ' (%s)' % tang if tang else '', want))


def verify_units(root, prefix, unit_files):
    if not prefix.startswith('/usr/local') and not prefix.startswith('/opt'):
        # Bind-mounting DESTDIR/usr over /usr would hide systemd-analyze itself.
        fail('prefix %s: the units can be verified only with a prefix under /usr/local or /opt' % prefix)
        return
    staged = os.path.join(root, prefix.lstrip('/'))
    unshare = ['unshare', '--mount', '--propagation', 'private']
    if os.geteuid() != 0:
        unshare.append('--map-root-user')
    script = 'mkdir -p "$1" 2>/dev/null; mount --bind "$2" "$1" && shift 2 && exec systemd-analyze verify "$@"'
    cp = run(unshare + ['sh', '-c', script, 'verify', prefix, staged] + unit_files, check=False)
    out = (cp.stdout + cp.stderr).strip()
    print('systemd-analyze verify %s: exit %d%s' % (' '.join(os.path.basename(u) for u in unit_files),
                                                   cp.returncode, ('\n' + out) if out else ''), flush=True)
    # Unknown settings are only warnings to verify (exit 0): they count too.
    if cp.returncode != 0 or out:
        fail('systemd-analyze verify does not accept the installed units')


def check_hook(source, tmp, root, prefix, stub_dir, calls):
    hook = os.path.join(source, 'systemd', 'install-hook.sh')
    sysusers_conf = prefix + '/lib/sysusers.d/tether.conf'
    tmpfiles_conf = prefix + '/lib/tmpfiles.d/tether.conf'
    base = {k: v for k, v in os.environ.items() if k != 'DESTDIR'}
    base['PATH'] = stub_dir + ':' + os.environ.get('PATH', '/usr/bin:/bin')
    booted = os.path.join(tmp, 'booted')
    os.makedirs(booted)
    cases = [
        ('live root, systemd running', {'TETHER_INSTALL_BOOTED_DIR': booted},
         ['systemd-sysusers ' + sysusers_conf, 'systemd-tmpfiles --create ' + tmpfiles_conf,
          'systemctl daemon-reload']),
        ('live root, systemd not running', {'TETHER_INSTALL_BOOTED_DIR': os.path.join(tmp, 'absent')},
         ['systemd-sysusers ' + sysusers_conf, 'systemd-tmpfiles --create ' + tmpfiles_conf]),
        ('DESTDIR set', {'TETHER_INSTALL_BOOTED_DIR': booted, 'DESTDIR': root}, []),
    ]
    for what, extra, want in cases:
        cp = run(['sh', hook, sysusers_conf, tmpfiles_conf], env={**base, **extra}, check=False)
        got = read_calls(calls)
        if cp.returncode != 0 or got != want:
            fail('install hook, %s: exit %d, ran %r, expected %r\n%s' % (what, cp.returncode, got, want, cp.stderr))
    # No tool at all: a PATH with only what sh needs.
    bare = os.path.join(tmp, 'bare')
    os.makedirs(bare)
    for t in ('id', 'sh'):
        os.symlink(shutil.which(t), os.path.join(bare, t))
    cp = run(['sh', hook, sysusers_conf, tmpfiles_conf],
             env={**base, 'PATH': bare, 'TETHER_INSTALL_BOOTED_DIR': booted}, check=False)
    if cp.returncode != 0 or cp.stdout or cp.stderr:
        fail('install hook without the tools: exit %d, said %r' % (cp.returncode, cp.stdout + cp.stderr))


def registered_hooks(meson, build):
    """The install scripts meson runs after installing ([script, args...]),
    read from the build's install plan with meson's own Python and modules:
    no introspection command lists them."""
    with open(meson) as f:
        first = f.readline()
    python = first[2:].split()[0] if first.startswith('#!') else sys.executable
    code = ('import pickle, sys\n'
            'd = pickle.load(open(sys.argv[1], "rb"))\n'
            'print(__import__("json").dumps([s.cmd_args for s in d.install_scripts]))\n')
    cp = run([python, '-c', code, os.path.join(build, 'meson-private', 'install.dat')], check=False)
    if cp.returncode != 0:
        fail('cannot read meson\'s install plan: %s' % cp.stderr.strip()[-300:])
        return []
    return json.loads(cp.stdout)


def main():
    source, build = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    meson = shutil.which('meson')
    if not meson or not shutil.which('systemd-analyze') or not shutil.which('unshare'):
        print('SKIP: needs meson, systemd-analyze and unshare')
        return SKIP
    options = json.loads(run([meson, 'introspect', '--buildoptions', build]).stdout)
    prefix = next(o['value'] for o in options if o['name'] == 'prefix')
    tmp = tempfile.mkdtemp(prefix='tether-install-')
    try:
        root = os.path.join(tmp, 'root')
        stub_dir, calls = stubs(tmp)
        env = dict(os.environ, PATH=stub_dir + ':' + os.environ.get('PATH', '/usr/bin:/bin'))
        env.pop('DESTDIR', None)
        run([meson, 'install', '-C', build, '--no-rebuild', '--quiet', '--destdir', root], env=env)
        ran = read_calls(calls)
        if ran:
            fail('meson install --destdir ran %r: the install hook must do nothing with DESTDIR' % ran)
        unit_files = check_docs(source, root, prefix)
        if not unit_files:
            fail('no unit installed')
        else:
            check_ports(unit_files)
            verify_units(root, prefix, unit_files)
        want = [os.path.join(source, 'systemd', 'install-hook.sh'), prefix + '/lib/sysusers.d/tether.conf',
                 prefix + '/lib/tmpfiles.d/tether.conf']
        hooks = registered_hooks(meson, build)
        if want not in hooks:
            fail('meson install does not run %r; it runs %r' % (want, hooks))
        for conf in want[1:]:
            if not os.path.isfile(os.path.join(root, conf.lstrip('/'))):
                fail('the install hook is given %s, which is not installed' % conf)
        check_hook(source, tmp, root, prefix, stub_dir, calls)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print('%d failure(s)' % len(failures))
        return 1
    print('PASS: installed files as documented, units verified, install hook')
    return 0


if __name__ == '__main__':
    sys.exit(main())
