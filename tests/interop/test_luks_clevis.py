#!/usr/bin/env python3
"""`tether luks` against Debian's clevis-luks 19 on LUKS image files.

Servers: a tetherd and Debian's tangd (socket-activated), each with its own
key directory, on 127.0.0.1.  Images are 32 MiB sparse files made with
`cryptsetup luksFormat` (PBKDF2, 1000 iterations, so the tests stay fast);
the user's passphrase is in a key file.  No device-mapper: activation is
check-only (`cryptsetup open --test-passphrase`, `tether luks unlock -t`).

  1. clevis binds, tether reads: `clevis luks bind -y -k KEYFILE` with tang
     (tetherd; tangd), null, sss t=1 over tetherd+tangd, and sss with null
     and nested sss children.  `tether luks list` (all slots and -s N) prints
     the lines `clevis luks list` prints (clevis prints `unknown pin 'null'`
     and drops null children of sss: tether's null entries are checked
     separately, and everything else must be equal); `tether luks pass -s N`
     prints the bytes `clevis luks pass -s N` prints and they open slot N;
     `tether luks unlock -t N` exits 0.  Then `tether luks unbind -s N` of the
     clevis bindings leaves nothing `clevis luks list` shows.
  2. tether binds, clevis reads: tang (tetherd; tangd with -s 5 -t 7) and
     sss t=1 over tetherd+tangd.  `clevis luks list` prints exactly what
     `tether luks list` prints, `clevis luks pass` the bytes `tether luks
     pass` prints, and `clevis luks unbind -f` removes each binding: the
     original passphrase still opens slot 0, no keyslot but 0 and no token
     is left.
  3. token and keyslot shape: the LUKS2 JSON (`cryptsetup luksDump
     --dump-json-metadata`) of a clevis binding and a tether binding of the
     same pin/config: token key sets and value types (type "clevis",
     keyslots a list of strings, jwe exactly ciphertext/encrypted_key/iv/
     protected/tag, all strings), the decoded protected header's shape (sss
     children decoded too), and the keyslot (pbkdf2, hash, iterations, af,
     area) minus salt and offset; the iterations are printed.  On an argon2id
     image the user's keyslot 0 is left exactly as it was.
  4. rotation: clevis-made tang and sss bindings; `tether-keys rotate` and
     `tangd-rotate-keys`; `clevis luks report -q` and `tether luks report -q`
     both exit 1 and name the same thumbprints; `tether luks regen -q` fixes
     them: `clevis luks pass` still opens the slot, both reports exit 0, the
     slot/token layout is unchanged.  And `clevis luks regen -q` of a
     tether-made binding: `tether luks pass` opens the slot afterwards.
  5. LUKS1 (plain, and bound by clevis through luksmeta): every `tether luks`
     command exits 1 with "LUKS1 is not supported; convert with cryptsetup
     convert" and the image's bytes are unchanged.
  6. a full LUKS2 JSON area: once tether's sss token no longer fits, both
     tether and clevis refuse the same bind and the header is unchanged.
  7. edit: `tether luks edit` of a clevis binding (clevis lists the new
     config, clevis pass opens the slot, same slot/token); `clevis luks edit
     -c` of a tether binding (tether list/pass/unlock); `tether luks bind -e
     0` taking the key from a clevis-made token.  (clevis's own -e needs a
     libcryptsetup clevis token plugin, which Debian does not ship: not tried.)
  8. scripts written for clevis: the same command run by clevis and by
     tether, each on an image of its own, with the same outcome: bind with
     the passphrase on standard input (no -k) and with `-k -` given more
     than one line; bind -e with a luks2-keyring token (the passphrase in a
     session keyring, via add_key); regen -q after the server lost the key
     (404) with the passphrase on standard input (tether -y when nothing
     vouches for the new keys; tether -k KEYFILE); edit of an unchanged
     config exits 1, -f rebinds, and the same server needs no -y.

    test_luks_clevis.py [SECTION ...]     (default: all)

Needs TETHER, TETHERD and TETHER_KEYS in the environment (meson sets them),
cryptsetup, clevis-luks, tang, jose, luksmeta.  Loopback only.  Exit 0 pass,
1 fail, 77 when a peer program is missing or cryptsetup cannot format images
here.
"""

import hashlib
import json
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'lib'))
import peers  # noqa: E402
import tlib  # noqa: E402
from tlib import jwe_header, log, unb64u  # noqa: E402

TETHER = os.environ.get('TETHER', '')
CRYPTSETUP = shutil.which('cryptsetup') or '/usr/sbin/cryptsetup'
LUKSMETA = shutil.which('luksmeta')
PASSPHRASE = b'original passphrase'
LUKS1_MSG = 'LUKS1 is not supported; convert with cryptsetup convert'
THP_RE = re.compile(r'(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])')

FAILURES = []


def check(what, fn):
    """Run one check; record a failure and go on with the next one."""
    t0 = time.monotonic()
    try:
        fn()
    except (AssertionError, tlib.CmdError, OSError, ValueError, KeyError) as e:
        FAILURES.append((what, str(e) or repr(e)))
        log('FAIL %s (%.1fs)\n    %s' % (what, time.monotonic() - t0,
                                         (str(e) or repr(e)).replace('\n', '\n    ')[:3000]))
        return
    log('ok   %s (%.1fs)' % (what, time.monotonic() - t0))


# --------------------------------------------------------------------------
# commands

def sh(args, input=None, timeout=120):
    """Run without raising on a non-zero exit."""
    return peers.run(args, input=input, timeout=timeout, check=False)


def tether(*args, input=None):
    return sh([TETHER, 'luks'] + list(args), input=input)


def clevis(*args, input=None):
    return sh([peers.CLEVIS, 'luks'] + list(args), input=input)


def ok(cp, what=None):
    assert cp.returncode == 0, ('%s: exit %d\nstdout: %s\nstderr: %s'
                                % (what or ' '.join(cp.args), cp.returncode,
                                   cp.stdout.decode(errors='replace')[:1500],
                                   cp.stderr.decode(errors='replace')[:1500]))
    return cp


def out(cp):
    return cp.stdout.decode(errors='replace')


def dump(img):
    return json.loads(ok(sh([CRYPTSETUP, 'luksDump', '--dump-json-metadata',
                             img])).stdout)


def opens(img, key, slot=None):
    # The key alone: with tether's token plugin installed, cryptsetup would
    # otherwise try the tokens first.
    args = [CRYPTSETUP, 'open', '--test-passphrase', '--disable-external-tokens', '--key-file', '-', img]
    if slot is not None:
        args[2:2] = ['--key-slot', str(slot)]
    return sh(args, input=key).returncode == 0


def file_hash(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def layout(img):
    """keyslot ids and token id -> (type, keyslots)."""
    meta = dump(img)
    return (sorted(meta['keyslots'], key=int),
            {t: (v['type'], v.get('keyslots')) for t, v in meta['tokens'].items()})


class Env:
    """The servers, key directories and a key file shared by the sections."""

    def __init__(self, h):
        self.h = h
        self.keyfile = h.write('passphrase', PASSPHRASE)
        self.tether_kd = tlib.tether_gen(h.mkdir('tether-keys'))
        self.tang_kd = peers.tang_keygen(h.mkdir('tang-keys'))
        self.tetherd = h.tetherd(self.tether_kd)
        self.tangd = h.tangd(self.tang_kd)
        self.n = 0

    def image(self, name, luks_type='luks2', pbkdf='pbkdf2'):
        self.n += 1
        img = self.h.path('%02d-%s.img' % (self.n, name))
        with open(img, 'wb') as f:
            f.truncate(32 * 1024 * 1024)
        args = [CRYPTSETUP, 'luksFormat', '--batch-mode', '--type', luks_type]
        if pbkdf == 'pbkdf2':
            args += ['--pbkdf', 'pbkdf2', '--pbkdf-force-iterations', '1000']
        elif pbkdf == 'argon2id':
            args += ['--pbkdf', 'argon2id', '--pbkdf-memory', '32768',
                     '--pbkdf-force-iterations', '4']
        ok(sh(args + ['--key-file', self.keyfile, img]))
        return img

    def clevis_bind(self, img, pin, cfg, *extra):
        return ok(clevis('bind', '-y', '-d', img, '-k', self.keyfile, *extra,
                         pin, cfg if isinstance(cfg, str) else compact(cfg)))

    def tether_bind(self, img, pin, cfg, *extra):
        return ok(tether('bind', '-y', '-d', img, '-k', self.keyfile, *extra,
                         pin, cfg if isinstance(cfg, str) else compact(cfg)))


def compact(obj):
    return json.dumps(obj, separators=(',', ':'))


def tang_cfg(srv, suffix=''):
    return {'url': srv.url + suffix}


def list_lines(cp):
    return [l for l in out(cp).splitlines() if l.strip()]


def parse_line(line):
    """'N: PIN 'CFG'' -> (N, PIN, CFG text)."""
    m = re.match(r"^(\d+): (\S+) '(.*)'$", line)
    assert m, 'unexpected list line %r' % line
    return m.group(1), m.group(2), m.group(3)


def drop_null(cfg):
    """An sss config as clevis lists it: null children dropped."""
    if isinstance(cfg, dict):
        return {k: drop_null(v) for k, v in cfg.items() if k != 'null'}
    if isinstance(cfg, list):
        return [drop_null(v) for v in cfg]
    return cfg


def assert_clean(img, keyfile_bytes=PASSPHRASE):
    """Only the user's slot 0 left, no token, and the passphrase opens it."""
    slots, tokens = layout(img)
    assert slots == ['0'], 'keyslots left: %r' % slots
    assert tokens == {}, 'tokens left: %r' % tokens
    assert opens(img, keyfile_bytes, 0), 'the original passphrase no longer opens slot 0'


# --------------------------------------------------------------------------
# 1. clevis binds, tether reads

def compare_pass(img, slot):
    c = ok(clevis('pass', '-d', img, '-s', slot), 'clevis luks pass -s %s' % slot).stdout
    t = ok(tether('pass', '-d', img, '-s', slot), 'tether luks pass -s %s' % slot).stdout
    assert c, 'clevis luks pass printed nothing'
    assert t == c, ('slot %s: tether luks pass printed %r, clevis luks pass %r'
                    % (slot, t[:80], c[:80]))
    assert opens(img, t, slot), 'the passed key does not open slot %s' % slot
    return t


def section_clevis_binds(env):
    tetherd, tangd = env.tetherd, env.tangd
    # One image with three plain bindings; the sss ones on images of their
    # own (a LUKS2 JSON area of 12 KiB holds about two sss tokens).
    img = env.image('clevis-plain')
    sss_img = env.image('clevis-sss')
    mixed_img = env.image('clevis-sss-null')
    sss = {'t': 1, 'pins': {'tang': [tang_cfg(tetherd), tang_cfg(tangd)]}}
    mixed = {'t': 1, 'pins': {'null': {}, 'tang': [tang_cfg(tetherd)],
                              'sss': {'t': 1, 'pins': {'tang': [tang_cfg(tangd)],
                                                       'null': [{}]}}}}

    def bind_all():
        env.clevis_bind(img, 'tang', tang_cfg(tetherd))           # slot 1
        env.clevis_bind(img, 'tang', tang_cfg(tangd))             # slot 2
        # clevis luks bind accepts the null pin (no refusal in clevis 19).
        env.clevis_bind(img, 'null', '{}')                        # slot 3
        env.clevis_bind(sss_img, 'sss', sss)                      # slot 1
        env.clevis_bind(mixed_img, 'sss', mixed)                  # slot 1
        assert layout(img)[0] == ['0', '1', '2', '3'], layout(img)
    check('1 clevis luks bind: tang (tetherd, tangd), null, sss, sss with null children',
          bind_all)

    def plain_list():
        c = list_lines(ok(clevis('list', '-d', img)))
        t = list_lines(ok(tether('list', '-d', img)))
        want = ["1: tang '%s'" % compact(tang_cfg(tetherd)),
                "2: tang '%s'" % compact(tang_cfg(tangd))]
        assert c[:2] == want, 'clevis luks list: %r' % c
        # clevis 19 has no case for null in its list: "unknown pin 'null'"
        assert c[2:] == ["3: unknown pin 'null'"], 'clevis luks list: %r' % c
        assert t == want + ["3: null '{}'"], (
            'tether luks list: %r\nclevis luks list: %r' % (t, c))
        for s in ('1', '2'):
            cs = list_lines(ok(clevis('list', '-d', img, '-s', s)))
            ts = list_lines(ok(tether('list', '-d', img, '-s', s)))
            assert ts == cs == [want[int(s) - 1]], (s, ts, cs)
    check('1 list, tang: tether luks list == clevis luks list (all slots and -s N)',
          plain_list)

    def sss_list():
        c = out(ok(clevis('list', '-d', sss_img)))
        t = out(ok(tether('list', '-d', sss_img)))
        want = "1: sss '%s'\n" % compact(sss)
        assert c.strip() == want.strip(), 'clevis luks list: %r' % c
        assert t == want, 'tether luks list: %r, clevis: %r' % (t, c)
    check('1 list, sss t=1 over tetherd+tangd: identical lines', sss_list)

    def mixed_list():
        c = list_lines(ok(clevis('list', '-d', mixed_img)))
        t = list_lines(ok(tether('list', '-d', mixed_img)))
        assert len(c) == len(t) == 1, (c, t)
        cn, cp, cc = parse_line(c[0])
        tn, tp, tc = parse_line(t[0])
        assert (cn, cp) == (tn, tp) == ('1', 'sss'), (c, t)
        cc, tc = json.loads(cc), json.loads(tc)
        # tether lists the null children as well; the rest must be equal.
        assert tc['pins'].get('null') == [{}], 'tether: %r' % tc
        assert tc['pins']['sss']['pins'].get('null') == [{}], 'tether: %r' % tc
        assert drop_null(tc) == cc, ('without the null children tether lists '
                                     '%s, clevis %s' % (compact(drop_null(tc)),
                                                        compact(cc)))
        assert tc['pins']['tang'] == cc['pins']['tang'] == [tang_cfg(tetherd)]
    check('1 list, sss with null and nested sss: tang/sss parts equal clevis, '
          'null children listed by tether', mixed_list)

    for (im, slot, what) in ((img, '1', 'tang tetherd'), (img, '2', 'tang tangd'),
                             (img, '3', 'null'), (sss_img, '1', 'sss'),
                             (mixed_img, '1', 'sss with null')):
        def pass_unlock(im=im, slot=slot):
            compare_pass(im, slot)
            ok(tether('unlock', '-d', im, '-t', slot), 'tether luks unlock -t %s' % slot)
        check('1 %s: tether luks pass == clevis luks pass, opens the slot; '
              'tether luks unlock -t exits 0' % what, pass_unlock)

    def unlock_any():
        ok(tether('unlock', '-d', img, '-t', '-1'), 'tether luks unlock -t -1')
    check('1 tether luks unlock -t -1 (any binding) exits 0', unlock_any)

    def tether_unbinds_clevis():
        for s in ('3', '2', '1'):
            ok(tether('unbind', '-d', img, '-s', s), 'tether luks unbind -s %s' % s)
        ok(tether('unbind', '-d', sss_img, '-s', '1', '-f'))
        for im in (img, sss_img):
            assert list_lines(ok(clevis('list', '-d', im))) == []
            assert_clean(im)
    check('1 tether luks unbind of clevis bindings: clevis lists nothing, '
          'only slot 0 left, passphrase opens', tether_unbinds_clevis)


# --------------------------------------------------------------------------
# 2. tether binds, clevis reads

def section_tether_binds(env):
    tetherd, tangd = env.tetherd, env.tangd
    img = env.image('tether-plain')
    sss_img = env.image('tether-sss')
    sss = {'t': 1, 'pins': {'tang': [tang_cfg(tetherd), tang_cfg(tangd)]}}

    def bind_all():
        env.tether_bind(img, 'tang', tang_cfg(tetherd))
        env.tether_bind(img, 'tang', tang_cfg(tangd), '-s', '5', '-t', '7')
        env.tether_bind(sss_img, 'sss', sss)
        slots, tokens = layout(img)
        assert slots == ['0', '1', '5'], slots
        assert tokens['7'] == ('clevis', ['5']), tokens
    check('2 tether luks bind: tang (tetherd; tangd -s 5 -t 7), sss t=1', bind_all)

    def lists():
        for im, want in ((img, ["1: tang '%s'" % compact(tang_cfg(tetherd)),
                                "5: tang '%s'" % compact(tang_cfg(tangd))]),
                         (sss_img, ["1: sss '%s'" % compact(sss)])):
            t = out(ok(tether('list', '-d', im)))
            c = out(ok(clevis('list', '-d', im)))
            assert t == ''.join(l + '\n' for l in want), 'tether: %r' % t
            assert c.rstrip('\n') == t.rstrip('\n'), (
                'clevis luks list %r != tether luks list %r' % (c, t))
            for line in want:
                s = line.split(':')[0]
                cs = list_lines(ok(clevis('list', '-d', im, '-s', s)))
                assert cs == [line], (s, cs)
    check('2 clevis luks list == tether luks list', lists)

    for im, slot, what in ((img, '1', 'tang tetherd'), (img, '5', 'tang tangd'),
                           (sss_img, '1', 'sss')):
        check('2 %s: clevis luks pass == tether luks pass, opens the slot' % what,
              lambda im=im, slot=slot: compare_pass(im, slot))

    def clevis_unbinds():
        for im, slots in ((img, ('5', '1')), (sss_img, ('1',))):
            for s in slots:
                ok(clevis('unbind', '-d', im, '-s', s, '-f'),
                   'clevis luks unbind -s %s -f' % s)
            assert_clean(im)
            assert list_lines(ok(tether('list', '-d', im))) == []
    check('2 clevis luks unbind -f: passphrase opens slot 0, no keyslot/token left',
          clevis_unbinds)


# --------------------------------------------------------------------------
# 3. token and keyslot shape

def shape(v):
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return ['list', len(v), sorted({json.dumps(shape(x), sort_keys=True)
                                        for x in v})]
    return type(v).__name__


def header_shape(protected):
    hdr = json.loads(unb64u(protected))
    return shape(decode_children(hdr))


def decode_children(hdr):
    """Replace sss children (compact JWEs) by their decoded headers."""
    c = hdr.get('clevis', {})
    if c.get('pin') == 'sss':
        c['sss']['jwe'] = [decode_children(jwe_header(j.encode()))
                           for j in c['sss']['jwe']]
    return hdr


def keyslot_sans_random(ks):
    ks = json.loads(json.dumps(ks))
    ks['kdf'].pop('salt', None)
    ks['area'].pop('offset', None)
    return ks


def token_of(meta, slot):
    found = [t for t in meta['tokens'].values() if slot in t.get('keyslots', [])]
    assert len(found) == 1, 'slot %s: tokens %r' % (slot, found)
    return found[0]


def compare_tokens(img, cslot, tslot, what):
    meta = dump(img)
    ct, tt = token_of(meta, cslot), token_of(meta, tslot)
    for name, t, slot in (('clevis', ct, cslot), ('tether', tt, tslot)):
        assert t['type'] == 'clevis', (name, t['type'])
        assert t['keyslots'] == [slot], (name, t['keyslots'])
        assert all(isinstance(s, str) for s in t['keyslots']), (name, t['keyslots'])
        assert sorted(t['jwe']) == ['ciphertext', 'encrypted_key', 'iv',
                                    'protected', 'tag'], (name, sorted(t['jwe']))
        assert all(isinstance(x, str) for x in t['jwe'].values()), name
    assert shape(tt) == shape(ct), ('token shapes differ:\n tether %s\n clevis %s'
                                    % (shape(tt), shape(ct)))
    assert tt['jwe']['encrypted_key'] == ct['jwe']['encrypted_key'], (
        'encrypted_key: tether %r, clevis %r' % (tt['jwe']['encrypted_key'],
                                                 ct['jwe']['encrypted_key']))
    th, ch = header_shape(tt['jwe']['protected']), header_shape(ct['jwe']['protected'])
    assert th == ch, ('protected header shapes differ:\n tether %s\n clevis %s'
                      % (json.dumps(th, sort_keys=True), json.dumps(ch, sort_keys=True)))
    cks = meta['keyslots'][cslot]
    tks = meta['keyslots'][tslot]
    log('     %s keyslot kdf: clevis slot %s %s/%s/%s iterations, tether slot %s '
        '%s/%s/%s iterations; user slot 0: %s'
        % (what, cslot, cks['kdf']['type'], cks['kdf'].get('hash'),
           cks['kdf'].get('iterations'), tslot, tks['kdf']['type'],
           tks['kdf'].get('hash'), tks['kdf'].get('iterations'),
           {k: v for k, v in meta['keyslots']['0']['kdf'].items() if k != 'salt'}))
    assert tks['kdf']['type'] == cks['kdf']['type'] == 'pbkdf2', (tks['kdf'], cks['kdf'])
    assert keyslot_sans_random(tks) == keyslot_sans_random(cks), (
        'keyslots differ:\n tether %s\n clevis %s'
        % (keyslot_sans_random(tks), keyslot_sans_random(cks)))
    # Both keyslots hang off the volume key digest.
    for d in meta['digests'].values():
        if '0' in d['keyslots']:
            assert cslot in d['keyslots'] and tslot in d['keyslots'], d


def section_shape(env):
    tetherd, tangd = env.tetherd, env.tangd

    def tang_shape():
        img = env.image('shape-tang')
        env.clevis_bind(img, 'tang', tang_cfg(tetherd))
        env.tether_bind(img, 'tang', tang_cfg(tetherd))
        compare_tokens(img, '1', '2', 'tang')
    check('3 tang token/keyslot JSON: tether == clevis in shape', tang_shape)

    def sss_shape():
        img = env.image('shape-sss')
        cfg = {'t': 1, 'pins': {'tang': [tang_cfg(tetherd), tang_cfg(tangd)]}}
        env.clevis_bind(img, 'sss', cfg)
        env.tether_bind(img, 'sss', cfg)
        compare_tokens(img, '1', '2', 'sss')
    check('3 sss token/keyslot JSON (children decoded): tether == clevis in shape',
          sss_shape)

    def null_shape():
        img = env.image('shape-null')
        env.clevis_bind(img, 'null', '{}')
        env.tether_bind(img, 'null', '{}')
        compare_tokens(img, '1', '2', 'null')
    check('3 null token/keyslot JSON: tether == clevis in shape', null_shape)

    def argon2_user_slot():
        img = env.image('shape-argon2', pbkdf='argon2id')
        before = dump(img)['keyslots']['0']
        env.clevis_bind(img, 'tang', tang_cfg(tetherd))
        env.tether_bind(img, 'tang', tang_cfg(tetherd))
        after = dump(img)['keyslots']['0']
        assert after == before, 'user keyslot 0 changed: %s -> %s' % (before, after)
        compare_tokens(img, '1', '2', 'tang on argon2id')
    check('3 argon2id volume: bindings pbkdf2 like clevis, user slot 0 untouched',
          argon2_user_slot)


# --------------------------------------------------------------------------
# 4. rotation: report and regen

def report_thps(cp):
    return set(THP_RE.findall(out(cp)))


def section_rotation(env):
    h = env.h
    # Servers of their own: rotating them does not disturb other sections.
    kd = tlib.tether_gen(h.mkdir('rot-tether-keys'))
    tkd = peers.tang_keygen(h.mkdir('rot-tang-keys'))
    srv, tsrv = h.tetherd(kd), h.tangd(tkd)
    img = env.image('rotation')
    sss = {'t': 1, 'pins': {'tang': [tang_cfg(srv), tang_cfg(tsrv)]}}
    sss_img = env.image('rotation-sss')
    state = {}

    def bind():
        env.clevis_bind(img, 'tang', tang_cfg(srv))          # slot 1, clevis
        env.tether_bind(img, 'tang', tang_cfg(srv))          # slot 2, tether
        env.clevis_bind(sss_img, 'sss', sss)                 # slot 1, clevis
        for im, s in ((img, '1'), (img, '2'), (sss_img, '1')):
            ok(clevis('report', '-d', im, '-s', s, '-q'), 'clevis report before')
            ok(tether('report', '-d', im, '-s', s, '-q'), 'tether report before')
        state['key1'] = ok(clevis('pass', '-d', img, '-s', '1')).stdout
        state['layout'] = layout(img)
        state['sss_layout'] = layout(sss_img)
        state['list'] = out(ok(clevis('list', '-d', img)))
        state['sss_list'] = out(ok(clevis('list', '-d', sss_img)))
    check('4 bindings on fresh keys: clevis and tether report -q exit 0', bind)
    if 'key1' not in state:
        return

    def rotate():
        old = {k.thp() for k in peers.load_keys(kd)}
        old_tang = {k.thp() for k in peers.load_keys(tkd)}
        tlib.tether_keys('rotate', kd)
        peers.run([peers.TANGD_ROTATE, '-d', tkd])
        time.sleep(0.3)
        for im, s, want in ((img, '1', old), (sss_img, '1', old | old_tang)):
            c = clevis('report', '-d', im, '-s', s, '-q')
            t = tether('report', '-d', im, '-s', s, '-q')
            assert c.returncode == 1, 'clevis report exit %d: %s' % (c.returncode, out(c))
            assert t.returncode == 1, 'tether report exit %d: %s %s' % (
                t.returncode, out(t), t.stderr.decode())
            assert report_thps(c) == want, ('clevis names %s, rotated %s'
                                            % (report_thps(c), want))
            assert report_thps(t) == report_thps(c), (
                'tether report names %s, clevis report %s\ntether said: %s'
                % (report_thps(t), report_thps(c), out(t)))
    check('4 after tether-keys rotate / tangd-rotate-keys: both reports exit 1 '
          'and name the same rotated thumbprints', rotate)

    def regen():
        for im, s in ((img, '1'), (sss_img, '1')):
            ok(tether('regen', '-d', im, '-s', s, '-q'), 'tether luks regen -s %s' % s)
            ok(tether('report', '-d', im, '-s', s, '-q'), 'tether report after regen')
            ok(clevis('report', '-d', im, '-s', s, '-q'), 'clevis report after regen')
            key = ok(clevis('pass', '-d', im, '-s', s), 'clevis pass after regen').stdout
            assert opens(im, key, s), 'clevis luks pass after regen does not open slot ' + s
            assert ok(tether('pass', '-d', im, '-s', s)).stdout == key
        assert layout(img) == state['layout'], (layout(img), state['layout'])
        assert layout(sss_img) == state['sss_layout'], layout(sss_img)
        assert out(ok(clevis('list', '-d', img))) == state['list']
        assert out(ok(clevis('list', '-d', sss_img))) == state['sss_list']
        log('     tether regen kept the slot key: %s'
            % (ok(clevis('pass', '-d', img, '-s', '1')).stdout == state['key1']))
    check('4 tether luks regen of clevis bindings: clevis pass works, both '
          'reports exit 0, layout unchanged', regen)

    def clevis_regen_of_tether():
        r = clevis('report', '-d', img, '-s', '2', '-q')
        assert r.returncode == 1, 'tether binding on rotated keys: clevis report exit 0'
        ok(clevis('regen', '-d', img, '-s', '2', '-q'), 'clevis luks regen -s 2 -q')
        ok(tether('report', '-d', img, '-s', '2', '-q'), 'tether report after clevis regen')
        key = ok(tether('pass', '-d', img, '-s', '2')).stdout
        assert opens(img, key, 2), 'tether luks pass after clevis regen does not open slot 2'
        ok(tether('unlock', '-d', img, '-t', '2'))
    check('4 clevis luks regen of a tether binding: tether pass/unlock/report work',
          clevis_regen_of_tether)


# --------------------------------------------------------------------------
# 5. LUKS1

def section_luks1(env):
    cfg = compact(tang_cfg(env.tetherd))
    plain = env.image('luks1', luks_type='luks1')
    bound = env.image('luks1-clevis', luks_type='luks1')

    def clevis_luks1():
        env.clevis_bind(bound, 'tang', cfg)
        assert re.search(r'^1\s+active\s+cb6e8904-81ff-40da-a84a-07ab9ab5715e',
                         out(ok(sh([LUKSMETA, 'show', '-d', bound]))), re.M)
    check('5 clevis luks bind on LUKS1 (luksmeta)', clevis_luks1)

    def refused():
        for img in (plain, bound):
            before = file_hash(img)
            cmds = [['list', '-d', img],
                    ['bind', '-y', '-d', img, '-k', env.keyfile, 'tang', cfg],
                    ['bind', '-y', '-f', '-d', img, '-k', env.keyfile, 'tang', cfg],
                    ['pass', '-d', img, '-s', '1'],
                    ['unbind', '-d', img, '-s', '1', '-f'],
                    ['unlock', '-d', img, '-t', '1'],
                    ['regen', '-d', img, '-s', '1', '-q'],
                    ['report', '-d', img, '-s', '1', '-q'],
                    ['edit', '-d', img, '-s', '1', '-c', cfg, '-y']]
            for c in cmds:
                r = tether(*c)
                assert r.returncode == 1, 'tether luks %s: exit %d' % (c[0], r.returncode)
                assert LUKS1_MSG in r.stderr.decode(), (
                    'tether luks %s: stderr %r' % (c[0], r.stderr.decode()))
                assert file_hash(img) == before, (
                    'tether luks %s changed the LUKS1 image %s' % (c[0], img))
    check('5 LUKS1 (plain, clevis-bound): every tether luks command exits 1 with '
          '"%s", image bytes unchanged' % LUKS1_MSG, refused)


# --------------------------------------------------------------------------
# 6. the JSON area runs full

def section_full(env):
    def full():
        img = env.image('full')
        cfg = compact({'t': 1, 'pins': {'tang': [tang_cfg(env.tetherd),
                                                 tang_cfg(env.tangd)]}})
        n = 0
        for _ in range(12):
            before, h0 = layout(img), file_hash(img)
            r = tether('bind', '-y', '-d', img, '-k', env.keyfile, 'sss', cfg)
            if r.returncode != 0:
                err = r.stderr.decode()
                assert r.returncode == 1, 'exit %d: %s' % (r.returncode, err)
                assert layout(img) == before, 'failed bind left %r' % (layout(img),)
                assert file_hash(img) == h0, 'failed tether bind changed the image'
                break
            n += 1
        else:
            raise AssertionError('12 sss bindings fitted in a 16 KiB LUKS2 header?')
        assert n >= 1, 'not even one sss binding fitted: %s' % err
        log('     %d sss binding(s) fitted; tether then said: %s' % (n, err.strip()))
        h0 = file_hash(img)
        c = clevis('bind', '-y', '-d', img, '-k', env.keyfile, 'sss', cfg)
        assert c.returncode != 0, 'clevis fitted a binding tether refused'
        assert file_hash(img) == h0, 'failed clevis bind changed the image'
        for s in range(1, n + 1):
            ok(tether('unlock', '-d', img, '-t', str(s)))
        assert opens(img, PASSPHRASE, 0)
    check('6 full LUKS2 JSON area: tether and clevis both refuse, header unchanged',
          full)


# --------------------------------------------------------------------------
# 7. edit both ways; bind -e with a clevis token

def section_edit(env):
    tetherd, tangd = env.tetherd, env.tangd
    img = env.image('edit')
    sss = {'t': 1, 'pins': {'tang': [tang_cfg(tetherd), tang_cfg(tangd)]}}

    def tether_edits_clevis():
        env.clevis_bind(img, 'tang', tang_cfg(tetherd))       # slot 1
        key = ok(clevis('pass', '-d', img, '-s', '1')).stdout
        before = layout(img)
        ok(tether('edit', '-d', img, '-s', '1', '-c', compact(tang_cfg(tangd)), '-y'),
           'tether luks edit')
        assert list_lines(ok(clevis('list', '-d', img))) == [
            "1: tang '%s'" % compact(tang_cfg(tangd))], out(clevis('list', '-d', img))
        assert layout(img) == before, (layout(img), before)
        k2 = ok(clevis('pass', '-d', img, '-s', '1'), 'clevis pass after tether edit').stdout
        assert opens(img, k2, 1)
        log('     tether edit kept the slot key: %s' % (k2 == key))
    check('7 tether luks edit of a clevis binding: clevis list shows the new '
          'config, clevis pass opens the slot', tether_edits_clevis)

    def clevis_edits_tether():
        if not shutil.which('jq'):
            log('     (jq missing: clevis luks edit not tried)')
            return
        env.tether_bind(img, 'sss', {'t': 1, 'pins': {'tang': [tang_cfg(tetherd)]}},
                        '-s', '2')
        ok(clevis('edit', '-d', img, '-s', '2', '-c', compact(sss)), 'clevis luks edit')
        t = list_lines(ok(tether('list', '-d', img, '-s', '2')))
        assert t == ["2: sss '%s'" % compact(sss)], t
        key = ok(tether('pass', '-d', img, '-s', '2')).stdout
        assert opens(img, key, 2), 'tether pass after clevis edit does not open slot 2'
        ok(tether('unlock', '-d', img, '-t', '2'))
    check('7 clevis luks edit -c of a tether binding: tether list/pass/unlock',
          clevis_edits_tether)

    def tether_e_clevis_token():
        im = env.image('existing-token')
        env.clevis_bind(im, 'tang', tang_cfg(tetherd))          # slot 1, token 0
        ok(tether('bind', '-y', '-e', '0', '-d', im, 'tang', compact(tang_cfg(tangd))),
           'tether luks bind -e 0 (a clevis token)')
        c = list_lines(ok(clevis('list', '-d', im)))
        assert c == ["1: tang '%s'" % compact(tang_cfg(tetherd)),
                     "2: tang '%s'" % compact(tang_cfg(tangd))], c
        compare_pass(im, '2')
    check('7 tether luks bind -e TOKEN with a clevis-made token as the existing '
          'key: clevis lists/passes the new binding', tether_e_clevis_token)


# --------------------------------------------------------------------------
# 8. scripts written for clevis: the same command against clevis and tether,
#    each on an image of its own, with the same outcome

# Runs a command with a fresh session keyring holding one "user" key, as
# `keyctl add user DESC PAYLOAD @s` would (no keyutils here): a
# luks2-keyring token's passphrase.
KEYRING_RUN = r"""
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
assert libc.syscall(250, 1, None) >= 0                      # KEYCTL_JOIN_SESSION_KEYRING
desc, payload = sys.argv[1].encode(), sys.argv[2].encode()
r = libc.syscall(248, b"user", desc, payload, ctypes.c_size_t(len(payload)), ctypes.c_int(-3))
assert r >= 0, os.strerror(ctypes.get_errno())              # add_key(..., KEY_SPEC_SESSION_KEYRING)
os.execv(sys.argv[3], sys.argv[3:])
"""


def with_keyring(desc, payload, args):
    return [sys.executable, '-c', KEYRING_RUN, desc, payload] + list(args)


def both(env, name, run_it, prepare=None):
    """run_it(which, img) on one image for clevis and one for tether, each
    made by prepare(img) (default: an image with the passphrase only).
    Returns {which: (CompletedProcess, img)}."""
    res = {}
    for which in ('clevis', 'tether'):
        img = env.image('%s-%s' % (name, which))
        if prepare:
            prepare(img)
        res[which] = (run_it(which, img), img)
    return res


def tool(which):
    return clevis if which == 'clevis' else tether


def same_outcome(res, want_rc):
    for which, (cp, _) in res.items():
        if want_rc == 0:
            ok(cp, '%s: %s' % (which, ' '.join(cp.args)))
        elif which == 'tether':
            # Exactly the failure status (not a usage error, not a crash).
            assert cp.returncode == want_rc, '%s: exit %d, not %d: %s' % (which, cp.returncode, want_rc,
                                                                          ' '.join(cp.args))
        else:
            # A failure, not a crash (a signal gives a negative status).
            assert 0 < cp.returncode < 126, '%s: exit %d: %s' % (which, cp.returncode, ' '.join(cp.args))


def section_scripted(env):
    tetherd = env.tetherd
    cfg = compact(tang_cfg(tetherd))

    def bound_in_slot_1(res):
        for which, (_, img) in res.items():
            assert layout(img)[0] == ['0', '1'], (which, layout(img))
            key = ok(tether('pass', '-d', img, '-s', '1')).stdout
            assert opens(img, key, 1), '%s: slot 1 does not open with its binding' % which
            assert opens(img, PASSPHRASE, 0)

    def bind_stdin():
        # Without -k, Clevis reads the passphrase as a line of standard
        # input when it is not a terminal (Ansible, cloud-init, ...).
        res = both(env, 'bind-stdin', lambda w, img: tool(w)('bind', '-y', '-d', img, 'tang', cfg,
                                                             input=PASSPHRASE + b'\n'))
        same_outcome(res, 0)
        bound_in_slot_1(res)
        # Nothing on standard input: both refuse, nothing written.
        res = both(env, 'bind-no-stdin', lambda w, img: tool(w)('bind', '-y', '-d', img, 'tang', cfg))
        same_outcome(res, 1)
        for which, (cp, img) in res.items():
            assert layout(img) == (['0'], {}), (which, layout(img))
    check('8 bind without -k: the passphrase from standard input, as clevis reads it', bind_stdin)

    def bind_k_stdin_first_line():
        for extra in (b'\n\n', b'\nsecond line\n'):
            res = both(env, 'bind-k-line', lambda w, img: tool(w)('bind', '-y', '-k', '-', '-d', img, 'tang', cfg,
                                                                  input=PASSPHRASE + extra))
            same_outcome(res, 0)
            bound_in_slot_1(res)
    check('8 bind -k -: the first line of standard input, as clevis takes it',
          bind_k_stdin_first_line)

    def bind_e_keyring():
        def prepare(img):
            ok(sh([CRYPTSETUP, 'token', 'add', '--key-description', 'tether-test:pw',
                   '--token-id', '5', '--key-slot', '0', img]))
        # The passphrase in the kernel keyring under the token's description.
        res = both(env, 'bind-e-keyring', lambda w, img: sh(with_keyring(
            'tether-test:pw', PASSPHRASE.decode(),
            [peers.CLEVIS if w == 'clevis' else TETHER, 'luks', 'bind', '-y', '-e', '5', '-d', img, 'tang', cfg])),
            prepare)
        same_outcome(res, 0)
        for which, (_, img) in res.items():
            slots, tokens = layout(img)
            assert slots == ['0', '1'] and tokens['5'] == ('luks2-keyring', ['0']), (which, slots, tokens)
            assert opens(img, ok(tether('pass', '-d', img, '-s', '1')).stdout, 1), which
        # The keyring holds no such key, or a wrong passphrase: both refuse.
        for desc, payload in (('tether-test:other', PASSPHRASE.decode()), ('tether-test:pw', 'wrong')):
            res = both(env, 'bind-e-nokey', lambda w, img: sh(with_keyring(
                desc, payload,
                [peers.CLEVIS if w == 'clevis' else TETHER, 'luks', 'bind', '-y', '-e', '5', '-d', img, 'tang',
                 cfg])), prepare)
            same_outcome(res, 1)
            for which, (cp, img) in res.items():
                assert layout(img)[0] == ['0'], (which, desc, payload, layout(img))
    check('8 bind -e TOKEN with a luks2-keyring token (the passphrase in the kernel keyring)',
          bind_e_keyring)


    def lose_keys(kd, keep_signing=False):
        """The server loses the binding's exchange key: with keep_signing
        after a rotation (its old signing key still vouches for the new
        keys), else all of them (new keys that nothing vouches for)."""
        if keep_signing:
            peers.run([peers.TANGD_ROTATE, '-d', kd])
            for k in peers.load_keys(kd):
                if k.hidden and k.exchange:
                    os.unlink(k.path)
        else:
            for k in peers.load_keys(kd):
                os.unlink(k.path)
            peers.tang_keygen(kd)

    def regen_key_gone(keep_signing):
        kd = peers.tang_keygen(env.h.mkdir('gone-%s-keys' % keep_signing))
        srv = env.h.tangd(kd)
        imgs = {w: env.image('regen-gone-%s' % w) for w in ('clevis', 'tether')}
        for img in imgs.values():
            env.clevis_bind(img, 'tang', tang_cfg(srv))
        lose_keys(kd, keep_signing)
        for w, img in imgs.items():
            r = tool(w)('pass', '-d', img, '-s', '1')
            assert r.returncode != 0, '%s luks pass still works: the key is not gone' % w
        if not keep_signing:
            # New keys that nothing the binding trusts vouches for: tether
            # -q does not take them, and says what to do; clevis regen
            # trusts any keys (-y), tether with -y.
            before = dump(imgs['tether'])
            r = tether('regen', '-q', '-d', imgs['tether'], '-s', '1', input=PASSPHRASE + b'\n')
            assert r.returncode == 1, 'tether regen -q trusted unvouched keys: %s' % r.stderr
            assert 'rerun with -y' in r.stderr.decode(), r.stderr.decode()
            assert dump(imgs['tether']) == before, 'a refused regen changed the header'
        targs = ['regen', '-q' if keep_signing else '-y', '-d', imgs['tether'], '-s', '1']
        res = {'clevis': ok(clevis('regen', '-q', '-d', imgs['clevis'], '-s', '1', input=PASSPHRASE + b'\n')),
               'tether': ok(tether(*targs, input=PASSPHRASE + b'\n'))}
        for w, img in imgs.items():
            assert layout(img)[0] == ['0', '1'], (w, layout(img))
            key = ok(clevis('pass', '-d', img, '-s', '1'), '%s regen: clevis pass' % w).stdout
            assert opens(img, key, 1), '%s regen: the new key does not open slot 1' % w
            assert ok(tether('pass', '-d', img, '-s', '1')).stdout == key
            ok(tether('report', '-q', '-d', img, '-s', '1'), '%s regen: tether report' % w)
            assert opens(img, PASSPHRASE, 0)
        del res

    check('8 regen after the server lost the key (404), passphrase on standard input: '
          'clevis and tether rebind (tether -q when the old signing key vouches)',
          lambda: regen_key_gone(True))
    check('8 regen after the server lost every key: clevis rebinds; tether -q refuses '
          'naming -y, tether -y rebinds', lambda: regen_key_gone(False))

    def regen_key_gone_keyfile():
        kd = peers.tang_keygen(env.h.mkdir('gone-k-keys'))
        srv = env.h.tangd(kd)
        img = env.image('regen-gone-k')
        env.clevis_bind(img, 'tang', tang_cfg(srv))
        lose_keys(kd, True)
        # clevis regen has no -k (clevis #492); tether's takes the passphrase.
        ok(tether('regen', '-q', '-k', env.keyfile, '-d', img, '-s', '1'))
        key = ok(clevis('pass', '-d', img, '-s', '1')).stdout
        assert opens(img, key, 1)
        # Nothing on standard input and no -k: refused, header unchanged.
        img2 = env.image('regen-gone-none')
        env.clevis_bind(img2, 'tang', tang_cfg(srv))
        kd_keys = peers.load_keys(kd)
        for k in kd_keys:
            os.unlink(k.path)
        peers.tang_keygen(kd)
        before = dump(img2)
        for w in ('clevis', 'tether'):
            r = tool(w)('regen', '-q', '-d', img2, '-s', '1')
            assert r.returncode != 0, '%s regen without a passphrase succeeded' % w
            assert dump(img2) == before, '%s: a failed regen changed the header' % w
        msg = tether('regen', '-y', '-d', img2, '-s', '1').stderr.decode()
        assert 'only with a passphrase' in msg and '-k KEYFILE' in msg, msg
    check('8 tether regen -k KEYFILE after the key is lost; no passphrase at all: both refuse',
          regen_key_gone_keyfile)

    def edit_like_clevis():
        if not shutil.which('jq'):
            log('     (jq missing: clevis luks edit not tried)')
            return
        tangd = env.tangd
        sig = [k.thp() for k in peers.keys_where(peers.load_keys(env.tang_kd), signing=True, hidden=False)]
        one = {'t': 1, 'pins': {'tang': [tang_cfg(tetherd)]}}
        two = {'t': 1, 'pins': {'tang': [tang_cfg(tetherd), dict(tang_cfg(tangd), thp=sig[0])]}}
        imgs = {w: env.image('edit-%s' % w) for w in ('clevis', 'tether')}
        for img in imgs.values():
            env.clevis_bind(img, 'sss', one)
        # The configuration it has: "No changes detected", exit 1, unchanged.
        for w, img in imgs.items():
            before = dump(img)
            r = tool(w)('edit', '-d', img, '-s', '1', '-c', compact(one))
            assert r.returncode == 1, '%s edit of an unchanged config: exit %d' % (w, r.returncode)
            assert 'no changes detected' in r.stderr.decode().lower(), (w, r.stderr)
            assert dump(img) == before, '%s: edit with no change changed the header' % w
        # -f: rebinds anyway; the same server needs no -y (tether: its old
        # signing key vouches); a new one is trusted by its thp.
        for args, want in ((['-f', '-c', compact(one)], one), (['-c', compact(two)], two)):
            for w, img in imgs.items():
                ok(tool(w)('edit', '-d', img, '-s', '1', *args), '%s luks edit %s' % (w, ' '.join(args)))
                assert list_lines(ok(clevis('list', '-d', img, '-s', '1'))) == [
                    "1: sss '%s'" % compact(drop_thp(want))], (w, out(clevis('list', '-d', img)))
                key = ok(clevis('pass', '-d', img, '-s', '1')).stdout
                assert opens(img, key, 1), '%s edit: slot 1 does not open' % w
                assert layout(img)[0] == ['0', '1'], (w, layout(img))
    check('8 edit: unchanged config exits 1 ("no changes detected"), -f rebinds, '
          'no -y needed for the same server', edit_like_clevis)


def drop_thp(cfg):
    """A config as luks list prints it: no thp."""
    if isinstance(cfg, dict):
        return {k: drop_thp(v) for k, v in cfg.items() if k != 'thp'}
    if isinstance(cfg, list):
        return [drop_thp(v) for v in cfg]
    return cfg


# --------------------------------------------------------------------------

SECTIONS = {
    '1': section_clevis_binds,
    '2': section_tether_binds,
    '3': section_shape,
    '4': section_rotation,
    '5': section_luks1,
    '6': section_full,
    '7': section_edit,
    '8': section_scripted,
}


def test():
    peers.require('tetherd', 'tether-keys', 'tangd', 'tangd-keygen',
                  'tangd-rotate-keys', 'systemd-socket-activate', 'jose',
                  'clevis', 'curl')
    missing = [p for p in ('clevis-luks-bind', 'clevis-luks-pass', 'clevis-luks-report',
                           'pwmake') if not shutil.which(p)]
    if not TETHER or not os.access(TETHER, os.X_OK):
        missing.append('TETHER (the tether client)')
    if not os.access(CRYPTSETUP, os.X_OK):
        missing.append('cryptsetup')
    if not LUKSMETA:
        missing.append('luksmeta')
    if missing:
        log('SKIP: missing: ' + ', '.join(missing))
        sys.exit(peers.SKIP)
    wanted = sys.argv[1:] or sorted(SECTIONS)
    unknown = [w for w in wanted if w not in SECTIONS]
    assert not unknown, 'unknown section(s) %s' % unknown
    t0 = time.monotonic()
    with peers.Harness() as h:
        env = Env(h)
        log('tetherd %s, tangd %s' % (env.tetherd.url, env.tangd.url))
        try:
            env.image('probe')
        except AssertionError as e:
            log('SKIP: cryptsetup cannot format an image file here:\n%s' % e)
            sys.exit(peers.SKIP)
        for w in wanted:
            SECTIONS[w](env)
    log('\n%d check(s) failed in %.0fs' % (len(FAILURES), time.monotonic() - t0))
    for what, msg in FAILURES:
        log('FAILED: %s\n    %s' % (what, msg.splitlines()[0][:400] if msg else ''))
    assert not FAILURES, '%d luks check(s) failed' % len(FAILURES)


if __name__ == '__main__':
    tlib.script_main(test)
