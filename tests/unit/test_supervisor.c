/*
 * test_supervisor.c - router.c, reload.c and sched.c without a process:
 * each worker is a record whose channel writes to a buffer (channel.h,
 * sink), frames from it are fed to that channel, exits are the calls
 * master.c makes when it reaps one, and master.c's verbs are replaced by
 * fakes that log each call and do the least of what the real ones do.
 * Linked against aiocore: master.o is not pulled in (its verbs are
 * defined here), so any call into master.c not faked here fails the link.
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check_main.h"
#include "cli.h"
#include "generation.h"
#include "master.h"

#define NPROC 3

static uv_loop_t loop;
static struct master m;
static char dir[64];
/* The verbs called, one per line. */
static char calls[4096];
/* What each fake worker was sent, and whether its channel failed. */
static struct sink {
  char buf[65536];
  size_t len;
  int error;
} sinks[2 * NPROC];
static struct wproc *procs[2 * NPROC];
/* Generations made besides m.gen, freed at the end. */
static struct generation *extra[4];
static size_t nextra;

static void called(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void called(const char *fmt, ...) {
  size_t n = strlen(calls);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(calls + n, sizeof(calls) - n, fmt, ap);
  va_end(ap);
  n = strlen(calls);
  if (n + 1 < sizeof(calls))
    strcat(calls, "\n");
}

/* ---- master.c's verbs, faked --------------------------------------------
 */

struct slot *master_slot_get(struct master *mm, size_t index) {
  ck_assert_uint_lt(index, mm->slots_cap);
  return &mm->slots[index];
}

int master_slot_spawn_next(struct master *mm, struct generation *g, size_t k) {
  (void)mm;
  called("spawn_next %zu gen %u", k, g->id);
  return 0;
}

/* recycle.c's (reload.c calls recycle_cancel): none recycles here. */
void master_slot_promote(struct master *mm, size_t k, enum restart_reason why) {
  (void)mm;
  called("promote %zu %d", k, (int)why);
}

void master_slot_discard_next(struct master *mm, size_t k) {
  called("discard_next %zu", k);
  mm->slots[k].next = NULL;
}

void master_waited(struct master *mm) {
  (void)mm;
  called("waited");
}

void master_gen_begin(struct master *mm, struct generation *g,
                      uint64_t deadline_ms) {
  called("gen_begin %u", g->id);
  mm->next_gen = g;
  mm->phase = MASTER_RELOADING;
  mm->reload_deadline_ms = deadline_ms;
}

void master_gen_commit(struct master *mm) {
  called("gen_commit %u", mm->next_gen->id);
  mm->next_gen = NULL;
  mm->phase = MASTER_SERVING;
}

void master_gen_abort(struct master *mm, int code, const char *why,
                      json_t *errors) {
  (void)errors;
  called("gen_abort %d %s", code, why);
  if (mm->next_gen) {
    for (size_t i = 0; i < mm->slots_cap; i++)
      if (mm->slots[i].next) {
        called("discard_next %zu", i);
        mm->slots[i].next = NULL;
      }
    mm->next_gen = NULL;
    if (mm->phase == MASTER_RELOADING)
      mm->phase = MASTER_SERVING;
  }
}

int master_proc_ready(struct master *mm, struct wproc *p) {
  called("ready %d", p->slot);
  if (p->state != WPROC_STARTING)
    return -EPROTO;
  router_worker_ready(mm, p);
  p->state = WPROC_READY;
  if (p->g == mm->next_gen)
    reload_worker_ready(mm, p);
  return 0;
}

void master_proc_alive(struct master *mm, struct wproc *p, long conns) {
  (void)mm;
  called("alive %d %ld", p->slot, conns);
  p->conns = conns;
}

int master_job_done(struct master *mm, struct wproc *p, json_t *msg) {
  called("job_done %d", p->slot);
  return sched_done(mm, p, msg);
}

/* ---- fake workers ------------------------------------------------------ */

static int to_sink(void *arg, const char *data, size_t len) {
  struct wproc *p = arg;
  struct sink *s = NULL;
  for (size_t i = 0; i < 2 * NPROC; i++)
    if (procs[i] == p)
      s = &sinks[i];
  ck_assert_ptr_nonnull(s);
  ck_assert_uint_le(s->len + len, sizeof(s->buf));
  memcpy(s->buf + s->len, data, len);
  s->len += len;
  return 0;
}

static int on_frame(void *arg, const char *frame, size_t len) {
  return router_line(arg, frame, len);
}

static void on_error(void *arg, int err) {
  struct wproc *p = arg;
  called("kill %d (bad frame %d)", p->slot, err);
}

static const struct channel_ops ops = {.frame = on_frame, .error = on_error};

/* Worker i (i >= NPROC: a successor) of g for slot i % NPROC. */
static struct wproc *proc_new(size_t i, struct generation *g,
                              enum wproc_state st) {
  struct wproc *p = calloc(1, sizeof(*p));
  ck_assert_ptr_nonnull(p);
  p->m = &m;
  p->g = g;
  p->pid = 100000 + (pid_t)i;
  p->slot = (int)(i % NPROC);
  p->state = st;
  p->mark = bus_mark_new();
  ck_assert_ptr_nonnull(p->mark);
  procs[i] = p;
  channel_open_sink(&p->ch, to_sink, &ops, p);
  p->next = m.procs;
  m.procs = p;
  return p;
}

static void proc_free(struct wproc *p) {
  for (struct wproc **pp = &m.procs; *pp; pp = &(*pp)->next)
    if (*pp == p) {
      *pp = p->next;
      break;
    }
  channel_close(&p->ch);
  bus_mark_free(p->mark);
  router_proc_close(p);
  for (size_t i = 0; i < 2 * NPROC; i++)
    if (procs[i] == p)
      procs[i] = NULL;
  free(p);
}

/* What master.c does when it reaps p, for these files. */
static void proc_exited(struct wproc *p, const char *how) {
  p->state = WPROC_DEAD;
  struct slot *s = &m.slots[p->slot];
  if (s->next == p)
    s->next = NULL;
  if (s->cur == p)
    s->cur = NULL;
  reload_worker_exited(&m, p, how);
  router_worker_gone(&m, p);
  sched_worker_gone(&m, p);
  proc_free(p);
}

/* Feed frame (no newline) from worker i; what the channel returned. */
static int feed(size_t i, const char *frame) {
  char line[1024];
  snprintf(line, sizeof(line), "%s\n", frame);
  return channel_feed(&procs[i]->ch, line, strlen(line));
}

/* Write every worker's queue, as master.c does before the loop sleeps. */
static void flush(void) {
  for (struct wproc *p = m.procs; p; p = p->next)
    channel_flush(&p->ch);
}

/* The frames worker i was sent of type t, decoded (new array). */
static json_t *sent(size_t i, const char *t) {
  flush();
  json_t *out = json_array();
  struct sink *s = &sinks[i];
  size_t at = 0;
  while (at < s->len) {
    const char *nl = memchr(s->buf + at, '\n', s->len - at);
    ck_assert_ptr_nonnull(nl);
    json_error_t e;
    json_t *f = json_loadb(s->buf + at, (size_t)(nl - s->buf - at), 0, &e);
    ck_assert_msg(f != NULL, "bad frame: %s", e.text);
    if (strcmp(json_string_value(json_object_get(f, "t")), t) == 0)
      json_array_append(out, f);
    json_decref(f);
    at = (size_t)(nl - s->buf) + 1;
  }
  return out;
}

static void forget_sent(void) {
  flush();
  for (size_t i = 0; i < 2 * NPROC; i++)
    sinks[i].len = 0;
}

static struct generation *gen_of(const char *text, unsigned id) {
  char path[128];
  snprintf(path, sizeof(path), "%s/aio-%u.conf", dir, id);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs(text, f);
  fclose(f);
  struct diag d;
  struct app app;
  diag_init(&d);
  int rc = app_load_plain(&app, path, &d);
  ck_assert_msg(rc == 0, "config: %s", d.n ? d.msgs[0] : "?");
  diag_close(&d);
  struct generation *g = generation_new(&app, id);
  ck_assert_ptr_nonnull(g);
  g->refs = 1;
  if (id != 1) {
    ck_assert_uint_lt(nextra, 4);
    extra[nextra++] = g;
  }
  return g;
}

static const char conf[] = "[aio]\n"
                           "workers = 3\n"
                           "[listen:x]\n"
                           "once = m.once\n"
                           "bcast = m.bcast broadcast\n"
                           "other = m.bcast broadcast\n"
                           "[schedule:job]\n"
                           "every = 0.01\n"
                           "overlap = yes\n"
                           "func = m.job\n";

static void setup(void) {
  snprintf(dir, sizeof(dir), "/tmp/aio-sup-test-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  memset(&m, 0, sizeof(m));
  memset(sinks, 0, sizeof(sinks));
  memset(procs, 0, sizeof(procs));
  calls[0] = '\0';
  m.loop = &loop;
  m.next_id = 1;
  m.phase = MASTER_SERVING;
  m.config_path = "aio.conf";
  m.gen = gen_of(conf, 1);
  m.nslots = NPROC;
  m.slots_cap = NPROC;
  m.slots = calloc(NPROC, sizeof(*m.slots));
  for (size_t i = 0; i < NPROC; i++) {
    m.slots[i].index = (int)i;
    m.slots[i].state = SLOT_RUNNING;
    m.slots[i].cur = proc_new(i, m.gen, WPROC_READY);
  }
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

static void teardown(void) {
  /* The workers left exit as at the end of the master: what they held
   * goes where router.c and sched.c put it, and is freed with it. */
  m.phase = MASTER_QUITTING;
  sched_stop(&m);
  while (m.procs)
    proc_exited(m.procs, "killed by signal 9 (Killed)");
  /* The schedules' timers, as master_run ends. */
  uv_walk(&loop, close_walk, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  free(m.scheds);
  ck_assert_int_eq(uv_loop_close(&loop), 0);
  while (nextra > 0)
    generation_free(extra[--nextra], NULL);
  generation_free(m.gen, NULL);
  router_close(&m);
  free(m.slots);
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
}

/* ---- router.c ------------------------------------------------------------
 */

/* The listener indices of the one deliver frame of worker i for signal. */
static json_int_t delivered_to(size_t i, const char *signal) {
  json_t *d = sent(i, "deliver");
  json_int_t id = 0;
  size_t k;
  json_t *f;
  json_array_foreach(d, k, f) {
    if (strcmp(json_string_value(json_object_get(f, "signal")), signal))
      continue;
    ck_assert_int_eq(id, 0); /* once */
    id = json_integer_value(json_object_get(f, "id"));
  }
  json_decref(d);
  return id;
}

START_TEST(test_master_signal_once_goes_to_one_worker) {
  json_t *data = json_pack("{s:i}", "n", 1);
  router_emit(&m, "once", data);
  json_decref(data);
  /* The lowest slot that is ready, and only it. */
  json_int_t id = delivered_to(0, "once");
  ck_assert_int_gt(id, 0);
  ck_assert_int_eq(delivered_to(1, "once"), 0);
  ck_assert_int_eq(delivered_to(2, "once"), 0);
  ck_assert_uint_eq(procs[0]->route.npending, 1);
  /* Its ack (the first delivery sent to it is finished) forgets it;
   * acknowledging it again, or one never sent, is a lie that costs the
   * worker its channel. */
  const char *ack = "{\"t\":\"delivered\",\"n\":1}";
  ck_assert_int_eq(feed(0, ack), 0);
  ck_assert_uint_eq(procs[0]->route.npending, 0);
  ck_assert_int_eq(feed(0, ack), -EBADMSG);
  ck_assert_ptr_nonnull(strstr(calls, "kill 0 (bad frame"));
  ck_assert_int_eq(channel_is_open(&procs[0]->ch), 0);
}
END_TEST

START_TEST(test_broadcast_goes_to_every_worker_and_acks_are_per_worker) {
  router_emit(&m, "bcast", NULL);
  json_int_t id[NPROC];
  for (size_t i = 0; i < NPROC; i++) {
    id[i] = delivered_to(i, "bcast");
    ck_assert_int_gt(id[i], 0);
    ck_assert_uint_eq(procs[i]->route.npending, 1);
  }
  ck_assert_int_eq(feed(1, "{\"t\":\"delivered\",\"n\":2}"), -EBADMSG);
  ck_assert_int_eq(channel_is_open(&procs[1]->ch), 0);
  ck_assert_int_eq(feed(2, "{\"t\":\"delivered\",\"n\":1}"), 0);
  ck_assert_uint_eq(procs[2]->route.npending, 0);
  ck_assert_uint_eq(procs[1]->route.npending, 1);
  ck_assert_uint_eq(procs[0]->route.npending, 1);
  /* A signal nobody listens to is sent nowhere. */
  forget_sent();
  router_emit(&m, "nobody", NULL);
  for (size_t i = 0; i < NPROC; i++)
    ck_assert_int_eq(delivered_to(i, "nobody"), 0);
}
END_TEST

START_TEST(test_worker_emit_runs_once_part_itself_broadcast_through_us) {
  /* Once-per-emit: the emitter runs it; kept in its journal until it
   * says so, and sent to nobody. */
  ck_assert_int_eq(
      feed(1, "{\"t\":\"emit\",\"signal\":\"once\",\"seq\":1,\"data\":{}}"), 0);
  ck_assert_uint_eq(procs[1]->route.journal.n, 1);
  for (size_t i = 0; i < NPROC; i++)
    ck_assert_int_eq(delivered_to(i, "once"), 0);
  ck_assert_int_eq(feed(1, "{\"t\":\"delivered\",\"seq\":1}"), 0);
  ck_assert_uint_eq(procs[1]->route.journal.n, 0);
  /* Broadcast: every worker, the emitter too. */
  ck_assert_int_eq(
      feed(1, "{\"t\":\"emit\",\"signal\":\"bcast\",\"seq\":2,\"data\":[1]}"),
      0);
  for (size_t i = 0; i < NPROC; i++)
    ck_assert_int_gt(delivered_to(i, "bcast"), 0);
  /* A seq that does not grow is nonsense. */
  ck_assert_int_eq(
      feed(1, "{\"t\":\"emit\",\"signal\":\"bcast\",\"seq\":2,\"data\":[1]}"),
      -EBADMSG);
}
END_TEST

START_TEST(test_unacked_once_delivery_goes_to_another_worker_on_exit) {
  router_emit(&m, "once", NULL);
  ck_assert_int_gt(delivered_to(0, "once"), 0);
  forget_sent();
  proc_exited(procs[0], "killed by signal 9 (Killed)");
  /* The next ready worker, lowest slot first. */
  ck_assert_int_gt(delivered_to(1, "once"), 0);
  ck_assert_int_eq(delivered_to(2, "once"), 0);
  /* A broadcast for the dead slot waits in its backlog for its next
   * worker. */
  router_emit(&m, "bcast", NULL);
  ck_assert_uint_eq(router_backlog(&m), 1);
  struct wproc *p = proc_new(0, m.gen, WPROC_STARTING);
  m.slots[0].cur = p;
  ck_assert_int_eq(feed(0, "{\"t\":\"ready\"}"), 0);
  ck_assert_ptr_nonnull(strstr(calls, "ready 0"));
  ck_assert_int_gt(delivered_to(0, "bcast"), 0);
  ck_assert_uint_eq(router_backlog(&m), 0);
  ck_assert_int_eq(feed(0, "{\"t\":\"heartbeat\",\"conns\":7}"), 0);
  ck_assert_ptr_nonnull(strstr(calls, "alive 0 7"));
}
END_TEST

/* Worker i's kept broadcast emits, seq from..to of signal, in one read. */
static void kept_emits(size_t i, const char *signal, int from, int to) {
  char buf[4096];
  size_t n = 0;
  for (int seq = from; seq <= to; seq++)
    n += (size_t)snprintf(buf + n, sizeof(buf) - n,
                          "{\"t\":\"emit\",\"signal\":\"%s\",\"data\":%d,"
                          "\"seq\":%d,\"keep\":true}\n",
                          signal, seq * 10, seq);
  ck_assert_uint_lt(n, sizeof(buf));
  ck_assert_int_eq(channel_feed(&procs[i]->ch, buf, n), 0);
}

/* The ref deliver frames worker i was sent: "seq/count" each, in order. */
static void refs_sent(size_t i, char *out, size_t cap) {
  json_t *d = sent(i, "deliver");
  size_t k, n = 0;
  json_t *f;
  out[0] = '\0';
  json_array_foreach(d, k, f) {
    json_t *seq = json_object_get(f, "seq"), *c = json_object_get(f, "count");
    ck_assert_ptr_nonnull(seq);
    n += (size_t)snprintf(out + n, cap - n, "%s%lld/%lld", n ? " " : "",
                          (long long)json_integer_value(seq),
                          c ? (long long)json_integer_value(c) : 1LL);
  }
  json_decref(d);
}

/* A worker's own kept emits come back to it in runs: one frame for the
 * emits of one signal with consecutive seqs while that frame is not
 * written yet, each still a delivery of its own (its place among those
 * sent, its acknowledgement, and what its death hands on). */
START_TEST(test_kept_emits_come_back_in_runs_one_delivery_each) {
  char got[256];
  kept_emits(1, "bcast", 1, 3);
  refs_sent(1, got, sizeof(got)); /* flushes */
  ck_assert_str_eq(got, "1/3");
  ck_assert_uint_eq(procs[1]->route.npending, 3);
  ck_assert_uint_eq(procs[1]->route.sent, 3);
  ck_assert_uint_eq(procs[1]->route.frames, 1);
  /* The others get the data, a frame each. */
  json_t *full = sent(0, "deliver");
  ck_assert_uint_eq(json_array_size(full), 3);
  json_decref(full);
  /* Written: the next emits start a new run. A gap in the seqs (an emit
   * kept in the ring), another signal, or another frame for the worker
   * between them each starts one too. */
  forget_sent();
  kept_emits(1, "bcast", 4, 5);
  kept_emits(1, "bcast", 7, 8);
  kept_emits(1, "other", 9, 10);
  kept_emits(1, "bcast", 11, 11);
  static const char reopen[] = "{\"t\":\"reopen\"}\n";
  ck_assert_int_eq(channel_send_raw(&procs[1]->ch, reopen, sizeof(reopen) - 1),
                   0);
  kept_emits(1, "bcast", 12, 13);
  refs_sent(1, got, sizeof(got));
  ck_assert_str_eq(got, "4/2 7/2 9/2 11/1 12/2");
  ck_assert_uint_eq(procs[1]->route.sent, 12);
  ck_assert_uint_eq(procs[1]->route.frames, 6);
  /* Acknowledged one by one, as the worker runs them. */
  ck_assert_int_eq(feed(1, "{\"t\":\"delivered\",\"n\":2}"), 0);
  ck_assert_uint_eq(procs[1]->route.npending, 10);
  /* It dies with the 4th in hand: the 3rd finished, the 4th dropped, the
   * rest for its successor, each as the deliver frame with its data. */
  procs[1]->mark->done = 3;
  procs[1]->mark->in_hand = 4;
  proc_exited(procs[1], "killed by signal 9 (Killed)");
  ck_assert_uint_eq(router_backlog(&m), 8);
  forget_sent();
  struct wproc *p = proc_new(1, m.gen, WPROC_STARTING);
  m.slots[1].cur = p;
  ck_assert_int_eq(feed(1, "{\"t\":\"ready\"}"), 0);
  json_t *d = sent(1, "deliver");
  ck_assert_uint_eq(json_array_size(d), 8);
  static const int want[] = {50, 70, 80, 90, 100, 110, 120, 130};
  for (size_t k = 0; k < 8; k++) {
    json_t *f = json_array_get(d, k);
    ck_assert_ptr_null(json_object_get(f, "seq"));
    ck_assert_int_eq(json_integer_value(json_object_get(f, "data")), want[k]);
  }
  json_decref(d);
}
END_TEST

/* ---- reload.c ------------------------------------------------------------
 */

/* A reload in flight: generation 2, a successor starting in every slot. */
static void reload_in_flight(void) {
  struct generation *g = gen_of(conf, 2);
  master_gen_begin(&m, g, uv_now(&loop) + 1000);
  for (size_t i = 0; i < NPROC; i++)
    m.slots[i].next = proc_new(NPROC + i, g, WPROC_STARTING);
  calls[0] = '\0';
}

START_TEST(test_reload_commits_when_every_successor_is_ready) {
  reload_in_flight();
  for (size_t i = 0; i < NPROC; i++) {
    ck_assert_msg(strstr(calls, "gen_commit") == NULL, "committed early: %s",
                  calls);
    ck_assert_int_eq(feed(NPROC + i, "{\"t\":\"ready\"}"), 0);
  }
  ck_assert_str_eq(calls, "ready 0\nready 1\nready 2\ngen_commit 2\n");
  ck_assert_int_eq(m.phase, MASTER_SERVING);
  /* A second reload asked for now runs later, from the tick. */
  m.phase = MASTER_RELOADING;
  char *why = NULL;
  ck_assert_int_eq(reload_start(&m, &why), 1);
  ck_assert(m.reload_queued);
  free(why);
}
END_TEST

START_TEST(test_reload_aborts_when_a_successor_dies) {
  reload_in_flight();
  ck_assert_int_eq(feed(NPROC, "{\"t\":\"ready\"}"), 0);
  proc_exited(procs[NPROC + 1], "exited with status 1");
  ck_assert_str_eq(calls, "ready 0\ngen_abort 70 new worker 1 (pid 100004) "
                          "exited with status 1 before it was ready\n"
                          "discard_next 0\ndiscard_next 2\n");
  ck_assert_ptr_null(m.next_gen);
  /* The old workers are untouched. */
  for (size_t i = 0; i < NPROC; i++)
    ck_assert_ptr_eq(m.slots[i].cur, procs[i]);
}
END_TEST

START_TEST(test_reload_aborts_at_its_deadline_and_on_cancel) {
  reload_in_flight();
  struct generation *g = m.next_gen;
  reload_tick(&m, m.reload_deadline_ms - 1);
  ck_assert_str_eq(calls, "");
  reload_tick(&m, m.reload_deadline_ms);
  ck_assert_ptr_nonnull(
      strstr(calls, "gen_abort 70 the new workers were not ready in time\n"));
  ck_assert_ptr_null(m.next_gen);
  calls[0] = '\0';
  m.reload_queued = 1;
  reload_cancel(&m, "the master is shutting down");
  ck_assert_int_eq(m.reload_queued, 0);
  ck_assert_str_eq(calls, ""); /* nothing in flight: nothing to abort */
  m.next_gen = g;
  reload_cancel(&m, "the master is shutting down");
  ck_assert_ptr_nonnull(
      strstr(calls, "gen_abort 75 the master is shutting down\n"));
}
END_TEST

/* ---- sched.c -------------------------------------------------------------
 */

/* Runs the loop until some worker has been sent n run frames in all;
 * their ids in order, and who got each in who[]. */
static void wait_runs(size_t n, json_int_t *ids, size_t *who) {
  uint64_t deadline = uv_hrtime() + 5000000000ull;
  for (;;) {
    size_t got = 0;
    for (size_t i = 0; i < NPROC; i++) {
      json_t *r = sent(i, "run");
      size_t k;
      json_t *f;
      json_array_foreach(r, k, f) {
        json_int_t id = json_integer_value(json_object_get(f, "id"));
        /* ids grow with each dispatch: their rank is the order. The n
         * first are kept, sorted, in ids[0..n-1] (more may have been sent
         * by the time the loop is looked at). */
        size_t at = got < n ? got : n;
        while (at > 0 && ids[at - 1] > id) {
          if (at < n) {
            ids[at] = ids[at - 1];
            who[at] = who[at - 1];
          }
          at--;
        }
        if (at < n) {
          ids[at] = id;
          who[at] = i;
        }
        got++;
      }
      json_decref(r);
    }
    if (got >= n)
      return;
    ck_assert_msg(uv_hrtime() < deadline, "%zu of %zu runs in 5 s", got, n);
    uv_run(&loop, UV_RUN_ONCE);
  }
}

START_TEST(test_sched_dispatches_to_the_least_busy_worker) {
  ck_assert_int_eq(sched_start(&m), 0);
  json_int_t ids[NPROC + 1];
  size_t who[NPROC + 1];
  /* Three runs in flight, none done: one on each worker. */
  wait_runs(NPROC, ids, who);
  ck_assert_uint_ne(who[0], who[1]);
  ck_assert_uint_ne(who[1], who[2]);
  ck_assert_uint_ne(who[0], who[2]);
  /* One worker reports done: it is the least busy, so the next run is
   * its. (A loop iteration fires the timer once: no fourth run was
   * dispatched before this.) */
  size_t idle = who[1];
  forget_sent();
  char done[96];
  snprintf(done, sizeof(done), "{\"t\":\"done\",\"id\":%lld,\"ok\":true}",
           (long long)ids[1]);
  ck_assert_int_eq(feed(idle, done), 0);
  char want[32];
  snprintf(want, sizeof(want), "job_done %zu", idle);
  ck_assert_ptr_nonnull(strstr(calls, want));
  struct sched_counts c;
  ck_assert_str_eq(sched_counts(&m, 0, &c), "job");
  ck_assert_uint_eq(c.ok, 1);
  wait_runs(1, ids, who);
  ck_assert_uint_eq(who[0], idle);
}
END_TEST

/* A master held up past several due times (here: the loop not run for
 * 55 ms of a 10 ms schedule) runs the last of them once, skips the others
 * as late, and says so in its status: the numbers that tell a starved
 * master from a grid that drifts. */
START_TEST(test_sched_held_up_master_skips_late_due_times_and_counts_them) {
  ck_assert_int_eq(sched_start(&m), 0);
  uint64_t until = uv_hrtime() + 55000000ull;
  while (uv_hrtime() < until)
    usleep(1000);
  json_int_t ids[1];
  size_t who[1];
  wait_runs(1, ids, who);
  json_t *st = sched_status(&m);
  json_t *job = json_object_get(st, "job");
  ck_assert_ptr_nonnull(job);
  json_int_t last = json_integer_value(json_object_get(job, "last_run"));
  json_int_t late = json_integer_value(json_object_get(job, "late"));
  /* Runs 1 to 4 at least (due at 10..40 ms) were late, skipped at once,
   * and the next ran; none overlaps (overlap = yes), so every due time
   * since is a run in flight or late too. */
  ck_assert_int_ge(late, 4);
  ck_assert_int_eq(json_integer_value(json_object_get(job, "skipped")), late);
  ck_assert_int_eq(json_integer_value(json_object_get(job, "ok")), 0);
  /* The first run sent (the earliest on the worker that got it). */
  json_t *r = sent(who[0], "run");
  json_int_t first =
      json_integer_value(json_object_get(json_array_get(r, 0), "run"));
  json_decref(r);
  json_int_t ran = json_integer_value(json_object_get(job, "in_flight"));
  ck_assert_int_ge(first, 5);
  ck_assert_int_le(first - 1, late);
  ck_assert_int_ge(ran, 1);
  ck_assert_int_eq(last, late + ran);
  struct sched_counts c;
  ck_assert_str_eq(sched_counts(&m, 0, &c), "job");
  ck_assert_uint_eq(c.late, (uint64_t)late);
  ck_assert_uint_eq(c.skipped, (uint64_t)late);
  json_decref(st);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("supervisor");
  TCase *tc = tcase_create("core");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, test_master_signal_once_goes_to_one_worker);
  tcase_add_test(tc,
                 test_broadcast_goes_to_every_worker_and_acks_are_per_worker);
  tcase_add_test(tc,
                 test_worker_emit_runs_once_part_itself_broadcast_through_us);
  tcase_add_test(tc, test_unacked_once_delivery_goes_to_another_worker_on_exit);
  tcase_add_test(tc, test_kept_emits_come_back_in_runs_one_delivery_each);
  tcase_add_test(tc, test_reload_commits_when_every_successor_is_ready);
  tcase_add_test(tc, test_reload_aborts_when_a_successor_dies);
  tcase_add_test(tc, test_reload_aborts_at_its_deadline_and_on_cancel);
  tcase_add_test(tc, test_sched_dispatches_to_the_least_busy_worker);
  tcase_add_test(
      tc, test_sched_held_up_master_skips_late_due_times_and_counts_them);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
