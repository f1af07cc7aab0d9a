/* ops_attn.c - the transformer blocks ONNX standardised at opset 23 (RMSNormalization,
 * RotaryEmbedding, Attention with grouped-query heads, masks, causal masking and past key/value)
 * and ONNX Runtime's SimplifiedLayerNormalization, which it registers in the default domain. */
#include "exec/ops_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* RMS normalisation over the axes from `axis` on: y = x / sqrt(mean(x^2) + eps) * scale. */
static int rms_norm(const op_kctx *k, op_xt **in, op_xt *out, size_t n_out, op_error *err) {
  op_xt *x = in[0], *scale = in[1];
  if (ou_want(k, x, "input", true, false, false, err) || ou_want(k, scale, "scale", true, false, false, err)) return -1;
  int axis = op_axis(op_kattr_int(k, "axis", -1), x->rank);
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  float eps = op_kattr_float(k, "epsilon", 1e-5f);
  int64_t n = ou_prod(x->dims, axis, x->rank), rows = ou_prod(x->dims, 0, axis);
  if (scale->numel != n && scale->numel != 1)
    return ou_unsupported(k, err, "scale of %lld values for %lld normalised ones (only the full shape or one value)",
                          (long long)scale->numel, (long long)n);
  if (op_xt_alloc(&out[0], T_FLOAT, x->dims, x->rank, err)) return -1;
  int64_t sdims[OP_MAX_RANK];
  for (int d = 0; d < x->rank; d++) sdims[d] = d < axis ? x->dims[d] : 1;
  if (n_out > 1 && op_xt_alloc(&out[1], T_FLOAT, sdims, x->rank, err)) return -1;
  const float *a = x->data, *g = scale->data;
  float *o = out[0].data;
  for (int64_t r = 0; r < rows; r++) {
    double ss = 0;
    for (int64_t j = 0; j < n; j++) ss += (double)a[r * n + j] * a[r * n + j];
    float inv = (float)(1.0 / sqrt(ss / (double)(n ? n : 1) + eps));
    for (int64_t j = 0; j < n; j++) o[r * n + j] = a[r * n + j] * inv * g[scale->numel == 1 ? 0 : j];
    if (n_out > 1) ((float *)out[1].data)[r] = inv;
  }
  return 0;
}

OP_KERNEL(op_k_rms_norm) {
  (void)n_in;
  return rms_norm(k, in, out, n_out, err);
}

OP_KERNEL(op_k_simplified_layer_norm) {
  (void)n_in;
  return rms_norm(k, in, out, n_out, err);
}

/* RotaryEmbedding (opset 23): x is [B, H, S, D] or [B, S, H*D] (num_heads given); the caches are
 * [max_position, R/2] read at position_ids [B, S], or [B, S, R/2] without them. The first R values
 * of each head rotate in pairs (halves, or neighbours when interleaved); the rest pass. */
OP_KERNEL(op_k_rotary_embedding) {
  (void)n_out;
  op_xt *x = in[0], *cosc = in[1], *sinc = in[2], *pos = n_in > 3 ? in[3] : NULL;
  if (ou_want(k, x, "input", true, false, false, err) || ou_want(k, cosc, "cos_cache", true, false, false, err) ||
      ou_want(k, sinc, "sin_cache", true, false, false, err) || (pos && ou_want(k, pos, "position_ids", false, true, false, err)))
    return -1;
  bool inter = op_kattr_int(k, "interleaved", 0) != 0;
  int64_t heads = op_kattr_int(k, "num_heads", 0), rdim = op_kattr_int(k, "rotary_embedding_dim", 0);
  int64_t B, S, H, D;
  bool three = x->rank == 3;
  if (three) {
    if (heads <= 0 || x->dims[2] % heads) return op_kfail(k, err, "a 3-D input needs num_heads dividing its hidden size");
    B = x->dims[0], S = x->dims[1], H = heads, D = x->dims[2] / heads;
  } else if (x->rank == 4) {
    B = x->dims[0], H = x->dims[1], S = x->dims[2], D = x->dims[3];
  } else {
    return op_kfail(k, err, "input must be 3-D or 4-D");
  }
  int64_t R = rdim ? rdim : D, half = R / 2;
  if (R > D || R % 2) return op_kfail(k, err, "rotary_embedding_dim %lld must be even and at most the head size %lld", (long long)R, (long long)D);
  if (cosc->numel != sinc->numel || cosc->rank < 2 || cosc->dims[cosc->rank - 1] != half)
    return op_kfail(k, err, "cos_cache and sin_cache must agree and end in rotary_dim/2 = %lld", (long long)half);
  if (pos) {
    if (cosc->rank != 2 || pos->numel != B * S) return op_kfail(k, err, "position_ids must be [batch, sequence] with 2-D caches");
  } else if (cosc->rank != 3 || cosc->dims[0] != B || cosc->dims[1] != S) {
    return op_kfail(k, err, "without position_ids the caches must be [batch, sequence, rotary_dim/2]");
  }
  if (op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  const float *X = x->data, *C = cosc->data, *Sn = sinc->data;
  float *O = out->data;
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < H; h++)
      for (int64_t s = 0; s < S; s++) {
        int64_t off = three ? ((b * S + s) * H + h) * D : ((b * H + h) * S + s) * D, row;
        if (pos) {
          row = op_xt_int(pos, b * S + s);
          if (row < 0 || row >= cosc->dims[0]) return op_kfail(k, err, "position id %lld is outside the caches", (long long)row);
        } else {
          row = b * S + s;
        }
        const float *c = C + row * half, *sn = Sn + row * half, *xi = X + off;
        float *o = O + off;
        for (int64_t i = 0; i < half; i++) {
          int64_t i1 = inter ? 2 * i : i, i2 = inter ? 2 * i + 1 : i + half;
          float x1 = xi[i1], x2 = xi[i2];
          o[i1] = c[i] * x1 - sn[i] * x2;
          o[i2] = sn[i] * x1 + c[i] * x2;
        }
        for (int64_t i = R; i < D; i++) o[i] = xi[i];
      }
  return 0;
}

/* Element (b, h, s, d) of a [B, H, S, D] tensor or of its [B, S, H*D] form. */
static inline int64_t bhsd(bool three, int64_t b, int64_t h, int64_t s, int64_t d, int64_t H, int64_t S, int64_t D) {
  return three ? ((b * S + s) * H + h) * D + d : ((b * H + h) * S + s) * D + d;
}

/* Attention (opset 23): softmax(Q K^T * scale + mask) V per head, kv heads shared by groups of q heads. */
OP_KERNEL(op_k_attention) {
  op_xt *q = in[0], *kk = in[1], *v = in[2], *mask = n_in > 3 ? in[3] : NULL;
  op_xt *pk = n_in > 4 ? in[4] : NULL, *pv = n_in > 5 ? in[5] : NULL;
  for (int i = 0; i < 3; i++)
    if (ou_want(k, in[i], "Q, K and V", true, false, false, err)) return -1;
  if ((pk && ou_want(k, pk, "past_key", true, false, false, err)) || (pv && ou_want(k, pv, "past_value", true, false, false, err)) ||
      (mask && ou_want(k, mask, "attn_mask", true, false, true, err)))
    return -1;
  if (!pk != !pv) return op_kfail(k, err, "past_key and past_value come together");
  if (op_kattr_float(k, "softcap", 0.f) != 0.f) return ou_unsupported(k, err, "softcap");
  if (n_out > 3) return ou_unsupported(k, err, "the qk_matmul_output output");
  bool three = q->rank == 3, causal = op_kattr_int(k, "is_causal", 0) != 0;
  if ((three && (kk->rank != 3 || v->rank != 3)) || (!three && (q->rank != 4 || kk->rank != 4 || v->rank != 4)))
    return op_kfail(k, err, "Q, K and V must all be 3-D or all 4-D");
  int64_t B = q->dims[0], Hq, Hk, Sq, Skv, D, Dv;
  if (three) {
    Hq = op_kattr_int(k, "q_num_heads", 0), Hk = op_kattr_int(k, "kv_num_heads", 0);
    if (Hq <= 0 || Hk <= 0 || q->dims[2] % Hq || kk->dims[2] % Hk || v->dims[2] % Hk)
      return op_kfail(k, err, "3-D inputs need q_num_heads and kv_num_heads dividing their hidden sizes");
    Sq = q->dims[1], Skv = kk->dims[1], D = q->dims[2] / Hq, Dv = v->dims[2] / Hk;
    if (kk->dims[2] / Hk != D) return op_kfail(k, err, "Q and K head sizes differ");
  } else {
    Hq = q->dims[1], Hk = kk->dims[1], Sq = q->dims[2], Skv = kk->dims[2], D = q->dims[3], Dv = v->dims[3];
    if (kk->dims[3] != D || v->dims[1] != Hk) return op_kfail(k, err, "K and V do not match Q");
  }
  if (kk->dims[0] != B || v->dims[0] != B || (three ? v->dims[1] : v->dims[2]) != Skv)
    return op_kfail(k, err, "K and V do not match in batch or sequence");
  if (Hq % Hk) return op_kfail(k, err, "%lld query heads do not group over %lld key/value heads", (long long)Hq, (long long)Hk);
  int64_t P = 0;
  if (pk) {
    if (pk->rank != 4 || pv->rank != 4 || pk->dims[0] != B || pk->dims[1] != Hk || pk->dims[3] != D || pv->dims[0] != B ||
        pv->dims[1] != Hk || pv->dims[3] != Dv || pv->dims[2] != pk->dims[2])
      return op_kfail(k, err, "past_key/past_value must be [batch, kv_heads, past, head_size]");
    P = pk->dims[2];
  }
  int64_t T = P + Skv; /* total key length */
  if (causal && Sq != T) return ou_unsupported(k, err, "is_causal with %lld queries over %lld keys (past state)", (long long)Sq, (long long)T);
  float scale = op_kattr_float(k, "scale", (float)(1.0 / sqrt((double)D)));
  /* the mask broadcasts to [B, Hq, Sq, T] */
  ou_bcast mb = {0};
  int64_t mshape[4] = {B, Hq, Sq, T};
  if (mask) {
    op_xt shape_only = {.rank = 4};
    memcpy(shape_only.dims, mshape, sizeof mshape);
    op_xt *pair[2] = {&shape_only, mask};
    if (ou_bcast_init(k, pair, 2, &mb, err)) return -1;
    for (int d = 0; d < 4; d++)
      if (mb.dims[d] != mshape[d]) return op_kfail(k, err, "attn_mask does not broadcast to [batch, heads, q, total]");
  }
  int64_t ydims[4];
  int yrank = three ? 3 : 4;
  if (three) ydims[0] = B, ydims[1] = Sq, ydims[2] = Hq * Dv;
  else ydims[0] = B, ydims[1] = Hq, ydims[2] = Sq, ydims[3] = Dv;
  int64_t pkd[4] = {B, Hk, T, D}, pvd[4] = {B, Hk, T, Dv};
  if (op_xt_alloc(&out[0], T_FLOAT, ydims, yrank, err)) return -1;
  if (n_out > 1 && op_xt_alloc(&out[1], T_FLOAT, pkd, 4, err)) return -1;
  if (n_out > 2 && op_xt_alloc(&out[2], T_FLOAT, pvd, 4, err)) return -1;
  /* keys and values with the past in front, [B, Hk, T, D] */
  float *K = n_out > 1 ? out[1].data : op_xmalloc((size_t)(B * Hk * T * D + 1) * sizeof(float));
  float *V = n_out > 2 ? out[2].data : op_xmalloc((size_t)(B * Hk * T * Dv + 1) * sizeof(float));
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < Hk; h++)
      for (int64_t t = 0; t < T; t++) {
        for (int64_t d = 0; d < D; d++)
          K[((b * Hk + h) * T + t) * D + d] = t < P ? ((float *)pk->data)[((b * Hk + h) * P + t) * D + d]
                                                    : ((float *)kk->data)[bhsd(three, b, h, t - P, d, Hk, Skv, D)];
        for (int64_t d = 0; d < Dv; d++)
          V[((b * Hk + h) * T + t) * Dv + d] = t < P ? ((float *)pv->data)[((b * Hk + h) * P + t) * Dv + d]
                                                     : ((float *)v->data)[bhsd(three, b, h, t - P, d, Hk, Skv, Dv)];
      }
  /* per (batch, query head): scores = scale * Q K^T through the BLAS, masked softmax, then P V */
  float *w = op_xmalloc((size_t)(Sq && T ? Sq * T : 1) * sizeof(float));
  const float *Q = q->data;
  float *Y = out[0].data;
  int64_t qld = three ? Hq * D : D, yld = three ? Hq * Dv : Dv;
  for (int64_t b = 0; b < B; b++)
    for (int64_t h = 0; h < Hq; h++) {
      int64_t hk = h / (Hq / Hk);
      const float *Kh = K + (b * Hk + hk) * T * D, *Vh = V + (b * Hk + hk) * T * Dv;
      const float *Qh = Q + bhsd(three, b, h, 0, 0, Hq, Sq, D);
      float *Yh = Y + bhsd(three, b, h, 0, 0, Hq, Sq, Dv);
      if (D) op_sgemm(false, true, Sq, T, D, scale, Qh, qld, Kh, D, 0.f, w, T);
      else memset(w, 0, (size_t)(Sq * T) * sizeof(float));
      for (int64_t s = 0; s < Sq; s++) {
        float *row = w + s * T, m = -INFINITY;
        for (int64_t t = 0; t < T; t++) {
          float acc = row[t];
          if (causal && t > s) acc = -INFINITY;
          if (mask) {
            int64_t mo = ou_bcast_off(&mb, 1, ((b * Hq + h) * Sq + s) * T + t);
            if (mask->dtype == T_BOOL) acc = ((uint8_t *)mask->data)[mo] ? acc : -INFINITY;
            else acc += ((float *)mask->data)[mo];
          }
          row[t] = acc;
          m = acc > m ? acc : m;
        }
        double sum = 0;
        for (int64_t t = 0; t < T; t++) sum += row[t] = isinf(m) && m < 0 ? 0.f : expf(row[t] - m);
        for (int64_t t = 0; t < T; t++) row[t] = sum > 0 ? (float)(row[t] / sum) : 0.f;
      }
      if (T) op_sgemm(false, false, Sq, Dv, T, 1.f, w, T, Vh, Dv, 0.f, Yh, yld);
      else
        for (int64_t s = 0; s < Sq; s++) memset(Yh + s * yld, 0, (size_t)Dv * sizeof(float));
    }
  free(w);
  if (n_out <= 1) free(K);
  if (n_out <= 2) free(V);
  return 0;
}
