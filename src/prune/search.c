/* search.c - the accuracy floor (issue 12): bisection on the target fraction kept, each candidate pruned
 * (and quantised, for compress) from a copy of the model and judged against it with verify's figures on
 * evaluation rows that follow the calibration rows in the data's sample order; the smallest candidate
 * that passes is kept, and every candidate is a point of the curve. */
#include "prune/prune.h"
#include "quant/quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void floor_text(const op_prune_config *c, char *buf, size_t n) {
  size_t off = 0;
#define ADD(...) off += (size_t)snprintf(buf + off, off < n ? n - off : 0, __VA_ARGS__)
  if (c->max_drop >= 0) ADD("%saccuracy at most %g points below the reference", off ? ", " : "", c->max_drop);
  if (c->min_agreement >= 0) ADD("%stop-1 agreement >= %g", off ? ", " : "", c->min_agreement);
  if (c->min_cosine >= -1) ADD("%smean cosine >= %g", off ? ", " : "", c->min_cosine);
  if (c->max_ppl_increase >= 0) ADD("%sperplexity at most %g%% above the reference", off ? ", " : "", c->max_ppl_increase);
#undef ADD
}

static bool passes(const op_prune_config *c, const op_search_point *p) {
  bool ok = true;
  if (c->max_drop >= 0) ok &= 100 * (p->ref_accuracy - p->accuracy) <= c->max_drop + 1e-9;
  if (c->min_agreement >= 0) ok &= p->agreement >= c->min_agreement;
  if (c->min_cosine >= -1) ok &= p->cosine >= c->min_cosine;
  if (c->max_ppl_increase >= 0) ok &= p->ppl <= p->ref_ppl * (1 + c->max_ppl_increase / 100) * (1 + 1e-12);
  return ok;
}

/* A floor needs the figure it judges: task accuracy needs class labels, perplexity next-token labels. */
static int check_figures(const op_prune_config *c, const op_search_point *p, const char *data, op_error *err) {
  if (c->max_drop >= 0 && p->ref_accuracy < 0)
    return op_fail(err, OP_ARG,
                   "%s: max_drop: the data has no class labels ('labels', one per row) for a [samples, classes] output; "
                   "judge by min_agreement or min_cosine instead",
                   data);
  if (c->max_ppl_increase >= 0 && p->ref_ppl < 0)
    return op_fail(err, OP_ARG,
                   "%s: max_ppl_increase: no [samples, seq, vocab] output with next-token 'labels' [rows, seq] in the data",
                   data);
  return 0;
}

typedef struct candidate {
  op_model *m;
  op_prune_report *r;
  op_quant_report *q;
} candidate;

static void candidate_free(candidate *k) {
  op_model_free(k->m);
  op_prune_report_free(k->r);
  op_quant_report_free(k->q);
  memset(k, 0, sizeof *k);
}

/* Prunes (and quantises) a copy of m to target t and judges it on the evaluation rows. */
static int try_target(const op_model *m, const op_prune_config *c, const op_quant_config *q, double t, bool params,
                      int64_t eval_first, int64_t eval_n, candidate *k, op_search_point *p, op_error *err) {
  op_prune_config cc = *c; /* a shallow copy: only the target differs */
  cc.target_flops = params ? -1 : t;
  cc.target_params = params ? t : -1;
  /* the floor judges every candidate end to end already: the allocation search (alloc_search.c) would
   * multiply each candidate's cost, so it runs inside them only when asked for (alloc_steps N) */
  if (cc.alloc_steps < 0) cc.alloc_steps = 0;
  memset(k, 0, sizeof *k);
  k->m = op_model_clone(m, err);
  k->r = k->m ? op_prune(k->m, &cc, err) : NULL;
  if (k->r && q) k->q = op_quantize(k->m, c->data, q, err);
  op_verify_report *v = k->r && (!q || k->q)
                            ? op_verify(m, k->m, c->data,
                                        &(op_run_options){.batch = c->batch, .first = eval_first, .samples = eval_n},
                                        err)
                            : NULL;
  if (!v) {
    candidate_free(k);
    return -1;
  }
  *p = (op_search_point){.target = t,
                         .flops_kept = k->r->flops_before > 0 ? k->r->flops_after / k->r->flops_before : 1,
                         .params_kept = k->r->block_params_before > 0 ? k->r->block_params_after / k->r->block_params_before : 1,
                         .accuracy = op_verify_candidate_accuracy(v),
                         .ref_accuracy = op_verify_reference_accuracy(v),
                         .agreement = op_verify_min_agreement(v),
                         .cosine = op_verify_min_cosine(v),
                         .ppl = op_verify_perplexity(v, true),
                         .ref_ppl = op_verify_perplexity(v, false)};
  op_verify_report_free(v);
  p->pass = passes(c, p);
  return 0;
}

/* The first sample the evaluation rows may take: after every calibration row of the prune and the quantise
 * steps (and the rows quantize's own search scores on). */
static int64_t calibration_span(const op_prune_config *c, const op_quant_config *q) {
  /* every use of calibration rows takes the first c->samples in the data's order: activation or
   * reconstruction importance, and compensation (on whenever data is given) */
  bool calibrates = c->importance == OP_IMP_ACTIVATION || c->importance == OP_IMP_RECONSTRUCTION || c->compensate == 1;
  int64_t span = calibrates ? c->samples : 0;
  if (q) {
    int64_t calib = q->calib_samples;
    for (int b = 0; b < q->n_batches; b++) calib = q->batches[b] * q->batch > calib ? q->batches[b] * q->batch : calib;
    if (q->n_methods > 1 || q->n_batches > 1) calib += q->eval_samples ? q->eval_samples : 256;
    span = calib > span ? calib : span;
  }
  return span;
}

static int cmp_target(const void *x, const void *y) {
  double a = ((const op_search_point *)x)->target, b = ((const op_search_point *)y)->target;
  return (a > b) - (a < b);
}

op_prune_report *op_prune_search(const op_model *m, const op_prune_config *c, const op_quant_config *q, op_model **best,
                                 op_quant_report **qbest, op_error *err) {
  *best = NULL;
  if (qbest) *qbest = NULL;
  if (!op_prune_config_has_floor(c))
    return op_fail_null(err, OP_ARG, "a search needs a floor: max_drop, min_agreement, min_cosine or max_ppl_increase");
  if (!c->data) return op_fail_null(err, OP_ARG, "%s: a search needs data to judge the candidates on", m->path);
  if (op_prune_config_check(c, err)) return NULL;
  op_session *s = op_session_new(m, err);
  int64_t total = s ? op_dataset_samples(c->data, s, err) : -1;
  op_session_free(s);
  if (total < 0) return NULL;
  int64_t eval_first = calibration_span(c, q), eval_n = c->eval_samples;
  if (eval_first >= total)
    return op_fail_null(err, OP_ARG,
                        "the data holds %lld samples: none is left to judge the candidates after the %lld calibration "
                        "samples; give fewer samples or more data",
                        (long long)total, (long long)eval_first);
  if (eval_first + eval_n > total) eval_n = total - eval_first;
  bool params = c->target_params > 0;
  double lo = params ? c->target_params : c->target_flops, hi = 1;
  bool given = lo > 0;
  if (!given) lo = 0;
  bool tell = c->progress && isatty(STDERR_FILENO);
  OP_VEC(op_search_point) curve = {0};
  candidate kept = {0}, last = {0};
  int rc = 0;
  for (int64_t step = 0; step < c->search_steps + (given ? 1 : 0) && !rc; step++) {
    double t = given && step == 0 ? lo : (lo + hi) / 2;
    if (tell) fprintf(stderr, "candidate %lld: %s kept %.4f\n", (long long)step + 1, params ? "parameters" : "FLOPs", t);
    candidate k;
    op_search_point p;
    if ((rc = try_target(m, c, q, t, params, eval_first, eval_n, &k, &p, err))) break;
    if (step == 0 && (rc = check_figures(c, &p, op_dataset_path_of(c->data), err))) {
      candidate_free(&k);
      break;
    }
    OP_VEC_PUSH(curve, p);
    if (p.pass) {
      candidate_free(&kept);
      kept = k;
      hi = t;
      if (given && step == 0) break; /* the least fraction asked already passes */
    } else { /* only its report is kept (the curve's carrier if nothing passes): memory holds one model more */
      candidate_free(&last);
      op_model_free(k.m);
      op_quant_report_free(k.q);
      k.m = NULL, k.q = NULL;
      last = k;
      lo = t;
    }
  }
  if (rc) {
    candidate_free(&kept);
    candidate_free(&last);
    free(curve.v);
    return NULL;
  }
  qsort(curve.v, curve.n, sizeof *curve.v, cmp_target);
  candidate *out = kept.r ? &kept : &last;
  op_prune_report *r = out->r;
  r->searched = true;
  r->curve.v = curve.v, r->curve.n = curve.n, r->curve.cap = curve.cap;
  floor_text(c, r->floor_text, sizeof r->floor_text);
  const op_search_point *p0 = &r->curve.v[0];
  if (c->max_drop >= 0) r->floor_metric = "accuracy", r->floor_threshold = p0->ref_accuracy - c->max_drop / 100;
  else if (c->max_ppl_increase >= 0) r->floor_metric = "perplexity", r->floor_threshold = p0->ref_ppl * (1 + c->max_ppl_increase / 100);
  else if (c->min_agreement >= 0) r->floor_metric = "agreement", r->floor_threshold = c->min_agreement;
  else r->floor_metric = "cosine", r->floor_threshold = c->min_cosine;
  op_row_set_capture(&r->eval_rows, c->data, eval_first, eval_n);
  if (kept.r) {
    *best = kept.m;
    if (qbest) *qbest = kept.q;
    else op_quant_report_free(kept.q);
    candidate_free(&last);
  } else {
    op_model_free(last.m);
    op_quant_report_free(last.q);
  }
  return r;
}

bool op_prune_report_passed(const op_prune_report *r) {
  if (!r->searched) return true;
  for (size_t i = 0; i < r->curve.n; i++)
    if (r->curve.v[i].pass) return true;
  return false;
}
