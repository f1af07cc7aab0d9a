/* match_fused.c - recognises the graphs ONNX Runtime's optimizers write (com.microsoft domain) as the
 * one block description: Attention / MultiHeadAttention / GroupQueryAttention as attention blocks,
 * FusedMatMul as a projection, BiasGelu / FastGelu holding an up projection's bias, and
 * SkipLayerNormalization as the residual. Every fused attention op not understood is listed with the
 * attribute or input at fault. */
#include "match/match.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool is_ms(const Onnx__NodeProto *n, const char *op) {
  return n->domain && strcmp(n->domain, "com.microsoft") == 0 && strcmp(n->op_type, op) == 0;
}

static bool has_input(const Onnx__NodeProto *n, size_t i) { return i < n->n_input && n->input[i][0]; }

bool op_fused_is_linear(const Onnx__NodeProto *n) {
  return op_node_is(n, "MatMul") || op_node_is(n, "Gemm") || is_ms(n, "FusedMatMul");
}

int op_fused_matmul_linear(const Onnx__NodeProto *n, bool *trans, const char **why) {
  if (!is_ms(n, "FusedMatMul")) return 0;
  /* alpha scales the whole product: slicing channels and zeroing them commute with it */
  if (op_node_attr_int(n, "transA", 0) || op_node_attr_int(n, "transBatchA", 0) ||
      op_node_attr_int(n, "transBatchB", 0)) {
    *why = "FusedMatMul with transA, transBatchA or transBatchB";
    return -1;
  }
  *trans = op_node_attr_int(n, "transB", 0) != 0;
  return 1;
}

bool op_fused_matmul_activations(const Onnx__NodeProto *n) {
  /* the product of two activations per head: its layout attributes act within a head */
  return is_ms(n, "FusedMatMul") && !op_node_attr_int(n, "transA", 0);
}

/* ---- FFN activations holding the up projection's bias ---- */

static bool bias_act(const Onnx__NodeProto *n) { return is_ms(n, "BiasGelu") || is_ms(n, "FastGelu"); }

bool op_fused_act_bias(const Onnx__NodeProto *n, size_t i) { return bias_act(n) && i == 1; }

/* A float vector constant (initializer or Constant node), possibly shared: the rewrite gives each
 * pruned user its own copy. */
static Onnx__TensorProto *bias_tensor(const op_analysis *a, const char *name) {
  Onnx__TensorProto *t = op_graph_const(a->gr, name);
  if (!t || t->n_dims != 1 || !op_weight_dtype_ok(t->data_type) || op_tensor_to_raw(t) != 0) return NULL;
  op_value *v = op_graph_find(a->gr, name);
  return v && !v->graph_output ? t : NULL;
}

bool op_fused_ffn_bias(op_analysis *a, op_ffn *f, const char **why) {
  for (size_t i = 0; i < f->region.n; i++) {
    Onnx__NodeProto *n = a->gr->g->node[f->region.v[i]];
    if (!bias_act(n) || !has_input(n, 1)) continue;
    op_proj *up = NULL;
    for (int u = 0; u < f->n_up; u++)
      if (strcmp(f->up[u].y, n->input[0]) == 0) up = &f->up[u];
    Onnx__TensorProto *b = bias_tensor(a, n->input[1]);
    if (!up || up->b) {
      *why = op_match_why(a, "%s '%s' does not add its bias to a bias-free up projection's output", n->op_type,
                          op_node_name(n));
      return false;
    }
    if (!b || op_tensor_numel(b) != up->out) {
      *why = op_match_why(a, "%s '%s': its bias '%s' is not a float vector of the FFN width %lld", n->op_type,
                          op_node_name(n), n->input[1], (long long)up->out);
      return false;
    }
    up->b = op_graph_canonical(a->gr, n->input[1]);
    up->bias_node = f->region.v[i];
  }
  return true;
}

const char *op_fused_activation(const op_analysis *a, const op_ffn *f) {
  static const struct {
    const char *op, *name;
  } acts[] = {{"BiasGelu", "gelu(BiasGelu)"}, {"FastGelu", "gelu(FastGelu)"}, {"QuickGelu", "quickgelu"},
              {"Gelu", "gelu"}};
  for (size_t k = 0; k < sizeof acts / sizeof *acts; k++)
    for (size_t i = 0; i < f->region.n; i++)
      if (is_ms(a->gr->g->node[f->region.v[i]], acts[k].op)) return acts[k].name;
  return NULL;
}

/* counted: the blocks' counts include name already, so a repeat is taken back; otherwise name is added
 * the first time it is seen. */
static void count_bias(const op_analysis *a, op_name_vec *seen, const char *name, bool counted, int64_t *count) {
  if (!name) return;
  for (size_t i = 0; i < seen->n; i++)
    if (strcmp(seen->v[i], name) == 0) {
      Onnx__TensorProto *t = counted ? op_graph_const(a->gr, name) : NULL;
      if (t && op_dtype_is_float(t->data_type)) *count -= op_tensor_numel(t);
      return;
    }
  OP_VEC_PUSH(*seen, name);
  Onnx__TensorProto *t = counted ? NULL : op_graph_const(a->gr, name);
  if (t && op_dtype_is_float(t->data_type)) *count += op_tensor_numel(t);
}

void op_fused_count_biases(op_analysis *a) {
  op_name_vec seen = {0};
  for (size_t i = 0; i < a->attn.n; i++) {
    const op_attn *at = &a->attn.v[i];
    for (int k = 0; k < (at->packed ? 1 : 3); k++) count_bias(a, &seen, at->qkv[k].b, true, &a->params_attn);
    count_bias(a, &seen, at->out.b, true, &a->params_attn);
    count_bias(a, &seen, at->packed_bias, false, &a->params_attn);
  }
  for (size_t i = 0; i < a->ffn.n; i++) {
    const op_ffn *f = &a->ffn.v[i];
    for (int k = 0; k < f->n_up; k++) count_bias(a, &seen, f->up[k].b, true, &a->params_ffn);
    count_bias(a, &seen, f->down.b, true, &a->params_ffn);
  }
  free(seen.v);
}

int64_t op_fused_embed_params(const op_analysis *a) {
  int64_t n = 0;
  for (size_t i = 0; i < a->gr->g->n_node; i++) {
    const Onnx__NodeProto *e = a->gr->g->node[i];
    if (!is_ms(e, "EmbedLayerNormalization")) continue;
    for (size_t k = 2; k <= 4; k++) { /* word, position, segment embeddings */
      Onnx__TensorProto *t = has_input(e, k) ? op_graph_const(a->gr, e->input[k]) : NULL;
      if (t && t->n_dims == 2 && op_dtype_is_float(t->data_type)) n += op_tensor_numel(t);
    }
  }
  return n;
}

/* ---- SkipLayerNormalization as the residual ---- */

static bool skip_norm(const Onnx__NodeProto *n) {
  return is_ms(n, "SkipLayerNormalization") || is_ms(n, "SkipSimplifiedLayerNormalization");
}

/* Does node p produce both x (a norm of the stream) and s (the stream)? EmbedLayerNormalization's
 * output 2 and SkipLayerNormalization's output 3 carry the un-normalised sum beside the norm. */
static bool norm_beside(const Onnx__NodeProto *p, const char *x, const char *s) {
  bool has_x = false, has_s = false;
  for (size_t o = 0; o < p->n_output; o++) {
    has_x |= strcmp(p->output[o], x) == 0;
    has_s |= strcmp(p->output[o], s) == 0;
  }
  return has_x && has_s;
}

static bool is_norm(const Onnx__NodeProto *p) {
  return op_node_is(p, "LayerNormalization") || op_node_is(p, "RMSNormalization") ||
         is_ms(p, "SimplifiedLayerNormalization") || op_node_is(p, "SimplifiedLayerNormalization") ||
         is_ms(p, "LayerNormalization");
}

int op_fused_residual(op_analysis *a, const char *x, const char *y, const Onnx__NodeProto *c, int ci, op_block *blk) {
  if (!skip_norm(c)) return 0;
  if (c->n_input < 2 || (strcmp(c->input[0], y) != 0 && strcmp(c->input[1], y) != 0)) return -1;
  const char *s = strcmp(c->input[0], y) == 0 ? c->input[1] : c->input[0];
  Onnx__NodeProto *p = op_graph_producer(a->gr, x);
  bool post = strcmp(x, s) == 0;
  bool pre = !post && p && (norm_beside(p, x, s) || (is_norm(p) && strcmp(p->input[0], s) == 0));
  if (!post && !pre) return -1;
  blk->residual_add = ci;
  blk->stream_in = op_graph_canonical(a->gr, s);
  blk->pre_norm = pre;
  blk->fused_residual = true;
  /* post-norm: the normalised output is the stream; pre-norm: the sum (output 3), when it is kept */
  bool has_sum = c->n_output > 3 && c->output[3][0];
  blk->stream_out = pre && has_sum ? c->output[3] : c->output[0];
  blk->stream_out_known = post || has_sum;
  blk->add_out = blk->stream_out;
  return 1;
}

/* ---- fused attention operators ---- */

/* Fused attention operators (ONNX Runtime's com.microsoft ones, and ONNX's own Attention). */
static const char *const FUSED_ATTENTION_OPS[] = {"Attention", "MultiHeadAttention", "GroupQueryAttention",
                                                  "PackedAttention", "PackedMultiHeadAttention",
                                                  "DecoderMaskedMultiHeadAttention", "DecoderMaskedSelfAttention",
                                                  "LongformerAttention", "SparseAttention", "PagedAttention", NULL};

static bool fused_attention_op(const Onnx__NodeProto *n) {
  bool ms = n->domain && strcmp(n->domain, "com.microsoft") == 0;
  for (const char *const *o = FUSED_ATTENTION_OPS; *o; o++)
    if (op_node_is(n, *o) || (ms && strcmp(n->op_type, *o) == 0)) return true;
  return false;
}

int op_fused_states(const op_analysis *a, const op_attn *at, op_fused_state *out) {
  if (!at->fused_op) return 0;
  const Onnx__NodeProto *n = a->gr->g->node[at->fused_node];
  /* slots of past (inputs) and present (outputs), and the head axis: Attention's [2, B, H, S, d],
   * MultiHeadAttention's and GroupQueryAttention's [B, H or KV, S, d] */
  size_t in0 = 4, nin = 1, axis = 2;
  bool kv = false;
  if (strcmp(at->fused_op, "MultiHeadAttention") == 0) in0 = 6, nin = 2, axis = 1;
  else if (strcmp(at->fused_op, "GroupQueryAttention") == 0) in0 = 3, nin = 2, axis = 1, kv = true;
  int k = 0;
  for (size_t i = 0; i < nin; i++) {
    op_value *v;
    if (has_input(n, in0 + i) && (v = op_graph_find(a->gr, n->input[in0 + i])) && v->graph_input >= 0)
      out[k++] = (op_fused_state){n->input[in0 + i], true, (int)axis, kv};
    if (1 + i < n->n_output && n->output[1 + i][0] && (v = op_graph_find(a->gr, n->output[1 + i])) && v->graph_output)
      out[k++] = (op_fused_state){n->output[1 + i], false, (int)axis, kv};
  }
  return k;
}

const char *op_fused_kind(const op_attn *at) {
  if (!at->fused_op) return NULL;
  if (strcmp(at->fused_op, "Attention") == 0) return "fused op (Attention)";
  if (strcmp(at->fused_op, "MultiHeadAttention") == 0) return "fused op (MultiHeadAttention)";
  return "fused op (GroupQueryAttention)";
}

/* A graph input (past state) or graph output (present state) whose head axis is `axis`: a static
 * head axis must hold `heads`. Empty names pass. NULL when fine, else the reason. */
static const char *state_ok(op_analysis *a, const Onnx__NodeProto *n, const char *name, bool input, int axis,
                            int64_t heads) {
  if (!name || !name[0]) return NULL;
  op_value *v = op_graph_find(a->gr, name);
  if (!v) return NULL;
  if (input && v->graph_input < 0)
    return op_match_why(a, "%s '%s': past state '%s' is computed in the graph, not a graph input whose head count "
                        "can change", n->op_type, op_node_name(n), name);
  if (!input && v->n_consumers)
    return op_match_why(a, "%s '%s': present state '%s' is read inside the graph", n->op_type, op_node_name(n), name);
  if (!input && !v->graph_output) return NULL;
  Onnx__GraphProto *g = a->gr->g;
  Onnx__ValueInfoProto **vi = input ? g->input : g->output;
  size_t nv = input ? g->n_input : g->n_output;
  for (size_t i = 0; i < nv; i++) {
    if (strcmp(vi[i]->name, name) != 0 || !vi[i]->type || !vi[i]->type->tensor_type ||
        !vi[i]->type->tensor_type->shape)
      continue;
    Onnx__TensorShapeProto *sh = vi[i]->type->tensor_type->shape;
    if ((size_t)axis >= sh->n_dim) return op_match_why(a, "%s '%s': state '%s' has rank %zu", n->op_type, op_node_name(n), name, sh->n_dim);
    Onnx__TensorShapeProto__Dimension *d = sh->dim[axis];
    if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && d->dim_value != heads)
      return op_match_why(a, "%s '%s': state '%s' has %lld heads on axis %d, the op %lld", n->op_type, op_node_name(n),
                          name, (long long)d->dim_value, axis, (long long)heads);
  }
  return NULL;
}

/* The output projection reading the attention op's output t (a linear layer, with its bias Add). */
static const char *match_out_proj(op_analysis *a, const Onnx__NodeProto *n, const char *t, op_proj *out) {
  int ci;
  Onnx__NodeProto *c = op_match_real_consumer(a, t, &ci);
  const char *why = "";
  if (!c || !op_fused_is_linear(c) || strcmp(c->input[0], t) != 0)
    return op_match_why(a, "%s '%s': its output does not feed one output projection (MatMul, Gemm or FusedMatMul)",
                        n->op_type, op_node_name(n));
  if (!op_match_linear(a, ci, out, &why))
    return op_match_why(a, "%s '%s': output projection: %s", n->op_type, op_node_name(n), why);
  Onnx__NodeProto *b = op_match_real_consumer(a, out->y, NULL);
  op_proj with_bias;
  if (!out->b && b && op_node_is(b, "Add") && op_match_proj_out(a, b->output[0], &with_bias, NULL) && with_bias.node == ci)
    *out = with_bias;
  return NULL;
}

/* Attributes the rewrite keeps right when heads go: anything else set to a non-default value is a
 * form not understood. */
static const char *unknown_attr(op_analysis *a, const Onnx__NodeProto *n, const char *const *known) {
  for (size_t i = 0; i < n->n_attribute; i++) {
    bool ok = false;
    for (const char *const *k = known; *k && !ok; k++) ok = strcmp(n->attribute[i]->name, *k) == 0;
    if (!ok)
      return op_match_why(a, "%s '%s': attribute '%s' is not understood: its heads are left as they are", n->op_type,
                          op_node_name(n), n->attribute[i]->name);
  }
  return NULL;
}

/* An input that carries one value per head (a per-head bias, head sinks): present means not supported. */
static const char *per_head_input(op_analysis *a, const Onnx__NodeProto *n, size_t i, const char *what) {
  if (!has_input(n, i)) return NULL;
  return op_match_why(a, "%s '%s': input %zu (%s '%s') carries values per head, which are not sliced", n->op_type,
                      op_node_name(n), i, what, n->input[i]);
}

/* The packed q|k|v weight of Attention: [E_in, Dq + Dk + Dv] and its bias. */
static const char *packed_weight(op_analysis *a, const Onnx__NodeProto *n, int ni, op_proj *p) {
  memset(p, 0, sizeof *p);
  p->node = ni;
  p->bias_node = -1;
  Onnx__TensorProto *w;
  const char *src = op_weight_source(a->gr, n->input[1], &w);
  if (!src || !op_weight_dtype_ok(w->data_type) || w->n_dims != 2)
    return op_match_why(a, "Attention '%s': weights '%s' are not a private float matrix", op_node_name(n), n->input[1]);
  p->w = src;
  p->dtype = w->data_type;
  p->in = w->dims[0];
  p->out = w->dims[1];
  p->x = n->input[0];
  p->y = n->output[0];
  if (has_input(n, 2)) {
    Onnx__TensorProto *b = bias_tensor(a, n->input[2]);
    if (!b || op_tensor_numel(b) != p->out)
      return op_match_why(a, "Attention '%s': bias '%s' is not a float vector of the q|k|v width %lld", op_node_name(n),
                          n->input[2], (long long)p->out);
    p->b = op_graph_canonical(a->gr, n->input[2]);
    p->bias_node = ni;
  }
  return NULL;
}

static const char *match_attention_op(op_analysis *a, int ni, op_attn *at) {
  Onnx__NodeProto *n = a->gr->g->node[ni];
  static const char *const known[] = {"num_heads", "qkv_hidden_sizes", "unidirectional", "mask_filter_value",
                                      "scale", "past_present_share_buffer", "do_rotary", "rotary_embedding_dim", NULL};
  const char *why = unknown_attr(a, n, known);
  if (!why) why = per_head_input(a, n, 5, "attention_bias");
  if (why) return why;
  if (n->n_input < 2) return op_match_why(a, "Attention '%s': no weights input", op_node_name(n));
  int64_t H = op_node_attr_int(n, "num_heads", 0);
  if (H < 1) return op_match_why(a, "Attention '%s': attribute 'num_heads' is missing or < 1", op_node_name(n));
  if ((why = packed_weight(a, n, ni, &at->qkv[0]))) return why;
  int64_t W = at->qkv[0].out;
  Onnx__AttributeProto *qs = op_node_attr(n, "qkv_hidden_sizes");
  if (qs) {
    if (qs->n_ints != 3 || qs->ints[0] + qs->ints[1] + qs->ints[2] != W || qs->ints[0] != qs->ints[1] ||
        qs->ints[0] % H || qs->ints[2] % H || qs->ints[0] <= 0 || qs->ints[2] <= 0)
      return op_match_why(a, "Attention '%s': attribute 'qkv_hidden_sizes' is not three widths (q = k) of whole "
                          "heads summing to the weight's %lld columns", op_node_name(n), (long long)W);
    for (int k = 0; k < 3; k++) at->part[k] = qs->ints[k];
  } else if (W % 3 || (W / 3) % H) {
    return op_match_why(a, "Attention '%s': the q|k|v width %lld is not three parts of %lld heads", op_node_name(n),
                        (long long)W, (long long)H);
  }
  at->packed = true;
  at->heads = at->kv_heads = H;
  at->head_dim = op_attn_part(at, 0, NULL) / H;
  if ((why = state_ok(a, n, has_input(n, 4) ? n->input[4] : NULL, true, 2, H))) return why;
  if ((why = state_ok(a, n, n->n_output > 1 ? n->output[1] : NULL, false, 2, H))) return why;
  return match_out_proj(a, n, n->output[0], &at->out);
}

/* q, k, v of MultiHeadAttention / GroupQueryAttention from their own projections (slots 0..2). */
static const char *separate_qkv(op_analysis *a, const Onnx__NodeProto *n, op_attn *at) {
  static const char *const role[3] = {"query", "key", "value"};
  for (int k = 0; k < 3; k++) {
    const char *why = "";
    if (!op_match_proj_out(a, n->input[k], &at->qkv[k], &why))
      return op_match_why(a, "%s '%s': %s input '%s' is not a projection output: %s", n->op_type, op_node_name(n),
                          role[k], n->input[k], why);
    op_value *v = op_graph_find(a->gr, at->qkv[k].y);
    if (v->n_consumers != 1 || v->graph_output)
      return op_match_why(a, "%s '%s': %s projection output is used elsewhere", n->op_type, op_node_name(n), role[k]);
  }
  if (strcmp(at->qkv[1].x, at->qkv[0].x) != 0 || strcmp(at->qkv[2].x, at->qkv[0].x) != 0)
    return op_match_why(a, "%s '%s': key/value read another input than the query (cross-attention is not supported)",
                        n->op_type, op_node_name(n));
  if (at->qkv[0].node == at->qkv[1].node || at->qkv[1].node == at->qkv[2].node || at->qkv[0].node == at->qkv[2].node)
    return op_match_why(a, "%s '%s': q, k and v share a projection", n->op_type, op_node_name(n));
  return NULL;
}

static const char *match_mha(op_analysis *a, int ni, op_attn *at) {
  Onnx__NodeProto *n = a->gr->g->node[ni];
  static const char *const known[] = {"num_heads", "unidirectional", "mask_filter_value", "scale", NULL};
  const char *why = unknown_attr(a, n, known);
  if (!why) why = per_head_input(a, n, 5, "attention_bias");
  if (why) return why;
  int64_t H = op_node_attr_int(n, "num_heads", 0);
  if (H < 1) return op_match_why(a, "MultiHeadAttention '%s': attribute 'num_heads' is missing or < 1", op_node_name(n));
  if (!has_input(n, 1) || !has_input(n, 2))
    return op_match_why(a, "MultiHeadAttention '%s': packed q|k|v or k|v in one input (interleaved per head) is not "
                        "supported: give key and value as their own inputs", op_node_name(n));
  if ((why = separate_qkv(a, n, at))) return why;
  int64_t Dq = at->qkv[0].out, Dk = at->qkv[1].out, Dv = at->qkv[2].out;
  if (Dq != Dk || Dq % H || Dv % H)
    return op_match_why(a, "MultiHeadAttention '%s': q/k/v widths %lld/%lld/%lld are not whole heads of %lld heads "
                        "(q = k)", op_node_name(n), (long long)Dq, (long long)Dk, (long long)Dv, (long long)H);
  if (has_input(n, 3)) {
    Onnx__TensorProto *b = bias_tensor(a, n->input[3]);
    if (!b || op_tensor_numel(b) != Dq + Dk + Dv)
      return op_match_why(a, "MultiHeadAttention '%s': bias '%s' is not a float vector of the q|k|v width %lld",
                          op_node_name(n), n->input[3], (long long)(Dq + Dk + Dv));
    for (int k = 0; k < 3; k++)
      if (at->qkv[k].b)
        return op_match_why(a, "MultiHeadAttention '%s': the bias input and a projection's own bias both add to %s",
                            op_node_name(n), k == 0 ? "q" : k == 1 ? "k" : "v");
    at->packed_bias = op_graph_canonical(a->gr, n->input[3]);
    for (int k = 0; k < 3; k++) at->part[k] = at->qkv[k].out;
  }
  at->heads = at->kv_heads = H;
  at->head_dim = Dq / H;
  for (int k = 0; k < 2; k++) {
    if ((why = state_ok(a, n, has_input(n, 6 + (size_t)k) ? n->input[6 + k] : NULL, true, 1, H))) return why;
    if ((why = state_ok(a, n, n->n_output > 1 + (size_t)k ? n->output[1 + k] : NULL, false, 1, H))) return why;
  }
  return match_out_proj(a, n, n->output[0], &at->out);
}

static const char *match_gqa(op_analysis *a, int ni, op_attn *at) {
  Onnx__NodeProto *n = a->gr->g->node[ni];
  static const char *const known[] = {"num_heads", "kv_num_heads", "do_rotary", "rotary_interleaved", "scale",
                                      "local_window_size", "softcap", "smooth_softmax", NULL};
  const char *why = unknown_attr(a, n, known);
  if (!why) why = per_head_input(a, n, 10, "attention_bias");
  if (!why) why = per_head_input(a, n, 11, "head_sink");
  if (why) return why;
  int64_t H = op_node_attr_int(n, "num_heads", 0), KV = op_node_attr_int(n, "kv_num_heads", 0);
  if (H < 1 || KV < 1 || H % KV)
    return op_match_why(a, "GroupQueryAttention '%s': attributes 'num_heads' %lld and 'kv_num_heads' %lld are not a "
                        "whole number of query heads per kv head", op_node_name(n), (long long)H, (long long)KV);
  if (has_input(n, 1) != has_input(n, 2))
    return op_match_why(a, "GroupQueryAttention '%s': key without value or value without key", op_node_name(n));
  int64_t d;
  if (has_input(n, 1)) {
    if ((why = separate_qkv(a, n, at))) return why;
    if (at->qkv[0].out % H || at->qkv[1].out != at->qkv[2].out || at->qkv[1].out * H != at->qkv[0].out * KV)
      return op_match_why(a, "GroupQueryAttention '%s': q/k/v widths %lld/%lld/%lld do not give %lld query and %lld kv "
                          "heads of one size", op_node_name(n), (long long)at->qkv[0].out, (long long)at->qkv[1].out,
                          (long long)at->qkv[2].out, (long long)H, (long long)KV);
    d = at->qkv[0].out / H;
  } else { /* packed q|k|v: [q of H heads | k of KV heads | v of KV heads] */
    if (!op_match_proj_out(a, n->input[0], &at->qkv[0], &why))
      return op_match_why(a, "GroupQueryAttention '%s': packed q|k|v input '%s' is not a projection output: %s",
                          op_node_name(n), n->input[0], why);
    if (at->qkv[0].out % (H + 2 * KV))
      return op_match_why(a, "GroupQueryAttention '%s': packed width %lld is not %lld query + 2 x %lld kv heads",
                          op_node_name(n), (long long)at->qkv[0].out, (long long)H, (long long)KV);
    d = at->qkv[0].out / (H + 2 * KV);
    at->packed = true;
    at->part[0] = H * d;
    at->part[1] = at->part[2] = KV * d;
  }
  at->heads = H;
  at->kv_heads = KV;
  at->head_dim = d;
  at->kv_map = KV == H ? OP_KV_SAME : OP_KV_INTERLEAVED; /* query head h reads kv head h / (H / KV) */
  for (int k = 0; k < 2; k++) {
    if ((why = state_ok(a, n, has_input(n, 3 + (size_t)k) ? n->input[3 + k] : NULL, true, 1, KV))) return why;
    if ((why = state_ok(a, n, n->n_output > 1 + (size_t)k ? n->output[1 + k] : NULL, false, 1, KV))) return why;
  }
  return match_out_proj(a, n, n->output[0], &at->out);
}

void op_fused_match_attention(op_analysis *a, bool *used) {
  Onnx__GraphProto *g = a->gr->g;
  for (size_t i = 0; i < g->n_node; i++) {
    Onnx__NodeProto *n = g->node[i];
    if (!fused_attention_op(n)) continue;
    op_attn at;
    memset(&at, 0, sizeof at);
    at.fused_op = n->op_type;
    at.fused_node = (int)i;
    at.softmax = -1;
    const char *why;
    if (is_ms(n, "Attention")) why = match_attention_op(a, (int)i, &at);
    else if (is_ms(n, "MultiHeadAttention")) why = match_mha(a, (int)i, &at);
    else if (is_ms(n, "GroupQueryAttention")) why = match_gqa(a, (int)i, &at);
    else
      why = op_match_why(a, "fused attention operator %s%s%s is not supported: its heads are left as they are",
                         n->domain && n->domain[0] ? n->domain : "", n->domain && n->domain[0] ? "." : "", n->op_type);
    int64_t vw = why ? 0 : at.packed ? op_attn_part(&at, 2, NULL) : at.qkv[2].out; /* v: kv heads of dv */
    if (!why && at.out.in != at.heads * (vw / at.kv_heads))
      why = op_match_why(a, "%s '%s': the output projection reads %lld values, %lld heads of v's %lld give %lld",
                         n->op_type, op_node_name(n), (long long)at.out.in, (long long)at.heads,
                         (long long)(vw / at.kv_heads), (long long)(at.heads * (vw / at.kv_heads)));
    op_block blk = {.kind = OP_BLOCK_ATTN, .index = (int)a->attn.n};
    if (!why && !op_match_residual(a, at.qkv[0].x, at.out.y, &blk))
      why = op_match_why(a, "%s '%s': its output does not join a residual connection", n->op_type, op_node_name(n));
    bool shared = used[at.out.node];
    for (int k = 0; k < (at.packed ? 1 : 3) && !why; k++) shared |= used[at.qkv[k].node];
    if (!why && shared) why = op_match_why(a, "%s '%s': shares a projection with another block", n->op_type, op_node_name(n));
    if (why) {
      op_match_unmatched(a, n, why);
      a->unmatched_attn++;
      free(at.region.v);
      continue;
    }
    for (int k = 0; k < (at.packed ? 1 : 3); k++) used[at.qkv[k].node] = true;
    used[at.out.node] = true;
    used[i] = true;
    /* tensors whose width follows the head count: the op's output and its present state */
    for (size_t o = 0; o < n->n_output; o++)
      if (n->output[o][0]) OP_VEC_PUSH(at.region, n->output[o]);
    OP_VEC_PUSH(a->attn, at);
    OP_VEC_PUSH(a->blocks, blk);
  }
}
