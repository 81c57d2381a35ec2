/*
 * recycle.c - [aio] max_requests, max_lifetime and max_memory, as gunicorn's
 * max_requests and PM2's max_memory_restart: a worker past one of its
 * limits is replaced the way a reload replaces it (reload.c), with the same
 * step (master_slot_promote): a new worker of the serving generation starts
 * on the slot's own sockets, and only once it is ready does the old one
 * drain (graceful_timeout). The slot is never without a worker that
 * serves, and at most recycle_concurrency slots are in replacement at once.
 *
 * Limits are drawn per worker, once, when it first serves: max_requests +
 * randint(0, max_requests_jitter) (gunicorn's rule), max_lifetime +
 * uniform(0, max_lifetime_jitter), so workers started together are not
 * all recycled together. Requests are read from the counters page the
 * worker writes (counters.h): a server whose protocol calls
 * aio_conn_request_done() counts its requests, any other its connections.
 * Memory is the resident set from /proc, read by the master once a second.
 *
 * Nothing is recycled during a reload (it replaces every worker anyway: a
 * replacement still starting when one begins is dropped, and the reload's
 * workers draw limits of their own), a start or a stop.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "counters.h"
#include "log.h"
#include "master.h"
#include "util.h"

/* How often max_memory reads the workers' resident sets. */
#define RECYCLE_MEMORY_EVERY_MS 1000
/* A replacement not ready by then is given up, when [aio] timeout is 0 (no
 * liveness limit) or longer; the same bound as a reload's. */
#define RECYCLE_READY_MAX_MS 60000
/* After a replacement failed: retry from 1 s, doubling, up to this. */
#define RECYCLE_RETRY_MAX_MS 30000

static const char *const trigger_names[] = {
#define TRIGGER_NAME(e, s) s,
    RECYCLE_TRIGGERS(TRIGGER_NAME)
#undef TRIGGER_NAME
};

/* Jitter wants spread, not secrecy: xorshift64*, seeded from the clock and
 * the pid once. */
static uint64_t next_random(void) {
  static uint64_t x;
  if (x == 0)
    x = (util_now_ns() ^ ((uint64_t)getpid() << 32)) | 1;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  return x * 0x2545F4914F6CDD1Dull;
}

/* A whole number in [0, n]. */
static uint64_t randint(uint64_t n) { return n ? next_random() % (n + 1) : 0; }

/* A number in [0, 1). */
static double uniform(void) {
  return (double)(next_random() >> 11) / (double)(1ull << 53);
}

static void draw_limits(struct wproc *p) {
  const struct settings *set = &p->g->app.s;
  p->limits_drawn = 1;
  if (set->max_requests > 0)
    p->max_requests = (uint64_t)set->max_requests +
                      randint((uint64_t)set->max_requests_jitter);
  if (set->max_lifetime > 0)
    p->max_lifetime_ms =
        (uint64_t)((set->max_lifetime + set->max_lifetime_jitter * uniform()) *
                   1000);
}

/* What p served: requests where its protocol counts them, else
 * connections, summed over its servers. */
static uint64_t served(const struct wproc *p) {
  uint64_t n = 0;
  for (size_t i = 0; i < p->g->app.s.nservers; i++) {
    uint64_t req = ctr_get(&p->ctrs[i], CTR_REQUESTS);
    n += req ? req : ctr_get(&p->ctrs[i], CTR_ACCEPTED);
  }
  return n;
}

/* pid's resident set in bytes, from /proc/PID/statm; -1 when gone. */
static long long resident(pid_t pid) {
  char path[64];
  snprintf(path, sizeof(path), "/proc/%d/statm", (int)pid);
  FILE *f = fopen(path, "re");
  if (f == NULL)
    return -1;
  long long size, pages;
  int n = fscanf(f, "%lld %lld", &size, &pages);
  fclose(f);
  return n == 2 ? pages * sysconf(_SC_PAGESIZE) : -1;
}

static void fmt_mib(long long bytes, char *out, size_t n) {
  snprintf(out, n, "%.1f MiB", (double)bytes / (1024.0 * 1024.0));
}

/* The trigger p is past, with the figures in why; -1 when none. */
static int due(const struct wproc *p, uint64_t now, int check_memory, char *why,
               size_t n) {
  const struct settings *set = &p->g->app.s;
  if (p->max_requests) {
    uint64_t done = served(p);
    if (done >= p->max_requests) {
      snprintf(why, n,
               "served %llu requests, its limit %llu (max_requests = %d, "
               "max_requests_jitter = %d)",
               (unsigned long long)done, (unsigned long long)p->max_requests,
               set->max_requests, set->max_requests_jitter);
      return RECYCLE_REQUESTS;
    }
  }
  if (p->max_lifetime_ms && now - p->ready_ms >= p->max_lifetime_ms) {
    snprintf(why, n,
             "served for %.1f s, its limit %.1f s (max_lifetime = %g s, "
             "max_lifetime_jitter = %g s)",
             (double)(now - p->ready_ms) / 1000,
             (double)p->max_lifetime_ms / 1000, set->max_lifetime,
             set->max_lifetime_jitter);
    return RECYCLE_LIFETIME;
  }
  if (check_memory && set->max_memory) {
    long long rss = resident(p->pid);
    if (rss > 0 && (unsigned long long)rss > set->max_memory) {
      char have[32], limit[32];
      fmt_mib(rss, have, sizeof(have));
      fmt_mib((long long)set->max_memory, limit, sizeof(limit));
      snprintf(why, n, "resident memory %s (%lld bytes) over max_memory = %s",
               have, rss, limit);
      return RECYCLE_MEMORY;
    }
  }
  return -1;
}

static struct slot *slot_of(struct master *m, const struct wproc *p) {
  return p->slot >= 0 && (size_t)p->slot < m->slots_cap ? &m->slots[p->slot]
                                                        : NULL;
}

/* The replacement of s did not come: its worker goes on serving, and the
 * slot is tried again later. */
static void replacement_failed(struct master *m, struct slot *s) {
  s->recycling = 0;
  s->recycle_failures++;
  m->recycle_failed++;
  unsigned shift = s->recycle_failures < 6 ? s->recycle_failures - 1 : 5;
  uint64_t delay = 1000ull << shift;
  if (delay > RECYCLE_RETRY_MAX_MS)
    delay = RECYCLE_RETRY_MAX_MS;
  s->recycle_retry_ms = uv_now(m->loop) + delay;
  log_warnx("worker %d: recycling again in %llu ms (%u failure%s in a row)",
            s->index, (unsigned long long)delay, s->recycle_failures,
            s->recycle_failures == 1 ? "" : "s");
}

static int start(struct master *m, struct slot *s, enum recycle_trigger t,
                 const char *why) {
  log_info("worker %d (pid %d): recycling (%s): %s", s->index, (int)s->cur->pid,
           trigger_names[t], why);
  int err = master_slot_spawn_next(m, m->gen, (size_t)s->index);
  if (err) {
    log_error("worker %d: cannot start its replacement: %s; pid %d goes on "
              "serving",
              s->index, strerror(-err), (int)s->cur->pid);
    replacement_failed(m, s);
    return err;
  }
  s->recycling = (int)t + 1;
  return 0;
}

void recycle_tick(struct master *m, uint64_t now) {
  const struct settings *set = &m->gen->app.s;
  uint64_t limit = (uint64_t)(set->timeout * 1000);
  if (limit == 0 || limit > RECYCLE_READY_MAX_MS)
    limit = RECYCLE_READY_MAX_MS;
  size_t busy = 0;
  for (size_t i = 0; i < m->slots_cap; i++) {
    struct slot *s = &m->slots[i];
    if (!s->recycling)
      continue;
    if (s->next && now - s->next->started_ms > limit) {
      log_error("worker %d: its replacement (pid %d) was not ready in %llu "
                "ms; pid %d goes on serving",
                s->index, (int)s->next->pid, (unsigned long long)limit,
                s->cur ? (int)s->cur->pid : 0);
      master_slot_discard_next(m, (size_t)s->index);
      replacement_failed(m, s);
      continue;
    }
    busy++;
  }
  if (m->phase != MASTER_SERVING) /* not while RELOADING, STOPPING... */
    return;
  if (!set->max_requests && !set->max_lifetime && !set->max_memory)
    return;
  int check_memory =
      set->max_memory && now - m->recycle_mem_ms >= RECYCLE_MEMORY_EVERY_MS;
  if (check_memory)
    m->recycle_mem_ms = now;
  for (size_t i = 0; i < m->nslots; i++) {
    if (busy >= (size_t)set->recycle_concurrency)
      return;
    struct slot *s = &m->slots[i];
    struct wproc *p = s->cur;
    if (s->recycling || s->state != SLOT_RUNNING || p == NULL ||
        p->state != WPROC_READY || p->g != m->gen || now < s->recycle_retry_ms)
      continue;
    if (!p->limits_drawn)
      draw_limits(p);
    char why[256];
    int t = due(p, now, check_memory, why, sizeof(why));
    if (t >= 0 && start(m, s, (enum recycle_trigger)t, why) == 0)
      busy++;
  }
}

int recycle_worker_ready(struct master *m, struct wproc *p) {
  struct slot *s = slot_of(m, p);
  if (s == NULL || !s->recycling || s->next != p)
    return 0;
  enum recycle_trigger t = (enum recycle_trigger)(s->recycling - 1);
  struct wproc *old = s->cur;
  s->recycling = 0;
  s->recycle_failures = 0;
  m->recycles[t]++;
  log_info("worker %d recycled (%s): pid %d serves, pid %d drains "
           "(graceful_timeout = %g s)",
           s->index, trigger_names[t], (int)p->pid, old ? (int)old->pid : 0,
           m->gen->app.s.graceful_timeout);
  master_slot_promote(m, (size_t)s->index, RESTART_RECYCLE);
  return 1;
}

void recycle_worker_exited(struct master *m, struct wproc *p, const char *how) {
  struct slot *s = slot_of(m, p);
  if (s == NULL || !s->recycling)
    return;
  /* Its replacement: master.c has cleared the slot's next already. */
  if (s->cur != p && s->next == NULL) {
    log_error("worker %d: its replacement (pid %d) %s before it was ready; "
              "pid %d goes on serving",
              s->index, (int)p->pid, how, s->cur ? (int)s->cur->pid : 0);
    replacement_failed(m, s);
  } else if (s->cur == p) {
    /* The slot restarts as after any crash: one new worker, not two. */
    log_warnx("worker %d (pid %d) %s while its replacement started: "
              "replacement dropped",
              s->index, (int)p->pid, how);
    master_slot_discard_next(m, (size_t)s->index);
    s->recycling = 0;
  }
}

void recycle_cancel(struct master *m, const char *why) {
  for (size_t i = 0; i < m->slots_cap; i++) {
    struct slot *s = &m->slots[i];
    if (!s->recycling)
      continue;
    log_info("worker %d: recycling abandoned: %s", s->index, why);
    master_slot_discard_next(m, (size_t)s->index);
    s->recycling = 0;
  }
}

json_t *recycle_status(const struct master *m) {
  json_t *o = json_object();
  for (int t = 0; t < RECYCLE_NTRIGGERS; t++)
    json_object_set_new(o, trigger_names[t],
                        json_integer((json_int_t)m->recycles[t]));
  json_int_t busy = 0;
  for (size_t i = 0; i < m->slots_cap; i++)
    busy += m->slots[i].recycling != 0;
  json_object_set_new(o, "failed", json_integer((json_int_t)m->recycle_failed));
  json_object_set_new(o, "in_flight", json_integer(busy));
  return o;
}

const char *recycle_trigger_name(int t) {
  return t >= 0 && t < RECYCLE_NTRIGGERS ? trigger_names[t] : NULL;
}
