#include "fanout.h"
#include "util.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

enum job_state { JOB_IDLE, JOB_RUNNING, JOB_DONE };

/* Why the fan-out stopped (f->stop). */
enum stop { GOING, QUORUM, OUT_OF_REACH, CANCELLED, EXPIRED };

struct job {
        struct tc_fanout *f;
        size_t index;
        pthread_t thread;
        bool threaded;
        enum job_state state;
        int r;
};

struct tc_fanout {
        const struct tc_fanout_ops *ops;
        void *data;
        const struct tc_fanout_opts *o;
        pthread_mutex_t lock;
        pthread_cond_t changed;      /* a job finished, or the fan-out stopped */
        struct job *jobs;
        size_t *finished;            /* job indices, in the order they finished */
        size_t n_finished, n_collected;
        size_t ok, failed;           /* verdicts */
        int first_error;
        int stop;                    /* enum stop; atomic, written with the lock */
};

static bool budget_take(struct tc_fanout_budget *b) {
        if (!b)
                return true;
        unsigned n = __atomic_load_n(&b->used, __ATOMIC_RELAXED);
        do
                if (n >= b->max)
                        return false;
        while (!__atomic_compare_exchange_n(&b->used, &n, n + 1, true, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
        return true;
}

static void budget_release(struct tc_fanout_budget *b) {
        if (b)
                __atomic_fetch_sub(&b->used, 1, __ATOMIC_ACQ_REL);
}

unsigned tc_fanout_budget_used(const struct tc_fanout_budget *b) {
        return __atomic_load_n(&b->used, __ATOMIC_ACQUIRE);
}

static enum stop stopped(const struct tc_fanout *f) {
        return (enum stop) __atomic_load_n(&f->stop, __ATOMIC_ACQUIRE);
}

/* With the lock held: no job starts after this, and those running are asked
 * to stop. */
static void stop_locked(struct tc_fanout *f, enum stop why) {
        if (why == GOING || stopped(f) != GOING)
                return;
        __atomic_store_n(&f->stop, why, __ATOMIC_RELEASE);
        if (f->ops->cancel)
                for (size_t i = 0; i < f->o->n; i++)
                        if (f->jobs[i].state == JOB_RUNNING)
                                f->ops->cancel(f->data, i);
        pthread_cond_broadcast(&f->changed);
}

/* Job i's verdict, with the lock held. */
static void tally_locked(struct tc_fanout *f, size_t i, int r) {
        size_t n = f->o->n, quorum = f->o->quorum;

        f->jobs[i].r = r;
        if (r >= 0)
                f->ok++;
        else if (f->failed++ == 0)
                f->first_error = r;
        if (quorum > 0 && f->ok >= quorum)
                stop_locked(f, QUORUM);
        else if (quorum > 0 && f->failed > n - quorum)
                stop_locked(f, OUT_OF_REACH);
}

/* With the lock held. */
static void finish_locked(struct tc_fanout *f, size_t i, int r) {
        f->jobs[i].state = JOB_DONE;
        f->jobs[i].r = r;
        f->finished[f->n_finished++] = i;
        /* Without collect() the worker decides: the quorum is noticed (and the
         * others cancelled) even while the caller runs a job itself. */
        if (!f->ops->collect)
                tally_locked(f, i, r);
        pthread_cond_broadcast(&f->changed);
}

static void *worker(void *arg) {
        struct job *j = arg;
        struct tc_fanout *f = j->f;
        int r = f->ops->run(f->data, j->index, f);

        /* The thread first, so that the caller's next job may have it. */
        budget_release(f->o->budget);
        pthread_mutex_lock(&f->lock);
        finish_locked(f, j->index, r);
        pthread_mutex_unlock(&f->lock);
        return NULL;
}

static enum stop outside(struct tc_fanout *f) {
        if (f->o->deadline_ms && tc_now_ms() >= f->o->deadline_ms)
                return EXPIRED;
        if (f->ops->cancelled && f->ops->cancelled(f->data))
                return CANCELLED;
        return GOING;
}

bool tc_fanout_cancelled(struct tc_fanout *f) {
        if (stopped(f) != GOING)
                return true;
        enum stop why = outside(f);
        if (why == GOING)
                return false;
        pthread_mutex_lock(&f->lock);
        stop_locked(f, why);
        pthread_mutex_unlock(&f->lock);
        return true;
}

/* With the lock held, dropped around each collect(). */
static void collect_locked(struct tc_fanout *f) {
        while (f->ops->collect && stopped(f) == GOING && f->n_collected < f->n_finished) {
                size_t i = f->finished[f->n_collected++];
                int r = f->jobs[i].r;
                pthread_mutex_unlock(&f->lock);
                r = f->ops->collect(f->data, i, r);
                pthread_mutex_lock(&f->lock);
                tally_locked(f, i, r);
        }
}

/* With the lock held: job i in a thread of the budget, or here. */
static void start_locked(struct tc_fanout *f, size_t i) {
        struct job *j = &f->jobs[i];

        *j = (struct job) { .f = f, .index = i, .state = JOB_RUNNING };
        if (budget_take(f->o->budget)) {
                if (pthread_create(&j->thread, NULL, worker, j) == 0) {
                        j->threaded = true;
                        return;
                }
                budget_release(f->o->budget);
        }
        /* No thread to spare: this one runs here, cancelled with the others
         * once the quorum is in. */
        pthread_mutex_unlock(&f->lock);
        int r = f->ops->run(f->data, i, f);
        pthread_mutex_lock(&f->lock);
        finish_locked(f, i, r);
}

/* With the lock held: until a job finishes, the fan-out stops, the deadline
 * passes or it is time to look at ops->cancelled again. */
static void wait_locked(struct tc_fanout *f) {
        int64_t until = f->o->deadline_ms;
        if (f->ops->cancelled) {
                int64_t poll = tc_now_ms() + TC_FANOUT_POLL_MS;
                if (!until || poll < until)
                        until = poll;
        }
        if (!until) {
                pthread_cond_wait(&f->changed, &f->lock);
                return;
        }
        struct timespec ts = { .tv_sec = until / 1000, .tv_nsec = (long) (until % 1000) * 1000000 };
        pthread_cond_timedwait(&f->changed, &f->lock, &ts);
}

static void run_locked(struct tc_fanout *f) {
        size_t n = f->o->n;

        for (size_t i = 0; i < n; i++) {
                collect_locked(f);
                if (stopped(f) == GOING)
                        stop_locked(f, outside(f));
                if (stopped(f) != GOING)
                        break;  /* the rest stay unstarted */
                start_locked(f, i);
        }
        for (;;) {
                collect_locked(f);
                if (stopped(f) != GOING || f->ok + f->failed == n)
                        break;
                stop_locked(f, outside(f));
                if (stopped(f) != GOING)
                        break;
                wait_locked(f);
        }
}

static int result(const struct tc_fanout *f) {
        size_t quorum = f->o->quorum;
        if (quorum ? f->ok >= quorum : stopped(f) == GOING)
                return (int) f->ok;
        switch (stopped(f)) {
        case EXPIRED:
                return -ETIMEDOUT;
        case CANCELLED:
                return -ECANCELED;
        default:
                return f->first_error;
        }
}

int tc_fanout_run(const struct tc_fanout_ops *ops, void *data, const struct tc_fanout_opts *o) {
        struct tc_fanout f = { .ops = ops, .data = data, .o = o };
        pthread_condattr_t attr;
        int r;

        if (o->quorum > o->n)
                return -EINVAL;
        for (size_t i = 0; o->results && i < o->n; i++)
                o->results[i] = -ECANCELED;
        if (o->n == 0)
                return 0;
        f.jobs = calloc(o->n, sizeof(*f.jobs));
        f.finished = calloc(o->n, sizeof(*f.finished));
        if (!f.jobs || !f.finished) {
                free(f.jobs);
                free(f.finished);
                return -ENOMEM;
        }
        /* Deadlines are tc_now_ms() times: CLOCK_MONOTONIC. */
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&f.changed, &attr);
        pthread_condattr_destroy(&attr);
        pthread_mutex_init(&f.lock, NULL);

        pthread_mutex_lock(&f.lock);
        run_locked(&f);
        pthread_mutex_unlock(&f.lock);
        /* Every thread, cancelled or not: none may outlive data. */
        for (size_t i = 0; i < o->n; i++)
                if (f.jobs[i].threaded)
                        pthread_join(f.jobs[i].thread, NULL);

        for (size_t i = 0; o->results && i < o->n; i++)
                if (f.jobs[i].state != JOB_IDLE)
                        o->results[i] = f.jobs[i].r;
        r = result(&f);
        pthread_mutex_destroy(&f.lock);
        pthread_cond_destroy(&f.changed);
        free(f.jobs);
        free(f.finished);
        return r;
}
