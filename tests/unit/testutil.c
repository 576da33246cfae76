#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <unistd.h>
#include <jose/jwk.h>
#include <jose/jws.h>
#include <openssl/evp.h>
#include <openssl/objects.h>

char *tu_mkdtemp(void) {
        char tmpl[] = "/tmp/tether-unit-XXXXXX";
        if (!mkdtemp(tmpl))
                return NULL;
        return strdup(tmpl);
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st;
        (void) ftw;
        if (flag == FTW_DP)
                (void) rmdir(path);
        else
                (void) unlink(path);
        return 0;
}

void tu_rmrf(const char *dir) {
        if (dir)
                (void) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

void tu_tmpdir_free(char *dir) {
        tu_rmrf(dir);
        free(dir);
}

int tu_write(const char *dir, const char *name, const char *text, size_t len) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0)
                return -1;
        size_t off = 0;
        while (off < len) {
                ssize_t w = write(fd, text + off, len - off);
                if (w <= 0) {
                        close(fd);
                        return -1;
                }
                off += (size_t) w;
        }
        return close(fd);
}

int tu_write_str(const char *dir, const char *name, const char *text) {
        return tu_write(dir, name, text, strlen(text));
}

int tu_write_json(const char *dir, const char *name, const json_t *json) {
        char *text = json_dumps(json, JSON_COMPACT | JSON_SORT_KEYS);
        if (!text)
                return -1;
        int r = tu_write_str(dir, name, text);
        free(text);
        return r;
}

json_t *tu_read_json(const char *dir, const char *name) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        return json_load_file(path, 0, NULL);
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

char **tu_list(const char *dir, size_t *n) {
        DIR *d = opendir(dir);
        char **names = NULL;
        struct dirent *de;

        *n = 0;
        if (!d)
                return NULL;
        while ((de = readdir(d))) {
                if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                        continue;
                char **nn = realloc(names, (*n + 1) * sizeof(*names));
                if (!nn)
                        abort();
                names = nn;
                names[(*n)++] = strdup(de->d_name);
        }
        closedir(d);
        if (*n)
                qsort(names, *n, sizeof(*names), cmp_str);
        return names;
}

void tu_list_free(char **names, size_t n) {
        for (size_t i = 0; i < n; i++)
                free(names[i]);
        free(names);
}

json_t *tu_gen(const char *template_json) {
        json_t *jwk = json_loads(template_json, 0, NULL);
        if (!jwk)
                return NULL;
        if (!jose_jwk_gen(NULL, jwk)) {
                json_decref(jwk);
                return NULL;
        }
        return jwk;
}

void tu_keydir_free(char *dir, const struct tu_key *keys, size_t n) {
        tu_rmrf(dir);
        free(dir);
        for (size_t i = 0; i < n; i++)
                if (keys[i].template_json) {
                        json_decref(*keys[i].jwk);
                        *keys[i].jwk = NULL;
                }
}

char *tu_keydir(const struct tu_key *keys, size_t n, struct tk_keyset **ks) {
        char *dir = tu_mkdtemp();
        bool ok = dir;

        if (ks)
                *ks = NULL;
        for (size_t i = 0; ok && i < n; i++) {
                if (keys[i].template_json)
                        *keys[i].jwk = tu_gen(keys[i].template_json);
                ok = *keys[i].jwk && tu_write_json(dir, keys[i].file, *keys[i].jwk) == 0;
        }
        if (ok && ks)
                ok = tk_keyset_load(dir, NULL, NULL, ks) == 0;
        if (!ok) {
                fprintf(stderr, "cannot prepare a key directory %s\n", dir ?: "");
                tu_keydir_free(dir, keys, n);
                return NULL;
        }
        return dir;
}

const struct tk_key *tu_find_key(const struct tk_keyset *ks, const char *file) {
        for (size_t i = 0; i < ks->n_keys; i++)
                if (strcmp(ks->keys[i].file, file) == 0)
                        return &ks->keys[i];
        return NULL;
}

bool tu_jws_verifies_with(const json_t *jws, const json_t *jwk) {
        json_t *pub = json_pack("{s:O,s:O,s:O,s:O}", "kty", json_object_get(jwk, "kty"), "crv",
                                json_object_get(jwk, "crv"), "x", json_object_get(jwk, "x"), "y",
                                json_object_get(jwk, "y"));
        bool ok = pub && jose_jws_ver(NULL, jws, NULL, pub, false);
        json_decref(pub);
        return ok;
}

static const char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

char *tu_b64(const uint8_t *buf, size_t len) {
        char *out = malloc(len / 3 * 4 + 5);
        size_t o = 0, i = 0;

        if (!out)
                return NULL;
        for (; i + 3 <= len; i += 3) {
                uint32_t v = (uint32_t) buf[i] << 16 | (uint32_t) buf[i + 1] << 8 | buf[i + 2];
                out[o++] = b64_alphabet[v >> 18 & 63];
                out[o++] = b64_alphabet[v >> 12 & 63];
                out[o++] = b64_alphabet[v >> 6 & 63];
                out[o++] = b64_alphabet[v & 63];
        }
        if (len - i == 1) {
                uint32_t v = (uint32_t) buf[i] << 16;
                out[o++] = b64_alphabet[v >> 18 & 63];
                out[o++] = b64_alphabet[v >> 12 & 63];
        } else if (len - i == 2) {
                uint32_t v = (uint32_t) buf[i] << 16 | (uint32_t) buf[i + 1] << 8;
                out[o++] = b64_alphabet[v >> 18 & 63];
                out[o++] = b64_alphabet[v >> 12 & 63];
                out[o++] = b64_alphabet[v >> 6 & 63];
        }
        out[o] = '\0';
        return out;
}

static int b64_value(char c) {
        const char *p = c ? strchr(b64_alphabet, c) : NULL;
        return p ? (int) (p - b64_alphabet) : -1;
}

size_t tu_unb64(const char *s, uint8_t *out, size_t outlen) {
        size_t len = strlen(s), o = 0;
        uint32_t acc = 0;
        int bits = 0;

        if (len % 4 == 1)
                return SIZE_MAX;
        for (size_t i = 0; i < len; i++) {
                int v = b64_value(s[i]);
                if (v < 0)
                        return SIZE_MAX;
                acc = acc << 6 | (uint32_t) v;
                bits += 6;
                if (bits >= 8) {
                        bits -= 8;
                        if (o >= outlen)
                                return SIZE_MAX;
                        out[o++] = (uint8_t) (acc >> bits);
                        acc &= (1u << bits) - 1;
                }
        }
        return o;
}

char *tu_bn_b64(const BIGNUM *bn, size_t width) {
        uint8_t buf[128];
        if (width > sizeof(buf) || BN_bn2binpad(bn, buf, (int) width) < 0)
                return NULL;
        return tu_b64(buf, width);
}

BIGNUM *tu_b64_bn(const char *s) {
        uint8_t buf[256];
        size_t n = tu_unb64(s, buf, sizeof(buf));
        if (n == SIZE_MAX)
                return NULL;
        return BN_bin2bn(buf, (int) n, NULL);
}

char *tu_thumbprint(const json_t *jwk, const char *hash) {
        static const struct { const char *name, *md; } hashes[] = {
                { "S1", "SHA1" }, { "S224", "SHA224" }, { "S256", "SHA256" },
                { "S384", "SHA384" }, { "S512", "SHA512" },
        };
        const char *crv = json_string_value(json_object_get(jwk, "crv"));
        const char *kty = json_string_value(json_object_get(jwk, "kty"));
        const char *x = json_string_value(json_object_get(jwk, "x"));
        const char *y = json_string_value(json_object_get(jwk, "y"));
        const EVP_MD *md = NULL;
        char canon[512];
        uint8_t dig[EVP_MAX_MD_SIZE];
        unsigned dlen = 0;

        for (size_t i = 0; i < sizeof(hashes) / sizeof(hashes[0]); i++)
                if (strcmp(hash, hashes[i].name) == 0)
                        md = EVP_get_digestbyname(hashes[i].md);
        if (!md || !crv || !kty || !x || !y || strcmp(kty, "EC") != 0)
                return NULL;
        /* RFC 7638 section 3.2: required members only, lexicographic order,
         * no whitespace. */
        int n = snprintf(canon, sizeof(canon), "{\"crv\":\"%s\",\"kty\":\"EC\",\"x\":\"%s\",\"y\":\"%s\"}", crv, x, y);
        if (n < 0 || (size_t) n >= sizeof(canon))
                return NULL;
        if (!EVP_Digest(canon, (size_t) n, dig, &dlen, md, NULL))
                return NULL;
        return tu_b64(dig, dlen);
}

EC_GROUP *tu_jwk_group(const json_t *jwk) {
        const char *crv = json_string_value(json_object_get(jwk, "crv"));
        int nid = NID_undef;
        if (!crv)
                return NULL;
        if (strcmp(crv, "P-256") == 0)
                nid = NID_X9_62_prime256v1;
        else if (strcmp(crv, "P-384") == 0)
                nid = NID_secp384r1;
        else if (strcmp(crv, "P-521") == 0)
                nid = NID_secp521r1;
        return nid == NID_undef ? NULL : EC_GROUP_new_by_curve_name(nid);
}

EC_POINT *tu_jwk_point(const EC_GROUP *group, const json_t *jwk) {
        BIGNUM *x = tu_b64_bn(json_string_value(json_object_get(jwk, "x")) ?: "");
        BIGNUM *y = tu_b64_bn(json_string_value(json_object_get(jwk, "y")) ?: "");
        EC_POINT *p = EC_POINT_new(group);

        if (!x || !y || !p || !EC_POINT_set_affine_coordinates(group, p, x, y, NULL)) {
                EC_POINT_free(p);
                p = NULL;
        }
        BN_free(x);
        BN_free(y);
        return p;
}

BIGNUM *tu_jwk_d(const json_t *jwk) {
        const char *d = json_string_value(json_object_get(jwk, "d"));
        return d ? tu_b64_bn(d) : NULL;
}

bool tu_point_b64(const EC_GROUP *group, const EC_POINT *p, char **xs, char **ys) {
        BIGNUM *x = BN_new(), *y = BN_new();
        size_t width = (size_t) (EC_GROUP_get_degree(group) + 7) / 8;
        bool ok = false;

        *xs = *ys = NULL;
        if (x && y && EC_POINT_get_affine_coordinates(group, p, x, y, NULL)) {
                *xs = tu_bn_b64(x, width);
                *ys = tu_bn_b64(y, width);
                ok = *xs && *ys;
        }
        BN_free(x);
        BN_free(y);
        return ok;
}

json_t *tu_point_jwk(const EC_GROUP *group, const char *crv, const EC_POINT *p) {
        char *x = NULL, *y = NULL;
        json_t *jwk = NULL;

        if (tu_point_b64(group, p, &x, &y))
                jwk = json_pack("{s:s,s:s,s:[s],s:s,s:s,s:s}", "alg", "ECMR", "crv", crv,
                                "key_ops", "deriveKey", "kty", "EC", "x", x, "y", y);
        free(x);
        free(y);
        return jwk;
}

EC_POINT *tu_random_point(const EC_GROUP *group, BIGNUM **ret_k) {
        BIGNUM *k = BN_new();
        EC_POINT *p = EC_POINT_new(group);

        if (!k || !p || !BN_rand_range(k, EC_GROUP_get0_order(group)) || BN_is_zero(k) ||
            !EC_POINT_mul(group, p, k, NULL, NULL, NULL)) {
                BN_free(k);
                EC_POINT_free(p);
                return NULL;
        }
        if (ret_k)
                *ret_k = k;
        else
                BN_clear_free(k);
        return p;
}

bool tu_ops_are(const json_t *ops, const char *const *want, size_t n) {
        if (!json_is_array(ops) || json_array_size(ops) != n)
                return false;
        for (size_t i = 0; i < n; i++) {
                const char *s = json_string_value(json_array_get(ops, i));
                if (!s || strcmp(s, want[i]) != 0)
                        return false;
        }
        return true;
}
