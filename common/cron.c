/* cron.c - parse and step five-field cron expressions; see cron.h. */
#define _GNU_SOURCE
#include "cron.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const months[] = {"jan", "feb", "mar", "apr", "may", "jun",
                                     "jul", "aug", "sep", "oct", "nov", "dec"};
static const char *const days[] = {"sun", "mon", "tue", "wed",
                                   "thu", "fri", "sat"};

static int parse_num(const char **p, int field, int *out) {
  if (isdigit((unsigned char)**p)) {
    long v = 0;
    int digits = 0;
    while (isdigit((unsigned char)**p) && digits < 4) {
      v = v * 10 + (**p - '0');
      (*p)++;
      digits++;
    }
    if (isdigit((unsigned char)**p))
      return -1;
    *out = (int)v;
    return 0;
  }
  const char *const *names = field == 3 ? months : field == 4 ? days : NULL;
  int count = field == 3 ? 12 : 7;
  if (names == NULL)
    return -1;
  for (int i = 0; i < count; i++)
    if (strncasecmp(*p, names[i], 3) == 0) {
      *p += 3;
      *out = field == 3 ? i + 1 : i;
      return 0;
    }
  return -1;
}

/* One field into a bit set over [lo, hi]. */
static int parse_field(const char *s, int field, int lo, int hi, uint64_t *bits,
                       int *star) {
  const char *p = s;
  *bits = 0;
  *star = 0;
  for (;;) {
    int a, b, step = 1, single = 0;
    if (*p == '*') {
      a = lo;
      b = hi;
      p++;
      if (*p != '/')
        *star = 1;
    } else {
      if (parse_num(&p, field, &a))
        return -1;
      b = a;
      single = 1;
      if (*p == '-') {
        p++;
        single = 0;
        if (parse_num(&p, field, &b))
          return -1;
      }
    }
    if (*p == '/') {
      p++;
      if (parse_num(&p, 0, &step) || step < 1 || step > hi)
        return -1;
      /* "a/step" runs from a to the top of the field. That is decided
       * per list element: in "0-59/30,5/20" the second element is 5, 25,
       * 45, and "5-5/2" is 5 alone. */
      if (single)
        b = hi;
    }
    /* 7 is Sunday too, so the day of week may run up to 7. */
    int top = field == 4 ? 7 : hi;
    if (a < lo || b > top || a > b)
      return -1;
    for (int v = a; v <= b; v += step)
      *bits |= 1ull << (field == 4 && v == 7 ? 0 : v);
    if (*p == ',') {
      p++;
      continue;
    }
    return *p == '\0' ? 0 : -1;
  }
}

int cron_parse(struct cron *c, const char *expr, char *err, size_t errlen) {
  static const char *const what[] = {"minute (0-59)", "hour (0-23)",
                                     "day of month (1-31)", "month (1-12)",
                                     "day of week (0-7)"};
  static const int lo[] = {0, 0, 1, 1, 0}, hi[] = {59, 23, 31, 12, 6};
  char buf[256];
  char *fields[5];
  int n = 0;
  memset(c, 0, sizeof(*c));
  if (strlen(expr) >= sizeof(buf)) {
    /* Cut short, a longer expression could lose a field and still parse. */
    snprintf(err, errlen, "expression longer than %zu characters",
             sizeof(buf) - 1);
    return -1;
  }
  snprintf(buf, sizeof(buf), "%s", expr);
  for (char *save, *tok = strtok_r(buf, " \t", &save); tok;
       tok = strtok_r(NULL, " \t", &save)) {
    if (n == 5) {
      n++;
      break;
    }
    fields[n++] = tok;
  }
  if (n != 5) {
    snprintf(err, errlen,
             "expected five fields (minute hour day month weekday), got %s",
             n > 5 ? "more" : "fewer");
    return -1;
  }
  uint64_t bits[5];
  int star[5];
  for (int i = 0; i < 5; i++)
    if (parse_field(fields[i], i, lo[i], hi[i], &bits[i], &star[i])) {
      snprintf(err, errlen, "bad %s field '%s'", what[i], fields[i]);
      return -1;
    }
  c->minute = bits[0];
  c->hour = (uint32_t)bits[1];
  c->dom = (uint32_t)bits[2];
  c->month = (uint16_t)bits[3];
  c->dow = (uint8_t)bits[4];
  c->dom_star = star[2];
  c->dow_star = star[4];
  return 0;
}

static int day_matches(const struct cron *c, const struct tm *tm) {
  int dom = (c->dom >> tm->tm_mday) & 1, dow = (c->dow >> tm->tm_wday) & 1;
  if (c->dom_star && c->dow_star)
    return 1;
  if (c->dom_star)
    return dow;
  if (c->dow_star)
    return dom;
  return dom || dow;
}

/* The start of the hour tm names (mktime normalizes fields that ran past
 * their range), or t + 60 if that is not after t: the search must move
 * on. */
static time_t hour_start(struct tm *tm, time_t t) {
  tm->tm_min = 0;
  tm->tm_sec = 0;
  tm->tm_isdst = -1;
  time_t nt = mktime(tm);
  return nt > t ? nt : t + 60;
}

time_t cron_next(const struct cron *c, time_t after) {
  struct tm tm;
  time_t t = after - after % 60 + 60;
  /* Step by minutes with jumps over whole hours and days that cannot
   * match; four years bounds every valid expression (Feb 29). The bound
   * is on time, not on steps: "0 0 30 2 *" steps a day at a time and
   * would otherwise walk for millennia with the master blocked. */
  time_t limit = t + (time_t)4 * 366 * 24 * 3600;
  for (int guard = 0; guard < 4 * 366 * 24 * 60 && t <= limit; guard++) {
    localtime_r(&t, &tm);
    if (!((c->month >> (tm.tm_mon + 1)) & 1) || !day_matches(c, &tm)) {
      tm.tm_hour = 0;
      tm.tm_mday += 1;
      t = hour_start(&tm, t);
      continue;
    }
    if (!((c->hour >> tm.tm_hour) & 1)) {
      tm.tm_hour += 1;
      t = hour_start(&tm, t);
      continue;
    }
    if ((c->minute >> tm.tm_min) & 1)
      return t;
    t += 60;
  }
  return (time_t)-1;
}
