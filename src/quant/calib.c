/* calib.c - calibration statistics and methods (see calib.h). The histogram methods follow the
 * usual definitions: hist takes a percentile of |x|; mse and emd pick the clipping threshold that
 * minimises the mean squared / absolute quantisation error of the histogram; kl is TensorRT's
 * entropy calibration (2048 bins, reference distribution with outliers folded into the last bin,
 * 128-level quantised candidate, minimum KL divergence). */
#include "quant/calib.h"

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
}

void op_stats_range(op_stats *s, const float *x, int64_t n, int64_t channels) {
  double lo = INFINITY, hi = -INFINITY;
  for (int64_t i = 0; i < n; i++) {
    double v = x[i];
    if (!isfinite(v)) continue;
    lo = v < lo ? v : lo;
    hi = v > hi ? v : hi;
  }
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
      for (int64_t i = 0; i < n; i++) s->chan_sum[i % channels] += x[i];
      s->chan_rows += n / channels;
    }
  }
}

void op_stats_hist(op_stats *s, const float *x, int64_t n) {
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
    double T = op_cal_threshold_ref(s, m, percentile, symmetric ? 127 : 255);
    *lo = symmetric ? -T : fmax(s->min, -T);
    *hi = symmetric ? T : fmin(s->max, T);
  }
  if (*lo > 0) *lo = 0; /* zero must be exactly representable */
  if (*hi < 0) *hi = 0;
}
