/* The harness itself (check.c): meson runs this program three ways
 * (tests/unit/meson.build) to show that a failing check fails the program,
 * that naming a test runs only that one, and that an unknown name is an
 * error rather than a run of nothing. */
#include "check.h"

static int setup_ran;

SETUP {
        setup_ran = 1;
        return 0;
}

TEST(passes) {
        CHECK_INT(setup_ran, 1);
}

TEST(fails) {
        CHECK_INT(1 + 1, 3);
}
