/* tensor.c - element counts, validation and in-place access to TensorProto data.
 * ONNX raw_data is little-endian; like ONNX Runtime we assume a little-endian host. */
#include "model/model.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- borrowed bytes ----
 * A model loaded from a file leaves large raw_data pointing into its read-only file mapping instead
 * of copying it (see model_io.c). Such bytes are not the tensor's to free or to write, and they may
 * be unaligned, so every release goes through drop_raw and mutable or typed access through
 * op_tensor_f32, which first gives the tensor its own aligned copy. The registry is tiny (one entry
 * per loaded model) and locked because separate models may live on separate threads. */

typedef struct borrowed_range {
  const uint8_t *base;
  size_t len;
} borrowed_range;

static pthread_mutex_t borrow_lock = PTHREAD_MUTEX_INITIALIZER;
static OP_VEC(borrowed_range) borrowed;

void op_borrow_add(const void *base, size_t len) {
  pthread_mutex_lock(&borrow_lock);
  OP_VEC_PUSH(borrowed, ((borrowed_range){base, len}));
  pthread_mutex_unlock(&borrow_lock);
}

void op_borrow_remove(const void *base) {
  pthread_mutex_lock(&borrow_lock);
  for (size_t i = 0; i < borrowed.n; i++)
    if (borrowed.v[i].base == base) {
      borrowed.v[i] = borrowed.v[--borrowed.n];
      break;
    }
  if (!borrowed.n) { /* nothing left to track: leave no allocation behind */
    free(borrowed.v);
    borrowed.v = NULL;
    borrowed.cap = 0;
  }
  pthread_mutex_unlock(&borrow_lock);
}

bool op_tensor_is_borrowed(const Onnx__TensorProto *t) {
  const uint8_t *p = t->raw_data.data;
  if (!p) return false;
  bool found = false;
  pthread_mutex_lock(&borrow_lock);
  for (size_t i = 0; i < borrowed.n && !found; i++)
    found = p >= borrowed.v[i].base && p < borrowed.v[i].base + borrowed.v[i].len;
  pthread_mutex_unlock(&borrow_lock);
  return found;
}

void op_release_pages(const void *p, size_t n) {
  uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  uintptr_t lo = ((uintptr_t)p + page - 1) & ~(page - 1);
  uintptr_t hi = ((uintptr_t)p + n) & ~(page - 1);
  if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
}

/* Lets go of raw_data: frees owned bytes; for borrowed ones, hands the mapping's pages back so a
 * replaced weight stops counting towards resident memory. */
static void drop_raw(Onnx__TensorProto *t) {
  if (op_tensor_is_borrowed(t))
    op_release_pages(t->raw_data.data, t->raw_data.len);
  else
    free(t->raw_data.data);
  t->raw_data.data = NULL;
  t->raw_data.len = 0;
}

void op_tensor_detach_borrowed(Onnx__TensorProto *t) {
  if (op_tensor_is_borrowed(t)) {
    t->raw_data.data = NULL;
    t->raw_data.len = 0;
    t->has_raw_data = 0;
  }
}

/* Gives a borrowed tensor its own aligned copy of its bytes. */
static void own_raw(Onnx__TensorProto *t) {
  if (!op_tensor_is_borrowed(t)) return;
  size_t n = t->raw_data.len;
  uint8_t *copy = op_xmalloc(n ? n : 1);
  memcpy(copy, t->raw_data.data, n);
  drop_raw(t);
  t->raw_data.data = copy;
  t->raw_data.len = n;
}

int64_t op_dims_numel(const int64_t *dims, size_t rank) {
  int64_t nonzero = 1;
  bool empty = false;
  for (size_t i = 0; i < rank; i++) {
    if (dims[i] < 0) return -1;
    if (dims[i] == 0) empty = true;
    else if (nonzero > INT64_MAX / dims[i]) return -1;
    else nonzero *= dims[i];
  }
  return empty ? 0 : nonzero;
}

int64_t op_tensor_numel(const Onnx__TensorProto *t) { return op_dims_numel(t->dims, t->n_dims); }

bool op_bytes_of(int64_t numel, size_t elem_size, uint64_t *bytes) {
  if (numel < 0 || (elem_size && (uint64_t)numel > (uint64_t)SIZE_MAX / elem_size)) return false;
  *bytes = (uint64_t)numel * elem_size;
  return true;
}

size_t op_dtype_size(int32_t dt) {
  switch (dt) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
      return 4;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BOOL:
      return 1;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16:
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16:
      return 2;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
    case ONNX__TENSOR_PROTO__DATA_TYPE__COMPLEX64:
      return 8;
    case ONNX__TENSOR_PROTO__DATA_TYPE__COMPLEX128:
      return 16;
    default:
      return dt >= 17 && dt <= 20 ? 1 : 0; /* float8 variants; 4-bit and strings have no fixed size */
  }
}

bool op_dtype_is_float(int32_t dt) {
  return dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || dt == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE ||
         dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16 || dt == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16 ||
         (dt >= 17 && dt <= 20);
}

/* How many typed-array elements hold the data, or -1 if the type has no typed-array form. */
static int64_t typed_count(const Onnx__TensorProto *t) {
  switch (t->data_type) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
      return (int64_t)t->n_float_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
      return (int64_t)t->n_int64_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
      return (int64_t)t->n_double_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
      return (int64_t)t->n_uint64_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__STRING:
      return (int64_t)t->n_string_data;
    case ONNX__TENSOR_PROTO__DATA_TYPE__COMPLEX64:
      return (int64_t)t->n_float_data / 2;
    case ONNX__TENSOR_PROTO__DATA_TYPE__COMPLEX128:
      return (int64_t)t->n_double_data / 2;
    default:
      return (int64_t)t->n_int32_data;
  }
}

int op_tensor_validate(const Onnx__TensorProto *t, const char *origin, op_error *err) {
  const char *name = t->name ? t->name : "";
  int64_t numel = op_tensor_numel(t);
  if (numel < 0)
    return op_fail(err, OP_INVALID, "%s: tensor '%s': invalid dims", origin, name);
  if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
    return 0; /* checked when the external data is read */
  if (t->has_raw_data) {
    size_t es = op_dtype_size(t->data_type);
    uint64_t want;
    if (es) {
      if (!op_bytes_of(numel, es, &want)) /* dims whose byte size wraps must not pass as 0 bytes */
        return op_fail(err, OP_INVALID, "%s: tensor '%s': dims need more bytes than can be addressed", origin, name);
    }
    else if (t->data_type == 21 || t->data_type == 22) /* UINT4, INT4: newer than some onnx.proto */
      want = ((uint64_t)numel + 1) / 2;
    else
      return op_fail(err, OP_INVALID, "%s: tensor '%s': raw_data for data type %d", origin, name, t->data_type);
    if (t->raw_data.len != want)
      return op_fail(err, OP_INVALID, "%s: tensor '%s': raw_data has %zu bytes but dims and type need %llu",
                     origin, name, t->raw_data.len, (unsigned long long)want);
    return 0;
  }
  int64_t have = typed_count(t);
  if (have != numel)
    return op_fail(err, OP_INVALID, "%s: tensor '%s': holds %lld elements but dims need %lld", origin, name,
                   (long long)have, (long long)numel);
  return 0;
}

/* Moves a typed array of count elements of size es into raw_data. */
static int typed_to_raw(Onnx__TensorProto *t, void **arr, size_t *count, size_t es, int64_t numel) {
  if ((int64_t)*count != numel) return -1;
  void *buf = op_xmalloc((size_t)numel * es);
  if (numel) memcpy(buf, *arr, (size_t)numel * es);
  free(*arr);
  *arr = NULL;
  *count = 0;
  t->raw_data.data = buf;
  t->raw_data.len = (size_t)numel * es;
  t->has_raw_data = 1;
  return 0;
}

int op_tensor_to_raw(Onnx__TensorProto *t) {
  if (t->has_raw_data) return 0;
  int64_t numel = op_tensor_numel(t);
  if (numel < 0) return -1;
  switch (t->data_type) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
      return typed_to_raw(t, (void **)&t->float_data, &t->n_float_data, 4, numel);
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
      return typed_to_raw(t, (void **)&t->int64_data, &t->n_int64_data, 8, numel);
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
      return typed_to_raw(t, (void **)&t->int32_data, &t->n_int32_data, 4, numel);
    default:
      return -1;
  }
}

float *op_tensor_f32(Onnx__TensorProto *t) {
  if (t->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) return NULL;
  if (op_tensor_to_raw(t) != 0) return NULL;
  own_raw(t);
  return (float *)t->raw_data.data;
}

bool op_tensor_get_int(const Onnx__TensorProto *t, int64_t i, int64_t *out) {
  int64_t numel = op_tensor_numel(t);
  if (i < 0 || i >= numel) return false;
  if (t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT64) {
    if (t->has_raw_data) {
      if (t->raw_data.len < (size_t)(i + 1) * 8) return false;
      memcpy(out, t->raw_data.data + i * 8, 8);
    } else {
      if ((int64_t)t->n_int64_data <= i) return false;
      *out = t->int64_data[i];
    }
    return true;
  }
  if (t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT32) {
    int32_t v;
    if (t->has_raw_data) {
      if (t->raw_data.len < (size_t)(i + 1) * 4) return false;
      memcpy(&v, t->raw_data.data + i * 4, 4);
    } else {
      if ((int64_t)t->n_int32_data <= i) return false;
      v = t->int32_data[i];
    }
    *out = v;
    return true;
  }
  return false;
}

Onnx__TensorProto *op_tensor_new(const char *name, int32_t data_type, const int64_t *dims, size_t ndims) {
  Onnx__TensorProto *t = op_xmalloc(sizeof *t);
  onnx__tensor_proto__init(t);
  t->name = op_xstrdup(name);
  t->has_data_type = 1;
  t->data_type = data_type;
  t->n_dims = ndims;
  t->dims = op_xmalloc(ndims * sizeof(int64_t));
  if (ndims) memcpy(t->dims, dims, ndims * sizeof(int64_t));
  uint64_t bytes = 0;
  if (!op_bytes_of(op_tensor_numel(t), op_dtype_size(data_type), &bytes)) abort(); /* callers pass sane dims */
  t->has_raw_data = 1;
  t->raw_data.len = bytes;
  t->raw_data.data = op_xcalloc(bytes ? bytes : 1, 1);
  return t;
}

void op_tensor_replace(Onnx__TensorProto *t, const int64_t *dims, size_t ndims, void *data, size_t nbytes) {
  free(t->float_data);
  free(t->int64_data);
  free(t->int32_data);
  t->float_data = NULL;
  t->int64_data = NULL;
  t->int32_data = NULL;
  t->n_float_data = t->n_int64_data = t->n_int32_data = 0;
  free(t->dims);
  t->dims = op_xmalloc(ndims * sizeof(int64_t));
  if (ndims) memcpy(t->dims, dims, ndims * sizeof(int64_t));
  t->n_dims = ndims;
  drop_raw(t);
  t->raw_data.data = data;
  t->raw_data.len = nbytes;
  t->has_raw_data = 1;
}

void op_tensor_free(Onnx__TensorProto *t) {
  if (!t) return;
  drop_raw(t);
  protobuf_c_message_free_unpacked(&t->base, NULL);
}
