/* What the tether command's parts share: reading input, writing output,
 * the terminal trust prompt, the context from the environment. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "ctx.h"
#include "usage.h"

#define CLI_EXIT_USAGE EXIT_USAGE

struct cli_command {
        const char *name;
        const char *summary;
        int (*run)(int argc, char **argv);
};

/* Reads f to the end (at most max bytes); the buffer is freed with tc_secret_free(). */
int cli_read_all(FILE *f, size_t max, uint8_t **buf, size_t *len);
int cli_write_all(int fd, const void *buf, size_t len);
/* The context from the environment (TETHER_TIMEOUT, TETHER_PIN_PATH), asking on the terminal about new keys
 * unless trust_all (-y). */
int cli_init_ctx(struct tc_ctx *ctx, bool trust_all);

int cli_luks(int argc, char **argv);
int cli_boot(int argc, char **argv);
