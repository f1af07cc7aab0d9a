/* xt.c - runtime tensors of the executor, attribute access for kernels and kernel error formatting
 * (matrix products: gemm.c). */
#include "exec/exec.h"
#include "files/files.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t op_xt_elem_size(int32_t dtype) {
  size_t s = op_dtype_size(dtype);
  return s ? s : 1;
}

/* ---- buffer pool ---- */

typedef struct pooled {
  void *p;
  size_t cap;
} pooled;

struct op_xt_pool {
  OP_VEC(pooled) free;
  atomic_flag busy;
  struct op_xt_pool *outer; /* the pool entered before this one (a subgraph runs inside its node) */
};

static _Thread_local op_xt_pool *current_pool;

op_xt_pool *op_xt_pool_new(void) {
  op_xt_pool *p = op_xcalloc(1, sizeof *p);
  atomic_flag_clear(&p->busy);
  return p;
}

void op_xt_pool_free(op_xt_pool *p) {
  if (!p) return;
  for (size_t i = 0; i < p->free.n; i++) free(p->free.v[i].p), op_budget_give(p->free.v[i].cap);
  free(p->free.v);
  free(p);
}

bool op_xt_pool_enter(op_xt_pool *p) {
  if (atomic_flag_test_and_set(&p->busy)) return false;
  p->outer = current_pool;
  current_pool = p;
  return true;
}

void op_xt_pool_leave(op_xt_pool *p) {
  current_pool = p->outer;
  atomic_flag_clear(&p->busy);
}

/* The smallest free buffer of at least need bytes and at most twice that (a much larger one would
 * be wasted on a small tensor), or NULL. */
static void *pool_take(op_xt_pool *p, size_t need, size_t *cap) {
  size_t best = p->free.n;
  for (size_t i = 0; i < p->free.n; i++)
    if (p->free.v[i].cap >= need && p->free.v[i].cap / 2 <= need && (best == p->free.n || p->free.v[i].cap < p->free.v[best].cap))
      best = i;
  if (best == p->free.n) return NULL;
  void *data = p->free.v[best].p;
  *cap = p->free.v[best].cap;
  p->free.v[best] = p->free.v[--p->free.n];
  return data;
}

int op_xt_alloc(op_xt *t, int32_t dtype, const int64_t *dims, int rank, op_error *err) {
  if (rank < 0 || rank > OP_MAX_RANK) return op_fail(err, OP_UNSUPPORTED, "tensor rank %d is over %d", rank, OP_MAX_RANK);
  for (int i = 0; i < rank; i++)
    if (dims[i] < 0) return op_fail(err, OP_INVALID, "tensor dimension %lld is negative", (long long)dims[i]);
  int64_t n = op_dims_numel(dims, (size_t)rank);
  bool huge = n < 0; /* its nonzero dims multiply past int64 (even beside a 0): refused by the budget below */
  t->dtype = dtype; /* type and shape are set first, so a refusal can name the output it was for */
  t->rank = rank;
  if (rank) memmove(t->dims, dims, (size_t)rank * sizeof(int64_t));
  uint64_t bytes;
  if (huge || !op_bytes_of(n, op_xt_elem_size(dtype), &bytes)) bytes = UINT64_MAX;
  if (op_budget_check(bytes, NULL, err)) return -1; /* checked before any allocation, never an abort */
  t->numel = n;
  size_t need = (size_t)(n ? n : 1) * op_xt_elem_size(dtype);
  t->data = current_pool ? pool_take(current_pool, need, &t->cap) : NULL;
  if (!t->data) { /* a pooled buffer is already counted in the budget's running total */
    if (op_budget_take(need, NULL, err)) return -1;
    t->data = malloc(need); /* sized by the data: running out is an error, not an abort */
    if (!t->data) {
      op_budget_give(need);
      return op_fail(err, OP_NOMEM, "out of memory for a tensor of %zu bytes", need);
    }
    t->cap = need;
  }
  t->owned = true;
  return 0;
}

void op_xt_disown(op_xt *t) {
  if (t->owned) op_budget_give(t->cap);
  t->owned = false;
  t->cap = 0;
}

void op_xt_view(op_xt *out, const op_xt *src, const int64_t *dims, int rank) {
  int64_t d[OP_MAX_RANK];
  memcpy(d, dims, (size_t)rank * sizeof(int64_t));
  out->dtype = src->dtype;
  out->rank = rank;
  memcpy(out->dims, d, (size_t)rank * sizeof(int64_t));
  out->numel = src->numel;
  out->data = src->data;
  out->owned = false;
}

void op_xt_to_tensor(op_tensor *p, const op_xt *x) {
  p->dtype = x->dtype;
  p->rank = x->rank;
  if (x->rank) memcpy(p->dims, x->dims, (size_t)x->rank * sizeof(int64_t));
  p->data = x->data;
  p->nbytes = (size_t)x->numel * op_xt_elem_size(x->dtype);
}

void op_xt_release(op_xt *t) {
  if (t->owned && current_pool && t->cap)
    OP_VEC_PUSH(current_pool->free, ((pooled){t->data, t->cap}));
  else if (t->owned)
    free(t->data), op_budget_give(t->cap); /* cap 0: memory the budget never counted (op_xt_disown) */
  memset(t, 0, sizeof *t);
}

int64_t op_xt_int(const op_xt *t, int64_t i) {
  switch (t->dtype) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
      return ((const int64_t *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
      return ((const int32_t *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
      return (int64_t)((const float *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8:
      return ((const int8_t *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16:
      return ((const int16_t *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16:
      return ((const uint16_t *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
      return ((const uint32_t *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
      return (int64_t)((const uint64_t *)t->data)[i];
    default: /* uint8, bool */
      return ((const uint8_t *)t->data)[i];
  }
}

int op_axis(int64_t axis, int rank) {
  if (axis < 0) axis += rank;
  return axis < 0 || axis >= (rank ? rank : 1) ? -1 : (int)axis;
}

int op_kvfail(const op_kctx *k, op_error *err, op_status code, const char *fmt, va_list ap) {
  char why[768];
  vsnprintf(why, sizeof why, fmt, ap);
  return op_fail(err, code, "%s: node '%s' (%s): %s", k->model, op_node_name(k->node), k->node->op_type, why);
}

int op_kfail(const op_kctx *k, op_error *err, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int rc = op_kvfail(k, err, OP_INVALID, fmt, ap);
  va_end(ap);
  return rc;
}

int64_t op_kattr_int(const op_kctx *k, const char *name, int64_t dflt) { return op_node_attr_int(k->node, name, dflt); }

float op_kattr_float(const op_kctx *k, const char *name, float dflt) { return op_node_attr_float(k->node, name, dflt); }

const int64_t *op_kattr_ints(const op_kctx *k, const char *name, size_t *n) {
  Onnx__AttributeProto *a = op_node_attr(k->node, name);
  *n = a ? a->n_ints : 0;
  return a ? a->ints : NULL;
}

int op_xt_from_proto(op_xt *out, const Onnx__TensorProto *t, const char *origin, op_error *err) {
  if (op_tensor_validate(t, origin, err)) return -1;
  if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL)
    return op_fail(err, OP_UNSUPPORTED, "%s: tensor '%s': external data inside a node", origin, t->name ? t->name : "");
  if (t->n_dims > OP_MAX_RANK) return op_fail(err, OP_UNSUPPORTED, "%s: tensor rank over %d", origin, OP_MAX_RANK);
  int32_t dt = t->data_type;
  size_t es = op_dtype_size(dt);
  if (!es || dt == ONNX__TENSOR_PROTO__DATA_TYPE__STRING)
    return op_fail(err, OP_UNSUPPORTED, "%s: tensor '%s': %s tensors are not supported (data type %d)", origin,
                   t->name ? t->name : "", op_dtype_name(dt), dt);
  if (op_xt_alloc(out, dt, t->dims, (int)t->n_dims, err)) {
    char why[sizeof err->message];
    snprintf(why, sizeof why, "%s", err ? err->message : "");
    return op_fail(err, err ? err->code : OP_NOMEM, "%s: tensor '%s': %s", origin, t->name ? t->name : "", why);
  }
  int64_t n = out->numel;
  if (t->has_raw_data) {
    if (t->raw_data.len) memcpy(out->data, t->raw_data.data, t->raw_data.len);
    return 0;
  }
  for (int64_t i = 0; i < n; i++) {
    switch (dt) {
      case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT:
        ((float *)out->data)[i] = t->float_data[i];
        break;
      case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE:
        ((double *)out->data)[i] = t->double_data[i];
        break;
      case ONNX__TENSOR_PROTO__DATA_TYPE__INT64:
        ((int64_t *)out->data)[i] = t->int64_data[i];
        break;
      case ONNX__TENSOR_PROTO__DATA_TYPE__INT32:
        ((int32_t *)out->data)[i] = t->int32_data[i];
        break;
      case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64:
      case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32:
        if (es == 8) ((uint64_t *)out->data)[i] = t->uint64_data[i];
        else ((uint32_t *)out->data)[i] = (uint32_t)t->uint64_data[i];
        break;
      default: /* int8, uint8, int16, uint16, bool, float16 live in int32_data */
        if (es == 1) ((uint8_t *)out->data)[i] = (uint8_t)t->int32_data[i];
        else if (es == 2) ((uint16_t *)out->data)[i] = (uint16_t)t->int32_data[i];
        else return op_fail(err, OP_UNSUPPORTED, "%s: tensor '%s': typed data of type %d", origin, t->name, dt);
    }
  }
  return 0;
}
