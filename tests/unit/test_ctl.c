/*
 * test_ctl.c - where the control socket of a configuration is by default
 * (a directory of the user's own: $XDG_RUNTIME_DIR only when it is
 * private, else /run/aio for root or /tmp/aio-UID), and the peer check
 * on a connected socket.
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check_main.h"
#include "ctl.h"

static char dir[64], conf[128];

static void setup(void) {
  snprintf(dir, sizeof(dir), "/tmp/aio-ctl-test-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(conf, sizeof(conf), "%s/aio.conf", dir);
  FILE *f = fopen(conf, "w");
  ck_assert_ptr_nonnull(f);
  fputs("[aio]\nworkers = 1\n", f);
  fclose(f);
  unsetenv("XDG_RUNTIME_DIR");
}

static void teardown(void) {
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

/* The default path's directory, new. */
static char *default_dir_of(void) {
  char *path = ctl_socket_path_lenient(conf);
  ck_assert_ptr_nonnull(path);
  char *slash = strrchr(path, '/');
  ck_assert_ptr_nonnull(slash);
  ck_assert_msg(strncmp(slash, "/aio-", 5) == 0 &&
                    strcmp(path + strlen(path) - 5, ".sock") == 0,
                "socket name: %s", path);
  *slash = '\0';
  return path;
}

START_TEST(test_default_is_a_directory_of_the_user) {
  char *d = default_dir_of();
  char want[64];
  if (geteuid() == 0)
    snprintf(want, sizeof(want), "/run/aio");
  else
    snprintf(want, sizeof(want), "/tmp/aio-%u", (unsigned)geteuid());
  ck_assert_str_eq(d, want);
  free(d);
}
END_TEST

START_TEST(test_xdg_runtime_dir_only_when_private) {
  char xdg[128];
  snprintf(xdg, sizeof(xdg), "%s/run", dir);
  ck_assert_int_eq(mkdir(xdg, 0700), 0);
  setenv("XDG_RUNTIME_DIR", xdg, 1);
  char *d = default_dir_of();
  ck_assert_str_eq(d, xdg);
  free(d);
  /* Open to others: not used. */
  ck_assert_int_eq(chmod(xdg, 0755), 0);
  d = default_dir_of();
  ck_assert_str_ne(d, xdg);
  free(d);
  /* A symbolic link to a private one: not used either. */
  char link[160];
  snprintf(link, sizeof(link), "%s/link", dir);
  ck_assert_int_eq(chmod(xdg, 0700), 0);
  ck_assert_int_eq(symlink(xdg, link), 0);
  setenv("XDG_RUNTIME_DIR", link, 1);
  d = default_dir_of();
  ck_assert_str_ne(d, link);
  free(d);
  /* Relative: not used. */
  setenv("XDG_RUNTIME_DIR", "run", 1);
  d = default_dir_of();
  ck_assert_str_ne(d, "run");
  free(d);
}
END_TEST

START_TEST(test_paths_set_by_the_operator_are_not_checked) {
  char err[256] = "";
  ck_assert_int_eq(ctl_socket_dir("/tmp/x.sock", 0, err, sizeof(err)), 0);
  ck_assert_int_eq(ctl_socket_dir("/nonexistent/x.sock", 0, err, sizeof(err)),
                   0);
}
END_TEST

START_TEST(test_peer_of_the_same_user_is_trusted) {
  int sv[2];
  char err[256] = "";
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  ck_assert_int_eq(ctl_peer_trusted(sv[0], err, sizeof(err)), 0);
  close(sv[0]);
  close(sv[1]);
  /* Not a socket: an error, not trust. */
  int p[2];
  ck_assert_int_eq(pipe(p), 0);
  ck_assert_int_lt(ctl_peer_trusted(p[0], err, sizeof(err)), 0);
  close(p[0]);
  close(p[1]);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("ctl");
  TCase *tc = tcase_create("path");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_default_is_a_directory_of_the_user);
  tcase_add_test(tc, test_xdg_runtime_dir_only_when_private);
  tcase_add_test(tc, test_paths_set_by_the_operator_are_not_checked);
  tcase_add_test(tc, test_peer_of_the_same_user_is_trusted);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
