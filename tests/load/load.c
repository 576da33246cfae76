#include "load.h"
#include "environment.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

int64_t load_now_us(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int cmp_i64(const void *a, const void *b) {
        int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
        return (x > y) - (x < y);
}

int64_t load_percentile(int64_t *v, size_t n, double p) {
        if (n == 0)
                return 0;
        qsort(v, n, sizeof(*v), cmp_i64);
        /* Nearest rank: the smallest value with at least p% at or below it. */
        size_t rank = (size_t) ((p / 100.0) * (double) n + 0.999999);
        if (rank < 1)
                rank = 1;
        if (rank > n)
                rank = n;
        return v[rank - 1];
}

double load_proc_cpu_seconds(pid_t pid) {
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        size_t n = fread(buf, 1, sizeof(buf) - 1, f);
        fclose(f);
        buf[n] = '\0';
        /* The command name may hold spaces and parentheses: fields start
         * after the last ')'. utime and stime are fields 14 and 15. */
        char *p = strrchr(buf, ')');
        if (!p)
                return -1;
        unsigned long long utime, stime;
        if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime, &stime) != 2)
                return -1;
        return (double) (utime + stime) / (double) sysconf(_SC_CLK_TCK);
}

long load_proc_status_kb(pid_t pid, const char *field) {
        char path[64], line[256];
        size_t flen = strlen(field);
        long kb = -1;
        snprintf(path, sizeof(path), "/proc/%d/status", (int) pid);
        FILE *f = fopen(path, "re");
        if (!f)
                return -1;
        while (fgets(line, sizeof(line), f))
                if (strncmp(line, field, flen) == 0 && line[flen] == ':') {
                        kb = strtol(line + flen + 1, NULL, 10);
                        break;
                }
        fclose(f);
        return kb;
}

long load_raise_nofile(long want) {
        struct rlimit rl;
        if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
                return -1;
        if (rl.rlim_cur < (rlim_t) want) {
                rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > (rlim_t) want ? (rlim_t) want : rl.rlim_max;
                if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
                        return -1;
        }
        return rl.rlim_cur == RLIM_INFINITY ? LONG_MAX : (long) rl.rlim_cur;
}

int load_ctx_init(struct tc_ctx *ctx) {
        struct tc_err err = {};
        int r = program_ctx_from_environment(ctx, &err);
        if (r < 0)
                return r;
        ctx->attempts = 1;
        ctx->trust_all = true;
        return 0;
}

void load_failures_init(struct load_failures *f) {
        memset(f, 0, sizeof(*f));
        pthread_mutex_init(&f->lock, NULL);
}

void load_fail(struct load_failures *f, const char *what, const char *msg) {
        pthread_mutex_lock(&f->lock);
        f->count++;
        /* The library words every non-200 answer "answered HTTP <code>". */
        if (strstr(msg, "HTTP 500"))
                f->http500++;
        if (f->n_samples < LOAD_FAILURE_SAMPLES)
                snprintf(f->samples[f->n_samples++], sizeof(f->samples[0]), "%s: %s", what, msg);
        pthread_mutex_unlock(&f->lock);
}

void load_failures_print(const struct load_failures *f, const char *scenario) {
        for (size_t i = 0; i < f->n_samples; i++)
                fprintf(stderr, "tether-load %s: failure: %s\n", scenario, f->samples[i]);
        if (f->count > f->n_samples)
                fprintf(stderr, "tether-load %s: ... and %lu more failure(s)\n", scenario, f->count - f->n_samples);
}

int load_bind(const struct tc_ctx *ctx, const char *url, struct load_binding *b, struct tc_err *err) {
        char config[512];
        memset(b, 0, sizeof(*b));
        if (RAND_bytes(b->secret, sizeof(b->secret)) != 1)
                return tc_fail(err, -EIO, "no randomness for a secret");
        /* The URL comes from our own command line and holds no quotes. */
        if ((size_t) snprintf(config, sizeof(config), "{\"url\":\"%s\"}", url) >= sizeof(config))
                return tc_fail(err, -EINVAL, "URL too long");
        return tc_encrypt(ctx, "tang", config, b->secret, sizeof(b->secret), &b->jwe, err);
}

int load_recover(const struct tc_ctx *ctx, const struct load_binding *b, struct tc_err *err) {
        uint8_t *pt = NULL;
        size_t pt_len = 0;
        int r = tc_decrypt(ctx, b->jwe, strlen(b->jwe), &pt, &pt_len, err);
        if (r < 0)
                return r;
        bool same = pt_len == sizeof(b->secret) && CRYPTO_memcmp(pt, b->secret, pt_len) == 0;
        tc_secret_free(pt, pt_len);
        return same ? 0 : tc_fail(err, -EBADMSG, "decryption succeeded but recovered a different secret");
}

int load_binding_copy(struct load_binding *dst, const struct load_binding *src) {
        memcpy(dst->secret, src->secret, sizeof(dst->secret));
        dst->jwe = strdup(src->jwe);
        return dst->jwe ? 0 : -ENOMEM;
}

void load_binding_clear(struct load_binding *b) {
        free(b->jwe);
        OPENSSL_cleanse(b, sizeof(*b));
}

bool load_parse_long(const char *s, long min, long max, long *ret) {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno || end == s || *end || v < min || v > max)
                return false;
        *ret = v;
        return true;
}

bool load_url_is_loopback(const char *url) {
        static const char *const prefixes[] = { "http://127.0.0.1:", "http://[::1]:", "http://localhost:" };
        for (size_t i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
                if (strncmp(url, prefixes[i], strlen(prefixes[i])) == 0)
                        return true;
        return false;
}

int load_args_check(const char *scenario, bool ok, bool have_required, const char *required, const char *url) {
        if (!ok) {
                fprintf(stderr, "tether-load %s: invalid option or value\n", scenario);
                return -EINVAL;
        }
        if (!have_required) {
                fprintf(stderr, "tether-load %s: %s are required\n", scenario, required);
                return -EINVAL;
        }
        if (!load_url_is_loopback(url)) {
                fprintf(stderr, "tether-load %s: %s is not a loopback URL\n", scenario, url);
                return -EINVAL;
        }
        return 0;
}
