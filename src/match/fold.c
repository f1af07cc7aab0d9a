/* fold.c - folds run-time slices of stored weights into stored weights before matching. torch
 * exports nn.MultiheadAttention's cross-attention in-projection as Slice(in_proj_weight, 0, E) for q
 * and Slice(in_proj_weight, E, 3E) for k|v, with E read from the query's shape at run time (and
 * chunk() of in_proj_bias the same way); once folded, these are plain projections the matcher and
 * the pruning rewrite handle like any other. The model computes exactly what it computed before. */
#include "match/match.h"

#include <stdlib.h>
#include <string.h>

/* Integer vectors of shape arithmetic, as far as they are known: a Shape of a tensor whose rank is
 * unknown is known only at its end (its last dimension, from a consumer that fixes it). */
#define MAX_IV 8
#define MAX_EVAL_DEPTH 12
typedef struct ival {
  int n;
  bool suffix;        /* rank unknown: v holds the last n elements */
  bool known[MAX_IV];
  int64_t v[MAX_IV];
} ival;

/* The width of the last axis of x, when a consumer or a declaration fixes it: the row count of the
 * weight a MatMul multiplies it with, or a declared static shape. 0 when unknown. */
static int64_t last_dim(const op_graph *gr, const char *x) {
  op_value *v = op_graph_find(gr, x);
  if (!v) return 0;
  for (size_t c = 0; c < v->n_consumers; c++) {
    Onnx__NodeProto *n = gr->g->node[v->consumers[c]];
    if (!op_node_is(n, "MatMul") || n->n_input < 2 || strcmp(n->input[0], x) != 0) continue;
    Onnx__TensorProto *w = op_graph_const(gr, n->input[1]);
    if (w && w->n_dims == 2) return w->dims[0];
    Onnx__NodeProto *t = op_graph_producer(gr, n->input[1]);
    Onnx__AttributeProto *perm = t && op_node_is(t, "Transpose") ? op_node_attr(t, "perm") : NULL;
    if (!t || !op_node_is(t, "Transpose") || (perm && !(perm->n_ints == 2 && perm->ints[0] == 1))) continue;
    w = op_graph_const(gr, t->input[0]);
    if (w && w->n_dims == 2) return w->dims[1];
    /* Transpose(Slice(W, rows)): the columns are W's */
    Onnx__NodeProto *s = op_graph_producer(gr, t->input[0]);
    w = s && op_node_is(s, "Slice") ? op_graph_const(gr, s->input[0]) : NULL;
    if (w && w->n_dims == 2 && s->n_input >= 4) {
      Onnx__TensorProto *ax = op_graph_const(gr, s->input[3]);
      int64_t a0;
      if (ax && op_tensor_numel(ax) == 1 && op_tensor_get_int(ax, 0, &a0) && a0 == 0) return w->dims[1];
    }
  }
  return 0;
}

static bool eval(const op_graph *gr, const char *name, ival *out, int depth);

/* A single known integer. */
static bool eval_int(const op_graph *gr, const char *name, int64_t *x, int depth) {
  ival v;
  if (!eval(gr, name, &v, depth) || v.n != 1 || !v.known[0]) return false;
  *x = v.v[0];
  return true;
}

static bool eval_shape(const op_graph *gr, const Onnx__NodeProto *n, ival *out) {
  if (op_node_attr(n, "start") || op_node_attr(n, "end")) return false;
  memset(out, 0, sizeof *out);
  Onnx__TensorProto *t = op_graph_const(gr, n->input[0]);
  if (t) { /* the shape of a stored tensor is its dims */
    if (t->n_dims > MAX_IV) return false;
    out->n = (int)t->n_dims;
    for (size_t i = 0; i < t->n_dims; i++) out->v[i] = t->dims[i], out->known[i] = true;
    return true;
  }
  int64_t last = last_dim(gr, n->input[0]);
  if (!last) return false;
  out->n = 1, out->suffix = true, out->v[0] = last, out->known[0] = true;
  return true;
}

/* Slice of a 1-D vector with constant-valued bounds; on a suffix, only bounds counted from the end. */
static bool eval_slice(const op_graph *gr, const Onnx__NodeProto *n, ival *out, int depth) {
  ival d;
  int64_t s, e, ax = 0, st = 1;
  if (n->n_input < 3 || !eval(gr, n->input[0], &d, depth) || !eval_int(gr, n->input[1], &s, depth) ||
      !eval_int(gr, n->input[2], &e, depth))
    return false;
  if ((n->n_input > 3 && n->input[3][0] && (!eval_int(gr, n->input[3], &ax, depth) || (ax != 0 && ax != -1))) ||
      (n->n_input > 4 && n->input[4][0] && (!eval_int(gr, n->input[4], &st, depth) || st != 1)))
    return false;
  int64_t lo, hi;
  if (d.suffix) {
    if (s >= 0 || -s > d.n || !(e >= INT32_MAX || (e < 0 && e > s))) return false;
    lo = d.n + s, hi = e >= INT32_MAX ? d.n : d.n + e;
  } else {
    lo = s < 0 ? s + d.n : s, hi = e < 0 ? e + d.n : e;
    if (lo < 0) lo = 0;
    if (hi > d.n) hi = d.n;
    if (lo > hi) lo = hi;
  }
  memset(out, 0, sizeof *out);
  out->n = (int)(hi - lo);
  for (int64_t i = lo; i < hi; i++) out->v[i - lo] = d.v[i], out->known[i - lo] = d.known[i];
  return true;
}

static bool eval_gather(const op_graph *gr, const Onnx__NodeProto *n, ival *out, int depth) {
  ival d;
  int64_t i;
  if (op_node_attr_int(n, "axis", 0) != 0 || !eval(gr, n->input[0], &d, depth) || !eval_int(gr, n->input[1], &i, depth))
    return false;
  if (d.suffix ? (i >= 0 || -i > d.n) : (i < -d.n || i >= d.n)) return false;
  int64_t k = i < 0 ? d.n + i : i;
  memset(out, 0, sizeof *out);
  out->n = 1, out->v[0] = d.v[k], out->known[0] = d.known[k];
  return true;
}

static bool eval_arith(const op_graph *gr, const Onnx__NodeProto *n, ival *out, int depth) {
  ival x, y;
  if (n->n_input != 2 || !eval(gr, n->input[0], &x, depth) || !eval(gr, n->input[1], &y, depth) || x.suffix ||
      y.suffix || (x.n != y.n && x.n != 1 && y.n != 1))
    return false;
  memset(out, 0, sizeof *out);
  out->n = x.n > y.n ? x.n : y.n;
  for (int i = 0; i < out->n; i++) {
    int a = x.n == 1 ? 0 : i, b = y.n == 1 ? 0 : i;
    if (!x.known[a] || !y.known[b]) continue;
    int64_t p = x.v[a], q = y.v[b], r;
    if (op_node_is(n, "Add")) r = p + q;
    else if (op_node_is(n, "Sub")) r = p - q;
    else if (op_node_is(n, "Mul")) r = p * q;
    else if (q != 0) r = p / q; /* Div on integers truncates */
    else return false;
    out->v[i] = r, out->known[i] = true;
  }
  return true;
}

static bool eval_concat(const op_graph *gr, const Onnx__NodeProto *n, ival *out, int depth) {
  memset(out, 0, sizeof *out);
  for (size_t k = 0; k < n->n_input; k++) {
    ival x;
    if (!eval(gr, n->input[k], &x, depth) || x.suffix || out->n + x.n > MAX_IV) return false;
    for (int i = 0; i < x.n; i++) out->v[out->n] = x.v[i], out->known[out->n++] = x.known[i];
  }
  return true;
}

static bool eval(const op_graph *gr, const char *name, ival *out, int depth) {
  if (depth > MAX_EVAL_DEPTH) return false;
  Onnx__TensorProto *t = op_graph_const(gr, name);
  if (t) {
    int64_t n = op_tensor_numel(t);
    if (n < 0 || n > MAX_IV) return false;
    memset(out, 0, sizeof *out);
    out->n = (int)n;
    for (int64_t i = 0; i < n; i++) {
      if (!op_tensor_get_int(t, i, &out->v[i])) return false;
      out->known[i] = true;
    }
    return true;
  }
  Onnx__NodeProto *p = op_graph_producer(gr, name);
  if (!p || p->n_input < 1) return false;
  depth++;
  if (op_node_is(p, "Shape")) return eval_shape(gr, p, out);
  if (op_node_is(p, "Slice")) return eval_slice(gr, p, out, depth);
  if (op_node_is(p, "Gather")) return eval_gather(gr, p, out, depth);
  if (op_node_is(p, "Concat")) return eval_concat(gr, p, out, depth);
  if (op_node_is(p, "Add") || op_node_is(p, "Sub") || op_node_is(p, "Mul") || op_node_is(p, "Div"))
    return eval_arith(gr, p, out, depth);
  if (op_node_is(p, "Squeeze") || op_node_is(p, "Unsqueeze") || op_node_is(p, "Cast") || op_node_is(p, "Identity"))
    return eval(gr, p->input[0], out, depth) && out->n <= 1; /* scalars and one-element vectors only */
  return false;
}

/* The rows (axis 0) or columns (axis 1) [lo, hi) a Slice of a stored float weight takes, with
 * bounds that evaluate; false otherwise. */
static bool weight_slice(const op_graph *gr, const Onnx__NodeProto *n, Onnx__TensorProto **w, int *axis,
                         int64_t *lo, int64_t *hi) {
  if (!op_node_is(n, "Slice") || n->n_input < 3 || n->n_output != 1) return false;
  *w = op_graph_init(gr, n->input[0]); /* an initializer (a Constant node's copy would count twice) */
  op_value *src = op_graph_find(gr, n->input[0]);
  if (!*w || !src || src->graph_input >= 0 || !op_weight_dtype_ok((*w)->data_type) || (*w)->n_dims < 1 || (*w)->n_dims > 2) return false;
  int64_t s, e, ax = 0, st = 1;
  if (!eval_int(gr, n->input[1], &s, 0) || !eval_int(gr, n->input[2], &e, 0)) return false;
  if (n->n_input > 3 && n->input[3][0] && !eval_int(gr, n->input[3], &ax, 0)) return false;
  if (n->n_input > 4 && n->input[4][0] && (!eval_int(gr, n->input[4], &st, 0) || st != 1)) return false;
  int64_t rank = (int64_t)(*w)->n_dims;
  if (ax < 0) ax += rank;
  if (ax < 0 || ax >= rank) return false;
  int64_t len = (*w)->dims[ax];
  if (s < 0) s += len;
  if (e < 0) e += len;
  if (s < 0) s = 0;
  if (e > len) e = len;
  if (s >= e) return false;
  *axis = (int)ax, *lo = s, *hi = e;
  return true;
}

/* Is name read by any node of g or of its subgraphs? */
static bool used_anywhere(const Onnx__GraphProto *g, const char *name) {
  for (size_t i = 0; i < g->n_node; i++) {
    const Onnx__NodeProto *n = g->node[i];
    for (size_t k = 0; k < n->n_input; k++)
      if (strcmp(n->input[k], name) == 0) return true;
    for (size_t k = 0; k < n->n_attribute; k++)
      if (n->attribute[k]->g && used_anywhere(n->attribute[k]->g, name)) return true;
  }
  for (size_t i = 0; i < g->n_output; i++)
    if (strcmp(g->output[i]->name, name) == 0) return true;
  return false;
}

/* The [lo, hi) part of w along axis, as a new tensor named name (raw bytes of any float type). */
static Onnx__TensorProto *slice_copy(Onnx__TensorProto *w, const char *name, int axis, int64_t lo, int64_t hi) {
  int64_t dims[2] = {w->dims[0], w->n_dims == 2 ? w->dims[1] : 1};
  int64_t nd[2] = {dims[0], dims[1]};
  nd[axis] = hi - lo;
  Onnx__TensorProto *t = op_tensor_new(name, w->data_type, nd, w->n_dims);
  size_t es = op_dtype_size(w->data_type);
  const uint8_t *src = w->raw_data.data;
  for (int64_t r = 0; r < nd[0]; r++) {
    int64_t sr = axis == 0 ? r + lo : r, c0 = axis == 1 ? lo : 0;
    memcpy(t->raw_data.data + (size_t)(r * nd[1]) * es, src + (size_t)(sr * dims[1] + c0) * es, (size_t)nd[1] * es);
  }
  return t;
}

int op_fold_weight_slices(Onnx__GraphProto *g) {
  op_graph *gr = op_graph_build(g);
  bool *fold = op_xcalloc(g->n_node ? g->n_node : 1, sizeof *fold);
  int folded = 0;
  for (size_t i = 0; i < g->n_node; i++) {
    Onnx__TensorProto *w;
    int axis;
    int64_t lo, hi;
    op_value *v = op_graph_find(gr, g->node[i]->output[0]);
    if (!weight_slice(gr, g->node[i], &w, &axis, &lo, &hi) || !v || v->graph_output || op_tensor_to_raw(w) != 0)
      continue;
    Onnx__TensorProto *t = slice_copy(w, g->node[i]->output[0], axis, lo, hi);
    g->initializer = op_xrealloc(g->initializer, (g->n_initializer + 1) * sizeof *g->initializer);
    g->initializer[g->n_initializer++] = t;
    fold[i] = true;
    folded++;
  }
  op_graph_free(gr);
  if (!folded) {
    free(fold);
    return 0;
  }
  /* the folded Slices go; so do weights nothing reads any more (their bound arithmetic is left to
   * the rewrite's dead-code removal: it is shape code, not weights) */
  op_name_vec sources = {0};
  size_t w = 0;
  for (size_t i = 0; i < g->n_node; i++) {
    if (!fold[i]) {
      g->node[w++] = g->node[i];
      continue;
    }
    OP_VEC_PUSH(sources, op_xstrdup(g->node[i]->input[0]));
    protobuf_c_message_free_unpacked(&g->node[i]->base, NULL);
  }
  g->n_node = w;
  for (size_t s = 0; s < sources.n; s++) {
    if (!used_anywhere(g, sources.v[s])) {
      size_t k = 0;
      for (size_t i = 0; i < g->n_initializer; i++) {
        if (strcmp(g->initializer[i]->name, sources.v[s]) == 0) op_tensor_free(g->initializer[i]);
        else g->initializer[k++] = g->initializer[i];
      }
      g->n_initializer = k;
    }
  }
  for (size_t s = 0; s < sources.n; s++) free((char *)sources.v[s]);
  free(sources.v);
  free(fold);
  return folded;
}
