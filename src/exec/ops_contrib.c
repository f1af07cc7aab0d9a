/* ops_contrib.c - ONNX Runtime's fused operators (domain com.microsoft) with the semantics of its contrib
 * operator documentation and CPU kernels: the second operator table, the check that refuses unsupported
 * attribute values and input forms by name before any work, and the non-attention kernels (FusedMatMul,
 * the GELU family, BiasAdd, the skip / simplified / embedding layer norms, RotaryEmbedding). The attention
 * kernels are in ops_attention.c. Kernels compute float32 and refuse other element types. */
#include "exec/exec.h"
#include "exec/fastmath.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define T_FLOAT ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT
#define T_INT32 ONNX__TENSOR_PROTO__DATA_TYPE__INT32
#define T_INT64 ONNX__TENSOR_PROTO__DATA_TYPE__INT64

/* Sorted by name for bsearch. Arity as in ONNX Runtime's schemas. */
static const op_op CONTRIB_OPS[] = {
    {"Attention", op_k_ms_attention, 2, 7, 2},
    {"BiasAdd", op_k_ms_bias_add, 3, 3, 1},
    {"BiasGelu", op_k_ms_bias_gelu, 2, 2, 1},
    {"EmbedLayerNormalization", op_k_ms_embed_layer_norm, 5, 9, 3},
    {"FastGelu", op_k_ms_fast_gelu, 1, 2, 1},
    {"FusedGemm", op_k_ms_fused_gemm, 2, 3, 1},
    {"FusedMatMul", op_k_ms_fused_matmul, 2, 2, 1},
    {"Gelu", op_k_ms_gelu, 1, 1, 1},
    {"GroupQueryAttention", op_k_ms_gqa, 3, 9, 3},
    {"MultiHeadAttention", op_k_ms_mha, 1, 8, 3},
    {"QuickGelu", op_k_ms_quick_gelu, 1, 1, 1},
    {"RotaryEmbedding", op_k_ms_rotary, 4, 4, 1},
    {"SimplifiedLayerNormalization", op_k_ms_simplified_layer_norm, 2, 2, 2},
    {"SkipLayerNormalization", op_k_ms_skip_layer_norm, 3, 5, 4},
    {"SkipSimplifiedLayerNormalization", op_k_ms_skip_simplified_layer_norm, 3, 4, 4},
};

static int cmp_op(const void *key, const void *elem) { return strcmp((const char *)key, ((const op_op *)elem)->name); }

const op_op *op_exec_find_contrib_op(const char *op_type) {
  return bsearch(op_type, CONTRIB_OPS, sizeof CONTRIB_OPS / sizeof *CONTRIB_OPS, sizeof *CONTRIB_OPS, cmp_op);
}

bool op_exec_is_contrib_domain(const char *domain) { return domain && !strcmp(domain, "com.microsoft"); }

static bool has_input(const Onnx__NodeProto *nd, size_t i) { return i < nd->n_input && nd->input[i][0]; }
static bool has_output(const Onnx__NodeProto *nd, size_t i) { return i < nd->n_output && nd->output[i][0]; }

static int refuse(const char *model, const Onnx__NodeProto *nd, op_error *err, const char *why) {
  return op_fail(err, OP_UNSUPPORTED, "%s: node '%s': com.microsoft::%s: %s", model, op_node_name(nd), nd->op_type,
                 why);
}

/* FusedGemm's activation attribute, by its index in GEMM_ACTIVATIONS; -1 for one we do not compute. */
static const char *GEMM_ACTIVATIONS[] = {"Relu", "Tanh", "Sigmoid", "LeakyRelu", "HardSigmoid"};
static int gemm_activation(const Onnx__NodeProto *nd) {
  const Onnx__AttributeProto *a = op_node_attr(nd, "activation");
  if (!a) return -1;
  for (int i = 0; i < (int)(sizeof GEMM_ACTIVATIONS / sizeof *GEMM_ACTIVATIONS); i++)
    if (a->s.len == strlen(GEMM_ACTIVATIONS[i]) && !memcmp(a->s.data, GEMM_ACTIVATIONS[i], a->s.len)) return i;
  return -1;
}

/* The rank a graph input or value_info declares for a value, or -1. */
static int declared_rank(const Onnx__GraphProto *g, const char *name) {
  for (size_t pass = 0; pass < 2; pass++) {
    Onnx__ValueInfoProto **vi = pass ? g->value_info : g->input;
    size_t n = pass ? g->n_value_info : g->n_input;
    for (size_t i = 0; i < n; i++)
      if (vi[i]->name && !strcmp(vi[i]->name, name) && vi[i]->type && vi[i]->type->tensor_type &&
          vi[i]->type->tensor_type->shape)
        return (int)vi[i]->type->tensor_type->shape->n_dim;
  }
  return -1;
}

int op_exec_contrib_check(const char *model, const Onnx__GraphProto *g, const Onnx__NodeProto *nd, op_error *err) {
  const char *t = nd->op_type;
  const op_op *op = op_exec_find_contrib_op(t);
  if (op && (nd->n_input > op->max_in || nd->n_output > op->max_out)) {
    char why[160];
    snprintf(why, sizeof why, "%zu inputs and %zu outputs; the executor computes at most %u inputs and %u outputs",
             nd->n_input, nd->n_output, op->max_in, op->max_out);
    return refuse(model, nd, err, why);
  }
  if (!op)
    return refuse(
        model, nd, err,
        "not supported by the executor (it runs Attention, BiasAdd, BiasGelu, EmbedLayerNormalization, FastGelu, "
        "FusedGemm, FusedMatMul, Gelu, GroupQueryAttention, MultiHeadAttention, QuickGelu, RotaryEmbedding, "
        "SimplifiedLayerNormalization, SkipLayerNormalization, SkipSimplifiedLayerNormalization)");
  if (!strcmp(t, "Attention")) {
    if (!has_input(nd, 2)) return refuse(model, nd, err, "an Attention without bias is not supported");
    if (has_input(nd, 6))
      return refuse(model, nd, err, "the past_sequence_length input (shared past/present buffer) is not supported");
    if (op_node_attr_int(nd, "past_present_share_buffer", 0))
      return refuse(model, nd, err, "past_present_share_buffer=1 is not supported");
    if (op_node_attr_int(nd, "do_rotary", 0)) return refuse(model, nd, err, "do_rotary=1 is not supported");
    if (has_input(nd, 3) && declared_rank(g, nd->input[3]) == 4)
      return refuse(model, nd, err, "a 4-D mask_index is not supported (ONNX Runtime's CPU kernel has none either)");
  } else if (!strcmp(t, "GroupQueryAttention")) {
    if (op_node_attr_float(nd, "softcap", 0.f) != 0.f) return refuse(model, nd, err, "softcap is not supported");
    if (op_node_attr_int(nd, "smooth_softmax", 0)) return refuse(model, nd, err, "smooth_softmax=1 is not supported");
    if (op_node_attr_int(nd, "do_rotary", 0) && (!has_input(nd, 7) || !has_input(nd, 8)))
      return refuse(model, nd, err, "do_rotary=1 needs the cos_cache and sin_cache inputs");
  } else if (!strcmp(t, "RotaryEmbedding")) {
    if (op_node_attr_int(nd, "is_packed_batching", 0))
      return refuse(model, nd, err, "is_packed_batching=1 is not supported");
  } else if (!strcmp(t, "EmbedLayerNormalization")) {
    if (op_node_attr_int(nd, "mask_index_type", 1) != 1)
      return refuse(model, nd, err, "only mask_index_type=1 is supported");
    if (has_input(nd, 1) != has_input(nd, 4))
      return refuse(model, nd, err, "segment_ids and segment_embedding come together");
  } else if (!strcmp(t, "FusedGemm")) {
    if (gemm_activation(nd) < 0)
      return refuse(model, nd, err, "activation must be Relu, Tanh, Sigmoid, LeakyRelu or HardSigmoid");
  } else if (!strcmp(t, "SkipSimplifiedLayerNormalization")) {
    if (has_output(nd, 1))
      return refuse(model, nd, err, "the mean output (output 1) is not defined for a simplified norm");
  }
  return 0;
}

static bool f32(const op_xt *t) { return !t || t->dtype == T_FLOAT; }

/* A 1-D bias that broadcasts over the last axis of x. */
static int check_bias(const op_kctx *k, const op_xt *x, const op_xt *bias, const char *what, op_error *err) {
  if (!bias) return 0;
  int64_t last = x->rank ? x->dims[x->rank - 1] : 1;
  if (bias->rank != 1 || bias->dims[0] != last)
    return op_kfail(k, err, "%s must be 1-D of the last axis' %lld values, got %d-D of %lld", what, (long long)last,
                    bias->rank, (long long)bias->numel);
  return 0;
}

/* ---- FusedMatMul ------------------------------------------------------------------------------------
 * alpha * op(A) x op(B). transBatchX: X is stored [M, b1..bk, K] for the logical [b1..bk, M, K] (the first
 * axis moves behind the batch axes), then transX swaps the last two axes; both inputs then go through
 * MatMul's numpy semantics. */

/* out = x with its axes permuted (out axis d is x axis perm[d]). */
static int permute(const op_kctx *k, const op_xt *x, const int *perm, op_xt *out, op_error *err) {
  int64_t dims[OP_MAX_RANK], stride[OP_MAX_RANK], src_stride[OP_MAX_RANK];
  int r = x->rank;
  int64_t s = 1;
  for (int d = r - 1; d >= 0; d--) stride[d] = s, s *= x->dims[d];
  for (int d = 0; d < r; d++) dims[d] = x->dims[perm[d]], src_stride[d] = stride[perm[d]];
  if (op_xt_alloc(out, x->dtype, dims, r, err)) return -1;
  (void)k;
  const float *a = x->data;
  float *o = out->data;
  int64_t idx[OP_MAX_RANK] = {0}, off = 0;
  for (int64_t i = 0; i < out->numel; i++) {
    o[i] = a[off];
    for (int d = r - 1; d >= 0; d--) {
      off += src_stride[d];
      if (++idx[d] < dims[d]) break;
      off -= src_stride[d] * dims[d];
      idx[d] = 0;
    }
  }
  return 0;
}

static int logical_operand(const op_kctx *k, const op_xt *x, bool trans_batch, bool trans, op_xt *out, op_error *err) {
  int r = x->rank, perm[OP_MAX_RANK];
  for (int d = 0; d < r; d++) perm[d] = d;
  if (trans_batch) { /* stored axis 0 goes to position r-2 */
    for (int d = 0; d < r - 2; d++) perm[d] = d + 1;
    perm[r - 2] = 0;
  }
  if (trans && r >= 2) {
    int t = perm[r - 2];
    perm[r - 2] = perm[r - 1];
    perm[r - 1] = t;
  }
  bool identity = true;
  for (int d = 0; d < r; d++) identity &= perm[d] == d;
  if (identity) {
    op_xt_view(out, x, x->dims, x->rank);
    return 0;
  }
  return permute(k, x, perm, out, err);
}

OP_KERNEL(op_k_ms_fused_matmul) {
  (void)n_in, (void)n_out;
  op_xt *a = in[0], *b = in[1];
  if (!f32(a) || !f32(b)) return op_kfail(k, err, "only float32 is supported");
  bool tba = op_kattr_int(k, "transBatchA", 0), tbb = op_kattr_int(k, "transBatchB", 0);
  if ((tba || tbb) && (a->rank != b->rank || a->rank < 3))
    return op_kfail(k, err, "transBatchA/transBatchB need inputs of the same rank, 3 or more (got %d and %d)", a->rank,
                    b->rank);
  /* as ONNX Runtime: a transpose flag on a vector is ignored; transA with B a vector does not give the
   * transposed product there, so that is refused */
  bool ta = op_kattr_int(k, "transA", 0) && a->rank > 1, tb = op_kattr_int(k, "transB", 0) && b->rank > 1;
  if (ta && b->rank == 1) return op_kfail(k, err, "transA with a 1-D B is not supported");
  float alpha = op_kattr_float(k, "alpha", 1.f);
  op_xt la = {0}, lb = {0};
  int rc = logical_operand(k, a, tba, ta, &la, err);
  if (!rc) rc = logical_operand(k, b, tbb, tb, &lb, err);
  if (!rc) {
    op_kctx plain = {.node = k->node, .opset = k->opset, .model = k->model};
    op_xt *ins[2] = {&la, &lb};
    rc = op_k_matmul(&plain, ins, 2, out, 1, err);
  }
  op_xt_release(&la);
  op_xt_release(&lb);
  if (rc) return -1;
  if (alpha != 1.f) {
    float *o = out->data;
    for (int64_t i = 0; i < out->numel; i++) o[i] *= alpha;
  }
  return 0;
}

/* FusedGemm: Gemm (same attributes) followed by its activation (activation_alpha / activation_beta for
 * LeakyRelu and HardSigmoid, with ONNX's defaults). */
OP_KERNEL(op_k_ms_fused_gemm) {
  (void)n_out;
  int act = gemm_activation(k->node);
  if (act < 0) return op_kfail(k, err, "unsupported activation");
  op_kctx plain = {.node = k->node, .opset = k->opset, .model = k->model};
  if (op_k_gemm(&plain, in, n_in, out, 1, err)) return -1;
  float alpha = op_kattr_float(k, "activation_alpha", act == 3 ? 0.01f : 0.2f),
        beta = op_kattr_float(k, "activation_beta", 0.5f);
  float *o = out->data;
  for (int64_t i = 0; i < out->numel; i++) {
    float v = o[i];
    switch (act) {
    case 0: o[i] = v > 0 ? v : 0.f; break;
    case 1: o[i] = tanhf(v); break;
    case 2: o[i] = 1.f / (1.f + op_expf(-v)); break;
    case 3: o[i] = v >= 0 ? v : alpha * v; break;
    default: o[i] = fmaxf(0.f, fminf(1.f, alpha * v + beta)); break;
    }
  }
  return 0;
}

/* ---- GELU family and BiasAdd ------------------------------------------------------------------------ */
typedef enum { ACT_GELU_ERF, ACT_GELU_TANH, ACT_QUICK } act_kind;

OP_VECTOR_CLONES static void activate(const float *x, const float *bias, int64_t n, int64_t last, act_kind kind,
                                      float alpha, float *o) {
  for (int64_t i = 0; i < n; i++) {
    float v = x[i] + (bias ? bias[i % last] : 0.f);
    if (kind == ACT_GELU_ERF)
      o[i] = 0.5f * v * (1.f + op_erff(v * 0.70710678118654752f));
    else if (kind == ACT_GELU_TANH)
      o[i] = 0.5f * v * (1.f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    else
      o[i] = v / (1.f + op_expf(-alpha * v));
  }
}

static int gelu_like(const op_kctx *k, op_xt *x, op_xt *bias, act_kind kind, float alpha, op_xt *out, op_error *err) {
  if (!f32(x) || !f32(bias)) return op_kfail(k, err, "only float32 is supported");
  if (check_bias(k, x, bias, "bias", err) || op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  int64_t last = x->rank ? x->dims[x->rank - 1] : 1;
  activate(x->data, bias ? bias->data : NULL, x->numel, last ? last : 1, kind, alpha, out->data);
  return 0;
}

OP_KERNEL(op_k_ms_gelu) {
  (void)n_in, (void)n_out;
  return gelu_like(k, in[0], NULL, ACT_GELU_ERF, 0.f, out, err);
}

OP_KERNEL(op_k_ms_bias_gelu) {
  (void)n_in, (void)n_out;
  return gelu_like(k, in[0], in[1], ACT_GELU_ERF, 0.f, out, err);
}

OP_KERNEL(op_k_ms_fast_gelu) {
  (void)n_out;
  return gelu_like(k, in[0], n_in > 1 ? in[1] : NULL, ACT_GELU_TANH, 0.f, out, err);
}

OP_KERNEL(op_k_ms_quick_gelu) {
  (void)n_in, (void)n_out;
  return gelu_like(k, in[0], NULL, ACT_QUICK, op_kattr_float(k, "alpha", 1.702f), out, err);
}

/* Y = X + bias + skip, X and skip [N, S, C], bias [C]. */
OP_KERNEL(op_k_ms_bias_add) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *bias = in[1], *skip = in[2];
  if (!f32(x) || !f32(bias) || !f32(skip)) return op_kfail(k, err, "only float32 is supported");
  if (x->rank != 3 || skip->rank != 3 || memcmp(x->dims, skip->dims, 3 * sizeof(int64_t)))
    return op_kfail(k, err, "X and skip must both be [N, S, C] of the same shape");
  if (check_bias(k, x, bias, "bias", err) || op_xt_alloc(out, T_FLOAT, x->dims, 3, err)) return -1;
  const float *a = x->data, *b = bias->data, *s = skip->data;
  float *o = out->data;
  int64_t c = x->dims[2];
  for (int64_t i = 0; i < x->numel; i++) o[i] = (a[i] + b[i % c]) + s[i];
  return 0;
}

/* ---- layer norms ------------------------------------------------------------------------------------
 * One row normaliser for all of them: LayerNorm (mean and variance) or RMS norm (mean of squares). */
OP_VECTOR_CLONES static void norm_row(const float *x, int64_t n, const float *gamma, const float *beta, float eps,
                                      bool rms, float *o, float *mean_out, float *inv_out) {
  op_row_moments m = op_row_moments_of(x, n, !rms);
  float inv = (float)(1.0 / sqrt(m.var + eps));
  for (int64_t j = 0; j < n; j++) o[j] = ((x[j] - m.shift) - m.corr) * inv * gamma[j] + (beta ? beta[j] : 0.f);
  if (mean_out) *mean_out = (float)((double)m.shift + m.corr);
  if (inv_out) *inv_out = inv;
}

/* SkipLayerNormalization (input, skip, gamma, beta, bias) and SkipSimplifiedLayerNormalization (input, skip,
 * gamma, bias). Outputs: output, mean, inv_std_var ([..., 1]), input_skip_bias_sum. skip is the input's shape
 * or broadcasts to it over the leading axes ([S, H] or [1, S, H]). */
static int skip_norm(const op_kctx *k, op_xt **in, size_t n_in, op_xt *out, size_t n_out, bool rms, op_error *err) {
  op_xt *x = in[0], *skip = in[1], *gamma = in[2];
  op_xt *beta = !rms && n_in > 3 ? in[3] : NULL, *bias = rms ? (n_in > 3 ? in[3] : NULL) : (n_in > 4 ? in[4] : NULL);
  if (!f32(x) || !f32(skip) || !f32(gamma) || !f32(beta) || !f32(bias))
    return op_kfail(k, err, "only float32 is supported");
  if (x->rank < 2) return op_kfail(k, err, "input must have rank 2 or 3");
  int64_t h = x->dims[x->rank - 1], rows = h ? x->numel / h : 0;
  bool skip_ok = skip->rank >= 1 && skip->rank <= x->rank && skip->numel > 0 && x->numel % skip->numel == 0;
  for (int d = 1; skip_ok && d <= skip->rank; d++)
    skip_ok = skip->dims[skip->rank - d] == x->dims[x->rank - d] || (d == skip->rank && skip->dims[0] == 1);
  if (!skip_ok) return op_kfail(k, err, "skip does not match or broadcast to the input's shape");
  if (check_bias(k, x, gamma, "gamma", err) || check_bias(k, x, beta, "beta", err) ||
      check_bias(k, x, bias, "bias", err))
    return -1;
  int64_t stat_dims[OP_MAX_RANK];
  memcpy(stat_dims, x->dims, (size_t)x->rank * sizeof(int64_t));
  stat_dims[x->rank - 1] = 1;
  if (op_xt_alloc(&out[0], T_FLOAT, x->dims, x->rank, err)) return -1;
  for (size_t j = 1; j < n_out; j++) {
    if (!k->node->output[j][0]) continue;
    if (op_xt_alloc(&out[j], T_FLOAT, j == 3 ? x->dims : stat_dims, x->rank, err)) return -1;
  }
  float *mean = n_out > 1 && out[1].data ? out[1].data : NULL, *inv = n_out > 2 && out[2].data ? out[2].data : NULL;
  float *sum = n_out > 3 && out[3].data ? out[3].data : NULL;
  float *tmp = sum ? NULL : op_xmalloc((size_t)(h ? h : 1) * sizeof(float));
  const float *a = x->data, *s = skip->data, *b = bias ? bias->data : NULL;
  int64_t skip_rows = skip->numel / (h ? h : 1);
  float eps = op_kattr_float(k, "epsilon", 1e-12f);
  for (int64_t r = 0; r < rows; r++) {
    float *row = sum ? sum + r * h : tmp;
    const float *sr = s + (r % skip_rows) * h;
    for (int64_t j = 0; j < h; j++) row[j] = a[r * h + j] + sr[j] + (b ? b[j] : 0.f);
    norm_row(row, h, gamma->data, beta ? beta->data : NULL, eps, rms, (float *)out[0].data + r * h,
             mean ? mean + r : NULL, inv ? inv + r : NULL);
  }
  free(tmp);
  return 0;
}

OP_KERNEL(op_k_ms_skip_layer_norm) { return skip_norm(k, in, n_in, out, n_out, false, err); }

OP_KERNEL(op_k_ms_skip_simplified_layer_norm) { return skip_norm(k, in, n_in, out, n_out, true, err); }

/* RMS norm over the axes from `axis` on: Y = X / sqrt(mean(X^2) + epsilon) * scale; inv_std_var [..., 1...]. */
OP_KERNEL(op_k_ms_simplified_layer_norm) {
  (void)n_in;
  op_xt *x = in[0], *scale = in[1];
  if (!f32(x) || !f32(scale)) return op_kfail(k, err, "only float32 is supported");
  int axis = op_axis(op_kattr_int(k, "axis", -1), x->rank);
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  int64_t n = 1;
  for (int d = axis; d < x->rank; d++) n *= x->dims[d];
  if (scale->numel != n) return op_kfail(k, err, "scale must hold the %lld normalised values", (long long)n);
  int64_t rows = n ? x->numel / n : 0, stat_dims[OP_MAX_RANK];
  for (int d = 0; d < x->rank; d++) stat_dims[d] = d < axis ? x->dims[d] : 1;
  if (op_xt_alloc(&out[0], T_FLOAT, x->dims, x->rank, err)) return -1;
  if (n_out > 1 && k->node->output[1][0] && op_xt_alloc(&out[1], T_FLOAT, stat_dims, x->rank, err)) return -1;
  float *inv = n_out > 1 ? out[1].data : NULL;
  float eps = op_kattr_float(k, "epsilon", 1e-5f);
  for (int64_t r = 0; r < rows; r++)
    norm_row((const float *)x->data + r * n, n, scale->data, NULL, eps, true, (float *)out[0].data + r * n, NULL,
             inv ? inv + r : NULL);
  return 0;
}

/* EmbedLayerNormalization: LayerNorm(word[input_ids] + position[position_ids or s] + segment[segment_ids]);
 * mask_index [B] counts the ones of each mask row (0 without a mask); embedding_sum is the sum before the
 * norm. Inputs: input_ids, segment_ids?, word, position, segment?, gamma, beta, mask?, position_ids?. */
OP_KERNEL(op_k_ms_embed_layer_norm) {
  op_xt *ids = in[0], *seg = in[1], *word = in[2], *pos = in[3], *segw = n_in > 4 ? in[4] : NULL;
  op_xt *gamma = in[5], *beta = in[6], *mask = n_in > 7 ? in[7] : NULL, *pos_ids = n_in > 8 ? in[8] : NULL;
  if (ids->dtype != T_INT32 || (seg && seg->dtype != T_INT32) || (mask && mask->dtype != T_INT32) ||
      (pos_ids && pos_ids->dtype != T_INT32))
    return op_kfail(k, err, "input_ids, segment_ids, mask and position_ids must be int32");
  if (!f32(word) || !f32(pos) || !f32(segw) || !f32(gamma) || !f32(beta))
    return op_kfail(k, err, "only float32 is supported");
  if (ids->rank != 2) return op_kfail(k, err, "input_ids must be [batch, sequence]");
  int64_t B = ids->dims[0], S = ids->dims[1];
  if (word->rank != 2 || pos->rank != 2 || (segw && segw->rank != 2))
    return op_kfail(k, err, "embedding tables must be 2-D");
  int64_t H = word->dims[1];
  if (pos->dims[1] != H || (segw && segw->dims[1] != H) || gamma->numel != H || beta->numel != H)
    return op_kfail(k, err, "embedding widths, gamma and beta must all be %lld", (long long)H);
  if ((seg && seg->numel != B * S) || (mask && mask->numel != B * S))
    return op_kfail(k, err, "segment_ids and mask must be [batch, sequence] like input_ids");
  if (pos_ids && pos_ids->numel != B * S && pos_ids->numel != S)
    return op_kfail(k, err, "position_ids must be [batch, sequence] or [1, sequence]");
  int64_t dims[3] = {B, S, H};
  if (op_xt_alloc(&out[0], T_FLOAT, dims, 3, err)) return -1;
  if (n_out > 1 && k->node->output[1][0] && op_xt_alloc(&out[1], T_INT32, dims, 1, err)) return -1;
  if (n_out > 2 && k->node->output[2][0] && op_xt_alloc(&out[2], T_FLOAT, dims, 3, err)) return -1;
  float *sum_out = n_out > 2 ? out[2].data : NULL, *tmp = op_xmalloc((size_t)(H ? H : 1) * sizeof(float));
  const float *w = word->data, *p = pos->data, *sw = segw ? segw->data : NULL;
  float eps = op_kattr_float(k, "epsilon", 1e-12f);
  int rc = 0;
  for (int64_t i = 0; i < B * S && !rc; i++) {
    int64_t wi = ((const int32_t *)ids->data)[i];
    int64_t pi = pos_ids ? ((const int32_t *)pos_ids->data)[pos_ids->numel == S ? i % S : i] : i % S;
    int64_t si = seg ? ((const int32_t *)seg->data)[i] : 0;
    if (wi < 0 || wi >= word->dims[0] || pi < 0 || pi >= pos->dims[0] || (seg && (si < 0 || si >= segw->dims[0]))) {
      rc = op_kfail(k, err, "an index is out of its embedding table's range (word %lld, position %lld, segment %lld)",
                    (long long)wi, (long long)pi, (long long)si);
      break;
    }
    float *row = sum_out ? sum_out + i * H : tmp;
    for (int64_t j = 0; j < H; j++) row[j] = w[wi * H + j] + p[pi * H + j] + (sw ? sw[si * H + j] : 0.f);
    norm_row(row, H, gamma->data, beta->data, eps, false, (float *)out[0].data + i * H, NULL, NULL);
  }
  free(tmp);
  if (rc) return -1;
  if (n_out > 1 && out[1].data) {
    int32_t *mi = out[1].data;
    for (int64_t b = 0; b < B; b++) {
      int32_t c = 0;
      for (int64_t s = 0; mask && s < S; s++) c += ((const int32_t *)mask->data)[b * S + s] == 1;
      mi[b] = c;
    }
  }
  return 0;
}

/* ---- RotaryEmbedding --------------------------------------------------------------------------------- */
void op_rope_head(const float *x, const float *cos_row, const float *sin_row, int64_t rot, int64_t head,
                  bool interleaved, float *o) {
  int64_t half = rot / 2;
  for (int64_t i = 0; i < rot; i++) {
    int64_t c, j;
    float sign;
    if (interleaved) {
      c = i / 2;
      sign = i % 2 == 0 ? -1.f : 1.f;
      j = i % 2 == 0 ? i + 1 : i - 1;
    } else {
      c = i % half;
      sign = i < half ? -1.f : 1.f;
      j = (i + half) % rot;
    }
    o[i] = x[i] * cos_row[c] + sign * x[j] * sin_row[c];
  }
  for (int64_t i = rot; i < head; i++) o[i] = x[i];
}

/* input [B, S, hidden] or [B, N, S, H]; position_ids [B, S] or [1] (an offset added to s); caches
 * [max_position, rotary_dim / 2]. */
OP_KERNEL(op_k_ms_rotary) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *pos = in[1], *cosc = in[2], *sinc = in[3];
  if (!f32(x) || !f32(cosc) || !f32(sinc)) return op_kfail(k, err, "only float32 is supported");
  if (pos->dtype != T_INT64) return op_kfail(k, err, "position_ids must be int64");
  if (x->rank != 3 && x->rank != 4)
    return op_kfail(k, err, "input must be [batch, sequence, hidden] or [batch, heads, sequence, head]");
  if (cosc->rank != 2 || sinc->rank != 2 || memcmp(cosc->dims, sinc->dims, 2 * sizeof(int64_t)))
    return op_kfail(k, err, "cos_cache and sin_cache must be 2-D of the same shape");
  int64_t B = x->dims[0], S = x->rank == 3 ? x->dims[1] : x->dims[2];
  int64_t rot = op_kattr_int(k, "rotary_embedding_dim", 0), N = op_kattr_int(k, "num_heads", 0), H;
  bool interleaved = op_kattr_int(k, "interleaved", 0) != 0;
  if (rot <= 0) rot = cosc->dims[1] * 2;
  if (x->rank == 4) {
    N = x->dims[1];
    H = x->dims[3];
  } else {
    H = N > 0 ? x->dims[2] / N : rot;
    N = H ? x->dims[2] / H : 0;
    if (N * H != x->dims[2])
      return op_kfail(k, err, "hidden size %lld is not a whole number of heads", (long long)x->dims[2]);
  }
  if (rot > H || rot % 2 || cosc->dims[1] * 2 < rot)
    return op_kfail(k, err, "rotary dimension %lld does not fit the head size %lld and the caches", (long long)rot,
                    (long long)H);
  if (pos->numel != 1 && pos->numel != B * S) return op_kfail(k, err, "position_ids must be [batch, sequence] or [1]");
  if (op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  const int64_t *pid = pos->data;
  const float *a = x->data, *cs = cosc->data, *sn = sinc->data;
  int64_t half = cosc->dims[1];
  for (int64_t b = 0; b < B; b++)
    for (int64_t s = 0; s < S; s++) {
      int64_t p = pos->numel == 1 ? pid[0] + s : pid[b * S + s];
      if (p < 0 || p >= cosc->dims[0])
        return op_kfail(k, err, "position %lld is outside the caches' %lld positions", (long long)p,
                        (long long)cosc->dims[0]);
      for (int64_t n = 0; n < N; n++) {
        int64_t off = x->rank == 3 ? (b * S + s) * N * H + n * H : ((b * N + n) * S + s) * H;
        op_rope_head(a + off, cs + p * half, sn + p * half, rot, H, interleaved, (float *)out->data + off);
      }
    }
  return 0;
}
