/*
 * test_backpressure.c - aio_write() and [aio] write_limit over a real
 * connection: a write that would queue past the limit is refused whole,
 * with not one byte of it sent; a write within it arrives whole.
 */
#define _GNU_SOURCE
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "process_util.h"

/* Ask for "big n", read to the "\nr=R\n" trailer. Returns R; *xs gets how
 * many bytes of the blob arrived before it. */
static int ask_big(int port, size_t n, size_t *xs) {
  int fd = h_connect(port, 3000);
  ck_assert_int_ge(fd, 0);
  char req[64];
  int len = snprintf(req, sizeof(req), "big %zu\n", n);
  ck_assert_int_eq(h_send(fd, req, (size_t)len), 0);
  static char chunk[65536];
  char tail[40] = "", tmp[80];
  size_t got = 0;
  long long deadline = h_now_ms() + 10000;
  int r = 1;
  while (r == 1 && h_now_ms() < deadline) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 100) <= 0)
      continue;
    ssize_t m = recv(fd, chunk, sizeof(chunk), 0);
    if (m < 0 && errno == EINTR)
      continue;
    ck_assert_int_gt(m, 0);
    got += (size_t)m;
    /* The trailer may straddle two reads: keep the last 32 bytes. */
    size_t add = m < 32 ? (size_t)m : 32, keep = strlen(tail);
    memcpy(tmp, tail, keep);
    memcpy(tmp + keep, chunk + m - add, add);
    tmp[keep + add] = '\0';
    size_t all = keep + add, from = all > 32 ? all - 32 : 0;
    memcpy(tail, tmp + from, all - from + 1);
    char *t = strstr(tail, "\nr=");
    if (t && strchr(t + 3, '\n')) {
      r = atoi(t + 3);
      *xs = got - strlen(t);
    }
  }
  close(fd);
  ck_assert_msg(r != 1, "no trailer after %zu bytes", got);
  return r;
}

START_TEST(test_write_past_write_limit_sends_nothing) {
  struct aio_proc p;
  int port = pu_start_one(&p, "workers = 1\nwrite_limit = 65536\n", "big");
  size_t xs = 0;
  /* Far more than loopback buffers take at once, so a partial send
   * would show. */
  ck_assert_int_eq(ask_big(port, 32u << 20, &xs), -ENOBUFS);
  ck_assert_msg(xs == 0, "%zu bytes of a refused write were sent", xs);
  ck_assert_int_eq(ask_big(port, 60000, &xs), 0);
  ck_assert_int_eq(xs, 60000);
  h_stop_ok(&p);
}
END_TEST

START_TEST(test_write_drained_resumes_a_refused_transfer) {
  struct aio_proc p;
  int port = pu_start_one(&p, "workers = 1\nwrite_limit = 65536\n", "stream");
  int fd = h_connect(port, 3000);
  ck_assert_int_ge(fd, 0);
  const size_t want = 8u << 20; /* 128 times the limit */
  ck_assert_int_eq(h_send(fd, "stream 8388608\n", 15), 0);
  static char chunk[65536];
  size_t ys = 0, other = 0;
  char last[8] = "";
  long long deadline = h_now_ms() + 20000;
  while (h_now_ms() < deadline) {
    struct pollfd pfd = {.fd = fd, .events = POLLIN};
    if (poll(&pfd, 1, 100) <= 0)
      continue;
    ssize_t m = recv(fd, chunk, sizeof(chunk), 0);
    if (m <= 0)
      break;
    for (ssize_t i = 0; i < m; i++) {
      if (chunk[i] == 'y')
        ys++;
      else
        other++;
      memmove(last, last + 1, 4);
      last[4] = chunk[i];
    }
    if (strcmp(last, "\nend\n") == 0)
      break;
  }
  close(fd);
  ck_assert_str_eq(last, "\nend\n");
  ck_assert_uint_eq(ys, want);
  ck_assert_uint_eq(other, 5);
  h_stop_ok(&p);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_backpressure");
  TCase *tc = tcase_create("backpressure");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_write_past_write_limit_sends_nothing);
  tcase_add_test(tc, test_write_drained_resumes_a_refused_transfer);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return pu_run_suite(suite()); }
