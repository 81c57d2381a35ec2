/*
 * ops_util.h - helpers for the operations suites (test_ops_*.c): run the
 * control commands, talk raw to the control socket, and read what /proc
 * says about a process. (Starting aio the way a process manager does is
 * h_start's struct h_opts.)
 */
#ifndef AIO_TESTS_OPS_UTIL_H
#define AIO_TESTS_OPS_UTIL_H

#include <jansson.h>
#include <stddef.h>
#include <sys/types.h>

#include "harness.h"

/* The fixture module's two builds (tests/modules/opsmod.c). */
#define OPS_MODULE_V1 AIO_TEST_MODULES "/opsmod.so"
#define OPS_MODULE_V2 AIO_TEST_MODULES "/v2/opsmod.so"

/* Run `aio -c p->conf ARGS...` in p->dir (NULL-terminated); out gets
 * stdout and stderr. Returns the exit status. */
int ops_aio(const struct aio_proc *p, char *out, size_t n, ...)
    __attribute__((sentinel));

/* ops_aio, whose exit status must be want (the test fails with the
 * output if not). */
void ops_expect(const struct aio_proc *p, int want, char *out, size_t n, ...)
    __attribute__((sentinel));

/* ops_aio in the background, stdout and stderr to cmd_out: returns the
 * pid for h_aio_wait. */
pid_t ops_aio_async(const struct aio_proc *p, const char *cmd_out, ...)
    __attribute__((sentinel));

/* The integer member key of o (the test fails unless there is one). */
json_int_t ops_int(const json_t *o, const char *key);

/* `aio status --json` parsed; new, or NULL (the test fails). */
json_t *ops_status(const struct aio_proc *p);

/* Wait until the workers report n open connections in all (status, as of
 * their heartbeats). 0 or -1. */
int ops_wait_connections(const struct aio_proc *p, long long n, int timeout_ms);

/* Rewrite p->conf with text (the next reload reads it). */
void ops_rewrite(const struct aio_proc *p, const char *text);

/* Connect to the unix socket path, send len bytes of req, read one reply
 * line (or until EOF) into buf. Returns the bytes read, or -1 when the
 * connection failed before anything arrived. */
int ops_raw_request(const char *path, const char *req, size_t len, char *buf,
                    size_t n, int timeout_ms);

/* The value of field ("Cpus_allowed_list") in /proc/pid/status, blanks
 * and newline taken off, into out. 0, or -1 when there is none. */
int ops_proc_field(pid_t pid, const char *field, char *out, size_t n);
/* Field "Uid:" / "Gid:" (the real id), "VmRSS" (kB)... of /proc/pid/status
 * as a number, or -1. */
long ops_proc_id(pid_t pid, const char *field);
/* TCP sockets in LISTEN state on 127.0.0.1/any:port, from /proc/net/tcp. */
int ops_listeners(int port);

#endif
