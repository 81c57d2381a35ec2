/*
 * records.h - what the bus and schedule suites share: start and stop aio,
 * and read the JSON-lines records that tests/modules/busmod.c appends (one
 * object per line: "pid", "sig"/"fn", data, monotonic ns), waiting for them
 * with deadlines.
 */
#ifndef AIO_TESTS_RECORDS_H
#define AIO_TESTS_RECORDS_H

#include <jansson.h>
#include <stddef.h>

#include "harness.h"

/* Start aio on conf_text and wait until it serves (the log and a failure
 * if it does not). */
void rec_start_aio(struct aio_proc *p, const char *conf_text);
/* TERM, and it must exit 0 (the log if not). */
void rec_stop_aio(struct aio_proc *p);

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
