/* Fan-out with a quorum: runs n jobs at once and stops as soon as `quorum`
 * of them succeeded, or so many failed that they never will, or the caller's
 * operation is cancelled or past its deadline. The jobs still running are
 * then asked to stop, and every thread started is joined before
 * tc_fanout_run() returns: no thread outlives the data it was given.
 *
 * Used by the sss pin (t of n shares), the LUKS race (the first binding
 * whose key opens the volume) and the password agent (every volume asked
 * about, at once). Knows nothing of the client's tc_ctx: cancellation comes
 * in through the hooks below. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Worker threads shared by fan-outs, nested ones included: at most max run
 * at once, all those fan-outs together. */
struct tc_fanout_budget {
        unsigned max;
        unsigned used;   /* atomic: tc_fanout_budget_used() */
};

/* The fan-out a job runs in. */
struct tc_fanout;

struct tc_fanout_ops {
        /* Job i: >= 0 when it succeeded, -errno when it failed. Runs in a
         * worker thread, or in the caller's when there is none to spare.
         * A job that may block watches tc_fanout_cancelled(f), or whatever
         * .cancel triggers. Results that need freeing (keys, shares) stay in
         * the caller's data, one slot per job, and the caller frees them. */
        int (*run)(void *data, size_t i, struct tc_fanout *f);
        /* Optional. Called in the caller's thread for each finished job, in
         * the order they finish, while the others go on; r is what run()
         * returned. Returns the verdict: >= 0 counts job i as a success,
         * < 0 as a failure. For what is not thread-safe (libcryptsetup), or
         * must happen as soon as a job is done (answering a question). Not
         * called once the fan-out has stopped. Without it, r is the verdict. */
        int (*collect)(void *data, size_t i, int r);
        /* Optional. Asks job i, still running, to stop (the quorum is in, or
         * out of reach, or the whole was cancelled). Called at most once a
         * job, from any thread, with the fan-out's lock held: it must be
         * quick and must not call back into the fan-out. */
        void (*cancel)(void *data, size_t i);
        /* Optional. Whether the caller's operation was cancelled from
         * outside; polled from any thread (every TC_FANOUT_POLL_MS while
         * the caller waits), at times with the fan-out's lock held: it must
         * not call back into the fan-out either. */
        bool (*cancelled)(void *data);
};

struct tc_fanout_opts {
        size_t n;                          /* jobs */
        size_t quorum;                     /* successes needed, 1 to n; 0: run
                                            * every job to its end */
        struct tc_fanout_budget *budget;   /* NULL: a thread for every job */
        int64_t deadline_ms;               /* 0, or a tc_now_ms() time */
        int *results;                      /* NULL, or n: each job's verdict (what
                                            * run() returned for those finished but
                                            * not collected), -ECANCELED for those
                                            * never started */
};

/* How often the waiting caller looks at ops->cancelled. */
#define TC_FANOUT_POLL_MS 20

/* Runs the jobs in index order, each in a worker thread while the budget has
 * one to spare; otherwise the caller runs it itself, then looks again (it
 * never waits for a thread: nested fan-outs sharing a budget cannot deadlock
 * on it). Once stopped, no further job starts.
 *
 * Returns the number of successes if the quorum was reached (with quorum 0:
 * every job ran to its end); otherwise -ETIMEDOUT past the deadline,
 * -ECANCELED when cancelled from outside, or the error of the first job to
 * fail (in the order they finished) when too many failed. -EINVAL when
 * quorum > n (nothing runs), -ENOMEM. No job runs when n is 0 (returns 0). */
int tc_fanout_run(const struct tc_fanout_ops *ops, void *data, const struct tc_fanout_opts *o);

/* True once the fan-out has stopped (quorum in or out of reach), or is past
 * its deadline, or was cancelled from outside: for jobs that poll. */
bool tc_fanout_cancelled(struct tc_fanout *f);

/* Worker threads of this budget running now (for tests). */
unsigned tc_fanout_budget_used(const struct tc_fanout_budget *b);
