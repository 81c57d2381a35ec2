/*
 * api_config.c - the plugin API's view of the configuration and the
 * modules: aio_config_get(), the typed getters (aio's own parsing rules),
 * the section and key walks, and aio_modules(). Each answers from the
 * configuration this process runs: the worker's (also on a module's own
 * threads), a mapped command's, or the one `aio test` runs.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "aio.h"
#include "app.h"
#include "config.h"
#include "loader.h"
#include "testing.h"
#include "util.h"
#include "worker.h"

/* Borrowed; NULL outside any of the three. */
static const struct app *current_app(void) {
  if (worker_self)
    return worker_self->app;
  return app_process() ? app_process() : testing_app();
}

const char *aio_config_get(const char *section, const char *key) {
  const struct app *a = current_app();
  if (a == NULL || a->cfg == NULL || section == NULL || key == NULL)
    return NULL;
  return config_get(a->cfg, section, key);
}

/* The value to parse, or NULL when the key is unset or empty (the default
 * applies). */
static const char *value_of(const char *section, const char *key) {
  const char *v = aio_config_get(section, key);
  return v && *v ? v : NULL;
}

int aio_config_int(const char *section, const char *key, long long dflt,
                   long long *out) {
  *out = dflt;
  const char *v = value_of(section, key);
  if (v == NULL)
    return 0;
  long n;
  if (util_parse_long(v, LONG_MIN, LONG_MAX, &n)) {
    aio_check_error(section, key, "expected a whole number, not '%s'", v);
    return -EINVAL;
  }
  *out = n;
  return 0;
}

int aio_config_double(const char *section, const char *key, double dflt,
                      double *out) {
  *out = dflt;
  const char *v = value_of(section, key);
  if (v == NULL)
    return 0;
  if (util_parse_double(v, -1e308, 1e308, out)) {
    *out = dflt;
    aio_check_error(section, key, "expected a number, not '%s'", v);
    return -EINVAL;
  }
  return 0;
}

int aio_config_bool(const char *section, const char *key, int dflt, int *out) {
  *out = dflt;
  const char *v = value_of(section, key);
  if (v == NULL)
    return 0;
  if (util_parse_bool(v, out)) {
    *out = dflt;
    aio_check_error(section, key,
                    "expected yes/no, true/false, on/off or 1/0, not '%s'", v);
    return -EINVAL;
  }
  return 0;
}

int aio_config_duration(const char *section, const char *key, double dflt,
                        double *seconds) {
  *seconds = dflt;
  const char *v = value_of(section, key);
  if (v == NULL)
    return 0;
  if (util_parse_duration(v, seconds)) {
    *seconds = dflt;
    aio_check_error(section, key,
                    "expected a duration (seconds, or with a unit ms, s, m, "
                    "h or d), not '%s'",
                    v);
    return -EINVAL;
  }
  return 0;
}

int aio_config_size(const char *section, const char *key, size_t dflt,
                    size_t *bytes) {
  *bytes = dflt;
  const char *v = value_of(section, key);
  if (v == NULL)
    return 0;
  unsigned long long n;
  if (util_parse_size(v, &n) || n > SIZE_MAX) {
    aio_check_error(section, key,
                    "expected a size in bytes (with a unit K, M, G or T), "
                    "not '%s'",
                    v);
    return -EINVAL;
  }
  *bytes = (size_t)n;
  return 0;
}

int aio_config_sections(const char *prefix, aio_config_section_fn *fn,
                        void *arg) {
  const struct app *a = current_app();
  if (a == NULL || a->cfg == NULL || fn == NULL)
    return 0;
  size_t plen = prefix ? strlen(prefix) : 0;
  for (size_t i = 0; i < a->cfg->n; i++) {
    const char *name = a->cfg->sections[i].name;
    if (plen && strncmp(name, prefix, plen) != 0)
      continue;
    int rc = fn(name, arg);
    if (rc)
      return rc;
  }
  return 0;
}

int aio_config_keys(const char *section, aio_config_key_fn *fn, void *arg) {
  const struct app *a = current_app();
  if (a == NULL || a->cfg == NULL || section == NULL || fn == NULL)
    return 0;
  const struct config_section *sec = config_section(a->cfg, section);
  for (size_t i = 0; sec && i < sec->n; i++) {
    int rc = fn(sec->entries[i].key, sec->entries[i].value, arg);
    if (rc)
      return rc;
  }
  return 0;
}

int aio_modules(aio_module_fn *fn, void *arg) {
  const struct loader *l = loader_process();
  if (l == NULL || fn == NULL)
    return 0;
  for (size_t i = 0; i < l->n; i++) {
    const struct loader_module *m = &l->mods[i];
    if (m->def == NULL)
      continue;
    int rc = fn(m->name, m->def->description ? m->def->description : "",
                m->path ? m->path : "", arg);
    if (rc)
      return rc;
  }
  return 0;
}
