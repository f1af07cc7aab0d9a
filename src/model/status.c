/* status.c - status strings (from OP_STATUS_MAP), error formatting and checked allocation. */
#include "model/model.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *op_version(void) { return OP_VERSION_STRING; }

const char *op_status_str(op_status code) {
  switch (code) {
#define OP_STATUS_STR(name, str) \
  case OP_##name:                \
    return str;
    OP_STATUS_MAP(OP_STATUS_STR)
#undef OP_STATUS_STR
  }
  return "unknown status";
}

static void vfail(op_error *err, op_status code, const char *fmt, va_list ap) {
  if (!err) return;
  err->code = code;
  vsnprintf(err->message, sizeof err->message, fmt, ap);
}

int op_fail(op_error *err, op_status code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(err, code, fmt, ap);
  va_end(ap);
  return -1;
}

void *op_fail_null(op_error *err, op_status code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vfail(err, code, fmt, ap);
  va_end(ap);
  return NULL;
}

static void oom(size_t n) {
  fprintf(stderr, "onnx-prune: out of memory allocating %zu bytes\n", n);
  abort();
}

void *op_xmalloc(size_t n) {
  void *p = malloc(n ? n : 1);
  if (!p) oom(n);
  return p;
}

void *op_xcalloc(size_t n, size_t size) {
  void *p = calloc(n ? n : 1, size ? size : 1);
  if (!p) oom(n * size);
  return p;
}

void *op_xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) oom(n);
  return q;
}

char *op_xstrdup(const char *s) {
  size_t n = strlen(s) + 1;
  char *p = op_xmalloc(n);
  memcpy(p, s, n);
  return p;
}

void op_free(void *p) { free(p); }
