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
  /* ---- ONNX Runtime's fused attention operators (match_fused.c) ---- */
  const char *fused_op;      /* "Attention", "MultiHeadAttention", "GroupQueryAttention"; NULL: decomposed */
  int fused_node;            /* that node (valid when fused_op is set) */
  int64_t part[3];           /* widths of q, k, v in a packed projection; 0: three equal parts */
  const char *packed_bias;   /* MultiHeadAttention's bias input [Dq + Dk + Dv] for separate q/k/v, or NULL */
  /* cross-attention (issue 9): k and v read another stream than q (an encoder's memory) */
  bool cross;         /* qkv[1].x, the memory, is not qkv[0].x */
  bool kv_packed;     /* qkv[1] and qkv[2] are one projection to 2*E_kv, cut into k|v (torch's kv chunk) */
} op_attn;

/* Width of part k (q, k, v) of a packed projection and its offset in it. */
static inline int64_t op_attn_part(const op_attn *at, int k, int64_t *offset) {
  int64_t w[3];
  for (int i = 0; i < 3; i++) w[i] = at->part[i] ? at->part[i] : at->qkv[0].out / 3;
  if (offset) *offset = k == 0 ? 0 : k == 1 ? w[0] : w[0] + w[1];
  return w[k];
}
/* Size of one head of v, i.e. of the output projection's input groups (Attention's qkv_hidden_sizes may
 * give v another head size than q and k). */
static inline int64_t op_attn_v_head_dim(const op_attn *at) { return at->out.in / at->heads; }

/* The kv head that query head h reads. */
static inline int64_t op_attn_kv_of(const op_attn *at, int64_t h) {
  if (at->kv_map == OP_KV_TILED) return h % at->kv_heads;
  return h / (at->heads / at->kv_heads);
}
/* "self", "grouped" (k/v narrower than q), "multi-query" (one kv head) or "cross" (k/v from another
 * stream; "cross-grouped" / "cross-multi-query" when also narrower). */
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
  /* ---- fused residual (match_fused.c) ---- */
  bool fused_residual;    /* the residual is ONNX Runtime's SkipLayerNormalization (residual_add is that node) */
} op_block;

/* Which stack of an encoder-decoder model a layer belongs to (issue 9). A model with cross-attention
 * has a decoder stack (its layers hold a cross-attention block) and, when it has other layers, an
 * encoder stack; other models have one stack (OP_STACK_NONE) numbered plainly. */
typedef enum op_stack { OP_STACK_NONE, OP_STACK_ENCODER, OP_STACK_DECODER } op_stack;

typedef struct op_layer {
  int attn_block, ffn_block; /* indices into blocks, or -1 */
  /* encoder-decoder layers (issue 9) */
  int cross_block;           /* a decoder layer's cross-attention block, between attn and ffn, or -1 */
  op_stack stack;
  int stack_index;           /* index within its stack (== the layer index without stacks) */
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

/* ---- ONNX Runtime's fused graphs (match_fused.c) ---- */

/* Is n a linear node: MatMul, Gemm or com.microsoft FusedMatMul? */
bool op_fused_is_linear(const Onnx__NodeProto *n);
/* FusedMatMul as a linear layer: 1 and *trans (weight stored [out, in]) when usable, 0 when n is no
 * FusedMatMul, -1 with *why when it is one that cannot be a projection (transA, batch transposes). */
int op_fused_matmul_linear(const Onnx__NodeProto *n, bool *trans, const char **why);
/* FusedMatMul of two activations usable as the score (q.k) or context (probs.v) product. */
bool op_fused_matmul_activations(const Onnx__NodeProto *n);
/* Is input slot i of n the bias a fused activation holds (BiasGelu, FastGelu's second input)? */
bool op_fused_act_bias(const Onnx__NodeProto *n, size_t i);
/* Attaches the biases held by fused activations of an FFN's region to its up projection; false with
 * *why when one does not belong to it. */
bool op_fused_ffn_bias(op_analysis *a, op_ffn *f, const char **why);
/* Finds a residual that is a SkipLayerNormalization after y (through c, its first real consumer,
 * at index ci), for a block reading x. 1: found, blk filled; 0: c is no SkipLayerNormalization;
 * -1: it is one that is no residual of this block. */
int op_fused_residual(op_analysis *a, const char *x, const char *y, const Onnx__NodeProto *c, int ci, op_block *blk);
/* Matches every fused attention operator as a block (pushed to a->attn and a->blocks), or lists it in
 * a->unmatched with the op and the attribute or input at fault. used: projection nodes claimed. */
void op_fused_match_attention(op_analysis *a, bool *used);
/* A graph input (past) or output (present) holding a fused attention op's state, whose head axis
 * follows the (kv) head count: pruning heads changes that interface's width. */
typedef struct op_fused_state {
  const char *name;
  bool input;
  int axis;
  bool kv; /* counts kv heads (GroupQueryAttention) */
} op_fused_state;
/* Fills out[4]; returns how many there are (0 for a decomposed block). */
int op_fused_states(const op_analysis *a, const op_attn *at, op_fused_state *out);
/* Corrects the attention / FFN parameter counts for biases fused ops hold: MultiHeadAttention's packed
 * bias is added, a bias several blocks share (ONNX Runtime's test GPT-2) is counted once. */
void op_fused_count_biases(op_analysis *a);
/* Elements of the embedding tables EmbedLayerNormalization nodes hold (word, position, segment). */
int64_t op_fused_embed_params(const op_analysis *a);
/* "fused op (Attention)" etc. for a fused block, NULL otherwise. */
const char *op_fused_kind(const op_attn *at);
/* Activation name of a fused FFN activation op ("gelu(BiasGelu)"), NULL when the region has none. */
const char *op_fused_activation(const op_analysis *a, const op_ffn *f);

/* The matcher's walkers, for match_fused.c (match.c). */
bool op_match_linear(const op_analysis *a, int node, op_proj *p, const char **why);
bool op_match_proj_out(const op_analysis *a, const char *t, op_proj *p, const char **why);
bool op_match_residual(op_analysis *a, const char *x, const char *y, op_block *blk);
Onnx__NodeProto *op_match_real_consumer(const op_analysis *a, const char *t, int *idx);
void op_match_unmatched(op_analysis *a, const Onnx__NodeProto *n, const char *why);
/* A reason kept in a->why until the next one. */
const char *op_match_why(op_analysis *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* ---- encoder-decoder layers and stacks (layers.c, issue 9) ---- */

/* The cross-attention block of a decoder layer, or NULL. */
const op_attn *op_layer_cross(const op_analysis *a, int layer);
/* The first and last block of a layer (the stream enters / leaves the layer there). */
int op_layer_first_block(const op_analysis *a, int layer);
int op_layer_last_block(const op_analysis *a, int layer);
/* Does the model have two stacks (layers then are addressed as encoder.N / decoder.N)? */
bool op_analysis_has_stacks(const op_analysis *a);
/* "encoder" / "decoder", or NULL for a single-stack model. */
const char *op_stack_name(op_stack s);
/* A layer's address as configs and the CLI name it: "3", "encoder.3", "decoder.1" (buf of 32). */
const char *op_layer_label(const op_analysis *a, int layer, char *buf, size_t n);
/* Groups the sorted residual blocks into layers (self-attention, cross-attention, FFN) and numbers
 * them per stack. */
void op_layers_assemble(op_analysis *a);
/* Does the stream entering a block (in) continue the one leaving another (out), through re-layouts only
 * (the float32 Cast of RMSNorm, a flatten to [B*S, E])? (match.c) */
bool op_match_continues_stream(const op_analysis *a, const char *out, const char *in);
/* Folds Slices of stored weights whose bounds are computable (torch's cross-attention in-projection)
 * into stored weights, removing the Slices and weights nothing reads any more (fold.c). The graph
 * computes the same. Returns how many were folded. */
int op_fold_weight_slices(Onnx__GraphProto *g);

/* Layer references in configs and options: a plain index, or a stack and an index within it,
 * encoded as -1 - (stack << 24 | index) so plain indices keep their meaning. */
#define OP_LAYER_REF(stack, index) (-1 - (int)(((unsigned)(stack) << 24) | (unsigned)(index)))
static inline bool op_layer_ref_is_stacked(int ref) { return ref < 0; }
static inline op_stack op_layer_ref_stack(int ref) { return (op_stack)((unsigned)(-1 - ref) >> 24); }
static inline int op_layer_ref_index(int ref) { return (int)((unsigned)(-1 - ref) & 0xffffffu); }
/* Parses "3", "encoder.3" or "decoder.1" into a reference; -1 (and nothing set) when malformed. */
int op_layer_ref_parse(const char *s, const char **end, int *ref);
/* The layer a reference names, or -1 with *err saying why (a plain number in a two-stack model, a
 * stack the model lacks, an index beyond the stack). what names the option in the message. */
int op_layer_resolve(const op_analysis *a, int ref, const char *what, op_error *err);
/* The reference as text ("3", "decoder.1") in buf. */
const char *op_layer_ref_text(int ref, char *buf, size_t n);

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
