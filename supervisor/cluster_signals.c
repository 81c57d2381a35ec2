/*
 * cluster_signals.c - cluster listeners over Redis Streams
 * (cluster_signals.h, docs/cluster.md). The commands that add, acknowledge
 * and claim go on the master's link (cluster.c: bounded, with deadlines);
 * the blocking XREADGROUP goes on a second connection of its own, so it
 * never holds the link, with a deadline of its BLOCK time plus
 * cluster_timeout.
 *
 * An entry this node read is "held" (struct csig_entry) from the read
 * until Redis answered its XACK: in flight at a worker, then done (to
 * acknowledge, in batches each tick), then being acknowledged. At most
 * PREFETCH are held; the reader asks for no more than the room left, so
 * the workers' delivery queues are what bounds a burst from the cluster.
 *
 * This file: the queue of emits and their XADDs, the held entries and
 * their XACKs, the link's hooks and the status; cluster_signals_read.c:
 * the reader, the groups and the claim rounds (cluster_signals_int.h).
 */
#define _GNU_SOURCE
#include "cluster_signals.h"
#include "cluster_signals_int.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cluster.h"
#include "log.h"
#include "master.h"
#include "util.h"

static void free_streams(struct csig *c) {
  for (size_t i = 0; i < c->nstreams; i++)
    free(c->streams[i]);
  for (size_t i = 0; i < c->nonce; i++)
    free(c->signals[i]);
  free(c->streams);
  free(c->signals);
  c->streams = c->signals = NULL;
  c->nstreams = c->nonce = 0;
}

/* The streams of the current generation's cluster listeners. */
static void make_streams(struct csig *c) {
  const struct settings *s = csig_conf(c);
  const char *prefix = cluster_prefix(c->m);
  free_streams(c);
  c->gen = c->m->gen->id;
  c->groups = 0;
  c->streams = calloc(s->nlisteners + 1, sizeof(char *));
  c->signals = calloc(s->nlisteners + 1, sizeof(char *));
  if (c->streams == NULL || c->signals == NULL)
    return;
  int bcast = 0;
  for (size_t i = 0; i < s->nlisteners; i++) {
    const struct listener_conf *l = &s->listeners[i];
    if (!l->cluster)
      continue;
    if (l->broadcast) {
      bcast = 1;
      continue;
    }
    size_t k = 0;
    while (k < c->nonce && strcmp(c->signals[k], l->signal) != 0)
      k++;
    if (k < c->nonce)
      continue;
    c->signals[c->nonce] = strdup(l->signal);
    c->streams[c->nonce] = util_asprintf("%s:sig:%s", prefix, l->signal);
    if (c->signals[c->nonce] == NULL || c->streams[c->nonce] == NULL) {
      free(c->signals[c->nonce]);
      free(c->streams[c->nonce]);
      break;
    }
    c->nonce++;
  }
  c->nstreams = c->nonce;
  if (bcast && (c->streams[c->nstreams] = util_asprintf(
                    "%s:inbox:%s", prefix, cluster_node(c->m))) != NULL)
    c->nstreams++;
}

static struct csig *get(struct master *m) {
  if (m->csig == NULL && m->cluster != NULL) {
    struct csig *c = calloc(1, sizeof(*c));
    if (c == NULL)
      return NULL;
    c->m = m;
    m->csig = c;
    make_streams(c);
  }
  return m->csig;
}

/* ---- the queue of emits ------------------------------------------------ */

static void q_unlink(struct csig *c, struct qitem *q) {
  if (c->unsent == q)
    c->unsent = q->next;
  if (q->prev)
    q->prev->next = q->next;
  else
    c->head = q->next;
  if (q->next)
    q->next->prev = q->prev;
  else
    c->tail = q->prev;
  c->nq--;
  c->qbytes -= q->bytes;
  free(q->signal);
  free(q);
}

static void flush_queue(struct csig *c);

static void on_added(struct master *m, redisReply *r, void *arg) {
  struct qitem *q = arg;
  struct csig *c = m->csig;
  q->waiting--;
  c->adding--;
  if (r == NULL) {
    q->failed = 1;
  } else if (r->type == REDIS_REPLY_ERROR) {
    if (c->add_errors++ % 1000 == 0)
      log_warnx("cluster: XADD of signal '%s' refused: %.200s (%llu so "
                "far); dropped",
                q->signal, r->str, (unsigned long long)c->add_errors);
  }
  if (q->waiting == 0 && !q->failed) {
    c->added++;
    q_unlink(c, q);
  }
  /* Half the XADDs in flight answered: the next ones go now, not at the
   * next tick. */
  if (r && c->unsent && c->adding <= MAX_ADDING / 2)
    flush_queue(c);
}

/* One XADD of q to key. 0, or an error (nothing sent). */
static int add_one(struct csig *c, struct qitem *q, const char *key) {
  char maxlen[24];
  snprintf(maxlen, sizeof(maxlen), "%zu", csig_conf(c)->cluster_stream_len);
  const char *argv[] = {"XADD", key, "MAXLEN",  "~", maxlen,
                        "*",    "s", q->signal, "d", q->data};
  size_t len[] = {4, strlen(key),       6, 1,     strlen(maxlen), 1,
                  1, strlen(q->signal), 1, q->len};
  int err = cluster_command(c->m, on_added, q, 10, argv, len);
  if (err == 0) {
    q->waiting++;
    c->adding++;
  }
  return err;
}

/* Send what the queue holds, in order, while the link has room. */
static void flush_queue(struct csig *c) {
  const char *prefix = cluster_prefix(c->m);
  while (c->unsent && c->adding < MAX_ADDING &&
         cluster_room(c->m) > c->unsent->bytes * 2 + 4096) {
    struct qitem *q = c->unsent;
    int err = 0;
    if (q->once) {
      char *key = util_asprintf("%s:sig:%s", prefix, q->signal);
      err = key ? add_one(c, q, key) : -ENOMEM;
      free(key);
    }
    const json_t *peers = cluster_peers(c->m);
    size_t npeers = json_array_size(peers), sent = 0;
    for (size_t i = 0; q->broadcast && !err && i <= npeers; i++) {
      /* Every live node, this one included even before the first read. */
      const char *node = i < npeers  ? json_string_value(json_object_get(
                                           json_array_get(peers, i), "node"))
                         : sent == 0 ? cluster_node(c->m)
                                     : NULL;
      if (node == NULL)
        continue;
      char *key = util_asprintf("%s:inbox:%s", prefix, node);
      err = key ? add_one(c, q, key) : -ENOMEM;
      free(key);
      sent++;
    }
    c->unsent = q->next;
    if (err) {
      /* None of it went: again at the next tick. Part of it (a
       * broadcast): the nodes it did not reach miss it. */
      if (q->waiting == 0)
        c->unsent = q;
      break;
    }
  }
}

void csig_emit(struct master *m, const char *signal, int once, int broadcast,
               const json_t *data, const struct bus_span *raw) {
  struct csig *c = get(m);
  if (c == NULL)
    return;
  const struct settings *s = csig_conf(c);
  char *text = raw    ? NULL
               : data ? json_dumps(data, JSON_COMPACT | JSON_ENCODE_ANY)
                      : strdup("null");
  const char *d = raw ? raw->p : text;
  size_t len = raw ? raw->n : d ? strlen(d) : 0;
  struct qitem *q = d ? malloc(sizeof(*q) + len + 1) : NULL;
  if (q == NULL) {
    free(text);
    c->dropped++;
    log_warnx("cluster: signal '%s': out of memory; dropped", signal);
    return;
  }
  memset(q, 0, sizeof(*q));
  memcpy(q->data, d, len);
  q->data[len] = '\0';
  free(text);
  q->len = len;
  q->once = once;
  q->broadcast = broadcast;
  q->signal = strdup(signal);
  q->bytes = sizeof(*q) + len + strlen(signal) + 1;
  if (q->signal == NULL) {
    free(q);
    c->dropped++;
    return;
  }
  c->emitted++;
  /* At the bound, the oldest not yet sent makes room. */
  while ((c->nq >= s->cluster_queue ||
          c->qbytes + q->bytes > s->cluster_queue_bytes) &&
         c->unsent) {
    if (c->dropped++ % 1000 == 0)
      log_warnx("cluster: %zu signals (%zu bytes) wait for Redis "
                "(cluster_queue = %zu, cluster_queue_bytes = %zu): the "
                "oldest, '%s', is dropped (%llu dropped so far)",
                c->nq, c->qbytes, s->cluster_queue, s->cluster_queue_bytes,
                c->unsent->signal, (unsigned long long)c->dropped);
    q_unlink(c, c->unsent);
  }
  if (c->nq >= s->cluster_queue ||
      c->qbytes + q->bytes > s->cluster_queue_bytes) {
    /* All of it is on its way to Redis: this one cannot wait. */
    c->dropped++;
    free(q->signal);
    free(q);
    return;
  }
  q->prev = c->tail;
  if (c->tail)
    c->tail->next = q;
  else
    c->head = q;
  c->tail = q;
  if (c->unsent == NULL)
    c->unsent = q;
  c->nq++;
  c->qbytes += q->bytes;
  if (cluster_connected(m) && c->unsent == q)
    flush_queue(c);
}

/* ---- held entries ---------------------------------------------------------
 */

struct csig_entry *csig_held_new(struct csig *c, size_t stream,
                                 const redisReply *id) {
  struct csig_entry *e = calloc(1, sizeof(*e));
  if (e == NULL || id->type != REDIS_REPLY_STRING || id->len >= sizeof(e->id) ||
      (e->key = strdup(c->streams[stream])) == NULL) {
    free(e);
    return NULL;
  }
  memcpy(e->id, id->str, id->len);
  e->c = c;
  e->stream = stream;
  e->state = HELD_INFLIGHT;
  e->prev = c->held_last;
  if (c->held_last)
    c->held_last->next = e;
  else
    c->held = e;
  c->held_last = e;
  c->nheld++;
  c->inflight++;
  return e;
}

static void held_free(struct csig_entry *e) {
  struct csig *c = e->c;
  if (c) {
    if (e->prev)
      e->prev->next = e->next;
    else
      c->held = e->next;
    if (e->next)
      e->next->prev = e->prev;
    else
      c->held_last = e->prev;
    c->nheld--;
    if (e->state == HELD_INFLIGHT)
      c->inflight--;
  }
  free(e->key);
  free(e);
}

/* Is the entry id of key held here (then it is not claimed from us)? */
int csig_held_has(const struct csig *c, const char *key, const char *id,
                  size_t idlen) {
  for (const struct csig_entry *e = c->held; e; e = e->next)
    if (strlen(e->id) == idlen && memcmp(e->id, id, idlen) == 0 &&
        strcmp(e->key, key) == 0)
      return 1;
  return 0;
}

void csig_done(struct master *m, struct csig_entry *e) {
  if (e == NULL)
    return;
  if (e->c == NULL) {
    held_free(e);
    return;
  }
  e->c->ran++;
  e->c->inflight--;
  e->state = HELD_DONE;
  if (master_stopping(m))
    csig_flush_acks(e->c); /* now: there may be no next tick */
  else
    csig_read_more(e->c);
}

void csig_abandon(struct master *m, struct csig_entry *e) {
  (void)m;
  if (e == NULL)
    return;
  if (e->c)
    e->c->abandoned++;
  held_free(e);
}

struct acking {
  size_t n;
  struct csig_entry *e[];
};

static void on_acked(struct master *m, redisReply *r, void *arg) {
  struct acking *a = arg;
  struct csig *c = m->csig;
  for (size_t i = 0; i < a->n; i++) {
    if (r == NULL) {
      a->e[i]->state = HELD_DONE; /* again, on the next link */
    } else {
      held_free(a->e[i]);
      c->acked++;
    }
  }
  free(a);
}

/* XACK what the workers finished, a batch per stream. */
void csig_flush_acks(struct csig *c) {
  for (;;) {
    struct csig_entry *first = c->held;
    while (first && first->state != HELD_DONE)
      first = first->next;
    if (first == NULL || cluster_room(c->m) < ACK_BATCH * 64)
      return;
    struct acking *a = malloc(sizeof(*a) + ACK_BATCH * sizeof(a->e[0]));
    const char *argv[ACK_BATCH + 3];
    size_t len[ACK_BATCH + 3];
    if (a == NULL)
      return;
    a->n = 0;
    argv[0] = "XACK";
    argv[1] = first->key;
    argv[2] = GROUP;
    for (struct csig_entry *e = first; e && a->n < ACK_BATCH; e = e->next)
      if (e->state == HELD_DONE && strcmp(e->key, first->key) == 0) {
        argv[3 + a->n] = e->id;
        a->e[a->n++] = e;
      }
    for (size_t i = 0; i < a->n + 3; i++)
      len[i] = strlen(argv[i]);
    if (cluster_command(c->m, on_acked, a, (int)a->n + 3, argv, len)) {
      free(a);
      return;
    }
    for (size_t i = 0; i < a->n; i++)
      a->e[i]->state = HELD_ACKING;
  }
}

/* XACK one entry now, not held (a dead letter, a bad entry). */
void csig_ack_now(struct csig *c, const char *key, const char *id) {
  const char *argv[] = {"XACK", key, GROUP, id};
  size_t len[] = {4, strlen(key), strlen(GROUP), strlen(id)};
  cluster_command(c->m, NULL, NULL, 4, argv, len);
}

/* ---- the link's hooks ------------------------------------------------- */

void csig_link_up(struct master *m) {
  struct csig *c = get(m);
  if (c == NULL)
    return;
  csig_make_groups(c);
  flush_queue(c);
}

void csig_link_down(struct master *m) {
  struct csig *c = m->csig;
  if (c == NULL)
    return;
  /* Every reply came back empty by now: what did not get through goes
   * again, in order, after the reconnect. */
  for (struct qitem *q = c->head; q; q = q->next)
    q->failed = 0, q->waiting = 0;
  c->unsent = c->head;
  c->adding = 0;
  c->groups = 0;
  c->claiming = 0;
  for (struct csig_entry *e = c->held; e; e = e->next)
    if (e->state == HELD_ACKING)
      e->state = HELD_DONE;
  csig_reader_drop(c, NULL);
}

void csig_tick(struct master *m) {
  struct csig *c = get(m);
  if (c == NULL)
    return;
  if (c->gen != m->gen->id) {
    make_streams(c); /* a reload changed the listeners */
    if (c->rac && !c->reading)
      csig_reader_drop(c, NULL);
  }
  if (!cluster_connected(m))
    return;
  if (c->groups == 0)
    csig_make_groups(c);
  flush_queue(c);
  csig_flush_acks(c);
  if (c->nstreams == 0)
    return;
  uint64_t now = csig_now_ms(c);
  if (c->rac && c->reading &&
      now - c->rsent_ms > BLOCK_MS + cluster_timeout_ms(m))
    csig_reader_drop(c, "no reply in time");
  if (c->rac == NULL && c->groups == 2 && now >= c->rretry_ms)
    csig_reader_open(c);
  csig_read_more(c);
  csig_claim_round(c);
}

void csig_close(struct master *m) {
  struct csig *c = m->csig;
  if (c == NULL)
    return;
  csig_reader_drop(c, NULL);
  m->csig = NULL;
  while (c->head)
    q_unlink(c, c->head);
  /* What the router still holds frees itself when it is done with it. */
  for (struct csig_entry *e = c->held, *next; e; e = next) {
    next = e->next;
    if (e->state == HELD_INFLIGHT) {
      e->c = NULL;
    } else {
      e->c = NULL;
      held_free(e);
    }
  }
  free_streams(c);
  free(c);
}

json_t *csig_status(const struct master *m) {
  const struct csig *c = m->csig;
  const struct settings *s = &m->gen->app.s;
  if (c == NULL)
    return json_pack(
        "{s:I,s:I,s:I,s:I,s:I}", "queued", (json_int_t)0, "queued_bytes",
        (json_int_t)0, "limit", (json_int_t)s->cluster_queue, "limit_bytes",
        (json_int_t)s->cluster_queue_bytes, "dropped", (json_int_t)0);
  return json_pack(
      "{s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:I,"
      "s:I,s:I,s:s}",
      "queued", (json_int_t)c->nq, "queued_bytes", (json_int_t)c->qbytes,
      "limit", (json_int_t)s->cluster_queue, "limit_bytes",
      (json_int_t)s->cluster_queue_bytes, "dropped", (json_int_t)c->dropped,
      "emitted", (json_int_t)c->emitted, "added", (json_int_t)c->added,
      "add_errors", (json_int_t)c->add_errors, "received",
      (json_int_t)c->received, "broadcasts", (json_int_t)c->broadcasts, "ran",
      (json_int_t)c->ran, "acked", (json_int_t)c->acked, "claimed",
      (json_int_t)c->claimed, "dead", (json_int_t)c->dead, "abandoned",
      (json_int_t)c->abandoned, "held", (json_int_t)c->nheld, "in_flight",
      (json_int_t)c->inflight, "streams", (json_int_t)c->nstreams, "reader",
      c->rac == NULL  ? "down"
      : c->rconnected ? (c->reading ? "reading" : "idle")
                      : "connecting");
}
