/* calib.h - per-tensor statistics gathered while calibration data streams through the executor, and
 * the methods that turn them into a quantisation range. Statistics do not grow with the number of
 * samples: ranges and a per-channel mean in a first pass, a fixed histogram of |x| in a second, or both
 * in one pass (op_stats_observe). */
#ifndef OP_CALIB_H
#define OP_CALIB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define OP_HIST_BINS 2048

#define OP_CAL_METHODS(X)                                     \
  X(ABS_MAX, "abs_max")                                       \
  X(MIN_MAX, "min_max")                                       \
  X(AVG, "avg")                                               \
  X(HIST, "hist")                                             \
  X(MSE, "mse")                                               \
  X(KL, "kl")                                                 \
  X(EMD, "emd")

typedef enum op_cal_method {
#define OP_CAL_ENUM(name, str) OP_CAL_##name,
  OP_CAL_METHODS(OP_CAL_ENUM)
#undef OP_CAL_ENUM
      OP_CAL_COUNT
} op_cal_method;

const char *op_cal_method_name(op_cal_method m);
/* -1 when the name is not a method. */
int op_cal_method_parse(const char *name);

typedef struct op_stats {
  /* pass 1 */
  double min, max, absmax;
  double absmax_sum; /* of per-batch abs max, for avg */
  int64_t batches, count;
  int64_t channels;  /* last-axis width, for the per-channel mean (bias correction) */
  double *chan_sum;
  int64_t chan_rows;
  /* pass 2 */
  double hist[OP_HIST_BINS]; /* |x| over [0, hist_max] */
  double hist_max;
  /* one pass (op_stats_observe): a finer histogram whose range doubles as batches need */
  double *fine;
  double fine_max;
  /* the threshold op_cal_prepare computed, for the method, levels and percentile it was asked */
  double thr, thr_percentile;
  int thr_method, thr_levels;
  bool thr_valid;
} op_stats;

void op_stats_init(op_stats *s);
void op_stats_free(op_stats *s);
/* Pass 1: one batch of a tensor whose last axis has `channels` values. */
void op_stats_range(op_stats *s, const float *x, int64_t n, int64_t channels);
/* Pass 2: histogram of |x| over [0, absmax of pass 1]. */
void op_stats_hist(op_stats *s, const float *x, int64_t n);

/* Both passes in one (what quantize runs): the range of pass 1 and a histogram kept on a finer grid
 * whose range grows by doubling; op_stats_finish turns it into the OP_HIST_BINS histogram over
 * [0, absmax] that pass 2 would have made, each value within an eighth of a bin of where pass 2 puts it. */
#define OP_FINE_BINS (OP_HIST_BINS * 8)
void op_stats_observe(op_stats *s, const float *x, int64_t n, int64_t channels);
void op_stats_finish(op_stats *s);

/* Threshold T for symmetric quantisation to [-levels, levels] (127 for int8): the clipping point
 * each method chooses. Reference implementations; percentile is for OP_CAL_HIST (e.g. 99.99). */
double op_cal_threshold_ref(const op_stats *s, op_cal_method m, double percentile, int levels);

/* The same thresholds, fast (what op_cal_range uses): kl from prefix sums over the histogram (the
 * reference's definition, every candidate); mse and emd on a grid of every 8th candidate refined
 * around the best. Tested against the reference in tests/quant/test_calib.c. */
double op_cal_threshold(const op_stats *s, op_cal_method m, double percentile, int levels);
/* Computes the threshold of n tensors at once, in parallel, and keeps it in each for op_cal_range. */
void op_cal_prepare(op_stats *const *s, size_t n, op_cal_method m, double percentile, int levels);

/* The quantisation range [lo, hi] of a tensor: symmetric methods give [-T, T] (clamped to what was
 * seen when the target is asymmetric), min_max gives [min, max]; zero always lies inside. */
void op_cal_range(const op_stats *s, op_cal_method m, double percentile, bool symmetric, double *lo, double *hi);

/* min and max of the finite values of x[0, n) (lo > hi when there is none); true when all are finite */
bool op_finite_range(const float *x, int64_t n, float *lo, float *hi);

#endif
