/*
 * replay.c - main() for a fuzz target built without libFuzzer: run
 * LLVMFuzzerTestOneInput once on every file named on the command line, or
 * in a directory named there (not recursively). This is how the seed corpus
 * and every input a fuzzer once crashed on stay in the normal test suite.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Larger than any input worth keeping; libFuzzer's default -max_len is 4096
 * for these targets. */
#define REPLAY_MAX (1u << 20)

static int replay_file(const char *path) {
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    perror(path);
    return -1;
  }
  uint8_t *buf = malloc(REPLAY_MAX);
  size_t n = buf ? fread(buf, 1, REPLAY_MAX, f) : 0;
  int err = buf == NULL || ferror(f);
  fclose(f);
  if (err) {
    fprintf(stderr, "%s: cannot read\n", path);
    free(buf);
    return -1;
  }
  /* An exact-size copy, so ASan sees a read past the input's end. */
  uint8_t *copy = malloc(n ? n : 1);
  if (copy == NULL) {
    free(buf);
    return -1;
  }
  memcpy(copy, buf, n);
  free(buf);
  LLVMFuzzerTestOneInput(copy, n);
  free(copy);
  return 0;
}

static int cmp(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Returns the number of inputs replayed, or -1. */
static int replay_dir(const char *dir) {
  DIR *d = opendir(dir);
  if (d == NULL) {
    perror(dir);
    return -1;
  }
  char **names = NULL;
  size_t n = 0, cap = 0;
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    if (e->d_name[0] == '.')
      continue; /* ., .. and .gitkeep */
    if (n == cap) {
      cap = cap ? cap * 2 : 64;
      char **p = realloc(names, cap * sizeof(*names));
      if (p == NULL)
        break;
      names = p;
    }
    if ((names[n] = strdup(e->d_name)) != NULL)
      n++;
  }
  closedir(d);
  if (n > 1)
    qsort(names, n, sizeof(*names), cmp);
  int count = 0, bad = 0;
  for (size_t i = 0; i < n; i++) {
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
    if (replay_file(path) == 0)
      count++;
    else
      bad = 1;
    free(names[i]);
  }
  free(names);
  return bad ? -1 : count;
}

int main(int argc, char **argv) {
  int total = 0, failed = 0;
  for (int i = 1; i < argc; i++) {
    struct stat sb;
    if (stat(argv[i], &sb) < 0) {
      perror(argv[i]);
      failed = 1;
      continue;
    }
    int n = S_ISDIR(sb.st_mode) ? replay_dir(argv[i])
                                : (replay_file(argv[i]) == 0 ? 1 : -1);
    if (n < 0)
      failed = 1;
    else
      total += n;
  }
  printf("replayed %d input%s\n", total, total == 1 ? "" : "s");
  return failed;
}
