/*
 * fetch.c - real async work on the worker's loop, with libuv: the
 * scheduler fetch.get makes an HTTP/1.0 request over TCP and finishes its
 * run (aio_event_done) when the answer has arrived, or fails it past a
 * per-request timeout; the listener fetch.append appends each signal's
 * data as one JSON line to a file with uv_fs, and acknowledges the signal
 * (aio_signal_done) once it is written. Neither blocks the loop.
 * examples/fetch/fetch.conf runs both; docs/plugins.md walks through it.
 *
 *   [fetch]
 *   host = 127.0.0.1      ; a numeric IPv4 or IPv6 address
 *   port = 8080
 *   path = /
 *   timeout = 5s          ; per request
 *   file = fetch.ndjson   ; fetch.append's
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <aio.h>
#include <uv.h>

/* An answer larger than this fails the run instead of growing without
 * bound. */
#define FETCH_MAX_ANSWER (64 * 1024)

/* Where the tests point the module (their own loopback server and file);
 * 0 and NULL: the configuration. */
static int test_port;
static double test_timeout;
static const char *test_file;

/* ---- fetch.get: one HTTP/1.0 request per run --------------------------- */

struct request {
  aio_event_t *ev; /* valid until aio_event_done */
  uv_tcp_t tcp;
  uv_connect_t connect;
  uv_write_t write;
  uv_timer_t timer;
  int open;     /* handles not closed yet */
  int finished; /* aio_event_done was called */
  char target[80];
  char head[512];
  char *answer;
  size_t len;
  char chunk[16384];
};

static void request_closed(uv_handle_t *h) {
  struct request *r = h->data;
  if (--r->open == 0) {
    free(r->answer);
    free(r);
  }
}

/* End the run once: status 0 with result, or a failure and its message. */
static void request_finish(struct request *r, int status, json_t *result) {
  if (r->finished) {
    json_decref(result);
    return;
  }
  r->finished = 1;
  aio_event_done(r->ev, status, result);
  json_decref(result);
  uv_close((uv_handle_t *)&r->tcp, request_closed);
  uv_close((uv_handle_t *)&r->timer, request_closed);
}

static void request_fail(struct request *r, int status, const char *what) {
  char msg[256];
  snprintf(msg, sizeof(msg), "%s: %s", r->target, what);
  request_finish(r, status, json_string(msg));
}

/* "HTTP/1.x NNN ...\r\n...\r\n\r\nbody": 2xx succeeds with
 * {"status": NNN, "body": "..."}, anything else fails with a message. */
static void request_answered(struct request *r) {
  int code = 0;
  const char *body = r->answer ? strstr(r->answer, "\r\n\r\n") : NULL;
  if (body == NULL || sscanf(r->answer, "HTTP/1.%*d %d", &code) != 1) {
    request_fail(r, -EPROTO, "not an HTTP answer");
    return;
  }
  if (code < 200 || code > 299) {
    char what[32];
    snprintf(what, sizeof(what), "HTTP %d", code);
    request_fail(r, code, what);
    return;
  }
  request_finish(r, 0,
                 json_pack("{s:i,s:s}", "status", code, "body", body + 4));
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  struct request *r = h->data;
  (void)suggested;
  *buf = uv_buf_init(r->chunk, sizeof(r->chunk));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  struct request *r = s->data;
  if (nread == UV_EOF) {
    request_answered(r);
  } else if (nread < 0) {
    request_fail(r, (int)nread, uv_strerror((int)nread));
  } else if (r->len + (size_t)nread > FETCH_MAX_ANSWER) {
    request_fail(r, -EMSGSIZE, "answer over 64 KiB");
  } else if (nread > 0) {
    char *more = realloc(r->answer, r->len + (size_t)nread + 1);
    if (more == NULL) {
      request_fail(r, -ENOMEM, "out of memory");
      return;
    }
    r->answer = more;
    memcpy(r->answer + r->len, buf->base, (size_t)nread);
    r->len += (size_t)nread;
    r->answer[r->len] = '\0';
  }
}

static void on_written(uv_write_t *w, int status) {
  struct request *r = w->data;
  if (status < 0)
    request_fail(r, status, uv_strerror(status));
}

static void on_connect(uv_connect_t *c, int status) {
  struct request *r = c->data;
  if (r->finished)
    return; /* timed out meanwhile */
  if (status < 0) {
    request_fail(r, status, uv_strerror(status));
    return;
  }
  uv_buf_t b = uv_buf_init(r->head, (unsigned)strlen(r->head));
  int err = uv_write(&r->write, (uv_stream_t *)&r->tcp, &b, 1, on_written);
  if (err == 0)
    err = uv_read_start((uv_stream_t *)&r->tcp, on_alloc, on_read);
  if (err)
    request_fail(r, err, uv_strerror(err));
}

static void on_timeout(uv_timer_t *t) {
  request_fail(t->data, -ETIMEDOUT, "no answer in time");
}

static int get(aio_event_t *ev) {
  const char *host = aio_config_get("fetch", "host");
  const char *path = aio_config_get("fetch", "path");
  long long port = 0;
  double timeout = 5;
  aio_config_int("fetch", "port", 0, &port);
  aio_config_duration("fetch", "timeout", 5, &timeout);
  if (test_port)
    port = test_port, timeout = test_timeout;
  struct sockaddr_storage sa;
  if (host == NULL || port < 1 || port > 65535 ||
      (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&sa) &&
       uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&sa)))
    return -EINVAL; /* fetch_check says why, in `aio check` */
  struct request *r = calloc(1, sizeof(*r));
  if (r == NULL)
    return -ENOMEM;
  r->ev = ev;
  snprintf(r->target, sizeof(r->target), "%s:%lld", host, port);
  snprintf(r->head, sizeof(r->head),
           "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: aio-fetch\r\n\r\n",
           path ? path : "/", host);
  uv_tcp_init(aio_loop(), &r->tcp);
  uv_timer_init(aio_loop(), &r->timer);
  r->tcp.data = r->timer.data = r->connect.data = r->write.data = r;
  r->open = 2;
  uv_timer_start(&r->timer, on_timeout, (uint64_t)(timeout * 1000), 0);
  int err =
      uv_tcp_connect(&r->connect, &r->tcp, (struct sockaddr *)&sa, on_connect);
  if (err)
    request_fail(r, err, uv_strerror(err));
  return AIO_PENDING; /* finished already when the connect failed */
}
AIO_SCHEDULER(get);

/* The schedule's cb and err: what the run gave, as a fetch-log signal. */
static int log_answer(aio_event_t *ev) {
  aio_emit_new("fetch-log",
               json_pack("{s:s,s:I,s:O?}", "schedule", ev->name, "run",
                         (json_int_t)ev->run, "answer", ev->result));
  return 0;
}
AIO_SCHEDULER(log_answer);

static int log_failure(aio_event_t *ev) {
  aio_log(AIO_LOG_WARN, "[schedule:%s] run %lld: %s", ev->name, ev->run,
          ev->error);
  aio_emit_new("fetch-log",
               json_pack("{s:s,s:I,s:i,s:s}", "schedule", ev->name, "run",
                         (json_int_t)ev->run, "status", ev->status, "error",
                         ev->error ? ev->error : ""));
  return 0;
}
AIO_SCHEDULER(log_failure);

/* ---- fetch.append: one JSON line per signal, with uv_fs ----------------- */

struct append {
  const aio_signal_t *sig; /* valid until aio_signal_done */
  uv_fs_t req;
  uv_file fd;
  int status;
  size_t len, done;
  char line[];
};

static void on_closed(uv_fs_t *req) {
  struct append *a = req->data;
  uv_fs_req_cleanup(req);
  aio_signal_done(a->sig, a->status);
  free(a);
}

/* Close the file, then acknowledge: the line is in the file first. */
static void append_end(struct append *a, int status) {
  a->status = status;
  uv_fs_req_cleanup(&a->req);
  if (a->fd < 0 || uv_fs_close(aio_loop(), &a->req, a->fd, on_closed) < 0) {
    aio_signal_done(a->sig, status);
    free(a);
  }
}

static void on_write(uv_fs_t *req) {
  struct append *a = req->data;
  ssize_t n = req->result;
  if (n < 0) {
    append_end(a, (int)n);
    return;
  }
  a->done += (size_t)n;
  if (a->done == a->len) {
    append_end(a, 0);
    return;
  }
  uv_fs_req_cleanup(req); /* a short write: the rest */
  uv_buf_t b = uv_buf_init(a->line + a->done, (unsigned)(a->len - a->done));
  int err = uv_fs_write(aio_loop(), req, a->fd, &b, 1, -1, on_write);
  if (err)
    append_end(a, err);
}

static void on_open(uv_fs_t *req) {
  struct append *a = req->data;
  if (req->result < 0) {
    append_end(a, (int)req->result);
    return;
  }
  a->fd = (uv_file)req->result;
  uv_fs_req_cleanup(req);
  uv_buf_t b = uv_buf_init(a->line, (unsigned)a->len);
  int err = uv_fs_write(aio_loop(), req, a->fd, &b, 1, -1, on_write);
  if (err)
    append_end(a, err);
}

static int append(const aio_signal_t *sig) {
  const char *file = test_file ? test_file : aio_config_get("fetch", "file");
  char *text = json_dumps(sig->data, JSON_COMPACT | JSON_ENCODE_ANY);
  if (text == NULL || file == NULL) {
    free(text);
    return -EINVAL;
  }
  size_t len = strlen(text);
  struct append *a = malloc(sizeof(*a) + len + 2);
  if (a == NULL) {
    free(text);
    return -ENOMEM;
  }
  *a = (struct append){.sig = sig, .fd = -1, .len = len + 1};
  memcpy(a->line, text, len);
  a->line[len] = '\n';
  free(text);
  a->req.data = a;
  int err =
      uv_fs_open(aio_loop(), &a->req, file,
                 O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644, on_open);
  if (err) {
    free(a);
    return err;
  }
  return AIO_PENDING;
}
AIO_LISTENER_ASYNC(append);

/* ---- its keys, checked by `aio check` ----------------------------------- */

static int fetch_check(void) {
  int problems = 0;
  long long port;
  double timeout;
  const char *host = aio_config_get("fetch", "host");
  struct sockaddr_in6 sa;
  problems += aio_config_int("fetch", "port", 0, &port) != 0;
  problems += aio_config_duration("fetch", "timeout", 5, &timeout) != 0;
  if (port < 0 || port > 65535) {
    aio_check_error("fetch", "port", "%lld is not a port (1 to 65535)", port);
    problems++;
  }
  if (host && uv_ip4_addr(host, 80, (struct sockaddr_in *)&sa) &&
      uv_ip6_addr(host, 80, &sa)) {
    aio_check_error("fetch", "host", "'%s' is not a numeric address", host);
    problems++;
  }
  return problems;
}

/* ---- tests, run by `aio test` against a loopback server of their own ---- */
#ifdef AIO_HAVE_CHECK
#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <unistd.h>

/* A one-connection HTTP server on 127.0.0.1: it reads the request head,
 * keeps it, and writes `answer` (NULL: nothing, the connection held open
 * until the test ends). */
struct server {
  int fd;
  const char *answer;
  char request[1024];
  pthread_t tid;
};

static void *serve(void *arg) {
  struct server *s = arg;
  int c = accept(s->fd, NULL, NULL);
  if (c < 0)
    return NULL;
  size_t n = 0;
  while (n < sizeof(s->request) - 1 && !strstr(s->request, "\r\n\r\n")) {
    ssize_t k = read(c, s->request + n, sizeof(s->request) - 1 - n);
    if (k <= 0)
      break;
    n += (size_t)k;
    s->request[n] = '\0';
  }
  if (s->answer == NULL) {
    char sink[64];
    while (read(c, sink, sizeof(sink)) > 0) /* until the client gives up */
      ;
  } else if (write(c, s->answer, strlen(s->answer)) < 0) {
    perror("fetch test server");
  }
  close(c);
  return NULL;
}

/* Start s on an ephemeral port, and point fetch.get at it. */
static void server_start(struct server *s, const char *answer) {
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  s->answer = answer;
  s->fd = socket(AF_INET, SOCK_STREAM, 0);
  ck_assert_int_ge(s->fd, 0);
  ck_assert_int_eq(bind(s->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(listen(s->fd, 1), 0);
  ck_assert_int_eq(getsockname(s->fd, (struct sockaddr *)&sa, &len), 0);
  test_port = ntohs(sa.sin_port);
  test_timeout = 5;
  ck_assert_int_eq(pthread_create(&s->tid, NULL, serve, s), 0);
}

static void server_join(struct server *s) {
  pthread_join(s->tid, NULL);
  close(s->fd);
}

/* One run of fetch.get against s answering `answer`. */
static aio_test_outcome_t get_from(struct server *s, const char *answer) {
  aio_test_outcome_t o;
  server_start(s, answer);
  ck_assert_int_eq(aio_test_run_schedule("fetch.get", 5000, &o), 0);
  return o;
}

START_TEST(test_get_finishes_with_the_answer) {
  struct server s = {0};
  aio_test_outcome_t o =
      get_from(&s, "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello");
  ck_assert_int_eq(o.status, 0);
  ck_assert_int_eq(json_integer_value(json_object_get(o.result, "status")),
                   200);
  ck_assert_str_eq(json_string_value(json_object_get(o.result, "body")),
                   "hello");
  json_decref(o.result);
  server_join(&s);
  char want[256];
  snprintf(want, sizeof(want), "GET %s HTTP/1.0\r\n",
           aio_config_get("fetch", "path"));
  ck_assert_msg(strncmp(s.request, want, strlen(want)) == 0, "%s", s.request);
}
END_TEST

START_TEST(test_get_fails_on_an_http_error) {
  struct server s = {0};
  aio_test_outcome_t o = get_from(&s, "HTTP/1.0 404 Not Found\r\n\r\n");
  ck_assert_int_eq(o.status, 404);
  ck_assert_ptr_nonnull(strstr(json_string_value(o.result), "HTTP 404"));
  json_decref(o.result);
  server_join(&s);
}
END_TEST

/* A server that never answers: the run fails at its timeout, and the
 * loop was free meanwhile (the test's own timer ran). */
static int ticks;
static void on_tick(uv_timer_t *t) {
  (void)t;
  ticks++;
}

START_TEST(test_get_times_out) {
  struct server s = {0};
  server_start(&s, NULL);
  test_timeout = 0.3;
  uv_timer_t tick;
  uv_timer_init(aio_loop(), &tick);
  uv_timer_start(&tick, on_tick, 20, 20);
  aio_test_outcome_t o;
  ck_assert_int_eq(aio_test_run_schedule("fetch.get", 5000, &o), 0);
  ck_assert_int_eq(o.status, -ETIMEDOUT);
  ck_assert_ptr_nonnull(strstr(json_string_value(o.result), "no answer"));
  /* A loop held by the request would run the repeating tick once at
   * most (once per turn, however late): two or more say it turned. */
  ck_assert_int_ge(ticks, 2);
  json_decref(o.result);
  uv_close((uv_handle_t *)&tick, NULL);
  ck_assert_int_eq(aio_test_run(NULL, NULL, 50), -ETIMEDOUT); /* the close */
  server_join(&s); /* its read ends: the client closed */
}
END_TEST

struct waited {
  int calls, status;
  size_t n;
  int first;
};

static void on_waited(const aio_emit_result_t *r, void *arg) {
  struct waited *w = arg;
  w->calls++;
  w->status = r->status;
  w->n = r->n;
  w->first = r->n ? r->listeners[0].status : -1;
}

static int waited(void *arg) { return ((struct waited *)arg)->calls == 2; }

/* The signal is acknowledged once its line is in the file. */
START_TEST(test_append_writes_then_acknowledges) {
  char path[] = "/tmp/aio-fetch-XXXXXX";
  int fd = mkstemp(path);
  ck_assert_int_ge(fd, 0);
  test_file = path;
  struct waited w = {0};
  json_t *data = json_pack("{s:s,s:i}", "order", "A-1", "cents", 1250);
  ck_assert_int_eq(aio_emit_wait("fetch-log", data, on_waited, &w), 0);
  ck_assert_int_eq(aio_emit_wait("fetch-log", data, on_waited, &w), 0);
  json_decref(data);
  ck_assert_int_eq(aio_test_run(waited, &w, 5000), 0);
  ck_assert_int_eq(w.status, 0);
  ck_assert_uint_eq(w.n, 1);
  ck_assert_int_eq(w.first, 0);
  /* Both lines are in the file by the time they were acknowledged. */
  char got[256] = {0};
  ck_assert_int_gt(read(fd, got, sizeof(got) - 1), 0);
  ck_assert_str_eq(got, "{\"order\":\"A-1\",\"cents\":1250}\n"
                        "{\"order\":\"A-1\",\"cents\":1250}\n");
  close(fd);
  unlink(path);
}
END_TEST

static struct Suite *fetch_tests(void) {
  Suite *s = suite_create("fetch");
  TCase *tc = tcase_create("loop");
  tcase_add_test(tc, test_get_finishes_with_the_answer);
  tcase_add_test(tc, test_get_fails_on_an_http_error);
  tcase_add_test(tc, test_get_times_out);
  tcase_add_test(tc, test_append_writes_then_acknowledges);
  suite_add_tcase(s, tc);
  return s;
}
#define FETCH_TESTS fetch_tests
#else
#define FETCH_TESTS NULL
#endif

AIO_MODULE(.name = "fetch",
           .description = "an HTTP/1.0 request per run, signals appended to "
                          "a file: async work on the loop",
           .defaults = "[fetch]\n"
                       "host = 127.0.0.1\n"
                       "path = /\n"
                       "timeout = 5s\n"
                       "file = fetch.ndjson\n",
           .tests = FETCH_TESTS, .check = fetch_check);
