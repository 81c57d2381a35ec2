/*
 * cluster_signals_read.c - cluster signals coming in (cluster_signals.c
 * says the whole way): the blocking XREADGROUP on the reader's own
 * connection, the consumer groups it reads as, the claim rounds that take
 * over entries another node (or this one, before) left pending, moving
 * those delivered too often to the dead letters, and taking each entry
 * read or claimed to the workers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "cluster_signals_int.h"
#include "log.h"
#include "util.h"

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
    csig_ack_now(c, c->streams[k], id->str);
    json_decref(data);
    return;
  }
  if (inbox) {
    c->broadcasts++;
    if (router_cluster_kinds(c->m, signal) & 2)
      router_cluster_broadcast(c->m, signal, data, raw);
    /* Kept by the router for every slot: done here. */
    struct csig_entry *e = csig_held_new(c, k, id);
    if (e)
      csig_done(c->m, e), c->ran--;
  } else {
    c->received++;
    struct csig_entry *e = csig_held_new(c, k, id);
    if (e && router_cluster_deliver(c->m, signal, data, raw, e) != 0)
      csig_abandon(c->m, e);
  }
  json_decref(data);
}

/* ---- the reader -----------------------------------------------------------
 */

void csig_reader_drop(struct csig *c, const char *why) {
  redisAsyncContext *ac = c->rac;
  c->rac = NULL;
  c->reading = c->rconnected = 0;
  c->rretry_ms = csig_now_ms(c) + READER_RETRY_MS;
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
    c->rretry_ms = csig_now_ms(c) + READER_RETRY_MS;
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
    csig_flush_acks(c);
  }
  csig_read_more(c);
}

static void on_reader_hs(redisAsyncContext *ac, void *reply, void *priv) {
  struct csig *c = priv;
  redisReply *r = reply;
  if (ac != c->rac || r == NULL)
    return;
  if (r->type == REDIS_REPLY_ERROR)
    csig_reader_drop(c, r->str);
}

static void on_reader_connect(const redisAsyncContext *ac, int status) {
  struct csig *c = ac->data;
  if (ac != c->rac)
    return;
  if (status != REDIS_OK) {
    c->rac = NULL; /* hiredis frees it */
    c->reading = 0;
    c->rretry_ms = csig_now_ms(c) + READER_RETRY_MS;
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
  c->rretry_ms = csig_now_ms(c) + READER_RETRY_MS;
}

/* Ask for what this node can take now, blocking up to BLOCK_MS. */
void csig_read_more(struct csig *c) {
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
      c->rsent_ms = csig_now_ms(c);
    }
  }
  free(argv);
  free(len);
}

void csig_reader_open(struct csig *c) {
  char why[256];
  c->readers++;
  c->rac = cluster_open_extra(c->m, on_reader_hs, c, why, sizeof(why));
  if (c->rac == NULL) {
    c->rretry_ms = csig_now_ms(c) + READER_RETRY_MS;
    log_debug("cluster: cannot open the signal reader: %s", why);
    return;
  }
  c->rac->data = c;
  redisAsyncSetConnectCallback(c->rac, on_reader_connect);
  redisAsyncSetDisconnectCallback(c->rac, on_reader_disconnect);
  csig_read_more(c); /* queued behind the handshake */
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
void csig_make_groups(struct csig *c) {
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
  snprintf(maxlen, sizeof(maxlen), "%zu", csig_conf(c)->cluster_stream_len);
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
      csig_ack_now(c, cr->key, id);
      c->dead++;
      log_warnx("cluster: signal '%s' (entry %s) was delivered %lld times "
                "(cluster_max_deliveries = %d) and never acknowledged: "
                "moved to %s",
                cr->signal, id, count, csig_conf(c)->cluster_max_deliveries,
                dead);
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
      if (count >= csig_conf(c)->cluster_max_deliveries) {
        dead_letter(c, cr, ent, count);
        continue;
      }
      c->claimed++;
      log_debug("cluster: claimed signal '%s' (entry %s, delivery %lld)",
                cr->signal, ent->element[0]->str, count + 1);
      take(c, cr->k, ent);
    }
    csig_flush_acks(c);
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
        csig_held_has(c, cr->key, p->element[0]->str, p->element[0]->len))
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
           (unsigned long long)(csig_conf(c)->cluster_claim_timeout * 1000));
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
void csig_claim_round(struct csig *c) {
  const struct settings *s = csig_conf(c);
  uint64_t timeout = (uint64_t)(s->cluster_claim_timeout * 1000);
  uint64_t every = timeout / 4 < 100    ? 100
                   : timeout / 4 > 5000 ? 5000
                                        : timeout / 4;
  if (csig_now_ms(c) < c->next_claim_ms || c->claiming || c->groups != 2 ||
      c->gen != c->m->gen->id)
    return;
  c->next_claim_ms = csig_now_ms(c) + every;
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
