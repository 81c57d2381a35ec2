/* bus_codec.c - see bus_codec.h. */
#include "bus_codec.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The fixed pieces of the hot frames, written by the encoders and, for a
 * deliver, matched by the trusted decoder: one definition, lengths from
 * sizeof. */
#define EMIT_HEAD "{\"t\":\"emit\",\"signal\":"
#define EMIT_DATA ",\"data\":"
#define EMIT_SEQ ",\"seq\":"
#define EMIT_KEEP ",\"keep\":true"
#define EMIT_TAIL "}"
#define DELIVER_HEAD "{\"t\":\"deliver\",\"id\":"
#define DELIVER_SIGNAL ",\"signal\":"
#define DELIVER_DATA ",\"data\":"
#define DELIVER_SEQ ",\"seq\":"
#define DELIVER_COUNT ",\"count\":"
#define DELIVER_LISTENERS ",\"listeners\":["
#define DELIVER_TAIL "]}"
#define DELIVERED_HEAD "{\"t\":\"delivered\""
#define DELIVERED_N ",\"n\":"
#define DELIVERED_SEQ ",\"seq\":"
#define DELIVERED_TAIL "}"

#define PIECE(o, s) bus_out_raw((o), s, sizeof(s) - 1)
#define HAS(p, end, s)                                                         \
  ((size_t)((end) - (p)) >= sizeof(s) - 1 && memcmp((p), s, sizeof(s) - 1) == 0)
/* Is span sp exactly the literal s? */
#define SPAN_IS(sp, s)                                                         \
  ((sp).n == sizeof(s) - 1 && HAS((sp).p, (sp).p + (sp).n, s))

/* signal as a JSON string: text, when given, is its bytes, known to need
 * no escape (copied as they are). */
static int out_name(struct bus_out *o, const char *signal,
                    const struct bus_span *text) {
  if (text == NULL)
    return bus_out_str(o, signal);
  int err = bus_out_raw(o, "\"", 1);
  if (!err)
    err = bus_out_raw(o, text->p, text->n);
  return err ? err : bus_out_raw(o, "\"", 1);
}

int bus_name_plain(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c < 0x20 || c >= 0x80 || c == '"' || c == '\\')
      return 0;
  }
  return n > 0;
}

int bus_emit_encode(struct bus_out *o, const char *signal, const json_t *data,
                    uint64_t seq, int keep) {
  return bus_emit_encode_text(o, signal, NULL, data, seq, keep);
}

int bus_emit_encode_text(struct bus_out *o, const char *signal,
                         const struct bus_span *text, const json_t *data,
                         uint64_t seq, int keep) {
  size_t start = o->len;
  int err = PIECE(o, EMIT_HEAD);
  if (!err)
    err = out_name(o, signal, text);
  if (!err)
    err = PIECE(o, EMIT_DATA);
  if (!err)
    err = bus_out_json(o, data);
  if (!err)
    err = PIECE(o, EMIT_SEQ);
  if (!err)
    err = bus_out_int(o, (long long)seq);
  if (!err && keep)
    err = PIECE(o, EMIT_KEEP);
  if (!err)
    err = PIECE(o, EMIT_TAIL);
  err = bus_out_end(o, start, err);
  if (err == 0 && o->len - start > BUS_MAX_EMIT) {
    o->len = start; /* its deliver frame would not fit */
    err = -EMSGSIZE;
  }
  return err;
}

/* ,"listeners":[k,...]} */
static int deliver_listeners(struct bus_out *o, const size_t *listeners,
                             size_t n) {
  int err = PIECE(o, DELIVER_LISTENERS);
  for (size_t i = 0; i < n && !err; i++) {
    if (i > 0)
      err = bus_out_raw(o, ",", 1);
    if (!err)
      err = bus_out_int(o, (long long)listeners[i]);
  }
  return err ? err : PIECE(o, DELIVER_TAIL);
}

/* {"t":"deliver","id":I,"signal":S */
static int deliver_head(struct bus_out *o, json_int_t id, const char *signal,
                        const struct bus_span *text) {
  int err = PIECE(o, DELIVER_HEAD);
  if (!err)
    err = bus_out_int(o, id);
  if (!err)
    err = PIECE(o, DELIVER_SIGNAL);
  return err ? err : out_name(o, signal, text);
}

int bus_deliver_encode(struct bus_out *o, json_int_t id, const char *signal,
                       const json_t *data, const struct bus_span *raw,
                       const size_t *listeners, size_t n) {
  size_t start = o->len;
  int err = deliver_head(o, id, signal, NULL);
  if (!err)
    err = PIECE(o, DELIVER_DATA);
  if (!err)
    err = raw ? bus_out_raw(o, raw->p, raw->n) : bus_out_json(o, data);
  if (!err)
    err = deliver_listeners(o, listeners, n);
  return bus_out_end(o, start, err);
}

int bus_deliver_ref_encode(struct bus_out *o, json_int_t id, const char *signal,
                           const struct bus_span *text, json_int_t seq,
                           size_t count, const size_t *listeners, size_t n) {
  size_t start = o->len;
  if (count < 1 || count > BUS_RUN_MAX)
    return -EINVAL;
  int err = deliver_head(o, id, signal, text);
  if (!err)
    err = PIECE(o, DELIVER_SEQ);
  if (!err)
    err = bus_out_int(o, seq);
  if (!err && count > 1)
    err = PIECE(o, DELIVER_COUNT);
  if (!err && count > 1)
    err = bus_out_int(o, (long long)count);
  if (!err)
    err = deliver_listeners(o, listeners, n);
  return bus_out_end(o, start, err);
}

int bus_delivered_encode(struct bus_out *o, int has_n, json_int_t n,
                         int has_seq, json_int_t seq) {
  size_t start = o->len;
  int err = PIECE(o, DELIVERED_HEAD);
  if (!err && has_n)
    err = PIECE(o, DELIVERED_N);
  if (!err && has_n)
    err = bus_out_int(o, n);
  if (!err && has_seq)
    err = PIECE(o, DELIVERED_SEQ);
  if (!err && has_seq)
    err = bus_out_int(o, seq);
  if (!err)
    err = PIECE(o, DELIVERED_TAIL);
  return bus_out_end(o, start, err);
}

/* ---- decoding ------------------------------------------------------------ */

static int set_signal(struct bus_in *in, const char *s, size_t n) {
  if (s == NULL || n == 0 || n > BUS_MAX_SIGNAL)
    return -EBADMSG;
  memcpy(in->signal, s, n);
  in->signal[n] = '\0';
  return 0;
}

static int ks_room(struct bus_in *in, size_t n) {
  in->ks = in->ks_local;
  if (n > sizeof(in->ks_local) / sizeof(in->ks_local[0]) &&
      (in->ks = malloc(n * sizeof(*in->ks))) == NULL) {
    in->ks = in->ks_local;
    return -ENOMEM;
  }
  return 0;
}

/* Plain digits, at most 18 (no overflow): *p moves past them. */
static int digits(const char **p, const char *end, json_int_t *v) {
  const char *start = *p;
  json_int_t x = 0;
  while (*p < end && **p >= '0' && **p <= '9' && *p - start < 18)
    x = x * 10 + (*(*p)++ - '0');
  *v = x;
  return *p > start ? 0 : -1;
}

/* "[i,j,...]" of plain non-negative integers, as the encoder writes them:
 * 0, or -EAGAIN for any other shape (jansson decides). */
static int ks_text(struct bus_in *in, const char *p, const char *end) {
  size_t n = 0;
  for (const char *q = p; q < end; q++)
    n += *q == ',';
  if (p < end && ks_room(in, n + 1))
    return -ENOMEM;
  in->nk = 0;
  while (p < end) {
    if (digits(&p, end, &in->ks[in->nk]))
      return -EAGAIN;
    in->nk++;
    if (p < end && *p++ != ',')
      return -EAGAIN;
    if (p == end && p[-1] == ',')
      return -EAGAIN;
  }
  return 0;
}

/* Is count out of its range (1 to BUS_RUN_MAX), or would the run's last
 * seq not fit? */
static int run_bad(json_int_t seq, json_int_t count) {
  return count < 1 || count > BUS_RUN_MAX || seq > INT64_MAX - count;
}

/* A deliver in exactly the shape bus_deliver_encode() writes, taken apart
 * where it stands (the master's own frames): -EAGAIN for any other. */
static int deliver_trusted(const char *frame, size_t len, struct bus_in *in) {
  const char *p = frame, *end = frame + len;
  if (!HAS(p, end, DELIVER_HEAD))
    return -EAGAIN;
  p += sizeof(DELIVER_HEAD) - 1;
  if (digits(&p, end, &in->id) || !HAS(p, end, DELIVER_SIGNAL "\""))
    return -EAGAIN;
  const char *name = p += sizeof(DELIVER_SIGNAL "\"") - 1;
  while (p < end && *p != '"' && *p != '\\')
    p++;
  if (set_signal(in, name, p - name))
    return -EAGAIN;
  if (HAS(p, end, "\"" DELIVER_SEQ)) { /* a kept emit's, back to it */
    p += sizeof("\"" DELIVER_SEQ) - 1;
    if (digits(&p, end, &in->seq))
      return -EAGAIN;
    if (HAS(p, end, DELIVER_COUNT)) { /* a run of them */
      p += sizeof(DELIVER_COUNT) - 1;
      if (digits(&p, end, &in->count) || run_bad(in->seq, in->count))
        return -EAGAIN;
    }
    if (!HAS(p, end, DELIVER_LISTENERS))
      return -EAGAIN;
    p += sizeof(DELIVER_LISTENERS) - 1;
    const char *tail = end - (sizeof(DELIVER_TAIL) - 1);
    if (tail < p || !HAS(tail, end, DELIVER_TAIL))
      return -EAGAIN;
    int err = ks_text(in, p, tail);
    if (err)
      return err;
    in->has_seq = 1;
    in->data = json_null();
    in->type = BUS_DELIVER;
    return 0;
  }
  if (!HAS(p, end, "\"" DELIVER_DATA))
    return -EAGAIN;
  const char *data = p + sizeof("\"" DELIVER_DATA) - 1;
  /* The tail, from the end back: ,"listeners":[i,j,...]} */
  const char *q = end - (sizeof(DELIVER_TAIL) - 1);
  if (q < data || !HAS(q, end, DELIVER_TAIL))
    return -EAGAIN;
  const char *list_end = q;
  while (q > data && ((q[-1] >= '0' && q[-1] <= '9') || q[-1] == ','))
    q--;
  const char *list = q;
  q -= sizeof(DELIVER_LISTENERS) - 1;
  if (q < data || !HAS(q, end, DELIVER_LISTENERS))
    return -EAGAIN;
  int err = ks_text(in, list, list_end);
  if (err)
    return err;
  struct bus_span sp = {data, (size_t)(q - data)};
  if ((in->data = bus_span_json(&sp)) == NULL)
    return -EAGAIN;
  in->type = BUS_DELIVER;
  return 0;
}

/* An emit in exactly the shape bus_emit_encode() writes, with a plain
 * ASCII name and seq, checked piece by piece (the data as bus_scan()
 * checks a member) without the general scan's bookkeeping of the frame's
 * own keys: its five are known and distinct. -EAGAIN for any other shape
 * (bus_scan() decides), or -ENOMEM. */
static int emit_fast(const char *frame, size_t len, struct bus_in *in) {
  const char *p = frame, *end = frame + len;
  if (!HAS(p, end, EMIT_HEAD "\""))
    return -EAGAIN;
  const char *name = p += sizeof(EMIT_HEAD "\"") - 1;
  while (p < end && (unsigned char)*p >= 0x20 && (unsigned char)*p < 0x80 &&
         *p != '"' && *p != '\\')
    p++;
  size_t n = (size_t)(p - name);
  if (!HAS(p, end, "\"" EMIT_DATA) || set_signal(in, name, n))
    return -EAGAIN;
  const char *data = p + sizeof("\"" EMIT_DATA) - 1;
  size_t used;
  int err = bus_scan_member(data, (size_t)(end - data), &used);
  if (err)
    return err == -ENOMEM ? err : -EAGAIN;
  p = data + used;
  if (!HAS(p, end, EMIT_SEQ))
    return -EAGAIN;
  const char *num = p += sizeof(EMIT_SEQ) - 1;
  /* As JSON has it: no leading zero; and short enough not to overflow. */
  if (digits(&p, end, &in->seq) || (*num == '0' && p - num > 1) ||
      (p < end && *p >= '0' && *p <= '9'))
    return -EAGAIN;
  if (HAS(p, end, EMIT_KEEP)) {
    in->keep = 1;
    p += sizeof(EMIT_KEEP) - 1;
  }
  if ((size_t)(end - p) != sizeof(EMIT_TAIL) - 1 || !HAS(p, end, EMIT_TAIL))
    return -EAGAIN;
  in->raw = (struct bus_span){data, used};
  in->signal_text = (struct bus_span){name, n};
  in->type = BUS_EMIT;
  return 0;
}

/* The hot frames' members from bus_scan()'s spans: 0, -EBADMSG, or
 * -EAGAIN when jansson must decide. */
static int from_scan(const struct bus_frame *f, unsigned how,
                     struct bus_in *in) {
  switch (how & BUS_IN_BIT(f->type) ? f->type : BUS_NONE) {
  case BUS_EMIT:
    if (set_signal(in, f->signal.p, f->signal.n) ||
        bus_span_int(&f->seq, &in->seq))
      return -EBADMSG;
    in->raw = f->data;
    in->signal_text = f->signal;
    in->keep = SPAN_IS(f->keep, "true");
    return 0;
  case BUS_DELIVER: {
    if (set_signal(in, f->signal.p, f->signal.n) ||
        bus_span_int(&f->id, &in->id) || f->listeners.p == NULL)
      return -EBADMSG;
    /* A kept emit's seq instead of data: not both; a count of them only
     * with a seq. */
    in->has_seq = f->seq.p != NULL;
    if (in->has_seq && (bus_span_int(&f->seq, &in->seq) || f->data.p))
      return -EBADMSG;
    if (f->count.p && (!in->has_seq || bus_span_int(&f->count, &in->count) ||
                       run_bad(in->seq, in->count)))
      return -EBADMSG;
    if (f->listeners.p[0] != '[' || f->listeners.p[f->listeners.n - 1] != ']')
      return -EBADMSG;
    int err =
        ks_text(in, f->listeners.p + 1, f->listeners.p + f->listeners.n - 1);
    if (err)
      return err;
    return (in->data = bus_span_json(&f->data)) ? 0 : -ENOMEM;
  }
  case BUS_DELIVERED:
    in->has_n = f->n.p != NULL;
    in->has_seq = f->seq.p != NULL;
    if ((in->has_n && bus_span_int(&f->n, &in->n)) ||
        (in->has_seq && bus_span_int(&f->seq, &in->seq)))
      return -EBADMSG;
    return 0;
  default:
    return -EAGAIN; /* not a hot frame: a tree */
  }
}

static int int_member(json_t *msg, const char *key, int *has, json_int_t *v) {
  json_t *m = json_object_get(msg, key);
  *has = m != NULL;
  if (m && !json_is_integer(m))
    return -EBADMSG;
  *v = json_integer_value(m);
  return 0;
}

/* The hot frames' members from the tree. */
static int from_tree(unsigned how, struct bus_in *in) {
  json_t *msg = in->msg, *sig = json_object_get(msg, "signal");
  int has;
  switch (how & BUS_IN_BIT(in->type) ? in->type : BUS_NONE) {
  case BUS_EMIT:
  case BUS_DELIVER:
    if (!json_is_string(sig) ||
        set_signal(in, json_string_value(sig), json_string_length(sig)))
      return -EBADMSG;
    if (in->type == BUS_EMIT) {
      if (int_member(msg, "seq", &has, &in->seq) || !has)
        return -EBADMSG;
      in->data = json_incref(json_object_get(msg, "data"));
      in->keep = json_is_true(json_object_get(msg, "keep"));
      return 0;
    }
    if (int_member(msg, "id", &has, &in->id) || !has ||
        int_member(msg, "seq", &in->has_seq, &in->seq) ||
        (in->has_seq && json_object_get(msg, "data")) ||
        int_member(msg, "count", &has, &in->count) ||
        (has && (!in->has_seq || run_bad(in->seq, in->count))))
      return -EBADMSG;
    if (!has)
      in->count = 1;
    json_t *ks = json_object_get(msg, "listeners"), *k;
    size_t i;
    if (!json_is_array(ks))
      return -EBADMSG;
    if (ks_room(in, json_array_size(ks)))
      return -ENOMEM;
    json_array_foreach(ks, i, k) {
      if (!json_is_integer(k))
        return -EBADMSG;
      in->ks[in->nk++] = json_integer_value(k);
    }
    json_t *data = json_object_get(msg, "data");
    in->data = data ? json_incref(data) : json_null();
    return 0;
  case BUS_DELIVERED:
    if (int_member(msg, "n", &in->has_n, &in->n) ||
        int_member(msg, "seq", &in->has_seq, &in->seq))
      return -EBADMSG;
    return 0;
  default:
    return 0;
  }
}

/* Every member before ks_local cleared, member by member: a memset of
 * them compiles to `rep stos`, whose start-up cost was a quarter of a
 * worker's decoding of a deliver frame. */
static void in_reset(struct bus_in *in, enum bus_type t) {
  in->type = t;
  in->frame = NULL;
  in->len = 0;
  in->msg = NULL;
  in->raw = (struct bus_span){NULL, 0};
  in->data = NULL;
  in->has_n = in->has_seq = in->keep = 0;
  in->id = in->n = in->seq = 0;
  in->count = 1;
  in->signal_text = (struct bus_span){NULL, 0};
  in->ks = in->ks_local;
  in->nk = 0;
}

int bus_in_decode(const char *frame, size_t len, unsigned how,
                  struct bus_in *in) {
  in_reset(in, BUS_NONE);
  in->signal[0] = '\0';
  int err = (how & BUS_IN_TRUSTED) && (how & BUS_IN_BIT(BUS_DELIVER))
                ? deliver_trusted(frame, len, in)
            : how & BUS_IN_BIT(BUS_EMIT) ? emit_fast(frame, len, in)
                                         : -EAGAIN;
  if (err != -EAGAIN)
    goto out;
  bus_in_free(in);
  struct bus_frame f;
  err = bus_scan(frame, len, &f);
  if (err == 0) {
    in->type = f.type;
    err = from_scan(&f, how, in);
    if (err != -EAGAIN)
      goto out;
    bus_in_free(in);
  } else if (err != -EAGAIN) {
    goto out;
  }
  if ((in->msg = bus_decode(frame, len, &in->type, &err)) != NULL)
    err = from_tree(how, in);
out:
  if (err)
    bus_in_free(in);
  in->frame = frame;
  in->len = len;
  return err;
}

void bus_in_free(struct bus_in *in) {
  json_decref(in->msg);
  json_decref(in->data);
  if (in->ks != in->ks_local)
    free(in->ks);
  in_reset(in, in->type);
}

int bus_in_line(void *sink, const char *frame, size_t len) {
  struct bus_in_sink *s = sink;
  struct bus_in in;
  int err = bus_in_decode(frame, len, s->how, &in);
  if (err)
    return err;
  err = s->cb(s->arg, &in);
  bus_in_free(&in);
  return err;
}
