#!/bin/sh
# meson's install step (meson.add_install_script): after `meson install`
# into the live root, create the _tether user and the key directory and let
# systemd see the new units, so that `systemctl enable --now tetherd.socket`
# works right away. Package managers do this in their own scripts.
#
#   install-hook.sh SYSUSERS_CONF TMPFILES_CONF
#
# Nothing is done with DESTDIR set (a staging root for a package, or a
# test): the user and directory belong to the machine the package goes to.
# Each step is skipped quietly when its tool is missing, daemon-reload also
# when systemd is not running (a container, a chroot). Run as another user
# than root, it only says what to run as root. A tool that fails fails the
# install: tetherd.service would not start.
set -eu

sysusers_conf=$1
tmpfiles_conf=$2

[ -z "${DESTDIR:-}" ] || exit 0

# Where sd_booted() looks; overridable so that tests/deploy/install.py can
# pretend either way.
booted_dir=${TETHER_INSTALL_BOOTED_DIR:-/run/systemd/system}

have() {
        command -v "$1" >/dev/null 2>&1
}

# What to run: one command per line, each skipped when its tool is missing.
steps=$(
        ! have systemd-sysusers || echo systemd-sysusers
        ! have systemd-tmpfiles || echo systemd-tmpfiles
        ! have systemctl || [ ! -d "$booted_dir" ] || echo systemctl
)
[ -n "$steps" ] || exit 0

run() {
        if [ "$(id -u)" != 0 ]; then
                echo "  $*" >&2
        else
                echo "tether: $*"
                "$@"
        fi
}

[ "$(id -u)" = 0 ] ||
        echo "tether: not root: to create the _tether user and /var/lib/tether, run as root:" >&2
for step in $steps; do
        case $step in
        systemd-sysusers) run systemd-sysusers "$sysusers_conf" ;;
        systemd-tmpfiles) run systemd-tmpfiles --create "$tmpfiles_conf" ;;
        systemctl) run systemctl daemon-reload ;;
        esac
done
