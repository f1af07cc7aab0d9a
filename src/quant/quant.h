/* quant.h - quantisation configuration, the report of what was quantised, and the entry point. */
#ifndef OP_QUANT_H
#define OP_QUANT_H

#include "data/data.h"
#include "exec/exec.h"
#include "match/match.h"
#include "quant/calib.h"

enum { OP_Q_MATMUL = 1, OP_Q_GEMM = 2, OP_Q_GATHER = 4, OP_Q_ATTENTION = 8, OP_Q_ADD = 16, OP_Q_CONV = 32 };

struct op_quant_config {
  op_cal_method methods[OP_CAL_COUNT];
  int n_methods;
  int64_t batches[16]; /* calibration batch counts to try; none: calib_samples */
  int n_batches;
  double percentile;
  bool per_channel, act_signed, symmetric, bias_correction;
  unsigned op_types;
  OP_VEC(char *) exclude; /* node-name glob patterns */
  OP_VEC(char *) include; /* node-name glob patterns; none: every node of the op types */
  bool reduce_range;      /* 7-bit weights ([-63, 63]), ONNX Runtime's reduce_range */
  bool progress;          /* progress on a terminal: calibration passes, search candidates */
  /* what was set explicitly, so that contradictions are refused whatever the order */
  int profile;            /* 0 unset, 1 ort, 2 tensorrt */
  int act_type_set;       /* -1 unset, 0 uint8, 1 int8 */
  int symmetric_set;      /* -1 unset, 0 or 1 */
  bool percentile_set, eval_samples_set;
  int64_t batch, calib_samples, eval_samples;
};

typedef struct op_quant_entry {
  char *name;
  const char *kind, *method;
  double lo, hi;             /* observed range */
  double range_lo, range_hi; /* the quantisation range chosen (activations) */
  float scale_min, scale_max;
  int64_t n_scales;
  int axis, zero_point;
  int32_t qtype;
} op_quant_entry;

typedef struct op_quant_trial {
  op_cal_method method;
  int64_t batches;
  double cosine, agreement, accuracy; /* accuracy < 0: no labels */
} op_quant_trial;

struct op_quant_report {
  char *model;
  op_cal_method method;
  int64_t batches, eval_first, eval_samples;
  int64_t data_samples, calib_cap; /* calib_cap > 0: calibration was cut to samples [0, calib_cap) */
  bool reduce_range;
  bool act_signed, symmetric, bias_correction, per_tensor_fallback;
  int biases_corrected;
  const char *half_form; /* a float16 model: how its QDQ is written (static text), else NULL */
  OP_VEC(op_quant_entry) entries;
  OP_VEC(op_quant_trial) trials;
  /* issue 12: the file rows calibration and the search's scoring used (data/rows.c) */
  op_row_set calib_rows, eval_rows;
};

#endif
