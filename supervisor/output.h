/*
 * output.h - a worker's stdout and stderr, captured: two pipes the master
 * creates at spawn, read on its loop a bounded slice per turn, each line
 * logged as the worker's (log_captured). The line splitter is a pure
 * function, for the unit test.
 */
#ifndef AIO_SUPERVISOR_OUTPUT_H
#define AIO_SUPERVISOR_OUTPUT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "log.h"

/* A line is cut at this many bytes; the rest, up to its newline, is
 * dropped and counted. */
#define OUTPUT_LINE_MAX LOG_CAPTURED_MAX
/* What the master reads from one stream of one worker in one loop turn:
 * the rest waits in the pipe (64 KiB by default), and a worker that
 * writes faster blocks in write(2). That is the back-pressure. */
#define OUTPUT_READ_MAX 8192

/* A line in the making. */
struct line_split {
  char buf[OUTPUT_LINE_MAX];
  size_t len;
  int cutting;      /* the current line was cut: drop up to its newline */
  uint64_t lines;   /* lines passed on (cut ones included) */
  uint64_t cut;     /* of which cut at OUTPUT_LINE_MAX */
  uint64_t dropped; /* bytes dropped from cut lines */
};

/* A whole line, without its newline (nor a '\r' before it). */
typedef void line_fn(void *arg, const char *line, size_t len);

/* Pass every line completed by data to fn. A line that grows past
 * OUTPUT_LINE_MAX bytes is passed at once, cut there; the rest of it is
 * dropped. */
void line_split_feed(struct line_split *ls, const char *data, size_t len,
                     line_fn *fn, void *arg);
/* The end of the stream: the partial line, if there is one. */
void line_split_flush(struct line_split *ls, line_fn *fn, void *arg);

struct output;

/* Two pipes for a worker about to be forked. Returns new, or NULL (errno
 * set). */
struct output *output_new(void);
/* For an upgrade: the read end of o's stdout (stream 0) or stderr (1)
 * pipe, borrowed; -1 when none. */
int output_fd(const struct output *o, int stream);
/* The pipes of a worker that the image an upgrade replaced had started:
 * their read ends (stolen; both, or neither is used). Returns new, to
 * output_start, or NULL. */
struct output *output_adopt(int out_fd, int err_fd);
/* In the forked worker: its stdout and stderr become the pipes (line
 * buffered), its log moves off them. 0 or -errno. Frees the child's copy
 * of o either way. */
int output_child(struct output *o);
/* In the master after the fork: read o on loop, logging as worker slot,
 * process pid. */
void output_start(struct output *o, uv_loop_t *loop, int slot, pid_t pid);
/* The worker is gone (or was never forked): log what is left in the pipes
 * (a bounded amount) and the partial lines, close, free. NULL: no-op. */
void output_close(struct output *o);
/* {"lines", "cut", "dropped_bytes"} of both streams, for `aio status`.
 * Returns new; o may be NULL (zeros). */
json_t *output_status(const struct output *o);

#endif
