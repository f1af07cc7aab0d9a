/* ops_index.c - operators that pick or place elements by index or position: Trilu, Tile, Pad
 * (constant/reflect/edge/wrap), GatherElements, GatherND, ScatterElements, ScatterND (with their
 * reductions), NonZero and OneHot. Data moves as bytes of any type; reductions need numbers. */
#include "exec/ops_util.h"

#include <stdlib.h>
#include <string.h>

static size_t esz(const op_xt *t) { return op_xt_elem_size(t->dtype); }

/* An index input element, wrapped once if negative; -1 with err when out of [0, dim). */
static int64_t wrap_index(const op_kctx *k, const op_xt *ind, int64_t i, int64_t dim, op_error *err) {
  int64_t j = op_xt_int(ind, i);
  if (j < 0) j += dim;
  if (j < 0 || j >= dim) {
    op_kfail(k, err, "index %lld is out of range [-%lld, %lld)", (long long)op_xt_int(ind, i), (long long)dim,
             (long long)dim);
    return -1;
  }
  return j;
}

OP_KERNEL(op_k_trilu) {
  (void)n_out;
  op_xt *x = in[0];
  if (x->rank < 2) return op_kfail(k, err, "input must have rank 2 or more");
  int64_t diag = 0;
  if (n_in > 1 && in[1]) {
    if (ou_want(k, in[1], "k", false, true, false, err)) return -1;
    if (in[1]->numel != 1) return op_kfail(k, err, "k must be a scalar");
    diag = op_xt_int(in[1], 0);
  }
  bool upper = op_kattr_int(k, "upper", 1) != 0;
  if (op_xt_alloc(out, x->dtype, x->dims, x->rank, err)) return -1;
  int64_t R = x->dims[x->rank - 2], C = x->dims[x->rank - 1], mats = R && C ? x->numel / (R * C) : 0;
  size_t es = esz(x);
  const char *a = x->data;
  char *o = out->data;
  for (int64_t m = 0; m < mats; m++)
    for (int64_t i = 0; i < R; i++)
      for (int64_t j = 0; j < C; j++) {
        int64_t off = ((m * R + i) * C + j) * (int64_t)es;
        bool keep = upper ? j - i >= diag : j - i <= diag;
        if (keep) memcpy(o + off, a + off, es);
        else memset(o + off, 0, es);
      }
  return 0;
}

OP_KERNEL(op_k_tile) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *rep = in[1];
  if (ou_want(k, rep, "repeats", false, true, false, err)) return -1;
  if (rep->numel != x->rank) return op_kfail(k, err, "repeats has %lld values for rank %d", (long long)rep->numel, x->rank);
  int64_t dims[OP_MAX_RANK], st[OP_MAX_RANK];
  for (int d = 0; d < x->rank; d++) {
    int64_t r = op_xt_int(rep, d);
    if (r < 0) return op_kfail(k, err, "negative repeat %lld", (long long)r);
    dims[d] = x->dims[d] * r;
  }
  if (op_xt_alloc(out, x->dtype, dims, x->rank, err)) return -1;
  ou_strides(x->dims, x->rank, st);
  size_t es = esz(x);
  int64_t idx[OP_MAX_RANK] = {0};
  for (int64_t i = 0; i < out->numel; i++) {
    int64_t src = 0;
    for (int d = 0; d < x->rank; d++) src += (idx[d] % x->dims[d]) * st[d];
    memcpy((char *)out->data + i * (int64_t)es, (char *)x->data + src * (int64_t)es, es);
    for (int d = x->rank - 1; d >= 0; d--) {
      if (++idx[d] < dims[d]) break;
      idx[d] = 0;
    }
  }
  return 0;
}

/* Pad: pads (begin values, then end values, per padded axis) from an input since opset 11, axes
 * from an input since 18; negative pads crop. */
OP_KERNEL(op_k_pad) {
  (void)n_out;
  op_xt *x = in[0];
  int rank = x->rank;
  int64_t begin[OP_MAX_RANK] = {0}, end[OP_MAX_RANK] = {0};
  int axes[OP_MAX_RANK];
  int n_axes = rank;
  for (int d = 0; d < rank; d++) axes[d] = d;
  if (n_in > 3 && in[3]) {
    if (ou_want(k, in[3], "axes", false, true, false, err)) return -1;
    if (in[3]->numel > rank) return op_kfail(k, err, "more axes than the input's rank");
    n_axes = (int)in[3]->numel;
    for (int i = 0; i < n_axes; i++)
      if ((axes[i] = op_axis(op_xt_int(in[3], i), rank)) < 0) return op_kfail(k, err, "axis out of range");
  }
  double value = 0;
  if (k->opset < 11) {
    size_t np;
    const int64_t *p = op_kattr_ints(k, "pads", &np);
    if ((int)np != 2 * rank) return op_kfail(k, err, "pads has %zu values for rank %d", np, rank);
    for (int d = 0; d < rank; d++) begin[d] = p[d], end[d] = p[rank + d];
    value = op_kattr_float(k, "value", 0.f);
  } else {
    op_xt *p = in[1];
    if (!p) return op_kfail(k, err, "pads input is missing");
    if (ou_want(k, p, "pads", false, true, false, err)) return -1;
    if (p->numel != 2 * n_axes) return op_kfail(k, err, "pads has %lld values for %d axes", (long long)p->numel, n_axes);
    for (int i = 0; i < n_axes; i++) begin[axes[i]] = op_xt_int(p, i), end[axes[i]] = op_xt_int(p, n_axes + i);
    if (n_in > 2 && in[2] && in[2]->numel) {
      if (in[2]->dtype != x->dtype) return op_kfail(k, err, "constant_value type differs from the input's");
      if (ou_want(k, in[2], "constant_value", true, true, true, err)) return -1;
      value = ou_get(in[2], 0);
    }
  }
  Onnx__AttributeProto *ma = op_node_attr(k->node, "mode");
  char mode = 'c'; /* constant, reflect, edge, wrap */
  if (ma && ma->s.len) mode = (char)ma->s.data[0];
  if (mode != 'c' && mode != 'r' && mode != 'e' && mode != 'w')
    return ou_unsupported(k, err, "mode '%.*s'", (int)ma->s.len, (const char *)ma->s.data);
  if (mode == 'c' && ou_want(k, x, "input", true, true, true, err)) return -1;
  int64_t dims[OP_MAX_RANK], st[OP_MAX_RANK];
  for (int d = 0; d < rank; d++) {
    dims[d] = x->dims[d] + begin[d] + end[d];
    if (dims[d] < 0) return op_kfail(k, err, "pads shrink axis %d below zero", d);
    if (mode != 'c' && (dims[d] > 0 && x->dims[d] == 0)) return op_kfail(k, err, "cannot %s-pad an empty axis", mode == 'r' ? "reflect" : "edge");
    if (mode == 'r' && (begin[d] >= x->dims[d] || end[d] >= x->dims[d]) && (begin[d] > 0 || end[d] > 0))
      return op_kfail(k, err, "reflect pads of axis %d must be below its size %lld", d, (long long)x->dims[d]);
  }
  if (op_xt_alloc(out, x->dtype, dims, rank, err)) return -1;
  ou_strides(x->dims, rank, st);
  size_t es = esz(x);
  int64_t idx[OP_MAX_RANK] = {0};
  for (int64_t i = 0; i < out->numel; i++) {
    int64_t src = 0;
    bool outside = false;
    for (int d = 0; d < rank; d++) {
      int64_t j = idx[d] - begin[d], n = x->dims[d];
      if (j < 0 || j >= n) {
        if (mode == 'c') outside = true;
        else if (mode == 'e') j = j < 0 ? 0 : n - 1;
        else if (mode == 'w') j = ((j % n) + n) % n;
        else { /* reflect, without repeating the edge */
          int64_t period = 2 * (n - 1);
          j = period ? ((j % period) + period) % period : 0;
          if (j >= n) j = period - j;
        }
      }
      src += j * st[d];
    }
    if (outside) ou_set(out, i, value);
    else memcpy((char *)out->data + i * (int64_t)es, (char *)x->data + src * (int64_t)es, es);
    for (int d = rank - 1; d >= 0; d--) {
      if (++idx[d] < dims[d]) break;
      idx[d] = 0;
    }
  }
  return 0;
}

OP_KERNEL(op_k_gather_elements) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *ind = in[1];
  if (ou_want(k, ind, "indices", false, true, false, err)) return -1;
  int axis = op_axis(op_kattr_int(k, "axis", 0), x->rank);
  if (axis < 0 || ind->rank != x->rank) return op_kfail(k, err, "axis out of range or indices rank differs from the data's");
  if (op_xt_alloc(out, x->dtype, ind->dims, ind->rank, err)) return -1;
  int64_t st[OP_MAX_RANK], idx[OP_MAX_RANK] = {0};
  ou_strides(x->dims, x->rank, st);
  size_t es = esz(x);
  for (int64_t i = 0; i < ind->numel; i++) {
    int64_t j = wrap_index(k, ind, i, x->dims[axis], err), src = 0;
    if (j < 0) return -1;
    for (int d = 0; d < x->rank; d++) src += (d == axis ? j : idx[d]) * st[d];
    memcpy((char *)out->data + i * (int64_t)es, (char *)x->data + src * (int64_t)es, es);
    for (int d = ind->rank - 1; d >= 0; d--) {
      if (++idx[d] < ind->dims[d]) break;
      idx[d] = 0;
    }
  }
  return 0;
}

/* Combines an update into a destination element by the `reduction` attribute. */
enum sred { S_NONE, S_ADD, S_MUL, S_MAX, S_MIN };
static int scatter_reduction(const op_kctx *k, const op_xt *data, enum sred *r, op_error *err) {
  Onnx__AttributeProto *a = op_node_attr(k->node, "reduction");
  *r = S_NONE;
  if (!a || !a->s.len || (a->s.len == 4 && !memcmp(a->s.data, "none", 4))) return 0;
  const char *s = (const char *)a->s.data;
  if (a->s.len == 3 && !memcmp(s, "add", 3)) *r = S_ADD;
  else if (a->s.len == 3 && !memcmp(s, "mul", 3)) *r = S_MUL;
  else if (a->s.len == 3 && !memcmp(s, "max", 3)) *r = S_MAX;
  else if (a->s.len == 3 && !memcmp(s, "min", 3)) *r = S_MIN;
  else return ou_unsupported(k, err, "reduction '%.*s'", (int)a->s.len, s);
  return ou_want(k, data, "data with a reduction", true, true, false, err);
}

static void scatter_put(op_xt *out, int64_t dst, const op_xt *upd, int64_t src, enum sred r) {
  if (r == S_NONE) {
    size_t es = esz(out);
    memcpy((char *)out->data + dst * (int64_t)es, (char *)upd->data + src * (int64_t)es, es);
    return;
  }
  double a = ou_get(out, dst), b = ou_get(upd, src);
  double v = r == S_ADD ? a + b : r == S_MUL ? a * b : r == S_MAX ? (a > b ? a : b) : (a < b ? a : b);
  if (out->dtype == T_INT64) { /* exact for large integers */
    int64_t x = ((int64_t *)out->data)[dst], y = ((int64_t *)upd->data)[src];
    ((int64_t *)out->data)[dst] = r == S_ADD ? x + y : r == S_MUL ? x * y : r == S_MAX ? (x > y ? x : y) : (x < y ? x : y);
  } else {
    ou_set(out, dst, v);
  }
}

static int copy_of(op_xt *out, const op_xt *x, op_error *err) {
  if (op_xt_alloc(out, x->dtype, x->dims, x->rank, err)) return -1;
  memcpy(out->data, x->data, (size_t)x->numel * esz(x));
  return 0;
}

OP_KERNEL(op_k_scatter_elements) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *ind = in[1], *upd = in[2];
  enum sred r;
  if (ou_want(k, ind, "indices", false, true, false, err) || scatter_reduction(k, x, &r, err)) return -1;
  int axis = op_axis(op_kattr_int(k, "axis", 0), x->rank);
  if (axis < 0 || ind->rank != x->rank || upd->rank != ind->rank || upd->numel != ind->numel || upd->dtype != x->dtype)
    return op_kfail(k, err, "axis, indices and updates do not agree with the data");
  if (copy_of(out, x, err)) return -1;
  int64_t st[OP_MAX_RANK], idx[OP_MAX_RANK] = {0};
  ou_strides(x->dims, x->rank, st);
  for (int64_t i = 0; i < ind->numel; i++) {
    int64_t j = wrap_index(k, ind, i, x->dims[axis], err), dst = 0;
    if (j < 0) return -1;
    for (int d = 0; d < x->rank; d++) dst += (d == axis ? j : idx[d]) * st[d];
    scatter_put(out, dst, upd, i, r);
    for (int d = ind->rank - 1; d >= 0; d--) {
      if (++idx[d] < ind->dims[d]) break;
      idx[d] = 0;
    }
  }
  return 0;
}

/* The data offset a GatherND/ScatterND index tuple of q values points at (q <= rank from axis b). */
static int64_t nd_offset(const op_kctx *k, const op_xt *x, const op_xt *ind, int64_t tuple, int64_t q, int b,
                         const int64_t *st, op_error *err) {
  int64_t off = 0;
  for (int64_t j = 0; j < q; j++) {
    int64_t v = wrap_index(k, ind, tuple * q + j, x->dims[b + j], err);
    if (v < 0) return -1;
    off += v * st[b + j];
  }
  return off;
}

OP_KERNEL(op_k_scatter_nd) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *ind = in[1], *upd = in[2];
  enum sred r;
  if (ou_want(k, ind, "indices", false, true, false, err) || scatter_reduction(k, x, &r, err)) return -1;
  if (ind->rank < 1 || upd->dtype != x->dtype) return op_kfail(k, err, "indices must have rank >= 1 and updates the data's type");
  int64_t q = ind->dims[ind->rank - 1];
  if (q > x->rank) return op_kfail(k, err, "index tuples of %lld values for rank %d", (long long)q, x->rank);
  int64_t tuples = ou_prod(ind->dims, 0, ind->rank - 1), slice = ou_prod(x->dims, (int)q, x->rank);
  if (upd->numel != tuples * slice) return op_kfail(k, err, "updates hold %lld values, expected %lld", (long long)upd->numel, (long long)(tuples * slice));
  if (copy_of(out, x, err)) return -1;
  int64_t st[OP_MAX_RANK];
  ou_strides(x->dims, x->rank, st);
  for (int64_t t = 0; t < tuples; t++) {
    int64_t off = nd_offset(k, x, ind, t, q, 0, st, err);
    if (off < 0) return -1;
    for (int64_t e = 0; e < slice; e++) scatter_put(out, off + e, upd, t * slice + e, r);
  }
  return 0;
}

OP_KERNEL(op_k_gather_nd) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *ind = in[1];
  if (ou_want(k, ind, "indices", false, true, false, err)) return -1;
  int64_t bd = op_kattr_int(k, "batch_dims", 0);
  if (ind->rank < 1 || bd < 0 || bd >= ind->rank || bd >= x->rank) return op_kfail(k, err, "batch_dims out of range");
  int b = (int)bd;
  int64_t q = ind->dims[ind->rank - 1];
  if (q < 1 || q > x->rank - b) return op_kfail(k, err, "index tuples of %lld values for rank %d", (long long)q, x->rank);
  for (int d = 0; d < b; d++)
    if (x->dims[d] != ind->dims[d]) return op_kfail(k, err, "batch axis %d differs between data and indices", d);
  int64_t dims[OP_MAX_RANK];
  int rank = 0;
  for (int d = 0; d < ind->rank - 1; d++) dims[rank++] = ind->dims[d];
  for (int d = b + (int)q; d < x->rank; d++) {
    if (rank >= OP_MAX_RANK) return op_kfail(k, err, "rank over %d", OP_MAX_RANK);
    dims[rank++] = x->dims[d];
  }
  if (op_xt_alloc(out, x->dtype, dims, rank, err)) return -1;
  int64_t st[OP_MAX_RANK];
  ou_strides(x->dims, x->rank, st);
  int64_t batches = ou_prod(x->dims, 0, b), per_batch = ou_prod(ind->dims, b, ind->rank - 1);
  int64_t slice = ou_prod(x->dims, b + (int)q, x->rank), bstride = b ? st[b - 1] : 0;
  size_t es = esz(x);
  for (int64_t bi = 0; bi < batches; bi++)
    for (int64_t t = 0; t < per_batch; t++) {
      int64_t tuple = bi * per_batch + t, off = nd_offset(k, x, ind, tuple, q, b, st, err);
      if (off < 0) return -1;
      memcpy((char *)out->data + tuple * slice * (int64_t)es, (char *)x->data + (bi * bstride + off) * (int64_t)es,
             (size_t)slice * es);
    }
  return 0;
}

OP_KERNEL(op_k_nonzero) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0];
  if (ou_want(k, x, "input", true, true, true, err)) return -1;
  int64_t nnz = 0;
  for (int64_t i = 0; i < x->numel; i++) nnz += ou_get(x, i) != 0;
  int rank = x->rank ? x->rank : 1; /* a scalar is treated as one element of a 1-D tensor */
  int64_t dims[2] = {rank, nnz};
  if (op_xt_alloc(out, T_INT64, dims, 2, err)) return -1;
  int64_t *o = out->data, idx[OP_MAX_RANK] = {0}, c = 0;
  for (int64_t i = 0; i < x->numel; i++) {
    if (ou_get(x, i) != 0) {
      for (int d = 0; d < rank; d++) o[d * nnz + c] = x->rank ? idx[d] : 0;
      c++;
    }
    for (int d = x->rank - 1; d >= 0; d--) {
      if (++idx[d] < x->dims[d]) break;
      idx[d] = 0;
    }
  }
  return 0;
}

OP_KERNEL(op_k_one_hot) {
  (void)n_in, (void)n_out;
  op_xt *ind = in[0], *depth = in[1], *vals = in[2];
  if (ou_want(k, ind, "indices", true, true, false, err) || ou_want(k, depth, "depth", true, true, false, err) ||
      ou_want(k, vals, "values", true, true, true, err))
    return -1;
  if (depth->numel != 1 || vals->numel != 2) return op_kfail(k, err, "depth must be a scalar and values hold [off, on]");
  int64_t D = (int64_t)ou_get(depth, 0);
  if (D < 1) return op_kfail(k, err, "depth %lld is below 1", (long long)D);
  int rank = ind->rank + 1;
  if (rank > OP_MAX_RANK) return op_kfail(k, err, "rank over %d", OP_MAX_RANK);
  int axis = op_axis(op_kattr_int(k, "axis", -1), rank);
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  int64_t dims[OP_MAX_RANK];
  for (int d = 0, s = 0; d < rank; d++) dims[d] = d == axis ? D : ind->dims[s++];
  if (op_xt_alloc(out, vals->dtype, dims, rank, err)) return -1;
  int64_t outer = ou_prod(ind->dims, 0, axis), inner = ou_prod(ind->dims, axis, ind->rank);
  size_t es = esz(vals);
  const char *off = vals->data, *on = (const char *)vals->data + es;
  for (int64_t q = 0; q < outer; q++)
    for (int64_t j = 0; j < D; j++)
      for (int64_t r = 0; r < inner; r++) {
        int64_t v = (int64_t)ou_get(ind, q * inner + r);
        if (v < 0) v += D;
        memcpy((char *)out->data + ((q * D + j) * inner + r) * (int64_t)es, v == j ? on : off, es);
      }
  return 0;
}

/* DepthToSpace (DCR or CRD) and SpaceToDepth on [N, C, H, W]. */
static int depth_space(const op_kctx *k, op_xt *x, op_xt *out, bool to_space, op_error *err) {
  int64_t b = op_kattr_int(k, "blocksize", 0);
  if (x->rank != 4 || b < 1) return op_kfail(k, err, "input must be 4-D and blocksize positive");
  int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3];
  bool crd = false;
  if (to_space) {
    Onnx__AttributeProto *m = op_node_attr(k->node, "mode");
    crd = m && m->s.len == 3 && !memcmp(m->s.data, "CRD", 3);
    if (m && !crd && !(m->s.len == 3 && !memcmp(m->s.data, "DCR", 3))) return ou_unsupported(k, err, "mode '%.*s'", (int)m->s.len, (const char *)m->s.data);
    if (C % (b * b)) return op_kfail(k, err, "channels %lld are not a multiple of blocksize^2", (long long)C);
  } else if (H % b || W % b) {
    return op_kfail(k, err, "height and width must be multiples of blocksize");
  }
  int64_t dims[4] = {N, to_space ? C / (b * b) : C * b * b, to_space ? H * b : H / b, to_space ? W * b : W / b};
  if (op_xt_alloc(out, x->dtype, dims, 4, err)) return -1;
  size_t es = esz(x);
  int64_t Cs = to_space ? dims[1] : C, Hs = to_space ? H : dims[2], Ws = to_space ? W : dims[3]; /* the depth side's sizes */
  for (int64_t n = 0; n < N; n++)
    for (int64_t c = 0; c < Cs; c++)
      for (int64_t h = 0; h < Hs; h++)
        for (int64_t w = 0; w < Ws; w++)
          for (int64_t i = 0; i < b; i++)
            for (int64_t j = 0; j < b; j++) {
              int64_t dc = crd ? c * b * b + i * b + j : (i * b + j) * Cs + c; /* channel on the depth side */
              int64_t depth = ((n * (Cs * b * b) + dc) * Hs + h) * Ws + w;
              int64_t space = ((n * Cs + c) * (Hs * b) + h * b + i) * (Ws * b) + w * b + j;
              int64_t src = to_space ? depth : space, dst = to_space ? space : depth;
              memcpy((char *)out->data + dst * (int64_t)es, (char *)x->data + src * (int64_t)es, es);
            }
  return 0;
}

OP_KERNEL(op_k_depth_to_space) {
  (void)n_in, (void)n_out;
  return depth_space(k, in[0], out, true, err);
}

OP_KERNEL(op_k_space_to_depth) {
  (void)n_in, (void)n_out;
  return depth_space(k, in[0], out, false, err);
}

OP_KERNEL(op_k_eye_like) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0];
  if (x->rank != 2) return op_kfail(k, err, "input must be 2-D");
  int32_t dt = (int32_t)op_kattr_int(k, "dtype", x->dtype);
  if (!op_dtype_numeric(dt)) return ou_unsupported(k, err, "dtype %d", dt);
  bool direct = dt == T_FLOAT || dt == T_INT64 || dt == T_INT32 || dt == T_BOOL;
  int64_t diag = op_kattr_int(k, "k", 0);
  op_xt eye; /* 0 and 1 are exact in every type: other types are converted from float32 */
  if (op_xt_alloc(&eye, direct ? dt : T_FLOAT, x->dims, 2, err)) return -1;
  memset(eye.data, 0, (size_t)eye.numel * esz(&eye));
  for (int64_t i = 0; i < x->dims[0]; i++)
    if (i + diag >= 0 && i + diag < x->dims[1]) ou_set(&eye, i * x->dims[1] + i + diag, 1);
  if (direct) {
    *out = eye;
    return 0;
  }
  int rc = op_xt_convert(out, &eye, dt, err);
  op_xt_release(&eye);
  return rc;
}

OP_KERNEL(op_k_compress) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *cond = in[1];
  if (ou_want(k, cond, "condition", false, false, true, err)) return -1;
  Onnx__AttributeProto *ax = op_node_attr(k->node, "axis");
  int axis = ax ? op_axis(ax->i, x->rank) : 0;
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  int64_t dim = ax ? x->dims[axis] : x->numel, outer = ax ? ou_prod(x->dims, 0, axis) : 1;
  int64_t inner = ax ? ou_prod(x->dims, axis + 1, x->rank) : 1, kept = 0;
  if (cond->rank != 1 || cond->numel > dim) return op_kfail(k, err, "condition must be 1-D and no longer than the axis");
  for (int64_t i = 0; i < cond->numel; i++) kept += ((uint8_t *)cond->data)[i] != 0;
  int64_t dims[OP_MAX_RANK];
  int rank = ax ? x->rank : 1;
  if (ax) memcpy(dims, x->dims, sizeof dims);
  dims[ax ? axis : 0] = kept;
  if (op_xt_alloc(out, x->dtype, dims, rank, err)) return -1;
  size_t es = esz(x);
  int64_t o = 0;
  for (int64_t q = 0; q < outer; q++)
    for (int64_t i = 0; i < cond->numel; i++)
      if (((uint8_t *)cond->data)[i]) {
        memcpy((char *)out->data + o * inner * (int64_t)es, (char *)x->data + (q * dim + i) * inner * (int64_t)es, (size_t)inner * es);
        o++;
      }
  return 0;
}

OP_KERNEL(op_k_reverse_sequence) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *lens = in[1];
  if (ou_want(k, lens, "sequence_lens", false, true, false, err)) return -1;
  int ba = op_axis(op_kattr_int(k, "batch_axis", 1), x->rank), ta = op_axis(op_kattr_int(k, "time_axis", 0), x->rank);
  if (x->rank < 2 || ba < 0 || ta < 0 || ba == ta || (ba > 1 || ta > 1)) return op_kfail(k, err, "batch_axis and time_axis must be 0 and 1");
  if (lens->numel != x->dims[ba]) return op_kfail(k, err, "sequence_lens must hold one length per batch entry");
  if (copy_of(out, x, err)) return -1;
  int64_t T = x->dims[ta], Bn = x->dims[ba], inner = ou_prod(x->dims, 2, x->rank);
  size_t es = esz(x);
  for (int64_t b = 0; b < Bn; b++) {
    int64_t L = op_xt_int(lens, b);
    if (L < 0 || L > T) return op_kfail(k, err, "sequence length %lld outside [0, %lld]", (long long)L, (long long)T);
    for (int64_t t = 0; t < L; t++) {
      int64_t s = L - 1 - t;
      int64_t dst = ta == 0 ? t * Bn + b : b * T + t, src = ta == 0 ? s * Bn + b : b * T + s;
      memcpy((char *)out->data + dst * inner * (int64_t)es, (char *)x->data + src * inner * (int64_t)es, (size_t)inner * es);
    }
  }
  return 0;
}
