#define _DEFAULT_SOURCE /* usleep */
/*
 * testmod.c - a module for the end-to-end tests: protocols that answer with
 * the worker's pid, crash, or spin; listeners and schedulers that record
 * what they saw in files named by the config.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <aio.h>

/* Answers every read with "pid <pid>\n": which worker served this. */
static void pid_data(aio_conn_t *c, const char *data, size_t len) {
  char out[64];
  (void)data;
  (void)len;
  int n = snprintf(out, sizeof(out), "pid %d\n", (int)getpid());
  aio_write(c, out, (size_t)n);
}
AIO_PROTOCOL(whoami, .data_received = pid_data);

/* Crashes the worker on the first byte. */
static void crash_data(aio_conn_t *c, const char *data, size_t len) {
  (void)c;
  (void)data;
  (void)len;
  raise(SIGSEGV);
}
AIO_PROTOCOL(crasher, .data_received = crash_data);

/* Spins forever on the first byte: the loop never returns. The counter
 * is unsigned: a signed one overflows, which UBSan (the sanitizer build)
 * turns into an abort, and the worker would end by itself. */
static void spin_data(aio_conn_t *c, const char *data, size_t len) {
  (void)c;
  (void)data;
  (void)len;
  for (volatile unsigned x = 0;; x++)
    ;
}
AIO_PROTOCOL(spinner, .data_received = spin_data);

/* Answers after the peer's line, slowly: for drain tests. "sleep N\n"
 * waits N ms in the loop (a timer would be nicer; this keeps it simple)
 * then answers "done\n". */
static void slow_data(aio_conn_t *c, const char *data, size_t len) {
  int ms = 0;
  if (len > 6 && strncmp(data, "sleep ", 6) == 0)
    ms = atoi(data + 6);
  usleep((useconds_t)ms * 1000);
  aio_write(c, "done\n", 5);
}
AIO_PROTOCOL(slow, .data_received = slow_data);

/* "big N\n" answers N bytes of 'x' in one aio_write(), then "\nr=R\n"
 * with what that write returned: for write_limit tests. */
static void big_data(aio_conn_t *c, const char *data, size_t len) {
  if (len < 5 || strncmp(data, "big ", 4) != 0)
    return;
  size_t n = (size_t)strtoul(data + 4, NULL, 10);
  char *blob = malloc(n ? n : 1);
  if (blob == NULL)
    return;
  memset(blob, 'x', n);
  int r = aio_write(c, blob, n);
  free(blob);
  char tail[32];
  int m = snprintf(tail, sizeof(tail), "\nr=%d\n", r);
  aio_write(c, tail, (size_t)m);
}
AIO_PROTOCOL(big, .data_received = big_data);

/* "stream N\n" sends N bytes of 'y' in 16 KiB pieces, as many as
 * write_limit lets it queue, and goes on from write_drained after each
 * -ENOBUFS; then "\nend\n". For the write_drained test. */
struct stream {
  size_t left;
  int ended;
};

static void stream_pump(aio_conn_t *c) {
  struct stream *st = aio_conn_get_data(c);
  static char piece[16384];
  memset(piece, 'y', sizeof(piece));
  while (st && st->left > 0) {
    size_t n = st->left < sizeof(piece) ? st->left : sizeof(piece);
    int r = aio_write(c, piece, n);
    if (r == -ENOBUFS)
      return; /* write_drained calls us again */
    if (r < 0) {
      aio_close(c);
      return;
    }
    st->left -= n;
  }
  if (st && !st->ended) {
    st->ended = 1;
    aio_write(c, "\nend\n", 5);
  }
}

static void stream_data(aio_conn_t *c, const char *data, size_t len) {
  if (len < 8 || strncmp(data, "stream ", 7) != 0 || aio_conn_get_data(c))
    return;
  struct stream *st = calloc(1, sizeof(*st));
  if (st == NULL)
    return;
  st->left = (size_t)strtoul(data + 7, NULL, 10);
  aio_conn_set_data(c, st);
  stream_pump(c);
}

static void stream_lost(aio_conn_t *c, int status) {
  (void)status;
  free(aio_conn_get_data(c));
}
AIO_PROTOCOL(stream, .data_received = stream_data, .write_drained = stream_pump,
             .connection_lost = stream_lost);

/* A protocol that sets its own timeouts, one command per read: "idle MS"
 * and "send MS" call aio_conn_set_timeout(); "deadline MS" sets a deadline
 * that answers "deadline\n" and closes, "deadline-close MS" one with no
 * callback (the runner closes); "bad" asks for a negative timeout. Each
 * answers "ok R\n" with what the call returned; anything else "?\n". */
static void timer_deadline(aio_conn_t *c) {
  aio_write(c, "deadline\n", 9);
  aio_close(c);
}

static void timer_data(aio_conn_t *c, const char *data, size_t len) {
  char cmd[64], out[32];
  snprintf(cmd, sizeof(cmd), "%.*s", (int)len, data);
  double s = strtod(strchr(cmd, ' ') ? strchr(cmd, ' ') : "0", NULL) / 1000;
  int r;
  if (strncmp(cmd, "idle ", 5) == 0)
    r = aio_conn_set_timeout(c, AIO_TIMEOUT_IDLE, s);
  else if (strncmp(cmd, "send ", 5) == 0)
    r = aio_conn_set_timeout(c, AIO_TIMEOUT_SEND, s);
  else if (strncmp(cmd, "deadline ", 9) == 0)
    r = aio_conn_set_deadline(c, s, timer_deadline);
  else if (strncmp(cmd, "deadline-close ", 15) == 0)
    r = aio_conn_set_deadline(c, s, NULL);
  else if (strncmp(cmd, "bad", 3) == 0)
    r = aio_conn_set_timeout(c, AIO_TIMEOUT_IDLE, -1);
  else {
    aio_write(c, "?\n", 2);
    return;
  }
  int n = snprintf(out, sizeof(out), "ok %d\n", r);
  aio_write(c, out, (size_t)n);
}
AIO_PROTOCOL(timer, .data_received = timer_data);

/* A plain function that is not declared: the loader must refuse it. It is
 * exported (modules build with hidden visibility), so the loader can tell
 * "exists but undeclared" from "no such symbol". */
AIO_EXPORT int undeclared(void);
int undeclared(void) { return 0; }

static int job(aio_event_t *ev) {
  (void)ev;
  return 0;
}
AIO_SCHEDULER(job);

static void listener(const aio_signal_t *sig) { (void)sig; }
AIO_LISTENER(listener);

/* aio_config_get() off the loop thread: a line "SECTION KEY" is answered
 * with the value as a thread of the module's own reads it ("-" for NULL). */
struct conf_query {
  char section[64], key[64];
  const char *value;
};

static void *conf_thread(void *arg) {
  struct conf_query *q = arg;
  q->value = aio_config_get(q->section, q->key);
  return NULL;
}

static const char *conf_on_thread(const char *section, const char *key) {
  struct conf_query q = {.value = NULL};
  snprintf(q.section, sizeof(q.section), "%s", section);
  snprintf(q.key, sizeof(q.key), "%s", key);
  pthread_t t;
  if (pthread_create(&t, NULL, conf_thread, &q) != 0)
    return "(no thread)";
  pthread_join(t, NULL);
  return q.value;
}

static void confget_data(aio_conn_t *c, const char *data, size_t len) {
  char line[160], section[64], key[64], out[512];
  snprintf(line, sizeof(line), "%.*s", (int)(len < 159 ? len : 159), data);
  if (sscanf(line, "%63s %63s", section, key) != 2)
    return;
  const char *v = conf_on_thread(section, key);
  int n = snprintf(out, sizeof(out), "%s\n", v ? v : "-");
  aio_write(c, out, (size_t)n);
}
AIO_PROTOCOL(confget, .data_received = confget_data);

/* `aio confget SECTION KEY`: the value read in the command and on a thread
 * of its own, "-" for NULL. */
static int confget_cmd(int argc, char **argv) {
  if (argc != 3)
    return 64;
  const char *here = aio_config_get(argv[1], argv[2]);
  const char *there = conf_on_thread(argv[1], argv[2]);
  printf("command: %s\nthread: %s\n", here ? here : "-", there ? there : "-");
  return 0;
}
AIO_COMMAND(confget_cmd);

AIO_MODULE(.name = "testmod", .description = "test fixtures");
