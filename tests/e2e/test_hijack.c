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
#include <grp.h>
#include <libgen.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check_main.h"
#include "ctl.h" /* ctl_socket_path_lenient: where the victim's socket goes */
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
  char title[256];
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
    if (strncmp(line, "title ", 6) == 0)
      snprintf(r->title, sizeof(r->title), "%s", line + 6);
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
    /* ps (or a script that signals "aio: master") must not take it for
     * the master. */
    ck_assert_msg(strncmp(r.title, "aio: master", 11) != 0,
                  "the probe child (pid %s) is titled '%s'", e->d_name,
                  r.title);
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

/* ---- squatting the control socket ----------------------------------------
 *
 * Two throwaway users, made by the unchecked fixture in the runner process
 * (so they are removed even when a test fails): a squatter, who gets to
 * the predictable paths first, and a victim, who runs aio.
 */

struct user {
  char name[32];
  uid_t uid;
  gid_t gid;
};

static struct user squatter, victim;
static int have_users;
static const char *no_users_why = "not root";

/* sh -c text; the exit status. */
static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...) {
  char cmd[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(cmd, sizeof(cmd), fmt, ap);
  va_end(ap);
  int st = system(cmd);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static int user_add(struct user *u, const char *prefix) {
  snprintf(u->name, sizeof(u->name), "%s%d", prefix, (int)getpid());
  /* Others may be editing /etc/passwd too: useradd then fails with its
   * lock taken, so it is tried again for a while. */
  long long deadline = h_now_ms() + 10000;
  while (sh("useradd --system --no-create-home --user-group --shell "
            "/usr/sbin/nologin %s >/dev/null 2>&1",
            u->name) != 0 &&
         h_now_ms() < deadline)
    usleep(100 * 1000);
  struct passwd *pw = getpwnam(u->name);
  if (pw == NULL)
    return -1;
  u->uid = pw->pw_uid;
  u->gid = pw->pw_gid;
  return 0;
}

static void user_del(struct user *u) {
  if (u->name[0] == '\0' || getpwnam(u->name) == NULL)
    return;
  long long deadline = h_now_ms() + 10000;
  while (sh("userdel %s >/dev/null 2>&1", u->name) != 0 &&
         h_now_ms() < deadline)
    usleep(100 * 1000);
  sh("groupdel %s >/dev/null 2>&1", u->name);
  /* The private directory the victim's aio made (or the squatter did). */
  sh("rm -rf /tmp/aio-%u", (unsigned)u->uid);
}

static void users_create(void) {
  if (geteuid() != 0)
    return;
  if (sh("command -v useradd >/dev/null && command -v userdel >/dev/null") !=
      0) {
    no_users_why = "no useradd/userdel";
    return;
  }
  if (user_add(&squatter, "aiosq") || user_add(&victim, "aiovi")) {
    no_users_why = "useradd failed";
    return;
  }
  have_users = 1;
}

static void users_remove(void) {
  user_del(&squatter);
  user_del(&victim);
}

/* In a child: become u for good. */
static void become(const struct user *u) {
  if (setgroups(0, NULL) < 0 || setgid(u->gid) < 0 || setuid(u->uid) < 0)
    _exit(99);
}

/* The control socket path the victim's aio would use for conf (computed
 * as the victim, without XDG_RUNTIME_DIR). Returns new. */
static char *victim_socket_path(const char *conf) {
  int pfd[2];
  ck_assert_int_eq(pipe(pfd), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    become(&victim);
    unsetenv("XDG_RUNTIME_DIR");
    char *path = ctl_socket_path_lenient(conf);
    if (path == NULL || write(pfd[1], path, strlen(path)) < 0)
      _exit(1);
    _exit(0);
  }
  close(pfd[1]);
  char buf[512] = "";
  ssize_t n = read(pfd[0], buf, sizeof(buf) - 1);
  close(pfd[0]);
  buf[n > 0 ? n : 0] = '\0';
  int st;
  waitpid(pid, &st, 0);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0 && n > 0,
                "cannot compute the victim's socket path");
  return strdup(buf);
}

struct squat {
  pid_t pid;
  int report; /* one line per connection: the bytes it sent */
};

/* As the squatter: make dir (0777) unless NULL, bind and listen on path,
 * and report what every client sends within 2 s. Returns once it
 * listens. */
static void squat_start(struct squat *sq, const char *dir, const char *path) {
  int rep[2], ready[2];
  ck_assert_int_eq(pipe(rep), 0);
  ck_assert_int_eq(pipe(ready), 0);
  sq->pid = fork();
  ck_assert_int_ge(sq->pid, 0);
  if (sq->pid == 0) {
    close(rep[0]);
    close(ready[0]);
    become(&squatter);
    if (dir && (mkdir(dir, 0777) < 0 || chmod(dir, 0777) < 0))
      _exit(2);
    int ls = socket(AF_UNIX, SOCK_STREAM, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
    if (ls < 0 || bind(ls, (struct sockaddr *)&sun, sizeof(sun)) < 0 ||
        listen(ls, 8) < 0 || chmod(path, 0777) < 0)
      _exit(3);
    if (write(ready[1], "R", 1) != 1)
      _exit(4);
    for (;;) {
      int c = accept(ls, NULL, NULL);
      if (c < 0)
        continue;
      char buf[4096];
      int got = 0;
      struct pollfd pfd = {.fd = c, .events = POLLIN};
      ssize_t n;
      while (poll(&pfd, 1, 2000) > 0 && (n = read(c, buf, sizeof(buf))) > 0)
        got += (int)n;
      close(c);
      dprintf(rep[1], "%d\n", got);
    }
  }
  close(rep[1]);
  close(ready[1]);
  char r = 0;
  ck_assert_msg(read(ready[0], &r, 1) == 1 && r == 'R',
                "the squatter could not bind %s", path);
  close(ready[0]);
  sq->report = rep[0];
}

/* Bytes the squatter's next client sent; -1 when none came in
 * timeout_ms. */
static int squat_received(struct squat *sq, int timeout_ms) {
  struct pollfd pfd = {.fd = sq->report, .events = POLLIN};
  char buf[64] = "";
  if (poll(&pfd, 1, timeout_ms) <= 0 ||
      read(sq->report, buf, sizeof(buf) - 1) <= 0)
    return -1;
  return atoi(buf);
}

static void squat_stop(struct squat *sq) {
  kill(sq->pid, SIGKILL);
  waitpid(sq->pid, NULL, 0);
  close(sq->report);
}

/* Start aio run as the victim, XDG_RUNTIME_DIR unset, in dir (readable by
 * the victim), with its default control socket. */
static void start_as_victim(struct aio_proc *p, const char *dir,
                            const char *conf) {
  char reuid[32], regid[32];
  snprintf(reuid, sizeof(reuid), "--reuid=%u", (unsigned)victim.uid);
  snprintf(regid, sizeof(regid), "--regid=%u", (unsigned)victim.gid);
  const char *wrap[] = {"env", "-u",  "XDG_RUNTIME_DIR", "setpriv",
                        reuid, regid, "--clear-groups",  NULL};
  struct h_opts o = {.dir = dir, .wrap = wrap};
  ck_assert_int_eq(h_start(p, conf, &o), 0);
}

static void conf_victim(char *out, size_t n) {
  h_conf(out, n, "testmod", "workers = 1\n");
  h_conf_server(out, n, "who", "testmod.whoami", h_free_port());
}

/* A fresh test directory the victim can read, with its aio.conf. */
static void victim_dir(char *dir, size_t n, const char *conf) {
  h_tmpdir(dir, n);
  ck_assert_int_eq(chmod(dir, 0755), 0);
  ck_assert_int_eq(h_write(dir, "aio.conf", conf), 0);
}

/* The victim's aio run, in dir, must exit 77 saying want. */
static void assert_victim_refused(const char *dir, const char *conf,
                                  const char *want) {
  struct aio_proc p;
  start_as_victim(&p, dir, conf);
  ck_assert_int_eq(h_wait_exit(&p, 15000), 0);
  h_assert_exit_status(&p, 77);
  ck_assert_msg(h_log_has(&p, want), "no '%s' in the log", want);
}

#define SKIP_WITHOUT_USERS(name)                                               \
  do {                                                                         \
    if (!have_users) {                                                         \
      fprintf(stderr, "skipped %s: %s\n", name, no_users_why);                 \
      return;                                                                  \
    }                                                                          \
  } while (0)

START_TEST(test_squatted_control_socket_directory_is_refused) {
  SKIP_WITHOUT_USERS("test_squatted_control_socket_directory_is_refused");
  char conf[4096], dir[128], confpath[256];
  conf_victim(conf, sizeof(conf));
  victim_dir(dir, sizeof(dir), conf);
  snprintf(confpath, sizeof(confpath), "%s/aio.conf", dir);
  char *sock = victim_socket_path(confpath);
  char *sockdir = strdup(sock);
  dirname(sockdir);
  ck_assert_msg(strncmp(sock, "/tmp/", 5) == 0, "default path: %s", sock);

  /* The squatter gets there first: the directory (if the path has one of
   * its own) and the socket in it. */
  struct squat sq;
  squat_start(&sq, strcmp(sockdir, "/tmp") ? sockdir : NULL, sock);
  char want[256];
  snprintf(want, sizeof(want), "%s belongs to uid %u", sockdir,
           (unsigned)squatter.uid);
  assert_victim_refused(dir, conf, want);
  /* The squatter heard nothing: the master did not connect to it. */
  ck_assert_int_eq(squat_received(&sq, 0), -1);
  squat_stop(&sq);

  /* The squatter's, closed to the victim: still named, not "cannot
   * open". */
  ck_assert_int_eq(sh("rm -rf '%s'", sockdir), 0);
  ck_assert_int_eq(mkdir(sockdir, 0700), 0);
  ck_assert_int_eq(chown(sockdir, squatter.uid, squatter.gid), 0);
  assert_victim_refused(dir, conf, want);
  ck_assert_int_eq(rmdir(sockdir), 0);

  /* A symbolic link in its place, to a directory of the squatter's. */
  char target[] = "/tmp/aio-squat-XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(target));
  ck_assert_int_eq(chown(target, squatter.uid, squatter.gid), 0);
  ck_assert_int_eq(symlink(target, sockdir), 0);
  snprintf(want, sizeof(want), "%s is a symbolic link", sockdir);
  assert_victim_refused(dir, conf, want);
  ck_assert_int_eq(unlink(sockdir), 0);
  ck_assert_int_eq(sh("rm -rf '%s'", target), 0);

  /* Its own, but open to others (made by hand, say). */
  ck_assert_int_eq(mkdir(sockdir, 0777), 0);
  ck_assert_int_eq(chmod(sockdir, 0777), 0);
  ck_assert_int_eq(chown(sockdir, victim.uid, victim.gid), 0);
  snprintf(want, sizeof(want), "%s has mode 0777", sockdir);
  assert_victim_refused(dir, conf, want);
  ck_assert_int_eq(rmdir(sockdir), 0);

  /* Nobody there: aio makes it, 0700 and the victim's, and serves. */
  struct aio_proc p;
  start_as_victim(&p, dir, conf);
  h_assert_ready(&p, 15000);
  struct stat st;
  ck_assert_int_eq(lstat(sockdir, &st), 0);
  ck_assert(S_ISDIR(st.st_mode));
  ck_assert_int_eq(st.st_uid, victim.uid);
  ck_assert_int_eq(st.st_mode & 07777, 0700);
  ck_assert_int_eq(lstat(sock, &st), 0);
  ck_assert(S_ISSOCK(st.st_mode));
  h_stop_ok(&p);
  free(sockdir);
  free(sock);
}
END_TEST

START_TEST(test_client_refuses_a_socket_of_another_user) {
  SKIP_WITHOUT_USERS("test_client_refuses_a_socket_of_another_user");
  /* A shared directory where the squatter can bind the configured path. */
  char shared[] = "/tmp/aio-shared-XXXXXX", sock[256];
  ck_assert_ptr_nonnull(mkdtemp(shared));
  ck_assert_int_eq(chmod(shared, 01777), 0);
  snprintf(sock, sizeof(sock), "%s/ctl.sock", shared);
  struct squat sq;
  squat_start(&sq, NULL, sock);

  struct aio_proc p;
  char conf[4096], out[8192];
  h_conf(conf, sizeof(conf), "testmod", "control = %s\n", sock);
  h_conf_server(conf, sizeof(conf), "who", "testmod.whoami", h_free_port());
  ck_assert_int_eq(h_prepare(&p, conf, NULL), 0);
  /* Root's client: only root's own master may answer it. */
  const char *cmds[] = {"status", "stop", "reload"};
  for (size_t i = 0; i < 3; i++) {
    ops_expect(&p, 77, out, sizeof(out), cmds[i], NULL);
    char want[128];
    snprintf(want, sizeof(want), "served by uid %u", (unsigned)squatter.uid);
    ck_assert_msg(strstr(out, want) && strstr(out, sock), "%s: %s", cmds[i],
                  out);
    /* It connected, and sent nothing. */
    ck_assert_int_eq(squat_received(&sq, 5000), 0);
  }
  /* And a master of this configuration does not start beside it. */
  h_start(&p, conf, &(struct h_opts){.dir = p.dir});
  ck_assert_int_eq(h_wait_exit(&p, 15000), 0);
  h_assert_exit_status(&p, 77);
  ck_assert_msg(h_log_has(&p, "someone else has taken the path"),
                "no refusal in the log");
  squat_stop(&sq);
  ck_assert_int_eq(sh("rm -rf '%s'", shared), 0);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_hijack");
  TCase *tc = tcase_create("hijack");
  tcase_set_timeout(tc, 90);
  tcase_add_test(tc, test_pidfile_through_a_link_is_refused);
  tcase_add_test(tc, test_probe_child_runs_modules_as_user_with_no_master_fds);
  suite_add_tcase(s, tc);
  TCase *sq = tcase_create("squat");
  tcase_set_timeout(sq, 90);
  /* Unchecked: run in the runner, so the users go even if a test fails. */
  tcase_add_unchecked_fixture(sq, users_create, users_remove);
  tcase_add_test(sq, test_squatted_control_socket_directory_is_refused);
  tcase_add_test(sq, test_client_refuses_a_socket_of_another_user);
  suite_add_tcase(s, sq);
  return s;
}

int main(void) { return check_main(suite()); }
