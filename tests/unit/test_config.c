/*
 * test_config.c - the INI reader and the typed settings: the search order,
 * both section spellings, continuation lines, interpolation, layering, and
 * every error config.c and settings.c can report, each with its exact
 * FILE:LINE: prefix.
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "aio.h"
#include "check_main.h"
#include "config.h"
#include "settings.h"
#include "settings_keys.h"
#include "util.h"

static struct config *parse(const char *text, struct diag *d) {
  struct config *c = config_new();
  diag_init(d);
  config_parse_string(c, text, "t.conf", d);
  return c;
}

/* The whole text pipeline, as app.c runs it: built-in defaults, then text
 * as t.conf, interpolation, then the typed settings. Returns the result of
 * the last stage that ran; s must be closed. The settings borrow file names
 * from the config, so *keep gets it when the test looks at those. */
static int load_keep(const char *text, struct settings *s, struct diag *d,
                     struct config **keep) {
  struct config *c = config_new();
  int rc;
  diag_init(d);
  memset(s, 0, sizeof(*s));
  config_parse_string(c, settings_builtin_defaults(), "<built-in>", d);
  rc = config_parse_string(c, text, "t.conf", d);
  if (rc == 0)
    rc = config_interpolate(c, d);
  if (rc == 0)
    rc = settings_load(s, c, d);
  if (keep)
    *keep = c;
  else
    config_free(c);
  return rc;
}

static int load(const char *text, struct settings *s, struct diag *d) {
  return load_keep(text, s, d, NULL);
}

/* Some message starts with "t.conf:LINE: " and contains `needle`. */
static int has_diag(const struct diag *d, int line, const char *needle) {
  char prefix[64];
  snprintf(prefix, sizeof(prefix), "t.conf:%d: ", line);
  for (size_t i = 0; i < d->n; i++)
    if (strncmp(d->msgs[i], prefix, strlen(prefix)) == 0 &&
        strstr(d->msgs[i], needle) != NULL)
      return 1;
  return 0;
}

static void dump_diag(const struct diag *d) {
  for (size_t i = 0; i < d->n; i++)
    fprintf(stderr, "  diag[%zu] %s\n", i, d->msgs[i]);
}

/* Exactly one problem, at t.conf:line, mentioning needle. */
#define ASSERT_ONE(d, line, needle)                                            \
  do {                                                                         \
    if ((d)->n != 1 || !has_diag((d), (line), (needle)))                       \
      dump_diag(d);                                                            \
    ck_assert_uint_eq((d)->n, 1);                                              \
    ck_assert_msg(has_diag((d), (line), (needle)),                             \
                  "expected t.conf:%d: ...%s...", (line), (needle));           \
  } while (0)

/* text parsed as t.conf, which must raise no problem. Returns new. */
static struct config *parse_ok(const char *text) {
  struct diag d;
  struct config *c = parse(text, &d);
  if (d.n)
    dump_diag(&d);
  ck_assert_uint_eq(d.n, 0);
  diag_close(&d);
  return c;
}

/* parse_ok, then interpolated, also without a problem. Returns new. */
static struct config *interp_ok(const char *text) {
  struct config *c = parse_ok(text);
  struct diag d;
  diag_init(&d);
  int rc = config_interpolate(c, &d);
  if (rc || d.n)
    dump_diag(&d);
  ck_assert_int_eq(rc, 0);
  ck_assert_uint_eq(d.n, 0);
  diag_close(&d);
  return c;
}

/* settings-stage error: exactly one message at line. */
static void expect_settings_error(const char *text, int line,
                                  const char *needle) {
  struct settings s;
  struct diag d;
  ck_assert_int_eq(load(text, &s, &d), -1);
  ASSERT_ONE(&d, line, needle);
  settings_close(&s);
  diag_close(&d);
}

/* parse-stage error: exactly one message at line. */
static void expect_parse_error(const char *text, int line, const char *needle) {
  struct diag d;
  struct config *c = parse(text, &d);
  ASSERT_ONE(&d, line, needle);
  config_free(c);
  diag_close(&d);
}

/* interpolation error: parses cleanly, one message at line. */
static void expect_interp_error(const char *text, int line,
                                const char *needle) {
  struct config *c = parse_ok(text);
  struct diag d;
  diag_init(&d);
  ck_assert_int_eq(config_interpolate(c, &d), -1);
  ASSERT_ONE(&d, line, needle);
  config_free(c);
  diag_close(&d);
}

/* ---- the search order --------------------------------------------------- */

static void touch(const char *path) {
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs("[aio]\n", f);
  fclose(f);
}

START_TEST(test_search_order_prefers_cwd_then_etc) {
  char dir[] = "/tmp/aio-search-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  ck_assert_int_eq(chdir(dir), 0); /* Check forks: the cwd is ours alone */
  struct diag d;
  diag_init(&d);
  char *p = config_search(&d);
  if (access("/etc/aio.conf", R_OK) == 0) {
    ck_assert_str_eq(p, "/etc/aio.conf");
  } else {
    ck_assert_ptr_null(p);
    ck_assert_uint_eq(d.n, 1);
    ck_assert_ptr_nonnull(strstr(d.msgs[0], "no configuration file found"));
    ck_assert_ptr_nonnull(
        strstr(d.msgs[0], "aio.conf, etc/aio.conf, /etc/aio.conf"));
    ck_assert_ptr_nonnull(strstr(d.msgs[0], "-c FILE"));
  }
  free(p);
  diag_close(&d);

  ck_assert_int_eq(mkdir("etc", 0700), 0);
  touch("etc/aio.conf");
  diag_init(&d);
  p = config_search(&d);
  ck_assert_str_eq(p, "etc/aio.conf");
  ck_assert_uint_eq(d.n, 0);
  free(p);

  touch("aio.conf");
  p = config_search(&d);
  ck_assert_str_eq(p, "aio.conf");
  ck_assert_uint_eq(d.n, 0);
  free(p);
  diag_close(&d);

  unlink("aio.conf");
  unlink("etc/aio.conf");
  rmdir("etc");
  ck_assert_int_eq(chdir("/"), 0);
  rmdir(dir);
}
END_TEST

/* ---- spellings ----------------------------------------------------------- */

START_TEST(test_slash_spelling_is_colon) {
  struct config *c = parse_ok("[schedule/x]\nevery = 2\n[aio/commands]\n"
                              "hi = m.f\n");
  ck_assert_str_eq(config_get(c, "schedule:x", "every"), "2");
  ck_assert_str_eq(config_get(c, "aio:commands", "hi"), "m.f");
  ck_assert_str_eq(config_get(c, "aio/commands", "hi"), "m.f");
  config_free(c);
}
END_TEST

START_TEST(test_both_spellings_give_same_settings) {
  static const char *const colon =
      "[server:web]\nprotocol = aio.echo\nport = 8000\n"
      "[schedule:tick]\nevery = 2\nfunc = m.tick\n"
      "[listen:ev]\nsig = m.on_sig\n"
      "[aio:commands]\nhi = m.hi\n";
  static const char *const slash =
      "[server/web]\nprotocol = aio.echo\nport = 8000\n"
      "[schedule/tick]\nevery = 2\nfunc = m.tick\n"
      "[listen/ev]\nsig = m.on_sig\n"
      "[aio/commands]\nhi = m.hi\n";
  const char *const texts[] = {colon, slash};
  for (int i = 0; i < 2; i++) {
    struct settings s;
    struct diag d;
    ck_assert_int_eq(load(texts[i], &s, &d), 0);
    ck_assert_uint_eq(s.nservers, 1);
    ck_assert_str_eq(s.servers[0].name, "web");
    ck_assert_int_eq(s.servers[0].port, 8000);
    ck_assert_uint_eq(s.nschedules, 1);
    ck_assert_str_eq(s.schedules[0].name, "tick");
    ck_assert_uint_eq(s.nlisteners, 1);
    ck_assert_str_eq(s.listeners[0].signal, "sig");
    ck_assert_uint_eq(s.ncommands, 1);
    ck_assert_str_eq(s.commands[0].name, "hi");
    settings_close(&s);
    diag_close(&d);
  }
}
END_TEST

START_TEST(test_spellings_name_one_section) {
  /* [server/web] and [server:web] are the same section: a key in both is a
   * duplicate, reported where it is written the second time. */
  expect_parse_error("[server/web]\nport = 1\n[server:web]\nport = 2\n", 4,
                     "duplicate key 'port' in [server:web] (first set at "
                     "line 2)");
}
END_TEST

START_TEST(test_section_name_blanks_are_trimmed) {
  struct config *c =
      parse_ok("[ aio ]\nworkers = 3\n[\tserver/x ]\nport = 1\n");
  ck_assert_str_eq(config_get(c, "aio", "workers"), "3");
  ck_assert_str_eq(config_get(c, "server:x", "port"), "1");
  config_free(c);
}
END_TEST

START_TEST(test_byte_order_mark_is_skipped) {
  struct config *c = parse_ok("\xEF\xBB\xBF[aio]\nworkers = 3\n");
  ck_assert_str_eq(config_get(c, "aio", "workers"), "3");
  config_free(c);
}
END_TEST

START_TEST(test_comments_and_colon_separator) {
  struct config *c = parse_ok("; top\n# also\n[a]\nx: 1 ; trailing\n"
                              "y = a;b\n  ; indented comment\nz = 2\n");
  ck_assert_str_eq(config_get(c, "a", "x"), "1");
  ck_assert_str_eq(config_get(c, "a", "y"), "a;b"); /* no blank before ; */
  ck_assert_str_eq(config_get(c, "a", "z"), "2");
  ck_assert_int_eq(config_entry(c, "a", "z")->line, 7);
  config_free(c);
}
END_TEST

/* ---- continuation lines ------------------------------------------------- */

START_TEST(test_continuation_lines_join) {
  struct config *c = parse_ok("[aio]\nmodules = a\n    b\n  c\n");
  ck_assert_str_eq(config_get(c, "aio", "modules"), "a\nb\nc");
  config_free(c);
  c = parse_ok("[aio]\nmodules =\n    a\n    b\n");
  ck_assert_str_eq(config_get(c, "aio", "modules"), "a\nb");
  config_free(c);
}
END_TEST

START_TEST(test_continuation_parts_keep_their_lines) {
  struct config *c = parse_ok("[a]\n"       /* 1 */
                              "k =\n"       /* 2 */
                              "    one\n"   /* 3 */
                              "; comment\n" /* 4 */
                              "\n"          /* 5 */
                              "    two\n"   /* 6 */
                              "    three\n" /* 7 */
                              "j = x\n");   /* 8 */
  const struct config_entry *e = config_entry(c, "a", "k");
  ck_assert_str_eq(e->value, "one\ntwo\nthree");
  ck_assert_int_eq(e->line, 2);
  ck_assert_int_eq(config_entry_line(e, 0), 3);
  ck_assert_int_eq(config_entry_line(e, 1), 6);
  ck_assert_int_eq(config_entry_line(e, 2), 7);
  ck_assert_int_eq(config_entry_line(e, 9), 7); /* past the end: last */
  e = config_entry(c, "a", "j");
  ck_assert_int_eq(config_entry_line(e, 0), 8);
  config_free(c);
}
END_TEST

START_TEST(test_continuation_of_refused_entry_is_dropped) {
  /* One problem, not one per continuation line of the duplicate. */
  expect_parse_error("[a]\nx = 1\nx = 2\n    http://more\n    yet: more\n", 3,
                     "duplicate key 'x'");
  expect_parse_error("x = 1\n    more = 2\n", 1,
                     "'x' is outside any [section]");
}
END_TEST

START_TEST(test_indented_line_without_entry_is_error) {
  expect_parse_error("[aio]\n    indented\n", 2,
                     "expected 'key = value', a [section] or a comment");
}
END_TEST

/* ---- interpolation ------------------------------------------------------ */

START_TEST(test_interpolation_resolves) {
  struct config *c = interp_ok(
      "[a]\nhost = 127.0.0.1\nurl = http://${host}:${server:web:port}/\n"
      "cost = $$5\n[server:web]\nport = 80\n");
  ck_assert_str_eq(config_get(c, "a", "url"), "http://127.0.0.1:80/");
  ck_assert_str_eq(config_get(c, "a", "cost"), "$5");
  config_free(c);
}
END_TEST

START_TEST(test_interpolation_chains_and_other_sections) {
  struct config *c = interp_ok("[b]\nx = ${y}${y}\ny = ${c:z}\n"
                               "[c]\nz = $$${w}\nw = ok\n"
                               "[server/web]\nport = 81\n"
                               "[d]\nslash = ${server:web:port}\n"
                               "dollars = $$$$ and $$\n");
  ck_assert_str_eq(config_get(c, "c", "z"), "$ok");
  ck_assert_str_eq(config_get(c, "b", "y"), "$ok");
  /* A $ that came from $$ is a literal: it is not interpolated again. */
  ck_assert_str_eq(config_get(c, "b", "x"), "$ok$ok");
  ck_assert_str_eq(config_get(c, "d", "slash"), "81");
  ck_assert_str_eq(config_get(c, "d", "dollars"), "$$ and $");
  config_free(c);
}
END_TEST

START_TEST(test_interpolation_sees_every_layer) {
  struct diag d;
  struct config *c = config_new();
  diag_init(&d);
  config_parse_string(c, "[a]\nport = 1\nurl = :${port}\n", "base", &d);
  config_parse_string(c, "[a]\nport = 2\n", "user", &d);
  ck_assert_int_eq(config_interpolate(c, &d), 0);
  /* The lower layer's reference resolves to the user's value. */
  ck_assert_str_eq(config_get(c, "a", "url"), ":2");
  config_free(c);
  diag_close(&d);
}
END_TEST

START_TEST(test_interpolation_errors_name_line) {
  struct diag d;
  struct config *c = parse("[a]\nx = ${nope}\n", &d);
  ck_assert_int_eq(config_interpolate(c, &d), -1);
  ck_assert_int_eq(d.n, 1);
  ck_assert_ptr_nonnull(strstr(d.msgs[0], "t.conf:2:"));
  config_free(c);
  diag_close(&d);
  c = parse("[a]\nx = ${y}\ny = ${x}\n", &d);
  ck_assert_int_eq(config_interpolate(c, &d), -1);
  ck_assert_ptr_nonnull(strstr(d.msgs[0], "cycle"));
  config_free(c);
  diag_close(&d);
}
END_TEST

START_TEST(test_interpolation_missing_key) {
  expect_interp_error("[a]\n\nx = ${nope}\n", 3,
                      "[a] x refers to ${nope}, but there is no key 'nope' "
                      "in [a]");
  expect_interp_error("[a]\nx = ${b:nope}\n[b]\ny = 1\n", 2,
                      "there is no key 'nope' in [b]");
  expect_interp_error("[a]\nx = ${server:web:port}\n", 2,
                      "there is no key 'port' in [server:web]");
  expect_interp_error("[a]\nx = ${:k}\n", 2, "bad reference ${:k}");
}
END_TEST

START_TEST(test_interpolation_cycle) {
  expect_interp_error("[a]\nx = ${x}\n", 2,
                      "[a] x: interpolation cycle through ${x}");
  /* A longer cycle is reported once, where it closes. */
  expect_interp_error("[a]\nx = ${b:y}\n[b]\ny = ${c:z}\n[c]\nz = ${a:x}\n", 6,
                      "interpolation cycle through ${a:x}");
}
END_TEST

START_TEST(test_interpolation_bad_dollar) {
  expect_interp_error("[a]\nx = 5$\n", 2, "'$' must be followed by '{' or '$'");
  expect_interp_error("[a]\nx = $HOME\n", 2, "write $$ for a literal $");
  expect_interp_error("[a]\n\nx = ${open\n", 3, "'${' has no closing '}'");
  expect_interp_error("[a]\nx = ${}\n", 2, "[a] x: bad reference");
}
END_TEST

START_TEST(test_interpolation_depth_is_bounded) {
  char text[4096];
  int n = snprintf(text, sizeof(text), "[a]\n");
  for (int i = 0; i < 40; i++)
    n += snprintf(text + n, sizeof(text) - (size_t)n, "k%d = ${k%d}\n", i,
                  i + 1);
  snprintf(text + n, sizeof(text) - (size_t)n, "k40 = end\n");
  struct diag d;
  struct config *c = parse(text, &d);
  ck_assert_int_eq(config_interpolate(c, &d), -1);
  ck_assert_uint_eq(d.n, 1);
  ck_assert_ptr_nonnull(strstr(d.msgs[0], "nested more than 32 deep"));
  config_free(c);
  diag_close(&d);
}
END_TEST

/* ---- layering ----------------------------------------------------------- */

START_TEST(test_layers_override) {
  struct diag d;
  struct config *c = config_new();
  diag_init(&d);
  config_parse_string(c, "[aio]\nworkers = 1\nlog_level = info\n", "base", &d);
  config_parse_string(c, "[aio]\nworkers = 3\n", "user", &d);
  ck_assert_int_eq(d.n, 0);
  ck_assert_str_eq(config_get(c, "aio", "workers"), "3");
  ck_assert_str_eq(config_get(c, "aio", "log_level"), "info");
  ck_assert_str_eq(config_entry(c, "aio", "workers")->file, "user");
  config_free(c);
  diag_close(&d);
}
END_TEST

START_TEST(test_layers_builtin_module_user) {
  struct diag d;
  struct config *c = config_new();
  diag_init(&d);
  ck_assert_int_eq(
      config_parse_string(c, settings_builtin_defaults(), "<built-in>", &d), 0);
  ck_assert_int_eq(config_parse_string(c,
                                       "[aio]\ntimeout = 7\n"
                                       "graceful_timeout = 9\n"
                                       "[m]\ngreeting = hi\n",
                                       "<module m defaults>", &d),
                   0);
  /* The user's continued value replaces the module's whole value. */
  ck_assert_int_eq(config_parse_string(c,
                                       "[aio]\ngraceful_timeout =\n"
                                       "    3\n",
                                       "user.conf", &d),
                   0);
  ck_assert_uint_eq(d.n, 0);
  const struct config_entry *e = config_entry(c, "aio", "log_level");
  ck_assert_str_eq(e->value, "info");
  ck_assert_str_eq(e->file, "<built-in>");
  e = config_entry(c, "aio", "timeout");
  ck_assert_str_eq(e->value, "7");
  ck_assert_str_eq(e->file, "<module m defaults>");
  ck_assert_int_eq(e->line, 2);
  e = config_entry(c, "aio", "graceful_timeout");
  ck_assert_str_eq(e->value, "3");
  ck_assert_str_eq(e->file, "user.conf");
  ck_assert_int_eq(config_entry_line(e, 0), 3);
  ck_assert_uint_eq(e->nlines, 1);
  ck_assert_str_eq(config_get(c, "m", "greeting"), "hi");
  /* The same key in two layers is an override, in one layer a mistake. */
  ck_assert_int_eq(config_parse_string(c, "[aio]\nworkers = 1\nworkers = 2\n",
                                       "again.conf", &d),
                   -1);
  ck_assert_uint_eq(d.n, 1);
  ck_assert_ptr_nonnull(strstr(d.msgs[0], "again.conf:3: duplicate key"));
  config_free(c);
  diag_close(&d);
}
END_TEST

/* ---- errors in config.c -------------------------------------------------- */

START_TEST(test_syntax_errors_name_line) {
  struct diag d;
  struct config *c = parse("[aio]\nworkers = 1\nthis is not ini\n[broken\n"
                           "x = 1\nx = 2\n",
                           &d);
  ck_assert_int_eq(d.n, 3);
  ck_assert_ptr_nonnull(strstr(d.msgs[0], "t.conf:3:"));
  ck_assert_ptr_nonnull(strstr(d.msgs[1], "t.conf:4:"));
  ck_assert_ptr_nonnull(strstr(d.msgs[2], "t.conf:6: duplicate key"));
  config_free(c);
  diag_close(&d);
}
END_TEST

START_TEST(test_error_duplicate_key) {
  expect_parse_error("[a]\nk = 1\nother = 2\n\nk = 3\n", 5,
                     "duplicate key 'k' in [a] (first set at line 2)");
}
END_TEST

START_TEST(test_error_key_outside_section) {
  expect_parse_error("; nothing yet\nworkers = 4\n", 2,
                     "'workers' is outside any [section]");
}
END_TEST

START_TEST(test_error_missing_bracket) {
  expect_parse_error("[aio]\nworkers = 1\n[server:web\n", 3,
                     "section header has no closing ']'");
  /* inih takes "; x]" for a comment: the ']' inside it does not count. */
  expect_parse_error("[server ; x]\n", 1, "no closing ']'");
}
END_TEST

START_TEST(test_error_empty_section_name) {
  expect_parse_error("[]\n", 1, "empty section name");
  expect_parse_error("[aio]\n[ \t ]\n", 2, "empty section name");
}
END_TEST

START_TEST(test_error_text_after_header) {
  /* inih would drop "port = 80" silently. The section still opens, so its
   * entries are not misfiled and there is one problem only. */
  struct diag d;
  struct config *c = parse("[server:web] port = 80\nprotocol = aio.echo\n", &d);
  ASSERT_ONE(&d, 1, "unexpected text after ']'");
  ck_assert_str_eq(config_get(c, "server:web", "protocol"), "aio.echo");
  config_free(c);
  diag_close(&d);
  c = parse("[aio] ; a comment\n[b]   # another\n", &d);
  ck_assert_uint_eq(d.n, 0);
  config_free(c);
  diag_close(&d);
}
END_TEST

START_TEST(test_error_not_an_entry) {
  expect_parse_error("[aio]\nworkers 4\n", 2,
                     "expected 'key = value', a [section] or a comment");
  /* An inline comment hides the '=' from inih: say so at that line rather
   * than leave inih's bare "syntax error". */
  expect_parse_error("[aio]\nworkers ; = 4\n", 2, "expected 'key = value'");
  expect_parse_error("[aio]\n= 4\n", 2, "entry has an empty key");
  expect_parse_error("[aio]\n: 4\n", 2, "entry has an empty key");
}
END_TEST

START_TEST(test_error_overlong_line) {
  /* CONFIG_MAX_LINE - 1 characters fit; one more does not. */
  char text[1024];
  for (int extra = 0; extra < 2; extra++) {
    int len = CONFIG_MAX_LINE - 1 + extra;
    int n = snprintf(text, sizeof(text), "[a]\nk = ");
    memset(text + n, 'v', (size_t)(len - 4));
    n += len - 4;
    snprintf(text + n, sizeof(text) - (size_t)n, "\nj = 1\n");
    struct diag d;
    struct config *c = parse(text, &d);
    if (extra == 0) {
      ck_assert_uint_eq(d.n, 0);
      ck_assert_uint_eq(strlen(config_get(c, "a", "k")), (size_t)len - 4);
    } else {
      ASSERT_ONE(&d, 2, "line is longer than 199 characters");
      ck_assert_ptr_null(config_get(c, "a", "k"));
    }
    /* The rest of the long line is eaten, not read as a line of its own. */
    ck_assert_str_eq(config_get(c, "a", "j"), "1");
    ck_assert_int_eq(config_entry(c, "a", "j")->line, 3);
    config_free(c);
    diag_close(&d);
  }
  /* The same at the end of the input, with no newline. */
  int n = snprintf(text, sizeof(text), "[a]\nk = ");
  memset(text + n, 'v', 500);
  text[n + 500] = '\0';
  expect_parse_error(text, 2, "longer than 199");
}
END_TEST

START_TEST(test_error_control_character) {
  expect_parse_error("[a]\nk = one\x1b[2Jtwo\n", 2, "control character 0x1b");
  expect_parse_error("[a]\nk = one\rtwo\n", 2, "control character 0x0d");
  expect_parse_error("[a]\n\x7f\x01\x02\n", 2, "control character 0x7f");
  /* CR LF line ends and tabs are text. */
  struct config *c = parse_ok("[a]\r\nk =\tone\r\n");
  ck_assert_str_eq(config_get(c, "a", "k"), "one");
  config_free(c);
}
END_TEST

/* Write len bytes to a new temporary file; returns its path (static). */
static const char *temp_file(const char *data, size_t len) {
  static char path[64];
  snprintf(path, sizeof(path), "/tmp/aio-conf-XXXXXX");
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, data, len), (ssize_t)len);
  close(fd);
  return path;
}

START_TEST(test_error_nul_byte) {
  static const char data[] = "[aio]\nworkers = 1\nlog_level = in\0fo\n"
                             "timeout = 3\n";
  const char *path = temp_file(data, sizeof(data) - 1);
  struct config *c = config_new();
  struct diag d;
  diag_init(&d);
  ck_assert_int_eq(config_parse_file(c, path, &d), -1);
  ck_assert_uint_eq(d.n, 1);
  char want[128];
  snprintf(want, sizeof(want), "%s:3: line contains a NUL byte", path);
  ck_assert_str_eq(d.msgs[0], want);
  ck_assert_ptr_null(config_get(c, "aio", "log_level"));
  ck_assert_str_eq(config_get(c, "aio", "timeout"), "3");
  ck_assert_str_eq(c->path, path);
  config_free(c);
  diag_close(&d);
  unlink(path);
}
END_TEST

START_TEST(test_error_unreadable_file) {
  struct config *c = config_new();
  struct diag d;
  diag_init(&d);
  ck_assert_int_eq(config_parse_file(c, "/nonexistent/aio.conf", &d), -1);
  ck_assert_uint_eq(d.n, 1);
  ck_assert_str_eq(d.msgs[0], "/nonexistent/aio.conf: cannot open: No such "
                              "file or directory");
  ck_assert_int_eq(config_parse_file(c, "/tmp", &d), -1);
  ck_assert_str_eq(d.msgs[1], "/tmp: not a regular file");
  config_free(c);
  diag_close(&d);
}
END_TEST

START_TEST(test_error_file_too_large) {
  const char *path = temp_file("[a]\nk = v\n", 10);
  ck_assert_int_eq(truncate(path, CONFIG_MAX_FILE), 0); /* sparse, NULs */
  struct config *c = config_new();
  struct diag d;
  diag_init(&d);
  /* At the limit it is read (and its NUL bytes refused)... */
  ck_assert_int_eq(config_parse_file(c, path, &d), -1);
  ck_assert_ptr_nonnull(strstr(d.msgs[0], "NUL byte"));
  config_free(c);
  diag_close(&d);
  /* ...one byte more is not read at all. */
  ck_assert_int_eq(truncate(path, CONFIG_MAX_FILE + 1), 0);
  c = config_new();
  diag_init(&d);
  ck_assert_int_eq(config_parse_file(c, path, &d), -1);
  ck_assert_uint_eq(d.n, 1);
  char want[256];
  snprintf(want, sizeof(want),
           "%s: larger than 8 MiB (8388609 bytes; 8388608 is the limit of "
           "a configuration file)",
           path);
  ck_assert_str_eq(d.msgs[0], want);
  config_free(c);
  diag_close(&d);
  unlink(path);
}
END_TEST

START_TEST(test_file_records_path_and_dir) {
  const char *text = "[aio]\nworkers = 2\n";
  const char *path = temp_file(text, strlen(text));
  struct config *c = config_new();
  struct diag d;
  diag_init(&d);
  ck_assert_int_eq(config_parse_file(c, path, &d), 0);
  ck_assert_str_eq(c->path, path);
  ck_assert_str_eq(c->dir, "/tmp");
  ck_assert_str_eq(config_entry(c, "aio", "workers")->file, path);
  config_free(c);
  diag_close(&d);
  unlink(path);
}
END_TEST

/* ---- settings: good input ------------------------------------------------ */

START_TEST(test_settings_values) {
  struct settings s;
  struct diag d;
  struct config *c;
  int rc = load_keep("[aio]\n"
                     "modules = one, two\n"
                     "    three\n"
                     "workers = 3\n"
                     "timeout = 2.5\n"
                     "log_level = warn\n"
                     "[server:tcp]\n"
                     "protocol = aio.echo\n"
                     "address = *\n"
                     "port = 7000\n"
                     "[server:udp]\n"
                     "factory = m.make\n"
                     "type = UDP\n"
                     "address = ::1\n"
                     "port = 7000\n"
                     "[server:sock]\n"
                     "protocol = aio.echo\n"
                     "path = /tmp/x.sock\n"
                     "[schedule:a]\n"
                     "every = 0.5\n"
                     "func = m.job\n"
                     "cb = m.done\n"
                     "overlap = yes\n"
                     "timeout = 1.5\n"
                     "[schedule:b]\n"
                     "cron = */5 * * * mon-fri\n"
                     "func = m.job\n"
                     "[listen:x]\n"
                     "sig = m.one\n"
                     "    m.two broadcast\n"
                     "[aio:commands]\n"
                     "hello = m.hello\n",
                     &s, &d, &c);
  if (rc)
    dump_diag(&d);
  ck_assert_int_eq(rc, 0);
  ck_assert_int_eq(s.workers, 3);
  ck_assert(s.timeout == 2.5);
  ck_assert(s.graceful_timeout == 30); /* built-in default */
  ck_assert_int_eq(s.log_level, AIO_LOG_WARN);
  ck_assert_uint_eq(s.nmodules, 3);
  ck_assert_str_eq(s.modules[0], "one");
  ck_assert_str_eq(s.modules[2], "three");
  ck_assert_str_eq(s.modules_file, "t.conf");
  ck_assert_int_eq(s.module_lines[0], 2);
  ck_assert_int_eq(s.module_lines[1], 2);
  ck_assert_int_eq(s.module_lines[2], 3);
  ck_assert_uint_eq(s.nservers, 3);
  ck_assert_int_eq(s.servers[0].type, SERVER_TCP);
  ck_assert_str_eq(s.servers[0].address, "");
  ck_assert_int_eq(s.servers[0].line, 7);
  ck_assert_int_eq(s.servers[1].type, SERVER_UDP);
  ck_assert_int_eq(s.servers[1].is_factory, 1);
  ck_assert_str_eq(s.servers[1].handler.module, "m");
  ck_assert_str_eq(s.servers[1].handler.symbol, "make");
  ck_assert_int_eq(s.servers[1].handler.line, 12);
  ck_assert_int_eq(s.servers[2].type, SERVER_UNIX);
  ck_assert_str_eq(s.servers[2].path, "/tmp/x.sock");
  ck_assert_uint_eq(s.nschedules, 2);
  ck_assert(s.schedules[0].every == 0.5);
  ck_assert_int_eq(s.schedules[0].has_cb, 1);
  ck_assert_int_eq(s.schedules[0].overlap, 1);
  ck_assert(s.schedules[0].timeout == 1.5);
  ck_assert(s.schedules[1].timeout == 0); /* none by default */
  ck_assert_str_eq(s.schedules[1].cron, "*/5 * * * mon-fri");
  ck_assert_uint_eq(s.nlisteners, 2);
  ck_assert_int_eq(s.listeners[0].broadcast, 0);
  ck_assert_int_eq(s.listeners[1].broadcast, 1);
  ck_assert_str_eq(s.listeners[1].fn.text, "m.two");
  ck_assert_int_eq(s.listeners[1].fn.line, 30);
  ck_assert_uint_eq(s.ncommands, 1);
  ck_assert_str_eq(s.commands[0].fn.file, "t.conf");
  settings_close(&s);
  config_free(c);
  diag_close(&d);
}
END_TEST

/* ---- settings: every error with its line --------------------------------- */

START_TEST(test_error_bad_port) {
  expect_settings_error("[server:web]\nprotocol = aio.echo\nport = 70000\n", 3,
                        "[server:web] port: expected a whole number between "
                        "0 and 65535");
  expect_settings_error("[server:web]\nprotocol = aio.echo\nport = http\n", 3,
                        "port: expected a whole number");
  expect_settings_error("[server:web]\nprotocol = aio.echo\nport = -1\n", 3,
                        "port: expected a whole number");
  expect_settings_error("[server:web]\nprotocol = aio.echo\nport = 80x\n", 3,
                        "port: expected a whole number");
}
END_TEST

/* Seconds take the duration units of aio_config_duration(), bytes the
 * binary units; the recycling keys default to off. */
START_TEST(test_seconds_and_bytes_take_units) {
  struct settings s;
  struct diag d;
  ck_assert_int_eq(load("[aio]\n", &s, &d), 0);
  ck_assert_int_eq(s.max_requests, 0);
  ck_assert(s.max_lifetime == 0);
  ck_assert_uint_eq(s.max_memory, 0);
  ck_assert_int_eq(s.recycle_concurrency, 1);
  settings_close(&s);
  diag_close(&d);
  ck_assert_int_eq(load("[aio]\nmax_lifetime = 2m\nmax_lifetime_jitter = "
                        "250ms\nmax_memory = 256M\ngraceful_timeout = 1h\n",
                        &s, &d),
                   0);
  ck_assert(s.max_lifetime == 120);
  ck_assert(s.max_lifetime_jitter == 0.25);
  ck_assert_uint_eq(s.max_memory, 256u << 20);
  ck_assert(s.graceful_timeout == 3600);
  settings_close(&s);
  diag_close(&d);
  expect_settings_error("[aio]\nmax_memory = lots\n", 2,
                        "[aio] max_memory: expected bytes between 0 and");
  expect_settings_error("[aio]\nmax_lifetime = 3 fortnights\n", 2,
                        "[aio] max_lifetime: expected a number of seconds");
  expect_settings_error("[aio]\ntimeout = 2d\n", 2,
                        "[aio] timeout: expected a number of seconds between "
                        "0 and 86400");
}
END_TEST

START_TEST(test_error_bad_number) {
  expect_settings_error("[aio]\nworkers = many\n", 2,
                        "[aio] workers: expected a whole number between 1 "
                        "and 1024, or auto");
  /* No worker serves nothing: the same rule as aio scale and TTOU. */
  expect_settings_error("[aio]\nworkers = 0\n", 2,
                        "[aio] workers: expected a whole number between 1 "
                        "and 1024, or auto");
  expect_settings_error("[aio]\nworkers = 1025\n", 2, "between 1 and 1024");
  expect_settings_error("[aio]\n\ntimeout = soon\n", 3,
                        "[aio] timeout: expected a number of seconds");
  expect_settings_error("[aio]\ngraceful_timeout = nan\n", 2,
                        "graceful_timeout: expected a number of seconds");
  expect_settings_error("[aio]\nwrite_limit = 10\n", 2,
                        "write_limit: expected a whole number between 4096");
  expect_settings_error("[schedule:x]\nfunc = m.f\nevery = 0\n", 3,
                        "[schedule:x] every: expected a number of seconds");
  expect_settings_error("[schedule:x]\nfunc = m.f\nevery = 1\ntimeout = -1\n",
                        4, "[schedule:x] timeout:");
  expect_settings_error("[aio]\nlog_level = loud\n", 2,
                        "[aio] log_level: expected debug, info, warn or "
                        "error");
  expect_settings_error("[aio]\ncpu_affinity = 0-3\n", 2,
                        "[aio] cpu_affinity: expected off or auto");
}
END_TEST

START_TEST(test_error_bad_bool) {
  expect_settings_error("[schedule:x]\nfunc = m.f\nevery = 1\n"
                        "overlap = maybe\n",
                        4,
                        "[schedule:x] overlap: expected yes/no, true/false, "
                        "on/off or 1/0");
}
END_TEST

START_TEST(test_error_protocol_and_factory) {
  expect_settings_error("[server:web]\nprotocol = aio.echo\n"
                        "factory = m.make\nport = 1\n",
                        3,
                        "[server:web] factory: a server has a protocol or a "
                        "factory, not both");
}
END_TEST

START_TEST(test_error_missing_protocol) {
  expect_settings_error("[aio]\n\n[server:web]\nport = 1\n", 3,
                        "[server:web] needs 'protocol = module.symbol' or "
                        "'factory = module.symbol'");
}
END_TEST

START_TEST(test_error_missing_protocol_after_other_error) {
  /* An error in an earlier section must not hide this one. */
  struct settings s;
  struct diag d;
  ck_assert_int_eq(load("[aio]\nworkers = x\n[server:web]\nport = 1\n", &s, &d),
                   -1);
  ck_assert_uint_eq(d.n, 2);
  ck_assert(has_diag(&d, 2, "workers"));
  ck_assert(has_diag(&d, 3, "needs 'protocol = module.symbol'"));
  settings_close(&s);
  diag_close(&d);
}
END_TEST

START_TEST(test_error_missing_port) {
  expect_settings_error("[server:web]\nprotocol = aio.echo\n", 1,
                        "[server:web] needs a 'port'");
  expect_settings_error("[server:web]\nprotocol = aio.echo\nport =\n", 1,
                        "needs a 'port'");
}
END_TEST

START_TEST(test_error_unix_path_too_long) {
  char text[512];
  char longpath[120];
  memset(longpath, 'p', sizeof(longpath) - 1);
  longpath[0] = '/';
  longpath[sizeof(longpath) - 1] = '\0';
  snprintf(text, sizeof(text), "[server:s]\nprotocol = aio.echo\npath = %s\n",
           longpath);
  expect_settings_error(text, 3,
                        "[server:s] path: longer than a unix socket path may "
                        "be (107 bytes)");
}
END_TEST

START_TEST(test_error_unix_and_inet_mixups) {
  expect_settings_error("[server:s]\nprotocol = aio.echo\npath = /tmp/s\n"
                        "port = 1\n",
                        4, "a unix server has a path, not a port");
  expect_settings_error("[server:s]\nprotocol = aio.echo\ntype = unix\n", 1,
                        "path: a unix server needs 'path = /some/socket'");
  expect_settings_error("[server:s]\nprotocol = aio.echo\ntype = udp\n"
                        "port = 1\npath = /tmp/s\n",
                        5, "'path' is for unix servers; this one is udp");
  expect_settings_error("[server:s]\nprotocol = aio.echo\nport = 1\n"
                        "type = sctp\n",
                        4, "type: expected tcp, udp or unix, not 'sctp'");
}
END_TEST

START_TEST(test_error_bad_address) {
  expect_settings_error("[server:web]\nprotocol = aio.echo\nport = 1\n"
                        "address = 300.1.1.1\n",
                        4,
                        "[server:web] address: '300.1.1.1' is not an IPv4 or "
                        "IPv6 address");
  expect_settings_error("[server:web]\nprotocol = aio.echo\nport = 1\n"
                        "address = localhost\n",
                        4, "'localhost' is not an IPv4 or IPv6 address");
}
END_TEST

START_TEST(test_error_same_address_twice) {
  expect_settings_error("[server:a]\nprotocol = aio.echo\nport = 9\n"
                        "[server:b]\nprotocol = aio.echo\nport = 9\n",
                        4,
                        "[server:b] uses the same address as [server:a] "
                        "(line 1)");
}
END_TEST

START_TEST(test_error_bad_reference) {
  static const char *const bad[] = {"echo", "aio.", ".echo", "a b.c",
                                    "dir/m.f"};
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    char text[256], want[128];
    snprintf(text, sizeof(text), "[server:web]\nport = 1\nprotocol = %s\n",
             bad[i]);
    snprintf(want, sizeof(want),
             "'%s' is not a module.symbol reference (e.g. aio.echo)", bad[i]);
    expect_settings_error(text, 3, want);
  }
  expect_settings_error("[schedule:x]\nevery = 1\nfunc = m.f\ncb = nodot\n", 4,
                        "'nodot' is not a module.symbol reference");
  expect_settings_error("[aio:commands]\nhi = nodot\n", 2,
                        "'nodot' is not a module.symbol reference");
}
END_TEST

START_TEST(test_error_schedule_without_timing) {
  expect_settings_error("[aio]\n[schedule:tick]\nfunc = m.f\n", 2,
                        "[schedule:tick] needs 'every = SECONDS' or 'cron = "
                        "M H DOM MON DOW'");
  expect_settings_error("[schedule:tick]\nevery = 1\n", 1,
                        "[schedule:tick] needs 'func = module.symbol'");
  expect_settings_error("[schedule:tick]\nfunc = m.f\nevery = 1\n"
                        "cron = * * * * *\n",
                        4, "a schedule has 'every' or 'cron', not both");
}
END_TEST

/* The parsers behind the typed getters of the plugin API. */
START_TEST(test_util_parse_bool_duration_size) {
  int b = -1;
  ck_assert_int_eq(util_parse_bool(" Yes ", &b), 0);
  ck_assert_int_eq(b, 1);
  ck_assert_int_eq(util_parse_bool("off", &b), 0);
  ck_assert_int_eq(b, 0);
  ck_assert_int_eq(util_parse_bool("maybe", &b), -1);
  ck_assert_int_eq(util_parse_bool("", &b), -1);
  double d = 0;
  ck_assert_int_eq(util_parse_duration("1.5", &d), 0);
  ck_assert_double_eq(d, 1.5);
  ck_assert_int_eq(util_parse_duration("250ms", &d), 0);
  ck_assert_double_eq_tol(d, 0.25, 1e-12);
  ck_assert_int_eq(util_parse_duration("2 m", &d), 0);
  ck_assert_double_eq(d, 120);
  ck_assert_int_eq(util_parse_duration("1d", &d), 0);
  ck_assert_double_eq(d, 86400);
  ck_assert_int_eq(util_parse_duration("-1", &d), -1);
  ck_assert_int_eq(util_parse_duration("3 fortnights", &d), -1);
  ck_assert_int_eq(util_parse_duration("5sec", &d), -1);
  unsigned long long z = 0;
  ck_assert_int_eq(util_parse_size("4096", &z), 0);
  ck_assert_uint_eq(z, 4096);
  ck_assert_int_eq(util_parse_size("64K", &z), 0);
  ck_assert_uint_eq(z, 65536);
  ck_assert_int_eq(util_parse_size("256MiB", &z), 0);
  ck_assert_uint_eq(z, 256ull << 20);
  ck_assert_int_eq(util_parse_size("1.5 kb", &z), 0);
  ck_assert_uint_eq(z, 1536);
  ck_assert_int_eq(util_parse_size("2T", &z), 0);
  ck_assert_uint_eq(z, 2ull << 40);
  ck_assert_int_eq(util_parse_size("10b", &z), 0);
  ck_assert_uint_eq(z, 10);
  ck_assert_int_eq(util_parse_size("0.3", &z), -1);
  ck_assert_int_eq(util_parse_size("12Q", &z), -1);
  ck_assert_int_eq(util_parse_size("16777216T", &z), -1); /* 2^64 */
  ck_assert_int_eq(util_parse_size("-1", &z), -1);
}
END_TEST

START_TEST(test_error_bad_cron) {
  expect_settings_error("[schedule:t]\nfunc = m.f\ncron = 61 * * * *\n", 3,
                        "[schedule:t] cron: bad minute (0-59) field '61'");
  expect_settings_error("[schedule:t]\nfunc = m.f\ncron = * * *\n", 3,
                        "cron: expected five fields");
  /* Valid fields, but no date has them: refused now rather than leave a
   * schedule that never runs (or a master that searches for it). */
  expect_settings_error("[schedule:t]\nfunc = m.f\ncron = 0 0 30 2 *\n", 3,
                        "cron: '0 0 30 2 *' never matches a date");
}
END_TEST

/* One function named twice for one signal (in two [listen:*] sections, or
 * twice in one) runs once, with a warning at the second; the same
 * function for another signal is another listener. */
START_TEST(test_listener_named_twice_runs_once) {
  struct settings st;
  struct diag d, warn;
  struct config *c;
  ck_assert_int_eq(load_keep("[listen:a]\n"
                             "done = m.on_done\n" /* 2 */
                             "other = m.on_done\n"
                             "[listen:b]\n"
                             "done = m.on_done broadcast\n" /* 5 */
                             "    m.more\n",
                             &st, &d, &c),
                   0);
  ck_assert_uint_eq(d.n, 0);
  ck_assert_uint_eq(st.nlisteners, 3);
  ck_assert_str_eq(st.listeners[0].signal, "done");
  ck_assert_int_eq(st.listeners[0].broadcast, 0);
  ck_assert_str_eq(st.listeners[1].signal, "other");
  ck_assert_str_eq(st.listeners[2].fn.text, "m.more");
  diag_init(&warn);
  settings_warnings(&st, c, &warn);
  ASSERT_ONE(&warn, 5,
             "[listen:b] done: m.on_done is already a listener of 'done' "
             "(t.conf:2); it runs once");
  diag_close(&warn);
  diag_close(&d);
  settings_close(&st);
  config_free(c);
}
END_TEST

/* The Python runner's README maps run and test in [aio:commands]: such a
 * line is ignored with a warning at its line, and the rest of the section
 * still counts. */
START_TEST(test_remap_builtin_command_is_ignored_with_a_warning) {
  static const char *const builtins[] = {"run", "config", "check", "test"};
  for (size_t i = 0; i < sizeof(builtins) / sizeof(builtins[0]); i++) {
    char text[128], want[160];
    snprintf(text, sizeof(text), "[aio/commands]\nok = m.ok\n%s = m.f\n",
             builtins[i]);
    snprintf(want, sizeof(want),
             "[aio:commands] '%s' is ignored: '%s' is a built-in command",
             builtins[i], builtins[i]);
    struct settings st;
    struct diag d, warn;
    struct config *c;
    ck_assert_int_eq(load_keep(text, &st, &d, &c), 0);
    ck_assert_uint_eq(d.n, 0);
    ck_assert_uint_eq(st.ncommands, 1);
    ck_assert_str_eq(st.commands[0].name, "ok");
    diag_init(&warn);
    ck_assert_uint_eq(settings_unknown_keys(c, &warn), 1);
    ASSERT_ONE(&warn, 3, want);
    diag_close(&warn);
    diag_close(&d);
    settings_close(&st);
    config_free(c);
  }
}
END_TEST

START_TEST(test_error_listener_format_on_its_line) {
  /* The bad listener is on a continuation line after a comment and a blank
   * line: the message points at it, not at the entry's first line. */
  expect_settings_error("[listen:x]\n"
                        "sig = m.one\n"
                        "; a comment\n"
                        "\n"
                        "    m.two sometimes\n",
                        5,
                        "[listen:x] sig: expected 'module.function', "
                        "'module.function broadcast', either with 'cluster' "
                        "after it, one per line");
  expect_settings_error("[listen:x]\nsig =\n    nodot\n", 3,
                        "'nodot' is not a module.symbol reference");
}
END_TEST

START_TEST(test_error_module_name_with_slash) {
  expect_settings_error("[aio]\nmodules = good\n    ../evil\n", 3,
                        "[aio] modules: module names have no '/' (put "
                        "directories in module_path): '../evil'");
}
END_TEST

START_TEST(test_error_unnamed_server_and_schedule) {
  expect_settings_error("[server:]\nprotocol = aio.echo\nport = 1\n", 1,
                        "[server:] has no server name");
  expect_settings_error("[aio]\n[schedule/]\nevery = 1\nfunc = m.f\n", 2,
                        "[schedule:] has no schedule name");
}
END_TEST

/* ---- hostile sizes --------------------------------------------------------
 */

/* Generous: the check is against the minutes (and gigabytes) of the
 * quadratic or exponential behaviour, not a benchmark; ASan included. It
 * counts the CPU time of this process, not the wall clock, so a loaded
 * machine does not fail it: linear parsing takes well under a second of
 * CPU here, the quadratic one took minutes. */
#define HOSTILE_CPU_MS 20000

static uint64_t cpu_ms(void) {
  struct timespec ts;
  ck_assert_int_eq(clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts), 0);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Without ASan (which reserves terabytes of address space), a test that
 * would blow up dies of ENOMEM instead of taking the machine with it. */
static void limit_memory(void) {
#if !defined(__SANITIZE_ADDRESS__)
  struct rlimit rl = {.rlim_cur = 512u << 20, .rlim_max = 512u << 20};
  ck_assert_int_eq(setrlimit(RLIMIT_AS, &rl), 0);
#endif
}

/* The interpolation bomb of issue 12: 29 keys, each ${next}${next}, so
 * k0 would be 10 * 2^28 bytes. Returns new text; *cap_line gets the line
 * of the first key whose value passes 64 KiB (k15: 81920 bytes). */
static char *bomb_text(int *cap_line) {
  struct util_buf b = {0};
  util_buf_printf(&b, "[bomb]\n");
  for (int i = 0; i < 28; i++)
    util_buf_printf(&b, "k%d = ${k%d}${k%d}\n", i, i + 1, i + 1);
  util_buf_printf(&b, "k28 = 0123456789\n");
  ck_assert(!b.failed);
  *cap_line = 2 + 15;
  return b.data;
}

START_TEST(test_interpolation_bomb_is_refused_at_the_value_cap) {
  limit_memory();
  int line;
  char *text = bomb_text(&line);
  uint64_t t0 = cpu_ms();
  expect_interp_error(text, line,
                      "[bomb] k15: the interpolated value would be longer "
                      "than 64 KiB");
  ck_assert_uint_lt(cpu_ms() - t0, HOSTILE_CPU_MS);
  free(text);
}
END_TEST

START_TEST(test_interpolation_total_is_capped) {
  /* Each value stays within 64 KiB, but 300 copies of a 64 KiB value
   * would be 19 MB: refused once, past 16 MiB in all. */
  limit_memory();
  struct util_buf b = {0};
  util_buf_printf(&b, "[a]\nb0 = 0123456789abcdef\n");
  for (int i = 1; i <= 12; i++) /* b12: 16 * 2^12 = 65536 bytes, the cap */
    util_buf_printf(&b, "b%d = ${b%d}${b%d}\n", i, i - 1, i - 1);
  util_buf_printf(&b, "[many]\n");
  for (int i = 0; i < 300; i++)
    util_buf_printf(&b, "x%d = ${a:b12}\n", i);
  ck_assert(!b.failed);
  struct config *c = parse_ok(b.data);
  struct diag d;
  diag_init(&d);
  ck_assert_int_eq(config_interpolate(c, &d), -1);
  if (d.n != 1)
    dump_diag(&d);
  ck_assert_uint_eq(d.n, 1);
  ck_assert_msg(strstr(d.msgs[0], "more than 16 MiB") != NULL, "%s", d.msgs[0]);
  /* 16 MiB is 256 copies: the key that passes it is one of the last. */
  int at = 0;
  ck_assert_int_eq(sscanf(d.msgs[0], "t.conf:%d:", &at), 1);
  ck_assert_int_gt(at, 15 + 250);
  ck_assert_int_lt(at, 15 + 260);
  config_free(c);
  diag_close(&d);
  free(b.data);
}
END_TEST

START_TEST(test_value_of_exactly_the_cap_is_kept) {
  /* 64 KiB from continuation lines: a part of 128 bytes, 511 of 127 and
   * the 511 newlines between them. */
  struct util_buf b = {0};
  char part[129];
  memset(part, 'v', sizeof(part) - 1);
  part[sizeof(part) - 1] = '\0';
  util_buf_printf(&b, "[a]\nk = %s\n", part);
  for (int i = 1; i < 512; i++)
    util_buf_printf(&b, "    %s\n", part + 1);
  ck_assert(!b.failed);
  struct config *c = interp_ok(b.data);
  ck_assert_uint_eq(strlen(config_get(c, "a", "k")), 65536);
  config_free(c);
  /* One part more is refused, at the key's line. */
  util_buf_printf(&b, "    w\n");
  expect_parse_error(b.data, 2,
                     "[a] k: the value is longer than 64 KiB (65536 bytes, "
                     "the limit of one value) at line 514");
  free(b.data);
}
END_TEST

/* b's text parsed as t.conf within the deadline. Returns new. */
static struct config *parse_hostile(const struct util_buf *b, struct diag *d) {
  ck_assert(!b->failed);
  uint64_t t0 = cpu_ms();
  struct config *c = parse(b->data, d);
  ck_assert_uint_lt(cpu_ms() - t0, HOSTILE_CPU_MS);
  return c;
}

START_TEST(test_many_sections_parse_in_linear_time) {
  enum { N = 100000 };
  struct util_buf b = {0};
  for (int i = 0; i < N; i++)
    util_buf_printf(&b, "[s%d]\nk = %d\n", i, i);
  /* The first section again: the same section, so a duplicate there. */
  util_buf_printf(&b, "[s0]\nk = again\n");
  struct diag d;
  struct config *c = parse_hostile(&b, &d);
  ASSERT_ONE(&d, 2 * N + 2, "duplicate key 'k' in [s0] (first set at line 2)");
  ck_assert_uint_eq(c->n, N);
  ck_assert_str_eq(c->sections[0].name, "s0");
  ck_assert_str_eq(c->sections[N - 1].name, "s99999");
  ck_assert_str_eq(config_get(c, "s54321", "k"), "54321");
  ck_assert_ptr_null(config_get(c, "s100000", "k"));
  config_free(c);
  diag_close(&d);
  free(b.data);
}
END_TEST

START_TEST(test_many_keys_parse_in_linear_time) {
  enum { N = 100000 };
  struct util_buf b = {0};
  util_buf_printf(&b, "[a]\n");
  for (int i = 0; i < N; i++)
    util_buf_printf(&b, "k%d = %d\n", i, i);
  util_buf_printf(&b, "k5 = again\n");
  struct diag d;
  struct config *c = parse_hostile(&b, &d);
  ASSERT_ONE(&d, N + 2, "duplicate key 'k5' in [a] (first set at line 7)");
  const struct config_section *s = config_section(c, "a");
  ck_assert_uint_eq(s->n, N);
  ck_assert_str_eq(s->entries[0].key, "k0");
  ck_assert_str_eq(s->entries[N - 1].key, "k99999");
  ck_assert_str_eq(config_get(c, "a", "k77777"), "77777");
  /* A lower layer's key replaced by a higher one keeps its place. */
  ck_assert_int_eq(
      config_parse_string(c, "[a]\nk3 = top\nnew = 1\n", "user", &d), 0);
  ck_assert_str_eq(s->entries[3].value, "top");
  ck_assert_str_eq(s->entries[N].key, "new");
  config_free(c);
  diag_close(&d);
  free(b.data);
}
END_TEST

START_TEST(test_many_continuation_lines_parse_in_linear_time) {
  /* A million continuation lines: 1000 keys of 1000 lines, each within
   * the value cap, then one key of a million, refused at the cap. */
  limit_memory();
  struct util_buf b = {0};
  util_buf_printf(&b, "[a]\n");
  for (int k = 0; k < 1000; k++) {
    util_buf_printf(&b, "k%d = first\n", k);
    for (int i = 0; i < 1000; i++)
      util_buf_add(&b, "  x\n", 4);
  }
  ck_assert(!b.failed);
  uint64_t t0 = cpu_ms();
  struct config *c = parse_ok(b.data);
  ck_assert_uint_lt(cpu_ms() - t0, HOSTILE_CPU_MS);
  const struct config_entry *e = config_entry(c, "a", "k999");
  ck_assert_uint_eq(strlen(e->value), 5 + 2 * 1000);
  ck_assert_uint_eq(e->nlines, 1001);
  ck_assert_int_eq(config_entry_line(e, 1000), 1 + 999 * 1001 + 1001);
  config_free(c);

  b.len = 0;
  util_buf_printf(&b, "[a]\nk = first\n");
  for (int i = 0; i < 1000000; i++)
    util_buf_add(&b, "  x\n", 4);
  util_buf_printf(&b, "j = after\n");
  struct diag d;
  c = parse_hostile(&b, &d);
  ASSERT_ONE(&d, 2, "[a] k: the value is longer than 64 KiB");
  ck_assert_int_eq(config_entry(c, "a", "j")->line, 1000003);
  config_free(c);
  diag_close(&d);
  free(b.data);
}
END_TEST

/* load_keep() of b's text within the deadline. Returns its result. */
static int load_hostile(const struct util_buf *b, struct settings *s,
                        struct diag *d, struct config **keep) {
  ck_assert(!b->failed);
  uint64_t t0 = cpu_ms();
  int rc = load_keep(b->data, s, d, keep);
  ck_assert_uint_lt(cpu_ms() - t0, HOSTILE_CPU_MS);
  return rc;
}

START_TEST(test_many_servers_load_in_linear_time) {
  /* Issue 13: every pair of servers was compared for the same address
   * (20 000 took 1.2 s of aio check; 100 000 on one port, here, minutes)
   * and the array grew by one element per server. */
  enum { N = 100000 };
  struct util_buf b = {0};
  for (int i = 0; i < N; i++)
    util_buf_printf(&b,
                    "[server:s%d]\nprotocol = aio.echo\n"
                    "address = 127.%d.%d.%d\nport = 8000\n",
                    i, i >> 16, (i >> 8) & 255, i & 255);
  /* The last one takes the first one's address: one error, at it. */
  util_buf_printf(&b, "[server:again]\nprotocol = aio.echo\n"
                      "address = 127.0.0.0\nport = 8000\n");
  struct settings s;
  struct diag d;
  ck_assert_int_eq(load_hostile(&b, &s, &d, NULL), -1);
  ASSERT_ONE(&d, 4 * N + 1,
             "[server:again] uses the same address as [server:s0] (line 1)");
  ck_assert_uint_eq(s.nservers, N + 1);
  ck_assert_str_eq(s.servers[N - 1].address, "127.1.134.159"); /* 99999 */
  settings_close(&s);
  diag_close(&d);
  free(b.data);
}
END_TEST

START_TEST(test_many_listeners_load_in_linear_time) {
  enum { N = 20000 };
  struct util_buf b = {0};
  /* Each was compared with every listener before it, of any signal. */
  util_buf_printf(&b, "[listen:a]\n");
  for (int i = 0; i < N; i++)
    util_buf_printf(&b, "sig%d = m.f\n", i);
  util_buf_printf(&b, "[listen:b]\nsig7 = m.f\n");
  struct settings s;
  struct diag d, warn;
  struct config *c;
  ck_assert_int_eq(load_hostile(&b, &s, &d, &c), 0);
  ck_assert_uint_eq(s.nlisteners, N);
  diag_init(&warn);
  settings_warnings(&s, c, &warn);
  ASSERT_ONE(&warn, N + 3,
             "[listen:b] sig7: m.f is already a listener of 'sig7' (t.conf:9)");
  diag_close(&warn);
  settings_close(&s);
  config_free(c);
  diag_close(&d);
  free(b.data);
}
END_TEST

/* ---- the key table ------------------------------------------------------- */

static const struct settings_keyset *const keysets[] = {
    &settings_aio_keyset, &settings_server_keyset, &settings_schedule_keyset};

/* A section of ks that is valid without the row `skip` (NULL: all), the
 * header included, and of name: "[aio]", "[server:s]", ... */
static void base_section(struct util_buf *b, const struct settings_keyset *ks,
                         const char *skip) {
  static const char *const server[][2] = {{"protocol", "aio.echo"},
                                          {"port", "1"}};
  static const char *const schedule[][2] = {{"func", "m.f"}, {"every", "1"}};
  if (ks == &settings_aio_keyset) {
    util_buf_printf(b, "[aio]\n");
    return;
  }
  const char *const(*kv)[2] = ks == &settings_server_keyset ? server : schedule;
  util_buf_printf(b, ks == &settings_server_keyset ? "[server:s]\n"
                                                   : "[schedule:s]\n");
  for (size_t i = 0; i < 2; i++)
    if (skip == NULL || strcmp(kv[i][0], skip) != 0)
      util_buf_printf(b, "%s = %s\n", kv[i][0], kv[i][1]);
}

/* The field of k in what s loaded for ks's section. */
static const void *loaded_field(const struct settings *s,
                                const struct settings_keyset *ks,
                                const struct settings_key *k) {
  const void *base = ks == &settings_aio_keyset ? (const void *)s
                     : ks == &settings_server_keyset
                         ? (const void *)s->servers
                         : (const void *)s->schedules;
  return (const char *)base + k->offset;
}

static size_t scalar_size(enum settings_type t) {
  switch (t) {
  case SETTINGS_INT:
  case SETTINGS_BOOL:
  case SETTINGS_ENUM:
    return sizeof(int);
  case SETTINGS_SIZE:
  case SETTINGS_BYTES:
    return sizeof(size_t);
  case SETTINGS_SECONDS:
    return sizeof(double);
  default:
    return 0;
  }
}

/* Every default parses under its own row, and writing it gives what
 * leaving the key out gives. */
START_TEST(test_every_default_parses_under_its_own_rule) {
  size_t checked = 0;
  for (size_t t = 0; t < UTIL_ARRAY_LEN(keysets); t++) {
    const struct settings_keyset *ks = keysets[t];
    for (size_t i = 0; i < ks->n; i++) {
      const struct settings_key *k = &ks->keys[i];
      ck_assert_msg(k->help && *k->help, "%s has no help", k->name);
      if (*k->dflt == '\0')
        continue;
      struct util_buf with = {0}, without = {0};
      base_section(&with, ks, k->name);
      util_buf_printf(&with, "%s = %s\n", k->name, k->dflt);
      base_section(&without, ks, k->name);
      struct settings a, b;
      struct diag d;
      int rc = load(with.data, &a, &d);
      if (rc)
        dump_diag(&d);
      ck_assert_msg(rc == 0, "%s = %s is refused", k->name, k->dflt);
      diag_close(&d);
      ck_assert_int_eq(load(without.data, &b, &d), 0);
      size_t n = scalar_size(k->type);
      if (n)
        ck_assert_msg(
            memcmp(loaded_field(&a, ks, k), loaded_field(&b, ks, k), n) == 0,
            "%s: the default written is not the default", k->name);
      settings_close(&a);
      settings_close(&b);
      diag_close(&d);
      free(with.data);
      free(without.data);
      checked++;
    }
  }
  ck_assert_uint_ge(checked, 10);
}
END_TEST

/* A number past a row's range gives the message every key of its type
 * gives, at the key's line. */
START_TEST(test_out_of_range_values_give_the_existing_messages) {
  size_t checked = 0;
  for (size_t t = 0; t < UTIL_ARRAY_LEN(keysets); t++) {
    const struct settings_keyset *ks = keysets[t];
    for (size_t i = 0; i < ks->n; i++) {
      const struct settings_key *k = &ks->keys[i];
      char want[256];
      const char *sec = ks == &settings_aio_keyset      ? "aio"
                        : ks == &settings_server_keyset ? "server:s"
                                                        : "schedule:s";
      if (k->type == SETTINGS_INT || k->type == SETTINGS_SIZE)
        snprintf(want, sizeof(want),
                 "[%s] %s: expected a whole number between %ld and %ld", sec,
                 k->name, (long)k->min, (long)k->max);
      else if (k->type == SETTINGS_SECONDS)
        snprintf(want, sizeof(want),
                 "[%s] %s: expected a number of seconds between %g and %g", sec,
                 k->name, k->min, k->max);
      else if (k->type == SETTINGS_BYTES)
        snprintf(want, sizeof(want),
                 "[%s] %s: expected bytes between %.0f and %.0f", sec, k->name,
                 k->min, k->max);
      else
        continue;
      for (int side = 0; side < 2; side++) {
        struct util_buf b = {0};
        base_section(&b, ks, k->name);
        int line = 1;
        for (const char *p = b.data; *p; p++)
          line += *p == '\n';
        util_buf_printf(&b, "%s = %.17g\n", k->name,
                        side ? k->max + 1 : k->min - 1);
        expect_settings_error(b.data, line, want);
        free(b.data);
      }
      checked++;
    }
  }
  ck_assert_uint_ge(checked, 9);
}
END_TEST

/* The built-in layer is the [aio] rows in order, each with its default:
 * `aio config` prints it, in the order it always had. */
START_TEST(test_builtin_layer_is_the_aio_rows) {
  const char *text = settings_builtin_defaults();
  struct util_buf want = {0};
  util_buf_printf(&want, "[aio]\n");
  for (size_t i = 0; i < settings_aio_keyset.n; i++) {
    const struct settings_key *k = &settings_aio_keyset.keys[i];
    util_buf_printf(&want, "%s =%s%s\n", k->name, *k->dflt ? " " : "", k->dflt);
  }
  ck_assert_str_eq(text, want.data);
  free(want.data);
  static const char *const before[] = {"modules =\n",
                                       "module_path =\n",
                                       "workers = auto\n",
                                       "timeout = 30\n",
                                       "graceful_timeout = 30\n",
                                       "log_level = info\n",
                                       "log_file =\n",
                                       "pidfile =\n",
                                       "control =\n",
                                       "user =\n",
                                       "group =\n",
                                       "max_restarts = 5\n",
                                       "restart_window = 60\n",
                                       "max_connections = 10000\n",
                                       "write_limit = 4194304\n"};
  const char *p = text;
  for (size_t i = 0; i < UTIL_ARRAY_LEN(before); i++) {
    const char *at = strstr(p, before[i]);
    ck_assert_msg(at && (at == text || at[-1] == '\n'),
                  "'%s' missing or out of order in:\n%s", before[i], text);
    p = at + strlen(before[i]);
  }
  struct config *c = parse_ok(text);
  ck_assert_str_eq(config_get(c, "aio", "workers"), "auto");
  config_free(c);
}
END_TEST

/* Load text, which must load, and its warnings into warn: n of them
 * (all printed when not). close_warnings frees what it made. */
static void load_warnings(const char *text, struct settings *s,
                          struct config **c, struct diag *d, struct diag *warn,
                          size_t n) {
  int rc = load_keep(text, s, d, c);
  if (rc)
    dump_diag(d);
  ck_assert_int_eq(rc, 0);
  diag_init(warn);
  settings_warnings(s, *c, warn);
  if (warn->n != n)
    dump_diag(warn);
  ck_assert_uint_eq(warn->n, n);
}

static void close_warnings(struct settings *s, struct config *c, struct diag *d,
                           struct diag *warn) {
  diag_close(warn);
  settings_close(s);
  config_free(c);
  diag_close(d);
}

/* Issue 15: `cluster` after a listener makes it the cluster's; without
 * [aio] cluster it is a warning at its line, and a local listener. */
START_TEST(test_cluster_listeners) {
  struct settings s;
  struct config *c;
  struct diag d, warn;
  load_warnings("[aio]\ncluster = redis://127.0.0.1:6390\n"
                "[listen:x]\n"
                "a = m.one cluster\n"
                "    m.two broadcast cluster\n"
                "    m.three broadcast\n"
                "    m.four\n",
                &s, &c, &d, &warn, 0);
  ck_assert_uint_eq(s.nlisteners, 4);
  int want[4][2] = {{0, 1}, {1, 1}, {1, 0}, {0, 0}};
  for (int i = 0; i < 4; i++) {
    ck_assert_int_eq(s.listeners[i].broadcast, want[i][0]);
    ck_assert_int_eq(s.listeners[i].cluster, want[i][1]);
  }
  ck_assert_uint_eq(s.cluster_queue, 10000);
  ck_assert_int_eq(s.cluster_max_deliveries, 5);
  ck_assert(s.cluster_claim_timeout == 30);
  close_warnings(&s, c, &d, &warn);

  load_warnings("[listen:x]\na = m.one cluster\n", &s, &c, &d, &warn, 1);
  ck_assert(has_diag(&warn, 2, "'cluster', but [aio] cluster is not set"));
  ck_assert_int_eq(s.listeners[0].cluster, 0);
  close_warnings(&s, c, &d, &warn);

  expect_settings_error("[aio]\ncluster = redis://127.0.0.1:6390\n"
                        "[listen:x]\na = m.one cluster broadcast\n",
                        4, "expected 'module.function'");
}
END_TEST

/* Issue 13: "adress = 127.0.0.1" bound all interfaces in silence. */
START_TEST(test_unknown_keys_in_server_and_schedule_sections_warn) {
  static const char text[] = "[server/web]\n"        /* 1 */
                             "protocol = aio.echo\n" /* 2 */
                             "adress = 127.0.0.1\n"  /* 3 */
                             "port = 9000\n"         /* 4 */
                             "backlog = 10\n"        /* 5 */
                             "[schedule:tick]\n"     /* 6 */
                             "func = m.f\n"          /* 7 */
                             "ofset = 5\n"           /* 8 */
                             "every = 1\n"           /* 9 */
                             "frobnicate = blue\n"   /* 10 */
                             "[listen:x]\n"          /* 11 */
                             "adress = m.f\n"        /* 12: a signal */
                             "[aio:commands]\n"      /* 13 */
                             "evry = m.f\n"          /* 14: a command */
                             "[mymod]\n"             /* 15 */
                             "adress = 1\n"          /* 16: a module's */
                             "[aio]\n"               /* 17 */
                             "graceful = 3\n";       /* 18 */
  struct settings s;
  struct diag d, warn;
  struct config *c;
  load_warnings(text, &s, &c, &d, &warn, 4);
  ck_assert(has_diag(&warn, 3,
                     "unknown key 'adress' in [server:web] is ignored; did "
                     "you mean 'address'?"));
  ck_assert(has_diag(&warn, 8,
                     "unknown key 'ofset' in [schedule:tick] is ignored; did "
                     "you mean 'offset'?"));
  ck_assert(has_diag(&warn, 10,
                     "unknown key 'frobnicate' in [schedule:tick] "
                     "is ignored"));
  ck_assert(!has_diag(&warn, 10, "did you mean"));
  ck_assert(has_diag(&warn, 18,
                     "unknown key 'graceful' in [aio] is ignored; did you "
                     "mean 'graceful_timeout'?"));
  /* The typo is ignored, as the warning says: all interfaces. */
  ck_assert_str_eq(s.servers[0].address, "");
  close_warnings(&s, c, &d, &warn);
}
END_TEST

/* A factory's server section holds keys of the factory's own (read with
 * aio_config_get): only a likely typo of aio's warns there; and its
 * timeouts apply to what it serves with aio_server_serve(). */
START_TEST(test_a_factory_s_own_keys_do_not_warn) {
  static const char text[] = "[server:web]\n"       /* 1 */
                             "factory = m.make\n"   /* 2 */
                             "port = 9000\n"        /* 3 */
                             "greeting = hello\n"   /* 4 */
                             "adress = 127.0.0.1\n" /* 5 */
                             "idle_timeout = 2\n"   /* 6 */
                             "[server:udp]\n"       /* 7 */
                             "protocol = m.p\n"     /* 8 */
                             "type = udp\n"         /* 9 */
                             "port = 9001\n"        /* 10 */
                             "greeting = hello\n";  /* 11 */
  struct settings s;
  struct diag d, warn;
  struct config *c;
  load_warnings(text, &s, &c, &d, &warn, 2);
  ck_assert(s.servers[0].idle_timeout == 2);
  ck_assert(has_diag(&warn, 5, "did you mean 'address'?"));
  ck_assert(has_diag(&warn, 11, "unknown key 'greeting' in [server:udp]"));
  close_warnings(&s, c, &d, &warn);
}
END_TEST

/* Every row of every table is a known key: none of them warns. */
START_TEST(test_known_keys_do_not_warn) {
  struct util_buf b = {0};
  for (size_t t = 0; t < UTIL_ARRAY_LEN(keysets); t++) {
    const struct settings_keyset *ks = keysets[t];
    util_buf_printf(&b, ks == &settings_aio_keyset      ? "[aio]\n"
                        : ks == &settings_server_keyset ? "[server:s]\n"
                                                        : "[schedule/s]\n");
    for (size_t i = 0; i < ks->n; i++)
      util_buf_printf(&b, "%s = x\n", ks->keys[i].name);
  }
  struct config *c = parse_ok(b.data);
  struct diag warn;
  diag_init(&warn);
  size_t n = settings_unknown_keys(c, &warn);
  if (n)
    dump_diag(&warn);
  ck_assert_uint_eq(n, 0);
  ck_assert_uint_eq(warn.n, 0);
  diag_close(&warn);
  config_free(c);
  free(b.data);
}
END_TEST

/* The part of docs/operations.md from heading to the next "## " or "### "
 * heading. Returns new. */
static char *doc_part(const char *heading) {
  char *doc =
      util_read_file(AIO_SOURCE_DIR "/docs/operations.md", 1 << 20, NULL);
  ck_assert_ptr_nonnull(doc);
  char *at = strstr(doc, heading);
  ck_assert_msg(at != NULL, "docs/operations.md has no '%s'", heading);
  char *end = at + strlen(heading);
  while ((end = strstr(end, "\n#")) && strncmp(end, "\n## ", 4) != 0 &&
         strncmp(end, "\n### ", 5) != 0)
    end++;
  char *part = end ? strndup(at, (size_t)(end - at)) : strdup(at);
  free(doc);
  return part;
}

/* docs/operations.md lists every row, with its default and its help, in
 * the table of its section: the docs cannot drift from the code. */
START_TEST(test_every_key_is_documented_with_its_default) {
  static const char *const headings[] = {"### [aio]", "### [server:NAME]",
                                         "### [schedule:NAME]"};
  for (size_t t = 0; t < UTIL_ARRAY_LEN(keysets); t++) {
    const struct settings_keyset *ks = keysets[t];
    char *part = doc_part(headings[t]);
    for (size_t i = 0; i < ks->n; i++) {
      const struct settings_key *k = &ks->keys[i];
      char want[512];
      if (*k->dflt)
        snprintf(want, sizeof(want), "\n| `%s` | `%s` | ", k->name, k->dflt);
      else
        snprintf(want, sizeof(want), "\n| `%s` | | ", k->name);
      const char *row = strstr(part, want);
      const char *eol = row ? strchr(row + 1, '\n') : NULL;
      const char *help = row ? strstr(row, k->help) : NULL;
      ck_assert_msg(row && help && (eol == NULL || help < eol),
                    "docs/operations.md, %s: no row '%sVALUES | %s |'",
                    headings[t], want + 1, k->help);
    }
    free(part);
  }
}
END_TEST

/* ---- writing ------------------------------------------------------------- */

START_TEST(test_write_value_keeps_layout) {
  char path[] = "/tmp/aio-cfg-XXXXXX";
  int fd = mkstemp(path);
  const char *text = "# top comment\n[aio]\nworkers = 2 ; two\n"
                     "modules = a\n    b\n\n[other]\nk = v\n";
  ck_assert_int_eq(write(fd, text, strlen(text)), (int)strlen(text));
  close(fd);
  struct diag d;
  diag_init(&d);
  ck_assert_int_eq(
      config_write_value(path, "aio", "modules", "c", NULL, NULL, &d), 0);
  ck_assert_int_eq(config_write_value(path, "aio", "new", "1", NULL, NULL, &d),
                   0);
  ck_assert_int_eq(
      config_write_value(path, "server/x", "port", "9", NULL, NULL, &d), 0);
  FILE *f = fopen(path, "r");
  char buf[1024];
  size_t n = fread(buf, 1, sizeof(buf) - 1, f);
  buf[n] = '\0';
  fclose(f);
  ck_assert_str_eq(buf, "# top comment\n[aio]\nworkers = 2 ; two\n"
                        "modules = c\nnew = 1\n\n[other]\nk = v\n"
                        "\n[server/x]\nport = 9\n");
  unlink(path);
  diag_close(&d);
}
END_TEST

/* A check that records where it was called and refuses. */
static char checked_tmp[256];
static int refuse_check(const char *tmp, const char *path, void *arg,
                        struct diag *d) {
  snprintf(checked_tmp, sizeof(checked_tmp), "%s", tmp);
  ck_assert_ptr_eq(arg, checked_tmp);
  diag_add(d, path, 1, "refused by the check");
  return -1;
}

START_TEST(test_write_value_refusals_leave_the_file_alone) {
  static const char text[] = "[a]\nk = v\n";
  const char *path = temp_file(text, strlen(text));
  struct diag d;
  diag_init(&d);
  /* An inline comment would cut the value short. */
  ck_assert_int_eq(config_write_value(path, "a", "k", "x ; y", NULL, NULL, &d),
                   -1);
  ck_assert_uint_eq(d.n, 1);
  ck_assert_ptr_nonnull(strstr(d.msgs[0], "'x ; y' would read back as 'x'"));
  /* The caller's check sees the new file beside the old one, and its
   * refusal leaves nothing behind. */
  ck_assert_int_eq(
      config_write_value(path, "a", "k", "w", refuse_check, checked_tmp, &d),
      -1);
  ck_assert_uint_eq(d.n, 2);
  ck_assert_int_eq(strncmp(checked_tmp, "/tmp/.aio-conf-", 15), 0);
  ck_assert_int_eq(access(checked_tmp, F_OK), -1);
  char *now = util_read_file(path, 1 << 20, NULL);
  ck_assert_str_eq(now, text);
  free(now);
  unlink(path);
  diag_close(&d);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("config");
  TCase *tc = tcase_create("reader");
  tcase_add_test(tc, test_search_order_prefers_cwd_then_etc);
  tcase_add_test(tc, test_slash_spelling_is_colon);
  tcase_add_test(tc, test_both_spellings_give_same_settings);
  tcase_add_test(tc, test_spellings_name_one_section);
  tcase_add_test(tc, test_section_name_blanks_are_trimmed);
  tcase_add_test(tc, test_byte_order_mark_is_skipped);
  tcase_add_test(tc, test_comments_and_colon_separator);
  tcase_add_test(tc, test_continuation_lines_join);
  tcase_add_test(tc, test_continuation_parts_keep_their_lines);
  tcase_add_test(tc, test_continuation_of_refused_entry_is_dropped);
  tcase_add_test(tc, test_indented_line_without_entry_is_error);
  tcase_add_test(tc, test_interpolation_resolves);
  tcase_add_test(tc, test_interpolation_chains_and_other_sections);
  tcase_add_test(tc, test_interpolation_sees_every_layer);
  tcase_add_test(tc, test_interpolation_errors_name_line);
  tcase_add_test(tc, test_interpolation_missing_key);
  tcase_add_test(tc, test_interpolation_cycle);
  tcase_add_test(tc, test_interpolation_bad_dollar);
  tcase_add_test(tc, test_interpolation_depth_is_bounded);
  tcase_add_test(tc, test_layers_override);
  tcase_add_test(tc, test_layers_builtin_module_user);
  tcase_add_test(tc, test_syntax_errors_name_line);
  tcase_add_test(tc, test_error_duplicate_key);
  tcase_add_test(tc, test_error_key_outside_section);
  tcase_add_test(tc, test_error_missing_bracket);
  tcase_add_test(tc, test_error_empty_section_name);
  tcase_add_test(tc, test_error_text_after_header);
  tcase_add_test(tc, test_error_not_an_entry);
  tcase_add_test(tc, test_error_overlong_line);
  tcase_add_test(tc, test_error_control_character);
  tcase_add_test(tc, test_error_nul_byte);
  tcase_add_test(tc, test_error_unreadable_file);
  tcase_add_test(tc, test_error_file_too_large);
  tcase_add_test(tc, test_file_records_path_and_dir);
  suite_add_tcase(s, tc);

  tc = tcase_create("settings");
  tcase_add_test(tc, test_settings_values);
  tcase_add_test(tc, test_error_bad_port);
  tcase_add_test(tc, test_error_bad_number);
  tcase_add_test(tc, test_seconds_and_bytes_take_units);
  tcase_add_test(tc, test_error_bad_bool);
  tcase_add_test(tc, test_error_protocol_and_factory);
  tcase_add_test(tc, test_error_missing_protocol);
  tcase_add_test(tc, test_error_missing_protocol_after_other_error);
  tcase_add_test(tc, test_error_missing_port);
  tcase_add_test(tc, test_error_unix_path_too_long);
  tcase_add_test(tc, test_error_unix_and_inet_mixups);
  tcase_add_test(tc, test_error_bad_address);
  tcase_add_test(tc, test_error_same_address_twice);
  tcase_add_test(tc, test_error_bad_reference);
  tcase_add_test(tc, test_error_schedule_without_timing);
  tcase_add_test(tc, test_error_bad_cron);
  tcase_add_test(tc, test_util_parse_bool_duration_size);
  tcase_add_test(tc, test_remap_builtin_command_is_ignored_with_a_warning);
  tcase_add_test(tc, test_listener_named_twice_runs_once);
  tcase_add_test(tc, test_cluster_listeners);
  tcase_add_test(tc, test_error_listener_format_on_its_line);
  tcase_add_test(tc, test_error_module_name_with_slash);
  tcase_add_test(tc, test_error_unnamed_server_and_schedule);
  suite_add_tcase(s, tc);

  tc = tcase_create("hostile");
  tcase_add_test(tc, test_interpolation_bomb_is_refused_at_the_value_cap);
  tcase_add_test(tc, test_interpolation_total_is_capped);
  tcase_add_test(tc, test_value_of_exactly_the_cap_is_kept);
  tcase_add_test(tc, test_many_sections_parse_in_linear_time);
  tcase_add_test(tc, test_many_keys_parse_in_linear_time);
  tcase_add_test(tc, test_many_continuation_lines_parse_in_linear_time);
  tcase_add_test(tc, test_many_servers_load_in_linear_time);
  tcase_add_test(tc, test_many_listeners_load_in_linear_time);
  suite_add_tcase(s, tc);

  tc = tcase_create("table");
  tcase_add_test(tc, test_every_default_parses_under_its_own_rule);
  tcase_add_test(tc, test_out_of_range_values_give_the_existing_messages);
  tcase_add_test(tc, test_builtin_layer_is_the_aio_rows);
  tcase_add_test(tc, test_unknown_keys_in_server_and_schedule_sections_warn);
  tcase_add_test(tc, test_known_keys_do_not_warn);
  tcase_add_test(tc, test_a_factory_s_own_keys_do_not_warn);
  tcase_add_test(tc, test_every_key_is_documented_with_its_default);
  suite_add_tcase(s, tc);

  tc = tcase_create("writer");
  tcase_add_test(tc, test_write_value_keeps_layout);
  tcase_add_test(tc, test_write_value_refusals_leave_the_file_alone);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
