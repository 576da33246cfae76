/* Clevis's external pin programs (clevis-encrypt-PIN / clevis-decrypt-PIN,
 * for example an installed tpm2 pin): input on stdin, output on stdout.
 *
 * They run as root at boot, inside whatever process loaded the token plugin,
 * so they are found only in fixed directories (the caller's pin path,
 * TETHER_PIN_PATH in the programs, adds more),
 * get a cleaned environment, and live in their own process group, which is
 * killed when the context is cancelled, when the time limit passes, and
 * whatever the program left behind once it has exited. A process that left
 * the group (setsid) escapes that: its hold on the output is not waited for
 * beyond a short grace after the program exited (tether(1) says pins must
 * not leave daemons). */
#include "cleanup.h"
#include "util.h"
#include "pin.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <openssl/crypto.h>

extern char **environ;

#define FILTER_OUTPUT_MAX (64 * 1024 * 1024)
/* Where Clevis installs its pins (Debian, Fedora: /usr/bin; a source build:
 * /usr/local/bin). */
#define PIN_DIRS "/usr/local/bin:/usr/bin:/bin"
/* The programs' own PATH (tpm2-tools, jose, ...), after TETHER_PIN_PATH. */
#define PIN_CHILD_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* Between SIGTERM and SIGKILL. */
#define PIN_KILL_GRACE_MS 1000
/* How long its output may stay open once the program has exited: what it
 * wrote before is in the pipe already; what still holds the pipe is a
 * process it started, perhaps one that left its group and is never killed. */
#define PIN_EXIT_GRACE_MS 500
/* How often cancellation is looked at: it has no file descriptor to poll. */
#define PIN_SLICE_MS 50

/* What a pin may need from the caller's environment: locale, a temporary
 * directory, and the TPM device selection of tpm2-tools / tpm2-tss. The rest
 * (LD_PRELOAD, LD_LIBRARY_PATH, secrets, ...) stays behind. */
static bool env_passed(const char *kv) {
        static const char *const exact[] = { "LANG=", "LANGUAGE=", "TZ=", "TMPDIR=" };
        static const char *const prefix[] = { "LC_", "TPM2TOOLS_", "TSS2_" };
        for (size_t i = 0; i < ELEMENTSOF(exact); i++)
                if (strncmp(kv, exact[i], strlen(exact[i])) == 0)
                        return true;
        for (size_t i = 0; i < ELEMENTSOF(prefix); i++)
                if (strncmp(kv, prefix[i], strlen(prefix[i])) == 0 && strchr(kv, '='))
                        return true;
        return false;
}

static void strv_free(char **v) {
        for (size_t i = 0; v && v[i]; i++)
                free(v[i]);
        free(v);
}

TC_DEFINE_CLEANUP(char **, strv_free)

/* The pin's environment: PATH (the pin path's directories, then the
 * system's) and what env_passed() lets through. */
static int pin_environment(const char *extra_dirs, char ***ret) {
        size_t n = 0, k = 0;
        for (char **e = environ; e && *e; e++)
                n++;
        char **env = calloc(n + 2, sizeof(char *));
        if (!env)
                return -ENOMEM;
        if (asprintf(&env[k++], "PATH=%s%s%s", extra_dirs ? extra_dirs : "", extra_dirs ? ":" : "", PIN_CHILD_PATH) < 0) {
                free(env);
                return -ENOMEM;
        }
        for (char **e = environ; e && *e; e++)
                if (env_passed(*e) && !(env[k++] = strdup(*e))) {
                        strv_free(env);
                        return -ENOMEM;
                }
        *ret = env;
        return 0;
}

/* Finds PROG in the caller's pin path (ctx->pin_path, TETHER_PIN_PATH), if
 * any, then PIN_DIRS. */
static int find_program(const struct tc_ctx *ctx, const char *prog, char **ret, struct tc_err *err) {
        const char *extra = ctx->pin_path;
        _cleanup_free_ char *dirs = NULL;
        int r;

        if (extra && *extra) {
                r = tc_ctx_check_pin_path(extra, err);
                if (r < 0)
                        return r;
                if (asprintf(&dirs, "%s:%s", extra, PIN_DIRS) < 0)
                        return tc_fail(err, -ENOMEM, "out of memory");
        } else if (!(dirs = strdup(PIN_DIRS)))
                return tc_fail(err, -ENOMEM, "out of memory");

        char *save = NULL;
        _cleanup_free_ char *copy = strdup(dirs);
        if (!copy)
                return tc_fail(err, -ENOMEM, "out of memory");
        for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
                _cleanup_free_ char *path = NULL;
                struct stat st;
                if (asprintf(&path, "%s/%s", d, prog) < 0)
                        return tc_fail(err, -ENOMEM, "out of memory");
                if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && access(path, X_OK) == 0) {
                        *ret = TAKE_PTR(path);
                        return 0;
                }
        }
        return tc_fail(err, -ENOENT, "no %s in %s%s", prog, dirs,
                       extra && *extra ? "" : " (TETHER_PIN_PATH adds directories)");
}

/* write() that cannot kill the process with SIGPIPE when the program has
 * closed its stdin: the signal is blocked in this thread for the call and
 * taken back if the write raised it. A SIGPIPE already pending is left alone. */
static ssize_t write_nosigpipe(int fd, const void *buf, size_t len) {
        sigset_t pipe_set, old, pending;
        sigemptyset(&pipe_set);
        sigaddset(&pipe_set, SIGPIPE);
        if (pthread_sigmask(SIG_BLOCK, &pipe_set, &old) != 0)
                return -1;
        sigpending(&pending);
        bool was_pending = sigismember(&pending, SIGPIPE);
        ssize_t n = write(fd, buf, len);
        int saved = errno;
        if (n < 0 && errno == EPIPE && !was_pending)
                while (sigtimedwait(&pipe_set, NULL, &(struct timespec) {}) < 0 && errno == EINTR)
                        ;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        errno = saved;
        return n;
}

/* 1 when pid has exited but is not reaped yet (while it is a zombie its pid,
 * which is also its process group's id, cannot be reused), 0 while it runs,
 * -1 when it is gone already (reaped by someone else: SIGCHLD ignored). */
static int exited(pid_t pid) {
        siginfo_t si = {};
        if (waitid(P_PID, (id_t) pid, &si, WEXITED | WNOHANG | WNOWAIT) < 0)
                return errno == EINTR ? 0 : -1;
        return si.si_pid == pid;
}

/* Waits for pid to exit until the time until (tc_now_ms()) or cancellation. */
static int wait_exited(pid_t pid, int64_t until, const struct tc_ctx *ctx) {
        for (;;) {
                if (exited(pid) != 0)
                        return 0;
                if (ctx && tc_ctx_cancelled(ctx))
                        return -ECANCELED;
                if (tc_now_ms() >= until)
                        return -ETIMEDOUT;
                nanosleep(&(struct timespec) { .tv_nsec = 10 * 1000000L }, NULL);
        }
}

/* Stops the program if it is still running (SIGTERM to its group, SIGKILL
 * after a grace period), kills whatever it left in its group, and reaps it. */
static void finish(pid_t pid, int *status) {
        *status = -1;
        if (exited(pid) == 0) {
                kill(-pid, SIGTERM);
                (void) wait_exited(pid, tc_now_ms() + PIN_KILL_GRACE_MS, NULL);
        }
        /* Not once its pid is free: it could name someone else's group. */
        if (exited(pid) < 0)
                return;
        kill(-pid, SIGKILL);
        while (waitpid(pid, status, 0) < 0 && errno == EINTR)
                ;
}

static int spawn(const char *path, char *const argv[], int in_fd, int out_fd, char *const env[], pid_t *pid) {
        posix_spawn_file_actions_t fa;
        posix_spawnattr_t attr;
        sigset_t none, all;
        int r;

        sigemptyset(&none);
        sigfillset(&all);
        posix_spawn_file_actions_init(&fa);
        posix_spawnattr_init(&attr);
        posix_spawn_file_actions_adddup2(&fa, in_fd, 0);
        posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
        /* Its own process group (so that it can be killed with everything
         * it started), and the signal state of a fresh process whatever the
         * host process ignores or blocks. */
        posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
        posix_spawnattr_setpgroup(&attr, 0);
        posix_spawnattr_setsigmask(&attr, &none);
        posix_spawnattr_setsigdefault(&attr, &all);
        r = posix_spawn(pid, path, &fa, &attr, argv, env);
        posix_spawnattr_destroy(&attr);
        posix_spawn_file_actions_destroy(&fa);
        return r;
}

/* Runs argv with in on its stdin and collects its stdout, within
 * ctx->attempts x ctx->timeout_ms (what one tang request may take) and until
 * ctx is cancelled. The output is wiped when freed: it may be a secret. */
static int run_filter(const struct tc_ctx *ctx, char *const argv[], const uint8_t *in, size_t in_len, uint8_t **out,
                      size_t *out_len, int *status, struct tc_err *err) {
        int to_child[2] = { -1, -1 }, from_child[2] = { -1, -1 };
        _cleanup_free_ char *path = NULL;
        _cleanup_(strv_freep) char **env = NULL;
        size_t written = 0, len = 0, cap = 0;
        long limit_ms = ctx->timeout_ms * (long) (ctx->attempts ? ctx->attempts : 1);
        uint8_t *buf = NULL;
        TC_CLEANUP_SECRET(buf, len);
        pid_t pid;
        int r;

        r = find_program(ctx, argv[0], &path, err);
        if (r < 0)
                return r;
        if (pin_environment(ctx->pin_path, &env) < 0)
                return tc_fail(err, -ENOMEM, "out of memory");
        if (pipe2(to_child, O_CLOEXEC) < 0 || pipe2(from_child, O_CLOEXEC) < 0) {
                r = tc_fail(err, -errno, "cannot create a pipe: %s", strerror(errno));
                goto close_pipes;
        }
        r = spawn(path, argv, to_child[0], from_child[1], env, &pid);
        close(to_child[0]);
        close(from_child[1]);
        to_child[0] = from_child[1] = -1;
        if (r != 0) {
                r = tc_fail(err, -r, "cannot run %s: %s", path, strerror(r));
                goto close_pipes;
        }
        if (in_len == 0) {
                close(to_child[1]);
                to_child[1] = -1;
        } else
                fcntl(to_child[1], F_SETFL, O_NONBLOCK);

        int64_t until = tc_now_ms() + limit_ms, exited_ms = 0;
        bool held_open = false;
        r = 0;
        while (from_child[0] >= 0) {
                struct pollfd pfd[2] = { { .fd = from_child[0], .events = POLLIN }, { .fd = to_child[1], .events = POLLOUT } };
                int64_t left = until - tc_now_ms();
                if (tc_ctx_cancelled(ctx)) {
                        r = tc_fail(err, -ECANCELED, "%s: cancelled", argv[0]);
                        break;
                }
                if (left <= 0) {
                        r = -ETIMEDOUT;
                        break;
                }
                if (poll(pfd, to_child[1] >= 0 ? 2 : 1, left < PIN_SLICE_MS ? (int) left : PIN_SLICE_MS) < 0) {
                        if (errno == EINTR)
                                continue;
                        r = tc_fail(err, -errno, "%s: %s", argv[0], strerror(errno));
                        break;
                }
                if (exited_ms == 0 && exited(pid) != 0)
                        exited_ms = tc_now_ms();
                if (exited_ms > 0 && !pfd[0].revents && tc_now_ms() - exited_ms > PIN_EXIT_GRACE_MS) {
                        held_open = true;
                        break;
                }
                if (to_child[1] >= 0 && pfd[1].revents) {
                        ssize_t n = write_nosigpipe(to_child[1], in + written, in_len - written);
                        if (n > 0)
                                written += (size_t) n;
                        if (n < 0 && errno != EAGAIN && errno != EINTR) /* EPIPE: the program does not want it all */
                                written = in_len;
                        if (written == in_len) {
                                close(to_child[1]);
                                to_child[1] = -1;
                        }
                }
                if (pfd[0].revents) {
                        if (len == cap && (r = tc_secret_grow(&buf, len, &cap, FILTER_OUTPUT_MAX)) < 0) {
                                r = tc_fail(err, r, r == -EMSGSIZE ? "%s: output larger than %d bytes" : "%s: out of memory",
                                            argv[0], FILTER_OUTPUT_MAX);
                                break;
                        }
                        ssize_t n = read(from_child[0], buf + len, cap - len);
                        if (n > 0)
                                len += (size_t) n;
                        else if (n == 0 || errno != EINTR) {
                                close(from_child[0]);
                                from_child[0] = -1;
                        }
                }
        }
        /* Its output is complete; it may still be running. */
        if (r == 0) {
                r = wait_exited(pid, until, ctx);
                if (r == -ECANCELED)
                        tc_fail(err, r, "%s: cancelled", argv[0]);
        }
        if (r == -ETIMEDOUT)
                tc_fail(err, r, "%s did not finish within %.1f s (%u x TETHER_TIMEOUT); stopped", argv[0],
                        (double) limit_ms / 1000, ctx->attempts ? ctx->attempts : 1);
        finish(pid, status);
        /* A successful exit with nothing written, while something else kept
         * the output open: not an empty answer, and not a time-out either. */
        if (r == 0 && held_open && len == 0 && WIFEXITED(*status) && WEXITSTATUS(*status) == 0)
                r = tc_fail(err, -EIO, "%s exited, but its output stayed open (a process it started still holds it)",
                            argv[0]);
        if (r == 0) {
                *out = TAKE_PTR(buf);
                *out_len = len;
        }
close_pipes:
        for (int i = 0; i < 2; i++) {
                if (to_child[i] >= 0)
                        close(to_child[i]);
                if (from_child[i] >= 0)
                        close(from_child[i]);
        }
        return r;
}

static int status_error(const char *prog, int status, struct tc_err *err) {
        if (status == -1)
                return tc_fail(err, -EIO, "%s: its exit status is lost (was it reaped elsewhere?)", prog);
        if (WIFSIGNALED(status))
                return tc_fail(err, -EIO, "%s failed (killed by signal %d)", prog, WTERMSIG(status));
        return tc_fail(err, -EIO, "%s failed (exit status %d)", prog, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
}

int tc_external_encrypt(const struct tc_ctx *ctx, const char *pin, const json_t *cfg, const uint8_t *pt,
                        size_t pt_len, char **jwe, struct tc_err *err) {
        _cleanup_free_ char *prog = NULL, *cfg_text = json_dumps(cfg, JSON_COMPACT);
        uint8_t *out = NULL;
        size_t out_len = 0;
        int status = 0;

        if (!cfg_text || asprintf(&prog, "clevis-encrypt-%s", pin) < 0)
                return tc_fail(err, -ENOMEM, "out of memory");
        char *argv[] = { prog, cfg_text, ctx->trust_all ? "-y" : NULL, NULL };
        int r = run_filter(ctx, argv, pt, pt_len, &out, &out_len, &status, err);
        if (r < 0)
                return r;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || out_len == 0) {
                free(out);
                return status_error(prog, status, err);
        }
        while (out_len > 0 && (out[out_len - 1] == '\n' || out[out_len - 1] == '\r'))
                out_len--;
        char *s = realloc(out, out_len + 1); /* a JWE: no secret */
        if (!s) {
                free(out);
                return tc_fail(err, -ENOMEM, "out of memory");
        }
        s[out_len] = '\0';
        *jwe = s;
        return 0;
}

int tc_external_decrypt(const struct tc_ctx *ctx, const char *pin, const char *compact, size_t len, uint8_t **pt,
                        size_t *pt_len, struct tc_err *err) {
        _cleanup_free_ char *prog = NULL;
        uint8_t *out = NULL;
        size_t out_len = 0;
        TC_CLEANUP_SECRET(out, out_len);
        int status = 0;

        if (asprintf(&prog, "clevis-decrypt-%s", pin) < 0)
                return tc_fail(err, -ENOMEM, "out of memory");
        char *argv[] = { prog, NULL };
        int r = run_filter(ctx, argv, (const uint8_t *) compact, len, &out, &out_len, &status, err);
        if (r < 0)
                return r;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                return status_error(prog, status, err);
        *pt = out ? TAKE_PTR(out) : calloc(1, 1);
        *pt_len = out_len;
        return *pt ? 0 : tc_fail(err, -ENOMEM, "out of memory");
}
