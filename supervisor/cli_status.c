/*
 * cli_status.c - what `aio status` prints from the master's status reply
 * (`--json` prints the reply itself): the master's line, the control
 * socket's and the metrics endpoint's, the servers' counters, one row per
 * worker, and the bounded queues between the master and each worker.
 */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "util.h"

static void fmt_bytes(long long b, char *out, size_t n) {
  if (b < 0)
    snprintf(out, n, "-");
  else if (b < 1024)
    snprintf(out, n, "%lldB", b);
  else if (b >= 10 * 1024 * 1024)
    snprintf(out, n, "%lldM", b / (1024 * 1024));
  else if (b >= 1024 * 1024)
    snprintf(out, n, "%.1fM", (double)b / (1024.0 * 1024.0));
  else
    snprintf(out, n, "%lldK", b / 1024);
}

static long long ival(const json_t *o, const char *key) {
  return (long long)json_integer_value(json_object_get(o, key));
}

/* The cluster line of `aio status`, and `aio status --cluster`: the live
 * nodes the master saw at its last read (docs/cluster.md). */
void cli_print_cluster(json_t *r, int nodes) {
  json_t *c = json_object_get(r, "cluster");
  const char *state = json_string_value(json_object_get(c, "state"));
  if (state == NULL || strcmp(state, "off") == 0) {
    printf("cluster off\n");
    return;
  }
  json_t *q = json_object_get(c, "queue"), *cl = json_object_get(c, "claims");
  printf("cluster %s, node %s, %s", state,
         json_string_value(json_object_get(c, "node")),
         json_string_value(json_object_get(c, "redis")));
  if (json_object_get(c, "down_since")) {
    time_t t = (time_t)json_number_value(json_object_get(c, "down_since"));
    char when[32];
    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", localtime(&t));
    printf(" (down since %s: %s)", when,
           json_string_value(json_object_get(c, "last_error")));
  }
  printf("\n  %zu peer%s, %lld outstanding, %lld refused; claims won %lld, "
         "lost %lld, failed %lld, skipped %lld, local %lld\n",
         json_array_size(json_object_get(c, "peers")),
         json_array_size(json_object_get(c, "peers")) == 1 ? "" : "s",
         ival(q, "outstanding"), ival(q, "refused"), ival(cl, "won"),
         ival(cl, "lost"), ival(cl, "failed"), ival(cl, "skipped"),
         ival(cl, "local"));
  json_t *sg = json_object_get(c, "signals");
  if (ival(sg, "streams") > 0 || ival(sg, "emitted") > 0)
    printf("  signals: %lld queued, %lld dropped, %lld added, %lld ran, "
           "%lld claimed, %lld dead; reader %s\n",
           ival(sg, "queued"), ival(sg, "dropped"), ival(sg, "added"),
           ival(sg, "ran"), ival(sg, "claimed"), ival(sg, "dead"),
           json_string_value(json_object_get(sg, "reader")));
  if (!nodes)
    return;
  printf("%-20s %-8s %-10s %-4s %-8s %s\n", "NODE", "PID", "VERSION", "GEN",
         "WORKERS", "SEEN");
  size_t i;
  json_t *p;
  json_array_foreach(json_object_get(c, "peers"), i, p) {
    printf("%-20s %-8lld %-10s %-4lld %-8lld %.1fs ago\n",
           json_string_value(json_object_get(p, "node")),
           (long long)json_integer_value(json_object_get(p, "pid")),
           json_string_value(json_object_get(p, "version")),
           (long long)json_integer_value(json_object_get(p, "generation")),
           (long long)json_integer_value(json_object_get(p, "workers")),
           json_number_value(json_object_get(p, "seen_ago")));
  }
}

/* Per server, over every worker that ever ran. */
static void print_servers(json_t *servers) {
  if (json_object_size(servers) == 0)
    return;
  printf("%-12s %-10s %-6s %-8s %-8s %-8s %-8s %-8s %-9s %s\n", "SERVER",
         "ACCEPTED", "OPEN", "REFUSED", "PAUSED", "IDLE-TO", "SEND-TO",
         "DEADLINE", "READ", "WRITTEN");
  const char *name;
  json_t *v;
  json_object_foreach(servers, name, v) {
    char rd[32], wr[32];
    fmt_bytes((long long)json_integer_value(json_object_get(v, "bytes_read")),
              rd, sizeof(rd));
    fmt_bytes(
        (long long)json_integer_value(json_object_get(v, "bytes_written")), wr,
        sizeof(wr));
    printf("%-12s %-10lld %-6lld %-8lld %-8lld %-8lld %-8lld %-8lld %-9s %s\n",
           name, (long long)json_integer_value(json_object_get(v, "accepted")),
           (long long)json_integer_value(json_object_get(v, "open")),
           (long long)json_integer_value(json_object_get(v, "refused")),
           (long long)json_integer_value(json_object_get(v, "accept_paused")),
           (long long)json_integer_value(json_object_get(v, "idle_timeout")),
           (long long)json_integer_value(json_object_get(v, "send_timeout")),
           (long long)json_integer_value(json_object_get(v, "deadline")), rd,
           wr);
  }
}

/* Workers replaced, by reason, summed over the slots, and what recycling
 * did (its triggers); nothing when no worker was ever replaced. */
static void print_replaced(json_t *r) {
  long long by[8] = {0};
  const char *names[8] = {0};
  size_t nr = 0, k;
  json_t *sl;
  json_array_foreach(json_object_get(r, "slots"), k, sl) {
    const char *key;
    json_t *v;
    size_t i = 0;
    json_object_foreach(json_object_get(sl, "replaced"), key, v) {
      if (i >= 8)
        break;
      names[i] = key;
      by[i++] += (long long)json_integer_value(v);
    }
    nr = i > nr ? i : nr;
  }
  long long all = 0;
  for (size_t i = 0; i < nr; i++)
    all += by[i];
  if (all == 0)
    return;
  printf("workers replaced:");
  for (size_t i = 0; i < nr; i++)
    printf("%s %s %lld", i ? "," : "", names[i], by[i]);
  printf("\n");
  json_t *rc = json_object_get(r, "recycles");
  if (json_is_object(rc))
    printf("recycled: requests %lld, lifetime %lld, memory %lld; %lld "
           "replacement%s failed, %lld in flight\n",
           (long long)json_integer_value(json_object_get(rc, "requests")),
           (long long)json_integer_value(json_object_get(rc, "lifetime")),
           (long long)json_integer_value(json_object_get(rc, "memory")),
           (long long)json_integer_value(json_object_get(rc, "failed")),
           json_integer_value(json_object_get(rc, "failed")) == 1 ? "" : "s",
           (long long)json_integer_value(json_object_get(rc, "in_flight")));
}

/* "N (B)" of a queue's entries and bytes (entries "-" when it has none of
 * its own, key NULL). */
static void fmt_use(const json_t *q, const char *entries, const char *bytes,
                    char *out, size_t n) {
  char b[32];
  fmt_bytes(json_is_integer(json_object_get(q, bytes)) ? ival(q, bytes) : -1, b,
            sizeof(b));
  if (entries)
    snprintf(out, n, "%lld (%s)", ival(q, entries), b);
  else
    snprintf(out, n, "- (%s)", b);
}

/* The bounded queues between the master and each worker (docs/bus.md,
 * Bounds): what each holds, the most it held, its bound, what it lost. */
static void print_queues(json_t *procs) {
  static const char *const names[] = {"deliveries", "journal", "channel"};
  if (json_array_size(procs) == 0)
    return;
  printf("%-11s %-5s %-8s %-14s %-14s %-14s %s\n", "QUEUE", "SLOT", "PID",
         "NOW", "HIGH", "BOUND", "LOST");
  size_t i;
  json_t *w;
  json_array_foreach(procs, i, w) {
    for (size_t k = 0; k < UTIL_ARRAY_LEN(names); k++) {
      const json_t *q = json_object_get(json_object_get(w, "queues"), names[k]);
      if (q == NULL)
        continue;
      int own = k < 2; /* the channel's bytes have no entries or bound */
      char now[48], high[48], bound[48] = "-", lost[48];
      fmt_use(q, own ? "entries" : NULL, "bytes", now, sizeof(now));
      fmt_use(q, own ? "high_entries" : NULL, "high_bytes", high, sizeof(high));
      if (own)
        fmt_use(q, "limit_entries", "limit_bytes", bound, sizeof(bound));
      if (k == 2)
        fmt_bytes(ival(q, "lost_bytes"), lost, sizeof(lost));
      else
        snprintf(lost, sizeof(lost), "%lld", ival(q, "dropped"));
      printf("%-11s %-5lld %-8lld %-14s %-14s %-14s %s\n", names[k],
             ival(w, "slot"), ival(w, "pid"), now, high, bound, lost);
    }
  }
}

void cli_print_status(json_t *r) {
  printf("master pid %lld, up %.1f s, generation %lld%s, %lld worker%s, "
         "%lld reload%s\nconfig %s\n",
         (long long)json_integer_value(json_object_get(r, "pid")),
         json_real_value(json_object_get(r, "uptime")),
         (long long)json_integer_value(json_object_get(r, "generation")),
         json_is_true(json_object_get(r, "reloading")) ? " (reloading)" : "",
         (long long)json_integer_value(json_object_get(r, "workers")),
         json_integer_value(json_object_get(r, "workers")) == 1 ? "" : "s",
         (long long)json_integer_value(json_object_get(r, "reloads")),
         json_integer_value(json_object_get(r, "reloads")) == 1 ? "" : "s",
         json_string_value(json_object_get(r, "config")));
  json_t *ctl = json_object_get(r, "control");
  if (ctl) {
    char q[32], high[32], limit[32];
    fmt_bytes(ival(ctl, "bytes"), q, sizeof(q));
    fmt_bytes(ival(ctl, "high_bytes"), high, sizeof(high));
    fmt_bytes(ival(ctl, "limit_bytes"), limit, sizeof(limit));
    printf("control: %lld client%s, %lld refused, %lld dropped (unread "
           "replies), %lld paused; replies waiting %lld (%s, at most %s, "
           "bound %s a client)\n",
           ival(ctl, "clients"), ival(ctl, "clients") == 1 ? "" : "s",
           ival(ctl, "refused"), ival(ctl, "dropped"), ival(ctl, "paused"),
           ival(ctl, "replies"), q, high, limit);
  }
  const char *problem = json_string_value(json_object_get(r, "problem"));
  if (problem)
    printf("WARNING: %s\n", problem);
  json_int_t failures =
      json_integer_value(json_object_get(r, "start_failures"));
  if (failures > 0)
    printf("%lld failed start%s of a worker (before it existed; retried)\n",
           (long long)failures, failures == 1 ? "" : "s");
  print_replaced(r);
  size_t k;
  json_t *sl;
  json_array_foreach(json_object_get(r, "slots"), k, sl) {
    const char *st = json_string_value(json_object_get(sl, "state"));
    if (st && strcmp(st, "running") != 0)
      printf("slot %lld %s: %s\n",
             (long long)json_integer_value(json_object_get(sl, "slot")), st,
             json_string_value(json_object_get(sl, "why")));
  }
  cli_print_cluster(r, 0);
  json_t *mt = json_object_get(r, "metrics");
  if (json_is_object(mt))
    printf("metrics: %s, %lld request%s, %lld too large, %lld timed out, "
           "%lld evicted, %lld refused\n",
           json_string_value(json_object_get(mt, "address")),
           (long long)json_integer_value(json_object_get(mt, "requests")),
           json_integer_value(json_object_get(mt, "requests")) == 1 ? "" : "s",
           (long long)json_integer_value(json_object_get(mt, "too_large")),
           (long long)json_integer_value(json_object_get(mt, "timed_out")),
           (long long)json_integer_value(json_object_get(mt, "evicted")),
           (long long)json_integer_value(json_object_get(mt, "refused")));
  print_servers(json_object_get(r, "servers"));
  printf("%-5s %-8s %-9s %-4s %-9s %-8s %-6s %-7s %-7s %-7s %-7s %-12s %-4s "
         "%s\n",
         "SLOT", "PID", "STATE", "GEN", "UPTIME", "RESTARTS", "CONNS", "RSS",
         "PRIVATE", "PENDING", "REFUSED", "SOON-REFUSED", "CPU", "OUTPUT");
  size_t i;
  json_t *w;
  json_array_foreach(json_object_get(r, "procs"), i, w) {
    char rss[32], priv[32], up[32];
    fmt_bytes((long long)json_integer_value(json_object_get(w, "rss")), rss,
              sizeof(rss));
    fmt_bytes((long long)json_integer_value(json_object_get(w, "private")),
              priv, sizeof(priv));
    snprintf(up, sizeof(up), "%.1fs",
             json_real_value(json_object_get(w, "uptime")));
    json_t *bus = json_object_get(w, "bus");
    char cpu[16] = "-", output[96];
    json_t *c = json_object_get(w, "cpu"), *o = json_object_get(w, "output");
    if (json_is_integer(c))
      snprintf(cpu, sizeof(cpu), "%lld", (long long)json_integer_value(c));
    /* Lines logged, of which cut, and the bytes cut lines lost. */
    snprintf(
        output, sizeof(output), "%lld lines, %lld cut (%lld B dropped)",
        (long long)json_integer_value(json_object_get(o, "lines")),
        (long long)json_integer_value(json_object_get(o, "cut")),
        (long long)json_integer_value(json_object_get(o, "dropped_bytes")));
    printf("%-5lld %-8lld %-9s %-4lld %-9s %-8lld %-6lld %-7s %-7s %-7lld "
           "%-7lld %-12lld %-4s %s\n",
           (long long)json_integer_value(json_object_get(w, "slot")),
           (long long)json_integer_value(json_object_get(w, "pid")),
           json_string_value(json_object_get(w, "state")),
           (long long)json_integer_value(json_object_get(w, "generation")), up,
           (long long)json_integer_value(json_object_get(w, "restarts")),
           (long long)json_integer_value(json_object_get(w, "connections")),
           rss, priv,
           (long long)json_integer_value(json_object_get(bus, "pending")),
           (long long)json_integer_value(json_object_get(bus, "refused")),
           (long long)json_integer_value(json_object_get(bus, "soon_refused")),
           cpu, output);
  }
  print_queues(json_object_get(r, "procs"));
}
