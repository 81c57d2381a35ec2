/*
 * cluster_nodes.c - what the master says to the other nodes over the
 * cluster link (cluster.c): its announcement every ANNOUNCE_MS and the
 * peers it reads back, the claims that make a `scope = cluster` schedule
 * run on one node, and the link's status for `aio status`.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cluster_int.h"
#include "cluster_signals.h"
#include "log.h"
#include "util.h"

/* ---- the node's announcement and its peers --------------------------- */

static void on_peers(struct cluster *c, redisReply *r, void *arg) {
  json_t *names = arg; /* [[node, seen_ms], ...], stolen */
  if (r && r->type == REDIS_REPLY_ARRAY) {
    json_t *peers = json_array();
    double now = cluster_wall_now();
    for (size_t i = 0; i < r->elements && i < json_array_size(names); i++) {
      redisReply *e = r->element[i];
      if (e->type != REDIS_REPLY_STRING)
        continue; /* its key expired: not alive */
      json_t *info = json_loadb(e->str, e->len, 0, NULL);
      if (!json_is_object(info)) {
        json_decref(info);
        continue;
      }
      json_t *pair = json_array_get(names, i);
      double seen = (double)json_integer_value(json_array_get(pair, 1)) / 1e3;
      json_object_set_new(info, "seen", json_real(seen));
      json_object_set_new(info, "seen_ago",
                          json_real(now > seen ? now - seen : 0));
      json_array_append_new(peers, info);
    }
    json_decref(c->peers);
    c->peers = peers;
  }
  json_decref(names);
}

static void on_members(struct cluster *c, redisReply *r, void *arg) {
  (void)arg;
  if (r == NULL || r->type != REDIS_REPLY_ARRAY || c->ac == NULL)
    return;
  /* WITHSCORES: name, score, name, score... */
  size_t n = r->elements / 2;
  if (n > MAX_PEERS)
    n = MAX_PEERS;
  const char **argv = calloc(n + 1, sizeof(*argv));
  size_t *len = calloc(n + 1, sizeof(*len));
  char **keys = calloc(n + 1, sizeof(*keys));
  json_t *names = json_array();
  if (!argv || !len || !keys || !names)
    goto out;
  argv[0] = "MGET";
  len[0] = 4;
  for (size_t i = 0; i < n; i++) {
    redisReply *nm = r->element[2 * i], *sc = r->element[2 * i + 1];
    keys[i] = util_asprintf("%s:node:%.*s", c->prefix, (int)nm->len,
                            nm->str ? nm->str : "");
    argv[i + 1] = keys[i] ? keys[i] : "";
    len[i + 1] = strlen(argv[i + 1]);
    json_array_append_new(
        names, json_pack("[s%,I]", nm->str ? nm->str : "", (size_t)nm->len,
                         (json_int_t)(sc->str ? atof(sc->str) : 0)));
  }
  if (n == 0) {
    json_decref(c->peers);
    c->peers = json_array();
  } else if (cluster_send_argv(c, 0, on_peers, names, (int)n + 1, argv, len) ==
             0) {
    names = NULL; /* on_peers has it */
  }
out:
  for (size_t i = 0; keys && i < n; i++)
    free(keys[i]);
  free(keys);
  free(argv);
  free(len);
  json_decref(names);
}

void cluster_announce(struct cluster *c) {
  struct master *m = c->m;
  if (!c->ready || c->leaving)
    return;
  c->next_announce_ms = cluster_mono_ms(c) + ANNOUNCE_MS;
  if (m->gen && m->gen->id != c->announced_gen) {
    /* A reload keeps the link it has: say so if the keys moved. */
    const struct settings *s = &m->gen->app.s;
    char now[512] = "";
    c->announced_gen = m->gen->id;
    if (s->cluster)
      redis_url_describe(&s->redis, now, sizeof(now));
    if (strcmp(now, c->where) != 0 || strcmp(s->node, c->node) != 0 ||
        strcmp(s->cluster_prefix, c->prefix) != 0)
      log_warnx("cluster: [aio] cluster, node and cluster_prefix take effect "
                "on a restart; still %s as node %s",
                c->where, c->node);
  }
  char *key = util_asprintf("%s:node:%s", c->prefix, c->node);
  char *set = util_asprintf("%s:nodes", c->prefix);
  json_t *info = json_pack("{s:s,s:i,s:s,s:i,s:i,s:f}", "node", c->node, "pid",
                           (int)getpid(), "version", AIO_VERSION, "generation",
                           m->gen ? (int)m->gen->id : 0, "workers",
                           (int)m->nslots, "started", c->started);
  char *js = info ? json_dumps(info, JSON_COMPACT) : NULL;
  json_decref(info);
  if (key && set && js) {
    char ttl[24], score[24], oldest[32];
    long long now_ms = (long long)(cluster_wall_now() * 1000);
    snprintf(ttl, sizeof(ttl), "%d", NODE_TTL_MS);
    snprintf(score, sizeof(score), "%lld", now_ms);
    snprintf(oldest, sizeof(oldest), "(%lld", now_ms - NODE_TTL_MS);
    cluster_send_cmd(c, 0, cluster_ignore_reply, NULL, 5,
                     (const char *[]){"SET", key, js, "PX", ttl});
    cluster_send_cmd(c, 0, cluster_ignore_reply, NULL, 4,
                     (const char *[]){"ZADD", set, score, c->node});
    cluster_send_cmd(c, 0, cluster_ignore_reply, NULL, 4,
                     (const char *[]){"ZREMRANGEBYSCORE", set, "-inf", oldest});
    cluster_send_cmd(c, 0, on_members, NULL, 5,
                     (const char *[]){"ZRANGE", set, "0", "-1", "WITHSCORES"});
  }
  free(key);
  free(set);
  free(js);
}

/* ---- claims ------------------------------------------------------------ */

struct claim {
  cluster_claim_fn *fn;
  void *arg;
};

static void on_claimed(struct cluster *c, redisReply *r, void *arg) {
  struct claim cl = *(struct claim *)arg;
  free(arg);
  enum cluster_claim res;
  if (c->closing)
    res = CLUSTER_CLOSED;
  else if (r && r->type == REDIS_REPLY_STATUS)
    res = CLUSTER_WON; /* +OK */
  else if (r && r->type == REDIS_REPLY_NIL)
    res = CLUSTER_LOST;
  else
    res = CLUSTER_FAILED;
  if (res == CLUSTER_WON)
    c->won++;
  else if (res == CLUSTER_LOST)
    c->lost++;
  else if (res == CLUSTER_FAILED)
    c->failed++;
  cl.fn(c->m, cl.arg, res);
}

int cluster_claim(struct master *m, const char *name, long long occurrence,
                  uint64_t ttl_ms, cluster_claim_fn *fn, void *arg) {
  struct cluster *c = m->cluster;
  if (c == NULL || !c->ready) {
    if (c)
      c->refused++;
    return -ENOTCONN;
  }
  struct claim *cl = malloc(sizeof(*cl));
  char *key = util_asprintf("%s:sched:%s:%lld", c->prefix, name, occurrence);
  char ttl[24];
  snprintf(ttl, sizeof(ttl), "%llu", (unsigned long long)ttl_ms);
  int err = -ENOMEM;
  if (cl && key) {
    *cl = (struct claim){.fn = fn, .arg = arg};
    err = cluster_send_cmd(
        c, 0, on_claimed, cl, 6,
        (const char *[]){"SET", key, c->node, "NX", "PX", ttl});
  }
  if (err)
    free(cl);
  free(key);
  return err;
}

void cluster_fallback_taken(struct master *m, int ran_locally) {
  struct cluster *c = m->cluster;
  if (c == NULL)
    return;
  if (ran_locally)
    c->fallback_local++;
  else
    c->fallback_skip++;
}

/* ---- status ------------------------------------------------------------- */

json_t *cluster_status(const struct master *m) {
  const struct cluster *c = m->cluster;
  if (c == NULL)
    return json_pack("{s:s}", "state", "off");
  json_t *st = json_pack(
      "{s:s,s:s,s:s,s:s,s:f,s:O,s:{s:I,s:I,s:I,s:I},s:{s:I,s:I,s:I,s:I,s:I,"
      "s:I,s:I},s:{s:I,s:I,s:I,s:I,s:I}}",
      "state", cluster_state_names[c->state], "node", c->node, "redis",
      c->where, "prefix", c->prefix, "since", c->since, "peers", c->peers,
      "queue", "outstanding", (json_int_t)c->ncmds, "bytes",
      (json_int_t)c->bytes, "limit", (json_int_t)CLUSTER_MAX_OUTSTANDING,
      "refused", (json_int_t)c->refused, "link", "connects",
      (json_int_t)c->connects, "losses", (json_int_t)c->losses, "attempts",
      (json_int_t)c->attempts, "timeouts", (json_int_t)c->timeouts, "errors",
      (json_int_t)c->errors, "backoff_ms", (json_int_t)c->backoff_ms,
      "next_attempt_ms",
      (json_int_t)(c->retry_at_ms > cluster_mono_ms(c)
                       ? c->retry_at_ms - cluster_mono_ms(c)
                       : 0),
      "claims", "won", (json_int_t)c->won, "lost", (json_int_t)c->lost,
      "failed", (json_int_t)c->failed, "skipped", (json_int_t)c->fallback_skip,
      "local", (json_int_t)c->fallback_local);
  if (st && c->down_since > 0)
    json_object_set_new(st, "down_since", json_real(c->down_since));
  if (st && c->last_error[0])
    json_object_set_new(st, "last_error", json_string(c->last_error));
  if (st)
    json_object_set_new(st, "signals", csig_status(m));
  return st;
}
