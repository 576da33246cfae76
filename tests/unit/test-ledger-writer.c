/* server/ledger-writer.c: the observer never waits for the disk (a full
 * queue drops and counts), every record queued reaches the ledger by the
 * time it is closed, requests outside /rec are not recorded, and a ledger
 * inside the key directory is refused. */
#include "check.h"
#include "testutil.h"
#include "keyset.h"
#include "ledger.h"
#include "ledger-writer.h"
#include "log.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/stat.h>

static struct request_record rec(enum rec_outcome o, const char *key, const struct sockaddr_in *peer) {
        return (struct request_record) {
                .route = ROUTE_REC, .status = 200, .outcome = o, .key = key,
                .peer = (const struct sockaddr *) peer, .peer_len = sizeof(*peer), .realtime_ms = 1000,
        };
}

static json_t *load(const char *dir) {
        struct tk_ledger_state st;
        struct tc_err err = {};
        int dfd = open(dir, O_RDONLY | O_DIRECTORY);
        if (dfd < 0)
                return NULL;
        int r = tk_ledger_load(dfd, 0, &st, &err);
        close(dfd);
        return r < 0 ? NULL : st.agg;
}

TEST(ledger_writer_drops_rather_than_waits_and_counts_the_rest) {
        _cleanup_(tu_tmpdir_freep) char *tmp = tu_mkdtemp();
        REQUIRE(tmp);
        _cleanup_free_ char *keys = NULL, *ledger = NULL, *logpath = NULL;
        REQUIRE(asprintf(&keys, "%s/keys", tmp) > 0 && asprintf(&ledger, "%s/ledger", tmp) > 0 &&
                asprintf(&logpath, "%s/log", tmp) > 0);
        REQUIRE(mkdir(keys, 0700) == 0);
        int logfd = open(logpath, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        REQUIRE(logfd >= 0);
        log_set_fd(logfd);

        struct ledger *l = NULL;
        struct tc_err err = {};
        REQUIRE(ledger_open(ledger, keys, &l, &err) == 0);
        struct stat st;
        CHECK(stat(ledger, &st) == 0 && (st.st_mode & 07777) == 0700);
        struct sockaddr_in peer = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(0xc0000207) };
        /* Far more than the queue holds, faster than the writer's naps. */
        enum { N = 20000 };
        struct request_record adv = rec(REC_OUTCOME_NONE, NULL, &peer);
        adv.route = ROUTE_ADV;
        for (int i = 0; i < N; i++) {
                struct request_record r = rec(REC_OUTCOME_RECOVERED, "K", &peer);
                ledger_observe(l, &r);
                ledger_observe(l, &adv);
        }
        ledger_close(l);
        log_set_fd(STDERR_FILENO);
        close(logfd);

        json_auto_t *agg = load(ledger);
        REQUIRE(agg);
        json_int_t records = json_integer_value(json_object_get(agg, "records"));
        json_t *k = json_object_get(json_object_get(agg, "keys"), "K");
        CHECK_INT(json_integer_value(json_object_get(k, "recoveries")), records);
        CHECK_STR(json_string_value(json_array_get(json_object_get(k, "addresses"), 0)), "192.0.2.7");
        /* Every record is either in the ledger or counted as dropped. */
        _cleanup_fclose_ FILE *f = fopen(logpath, "r");
        REQUIRE(f);
        char line[512];
        long dropped = 0;
        while (fgets(line, sizeof(line), f)) {
                long d;
                if (sscanf(line, "ledger: the queue was full: %ld record(s) dropped", &d) == 1)
                        dropped += d;
        }
        CHECK(records >= 4096);
        CHECK(dropped > 0);
        CHECK_INT(records + dropped, N);

        /* The drops are in the ledger too: prune refuses a window that
         * holds them (the dropped records may have named any key), and
         * judges one that ends before them. */
        CHECK_INT(json_integer_value(json_object_get(agg, "dropped")), dropped);
        json_int_t last_drop = json_integer_value(json_object_get(agg, "last_drop_ms"));
        CHECK(last_drop > 0);
        json_object_set_new(agg, "started_ms", json_integer(0));
        struct tk_keyset none = {};
        struct tk_prune_item *items = NULL;
        size_t n = 0;
        CHECK_INT(tk_ledger_prune_plan(&none, NULL, agg, last_drop + 1000, 60000, &items, &n, &err), -ERANGE);
        CHECK(strstr(err.msg, "dropped") != NULL);
        CHECK_INT(tk_ledger_prune_plan(&none, NULL, agg, last_drop + 61000, 60000, &items, &n, &err), 0);
        tk_prune_plan_free(items);
}

TEST(ledger_writer_refuses_a_ledger_inside_the_key_directory) {
        _cleanup_(tu_tmpdir_freep) char *tmp = tu_mkdtemp();
        REQUIRE(tmp);
        _cleanup_free_ char *inside = NULL, *deeper = NULL;
        REQUIRE(asprintf(&inside, "%s/ledger", tmp) > 0 && asprintf(&deeper, "%s/./ledger/", tmp) > 0);
        struct ledger *l = NULL;
        struct tc_err err = {};
        CHECK_INT(ledger_open(inside, tmp, &l, &err), -EINVAL);
        CHECK(strstr(err.msg, "inside the key directory") != NULL);
        CHECK_INT(ledger_open(tmp, tmp, &l, &err), -EINVAL);
        CHECK_INT(ledger_open(deeper, tmp, &l, &err), -EINVAL);
        CHECK(access(inside, F_OK) < 0);
}
