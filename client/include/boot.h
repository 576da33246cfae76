/* Unlocking at boot: how long to wait for tang servers before the user is
 * asked for the passphrase. */
#pragma once

#define TC_BOOT_WAIT_DEFAULT_MS 30000

/* Milliseconds to keep trying unreachable servers: seconds (the caller's
 * TETHER_BOOT_TIMEOUT; malformed: TC_BOOT_WAIT_DEFAULT_MS) unless NULL or "";
 * else in the initramfs rd.tether.timeout= from the kernel command line, else
 * TC_BOOT_WAIT_DEFAULT_MS; after boot 0 (the normal attempts only, as the
 * password agent keeps trying). */
long tc_boot_wait_ms(const char *seconds);

/* Parses "SECONDS" (decimal, 0 to 3600) into milliseconds; -1 if malformed. */
long tc_parse_seconds(const char *s);
