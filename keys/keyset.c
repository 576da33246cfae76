/* Loading a Tang key directory into a struct tk_keyset. */
#include "keyset.h"
#include "cleanup.h"
#include "ecpoint.h"
#include "harden.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <jose/b64.h>
#include <jose/jwk.h>
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
        _cleanup_(EC_GROUP_freep) EC_GROUP *group = NULL;
        _cleanup_(BN_CTX_freep) BN_CTX *ctx = BN_CTX_new();
        _cleanup_(EC_POINT_clear_freep) EC_POINT *pub = NULL, *check = NULL;
        _cleanup_(BN_clear_freep) BIGNUM *scalar = NULL;
        uint8_t buf[ECPOINT_MAX_COORD];
        TC_CLEANUP_ERASE(buf);
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
        if (!scalar)
                return -ENOMEM;
        BN_bin2bn(buf, (int) n, scalar);
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

/* A copy of a validated key for another set: the group is made anew rather
 * than shared, since the old set may be serving requests meanwhile. */
static int ecmr_key_copy(const struct tk_ecmr_key *src, const char *crv, struct tk_ecmr_key **ret) {
        struct tk_ecmr_key *k = calloc(1, sizeof(*k));
        if (!k)
                return -ENOMEM;
        k->group = EC_GROUP_new_by_curve_name(EC_GROUP_get_curve_name(src->group));
        k->d = BN_secure_new();
        if (!k->group || !k->d || !BN_copy(k->d, src->d)) {
                ecmr_key_free(k);
                return -ENOMEM;
        }
        BN_set_flags(k->d, BN_FLG_CONSTTIME);
        k->coord_len = src->coord_len;
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
        /* ".jwk" alone is a hidden file with an empty name, as tang sees it. */
        return tc_has_suffix(name, ".jwk");
}

static void file_id_set(struct tk_file_id *id, const struct stat *st) {
        *id = (struct tk_file_id) { .dev = st->st_dev, .ino = st->st_ino, .size = st->st_size,
                                    .mtime = st->st_mtim, .ctime = st->st_ctim };
}

static bool file_id_equal(const struct tk_file_id *a, const struct tk_file_id *b) {
        return a->dev == b->dev && a->ino == b->ino && a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
               a->mtime.tv_nsec == b->mtime.tv_nsec && a->ctime.tv_sec == b->ctime.tv_sec &&
               a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* Reads and parses one key file into *ret. A file that holds no key gives a
 * negative errno and why says what is wrong with it; -ENOMEM means the file
 * may well hold a key that memory was lacking to read: such a file must fail
 * the load, not be skipped as if it were invalid. */
static int read_key_file(int dirfd, const char *name, struct tk_file_id *id, json_t **ret, struct tc_err *why) {
        /* Like tang, follow symbolic links, but only to regular files;
         * O_NONBLOCK keeps a FIFO planted in the directory from hanging us. */
        _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
        struct stat st;

        if (fd < 0)
                return tc_fail(why, -errno, errno == EACCES ? "is not readable (permission denied)" : "cannot be opened");
        if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return tc_fail(why, -EINVAL, "is not a regular file");
        if (st.st_size == 0)
                return tc_fail(why, -ENODATA, "is empty");
        if (st.st_size > KEY_FILE_MAX)
                return tc_fail(why, -EFBIG, "is too large to be a key");
        file_id_set(id, &st);
        /* read(2) into a buffer wiped after parsing: a stdio buffer would
         * keep the private key in freed memory. */
        _cleanup_erase_free_ char *text = malloc(st.st_size);
        size_t len = 0;
        if (!text)
                return tc_fail(why, -ENOMEM, "cannot be read (out of memory)");
        while (len < (size_t) st.st_size) {
                ssize_t n = read(fd, text + len, st.st_size - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return tc_fail(why, -errno, "cannot be read");
                if (n == 0)
                        break;
                len += n;
        }
        json_error_t jerr;
        json_t *json = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
        if (!json)
                return tc_fail(why, json_error_code(&jerr) == json_error_out_of_memory ? -ENOMEM : -EINVAL,
                               "is not valid JSON");
        *ret = json;
        return 0;
}

/* Whether jwk has the members its thumbprint is computed from (RFC 7638):
 * if so, failing to compute it means the memory ran out. */
static bool has_thumbprint_members(const json_t *jwk) {
        static const char *const members[][4] = {
                { "EC", "crv", "x", "y" }, { "RSA", "e", "n", NULL }, { "oct", "k", NULL, NULL },
                { "OKP", "crv", "x", NULL },
        };
        const char *kty = json_string_value(json_object_get(jwk, "kty"));

        for (size_t i = 0; kty && i < sizeof(members) / sizeof(members[0]); i++) {
                if (strcmp(kty, members[i][0]) != 0)
                        continue;
                for (size_t m = 1; m < 4 && members[i][m]; m++)
                        if (!json_is_string(json_object_get(jwk, members[i][m])))
                                return false;
                return true;
        }
        return false;
}

static int key_init(struct tk_key *k, const char *name, json_t *jwk, struct tc_err *why) {
        k->jwk = jwk;
        k->file = strdup(name);
        if (!k->file)
                return tc_fail(why, -ENOMEM, "cannot be loaded (out of memory)");
        k->hidden = name[0] == '.';
        k->role = classify(jwk);
        k->crv = json_string_value(json_object_get(jwk, "crv"));
        for (size_t h = 0; h < TK_HASH_COUNT; h++) {
                k->thp[h] = tk_thumbprint(jwk, tk_hash_names[h]);
                if (!k->thp[h])
                        return tc_fail(why, has_thumbprint_members(jwk) ? -ENOMEM : -EINVAL,
                                       "is not a JWK with a thumbprint");
        }
        bool exchange = tk_key_allows_recovery(jwk);
        if (!exchange && k->role != TK_ROLE_SIGNING)
                return 0;
        /* Keys that will sign or derive are checked now, so that a foreign
         * key cannot make every later /adv or /rec fail. */
        struct tk_ecmr_key *ec = NULL;
        int r = ecmr_key_prepare(jwk, &ec);
        if (r < 0)
                return tc_fail(why, r, "is %s %s", exchange ? "an exchange key" : "a signing key",
                               r == -EPROTONOSUPPORT ? "that is not an EC key"
                               : r == -EOPNOTSUPP    ? "on an unsupported curve"
                                                     : "whose private part is missing or does not match its public point");
        if (exchange)
                k->ecmr = ec;
        else
                ecmr_key_free(ec);
        return 0;
}

/* Takes over src, already validated, without parsing or checking it again. */
static int key_copy(struct tk_key *dst, const struct tk_key *src) {
        dst->file = strdup(src->file);
        dst->jwk = json_deep_copy(src->jwk);
        if (!dst->file || !dst->jwk)
                return -ENOMEM;
        dst->id = src->id;
        dst->hidden = src->hidden;
        dst->role = src->role;
        dst->crv = json_string_value(json_object_get(dst->jwk, "crv"));
        for (size_t h = 0; h < TK_HASH_COUNT; h++)
                if (!(dst->thp[h] = strdup(src->thp[h])))
                        return -ENOMEM;
        return src->ecmr ? ecmr_key_copy(src->ecmr, dst->crv, &dst->ecmr) : 0;
}

/* The key of prev loaded from this very file, if any (prev is sorted by name). */
static const struct tk_key *unchanged_key(const struct tk_keyset *prev, int dirfd, const char *name) {
        struct stat st;
        struct tk_file_id id;
        size_t lo = 0, hi = prev ? prev->n_keys : 0;

        while (lo < hi) {
                size_t mid = lo + (hi - lo) / 2;
                int c = strcmp(prev->keys[mid].file, name);
                if (c == 0) {
                        if (fstatat(dirfd, name, &st, 0) < 0 || !S_ISREG(st.st_mode))
                                return NULL;
                        file_id_set(&id, &st);
                        return file_id_equal(&id, &prev->keys[mid].id) ? &prev->keys[mid] : NULL;
                }
                if (c < 0)
                        lo = mid + 1;
                else
                        hi = mid;
        }
        return NULL;
}

static int cmp_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int tk_keyset_add(struct tk_keyset *ks, const char *name, json_t *jwk, struct tc_err *err) {
        size_t pos = 0;
        while (pos < ks->n_keys && strcmp(ks->keys[pos].file, name) < 0)
                pos++;
        if (pos < ks->n_keys && strcmp(ks->keys[pos].file, name) == 0) {
                json_decref(jwk);
                return tc_fail(err, -EEXIST, "is in the set already");
        }
        struct tk_key *keys = realloc(ks->keys, (ks->n_keys + 1) * sizeof(*keys));
        if (!keys) {
                json_decref(jwk);
                return tc_fail(err, -ENOMEM, "cannot be loaded (out of memory)");
        }
        ks->keys = keys;
        struct tk_key k = {};
        int r = key_init(&k, name, jwk, err);
        if (r < 0) {
                key_clear(&k);
                return r;
        }
        memmove(&keys[pos + 1], &keys[pos], (ks->n_keys - pos) * sizeof(*keys));
        keys[pos] = k;
        ks->n_keys++;
        if (!k.hidden)
                ks->n_advertised_files++;
        return 0;
}

int tk_keyset_load(const char *dir, tk_warn_fn warn, void *userdata, struct tk_keyset **ret) {
        return tk_keyset_load_reusing(dir, NULL, warn, userdata, ret);
}

int tk_keyset_load_reusing(const char *dir, const struct tk_keyset *prev, tk_warn_fn warn, void *userdata,
                           struct tk_keyset **ret) {
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

        for (;;) {
                /* NULL is both the end and an error: only errno tells. An
                 * error must fail the load, or a set missing the keys after
                 * it would replace a complete one. */
                errno = 0;
                de = readdir(d);
                if (!de) {
                        if (errno != 0) {
                                r = -errno;
                                goto out;
                        }
                        break;
                }
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
                struct tc_err why = {};
                const struct tk_key *same = unchanged_key(prev, dirfd(d), names[i]);
                if (same) {
                        r = key_copy(&ks->keys[ks->n_keys], same);
                        if (r < 0) {
                                ks->n_keys++;   /* freed with the set */
                                goto out;
                        }
                        if (!same->hidden)
                                ks->n_advertised_files++;
                        ks->n_keys++;
                        continue;
                }
                struct tk_file_id id = {};
                json_t *jwk = NULL;
                r = read_key_file(dirfd(d), names[i], &id, &jwk, &why);
                if (r == -ENOMEM)
                        goto out;
                if (r < 0) {
                        if (warn)
                                warn(userdata, names[i], &why);
                        r = 0;
                        continue;
                }
                if (names[i][0] != '.')
                        ks->n_advertised_files++;
                if (!json_is_object(jwk)) {
                        json_decref(jwk);
                        tc_fail(&why, -EINVAL, "is not a JSON object");
                        if (warn)
                                warn(userdata, names[i], &why);
                        continue;
                }
                struct tk_key *k = &ks->keys[ks->n_keys];
                r = key_init(k, names[i], jwk, &why);
                if (r < 0) {
                        /* Not counted in n_keys: the set would not free it. */
                        key_clear(k);
                        memset(k, 0, sizeof(*k));
                        if (r == -ENOMEM)
                                goto out;
                        if (warn)
                                warn(userdata, names[i], &why);
                        r = 0;
                        continue;
                }
                k->id = id;
                ks->n_keys++;
        }
        *ret = TAKE_PTR(ks);
out:
        for (size_t i = 0; i < n_names; i++)
                free(names[i]);
        free(names);
        return r;
}
