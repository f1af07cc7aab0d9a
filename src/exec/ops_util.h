/* ops_util.h - small helpers shared by the kernel families added for real exports (ops_math.c,
 * ops_reduce.c, ops_index.c, ops_conv.c, ops_control.c, ops_attn.c): element access by type,
 * numpy broadcasting by flat index, axis lists from attributes or inputs, and refusals. */
#ifndef OP_EXEC_OPS_UTIL_H
#define OP_EXEC_OPS_UTIL_H

#include "exec/exec.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define T_FLOAT ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT
#define T_INT64 ONNX__TENSOR_PROTO__DATA_TYPE__INT64
#define T_INT32 ONNX__TENSOR_PROTO__DATA_TYPE__INT32
#define T_BOOL ONNX__TENSOR_PROTO__DATA_TYPE__BOOL

static inline int64_t ou_prod(const int64_t *d, int from, int to) {
  int64_t p = 1;
  for (int i = from; i < to; i++) p *= d[i];
  return p;
}

static inline bool ou_is_int(int32_t dt) { return dt == T_INT64 || dt == T_INT32; }

/* Refuses x unless its type is one of the listed ones (the types adapter widens the others first). */
static inline int ou_want(const op_kctx *k, const op_xt *x, const char *what, bool f32, bool ints, bool boolean,
                          op_error *err) {
  if ((f32 && x->dtype == T_FLOAT) || (ints && ou_is_int(x->dtype)) || (boolean && x->dtype == T_BOOL)) return 0;
  return op_fail(err, OP_UNSUPPORTED, "%s: node '%s' (%s): %s of type %d is not supported", k->model,
                 op_node_name(k->node), k->node->op_type, what, x->dtype);
}

/* A refusal of something the executor does not compute (as opposed to bad data): OP_UNSUPPORTED. */
static inline int ou_unsupported(const op_kctx *k, op_error *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static inline int ou_unsupported(const op_kctx *k, op_error *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = op_kvfail(k, err, OP_UNSUPPORTED, fmt, ap);
  va_end(ap);
  return rc;
}

/* Element i of a float/int64/int32/bool tensor as double, and a store of a double into one. */
static inline double ou_get(const op_xt *t, int64_t i) {
  switch (t->dtype) {
    case T_FLOAT: return ((const float *)t->data)[i];
    case T_INT64: return (double)((const int64_t *)t->data)[i];
    case T_INT32: return ((const int32_t *)t->data)[i];
    default: return ((const uint8_t *)t->data)[i];
  }
}
static inline void ou_set(op_xt *t, int64_t i, double v) {
  switch (t->dtype) {
    case T_FLOAT: ((float *)t->data)[i] = (float)v; break;
    case T_INT64: ((int64_t *)t->data)[i] = (int64_t)v; break;
    case T_INT32: ((int32_t *)t->data)[i] = (int32_t)v; break;
    default: ((uint8_t *)t->data)[i] = v != 0; break;
  }
}

/* numpy broadcasting of up to 8 inputs: the output shape and each input's strides (0 on broadcast axes). */
#define OU_MAX_BC 8
typedef struct ou_bcast {
  int rank;
  int64_t dims[OP_MAX_RANK], numel;
  int64_t stride[OU_MAX_BC][OP_MAX_RANK];
} ou_bcast;

static inline int ou_bcast_init(const op_kctx *k, op_xt *const *in, int n, ou_bcast *b, op_error *err) {
  if (n > OU_MAX_BC) return op_kfail(k, err, "more than %d inputs", OU_MAX_BC);
  memset(b, 0, sizeof *b);
  for (int i = 0; i < n; i++) b->rank = in[i]->rank > b->rank ? in[i]->rank : b->rank;
  for (int d = 0; d < b->rank; d++) {
    int64_t dim = 1;
    bool zero = false;
    for (int i = 0; i < n; i++) {
      int off = b->rank - in[i]->rank;
      int64_t di = d < off ? 1 : in[i]->dims[d - off];
      if (di == 0) zero = true;
      if (di != 1 && dim != 1 && dim != di)
        return op_kfail(k, err, "shapes do not broadcast (axis %d: %lld vs %lld)", d, (long long)dim, (long long)di);
      if (di != 1) dim = di;
    }
    b->dims[d] = zero ? 0 : dim;
  }
  for (int i = 0; i < n; i++) {
    int off = b->rank - in[i]->rank;
    int64_t s = 1;
    for (int d = b->rank - 1; d >= 0; d--) {
      int64_t di = d < off ? 1 : in[i]->dims[d - off];
      b->stride[i][d] = di == 1 ? 0 : s;
      s *= di;
    }
  }
  b->numel = ou_prod(b->dims, 0, b->rank);
  return 0;
}

/* Offset in input i of output element `flat`. */
static inline int64_t ou_bcast_off(const ou_bcast *b, int i, int64_t flat) {
  int64_t off = 0;
  for (int d = b->rank - 1; d >= 0; d--) {
    int64_t q = b->dims[d] ? flat % b->dims[d] : 0;
    flat = b->dims[d] ? flat / b->dims[d] : 0;
    off += q * b->stride[i][d];
  }
  return off;
}

/* Axes from an attribute (before opset `since`) or from the optional input `slot`; marks red[].
 * Returns the number of axes named, or -1 with err. */
static inline int ou_axes(const op_kctx *k, op_xt **in, size_t n_in, size_t slot, int64_t since, int rank, bool *red,
                          op_error *err) {
  int n = 0;
  for (int d = 0; d < OP_MAX_RANK; d++) red[d] = false;
  if (k->opset < since) {
    size_t na;
    const int64_t *ax = op_kattr_ints(k, "axes", &na);
    for (size_t i = 0; i < na; i++, n++) {
      int a = op_axis(ax[i], rank);
      if (a < 0) return op_kfail(k, err, "axis %lld out of range", (long long)ax[i]);
      red[a] = true;
    }
  } else if (slot < n_in && in[slot]) {
    if (!ou_is_int(in[slot]->dtype)) return op_kfail(k, err, "axes must be int64");
    for (int64_t i = 0; i < in[slot]->numel; i++, n++) {
      int a = op_axis(op_xt_int(in[slot], i), rank);
      if (a < 0) return op_kfail(k, err, "axis %lld out of range", (long long)op_xt_int(in[slot], i));
      red[a] = true;
    }
  }
  return n;
}

/* Row-major strides of dims. */
static inline void ou_strides(const int64_t *dims, int rank, int64_t *st) {
  int64_t s = 1;
  for (int d = rank - 1; d >= 0; d--) {
    st[d] = s;
    s *= dims[d];
  }
}

#endif
