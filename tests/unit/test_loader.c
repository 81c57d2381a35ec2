/*
 * test_loader.c - module search, dlopen and declaration checks. Every
 * refusal names the config file and line of the reference, the module and
 * the symbol; a good reference resolves to its declaration. The fixtures
 * are in tests/modules: testmod (good, plus an undeclared function),
 * badapi (AIO_MODULE for API version 0), api20mod (built against the API
 * 2.0 header), apinewmod (against one from the future), nomodule (no
 * AIO_MODULE), baddecl
 * (stale, forged and misnamed declarations, and module defaults).
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "check_main.h"
#include "config.h"
#include "loader.h"
#include "settings.h"

/* Lines 1 and 2 of every test config; the test's own text starts at 3. */
#define HEAD "[aio]\nmodule_path = " AIO_TEST_MODULES "\n"

struct fixture {
  struct config *cfg;
  struct settings s;
  struct loader *l;
  struct diag d;
};

/* Parse HEAD + text as t.conf into typed settings; the loader is new. */
static void setup(struct fixture *f, const char *text) {
  char *all = NULL;
  ck_assert_int_ge(asprintf(&all, HEAD "%s", text), 0);
  f->cfg = config_new();
  diag_init(&f->d);
  ck_assert_int_eq(config_parse_string(f->cfg, all, "t.conf", &f->d), 0);
  ck_assert_int_eq(config_interpolate(f->cfg, &f->d), 0);
  ck_assert_int_eq(settings_load(&f->s, f->cfg, &f->d), 0);
  f->l = loader_new();
  ck_assert_ptr_nonnull(f->l);
  free(all);
}

static void teardown(struct fixture *f) {
  loader_free(f->l);
  settings_close(&f->s);
  config_free(f->cfg);
  diag_close(&f->d);
}

static void dump(const struct diag *d) {
  for (size_t i = 0; i < d->n; i++)
    fprintf(stderr, "  diag[%zu] %s\n", i, d->msgs[i]);
}

/* Some message starts with "t.conf:LINE: " and contains every needle. */
static int has_diag(const struct diag *d, int line, const char *n1,
                    const char *n2) {
  char prefix[64];
  snprintf(prefix, sizeof(prefix), "t.conf:%d: ", line);
  for (size_t i = 0; i < d->n; i++)
    if (strncmp(d->msgs[i], prefix, strlen(prefix)) == 0 &&
        strstr(d->msgs[i], n1) && (n2 == NULL || strstr(d->msgs[i], n2)))
      return 1;
  return 0;
}

#define ASSERT_DIAG(d, line, n1, n2)                                           \
  do {                                                                         \
    if (!has_diag((d), (line), (n1), (n2)))                                    \
      dump(d);                                                                 \
    ck_assert_msg(has_diag((d), (line), (n1), (n2)),                           \
                  "expected t.conf:%d: ...%s...", (line), (n1));               \
  } while (0)

/* Exactly one problem, at line, naming n1 and n2. */
static void assert_one_diag(const struct diag *d, int line, const char *n1,
                            const char *n2) {
  if (d->n != 1)
    dump(d);
  ck_assert_uint_eq(d->n, 1);
  ASSERT_DIAG(d, line, n1, n2);
}

/* Load and check; the loading must succeed, the check must fail with
 * exactly one problem at line naming n1 and n2. */
static void expect_check_error(const char *text, int line, const char *n1,
                               const char *n2) {
  struct fixture f;
  setup(&f, text);
  int rc = loader_load_all(f.l, &f.s, &f.d);
  if (rc)
    dump(&f.d);
  ck_assert_int_eq(rc, 0);
  ck_assert_int_eq(loader_check(f.l, &f.s, &f.d), -1);
  assert_one_diag(&f.d, line, n1, n2);
  teardown(&f);
}

/* Loading itself must fail with exactly one problem at line. */
static void expect_load_error(const char *text, int line, const char *n1,
                              const char *n2) {
  struct fixture f;
  setup(&f, text);
  ck_assert_int_eq(loader_load_all(f.l, &f.s, &f.d), -1);
  assert_one_diag(&f.d, line, n1, n2);
  teardown(&f);
}

/* Loading and the check both pass. */
static void expect_no_problem(const char *text) {
  struct fixture f;
  setup(&f, text);
  ck_assert_int_eq(loader_load_all(f.l, &f.s, &f.d), 0);
  ck_assert_int_eq(loader_check(f.l, &f.s, &f.d), 0);
  teardown(&f);
}

START_TEST(test_good_references_resolve) {
  struct fixture f;
  setup(&f, "[server:a]\nprotocol = testmod.whoami\nport = 1\n"
            "[server:b]\nprotocol = aio.echo\nport = 2\n"
            "[schedule:j]\nevery = 1\nfunc = testmod.job\n"
            "[listen:x]\nsig = testmod.listener broadcast\n");
  ck_assert_int_eq(loader_load_all(f.l, &f.s, &f.d), 0);
  ck_assert_int_eq(loader_check(f.l, &f.s, &f.d), 0);
  ck_assert_uint_eq(f.d.n, 0);

  const struct loader_module *m = loader_find_module(f.l, "testmod");
  ck_assert_ptr_nonnull(m);
  ck_assert_str_eq(m->def->name, "testmod");
  ck_assert_str_eq(m->path, AIO_TEST_MODULES "/testmod.so");
  ck_assert_ptr_nonnull(m->handle);
  m = loader_find_module(f.l, "aio");
  ck_assert_ptr_nonnull(m);
  ck_assert_ptr_null(m->handle); /* built in, not dlopened */

  const aio_decl_t *decl =
      loader_resolve(f.l, &f.s.servers[0].handler, AIO_KIND_PROTOCOL, &f.d);
  ck_assert_ptr_nonnull(decl);
  ck_assert_str_eq(decl->symbol, "whoami");
  ck_assert_int_eq(decl->kind, AIO_KIND_PROTOCOL);
  ck_assert_ptr_nonnull(decl->u.protocol->data_received);
  decl = loader_resolve(f.l, &f.s.schedules[0].func, AIO_KIND_SCHEDULER, &f.d);
  ck_assert_ptr_nonnull(decl);
  ck_assert_ptr_nonnull(decl->u.scheduler);
  decl = loader_resolve(f.l, &f.s.servers[1].handler, AIO_KIND_PROTOCOL, &f.d);
  ck_assert_ptr_nonnull(decl);
  ck_assert_str_eq(decl->symbol, "echo");
  ck_assert_uint_eq(f.d.n, 0);
  teardown(&f);
}
END_TEST

START_TEST(test_modules_list_loads_in_order) {
  struct fixture f;
  setup(&f, "modules = testmod\n    baddecl\n");
  ck_assert_int_eq(loader_load_all(f.l, &f.s, &f.d), 0);
  ck_assert_uint_eq(f.l->n, 3);
  ck_assert_str_eq(f.l->mods[0].name, "aio");
  ck_assert_str_eq(f.l->mods[1].name, "testmod");
  ck_assert_str_eq(f.l->mods[2].name, "baddecl");
  /* Loading twice finds what is loaded. */
  ck_assert_ptr_eq(loader_load(f.l, &f.s, "testmod", "t.conf", 1, &f.d),
                   &f.l->mods[1]);
  ck_assert_int_eq(loader_init(f.l, &f.d), 0);
  ck_assert_int_eq(f.l->mods[1].initialised, 1);
  teardown(&f);
}
END_TEST

START_TEST(test_missing_module_lists_paths) {
  expect_load_error("[server:a]\nport = 1\nprotocol = nosuch.proto\n", 5,
                    "module 'nosuch' not found (looked for " AIO_TEST_MODULES
                    "/nosuch.so, ",
                    "); set [aio] module_path");
}
END_TEST

START_TEST(test_missing_module_relative_path_is_from_config_dir) {
  struct fixture f;
  setup(&f, "[server:a]\nport = 1\nprotocol = nosuch.proto\n");
  /* module_path entries that are not absolute are relative to the config
   * file's directory, which settings record. */
  free(f.s.config_dir);
  f.s.config_dir = strdup("/srv/app");
  free(f.s.module_path[0]);
  f.s.module_path[0] = strdup("mods");
  ck_assert_int_eq(loader_load_all(f.l, &f.s, &f.d), -1);
  ASSERT_DIAG(&f.d, 5, "looked for /srv/app/mods/nosuch.so, ", NULL);
  teardown(&f);
}
END_TEST

START_TEST(test_missing_module_in_modules_names_its_line) {
  /* The entry of [aio] modules that names it, not "[aio] modules:0". */
  expect_load_error("modules = testmod\n"
                    "    baddecl nosuch\n",
                    4, "module 'nosuch' not found", AIO_TEST_MODULES);
}
END_TEST

/* A Python-style dotted path: the message says how it was split and names
 * the module that does exist for one of its parts. */
START_TEST(test_dotted_module_name_says_how_it_was_split) {
  expect_load_error("[server:a]\nport = 1\nprotocol = my.testmod.whoami\n", 5,
                    "module 'my.testmod' not found",
                    "a module name is one file name: 'my.testmod' means "
                    "my.testmod.so, not a directory path; did you mean "
                    "module 'testmod' (" AIO_TEST_MODULES "/testmod.so)?");
}
END_TEST

START_TEST(test_two_files_may_not_declare_one_module_name) {
  expect_load_error("modules = testmod\n"
                    "    twinmod\n",
                    4,
                    "module 'twinmod' (" AIO_TEST_MODULES "/twinmod.so) "
                    "declares AIO_MODULE(.name = \"testmod\"), which "
                    "module 'testmod' (",
                    "already declares");
}
END_TEST

START_TEST(test_udp_server_needs_datagram_received) {
  expect_check_error("[server:u]\nport = 1\ntype = udp\n"
                     "protocol = aio.hello\n",
                     6,
                     "[server:u] is a UDP server, but protocol aio.hello "
                     "has no datagram_received",
                     NULL);
  /* aio.echo has one: no problem. */
  expect_no_problem("[server:u]\nport = 1\ntype = udp\nprotocol = aio.echo\n");
}
END_TEST

START_TEST(test_invalid_module_name) {
  expect_load_error("[listen:x]\nsig = .hidden.fn\n", 4,
                    "'.hidden' is not a valid module name", NULL);
}
END_TEST

START_TEST(test_not_a_shared_object) {
  char dir[] = "/tmp/aio-loader-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  char path[128];
  snprintf(path, sizeof(path), "%s/junk.so", dir);
  FILE *fp = fopen(path, "w");
  fputs("this is not an ELF file\n", fp);
  fclose(fp);
  struct fixture f;
  setup(&f, "[server:a]\nport = 1\nprotocol = junk.proto\n");
  free(f.s.module_path[0]);
  f.s.module_path[0] = strdup(dir);
  ck_assert_int_eq(loader_load_all(f.l, &f.s, &f.d), -1);
  assert_one_diag(&f.d, 5, "module 'junk': cannot load ", path);
  teardown(&f);
  unlink(path);
  rmdir(dir);
}
END_TEST

START_TEST(test_missing_symbol) {
  expect_check_error("[server:a]\nport = 1\nprotocol = testmod.nosuch\n", 5,
                     "testmod.nosuch: module 'testmod' (" AIO_TEST_MODULES
                     "/testmod.so) has no symbol 'nosuch'",
                     NULL);
  expect_check_error("[server:a]\nport = 1\nprotocol = aio.nosuch\n", 5,
                     "aio.nosuch: the built-in module 'aio' has no symbol "
                     "'nosuch'",
                     NULL);
}
END_TEST

START_TEST(test_undeclared_symbol) {
  expect_check_error("[schedule:j]\nevery = 1\nfunc = testmod.undeclared\n", 5,
                     "testmod.undeclared: module 'testmod' (" AIO_TEST_MODULES
                     "/testmod.so) has a symbol 'undeclared' but it is not "
                     "declared",
                     "add AIO_SCHEDULER(undeclared...) after it");
}
END_TEST

START_TEST(test_wrong_kind) {
  expect_check_error("[server:a]\nport = 1\nprotocol = testmod.listener\n", 5,
                     "testmod.listener is declared with AIO_LISTENER, but it "
                     "is used here as AIO_PROTOCOL",
                     NULL);
  expect_check_error("[server:a]\nport = 1\nfactory = testmod.whoami\n", 5,
                     "testmod.whoami is declared with AIO_PROTOCOL, but it "
                     "is used here as AIO_FACTORY",
                     NULL);
  expect_check_error("[schedule:j]\nevery = 1\nfunc = testmod.job\n"
                     "err = testmod.whoami\n",
                     6, "testmod.whoami is declared with AIO_PROTOCOL",
                     "as AIO_SCHEDULER");
  expect_check_error("[listen:x]\nsig = testmod.listener\n    testmod.job\n", 5,
                     "testmod.job is declared with AIO_SCHEDULER",
                     "as AIO_LISTENER");
  expect_check_error("[aio:commands]\nhi = testmod.job\n", 4,
                     "testmod.job is declared with AIO_SCHEDULER",
                     "as AIO_COMMAND");
  expect_check_error("[listen:x]\nsig = aio.echo\n", 4,
                     "aio.echo is declared with AIO_PROTOCOL",
                     "as AIO_LISTENER");
}
END_TEST

START_TEST(test_module_built_for_old_api) {
  expect_load_error("[server:a]\nport = 1\nprotocol = badapi.proto\n", 5,
                    "module 'badapi' (" AIO_TEST_MODULES
                    "/badapi.so) was built for aio API version 0, this aio "
                    "speaks version 2.",
                    "rebuild it against this aio's aio.h");
}
END_TEST

/* Built against the frozen API 2.0 header, whose aio_module_t ends before
 * `check`: it loads, and what it lacks reads as NULL (ASan would catch a
 * read past the module's own struct). */
START_TEST(test_module_of_an_older_minor_loads) {
  struct fixture f;
  setup(&f, "[server:a]\nport = 1\nprotocol = api20mod.old\n");
  ck_assert_int_eq(loader_load_all(f.l, &f.s, &f.d), 0);
  ck_assert_int_eq(loader_check(f.l, &f.s, &f.d), 0);
  struct loader_module *m = loader_find_module(f.l, "api20mod");
  ck_assert_ptr_nonnull(m);
  ck_assert_str_eq(m->def->name, "api20mod");
  ck_assert_ptr_null(m->def->check);
  const aio_decl_t *decl =
      loader_resolve(f.l, &f.s.servers[0].handler, AIO_KIND_PROTOCOL, &f.d);
  ck_assert_ptr_nonnull(decl);
  ck_assert_ptr_nonnull(decl->u.protocol->data_received);
  ck_assert_uint_eq(decl->size, sizeof(aio_protocol_t));
  /* Resolved twice, one record. */
  ck_assert_ptr_eq(decl, loader_resolve(f.l, &f.s.servers[0].handler,
                                        AIO_KIND_PROTOCOL, &f.d));
  teardown(&f);
}
END_TEST

/* Built against the frozen API 2.1 header (before aio_emit_wait): it
 * loads in 2.2, its check hook and async listener as they were. */
START_TEST(test_module_of_minor_2_1_loads) {
  struct fixture f;
  setup(&f, "[listen:x]\nsig = api21mod.later\n");
  ck_assert_int_eq(loader_load_all(f.l, &f.s, &f.d), 0);
  ck_assert_int_eq(loader_check(f.l, &f.s, &f.d), 0);
  struct loader_module *m = loader_find_module(f.l, "api21mod");
  ck_assert_ptr_nonnull(m);
  ck_assert_ptr_nonnull(m->def->check);
  const aio_decl_t *decl =
      loader_resolve(f.l, &f.s.listeners[0].fn, AIO_KIND_LISTENER, &f.d);
  ck_assert_ptr_nonnull(decl);
  ck_assert_int_eq(decl->kind, AIO_KIND_LISTENER_ASYNC);
  ck_assert_uint_eq(decl->api_version, (2u << 16) | 1u);
  teardown(&f);
}
END_TEST

START_TEST(test_module_of_a_newer_minor_is_refused) {
  char want[160];
  snprintf(want, sizeof(want),
           "was built for aio API version 2.99, newer than this aio's %d.%d",
           AIO_API_MAJOR, AIO_API_MINOR);
  expect_load_error("[server:a]\nport = 1\nprotocol = apinewmod.proto\n", 5,
                    want,
                    "rebuild it against this aio's aio.h, or run it with a "
                    "newer aio");
}
END_TEST

START_TEST(test_module_without_aio_module) {
  expect_load_error("[server:a]\nport = 1\nprotocol = nomodule.proto\n", 5,
                    "module 'nomodule' (" AIO_TEST_MODULES
                    "/nomodule.so) has no AIO_MODULE(...) declaration",
                    "is it an aio module?");
}
END_TEST

START_TEST(test_symbol_declared_for_old_api) {
  expect_check_error("[server:a]\nport = 1\nprotocol = baddecl.stale\n", 5,
                     "baddecl.stale: module 'baddecl' was built for aio API "
                     "version 0, this aio speaks version 2.",
                     "rebuild it against this aio's aio.h");
}
END_TEST

START_TEST(test_forged_declarations) {
  expect_check_error("[server:a]\nport = 1\nprotocol = baddecl.nomagic\n", 5,
                     "baddecl.nomagic: 'nomagic' in module 'baddecl' is not "
                     "a valid aio declaration",
                     NULL);
  expect_check_error("[server:a]\nport = 1\nprotocol = baddecl.misnamed\n", 5,
                     "baddecl.misnamed: 'misnamed' in module 'baddecl' is "
                     "not a valid aio declaration",
                     NULL);
  /* The module itself is fine: its good symbol resolves. */
  expect_no_problem("[server:a]\nport = 1\nprotocol = baddecl.good\n");
}
END_TEST

START_TEST(test_check_lists_every_problem) {
  struct fixture f;
  setup(&f, "[server:a]\nport = 1\nprotocol = testmod.nosuch\n"
            "[server:b]\nport = 2\nprotocol = testmod.job\n"
            "[listen:x]\nsig = testmod.undeclared\n");
  ck_assert_int_eq(loader_load_all(f.l, &f.s, &f.d), 0);
  ck_assert_int_eq(loader_check(f.l, &f.s, &f.d), -1);
  ck_assert_uint_eq(f.d.n, 3);
  ASSERT_DIAG(&f.d, 5, "testmod.nosuch", "has no symbol");
  ASSERT_DIAG(&f.d, 8, "testmod.job", "AIO_SCHEDULER");
  ASSERT_DIAG(&f.d, 10, "testmod.undeclared", "not declared");
  teardown(&f);
}
END_TEST

/* ---- through the app pipeline ---------------------------------------------
 */

static char *write_conf(const char *text) {
  char *path = strdup("/tmp/aio-loader-conf-XXXXXX");
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  return path;
}

START_TEST(test_module_defaults_layer_between_builtin_and_user) {
  char *path = write_conf(HEAD "modules = baddecl\n"
                               "graceful_timeout = 3\n"
                               "[server:a]\nprotocol = baddecl.good\n"
                               "port = ${baddecl:port}\n"
                               "[baddecl]\nport = 7070\n");
  /* In the probe child (as `aio run` does) and in this process. */
  for (int in_process = 0; in_process < 2; in_process++) {
    struct app a;
    struct diag d;
    struct loader *l = loader_new();
    diag_init(&d);
    int rc = in_process ? app_load_in_process(&a, path, l, &d)
                        : app_load(&a, path, &d);
    if (rc)
      dump(&d);
    ck_assert_int_eq(rc, 0);
    ck_assert(a.s.timeout == 7);                   /* the module's default */
    ck_assert(a.s.graceful_timeout == 3);          /* the user's value */
    ck_assert_int_eq(a.s.log_level, AIO_LOG_INFO); /* built-in */
    ck_assert_int_eq(a.s.servers[0].port, 7070);
    ck_assert_str_eq(config_get(a.cfg, "baddecl", "greeting"),
                     "hello from the module");
    const struct config_entry *e = config_entry(a.cfg, "aio", "timeout");
    ck_assert_str_eq(e->file, "<module baddecl defaults>");
    e = config_entry(a.cfg, "aio", "graceful_timeout");
    ck_assert_str_eq(e->file, path);
    ck_assert_int_eq(e->line, 4);
    app_close(&a);
    loader_free(l);
    diag_close(&d);
  }
  unlink(path);
  free(path);
}
END_TEST

START_TEST(test_app_load_reports_probe_errors_with_location) {
  char *path = write_conf(HEAD "modules = testmod\n"
                               "[server:a]\nport = 1\n"
                               "protocol = testmod.listener\n");
  struct app a;
  struct diag d;
  diag_init(&d);
  ck_assert_int_eq(app_load(&a, path, &d), -1);
  ck_assert_uint_eq(d.n, 1);
  char want[512];
  snprintf(want, sizeof(want),
           "%s:6: testmod.listener is declared with AIO_LISTENER, but it is "
           "used here as AIO_PROTOCOL",
           path);
  ck_assert_str_eq(d.msgs[0], want);
  app_close(&a);
  diag_close(&d);
  unlink(path);
  free(path);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("loader");
  TCase *tc = tcase_create("loader");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_good_references_resolve);
  tcase_add_test(tc, test_modules_list_loads_in_order);
  tcase_add_test(tc, test_missing_module_lists_paths);
  tcase_add_test(tc, test_missing_module_relative_path_is_from_config_dir);
  tcase_add_test(tc, test_missing_module_in_modules_names_its_line);
  tcase_add_test(tc, test_invalid_module_name);
  tcase_add_test(tc, test_udp_server_needs_datagram_received);
  tcase_add_test(tc, test_dotted_module_name_says_how_it_was_split);
  tcase_add_test(tc, test_two_files_may_not_declare_one_module_name);
  tcase_add_test(tc, test_not_a_shared_object);
  tcase_add_test(tc, test_missing_symbol);
  tcase_add_test(tc, test_undeclared_symbol);
  tcase_add_test(tc, test_wrong_kind);
  tcase_add_test(tc, test_module_built_for_old_api);
  tcase_add_test(tc, test_module_of_an_older_minor_loads);
  tcase_add_test(tc, test_module_of_minor_2_1_loads);
  tcase_add_test(tc, test_module_of_a_newer_minor_is_refused);
  tcase_add_test(tc, test_module_without_aio_module);
  tcase_add_test(tc, test_symbol_declared_for_old_api);
  tcase_add_test(tc, test_forged_declarations);
  tcase_add_test(tc, test_check_lists_every_problem);
  tcase_add_test(tc, test_module_defaults_layer_between_builtin_and_user);
  tcase_add_test(tc, test_app_load_reports_probe_errors_with_location);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
