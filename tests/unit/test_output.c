/*
 * test_output.c - the line splitter of captured worker output
 * (supervisor/output.c): lines across reads, a line at exactly the cut, a
 * line past it (cut once, the rest dropped and counted up to its newline),
 * CRLF, empty lines, and the partial line at the end of the stream.
 */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "output.h"

/* What the splitter passed on, lines joined by '|'. */
struct seen {
  char text[3 * OUTPUT_LINE_MAX];
  size_t len;
  size_t lines;
  size_t longest;
};

static void collect(void *arg, const char *line, size_t len) {
  struct seen *s = arg;
  ck_assert_uint_le(len, OUTPUT_LINE_MAX);
  ck_assert_uint_lt(s->len + len + 1, sizeof(s->text));
  memcpy(s->text + s->len, line, len);
  s->len += len;
  s->text[s->len++] = '|';
  s->text[s->len] = '\0';
  s->lines++;
  if (len > s->longest)
    s->longest = len;
}

static void feed(struct line_split *ls, struct seen *s, const char *data) {
  line_split_feed(ls, data, strlen(data), collect, s);
}

START_TEST(test_lines_across_reads) {
  struct line_split ls = {0};
  struct seen s = {0};
  feed(&ls, &s, "one\ntw");
  ck_assert_str_eq(s.text, "one|");
  feed(&ls, &s, "o\n\nthree\r\nfo");
  ck_assert_str_eq(s.text, "one|two||three|");
  ck_assert_uint_eq(ls.lines, 4);
  ck_assert_uint_eq(ls.cut, 0);
  line_split_flush(&ls, collect, &s);
  ck_assert_str_eq(s.text, "one|two||three|fo|");
  ck_assert_uint_eq(ls.lines, 5);
  /* Flushed once: nothing is left. */
  line_split_flush(&ls, collect, &s);
  ck_assert_uint_eq(ls.lines, 5);
}
END_TEST

/* A line of n bytes ('a'...), newline included if nl, fed in chunks of
 * step bytes. */
static void feed_long(struct line_split *ls, struct seen *s, size_t n, int nl,
                      size_t step) {
  char *buf = malloc(n + 1);
  memset(buf, 'a', n);
  buf[n] = '\n';
  size_t total = n + (nl ? 1 : 0);
  for (size_t off = 0; off < total; off += step)
    line_split_feed(ls, buf + off, total - off < step ? total - off : step,
                    collect, s);
  free(buf);
}

START_TEST(test_line_at_the_cut_is_whole) {
  for (size_t step = 1; step <= OUTPUT_LINE_MAX + 1; step += 1365) {
    struct line_split ls = {0};
    struct seen s = {0};
    feed_long(&ls, &s, OUTPUT_LINE_MAX, 1, step);
    ck_assert_uint_eq(s.lines, 1);
    ck_assert_uint_eq(s.longest, OUTPUT_LINE_MAX);
    ck_assert_uint_eq(ls.cut, 0);
    ck_assert_uint_eq(ls.dropped, 0);
  }
}
END_TEST

START_TEST(test_long_line_is_cut_once_and_counted) {
  for (size_t step = 1; step <= 3 * OUTPUT_LINE_MAX; step += 1000) {
    struct line_split ls = {0};
    struct seen s = {0};
    feed_long(&ls, &s, 2 * OUTPUT_LINE_MAX + 5, 1, step);
    /* Passed as soon as it is known to be too long, before its end. */
    ck_assert_uint_eq(s.lines, 1);
    ck_assert_uint_eq(s.longest, OUTPUT_LINE_MAX);
    ck_assert_uint_eq(ls.cut, 1);
    ck_assert_uint_eq(ls.dropped, OUTPUT_LINE_MAX + 5);
    /* The next line is whole again. */
    feed(&ls, &s, "next\n");
    ck_assert_uint_eq(s.lines, 2);
    ck_assert_str_eq(s.text + s.len - 5, "next|");
    ck_assert_uint_eq(ls.lines, 2);
  }
}
END_TEST

START_TEST(test_cut_line_without_end_is_not_passed_twice) {
  struct line_split ls = {0};
  struct seen s = {0};
  feed_long(&ls, &s, OUTPUT_LINE_MAX + 100, 0, 4096);
  ck_assert_uint_eq(s.lines, 1);
  line_split_flush(&ls, collect, &s);
  ck_assert_uint_eq(s.lines, 1);
  ck_assert_uint_eq(ls.dropped, 100);
  /* A partial line at the end, shorter than the cut, is passed. */
  feed(&ls, &s, "last words");
  line_split_flush(&ls, collect, &s);
  ck_assert_uint_eq(s.lines, 2);
  ck_assert_str_eq(s.text + s.len - 11, "last words|");
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("output");
  TCase *tc = tcase_create("line_split");
  tcase_add_test(tc, test_lines_across_reads);
  tcase_add_test(tc, test_line_at_the_cut_is_whole);
  tcase_add_test(tc, test_long_line_is_cut_once_and_counted);
  tcase_add_test(tc, test_cut_line_without_end_is_not_passed_twice);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
