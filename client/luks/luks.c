/* LUKS2 bindings on libcryptsetup. The order of header writes is what keeps
 * a way in under any failure or crash:
 *
 *   bind:   encrypt the new key (network) before touching the header; write
 *           the token unassigned; add the keyslot (PBKDF2, 1000 iterations);
 *           assign the token to it. Interrupted anywhere, the user's slot is
 *           untouched and every new keyslot has its key in a token.
 *   unbind: destroy the keyslot, then the token (an interrupted unbind
 *           leaves an orphan token, which list and report show).
 *   regen/edit: the keyslot keeps its key; only the token is replaced, in
 *           one header write. A re-key (the server lost the key) moves the
 *           binding through a spare keyslot: see rekey_to_spare(). */
#include "luks.h"
#include "cleanup.h"
#include "fanout.h"
#include "jwe.h"
#include "pin.h"
#include "tang.h"
#include "tether.h"

#include <errno.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <jose/b64.h>
#include <jose/jwk.h>
#include <jose/jws.h>
#include "keyset.h"
#include "cryptsetup-dl.h"
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>

#define BIND_KEY_BYTES 32       /* 256 bits of entropy, as base64url text */
#define BIND_PBKDF2_ITERATIONS 1000

TC_DEFINE_CLEANUP(struct crypt_device *, crypt_free)

int tc_fault(const char *point, struct tc_err *err) {
#ifdef TETHER_FAULT_INJECTION
        const char *f = getenv("TETHER_FAULT");
        size_t n = strlen(point);
        if (f && strncmp(f, point, n) == 0) {
                if (strcmp(f + n, ":kill") == 0)
                        _exit(99);
                if (f[n] == '\0')
                        return tc_fail(err, -EIO, "fault injected at %s", point);
        }
#else
        (void) point, (void) err;
#endif
        return 0;
}

/* Why crypt_init() refused device: it says "Block device required"
 * (-ENOTBLK) for a path that does not exist and for one it may not read
 * alike, so the path is looked at here. */
static int cannot_open(const char *device, int r, struct tc_err *err) {
        struct stat st;
        if (stat(device, &st) < 0)
                return tc_fail(err, -errno, "%s: %s", device,
                               errno == ENOENT ? "no such device or file (check the -d argument)"
                               : errno == EACCES ? "permission denied on its path (run as root?)"
                                                 : strerror(errno));
        if (S_ISDIR(st.st_mode))
                return tc_fail(err, -EISDIR, "%s is a directory: give the LUKS2 device or image file", device);
        if (access(device, R_OK) < 0)
                return tc_fail(err, -errno, "%s: %s", device,
                               errno == EACCES || errno == EPERM ? "permission denied (run as root?)" : strerror(errno));
        return tc_fail(err, r, "%s: cannot open: %s", device, strerror(-r));
}

/* A LUKS device of any version, its header loaded. */
static int open_luks(const char *device, struct crypt_device **ret, struct tc_err *err) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        int r = tc_cryptsetup_load(err);
        if (r < 0)
                return r;
        r = crypt_init(&cd, device);
        if (r < 0)
                return cannot_open(device, r, err);
        r = crypt_load(cd, CRYPT_LUKS, NULL);
        if (r < 0)
                return tc_fail(err, r, "%s is not a LUKS device", device);
        *ret = TAKE_PTR(cd);
        return 0;
}

static int open_luks2(const char *device, struct crypt_device **ret, struct tc_err *err) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        int r = open_luks(device, &cd, err);
        if (r < 0)
                return r;
        if (strcmp(crypt_get_type(cd), CRYPT_LUKS1) == 0)
                return tc_fail(err, -EOPNOTSUPP,
                               "%s: LUKS1 is not supported; convert with cryptsetup convert --type luks2", device);
        *ret = TAKE_PTR(cd);
        return 0;
}

int tc_luks_uuid(const char *device, char **uuid, struct tc_err *err) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        int r = open_luks(device, &cd, err);
        if (r < 0)
                return r;
        const char *u = crypt_get_uuid(cd);
        if (!u)
                return tc_fail(err, -EINVAL, "%s has no UUID", device);
        *uuid = strdup(u);
        return *uuid ? 0 : tc_fail(err, -ENOMEM, "out of memory");
}

/* ---------------------------------------------------------------- tokens */

static char *token_to_compact(const json_t *token) {
        const json_t *jwe = json_object_get(token, "jwe");
        const char *p = json_string_value(json_object_get(jwe, "protected"));
        const char *k = json_string_value(json_object_get(jwe, "encrypted_key"));
        const char *iv = json_string_value(json_object_get(jwe, "iv"));
        const char *c = json_string_value(json_object_get(jwe, "ciphertext"));
        const char *t = json_string_value(json_object_get(jwe, "tag"));
        char *out = NULL;
        if (!p || !iv || !c || !t)
                return NULL;
        return asprintf(&out, "%s.%s.%s.%s.%s", p, k ? k : "", iv, c, t) < 0 ? NULL : out;
}

/* A keyslot number as cryptsetup and Clevis write it: "0".."31", decimal,
 * no sign, no leading zero, no space. Anything else is not guessed at. */
static int parse_keyslot_text(const char *v, size_t n) {
        int slot = 0;
        if (!v || n == 0 || n > 2 || (v[0] == '0' && n > 1))
                return -EINVAL;
        for (size_t i = 0; i < n; i++) {
                if (v[i] < '0' || v[i] > '9')
                        return -EINVAL;
                slot = slot * 10 + (v[i] - '0');
        }
        return slot < TC_LUKS2_KEYSLOTS ? slot : -EINVAL;
}

static int parse_keyslot(const json_t *s) {
        const char *v = json_string_value(s);
        return v ? parse_keyslot_text(v, strlen(v)) : -EINVAL;
}

/* The one reading of a clevis token (untrusted: anyone with the disk can
 * write it), for the bindings list, the token plugin and the fuzzers alike.
 * *slot is -1 for a token assigned to no keyslot (an interrupted bind). */
static int parse_token(const char *json, int *slot, char **compact, struct tc_err *err) {
        json_auto_t *token = json_loads(json, 0, NULL);
        if (!json_is_object(token))
                return tc_fail(err, -EINVAL, "clevis token is not a JSON object");
        const char *type = json_string_value(json_object_get(token, "type"));
        if (!type || strcmp(type, "clevis") != 0)
                return tc_fail(err, -EINVAL, "token type is not \"clevis\"");
        json_t *slots = json_object_get(token, "keyslots");
        if (!json_is_array(slots))
                return tc_fail(err, -EINVAL, "clevis token has no \"keyslots\" array");
        if (json_array_size(slots) > 1)
                return tc_fail(err, -EINVAL, "clevis token is assigned to %zu keyslots (Clevis assigns one)",
                               json_array_size(slots));
        int s = -1;
        if (json_array_size(slots) == 1 && (s = parse_keyslot(json_array_get(slots, 0))) < 0) {
                const char *v = json_string_value(json_array_get(slots, 0));
                return tc_fail(err, -EINVAL, "clevis token: keyslot %s%.16s%s is not a keyslot number (0 to %d)",
                               v ? "\"" : "", v ? v : "(not a string)", v ? "\"" : "", TC_LUKS2_KEYSLOTS - 1);
        }
        char *c = token_to_compact(token);
        if (!c)
                return tc_fail(err, -EINVAL, "clevis token: \"jwe\" lacks protected, iv, ciphertext or tag");
        *slot = s;
        *compact = c;
        return 0;
}

int tc_luks_token_jwe(const char *json, char **compact, struct tc_err *err) {
        int slot;
        return parse_token(json, &slot, compact, err);
}

static json_t *compact_to_token(const char *compact, int slot) {
        const char *part[5];
        size_t len[5], n = 0;
        for (const char *p = compact; n < 5; n++) {
                const char *dot = strchr(p, '.');
                part[n] = p;
                len[n] = dot ? (size_t) (dot - p) : strlen(p);
                if (!dot) {
                        n++;
                        break;
                }
                p = dot + 1;
        }
        if (n != 5)
                return NULL;
        json_t *slots = json_array();
        if (slot >= 0) {
                char s[16];
                snprintf(s, sizeof(s), "%d", slot);
                json_array_append_new(slots, json_string(s));
        }
        return json_pack("{s:s,s:o,s:{s:s%,s:s%,s:s%,s:s%,s:s%}}", "type", "clevis", "keyslots", slots, "jwe",
                         "ciphertext", part[3], len[3], "encrypted_key", part[1], len[1], "iv", part[2], len[2],
                         "protected", part[0], len[0], "tag", part[4], len[4]);
}

static int token_write(struct crypt_device *cd, int token, const json_t *json, struct tc_err *err) {
        _cleanup_free_ char *text = json_dumps(json, JSON_COMPACT);
        if (!text)
                return tc_fail(err, -ENOMEM, "out of memory");
        int r = crypt_token_json_set(cd, token, text);
        return r < 0 ? tc_fail(err, r, "cannot write the LUKS2 token: %s", strerror(-r)) : r;
}

void tc_luks_bindings_clear(struct tc_luks_bindings *b) {
        for (size_t i = 0; i < b->n; i++) {
                free(b->items[i].jwe);
                free(b->items[i].pin);
                free(b->items[i].malformed);
                json_decref(b->items[i].config);
        }
        free(b->items);
        memset(b, 0, sizeof(*b));
}

static int read_bindings(struct crypt_device *cd, bool with_thp, struct tc_luks_bindings *out, struct tc_err *err) {
        int max = TC_LUKS2_TOKENS;
        memset(out, 0, sizeof(*out));
        out->items = calloc((size_t) max, sizeof(*out->items));
        if (!out->items)
                return tc_fail(err, -ENOMEM, "out of memory");
        for (int t = 0; t < max; t++) {
                const char *type = NULL, *text = NULL;
                crypt_token_info info = crypt_token_status(cd, t, &type);
                if (info == CRYPT_TOKEN_INACTIVE || info == CRYPT_TOKEN_INVALID || !type || strcmp(type, "clevis") != 0)
                        continue;
                if (crypt_token_json_get(cd, t, &text) < 0)
                        continue;
                struct tc_luks_binding *b = &out->items[out->n++];
                struct tc_err why = {};
                b->token = t;
                if (parse_token(text, &b->slot, &b->jwe, &why) < 0) {
                        /* Kept, so that list and the errors can name it. */
                        b->slot = -1;
                        b->malformed = strdup(why.msg);
                        if (!b->malformed)
                                return tc_fail(err, -ENOMEM, "out of memory");
                        continue;
                }
                if (b->slot >= 0) {
                        crypt_keyslot_info ki = crypt_keyslot_status(cd, b->slot);
                        b->slot_active = ki == CRYPT_SLOT_ACTIVE || ki == CRYPT_SLOT_ACTIVE_LAST;
                }
                b->config = tc_jwe_config(b->jwe, with_thp, &b->pin);
        }
        return 0;
}

/* The caller clears out, and frees cd also on failure. */
static int open_bindings(const char *device, bool with_thp, struct crypt_device **cd, struct tc_luks_bindings *out,
                         struct tc_err *err) {
        int r = open_luks2(device, cd, err);
        return r < 0 ? r : read_bindings(*cd, with_thp, out, err);
}

int tc_luks_list(const char *device, bool with_thp, struct tc_luks_bindings *out, struct tc_err *err) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        return open_bindings(device, with_thp, &cd, out, err);
}

/* "slot N is not a binding", naming a token that may explain why. */
static int not_bound(const struct tc_luks_bindings *b, const char *device, int slot, struct tc_err *err) {
        for (size_t i = 0; i < b->n; i++)
                if (b->items[i].malformed)
                        return tc_fail(err, -ENOENT,
                                       "%s: slot %d is not a tether/clevis binding; token %d is not a valid clevis token (%s)",
                                       device, slot, b->items[i].token, b->items[i].malformed);
        for (size_t i = 0; i < b->n; i++)
                if (b->items[i].slot < 0 || !b->items[i].slot_active)
                        return tc_fail(err, -ENOENT,
                                       "%s: slot %d is not a tether/clevis binding; token %d is an orphan (its keyslot is gone)",
                                       device, slot, b->items[i].token);
        return tc_fail(err, -ENOENT, "%s: slot %d is not a tether/clevis binding", device, slot);
}

static const struct tc_luks_binding *binding_for_slot(const struct tc_luks_bindings *b, int slot) {
        for (size_t i = 0; i < b->n; i++)
                if (b->items[i].slot == slot)
                        return &b->items[i];
        return NULL;
}

/* The binding of a keyslot in use; an orphan token is named as such. */
static int slot_binding(const struct tc_luks_bindings *bindings, const char *device, int slot,
                        const struct tc_luks_binding **ret, struct tc_err *err) {
        const struct tc_luks_binding *b = binding_for_slot(bindings, slot);
        if (!b)
                return not_bound(bindings, device, slot, err);
        if (!b->slot_active)
                return tc_fail(err, -ENOENT, "%s: token %d points at slot %d, which is not in use (an orphan token)",
                               device, b->token, slot);
        *ret = b;
        return 0;
}

/* This slot only, with its cheap PBKDF2: no argon2 run anywhere. */
static int check_slot_key(struct crypt_device *cd, const char *device, int slot, const uint8_t *key, size_t len,
                          struct tc_err *err) {
        int r = crypt_activate_by_passphrase(cd, NULL, slot, (const char *) key, len, 0);
        if (r == -EPERM)
                return tc_fail(err, -EBADMSG, "%s: the key recovered for slot %d does not open it", device, slot);
        return r < 0 ? tc_fail(err, r, "%s slot %d: %s", device, slot, strerror(-r)) : 0;
}

/* ---------------------------------------------------------------- keys */

static int decrypt_binding(const struct tc_ctx *ctx, const char *device, const struct tc_luks_binding *b,
                           uint8_t **key, size_t *len, struct tc_err *err) {
        int r = tc_decrypt(ctx, b->jwe, strlen(b->jwe), key, len, err);
        return r < 0 ? tc_wrap(err, r, "%s slot %d", device, b->slot) : 0;
}

/* The volume key from a token of another type, as Clevis's -e does with
 * cryptsetup --token-id: libcryptsetup opens it (luks2-keyring: the
 * passphrase is a key in the kernel keyring; or a token plugin's type). */
static int volume_key_by_token(struct crypt_device *cd, const char *device, int token, uint8_t *vk, size_t *vk_len,
                               struct tc_err *err) {
        const char *type = NULL;
        /* One token, named: CRYPT_ANY_TOKEN (-1) would let any token of the
         * header stand in for the proof of access. */
        if (token < 0)
                return tc_fail(err, -EINVAL, "%s: token %d: not a token number", device, token);
        crypt_token_info status = crypt_token_status(cd, token, &type);
        if (status == CRYPT_TOKEN_INACTIVE || status == CRYPT_TOKEN_INVALID)
                return tc_fail(err, -ENOENT, "%s: there is no token %d", device, token);
#ifdef HAVE_CRYPT_KEYSLOT_CONTEXT
        if (!tc_cryptsetup_has_keyslot_context())
                return tc_fail(err, -EOPNOTSUPP,
                               "%s: token %d is not a clevis token; opening other tokens needs libcryptsetup 2.6 or "
                               "later, and the libcryptsetup in use (%s) is too old: give a passphrase that opens the "
                               "volume instead (-k KEYFILE, standard input or the terminal), or a clevis binding's token",
                               device, token, TC_CRYPTSETUP_SONAME);
        struct crypt_keyslot_context *kc = NULL;
        int r = crypt_keyslot_context_init_by_token(cd, token, NULL, NULL, 0, NULL, &kc);
        if (r >= 0)
                r = crypt_volume_key_get_by_keyslot_context(cd, CRYPT_ANY_SLOT, (char *) vk, vk_len, kc);
        crypt_keyslot_context_free(kc);
        if (r >= 0)
                return r;
        /* The type comes from the header: anyone could have written it. */
        _cleanup_free_ char *shown = tc_escape_dup(type ? type : "unknown");
        return tc_fail(err, r == -ENOENT || r == -EPERM ? -EPERM : r,
                       "%s: token %d (%s) does not open the volume%s: %s", device, token, shown ? shown : "?",
                       type && strcmp(type, "luks2-keyring") == 0
                               ? " (its passphrase is read from the kernel keyring: is the key it names there?)"
                               : "",
                       r == -ENOANO ? "it needs a PIN" : r == -ENOENT || r == -EPERM ? "no passphrase from it opens a keyslot" : strerror(-r));
#else
        (void) vk, (void) vk_len, (void) type;
        return tc_fail(err, -EOPNOTSUPP, "%s: token %d is not a clevis token; opening other tokens needs libcryptsetup 2.6",
                       device, token);
#endif
}

/* The volume key, from the user's passphrase or an existing binding: one
 * PBKDF run of that keyslot. */
static int volume_key(const struct tc_ctx *ctx, struct crypt_device *cd, const char *device,
                      const struct tc_luks_bindings *bindings, const struct tc_luks_auth *auth, uint8_t *vk,
                      size_t *vk_len, struct tc_err *err) {
        uint8_t *pass = NULL;
        size_t pass_len = 0;
        TC_CLEANUP_SECRET(pass, pass_len);
        int slot = CRYPT_ANY_SLOT, r;

        if (auth->passphrase) {
                r = crypt_volume_key_get(cd, CRYPT_ANY_SLOT, (char *) vk, vk_len, (const char *) auth->passphrase,
                                         auth->passphrase_len);
                /* -EKEYREJECTED: the passphrase, nothing else, was wrong (a
                 * person at the terminal may try again). */
                if (r == -EPERM)
                        return tc_fail(err, -EKEYREJECTED, "%s: no keyslot opens with that passphrase", device);
                return r < 0 ? tc_fail(err, r, "%s: %s", device, strerror(-r)) : r;
        }
        const struct tc_luks_binding *b = NULL;
        for (size_t i = 0; i < bindings->n; i++)
                if (bindings->items[i].token == auth->existing_token)
                        b = &bindings->items[i];
        if (!b)
                return volume_key_by_token(cd, device, auth->existing_token, vk, vk_len, err);
        if (b->slot < 0 || !b->slot_active)
                return tc_fail(err, -ENOENT, "%s: token %d is not a clevis binding of an active keyslot", device,
                               auth->existing_token);
        r = decrypt_binding(ctx, device, b, &pass, &pass_len, err);
        if (r < 0)
                return r;
        slot = b->slot;
        r = crypt_volume_key_get(cd, slot, (char *) vk, vk_len, (const char *) pass, pass_len);
        return r < 0 ? tc_fail(err, r, "%s: token %d's key does not open slot %d", device, auth->existing_token, slot) : r;
}

static int generate_passphrase(char *out, size_t out_size, struct tc_err *err) {
        uint8_t raw[BIND_KEY_BYTES];
        TC_CLEANUP_ERASE(raw);
        if (RAND_priv_bytes(raw, sizeof(raw)) != 1)
                return tc_fail(err, -EIO, "no randomness for the new key");
        size_t n = jose_b64_enc_buf(raw, sizeof(raw), out, out_size - 1);
        if (n == SIZE_MAX)
                return tc_fail(err, -EIO, "cannot encode the new key");
        out[n] = '\0';
        return (int) n;
}

static int free_keyslot(struct crypt_device *cd) {
        int max = crypt_keyslot_max(CRYPT_LUKS2);
        for (int s = 0; s < max; s++)
                if (crypt_keyslot_status(cd, s) == CRYPT_SLOT_INACTIVE)
                        return s;
        return -ENOSPC;
}

/* A keyslot for a binding's key: PBKDF2 with 1000 iterations, as Clevis's
 * (the key is random, so the slot opens fast). Returns the slot. */
static int add_keyslot(struct crypt_device *cd, const char *device, int slot, const uint8_t *vk, size_t vk_len,
                       const char *pass, size_t pass_len, struct tc_err *err) {
        struct crypt_pbkdf_type pbkdf = {
                .type = CRYPT_KDF_PBKDF2,
                .hash = "sha256",
                .iterations = BIND_PBKDF2_ITERATIONS,
                .flags = CRYPT_PBKDF_NO_BENCHMARK,
        };
        int r = crypt_set_pbkdf_type(cd, &pbkdf);
        if (r < 0)
                return tc_fail(err, r, "%s: cannot select PBKDF2: %s", device, strerror(-r));
        r = crypt_keyslot_add_by_volume_key(cd, slot, (const char *) vk, vk_len, pass, pass_len);
        /* -EINVAL: every keyslot is taken ("All key slots full"), or the
         * header on disk is newer than the one loaded (its sequence number:
         * another cryptsetup wrote it meanwhile), and nothing was written. */
        if (r < 0)
                return tc_fail(err, r, "%s: cannot add a keyslot: %s", device,
                               r == -ENOSPC || (r == -EINVAL && slot < 0 && free_keyslot(cd) < 0) ? "no free keyslot"
                               : r == -EINVAL ? "the LUKS2 header changed meanwhile (another cryptsetup or tether "
                                                "running?): nothing was added; run the same command again"
                                              : strerror(-r));
        return r;
}

/* ---------------------------------------------------------------- bind */

int tc_luks_bind(const struct tc_ctx *ctx, const char *device, const struct tc_luks_bind_opts *o, struct tc_err *err) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_(tc_luks_bindings_clear) struct tc_luks_bindings bindings = {};
        _cleanup_free_ char *jwe = NULL;
        json_auto_t *unassigned = NULL;
        char pass[64];
        TC_CLEANUP_ERASE(pass);
        uint8_t *vk = NULL;
        size_t vk_len = 0;
        int r, token = -1, slot = -1;

        r = open_luks2(device, &cd, err);
        if (r < 0)
                return r;
        if (o->slot >= 0) {
                crypt_keyslot_info ki = crypt_keyslot_status(cd, o->slot);
                if (ki == CRYPT_SLOT_INVALID)
                        return tc_fail(err, -EINVAL, "%s: there is no keyslot %d", device, o->slot);
                if (ki != CRYPT_SLOT_INACTIVE)
                        return tc_fail(err, -EBUSY, "%s: slot %d is already in use", device, o->slot);
        }
        if (o->token >= 0 && crypt_token_status(cd, o->token, NULL) != CRYPT_TOKEN_INACTIVE)
                return tc_fail(err, -EBUSY, "%s: token %d is already in use", device, o->token);
        r = read_bindings(cd, false, &bindings, err);
        if (r < 0)
                return r;

        vk_len = (size_t) crypt_get_volume_key_size(cd);
        vk = OPENSSL_secure_malloc(vk_len ? vk_len : 1);
        if (!vk) {
                r = tc_fail(err, -ENOMEM, "out of memory");
                goto out;
        }
        r = volume_key(ctx, cd, device, &bindings, &o->auth, vk, &vk_len, err);
        if (r < 0)
                goto out;
        r = generate_passphrase(pass, sizeof(pass), err);
        if (r < 0)
                goto out;
        size_t pass_len = (size_t) r;

        /* The network part first: nothing is written if a server is down. */
        r = tc_encrypt(ctx, o->pin, o->config, (const uint8_t *) pass, pass_len, &jwe, err);
        if (r < 0 || (r = tc_fault("bind-token", err)) < 0)
                goto out;

        unassigned = compact_to_token(jwe, -1);
        if (!unassigned) {
                r = tc_fail(err, -ENOMEM, "out of memory");
                goto out;
        }
        token = token_write(cd, o->token >= 0 ? o->token : CRYPT_ANY_TOKEN, unassigned, err);
        if (token < 0) {
                r = token;
                goto out;
        }
        if ((r = tc_fault("bind-keyslot", err)) < 0)
                goto rollback;
        slot = add_keyslot(cd, device, o->slot >= 0 ? o->slot : CRYPT_ANY_SLOT, vk, vk_len, pass, pass_len, err);
        if (slot < 0) {
                r = slot;
                slot = -1;
                goto rollback;
        }
        if ((r = tc_fault("bind-assign", err)) < 0)
                goto rollback;
        r = crypt_token_assign_keyslot(cd, token, slot);
        if (r < 0) {
                tc_fail(err, r, "%s: cannot assign token %d to slot %d: %s", device, token, slot, strerror(-r));
                goto rollback;
        }
        r = slot;
        goto out;

rollback:
        if (slot >= 0)
                crypt_keyslot_destroy(cd, slot);
        if (token >= 0)
                crypt_token_json_set(cd, token, NULL);
out:
        if (vk)
                OPENSSL_secure_clear_free(vk, vk_len ? vk_len : 1);
        return r;
}

/* ---------------------------------------------------------------- unbind */

/* A keyslot that opens the volume (an unbound keyslot holds some other key). */
static bool slot_opens(struct crypt_device *cd, int slot) {
        crypt_keyslot_info ki = crypt_keyslot_status(cd, slot);
        return ki == CRYPT_SLOT_ACTIVE || ki == CRYPT_SLOT_ACTIVE_LAST;
}

/* Whether a pin configuration opens without any server: tpm2, or an sss
 * whose threshold its local children meet. null does not count: it protects
 * nothing (and {"fail":true} never opens). Nor does a pin we do not know. */
static bool config_is_local(const char *pin, const json_t *cfg, unsigned depth) {
        if (!pin || !json_is_object(cfg) || depth > TC_SSS_MAX_DEPTH)
                return false;
        if (strcmp(pin, "tpm2") == 0)
                return true;
        if (strcmp(pin, "sss") != 0)
                return false;
        json_int_t t = json_integer_value(json_object_get(cfg, "t")), local = 0;
        const char *name;
        json_t *v, *c;
        size_t i;
        json_object_foreach(json_object_get(cfg, "pins"), name, v) {
                if (json_is_object(v))
                        local += config_is_local(name, v, depth + 1);
                else
                        json_array_foreach(v, i, c)
                                local += config_is_local(name, c, depth + 1);
        }
        return t >= 1 && local >= t;
}

/* Whether slot opens the volume without a server answering: a keyslot with
 * no clevis binding (a passphrase, a key file, another tool's token such as
 * systemd-tpm2 or fido2) or with a local one (tpm2). */
static bool slot_is_local_way_in(struct crypt_device *cd, const struct tc_luks_bindings *bindings, int slot) {
        if (!slot_opens(cd, slot))
                return false;
        const struct tc_luks_binding *b = binding_for_slot(bindings, slot);
        return !b || config_is_local(b->pin, b->config, 0);
}

static int count_slots(struct crypt_device *cd, const struct tc_luks_bindings *bindings, int except, bool local_only) {
        int n = 0;
        for (int s = 0; s < TC_LUKS2_KEYSLOTS; s++)
                if (s != except && (local_only ? slot_is_local_way_in(cd, bindings, s) : slot_opens(cd, s)))
                        n++;
        return n;
}

/* The ways in that must survive an unbind: some keyslot, always; and one
 * that does not need a server, unless the caller says it may go. */
static int check_ways_in(struct crypt_device *cd, const struct tc_luks_bindings *bindings, const char *device,
                         int slot, unsigned flags, struct tc_err *err) {
        if (count_slots(cd, bindings, slot, false) == 0)
                /* Not even with -f: a header is never left without a way in. */
                return tc_fail(err, -EPERM, "%s: slot %d is the last keyslot; removing it would lock the volume for good",
                               device, slot);
        if (!(flags & TC_LUKS_UNBIND_LAST_LOCAL) && slot_is_local_way_in(cd, bindings, slot) &&
            count_slots(cd, bindings, slot, true) == 0)
                return tc_fail(err, -EPERM,
                               "%s: slot %d is the last keyslot that opens without a server (passphrase, key file or "
                               "tpm2); without it the volume would open only through its network bindings, while their "
                               "servers answer. Add a passphrase first (cryptsetup luksAddKey %s), or pass "
                               "--remove-last-passphrase",
                               device, slot, device);
        return 0;
}

int tc_luks_unbind(const char *device, int slot, unsigned flags, struct tc_err *err) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_(tc_luks_bindings_clear) struct tc_luks_bindings bindings = {};
        int r = open_bindings(device, false, &cd, &bindings, err);
        if (r < 0)
                return r;
        const struct tc_luks_binding *b = binding_for_slot(&bindings, slot);
        crypt_keyslot_info ki = crypt_keyslot_status(cd, slot);
        bool active = ki == CRYPT_SLOT_ACTIVE || ki == CRYPT_SLOT_ACTIVE_LAST || ki == CRYPT_SLOT_UNBOUND;

        if (!b && !(flags & TC_LUKS_UNBIND_FORCE)) {
                r = not_bound(&bindings, device, slot, err);
                size_t len = strlen(err->msg);
                snprintf(err->msg + len, sizeof(err->msg) - len, " (-f removes the keyslot anyway)");
        } else if (!b && !active)
                r = tc_fail(err, -ENOENT, "%s: slot %d is not in use", device, slot);
        else if (active)
                r = check_ways_in(cd, &bindings, device, slot, flags, err);
        if (r < 0)
                return r;
        if (active && (r = tc_fault("unbind-keyslot", err)) == 0) {
                r = crypt_keyslot_destroy(cd, slot);
                if (r < 0)
                        tc_fail(err, r, "%s: cannot remove slot %d: %s", device, slot, strerror(-r));
        }
        if (r == 0 && b && (r = tc_fault("unbind-token", err)) == 0) {
                r = crypt_token_json_set(cd, b->token, NULL);
                if (r < 0)
                        tc_fail(err, r, "%s: slot %d removed, but not its token %d: %s", device, slot, b->token, strerror(-r));
                else
                        r = 0;
        }
        return r;
}

/* ---------------------------------------------------------------- pass */

int tc_luks_pass(const struct tc_ctx *ctx, const char *device, int slot, uint8_t **key, size_t *key_len,
                 struct tc_err *err) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_(tc_luks_bindings_clear) struct tc_luks_bindings bindings = {};
        const struct tc_luks_binding *b = NULL;
        uint8_t *k = NULL;
        size_t len = 0;
        TC_CLEANUP_SECRET(k, len);
        int r = open_bindings(device, false, &cd, &bindings, err);
        if (r >= 0)
                r = slot_binding(&bindings, device, slot, &b, err);
        if (r >= 0)
                r = decrypt_binding(ctx, device, b, &k, &len, err);
        if (r >= 0)
                r = check_slot_key(cd, device, slot, k, len, err);
        if (r < 0)
                return r;
        *key = TAKE_PTR(k);
        *key_len = len;
        return 0;
}

int tc_luks_key_opens(const char *device, int slot, const uint8_t *key, size_t len, struct tc_err *err) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        int r = open_luks2(device, &cd, err);
        return r < 0 ? r : check_slot_key(cd, device, slot, key, len, err);
}

/* ---------------------------------------------------------------- unlock */

struct race_entry {
        const struct tc_luks_binding *b;
        uint8_t *key;
        size_t len;
        struct tc_err err;
};

/* Offered each recovered key as it arrives; returns >= 0 to take it. */
typedef int (*race_accept_fn)(void *data, const struct tc_luks_binding *b, const uint8_t *key, size_t len,
                              struct tc_err *err);

struct race {
        struct tc_ctx ctx;          /* first (tc_ctx_fanout_cancel); cancelled
                                     * once a key is taken */
        const char *device;
        struct race_entry *entries;
        race_accept_fn accept;
        void *data;
        int taken;                  /* what accept() returned for the key taken */
};
_Static_assert(offsetof(struct race, ctx) == 0, "the fan-out hooks take the race for its context");

static int race_run(void *data, size_t i, struct tc_fanout *f) {
        struct race *race = data;
        struct race_entry *e = &race->entries[i];
        (void) f;  /* cancelled through race->ctx */
        return decrypt_binding(&race->ctx, race->device, e->b, &e->key, &e->len, &e->err);
}

/* In the caller's thread: libcryptsetup is not thread-safe. */
static int race_collect(void *data, size_t i, int r) {
        struct race *race = data;
        struct race_entry *e = &race->entries[i];
        if (r < 0)
                return r;
        r = race->accept(race->data, e->b, e->key, e->len, &e->err);
        if (r >= 0)
                race->taken = r;
        return r;
}

static const struct tc_fanout_ops race_ops = {
        .run = race_run,
        .collect = race_collect,
        TC_CTX_FANOUT_HOOKS,
};

/* "DEVICE: no binding could unlock it; REASON; REASON". why is what the
 * fan-out returned. */
static int race_failed(const char *device, const struct race_entry *entries, size_t n, int why, struct tc_err *err) {
        bool any = false;
        for (size_t i = 0; i < n; i++)
                any |= entries[i].err.msg[0] != '\0';
        /* Nothing ran: the fan-out itself could not start. */
        if (!any && why == -ENOMEM)
                return tc_fail(err, why, "out of memory");
        size_t len = (size_t) snprintf(err->msg, sizeof(err->msg), "%s: no binding could unlock it", device);
        for (size_t i = 0; i < n && len < sizeof(err->msg); i++)
                len += entries[i].err.msg[0]
                               ? (size_t) snprintf(err->msg + len, sizeof(err->msg) - len, "; %s", entries[i].err.msg)
                               : (size_t) snprintf(err->msg + len, sizeof(err->msg) - len, "; %s slot %d: cancelled",
                                                   device, entries[i].b->slot);
        return -EACCES;
}

/* Decrypts every usable binding (of slot, or all with -1) at once and offers
 * the keys to accept() in the order they arrive, in this thread. The rest are
 * cancelled once one is taken. Returns what accept() returned for the key
 * taken. */
static int race_bindings(const struct tc_ctx *ctx, const char *device, const struct tc_luks_bindings *bindings, int slot,
                         race_accept_fn accept, void *data, struct tc_err *err) {
        struct race race = { .device = device, .accept = accept, .data = data };
        size_t n = 0;

        _cleanup_free_ struct race_entry *entries = calloc(bindings->n ? bindings->n : 1, sizeof(*entries));
        if (!entries)
                return tc_fail(err, -ENOMEM, "out of memory");
        for (size_t i = 0; i < bindings->n; i++) {
                const struct tc_luks_binding *b = &bindings->items[i];
                if (b->slot_active && (slot < 0 || b->slot == slot))
                        entries[n++] = (struct race_entry) { .b = b };
        }
        if (n == 0)
                return tc_fail(err, -ENOENT, slot >= 0 ? "%s: slot %d has no usable binding" : "%s: no usable tether/clevis binding",
                               device, slot);
        race.entries = entries;
        tc_ctx_child(&race.ctx, ctx);
        /* One time limit for the race, not one per binding. */
        tc_ctx_set_deadline(&race.ctx);
        /* No thread budget: a thread for each binding (LUKS2 has 32 tokens at most). */
        int r = tc_fanout_run(&race_ops, &race,
                              &(struct tc_fanout_opts) { .n = n, .quorum = 1, .deadline_ms = race.ctx.deadline_ms });
        r = r < 0 ? race_failed(device, entries, n, r, err) : race.taken;
        for (size_t i = 0; i < n; i++)
                tc_secret_free(entries[i].key, entries[i].len);
        return r;
}

struct activation {
        struct crypt_device *cd;
        const char *device, *name;
        uint32_t flags;
};

static int accept_activate(void *data, const struct tc_luks_binding *b, const uint8_t *key, size_t len,
                           struct tc_err *err) {
        const struct activation *a = data;
        int r = crypt_activate_by_passphrase(a->cd, a->name, b->slot, (const char *) key, len, a->flags);
        if (r < 0)
                return tc_fail(err, r, "%s slot %d: %s%s", a->device, b->slot,
                               r == -EPERM ? "the recovered key does not open the slot" : strerror(-r),
                               r == -EPERM || !a->name ? "" : " (activation needs device-mapper; -t only tests)");
        return r;
}

int tc_luks_unlock(const struct tc_ctx *ctx, const char *device, const char *name, int slot, uint32_t flags,
                   struct tc_err *err) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_(tc_luks_bindings_clear) struct tc_luks_bindings bindings = {};
        int r = open_luks2(device, &cd, err);

        if (r < 0)
                return r;
        if (name && access("/dev/mapper/control", F_OK) < 0)
                return tc_fail(err, -ENODEV, "%s: cannot activate %s: device-mapper is not available here (-t only tests the bindings)",
                               device, name);
        r = read_bindings(cd, false, &bindings, err);
        if (r < 0)
                return r;
        struct activation a = { .cd = cd, .device = device, .name = name, .flags = flags };
        return race_bindings(ctx, device, &bindings, slot, accept_activate, &a, err);
}

struct recovered {
        int token;
        uint8_t *key;
        size_t len;
};

static int accept_any(void *data, const struct tc_luks_binding *b, const uint8_t *key, size_t len,
                      struct tc_err *err) {
        struct recovered *out = data;
        out->key = malloc(len ? len : 1);
        if (!out->key)
                return tc_fail(err, -ENOMEM, "out of memory");
        memcpy(out->key, key, len);
        out->len = len;
        out->token = b->token;
        return 0;
}

int tc_luks_bindings_recover(const struct tc_ctx *ctx, const char *device, const struct tc_luks_bindings *bindings,
                             int *token, uint8_t **key, size_t *key_len, struct tc_err *err) {
        struct recovered out = { .token = -1 };
        int r = race_bindings(ctx, device, bindings, -1, accept_any, &out, err);
        if (r < 0)
                return r;
        *token = out.token;
        *key = out.key;
        *key_len = out.len;
        return 0;
}

int tc_luks_recover(const struct tc_ctx *ctx, struct crypt_device *cd, const char *device, int *token, uint8_t **key,
                    size_t *key_len, struct tc_err *err) {
        _cleanup_(tc_luks_bindings_clear) struct tc_luks_bindings bindings = {};
        /* The caller's libcryptsetup: this only resolves our pointers into it. */
        int r = tc_cryptsetup_load(err);
        if (r >= 0)
                r = read_bindings(cd, false, &bindings, err);
        return r < 0 ? r : tc_luks_bindings_recover(ctx, device, &bindings, token, key, key_len, err);
}

/* ---------------------------------------------------------------- regen, edit */

/* Regen re-encrypts to whatever key set the server presents now, so that
 * key set must be vouched for by a signing key the binding already trusts:
 * the advertisement in its JWE header. Tang serves url/adv/THP signed also
 * by the key THP, even once THP is rotated away (hidden), so after a normal
 * rotation an old key vouches and nothing is asked. Otherwise (server
 * replaced, old keys deleted, someone in between) the new keys are trusted
 * only by -y or by the user on a terminal, as at bind time. */

struct regen_trust {
        const struct tc_ctx *ctx;
        const char *device;
        int slot;
        json_t *advs;   /* url -> the advertisement (JWS) the new binding uses */
        /* edit: only the servers of the new configuration (url -> true), and
         * only what an old key vouches for; the rest is left to the
         * encryption's own trust (thp, adv, -y or the terminal). */
        const json_t *wanted;
};

/* 1 with *jws if one of old_adv's signing keys signed what url serves now
 * for it; 0 with err saying why none did; < 0 if the server cannot be asked. */
static int fetch_vouched_adv(const struct tc_ctx *ctx, const char *url, const json_t *old_adv, json_t **jws,
                             struct tc_err *err) {
        json_auto_t *old = tc_tang_keys_for(old_adv, "verify");
        json_t *k;
        size_t i;
        if (!old)
                return tc_fail(err, -ENOMEM, "out of memory");
        tc_fail(err, 0, "the binding holds no signing key of it");
        json_array_foreach(old, i, k) {
                _cleanup_free_ char *thp = tk_thumbprint(k, "S256");
                json_auto_t *got = NULL, *payload = NULL;
                struct tc_err e = {};
                if (!thp)
                        return tc_fail(err, -ENOMEM, "out of memory");
                int r = tc_tang_fetch_adv(ctx, url, thp, &got, &payload, &e);
                if (r == -EPROTO || r == -EBADMSG) {
                        tc_fail(err, 0, r == -EPROTO ? "it has no advertisement for old key %s"
                                                     : "its advertisement for old key %s is not valid", thp);
                        continue;
                }
                if (r < 0) {
                        *err = e;
                        return r;
                }
                /* With the key the binding holds, not one from the answer. */
                if (!jose_jws_ver(NULL, got, NULL, k, false)) {
                        tc_fail(err, 0, "its advertisement for old key %s is not signed by it", thp);
                        continue;
                }
                *jws = TAKE_PTR(got);
                return 1;
        }
        return 0;
}

/* No old key vouched: -y trusts, a terminal asks, anything else refuses. */
static int confirm_new_keys(const struct regen_trust *t, const char *url, const char *why, json_t **jws,
                            struct tc_err *err) {
        json_auto_t *got = NULL, *payload = NULL, *verify = NULL;
        int r = tc_tang_fetch_adv(t->ctx, url, NULL, &got, &payload, err);
        if (r < 0)
                return r;
        if (!(verify = tc_tang_keys_for(payload, "verify")))
                return tc_fail(err, -ENOMEM, "out of memory");
        size_t n = json_array_size(verify);
        char *thps[8] = {}, list[8 * 48] = "";
        for (size_t i = 0; i < n && i < ELEMENTSOF(thps); i++) {
                thps[i] = tk_thumbprint(json_array_get(verify, i), "S256");
                if (thps[i])
                        snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", i ? ", " : "", thps[i]);
        }
        n = n < ELEMENTSOF(thps) ? n : ELEMENTSOF(thps);
        r = t->ctx->trust_all ? 1 : t->ctx->trust ? t->ctx->trust(t->ctx->trust_data, url, (const char *const *) thps, n) : -ENXIO;
        for (size_t i = 0; i < n; i++)
                free(thps[i]);
        if (r == 0)
                return tc_fail(err, -EPERM, "%s slot %d: the new signing keys of %s were not trusted; the binding is unchanged",
                               t->device, t->slot, url);
        if (r < 0)
                return tc_fail(err, -EPERM,
                               "%s slot %d: no key the binding trusted vouches for the keys %s serves now (%s): the "
                               "server was replaced, its keys deleted, or someone is in between. Check its new signing "
                               "key %s with tether-keys show (or tang-show-keys) on the server, then rerun with -y, or on "
                               "a terminal without -q",
                               t->device, t->slot, url, why, list);
        *jws = TAKE_PTR(got);
        return 0;
}

static int trust_tang(struct regen_trust *t, const json_t *tang, struct tc_err *err) {
        const char *url = json_string_value(json_object_get(tang, "url"));
        json_t *jws = NULL;
        struct tc_err why = {};
        if (!url)
                return tc_fail(err, -EINVAL, "%s slot %d: a tang binding without a url", t->device, t->slot);
        if (json_object_get(t->advs, url) || (t->wanted && !json_object_get(t->wanted, url)))
                return 0;
        int r = fetch_vouched_adv(t->ctx, url, json_object_get(tang, "adv"), &jws, &why);
        if (t->wanted && r <= 0)
                return 0;
        if (r == 0)
                r = confirm_new_keys(t, url, why.msg, &jws, err);
        else if (r < 0)
                *err = why;
        if (r < 0)
                return r;
        return json_object_set_new(t->advs, url, jws) < 0 ? tc_fail(err, -ENOMEM, "out of memory") : 0;
}

/* Every tang server of a JWE, sss children too. */
static int trust_jwe(struct regen_trust *t, const char *compact, unsigned depth, struct tc_err *err) {
        _cleanup_(tc_jwe_clear) struct tc_jwe jwe = {};
        if (depth > TC_SSS_MAX_DEPTH)
                return tc_fail(err, -EINVAL, "%s slot %d: sss nested too deep", t->device, t->slot);
        int r = tc_jwe_parse(compact, strlen(compact), &jwe, err);
        if (r < 0)
                return r;
        const json_t *clevis = json_object_get(jwe.header, "clevis");
        const char *pin = json_string_value(json_object_get(clevis, "pin"));
        json_t *j;
        size_t i;
        if (pin && strcmp(pin, "tang") == 0)
                r = trust_tang(t, json_object_get(clevis, "tang"), err);
        else if (pin && strcmp(pin, "sss") == 0)
                json_array_foreach(json_object_get(json_object_get(clevis, "sss"), "jwe"), i, j)
                        if (r >= 0 && json_is_string(j))
                                r = trust_jwe(t, json_string_value(j), depth + 1, err);
        return r;
}

/* Calls fn with each tang configuration of a pin configuration (sss
 * children too). */
static int foreach_tang(json_t *cfg, const char *pin, int (*fn)(json_t *tang, void *data), void *data, unsigned depth) {
        if (!json_is_object(cfg) || depth > TC_SSS_MAX_DEPTH)
                return 0;
        if (strcmp(pin, "tang") == 0)
                return fn(cfg, data);
        if (strcmp(pin, "sss") != 0)
                return 0;
        const char *name;
        json_t *v, *c;
        size_t i;
        int r;
        json_object_foreach(json_object_get(cfg, "pins"), name, v) {
                if (json_is_object(v) && (r = foreach_tang(v, name, fn, data, depth + 1)) < 0)
                        return r;
                json_array_foreach(v, i, c)
                        if ((r = foreach_tang(c, name, fn, data, depth + 1)) < 0)
                                return r;
        }
        return 0;
}

/* Puts a tang server's trusted advertisement into its configuration, so
 * that the encryption uses exactly the key set that was vouched for. One
 * the configuration names itself (thp, adv) is the user's choice. */
static int attach_adv(json_t *tang, void *data) {
        const json_t *advs = data;
        json_t *jws = json_object_get(advs, json_string_value(json_object_get(tang, "url")));
        if (!jws || json_object_get(tang, "thp") || json_object_get(tang, "adv"))
                return 0;
        return json_object_set(tang, "adv", jws) < 0 ? -ENOMEM : 0;
}

static int attach_advs(json_t *cfg, const char *pin, json_t *advs) {
        return foreach_tang(cfg, pin, attach_adv, advs, 0);
}

static int add_url(json_t *tang, void *data) {
        const char *url = json_string_value(json_object_get(tang, "url"));
        return url && json_object_set_new(data, url, json_true()) < 0 ? -ENOMEM : 0;
}

/* The configuration to re-encrypt a binding with, every tang server's new
 * keys vouched for (or confirmed). */
static int regen_config(const struct tc_ctx *ctx, const char *device, const struct tc_luks_binding *b, char **out,
                        struct tc_err *err) {
        json_auto_t *advs = json_object(), *cfg = json_deep_copy(b->config);
        struct regen_trust t = { .ctx = ctx, .device = device, .slot = b->slot, .advs = advs };
        if (!advs || !cfg)
                return tc_fail(err, -ENOMEM, "out of memory");
        int r = trust_jwe(&t, b->jwe, 0, err);
        if (r < 0)
                return r;
        if (attach_advs(cfg, b->pin, advs) < 0 || !(*out = json_dumps(cfg, JSON_COMPACT)))
                return tc_fail(err, -ENOMEM, "out of memory");
        return 0;
}

/* Edit's configuration: each tang server the binding already lists gets the
 * advertisement an old signing key vouches for, as regen's would, so that
 * the same server needs no -y; new servers are trusted as at bind time. */
static int edit_config(const struct tc_ctx *ctx, const char *device, const struct tc_luks_binding *b, const char *text,
                       char **out, struct tc_err *err) {
        json_auto_t *cfg = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
        json_auto_t *advs = json_object(), *urls = json_object();
        if (!advs || !urls)
                return tc_fail(err, -ENOMEM, "out of memory");
        /* Not an object: the encryption says what is wrong with it. */
        if (!json_is_object(cfg))
                return (*out = strdup(text)) ? 0 : tc_fail(err, -ENOMEM, "out of memory");
        if (foreach_tang(cfg, b->pin, add_url, urls, 0) < 0)
                return tc_fail(err, -ENOMEM, "out of memory");
        struct regen_trust t = { .ctx = ctx, .device = device, .slot = b->slot, .advs = advs, .wanted = urls };
        int r = json_object_size(urls) ? trust_jwe(&t, b->jwe, 0, err) : 0;
        if (r < 0)
                return r;
        if (json_object_size(advs) == 0)
                return (*out = strdup(text)) ? 0 : tc_fail(err, -ENOMEM, "out of memory");
        if (attach_advs(cfg, b->pin, advs) < 0 || !(*out = json_dumps(cfg, JSON_COMPACT)))
                return tc_fail(err, -ENOMEM, "out of memory");
        return 0;
}

/* Whether an edit's configuration is what the binding lists now (Clevis
 * compares the same two: "No changes detected"). */
static bool config_unchanged(const struct tc_luks_binding *b, const char *text) {
        json_auto_t *cfg = json_loads(text, JSON_REJECT_DUPLICATES, NULL);
        return cfg && json_equal(cfg, b->config);
}

/* Why the binding's key is gone, for the messages. */
static void key_gone_reason(const struct tc_luks_binding *b, const char *decrypt_msg, char *buf, size_t size) {
        const char *url = json_string_value(json_object_get(b->config, "url"));
        if (strcmp(b->pin, "tang") == 0)
                snprintf(buf, size, "tang server %s no longer has the key this binding uses", url ? url : "(no url)");
        else
                snprintf(buf, size, "%s", decrypt_msg);
}

/* A tang server that answered 404 to the recovery no longer has the key: no
 * trust question or -y can bring it back. As Clevis's regen and edit do, a
 * passphrase that opens the volume takes its place: the slot gets a new key.
 * Fills vk (the volume key) and key: 1, a new key, for the slot to take; 0,
 * the passphrase itself, when it is this slot's own key. */
static int key_gone(struct crypt_device *cd, const char *device, const struct tc_luks_binding *b,
                    const struct tc_luks_rebind_opts *o, const char *verb, uint8_t *vk, size_t *vk_len, uint8_t **key,
                    size_t *len, int *pass_slot, struct tc_err *err) {
        char why[sizeof(err->msg)];
        struct tc_err e = {};
        uint8_t *pass = NULL;
        size_t pass_len = 0;
        TC_CLEANUP_SECRET(pass, pass_len);

        key_gone_reason(b, err->msg, why, sizeof(why));
        if (!o->passphrase) {
                _cleanup_free_ char *cfg = json_dumps(b->config, JSON_COMPACT);
                if (!cfg)
                        return tc_fail(err, -ENOMEM, "out of memory");
                return tc_fail(err, -ENOKEY,
                               "%s slot %d: %s: it cannot be %s; bind again with the passphrase (tether luks bind -d %s "
                               "%s '%s') and then unbind slot %d",
                               device, b->slot, why, verb, device, b->pin, cfg, b->slot);
        }
        int r = o->passphrase(o->passphrase_data, &pass, &pass_len, &e);
        if (r < 0)
                return tc_fail(err, r,
                               "%s slot %d: %s: it can be %s only with a passphrase that opens the volume, as for bind "
                               "(standard input, the terminal, or -k KEYFILE): %s",
                               device, b->slot, why, verb, e.msg);
        r = crypt_volume_key_get(cd, CRYPT_ANY_SLOT, (char *) vk, vk_len, (const char *) pass, pass_len);
        if (r < 0)
                return tc_fail(err, r, "%s slot %d: %s, and %s", device, b->slot, why,
                               r == -EPERM ? "no keyslot opens with the passphrase given" : strerror(-r));
        *pass_slot = r;
        if (r == b->slot) {
                *key = TAKE_PTR(pass);
                *len = pass_len;
                return 0;
        }
        char fresh[64];
        TC_CLEANUP_ERASE(fresh);
        r = generate_passphrase(fresh, sizeof(fresh), err);
        if (r < 0)
                return r;
        if (!(*key = malloc((size_t) r)))
                return tc_fail(err, -ENOMEM, "out of memory");
        memcpy(*key, fresh, (size_t) r);
        *len = (size_t) r;
        return 1;
}

/* A re-key moves the binding through a second keyslot, so that every step
 * leaves a working binding (or the old one, which a re-run re-keys again):
 *
 *   1. the new key into a free keyslot M;
 *   2. the token, in one write: the new JWE, assigned to M, marked
 *      "tether-rekey": "N:ID" (its home slot N, and ID, the identity of the
 *      keyslot N holds then: see keyslot_identity());
 *   3. slot N (whose key is gone) removed; 4. the new key added as slot N;
 *   5. the token, in one write: assigned to N, the mark dropped;
 *   6. slot M removed.
 *
 * Interrupted after 2, the binding works on M and its mark lets a re-run
 * (regen or edit of slot N or M) finish the move. The re-run removes slot N
 * only if it is still the very keyslot of step 2 (its identity the mark's):
 * a key added there meanwhile (cryptsetup luksAddKey takes the first free
 * slot), or a mark written by hand, is left alone and the binding stays on
 * M. Interrupted between 1 and 2, slot M is left with a key nobody knows;
 * between 5 and 6, slot M is left with the binding's key, without a token:
 * neither can be told from a user's keyslot, so both are left for the user
 * to remove (the man page says so). */
#define REKEY_MARK "tether-rekey"
#define KEYSLOT_ID_HEX 64

struct rekey_mark {
        int home;                      /* -1: no mark */
        char id[KEYSLOT_ID_HEX + 1];   /* "": a mark without one, which proves nothing */
};

/* A token's mark: "N" or "N:ID" (N as parse_keyslot() reads it, ID 64
 * lowercase hex digits), or none (home -1) for anything else. The header is
 * untrusted: the mark only ever says where the binding wants to go. */
static void token_mark(struct crypt_device *cd, int token, struct rekey_mark *m) {
        const char *text = NULL;
        *m = (struct rekey_mark) { .home = -1 };
        if (crypt_token_json_get(cd, token, &text) < 0)
                return;
        json_auto_t *json = json_loads(text, 0, NULL);
        const char *v = json_string_value(json_object_get(json, REKEY_MARK));
        if (!v)
                return;
        const char *colon = strchr(v, ':');
        int home = parse_keyslot_text(v, colon ? (size_t) (colon - v) : strlen(v));
        if (home < 0)
                return;
        if (colon) {
                const char *id = colon + 1;
                if (strlen(id) != KEYSLOT_ID_HEX || strspn(id, "0123456789abcdef") != KEYSLOT_ID_HEX)
                        return;
                memcpy(m->id, id, sizeof(m->id));
        }
        m->home = home;
}

/* A keyslot's identity, for a re-key's mark: the SHA-256 (hex) of its KDF
 * salt as the header holds it. Every keyslot added (luksAddKey,
 * luksChangeKey, a tpm2 or fido2 enrolment, tether's own) draws a new salt,
 * so a slot with the same identity is the very same keyslot. *pbkdf2 says
 * whether its KDF is PBKDF2 (tether's: cheap to try a key on). -ENOENT: the
 * slot has no salt (no keyslot of ours). */
static int keyslot_identity(struct crypt_device *cd, const char *device, int slot, char id[KEYSLOT_ID_HEX + 1],
                            bool *pbkdf2, struct tc_err *err) {
        const char *text = NULL;
        char name[16];
        uint8_t md[EVP_MAX_MD_SIZE];
        unsigned md_len = 0;
        int r = crypt_dump_json(cd, &text, 0);
        if (r < 0)
                return tc_fail(err, r, "%s: cannot read the LUKS2 header's keyslots: %s", device, strerror(-r));
        json_auto_t *hdr = json_loads(text, 0, NULL);
        if (!hdr)
                return tc_fail(err, -ENOMEM, "%s: cannot read the LUKS2 header's keyslots", device);
        snprintf(name, sizeof(name), "%d", slot);
        const json_t *kdf = json_object_get(json_object_get(json_object_get(hdr, "keyslots"), name), "kdf");
        const char *salt = json_string_value(json_object_get(kdf, "salt"));
        const char *type = json_string_value(json_object_get(kdf, "type"));
        if (!salt || !*salt)
                return tc_fail(err, -ENOENT, "%s: slot %d has no KDF salt", device, slot);
        if (!EVP_Digest(salt, strlen(salt), md, &md_len, EVP_sha256(), NULL) || md_len * 2 != KEYSLOT_ID_HEX)
                return tc_fail(err, -EIO, "%s: cannot hash slot %d's salt", device, slot);
        for (unsigned i = 0; i < md_len; i++)
                snprintf(id + 2 * i, 3, "%02x", md[i]);
        if (pbkdf2)
                *pbkdf2 = type && strcmp(type, "pbkdf2") == 0;
        return 0;
}

/* The binding on slot; when none is, the one on its way back to slot (a
 * re-key interrupted after its token moved to the spare slot). *mark says
 * where the binding belongs (home -1: where it is). */
static int rebind_binding(struct crypt_device *cd, const struct tc_luks_bindings *bindings, const char *device, int slot,
                          const struct tc_luks_binding **ret, struct rekey_mark *mark, struct tc_err *err) {
        const struct tc_luks_binding *on = binding_for_slot(bindings, slot);
        if (!on || !on->slot_active)
                for (size_t i = 0; i < bindings->n; i++) {
                        const struct tc_luks_binding *b = &bindings->items[i];
                        struct rekey_mark m;
                        if (!b->slot_active)
                                continue;
                        token_mark(cd, b->token, &m);
                        if (m.home == slot && b->slot != slot) {
                                *ret = b;
                                *mark = m;
                                return 0;
                        }
                }
        int r = slot_binding(bindings, device, slot, ret, err);
        if (r >= 0)
                token_mark(cd, (*ret)->token, mark);
        return r;
}

/* The token of b, with jwe, on slot; marked with home and its identity id
 * unless it is there. */
static int rekey_token(struct crypt_device *cd, const char *device, const struct tc_luks_binding *b, const char *jwe,
                       int slot, int home, const char *id, struct tc_err *err) {
        json_auto_t *token = compact_to_token(jwe, slot);
        char h[16 + KEYSLOT_ID_HEX];
        if (id)
                snprintf(h, sizeof(h), "%d:%s", home, id);
        else
                snprintf(h, sizeof(h), "%d", home);
        if (!token || (slot != home && json_object_set_new(token, REKEY_MARK, json_string(h)) < 0))
                return tc_fail(err, -ENOMEM, "out of memory");
        int r = token_write(cd, b->token, token, err);
        return r < 0 ? tc_wrap(err, r, "%s slot %d", device, home) : 0;
}

/* Appends to err's message. */
__attribute__((format(printf, 2, 3)))
static void err_append(struct tc_err *err, const char *fmt, ...) {
        size_t n = strlen(err->msg);
        va_list ap;
        va_start(ap, fmt);
        tc_vformat(err->msg + n, sizeof(err->msg) - n, fmt, ap);
        va_end(ap);
}

/* Steps 1 and 2: the binding, with its new key, on a free keyslot (returned).
 * A failure leaves the header as it was (or names the slot it left). */
static int rekey_to_spare(struct crypt_device *cd, const char *device, const struct tc_luks_binding *b,
                          const uint8_t *vk, size_t vk_len, const uint8_t *key, size_t len, const char *jwe,
                          struct tc_err *err) {
        char id[KEYSLOT_ID_HEX + 1];
        int spare = free_keyslot(cd);
        if (spare < 0)
                return tc_fail(err, -ENOSPC,
                               "%s slot %d: no free keyslot: a new key needs one for a moment, while slot %d is replaced; "
                               "nothing was changed: remove a keyslot that is not used (cryptsetup luksKillSlot) and run "
                               "again",
                               device, b->slot, b->slot);
        /* Slot N as it is now: only this keyslot may be removed later. */
        int r = keyslot_identity(cd, device, b->slot, id, NULL, err);
        if (r < 0)
                return r;
        r = tc_fault("rekey-keyslot", err);
        if (r < 0 || (r = add_keyslot(cd, device, spare, vk, vk_len, (const char *) key, len, err)) < 0)
                return r;
        r = tc_fault("rekey-token", err);
        if (r == 0)
                r = rekey_token(cd, device, b, jwe, spare, b->slot, id, err);
        if (r < 0) {
                /* Nothing points at it yet. */
                if (crypt_keyslot_destroy(cd, spare) < 0)
                        err_append(err, "; slot %d, added for the new key, is left with a key nobody has: remove it "
                                   "(cryptsetup luksKillSlot %s %d)", spare, device, spare);
                return r;
        }
        return spare;
}

/* What an interrupted re-key's home slot holds now. */
enum { HOME_FREE, HOME_OURS, HOME_DEAD, HOME_CHANGED };

/* Only the very keyslot the move began with (its identity the mark's) is the
 * dead one; a keyslot the binding's key opens is step 4's. Anything else,
 * or a mark without an identity, is someone else's: HOME_CHANGED. An error
 * that does not say "this key does not open it" stops everything. */
static int home_state(struct crypt_device *cd, const char *device, const struct tc_luks_binding *b,
                      const struct rekey_mark *m, const uint8_t *key, size_t len, struct tc_err *err) {
        char id[KEYSLOT_ID_HEX + 1];
        bool pbkdf2 = false;
        struct tc_err e = {};
        crypt_keyslot_info ki = crypt_keyslot_status(cd, m->home);
        if (ki == CRYPT_SLOT_INACTIVE)
                return HOME_FREE;
        if (ki != CRYPT_SLOT_ACTIVE && ki != CRYPT_SLOT_ACTIVE_LAST)
                return HOME_CHANGED;
        int r = keyslot_identity(cd, device, m->home, id, &pbkdf2, &e);
        if (r == -ENOENT)
                return HOME_CHANGED;
        if (r >= 0 && m->id[0] && strcmp(id, m->id) == 0)
                return HOME_DEAD;
        /* tether's keyslots are PBKDF2: an argon2 one is not tried at all. */
        if (r >= 0 && !pbkdf2)
                return HOME_CHANGED;
        if (r >= 0)
                r = check_slot_key(cd, device, m->home, key, len, &e);
        if (r == -EBADMSG)
                return HOME_CHANGED;
        if (r < 0)
                return tc_fail(err, r,
                               "%s: cannot tell what slot %d holds, the home of the binding on slot %d (%s): nothing was "
                               "changed; run the same command again",
                               device, m->home, b->slot, e.msg);
        return HOME_OURS;
}

/* Steps 3 to 6: the binding, on slot cur with key, back to its home slot,
 * which is removed first if remove_home (the binding's own keyslot, whose
 * key is gone). The caller made sure home is not another binding's slot,
 * nor the passphrase's, nor a keyslot added there meanwhile. works: whether
 * the binding works on cur meanwhile (the key of cur's token is not lost). A
 * failure leaves the volume open to the passphrase and what the binding
 * was, named in err. */
static int rekey_home(struct crypt_device *cd, const char *device, const struct tc_luks_bindings *bindings,
                      const struct tc_luks_binding *b, int cur, int home, bool remove_home, bool works,
                      const uint8_t *vk, size_t vk_len, const uint8_t *key, size_t len, const char *jwe,
                      struct tc_err *err) {
        bool added = false;
        int r = 0;
        if (remove_home) {
                /* As unbind: never the last keyslot that opens the volume. */
                r = check_ways_in(cd, bindings, device, home, TC_LUKS_UNBIND_LAST_LOCAL, err);
                if (r == 0)
                        r = tc_fault("rekey-destroy", err);
                if (r == 0 && (r = crypt_keyslot_destroy(cd, home)) < 0)
                        tc_fail(err, r, "%s: cannot remove slot %d: %s", device, home, strerror(-r));
        }
        if (r == 0 && !slot_opens(cd, home) && (r = tc_fault("rekey-home", err)) == 0) {
                r = add_keyslot(cd, device, home, vk, vk_len, (const char *) key, len, err);
                added = r >= 0;
        }
        if (r >= 0 && (r = tc_fault("rekey-assign", err)) == 0)
                r = rekey_token(cd, device, b, jwe, home, home, NULL, err);
        if (r < 0 && works) {
                err_append(err, "; the binding works, on slot %d for now: run the same command again to move it back "
                           "to slot %d", cur, home);
                return r;
        }
        if (r < 0) {
                /* The new key is in no token: slot home would hold a key
                 * nobody has. */
                if (added && crypt_keyslot_destroy(cd, home) < 0)
                        err_append(err, "; slot %d, added for the new key, is left with a key nobody has: remove it "
                                   "(cryptsetup luksKillSlot %s %d)", home, device, home);
                err_append(err, "; the binding does not work yet (the key of slot %d's token is gone too), but the "
                           "passphrase still opens the volume: run the same command again, with the passphrase",
                           cur);
                return r;
        }
        r = tc_fault("rekey-cleanup", err);
        if (r == 0 && (r = crypt_keyslot_destroy(cd, cur)) < 0)
                tc_fail(err, r, "%s: cannot remove slot %d: %s", device, cur, strerror(-r));
        if (r < 0) {
                err_append(err,
                           "; the binding works on slot %d; slot %d, which held its key during the change, is left: remove "
                           "it (cryptsetup luksKillSlot %s %d)",
                           home, cur, device, cur);
                return r;
        }
        return 0;
}

/* The pin a configuration is written for, as far as its keys tell (sss:
 * "t", "pins"; tang: "url", "thp", "adv"), or NULL. */
static const char *config_pin(const json_t *cfg) {
        if (json_object_get(cfg, "pins") || json_object_get(cfg, "t"))
                return "sss";
        if (json_object_get(cfg, "url") || json_object_get(cfg, "thp") || json_object_get(cfg, "adv"))
                return "tang";
        return NULL;
}

/* edit keeps the pin: another pin's configuration would be read as this
 * one's ("tang configuration has no url" for an sss policy), so it is named
 * for what it is before anything else happens. */
static int check_edit_pin(const char *device, const struct tc_luks_binding *b, const char *new_config,
                          struct tc_err *err) {
        json_auto_t *cfg = json_loads(new_config, 0, NULL);
        const char *pin = config_pin(cfg);
        if (!pin || strcmp(pin, b->pin) == 0)
                return 0;
        return tc_fail(err, -EINVAL,
                       "%s slot %d is bound with the %s pin, but the configuration given is for the %s pin: edit keeps the "
                       "pin, so give a %s configuration (tether luks list -d %s -s %d shows the current one), or bind "
                       "again with the %s pin (tether luks bind -d %s %s CONFIG) and then unbind slot %d",
                       device, b->slot, b->pin, pin, b->pin, device, b->slot, pin, device, pin, b->slot);
}

int tc_luks_rebind(const struct tc_ctx *ctx, const char *device, int slot, const struct tc_luks_rebind_opts *o,
                   struct tc_err *err) {
        _cleanup_(crypt_freep) struct crypt_device *cd = NULL;
        _cleanup_(tc_luks_bindings_clear) struct tc_luks_bindings bindings = {};
        _cleanup_free_ char *jwe = NULL, *config = NULL;
        json_auto_t *token = NULL;
        uint8_t *key = NULL, *vk = NULL;
        size_t len = 0, vk_cap = 0, vk_len = 0;
        TC_CLEANUP_SECRET(key, len);
        TC_CLEANUP_SECRET(vk, vk_cap);
        const char *verb = o->config ? "edited" : "regenerated";
        const struct tc_luks_binding *b = NULL;
        struct rekey_mark mark = { .home = -1 };
        bool rekey = false;
        int home = -1, pass_slot = -1, state = HOME_FREE, left = -1;
        int r = open_bindings(device, false, &cd, &bindings, err);
        if (r < 0 || (r = rebind_binding(cd, &bindings, device, slot, &b, &mark, err)) < 0)
                return r;
        home = mark.home >= 0 ? mark.home : b->slot;
        if (!b->pin || !b->config)
                return tc_fail(err, -EINVAL, "%s slot %d: cannot read the binding's configuration", device, slot);
        /* Another pin's configuration first: it would be read as this one's. */
        if (o->config && (r = check_edit_pin(device, b, o->config, err)) < 0)
                return r;
        if (o->config && !o->force && home == b->slot && config_unchanged(b, o->config))
                return tc_fail(err, -EALREADY, "%s slot %d: no changes detected: that is the binding's configuration (-f rebinds anyway)",
                               device, slot);
        vk_len = vk_cap = (size_t) crypt_get_volume_key_size(cd);
        if (!(vk = calloc(1, vk_cap ? vk_cap : 1)))
                return tc_fail(err, -ENOMEM, "out of memory");
        /* Recovery first: it asks only the keys the binding already trusts,
         * as an unlock would, so it shows a replaced server nothing new. */
        r = tc_decrypt(ctx, b->jwe, strlen(b->jwe), &key, &len, err);
        if (r == -ENOKEY) {
                r = key_gone(cd, device, b, o, verb, vk, &vk_len, &key, &len, &pass_slot, err);
                rekey = r == 1;
        } else if (r < 0)
                return tc_wrap(err, r, "%s slot %d", device, b->slot);
        /* Verified against its own slot, so a wrong key is never re-wrapped. */
        if (r < 0 || (!rekey && (r = check_slot_key(cd, device, b->slot, key, len, err)) < 0))
                return r;
        /* An interrupted re-key: its home slot is taken by another binding,
         * the passphrase, or any keyslot but the one the move began with:
         * nothing there is touched, and the binding stays where it is. */
        if (home != b->slot) {
                const struct tc_luks_binding *other = binding_for_slot(&bindings, home);
                if ((other && other != b) || home == pass_slot)
                        state = HOME_CHANGED;
                else if ((state = home_state(cd, device, b, &mark, key, len, err)) < 0)
                        return state;
                /* Even the very keyslot is left if it is the last that opens
                 * without a server (a mark is only as good as the header). */
                if (state == HOME_DEAD && slot_is_local_way_in(cd, &bindings, home) &&
                    count_slots(cd, &bindings, home, true) == 0)
                        state = HOME_CHANGED;
                if (state == HOME_CHANGED) {
                        left = home;
                        home = b->slot;
                }
        }
        if (home != b->slot && !rekey &&
            (r = crypt_volume_key_get(cd, b->slot, (char *) vk, &vk_len, (const char *) key, len)) < 0)
                return tc_fail(err, r, "%s slot %d: %s", device, b->slot, strerror(-r));
        r = o->config ? edit_config(ctx, device, b, o->config, &config, err) : regen_config(ctx, device, b, &config, err);
        if (r < 0)
                return r;
        r = tc_encrypt(ctx, b->pin, config, key, len, &jwe, err);
        if (r < 0 || (r = tc_fault("rebind-token", err)) < 0)
                return r;
        if (rekey || home != b->slot) {
                int cur = b->slot;
                bool remove_home = state == HOME_DEAD;
                if (home == cur) {
                        if ((cur = rekey_to_spare(cd, device, b, vk, vk_len, key, len, jwe, err)) < 0)
                                return cur;
                        /* The binding's own keyslot, whose key is gone. */
                        remove_home = true;
                }
                r = rekey_home(cd, device, &bindings, b, cur, home, remove_home, !rekey || cur != b->slot, vk, vk_len,
                               key, len, jwe, err);
        } else {
                token = compact_to_token(jwe, b->slot);
                r = token ? token_write(cd, b->token, token, err) : tc_fail(err, -ENOMEM, "out of memory");
        }
        if (r < 0)
                return r;
        if (left >= 0)
                return tc_fail(err, 1,
                               "%s: slot %d changed since the binding's move from it began (a key added there meanwhile, "
                               "or the header edited): it was left as it is and nothing was removed; the binding now "
                               "lives on slot %d, and works. Check what slot %d holds (cryptsetup luksDump %s)",
                               device, left, b->slot, left, device);
        if (home != b->slot)
                return tc_fail(err, 1, "%s: the binding of slot %d, left on slot %d by an interrupted re-key, is back on "
                               "slot %d", device, home, b->slot, home);
        return 0;
}

/* ---------------------------------------------------------------- report */

static const char *const report_state_names[] = {
        [TC_REPORT_UNCHECKED] = "unchecked", [TC_REPORT_CURRENT] = "current",
        [TC_REPORT_UNREACHABLE] = "unreachable", [TC_REPORT_ROTATED] = "rotated",
        [TC_REPORT_DELETED] = "deleted", [TC_REPORT_REVOKED] = "revoked", [TC_REPORT_INVALID] = "invalid",
};

const char *tc_luks_report_state_name(enum tc_report_state s) {
        return (size_t) s < ELEMENTSOF(report_state_names) ? report_state_names[s] : "?";
}

static void report_server_clear(struct tc_luks_report_server *s) {
        for (size_t i = 0; i < s->n_keys; i++)
                free(s->keys[i].thp);
        free(s->keys);
        free(s->url);
        free(s->error);
}

static void report_binding_clear(struct tc_luks_report_binding *b) {
        for (size_t i = 0; i < b->n_servers; i++)
                report_server_clear(&b->servers[i]);
        free(b->servers);
        free(b->pin);
        free(b->error);
}

void tc_luks_report_clear(struct tc_luks_report *rep) {
        for (size_t i = 0; i < rep->n; i++)
                report_binding_clear(&rep->bindings[i]);
        free(rep->bindings);
        memset(rep, 0, sizeof(*rep));
}

/* Each adds one zeroed entry, counted at once so that a later failure
 * frees it with the rest; NULL when out of memory. */
static struct tc_luks_report_binding *report_add_binding(struct tc_luks_report *rep) {
        struct tc_luks_report_binding *n = realloc(rep->bindings, (rep->n + 1) * sizeof(*n));
        if (!n)
                return NULL;
        rep->bindings = n;
        memset(&n[rep->n], 0, sizeof(*n));
        return &n[rep->n++];
}

static struct tc_luks_report_server *report_add_server(struct tc_luks_report_binding *b) {
        struct tc_luks_report_server *n = realloc(b->servers, (b->n_servers + 1) * sizeof(*n));
        if (!n)
                return NULL;
        b->servers = n;
        memset(&n[b->n_servers], 0, sizeof(*n));
        return &n[b->n_servers++];
}

static struct tc_luks_report_key *report_add_key(struct tc_luks_report_server *s) {
        struct tc_luks_report_key *n = realloc(s->keys, (s->n_keys + 1) * sizeof(*n));
        if (!n)
                return NULL;
        s->keys = n;
        memset(&n[s->n_keys], 0, sizeof(*n));
        return &n[s->n_keys++];
}

/* A failure to ask the server is its state, not the report's, unless it is
 * this process running out of memory. */
static int report_unreachable(struct tc_luks_report_server *s, int r, const struct tc_err *e, struct tc_err *err) {
        if (r == -ENOMEM)
                return tc_fail(err, r, "out of memory");
        s->state = r == -EACCES ? TC_REPORT_REVOKED : TC_REPORT_UNREACHABLE;
        return (s->error = strdup(e->msg[0] ? e->msg : strerror(-r))) ? 0 : tc_fail(err, -ENOMEM, "out of memory");
}

/* Whether kid (the binding's exchange key, under any thumbprint hash) is
 * one of the keys of payload. */
static bool kid_advertised(const json_t *payload, const char *kid) {
        json_t *cur;
        size_t j;
        if (!kid)
                return false;
        json_array_foreach(json_object_get(payload, "keys"), j, cur)
                for (int h = 0; h < TK_HASH_COUNT; h++) {
                        _cleanup_free_ char *t = tk_thumbprint(cur, tk_hash_names[h]);
                        if (t && strcmp(t, kid) == 0)
                                return true;
                }
        return false;
}

/* Every key the binding carries (its exchange key and the signing keys it
 * trusted), checked against what the server advertises now. Keys it no
 * longer advertises may still be on the server, rotated (hidden): tang
 * answers /adv/THP for those and 404 once they are deleted. */
static int report_tang(const struct tc_ctx *ctx, const json_t *tang, const char *kid,
                       struct tc_luks_report_binding *b, struct tc_err *err) {
        const char *url = json_string_value(json_object_get(tang, "url"));
        json_auto_t *jws = NULL, *payload = NULL;
        struct tc_err e = {};
        bool missing = false;
        json_t *k;
        size_t i;
        if (!url)
                return 0;
        struct tc_luks_report_server *s = report_add_server(b);
        if (!s || !(s->url = strdup(url)))
                return tc_fail(err, -ENOMEM, "out of memory");
        json_array_foreach(json_object_get(json_object_get(tang, "adv"), "keys"), i, k) {
                _cleanup_free_ char *thp = tk_thumbprint(k, "S256");
                if (!thp)       /* not a key: nothing the binding could use */
                        continue;
                struct tc_luks_report_key *key = report_add_key(s);
                if (!key)
                        return tc_fail(err, -ENOMEM, "out of memory");
                key->thp = TAKE_PTR(thp);
                key->signing = jose_jwk_prm(NULL, k, true, "verify");
        }
        int r = tc_tang_fetch_adv(ctx, url, NULL, &jws, &payload, &e);
        if (r < 0)
                return report_unreachable(s, r, &e, err);
        for (i = 0; i < s->n_keys; i++) {
                json_t *cur;
                size_t j;
                json_array_foreach(json_object_get(payload, "keys"), j, cur) {
                        _cleanup_free_ char *t = tk_thumbprint(cur, "S256");
                        if (t && strcmp(t, s->keys[i].thp) == 0)
                                s->keys[i].advertised = true;
                }
                missing |= !s->keys[i].advertised;
        }
        s->state = missing ? TC_REPORT_ROTATED : TC_REPORT_CURRENT;
        /* Rotation hides a signing key and its exchange key together, and
         * deleting the hidden files removes both: the signing keys' /adv/THP
         * tell which happened. Dead only when the exchange key the binding
         * uses is gone from /adv and no signing key it recorded is left: a
         * server that dropped some other pair still answers this binding. */
        s->kid_advertised = kid_advertised(payload, kid);
        if (!missing || s->kid_advertised)
                return 0;
        bool any_kept = false, any_asked = false;
        for (i = 0; i < s->n_keys && !any_kept; i++) {
                if (!s->keys[i].signing || s->keys[i].advertised)
                        continue;
                r = tc_tang_has_key(ctx, url, s->keys[i].thp, &e);
                if (r < 0)
                        return report_unreachable(s, r, &e, err);
                any_asked = true;
                any_kept = r > 0;
        }
        if (any_asked && !any_kept)
                s->state = TC_REPORT_DELETED;
        return 0;
}

static int report_jwe(const struct tc_ctx *ctx, const char *compact, unsigned depth, struct tc_luks_report_binding *b,
                      struct tc_err *err);

static int report_header(const struct tc_ctx *ctx, const json_t *header, unsigned depth,
                         struct tc_luks_report_binding *b, struct tc_err *err) {
        const json_t *clevis = json_object_get(header, "clevis");
        const char *pin = json_string_value(json_object_get(clevis, "pin"));
        if (pin && strcmp(pin, "sss") == 0) {
                json_t *j;
                size_t i;
                json_array_foreach(json_object_get(json_object_get(clevis, "sss"), "jwe"), i, j) {
                        int r = json_is_string(j) ? report_jwe(ctx, json_string_value(j), depth + 1, b, err) : 0;
                        if (r < 0)
                                return r;
                }
                return 0;
        }
        return pin && strcmp(pin, "tang") == 0
                       ? report_tang(ctx, json_object_get(clevis, "tang"), json_string_value(json_object_get(header, "kid")), b, err)
                       : 0;
}

static int report_jwe(const struct tc_ctx *ctx, const char *compact, unsigned depth, struct tc_luks_report_binding *b,
                      struct tc_err *err) {
        _cleanup_(tc_jwe_clear) struct tc_jwe jwe = {};
        if (depth > TC_SSS_MAX_DEPTH)
                return tc_fail(err, -ELOOP, "sss: JWEs nested more than %d levels deep", TC_SSS_MAX_DEPTH);
        int r = tc_jwe_parse(compact, strlen(compact), &jwe, err);
        return r < 0 ? r : report_header(ctx, jwe.header, depth, b, err);
}

__attribute__((format(printf, 2, 3)))
static int report_invalid(struct tc_luks_report_binding *r, const char *fmt, ...);
static int report_invalid(struct tc_luks_report_binding *r, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        int n = vasprintf(&r->error, fmt, ap);
        va_end(ap);
        r->state = TC_REPORT_INVALID;
        if (n < 0)
                r->error = NULL; /* undefined after a failure, and freed with the report */
        return n < 0 ? -ENOMEM : 0;
}

/* One binding's entry; a token that cannot be read is an invalid entry. */
static int report_binding(const struct tc_ctx *ctx, const struct tc_luks_binding *b,
                          struct tc_luks_report *rep, struct tc_err *err) {
        struct tc_luks_report_binding *r = report_add_binding(rep);
        struct tc_err e = {};
        if (!r || (b->pin && !(r->pin = strdup(b->pin))))
                return tc_fail(err, -ENOMEM, "out of memory");
        r->slot = b->slot;
        r->token = b->token;
        int k = 0;
        if (b->malformed || !b->jwe)
                k = report_invalid(r, "token %d is not a valid clevis token (%s)", b->token,
                                   b->malformed ? b->malformed : "no JWE");
        else if (b->slot < 0 || !b->slot_active)
                k = report_invalid(r, "token %d is an orphan (%s)", b->token,
                                   b->slot < 0 ? "assigned to no keyslot" : "its keyslot is not in use");
        else if ((k = report_jwe(ctx, b->jwe, 0, r, &e)) < 0 && k != -ENOMEM)
                k = report_invalid(r, "%s", e.msg);
        if (k < 0)
                return tc_fail(err, -ENOMEM, "out of memory");
        if (r->state == TC_REPORT_INVALID)
                return 0;
        r->state = TC_REPORT_UNCHECKED;
        for (size_t i = 0; i < r->n_servers; i++)
                if (r->servers[i].state > r->state)
                        r->state = r->servers[i].state;
        return 0;
}

int tc_luks_report(const struct tc_ctx *ctx, const char *device, int slot, struct tc_luks_report *out,
                   struct tc_err *err) {
        _cleanup_(tc_luks_bindings_clear) struct tc_luks_bindings bindings = {};
        memset(out, 0, sizeof(*out));
        const struct tc_luks_binding *b = NULL;
        int r = tc_luks_list(device, false, &bindings, err);
        if (r >= 0 && slot >= 0 && (r = slot_binding(&bindings, device, slot, &b, err)) >= 0)
                r = report_binding(ctx, b, out, err);
        if (r >= 0 && slot < 0 && bindings.n == 0)
                r = tc_fail(err, -ENOENT, "%s has no tether/clevis binding", device);
        for (size_t i = 0; r >= 0 && slot < 0 && i < bindings.n; i++)
                r = report_binding(ctx, &bindings.items[i], out, err);
        if (r < 0)
                tc_luks_report_clear(out);
        return r;
}

/* The strings come from the header (valid UTF-8: jansson parsed them) or
 * from this program. */
static json_t *report_server_json(const struct tc_luks_report_server *s) {
        json_t *keys = json_array();
        for (size_t i = 0; keys && i < s->n_keys; i++) {
                const struct tc_luks_report_key *k = &s->keys[i];
                if (json_array_append_new(keys, json_pack("{s:s,s:s,s:b}", "thp", k->thp, "use",
                                                          k->signing ? "signing" : "exchange", "advertised",
                                                          k->advertised)) < 0)
                        return json_decref(keys), NULL;
        }
        return json_pack("{s:s,s:s,s:s*,s:o}", "url", s->url, "state", tc_luks_report_state_name(s->state), "error",
                         s->error, "keys", keys);
}

json_t *tc_luks_report_json(const char *device, const struct tc_luks_report *rep) {
        json_auto_t *list = json_array();
        for (size_t i = 0; list && i < rep->n; i++) {
                const struct tc_luks_report_binding *b = &rep->bindings[i];
                json_t *servers = json_array();
                for (size_t j = 0; servers && j < b->n_servers; j++)
                        if (json_array_append_new(servers, report_server_json(&b->servers[j])) < 0)
                                servers = (json_decref(servers), NULL);
                json_t *slot = b->slot >= 0 ? json_integer(b->slot) : json_null();
                if (json_array_append_new(list, json_pack("{s:o,s:i,s:s?,s:s,s:s*,s:o}", "slot", slot, "token",
                                                          b->token, "pin", b->pin,
                                                          "state", tc_luks_report_state_name(b->state),
                                                          "error", b->error, "servers", servers)) < 0)
                        return NULL;
        }
        /* A path is bytes, a JSON string UTF-8: a name that is not comes
         * escaped (\xNN), as the text lines show it. */
        json_t *dev = json_string(device);
        if (!dev) {
                _cleanup_free_ char *shown = tc_escape_dup(device);
                dev = shown ? json_string(shown) : NULL;
        }
        return list && dev ? json_pack("{s:o,s:O}", "device", dev, "bindings", list) : (json_decref(dev), NULL);
}
