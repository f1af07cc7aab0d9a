/* test_calib.c - calibration methods on known distributions: a Laplacian with a few large outliers
 * (hist, kl, mse and emd clip well below the maximum, abs_max does not), a uniform one (nothing to
 * clip), mse against a brute-force search over the raw samples, avg and min_max by hand. */
#include "check.h"
#include "quant/calib.h"

#include <math.h>
#include <stdlib.h>

static uint64_t rng = 88172645463325252ull;
static double uniform01(void) {
  rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
  return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}
static double laplace(void) {
  double u = uniform01() - 0.5;
  return (u < 0 ? 1 : -1) * log(1 - 2 * fabs(u));
}

static void fill(op_stats *s, const float *x, int64_t n) {
  op_stats_init(s);
  for (int64_t i = 0; i < n; i += n / 4) op_stats_range(s, x + i, n / 4, 1);
  op_stats_hist(s, x, n);
}

/* Mean squared error of symmetric int8 quantisation of the raw samples at threshold T. */
static double raw_mse(const float *x, int64_t n, double T) {
  double e = 0;
  for (int64_t i = 0; i < n; i++) {
    double q = nearbyint(fabs(x[i]) / T * 127);
    if (q > 127) q = 127;
    double d = fabs(x[i]) - q * T / 127;
    e += d * d;
  }
  return e / (double)n;
}

int main(void) {
  enum { N = 200000 };
  float *x = malloc(N * sizeof(float));
  for (int i = 0; i < N; i++) x[i] = (float)laplace();
  for (int i = 0; i < 8; i++) x[i * 997] = (i % 2 ? -60.f : 60.f); /* outliers */
  op_stats s;
  fill(&s, x, N);
  double amax = op_cal_threshold_ref(&s, OP_CAL_ABS_MAX, 0, 127);
  CHECK(fabs(amax - 60) < 1e-9);
  double th[OP_CAL_COUNT];
  for (int m = 0; m < OP_CAL_COUNT; m++) th[m] = op_cal_threshold_ref(&s, (op_cal_method)m, 99.99, 127);
  fprintf(stderr, "laplace+outliers: hist %.2f kl %.2f mse %.2f emd %.2f avg %.2f\n", th[OP_CAL_HIST], th[OP_CAL_KL],
          th[OP_CAL_MSE], th[OP_CAL_EMD], th[OP_CAL_AVG]);
  /* hist, kl and emd clip far below the outliers and above the bulk of the distribution; mse may keep
   * the outliers (clipping 8 values at 60 costs more than coarser steps), it is checked below */
  const op_cal_method clipping[] = {OP_CAL_HIST, OP_CAL_KL, OP_CAL_EMD};
  for (int k = 0; k < 3; k++) {
    CHECK(th[clipping[k]] < 0.5 * amax);
    CHECK(th[clipping[k]] > 2.0);
  }
  /* the 99.99th percentile of |Laplace(1)| is ln(10^4) ~ 9.2 */
  CHECK(fabs(th[OP_CAL_HIST] - log(1e4)) < 0.6);

  /* mse: the threshold a brute-force search over the raw samples picks, on the same grid */
  double w = s.hist_max / OP_HIST_BINS, best_t = 0, best_e = INFINITY;
  for (int i = 127; i <= OP_HIST_BINS; i += 1) {
    double e = raw_mse(x, N, i * w);
    if (e < best_e) best_e = e, best_t = i * w;
  }
  fprintf(stderr, "mse: brute force %.3f (mse %.3g), histogram %.3f (mse %.3g)\n", best_t, best_e, th[OP_CAL_MSE],
          raw_mse(x, N, th[OP_CAL_MSE]));
  CHECK(raw_mse(x, N, th[OP_CAL_MSE]) <= best_e * 1.02); /* within 2% of the optimum's error */
  CHECK(fabs(th[OP_CAL_MSE] - best_t) <= 0.1 * best_t);

  /* uniform on [-1, 1]: nothing worth clipping */
  for (int i = 0; i < N; i++) x[i] = (float)(2 * uniform01() - 1);
  op_stats_free(&s);
  fill(&s, x, N);
  for (int m = OP_CAL_HIST; m <= OP_CAL_EMD; m++) {
    double t = op_cal_threshold_ref(&s, (op_cal_method)m, 99.99, 127);
    CHECK(t > 0.9 && t <= 1.0 + 1e-9);
  }

  /* the fast thresholds (what quantize uses) against the reference definitions: kl is the same
   * search from prefix sums (same threshold up to rounding ties), mse and emd search a grid refined
   * locally (within 16 bins of the reference's) */
  for (int dist = 0; dist < 2; dist++) { /* Laplace, then max(Laplace, 0) (one-sided, as after GELU), with outliers */
    for (int i = 0; i < N; i++) x[i] = (float)(dist == 0 ? laplace() : fmax(laplace(), 0));
    for (int i = 0; i < 8; i++) x[i * 997] = (i % 2 ? -40.f : 40.f);
    op_stats_free(&s);
    fill(&s, x, N);
    double w = s.hist_max / OP_HIST_BINS;
    { /* one target per distribution (the reference searches are slow under the sanitizers) */
      int levels = dist == 1 ? 255 : 127;
      double kr = op_cal_threshold_ref(&s, OP_CAL_KL, 0, levels), kf = op_cal_threshold(&s, OP_CAL_KL, 0, levels);
      if (fabs(kr - kf) > 1e-9 * kr) fprintf(stderr, "kl dist %d levels %d: ref %.6f fast %.6f\n", dist, levels, kr, kf);
      CHECK(fabs(kr - kf) <= 1e-9 * kr);
      for (int m = OP_CAL_MSE; m <= OP_CAL_EMD; m += OP_CAL_EMD - OP_CAL_MSE) {
        double r = op_cal_threshold_ref(&s, (op_cal_method)m, 0, levels), f = op_cal_threshold(&s, (op_cal_method)m, 0, levels);
        if (fabs(r - f) > 16 * w) fprintf(stderr, "%s dist %d levels %d: ref %.6f fast %.6f\n", op_cal_method_name(m), dist, levels, r, f);
        CHECK(fabs(r - f) <= 16 * w);
      }
      CHECK(op_cal_threshold(&s, OP_CAL_HIST, 99.9, levels) == op_cal_threshold_ref(&s, OP_CAL_HIST, 99.9, levels));
    }
    /* op_cal_prepare keeps what op_cal_range then reads, and a new batch forgets it */
    op_stats *one = &s;
    op_cal_prepare(&one, 1, OP_CAL_KL, 99.99, 127);
    CHECK(s.thr_valid && s.thr == op_cal_threshold(&s, OP_CAL_KL, 99.99, 127));
    op_stats_range(&s, x, 16, 1);
    CHECK(!s.thr_valid);
  }

  /* one pass (op_stats_observe, what quantize runs) against two (range, then histogram): batches that
   * grow (the fine histogram's range doubles three times) give the same range, and a histogram whose
   * every value lies within a bin of where two passes put it (cumulative counts at most two bins apart) */
  for (int i = 0; i < N; i++) x[i] = (float)(laplace() * (1 + i / (N / 10)));
  op_stats two, one;
  op_stats_init(&two);
  op_stats_init(&one);
  for (int64_t i = 0; i < N; i += N / 10) op_stats_range(&two, x + i, N / 10, 1);
  for (int64_t i = 0; i < N; i += N / 10) op_stats_hist(&two, x + i, N / 10);
  for (int64_t i = 0; i < N; i += N / 10) op_stats_observe(&one, x + i, N / 10, 1);
  op_stats_finish(&one);
  CHECK(one.min == two.min && one.max == two.max && one.absmax == two.absmax && one.hist_max == two.hist_max);
  CHECK(one.fine_max > one.absmax && one.fine_max < 2 * one.absmax);
  double c1 = 0, c2 = 0, c2_prev = 0, total = 0;
  bool within = true;
  for (int b = 0; b < OP_HIST_BINS; b++) total += two.hist[b];
  for (int b = 0; b < OP_HIST_BINS; b++) {
    c1 += one.hist[b];
    double c2_next = c2 + two.hist[b] + (b + 1 < OP_HIST_BINS ? two.hist[b + 1] : 0);
    c2 += two.hist[b];
    within &= c1 >= c2_prev && c1 <= c2_next;
    c2_prev = c2 - two.hist[b];
  }
  CHECK(within && c1 == total);
  double w1 = one.hist_max / OP_HIST_BINS;
  CHECK(fabs(op_cal_threshold(&one, OP_CAL_HIST, 99.99, 127) - op_cal_threshold(&two, OP_CAL_HIST, 99.99, 127)) <= 1.01 * w1);
  CHECK(fabs(op_cal_threshold(&one, OP_CAL_MSE, 0, 127) - op_cal_threshold(&two, OP_CAL_MSE, 0, 127)) <= 16 * w1);
  fprintf(stderr, "one pass vs two: kl %.3f vs %.3f, mse %.3f vs %.3f\n", op_cal_threshold(&one, OP_CAL_KL, 0, 127),
          op_cal_threshold(&two, OP_CAL_KL, 0, 127), op_cal_threshold(&one, OP_CAL_MSE, 0, 127), op_cal_threshold(&two, OP_CAL_MSE, 0, 127));
  op_stats_free(&one);
  op_stats_free(&two);

  /* a large batch is measured in chunks on several threads: the same range and histogram as one
   * thread gives, and as the plain loop over every value, NaN and infinities skipped */
  enum { BIG = 3 << 20 };
  float *y = malloc(BIG * sizeof(float));
  for (int i = 0; i < BIG; i++) y[i] = (float)(laplace() * 3);
  y[17] = NAN, y[BIG / 3] = INFINITY, y[BIG - 1] = -INFINITY, y[BIG / 2 + 5] = 400.f, y[BIG - 7] = -450.f;
  op_stats by[2];
  const char *threads[2] = {"1", "3"};
  for (int k = 0; k < 2; k++) {
    setenv("ONNX_PRUNE_THREADS", threads[k], 1);
    op_stats_init(&by[k]);
    op_stats_observe(&by[k], y, BIG, 0);
    op_stats_observe(&by[k], y + 1000, BIG - 1000, 0); /* a second batch: odd length */
  }
  unsetenv("ONNX_PRUNE_THREADS");
  CHECK(by[0].min == -450.f && by[0].max == 400.f && by[1].min == by[0].min && by[1].max == by[0].max);
  CHECK(by[0].fine_max == by[1].fine_max && by[0].count == by[1].count);
  double *ref = calloc(OP_FINE_BINS, sizeof *ref);
  double scale = OP_FINE_BINS / by[0].fine_max;
  for (int pass = 0; pass < 2; pass++)
    for (int64_t i = pass ? 1000 : 0; i < BIG; i++) {
      double v = fabs((double)y[i]);
      if (!isfinite(v)) continue;
      int64_t b = (int64_t)(v * scale);
      ref[b >= OP_FINE_BINS ? OP_FINE_BINS - 1 : b] += 1;
    }
  bool same = true;
  for (int b = 0; b < OP_FINE_BINS; b++) same &= by[0].fine[b] == ref[b] && by[1].fine[b] == ref[b];
  CHECK(same);
  free(ref);
  op_stats_free(&by[0]);
  op_stats_free(&by[1]);
  free(y);

  /* avg: mean of per-batch abs max; min_max: the observed range, zero included */
  op_stats_free(&s);
  op_stats_init(&s);
  float b1[] = {1, -2, 0.5f}, b2[] = {4, 3, 2};
  op_stats_range(&s, b1, 3, 3);
  op_stats_range(&s, b2, 3, 3);
  CHECK(fabs(op_cal_threshold_ref(&s, OP_CAL_AVG, 0, 127) - 3) < 1e-12);
  double lo, hi;
  op_cal_range(&s, OP_CAL_MIN_MAX, 0, false, &lo, &hi);
  CHECK(lo == -2 && hi == 4);
  op_cal_range(&s, OP_CAL_ABS_MAX, 0, true, &lo, &hi);
  CHECK(lo == -4 && hi == 4);
  float pos[] = {1, 2, 3};
  op_stats t;
  op_stats_init(&t);
  op_stats_range(&t, pos, 3, 3);
  op_cal_range(&t, OP_CAL_MIN_MAX, 0, false, &lo, &hi);
  CHECK(lo == 0 && hi == 3);
  /* per-channel means over rows, for bias correction */
  CHECK(s.channels == 3 && s.chan_rows == 2);
  CHECK(fabs(s.chan_sum[0] / 2 - 2.5) < 1e-12 && fabs(s.chan_sum[2] / 2 - 1.25) < 1e-12);
  CHECK(op_cal_method_parse("kl") == OP_CAL_KL && op_cal_method_parse("nope") == -1);
  op_stats_free(&s);
  op_stats_free(&t);
  free(x);
  return check_done("calib");
}
