/* tetherd's usage ledger writer (see ledger-writer.h; the format is keys/ledger.h). */
#include "ledger-writer.h"
#include "cleanup.h"
#include "ledger.h"
#include "log.h"
#include "routes.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <libgen.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* 4096 queued records: at a few thousand recoveries a second (what two
 * cores can compute), the writer's 100 ms naps fill a tenth of it. */
#define QUEUE_SIZE 4096
#define BATCH 64
#define NAP_MS 100
#define SYNC_MS 1000
#define SNAPSHOT_MS 60000

struct entry {
        int64_t time_ms;
        uint8_t outcome;
        socklen_t peer_len;
        struct sockaddr_in6 peer;       /* room for either family */
        char key[96];
        char host[256];
};

struct ledger {
        int dfd;
        /* The queue: [head, tail) of entries, under lock. */
        pthread_mutex_t lock;
        pthread_cond_t wake;            /* only ledger_close signals it */
        struct entry *entries;
        uint64_t head, tail;
        bool stop;
        atomic_uint_fast64_t dropped;
        pthread_t thread;
        /* The writer's own, no lock. */
        json_t *agg;
        int seg_fd;
        uint64_t seg_index, seg_offset;
        bool unsynced, unsnapshotted;
        bool drops_unsaved;             /* the aggregate counts drops the snapshot on disk does not */
        uint64_t drops_unlogged;
        int64_t last_sync_ms, last_snapshot_ms, last_drop_log_ms, last_error_log_ms;
        uint64_t failed;                /* records lost to write errors since the last log line */
};

void ledger_observe(void *userdata, const struct request_record *r) {
        struct ledger *l = userdata;
        if (r->outcome == REC_OUTCOME_NONE)
                return;
        pthread_mutex_lock(&l->lock);
        if (l->tail - l->head == QUEUE_SIZE) {
                pthread_mutex_unlock(&l->lock);
                atomic_fetch_add(&l->dropped, 1);
                return;
        }
        struct entry *e = &l->entries[l->tail % QUEUE_SIZE];
        e->time_ms = r->realtime_ms;
        e->outcome = (uint8_t) r->outcome;
        e->peer_len = r->peer && r->peer_len <= sizeof(e->peer) ? r->peer_len : 0;
        if (e->peer_len)
                memcpy(&e->peer, r->peer, e->peer_len);
        snprintf(e->key, sizeof(e->key), "%s", r->key ? r->key : "");
        snprintf(e->host, sizeof(e->host), "%s", r->host ? r->host : "");
        l->tail++;
        pthread_mutex_unlock(&l->lock);
}

/* IPv4 also when it came as ::ffff:a.b.c.d. */
static void address_text(const struct entry *e, char buf[static INET6_ADDRSTRLEN]) {
        buf[0] = '\0';
        if (e->peer_len >= sizeof(struct sockaddr_in) && e->peer.sin6_family == AF_INET)
                inet_ntop(AF_INET, &((const struct sockaddr_in *) &e->peer)->sin_addr, buf, INET6_ADDRSTRLEN);
        else if (e->peer_len >= sizeof(struct sockaddr_in6) && e->peer.sin6_family == AF_INET6) {
                if (IN6_IS_ADDR_V4MAPPED(&e->peer.sin6_addr))
                        inet_ntop(AF_INET, &e->peer.sin6_addr.s6_addr[12], buf, INET6_ADDRSTRLEN);
                else
                        inet_ntop(AF_INET6, &e->peer.sin6_addr, buf, INET6_ADDRSTRLEN);
        }
}

static int write_all(int fd, const uint8_t *p, size_t len) {
        while (len) {
                ssize_t k = write(fd, p, len);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return -errno;
                p += k;
                len -= (size_t) k;
        }
        return 0;
}

static int open_segment(struct ledger *l, uint64_t index, bool create) {
        char name[32];
        tk_ledger_segment_name(index, name);
        int fd = openat(l->dfd, name, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | (create ? O_CREAT | O_EXCL : 0),
                        0600);
        if (fd < 0)
                return -errno;
        /* Writable by its owner despite tetherd's umask (0337), so that the
         * next start may append; a new name must survive a crash along with
         * what is written to it. */
        if (create) {
                (void) fchmod(fd, 0600);
                (void) fsync(l->dfd);
        }
        if (l->seg_fd >= 0)
                close(l->seg_fd);
        l->seg_fd = fd;
        l->seg_index = index;
        return 0;
}

static void sync_segment(struct ledger *l, int64_t now) {
        if (l->unsynced && fsync(l->seg_fd) < 0)
                log_line("ledger: cannot sync segment %" PRIu64 ": %s", l->seg_index, strerror(errno));
        l->unsynced = false;
        l->last_sync_ms = now;
}

/* Segments wholly counted in the snapshot on disk are not needed any more. */
static void delete_old_segments(struct ledger *l) {
        int fd = openat(l->dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0)
                return;
        _cleanup_closedir_ DIR *d = fdopendir(fd);
        if (!d) {
                close(fd);
                return;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                int64_t i = tk_ledger_segment_index(de->d_name);
                if (i >= 0 && (uint64_t) i < l->seg_index)
                        (void) unlinkat(l->dfd, de->d_name, 0);
        }
}

static void snapshot(struct ledger *l, int64_t now) {
        struct tc_err err = {};
        sync_segment(l, now);
        l->last_snapshot_ms = now;
        if (!l->unsnapshotted)
                return;
        if (json_object_set_new(l->agg, "segment", json_integer((json_int_t) l->seg_index)) < 0 ||
            json_object_set_new(l->agg, "offset", json_integer((json_int_t) l->seg_offset)) < 0)
                return;
        if (tk_ledger_snapshot_write(l->dfd, l->agg, &err) < 0) {
                log_line("ledger: %s", err.msg);
                return;
        }
        l->unsnapshotted = l->drops_unsaved = false;
        delete_old_segments(l);
}

static void append(struct ledger *l, const struct entry *batch, size_t n) {
        uint8_t buf[BATCH * (TK_LEDGER_HEADER + TK_LEDGER_PAYLOAD_MAX)];
        size_t used = 0;
        uint8_t scratch[TK_LEDGER_HEADER + 1 + 8 + 4 * 256];

        for (size_t i = 0; i < n; i++) {
                char addr[INET6_ADDRSTRLEN];
                address_text(&batch[i], addr);
                ssize_t k = tk_ledger_encode(rec_outcome_name(batch[i].outcome), batch[i].key, batch[i].host, addr,
                                             batch[i].time_ms, scratch, sizeof(scratch));
                if (k < 0 || used + (size_t) k > sizeof(buf))
                        continue;
                memcpy(buf + used, scratch, (size_t) k);
                struct tk_ledger_record r;
                if (tk_ledger_decode(buf + used, (size_t) k, &r) > 0)
                        (void) tk_ledger_agg_add(l->agg, &r);
                used += (size_t) k;
        }
        int r = write_all(l->seg_fd, buf, used);
        if (r < 0) {
                /* What was written of the batch may end in half a record: cut
                 * it back, so that what follows is readable. */
                (void) ftruncate(l->seg_fd, (off_t) l->seg_offset);
                l->failed += n;
                int64_t now = tc_now_ms();
                if (now - l->last_error_log_ms >= 1000) {
                        log_line("ledger: cannot append to segment %" PRIu64 ": %s; %" PRIu64 " record(s) lost",
                                 l->seg_index, strerror(-r), l->failed);
                        l->failed = 0;
                        l->last_error_log_ms = now;
                }
                return;
        }
        l->seg_offset += used;
        l->unsynced = l->unsnapshotted = true;
        if (l->seg_offset >= TK_LEDGER_SEGMENT_MAX) {
                sync_segment(l, tc_now_ms());
                r = open_segment(l, l->seg_index + 1, true);
                if (r < 0)
                        log_line("ledger: cannot start segment %" PRIu64 ": %s", l->seg_index + 1, strerror(-r));
                else
                        l->seg_offset = 0;
        }
}

/* Dropped records are counted in the aggregate with the time of the last
 * drop: what they named is unknown, so prune refuses a window holding it. */
static void count_drops(struct ledger *l, uint64_t dropped) {
        json_t *d = json_object_get(l->agg, "dropped");
        (void) json_object_set_new(l->agg, "dropped", json_integer(json_integer_value(d) + (json_int_t) dropped));
        (void) json_object_set_new(l->agg, "last_drop_ms", json_integer((json_int_t) tc_realtime_ms()));
        l->unsnapshotted = l->drops_unsaved = true;
        l->drops_unlogged += dropped;
}

static void *writer(void *userdata) {
        struct ledger *l = userdata;
        struct entry batch[BATCH];

        for (;;) {
                pthread_mutex_lock(&l->lock);
                size_t n = (size_t) (l->tail - l->head);
                if (n == 0 && !l->stop) {
                        struct timespec ts;
                        clock_gettime(CLOCK_MONOTONIC, &ts);
                        ts.tv_nsec += NAP_MS * 1000000L;
                        if (ts.tv_nsec >= 1000000000L) {
                                ts.tv_sec++;
                                ts.tv_nsec -= 1000000000L;
                        }
                        (void) pthread_cond_timedwait(&l->wake, &l->lock, &ts);
                        n = (size_t) (l->tail - l->head);
                }
                bool stop = l->stop;
                if (n > BATCH)
                        n = BATCH;
                for (size_t i = 0; i < n; i++)
                        batch[i] = l->entries[(l->head + i) % QUEUE_SIZE];
                l->head += n;
                pthread_mutex_unlock(&l->lock);

                if (n)
                        append(l, batch, n);
                int64_t now = tc_now_ms();
                uint64_t dropped = atomic_exchange(&l->dropped, 0);
                if (dropped)
                        count_drops(l, dropped);
                /* At most once a second; at the end, whatever is left. */
                if (l->drops_unlogged && (now - l->last_drop_log_ms >= 1000 || (stop && n == 0))) {
                        log_line("ledger: the queue was full: %" PRIu64 " record(s) dropped", l->drops_unlogged);
                        l->drops_unlogged = 0;
                        l->last_drop_log_ms = now;
                }
                if (stop && n == 0) {
                        snapshot(l, now);
                        return NULL;
                }
                /* Drops reach the disk within a second, not a minute: prune
                 * must not take a key as unused for want of its records. */
                if (now - l->last_snapshot_ms >= SNAPSHOT_MS || (l->drops_unsaved && now - l->last_sync_ms >= SYNC_MS))
                        snapshot(l, now);
                else if (now - l->last_sync_ms >= SYNC_MS)
                        sync_segment(l, now);
        }
}

/* dir must not be keydir or inside it; dir itself may not exist yet. */
static int check_outside(const char *dir, const char *keydir, struct tc_err *err) {
        char kd[PATH_MAX], ld[PATH_MAX];
        if (!realpath(keydir, kd))
                return tc_fail(err, -errno, "key directory %s: %s", keydir, strerror(errno));
        if (!realpath(dir, ld)) {
                if (errno != ENOENT)
                        return tc_fail(err, -errno, "ledger directory %s: %s", dir, strerror(errno));
                _cleanup_free_ char *copy = strdup(dir), *copy2 = strdup(dir);
                if (!copy || !copy2)
                        return tc_fail(err, -ENOMEM, "out of memory");
                char parent[PATH_MAX];
                if (!realpath(dirname(copy), parent))
                        return tc_fail(err, -errno, "ledger directory %s: its parent: %s", dir, strerror(errno));
                if ((size_t) snprintf(ld, sizeof(ld), "%s/%s", strcmp(parent, "/") ? parent : "", basename(copy2)) >=
                    sizeof(ld))
                        return tc_fail(err, -ENAMETOOLONG, "ledger directory %s: name too long", dir);
        }
        size_t n = strlen(kd);
        if (strncmp(ld, kd, n) == 0 && (ld[n] == '\0' || ld[n] == '/' || strcmp(kd, "/") == 0))
                return tc_fail(err, -EINVAL,
                               "ledger directory %s (%s) is inside the key directory %s: give a directory outside it "
                               "(e.g. /var/lib/tether-ledger); the key directory holds keys only, and is copied "
                               "and migrated as such", dir, ld, kd);
        return 0;
}

static void ledger_free(struct ledger *l) {
        if (l->seg_fd >= 0)
                close(l->seg_fd);
        if (l->dfd >= 0)
                close(l->dfd);
        json_decref(l->agg);
        pthread_mutex_destroy(&l->lock);
        pthread_cond_destroy(&l->wake);
        free(l->entries);
        free(l);
}

static inline void ledger_freep_(struct ledger **p) {
        if (*p)
                ledger_free(*p);
}

/* Opens the segment to append to: the highest one, cut back to its last
 * valid record; or a new one when that is shorter than the snapshot says
 * (removed by hand): appending there would hide records from the next
 * replay. */
static int open_for_append(struct ledger *l, const struct tk_ledger_state *st, struct tc_err *err) {
        uint64_t snap_seg = (uint64_t) json_integer_value(json_object_get(l->agg, "segment"));
        uint64_t snap_off = (uint64_t) json_integer_value(json_object_get(l->agg, "offset"));
        int r;
        if ((st->n_segments == 0 && snap_off > 0) || (st->last_segment == snap_seg && st->last_valid < snap_off))
                r = open_segment(l, (st->n_segments ? st->last_segment : snap_seg) + 1, true);
        else if (st->n_segments == 0)
                r = open_segment(l, snap_seg, true);
        else {
                r = open_segment(l, st->last_segment, false);
                if (r >= 0 && st->ignored_bytes) {
                        char name[32];
                        tk_ledger_segment_name(st->last_segment, name);
                        log_line("ledger: %s ends in %" PRIu64 " byte(s) of a torn or corrupt record (a crash?): "
                                 "ignored and cut off", name, st->ignored_bytes);
                }
                if (r >= 0 && ftruncate(l->seg_fd, (off_t) st->last_valid) < 0)
                        r = -errno;
                if (r >= 0)
                        l->seg_offset = st->last_valid;
        }
        if (r < 0)
                return tc_fail(err, r, "cannot open a ledger segment for writing: %s", strerror(-r));
        return 0;
}

int ledger_open(const char *dir, const char *keydir, struct ledger **ret, struct tc_err *err) {
        int r = check_outside(dir, keydir, err);
        if (r < 0)
                return r;
        /* tetherd's umask (0337, for keys) would leave a directory nobody
         * may enter: the mode is set explicitly. */
        if (mkdir(dir, 0700) == 0)
                (void) chmod(dir, 0700);
        else if (errno != EEXIST)
                return tc_fail(err, -errno, "cannot create the ledger directory %s: %s", dir, strerror(errno));

        struct ledger *l = calloc(1, sizeof(*l));
        if (!l)
                return tc_fail(err, -ENOMEM, "out of memory");
        l->dfd = l->seg_fd = -1;
        pthread_mutex_init(&l->lock, NULL);
        pthread_condattr_t ca;
        pthread_condattr_init(&ca);
        pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
        pthread_cond_init(&l->wake, &ca);
        pthread_condattr_destroy(&ca);
        _cleanup_(ledger_freep_) struct ledger *guard = l;

        l->entries = calloc(QUEUE_SIZE, sizeof(*l->entries));
        if (!l->entries)
                return tc_fail(err, -ENOMEM, "out of memory");
        l->dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (l->dfd < 0)
                return tc_fail(err, -errno, "ledger directory %s: %s", dir, strerror(errno));
        /* One writer per ledger: two would interleave their segments. */
        if (flock(l->dfd, LOCK_EX | LOCK_NB) < 0)
                return tc_fail(err, -errno, "ledger directory %s: %s", dir,
                               errno == EWOULDBLOCK ? "in use by another tetherd; give each its own" : strerror(errno));

        struct tk_ledger_state st;
        r = tk_ledger_load(l->dfd, tc_realtime_ms(), &st, err);
        if (r == -ENOENT) {
                /* A new ledger: the snapshot says from when on it knows. */
                st = (struct tk_ledger_state) { .agg = tk_ledger_agg_new(tc_realtime_ms()) };
                if (!st.agg)
                        return tc_fail(err, -ENOMEM, "out of memory");
                r = tk_ledger_snapshot_write(l->dfd, st.agg, err);
        }
        if (r < 0) {
                tk_ledger_state_clear(&st);
                return tc_wrap(err, r, "ledger directory %s", dir);
        }
        l->agg = TAKE_PTR(st.agg);
        r = open_for_append(l, &st, err);
        tk_ledger_state_clear(&st);
        if (r < 0)
                return tc_wrap(err, r, "ledger directory %s", dir);
        l->last_sync_ms = l->last_snapshot_ms = tc_now_ms();
        r = -pthread_create(&l->thread, NULL, writer, l);
        if (r < 0)
                return tc_fail(err, r, "cannot start the ledger thread: %s", strerror(-r));
        /* Named, so that top -H and the bench can tell what it costs. */
        (void) pthread_setname_np(l->thread, "tetherd-ledger");
        *ret = TAKE_PTR(guard);
        return 0;
}

void ledger_close(struct ledger *l) {
        if (!l)
                return;
        pthread_mutex_lock(&l->lock);
        l->stop = true;
        pthread_cond_signal(&l->wake);
        pthread_mutex_unlock(&l->lock);
        pthread_join(l->thread, NULL);
        ledger_free(l);
}
