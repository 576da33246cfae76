/* tether's agent for Debian's cryptroot (initramfs-tools). cryptroot asks
 * for each volume's passphrase with /lib/cryptsetup/askpass, which reads the
 * console and the FIFO /lib/cryptsetup/passfifo together: whichever answers
 * first wins, so the prompt stays usable while this agent works.
 *
 * The agent recovers the keys of every bound volume cryptroot will ask for
 * (its crypttab and cryptopts=) at once, from the start, trying again as
 * soon as the network changes; when an askpass appears (inotify on the
 * FIFO's directory), it finds the process reading the FIFO, takes the
 * volume from that process's CRYPTTAB_NAME/CRYPTTAB_SOURCE, and writes the
 * volume's key into the FIFO as soon as it has it. See
 * docs/initramfs-tools.md. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "askpass.h"
#include "ctx.h"
#include "err.h"

#define TC_PASSFIFO "/lib/cryptsetup/passfifo"
#define TC_CRYPTROOT_CRYPTTAB "/cryptroot/crypttab"
/* Volumes the agent keeps track of; any more are left to the prompt. */
#define TC_PASSFIFO_VOLUMES_MAX 64

struct tc_crypt_volume {
        char *name;     /* the mapping's name: CRYPTTAB_NAME */
        char *source;   /* a path: UUID=, LABEL=, PARTUUID=, PARTLABEL= resolved to /dev/disk/by-* */
};

struct tc_crypt_volumes {
        struct tc_crypt_volume *items;
        size_t n;
};

/* The volumes cryptroot asks a passphrase for: crypttab's entries with key
 * "none" and no keyscript=, then each cryptopts= of the kernel command line
 * (cmdline: a file holding it, as /proc/cmdline) without key= or
 * keyscript=. A file that does not exist adds nothing; NULL skips it. */
int tc_crypt_volumes_read(const char *crypttab, const char *cmdline, struct tc_crypt_volumes *out,
                          struct tc_err *err);
void tc_crypt_volumes_clear(struct tc_crypt_volumes *v);

struct tc_passfifo_opts {
        const char *fifo;                        /* NULL: TC_PASSFIFO */
        const char *proc;                        /* NULL: "/proc": where the FIFO's reader is found */
        const struct tc_crypt_volumes *volumes;  /* recovered ahead; NULL: none */
        long backoff_min_ms;                     /* first pause after a failure, doubled after */
        long backoff_max_ms;
        long linger_ms;                          /* stay this long after the last answer, for a re-ask */
        void (*report)(void *data, enum tc_agent_event event, const char *msg);
        void *report_data;                       /* report is called from two threads, never at once */
};

/* Runs until cancelled, or until every volume known is settled (answered
 * linger_ms ago, not bound, or left to the prompt) and no askpass waits.
 * Uses one thread besides the caller's, plus the decryption's; signals are
 * left to the caller's thread. */
int tc_passfifo_run(const struct tc_ctx *ctx, const struct tc_passfifo_opts *o, struct tc_err *err);
