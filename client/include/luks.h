/* LUKS2 bindings on libcryptsetup, in Clevis's format: a "clevis" token
 * holding the JWE of a random passphrase, assigned to the keyslot that
 * passphrase opens. Every mutating operation is all-or-nothing: the user's
 * own keyslots are never modified, and every intermediate header state
 * still has a working way in (see luks.c for the order of steps). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <jansson.h>

#include "ctx.h"
#include "err.h"

/* Keyslots and tokens of a LUKS2 header, fixed by the format: what
 * crypt_keyslot_max(CRYPT_LUKS2) and crypt_token_max(CRYPT_LUKS2) say
 * (test-luks-token checks), known without loading libcryptsetup. */
#define TC_LUKS2_KEYSLOTS 32
#define TC_LUKS2_TOKENS 32

struct tc_luks_binding {
        int token;
        int slot;              /* -1: the token is assigned to no keyslot */
        bool slot_active;      /* false: an orphan (keyslot killed by hand) */
        char *jwe;             /* compact; NULL if malformed */
        char *malformed;       /* why the token is not a valid clevis token, or NULL */
        char *pin;             /* from the JWE header */
        json_t *config;        /* reconstructed pin configuration */
};

struct tc_luks_bindings {
        struct tc_luks_binding *items;
        size_t n;
};

/* The UUID of a LUKS device of any version (caller frees). */
int tc_luks_uuid(const char *device, char **uuid, struct tc_err *err);

void tc_luks_bindings_clear(struct tc_luks_bindings *b);
/* Every clevis token of the device. with_thp adds each tang server's signing
 * thumbprints to the reconstructed configs. */
int tc_luks_list(const char *device, bool with_thp, struct tc_luks_bindings *out, struct tc_err *err);
/* A clevis token's JSON (untrusted: read from a header) as a compact JWE;
 * -EINVAL saying what is wrong if it is not a clevis token. */
int tc_luks_token_jwe(const char *json, char **compact, struct tc_err *err);

/* How the user proves they may change the volume. */
struct tc_luks_auth {
        const uint8_t *passphrase;  /* or NULL: use existing_token */
        size_t passphrase_len;
        int existing_token;         /* -1: none */
};

struct tc_luks_bind_opts {
        const char *pin;
        const char *config;
        int slot;       /* -1: first free */
        int token;      /* -1: first free */
        struct tc_luks_auth auth;
};

/* Returns the keyslot bound (>= 0). */
int tc_luks_bind(const struct tc_ctx *ctx, const char *device, const struct tc_luks_bind_opts *o, struct tc_err *err);
enum {
        TC_LUKS_UNBIND_FORCE = 1 << 0,      /* slot need not be a binding */
        TC_LUKS_UNBIND_LAST_LOCAL = 1 << 1, /* may remove the last way in that needs no server */
};
/* Never removes the last keyslot; nor, without TC_LUKS_UNBIND_LAST_LOCAL, the
 * last one that opens without a server (a passphrase, key file, another
 * tool's token, or a tpm2 binding: not a tang or null binding). */
int tc_luks_unbind(const char *device, int slot, unsigned flags, struct tc_err *err);
/* The passphrase of slot's binding, verified against that slot only. */
int tc_luks_pass(const struct tc_ctx *ctx, const char *device, int slot, uint8_t **key, size_t *key_len,
                 struct tc_err *err);
/* Opens the device with the first binding that works (all tried at once);
 * name NULL: only check. slot -1: any. Returns the keyslot used. */
int tc_luks_unlock(const struct tc_ctx *ctx, const char *device, const char *name, int slot, uint32_t flags,
                   struct tc_err *err);
/* The first binding's passphrase recovered, all tried at once, not checked
 * against its keyslot (whoever asked for it does that). Returns 0 with the
 * token it came from, -ENOENT if there is no usable binding, -EACCES if
 * none could be decrypted. Only decryption runs in other threads: the
 * caller may run several at once. */
int tc_luks_bindings_recover(const struct tc_ctx *ctx, const char *device, const struct tc_luks_bindings *bindings,
                             int *token, uint8_t **key, size_t *key_len, struct tc_err *err);
/* 0 if key opens slot (one PBKDF run of that slot), -EBADMSG if not. */
int tc_luks_key_opens(const char *device, int slot, const uint8_t *key, size_t len, struct tc_err *err);
/* The same for a device the caller holds open (the token plugin). */
struct crypt_device;
int tc_luks_recover(const struct tc_ctx *ctx, struct crypt_device *cd, const char *device, int *token, uint8_t **key,
                    size_t *key_len, struct tc_err *err);
/* Asked for a passphrase that opens the volume, when one is needed; *pass
 * is freed with tc_secret_free(). */
typedef int (*tc_luks_passphrase_fn)(void *data, uint8_t **pass, size_t *len, struct tc_err *err);

struct tc_luks_rebind_opts {
        const char *config;                /* edit: the new configuration; NULL: regen */
        bool force;                        /* edit: even if config is the binding's own */
        /* For a binding whose key is gone (its tang server answers 404): a
         * passphrase of another keyslot lets the slot take a new key, as
         * Clevis does. NULL: such a binding is refused. */
        tc_luks_passphrase_fn passphrase;
        void *passphrase_data;
};

/* Re-encrypts slot's key to the servers' current keys (config as bound, or
 * o->config for edit), replacing the token in one header write. A tang
 * server that the binding lists is trusted as regen trusts it: when a
 * signing key the binding holds vouches for what it serves now. Edit
 * returns -EALREADY, changing nothing, when o->config is what the binding
 * lists (unless o->force). If the key is gone, the keyslot gets a new key
 * (token first, then keyslot, as bind): the passphrase's own keyslot is
 * never touched. Returns 0, or 1 with err saying what the user should know
 * (where an interrupted re-key's binding is now, and why). */
int tc_luks_rebind(const struct tc_ctx *ctx, const char *device, int slot, const struct tc_luks_rebind_opts *o,
                   struct tc_err *err);

/* What a tang server of a binding says about the keys the binding uses.
 * Ordered from good to bad: a binding is as bad as its worst server. */
enum tc_report_state {
        TC_REPORT_UNCHECKED,    /* binding: no tang server to ask (null, tpm2 pins) */
        TC_REPORT_CURRENT,      /* the server advertises every key the binding uses */
        TC_REPORT_UNREACHABLE,  /* the server could not be asked (error says why) */
        TC_REPORT_ROTATED,      /* not advertised, but /adv/THP answers: the server still has it */
        TC_REPORT_DELETED,      /* /adv/THP answers 404: the server no longer has it */
        TC_REPORT_REVOKED,      /* a per-host URL the server's administrator revoked (error says so) */
        TC_REPORT_INVALID,      /* binding: its token cannot be read (error says why) */
};

struct tc_luks_report_key {
        char *thp;             /* S256 thumbprint */
        bool signing;          /* else an exchange key */
        bool advertised;
};

struct tc_luks_report_server {
        char *url;             /* from the header: untrusted text */
        enum tc_report_state state;
        char *error;           /* unreachable: why */
        bool kid_advertised;   /* the binding's exchange key is advertised: only signing keys are stale */
        struct tc_luks_report_key *keys;
        size_t n_keys;
};

struct tc_luks_report_binding {
        int slot;              /* -1: a token assigned to no keyslot */
        int token;
        char *pin;             /* NULL if unknown */
        enum tc_report_state state;   /* the worst of its servers' */
        char *error;           /* invalid: why */
        struct tc_luks_report_server *servers;  /* every tang server, sss children too */
        size_t n_servers;
};

struct tc_luks_report {
        struct tc_luks_report_binding *bindings;
        size_t n;
};

/* Asks every tang server of slot's binding (slot -1: of every binding of
 * the device) about the keys the binding uses. A server that cannot be
 * asked is marked unreachable, not fatal; with slot -1 an orphan or
 * malformed token is an invalid binding. Fails only if the device cannot
 * be read, slot is no binding, or the device has none (-ENOENT). */
int tc_luks_report(const struct tc_ctx *ctx, const char *device, int slot, struct tc_luks_report *out,
                   struct tc_err *err);
void tc_luks_report_clear(struct tc_luks_report *r);
/* "current", "rotated", "deleted", "revoked", "unreachable", "unchecked", "invalid" */
const char *tc_luks_report_state_name(enum tc_report_state s);
/* Stale: it uses a key its server no longer advertises (rotated, deleted). */
static inline bool tc_luks_report_stale(enum tc_report_state s) {
        return s == TC_REPORT_ROTATED || s == TC_REPORT_DELETED;
}
/* The report as JSON: {"device":..,"bindings":[{"slot","token","pin","state",
 * "error"?,"servers":[{"url","state","error"?,"keys":[{"thp","use",
 * "advertised"}]}]}]}. NULL when out of memory. */
json_t *tc_luks_report_json(const char *device, const struct tc_luks_report *r);

/* Test builds: TETHER_FAULT=POINT makes the step named POINT fail,
 * TETHER_FAULT=POINT:kill ends the process there, as a crash would. */
int tc_fault(const char *point, struct tc_err *err);
