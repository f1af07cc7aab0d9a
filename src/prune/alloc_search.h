/* alloc_search.h - the allocation judged end to end (issue 12): the counts the error curves give each
 * block (recon_alloc.c) refined by local moves, one head or one group of neurons from one block to
 * another of the same kind, each kept only when the whole model, pruned and compensated for it on the
 * calibration samples' fit part, reproduces the dense model's outputs better on their judge part. */
#ifndef OP_ALLOC_SEARCH_H
#define OP_ALLOC_SEARCH_H

#include "prune/prune.h"

/* ---- the search over counts (pure: the evaluation is a callback) ---- */

typedef struct op_move_block {
  int layer, kind;     /* kind 0: heads, 1: FFN neurons; moves stay within a kind */
  int64_t n;           /* units */
  int64_t removed;     /* the starting allocation */
  int64_t step;        /* units one move shifts (a head, or a group of neurons) */
  int64_t min_keep;    /* a move never leaves fewer */
  double unit_cost;    /* what one unit saves (FLOPs, parameters, or 1 to count units) */
  const double *curve; /* [n + 1]: predicted error as units go (orders the moves), or NULL */
} op_move_block;

/* Scores an allocation (removed[i] units of block i): lower is better. Returns 0 or -1 with *err. */
typedef int (*op_alloc_eval_fn)(void *user, const int64_t *removed, double *score, op_error *err);

typedef struct op_alloc_trial {
  int64_t *removed; /* [nb] */
  double score;
  bool accepted;
  int from, to;     /* the move from the allocation accepted before it (block indices; -1: the start) */
} op_alloc_trial;
typedef OP_VEC(op_alloc_trial) op_alloc_trials;

/* First-improvement hill climb: scores the start, then moves of `step` units from a block i to a block
 * j of the same kind (i gives up units, j gets them back) that keep at least min_keep in i and remove at
 * least as much cost as before, most promising by the curves first (heads and neurons in turn), skipping
 * allocations already scored; the first that scores lower is accepted and the moves are made again from
 * it. Stops after `budget`
 * moves scored or when no move lowers the score. trials gets every allocation scored (free with
 * op_alloc_trials_free); best: the index of the accepted one. Returns 0 or -1 with *err. */
int op_alloc_climb(const op_move_block *b, size_t nb, int64_t budget, op_alloc_eval_fn fn, void *user,
                   op_alloc_trials *trials, size_t *best, op_error *err);
void op_alloc_trials_free(op_alloc_trials *t);

/* ---- end to end on a model (op_prune calls it) ---- */

/* What the search did, for the report (report/alloc_report.c). */
struct op_alloc_search {
  bool ran;
  char note[256];          /* what was done, or why the search was skipped */
  const char *metric;      /* how a candidate's outputs are judged against the dense model's */
  int64_t fit_samples, judge_samples, budget;
  double seconds;          /* the search's wall time */
  size_t nb;
  int *layer, *kind;       /* [nb] the blocks */
  op_alloc_trials trials;  /* trials.v[0]: the curves' allocation */
  size_t best;
  int64_t *fixed;          /* [2 * layers]: the counts to prune with (heads, neurons removed per layer), or
                            * NULL when the search kept the curves' allocation */
};
typedef struct op_alloc_search op_alloc_search;

/* Whether the search runs: importance reconstruction with curves (op_recon_alloc_applies), alloc_steps
 * not 0, no allocation fixed already. */
bool op_alloc_search_applies(const op_analysis *a, const op_prune_config *c);
/* Runs it on copies of m. Returns the record (op_alloc_search_free), or NULL with *err. */
op_alloc_search *op_alloc_search_run(const op_model *m, const op_analysis *a, const op_prune_config *c, op_error *err);
void op_alloc_search_free(op_alloc_search *s);

/* The report's allocation_search block and the printed summary's lines (report/alloc_report.c). */
struct cJSON;
struct sbuf;
void op_alloc_search_json(const op_alloc_search *s, struct cJSON *root);
void op_alloc_search_text(const op_alloc_search *s, struct sbuf *b);
/* The HTML report's section, from the JSON report's allocation_search (NULL: nothing). */
void op_alloc_search_html(const struct cJSON *as, struct sbuf *b);

/* The judged error of a candidate: over the graph outputs both models give in the same shape, the mean
 * over outputs of sum (y - y_dense)^2 / sum y_dense^2 on the judge samples. */
typedef struct op_output_error {
  double se, ee; /* sums of the squared difference and of the dense output's squares */
} op_output_error;
double op_output_error_score(const op_output_error *e, size_t n);

#endif
