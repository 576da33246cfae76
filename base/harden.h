/* Keeping secrets out of core dumps, other processes and freed memory.
 *
 * Only for programs of our own that hold private keys or unwrapped secrets
 * (tetherd, tether-keys, the tether CLI): a library loaded into someone
 * else's process (the token plugin) must not change that process's core
 * dumps or jansson's allocator, and wipes its own secrets instead. */
#pragma once

#include "cleanup.h"

/* No core dumps (RLIMIT_CORE 0) and not dumpable: neither ptrace nor
 * /proc/PID/mem for other processes of the same user, only for root. Then
 * every value jansson (and libjose through it) frees is wiped first, key
 * files' "d" included. Call first thing in main(), before any JSON exists.
 * Returns 0, or a negative errno when core dumps stay possible (the caller
 * warns and goes on: systemd units also set LimitCORE=0). */
int tk_harden_process(void);

/* free() that wipes the whole allocation first: for buffers that held
 * secrets and for strings jansson returned (json_dumps). */
void tk_erase_free(void *p);
TC_DEFINE_CLEANUP_ANY(tk_erase_free)
#define _cleanup_erase_free_ _cleanup_(tk_erase_freep)
