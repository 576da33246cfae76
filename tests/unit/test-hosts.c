/* keys/hosts.c: host names, states, loading KEYDIR/hosts (reusing unchanged
 * keys), allow tokens, and the served advertisement of a host. */
#include "check.h"
#include "testutil.h"
#include "hosts.h"
#include "routes.h"
#include "served.h"

#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

static struct tc_err err;

static void no_warn(void *userdata, const char *file, const struct tc_err *why) {
        (void) why;
        (*(int *) userdata)++;
        fprintf(stderr, "  (warned: %s)\n", file);
}

static char *keydir_with_hosts(void) {
        char *dir = tu_mkdtemp();
        CHECK(dir != NULL);
        CHECK_INT(tk_keygen_pair(dir, NULL, NULL, NULL, NULL, &err), 0);
        CHECK_INT(tk_host_add(dir, "web01", NULL, &err), 0);
        CHECK_INT(tk_host_add(dir, "db02", NULL, &err), 0);
        return dir;
}

TEST(names) {
        CHECK(tk_host_name_valid("web01"));
        CHECK(tk_host_name_valid("a.b-c_d"));
        CHECK(!tk_host_name_valid(".."));
        CHECK(!tk_host_name_valid("a..b"));
        CHECK(!tk_host_name_valid(".hidden"));
        CHECK(!tk_host_name_valid("a/b"));
        CHECK(!tk_host_name_valid(""));
        /* Lengths: of the bytes given, not up to a NUL. */
        CHECK(tk_host_name_valid_n("web01/adv", 5));
        CHECK(!tk_host_name_valid_n("web01/adv", 6));
        CHECK_INT(tk_host_add("/nonexistent", "../x", NULL, &err), -EINVAL);
}

TEST(states) {
        _cleanup_(tu_tmpdir_freep) char *dir = keydir_with_hosts();
        enum tk_host_state st = TK_HOST_HELD;
        char path[4096];

        CHECK_INT(tk_host_state_read(dir, "web01", &st, &err), 0);
        CHECK_INT(st, TK_HOST_ACTIVE);
        CHECK_INT(tk_host_state_write(dir, "web01", TK_HOST_REVOKED, &err), 0);
        CHECK_INT(tk_host_state_read(dir, "web01", &st, &err), 0);
        CHECK_INT(st, TK_HOST_REVOKED);
        CHECK_INT(tk_host_state_read(dir, "nohost", &st, &err), -ENOENT);
        CHECK_INT(tk_host_state_write(dir, "nohost", TK_HOST_REVOKED, &err), -ENOENT);
        /* A state file nobody can make sense of is no "active". */
        snprintf(path, sizeof(path), "%s/hosts/db02", dir);
        unlink(strcat(path, "/state"));
        snprintf(path, sizeof(path), "%s/hosts/db02", dir);
        CHECK_INT(tu_write_str(path, "state", "revokd\n"), 0);
        CHECK_INT(tk_host_state_read(dir, "db02", &st, &err), -EINVAL);
        /* A missing one is: a host directory copied without it. */
        snprintf(path, sizeof(path), "%s/hosts/db02/state", dir);
        CHECK_INT(unlink(path), 0);
        CHECK_INT(tk_host_state_read(dir, "db02", &st, &err), 0);
        CHECK_INT(st, TK_HOST_ACTIVE);
}

TEST(load_sorted_skipping_bad_entries_and_reusing_keys) {
        _cleanup_(tu_tmpdir_freep) char *dir = keydir_with_hosts();
        _cleanup_(tk_hosts_freep) struct tk_hosts *first = NULL, *again = NULL;
        char path[4096];
        int warned = 0;

        snprintf(path, sizeof(path), "%s/hosts/Bad.Name", dir);
        CHECK_INT(mkdir(path, 0750), 0);
        snprintf(path, sizeof(path), "%s/hosts/zz", dir);
        CHECK_INT(mkdir(path, 0750), 0);
        CHECK_INT(tu_write_str(path, "state", "bogus\n"), 0);
        CHECK_INT(tk_host_state_write(dir, "web01", TK_HOST_HELD, &err), 0);
        CHECK_INT(tk_host_allow(dir, "web01", NULL, &err), 0);
        CHECK_INT(tk_host_allow(dir, "web01", NULL, &err), 0);

        CHECK_INT(tk_hosts_load(dir, NULL, no_warn, &warned, &first), 0);
        CHECK_INT(warned, 2);
        if (!CHECK_INT(first->n, 2))
                return;
        CHECK_STR(first->hosts[0].name, "db02");
        CHECK_STR(first->hosts[1].name, "web01");
        CHECK_INT(first->hosts[1].state, TK_HOST_HELD);
        CHECK_INT(first->hosts[1].n_allow, 2);
        CHECK_INT(first->hosts[1].ks->n_keys, 1);
        CHECK(first->hosts[1].ks->keys[0].ecmr != NULL);
        CHECK(tk_hosts_find(first, "web01x", 5) == &first->hosts[1]);
        CHECK(tk_hosts_find(first, "web0", 4) == NULL);

        /* A key whose file is unchanged is taken over, not read again: the
         * mark made in memory comes through. */
        json_object_set_new(first->hosts[1].ks->keys[0].jwk, "x-reused", json_true());
        CHECK_INT(tk_hosts_load(dir, first, no_warn, &warned, &again), 0);
        if (CHECK_INT(again->n, 2))
                CHECK(json_object_get(again->hosts[1].ks->keys[0].jwk, "x-reused") != NULL);

        /* Spent one at a time, then none left. */
        snprintf(path, sizeof(path), "%s/hosts/web01", dir);
        CHECK_INT(tk_host_allow_consume(path), 0);
        CHECK_INT(tk_host_allow_consume(path), 0);
        CHECK_INT(tk_host_allow_consume(path), -ENOENT);
}

/* Delete revokes the host, then empties its directory: the state file goes
 * last, or a server loading in between would find keys and no state, which
 * is "active". Five hosts of ten files each, so that no readdir order lets
 * a wrong deletion pass by chance. */
TEST(delete_removes_the_state_file_last) {
        _cleanup_(tu_tmpdir_freep) char *dir = keydir_with_hosts();
        char path[4096], name[16];
        _Alignas(struct inotify_event) char buf[16384];

        for (int i = 0; i < 5; i++) {
                snprintf(name, sizeof(name), "h%d", i);
                CHECK_INT(tk_host_add(dir, name, NULL, &err), 0);
                for (int j = 0; j < 4; j++) {
                        CHECK_INT(tk_host_rotate(dir, name, NULL, &err), 0);
                        CHECK_INT(tk_host_allow(dir, name, NULL, &err), 0);
                }
                _cleanup_close_ int in = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
                snprintf(path, sizeof(path), "%s/hosts/%s", dir, name);
                CHECK(in >= 0 && inotify_add_watch(in, path, IN_DELETE) >= 0);
                CHECK_INT(tk_host_delete(dir, name, true, &err), 0);
                ssize_t n = read(in, buf, sizeof(buf));
                CHECK(n > 0);
                int deleted = 0, after_state = 0;
                bool state_seen = false;
                for (char *p = buf; n > 0 && p < buf + n;) {
                        const struct inotify_event *ev = (const struct inotify_event *) p;
                        if ((ev->mask & IN_DELETE) && ev->len > 0) {
                                deleted++;
                                if (state_seen)
                                        after_state++;
                                if (strcmp(ev->name, "state") == 0)
                                        state_seen = true;
                        }
                        p += sizeof(*ev) + ev->len;
                }
                CHECK_INT(deleted, 10);
                CHECK(state_seen);
                CHECK_INT(after_state, 0);
        }
}

static void check_host_adv(struct served *s) {
        const struct served_host *h = served_find_host(s, "web01", 5);
        if (!CHECK(h != NULL))
                return;
        /* Nothing signed before it is asked for. */
        CHECK(h->advs[0].jws == NULL);
        const struct served_adv *adv = served_host_adv_get(s, h, NULL);
        if (!CHECK(adv != NULL))
                return;
        json_auto_t *jws = json_loads(adv->jws, 0, NULL);
        json_auto_t *payload = NULL;
        CHECK_INT(tk_adv_verify(jws, &payload, &err), 0);
        json_t *keys = json_object_get(payload, "keys");
        CHECK_INT(json_array_size(keys), 2);
        const struct tk_key *hk = &h->host->ks->keys[0];
        _cleanup_free_ char *thp = tk_thumbprint(json_array_get(keys, 1), "S256");
        CHECK_STR(thp, hk->thp[TK_HASH_S256]);
        CHECK(served_host_adv_get(s, h, NULL) == adv);
        /* The host's keys are not the set's, and the other way round. */
        CHECK(served_find(s, hk->thp[TK_HASH_S256], strlen(hk->thp[TK_HASH_S256])) == NULL);
        CHECK(served_find_host_key(h, hk->thp[TK_HASH_S1], strlen(hk->thp[TK_HASH_S1])) != NULL);
        const char *shared = s->ks->keys[0].thp[TK_HASH_S256];
        CHECK(served_find_host_key(h, shared, strlen(shared)) == NULL);
}

TEST(served_host_advertisement) {
        _cleanup_(tu_tmpdir_freep) char *dir = keydir_with_hosts();
        struct tk_keyset *ks = NULL;
        struct tk_hosts *hosts = NULL;
        struct served *s = NULL;

        CHECK_INT(tk_keyset_load(dir, NULL, NULL, &ks), 0);
        CHECK_INT(tk_hosts_load(dir, NULL, NULL, NULL, &hosts), 0);
        CHECK_INT(served_build(ks, &s), 0);
        CHECK_INT(served_set_hosts(s, hosts), 0);
        check_host_adv(s);
        served_unref(s);
}
