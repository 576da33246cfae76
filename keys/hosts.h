/* Per-host exchange keys: KEYDIR/hosts/NAME/ holds one host's ECMR keys in
 * Tang's format (THP.jwk advertised, .THP.jwk rotated) and a file "state"
 * (one line: active, revoked or held). An administrator's permission for
 * one recovery of a held host is a file allow-<hex> there, which the server
 * removes when it spends it.
 *
 * The shared keys stay in KEYDIR as *.jwk files, so tangd still serves the directory
 * (it reads only the *.jwk files of KEYDIR). Nothing here prints or exits. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include "keyset.h"

#define TK_HOSTS_SUBDIR "hosts"
#define TK_HOST_NAME_MAX 63
#define TK_HOST_ALLOW_PREFIX "allow-"

enum tk_host_state {
        TK_HOST_ACTIVE,
        TK_HOST_REVOKED,
        TK_HOST_HELD,
        TK_HOST_STATE_MAX,
};

struct tk_host {
        char *name;
        char *dir;                  /* KEYDIR/hosts/NAME */
        enum tk_host_state state;
        struct tk_keyset *ks;       /* the host's exchange keys */
        size_t n_allow;             /* allow tokens present at load */
};

struct tk_hosts {
        struct tk_host *hosts;      /* sorted by name */
        size_t n;
};

/* Whether name may name a host: [a-z0-9][a-z0-9._-]{0,62}, no "..". It
 * becomes a directory name and part of a URL, so nothing else is allowed. */
bool tk_host_name_valid(const char *name);
/* The same for len bytes (a name inside a request target). */
bool tk_host_name_valid_n(const char *name, size_t len);

const char *tk_host_state_name(enum tk_host_state s);
/* -EINVAL when text is none of the names. */
int tk_host_state_parse(const char *text, enum tk_host_state *ret);

/* Reads KEYDIR/hosts/NAME/state. A missing state file is "active" (a host
 * directory copied without it must not lock its clients out); anything
 * else unreadable or unknown is an error: the server must not guess
 * "active" for a file it cannot read (it may say "revoked"). */
int tk_host_state_read(const char *keydir, const char *name, enum tk_host_state *ret, struct tc_err *err);
/* Writes the state file atomically: temporary file, fsync, rename, fsync of
 * the directory. */
int tk_host_state_write(const char *keydir, const char *name, enum tk_host_state s, struct tc_err *err);

/* Loads every host of KEYDIR/hosts (none when it does not exist), taking
 * over unchanged keys from prev (may be NULL). A host whose directory or
 * state cannot be read is skipped and reported through warn (file is
 * "hosts/NAME"); so are entries with invalid names. */
int tk_hosts_load(const char *keydir, const struct tk_hosts *prev, tk_warn_fn warn, void *userdata,
                  struct tk_hosts **ret);
void tk_hosts_free(struct tk_hosts *h);
TC_DEFINE_CLEANUP(struct tk_hosts *, tk_hosts_free)
const struct tk_host *tk_hosts_find(const struct tk_hosts *h, const char *name, size_t len);

/* Creates KEYDIR/hosts/NAME with one exchange key and the state "active".
 * The directories belong to KEYDIR's owner when run as root (the server
 * must be able to remove allow tokens there). The key file's name goes to
 * *exc_out when not NULL. -EEXIST when the host exists. */
int tk_host_add(const char *keydir, const char *name, char **exc_out, struct tc_err *err);
/* Removes the host's directory with its keys: volumes bound to them are
 * lost. Refused (-EBUSY) unless the host is revoked, or force. */
int tk_host_delete(const char *keydir, const char *name, bool force, struct tc_err *err);
/* A new exchange key, then the advertised ones hidden (still used for
 * recovery). The new key's file name goes to *exc_out when not NULL. */
int tk_host_rotate(const char *keydir, const char *name, char **exc_out, struct tc_err *err);
/* Creates an allow token (atomically: written under a temporary name, then
 * renamed); its file name goes to *token_out when not NULL. */
int tk_host_allow(const char *keydir, const char *name, char **token_out, struct tc_err *err);
/* Spends one allow token of the host directory path: 0 when one was
 * removed by this call, -ENOENT when there is none left. unlink() succeeds
 * for exactly one caller per token, across processes and restarts. */
int tk_host_allow_consume(const char *host_dir);
/* Whether the host exists (its directory does): 0, -ENOENT, or an error
 * with err set (also for an invalid name, -EINVAL). */
int tk_host_check(const char *keydir, const char *name, struct tc_err *err);
