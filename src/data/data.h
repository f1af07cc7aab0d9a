/* data.h - arrays read from .npy / .npz / ONNX TensorProto files, as named public tensors. */
#ifndef OP_DATA_H
#define OP_DATA_H

#include "model/model.h"

typedef struct op_named {
  char *name;
  op_tensor t;
  uint64_t budgeted; /* bytes taken from the memory budget's running total (a .npy array, an .npz member, a .pb tensor), given back when freed */
} op_named;
typedef OP_VEC(op_named) op_named_vec;

/* '<f4'-style descriptor of an ONNX data type, or NULL. */
const char *op_dtype_descr(int32_t dtype);
/* Parses one .npy image into out (owned data). */
int op_npy_parse(const uint8_t *buf, size_t size, const char *origin, op_tensor *out, op_error *err);
/* Parses a .npz archive, appending its arrays (named without ".npy") to out. */
int op_npz_parse(const uint8_t *buf, size_t size, const char *origin, op_named_vec *out, op_error *err);

/* The batch axis of each session input and output (dataset.c says how it is found): an axis, or */
#define OP_AXIS_NONE (-1)    /* the tensor has none: passed whole (inputs) */
#define OP_AXIS_UNKNOWN (-2) /* the model does not say and no --batch-axis does */
#define OP_AXIS_ERROR (-3)
/* Fills in_axes (one per session input) and, when not NULL, out_axes (one per output). Returns -1 with
 * *err when an option does not fit the model or an input has several batch-like axes. */
int op_dataset_axes(const op_dataset *d, const op_session *s, int *in_axes, int *out_axes, op_error *err);

/* ---- sample order and held-out rows (rows.c; issue 12): which file rows the samples are ---- */
#define OP_SAMPLE_ORDERS(X)                                                                      \
  X(FIRST, "first", "the first rows of the file")                                                \
  X(SPREAD, "spread", "spread over the whole file (seeded bit-reversal order)")                  \
  X(RANDOM, "random", "drawn at random (seeded)")
typedef enum op_sample_order {
#define OP_ORDER_ENUM(name, text, help) OP_ORDER_##name,
  OP_SAMPLE_ORDERS(OP_ORDER_ENUM)
#undef OP_ORDER_ENUM
} op_sample_order;
const char *op_sample_order_name(op_sample_order o);
const char *op_sample_order_rule(op_sample_order o);
/* 0, or -1 when s names no order. */
int op_sample_order_parse(const char *s, op_sample_order *out);
/* The file rows in the order samples are taken from a file of `total` rows, held-out rows skipped;
 * *n_out receives the count. Free with free(). */
int64_t *op_rows_sequence(int64_t total, op_sample_order order, uint64_t seed, const int64_t *held_out, size_t n_held,
                          int64_t *n_out);
/* The dataset's order (and its seed), its file rows (after op_dataset_samples; -1 before) and the
 * number of rows held out of it. */
op_sample_order op_dataset_order(const op_dataset *d, uint64_t *seed);
int64_t op_dataset_file_rows(const op_dataset *d);
int64_t op_dataset_held_out_count(const op_dataset *d);
/* The path the data was opened from, for messages. */
const char *op_dataset_path_of(const op_dataset *d);

/* The rows one step used (calibration, evaluation), kept for its report. */
typedef struct op_row_set {
  op_sample_order order;
  uint64_t seed;
  int64_t file_rows, held_out, first; /* first: the samples of that order skipped before these */
  int64_t *rows;
  size_t n;
} op_row_set;
/* Records samples [first, first + count) of d (after op_dataset_samples). */
void op_row_set_capture(op_row_set *rs, const op_dataset *d, int64_t first, int64_t count);
void op_row_set_free(op_row_set *rs);
/* "256 of 1866 rows, spread over the whole file (...) (seed 0)"; free with free(). */
char *op_row_set_rule(const op_row_set *rs);
/* The rows as "3,17,..." (for -v); free with free(). */
char *op_row_set_list(const op_row_set *rs);
struct cJSON;
/* {"count", "order", "seed", "file_rows", "rule", "rows": [...]} */
struct cJSON *op_row_set_json(const op_row_set *rs);

#endif
