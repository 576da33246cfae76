#!/bin/busybox sh
# PID 1 of the test root filesystem. Reaching it proves the initramfs unlocked
# and mounted the LUKS root; the marker line lists every LUKS volume the
# initramfs opened (systemd-cryptsetup names them luks-UUID), then the VM stops.
bb=/bin/busybox
open=$(cd /dev/mapper 2>/dev/null && $bb ls -d luks-* 2>/dev/null | $bb tr '\n' ' ')
echo "TETHER-BOOT-MARKER open: $open" > /dev/console
$bb poweroff -f
