/* ops_conv.c - the CNN front-ends of vision and speech exports: Conv (1-D to 3-D, groups, pads,
 * strides, dilations, auto_pad) through im2col and the BLAS, ConvTranspose, BatchNormalization at
 * inference, MaxPool/AveragePool, GlobalAverage/MaxPool, and Resize (nearest, linear, cubic). */
#include "exec/ops_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_SP 3 /* spatial axes */

/* The window geometry shared by Conv, ConvTranspose and the pools. */
typedef struct geom {
  int sp;                      /* spatial axes */
  int64_t in[MAX_SP], out[MAX_SP], k[MAX_SP], s[MAX_SP], d[MAX_SP], pb[MAX_SP], pe[MAX_SP];
} geom;

static bool attr_is(const op_kctx *k, const char *name, const char *v) {
  Onnx__AttributeProto *a = op_node_attr(k->node, name);
  return a && a->s.len == strlen(v) && !memcmp(a->s.data, v, a->s.len);
}

/* Reads kernel_shape (or the weight's dims), strides, dilations, pads and auto_pad, and computes the
 * output size; ceil_mode for the pools. */
static int geometry(const op_kctx *k, const op_xt *x, const int64_t *wk, geom *g, bool pool, op_error *err) {
  g->sp = x->rank - 2;
  if (g->sp < 1 || g->sp > MAX_SP) return ou_unsupported(k, err, "%d spatial axes (1 to %d are supported)", g->sp, MAX_SP);
  size_t n;
  const int64_t *ks = op_kattr_ints(k, "kernel_shape", &n), *st, *dl, *pd;
  if (!ks && !wk) return op_kfail(k, err, "kernel_shape is missing");
  if (ks && (int)n != g->sp) return op_kfail(k, err, "kernel_shape has %zu values for %d spatial axes", n, g->sp);
  size_t ns, nd, np;
  st = op_kattr_ints(k, "strides", &ns);
  dl = op_kattr_ints(k, "dilations", &nd);
  pd = op_kattr_ints(k, "pads", &np);
  if ((st && (int)ns != g->sp) || (dl && (int)nd != g->sp) || (pd && (int)np != 2 * g->sp))
    return op_kfail(k, err, "strides, dilations or pads do not match %d spatial axes", g->sp);
  bool ceil_mode = pool && op_kattr_int(k, "ceil_mode", 0) != 0;
  bool same_upper = attr_is(k, "auto_pad", "SAME_UPPER"), same_lower = attr_is(k, "auto_pad", "SAME_LOWER");
  bool valid = attr_is(k, "auto_pad", "VALID");
  for (int i = 0; i < g->sp; i++) {
    g->in[i] = x->dims[2 + i];
    g->k[i] = ks ? ks[i] : wk[i];
    g->s[i] = st ? st[i] : 1;
    g->d[i] = dl ? dl[i] : 1;
    g->pb[i] = pd && !valid ? pd[i] : 0;
    g->pe[i] = pd && !valid ? pd[g->sp + i] : 0;
    if (g->k[i] < 1 || g->s[i] < 1 || g->d[i] < 1 || g->pb[i] < 0 || g->pe[i] < 0)
      return op_kfail(k, err, "kernel, strides and dilations must be positive and pads not negative");
    int64_t ext = (g->k[i] - 1) * g->d[i] + 1;
    if (same_upper || same_lower) {
      g->out[i] = (g->in[i] + g->s[i] - 1) / g->s[i];
      int64_t total = (g->out[i] - 1) * g->s[i] + ext - g->in[i];
      total = total < 0 ? 0 : total;
      g->pb[i] = same_upper ? total / 2 : total - total / 2;
      g->pe[i] = total - g->pb[i];
      continue;
    }
    int64_t span = g->in[i] + g->pb[i] + g->pe[i] - ext;
    if (span < 0) return op_kfail(k, err, "the window (%lld) is larger than the padded input (%lld)", (long long)ext,
                                  (long long)(g->in[i] + g->pb[i] + g->pe[i]));
    g->out[i] = (ceil_mode ? (span + g->s[i] - 1) / g->s[i] : span / g->s[i]) + 1;
    if (ceil_mode && (g->out[i] - 1) * g->s[i] >= g->in[i] + g->pb[i]) g->out[i]--; /* a window must start inside */
  }
  return 0;
}

OP_KERNEL(op_k_conv) {
  (void)n_out;
  op_xt *x = in[0], *w = in[1], *b = n_in > 2 ? in[2] : NULL;
  if (ou_want(k, x, "input", true, false, false, err) || ou_want(k, w, "weight", true, false, false, err) ||
      (b && ou_want(k, b, "bias", true, false, false, err)))
    return -1;
  if (w->rank != x->rank) return op_kfail(k, err, "weight rank %d differs from the input's %d", w->rank, x->rank);
  geom g;
  if (geometry(k, x, w->dims + 2, &g, false, err)) return -1;
  int64_t groups = op_kattr_int(k, "group", 1), N = x->dims[0], C = x->dims[1], M = w->dims[0];
  if (groups < 1 || C % groups || M % groups || w->dims[1] != C / groups)
    return op_kfail(k, err, "channels (%lld in, %lld out) do not split into %lld groups of the weight's %lld", (long long)C,
                    (long long)M, (long long)groups, (long long)w->dims[1]);
  for (int i = 0; i < g.sp; i++)
    if (w->dims[2 + i] != g.k[i]) return op_kfail(k, err, "kernel_shape differs from the weight's shape");
  if (b && b->numel != M) return op_kfail(k, err, "bias has %lld values for %lld channels", (long long)b->numel, (long long)M);
  int64_t dims[OP_MAX_RANK] = {N, M};
  for (int i = 0; i < g.sp; i++) dims[2 + i] = g.out[i];
  if (op_xt_alloc(out, T_FLOAT, dims, x->rank, err)) return -1;
  int64_t Cg = C / groups, Mg = M / groups, kvol = ou_prod(g.k, 0, g.sp), ovol = ou_prod(g.out, 0, g.sp);
  int64_t ivol = ou_prod(g.in, 0, g.sp), rows = Cg * kvol;
  float *cols = op_xmalloc((size_t)(rows && ovol ? rows * ovol : 1) * sizeof(float));
  const float *X = x->data, *W = w->data;
  float *O = out->data;
  for (int64_t n = 0; n < N; n++)
    for (int64_t gi = 0; gi < groups; gi++) {
      /* im2col: row (c, kernel position), column (output position) */
      for (int64_t r = 0; r < rows; r++) {
        int64_t c = r / kvol, kp = r % kvol, kk[MAX_SP];
        for (int i = g.sp - 1; i >= 0; i--) kk[i] = kp % g.k[i], kp /= g.k[i];
        const float *src = X + (n * C + gi * Cg + c) * ivol;
        for (int64_t o = 0; o < ovol; o++) {
          int64_t op_ = o, off = 0;
          bool inside = true;
          for (int i = g.sp - 1; i >= 0; i--) {
            int64_t oi = op_ % g.out[i];
            op_ /= g.out[i];
            int64_t p = oi * g.s[i] - g.pb[i] + kk[i] * g.d[i];
            if (p < 0 || p >= g.in[i]) inside = false;
            off += p * ou_prod(g.in, i + 1, g.sp);
          }
          cols[r * ovol + o] = inside ? src[off] : 0.f;
        }
      }
      float *dst = O + (n * M + gi * Mg) * ovol;
      op_sgemm(false, false, Mg, ovol, rows, 1.f, W + gi * Mg * rows, rows, cols, ovol, 0.f, dst, ovol);
      if (b)
        for (int64_t m = 0; m < Mg; m++)
          for (int64_t o = 0; o < ovol; o++) dst[m * ovol + o] += ((const float *)b->data)[gi * Mg + m];
    }
  free(cols);
  return 0;
}

OP_KERNEL(op_k_conv_transpose) {
  (void)n_out;
  op_xt *x = in[0], *w = in[1], *b = n_in > 2 ? in[2] : NULL;
  if (ou_want(k, x, "input", true, false, false, err) || ou_want(k, w, "weight", true, false, false, err) ||
      (b && ou_want(k, b, "bias", true, false, false, err)))
    return -1;
  int sp = x->rank - 2;
  if (sp < 1 || sp > MAX_SP || w->rank != x->rank) return ou_unsupported(k, err, "input rank %d", x->rank);
  int64_t groups = op_kattr_int(k, "group", 1), N = x->dims[0], C = x->dims[1];
  if (groups < 1 || C % groups || w->dims[0] != C) return op_kfail(k, err, "weight does not match the input channels and groups");
  int64_t Mg = w->dims[1], M = Mg * groups, Cg = C / groups;
  if (b && b->numel != M) return op_kfail(k, err, "bias has %lld values for %lld channels", (long long)b->numel, (long long)M);
  size_t n;
  const int64_t *st = op_kattr_ints(k, "strides", &n), *dl = op_kattr_ints(k, "dilations", &n), *pd = op_kattr_ints(k, "pads", &n);
  const int64_t *opad = op_kattr_ints(k, "output_padding", &n), *oshape = op_kattr_ints(k, "output_shape", &n);
  if (oshape && (int)n != sp) return op_kfail(k, err, "output_shape must give the %d spatial sizes", sp);
  bool upper = attr_is(k, "auto_pad", "SAME_UPPER"), lower = attr_is(k, "auto_pad", "SAME_LOWER");
  int64_t in_[MAX_SP], kk[MAX_SP], s[MAX_SP], d[MAX_SP], pb[MAX_SP], outd[MAX_SP], dims[OP_MAX_RANK] = {N, M};
  for (int i = 0; i < sp; i++) {
    in_[i] = x->dims[2 + i], kk[i] = w->dims[2 + i], s[i] = st ? st[i] : 1, d[i] = dl ? dl[i] : 1;
    int64_t op_ = opad ? opad[i] : 0, ext = (kk[i] - 1) * d[i] + 1, full = s[i] * (in_[i] - 1) + op_ + ext;
    if (oshape || upper || lower) {
      outd[i] = oshape ? oshape[i] : in_[i] * s[i];
      int64_t total = full - outd[i];
      total = total < 0 ? 0 : total;
      pb[i] = lower ? total - total / 2 : total / 2; /* SAME_UPPER puts the odd pad at the end */
      if (!upper && !lower && pd) pb[i] = pd[i];
    } else {
      pb[i] = pd ? pd[i] : 0;
      outd[i] = full - pb[i] - (pd ? pd[sp + i] : 0);
    }
    if (outd[i] < 0) return op_kfail(k, err, "negative output size");
    dims[2 + i] = outd[i];
  }
  if (op_xt_alloc(out, T_FLOAT, dims, x->rank, err)) return -1;
  int64_t ivol = ou_prod(in_, 0, sp), ovol = ou_prod(outd, 0, sp), kvol = ou_prod(kk, 0, sp);
  const float *X = x->data, *W = w->data;
  float *O = out->data;
  for (int64_t i = 0; i < out->numel; i++) O[i] = b ? ((const float *)b->data)[(i / ovol) % M] : 0.f;
  for (int64_t nb = 0; nb < N; nb++)
    for (int64_t c = 0; c < C; c++) {
      int64_t gi = c / Cg;
      for (int64_t ip = 0; ip < ivol; ip++) {
        float v = X[(nb * C + c) * ivol + ip];
        int64_t ii[MAX_SP], t = ip;
        for (int a = sp - 1; a >= 0; a--) ii[a] = t % in_[a], t /= in_[a];
        for (int64_t kp = 0; kp < kvol; kp++) {
          int64_t off = 0, t2 = kp;
          bool inside = true;
          for (int a = sp - 1; a >= 0; a--) {
            int64_t ka = t2 % kk[a];
            t2 /= kk[a];
            int64_t p = ii[a] * s[a] - pb[a] + ka * d[a];
            if (p < 0 || p >= outd[a]) inside = false;
            off += p * ou_prod(outd, a + 1, sp);
          }
          if (!inside) continue;
          for (int64_t m = 0; m < Mg; m++)
            O[(nb * M + gi * Mg + m) * ovol + off] += v * W[(c * Mg + m) * kvol + kp];
        }
      }
    }
  return 0;
}

OP_KERNEL(op_k_batch_norm) {
  (void)n_in;
  op_xt *x = in[0];
  if (op_kattr_int(k, "training_mode", 0) || n_out > 1)
    return ou_unsupported(k, err, "training mode (batch statistics and running averages) is not computed");
  for (int i = 0; i < 5; i++)
    if (ou_want(k, in[i], "input", true, false, false, err)) return -1;
  if (x->rank < 2) return op_kfail(k, err, "input must have a channel axis");
  int64_t C = x->dims[1], inner = ou_prod(x->dims, 2, x->rank);
  for (int i = 1; i < 5; i++)
    if (in[i]->numel != C) return op_kfail(k, err, "input %d has %lld values for %lld channels", i, (long long)in[i]->numel, (long long)C);
  float eps = op_kattr_float(k, "epsilon", 1e-5f);
  if (op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  const float *a = x->data, *sc = in[1]->data, *bi = in[2]->data, *mu = in[3]->data, *var = in[4]->data;
  float *o = out->data;
  for (int64_t i = 0; i < x->numel; i++) {
    int64_t c = (i / inner) % C;
    o[i] = (a[i] - mu[c]) / sqrtf(var[c] + eps) * sc[c] + bi[c];
  }
  return 0;
}

/* MaxPool (with the optional Indices output, row-major) and AveragePool. */
static int pool(const op_kctx *k, op_xt *x, op_xt *out, size_t n_out, bool max, op_error *err) {
  if (ou_want(k, x, "input", true, false, false, err)) return -1;
  geom g;
  if (geometry(k, x, NULL, &g, true, err)) return -1;
  if (n_out > 1 && op_kattr_int(k, "storage_order", 0)) return ou_unsupported(k, err, "storage_order 1 for Indices");
  bool include_pad = op_kattr_int(k, "count_include_pad", 0) != 0;
  int64_t dims[OP_MAX_RANK] = {x->dims[0], x->dims[1]};
  for (int i = 0; i < g.sp; i++) dims[2 + i] = g.out[i];
  if (op_xt_alloc(&out[0], T_FLOAT, dims, x->rank, err)) return -1;
  if (n_out > 1 && op_xt_alloc(&out[1], T_INT64, dims, x->rank, err)) return -1;
  int64_t planes = x->dims[0] * x->dims[1], ivol = ou_prod(g.in, 0, g.sp), ovol = ou_prod(g.out, 0, g.sp);
  int64_t kvol = ou_prod(g.k, 0, g.sp);
  const float *X = x->data;
  float *O = out[0].data;
  for (int64_t p = 0; p < planes; p++)
    for (int64_t o = 0; o < ovol; o++) {
      int64_t oi[MAX_SP], t = o;
      for (int i = g.sp - 1; i >= 0; i--) oi[i] = t % g.out[i], t /= g.out[i];
      float best = -INFINITY;
      double sum = 0;
      int64_t cnt = 0, padded = 1, arg = -1;
      if (include_pad) /* the window clipped to the padded input */
        for (int i = 0; i < g.sp; i++) {
          int64_t lo = oi[i] * g.s[i] - g.pb[i], hi = lo + (g.k[i] - 1) * g.d[i] + 1;
          hi = hi > g.in[i] + g.pe[i] ? g.in[i] + g.pe[i] : hi;
          padded *= (hi - lo + g.d[i] - 1) / g.d[i];
        }
      for (int64_t kp = 0; kp < kvol; kp++) {
        int64_t off = 0, t2 = kp;
        bool inside = true;
        for (int i = g.sp - 1; i >= 0; i--) {
          int64_t ka = t2 % g.k[i];
          t2 /= g.k[i];
          int64_t q = oi[i] * g.s[i] - g.pb[i] + ka * g.d[i];
          if (q < 0 || q >= g.in[i]) inside = false;
          off += q * ou_prod(g.in, i + 1, g.sp);
        }
        if (!inside) continue;
        float v = X[p * ivol + off];
        if (v > best || arg < 0) best = v > best || arg < 0 ? v : best, arg = p * ivol + off;
        sum += v;
        cnt++;
      }
      O[p * ovol + o] = max ? best : (float)(sum / (double)(include_pad ? padded : (cnt ? cnt : 1)));
      if (n_out > 1) ((int64_t *)out[1].data)[p * ovol + o] = arg;
    }
  return 0;
}

/* Integer images (uint8, int8, int16 arrive widened to int64) pool exactly in float32 while their values
 * stay within 2^24; the result goes back to int64 for the type adapter to narrow. */
static int max_pool_int(const op_kctx *k, op_xt *x, op_xt *out, size_t n_out, op_error *err) {
  op_xt f;
  if (op_xt_alloc(&f, T_FLOAT, x->dims, x->rank, err)) return -1;
  const int64_t *v = x->data;
  for (int64_t i = 0; i < x->numel; i++) {
    if (v[i] > (1 << 24) || v[i] < -(1 << 24)) {
      op_xt_release(&f);
      return ou_unsupported(k, err, "integer values beyond 2^24 (%lld)", (long long)v[i]);
    }
    ((float *)f.data)[i] = (float)v[i];
  }
  int rc = pool(k, &f, out, n_out, true, err);
  op_xt_release(&f);
  op_xt y;
  if (rc || op_xt_convert(&y, &out[0], T_INT64, err)) return -1;
  op_xt_release(&out[0]);
  out[0] = y;
  return 0;
}

OP_KERNEL(op_k_max_pool) {
  (void)n_in;
  if (in[0]->dtype == T_INT64) return max_pool_int(k, in[0], out, n_out, err);
  return pool(k, in[0], out, n_out, true, err);
}

OP_KERNEL(op_k_average_pool) {
  (void)n_in;
  if (n_out > 1) return op_kfail(k, err, "AveragePool has one output");
  return pool(k, in[0], out, 1, false, err);
}

static int global_pool(const op_kctx *k, op_xt *x, op_xt *out, bool max, op_error *err) {
  if (ou_want(k, x, "input", true, false, false, err)) return -1;
  if (x->rank < 3) return op_kfail(k, err, "input must have spatial axes");
  int64_t dims[OP_MAX_RANK];
  for (int d = 0; d < x->rank; d++) dims[d] = d < 2 ? x->dims[d] : 1;
  if (op_xt_alloc(out, T_FLOAT, dims, x->rank, err)) return -1;
  int64_t planes = x->dims[0] * x->dims[1], n = ou_prod(x->dims, 2, x->rank);
  const float *a = x->data;
  for (int64_t p = 0; p < planes; p++) {
    double s = 0;
    float m = -INFINITY;
    for (int64_t j = 0; j < n; j++) s += a[p * n + j], m = a[p * n + j] > m ? a[p * n + j] : m;
    ((float *)out->data)[p] = max ? m : (float)(s / (double)(n ? n : 1));
  }
  return 0;
}

OP_KERNEL(op_k_global_average_pool) {
  (void)n_in, (void)n_out;
  return global_pool(k, in[0], out, false, err);
}

OP_KERNEL(op_k_global_max_pool) {
  (void)n_in, (void)n_out;
  return global_pool(k, in[0], out, true, err);
}

/* ---- Resize: separable; each output index of each axis reads a few input indices with weights ---- */

typedef struct taps {
  int n;         /* taps per output index: 1 nearest, 2 linear, 4 cubic */
  int64_t *idx;  /* [out][n] */
  float *w;      /* [out][n] */
  bool *outside; /* [out]: tf_crop_and_resize sampled outside the input */
} taps;

static float cubic_w(float t, float a) {
  t = fabsf(t);
  if (t <= 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return ((a * t - 5 * a) * t + 8 * a) * t - 4 * a;
  return 0;
}

OP_KERNEL(op_k_resize) {
  (void)n_out;
  op_xt *x = in[0];
  op_xt *roi = k->opset >= 11 && n_in > 1 ? in[1] : NULL;
  op_xt *scales = k->opset >= 11 ? (n_in > 2 ? in[2] : NULL) : in[1], *sizes = n_in > 3 ? in[3] : NULL;
  if (scales && scales->numel == 0) scales = NULL;
  if (sizes && sizes->numel == 0) sizes = NULL;
  if (ou_want(k, x, "input", true, false, false, err)) return -1;
  if ((scales && ou_want(k, scales, "scales", true, false, false, err)) || (sizes && ou_want(k, sizes, "sizes", false, true, false, err)))
    return -1;
  if (!scales == !sizes) return op_kfail(k, err, "exactly one of scales and sizes must be given");
  if (op_kattr_int(k, "antialias", 0)) return ou_unsupported(k, err, "antialias=1");
  Onnx__AttributeProto *kar = op_node_attr(k->node, "keep_aspect_ratio_policy");
  if (kar && !attr_is(k, "keep_aspect_ratio_policy", "stretch")) return ou_unsupported(k, err, "keep_aspect_ratio_policy other than stretch");
  char mode = attr_is(k, "mode", "linear") ? 'l' : attr_is(k, "mode", "cubic") ? 'c' : 'n';
  if (op_node_attr(k->node, "mode") && mode == 'n' && !attr_is(k, "mode", "nearest")) return ou_unsupported(k, err, "this mode");
  enum { HALF, PYTORCH, ALIGN, ASYM, TFCROP, TFNN } ct = HALF;
  Onnx__AttributeProto *cta = op_node_attr(k->node, "coordinate_transformation_mode");
  if (cta) {
    if (attr_is(k, "coordinate_transformation_mode", "half_pixel")) ct = HALF;
    else if (attr_is(k, "coordinate_transformation_mode", "pytorch_half_pixel")) ct = PYTORCH;
    else if (attr_is(k, "coordinate_transformation_mode", "align_corners")) ct = ALIGN;
    else if (attr_is(k, "coordinate_transformation_mode", "asymmetric")) ct = ASYM;
    else if (attr_is(k, "coordinate_transformation_mode", "tf_crop_and_resize")) ct = TFCROP;
    else if (attr_is(k, "coordinate_transformation_mode", "tf_half_pixel_for_nn")) ct = TFNN;
    else return ou_unsupported(k, err, "coordinate_transformation_mode '%.*s'", (int)cta->s.len, (const char *)cta->s.data);
  }
  if (k->opset < 11) ct = ASYM; /* Resize-10 is Upsample's asymmetric nearest/linear */
  enum { PFLOOR, PCEIL, FLOOR, CEIL } nm = PFLOOR;
  if (attr_is(k, "nearest_mode", "round_prefer_ceil")) nm = PCEIL;
  else if (attr_is(k, "nearest_mode", "floor")) nm = FLOOR;
  else if (attr_is(k, "nearest_mode", "ceil")) nm = CEIL;
  float a = op_kattr_float(k, "cubic_coeff_a", -0.75f), extrap = op_kattr_float(k, "extrapolation_value", 0.f);
  bool excl = op_kattr_int(k, "exclude_outside", 0) != 0;
  /* axes (opset 18) name which axes scales/sizes give; the others keep scale 1 */
  int rank = x->rank, axes[OP_MAX_RANK], n_axes = rank;
  size_t na;
  const int64_t *ax = op_kattr_ints(k, "axes", &na);
  if (ax) {
    n_axes = (int)na;
    for (int i = 0; i < n_axes; i++)
      if ((axes[i] = op_axis(ax[i], rank)) < 0) return op_kfail(k, err, "axis out of range");
  } else {
    for (int i = 0; i < rank; i++) axes[i] = i;
  }
  op_xt *given = scales ? scales : sizes;
  if (given->numel != n_axes) return op_kfail(k, err, "%s has %lld values for %d axes", scales ? "scales" : "sizes", (long long)given->numel, n_axes);
  if (roi && roi->numel && ct == TFCROP && (roi->numel != 2 * n_axes || ou_want(k, roi, "roi", true, false, false, err)))
    return op_kfail(k, err, "roi must hold %d float values", 2 * n_axes);
  double scale[OP_MAX_RANK], r0[OP_MAX_RANK], r1[OP_MAX_RANK];
  int64_t dims[OP_MAX_RANK];
  for (int d = 0; d < rank; d++) scale[d] = 1, dims[d] = x->dims[d], r0[d] = 0, r1[d] = 1;
  for (int i = 0; i < n_axes; i++) {
    int d = axes[i];
    if (ct == TFCROP && roi && roi->numel) r0[d] = ((float *)roi->data)[i], r1[d] = ((float *)roi->data)[n_axes + i];
    if (scales) {
      scale[d] = ((float *)scales->data)[i];
      if (!(scale[d] > 0)) return op_kfail(k, err, "scale %g is not positive", scale[d]);
      dims[d] = (int64_t)floor((double)x->dims[d] * (r1[d] - r0[d]) * scale[d]);
    } else {
      dims[d] = op_xt_int(sizes, i);
      if (dims[d] < 0) return op_kfail(k, err, "negative size");
      scale[d] = x->dims[d] ? (double)dims[d] / (double)x->dims[d] : 1;
    }
  }
  if (op_xt_alloc(out, T_FLOAT, dims, rank, err)) return -1;
  taps t[OP_MAX_RANK];
  for (int d = 0; d < rank; d++) {
    int64_t L = x->dims[d], O = dims[d];
    /* the resized length as ONNX's reference takes it: scale * length, not the rounded output size */
    double R = scales ? scale[d] * (double)L : (double)O;
    bool ident = O == L && scale[d] == 1 && ct != TFCROP;
    t[d].n = ident || mode == 'n' ? 1 : mode == 'l' ? 2 : 4;
    t[d].idx = op_xmalloc((size_t)(O ? O : 1) * (size_t)t[d].n * sizeof(int64_t));
    t[d].w = op_xmalloc((size_t)(O ? O : 1) * (size_t)t[d].n * sizeof(float));
    t[d].outside = op_xcalloc((size_t)(O ? O : 1), 1);
    for (int64_t o = 0; o < O; o++) {
      int64_t *ix = t[d].idx + o * t[d].n;
      float *w = t[d].w + o * t[d].n;
      if (ident) {
        ix[0] = o, w[0] = 1;
        continue;
      }
      double xo;
      switch (ct) {
        case HALF: xo = (o + 0.5) / scale[d] - 0.5; break;
        case PYTORCH: xo = R > 1 ? (o + 0.5) / scale[d] - 0.5 : 0; break;
        case ALIGN: xo = R == 1 ? 0 : (double)o * (double)(L - 1) / (R - 1); break;
        case ASYM: xo = o / scale[d]; break;
        case TFNN: xo = (o + 0.5) / scale[d]; break;
        default:
          xo = O > 1 ? r0[d] * (double)(L - 1) + (double)o * (r1[d] - r0[d]) * (double)(L - 1) / (double)(O - 1)
                     : 0.5 * (r0[d] + r1[d]) * (double)(L - 1);
          if (xo < 0 || xo > (double)(L - 1)) t[d].outside[o] = true;
          break;
      }
      if (mode == 'n') {
        double f = floor(xo), fr = xo - f;
        int64_t i = nm == FLOOR ? (int64_t)f : nm == CEIL ? (int64_t)ceil(xo) :
                    fr == 0.5 ? (nm == PCEIL ? (int64_t)f + 1 : (int64_t)f) : (int64_t)llround(xo);
        ix[0] = i < 0 ? 0 : i >= L ? L - 1 : i, w[0] = 1;
      } else if (mode == 'l') {
        double c = xo < 0 ? 0 : xo > (double)(L - 1) ? (double)(L - 1) : xo, f = floor(c);
        int64_t i0 = (int64_t)f, i1 = i0 + 1 < L ? i0 + 1 : L - 1;
        ix[0] = i0, ix[1] = i1, w[0] = (float)(1 - (c - f)), w[1] = (float)(c - f);
      } else {
        double f = floor(xo);
        float fr = (float)(xo - f), sum = 0;
        for (int j = 0; j < 4; j++) {
          int64_t i = (int64_t)f - 1 + j;
          w[j] = cubic_w(fr - (float)(j - 1), a);
          if (excl && (i < 0 || i >= L)) w[j] = 0;
          ix[j] = i < 0 ? 0 : i >= L ? L - 1 : i;
          sum += w[j];
        }
        if (excl && sum != 0)
          for (int j = 0; j < 4; j++) w[j] /= sum;
      }
    }
  }
  int64_t st[OP_MAX_RANK], idx[OP_MAX_RANK] = {0};
  ou_strides(x->dims, rank, st);
  const float *X = x->data;
  float *Y = out->data;
  for (int64_t i = 0; i < out->numel; i++) {
    bool outside = false;
    for (int d = 0; d < rank; d++) outside |= t[d].outside[idx[d]];
    double acc = 0;
    if (!outside) { /* every combination of taps over the axes */
      int64_t total = 1, combo[OP_MAX_RANK];
      for (int d = 0; d < rank; d++) total *= t[d].n;
      for (int64_t c = 0; c < total; c++) {
        int64_t r = c, off = 0;
        double w = 1;
        for (int d = rank - 1; d >= 0; d--) combo[d] = r % t[d].n, r /= t[d].n;
        for (int d = 0; d < rank; d++) {
          off += t[d].idx[idx[d] * t[d].n + combo[d]] * st[d];
          w *= t[d].w[idx[d] * t[d].n + combo[d]];
        }
        acc += w * X[off];
      }
    }
    Y[i] = outside ? extrap : (float)acc;
    for (int d = rank - 1; d >= 0; d--) {
      if (++idx[d] < dims[d]) break;
      idx[d] = 0;
    }
  }
  for (int d = 0; d < rank; d++) free(t[d].idx), free(t[d].w), free(t[d].outside);
  return 0;
}

/* ---- normalisations of CNN front-ends ---- */

OP_KERNEL(op_k_instance_norm) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *sc = in[1], *bi = in[2];
  for (int i = 0; i < 3; i++)
    if (ou_want(k, in[i], "input", true, false, false, err)) return -1;
  if (x->rank < 3) return op_kfail(k, err, "input must have spatial axes");
  int64_t C = x->dims[1], planes = x->dims[0] * C, n = ou_prod(x->dims, 2, x->rank);
  if (sc->numel != C || bi->numel != C) return op_kfail(k, err, "scale and B must hold one value per channel");
  float eps = op_kattr_float(k, "epsilon", 1e-5f);
  if (op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  const float *a = x->data;
  float *o = out->data;
  for (int64_t p = 0; p < planes; p++) {
    double mean = 0, var = 0;
    for (int64_t j = 0; j < n; j++) mean += a[p * n + j];
    mean /= (double)(n ? n : 1);
    for (int64_t j = 0; j < n; j++) var += (a[p * n + j] - mean) * (a[p * n + j] - mean);
    double inv = 1.0 / sqrt(var / (double)(n ? n : 1) + eps);
    int64_t c = p % C;
    for (int64_t j = 0; j < n; j++)
      o[p * n + j] = (float)((a[p * n + j] - mean) * inv) * ((float *)sc->data)[c] + ((float *)bi->data)[c];
  }
  return 0;
}

/* MeanVarianceNormalization: (x - mean) / (std + 1e-9) over `axes` (default N and spatial axes). */
OP_KERNEL(op_k_mean_variance_norm) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0];
  if (ou_want(k, x, "input", true, false, false, err)) return -1;
  bool red[OP_MAX_RANK] = {false};
  size_t na;
  const int64_t *ax = op_kattr_ints(k, "axes", &na);
  if (!ax) {
    for (int d = 0; d < x->rank; d++) red[d] = d != 1;
  } else {
    for (size_t i = 0; i < na; i++) {
      int a = op_axis(ax[i], x->rank);
      if (a < 0) return op_kfail(k, err, "axis out of range");
      red[a] = true;
    }
  }
  int64_t kd[OP_MAX_RANK], groups = 1, count = 1;
  for (int d = 0; d < x->rank; d++) {
    kd[d] = red[d] ? 1 : x->dims[d];
    groups *= kd[d];
    if (red[d]) count *= x->dims[d];
  }
  if (op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  double *sum = op_xcalloc((size_t)(groups ? groups : 1), sizeof(double)), *sq = op_xcalloc((size_t)(groups ? groups : 1), sizeof(double));
  int64_t *gi = op_xmalloc((size_t)(x->numel ? x->numel : 1) * sizeof(int64_t)), idx[OP_MAX_RANK] = {0};
  const float *a = x->data;
  for (int64_t i = 0; i < x->numel; i++) {
    int64_t g = 0;
    for (int d = 0; d < x->rank; d++) g = g * kd[d] + (red[d] ? 0 : idx[d]);
    gi[i] = g;
    sum[g] += a[i], sq[g] += (double)a[i] * a[i];
    for (int d = x->rank - 1; d >= 0; d--) {
      if (++idx[d] < x->dims[d]) break;
      idx[d] = 0;
    }
  }
  for (int64_t i = 0; i < x->numel; i++) {
    double m = sum[gi[i]] / (double)count, var = sq[gi[i]] / (double)count - m * m;
    ((float *)out->data)[i] = (float)((a[i] - m) / (sqrt(var > 0 ? var : 0) + 1e-9));
  }
  free(sum), free(sq), free(gi);
  return 0;
}

/* LRN across channels: x / (bias + alpha / size * sum of squares over the window)^beta. */
OP_KERNEL(op_k_lrn) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0];
  if (ou_want(k, x, "input", true, false, false, err)) return -1;
  int64_t size = op_kattr_int(k, "size", 0);
  if (size < 1 || x->rank < 3) return op_kfail(k, err, "size must be positive and the input have a channel axis");
  float alpha = op_kattr_float(k, "alpha", 1e-4f), beta = op_kattr_float(k, "beta", 0.75f), bias = op_kattr_float(k, "bias", 1.f);
  if (op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  int64_t C = x->dims[1], inner = ou_prod(x->dims, 2, x->rank), lo = (size - 1) / 2, hi = size - 1 - lo;
  const float *a = x->data;
  for (int64_t i = 0; i < x->numel; i++) {
    int64_t c = (i / inner) % C, base = i - c * inner;
    double s = 0;
    for (int64_t j = c - lo; j <= c + hi; j++)
      if (j >= 0 && j < C) s += (double)a[base + j * inner] * a[base + j * inner];
    ((float *)out->data)[i] = (float)(a[i] / pow(bias + alpha / (double)size * s, beta));
  }
  return 0;
}

/* GroupNormalization: statistics over each group of channels and the spatial axes; scale and bias
 * per group before opset 21, per channel since. */
OP_KERNEL(op_k_group_norm) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0], *sc = in[1], *bi = in[2];
  for (int i = 0; i < 3; i++)
    if (ou_want(k, in[i], "input", true, false, false, err)) return -1;
  int64_t G = op_kattr_int(k, "num_groups", 0);
  if (x->rank < 2 || G < 1 || x->dims[1] % G) return op_kfail(k, err, "num_groups must divide the channels");
  int64_t N = x->dims[0], C = x->dims[1], inner = ou_prod(x->dims, 2, x->rank), per = C / G * inner;
  int64_t want = k->opset < 21 ? G : C;
  if (sc->numel != want || bi->numel != want)
    return op_kfail(k, err, "scale and bias must hold %lld values at opset %lld", (long long)want, (long long)k->opset);
  float eps = op_kattr_float(k, "epsilon", 1e-5f);
  if (op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  const float *a = x->data, *s = sc->data, *b = bi->data;
  float *o = out->data;
  for (int64_t n = 0; n < N; n++)
    for (int64_t g = 0; g < G; g++) {
      const float *p = a + (n * G + g) * per;
      double mean = 0, var = 0;
      for (int64_t j = 0; j < per; j++) mean += p[j];
      mean /= (double)(per ? per : 1);
      for (int64_t j = 0; j < per; j++) var += (p[j] - mean) * (p[j] - mean);
      double inv = 1.0 / sqrt(var / (double)(per ? per : 1) + eps);
      for (int64_t j = 0; j < per; j++) {
        int64_t c = g * (C / G) + j / (inner ? inner : 1), q = want == G ? g : c;
        o[(n * G + g) * per + j] = (float)((p[j] - mean) * inv) * s[q] + b[q];
      }
    }
  return 0;
}
