/*
 * checkmod.c - a module that checks its own configuration with the check
 * hook (API 2.1), reading it with the typed getters: [checkmod] colour is
 * red, green or blue; level a whole number from 1 to 10 (default 5, from
 * the module's defaults); strict a bool, patience a duration, buffer a
 * size. `aio dump PREFIX` (mapped to checkmod.dump) prints every section
 * under PREFIX with its keys, then the loaded modules.
 */
#include <stdio.h>
#include <string.h>

#include <aio.h>

static int check(void) {
  int problems = 0;
  const char *colour = aio_config_get("checkmod", "colour");
  if (colour == NULL) {
    aio_check_error("checkmod", "colour", "is required");
    problems++;
  } else if (strcmp(colour, "red") && strcmp(colour, "green") &&
             strcmp(colour, "blue")) {
    aio_check_error("checkmod", "colour",
                    "'%s' is not a colour (red, green or blue)", colour);
    problems++;
  }
  long long level;
  if (aio_config_int("checkmod", "level", 5, &level))
    problems++; /* reported by the getter, at the key's line */
  else if (level < 1 || level > 10) {
    aio_check_error("checkmod", "level", "%lld is not from 1 to 10", level);
    problems++;
  }
  int strict;
  double patience;
  size_t buffer;
  problems += aio_config_bool("checkmod", "strict", 0, &strict) != 0;
  problems += aio_config_duration("checkmod", "patience", 1, &patience) != 0;
  problems += aio_config_size("checkmod", "buffer", 4096, &buffer) != 0;
  return problems;
}

static void on_data(aio_conn_t *conn, const char *data, size_t len) {
  aio_write(conn, data, len);
}
AIO_PROTOCOL(echo_checked, .data_received = on_data);

static int print_key(const char *key, const char *value, void *arg) {
  (void)arg;
  printf("  %s = %s\n", key, value);
  return 0;
}

static int print_section(const char *section, void *arg) {
  (void)arg;
  printf("[%s]\n", section);
  return aio_config_keys(section, print_key, NULL);
}

static int print_module(const char *name, const char *description,
                        const char *file, void *arg) {
  (void)arg;
  printf("module %s: %s (%s)\n", name, description,
         *file ? "file" : "built in");
  return 0;
}

static int dump(int argc, char **argv) {
  int strict;
  double patience;
  size_t buffer;
  aio_config_bool("checkmod", "strict", 0, &strict);
  aio_config_duration("checkmod", "patience", 1, &patience);
  aio_config_size("checkmod", "buffer", 4096, &buffer);
  printf("strict %d patience %g buffer %zu\n", strict, patience, buffer);
  aio_config_sections(argc > 1 ? argv[1] : "", print_section, NULL);
  return aio_modules(print_module, NULL);
}
AIO_COMMAND(dump);

AIO_MODULE(.name = "checkmod", .description = "checks its own keys",
           .defaults = "[checkmod]\nlevel = 5\n", .check = check);
