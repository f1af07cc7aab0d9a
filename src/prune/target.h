/* target.h - FLOPs and parameter costs of attention heads and FFN neurons, the allocation of removals
 * that reaches a target fraction kept, and the rounding of kept widths to a multiple (issue 12). */
#ifndef OP_PRUNE_TARGET_H
#define OP_PRUNE_TARGET_H

#include "match/match.h"

/* What a block costs, per token: each unit (head / neuron) and what stays while any unit does (the
 * output bias; k and v of grouped attention, which removing query heads within groups leaves). */
typedef struct op_unit_cost {
  double unit_flops, unit_params;
  double fixed_flops, fixed_params;
  int64_t units;
} op_unit_cost;

/* Costs of a layer's attention and FFN (zeroed when the layer has none). FLOPs are 2 per multiply-add
 * per token: attention q/k/v and output projections, scores (q.k) and context (weights.v) at sequence
 * length seq; FFN up (both of a gated FFN) and down projections. Norms, softmax, activations, biases'
 * adds and embeddings are not counted. */
void op_block_costs(const op_analysis *a, int layer, int64_t seq, op_unit_cost *attn, op_unit_cost *ffn);
/* FLOPs (params false) or parameters of a block that keeps `kept` units. */
double op_cost_of(const op_unit_cost *c, int64_t kept, bool params);

/* One block of units for op_allocate_removals. The interface a selection method feeds: per unit a
 * score, the cost of removing it in whatever unit the method has (an importance such as l2 or
 * activation, or the increase of the block's output error when the unit is removed and the rest refit,
 * as reconstruction gives), >= 0, higher = keep. Scores are normalised per block (each block's scores
 * sum to 1), so blocks of different kinds and sizes compare; a unit's priority is its normalised score
 * per unit of cost saved. */
typedef struct op_alloc_block {
  int layer, kind;     /* kind 0: attention heads, 1: FFN neurons (for the caller) */
  int64_t n;           /* units */
  const double *score; /* [n] */
  double unit_cost;    /* FLOPs or parameters one unit saves */
  double fixed_cost;   /* saved as well when the block's last unit goes (the block is removed) */
  int64_t multiple;    /* kept count rounded to a multiple of this (<= 1: any) */
  bool *keep;          /* [n], filled */
} op_alloc_block;

/* Removes units in order of priority until the cost removed reaches to_remove, never a block's last unit
 * unless the target cannot be met otherwise; then rounds each block's kept count to its multiple.
 * Returns the cost removed after rounding. */
double op_allocate_removals(op_alloc_block *b, size_t nb, double to_remove);

/* Rounds the number of kept units to the nearest multiple (at least one multiple, at most n): the best
 * kept units stay, the best removed ones come back. Nothing changes when n < multiple or none is kept. */
void op_round_kept(bool *keep, const double *score, int64_t n, int64_t multiple);

/* The greatest common divisor. */
static inline int64_t op_gcd64(int64_t a, int64_t b) {
  while (b) {
    int64_t t = a % b;
    a = b;
    b = t;
  }
  return a;
}

/* The head step for --multiple-of N: kept heads a multiple of it make both the query/key width (heads x
 * head size) and the value/output width (heads x V's head size, wider under qkv_hidden_sizes) multiples
 * of N; 1 when that step does not fit in the layer, or for grouped attention (its groups are rounded as
 * they are). */
static inline int64_t op_head_step(const op_attn *at, int64_t multiple) {
  if (multiple <= 1) return 1;
  int64_t sq = multiple / op_gcd64(multiple, at->head_dim), sv = multiple / op_gcd64(multiple, op_attn_v_head_dim(at));
  int64_t step = sq / op_gcd64(sq, sv) * sv;
  return step <= at->heads && at->kv_heads == at->heads ? step : 1;
}

#endif
