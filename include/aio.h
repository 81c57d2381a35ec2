/*
 * aio.h - the one public header for aio plugin authors.
 *
 * A module is a shared object that declares itself once with AIO_MODULE()
 * and declares every symbol the configuration may name with the macro of its
 * kind: AIO_PROTOCOL, AIO_FACTORY, AIO_LISTENER (or AIO_LISTENER_ASYNC),
 * AIO_SCHEDULER, AIO_COMMAND.
 * Each declaration records the kind and the API version beside the symbol,
 * so the loader refuses a wrong or stale symbol instead of calling it.
 *
 * This header stands alone under `cc -std=c11 -Wall -Wextra -pedantic`: it
 * does not include uv.h (which needs POSIX feature macros); aio_loop() and
 * aio_server_t.loop use the forward-declared struct uv_loop_s, which is the
 * same type as uv_loop_t for a module that includes uv.h itself.
 *
 * It also compiles as C++17 (g++ -std=c++17 -Wall -Wextra): every macro
 * below has a C++ branch, and a module written in C++ loads like one in C
 * (tests/install_module.sh builds and serves one). In C++ the designated
 * initializers of AIO_MODULE and AIO_PROTOCOL must come in the order of
 * the struct's members, as C++20 requires.
 *
 * Threads. A worker runs all plugin code (init, protocol callbacks,
 * listeners, schedulers, factories) on one thread, its loop's. A module
 * may start threads of its own (or use uv_queue_work); from those:
 *   - safe from any thread of a worker: aio_call_soon(), aio_emit() and
 *     aio_emit_new() (handed to the loop, see there), aio_event_done(),
 *     aio_signal_done(),
 *     aio_config_get() and the other aio_config_* readers, aio_modules(),
 *     aio_log();
 *   - only on the loop thread: everything that takes an aio_conn_t or an
 *     aio_server_t, and aio_loop() (NULL elsewhere) and libuv itself, which
 *     is not thread-safe: from a thread, aio_call_soon() a function that
 *     does the work on the loop.
 */
#ifndef AIO_H
#define AIO_H

#include <jansson.h>
#include <stddef.h>

#ifdef __cplusplus
/* The type check of AIO_FACTORY and friends, without <type_traits> (a
 * template cannot have C linkage, so it stands before extern "C"). */
template <class A, class B> struct aio__same_type {
  static const bool value = false;
};
template <class A> struct aio__same_type<A, A> {
  static const bool value = true;
};
extern "C" {
#endif

/* The plugin API's version, major.minor. A module built against major M
 * and minor N loads in any aio of major M and minor >= N: a minor only adds
 * (functions, and members at the end of aio_module_t and aio_protocol_t,
 * which read as NULL for a module whose aio.h did not have them). Another
 * major, or a newer minor than this aio's, is refused with a message that
 * says which. 2.0 gave every declaration the size of its struct; 2.1 added
 * aio_module_t.check, the typed config getters and iterators,
 * aio_modules(), the connection timeouts and reading controls,
 * factories that serve (aio_server_serve, aio_server_hold/release,
 * aio_conn_server_data), aio_call_soon(), async schedulers (AIO_PENDING,
 * aio_event_done()) and the members of aio_event_t after run, and
 * AIO_LISTENER_ASYNC with aio_signal_done(); 2.2 added
 * aio_conn_request_done(). */
#define AIO_API_MAJOR 2
#define AIO_API_MINOR 2
#define AIO_API_VERSION ((AIO_API_MAJOR << 16) | AIO_API_MINOR)
#define AIO_VERSION "0.1.0"

/* "AIO\1": every declaration record starts with this, so the loader can tell
 * a declaration from an unrelated symbol that happens to share its name. */
#define AIO_DECL_MAGIC 0x41494f01u

#if defined(__GNUC__)
#define AIO_EXPORT __attribute__((visibility("default")))
#define AIO_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define AIO_EXPORT
#define AIO_PRINTF(f, a)
#endif

struct uv_loop_s;
struct sockaddr;
struct Suite; /* Check's Suite, for AIO_MODULE(.tests = ...) */

/* ---- connections and protocols ---------------------------------------- */

/* One accepted stream connection (TCP or unix socket), or the endpoint of a
 * UDP server. Owned by the runner: valid from connection_made until
 * connection_lost returns. */
typedef struct aio_conn_s aio_conn_t;

typedef struct aio_protocol_s {
  /* A stream connection was accepted (or the UDP endpoint opened). */
  void (*connection_made)(aio_conn_t *conn);
  /* Bytes arrived. `data` is borrowed for the duration of the call. */
  void (*data_received)(aio_conn_t *conn, const char *data, size_t len);
  /* The peer shut down its writing side. The connection is closed after
   * this returns unless the callback called aio_write() and wants to finish
   * (aio_close() is then the protocol's job). */
  void (*eof_received)(aio_conn_t *conn);
  /* The connection is gone; `status` is 0 or a negative errno. Free the
   * per-connection data here. */
  void (*connection_lost)(aio_conn_t *conn, int status);
  /* UDP: one datagram from `addr` (borrowed for the call). */
  void (*datagram_received)(aio_conn_t *conn, const char *data, size_t len,
                            const struct sockaddr *addr);
  /* Everything queued has been written (called only after aio_write() had
   * to queue): the moment to resume a transfer that got -ENOBUFS, or
   * reading paused with aio_conn_pause_reading(). */
  void (*write_drained)(aio_conn_t *conn);
} aio_protocol_t;

/* Queue `len` bytes for the peer (copied; never blocks). Returns 0, or
 * -ENOTCONN when the connection is closing, or -ENOBUFS, sending none of
 * it, when it would take what is queued past [aio] write_limit (the peer is
 * not reading; see docs/plugins.md). */
AIO_EXPORT int aio_write(aio_conn_t *conn, const void *data, size_t len);
/* Close after the queued writes have been flushed. Idempotent. */
AIO_EXPORT void aio_close(aio_conn_t *conn);
/* Send one datagram to `addr` on a UDP endpoint. 0 or a negative errno. */
AIO_EXPORT int aio_sendto(aio_conn_t *conn, const void *data, size_t len,
                          const struct sockaddr *addr);
AIO_EXPORT void aio_conn_set_data(aio_conn_t *conn, void *data);
AIO_EXPORT void *aio_conn_get_data(const aio_conn_t *conn);
/* The `[server:NAME]` this connection belongs to (borrowed). */
AIO_EXPORT const char *aio_conn_server(const aio_conn_t *conn);
/* (API 2.1) The data the factory gave aio_server_serve() for this
 * connection's server (NULL for a configured protocol): per-server state
 * of a protocol that one factory serves on several servers. */
AIO_EXPORT void *aio_conn_server_data(const aio_conn_t *conn);
/* Non-zero once the worker is draining (reload, shutdown): a protocol with
 * keep-alive should finish the request in hand and then close. conn may be
 * NULL (a factory's own handles, see aio_server_hold). */
AIO_EXPORT int aio_conn_draining(const aio_conn_t *conn);
/* (API 2.2) One request on conn is answered. A protocol that calls it
 * counts requests for [aio] max_requests (a worker is recycled after that
 * many) and for aio_requests_total in the metrics; a server whose protocol
 * never calls it counts each connection as one request. */
AIO_EXPORT void aio_conn_request_done(aio_conn_t *conn);

/* ---- timeouts (stream connections; docs/plugins.md) -------------------- */

/* The timeouts a stream connection has from the start, from its server's
 * [server:NAME] idle_timeout and send_timeout, and that a protocol may
 * change for one connection with aio_conn_set_timeout(). */
typedef enum aio_timeout {
  /* Not a byte read, and not a byte written, for that long: the
   * connection is closed after what is queued (connection_lost gets
   * -ETIMEDOUT). The keep-alive time of a request/response protocol. */
  AIO_TIMEOUT_IDLE = 1,
  /* Output waits and the peer takes none of it for that long: the
   * connection is reset and the output dropped (-ETIMEDOUT). */
  AIO_TIMEOUT_SEND
} aio_timeout_t;

/* Set one timeout of conn, in seconds (fractions allowed, 0: off). 0, or
 * -EINVAL (a UDP endpoint, an unknown kind, seconds negative, not finite
 * or over a year), or -ENOTCONN when the connection is closing. */
AIO_EXPORT int aio_conn_set_timeout(aio_conn_t *conn, aio_timeout_t which,
                                    double seconds);

/* What runs when a connection's deadline passes. */
typedef void aio_timeout_fn(aio_conn_t *conn);
/* A deadline `seconds` from now, which traffic does not move: when it
 * passes, fn(conn) runs once (fn NULL: the connection is closed with
 * -ETIMEDOUT). A new call replaces the deadline; 0 clears it. For "the
 * request must have arrived by then" (aio.hello's header_timeout).
 * Returns as aio_conn_set_timeout(). */
AIO_EXPORT int aio_conn_set_deadline(aio_conn_t *conn, double seconds,
                                     aio_timeout_fn *fn);

/* ---- flow control (docs/plugins.md) ------------------------------------ */

/* Bytes that aio_write() queued on conn and the peer has not taken yet. */
AIO_EXPORT size_t aio_conn_queued(const aio_conn_t *conn);
/* How many more bytes aio_write() takes now: [aio] write_limit minus
 * aio_conn_queued(). */
AIO_EXPORT size_t aio_conn_write_room(const aio_conn_t *conn);
/* No data_received (nor eof_received) for conn until
 * aio_conn_resume_reading(): for a protocol that has more to answer than
 * it wants to queue (resume it from write_drained). The runner's own pause
 * for a peer that does not read is separate and goes on meanwhile. */
AIO_EXPORT void aio_conn_pause_reading(aio_conn_t *conn);
AIO_EXPORT void aio_conn_resume_reading(aio_conn_t *conn);

/* ---- servers with a factory ------------------------------------------- */

typedef struct aio_server_s {
  const char *name;    /* NAME of [server:NAME] */
  const char *address; /* as configured, "" for all interfaces */
  int port;            /* 0 for a unix socket */
  const char *path;    /* unix socket path, or NULL */
  int fd;              /* the listening (or UDP) socket the runner prepared */
  int udp;             /* non-zero for a datagram socket */
  struct uv_loop_s *loop; /* the worker's loop */
} aio_server_t;

/* A factory is called once per worker for its [server:NAME], on the loop
 * thread, before the worker is ready. It either hands the prepared socket
 * to a protocol with aio_server_serve(), or takes it over itself (e.g.
 * uv_tcp_open + uv_listen). Return 0, or non-zero to fail the worker's
 * start. `server` stays valid until the worker exits. */
typedef int aio_factory_fn(aio_server_t *server);

/* (API 2.1) Serve the prepared socket with `protocol` (borrowed: it must
 * outlive the worker, e.g. a static aio_protocol_t or one the factory
 * keeps), `data` given to every connection by aio_conn_server_data() (the
 * factory's, not freed by aio). The connections are the runner's own, as
 * for a configured protocol: [aio] max_connections, the server's
 * idle_timeout and send_timeout, counted in `aio status`, drained on
 * reload and stop. Call it from the factory (or later on the loop
 * thread), at most once per server. 0, or -EINVAL (not a factory's
 * server of this worker, protocol NULL, a UDP server and no
 * datagram_received), -EALREADY (served already), -ESHUTDOWN (the worker
 * is draining), or a libuv error (logged). */
AIO_EXPORT int aio_server_serve(aio_server_t *server,
                                const aio_protocol_t *protocol, void *data);
/* (API 2.1) A factory that keeps libuv handles of its own holds the worker
 * while they are open: a drain (reload, `aio stop`) does not finish while
 * holds outnumber releases, so close them when aio_conn_draining(NULL)
 * says so, then release. The master's graceful_timeout still bounds the
 * wait: past it the worker is killed. Loop thread only. 0, or -EINVAL (not
 * a factory's server of this worker; a release without a hold). */
AIO_EXPORT int aio_server_hold(aio_server_t *server);
AIO_EXPORT int aio_server_release(aio_server_t *server);

/* ---- signals ----------------------------------------------------------- */

typedef struct aio_signal_s {
  const char *name; /* the signal name */
  json_t *data;     /* borrowed for the call; json_incref to keep it */
} aio_signal_t;

typedef void aio_listener_fn(const aio_signal_t *signal);

/* (API 2.1) A listener that may finish later (AIO_LISTENER_ASYNC): returns
 * 0 when its work is done, another value when it failed (logged), or
 * AIO_PENDING and calls aio_signal_done() when the work ends. Until then
 * the delivery is in hand: it is acknowledged to the master only at
 * aio_signal_done(), so a worker that dies meanwhile does not have it
 * redelivered (at most once, docs/bus.md), and the worker's later signals
 * (deliveries and own emits) wait behind it, in order, while its loop
 * goes on serving connections and timers. signal, its name and its data
 * stay valid until aio_signal_done(). */
typedef int aio_listener_async_fn(const aio_signal_t *signal);

/* (API 2.1) Finish the delivery an async listener returned AIO_PENDING
 * for: status 0, or a failure that is logged. Safe from any thread of a
 * worker (handed to the loop as aio_call_soon() does). Returns 0, -EINVAL
 * (signal NULL), -EALREADY on the loop thread for a signal not pending
 * (finished already: ignored), -ENOTSUP outside a worker (`aio test` runs
 * listeners where they are emitted and does not wait for one), or
 * aio_call_soon()'s errors from another thread. */
AIO_EXPORT int aio_signal_done(const aio_signal_t *signal, int status);

/* Emit a signal to its listeners. Does not steal `data` (NULL is JSON
 * null): the listeners get a copy of it as it is now. On the loop thread
 * it returns 0 or a
 * negative errno (-EINVAL, -EMSGSIZE, -EPIPE, -ENOMEM; see docs/bus.md),
 * or -EAGAIN when the bus is at its bound (this worker's own signals not
 * yet run; its bus buffer, after waiting up to 100 ms for the master to
 * read; for a signal with broadcast listeners, a worker's delivery queue
 * in the master): nothing was queued and no listener runs for this call;
 * it is counted in `aio status`. -EPIPE: the master is gone.
 * Before the worker is ready (in a module's init, in a factory) an emit
 * is checked and kept, within the same bounds as this worker's own
 * signals, and emitted in order right after the worker reported ready.
 * Once-per-emit listeners run in this worker, after the current callback
 * returns, in emit order; broadcast ones through the master.
 * In a mapped command (AIO_COMMAND: `aio NAME` is a process of its own),
 * the signal goes to the running master of the same configuration over
 * its control socket, as `aio emit SIGNAL JSON` sends it, and its
 * listeners run in the workers (later: 0 says the master took it).
 * There the errors are -ENOTCONN when no master runs for the
 * configuration, -EACCES when its control socket is not served by our
 * master, -ETIMEDOUT when the master did not answer within 10 s,
 * -EMSGSIZE over the control socket's 64 KiB request, -EINVAL or -EPROTO.
 *
 * From another thread of a worker the emit is handed to the loop, like
 * aio_call_soon() (data copied now), and the return value only says
 * whether it was handed over: 0, -EINVAL (no signal name, or one over 256
 * bytes), -EAGAIN (aio_call_soon()'s queue is full), -ENOMEM or -EPIPE
 * (the worker is exiting). What the bus then says of it (-EAGAIN,
 * -EMSGSIZE) is logged on the loop, not reported to the caller. Emits of
 * one thread run in the order it made them. */
AIO_EXPORT int aio_emit(const char *signal, json_t *data);
/* The same, stealing the reference to `data` (also on error), like
 * jansson's json_object_set_new(): this worker's listeners get that very
 * value, with no copy, so it must not be changed afterwards. For data made
 * only to be emitted: aio_emit_new("order-paid", json_pack(...)). */
AIO_EXPORT int aio_emit_new(const char *signal, json_t *data);

/* ---- schedulers -------------------------------------------------------- */

typedef struct aio_event_s {
  const char *name; /* NAME of [schedule:NAME] */
  long long run;    /* 1 for the first run, 2 for the next ...; for a
                       scope = cluster schedule, the occurrence number, the
                       same on every node (docs/cluster.md) */
  /* (API 2.1) When this occurrence was due, in seconds since the epoch
   * (the same on every node for scope = cluster), and the name of the node
   * running it ([aio] node). With them a job can be idempotent: the pair
   * (name, due) names one occurrence. */
  double due;
  const char *node;
  /* (API 2.1) In `cb`: the result of the run that succeeded, as given to
   * aio_event_done() (NULL when none, or when the run returned 0).
   * Borrowed for the call (until aio_event_done for an async cb);
   * json_incref to keep. NULL in `func` and `err`. */
  json_t *result;
  /* (API 2.1) In `err`: why the run failed. status is the non-zero value
   * the scheduler returned or gave to aio_event_done(), -ETIMEDOUT past
   * the schedule's `timeout`, -EPIPE when its worker died during it;
   * error says it in words ("returned 1", "timed out after 5 s", or the
   * string result given with a failing aio_event_done()). Borrowed like
   * result. 0 and NULL in `func` and `cb`. */
  int status;
  const char *error;
} aio_event_t;

/* Return 0 on success, non-zero on failure (the schedule's `err` runs),
 * or AIO_PENDING (API 2.1) when the work goes on after the return: the run
 * then counts as running (no overlap unless `overlap = yes`) until
 * aio_event_done(), or until the schedule's `timeout` fails it. */
typedef int aio_scheduler_fn(aio_event_t *event);

/* (API 2.1) A scheduler's or async listener's "not finished yet":
 * distinct from every errno, positive or negative. */
#define AIO_PENDING 0x41494f50 /* "AIOP" */

/* (API 2.1) Finish a run whose scheduler returned AIO_PENDING (or is about
 * to: it may be called before the return). status 0 is success, and then
 * `cb` gets result (borrowed: copied, NULL for none); non-zero is failure,
 * and `err` gets status and, as error, result when it is a JSON string.
 * Safe from any thread of a worker (from another thread the completion is
 * handed to the loop, as aio_call_soon() does). event stays valid until
 * this call, also after a timeout (for the 1024 most recent timed-out runs
 * of a worker; a call for a run that timed out is ignored and logged at
 * debug). Returns 0; -EINVAL (event NULL); on the loop thread -EALREADY (the
 * run was finished already) or -ETIMEDOUT (it timed out: ignored); from
 * another thread aio_call_soon()'s errors, the run then still pending. */
AIO_EXPORT int aio_event_done(aio_event_t *event, int status,
                              const json_t *result);

/* ---- commands ---------------------------------------------------------- */

/* An extra `aio NAME ...` command mapped in [aio:commands]. argv[0] is the
 * command name. The return value is the exit status. */
typedef int aio_command_fn(int argc, char **argv);

/* ---- the runtime ------------------------------------------------------- */

/* The worker's loop, on the loop thread; NULL on any other. */
AIO_EXPORT struct uv_loop_s *aio_loop(void);

/* (API 2.1) Run fn(arg) on the worker's loop thread soon, in a later turn
 * of the loop, in call order: the way for a thread of the module's own to
 * hand work (and libuv calls) to the loop. Safe from any thread of a
 * worker, the loop's included. Returns 0, -EINVAL (fn NULL), -EAGAIN when
 * 65536 calls are already waiting (nothing is queued; counted as
 * soon_refused in `aio status`), -ENOMEM, -EPIPE when the worker is
 * exiting (calls still queued then are not made), or -ENOTSUP outside a
 * worker (the master, an AIO_COMMAND, `aio test`). On -EAGAIN or -EPIPE
 * the caller still owns arg. */
AIO_EXPORT int aio_call_soon(void (*fn)(void *arg), void *arg);
/* The interpolated value of SECTION:KEY, or NULL. Borrowed: valid until the
 * worker exits. Safe from any thread of the worker (the configuration never
 * changes under a running worker: a reload starts new workers), and in an
 * AIO_COMMAND, where the whole configuration, module defaults included, is
 * there. */
AIO_EXPORT const char *aio_config_get(const char *section, const char *key);

/* (API 2.1) Typed values of [section] key under aio's own rules, so a
 * module reads its keys the way aio reads its own: *out gets the value, or
 * dflt when the key is not set (or empty). Returns 0, or -EINVAL when the
 * value is set but does not parse (*out = dflt); that problem is reported
 * as "FILE:LINE: [section] key: ..." through aio_check_error() in a check
 * hook (so it fails the check), in the log elsewhere.
 *   int:      a whole number ("-3", "42")
 *   double:   a number ("0.25")
 *   bool:     yes/no, true/false, on/off, 1/0
 *   duration: seconds, with an optional unit ms, s, m, h, d ("250ms", "2m")
 *   size:     bytes, with an optional unit K, M, G, T (powers of 1024,
 *             "64K", "256M"). */
AIO_EXPORT int aio_config_int(const char *section, const char *key,
                              long long dflt, long long *out);
AIO_EXPORT int aio_config_double(const char *section, const char *key,
                                 double dflt, double *out);
AIO_EXPORT int aio_config_bool(const char *section, const char *key, int dflt,
                               int *out);
AIO_EXPORT int aio_config_duration(const char *section, const char *key,
                                   double dflt, double *seconds);
AIO_EXPORT int aio_config_size(const char *section, const char *key,
                               size_t dflt, size_t *bytes);

/* (API 2.1) Every section whose name starts with prefix ("job:" for each
 * [job:NAME], "" for all), in file order, then every key of one section
 * with its interpolated value. A callback that returns non-zero stops the
 * walk, and that value is returned; else 0. Names and values are borrowed
 * for the call. Section names are as aio spells them: [job/x] is "job:x". */
typedef int aio_config_section_fn(const char *section, void *arg);
typedef int aio_config_key_fn(const char *key, const char *value, void *arg);
AIO_EXPORT int aio_config_sections(const char *prefix,
                                   aio_config_section_fn *fn, void *arg);
AIO_EXPORT int aio_config_keys(const char *section, aio_config_key_fn *fn,
                               void *arg);

/* (API 2.1) The modules this process loaded, built-in "aio" first, in load
 * order, as the Python runner's aio.app.modules: name (as [aio] modules
 * names it), its AIO_MODULE description (or ""), and the file it came from
 * ("" for the built-in one). Stops and returns a non-zero callback value;
 * else 0. Strings are borrowed for the call. */
typedef int aio_module_fn(const char *name, const char *description,
                          const char *file, void *arg);
AIO_EXPORT int aio_modules(aio_module_fn *fn, void *arg);

enum { AIO_LOG_DEBUG = 0, AIO_LOG_INFO, AIO_LOG_WARN, AIO_LOG_ERROR };
AIO_EXPORT void aio_log(int level, const char *fmt, ...) AIO_PRINTF(2, 3);

/* ---- testing helpers (for AIO_MODULE(.tests = ...)) --------------------- */

/* Serve the AIO_PROTOCOL named `module.symbol` (e.g. "aio.echo") on an
 * ephemeral 127.0.0.1 TCP port in a background thread of the test process,
 * with an event loop of its own (aio_loop() there is that loop). Call it in
 * a test or a checked fixture: `aio test` runs each test in a child process,
 * and a server started in an unchecked fixture would not be in it. Returns
 * the port, or -EINVAL (not a module.symbol), -ENOENT (no such protocol;
 * logged), -ENOTSUP (not under `aio test`) or another negative errno.
 * While `aio test` runs, aio_config_get() answers from its configuration
 * and aio_emit() runs the configured listeners of the signal at once. */
AIO_EXPORT int aio_test_serve(const char *protocol);
/* The same on an ephemeral 127.0.0.1 UDP port, for a protocol with
 * datagram_received. Returns the port or a negative errno as above. */
AIO_EXPORT int aio_test_serve_udp(const char *protocol);
/* Stop every server aio_test_serve() and aio_test_serve_udp() started: each
 * open connection gets its connection_lost, the thread is joined. Also done at
 * exit. */
AIO_EXPORT void aio_test_stop(void);
/* Connect to 127.0.0.1:port, send `request`, read until `expect_len` bytes
 * arrived (0: until the peer closes) or the peer closed or `timeout_ms`
 * passed. Returns a new NUL-terminated string (free it) of what arrived,
 * possibly empty, or NULL when it could not connect or send. */
AIO_EXPORT char *aio_test_exchange(int port, const char *request,
                                   size_t expect_len, int timeout_ms);
/* Send `request` (NULL: empty) as one datagram to 127.0.0.1:port and wait
 * up to `timeout_ms` for one datagram back. Returns a new NUL-terminated
 * string (free it) of the answer, empty when none came in time, or NULL
 * when it could not send or nothing listens on the port. */
AIO_EXPORT char *aio_test_datagram(int port, const char *request,
                                   int timeout_ms);

/* ---- declarations ------------------------------------------------------ */

typedef enum aio_kind {
  AIO_KIND_MODULE = 1,
  AIO_KIND_PROTOCOL,
  AIO_KIND_FACTORY,
  AIO_KIND_LISTENER,
  AIO_KIND_SCHEDULER,
  AIO_KIND_COMMAND,
  AIO_KIND_LISTENER_ASYNC /* (API 2.1) */
} aio_kind_t;

typedef struct aio_module_s {
  const char *name;
  const char *description;
  /* Called after the module is loaded in a worker (or in `aio test`); non-zero
   * fails the start. */
  int (*init)(void);
  void (*fini)(void);
  /* INI text layered under the user's file (above the built-in defaults). */
  const char *defaults;
  /* Check suite for `aio test`: the Check library's (check.h) Suite, so a
   * module with tests links Check; one without leaves this NULL. */
  struct Suite *(*tests)(void);
  /* (API 2.1) Checks the module's own configuration, in `aio check`, at the
   * start and at every reload, with the configuration final (module
   * defaults included): report each problem with aio_check_error() and
   * return how many there were. A problem fails the check, the start or the
   * reload like one of aio's own. Runs in a short-lived child before init,
   * so it must only read (aio_config_get) and start nothing. */
  int (*check)(void);
} aio_module_t;

/* In a module's check hook: one problem with [section] key, reported as
 * "FILE:LINE: [section] key: message" at the line that sets the key (the
 * section's line when key is NULL or not set; the file alone when the
 * section is not there either). Outside a check hook it is logged as an
 * error instead. */
AIO_EXPORT void aio_check_error(const char *section, const char *key,
                                const char *fmt, ...) AIO_PRINTF(3, 4);

typedef struct aio_decl_s {
  unsigned magic;       /* AIO_DECL_MAGIC */
  unsigned api_version; /* AIO_API_VERSION the module was built with */
  aio_kind_t kind;
  const char *symbol; /* the name the config uses after the module's dot */
  union {
    const aio_module_t *module;
    const aio_protocol_t *protocol;
    aio_factory_fn *factory;
    aio_listener_fn *listener;
    aio_scheduler_fn *scheduler;
    aio_command_fn *command;
    aio_listener_async_fn *listener_async; /* (API 2.1) */
  } u;
  /* sizeof the struct u points to (aio_module_t, aio_protocol_t) in the
   * aio.h the module was built with; 0 for a function. */
  unsigned size;
} aio_decl_t;

#define AIO__DECL_NAME(sym) aio__decl_##sym

/* A wrong function type is a compile error, not a warning. */
#ifdef __cplusplus
#define AIO__CHECK_FN(fn, type, what)                                          \
  static_assert(aio__same_type<decltype(&(fn)), type *>::value,                \
                #fn " must have type " #type " to be declared " what)
#else
#define AIO__CHECK_FN(fn, type, what)                                          \
  _Static_assert(_Generic(&(fn), type * : 1, default : 0),                     \
                 #fn " must have type " #type " to be declared " what)
#endif

#ifdef __cplusplus
/* C++17 has no designated initializer for a union's other members: the
 * record is filled by one small function per kind (run when the module is
 * loaded, before the loader reads it). */
#define AIO__MAKE_DECL(member, type)                                           \
  static inline aio_decl_t aio__decl_##member(                                 \
      aio_kind_t kind, const char *symbol, type value, unsigned size) {        \
    aio_decl_t d = {AIO_DECL_MAGIC, AIO_API_VERSION, kind, symbol, {}, size};  \
    d.u.member = value;                                                        \
    return d;                                                                  \
  }
AIO__MAKE_DECL(module, const aio_module_t *)
AIO__MAKE_DECL(protocol, const aio_protocol_t *)
AIO__MAKE_DECL(factory, aio_factory_fn *)
AIO__MAKE_DECL(listener, aio_listener_fn *)
AIO__MAKE_DECL(scheduler, aio_scheduler_fn *)
AIO__MAKE_DECL(command, aio_command_fn *)
AIO__MAKE_DECL(listener_async, aio_listener_async_fn *)
#define AIO__DECL(sym, kindv, member, value, size)                             \
  AIO_EXPORT extern const aio_decl_t AIO__DECL_NAME(sym);                      \
  const aio_decl_t AIO__DECL_NAME(sym) =                                       \
      aio__decl_##member(kindv, #sym, value, size)
#else
#define AIO__DECL(sym, kindv, member, value, size)                             \
  AIO_EXPORT extern const aio_decl_t AIO__DECL_NAME(sym);                      \
  const aio_decl_t AIO__DECL_NAME(sym) = {                                     \
      AIO_DECL_MAGIC, AIO_API_VERSION, kindv, #sym, {.member = value}, size}
#endif

#if defined(__GNUC__) && defined(__cplusplus)
/* g++ -Wextra warns of every member a designated initializer leaves out,
 * which is the point of naming only the callbacks one has. */
#define AIO__STRICT_BEGIN                                                      \
  _Pragma("GCC diagnostic push")                                               \
      _Pragma("GCC diagnostic ignored \"-Wmissing-field-initializers\"")
#define AIO__STRICT_END _Pragma("GCC diagnostic pop")
#elif defined(__GNUC__)
#define AIO__STRICT_BEGIN                                                      \
  _Pragma("GCC diagnostic push")                                               \
      _Pragma("GCC diagnostic error \"-Wincompatible-pointer-types\"")
#define AIO__STRICT_END _Pragma("GCC diagnostic pop")
#else
#define AIO__STRICT_BEGIN
#define AIO__STRICT_END
#endif

/* AIO_MODULE(.name = "foo", .init = ..., .defaults = "...", .tests = ...) */
#define AIO_MODULE(...)                                                        \
  AIO__STRICT_BEGIN                                                            \
  static const aio_module_t aio__module_def = {__VA_ARGS__};                   \
  AIO__STRICT_END                                                              \
  AIO__DECL(aio_module, AIO_KIND_MODULE, module, &aio__module_def,             \
            (unsigned)sizeof(aio_module_t))

/* AIO_PROTOCOL(sym, .connection_made = ..., .data_received = ...) defines the
 * protocol `sym`; the config names it `module.sym`. */
#define AIO_PROTOCOL(sym, ...)                                                 \
  AIO__STRICT_BEGIN                                                            \
  static const aio_protocol_t sym = {__VA_ARGS__};                             \
  AIO__STRICT_END                                                              \
  AIO__DECL(sym, AIO_KIND_PROTOCOL, protocol, &sym,                            \
            (unsigned)sizeof(aio_protocol_t))

/* Each of these follows the definition of a function of the right type. */
#define AIO_FACTORY(fn)                                                        \
  AIO__CHECK_FN(fn, aio_factory_fn, "AIO_FACTORY");                            \
  AIO__DECL(fn, AIO_KIND_FACTORY, factory, fn, 0)
#define AIO_LISTENER(fn)                                                       \
  AIO__CHECK_FN(fn, aio_listener_fn, "AIO_LISTENER");                          \
  AIO__DECL(fn, AIO_KIND_LISTENER, listener, fn, 0)
/* (API 2.1) The config names it like any listener. */
#define AIO_LISTENER_ASYNC(fn)                                                 \
  AIO__CHECK_FN(fn, aio_listener_async_fn, "AIO_LISTENER_ASYNC");              \
  AIO__DECL(fn, AIO_KIND_LISTENER_ASYNC, listener_async, fn, 0)
#define AIO_SCHEDULER(fn)                                                      \
  AIO__CHECK_FN(fn, aio_scheduler_fn, "AIO_SCHEDULER");                        \
  AIO__DECL(fn, AIO_KIND_SCHEDULER, scheduler, fn, 0)
#define AIO_COMMAND(fn)                                                        \
  AIO__CHECK_FN(fn, aio_command_fn, "AIO_COMMAND");                            \
  AIO__DECL(fn, AIO_KIND_COMMAND, command, fn, 0)

#ifdef __cplusplus
}
#endif
#endif /* AIO_H */
