/* fastmath.h - exp and erf for the executor's elementwise loops, written without branches or calls
 * so the compiler vectorises the loops they sit in (libm's expf / erff are opaque calls, one element
 * at a time). Accuracy, checked against double precision in tests/exec/test_ops.c: exp within 2 ulp,
 * erf within 3e-7 absolute and 2e-6 relative (erf near 0 is x * P(x^2), so small inputs keep their
 * relative accuracy); libm and ONNX Runtime's own approximations are in the same range. */
#ifndef OP_FASTMATH_H
#define OP_FASTMATH_H

#include <stdint.h>
#include <string.h>

/* For the loops that call these: one copy per vector width, picked at load time for the CPU (the
 * default build targets plain x86-64, whose 4-lane vectors leave AVX-512 machines 4x idle). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__)
#define OP_VECTOR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define OP_VECTOR_CLONES
#endif

/* e^x: x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial (Cephes' expf coefficients),
 * 2^n put into the exponent bits. Below -87.3 (where the result would be subnormal) it returns 0,
 * beyond 88.7 +inf; NaN stays NaN. */
static inline float op_expf(float x) {
  float xc = x < -87.33654f ? -87.33654f : x > 88.72283f ? 88.72283f : x;
  xc = xc != xc ? 0.f : xc; /* NaN: computed on 0 (the int conversion below needs a finite value), returned as NaN */
  float fn = (xc * 1.44269504f + 12582912.f) - 12582912.f; /* round to nearest without a call */
  float r = xc - fn * 0.693359375f;
  r = r - fn * -2.12194440e-4f;
  float r2 = r * r;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r2 + r + 1.f;
  int32_t n = (int32_t)fn;
  /* 2^n in two factors, so n = 128 (x near 88.7) does not overflow the exponent field */
  uint32_t b1 = (uint32_t)(n / 2 + 127) << 23, b2 = (uint32_t)(n - n / 2 + 127) << 23;
  float s1, s2;
  memcpy(&s1, &b1, 4);
  memcpy(&s2, &b2, 4);
  float y = p * s1 * s2;
  y = x > 88.72283f ? x * 1e30f * 1e30f : y; /* +inf, as expf overflows */
  y = x < -87.33654f ? 0.f : y;
  return x != x ? x : y;
}

/* erf(x): x * P(x^2) for |x| < 0.921875, 1 - e^Q(|x|) up to 3.925 (erfc fitted in the log domain),
 * then 1; odd. */
static inline float op_erff(float x) {
  float a = x < 0 ? -x : x;
  float z = a * a;
  float s = -6.008741897e-4f;
  s = s * z + 4.997016447e-3f;
  s = s * z + -2.676950344e-2f;
  s = s * z + 1.128190524e-1f;
  s = s * z + -3.761250338e-1f;
  s = s * z + 1.128379151f;
  s *= a;
  float ac = a > 3.925f ? 3.925f : a;
  float q = 1.635537812e-6f;
  q = q * ac + -4.599254950e-5f;
  q = q * ac + 5.959674750e-4f;
  q = q * ac + -4.754320201e-3f;
  q = q * ac + 2.640229893e-2f;
  q = q * ac + -1.100401565e-1f;
  q = q * ac + -6.318756424e-1f;
  q = q * ac + -1.130200240f;
  q = q * ac + 3.109346700e-4f;
  float b = 1.f - op_expf(q);
  float y = a < 0.921875f ? s : a < 3.925f ? b : 1.f;
  y = x < 0 ? -y : y;
  return x != x ? x : y;
}

/* Sum and max of a row in 16 independent lanes: a single running total is a chain of dependent adds
 * the compiler may not reorder (no -ffast-math), one element per add latency; lanes vectorise. The
 * lanes' float sums are combined in double. NaN in op_max_lanes is skipped, as `x > m ? x : m` does. */
#define OP_LANES 16
static inline double op_sum_lanes(const float *x, int64_t n) {
  float l[OP_LANES] = {0};
  int64_t j = 0;
  for (; j + OP_LANES <= n; j += OP_LANES)
    for (int q = 0; q < OP_LANES; q++) l[q] += x[j + q];
  double s = 0;
  for (; j < n; j++) s += x[j];
  for (int q = 0; q < OP_LANES; q++) s += l[q];
  return s;
}
static inline float op_max_lanes(const float *x, int64_t n) {
  float l[OP_LANES];
  for (int q = 0; q < OP_LANES; q++) l[q] = -__builtin_inff();
  int64_t j = 0;
  for (; j + OP_LANES <= n; j += OP_LANES)
    for (int q = 0; q < OP_LANES; q++) l[q] = x[j + q] > l[q] ? x[j + q] : l[q];
  float m = -__builtin_inff();
  for (; j < n; j++) m = x[j] > m ? x[j] : m;
  for (int q = 0; q < OP_LANES; q++) m = l[q] > m ? l[q] : m;
  return m;
}

/* A row's moments for a norm: its mean is shift + corr, shift the float mean and corr the mean of what
 * is left (x - shift), so a row far from 0 keeps its small deviations exact; var is the variance
 * (the mean of squares when not centred: RMS norms). Normalise as ((x - shift) - corr) * inv. */
typedef struct op_row_moments {
  float shift, corr;
  double var;
} op_row_moments;
static inline op_row_moments op_row_moments_of(const float *x, int64_t n, int centred) {
  op_row_moments m = {0.f, 0.f, 0.0};
  if (!n) return m;
  if (centred) m.shift = (float)(op_sum_lanes(x, n) / (double)n);
  float l1[OP_LANES] = {0}, l2[OP_LANES] = {0};
  double s1 = 0, s2 = 0;
  int64_t j = 0;
  for (; j + OP_LANES <= n; j += OP_LANES)
    for (int q = 0; q < OP_LANES; q++) {
      float d = x[j + q] - m.shift;
      l1[q] += d;
      l2[q] += d * d;
    }
  for (; j < n; j++) s1 += x[j] - m.shift, s2 += (double)(x[j] - m.shift) * (x[j] - m.shift);
  for (int q = 0; q < OP_LANES; q++) s1 += l1[q], s2 += l2[q];
  double c = centred ? s1 / (double)n : 0.0;
  m.corr = (float)c;
  m.var = s2 / (double)n - c * c;
  if (m.var < 0) m.var = 0;
  return m;
}

#endif
