/* ops_math.c - element-wise math beyond the transformer core: trigonometry, rounding, activations
 * (LeakyRelu, Elu, HardSwish, Softplus, ...), IsNaN/IsInf, Mod, Xor, PRelu, variadic Sum/Mean,
 * Clip (bounds as attributes before opset 11, inputs since), CastLike, Size, LogSoftmax, Hardmax. */
#include "exec/ops_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum fun { F_SIN, F_COS, F_TAN, F_ASIN, F_ACOS, F_ATAN, F_SINH, F_COSH, F_ASINH, F_ACOSH, F_ATANH, F_FLOOR, F_CEIL,
           F_ROUND, F_SOFTPLUS, F_SOFTSIGN, F_LEAKY, F_HSIG, F_HSWISH, F_ELU, F_SELU, F_CELU, F_THRELU, F_SHRINK };

static int float_map(const op_kctx *k, op_xt *x, op_xt *out, enum fun f, op_error *err) {
  if (ou_want(k, x, "input", true, false, false, err) || op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  const float *a = x->data;
  float *o = out->data;
  int64_t n = x->numel;
  float alpha = 0, beta = 0, gamma = 0;
  switch (f) {
    case F_LEAKY: alpha = op_kattr_float(k, "alpha", 0.01f); break;
    case F_HSIG: alpha = op_kattr_float(k, "alpha", 0.2f), beta = op_kattr_float(k, "beta", 0.5f); break;
    case F_ELU: case F_CELU: case F_THRELU: alpha = op_kattr_float(k, "alpha", 1.f); break;
    case F_SELU:
      alpha = op_kattr_float(k, "alpha", 1.67326319217681884765625f);
      gamma = op_kattr_float(k, "gamma", 1.05070102214813232421875f);
      break;
    case F_SHRINK: alpha = op_kattr_float(k, "lambd", 0.5f), beta = op_kattr_float(k, "bias", 0.f); break;
    default: break;
  }
  for (int64_t i = 0; i < n; i++) {
    float v = a[i], r;
    switch (f) {
      case F_SIN: r = sinf(v); break;
      case F_COS: r = cosf(v); break;
      case F_TAN: r = tanf(v); break;
      case F_ASIN: r = asinf(v); break;
      case F_ACOS: r = acosf(v); break;
      case F_ATAN: r = atanf(v); break;
      case F_SINH: r = sinhf(v); break;
      case F_COSH: r = coshf(v); break;
      case F_ASINH: r = asinhf(v); break;
      case F_ACOSH: r = acoshf(v); break;
      case F_ATANH: r = atanhf(v); break;
      case F_FLOOR: r = floorf(v); break;
      case F_CEIL: r = ceilf(v); break;
      case F_ROUND: r = nearbyintf(v); break; /* half to even, as ONNX specifies */
      case F_SOFTPLUS: r = v > 20.f ? v : log1pf(expf(v)); break;
      case F_SOFTSIGN: r = v / (1.f + fabsf(v)); break;
      case F_LEAKY: r = v >= 0 ? v : alpha * v; break;
      case F_HSIG: r = fmaxf(0.f, fminf(1.f, alpha * v + beta)); break;
      case F_HSWISH: r = v * fmaxf(0.f, fminf(1.f, v / 6.f + 0.5f)); break;
      case F_ELU: r = v >= 0 ? v : alpha * expm1f(v); break;
      case F_SELU: r = v > 0 ? gamma * v : gamma * alpha * expm1f(v); break;
      case F_CELU: r = fmaxf(0.f, v) + fminf(0.f, alpha * expm1f(v / alpha)); break;
      case F_THRELU: r = v > alpha ? v : 0.f; break;
      case F_SHRINK: r = v < -alpha ? v + beta : v > alpha ? v - beta : 0.f; break;
      default: r = v; break;
    }
    o[i] = r;
  }
  return 0;
}

#define FLOAT_KERNEL(fn, f)                                                                       \
  OP_KERNEL(fn) {                                                                                 \
    (void)n_in, (void)n_out;                                                                      \
    return float_map(k, in[0], out, f, err);                                                      \
  }
FLOAT_KERNEL(op_k_sin, F_SIN)
FLOAT_KERNEL(op_k_cos, F_COS)
FLOAT_KERNEL(op_k_tan, F_TAN)
FLOAT_KERNEL(op_k_asin, F_ASIN)
FLOAT_KERNEL(op_k_acos, F_ACOS)
FLOAT_KERNEL(op_k_atan, F_ATAN)
FLOAT_KERNEL(op_k_sinh, F_SINH)
FLOAT_KERNEL(op_k_cosh, F_COSH)
FLOAT_KERNEL(op_k_asinh, F_ASINH)
FLOAT_KERNEL(op_k_acosh, F_ACOSH)
FLOAT_KERNEL(op_k_atanh, F_ATANH)
FLOAT_KERNEL(op_k_floor, F_FLOOR)
FLOAT_KERNEL(op_k_ceil, F_CEIL)
FLOAT_KERNEL(op_k_round, F_ROUND)
FLOAT_KERNEL(op_k_softplus, F_SOFTPLUS)
FLOAT_KERNEL(op_k_softsign, F_SOFTSIGN)
FLOAT_KERNEL(op_k_leaky_relu, F_LEAKY)
FLOAT_KERNEL(op_k_hard_sigmoid, F_HSIG)
FLOAT_KERNEL(op_k_hard_swish, F_HSWISH)
FLOAT_KERNEL(op_k_elu, F_ELU)
FLOAT_KERNEL(op_k_selu, F_SELU)
FLOAT_KERNEL(op_k_celu, F_CELU)
FLOAT_KERNEL(op_k_thresholded_relu, F_THRELU)
FLOAT_KERNEL(op_k_shrink, F_SHRINK)

OP_KERNEL(op_k_sign) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0];
  if (ou_want(k, x, "input", true, true, false, err) || op_xt_alloc(out, x->dtype, x->dims, x->rank, err)) return -1;
  for (int64_t i = 0; i < x->numel; i++) {
    double v = ou_get(x, i);
    ou_set(out, i, isnan(v) ? v : (v > 0) - (v < 0));
  }
  return 0;
}

OP_KERNEL(op_k_isnan) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0];
  if (ou_want(k, x, "input", true, false, false, err) || op_xt_alloc(out, T_BOOL, x->dims, x->rank, err)) return -1;
  for (int64_t i = 0; i < x->numel; i++) ((uint8_t *)out->data)[i] = isnan(((float *)x->data)[i]) != 0;
  return 0;
}

OP_KERNEL(op_k_isinf) {
  (void)n_in, (void)n_out;
  op_xt *x = in[0];
  bool neg = op_kattr_int(k, "detect_negative", 1) != 0, pos = op_kattr_int(k, "detect_positive", 1) != 0;
  if (ou_want(k, x, "input", true, false, false, err) || op_xt_alloc(out, T_BOOL, x->dims, x->rank, err)) return -1;
  for (int64_t i = 0; i < x->numel; i++) {
    float v = ((float *)x->data)[i];
    ((uint8_t *)out->data)[i] = isinf(v) && ((v > 0 && pos) || (v < 0 && neg));
  }
  return 0;
}

/* ---- broadcasting binaries ---- */

OP_KERNEL(op_k_mod) {
  (void)n_in, (void)n_out;
  op_xt *a = in[0], *b = in[1];
  bool fmod_ = op_kattr_int(k, "fmod", 0) != 0;
  if (ou_want(k, a, "input", true, true, false, err)) return -1;
  if (a->dtype != b->dtype) return op_kfail(k, err, "input types differ");
  if (a->dtype == T_FLOAT && !fmod_) return op_kfail(k, err, "fmod must be 1 for floating-point inputs");
  ou_bcast bc;
  if (ou_bcast_init(k, in, 2, &bc, err) || op_xt_alloc(out, a->dtype, bc.dims, bc.rank, err)) return -1;
  for (int64_t i = 0; i < bc.numel; i++) {
    int64_t ia = ou_bcast_off(&bc, 0, i), ib = ou_bcast_off(&bc, 1, i);
    if (a->dtype == T_FLOAT) {
      ((float *)out->data)[i] = fmodf(((float *)a->data)[ia], ((float *)b->data)[ib]);
      continue;
    }
    int64_t x = op_xt_int(a, ia), y = op_xt_int(b, ib), r;
    if (y == 0) return op_kfail(k, err, "integer modulo by zero");
    r = x % y; /* C truncates: fmod's sign rule */
    if (!fmod_ && r != 0 && ((r < 0) != (y < 0))) r += y; /* Python's: the sign of the divisor */
    ou_set(out, i, (double)r);
  }
  return 0;
}

OP_KERNEL(op_k_xor) {
  (void)n_in, (void)n_out;
  if (ou_want(k, in[0], "input", false, false, true, err) || ou_want(k, in[1], "input", false, false, true, err)) return -1;
  ou_bcast bc;
  if (ou_bcast_init(k, in, 2, &bc, err) || op_xt_alloc(out, T_BOOL, bc.dims, bc.rank, err)) return -1;
  const uint8_t *a = in[0]->data, *b = in[1]->data;
  for (int64_t i = 0; i < bc.numel; i++)
    ((uint8_t *)out->data)[i] = (a[ou_bcast_off(&bc, 0, i)] != 0) != (b[ou_bcast_off(&bc, 1, i)] != 0);
  return 0;
}

OP_KERNEL(op_k_prelu) {
  (void)n_in, (void)n_out;
  if (ou_want(k, in[0], "input", true, false, false, err) || ou_want(k, in[1], "slope", true, false, false, err)) return -1;
  ou_bcast bc;
  if (ou_bcast_init(k, in, 2, &bc, err) || op_xt_alloc(out, T_FLOAT, bc.dims, bc.rank, err)) return -1;
  const float *a = in[0]->data, *s = in[1]->data;
  for (int64_t i = 0; i < bc.numel; i++) {
    float v = a[ou_bcast_off(&bc, 0, i)];
    ((float *)out->data)[i] = v < 0 ? v * s[ou_bcast_off(&bc, 1, i)] : v;
  }
  return 0;
}

/* Sum and Mean: variadic, broadcasting all inputs together. */
static int sum_mean(const op_kctx *k, op_xt **in, size_t n_in, op_xt *out, bool mean, op_error *err) {
  for (size_t i = 0; i < n_in; i++) {
    if (ou_want(k, in[i], "input", true, !mean, false, err)) return -1;
    if (in[i]->dtype != in[0]->dtype) return op_kfail(k, err, "input types differ");
  }
  ou_bcast bc;
  if (ou_bcast_init(k, in, (int)n_in, &bc, err) || op_xt_alloc(out, in[0]->dtype, bc.dims, bc.rank, err)) return -1;
  for (int64_t i = 0; i < bc.numel; i++) {
    if (in[0]->dtype == T_FLOAT) {
      float s = 0;
      for (size_t j = 0; j < n_in; j++) s += ((float *)in[j]->data)[ou_bcast_off(&bc, (int)j, i)];
      ((float *)out->data)[i] = mean ? s / (float)n_in : s;
    } else {
      int64_t s = 0;
      for (size_t j = 0; j < n_in; j++) s += op_xt_int(in[j], ou_bcast_off(&bc, (int)j, i));
      ou_set(out, i, (double)s);
    }
  }
  return 0;
}

OP_KERNEL(op_k_sum) {
  (void)n_out;
  return sum_mean(k, in, n_in, out, false, err);
}

OP_KERNEL(op_k_mean) {
  (void)n_out;
  return sum_mean(k, in, n_in, out, true, err);
}

OP_KERNEL(op_k_clip) {
  (void)n_out;
  op_xt *x = in[0];
  if (ou_want(k, x, "input", true, true, false, err)) return -1;
  double lo = -INFINITY, hi = INFINITY;
  if (k->opset < 11) {
    lo = op_kattr_float(k, "min", -INFINITY);
    hi = op_kattr_float(k, "max", INFINITY);
  } else {
    for (size_t j = 1; j < 3 && j < n_in; j++) {
      if (!in[j]) continue;
      if (in[j]->dtype != x->dtype || in[j]->numel != 1) return op_kfail(k, err, "min and max must be scalars of the input's type");
      if (j == 1) lo = ou_get(in[j], 0);
      else hi = ou_get(in[j], 0);
    }
  }
  if (op_xt_alloc(out, x->dtype, x->dims, x->rank, err)) return -1;
  if (x->dtype == T_FLOAT) {
    const float *a = x->data;
    float *o = out->data, l = (float)lo, h = (float)hi;
    for (int64_t i = 0; i < x->numel; i++) {
      float v = a[i] < l ? l : a[i];
      o[i] = v > h ? h : v; /* min > max gives max, as numpy.clip does */
    }
    return 0;
  }
  int64_t l = isinf(lo) ? INT64_MIN : (int64_t)lo, h = isinf(hi) ? INT64_MAX : (int64_t)hi;
  for (int64_t i = 0; i < x->numel; i++) {
    int64_t v = op_xt_int(x, i);
    v = v < l ? l : v;
    ou_set(out, i, (double)(v > h ? h : v));
  }
  return 0;
}

OP_KERNEL(op_k_cast_like) {
  (void)n_in, (void)n_out;
  /* Cast with `to` taken from the second input's type */
  Onnx__AttributeProto to = ONNX__ATTRIBUTE_PROTO__INIT, *attrs[1] = {&to};
  to.name = "to";
  to.has_i = 1;
  to.i = in[1]->dtype;
  to.has_type = 1;
  to.type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  Onnx__NodeProto node = *k->node;
  node.attribute = attrs;
  node.n_attribute = 1;
  op_kctx k2 = *k;
  k2.node = &node;
  return op_k_cast(&k2, in, 1, out, 1, err);
}

OP_KERNEL(op_k_size) {
  (void)n_in, (void)n_out;
  (void)k;
  if (op_xt_alloc(out, T_INT64, NULL, 0, err)) return -1;
  *(int64_t *)out->data = in[0]->numel;
  return 0;
}

/* LogSoftmax and Hardmax over an axis; before opset 13 the input is seen as [outer, rest from axis]. */
static int softmax_like(const op_kctx *k, op_xt *x, op_xt *out, bool hard, op_error *err) {
  if (ou_want(k, x, "input", true, false, false, err)) return -1;
  int axis = op_axis(op_kattr_int(k, "axis", k->opset < 13 ? 1 : -1), x->rank);
  if (axis < 0) return op_kfail(k, err, "axis out of range");
  if (op_xt_alloc(out, T_FLOAT, x->dims, x->rank, err)) return -1;
  int64_t outer = ou_prod(x->dims, 0, axis), n, inner;
  if (k->opset < 13) {
    n = ou_prod(x->dims, axis, x->rank);
    inner = 1;
  } else {
    n = x->dims[axis];
    inner = ou_prod(x->dims, axis + 1, x->rank);
  }
  const float *a = x->data;
  float *o = out->data;
  for (int64_t q = 0; q < outer; q++)
    for (int64_t r = 0; r < inner; r++) {
      int64_t base = q * n * inner + r;
      float m = -INFINITY;
      int64_t arg = 0;
      for (int64_t j = 0; j < n; j++)
        if (a[base + j * inner] > m) m = a[base + j * inner], arg = j;
      if (hard) {
        for (int64_t j = 0; j < n; j++) o[base + j * inner] = j == arg ? 1.f : 0.f;
        continue;
      }
      double s = 0;
      for (int64_t j = 0; j < n; j++) s += exp((double)a[base + j * inner] - m);
      float ls = (float)log(s);
      for (int64_t j = 0; j < n; j++) o[base + j * inner] = a[base + j * inner] - m - ls;
    }
  return 0;
}

OP_KERNEL(op_k_log_softmax) {
  (void)n_in, (void)n_out;
  return softmax_like(k, in[0], out, false, err);
}

OP_KERNEL(op_k_hardmax) {
  (void)n_in, (void)n_out;
  return softmax_like(k, in[0], out, true, err);
}

/* Dropout at inference passes its input (mask all true). In training mode (opset 12+, a true
 * training_mode input) it drops at random: refused, unless the ratio is 0, where it is the identity. */
OP_KERNEL(op_k_dropout) {
  op_xt *ratio = n_in > 1 ? in[1] : NULL, *training = n_in > 2 ? in[2] : NULL;
  if (training && training->numel >= 1 && ou_get(training, 0) != 0) {
    double r = ratio && ratio->numel >= 1 ? ou_get(ratio, 0) : 0.5;
    if (ratio && ratio->dtype != T_FLOAT) return ou_unsupported(k, err, "ratio of type %d", ratio->dtype);
    if (r != 0) return ou_unsupported(k, err, "training_mode=true drops values at random (ratio %g); not computed", r);
  }
  return op_k_identity(k, in, 1, out, n_out, err);
}
