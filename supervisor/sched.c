/*
 * sched.c - [schedule:NAME] timers in the master. The k-th run of an
 * `every` schedule is due at start + offset + k * every on the monotonic
 * clock, whatever earlier runs took, so there is no cumulative drift. Each
 * run goes to one ready worker, the least busy with runs (round robin among
 * equals). A master held up past due times runs the last of them and
 * skips the others, logged with their numbers and counted as late
 * (skip_late); by default a run is skipped,
 * and logged, while the previous one has not reported done (for a
 * scheduler that returned AIO_PENDING: until its aio_event_done() or its
 * timeout, both seen in the worker). A run whose worker dies counts as
 * failed. The done frame's result goes on to cb, its status and error to
 * err.
 *
 *
 * A scope = cluster schedule (with [aio] cluster set) is numbered from the
 * wall clock instead, so that every node agrees: occurrence k of an `every`
 * schedule is due at offset + k * every seconds since the epoch, and a
 * cron occurrence is its minute. Each node claims each occurrence in Redis
 * (cluster.c); only the winner runs it. Unclaimable (Redis down), it
 * follows cluster_fallback: skipped, or run here.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "cron.h"
#include "log.h"
#include "master.h"
#include "util.h"

#define SCHED_MAX_INFLIGHT 64
/* What a line about run n of schedule sc carries, for log_fields. */
#define SCHED_FIELDS(sc, n)                                                    \
  LOG_FIELDS(LOG_STR("schedule", (sc)->conf->name), LOG_INT("run", (n)))

struct inflight {
  json_int_t id;
  struct wproc *p;
  int which; /* enum bus_job_part */
  long long run;
  double due; /* wall clock the run was due, for aio_event_t */
  uint64_t started_ns;
};

struct sched {
  struct master *m;
  size_t index;
  const struct schedule_conf *conf;
  struct cron cron;
  time_t cron_at; /* the minute a cron timer is armed for */
  uv_timer_t timer;
  uint64_t base_ns; /* start + offset */
  long long k;      /* the next run number (1-based) */
  struct inflight inflight[SCHED_MAX_INFLIGHT];
  size_t ninflight;
  struct sched_counts n;
  uint64_t name_hash;        /* finds it again after a reload, when the old
                                configuration's strings may be gone */
  struct sched_grave *grave; /* set when a reload retired it */
  int cluster;               /* claimed in the cluster (scope = cluster) */
  long long occ;             /* cluster: the occurrence armed for */
  double occ_due;            /* its due time, wall clock */
  long long last_occ;        /* the last one handled, or 0 */
  int fallback_said;         /* the fallback was logged since the last claim */
};

/* Retired schedules are freed when the last of their timers has closed. */
struct sched_grave {
  struct sched *arr;
  size_t left;
};

/* Runs in flight on p, over every schedule. */
static size_t runs_on(const struct master *m, const struct wproc *p) {
  size_t n = 0;
  for (size_t s = 0; s < m->nscheds; s++)
    for (size_t i = 0; i < m->scheds[s].ninflight; i++)
      n += m->scheds[s].inflight[i].p == p;
  return n;
}

/* The ready worker of the current generation with the fewest runs in
 * flight, so a long job on one worker does not hold up the runs of other
 * schedules dealt to it while another worker is idle. Among the least
 * busy, the turn goes round (m->rr), so idle workers share the runs. */
static struct wproc *pick_worker(struct master *m) {
  size_t least = SIZE_MAX, n = 0;
  for (struct wproc *p = m->procs; p; p = p->next) {
    if (p->state != WPROC_READY || p->g != m->gen)
      continue;
    size_t busy = runs_on(m, p);
    if (busy < least) {
      least = busy;
      n = 0;
    }
    n += busy == least;
  }
  if (n == 0)
    return NULL;
  size_t want = m->rr++ % n, i = 0;
  for (struct wproc *p = m->procs; p; p = p->next)
    if (p->state == WPROC_READY && p->g == m->gen && runs_on(m, p) == least &&
        i++ == want)
      return p;
  return NULL;
}

/* How a run ended, for its cb or err: the done frame's result, or its
 * status and error. */
struct outcome {
  int ok;
  json_int_t status;
  const char *error;
  json_t *result; /* borrowed */
};

static int dispatch(struct sched *sc, int which, long long run, double due,
                    struct wproc *to, const struct outcome *o) {
  struct master *m = sc->m;
  if (to == NULL || to->state != WPROC_READY)
    to = pick_worker(m);
  if (to == NULL) {
    log_fields(AIO_LOG_WARN, SCHED_FIELDS(sc, run),
               "[schedule:%s] run %lld: no ready worker; skipped",
               sc->conf->name, run);
    return -EAGAIN;
  }
  if (sc->ninflight == SCHED_MAX_INFLIGHT) {
    log_fields(AIO_LOG_WARN, SCHED_FIELDS(sc, run),
               "[schedule:%s] run %lld: %d runs in flight; skipped",
               sc->conf->name, run, SCHED_MAX_INFLIGHT);
    return -EBUSY;
  }
  json_int_t id = m->next_id++;
  json_t *msg = bus_msg(BUS_RUN);
  json_object_set_new(msg, "id", json_integer(id));
  json_object_set_new(msg, "job", json_integer((json_int_t)sc->index));
  json_object_set_new(msg, "which", json_integer(which));
  json_object_set_new(msg, "run", json_integer(run));
  json_object_set_new(msg, "due", json_real(due));
  if (cluster_node(m))
    json_object_set_new(msg, "node", json_string(cluster_node(m)));
  if (which == BUS_JOB_CB && o && o->result)
    json_object_set(msg, "result", o->result);
  if (which == BUS_JOB_ERR && o) {
    json_object_set_new(msg, "status", json_integer(o->status));
    json_object_set_new(msg, "error", json_string(o->error));
  }
  int err = channel_send(&to->ch, msg);
  json_decref(msg);
  if (err)
    return err;
  sc->inflight[sc->ninflight++] = (struct inflight){.id = id,
                                                    .p = to,
                                                    .which = which,
                                                    .run = run,
                                                    .due = due,
                                                    .started_ns = uv_hrtime()};
  return 0;
}

static uint64_t due_ns(const struct sched *sc, long long k) {
  return sc->base_ns +
         (uint64_t)llround((double)(k - 1) * sc->conf->every * 1e9);
}

static double wall_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Host schedules: the wall clock of a monotonic due time. */
static double wall_of(uint64_t mono_ns) {
  return wall_now() - ((double)uv_hrtime() - (double)mono_ns) / 1e9;
}

static void arm(struct sched *sc);
static void on_timer(uv_timer_t *t);

/* The due times of runs sc->k to last passed while the master was held up
 * (a busy loop, a starved or stopped process): skipped, counted, and
 * logged with the runs and how late the master was for the first of them,
 * which tells a starved master (late by more than the period) from a grid
 * that drifts (runs that come late without such a line). */
static void skip_late(struct sched *sc, long long last, uint64_t now) {
  long long first = sc->k, n = last - first + 1;
  long long ago_ms = (long long)((now - due_ns(sc, first)) / 1000000);
  sc->n.skipped += (uint64_t)n;
  sc->n.late += (uint64_t)n;
  if (n == 1)
    log_fields(AIO_LOG_WARN, SCHED_FIELDS(sc, first),
               "[schedule:%s] run %lld skipped: its due time passed while "
               "the master was busy (due %lld ms ago)",
               sc->conf->name, first, ago_ms);
  else
    log_fields(AIO_LOG_WARN, SCHED_FIELDS(sc, first),
               "[schedule:%s] runs %lld to %lld skipped: their due times "
               "passed while the master was busy (run %lld due %lld ms ago)",
               sc->conf->name, first, last, first, ago_ms);
}

/* Is a run of sc in flight that a new one must not overlap? */
static int sched_busy(const struct sched *sc) {
  int busy = 0;
  for (size_t i = 0; i < sc->ninflight; i++)
    busy |= sc->inflight[i].which == BUS_JOB_FUNC || !sc->conf->overlap;
  return busy && !sc->conf->overlap;
}

/* ---- scope = cluster ------------------------------------------------------
 */

/* A claim in flight: the schedule is found again by name when the answer
 * comes, as a reload may have replaced it in between. */
struct pending_claim {
  long long occ;
  double due;
  char name[];
};

static struct sched *sched_by_name(struct master *m, const char *name) {
  for (size_t i = 0; i < m->nscheds; i++)
    if (strcmp(m->scheds[i].conf->name, name) == 0)
      return &m->scheds[i];
  return NULL;
}

/* Redis cannot say who runs occ: cluster_fallback decides. */
static void fallback(struct sched *sc, long long occ, double due,
                     const char *why) {
  int local = sc->conf->fallback == CLUSTER_FALLBACK_LOCAL;
  cluster_fallback_taken(sc->m, local);
  /* Once per outage, not once per occurrence. */
  if (!sc->fallback_said)
    log_warnx("[schedule:%s] occurrence %lld: %s; %s (cluster_fallback = "
              "%s)",
              sc->conf->name, occ, why,
              local ? "running it on this node" : "skipped",
              local ? "local" : "skip");
  else
    log_debug("[schedule:%s] occurrence %lld: %s; %s", sc->conf->name, occ, why,
              local ? "run here" : "skipped");
  sc->fallback_said = 1;
  if (local)
    dispatch(sc, BUS_JOB_FUNC, occ, due, NULL, NULL);
}

static void on_claim(struct master *m, void *arg, enum cluster_claim res) {
  struct pending_claim *pc = arg;
  struct sched *sc = res == CLUSTER_CLOSED || master_stopping(m)
                         ? NULL
                         : sched_by_name(m, pc->name);
  if (sc && sc->cluster) {
    if (res == CLUSTER_WON) {
      sc->fallback_said = 0;
      log_debug("[schedule:%s] occurrence %lld: claimed; running it",
                sc->conf->name, pc->occ);
      dispatch(sc, BUS_JOB_FUNC, pc->occ, pc->due, NULL, NULL);
    } else if (res == CLUSTER_LOST) {
      sc->fallback_said = 0;
      log_debug("[schedule:%s] occurrence %lld: another node has it",
                sc->conf->name, pc->occ);
    } else {
      fallback(sc, pc->occ, pc->due, "the claim got no answer");
    }
  }
  free(pc);
}

/* How long a claim key lives: past any node's timer for the same
 * occurrence (clock skew, a busy loop), and twice the period. */
static uint64_t claim_ttl_ms(const struct sched *sc) {
  double period = sc->conf->every > 0 ? sc->conf->every : 60;
  double ms = period * 2000;
  return ms < 60000 ? 60000 : (uint64_t)ms;
}

static void cluster_occurrence(struct sched *sc, long long occ, double due) {
  struct master *m = sc->m;
  if (sc->last_occ && occ > sc->last_occ + 1) {
    sc->n.skipped += (uint64_t)(occ - sc->last_occ - 1);
    sc->n.late += (uint64_t)(occ - sc->last_occ - 1);
    log_warnx("[schedule:%s] %lld occurrences passed while the master was "
              "busy; skipped",
              sc->conf->name, occ - sc->last_occ - 1);
  }
  sc->last_occ = occ;
  if (sched_busy(sc)) {
    /* Not claimed: another node may take it. */
    sc->n.skipped++;
    log_warnx("[schedule:%s] occurrence %lld not claimed: run still in "
              "progress here",
              sc->conf->name, occ);
    return;
  }
  if (!cluster_connected(m)) {
    fallback(sc, occ, due, "the cluster is unreachable");
    return;
  }
  size_t n = strlen(sc->conf->name);
  struct pending_claim *pc = malloc(sizeof(*pc) + n + 1);
  if (pc == NULL) {
    fallback(sc, occ, due, "out of memory");
    return;
  }
  pc->occ = occ;
  pc->due = due;
  memcpy(pc->name, sc->conf->name, n + 1);
  int err =
      cluster_claim(m, sc->conf->name, occ, claim_ttl_ms(sc), on_claim, pc);
  if (err) {
    free(pc);
    fallback(sc, occ, due,
             err == -ENOBUFS ? "the cluster queue is full"
                             : "the cluster is unreachable");
  }
}

/* Arm a cluster `every` schedule for its next occurrence on the wall
 * clock. */
static void arm_cluster_every(struct sched *sc) {
  double now = wall_now(), every = sc->conf->every, off = sc->conf->offset;
  long long k = (long long)floor((now - off) / every) + 1;
  if (k <= sc->last_occ)
    k = sc->last_occ + 1;
  sc->occ = k;
  sc->occ_due = off + (double)k * every;
  double delay = (sc->occ_due - now) * 1000;
  uv_timer_start(&sc->timer, on_timer, delay > 0 ? (uint64_t)ceil(delay) : 0,
                 0);
}

static void on_timer(uv_timer_t *t) {
  struct sched *sc = t->data;
  if (sc->cluster && sc->conf->every > 0) {
    if (wall_now() < sc->occ_due) {
      arm(sc); /* early (a stale loop clock, a clock stepped back) */
      return;
    }
    cluster_occurrence(sc, sc->occ, sc->occ_due);
    arm(sc);
    return;
  }
  if (sc->conf->every == 0 && time(NULL) < sc->cron_at) {
    /* Woke before the minute (a stale loop clock, or the wall clock was
     * stepped back): running now and re-arming for the next match after
     * now would run this minute twice. */
    arm(sc);
    return;
  }
  uint64_t now = uv_hrtime();
  long long k = sc->k;
  if (sc->conf->every > 0 && now < due_ns(sc, k)) {
    arm(sc); /* early: run k is not due yet */
    return;
  }
  if (sc->conf->every > 0) {
    /* If the master was held up past several due times, run once and
     * skip the rest rather than firing a burst. */
    while (due_ns(sc, k + 1) <= now)
      k++;
    if (k != sc->k)
      skip_late(sc, k - 1, now);
  }
  sc->k = k + 1;
  if (sc->cluster) {
    /* cron: the occurrence is the minute. */
    cluster_occurrence(sc, (long long)(sc->cron_at / 60), (double)sc->cron_at);
  } else if (sched_busy(sc)) {
    sc->n.skipped++;
    log_fields(AIO_LOG_WARN, SCHED_FIELDS(sc, k),
               "[schedule:%s] run %lld skipped: run still in progress",
               sc->conf->name, k);
  } else {
    log_debug("[schedule:%s] run %lld", sc->conf->name, k);
    if (dispatch(sc, BUS_JOB_FUNC, k,
                 sc->conf->every > 0 ? wall_of(due_ns(sc, k))
                                     : (double)sc->cron_at,
                 NULL, NULL))
      sc->n.skipped++;
  }
  arm(sc);
}

static void arm(struct sched *sc) {
  uint64_t delay_ms;
  /* The timer counts from the loop's cached time: bring it up to date, or
   * the run fires early by however long this loop iteration has taken. */
  uv_update_time(sc->m->loop);
  if (sc->cluster && sc->conf->every > 0) {
    arm_cluster_every(sc);
    return;
  }
  if (sc->conf->every > 0) {
    /* From the loop's time, in whole ms and behind uv_hrtime() by up to
     * one (more with a coarse clock), which the timer counts from, rounded
     * up: a timer never fires before its due time. (Counted from
     * uv_hrtime(), it could fire up to a few ms early.) */
    uint64_t due = due_ns(sc, sc->k), now = uv_now(sc->m->loop) * 1000000;
    delay_ms = due > now ? (due - now + 999999) / 1000000 : 0;
  } else {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    time_t next = cron_next(&sc->cron, ts.tv_sec);
    if (next == (time_t)-1) {
      log_error("[schedule:%s] cron '%s' never matches", sc->conf->name,
                sc->conf->cron);
      return;
    }
    sc->cron_at = next;
    /* From now to the minute, in ms rounded up: not up to a second late
     * as whole seconds would be. */
    delay_ms =
        (uint64_t)(next - ts.tv_sec) * 1000 - (uint64_t)ts.tv_nsec / 1000000;
  }
  uv_timer_start(&sc->timer, on_timer, delay_ms, 0);
}

int sched_start(struct master *m) {
  const struct settings *s = &m->gen->app.s;
  if (s->nschedules == 0)
    return 0;
  m->scheds = calloc(s->nschedules, sizeof(*m->scheds));
  if (m->scheds == NULL)
    return -ENOMEM;
  m->nscheds = s->nschedules;
  uint64_t now = uv_hrtime();
  for (size_t i = 0; i < m->nscheds; i++) {
    struct sched *sc = &m->scheds[i];
    sc->m = m;
    sc->index = i;
    sc->conf = &s->schedules[i];
    sc->k = 1;
    sc->cluster = sc->conf->cluster && cluster_enabled(m);
    sc->name_hash = 14695981039346656037ull; /* FNV-1a */
    for (const char *c = sc->conf->name; *c; c++)
      sc->name_hash = (sc->name_hash ^ (unsigned char)*c) * 1099511628211ull;
    if (sc->conf->cron) {
      char err[128];
      cron_parse(&sc->cron, sc->conf->cron, err, sizeof(err));
    }
    /* The first run is due one period (plus offset) after the start. */
    sc->base_ns =
        now + (uint64_t)llround((sc->conf->offset + sc->conf->every) * 1e9);
    uv_timer_init(m->loop, &sc->timer);
    sc->timer.data = sc;
    arm(sc);
  }
  return 0;
}

void sched_stop(struct master *m) {
  for (size_t i = 0; i < m->nscheds; i++)
    uv_timer_stop(&m->scheds[i].timer);
}

static void finish(struct sched *sc, size_t i, const struct outcome *o) {
  struct inflight f = sc->inflight[i];
  sc->inflight[i] = sc->inflight[--sc->ninflight];
  if (f.which == BUS_JOB_FUNC) {
    if (o->ok)
      sc->n.ok++;
    else
      sc->n.failed++;
    sc->n.done++;
    sc->n.seconds += (double)(uv_hrtime() - f.started_ns) / 1e9;
  }
  if (f.which != BUS_JOB_FUNC) {
    if (!o->ok)
      log_fields(AIO_LOG_WARN, SCHED_FIELDS(sc, f.run),
                 "[schedule:%s] run %lld: %s failed: %s", sc->conf->name, f.run,
                 bus_job_part_name((size_t)f.which), o->error);
    return;
  }
  if (o->ok && sc->conf->has_cb)
    dispatch(sc, BUS_JOB_CB, f.run, f.due, f.p, o);
  else if (!o->ok) {
    log_fields(AIO_LOG_WARN, SCHED_FIELDS(sc, f.run),
               "[schedule:%s] run %lld failed: %s", sc->conf->name, f.run,
               o->error);
    if (sc->conf->has_err)
      dispatch(sc, BUS_JOB_ERR, f.run, f.due, f.p, o);
  }
}

int sched_done(struct master *m, struct wproc *p, json_t *msg) {
  json_int_t id = json_integer_value(json_object_get(msg, "id"));
  json_t *okv = json_object_get(msg, "ok");
  json_t *status = json_object_get(msg, "status");
  json_t *error = json_object_get(msg, "error");
  json_t *result = json_object_get(msg, "result");
  if (!json_is_boolean(okv) || (status && !json_is_integer(status)) ||
      (error && !json_is_string(error)))
    return -EBADMSG;
  /* A worker of an older aio says only ok. */
  struct outcome o = {.ok = json_is_true(okv),
                      .status = status              ? json_integer_value(status)
                                : json_is_true(okv) ? 0
                                                    : 1,
                      .error = error ? json_string_value(error) : "failed",
                      .result = result};
  for (size_t s = 0; s < m->nscheds; s++) {
    struct sched *sc = &m->scheds[s];
    for (size_t i = 0; i < sc->ninflight; i++)
      if (sc->inflight[i].id == id && sc->inflight[i].p == p) {
        finish(sc, i, &o);
        return 0;
      }
  }
  /* A run of a schedule removed by a reload, or a lie. */
  log_debug("worker %d reported an unknown job %lld", p->slot, (long long)id);
  return 0;
}

void sched_worker_gone(struct master *m, struct wproc *p) {
  for (size_t s = 0; s < m->nscheds; s++) {
    struct sched *sc = &m->scheds[s];
    for (size_t i = 0; i < sc->ninflight;) {
      if (sc->inflight[i].p != p) {
        i++;
        continue;
      }
      char why[64];
      snprintf(why, sizeof(why), "its worker %d died during it", p->slot);
      log_fields(AIO_LOG_WARN, SCHED_FIELDS(sc, sc->inflight[i].run),
                 "[schedule:%s] run %lld: worker %d died during it",
                 sc->conf->name, sc->inflight[i].run, p->slot);
      sc->inflight[i].p = NULL; /* err goes to another worker */
      finish(sc, i, &(struct outcome){.ok = 0, .status = -EPIPE, .error = why});
    }
  }
}

static void on_retired_closed(uv_handle_t *h) {
  struct sched *sc = h->data;
  struct sched_grave *gr = sc->grave;
  if (--gr->left == 0) {
    free(gr->arr);
    free(gr);
  }
}

void sched_restart(struct master *m) {
  struct sched *old = m->scheds;
  size_t nold = m->nscheds;
  struct sched_counts *kept = nold ? calloc(nold, sizeof(*kept)) : NULL;
  for (size_t i = 0; kept && i < nold; i++)
    kept[i] = old[i].n;
  if (m->nscheds > 0) {
    struct sched_grave *gr = malloc(sizeof(*gr));
    if (gr == NULL) {
      /* Out of memory: stop them; their memory stays until exit. */
      sched_stop(m);
    } else {
      gr->arr = m->scheds;
      gr->left = m->nscheds;
      for (size_t i = 0; i < m->nscheds; i++) {
        m->scheds[i].grave = gr;
        uv_close((uv_handle_t *)&m->scheds[i].timer, on_retired_closed);
      }
    }
  }
  m->scheds = NULL;
  m->nscheds = 0;
  if (sched_start(m))
    log_error("cannot start the schedules: out of memory");
  /* A schedule that kept its name keeps its counts: they never go back.
   * old is alive until its timers' close callbacks have run. */
  for (size_t i = 0; kept && i < m->nscheds; i++)
    for (size_t j = 0; j < nold; j++)
      if (m->scheds[i].name_hash == old[j].name_hash)
        m->scheds[i].n = kept[j];
  free(kept);
}

json_t *sched_status(const struct master *m) {
  json_t *o = json_object();
  for (size_t i = 0; i < m->nscheds; i++) {
    const struct sched *sc = &m->scheds[i];
    long long last = sc->cluster ? sc->last_occ : sc->k - 1;
    json_object_set_new(o, sc->conf->name,
                        json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "last_run",
                                  (json_int_t)last, "ok", (json_int_t)sc->n.ok,
                                  "failed", (json_int_t)sc->n.failed, "skipped",
                                  (json_int_t)sc->n.skipped, "late",
                                  (json_int_t)sc->n.late, "in_flight",
                                  (json_int_t)sc->ninflight));
  }
  return o;
}

const char *sched_counts(const struct master *m, size_t i,
                         struct sched_counts *out) {
  if (i >= m->nscheds)
    return NULL;
  *out = m->scheds[i].n;
  return m->scheds[i].conf->name;
}
