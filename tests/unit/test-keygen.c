/* keys/keygen.c: creating and rotating keys, never half-written. */
#include "check.h"
#include "testutil.h"
#include "keyset.h"

#include <grp.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static struct tc_err err;

/* How many files dir holds. */
static size_t count_files(const char *dir) {
        size_t n = 0;
        /* Two statements: in one call the argument n may be read before
         * tu_list has set it, and the names leak. */
        char **names = tu_list(dir, &n);
        tu_list_free(names, n);
        return n;
}

static bool has_name(char **names, size_t n, const char *name) {
        for (size_t i = 0; i < n; i++)
                if (strcmp(names[i], name) == 0)
                        return true;
        return false;
}

static mode_t file_mode(const char *dir, const char *name) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        if (lstat(path, &st) < 0 || !S_ISREG(st.st_mode))
                return (mode_t) -1;
        return st.st_mode & 07777;
}

/* Whether jwk is a complete P-521 key of this alg whose d matches (x, y),
 * checked with OpenSSL alone. */
static bool is_p521_key(const json_t *jwk, const char *alg) {
        const char *a = json_string_value(json_object_get(jwk, "alg"));
        const char *kty = json_string_value(json_object_get(jwk, "kty"));
        const char *crv = json_string_value(json_object_get(jwk, "crv"));
        if (!a || !kty || !crv || strcmp(a, alg) != 0 || strcmp(kty, "EC") != 0 || strcmp(crv, "P-521") != 0)
                return false;
        /* Fixed-width coordinates and scalar, as jose writes them. */
        const char *x = json_string_value(json_object_get(jwk, "x"));
        const char *y = json_string_value(json_object_get(jwk, "y"));
        const char *d = json_string_value(json_object_get(jwk, "d"));
        if (!x || !y || !d || strlen(x) != 88 || strlen(y) != 88 || strlen(d) != 88)
                return false;

        EC_GROUP *g = tu_jwk_group(jwk);
        EC_POINT *pub = g ? tu_jwk_point(g, jwk) : NULL;
        EC_POINT *chk = g ? EC_POINT_new(g) : NULL;
        BIGNUM *dd = tu_jwk_d(jwk);
        bool ok = pub && chk && dd && EC_POINT_mul(g, chk, dd, NULL, NULL, NULL) &&
                  EC_POINT_cmp(g, chk, pub, NULL) == 0;
        BN_clear_free(dd);
        EC_POINT_free(chk);
        EC_POINT_free(pub);
        EC_GROUP_free(g);
        return ok;
}

/* "<S256 thumbprint>.jwk", computed here from the file's contents. */
static char *thp_name(const json_t *jwk) {
        _cleanup_free_ char *t = tu_thumbprint(jwk, "S256");
        char *name = NULL;
        if (t && asprintf(&name, "%s.jwk", t) < 0)
                name = NULL;
        return name;
}

static bool no_leftovers(char **names, size_t n) {
        bool ok = true;
        for (size_t i = 0; i < n; i++) {
                size_t len = strlen(names[i]);
                if (strncmp(names[i], ".tether-new", 11) == 0 || (len >= 4 && strcmp(names[i] + len - 4, ".tmp") == 0)) {
                        fprintf(stderr, "  left behind: %s\n", names[i]);
                        ok = false;
                }
        }
        return ok;
}

TEST(keygen_pair_writes_two_keys_named_by_s256_mode_0440) {
        _cleanup_(tu_tmpdir_freep) char *dir = tu_mkdtemp();
        _cleanup_free_ char *sig = NULL, *exc = NULL;
        size_t n = 0;

        REQUIRE(dir);
        /* The files must not depend on the caller's umask (CVE-2023-1672). */
        mode_t old = umask(0);
        int r = tk_keygen_pair(dir, NULL, NULL, &sig, &exc, &err);
        umask(old);
        if (!CHECK_INT(r, 0))
                fprintf(stderr, "  %s\n", err.msg);
        char **names = tu_list(dir, &n);
        if (CHECK_INT(n, 2) && CHECK(sig && exc)) {
                CHECK(has_name(names, n, sig));
                CHECK(has_name(names, n, exc));
                json_auto_t *s = tu_read_json(dir, sig), *e = tu_read_json(dir, exc);
                _cleanup_free_ char *sn = thp_name(s), *en = thp_name(e);
                CHECK_STR(sig, sn);
                CHECK_STR(exc, en);
                CHECK(is_p521_key(s, "ES512"));
                CHECK(is_p521_key(e, "ECMR"));
                static const char *const sv[] = { "sign", "verify" }, *const dk[] = { "deriveKey" };
                CHECK(tu_ops_are(json_object_get(s, "key_ops"), sv, 2));
                CHECK(tu_ops_are(json_object_get(e, "key_ops"), dk, 1));
                CHECK_INT(file_mode(dir, sig), 0440);
                CHECK_INT(file_mode(dir, exc), 0440);
        }
        CHECK(no_leftovers(names, n));

        /* And the library reads back what it wrote as one advertised pair. */
        _cleanup_(tk_keyset_freep) struct tk_keyset *ks = NULL;
        if (CHECK_INT(tk_keyset_load(dir, NULL, NULL, &ks), 0)) {
                CHECK_INT(tk_keyset_count(ks, TK_ROLE_SIGNING, false), 1);
                CHECK_INT(tk_keyset_count(ks, TK_ROLE_EXCHANGE, false), 1);
                CHECK_INT(ks->n_keys, 2);
        }
        tu_list_free(names, n);
}

TEST(keygen_pair_uses_given_names) {
        _cleanup_(tu_tmpdir_freep) char *dir = tu_mkdtemp();
        _cleanup_free_ char *sig = NULL, *exc = NULL;
        size_t n = 0;

        REQUIRE(dir);
        CHECK_INT(tk_keygen_pair(dir, "mysig", "myexc.jwk", &sig, &exc, &err), 0);
        CHECK_STR(sig, "mysig.jwk");
        CHECK_STR(exc, "myexc.jwk");
        char **names = tu_list(dir, &n);
        CHECK_INT(n, 2);
        CHECK(has_name(names, n, "mysig.jwk"));
        CHECK(has_name(names, n, "myexc.jwk"));
        tu_list_free(names, n);

        /* Output pointers are optional. */
        CHECK_INT(tk_keygen_pair(dir, NULL, NULL, NULL, NULL, NULL), 0);
        names = tu_list(dir, &n);
        CHECK_INT(n, 4);
        CHECK(no_leftovers(names, n));
        tu_list_free(names, n);
}

TEST(keygen_pair_fails_for_missing_directory) {
        char *sig = NULL, *exc = NULL;

        err.msg[0] = '\0';
        CHECK_INT(tk_keygen_pair("/nonexistent/tether-unit", NULL, NULL, &sig, &exc, &err), -ENOENT);
        CHECK(sig == NULL && exc == NULL);
        CHECK(strstr(err.msg, "/nonexistent/tether-unit") != NULL);
        CHECK(access("/nonexistent", F_OK) < 0);
}

/* Runs fn(dir) where dir is not writable for the caller: as root, in a
 * child that drops to nobody (root writes anywhere). Returns fn's result,
 * or 1 if the test could not be arranged. */
static int run_unprivileged(const char *dir, int (*fn)(const char *dir)) {
        if (chmod(dir, 0555) < 0)
                return 1;
        if (geteuid() != 0) {
                int r = fn(dir);
                (void) chmod(dir, 0700);
                return r;
        }
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0)
                return 1;
        if (pid == 0) {
                if (setgroups(0, NULL) < 0 || setgid(65534) < 0 || setuid(65534) < 0)
                        _exit(100);
                _exit(fn(dir) & 0x7f);
        }
        int status = 0;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return 1;
        (void) chmod(dir, 0700);
        if (!WIFEXITED(status))
                return 1;
        if (WEXITSTATUS(status) == 100)
                fprintf(stderr, "  cannot drop privileges\n");
        return WEXITSTATUS(status);
}

/* Exit codes of the child: 0 = failed as expected with EACCES. */
static int keygen_in(const char *dir) {
        struct tc_err e = {};
        char *sig = NULL, *exc = NULL;
        int r = tk_keygen_pair(dir, NULL, NULL, &sig, &exc, &e);
        if (r == 0)
                return 10;
        if (r != -EACCES || !e.msg[0] || sig || exc)
                return 11;
        return 0;
}

TEST(keygen_pair_fails_in_unwritable_directory) {
        _cleanup_(tu_tmpdir_freep) char *dir = tu_mkdtemp();

        REQUIRE(dir);
        CHECK_INT(run_unprivileged(dir, keygen_in), 0);
        CHECK_INT(count_files(dir), 0);
}

TEST(keygen_pair_removes_first_key_when_second_fails) {
        _cleanup_(tu_tmpdir_freep) char *dir = tu_mkdtemp();
        _cleanup_free_ char *sig = NULL, *exc = NULL;
        size_t n = 0;

        REQUIRE(dir);
        /* An invalid second name: the signing key written first goes again. */
        CHECK_INT(tk_keygen_pair(dir, NULL, "bad/name", &sig, &exc, &err), -EINVAL);
        CHECK(sig == NULL && exc == NULL);
        CHECK_INT(count_files(dir), 0);

        /* Both keys under one name: the second cannot replace the first. */
        CHECK(tk_keygen_pair(dir, "same", "same", &sig, &exc, &err) < 0);
        CHECK_INT(count_files(dir), 0);

        /* An existing file is never replaced, and nothing else appears. */
        REQUIRE(tu_write_str(dir, "taken.jwk", "original") == 0);
        CHECK_INT(tk_keygen_pair(dir, NULL, "taken", &sig, &exc, &err), -EEXIST);
        CHECK_INT(tk_keygen_pair(dir, "taken", NULL, &sig, &exc, &err), -EEXIST);
        CHECK(sig == NULL && exc == NULL);
        char **names = tu_list(dir, &n);
        if (CHECK_INT(n, 1))
                CHECK_STR(names[0], "taken.jwk");
        tu_list_free(names, n);
        char path[4096], buf[64] = "";
        snprintf(path, sizeof(path), "%s/taken.jwk", dir);
        FILE *f = fopen(path, "r");
        if (CHECK(f != NULL)) {
                CHECK(fgets(buf, sizeof(buf), f) != NULL);
                fclose(f);
        }
        CHECK_STR(buf, "original");

        CHECK_INT(tk_keygen_pair(dir, "..", NULL, &sig, &exc, &err), -EINVAL);
        CHECK_INT(tk_keygen_pair(dir, "", NULL, &sig, &exc, &err), -EINVAL);
        CHECK_INT(count_files(dir), 1);
}

TEST(rotate_hides_old_pair_and_advertises_new_one) {
        _cleanup_(tu_tmpdir_freep) char *dir = tu_mkdtemp();
        _cleanup_free_ char *sig = NULL, *exc = NULL;
        char hs[300], he[300];
        size_t n = 0;

        REQUIRE(dir);
        REQUIRE(tk_keygen_pair(dir, NULL, NULL, &sig, &exc, &err) == 0);
        json_auto_t *old_sig = tu_read_json(dir, sig), *old_exc = tu_read_json(dir, exc);
        REQUIRE(tu_write_str(dir, "notes.txt", "not a key") == 0);

        if (!CHECK_INT(tk_rotate(dir, &err), 0))
                fprintf(stderr, "  %s\n", err.msg);
        snprintf(hs, sizeof(hs), ".%s", sig);
        snprintf(he, sizeof(he), ".%s", exc);
        char **names = tu_list(dir, &n);
        CHECK_INT(n, 5);
        CHECK(!has_name(names, n, sig));
        CHECK(!has_name(names, n, exc));
        CHECK(has_name(names, n, hs));
        CHECK(has_name(names, n, he));
        CHECK(has_name(names, n, "notes.txt"));
        CHECK(no_leftovers(names, n));
        json_auto_t *j = tu_read_json(dir, hs);
        CHECK(json_equal(j, old_sig));
        json_decref(j);
        j = tu_read_json(dir, he);
        CHECK(json_equal(j, old_exc));
        /* The two new files: advertised, named by their S256, mode 0440. */
        size_t fresh = 0;
        for (size_t i = 0; i < n; i++) {
                if (names[i][0] == '.' || strcmp(names[i], "notes.txt") == 0)
                        continue;
                fresh++;
                json_auto_t *k = tu_read_json(dir, names[i]);
                _cleanup_free_ char *want = thp_name(k);
                CHECK_STR(names[i], want);
                CHECK_INT(file_mode(dir, names[i]), 0440);
        }
        CHECK_INT(fresh, 2);
        tu_list_free(names, n);

        _cleanup_(tk_keyset_freep) struct tk_keyset *ks = NULL;
        if (CHECK_INT(tk_keyset_load(dir, NULL, NULL, &ks), 0)) {
                CHECK_INT(tk_keyset_count(ks, TK_ROLE_SIGNING, false), 1);
                CHECK_INT(tk_keyset_count(ks, TK_ROLE_EXCHANGE, false), 1);
                CHECK_INT(tk_keyset_count(ks, TK_ROLE_SIGNING, true), 1);
                CHECK_INT(tk_keyset_count(ks, TK_ROLE_EXCHANGE, true), 1);
        }

        /* Again: hidden keys stay as they are (no "..X.jwk"). */
        CHECK_INT(tk_rotate(dir, &err), 0);
        names = tu_list(dir, &n);
        CHECK_INT(n, 7);
        CHECK(has_name(names, n, hs));
        CHECK(has_name(names, n, he));
        size_t hidden = 0, advertised = 0;
        for (size_t i = 0; i < n; i++) {
                CHECK(strncmp(names[i], "..", 2) != 0);
                if (names[i][0] == '.')
                        hidden++;
                else if (strcmp(names[i], "notes.txt") != 0)
                        advertised++;
        }
        CHECK_INT(hidden, 4);
        CHECK_INT(advertised, 2);
        tu_list_free(names, n);
}

TEST(rotate_in_empty_directory_creates_a_pair) {
        _cleanup_(tu_tmpdir_freep) char *dir = tu_mkdtemp();
        size_t n = 0;

        REQUIRE(dir);
        CHECK_INT(tk_rotate(dir, &err), 0);
        char **names = tu_list(dir, &n);
        CHECK_INT(n, 2);
        for (size_t i = 0; i < n; i++)
                CHECK(names[i][0] != '.');
        tu_list_free(names, n);
}

TEST(rotate_fails_for_missing_directory) {
        err.msg[0] = '\0';
        CHECK_INT(tk_rotate("/nonexistent/tether-unit", &err), -ENOENT);
        CHECK(err.msg[0] != '\0');
}

static int rotate_in(const char *dir) {
        struct tc_err e = {};
        int r = tk_rotate(dir, &e);
        if (r == 0)
                return 10;
        if (r != -EACCES || !e.msg[0])
                return 11;
        return 0;
}

TEST(rotate_failure_keeps_old_pair_advertised) {
        _cleanup_(tu_tmpdir_freep) char *dir = tu_mkdtemp();
        _cleanup_free_ char *sig = NULL, *exc = NULL;
        size_t n = 0;

        REQUIRE(dir);
        REQUIRE(tk_keygen_pair(dir, NULL, NULL, &sig, &exc, &err) == 0);
        CHECK_INT(run_unprivileged(dir, rotate_in), 0);
        char **names = tu_list(dir, &n);
        CHECK_INT(n, 2);
        CHECK(has_name(names, n, sig));
        CHECK(has_name(names, n, exc));
        tu_list_free(names, n);
}
