/*
 * bus_agree.c - is bus_scan() (the master's check of a frame, without a
 * tree) of the same opinion as bus_decode() (jansson)? Shared by the unit
 * test and the bus fuzz target.
 */
#include "bus_agree.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus.h"
#include "bus_codec.h"

const char *bus_scan_disagrees(const char *buf, size_t len) {
  static char why[256];
  struct bus_frame f;
  int rs = bus_scan(buf, len, &f);
  if (rs == -EAGAIN)
    return NULL;
  enum bus_type t = BUS_NONE;
  int rd = 0;
  json_t *msg = bus_decode(buf, len, &t, &rd);
  if (rs != rd) {
    snprintf(why, sizeof(why), "bus_scan %d, bus_decode %d", rs, rd);
    json_decref(msg);
    return why;
  }
  if (msg == NULL)
    return NULL;
  const char *bad = NULL;
  if (f.type != t)
    bad = "type";
  const json_t *sig = json_object_get(msg, "signal");
  if (json_is_string(sig) != (f.signal.p != NULL) ||
      (f.signal.p &&
       (json_string_length(sig) != f.signal.n ||
        memcmp(json_string_value(sig), f.signal.p, f.signal.n) != 0)))
    bad = "signal";
  static const char *const keys[] = {"data",      "id", "seq",
                                     "listeners", "n",  "count"};
  const struct bus_span *spans[] = {&f.data,      &f.id, &f.seq,
                                    &f.listeners, &f.n,  &f.count};
  for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]) && !bad; i++) {
    json_t *want = json_object_get(msg, keys[i]);
    if ((want == NULL) != (spans[i]->p == NULL)) {
      bad = keys[i];
      break;
    }
    if (want == NULL)
      continue;
    json_t *got = json_loadb(spans[i]->p, spans[i]->n, JSON_DECODE_ANY, NULL);
    json_t *built = bus_span_json(spans[i]);
    if (!json_equal(got, want) || !json_equal(built, want))
      bad = keys[i];
    json_decref(got);
    json_decref(built);
  }
  json_decref(msg);
  if (bad)
    snprintf(why, sizeof(why), "member %s differs", bad);
  return bad ? why : NULL;
}

/* ---- the codec (common/bus_codec.c) against jansson ---------------------- */

/* What a frame says, read from jansson's tree alone: the reference the
 * codec's decoder is held to. 0 or the decoder's error. */
static int reference(const char *buf, size_t len, struct bus_in *ref) {
  memset(ref, 0, sizeof(*ref));
  ref->ks = ref->ks_local;
  ref->count = 1;
  int err;
  json_t *msg = bus_decode(buf, len, &ref->type, &err);
  if (msg == NULL)
    return err;
  json_t *sig = json_object_get(msg, "signal"),
         *id = json_object_get(msg, "id");
  json_t *seq = json_object_get(msg, "seq"),
         *ks = json_object_get(msg, "listeners");
  json_t *n = json_object_get(msg, "n"), *count = json_object_get(msg, "count");
  err = 0;
  switch (ref->type) {
  case BUS_EMIT:
  case BUS_DELIVER:
    if (!json_is_string(sig) || json_string_length(sig) == 0 ||
        json_string_length(sig) > BUS_MAX_SIGNAL) {
      err = -EBADMSG;
      break;
    }
    memcpy(ref->signal, json_string_value(sig), json_string_length(sig) + 1);
    ref->data = json_incref(json_object_get(msg, "data"));
    if (ref->type == BUS_EMIT) {
      err = json_is_integer(seq) ? 0 : -EBADMSG;
      ref->seq = json_integer_value(seq);
      ref->keep = json_is_true(json_object_get(msg, "keep"));
      break;
    }
    /* A deliver names a kept emit's seq or carries data, not both; a
     * count of kept emits from seq on, only with a seq, from 1 to
     * BUS_RUN_MAX, the last seq still a 64-bit integer. */
    if (!json_is_integer(id) || !json_is_array(ks) ||
        (seq && (!json_is_integer(seq) || ref->data)) ||
        (count &&
         (!seq || !json_is_integer(count) || json_integer_value(count) < 1 ||
          json_integer_value(count) > BUS_RUN_MAX ||
          json_integer_value(seq) > INT64_MAX - json_integer_value(count)))) {
      err = -EBADMSG;
      break;
    }
    ref->id = json_integer_value(id);
    ref->has_seq = seq != NULL;
    ref->seq = json_integer_value(seq);
    ref->count = count ? json_integer_value(count) : 1;
    if (json_array_size(ks) >
            sizeof(ref->ks_local) / sizeof(ref->ks_local[0]) &&
        (ref->ks = malloc(json_array_size(ks) * sizeof(*ref->ks))) == NULL)
      abort();
    for (size_t i = 0; i < json_array_size(ks) && !err; i++) {
      json_t *k = json_array_get(ks, i);
      err = json_is_integer(k) ? 0 : -EBADMSG;
      ref->ks[ref->nk++] = json_integer_value(k);
    }
    break;
  case BUS_DELIVERED:
    if ((n && !json_is_integer(n)) || (seq && !json_is_integer(seq)))
      err = -EBADMSG;
    ref->has_n = n != NULL;
    ref->has_seq = seq != NULL;
    ref->n = json_integer_value(n);
    ref->seq = json_integer_value(seq);
    break;
  default:
    break;
  }
  ref->msg = msg;
  return err;
}

/* The value of a decoded frame's data, as a new reference (null when
 * absent). */
static json_t *data_of(const struct bus_in *in) {
  if (in->raw.p)
    return json_loadb(in->raw.p, in->raw.n, JSON_DECODE_ANY, NULL);
  return in->data ? json_incref(in->data) : json_null();
}

/* NULL when a and b say the same, or what differs. */
static const char *differs(const struct bus_in *a, const struct bus_in *b) {
  if (a->type != b->type)
    return "type";
  if (a->type != BUS_EMIT && a->type != BUS_DELIVER && a->type != BUS_DELIVERED)
    return json_equal(a->msg, b->msg) ? NULL : "tree";
  if (a->type != BUS_DELIVERED && strcmp(a->signal, b->signal) != 0)
    return "signal";
  if (a->type == BUS_DELIVER && a->id != b->id)
    return "id";
  if (a->type == BUS_EMIT && (a->seq != b->seq || a->keep != b->keep))
    return "seq or keep";
  if (a->type == BUS_DELIVER &&
      (a->has_seq != b->has_seq ||
       (a->has_seq && (a->seq != b->seq || a->count != b->count))))
    return "seq or count";
  if (a->type == BUS_DELIVERED &&
      (a->has_n != b->has_n || a->has_seq != b->has_seq ||
       (a->has_n && a->n != b->n) || (a->has_seq && a->seq != b->seq)))
    return "n or seq";
  if (a->type == BUS_DELIVER &&
      (a->nk != b->nk || memcmp(a->ks, b->ks, a->nk * sizeof(*a->ks)) != 0))
    return "listeners";
  if (a->type == BUS_DELIVERED)
    return NULL;
  json_t *da = data_of(a), *db = data_of(b);
  int same = da && db && json_equal(da, db);
  json_decref(da);
  json_decref(db);
  return same ? NULL : "data";
}

/* Encode what in says with the codec's encoder (without its newline,
 * in o). 0 or the encoder's error. */
static int reencode(const struct bus_in *in, struct bus_out *o) {
  size_t ks[64];
  o->off = o->len = 0;
  switch (in->type) {
  case BUS_EMIT: {
    json_t *d = data_of(in);
    int err = bus_emit_encode(o, in->signal, d, (uint64_t)in->seq, in->keep);
    json_decref(d);
    return err;
  }
  case BUS_DELIVER:
    if (in->nk > 64)
      return -E2BIG;
    for (size_t i = 0; i < in->nk; i++)
      ks[i] = (size_t)in->ks[i];
    if (in->has_seq)
      return bus_deliver_ref_encode(o, in->id, in->signal, NULL, in->seq,
                                    (size_t)in->count, ks, in->nk);
    return bus_deliver_encode(o, in->id, in->signal, in->data, NULL, ks,
                              in->nk);
  case BUS_DELIVERED:
    return bus_delivered_encode(o, in->has_n, in->n, in->has_seq, in->seq);
  default:
    return -ENOTSUP;
  }
}

/* Every hot frame taken apart, checked or trusted. */
#define HOW(trusted) (BUS_IN_HOT | ((trusted) ? BUS_IN_TRUSTED : 0))

const char *bus_codec_disagrees(const char *buf, size_t len) {
  static char why[256];
  struct bus_in ref, got, trusted, again;
  const char *bad = NULL;
  int rr = reference(buf, len, &ref);
  int rg = bus_in_decode(buf, len, BUS_IN_HOT, &got);
  int rt = bus_in_decode(buf, len, BUS_IN_HOT | BUS_IN_TRUSTED, &trusted);
  const char *what = NULL;
  if (rr != rg) {
    snprintf(why, sizeof(why), "decoder %d, jansson %d", rg, rr);
    bad = why;
  } else if (rg == 0 && (what = differs(&got, &ref)) != NULL) {
    snprintf(why, sizeof(why), "decoder and jansson: %s differs", what);
    bad = why;
  } else if (rg == 0 && rt != 0) {
    snprintf(why, sizeof(why), "the trusted decoder refused it (%d)", rt);
    bad = why;
  } else if (rg == 0 && (what = differs(&got, &trusted)) != NULL) {
    snprintf(why, sizeof(why), "trusted decoder: %s differs", what);
    bad = why;
  }
  /* What the decoder took, the encoder writes again, and the decoder
   * (both ways) reads back the same. The listener indices of a deliver
   * the master writes are never negative: others are not re-encoded. */
  struct bus_out o = {0};
  int neg = 0;
  for (size_t i = 0; i < got.nk; i++)
    neg |= got.ks[i] < 0;
  if (!bad && rg == 0 && !(got.type == BUS_DELIVER && neg) &&
      reencode(&got, &o) == 0) {
    for (int t = 0; t < 2 && !bad; t++) {
      int ra = bus_in_decode(o.buf, o.len - 1, HOW(t), &again);
      what = ra ? "" : differs(&got, &again);
      if (ra != 0 || what != NULL) {
        snprintf(why, sizeof(why), "round trip (trusted %d): %d %s", t, ra,
                 what);
        bad = why;
      }
      bus_in_free(&again);
    }
  }
  bus_out_close(&o);
  bus_in_free(&ref);
  bus_in_free(&got);
  bus_in_free(&trusted);
  return bad;
}
