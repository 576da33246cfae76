#!/usr/bin/env python3
"""The token plugin exports libcryptsetup's entry points and nothing else.

    tests/unit/check-exports.py PLUGIN.so VERSION-SCRIPT CLIENT-LIBRARY.a

libcryptsetup loads the plugin into someone else's process (cryptsetup,
systemd-cryptsetup): every other symbol it exported could clash with the
host's. The plugin links the static client library, whose tc_* functions
are global there; the version script (token-clevis.sym) must keep them
local. Compares `nm -D --defined-only PLUGIN.so` with the script's global:
list, and first makes sure the client library does define tc_* symbols,
so that a clean result means they were hidden, not absent.
Exit 0 when the exports are exactly the script's, 1 otherwise, 77 without nm."""

import re
import shutil
import subprocess
import sys


def nm(*args):
    r = subprocess.run(["nm", *args], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        sys.exit(f"nm {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout.splitlines()


def version_script(path):
    """(version node names, global symbol names) of a linker version script."""
    with open(path) as f:
        text = re.sub(r"/\*.*?\*/", "", f.read(), flags=re.S)
    nodes = re.findall(r"([A-Za-z_][\w.]*)\s*\{", text)
    names = set()
    for block in re.findall(r"global:(.*?)(?:local:|\})", text, flags=re.S):
        names.update(n.strip() for n in block.split(";") if n.strip())
    return set(nodes), names


def defined(lines):
    """{name: type} of nm's lines "ADDRESS TYPE NAME", versions stripped."""
    out = {}
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            out[parts[2].split("@")[0]] = parts[1]
    return out


def main(plugin, script, client):
    if not shutil.which("nm"):
        print("SKIP: nm not found (binutils)")
        return 77
    nodes, wanted = version_script(script)
    if not wanted or not all(n.startswith("cryptsetup_token_") for n in wanted):
        print(f"{script}: expected a global: list of cryptsetup_token_* names, got {sorted(wanted)}")
        return 1
    inside = [n for n, t in defined(nm("--defined-only", client)).items() if n.startswith("tc_") and t == "T"]
    if not inside:
        print(f"{client} defines no tc_* function: nothing here would show a leak")
        return 1

    exported = defined(nm("-D", "--defined-only", plugin))
    extra = sorted(n for n in exported if n not in wanted and n not in nodes)
    missing = sorted(wanted - exported.keys())
    for n in extra:
        print(f"{plugin}: exports {n}, which is not in {script}"
              + (" (a client library function)" if n.startswith("tc_") else ""))
    for n in missing:
        print(f"{plugin}: does not export {n}, which libcryptsetup looks up")
    if extra or missing:
        return 1
    print(f"{plugin} exports exactly {', '.join(sorted(wanted))} "
          f"({len(inside)} tc_* functions of the client library stay inside)")
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    sys.exit(main(*sys.argv[1:]))
