/* target.c - a target instead of ratios (issue 12): the FLOPs per token and parameters of the attention
 * and FFN blocks, what one head or neuron of each costs, and the allocation of removals across layers
 * and between heads and FFN neurons that reaches a fraction kept; rounding of kept widths to a multiple. */
#include "prune/target.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* FLOPs are 2 per multiply-add, per token, at sequence length seq (scores and context grow with it). */
void op_block_costs(const op_analysis *a, int layer, int64_t seq, op_unit_cost *attn, op_unit_cost *ffn) {
  memset(attn, 0, sizeof *attn);
  memset(ffn, 0, sizeof *ffn);
  const op_attn *at = op_layer_attn(a, layer);
  const op_ffn *f = op_layer_ffn(a, layer);
  if (at) {
    double E = (double)at->qkv[0].in, d = (double)at->head_dim, Eo = (double)at->out.out;
    bool grouped = at->kv_heads != at->heads, qb = at->qkv[0].b != NULL, kvb = at->qkv[at->packed ? 0 : 1].b != NULL;
    double qkv_cols = E * d; /* one head's columns of one of q, k, v */
    attn->unit_flops = 2 * qkv_cols + 2 * d * Eo + 4 * d * (double)seq; /* q, output rows, scores and context */
    attn->unit_params = qkv_cols + (qb ? d : 0) + d * Eo;
    double kv_flops = 4 * qkv_cols, kv_params = 2 * (qkv_cols + (kvb ? d : 0));
    if (grouped) { /* k and v belong to the kv groups, which head removal within groups does not shrink */
      attn->fixed_flops = kv_flops * (double)at->kv_heads;
      attn->fixed_params = kv_params * (double)at->kv_heads;
    } else {
      attn->unit_flops += kv_flops;
      attn->unit_params += kv_params;
    }
    attn->fixed_params += at->out.b ? Eo : 0;
    attn->units = at->heads;
  }
  if (f) {
    double E = (double)f->up[0].in, Eo = (double)f->down.out;
    ffn->unit_flops = 2 * ((double)f->n_up * E + Eo);
    ffn->unit_params = (double)f->n_up * E + Eo;
    for (int u = 0; u < f->n_up; u++) ffn->unit_params += f->up[u].b ? 1 : 0;
    ffn->fixed_params = f->down.b ? Eo : 0;
    ffn->units = f->down.in;
  }
}

double op_cost_of(const op_unit_cost *c, int64_t kept, bool params) {
  if (kept <= 0) return 0;
  return (double)kept * (params ? c->unit_params : c->unit_flops) + (params ? c->fixed_params : c->fixed_flops);
}

/* ---- allocation ---- */

typedef struct ranked {
  size_t block;
  int64_t unit;
  double priority; /* normalised score lost per unit of cost saved: lowest goes first */
} ranked;

static int cmp_ranked(const void *x, const void *y) {
  const ranked *a = x, *b = y;
  if (a->priority != b->priority) return a->priority < b->priority ? -1 : 1;
  if (a->block != b->block) return a->block < b->block ? -1 : 1;
  return (a->unit > b->unit) - (a->unit < b->unit);
}

static int64_t kept_count(const bool *keep, int64_t n) {
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++) k += keep[i];
  return k;
}

double op_allocate_removals(op_alloc_block *b, size_t nb, double to_remove) {
  size_t total = 0;
  for (size_t i = 0; i < nb; i++) total += (size_t)b[i].n;
  ranked *r = op_xmalloc((total ? total : 1) * sizeof *r);
  size_t k = 0;
  for (size_t i = 0; i < nb; i++) {
    double sum = 0;
    for (int64_t u = 0; u < b[i].n; u++) sum += b[i].score[u] > 0 ? b[i].score[u] : 0;
    for (int64_t u = 0; u < b[i].n; u++) {
      double share = sum > 0 ? (b[i].score[u] > 0 ? b[i].score[u] : 0) / sum : 1.0 / (double)b[i].n;
      r[k++] = (ranked){i, u, b[i].unit_cost > 0 ? share / b[i].unit_cost : INFINITY};
      b[i].keep[u] = true;
    }
  }
  qsort(r, total, sizeof *r, cmp_ranked);
  double removed = 0;
  /* first pass: every block keeps at least one unit; second: only if the target still demands it */
  for (int pass = 0; pass < 2 && removed < to_remove; pass++)
    for (size_t j = 0; j < total && removed < to_remove; j++) {
      op_alloc_block *blk = &b[r[j].block];
      if (!blk->keep[r[j].unit]) continue;
      if (pass == 0 && kept_count(blk->keep, blk->n) <= 1) continue;
      blk->keep[r[j].unit] = false;
      removed += blk->unit_cost + (kept_count(blk->keep, blk->n) == 0 ? blk->fixed_cost : 0);
    }
  free(r);
  for (size_t i = 0; i < nb; i++)
    if (b[i].multiple > 1) op_round_kept(b[i].keep, b[i].score, b[i].n, b[i].multiple);
  double left = 0;
  for (size_t i = 0; i < nb; i++) {
    int64_t kept = kept_count(b[i].keep, b[i].n);
    left += (double)(b[i].n - kept) * b[i].unit_cost + (kept == 0 ? b[i].fixed_cost : 0);
  }
  return left;
}

/* order of units by score, highest first (ties: lower index first) */
static const double *round_score;
static int cmp_desc(const void *x, const void *y) {
  int64_t i = *(const int64_t *)x, j = *(const int64_t *)y;
  double a = round_score[i], b = round_score[j];
  if (a != b) return a > b ? -1 : 1;
  return (i > j) - (i < j);
}

void op_round_kept(bool *keep, const double *score, int64_t n, int64_t multiple) {
  int64_t kept = kept_count(keep, n);
  if (multiple <= 1 || kept == 0 || n < multiple || kept % multiple == 0) return;
  int64_t want = (kept + multiple / 2) / multiple * multiple; /* nearest multiple, ties up */
  if (want < multiple) want = multiple;
  if (want > n) want = n / multiple * multiple;
  int64_t *idx = op_xmalloc((size_t)n * sizeof *idx);
  for (int64_t i = 0; i < n; i++) idx[i] = i;
  /* kept units first, then by score: removing keeps the best kept, adding brings back the best removed */
  round_score = score;
  int64_t nk = 0;
  for (int64_t i = 0; i < n; i++)
    if (keep[i]) idx[nk++] = i;
  int64_t nr = nk;
  for (int64_t i = 0; i < n; i++)
    if (!keep[i]) idx[nr++] = i;
  qsort(idx, (size_t)nk, sizeof *idx, cmp_desc);
  qsort(idx + nk, (size_t)(n - nk), sizeof *idx, cmp_desc);
  for (int64_t i = 0; i < n; i++) keep[idx[i]] = i < want;
  free(idx);
}
