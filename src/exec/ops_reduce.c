/* ops_reduce.c - reductions over axes (ReduceMax/Min/Prod/L1/L2/LogSum/LogSumExp/SumSquare, axes
 * as attribute before opset 18 and as input since), ArgMax/ArgMin, TopK and CumSum. */
#include "exec/ops_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum red { R_MAX, R_MIN, R_PROD, R_L1, R_L2, R_LOGSUM, R_LOGSUMEXP, R_SUMSQ };

static int reduce(const op_kctx *k, op_xt **in, size_t n_in, op_xt *out, enum red r, op_error *err) {
  op_xt *x = in[0];
  bool ints_ok = r == R_MAX || r == R_MIN || r == R_PROD || r == R_L1 || r == R_SUMSQ;
  if (ou_want(k, x, "input", true, ints_ok, false, err)) return -1;
  bool red[OP_MAX_RANK];
  int n_axes = ou_axes(k, in, n_in, 1, 18, x->rank, red, err);
  if (n_axes < 0) return -1;
  if (n_axes == 0) {
    if (op_kattr_int(k, "noop_with_empty_axes", 0)) {
      if (op_xt_alloc(out, x->dtype, x->dims, x->rank, err)) return -1;
      memcpy(out->data, x->data, (size_t)x->numel * op_xt_elem_size(x->dtype));
      return 0;
    }
    for (int d = 0; d < x->rank; d++) red[d] = true;
  }
  bool keep = op_kattr_int(k, "keepdims", 1) != 0;
  int64_t dims[OP_MAX_RANK], kdims[OP_MAX_RANK];
  int rank = 0;
  for (int d = 0; d < x->rank; d++) {
    kdims[d] = red[d] ? 1 : x->dims[d];
    if (!red[d] || keep) dims[rank++] = kdims[d];
  }
  if (op_xt_alloc(out, x->dtype, dims, rank, err)) return -1;
  int64_t m = out->numel ? out->numel : 1;
  bool fl = x->dtype == T_FLOAT;
  double *acc = op_xmalloc((size_t)m * sizeof(double));
  int64_t *iacc = op_xmalloc((size_t)m * sizeof(int64_t));
  for (int64_t i = 0; i < m; i++) {
    acc[i] = r == R_MAX ? -INFINITY : r == R_MIN ? INFINITY : r == R_PROD ? 1 : 0;
    iacc[i] = r == R_MAX ? INT64_MIN : r == R_MIN ? INT64_MAX : r == R_PROD ? 1 : 0;
  }
  /* LogSumExp subtracts each output's max first, so large inputs do not overflow */
  double *mx = NULL;
  if (r == R_LOGSUMEXP) {
    mx = op_xmalloc((size_t)m * sizeof(double));
    for (int64_t i = 0; i < m; i++) mx[i] = -INFINITY;
  }
  for (int pass = r == R_LOGSUMEXP ? 0 : 1; pass < 2; pass++) {
    int64_t idx[OP_MAX_RANK] = {0};
    for (int64_t i = 0; i < x->numel; i++) {
      int64_t oi = 0;
      for (int d = 0; d < x->rank; d++) oi = oi * kdims[d] + (red[d] ? 0 : idx[d]);
      if (fl) {
        double v = ((const float *)x->data)[i];
        if (pass == 0) mx[oi] = v > mx[oi] ? v : mx[oi];
        else switch (r) {
            case R_MAX: acc[oi] = v > acc[oi] || isnan(v) ? v : acc[oi]; break;
            case R_MIN: acc[oi] = v < acc[oi] || isnan(v) ? v : acc[oi]; break;
            case R_PROD: acc[oi] *= v; break;
            case R_L1: acc[oi] += fabs(v); break;
            case R_L2: case R_SUMSQ: acc[oi] += v * v; break;
            case R_LOGSUM: acc[oi] += v; break;
            case R_LOGSUMEXP: acc[oi] += isinf(mx[oi]) ? exp(v) : exp(v - mx[oi]); break;
          }
      } else {
        int64_t v = op_xt_int(x, i);
        switch (r) {
          case R_MAX: iacc[oi] = v > iacc[oi] ? v : iacc[oi]; break;
          case R_MIN: iacc[oi] = v < iacc[oi] ? v : iacc[oi]; break;
          case R_PROD: iacc[oi] *= v; break;
          case R_L1: iacc[oi] += v < 0 ? -v : v; break;
          default: iacc[oi] += v * v; break;
        }
      }
      for (int d = x->rank - 1; d >= 0; d--) {
        if (++idx[d] < x->dims[d]) break;
        idx[d] = 0;
      }
    }
  }
  for (int64_t i = 0; i < out->numel; i++) {
    if (!fl) { /* exact: int64 stores without a trip through double */
      if (x->dtype == T_INT64) ((int64_t *)out->data)[i] = iacc[i];
      else ((int32_t *)out->data)[i] = (int32_t)iacc[i];
      continue;
    }
    double v = acc[i];
    if (r == R_L2) v = sqrt(v);
    else if (r == R_LOGSUM) v = log(v);
    else if (r == R_LOGSUMEXP) v = isinf(mx[i]) ? log(v) : log(v) + mx[i];
    ((float *)out->data)[i] = (float)v;
  }
  free(acc);
  free(iacc);
  free(mx);
  return 0;
}

#define REDUCE_KERNEL(fn, r)                                                                      \
  OP_KERNEL(fn) {                                                                                 \
    (void)n_out;                                                                                  \
    return reduce(k, in, n_in, out, r, err);                                                      \
  }
REDUCE_KERNEL(op_k_reduce_max, R_MAX)
REDUCE_KERNEL(op_k_reduce_min, R_MIN)
REDUCE_KERNEL(op_k_reduce_prod, R_PROD)
REDUCE_KERNEL(op_k_reduce_l1, R_L1)
REDUCE_KERNEL(op_k_reduce_l2, R_L2)
REDUCE_KERNEL(op_k_reduce_log_sum, R_LOGSUM)
REDUCE_KERNEL(op_k_reduce_log_sum_exp, R_LOGSUMEXP)
REDUCE_KERNEL(op_k_reduce_sum_square, R_SUMSQ)

/* ArgMax / ArgMin along one axis; ties go to the first index unless select_last_index. */
static int arg_extreme(const op_kctx *k, op_xt *x, op_xt *out, bool max, op_error *err) {
  if (ou_want(k, x, "input", true, true, false, err)) return -1;
  int axis = op_axis(op_kattr_int(k, "axis", 0), x->rank);
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  if (x->dims[axis] == 0) return op_kfail(k, err, "cannot take the extreme of an empty axis");
  bool keep = op_kattr_int(k, "keepdims", 1) != 0, last = op_kattr_int(k, "select_last_index", 0) != 0;
  int64_t dims[OP_MAX_RANK];
  int rank = 0;
  for (int d = 0; d < x->rank; d++)
    if (d != axis) dims[rank++] = x->dims[d];
    else if (keep) dims[rank++] = 1;
  if (op_xt_alloc(out, T_INT64, dims, rank, err)) return -1;
  int64_t outer = ou_prod(x->dims, 0, axis), n = x->dims[axis], inner = ou_prod(x->dims, axis + 1, x->rank);
  int64_t *o = out->data;
  for (int64_t q = 0; q < outer; q++)
    for (int64_t r = 0; r < inner; r++) {
      int64_t base = q * n * inner + r, best = 0;
      double bv = ou_get(x, base);
      for (int64_t j = 1; j < n; j++) {
        double v = ou_get(x, base + j * inner);
        bool better = max ? (v > bv || (last && v == bv)) : (v < bv || (last && v == bv));
        if (better) bv = v, best = j;
      }
      o[q * inner + r] = best;
    }
  return 0;
}

OP_KERNEL(op_k_argmax) {
  (void)n_in, (void)n_out;
  return arg_extreme(k, in[0], out, true, err);
}

OP_KERNEL(op_k_argmin) {
  (void)n_in, (void)n_out;
  return arg_extreme(k, in[0], out, false, err);
}

typedef struct kv {
  double v;
  int64_t i;
} kv;
static int by_largest(const void *a, const void *b) {
  const kv *x = a, *y = b;
  if (x->v != y->v) return x->v > y->v ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}
static int by_smallest(const void *a, const void *b) {
  const kv *x = a, *y = b;
  if (x->v != y->v) return x->v < y->v ? -1 : 1;
  return x->i < y->i ? -1 : x->i > y->i;
}

/* TopK: the K largest (or smallest) along an axis, sorted, ties broken by the lower index. */
OP_KERNEL(op_k_topk) {
  (void)n_in;
  op_xt *x = in[0], *kt = in[1];
  if (ou_want(k, x, "input", true, true, false, err) || ou_want(k, kt, "K", false, true, false, err)) return -1;
  if (kt->numel != 1) return op_kfail(k, err, "K must hold one value");
  int axis = op_axis(op_kattr_int(k, "axis", -1), x->rank);
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  int64_t K = op_xt_int(kt, 0), n = x->dims[axis];
  if (K < 0 || K > n) return op_kfail(k, err, "K = %lld is outside [0, %lld]", (long long)K, (long long)n);
  bool largest = op_kattr_int(k, "largest", 1) != 0;
  int64_t dims[OP_MAX_RANK];
  memcpy(dims, x->dims, sizeof dims);
  dims[axis] = K;
  if (op_xt_alloc(&out[0], x->dtype, dims, x->rank, err)) return -1;
  if (n_out > 1 && op_xt_alloc(&out[1], T_INT64, dims, x->rank, err)) return -1;
  int64_t outer = ou_prod(x->dims, 0, axis), inner = ou_prod(x->dims, axis + 1, x->rank);
  kv *buf = op_xmalloc((size_t)(n ? n : 1) * sizeof *buf);
  for (int64_t q = 0; q < outer; q++)
    for (int64_t r = 0; r < inner; r++) {
      for (int64_t j = 0; j < n; j++) buf[j] = (kv){ou_get(x, (q * n + j) * inner + r), j};
      qsort(buf, (size_t)n, sizeof *buf, largest ? by_largest : by_smallest);
      for (int64_t j = 0; j < K; j++) {
        int64_t o = (q * K + j) * inner + r;
        if (x->dtype == T_INT64) ((int64_t *)out[0].data)[o] = op_xt_int(x, (q * n + buf[j].i) * inner + r);
        else ou_set(&out[0], o, buf[j].v);
        if (n_out > 1) ((int64_t *)out[1].data)[o] = buf[j].i;
      }
    }
  free(buf);
  return 0;
}

OP_KERNEL(op_k_cumsum) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *ax = in[1];
  if (ou_want(k, x, "input", true, true, false, err) || ou_want(k, ax, "axis", false, true, false, err)) return -1;
  if (ax->numel != 1) return op_kfail(k, err, "axis must be a scalar");
  int axis = op_axis(op_xt_int(ax, 0), x->rank);
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  bool excl = op_kattr_int(k, "exclusive", 0) != 0, rev = op_kattr_int(k, "reverse", 0) != 0;
  if (op_xt_alloc(out, x->dtype, x->dims, x->rank, err)) return -1;
  int64_t outer = ou_prod(x->dims, 0, axis), n = x->dims[axis], inner = ou_prod(x->dims, axis + 1, x->rank);
  for (int64_t q = 0; q < outer; q++)
    for (int64_t r = 0; r < inner; r++) {
      double s = 0;
      int64_t is = 0;
      for (int64_t t = 0; t < n; t++) {
        int64_t j = rev ? n - 1 - t : t, o = (q * n + j) * inner + r;
        if (x->dtype == T_FLOAT) {
          float v = ((float *)x->data)[o];
          ((float *)out->data)[o] = (float)(excl ? s : s + v);
          s += v;
        } else {
          int64_t v = op_xt_int(x, o);
          if (x->dtype == T_INT64) ((int64_t *)out->data)[o] = excl ? is : is + v;
          else ((int32_t *)out->data)[o] = (int32_t)(excl ? is : is + v);
          is += v;
        }
      }
    }
  return 0;
}
