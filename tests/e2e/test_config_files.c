/*
 * test_config_files.c - hostile configuration files against the real `aio`
 * binary: the interpolation bomb is refused by `aio check`, `aio config`
 * and a SIGHUP reload, fast and in little memory, with FILE:LINE and the
 * cap it hit; a file of 100 000 sections is checked in linear time; and
 * `aio config -s` writes a file the way an operator's editor would.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "harness.h"
#include "ops_util.h"

/* Generous (ASan, a loaded machine): the bomb took 25 s before its cap. */
#define DEADLINE_MS 5000
/* The bomb took 4.2 GB; a refused one is a few MB (ASan: tens). */
#define MAX_RSS_KB (128 * 1024)

/* A valid base: [aio] for the test modules and one echo server. */
static void conf_base(char *out, size_t n, int port) {
  h_conf(out, n, "", "workers = 1\ngraceful_timeout = 5\n");
  h_conf_server(out, n, "ok", "aio.echo", port);
}

static int count_lines(const char *s) {
  int n = 1;
  for (; *s; s++)
    n += *s == '\n';
  return n;
}

/* Append the bomb of issue 12 to out: 29 keys, each ${next}${next}, so k0
 * would be 10 * 2^28 bytes. Returns the line of k15, the first value past
 * 64 KiB (81920 bytes). */
static int conf_add_bomb(char *out, size_t n) {
  h_conf_add(out, n, "\n[bomb]\n");
  int line = count_lines(out);
  for (int i = 0; i < 28; i++)
    h_conf_add(out, n, "k%d = ${k%d}${k%d}\n", i, i + 1, i + 1);
  h_conf_add(out, n, "k28 = 0123456789\n");
  return line + 15;
}

/* Run `aio ARGS` in dir, its output in out, and wait up to DEADLINE_MS.
 * Without ASan (which reserves terabytes of address space) it runs under
 * RLIMIT_AS of 256 MB, so a blow-up fails fast instead of taking the
 * machine; either way *maxrss_kb gets the peak RSS of aio and its
 * children (the probe). Returns the exit status, or -1 after the
 * deadline. */
static int run_bounded(const char *dir, const char *const *argv, char *out,
                       size_t n, long *maxrss_kb) {
  char path[256];
  snprintf(path, sizeof(path), "%s/bounded.out", dir);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
#if !defined(__SANITIZE_ADDRESS__)
    struct rlimit rl = {.rlim_cur = 256u << 20, .rlim_max = 256u << 20};
    setrlimit(RLIMIT_AS, &rl);
#endif
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0 || chdir(dir) < 0)
      _exit(126);
    const char *av[16] = {AIO_BIN};
    for (int i = 0; argv[i] && i < 14; i++)
      av[i + 1] = argv[i];
    execv(AIO_BIN, (char **)av);
    _exit(127);
  }
  long long deadline = h_now_ms() + DEADLINE_MS;
  int status = 0, rc = -1;
  struct rusage ru;
  for (;;) {
    pid_t r = wait4(pid, &status, WNOHANG, &ru);
    if (r == pid) {
      rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (h_now_ms() > deadline) {
      kill(pid, SIGKILL);
      wait4(pid, &status, 0, &ru);
      break;
    }
    usleep(2000);
  }
  *maxrss_kb = ru.ru_maxrss;
  char *text = h_slurp(path);
  snprintf(out, n, "%s", text);
  free(text);
  return rc;
}

static void assert_has(const char *out, const char *s) {
  ck_assert_msg(strstr(out, s) != NULL, "no '%s' in:\n%s", s, out);
}

START_TEST(test_bomb_is_refused_fast_and_small) {
  char dir[128], conf[8192], out[65536], where[64];
  h_tmpdir(dir, sizeof(dir));
  conf_base(conf, sizeof(conf), h_free_port());
  int line = conf_add_bomb(conf, sizeof(conf));
  ck_assert_int_eq(h_write(dir, "aio.conf", conf), 0);
  snprintf(where, sizeof(where), "aio.conf:%d: [bomb] k15: ", line);
  static const char *const commands[] = {"check", "config"};
  for (int i = 0; i < 2; i++) {
    const char *argv[] = {"-c", "aio.conf", commands[i], NULL};
    long rss_kb = 0;
    int rc = run_bounded(dir, argv, out, sizeof(out), &rss_kb);
    ck_assert_msg(rc != -1, "aio %s still running after %d ms", commands[i],
                  DEADLINE_MS);
    ck_assert_msg(rc == 78, "aio %s exited %d:\n%s", commands[i], rc, out);
    assert_has(out, where);
    assert_has(out, "longer than 64 KiB");
    ck_assert_msg(rss_kb < MAX_RSS_KB, "aio %s peaked at %ld kB of RSS",
                  commands[i], rss_kb);
  }
}
END_TEST

/* VmHWM (peak RSS) of pid in kB, from /proc; -1 when unknown. */
static long peak_rss_kb(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
  char *text = h_slurp(path);
  const char *p = strstr(text, "VmHWM:");
  long kb = p ? strtol(p + 6, NULL, 10) : -1;
  free(text);
  return kb;
}

START_TEST(test_reload_to_a_bomb_keeps_the_old_config) {
  struct aio_proc p = {0};
  char conf[8192], bomb[8192], where[64], buf[256];
  int port = h_free_port();
  conf_base(conf, sizeof(conf), port);
  h_start_ready(&p, conf, NULL);
  pid_t before[1];
  ck_assert_int_eq(h_children(p.pid, before, 1), 1);

  memcpy(bomb, conf, sizeof(conf));
  int line = conf_add_bomb(bomb, sizeof(bomb));
  ops_rewrite(&p, bomb);
  ck_assert_int_eq(kill(p.pid, SIGHUP), 0);
  if (h_wait_log(&p, "SIGHUP: not reloaded", DEADLINE_MS) != 0) {
    h_dump_log(&p);
    ck_abort_msg("no report of the refused reload within %d ms", DEADLINE_MS);
  }
  snprintf(where, sizeof(where), "aio.conf:%d: [bomb] k15: ", line);
  ck_assert_msg(h_log_has(&p, where), "the log does not name %s", where);
  ck_assert(h_log_has(&p, "longer than 64 KiB"));

  /* The old worker still serves, and nobody grew. */
  ck_assert_int_eq(
      h_exchange_once(port, "still here\n", "\n", buf, sizeof(buf), 5000),
      H_OK);
  ck_assert_str_eq(buf, "still here\n");
  pid_t now[1];
  ck_assert_int_eq(h_children(p.pid, now, 1), 1);
  ck_assert_int_eq(now[0], before[0]);
  long master_kb = peak_rss_kb(p.pid), worker_kb = peak_rss_kb(now[0]);
  ck_assert_msg(master_kb > 0 && master_kb < MAX_RSS_KB,
                "the master peaked at %ld kB", master_kb);
  ck_assert_msg(worker_kb > 0 && worker_kb < MAX_RSS_KB,
                "the worker peaked at %ld kB", worker_kb);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_check_of_many_sections_is_linear) {
  /* 100 000 sections took minutes when every lookup was a linear scan. */
  char dir[128], head[4096], out[65536];
  h_tmpdir(dir, sizeof(dir));
  conf_base(head, sizeof(head), h_free_port());
  char path[256];
  snprintf(path, sizeof(path), "%s/aio.conf", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(head, f);
  for (int i = 0; i < 100000; i++)
    fprintf(f, "\n[app:s%d]\nname = s%d\nurl = http://${name}/\n", i, i);
  ck_assert_int_eq(fclose(f), 0);
  const char *argv[] = {"-c", "aio.conf", "check", NULL};
  long rss_kb = 0;
  long long t0 = h_now_ms();
  int rc = run_bounded(dir, argv, out, sizeof(out), &rss_kb);
  ck_assert_msg(rc == 0, "aio check exited %d after %lld ms:\n%s", rc,
                h_now_ms() - t0, out);
  assert_has(out, "is ok");
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_config_files");
  TCase *tc = tcase_create("hostile");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_bomb_is_refused_fast_and_small);
  tcase_add_test(tc, test_reload_to_a_bomb_keeps_the_old_config);
  tcase_add_test(tc, test_check_of_many_sections_is_linear);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
