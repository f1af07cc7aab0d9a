/* output_head.c - the linear products that produce a model's outputs (a classifier on pooled features):
 * which ones compensation may refit to the dense model's outputs, and why the others are left alone
 * (a tied or shared weight, a vocabulary-wide head, a path to the output that is not a relayout). */
#include "prune/recon.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Nodes that only move values around: a product behind them still produces the output element for element. */
static bool is_relayout(const Onnx__NodeProto *n) {
  static const char *const ops[] = {"Flatten", "Identity", "Reshape", "Squeeze", "Transpose", "Unsqueeze"};
  for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
    if (op_node_is(n, ops[i])) return true;
  return false;
}

static bool is_block_proj(const op_analysis *a, int node) {
  for (size_t l = 0; l < a->layers.n; l++) {
    const op_attn *at = op_layer_attn(a, (int)l);
    const op_ffn *f = op_layer_ffn(a, (int)l);
    if ((at && at->out.node == node) || (f && f->down.node == node)) return true;
  }
  return false;
}

/* An Add with an operand straight from a linear product (a bias add the matcher did not take). */
static bool adds_to_product(const op_analysis *a, const Onnx__NodeProto *add) {
  for (size_t i = 0; i < add->n_input; i++) {
    const Onnx__NodeProto *p = op_graph_producer(a->gr, add->input[i]);
    if (p && op_fused_is_linear(p)) return true;
  }
  return false;
}

static bool has_head(const op_output_head *v, size_t n, int node) {
  for (size_t i = 0; i < n; i++)
    if (v[i].p.node == node) return true;
  return false;
}

size_t op_output_heads_find(const op_analysis *a, op_output_head **heads) {
  const Onnx__GraphProto *g = a->model->proto->graph;
  OP_VEC(op_output_head) v = {0};
  for (size_t o = 0; o < g->n_output; o++) {
    op_output_head h;
    memset(&h, 0, sizeof h);
    h.p.node = -1;
    h.output = g->output[o]->name;
    h.error_before = h.error_after = -1;
    const char *t = h.output;
    Onnx__NodeProto *pn = op_graph_producer(a->gr, t);
    for (int hops = 0; pn && is_relayout(pn) && pn->n_input > 0 && hops < 16; hops++)
      t = pn->input[0], pn = op_graph_producer(a->gr, t);
    const char *why = NULL;
    if (!pn) continue; /* a graph input or a constant: nothing computes it */
    if (!op_match_proj_out(a, t, &h.p, &why)) {
      if (!op_fused_is_linear(pn) && !(op_node_is(pn, "Add") && adds_to_product(a, pn)))
        continue; /* not a product (a norm, a residual sum): nothing to refit */
      h.p.node = op_graph_node_index(a->gr, pn);
      h.skip = why ? why : "not a linear product with constant weights";
    } else {
      op_value *wv = op_graph_find(a->gr, h.p.w);
      if (has_head(v.v, v.n, h.p.node)) continue; /* reached from two outputs: once */
      if (is_block_proj(a, h.p.node)) h.skip = "it is a block's own projection";
      else if (!wv || wv->n_consumers != 1 || wv->graph_output || wv->graph_input >= 0)
        h.skip = "its weight is shared with other nodes (tied embeddings)";
      else if (h.p.out > OP_OUTPUT_HEAD_MAX_WIDTH)
        h.skip = "wider than 4096 outputs (a vocabulary: the refit is not worth its cost)";
    }
    OP_VEC_PUSH(v, h);
  }
  *heads = v.v;
  return v.n;
}
