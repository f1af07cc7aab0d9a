/* prune.h - pruning configuration, the per-layer plan chosen from it, and the report of what the
 * rewrite changed. Flow: config + analysis -> plan (plan.c) -> rewrite (rewrite.c) -> report. */
#ifndef OP_PRUNE_H
#define OP_PRUNE_H

#include "data/data.h"
#include "match/match.h"

typedef enum op_importance {
  OP_IMP_L2,
  OP_IMP_L1,
  OP_IMP_RANDOM,
  OP_IMP_ACTIVATION,
  OP_IMP_RECONSTRUCTION, /* structured OBS on the calibration data, block by block (recon.h) */
} op_importance;

typedef struct op_layer_cfg {
  int layer;
  double head_sparsity, ffn_sparsity; /* < 0: unset */
  int64_t num_heads, ffn_size;        /* < 0: unset */
  double kv_head_sparsity;            /* < 0: unset; grouped attention: fraction of kv groups */
  int64_t num_kv_heads;               /* < 0: unset */
  bool heads_set, neurons_set, kv_heads_set; /* explicit lists of heads / neurons / kv groups to remove */
  op_int_vec heads, neurons, kv_heads;
  int attention, ffn;                 /* 0: remove the block, 1: keep it, -1: unset */
  /* a decoder layer's cross-attention (issue 9): its own head list and removal; the counts and
   * sparsities above apply to it as to self-attention */
  bool cross_heads_set;
  op_int_vec cross_heads;
  int cross_attention;                /* 0: remove the block, 1: keep it, -1: unset */
} op_layer_cfg;

struct op_prune_config {
  double head_sparsity, ffn_sparsity, width; /* < 0: unset */
  int64_t ffn_size, num_heads;               /* < 0: unset */
  double kv_head_sparsity;                   /* < 0: unset */
  int64_t num_kv_heads;                      /* < 0: unset */
  op_importance importance;
  uint64_t seed;
  bool seed_set;
  bool progress; /* progress bar while activations are collected */
  bool global;
  bool compact;
  bool keep_layers_set;
  op_int_vec keep_layers;
  OP_VEC(op_layer_cfg) layers;
  const op_dataset *data; /* for OP_IMP_ACTIVATION */
  int64_t samples, batch;
  /* issue 12: a target instead of ratios (fraction kept of the blocks' FLOPs per token or parameters,
   * < 0: unset), the sequence length FLOPs are counted at, kept widths rounded to a multiple */
  double target_flops, target_params;
  int64_t flops_seq, multiple_of;
  /* issue 12: an accuracy floor judged on evaluation rows after the calibration rows (search.c);
   * < 0 (min_cosine < -1): unset. max_drop in points of accuracy, max_ppl_increase in percent */
  double max_drop, min_agreement, min_cosine, max_ppl_increase;
  int64_t eval_samples, search_steps;
  /* reconstruction (recon.h): with data, importance defaults to reconstruction and compensation to on */
  bool importance_set; /* chosen by the caller, so data does not change it */
  int compensate;      /* -1: unset (on once data is given), 0: off, 1: on */
  /* issue 12, the allocation judged end to end (alloc_search.h): moves the search may score (-1: auto, a
   * few, fewer on slow models; 0: off), and the counts it fixed for a candidate ([2 * layers]: heads,
   * neurons removed per layer; NULL: from the error curves) */
  int64_t alloc_steps;
  const int64_t *fixed_removed;
};

typedef struct op_layer_plan {
  bool drop_layer, drop_attn, drop_ffn;
  int64_t heads;      /* before */
  bool *keep_head;    /* [heads]; false for every head of a removed kv group */
  int64_t kv_heads;   /* before; == heads unless grouped */
  bool *keep_kv;      /* [kv_heads] */
  double *kv_score;
  int64_t width;      /* FFN width before */
  bool *keep_neuron;  /* [width] */
  double *head_score, *neuron_score;
  /* a decoder layer's cross-attention (issue 9): its heads planned like self-attention's, in a plan
   * of their own (only the attention fields used), or NULL */
  struct op_layer_plan *cross;
  bool drop_cross;
  /* reconstruction (sequential.c): squared output error of the block over the calibration rows relative
   * to its output energy, predicted by the refit and measured with the weights as written; -1: none */
  double attn_predicted_error, attn_measured_error, ffn_predicted_error, ffn_measured_error;
  /* the allocation's error curves (recon_alloc.c): [heads + 1] / [width + 1], or NULL */
  double *head_curve, *neuron_curve;
} op_layer_plan;

typedef struct op_plan {
  op_layer_plan *layers;
  size_t n;
  /* output-head compensation (sequential.c): the products that produce the outputs, refit or why not */
  struct op_output_head *out_heads;
  size_t n_out_heads;
} op_plan;

/* JSON helpers shared by the config readers. */
struct cJSON;
/* A JSON scalar or integer list as the text form the option setters take. */
bool op_json_to_text(const struct cJSON *v, char *buf, size_t n);
/* Reads the pruning options of a parsed JSON object (origin names it in messages). */
/* Reads a JSON config file whose root is an object: nesting deeper than OP_JSON_MAX_DEPTH, invalid JSON
 * (with the byte offset) and a key given twice in one object are errors naming the file and the key.
 * Returns the tree (cJSON_Delete it), or NULL and sets *err. */
#define OP_JSON_MAX_DEPTH 64
struct cJSON *op_json_load(const char *path, op_error *err);
int op_prune_config_from_json(op_prune_config *c, const struct cJSON *obj, const char *origin, op_error *err);

/* Chooses what to remove. Returns 0, or -1 with *err (OP_ARG) when the config does not fit the model. */
int op_plan_build(const op_analysis *a, const op_prune_config *c, op_plan *plan, op_error *err);
void op_plan_free(op_plan *plan);
int64_t op_plan_kept(const bool *keep, int64_t n);
/* The importance as its config value ("l2", ..., "reconstruction"). */
const char *op_importance_key(op_importance imp);
const char *op_importance_name(op_importance imp);
/* Reconstruction: chooses the heads (or the neurons) of one layer again, by the rules op_plan_build
 * applied, from the scores now in the plan (lower goes first). Returns 0 or -1 with *err. */
int op_plan_reselect(const op_analysis *a, const op_prune_config *c, op_plan *plan, int layer, bool heads, op_error *err);

typedef struct op_tensor_change {
  int layer;
  char *name;
  int64_t before[2], after[2]; /* dims of a matrix or vector (after[0] == -1: removed) */
  int rank;
} op_tensor_change;

/* issue 12: one candidate of the accuracy-floor search */
typedef struct op_search_point {
  double target;                /* fraction of FLOPs (or parameters) asked */
  double flops_kept, params_kept; /* of the attention and FFN blocks, as pruned */
  double accuracy, ref_accuracy;  /* on labels, -1 without */
  double agreement, cosine;
  double ppl, ref_ppl;            /* language models, -1 otherwise */
  bool pass;
} op_search_point;

typedef struct op_layer_result {
  int layer;
  int64_t heads_before, heads_after, ffn_before, ffn_after, kv_before, kv_after;
  const char *attn_kind;
  bool has_attn, has_ffn, dropped, attn_removed, ffn_removed;
  char activation[24];
  op_int_vec removed_heads, removed_neurons, removed_kv_heads;
  /* encoder-decoder layers (issue 9) */
  char name[40];           /* "3", "encoder.3", "decoder.1" */
  bool has_cross, cross_removed;
  int64_t cross_before, cross_after;
  op_int_vec removed_cross_heads;
  /* reconstruction and importance values (report's predicted_error, measured_error, importance) */
  double attn_predicted_error, attn_measured_error, ffn_predicted_error, ffn_measured_error; /* -1: none */
  double *head_importance, *neuron_importance; /* [heads_before], [ffn_before], or NULL */
  /* the allocation's error curves (alloc_search.c orders its moves by them), or NULL */
  double *head_curve, *neuron_curve;
} op_layer_result;

/* A past/present graph interface of a fused attention op whose head axis followed the pruning. */
typedef struct op_state_change {
  int layer;
  char *name;
  bool input;
  int axis;
  int64_t before, after;
} op_state_change;

typedef struct op_output_head_result {
  char *node, *output, *skip;
  double error_before, error_after;
} op_output_head_result;

struct op_prune_report {
  char *model;
  op_importance importance;
  bool compact;
  int64_t before, after;
  OP_VEC(op_layer_result) layers;
  OP_VEC(op_tensor_change) changes;
  OP_VEC(char *) unmatched;
  /* ---- fused attention (rewrite_fused.c): graph inputs/outputs whose head axis changed ---- */
  OP_VEC(op_state_change) state;
  /* issue 12: the file rows calibration used (data-aware importance) */
  op_row_set calib_rows;
  /* issue 12: FLOPs per token (at flops_seq) and parameters of the attention and FFN blocks (target.h) */
  double flops_before, flops_after, block_params_before, block_params_after;
  int64_t flops_seq, multiple_of;
  double target_flops, target_params; /* < 0: none */
  /* issue 12: per layer, the scores units were ranked by (for the HTML report); NULL when none */
  double **head_scores, **neuron_scores;
  /* issue 12: the accuracy-floor search (search.c): every candidate tried, the rows that judged them */
  OP_VEC(op_search_point) curve;
  bool searched;
  char floor_text[160]; /* "top-1 accuracy at most 1 point below the reference" */
  const char *floor_metric; /* "accuracy", "agreement", "cosine" or "perplexity": the first floor given */
  double floor_threshold;   /* the value of that metric a candidate must reach (at most, for perplexity) */
  op_row_set eval_rows;
  /* issue 12, output-head compensation (sequential.c): each product that produces an output, refit or
   * why not (skip NULL: refit), its error against the dense output before and after (relative) */
  OP_VEC(op_output_head_result) out_heads;
  /* issue 12, the allocation judged end to end (alloc_search.h), or NULL */
  struct op_alloc_search *alloc_search;
};

/* ---- ONNX Runtime's fused graphs (rewrite_fused.c) ---- */

/* Refuses (OP_UNSUPPORTED) removing a block or layer whose residual is a SkipLayerNormalization: the
 * fused op also computes the next block's norm, so it cannot be bypassed. */
int op_fused_check_plan(const op_analysis *a, const op_plan *plan, op_error *err);
/* The bias tensor `name` as node `node` alone reads it: when `node` reads it directly and other nodes
 * share it, a copy is added and the node repointed to it (the others keep the original). */
Onnx__TensorProto *op_fused_own_bias(op_analysis *a, int node, const char *name);
/* After the projections of a fused attention op were sliced: its head-count attributes
 * (num_heads, kv_num_heads, qkv_hidden_sizes), MultiHeadAttention's packed bias input, and the head
 * axis of its past/present graph inputs and outputs. qh: kept query heads, kvh: kept kv heads. */
int op_fused_rewrite_heads(op_analysis *a, const op_attn *at, const int64_t *qh, int64_t H2, const int64_t *kvh,
                           int64_t KV2, int layer, op_prune_report *r, op_error *err);

/* Applies the plan to the model the analysis was made on; records changes in r. */
int op_rewrite(op_analysis *a, const op_plan *plan, op_prune_report *r, op_error *err);

#endif
