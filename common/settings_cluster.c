/*
 * settings_cluster.c - the [aio] keys of the cluster (docs/cluster.md)
 * that a row's type cannot express: the Redis URL, the node name and the
 * key prefix (they go into Redis keys), and the password file read once
 * the rows are set. Their rows are in settings_table.c.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "settings_rows.h"

/* A node name or key prefix goes into Redis keys: letters, digits and
 * ". _ -" (and ':' in a prefix), 1 to 64 of them. */
static int valid_name(const char *v, int colon) {
  size_t n = strlen(v);
  if (n == 0 || n > 64)
    return 0;
  for (const char *p = v; *p; p++)
    if (!(('a' <= *p && *p <= 'z') || ('A' <= *p && *p <= 'Z') ||
          ('0' <= *p && *p <= '9') || *p == '.' || *p == '_' || *p == '-' ||
          (colon && *p == ':')))
      return 0;
  return 1;
}

void settings_set_cluster(struct settings_ctx *c, const struct settings_key *k,
                          void *base, const char *v) {
  struct settings *s = base;
  char err[256];
  if (*v == '\0')
    return;
  if ((s->cluster = strdup(v)) == NULL)
    settings_fail(c, k->name, "out of memory");
  else if (redis_url_parse(&s->redis, v, err, sizeof(err)))
    settings_fail(c, k->name, "%s", err);
}

/* After cluster: only a cluster puts the name in keys, so a single host's
 * host name may be anything. */
void settings_set_node(struct settings_ctx *c, const struct settings_key *k,
                       void *base, const char *v) {
  struct settings *s = base;
  if (*v) {
    s->node = strdup(v);
    if (s->node && !valid_name(s->node, 0))
      settings_fail(c, k->name,
                    "'%s' is not a node name (letters, digits, '.', '_', "
                    "'-'; up to 64)",
                    v);
    return;
  }
  char host[256];
  if (gethostname(host, sizeof(host)) == 0) {
    host[sizeof(host) - 1] = '\0';
    host[strcspn(host, ".")] = '\0'; /* web-1.example.com -> web-1 */
    s->node = strdup(host);
  }
  if (s->node == NULL)
    s->node = strdup("localhost");
  if (s->cluster && s->node && !valid_name(s->node, 0))
    settings_fail(c, k->name,
                  "the host name '%s' cannot be a node name: set [aio] node "
                  "(letters, digits, '.', '_', '-'; up to 64)",
                  s->node);
}

void settings_set_prefix(struct settings_ctx *c, const struct settings_key *k,
                         void *base, const char *v) {
  struct settings *s = base;
  if ((s->cluster_prefix = strdup(v)) == NULL)
    settings_fail(c, k->name, "out of memory");
  else if (!valid_name(v, 1))
    settings_fail(c, k->name,
                  "'%s' is not a key prefix (letters, digits, '.', '_', '-', "
                  "':'; up to 64)",
                  v);
}

/* The first line of the password file, read now: a missing file is a
 * config error, not a master that cannot log in. */
static void read_password_file(struct settings_ctx *c, struct settings *s) {
  FILE *f = fopen(s->cluster_password_file, "re");
  char line[1024];
  if (f == NULL) {
    settings_fail(c, "cluster_password_file", "cannot read it: %s",
                  strerror(errno));
    return;
  }
  if (fgets(line, sizeof(line), f) == NULL)
    line[0] = '\0';
  fclose(f);
  line[strcspn(line, "\r\n")] = '\0';
  if (line[0] == '\0') {
    settings_fail(c, "cluster_password_file", "its first line is empty");
    return;
  }
  if (s->redis.password) {
    memset(s->redis.password, 0, strlen(s->redis.password));
    free(s->redis.password);
  }
  s->redis.password = strdup(line);
  memset(line, 0, sizeof(line));
}

/* After the rows: the password file (made absolute by its row). */
void settings_aio_check(struct settings_ctx *c, void *base) {
  struct settings *s = base;
  int bad_url = s->cluster && s->redis.host == NULL && s->redis.path == NULL;
  if (s->cluster_password_file && !bad_url)
    read_password_file(c, s);
}

const char *const settings_fallbacks[] = {"skip", "local", NULL};
_Static_assert(CLUSTER_FALLBACK_SKIP == 0 && CLUSTER_FALLBACK_LOCAL == 1,
               "fallbacks[] is indexed by enum cluster_fallback");
