/* alloc_search.c - the allocation judged end to end (issue 12): a hill climb over per-block counts
 * (op_alloc_climb), each candidate pruned and compensated on copies of the model from the calibration
 * samples' fit part and judged by its graph outputs against the dense model's on their judge part. */
#include "prune/alloc_search.h"
#include "prune/recon.h"
#include "prune/target.h"
#include "exec/exec.h"
#include "verify/stream.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- the climb ---- */

void op_alloc_trials_free(op_alloc_trials *t) {
  for (size_t i = 0; i < t->n; i++) free(t->v[i].removed);
  free(t->v);
  memset(t, 0, sizeof *t);
}

typedef struct move {
  int from, to;
  double promise; /* predicted error added minus error given back: lower first */
  int64_t rank;   /* its place among the moves of its kind */
} move;

static int cmp_move(const void *x, const void *y) {
  const move *a = x, *b = y;
  if (a->rank != b->rank) return a->rank < b->rank ? -1 : 1;
  if (a->promise != b->promise) return a->promise < b->promise ? -1 : 1;
  if (a->from != b->from) return a->from - b->from;
  return a->to - b->to;
}

static bool seen(const op_alloc_trials *t, const int64_t *r, size_t nb) {
  for (size_t i = 0; i < t->n; i++)
    if (!memcmp(t->v[i].removed, r, nb * sizeof *r)) return true;
  return false;
}

/* The moves from allocation r, most promising first, the kinds in turn; returns how many (mv: nb * nb). */
static size_t moves_from(const op_move_block *b, size_t nb, const int64_t *r, move *mv) {
  size_t k = 0;
  for (size_t i = 0; i < nb; i++)
    for (size_t j = 0; j < nb; j++) {
      const op_move_block *x = &b[i], *y = &b[j];
      if (i == j || x->kind != y->kind || x->n - r[i] - x->step < x->min_keep || r[j] < y->step) continue;
      if ((double)x->step * x->unit_cost < (double)y->step * y->unit_cost * (1 - 1e-12)) continue; /* the total stays */
      double add = x->curve ? x->curve[r[i] + x->step] - x->curve[r[i]] : 0;
      double back = y->curve ? y->curve[r[j]] - y->curve[r[j] - y->step] : 0;
      mv[k++] = (move){(int)i, (int)j, add - back, 0};
    }
  /* the kinds take turns (the best head move, the best neuron move, the next head move, ...): the curves'
   * units do not compare across kinds, and a small budget should try both kinds of count */
  qsort(mv, k, sizeof *mv, cmp_move);
  int64_t seen_kind[2] = {0, 0};
  for (size_t m = 0; m < k; m++) mv[m].rank = seen_kind[b[mv[m].from].kind != 0]++;
  qsort(mv, k, sizeof *mv, cmp_move);
  return k;
}

static int score_trial(op_alloc_trials *t, const int64_t *r, size_t nb, int from, int to, op_alloc_eval_fn fn,
                       void *user, op_error *err) {
  op_alloc_trial tr = {op_xmalloc((nb ? nb : 1) * sizeof *r), 0, false, from, to};
  memcpy(tr.removed, r, nb * sizeof *r);
  if (fn(user, r, &tr.score, err)) {
    free(tr.removed);
    return -1;
  }
  OP_VEC_PUSH(*t, tr);
  return 0;
}

int op_alloc_climb(const op_move_block *b, size_t nb, int64_t budget, op_alloc_eval_fn fn, void *user,
                   op_alloc_trials *trials, size_t *best, op_error *err) {
  memset(trials, 0, sizeof *trials);
  *best = 0;
  int64_t *cur = op_xmalloc((nb ? nb : 1) * sizeof *cur), *next = op_xmalloc((nb ? nb : 1) * sizeof *next);
  move *mv = op_xmalloc((nb * nb + 1) * sizeof *mv);
  for (size_t i = 0; i < nb; i++) cur[i] = b[i].removed;
  int rc = score_trial(trials, cur, nb, -1, -1, fn, user, err);
  if (!rc) trials->v[0].accepted = true;
  int64_t used = 0;
  bool improved = !rc;
  while (improved && used < budget) {
    improved = false;
    size_t k = moves_from(b, nb, cur, mv);
    for (size_t m = 0; m < k && used < budget && !improved; m++) {
      memcpy(next, cur, nb * sizeof *cur);
      next[mv[m].from] += b[mv[m].from].step;
      next[mv[m].to] -= b[mv[m].to].step;
      if (seen(trials, next, nb)) continue;
      if ((rc = score_trial(trials, next, nb, mv[m].from, mv[m].to, fn, user, err))) break;
      used++;
      op_alloc_trial *t = &trials->v[trials->n - 1];
      if (t->score < trials->v[*best].score) {
        t->accepted = improved = true;
        *best = trials->n - 1;
        memcpy(cur, next, nb * sizeof *cur);
      }
    }
  }
  free(cur);
  free(next);
  free(mv);
  if (rc) op_alloc_trials_free(trials);
  return rc;
}

/* ---- judging a candidate's outputs against the dense model's ---- */

double op_output_error_score(const op_output_error *e, size_t n) {
  double s = 0;
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (e[i].ee > 0) s += e[i].se / e[i].ee, k++;
  return k ? s / (double)k : 0;
}

static bool float_value(const op_tensor *t, size_t i, double *v) {
  const uint8_t *p = t->data;
  switch (t->dtype) {
  case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: {
    float f;
    memcpy(&f, p + 4 * i, 4);
    *v = f;
    return true;
  }
  case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
    memcpy(v, p + 8 * i, 8);
    return true;
  case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
  case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16: {
    uint16_t h;
    memcpy(&h, p + 2 * i, 2);
    *v = t->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16 ? op_f16_to_f32(h) : op_bf16_to_f32(h);
    return true;
  }
  default:
    return false;
  }
}

typedef struct judge {
  op_session *dense;
  const op_dataset *d;
  int64_t next;
  op_output_error *e;
  size_t n_out;
} judge;

static int judge_batch(void *user, const op_tensor *outputs, int64_t count, op_error *err) {
  judge *j = user;
  size_t n_in = op_session_input_count(j->dense);
  op_tensor *in = op_xcalloc(n_in ? n_in : 1, sizeof *in), *y = op_xcalloc(j->n_out ? j->n_out : 1, sizeof *y);
  int rc = op_dataset_batch(j->d, j->dense, j->next, count, in, err);
  if (!rc) rc = op_session_run(j->dense, in, y, NULL, NULL, err);
  for (size_t o = 0; o < j->n_out && !rc; o++) {
    const op_tensor *a = &outputs[o], *b = &y[o];
    size_t es = op_dtype_size(b->dtype);
    if (a->dtype != b->dtype || a->nbytes != b->nbytes || !es) continue; /* not a float output of the same shape */
    for (size_t i = 0; i < b->nbytes / es; i++) {
      double u, v;
      if (!float_value(a, i, &u) || !float_value(b, i, &v)) break;
      j->e[o].se += (u - v) * (u - v);
      j->e[o].ee += v * v;
    }
  }
  for (size_t i = 0; i < n_in; i++) op_tensor_clear(&in[i]);
  for (size_t o = 0; o < j->n_out; o++) op_tensor_clear(&y[o]);
  free(in);
  free(y);
  j->next += count;
  return rc;
}

/* The judged error of cand against m on samples [first, first + n). */
static int judge_outputs(const op_model *m, const op_model *cand, const op_prune_config *c, int64_t first, int64_t n,
                         double *score, op_error *err) {
  judge j = {.d = c->data};
  op_session *s = op_session_new(cand, err);
  int rc = s ? 0 : -1;
  if (!rc && !(j.dense = op_session_new(m, err))) rc = -1;
  int64_t start = 0, total = rc ? -1 : op_sample_window(c->data, s, first, n, &start, err);
  if (total < 0) rc = -1;
  if (!rc) {
    j.n_out = op_session_output_count(j.dense);
    j.e = op_xcalloc(j.n_out ? j.n_out : 1, sizeof *j.e);
    j.next = start;
    rc = op_stream(s, c->data, start, total, c->batch, NULL, NULL, false, judge_batch, &j, false, NULL, err);
    *score = op_output_error_score(j.e, j.n_out);
  }
  free(j.e);
  op_session_free(j.dense);
  op_session_free(s);
  return rc;
}

/* ---- candidates on copies of the model ---- */

#define AUTO_MOVES 8        /* moves a search tries unless --alloc-steps says */
#define AUTO_SECONDS 120.0  /* ... and fewer when the first candidate says they would take longer */
/* the judge samples: the last quarter of the calibration samples in their order (spread over the file by
 * default), but at least JUDGE_WANT while half remain to fit (a judged error on a dozen samples is noise:
 * on digits_vit's 45 and 60 calibration samples, a quarter judging kept 2 + 2 heads where half chose 3 + 1) */
#define JUDGE_SHARE 4
#define JUDGE_WANT 32
#define JUDGE_MIN 8 /* fewer: no search */
#define NEURON_MOVES 16     /* a neuron move shifts 1/16 of the block's width (a multiple of --multiple-of) */
/* auto runs no search where one candidate (a whole sequential prune on the fit samples) is bound to take
 * longer than AUTO_SECONDS: blocks' parameters x fit samples past this (austen_bert's 192 fit samples are
 * 6e8; BERT-base's 85M parameters x 192 samples, 1.6e10, take tens of minutes per candidate on 2 cores).
 * A size rule, decided before any work and the same on every machine; the clock only cuts the moves */
#define AUTO_MAX_WORK 4e9

typedef struct search_ctx {
  const op_model *m;
  const op_prune_config *c;
  size_t n_layers, nb;
  const op_move_block *b;
  int64_t n_fit, n_judge;
  bool have_base;
  int64_t *base;
  double base_score;
  int judged; /* candidates judged so far (progress lines) */
} search_ctx;

static double now_s(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

/* Prunes a copy of m with the counts fixed (NULL: allocated from the curves), fit on the fit samples, and
 * judges it; *rep (when asked) gets the copy's report. */
static int candidate(search_ctx *x, const int64_t *fixed, double *score, op_prune_report **rep, op_error *err) {
  op_prune_config cc = *x->c; /* a shallow copy: counts, samples and the search itself differ */
  cc.alloc_steps = 0;
  cc.fixed_removed = fixed;
  cc.samples = x->n_fit;
  cc.progress = false;
  op_model *k = op_model_clone(x->m, err);
  op_prune_report *r = k ? op_prune(k, &cc, err) : NULL;
  int rc = r ? judge_outputs(x->m, k, x->c, x->n_fit, x->n_judge, score, err) : -1;
  if (!rc && x->c->progress && isatty(STDERR_FILENO)) /* candidates run without their own progress bars */
    fprintf(stderr, "allocation search: candidate %d judged, relative output error %.4g\n", ++x->judged, *score);
  if (rep && !rc) *rep = r;
  else op_prune_report_free(r);
  op_model_free(k);
  return rc;
}

static int eval_counts(void *user, const int64_t *removed, double *score, op_error *err) {
  search_ctx *x = user;
  if (x->have_base && !memcmp(removed, x->base, x->nb * sizeof *removed)) {
    *score = x->base_score;
    return 0;
  }
  int64_t *fixed = op_xcalloc(2 * x->n_layers + 1, sizeof *fixed);
  for (size_t i = 0; i < x->nb; i++) fixed[2 * x->b[i].layer + x->b[i].kind] = removed[i];
  int rc = candidate(x, fixed, score, NULL, err);
  free(fixed);
  return rc;
}

bool op_alloc_search_applies(const op_analysis *a, const op_prune_config *c) {
  return c->alloc_steps != 0 && !c->fixed_removed && c->data && op_recon_alloc_applies(a, c);
}

void op_alloc_search_free(op_alloc_search *s) {
  if (!s) return;
  free(s->layer);
  free(s->kind);
  free(s->fixed);
  op_alloc_trials_free(&s->trials);
  free(s);
}

/* The blocks of the curves' allocation, from the report of the first candidate. */
static size_t blocks_of(const op_analysis *a, const op_prune_config *c, const op_prune_report *r, op_move_block *b) {
  bool target = c->target_flops > 0 || c->target_params > 0, params = c->target_params > 0;
  size_t nb = 0;
  for (size_t i = 0; i < r->layers.n; i++) {
    const op_layer_result *L = &r->layers.v[i];
    op_unit_cost ca, cf;
    op_block_costs(a, L->layer, c->flops_seq, &ca, &cf);
    if (L->has_attn && !L->attn_removed && L->heads_before > 0) {
      int64_t step = op_head_step(op_layer_attn(a, L->layer), c->multiple_of);
      b[nb++] = (op_move_block){L->layer, 0, L->heads_before, L->heads_before - L->heads_after, step, step,
                                target ? (params ? ca.unit_params : ca.unit_flops) : 1, L->head_curve};
    }
    if (L->has_ffn && !L->ffn_removed && L->ffn_before > 0) {
      int64_t g = c->multiple_of > 1 ? c->multiple_of : 1;
      int64_t step = (int64_t)llround((double)L->ffn_before / NEURON_MOVES / (double)g) * g;
      if (step < g) step = g;
      b[nb++] = (op_move_block){L->layer, 1, L->ffn_before, L->ffn_before - L->ffn_after, step, g,
                                target ? (params ? cf.unit_params : cf.unit_flops) : 1, L->neuron_curve};
    }
  }
  return nb;
}

op_alloc_search *op_alloc_search_run(const op_model *m, const op_analysis *a, const op_prune_config *c,
                                     op_error *err) {
  op_alloc_search *s = op_xcalloc(1, sizeof *s);
  s->metric = "relative squared error of the graph outputs against the dense model's (sum (y - y_dense)^2 / "
              "sum y_dense^2, averaged over outputs)";
  double t0 = now_s();
  op_session *ss = op_session_new(m, err);
  int64_t total = ss ? op_dataset_samples(c->data, ss, err) : -1;
  op_session_free(ss);
  if (total < 0) {
    op_alloc_search_free(s);
    return NULL;
  }
  int64_t n = c->samples > 0 && c->samples < total ? c->samples : total;
  s->judge_samples = n / JUDGE_SHARE;
  if (s->judge_samples < JUDGE_WANT) s->judge_samples = n / 2 < JUDGE_WANT ? n / 2 : JUDGE_WANT;
  s->fit_samples = n - s->judge_samples;
  if (s->judge_samples < JUDGE_MIN) {
    snprintf(s->note, sizeof s->note, "skipped: %lld calibration samples leave fewer than %d to judge candidates on",
             (long long)n, JUDGE_MIN);
    return s;
  }
  double params = 0;
  for (size_t l = 0; l < a->layers.n; l++) {
    op_unit_cost ca, cf;
    op_block_costs(a, (int)l, c->flops_seq, &ca, &cf);
    params += op_cost_of(&ca, ca.units, true) + op_cost_of(&cf, cf.units, true);
  }
  if (c->alloc_steps < 0 && params * (double)s->fit_samples > AUTO_MAX_WORK) {
    snprintf(s->note, sizeof s->note, "skipped: %.3g block parameters x %lld fit samples is past what the automatic "
             "search runs (%.0e; each candidate is a whole prune): --alloc-steps N runs it", params,
             (long long)s->fit_samples, AUTO_MAX_WORK);
    return s;
  }
  search_ctx x = {.m = m, .c = c, .n_layers = a->layers.n, .n_fit = s->fit_samples, .n_judge = s->judge_samples};
  op_prune_report *r0 = NULL;
  double t_eval = now_s();
  if (candidate(&x, NULL, &x.base_score, &r0, err)) {
    op_alloc_search_free(s);
    return NULL;
  }
  t_eval = now_s() - t_eval;
  op_move_block *b = op_xcalloc(2 * r0->layers.n + 1, sizeof *b);
  size_t nb = blocks_of(a, c, r0, b);
  x.b = b, x.nb = nb;
  x.base = op_xmalloc((nb + 1) * sizeof *x.base);
  for (size_t i = 0; i < nb; i++) x.base[i] = b[i].removed;
  x.have_base = true;
  s->budget = c->alloc_steps;
  if (c->alloc_steps < 0) { /* auto: a few moves, fewer when one candidate is slow */
    s->budget = AUTO_MOVES;
    if (t_eval * AUTO_MOVES > AUTO_SECONDS) s->budget = (int64_t)(AUTO_SECONDS / t_eval);
  }
  int rc = op_alloc_climb(b, nb, s->budget, eval_counts, &x, &s->trials, &s->best, err);
  if (!rc) {
    s->ran = true;
    s->nb = nb;
    s->layer = op_xmalloc((nb + 1) * sizeof *s->layer);
    s->kind = op_xmalloc((nb + 1) * sizeof *s->kind);
    for (size_t i = 0; i < nb; i++) s->layer[i] = b[i].layer, s->kind[i] = b[i].kind;
    if (s->best != 0) {
      s->fixed = op_xcalloc(2 * a->layers.n + 1, sizeof *s->fixed);
      for (size_t i = 0; i < nb; i++) s->fixed[2 * b[i].layer + b[i].kind] = s->trials.v[s->best].removed[i];
    }
    int64_t tried = (int64_t)s->trials.n - 1;
    snprintf(s->note, sizeof s->note, "%lld of %lld moves tried%s (one candidate: %.1f s); %s", (long long)tried,
             (long long)s->budget,
             c->alloc_steps < 0 && s->budget < AUTO_MOVES ? ", the budget cut to keep the search near 2 minutes" : "",
             t_eval, s->best ? "the allocation changed" : "the curves' allocation kept");
  }
  s->seconds = now_s() - t0;
  op_prune_report_free(r0);
  free(b);
  free(x.base);
  if (rc) {
    op_alloc_search_free(s);
    return NULL;
  }
  return s;
}
