/* Clevis's external pin programs (clevis-encrypt-PIN / clevis-decrypt-PIN,
 * for example an installed tpm2 pin): input on stdin, output on stdout. */
#include "cleanup.h"
#include "pin.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <string.h>
#include <sys/wait.h>
#include <openssl/crypto.h>

extern char **environ;

#define FILTER_OUTPUT_MAX (64 * 1024 * 1024)

/* Runs argv with in on its stdin; collects its stdout. */
static int run_filter(char *const argv[], const uint8_t *in, size_t in_len, uint8_t **out, size_t *out_len,
                      int *status, struct tc_err *err) {
        int to_child[2] = { -1, -1 }, from_child[2] = { -1, -1 };
        posix_spawn_file_actions_t fa;
        size_t written = 0, len = 0, cap = 0;
        uint8_t *buf = NULL;
        pid_t pid;
        int r;

        if (pipe2(to_child, O_CLOEXEC) < 0 || pipe2(from_child, O_CLOEXEC) < 0) {
                r = tc_fail(err, -errno, "cannot create a pipe: %s", strerror(errno));
                goto close_pipes;
        }
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, to_child[0], 0);
        posix_spawn_file_actions_adddup2(&fa, from_child[1], 1);
        r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(to_child[0]);
        close(from_child[1]);
        to_child[0] = from_child[1] = -1;
        if (r != 0) {
                r = r == ENOENT ? -ENOENT : tc_fail(err, -r, "cannot run %s: %s", argv[0], strerror(r));
                goto close_pipes;
        }
        if (in_len == 0) {
                close(to_child[1]);
                to_child[1] = -1;
        } else
                fcntl(to_child[1], F_SETFL, O_NONBLOCK);

        r = 0;
        while (from_child[0] >= 0) {
                struct pollfd pfd[2] = { { .fd = from_child[0], .events = POLLIN }, { .fd = to_child[1], .events = POLLOUT } };
                if (poll(pfd, to_child[1] >= 0 ? 2 : 1, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        r = tc_fail(err, -errno, "%s: %s", argv[0], strerror(errno));
                        break;
                }
                if (to_child[1] >= 0 && pfd[1].revents) {
                        ssize_t n = write(to_child[1], in + written, in_len - written);
                        if (n > 0)
                                written += (size_t) n;
                        if (n < 0 && errno != EAGAIN) /* EPIPE: the program does not want it all */
                                written = in_len;
                        if (written == in_len) {
                                close(to_child[1]);
                                to_child[1] = -1;
                        }
                }
                if (pfd[0].revents) {
                        if (len == cap) {
                                cap = cap ? cap * 2 : 4096;
                                uint8_t *nb = cap > FILTER_OUTPUT_MAX ? NULL : realloc(buf, cap);
                                if (!nb) {
                                        r = tc_fail(err, -EMSGSIZE, "%s: output too large", argv[0]);
                                        break;
                                }
                                buf = nb;
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
        if (r < 0)
                kill(pid, SIGTERM);
        while (waitpid(pid, status, 0) < 0 && errno == EINTR)
                ;
        if (r == 0) {
                *out = buf;
                *out_len = len;
                buf = NULL;
        }
        if (buf) {
                OPENSSL_cleanse(buf, cap);
                free(buf);
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

int tc_external_encrypt(const struct tc_ctx *ctx, const char *pin, const json_t *cfg, const uint8_t *pt,
                        size_t pt_len, char **jwe, struct tc_err *err) {
        _cleanup_free_ char *prog = NULL, *cfg_text = json_dumps(cfg, JSON_COMPACT);
        uint8_t *out = NULL;
        size_t out_len = 0;
        int status = 0;

        if (!cfg_text || asprintf(&prog, "clevis-encrypt-%s", pin) < 0)
                return tc_fail(err, -ENOMEM, "out of memory");
        char *argv[] = { prog, cfg_text, ctx->trust_all ? "-y" : NULL, NULL };
        int r = run_filter(argv, pt, pt_len, &out, &out_len, &status, err);
        if (r < 0)
                return r;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || out_len == 0) {
                free(out);
                return tc_fail(err, -EIO, "%s failed (exit status %d)", prog, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        }
        while (out_len > 0 && (out[out_len - 1] == '\n' || out[out_len - 1] == '\r'))
                out_len--;
        char *s = realloc(out, out_len + 1);
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
        int status = 0;
        (void) ctx;

        if (asprintf(&prog, "clevis-decrypt-%s", pin) < 0)
                return tc_fail(err, -ENOMEM, "out of memory");
        char *argv[] = { prog, NULL };
        int r = run_filter(argv, (const uint8_t *) compact, len, &out, &out_len, &status, err);
        if (r < 0)
                return r;
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
                tc_secret_free(out, out_len);
                return tc_fail(err, -EIO, "%s failed (exit status %d)", prog, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
        }
        *pt = out ? out : calloc(1, 1);
        *pt_len = out_len;
        return *pt ? 0 : tc_fail(err, -ENOMEM, "out of memory");
}
