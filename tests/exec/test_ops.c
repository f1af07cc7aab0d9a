/* test_ops.c - each operator on small inputs against values computed by hand: broadcasting, edge
 * shapes, opset-dependent semantics (Softmax before 13, axes as attribute or input), rounding and
 * saturation of quantisation, and the errors a bad shape gets. */
#include "check.h"
#include "exec/fastmath.h"
#include "exec/exec.h"

#include <math.h>
#include <stdlib.h>

#define F 1
#define I64 7
#define B 9

static Onnx__NodeProto node;
static Onnx__AttributeProto *attrs[8];
static Onnx__AttributeProto attr_store[8];
static int64_t ints_store[8][8];
static int n_attrs;

static void start(const char *op) {
  onnx__node_proto__init(&node);
  node.op_type = (char *)op;
  node.name = (char *)op;
  n_attrs = 0;
  node.attribute = attrs;
  node.n_attribute = 0;
}

static Onnx__AttributeProto *attr(const char *name) {
  Onnx__AttributeProto *a = &attr_store[n_attrs];
  onnx__attribute_proto__init(a);
  a->name = (char *)name;
  attrs[n_attrs++] = a;
  node.n_attribute = (size_t)n_attrs;
  return a;
}
static void attr_i(const char *name, int64_t v) {
  Onnx__AttributeProto *a = attr(name);
  a->has_i = 1, a->i = v;
}
static void attr_f(const char *name, float v) {
  Onnx__AttributeProto *a = attr(name);
  a->has_f = 1, a->f = v;
}
static void attr_ints(const char *name, const int64_t *v, size_t n) {
  Onnx__AttributeProto *a = attr(name);
  memcpy(ints_store[n_attrs - 1], v, n * sizeof *v);
  a->ints = ints_store[n_attrs - 1], a->n_ints = n;
}

static op_xt T(int32_t dt, int rank, const int64_t *dims, const void *vals) {
  op_xt t;
  op_error e;
  op_xt_alloc(&t, dt, dims, rank, &e);
  memcpy(t.data, vals, (size_t)t.numel * op_xt_elem_size(dt));
  return t;
}
#define TF(rank, dims, ...) T(F, rank, (int64_t[])dims, (float[]){__VA_ARGS__})
#define TI(rank, dims, ...) T(I64, rank, (int64_t[])dims, (int64_t[]){__VA_ARGS__})
#define D(...) {__VA_ARGS__}

static op_error err;
/* Runs the current node; returns 0 or -1; outputs in out[]. */
static int run(int64_t opset, op_xt *ins, size_t n_in, op_xt *out, size_t n_out) {
  op_xt *p[8];
  for (size_t i = 0; i < n_in; i++) p[i] = ins ? &ins[i] : NULL;
  memset(out, 0, n_out * sizeof *out);
  op_kctx k = {&node, opset, "test", NULL, NULL, NULL};
  const op_op *op = op_exec_find_op(node.op_type);
  if (!op) return -2;
  int rc = op->run(&k, p, n_in, out, n_out, &err);
  if (rc) /* as the executor does: a failed kernel's outputs are dropped */
    for (size_t i = 0; i < n_out; i++) op_xt_release(&out[i]);
  return rc;
}

static bool shape_is(const op_xt *t, int rank, const int64_t *dims) {
  if (t->rank != rank) return false;
  for (int i = 0; i < rank; i++)
    if (t->dims[i] != dims[i]) return false;
  return true;
}
static bool floats_are(const op_xt *t, const float *v, int64_t n, float tol) {
  if (t->dtype != F || t->numel != n) return false;
  for (int64_t i = 0; i < n; i++)
    if (!(fabsf(((float *)t->data)[i] - v[i]) <= tol)) {
      fprintf(stderr, "  element %lld: %g != %g\n", (long long)i, ((float *)t->data)[i], v[i]);
      return false;
    }
  return true;
}
static bool ints_are(const op_xt *t, const int64_t *v, int64_t n) {
  if (t->numel != n) return false;
  for (int64_t i = 0; i < n; i++)
    if (op_xt_int(t, i) != v[i]) return false;
  return true;
}
#define CHECK_F(t, tol, ...) CHECK(floats_are(&(t), (float[]){__VA_ARGS__}, sizeof((float[]){__VA_ARGS__}) / sizeof(float), tol))
#define CHECK_I(t, ...) CHECK(ints_are(&(t), (int64_t[]){__VA_ARGS__}, sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
#define CHECK_SHAPE(t, rank, ...) CHECK(shape_is(&(t), rank, (int64_t[]){__VA_ARGS__}))

static void release(op_xt *v, size_t n) {
  for (size_t i = 0; i < n; i++) op_xt_release(&v[i]);
}

/* The branch-free exp and erf against double precision over a dense grid and the special values. */
/* ---- operators for real exports (issue 8, ops): refusals by name, and kernels checked by hand ---- */

static void attr_s(const char *name, const char *v) {
  Onnx__AttributeProto *a = attr(name);
  a->s.data = (uint8_t *)v, a->s.len = strlen(v);
}

/* What cannot be computed faithfully is refused as OP_UNSUPPORTED, naming the cause. */
static void test_refusals(void) {
  op_xt in[6], out[4];
  start("Dropout"); /* training mode with a ratio drops at random */
  in[0] = TF(1, D(2), 1, 2), in[1] = TF(0, D(0), 0.5f), in[2] = T(B, 0, NULL, (uint8_t[]){1});
  CHECK(run(13, in, 3, out, 1) == -1 && err.code == OP_UNSUPPORTED);
  CHECK_CONTAINS(err.message, "training_mode");
  ((float *)in[1].data)[0] = 0.f; /* ratio 0 in training mode is the identity */
  CHECK(run(13, in, 3, out, 2) == 0);
  CHECK_F(out[0], 0, 1, 2);
  release(in, 3), release(out, 2);

  start("Einsum"); /* an equation that does not fit the inputs */
  attr_s("equation", "ij,jk->ik");
  in[0] = TF(1, D(3), 1, 2, 3);
  CHECK(run(12, in, 1, out, 1) == -1);
  CHECK_CONTAINS(err.message, "Einsum");
  release(in, 1);

  start("Attention"); /* softcap is not computed */
  attr_f("softcap", 30.f);
  for (int i = 0; i < 3; i++) in[i] = TF(4, D(1, 1, 1, 2), 1, 2);
  CHECK(run(23, in, 3, out, 1) == -1 && err.code == OP_UNSUPPORTED);
  CHECK_CONTAINS(err.message, "softcap");
  release(in, 3);

  start("Resize");
  attr_i("antialias", 1);
  in[0] = TF(2, D(1, 2), 1, 2), in[1] = TF(1, D(0), 0), in[2] = TF(1, D(2), 1, 2);
  in[1].numel = 0, in[1].dims[0] = 0;
  CHECK(run(18, in, 3, out, 1) == -1 && err.code == OP_UNSUPPORTED);
  CHECK_CONTAINS(err.message, "antialias");
  release(in, 3);

  start("ScatterND"); /* a reduction the spec does not have */
  attr_s("reduction", "median");
  in[0] = TF(1, D(2), 1, 2), in[1] = TI(2, D(1, 1), 0), in[2] = TF(1, D(1), 5);
  CHECK(run(18, in, 3, out, 1) == -1 && err.code == OP_UNSUPPORTED);
  release(in, 3);
}

static void test_real_export_ops(void) {
  op_xt in[4], out[2];
  /* Trilu: lower with k = -1 keeps strictly below the diagonal */
  start("Trilu");
  attr_i("upper", 0);
  in[0] = TF(2, D(3, 3), 1, 2, 3, 4, 5, 6, 7, 8, 9), in[1] = TI(0, D(0), -1);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_F(out[0], 0, 0, 0, 0, 4, 0, 0, 7, 8, 0);
  release(in, 2), release(out, 1);

  /* Conv 1-D: two groups, dilation 2, one pad each side */
  start("Conv");
  attr_i("group", 2);
  attr_ints("dilations", (int64_t[]){2}, 1);
  attr_ints("pads", (int64_t[]){1, 1}, 2);
  in[0] = TF(3, D(1, 2, 4), 1, 2, 3, 4, 10, 20, 30, 40), in[1] = TF(3, D(2, 1, 2), 1, 1, 1, -1);
  CHECK(run(11, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 3, 1, 2, 4);
  /* channel 0: x[p-1] + x[p+1] (zero outside); channel 1: x[p-1] - x[p+1] */
  CHECK_F(out[0], 0, 2, 4, 6, 3, -20, -20, -20, 30);
  release(in, 2), release(out, 1);

  /* Einsum as attention writes it: batched scores */
  start("Einsum");
  attr_s("equation", "bqd,bkd->bqk");
  in[0] = TF(3, D(1, 2, 2), 1, 0, 0, 1), in[1] = TF(3, D(1, 3, 2), 1, 2, 3, 4, 5, 6);
  CHECK(run(12, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 3, 1, 2, 3);
  CHECK_F(out[0], 0, 1, 3, 5, 2, 4, 6);
  release(in, 2), release(out, 1);

  /* Mod: Python's sign rule by default, C's with fmod */
  start("Mod");
  in[0] = TI(1, D(2), -7, 7), in[1] = TI(1, D(1), 3);
  CHECK(run(13, in, 2, out, 1) == 0);
  CHECK_I(out[0], 2, 1);
  release(out, 1);
  attr_i("fmod", 1);
  CHECK(run(13, in, 2, out, 1) == 0);
  CHECK_I(out[0], -1, 1);
  release(in, 2), release(out, 1);

  /* TopK: ties go to the lower index */
  start("TopK");
  in[0] = TF(1, D(4), 3, 5, 5, 1), in[1] = TI(1, D(1), 2);
  CHECK(run(11, in, 2, out, 2) == 0);
  CHECK_F(out[0], 0, 5, 5);
  CHECK_I(out[1], 1, 2);
  release(in, 2), release(out, 2);
}

static void test_fastmath(void) {
  double worst_ulp = 0;
  for (float x = -87.f; x <= 88.7f; x += 0.000731f) {
    double r = exp((double)x);
    float ulp = nextafterf((float)r, INFINITY) - (float)r;
    double e = fabs(op_expf(x) - r) / ulp;
    worst_ulp = e > worst_ulp ? e : worst_ulp;
  }
  CHECK(worst_ulp <= 2.0);
  CHECK(op_expf(-INFINITY) == 0.f && op_expf(-100.f) == 0.f && isinf(op_expf(INFINITY)) && isinf(op_expf(89.f)));
  CHECK(isnan(op_expf(NAN)) && op_expf(0.f) == 1.f);
  double worst_abs = 0, worst_rel = 0;
  for (float x = -6.f; x <= 6.f; x += 0.0000917f) {
    double r = erf((double)x), e = fabs(op_erff(x) - r);
    worst_abs = e > worst_abs ? e : worst_abs;
    if (fabs(r) > 1e-30) worst_rel = e / fabs(r) > worst_rel ? e / fabs(r) : worst_rel;
  }
  for (float x = 1e-30f; x < 1e-3f; x *= 1.37f) {
    double r = erf((double)x);
    worst_rel = fabs(op_erff(x) - r) / r > worst_rel ? fabs(op_erff(x) - r) / r : worst_rel;
  }
  CHECK(worst_abs <= 3e-7);
  CHECK(worst_rel <= 2e-6);
  CHECK(op_erff(INFINITY) == 1.f && op_erff(-INFINITY) == -1.f && isnan(op_erff(NAN)) && op_erff(0.f) == 0.f);
}

int main(void) {
  op_xt in[5], out[4];

  /* broadcasting: [2,3] + [3], [2,1] * [1,3], scalar - [2] */
  start("Add");
  in[0] = TF(2, D(2, 3), 1, 2, 3, 4, 5, 6), in[1] = TF(1, D(3), 10, 20, 30);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 2, 2, 3);
  CHECK_F(out[0], 0, 11, 22, 33, 14, 25, 36);
  release(in, 2), release(out, 1);
  start("Mul");
  in[0] = TF(2, D(2, 1), 2, 3), in[1] = TF(2, D(1, 3), 1, 10, 100);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 2, 2, 3);
  CHECK_F(out[0], 0, 2, 20, 200, 3, 30, 300);
  release(in, 2), release(out, 1);
  start("Sub");
  in[0] = TF(0, D(0), 1), in[1] = TF(1, D(2), 0.5f, 4);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_F(out[0], 0, 0.5f, -3);
  release(in, 2), release(out, 1);
  start("Add");
  in[0] = TF(1, D(2), 1, 2), in[1] = TF(1, D(3), 1, 2, 3);
  CHECK(run(14, in, 2, out, 1) == -1);
  CHECK_CONTAINS(err.message, "shapes do not broadcast");
  release(in, 2);
  /* empty axis broadcasts to empty */
  in[0] = TF(2, D(0, 3), 0), in[1] = TF(1, D(3), 1, 2, 3);
  in[0].numel = 0;
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 2, 0, 3);
  release(in, 2), release(out, 1);

  /* integers: division truncates toward zero; comparisons give bool */
  start("Div");
  in[0] = TI(1, D(3), -7, 7, 9), in[1] = TI(0, D(0), 2);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_I(out[0], -3, 3, 4);
  release(in, 2), release(out, 1);
  start("Less");
  in[0] = TF(1, D(3), 1, 2, 3), in[1] = TF(0, D(0), 2);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK(out[0].dtype == B);
  CHECK_I(out[0], 1, 0, 0);
  release(in, 2), release(out, 1);
  start("Equal");
  in[0] = TI(1, D(3), 1, 2, 3), in[1] = TI(1, D(3), 1, 0, 3);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_I(out[0], 1, 0, 1);
  op_xt cond = out[0];
  release(in, 2);
  start("Where"); /* cond [3], x scalar, y [2,1] -> [2,3] */
  in[0] = cond, in[1] = TF(0, D(0), 9), in[2] = TF(2, D(2, 1), -1, -2);
  CHECK(run(14, in, 3, out, 1) == 0);
  CHECK_SHAPE(out[0], 2, 2, 3);
  CHECK_F(out[0], 0, 9, -1, 9, 9, -2, 9);
  start("Not");
  op_xt nin[1] = {cond};
  CHECK(run(14, nin, 1, &out[1], 1) == 0);
  CHECK_I(out[1], 0, 1, 0);
  release(in, 3), release(out, 2);

  /* Pow: square, square root, an int64 exponent on a float base */
  start("Pow");
  in[0] = TF(1, D(3), 3, 4, -2), in[1] = TF(0, D(0), 2);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_F(out[0], 0, 9, 16, 4);
  release(in, 2), release(out, 1);
  in[0] = TF(1, D(2), 9, 16), in[1] = TI(0, D(0), 3);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_F(out[0], 0, 729, 4096);
  release(in, 2), release(out, 1);

  /* unary math */
  start("Erf");
  in[0] = TF(1, D(3), 0, 1, -0.5f);
  CHECK(run(14, in, 1, out, 1) == 0);
  CHECK_F(out[0], 1e-6f, 0, 0.8427007929f, -0.5204998778f);
  release(out, 1);
  start("Gelu");
  CHECK(run(20, in, 1, out, 1) == 0);
  CHECK_F(out[0], 1e-6f, 0, 0.8413447461f, -0.1542687694f);
  release(in, 1), release(out, 1);
  start("Relu");
  in[0] = TI(1, D(3), -3, 0, 5);
  CHECK(run(14, in, 1, out, 1) == 0);
  CHECK_I(out[0], 0, 0, 5);
  release(in, 1), release(out, 1);

  /* Cast: float -> int64 truncates, -> bool is "not zero"; bool -> float */
  start("Cast");
  attr_i("to", I64);
  in[0] = TF(1, D(4), -1.7f, 2.9f, 0, 3);
  CHECK(run(14, in, 1, out, 1) == 0);
  CHECK_I(out[0], -1, 2, 0, 3);
  release(out, 1);
  start("Cast");
  attr_i("to", B);
  CHECK(run(14, in, 1, out, 1) == 0);
  CHECK_I(out[0], 1, 1, 0, 1);
  release(in, 1), release(out, 1);

  /* MatMul: plain, batched with a shared 2-D weight, broadcast batches, 1-D promotion */
  start("MatMul");
  in[0] = TF(2, D(2, 3), 1, 2, 3, 4, 5, 6), in[1] = TF(2, D(3, 2), 1, 0, 0, 1, 1, 1);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 2, 2, 2);
  CHECK_F(out[0], 0, 4, 5, 10, 11);
  release(in, 2), release(out, 1);
  in[0] = TF(3, D(2, 1, 2), 1, 2, 3, 4), in[1] = TF(2, D(2, 2), 1, 1, 0, 1);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 3, 2, 1, 2);
  CHECK_F(out[0], 0, 1, 3, 3, 7);
  release(in, 2), release(out, 1);
  in[0] = TF(3, D(1, 1, 2), 1, 2), in[1] = TF(3, D(2, 2, 1), 1, 1, 2, 3);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 3, 2, 1, 1);
  CHECK_F(out[0], 0, 3, 8);
  release(in, 2), release(out, 1);
  in[0] = TF(1, D(2), 1, 2), in[1] = TF(2, D(2, 3), 1, 2, 3, 4, 5, 6);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 1, 3);
  CHECK_F(out[0], 0, 9, 12, 15);
  release(in, 2), release(out, 1);
  in[0] = TF(2, D(2, 3), 1, 2, 3, 4, 5, 6), in[1] = TF(2, D(2, 2), 1, 0, 0, 1);
  CHECK(run(14, in, 2, out, 1) == -1);
  CHECK_CONTAINS(err.message, "inner dimensions differ");
  release(in, 2);

  /* Gemm: transA, transB, alpha, beta, C broadcast from [N] */
  start("Gemm");
  attr_i("transA", 1), attr_i("transB", 1), attr_f("alpha", 2), attr_f("beta", 0.5f);
  in[0] = TF(2, D(2, 1), 1, 2), in[1] = TF(2, D(2, 2), 1, 2, 3, 4), in[2] = TF(1, D(2), 10, 20);
  CHECK(run(14, in, 3, out, 1) == 0);
  CHECK_SHAPE(out[0], 2, 1, 2);
  CHECK_F(out[0], 0, 2 * 5 + 5, 2 * 11 + 10);
  release(in, 3), release(out, 1);

  /* Softmax: opset 13 along one axis; before 13 over the axes flattened from `axis` on */
  start("Softmax");
  attr_i("axis", 1);
  in[0] = TF(3, D(1, 2, 2), 0, 0, 0, 1.0986123f);
  CHECK(run(13, in, 1, out, 1) == 0);
  CHECK_F(out[0], 1e-6f, 0.5f, 0.25f, 0.5f, 0.75f);
  release(out, 1);
  CHECK(run(11, in, 1, out, 1) == 0);
  CHECK_F(out[0], 1e-6f, 1.f / 6, 1.f / 6, 1.f / 6, 0.5f);
  release(in, 1), release(out, 1);

  /* LayerNormalization over the last axis */
  start("LayerNormalization");
  attr_f("epsilon", 1e-6f);
  in[0] = TF(2, D(2, 2), 1, 3, 5, 5), in[1] = TF(1, D(2), 1, 2), in[2] = TF(1, D(2), 0, 1);
  CHECK(run(17, in, 3, out, 1) == 0);
  CHECK_F(out[0], 1e-5f, -1, 3, 0, 1); /* a constant row normalises to 0, leaving the bias */
  release(in, 3), release(out, 1);

  /* ReduceMean: attribute axes (opset 13), input axes (opset 18), keepdims, a non-trailing axis */
  start("ReduceMean");
  attr_ints("axes", (int64_t[]){0}, 1), attr_i("keepdims", 0);
  in[0] = TF(2, D(2, 3), 1, 2, 3, 5, 6, 7);
  CHECK(run(13, in, 1, out, 1) == 0);
  CHECK_SHAPE(out[0], 1, 3);
  CHECK_F(out[0], 0, 3, 4, 5);
  release(out, 1);
  start("ReduceMean");
  in[1] = TI(1, D(1), -1);
  CHECK(run(18, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 2, 2, 1);
  CHECK_F(out[0], 0, 2, 6);
  release(in, 2), release(out, 1);

  /* Gather with a negative index; along axis 1 */
  start("Gather");
  in[0] = TF(2, D(3, 2), 1, 2, 3, 4, 5, 6), in[1] = TI(1, D(2), -1, 0);
  CHECK(run(13, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 2, 2, 2);
  CHECK_F(out[0], 0, 5, 6, 1, 2);
  release(out, 1);
  start("Gather");
  attr_i("axis", 1);
  op_xt_release(&in[1]);
  in[1] = TI(0, D(0), 1);
  CHECK(run(13, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 1, 3);
  CHECK_F(out[0], 0, 2, 4, 6);
  release(out, 1);
  op_xt_release(&in[1]);
  in[1] = TI(1, D(1), 5);
  CHECK(run(13, in, 2, out, 1) == -1);
  CHECK_CONTAINS(err.message, "out of range");
  release(in, 2);

  /* Slice: clamped ends, a negative step, explicit axes */
  start("Slice");
  in[0] = TF(2, D(2, 4), 0, 1, 2, 3, 4, 5, 6, 7);
  in[1] = TI(1, D(1), -1), in[2] = TI(1, D(1), -1000), in[3] = TI(1, D(1), 1), in[4] = TI(1, D(1), -2);
  CHECK(run(13, in, 5, out, 1) == 0);
  CHECK_SHAPE(out[0], 2, 2, 2);
  CHECK_F(out[0], 0, 3, 1, 7, 5);
  release(in, 5), release(out, 1);

  /* Split: equal parts and sizes from an input; Concat back */
  start("Split");
  attr_i("axis", 1);
  in[0] = TF(2, D(1, 6), 1, 2, 3, 4, 5, 6), in[1] = TI(1, D(3), 1, 2, 3);
  CHECK(run(13, in, 2, out, 3) == 0);
  CHECK_F(out[0], 0, 1);
  CHECK_F(out[2], 0, 4, 5, 6);
  start("Concat");
  attr_i("axis", 1);
  op_xt cat[3] = {out[2], out[1], out[0]}, joined;
  CHECK(run(13, cat, 3, &joined, 1) == 0);
  CHECK_F(joined, 0, 4, 5, 6, 2, 3, 1);
  op_xt_release(&joined);
  release(out, 3);
  start("Split");
  attr_i("axis", 1);
  CHECK(run(13, in, 1, out, 2) == 0); /* no sizes: equal parts */
  CHECK_F(out[1], 0, 4, 5, 6);
  release(in, 2), release(out, 2);

  /* Reshape: 0 copies, -1 infers; a wrong count is an error */
  start("Reshape");
  in[0] = T(F, 3, (int64_t[]){2, 3, 4}, (float[24]){0}), in[1] = TI(1, D(3), 0, -1, 2);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 3, 2, 6, 2);
  release(out, 1);
  op_xt_release(&in[1]);
  in[1] = TI(1, D(2), 5, -1);
  CHECK(run(14, in, 2, out, 1) == -1);
  CHECK_CONTAINS(err.message, "cannot infer -1");
  release(in, 2);

  /* Transpose, Unsqueeze (attribute before 13, input after), Squeeze, Shape, Expand */
  start("Transpose");
  attr_ints("perm", (int64_t[]){1, 0, 2}, 3);
  in[0] = TF(3, D(2, 2, 2), 0, 1, 2, 3, 4, 5, 6, 7);
  CHECK(run(14, in, 1, out, 1) == 0);
  CHECK_F(out[0], 0, 0, 1, 4, 5, 2, 3, 6, 7);
  release(in, 1), release(out, 1);
  start("Transpose"); /* a strided last axis */
  in[0] = TF(2, D(2, 3), 1, 2, 3, 4, 5, 6);
  CHECK(run(14, in, 1, out, 1) == 0);
  CHECK_SHAPE(out[0], 2, 3, 2);
  CHECK_F(out[0], 0, 1, 4, 2, 5, 3, 6);
  release(out, 1);
  start("Unsqueeze");
  attr_ints("axes", (int64_t[]){0, -1}, 2);
  CHECK(run(11, in, 1, out, 1) == 0);
  CHECK_SHAPE(out[0], 4, 1, 2, 3, 1);
  op_xt sq[1] = {out[0]};
  start("Squeeze");
  CHECK(run(11, sq, 1, &out[1], 1) == 0);
  CHECK_SHAPE(out[1], 2, 2, 3);
  release(out, 2);
  start("Unsqueeze");
  in[1] = TI(1, D(1), 1);
  CHECK(run(13, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 3, 2, 1, 3);
  release(out, 1);
  start("Shape");
  attr_i("start", -1);
  CHECK(run(15, in, 1, out, 1) == 0);
  CHECK_I(out[0], 3);
  release(in, 2), release(out, 1);
  start("Expand");
  in[0] = TF(2, D(3, 1), 1, 2, 3), in[1] = TI(1, D(3), 2, 1, 2);
  CHECK(run(14, in, 2, out, 1) == 0);
  CHECK_SHAPE(out[0], 3, 2, 3, 2);
  CHECK_F(out[0], 0, 1, 1, 2, 2, 3, 3, 1, 1, 2, 2, 3, 3);
  release(in, 2), release(out, 1);

  /* Range, ConstantOfShape */
  start("Range");
  in[0] = TI(0, D(0), 10), in[1] = TI(0, D(0), 3), in[2] = TI(0, D(0), -3);
  CHECK(run(14, in, 3, out, 1) == 0);
  CHECK_I(out[0], 10, 7, 4);
  release(in, 3), release(out, 1);
  start("ConstantOfShape");
  in[0] = TI(1, D(2), 2, 0);
  CHECK(run(14, in, 1, out, 1) == 0);
  CHECK_SHAPE(out[0], 2, 2, 0);
  release(in, 1), release(out, 1);

  /* QuantizeLinear: round half to even, saturate; per-axis DequantizeLinear */
  start("QuantizeLinear");
  in[0] = TF(1, D(5), 0.5f, 1.5f, 2.5f, 1000, -1000), in[1] = TF(0, D(0), 1), in[2] = T(3, 0, NULL, (int8_t[]){0});
  CHECK(run(13, in, 3, out, 1) == 0);
  CHECK(out[0].dtype == 3);
  CHECK_I(out[0], 0, 2, 2, 127, -128);
  op_xt q = out[0];
  release(in, 3);
  start("DequantizeLinear");
  attr_i("axis", 0);
  in[0] = q, in[1] = TF(1, D(5), 1, 2, 3, 0.5f, 0.25f);
  CHECK(run(13, in, 2, out, 1) == 0);
  CHECK_F(out[0], 0, 0, 4, 6, 63.5f, -32);
  release(in, 2), release(out, 1);

  /* MatMulInteger with zero points */
  start("MatMulInteger");
  in[0] = T(2, 2, (int64_t[]){1, 2}, (uint8_t[]){3, 5}), in[1] = T(2, 2, (int64_t[]){2, 1}, (uint8_t[]){2, 4});
  in[2] = T(2, 0, NULL, (uint8_t[]){1}), in[3] = T(2, 0, NULL, (uint8_t[]){2});
  CHECK(run(14, in, 4, out, 1) == 0);
  CHECK(out[0].dtype == 6);
  CHECK_I(out[0], (3 - 1) * (2 - 2) + (5 - 1) * (4 - 2));
  release(in, 4), release(out, 1);

  /* the whole operator table is strictly sorted, so bsearch finds every entry */
  size_t n_ops;
  const op_op *ops = op_exec_ops(&n_ops);
  CHECK(n_ops > 50);
  for (size_t i = 1; i < n_ops; i++)
    if (strcmp(ops[i - 1].name, ops[i].name) >= 0) {
      fprintf(stderr, "operator table out of order: '%s' before '%s'\n", ops[i - 1].name, ops[i].name);
      CHECK(strcmp(ops[i - 1].name, ops[i].name) < 0);
    }
  for (size_t i = 0; i < n_ops; i++) CHECK(op_exec_find_op(ops[i].name) == &ops[i]);
  CHECK(op_exec_find_op("LSTM") == NULL);
  test_fastmath();
  test_refusals();
  test_real_export_ops();
  return check_done("ops");
}
