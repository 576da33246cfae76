/* Loading a Tang key directory into a struct tk_keyset. */
#include "keyset.h"
#include "cleanup.h"
#include "ecpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <jose/b64.h>
#include <jose/jwk.h>
#include <openssl/crypto.h>
#include <openssl/objects.h>

const char *const tk_hash_names[TK_HASH_COUNT] = { "S1", "S224", "S256", "S384", "S512" };

/* Key files are tiny; anything larger is not a key. */
#define KEY_FILE_MAX (64 * 1024)

char *tk_thumbprint(const json_t *jwk, const char *hash) {
        uint8_t dig[64];
        char enc[ECPOINT_MAX_B64 + 1];

        size_t dlen = jose_jwk_thp_buf(NULL, NULL, hash, NULL, 0);
        if (dlen == SIZE_MAX || dlen > sizeof(dig))
                return NULL;
        if (jose_jwk_thp_buf(NULL, jwk, hash, dig, dlen) != dlen)
                return NULL;
        size_t elen = jose_b64_enc_buf(dig, dlen, enc, sizeof(enc) - 1);
        if (elen == SIZE_MAX)
                return NULL;
        enc[elen] = '\0';
        return strdup(enc);
}

bool tk_key_allows_recovery(const json_t *jwk) {
        const char *alg = NULL;

        if (!jose_jwk_prm(NULL, jwk, true, "deriveKey"))
                return false;
        if (!json_is_string(json_object_get(jwk, "d")))
                return false;
        if (json_unpack((json_t *) jwk, "{s?s}", "alg", &alg) < 0)
                return false;
        return !alg || strcmp(alg, "ECMR") == 0;
}

static enum tk_role classify(const json_t *jwk) {
        /* Tang's rule: a missing key_ops permits everything, so such a key
         * counts as a signing key first. */
        if (jose_jwk_prm(NULL, jwk, false, "sign") && jose_jwk_prm(NULL, jwk, false, "verify"))
                return TK_ROLE_SIGNING;
        if (jose_jwk_prm(NULL, jwk, false, "deriveKey"))
                return TK_ROLE_EXCHANGE;
        return TK_ROLE_OTHER;
}

static void ecmr_key_free(struct tk_ecmr_key *k) {
        if (!k)
                return;
        EC_GROUP_free(k->group);
        BN_clear_free(k->d);
        free(k);
}

/* Validates an EC private key once, at load: d in [1, n-1] and dG equal to
 * the published point. Afterwards /rec and signing trust it. */
static int ecmr_key_prepare(const json_t *jwk, struct tk_ecmr_key **ret) {
        const char *crv = NULL, *x = NULL, *y = NULL, *d = NULL;
        _cleanup_(ec_group_freep) EC_GROUP *group = NULL;
        _cleanup_(bn_ctx_freep) BN_CTX *ctx = BN_CTX_new();
        _cleanup_(ec_point_freep) EC_POINT *pub = NULL, *check = NULL;
        _cleanup_(bn_clear_freep) BIGNUM *scalar = NULL;
        uint8_t buf[ECPOINT_MAX_COORD];
        int r;

        if (!ctx)
                return -ENOMEM;
        if (!json_is_string(json_object_get(jwk, "kty")) || strcmp(json_string_value(json_object_get(jwk, "kty")), "EC") != 0)
                return -EPROTONOSUPPORT;
        if (json_unpack((json_t *) jwk, "{s:s,s:s,s:s,s:s}", "crv", &crv, "x", &x, "y", &y, "d", &d) < 0)
                return -EINVAL;
        int nid = ecpoint_curve_nid(crv);
        if (nid == NID_undef)
                return -EOPNOTSUPP;
        group = EC_GROUP_new_by_curve_name(nid);
        if (!group)
                return -ENOMEM;

        r = ecpoint_decode(group, x, strlen(x), y, strlen(y), ctx, &pub);
        if (r < 0)
                return r;

        size_t coord_len = ecpoint_coord_len(group);
        size_t n = jose_b64_dec_buf(d, strlen(d), NULL, 0);
        if (n == SIZE_MAX || n == 0 || n > coord_len)
                return -EINVAL;
        if (jose_b64_dec_buf(d, strlen(d), buf, sizeof(buf)) != n)
                return -EINVAL;
        scalar = BN_secure_new();
        if (!scalar) {
                OPENSSL_cleanse(buf, sizeof(buf));
                return -ENOMEM;
        }
        BN_bin2bn(buf, (int) n, scalar);
        OPENSSL_cleanse(buf, sizeof(buf));
        BN_set_flags(scalar, BN_FLG_CONSTTIME);

        if (BN_is_zero(scalar) || BN_cmp(scalar, EC_GROUP_get0_order(group)) >= 0)
                return -EINVAL;
        check = EC_POINT_new(group);
        if (!check || !EC_POINT_mul(group, check, scalar, NULL, NULL, ctx))
                return -ENOMEM;
        if (EC_POINT_cmp(group, check, pub, ctx) != 0)
                return -EINVAL;

        struct tk_ecmr_key *k = calloc(1, sizeof(*k));
        if (!k)
                return -ENOMEM;
        k->group = TAKE_PTR(group);
        k->d = TAKE_PTR(scalar);
        k->coord_len = coord_len;
        k->crv = crv;
        *ret = k;
        return 0;
}

static void key_clear(struct tk_key *k) {
        free(k->file);
        json_decref(k->jwk);
        for (size_t i = 0; i < TK_HASH_COUNT; i++)
                free(k->thp[i]);
        ecmr_key_free(k->ecmr);
}

void tk_keyset_free(struct tk_keyset *ks) {
        if (!ks)
                return;
        for (size_t i = 0; i < ks->n_keys; i++)
                key_clear(&ks->keys[i]);
        free(ks->keys);
        free(ks);
}

size_t tk_keyset_count(const struct tk_keyset *ks, enum tk_role role, bool hidden) {
        size_t n = 0;
        for (size_t i = 0; i < ks->n_keys; i++)
                if (ks->keys[i].role == role && ks->keys[i].hidden == hidden)
                        n++;
        return n;
}

static bool is_key_file_name(const char *name) {
        size_t len = strlen(name);
        /* ".jwk" alone is a hidden file with an empty name, as tang sees it. */
        return len >= 4 && strcmp(name + len - 4, ".jwk") == 0;
}

static json_t *read_key_file(int dirfd, const char *name, const char **reason) {
        /* Like tang, follow symbolic links, but only to regular files;
         * O_NONBLOCK keeps a FIFO planted in the directory from hanging us. */
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        struct stat st;

        if (fd < 0) {
                *reason = errno == EACCES ? "is not readable (permission denied)" : "cannot be opened";
                return NULL;
        }
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
                *reason = "is not a regular file";
                return NULL;
        }
        if (st.st_size == 0) {
                *reason = "is empty";
                return NULL;
        }
        if (st.st_size > KEY_FILE_MAX) {
                *reason = "is too large to be a key";
                return NULL;
        }
        _cleanup_fclose_ FILE *f = fdopen(fd, "r");
        if (!f) {
                *reason = "cannot be read";
                return NULL;
        }
        TAKE_FD(fd);
        json_t *json = json_loadf(f, JSON_REJECT_DUPLICATES, NULL);
        if (!json)
                *reason = "is not valid JSON";
        return json;
}

static const char *key_rejection(const char *what, int r) {
        static __thread char msg[128];
        const char *why = r == -EPROTONOSUPPORT ? "that is not an EC key"
                        : r == -EOPNOTSUPP     ? "on an unsupported curve"
                                               : "whose private part is missing or does not match its public point";
        snprintf(msg, sizeof(msg), "is %s %s", what, why);
        return msg;
}

static int key_init(struct tk_key *k, const char *name, json_t *jwk, const char **reason) {
        k->jwk = jwk;
        k->file = strdup(name);
        if (!k->file)
                return -ENOMEM;
        k->hidden = name[0] == '.';
        k->role = classify(jwk);
        k->crv = json_string_value(json_object_get(jwk, "crv"));
        for (size_t h = 0; h < TK_HASH_COUNT; h++) {
                k->thp[h] = tk_thumbprint(jwk, tk_hash_names[h]);
                if (!k->thp[h]) {
                        *reason = "is not a JWK with a thumbprint";
                        return -EINVAL;
                }
        }
        bool exchange = tk_key_allows_recovery(jwk);
        if (!exchange && k->role != TK_ROLE_SIGNING)
                return 0;
        /* Keys that will sign or derive are checked now, so that a foreign
         * key cannot make every later /adv or /rec fail. */
        struct tk_ecmr_key *ec = NULL;
        int r = ecmr_key_prepare(jwk, &ec);
        if (r < 0) {
                *reason = key_rejection(exchange ? "an exchange key" : "a signing key", r);
                return r;
        }
        if (exchange)
                k->ecmr = ec;
        else
                ecmr_key_free(ec);
        return 0;
}

static int cmp_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int tk_keyset_load(const char *dir, tk_warn_fn warn, void *userdata, struct tk_keyset **ret) {
        _cleanup_closedir_ DIR *d = opendir(dir);
        _cleanup_(tk_keyset_freep) struct tk_keyset *ks = NULL;
        char **names = NULL;
        size_t n_names = 0, cap = 0;
        struct dirent *de;
        int r = 0;

        if (!d)
                return -errno;
        ks = calloc(1, sizeof(*ks));
        if (!ks)
                return -ENOMEM;

        errno = 0;
        while ((de = readdir(d))) {
                if (!is_key_file_name(de->d_name))
                        continue;
                if (n_names == cap) {
                        cap = cap ? cap * 2 : 16;
                        char **nn = realloc(names, cap * sizeof(*names));
                        if (!nn) {
                                r = -ENOMEM;
                                goto out;
                        }
                        names = nn;
                }
                names[n_names] = strdup(de->d_name);
                if (!names[n_names]) {
                        r = -ENOMEM;
                        goto out;
                }
                n_names++;
        }
        /* Sorted so the advertisement is the same whatever readdir's order. */
        if (n_names > 0)
                qsort(names, n_names, sizeof(*names), cmp_names);

        ks->keys = calloc(n_names ? n_names : 1, sizeof(*ks->keys));
        if (!ks->keys) {
                r = -ENOMEM;
                goto out;
        }
        for (size_t i = 0; i < n_names; i++) {
                const char *reason = NULL;
                json_t *jwk = read_key_file(dirfd(d), names[i], &reason);
                if (!jwk) {
                        if (warn)
                                warn(userdata, names[i], reason);
                        continue;
                }
                if (names[i][0] != '.')
                        ks->n_advertised_files++;
                if (!json_is_object(jwk)) {
                        json_decref(jwk);
                        if (warn)
                                warn(userdata, names[i], "is not a JSON object");
                        continue;
                }
                struct tk_key *k = &ks->keys[ks->n_keys];
                r = key_init(k, names[i], jwk, &reason);
                if (r == -ENOMEM)
                        goto out;
                if (r < 0) {
                        key_clear(k);
                        memset(k, 0, sizeof(*k));
                        if (warn)
                                warn(userdata, names[i], reason);
                        r = 0;
                        continue;
                }
                ks->n_keys++;
        }
        *ret = TAKE_PTR(ks);
out:
        for (size_t i = 0; i < n_names; i++)
                free(names[i]);
        free(names);
        return r;
}
