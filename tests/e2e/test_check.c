/*
 * test_check.c - `aio check` validates a configuration without starting
 * anything and lists every problem in one run, like `nginx -t`: refused
 * values, missing modules and symbols, and symbols of the wrong kind (the
 * last two found by the probe child that loads the modules), each with its
 * file and line; exit 78. A good configuration gets an ok line and exit 0.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "harness.h"

static char dir[128];
static char out[65536];

/* `aio check` of conf (in a fresh directory) must exit with want; its
 * output is in out. */
static void check_conf(const char *conf, int want) {
  h_tmpdir(dir, sizeof(dir));
  ck_assert_int_eq(h_write(dir, "aio.conf", conf), 0);
  const char *argv[] = {"-c", "aio.conf", "check", NULL};
  int rc = h_aio(dir, out, sizeof(out), argv);
  ck_assert_msg(rc >= 0, "aio check did not exit within the deadline");
  ck_assert_msg(rc == want, "exit %d, want %d:\n%s", rc, want, out);
}

static int count_lines(const char *s) {
  int n = 0;
  for (; *s; s++)
    n += *s == '\n';
  return n;
}

#define HAS(s) ck_assert_msg(strstr(out, s) != NULL, "no '%s' in:\n%s", s, out)

START_TEST(test_check_good_config_is_ok) {
  check_conf("[aio]\n"
             "modules = addition\n"
             "module_path = " AIO_EXAMPLE_MODULES "\n"
             "\n"
             "[server:addition]\n"
             "protocol = addition.protocol\n"
             "address = 127.0.0.1\n"
             "port = 8888\n"
             "\n"
             "[listen:x]\n"
             "addition-done = addition.on_done\n",
             0);
  HAS("aio: configuration aio.conf is ok (1 server, 0 schedules, 1 "
      "listener)\n");
  ck_assert_int_eq(count_lines(out), 1);
}
END_TEST

/* A typo in an [aio] key would be ignored in silence: it is a warning
 * naming the line and the key it likely meant, and the config still
 * passes. */
START_TEST(test_check_warns_about_unknown_aio_keys) {
  check_conf("[aio]\n"
             "worker = 4\n"       /* 2 */
             "graceful = 3\n"     /* 3 */
             "frobnicate = yes\n" /* 4 */
             "workers = 2\n"
             "\n"
             "[server:echo]\n"
             "protocol = aio.echo\n"
             "port = 8888\n",
             0);
  HAS("warning: aio.conf:2: unknown key 'worker' in [aio] is ignored; did "
      "you mean 'workers'?\n");
  HAS("warning: aio.conf:3: unknown key 'graceful' in [aio] is ignored; did "
      "you mean 'graceful_timeout'?\n");
  HAS("warning: aio.conf:4: unknown key 'frobnicate' in [aio] is ignored\n");
  HAS("aio: configuration aio.conf is ok (1 server");
  ck_assert_int_eq(count_lines(out), 4);
}
END_TEST

/* Issue 13: a typo'd "adress" in a server section bound all interfaces
 * in silence. It is a warning with the key it likely meant, from aio check
 * and at aio run, as in [aio]; so is one in a schedule section. Keys of
 * [listen:NAME] (signal names) and [aio:commands] (command names) are the
 * user's and do not warn. */
START_TEST(test_check_warns_about_unknown_server_and_schedule_keys) {
  char conf[1024];
  int port = h_free_port();
  snprintf(conf, sizeof(conf),
           "[aio]\n"
           "modules = addition\n"
           "module_path = " AIO_EXAMPLE_MODULES "\n"
           "workers = 1\n"
           "[server:web]\n"         /* 5 */
           "protocol = aio.echo\n"  /* 6 */
           "adress = 127.0.0.1\n"   /* 7 */
           "port = %d\n"            /* 8 */
           "[schedule:tick]\n"      /* 9 */
           "func = addition.tick\n" /* 10 */
           "every = 3600\n"         /* 11 */
           "ofset = 5\n"            /* 12 */
           "[listen:x]\n"           /* 13 */
           "adress = addition.on_done\n"
           "[aio:commands]\n"
           "evry = addition.add\n",
           port);
  check_conf(conf, 0);
  HAS("warning: aio.conf:7: unknown key 'adress' in [server:web] is ignored; "
      "did you mean 'address'?\n");
  HAS("warning: aio.conf:12: unknown key 'ofset' in [schedule:tick] is "
      "ignored; did you mean 'offset'?\n");
  HAS("aio: configuration aio.conf is ok (1 server, 1 schedule, 1 listener)");
  ck_assert_int_eq(count_lines(out), 3);
  /* aio run says the same in its log, and serves. */
  struct aio_proc p;
  h_start_ready(&p, conf, NULL);
  ck_assert(h_log_has(&p, "aio.conf:7: unknown key 'adress' in [server:web] "
                          "is ignored; did you mean 'address'?"));
  ck_assert(h_log_has(&p, "unknown key 'ofset' in [schedule:tick]"));
  ck_assert_int_eq(h_log_count(&p, "unknown key"), 2);
  h_stop_ok(&p);
}
END_TEST

/* The Python runner's README starts with this section; copied as it is,
 * each line is a warning at its line and everything else works. */
START_TEST(test_check_python_readme_commands_are_warnings) {
  static const char conf[] = "[aio:commands]\n"
                             "run = aio.app.cmd.cmd_run\n"           /* 2 */
                             "test = aio.app.testing.cmd.cmd_test\n" /* 3 */
                             "\n"
                             "[server:echo]\n"
                             "protocol = aio.echo\n"
                             "port = 8888\n";
  check_conf(conf, 0);
  HAS("warning: aio.conf:2: [aio:commands] 'run' is ignored: 'run' is a "
      "built-in command of aio and cannot be remapped\n");
  HAS("warning: aio.conf:3: [aio:commands] 'test' is ignored: 'test' is a "
      "built-in command of aio and cannot be remapped\n");
  HAS("aio: configuration aio.conf is ok (1 server");
  /* aio config and aio test read the same file and work too. */
  const char *cfg[] = {"-c", "aio.conf",         "config",
                       "-g", "server:echo:port", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), cfg), 0);
  HAS("8888");
  const char *test[] = {"-c", "aio.conf", "test", NULL};
  int rc = h_aio(dir, out, sizeof(out), test);
  ck_assert_msg(rc == 0, "aio test exit %d:\n%s", rc, out);
}
END_TEST

/* aio --help lists each built-in command once, and the commands the
 * configuration maps; -c FILE works after a built-in command too. */
START_TEST(test_help_lists_mapped_commands_and_c_after_command) {
  check_conf("[aio]\n"
             "modules = addition\n"
             "module_path = " AIO_EXAMPLE_MODULES "\n"
             "[aio:commands]\n"
             "add = addition.add\n",
             0);
  const char *h[] = {"-c", "aio.conf", "--help", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), h), 0);
  const char *emit = strstr(out, "  emit ");
  ck_assert_ptr_nonnull(emit);
  ck_assert_ptr_null(strstr(emit + 1, "  emit "));
  ck_assert_ptr_null(strstr(strstr(out, "  scale ") + 1, "  scale "));
  HAS("commands mapped in aio.conf:\n  add       addition.add\n");
  const char *late[] = {"config", "-c", "aio.conf", "-g", "aio:modules", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), late), 0);
  HAS("addition");
  const char *eq[] = {"check", "--config=aio.conf", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), eq), 0);
  HAS("is ok");
  const char *bare[] = {"check", "-c", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), bare), 64);
  HAS("-c needs a FILE");
  /* A mapped command's own arguments are its own: -c is not taken. */
  const char *add[] = {"-c", "aio.conf", "add", "2", "3", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), add), 0);
  HAS("5");
}
END_TEST

/* A mapped command reads the whole configuration, module defaults
 * included, and so does a thread of its own. */
START_TEST(test_command_reads_the_configuration) {
  check_conf("[aio]\n"
             "modules = testmod baddecl\n"
             "module_path = " AIO_TEST_MODULES "\n"
             "[aio:commands]\n"
             "confget = testmod.confget_cmd\n"
             "[mine]\n"
             "colour = blue\n",
             0);
  const char *user[] = {"-c", "aio.conf", "confget", "mine", "colour", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), user), 0);
  HAS("command: blue\nthread: blue\n");
  const char *none[] = {"-c", "aio.conf", "confget", "mine", "nosuch", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), none), 0);
  HAS("command: -\nthread: -\n");
  const char *dflt[] = {"-c",      "aio.conf", "confget",
                        "baddecl", "greeting", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), dflt), 0);
  HAS("command: hello from the module\nthread: hello from the module\n");
}
END_TEST

/* A module's check hook adds its problems to aio check's, at the lines of
 * the keys, and fails aio run the same way; good values pass. */
START_TEST(test_module_check_hook_reports_with_file_and_line) {
  static const char head[] = "[aio]\n"
                             "modules = checkmod\n"
                             "module_path = " AIO_TEST_MODULES "\n"
                             "[server:e]\n"
                             "protocol = checkmod.echo_checked\n"
                             "port = 8888\n"
                             "[checkmod]\n";
  char conf[1024];
  snprintf(conf, sizeof(conf), "%scolour = mauve\nlevel = 11\n", head);
  check_conf(conf, 78);
  HAS("aio.conf:8: [checkmod] colour: 'mauve' is not a colour (red, green or "
      "blue) (module checkmod)\n");
  HAS("aio.conf:9: [checkmod] level: 11 is not from 1 to 10 (module "
      "checkmod)\n");
  HAS("2 problems");
  const char *run[] = {"-c", "aio.conf", "run", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), run), 78);
  HAS("aio.conf:8: [checkmod] colour: 'mauve'");
  /* A required key that is missing: at the section's line, or the file
   * when a module's defaults opened the section. */
  snprintf(conf, sizeof(conf), "%s", head);
  check_conf(conf, 78);
  HAS("aio.conf: [checkmod] colour: is required (module checkmod)\n");
  /* The typed getters report what does not parse, at its line. */
  snprintf(conf, sizeof(conf),
           "%scolour = red\nlevel = many\nstrict = perhaps\n"
           "patience = 3 fortnights\nbuffer = 12Q\n",
           head);
  check_conf(conf, 78);
  HAS("aio.conf:9: [checkmod] level: expected a whole number, not 'many' "
      "(module checkmod)\n");
  HAS("aio.conf:10: [checkmod] strict: expected yes/no");
  HAS("aio.conf:11: [checkmod] patience: expected a duration");
  HAS("aio.conf:12: [checkmod] buffer: expected a size in bytes");
  HAS("4 problems");
  /* level comes from the module's defaults. */
  snprintf(conf, sizeof(conf), "%scolour = blue\n", head);
  check_conf(conf, 0);
  HAS("is ok");
}
END_TEST

/* Interpolation errors do not hide the other problems: values are still
 * read, and a value that could not be interpolated is reported once. */
START_TEST(test_check_lists_interpolation_and_value_problems) {
  check_conf("[aio]\n"
             "workers = lots\n" /* 2 */
             "[a]\n"
             "x = ${nowhere:key}\n" /* 4 */
             "[server:s]\n"
             "protocol = aio.echo\n"
             "port = ${a:nokey}\n" /* 7 */
             "[server:t]\n"
             "protocol = aio.echo\n"
             "port = 99999\n", /* 10 */
             78);
  HAS("aio.conf:2: [aio] workers: expected a whole number");
  HAS("aio.conf:4: [a] x refers to ${nowhere:key}, but there is no key "
      "'key' in [nowhere]\n");
  HAS("aio.conf:7: [server:s] port refers to ${a:nokey}");
  HAS("aio.conf:10: [server:t] port: expected a whole number");
  HAS("4 problems");
  ck_assert_int_eq(count_lines(out), 5);
}
END_TEST

/* A module walks the configuration (every [job:*] section and its keys),
 * reads typed values and lists the loaded modules, as aio.app.modules. */
START_TEST(test_module_walks_the_configuration_and_the_modules) {
  check_conf("[aio]\n"
             "modules = checkmod\n"
             "module_path = " AIO_TEST_MODULES "\n"
             "[aio:commands]\n"
             "dump = checkmod.dump\n"
             "[checkmod]\n"
             "colour = green\n"
             "strict = on\n"
             "patience = 250ms\n"
             "buffer = 64K\n"
             "[job:b]\n"
             "when = ${checkmod:colour} later\n"
             "[other]\n"
             "x = 1\n"
             "[job/a]\n"
             "when = now\n",
             0);
  const char *argv[] = {"-c", "aio.conf", "dump", "job:", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), argv), 0);
  ck_assert_str_eq(out, "strict 1 patience 0.25 buffer 65536\n"
                        "[job:b]\n"
                        "  when = green later\n"
                        "[job:a]\n"
                        "  when = now\n"
                        "module aio: built-in protocols: echo (TCP/UDP), "
                        "hello (HTTP/1.1) (built in)\n"
                        "module checkmod: checks its own keys (file)\n");
}
END_TEST

/* Values the settings refuse and references the loader refuses, in one
 * file: every one is listed, values first, then what the probe found. */
START_TEST(test_check_lists_every_problem) {
  check_conf("[aio]\n"                                 /* 1 */
             "modules = addition nosuchmod\n"          /* 2 */
             "module_path = " AIO_EXAMPLE_MODULES "\n" /* 3 */
             "workers = lots\n"                        /* 4 */
             "\n"                                      /* 5 */
             "[server:a]\n"                            /* 6 */
             "protocol = addition.nosuch\n"            /* 7 */
             "address = 127.0.0.1\n"                   /* 8 */
             "port = 99999\n"                          /* 9 */
             "\n"                                      /* 10 */
             "[server:b]\n"                            /* 11 */
             "protocol = addition.on_done\n"           /* 12 */
             "port = 7001\n"                           /* 13 */
             "\n"                                      /* 14 */
             "[schedule:t]\n"                          /* 15 */
             "every = 1\n"                             /* 16 */
             "func = addition.protocol\n"              /* 17 */
             "\n"                                      /* 18 */
             "[listen:x]\n"                            /* 19 */
             "sig = addition.tick\n"                   /* 20 */
             "other = othermissing.fn\n",              /* 21 */
             78);
  HAS("aio.conf:4: [aio] workers: expected a whole number");
  HAS("aio.conf:9: [server:a] port: expected a whole number");
  HAS("module 'nosuchmod' not found");
  HAS("aio.conf:7: addition.nosuch: module 'addition'");
  HAS("has no symbol 'nosuch'");
  HAS("aio.conf:12: addition.on_done is declared with AIO_LISTENER, but it "
      "is used here as AIO_PROTOCOL");
  HAS("aio.conf:17: addition.protocol is declared with AIO_PROTOCOL, but it "
      "is used here as AIO_SCHEDULER");
  HAS("aio.conf:20: addition.tick is declared with AIO_SCHEDULER, but it is "
      "used here as AIO_LISTENER");
  HAS("aio.conf:21: module 'othermissing' not found");
  /* Eight problems, each once, and the count. */
  HAS("aio: configuration aio.conf: 8 problems\n");
  ck_assert_int_eq(count_lines(out), 9);
}
END_TEST

/* No value problems: a module that does not load does not hide the wrong
 * references into the modules that did. */
START_TEST(test_check_missing_module_does_not_hide_symbol_problems) {
  check_conf("[aio]\n"
             "modules = addition nosuchmod\n"
             "module_path = " AIO_EXAMPLE_MODULES "\n"
             "\n"
             "[server:a]\n"
             "protocol = addition.tick\n"
             "port = 7001\n",
             78);
  HAS("module 'nosuchmod' not found");
  HAS("aio.conf:6: addition.tick is declared with AIO_SCHEDULER, but it is "
      "used here as AIO_PROTOCOL");
  HAS("aio: configuration aio.conf: 2 problems\n");
}
END_TEST

/* A file that does not parse is not interpreted further. */
START_TEST(test_check_syntax_errors_stop_before_modules) {
  check_conf("[aio]\n"
             "modules = nosuchmod\n"
             "this line is not an entry\n"
             "[server:a\n",
             78);
  HAS("aio.conf:3: expected 'key = value'");
  HAS("aio.conf:4: section header has no closing ']'");
  ck_assert_msg(strstr(out, "nosuchmod") == NULL, "%s", out);
  HAS("aio: configuration aio.conf: 2 problems\n");
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("aio check");
  TCase *tc = tcase_create("cli");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_check_good_config_is_ok);
  tcase_add_test(tc, test_check_warns_about_unknown_aio_keys);
  tcase_add_test(tc, test_check_warns_about_unknown_server_and_schedule_keys);
  tcase_add_test(tc, test_check_python_readme_commands_are_warnings);
  tcase_add_test(tc, test_help_lists_mapped_commands_and_c_after_command);
  tcase_add_test(tc, test_command_reads_the_configuration);
  tcase_add_test(tc, test_module_check_hook_reports_with_file_and_line);
  tcase_add_test(tc, test_module_walks_the_configuration_and_the_modules);
  tcase_add_test(tc, test_check_lists_every_problem);
  tcase_add_test(tc, test_check_lists_interpolation_and_value_problems);
  tcase_add_test(tc, test_check_missing_module_does_not_hide_symbol_problems);
  tcase_add_test(tc, test_check_syntax_errors_stop_before_modules);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
