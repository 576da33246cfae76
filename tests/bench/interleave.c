/* interleave RUNS INPUT EXPECT CMD... [::: CMD...]...
 *
 * Runs each command RUNS times, in turn (A B C A B C ...), so that every
 * command sees the same moments of a busy machine; each run gets INPUT on
 * stdin and must exit 0 printing exactly EXPECT ("-": any output). Prints
 * per command, in order, one line of shell assignments:
 *   MEDIAN_MS=.. P10_MS=.. P90_MS=.. OK=.. RUNS=..
 * Wall clock from posix_spawn to waitpid: no shell, no Python between, so
 * that a program of a few milliseconds is not measured with the harness's
 * own start-up. Bench helper only: every run is bounded by the caller's
 * timeout(1). */
#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define MAX_CMDS 16

static int cmp(const void *a, const void *b) {
        double x = *(const double *) a, y = *(const double *) b;
        return x < y ? -1 : x > y;
}

static char *slurp(const char *path, size_t *len) {
        FILE *f = fopen(path, "re");
        if (!f)
                return NULL;
        char *buf = NULL;
        size_t cap = 0, n = 0, r;
        do {
                if (n + 4096 > cap) {
                        cap = (n + 4096) * 2;
                        char *nb = realloc(buf, cap);
                        if (!nb) {
                                free(buf);
                                fclose(f);
                                return NULL;
                        }
                        buf = nb;
                }
                r = fread(buf + n, 1, cap - n, f);
                n += r;
        } while (r > 0);
        fclose(f);
        *len = n;
        return buf;
}

int main(int argc, char **argv) {
        if (argc < 5) {
                fprintf(stderr, "usage: interleave RUNS INPUT EXPECT CMD... [::: CMD...]...\n");
                return 2;
        }
        int runs = atoi(argv[1]);
        const char *input = argv[2], *expect_path = argv[3];
        char **cmds[MAX_CMDS];
        int n = 0;
        cmds[n++] = &argv[4];
        for (int i = 4; i < argc; i++)
                if (strcmp(argv[i], ":::") == 0) {
                        argv[i] = NULL;
                        if (n == MAX_CMDS || i + 1 >= argc) {
                                fprintf(stderr, "interleave: too many commands or an empty one\n");
                                return 2;
                        }
                        cmds[n++] = &argv[i + 1];
                }
        size_t expect_len = 0;
        char *expect = strcmp(expect_path, "-") == 0 ? NULL : slurp(expect_path, &expect_len);
        if (runs < 1 || (strcmp(expect_path, "-") != 0 && !expect)) {
                fprintf(stderr, "interleave: bad RUNS or unreadable EXPECT\n");
                return 2;
        }
        char out_path[] = "/tmp/interleave-out-XXXXXX";
        int out_fd = mkstemp(out_path);
        if (out_fd < 0) {
                perror("interleave: mkstemp");
                return 2;
        }
        unlink(out_path);
        double *t[MAX_CMDS];
        int ok[MAX_CMDS] = { 0 };
        for (int c = 0; c < n; c++)
                if (!(t[c] = calloc((size_t) runs, sizeof(double))))
                        return 2;
        for (int r = 0; r < runs; r++)
                for (int c = 0; c < n; c++) {
                        int in_fd = open(input, O_RDONLY | O_CLOEXEC);
                        if (in_fd < 0 || ftruncate(out_fd, 0) < 0 || lseek(out_fd, 0, SEEK_SET) < 0) {
                                perror("interleave: input/output");
                                return 2;
                        }
                        posix_spawn_file_actions_t fa;
                        posix_spawn_file_actions_init(&fa);
                        posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
                        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
                        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
                        struct timespec a, b;
                        pid_t pid;
                        int st = 0;
                        clock_gettime(CLOCK_MONOTONIC, &a);
                        int e = posix_spawn(&pid, cmds[c][0], &fa, NULL, cmds[c], environ);
                        if (e == 0)
                                while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
                                        ;
                        clock_gettime(CLOCK_MONOTONIC, &b);
                        posix_spawn_file_actions_destroy(&fa);
                        close(in_fd);
                        if (e != 0) {
                                fprintf(stderr, "interleave: cannot run %s: %s\n", cmds[c][0], strerror(e));
                                return 2;
                        }
                        t[c][r] = (double) (b.tv_sec - a.tv_sec) * 1e3 + (double) (b.tv_nsec - a.tv_nsec) / 1e6;
                        int good = WIFEXITED(st) && WEXITSTATUS(st) == 0;
                        if (good && expect) {
                                struct stat s;
                                char *got = NULL;
                                good = fstat(out_fd, &s) == 0 && (size_t) s.st_size == expect_len &&
                                       (got = malloc(expect_len + 1)) &&
                                       pread(out_fd, got, expect_len, 0) == (ssize_t) expect_len &&
                                       memcmp(got, expect, expect_len) == 0;
                                free(got);
                        }
                        ok[c] += good;
                }
        for (int c = 0; c < n; c++) {
                qsort(t[c], (size_t) runs, sizeof(double), cmp);
                double med = runs % 2 ? t[c][runs / 2] : (t[c][runs / 2 - 1] + t[c][runs / 2]) / 2;
                printf("MEDIAN_MS=%.2f P10_MS=%.2f P90_MS=%.2f OK=%d RUNS=%d\n", med, t[c][runs / 10],
                       t[c][runs * 9 / 10], ok[c], runs);
        }
        return 0;
}
