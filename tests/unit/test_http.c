/*
 * test_http.c - the request-head parser behind aio.hello: complete and
 * partial heads, pipelining, keep-alive rules for HTTP/1.0 and 1.1,
 * Connection tokens, Content-Length framing, and what must be refused.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "http.h"

static long parse(const char *s, struct http_req *req) {
  return http_parse(s, strlen(s), req);
}

/* s is exactly one complete head; req gets what it says. */
static void expect_whole(const char *s, struct http_req *req) {
  ck_assert_msg(parse(s, req) == (long)strlen(s), "not one whole head: %s", s);
}

/* Every head of bad (NULL-terminated) is refused. */
static void expect_bad(const char *const *bad) {
  struct http_req req;
  for (; *bad; bad++)
    ck_assert_msg(parse(*bad, &req) == HTTP_BAD, "not refused: %s", *bad);
}

/* s is a complete head whose connection persists (want 1) or not. */
static void expect_keep_alive(const char *s, int want) {
  struct http_req req;
  ck_assert_msg(parse(s, &req) > 0, "not a complete head: %s", s);
  ck_assert_msg(req.keep_alive == want, "keep_alive %d, want %d: %s",
                req.keep_alive, want, s);
}

/* s is a complete head announcing a body of want bytes. */
static void expect_body_len(const char *s, size_t want) {
  struct http_req req;
  ck_assert_msg(parse(s, &req) > 0, "not a complete head: %s", s);
  ck_assert_msg(req.body_len == want, "body_len %zu, want %zu: %s",
                req.body_len, want, s);
}

START_TEST(test_complete_head) {
  struct http_req req;
  expect_whole("GET /index.html?q=1 HTTP/1.1\r\nHost: example\r\n"
               "Accept: */*\r\n\r\n",
               &req);
  ck_assert_int_eq(req.head, 0);
  ck_assert_int_eq(req.minor, 1);
  ck_assert_int_eq(req.keep_alive, 1);
  ck_assert_uint_eq(req.body_len, 0);
  expect_whole("HEAD / HTTP/1.1\r\n\r\n", &req);
  ck_assert_int_eq(req.head, 1);
  /* Methods are case-sensitive: "head" is some other method. */
  ck_assert_int_gt(parse("head / HTTP/1.1\r\n\r\n", &req), 0);
  ck_assert_int_eq(req.head, 0);
}
END_TEST

START_TEST(test_partial_head_needs_more) {
  const char *s = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
  size_t len = strlen(s);
  struct http_req req;
  /* Every proper prefix needs more; the whole is complete. */
  for (size_t i = 0; i < len; i++)
    ck_assert_msg(http_parse(s, i, &req) == HTTP_NEED_MORE, "prefix %zu", i);
  ck_assert_int_eq(http_parse(s, len, &req), (long)len);
}
END_TEST

START_TEST(test_pipelined_heads) {
  const char *a = "GET /a HTTP/1.1\r\n\r\n",
             *b = "HEAD /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
             *c = "GET /c HTTP/1.1\r\n";
  char s[256];
  snprintf(s, sizeof(s), "%s%s%s", a, b, c);
  struct http_req req;
  long n = parse(s, &req);
  ck_assert_int_eq(n, (long)strlen(a));
  ck_assert_int_eq(req.head, 0);
  long m = parse(s + n, &req);
  ck_assert_int_eq(m, (long)strlen(b));
  ck_assert_int_eq(req.head, 1);
  ck_assert_int_eq(req.minor, 0);
  ck_assert_int_eq(req.keep_alive, 1);
  ck_assert_int_eq(parse(s + n + m, &req), HTTP_NEED_MORE);
}
END_TEST

START_TEST(test_http10_keep_alive_rules) {
  expect_keep_alive("GET / HTTP/1.0\r\n\r\n", 0); /* 1.0 closes by default */
  expect_keep_alive("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 1);
  expect_keep_alive("GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
                    0);
  expect_keep_alive("GET / HTTP/1.1\r\n\r\n", 1); /* 1.1 persists by default */
  expect_keep_alive("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", 0);
}
END_TEST

START_TEST(test_close_wins_over_later_keep_alive) {
  expect_keep_alive("GET / HTTP/1.1\r\nConnection: close\r\n"
                    "Connection: keep-alive\r\n\r\n",
                    0);
  expect_keep_alive("GET / HTTP/1.0\r\nConnection: close\r\n"
                    "Connection: keep-alive\r\n\r\n",
                    0);
}
END_TEST

START_TEST(test_connection_tokens) {
  /* A token is a whole list element, in any case, blanks around it. */
  expect_keep_alive("GET / HTTP/1.1\r\nconnection:  Upgrade ,\tCLOSE \r\n"
                    "\r\n",
                    0);
  expect_keep_alive("GET / HTTP/1.1\r\nConnection: closed\r\n\r\n", 1);
  expect_keep_alive("GET / HTTP/1.1\r\nConnection: x-close\r\n\r\n", 1);
  expect_keep_alive("GET / HTTP/1.0\r\nConnection: ,,keep-alive,\r\n\r\n", 1);
  expect_keep_alive("GET / HTTP/1.0\r\nConnection:\r\n\r\n", 0);
  /* Other headers that mention close do not count. */
  expect_keep_alive("GET / HTTP/1.1\r\nX-Connection: close\r\n\r\n", 1);
}
END_TEST

START_TEST(test_content_length) {
  expect_body_len("POST / HTTP/1.1\r\nContent-Length: 42\r\n\r\n", 42);
  expect_body_len("POST / HTTP/1.1\r\ncontent-length:007 \r\n\r\n", 7);
  expect_body_len("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 0);
  expect_body_len("POST / HTTP/1.1\r\nContent-Length: 999999999999999\r\n\r\n",
                  999999999999999u);
}
END_TEST

START_TEST(test_content_length_refused) {
  /* Framing that two parsers could read differently is a smuggling risk. */
  static const char *const bad[] = {
      "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n"
      "\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
      "\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 1 2\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length:\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 1000000000000000\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length : 5\r\n\r\n",
      NULL};
  expect_bad(bad);
}
END_TEST

START_TEST(test_transfer_encoding_refused) {
  static const char *const bad[] = {
      "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
      "POST / HTTP/1.1\r\ntransfer-encoding: identity\r\n\r\n",
      "POST / HTTP/1.1\r\nContent-Length: 3\r\n"
      "Transfer-Encoding: chunked\r\n\r\n",
      NULL};
  expect_bad(bad);
}
END_TEST

START_TEST(test_too_large_head) {
  char *big = malloc(HTTP_MAX_HEAD + 64);
  struct http_req req;
  strcpy(big, "GET / HTTP/1.1\r\nX-Big: ");
  size_t n = strlen(big);
  memset(big + n, 'a', HTTP_MAX_HEAD + 64 - n);
  /* No end of head within the limit. */
  ck_assert_int_eq(http_parse(big, HTTP_MAX_HEAD - 1, &req), HTTP_NEED_MORE);
  ck_assert_int_eq(http_parse(big, HTTP_MAX_HEAD, &req), HTTP_TOO_LARGE);
  ck_assert_int_eq(http_parse(big, HTTP_MAX_HEAD + 64, &req), HTTP_TOO_LARGE);
  /* A head that ends just inside the limit is fine. */
  memcpy(big + HTTP_MAX_HEAD - 4, "\r\n\r\n", 4);
  ck_assert_int_eq(http_parse(big, HTTP_MAX_HEAD + 64, &req), HTTP_MAX_HEAD);
  /* One byte later it is too large, even though the end is in the buffer. */
  memset(big + HTTP_MAX_HEAD - 4, 'a', 4);
  memcpy(big + HTTP_MAX_HEAD - 3, "\r\n\r\n", 4);
  ck_assert_int_eq(http_parse(big, HTTP_MAX_HEAD + 64, &req), HTTP_TOO_LARGE);
  free(big);
}
END_TEST

START_TEST(test_bare_lf) {
  struct http_req req;
  expect_whole("GET / HTTP/1.1\nHost: x\nConnection: close\n\n", &req);
  ck_assert_int_eq(req.keep_alive, 0);
  expect_whole("GET / HTTP/1.1\r\nHost: x\n\r\n", &req);
  expect_whole("GET / HTTP/1.1\n\n", &req);
}
END_TEST

START_TEST(test_leading_empty_lines_tolerated) {
  struct http_req req;
  expect_whole("\r\n\r\nGET / HTTP/1.1\r\n\r\n", &req);
  ck_assert_int_eq(req.minor, 1);
  expect_whole("\n\nGET / HTTP/1.1\n\n", &req);
  ck_assert_int_eq(parse("\r\n\r\n", &req), HTTP_NEED_MORE);
}
END_TEST

START_TEST(test_malformed_request_lines) {
  static const char *const bad[] = {"BOGUS\r\n\r\n",
                                    " GET / HTTP/1.1\r\n\r\n",
                                    "GET  / HTTP/1.1\r\n\r\n",
                                    "GET / HTTP/1.1 \r\n\r\n",
                                    "GET /\r\n\r\n",
                                    "GET / HTTP/2.0\r\n\r\n",
                                    "GET / HTTP/1.10\r\n\r\n",
                                    "GET / http/1.1\r\n\r\n",
                                    "GET / HTTP/1.x\r\n\r\n",
                                    "G(T / HTTP/1.1\r\n\r\n",
                                    "GET /a\x7f HTTP/1.1\r\n\r\n",
                                    "GET / HTTP/1.1\rX\n\r\n",
                                    NULL};
  expect_bad(bad);
}
END_TEST

START_TEST(test_malformed_headers) {
  static const char *const bad[] = {
      "GET / HTTP/1.1\r\nNoColon\r\n\r\n",
      "GET / HTTP/1.1\r\n: empty-name\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
      "GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\x01z\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\x7fz\r\n\r\n",
      "GET / HTTP/1.1\r\nHost: a\rz\r\n\r\n",
      /* A stray CR where the blank line should be hides what follows it. */
      "GET / HTTP/1.1\r\nHost: a\r\n\rX\n\n", NULL};
  expect_bad(bad);
  struct http_req req;
  ck_assert_int_gt(parse("GET / HTTP/1.1\r\nX: tab\there\r\n\r\n", &req), 0);
  ck_assert_int_gt(
      parse("GET / HTTP/1.1\r\nX: \xc3\xa9t\xc3\xa9\r\n\r\n", &req), 0);
}
END_TEST

START_TEST(test_nul_bytes_refused) {
  static const char in_header[] = "GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n";
  static const char in_target[] = "GET /\0 HTTP/1.1\r\n\r\n";
  struct http_req req;
  ck_assert_int_eq(http_parse(in_header, sizeof(in_header) - 1, &req),
                   HTTP_BAD);
  ck_assert_int_eq(http_parse(in_target, sizeof(in_target) - 1, &req),
                   HTTP_BAD);
}
END_TEST

START_TEST(test_parser_reads_only_len_bytes) {
  /* The head is complete in the buffer, but len stops short of it. */
  const char *s = "GET / HTTP/1.1\r\n\r\nGARBAGE";
  struct http_req req;
  ck_assert_int_eq(http_parse(s, 17, &req), HTTP_NEED_MORE);
  ck_assert_int_eq(http_parse(s, 18, &req), 18);
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("http");
  TCase *tc = tcase_create("parse");
  tcase_add_test(tc, test_complete_head);
  tcase_add_test(tc, test_partial_head_needs_more);
  tcase_add_test(tc, test_pipelined_heads);
  tcase_add_test(tc, test_http10_keep_alive_rules);
  tcase_add_test(tc, test_close_wins_over_later_keep_alive);
  tcase_add_test(tc, test_connection_tokens);
  tcase_add_test(tc, test_content_length);
  tcase_add_test(tc, test_content_length_refused);
  tcase_add_test(tc, test_transfer_encoding_refused);
  tcase_add_test(tc, test_too_large_head);
  tcase_add_test(tc, test_bare_lf);
  tcase_add_test(tc, test_leading_empty_lines_tolerated);
  tcase_add_test(tc, test_malformed_request_lines);
  tcase_add_test(tc, test_malformed_headers);
  tcase_add_test(tc, test_nul_bytes_refused);
  tcase_add_test(tc, test_parser_reads_only_len_bytes);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) { return check_main(suite()); }
