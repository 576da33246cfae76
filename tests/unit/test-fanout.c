/* The fan-out helper on its own, with jobs that sleep, fail or block until
 * cancelled: the quorum stops it early and cancels the rest, which are
 * joined before it returns; a quorum out of reach stops it too; deadline
 * and outer cancellation; the thread budget, nested fan-outs included;
 * collect() in the caller's thread; no jobs; a quorum larger than n. */
#include "check.h"

#include "fanout.h"
#include "util.h"

#include <pthread.h>
#include <stdbool.h>
#include <time.h>
#include <unistd.h>

#define MAX_JOBS 32
/* A job that blocks gives up after this: a bug fails the test, not hangs it. */
#define BLOCK_LIMIT_MS 5000

enum kind {
        RETURN,       /* returns ret after delay_ms */
        BLOCK,        /* until .cancel reaches it, then returns -ECANCELED */
        POLL,         /* until tc_fanout_cancelled(), then returns -ECANCELED */
};

struct job {
        enum kind kind;
        int ret;
        long delay_ms;
        /* Starts only once job after - 1 has finished (and delay_ms more, for
         * the fan-out to record it), or after_start - 1 has started; 0: at once. */
        int after, after_start;
        /* What happened, atomics. */
        int ran, finished, cancels, cancel_seen;
};

struct scenario {
        struct job jobs[MAX_JOBS];
        pthread_t caller;
        int running, peak, threaded, peak_threaded;   /* atomics */
        bool outer;                                    /* atomic */
        size_t collected[MAX_JOBS], n_collected;
        int reject;                                    /* collect() refuses this job, or -1 */
        long collect_ms;                               /* collect() takes this long */
        bool collect_off_caller;                       /* atomic: collect() ran elsewhere */
};

static void sleep_ms(long ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000 };
        nanosleep(&ts, NULL);
}

static void peak_update(int *peak, int now) {
        int p = __atomic_load_n(peak, __ATOMIC_RELAXED);
        while (now > p && !__atomic_compare_exchange_n(peak, &p, now, true, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                ;
}

static int job_run(void *data, size_t i, struct tc_fanout *f) {
        struct scenario *s = data;
        struct job *j = &s->jobs[i];
        bool threaded = !pthread_equal(pthread_self(), s->caller);
        int r = j->ret;

        __atomic_fetch_add(&j->ran, 1, __ATOMIC_SEQ_CST);
        peak_update(&s->peak, __atomic_add_fetch(&s->running, 1, __ATOMIC_SEQ_CST));
        if (threaded)
                peak_update(&s->peak_threaded, __atomic_add_fetch(&s->threaded, 1, __ATOMIC_SEQ_CST));
        while (j->after && !__atomic_load_n(&s->jobs[j->after - 1].finished, __ATOMIC_SEQ_CST))
                sleep_ms(1);
        while (j->after_start && !__atomic_load_n(&s->jobs[j->after_start - 1].ran, __ATOMIC_SEQ_CST))
                sleep_ms(1);
        sleep_ms(j->delay_ms);
        if (j->kind != RETURN) {
                int64_t limit = tc_now_ms() + BLOCK_LIMIT_MS;
                r = -ETIME;
                while (tc_now_ms() < limit) {
                        if (j->kind == BLOCK ? __atomic_load_n(&j->cancel_seen, __ATOMIC_SEQ_CST) : tc_fanout_cancelled(f)) {
                                r = -ECANCELED;
                                break;
                        }
                        sleep_ms(1);
                }
                /* Still working a little after being told: the join must wait. */
                sleep_ms(20);
        }
        if (threaded)
                __atomic_sub_fetch(&s->threaded, 1, __ATOMIC_SEQ_CST);
        __atomic_sub_fetch(&s->running, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&j->finished, 1, __ATOMIC_SEQ_CST);
        return r;
}

static void job_cancel(void *data, size_t i) {
        struct scenario *s = data;
        __atomic_fetch_add(&s->jobs[i].cancels, 1, __ATOMIC_SEQ_CST);
        __atomic_store_n(&s->jobs[i].cancel_seen, 1, __ATOMIC_SEQ_CST);
}

static bool outer_cancelled(void *data) {
        struct scenario *s = data;
        return __atomic_load_n(&s->outer, __ATOMIC_SEQ_CST);
}

static int job_collect(void *data, size_t i, int r) {
        struct scenario *s = data;
        if (!pthread_equal(pthread_self(), s->caller))
                __atomic_store_n(&s->collect_off_caller, true, __ATOMIC_SEQ_CST);
        s->collected[s->n_collected++] = i;
        sleep_ms(s->collect_ms);
        return r >= 0 && (int) i == s->reject ? -EBADMSG : r;
}

static const struct tc_fanout_ops ops = {
        .run = job_run,
        .cancel = job_cancel,
        .cancelled = outer_cancelled,
};

static void scenario_init(struct scenario *s) {
        memset(s, 0, sizeof(*s));
        s->caller = pthread_self();
        s->reject = -1;
}

/* Every job that ran has finished (was joined), and none runs later. */
static void check_joined(struct scenario *s, size_t n) {
        int ran = 0;
        for (size_t i = 0; i < n; i++) {
                struct job *j = &s->jobs[i];
                ran += __atomic_load_n(&j->ran, __ATOMIC_SEQ_CST);
                CHECK(__atomic_load_n(&j->ran, __ATOMIC_SEQ_CST) == __atomic_load_n(&j->finished, __ATOMIC_SEQ_CST));
                CHECK(__atomic_load_n(&j->ran, __ATOMIC_SEQ_CST) <= 1);
                CHECK(__atomic_load_n(&j->cancels, __ATOMIC_SEQ_CST) <= 1);
        }
        CHECK_INT(__atomic_load_n(&s->running, __ATOMIC_SEQ_CST), 0);
        sleep_ms(50);
        int later = 0;
        for (size_t i = 0; i < n; i++)
                later += __atomic_load_n(&s->jobs[i].ran, __ATOMIC_SEQ_CST);
        CHECK_INT(later, ran);
}

TEST(quorum_reached_early_cancels_the_rest_and_joins_them) {
        struct scenario s;
        int results[8];
        scenario_init(&s);
        s.jobs[0] = (struct job) { .kind = RETURN, .ret = 0 };
        s.jobs[1] = (struct job) { .kind = RETURN, .ret = 7, .after_start = 8 };
        for (size_t i = 2; i < 8; i++)
                s.jobs[i] = (struct job) { .kind = BLOCK };

        int64_t t0 = tc_now_ms();
        int r = tc_fanout_run(&ops, &s, &(struct tc_fanout_opts) { .n = 8, .quorum = 2, .results = results });
        CHECK_INT(r, 2);
        CHECK(tc_now_ms() - t0 < BLOCK_LIMIT_MS / 2);
        CHECK_INT(results[0], 0);
        CHECK_INT(results[1], 7);
        for (size_t i = 2; i < 8; i++) {
                /* Started and cancelled, or never started. */
                CHECK_INT(results[i], -ECANCELED);
                CHECK_INT(s.jobs[i].cancels, s.jobs[i].ran);
        }
        CHECK_INT(s.jobs[0].cancels + s.jobs[1].cancels, 0);
        /* No budget: a thread each; 1 waited for the last to start. */
        CHECK_INT(s.jobs[7].ran, 1);
        check_joined(&s, 8);
}

TEST(quorum_out_of_reach_stops_early) {
        struct scenario s;
        int results[5];
        scenario_init(&s);
        /* 3 of 5 needed: the third failure settles it. */
        s.jobs[0] = (struct job) { .kind = RETURN, .ret = -EIO };
        s.jobs[1] = (struct job) { .kind = RETURN, .ret = -ENOENT, .after = 1, .delay_ms = 30 };
        s.jobs[2] = (struct job) { .kind = RETURN, .ret = -EPERM, .after = 2, .delay_ms = 30 };
        s.jobs[3] = (struct job) { .kind = BLOCK };
        s.jobs[4] = (struct job) { .kind = POLL };

        int64_t t0 = tc_now_ms();
        CHECK_INT(tc_fanout_run(&ops, &s, &(struct tc_fanout_opts) { .n = 5, .quorum = 3, .results = results }), -EIO);
        CHECK(tc_now_ms() - t0 < BLOCK_LIMIT_MS / 2);
        CHECK_INT(results[0], -EIO);
        CHECK_INT(results[1], -ENOENT);
        CHECK_INT(results[2], -EPERM);
        CHECK_INT(results[3], -ECANCELED);
        CHECK_INT(results[4], -ECANCELED);
        CHECK_INT(s.jobs[3].cancels, 1);
        check_joined(&s, 5);

        /* 2 of 3 with one failure is still in reach: it waits for the rest. */
        scenario_init(&s);
        s.jobs[0] = (struct job) { .kind = RETURN, .ret = -EIO };
        s.jobs[1] = (struct job) { .kind = RETURN, .ret = 0, .delay_ms = 30 };
        s.jobs[2] = (struct job) { .kind = RETURN, .ret = 0, .delay_ms = 60 };
        CHECK_INT(tc_fanout_run(&ops, &s, &(struct tc_fanout_opts) { .n = 3, .quorum = 2 }), 2);
        check_joined(&s, 3);
}

TEST(deadline_stops_and_cancels_the_running_jobs) {
        struct scenario s;
        int results[4];
        scenario_init(&s);
        /* Some notice through the handle, some only through .cancel. */
        s.jobs[0] = (struct job) { .kind = BLOCK };
        s.jobs[1] = (struct job) { .kind = POLL };
        s.jobs[2] = (struct job) { .kind = BLOCK };
        s.jobs[3] = (struct job) { .kind = RETURN, .ret = -EIO };

        int64_t t0 = tc_now_ms();
        int r = tc_fanout_run(&ops, &s,
                              &(struct tc_fanout_opts) { .n = 4, .quorum = 1, .deadline_ms = t0 + 150, .results = results });
        int64_t took = tc_now_ms() - t0;
        CHECK_INT(r, -ETIMEDOUT);
        CHECK(took >= 150);
        CHECK(took < BLOCK_LIMIT_MS / 2);
        CHECK_INT(results[0], -ECANCELED);
        CHECK_INT(results[1], -ECANCELED);
        CHECK_INT(results[2], -ECANCELED);
        CHECK_INT(results[3], -EIO);
        CHECK_INT(s.jobs[0].cancels, 1);
        CHECK_INT(s.jobs[2].cancels, 1);
        check_joined(&s, 4);

        /* Past already: nothing starts. */
        scenario_init(&s);
        s.jobs[0] = (struct job) { .kind = RETURN, .ret = 0 };
        CHECK_INT(tc_fanout_run(&ops, &s,
                                &(struct tc_fanout_opts) { .n = 1, .quorum = 1, .deadline_ms = tc_now_ms() - 1,
                                                           .results = results }),
                  -ETIMEDOUT);
        CHECK_INT(s.jobs[0].ran, 0);
        CHECK_INT(results[0], -ECANCELED);
}

static void *cancel_later(void *arg) {
        struct scenario *s = arg;
        sleep_ms(100);
        __atomic_store_n(&s->outer, true, __ATOMIC_SEQ_CST);
        return NULL;
}

TEST(outer_cancellation_stops_and_cancels_the_running_jobs) {
        struct scenario s;
        pthread_t t;
        scenario_init(&s);
        for (size_t i = 0; i < 3; i++)
                s.jobs[i] = (struct job) { .kind = BLOCK };
        s.jobs[3] = (struct job) { .kind = POLL };

        int64_t t0 = tc_now_ms();
        REQUIRE(pthread_create(&t, NULL, cancel_later, &s) == 0);
        /* quorum 0 (run all to their end) is cancelled just the same. */
        CHECK_INT(tc_fanout_run(&ops, &s, &(struct tc_fanout_opts) { .n = 4 }), -ECANCELED);
        int64_t took = tc_now_ms() - t0;
        pthread_join(t, NULL);
        CHECK(took >= 100);
        CHECK(took < BLOCK_LIMIT_MS / 2);
        for (size_t i = 0; i < 3; i++)
                CHECK_INT(s.jobs[i].cancels, 1);
        check_joined(&s, 4);

        /* Cancelled already: nothing starts. */
        scenario_init(&s);
        s.outer = true;
        s.jobs[0] = (struct job) { .kind = RETURN, .ret = 0 };
        CHECK_INT(tc_fanout_run(&ops, &s, &(struct tc_fanout_opts) { .n = 1, .quorum = 1 }), -ECANCELED);
        CHECK_INT(s.jobs[0].ran, 0);
}

TEST(threads_stay_within_the_budget_and_the_caller_runs_the_rest) {
        struct tc_fanout_budget budget = { .max = 3 };
        struct scenario s;
        int results[12];
        scenario_init(&s);
        for (size_t i = 0; i < 12; i++)
                s.jobs[i] = (struct job) { .kind = RETURN, .ret = (int) i, .delay_ms = 100 };

        CHECK_INT(tc_fanout_run(&ops, &s, &(struct tc_fanout_opts) { .n = 12, .budget = &budget, .results = results }),
                  12);
        for (size_t i = 0; i < 12; i++)
                CHECK_INT(results[i], i);
        /* At most 3 in threads at once, and the caller one more. */
        CHECK_INT(s.peak_threaded, 3);
        CHECK(s.peak <= 4);
        CHECK_INT(tc_fanout_budget_used(&budget), 0);
        check_joined(&s, 12);
}

/* Nested fan-outs share one budget: the bound holds across levels, and
 * none waits for a thread another holds (no deadlock). */
struct nest {
        struct tc_fanout_budget *budget;
        int running, peak, peak_used, leaves;   /* atomics */
};

static int leaf_run(void *data, size_t i, struct tc_fanout *f) {
        struct nest *n = data;
        (void) i;
        (void) f;
        peak_update(&n->peak, __atomic_add_fetch(&n->running, 1, __ATOMIC_SEQ_CST));
        peak_update(&n->peak_used, (int) tc_fanout_budget_used(n->budget));
        sleep_ms(10);
        __atomic_sub_fetch(&n->running, 1, __ATOMIC_SEQ_CST);
        __atomic_add_fetch(&n->leaves, 1, __ATOMIC_SEQ_CST);
        return 0;
}

static int inner_run(void *data, size_t i, struct tc_fanout *f) {
        struct nest *n = data;
        (void) i;
        (void) f;
        static const struct tc_fanout_ops leaf_ops = { .run = leaf_run };
        return tc_fanout_run(&leaf_ops, n, &(struct tc_fanout_opts) { .n = 6, .quorum = 6, .budget = n->budget });
}

TEST(nested_fan_outs_share_the_budget) {
        struct tc_fanout_budget budget = { .max = 4 };
        struct nest n = { .budget = &budget };
        static const struct tc_fanout_ops inner_ops = { .run = inner_run };

        CHECK_INT(tc_fanout_run(&inner_ops, &n, &(struct tc_fanout_opts) { .n = 6, .quorum = 6, .budget = &budget }), 6);
        CHECK_INT(n.leaves, 36);
        CHECK(n.peak_used <= 4);
        /* The workers, and the caller running a leaf itself. */
        CHECK(n.peak <= 5);
        CHECK(n.peak >= 2);
        CHECK_INT(tc_fanout_budget_used(&budget), 0);
}

TEST(collect_runs_in_the_caller_in_finishing_order_and_gives_the_verdict) {
        struct scenario s;
        int results[4];
        struct tc_fanout_ops collecting = ops;
        collecting.collect = job_collect;
        scenario_init(&s);
        /* 0 finishes first and is refused, 1 is taken, 2 and 3 are cancelled. */
        s.jobs[0] = (struct job) { .kind = RETURN, .ret = 0, .after = 4, .delay_ms = 30 };
        s.jobs[1] = (struct job) { .kind = RETURN, .ret = 5, .after = 1, .delay_ms = 30 };
        s.jobs[2] = (struct job) { .kind = BLOCK };
        s.jobs[3] = (struct job) { .kind = RETURN, .ret = -EIO };
        s.reject = 0;

        CHECK_INT(tc_fanout_run(&collecting, &s, &(struct tc_fanout_opts) { .n = 4, .quorum = 1, .results = results }), 1);
        CHECK(!s.collect_off_caller);
        /* 3 fails at once, 0 ends after it, 1 after 0: in that order. */
        CHECK_INT(s.n_collected, 3);
        CHECK_INT(s.collected[0], 3);
        CHECK_INT(s.collected[1], 0);
        CHECK_INT(s.collected[2], 1);
        CHECK_INT(results[0], -EBADMSG);
        CHECK_INT(results[1], 5);
        CHECK_INT(results[2], -ECANCELED);
        CHECK_INT(results[3], -EIO);
        CHECK_INT(s.jobs[2].cancels, 1);
        check_joined(&s, 4);

        /* Once a verdict reaches the quorum, what finished meanwhile is not
         * offered (a second volume key is not activated). */
        scenario_init(&s);
        s.jobs[0] = (struct job) { .kind = RETURN, .ret = 0 };
        s.jobs[1] = (struct job) { .kind = RETURN, .ret = 0, .delay_ms = 10 };
        s.collect_ms = 100;
        CHECK_INT(tc_fanout_run(&collecting, &s, &(struct tc_fanout_opts) { .n = 2, .quorum = 1, .results = results }), 1);
        CHECK_INT(s.n_collected, 1);
        check_joined(&s, 2);
}

TEST(quorum_zero_runs_every_job_to_its_end) {
        struct scenario s;
        int results[5];
        scenario_init(&s);
        for (size_t i = 0; i < 5; i++)
                s.jobs[i] = (struct job) { .kind = RETURN, .ret = i % 2 ? -EIO : 0, .delay_ms = 10 * (long) i };
        CHECK_INT(tc_fanout_run(&ops, &s, &(struct tc_fanout_opts) { .n = 5, .results = results }), 3);
        for (size_t i = 0; i < 5; i++) {
                CHECK_INT(results[i], i % 2 ? -EIO : 0);
                CHECK_INT(s.jobs[i].ran, 1);
                CHECK_INT(s.jobs[i].cancels, 0);
        }
        check_joined(&s, 5);
}

TEST(no_jobs_and_quorum_beyond_n) {
        struct scenario s;
        int results[2] = { 42, 42 };
        scenario_init(&s);
        CHECK_INT(tc_fanout_run(&ops, &s, &(struct tc_fanout_opts) { .n = 0 }), 0);
        CHECK_INT(tc_fanout_run(&ops, &s, &(struct tc_fanout_opts) { .n = 0, .quorum = 1 }), -EINVAL);
        s.jobs[0] = s.jobs[1] = (struct job) { .kind = RETURN, .ret = 0 };
        CHECK_INT(tc_fanout_run(&ops, &s, &(struct tc_fanout_opts) { .n = 2, .quorum = 3, .results = results }), -EINVAL);
        CHECK_INT(s.jobs[0].ran + s.jobs[1].ran, 0);
        CHECK_INT(results[0], 42);
}

/* Once the quorum is in, jobs not started yet never start. */
TEST(jobs_not_started_when_the_quorum_is_in) {
        struct tc_fanout_budget budget = { .max = 1 };
        struct scenario s;
        int results[10];
        scenario_init(&s);
        /* 0 in the one thread; 1 here, until cancelled; the rest never. */
        s.jobs[0] = (struct job) { .kind = RETURN, .ret = 0, .delay_ms = 20 };
        s.jobs[1] = (struct job) { .kind = BLOCK };
        for (size_t i = 2; i < 10; i++)
                s.jobs[i] = (struct job) { .kind = RETURN, .ret = 0 };
        CHECK_INT(tc_fanout_run(&ops, &s,
                                &(struct tc_fanout_opts) { .n = 10, .quorum = 1, .budget = &budget, .results = results }),
                  1);
        CHECK_INT(results[0], 0);
        CHECK_INT(results[1], -ECANCELED);
        for (size_t i = 2; i < 10; i++) {
                CHECK_INT(s.jobs[i].ran, 0);
                CHECK_INT(results[i], -ECANCELED);
        }
        check_joined(&s, 10);
}
