/*
 * loader_hooks.c - running what loaded modules declare for the process
 * (see loader.h): their check hooks (`aio check`, before a reload), with
 * aio_check_error() saying where a problem is, and their init hooks; and
 * the loader the running process uses. Loading a module and resolving
 * its symbols is loader.c's.
 */
#define _GNU_SOURCE
#include "loader.h"

#include <stdarg.h>
#include <stdio.h>

#include "app.h"
#include "config.h"
#include "log.h"

/* The check hook in progress: where its problems go. Hooks run one at a
 * time on the thread that runs loader_run_checks. */
static struct {
  const struct app *app;
  struct diag *d;
  const char *module;
  int reported;
} checking;

void aio_check_error(const char *section, const char *key, const char *fmt,
                     ...) {
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt ? fmt : "", ap);
  va_end(ap);
  if (section == NULL)
    section = "";
  const struct app *a = checking.d ? checking.app : app_process();
  const struct config *cfg = a ? a->cfg : NULL;
  const struct config_section *sec = cfg ? config_section(cfg, section) : NULL;
  const struct config_entry *e =
      sec && key ? config_entry(cfg, section, key) : NULL;
  const char *file = e ? e->file : sec ? sec->file : a ? a->path : NULL;
  int line = e ? e->line : sec ? sec->line : 0;
  if (e == NULL && file && file[0] == '<') {
    /* The section was opened by a module's defaults: a key that is missing
     * belongs in the user's file, at no line of it in particular. */
    file = a->path;
    line = 0;
  }
  if (checking.d == NULL) {
    char where[600] = "";
    if (file && line > 0)
      snprintf(where, sizeof(where), "%s:%d: ", file, line);
    else if (file)
      snprintf(where, sizeof(where), "%s: ", file);
    log_error("%s[%s]%s%s: %s", where, section, key ? " " : "", key ? key : "",
              msg);
    return;
  }
  diag_add(checking.d, file, line, "[%s]%s%s: %s (module %s)", section,
           key ? " " : "", key ? key : "", msg, checking.module);
  checking.reported++;
}

static struct loader *process_loader;

void loader_set_process(struct loader *l) { process_loader = l; }

struct loader *loader_process(void) {
  return process_loader;
}

int loader_run_checks(struct loader *l, const struct app *a, struct diag *d) {
  size_t before = d->n;
  const struct app *was = app_process();
  struct loader *was_l = loader_process();
  app_set_process(a); /* the hook reads with aio_config_get() */
  loader_set_process(l);
  for (size_t i = 0; i < l->n; i++) {
    const struct loader_module *m = &l->mods[i];
    if (m->def == NULL || m->def->check == NULL)
      continue;
    checking.app = a;
    checking.d = d;
    checking.module = m->name;
    checking.reported = 0;
    int n = m->def->check();
    if (n > 0 && checking.reported == 0)
      diag_add(d, a->path, 0,
               "module '%s': its check found %d problem%s it did not name",
               m->name, n, n == 1 ? "" : "s");
    checking.d = NULL;
  }
  app_set_process(was);
  loader_set_process(was_l);
  return d->n == before ? 0 : -1;
}

int loader_init(struct loader *l, struct diag *d) {
  for (size_t i = 0; i < l->n; i++) {
    struct loader_module *m = &l->mods[i];
    if (m->initialised)
      continue;
    if (m->def->init && m->def->init() != 0) {
      diag_add(d, m->path, 0, "module '%s': init failed", m->name);
      return -1;
    }
    m->initialised = 1;
  }
  return 0;
}
