/* ops_attention.c - ONNX Runtime's fused attention ops (com.microsoft Attention, MultiHeadAttention,
 * GroupQueryAttention) as its CPU kernels compute them: heads gathered into [B, heads, rows, H] buffers
 * (the present key/value outputs when asked for), scores = scale * Q K^T + additive mask + attention bias,
 * softmax, then P V, through op_sgemm. Masks follow ONNX Runtime's PrepareMask: a padded key adds
 * mask_filter_value (not -inf, so a fully padded row stays uniform as it does there; such a row agrees
 * with ONNX Runtime only to ~1e-3, the float spacing of scores near -10000); a future key under a causal
 * mask gets the lowest float. */
#include "exec/exec.h"
#include "exec/fastmath.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define T_FLOAT ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT
#define T_INT32 ONNX__TENSOR_PROTO__DATA_TYPE__INT32

static bool f32(const op_xt *t) { return !t || t->dtype == T_FLOAT; }
/* Scratch of n values (n may be 0). */
static float *fbuf(int64_t n) { return op_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float)); }
static int64_t *ibuf(int64_t n) { return op_xmalloc((size_t)(n > 0 ? n : 1) * sizeof(int64_t)); }

/* The attention proper. Q [B, N, S, H]; K, V [B, NKV, Tcap, H|Hv] of which the first T rows are keys
 * (query head n reads kv head n / (N / NKV)). */
typedef struct attn {
  int64_t B, N, NKV, S, T, Tcap, H, Hv;
  const float *q, *k, *v;
  float scale;
  const float *mask;      /* additive [B, S, T], or NULL */
  const op_xt *bias;      /* additive [B|1, N|1, S, T], or NULL */
  const int64_t *lo, *hi; /* per (b, s): only keys [lo, hi) are attended; NULL: all T */
  float *out;             /* [B, S, N * Hv] */
} attn;

OP_VECTOR_CLONES static void softmax_span(float *row, int64_t lo, int64_t hi, int64_t T) {
  float m = hi > lo ? op_max_lanes(row + lo, hi - lo) : -INFINITY;
  for (int64_t j = lo; j < hi; j++) row[j] = op_expf(row[j] - m);
  double sum = hi > lo ? op_sum_lanes(row + lo, hi - lo) : 0;
  float inv = sum > 0 ? (float)(1.0 / sum) : 0.f;
  for (int64_t j = 0; j < T; j++) row[j] = j >= lo && j < hi ? row[j] * inv : 0.f;
}

static void attend(const attn *a) {
  int64_t S = a->S, T = a->T, group = a->N / a->NKV;
  float *p = fbuf(S * T);
  const float *bias = a->bias ? a->bias->data : NULL;
  int64_t bb = a->bias && a->bias->dims[0] > 1 ? a->bias->dims[1] * S * T : 0,
          bn = a->bias && a->bias->dims[1] > 1 ? S * T : 0;
  for (int64_t b = 0; b < a->B; b++)
    for (int64_t n = 0; n < a->N; n++) {
      int64_t kv = b * a->NKV + n / group;
      const float *q = a->q + (b * a->N + n) * S * a->H;
      /* the mask is the GEMM's C (beta 1), as in ONNX Runtime: a padded key's score + mask_filter_value
       * rounds the same way */
      if (a->mask) memcpy(p, a->mask + b * S * T, (size_t)(S * T) * sizeof(float));
      op_sgemm(false, true, S, T, a->H, a->scale, q, a->H, a->k + kv * a->Tcap * a->H, a->H, a->mask ? 1.f : 0.f, p, T);
      for (int64_t s = 0; s < S; s++) {
        float *row = p + s * T;
        if (bias)
          for (int64_t j = 0; j < T; j++) row[j] += bias[b * bb + n * bn + s * T + j];
        int64_t lo = a->lo ? a->lo[b * S + s] : 0, hi = a->hi ? a->hi[b * S + s] : T;
        softmax_span(row, lo < 0 ? 0 : lo, hi > T ? T : hi, T);
      }
      op_sgemm(false, false, S, a->Hv, T, 1.f, p, T, a->v + kv * a->Tcap * a->Hv, a->Hv, 0.f,
               a->out + b * S * a->N * a->Hv + n * a->Hv, a->N * a->Hv);
    }
  free(p);
}

/* dst [B, N, Tcap, H] rows [row0, row0 + S) of each (b, n) = src element (b, s, n, h) at
 * src[b * sb + s * ss + n * sn + h], plus bias[n * H + h] when given. */
static void put_heads(float *dst, int64_t Tcap, int64_t row0, int64_t B, int64_t S, int64_t N, int64_t H,
                      const float *src, int64_t sb, int64_t ss, int64_t sn, const float *bias) {
  for (int64_t b = 0; b < B; b++)
    for (int64_t n = 0; n < N; n++)
      for (int64_t s = 0; s < S; s++) {
        float *d = dst + ((b * N + n) * Tcap + row0 + s) * H;
        const float *x = src + b * sb + s * ss + n * sn;
        for (int64_t h = 0; h < H; h++) d[h] = x[h] + (bias ? bias[n * H + h] : 0.f);
      }
}

/* ONNX Runtime's additive mask [B, S, T] from an int32 mask_index / key_padding_mask: [B] end positions,
 * [2B] end and start positions, [B, T] or [B, S, T] 0/1; plus the causal part (query s sees keys up to
 * P + s). NULL when there is nothing to mask. */
static int build_mask(const op_kctx *k, const op_xt *m, bool causal, int64_t B, int64_t S, int64_t T, int64_t P,
                      float **out, op_error *err) {
  *out = NULL;
  if (!m && !(causal && S > 1)) return 0;
  if (m && m->dtype != T_INT32) return op_kfail(k, err, "the mask must be int32");
  float filter = op_kattr_float(k, "mask_filter_value", -10000.f);
  bool d1 = m && m->rank == 1 && (m->dims[0] == B || m->dims[0] == 2 * B),
       d2 = m && m->rank == 2 && m->dims[0] == B && m->dims[1] == T;
  bool d3 = m && m->rank == 3 && m->dims[0] == B && m->dims[1] == S && m->dims[2] == T;
  if (m && !d1 && !d2 && !d3)
    return op_kfail(
        k, err,
        "mask of shape %d-D [%lld, ...] is not supported (expected [%lld], [%lld], [%lld, %lld] or [%lld, %lld, %lld])",
        m->rank, m->rank ? (long long)m->dims[0] : 0LL, (long long)B, (long long)(2 * B), (long long)B, (long long)T,
        (long long)B, (long long)S, (long long)T);
  float *mk = fbuf(B * S * T);
  memset(mk, 0, (size_t)(B * S * T) * sizeof(float));
  const int32_t *mv = m ? m->data : NULL;
  for (int64_t b = 0; b < B; b++)
    for (int64_t s = 0; s < S; s++) {
      float *row = mk + (b * S + s) * T;
      for (int64_t j = 0; j < T && m; j++) {
        bool keep;
        if (d1)
          keep = j < mv[b] && (m->dims[0] == B || j >= (mv[B + b] < T ? mv[B + b] : T));
        else if (d2)
          keep = mv[b * T + j] > 0;
        else
          keep = mv[(b * S + s) * T + j] > 0;
        row[j] = keep ? 0.f : filter;
      }
      if (causal)
        for (int64_t j = P + s + 1; j < T; j++) row[j] = -FLT_MAX;
    }
  *out = mk;
  return 0;
}

/* Attention bias [B|1, N|1, S, T]. */
static int check_attn_bias(const op_kctx *k, const op_xt *ab, int64_t B, int64_t N, int64_t S, int64_t T,
                           op_error *err) {
  if (!ab) return 0;
  if (!f32(ab) || ab->rank != 4 || (ab->dims[0] != 1 && ab->dims[0] != B) || (ab->dims[1] != 1 && ab->dims[1] != N) ||
      ab->dims[2] != S || ab->dims[3] != T)
    return op_kfail(k, err, "attention_bias must be float32 [%lld or 1, %lld or 1, %lld, %lld]", (long long)B,
                    (long long)N, (long long)S, (long long)T);
  return 0;
}

static float scale_of(const op_kctx *k, int64_t H) {
  float s = op_kattr_float(k, "scale", 0.f);
  return s != 0.f ? s : (float)(1.0 / sqrt((double)H));
}

/* ---- Attention: input [B, S, Din] x weights [Din, Dq + Dk + Dv] + bias, mask_index, past [2, B, N, P, H],
 * attention_bias; outputs output [B, S, Dv] and present [2, B, N, P + S, H]. */
OP_KERNEL(op_k_ms_attention) {
  op_xt *x = in[0], *w = in[1], *bias = in[2], *mask = n_in > 3 ? in[3] : NULL, *past = n_in > 4 ? in[4] : NULL;
  op_xt *ab = n_in > 5 ? in[5] : NULL;
  if (!f32(x) || !f32(w) || !f32(bias) || !f32(past)) return op_kfail(k, err, "only float32 is supported");
  int64_t N = op_kattr_int(k, "num_heads", 0);
  if (N <= 0) return op_kfail(k, err, "num_heads must be positive");
  if (x->rank != 3 || w->rank != 2 || w->dims[0] != x->dims[2])
    return op_kfail(k, err, "input must be [batch, sequence, hidden] and weights [hidden, q + k + v widths]");
  int64_t B = x->dims[0], S = x->dims[1], Din = x->dims[2], Dt = w->dims[1], Dq, Dk, Dv;
  size_t nq;
  const int64_t *qkv = op_kattr_ints(k, "qkv_hidden_sizes", &nq);
  if (nq == 3)
    Dq = qkv[0], Dk = qkv[1], Dv = qkv[2];
  else if (nq == 0)
    Dq = Dk = Dv = Dt / 3;
  else
    return op_kfail(k, err, "qkv_hidden_sizes must have 3 values");
  if (Dq + Dk + Dv != Dt || Dq != Dk || Dq % N || Dv % N || Dq <= 0 || Dv <= 0)
    return op_kfail(k, err, "the q, k, v widths %lld, %lld, %lld do not fit weights of width %lld and %lld heads",
                    (long long)Dq, (long long)Dk, (long long)Dv, (long long)Dt, (long long)N);
  if (bias->rank != 1 || bias->dims[0] != Dt) return op_kfail(k, err, "bias must be 1-D of %lld values", (long long)Dt);
  int64_t H = Dq / N, Hv = Dv / N, P = 0;
  if (past) {
    if (past->rank != 5 || past->dims[0] != 2 || past->dims[1] != B || past->dims[2] != N || past->dims[4] != H ||
        H != Hv)
      return op_kfail(k, err, "past must be [2, %lld, %lld, past, %lld] (and v as wide as k)", (long long)B,
                      (long long)N, (long long)H);
    P = past->dims[3];
  }
  int64_t T = P + S;
  if (check_attn_bias(k, ab, B, N, S, T, err)) return -1;
  float *mk;
  if (build_mask(k, mask, op_kattr_int(k, "unidirectional", 0) != 0, B, S, T, P, &mk, err)) return -1;
  bool want_present = n_out > 1 && k->node->output[1][0];
  if (want_present && H != Hv) {
    free(mk);
    return op_kfail(k, err, "present needs v as wide as k");
  }
  int64_t odims[3] = {B, S, Dv}, pdims[5] = {2, B, N, T, H};
  if (op_xt_alloc(&out[0], T_FLOAT, odims, 3, err) || (want_present && op_xt_alloc(&out[1], T_FLOAT, pdims, 5, err))) {
    free(mk);
    return -1;
  }
  /* projection: [B*S, Dt] = x W + bias */
  float *proj = fbuf(B * S * Dt);
  op_sgemm(false, false, B * S, Dt, Din, 1.f, x->data, Din, w->data, Dt, 0.f, proj, Dt);
  float *q = fbuf(B * S * Dq);
  float *kv = want_present ? out[1].data : fbuf(B * N * T * (H + Hv));
  float *kk = kv, *vv = kv + B * N * T * H;
  const float *bs = bias->data;
  put_heads(q, S, 0, B, S, N, H, proj, S * Dt, Dt, H, bs);
  if (past) {
    const float *pk = past->data, *pv = pk + B * N * P * H;
    put_heads(kk, T, 0, B, P, N, H, pk, N * P * H, H, P * H, NULL);
    put_heads(vv, T, 0, B, P, N, Hv, pv, N * P * Hv, Hv, P * Hv, NULL);
  }
  put_heads(kk, T, P, B, S, N, H, proj + Dq, S * Dt, Dt, H, bs + Dq);
  put_heads(vv, T, P, B, S, N, Hv, proj + Dq + Dk, S * Dt, Dt, Hv, bs + Dq + Dk);
  attn a = {B, N, N, S, T, T, H, Hv, q, kk, vv, scale_of(k, H), mk, ab, NULL, NULL, out[0].data};
  attend(&a);
  free(proj);
  free(q);
  if (!want_present) free(kv);
  free(mk);
  return 0;
}

/* ---- MultiHeadAttention: query [B, S, D] (or packed q|k|v [B, S, N, 3, H]); key [B, L, D], [B, N, L, H] or
 * packed k|v [B, L, N, 2, H]; value [B, L, Dv] or [B, N, L, Hv]; bias [D + D + Dv] for the 3-D forms;
 * key_padding_mask; attention_bias; past_key / past_value [B, N, P, H]; outputs output, present_key,
 * present_value [B, N, P + L, H]. */
OP_KERNEL(op_k_ms_mha) {
#define IN(i) (n_in > (i) ? in[i] : NULL)
  op_xt *qx = in[0], *kx = IN(1), *vx = IN(2), *bias = IN(3), *mask = IN(4), *ab = IN(5), *pk = IN(6), *pv = IN(7);
#undef IN
  if (!f32(qx) || !f32(kx) || !f32(vx) || !f32(bias) || !f32(pk) || !f32(pv))
    return op_kfail(k, err, "only float32 is supported");
  int64_t N = op_kattr_int(k, "num_heads", 0);
  if (N <= 0) return op_kfail(k, err, "num_heads must be positive");
  int64_t B = qx->dims[0], S, L, H, Hv;
  /* element (b, s, n, h) of q, k, v at base + b*sb + s*ss + n*sn + h */
  const float *qb, *kb, *vb;
  int64_t q_sb, q_ss, q_sn, k_sb, k_ss, k_sn, v_sb, v_ss, v_sn;
  bool kv_bnsh = false;
  if (qx->rank == 5) { /* packed q|k|v */
    if (kx || vx || qx->dims[2] != N || qx->dims[3] != 3)
      return op_kfail(k, err, "packed query must be [batch, sequence, %lld, 3, head] with no key or value",
                      (long long)N);
    S = L = qx->dims[1];
    H = Hv = qx->dims[4];
    q_sb = k_sb = v_sb = S * N * 3 * H, q_ss = k_ss = v_ss = N * 3 * H, q_sn = k_sn = v_sn = 3 * H;
    qb = qx->data, kb = qb + H, vb = qb + 2 * H;
  } else {
    if (qx->rank != 3 || !kx || qx->dims[2] % N)
      return op_kfail(k, err, "query must be [batch, sequence, heads * head] with a key");
    S = qx->dims[1];
    H = qx->dims[2] / N;
    q_sb = S * N * H, q_ss = N * H, q_sn = H, qb = qx->data;
    if (kx->rank == 5) { /* packed k|v */
      if (vx || kx->dims[0] != B || kx->dims[2] != N || kx->dims[3] != 2 || kx->dims[4] != H)
        return op_kfail(k, err, "packed key must be [batch, kv_sequence, %lld, 2, %lld] with no value", (long long)N,
                        (long long)H);
      L = kx->dims[1];
      Hv = H;
      k_sb = v_sb = L * N * 2 * H, k_ss = v_ss = N * 2 * H, k_sn = v_sn = 2 * H;
      kb = kx->data, vb = kb + H;
    } else if (kx->rank == 4) { /* [B, N, L, H] */
      if (!vx || vx->rank != 4 || kx->dims[0] != B || kx->dims[1] != N || kx->dims[3] != H || vx->dims[0] != B ||
          vx->dims[1] != N || vx->dims[2] != kx->dims[2])
        return op_kfail(k, err, "key and value of rank 4 must be [batch, %lld, kv_sequence, head]", (long long)N);
      kv_bnsh = true;
      L = kx->dims[2];
      Hv = vx->dims[3];
      k_sb = N * L * H, k_ss = H, k_sn = L * H, kb = kx->data;
      v_sb = N * L * Hv, v_ss = Hv, v_sn = L * Hv, vb = vx->data;
    } else {
      if (kx->rank != 3 || !vx || vx->rank != 3 || kx->dims[0] != B || kx->dims[2] != N * H || vx->dims[0] != B ||
          vx->dims[1] != kx->dims[1] || vx->dims[2] % N)
        return op_kfail(k, err, "key must be [batch, kv_sequence, %lld] and value [batch, kv_sequence, heads * v_head]",
                        (long long)(N * H));
      L = kx->dims[1];
      Hv = vx->dims[2] / N;
      k_sb = L * N * H, k_ss = N * H, k_sn = H, kb = kx->data;
      v_sb = L * N * Hv, v_ss = N * Hv, v_sn = Hv, vb = vx->data;
    }
  }
  if (bias && (qx->rank != 3 || kx->rank != 3 || bias->rank != 1 || bias->dims[0] != 2 * N * H + N * Hv))
    return op_kfail(k, err, "bias is supported with 3-D query, key and value only, as [%lld]",
                    (long long)(2 * N * H + N * Hv));
  if ((pk != NULL) != (pv != NULL)) return op_kfail(k, err, "past_key and past_value come together");
  int64_t P = 0;
  if (pk) {
    if (kv_bnsh)
      return op_kfail(k, err, "past_key with a key already in [batch, heads, sequence, head] form is not supported");
    if (pk->rank != 4 || pv->rank != 4 || pk->dims[0] != B || pk->dims[1] != N || pk->dims[3] != H ||
        pv->dims[0] != B || pv->dims[1] != N || pv->dims[2] != pk->dims[2] || pv->dims[3] != Hv)
      return op_kfail(k, err, "past_key and past_value must be [%lld, %lld, past, head]", (long long)B, (long long)N);
    P = pk->dims[2];
  }
  int64_t T = P + L;
  bool causal = op_kattr_int(k, "unidirectional", 0) != 0;
  if (causal && L != S) /* ONNX Runtime's mask is then laid out for P + S keys, not P + L */
    return op_kfail(k, err, "unidirectional with %lld keys for %lld queries (cross-attention) is not supported",
                    (long long)L, (long long)S);
  if (check_attn_bias(k, ab, B, N, S, T, err)) return -1;
  float *mk;
  if (build_mask(k, mask, causal, B, S, T, P, &mk, err)) return -1;
  bool want_k = n_out > 1 && k->node->output[1][0], want_v = n_out > 2 && k->node->output[2][0];
  int64_t odims[3] = {B, S, N * Hv}, kdims[4] = {B, N, T, H}, vdims[4] = {B, N, T, Hv};
  if (op_xt_alloc(&out[0], T_FLOAT, odims, 3, err) || (want_k && op_xt_alloc(&out[1], T_FLOAT, kdims, 4, err)) ||
      (want_v && op_xt_alloc(&out[2], T_FLOAT, vdims, 4, err))) {
    free(mk);
    return -1;
  }
  float *q = fbuf(B * N * S * H);
  float *kk = want_k ? out[1].data : fbuf(B * N * T * H);
  float *vv = want_v ? out[2].data : fbuf(B * N * T * Hv);
  const float *bs = bias ? bias->data : NULL;
  put_heads(q, S, 0, B, S, N, H, qb, q_sb, q_ss, q_sn, bs);
  if (pk) {
    put_heads(kk, T, 0, B, P, N, H, pk->data, N * P * H, H, P * H, NULL);
    put_heads(vv, T, 0, B, P, N, Hv, pv->data, N * P * Hv, Hv, P * Hv, NULL);
  }
  put_heads(kk, T, P, B, L, N, H, kb, k_sb, k_ss, k_sn, bs ? bs + N * H : NULL);
  put_heads(vv, T, P, B, L, N, Hv, vb, v_sb, v_ss, v_sn, bs ? bs + 2 * N * H : NULL);
  attn a = {B, N, N, S, T, T, H, Hv, q, kk, vv, scale_of(k, H), mk, ab, NULL, NULL, out[0].data};
  attend(&a);
  free(q);
  if (!want_k) free(kk);
  if (!want_v) free(vv);
  free(mk);
  return 0;
}

/* ---- GroupQueryAttention: query [B, S, N*H] (or packed [B, S, (N + 2 NKV) H] without key and value), key
 * and value [B, S, NKV*H], past_key / past_value [B, NKV, P, H], seqlens_k [B] (total length - 1 per
 * sequence), total_sequence_length, cos/sin caches for do_rotary. Always causal; local_window_size limits
 * each query to the last window keys, itself included (as ONNX Runtime 1.30 computes it). Present
 * [B, NKV, max(total, P), H]: the past rows kept, the new ones after them, zeros beyond. */
OP_KERNEL(op_k_ms_gqa) {
  op_xt *qx = in[0], *kx = in[1], *vx = in[2], *pk = in[3], *pv = in[4], *seqlens = in[5], *total = in[6];
  op_xt *cosc = n_in > 7 ? in[7] : NULL, *sinc = n_in > 8 ? in[8] : NULL;
  if (!f32(qx) || !f32(kx) || !f32(vx) || !f32(pk) || !f32(pv) || !f32(cosc) || !f32(sinc))
    return op_kfail(k, err, "only float32 is supported");
  int64_t N = op_kattr_int(k, "num_heads", 0), NKV = op_kattr_int(k, "kv_num_heads", 0);
  if (N <= 0 || NKV <= 0 || N % NKV) return op_kfail(k, err, "num_heads must be a positive multiple of kv_num_heads");
  if (qx->rank != 3) return op_kfail(k, err, "query must be [batch, sequence, hidden]");
  int64_t B = qx->dims[0], S = qx->dims[1], H;
  bool packed = !kx;
  if (packed != !vx) return op_kfail(k, err, "key and value come together");
  if (packed) {
    H = qx->dims[2] / (N + 2 * NKV);
    if (H * (N + 2 * NKV) != qx->dims[2])
      return op_kfail(k, err, "packed query width is not (num_heads + 2 kv_num_heads) heads");
  } else {
    H = qx->dims[2] / N;
    if (H * N != qx->dims[2] || kx->rank != 3 || vx->rank != 3 || kx->dims[0] != B || kx->dims[1] != S ||
        kx->dims[2] != NKV * H || memcmp(kx->dims, vx->dims, 3 * sizeof(int64_t)))
      return op_kfail(k, err,
                      "query must be [batch, sequence, %lld * head] and key, value [batch, sequence, %lld * head]",
                      (long long)N, (long long)NKV);
  }
  if (seqlens->dtype != T_INT32 || seqlens->numel != B || total->dtype != T_INT32 || total->numel != 1)
    return op_kfail(k, err, "seqlens_k must be int32 [batch] and total_sequence_length an int32 scalar");
  if ((pk != NULL) != (pv != NULL)) return op_kfail(k, err, "past_key and past_value come together");
  int64_t P = 0;
  if (pk) {
    if (pk->rank != 4 || pk->dims[0] != B || pk->dims[1] != NKV || pk->dims[3] != H ||
        memcmp(pk->dims, pv->dims, 4 * sizeof(int64_t)))
      return op_kfail(k, err, "past_key and past_value must be [%lld, %lld, past, %lld]", (long long)B, (long long)NKV,
                      (long long)H);
    P = pk->dims[2];
  }
  int64_t total_len = ((const int32_t *)total->data)[0], Tcap = total_len > P ? total_len : P;
  bool prompt = S == total_len;
  if (!prompt && S > 1 && B > 1)
    return op_kfail(k, err, "batch must be 1 when sequence_length > 1 and past context is given");
  const int32_t *sl = seqlens->data;
  int64_t *past_len = op_xmalloc((size_t)B * sizeof(int64_t));
  for (int64_t b = 0; b < B; b++) {
    past_len[b] = prompt ? 0 : sl[b] + 1 - S;
    if (past_len[b] < 0 || past_len[b] > P || past_len[b] + S > Tcap || sl[b] + 1 > Tcap) {
      free(past_len);
      return op_kfail(k, err, "seqlens_k[%lld] = %d does not fit the past (%lld) and total (%lld) lengths",
                      (long long)b, sl[b], (long long)P, (long long)total_len);
    }
  }
  bool rotary = op_kattr_int(k, "do_rotary", 0) != 0, interleaved = op_kattr_int(k, "rotary_interleaved", 0) != 0;
  int64_t rot = 0;
  if (rotary) {
    rot = cosc->rank == 2 ? cosc->dims[1] * 2 : 0;
    if (!sinc || sinc->rank != 2 || memcmp(cosc->dims, sinc->dims, 2 * sizeof(int64_t)) || rot <= 0 || rot > H) {
      free(past_len);
      return op_kfail(k, err,
                      "cos_cache and sin_cache must be [positions, rotary_dim / 2] with rotary_dim <= head size");
    }
  }
  int64_t odims[3] = {B, S, N * H}, pdims[4] = {B, NKV, Tcap, H};
  if (op_xt_alloc(&out[0], T_FLOAT, odims, 3, err)) {
    free(past_len);
    return -1;
  }
  bool want_k = n_out > 1 && k->node->output[1][0], want_v = n_out > 2 && k->node->output[2][0];
  if ((want_k && op_xt_alloc(&out[1], T_FLOAT, pdims, 4, err)) ||
      (want_v && op_xt_alloc(&out[2], T_FLOAT, pdims, 4, err))) {
    free(past_len);
    return -1;
  }
  size_t cap = (size_t)(B * NKV * Tcap * H);
  float *q = fbuf(B * N * S * H);
  float *kk = want_k ? out[1].data : fbuf((int64_t)cap), *vv = want_v ? out[2].data : fbuf((int64_t)cap);
  memset(kk, 0, cap * sizeof(float));
  memset(vv, 0, cap * sizeof(float));
  int64_t W = packed ? (N + 2 * NKV) * H : N * H;
  put_heads(q, S, 0, B, S, N, H, qx->data, S * W, W, H, NULL);
  for (int64_t b = 0; b < B; b++) {
    if (pk) { /* the rows of the past this sequence still uses */
      const float *pkb = (const float *)pk->data + b * NKV * P * H, *pvb = (const float *)pv->data + b * NKV * P * H;
      put_heads(kk + b * NKV * Tcap * H, Tcap, 0, 1, past_len[b], NKV, H, pkb, 0, H, P * H, NULL);
      put_heads(vv + b * NKV * Tcap * H, Tcap, 0, 1, past_len[b], NKV, H, pvb, 0, H, P * H, NULL);
    }
    const float *kb = packed ? (const float *)qx->data + b * S * W + N * H : (const float *)kx->data + b * S * NKV * H;
    const float *vb =
        packed ? (const float *)qx->data + b * S * W + (N + NKV) * H : (const float *)vx->data + b * S * NKV * H;
    int64_t kw = packed ? W : NKV * H;
    put_heads(kk + b * NKV * Tcap * H, Tcap, past_len[b], 1, S, NKV, H, kb, 0, kw, H, NULL);
    put_heads(vv + b * NKV * Tcap * H, Tcap, past_len[b], 1, S, NKV, H, vb, 0, kw, H, NULL);
  }
  int rc = 0;
  if (rotary) { /* position of query / new key s of sequence b: past_len[b] + s */
    float *tmp = op_xmalloc((size_t)H * sizeof(float));
    int64_t half = cosc->dims[1];
    const float *cs = cosc->data, *sn = sinc->data;
    for (int64_t b = 0; b < B && !rc; b++)
      for (int64_t s = 0; s < S && !rc; s++) {
        int64_t p = past_len[b] + s;
        if (p >= cosc->dims[0]) {
          rc = op_kfail(k, err, "position %lld is outside the caches' %lld positions", (long long)p,
                        (long long)cosc->dims[0]);
          break;
        }
        for (int64_t n = 0; n < N + NKV; n++) {
          float *row = n < N ? q + ((b * N + n) * S + s) * H : kk + ((b * NKV + n - N) * Tcap + p) * H;
          memcpy(tmp, row, (size_t)H * sizeof(float));
          op_rope_head(tmp, cs + p * half, sn + p * half, rot, H, interleaved, row);
        }
      }
    free(tmp);
  }
  if (!rc) {
    int64_t window = op_kattr_int(k, "local_window_size", -1);
    int64_t *lo = ibuf(B * S), *hi = ibuf(B * S);
    for (int64_t b = 0; b < B; b++)
      for (int64_t s = 0; s < S; s++) {
        int64_t c = past_len[b] + s + 1; /* keys [0, c) are causal */
        hi[b * S + s] = c;
        lo[b * S + s] = window > 0 && c > window ? c - window : 0;
      }
    attn a = {B, N, NKV, S, Tcap, Tcap, H, H, q, kk, vv, scale_of(k, H), NULL, NULL, lo, hi, out[0].data};
    attend(&a);
    free(lo);
    free(hi);
  }
  free(q);
  if (!want_k) free(kk);
  if (!want_v) free(vv);
  free(past_len);
  return rc;
}
