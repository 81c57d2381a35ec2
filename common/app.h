/*
 * app.h - the effective configuration of one generation: built-in defaults,
 * module defaults, the user's file, interpolated and typed.
 *
 * Module defaults live inside the modules, and the master runs no user code,
 * so they are gathered by a short-lived child that loads the modules, checks
 * every reference and reports back over a pipe (app_probe). A module that
 * crashes or hangs while loading kills only that child.
 */
#ifndef AIO_COMMON_APP_H
#define AIO_COMMON_APP_H

#include "config.h"
#include "diag.h"
#include "settings.h"

struct loader;

struct app {
  struct config *cfg;
  struct settings s;
  char *path; /* the user's file */
};

/* Build without loading modules (no module defaults, no symbol checks).
 * 0 or -1 with every problem in d; a->cfg is set either way when possible. */
int app_load_plain(struct app *a, const char *path, struct diag *d);
/* The full pipeline: app_load_plain, then the probe child for module
 * defaults and symbol checks, then the final build. 0 or -1. */
int app_load(struct app *a, const char *path, struct diag *d);
/* Called about once a second while app_load waits for its probe child
 * (the master sends its sd_notify WATCHDOG=1 from here). NULL: none. */
extern void (*app_wait_hook)(void);
/* app_load for `aio check`: when values are refused, still load the
 * modules (in the probe child) and check every reference that could be
 * read, so one run lists every problem. 0 or -1. */
int app_check(struct app *a, const char *path, struct diag *d);
void app_close(struct app *a);

/* The configuration this process runs (a worker's, a mapped command's, the
 * one a probe child checks), which aio_config_get() answers from on any
 * thread: set before a module's thread can exist and not changed while one
 * may read it, so reading it needs no lock. Borrowed; NULL: none. */
void app_set_process(const struct app *a);
const struct app *app_process(void);

/* For the probe child and `aio test`: load modules and check references in
 * this process (runs user code). 0 or -1. */
int app_load_in_process(struct app *a, const char *path, struct loader *l,
                        struct diag *d);

#endif
