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
 */
#define _GNU_SOURCE
#include "cluster_signals.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cluster.h"
#include "log.h"
#include "master.h"
#include "util.h"

#define GROUP "aio"
/* Entries held at most (read and not yet acknowledged in Redis). */
#define PREFETCH 1024
/* Entries asked for in one read, and claimed in one round per stream. */
#define READ_COUNT 256
#define CLAIM_COUNT 64
#define BLOCK_MS 1000
/* XADDs of the queue on the link at once. */
#define MAX_ADDING 512
/* Ids in one XACK. */
#define ACK_BATCH 256
#define READER_RETRY_MS 500

enum { HELD_INFLIGHT, HELD_DONE, HELD_ACKING };

struct csig;

struct csig_entry {
  struct csig_entry *prev, *next;
  struct csig *c; /* NULL once the master let go of cluster signals */
  int state;
  size_t stream; /* index in c->streams at the time it was read */
  char *key;     /* its stream's key */
  char id[48];
};

/* An emit waiting for its XADDs (one for once, one per node for
 * broadcast), oldest first. */
struct qitem {
  struct qitem *prev, *next;
  int once, broadcast;
  int waiting; /* replies outstanding */
  int failed;  /* one came back empty: the link went away; sent again */
  size_t bytes;
  char *signal;
  size_t len;
  char data[];
};

struct csig {
  struct master *m;
  /* The queue of emits; unsent: the first not sent yet (or NULL). */
  struct qitem *head, *tail, *unsent;
  size_t nq, qbytes, adding;
  /* The streams read: once streams, then the inbox when there are
   * broadcast cluster listeners; signals[i] for the once ones. */
  char **streams, **signals;
  size_t nstreams, nonce;
  unsigned gen;      /* the generation they were made for */
  int groups;        /* 0 to create, 1 creating, 2 ready */
  size_t groups_due; /* replies outstanding */
  /* The reader. */
  redisAsyncContext *rac;
  int reading, rconnected;
  uint64_t rsent_ms, rretry_ms;
  /* Held entries. */
  struct csig_entry *held, *held_last;
  size_t nheld, inflight;
  uint64_t next_claim_ms;
  int claiming; /* claim rounds outstanding */
  /* Counters, since the start. */
  uint64_t emitted, added, dropped, add_errors, received, broadcasts, ran,
      acked, claimed, dead, abandoned, bad, read_errors, readers;
};

static uint64_t now_ms(const struct csig *c) { return uv_now(c->m->loop); }

static const struct settings *conf(const struct csig *c) {
  return &c->m->gen->app.s;
}

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
  const struct settings *s = conf(c);
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
  snprintf(maxlen, sizeof(maxlen), "%zu", conf(c)->cluster_stream_len);
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
  const struct settings *s = conf(c);
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

static void read_more(struct csig *c);

/* ---- held entries ---------------------------------------------------------
 */

static struct csig_entry *held_new(struct csig *c, size_t stream,
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
static int held_has(const struct csig *c, const char *key, const char *id,
                    size_t idlen) {
  for (const struct csig_entry *e = c->held; e; e = e->next)
    if (strlen(e->id) == idlen && memcmp(e->id, id, idlen) == 0 &&
        strcmp(e->key, key) == 0)
      return 1;
  return 0;
}

static void flush_acks(struct csig *c);

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
    flush_acks(e->c); /* now: there may be no next tick */
  else
    read_more(e->c);
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
static void flush_acks(struct csig *c) {
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
static void ack_now(struct csig *c, const char *key, const char *id) {
  const char *argv[] = {"XACK", key, GROUP, id};
  size_t len[] = {4, strlen(key), strlen(GROUP), strlen(id)};
  cluster_command(c->m, NULL, NULL, 4, argv, len);
}

/* ---- entries read or claimed ----------------------------------------------
 */

/* The value of field f in an entry's [f, v, f, v...], or NULL. */
static const redisReply *field(const redisReply *fv, const char *f) {
  if (fv == NULL || fv->type != REDIS_REPLY_ARRAY)
    return NULL;
  for (size_t i = 0; i + 1 < fv->elements; i += 2)
    if (fv->element[i]->type == REDIS_REPLY_STRING &&
        strcmp(fv->element[i]->str, f) == 0 &&
        fv->element[i + 1]->type == REDIS_REPLY_STRING)
      return fv->element[i + 1];
  return NULL;
}

/* One entry of stream k: [id, [fields]]. */
static void take(struct csig *c, size_t k, const redisReply *ent) {
  if (ent->type != REDIS_REPLY_ARRAY || ent->elements < 2 ||
      ent->element[0]->type != REDIS_REPLY_STRING)
    return;
  const redisReply *id = ent->element[0], *fv = ent->element[1];
  const redisReply *sig = field(fv, "s"), *d = field(fv, "d");
  /* Data as an aio node wrote it is checked, not decoded: its text goes
   * into the deliver frame as it is. Any other (a newline in it, a
   * duplicate key, what only jansson can judge) is decoded and encoded
   * again, as a worker could not take it as it is. */
  struct bus_span text = {d ? d->str : NULL, d ? d->len : 0};
  const struct bus_span *raw = d && memchr(d->str, '\n', d->len) == NULL &&
                                       bus_scan_value(d->str, d->len) == 0
                                   ? &text
                                   : NULL;
  json_t *data = d && raw == NULL
                     ? json_loadb(d->str, d->len, JSON_DECODE_ANY, NULL)
                     : NULL;
  int inbox = k >= c->nonce;
  const char *signal = inbox ? (sig ? sig->str : NULL) : c->signals[k];
  if ((data == NULL && raw == NULL) || signal == NULL ||
      (inbox && sig->len > BUS_MAX_SIGNAL)) {
    /* Trimmed away before it was read, or not ours to read. */
    if (c->bad++ % 1000 == 0)
      log_warnx("cluster: entry %s of %s is not a signal; acknowledged "
                "and dropped",
                id->str, c->streams[k]);
    ack_now(c, c->streams[k], id->str);
    json_decref(data);
    return;
  }
  if (inbox) {
    c->broadcasts++;
    if (router_cluster_kinds(c->m, signal) & 2)
      router_cluster_broadcast(c->m, signal, data, raw);
    /* Kept by the router for every slot: done here. */
    struct csig_entry *e = held_new(c, k, id);
    if (e)
      csig_done(c->m, e), c->ran--;
  } else {
    c->received++;
    struct csig_entry *e = held_new(c, k, id);
    if (e && router_cluster_deliver(c->m, signal, data, raw, e) != 0)
      csig_abandon(c->m, e);
  }
  json_decref(data);
}

/* ---- the reader -----------------------------------------------------------
 */

static void reader_drop(struct csig *c, const char *why) {
  redisAsyncContext *ac = c->rac;
  c->rac = NULL;
  c->reading = c->rconnected = 0;
  c->rretry_ms = now_ms(c) + READER_RETRY_MS;
  if (why)
    log_debug("cluster: signal reader: %s", why);
  if (ac)
    redisAsyncFree(ac);
}

static void on_read(redisAsyncContext *ac, void *reply, void *priv) {
  struct csig *c = priv;
  redisReply *r = reply;
  if (ac != c->rac || r == NULL)
    return;
  c->reading = 0;
  if (r->type == REDIS_REPLY_ERROR) {
    if (c->read_errors++ % 100 == 0)
      log_warnx("cluster: XREADGROUP refused: %.200s", r->str);
    if (strncmp(r->str, "NOGROUP", 7) == 0)
      c->groups = 0;
    c->rretry_ms = now_ms(c) + READER_RETRY_MS;
    return;
  }
  if (r->type == REDIS_REPLY_ARRAY) {
    for (size_t i = 0; i < r->elements; i++) {
      const redisReply *st = r->element[i];
      if (st->type != REDIS_REPLY_ARRAY || st->elements < 2 ||
          st->element[0]->type != REDIS_REPLY_STRING ||
          st->element[1]->type != REDIS_REPLY_ARRAY)
        continue;
      size_t k = 0;
      while (k < c->nstreams && strcmp(c->streams[k], st->element[0]->str))
        k++;
      for (size_t j = 0; k < c->nstreams && j < st->element[1]->elements; j++)
        take(c, k, st->element[1]->element[j]);
    }
    flush_acks(c);
  }
  read_more(c);
}

static void on_reader_hs(redisAsyncContext *ac, void *reply, void *priv) {
  struct csig *c = priv;
  redisReply *r = reply;
  if (ac != c->rac || r == NULL)
    return;
  if (r->type == REDIS_REPLY_ERROR)
    reader_drop(c, r->str);
}

static void on_reader_connect(const redisAsyncContext *ac, int status) {
  struct csig *c = ac->data;
  if (ac != c->rac)
    return;
  if (status != REDIS_OK) {
    c->rac = NULL; /* hiredis frees it */
    c->reading = 0;
    c->rretry_ms = now_ms(c) + READER_RETRY_MS;
    return;
  }
  c->rconnected = 1;
}

static void on_reader_disconnect(const redisAsyncContext *ac, int status) {
  struct csig *c = ac->data;
  (void)status;
  if (ac != c->rac)
    return;
  c->rac = NULL;
  c->reading = c->rconnected = 0;
  c->rretry_ms = now_ms(c) + READER_RETRY_MS;
}

/* Ask for what this node can take now, blocking up to BLOCK_MS. */
static void read_more(struct csig *c) {
  if (c->rac == NULL || c->reading || c->groups != 2 || c->nstreams == 0 ||
      c->gen != c->m->gen->id || c->inflight + READ_COUNT > PREFETCH ||
      c->nheld >= 2 * PREFETCH || !router_cluster_ready(c->m))
    return;
  size_t n = 9 + 2 * c->nstreams;
  const char **argv = calloc(n, sizeof(*argv));
  size_t *len = calloc(n, sizeof(*len));
  char count[16], block[16];
  snprintf(count, sizeof(count), "%d", READ_COUNT);
  snprintf(block, sizeof(block), "%d", BLOCK_MS);
  if (argv && len) {
    const char *head[] = {"XREADGROUP", "GROUP", GROUP,   cluster_node(c->m),
                          "COUNT",      count,   "BLOCK", block,
                          "STREAMS"};
    memcpy(argv, head, sizeof(head));
    for (size_t i = 0; i < c->nstreams; i++) {
      argv[9 + i] = c->streams[i];
      argv[9 + c->nstreams + i] = ">";
    }
    for (size_t i = 0; i < n; i++)
      len[i] = strlen(argv[i]);
    if (redisAsyncCommandArgv(c->rac, on_read, c, (int)n, argv, len) ==
        REDIS_OK) {
      c->reading = 1;
      c->rsent_ms = now_ms(c);
    }
  }
  free(argv);
  free(len);
}

static void reader_open(struct csig *c) {
  char why[256];
  c->readers++;
  c->rac = cluster_open_extra(c->m, on_reader_hs, c, why, sizeof(why));
  if (c->rac == NULL) {
    c->rretry_ms = now_ms(c) + READER_RETRY_MS;
    log_debug("cluster: cannot open the signal reader: %s", why);
    return;
  }
  c->rac->data = c;
  redisAsyncSetConnectCallback(c->rac, on_reader_connect);
  redisAsyncSetDisconnectCallback(c->rac, on_reader_disconnect);
  read_more(c); /* queued behind the handshake */
}

/* ---- consumer groups -------------------------------------------------- */

static void on_group(struct master *m, redisReply *r, void *arg) {
  struct csig *c = m->csig;
  (void)arg;
  if (c->groups != 1)
    return;
  if (r == NULL ||
      (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "BUSYGROUP", 9) != 0)) {
    if (r)
      log_warnx("cluster: XGROUP CREATE refused: %.200s", r->str);
    c->groups = 0;
    return;
  }
  if (--c->groups_due == 0)
    c->groups = 2;
}

/* Each stream's group, from its first entry (so emits that came before
 * any node listened are delivered too); one that exists stays as it is. */
static void make_groups(struct csig *c) {
  if (c->nstreams == 0) {
    c->groups = 2;
    return;
  }
  c->groups = 1;
  c->groups_due = 0;
  for (size_t i = 0; i < c->nstreams; i++) {
    const char *argv[] = {"XGROUP", "CREATE", c->streams[i],
                          GROUP,    "0",      "MKSTREAM"};
    size_t len[6];
    for (int j = 0; j < 6; j++)
      len[j] = strlen(argv[j]);
    if (cluster_command(c->m, on_group, NULL, 6, argv, len) != 0) {
      c->groups = 0; /* again at the next tick */
      return;
    }
    c->groups_due++;
  }
}

/* ---- claims of entries other nodes (or this one, before) left --------- */

struct claim_round {
  size_t k;
  char *key, *signal;
  size_t n;
  long long counts[CLAIM_COUNT];
  char ids[CLAIM_COUNT][48];
};

static void round_free(struct claim_round *cr) {
  free(cr->key);
  free(cr->signal);
  free(cr);
}

static long long count_of(const struct claim_round *cr, const char *id) {
  for (size_t i = 0; i < cr->n; i++)
    if (strcmp(cr->ids[i], id) == 0)
      return cr->counts[i];
  return 0;
}

/* One dead letter: to <prefix>:dead, then acknowledged. */
static void dead_letter(struct csig *c, const struct claim_round *cr,
                        const redisReply *ent, long long count) {
  const redisReply *fv = ent->element[1], *d = field(fv, "d");
  char *dead = util_asprintf("%s:dead", cluster_prefix(c->m));
  char n[24], maxlen[24];
  snprintf(n, sizeof(n), "%lld", count);
  snprintf(maxlen, sizeof(maxlen), "%zu", conf(c)->cluster_stream_len);
  const char *id = ent->element[0]->str;
  if (dead) {
    const char *argv[] = {"XADD",       dead,
                          "MAXLEN",     "~",
                          maxlen,       "*",
                          "s",          cr->signal,
                          "d",          d ? d->str : "null",
                          "stream",     cr->key,
                          "id",         id,
                          "deliveries", n,
                          "node",       cluster_node(c->m)};
    size_t len[18];
    for (int i = 0; i < 18; i++)
      len[i] = strlen(argv[i]);
    if (d)
      len[9] = d->len;
    if (cluster_command(c->m, NULL, NULL, 18, argv, len) == 0) {
      ack_now(c, cr->key, id);
      c->dead++;
      log_warnx("cluster: signal '%s' (entry %s) was delivered %lld times "
                "(cluster_max_deliveries = %d) and never acknowledged: "
                "moved to %s",
                cr->signal, id, count, conf(c)->cluster_max_deliveries, dead);
    }
  }
  free(dead);
}

static void on_claimed(struct master *m, redisReply *r, void *arg) {
  struct claim_round *cr = arg;
  struct csig *c = m->csig;
  c->claiming--;
  if (r && r->type == REDIS_REPLY_ARRAY && cr->k < c->nonce &&
      strcmp(c->streams[cr->k], cr->key) == 0) {
    for (size_t i = 0; i < r->elements; i++) {
      const redisReply *ent = r->element[i];
      if (ent->type != REDIS_REPLY_ARRAY || ent->elements < 2 ||
          ent->element[0]->type != REDIS_REPLY_STRING)
        continue;
      long long count = count_of(cr, ent->element[0]->str);
      if (count >= conf(c)->cluster_max_deliveries) {
        dead_letter(c, cr, ent, count);
        continue;
      }
      c->claimed++;
      log_debug("cluster: claimed signal '%s' (entry %s, delivery %lld)",
                cr->signal, ent->element[0]->str, count + 1);
      take(c, cr->k, ent);
    }
    flush_acks(c);
  }
  round_free(cr);
}

static void on_pending(struct master *m, redisReply *r, void *arg) {
  struct claim_round *cr = arg;
  struct csig *c = m->csig;
  c->claiming--;
  if (r == NULL || r->type != REDIS_REPLY_ARRAY) {
    round_free(cr);
    return;
  }
  for (size_t i = 0; i < r->elements && cr->n < CLAIM_COUNT; i++) {
    const redisReply *p = r->element[i];
    if (p->type != REDIS_REPLY_ARRAY || p->elements < 4 ||
        p->element[0]->type != REDIS_REPLY_STRING ||
        p->element[0]->len >= sizeof(cr->ids[0]) ||
        held_has(c, cr->key, p->element[0]->str, p->element[0]->len))
      continue;
    memcpy(cr->ids[cr->n], p->element[0]->str, p->element[0]->len + 1);
    cr->counts[cr->n++] = p->element[3]->integer;
  }
  if (cr->n == 0) {
    round_free(cr);
    return;
  }
  char idle[24];
  snprintf(idle, sizeof(idle), "%llu",
           (unsigned long long)(conf(c)->cluster_claim_timeout * 1000));
  const char *argv[CLAIM_COUNT + 5] = {"XCLAIM", cr->key, GROUP,
                                       cluster_node(m), idle};
  size_t len[CLAIM_COUNT + 5];
  for (size_t i = 0; i < cr->n; i++)
    argv[5 + i] = cr->ids[i];
  for (size_t i = 0; i < cr->n + 5; i++)
    len[i] = strlen(argv[i]);
  if (cluster_command(m, on_claimed, cr, (int)cr->n + 5, argv, len) == 0)
    c->claiming++;
  else
    round_free(cr);
}

/* XPENDING of the entries idle past cluster_claim_timeout, per once
 * stream; those not held here are claimed (XCLAIM counts a delivery), or
 * moved to the dead letters after cluster_max_deliveries. (XAUTOCLAIM
 * would do it in one command, but does not say how often an entry was
 * delivered.) */
static void claim_round(struct csig *c) {
  const struct settings *s = conf(c);
  uint64_t timeout = (uint64_t)(s->cluster_claim_timeout * 1000);
  uint64_t every = timeout / 4 < 100    ? 100
                   : timeout / 4 > 5000 ? 5000
                                        : timeout / 4;
  if (now_ms(c) < c->next_claim_ms || c->claiming || c->groups != 2 ||
      c->gen != c->m->gen->id)
    return;
  c->next_claim_ms = now_ms(c) + every;
  if (c->inflight + CLAIM_COUNT > PREFETCH || !router_cluster_ready(c->m))
    return;
  char idle[24], count[16];
  snprintf(idle, sizeof(idle), "%llu", (unsigned long long)timeout);
  snprintf(count, sizeof(count), "%d", CLAIM_COUNT);
  for (size_t k = 0; k < c->nonce; k++) {
    struct claim_round *cr = calloc(1, sizeof(*cr));
    if (cr == NULL)
      return;
    cr->k = k;
    cr->key = strdup(c->streams[k]);
    cr->signal = strdup(c->signals[k]);
    const char *argv[] = {"XPENDING", c->streams[k], GROUP, "IDLE",
                          idle,       "-",           "+",   count};
    size_t len[8];
    for (int i = 0; i < 8; i++)
      len[i] = strlen(argv[i]);
    if (cr->key == NULL || cr->signal == NULL ||
        cluster_command(c->m, on_pending, cr, 8, argv, len) != 0) {
      round_free(cr);
      return;
    }
    c->claiming++;
  }
}

/* ---- the link's hooks ------------------------------------------------- */

void csig_link_up(struct master *m) {
  struct csig *c = get(m);
  if (c == NULL)
    return;
  make_groups(c);
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
  reader_drop(c, NULL);
}

void csig_tick(struct master *m) {
  struct csig *c = get(m);
  if (c == NULL)
    return;
  if (c->gen != m->gen->id) {
    make_streams(c); /* a reload changed the listeners */
    if (c->rac && !c->reading)
      reader_drop(c, NULL);
  }
  if (!cluster_connected(m))
    return;
  if (c->groups == 0)
    make_groups(c);
  flush_queue(c);
  flush_acks(c);
  if (c->nstreams == 0)
    return;
  uint64_t now = now_ms(c);
  if (c->rac && c->reading &&
      now - c->rsent_ms > BLOCK_MS + cluster_timeout_ms(m))
    reader_drop(c, "no reply in time");
  if (c->rac == NULL && c->groups == 2 && now >= c->rretry_ms)
    reader_open(c);
  read_more(c);
  claim_round(c);
}

void csig_close(struct master *m) {
  struct csig *c = m->csig;
  if (c == NULL)
    return;
  reader_drop(c, NULL);
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
