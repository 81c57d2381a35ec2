/*
 * cli_config.c - `aio config`: print the effective configuration, get one
 * value or section (-g), or set a value in the user's file in place (-s),
 * only when the file as it would be passes what `aio check` checks.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "cli.h"
#include "config.h"
#include "util.h"

static void config_usage(FILE *out) {
  fprintf(out,
          "usage: aio [-c FILE] config [-f FILE] [-g SECTION[:KEY]]\n"
          "       aio [-c FILE] config [-f FILE] -s SECTION:KEY VALUE\n"
          "\n"
          "Without options, print the whole effective configuration\n"
          "(defaults, module defaults and the file, interpolated).\n"
          "  -g SECTION:KEY  print one value; -g SECTION prints its keys\n"
          "  -s SECTION:KEY VALUE  set a value in the configuration file,\n"
          "                  keeping its comments and layout, when the file\n"
          "                  still passes `aio check` (exit 78 if not, the\n"
          "                  file untouched)\n"
          "  -f FILE         read or write FILE as it is (no defaults, no\n"
          "                  interpolation; -s checks only that it parses)\n");
}

/* "server:web:port" -> section "server:web", key "port". */
static int split_ref(const char *ref, char **section, char **key) {
  const char *colon = strrchr(ref, ':');
  if (colon == NULL || colon == ref || colon[1] == '\0')
    return -1;
  *section = strndup(ref, (size_t)(colon - ref));
  *key = strdup(colon + 1);
  return (*section && *key) ? 0 : -1;
}

/* A copy of msg with every tmp replaced by path. New, or NULL. */
static char *rename_in(const char *msg, const char *tmp, const char *path) {
  struct util_buf b = {0};
  size_t tlen = strlen(tmp);
  for (const char *p = msg, *hit; *p; p = hit + tlen) {
    hit = strstr(p, tmp);
    if (hit == NULL) {
      util_buf_add(&b, p, strlen(p));
      break;
    }
    util_buf_add(&b, p, (size_t)(hit - p));
    util_buf_add(&b, path, strlen(path));
  }
  util_buf_add(&b, "", 0);
  if (b.failed) {
    free(b.data);
    return NULL;
  }
  return b.data;
}

/* config_write_value's check for -s: the whole of `aio check` (values,
 * interpolation, module defaults, modules and symbols in the probe
 * child) on the file as it would be, its problems named after the real
 * file rather than the temporary one. */
static int check_new_file(const char *tmp, const char *path, void *arg,
                          struct diag *d) {
  (void)arg;
  struct diag mine;
  struct app app;
  diag_init(&mine);
  int rc = app_check(&app, tmp, &mine);
  app_close(&app);
  for (size_t i = 0; i < mine.n; i++) {
    char *msg = rename_in(mine.msgs[i], tmp, path);
    diag_add_raw(d, msg ? msg : mine.msgs[i]);
    free(msg);
  }
  if (rc)
    diag_add(d, path, 0,
             "not changed: the new value would not pass `aio check`");
  diag_close(&mine);
  return rc ? -1 : 0;
}

int cli_config(const char *config_path, int argc, char **argv) {
  static const struct option opts[] = {{"get", required_argument, 0, 'g'},
                                       {"set", required_argument, 0, 's'},
                                       {"file", required_argument, 0, 'f'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *get = NULL, *set = NULL, *file = NULL;
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "g:s:f:h", opts, NULL)) != -1) {
    switch (c) {
    case 'g':
      get = optarg;
      break;
    case 's':
      set = optarg;
      break;
    case 'f':
      file = optarg;
      break;
    case 'h':
      config_usage(stdout);
      return 0;
    default:
      config_usage(stderr);
      return EXIT_USAGE;
    }
  }
  if (get && set) {
    fprintf(stderr, "aio config: -g and -s do not go together\n");
    return EXIT_USAGE;
  }
  if ((set && optind + 1 != argc) || (!set && optind != argc)) {
    config_usage(stderr);
    return EXIT_USAGE;
  }
  char *path = file ? strdup(file) : cli_config_path(config_path);
  if (path == NULL)
    return EXIT_CONFIG;
  struct diag d;
  diag_init(&d);
  int rc = 0;
  char *section = NULL, *key = NULL;
  if (set) {
    if (split_ref(set, &section, &key)) {
      fprintf(stderr, "aio config: -s takes SECTION:KEY, not '%s'\n", set);
      rc = EXIT_USAGE;
    } else if (config_write_value(path, section, key, argv[optind],
                                  file ? NULL : check_new_file, NULL, &d)) {
      diag_print(&d, stderr);
      rc = EXIT_CONFIG;
    }
    goto out;
  }
  struct app app;
  struct config *raw = NULL;
  const struct config *cfg;
  if (file) {
    raw = config_new();
    if (raw == NULL || config_parse_file(raw, path, &d)) {
      diag_print(&d, stderr);
      config_free(raw);
      rc = EXIT_CONFIG;
      goto out;
    }
    cfg = raw;
    memset(&app, 0, sizeof(app));
  } else {
    if (app_load(&app, path, &d)) {
      diag_print(&d, stderr);
      app_close(&app);
      rc = EXIT_CONFIG;
      goto out;
    }
    cfg = app.cfg;
  }
  if (get == NULL) {
    config_dump(cfg, stdout);
  } else {
    /* "server:web:port" is a value; "server:web" or "aio" a section. */
    int found = 0;
    if (split_ref(get, &section, &key) == 0) {
      const char *v = config_get(cfg, section, key);
      if (v) {
        printf("%s\n", v);
        found = 1;
      }
    }
    if (!found && config_dump_section(cfg, get, stdout) == 0)
      found = 1;
    if (!found) {
      fprintf(stderr, "aio config: %s: no such key or section\n", get);
      rc = 1;
    }
  }
  config_free(raw);
  if (!file)
    app_close(&app);
out:
  free(section);
  free(key);
  diag_close(&d);
  free(path);
  return rc;
}
