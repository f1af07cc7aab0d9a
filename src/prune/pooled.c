/* pooled.c - which rows of the last blocks reach the outputs. A model that pools its final stream by a
 * Gather of fixed token positions (BERT's and ViT's first token) uses the stream after its last attention
 * block at those positions only (what follows is position-wise), so those blocks are ranked and refit on
 * the pooled rows: an error elsewhere costs nothing. Also the row matching that finds them in a
 * projection's own row order (a torch export computes attention seq-first and transposes back). */
#include "prune/recon.h"

#include <stdlib.h>
#include <string.h>

void op_pooling_free(op_pooling *pl) {
  free(pl->idx);
  memset(pl, 0, sizeof *pl);
}

/* Reductions over the channel axis only (a decomposed LayerNorm's means): position-wise. */
static bool reduces_last(const op_graph *gr, const Onnx__NodeProto *n) {
  Onnx__AttributeProto *ax = op_node_attr(n, "axes");
  int64_t v[2];
  int k = 0;
  if (ax) {
    if (ax->n_ints != 1) return false;
    v[0] = ax->ints[0], k = 1;
  } else if (n->n_input > 1) {
    Onnx__TensorProto *t = op_graph_const(gr, n->input[1]);
    if (!t || op_tensor_numel(t) != 1 || !op_tensor_get_int(t, 0, &v[0])) return false;
    k = 1;
  }
  return k == 1 && v[0] == -1 && op_node_attr_int(n, "keepdims", 1) == 1;
}

static bool position_wise(const op_graph *gr, const Onnx__NodeProto *n) {
  static const char *const ops[] = {"Add", "Cast", "Div", "Identity", "LayerNormalization", "Mul", "Pow",
                                    "Reciprocal", "SimplifiedLayerNormalization", "Sqrt", "Sub"};
  for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
    if (op_node_is(n, ops[i])) return true;
  return (op_node_is(n, "ReduceMean") || op_node_is(n, "ReduceSumSquare")) && reduces_last(gr, n);
}

/* Gather(stream, constant positions) on an axis other than the last: the pooled positions. */
static bool pool_gather(const op_graph *gr, const Onnx__NodeProto *n, const char *v, op_pooling *pl) {
  if (!op_node_is(n, "Gather") || n->n_input != 2 || strcmp(n->input[0], v) != 0) return false;
  int64_t axis = op_node_attr_int(n, "axis", 0);
  Onnx__TensorProto *t = op_graph_const(gr, n->input[1]);
  int64_t k = t ? op_tensor_numel(t) : -1;
  if (axis < 0 || k < 1 || k > 4096) return false; /* a negative axis could be the channels: not pooling */
  int64_t *idx = op_xmalloc((size_t)k * sizeof *idx);
  for (int64_t i = 0; i < k; i++)
    if (!op_tensor_get_int(t, i, &idx[i])) {
      free(idx);
      return false;
    }
  bool same = !pl->found || (pl->axis == axis && pl->n_idx == (size_t)k && !memcmp(pl->idx, idx, (size_t)k * sizeof *idx));
  if (!pl->found) pl->axis = (int)axis, pl->idx = idx, pl->n_idx = (size_t)k, pl->found = true;
  else free(idx);
  return same;
}

bool op_pooling_find(const op_analysis *a, const char *stream, op_pooling *pl) {
  memset(pl, 0, sizeof *pl);
  OP_VEC(const char *) todo = {0};
  OP_VEC_PUSH(todo, stream);
  bool ok = true;
  for (int steps = 0; todo.n && ok && steps < 256; steps++) {
    const char *v = todo.v[--todo.n];
    op_value *val = op_graph_find(a->gr, v);
    if (!val || val->graph_output || val->n_outer_users) {
      ok = false;
      break;
    }
    for (size_t i = 0; i < val->n_consumers && ok; i++) {
      const Onnx__NodeProto *n = a->gr->g->node[val->consumers[i]];
      if (pool_gather(a->gr, n, v, pl)) continue;
      if (!position_wise(a->gr, n) || n->n_output != 1) ok = false;
      else OP_VEC_PUSH(todo, n->output[0]);
    }
  }
  ok = ok && !todo.n && pl->found;
  free(todo.v);
  if (!ok) op_pooling_free(pl);
  return ok;
}

bool op_pooling_row(const op_pooling *pl, const int64_t *dims, int rank, int64_t r) {
  if (pl->axis >= rank - 1) return false;
  int64_t inner = 1;
  for (int d = pl->axis + 1; d < rank - 1; d++) inner *= dims[d];
  int64_t pos = (r / inner) % dims[pl->axis];
  for (size_t i = 0; i < pl->n_idx; i++)
    if (pl->idx[i] == pos || pl->idx[i] + dims[pl->axis] == pos) return true;
  return false;
}

/* ---- rows of one order found in another: a row's bytes are its name ---- */

static uint64_t row_hash(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull; /* FNV-1a */
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

int64_t op_rows_in(const uint8_t *rows, int64_t n_rows, const uint8_t *set, const bool *in_set, int64_t n_set,
                   size_t row_bytes, bool *found) {
  size_t cap = 16;
  while (cap < (size_t)n_set * 2) cap *= 2;
  int64_t *slot = op_xmalloc(cap * sizeof *slot);
  for (size_t i = 0; i < cap; i++) slot[i] = -1;
  for (int64_t s = 0; s < n_set; s++) {
    if (!in_set[s]) continue;
    size_t h = (size_t)row_hash(set + (size_t)s * row_bytes, row_bytes) & (cap - 1);
    while (slot[h] >= 0) h = (h + 1) & (cap - 1);
    slot[h] = s;
  }
  int64_t hits = 0;
  for (int64_t r = 0; r < n_rows; r++) {
    const uint8_t *p = rows + (size_t)r * row_bytes;
    found[r] = false;
    for (size_t h = (size_t)row_hash(p, row_bytes) & (cap - 1); slot[h] >= 0 && !found[r]; h = (h + 1) & (cap - 1))
      found[r] = memcmp(set + (size_t)slot[h] * row_bytes, p, row_bytes) == 0;
    hits += found[r];
  }
  free(slot);
  return hits;
}
