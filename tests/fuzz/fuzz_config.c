/*
 * fuzz_config.c - the configuration pipeline on hostile input: the INI
 * reader (through a real file, so NUL bytes and overlong lines reach it),
 * a module-defaults layer under it, interpolation, the typed settings, the
 * dump, and config_write_value() with its read-back property.
 *
 * Input: an optional module-defaults layer, then "\n===\n", then the user's
 * file (no separator: all of it is the file). The first byte also picks
 * which value config_write_value() sets afterwards.
 */
#define _GNU_SOURCE
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "config.h"
#include "diag.h"
#include "settings.h"
#include "util.h"

static const struct {
  const char *section, *key, *value;
} writes[] = {
    {"aio", "workers", "4"},
    {"server:web", "port", "8080"},
    {"server/web", "protocol", "aio.hello"},
    {"new", "k", "first\nsecond"},
    {"listen:x", "sig", "mod.fn broadcast"},
};

static FILE *devnull;
static char wpath[64];

static void init(void) {
  devnull = fopen("/dev/null", "w");
  snprintf(wpath, sizeof(wpath), "/tmp/aio-fuzz-config-%d.conf", (int)getpid());
}

/* Write `text` to a fresh file: a memfd (no disk, cleaned up by close). */
static int memfile(const void *text, size_t len, char *path, size_t n) {
  int fd = memfd_create("aio-fuzz", MFD_CLOEXEC);
  if (fd < 0)
    abort();
  if (len && write(fd, text, len) != (ssize_t)len)
    abort();
  snprintf(path, n, "/proc/self/fd/%d", fd);
  return fd;
}

/* The pipeline of common/app.c build(): 0 when the file parsed and
 * interpolated cleanly (the settings may still have refused values). */
static int load(const char *defaults, const char *path, struct config **out) {
  struct diag d;
  struct settings s;
  diag_init(&d);
  struct config *cfg = config_new();
  if (cfg == NULL)
    abort();
  config_parse_string(cfg, settings_builtin_defaults(), "<built-in>", &d);
  if (diag_failed(&d)) /* the built-in layer must always parse */
    abort();
  if (defaults)
    config_parse_string(cfg, defaults, "<module defaults>", &d);
  if (config_parse_file(cfg, path, &d) == 0 && !diag_failed(&d))
    config_interpolate(cfg, &d);
  int clean = !diag_failed(&d);
  if (clean) {
    settings_load(&s, cfg, &d);
    settings_close(&s);
  }
  config_dump(cfg, devnull);
  config_get(cfg, "aio", "workers");
  config_get(cfg, "server/web", "port");
  diag_close(&d);
  if (out && clean)
    *out = cfg;
  else
    config_free(cfg);
  return clean ? 0 : -1;
}

/* config_write_value() on a file that parses: the result must parse too
 * and read back the value written. */
static void check_write(const uint8_t *data, size_t size, size_t which) {
  FILE *f = fopen(wpath, "w");
  if (f == NULL)
    return;
  fwrite(data, 1, size, f);
  fclose(f);
  struct diag d;
  diag_init(&d);
  const char *sec = writes[which].section, *key = writes[which].key;
  if (config_write_value(wpath, sec, key, writes[which].value, NULL, NULL,
                         &d) != 0)
    abort(); /* the file parsed; writing one value into it cannot fail */
  diag_close(&d);
  struct config *cfg = NULL;
  if (load(NULL, wpath, &cfg) != 0) {
    fprintf(stderr, "config_write_value made a clean file unparseable\n");
    abort();
  }
  const char *v = config_get(cfg, sec, key);
  if (v == NULL || strcmp(v, writes[which].value) != 0) {
    fprintf(stderr, "config_write_value: [%s] %s reads back '%s'\n", sec, key,
            v ? v : "(absent)");
    abort();
  }
  config_free(cfg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (devnull == NULL)
    init();
  const uint8_t *file = data;
  size_t flen = size;
  char *defaults = NULL;
  const uint8_t *sep = memmem(data, size, "\n===\n", 5);
  if (sep) {
    defaults = strndup((const char *)data, (size_t)(sep - data));
    file = sep + 5;
    flen = size - (size_t)(file - data);
  }
  char path[64];
  int fd = memfile(file, flen, path, sizeof(path));
  int clean = load(defaults, path, NULL);
  close(fd);
  free(defaults);
  if (clean == 0 && sep == NULL && size > 0)
    check_write(file, flen, data[0] % UTIL_ARRAY_LEN(writes));
  return 0;
}
