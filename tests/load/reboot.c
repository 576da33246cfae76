/* Mass reboot: a power cut brings --clients machines back at once, each
 * binding-checking the server (GET /adv, verify) and recovering its key
 * (POST /rec) through the real client library. One thread per machine,
 * all released by one gate; small stacks so that 2,000 fit anywhere.
 *
 * Reports the time from the release to the last client done, each
 * client's time (p50, p99), failures (any is fatal), and the server's CPU
 * seconds (utime + stime from /proc) and peak RSS (VmHWM). */
#include "load.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

struct reboot {
        const char *url;
        long n_clients, stack_kb, server_pid;
        pthread_mutex_t gate_lock;
        pthread_cond_t gate_open;
        pthread_cond_t arrived;        /* a client reached the gate */
        long waiting;                  /* clients at the gate */
        bool released, aborted;
        int64_t *done_us;              /* per client: when it finished, or -1 */
        struct load_failures fail;
};

struct boot_client {
        struct reboot *rb;
        size_t index;
};

/* Returns false when the run was called off before the release. */
static bool wait_at_gate(struct reboot *rb) {
        pthread_mutex_lock(&rb->gate_lock);
        rb->waiting++;
        pthread_cond_signal(&rb->arrived);
        while (!rb->released && !rb->aborted)
                pthread_cond_wait(&rb->gate_open, &rb->gate_lock);
        bool go = !rb->aborted;
        pthread_mutex_unlock(&rb->gate_lock);
        return go;
}

static void *boot_main(void *arg) {
        struct boot_client *bc = arg;
        struct reboot *rb = bc->rb;
        struct load_binding b;
        struct tc_ctx ctx;
        struct tc_err err;

        rb->done_us[bc->index] = -1;
        int r = load_ctx_init(&ctx);
        if (!wait_at_gate(rb))
                return NULL;
        if (r < 0) {
                load_fail(&rb->fail, "start", "TETHER_TIMEOUT is malformed");
                return NULL;
        }
        if (load_bind(&ctx, rb->url, &b, &err) < 0)
                load_fail(&rb->fail, "bind (GET /adv, verify, encrypt)", err.msg);
        else if (load_recover(&ctx, &b, &err) < 0)
                load_fail(&rb->fail, "recover (POST /rec)", err.msg);
        else
                rb->done_us[bc->index] = load_now_us();
        load_binding_clear(&b);
        return NULL;
}

/* Opens the gate once every started client waits at it. */
static int64_t release_all(struct reboot *rb, long started, bool abort) {
        pthread_mutex_lock(&rb->gate_lock);
        while (!abort && rb->waiting < started)
                pthread_cond_wait(&rb->arrived, &rb->gate_lock);
        int64_t now = load_now_us();
        if (abort)
                rb->aborted = true;
        else
                rb->released = true;
        pthread_cond_broadcast(&rb->gate_open);
        pthread_mutex_unlock(&rb->gate_lock);
        return now;
}

static int parse_args(int argc, char **argv, struct reboot *rb) {
        static const struct option opts[] = {
                { "url", required_argument, NULL, 'u' },      { "clients", required_argument, NULL, 'c' },
                { "server-pid", required_argument, NULL, 'p' }, { "stack-kb", required_argument, NULL, 's' },
                {},
        };
        bool ok = true;
        int o;
        rb->n_clients = 2000, rb->stack_kb = 256;
        while (ok && (o = getopt_long(argc, argv, "", opts, NULL)) != -1)
                switch (o) {
                case 'u': rb->url = optarg; break;
                case 'c': ok = load_parse_long(optarg, 1, 20000, &rb->n_clients); break;
                case 'p': ok = load_parse_long(optarg, 1, 1L << 30, &rb->server_pid); break;
                case 's': ok = load_parse_long(optarg, 64, 65536, &rb->stack_kb); break;
                default: ok = false;
                }
        return load_args_check("reboot", ok, rb->url && rb->server_pid && optind == argc, "--url and --server-pid",
                               rb->url);
}

/* CPU seconds this process (the clients) used so far. */
static double own_cpu_seconds(void) {
        struct rusage ru;
        if (getrusage(RUSAGE_SELF, &ru) < 0)
                return -1;
        return (double) (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) + (double) (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void report(struct reboot *rb, int64_t released_us, double cpu_s, double clients_cpu_s) {
        int64_t *times = calloc((size_t) rb->n_clients, sizeof(*times));
        size_t n_ok = 0;
        int64_t last = 0;

        for (long i = 0; times && i < rb->n_clients; i++)
                if (rb->done_us[i] >= 0) {
                        times[n_ok++] = rb->done_us[i] - released_us;
                        if (rb->done_us[i] - released_us > last)
                                last = rb->done_us[i] - released_us;
                }
        printf("CLIENTS=%ld\n", rb->n_clients);
        printf("OK=%zu\n", n_ok);
        printf("FAILURES=%lu\n", rb->fail.count);
        printf("HTTP_500=%lu\n", rb->fail.http500);
        printf("COMPLETION_MS=%.1f\n", (double) last / 1000);
        printf("P50_MS=%.1f\n", (double) load_percentile(times, n_ok, 50) / 1000);
        printf("P99_MS=%.1f\n", (double) load_percentile(times, n_ok, 99) / 1000);
        printf("SERVER_CPU_S=%.2f\n", cpu_s);
        printf("CLIENTS_CPU_S=%.2f\n", clients_cpu_s);
        printf("SERVER_HWM_KB=%ld\n", load_proc_status_kb((pid_t) rb->server_pid, "VmHWM"));
        printf("SERVER_RSS_KB=%ld\n", load_proc_status_kb((pid_t) rb->server_pid, "VmRSS"));
        printf("STACK_KB=%ld\n", rb->stack_kb);
        free(times);
}

int load_reboot_main(int argc, char **argv) {
        struct reboot rb = { .gate_lock = PTHREAD_MUTEX_INITIALIZER, .gate_open = PTHREAD_COND_INITIALIZER,
                             .arrived = PTHREAD_COND_INITIALIZER };
        pthread_t *threads = NULL;
        struct boot_client *bcs = NULL;
        pthread_attr_t attr;
        long started = 0;
        int ret = 2;

        if (parse_args(argc, argv, &rb) < 0)
                return 2;
        load_failures_init(&rb.fail);
        /* curl holds a socket and a wake-up pair per transfer. */
        long limit = load_raise_nofile(rb.n_clients * 4 + 256);
        if (limit < rb.n_clients * 4 + 256)
                fprintf(stderr, "tether-load reboot: note: only %ld file descriptors\n", limit);
        threads = calloc((size_t) rb.n_clients, sizeof(*threads));
        bcs = calloc((size_t) rb.n_clients, sizeof(*bcs));
        rb.done_us = calloc((size_t) rb.n_clients, sizeof(*rb.done_us));
        if (!threads || !bcs || !rb.done_us || pthread_attr_init(&attr) != 0)
                goto out;
        pthread_attr_setstacksize(&attr, (size_t) rb.stack_kb * 1024);

        for (; started < rb.n_clients; started++) {
                bcs[started] = (struct boot_client) { .rb = &rb, .index = (size_t) started };
                int r = pthread_create(&threads[started], &attr, boot_main, &bcs[started]);
                if (r != 0) {
                        fprintf(stderr, "tether-load reboot: cannot start client thread %ld: %s\n", started + 1, strerror(r));
                        break;
                }
        }
        pthread_attr_destroy(&attr);
        bool abort = started < rb.n_clients;

        double cpu_before = load_proc_cpu_seconds((pid_t) rb.server_pid), own_before = own_cpu_seconds();
        int64_t released = release_all(&rb, started, abort);
        for (long i = 0; i < started; i++)
                pthread_join(threads[i], NULL);
        double cpu_after = load_proc_cpu_seconds((pid_t) rb.server_pid), own_after = own_cpu_seconds();
        if (abort)
                goto out;
        if (cpu_before < 0 || cpu_after < 0) {
                fprintf(stderr, "tether-load reboot: cannot read /proc/%ld/stat: is the server running?\n", rb.server_pid);
                goto out;
        }
        report(&rb, released, cpu_after - cpu_before, own_after - own_before);
        load_failures_print(&rb.fail, "reboot");
        ret = rb.fail.count == 0 ? 0 : 1;
out:
        free(threads);
        free(bcs);
        free(rb.done_us);
        return ret;
}
