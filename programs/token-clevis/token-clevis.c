/* libcryptsetup token plugin for "clevis" tokens (made by tether or Clevis):
 * `cryptsetup open --token-only` and systemd-cryptsetup unlock bound volumes
 * with it, no polling agent needed. A shell over the client library: it runs
 * inside someone else's process, so it reports through crypt_log only and
 * never exits.
 *
 * libcryptsetup asks one token at a time, in order. The first request for a
 * device decrypts all of its bindings at once and keeps the first key
 * recovered, so one dead server costs no time when another answers.
 *
 * In the initramfs the plugin makes one short try (TC_BOOT_TRY_MS for the
 * whole process, not per token, whatever the servers or the network do) and
 * fails with -EPERM: libcryptsetup goes on to the next token, and
 * systemd-cryptsetup, on anything but -ENOANO (which would make it ask for a
 * token PIN), asks for the passphrase at once, without trying the tokens
 * again. tether-askpass answers that question as soon as a server answers,
 * so the prompt is up while the automatic unlock goes on. With
 * rd.tether.timeout=SECONDS the plugin waits that long for the servers
 * first, as it used to by default. */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <jose/jose.h>
#include <libcryptsetup.h>

#include "boot.h"
#include "environment.h"
#include "cleanup.h"
#include "version.h"
#include "luks.h"
#include "netwatch.h"
#include "tether.h"

/* The result of the last race: one device per process in practice. */
static struct {
        char *device;
        int token;          /* the winner, or -1 */
        uint8_t *key;       /* until handed to libcryptsetup */
        size_t len;
} recovered = { .token = -1 };
static pthread_mutex_t recovered_lock = PTHREAD_MUTEX_INITIALIZER;
/* Read at the first request: one wait or limit for the whole process. */
static struct tc_boot_policy policy;
static int64_t started, deadline;

static void recovered_clear(void) {
        free(recovered.device);
        tc_secret_free(recovered.key, recovered.len);
        recovered.device = NULL;
        recovered.key = NULL;
        recovered.len = 0;
        recovered.token = -1;
}

__attribute__((destructor)) static void plugin_unload(void) {
        recovered_clear();
}

static int context(struct tc_ctx *ctx) {
        struct tc_err err = {};
        int r = program_ctx_from_environment(ctx, &err);
        if (r < 0)
                return r;
        if (deadline == 0) {
                program_boot_policy(&policy);
                started = tc_now_ms();
                deadline = started + (policy.limit_ms ? policy.limit_ms : policy.wait_ms);
        }
        if (policy.limit_ms) {
                /* The short try: a server that does not answer at once is
                 * the agent's to wait for, behind the prompt. */
                ctx->attempts = 1;
                ctx->deadline_ms = deadline;
                ctx->started_ms = started;
                ctx->deadline_why = "in the initramfs the token plugin tries the servers only briefly "
                                    "(rd.tether.timeout= sets a longer wait before the passphrase prompt)";
        } else {
                ctx->wait_until_ms = deadline;
                ctx->netwatch = &tc_boot_netwatch;
        }
        return 0;
}

static int log_failure(struct crypt_device *cd, int token, int r, const struct tc_err *err) {
        crypt_logf(cd, CRYPT_LOG_ERROR, "clevis token %d: %s\n", token, err->msg);
        /* libcryptsetup goes on to the next token on -EPERM and -ENOENT only. */
        return r == -ENOMEM ? r : -EPERM;
}

/* Races every binding of the device; the winner is kept in recovered. */
static int race(struct crypt_device *cd, const char *device) {
        struct tc_ctx ctx;
        struct tc_err err = {};
        int token = -1;
        uint8_t *key = NULL;
        size_t len = 0;
        int r = context(&ctx);
        if (r < 0)
                return r;
        recovered_clear();
        recovered.device = strdup(device);
        if (!recovered.device)
                return -ENOMEM;
        int64_t start = tc_now_ms();
        r = tc_luks_recover(&ctx, cd, device, &token, &key, &len, &err);
        double took = (double) (tc_now_ms() - start) / 1000;
        if (r < 0 && policy.limit_ms) {
                /* Expected whenever the network comes up after the volume
                 * is asked for: a notice, not an error. */
                crypt_logf(cd, CRYPT_LOG_NORMAL,
                           "%s (short try in the initramfs, %.1f s; the passphrase prompt comes next and "
                           "tether-askpass answers it as soon as a server does)\n",
                           err.msg, took);
                return r;
        }
        if (r < 0) {
                crypt_logf(cd, CRYPT_LOG_ERROR, "%s (gave up after %.1f s)\n", err.msg, took);
                return r;
        }
        crypt_logf(cd, CRYPT_LOG_VERBOSE, "%s: clevis token %d: key recovered in %.1f s\n", device, token, took);
        recovered.token = token;
        recovered.key = key;
        recovered.len = len;
        return 0;
}

/* Whether the race's key opens its token's keyslot: checked (one PBKDF run)
 * only before this token is passed over for a later one, so that a stale
 * binding that answered first cannot hide a good one. */
static bool winner_opens(struct crypt_device *cd) {
        for (int slot = 0; slot < crypt_keyslot_max(CRYPT_LUKS2); slot++)
                if (crypt_token_is_assigned(cd, recovered.token, slot) == 0 &&
                    crypt_activate_by_passphrase(cd, NULL, slot, (const char *) recovered.key, recovered.len, 0) >= 0)
                        return true;
        crypt_logf(cd, CRYPT_LOG_ERROR, "clevis token %d: the recovered key opens none of its keyslots\n",
                   recovered.token);
        tc_secret_free(TAKE_PTR(recovered.key), recovered.len);
        recovered.len = 0;
        return false;
}

/* One token alone: asked after the race's winner (its key did not open the
 * volume) or for a token the race did not favour. */
static int decrypt_token(struct crypt_device *cd, int token, uint8_t **key, size_t *len) {
        struct tc_ctx ctx;
        struct tc_err err = {};
        const char *json = NULL;
        _cleanup_free_ char *jwe = NULL;
        int r = context(&ctx);
        if (r < 0)
                return r;
        r = crypt_token_json_get(cd, token, &json);
        if (r < 0)
                return r;
        r = tc_luks_token_jwe(json, &jwe, &err);
        if (r >= 0)
                r = tc_decrypt(&ctx, jwe, strlen(jwe), key, len, &err);
        return r < 0 ? log_failure(cd, token, r, &err) : 0;
}

int cryptsetup_token_open(struct crypt_device *cd, int token, char **buffer, size_t *buffer_len, void *usrptr) {
        (void) usrptr;
        const char *device = crypt_get_device_name(cd);
        uint8_t *key = NULL;
        size_t len = 0;
        int r = 0;

        if (!device)
                return -EINVAL;
        pthread_mutex_lock(&recovered_lock);
        bool fresh = !recovered.device || strcmp(recovered.device, device) != 0;
        if (fresh)
                r = race(cd, device);
        if (r >= 0 && recovered.key && recovered.token == token) {
                key = TAKE_PTR(recovered.key);
                len = recovered.len;
        } else if (r >= 0 && fresh && recovered.token > token && winner_opens(cd))
                /* libcryptsetup asks the tokens in order: it comes to the
                 * winner next. */
                r = -ENOENT;
        else if (r >= 0 && recovered.token >= 0)
                r = decrypt_token(cd, token, &key, &len);
        else if (r >= 0 || r == -EACCES)
                r = -EPERM;  /* every binding failed, and the race said why */
        pthread_mutex_unlock(&recovered_lock);
        if (r < 0)
                return r;
        *buffer = (char *) key;
        *buffer_len = len;
        return 0;
}

/* Clevis tokens take no PIN; one given is not used. */
int cryptsetup_token_open_pin(struct crypt_device *cd, int token, const char *pin, size_t pin_size, char **buffer,
                              size_t *buffer_len, void *usrptr) {
        (void) pin;
        (void) pin_size;
        return cryptsetup_token_open(cd, token, buffer, buffer_len, usrptr);
}

void cryptsetup_token_buffer_free(void *buffer, size_t buffer_len) {
        tc_secret_free(buffer, buffer_len);
}

/* The shape only: the pin's own checks come when the JWE is decrypted. */
int cryptsetup_token_validate(struct crypt_device *cd, const char *json) {
        struct tc_err err = {};
        _cleanup_free_ char *jwe = NULL;
        if (tc_luks_token_jwe(json, &jwe, &err) < 0) {
                crypt_logf(cd, CRYPT_LOG_ERROR, "%s\n", err.msg);
                return -EINVAL;
        }
        return 0;
}

/* For a person only: clevis reads luksDump's text and expects the token's
 * "N: clevis" line right above its "Keyslot:" line (grep -B1), so nothing
 * is added when the output goes to a pipe, unless TETHER_TOKEN_DUMP=1. */
void cryptsetup_token_dump(struct crypt_device *cd, const char *json) {
        const char *force = getenv("TETHER_TOKEN_DUMP");
        if (!(force && strcmp(force, "1") == 0) && !isatty(STDOUT_FILENO))
                return;
        struct tc_err err = {};
        _cleanup_free_ char *jwe = NULL, *pin = NULL, *text = NULL;
        if (tc_luks_token_jwe(json, &jwe, &err) < 0) {
                crypt_logf(cd, CRYPT_LOG_NORMAL, "\tinvalid: %s\n", err.msg);
                return;
        }
        json_auto_t *config = tc_jwe_config(jwe, false, &pin);
        if (config)
                text = json_dumps(config, JSON_COMPACT | JSON_SORT_KEYS);
        /* Both from the header, written by anyone: escaped for the terminal. */
        _cleanup_free_ char *shown_pin = tc_escape_dup(pin ? pin : "(unknown)");
        _cleanup_free_ char *shown_text = text ? tc_escape_dup(text) : NULL;
        crypt_logf(cd, CRYPT_LOG_NORMAL, "\tclevis pin: %s\n", shown_pin ? shown_pin : "?");
        if (shown_text)
                crypt_logf(cd, CRYPT_LOG_NORMAL, "\tconfig:     %s\n", shown_text);
}

const char *cryptsetup_token_version(void) {
        return TETHER_VERSION;
}
