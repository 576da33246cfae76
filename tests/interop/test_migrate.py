#!/usr/bin/env python3
"""Moving from an installed Tang to tetherd with `tether-keys migrate`
loses no binding.

A Tang key directory is made the Debian way (tangd-keygen, owner _tang,
mode 0750) and served by Debian's tangd (socket activated, one process per
connection). `clevis encrypt tang` binds a secret to it, tang's own
tangd-rotate-keys rotates the keys, and a second secret is bound to the new
keys. `tether-keys migrate --from TANG DIR` copies the keys into a fresh
directory; tangd is replaced by tetherd on the same URL, serving the copy,
and `clevis decrypt` gives back both secrets: the first through the
rotated (hidden) key. Also:
  * the copies: every advertised and rotated key file under its own name,
    the same key, mode 0440, owned by _tether (or, without that user, by
    the directory's owner), the directory 0750; Tang's directory is
    untouched, byte for byte, owner and mode;
  * a second run is harmless and changes nothing;
  * refused, with nothing written: a source that does not exist, a source
    the user may not read (run as nobody: the message says to run as root),
    a destination holding a different key under one of Tang's names, a
    destination holding keys of its own;
  * tetherd started as another user on Tang's directory says which user it
    runs as, who owns the directory and which command migrates it;
  * the temporary files a killed run left in the destination
    (.tether-new-*.tmp, regular files only, never through a link) are
    removed; a destination, or a key file already in it, that the keys'
    owner could not read is refused, naming the chown that fixes it.
"""

import json
import os
import pwd
import stat
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import peers  # noqa: E402
import tlib  # noqa: E402
from peers import clevis_decrypt, clevis_encrypt_tang, keys_where, load_keys  # noqa: E402
from tlib import log  # noqa: E402

NOBODY = 65534


def user(name):
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def snapshot(d):
    """Everything of directory d a migration must not change: per file, its
    bytes, mode, owner and inode; the directory's own mode and owner."""
    st = os.stat(d)
    out = {'.': (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)}
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        st = os.lstat(p)
        with open(p, 'rb') as f:
            out[name] = (f.read(), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_ino)
    return out


def migrate(*args, check=True, as_nobody=False):
    cmd = [peers.TETHER_KEYS, 'migrate'] + list(args)
    if as_nobody:
        cmd = ['setpriv', '--reuid=%d' % NOBODY, '--regid=%d' % NOBODY, '--clear-groups'] + cmd
    cp = peers.run(cmd, check=check)
    return cp.returncode, cp.stdout.decode(), cp.stderr.decode()


def tang_dir(h):
    """A key directory as Debian's tang has it: tangd-keygen's files, owner
    _tang (when the user exists and we may give it away), mode 0750."""
    d = h.mkdir('tang')
    peers.tang_keygen(d)
    return d


def debianize(d):
    tang = user('_tang')
    if tang and os.geteuid() == 0:
        for name in os.listdir(d):
            os.chown(os.path.join(d, name), tang.pw_uid, tang.pw_gid)
        os.chown(d, tang.pw_uid, tang.pw_gid)
    os.chmod(d, 0o750)


def thp_of(kd):
    return tlib.tether_keys('show', kd).stdout.split()[0]


def check_copies(src, dst):
    names = sorted(n for n in os.listdir(src) if n.endswith('.jwk'))
    assert sorted(os.listdir(dst)) == names, (
        'migrated directory holds %r, Tang\'s %r' % (sorted(os.listdir(dst)), names))
    assert any(n.startswith('.') for n in names), 'no rotated key to migrate: the test is broken'
    tether = user('_tether')
    dst_st = os.stat(dst)
    assert stat.S_IMODE(dst_st.st_mode) == 0o750, '%s has mode %o' % (dst, stat.S_IMODE(dst_st.st_mode))
    for n in names:
        with open(os.path.join(src, n)) as f:
            want = json.load(f)
        with open(os.path.join(dst, n)) as f:
            got = json.load(f)
        assert got == want, '%s: the copy holds another key' % n
        st = os.stat(os.path.join(dst, n))
        assert stat.S_IMODE(st.st_mode) == 0o440, '%s has mode %o' % (n, stat.S_IMODE(st.st_mode))
        owner = tether.pw_uid if tether and os.geteuid() == 0 else dst_st.st_uid
        assert st.st_uid == owner, '%s is owned by uid %d, not %d' % (n, st.st_uid, owner)


def main():
    peers.require('tetherd', 'tether-keys', 'tangd', 'tangd-keygen', 'tangd-rotate-keys',
                  'systemd-socket-activate', 'clevis', 'jose')
    root = os.geteuid() == 0
    with peers.Harness() as h:
        # Others may reach the directories below, as /var/lib is: the
        # permission checks then hit Tang's directory itself.
        os.chmod(h.tmp, 0o755)
        tang = tang_dir(h)
        debianize(tang)
        tangd = h.tangd(tang)
        url = tangd.url

        log('1. clevis binds to tangd, tang rotates, clevis binds again')
        old_secret, new_secret = b'bound before the rotation\n', b'bound after the rotation\n'
        jwe_old = clevis_encrypt_tang({'url': url, 'thp': thp_of(tang)}, old_secret)
        peers.run([peers.TANGD_ROTATE, '-d', tang])
        debianize(tang)
        keys = load_keys(tang)
        assert len(keys_where(keys, hidden=True)) == 2 and len(keys_where(keys, hidden=False)) == 2, keys
        jwe_new = clevis_encrypt_tang({'url': url, 'thp': thp_of(tang)}, new_secret)
        assert clevis_decrypt(jwe_old) == old_secret and clevis_decrypt(jwe_new) == new_secret, \
            'control: tangd does not decrypt its own bindings'
        before = snapshot(tang)

        log('2. tetherd as another user on Tang\'s directory explains itself')
        if root:
            cp = peers.run(['setpriv', '--reuid=%d' % NOBODY, '--regid=%d' % NOBODY, '--clear-groups',
                            peers.TETHERD, '-a', tlib.HOST, '-p', str(tlib.free_port()), tang], check=False, timeout=30)
            err = cp.stderr.decode()
            log('   ' + err.strip())
            assert cp.returncode == 1, 'tetherd exit %d' % cp.returncode
            for want in (tang, 'permission denied', 'runs as user', '(uid %d)' % NOBODY,
                         'tether-keys migrate --from %s' % tang):
                assert want in err, 'tetherd\'s message lacks %r:\n%s' % (want, err)
            if user('_tang'):
                assert 'owned by _tang' in err and 'mode 0750' in err, err
        else:
            log('   (not root: skipped)')

        log('3. tether-keys migrate into a fresh directory')
        dst = h.path('tether')
        rc, out, err = migrate('--from', tang, dst)
        log(out + err)
        assert 'copied: %s/' % dst in out, out
        for want in ('2 advertised, 2 rotated', 'systemctl disable --now tangd.socket',
                     'systemctl enable --now tetherd.socket'):
            assert want in out, 'migrate\'s output lacks %r' % want
        check_copies(tang, dst)
        assert snapshot(tang) == before, 'Tang\'s directory was changed'

        log('4. a second run changes nothing')
        copied = snapshot(dst)
        rc, out, err = migrate('--from', tang, dst)
        assert 'copied:' not in out and out.count('already there: %s/' % dst) == 4, out
        assert snapshot(dst) == copied, 'the second run changed the destination'
        assert snapshot(tang) == before, 'Tang\'s directory was changed'

        log('5. tetherd on the migrated directory, on tangd\'s URL: both bindings decrypt')
        port = tangd.port
        tangd.stop()
        teth = h.tetherd(dst, port=port)
        assert teth.url == url
        assert clevis_decrypt(jwe_old) == old_secret, 'the binding to the rotated key was lost'
        assert clevis_decrypt(jwe_new) == new_secret, 'the binding to the advertised key was lost'
        assert tlib.tether_keys('show', '--url', url, env=peers.clean_env()).stdout.split() == \
            tlib.tether_keys('show', tang).stdout.split(), 'tetherd advertises other keys than tangd did'
        teth.stop()

        log('6. refusals')
        missing = h.path('no-such-tang')
        rc, out, err = migrate('--from', missing, h.path('d-missing'), check=False)
        assert rc == 1 and missing in err and 'does not exist' in err, (rc, err)
        assert not os.path.exists(h.path('d-missing')), 'a directory was created for nothing'

        if root and os.stat(tang).st_uid != NOBODY:
            rc, out, err = migrate('--from', tang, h.path('d-denied'), check=False, as_nobody=True)
            log('   ' + err.strip())
            assert rc == 1 and tang in err and 'permission denied' in err and 'run as root' in err, (rc, err)
            assert not os.path.exists(h.path('d-denied')), 'a directory was created for nothing'
        else:
            log('   (unreadable source: not root, skipped)')

        # A different key under the name of Tang's advertised signing key.
        clash = h.mkdir('d-clash')
        sig = keys_where(load_keys(tang), signing=True, hidden=False)[0].file
        tlib.tether_keys('gen', clash, sig, 'other.jwk')
        os.unlink(os.path.join(clash, 'other.jwk'))
        clash_before = snapshot(clash)
        rc, out, err = migrate('--from', tang, clash, check=False)
        log('   ' + err.strip())
        assert rc == 1 and 'holds a different key' in err and sig in err and 'nothing was copied' in err, (rc, err)
        assert snapshot(clash) == clash_before, 'a refused migration changed the destination'

        # Keys of its own, e.g. a pair tetherd made on its first start.
        own = h.mkdir('d-own')
        tlib.tether_keys('gen', own)
        own_before = snapshot(own)
        rc, out, err = migrate('--from', tang, own, check=False)
        log('   ' + err.strip())
        assert rc == 1 and 'already holds key' in err and 'nothing was copied' in err, (rc, err)
        assert snapshot(own) == own_before, 'a refused migration changed the destination'

        # migrate runs as root over a directory Tang's user may write: a key
        # file that is a symbolic link (here to a key outside it) is refused.
        secret_key = h.path('root-only.jwk')
        peers.tang_keygen(h.mkdir('elsewhere'))
        elsewhere = h.path('elsewhere')
        os.rename(os.path.join(elsewhere, sorted(os.listdir(elsewhere))[0]), secret_key)
        linked = h.mkdir('t-link')
        for name in os.listdir(tang):
            with open(os.path.join(tang, name), 'rb') as f, open(os.path.join(linked, name), 'wb') as g:
                g.write(f.read())
        os.symlink(secret_key, os.path.join(linked, 'planted.jwk'))
        rc, out, err = migrate('--from', linked, h.path('d-link'), check=False)
        log('   ' + err.strip())
        assert rc == 1 and 'planted.jwk is a symbolic link' in err and 'nothing was copied' in err, (rc, err)
        assert not os.path.exists(h.path('d-link')), 'a refused migration created the destination'

        # A JWK that is no Tang key (a symmetric wrapping key) is refused too.
        os.unlink(os.path.join(linked, 'planted.jwk'))
        oct_jwk = peers.run(['jose', 'jwk', 'gen', '-i', '{"kty":"oct","bytes":32,"key_ops":["wrapKey"]}']).stdout
        with open(os.path.join(linked, 'oct.jwk'), 'w') as f:
            f.write(oct_jwk if isinstance(oct_jwk, str) else oct_jwk.decode())
        rc, out, err = migrate('--from', linked, h.path('d-oct'), check=False)
        log('   ' + err.strip())
        assert rc == 1 and 'oct.jwk is a JWK that neither signs nor derives' in err, (rc, err)
        assert not os.path.exists(h.path('d-oct')), 'a refused migration created the destination'

        log('7. what a killed run left: its temporary files are removed, nothing else')
        stale = h.mkdir('d-stale')
        victim = h.path('victim')
        with open(victim, 'w') as f:
            f.write('not to be removed\n')
        tmp = '.tether-new-0123456789abcdef.tmp'
        with open(os.path.join(stale, tmp), 'w') as f:
            f.write('{"half":"written"}')
        os.symlink(victim, os.path.join(stale, '.tether-new-fedcba9876543210.tmp'))
        for other in ('.tether-new-0123.tmp', '.tether-new-0123456789ABCDEF.tmp', 'tether-new-0123456789abcdef.tmp'):
            with open(os.path.join(stale, other), 'w') as f:
                f.write('x')
        rc, out, err = migrate('--from', tang, stale)
        log(out + err)
        assert 'removed: 1 temporary file (.tether-new-*.tmp) an interrupted run had left in %s' % stale in out, out
        left = sorted(n for n in os.listdir(stale) if not n.endswith('.jwk'))
        assert left == sorted(['.tether-new-fedcba9876543210.tmp', '.tether-new-0123.tmp',
                               '.tether-new-0123456789ABCDEF.tmp', 'tether-new-0123456789abcdef.tmp']), left
        assert os.path.islink(os.path.join(stale, '.tether-new-fedcba9876543210.tmp')) and os.path.exists(victim)
        assert sorted(n for n in os.listdir(stale) if n.endswith('.jwk')) == \
            sorted(n for n in os.listdir(tang) if n.endswith('.jwk'))

        log('8. a destination the keys\' owner could not read is refused')
        if root:
            tether = user('_tether')
            owner = (tether.pw_uid, tether.pw_gid) if tether else (NOBODY, NOBODY)
            # The directory, owner only, but not readable by its owner.
            closed = h.mkdir('d-closed')
            os.chown(closed, *owner)
            os.chmod(closed, 0o300)
            closed_before = snapshot(closed)
            rc, out, err = migrate('--from', tang, closed, check=False)
            log('   ' + err.strip())
            fix = 'chown %d:%d %s && chmod 0750 %s' % (owner + (closed, closed))
            assert rc == 1 and 'could not read it: ' + fix in err and 'nothing was copied' in err, (rc, err)
            assert snapshot(closed) == closed_before, 'a refused migration changed the destination'
            os.chmod(closed, 0o750)
            rc, out, err = migrate('--from', tang, closed)
            assert 'copied: %s/' % closed in out, out
            # A key copied there by hand as root, mode 0400: tetherd would not
            # see it. The chown the message names fixes it.
            byhand = h.mkdir('d-byhand')
            os.chown(byhand, *owner)
            os.chmod(byhand, 0o750)
            name = sorted(n for n in os.listdir(tang) if n.endswith('.jwk'))[0]
            with open(os.path.join(tang, name), 'rb') as f, open(os.path.join(byhand, name), 'wb') as g:
                g.write(f.read())
            os.chmod(os.path.join(byhand, name), 0o400)
            byhand_before = snapshot(byhand)
            rc, out, err = migrate('--from', tang, byhand, check=False)
            log('   ' + err.strip())
            want = '%s/%s is owned by 0:0, mode 0400' % (byhand, name)
            fix = 'chown %d:%d %s/%s && chmod 0440 %s/%s' % (owner + (byhand, name, byhand, name))
            assert rc == 1 and want in err and fix in err and 'nothing was copied' in err, (rc, err)
            assert snapshot(byhand) == byhand_before, 'a refused migration changed the destination'
            os.chown(os.path.join(byhand, name), *owner)
            os.chmod(os.path.join(byhand, name), 0o440)
            rc, out, err = migrate('--from', tang, byhand)
            assert 'already there: %s/%s' % (byhand, name) in out, out
        else:
            log('   (not root: skipped)')

        assert snapshot(tang) == before, 'Tang\'s directory was changed'
    log('PASS')


if __name__ == '__main__':
    main()
