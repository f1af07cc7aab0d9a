/* match.h - what the matcher found: linear projections, attention and FFN blocks, the residual
 * blocks they sit in and the layers those form. Node indices refer to the graph as analysed. */
#ifndef OP_MATCH_H
#define OP_MATCH_H

#include "model/graph.h"

/* y = x W (+ b), as MatMul[+Add] or Gemm, W possibly a Transpose of an initializer. */
typedef struct op_proj {
  int node;          /* MatMul or Gemm */
  int bias_node;     /* Add carrying the bias, or -1 */
  const char *w;     /* stored weight: an initializer or a Constant node's output */
  const char *b;     /* stored bias, or NULL */
  int32_t dtype;     /* element type of weight and bias: float, float16 or bfloat16 */
  bool w_out_major;  /* stored [out, in] rather than [in, out] */
  int64_t in, out;
  const char *x;     /* input */
  const char *y;     /* output, after the bias */
  /* A bias shared with other users (torch deduplicates equal constants, e.g. the all-zero biases of an
   * untrained model, behind Identity): copy on write, the sliced bias becomes a new initializer read by
   * input b_slot of node b_user, and the shared one stays for the others. false (zero) when private. */
  bool b_cow;
  int b_user, b_slot;
} op_proj;

typedef OP_VEC(int) op_int_vec;
typedef OP_VEC(const char *) op_name_vec;

static inline bool op_int_vec_has(const op_int_vec *v, int x) {
  for (size_t i = 0; i < v->n; i++)
    if (v->v[i] == x) return true;
  return false;
}

/* A node whose constants carry a head count, tagged by the matcher with what it carries, so the
 * rewrite never has to guess from values alone. */
typedef enum op_site_role {
  OP_SITE_SPLIT,  /* Reshape [.., n, d] splitting heads off a projection output */
  OP_SITE_MERGE,  /* Reshape [.., n*d] merging heads before the output projection */
  OP_SITE_MASK,   /* Reshape/Expand shaping a mask to [B, H, S, S] or [B*H, S, S] */
  OP_SITE_PARTS,  /* Split sizes / Slice bounds on a packed q|k|v projection */
  OP_SITE_REPEAT, /* Expand [.., KV, rep, S, d] or Tile repeats [.., rep, ..]: kv heads repeated */
  OP_SITE_HEADS,  /* Reshape [.., H, S, d] folding the repeated kv heads into query heads */
} op_site_role;

typedef struct op_site {
  int node;
  op_site_role role;
  bool kv; /* counts kv heads (on k/v before the repeat), not query heads */
} op_site;

/* How query head h finds its kv head when k/v have fewer heads than q. */
typedef enum op_kv_map {
  OP_KV_SAME,        /* one kv head per query head */
  OP_KV_INTERLEAVED, /* h reads h / rep: Unsqueeze -> Expand -> Reshape (transformers' repeat_kv) */
  OP_KV_TILED,       /* h reads h % KV: Tile of the head axis */
} op_kv_map;

/* The one description of an attention block, whatever form it came in: planning, rewriting,
 * compaction and reporting read only this. */
typedef struct op_attn {
  bool packed;        /* qkv[0] is one projection to 3*E */
  op_proj qkv[3];
  op_proj out;
  int64_t heads, kv_heads, head_dim;
  op_kv_map kv_map;
  bool rotary;        /* q and k pass through rotary embeddings (per-head, so untouched by pruning) */
  int softmax;
  OP_VEC(op_site) sites;     /* every node whose constants carry a head count */
  op_name_vec region;        /* tensors whose width scales with the number of heads */
} op_attn;

/* The kv head that query head h reads. */
static inline int64_t op_attn_kv_of(const op_attn *at, int64_t h) {
  if (at->kv_map == OP_KV_TILED) return h % at->kv_heads;
  return h / (at->heads / at->kv_heads);
}
/* "self", "grouped" (k/v narrower than q) or "multi-query" (one kv head). */
const char *op_attn_kind(const op_attn *at);

typedef struct op_ffn {
  op_proj up[2]; /* gated: up[0] is the gate (through the activation), up[1] the linear branch */
  int n_up;
  op_proj down;
  char activation[24];
  bool zero_preserving; /* act(0) == 0, so an all-zero input column gives a dead neuron */
  op_int_vec region;    /* activation nodes */
} op_ffn;

typedef enum op_block_kind { OP_BLOCK_ATTN, OP_BLOCK_FFN } op_block_kind;

/* A residual block: stream_out = norm?(stream_in + f(stream_in or norm(stream_in))). */
typedef struct op_block {
  op_block_kind kind;
  int index;          /* into attn or ffn */
  int residual_add;   /* node index */
  const char *stream_in;
  const char *add_out;    /* residual Add output */
  const char *stream_out; /* add_out, or the post-norm output after it */
  bool pre_norm;
  bool stream_out_known;  /* post-norm end found, so the block can be bypassed whole */
} op_block;

typedef struct op_layer {
  int attn_block, ffn_block; /* indices into blocks, or -1 */
} op_layer;

struct op_analysis {
  const op_model *model;
  op_graph *gr;
  int64_t opset;
  OP_VEC(op_attn) attn;
  OP_VEC(op_ffn) ffn;
  OP_VEC(op_block) blocks;
  OP_VEC(op_layer) layers;
  OP_VEC(char *) unmatched;
  char *quantized; /* "QDQ (DequantizeLinear 'x')" etc. when the model is already quantised, else NULL */
  char *why;       /* scratch for the latest reason */
  int unmatched_attn; /* attention blocks listed as not matched: layer numbering cannot be trusted */
  int64_t params_total, params_embed, params_attn, params_ffn;
};

/* "QDQ (12 quantisation nodes, the first DequantizeLinear 'x')" when the graph is already quantised
 * (QDQ, QOperator or MatMulNBits); NULL otherwise. The caller frees it. */
char *op_quantized_form(const op_graph *gr);
/* Float element types a weight may have (scored in float32, written back in its own type). */
bool op_weight_dtype_ok(int32_t dt);
/* The stored constant (initializer or Constant node) behind name, through at most a few Identity /
 * Cast nodes, each used once; NULL when it is no constant or is shared with another user. Sets
 * *tensor to it (in raw form). */
const char *op_weight_source(const op_graph *gr, const char *name, Onnx__TensorProto **tensor);
/* The tensor of a stored weight or bias named by a projection (NULL for NULL). */
Onnx__TensorProto *op_proj_tensor(const op_analysis *a, const char *name);
/* Parameters of a graph: float initializers, and float Constant nodes of more than one element. */
int64_t op_graph_param_count(const Onnx__GraphProto *g);
/* Parameters (float elements) of a projection's weight and bias. */
int64_t op_proj_params(const op_analysis *a, const op_proj *p);
/* The block of a layer as attention / FFN, or NULL. */
const op_attn *op_layer_attn(const op_analysis *a, int layer);
const op_ffn *op_layer_ffn(const op_analysis *a, int layer);

/* ---- shape expressions (shape_expr.c) ---- */

/* Head counts of one block before and after pruning. */
typedef struct op_head_counts {
  int64_t H, H2;   /* query heads */
  int64_t kv, kv2; /* kv heads */
  int64_t d;       /* head size */
} op_head_counts;

/* Number of heads encoded in a head-split Reshape whose input has width E; 0 if it cannot tell. */
int64_t op_shape_infer_heads(const op_graph *gr, const Onnx__NodeProto *reshape, int64_t E);

/* Rewrites the constants of a site's target shape for a block going from c->H to c->H2 heads (and
 * c->kv to c->kv2 kv heads). region: tensors whose width scales with heads (a Div by H of their size
 * must follow H2). Adds new initializers and repoints inputs; never edits a constant shared with
 * other nodes. */
int op_shape_rewrite(op_graph *gr, const op_site *site, const op_head_counts *c, const op_name_vec *region,
                     op_error *err);
/* FFN activations re-laid out between the projections (transformers' Conv1D: Reshape to [B*S, F] and back
 * to [B, S, F]): does the Reshape keep F on its last axis (a constant F, or a size read at run time)? */
bool op_shape_keeps_width(const op_graph *gr, const Onnx__NodeProto *reshape, int64_t F);
/* Rewrites such a Reshape's constant width F to F2 (in a private copy of a shared Concat). */
int op_shape_rewrite_width(op_graph *gr, Onnx__NodeProto *reshape, int64_t F, int64_t F2, op_error *err);

/* Rewrites Split sizes / constant Slice bounds on a packed projection output from E to E2 per part. */
int op_shape_rewrite_parts(op_graph *gr, Onnx__NodeProto *n, int64_t E, int64_t E2, int64_t opset, op_error *err);

#endif
