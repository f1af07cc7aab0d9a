/* recon.h - pruning by reconstruction: the second moments of a projection's input on calibration data,
 * the structured optimal-brain-surgeon ranking of its input units, the least-squares refit of the kept
 * rows and the bias, and the sequential pass that applies them block by block (sequential.c).
 * Everything is float64; recon.c holds the one wrapper around LAPACK's Cholesky (OpenBLAS). */
#ifndef OP_RECON_H
#define OP_RECON_H

#include "prune/prune.h"

/* Second moments of x augmented with a constant 1: H is (n+1) x (n+1), row-major and full, its last
 * row and column hold the channel sums and the row count. The constant plays the bias: a refit that
 * keeps it moves the mean contribution of removed channels into the bias. */
typedef struct op_recon_moments {
  int64_t n; /* channels */
  double *H;
  float *part; /* n x n: a chunk's products in float32 before they are added into H (allocated on first use) */
  uint64_t budgeted; /* memory budget: bytes of H and part taken from the running total (op_recon_moments_budget) */
} op_recon_moments;

void op_recon_moments_init(op_recon_moments *s, int64_t n);
void op_recon_moments_free(op_recon_moments *s);
/* Memory budget (issue 10): takes H's and part's bytes from the running total until op_recon_moments_free; 0, or -1 and
 * *err (OP_NOMEM) naming `what`. */
int op_recon_moments_budget(op_recon_moments *s, const char *what, op_error *err);
/* Adds `rows` rows of x ([rows, n], row-major float32); H stays symmetric. */
void op_recon_moments_add(op_recon_moments *s, const float *x, int64_t rows);

/* Ridge for the solves: rel x the mean diagonal of the channels (not of the constant). */
double op_recon_damp(const op_recon_moments *s, double rel);

/* Cholesky factorisation of a symmetric positive definite n x n matrix in place (the lower triangle, in
 * row-major terms, holds L with A = L L^T; the rest is left as it was). Returns 0, or the LAPACK info
 * (> 0: not positive definite). */
int op_chol(double *A, int64_t n);
/* Solves A X = B for X (B: [n, nrhs] row-major, overwritten) with A's factor from op_chol. */
void op_chol_solve(const double *L, int64_t n, double *B, int64_t nrhs);

/* Greedy structured OBS ranking. W: [n+1, out] row-major, the rows the projection applies to each
 * input channel and, last, the bias. unit_of[c]: the unit channel c belongs to (0..n_units-1). Units are
 * removed greedily, each time those whose removal (with the rest optimally refit) raises the squared
 * output error least, refitting and updating H^-1 after each removal; a few units go at once when there
 * are many (1/64 of those left). score[u] = the predicted total error once u and every unit removed
 * before it are gone (so lower = removed first). After max_remove units the rest are scored by their
 * saliency at that point, on top of the total so far. Returns 0, or -1 with *err when H + damp is not
 * positive definite. */
int op_recon_rank(const op_recon_moments *s, const double *W, int64_t out, const int64_t *unit_of, int64_t n_units,
                  int64_t max_remove, double damp, double *score, op_error *err);

/* The weights after removing the channels c with !keep[c]: those rows zero, and with `compensate` the
 * kept rows and the bias refit by least squares to the original output, W'_K = W_K + (H_KK + damp)^-1
 * H_KR W_R (K: kept channels and the constant). Wnew: [n+1, out]. Returns 0, or -1 with *err. */
int op_recon_refit(const op_recon_moments *s, const double *W, int64_t out, const bool *keep, bool compensate,
                   double damp, double *Wnew, op_error *err);

/* tr(dW^T H dW): the squared output error of a weight change over the calibration rows. */
double op_recon_error(const op_recon_moments *s, const double *dW, int64_t out);

/* Targets other than x W: the cross moments C = [x 1]^T y ([n+1, out], row-major) with the outputs y
 * ([rows, out] float32) of the same rows, e.g. the dense model's block output while x comes from the
 * model pruned so far. */
void op_recon_cross_add(op_recon_moments *s, double *C, int64_t out, const float *x, const float *y, int64_t rows);
/* The best weights for target C: Wstar = (H + damp)^-1 (C + damp W), ridge towards W (channels only, the
 * bias is free when bias_free, else kept at W's). With C = H W it returns W. Returns 0, or -1 with *err. */
int op_recon_fit(const op_recon_moments *s, const double *C, const double *W, int64_t out, double damp,
                 bool bias_free, double *Wstar, op_error *err);
/* ||[x 1] W - y||^2 over the rows, from H, C and yy = sum of y^2. */
double op_recon_residual(const op_recon_moments *s, const double *C, double yy, const double *W, int64_t out);

/* ---- the sequential pass (sequential.c) ---- */

/* Whether op_prune runs the sequential pass: importance reconstruction, or compensation on. */
bool op_recon_wanted(const op_prune_config *c);
/* Every output projection of a block the plan prunes (any block when op_recon_alloc_applies) that has no bias gets a zero one (MatMul ->
 * MatMul + Add; Gemm's C), so compensation has a bias to move the mean into. Returns how many were
 * added (the model must then be analysed again), or -1 with *err. */
int op_recon_add_biases(op_model *m, const op_analysis *a, const op_prune_config *c, const op_plan *plan,
                        op_error *err);
/* Blocks in graph order: each one's output-projection input is collected on the calibration data with
 * the blocks before it already pruned (and compensated); with importance reconstruction its units are
 * ranked by OBS and the plan for it chosen again; its output projection is then refit (or its removed
 * rows zeroed) in place, so the model computes what the pruned one will. The errors go to the plan. */
int op_recon_run(op_analysis *a, const op_prune_config *c, op_plan *plan, op_error *err);

/* ---- output-head compensation (output_head.c; the refit in sequential.c) ---- */

/* A linear product whose output reaches a graph output through relayouts only (the classifier on the
 * pooled features). It is linear in its input, so refitting it by least squares to the dense model's
 * output on the calibration rows compensates what was pruned before it, as far as a linear map can. */
#define OP_OUTPUT_HEAD_MAX_WIDTH 4096 /* wider heads are vocabularies: refit cost for little gain */
typedef struct op_output_head {
  op_proj p;          /* p.node: the product (-1 when none was found) */
  const char *output; /* the graph output it produces */
  const char *skip;   /* why it is not refit, or NULL */
  double error_before, error_after; /* squared error against the dense output / its energy; -1: not refit */
} op_output_head;
/* The products that produce graph outputs, each with skip set when it must not be refit (a weight
 * shared with other nodes, as tied embeddings are; wider than OP_OUTPUT_HEAD_MAX_WIDTH; not a plain
 * linear product). Outputs that no product computes are left out. Returns the count; free(*heads). */
size_t op_output_heads_find(const op_analysis *a, op_output_head **heads);

/* ---- counts from error curves (recon_alloc.c; the curves from sequential.c) ---- */

/* One block for op_curve_allocate: err[k] is its predicted output error once k units are gone. */
typedef struct op_curve_block {
  int64_t n;         /* units */
  const double *err; /* [n + 1], err[0] = 0 */
  double unit_cost;  /* what removing one unit saves (FLOPs, parameters, or 1 to count units) */
  int64_t min_keep;  /* never fewer units kept */
  int layer, kind;   /* for the caller: kind 0 heads, 1 neurons */
  int64_t removed;   /* out */
} op_curve_block;
/* Removes units one at a time from the block whose next removal adds the least error per cost saved
 * among those that do not remove more than to_remove in all (any block when none fits), until
 * to_remove is reached or every block is at min_keep. Returns the cost removed. */
double op_curve_allocate(op_curve_block *b, size_t nb, double to_remove);
/* Whether the counts come from curves: importance reconstruction with --scope global or a target, on
 * a model without grouped-query or cross-attention (those keep the allocation of plan.c). */
bool op_recon_alloc_applies(const op_analysis *a, const op_prune_config *c);
/* With every block's curve scores in the plan (head_score / neuron_score: the predicted error once
 * that unit and the lower-scored ones are gone), sets every block's keep flags: the global fractions
 * of heads and of neurons, or the target's FLOPs / parameters, allocated by op_curve_allocate (every
 * block keeps one unit), then rounded to --multiple-of. */
void op_recon_alloc_apply(const op_analysis *a, const op_prune_config *c, op_plan *plan);

/* ---- pooled rows (pooled.c) ---- */

/* Where a model pools its final stream: a Gather of constant positions on a token axis. */
typedef struct op_pooling {
  bool found;
  int axis;      /* of the stream tensor */
  int64_t *idx;  /* positions (negative: from the end) */
  size_t n_idx;
} op_pooling;
/* Whether everything that reads `stream` (a block's residual sum) is position-wise (adds, products by
 * constants, LayerNorm decomposed or not) up to Gathers of the same constant token positions, and
 * nothing else: then only those positions of it reach the outputs. Fills *pl (op_pooling_free). */
bool op_pooling_find(const op_analysis *a, const char *stream, op_pooling *pl);
void op_pooling_free(op_pooling *pl);
/* Whether row r of a stream tensor (dims, rank; rows: every axis but the last) is at a pooled position. */
bool op_pooling_row(const op_pooling *pl, const int64_t *dims, int rank, int64_t r);
/* found[r]: whether row r of `rows` has the bytes of a row s of `set` with in_set[s]. Returns the hits. */
int64_t op_rows_in(const uint8_t *rows, int64_t n_rows, const uint8_t *set, const bool *in_set, int64_t n_set,
                   size_t row_bytes, bool *found);

#endif
