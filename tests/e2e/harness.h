/*
 * harness.h - end-to-end test helpers: build a config for the fixture
 * modules, write it into a fresh directory, start a real `aio run` with
 * --ready-fd (or another aio command), talk to it over loopback
 * (harness_net.c), and wait for conditions with deadlines (never
 * sleep-and-hope).
 */
#ifndef AIO_TESTS_HARNESS_H
#define AIO_TESTS_HARNESS_H

#include <stddef.h>
#include <sys/types.h>

struct aio_proc {
  pid_t pid;
  int ready_fd;   /* read end of the --ready-fd pipe */
  char dir[128];  /* the test's directory */
  char conf[192]; /* dir/aio.conf */
  char log[192];  /* dir/aio.log: the master's stderr */
  int exited;
  int status;
};

/* A fresh directory under /tmp, written into out. */
void h_tmpdir(char *out, size_t n);
/* Write text to dir/name; returns 0. */
int h_write(const char *dir, const char *name, const char *text);

/* Configs for the fixture modules, built in out (n bytes; a config that
 * does not fit fails the test). h_conf starts one: [aio] with modules
 * (space-separated) from the test modules directory, then the lines
 * aio_fmt formats. h_conf_add appends text, h_conf_server a
 * [server:name] serving protocol on 127.0.0.1:port. */
void h_conf(char *out, size_t n, const char *modules, const char *aio_fmt, ...)
    __attribute__((format(printf, 4, 5)));
void h_conf_add(char *out, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void h_conf_server(char *out, size_t n, const char *name, const char *protocol,
                   int port);

/* How to start aio, the way a test or a process manager would; every
 * field may be left out. Lists are NULL-terminated. */
struct h_opts {
  const char *dir;         /* the test's directory, made already (NULL
                              or "": a fresh one) */
  const char *const *wrap; /* run aio under this, e.g. valgrind and its
                              options (wrap[0] is looked up in PATH) */
  const char *const *env;  /* "NAME=VALUE" to add */
  const char *shell;       /* sh text run before `exec aio`, e.g.
                              "LISTEN_PID=$$ " (the pid is aio's) */
  const int *listen_fds;   /* passed to aio as fds 3, 4, ... (up to 5) */
  int nlisten;
  const char *const *extra; /* after `run --ready-fd N` */
};

/* Fill in p for the directory dir (NULL: a fresh one) and write conf_text
 * to its aio.conf; nothing is started. p is overwritten. 0 or -1. */
int h_prepare(struct aio_proc *p, const char *conf_text, const char *dir);
/* h_prepare in o->dir (o may be NULL), then start
 * `aio -c conf run --ready-fd N`, stdout and stderr to the log. p is
 * overwritten. 0, or -1 if it could not be started. */
int h_start(struct aio_proc *p, const char *conf_text, const struct h_opts *o);
/* h_start, then h_assert_ready within 15 s. */
void h_start_ready(struct aio_proc *p, const char *conf_text,
                   const struct h_opts *o);
/* Wait for readiness; if it does not come, print the log and fail the
 * test. */
void h_assert_ready(struct aio_proc *p, int timeout_ms);
/* TERM; aio must exit 0 within 15 s (the log and a failure if not). */
void h_stop_ok(struct aio_proc *p);
/* Wait for readiness. 0, or -1 after timeout_ms or if the process died. */
int h_wait_ready(struct aio_proc *p, int timeout_ms);
/* Wait for the process to exit; 0 with p->status set, or -1 on timeout. */
int h_wait_exit(struct aio_proc *p, int timeout_ms);
/* Signal and wait; SIGKILL after timeout. Returns the exit status. */
int h_stop(struct aio_proc *p, int sig, int timeout_ms);
/* p has exited (h_wait_exit) with exit status want: the log and a
 * failure if not. Closes its ready pipe. */
void h_assert_exit_status(struct aio_proc *p, int want);
/* Run aio with argv (after the binary, NULL-terminated) in dir, for
 * commands other than run; out gets its stdout and stderr. Returns the
 * exit status, or -1 if it did not exit within 60 s. */
int h_aio(const char *dir, char *out, size_t outlen, const char *const *argv);
/* The same in the background, stdout and stderr to out_path: returns the
 * pid; h_aio_wait reaps it and returns its exit status (-1 after
 * timeout_ms, when it is killed). */
pid_t h_aio_async(const char *dir, const char *out_path,
                  const char *const *argv);
int h_aio_wait(pid_t pid, int timeout_ms);

/* Does the log contain s? h_wait_log waits for it. */
int h_log_has(const struct aio_proc *p, const char *s);
int h_wait_log(const struct aio_proc *p, const char *s, int timeout_ms);
/* Count occurrences of s in the log. */
int h_log_count(const struct aio_proc *p, const char *s);
/* Print the log to stderr (on failure). */
void h_dump_log(const struct aio_proc *p);
/* The contents of path as a new string ("" when missing). */
char *h_slurp(const char *path);

/* Child pids of pid (the workers), up to max. Returns the count. */
int h_children(pid_t pid, pid_t *out, int max);
/* Wait until pid has n children (zombies too). 0 or -1. */
int h_wait_children(pid_t pid, int n, int timeout_ms);
/* The state letter of pid from /proc (R, S, Z...), or 0 if it is gone. */
char h_proc_state(pid_t pid);
/* Is pid there and not a zombie? */
int h_pid_alive(pid_t pid);
/* Wait until none of pids is alive. Returns how many still are (0: all
 * gone). */
int h_wait_gone(const pid_t *pids, int n, int timeout_ms);

/* ---- loopback (harness_net.c) ---- */

/* A free loopback port (TCP and UDP), never the same one twice in one
 * process, from below the ephemeral range (harness_net.c says why). */
int h_free_port(void);
/* A listening TCP socket on 127.0.0.1:*port (0: any free; *port is set),
 * with SO_REUSEPORT if asked. The fd, or -1. */
int h_listen_tcp(int *port, int reuseport);

/* Connect to 127.0.0.1:port or a unix socket, retrying until timeout_ms
 * (for a server that may not listen yet). fd or -1. */
int h_connect(int port, int timeout_ms);
int h_connect_unix(const char *path, int timeout_ms);
/* Send all of s. 0 or -1. */
int h_send(int fd, const char *s, size_t len);
/* Read until `until` appears in the data (NULL: until EOF), EOF or
 * timeout. Returns bytes read into buf (NUL-terminated), or -1 on error
 * before any data. */
int h_recv_until(int fd, char *buf, size_t n, const char *until,
                 int timeout_ms);
/* Read from fd until EOF: 0, or -1 on reset, data or timeout. */
int h_read_eof(int fd, int timeout_ms);

/* X(enum, name): how one exchange ended. */
#define H_RESULTS(X)                                                           \
  X(OK, "ok")                                                                  \
  X(REFUSED, "connection refused")                                             \
  X(RESET, "connection reset")                                                 \
  X(CLOSED, "closed before the answer")                                        \
  X(TIMEOUT, "timed out")                                                      \
  X(ERROR, "error")

enum h_result {
#define H_ENUM(e, s) H_##e,
  H_RESULTS(H_ENUM)
#undef H_ENUM
};

const char *h_result_name(int r);

/* One TCP connection to 127.0.0.1:port, connected once with no retry (a
 * retry would hide a refusal): send req, read until `until` appears (NULL:
 * until the server closes; the answer in buf, NUL-terminated), close.
 * Returns an enum h_result. */
int h_exchange_once(int port, const char *req, const char *until, char *buf,
                    size_t n, int timeout_ms);
/* The errno behind this thread's last h_exchange_once() that did not end
 * H_OK (0 when there was none, as for a timeout). */
int h_exchange_errno(void);
/* One UDP datagram round trip on 127.0.0.1:port (resent until answered).
 * Returns the answer (new), or NULL. */
char *h_udp_exchange(int port, const char *req, int timeout_ms);

/* Milliseconds on the monotonic clock. */
long long h_now_ms(void);

/* Under AddressSanitizer freed memory waits in its quarantine and RSS says
 * nothing about the heap: the plain build checks such figures. */
#if defined(__SANITIZE_ADDRESS__)
#define H_RSS_CHECKED 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define H_RSS_CHECKED 0
#endif
#endif
#ifndef H_RSS_CHECKED
#define H_RSS_CHECKED 1
#endif

#endif
