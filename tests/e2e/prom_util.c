/*
 * prom_util.c - reading aio's /metrics in the e2e suites (prom_util.h).
 */
#define _GNU_SOURCE
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "prom_util.h"

#define PARSER AIO_SOURCE_DIR "/tests/e2e/prom_parse.py"

/* GET path on the metrics port: the HTTP status, the whole answer in
 * *out (new). */
int prom_get(int port, const char *path, char **out, int timeout_ms) {
  size_t n = 1 << 20;
  char *buf = malloc(n), req[256];
  ck_assert_ptr_nonnull(buf);
  snprintf(req, sizeof(req), "GET %s HTTP/1.1\r\nHost: t\r\n\r\n", path);
  int r = h_exchange_once(port, req, NULL, buf, n, timeout_ms);
  int code = -1;
  if (r == H_OK || r == H_CLOSED)
    sscanf(buf, "HTTP/1.1 %d", &code);
  *out = buf;
  return code;
}

/* Scrape, check the body with the real parser, and return the parser's
 * samples (new), one per line: name{labels} value. */
char *prom_scrape(int port, const char *dir) {
  char *answer;
  int code = prom_get(port, "/metrics", &answer, 5000);
  ck_assert_msg(code == 200, "scrape: %d %s", code, answer);
  ck_assert_msg(strstr(answer, "\r\nContent-Type: text/plain; version=0.0.4; "
                               "charset=utf-8\r\n") != NULL,
                "content type: %s", answer);
  const char *body = strstr(answer, "\r\n\r\n");
  ck_assert_ptr_nonnull(body);
  h_write(dir, "scrape.txt", body + 4);
  free(answer);
  char cmd[512], path[256];
  snprintf(path, sizeof(path), "%s/parsed.txt", dir);
  snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s %s/scrape.txt > %s 2>&1",
           PARSER, dir, path);
  int rc = system(cmd);
  char *parsed = h_slurp(path);
  ck_assert_msg(rc == 0, "the parser refused the scrape: %s", parsed);
  return parsed;
}

/* The sum of the samples called name whose labels contain every filter
 * (`server="web"`; NULL-terminated), or -1 when there is none. */
double prom_sum(const char *parsed, const char *name, ...) {
  double sum = -1;
  size_t nl = strlen(name);
  for (const char *line = parsed; *line;) {
    const char *end = strchr(line, '\n');
    size_t len = end ? (size_t)(end - line) : strlen(line);
    if (len > nl && strncmp(line, name, nl) == 0 && line[nl] == '{') {
      char copy[1024];
      snprintf(copy, sizeof(copy), "%.*s", (int)len, line);
      int match = 1;
      va_list ap;
      va_start(ap, name);
      for (const char *f; match && (f = va_arg(ap, const char *)) != NULL;)
        match = strstr(copy, f) != NULL;
      va_end(ap);
      const char *sp = strrchr(copy, ' ');
      if (match && sp) {
        if (sum < 0)
          sum = 0;
        sum += strtod(sp + 1, NULL);
      }
    }
    line += len + (end != NULL);
  }
  return sum;
}
