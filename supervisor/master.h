/*
 * master.h - the master's state: worker slots and their processes, the
 * listening sockets, and the coordination services. The master runs no user
 * code; everything it knows about a worker arrives as bus frames.
 */
#ifndef AIO_SUPERVISOR_MASTER_H
#define AIO_SUPERVISOR_MASTER_H

#include <jansson.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "app.h"
#include "bus.h"
#include "bus_index.h"
#include "channel.h"

/* X(enum, name): a worker process's lifecycle, in order. */
#define WPROC_STATES(X)                                                        \
  X(STARTING, "starting") /* forked, not yet ready */                          \
  X(READY, "ready")       /* serving */                                        \
  X(DRAINING, "draining") /* told to stop; finishing connections */            \
  X(DEAD, "dead")         /* reaped */

enum wproc_state {
#define WPROC_ENUM(e, s) WPROC_##e,
  WPROC_STATES(WPROC_ENUM)
#undef WPROC_ENUM
};

/* X(enum, name): a slot's lifecycle. */
#define SLOT_STATES(X)                                                         \
  X(IDLE, "idle")       /* no worker wanted (retired) */                       \
  X(RUNNING, "running") /* a worker is starting or serving */                  \
  X(BACKOFF, "backoff") /* crashed or could not start; retry at the timer */   \
  X(FAILED, "failed")   /* crash loop: not respawned */

enum slot_state {
#define SLOT_ENUM(e, s) SLOT_##e,
  SLOT_STATES(SLOT_ENUM)
#undef SLOT_ENUM
};

/* X(enum, name): the master's phase, in order. master.c makes every
 * transition (RELOADING's in master_gen_begin, at reload.c's request). */
#define MASTER_PHASES(X)                                                       \
  X(STARTING, "starting")   /* the first generation is not ready yet */        \
  X(SERVING, "serving")     /* READY=1 sent */                                 \
  X(RELOADING, "reloading") /* serving, and a new generation starts */         \
  X(STOPPING, "stopping")   /* graceful shutdown: draining */                  \
  X(QUITTING, "quitting")   /* immediate shutdown */

enum master_phase {
#define MASTER_ENUM(e, s) MASTER_##e,
  MASTER_PHASES(MASTER_ENUM)
#undef MASTER_ENUM
};

/* X(enum, name): why a slot's worker was replaced (metrics.c counts). */
#define RESTART_REASONS(X)                                                     \
  X(CRASH, "crash")                 /* exited unexpectedly */                  \
  X(HEARTBEAT, "heartbeat")         /* killed: silent past [aio] timeout */    \
  X(START_FAILURE, "start_failure") /* could not be started */                 \
  X(RELOAD, "reload")               /* replaced by a new generation */         \
  X(RECYCLE, "recycle") /* max_requests, max_lifetime, max_memory (recycle.c)  \
                         */

enum restart_reason {
#define RESTART_ENUM(e, s) RESTART_##e,
  RESTART_REASONS(RESTART_ENUM)
#undef RESTART_ENUM
      RESTART_NREASONS
};

struct master;
struct generation;
struct ctr_server;

/* X(enum, name): what made the master recycle a worker (recycle.c). */
#define RECYCLE_TRIGGERS(X)                                                    \
  X(REQUESTS, "requests") /* [aio] max_requests (+ jitter) */                  \
  X(LIFETIME, "lifetime") /* [aio] max_lifetime (+ jitter) */                  \
  X(MEMORY, "memory")     /* [aio] max_memory */

enum recycle_trigger {
#define RECYCLE_ENUM(e, s) RECYCLE_##e,
  RECYCLE_TRIGGERS(RECYCLE_ENUM)
#undef RECYCLE_ENUM
      RECYCLE_NTRIGGERS
};
struct csig_entry;

struct delivery {
  json_int_t id;
  uint64_t n; /* its place among deliver frames sent to the worker; 0: unsent */
  char *frame; /* the deliver frame as sent, newline included; for ref,
                  the emit frame it came from, without its newline */
  size_t len;
  int ref;      /* sent to its emitter naming the emit's seq, not its data */
  unsigned gen; /* the generation whose listener list it indexes */
  int broadcast;
  int kind;                /* of its listeners: enum bus_kind */
  struct csig_entry *cref; /* a cluster entry to acknowledge, or NULL */
  struct delivery *next;
  char inl[]; /* the frame, kept with it (frame points here unless router.c
                 made it again, in its own allocation) */
};

/* A worker's own emits whose once-per-emit listeners it runs itself: the
 * emit frames, back to back, kept until it says they finished (or, if it
 * dies first, redelivered from here). Records are struct jrec headers
 * followed by the frame, 8-byte aligned. */
struct journal {
  char *buf;
  size_t head, len, cap; /* records live in buf[head, len) */
  size_t n;              /* how many */
};

/* The most a worker's queues in the master held at once, as seen at the
 * end of each loop turn (queues.c). */
struct queue_high {
  size_t deliveries, deliveries_bytes, journal, journal_bytes;
};

/* The ref delivers to a worker of its own kept emits being made into one
 * frame, while it is the last in its channel's buffer (router.c,
 * run_join): the run's first id and seq, how many, of which signal and
 * kind. count 0: none. */
struct ref_run {
  struct channel_last at;
  json_int_t id, seq;
  size_t count;
  const struct bus_index_sig *e;
  int kind;
};

/* The bus's bookkeeping for one worker process: its deliveries in flight,
 * its journal, its back-pressure. Only router*.c write it (and free what
 * it holds); others read it for status and metrics. */
struct route_proc {
  struct delivery *pending;      /* sent, not yet acknowledged, oldest first */
  struct delivery *pending_last; /* its tail, NULL when empty */
  size_t npending;               /* how many */
  size_t pending_bytes;          /* and their frames' bytes */
  int full;                      /* at its bound: broadcast emits refused */
  uint64_t over_bytes;           /* its broadcast emits since they were */
  uint64_t dropped;              /* signals it sent that could not be kept */
  uint64_t sent;                 /* deliveries sent to it */
  uint64_t frames;               /* the deliver frames they went in (a run of
                                    ref delivers is one) */
  struct ref_run run;            /* the run being made, if any */
  uint64_t emits;                /* the seq of its last emit frame received */
  struct journal journal;        /* its emits it runs itself, unfinished */
  /* The signal of its last emit and its entry in its generation's index
   * (which lives as long as the worker): a burst of one signal is looked
   * up once. n 0: none yet. */
  struct {
    size_t n;
    const struct bus_index_sig *e;
    char name[BUS_MAX_SIGNAL + 1];
  } last;
};

/* The bus's bookkeeping for one slot, written only by router*.c. */
struct route_slot {
  json_t *backlog;      /* broadcast deliveries for this slot's next worker,
                          [id, frame, generation] each */
  size_t backlog_bytes; /* their frames' bytes */
  int full;             /* backlog at its bound */
};

/* The bus's bookkeeping for the master, written only by router*.c. */
struct route_master {
  size_t nfull;    /* workers whose delivery queue is full */
  int trim_wanted; /* a burst grew the heap: give it back when it ends */
  json_t *backlog; /* deliveries waiting for any ready worker,
                     [id, frame, generation] */
};

struct wproc {
  struct master *m;
  struct generation *g;
  pid_t pid;
  int slot;
  enum wproc_state state;
  struct channel ch; /* its bus end: nothing else reads or writes it */
  uint64_t started_ms, ready_ms, last_hb_ms, stop_deadline_ms;
  long conns;
  unsigned restarts;       /* of its slot when it was spawned */
  struct route_proc route; /* the bus's (router.c) */
  struct queue_high high;  /* its queues' high-water marks */
  uint64_t refused[3];     /* the mark's refusals, kept as it is unmapped */
  struct bus_mark *mark;   /* shared: what it was doing when it died */
  json_int_t running_job;  /* job id in flight, or 0 */
  struct output *output;   /* its stdout and stderr (output.c) */
  int cpu;                 /* pinned to this CPU (cpu_affinity), or -1 */
  struct ctr_server *ctrs; /* shared: its counters, one block per
                              server of g (counters.h) */
  int silenced;            /* killed for its heartbeat's silence */
  /* Its own recycling limits, drawn once with their jitter (recycle.c):
   * requests to serve and the time it may serve, 0 for none. */
  int limits_drawn;
  uint64_t max_requests, max_lifetime_ms;
  struct wproc *next;
};

/* One listening socket per server per slot (unix: shared). */
struct slot {
  int index;
  enum slot_state state;
  struct wproc *cur;
  struct wproc *next;    /* the new generation's worker during a reload */
  uint64_t crash_ms[64]; /* recent crash times, ring */
  unsigned ncrash;
  unsigned restarts;
  unsigned start_failures; /* starts that failed before the fork (EMFILE,
                              EAGAIN, ENOMEM...), all told */
  unsigned failed_starts;  /* of them, in a row: their backoff */
  unsigned lonely;         /* slow retries in a row as the last slot trying,
                              once no worker serves (0: not lonely) */
  uint64_t respawn_at_ms;
  char why[160];           /* how its last worker went, or why it could not
                              start ("" when fine) */
  struct route_slot route; /* the bus's (router.c) */
  uint64_t replaced[RESTART_NREASONS]; /* its workers replaced, by why */
  /* Recycling its worker (recycle.c): next is a worker of the serving
   * generation, started for trigger-1 (0: none); after a replacement
   * that failed, not again before recycle_retry_ms. */
  int recycling;
  unsigned recycle_failures; /* replacements in a row that failed */
  uint64_t recycle_retry_ms;
};

/* A generation: one configuration and the sockets for it. A reload makes a
 * new one; the old one lives until its workers are gone. */
struct generation {
  unsigned id;
  struct app app;
  int *ports;     /* actual port per server (port 0 resolved) */
  int **fds;      /* fds[slot][server], each owned by this generation */
  int *shared;    /* per server: the one socket of a unix or activated
                     server (slots hold dups), or -1 */
  int *activated; /* per server: came from socket activation */
  size_t nslots_fds;
  int refs;
  struct bus_index sigs; /* signal -> its listeners, by kind */
};

struct sched;
struct control;
struct cluster;
struct metrics;
struct upgrade;

/* Sockets systemd passed with LISTEN_FDS (socket activation), and those
 * the image an upgrade replaced handed over (upgrade.c). */
struct activation {
  int *fds;
  char **names; /* LISTEN_FDNAMES, or NULL entries */
  int *slot;    /* the worker slot a handed socket serves; -1: all */
  int *handed;  /* 1: handed over by the replaced image, let go once the
                   first generation holds its own (dups) */
  size_t n;
};

struct master {
  uv_loop_t *loop;
  const char *config_path;
  struct generation *gen;
  struct slot *slots;
  size_t nslots; /* wanted worker count */
  size_t slots_cap;
  struct wproc *procs; /* every live process, any generation */
  uv_signal_t sig[9];
  uv_timer_t tick;
  uv_prepare_t bus_flush; /* writes every worker's queued frames */
  enum master_phase phase;
  uint64_t stop_deadline_ms;
  int ready_fd;   /* --ready-fd, -1 when none or used */
  int *daemon_fd; /* -d: tells the waiting parent 'R'eady; -1 when used */
  int unserved;   /* after the start: no worker serves (the last slot
                     left is crash-looping); what `aio status` shows */
  uint64_t unserved_since_ms;
  uint64_t start_ms;
  json_int_t next_id;
  struct route_master route; /* the bus's (router.c) */
  struct activation act;
  struct generation *next_gen; /* being started by a reload */
  uint64_t reload_deadline_ms;
  uint64_t reload_started_ms;
  /* Reloads begun so far: `aio reload` waits for reload_serial + 1. */
  unsigned reload_serial;
  /* Reloads asked for during one (or during the start): one more runs
   * when that one is over, however many; the count is for its log line. */
  unsigned reload_queued;
  unsigned reloads; /* successful reloads so far */
  unsigned reload_failures;
  uint64_t recycles[RECYCLE_NTRIGGERS]; /* workers recycled, by trigger */
  uint64_t recycle_failed;              /* replacements that failed */
  uint64_t recycle_mem_ms;              /* max_memory: when last checked */
  struct metrics *metrics;              /* [aio] metrics, or NULL */
  struct control *ctl;                  /* the control socket, or NULL */
  uv_timer_t watchdog;                  /* sd_notify WATCHDOG=1 */
  char *pidfile;                        /* written and locked by daemon.c */
  struct sched *scheds; /* one per [schedule:NAME] of the current config */
  size_t nscheds;
  size_t rr;               /* round-robin cursor for job dispatch */
  struct cluster *cluster; /* the link to the cluster's Redis, or NULL */
  struct upgrade *up;      /* upgrade.c: old workers, what was handed */
  struct csig *csig;       /* cluster signals on that link, or NULL */
  int exit_code;
};

/* Serve the configuration in app (owned by the master from here on).
 * Returns the process exit status. */
int master_run(struct app *app, const char *config_path, int ready_fd,
               int *daemon_fd);

/* spawn.c: fork a worker of generation g for slot s; *out gets its
 * record (pid, mark, counters, output; new, for master.c to register) and
 * *fd the master's end of its bus. 0 or -errno. */
int spawn_worker(struct master *m, struct generation *g, struct slot *s,
                 struct wproc **out, int *fd);
/* router.c: handle a worker's frame. */
int router_frame(struct wproc *p, enum bus_type t, json_t *msg);
/* One frame from p's channel (without its newline): 0, or the error that
 * costs p its channel (-EMSGSIZE, -EBADMSG, -EPROTO...). */
int router_line(struct wproc *p, const char *frame, size_t len);
/* A worker went away: redeliver what it had. */
void router_worker_gone(struct master *m, struct wproc *p);
/* p is being spawned (its mark is mapped, not yet forked): the
 * back-pressure already on applies to it from the start. */
void router_proc_init(const struct master *m, struct wproc *p);
/* p's record is freed: what the bus still holds for it. */
void router_proc_close(struct wproc *p);
/* The master ends: the backlogs nobody took. */
void router_close(struct master *m);
/* STOPPING or QUITTING. */
static inline int master_stopping(const struct master *m) {
  return m->phase >= MASTER_STOPPING;
}
/* ---- master.c's verbs ----------------------------------------------------
 * master.c (with master_live.c, master_gen.c and master_stop.c) is the
 * only code that changes slot and process state (and the phase). The other
 * files decide and call these; they keep no pointer into a slot across calls.
 */
/* Spawned: fork a worker of g for slot s and register it, starting; *out
 * gets it. 0 or -errno. */
int master_spawn(struct master *m, struct generation *g, struct slot *s,
                 struct wproc **out);
/* The same as slot k's successor (s->next), which serves only once
 * promoted. 0 or -errno. */
int master_slot_spawn_next(struct master *m, struct generation *g, size_t k);
/* Slot k's successor becomes its worker (none: the slot is left without
 * one); the worker it replaces drains, counted in replaced[why]. */
void master_slot_promote(struct master *m, size_t k, enum restart_reason why);
/* Slot k's successor is not wanted: killed, its exit expected. */
void master_slot_discard_next(struct master *m, size_t k);
/* Ready: p's ready frame. 0, or -EPROTO when p was not starting. */
int master_proc_ready(struct master *m, struct wproc *p);
/* Alive: p's heartbeat or status frame, and its open connections. */
void master_proc_alive(struct master *m, struct wproc *p, long conns);
/* A job run's done frame from p (sched.c reads it). 0 or -EBADMSG. */
int master_job_done(struct master *m, struct wproc *p, json_t *msg);
/* Drain: tell p to stop, gracefully (finish its connections, up to
 * graceful_timeout) or not (QUIT, then SIGKILL after a short grace). */
void master_proc_stop(struct master *m, struct wproc *p, int graceful);
/* Kill: SIGKILL p now, and why, which decides what its exit means. */
enum proc_kill {
  PROC_KILL_DISCARD, /* not wanted (an abandoned successor): expected exit */
  PROC_KILL_SILENT,  /* heartbeat silent past timeout: a crash, so counted */
  PROC_KILL_LATE,    /* still draining past its deadline */
  PROC_KILL_BAD      /* said nonsense on its bus: a crash */
};
void master_proc_kill(struct master *m, struct wproc *p, enum proc_kill why);
/* The master's loop was held up (a reload's probe child): no worker's
 * heartbeat is blamed for that time. */
void master_waited(struct master *m);
/* A reload starts generation g (sockets bound; the master's reference
 * given): RELOADING until commit or abort, deadline_ms at the latest. */
void master_gen_begin(struct master *m, struct generation *g,
                      uint64_t deadline_ms);
/* Commit: every successor is ready; the next generation becomes the
 * current one, the old workers drain, waiters hear success. */
void master_gen_commit(struct master *m);
/* Abort: the reload failed (code: the exit status of `aio reload`,
 * errors borrowed, or NULL for [why]); the successors begun, if any, are
 * killed and the old generation serves on. */
void master_gen_abort(struct master *m, int code, const char *why,
                      json_t *errors);
/* Start: every wanted slot gets its first worker (its sockets bound). */
void master_start_slots(struct master *m);
/* Exited: reap every child that exited (SIGCHLD). */
void master_reap(struct master *m);
/* The end: kill and reap what is left (only on a failed start or a bug). */
void master_kill_all(struct master *m);
/* The loop's own: the tick (liveness, backoff, deadlines) and, before
 * the loop sleeps, every worker's queued frames. */
void master_on_tick(uv_timer_t *t);
void master_on_bus_flush(uv_prepare_t *h);
struct slot *master_slot_get(struct master *m, size_t index);
void master_begin_stop(struct master *m, enum master_phase to);
void master_scale(struct master *m, size_t n);
/* For `aio status`: adds "serving" (ready workers of the serving
 * generation), "start_failures", "problem" (why no worker serves, or
 * null), "reload_queued" and "slots" (state, restarts, start_failures,
 * why, retry_in of each) to reply. */
void master_status(struct master *m, json_t *reply);

/* reload.c: start a reload; 0, 1 when one is in flight (this one is
 * queued to run after it, coalesced with any other such request), or -1
 * with *why set (new string). */
int reload_start(struct master *m, char **why);
/* A worker of the reload's generation is ready / exited. */
void reload_worker_ready(struct master *m, struct wproc *p);
void reload_worker_exited(struct master *m, struct wproc *p, const char *how);
void reload_tick(struct master *m, uint64_t now);
/* Abandon a reload in flight (the master is stopping): kill its workers,
 * keep the old generation, answer its clients with why. */
void reload_cancel(struct master *m, const char *why);

/* recycle.c: [aio] max_requests, max_lifetime, max_memory. Each tick:
 * start a replacement for a worker past a limit (at most
 * recycle_concurrency slots at once, never during a reload or a stop). */
void recycle_tick(struct master *m, uint64_t now);
/* p became ready: 1 when it was a slot's replacement, now switched in. */
int recycle_worker_ready(struct master *m, struct wproc *p);
/* p exited (its slot's next cleared already if it was p; the rest of
 * the slot's bookkeeping not yet done): a replacement that died before it
 * served, or a worker whose replacement is still starting. */
void recycle_worker_exited(struct master *m, struct wproc *p, const char *how);
/* Abandon every replacement still starting (a reload replaces every slot
 * anyway; a stop or a scale-down wants none). */
void recycle_cancel(struct master *m, const char *why);
/* For aio status: {"requests": n, "lifetime": n, "memory": n, "failed": n,
 * "in_flight": n} (new). */
json_t *recycle_status(const struct master *m);
/* The name of an enum recycle_trigger ("requests"...), NULL past them. */
const char *recycle_trigger_name(int t);

/* control.c */
int control_open(struct master *m);
void control_close(struct master *m);
/* The control socket's path (borrowed) and listening fd, for an upgrade:
 * NULL / -1 when closed. */
const char *control_path(const struct master *m);
int control_fd(const struct master *m, int *fd);
/* Tell clients waiting on a reload how it went: code 0 when it worked,
 * else the exit status for `aio reload` (errors: array or NULL). */
void control_reload_done(struct master *m, int code, json_t *errors);
/* status.c: the reply to `aio status` (new). */
json_t *status_reply(struct master *m);
/* The control socket's bounds and what they refused, as counted since
 * the start (new). */
json_t *control_status(const struct master *m);

/* metrics.c: the [aio] metrics endpoint and the counters behind it. */
int metrics_open(struct master *m);
void metrics_close(struct master *m);
/* After a reload: follow a changed [aio] metrics address. */
void metrics_reloaded(struct master *m);
/* p exited: its counters join the totals (call before p is freed). */
void metrics_worker_gone(struct master *m, struct wproc *p);
/* For aio status: per server, the totals of every worker that ever ran
 * (new); and p's own counters per server (new). */
json_t *metrics_servers_status(struct master *m);
json_t *metrics_proc_status(const struct wproc *p);
/* The endpoint's own counters (new), or null when off. */
json_t *metrics_endpoint_status(const struct master *m);

/* queues.c: the bounded queues between the master and its workers, for
 * `aio status` and /metrics (docs/bus.md, Bounds). */
/* End of a loop turn: p's queues' high-water marks follow. */
void queues_sample(struct wproc *p);
/* p exited: keep what its mark counted before the mark goes. */
void queues_worker_exited(struct wproc *p);
/* aio_emit(), aio_call_soon(), aio_emit_wait() calls p refused, into v. */
void queues_refused(const struct wproc *p, uint64_t *v);
/* Raise to's marks to from's where from's are higher. */
void queues_high_join(struct queue_high *to, const struct queue_high *from);
/* p's queues: what each holds, its high-water mark, its bound and what
 * it lost (new). */
json_t *queues_proc_status(const struct wproc *p);

/* notify.c: systemd's sd_notify protocol, when NOTIFY_SOCKET is set. */
void notify_init(void);
int notify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Put the variables notify_init took back into the environment, for an
 * exec in place (upgrade.c). */
void notify_export(void);
/* WATCHDOG_USEC for this process, or 0. */
uint64_t notify_watchdog_usec(void);

/* sched.c: timers for the current generation's schedules. */
int sched_start(struct master *m);
void sched_stop(struct master *m);
/* After a reload: drop the old schedules, start the new generation's. */
void sched_restart(struct master *m);
int sched_done(struct master *m, struct wproc *p, json_t *msg);
/* What a schedule's runs (its func, not cb or err) came to, carried across
 * reloads while its name stays. */
struct sched_counts {
  uint64_t ok, failed, skipped; /* skipped: not run (busy, no worker) */
  uint64_t late;  /* of skipped: due times passed while the master was busy */
  uint64_t done;  /* ok + failed, as timed */
  double seconds; /* the runs' total duration */
};
/* Schedule i of the current generation: its name (borrowed), counts in
 * *out. NULL past the last. */
const char *sched_counts(const struct master *m, size_t i,
                         struct sched_counts *out);
void sched_worker_gone(struct master *m, struct wproc *p);
/* `aio status`'s "schedules": per name, its counts, the last run handled
 * and the runs in flight. Returns new. */
json_t *sched_status(const struct master *m);
/* Emit a lifecycle signal from the master. */
void router_emit(struct master *m, const char *signal, json_t *data);
/* What the bus holds for p, for `aio status`: {"pending": deliver frames
 * not yet acknowledged, "journal": its own signals kept here until it
 * ran them, "ring_bytes": bytes of its own signals waiting in its ring}.
 * Returns new. */
json_t *router_proc_status(const struct wproc *p);
/* Signals kept for workers not ready yet. */
size_t router_backlog(const struct master *m);
/* liveness.c: p's heartbeat is timeout_ms late: is it hung? 0 when its loop
 * turns (it is only slow, or its bus is congested); 1 with why set to what it
 * is stuck in, for the kill log. */
int liveness_hung(const struct wproc *p, uint64_t timeout_ms, char *why,
                  size_t n);
/* Every tick: bounds that change without a frame (a slot given up with
 * a backlog), and memory to give back after a burst. */
void router_tick(struct master *m);
/* p became ready: the signals kept for it (its slot's backlog, and the
 * master's) go to it first. */
void router_worker_ready(struct master *m, struct wproc *p);

#endif
