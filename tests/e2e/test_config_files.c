/*
 * test_config_files.c - hostile configuration files against the real `aio`
 * binary: the interpolation bomb is refused by `aio check`, `aio config`
 * and a SIGHUP reload, fast and in little memory, with FILE:LINE and the
 * cap it hit; a file of 40 000 sections is checked in linear time; and
 * `aio config -s` writes a file the way an operator's editor would.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
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

/* Run `aio ARGS` in dir as uid (-1: this process's), its output in out,
 * and wait up to deadline_ms. Without ASan (which reserves terabytes of
 * address space) it runs under RLIMIT_AS of 256 MB, so a blow-up fails
 * fast instead of taking the machine; either way *maxrss_kb gets the peak
 * RSS of aio and its children (the probe). Returns the exit status, or -1
 * after the deadline. */
/* The CPU time (user + system) of run_as()'s last child. */
static long long last_cpu_ms;

static int run_as(const char *dir, uid_t uid, int deadline_ms,
                  const char *const *argv, char *out, size_t n,
                  long *maxrss_kb) {
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
    if (uid != (uid_t)-1 &&
        (setgroups(0, NULL) < 0 || setgid(uid) < 0 || setuid(uid) < 0))
      _exit(125);
    const char *av[16] = {AIO_BIN};
    for (int i = 0; argv[i] && i < 14; i++)
      av[i + 1] = argv[i];
    execv(AIO_BIN, (char **)av);
    _exit(127);
  }
  long long deadline = h_now_ms() + deadline_ms;
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
  if (maxrss_kb)
    *maxrss_kb = ru.ru_maxrss;
  last_cpu_ms = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000LL +
                (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1000;
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
    int rc =
        run_as(dir, (uid_t)-1, DEADLINE_MS, argv, out, sizeof(out), &rss_kb);
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

/* Each value within 64 KiB, but 300 copies of one at the cap would be
 * 19 MB: the file's total is capped too (16 MiB), at the key that passes
 * it, and what it costs is the cap, not the file's wish. */
START_TEST(test_total_expansion_is_refused_at_its_cap) {
  char dir[128], conf[16384], out[65536];
  h_tmpdir(dir, sizeof(dir));
  conf_base(conf, sizeof(conf), h_free_port());
  h_conf_add(conf, sizeof(conf), "\n[a]\nb0 = 0123456789abcdef\n");
  for (int i = 1; i <= 12; i++) /* b12: 16 * 2^12 = 65536 bytes */
    h_conf_add(conf, sizeof(conf), "b%d = ${b%d}${b%d}\n", i, i - 1, i - 1);
  h_conf_add(conf, sizeof(conf), "\n[many]\n");
  int first = count_lines(conf);
  for (int i = 0; i < 300; i++)
    h_conf_add(conf, sizeof(conf), "x%d = ${a:b12}\n", i);
  ck_assert_int_eq(h_write(dir, "aio.conf", conf), 0);
  const char *argv[] = {"-c", "aio.conf", "check", NULL};
  long rss_kb = 0;
  int rc = run_as(dir, (uid_t)-1, DEADLINE_MS, argv, out, sizeof(out), &rss_kb);
  ck_assert_msg(rc == 78, "aio check exited %d:\n%s", rc, out);
  assert_has(out, "interpolation would produce more than 16 MiB");
  /* 16 MiB is 256 copies, less what [a] itself substituted: one of the
   * last [many] keys, named once. */
  const char *at = strstr(out, "aio.conf:");
  ck_assert_ptr_nonnull(at);
  int line = atoi(at + strlen("aio.conf:"));
  ck_assert_msg(line > first + 250 && line < first + 260, "refused at line %d",
                line);
  int times = 0;
  for (const char *m = out; (m = strstr(m, "more than 16 MiB")); m++)
    times++;
  ck_assert_int_eq(times, 1);
  ck_assert_msg(rss_kb < MAX_RSS_KB, "aio check peaked at %ld kB of RSS",
                rss_kb);
  fprintf(stderr,
          "figure: total expansion: refused at line %d in %lld ms of CPU, "
          "%ld kB peak\n",
          line, last_cpu_ms, rss_kb);
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
  /* 40 000 sections took aio check 27 s of CPU when every lookup was a
   * linear scan; linear, they take about a second under ASan. Its CPU
   * time is checked, not the wall clock, so a loaded machine does not
   * fail it; the wall deadline only stops a hang. */
  char dir[128], head[4096], out[65536];
  h_tmpdir(dir, sizeof(dir));
  conf_base(head, sizeof(head), h_free_port());
  char path[256];
  snprintf(path, sizeof(path), "%s/aio.conf", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(head, f);
  for (int i = 0; i < 40000; i++)
    fprintf(f, "\n[app:s%d]\nname = s%d\nurl = http://${name}/\n", i, i);
  ck_assert_int_eq(fclose(f), 0);
  /* The reader alone first: its peak is what one load of the file costs. */
  const char *read_argv[] = {"config", "-f", "aio.conf", NULL};
  long read_kb = 0, rss_kb = 0;
  int rc =
      run_as(dir, (uid_t)-1, 120000, read_argv, out, sizeof(out), &read_kb);
  ck_assert_msg(rc == 0, "aio config -f exited %d", rc);
  long long read_cpu_ms = last_cpu_ms;
  const char *argv[] = {"-c", "aio.conf", "check", NULL};
  long long t0 = h_now_ms();
  rc = run_as(dir, (uid_t)-1, 120000, argv, out, sizeof(out), &rss_kb);
  ck_assert_msg(rc == 0, "aio check exited %d after %lld ms:\n%s", rc,
                h_now_ms() - t0, out);
  assert_has(out, "is ok");
  ck_assert_msg(last_cpu_ms < 10000, "aio check took %lld ms of CPU",
                last_cpu_ms);
  fprintf(stderr,
          "figure: 40000 sections: aio config -f %lld ms of CPU, %ld kB; aio "
          "check %lld ms of CPU, %ld kB\n",
          read_cpu_ms, read_kb, last_cpu_ms, rss_kb);
#if !defined(__SANITIZE_ADDRESS__)
  /* The check loads the file more than once, but never holds two loads at
   * a time: its probe child was forked holding the first pass, and peaked
   * at twice the reader's memory. (ASan's RSS is its shadow's.) */
  ck_assert_msg(rss_kb < read_kb * 3 / 2,
                "aio check peaked at %ld kB, the reader alone at %ld kB",
                rss_kb, read_kb);
#endif
}
END_TEST

/* ---- aio config -s ------------------------------------------------------ */

#define NOBODY 65534

/* A valid configuration with one echo server in a fresh dir; the path of
 * its aio.conf in path. */
static void setup_conf(char *dir, size_t dn, char *path, size_t pn) {
  char conf[4096];
  h_tmpdir(dir, dn);
  conf_base(conf, sizeof(conf), h_free_port());
  h_conf_add(conf, sizeof(conf), "\n[app]\n; the app's own keys\nname = x\n");
  ck_assert_int_eq(h_write(dir, "aio.conf", conf), 0);
  snprintf(path, pn, "%s/aio.conf", dir);
}

/* `aio -c FILE config -s REF VALUE` in dir as uid; out gets the output.
 * Returns the exit status. */
static int set_as(const char *dir, uid_t uid, const char *file, const char *ref,
                  const char *value, char *out, size_t n) {
  const char *argv[] = {"-c", file, "config", "-s", ref, value, NULL};
  int rc = run_as(dir, uid, DEADLINE_MS, argv, out, n, NULL);
  ck_assert_msg(rc != -1, "aio config -s %s still running", ref);
  return rc;
}

/* `aio config -s app:name y` through dir/aio.conf succeeds, and the file
 * at changed has the new line. */
static void set_name_ok(const char *dir, const char *changed) {
  char out[8192];
  int rc =
      set_as(dir, (uid_t)-1, "aio.conf", "app:name", "y", out, sizeof(out));
  ck_assert_msg(rc == 0, "exit %d:\n%s", rc, out);
  char *text = h_slurp(changed);
  ck_assert_msg(strstr(text, "\nname = y\n") != NULL, "%s not changed:\n%s",
                changed, text);
  free(text);
}

static void assert_no_temp_files(const char *dir) {
  DIR *dp = opendir(dir);
  ck_assert_ptr_nonnull(dp);
  struct dirent *de;
  while ((de = readdir(dp)) != NULL)
    ck_assert_msg(strncmp(de->d_name, ".aio.conf.", 10) != 0,
                  "temporary file %s/%s left behind", dir, de->d_name);
  closedir(dp);
}

START_TEST(test_set_writes_through_a_symlink) {
  char dir[128], path[256], real[256], link[256];
  setup_conf(dir, sizeof(dir), path, sizeof(path));
  snprintf(real, sizeof(real), "%s/real", dir);
  ck_assert_int_eq(mkdir(real, 0755), 0);
  snprintf(real, sizeof(real), "%s/real/aio.conf", dir);
  ck_assert_int_eq(rename(path, real), 0);
  snprintf(link, sizeof(link), "%s/aio.conf", dir);
  ck_assert_int_eq(symlink("real/aio.conf", link), 0);

  set_name_ok(dir, real);
  struct stat sb;
  ck_assert_int_eq(lstat(link, &sb), 0);
  ck_assert_msg(S_ISLNK(sb.st_mode), "the symlink was replaced by a file");
  char target[256];
  ssize_t n = readlink(link, target, sizeof(target) - 1);
  ck_assert_int_gt(n, 0);
  target[n] = '\0';
  ck_assert_str_eq(target, "real/aio.conf");
  assert_no_temp_files(dir);
  snprintf(real, sizeof(real), "%s/real", dir);
  assert_no_temp_files(real);
}
END_TEST

START_TEST(test_set_keeps_mode_and_owner) {
  char dir[128], path[256];
  setup_conf(dir, sizeof(dir), path, sizeof(path));
  ck_assert_int_eq(chmod(path, 0640), 0);
  int as_root = geteuid() == 0;
  if (as_root)
    ck_assert_int_eq(chown(path, NOBODY, NOBODY), 0);
  else
    fprintf(stderr, "%s: not root, the owner part is skipped\n", __func__);
  set_name_ok(dir, path);
  struct stat sb;
  ck_assert_int_eq(stat(path, &sb), 0);
  ck_assert_uint_eq(sb.st_mode & 07777, 0640);
  if (as_root) {
    ck_assert_uint_eq(sb.st_uid, NOBODY);
    ck_assert_uint_eq(sb.st_gid, NOBODY);
  }
}
END_TEST

START_TEST(test_set_refuses_a_read_only_file) {
  char dir[128], path[256], out[8192];
  setup_conf(dir, sizeof(dir), path, sizeof(path));
  ck_assert_int_eq(chmod(path, 0444), 0);
  char *before = h_slurp(path);
  /* Even root, who could write it, is told to chmod it first. */
  int rc =
      set_as(dir, (uid_t)-1, "aio.conf", "app:name", "y", out, sizeof(out));
  ck_assert_msg(rc == 78, "exit %d:\n%s", rc, out);
  assert_has(out, "aio.conf: is read-only (mode 0444)");
  if (geteuid() != 0) {
    fprintf(stderr, "%s: not root, the other-user part is skipped\n", __func__);
  } else {
    /* As an ordinary user who owns the directory, so that only the file's
     * mode stands in the way (a rename would get past it). */
    ck_assert_int_eq(chown(dir, NOBODY, NOBODY), 0);
    ck_assert_int_eq(chown(path, NOBODY, NOBODY), 0);
    rc = set_as(dir, NOBODY, "aio.conf", "app:name", "y", out, sizeof(out));
    ck_assert_msg(rc == 78, "exit %d as uid %d:\n%s", rc, NOBODY, out);
    assert_has(out, "aio.conf: is read-only (mode 0444)");
    /* Writable by its owner, root, but not by this user. */
    ck_assert_int_eq(chown(path, 0, 0), 0);
    ck_assert_int_eq(chmod(path, 0644), 0);
    rc = set_as(dir, NOBODY, "aio.conf", "app:name", "y", out, sizeof(out));
    ck_assert_msg(rc == 78, "exit %d as uid %d:\n%s", rc, NOBODY, out);
    assert_has(out, "aio.conf: cannot write: Permission denied");
  }
  char *after = h_slurp(path);
  ck_assert_str_eq(after, before);
  free(before);
  free(after);
  assert_no_temp_files(dir);
}
END_TEST

START_TEST(test_set_refuses_what_check_would_refuse) {
  char dir[128], path[256], out[8192];
  setup_conf(dir, sizeof(dir), path, sizeof(path));
  char *before = h_slurp(path);
  struct stat st0;
  ck_assert_int_eq(stat(path, &st0), 0);
  static const struct {
    const char *ref, *value, *want;
  } bad[] = {
      {"server:ok:port", "99999", "[server:ok] port: expected a whole number"},
      {"app:url", "http://${nope}/", "refers to ${nope}, but there is no key"},
      {"server:ok:protocol", "aio.nosuch", "nosuch"},
      {"app:name", "a ; b", "would read back as 'a'"},
  };
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    int rc = set_as(dir, (uid_t)-1, "aio.conf", bad[i].ref, bad[i].value, out,
                    sizeof(out));
    ck_assert_msg(rc == 78, "%s = %s: exit %d:\n%s", bad[i].ref, bad[i].value,
                  rc, out);
    assert_has(out, bad[i].want);
    /* Named after the file, not the temporary one it was checked in. */
    ck_assert_msg(strstr(out, ".aio.conf.") == NULL, "%s", out);
    char *after = h_slurp(path);
    ck_assert_str_eq(after, before);
    free(after);
  }
  struct stat st1;
  ck_assert_int_eq(stat(path, &st1), 0);
  ck_assert_uint_eq(st1.st_ino, st0.st_ino); /* not even rewritten */
  free(before);
  assert_no_temp_files(dir);
}
END_TEST

START_TEST(test_concurrent_sets_all_land) {
  enum { N = 40 };
  char dir[128], path[256];
  setup_conf(dir, sizeof(dir), path, sizeof(path));
  pid_t pids[N];
  for (int i = 0; i < N; i++) {
    char ref[32], value[32], out_path[256];
    snprintf(ref, sizeof(ref), "app:k%d", i);
    snprintf(value, sizeof(value), "v%d", i);
    snprintf(out_path, sizeof(out_path), "%s/set%d.out", dir, i);
    const char *argv[] = {"-c", "aio.conf", "config", "-s", ref, value, NULL};
    pids[i] = h_aio_async(dir, out_path, argv);
    ck_assert_int_gt(pids[i], 0);
  }
  for (int i = 0; i < N; i++) {
    int rc = h_aio_wait(pids[i], 60000);
    char out_path[256];
    snprintf(out_path, sizeof(out_path), "%s/set%d.out", dir, i);
    char *out = h_slurp(out_path);
    ck_assert_msg(rc == 0, "set %d exited %d:\n%s", i, rc, out);
    free(out);
  }
  char *text = h_slurp(path);
  for (int i = 0; i < N; i++) {
    char line[32];
    snprintf(line, sizeof(line), "\nk%d = v%d\n", i, i);
    ck_assert_msg(strstr(text, line) != NULL, "k%d lost:\n%s", i, text);
  }
  free(text);
  assert_no_temp_files(dir);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_config_files");
  TCase *tc = tcase_create("hostile");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_bomb_is_refused_fast_and_small);
  tcase_add_test(tc, test_total_expansion_is_refused_at_its_cap);
  tcase_add_test(tc, test_reload_to_a_bomb_keeps_the_old_config);
  tcase_add_test(tc, test_check_of_many_sections_is_linear);
  suite_add_tcase(s, tc);

  tc = tcase_create("set");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, test_set_writes_through_a_symlink);
  tcase_add_test(tc, test_set_keeps_mode_and_owner);
  tcase_add_test(tc, test_set_refuses_a_read_only_file);
  tcase_add_test(tc, test_set_refuses_what_check_would_refuse);
  tcase_add_test(tc, test_concurrent_sets_all_land);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
