"""The command lines of tether, tetherd, tether-keys and tether-askpass: a
usage error says what was wrong, under the command's whole name, before the
usage text, and exits 2; -h/--help prints the usage to stdout and exits 0;
--version prints the project's version. And the man pages agree with the
programs: every command of a SYNOPSIS lists the options its --help lists,
no more, no fewer, so that neither can drift from the other again."""

import os
import re
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import tlib  # noqa: E402

SRCDIR = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MANDIR = os.path.join(SRCDIR, "man")
ASKPASS = os.path.abspath(os.environ.get("TETHER_ASKPASS", "build/programs/tether-askpass"))
PROGRAMS = {"tether": tlib.TETHER, "tetherd": os.path.abspath(tlib.TETHERD),
            "tether-keys": os.path.abspath(tlib.TETHER_KEYS), "tether-askpass": ASKPASS}


def project_version():
    with open(os.path.join(SRCDIR, "meson.build")) as f:
        return re.search(r"project\([^)]*?version\s*:\s*'([^']+)'", f.read(), re.S).group(1)


def run(prog, *args):
    return tlib.run(PROGRAMS[prog], *args, text=True, timeout=30)


# ----------------------------------------------------------------- man pages

# An option: -x or --word, not a negative number (-1) nor a word's hyphen.
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
# Shown by every command, described once in tether(1): not compared.
UNIVERSAL = {"-h", "--help"}


def roff_text(line):
    """A roff line as it reads: macro name, font changes, quotes and escapes gone."""
    line = re.sub(r"^\.[A-Z]{1,2}\s?", "", line)
    line = re.sub(r"\\f[BIRP]", "", line)
    line = line.replace("\\-", "-").replace("\\~", " ").replace("\\ ", " ").replace("\\&", "").replace('"', "")
    return line


def sections(page_text):
    """{".SH name": [lines]}."""
    out, name = {}, None
    for line in page_text.splitlines():
        if line.startswith(".SH "):
            name = line[4:].strip().strip('"')
            out[name] = []
        elif name:
            out[name].append(line)
    return out


def man_commands(page):
    """{(program, subcommand words...): set of options} for each command of
    the page's SYNOPSIS (.SY ... .YS); the OPTIONS section (the tags of its
    .TP paragraphs) counts for the page's first command."""
    with open(os.path.join(MANDIR, page)) as f:
        secs = sections(f.read())
    commands, first = {}, None
    cmd, in_words = None, False
    for line in secs.get("SYNOPSIS", []):
        if line.startswith(".SY"):
            words = roff_text(line).split()
            cmd, in_words = [os.path.basename(words[0])] + words[1:], True
        elif line.startswith(".YS"):
            commands.setdefault(tuple(cmd), set())
            first = first or tuple(cmd)
            cmd = None
        elif cmd is not None:
            # Bold words right after .SY name a subcommand ("tether-keys gen").
            if in_words and re.fullmatch(r"\.B [a-z][\w-]*", line):
                cmd.append(line[3:])
                continue
            in_words = False
            commands.setdefault(tuple(cmd), set()).update(OPTION.findall(roff_text(line)))
    tags = [b for a, b in zip(secs.get("OPTIONS", []), secs.get("OPTIONS", [])[1:]) if a.startswith(".TP")]
    for tag in tags:
        commands[first].update(OPTION.findall(roff_text(tag)))
    return commands


def help_options(text):
    """The options a --help text lists: in its usage lines ("Usage: ...", and
    the lines after it that start with the program's name) and in the first
    column of its option lines ("  -d, --dir DIR   questions directory")."""
    found, prog = set(), None
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("Usage:"):
            prog = s.split()[1]
            found.update(OPTION.findall(s))
        elif s.startswith("-") or (prog and s.startswith(prog + " ")):
            found.update(OPTION.findall(re.split(r"\s{2,}", s)[0]))
    return found


def man_pages():
    return sorted(p for p in os.listdir(MANDIR) if re.search(r"\.[18](\.in)?$", p))


class ManMatchesHelp(tlib.unittest.TestCase):
    def test_every_synopsis_command_lists_the_options_of_its_help(self):
        checked = 0
        for page in man_pages():
            for cmd, man_opts in man_commands(page).items():
                # "tether luks SUBCOMMAND": an italic word is no command word.
                words = [w for w in cmd[1:] if not w.isupper()]
                with self.subTest(page=page, command=" ".join(cmd)):
                    r = run(cmd[0], *words, "--help")
                    self.assertEqual(r.returncode, 0, r.stderr)
                    self.assertEqual(r.stderr, "")
                    shown = help_options(r.stdout) - UNIVERSAL
                    documented = man_opts - UNIVERSAL
                    self.assertEqual(sorted(shown - documented), [],
                                     f"{cmd} --help lists options that {page}'s SYNOPSIS/OPTIONS do not")
                    self.assertEqual(sorted(documented - shown), [],
                                     f"{page} documents options that {' '.join(cmd)} --help does not list")
                    checked += 1
        # Every page with a SYNOPSIS took part: the parser found its commands.
        self.assertGreaterEqual(checked, 17)

    def test_the_parsers_see_a_drift(self):
        """The comparison above on texts that disagree: an option only in the
        help, and one only in the man page, are both found."""
        self.assertEqual(help_options("Usage: tether luks list -d DEV [-s SLOT] [-p] [-x]\n\n"
                                      "Prints (-z is prose, not listed)\n  -p   add thumbprints\n"
                                      "  -w, --wide   wider\n"),
                         {"-d", "-s", "-p", "-x", "-w", "--wide"})
        self.assertEqual(set(OPTION.findall(roff_text(r"[\fB\-t\fP\~\fISLOT\fP|\fB\-1\fP]"))), {"-t"})
        self.assertEqual(set(OPTION.findall(roff_text(r'.BI \-a " ADDR" "\fR, \fP\-\-address=" ADDR'))),
                         {"-a", "--address"})


class Pages(tlib.unittest.TestCase):
    def test_title_lines_carry_one_date_and_the_project_version(self):
        dates = {}
        for page in sorted(os.listdir(MANDIR)):
            if not re.search(r"\.[178](\.in)?$", page):
                continue
            with open(os.path.join(MANDIR, page)) as f:
                th = next(line for line in f if line.startswith(".TH "))
            m = re.fullmatch(r'\.TH \S+ [178] (\d{4}-\d{2}-\d{2}) "tether ([^"]+)" "[^"]+"\n', th)
            self.assertTrue(m, f"{page}: {th!r} is not .TH NAME SECTION YYYY-MM-DD \"tether VERSION\" \"MANUAL\"")
            self.assertEqual(m.group(2), project_version(), page)
            dates[page] = m.group(1)
        self.assertEqual(len(set(dates.values())), 1, dates)


    def test_askpass_page_names_the_installed_path(self):
        libexecdir = os.path.join(os.environ["TETHER_PREFIX"], dict(
            kv.split("=") for kv in os.environ["TETHER_INSTALL_DIRS"].split())["tether-askpass"])
        with open(os.environ["TETHER_ASKPASS_MAN"]) as f:
            synopsis = sections(f.read())["SYNOPSIS"]
        paths = {roff_text(line).split()[0] for line in synopsis if line.startswith(".SY")}
        self.assertEqual(paths, {os.path.join(libexecdir, "tether-askpass")})

    def test_decrypt_page_quotes_the_real_message_for_a_deleted_key(self):
        srv = tlib.Tetherd()
        try:
            url = f"http://127.0.0.1:{srv.port}"
            r = tlib.tether("encrypt", "tang", '{"url":"%s"}' % url, "-y", input=b"secret")
            self.assertEqual(r.returncode, 0, r.stderr)
            # The server loses its keys and makes new ones: the JWE's key is gone.
            for name in os.listdir(srv.keydir):
                os.unlink(os.path.join(srv.keydir, name))
            tlib.tether_keys("gen", srv.keydir)
            d = tlib.tether("decrypt", input=r.stdout)
            self.assertEqual(d.returncode, 1, d.stderr)
            said = d.stderr.decode().strip().replace(url, "http://keys.example:9090")
            self.assertIn("HTTP 404", said)
        finally:
            srv.close()
        with open(os.path.join(MANDIR, "tether-decrypt.1")) as f:
            text = f.read()
        examples = [" ".join(b.split(".EE", 1)[0].split("\n")).replace("\\-", "-").strip()
                    for b in text.split(".EX\n")[1:]]
        self.assertIn(said, examples, "tether-decrypt(1) does not quote the message for a deleted key")


# ----------------------------------------------------------------- usage errors


class UsageErrors(tlib.unittest.TestCase):
    # (program, arguments, what stderr's first line says)
    CASES = [
        ("tether", [], "tether: missing COMMAND"),
        ("tether", ["bogus"], "tether: unknown command 'bogus'"),
        ("tether", ["-z"], "tether: unrecognized option '-z'"),
        ("tether", ["encrypt"], "tether encrypt: missing PIN and CONFIG"),
        ("tether", ["encrypt", "null"], "tether encrypt: missing CONFIG"),
        ("tether", ["encrypt", "null", "{}", "extra"], "tether encrypt: unexpected argument 'extra' after PIN and CONFIG"),
        ("tether", ["encrypt", "-z", "null", "{}"], "tether encrypt: invalid option -- 'z'"),
        ("tether", ["decrypt", "x"], "tether decrypt: unexpected argument 'x': the JWE is read from standard input"),
        ("tether", ["decrypt", "--bogus"], "tether decrypt: unrecognized option '--bogus'"),
        ("tether", ["luks"], "tether luks: missing COMMAND"),
        ("tether", ["luks", "bogus"], "tether luks: unknown command 'bogus'"),
        ("tether", ["luks", "bind", "-z"], "tether luks bind: invalid option -- 'z'"),
        ("tether", ["luks", "bind", "-d", "img", "null"], "tether luks bind: missing CONFIG"),
        ("tether", ["luks", "bind", "-d", "img"], "tether luks bind: missing PIN and CONFIG"),
        ("tether", ["luks", "bind", "-d", "img", "null", "{}", "extra"], "tether luks bind: unexpected argument 'extra'"),
        ("tether", ["luks", "bind", "null", "{}"], "tether luks bind: missing -d DEV, the LUKS2 device"),
        ("tether", ["luks", "bind", "-d"], "tether luks bind: option requires an argument -- 'd'"),
        ("tether", ["luks", "bind", "-d", "img", "-t", "32", "null", "{}"],
         "tether luks bind: invalid -t TOKEN '32': a number from 0 to 31"),
        ("tether", ["luks", "bind", "-d", "img", "-e", "x", "null", "{}"],
         "tether luks bind: invalid -e TOKEN 'x': a number from 0 to 31"),
        ("tether", ["luks", "unbind", "-d", "img"], "tether luks unbind: missing -s SLOT, the binding's keyslot"),
        ("tether", ["luks", "unbind", "-d", "img", "-s", "1", "--remove-last-passphrase=yes"],
         "tether luks unbind: option '--remove-last-passphrase' doesn't allow an argument"),
        ("tether", ["luks", "unbind", "-d", "img", "-s", "1", "--bogus"], "tether luks unbind: unrecognized option '--bogus'"),
        ("tether", ["luks", "list"], "tether luks list: missing -d DEV, the LUKS2 device"),
        ("tether", ["luks", "list", "-d", "img", "extra"], "tether luks list: unexpected argument 'extra'"),
        ("tether", ["luks", "pass", "-d", "img", "-s", "32"], "tether luks pass: invalid -s SLOT '32': a number from 0 to 31"),
        ("tether", ["luks", "pass", "-d", "img", "-s", "x"], "tether luks pass: invalid -s SLOT 'x': a number from 0 to 31"),
        ("tether", ["luks", "unlock", "-d", "img", "-t", "-2"],
         "tether luks unlock: invalid -t SLOT '-2': a number from 0 to 31, or -1 for any"),
        ("tether", ["luks", "unlock", "-d", "img", "-z"], "tether luks unlock: invalid option -- 'z'"),
        ("tether", ["luks", "regen", "-d", "img", "-s", "1", "-c", "{}"], "tether luks regen: invalid option -- 'c'"),
        ("tether", ["luks", "report", "-d", "img", "-r"],
         "tether luks report: -r regenerates one binding: give -s SLOT (the stale slots are those tether luks report "
         "-d img names)"),
        ("tether", ["luks", "edit", "-d", "img", "-s", "1"], "tether luks edit: missing -c CONFIG, the new configuration"),
        ("tetherd", [], "tetherd: missing KEYDIR, the key directory"),
        ("tetherd", ["a", "b"], "tetherd: unexpected argument 'b' after KEYDIR a"),
        ("tetherd", ["-z", "dir"], "tetherd: invalid option -- 'z'"),
        ("tetherd", ["--bogus", "dir"], "tetherd: unrecognized option '--bogus'"),
        ("tetherd", ["--port"], "tetherd: option '--port' requires an argument"),
        ("tetherd", ["--t", "1", "dir"], "tetherd: option '--t' is ambiguous"),
        ("tetherd", ["--quiet=1", "dir"], "tetherd: option '--quiet' doesn't allow an argument"),
        ("tetherd", ["-p", "0", "dir"], "tetherd: invalid port '0': a whole number from 1 to 65535"),
        ("tether-keys", [], "tether-keys: missing COMMAND"),
        ("tether-keys", ["bogus"], "tether-keys: unknown command 'bogus'"),
        ("tether-keys", ["-z"], "tether-keys: unrecognized option '-z'"),
        ("tether-keys", ["gen"], "tether-keys gen: missing DIR, the key directory"),
        ("tether-keys", ["gen", "d", "sig"], "tether-keys gen: SIGNAME sig without EXCNAME: name both keys, or neither"),
        ("tether-keys", ["rotate", "d", "extra"], "tether-keys rotate: unexpected argument 'extra'"),
        ("tether-keys", ["list", "-z", "d"], "tether-keys list: invalid option -- 'z'"),
        ("tether-keys", ["migrate", "--form", "t"], "tether-keys migrate: unrecognized option '--form'"),
        ("tether-keys", ["migrate", "a", "b"], "tether-keys migrate: unexpected argument 'b'"),
        ("tether-keys", ["show"], "tether-keys show: missing DIR or --url URL"),
        ("tether-keys", ["show", "--url"], "tether-keys show: option '--url' requires an argument"),
        ("tether-askpass", ["extra"], "tether-askpass: unexpected argument 'extra'"),
        ("tether-askpass", ["-z"], "tether-askpass: invalid option -- 'z'"),
        ("tether-askpass", ["--dir"], "tether-askpass: option '--dir' requires an argument"),
        ("tether-askpass", ["--linger=x"], "tether-askpass: --linger: not a number of seconds: x"),
        ("tether-askpass", ["--retry-max", "0"], "tether-askpass: --retry-max: not a number of seconds above 0: 0"),
    ]

    def test_each_usage_error_says_what_was_wrong_then_the_usage_and_exits_2(self):
        for prog, args, says in self.CASES:
            with self.subTest(prog=prog, args=args):
                r = run(prog, *args)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertEqual(r.stdout, "")
                lines = r.stderr.splitlines()
                self.assertEqual(lines[0], says)
                # Then a blank line and the usage of that very command.
                self.assertEqual(lines[1], "")
                self.assertTrue(lines[2].startswith("Usage: " + says.split(":")[0]), r.stderr)

    def test_help_goes_to_stdout_and_exits_0(self):
        for prog, args in (("tether", ["-h"]), ("tether", ["encrypt", "--help"]), ("tether", ["luks", "--help"]),
                           ("tether", ["luks", "bind", "-h"]), ("tether", ["luks", "unlock", "--help"]),
                           ("tetherd", ["--help"]), ("tether-keys", ["show", "-h"]), ("tether-askpass", ["-h"])):
            with self.subTest(prog=prog, args=args):
                r = run(prog, *args)
                self.assertEqual((r.returncode, r.stderr), (0, ""))
                self.assertTrue(r.stdout.startswith("Usage: " + " ".join([prog] + args[:-1])), r.stdout)

    def test_version(self):
        for prog in PROGRAMS:
            with self.subTest(prog=prog):
                r = run(prog, "--version")
                self.assertEqual((r.returncode, r.stdout, r.stderr), (0, f"{prog} {project_version()}\n", ""))


if __name__ == "__main__":
    tlib.main()
