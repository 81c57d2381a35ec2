/* app.c - build the effective configuration (see app.h). */
#define _GNU_SOURCE
#include "app.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "child.h"
#include "loader.h"
#include "log.h"
#include "proctitle.h"
#include "util.h"

/* Loading a module must not take longer than this; a constructor that
 * hangs would otherwise hang the start or a reload. */
#define PROBE_TIMEOUT_MS 30000
#define PROBE_MAX_OUTPUT (16u << 20)
/* The user's file as the probe child reads it before dropping privileges. */
#define PROBE_MAX_CONFIG (16u << 20)

/* The user's file into cfg: from text when given (the probe child read it
 * while it could: the file may be readable by root alone, and the modules
 * are loaded as [aio] user), else from path. */
static int parse_user_file(struct config *cfg, const char *path,
                           const char *text, struct diag *d) {
  if (text == NULL)
    return config_parse_file(cfg, path, d);
  if (cfg->path == NULL) {
    cfg->path = strdup(path);
    cfg->dir = util_dirname(path);
  }
  return config_parse_string(cfg, text, path, d);
}

/* Whether msg ("FILE:LINE: ...") is at the place of one of d's messages
 * from..to. */
static int same_place(const struct diag *d, size_t from, size_t to,
                      const char *msg) {
  for (size_t i = from; i < to; i++) {
    const char *m = d->msgs[i];
    const char *colon = strchr(m, ':');
    colon = colon ? strchr(colon + 1, ':') : NULL;
    if (colon && strncmp(m, msg, (size_t)(colon - m + 1)) == 0)
      return 1;
  }
  return 0;
}

/* defaults: JSON array of [module, text] pairs, or NULL. Returns 0, -1
 * when the layers did not parse (syntax), or -2 when interpolation or
 * values were refused. Lenient (the first pass, before the modules and so
 * their defaults are known): settings are read even when interpolation
 * failed, for the module list; the caller throws those messages away. */
static int build(struct app *a, const char *path, const char *text,
                 json_t *defaults, struct diag *d, int lenient) {
  size_t before = d->n;
  a->cfg = config_new();
  if (a->cfg == NULL) {
    diag_add(d, path, 0, "out of memory");
    return -1;
  }
  config_parse_string(a->cfg, settings_builtin_defaults(), "<built-in>", d);
  size_t i;
  json_t *pair;
  json_array_foreach(defaults, i, pair) {
    char origin[300];
    snprintf(origin, sizeof(origin), "<module %s defaults>",
             json_string_value(json_array_get(pair, 0)));
    config_parse_string(a->cfg, json_string_value(json_array_get(pair, 1)),
                        origin, d);
  }
  if (parse_user_file(a->cfg, path, text, d) || d->n != before)
    return -1;
  if (config_interpolate(a->cfg, d) && !lenient) {
    /* Still read the values, so one run lists every problem; a value that
     * could not be interpolated is reported once, by interpolation. */
    size_t interp_end = d->n;
    struct diag values;
    diag_init(&values);
    settings_load(&a->s, a->cfg, &values);
    for (size_t k = 0; k < values.n; k++)
      if (!same_place(d, before, interp_end, values.msgs[k]))
        diag_add_raw(d, values.msgs[k]);
    diag_close(&values);
    return -2;
  }
  int rc = settings_load(&a->s, a->cfg, d);
  return (rc || d->n != before) ? -2 : 0;
}

static const struct app *process_app;

void app_set_process(const struct app *a) { process_app = a; }

const struct app *app_process(void) { return process_app; }

static void reset(struct app *a) {
  settings_close(&a->s);
  config_free(a->cfg);
  a->cfg = NULL;
}

int app_load_plain(struct app *a, const char *path, struct diag *d) {
  memset(a, 0, sizeof(*a));
  a->path = strdup(path);
  return build(a, path, NULL, NULL, d, 0) ? -1 : 0;
}

static json_t *gather_defaults(const struct loader *l) {
  json_t *arr = json_array();
  for (size_t i = 0; i < l->n; i++) {
    const aio_module_t *def = l->mods[i].def;
    if (def && def->defaults)
      json_array_append_new(arr,
                            json_pack("[ss]", l->mods[i].name, def->defaults));
  }
  return arr;
}

/* app_load_in_process, with the user's file already read into text (may
 * be NULL: read it from path). */
static int load_in_process(struct app *a, const char *path, const char *text,
                           struct loader *l, struct diag *d) {
  memset(a, 0, sizeof(*a));
  a->path = strdup(path);
  /* First pass: which modules? Their defaults may define keys the file
   * refers to, so only a syntax error counts yet. */
  struct diag first;
  diag_init(&first);
  int rc = build(a, path, text, NULL, &first, 1);
  if (rc == -1) {
    for (size_t i = 0; i < first.n; i++)
      diag_add_raw(d, first.msgs[i]);
    diag_close(&first);
    return -1;
  }
  loader_load_all(l, &a->s, &first);
  diag_close(&first);
  json_t *defaults = gather_defaults(l);
  reset(a);
  /* The real pass, with every layer. */
  rc = build(a, path, text, defaults, d, 0);
  json_decref(defaults);
  if (rc == -1)
    return -1;
  /* Values refused or not: name every module and symbol problem too, so
   * one run lists everything (what could not be read is not checked). */
  int loaded = loader_load_all(l, &a->s, d);
  int checked = loader_check(l, &a->s, d);
  /* The modules' own checks read values: only once aio's are good. */
  int hooks = rc == 0 && loaded == 0 ? loader_run_checks(l, a, d) : 0;
  return (rc || loaded || checked || hooks) ? -1 : 0;
}

int app_load_in_process(struct app *a, const char *path, struct loader *l,
                        struct diag *d) {
  return load_in_process(a, path, NULL, l, d);
}

/* The child: do the real work and write {"defaults": [...], "errors": [...]}
 * on fd. Module constructors run here, so the child holds no more than a
 * worker would: only fd and stdio (the listening, control and bus sockets
 * and the locked pidfile of a master are closed), and the [aio] user and
 * group of s, the settings of the first pass. */
static void probe_child(const char *path, const struct settings *first,
                        int fd) {
  int keep[] = {fd, log_fd()};
  child_close_fds_except(keep, UTIL_ARRAY_LEN(keep));
  /* Not the master's title: ps, and a script that signals the process
   * titled "aio: master", must not take it for the master. */
  proctitle_set("aio: checking %s", path);
  struct diag d;
  struct app a;
  struct loader *l = loader_new();
  diag_init(&d);
  /* Read while root: the file may be readable by root alone. */
  size_t textlen;
  char *text = util_read_file(path, PROBE_MAX_CONFIG, &textlen);
  if (first->drop_privileges && first->ids_unknown) {
    /* Not as root in place of a user that does not exist: list the
     * problems the configuration has without any module. */
    app_load_plain(&a, path, &d);
  } else if (geteuid() == 0 && child_drop_privileges(first)) {
    diag_add(&d, path, 0,
             "cannot switch to [aio] user/group (uid %d gid %d) to load the "
             "modules",
             (int)first->uid, (int)first->gid);
  } else {
    /* Not root, there is nothing to give up (and a worker refuses a
     * foreign user itself). */
    load_in_process(&a, path, text, l, &d);
  }
  free(text);
  json_t *out = json_object();
  json_object_set_new(out, "defaults", gather_defaults(l));
  json_t *errs = json_array();
  for (size_t i = 0; i < d.n; i++)
    json_array_append_new(errs, json_string(d.msgs[i]));
  json_object_set_new(out, "errors", errs);
  char *s = json_dumps(out, JSON_COMPACT);
  size_t len = s ? strlen(s) : 0, off = 0;
  while (off < len) {
    ssize_t n = write(fd, s + off, len - off);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    off += (size_t)n;
  }
  free(s);
  json_decref(out);
  /* _exit: no module destructors, no atexit handlers of the parent. */
  _exit(d.n ? 78 : 0);
}

void (*app_wait_hook)(void);

static int probe(const char *path, const struct settings *s, json_t **defaults,
                 struct diag *d) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) < 0) {
    diag_add(d, path, 0, "cannot check modules: pipe: %s", strerror(errno));
    return -1;
  }
  pid_t pid = fork();
  if (pid < 0) {
    diag_add(d, path, 0, "cannot check modules: fork: %s", strerror(errno));
    close(p[0]);
    close(p[1]);
    return -1;
  }
  if (pid == 0) {
    close(p[0]);
    probe_child(path, s, p[1]);
  }
  close(p[1]);
  struct util_buf out = {0};
  int status;
  /* Too much output is as wrong as no end to it: the child is stuck. */
  int timed_out =
      child_read_wait(pid, p[0], &out, PROBE_MAX_OUTPUT, PROBE_TIMEOUT_MS,
                      app_wait_hook, &status) != 0;
  int rc = -1;
  if (timed_out) {
    diag_add(d, path, 0,
             "loading the modules took longer than %d s (a module hangs in "
             "its constructor?)",
             PROBE_TIMEOUT_MS / 1000);
  } else if (WIFSIGNALED(status)) {
    diag_add(d, path, 0, "loading the modules crashed the checker (%s)",
             strsignal(WTERMSIG(status)));
  } else {
    json_t *res = out.data ? json_loads(out.data, 0, NULL) : NULL;
    json_t *errs = json_object_get(res, "errors");
    if (res == NULL || !json_is_array(errs)) {
      diag_add(d, path, 0, "the module checker exited with status %d",
               WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    } else {
      size_t i;
      json_t *e;
      json_array_foreach(errs, i, e) diag_add_raw(d, json_string_value(e));
      if (json_array_size(errs) == 0) {
        *defaults = json_incref(json_object_get(res, "defaults"));
        rc = 0;
      }
    }
    json_decref(res);
  }
  free(out.data);
  return rc;
}

int app_load(struct app *a, const char *path, struct diag *d) {
  memset(a, 0, sizeof(*a));
  a->path = strdup(path);
  /* A syntax error needs no module loaded to be reported. */
  struct diag first;
  diag_init(&first);
  int rc = build(a, path, NULL, NULL, &first, 1);
  if (rc == -1)
    for (size_t i = 0; i < first.n; i++)
      diag_add_raw(d, first.msgs[i]);
  diag_close(&first);
  if (rc == -1) {
    reset(a);
    return -1;
  }
  /* The probe child does the full load and lists every problem, as the
   * user the first pass named. The first pass is freed before the fork:
   * kept, the child would hold it beside its own load, twice the memory
   * of a large file (100 000 sections: 177 MB instead of 89). */
  struct settings who = {.drop_privileges = a->s.drop_privileges,
                         .ids_unknown = a->s.ids_unknown,
                         .uid = a->s.uid,
                         .gid = a->s.gid};
  reset(a);
  json_t *defaults = NULL;
  rc = probe(path, &who, &defaults, d);
  if (rc)
    return -1;
  rc = build(a, path, NULL, defaults, d, 0);
  json_decref(defaults);
  return rc ? -1 : 0;
}

int app_check(struct app *a, const char *path, struct diag *d) {
  return app_load(a, path, d);
}

void app_close(struct app *a) {
  reset(a);
  free(a->path);
  a->path = NULL;
}
