/* The one parser of clevis token JSON (tc_luks_token_jwe, also what the
 * bindings list reads): keyslots exactly as cryptsetup and Clevis write them. */
#include "check.h"

#include "luks.h"

#include <stdio.h>

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
