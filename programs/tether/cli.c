#include "cli.h"
#include "cleanup.h"
#include "environment.h"
#include "tether.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

int cli_read_all(FILE *in, size_t max, uint8_t **buf, size_t *len) {
        uint8_t *b = NULL;
        size_t cap = 0, n = 0;
        TC_CLEANUP_SECRET(b, cap);
        int r;

        for (;;) {
                /* Full at max: only more input makes it too large. */
                if (n == cap && cap >= max) {
                        char extra;
                        if (fread(&extra, 1, 1, in) == 1)
                                return -EMSGSIZE;
                        break;
                }
                if (n == cap && (r = tc_secret_grow(&b, n, &cap, max)) < 0)
                        return r;
                size_t got = fread(b + n, 1, cap - n, in);
                n += got;
                /* feof() too: a terminal's end (Ctrl-D) is not sticky, and
                 * reading on would wait for a second one. */
                if (got == 0 || feof(in))
                        break;
        }
        if (ferror(in))
                return -EIO;
        *buf = TAKE_PTR(b);
        *len = n;
        return 0;
}

int cli_write_all(int fd, const void *buf, size_t len) {
        const uint8_t *p = buf;
        while (len > 0) {
                ssize_t n = write(fd, p, len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        return -errno;
                p += n;
                len -= (size_t) n;
        }
        return 0;
}

/* Trust on first use, asked on the terminal as Clevis does; userdata, if
 * set, is a warning to show first (why the keys are not already trusted). */
static int ask_trust(void *userdata, const char *url, const char *const *thps, size_t n) {
        _cleanup_fclose_ FILE *tty = fopen("/dev/tty", "r+e");
        char answer[16] = "";
        if (!tty)
                return -ENXIO;
        if (userdata)
                fprintf(tty, "%s\n\n", (const char *) userdata);
        /* The URL may come from a LUKS header (regen). */
        _cleanup_free_ char *shown = tc_escape_dup(url);
        fprintf(tty, "The advertisement of %s contains the following signing keys:\n\n", shown ? shown : "?");
        for (size_t i = 0; i < n; i++)
                fprintf(tty, "%s\n", thps[i]);
        fprintf(tty, "\nDo you wish to trust these keys? [ynYN] ");
        fflush(tty);
        if (!fgets(answer, sizeof(answer), tty))
                return 0;
        return (answer[0] == 'y' || answer[0] == 'Y') && (answer[1] == '\n' || answer[1] == '\0');
}

int cli_init_ctx(struct tc_ctx *ctx, bool trust_all) {
        struct tc_err err = {};
        if (program_ctx_from_environment(ctx, &err) < 0) {
                fprintf(stderr, "tether: %s\n", err.msg);
                return -EINVAL;
        }
        ctx->trust = ask_trust;
        ctx->trust_all = trust_all;
        return 0;
}
