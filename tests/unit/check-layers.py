#!/usr/bin/env python3
"""The layering check: no source includes a header of a layer above its own,
and the libraries read no environment variable.

    tests/unit/check-layers.py [--no-self-test] [ROOT]

Layers, bottom up: base/ (0) < keys/ (1) < client/ and server/ (2; neither
includes the other) < programs/ (3). Within client/: proto < luks < boot;
the public headers in client/include/ belong to those by the map PUBLIC
below, and a header there the map does not know is an error (put it in the
map). Code outside client/ must not include a client header that lives
beside the sources (client/proto|luks|boot): those are the library's own.
tests/ is not checked (unit tests see private headers on purpose).
programs/common/ (what the programs share) is part of layer 3.

The libraries (base/, keys/, client/) take their settings from their
callers: the token plugin runs inside systemd-cryptsetup, whose environment
is not ours to read. So getenv()/secure_getenv() appear there only where
ENV_ALLOWED says (TETHER_FAULT, test-only fault injection); the programs
read TETHER_TIMEOUT and the like in programs/common/environment.c. server/
is exempt (systemd's LISTEN_FDS and NOTIFY_SOCKET protocols).

An include is resolved as the compiler would find it: "x.h" in the
including file's folder first, then (for both "x.h" and <x.h>) in the
library include folders; a name found in none is a system header. A name
that two library folders both hold is an error: which one is meant would
depend on the include path.

First (unless --no-self-test) the check is run on small fake trees in a
temporary directory, to show it catches each kind of violation; then on
ROOT (default: the source tree this script is in). Exit 0 when clean, 1
with one line per violation (file:line: what, and the rule), 2 when the
self-test fails."""

import os
import re
import sys
import tempfile

BASE, KEYS, CLIENT, SERVER, PROGRAMS = "base", "keys", "client", "server", "programs"
LAYER = {BASE: 0, KEYS: 1, CLIENT: 2, SERVER: 2, PROGRAMS: 3}
# The client's parts, bottom up.
PART = {"proto": 0, "luks": 1, "boot": 2}
# Which part each public header of client/include belongs to.
PUBLIC = {
    "tether.h": "proto", "ctx.h": "proto", "tang.h": "proto",
    "luks.h": "luks",
    "askpass.h": "boot", "boot.h": "boot", "netwatch.h": "boot", "passfifo.h": "boot",
    "bootcheck.h": "boot",
}
# Where the build finds headers besides the including file's folder
# (the include_directories of the libraries in */meson.build).
INCLUDE_DIRS = ("base", "keys", "client/include", "client/proto", "client/luks", "client/boot", "server",
                "programs/common")
# The layers that must not read the environment, and the exceptions: (file,
# variable).
ENV_FREE = (BASE, KEYS, CLIENT)
ENV_ALLOWED = {("client/luks/luks.c", "TETHER_FAULT")}
GETENV = re.compile(r'\b(?:secure_)?getenv\s*\(\s*("([^"]*)")?')

INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')
SOURCE = re.compile(r"\.[ch]$")


class Place:
    """Where a file sits: its top folder (layer) and, in client/, its part."""

    def __init__(self, rel):
        self.rel = rel
        parts = rel.split("/")
        self.top = parts[0]
        self.layer = LAYER.get(self.top)
        self.part = None        # proto/luks/boot, for client files
        self.private = False    # a client header beside the sources
        self.unknown_public = False
        if self.top == CLIENT and len(parts) > 2:
            if parts[1] == "include":
                self.part = PUBLIC.get(parts[-1])
                self.unknown_public = self.part is None
            elif parts[1] in PART:
                self.part = parts[1]
                self.private = rel.endswith(".h")

    def describe(self):
        if self.top == CLIENT and self.part:
            return f"client/{self.part} (layer 2)"
        return f"{self.top}/ (layer {self.layer})"


def sources(root):
    for top in LAYER:
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, top)):
            dirnames.sort()
            for name in sorted(filenames):
                if SOURCE.search(name):
                    path = os.path.join(dirpath, name)
                    yield os.path.relpath(path, root).replace(os.sep, "/")


def resolve(root, rel, kind, name):
    """The header an include names, relative to root: [] for a system
    header, one path, or several when library folders disagree."""
    if kind == '"':
        local = os.path.normpath(os.path.join(os.path.dirname(rel), name))
        if os.path.isfile(os.path.join(root, local)):
            return [local.replace(os.sep, "/")]
    found = []
    for d in INCLUDE_DIRS:
        cand = os.path.normpath(os.path.join(d, name))
        if os.path.isfile(os.path.join(root, cand)):
            found.append(cand.replace(os.sep, "/"))
    return found


def rule_broken(src, hdr):
    """Why src must not include hdr, or None."""
    if hdr.layer is None:
        return None
    if hdr.layer > src.layer:
        return "a lower layer must not include a header of a higher one"
    if {src.top, hdr.top} == {CLIENT, SERVER}:
        return "client/ and server/ must not include each other's headers"
    if hdr.private and src.top != CLIENT:
        return ("a client header beside the sources is the library's own: "
                "outside client/ use client/include/ only")
    if src.top == CLIENT and hdr.top == CLIENT and src.part and hdr.part:
        if PART[hdr.part] > PART[src.part]:
            return "within client/, proto < luks < boot: a part must not include a header of a later one"
        if hdr.private and src.rel.startswith("client/include/"):
            return "a public header must not include a private one (programs could not compile it)"
    return None


def check(root):
    """One message per violation under root."""
    problems = []
    for rel in sources(root):
        src = Place(rel)
        if src.unknown_public:
            problems.append(f"{rel}: client/include has a header the layer map does not know: "
                            f"add it to PUBLIC in tests/unit/check-layers.py with its part "
                            f"({', '.join(PART)})")
        with open(os.path.join(root, rel), errors="replace") as f:
            lines = f.read().splitlines()
        for lineno, line in enumerate(lines, 1):
            if src.top in ENV_FREE:
                for g in GETENV.finditer(line):
                    var = g.group(2)
                    if (rel, var) not in ENV_ALLOWED:
                        problems.append(f"{rel}:{lineno}: reads the environment "
                                        f"({g.group(1) or 'a variable not named by a literal'}) in "
                                        f"{src.top}/ (layer {src.layer}): the libraries take their settings "
                                        f"from their callers; read it in programs/common/environment.c and "
                                        f"pass it in")
            m = INCLUDE.match(line)
            if not m:
                continue
            kind, name = m.groups()
            shown = f'"{name}"' if kind == '"' else f"<{name}>"
            found = resolve(root, rel, kind, name)
            if len(found) > 1:
                problems.append(f"{rel}:{lineno}: includes {shown}, which is ambiguous: "
                                f"{' and '.join(found)} (rename one)")
                continue
            if not found:
                continue
            hdr = Place(found[0])
            why = rule_broken(src, hdr)
            if why:
                problems.append(f"{rel}:{lineno}: includes {shown} ({found[0]}, {hdr.describe()}) "
                                f"from {src.describe()}: {why}")
    return problems


# ----------------------------------------------------------------- self-test

# The smallest tree that passes: one header per place, each including what
# it may.
GOOD = {
    "base/err.h": "",
    "base/util.c": '#include "err.h"\n#include <stdio.h>\n',
    "keys/keyset.h": '#include "err.h"\n',
    "keys/keyset.c": '#include "keyset.h"\n#include "util.h"\n',
    "client/include/ctx.h": '#include "err.h"\n',
    "client/include/tether.h": '#include "ctx.h"\n',
    "client/include/luks.h": '#include "tether.h"\n',
    "client/include/boot.h": '#include "luks.h"\n',
    "client/proto/pin.h": '#include "tether.h"\n',
    "client/proto/ctx.c": '#include "pin.h"\n#include "keyset.h"\n',
    "client/luks/luks.c": '#include "luks.h"\n#include "pin.h"\nconst char *f = getenv("TETHER_FAULT");\n',
    "client/boot/boot.c": '#include "boot.h"\n#include "luks.h"\n#include "pin.h"\n',
    "server/served.h": '#include "keyset.h"\n',
    "server/served.c": '#include "served.h"\nconst char *n = getenv("LISTEN_FDS");\n',
    "programs/common/environment.h": '#include "ctx.h"\n',
    "programs/common/environment.c": '#include "environment.h"\nconst char *t = getenv("TETHER_TIMEOUT");\n',
    "programs/tether/cli.h": '#include "tether.h"\n',
    "programs/tether/main.c": '#include "cli.h"\n#include "boot.h"\n#include "keyset.h"\n#include "environment.h"\n',
    "programs/tetherd/main.c": '#include "served.h"\n',
    # Tests are not checked: they may include private headers.
    "tests/unit/test-pin.c": '#include "pin.h"\n#include "served.h"\n',
    # The including file's folder comes first: this ctx.h is keys' own.
    "keys/local/ctx.h": "",
    "keys/local/use.c": '#include "ctx.h"\n',
}

# Each a change to GOOD that must fail, with the file and include the
# message must name.
BAD = [
    ("keys including a client header", {"keys/a.c": '#include "tether.h"\n'}, "keys/a.c:1", '"tether.h"'),
    ("base including keys", {"base/b.c": '#include <stdio.h>\n#include "keyset.h"\n'}, "base/b.c:2", '"keyset.h"'),
    ("angle brackets resolve too", {"base/b.c": "#include <keyset.h>\n"}, "base/b.c:1", "<keyset.h>"),
    ("server including a client header", {"server/s.c": '#include "ctx.h"\n'}, "server/s.c:1", '"ctx.h"'),
    ("client including a server header", {"client/boot/x.c": '#include "served.h"\n'},
     "client/boot/x.c:1", '"served.h"'),
    ("proto including luks", {"client/proto/p.c": '#include "luks.h"\n'}, "client/proto/p.c:1", '"luks.h"'),
    ("luks including boot", {"client/luks/l.c": '#include "boot.h"\n'}, "client/luks/l.c:1", '"boot.h"'),
    ("proto including a private boot header",
     {"client/boot/agent.h": "", "client/proto/p.c": '#include "agent.h"\n'}, "client/proto/p.c:1", '"agent.h"'),
    ("public proto header including luks", {"client/include/tether.h": '#include "luks.h"\n'},
     "client/include/tether.h:1", '"luks.h"'),
    ("public header including a private one", {"client/include/luks.h": '#include "pin.h"\n'},
     "client/include/luks.h:1", '"pin.h"'),
    ("program including a private client header", {"programs/tether/x.c": '#include "pin.h"\n'},
     "programs/tether/x.c:1", '"pin.h"'),
    ("server including a private client header", {"server/t.c": '#include "pin.h"\n'}, "server/t.c:1", '"pin.h"'),
    ("a public header the map does not know", {"client/include/fresh.h": ""}, "client/include/fresh.h", "PUBLIC"),
    ("a header name in two library folders", {"server/err.h": "", "programs/tether/y.c": '#include "err.h"\n'},
     "programs/tether/y.c:1", "ambiguous"),
    ("a relative path into a higher layer", {"keys/r.c": '#include "../client/include/tether.h"\n'},
     "keys/r.c:1", "tether.h"),
    ("client including the programs' shared header", {"client/boot/e.c": '#include "environment.h"\n'},
     "client/boot/e.c:1", '"environment.h"'),
    ("the client library reading the environment",
     {"client/proto/ctx.c": '#include "pin.h"\nlong t = getenv("TETHER_TIMEOUT") ? 1 : 0;\n'},
     "client/proto/ctx.c:2", '"TETHER_TIMEOUT"'),
    ("base reading the environment (secure_getenv)", {"base/h.c": 'const char *h = secure_getenv ( "HOME");\n'},
     "base/h.c:1", '"HOME"'),
    ("keys reading a variable by a name not spelled out", {"keys/v.c": "const char *v = getenv(name);\n"},
     "keys/v.c:1", "not named by a literal"),
    ("the allowed file reading another variable",
     {"client/luks/luks.c": '#include "luks.h"\nconst char *p = getenv("TETHER_PIN_PATH");\n'},
     "client/luks/luks.c:2", '"TETHER_PIN_PATH"'),
]


def write_tree(root, files):
    for rel, text in files.items():
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)


def self_test():
    """Failures of the checker itself: [] when it caught everything."""
    failures = []
    with tempfile.TemporaryDirectory(prefix="tether-layers-") as tmp:
        good = os.path.join(tmp, "good")
        write_tree(good, GOOD)
        problems = check(good)
        if problems:
            failures.append("a tree that keeps the layers was refused:\n  " + "\n  ".join(problems))
        for i, (what, change, where, name) in enumerate(BAD):
            root = os.path.join(tmp, f"bad{i}")
            write_tree(root, {**GOOD, **change})
            problems = check(root)
            if not any(p.startswith(where) and name in p for p in problems):
                failures.append(f"not caught: {what} (expected a message on {where} naming {name}; got "
                                f"{problems or 'nothing'})")
    return failures


def main(argv):
    args = [a for a in argv if a != "--no-self-test"]
    root = args[0] if args else os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
    if "--no-self-test" not in argv:
        failures = self_test()
        for f in failures:
            print(f"check-layers self-test: {f}", file=sys.stderr)
        if failures:
            return 2
        print(f"self-test: {len(BAD)} kinds of violation caught, a clean tree passes")
    problems = check(root)
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} violation(s); layers bottom up: base < keys < client, server "
              f"< programs; within client: proto < luks < boot; no getenv in base, keys, client", file=sys.stderr)
        return 1
    print(f"{sum(1 for _ in sources(root))} sources keep the layers; the libraries read no environment "
          f"(but {', '.join(f'{v} in {f}' for f, v in sorted(ENV_ALLOWED))})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
