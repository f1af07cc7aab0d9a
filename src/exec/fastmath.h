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

#endif
