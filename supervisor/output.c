/*
 * output.c - a worker's stdout and stderr in the log. The master creates a
 * pipe per stream at spawn; the worker's fds 1 and 2 are their write ends,
 * so printf, fprintf(stderr), a library's own messages and the programs it
 * runs all land there. The master polls the read ends on its loop and logs
 * each line as the worker's (tagged with its slot, pid and stream). One
 * read(2) of at most OUTPUT_READ_MAX bytes per stream per loop turn: a
 * worker that floods fills its pipe and blocks in write(2) until the
 * master gets to it, and the master never falls behind on anything else.
 */
#define _GNU_SOURCE
#include "output.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* What output_close() reads from a dead worker's pipe at most: all it can
 * hold, unless a process the worker started still writes to it. */
#define OUTPUT_DRAIN_MAX (1024 * 1024)

/* ---- the line splitter -------------------------------------------------- */

static void split_pass(struct line_split *ls, const char *line, size_t len,
                       line_fn *fn, void *arg) {
  if (len && line[len - 1] == '\r')
    len--;
  ls->lines++;
  fn(arg, line, len);
}

void line_split_feed(struct line_split *ls, const char *data, size_t len,
                     line_fn *fn, void *arg) {
  const char *p = data, *end = data + len;
  while (p < end) {
    const char *nl = memchr(p, '\n', (size_t)(end - p));
    size_t seg = (size_t)((nl ? nl : end) - p);
    if (ls->cutting) {
      ls->dropped += seg;
    } else if (nl && ls->len == 0 && seg <= OUTPUT_LINE_MAX) {
      split_pass(ls, p, seg, fn, arg); /* whole in data: no copy */
      p = nl + 1;
      continue;
    } else {
      size_t take = OUTPUT_LINE_MAX - ls->len;
      if (take > seg)
        take = seg;
      memcpy(ls->buf + ls->len, p, take);
      ls->len += take;
      if (seg > take) {
        /* Passed at once: a line with no end in sight must not hold the
         * buffer, nor wait for a newline that may never come. */
        ls->cut++;
        ls->lines++;
        fn(arg, ls->buf, ls->len);
        ls->len = 0;
        ls->cutting = 1;
        ls->dropped += seg - take;
      }
    }
    if (nl == NULL)
      return;
    if (ls->cutting)
      ls->cutting = 0;
    else
      split_pass(ls, ls->buf, ls->len, fn, arg);
    ls->len = 0;
    p = nl + 1;
  }
}

void line_split_flush(struct line_split *ls, line_fn *fn, void *arg) {
  if (!ls->cutting && ls->len > 0)
    split_pass(ls, ls->buf, ls->len, fn, arg);
  ls->len = 0;
  ls->cutting = 0;
}

/* ---- a worker's two streams --------------------------------------------- */

struct output_stream {
  uv_poll_t poll;
  int rfd, wfd;
  int eof; /* read to its end, or closed */
  int level;
  const char *name;
  struct line_split ls;
  struct output *o;
};

struct output {
  struct output_stream st[2]; /* stdout, stderr */
  int slot;
  pid_t pid;
  int started;
  int handles; /* poll handles not closed yet: freed after the last */
};

/* fd, moved above stdio if it is there (a master started with a standard
 * stream closed gets its pipes at 0, 1 or 2). -1 when it cannot be. */
static int output_high_fd(int fd) {
  if (fd > STDERR_FILENO)
    return fd;
  int moved = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
  close(fd);
  return moved;
}

static void output_close_fds(struct output *o) {
  for (int i = 0; i < 2; i++) {
    if (o->st[i].rfd >= 0)
      close(o->st[i].rfd);
    if (o->st[i].wfd >= 0)
      close(o->st[i].wfd);
    o->st[i].rfd = o->st[i].wfd = -1;
  }
}

static struct output *output_alloc(void) {
  struct output *o = calloc(1, sizeof(*o));
  if (o == NULL)
    return NULL;
  static const char *const names[] = {"stdout", "stderr"};
  static const int levels[] = {AIO_LOG_INFO, AIO_LOG_WARN};
  for (int i = 0; i < 2; i++) {
    struct output_stream *st = &o->st[i];
    st->rfd = st->wfd = -1;
    st->name = names[i];
    st->level = levels[i];
    st->o = o;
  }
  return o;
}

struct output *output_adopt(int out_fd, int err_fd) {
  struct output *o = out_fd >= 0 && err_fd >= 0 ? output_alloc() : NULL;
  if (o == NULL) {
    if (out_fd >= 0)
      close(out_fd);
    if (err_fd >= 0)
      close(err_fd);
    return NULL;
  }
  o->st[0].rfd = out_fd;
  o->st[1].rfd = err_fd;
  return o;
}

int output_fd(const struct output *o, int stream) {
  return o && (stream == 0 || stream == 1) ? o->st[stream].rfd : -1;
}

struct output *output_new(void) {
  struct output *o = output_alloc();
  if (o == NULL)
    return NULL;
  for (int i = 0; i < 2; i++) {
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
      goto fail;
    o->st[i].rfd = output_high_fd(fds[0]);
    o->st[i].wfd = output_high_fd(fds[1]);
    /* Only the master's end: the worker's write(2) blocks when the pipe
     * is full. */
    if (o->st[i].rfd < 0 || o->st[i].wfd < 0 ||
        fcntl(o->st[i].rfd, F_SETFL, O_NONBLOCK) < 0)
      goto fail;
  }
  return o;
fail:;
  int err = errno;
  output_close_fds(o);
  free(o);
  errno = err;
  return NULL;
}

int output_child(struct output *o) {
  int err = log_off_stdio();
  if (err == 0 && (dup2(o->st[0].wfd, STDOUT_FILENO) < 0 ||
                   dup2(o->st[1].wfd, STDERR_FILENO) < 0))
    err = -errno;
  output_close_fds(o);
  free(o);
  if (err)
    return err;
  /* A pipe would make stdout fully buffered: a module's printf would show
   * up 4 KiB later, or never if the worker is killed. */
  setvbuf(stdout, NULL, _IOLBF, 0);
  return 0;
}

static void output_line(void *arg, const char *line, size_t len) {
  struct output_stream *st = arg;
  log_captured(st->level, st->o->slot, (int)st->o->pid, st->name, line, len);
}

static void stream_end(struct output_stream *st) {
  line_split_flush(&st->ls, output_line, st);
  st->eof = 1;
  if (st->o->started)
    uv_poll_stop(&st->poll);
}

/* One read(2): 1 when it brought data, 0 when there is none now, -1 at the
 * end of the stream (the worker and whatever inherited its stdio are
 * gone). */
static int stream_read(struct output_stream *st) {
  static char buf[OUTPUT_READ_MAX]; /* the master is single-threaded */
  ssize_t r;
  do
    r = read(st->rfd, buf, sizeof(buf));
  while (r < 0 && errno == EINTR);
  if (r > 0) {
    line_split_feed(&st->ls, buf, (size_t)r, output_line, st);
    return 1;
  }
  if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
    return 0;
  stream_end(st);
  return -1;
}

static void on_readable(uv_poll_t *h, int status, int events) {
  (void)events;
  struct output_stream *st = h->data;
  if (status < 0)
    stream_end(st);
  else
    stream_read(st);
}

void output_start(struct output *o, uv_loop_t *loop, int slot, pid_t pid) {
  o->slot = slot;
  o->pid = pid;
  o->started = 1;
  for (int i = 0; i < 2; i++) {
    struct output_stream *st = &o->st[i];
    if (st->wfd >= 0) /* not for an adopted one */
      close(st->wfd);
    st->wfd = -1;
    uv_poll_init(loop, &st->poll, st->rfd);
    st->poll.data = st;
    o->handles++;
    uv_poll_start(&st->poll, UV_READABLE | UV_DISCONNECT, on_readable);
  }
}

static void on_poll_closed(uv_handle_t *h) {
  struct output_stream *st = h->data;
  struct output *o = st->o;
  close(st->rfd);
  st->rfd = -1;
  if (--o->handles == 0)
    free(o);
}

void output_close(struct output *o) {
  if (o == NULL)
    return;
  if (!o->started) {
    output_close_fds(o);
    free(o);
    return;
  }
  for (int i = 0; i < 2; i++) {
    struct output_stream *st = &o->st[i];
    size_t got = 0;
    while (!st->eof && got < OUTPUT_DRAIN_MAX && stream_read(st) > 0)
      got += OUTPUT_READ_MAX;
    if (!st->eof)
      stream_end(st);
    uv_close((uv_handle_t *)&st->poll, on_poll_closed);
  }
}

json_t *output_status(const struct output *o) {
  uint64_t lines = 0, cut = 0, dropped = 0;
  for (int i = 0; o && i < 2; i++) {
    lines += o->st[i].ls.lines;
    cut += o->st[i].ls.cut;
    dropped += o->st[i].ls.dropped;
  }
  return json_pack("{s:I,s:I,s:I}", "lines", (json_int_t)lines, "cut",
                   (json_int_t)cut, "dropped_bytes", (json_int_t)dropped);
}
