/* test_recon.c - the reconstruction math (src/prune/recon.c) against numpy: the second moments, the
 * greedy OBS ranking (numpy's greedy by least-squares residuals), the refit of the kept rows and the
 * bias, the fit to another target; an exactly representable channel is refit without error, and OBS
 * removes the redundant head where L2 would remove the small unique one. */
#include "prune/recon.h"

#include "check.h"
#include "files/files.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#define ROWS 12
#define N 4
#define OUT 2

static bool close_rel(double a, double b, double rel) { return fabs(a - b) <= rel * (fabs(b) > 1 ? fabs(b) : 1); }

/* numpy: X[r, c] = sin(0.9 r (c+1) + c) + 0.3 cos(0.5 r + c^2) */
static void make_x(float *x) {
  for (int r = 0; r < ROWS; r++)
    for (int c = 0; c < N; c++) x[r * N + c] = (float)(sin(0.9 * r * (c + 1) + c) + 0.3 * cos(0.5 * r + c * c));
}

/* W (rows per channel) then the bias */
static const double W0[(N + 1) * OUT] = {0.5, -1.0, 0.25, 2.0, -1.5, 0.75, 0.3, 0.1, 0.1, -0.2};

static void test_moments(const op_recon_moments *mo) {
  /* numpy: Xa.T @ Xa with Xa = [X 1] (X rounded to float32 here, hence 1e-6) */
  static const double h0[] = {7.182573503299486, 0.168072302683173, -1.1403804018484351, -0.5694845756876201,
                              1.5685260307388937};
  static const double h4[] = {1.5685260307388937, 1.1061393435116091, 0.5931616684198722, -0.16604446722867738, 12.0};
  for (int j = 0; j <= N; j++) {
    CHECK(close_rel(mo->H[0 * (N + 1) + j], h0[j], 1e-6));
    CHECK(close_rel(mo->H[4 * (N + 1) + j], h4[j], 1e-6));
    CHECK(mo->H[j * (N + 1) + 0] == mo->H[0 * (N + 1) + j]); /* symmetric */
  }
}

static void test_rank_matches_numpy_greedy(const op_recon_moments *mo) {
  /* numpy greedy: remove the channel whose removal (rest refit by lstsq, with the bias) leaves the least
   * residual; score = residual once it and those before it are gone: 3, 0, 2, then 1 alone left */
  static const double want[N] = {8.871296169993128, 61.34792296022653, 34.129681091174334, 0.5144856159891937};
  int64_t unit_of[N] = {0, 1, 2, 3};
  double score[N];
  op_error err;
  double damp = op_recon_damp(mo, 1e-12);
  CHECK(op_recon_rank(mo, W0, OUT, unit_of, N, N, damp, score, &err) == 0);
  for (int u = 0; u < N; u++) CHECK(close_rel(score[u], want[u], 1e-4));
  /* stopping after 1 removal: channel 3 keeps its score, the others rank above it */
  double part[N];
  CHECK(op_recon_rank(mo, W0, OUT, unit_of, N, 1, damp, part, &err) == 0);
  CHECK(close_rel(part[3], want[3], 1e-4));
  for (int u = 0; u < 3; u++) CHECK(part[u] > part[3]);
}

static void test_refit_matches_numpy(const op_recon_moments *mo) {
  /* numpy lstsq of [X0 X3 1] onto [X 1] W: rows 0, 3 and the bias; residual 41.5667... */
  static const double want[] = {0.8159747703108678, -1.1574899425608123, 0.9790829441192465, -0.3243229173480836,
                                0.01699463721825989, 0.03614337834002912};
  bool keep[N] = {true, false, false, true};
  double Wn[(N + 1) * OUT], dW[(N + 1) * OUT];
  op_error err;
  CHECK(op_recon_refit(mo, W0, OUT, keep, true, op_recon_damp(mo, 1e-12), Wn, &err) == 0);
  for (int j = 0; j < OUT; j++) {
    CHECK(close_rel(Wn[0 * OUT + j], want[0 + j], 1e-4));
    CHECK(close_rel(Wn[3 * OUT + j], want[2 + j], 1e-4));
    CHECK(close_rel(Wn[4 * OUT + j], want[4 + j], 1e-4));
    CHECK(Wn[1 * OUT + j] == 0 && Wn[2 * OUT + j] == 0);
  }
  for (int i = 0; i < (N + 1) * OUT; i++) dW[i] = Wn[i] - W0[i];
  CHECK(close_rel(op_recon_error(mo, dW, OUT), 41.56675392690621, 1e-4));
  /* without compensation the removed rows are zeroed and nothing else moves */
  CHECK(op_recon_refit(mo, W0, OUT, keep, false, 0, Wn, &err) == 0);
  for (int i = 0; i < (N + 1) * OUT; i++) CHECK(Wn[i] == ((i / OUT == 1 || i / OUT == 2) ? 0 : W0[i]));
}

static void test_fit_identity(const op_recon_moments *mo) {
  /* the target x W itself: the fit returns W whatever the ridge, with a free or a fixed bias */
  double C[(N + 1) * OUT], Ws[(N + 1) * OUT];
  for (int i = 0; i <= N; i++)
    for (int j = 0; j < OUT; j++) {
      C[i * OUT + j] = 0;
      for (int k = 0; k <= N; k++) C[i * OUT + j] += mo->H[i * (N + 1) + k] * W0[k * OUT + j];
    }
  op_error err;
  for (int free_bias = 0; free_bias < 2; free_bias++) {
    CHECK(op_recon_fit(mo, C, W0, OUT, op_recon_damp(mo, 0.1), free_bias, Ws, &err) == 0);
    for (int i = 0; i < (N + 1) * OUT; i++) CHECK(fabs(Ws[i] - W0[i]) < 1e-9);
  }
  double yy = 0;
  for (int i = 0; i < (N + 1) * OUT; i++) yy += W0[i] * C[i];
  CHECK(fabs(op_recon_residual(mo, C, yy, W0, OUT)) < 1e-9 * yy);
}

/* Channel 1 = 2 x0 - 0.5 x2 + 0.25: removing it and refitting reproduces the output exactly, the
 * constant carrying the 0.25 into the bias. */
static void test_refit_exact(void) {
  enum { R = 10, n = 3 };
  float x[R * n];
  for (int r = 0; r < R; r++) {
    x[r * n + 0] = (float)(r % 4) - 1.5f;
    x[r * n + 2] = (float)((r * 7) % 5) * 0.5f;
    x[r * n + 1] = 2 * x[r * n + 0] - 0.5f * x[r * n + 2] + 0.25f;
  }
  static const double W[(n + 1) * 2] = {1.0, -2.0, 0.5, 1.5, -1.0, 0.25, 0.2, -0.1};
  op_recon_moments mo;
  op_recon_moments_init(&mo, n);
  op_recon_moments_add(&mo, x, R);
  bool keep[n] = {true, false, true};
  double Wn[(n + 1) * 2];
  op_error err;
  CHECK(op_recon_refit(&mo, W, 2, keep, true, op_recon_damp(&mo, 1e-12), Wn, &err) == 0);
  /* analytically: row0 += 2 w1, row2 -= 0.5 w1, bias += 0.25 w1 */
  static const double want[(n + 1) * 2] = {2.0, 1.0, 0, 0, -1.25, -0.5, 0.325, 0.275};
  for (int i = 0; i < (n + 1) * 2; i++) CHECK(fabs(Wn[i] - want[i]) < 1e-6);
  for (int r = 0; r < R; r++)
    for (int j = 0; j < 2; j++) {
      double y = W[n * 2 + j], y2 = Wn[n * 2 + j];
      for (int c = 0; c < n; c++) y += x[r * n + c] * W[c * 2 + j], y2 += x[r * n + c] * Wn[c * 2 + j];
      CHECK(fabs(y - y2) < 1e-6);
    }
  op_recon_moments_free(&mo);
}

/* Three heads of two channels: head 1 repeats head 0's context (times 3) with large weights, head 2
 * is unique with small weights. L2 would remove head 2; OBS removes head 0 or 1 at no cost. */
static void test_obs_picks_redundant_head(void) {
  enum { R = 16, n = 6 };
  float x[R * n];
  for (int r = 0; r < R; r++) {
    x[r * n + 0] = (float)sin(0.7 * r);
    x[r * n + 1] = (float)cos(1.3 * r);
    x[r * n + 2] = 3 * x[r * n + 0];
    x[r * n + 3] = 3 * x[r * n + 1];
    x[r * n + 4] = (float)sin(2.1 * r + 1);
    x[r * n + 5] = (float)cos(0.4 * r * r);
  }
  static const double W[(n + 1) * 2] = {2, 1, -1, 2, 1.5, -2, 2, 1, 0.1, -0.05, 0.05, 0.1, 0, 0};
  int64_t unit_of[n] = {0, 0, 1, 1, 2, 2};
  op_recon_moments mo;
  op_recon_moments_init(&mo, n);
  op_recon_moments_add(&mo, x, R);
  double score[3];
  op_error err;
  CHECK(op_recon_rank(&mo, W, 2, unit_of, 3, 2, op_recon_damp(&mo, 1e-9), score, &err) == 0);
  double energy = op_recon_error(&mo, W, 2);
  int first = score[0] <= score[1] ? 0 : 1;
  CHECK(score[first] < score[2]);
  CHECK(score[first] < 1e-6 * energy);
  CHECK(score[2] > 1e-4 * energy); /* the unique head costs something once its twin is gone */
  op_recon_moments_free(&mo);
}

static void test_chol(void) {
  double A[4] = {4, 2, 2, 3}, B[2] = {2, 5}; /* solution: x = (-0.5, 2) */
  CHECK(op_chol(A, 2) == 0);
  op_chol_solve(A, 2, B, 1);
  CHECK(fabs(B[0] + 0.5) < 1e-12 && fabs(B[1] - 2) < 1e-12);
  double S[4] = {1, 2, 2, 1}; /* indefinite */
  CHECK(op_chol(S, 2) > 0);
}

/* ---- counts from error curves (recon_alloc.c) ---- */

/* The next removal goes where it adds the least error per cost saved; no block loses its last kept
 * unit; a unit that saves twice the cost may add twice the error. */
static void test_curve_allocate(void) {
  static const double ea[] = {0, 1, 2, 10}, eb[] = {0, 3, 4, 5};
  op_curve_block b[2] = {{.n = 3, .err = ea, .unit_cost = 1, .min_keep = 1},
                         {.n = 3, .err = eb, .unit_cost = 1, .min_keep = 1}};
  CHECK(op_curve_allocate(b, 2, 3) == 3);
  CHECK_EQ_INT(b[0].removed, 2); /* 1 + 1 before 3 */
  CHECK_EQ_INT(b[1].removed, 1);
  CHECK(op_curve_allocate(b, 2, 100) == 4); /* floors: each keeps one */
  CHECK_EQ_INT(b[0].removed, 2);
  CHECK_EQ_INT(b[1].removed, 2);
  static const double lin[] = {0, 1, 2, 3};
  op_curve_block c[2] = {{.n = 3, .err = lin, .unit_cost = 2, .min_keep = 1},
                         {.n = 3, .err = lin, .unit_cost = 1, .min_keep = 1}};
  CHECK(op_curve_allocate(c, 2, 2) == 2);
  CHECK_EQ_INT(c[0].removed, 1); /* 0.5 error per unit of cost against 1 */
  CHECK_EQ_INT(c[1].removed, 0);
  c[0].err = ea; /* cheaper per cost, but it would remove 2 where 1 is left: the unit that fits goes */
  CHECK(op_curve_allocate(c, 2, 1) == 1);
  CHECK_EQ_INT(c[0].removed, 0);
  CHECK_EQ_INT(c[1].removed, 1);
  CHECK(op_curve_allocate(c, 2, 0) == 0);
  CHECK_EQ_INT(c[0].removed + c[1].removed, 0);
}

/* ---- pooled rows (pooled.c) ---- */

/* A [2, 3, C] stream pooled at token 0 (axis 1): rows 0 and 3; at -1: rows 2 and 5. A projection whose
 * rows come seq-first ([3, 2, C], as torch's attention computes them) finds its pooled rows by bytes. */
static void test_pooled_rows(void) {
  int64_t first = 0, last = -1, dims[3] = {2, 3, 2};
  op_pooling pl = {.found = true, .axis = 1, .idx = &first, .n_idx = 1};
  bool want[6] = {true, false, false, true, false, false};
  for (int64_t r = 0; r < 6; r++) CHECK(op_pooling_row(&pl, dims, 3, r) == want[r]);
  pl.idx = &last;
  CHECK(op_pooling_row(&pl, dims, 3, 2) && op_pooling_row(&pl, dims, 3, 5) && !op_pooling_row(&pl, dims, 3, 0));
  float stream[6][2], seqfirst[6][2];
  for (int b = 0; b < 2; b++)
    for (int t = 0; t < 3; t++) {
      stream[b * 3 + t][0] = seqfirst[t * 2 + b][0] = (float)(b + 1);
      stream[b * 3 + t][1] = seqfirst[t * 2 + b][1] = (float)(10 * t);
    }
  bool found[6];
  CHECK_EQ_INT(op_rows_in((const uint8_t *)seqfirst, 6, (const uint8_t *)stream, want, 6, sizeof stream[0], found), 2);
  for (int r = 0; r < 6; r++) CHECK(found[r] == (r < 2)); /* token 0 of both samples come first */
}

/* Memory budget: a block's H is held in the running total until freed, refused by name when what is
 * left does not hold it, and every byte is given back. */
static void test_moments_budget(void) {
  uint64_t held0 = op_budget_held(), budget0 = op_max_memory();
  op_error err;
  op_recon_moments a, b;
  op_recon_moments_init(&a, 31); /* 32 x 32 doubles (H) + 31 x 31 floats (a chunk's part): 12036 bytes */
  op_recon_moments_init(&b, 31);
  char text[32];
  snprintf(text, sizeof text, "%llu", (unsigned long long)(held0 + 20 * 1024));
  CHECK(op_set_max_memory(text, &err) == 0);
  CHECK(op_recon_moments_budget(&a, "m.onnx: a", &err) == 0);
  CHECK_EQ_INT(op_budget_held(), held0 + 12036);
  CHECK(op_recon_moments_budget(&b, "m.onnx: b", &err) == -1); /* fits alone, not beside a */
  CHECK_CONTAINS(err.message, "m.onnx: b: 11.8 KiB exceeds what the memory budget of 20 KiB has left");
  op_recon_moments_free(&a);
  CHECK(op_recon_moments_budget(&b, "m.onnx: b", &err) == 0);
  op_recon_moments_free(&b);
  CHECK_EQ_INT(op_budget_held(), held0);
  snprintf(text, sizeof text, "%llu", (unsigned long long)budget0);
  CHECK(op_set_max_memory(text, &err) == 0);
}

/* Products in float32 chunks summed in float64 (recon.c): H and the cross moments over 700 rows (three
 * chunks) against float64 sums, within 1e-5 of the entries' scale; out > n takes two output panels. */
static void test_chunked_products(void) {
  enum { R = 700, NN = 40, OO = 50 };
  float *x = malloc(sizeof(float) * R * NN), *y = malloc(sizeof(float) * R * OO);
  for (int r = 0; r < R; r++) {
    for (int c = 0; c < NN; c++) x[r * NN + c] = (float)(sin(0.37 * r * (c + 1) + c) + 0.5 + 0.01 * c);
    for (int j = 0; j < OO; j++) y[r * OO + j] = (float)cos(0.11 * r * (j + 2) - j);
  }
  op_recon_moments mo;
  op_recon_moments_init(&mo, NN);
  op_recon_moments_add(&mo, x, 300);
  op_recon_moments_add(&mo, x + 300 * NN, R - 300);
  double *C = calloc((NN + 1) * OO, sizeof *C);
  op_recon_cross_add(&mo, C, OO, x, y, R);
  double worst_h = 0, worst_c = 0;
  for (int i = 0; i <= NN; i++) {
    for (int j = 0; j <= NN; j++) {
      double h = 0, si = 0, sj = 0;
      for (int r = 0; r < R; r++) {
        double a = i < NN ? x[r * NN + i] : 1, b = j < NN ? x[r * NN + j] : 1;
        h += a * b, si += a * a, sj += b * b;
      }
      worst_h = fmax(worst_h, fabs(mo.H[i * (NN + 1) + j] - h) / sqrt(si * sj));
    }
    for (int j = 0; j < OO; j++) {
      double c = 0, si = 0, sj = 0;
      for (int r = 0; r < R; r++) {
        double a = i < NN ? x[r * NN + i] : 1;
        c += a * y[r * OO + j], si += a * a, sj += (double)y[r * OO + j] * y[r * OO + j];
      }
      worst_c = fmax(worst_c, fabs(C[i * OO + j] - c) / sqrt(si * sj));
    }
  }
  CHECK(worst_h < 1e-5 && worst_h > 0); /* > 0: the float32 products really ran */
  CHECK(worst_c < 1e-5);
  CHECK(mo.H[NN * (NN + 1) + NN] == R);
  free(C);
  op_recon_moments_free(&mo);
  free(x);
  free(y);
}

int main(void) {
  float x[ROWS * N];
  make_x(x);
  op_recon_moments mo;
  op_recon_moments_init(&mo, N);
  op_recon_moments_add(&mo, x, 5); /* in two calls: batches add up */
  op_recon_moments_add(&mo, x + 5 * N, ROWS - 5);
  test_moments(&mo);
  test_rank_matches_numpy_greedy(&mo);
  test_refit_matches_numpy(&mo);
  test_fit_identity(&mo);
  op_recon_moments_free(&mo);
  test_refit_exact();
  test_chunked_products();
  test_obs_picks_redundant_head();
  test_chol();
  test_curve_allocate();
  test_pooled_rows();
  test_moments_budget();
  return check_done("recon");
}
