/* fuzz_util.h - what the fuzz targets share: one private scratch folder per process (external data,
 * configs and data files are written there, never anywhere else), whole-file reads of the committed
 * fixtures, and the caps that keep one input small and quick (memory budget, sizes). */
#ifndef OP_FUZZ_UTIL_H
#define OP_FUZZ_UTIL_H

#include "onnxprune.h"

#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FUZZ_FIXTURES
#define FUZZ_FIXTURES "tests/fixtures"
#endif

static char fuzz_dir_name[64];

/* Removes the scratch folder and what the runs left in it (one level: nothing makes sub-folders). */
static inline void fuzz_cleanup(void) {
  DIR *d = opendir(fuzz_dir_name);
  if (!d) return;
  char path[PATH_MAX];
  for (struct dirent *e; (e = readdir(d));)
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
      snprintf(path, sizeof path, "%s/%s", fuzz_dir_name, e->d_name);
      unlink(path);
    }
  closedir(d);
  rmdir(fuzz_dir_name);
}

/* The scratch folder, made on first use and removed at exit; paths in it are built with fuzz_path. */
static inline const char *fuzz_dir(void) {
  if (!fuzz_dir_name[0]) {
    snprintf(fuzz_dir_name, sizeof fuzz_dir_name, "/tmp/onnx-prune-fuzz-XXXXXX");
    if (!mkdtemp(fuzz_dir_name)) abort();
    atexit(fuzz_cleanup);
  }
  return fuzz_dir_name;
}

static inline const char *fuzz_path(const char *name) {
  static char path[4][PATH_MAX];
  static int k;
  char *p = path[k++ & 3];
  snprintf(p, PATH_MAX, "%s/%s", fuzz_dir(), name);
  return p;
}

/* Replaces the file name in the scratch folder with the bytes [data, data+n). */
static inline void fuzz_write(const char *name, const uint8_t *data, size_t n) {
  int fd = open(fuzz_path(name), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  if (fd < 0) abort();
  for (size_t done = 0; done < n;) {
    ssize_t w = write(fd, data + done, n - done);
    if (w <= 0) abort();
    done += (size_t)w;
  }
  close(fd);
}

/* A committed fixture's bytes, read once (abort if missing: a fuzz run without its fixture is void). */
static inline uint8_t *fuzz_fixture(const char *rel, size_t *n) {
  char path[PATH_MAX];
  snprintf(path, sizeof path, "%s/%s", FUZZ_FIXTURES, rel);
  FILE *f = fopen(path, "rb");
  if (!f) {
    fprintf(stderr, "fuzz: cannot read %s\n", path);
    abort();
  }
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  uint8_t *buf = malloc(len > 0 ? (size_t)len : 1);
  if (!buf || fread(buf, 1, (size_t)len, f) != (size_t)len) abort();
  fclose(f);
  *n = (size_t)len;
  return buf;
}

/* Every target runs under a small memory budget, so a hostile size is refused, not allocated. */
static inline void fuzz_caps(void) { op_set_max_memory("256M", NULL); }

#endif
