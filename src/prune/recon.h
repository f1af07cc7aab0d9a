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
  uint64_t budgeted; /* memory budget: bytes of H taken from the running total (op_recon_moments_budget) */
} op_recon_moments;

void op_recon_moments_init(op_recon_moments *s, int64_t n);
void op_recon_moments_free(op_recon_moments *s);
/* Memory budget (issue 10): takes H's bytes from the running total until op_recon_moments_free; 0, or -1 and
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
void op_recon_cross_add(double *C, int64_t n, int64_t out, const float *x, const float *y, int64_t rows);
/* The best weights for target C: Wstar = (H + damp)^-1 (C + damp W), ridge towards W (channels only, the
 * bias is free when bias_free, else kept at W's). With C = H W it returns W. Returns 0, or -1 with *err. */
int op_recon_fit(const op_recon_moments *s, const double *C, const double *W, int64_t out, double damp,
                 bool bias_free, double *Wstar, op_error *err);
/* ||[x 1] W - y||^2 over the rows, from H, C and yy = sum of y^2. */
double op_recon_residual(const op_recon_moments *s, const double *C, double yy, const double *W, int64_t out);

/* ---- the sequential pass (sequential.c) ---- */

/* Whether op_prune runs the sequential pass: importance reconstruction, or compensation on. */
bool op_recon_wanted(const op_prune_config *c);
/* Every output projection of a block the plan prunes that has no bias gets a zero one (MatMul ->
 * MatMul + Add; Gemm's C), so compensation has a bias to move the mean into. Returns how many were
 * added (the model must then be analysed again), or -1 with *err. */
int op_recon_add_biases(op_model *m, const op_analysis *a, const op_plan *plan, op_error *err);
/* Blocks in graph order: each one's output-projection input is collected on the calibration data with
 * the blocks before it already pruned (and compensated); with importance reconstruction its units are
 * ranked by OBS and the plan for it chosen again; its output projection is then refit (or its removed
 * rows zeroed) in place, so the model computes what the pruned one will. The errors go to the plan. */
int op_recon_run(op_analysis *a, const op_prune_config *c, op_plan *plan, op_error *err);

#endif
