/* The load driver (tether-load): clients that go through the real client
 * library against a live tetherd, in numbers, and check every answer.
 * Shared here: the clock, percentiles, the server's figures from /proc, and
 * one client's bind (adv) and recover (rec). Results go to stdout as
 * KEY=VALUE lines for tests/load/run.py; problems go to stderr. */
#pragma once

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tether.h"

#define LOAD_SECRET_LEN 32
#define LOAD_FAILURE_SAMPLES 5

int64_t load_now_us(void);

/* The p-th percentile (0..100, nearest rank) of v, which it sorts; 0 if n == 0. */
int64_t load_percentile(int64_t *v, size_t n, double p);

/* utime + stime of pid, in seconds; < 0 when /proc cannot tell. */
double load_proc_cpu_seconds(pid_t pid);
/* A "Vm...:" line of /proc/PID/status in KiB; < 0 when missing. */
long load_proc_status_kb(pid_t pid, const char *field);

/* Raises RLIMIT_NOFILE to at least want (up to the hard limit); returns the
 * soft limit now in force. */
long load_raise_nofile(long want);

/* The programs' context (program_ctx_from_environment: TETHER_TIMEOUT,
 * TETHER_PIN_PATH) with one attempt per request, so that a refused or
 * dropped connection counts as a failure instead of being retried away, and
 * trust in whatever advertisement verifies (the keys rotate under us). */
int load_ctx_init(struct tc_ctx *ctx);

/* Failures of one scenario: counted, and the first few kept for the report. */
struct load_failures {
        pthread_mutex_t lock;
        unsigned long count;
        unsigned long http500;
        char samples[LOAD_FAILURE_SAMPLES][600];
        size_t n_samples;
};

void load_failures_init(struct load_failures *f);
void load_fail(struct load_failures *f, const char *what, const char *msg);
void load_failures_print(const struct load_failures *f, const char *scenario);

/* A client's binding: a random secret encrypted to the tang pin. */
struct load_binding {
        char *jwe;
        uint8_t secret[LOAD_SECRET_LEN];
};

/* Encrypts a fresh secret to {"url": url}: fetches /adv and verifies it. */
int load_bind(const struct tc_ctx *ctx, const char *url, struct load_binding *b, struct tc_err *err);
/* Decrypts b (POST /rec/{kid}) and checks that the secret is the one bound:
 * a wrong point from the server cannot pass (the JWE's tag would not verify). */
int load_recover(const struct tc_ctx *ctx, const struct load_binding *b, struct tc_err *err);
int load_binding_copy(struct load_binding *dst, const struct load_binding *src);
void load_binding_clear(struct load_binding *b);

int load_churn_main(int argc, char **argv);
int load_reboot_main(int argc, char **argv);

/* Parses a decimal in [min, max]; false on anything else. */
bool load_parse_long(const char *s, long min, long max, long *ret);

/* The driver talks to loopback servers only. */
bool load_url_is_loopback(const char *url);

/* The end of a scenario's option parsing: options and values all valid (ok),
 * the required ones given (have_required; named in required, e.g. "--url and
 * --keydir") and url on loopback, or -EINVAL, said on stderr. */
int load_args_check(const char *scenario, bool ok, bool have_required, const char *required, const char *url);
