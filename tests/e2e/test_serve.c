/*
 * test_serve.c - `aio run` serves the example module and the built-in
 * protocols over real sockets: the seed README's addition server, echo over
 * TCP, UDP and a unix socket, and the hello HTTP responder.
 */
#include <check.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "harness.h"

static struct aio_proc P;
static int port_add, port_echo, port_udp, port_hello;
static char sock_path[256];

static void start(void) {
  char conf[2048];
  char dir[128];
  h_tmpdir(dir, sizeof(dir));
  snprintf(sock_path, sizeof(sock_path), "%s/echo.sock", dir);
  port_add = h_free_port();
  port_echo = h_free_port();
  port_udp = h_free_port();
  port_hello = h_free_port();
  snprintf(conf, sizeof(conf),
           "[aio]\n"
           "modules = addition\n"
           "module_path = %s\n"
           "workers = 2\n"
           "\n"
           "[server:addition]\n"
           "protocol = addition.protocol\n"
           "address = 127.0.0.1\n"
           "port = %d\n"
           "\n"
           "[server:echo]\n"
           "protocol = aio.echo\n"
           "address = 127.0.0.1\n"
           "port = %d\n"
           "\n"
           "[server/udp]\n"
           "protocol = aio.echo\n"
           "type = udp\n"
           "address = 127.0.0.1\n"
           "port = %d\n"
           "\n"
           "[server:unix]\n"
           "protocol = aio.echo\n"
           "path = %s\n"
           "\n"
           "[server:hello]\n"
           "protocol = aio.hello\n"
           "address = 127.0.0.1\n"
           "port = %d\n",
           AIO_EXAMPLE_MODULES, port_add, port_echo, port_udp, sock_path,
           port_hello);
  h_start_ready(&P, conf, NULL);
}

START_TEST(test_addition_answers_sum) {
  start();
  char buf[256];
  ck_assert_int_eq(
      h_exchange_once(port_add, "2 + 2 + 3\n", "\n", buf, sizeof(buf), 5000),
      H_OK);
  ck_assert_str_eq(buf, "7\n");
  ck_assert_int_eq(h_exchange_once(port_add, "1+1\n40 + 2\nnonsense\n", "error",
                                   buf, sizeof(buf), 5000),
                   H_OK);
  ck_assert_str_eq(buf, "2\n42\nerror: expected N + N ...\n");
  h_stop_ok(&P);
}
END_TEST

START_TEST(test_echo_tcp_udp_unix) {
  start();
  char buf[256];
  ck_assert_int_eq(
      h_exchange_once(port_echo, "hello echo\n", "\n", buf, sizeof(buf), 5000),
      H_OK);
  ck_assert_str_eq(buf, "hello echo\n");
  char *r = h_udp_exchange(port_udp, "datagram", 5000);
  ck_assert_ptr_nonnull(r);
  ck_assert_str_eq(r, "datagram");
  free(r);
  int fd = h_connect_unix(sock_path, 5000);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(h_send(fd, "over unix\n", 10), 0);
  ck_assert_int_eq(h_recv_until(fd, buf, sizeof(buf), "\n", 5000), 10);
  ck_assert_str_eq(buf, "over unix\n");
  close(fd);
  h_stop_ok(&P);
}
END_TEST

START_TEST(test_hello_keepalive_pipelining_close) {
  start();
  int fd = h_connect(port_hello, 5000);
  ck_assert_int_ge(fd, 0);
  char buf[8192];
  /* Two pipelined requests in one write, then one with Connection: close. */
  const char *two = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
                    "GET /b HTTP/1.1\r\nHost: x\r\n\r\n";
  ck_assert_int_eq(h_send(fd, two, strlen(two)), 0);
  int n = h_recv_until(fd, buf, sizeof(buf), "World!\n", 5000);
  ck_assert_int_gt(n, 0);
  /* wait for both answers */
  while (strstr(strstr(buf, "World!\n") + 1, "World!\n") == NULL) {
    int m =
        h_recv_until(fd, buf + n, sizeof(buf) - (size_t)n, "World!\n", 5000);
    ck_assert_int_gt(m, 0);
    n += m;
  }
  ck_assert_ptr_nonnull(strstr(buf, "HTTP/1.1 200 OK"));
  const char *c = "GET / HTTP/1.1\r\nConnection: close\r\n\r\n";
  ck_assert_int_eq(h_send(fd, c, strlen(c)), 0);
  n = h_recv_until(fd, buf, sizeof(buf), NULL, 5000); /* until EOF */
  ck_assert_int_gt(n, 0);
  ck_assert_ptr_nonnull(strstr(buf, "Connection: close"));
  close(fd);
  ck_assert_int_eq(h_exchange_once(port_hello, "BOGUS\r\n\r\n", NULL, buf,
                                   sizeof(buf), 5000),
                   H_OK);
  ck_assert_ptr_nonnull(strstr(buf, "400 Bad Request"));
  h_stop_ok(&P);
}
END_TEST

START_TEST(test_mapped_command_runs_module_function) {
  char dir[128], out[4096];
  h_tmpdir(dir, sizeof(dir));
  char conf[1024];
  snprintf(conf, sizeof(conf),
           "[aio]\nmodules = addition\nmodule_path = %s\n\n"
           "[aio/commands]\nadd = addition.add\n",
           AIO_EXAMPLE_MODULES);
  ck_assert_int_eq(h_write(dir, "aio.conf", conf), 0);
  const char *ok[] = {"add", "2", "2", "3", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), ok), 0);
  ck_assert_str_eq(out, "7\n");
  const char *bad[] = {"add", "two", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), bad), 64);
  ck_assert_ptr_nonnull(strstr(out, "'two' is not a whole number"));
  const char *unknown[] = {"subtract", "1", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), unknown), 64);
  ck_assert_ptr_nonnull(strstr(out, "unknown command 'subtract'"));
}
END_TEST

START_TEST(test_config_may_refer_to_module_defaults) {
  /* [addition] max_line comes from the module's own defaults, which are
   * known only once the module is loaded. */
  char dir[128], out[4096], conf[1024];
  h_tmpdir(dir, sizeof(dir));
  snprintf(conf, sizeof(conf),
           "[aio]\nmodules = addition\nmodule_path = %s\n\n"
           "[mine]\nlimit = ${addition:max_line}\n"
           "missing = ${addition:nope}\n",
           AIO_EXAMPLE_MODULES);
  ck_assert_int_eq(h_write(dir, "aio.conf", conf), 0);
  const char *get[] = {"config", "-g", "mine:limit", NULL};
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), get), 78);
  ck_assert_ptr_nonnull(strstr(out, "aio.conf:7:"));
  ck_assert_ptr_nonnull(strstr(out, "no key 'nope' in [addition]"));
  ck_assert_ptr_null(strstr(out, "max_line"));
  snprintf(conf, sizeof(conf),
           "[aio]\nmodules = addition\nmodule_path = %s\n\n"
           "[mine]\nlimit = ${addition:max_line}\n",
           AIO_EXAMPLE_MODULES);
  ck_assert_int_eq(h_write(dir, "aio.conf", conf), 0);
  ck_assert_int_eq(h_aio(dir, out, sizeof(out), get), 0);
  ck_assert_str_eq(out, "1024\n");
}
END_TEST

/* A protocol's own thread reads the configuration (module defaults
 * included) with aio_config_get(), not only the loop's thread. */
START_TEST(test_config_readable_from_a_module_thread) {
  struct aio_proc p;
  char conf[2048], buf[256];
  int port = h_free_port();
  h_conf(conf, sizeof(conf), "testmod baddecl", "workers = 1\n");
  h_conf_add(conf, sizeof(conf), "[mine]\ncolour = blue\n");
  h_conf_server(conf, sizeof(conf), "conf", "testmod.confget", port);
  h_start_ready(&p, conf, NULL);
  ck_assert_int_eq(
      h_exchange_once(port, "mine colour\n", "\n", buf, sizeof(buf), 5000),
      H_OK);
  ck_assert_str_eq(buf, "blue\n");
  ck_assert_int_eq(
      h_exchange_once(port, "baddecl greeting\n", "\n", buf, sizeof(buf), 5000),
      H_OK);
  ck_assert_str_eq(buf, "hello from the module\n");
  h_stop_ok(&p);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("e2e_serve");
  TCase *tc = tcase_create("serve");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_addition_answers_sum);
  tcase_add_test(tc, test_echo_tcp_udp_unix);
  tcase_add_test(tc, test_hello_keepalive_pipelining_close);
  tcase_add_test(tc, test_mapped_command_runs_module_function);
  tcase_add_test(tc, test_config_may_refer_to_module_defaults);
  tcase_add_test(tc, test_config_readable_from_a_module_thread);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
