/* A tiny test harness: assertions report file:line and the expression,
 * count failures and let the test go on; main returns non-zero on any.
 *
 *     TEST(rec_rejects_point_off_curve) { CHECK(...); }
 *     int main(void) { RUN(rec_rejects_point_off_curve); return check_summary(); }
 */
#pragma once

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ELEMENTS(a) (sizeof(a) / sizeof((a)[0]))

static int check_failures;
static int check_count;

#define CHECK_FAIL_(...)                                                \
        do {                                                            \
                check_failures++;                                       \
                fprintf(stderr, "%s:%d: FAIL: ", __FILE__, __LINE__);   \
                fprintf(stderr, __VA_ARGS__);                           \
                fputc('\n', stderr);                                    \
        } while (0)

/* Records a failure when cond is false; evaluates to cond. */
#define CHECK(cond)                                                     \
        ({                                                              \
                _Bool check_ok_ = (cond);                               \
                check_count++;                                          \
                if (!check_ok_)                                         \
                        CHECK_FAIL_("%s", #cond);                       \
                check_ok_;                                              \
        })

/* Like CHECK, but leaves the current test function on failure: for
 * preconditions without which the rest of the test makes no sense. */
#define REQUIRE(cond)                                                   \
        do {                                                            \
                if (!CHECK(cond))                                       \
                        return;                                         \
        } while (0)

#define CHECK_INT(a, b)                                                 \
        ({                                                              \
                long long check_a_ = (long long) (a), check_b_ = (long long) (b); \
                check_count++;                                          \
                if (check_a_ != check_b_)                               \
                        CHECK_FAIL_("%s == %s (%lld != %lld)", #a, #b, check_a_, check_b_); \
                check_a_ == check_b_;                                   \
        })

#define CHECK_STR(a, b)                                                 \
        ({                                                              \
                const char *check_a_ = (a), *check_b_ = (b);            \
                _Bool check_ok_ = check_a_ && check_b_ && strcmp(check_a_, check_b_) == 0; \
                check_count++;                                          \
                if (!check_ok_)                                         \
                        CHECK_FAIL_("%s == %s (\"%s\" != \"%s\")", #a, #b, \
                                    check_a_ ? check_a_ : "(null)", check_b_ ? check_b_ : "(null)"); \
                check_ok_;                                              \
        })

#define TEST(name) static void name(void)

#define RUN(name)                                                       \
        do {                                                            \
                int check_before_ = check_failures;                     \
                name();                                                 \
                printf("%s %s\n", check_failures == check_before_ ? "ok  " : "FAIL", #name); \
                fflush(stdout);                                         \
        } while (0)

static inline int check_summary(void) {
        printf("%d checks, %d failed\n", check_count, check_failures);
        return check_failures ? EXIT_FAILURE : EXIT_SUCCESS;
}
