/*
 * bus_codec.h - one encoder and one decoder for each hot frame type of the
 * bus (emit, deliver, delivered), shared by the master and the workers.
 *
 * The wire stays one JSON object per line (docs/bus.md): the frames a
 * worker leaves in its ring and the master keeps in its journal are read
 * back after a crash with the same checks as a frame from the socket, and
 * every tool that reads the bus reads JSON. What was three decoders tied
 * to the encoder by string literals with hand-counted lengths is now one
 * decoder per type whose fast path reads exactly the pieces the encoder
 * writes (the same macros, their lengths from sizeof), and falls back to
 * bus_scan() and then jansson for any other shape: change the encoder and
 * the fast path follows it, it cannot silently fall back.
 *
 * Frames of the other types (ready, heartbeat, run, done, stop, reopen,
 * status) are few; they are built with bus_msg() and read as a jansson
 * tree, in bus_in.msg.
 */
#ifndef AIO_COMMON_BUS_CODEC_H
#define AIO_COMMON_BUS_CODEC_H

#include "bus.h"

/* {"t":"emit","signal":S,"data":D,"seq":N}, at the end of o, with
 * ,"keep":true before the end when keep (the worker keeps D for its own
 * broadcast listeners: the master's deliver back to it names the seq
 * instead of carrying D). 0, or -EINVAL (a name or string that is not
 * UTF-8 or holds a NUL, too deep, a cycle), -EMSGSIZE (over
 * BUS_MAX_EMIT), -ENOMEM, with nothing added. */
int bus_emit_encode(struct bus_out *o, const char *signal, const json_t *data,
                    uint64_t seq, int keep);
/* The same with the name's bytes text when not NULL: signal's, as
 * bus_name_plain() accepted them (copied without a second look). */
int bus_emit_encode_text(struct bus_out *o, const char *signal,
                         const struct bus_span *text, const json_t *data,
                         uint64_t seq, int keep);
/* Do s[0, n) go into a JSON string as they are (printable ASCII, no quote
 * or backslash, at least one)? */
int bus_name_plain(const char *s, size_t n);

/* {"t":"deliver","id":I,"signal":S,"data":D,"listeners":[k,...]}, at the
 * end of o. Its data is the JSON text raw when given (an emit's data,
 * already checked: copied as it is), else data. 0 or an error as
 * bus_out_end(), with nothing added. */
int bus_deliver_encode(struct bus_out *o, json_int_t id, const char *signal,
                       const json_t *data, const struct bus_span *raw,
                       const size_t *listeners, size_t n);

/* The most kept emits one deliver frame may stand for ("count"). */
#define BUS_RUN_MAX 65536

/* {"t":"deliver","id":I,"signal":S,"seq":N,"listeners":[k,...]}: the
 * deliver of a kept emit (keep) back to its emitter, whose data it holds:
 * N is the emit's seq. With count > 1 (at most BUS_RUN_MAX),
 * ,"count":C follows N: the frame is a run of C such delivers, of the
 * kept emits N to N+C-1, in that order, each a delivery of its own (the
 * worker counts them one by one, and so do its acknowledgements and its
 * mark), with the same signal and listeners; I is the first's id. text,
 * when given, is the emit's signal as it came (checked, without quotes,
 * no escape: copied as it is), else signal is encoded. 0 or an error as
 * bus_out_end(), with nothing added. */
int bus_deliver_ref_encode(struct bus_out *o, json_int_t id, const char *signal,
                           const struct bus_span *text, json_int_t seq,
                           size_t count, const size_t *listeners, size_t n);

/* {"t":"delivered","n":N,"seq":S}, each member only when has_*: the
 * first N deliveries sent to this worker (its count of the deliver frames
 * it ran, a run counting one per emit) and its own emits up to seq are
 * finished. */
int bus_delivered_encode(struct bus_out *o, int has_n, json_int_t n,
                         int has_seq, json_int_t seq);

/* One decoded frame. */
struct bus_in {
  enum bus_type type;
  const char *frame; /* the text decoded, borrowed: frame[0, len) */
  size_t len;
  /* The frame as a tree when jansson decoded it: every frame of another
   * type, and a hot one whose shape bus_scan() left to jansson. */
  json_t *msg;
  /* emit: data's text (raw.p NULL when the frame came through jansson, or
   * had no data); data: the value, when it came through jansson (else
   * NULL). deliver: data is the value, always set (owned). */
  struct bus_span raw;
  json_t *data;
  int has_n, has_seq;
  int keep;         /* emit: "keep" is true (the emitter keeps its data) */
  json_int_t id;    /* deliver */
  json_int_t n;     /* delivered: how many deliveries are finished */
  json_int_t seq;   /* emit, delivered; deliver when has_seq: a kept emit's
                       (the first of count) */
  json_int_t count; /* deliver with has_seq: how many kept emits, from seq
                       on (1 to BUS_RUN_MAX) */
  struct bus_span signal_text; /* emit from the scanner: as in the frame */
  json_int_t *ks;              /* deliver: the listener indices, nk of them */
  size_t nk;
  json_int_t ks_local[8]; /* every member above is cleared by in_reset() */
  char signal[BUS_MAX_SIGNAL + 1]; /* emit, deliver: 1 to 256 bytes */
};

/* What a reader takes apart into members: a set of BUS_IN_BIT(type) of
 * the hot types it accepts (a frame of another type comes as a tree,
 * unchecked beyond bus_decode(), for the reader to refuse or take), and
 * BUS_IN_TRUSTED: the frames come from the master (or are ones it made),
 * and a deliver in exactly the shape bus_deliver_encode() writes is taken
 * apart where it stands, its data built without a second check;
 * otherwise every frame is checked as jansson would. */
#define BUS_IN_BIT(t) (1u << (t))
#define BUS_IN_TRUSTED (1u << 31)
/* The master reading a worker; a worker reading the master. */
#define BUS_IN_MASTER (BUS_IN_BIT(BUS_EMIT) | BUS_IN_BIT(BUS_DELIVERED))
#define BUS_IN_WORKER (BUS_IN_BIT(BUS_DELIVER) | BUS_IN_TRUSTED)
#define BUS_IN_HOT (BUS_IN_MASTER | BUS_IN_BIT(BUS_DELIVER))

/* Decode one frame (without its newline) as `how` says. Returns 0 with
 * *in set (bus_in_free() it), or -EMSGSIZE, -EBADMSG, -EPROTO as
 * bus_decode(), -EBADMSG also for a frame of a type in how whose members
 * are missing or of the wrong type, -ENOMEM. */
int bus_in_decode(const char *frame, size_t len, unsigned how,
                  struct bus_in *in);
void bus_in_free(struct bus_in *in);

/* The shared reading loop of both ends: decode each frame of a
 * bus_reader_split() and hand it to cb (in is freed after the call).
 * cb's non-zero return stops the split, as a bus_line_cb's does. */
typedef int (*bus_in_cb)(void *arg, struct bus_in *in);
struct bus_in_sink {
  bus_in_cb cb;
  void *arg;
  unsigned how; /* as bus_in_decode()'s */
};
int bus_in_line(void *sink, const char *frame, size_t len);

#endif
