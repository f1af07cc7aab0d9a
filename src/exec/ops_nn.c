/* ops_nn.c - Softmax (with the pre-13 "flatten at axis" semantics), LayerNormalization,
 * ReduceMean/ReduceSum (axes as attribute or input by opset) and per-tensor / per-axis
 * QuantizeLinear and DequantizeLinear. */
#include "exec/exec.h"
#include "exec/fastmath.h"
#include "parallel/parallel.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define T_FLOAT ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT
#define T_INT8 ONNX__TENSOR_PROTO__DATA_TYPE__INT8
#define T_UINT8 ONNX__TENSOR_PROTO__DATA_TYPE__UINT8
#define T_INT32 ONNX__TENSOR_PROTO__DATA_TYPE__INT32

static int64_t prod(const int64_t *d, int from, int to) {
  int64_t p = 1;
  for (int i = from; i < to; i++) p *= d[i];
  return p;
}

/* Softmax over lines [lo, hi) of n values spaced inner apart (line l starts at (l / inner) * n * inner +
 * l % inner). exp is fastmath's and the contiguous case's max and sum are in lanes, so it vectorises. */
OP_VECTOR_CLONES static void softmax_lines(const float *a, float *o, int64_t lo, int64_t hi, int64_t n, int64_t inner) {
  for (int64_t l = lo; l < hi; l++) {
    int64_t base = (l / inner) * n * inner + l % inner;
    const float *row = a + base;
    float *orow = o + base;
    float m = -INFINITY;
    double sum = 0;
    if (inner == 1) { /* the usual last-axis case */
      m = op_max_lanes(row, n);
      for (int64_t j = 0; j < n; j++) orow[j] = op_expf(row[j] - m);
      sum = op_sum_lanes(orow, n);
    } else {
      for (int64_t j = 0; j < n; j++) m = row[j * inner] > m ? row[j * inner] : m;
      for (int64_t j = 0; j < n; j++) orow[j * inner] = op_expf(row[j * inner] - m);
      for (int64_t j = 0; j < n; j++) sum += orow[j * inner];
    }
    float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < n; j++) orow[j * inner] *= inv;
  }
}

typedef struct softmax_job {
  const float *a;
  float *o;
  int64_t n, inner;
} softmax_job;

static void softmax_range(void *ctx, int64_t lo, int64_t hi) {
  const softmax_job *j = ctx;
  softmax_lines(j->a, j->o, lo, hi, j->n, j->inner);
}

OP_KERNEL(op_k_softmax) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0];
  if (x->dtype != T_FLOAT) return op_kfail(k, err, "only float32 is supported");
  int axis = op_axis(op_kattr_int(k, "axis", k->opset < 13 ? 1 : -1), x->rank);
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  if (op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  int64_t outer = prod(x->dims, 0, axis), n, inner;
  if (k->opset < 13) { /* the input is seen as [outer, rest] */
    n = prod(x->dims, axis, x->rank);
    inner = 1;
  } else {
    n = x->dims[axis];
    inner = prod(x->dims, axis + 1, x->rank);
  }
  softmax_job j = {x->data, out->data, n, inner};
  op_parallel_for(outer * inner, n * (int64_t)(2 * sizeof(float)), softmax_range, &j); /* lines split across threads */
  return 0;
}

/* Normalises rows of n values: moments in lanes (vectorised), deviations from the float mean corrected. */
OP_VECTOR_CLONES static void layer_norm_rows(const float *a, const float *g, const float *b, float *o, int64_t rows,
                                             int64_t n, float eps, float *means, float *invs) {
  for (int64_t r = 0; r < rows; r++) {
    const float *row = a + r * n;
    op_row_moments m = op_row_moments_of(row, n, 1);
    float inv = (float)(1.0 / sqrt(m.var + eps));
    for (int64_t j = 0; j < n; j++) o[r * n + j] = ((row[j] - m.shift) - m.corr) * inv * g[j] + (b ? b[j] : 0.f);
    if (means) means[r] = (float)((double)m.shift + m.corr);
    if (invs) invs[r] = inv;
  }
}

OP_KERNEL(op_k_layer_norm) {
  op_xt *x = in[0], *scale = in[1], *bias = n_in > 2 ? in[2] : NULL;
  if (x->dtype != T_FLOAT || scale->dtype != T_FLOAT || (bias && bias->dtype != T_FLOAT))
    return op_kfail(k, err, "only float32 is supported");
  int axis = op_axis(op_kattr_int(k, "axis", -1), x->rank);
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  float eps = op_kattr_float(k, "epsilon", 1e-5f);
  int64_t n = prod(x->dims, axis, x->rank), rows = prod(x->dims, 0, axis);
  if (scale->numel != n || (bias && bias->numel != n))
    return op_kfail(k, err, "scale and bias must hold the %lld normalised values", (long long)n);
  if (op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  /* optional Mean and InvStdDev: the input's shape with the normalised axes kept as 1 */
  int64_t sdims[OP_MAX_RANK];
  for (int d = 0; d < x->rank; d++) sdims[d] = d < axis ? x->dims[d] : 1;
  for (size_t j = 1; j < n_out && j < 3; j++)
    if (op_xt_alloc(&out[j], T_FLOAT, sdims, x->rank, err)) return -1;
  const float *a = x->data, *g = scale->data, *b = bias ? bias->data : NULL;
  float *o = out->data;
  layer_norm_rows(a, g, b, o, rows, n, eps, n_out > 1 ? out[1].data : NULL, n_out > 2 ? out[2].data : NULL);
  return 0;
}

/* o[q] = scale * the sum of row q of a[rows, n] (the trailing-axes reduction: norms' means). */
OP_VECTOR_CLONES static void row_sums(const float *a, float *o, int64_t rows, int64_t n, double scale) {
  for (int64_t q = 0; q < rows; q++) o[q] = (float)(op_sum_lanes(a + q * n, n) * scale);
}

static int reduce(const op_kctx *k, op_xt **in, size_t n_in, op_xt *out, bool mean, int64_t axes_input_since,
                  op_error *err) {
  op_xt *x = in[0];
  if (x->dtype != T_FLOAT) return op_kfail(k, err, "only float32 is supported");
  bool red[OP_MAX_RANK] = {false};
  int n_axes = 0;
  if (k->opset < axes_input_since) {
    size_t na;
    const int64_t *ax = op_kattr_ints(k, "axes", &na);
    for (size_t i = 0; i < na; i++, n_axes++) {
      int a = op_axis(ax[i], x->rank);
      if (a < 0) return op_kfail(k, err, "axis out of range");
      red[a] = true;
    }
  } else if (n_in > 1 && in[1]) {
    for (int64_t i = 0; i < in[1]->numel; i++, n_axes++) {
      int a = op_axis(op_xt_int(in[1], i), x->rank);
      if (a < 0) return op_kfail(k, err, "axis out of range");
      red[a] = true;
    }
  }
  if (n_axes == 0) {
    if (op_kattr_int(k, "noop_with_empty_axes", 0)) {
      if (op_xt_alloc(out, x->dtype, x->dims, x->rank, err)) return -1;
      memcpy(out->data, x->data, (size_t)x->numel * sizeof(float));
      return 0;
    }
    for (int d = 0; d < x->rank; d++) red[d] = true;
  }
  bool keep = op_kattr_int(k, "keepdims", 1) != 0;
  int64_t dims[OP_MAX_RANK], kdims[OP_MAX_RANK], count = 1;
  int r = 0;
  for (int d = 0; d < x->rank; d++) {
    kdims[d] = red[d] ? 1 : x->dims[d];
    if (red[d]) count *= x->dims[d];
    if (!red[d] || keep) dims[r++] = kdims[d];
  }
  if (op_xt_alloc(out, T_FLOAT, dims, r, err)) return -1;
  const float *a = x->data;
  float *o = out->data;
  /* a trailing block of reduced axes is the common case (norms): sum contiguous rows */
  int first = x->rank;
  while (first > 0 && red[first - 1]) first--;
  bool trailing = true;
  for (int d = 0; d < first; d++) trailing &= !red[d];
  if (trailing) {
    int64_t n = prod(x->dims, first, x->rank), rows = n ? x->numel / n : 0;
    row_sums(a, o, rows, n, mean ? 1.0 / (double)(count ? count : 1) : 1.0);
    return 0;
  }
  double *acc = op_xcalloc((size_t)(out->numel ? out->numel : 1), sizeof(double));
  int64_t idx[OP_MAX_RANK] = {0};
  for (int64_t i = 0; i < x->numel; i++) {
    int64_t oi = 0;
    for (int d = 0; d < x->rank; d++) oi = oi * kdims[d] + (red[d] ? 0 : idx[d]);
    acc[oi] += a[i];
    for (int d = x->rank - 1; d >= 0; d--) {
      if (++idx[d] < x->dims[d]) break;
      idx[d] = 0;
    }
  }
  for (int64_t i = 0; i < out->numel; i++) o[i] = (float)(mean ? acc[i] / (double)(count ? count : 1) : acc[i]);
  free(acc);
  return 0;
}

OP_KERNEL(op_k_reduce_mean) {
  (void)n_out;
  return reduce(k, in, n_in, out, true, 18, err);
}

OP_KERNEL(op_k_reduce_sum) {
  (void)n_out;
  return reduce(k, in, n_in, out, false, 13, err);
}

/* Per-tensor (scale of 1 element) or per-axis (scale of dims[axis] elements) parameters. */
static int qparams(const op_kctx *k, const op_xt *x, const op_xt *scale, const op_xt *zp, int64_t *inner,
                   int64_t *channels, op_error *err) {
  *inner = 1;
  *channels = 1;
  if (scale->dtype != T_FLOAT) return op_kfail(k, err, "scale must be float32");
  if (scale->numel == 1) return zp && zp->numel != 1 ? op_kfail(k, err, "zero point and scale differ in size") : 0;
  int axis = op_axis(op_kattr_int(k, "axis", 1), x->rank);
  if (axis < 0 || scale->rank != 1 || scale->numel != x->dims[axis])
    return op_kfail(k, err, "per-axis scale has %lld values for an axis of %lld", (long long)scale->numel,
                    axis < 0 ? -1LL : (long long)x->dims[axis]);
  if (zp && zp->numel != scale->numel) return op_kfail(k, err, "zero point and scale differ in size");
  *channels = scale->numel;
  *inner = prod(x->dims, axis + 1, x->rank);
  return 0;
}

OP_KERNEL(op_k_dequantize_linear) {
  (void)n_out;
  op_xt *x = in[0], *scale = in[1], *zp = n_in > 2 ? in[2] : NULL;
  if (x->dtype != T_INT8 && x->dtype != T_UINT8 && x->dtype != T_INT32) return op_kfail(k, err, "input must be int8, uint8 or int32");
  if (zp && zp->dtype != x->dtype) return op_kfail(k, err, "zero point type differs from the input's");
  int64_t inner, ch;
  if (qparams(k, x, scale, zp, &inner, &ch, err) || op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  const float *s = scale->data;
  float *o = out->data;
  for (int64_t i = 0; i < x->numel; i++) {
    int64_t c = ch > 1 ? (i / inner) % ch : 0;
    int64_t q = op_xt_int(x, i), z = zp ? op_xt_int(zp, c) : 0;
    o[i] = (float)(q - z) * s[c];
  }
  return 0;
}

OP_KERNEL(op_k_quantize_linear) {
  (void)n_out;
  op_xt *x = in[0], *scale = in[1], *zp = n_in > 2 ? in[2] : NULL;
  if (x->dtype != T_FLOAT) return op_kfail(k, err, "input must be float32");
  int32_t to = zp ? zp->dtype : T_UINT8;
  if (to != T_INT8 && to != T_UINT8) return op_kfail(k, err, "zero point must be int8 or uint8");
  int64_t inner, ch;
  if (qparams(k, x, scale, zp, &inner, &ch, err) || op_xt_alloc(out, to, x->dims, x->rank, err)) return -1;
  const float *a = x->data, *s = scale->data;
  int lo = to == T_INT8 ? -128 : 0, hi = to == T_INT8 ? 127 : 255;
  for (int64_t i = 0; i < x->numel; i++) {
    int64_t c = ch > 1 ? (i / inner) % ch : 0;
    int z = zp ? (int)op_xt_int(zp, c) : 0;
    float v = nearbyintf(a[i] / s[c]) + (float)z; /* round half to even, then saturate */
    int q = v < lo ? lo : v > hi ? hi : (int)v;
    if (to == T_INT8) ((int8_t *)out->data)[i] = (int8_t)q;
    else ((uint8_t *)out->data)[i] = (uint8_t)q;
  }
  return 0;
}
