#define _DEFAULT_SOURCE /* usleep */
/* records.c - see records.h. */
#include "records.h"

#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

json_t *rec_load(const char *path) {
  json_t *all = json_array();
  FILE *f = fopen(path, "r");
  if (f == NULL)
    return all;
  char *line = NULL;
  size_t cap = 0;
  ssize_t n;
  while ((n = getline(&line, &cap, f)) > 0) {
    if (line[n - 1] != '\n')
      break; /* a record being written: the next load sees it whole */
    json_t *rec = json_loadb(line, (size_t)n - 1, 0, NULL);
    if (json_is_object(rec))
      json_array_append(all, rec);
    json_decref(rec);
  }
  free(line);
  fclose(f);
  return all;
}

json_t *rec_where(const json_t *all, const char *key, const char *val) {
  json_t *out = json_array();
  size_t i;
  json_t *rec;
  json_array_foreach(all, i, rec) {
    const char *v = json_string_value(json_object_get(rec, key));
    if (v && strcmp(v, val) == 0)
      json_array_append(out, rec);
  }
  return out;
}

json_t *rec_wait(const char *path, const char *key, const char *val, size_t n,
                 int timeout_ms) {
  long long deadline = h_now_ms() + timeout_ms;
  for (;;) {
    json_t *all = rec_load(path);
    json_t *some = rec_where(all, key, val);
    json_decref(all);
    if (json_array_size(some) >= n)
      return some;
    json_decref(some);
    if (h_now_ms() > deadline)
      return NULL;
    usleep(20000);
  }
}

long long rec_int(const json_t *rec, const char *key) {
  return (long long)json_integer_value(json_object_get(rec, key));
}

long long rec_data_int(const json_t *rec, const char *key) {
  return rec_int(json_object_get(rec, "data"), key);
}

const char *rec_data_str(const json_t *rec, const char *key) {
  const char *s =
      json_string_value(json_object_get(json_object_get(rec, "data"), key));
  return s ? s : "";
}
