/* calib.c - calibration statistics and methods (see calib.h). The histogram methods follow the
 * usual definitions: hist takes a percentile of |x|; mse and emd pick the clipping threshold that
 * minimises the mean squared / absolute quantisation error of the histogram; kl is TensorRT's
 * entropy calibration (2048 bins, reference distribution with outliers folded into the last bin,
 * 128-level quantised candidate, minimum KL divergence). */
#include "quant/calib.h"
#include "exec/fastmath.h"
#include "parallel/parallel.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *op_cal_method_name(op_cal_method m) {
  switch (m) {
#define OP_CAL_STR(name, str) \
  case OP_CAL_##name:         \
    return str;
    OP_CAL_METHODS(OP_CAL_STR)
#undef OP_CAL_STR
    default:
      return "?";
  }
}

int op_cal_method_parse(const char *name) {
  for (int m = 0; m < OP_CAL_COUNT; m++)
    if (strcmp(name, op_cal_method_name((op_cal_method)m)) == 0) return m;
  return -1;
}

void op_stats_init(op_stats *s) {
  memset(s, 0, sizeof *s);
  s->min = INFINITY;
  s->max = -INFINITY;
}

void op_stats_free(op_stats *s) {
  free(s->chan_sum);
  s->chan_sum = NULL;
  free(s->fine);
  s->fine = NULL;
}

/* ---- a batch's range and histogram: vectorised loops over chunks that run on several threads (the
 * executor waits while the observer measures; on BERT-base this was 10% of a calibration run on one
 * thread). min, max and integer bin counts do not depend on the split. ---- */

#define OBS_LANES 16
#define OBS_CHUNKS 16 /* at most; the chunks a batch is split into, each one thread's */

/* min and max of the finite values of x[0, n) (lo > hi when there is none); true when every value is
 * finite. Activations skip what is not finite; a weight holding any is refused. */
OP_VECTOR_CLONES static bool finite_range(const float *x, int64_t n, float *lo, float *hi) {
  float mn[OBS_LANES], mx[OBS_LANES];
  int bad[OBS_LANES];
  for (int l = 0; l < OBS_LANES; l++) mn[l] = INFINITY, mx[l] = -INFINITY, bad[l] = 0;
  int64_t i = 0;
  for (; i + OBS_LANES <= n; i += OBS_LANES)
    for (int l = 0; l < OBS_LANES; l++) {
      float v = x[i + l];
      bool f = fabsf(v) <= FLT_MAX;
      mn[l] = f && v < mn[l] ? v : mn[l];
      mx[l] = f && v > mx[l] ? v : mx[l];
      bad[l] |= !f;
    }
  for (int l = 0; i < n; i++, l++) {
    float v = x[i];
    bool f = fabsf(v) <= FLT_MAX;
    mn[l] = f && v < mn[l] ? v : mn[l];
    mx[l] = f && v > mx[l] ? v : mx[l];
    bad[l] |= !f;
  }
  float a = INFINITY, b = -INFINITY;
  int any = 0;
  for (int l = 0; l < OBS_LANES; l++) a = mn[l] < a ? mn[l] : a, b = mx[l] > b ? mx[l] : b, any |= bad[l];
  *lo = a, *hi = b;
  return !any;
}

bool op_finite_range(const float *x, int64_t n, float *lo, float *hi) { return finite_range(x, n, lo, hi); }

/* counts of |x| in `bins` bins of width 1 / scale from 0 (the last one takes what lies beyond) */
static void bin_counts(const float *x, int64_t n, double scale, int bins, uint64_t *h) {
  for (int64_t i = 0; i < n; i++) {
    double v = fabs((double)x[i]);
    if (!(v <= DBL_MAX)) continue; /* NaN, infinity */
    int64_t b = (int64_t)(v * scale);
    h[b >= bins ? bins - 1 : b] += 1;
  }
}

typedef struct obs_job {
  const float *x;
  int64_t n, chunks;
  float lo[OBS_CHUNKS], hi[OBS_CHUNKS];
  double scale; /* histogram pass: set, with bins and counts (chunks x bins) */
  int bins;
  uint64_t *counts;
} obs_job;

static void obs_chunks(void *ctx, int64_t lo, int64_t hi) {
  obs_job *j = ctx;
  for (int64_t k = lo; k < hi; k++) {
    int64_t a = j->n * k / j->chunks, b = j->n * (k + 1) / j->chunks;
    if (j->counts) bin_counts(j->x + a, b - a, j->scale, j->bins, j->counts + k * j->bins);
    else finite_range(j->x + a, b - a, &j->lo[k], &j->hi[k]);
  }
}

/* one chunk per OP_PARALLEL_GRAIN of input, at most one per thread */
static int64_t obs_chunk_count(int64_t n) {
  int64_t t = op_thread_count(), c = n * (int64_t)sizeof(float) / OP_PARALLEL_GRAIN;
  if (t > OBS_CHUNKS) t = OBS_CHUNKS;
  return c < 1 ? 1 : c < t ? c : t;
}

void op_stats_range(op_stats *s, const float *x, int64_t n, int64_t channels) {
  obs_job j = {.x = x, .n = n, .chunks = obs_chunk_count(n)};
  op_parallel_for(j.chunks, n / j.chunks * (int64_t)sizeof(float), obs_chunks, &j);
  double lo = INFINITY, hi = -INFINITY;
  for (int64_t k = 0; k < j.chunks; k++) lo = j.lo[k] < lo ? j.lo[k] : lo, hi = j.hi[k] > hi ? j.hi[k] : hi;
  s->thr_valid = false;
  if (lo > hi) return; /* nothing finite */
  s->min = lo < s->min ? lo : s->min;
  s->max = hi > s->max ? hi : s->max;
  double am = fmax(fabs(lo), fabs(hi));
  s->absmax = fmax(s->absmax, am);
  s->absmax_sum += am;
  s->batches++;
  s->count += n;
  if (channels > 0 && n % channels == 0 && (s->channels == 0 || s->channels == channels)) {
    if (!s->chan_sum) s->chan_sum = calloc((size_t)channels, sizeof(double));
    if (s->chan_sum) {
      s->channels = channels;
      for (int64_t r = 0; r < n / channels; r++) /* row by row: no division per element */
        for (int64_t c = 0; c < channels; c++) s->chan_sum[c] += x[r * channels + c];
      s->chan_rows += n / channels;
    }
  }
}

void op_stats_hist(op_stats *s, const float *x, int64_t n) {
  s->thr_valid = false;
  s->hist_max = s->absmax;
  if (s->hist_max <= 0) return;
  double scale = OP_HIST_BINS / s->hist_max;
  for (int64_t i = 0; i < n; i++) {
    double v = fabs((double)x[i]);
    if (!isfinite(v)) continue;
    int64_t b = (int64_t)(v * scale);
    s->hist[b >= OP_HIST_BINS ? OP_HIST_BINS - 1 : b] += 1;
  }
}

/* ---- one pass: range and histogram together ----
 * The histogram's range cannot be the final |x| maximum before every batch is seen, so it is kept
 * finer (OP_FINE_BINS over [0, fine_max]) with fine_max doubling whenever a batch goes beyond it:
 * each doubling merges pairs of bins, exactly, since their edges align. op_stats_finish then gives
 * each fine bin to the OP_HIST_BINS bin over [0, absmax] that holds its centre, so a value moves by at
 * most half a fine bin (an eighth of a final bin at worst, after the last doubling). */

void op_stats_observe(op_stats *s, const float *x, int64_t n, int64_t channels) {
  op_stats_range(s, x, n, channels);
  if (s->absmax <= 0) return;
  if (!s->fine) {
    s->fine = calloc(OP_FINE_BINS, sizeof *s->fine);
    if (!s->fine) abort();
    s->fine_max = s->absmax;
  }
  while (s->absmax > s->fine_max) {
    for (int j = 0; j < OP_FINE_BINS / 2; j++) s->fine[j] = s->fine[2 * j] + s->fine[2 * j + 1];
    memset(s->fine + OP_FINE_BINS / 2, 0, OP_FINE_BINS / 2 * sizeof *s->fine);
    s->fine_max *= 2;
  }
  obs_job j = {.x = x, .n = n, .chunks = obs_chunk_count(n), .scale = OP_FINE_BINS / s->fine_max, .bins = OP_FINE_BINS};
  if (j.chunks == 1) { /* small: straight into the histogram, no counts to clear and merge */
    double scale = j.scale;
    for (int64_t i = 0; i < n; i++) {
      double v = fabs((double)x[i]);
      if (!(v <= DBL_MAX)) continue; /* NaN, infinity */
      int64_t b = (int64_t)(v * scale);
      s->fine[b >= OP_FINE_BINS ? OP_FINE_BINS - 1 : b] += 1;
    }
    return;
  }
  j.counts = calloc((size_t)(j.chunks * OP_FINE_BINS), sizeof *j.counts);
  if (!j.counts) abort();
  op_parallel_for(j.chunks, n / j.chunks * (int64_t)sizeof(float), obs_chunks, &j);
  for (int64_t k = 0; k < j.chunks; k++)
    for (int b = 0; b < OP_FINE_BINS; b++) s->fine[b] += (double)j.counts[k * OP_FINE_BINS + b];
  free(j.counts);
}

void op_stats_finish(op_stats *s) {
  s->thr_valid = false;
  memset(s->hist, 0, sizeof s->hist);
  s->hist_max = s->absmax;
  if (!s->fine || s->absmax <= 0) return;
  double fw = s->fine_max / OP_FINE_BINS, scale = OP_HIST_BINS / s->absmax;
  for (int f = 0; f < OP_FINE_BINS; f++) {
    if (s->fine[f] == 0) continue;
    int64_t b = (int64_t)((f + 0.5) * fw * scale);
    s->hist[b >= OP_HIST_BINS ? OP_HIST_BINS - 1 : b] += s->fine[f];
  }
}

static double total_mass(const double *h, int n) {
  double t = 0;
  for (int i = 0; i < n; i++) t += h[i];
  return t;
}

static double percentile_threshold(const op_stats *s, double pct) {
  double total = total_mass(s->hist, OP_HIST_BINS), want = total * pct / 100.0, acc = 0, w = s->hist_max / OP_HIST_BINS;
  for (int i = 0; i < OP_HIST_BINS; i++) {
    acc += s->hist[i];
    if (acc >= want) return (i + 1) * w;
  }
  return s->hist_max;
}

/* Quantise-dequantise of a magnitude v with threshold T to `levels` steps. */
static double qdq(double v, double T, int levels) {
  double q = nearbyint(v / T * levels);
  if (q > levels) q = levels;
  return q * T / levels;
}

/* The histogram error of threshold T: sum of |center - qdq(center)|^p weighted by bin mass. */
static double hist_error(const op_stats *s, double T, int levels, int p) {
  double w = s->hist_max / OP_HIST_BINS, e = 0;
  for (int b = 0; b < OP_HIST_BINS; b++) {
    if (s->hist[b] == 0) continue;
    double c = (b + 0.5) * w, d = fabs(c - qdq(c, T, levels));
    e += s->hist[b] * (p == 2 ? d * d : d);
  }
  return e;
}

static double min_error_threshold(const op_stats *s, int levels, int p) {
  double w = s->hist_max / OP_HIST_BINS, best = s->hist_max, best_e = INFINITY;
  for (int i = levels; i <= OP_HIST_BINS; i++) {
    double T = i * w, e = hist_error(s, T, levels, p);
    if (e < best_e) best_e = e, best = T;
  }
  return best;
}

/* TensorRT's entropy calibration over the |x| histogram. */
static double kl_threshold(const op_stats *s, int levels) {
  int nq = levels + 1; /* quantised bins: 0..levels */
  double w = s->hist_max / OP_HIST_BINS, best = s->hist_max, best_kl = INFINITY;
  double *p = malloc(OP_HIST_BINS * sizeof(double)), *q = malloc(OP_HIST_BINS * sizeof(double));
  for (int i = nq; i <= OP_HIST_BINS; i++) {
    /* reference: the first i bins, everything beyond folded into the last one */
    memcpy(p, s->hist, (size_t)i * sizeof(double));
    double outliers = 0;
    for (int j = i; j < OP_HIST_BINS; j++) outliers += s->hist[j];
    p[i - 1] += outliers;
    /* candidate: the first i bins merged into nq levels, each level's mass spread over its nonzero bins */
    for (int k = 0; k < nq; k++) {
      int start = (int)((int64_t)k * i / nq), end = (int)((int64_t)(k + 1) * i / nq);
      double mass = 0;
      int nonzero = 0;
      for (int j = start; j < end; j++) {
        mass += s->hist[j];
        nonzero += s->hist[j] != 0;
      }
      for (int j = start; j < end; j++) q[j] = s->hist[j] != 0 ? mass / nonzero : 0;
    }
    double ps = total_mass(p, i), qs = total_mass(q, i), kl = 0;
    if (ps <= 0 || qs <= 0) continue;
    for (int j = 0; j < i; j++) {
      if (p[j] <= 0) continue;
      double pj = p[j] / ps, qj = q[j] > 0 ? q[j] / qs : 1e-12; /* outlier mass with no candidate bin */
      kl += pj * log(pj / qj);
    }
    if (kl < best_kl) best_kl = kl, best = (i + 0.5) * w;
  }
  free(p);
  free(q);
  return best > s->hist_max ? s->hist_max : best;
}

/* ---- fast paths (op_cal_threshold): the same definitions as the reference above, computed from
 * prefix sums instead of a pass over the histogram per candidate ---- */

typedef struct hist_sums {
  double *mass;  /* mass[i]: sum of hist[0..i) */
  double *nz;    /* nonzero bins among hist[0..i) */
  double *hlogh; /* sum of h log h over hist[0..i) */
} hist_sums;

static void sums_make(const op_stats *s, hist_sums *p) {
  p->mass = malloc((OP_HIST_BINS + 1) * sizeof(double));
  p->nz = malloc((OP_HIST_BINS + 1) * sizeof(double));
  p->hlogh = malloc((OP_HIST_BINS + 1) * sizeof(double));
  if (!p->mass || !p->nz || !p->hlogh) abort();
  p->mass[0] = p->nz[0] = p->hlogh[0] = 0;
  for (int i = 0; i < OP_HIST_BINS; i++) {
    double h = s->hist[i];
    p->mass[i + 1] = p->mass[i] + h;
    p->nz[i + 1] = p->nz[i] + (h != 0);
    p->hlogh[i + 1] = p->hlogh[i] + (h > 0 ? h * log(h) : 0);
  }
}

static void sums_free(hist_sums *p) {
  free(p->mass);
  free(p->nz);
  free(p->hlogh);
}

/* KL(P || Q) of candidate i, exactly as kl_threshold defines it: within a merged level the reference
 * bins are h_j and the candidate bins mass / nonzero, so the level's sum of p log(p / q) is
 * (sum h log h - H log(mass / nonzero)) / ps plus the normalisations, all from prefix sums; the last
 * bin (which also holds the outliers) is taken on its own. */
static double kl_at(const op_stats *s, const hist_sums *p, int i, int nq, double total) {
  double ps = total, qs = p->mass[i];
  if (ps <= 0 || qs <= 0) return INFINITY;
  double lps = log(ps), lqs = log(qs), kl = 0;
  double last_h = s->hist[i - 1], last_p = last_h + (total - p->mass[i]), last_q = 0;
  for (int k = 0; k < nq; k++) {
    int start = (int)((int64_t)k * i / nq), end = (int)((int64_t)(k + 1) * i / nq);
    if (end <= start) continue;
    double mass = p->mass[end] - p->mass[start], nz = p->nz[end] - p->nz[start];
    if (mass <= 0 || nz <= 0) continue; /* every p_j of the level is 0 (the last bin is handled below) */
    double lq = log(mass / nz), H = mass, S = p->hlogh[end] - p->hlogh[start];
    if (end == i) { /* the last bin leaves the level's sums; it is added with its outliers below */
      if (last_h > 0) H -= last_h, S -= last_h * log(last_h), last_q = mass / nz;
    }
    kl += (S - H * (lps + lq - lqs)) / ps;
  }
  if (last_p > 0) {
    double pj = last_p / ps, qj = last_q > 0 ? last_q / qs : 1e-12;
    kl += pj * log(pj / qj);
  }
  return kl;
}

static double kl_threshold_fast(const op_stats *s, int levels) {
  hist_sums p;
  sums_make(s, &p);
  int nq = levels + 1;
  double total = p.mass[OP_HIST_BINS], w = s->hist_max / OP_HIST_BINS, best_kl = INFINITY;
  int best = -1;
  for (int i = nq; i <= OP_HIST_BINS; i++) {
    double kl = kl_at(s, &p, i, nq, total);
    if (kl < best_kl) best_kl = kl, best = i;
  }
  sums_free(&p);
  double T = best < 0 ? s->hist_max : (best + 0.5) * w;
  return T > s->hist_max ? s->hist_max : T;
}

/* mse / emd: the error of a threshold is not a prefix sum (each bin's rounding error depends on the
 * step), so the candidates are searched on a grid of every GRID-th one, then every one around the
 * best of the grid; only the nonzero bins are visited. */
#define GRID 8

static double sparse_error(const int *bins, int n, const double *h, double w, double T, int levels, int p) {
  double e = 0;
  for (int k = 0; k < n; k++) {
    double c = (bins[k] + 0.5) * w, d = fabs(c - qdq(c, T, levels));
    e += h[bins[k]] * (p == 2 ? d * d : d);
  }
  return e;
}

static double min_error_threshold_fast(const op_stats *s, int levels, int p) {
  int *bins = malloc(OP_HIST_BINS * sizeof *bins), n = 0;
  if (!bins) abort();
  for (int b = 0; b < OP_HIST_BINS; b++)
    if (s->hist[b] != 0) bins[n++] = b;
  double w = s->hist_max / OP_HIST_BINS, best_e = INFINITY;
  int best = OP_HIST_BINS;
  for (int i = levels; i <= OP_HIST_BINS; i += GRID) {
    double e = sparse_error(bins, n, s->hist, w, i * w, levels, p);
    if (e < best_e) best_e = e, best = i;
  }
  int lo = best - GRID + 1 < levels ? levels : best - GRID + 1, hi = best + GRID - 1 > OP_HIST_BINS ? OP_HIST_BINS : best + GRID - 1;
  for (int i = lo; i <= hi; i++) {
    double e = sparse_error(bins, n, s->hist, w, i * w, levels, p);
    if (e < best_e || (e == best_e && i < best)) best_e = e, best = i; /* the reference keeps the first minimum */
  }
  free(bins);
  return best * w;
}

double op_cal_threshold(const op_stats *s, op_cal_method m, double percentile, int levels) {
  if (s->absmax <= 0 || s->hist_max <= 0) return op_cal_threshold_ref(s, m, percentile, levels);
  switch (m) {
    case OP_CAL_KL: return kl_threshold_fast(s, levels);
    case OP_CAL_MSE: return min_error_threshold_fast(s, levels, 2);
    case OP_CAL_EMD: return min_error_threshold_fast(s, levels, 1);
    default: return op_cal_threshold_ref(s, m, percentile, levels);
  }
}

typedef struct prep_job {
  op_stats *const *s;
  op_cal_method m;
  double percentile;
  int levels;
} prep_job;

static void prep_range(void *ctx, int64_t lo, int64_t hi) {
  const prep_job *j = ctx;
  for (int64_t i = lo; i < hi; i++) {
    op_stats *s = j->s[i];
    if (s->thr_valid && s->thr_method == (int)j->m && s->thr_levels == j->levels && s->thr_percentile == j->percentile)
      continue;
    s->thr = op_cal_threshold(s, j->m, j->percentile, j->levels);
    s->thr_method = (int)j->m, s->thr_levels = j->levels, s->thr_percentile = j->percentile, s->thr_valid = true;
  }
}

void op_cal_prepare(op_stats *const *s, size_t n, op_cal_method m, double percentile, int levels) {
  prep_job j = {s, m, percentile, levels};
  /* a tensor's search is about a histogram's worth of work many times over: one tensor per grain */
  op_parallel_for((int64_t)n, OP_PARALLEL_GRAIN, prep_range, &j);
}

double op_cal_threshold_ref(const op_stats *s, op_cal_method m, double percentile, int levels) {
  if (s->absmax <= 0) return 0;
  switch (m) {
    case OP_CAL_AVG:
      return s->batches ? s->absmax_sum / (double)s->batches : s->absmax;
    case OP_CAL_HIST:
      return s->hist_max > 0 ? percentile_threshold(s, percentile) : s->absmax;
    case OP_CAL_MSE:
      return s->hist_max > 0 ? min_error_threshold(s, levels, 2) : s->absmax;
    case OP_CAL_EMD:
      return s->hist_max > 0 ? min_error_threshold(s, levels, 1) : s->absmax;
    case OP_CAL_KL:
      return s->hist_max > 0 ? kl_threshold(s, levels) : s->absmax;
    default: /* abs_max, and min_max's symmetric view */
      return s->absmax;
  }
}

void op_cal_range(const op_stats *s, op_cal_method m, double percentile, bool symmetric, double *lo, double *hi) {
  if (!(s->min <= s->max)) { /* never observed: an empty range around zero */
    *lo = *hi = 0;
    return;
  }
  if (m == OP_CAL_MIN_MAX && !symmetric) {
    *lo = s->min;
    *hi = s->max;
  } else {
    int levels = symmetric ? 127 : 255;
    bool cached = s->thr_valid && s->thr_method == (int)m && s->thr_levels == levels && s->thr_percentile == percentile;
    double T = cached ? s->thr : op_cal_threshold(s, m, percentile, levels);
    *lo = symmetric ? -T : fmax(s->min, -T);
    *hi = symmetric ? T : fmin(s->max, T);
  }
  if (*lo > 0) *lo = 0; /* zero must be exactly representable */
  if (*hi < 0) *hi = 0;
}
