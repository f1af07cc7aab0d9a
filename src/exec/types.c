/* types.c - element types of the executor: float16/bfloat16 bit conversions, Cast's conversion between
 * every pair of numeric ONNX types, and the one type adapter through which every kernel runs, so kernels
 * only compute float32 / int64 / int32 / bool (and the extra types their rule below names). */
#include "exec/exec.h"
#include "exec/fastmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define T_FLOAT ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT
#define T_UINT8 ONNX__TENSOR_PROTO__DATA_TYPE__UINT8
#define T_INT8 ONNX__TENSOR_PROTO__DATA_TYPE__INT8
#define T_UINT16 ONNX__TENSOR_PROTO__DATA_TYPE__UINT16
#define T_INT16 ONNX__TENSOR_PROTO__DATA_TYPE__INT16
#define T_INT32 ONNX__TENSOR_PROTO__DATA_TYPE__INT32
#define T_INT64 ONNX__TENSOR_PROTO__DATA_TYPE__INT64
#define T_STRING ONNX__TENSOR_PROTO__DATA_TYPE__STRING
#define T_BOOL ONNX__TENSOR_PROTO__DATA_TYPE__BOOL
#define T_FLOAT16 ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16
#define T_DOUBLE ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE
#define T_UINT32 ONNX__TENSOR_PROTO__DATA_TYPE__UINT32
#define T_UINT64 ONNX__TENSOR_PROTO__DATA_TYPE__UINT64
#define T_BFLOAT16 ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16

const char *op_dtype_name(int32_t dt) {
  static const char *names[] = {"undefined", "float32", "uint8",   "int8",       "uint16",      "int16",
                                "int32",     "int64",   "string",  "bool",       "float16",     "float64",
                                "uint32",    "uint64",  "complex64", "complex128", "bfloat16",  "float8e4m3fn",
                                "float8e4m3fnuz", "float8e5m2", "float8e5m2fnuz", "uint4", "int4"};
  return dt >= 0 && dt < (int32_t)(sizeof names / sizeof *names) ? names[dt] : "unknown type";
}

/* ---- float16 / bfloat16 ---- */

static uint32_t f32_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}

static float bits_f32(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/* Branch-free conversions (Maratos Dukhan's FP16 method, as PyTorch's c10::Half uses), so the
 * widening and narrowing loops vectorise; they rely on float arithmetic rounding to nearest even,
 * the default mode. */
static inline float f16_to_f32(uint16_t h) {
  uint32_t w = (uint32_t)h << 16, sign = w & 0x80000000u, two_w = w + w;
  /* normals, inf and NaN: move the exponent and mantissa into place, then rebias by 2^-112 */
  float normal = bits_f32((two_w >> 4) + (UINT32_C(0xe0) << 23)) * 0x1p-112f;
  /* subnormals: the mantissa as the low bits of 0.5's mantissa, minus 0.5 */
  float subnormal = bits_f32((two_w >> 17) | (UINT32_C(126) << 23)) - 0.5f;
  return bits_f32(sign | (two_w < (UINT32_C(1) << 27) ? f32_bits(subnormal) : f32_bits(normal)));
}

/* Round to nearest, ties to even, as ONNX Runtime's MLFloat16 does; overflow gives inf, NaN stays NaN. */
static inline uint16_t f32_to_f16(float f) {
  /* scaling up then down makes the float unit round the mantissa at half precision's position */
  float base = (fabsf(f) * 0x1p112f) * 0x1p-110f;
  uint32_t w = f32_bits(f), shl1_w = w + w, sign = w & 0x80000000u, bias = shl1_w & 0xff000000u;
  if (bias < 0x71000000u) bias = 0x71000000u;
  base = bits_f32((bias >> 1) + 0x07800000u) + base;
  uint32_t bits = f32_bits(base), nonsign = ((bits >> 13) & 0x7c00u) + (bits & 0x0fffu);
  return (uint16_t)((sign >> 16) | (shl1_w > 0xff000000u ? 0x7e00u : nonsign));
}

static inline float bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

static inline uint16_t f32_to_bf16(float f) {
  uint32_t u = f32_bits(f);
  uint32_t rounded = (u + 0x7fff + ((u >> 16) & 1)) >> 16;
  return (uint16_t)((u & 0x7fffffffu) > 0x7f800000u ? (u >> 16) | 0x40 : rounded); /* NaN stays NaN, quiet */
}

float op_f16_to_f32(uint16_t h) { return f16_to_f32(h); }
uint16_t op_f32_to_f16(float f) { return f32_to_f16(f); }
float op_bf16_to_f32(uint16_t b) { return bf16_to_f32(b); }
uint16_t op_f32_to_bf16(float f) { return f32_to_bf16(f); }

/* ---- conversion between numeric types ---- */

static bool is_floating(int32_t dt) { return dt == T_FLOAT || dt == T_DOUBLE || dt == T_FLOAT16 || dt == T_BFLOAT16; }

static bool is_integral(int32_t dt) {
  return dt == T_UINT8 || dt == T_INT8 || dt == T_UINT16 || dt == T_INT16 || dt == T_INT32 || dt == T_INT64 ||
         dt == T_UINT32 || dt == T_UINT64 || dt == T_BOOL;
}

bool op_dtype_numeric(int32_t dt) { return is_floating(dt) || is_integral(dt); }

static double get_float(const void *p, int32_t dt, int64_t i) {
  switch (dt) {
    case T_FLOAT: return ((const float *)p)[i];
    case T_DOUBLE: return ((const double *)p)[i];
    case T_FLOAT16: return f16_to_f32(((const uint16_t *)p)[i]);
    default: return bf16_to_f32(((const uint16_t *)p)[i]);
  }
}

/* An integer element as its two's-complement bits (uint64 values above INT64_MAX keep their bits). */
static int64_t get_int(const void *p, int32_t dt, int64_t i) {
  switch (dt) {
    case T_UINT8: case T_BOOL: return ((const uint8_t *)p)[i];
    case T_INT8: return ((const int8_t *)p)[i];
    case T_UINT16: return ((const uint16_t *)p)[i];
    case T_INT16: return ((const int16_t *)p)[i];
    case T_INT32: return ((const int32_t *)p)[i];
    case T_UINT32: return ((const uint32_t *)p)[i];
    default: return ((const int64_t *)p)[i]; /* int64, uint64 */
  }
}

/* Stores the low bits of v: integer narrowing wraps modulo 2^bits, as C's conversions to unsigned do. */
static void put_int(void *p, int32_t dt, int64_t i, int64_t v) {
  uint64_t u = (uint64_t)v;
  switch (dt) {
    case T_UINT8: case T_INT8: ((uint8_t *)p)[i] = (uint8_t)u; break;
    case T_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    case T_UINT16: case T_INT16: ((uint16_t *)p)[i] = (uint16_t)u; break;
    case T_INT32: case T_UINT32: ((uint32_t *)p)[i] = (uint32_t)u; break;
    default: ((uint64_t *)p)[i] = u; break;
  }
}

static void put_float(void *p, int32_t dt, int64_t i, double v) {
  switch (dt) {
    case T_FLOAT: ((float *)p)[i] = (float)v; break;
    case T_DOUBLE: ((double *)p)[i] = v; break;
    case T_FLOAT16: ((uint16_t *)p)[i] = f32_to_f16((float)v); break; /* through float, as ONNX Runtime does */
    default: ((uint16_t *)p)[i] = f32_to_bf16((float)v); break;
  }
}

/* A float truncated toward zero; NaN and values outside int64 give INT64_MIN (x86's "integer
 * indefinite"): ONNX leaves out-of-range float-to-integer casts undefined, this makes them defined. */
static int64_t trunc_int(double v, int32_t to) {
  if (to == T_UINT64 && v >= 0x1p63 && v < 0x1p64) return (int64_t)(uint64_t)v;
  if (!(v >= -0x1p63 && v < 0x1p63)) return INT64_MIN;
  return (int64_t)v;
}

/* Widening loops the adapter runs on every non-native tensor, free of per-element switches so they
 * vectorise (one copy per vector width). */
OP_VECTOR_CLONES static bool convert_fast(void *restrict o, int32_t to, const void *restrict x, int32_t from, int64_t n) {
  if (to == T_FLOAT && from == T_FLOAT16)
    for (int64_t i = 0; i < n; i++) ((float *)o)[i] = f16_to_f32(((const uint16_t *)x)[i]);
  else if (to == T_FLOAT && from == T_BFLOAT16)
    for (int64_t i = 0; i < n; i++) ((float *)o)[i] = bf16_to_f32(((const uint16_t *)x)[i]);
  else if (to == T_FLOAT16 && from == T_FLOAT)
    for (int64_t i = 0; i < n; i++) ((uint16_t *)o)[i] = f32_to_f16(((const float *)x)[i]);
  else if (to == T_BFLOAT16 && from == T_FLOAT)
    for (int64_t i = 0; i < n; i++) ((uint16_t *)o)[i] = f32_to_bf16(((const float *)x)[i]);
  else if (to == T_FLOAT && from == T_DOUBLE)
    for (int64_t i = 0; i < n; i++) ((float *)o)[i] = (float)((const double *)x)[i];
  else if (to == T_DOUBLE && from == T_FLOAT)
    for (int64_t i = 0; i < n; i++) ((double *)o)[i] = ((const float *)x)[i];
  else if (to == T_INT64 && from == T_INT8)
    for (int64_t i = 0; i < n; i++) ((int64_t *)o)[i] = ((const int8_t *)x)[i];
  else if (to == T_INT64 && from == T_UINT8)
    for (int64_t i = 0; i < n; i++) ((int64_t *)o)[i] = ((const uint8_t *)x)[i];
  else if (to == T_INT8 && from == T_INT64)
    for (int64_t i = 0; i < n; i++) ((uint8_t *)o)[i] = (uint8_t)((const uint64_t *)x)[i];
  else if (to == T_UINT8 && from == T_INT64)
    for (int64_t i = 0; i < n; i++) ((uint8_t *)o)[i] = (uint8_t)((const uint64_t *)x)[i];
  else
    return false;
  return true;
}

int op_xt_convert(op_xt *out, const op_xt *x, int32_t to, op_error *err) {
  if (!op_dtype_numeric(x->dtype) || !op_dtype_numeric(to))
    return op_fail(err, OP_UNSUPPORTED, "conversion from %s to %s is not supported", op_dtype_name(x->dtype),
                   op_dtype_name(to));
  if (op_xt_alloc(out, to, x->dims, x->rank, err)) return -1;
  int64_t n = x->numel;
  if (to == x->dtype) {
    memcpy(out->data, x->data, (size_t)n * op_xt_elem_size(to));
    return 0;
  }
  if (convert_fast(out->data, to, x->data, x->dtype, n)) return 0;
  bool ff = is_floating(x->dtype), tf = is_floating(to);
  for (int64_t i = 0; i < n; i++) {
    if (ff && tf) {
      put_float(out->data, to, i, get_float(x->data, x->dtype, i));
    } else if (ff) {
      double v = get_float(x->data, x->dtype, i);
      if (to == T_BOOL) ((uint8_t *)out->data)[i] = v != 0; /* NaN is true, as C++'s bool(NaN) */
      else put_int(out->data, to, i, trunc_int(v, to));
    } else if (tf) {
      int64_t v = get_int(x->data, x->dtype, i);
      put_float(out->data, to, i, x->dtype == T_UINT64 ? (double)(uint64_t)v : (double)v);
    } else {
      put_int(out->data, to, i, get_int(x->data, x->dtype, i));
    }
  }
  return 0;
}

/* ---- the type adapter ----
 * The rule: a kernel computes float32 for float tensors and int64 / int32 / bool for integer ones, plus
 * the extra types its entry below lists as native. Before it runs, every other float16 / bfloat16 /
 * float64 input is widened to float32 and every other integer input (int8, uint8, int16, uint16,
 * uint32, uint64) to int64, both exactly (float64 excepted: computed in float32). After it runs, an
 * output whose type is the widened type of the node's type-giving input (input 0 unless the entry
 * says otherwise) is narrowed back to that input's type: float32 -> float16 / bfloat16 rounds to
 * nearest even (what ONNX Runtime's CPU provider stores), int64 -> a smaller integer wraps, which keeps
 * integer arithmetic's wrap-around and Div's truncation toward zero. Outputs that are always of one
 * type (indices, shapes, statistics) are listed in `keep` and never narrowed; bool outputs are not of a
 * widened type. MOVE kernels copy elements by their size and see every type as it is. */

enum { K_COMPUTE, K_MOVE };

typedef struct type_rule {
  const char *op;
  uint8_t kind;
  uint32_t native;   /* bit (1 << dtype) per extra type the kernel computes as it is */
  uint8_t type_from; /* input whose type the outputs take */
  uint8_t keep;      /* bit per output whose kernel type stands */
} type_rule;

#define N(t) (1u << (t))
#define ARITH (N(T_DOUBLE) | N(T_UINT64))
#define Q8 (N(T_INT8) | N(T_UINT8))

/* Sorted by op for bsearch; ops not listed take the defaults (K_COMPUTE, no extras, input 0, keep none). */
static const type_rule RULES[] = {
    {"Add", K_COMPUTE, ARITH, 0, 0},
    {"ArgMax", K_COMPUTE, 0, 0, 1},
    {"ArgMin", K_COMPUTE, 0, 0, 1},
    {"Cast", K_MOVE, 0, 0, 0},
    {"CastLike", K_COMPUTE, 0, 1, 0},
    {"Concat", K_MOVE, 0, 0, 0},
    {"Constant", K_MOVE, 0, 0, 0},
    {"ConstantOfShape", K_MOVE, 0, 0, 0},
    {"ConvInteger", K_COMPUTE, Q8, 0, 0},
    {"DequantizeLinear", K_COMPUTE, Q8, 1, 0},
    {"Div", K_COMPUTE, ARITH, 0, 0},
    {"DynamicQuantizeMatMul", K_COMPUTE, Q8, 0, 0},
    {"EmbedLayerNormalization", K_COMPUTE, 0, 2, 0},
    {"Equal", K_COMPUTE, ARITH, 0, 0},
    {"Expand", K_MOVE, 0, 0, 0},
    {"Flatten", K_MOVE, 0, 0, 0},
    {"Gather", K_MOVE, 0, 0, 0},
    {"Greater", K_COMPUTE, ARITH, 0, 0},
    {"GreaterOrEqual", K_COMPUTE, ARITH, 0, 0},
    {"Identity", K_MOVE, 0, 0, 0},
    {"LayerNormalization", K_COMPUTE, 0, 0, 6},
    {"Less", K_COMPUTE, ARITH, 0, 0},
    {"LessOrEqual", K_COMPUTE, ARITH, 0, 0},
    {"MatMulInteger", K_COMPUTE, Q8, 0, 0},
    {"MatMulIntegerToFloat", K_COMPUTE, Q8, 2, 0},
    {"Max", K_COMPUTE, ARITH, 0, 0},
    {"MaxPool", K_COMPUTE, 0, 0, 2},
    {"Min", K_COMPUTE, ARITH, 0, 0},
    {"Mul", K_COMPUTE, ARITH, 0, 0},
    {"NonZero", K_COMPUTE, 0, 0, 1},
    {"OneHot", K_COMPUTE, 0, 2, 0},
    {"Pow", K_COMPUTE, N(T_DOUBLE), 0, 0},
    {"QGemm", K_COMPUTE, Q8, 0, 0},
    {"QLinearAdd", K_COMPUTE, Q8, 0, 0},
    {"QLinearConv", K_COMPUTE, Q8, 0, 0},
    {"QLinearMatMul", K_COMPUTE, Q8, 0, 0},
    {"QLinearMul", K_COMPUTE, Q8, 0, 0},
    {"QuantizeLinear", K_COMPUTE, Q8, 0, 0},
    {"Reshape", K_MOVE, 0, 0, 0},
    {"Shape", K_MOVE, 0, 0, 0},
    {"SimplifiedLayerNormalization", K_COMPUTE, 0, 0, 2},
    {"Size", K_MOVE, 0, 0, 1},
    {"SkipLayerNormalization", K_COMPUTE, 0, 0, 6},
    {"SkipSimplifiedLayerNormalization", K_COMPUTE, 0, 0, 6},
    {"Slice", K_MOVE, 0, 0, 0},
    {"Split", K_MOVE, 0, 0, 0},
    {"Squeeze", K_MOVE, 0, 0, 0},
    {"Sub", K_COMPUTE, ARITH, 0, 0},
    {"TopK", K_COMPUTE, 0, 0, 2},
    {"Transpose", K_MOVE, 0, 0, 0},
    {"Unsqueeze", K_MOVE, 0, 0, 0},
    {"Where", K_MOVE, 0, 0, 0},
};

static const uint32_t NATIVE = N(T_FLOAT) | N(T_INT64) | N(T_INT32) | N(T_BOOL);

static int cmp_rule(const void *key, const void *elem) { return strcmp((const char *)key, ((const type_rule *)elem)->op); }

static const type_rule *find_rule(const char *op) {
  return bsearch(op, RULES, sizeof RULES / sizeof *RULES, sizeof *RULES, cmp_rule);
}

bool op_types_rules_sorted(void) {
  for (size_t i = 1; i < sizeof RULES / sizeof *RULES; i++)
    if (strcmp(RULES[i - 1].op, RULES[i].op) >= 0) return false;
  return true;
}

/* The type a non-native input is computed in, or 0 when the executor cannot compute it. */
static int32_t widened(int32_t dt) {
  if (dt == T_FLOAT16 || dt == T_BFLOAT16 || dt == T_DOUBLE) return T_FLOAT;
  if (is_integral(dt)) return T_INT64;
  return 0;
}

static bool native(int32_t dt, uint32_t extra) { return dt >= 0 && dt < 32 && ((NATIVE | extra) >> dt & 1); }

static int refuse(const op_kctx *k, op_error *err, int32_t dt, const char *why) {
  return op_fail(err, OP_UNSUPPORTED, "%s: node '%s' (%s): %s %s", k->model, op_node_name(k->node), k->node->op_type,
                 op_dtype_name(dt), why);
}

/* t becomes an owned copy of the storage it views. */
static int own_copy(op_xt *t, op_error *err) {
  op_xt c;
  if (op_xt_alloc(&c, t->dtype, t->dims, t->rank, err)) return -1;
  memcpy(c.data, t->data, (size_t)t->numel * op_xt_elem_size(t->dtype));
  *t = c;
  return 0;
}

/* A MatMul/Gemm weight packed once per session (gemm.c) is read from its pack, in its own type:
 * widening it here would cost a float32 copy of the weight on every run. */
static bool packed_weight(const op_kctx *k, size_t i) { return i == 1 && k->wpack; }

int op_exec_typed(const op_op *op, const op_kctx *k, op_xt **in, size_t n_in, op_xt *out, size_t n_out, op_error *err) {
  const type_rule *r = find_rule(k->node->op_type);
  uint32_t extra = r ? r->native : 0;
  bool adapt = false;
  for (size_t i = 0; i < n_in; i++) {
    if (!in[i] || native(in[i]->dtype, extra) || packed_weight(k, i)) continue;
    if (!r || r->kind != K_MOVE) adapt = true;
    else if (!op_dtype_numeric(in[i]->dtype)) return refuse(k, err, in[i]->dtype, "tensors are not supported");
  }
  if (!adapt) return op->run(k, in, n_in, out, n_out, err);

  op_xt *args[256], wide[256];
  int32_t orig[256] = {0};
  size_t from = r ? r->type_from : 0;
  int rc = 0;
  for (size_t i = 0; i < n_in; i++) {
    args[i] = in[i];
    memset(&wide[i], 0, sizeof wide[i]);
    if (!in[i]) continue;
    orig[i] = in[i]->dtype;
    if (native(in[i]->dtype, extra) || packed_weight(k, i)) continue;
    int32_t to = widened(in[i]->dtype);
    if (!to) {
      rc = refuse(k, err, in[i]->dtype, "tensors are not supported");
      break;
    }
    if (in[i]->dtype == T_UINT64) /* int64 holds it exactly only below 2^63 */
      for (int64_t j = 0; j < in[i]->numel && !rc; j++)
        if (((const uint64_t *)in[i]->data)[j] >> 63) rc = refuse(k, err, T_UINT64, "values of 2^63 and more cannot be computed here");
    if (rc || (rc = op_xt_convert(&wide[i], in[i], to, err))) break;
    args[i] = &wide[i];
  }
  if (!rc) rc = op->run(k, args, n_in, out, n_out, err);
  for (size_t i = 0; i < n_in; i++) {
    for (size_t j = 0; j < n_out && !rc && wide[i].data; j++) /* an output that views a widened input */
      if (!out[j].owned && out[j].data && (char *)out[j].data >= (char *)wide[i].data &&
          (char *)out[j].data < (char *)wide[i].data + wide[i].cap)
        rc = own_copy(&out[j], err);
    op_xt_release(&wide[i]);
  }
  if (rc) return rc;
  if (from >= n_in || !in[from])
    for (from = 0; from < n_in && !in[from]; from++) {}
  int32_t t = from < n_in ? orig[from] : 0, w = native(t, extra) ? 0 : widened(t);
  for (size_t j = 0; j < n_out && w; j++) {
    if (!out[j].data || out[j].dtype != w || (r && (r->keep >> j & 1))) continue;
    op_xt narrow;
    if (op_xt_convert(&narrow, &out[j], t, err)) return -1;
    op_xt_release(&out[j]);
    out[j] = narrow;
  }
  return 0;
}
