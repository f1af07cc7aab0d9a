/* data.h - arrays read from .npy / .npz / ONNX TensorProto files, as named public tensors. */
#ifndef OP_DATA_H
#define OP_DATA_H

#include "model/model.h"

typedef struct op_named {
  char *name;
  op_tensor t;
  uint64_t budgeted; /* bytes taken from the memory budget's running total (an .npz member), given back when freed */
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

#endif
