/* The key directory: Tang's on-disk format, loaded once into typed structs.
 *
 * Used by tetherd (to serve) and tether-keys (to administer). Nothing here
 * prints or exits: failures are a negative errno plus, where there is more
 * to say than the errno, a message in a struct tc_err (base/err.h); files
 * skipped while loading are reported through a warning callback, with a
 * message built the same way. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <time.h>
#include <sys/types.h>
#include <jansson.h>
#include <openssl/ec.h>

#include "cleanup.h"
#include "err.h"

/* Every key is findable by each of these thumbprint hashes (old clevis
 * bindings carry S1 kids). */
enum { TK_HASH_S1, TK_HASH_S224, TK_HASH_S256, TK_HASH_S384, TK_HASH_S512, TK_HASH_COUNT };
extern const char *const tk_hash_names[TK_HASH_COUNT];

enum tk_role {
        TK_ROLE_OTHER,      /* parsed, but neither signs nor derives */
        TK_ROLE_SIGNING,    /* permits sign and verify */
        TK_ROLE_EXCHANGE,   /* permits deriveKey */
};

/* A private EC scalar validated against its public point, ready for
 * McCallum-Relyea: only exchange keys that /rec may use carry one. */
struct tk_ecmr_key {
        EC_GROUP *group;
        BIGNUM *d;
        size_t coord_len;   /* bytes per coordinate, e.g. 66 for P-521 */
        const char *crv;    /* JWK curve name */
};

/* The file a key was read from, as it was then: key files are replaced by
 * rename (a new inode) and an edit in place changes ctime, which no one can
 * set, so a file with the same name and identity holds the same key (short
 * of two same-size edits in place within one tick of the file clock). */
struct tk_file_id {
        dev_t dev;
        ino_t ino;
        off_t size;
        struct timespec mtime, ctime;
};

struct tk_key {
        char *file;                      /* name inside the directory */
        struct tk_file_id id;
        bool hidden;                     /* ".X.jwk": rotated, never advertised */
        enum tk_role role;
        json_t *jwk;                     /* the whole private JWK */
        char *thp[TK_HASH_COUNT];        /* base64url thumbprints */
        const char *crv;                 /* points into jwk, may be NULL */
        struct tk_ecmr_key *ecmr;        /* exchange keys /rec accepts, else NULL */
};

struct tk_keyset {
        struct tk_key *keys;             /* sorted by file name */
        size_t n_keys;
        size_t n_advertised_files;       /* advertised *.jwk files holding JSON, as tang counts */
};

/* A file skipped is no failure: the load goes on, so there is nothing to
 * return it with. The callback hears of each one as it is met and decides
 * whether to log, print or collect it. why is built by tc_fail like every
 * message of this library (escaped, a tc_err the caller may keep or wrap)
 * and says what is wrong as the words that follow the file's name ("is not
 * valid JSON"): the name comes apart, because callers show names their own
 * way (tetherd's log turns unsafe bytes into '?'). */
typedef void (*tk_warn_fn)(void *userdata, const char *file, const struct tc_err *why);

/* Loads every *.jwk file of dir. Invalid files are skipped and reported
 * through warn (may be NULL). Returns 0 or a negative errno (directory
 * unreadable). */
int tk_keyset_load(const char *dir, tk_warn_fn warn, void *userdata, struct tk_keyset **ret);
/* The same, taking over from prev (may be NULL) every key whose file is
 * unchanged instead of parsing and validating it again: a reload of a big
 * directory then costs a stat per key, not a scalar multiplication. */
int tk_keyset_load_reusing(const char *dir, const struct tk_keyset *prev, tk_warn_fn warn, void *userdata,
                           struct tk_keyset **ret);
void tk_keyset_free(struct tk_keyset *ks);
/* Adds jwk (taken over, also on failure) as the key of file name, checked as
 * a loaded file is, keeping the set sorted by name: for a server that keeps
 * serving a key whose file it can no longer read. -EEXIST when name is
 * already in the set. err says what is wrong with the key as tk_warn_fn's
 * why does ("is an exchange key whose ..."). */
int tk_keyset_add(struct tk_keyset *ks, const char *name, json_t *jwk, struct tc_err *err);
TC_DEFINE_CLEANUP(struct tk_keyset *, tk_keyset_free)

/* Whether /rec may use this key the way tang decides it: key_ops or use must
 * explicitly allow deriveKey, it must have "d", alg absent or ECMR. */
bool tk_key_allows_recovery(const json_t *jwk);

size_t tk_keyset_count(const struct tk_keyset *ks, enum tk_role role, bool hidden);

/* Thumbprint (base64url) of jwk with one of tk_hash_names. Caller frees. */
char *tk_thumbprint(const json_t *jwk, const char *hash);

/* Generates a signing (ES512) and an exchange (ECMR) P-521 key in dir, each
 * written atomically (temporary file, fsync, rename) with mode 0440 under
 * umask 0337. Names default to the S256 thumbprints. On failure nothing is
 * left behind. The created file names go to sig_out/exc_out when not NULL. */
int tk_keygen_pair(const char *dir, const char *sig_name, const char *exc_name,
                   char **sig_out, char **exc_out, struct tc_err *err);

/* Generates one P-521 key for alg ("ES512", "ECMR") in the directory dfd,
 * written as tk_key_file_write does, named after its S256 thumbprint; the
 * file name goes to *out. */
int tk_keygen_one(int dfd, const char *alg, char **out, struct tc_err *err);
/* Renames the advertised key file name of dfd to a hidden name no file has
 * yet (".X.jwk", else ".X.N.jwk"), written to hidden. Negative errno. */
int tk_key_hide(int dfd, const char *name, char *hidden, size_t len);

/* Writes jwk to the key file name of the directory dfd through a temporary
 * file (fsync, then rename without replacing): the name appears complete or
 * not at all, never with more permissions than 0440, and an existing file
 * is never replaced (-EEXIST). Run as root, the file goes to uid:gid, or to
 * the directory's owner when uid is (uid_t) -1. */
int tk_key_file_write(int dfd, const char *name, const json_t *jwk, uid_t uid, gid_t gid, struct tc_err *err);

/* What a rotation did: the new pair's files and, for each advertised key,
 * the hidden name it got. */
struct tk_rotation {
        char *sig, *exc;
        char **hidden_from, **hidden_to;
        size_t n_hidden;
};
void tk_rotation_clear(struct tk_rotation *rot);

/* Generates a new pair first, then hides every advertised key (X.jwk ->
 * .X.jwk, or .X.N.jwk when a rotated key has that name: no file is ever
 * overwritten), so the directory never lacks an advertised pair. When a key
 * cannot be hidden, the rotation is undone (the new pair removed, the keys
 * already hidden renamed back) and err says whether that worked. */
int tk_rotate_keys(const char *dir, struct tk_rotation *rot, struct tc_err *err);
/* The same, for callers that need not know the names. */
int tk_rotate(const char *dir, struct tc_err *err);

/* Builds the advertisement payload {"keys":[public advertised keys]} and
 * signs it with every advertised signing key plus extra_signer (may be NULL).
 * Returns the JWS (flattened with one signature, general with several). */
json_t *tk_adv_sign(const struct tk_keyset *ks, const json_t *extra_signer);
/* The same with the advertised exchange keys of exchange (when not NULL)
 * instead of those of ks: a host's advertisement, signed by the shared
 * signing keys, so that the thp a client pins is the same for every host. */
json_t *tk_adv_sign_keys(const struct tk_keyset *ks, const struct tk_keyset *exchange, const json_t *extra_signer);

/* Verifies that every verify-key of the JWS payload signed it; the payload's
 * key set goes to *ret. -EBADMSG when jws is no such advertisement. */
int tk_adv_verify(const json_t *jws, json_t **ret, struct tc_err *err);

/* What a migration did: the key files it wrote, those that held the same
 * key already (a second run), how many keys the source serves, and how many
 * temporary files an interrupted earlier run had left in dst (removed). */
struct tk_migration {
        char **copied;
        size_t n_copied;
        char **present;
        size_t n_present;
        size_t n_advertised, n_rotated;
        size_t n_stale;
};
void tk_migration_clear(struct tk_migration *m);

/* Takes over the keys of another server's key directory src (Tang's): every
 * key file it serves, advertised (X.jwk) and rotated (.X.jwk), is written to
 * dst under the same name with tk_key_file_write (mode 0440, owner uid:gid
 * when run as root and uid is not (uid_t) -1). dst is created (mode 0750,
 * same owner) when missing; src is only read. Before writing anything it
 * refuses a dst that holds a different key under one of the names, or keys
 * src does not have: the keys served must be exactly src's. A file src
 * holds that cannot be read fails it (a binding could be lost); files that
 * hold no key (the ones tang skips too) go to warn and are not copied.
 * Afterwards dst is loaded again and must serve the same keys under the
 * same names (thumbprints, advertised or rotated); otherwise the files
 * written are removed again. Running it again is harmless. It also refuses
 * a dst, or a key file already there, that the keys' owner (uid:gid as
 * root, else dst's owner, or whoever runs it) could not read: tetherd would
 * not see the keys. Before the first write it removes the temporary files
 * (.tether-new-*.tmp, regular files only) that a killed run left in dst. */
int tk_migrate(const char *src, const char *dst, uid_t uid, gid_t gid, tk_warn_fn warn, void *userdata,
               struct tk_migration *m, struct tc_err *err);
