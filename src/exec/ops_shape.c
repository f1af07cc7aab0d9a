/* ops_shape.c - operators that move data without arithmetic: Reshape, Transpose, (Un)Squeeze,
 * Concat, Split, Slice, Gather, Shape, Expand, Flatten, and the constant makers. Axes come from
 * attributes or inputs depending on the opset, as the ONNX spec moved them. */
#include "exec/exec.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_FLOAT ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT
#define T_INT64 ONNX__TENSOR_PROTO__DATA_TYPE__INT64
#define T_INT32 ONNX__TENSOR_PROTO__DATA_TYPE__INT32

static size_t es_of(const op_xt *t) { return op_xt_elem_size(t->dtype); }

static int64_t prod(const int64_t *d, int from, int to) {
  int64_t p = 1;
  for (int i = from; i < to; i++) p *= d[i];
  return p;
}

/* Integer list from an input (int64/int32 1-D) or, before `since`, from an attribute. */
static int int_list(const op_kctx *k, op_xt **in, size_t n_in, size_t slot, const char *attr, int64_t since,
                    int64_t *out, int *n, op_error *err) {
  *n = 0;
  if (k->opset < since && attr) {
    size_t cnt;
    const int64_t *v = op_kattr_ints(k, attr, &cnt);
    if (cnt > OP_MAX_RANK * 8) return op_kfail(k, err, "attribute '%s' too long", attr);
    for (size_t i = 0; i < cnt; i++) out[(*n)++] = v[i];
    return 0;
  }
  if (slot >= n_in || !in[slot]) return 0;
  op_xt *t = in[slot];
  if (t->dtype != T_INT64 && t->dtype != T_INT32) return op_kfail(k, err, "input %zu must be int64", slot);
  if (t->numel > OP_MAX_RANK * 8) return op_kfail(k, err, "input %zu has too many values", slot);
  for (int64_t i = 0; i < t->numel; i++) out[(*n)++] = op_xt_int(t, i);
  return 0;
}

static int copy_into(const op_kctx *k, op_xt *out, op_xt *x, const int64_t *dims, int rank, op_error *err) {
  if (x == k->spent && x->owned) { /* nobody reads x after this node: its storage moves, no copy */
    *out = *x;
    out->rank = rank;
    memcpy(out->dims, dims, (size_t)rank * sizeof *dims);
    memset(x, 0, sizeof *x);
    return 0;
  }
  if (op_xt_alloc(out, x->dtype, dims, rank, err)) return -1;
  memcpy(out->data, x->data, (size_t)x->numel * es_of(x));
  return 0;
}

OP_KERNEL(op_k_reshape) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *sh = in[1];
  if (sh->rank != 1 || sh->numel > OP_MAX_RANK) return op_kfail(k, err, "shape must be a 1-D tensor of at most %d values", OP_MAX_RANK);
  bool allowzero = op_kattr_int(k, "allowzero", 0) != 0;
  int64_t dims[OP_MAX_RANK], known = 1;
  int rank = (int)sh->numel, infer = -1;
  for (int i = 0; i < rank; i++) {
    int64_t v = op_xt_int(sh, i);
    if (v == 0 && !allowzero) {
      if (i >= x->rank) return op_kfail(k, err, "shape copies axis %d of a rank-%d input", i, x->rank);
      v = x->dims[i];
    }
    if (v == -1) {
      if (infer >= 0) return op_kfail(k, err, "more than one -1 in the shape");
      infer = i;
      v = 1;
    } else if (v < 0) {
      return op_kfail(k, err, "negative dimension %lld in the shape", (long long)v);
    }
    dims[i] = v;
    if (__builtin_mul_overflow(known, v, &known))
      return op_kfail(k, err, "the shape's element count overflows (dimension %lld)", (long long)v);
  }
  if (infer >= 0) {
    if (known == 0 || x->numel % known) return op_kfail(k, err, "cannot infer -1 for %lld elements", (long long)x->numel);
    dims[infer] = x->numel / known;
    known *= dims[infer];
  }
  if (known != x->numel)
    return op_kfail(k, err, "cannot reshape %lld elements into %lld", (long long)x->numel, (long long)known);
  return copy_into(k, out, x, dims, rank, err);
}

OP_KERNEL(op_k_flatten) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0];
  int64_t axis = op_kattr_int(k, "axis", 1);
  if (axis < 0) axis += x->rank;
  if (axis < 0 || axis > x->rank) return op_kfail(k, err, "axis out of range");
  int64_t dims[2] = {prod(x->dims, 0, (int)axis), prod(x->dims, (int)axis, x->rank)};
  return copy_into(k, out, x, dims, 2, err);
}

OP_KERNEL(op_k_transpose) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0];
  int r = x->rank, perm[OP_MAX_RANK];
  size_t np;
  const int64_t *p = op_kattr_ints(k, "perm", &np);
  bool seen[OP_MAX_RANK] = {false};
  for (int i = 0; i < r; i++) {
    perm[i] = p ? (int)p[i] : r - 1 - i;
    if ((p && np != (size_t)r) || perm[i] < 0 || perm[i] >= r || seen[perm[i]]) return op_kfail(k, err, "invalid perm");
    seen[perm[i]] = true;
  }
  int64_t dims[OP_MAX_RANK], in_stride[OP_MAX_RANK], s = 1;
  for (int i = 0; i < r; i++) dims[i] = x->dims[perm[i]];
  if (op_xt_alloc(out, x->dtype, dims, r, err)) return -1;
  if (x->numel == 0) return 0; /* the other dims may be huge: their product (the strides) would overflow */
  for (int i = r - 1; i >= 0; i--) in_stride[i] = s, s *= x->dims[i];
  size_t es = es_of(x);
  /* the last output axis walks the input with stride in_stride[perm[r-1]]; when that is 1, copy runs */
  int64_t inner = r ? dims[r - 1] : 1, stride_last = r ? in_stride[perm[r - 1]] : 1;
  int64_t idx[OP_MAX_RANK] = {0}, off = 0, rows = inner ? x->numel / inner : 0;
  char *o = out->data;
  const char *src = x->data;
  for (int64_t row = 0; row < rows; row++, o += inner * (int64_t)es) {
    if (stride_last == 1) {
      memcpy(o, src + off * (int64_t)es, (size_t)inner * es);
    } else if (es == 4) {
      const float *a = (const float *)src + off;
      for (int64_t j = 0; j < inner; j++) ((float *)o)[j] = a[j * stride_last];
    } else {
      for (int64_t j = 0; j < inner; j++) memcpy(o + j * (int64_t)es, src + (off + j * stride_last) * (int64_t)es, es);
    }
    for (int d = r - 2; d >= 0; d--) {
      off += in_stride[perm[d]];
      if (++idx[d] < dims[d]) break;
      off -= in_stride[perm[d]] * dims[d];
      idx[d] = 0;
    }
  }
  return 0;
}

OP_KERNEL(op_k_unsqueeze) {
  (void)n_out;
  op_xt *x = in[0];
  int64_t axes[OP_MAX_RANK * 8];
  int na;
  if (int_list(k, in, n_in, 1, "axes", 13, axes, &na, err)) return -1;
  int r = x->rank + na;
  if (r > OP_MAX_RANK) return op_kfail(k, err, "rank over %d", OP_MAX_RANK);
  bool add[OP_MAX_RANK] = {false};
  for (int i = 0; i < na; i++) {
    int a = op_axis(axes[i], r);
    if (a < 0 || add[a]) return op_kfail(k, err, "invalid axes");
    add[a] = true;
  }
  int64_t dims[OP_MAX_RANK];
  for (int i = 0, j = 0; i < r; i++) dims[i] = add[i] ? 1 : x->dims[j++];
  return copy_into(k, out, x, dims, r, err);
}

OP_KERNEL(op_k_squeeze) {
  (void)n_out;
  op_xt *x = in[0];
  int64_t axes[OP_MAX_RANK * 8];
  int na;
  if (int_list(k, in, n_in, 1, "axes", 13, axes, &na, err)) return -1;
  bool drop[OP_MAX_RANK] = {false};
  for (int i = 0; i < na; i++) {
    int a = op_axis(axes[i], x->rank);
    if (a < 0 || x->dims[a] != 1) return op_kfail(k, err, "axis %lld is not of size 1", (long long)axes[i]);
    drop[a] = true;
  }
  if (na == 0)
    for (int i = 0; i < x->rank; i++) drop[i] = x->dims[i] == 1;
  int64_t dims[OP_MAX_RANK];
  int r = 0;
  for (int i = 0; i < x->rank; i++)
    if (!drop[i]) dims[r++] = x->dims[i];
  return copy_into(k, out, x, dims, r, err);
}

OP_KERNEL(op_k_concat) {
  (void)n_out;
  op_xt *x0 = NULL;
  for (size_t i = 0; i < n_in && !x0; i++) x0 = in[i];
  int axis = op_axis(op_kattr_int(k, "axis", 0), x0->rank);
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  int64_t dims[OP_MAX_RANK];
  memcpy(dims, x0->dims, (size_t)x0->rank * sizeof(int64_t));
  dims[axis] = 0;
  for (size_t i = 0; i < n_in; i++) {
    op_xt *t = in[i];
    if (!t) continue;
    if (t->dtype != x0->dtype || t->rank != x0->rank) return op_kfail(k, err, "inputs differ in type or rank");
    for (int d = 0; d < t->rank; d++)
      if (d != axis && t->dims[d] != x0->dims[d]) return op_kfail(k, err, "inputs differ on axis %d", d);
    dims[axis] += t->dims[axis];
  }
  if (op_xt_alloc(out, x0->dtype, dims, x0->rank, err)) return -1;
  size_t es = es_of(x0);
  int64_t outer = prod(dims, 0, axis), inner = prod(dims, axis + 1, x0->rank), off = 0;
  char *o = out->data;
  for (size_t i = 0; i < n_in; i++) {
    op_xt *t = in[i];
    if (!t) continue;
    int64_t chunk = t->dims[axis] * inner;
    for (int64_t q = 0; q < outer; q++)
      memcpy(o + (q * dims[axis] * inner + off) * (int64_t)es, (char *)t->data + q * chunk * (int64_t)es, (size_t)chunk * es);
    off += chunk;
  }
  return 0;
}

OP_KERNEL(op_k_split) {
  op_xt *x = in[0];
  int axis = op_axis(op_kattr_int(k, "axis", 0), x->rank);
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  int64_t sizes[64];
  int ns;
  if (int_list(k, in, n_in, 1, "split", 13, sizes, &ns, err)) return -1;
  if (ns == 0) {
    int64_t parts = op_kattr_int(k, "num_outputs", (int64_t)n_out);
    int64_t each = (x->dims[axis] + parts - 1) / parts; /* the last part may be smaller (opset 18) */
    for (int64_t i = 0; i < (int64_t)n_out; i++) {
      int64_t left = x->dims[axis] - i * each;
      sizes[ns++] = left < each ? (left > 0 ? left : 0) : each;
    }
  }
  if ((size_t)ns != n_out) return op_kfail(k, err, "%d split sizes for %zu outputs", ns, n_out);
  int64_t total = 0;
  for (int i = 0; i < ns; i++) total += sizes[i];
  if (total != x->dims[axis]) return op_kfail(k, err, "split sizes add up to %lld, axis has %lld", (long long)total, (long long)x->dims[axis]);
  size_t es = es_of(x);
  int64_t outer = prod(x->dims, 0, axis), inner = prod(x->dims, axis + 1, x->rank), off = 0;
  for (size_t i = 0; i < n_out; i++) {
    int64_t dims[OP_MAX_RANK];
    memcpy(dims, x->dims, (size_t)x->rank * sizeof(int64_t));
    dims[axis] = sizes[i];
    if (op_xt_alloc(&out[i], x->dtype, dims, x->rank, err)) return -1;
    int64_t chunk = sizes[i] * inner;
    for (int64_t q = 0; q < outer; q++)
      memcpy((char *)out[i].data + q * chunk * (int64_t)es, (char *)x->data + (q * x->dims[axis] * inner + off) * (int64_t)es,
             (size_t)chunk * es);
    off += chunk;
  }
  return 0;
}

OP_KERNEL(op_k_slice) {
  (void)n_out;
  op_xt *x = in[0];
  int64_t starts[OP_MAX_RANK * 8], ends[OP_MAX_RANK * 8], axes[OP_MAX_RANK * 8], steps[OP_MAX_RANK * 8];
  int ns, ne, na, nst;
  if (int_list(k, in, n_in, 1, NULL, 0, starts, &ns, err) || int_list(k, in, n_in, 2, NULL, 0, ends, &ne, err) ||
      int_list(k, in, n_in, 3, NULL, 0, axes, &na, err) || int_list(k, in, n_in, 4, NULL, 0, steps, &nst, err))
    return -1;
  if (ns != ne || (na && na != ns) || (nst && nst != ns)) return op_kfail(k, err, "starts, ends, axes and steps differ in length");
  int64_t st[OP_MAX_RANK], step[OP_MAX_RANK], dims[OP_MAX_RANK];
  for (int d = 0; d < x->rank; d++) st[d] = 0, step[d] = 1, dims[d] = x->dims[d];
  for (int i = 0; i < ns; i++) {
    int a = op_axis(na ? axes[i] : i, x->rank);
    int64_t s = nst ? steps[i] : 1;
    if (a < 0 || a >= x->rank || s == 0)
      return op_kfail(k, err, "axis %lld is outside rank %d, or the step is zero", (long long)(na ? axes[i] : i), x->rank);
    int64_t dim = x->dims[a], b = starts[i], e = ends[i];
    if (b < 0) b += dim;
    if (e < 0) e += dim;
    if (s > 0) {
      b = b < 0 ? 0 : b > dim ? dim : b;
      e = e < 0 ? 0 : e > dim ? dim : e;
      dims[a] = e > b ? (e - b + s - 1) / s : 0;
    } else {
      b = b < 0 ? -1 : b > dim - 1 ? dim - 1 : b;
      e = e < -1 ? -1 : e > dim - 1 ? dim - 1 : e;
      dims[a] = b > e ? (b - e - s - 1) / -s : 0;
    }
    st[a] = b;
    step[a] = s;
  }
  if (op_xt_alloc(out, x->dtype, dims, x->rank, err)) return -1;
  size_t es = es_of(x);
  int64_t in_stride[OP_MAX_RANK], s = 1;
  for (int d = x->rank - 1; d >= 0; d--) in_stride[d] = s, s *= x->dims[d];
  int64_t idx[OP_MAX_RANK] = {0};
  char *o = out->data;
  for (int64_t i = 0; i < out->numel; i++) {
    int64_t off = 0;
    for (int d = 0; d < x->rank; d++) off += (st[d] + idx[d] * step[d]) * in_stride[d];
    memcpy(o + i * (int64_t)es, (char *)x->data + off * (int64_t)es, es);
    for (int d = x->rank - 1; d >= 0; d--) {
      if (++idx[d] < dims[d]) break;
      idx[d] = 0;
    }
  }
  return 0;
}

OP_KERNEL(op_k_gather) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *ind = in[1];
  int axis = op_axis(op_kattr_int(k, "axis", 0), x->rank);
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  if (ind->dtype != T_INT64 && ind->dtype != T_INT32) return op_kfail(k, err, "indices must be int64 or int32");
  int r = x->rank - 1 + ind->rank;
  if (r > OP_MAX_RANK) return op_kfail(k, err, "rank over %d", OP_MAX_RANK);
  int64_t dims[OP_MAX_RANK];
  int n = 0;
  for (int d = 0; d < axis; d++) dims[n++] = x->dims[d];
  for (int d = 0; d < ind->rank; d++) dims[n++] = ind->dims[d];
  for (int d = axis + 1; d < x->rank; d++) dims[n++] = x->dims[d];
  if (op_xt_alloc(out, x->dtype, dims, r, err)) return -1;
  size_t es = es_of(x);
  int64_t outer = prod(x->dims, 0, axis), inner = prod(x->dims, axis + 1, x->rank), dim = x->dims[axis];
  char *o = out->data;
  for (int64_t q = 0; q < outer; q++)
    for (int64_t i = 0; i < ind->numel; i++) {
      int64_t j = op_xt_int(ind, i);
      if (j < 0) j += dim;
      if (j < 0 || j >= dim) return op_kfail(k, err, "index %lld is out of range [0, %lld)", (long long)op_xt_int(ind, i), (long long)dim);
      memcpy(o + (q * ind->numel + i) * inner * (int64_t)es, (char *)x->data + (q * dim + j) * inner * (int64_t)es,
             (size_t)inner * es);
    }
  return 0;
}

OP_KERNEL(op_k_shape) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0];
  int64_t start = op_kattr_int(k, "start", 0), end = op_kattr_int(k, "end", x->rank);
  if (start < 0) start += x->rank;
  if (end < 0) end += x->rank;
  start = start < 0 ? 0 : start > x->rank ? x->rank : start;
  end = end < start ? start : end > x->rank ? x->rank : end;
  int64_t n = end - start;
  if (op_xt_alloc(out, T_INT64, &n, 1, err)) return -1;
  memcpy(out->data, x->dims + start, (size_t)n * sizeof(int64_t));
  return 0;
}

OP_KERNEL(op_k_expand) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *sh = in[1];
  if (sh->rank != 1 || sh->numel > OP_MAX_RANK) return op_kfail(k, err, "shape must be 1-D");
  int r = (int)sh->numel > x->rank ? (int)sh->numel : x->rank;
  int64_t dims[OP_MAX_RANK], xs[OP_MAX_RANK], s = 1;
  for (int d = r - 1; d >= 0; d--) {
    int xi = d - (r - x->rank), si = d - (r - (int)sh->numel);
    int64_t a = xi >= 0 ? x->dims[xi] : 1, b = si >= 0 ? op_xt_int(sh, si) : 1;
    if (a != b && a != 1 && b != 1) return op_kfail(k, err, "cannot expand %lld to %lld on axis %d", (long long)a, (long long)b, d);
    dims[d] = a == 1 ? b : a;
    xs[d] = a == 1 ? 0 : s;
    s *= a;
  }
  if (op_xt_alloc(out, x->dtype, dims, r, err)) return -1;
  size_t es = es_of(x);
  int64_t idx[OP_MAX_RANK] = {0};
  char *o = out->data;
  for (int64_t i = 0; i < out->numel; i++) {
    int64_t off = 0;
    for (int d = 0; d < r; d++) off += idx[d] * xs[d];
    memcpy(o + i * (int64_t)es, (char *)x->data + off * (int64_t)es, es);
    for (int d = r - 1; d >= 0; d--) {
      if (++idx[d] < dims[d]) break;
      idx[d] = 0;
    }
  }
  return 0;
}

OP_KERNEL(op_k_constant) {
  (void)in, (void)n_in, (void)n_out;
  const Onnx__NodeProto *n = k->node;
  Onnx__AttributeProto *a;
  char where[512];
  snprintf(where, sizeof where, "%s: node '%s'", k->model, op_node_name(n));
  if ((a = op_node_attr(n, "value")) && a->t) return op_xt_from_proto(out, a->t, where, err);
  int64_t one = 1;
  if ((a = op_node_attr(n, "value_float"))) {
    if (op_xt_alloc(out, T_FLOAT, NULL, 0, err)) return -1;
    *(float *)out->data = a->f;
    return 0;
  }
  if ((a = op_node_attr(n, "value_int"))) {
    if (op_xt_alloc(out, T_INT64, NULL, 0, err)) return -1;
    *(int64_t *)out->data = a->i;
    return 0;
  }
  if ((a = op_node_attr(n, "value_floats"))) {
    one = (int64_t)a->n_floats;
    if (op_xt_alloc(out, T_FLOAT, &one, 1, err)) return -1;
    if (a->n_floats) memcpy(out->data, a->floats, a->n_floats * sizeof(float));
    return 0;
  }
  if ((a = op_node_attr(n, "value_ints"))) {
    one = (int64_t)a->n_ints;
    if (op_xt_alloc(out, T_INT64, &one, 1, err)) return -1;
    if (a->n_ints) memcpy(out->data, a->ints, a->n_ints * sizeof(int64_t));
    return 0;
  }
  return op_kfail(k, err, "no supported value attribute");
}

OP_KERNEL(op_k_constant_of_shape) {
  (void)n_in, (void)n_out;
  op_xt *sh = in[0];
  if (sh->rank != 1 || sh->numel > OP_MAX_RANK) return op_kfail(k, err, "shape must be 1-D");
  int64_t dims[OP_MAX_RANK];
  for (int64_t i = 0; i < sh->numel; i++) dims[i] = op_xt_int(sh, i);
  Onnx__AttributeProto *a = op_node_attr(k->node, "value");
  op_xt v = {0};
  if (a && a->t) {
    if (op_xt_from_proto(&v, a->t, k->model, err)) return -1;
  } else if (op_xt_alloc(&v, T_FLOAT, NULL, 0, err)) {
    return -1;
  }
  int rc = op_xt_alloc(out, v.dtype, dims, (int)sh->numel, err);
  size_t es = es_of(&v);
  for (int64_t i = 0; !rc && i < out->numel; i++) memcpy((char *)out->data + i * (int64_t)es, v.data, es);
  op_xt_release(&v);
  return rc;
}

OP_KERNEL(op_k_range) {
  (void)n_in, (void)n_out;
  op_xt *s = in[0], *l = in[1], *d = in[2];
  if (s->dtype != l->dtype || s->dtype != d->dtype) return op_kfail(k, err, "start, limit and delta differ in type");
  if (s->dtype == T_FLOAT) {
    float a = *(float *)s->data, b = *(float *)l->data, c = *(float *)d->data;
    if (c == 0) return op_kfail(k, err, "delta is zero");
    int64_t n = (int64_t)ceilf((b - a) / c);
    if (n < 0) n = 0;
    if (op_xt_alloc(out, T_FLOAT, &n, 1, err)) return -1;
    for (int64_t i = 0; i < n; i++) ((float *)out->data)[i] = a + (float)i * c;
    return 0;
  }
  if (s->dtype != T_INT64 && s->dtype != T_INT32) return op_kfail(k, err, "unsupported type %d", s->dtype);
  int64_t a = op_xt_int(s, 0), b = op_xt_int(l, 0), c = op_xt_int(d, 0);
  if (c == 0) return op_kfail(k, err, "delta is zero");
  int64_t n = c > 0 ? (b - a + c - 1) / c : (a - b - c - 1) / -c;
  if (n < 0) n = 0;
  if (op_xt_alloc(out, s->dtype, &n, 1, err)) return -1;
  for (int64_t i = 0; i < n; i++) {
    if (s->dtype == T_INT64) ((int64_t *)out->data)[i] = a + i * c;
    else ((int32_t *)out->data)[i] = (int32_t)(a + i * c);
  }
  return 0;
}
