/*
 * test_jalloc.c - common/jalloc.c, jansson's allocator: values made and
 * freed through it stay right, the cache is bounded and given back, a
 * json_dumps() result may be freed with free(), and a thread's cache goes
 * with the thread.
 */
#include <check.h>
#include <jansson.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "check_main.h"
#include "jalloc.h"

/* The data of a signal as a module makes it. */
static json_t *stamped(long i) {
  json_t *d = json_object();
  ck_assert_ptr_nonnull(d);
  ck_assert_int_eq(json_object_set_new(d, "t", json_integer(i * 7)), 0);
  ck_assert_int_eq(json_object_set_new(d, "i", json_integer(i)), 0);
  return d;
}

/* A window of values alive at once, freed, made again: each holds what
 * it was made with (no block handed out twice). */
START_TEST(test_window_of_values_stays_right) {
  enum { WINDOW = 1000 };
  static json_t *w[WINDOW];
  for (int round = 0; round < 5; round++) {
    for (long i = 0; i < WINDOW; i++)
      w[i] = stamped(i + round);
    for (long i = 0; i < WINDOW; i++) {
      ck_assert_int_eq(json_integer_value(json_object_get(w[i], "i")),
                       i + round);
      ck_assert_int_eq(json_integer_value(json_object_get(w[i], "t")),
                       (i + round) * 7);
    }
    for (long i = 0; i < WINDOW; i++)
      json_decref(w[i]);
  }
  if (jalloc_on())
    ck_assert_uint_gt(jalloc_cached(), 0);
  jalloc_trim();
  ck_assert_uint_eq(jalloc_cached(), 0);
}
END_TEST

/* Far more freed than the cache may hold: it stops at its bound (1 MiB). */
START_TEST(test_cache_is_bounded) {
  enum { N = 100000 };
  json_t **v = malloc(N * sizeof(*v));
  ck_assert_ptr_nonnull(v);
  for (int i = 0; i < N; i++)
    v[i] = json_integer(i);
  for (int i = 0; i < N; i++)
    json_decref(v[i]);
  free(v);
  ck_assert_uint_le(jalloc_cached(), 1024 * 1024);
  jalloc_trim();
  ck_assert_uint_eq(jalloc_cached(), 0);
}
END_TEST

/* jansson's manual says to free() what json_dumps() returns: every block
 * is malloc()'s own, so that is right (ASan or glibc would abort). */
START_TEST(test_dumps_result_freed_with_free) {
  for (int i = 0; i < 1000; i++) {
    json_t *d = stamped(i);
    char *s = json_dumps(d, JSON_COMPACT);
    ck_assert_ptr_nonnull(s);
    ck_assert_ptr_nonnull(strstr(s, "\"i\":"));
    free(s);
    json_decref(d);
  }
  jalloc_trim();
}
END_TEST

static void *thread_values(void *arg) {
  json_t **out = arg;
  *out = stamped(42); /* made here, freed by the main thread */
  for (int i = 0; i < 1000; i++)
    json_decref(stamped(i));
  return (void *)jalloc_cached(); /* the last one's blocks */
}

/* A thread's cache is its own, and freed when it ends; a value made in
 * one thread may be freed in another. */
START_TEST(test_threads_have_their_own_cache) {
  jalloc_trim();
  json_t *v = NULL;
  pthread_t t;
  void *cached;
  ck_assert_int_eq(pthread_create(&t, NULL, thread_values, &v), 0);
  ck_assert_int_eq(pthread_join(t, &cached), 0);
  if (jalloc_on())
    ck_assert_uint_gt((size_t)cached, 0);
  ck_assert_uint_eq(jalloc_cached(), 0); /* not ours */
  ck_assert_int_eq(json_integer_value(json_object_get(v, "i")), 42);
  json_decref(v);
  jalloc_trim();
}
END_TEST

static Suite *suite(void) {
  Suite *s = suite_create("jalloc");
  TCase *tc = tcase_create("core");
  tcase_add_test(tc, test_window_of_values_stays_right);
  tcase_add_test(tc, test_cache_is_bounded);
  tcase_add_test(tc, test_dumps_result_freed_with_free);
  tcase_add_test(tc, test_threads_have_their_own_cache);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  jalloc_install();
  return check_main(suite());
}
