/*
 * cli_test.c - `aio test [MODULE...]`: run the Check suites the configured
 * modules declare with AIO_MODULE(.tests = fn), in Check's fork mode so a
 * crashing test is a failure and not a crash of `aio test`.
 */
#define _GNU_SOURCE
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "cli.h"
#include "loader.h"
#include "testing.h"

#ifdef AIO_HAVE_CHECK
#include <check.h>
#endif

static void test_usage(FILE *out) {
  fprintf(out,
          "usage: aio [-c FILE] test [--tap FILE] [--xml FILE] [-v] "
          "[MODULE...]\n"
          "\n"
          "Run the tests of the configured modules (all, or those named).\n"
          "  --tap FILE   also write TAP output to FILE\n"
          "  --xml FILE   also write Check's XML (for CI) to FILE\n"
          "  -v           print every test, not just failures\n");
}

int cli_test(const char *config_path, int argc, char **argv) {
  static const struct option opts[] = {{"tap", required_argument, 0, 't'},
                                       {"xml", required_argument, 0, 'x'},
                                       {"verbose", no_argument, 0, 'v'},
                                       {"help", no_argument, 0, 'h'},
                                       {0, 0, 0, 0}};
  const char *tap = NULL, *xml = NULL;
  int verbose = 0, c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
    switch (c) {
    case 't':
      tap = optarg;
      break;
    case 'x':
      xml = optarg;
      break;
    case 'v':
      verbose = 1;
      break;
    case 'h':
      test_usage(stdout);
      return 0;
    default:
      test_usage(stderr);
      return EXIT_USAGE;
    }
  }
#ifndef AIO_HAVE_CHECK
  (void)tap;
  (void)xml;
  (void)verbose;
  (void)config_path;
  fprintf(stderr, "aio test: this aio was built without Check\n");
  return EXIT_UNAVAILABLE;
#else
  char *path = cli_config_path(config_path);
  if (path == NULL)
    return EXIT_CONFIG;
  struct diag d;
  struct app app = {0}; /* closed at out: even when loader_new failed */
  struct loader *l = loader_new();
  diag_init(&d);
  int rc = EXIT_CONFIG;
  SRunner *sr = NULL;
  if (l == NULL || app_load_in_process(&app, path, l, &d) ||
      loader_init(l, &d)) {
    diag_print(&d, stderr);
    goto out;
  }
  /* aio_test_serve() and aio_emit() in the tests use this configuration. */
  if (testing_attach(&app, l))
    goto out;
  for (int i = optind; i < argc; i++)
    if (loader_find_module(l, argv[i]) == NULL) {
      fprintf(stderr,
              "aio test: unknown module '%s'; the configuration "
              "has:",
              argv[i]);
      for (size_t j = 0; j < l->n; j++)
        fprintf(stderr, " %s", l->mods[j].name);
      fprintf(stderr, "\n");
      rc = EXIT_USAGE;
      goto out;
    }
  size_t nsuites = 0;
  for (size_t j = 0; j < l->n; j++) {
    const struct loader_module *m = &l->mods[j];
    int wanted = optind == argc;
    for (int i = optind; i < argc; i++)
      wanted |= strcmp(argv[i], m->name) == 0;
    /* The built-in module's own tests run when asked for: `aio test aio`. */
    if (!wanted || (optind == argc && m->path == NULL))
      continue;
    if (m->def->tests == NULL) {
      printf("%s: no tests\n", m->name);
      continue;
    }
    Suite *s = m->def->tests();
    if (s == NULL) {
      fprintf(stderr, "aio test: module '%s' returned no suite\n", m->name);
      rc = 1;
      goto out;
    }
    if (sr == NULL)
      sr = srunner_create(s);
    else
      srunner_add_suite(sr, s);
    nsuites++;
  }
  if (sr == NULL) {
    printf("aio test: no module has tests\n");
    rc = 0;
    goto out;
  }
  srunner_set_fork_status(sr, CK_FORK);
  /* Each test runs in a forked child: what stdio holds would be written
   * again by every child that exits through exit(). */
  fflush(stdout);
  fflush(stderr);
  if (tap)
    srunner_set_tap(sr, tap);
  if (xml)
    srunner_set_xml(sr, xml);
  srunner_run_all(sr, verbose ? CK_VERBOSE : CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  int run = srunner_ntests_run(sr);
  printf("aio test: %zu module%s, %d test%s, %d failed\n", nsuites,
         nsuites == 1 ? "" : "s", run, run == 1 ? "" : "s", failed);
  rc = failed ? 1 : 0;
out:
  testing_detach();
  if (sr)
    srunner_free(sr);
  loader_free(l);
  app_close(&app);
  diag_close(&d);
  free(path);
  return rc;
#endif
}
