/*
 * records.h - what the bus and schedule suites share: read the
 * JSON-lines records that tests/modules/busmod.c appends (one
 * object per line: "pid", "sig"/"fn", data, monotonic ns), waiting for them
 * with deadlines.
 */
#ifndef AIO_TESTS_RECORDS_H
#define AIO_TESTS_RECORDS_H

#include <jansson.h>
#include <stddef.h>

#include "harness.h"

/* Every complete record in path, in file order. Returns new (an empty
 * array when the file does not exist yet). */
json_t *rec_load(const char *path);
/* The records of all whose string member key equals val. Returns new. */
json_t *rec_where(const json_t *all, const char *key, const char *val);
/* Wait until at least n records have key == val. Returns the matching
 * records (new), or NULL after timeout_ms. */
json_t *rec_wait(const char *path, const char *key, const char *val, size_t n,
                 int timeout_ms);
/* Integer member key of rec, and of rec's "data" object. */
long long rec_int(const json_t *rec, const char *key);
long long rec_data_int(const json_t *rec, const char *key);
/* String member of rec's "data" ("" when absent). */
const char *rec_data_str(const json_t *rec, const char *key);

#endif
