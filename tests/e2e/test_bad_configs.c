/*
 * test_bad_configs.c - every .conf file of the hostile-config corpus in
 * tests/data/bad-configs (see its README) is refused by `aio check` and
 * `aio run` alike: exit status 78, the first problem printed as
 * FILE:LINE: at the line the file's "# expect: LINE" names, no crash, and
 * nothing started (no process left behind, the server port still free).
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "harness.h"

#define CORPUS AIO_SOURCE_DIR "/tests/data/bad-configs"
#define MIN_CORPUS 25

static char **corpus; /* file names, sorted */
static int ncorpus;

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Runs in main(), before the runner forks a process per test. */
static void corpus_scan(void) {
  DIR *dir = opendir(CORPUS);
  if (dir == NULL)
    return;
  struct dirent *de;
  while ((de = readdir(dir)) != NULL) {
    size_t len = strlen(de->d_name);
    if (len < 6 || strcmp(de->d_name + len - 5, ".conf") != 0)
      continue;
    corpus = realloc(corpus, (size_t)(ncorpus + 1) * sizeof(*corpus));
    corpus[ncorpus++] = strdup(de->d_name);
  }
  closedir(dir);
  if (ncorpus > 0)
    qsort(corpus, (size_t)ncorpus, sizeof(*corpus), by_name);
}

/* The whole file (binary-safe); *len gets its size. */
static char *slurp(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  char *buf = NULL;
  size_t cap = 0, n = 0, r;
  do {
    if (cap - n < 4096)
      buf = realloc(buf, cap = cap * 2 + 65536);
    r = fread(buf + n, 1, cap - n - 1, f);
    n += r;
  } while (r > 0);
  fclose(f);
  buf[n] = '\0';
  *len = n;
  return buf;
}

/* Write data to path with every @PORT@ and @MODULES@ replaced. */
static void write_substituted(const char *path, const char *data, size_t len,
                              int port) {
  char port_s[16];
  snprintf(port_s, sizeof(port_s), "%d", port);
  static const char *const from[] = {"@PORT@", "@MODULES@"};
  const char *to[] = {port_s, AIO_TEST_MODULES};
  FILE *f = fopen(path, "wb");
  ck_assert_ptr_nonnull(f);
  size_t i = 0;
  while (i < len) {
    int hit = -1;
    for (int k = 0; k < 2 && hit < 0; k++)
      if (len - i >= strlen(from[k]) &&
          memcmp(data + i, from[k], strlen(from[k])) == 0)
        hit = k;
    if (hit >= 0) {
      fputs(to[hit], f);
      i += strlen(from[hit]);
    } else {
      fputc(data[i++], f);
    }
  }
  ck_assert_int_eq(fclose(f), 0);
}

/* Nothing that aio started may outlive it. As a subreaper this process
 * inherits every orphaned descendant, so "no child at all, running or
 * exited" means nothing was left behind. Leftovers are killed (they are
 * this test's own descendants) and the test fails. */
static void assert_no_descendants(const char *what) {
  pid_t kids[64];
  int n = h_children(getpid(), kids, 64);
  for (int i = 0; i < n; i++)
    kill(kids[i], SIGKILL);
  int status;
  pid_t pid = waitpid(-1, &status, WNOHANG);
  int left = pid != -1 || errno != ECHILD;
  while (waitpid(-1, &status, 0) > 0)
    ;
  ck_assert_msg(n == 0 && !left, "%s left %d process(es) behind", what,
                n ? n : 1);
}

/* The port is free: nothing listens on it, TCP or UDP. */
static void assert_port_free(int port, const char *what) {
  static const int types[] = {SOCK_STREAM, SOCK_DGRAM};
  for (int i = 0; i < 2; i++) {
    int fd = socket(AF_INET, types[i] | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int rc = bind(fd, (struct sockaddr *)&sin, sizeof(sin));
    int err = errno;
    close(fd);
    ck_assert_msg(rc == 0, "%s: port %d is bound (%s)", what, port,
                  strerror(err));
  }
}

/* The first output line about the file must start with "path:line: ". */
static void assert_first_problem_at(const char *out, const char *path, int line,
                                    const char *what) {
  char want[512];
  snprintf(want, sizeof(want), "%s:%d: ", path, line);
  size_t plen = strlen(path);
  for (const char *p = out; *p;
       p = strchr(p, '\n') ? strchr(p, '\n') + 1 : p + strlen(p)) {
    if (strncmp(p, path, plen) != 0 || p[plen] != ':')
      continue;
    ck_assert_msg(strncmp(p, want, strlen(want)) == 0,
                  "%s: first problem is not at %s\n---- output ----\n%s", what,
                  want, out);
    return;
  }
  ck_abort_msg("%s: no line starts with %s\n---- output ----\n%s", what, want,
               out);
}

START_TEST(test_corpus_is_large_enough) {
  ck_assert_msg(ncorpus >= MIN_CORPUS, "%d files in %s, want at least %d",
                ncorpus, CORPUS, MIN_CORPUS);
}
END_TEST

/* The valid base most corpus files start from is accepted, so what the
 * corpus tests is each file's one break and not the base. */
START_TEST(test_base_config_is_valid) {
  char dir[128], path[256], out[8192];
  h_tmpdir(dir, sizeof(dir));
  snprintf(path, sizeof(path), "%s/base.conf", dir);
  static const char base[] = "[aio]\n"
                             "workers = 2\n"
                             "module_path = @MODULES@\n"
                             "\n"
                             "[server:ok]\n"
                             "protocol = aio.echo\n"
                             "address = 127.0.0.1\n"
                             "port = @PORT@\n";
  write_substituted(path, base, sizeof(base) - 1, h_free_port());
  const char *argv[] = {"-c", path, "check", NULL};
  int rc = h_aio(dir, out, sizeof(out), argv);
  ck_assert_msg(rc == 0, "aio check exited %d:\n%s", rc, out);
}
END_TEST

START_TEST(test_bad_config_refused) {
  ck_assert_int_lt(_i, ncorpus);
  const char *name = corpus[_i];
  char src[512], dir[128], path[256];
  snprintf(src, sizeof(src), "%s/%s", CORPUS, name);
  size_t len;
  char *data = slurp(src, &len);
  int line = 0;
  ck_assert_msg(sscanf(data, "# expect: %d", &line) == 1 && line > 0,
                "%s: the first line must be '# expect: LINE'", name);

  ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  h_tmpdir(dir, sizeof(dir));
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  int port = h_free_port();
  write_substituted(path, data, len, port);
  free(data);

  static const char *const commands[] = {"check", "run"};
  for (int i = 0; i < 2; i++) {
    char what[300], out[65536];
    snprintf(what, sizeof(what), "aio -c %s %s", name, commands[i]);
    const char *argv[] = {"-c", path, commands[i], NULL};
    int rc = h_aio(dir, out, sizeof(out), argv);
    ck_assert_msg(rc != -1, "%s: still running after 60 s", what);
    ck_assert_msg(rc < 128, "%s: killed by signal %d\n%s", what, rc - 128, out);
    ck_assert_msg(rc == 78, "%s: exit status %d, want 78\n%s", what, rc, out);
    assert_first_problem_at(out, path, line, what);
    assert_no_descendants(what);
    assert_port_free(port, what);
  }
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_bad_configs");
  TCase *tc = tcase_create("corpus");
  tcase_set_timeout(tc, 150);
  tcase_add_test(tc, test_corpus_is_large_enough);
  tcase_add_test(tc, test_base_config_is_valid);
  tcase_add_loop_test(tc, test_bad_config_refused, 0, ncorpus);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  corpus_scan();
  int rc = check_main(suite());
  for (int i = 0; i < ncorpus; i++)
    free(corpus[i]);
  free(corpus);
  return rc;
}
