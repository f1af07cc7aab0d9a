/* test_rows.c - which file rows samples are (src/data/rows.c): the spread order is a permutation whose
 * every prefix covers the file evenly, calibration rows taken first and evaluation rows after them are
 * disjoint, orders are reproducible from their seed, held-out rows never appear. */
#include "check.h"
#include "data/data.h"

#include <stdlib.h>

static int is_permutation(const int64_t *s, int64_t n, int64_t total) {
  char *seen = calloc((size_t)total + 1, 1);
  int ok = n == total;
  for (int64_t i = 0; ok && i < n; i++) {
    ok = s[i] >= 0 && s[i] < total && !seen[s[i]];
    if (ok) seen[s[i]] = 1;
  }
  free(seen);
  return ok;
}

/* every block of total/k consecutive rows holds at least one of the first k samples (k a power of 2 well
 * under total): a prefix is spread over the whole file */
static int prefix_spread(const int64_t *s, int64_t k, int64_t total) {
  int64_t block = (total + k - 1) / k * 2; /* at most 2x the ideal gap (positions past the file are skipped) */
  if (block > total) block = total;
  for (int64_t lo = 0; lo < total; lo += block) {
    if (lo + block > total) lo = total - block; /* the last window ends at the file's end */
    int hit = 0;
    for (int64_t i = 0; i < k && !hit; i++) hit = s[i] >= lo && s[i] < lo + block;
    if (!hit) return 0;
    if (lo + block >= total) break;
  }
  return 1;
}

static void spread_covers(void) {
  int64_t totals[] = {1, 2, 7, 100, 1866, 4096};
  for (size_t t = 0; t < sizeof totals / sizeof *totals; t++) {
    for (uint64_t seed = 0; seed < 3; seed++) {
      int64_t n, total = totals[t];
      int64_t *s = op_rows_sequence(total, OP_ORDER_SPREAD, seed, NULL, 0, &n);
      CHECK(is_permutation(s, n, total));
      for (int64_t k = 4; k * 8 <= total; k *= 2) CHECK(prefix_spread(s, k, total));
      free(s);
    }
  }
}

/* the first N and the next M of one order are never the same rows, and both are spread */
static void calibration_and_evaluation_disjoint(void) {
  int64_t n, total = 1866;
  int64_t *s = op_rows_sequence(total, OP_ORDER_SPREAD, 7, NULL, 0, &n);
  CHECK(prefix_spread(s, 64, total));
  CHECK(prefix_spread(s + 256, 64, total)); /* the evaluation rows after 256 calibration rows */
  int clash = 0;
  for (int64_t i = 0; i < 256; i++)
    for (int64_t j = 256; j < 512; j++) clash |= s[i] == s[j];
  CHECK(!clash);
  free(s);
}

static void seeded_orders(void) {
  int64_t n1, n2, n3;
  for (int o = OP_ORDER_SPREAD; o <= OP_ORDER_RANDOM; o++) {
    int64_t *a = op_rows_sequence(500, (op_sample_order)o, 1, NULL, 0, &n1);
    int64_t *b = op_rows_sequence(500, (op_sample_order)o, 1, NULL, 0, &n2);
    int64_t *c = op_rows_sequence(500, (op_sample_order)o, 2, NULL, 0, &n3);
    CHECK(is_permutation(a, n1, 500) && is_permutation(c, n3, 500));
    CHECK(n1 == n2 && memcmp(a, b, (size_t)n1 * sizeof *a) == 0);
    CHECK(memcmp(a, c, (size_t)n1 * sizeof *a) != 0);
    free(a), free(b), free(c);
  }
  int64_t *f = op_rows_sequence(10, OP_ORDER_FIRST, 9, NULL, 0, &n1);
  for (int64_t i = 0; i < n1; i++) CHECK_EQ_INT(f[i], i);
  free(f);
}

static void held_out_rows_skipped(void) {
  int64_t held[] = {3, 0, 99, 50, 3}, n;
  int64_t *s = op_rows_sequence(100, OP_ORDER_SPREAD, 0, held, 5, &n);
  CHECK_EQ_INT(n, 96);
  for (int64_t i = 0; i < n; i++) CHECK(s[i] != 3 && s[i] != 0 && s[i] != 99 && s[i] != 50);
  free(s);
  s = op_rows_sequence(4, OP_ORDER_FIRST, 0, (int64_t[]){0, 1, 2, 3}, 4, &n);
  CHECK_EQ_INT(n, 0);
  free(s);
}

static void order_names(void) {
  op_sample_order o;
  CHECK(op_sample_order_parse("spread", &o) == 0 && o == OP_ORDER_SPREAD);
  CHECK(op_sample_order_parse("first", &o) == 0 && o == OP_ORDER_FIRST);
  CHECK(op_sample_order_parse("spreed", &o) != 0);
}

int main(void) {
  spread_covers();
  calibration_and_evaluation_disjoint();
  seeded_orders();
  held_out_rows_skipped();
  order_names();
  return check_done("rows");
}
