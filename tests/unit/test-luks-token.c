/* The one parser of clevis token JSON (tc_luks_token_jwe, also what the
 * bindings list reads): keyslots exactly as cryptsetup and Clevis write them.
 * And the one reader of a LUKS header's UUID (tc_luks_uuid). */
#include "check.h"

#include "ctx.h"
#include "luks.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <libcryptsetup.h>

static const char jwe[] = "\"jwe\":{\"protected\":\"e30\",\"encrypted_key\":\"\",\"iv\":\"aa\",\"ciphertext\":\"bb\",\"tag\":\"cc\"}";

static int parse(const char *keyslots) {
        char json[512];
        char *compact = NULL;
        struct tc_err err = {};
        snprintf(json, sizeof(json), "{\"type\":\"clevis\",\"keyslots\":%s,%s}", keyslots, jwe);
        int r = tc_luks_token_jwe(json, &compact, &err);
        if (r == 0)
                CHECK_STR(compact, "e30..aa.bb.cc");
        else
                CHECK(err.msg[0] != '\0');
        free(compact);
        return r;
}

TEST(token_keyslots_as_cryptsetup_writes_them) {
        CHECK_INT(parse("[]"), 0);
        CHECK_INT(parse("[\"0\"]"), 0);
        CHECK_INT(parse("[\"7\"]"), 0);
        CHECK_INT(parse("[\"31\"]"), 0);
}

TEST(token_keyslots_anything_else_rejected) {
        static const char *const bad[] = {
                "[\"x\"]", "[\"\"]", "[\"-1\"]", "[\"007\"]", "[\"00\"]", "[\"+1\"]", "[\" 1\"]", "[\"1 \"]",
                "[\"32\"]", "[\"4294967296\"]", "[0]", "[null]", "[[\"1\"]]", "[\"1\",\"2\"]", "\"1\"", "{}",
        };
        for (size_t i = 0; i < ELEMENTS(bad); i++)
                if (!CHECK(parse(bad[i]) == -EINVAL))
                        fprintf(stderr, "  accepted keyslots %s\n", bad[i]);
}

/* luks.h knows the LUKS2 limits without loading libcryptsetup: they must be
 * the library's. */
TEST(luks2_limits_are_libcryptsetups) {
        CHECK(TC_LUKS2_KEYSLOTS == crypt_keyslot_max(CRYPT_LUKS2));
        CHECK(TC_LUKS2_TOKENS == crypt_token_max(CRYPT_LUKS2));
}

/* A LUKS image of the given type in a fresh file; its UUID in uuid. */
static int make_luks(const char *path, const char *type, char *uuid, size_t size) {
        struct crypt_device *cd = NULL;
        struct crypt_pbkdf_type pbkdf = { .type = CRYPT_KDF_PBKDF2, .hash = "sha256", .iterations = 1000,
                                          .flags = CRYPT_PBKDF_NO_BENCHMARK };
        FILE *f = fopen(path, "w");
        int r = f && ftruncate(fileno(f), 32 << 20) == 0 ? 0 : -1;
        if (f)
                fclose(f);
        if (r == 0)
                r = crypt_init(&cd, path);
        if (r == 0 && strcmp(type, CRYPT_LUKS2) == 0)
                r = crypt_set_pbkdf_type(cd, &pbkdf);
        if (r == 0)
                r = crypt_format(cd, type, "aes", "xts-plain64", NULL, NULL, 64, NULL);
        if (r == 0)
                snprintf(uuid, size, "%s", crypt_get_uuid(cd));
        crypt_free(cd);
        return r;
}

/* unlock's default mapping name, luks-UUID, comes from here: LUKS1 too (its
 * own message follows), and anything else is not a LUKS device. */
TEST(luks_uuid_reads_the_header_of_any_luks_version) {
        char dir[] = "/tmp/tether-unit-luks-XXXXXX", path[64], want[64];
        struct tc_err err = {};
        char *uuid = NULL;
        REQUIRE(mkdtemp(dir) != NULL);
        snprintf(path, sizeof(path), "%s/image", dir);
        const char *types[] = { CRYPT_LUKS2, CRYPT_LUKS1 };
        for (size_t i = 0; i < ELEMENTS(types); i++) {
                if (!CHECK_INT(make_luks(path, types[i], want, sizeof(want)), 0))
                        continue;
                if (CHECK_INT(tc_luks_uuid(path, &uuid, &err), 0))
                        CHECK_STR(uuid, want);
                free(uuid);
                uuid = NULL;
        }
        FILE *f = fopen(path, "w");
        if (f)
                fclose(f);
        REQUIRE(truncate(path, 1 << 20) == 0);
        CHECK(tc_luks_uuid(path, &uuid, &err) < 0);
        CHECK(strstr(err.msg, "is not a LUKS device") != NULL);
        CHECK(uuid == NULL);
        unlink(path);
        rmdir(dir);
}


/* A LUKS2 image whose slot opens with pass, and a luks2-keyring token for
 * it whose passphrase is in this process's keyring (the token returned). */
static int make_keyring_image(const char *path, const char *pass, const char *desc) {
        char uuid[64];
        struct crypt_device *cd = NULL;
        if (make_luks(path, CRYPT_LUKS2, uuid, sizeof(uuid)) != 0)
                return -1;
        /* Formatted again in this handle, which then holds the volume key. */
        struct crypt_pbkdf_type pbkdf = { .type = CRYPT_KDF_PBKDF2, .hash = "sha256", .iterations = 1000,
                                          .flags = CRYPT_PBKDF_NO_BENCHMARK };
        int r = crypt_init(&cd, path), slot = -1, token = -1;
        if (r == 0)
                r = crypt_set_pbkdf_type(cd, &pbkdf);
        if (r == 0)
                r = crypt_format(cd, CRYPT_LUKS2, "aes", "xts-plain64", NULL, NULL, 64, NULL);
        if (r == 0)
                slot = crypt_keyslot_add_by_volume_key(cd, CRYPT_ANY_SLOT, NULL, 0, pass, strlen(pass));
        struct crypt_token_params_luks2_keyring keyring = { .key_description = desc };
        if (slot >= 0)
                token = crypt_token_luks2_keyring_set(cd, CRYPT_ANY_TOKEN, &keyring);
        if (token >= 0 && crypt_token_assign_keyslot(cd, token, slot) < 0)
                token = -1;
        crypt_free(cd);
        /* KEY_SPEC_PROCESS_KEYRING: gone with this process. */
        if (token >= 0 && syscall(SYS_add_key, "user", desc, pass, strlen(pass), -2) < 0)
                token = -1;
        return token;
}

/* tc_luks_bind's proof of access is one named token: CRYPT_ANY_TOKEN (-1)
 * must not let any token of the header (here a luks2-keyring one whose
 * passphrase is in this process's keyring) stand in for it. */
TEST(bind_never_proves_access_with_any_token) {
        char dir[] = "/tmp/tether-unit-luks-XXXXXX", path[64];
        struct tc_err err = {};
        struct tc_ctx ctx;
        REQUIRE(mkdtemp(dir) != NULL);
        snprintf(path, sizeof(path), "%s/image", dir);
        int token = make_keyring_image(path, "unit-passphrase", "tether-unit-any-token");
        REQUIRE(token >= 0);

        tc_ctx_init(&ctx);
        struct tc_luks_bind_opts o = { .pin = "null", .config = "{}", .slot = -1, .token = -1,
                                       .auth = { .passphrase = NULL, .existing_token = -1 } };
        CHECK(tc_luks_bind(&ctx, path, &o, &err) < 0);
        CHECK(strstr(err.msg, "not a token number") != NULL);
        /* The named token itself still proves access. */
        o.auth.existing_token = token;
        CHECK_INT(tc_luks_bind(&ctx, path, &o, &err) >= 0, 1);
        unlink(path);
        rmdir(dir);
}

/* Here, not at the top: it sends crypt_*() through the loader's pointers,
 * and the code above calls the linked library. */
#include "cryptsetup-dl.h"

/* The keyslot-context functions came with libcryptsetup 2.6: with an older
 * libcryptsetup.so.12 at run time, LUKS still works, and only bind -e with
 * another tool's token refuses, naming the library. A function every LUKS
 * operation needs, absent, is named when the library loads. */
TEST(older_libcryptsetup_without_keyslot_contexts) {
        char dir[] = "/tmp/tether-unit-luks-XXXXXX", path[64];
        struct tc_err err = {};
        struct tc_ctx ctx;
        char *uuid = NULL;
        REQUIRE(mkdtemp(dir) != NULL);
        snprintf(path, sizeof(path), "%s/image", dir);
        int token = make_keyring_image(path, "unit-passphrase", "tether-unit-old-library");
        REQUIRE(token >= 0);
        tc_ctx_init(&ctx);
        struct tc_luks_bind_opts o = { .pin = "null", .config = "{}", .slot = -1, .token = -1,
                                       .auth = { .existing_token = token } };
        static const char *const optional[] = { "crypt_keyslot_context_init_by_token",
                                                 "crypt_volume_key_get_by_keyslot_context",
                                                 "crypt_keyslot_context_free" };
        for (size_t i = 0; i < ELEMENTS(optional); i++) {
                tc_cryptsetup_reload_for_tests(optional[i]);
                CHECK_INT(tc_cryptsetup_load(&err), 0);
                CHECK(!tc_cryptsetup_has_keyslot_context());
                if (CHECK_INT(tc_luks_uuid(path, &uuid, &err), 0))
                        free(uuid);
                uuid = NULL;
                CHECK_INT(tc_luks_bind(&ctx, path, &o, &err), -EOPNOTSUPP);
                CHECK(strstr(err.msg, "the libcryptsetup in use (libcryptsetup.so.12) is too old") != NULL);
        }
        tc_cryptsetup_reload_for_tests("crypt_load");
        CHECK(tc_luks_uuid(path, &uuid, &err) == -ENOPKG);
        CHECK(strstr(err.msg, "libcryptsetup.so.12 has no crypt_load") != NULL);
        /* All there again: the token opens. */
        tc_cryptsetup_reload_for_tests(NULL);
        CHECK(tc_cryptsetup_has_keyslot_context());
        CHECK(tc_luks_bind(&ctx, path, &o, &err) >= 0);
        unlink(path);
        rmdir(dir);
}
