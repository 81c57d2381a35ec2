/*
 * testing.h - the harness behind aio_test_serve(), aio_test_stop() and
 * aio_test_exchange() (worker/testing.c), the test's own loop behind
 * aio_test_run() and what aio_emit(), aio_emit_wait(), aio_signal_done(),
 * aio_event_done() and aio_call_soon() do while `aio test` runs the suites
 * (worker/testing_loop.c), and what aio_config_get() does there.
 */
#ifndef AIO_WORKER_TESTING_H
#define AIO_WORKER_TESTING_H

#include <jansson.h>
#include <stddef.h>

#include "aio.h"

struct app;
struct loader;
struct ref;
struct uv_loop_s;

/* `aio test` hands over the configuration and the loader the suites run
 * with, both borrowed until testing_detach(). 0, or -1 when a listener does
 * not resolve (logged). */
int testing_attach(struct app *app, struct loader *l);
/* Stops every test server, then forgets the configuration. */
void testing_detach(void);
/* The attached configuration (borrowed), or NULL outside `aio test`. */
const struct app *testing_app(void);
/* The resolved declaration of the configuration's listener i, or NULL. */
const aio_decl_t *testing_listener(size_t i);
/* The symbol `text` ("module.symbol") of kind, its module loaded when the
 * configuration does not name it; ref filled (the caller closes it);
 * what names the caller in the log.
 * Borrowed, or NULL (logged). */
const aio_decl_t *testing_resolve(const char *text, struct ref *ref,
                                  aio_kind_t kind, const char *what);

/* ---- testing_loop.c ----------------------------------------------------- */

/* Called by testing_attach()/testing_detach(): the test's thread is the
 * caller's (and, in the child Check forks for a test, its copy). */
void testing_loop_attach(void);
void testing_loop_detach(void);
/* The test's loop, made on first use in the test's thread (which then
 * runs as its worker: aio_loop(), aio_call_soon() and the async
 * completions reach it); NULL outside `aio test` or on another thread. */
struct uv_loop_s *testing_loop(void);
/* aio_emit() in a test: run the listeners the configuration attaches to
 * `signal` at once, in the calling thread, with `data` after the same JSON
 * round trip the bus would give it (not stolen). An async listener that
 * goes on holds the rest until its aio_signal_done(), as in a worker. 0;
 * -EINVAL outside `aio test`; -EMSGSIZE when data is too large for the
 * bus; -ELOOP when listeners emit into each other too deep. */
int testing_emit(const char *signal, json_t *data);
/* aio_emit_wait() in a test: the listeners run on the test's loop. */
int testing_emit_wait(const char *signal, json_t *data, aio_emit_done_fn *cb,
                      void *arg);
/* aio_signal_done() and aio_event_done() under `aio test`. */
int testing_signal_done(const aio_signal_t *signal, int status);
int testing_event_done(aio_event_t *event, int status, const json_t *result);

#endif
