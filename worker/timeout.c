/*
 * timeout.c - a stream connection's timeouts: idle, send, and a protocol's
 * deadline ([server:NAME] idle_timeout, send_timeout; aio_conn_set_*).
 *
 * One timer per connection, armed for the earliest of its times. Reads and
 * writes only record when they happened (conn.c); the timer, when it
 * fires, sees what moved meanwhile and arms itself again, so traffic costs
 * no timer operation. While output waits, what the peer took is looked at
 * CONN_TIMEOUT_LOOKS times per timeout.
 */
#define _GNU_SOURCE /* SO_LINGER's struct linger */
#include <errno.h>
#include <linux/sockios.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "conn.h"
#include "log.h"
#include "server.h"
#include "worker.h"

/* aio_conn_set_timeout() takes up to a year. */
#define CONN_MAX_TIMEOUT_S (365.0 * 86400)

/* Close with a reset, dropping what is queued: for a peer that stopped
 * reading, whose unsent output would otherwise sit in the kernel until TCP
 * gives up on it (nginx's reset_timedout_connection). */
static void conn_reset(aio_conn_t *c, int status) {
  uv_os_fd_t fd;
  if (c->srv->conf->type == SERVER_TCP && uv_fileno(&c->h.handle, &fd) == 0) {
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
  }
  conn_abort(c, status);
}

static void on_timer(uv_timer_t *t);

/* Seconds as configured to loop milliseconds: 0 stays off, anything else
 * is at least 1 ms. */
static uint64_t conn_ms(double seconds) {
  uint64_t ms = (uint64_t)(seconds * 1000.0);
  return ms == 0 && seconds > 0 ? 1 : ms;
}

void conn_timer_init(aio_conn_t *c) {
  uv_timer_init(&c->srv->w->loop, &c->timer);
  c->timer.data = c;
  c->idle_ms = conn_ms(c->srv->conf->idle_timeout);
  c->send_ms = conn_ms(c->srv->conf->send_timeout);
}

static uint64_t min_u64(uint64_t a, uint64_t b) { return a < b ? a : b; }

/* When c's timer must next fire, UINT64_MAX for never. */
static uint64_t conn_due(const aio_conn_t *c, uint64_t now) {
  uint64_t due = UINT64_MAX;
  if (c->deadline && !c->closing)
    due = c->deadline;
  /* A closing connection with nothing queued is gone in a moment. */
  if (c->idle_ms && (!c->closing || c->queued))
    due = min_u64(due, c->last_io + c->idle_ms);
  if (c->send_ms && c->queued)
    due = min_u64(due, c->send_at + c->send_ms);
  if (c->queued) {
    /* A look at the queue: libuv tells of a write only once all of it is
     * written, and a slow reader moves a big one a bit at a time. */
    uint64_t t = c->idle_ms;
    if (c->send_ms && (t == 0 || c->send_ms < t))
      t = c->send_ms;
    if (t)
      due = min_u64(
          due, now + (t >= CONN_TIMEOUT_LOOKS ? t / CONN_TIMEOUT_LOOKS : 1));
  }
  return due;
}

/* Make the timer fire no later than c's next due time. Only ever moves it
 * sooner: one that fires early finds nothing due and arms itself again. */
void conn_timer_arm(aio_conn_t *c) {
  if (c->udp || uv_is_closing(&c->h.handle))
    return;
  uint64_t now = uv_now(c->timer.loop), due = conn_due(c, now);
  if (due == UINT64_MAX || (c->armed && c->armed <= due))
    return;
  uv_timer_start(&c->timer, on_timer, due > now ? due - now : 0, 0);
  c->armed = due;
}

/* Bytes the peer has taken: those handed to the kernel, less what the
 * kernel still holds for it (unsent or not acknowledged; on a unix
 * socket, unread). Not what the kernel took: its send buffer grows to
 * megabytes for a peer that reads nothing, which would look like
 * progress for seconds. */
static uint64_t conn_taken(aio_conn_t *c) {
  uint64_t handed = c->out_total - c->h.stream.write_queue_size;
  uv_os_fd_t fd;
  int held = 0;
  if (uv_fileno(&c->h.handle, &fd) == 0 && ioctl(fd, SIOCOUTQ, &held) == 0 &&
      held > 0)
    handed -= (uint64_t)held < handed ? (uint64_t)held : handed;
  return handed;
}

void conn_timer_queue_began(aio_conn_t *c) {
  c->send_at = uv_now(c->h.handle.loop);
  c->taken_seen = conn_taken(c);
  conn_timer_arm(c);
}

/* Did the peer take anything since the last look? */
static void conn_look(aio_conn_t *c, uint64_t now) {
  uint64_t taken = conn_taken(c);
  if (taken > c->taken_seen) {
    c->last_io = now;
    c->send_at = now;
  }
  c->taken_seen = taken;
}

static void on_timer(uv_timer_t *t) {
  aio_conn_t *c = t->data;
  uint64_t now = uv_now(t->loop);
  c->armed = 0;
  if (uv_is_closing(&c->h.handle))
    return;
  if (c->queued)
    conn_look(c, now);
  if (c->deadline && !c->closing && now >= c->deadline) {
    aio_timeout_fn *fn = c->on_deadline;
    c->deadline = 0;
    c->on_deadline = NULL;
    server_count(c->srv, SERVER_DEADLINE);
    log_debug("[server:%s] a connection's deadline passed", c->srv->conf->name);
    if (fn) {
      worker_bus_sync(worker_self);
      fn(c);
    } else {
      c->lost_status = -ETIMEDOUT;
      aio_close(c);
    }
    if (uv_is_closing(&c->h.handle))
      return;
  }
  if (c->send_ms && c->queued && now - c->send_at >= c->send_ms) {
    server_count(c->srv, SERVER_SEND_TIMEOUT);
    log_debug("[server:%s] reset a connection: %zu bytes not taken in %llu ms "
              "(send_timeout)",
              c->srv->conf->name, c->queued, (unsigned long long)c->send_ms);
    conn_reset(c, -ETIMEDOUT);
    return;
  }
  if (c->idle_ms && (!c->closing || c->queued) &&
      now - c->last_io >= c->idle_ms) {
    server_count(c->srv, SERVER_IDLE_TIMEOUT);
    log_debug("[server:%s] closed a connection idle for %llu ms "
              "(idle_timeout)",
              c->srv->conf->name, (unsigned long long)c->idle_ms);
    if (c->queued) {
      conn_reset(c, -ETIMEDOUT);
      return;
    }
    c->lost_status = -ETIMEDOUT;
    aio_close(c);
  }
  conn_timer_arm(c);
}

static int conn_timeout_ms(const aio_conn_t *c, double seconds, uint64_t *ms) {
  if (c == NULL || c->udp || !(seconds >= 0) || seconds > CONN_MAX_TIMEOUT_S)
    return -EINVAL; /* !(>=) also refuses NaN */
  if (c->closing)
    return -ENOTCONN;
  *ms = conn_ms(seconds);
  return 0;
}

int aio_conn_set_timeout(aio_conn_t *c, aio_timeout_t which, double seconds) {
  uint64_t ms;
  int err = conn_timeout_ms(c, seconds, &ms);
  if (err)
    return err;
  if (which == AIO_TIMEOUT_IDLE)
    c->idle_ms = ms;
  else if (which == AIO_TIMEOUT_SEND)
    c->send_ms = ms;
  else
    return -EINVAL;
  conn_timer_arm(c);
  return 0;
}

int aio_conn_set_deadline(aio_conn_t *c, double seconds, aio_timeout_fn *fn) {
  uint64_t ms;
  int err = conn_timeout_ms(c, seconds, &ms);
  if (err)
    return err;
  c->deadline = ms ? uv_now(c->timer.loop) + ms : 0;
  c->on_deadline = ms ? fn : NULL;
  conn_timer_arm(c);
  return 0;
}
