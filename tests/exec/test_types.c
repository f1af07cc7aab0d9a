/* test_types.c - element types: float16/bfloat16 rounding, Cast between numeric types (with the
 * regressions that broke it), and the type adapter: arithmetic on small and unsigned integers wraps as
 * ONNX Runtime's does, float16/bfloat16/float64 are computed in float32 and stored back in their own
 * type, data-moving ops keep any type's bits, and what cannot be computed is refused by name. */
#include "check.h"
#include "exec/exec.h"

#include <math.h>
#include <stdlib.h>

enum {
  F32 = 1, U8 = 2, I8 = 3, U16 = 4, I16 = 5, I32 = 6, I64 = 7, STR = 8, BOOL = 9, F16 = 10, F64 = 11, U32 = 12, U64 = 13,
  BF16 = 16
};

static Onnx__NodeProto node;
static Onnx__AttributeProto *attrs[4];
static Onnx__AttributeProto attr_store[4];
static op_error err;

static void start(const char *op) {
  onnx__node_proto__init(&node);
  node.op_type = (char *)op;
  node.name = (char *)op;
  node.attribute = attrs;
  node.n_attribute = 0;
}

static void attr_i(const char *name, int64_t v) {
  Onnx__AttributeProto *a = &attr_store[node.n_attribute];
  onnx__attribute_proto__init(a);
  a->name = (char *)name;
  a->has_i = 1, a->i = v;
  attrs[node.n_attribute++] = a;
}

static op_xt T(int32_t dt, int64_t n, const void *vals) {
  op_xt t;
  op_xt_alloc(&t, dt, &n, 1, &err);
  memcpy(t.data, vals, (size_t)n * op_xt_elem_size(dt));
  return t;
}

/* Runs the current node through the adapter, as the executor does. */
static int run(op_xt *ins, size_t n_in, op_xt *out, size_t n_out) {
  op_xt *p[8];
  for (size_t i = 0; i < n_in; i++) p[i] = &ins[i];
  memset(out, 0, n_out * sizeof *out);
  op_kctx k = {.node = &node, .opset = 17, .model = "test"};
  const op_op *op = op_exec_find_op(node.op_type);
  int rc = op ? op_exec_typed(op, &k, p, n_in, out, n_out, &err) : -2;
  if (rc)
    for (size_t i = 0; i < n_out; i++) op_xt_release(&out[i]);
  for (size_t i = 0; i < n_in; i++) op_xt_release(&ins[i]);
  return rc;
}

static uint16_t h(float f) { return op_f32_to_f16(f); }

static void test_float16_rounding(void) {
  CHECK_EQ_INT(h(1.f), 0x3c00);
  CHECK_EQ_INT(h(-2.f), 0xc000);
  CHECK_EQ_INT(h(-0.f), 0x8000);
  CHECK_EQ_INT(h(65504.f), 0x7bff);
  CHECK_EQ_INT(h(65519.f), 0x7bff);            /* below the midpoint to 65536 */
  CHECK_EQ_INT(h(65520.f), 0x7c00);            /* the midpoint rounds to even: overflow to inf */
  CHECK_EQ_INT(h(INFINITY), 0x7c00);
  CHECK(op_f16_to_f32(h(NAN)) != op_f16_to_f32(h(NAN)));
  CHECK_EQ_INT(h(1.f + 0x1p-11f), 0x3c00);     /* tie: to even (down) */
  CHECK_EQ_INT(h(1.f + 3 * 0x1p-11f), 0x3c02); /* tie: to even (up) */
  CHECK_EQ_INT(h(1.f + 0x1p-11f + 0x1p-20f), 0x3c01);
  CHECK_EQ_INT(h(0x1p-24f), 0x0001);           /* smallest subnormal */
  CHECK_EQ_INT(h(0x1p-25f), 0x0000);           /* tie to even: zero */
  CHECK_EQ_INT(h(3 * 0x1p-25f), 0x0002);
  CHECK_EQ_INT(h(0x1p-14f - 0x1p-25f), 0x0400); /* rounds up into the normals */
  CHECK(op_f16_to_f32(0x0001) == 0x1p-24f);
  CHECK(op_f16_to_f32(0x7bff) == 65504.f);
  CHECK(isinf(op_f16_to_f32(0xfc00)) && op_f16_to_f32(0xfc00) < 0);
  int bad = 0; /* every finite half survives a round trip through float */
  for (uint32_t b = 0; b < 0x10000; b++)
    if ((b & 0x7c00) != 0x7c00 && h(op_f16_to_f32((uint16_t)b)) != b) bad++;
  CHECK_EQ_INT(bad, 0);
}

/* Plain reference: round to nearest even by the definition (exact double arithmetic). */
static uint16_t f32_to_f16_ref(float f) {
  if (isnan(f)) return 0x7e00;
  uint16_t sign = signbit(f) ? 0x8000 : 0;
  double a = fabs((double)f);
  if (a >= 65520.0) return sign | 0x7c00;
  if (a < 0x1p-14) return sign | (uint16_t)nearbyint(a * 0x1p24); /* subnormal steps of 2^-24 */
  int e;
  frexp(a, &e);                       /* a = m 2^e, m in [0.5, 1) */
  double step = ldexp(1.0, e - 11);  /* 10 mantissa bits after the leading one */
  double r = nearbyint(a / step) * step;
  int re;
  double m = frexp(r, &re);
  return sign | (uint16_t)((re + 14) << 10 | ((uint32_t)ldexp(m, 11) & 0x3ff));
}

static void test_float16_matches_the_reference(void) {
  int bad = 0;
  for (uint64_t b = 0; b < (UINT64_C(1) << 32); b += 997) {
    uint32_t u = (uint32_t)b;
    float f;
    memcpy(&f, &u, 4);
    uint16_t got = op_f32_to_f16(f), want = f32_to_f16_ref(f);
    if (isnan(f) ? (got & 0x7c00) != 0x7c00 || !(got & 0x3ff) : got != want) {
      if (bad++ < 5) fprintf(stderr, "f32_to_f16(%a) = %04x, want %04x\n", (double)f, got, want);
    }
  }
  CHECK_EQ_INT(bad, 0);
}

static void test_bfloat16_rounding(void) {
  CHECK_EQ_INT(op_f32_to_bf16(1.f), 0x3f80);
  float tie_down, tie_up, above;
  uint32_t u = 0x3f808000u, v = 0x3f818000u, w = 0x3f808001u;
  memcpy(&tie_down, &u, 4), memcpy(&tie_up, &v, 4), memcpy(&above, &w, 4);
  CHECK_EQ_INT(op_f32_to_bf16(tie_down), 0x3f80);
  CHECK_EQ_INT(op_f32_to_bf16(tie_up), 0x3f82);
  CHECK_EQ_INT(op_f32_to_bf16(above), 0x3f81);
  CHECK(isnan(op_bf16_to_f32(op_f32_to_bf16(NAN))));
  CHECK(op_bf16_to_f32(0x4049) == 3.140625f);
}

/* The bug: a float16 input of Cast was read byte by byte (garbage, exit 0). */
static void test_cast_float16_input_is_read_as_float16(void) {
  start("Cast");
  attr_i("to", F32);
  uint16_t x[3] = {h(1.5f), h(-2.25f), h(1000.f)};
  op_xt in[1] = {T(F16, 3, x)}, out[1];
  CHECK_EQ_INT(run(in, 1, out, 1), 0);
  CHECK_EQ_INT(out[0].dtype, F32);
  float *o = out[0].data;
  CHECK(o[0] == 1.5f && o[1] == -2.25f && o[2] == 1000.f);
  op_xt_release(&out[0]);
}

static void test_cast_to_float16_and_bfloat16_rounds_to_nearest_even(void) {
  float x[3] = {1.f + 0x1p-11f, 1.f + 3 * 0x1p-11f, 70000.f};
  start("Cast");
  attr_i("to", F16);
  op_xt in[1] = {T(F32, 3, x)}, out[1];
  CHECK_EQ_INT(run(in, 1, out, 1), 0);
  CHECK_EQ_INT(out[0].dtype, F16);
  uint16_t *o = out[0].data;
  CHECK(o[0] == 0x3c00 && o[1] == 0x3c02 && o[2] == 0x7c00);
  op_xt_release(&out[0]);
  start("Cast");
  attr_i("to", BF16);
  in[0] = T(F32, 3, x);
  CHECK_EQ_INT(run(in, 1, out, 1), 0);
  CHECK_EQ_INT(out[0].dtype, BF16);
  CHECK_EQ_INT(((uint16_t *)out[0].data)[0], 0x3f80);
  op_xt_release(&out[0]);
}

static void test_cast_integers_wrap_and_floats_truncate(void) {
  start("Cast");
  attr_i("to", I8);
  int64_t big[4] = {300, -129, 127, -1};
  op_xt in[1] = {T(I64, 4, big)}, out[1];
  CHECK_EQ_INT(run(in, 1, out, 1), 0);
  int8_t *o8 = out[0].data;
  CHECK(o8[0] == 44 && o8[1] == 127 && o8[2] == 127 && o8[3] == -1);
  op_xt_release(&out[0]);

  start("Cast");
  attr_i("to", I32);
  float f[4] = {-2.7f, 2.7f, -0.5f, 1e6f};
  in[0] = T(F32, 4, f);
  CHECK_EQ_INT(run(in, 1, out, 1), 0);
  int32_t *o32 = out[0].data;
  CHECK(o32[0] == -2 && o32[1] == 2 && o32[2] == 0 && o32[3] == 1000000);
  op_xt_release(&out[0]);

  start("Cast"); /* uint64 above INT64_MAX keeps its value in float64 */
  attr_i("to", F64);
  uint64_t u[2] = {UINT64_MAX, 1};
  in[0] = T(U64, 2, u);
  CHECK_EQ_INT(run(in, 1, out, 1), 0);
  CHECK(((double *)out[0].data)[0] == 0x1p64 && ((double *)out[0].data)[1] == 1.0);
  op_xt_release(&out[0]);

  start("Cast"); /* and back */
  attr_i("to", U64);
  double d[2] = {0x1p63 + 0x1p12, 3.9};
  in[0] = T(F64, 2, d);
  CHECK_EQ_INT(run(in, 1, out, 1), 0);
  CHECK(((uint64_t *)out[0].data)[0] == (UINT64_C(1) << 63) + 4096 && ((uint64_t *)out[0].data)[1] == 3);
  op_xt_release(&out[0]);

  start("Cast");
  attr_i("to", BOOL);
  uint16_t hx[3] = {h(0.f), h(-0.f), h(0.001f)};
  in[0] = T(F16, 3, hx);
  CHECK_EQ_INT(run(in, 1, out, 1), 0);
  uint8_t *ob = out[0].data;
  CHECK(ob[0] == 0 && ob[1] == 0 && ob[2] == 1);
  op_xt_release(&out[0]);

  start("Cast"); /* bool, uint16 and bfloat16 sources */
  attr_i("to", F32);
  uint16_t b16[2] = {0x3fc0, 0xc000}; /* 1.5, -2 */
  in[0] = T(BF16, 2, b16);
  CHECK_EQ_INT(run(in, 1, out, 1), 0);
  CHECK(((float *)out[0].data)[0] == 1.5f && ((float *)out[0].data)[1] == -2.f);
  op_xt_release(&out[0]);
}

/* Every numeric pair converts and comes back for values every type holds. */
static void test_cast_every_numeric_pair(void) {
  const int32_t types[] = {F32, U8, I8, U16, I16, I32, I64, BOOL, F16, F64, U32, U64, BF16};
  const size_t nt = sizeof types / sizeof *types;
  int bad = 0;
  for (size_t a = 0; a < nt; a++)
    for (size_t b = 0; b < nt; b++) {
      double vals[2] = {0, 1}, back[2];
      op_xt src = T(F64, 2, vals), mid, there, again;
      if (op_xt_convert(&mid, &src, types[a], &err) || op_xt_convert(&there, &mid, types[b], &err) ||
          op_xt_convert(&again, &there, F64, &err)) {
        bad++;
        continue;
      }
      memcpy(back, again.data, sizeof back);
      bad += back[0] != 0 || back[1] != 1;
      op_xt_release(&src), op_xt_release(&mid), op_xt_release(&there), op_xt_release(&again);
    }
  CHECK_EQ_INT(bad, 0);
}

static void test_cast_string_is_refused_by_name(void) {
  start("Cast");
  attr_i("to", STR);
  float x = 1;
  op_xt in[1] = {T(F32, 1, &x)}, out[1];
  CHECK(run(in, 1, out, 1) != 0);
  CHECK_CONTAINS(err.message, "Cast");
  CHECK_CONTAINS(err.message, "float32 to string");
}

/* Binary op on two 1-D tensors of type dt; returns the output (caller releases). */
static op_xt binop(const char *op, int32_t dt, const void *a, const void *b, int64_t n) {
  start(op);
  op_xt in[2] = {T(dt, n, a), T(dt, n, b)}, out[1];
  if (run(in, 2, out, 1)) {
    fprintf(stderr, "%s on %s: %s\n", op, op_dtype_name(dt), err.message);
    memset(out, 0, sizeof out);
  }
  return out[0];
}

#define BIN_CHECK(op, dt, ctype, A, B, ...)                                                \
  do {                                                                                     \
    ctype a_[] = A, b_[] = B, w_[] = __VA_ARGS__;                                          \
    int64_t n_ = (int64_t)(sizeof a_ / sizeof *a_);                                        \
    op_xt o_ = binop(op, dt, a_, b_, n_);                                                  \
    CHECK_EQ_INT(o_.dtype, dt);                                                            \
    CHECK(o_.data && memcmp(o_.data, w_, sizeof w_) == 0);                                 \
    op_xt_release(&o_);                                                                    \
  } while (0)
#define L(...) {__VA_ARGS__}

static void test_adapter_small_integers_wrap(void) {
  BIN_CHECK("Add", U8, uint8_t, L(200, 1, 255), L(100, 2, 1), L(44, 3, 0));
  BIN_CHECK("Sub", U8, uint8_t, L(1, 5, 0), L(2, 5, 1), L(255, 0, 255));
  BIN_CHECK("Mul", U8, uint8_t, L(16, 3, 255), L(16, 7, 255), L(0, 21, 1));
  BIN_CHECK("Div", U8, uint8_t, L(255, 7, 3), L(2, 7, 4), L(127, 1, 0));
  BIN_CHECK("Max", U8, uint8_t, L(200, 1, 0), L(100, 2, 0), L(200, 2, 0));
  BIN_CHECK("Min", U8, uint8_t, L(200, 1, 0), L(100, 2, 0), L(100, 1, 0));
  BIN_CHECK("Add", I8, int8_t, L(100, -100, 1), L(100, -100, -1), L(-56, 56, 0));
  BIN_CHECK("Div", I8, int8_t, L(-7, 7, -128), L(2, -2, -1), L(-3, -3, -128)); /* toward zero; MIN / -1 wraps */
  BIN_CHECK("Max", I8, int8_t, L(-128, 5, -1), L(127, -5, -2), L(127, 5, -1));
  BIN_CHECK("Min", I8, int8_t, L(-128, 5, -1), L(127, -5, -2), L(-128, -5, -2));
  BIN_CHECK("Mul", I16, int16_t, L(300, -300, 2), L(300, 300, -3), L(24464, -24464, -6));
  BIN_CHECK("Div", I16, int16_t, L(-32768, 9, -9), L(-1, 4, 4), L(-32768, 2, -2));
  BIN_CHECK("Max", I16, int16_t, L(-32768, 9, -9), L(-1, 4, 4), L(-1, 9, 4));
  BIN_CHECK("Add", U16, uint16_t, L(65535, 1, 40000), L(1, 1, 40000), L(0, 2, 14464));
  BIN_CHECK("Min", U16, uint16_t, L(65535, 1, 40000), L(1, 1, 40001), L(1, 1, 40000));
  BIN_CHECK("Mul", U32, uint32_t, L(0xffffffffu, 65536, 3), L(0xffffffffu, 65536, 5), L(1, 0, 15));
  BIN_CHECK("Sub", U32, uint32_t, L(0, 5, 7), L(1, 5, 2), L(0xffffffffu, 0, 5));
  BIN_CHECK("Max", U32, uint32_t, L(0xffffffffu, 1, 7), L(1, 2, 7), L(0xffffffffu, 2, 7));
  BIN_CHECK("Div", U32, uint32_t, L(0xffffffffu, 1, 7), L(2, 2, 7), L(0x7fffffffu, 0, 1));
  /* uint64 beyond INT64_MAX is computed natively, unsigned */
  BIN_CHECK("Max", U64, uint64_t, L(UINT64_MAX, 1, 0), L(1, UINT64_C(1) << 63, 0), L(UINT64_MAX, UINT64_C(1) << 63, 0));
  BIN_CHECK("Min", U64, uint64_t, L(UINT64_MAX, 1, 0), L(1, UINT64_C(1) << 63, 0), L(1, 1, 0));
  BIN_CHECK("Div", U64, uint64_t, L(UINT64_MAX, 10, 9), L(2, 3, 10), L(UINT64_MAX / 2, 3, 0));
  BIN_CHECK("Add", U64, uint64_t, L(UINT64_MAX, 1, 0), L(2, 2, 0), L(1, 3, 0));
  BIN_CHECK("Mul", U64, uint64_t, L(UINT64_C(1) << 63, 3, 0), L(2, 3, 0), L(0, 9, 0));
  /* int64 wraps too (no undefined overflow) */
  BIN_CHECK("Add", I64, int64_t, L(INT64_MAX, 1, 0), L(1, 1, 0), L(INT64_MIN, 2, 0));
  BIN_CHECK("Div", I64, int64_t, L(INT64_MIN, -7, 7), L(-1, 2, -2), L(INT64_MIN, -3, -3));
}

static void test_adapter_float16_computes_in_float32_and_rounds(void) {
  uint16_t a[3] = {h(1.f), h(65504.f), h(0.1f)}, b[3] = {h(0x1p-11f), h(65504.f), h(0.2f)};
  op_xt o = binop("Add", F16, a, b, 3);
  CHECK_EQ_INT(o.dtype, F16);
  uint16_t *r = o.data;
  CHECK(r && r[0] == 0x3c00 && r[1] == 0x7c00 && r[2] == h(op_f16_to_f32(h(0.1f)) + op_f16_to_f32(h(0.2f))));
  op_xt_release(&o);
  uint16_t c[2] = {h(3.f), h(-1.f)}, d[2] = {h(2.f), h(-4.f)};
  o = binop("Max", F16, c, d, 2);
  CHECK(o.dtype == F16 && ((uint16_t *)o.data)[0] == h(3.f) && ((uint16_t *)o.data)[1] == h(-1.f));
  op_xt_release(&o);
  o = binop("Min", F16, c, d, 2);
  CHECK(o.dtype == F16 && ((uint16_t *)o.data)[0] == h(2.f) && ((uint16_t *)o.data)[1] == h(-4.f));
  op_xt_release(&o);
  o = binop("Div", F16, c, d, 2);
  CHECK(o.dtype == F16 && ((uint16_t *)o.data)[0] == h(1.5f) && ((uint16_t *)o.data)[1] == h(0.25f));
  op_xt_release(&o);
  o = binop("Mul", F16, c, d, 2);
  CHECK(o.dtype == F16 && ((uint16_t *)o.data)[0] == h(6.f) && ((uint16_t *)o.data)[1] == h(4.f));
  op_xt_release(&o);
  o = binop("Greater", F16, c, d, 2); /* comparisons stay bool */
  CHECK(o.dtype == BOOL && ((uint8_t *)o.data)[0] == 1 && ((uint8_t *)o.data)[1] == 1);
  op_xt_release(&o);
  /* unary float math on float16: computed in float32, stored in float16 */
  start("Sqrt");
  uint16_t s[2] = {h(2.f), h(9.f)};
  op_xt in[1] = {T(F16, 2, s)}, out[1];
  CHECK_EQ_INT(run(in, 1, out, 1), 0);
  CHECK(out[0].dtype == F16 && ((uint16_t *)out[0].data)[0] == h(sqrtf(2.f)) && ((uint16_t *)out[0].data)[1] == h(3.f));
  op_xt_release(&out[0]);
}

static void test_adapter_bfloat16_and_double(void) {
  uint16_t a[2] = {op_f32_to_bf16(1.f), op_f32_to_bf16(3.f)}, b[2] = {op_f32_to_bf16(0x1p-8f), op_f32_to_bf16(-5.f)};
  op_xt o = binop("Add", BF16, a, b, 2); /* 1 + 2^-8 ties to even in bfloat16's 8 bits: 1 */
  CHECK(o.dtype == BF16 && ((uint16_t *)o.data)[0] == 0x3f80 && ((uint16_t *)o.data)[1] == op_f32_to_bf16(-2.f));
  op_xt_release(&o);
  o = binop("Max", BF16, a, b, 2);
  CHECK(o.dtype == BF16 && ((uint16_t *)o.data)[1] == op_f32_to_bf16(3.f));
  op_xt_release(&o);
  /* float64 arithmetic is native: no float32 rounding */
  double c[2] = {1.0, 1e300}, d[2] = {1e-12, 1e300};
  o = binop("Add", F64, c, d, 2);
  CHECK(o.dtype == F64 && ((double *)o.data)[0] == 1.0 + 1e-12 && ((double *)o.data)[1] == 2e300);
  op_xt_release(&o);
  o = binop("Div", F64, c, d, 2);
  CHECK(o.dtype == F64 && ((double *)o.data)[0] == 1e12);
  op_xt_release(&o);
  o = binop("Min", F64, c, d, 2);
  CHECK(o.dtype == F64 && ((double *)o.data)[0] == 1e-12);
  op_xt_release(&o);
  o = binop("Mul", F64, c, d, 2);
  CHECK(o.dtype == F64 && ((double *)o.data)[0] == 1e-12);
  op_xt_release(&o);
  /* float64 through a float32-only kernel: widened, result back in float64 */
  start("Sqrt");
  double s[1] = {16.0};
  op_xt in[1] = {T(F64, 1, s)}, out[1];
  CHECK_EQ_INT(run(in, 1, out, 1), 0);
  CHECK(out[0].dtype == F64 && ((double *)out[0].data)[0] == 4.0);
  op_xt_release(&out[0]);
}

static void test_adapter_moves_any_type_by_its_bits(void) {
  start("Transpose");
  uint16_t x[6] = {h(1.f), h(2.f), h(3.f), 0x7e01, h(5.f), h(6.f)}; /* a NaN payload must survive */
  op_xt t;
  int64_t dims[2] = {2, 3};
  op_xt_alloc(&t, F16, dims, 2, &err);
  memcpy(t.data, x, sizeof x);
  op_xt in[1] = {t}, out[1];
  CHECK_EQ_INT(run(in, 1, out, 1), 0);
  uint16_t *o = out[0].data;
  CHECK(out[0].dtype == F16 && o[0] == x[0] && o[1] == 0x7e01 && o[2] == x[1]);
  op_xt_release(&out[0]);
  /* Where with uint8 branches and Concat of int16 */
  start("Where");
  uint8_t c[2] = {1, 0}, a[2] = {250, 251}, b[2] = {7, 8};
  op_xt w[3] = {T(BOOL, 2, c), T(U8, 2, a), T(U8, 2, b)};
  CHECK_EQ_INT(run(w, 3, out, 1), 0);
  CHECK(out[0].dtype == U8 && ((uint8_t *)out[0].data)[0] == 250 && ((uint8_t *)out[0].data)[1] == 8);
  op_xt_release(&out[0]);
  start("Concat");
  attr_i("axis", 0);
  int16_t p[1] = {-3}, q[2] = {32767, -32768};
  op_xt cc[2] = {T(I16, 1, p), T(I16, 2, q)};
  CHECK_EQ_INT(run(cc, 2, out, 1), 0);
  CHECK(out[0].dtype == I16 && out[0].numel == 3 && ((int16_t *)out[0].data)[2] == -32768);
  op_xt_release(&out[0]);
}

static void test_adapter_output_types(void) {
  /* DequantizeLinear's output takes the scale's type (float16 here), not the input's */
  start("DequantizeLinear");
  int8_t q[2] = {-4, 6};
  uint16_t sc[1] = {h(0.5f)};
  op_xt in[2] = {T(I8, 2, q), T(F16, 1, sc)}, out[1];
  in[1].rank = 0;
  CHECK_EQ_INT(run(in, 2, out, 1), 0);
  CHECK(out[0].dtype == F16 && ((uint16_t *)out[0].data)[0] == h(-2.f) && ((uint16_t *)out[0].data)[1] == h(3.f));
  op_xt_release(&out[0]);
  /* Shape of an int8 tensor stays int64 */
  start("Shape");
  int8_t v[3] = {1, 2, 3};
  op_xt s[1] = {T(I8, 3, v)};
  CHECK_EQ_INT(run(s, 1, out, 1), 0);
  CHECK(out[0].dtype == I64 && ((int64_t *)out[0].data)[0] == 3);
  op_xt_release(&out[0]);
  /* Pow: the output follows the base (float16), not the float32 exponent */
  start("Pow");
  uint16_t base[2] = {h(3.f), h(2.f)};
  float ex[2] = {2.f, 0.5f};
  op_xt pw[2] = {T(F16, 2, base), T(F32, 2, ex)};
  CHECK_EQ_INT(run(pw, 2, out, 1), 0);
  CHECK(out[0].dtype == F16 && ((uint16_t *)out[0].data)[0] == h(9.f) && ((uint16_t *)out[0].data)[1] == h(sqrtf(2.f)));
  op_xt_release(&out[0]);
}

static void test_integer_division_by_zero_is_refused(void) {
  int8_t a[2] = {4, 1}, b[2] = {2, 0};
  start("Div");
  op_xt in[2] = {T(I8, 2, a), T(I8, 2, b)}, out[1];
  CHECK(run(in, 2, out, 1) != 0);
  CHECK_CONTAINS(err.message, "(Div): integer division by zero");
  uint64_t c[1] = {UINT64_MAX}, d[1] = {0};
  in[0] = T(U64, 1, c), in[1] = T(U64, 1, d);
  CHECK(run(in, 2, out, 1) != 0);
  CHECK_CONTAINS(err.message, "division by zero");
}

static void test_adapter_refuses_what_it_cannot_compute(void) {
  /* uint64 at or past 2^63 through a kernel that computes int64 */
  start("Neg");
  uint64_t big[1] = {UINT64_C(1) << 63};
  op_xt in[1] = {T(U64, 1, big)}, out[1];
  CHECK(run(in, 1, out, 1) != 0);
  CHECK_CONTAINS(err.message, "node 'Neg' (Neg)");
  CHECK_CONTAINS(err.message, "uint64");
  /* a type with no numbers (float8), even through a data-moving op */
  start("Identity");
  uint8_t f8[1] = {0x38};
  in[0] = T(17, 1, f8);
  CHECK(run(in, 1, out, 1) != 0);
  CHECK_CONTAINS(err.message, "(Identity)");
  CHECK_CONTAINS(err.message, "float8e4m3fn");
  start("Relu");
  in[0] = T(17, 1, f8);
  CHECK(run(in, 1, out, 1) != 0);
  CHECK_CONTAINS(err.message, "float8e4m3fn");
}

int main(void) {
  CHECK(op_types_rules_sorted());
  test_float16_rounding();
  test_float16_matches_the_reference();
  test_bfloat16_rounding();
  test_cast_float16_input_is_read_as_float16();
  test_cast_to_float16_and_bfloat16_rounds_to_nearest_even();
  test_cast_integers_wrap_and_floats_truncate();
  test_cast_every_numeric_pair();
  test_cast_string_is_refused_by_name();
  test_adapter_small_integers_wrap();
  test_adapter_float16_computes_in_float32_and_rounds();
  test_adapter_bfloat16_and_double();
  test_adapter_moves_any_type_by_its_bits();
  test_adapter_output_types();
  test_integer_division_by_zero_is_refused();
  test_adapter_refuses_what_it_cannot_compute();
  return check_done("types");
}
