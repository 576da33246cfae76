/* Unlocking at boot: how long the token plugin tries the tang servers
 * before systemd-cryptsetup asks for the passphrase. */
#pragma once

#include <stdbool.h>

/* TETHER_BOOT_TIMEOUT set but malformed. */
#define TC_BOOT_WAIT_DEFAULT_MS 30000
/* In the initramfs without rd.tether.timeout=: the whole of the token
 * plugin's one short try, whatever the servers or the network do (a
 * connection that hangs, a lookup that never ends), so that the passphrase
 * prompt comes at once; tether-askpass answers it as soon as a server
 * does. */
#define TC_BOOT_TRY_MS 1000

/* What the token plugin may spend on a volume, from its first request. */
struct tc_boot_policy {
        long wait_ms;   /* keep trying unreachable servers this long, again
                         * whenever the network changes, then the normal
                         * attempts (rd.tether.timeout=, TETHER_BOOT_TIMEOUT) */
        long limit_ms;  /* > 0: one attempt per server and a hard limit on
                         * the whole: the initramfs's short try */
};

/* The policy from the caller's TETHER_BOOT_TIMEOUT (env_seconds; NULL or
 * "": unset), whether this is the initramfs and the value of
 * rd.tether.timeout= (NULL: absent):
 *   TETHER_BOOT_TIMEOUT set: wait that long (malformed:
 *     TC_BOOT_WAIT_DEFAULT_MS), anywhere;
 *   in the initramfs, rd.tether.timeout=SECONDS above 0: wait that long;
 *   in the initramfs otherwise (absent, 0 or malformed): no wait, the short
 *     try of TC_BOOT_TRY_MS;
 *   after boot: neither, the client's normal attempts (the password agent
 *     keeps trying). */
void tc_boot_policy_for(const char *env_seconds, bool initrd, const char *cmdline_timeout, struct tc_boot_policy *p);
/* The same for this system: /etc/initrd-release, /proc/cmdline. */
void tc_boot_policy(const char *env_seconds, struct tc_boot_policy *p);

/* Parses "SECONDS" (decimal, 0 to 3600) into milliseconds; -1 if malformed. */
long tc_parse_seconds(const char *s);
