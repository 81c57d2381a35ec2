/*
 * loader.h - find, dlopen and check plugin modules. A `module.symbol`
 * reference resolves only to a symbol declared with the AIO_* macro of the
 * kind the config needs, for this API's major version and a minor no newer
 * than this aio's; anything else is refused with the config file, line,
 * module and symbol named.
 */
#ifndef AIO_COMMON_LOADER_H
#define AIO_COMMON_LOADER_H

#include "aio.h"
#include "diag.h"
#include "settings.h"

struct loader_module {
  char *name;
  char *path;   /* NULL for the built-in module */
  void *handle; /* dlopen handle, NULL for the built-in module */
  /* This aio's whole aio_module_t: a copy of the module's, whose members
   * past what its (older) aio.h had are NULL. */
  const aio_module_t *def;
  int initialised;
};

/* A protocol declaration as this aio sees it: the module's record, with
 * u.protocol pointing at a whole aio_protocol_t copied from the module's
 * (members its older aio.h did not have are NULL). */
struct loader_resolved {
  struct loader_resolved *next;
  const aio_decl_t *orig;
  aio_decl_t decl;
  aio_protocol_t protocol;
};

struct loader {
  struct loader_module *mods;
  size_t n, cap;
  struct loader_resolved *resolved;
};

/* The built-in `aio` module (worker/builtin.c), and its tests
 * (worker/builtin_tests.c; `aio test aio`). */
extern const aio_decl_t *const builtin_decls[];
struct Suite *builtin_tests(void);

/* Returns new (loader_free), or NULL on out of memory. */
struct loader *loader_new(void);
/* dlclose everything (after fini of what was initialised). */
void loader_free(struct loader *l);

/* Load every module in s->modules and every module a reference names,
 * built-in first. Problems (missing file, dlopen error, no AIO_MODULE, wrong
 * API version) go to d. 0 or -1. */
int loader_load_all(struct loader *l, const struct settings *s, struct diag *d);
/* Load one module by name. Returns it (borrowed) or NULL. */
struct loader_module *loader_load(struct loader *l, const struct settings *s,
                                  const char *name, const char *file, int line,
                                  struct diag *d);
struct loader_module *loader_find_module(const struct loader *l,
                                         const char *name);

/* The declaration `ref` names, if it is of `kind`. Borrowed; NULL with a
 * message in d. */
const aio_decl_t *loader_resolve(struct loader *l, const struct ref *ref,
                                 aio_kind_t kind, struct diag *d);
/* Resolve every reference in s (servers, schedules, listeners, commands),
 * after loader_load_all, and report each that does not resolve. A
 * reference into a module that did not load (or that did not parse) is
 * not reported again, but still fails the check. 0 or -1. */
int loader_check(struct loader *l, const struct settings *s, struct diag *d);

/* Run each module's check hook (aio_module_t.check) against a's final
 * configuration; every problem it reports goes to d. 0 or -1. */
struct app;
int loader_run_checks(struct loader *l, const struct app *a, struct diag *d);

/* The loader of the modules this process runs, for aio_modules(): set by
 * the worker, `aio test` and a mapped command. Borrowed; NULL: none. */
void loader_set_process(struct loader *l);
struct loader *loader_process(void);

/* Call each module's init (in load order); 0, or -1 naming the module. */
int loader_init(struct loader *l, struct diag *d);

const char *loader_kind_name(aio_kind_t kind);

#endif
