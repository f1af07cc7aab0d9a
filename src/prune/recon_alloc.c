/* recon_alloc.c - counts across blocks from measured reconstruction-error curves: with importance
 * reconstruction, --scope global and --target-flops/--target-params take how many heads and neurons
 * each block loses from each block's predicted output error as it loses them (the OBS curve of a pass
 * over the dense model), not from scores normalised per block, which cannot compare blocks. */
#include "prune/recon.h"
#include "prune/target.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

double op_curve_allocate(op_curve_block *b, size_t nb, double to_remove) {
  double done = 0;
  for (size_t i = 0; i < nb; i++) b[i].removed = 0;
  while (done < to_remove) {
    /* the best unit that does not overshoot what is left to remove (a neuron where a head would), or,
     * when none fits, the best of all: the target is a ceiling on what is kept */
    size_t best = nb;
    double best_pri = 0;
    bool best_fits = false;
    for (size_t i = 0; i < nb; i++) {
      const op_curve_block *x = &b[i];
      if (x->n - x->removed <= x->min_keep || x->unit_cost <= 0) continue;
      double pri = (x->err[x->removed + 1] - x->err[x->removed]) / x->unit_cost; /* error per cost saved */
      bool fits = done + x->unit_cost <= to_remove;
      if (best == nb || (fits && !best_fits) || (fits == best_fits && pri < best_pri))
        best = i, best_pri = pri, best_fits = fits;
    }
    if (best == nb) break; /* every block is at its floor */
    b[best].removed++;
    done += b[best].unit_cost;
  }
  return done;
}

/* ---- from the plan's curve scores to its keep flags ---- */

static int cmp_double(const void *x, const void *y) {
  double a = *(const double *)x, b = *(const double *)y;
  return (a > b) - (a < b);
}

/* err[k]: the block's predicted error once its k lowest-scored units are gone (scores are that error). */
static double *curve_of(const double *score, int64_t n) {
  double *e = op_xmalloc((size_t)(n + 1) * sizeof *e);
  e[0] = 0;
  memcpy(e + 1, score, (size_t)n * sizeof *e);
  qsort(e + 1, (size_t)n, sizeof *e, cmp_double);
  return e;
}

/* Keeps all but the `removed` lowest-scored units (ties: the lower index goes first, as ranking does). */
static void keep_best(bool *keep, const double *score, int64_t n, int64_t removed) {
  for (int64_t u = 0; u < n; u++) keep[u] = true;
  for (int64_t r = 0; r < removed; r++) {
    int64_t lo = -1;
    for (int64_t u = 0; u < n; u++)
      if (keep[u] && (lo < 0 || score[u] < score[lo])) lo = u;
    if (lo >= 0) keep[lo] = false;
  }
}

bool op_recon_alloc_applies(const op_analysis *a, const op_prune_config *c) {
  if (c->importance != OP_IMP_RECONSTRUCTION || !(c->global || c->target_flops > 0 || c->target_params > 0))
    return false;
  for (size_t l = 0; l < a->layers.n; l++) { /* grouped and cross-attention keep their own allocation */
    const op_attn *at = op_layer_attn(a, (int)l);
    if ((at && at->kv_heads != at->heads) || op_layer_cross(a, (int)l)) return false;
  }
  return true;
}

void op_recon_alloc_apply(const op_analysis *a, const op_prune_config *c, op_plan *plan) {
  bool target = c->target_flops > 0 || c->target_params > 0, params = c->target_params > 0;
  op_curve_block *b = op_xcalloc(2 * plan->n + 1, sizeof *b);
  double **keepers = op_xcalloc(2 * plan->n + 1, sizeof *keepers); /* per block: its curve (to free) */
  size_t nb = 0;
  double total[2] = {0, 0}; /* target: [0] all; global: [0] heads, [1] neurons */
  int64_t units[2] = {0, 0};
  for (size_t l = 0; l < plan->n; l++) {
    op_layer_plan *lp = &plan->layers[l];
    if (lp->drop_layer) continue;
    op_unit_cost ca, cf;
    op_block_costs(a, (int)l, c->flops_seq, &ca, &cf);
    for (int kind = 0; kind < 2; kind++) {
      bool has = kind == 0 ? op_layer_attn(a, (int)l) && !lp->drop_attn : lp->keep_neuron && !lp->drop_ffn;
      if (!has) continue;
      const op_unit_cost *uc = kind == 0 ? &ca : &cf;
      int64_t n = kind == 0 ? lp->heads : lp->width;
      keepers[nb] = curve_of(kind == 0 ? lp->head_score : lp->neuron_score, n);
      b[nb] = (op_curve_block){.n = n, .err = keepers[nb], .min_keep = 1, .layer = (int)l, .kind = kind,
                               .unit_cost = target ? (params ? uc->unit_params : uc->unit_flops) : 1};
      if (target) total[0] += op_cost_of(uc, n, params);
      else units[kind] += n;
      nb++;
    }
  }
  if (c->fixed_removed) { /* the allocation search fixed the counts (alloc_search.c): they stay as they are */
    for (size_t i = 0; i < nb; i++) {
      int64_t r = c->fixed_removed[2 * b[i].layer + b[i].kind];
      b[i].removed = r < 0 ? 0 : r > b[i].n - 1 ? b[i].n - 1 : r;
    }
  } else if (target) {
    op_curve_allocate(b, nb, (1 - (params ? c->target_params : c->target_flops)) * total[0]);
  } else { /* global: heads and neurons each lose their fraction of all, allocated among their blocks */
    double frac[2] = {c->head_sparsity >= 0 ? c->head_sparsity : c->width >= 0 ? 1 - c->width : 0,
                      c->ffn_sparsity >= 0 ? c->ffn_sparsity : c->width >= 0 ? 1 - c->width : 0};
    for (int kind = 0; kind < 2; kind++) {
      op_curve_block *sub = op_xcalloc(nb + 1, sizeof *sub);
      size_t ns = 0;
      for (size_t i = 0; i < nb; i++)
        if (b[i].kind == kind) sub[ns++] = b[i];
      op_curve_allocate(sub, ns, (double)llround(frac[kind] * (double)units[kind]));
      for (size_t i = 0, j = 0; i < nb; i++)
        if (b[i].kind == kind) b[i].removed = sub[j++].removed;
      free(sub);
    }
  }
  for (size_t i = 0; i < nb; i++) {
    op_layer_plan *lp = &plan->layers[b[i].layer];
    const double *score = b[i].kind == 0 ? lp->head_score : lp->neuron_score;
    bool *keep = b[i].kind == 0 ? lp->keep_head : lp->keep_neuron;
    keep_best(keep, score, b[i].n, b[i].removed);
    int64_t mult = c->fixed_removed ? 1 : c->multiple_of; /* fixed counts were rounded when first allocated */
    if (b[i].kind == 0) mult = op_head_step(op_layer_attn(a, b[i].layer), mult); /* heads x head size a multiple */
    if (mult > 1) op_round_kept(keep, score, b[i].n, mult);
    double **curve = b[i].kind == 0 ? &lp->head_curve : &lp->neuron_curve; /* kept for the allocation search */
    free(*curve);
    *curve = c->fixed_removed ? NULL : keepers[i];
    if (c->fixed_removed) free(keepers[i]);
  }
  free(keepers);
  free(b);
}
