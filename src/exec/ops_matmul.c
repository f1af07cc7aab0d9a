/* ops_matmul.c - MatMul (numpy semantics: 1-D promotion, broadcast batch axes), Gemm and the
 * reference MatMulInteger. Float products go through gemm.c: activations times a constant weight
 * become one product over all batch rows with the weight packed once per session (k->wpack). */
#include "exec/exec.h"

#include <stdlib.h>
#include <string.h>

#define T_FLOAT ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT

/* Shapes of a matrix product after numpy's 1-D promotion and batch broadcasting. */
typedef struct mm_shape {
  int64_t M, K, N;
  int batch_rank;
  int64_t batch[OP_MAX_RANK];
  int64_t a_stride[OP_MAX_RANK], b_stride[OP_MAX_RANK]; /* in matrices, 0 where broadcast */
  int64_t n_batch;
  int out_rank;
  int64_t out_dims[OP_MAX_RANK];
} mm_shape;

static int mm_plan(const op_kctx *k, const op_xt *a, const op_xt *b, mm_shape *s, op_error *err) {
  if (a->rank < 1 || b->rank < 1) return op_kfail(k, err, "inputs must have rank 1 or more");
  int64_t ad[OP_MAX_RANK + 1], bd[OP_MAX_RANK + 1];
  int ar = a->rank, br = b->rank;
  memcpy(ad, a->dims, (size_t)ar * sizeof(int64_t));
  memcpy(bd, b->dims, (size_t)br * sizeof(int64_t));
  bool a_vec = ar == 1, b_vec = br == 1;
  if (a_vec) ad[1] = ad[0], ad[0] = 1, ar = 2;
  if (b_vec) bd[1] = 1, br = 2;
  s->M = ad[ar - 2];
  s->K = ad[ar - 1];
  s->N = bd[br - 1];
  if (bd[br - 2] != s->K)
    return op_kfail(k, err, "inner dimensions differ: %lld vs %lld", (long long)s->K, (long long)bd[br - 2]);
  int ab = ar - 2, bb = br - 2;
  s->batch_rank = ab > bb ? ab : bb;
  if (s->batch_rank > OP_MAX_RANK - 2) return op_kfail(k, err, "rank too large");
  int64_t as = 1, bs = 1;
  s->n_batch = 1;
  for (int d = s->batch_rank - 1; d >= 0; d--) {
    int ai = d - (s->batch_rank - ab), bi = d - (s->batch_rank - bb);
    int64_t da = ai >= 0 ? ad[ai] : 1, db = bi >= 0 ? bd[bi] : 1;
    if (da != db && da != 1 && db != 1)
      return op_kfail(k, err, "batch dimensions do not broadcast: %lld vs %lld", (long long)da, (long long)db);
    s->batch[d] = da == 1 ? db : da;
    s->a_stride[d] = da == 1 ? 0 : as;
    s->b_stride[d] = db == 1 ? 0 : bs;
    as *= da;
    bs *= db;
    s->n_batch *= s->batch[d];
  }
  s->out_rank = 0;
  for (int d = 0; d < s->batch_rank; d++) s->out_dims[s->out_rank++] = s->batch[d];
  if (!a_vec) s->out_dims[s->out_rank++] = s->M;
  if (!b_vec) s->out_dims[s->out_rank++] = s->N;
  return 0;
}

OP_KERNEL(op_k_matmul) {
  (void)n_in, (void)n_out;
  op_xt *a = in[0], *b = in[1];
  /* a packed weight is read from its pack, never from b (which may stay float16 or bfloat16) */
  if (a->dtype != T_FLOAT || (b->dtype != T_FLOAT && !k->wpack)) return op_kfail(k, err, "only float32 is supported");
  mm_shape s;
  if (mm_plan(k, a, b, &s, err) || op_xt_alloc(out, T_FLOAT, s.out_dims, s.out_rank, err)) return -1;
  const float *A = a->data, *B = b->data;
  float *C = out->data;
  bool b_shared = true, b_dense = true, a_dense = true; /* dense: the operand's batches lie back to back */
  for (int d = 0; d < s.batch_rank; d++) {
    b_shared &= s.b_stride[d] == 0;
    a_dense &= s.a_stride[d] != 0 || s.batch[d] == 1;
    b_dense &= s.b_stride[d] != 0 || s.batch[d] == 1;
  }
  if (k->wpack && b_shared && a_dense) { /* activations x constant weight: one product over every batch row */
    if (op_wpack_gemm(k->wpack, s.n_batch * s.M, A, C, NULL)) return op_kfail(k, err, "out of memory");
    return 0;
  }
  if (b->dtype != T_FLOAT) return op_kfail(k, err, "only float32 is supported");
  if (b_shared && a_dense) {
    op_sgemm(false, false, s.n_batch * s.M, s.N, s.K, 1.f, A, s.K, B, s.N, 0.f, C, s.N);
    return 0;
  }
  if (a_dense && b_dense) { /* attention's products: one batched call */
    op_sgemm_batch(false, false, s.n_batch, s.M, s.N, s.K, 1.f, A, s.K, s.M * s.K, B, s.N, s.K * s.N, 0.f, C, s.N,
                   s.M * s.N);
    return 0;
  }
  int64_t idx[OP_MAX_RANK] = {0};
  for (int64_t bi = 0; bi < s.n_batch; bi++) {
    int64_t ao = 0, bo = 0;
    for (int d = 0; d < s.batch_rank; d++) {
      ao += idx[d] * s.a_stride[d];
      bo += idx[d] * s.b_stride[d];
    }
    op_sgemm(false, false, s.M, s.N, s.K, 1.f, A + ao * s.M * s.K, s.K, B + bo * s.K * s.N, s.N, 0.f,
             C + bi * s.M * s.N, s.N);
    for (int d = s.batch_rank - 1; d >= 0; d--) {
      if (++idx[d] < s.batch[d]) break;
      idx[d] = 0;
    }
  }
  return 0;
}

OP_KERNEL(op_k_gemm) {
  (void)n_out;
  op_xt *a = in[0], *b = in[1], *c = n_in > 2 ? in[2] : NULL;
  if (a->dtype != T_FLOAT || (b->dtype != T_FLOAT && !k->wpack) || (c && c->dtype != T_FLOAT))
    return op_kfail(k, err, "only float32 is supported");
  if (a->rank != 2 || b->rank != 2) return op_kfail(k, err, "A and B must be matrices");
  bool ta = op_kattr_int(k, "transA", 0), tb = op_kattr_int(k, "transB", 0);
  float alpha = op_kattr_float(k, "alpha", 1.f), beta = op_kattr_float(k, "beta", 1.f);
  int64_t M = ta ? a->dims[1] : a->dims[0], K = ta ? a->dims[0] : a->dims[1];
  int64_t KB = tb ? b->dims[1] : b->dims[0], N = tb ? b->dims[0] : b->dims[1];
  if (K != KB) return op_kfail(k, err, "inner dimensions differ: %lld vs %lld", (long long)K, (long long)KB);
  int64_t cm = 1, cn = 1;
  if (c) { /* C broadcasts to [M, N] */
    cm = c->rank == 2 ? c->dims[0] : 1, cn = c->rank >= 1 ? c->dims[c->rank - 1] : 1;
    if (c->rank > 2 || (cm != 1 && cm != M) || (cn != 1 && cn != N)) return op_kfail(k, err, "C does not broadcast to [M, N]");
  }
  int64_t dims[2] = {M, N};
  if (op_xt_alloc(out, T_FLOAT, dims, 2, err)) return -1;
  float *C = out->data;
  const float *cv = c ? c->data : NULL;
  if (k->wpack && !ta) {
    /* a bias row rides along in the product (no extra pass); anything else is applied after */
    bool fuse = c && cm == 1 && cn == N && alpha == 1.f && beta == 1.f;
    if (op_wpack_gemm(k->wpack, M, a->data, C, fuse ? cv : NULL)) return op_kfail(k, err, "out of memory");
    if (!fuse && (alpha != 1.f || (c && beta != 0.f)))
      for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++)
          C[i * N + j] = alpha * C[i * N + j] + (c ? beta * cv[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)] : 0.f);
    return 0;
  }
  if (b->dtype != T_FLOAT) return op_kfail(k, err, "only float32 is supported");
  if (c)
    for (int64_t i = 0; i < M; i++)
      for (int64_t j = 0; j < N; j++) C[i * N + j] = beta * cv[(cm == 1 ? 0 : i) * cn + (cn == 1 ? 0 : j)];
  op_sgemm(ta, tb, M, N, K, alpha, a->data, a->dims[1], b->data, b->dims[1], c ? 1.f : 0.f, C, N);
  return 0;
}

/* Reference integer product: (A - a_zero) x (B - b_zero) into int32; zero points per tensor, per row
 * of A or per column of B. */
OP_KERNEL(op_k_matmul_integer) {
  (void)n_out;
  op_xt *a = in[0], *b = in[1], *az = n_in > 2 ? in[2] : NULL, *bz = n_in > 3 ? in[3] : NULL;
  int32_t i8 = ONNX__TENSOR_PROTO__DATA_TYPE__INT8, u8 = ONNX__TENSOR_PROTO__DATA_TYPE__UINT8;
  if ((a->dtype != i8 && a->dtype != u8) || (b->dtype != i8 && b->dtype != u8))
    return op_kfail(k, err, "inputs must be int8 or uint8");
  mm_shape s;
  if (mm_plan(k, a, b, &s, err) || op_xt_alloc(out, ONNX__TENSOR_PROTO__DATA_TYPE__INT32, s.out_dims, s.out_rank, err))
    return -1;
  int32_t *C = out->data;
  int64_t idx[OP_MAX_RANK] = {0};
#define Q(t, i) ((t)->dtype == i8 ? (int32_t)((const int8_t *)(t)->data)[i] : (int32_t)((const uint8_t *)(t)->data)[i])
  for (int64_t bi = 0; bi < s.n_batch; bi++) {
    int64_t ao = 0, bo = 0;
    for (int d = 0; d < s.batch_rank; d++) {
      ao += idx[d] * s.a_stride[d];
      bo += idx[d] * s.b_stride[d];
    }
    for (int64_t m = 0; m < s.M; m++)
      for (int64_t n = 0; n < s.N; n++) {
        int32_t za = az ? Q(az, az->numel > 1 ? m : 0) : 0, zb = bz ? Q(bz, bz->numel > 1 ? n : 0) : 0, acc = 0;
        for (int64_t kk = 0; kk < s.K; kk++)
          acc += (Q(a, ao * s.M * s.K + m * s.K + kk) - za) * (Q(b, bo * s.K * s.N + kk * s.N + n) - zb);
        C[bi * s.M * s.N + m * s.N + n] = acc;
      }
    for (int d = s.batch_rank - 1; d >= 0; d--) {
      if (++idx[d] < s.batch[d]) break;
      idx[d] = 0;
    }
  }
#undef Q
  return 0;
}
