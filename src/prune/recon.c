/* recon.c - the reconstruction math: second moments of a projection's input (float64), the Cholesky
 * wrapper over LAPACK (OpenBLAS's dpotrf/dpotri), the greedy structured OBS ranking and the ridge-damped
 * least-squares refit. Pure matrices in and out: sequential.c feeds it from the model. */
#include "prune/recon.h"
#include "files/files.h"

#include <cblas.h>
#include <f77blas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- LAPACK: the one place it is called ---- */

/* Row-major lower L is column-major upper: LAPACK's 'U' factor A = U^T U is our A = L L^T. */
int op_chol(double *A, int64_t n) {
  char uplo = 'U';
  blasint nn = (blasint)n, lda = (blasint)(n ? n : 1), info = 0;
  if (n > 0) BLASFUNC(dpotrf)(&uplo, &nn, A, &lda, &info);
  return (int)info;
}

void op_chol_solve(const double *L, int64_t n, double *B, int64_t nrhs) {
  if (n <= 0 || nrhs <= 0) return;
  cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasNoTrans, CblasNonUnit, (blasint)n, (blasint)nrhs, 1.0, L,
              (blasint)n, B, (blasint)nrhs);
  cblas_dtrsm(CblasRowMajor, CblasLeft, CblasLower, CblasTrans, CblasNonUnit, (blasint)n, (blasint)nrhs, 1.0, L,
              (blasint)n, B, (blasint)nrhs);
}

/* A^-1 of a symmetric matrix in place, full (both triangles) on return; the diagonal of the first
 * `damped` rows gets *damp added first, ten times more on each retry while A is not positive definite.
 * Returns 0 or -1. */
static int inverse_damped(double *A, int64_t n, int64_t damped, double *damp) {
  size_t bytes = (size_t)(n * n) * sizeof *A;
  double *orig = op_xmalloc(bytes ? bytes : 1);
  memcpy(orig, A, bytes);
  int rc = -1;
  for (int tries = 0; tries < 8 && rc; tries++, *damp = *damp > 0 ? *damp * 10 : 1e-8) {
    memcpy(A, orig, bytes);
    for (int64_t i = 0; i < damped; i++) A[i * n + i] += *damp;
    if (op_chol(A, n)) continue;
    char uplo = 'U';
    blasint nn = (blasint)n, lda = (blasint)n, info = 0;
    BLASFUNC(dpotri)(&uplo, &nn, A, &lda, &info);
    if (info) continue;
    for (int64_t i = 0; i < n; i++) /* the lower triangle (row-major) holds the inverse */
      for (int64_t j = i + 1; j < n; j++) A[i * n + j] = A[j * n + i];
    rc = 0;
    break;
  }
  free(orig);
  return rc;
}

/* ---- moments ---- */

void op_recon_moments_init(op_recon_moments *s, int64_t n) {
  s->n = n;
  s->H = op_xcalloc((size_t)((n + 1) * (n + 1)), sizeof *s->H);
  s->part = NULL;
  s->budgeted = 0;
}

void op_recon_moments_free(op_recon_moments *s) {
  free(s->H);
  free(s->part);
  s->H = NULL;
  s->part = NULL;
  op_budget_give(s->budgeted);
  s->budgeted = 0;
}

/* ---- memory budget (issue 10) ---- */
int op_recon_moments_budget(op_recon_moments *s, const char *what, op_error *err) {
  uint64_t bytes = (uint64_t)((s->n + 1) * (s->n + 1)) * sizeof *s->H + (uint64_t)(s->n * s->n) * sizeof *s->part;
  if (s->budgeted || op_budget_take(bytes, what, err)) return s->budgeted ? 0 : -1;
  s->budgeted = bytes;
  return 0;
}

/* The products are float32 (single-precision BLAS, twice the double rate) over chunks of CHUNK rows, each
 * chunk's sums then added into the float64 totals: a float32 sum of 256 products is good to about 1e-6
 * of their magnitude, far below the ridge (1e-2 of the mean diagonal) the solves add. BERT-base's FFN
 * (n = 3072) over 256 x 128 tokens spent half the prune's time in float64 products before. */
#define CHUNK 256

static float *part_of(op_recon_moments *s) {
  if (!s->part) s->part = op_xmalloc((size_t)(s->n > 0 ? s->n * s->n : 1) * sizeof *s->part);
  return s->part;
}

void op_recon_moments_add(op_recon_moments *s, const float *x, int64_t rows) {
  int64_t n = s->n, m = n + 1;
  float *P = part_of(s);
  for (int64_t r0 = 0; r0 < rows; r0 += CHUNK) {
    int64_t k = rows - r0 < CHUNK ? rows - r0 : CHUNK;
    const float *xc = x + r0 * n;
    /* P = xc^T xc, lower triangle */
    cblas_ssyrk(CblasRowMajor, CblasLower, CblasTrans, (blasint)n, (blasint)k, 1.f, xc, (blasint)n, 0.f, P, (blasint)n);
    for (int64_t i = 0; i < n; i++)
      for (int64_t j = 0; j <= i; j++) s->H[i * m + j] += P[i * n + j];
    for (int64_t r = 0; r < k; r++) /* the constant's row: channel sums, then the count */
      for (int64_t c = 0; c < n; c++) s->H[n * m + c] += xc[r * n + c];
    s->H[n * m + n] += (double)k;
  }
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = i + 1; j < m; j++) s->H[i * m + j] = s->H[j * m + i];
}

double op_recon_damp(const op_recon_moments *s, double rel) {
  int64_t m = s->n + 1;
  double d = 0;
  for (int64_t i = 0; i < s->n; i++) d += s->H[i * m + i];
  d = s->n ? d / (double)s->n : 0;
  return d > 0 ? rel * d : rel;
}

double op_recon_error(const op_recon_moments *s, const double *dW, int64_t out) {
  int64_t m = s->n + 1;
  double *G = op_xmalloc((size_t)(m * out) * sizeof *G), e = 0;
  cblas_dsymm(CblasRowMajor, CblasLeft, CblasLower, (blasint)m, (blasint)out, 1.0, s->H, (blasint)m, dW, (blasint)out,
              0.0, G, (blasint)out);
  for (int64_t i = 0; i < m * out; i++) e += dW[i] * G[i];
  free(G);
  return e;
}

void op_recon_cross_add(op_recon_moments *s, double *C, int64_t out, const float *x, const float *y, int64_t rows) {
  int64_t n = s->n, panel = out < n ? out : n; /* output columns per product: part holds n x panel */
  float *P = part_of(s);
  for (int64_t r0 = 0; r0 < rows; r0 += CHUNK) {
    int64_t k = rows - r0 < CHUNK ? rows - r0 : CHUNK;
    const float *xc = x + r0 * n, *yc = y + r0 * out;
    for (int64_t j0 = 0; j0 < out && panel > 0; j0 += panel) {
      int64_t w = out - j0 < panel ? out - j0 : panel;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (blasint)n, (blasint)w, (blasint)k, 1.f, xc, (blasint)n,
                  yc + j0, (blasint)out, 0.f, P, (blasint)w);
      for (int64_t c = 0; c < n; c++)
        for (int64_t j = 0; j < w; j++) C[c * out + j0 + j] += P[c * w + j];
    }
    for (int64_t r = 0; r < k; r++) /* the constant's row: the outputs' sums */
      for (int64_t j = 0; j < out; j++) C[n * out + j] += yc[r * out + j];
  }
}

int op_recon_fit(const op_recon_moments *s, const double *C, const double *W, int64_t out, double damp,
                 bool bias_free, double *Wstar, op_error *err) {
  int64_t n = s->n, m = n + 1, k = bias_free ? m : n; /* k: the unknowns (with the bias or not) */
  double *A = op_xmalloc((size_t)(m * m) * sizeof *A);
  int rc = -1;
  for (int tries = 0; tries < 8 && rc; tries++, damp = damp > 0 ? damp * 10 : 1e-8) {
    for (int64_t i = 0; i < k; i++)
      for (int64_t j = 0; j < k; j++) A[i * k + j] = s->H[i * m + j];
    for (int64_t i = 0; i < n; i++) A[i * k + i] += damp;
    if (op_chol(A, k)) continue;
    for (int64_t i = 0; i < m; i++) /* a fixed bias moves to the right-hand side */
      for (int64_t j = 0; j < out; j++)
        Wstar[i * out + j] = i < k ? C[i * out + j] + (i < n ? damp * W[i * out + j] : 0) - (bias_free ? 0 : s->H[i * m + n] * W[n * out + j])
                                   : W[i * out + j];
    op_chol_solve(A, k, Wstar, out);
    rc = 0;
  }
  free(A);
  if (rc) op_fail(err, OP_INVALID, "the calibration moments are not positive definite even with a ridge");
  return rc;
}

double op_recon_residual(const op_recon_moments *s, const double *C, double yy, const double *W, int64_t out) {
  int64_t m = s->n + 1;
  double cross = 0;
  for (int64_t i = 0; i < m * out; i++) cross += W[i] * C[i];
  double e = op_recon_error(s, W, out) - 2 * cross + yy;
  return e > 0 ? e : 0;
}

/* ---- ranking ---- */

/* Channels of each unit, concatenated: unit u has chans[first[u] .. first[u+1]). */
typedef struct unit_chans {
  int64_t *first, *chans;
} unit_chans;

static unit_chans group_channels(const int64_t *unit_of, int64_t n, int64_t n_units) {
  unit_chans g = {op_xcalloc((size_t)n_units + 1, sizeof(int64_t)), op_xmalloc((size_t)(n ? n : 1) * sizeof(int64_t))};
  for (int64_t c = 0; c < n; c++)
    if (unit_of[c] >= 0) g.first[unit_of[c] + 1]++;
  for (int64_t u = 0; u < n_units; u++) g.first[u + 1] += g.first[u];
  int64_t *fill = op_xmalloc((size_t)(n_units ? n_units : 1) * sizeof *fill);
  memcpy(fill, g.first, (size_t)n_units * sizeof *fill);
  for (int64_t c = 0; c < n; c++)
    if (unit_of[c] >= 0) g.chans[fill[unit_of[c]]++] = c;
  free(fill);
  return g;
}

/* tr(W_S^T (Hinv_SS)^-1 W_S) for channels S; M (k*k) and Z (k*out) are scratch. Writes the factor of
 * Hinv_SS to M and (Hinv_SS)^-1 W_S to Z. -1 when Hinv_SS is not positive definite. */
static int obs_cost(const double *Hinv, int64_t m, const double *W, int64_t out, const int64_t *S, int64_t k, double *M,
                    double *Z, double *cost) {
  for (int64_t i = 0; i < k; i++)
    for (int64_t j = 0; j < k; j++) M[i * k + j] = Hinv[S[i] * m + S[j]];
  for (int64_t i = 0; i < k; i++) memcpy(Z + i * out, W + S[i] * out, (size_t)out * sizeof *Z);
  if (op_chol(M, k)) return -1;
  op_chol_solve(M, k, Z, out);
  double e = 0;
  for (int64_t i = 0; i < k; i++)
    for (int64_t j = 0; j < out; j++) e += W[S[i] * out + j] * Z[i * out + j];
  *cost = e;
  return 0;
}

static const double *rank_sal; /* qsort context; ranking is single-threaded */
static int cmp_sal(const void *x, const void *y) {
  int64_t i = *(const int64_t *)x, j = *(const int64_t *)y;
  double a = rank_sal[i], b = rank_sal[j];
  return a < b ? -1 : a > b ? 1 : (i > j) - (i < j);
}

/* Removes channels S (k of them) from the OBS state: W gets the optimal refit of the rest, Hinv the
 * inverse over what is left; M holds the factor of Hinv_SS and Z = (Hinv_SS)^-1 W_S (from obs_cost). */
static void obs_remove(double *Hinv, int64_t m, double *W, int64_t out, const int64_t *S, int64_t k, const double *M,
                       const double *Z) {
  double *C = op_xmalloc((size_t)(m * k) * sizeof *C), *Y = op_xmalloc((size_t)(k * m) * sizeof *Y);
  for (int64_t i = 0; i < m; i++)
    for (int64_t j = 0; j < k; j++) C[i * k + j] = Hinv[i * m + S[j]]; /* Hinv[:, S] */
  for (int64_t i = 0; i < k; i++) memcpy(Y + i * m, Hinv + S[i] * m, (size_t)m * sizeof *Y);
  op_chol_solve(M, k, Y, m); /* (Hinv_SS)^-1 Hinv[S, :] */
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)out, (blasint)k, -1.0, C, (blasint)k, Z,
              (blasint)out, 1.0, W, (blasint)out);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)m, (blasint)m, (blasint)k, -1.0, C, (blasint)k, Y,
              (blasint)m, 1.0, Hinv, (blasint)m);
  for (int64_t j = 0; j < k; j++) { /* exactly zero what is gone (rounding would leave dust) */
    int64_t c = S[j];
    memset(W + c * out, 0, (size_t)out * sizeof *W);
    memset(Hinv + c * m, 0, (size_t)m * sizeof *Hinv);
    for (int64_t i = 0; i < m; i++) Hinv[i * m + c] = 0;
  }
  free(C);
  free(Y);
}

int op_recon_rank(const op_recon_moments *s, const double *W, int64_t out, const int64_t *unit_of, int64_t n_units,
                  int64_t max_remove, double damp, double *score, op_error *err) {
  int64_t n = s->n, m = n + 1;
  if (n_units <= 0) return 0;
  double *Hinv = op_xmalloc((size_t)(m * m) * sizeof *Hinv);
  memcpy(Hinv, s->H, (size_t)(m * m) * sizeof *Hinv);
  if (inverse_damped(Hinv, m, n, &damp)) {
    free(Hinv);
    return op_fail(err, OP_INVALID, "the calibration moments are not positive definite even with ridge %g", damp);
  }
  unit_chans g = group_channels(unit_of, n, n_units);
  int64_t maxk = 0;
  for (int64_t u = 0; u < n_units; u++)
    if (g.first[u + 1] - g.first[u] > maxk) maxk = g.first[u + 1] - g.first[u];
  double *Wc = op_xmalloc((size_t)(m * out) * sizeof *Wc), *sal = op_xmalloc((size_t)n_units * sizeof *sal);
  memcpy(Wc, W, (size_t)(m * out) * sizeof *Wc);
  bool *alive = op_xmalloc((size_t)n_units);
  int64_t *order = op_xmalloc((size_t)n_units * sizeof *order), *S = op_xmalloc((size_t)(n ? n : 1) * sizeof *S);
  size_t scratch = (size_t)(n > maxk ? n : maxk);
  double *M = op_xmalloc(scratch * scratch * sizeof *M), *Z = op_xmalloc(scratch * (size_t)out * sizeof *Z);
  for (int64_t u = 0; u < n_units; u++) alive[u] = true;
  int64_t left = n_units, removed = 0;
  double total = 0;
  int rc = 0;
  while (!rc) {
    int64_t na = 0;
    for (int64_t u = 0; u < n_units && !rc; u++) {
      if (!alive[u]) continue;
      const int64_t *cs = g.chans + g.first[u];
      int64_t k = g.first[u + 1] - g.first[u];
      if (k == 1) { /* one channel: ||w||^2 / Hinv_cc, no factorisation */
        double e = 0, h = Hinv[cs[0] * m + cs[0]];
        for (int64_t j = 0; j < out; j++) e += Wc[cs[0] * out + j] * Wc[cs[0] * out + j];
        sal[u] = h > 0 ? e / h : 0;
      } else if (k > 0) {
        rc = obs_cost(Hinv, m, Wc, out, cs, k, M, Z, &sal[u]);
      } else {
        sal[u] = 0;
      }
      order[na++] = u;
    }
    if (rc || left <= 1 || removed >= max_remove) break;
    rank_sal = sal;
    qsort(order, (size_t)na, sizeof *order, cmp_sal);
    int64_t chunk = left / 64 > 1 ? left / 64 : 1;
    if (chunk > left - 1) chunk = left - 1;
    if (chunk > max_remove - removed) chunk = max_remove - removed;
    int64_t k = 0;
    double part = 0;
    for (int64_t i = 0; i < chunk; i++) {
      int64_t u = order[i];
      for (int64_t j = g.first[u]; j < g.first[u + 1]; j++) S[k++] = g.chans[j];
      part += sal[u];
    }
    double joint = 0;
    if (k > 0 && (rc = obs_cost(Hinv, m, Wc, out, S, k, M, Z, &joint))) break;
    if (k > 0) obs_remove(Hinv, m, Wc, out, S, k, M, Z);
    double run = 0; /* the chunk's joint cost shared out in the order of the units' own costs */
    for (int64_t i = 0; i < chunk; i++) {
      int64_t u = order[i];
      run += part > 0 ? sal[u] / part : 1.0 / (double)chunk;
      score[u] = total + joint * run;
      alive[u] = false;
    }
    total += joint;
    left -= chunk;
    removed += chunk;
  }
  for (int64_t u = 0; u < n_units && !rc; u++)
    if (alive[u]) score[u] = total + sal[u];
  if (rc) op_fail(err, OP_INVALID, "the calibration moments lost positive definiteness while ranking units");
  free(Hinv), free(Wc), free(sal), free(alive), free(order), free(S), free(M), free(Z);
  free(g.first), free(g.chans);
  return rc;
}

/* ---- refit ---- */

int op_recon_refit(const op_recon_moments *s, const double *W, int64_t out, const bool *keep, bool compensate,
                   double damp, double *Wnew, op_error *err) {
  int64_t n = s->n, m = n + 1, nk = 0, nr = 0;
  int64_t *K = op_xmalloc((size_t)m * sizeof *K), *R = op_xmalloc((size_t)m * sizeof *R);
  for (int64_t c = 0; c < n; c++) {
    if (keep[c]) K[nk++] = c;
    else R[nr++] = c;
  }
  K[nk++] = n; /* the constant: the bias is always refit */
  memcpy(Wnew, W, (size_t)(m * out) * sizeof *Wnew);
  int rc = 0;
  if (compensate && nr > 0) {
    double *A = op_xmalloc((size_t)(nk * nk) * sizeof *A), *HKR = op_xmalloc((size_t)(nk * nr) * sizeof *HKR);
    double *WR = op_xmalloc((size_t)(nr * out) * sizeof *WR), *D = op_xmalloc((size_t)(nk * out) * sizeof *D);
    for (int64_t i = 0; i < nk; i++)
      for (int64_t j = 0; j < nr; j++) HKR[i * nr + j] = s->H[K[i] * m + R[j]];
    for (int64_t i = 0; i < nr; i++) memcpy(WR + i * out, W + R[i] * out, (size_t)out * sizeof *WR);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (blasint)nk, (blasint)out, (blasint)nr, 1.0, HKR, (blasint)nr,
                WR, (blasint)out, 0.0, D, (blasint)out);
    rc = -1;
    for (int tries = 0; tries < 8 && rc; tries++, damp = damp > 0 ? damp * 10 : 1e-8) {
      for (int64_t i = 0; i < nk; i++)
        for (int64_t j = 0; j < nk; j++) A[i * nk + j] = s->H[K[i] * m + K[j]];
      for (int64_t i = 0; i < nk - 1; i++) A[i * nk + i] += damp; /* channels only: the bias is free */
      rc = op_chol(A, nk) ? -1 : 0;
    }
    if (!rc) {
      op_chol_solve(A, nk, D, out);
      for (int64_t i = 0; i < nk; i++)
        for (int64_t j = 0; j < out; j++) Wnew[K[i] * out + j] += D[i * out + j];
    } else {
      op_fail(err, OP_INVALID, "the calibration moments of the kept channels are not positive definite");
    }
    free(A), free(HKR), free(WR), free(D);
  }
  for (int64_t i = 0; i < nr; i++) memset(Wnew + R[i] * out, 0, (size_t)out * sizeof *Wnew);
  free(K);
  free(R);
  return rc;
}
