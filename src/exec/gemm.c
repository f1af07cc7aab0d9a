/* gemm.c - the one place float matrix products are computed (the "BLAS shim"). It picks the kernel
 * path once per process from the CPU's feature bits (never its model name) or ONNX_PRUNE_ISA: oneDNN,
 * which dispatches AVX2 / AVX-512 / AMX by feature bits; OpenBLAS where its own guess uses the CPU's
 * AVX2; or a portable loop. Constant weights are packed once per session for the chosen kernel. */
#include "exec/exec.h"
#include "exec/fastmath.h"
#include "parallel/parallel.h"

#include <cblas.h>
#include <dnnl.h>
#ifdef _OPENMP
#include <omp.h>
#endif
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { PATH_DNNL, PATH_OPENBLAS, PATH_REF } gemm_path;

static struct {
  pthread_once_t once;
  gemm_path path;
  const char *bad_isa; /* an ONNX_PRUNE_ISA value we do not know, reported by op_gemm_init */
  dnnl_engine_t eng;
  char name[128];
} G = {.once = PTHREAD_ONCE_INIT};

static const struct {
  const char *name;
  dnnl_cpu_isa_t cap;
} ISAS[] = {
    {"native", dnnl_cpu_isa_all},
    {"avx512", dnnl_cpu_isa_avx512_core_bf16}, /* AVX-512 without AMX */
    {"avx2", dnnl_cpu_isa_avx2},
    {"sse", dnnl_cpu_isa_sse41},
};

static const char *isa_name(dnnl_cpu_isa_t isa) {
  switch ((int)isa) {
  case dnnl_cpu_isa_sse41: return "sse4.1";
  case dnnl_cpu_isa_avx: return "avx";
  case dnnl_cpu_isa_avx2: return "avx2";
  case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
  case dnnl_cpu_isa_avx512_core: return "avx512";
  case dnnl_cpu_isa_avx512_core_vnni: return "avx512_vnni";
  case dnnl_cpu_isa_avx512_core_bf16: return "avx512_bf16";
  case dnnl_cpu_isa_avx512_core_amx: return "avx512_amx";
  default: return "other";
  }
}

/* What the CPU supports, from its cpuid feature bits (never its model name). */
static bool cpu_avx2(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
static bool cpu_avx512(void) {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512dq");
}

/* Whether the kernel set OpenBLAS picked for itself uses AVX2 and FMA. */
static bool openblas_runs_avx2(void) {
  static const char *const cores[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "SapphireRapids"};
  const char *c = openblas_get_corename();
  for (size_t i = 0; c && i < sizeof cores / sizeof *cores; i++)
    if (!strcasecmp(c, cores[i])) return true;
  return false;
}

static void gemm_init(void) {
  const char *want = getenv("ONNX_PRUNE_ISA");
  if (!want || !*want) want = "native";
  G.path = PATH_DNNL;
  /* native: on an AVX2 CPU without AVX-512, OpenBLAS when its own guess did land on its AVX2 kernels
   * (as fast as oneDNN's AVX2 gemm on one thread, and it loses far less to a loaded machine); oneDNN
   * wherever the CPU has more than OpenBLAS uses (an AVX-512 VM it calls "Prescott") and on AVX-512,
   * where oneDNN's matmul reads weights packed once instead of repacking them on every call */
  if (!strcmp(want, "native") && cpu_avx2() && !cpu_avx512() && openblas_runs_avx2()) want = "openblas";
  if (!strcmp(want, "ref")) {
    G.path = PATH_REF;
  } else if (!strcmp(want, "openblas")) {
    G.path = PATH_OPENBLAS;
  } else {
    size_t i = 0;
    while (i < sizeof ISAS / sizeof *ISAS && strcmp(ISAS[i].name, want)) i++;
    if (i == sizeof ISAS / sizeof *ISAS) {
      G.bad_isa = want;
      G.path = PATH_REF;
    } else if (dnnl_set_max_cpu_isa(ISAS[i].cap) != dnnl_success || dnnl_engine_create(&G.eng, dnnl_cpu, 0) != dnnl_success) {
      G.path = PATH_REF; /* a CPU oneDNN cannot drive: the portable loop is still right */
    }
  }
  if (G.path == PATH_DNNL) {
    const dnnl_version_t *v = dnnl_version();
    snprintf(G.name, sizeof G.name, "oneDNN %d.%d %s", v->major, v->minor, isa_name(dnnl_get_effective_cpu_isa()));
  } else if (G.path == PATH_OPENBLAS) {
    snprintf(G.name, sizeof G.name, "OpenBLAS %s", openblas_get_corename());
  } else {
    snprintf(G.name, sizeof G.name, "reference (portable C)");
  }
}

int op_gemm_init(op_error *err) {
  pthread_once(&G.once, gemm_init);
  if (G.bad_isa)
    return op_fail(err, OP_ARG, "ONNX_PRUNE_ISA: unknown value '%s' (expected native, avx512, avx2, sse, openblas or ref)",
                   G.bad_isa);
  return 0;
}

const char *op_gemm_kernel(void) {
  pthread_once(&G.once, gemm_init);
  return G.name;
}

void op_gemm_paths(char *buf, size_t n) {
  snprintf(buf, n, "ref openblas%s%s%s", __builtin_cpu_supports("sse4.1") ? " sse" : "", cpu_avx2() ? " avx2" : "",
           cpu_avx512() ? " avx512" : "");
}

/* ---- portable reference: C[i,j] = alpha * sum_k A(i,k) B(k,j) + beta * C[i,j] ---- */

static void ref_gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  float *row = op_xmalloc((size_t)(N ? N : 1) * sizeof *row);
  for (int64_t i = 0; i < M; i++) {
    memset(row, 0, (size_t)N * sizeof *row);
    for (int64_t k = 0; k < K; k++) {
      float a = ta ? A[k * lda + i] : A[i * lda + k];
      if (tb)
        for (int64_t j = 0; j < N; j++) row[j] += a * B[j * ldb + k];
      else
        for (int64_t j = 0; j < N; j++) row[j] += a * B[k * ldb + j];
    }
    float *c = C + i * ldc;
    for (int64_t j = 0; j < N; j++) c[j] = alpha * row[j] + (beta == 0.f ? 0.f : beta * c[j]);
  }
  free(row);
}

/* ---- oneDNN ---- */

/* oneDNN's post-op for an epilogue activation (swish with alpha 1 is SiLU). */
static dnnl_alg_kind_t dnnl_act(op_act a) {
  switch (a) {
  case OP_ACT_RELU: return dnnl_eltwise_relu;
  case OP_ACT_GELU_ERF: return dnnl_eltwise_gelu_erf;
  case OP_ACT_GELU_TANH: return dnnl_eltwise_gelu_tanh;
  case OP_ACT_SILU: return dnnl_eltwise_swish;
  default: return dnnl_alg_kind_undef;
  }
}

static dnnl_status_t md_2d(dnnl_memory_desc_t *md, int64_t batch, int64_t rows, int64_t cols, bool trans, int64_t ld,
                           int64_t bstride) {
  /* the logical [rows, cols] matrix; stored transposed when trans (ld is then the stride of a column) */
  if (batch > 1) {
    dnnl_dims_t d = {batch, rows, cols}, s = {bstride, trans ? 1 : ld, trans ? ld : 1};
    return dnnl_memory_desc_init_by_strides(md, 3, d, dnnl_f32, s);
  }
  dnnl_dims_t d = {rows, cols}, s = {trans ? 1 : ld, trans ? ld : 1};
  return dnnl_memory_desc_init_by_strides(md, 2, d, dnnl_f32, s);
}

/* One product through a matmul primitive made for it (oneDNN's primitive cache keeps the compiled
 * kernel, so a repeated shape costs a lookup); with keep, the primitive is kept or reused there.
 * bias is [1, N] or NULL; alpha/beta as in GEMM. The scratchpad is ours, one per call: oneDNN's own
 * (library mode) is shared per thread and would tie a kept primitive to the thread that made it,
 * while sessions may run on any thread, and concurrently. */
static dnnl_status_t dnnl_run_here(const dnnl_memory_desc_t *amd, const dnnl_memory_desc_t *bmd,
                                   const dnnl_memory_desc_t *cmd, const float *A, const void *B, float *C,
                                   const float *bias, float alpha, float beta, op_act act, dnnl_primitive_t *keep) {
  dnnl_primitive_attr_t attr = NULL;
  dnnl_post_ops_t po = NULL;
  dnnl_primitive_desc_t pd = NULL;
  dnnl_primitive_t p = keep ? *keep : NULL;
  dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, mbias = NULL, mscratch = NULL;
  dnnl_stream_t st = NULL;
  dnnl_status_t rc = dnnl_success;
  dnnl_memory_desc_t biasmd;
  void *scratch = NULL;
  int nd = cmd->ndims;
  if (bias) {
    dnnl_dims_t bd = {1, 1, 1};
    bd[nd - 1] = cmd->dims[nd - 1];
    rc = dnnl_memory_desc_init_by_tag(&biasmd, nd, bd, dnnl_f32, nd == 3 ? dnnl_abc : dnnl_ab);
  }
  bool made = !p;
  if (made && !rc) {
    if (!(rc = dnnl_primitive_attr_create(&attr)) && alpha != 1.f)
      rc = dnnl_primitive_attr_set_output_scales(attr, 1, 0, &alpha);
    if (!rc) rc = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (!rc && (beta != 0.f || act != OP_ACT_NONE)) rc = dnnl_post_ops_create(&po);
    if (!rc && beta != 0.f) rc = dnnl_post_ops_append_sum(po, beta);
    /* alpha: swish's sigmoid scale (1: SiLU); relu's negative slope (0) */
    if (!rc && act != OP_ACT_NONE) rc = dnnl_post_ops_append_eltwise(po, 1.f, dnnl_act(act), act == OP_ACT_SILU ? 1.f : 0.f, 0.f);
    if (!rc && po) rc = dnnl_primitive_attr_set_post_ops(attr, po);
    dnnl_matmul_desc_t d;
    if (!rc) rc = dnnl_matmul_desc_init(&d, amd, bmd, bias ? &biasmd : NULL, cmd);
    if (!rc) rc = dnnl_primitive_desc_create(&pd, &d, attr, G.eng, NULL);
    if (!rc) rc = dnnl_primitive_create(&p, pd);
  }
  const_dnnl_primitive_desc_t ppd = NULL;
  if (!rc) rc = dnnl_primitive_get_primitive_desc(p, &ppd);
  const dnnl_memory_desc_t *smd = rc ? NULL : dnnl_primitive_desc_query_md(ppd, dnnl_query_scratchpad_md, 0);
  size_t sbytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
  if (!rc && sbytes) {
    if (posix_memalign(&scratch, 64, sbytes)) rc = dnnl_out_of_memory;
    else rc = dnnl_memory_create(&mscratch, smd, G.eng, scratch);
  }
  if (!rc) rc = dnnl_memory_create(&ma, amd, G.eng, (void *)A);
  if (!rc) rc = dnnl_memory_create(&mb, bmd, G.eng, (void *)B);
  if (!rc) rc = dnnl_memory_create(&mc, cmd, G.eng, C);
  if (!rc && bias) rc = dnnl_memory_create(&mbias, &biasmd, G.eng, (void *)bias);
  if (!rc) rc = dnnl_stream_create(&st, G.eng, dnnl_stream_default_flags);
  if (!rc) {
    dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc}};
    int n = 3;
    if (bias) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mbias};
    if (mscratch) args[n++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, mscratch};
    rc = dnnl_primitive_execute(p, st, n, args);
    if (!rc) rc = dnnl_stream_wait(st);
  }
  if (st) dnnl_stream_destroy(st);
  if (mscratch) dnnl_memory_destroy(mscratch);
  free(scratch);
  if (mbias) dnnl_memory_destroy(mbias);
  if (mc) dnnl_memory_destroy(mc);
  if (mb) dnnl_memory_destroy(mb);
  if (ma) dnnl_memory_destroy(ma);
  if (made && keep && !rc) *keep = p;
  else if (made && p) dnnl_primitive_destroy(p);
  if (pd) dnnl_primitive_desc_destroy(pd);
  if (po) dnnl_post_ops_destroy(po);
  if (attr) dnnl_primitive_attr_destroy(attr);
  return rc;
}

/* Products under SMALL_FLOPS multiply-adds run on the calling thread alone: waking and joining the
 * other threads costs more than the work (and far more on a loaded machine, where every parallel
 * region waits for a descheduled thread). Decided by size alone, so a kept primitive (oneDNN fixes its
 * thread count when made) always meets the same setting. */
#define SMALL_FLOPS (1 << 24)

static dnnl_status_t dnnl_run(const dnnl_memory_desc_t *amd, const dnnl_memory_desc_t *bmd, const dnnl_memory_desc_t *cmd,
                              const float *A, const void *B, float *C, const float *bias, float alpha, float beta,
                              op_act act, dnnl_primitive_t *keep) {
  int nd = cmd->ndims;
  double flops = (double)cmd->dims[nd - 1] * (double)amd->dims[nd - 1];
  for (int d = 0; d < nd - 1; d++) flops *= (double)cmd->dims[d];
#ifdef _OPENMP /* (a compiler without OpenMP support, e.g. clang without libomp for fuzzing, leaves it to oneDNN) */
  if (flops < SMALL_FLOPS) {
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    dnnl_status_t rc = dnnl_run_here(amd, bmd, cmd, A, B, C, bias, alpha, beta, act, keep);
    omp_set_num_threads(threads);
    return rc;
  }
#else
  (void)flops;
#endif
  return dnnl_run_here(amd, bmd, cmd, A, B, C, bias, alpha, beta, act, keep);
}

/* ---- general products (activations x activations, and weights that are not constant) ---- */

void op_sgemm_batch(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N, int64_t K, float alpha,
                    const float *A, int64_t lda, int64_t stride_a, const float *B, int64_t ldb, int64_t stride_b,
                    float beta, float *C, int64_t ldc, int64_t stride_c) {
  if (batch <= 0 || M <= 0 || N <= 0) return;
  pthread_once(&G.once, gemm_init);
  if (G.path == PATH_DNNL && K > 0) {
    dnnl_memory_desc_t amd, bmd, cmd;
    if (!md_2d(&amd, batch, M, K, trans_a, lda, stride_a) && !md_2d(&bmd, batch, K, N, trans_b, ldb, stride_b) &&
        !md_2d(&cmd, batch, M, N, false, ldc, stride_c) &&
        !dnnl_run(&amd, &bmd, &cmd, A, B, C, NULL, alpha, beta, OP_ACT_NONE, NULL))
      return;
    /* a shape oneDNN turns down: the loops below are right for every shape */
  }
  for (int64_t b = 0; b < batch; b++) {
    const float *a = A + b * stride_a, *bb = B + b * stride_b;
    float *c = C + b * stride_c;
    if (G.path == PATH_OPENBLAS && K > 0)
      cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, (blasint)M,
                  (blasint)N, (blasint)K, alpha, a, (blasint)lda, bb, (blasint)ldb, beta, c, (blasint)ldc);
    else
      ref_gemm(trans_a, trans_b, M, N, K, alpha, a, lda, bb, ldb, beta, c, ldc);
  }
}

void op_sgemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
              const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
  op_sgemm_batch(trans_a, trans_b, 1, M, N, K, alpha, A, lda, 0, B, ldb, 0, beta, C, ldc, 0);
}

/* ---- epilogues: bias and activation over a product's output ---- */

const char *op_act_name(op_act a) {
  switch (a) {
#define OP_ACT_STR(name, str) \
  case OP_ACT_##name: return str;
    OP_ACTS(OP_ACT_STR)
#undef OP_ACT_STR
  default: return "?";
  }
}

/* The same formulas (and fastmath's erf and exp) as the unfused kernels in ops_elementwise.c, so the
 * fused path differs from them by rounding only. */
OP_VECTOR_CLONES void op_act_apply(op_act a, float *x, int64_t n) {
  switch (a) {
  case OP_ACT_RELU: for (int64_t i = 0; i < n; i++) x[i] = x[i] > 0.f ? x[i] : 0.f; break;
  case OP_ACT_GELU_ERF: for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.f + op_erff(x[i] * (float)M_SQRT1_2)); break;
  case OP_ACT_GELU_TANH:
    for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.f + tanhf(0.7978845608028654f * (x[i] + 0.044715f * x[i] * x[i] * x[i])));
    break;
  case OP_ACT_SILU: for (int64_t i = 0; i < n; i++) x[i] = x[i] / (1.f + op_expf(-x[i])); break;
  default: break;
  }
}

typedef struct epi_job {
  float *C;
  int64_t N;
  const float *bias;
  op_act act;
} epi_job;

static void epi_rows(void *ctx, int64_t lo, int64_t hi) {
  const epi_job *j = ctx;
  for (int64_t i = lo; i < hi; i++) {
    float *c = j->C + i * j->N;
    if (j->bias)
      for (int64_t k = 0; k < j->N; k++) c[k] += j->bias[k];
    op_act_apply(j->act, c, j->N); /* the row is still in cache from the bias add */
  }
}

/* Bias and activation in one pass over C[M, N] (rows split across threads when it is large). */
static void epilogue_pass(float *C, int64_t M, int64_t N, const float *bias, op_act act) {
  if (!bias && act == OP_ACT_NONE) return;
  epi_job j = {C, N, bias, act};
  op_parallel_for(M, N * (int64_t)sizeof(float), epi_rows, &j);
}

/* ---- constant weights, packed once per session ---- */

#define WPACK_CACHE 16 /* primitives kept per weight, one per (row count M, bias, activation) seen */

struct op_wpack {
  int64_t K, N;
  const float *plain; /* the weight as float32 [K, N] (or [N, K] when trans), or NULL once packed away */
  bool trans;
  float *owned;       /* storage we made: a widened copy, or the packed layout */
  dnnl_memory_desc_t wmd; /* the layout the kernel reads (PATH_DNNL) */
  pthread_mutex_t mu;
  int n_cache;
  struct {
    int64_t M;
    bool bias;
    op_act act;
    dnnl_primitive_t p;
  } cache[WPACK_CACHE];
};

static float f16_to_f32(uint16_t h) {
  uint32_t s = (uint32_t)(h >> 15) << 31, e = (h >> 10) & 31, m = h & 1023, bits;
  if (e == 31) bits = s | 0x7f800000u | (m << 13);
  else if (e) bits = s | ((e + 112) << 23) | (m << 13);
  else if (!m) bits = s;
  else { /* subnormal: normalise */
    e = 113;
    while (!(m & 1024)) m <<= 1, e--;
    bits = s | (e << 23) | ((m & 1023) << 13);
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

/* The weight as float32, borrowed when it already is; otherwise widened into *owned (one weight at a
 * time, read in its own type: no whole-model float32 copy). */
static const float *as_f32(const op_xt *w, float **owned) {
  *owned = NULL;
  bool f32 = w->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  if (f32 && (uintptr_t)w->data % sizeof(float) == 0) return w->data;
  /* bytes borrowed from the file may be unaligned: read them with memcpy */
  float *f = op_xmalloc((size_t)(w->numel ? w->numel : 1) * sizeof *f);
  if (f32) {
    memcpy(f, w->data, (size_t)w->numel * sizeof *f);
  } else {
    const unsigned char *h = w->data;
    for (int64_t i = 0; i < w->numel; i++) {
      uint16_t v;
      memcpy(&v, h + 2 * i, 2);
      if (w->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16) {
        f[i] = f16_to_f32(v);
      } else {
        uint32_t bits = (uint32_t)v << 16;
        memcpy(&f[i], &bits, 4);
      }
    }
  }
  *owned = f;
  return f;
}

bool op_wpack_accepts(const op_xt *w) {
  return w && w->rank == 2 &&
         (w->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || w->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16 ||
          w->dtype == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16);
}

/* Asks oneDNN which weight layout its fastest matmul for this shape reads (for a typical row count)
 * and reorders the weight into it once; keeps the caller's bytes when that layout is the plain one. */
static dnnl_status_t dnnl_pack(op_wpack *p) {
  dnnl_memory_desc_t amd, bany, bplain, cmd;
  dnnl_dims_t ad = {128, p->K}, bd = {p->K, p->N}, cd = {128, p->N};
  dnnl_primitive_desc_t pd = NULL, rpd = NULL;
  dnnl_primitive_t rp = NULL;
  dnnl_memory_t from = NULL, to = NULL;
  dnnl_stream_t st = NULL;
  dnnl_matmul_desc_t d;
  dnnl_status_t rc = dnnl_memory_desc_init_by_tag(&amd, 2, ad, dnnl_f32, dnnl_ab);
  if (!rc) rc = dnnl_memory_desc_init_by_tag(&bany, 2, bd, dnnl_f32, dnnl_format_tag_any);
  if (!rc) rc = dnnl_memory_desc_init_by_tag(&bplain, 2, bd, dnnl_f32, p->trans ? dnnl_ba : dnnl_ab);
  if (!rc) rc = dnnl_memory_desc_init_by_tag(&cmd, 2, cd, dnnl_f32, dnnl_ab);
  if (!rc) rc = dnnl_matmul_desc_init(&d, &amd, &bany, NULL, &cmd);
  if (!rc) rc = dnnl_primitive_desc_create(&pd, &d, NULL, G.eng, NULL);
  if (rc) goto done;
  p->wmd = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
  if (dnnl_memory_desc_equal(&p->wmd, &bplain)) goto done; /* plain already: read in place, no copy */
  size_t bytes = dnnl_memory_desc_get_size(&p->wmd);
  float *packed = NULL;
  if (posix_memalign((void **)&packed, 64, bytes ? bytes : 64)) {
    rc = dnnl_out_of_memory;
    goto done;
  }
  if (!(rc = dnnl_memory_create(&from, &bplain, G.eng, (void *)p->plain)) &&
      !(rc = dnnl_memory_create(&to, &p->wmd, G.eng, packed)) &&
      !(rc = dnnl_reorder_primitive_desc_create(&rpd, &bplain, G.eng, &p->wmd, G.eng, NULL)) &&
      !(rc = dnnl_primitive_create(&rp, rpd)) && !(rc = dnnl_stream_create(&st, G.eng, dnnl_stream_default_flags))) {
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    if (!(rc = dnnl_primitive_execute(rp, st, 2, args))) rc = dnnl_stream_wait(st);
  }
  if (rc) {
    free(packed);
  } else {
    free(p->owned); /* a widened copy is not needed once packed */
    p->owned = packed;
    p->plain = NULL;
  }
done:
  if (rc) dnnl_memory_desc_init_by_tag(&p->wmd, 2, bd, dnnl_f32, p->trans ? dnnl_ba : dnnl_ab);
  if (st) dnnl_stream_destroy(st);
  if (rp) dnnl_primitive_destroy(rp);
  if (rpd) dnnl_primitive_desc_destroy(rpd);
  if (to) dnnl_memory_destroy(to);
  if (from) dnnl_memory_destroy(from);
  if (pd) dnnl_primitive_desc_destroy(pd);
  return rc;
}

op_wpack *op_wpack_new(const op_xt *w, bool trans) {
  pthread_once(&G.once, gemm_init);
  op_wpack *p = op_xcalloc(1, sizeof *p);
  p->trans = trans;
  p->K = trans ? w->dims[1] : w->dims[0];
  p->N = trans ? w->dims[0] : w->dims[1];
  p->plain = as_f32(w, &p->owned);
  pthread_mutex_init(&p->mu, NULL);
  if (G.path == PATH_DNNL && p->K > 0 && p->N > 0) dnnl_pack(p); /* on failure the plain layout stays */
  return p;
}

void op_wpack_free(op_wpack *p) {
  if (!p) return;
  for (int i = 0; i < p->n_cache; i++) dnnl_primitive_destroy(p->cache[i].p);
  pthread_mutex_destroy(&p->mu);
  free(p->owned);
  free(p);
}

/* The weight back in its plain float32 [K, N] layout, for a product oneDNN turns down (never expected). */
static float *unpack(const op_wpack *p) {
  float *w = op_xmalloc((size_t)(p->K * p->N) * sizeof *w);
  dnnl_memory_desc_t plain;
  dnnl_dims_t bd = {p->K, p->N};
  dnnl_primitive_desc_t rpd = NULL;
  dnnl_primitive_t rp = NULL;
  dnnl_memory_t from = NULL, to = NULL;
  dnnl_stream_t st = NULL;
  dnnl_status_t rc = dnnl_memory_desc_init_by_tag(&plain, 2, bd, dnnl_f32, dnnl_ab);
  if (!rc && !(rc = dnnl_memory_create(&from, &p->wmd, G.eng, p->owned)) &&
      !(rc = dnnl_memory_create(&to, &plain, G.eng, w)) &&
      !(rc = dnnl_reorder_primitive_desc_create(&rpd, &p->wmd, G.eng, &plain, G.eng, NULL)) &&
      !(rc = dnnl_primitive_create(&rp, rpd)) && !(rc = dnnl_stream_create(&st, G.eng, dnnl_stream_default_flags))) {
    dnnl_exec_arg_t args[2] = {{DNNL_ARG_FROM, from}, {DNNL_ARG_TO, to}};
    if (!(rc = dnnl_primitive_execute(rp, st, 2, args))) rc = dnnl_stream_wait(st);
  }
  if (st) dnnl_stream_destroy(st);
  if (rp) dnnl_primitive_destroy(rp);
  if (rpd) dnnl_primitive_desc_destroy(rpd);
  if (to) dnnl_memory_destroy(to);
  if (from) dnnl_memory_destroy(from);
  if (rc) {
    free(w);
    return NULL;
  }
  return w;
}

int64_t op_wpack_k(const op_wpack *p) { return p->K; }
bool op_wpack_owns_copy(const op_wpack *p) { return p->owned != NULL; }
int64_t op_wpack_n(const op_wpack *p) { return p->N; }

int op_wpack_gemm(op_wpack *p, int64_t M, const float *A, float *C, const float *bias) {
  return op_wpack_gemm_act(p, M, A, C, bias, OP_ACT_NONE);
}

int op_wpack_gemm_act(op_wpack *p, int64_t M, const float *A, float *C, const float *bias, op_act act) {
  if (M <= 0 || p->N <= 0) return 0;
  if (G.path == PATH_DNNL && p->K > 0) {
    dnnl_memory_desc_t amd, cmd;
    dnnl_dims_t ad = {M, p->K}, cd = {M, p->N};
    dnnl_primitive_t prim = NULL;
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < p->n_cache && !prim; i++)
      if (p->cache[i].M == M && p->cache[i].bias == (bias != NULL) && p->cache[i].act == act) prim = p->cache[i].p;
    pthread_mutex_unlock(&p->mu);
    bool fresh = !prim;
    const void *wdata = p->plain ? (const void *)p->plain : p->owned;
    if (!dnnl_memory_desc_init_by_tag(&amd, 2, ad, dnnl_f32, dnnl_ab) &&
        !dnnl_memory_desc_init_by_tag(&cmd, 2, cd, dnnl_f32, dnnl_ab) &&
        !dnnl_run(&amd, &p->wmd, &cmd, A, wdata, C, bias, 1.f, 0.f, act, &prim)) {
      if (fresh) { /* keep it for the next run (a primitive never leaves the cache while the session lives) */
        pthread_mutex_lock(&p->mu);
        if (p->n_cache < WPACK_CACHE) {
          p->cache[p->n_cache].M = M;
          p->cache[p->n_cache].bias = bias != NULL;
          p->cache[p->n_cache].act = act;
          p->cache[p->n_cache++].p = prim;
          prim = NULL;
        }
        pthread_mutex_unlock(&p->mu);
        if (prim) dnnl_primitive_destroy(prim);
      }
      return 0;
    }
    if (fresh && prim) dnnl_primitive_destroy(prim);
  }
  const float *W = p->plain;
  float *tmp = NULL;
  bool trans = p->trans;
  if (!W) { /* packed, and oneDNN turned this row count down: unpack for the loops below */
    if (!(W = tmp = unpack(p))) return -1;
    trans = false;
  }
  op_sgemm_batch(false, trans, 1, M, p->N, p->K, 1.f, A, p->K, 0, W, trans ? p->K : p->N, 0, 0.f, C, p->N, 0);
  free(tmp);
  epilogue_pass(C, M, p->N, bias, act);
  return 0;
}
