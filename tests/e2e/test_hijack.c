/*
 * test_hijack.c - files and sockets nobody else can take over: a pidfile
 * that is a symbolic link (or a hard link) to a victim file is refused
 * and the victim left alone; the probe child that loads the modules to
 * check a configuration runs them as [aio] user with none of the master's
 * descriptors; the default control socket lives in a directory only its
 * user owns, and a client talks only to a master of its own user or root.
 */
#define _GNU_SOURCE
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "ops_util.h"

#define VICTIM_TEXT "precious, not a pid\n"

/* The victim file is still there with its text, under the name it had. */
static void assert_victim_untouched(const char *victim) {
  char *s = h_slurp(victim);
  ck_assert_str_eq(s, VICTIM_TEXT);
  free(s);
}

START_TEST(test_pidfile_through_a_link_is_refused) {
  struct aio_proc p;
  char conf[4096], out[8192], victim[256], pidlink[256];
  h_conf(conf, sizeof(conf), "testmod",
         "pidfile = aio.pid\nlog_file = daemon.log\n");
  h_conf_server(conf, sizeof(conf), "who", "testmod.whoami", h_free_port());
  ck_assert_int_eq(h_prepare(&p, conf, NULL), 0);
  ck_assert_int_eq(h_write(p.dir, "victim", VICTIM_TEXT), 0);
  snprintf(victim, sizeof(victim), "%s/victim", p.dir);
  snprintf(pidlink, sizeof(pidlink), "%s/aio.pid", p.dir);

  /* A symbolic link: before, the pid went into the victim. */
  ck_assert_int_eq(symlink(victim, pidlink), 0);
  ops_expect(&p, 73, out, sizeof(out), "run", "-d", NULL);
  ck_assert_msg(strstr(out, "aio.pid is a symbolic link"), "%s", out);
  assert_victim_untouched(victim);
  struct stat st;
  ck_assert_int_eq(lstat(pidlink, &st), 0);
  ck_assert(S_ISLNK(st.st_mode));

  /* A dangling one would have been created by O_CREAT through the link. */
  char elsewhere[256];
  snprintf(elsewhere, sizeof(elsewhere), "%s/created-through-link", p.dir);
  ck_assert_int_eq(unlink(pidlink), 0);
  ck_assert_int_eq(symlink(elsewhere, pidlink), 0);
  ops_expect(&p, 73, out, sizeof(out), "run", "-d", NULL);
  ck_assert_int_eq(access(elsewhere, F_OK), -1);

  /* A hard link is the same file under a second name. */
  ck_assert_int_eq(unlink(pidlink), 0);
  ck_assert_int_eq(link(victim, pidlink), 0);
  ops_expect(&p, 73, out, sizeof(out), "run", "-d", NULL);
  ck_assert_msg(strstr(out, "hard links"), "%s", out);
  assert_victim_untouched(victim);

  /* A plain pidfile still works. */
  ck_assert_int_eq(unlink(pidlink), 0);
  ops_expect(&p, 0, out, sizeof(out), "run", "-d", NULL);
  ops_expect(&p, 0, out, sizeof(out), "stop", NULL);
  ck_assert_int_eq(access(pidlink, F_OK), -1);
}
END_TEST

/* ---- the probe child ---------------------------------------------------- */

struct probe_record {
  int euid;
  int extra_fds;   /* open above stderr */
  int extra_pipes; /* of which pipes (the result pipe) */
  char fds[2048];  /* the fd lines above stderr, for the failure message */
};

/* Read dir/name, a probemod record. */
static void read_record(const char *dir, const char *name,
                        struct probe_record *r) {
  char path[512];
  snprintf(path, sizeof(path), "%s/%s", dir, name);
  char *s = h_slurp(path);
  memset(r, 0, sizeof(*r));
  r->euid = -1;
  sscanf(s, "euid %d", &r->euid);
  for (char *line = strtok(s, "\n"); line; line = strtok(NULL, "\n")) {
    int fd;
    char target[512] = "";
    if (sscanf(line, "fd %d %511s", &fd, target) < 1 || fd <= 2)
      continue;
    r->extra_fds++;
    if (strncmp(target, "pipe:", 5) == 0)
      r->extra_pipes++;
    snprintf(r->fds + strlen(r->fds), sizeof(r->fds) - strlen(r->fds), " [%s]",
             line);
  }
  free(s);
}

/* Check every probe child's record in dir (a record without a .worker
 * companion); returns how many there were. */
static int assert_probe_records(const char *dir, int want_euid) {
  DIR *d = opendir(dir);
  ck_assert_ptr_nonnull(d);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.' || strchr(e->d_name, '.'))
      continue;
    char worker[512];
    snprintf(worker, sizeof(worker), "%s/%s.worker", dir, e->d_name);
    if (access(worker, F_OK) == 0)
      continue;
    struct probe_record r;
    read_record(dir, e->d_name, &r);
    if (want_euid >= 0)
      ck_assert_msg(r.euid == want_euid,
                    "the probe child (pid %s) ran the module as euid %d, "
                    "want %d",
                    e->d_name, r.euid, want_euid);
    /* Its result pipe, and nothing of the master's. */
    ck_assert_msg(r.extra_fds == 1 && r.extra_pipes == 1,
                  "the probe child (pid %s) holds %d fds beyond stdio:%s",
                  e->d_name, r.extra_fds, r.fds);
    n++;
  }
  closedir(d);
  return n;
}

START_TEST(test_probe_child_runs_modules_as_user_with_no_master_fds) {
  int root = geteuid() == 0;
  struct passwd *pw = root ? getpwnam("nobody") : NULL;
  if (!root)
    fprintf(stderr, "test_probe_child_runs_modules_as_user_with_no_master_fds:"
                    " not root, the uid part is skipped\n");
  else if (pw == NULL)
    fprintf(stderr, "test_probe_child_runs_modules_as_user_with_no_master_fds:"
                    " no user nobody, the uid part is skipped\n");
  /* World-writable: the module writes as nobody; not inside the test's
   * own directory, which is 0700. */
  char rec[] = "/tmp/aio-probe-rec-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(rec));
  ck_assert_int_eq(chmod(rec, 0777), 0);
  char env[128];
  snprintf(env, sizeof(env), "AIO_TEST_PROBE_RECORD=%s", rec);
  const char *envv[] = {env, NULL};
  struct h_opts o = {.env = envv};

  struct aio_proc p;
  char conf[4096], out[8192];
  h_conf(conf, sizeof(conf), "testmod probemod", "workers = 2\n%s",
         pw ? "user = nobody\n" : "");
  h_conf_server(conf, sizeof(conf), "who", "testmod.whoami", h_free_port());
  h_start_ready(&p, conf, &o);
  /* A reload's probe is forked by a master that holds listening, control
   * and bus sockets and more. */
  ops_expect(&p, 0, out, sizeof(out), "reload", NULL);
  ck_assert_int_eq(assert_probe_records(rec, pw ? (int)pw->pw_uid : -1), 2);
  h_stop_ok(&p);
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", rec);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_hijack");
  TCase *tc = tcase_create("hijack");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, test_pidfile_through_a_link_is_refused);
  tcase_add_test(tc, test_probe_child_runs_modules_as_user_with_no_master_fds);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
