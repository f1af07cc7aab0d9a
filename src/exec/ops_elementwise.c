/* ops_elementwise.c - element-wise operators with numpy-style broadcasting: arithmetic and
 * comparisons on float/double/int64/int32/uint64 (bool for logic; other types reach them widened by
 * types.c), Where, Cast, and the unary math of transformer graphs (Erf, Tanh, Sqrt, Gelu, ...).
 * Broadcasting walks the output in rows of its last axis. Integer arithmetic wraps (computed unsigned). */
#include "exec/exec.h"
#include "exec/fastmath.h"
#include "exec/ops_util.h" /* ou_bcast: numpy broadcasting, shared with the other kernel families */

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define T_FLOAT ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT
#define T_INT64 ONNX__TENSOR_PROTO__DATA_TYPE__INT64
#define T_INT32 ONNX__TENSOR_PROTO__DATA_TYPE__INT32
#define T_BOOL ONNX__TENSOR_PROTO__DATA_TYPE__BOOL
#define T_DOUBLE ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE
#define T_UINT64 ONNX__TENSOR_PROTO__DATA_TYPE__UINT64
#define T_UINT32 ONNX__TENSOR_PROTO__DATA_TYPE__UINT32

/* Calls row(offsets, n) for every row of the output's last axis; offsets are per input. */
#define BCAST_ROWS(b, nin, ...)                                                                   \
  do {                                                                                            \
    int64_t idx_[OP_MAX_RANK] = {0}, off_[3] = {0, 0, 0};                                         \
    int last_ = (b)->rank - 1;                                                                    \
    int64_t n_ = (b)->rank ? (b)->dims[last_] : 1, rows_ = n_ ? (b)->numel / n_ : 0, o_ = 0;      \
    int64_t s0_ = (b)->rank ? (b)->stride[0][last_] : 0, s1_ = (b)->rank ? (b)->stride[1][last_] : 0, \
            s2_ = (b)->rank ? (b)->stride[2][last_] : 0;                                          \
    (void)s0_, (void)s1_, (void)s2_;                                                              \
    for (int64_t r_ = 0; r_ < rows_; r_++, o_ += n_) {                                            \
      __VA_ARGS__;                                                                                \
      for (int d_ = last_ - 1; d_ >= 0; d_--) {                                                   \
        for (int i_ = 0; i_ < (nin); i_++) off_[i_] += (b)->stride[i_][d_];                       \
        if (++idx_[d_] < (b)->dims[d_]) break;                                                    \
        for (int i_ = 0; i_ < (nin); i_++) off_[i_] -= (b)->stride[i_][d_] * (b)->dims[d_];       \
        idx_[d_] = 0;                                                                             \
      }                                                                                           \
    }                                                                                             \
  } while (0)

enum binop { B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MIN, B_MAX, B_EQ, B_LT, B_GT, B_LE, B_GE, B_AND, B_OR };

#define ARITH_ROW(T, A, B, O, sa, sb, n, op)                                          \
  do {                                                                              \
    const T *a_ = (A);                                                              \
    const T *b_ = (B);                                                              \
    T *o2_ = (O);                                                                   \
    switch (op) {                                                                   \
      case B_ADD:                                                                   \
        for (int64_t j = 0; j < (n); j++) o2_[j] = a_[j * (sa)] + b_[j * (sb)];     \
        break;                                                                      \
      case B_SUB:                                                                   \
        for (int64_t j = 0; j < (n); j++) o2_[j] = a_[j * (sa)] - b_[j * (sb)];     \
        break;                                                                      \
      case B_MUL:                                                                   \
        for (int64_t j = 0; j < (n); j++) o2_[j] = a_[j * (sa)] * b_[j * (sb)];     \
        break;                                                                      \
      case B_MIN:                                                                   \
        for (int64_t j = 0; j < (n); j++) o2_[j] = a_[j * (sa)] < b_[j * (sb)] ? a_[j * (sa)] : b_[j * (sb)]; \
        break;                                                                      \
      case B_MAX:                                                                   \
        for (int64_t j = 0; j < (n); j++) o2_[j] = a_[j * (sa)] > b_[j * (sb)] ? a_[j * (sa)] : b_[j * (sb)]; \
        break;                                                                      \
      default:                                                                      \
        break;                                                                      \
    }                                                                               \
  } while (0)

/* Integers wrap around (two's complement), as ONNX Runtime's do: computed in the unsigned type U so
 * that overflow is defined. */
#define IARITH_ROW(T, U, A, B, O, sa, sb, n, op)                                      \
  do {                                                                              \
    const T *a_ = (A);                                                              \
    const T *b_ = (B);                                                              \
    T *o2_ = (O);                                                                   \
    switch (op) {                                                                   \
      case B_ADD:                                                                   \
        for (int64_t j = 0; j < (n); j++) o2_[j] = (T)((U)a_[j * (sa)] + (U)b_[j * (sb)]); \
        break;                                                                      \
      case B_SUB:                                                                   \
        for (int64_t j = 0; j < (n); j++) o2_[j] = (T)((U)a_[j * (sa)] - (U)b_[j * (sb)]); \
        break;                                                                      \
      case B_MUL:                                                                   \
        for (int64_t j = 0; j < (n); j++) o2_[j] = (T)((U)a_[j * (sa)] * (U)b_[j * (sb)]); \
        break;                                                                      \
      default:                                                                      \
        ARITH_ROW(T, A, B, O, sa, sb, n, op);                                       \
        break;                                                                      \
    }                                                                               \
  } while (0)

#define CMP_ROW(T, A, B, O, sa, sb, n, op)                                                    \
  do {                                                                                      \
    const T *a_ = (A);                                                                      \
    const T *b_ = (B);                                                                      \
    uint8_t *o2_ = (O);                                                                     \
    for (int64_t j = 0; j < (n); j++) {                                                     \
      T x_ = a_[j * (sa)], y_ = b_[j * (sb)];                                               \
      o2_[j] = op == B_EQ ? x_ == y_ : op == B_LT ? x_ < y_ : op == B_GT ? x_ > y_ : op == B_LE ? x_ <= y_ : \
               op == B_GE ? x_ >= y_ : op == B_AND ? (x_ && y_) : (x_ || y_);                \
    }                                                                                       \
  } while (0)

static int binary(const op_kctx *k, op_xt **in, op_xt *out, enum binop op, op_error *err) {
  op_xt *a = in[0], *b = in[1];
  if (a->dtype != b->dtype)
    return op_kfail(k, err, "input types differ (%s and %s)", op_dtype_name(a->dtype), op_dtype_name(b->dtype));
  int32_t dt = a->dtype;
  bool logic = op == B_AND || op == B_OR, cmp = op >= B_EQ;
  if (logic && dt != T_BOOL) return op_kfail(k, err, "expects bool inputs");
  if (!logic && dt != T_FLOAT && dt != T_INT64 && dt != T_INT32 && dt != T_DOUBLE && dt != T_UINT64 &&
      !(cmp && dt == T_BOOL))
    return op_kfail(k, err, "unsupported input type %s", op_dtype_name(dt));
  ou_bcast bc;
  if (ou_bcast_init(k, in, 2, &bc, err) || op_xt_alloc(out, cmp ? T_BOOL : dt, bc.dims, bc.rank, err)) return -1;
  size_t es = op_xt_elem_size(dt);
  const char *A = a->data, *B = b->data;
  char *O = out->data;
  size_t eo = op_xt_elem_size(out->dtype);
  bool divzero = false; /* integer division by zero has no value: refused, as ONNX Runtime faults on it */
  BCAST_ROWS(&bc, 2, {
    const void *pa = A + off_[0] * (int64_t)es, *pb = B + off_[1] * (int64_t)es;
    void *po = O + o_ * (int64_t)eo;
    if (cmp) {
      if (dt == T_FLOAT) CMP_ROW(float, pa, pb, po, s0_, s1_, n_, op);
      else if (dt == T_INT64) CMP_ROW(int64_t, pa, pb, po, s0_, s1_, n_, op);
      else if (dt == T_INT32) CMP_ROW(int32_t, pa, pb, po, s0_, s1_, n_, op);
      else if (dt == T_DOUBLE) CMP_ROW(double, pa, pb, po, s0_, s1_, n_, op);
      else if (dt == T_UINT64) CMP_ROW(uint64_t, pa, pb, po, s0_, s1_, n_, op);
      else CMP_ROW(uint8_t, pa, pb, po, s0_, s1_, n_, op);
    } else if (op == B_DIV) {
      if (dt == T_FLOAT && s0_ == 1 && s1_ == 0) {
        const float *x = pa;
        float *o = po, y = *(const float *)pb;
        for (int64_t j = 0; j < n_; j++) o[j] = x[j] / y;
      } else if (dt == T_FLOAT) {
        const float *x = pa, *y = pb;
        float *o = po;
        for (int64_t j = 0; j < n_; j++) o[j] = x[j * s0_] / y[j * s1_];
      } else if (dt == T_DOUBLE) {
        const double *x = pa, *y = pb;
        double *o = po;
        for (int64_t j = 0; j < n_; j++) o[j] = x[j * s0_] / y[j * s1_];
      } else if (dt == T_UINT64) {
        const uint64_t *x = pa, *y = pb;
        uint64_t *o = po;
        for (int64_t j = 0; j < n_; j++) {
          divzero |= !y[j * s1_];
          o[j] = y[j * s1_] ? x[j * s0_] / y[j * s1_] : 0;
        }
      } else {
        for (int64_t j = 0; j < n_; j++) {
          int64_t x = dt == T_INT64 ? ((const int64_t *)pa)[j * s0_] : ((const int32_t *)pa)[j * s0_];
          int64_t y = dt == T_INT64 ? ((const int64_t *)pb)[j * s1_] : ((const int32_t *)pb)[j * s1_];
          /* integer division truncates toward zero, as ONNX Runtime does; MIN / -1 wraps to MIN */
          divzero |= !y;
          int64_t q = y == -1 ? (int64_t)(0 - (uint64_t)x) : y ? x / y : 0;
          if (dt == T_INT64) ((int64_t *)po)[j] = q;
          else ((int32_t *)po)[j] = (int32_t)(uint32_t)(uint64_t)q;
        }
      }
    } else if (op == B_POW) {
      if (dt == T_FLOAT && s1_ == 0 && *(const float *)pb == 2.f) { /* a square (norms' variance): vectorised */
        const float *x = pa;
        float *o = po;
        for (int64_t j = 0; j < n_; j++) o[j] = x[j * s0_] * x[j * s0_];
      } else if (dt == T_FLOAT) {
        const float *x = pa, *y = pb;
        float *o = po;
        for (int64_t j = 0; j < n_; j++) {
          float e = y[j * s1_], v = x[j * s0_];
          o[j] = e == 2.f ? v * v : e == 3.f ? v * v * v : e == 0.5f ? sqrtf(v) : powf(v, e);
        }
      } else {
        for (int64_t j = 0; j < n_; j++) {
          double v = dt == T_INT64 ? (double)((const int64_t *)pa)[j * s0_] : dt == T_INT32 ? ((const int32_t *)pa)[j * s0_] : ((const double *)pa)[j * s0_];
          double e = dt == T_INT64 ? (double)((const int64_t *)pb)[j * s1_] : dt == T_INT32 ? ((const int32_t *)pb)[j * s1_] : ((const double *)pb)[j * s1_];
          double r = pow(v, e);
          if (dt == T_INT64) ((int64_t *)po)[j] = (int64_t)r;
          else if (dt == T_INT32) ((int32_t *)po)[j] = (int32_t)r;
          else ((double *)po)[j] = r;
        }
      }
    } else if (dt == T_FLOAT && s0_ == 1 && s1_ == 1) { /* the common cases, with strides the compiler sees */
      ARITH_ROW(float, pa, pb, po, 1, 1, n_, op);
    } else if (dt == T_FLOAT && s0_ == 1 && s1_ == 0) {
      ARITH_ROW(float, pa, pb, po, 1, 0, n_, op);
    } else if (dt == T_FLOAT) {
      ARITH_ROW(float, pa, pb, po, s0_, s1_, n_, op);
    } else if (dt == T_INT64) {
      IARITH_ROW(int64_t, uint64_t, pa, pb, po, s0_, s1_, n_, op);
    } else if (dt == T_INT32) {
      IARITH_ROW(int32_t, uint32_t, pa, pb, po, s0_, s1_, n_, op);
    } else if (dt == T_UINT64) {
      IARITH_ROW(uint64_t, uint64_t, pa, pb, po, s0_, s1_, n_, op);
    } else {
      ARITH_ROW(double, pa, pb, po, s0_, s1_, n_, op);
    }
  });
  return divzero ? op_kfail(k, err, "integer division by zero") : 0;
}

/* Pow's exponent may have another type than its base (opset 12+): bring it to the base's type. */
static int pow_kernel(const op_kctx *k, op_xt **in, op_xt *out, op_error *err) {
  op_xt *a = in[0], *b = in[1];
  if (a->dtype == b->dtype) return binary(k, in, out, B_POW, err);
  op_xt conv;
  if (op_xt_alloc(&conv, a->dtype, b->dims, b->rank, err)) return -1;
  for (int64_t i = 0; i < b->numel; i++) {
    double v = b->dtype == T_FLOAT ? ((float *)b->data)[i] : b->dtype == T_DOUBLE ? ((double *)b->data)[i] : (double)op_xt_int(b, i);
    if (a->dtype == T_FLOAT) ((float *)conv.data)[i] = (float)v;
    else if (a->dtype == T_DOUBLE) ((double *)conv.data)[i] = v;
    else if (a->dtype == T_INT64) ((int64_t *)conv.data)[i] = (int64_t)v;
    else if (a->dtype == T_INT32) ((int32_t *)conv.data)[i] = (int32_t)v;
  }
  op_xt *pair[2] = {a, &conv};
  int rc = binary(k, pair, out, B_POW, err);
  op_xt_release(&conv);
  return rc;
}

#define BINARY_KERNEL(fn, op)                                                                     \
  OP_KERNEL(fn) {                                                                                 \
    (void)n_in, (void)n_out;                                                                      \
    return binary(k, in, out, op, err);                                                           \
  }
BINARY_KERNEL(op_k_add, B_ADD)
BINARY_KERNEL(op_k_sub, B_SUB)
BINARY_KERNEL(op_k_mul, B_MUL)
BINARY_KERNEL(op_k_div, B_DIV)
BINARY_KERNEL(op_k_equal, B_EQ)
BINARY_KERNEL(op_k_less, B_LT)
BINARY_KERNEL(op_k_greater, B_GT)
BINARY_KERNEL(op_k_less_equal, B_LE)
BINARY_KERNEL(op_k_greater_equal, B_GE)
BINARY_KERNEL(op_k_and, B_AND)
BINARY_KERNEL(op_k_or, B_OR)

OP_KERNEL(op_k_pow) {
  (void)n_in, (void)n_out;
  return pow_kernel(k, in, out, err);
}

/* Min/Max are variadic: fold left. */
static int fold(const op_kctx *k, op_xt **in, size_t n_in, op_xt *out, enum binop op, op_error *err) {
  op_xt acc;
  if (op_xt_alloc(&acc, in[0]->dtype, in[0]->dims, in[0]->rank, err)) return -1;
  memcpy(acc.data, in[0]->data, (size_t)in[0]->numel * op_xt_elem_size(in[0]->dtype));
  for (size_t i = 1; i < n_in; i++) {
    op_xt next;
    op_xt *pair[2] = {&acc, in[i]};
    if (binary(k, pair, &next, op, err)) {
      op_xt_release(&acc);
      return -1;
    }
    op_xt_release(&acc);
    acc = next;
  }
  *out = acc;
  return 0;
}

OP_KERNEL(op_k_min) {
  (void)n_out;
  return fold(k, in, n_in, out, B_MIN, err);
}

OP_KERNEL(op_k_max) {
  (void)n_out;
  return fold(k, in, n_in, out, B_MAX, err);
}

OP_KERNEL(op_k_where) {
  (void)n_in, (void)n_out;
  op_xt *c = in[0], *x = in[1], *y = in[2];
  if (c->dtype != T_BOOL) return op_kfail(k, err, "condition is not bool");
  if (x->dtype != y->dtype) return op_kfail(k, err, "branch types differ");
  ou_bcast bc;
  if (ou_bcast_init(k, in, 3, &bc, err) || op_xt_alloc(out, x->dtype, bc.dims, bc.rank, err)) return -1;
  size_t es = op_xt_elem_size(x->dtype);
  const uint8_t *C = c->data;
  const char *X = x->data, *Y = y->data;
  char *O = out->data;
  BCAST_ROWS(&bc, 3, {
    for (int64_t j = 0; j < n_; j++) {
      const char *src = C[off_[0] + j * s0_] ? X + (off_[1] + j * s1_) * (int64_t)es : Y + (off_[2] + j * s2_) * (int64_t)es;
      memcpy(O + (o_ + j) * (int64_t)es, src, es);
    }
  });
  return 0;
}

OP_KERNEL(op_k_not) {
  (void)n_in, (void)n_out;
  if (in[0]->dtype != T_BOOL) return op_kfail(k, err, "expects bool input");
  if (op_xt_alloc(out, T_BOOL, in[0]->dims, in[0]->rank, err)) return -1;
  for (int64_t i = 0; i < in[0]->numel; i++) ((uint8_t *)out->data)[i] = !((uint8_t *)in[0]->data)[i];
  return 0;
}

OP_KERNEL(op_k_identity) { /* also Dropout at inference: the data passes, the mask is all true */
  (void)n_in;
  if (op_xt_alloc(out, in[0]->dtype, in[0]->dims, in[0]->rank, err)) return -1;
  memcpy(out->data, in[0]->data, (size_t)in[0]->numel * op_xt_elem_size(in[0]->dtype));
  if (n_out > 1 && op_xt_alloc(&out[1], T_BOOL, in[0]->dims, in[0]->rank, err) == 0)
    memset(out[1].data, 1, (size_t)in[0]->numel);
  (void)k;
  return 0;
}

/* ---- Cast ---- */

/* Every pair of numeric types (types.c's op_xt_convert: float -> integer truncates toward zero,
 * integer narrowing wraps, float16/bfloat16 round to nearest even); strings and float8 are refused. */
OP_KERNEL(op_k_cast) {
  (void)n_in, (void)n_out;
  int32_t to = (int32_t)op_kattr_int(k, "to", 0);
  if (!op_dtype_numeric(to) || !op_dtype_numeric(in[0]->dtype))
    return op_kfail(k, err, "cast from %s to %s is not supported", op_dtype_name(in[0]->dtype), op_dtype_name(to));
  return op_xt_convert(out, in[0], to, err);
}

/* ---- unary math ---- */

enum unop { U_SQRT, U_ERF, U_TANH, U_RELU, U_SIGMOID, U_NEG, U_EXP, U_ABS, U_RECIP, U_LOG, U_GELU, U_GELU_TANH };

/* Float unary math; exp and erf are fastmath's branch-free ones, so these loops vectorise. */
OP_VECTOR_CLONES static void unary_f32(const float *a, float *o, int64_t n, enum unop op) {
  switch (op) {
    case U_SQRT: for (int64_t i = 0; i < n; i++) o[i] = sqrtf(a[i]); break;
    case U_ERF: for (int64_t i = 0; i < n; i++) o[i] = op_erff(a[i]); break;
    case U_TANH: for (int64_t i = 0; i < n; i++) o[i] = tanhf(a[i]); break;
    case U_RELU: for (int64_t i = 0; i < n; i++) o[i] = a[i] > 0.f ? a[i] : 0.f; break;
    case U_SIGMOID: for (int64_t i = 0; i < n; i++) o[i] = 1.f / (1.f + op_expf(-a[i])); break;
    case U_NEG: for (int64_t i = 0; i < n; i++) o[i] = -a[i]; break;
    case U_EXP: for (int64_t i = 0; i < n; i++) o[i] = op_expf(a[i]); break;
    case U_ABS: for (int64_t i = 0; i < n; i++) o[i] = fabsf(a[i]); break;
    case U_RECIP: for (int64_t i = 0; i < n; i++) o[i] = 1.f / a[i]; break;
    case U_LOG: for (int64_t i = 0; i < n; i++) o[i] = logf(a[i]); break;
    case U_GELU: for (int64_t i = 0; i < n; i++) o[i] = 0.5f * a[i] * (1.f + op_erff(a[i] * (float)M_SQRT1_2)); break;
    case U_GELU_TANH:
      for (int64_t i = 0; i < n; i++)
        o[i] = 0.5f * a[i] * (1.f + tanhf(0.7978845608028654f * (a[i] + 0.044715f * a[i] * a[i] * a[i])));
      break;
  }
}

static int unary(const op_kctx *k, op_xt *x, op_xt *out, enum unop op, op_error *err) {
  bool int_ok = op == U_NEG || op == U_ABS || op == U_RELU;
  if (x->dtype != T_FLOAT && !(int_ok && (x->dtype == T_INT64 || x->dtype == T_INT32)))
    return op_kfail(k, err, "unsupported input type %d", x->dtype);
  if (op_xt_alloc(out, x->dtype, x->dims, x->rank, err)) return -1;
  int64_t n = x->numel;
  if (x->dtype != T_FLOAT) {
    for (int64_t i = 0; i < n; i++) {
      int64_t v = op_xt_int(x, i);
      v = op == U_NEG ? -v : op == U_ABS ? (v < 0 ? -v : v) : (v < 0 ? 0 : v);
      if (x->dtype == T_INT64) ((int64_t *)out->data)[i] = v;
      else ((int32_t *)out->data)[i] = (int32_t)v;
    }
    return 0;
  }
  unary_f32(x->data, out->data, n, op);
  return 0;
}

#define UNARY_KERNEL(fn, op)                                                                      \
  OP_KERNEL(fn) {                                                                                 \
    (void)n_in, (void)n_out;                                                                      \
    return unary(k, in[0], out, op, err);                                                         \
  }
UNARY_KERNEL(op_k_sqrt, U_SQRT)
UNARY_KERNEL(op_k_erf, U_ERF)
UNARY_KERNEL(op_k_tanh, U_TANH)
UNARY_KERNEL(op_k_relu, U_RELU)
UNARY_KERNEL(op_k_sigmoid, U_SIGMOID)
UNARY_KERNEL(op_k_neg, U_NEG)
UNARY_KERNEL(op_k_exp, U_EXP)
UNARY_KERNEL(op_k_abs, U_ABS)
UNARY_KERNEL(op_k_reciprocal, U_RECIP)
UNARY_KERNEL(op_k_log, U_LOG)

OP_KERNEL(op_k_gelu) {
  (void)n_in, (void)n_out;
  Onnx__AttributeProto *a = op_node_attr(k->node, "approximate");
  bool tanh_form = a && a->s.len == 4 && memcmp(a->s.data, "tanh", 4) == 0;
  return unary(k, in[0], out, tanh_form ? U_GELU_TANH : U_GELU, err);
}
