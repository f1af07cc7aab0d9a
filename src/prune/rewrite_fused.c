/* rewrite_fused.c - the part of the rewrite that ONNX Runtime's fused operators need: their head-count
 * attributes, MultiHeadAttention's packed bias input, the head axis of past/present state graph
 * interfaces, private copies of biases several fused ops share, and refusing to bypass a fused
 * residual (SkipLayerNormalization). */
#include "prune/prune.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int op_fused_check_plan(const op_analysis *a, const op_plan *plan, op_error *err) {
  for (size_t l = 0; l < plan->n && l < a->layers.n; l++) {
    const op_layer_plan *lp = &plan->layers[l];
    const op_layer *L = &a->layers.v[l];
    for (int k = 0; k < 2; k++) {
      int bi = k == 0 ? L->attn_block : L->ffn_block;
      bool drop = lp->drop_layer || (k == 0 ? lp->drop_attn : lp->drop_ffn);
      if (bi < 0 || !drop || !a->blocks.v[bi].fused_residual) continue;
      const Onnx__NodeProto *n = a->gr->g->node[a->blocks.v[bi].residual_add];
      return op_fail(err, OP_UNSUPPORTED,
                     "%s: layer %zu: its %s ends in %s '%s' (the residual Add fused with the next norm), which cannot "
                     "be bypassed: removing whole blocks or layers of ONNX Runtime's fused graphs is not supported "
                     "(prune heads or neurons instead)",
                     a->model->path, l, k == 0 ? "attention" : "FFN", n->op_type, op_node_name(n));
    }
  }
  return 0;
}

Onnx__TensorProto *op_fused_own_bias(op_analysis *a, int node, const char *name) {
  Onnx__TensorProto *t = op_proj_tensor(a, name);
  op_value *v = op_graph_find(a->gr, name);
  if (!t || !v || node < 0) return t;
  Onnx__NodeProto *n = a->gr->g->node[node];
  size_t own = 0;
  for (size_t i = 0; i < n->n_input; i++) own += strcmp(n->input[i], name) == 0;
  /* own == 0: read through Identity/Cast, which the matcher accepts only unshared */
  if (own == 0 || v->n_consumers <= own || op_tensor_to_raw(t) != 0) return t; /* this node's alone */
  Onnx__TensorProto *c = op_tensor_new(name, t->data_type, t->dims, t->n_dims);
  memcpy(c->raw_data.data, t->raw_data.data, c->raw_data.len);
  const char *nm = op_graph_add_init(a->gr, c);
  for (size_t i = 0; i < n->n_input; i++)
    if (strcmp(n->input[i], name) == 0) op_node_set_input(n, i, nm);
  return c;
}

static void set_int_attr(Onnx__NodeProto *n, const char *name, int64_t v) {
  Onnx__AttributeProto *at = op_node_attr(n, name);
  if (at) at->i = v;
  else op_node_add_int(n, name, v);
}

/* Sets the static head axis of a graph input or output to `heads` (a symbolic axis stays). */
static void set_state_heads(Onnx__GraphProto *g, const char *name, bool input, int axis, int64_t heads) {
  if (!name || !name[0]) return;
  Onnx__ValueInfoProto **vi = input ? g->input : g->output;
  size_t nv = input ? g->n_input : g->n_output;
  for (size_t i = 0; i < nv; i++) {
    if (strcmp(vi[i]->name, name) != 0 || !vi[i]->type || !vi[i]->type->tensor_type ||
        !vi[i]->type->tensor_type->shape || (size_t)axis >= vi[i]->type->tensor_type->shape->n_dim)
      continue;
    Onnx__TensorShapeProto__Dimension *d = vi[i]->type->tensor_type->shape->dim[axis];
    if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE) d->dim_value = heads;
  }
}

/* Keeps the listed channels of a 1-D tensor. */
static void slice_vector(op_analysis *a, int node, const char *name, const int64_t *keep, int64_t nk, int layer,
                         op_prune_report *r) {
  Onnx__TensorProto *b = op_fused_own_bias(a, node, name);
  if (!b || op_tensor_to_raw(b) != 0) return;
  size_t es = op_dtype_size(b->data_type);
  uint8_t *nb = op_xmalloc((size_t)nk * es + 1);
  for (int64_t i = 0; i < nk; i++) memcpy(nb + (size_t)i * es, b->raw_data.data + (size_t)keep[i] * es, es);
  const char *shown = b != op_proj_tensor(a, name) ? b->name : name; /* a private copy: its own name */
  op_tensor_change ch = {.layer = layer, .name = op_xstrdup(shown), .rank = 1, .before = {b->dims[0], 0}, .after = {nk, 0}};
  OP_VEC_PUSH(r->changes, ch);
  int64_t d = nk;
  op_tensor_replace(b, &d, 1, nb, (size_t)nk * es);
}

int op_fused_rewrite_heads(op_analysis *a, const op_attn *at, const int64_t *qh, int64_t H2, const int64_t *kvh,
                           int64_t KV2, int layer, op_prune_report *r, op_error *err) {
  (void)err;
  Onnx__GraphProto *g = a->gr->g;
  Onnx__NodeProto *n = g->node[at->fused_node];
  int64_t H = at->heads, KV = at->kv_heads;
  set_int_attr(n, "num_heads", H2);
  if (strcmp(at->fused_op, "GroupQueryAttention") == 0) set_int_attr(n, "kv_num_heads", KV2);
  Onnx__AttributeProto *qs = strcmp(at->fused_op, "Attention") == 0 ? op_node_attr(n, "qkv_hidden_sizes") : NULL;
  for (int k = 0; qs && k < 3 && (size_t)k < qs->n_ints; k++) qs->ints[k] = qs->ints[k] / H * H2;
  op_fused_state st[4];
  int ns = op_fused_states(a, at, st);
  for (int i = 0; i < ns; i++) {
    int64_t after = st[i].kv ? KV2 : H2;
    set_state_heads(g, st[i].name, st[i].input, st[i].axis, after);
    OP_VEC_PUSH(r->state, ((op_state_change){layer, op_xstrdup(st[i].name), st[i].input, st[i].axis,
                                             st[i].kv ? KV : H, after}));
  }
  if (at->packed_bias) { /* MultiHeadAttention's [q | k | v] biases of the separate projections */
    int64_t total = 0;
    for (int k = 0; k < 3; k++) total += at->qkv[k].out;
    int64_t *ch = op_xmalloc((size_t)total * sizeof *ch), m = 0;
    for (int k = 0; k < 3; k++) {
      int64_t off, w = op_attn_part(at, k, &off), d = w / H;
      for (int64_t i = 0; i < H2; i++)
        for (int64_t j = 0; j < d; j++) ch[m++] = off + qh[i] * d + j;
    }
    slice_vector(a, at->fused_node, at->packed_bias, ch, m, layer, r);
    free(ch);
  }
  (void)kvh;
  (void)KV;
  return 0;
}
