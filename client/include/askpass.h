/* tether's password agent, on systemd's password agent protocol: questions
 * are ask.* files in /run/systemd/ask-password, answered with a datagram
 * "+PASSWORD" to the question's socket. The agent answers "cryptsetup:"
 * questions for volumes that have tether/clevis bindings, keeps trying
 * (with backoff, and at once when the network changes) while servers are
 * unreachable, and stops answering a volume whose answer was refused. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ctx.h"
#include "err.h"

#define TC_ASK_DIR "/run/systemd/ask-password"

struct tc_question {
        char *socket;
        char *id;                 /* e.g. "cryptsetup:/dev/disk/by-uuid/..." */
        pid_t pid;                /* 0: not given */
        uint64_t not_after_us;    /* CLOCK_MONOTONIC; 0: no limit */
};

/* Parses an ask.* file (untrusted text). */
int tc_question_read(const char *path, struct tc_question *q, struct tc_err *err);
void tc_question_clear(struct tc_question *q);
/* False when the asking process is gone or the question expired. */
bool tc_question_live(const struct tc_question *q);
int tc_question_answer(const struct tc_question *q, const uint8_t *password, size_t len, struct tc_err *err);

enum tc_agent_event {
        TC_AGENT_ANSWERED,    /* info */
        TC_AGENT_RETRYING,    /* warning: servers unreachable, will try again */
        TC_AGENT_REFUSED,     /* warning: our answer was refused, leaving it to the user */
        TC_AGENT_SKIPPED,     /* info: a volume that is not ours */
        TC_AGENT_BAD_QUESTION, /* warning: a question file not read (not a regular root-owned file, too large,
                                * malformed), reported once */
        TC_AGENT_RECOVERED,   /* info: a key recovered ahead of the question (tc_passfifo_run) */
        TC_AGENT_NETWORK,     /* info: the first IPv4 or IPv6 address appeared (tc_passfifo_run) */
};

struct tc_agent_opts {
        const char *dir;              /* NULL: TC_ASK_DIR */
        long backoff_min_ms;          /* first pause after a failure, doubled after */
        long backoff_max_ms;
        long linger_ms;               /* stay this long after an answer for a re-ask */
        void (*report)(void *data, enum tc_agent_event event, const char *msg);
        void *report_data;
};

/* Runs until no question is left (and linger_ms has passed since the last
 * answer) or the context is cancelled. */
int tc_agent_run(const struct tc_ctx *ctx, const struct tc_agent_opts *o, struct tc_err *err);
