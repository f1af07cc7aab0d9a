/* model.h - internal view of a loaded model: the protobuf-c tree plus where it came from,
 * tensor access helpers, and error formatting shared by every module. */
#ifndef OP_MODEL_INTERNAL_H
#define OP_MODEL_INTERNAL_H

#include "onnxprune.h"
#include "onnx.pb-c.h"

#include <stdbool.h>

/* An external data file a model read: mapped read-only, its tensors borrow from the mapping. */
typedef struct op_ext_file {
  char *real; /* resolved path */
  void *map;  /* NULL for an empty file */
  size_t len;
} op_ext_file;

struct op_model {
  Onnx__ModelProto *proto;
  char *path;      /* as given, for messages */
  char *real_path; /* resolved, to refuse overwriting the input; NULL for buffers */
  char *dir;       /* base directory for external data; NULL: none allowed */
  void *map;       /* the file's read-only mapping that large raw_data borrows from; NULL: none */
  size_t map_len;
  struct { op_ext_file *v; size_t n, cap; } ext; /* external data files, each mapped once */
};

/* Formats err (if not NULL) and returns -1, so callers can `return op_fail(...)`. */
int op_fail(op_error *err, op_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* op_fail for functions returning pointers. */
void *op_fail_null(op_error *err, op_status code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Temporary files for writing without ever exposing a half-written result: open one beside the
 * target (its name goes to tmp, PATH_MAX bytes), then close it (flush, fsync; removed when `failed`
 * or on any error) before renaming it over the target. */
#include <stdio.h>
FILE *op_temp_open(const char *target, char *tmp, op_error *err);
int op_temp_close(FILE *f, const char *tmp, bool failed, const char *target, op_error *err);

/* Reads a whole file; *size gets its length (when size is not NULL) and the buffer is NUL-terminated,
 * so text can be read the same way. Returns NULL and sets *err on failure (OP_NOMEM when the file does
 * not fit what the memory budget has left: the buffer is in its running total until freed).
 * Release with op_read_file_free, never free(). */
char *op_read_file(const char *path, size_t *size, op_error *err);
void op_read_file_free(void *buf); /* accepts NULL */

/* An independent copy of a loaded model (packed and parsed again; keeps its path and real path), for
 * candidates that are edited while the original stays as it is. */
op_model *op_model_clone(const op_model *m, op_error *err);

/* Allocation helpers that never return NULL silently: they abort on exhaustion, since every
 * caller would otherwise turn it into the same fatal error. */
void *op_xmalloc(size_t n);
void *op_xcalloc(size_t n, size_t size);
void *op_xrealloc(void *p, size_t n);
char *op_xstrdup(const char *s);

/* ---- tensors (tensor.c) ---- */
int64_t op_tensor_numel(const Onnx__TensorProto *t);
/* Elements of a shape, or -1 when a dim is negative or the product of its nonzero dims passes int64: a
 * shape like [0, 2^40, 2^30] holds nothing, but the strides kernels compute from it would overflow. */
int64_t op_dims_numel(const int64_t *dims, size_t rank);
/* numel * element size without wrapping: false when it does not fit in size_t (or numel < 0). */
bool op_bytes_of(int64_t numel, size_t elem_size, uint64_t *bytes);
size_t op_dtype_size(int32_t data_type); /* 0 for types without a fixed element size */
bool op_dtype_is_float(int32_t data_type);
/* Checks that the stored data agrees with dims and type. Returns 0 or -1 with *err. */
int op_tensor_validate(const Onnx__TensorProto *t, const char *origin, op_error *err);
/* Moves typed-array data (float_data, int64_data, ...) into raw_data so it can be edited in place.
 * Only FLOAT, INT64 and INT32 are converted; returns -1 for other storage. */
int op_tensor_to_raw(Onnx__TensorProto *t);
/* Pointer to the tensor's float32 data (converted to raw_data first; a borrowed tensor first gets its
 * own aligned copy), or NULL if not FLOAT. Read-only users that can take unaligned bytes should
 * read raw_data directly instead: it avoids that copy. */
float *op_tensor_f32(Onnx__TensorProto *t);
/* Reads element i of an integer tensor (INT64 or INT32), raw or typed. */
bool op_tensor_get_int(const Onnx__TensorProto *t, int64_t i, int64_t *out);
/* A new tensor owning copies of name and dims, with zeroed raw data of the right size. */
Onnx__TensorProto *op_tensor_new(const char *name, int32_t data_type, const int64_t *dims, size_t ndims);
/* Replaces the tensor's dims and raw data (takes ownership of data). */
void op_tensor_replace(Onnx__TensorProto *t, const int64_t *dims, size_t ndims, void *data, size_t nbytes);
void op_tensor_free(Onnx__TensorProto *t);

/* Borrowed bytes: raw_data that points into a registered file mapping rather than owned memory.
 * Such bytes are read-only and may be unaligned (see tensor.c). */
void op_borrow_add(const void *base, size_t len);
void op_borrow_remove(const void *base);
bool op_tensor_is_borrowed(const Onnx__TensorProto *t);
/* Clears a borrowed raw_data pointer (before its mapping goes away); owned data is left alone. */
void op_tensor_detach_borrowed(Onnx__TensorProto *t);
/* Gives back the pages of a mapping that lie wholly inside [p, p+n). */
void op_release_pages(const void *p, size_t n);

/* ---- small dynamic arrays ---- */
#define OP_VEC(type) struct { type *v; size_t n, cap; }
#define OP_VEC_PUSH(vec, item)                                                    \
  do {                                                                            \
    if ((vec).n == (vec).cap) {                                                   \
      (vec).cap = (vec).cap ? (vec).cap * 2 : 8;                                  \
      (vec).v = op_xrealloc((vec).v, (vec).cap * sizeof(*(vec).v));               \
    }                                                                             \
    (vec).v[(vec).n++] = (item);                                                  \
  } while (0)

#endif
