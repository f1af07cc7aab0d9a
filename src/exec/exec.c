/* exec.c - sessions: checks every operator before any work, orders the nodes topologically, runs
 * them and frees each value after its last use; an observer sees every node output as it appears. */
#include "exec/exec.h"
#include "files/files.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sorted by name for bsearch. Arity is data: checked once when a session is made. */
static const op_op OPS[] = {
    {"Abs", op_k_abs, 1, 1, 1},
    {"Acos", op_k_acos, 1, 1, 1},
    {"Acosh", op_k_acosh, 1, 1, 1},
    {"Add", op_k_add, 2, 2, 1},
    {"And", op_k_and, 2, 2, 1},
    {"ArgMax", op_k_argmax, 1, 1, 1},
    {"ArgMin", op_k_argmin, 1, 1, 1},
    {"Asin", op_k_asin, 1, 1, 1},
    {"Asinh", op_k_asinh, 1, 1, 1},
    {"Atan", op_k_atan, 1, 1, 1},
    {"Atanh", op_k_atanh, 1, 1, 1},
    {"Attention", op_k_attention, 3, 6, 4},
    {"AveragePool", op_k_average_pool, 1, 1, 1},
    {"BatchNormalization", op_k_batch_norm, 5, 5, 3},
    {"Cast", op_k_cast, 1, 1, 1},
    {"CastLike", op_k_cast_like, 2, 2, 1},
    {"Ceil", op_k_ceil, 1, 1, 1},
    {"Celu", op_k_celu, 1, 1, 1},
    {"Clip", op_k_clip, 1, 3, 1},
    {"Compress", op_k_compress, 2, 2, 1},
    {"Concat", op_k_concat, 1, 255, 1},
    {"Constant", op_k_constant, 0, 0, 1},
    {"ConstantOfShape", op_k_constant_of_shape, 1, 1, 1},
    {"Conv", op_k_conv, 2, 3, 1},
    {"ConvTranspose", op_k_conv_transpose, 2, 3, 1},
    {"Cos", op_k_cos, 1, 1, 1},
    {"Cosh", op_k_cosh, 1, 1, 1},
    {"CumSum", op_k_cumsum, 2, 2, 1},
    {"DepthToSpace", op_k_depth_to_space, 1, 1, 1},
    {"DequantizeLinear", op_k_dequantize_linear, 2, 3, 1},
    {"Div", op_k_div, 2, 2, 1},
    {"Dropout", op_k_dropout, 1, 3, 2},
    {"Einsum", op_k_einsum, 1, 255, 1},
    {"Elu", op_k_elu, 1, 1, 1},
    {"Equal", op_k_equal, 2, 2, 1},
    {"Erf", op_k_erf, 1, 1, 1},
    {"Exp", op_k_exp, 1, 1, 1},
    {"Expand", op_k_expand, 2, 2, 1},
    {"EyeLike", op_k_eye_like, 1, 1, 1},
    {"Flatten", op_k_flatten, 1, 1, 1},
    {"Floor", op_k_floor, 1, 1, 1},
    {"Gather", op_k_gather, 2, 2, 1},
    {"GatherElements", op_k_gather_elements, 2, 2, 1},
    {"GatherND", op_k_gather_nd, 2, 2, 1},
    {"Gelu", op_k_gelu, 1, 1, 1},
    {"Gemm", op_k_gemm, 2, 3, 1},
    {"GlobalAveragePool", op_k_global_average_pool, 1, 1, 1},
    {"GlobalMaxPool", op_k_global_max_pool, 1, 1, 1},
    {"Greater", op_k_greater, 2, 2, 1},
    {"GreaterOrEqual", op_k_greater_equal, 2, 2, 1},
    {"GroupNormalization", op_k_group_norm, 3, 3, 1},
    {"HardSigmoid", op_k_hard_sigmoid, 1, 1, 1},
    {"HardSwish", op_k_hard_swish, 1, 1, 1},
    {"Hardmax", op_k_hardmax, 1, 1, 1},
    {"Identity", op_k_identity, 1, 1, 1},
    {"If", op_k_if, 1, 1, 64},
    {"InstanceNormalization", op_k_instance_norm, 3, 3, 1},
    {"IsInf", op_k_isinf, 1, 1, 1},
    {"IsNaN", op_k_isnan, 1, 1, 1},
    {"LRN", op_k_lrn, 1, 1, 1},
    {"LayerNormalization", op_k_layer_norm, 2, 3, 3},
    {"LeakyRelu", op_k_leaky_relu, 1, 1, 1},
    {"Less", op_k_less, 2, 2, 1},
    {"LessOrEqual", op_k_less_equal, 2, 2, 1},
    {"Log", op_k_log, 1, 1, 1},
    {"LogSoftmax", op_k_log_softmax, 1, 1, 1},
    {"Loop", op_k_loop, 0, 255, 64},
    {"MatMul", op_k_matmul, 2, 2, 1},
    {"MatMulInteger", op_k_matmul_integer, 2, 4, 1},
    {"Max", op_k_max, 1, 255, 1},
    {"MaxPool", op_k_max_pool, 1, 1, 2},
    {"Mean", op_k_mean, 1, 255, 1},
    {"MeanVarianceNormalization", op_k_mean_variance_norm, 1, 1, 1},
    {"Min", op_k_min, 1, 255, 1},
    {"Mod", op_k_mod, 2, 2, 1},
    {"Mul", op_k_mul, 2, 2, 1},
    {"Neg", op_k_neg, 1, 1, 1},
    {"NonZero", op_k_nonzero, 1, 1, 1},
    {"Not", op_k_not, 1, 1, 1},
    {"OneHot", op_k_one_hot, 3, 3, 1},
    {"Or", op_k_or, 2, 2, 1},
    {"PRelu", op_k_prelu, 2, 2, 1},
    {"Pad", op_k_pad, 1, 4, 1},
    {"Pow", op_k_pow, 2, 2, 1},
    {"QuantizeLinear", op_k_quantize_linear, 2, 3, 1},
    {"RMSNormalization", op_k_rms_norm, 2, 2, 1},
    {"Range", op_k_range, 3, 3, 1},
    {"Reciprocal", op_k_reciprocal, 1, 1, 1},
    {"ReduceL1", op_k_reduce_l1, 1, 2, 1},
    {"ReduceL2", op_k_reduce_l2, 1, 2, 1},
    {"ReduceLogSum", op_k_reduce_log_sum, 1, 2, 1},
    {"ReduceLogSumExp", op_k_reduce_log_sum_exp, 1, 2, 1},
    {"ReduceMax", op_k_reduce_max, 1, 2, 1},
    {"ReduceMean", op_k_reduce_mean, 1, 2, 1},
    {"ReduceMin", op_k_reduce_min, 1, 2, 1},
    {"ReduceProd", op_k_reduce_prod, 1, 2, 1},
    {"ReduceSum", op_k_reduce_sum, 1, 2, 1},
    {"ReduceSumSquare", op_k_reduce_sum_square, 1, 2, 1},
    {"Relu", op_k_relu, 1, 1, 1},
    {"Reshape", op_k_reshape, 2, 2, 1},
    {"Resize", op_k_resize, 1, 4, 1},
    {"ReverseSequence", op_k_reverse_sequence, 2, 2, 1},
    {"RotaryEmbedding", op_k_rotary_embedding, 3, 4, 1},
    {"Round", op_k_round, 1, 1, 1},
    {"ScatterElements", op_k_scatter_elements, 3, 3, 1},
    {"ScatterND", op_k_scatter_nd, 3, 3, 1},
    {"Selu", op_k_selu, 1, 1, 1},
    {"Shape", op_k_shape, 1, 1, 1},
    {"Shrink", op_k_shrink, 1, 1, 1},
    {"Sigmoid", op_k_sigmoid, 1, 1, 1},
    {"Sign", op_k_sign, 1, 1, 1},
    {"SimplifiedLayerNormalization", op_k_simplified_layer_norm, 2, 2, 2},
    {"Sin", op_k_sin, 1, 1, 1},
    {"Sinh", op_k_sinh, 1, 1, 1},
    {"Size", op_k_size, 1, 1, 1},
    {"Slice", op_k_slice, 3, 5, 1},
    {"Softmax", op_k_softmax, 1, 1, 1},
    {"Softplus", op_k_softplus, 1, 1, 1},
    {"Softsign", op_k_softsign, 1, 1, 1},
    {"SpaceToDepth", op_k_space_to_depth, 1, 1, 1},
    {"Split", op_k_split, 1, 2, 64},
    {"Sqrt", op_k_sqrt, 1, 1, 1},
    {"Squeeze", op_k_squeeze, 1, 2, 1},
    {"Sub", op_k_sub, 2, 2, 1},
    {"Sum", op_k_sum, 1, 255, 1},
    {"Tan", op_k_tan, 1, 1, 1},
    {"Tanh", op_k_tanh, 1, 1, 1},
    {"ThresholdedRelu", op_k_thresholded_relu, 1, 1, 1},
    {"Tile", op_k_tile, 2, 2, 1},
    {"TopK", op_k_topk, 2, 2, 2},
    {"Transpose", op_k_transpose, 1, 1, 1},
    {"Trilu", op_k_trilu, 1, 2, 1},
    {"Unsqueeze", op_k_unsqueeze, 1, 2, 1},
    {"Where", op_k_where, 3, 3, 1},
    {"Xor", op_k_xor, 2, 2, 1},
};

static int cmp_op(const void *key, const void *elem) { return strcmp((const char *)key, ((const op_op *)elem)->name); }

const op_op *op_exec_find_op(const char *op_type) {
  return bsearch(op_type, OPS, sizeof OPS / sizeof *OPS, sizeof *OPS, cmp_op);
}


/* Default-domain ops first; ONNX Runtime also registers SimplifiedLayerNormalization in the default
 * domain, so it falls back to the com.microsoft kernel of that name. */
const op_op *op_exec_find_node_op(const Onnx__NodeProto *nd) {
  if (op_exec_is_contrib_domain(nd->domain)) return op_exec_find_contrib_op(nd->op_type);
  if (nd->domain && nd->domain[0] && strcmp(nd->domain, "ai.onnx")) return NULL;
  const op_op *op = op_exec_find_op(nd->op_type);
  return op || strcmp(nd->op_type, "SimplifiedLayerNormalization") ? op : op_exec_find_contrib_op(nd->op_type);
}

const op_op *op_exec_ops(size_t *n) {
  *n = sizeof OPS / sizeof *OPS;
  return OPS;
}

typedef struct xnode {
  const Onnx__NodeProto *node;
  const op_op *op;
  op_wpack *wpack; /* MatMul/Gemm with a constant 2-D B: B packed for the kernel, NULL otherwise */
  bool wpack_owner, wpack_trans; /* freed with this node (not shared from an earlier one); B is [N, K] */
  uint64_t wpack_budget; /* the pack's own copy, held in the memory budget's running total */
  op_if_aux *sub;  /* If: its branch sessions */
  int *in, *out; /* value ids, -1 for an omitted optional */
  size_t n_in, n_out;
  /* epilogue fusion (fuse.c): the bias and activation this product applies itself, and the schedule
   * positions of the nodes that then do not run; NULL when none */
  op_epilogue *ep;
  size_t *ep_skip;
} xnode;

struct op_session {
  const op_model *m;
  op_graph *gr; /* value ids are slots of this index */
  int64_t opset;
  xnode *nodes;
  size_t n_nodes;
  int *uses;        /* consumers per value id, graph outputs counted as one more */
  op_xt *consts;    /* initializer values by id (views or owned copies); dtype 0 when none */
  int *inputs, *outputs;
  size_t n_inputs, n_outputs;
  op_xt_pool *pool; /* intermediate buffers, kept from run to run */
  int *captures;    /* a subgraph's values defined in outer scopes (value ids), given by op_session_run_sub */
  size_t n_captures;
  size_t n_fused;   /* products with a fused epilogue */
  bool observe_fused; /* an observer sees only what fused epilogues leave (op_session_observe_fused) */
};

static int value_id(const op_graph *gr, const char *name) {
  op_value *v = op_graph_find(gr, name);
  return v ? (int)(v - gr->values) : -1;
}

void op_session_free(op_session *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n_nodes; i++) {
    free(s->nodes[i].in);
    free(s->nodes[i].out);
    if (s->nodes[i].wpack_owner) op_wpack_free(s->nodes[i].wpack);
    op_budget_give(s->nodes[i].wpack_budget);
    op_if_free(s->nodes[i].sub);
    if (s->nodes[i].ep) op_epilogue_free(s->nodes[i].ep);
    free(s->nodes[i].ep);
    free(s->nodes[i].ep_skip);
  }
  free(s->captures);
  if (s->consts)
    for (size_t i = 0; i < s->gr->cap; i++) op_xt_release(&s->consts[i]);
  free(s->consts);
  free(s->nodes);
  free(s->uses);
  free(s->inputs);
  free(s->outputs);
  op_graph_free(s->gr);
  op_xt_pool_free(s->pool);
  free(s);
}

/* Whether the node reads its input 1 (B) only through a pack when B is a constant 2-D float weight:
 * MatMul's two-input form and Gemm without transA (op_k_matmul / op_k_gemm then never touch B's bytes). */
static bool packs_b(const Onnx__NodeProto *n, size_t n_in) {
  if (op_node_is(n, "MatMul")) return n_in == 2;
  return op_node_is(n, "Gemm") && !op_node_attr_int(n, "transA", 0);
}

/* Hands back the file-mapping pages of the initializer whose bytes are at data. */
static void release_borrowed(const Onnx__GraphProto *g, const void *data) {
  for (size_t i = 0; i < g->n_initializer; i++)
    if (g->initializer[i]->raw_data.data == data && op_tensor_is_borrowed(g->initializer[i]))
      op_release_pages(data, g->initializer[i]->raw_data.len);
}

/* The nodes in a topological order; fails on a cycle or a value nobody produces. */
static int schedule(op_session *s, op_error *err) {
  const Onnx__GraphProto *g = s->gr->g;
  size_t n = g->n_node;
  int *order = op_xmalloc((n ? n : 1) * sizeof *order);
  s->n_nodes = op_graph_order(s->gr, order);
  s->nodes = op_xcalloc(n ? n : 1, sizeof *s->nodes);
  for (size_t i = 0; i < s->n_nodes; i++) s->nodes[i].node = g->node[order[i]];
  int rc = 0;
  if (s->n_nodes != n) { /* name the first node that could not be placed */
    bool *placed = op_xcalloc(n, 1);
    for (size_t i = 0; i < s->n_nodes; i++) placed[order[i]] = true;
    for (size_t i = 0; i < n && !rc; i++)
      if (!placed[i])
        rc = op_fail(err, OP_INVALID, "%s: node '%s' (%s) waits on a cycle or an undefined value", s->m->path,
                     op_node_name(g->node[i]), g->node[i]->op_type);
    free(placed);
  }
  free(order);
  return rc;
}

/* Graph inputs and outputs must be tensors: sequences, maps and optionals are refused by name. */
static int check_tensor_values(const op_model *m, const Onnx__GraphProto *g, op_error *err) {
  for (size_t i = 0; i < g->n_input + g->n_output; i++) {
    const Onnx__ValueInfoProto *v = i < g->n_input ? g->input[i] : g->output[i - g->n_input];
    if (v->type && v->type->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE)
      return op_fail(err, OP_UNSUPPORTED, "%s: graph %s '%s' is not a tensor (sequence, map and optional values are not supported)",
                     m->path, i < g->n_input ? "input" : "output", v->name);
  }
  return 0;
}

/* Builds the branches of every If node of s's graph (in subs, by node index) and makes sure the names
 * they read from outer scopes have slots in s's index; then, in a subgraph, every value nobody
 * defines here becomes a capture (ready from the start, given at run time). */
static int prepare_subgraphs(op_session *s, op_if_aux **subs, bool sub, op_error *err) {
  const Onnx__GraphProto *g = s->gr->g;
  for (size_t i = 0; i < g->n_node; i++) {
    if (!op_node_is(g->node[i], "If") && !op_node_is(g->node[i], "Loop")) continue;
    if (!(subs[i] = op_if_prepare(s->m, g->node[i], err))) return -1;
    for (size_t c = 0; c < op_if_capture_count(subs[i]); c++)
      if (!op_graph_find(s->gr, op_if_capture_name(subs[i], c))) free(op_graph_fresh_name(s->gr, op_if_capture_name(subs[i], c)));
  }
  if (!sub) return 0;
  s->captures = op_xmalloc(s->gr->cap * sizeof(int));
  for (size_t i = 0; i < s->gr->cap; i++) {
    op_value *v = &s->gr->values[i];
    if (v->name && v->producer < 0 && v->init < 0 && v->graph_input < 0) {
      v->graph_input = (int)(g->n_input + s->n_captures); /* past the real inputs: only marks it ready */
      s->captures[s->n_captures++] = (int)i;
    }
  }
  return 0;
}

size_t op_session_capture_count(const op_session *s) { return s->n_captures; }
const char *op_session_capture_name(const op_session *s, size_t i) { return s->gr->values[s->captures[i]].name; }

/* ---- epilogue fusion: which products apply their bias and activation themselves ---- */

/* Attaches to each product with a packed weight the epilogue fuse.c finds after it, when every value
 * the replaced nodes (and the product) write, but the last, is read by those nodes alone: uses counts
 * what an If or Loop body reads too, which the graph index does not see. */
static void plan_epilogues(op_session *s) {
  const Onnx__GraphProto *g = s->gr->g;
  size_t *pos = op_xmalloc((g->n_node ? g->n_node : 1) * sizeof *pos); /* graph index -> schedule position */
  for (size_t i = 0; i < s->n_nodes; i++) pos[op_graph_node_index(s->gr, s->nodes[i].node)] = i;
  int *reads = op_xcalloc(s->gr->cap, sizeof *reads);
  for (size_t i = 0; i < s->n_nodes; i++) {
    xnode *x = &s->nodes[i];
    op_epilogue ep;
    if (!x->wpack || !op_fuse_find(s->gr, op_graph_node_index(s->gr, x->node), op_wpack_n(x->wpack), s->consts, &ep))
      continue;
    bool ok = x->n_out == 1 && x->out[0] >= 0;
    for (size_t k = 0; k < ep.n_skip && ok; k++) { /* reads of each value from inside the chain */
      const xnode *y = &s->nodes[pos[ep.skip[k]]];
      ok = pos[ep.skip[k]] > i && y->n_out == 1;
      for (size_t j = 0; j < y->n_in && ok; j++)
        if (y->in[j] >= 0) reads[y->in[j]]++;
    }
    for (size_t k = 0; k <= ep.n_skip && ok; k++) {
      int v = k == 0 ? x->out[0] : s->nodes[pos[ep.skip[k - 1]]].out[0];
      ok = v == ep.out || (v >= 0 && reads[v] == s->uses[v]);
    }
    for (size_t k = 0; k < ep.n_skip; k++) { /* reset the counts for the next product */
      const xnode *y = &s->nodes[pos[ep.skip[k]]];
      for (size_t j = 0; j < y->n_in; j++)
        if (y->in[j] >= 0) reads[y->in[j]] = 0;
    }
    if (!ok) {
      op_epilogue_free(&ep);
      continue;
    }
    x->ep = op_xmalloc(sizeof *x->ep);
    *x->ep = ep;
    x->ep_skip = op_xmalloc(ep.n_skip * sizeof *x->ep_skip);
    for (size_t k = 0; k < ep.n_skip; k++) x->ep_skip[k] = pos[ep.skip[k]];
    s->n_fused++;
  }
  free(reads);
  free(pos);
}

size_t op_session_fused_count(const op_session *s) { return s->n_fused; }

void op_session_observe_fused(op_session *s, bool on) { s->observe_fused = on; }

bool op_session_value_fused_away(const op_session *s, const char *name) {
  op_value *v = op_graph_find(s->gr, name);
  int id = v ? (int)(v - s->gr->values) : -1;
  for (size_t i = 0; i < s->n_nodes && id >= 0; i++) {
    const xnode *x = &s->nodes[i];
    if (!x->ep) continue;
    if (x->out[0] == id) return true; /* the product's own output, before its epilogue */
    for (size_t k = 0; k < x->ep->n_skip; k++)
      if (s->nodes[x->ep_skip[k]].out[0] == id && id != x->ep->out) return true;
  }
  return false;
}

const char *op_session_fused_act(const op_session *s, size_t i, const char **node, bool *bias) {
  for (size_t j = 0; j < s->n_nodes; j++) {
    if (!s->nodes[j].ep || i--) continue;
    *node = op_node_name(s->nodes[j].node);
    *bias = s->nodes[j].ep->bias >= 0;
    return op_act_name(s->nodes[j].ep->act);
  }
  return NULL;
}

/* Runs product x with its epilogue into the chain's last value: 1 when done, 0 when this run's
 * inputs are not the form planned for (float32, K columns), so the nodes run one by one instead. */
static int run_fused(op_session *s, const xnode *x, op_xt *vals, op_error *err) {
  const op_xt *a = &vals[x->in[0]];
  int64_t K = op_wpack_k(x->wpack), N = op_wpack_n(x->wpack);
  bool gemm = op_node_is(x->node, "Gemm");
  if (a->dtype != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || a->rank < 1 || (gemm && a->rank != 2) || a->dims[a->rank - 1] != K)
    return 0;
  const op_xt *bias = x->ep->bias >= 0 ? &s->consts[x->ep->bias] : NULL;
  int64_t dims[OP_MAX_RANK];
  int rank = a->rank;
  memcpy(dims, a->dims, (size_t)rank * sizeof *dims);
  dims[rank - 1] = N;
  if (bias && bias->rank > rank) return 0; /* the Add would widen the output's rank */
  op_xt *o = &vals[x->ep->out];
  if (op_xt_alloc(o, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, dims, rank, err)) {
    if (err) { /* a budget refusal names the node, as the unfused path does (nomem_context) */
      char why[sizeof err->message];
      snprintf(why, sizeof why, "%s", err->message);
      op_fail(err, err->code, "%s: node '%s' (%s): %s", s->m->path, op_node_name(x->node), x->node->op_type, why);
    }
    return -1;
  }
  if (op_wpack_gemm_act(x->wpack, K ? a->numel / K : 0, a->data, o->data, bias ? bias->data : NULL, x->ep->act))
    return op_fail(err, OP_NOMEM, "%s: node '%s' (%s): out of memory", s->m->path, op_node_name(x->node), x->node->op_type);
  return 1;
}

static op_session *session_build(const op_model *m, Onnx__GraphProto *g, bool sub, op_error *err) {
  if (op_gemm_init(err)) return NULL;
  op_session *s = op_xcalloc(1, sizeof *s);
  s->pool = op_xt_pool_new();
  s->m = m;
  s->opset = op_model_opset(m->proto);
  s->gr = op_graph_build(g);
  /* every operator and its arity, before any work */
  for (size_t i = 0; i < g->n_node; i++) {
    const Onnx__NodeProto *nd = g->node[i];
    bool std = !nd->domain || !nd->domain[0] || !strcmp(nd->domain, "ai.onnx");
    if (op_exec_is_contrib_domain(nd->domain) && op_exec_contrib_check(m->path, g, nd, err)) {
      op_session_free(s);
      return NULL;
    }
    const op_op *op = op_exec_find_node_op(nd);
    if (!op) {
      op_fail(err, OP_UNSUPPORTED, "%s: node '%s': unsupported operator '%s%s%s'", m->path, op_node_name(nd),
              std ? "" : nd->domain, std ? "" : "::", nd->op_type);
      op_session_free(s);
      return NULL;
    }
    size_t present = 0;
    for (size_t j = 0; j < nd->n_input; j++) present += nd->input[j][0] != 0;
    if (nd->n_input > op->max_in || present < op->min_in || nd->n_output > op->max_out) {
      op_fail(err, OP_INVALID, "%s: node '%s' (%s): %zu inputs and %zu outputs, expected %u to %u inputs and at most %u outputs",
              m->path, op_node_name(nd), nd->op_type, nd->n_input, nd->n_output, op->min_in, op->max_in, op->max_out);
      op_session_free(s);
      return NULL;
    }
  }
  op_if_aux **subs = op_xcalloc(g->n_node ? g->n_node : 1, sizeof *subs);
  int prc = prepare_subgraphs(s, subs, sub, err) || check_tensor_values(m, g, err) || schedule(s, err) ? -1 : 0;
  for (size_t i = 0; i < s->n_nodes && !prc; i++) /* each branch set moves to its node's place in the schedule */
    for (size_t j = 0; j < g->n_node; j++)
      if (g->node[j] == s->nodes[i].node) s->nodes[i].sub = subs[j], subs[j] = NULL;
  for (size_t j = 0; j < g->n_node; j++) op_if_free(subs[j]);
  free(subs);
  if (prc) {
    op_session_free(s);
    return NULL;
  }
  s->uses = op_xcalloc(s->gr->cap, sizeof(int));
  for (size_t i = 0; i < s->n_nodes; i++) {
    xnode *x = &s->nodes[i];
    x->op = op_exec_find_node_op(x->node);
    size_t hidden = x->sub ? op_if_capture_count(x->sub) : 0; /* outer values its branches read */
    if (x->node->n_input + hidden > 256) { /* the run loop's input array */
      op_fail(err, OP_UNSUPPORTED, "%s: node '%s' (If): its branches read %zu outer values (at most 255)", m->path,
              op_node_name(x->node), hidden);
      op_session_free(s);
      return NULL;
    }
    x->n_in = x->node->n_input + hidden;
    x->n_out = x->node->n_output;
    x->in = op_xmalloc((x->n_in ? x->n_in : 1) * sizeof(int));
    x->out = op_xmalloc((x->n_out ? x->n_out : 1) * sizeof(int));
    for (size_t j = 0; j < x->n_in; j++) {
      const char *nm = j < x->node->n_input ? x->node->input[j] : op_if_capture_name(x->sub, j - x->node->n_input);
      x->in[j] = nm[0] ? value_id(s->gr, nm) : -1;
      if (x->in[j] >= 0) s->uses[x->in[j]]++;
    }
    for (size_t j = 0; j < x->n_out; j++) x->out[j] = x->node->output[j][0] ? value_id(s->gr, x->node->output[j]) : -1;
  }
  /* initializers read by something other than a pack (these need float-aligned bytes of their own) */
  int *plain_uses = op_xcalloc(s->gr->cap, sizeof(int));
  bool *packable = op_xcalloc(s->gr->cap, sizeof(bool)); /* a 2-D float32/float16/bfloat16 initializer */
  for (size_t i = 0; i < g->n_initializer; i++) {
    int32_t dt = g->initializer[i]->data_type;
    packable[value_id(s->gr, g->initializer[i]->name)] =
        g->initializer[i]->n_dims == 2 && (dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT ||
                                           dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16 || dt == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16);
  }
  for (size_t i = 0; i < s->n_nodes; i++)
    for (size_t j = 0; j < s->nodes[i].n_in; j++) {
      int id = s->nodes[i].in[j];
      if (id >= 0 && !(j == 1 && packable[id] && packs_b(s->nodes[i].node, s->nodes[i].n_in))) plain_uses[id]++;
    }
  free(packable);
  for (size_t i = 0; i < g->n_output; i++) {
    int id = value_id(s->gr, g->output[i]->name);
    if (id >= 0) plain_uses[id]++;
  }
  s->consts = op_xcalloc(s->gr->cap, sizeof *s->consts);
  for (size_t i = 0; i < g->n_initializer; i++) {
    Onnx__TensorProto *t = g->initializer[i];
    int id = value_id(s->gr, t->name);
    op_xt *c = &s->consts[id];
    size_t es = op_dtype_size(t->data_type);
    /* a view, no copy of the weights, unless the bytes are unaligned (borrowed from the file) and
     * something other than a pack reads them (a pack copies what it reads) */
    if (t->has_raw_data && es && t->n_dims <= OP_MAX_RANK && t->raw_data.len == (size_t)op_tensor_numel(t) * es &&
        ((uintptr_t)t->raw_data.data % es == 0 || !plain_uses[id])) {
      c->dtype = t->data_type;
      c->rank = (int)t->n_dims;
      if (t->n_dims) memcpy(c->dims, t->dims, t->n_dims * sizeof(int64_t)); /* scalars have no dims array */
      c->numel = op_tensor_numel(t);
      c->data = t->raw_data.data;
    } else if (op_xt_from_proto(c, t, m->path, err)) {
      free(plain_uses);
      op_session_free(s);
      return NULL;
    } else if (op_tensor_is_borrowed(t)) { /* copied (unaligned): the session reads only the copy */
      op_release_pages(t->raw_data.data, t->raw_data.len);
    }
  }
  for (size_t i = 0; i < s->n_nodes; i++) { /* constant weights, packed once for the kernel */
    xnode *x = &s->nodes[i];
    int id = x->n_in >= 2 ? x->in[1] : -1;
    if (id < 0 || !packs_b(x->node, x->n_in) || !op_wpack_accepts(&s->consts[id])) continue;
    bool trans = op_node_is(x->node, "Gemm") && op_node_attr_int(x->node, "transB", 0);
    for (size_t j = 0; j < i && !x->wpack; j++) /* a weight two nodes share (tied embeddings) is packed once */
      if (s->nodes[j].wpack && s->nodes[j].in[1] == id && s->nodes[j].wpack_trans == trans) x->wpack = s->nodes[j].wpack;
    x->wpack_trans = trans;
    if (x->wpack) continue;
    /* a pack is a copy of the weight in float32 at most (none when read in place): sized by the model */
    uint64_t wbytes = (uint64_t)s->consts[id].numel * sizeof(float);
    char what[600];
    snprintf(what, sizeof what, "%.300s: node '%.200s' (%s): its weight packed", m->path, op_node_name(x->node),
             x->node->op_type);
    if (op_budget_take(wbytes, what, err)) {
      free(plain_uses);
      op_session_free(s);
      return NULL;
    }
    x->wpack = op_wpack_new(&s->consts[id], trans);
    x->wpack_owner = true;
    x->wpack_budget = wbytes;
    if (!op_wpack_owns_copy(x->wpack)) op_budget_give(wbytes), x->wpack_budget = 0; /* read in place */
    /* a weight only packs read, now in a copy of the pack's own: its pages of the file mapping can go
     * (read again from the file should anything touch them), so the session holds one copy */
    if (!plain_uses[id] && op_wpack_owns_copy(x->wpack)) release_borrowed(g, s->consts[id].data);
  }
  free(plain_uses);
  s->inputs = op_xmalloc((g->n_input ? g->n_input : 1) * sizeof(int));
  for (size_t i = 0; i < g->n_input; i++) {
    int id = value_id(s->gr, g->input[i]->name);
    if (!s->consts[id].dtype) s->inputs[s->n_inputs++] = id;
  }
  s->outputs = op_xmalloc((g->n_output ? g->n_output : 1) * sizeof(int));
  for (size_t i = 0; i < g->n_output; i++) {
    s->outputs[s->n_outputs] = value_id(s->gr, g->output[i]->name);
    s->uses[s->outputs[s->n_outputs++]]++;
  }
  if (op_fuse_enabled()) plan_epilogues(s); /* once every use is counted, graph outputs included */
  return s;
}

op_session *op_session_new(const op_model *m, op_error *err) { return session_build(m, m->proto->graph, false, err); }

op_session *op_session_new_sub(const op_model *m, Onnx__GraphProto *g, op_error *err) {
  return session_build(m, g, true, err);
}

/* The captures of the subgraph run in progress on this thread (nested Ifs save and restore them). */
static _Thread_local const op_session *outer_session;
static _Thread_local const op_xt *const *outer_values;

int op_session_run_sub(op_session *s, const op_tensor *inputs, const op_xt *const *captured, op_xt *outputs,
                       size_t n_outputs, op_error *err) {
  if (n_outputs != s->n_outputs)
    return op_fail(err, OP_INVALID, "%s: a branch has %zu outputs, its node %zu", s->m->path, s->n_outputs, n_outputs);
  const op_session *saved_s = outer_session;
  const op_xt *const *saved_v = outer_values;
  outer_session = s, outer_values = captured;
  op_tensor *t = op_xcalloc(n_outputs ? n_outputs : 1, sizeof *t);
  int rc = op_session_run(s, inputs, t, NULL, NULL, err);
  outer_session = saved_s, outer_values = saved_v;
  for (size_t i = 0; i < n_outputs && !rc; i++) {
    op_xt *o = &outputs[i];
    memset(o, 0, sizeof *o);
    o->dtype = t[i].dtype;
    o->rank = t[i].rank;
    memcpy(o->dims, t[i].dims, (size_t)t[i].rank * sizeof(int64_t));
    o->numel = 1;
    for (int d = 0; d < o->rank; d++) o->numel *= o->dims[d];
    o->data = t[i].data;
    o->owned = true; /* plain malloc memory: released with free() */
  }
  free(t);
  return rc;
}

size_t op_session_input_count(const op_session *s) { return s->n_inputs; }
size_t op_session_output_count(const op_session *s) { return s->n_outputs; }
const char *op_session_input_name(const op_session *s, size_t i) { return s->gr->values[s->inputs[i]].name; }
const char *op_session_output_name(const op_session *s, size_t i) { return s->gr->values[s->outputs[i]].name; }

void op_session_input_info(const op_session *s, size_t i, int32_t *dtype, int *rank, int64_t dims[OP_MAX_DIMS]) {
  const Onnx__ValueInfoProto *vi = s->gr->g->input[s->gr->values[s->inputs[i]].graph_input];
  const Onnx__TypeProto__Tensor *tt = vi->type && vi->type->tensor_type ? vi->type->tensor_type : NULL;
  *dtype = tt ? tt->elem_type : 0;
  *rank = -1;
  if (!tt || !tt->shape) return;
  *rank = tt->shape->n_dim > OP_MAX_DIMS ? OP_MAX_DIMS : (int)tt->shape->n_dim;
  for (int d = 0; d < *rank; d++) {
    const Onnx__TensorShapeProto__Dimension *dim = tt->shape->dim[d];
    dims[d] = dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE ? dim->dim_value : -1;
  }
}

static const Onnx__TensorShapeProto *vi_shape(const Onnx__ValueInfoProto *vi) {
  const Onnx__TypeProto__Tensor *tt = vi && vi->type ? vi->type->tensor_type : NULL;
  return tt ? tt->shape : NULL;
}

static const char *shape_dim_name(const Onnx__TensorShapeProto *sh, int axis) {
  if (!sh || axis < 0 || (size_t)axis >= sh->n_dim) return NULL;
  const Onnx__TensorShapeProto__Dimension *dim = sh->dim[axis];
  bool named = dim->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM && dim->dim_param && dim->dim_param[0];
  return named ? dim->dim_param : NULL;
}

static const Onnx__ValueInfoProto *input_vi(const op_session *s, size_t i) {
  return s->gr->g->input[s->gr->values[s->inputs[i]].graph_input];
}

int op_session_input_rank(const op_session *s, size_t i) {
  const Onnx__TensorShapeProto *sh = vi_shape(input_vi(s, i));
  return sh ? (int)sh->n_dim : -1;
}
const char *op_session_input_dim_name(const op_session *s, size_t i, int axis) {
  return shape_dim_name(vi_shape(input_vi(s, i)), axis);
}
int op_session_output_rank(const op_session *s, size_t i) {
  const Onnx__TensorShapeProto *sh = vi_shape(s->gr->g->output[i]);
  return sh ? (int)sh->n_dim : -1;
}
const char *op_session_output_dim_name(const op_session *s, size_t i, int axis) {
  return shape_dim_name(vi_shape(s->gr->g->output[i]), axis);
}

static const char *dtype_name(int32_t dt) { return op_dtype_name(dt); }

static void shape_text(char *buf, size_t n, const int64_t *dims, int rank) {
  size_t off = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < rank && off < n; i++) {
    if (dims[i] < 0) off += (size_t)snprintf(buf + off, n - off, "%s?", i ? ", " : "");
    else off += (size_t)snprintf(buf + off, n - off, "%s%lld", i ? ", " : "", (long long)dims[i]);
  }
  if (off < n) snprintf(buf + off, n - off, "]");
}

int op_check_input(const op_session *s, size_t i, const op_tensor *t, int first_axis, const char *origin,
                   op_error *err) {
  int32_t dt;
  int rank;
  int64_t dims[OP_MAX_DIMS];
  op_session_input_info(s, i, &dt, &rank, dims);
  bool ok = t->rank >= first_axis && (!dt || dt == t->dtype);
  if (ok && rank >= 0) {
    ok = rank == t->rank;
    for (int d = first_axis; ok && d < rank; d++) ok = dims[d] < 0 || dims[d] == t->dims[d];
  }
  if (ok) return 0;
  char want[160], got[160];
  shape_text(want, sizeof want, dims, rank < 0 ? 0 : rank);
  shape_text(got, sizeof got, t->dims, t->rank);
  return op_fail(err, OP_ARG, "%s: input '%s': expected %s %s, %s %s %s", origin, op_session_input_name(s, i),
                 dtype_name(dt), rank < 0 ? "(any shape)" : want, first_axis ? "found" : "got", dtype_name(t->dtype), got);
}

void op_tensor_clear(op_tensor *t) {
  if (!t) return;
  free(t->data);
  memset(t, 0, sizeof *t);
}

/* A tensor the memory budget refused (op_xt_alloc) gets the node and the output it was for in the message:
 * "model: node 'x' (Op): 8 TiB for output 'y' exceeds the memory budget of ...". */
static void nomem_context(const op_kctx *k, const op_xt *outs, size_t n_out, op_error *err) {
  if (!err || err->code != OP_NOMEM) return;
  size_t j = 0;
  while (j < n_out && !(outs[j].dtype && !outs[j].data)) j++;
  char why[sizeof err->message];
  snprintf(why, sizeof why, "%s", err->message);
  const char *ex = strstr(why, " exceeds");
  if (j < n_out && ex)
    op_fail(err, OP_NOMEM, "%s: node '%s' (%s): %.*s for output '%s'%s", k->model, op_node_name(k->node),
            k->node->op_type, (int)(ex - why), why, k->node->output[j], ex);
  else
    op_fail(err, OP_NOMEM, "%s: node '%s' (%s): %s", k->model, op_node_name(k->node), k->node->op_type, why);
}

int op_session_run(op_session *s, const op_tensor *inputs, op_tensor *outputs, op_observer observer, void *user,
                   op_error *err) {
  for (size_t i = 0; i < s->n_inputs; i++)
    if (op_check_input(s, i, &inputs[i], 0, s->m->path, err)) return -1;
  bool pooled = op_xt_pool_enter(s->pool); /* a concurrent run of the same session goes without */
  op_xt *vals = op_xcalloc(s->gr->cap, sizeof *vals);
  int *left = op_xmalloc(s->gr->cap * sizeof(int));
  memcpy(left, s->uses, s->gr->cap * sizeof(int));
  for (size_t i = 0; i < s->gr->cap; i++)
    if (s->consts[i].dtype) op_xt_view(&vals[i], &s->consts[i], s->consts[i].dims, s->consts[i].rank);
  for (size_t i = 0; i < s->n_inputs; i++) {
    op_xt *v = &vals[s->inputs[i]];
    v->dtype = inputs[i].dtype;
    v->rank = inputs[i].rank;
    memcpy(v->dims, inputs[i].dims, (size_t)inputs[i].rank * sizeof(int64_t));
    v->numel = 1;
    for (int d = 0; d < v->rank; d++) v->numel *= v->dims[d];
    v->data = inputs[i].data;
    v->owned = false;
  }
  for (size_t i = 0; i < s->n_captures && outer_session == s; i++) /* a subgraph's outer-scope values */
    op_xt_view(&vals[s->captures[i]], outer_values[i], outer_values[i]->dims, outer_values[i]->rank);
  int rc = 0;
  op_xt *ins[256];
  op_xt outs[64];
  /* fused epilogues run unless an observer must see every value; skip marks the nodes they replaced */
  bool *skip = s->n_fused && (!observer || s->observe_fused) ? op_xcalloc(s->n_nodes, 1) : NULL;
  for (size_t ni = 0; ni < s->n_nodes && !rc; ni++) {
    xnode *x = &s->nodes[ni];
    int fused = skip && skip[ni] ? 1 : skip && x->ep ? run_fused(s, x, vals, err) : 0;
    if (fused < 0) rc = -1;
    if (fused > 0 && !skip[ni]) {
      for (size_t j = 0; j < x->ep->n_skip; j++) skip[x->ep_skip[j]] = true;
      if (observer) { /* the chain's value, under the name its last node gives it */
        op_tensor pub;
        op_xt_to_tensor(&pub, &vals[x->ep->out]);
        observer(user, s->gr->values[x->ep->out].name, &pub);
      }
    }
    if (fused) { /* a replaced node, or a product that wrote its chain's value: only its inputs' uses end */
      for (size_t j = 0; j < x->n_in; j++)
        if (x->in[j] >= 0 && --left[x->in[j]] == 0) op_xt_release(&vals[x->in[j]]);
      continue;
    }
    op_kctx k = {x->node, s->opset, s->m->path, x->wpack, x->sub, NULL};
    /* this node is the last reader of its first input: a Reshape-like node may take its storage */
    if (x->n_in && x->in[0] >= 0 && left[x->in[0]] == 1 && vals[x->in[0]].owned) k.spent = &vals[x->in[0]];
    for (size_t j = 0; j < x->n_in; j++) ins[j] = x->in[j] >= 0 ? &vals[x->in[j]] : NULL;
    memset(outs, 0, x->n_out * sizeof *outs);
    rc = op_exec_typed(x->op, &k, ins, x->n_in, outs, x->n_out, err); /* any element type */
    if (rc) nomem_context(&k, outs, x->n_out, err);
    for (size_t j = 0; j < x->n_out; j++) {
      if (x->out[j] < 0 || rc) {
        op_xt_release(&outs[j]);
        continue;
      }
      vals[x->out[j]] = outs[j];
      if (observer && outs[j].data) {
        op_tensor pub;
        op_xt_to_tensor(&pub, &outs[j]);
        observer(user, x->node->output[j], &pub);
      }
      if (left[x->out[j]] == 0) op_xt_release(&vals[x->out[j]]); /* nobody reads it */
    }
    for (size_t j = 0; j < x->n_in; j++)
      if (x->in[j] >= 0 && --left[x->in[j]] == 0) op_xt_release(&vals[x->in[j]]);
  }
  for (size_t i = 0; i < s->n_outputs && !rc; i++) {
    op_xt *v = &vals[s->outputs[i]];
    if (!v->owned) { /* an input or initializer passed straight through: give the caller a copy */
      op_xt copy;
      if ((rc = op_xt_alloc(&copy, v->dtype, v->dims, v->rank, err))) break;
      memcpy(copy.data, v->data, (size_t)v->numel * op_xt_elem_size(v->dtype));
      *v = copy;
    }
    op_xt_to_tensor(&outputs[i], v);
    op_xt_disown(v); /* ownership moved to outputs[i], out of the budget's running total */
  }
  for (size_t i = 0; i < s->gr->cap; i++) op_xt_release(&vals[i]);
  free(skip);
  if (pooled) op_xt_pool_leave(s->pool);
  free(vals);
  free(left);
  return rc;
}
