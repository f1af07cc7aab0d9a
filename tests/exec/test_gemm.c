/* test_gemm.c - the matrix-product shim (src/exec/gemm.c) on the kernel path ONNX_PRUNE_ISA selects,
 * against a double-precision loop: odd and edge sizes, transposes, alpha/beta, batches, packed
 * float32 / float16 / bfloat16 weights with and without bias. `test_gemm paths` prints the paths this
 * CPU can run and `test_gemm kernel` what runs now (tests/e2e/kernel_paths.sh runs it under each). */
#include "check.h"
#include "exec/exec.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#define T_F32 ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT
#define T_F16 ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16
#define T_BF16 ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16

static uint32_t seed = 12345;
static float rnd(void) {
  seed = seed * 1664525u + 1013904223u;
  return (float)((seed >> 8) & 0xffff) / 32768.f - 1.f;
}

/* C = alpha * op(A) op(B) + beta * C0, in double; scale gets sum |terms| for the tolerance */
static void ref(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                const float *B, int64_t ldb, float beta, const float *C0, int64_t ldc, double *out, double *scale) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++) {
      double s = 0, a = 0;
      for (int64_t k = 0; k < K; k++) {
        double t = (double)(ta ? A[k * lda + i] : A[i * lda + k]) * (tb ? B[j * ldb + k] : B[k * ldb + j]);
        s += t, a += fabs(t);
      }
      double c = beta != 0.f ? (double)beta * C0[i * ldc + j] : 0;
      out[i * N + j] = alpha * s + c;
      scale[i * N + j] = fabs(alpha) * a + fabs(c);
    }
}

static bool close_to(const float *got, int64_t ldc, const double *want, const double *scale, int64_t M, int64_t N) {
  for (int64_t i = 0; i < M; i++)
    for (int64_t j = 0; j < N; j++)
      if (!(fabs(got[i * ldc + j] - want[i * N + j]) <= 1e-5 * scale[i * N + j] + 1e-30)) {
        fprintf(stderr, "  [%lld,%lld]: %.9g, want %.9g\n", (long long)i, (long long)j, got[i * ldc + j], want[i * N + j]);
        return false;
      }
  return true;
}

static size_t nz(int64_t n) { return (size_t)(n > 0 ? n : 1); }

static float *rnd_buf(int64_t n) {
  float *p = malloc((size_t)(n ? n : 1) * sizeof *p);
  for (int64_t i = 0; i < n; i++) p[i] = rnd();
  return p;
}

static void general(int64_t M, int64_t N, int64_t K) {
  for (int v = 0; v < 4; v++) {
    bool ta = v & 1, tb = v & 2;
    float alpha = v == 3 ? 0.5f : 1.f, beta = v >= 2 ? 0.75f : 0.f;
    int64_t lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3, batch = 3;
    int64_t sa = (ta ? K : M) * lda, sb = (tb ? N : K) * ldb, sc = M * ldc;
    float *A = rnd_buf(batch * sa), *B = rnd_buf(batch * sb), *C = rnd_buf(batch * sc), *C0 = malloc((size_t)(batch * sc) * 4);
    memcpy(C0, C, (size_t)(batch * sc) * 4);
    double *want = malloc((size_t)nz(M * N) * 8), *scale = malloc((size_t)nz(M * N) * 8);
    op_sgemm_batch(ta, tb, batch, M, N, K, alpha, A, lda, sa, B, ldb, sb, beta, C, ldc, sc);
    for (int64_t b = 0; b < batch; b++) {
      ref(ta, tb, M, N, K, alpha, A + b * sa, lda, B + b * sb, ldb, beta, C0 + b * sc, ldc, want, scale);
      bool ok = close_to(C + b * sc, ldc, want, scale, M, N);
      if (!ok) fprintf(stderr, "  op_sgemm_batch M=%lld N=%lld K=%lld ta=%d tb=%d batch %lld\n", (long long)M,
                       (long long)N, (long long)K, ta, tb, (long long)b);
      CHECK(ok);
    }
    memcpy(C, C0, (size_t)sc * 4);
    op_sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C0, ldc, want, scale);
    CHECK(close_to(C, ldc, want, scale, M, N));
    free(A), free(B), free(C), free(C0), free(want), free(scale);
  }
}

static uint16_t to_half(float f, int32_t dt, float *back) {
  uint32_t u;
  memcpy(&u, &f, 4);
  uint16_t h;
  if (dt == T_BF16) {
    h = (uint16_t)(u >> 16);
    uint32_t w = (uint32_t)h << 16;
    memcpy(back, &w, 4);
    return h;
  }
  /* float16 of a value in (-1, 1): round to 10 mantissa bits, subnormals below 2^-14 */
  float a = fabsf(f);
  int e;
  frexpf(a, &e);
  float q = a < 0x1p-14f ? roundf(a / 0x1p-24f) * 0x1p-24f : ldexpf(roundf(ldexpf(a, 11 - e)), e - 11);
  *back = f < 0 ? -q : q;
  uint32_t bits;
  memcpy(&bits, &q, 4);
  if (q == 0) h = 0;
  else if (q < 0x1p-14f) h = (uint16_t)(q / 0x1p-24f);
  else h = (uint16_t)((((bits >> 23) & 0xff) - 112) << 10 | ((bits >> 13) & 1023));
  if (f < 0) h |= 0x8000;
  return h;
}

static void packed(int64_t M, int64_t N, int64_t K, int32_t dt, bool trans, bool bias) {
  int64_t rows = trans ? N : K, cols = trans ? K : N;
  float *W = rnd_buf(rows * cols), *A = rnd_buf(M * K), *C = malloc((size_t)nz(M * N) * 4), *bv = rnd_buf(N);
  uint16_t *h = malloc((size_t)nz(rows * cols) * 2);
  if (dt != T_F32)
    for (int64_t i = 0; i < rows * cols; i++) h[i] = to_half(W[i], dt, &W[i]); /* W becomes the exact value */
  op_xt w = {.dtype = dt, .rank = 2, .dims = {rows, cols}, .numel = rows * cols, .data = dt == T_F32 ? (void *)W : h};
  CHECK(op_wpack_accepts(&w));
  op_wpack *p = op_wpack_new(&w, trans);
  CHECK_EQ_INT(op_wpack_k(p), K);
  CHECK_EQ_INT(op_wpack_n(p), N);
  double *want = malloc((size_t)nz(M * N) * 8), *scale = malloc((size_t)nz(M * N) * 8);
  float *ones = malloc((size_t)(M ? M : 1) * 4);
  for (int64_t i = 0; i < M; i++) ones[i] = 1.f;
  for (int rep = 0; rep < 2; rep++) { /* the second call reuses the cached primitive */
    CHECK(op_wpack_gemm(p, M, A, C, bias ? bv : NULL) == 0);
    ref(false, trans, M, N, K, 1.f, A, K, W, cols, 0.f, NULL, N, want, scale);
    if (bias)
      for (int64_t i = 0; i < M * N; i++) want[i] += bv[i % N], scale[i] += fabs(bv[i % N]);
    bool ok = close_to(C, N, want, scale, M, N);
    if (!ok) fprintf(stderr, "  op_wpack_gemm M=%lld N=%lld K=%lld dtype %d trans %d bias %d\n", (long long)M, (long long)N,
                     (long long)K, dt, trans, bias);
    CHECK(ok);
  }
  op_wpack_free(p);
  free(W), free(A), free(C), free(bv), free(h), free(want), free(scale), free(ones);
}

static double act_ref(op_act a, double x) {
  switch (a) {
  case OP_ACT_RELU: return x > 0 ? x : 0;
  case OP_ACT_GELU_ERF: return 0.5 * x * (1 + erf(x * M_SQRT1_2));
  case OP_ACT_GELU_TANH: return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
  case OP_ACT_SILU: return x / (1 + exp(-x));
  default: return x;
  }
}

/* Fused epilogues (op_wpack_gemm_act): act(A W + bias) against double precision, with the product's
 * own tolerance carried through the activation (slope at most 1.13) plus the activation's own
 * approximation (2e-6 relative). Sizes on both sides of the single-thread threshold. */
static void epilogue(int64_t M, int64_t N, int64_t K, bool trans, bool bias, op_act act) {
  int64_t rows = trans ? N : K, cols = trans ? K : N;
  float *W = rnd_buf(rows * cols), *A = rnd_buf(M * K), *C = malloc((size_t)nz(M * N) * 4), *bv = rnd_buf(N);
  for (int64_t i = 0; i < M * K; i++) A[i] *= 4.f; /* pre-activations over about [-8, 8]: both tails */
  op_xt w = {.dtype = T_F32, .rank = 2, .dims = {rows, cols}, .numel = rows * cols, .data = W};
  op_wpack *p = op_wpack_new(&w, trans);
  double *want = malloc((size_t)nz(M * N) * 8), *scale = malloc((size_t)nz(M * N) * 8);
  ref(false, trans, M, N, K, 1.f, A, K, W, cols, 0.f, NULL, N, want, scale);
  for (int rep = 0; rep < 2; rep++) {
    CHECK(op_wpack_gemm_act(p, M, A, C, bias ? bv : NULL, act) == 0);
    bool ok = true;
    for (int64_t i = 0; i < M * N && ok; i++) {
      double pre = want[i] + (bias ? bv[i % N] : 0), y = act_ref(act, pre);
      double tol = 1.2e-5 * (scale[i] + (bias ? fabs(bv[i % N]) : 0)) + 2e-6 * (1 + fabs(y));
      ok = fabs(C[i] - y) <= tol;
      if (!ok)
        fprintf(stderr, "  op_wpack_gemm_act %s M=%lld N=%lld K=%lld trans %d bias %d: [%lld] %.9g, want %.9g\n",
                op_act_name(act), (long long)M, (long long)N, (long long)K, trans, bias, (long long)i, C[i], y);
    }
    CHECK(ok);
  }
  op_wpack_free(p);
  free(W), free(A), free(C), free(bv), free(want), free(scale);
}

/* One pack used from two threads at once, neither of which made it (sessions run on any thread). */
typedef struct {
  op_wpack *p;
  const float *A, *W;
  int64_t M, N, K;
  bool ok;
} job;

static void *worker(void *arg) {
  job *j = arg;
  float *C = malloc(nz(j->M * j->N) * 4);
  double *want = malloc(nz(j->M * j->N) * 8), *scale = malloc(nz(j->M * j->N) * 8);
  ref(false, false, j->M, j->N, j->K, 1.f, j->A, j->K, j->W, j->N, 0.f, NULL, j->N, want, scale);
  j->ok = true;
  for (int r = 0; r < 20; r++) j->ok &= !op_wpack_gemm(j->p, j->M, j->A, C, NULL) && close_to(C, j->N, want, scale, j->M, j->N);
  free(C), free(want), free(scale);
  return NULL;
}

static void concurrent(void) {
  int64_t N = 96, K = 200, Ms[2] = {64, 33};
  float *W = rnd_buf(K * N), *A[2] = {rnd_buf(Ms[0] * K), rnd_buf(Ms[1] * K)};
  op_xt w = {.dtype = T_F32, .rank = 2, .dims = {K, N}, .numel = K * N, .data = W};
  op_wpack *p = op_wpack_new(&w, false);
  job jobs[4];
  pthread_t t[4];
  for (int i = 0; i < 4; i++) {
    jobs[i] = (job){p, A[i % 2], W, Ms[i % 2], N, K, false};
    CHECK(pthread_create(&t[i], NULL, worker, &jobs[i]) == 0);
  }
  for (int i = 0; i < 4; i++) {
    pthread_join(t[i], NULL);
    CHECK(jobs[i].ok);
  }
  op_wpack_free(p);
  free(W), free(A[0]), free(A[1]);
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "paths")) {
    char buf[256];
    op_gemm_paths(buf, sizeof buf);
    puts(buf);
    return 0;
  }
  op_error err;
  if (op_gemm_init(&err)) {
    fprintf(stderr, "%s\n", err.message);
    return 2;
  }
  if (argc > 1 && !strcmp(argv[1], "kernel")) {
    puts(op_gemm_kernel());
    return 0;
  }
  printf("kernel: %s\n", op_gemm_kernel());
  static const int64_t sizes[][3] = {{1, 1, 1}, {1, 17, 5}, {7, 3, 1}, {5, 33, 17}, {64, 64, 64}, {131, 70, 257}, {64, 200, 96}};
  for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) general(sizes[i][0], sizes[i][1], sizes[i][2]);
  static const int64_t wsizes[][3] = {{1, 768, 64}, {3, 17, 5}, {64, 96, 768}, {131, 300, 70}, {256, 64, 64}};
  int32_t dts[] = {T_F32, T_F16, T_BF16};
  for (size_t i = 0; i < sizeof wsizes / sizeof *wsizes; i++)
    for (int d = 0; d < 3; d++)
      for (int v = 0; v < 4; v++) packed(wsizes[i][0], wsizes[i][1], wsizes[i][2], dts[d], v & 1, v & 2);
  concurrent();
  static const int64_t esizes[][3] = {{1, 33, 17}, {37, 96, 64}, {256, 128, 768}};
  for (size_t i = 0; i < sizeof esizes / sizeof *esizes; i++)
    for (int a = 0; a < OP_ACT_COUNT; a++)
      for (int v = 0; v < 4; v++) epilogue(esizes[i][0], esizes[i][1], esizes[i][2], v & 1, v & 2, (op_act)a);
  return check_done("gemm");
}
