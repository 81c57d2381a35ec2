/*
 * cli_check.c - `aio check`: validate a configuration fully without
 * starting anything (syntax, interpolation, values, modules and every
 * symbol's kind), listing every problem, like `nginx -t`.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "cli.h"
#include "upgrade.h"

int cli_check(const char *config_path, int argc, char **argv) {
  /* --handoff=N: asked by a master about to exec this binary (`aio
   * upgrade`): can it take over from a master that speaks handoff N? */
  if (argc == 2 && strncmp(argv[1], "--handoff=", 10) == 0) {
    if (atoi(argv[1] + 10) != UPGRADE_HANDOFF) {
      fprintf(stderr,
              "aio check: this binary takes handoff %d, not %s; upgrade "
              "through a stop and a start\n",
              UPGRADE_HANDOFF, argv[1] + 10);
      return EXIT_USAGE;
    }
    argc = 1;
  }
  if (argc > 1) {
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
      printf("usage: aio [-c FILE] check\n\n"
             "Validate the configuration and its modules; list every "
             "problem.\nExit 0 when it can be served, 78 when not.\n");
      return 0;
    }
    fprintf(stderr, "aio check: unexpected argument '%s'\n", argv[1]);
    return EXIT_USAGE;
  }
  char *path = cli_config_path(config_path);
  if (path == NULL)
    return EXIT_CONFIG;
  struct diag d;
  struct app app;
  diag_init(&d);
  int rc = 0;
  if (app_check(&app, path, &d)) {
    diag_print(&d, stderr);
    fprintf(stderr, "aio: configuration %s: %zu problem%s\n", path, d.n,
            d.n == 1 ? "" : "s");
    rc = EXIT_CONFIG;
  } else {
    struct diag warn;
    diag_init(&warn);
    settings_warnings(&app.s, app.cfg, &warn);
    for (size_t i = 0; i < warn.n; i++)
      fprintf(stderr, "warning: %s\n", warn.msgs[i]);
    diag_close(&warn);
    printf("aio: configuration %s is ok (%zu server%s, %zu schedule%s, %zu "
           "listener%s)\n",
           path, app.s.nservers, app.s.nservers == 1 ? "" : "s",
           app.s.nschedules, app.s.nschedules == 1 ? "" : "s", app.s.nlisteners,
           app.s.nlisteners == 1 ? "" : "s");
  }
  app_close(&app);
  diag_close(&d);
  free(path);
  return rc;
}
