/*
 * cluster_signals_int.h - what the two halves of cluster signals share:
 * cluster_signals.c (the queue of emits, the entries held until
 * acknowledged, the link's hooks, the status) and cluster_signals_read.c
 * (the reader's connection, the consumer groups, the claims of entries
 * left pending, and taking what they bring).
 */
#ifndef AIO_SUPERVISOR_CLUSTER_SIGNALS_INT_H
#define AIO_SUPERVISOR_CLUSTER_SIGNALS_INT_H

#include <stdint.h>

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "cluster_signals.h"
#include "master.h"

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

static inline uint64_t csig_now_ms(const struct csig *c) {
  return uv_now(c->m->loop);
}

static inline const struct settings *csig_conf(const struct csig *c) {
  return &c->m->gen->app.s;
}

/* cluster_signals.c: held entries (an entry read from stream of c), their
 * acknowledgements. */
struct csig_entry *csig_held_new(struct csig *c, size_t stream,
                                 const redisReply *id);
int csig_held_has(const struct csig *c, const char *key, const char *id,
                  size_t idlen);
void csig_flush_acks(struct csig *c);
void csig_ack_now(struct csig *c, const char *key, const char *id);

/* cluster_signals_read.c: the reader and the claim rounds. */
void csig_read_more(struct csig *c);
void csig_reader_open(struct csig *c);
void csig_reader_drop(struct csig *c, const char *why);
void csig_make_groups(struct csig *c);
void csig_claim_round(struct csig *c);

#endif
