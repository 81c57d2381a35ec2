/*
 * loader.c - module resolution and declaration checks (see loader.h); the
 * modules' own hooks (check, init) run in loader_hooks.c.
 * A name `foo` is foo.so in each [aio] module_path directory (relative to
 * the config file's directory), then in the install directory: the
 * modules directory of the prefix the running aio binary was installed in
 * (BINDIR/../LIBDIR/aio/modules, from /proc/self/exe), so an install to any
 * prefix, or a moved one, finds its own modules and never another's.
 */
#define _GNU_SOURCE
#include "loader.h"

#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "app.h"
#include "config.h"
#include "util.h"

#ifndef AIO_BIN_TO_MODULES
#define AIO_BIN_TO_MODULES "../lib/aio/modules"
#endif

#define BUILTIN_NAME "aio"

static const aio_module_t builtin_module = {
    .name = BUILTIN_NAME,
    .description = "built-in protocols: echo (TCP/UDP), hello (HTTP/1.1)",
    .tests = builtin_tests,
};

const char *loader_kind_name(aio_kind_t kind) {
  switch (kind) {
  case AIO_KIND_MODULE:
    return "AIO_MODULE";
  case AIO_KIND_PROTOCOL:
    return "AIO_PROTOCOL";
  case AIO_KIND_FACTORY:
    return "AIO_FACTORY";
  case AIO_KIND_LISTENER:
    return "AIO_LISTENER";
  case AIO_KIND_SCHEDULER:
    return "AIO_SCHEDULER";
  case AIO_KIND_COMMAND:
    return "AIO_COMMAND";
  case AIO_KIND_LISTENER_ASYNC:
    return "AIO_LISTENER_ASYNC";
  }
  return "an unknown kind";
}

/* The sizes of the structs a module hands over, in the first aio.h that
 * recorded sizes (API 2.0): a declaration may be that small, and no
 * larger than this aio's own. */
#define MODULE_SIZE_2_0 offsetof(aio_module_t, check)
#define PROTOCOL_SIZE_2_0 sizeof(aio_protocol_t)

/* Whether a declaration made for API version v (and sizeof its struct,
 * where it has one) can be used by this aio: 0, or -1 with the reason in
 * why ("was built for ...: what to do"). */
static int api_refusal(unsigned v, unsigned size, size_t min, size_t max,
                       char *why, size_t n) {
  unsigned major = v >> 16, minor = v & 0xffff;
  if (major != AIO_API_MAJOR) {
    char was[32];
    if (major == 0)
      snprintf(was, sizeof(was), "%u", v); /* before major.minor */
    else
      snprintf(was, sizeof(was), "%u.%u", major, minor);
    snprintf(why, n,
             "was built for aio API version %s, this aio speaks version "
             "%d.%d: rebuild it against this aio's aio.h",
             was, AIO_API_MAJOR, AIO_API_MINOR);
    return -1;
  }
  if (minor > AIO_API_MINOR) {
    snprintf(why, n,
             "was built for aio API version %u.%u, newer than this aio's "
             "%d.%d: rebuild it against this aio's aio.h, or run it with a "
             "newer aio",
             major, minor, AIO_API_MAJOR, AIO_API_MINOR);
    return -1;
  }
  if (max && (size < min || size > max)) {
    snprintf(why, n,
             "has a declaration of %u bytes, which no aio.h of API version "
             "%u.%u makes (%zu to %zu): it is damaged or forged",
             size, major, minor, min, max);
    return -1;
  }
  return 0;
}

struct loader *loader_new(void) {
  return calloc(1, sizeof(struct loader));
}

void loader_free(struct loader *l) {
  if (l == NULL)
    return;
  for (size_t i = l->n; i-- > 0;) {
    struct loader_module *m = &l->mods[i];
    if (m->initialised && m->def && m->def->fini)
      m->def->fini();
    /* ASan and valgrind report leaks in unloaded code without symbols, so
     * keep modules mapped when running under a leak checker. */
    if (m->handle && getenv("AIO_NO_DLCLOSE") == NULL)
      dlclose(m->handle);
    free(m->name);
    if (m->handle)
      free((void *)m->def);
    free(m->path);
  }
  free(l->mods);
  for (struct loader_resolved *r = l->resolved, *next; r; r = next) {
    next = r->next;
    free(r);
  }
  free(l);
}

struct loader_module *loader_find_module(const struct loader *l,
                                         const char *name) {
  for (size_t i = 0; i < l->n; i++)
    if (strcmp(l->mods[i].name, name) == 0)
      return &l->mods[i];
  return NULL;
}

static int valid_module_name(const char *name) {
  if (*name == '\0' || *name == '.' || strlen(name) > 200)
    return 0;
  for (const char *p = name; *p; p++)
    if (*p == '/' || *p == ' ' || (unsigned char)*p < 0x20)
      return 0;
  return 1;
}

/* The install's module directory into buf, from where the running binary
 * is; "" when /proc/self/exe cannot be read. Returns buf. */
static const char *install_module_dir(char *buf, size_t size) {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) {
    buf[0] = '\0';
    return buf;
  }
  exe[n] = '\0';
  char *slash = strrchr(exe, '/');
  if (slash)
    *slash = '\0';
  if ((size_t)snprintf(buf, size, "%s/%s", exe, AIO_BIN_TO_MODULES) >= size)
    buf[0] = '\0';
  return buf;
}

/* Returns new path of the first existing candidate, or NULL; `tried` gets
 * the places looked at, for the message. */
static char *find_module_file(const struct settings *s, const char *name,
                              struct util_buf *tried) {
  char installed[4200];
  install_module_dir(installed, sizeof(installed));
  for (size_t i = 0; i <= s->npath; i++) {
    const char *dir = i < s->npath ? s->module_path[i] : installed;
    if (*dir == '\0')
      continue;
    char *path;
    if (i < s->npath && dir[0] != '/')
      path = util_asprintf("%s/%s/%s.so", s->config_dir ? s->config_dir : ".",
                           dir, name);
    else
      path = util_asprintf("%s/%s.so", dir, name);
    if (path == NULL)
      return NULL;
    if (access(path, R_OK) == 0)
      return path;
    util_buf_printf(tried, "%s%s", tried->len ? ", " : "", path);
    free(path);
  }
  return NULL;
}

/* "module not found", with what helps: a dotted name (a Python-style path
 * such as my.example.ServerProtocol) is one file name, my.example.so, so
 * say how the reference was split, and name a module that does exist for
 * one of its parts. */
static void not_found(const struct settings *s, const char *name,
                      const char *tried, const char *file, int line,
                      struct diag *d) {
  struct util_buf hint = {0};
  if (strchr(name, '.')) {
    util_buf_printf(&hint,
                    "; a reference is split at its last dot, and a module "
                    "name is one file name: '%s' means %s.so, not a "
                    "directory path",
                    name, name);
    char *parts = strdup(name);
    for (char *save = NULL, *p = parts ? strtok_r(parts, ".", &save) : NULL; p;
         p = strtok_r(NULL, ".", &save)) {
      struct util_buf ignored = {0};
      char *found =
          valid_module_name(p) ? find_module_file(s, p, &ignored) : NULL;
      free(ignored.data);
      if (found) {
        util_buf_printf(&hint, "; did you mean module '%s' (%s)?", p, found);
        free(found);
        break;
      }
    }
    free(parts);
  }
  diag_add(d, file, line,
           "module '%s' not found (looked for %s); set [aio] module_path to "
           "the directory of %s.so%s",
           name, tried, name, hint.data ? hint.data : "");
  free(hint.data);
}

/* Two files may not declare one AIO_MODULE name: `aio test`, logs and
 * status name modules by it. The module already loaded under that name,
 * or NULL. */
static const struct loader_module *same_declared_name(const struct loader *l,
                                                      const char *declared) {
  for (size_t i = 0; i < l->n; i++)
    if (l->mods[i].def && l->mods[i].def->name &&
        strcmp(l->mods[i].def->name, declared) == 0)
      return &l->mods[i];
  return NULL;
}

static struct loader_module *add_module(struct loader *l, const char *name) {
  if (util_grow((void **)&l->mods, &l->cap, l->n + 1, sizeof(*l->mods)))
    return NULL;
  struct loader_module *m = &l->mods[l->n];
  memset(m, 0, sizeof(*m));
  m->name = strdup(name);
  if (m->name == NULL)
    return NULL;
  l->n++;
  return m;
}

struct loader_module *loader_load(struct loader *l, const struct settings *s,
                                  const char *name, const char *file, int line,
                                  struct diag *d) {
  struct loader_module *m = loader_find_module(l, name);
  if (m)
    return m;
  if (strcmp(name, BUILTIN_NAME) == 0) {
    m = add_module(l, name);
    if (m)
      m->def = &builtin_module;
    return m;
  }
  if (!valid_module_name(name)) {
    diag_add(d, file, line, "'%s' is not a valid module name", name);
    return NULL;
  }
  struct util_buf tried = {0};
  char *path = find_module_file(s, name, &tried);
  if (path == NULL) {
    not_found(s, name, tried.data ? tried.data : name, file, line, d);
    free(tried.data);
    return NULL;
  }
  free(tried.data);
  dlerror();
  void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
  if (h == NULL) {
    diag_add(d, file, line, "module '%s': cannot load %s: %s", name, path,
             dlerror());
    free(path);
    return NULL;
  }
  const aio_decl_t *decl = dlsym(h, "aio__decl_aio_module");
  if (decl == NULL || decl->magic != AIO_DECL_MAGIC ||
      decl->kind != AIO_KIND_MODULE || decl->u.module == NULL) {
    diag_add(d, file, line,
             "module '%s' (%s) has no AIO_MODULE(...) declaration; is it an "
             "aio module?",
             name, path);
    dlclose(h);
    free(path);
    return NULL;
  }
  char why[300];
  if (api_refusal(decl->api_version, decl->size, MODULE_SIZE_2_0,
                  sizeof(aio_module_t), why, sizeof(why))) {
    diag_add(d, file, line, "module '%s' (%s) %s", name, path, why);
    dlclose(h);
    free(path);
    return NULL;
  }
  aio_module_t *def = calloc(1, sizeof(*def));
  if (def == NULL) {
    diag_add(d, file, line, "out of memory");
    dlclose(h);
    free(path);
    return NULL;
  }
  memcpy(def, decl->u.module, decl->size);
  const char *declared = def->name ? def->name : "";
  const struct loader_module *twin = same_declared_name(l, declared);
  if (twin) {
    diag_add(d, file, line,
             "module '%s' (%s) declares AIO_MODULE(.name = \"%s\"), which "
             "module '%s' (%s) already declares: give each module a name of "
             "its own",
             name, path, declared, twin->name,
             twin->path ? twin->path : "built in");
    free(def);
    dlclose(h);
    free(path);
    return NULL;
  }
  m = add_module(l, name);
  if (m == NULL) {
    free(def);
    dlclose(h);
    free(path);
    diag_add(d, file, line, "out of memory");
    return NULL;
  }
  m->path = path;
  m->handle = h;
  m->def = def;
  return m;
}

static void load_ref(struct loader *l, const struct settings *s,
                     const struct ref *r, struct diag *d) {
  if (r->module && loader_find_module(l, r->module) == NULL)
    loader_load(l, s, r->module, r->file, r->line, d);
}

int loader_load_all(struct loader *l, const struct settings *s,
                    struct diag *d) {
  size_t before = d->n;
  loader_load(l, s, BUILTIN_NAME, NULL, 0, d);
  for (size_t i = 0; i < s->nmodules; i++)
    loader_load(l, s, s->modules[i], s->modules_file,
                s->module_lines ? s->module_lines[i] : 0, d);
  for (size_t i = 0; i < s->nservers; i++)
    load_ref(l, s, &s->servers[i].handler, d);
  for (size_t i = 0; i < s->nschedules; i++) {
    load_ref(l, s, &s->schedules[i].func, d);
    if (s->schedules[i].has_cb)
      load_ref(l, s, &s->schedules[i].cb, d);
    if (s->schedules[i].has_err)
      load_ref(l, s, &s->schedules[i].err, d);
  }
  for (size_t i = 0; i < s->nlisteners; i++)
    load_ref(l, s, &s->listeners[i].fn, d);
  for (size_t i = 0; i < s->ncommands; i++)
    load_ref(l, s, &s->commands[i].fn, d);
  return d->n == before ? 0 : -1;
}

static const aio_decl_t *builtin_lookup(const char *symbol) {
  for (size_t i = 0; builtin_decls[i]; i++)
    if (strcmp(builtin_decls[i]->symbol, symbol) == 0)
      return builtin_decls[i];
  return NULL;
}

/* decl (a module's protocol, checked) as this aio's whole aio_protocol_t,
 * made once per declaration. Borrowed, valid until loader_free. */
static const aio_decl_t *whole_protocol(struct loader *l,
                                        const aio_decl_t *decl,
                                        const struct ref *ref, struct diag *d) {
  for (struct loader_resolved *r = l->resolved; r; r = r->next)
    if (r->orig == decl)
      return &r->decl;
  struct loader_resolved *r = calloc(1, sizeof(*r));
  if (r == NULL) {
    diag_add(d, ref->file, ref->line, "out of memory");
    return NULL;
  }
  r->orig = decl;
  r->decl = *decl;
  memcpy(&r->protocol, decl->u.protocol, decl->size);
  r->decl.u.protocol = &r->protocol;
  r->decl.size = sizeof(r->protocol);
  r->next = l->resolved;
  l->resolved = r;
  return &r->decl;
}

const aio_decl_t *loader_resolve(struct loader *l, const struct ref *ref,
                                 aio_kind_t kind, struct diag *d) {
  struct loader_module *m = loader_find_module(l, ref->module);
  if (m == NULL) {
    /* Not loadable: loader_load_all already said why. */
    diag_add(d, ref->file, ref->line, "%s: module '%s' is not loaded",
             ref->text, ref->module);
    return NULL;
  }
  const aio_decl_t *decl;
  if (m->handle == NULL) {
    decl = builtin_lookup(ref->symbol);
    if (decl == NULL) {
      diag_add(d, ref->file, ref->line,
               "%s: the built-in module 'aio' has no symbol '%s'", ref->text,
               ref->symbol);
      return NULL;
    }
  } else {
    char name[300];
    snprintf(name, sizeof(name), "aio__decl_%s", ref->symbol);
    decl = dlsym(m->handle, name);
    if (decl == NULL) {
      if (dlsym(m->handle, ref->symbol))
        diag_add(d, ref->file, ref->line,
                 "%s: module '%s' (%s) has a symbol '%s' but it is not "
                 "declared: add %s(%s...) after it",
                 ref->text, m->name, m->path, ref->symbol,
                 loader_kind_name(kind), ref->symbol);
      else
        diag_add(d, ref->file, ref->line,
                 "%s: module '%s' (%s) has no symbol '%s'", ref->text, m->name,
                 m->path, ref->symbol);
      return NULL;
    }
  }
  if (decl->magic != AIO_DECL_MAGIC || decl->symbol == NULL ||
      strcmp(decl->symbol, ref->symbol) != 0) {
    diag_add(d, ref->file, ref->line,
             "%s: '%s' in module '%s' is not a valid aio declaration",
             ref->text, ref->symbol, m->name);
    return NULL;
  }
  char why[300];
  int proto = decl->kind == AIO_KIND_PROTOCOL;
  if (api_refusal(decl->api_version, decl->size, proto ? PROTOCOL_SIZE_2_0 : 0,
                  proto ? sizeof(aio_protocol_t) : 0, why, sizeof(why))) {
    diag_add(d, ref->file, ref->line, "%s: module '%s' %s", ref->text, m->name,
             why);
    return NULL;
  }
  /* A listener may be either kind: the caller looks at decl->kind. */
  if (decl->kind != kind &&
      !(kind == AIO_KIND_LISTENER && decl->kind == AIO_KIND_LISTENER_ASYNC)) {
    diag_add(d, ref->file, ref->line,
             "%s is declared with %s, but it is used here as %s", ref->text,
             loader_kind_name(decl->kind), loader_kind_name(kind));
    return NULL;
  }
  if (decl->u.module == NULL) {
    diag_add(d, ref->file, ref->line, "%s: declaration has no target",
             ref->text);
    return NULL;
  }
  return proto && m->handle ? whole_protocol(l, decl, ref, d) : decl;
}

/* A reference that did not parse was reported by the settings, one into a
 * module that did not load by loader_load_all: each problem once. */
static const aio_decl_t *check_ref(struct loader *l, const struct ref *r,
                                   aio_kind_t kind, struct diag *d,
                                   int *skipped) {
  if (r->module == NULL || loader_find_module(l, r->module) == NULL) {
    *skipped = 1;
    return NULL;
  }
  return loader_resolve(l, r, kind, d);
}

/* A UDP server hands every datagram to datagram_received: a protocol
 * without one would take them all and answer none. */
static void check_server(struct loader *l, const struct server_conf *sv,
                         struct diag *d, int *skipped) {
  const aio_decl_t *decl = check_ref(
      l, &sv->handler, sv->is_factory ? AIO_KIND_FACTORY : AIO_KIND_PROTOCOL, d,
      skipped);
  if (decl && !sv->is_factory && sv->type == SERVER_UDP &&
      decl->u.protocol->datagram_received == NULL)
    diag_add(d, sv->handler.file, sv->handler.line,
             "[server:%s] is a UDP server, but protocol %s has no "
             "datagram_received",
             sv->name, sv->handler.text);
}

int loader_check(struct loader *l, const struct settings *s, struct diag *d) {
  size_t before = d->n;
  int skipped = 0;
  for (size_t i = 0; i < s->nservers; i++)
    check_server(l, &s->servers[i], d, &skipped);
  for (size_t i = 0; i < s->nschedules; i++) {
    const struct schedule_conf *sc = &s->schedules[i];
    check_ref(l, &sc->func, AIO_KIND_SCHEDULER, d, &skipped);
    if (sc->has_cb)
      check_ref(l, &sc->cb, AIO_KIND_SCHEDULER, d, &skipped);
    if (sc->has_err)
      check_ref(l, &sc->err, AIO_KIND_SCHEDULER, d, &skipped);
  }
  for (size_t i = 0; i < s->nlisteners; i++)
    check_ref(l, &s->listeners[i].fn, AIO_KIND_LISTENER, d, &skipped);
  for (size_t i = 0; i < s->ncommands; i++)
    check_ref(l, &s->commands[i].fn, AIO_KIND_COMMAND, d, &skipped);
  return d->n == before && !skipped ? 0 : -1;
}
