/*
 * check_main.h - the main() of every Check test program, unit and
 * end-to-end alike: run the suite, one process per test, and turn the
 * result into the exit status ctest reads.
 */
#ifndef AIO_TESTS_CHECK_MAIN_H
#define AIO_TESTS_CHECK_MAIN_H

#include <check.h>

/* Run every test of s (frees s). Returns 0 when all passed, 1 if not. */
int check_main(Suite *s);

#endif
