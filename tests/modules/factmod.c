/*
 * factmod.c - factories for tests/e2e/test_factory.c.
 *
 * `serve` hands its server's socket to a protocol of its own (not declared
 * with AIO_PROTOCOL) with per-server state read from the server's section:
 * "ask\n" is answered "ANSWER\n", "slow MS\n" "ANSWER late\n" after MS ms
 * (a libuv timer, so a reload can come while it waits). `hold` keeps the
 * worker held (aio_server_hold) and releases it [server:NAME] release_ms
 * after the drain began (-1: never), as a factory with handles of its own
 * would after closing them. `emitter` and `record` are for the command and
 * init emit tests: `[factmod] out` names the file `record` appends to.
 */
#define _DEFAULT_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include <aio.h>

/* ---- serve: a protocol per server ---------------------------------------- */

/* One per [server:NAME] this worker serves: static, so there is nothing to
 * free when the worker goes. */
struct factmod_server {
  char answer[64];
};
static struct factmod_server factmod_servers[16];
static size_t factmod_nservers;

/* Per connection: the timer of a "slow" request. */
struct factmod_conn {
  uv_timer_t timer;
  aio_conn_t *conn;
};

static void factmod_answer(aio_conn_t *c, const char *suffix) {
  const struct factmod_server *s = aio_conn_server_data(c);
  char out[128];
  int n =
      snprintf(out, sizeof(out), "%s%s\n", s ? s->answer : "(no data)", suffix);
  aio_write(c, out, (size_t)n);
}

static void factmod_late(uv_timer_t *t) {
  struct factmod_conn *fc = t->data;
  factmod_answer(fc->conn, " late");
}

static void factmod_made(aio_conn_t *c) {
  struct factmod_conn *fc = calloc(1, sizeof(*fc));
  if (fc == NULL) {
    aio_close(c);
    return;
  }
  fc->conn = c;
  uv_timer_init(aio_loop(), &fc->timer);
  fc->timer.data = fc;
  aio_conn_set_data(c, fc);
}

static void factmod_data(aio_conn_t *c, const char *data, size_t len) {
  struct factmod_conn *fc = aio_conn_get_data(c);
  if (len >= 5 && strncmp(data, "slow ", 5) == 0 && fc)
    uv_timer_start(&fc->timer, factmod_late, (uint64_t)atoi(data + 5), 0);
  else
    factmod_answer(c, "");
}

static void factmod_free(uv_handle_t *h) { free(h->data); }

static void factmod_lost(aio_conn_t *c, int status) {
  struct factmod_conn *fc = aio_conn_get_data(c);
  (void)status;
  if (fc)
    uv_close((uv_handle_t *)&fc->timer, factmod_free);
}

static const aio_protocol_t factmod_protocol = {
    .connection_made = factmod_made,
    .data_received = factmod_data,
    .connection_lost = factmod_lost,
};

static int serve(aio_server_t *server) {
  char section[128];
  snprintf(section, sizeof(section), "server:%s", server->name);
  const char *answer = aio_config_get(section, "answer");
  if (factmod_nservers == sizeof(factmod_servers) / sizeof(*factmod_servers))
    return -1;
  struct factmod_server *s = &factmod_servers[factmod_nservers++];
  snprintf(s->answer, sizeof(s->answer), "%s", answer ? answer : "none");
  int err = aio_server_serve(server, &factmod_protocol, s);
  if (err)
    aio_log(AIO_LOG_ERROR, "factmod: aio_server_serve: %d", err);
  /* A second time is refused. */
  else if (aio_server_serve(server, &factmod_protocol, s) != -EALREADY)
    return -1;
  return err;
}
AIO_FACTORY(serve);

/* ---- hold: a factory with handles of its own ------------------------------
 */

static aio_server_t *hold_server;
static uv_timer_t hold_watch, hold_release;
static long hold_release_ms;

static void hold_released(uv_timer_t *t) {
  (void)t;
  aio_log(AIO_LOG_INFO, "factmod: released (%d)",
          aio_server_release(hold_server));
  uv_close((uv_handle_t *)&hold_watch, NULL);
  uv_close((uv_handle_t *)&hold_release, NULL);
}

/* A factory learns of the drain from aio_conn_draining(NULL). */
static void hold_look(uv_timer_t *t) {
  if (!aio_conn_draining(NULL))
    return;
  uv_timer_stop(t);
  aio_log(AIO_LOG_INFO, "factmod: drain seen, releasing in %ld ms",
          hold_release_ms);
  if (hold_release_ms >= 0)
    uv_timer_start(&hold_release, hold_released, (uint64_t)hold_release_ms, 0);
}

static int hold(aio_server_t *server) {
  char section[128];
  snprintf(section, sizeof(section), "server:%s", server->name);
  long long ms = 0;
  if (aio_config_int(section, "release_ms", 0, &ms))
    return -1;
  hold_release_ms = (long)ms;
  hold_server = server;
  if (aio_server_release(server) != -EINVAL || aio_server_hold(server))
    return -1;
  uv_timer_init(server->loop, &hold_watch);
  uv_timer_init(server->loop, &hold_release);
  uv_timer_start(&hold_watch, hold_look, 10, 10);
  return 0;
}
AIO_FACTORY(hold);

/* ---- signals: emitted from a command and from init ------------------------
 */

/* Appends {"sig": NAME, "data": DATA} and a newline to [factmod] out,
 * with one write() on an O_APPEND descriptor (tests/e2e/records.h). */
static void record(const aio_signal_t *sig) {
  const char *path = aio_config_get("factmod", "out");
  json_t *rec = json_pack("{s:s,s:O}", "sig", sig->name, "data",
                          sig->data ? sig->data : json_null());
  char *line = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
  json_decref(rec);
  int fd = path && line
               ? open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644)
               : -1;
  if (fd >= 0) {
    size_t n = strlen(line);
    line[n] = '\n'; /* json_dumps's NUL becomes the newline */
    ssize_t w = write(fd, line, n + 1);
    (void)w;
    close(fd);
  }
  free(line);
}
AIO_LISTENER(record);

/* `aio NAME [SIGNAL [N]]`: emits SIGNAL (default "cmd-said") N times with
 * {"n": i}, prints what each aio_emit() returned, exits 0 when all were 0
 * and 3 otherwise. */
static int emitter(int argc, char **argv) {
  const char *signal = argc > 1 ? argv[1] : "cmd-said";
  int n = argc > 2 ? atoi(argv[2]) : 1, bad = 0;
  for (int i = 0; i < n; i++) {
    int rc = aio_emit_new(signal, json_pack("{s:i}", "n", i));
    printf("emit %d: %d\n", i, rc);
    bad |= rc != 0;
  }
  return bad ? 3 : 0;
}
AIO_COMMAND(emitter);

/* [factmod] init_emits = N: init emits "init-said" N times with {"n": i},
 * each return value logged. */
static int factmod_init(void) {
  long long n = 0;
  aio_config_int("factmod", "init_emits", 0, &n);
  for (long long i = 0; i < n; i++) {
    int rc = aio_emit_new("init-said", json_pack("{s:I}", "n", i));
    if (rc)
      aio_log(AIO_LOG_WARN, "factmod: init emit %lld: %d", i, rc);
  }
  return 0;
}

AIO_MODULE(.name = "factmod", .description = "factories that serve (tests)",
           .init = factmod_init);
