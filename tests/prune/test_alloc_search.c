/* test_alloc_search.c - the allocation search's climb (src/prune/alloc_search.c) on scores with a known
 * best: it reaches the best allocation by moves within a kind, keeps the totals, never goes below a
 * block's floor, tries the curves' most promising move first (the kinds in turn), never scores an allocation twice, stops at
 * its budget; and the judged error's average over outputs. */
#include "prune/alloc_search.h"

#include "check.h"

#include <math.h>
#include <stdlib.h>

typedef struct quad {
  const int64_t *best; /* the allocation of lowest score */
  size_t nb;
  int calls;
  int64_t seen[64][4]; /* every allocation scored, to check none twice */
} quad;

/* score = sum (r - best)^2: one minimum, at best */
static int quad_score(void *user, const int64_t *r, double *score, op_error *err) {
  (void)err;
  quad *q = user;
  *score = 0;
  for (size_t i = 0; i < q->nb; i++) *score += (double)((r[i] - q->best[i]) * (r[i] - q->best[i]));
  if (q->calls < 64)
    for (size_t i = 0; i < q->nb; i++) q->seen[q->calls][i] = r[i];
  q->calls++;
  return 0;
}

/* The climb from b's counts on quad_score towards `best`; its return code. */
static int climb(const op_move_block *b, size_t nb, int64_t budget, const int64_t *best, quad *q, op_alloc_trials *t,
                 size_t *bi) {
  *q = (quad){best, nb, 0, {{0}}};
  op_error err = {0};
  return op_alloc_climb(b, nb, budget, quad_score, q, t, bi, &err);
}

static bool scored_twice(const quad *q) {
  for (int a = 0; a < q->calls && a < 64; a++)
    for (int b = a + 1; b < q->calls && b < 64; b++)
      if (!memcmp(q->seen[a], q->seen[b], q->nb * sizeof(int64_t))) return true;
  return false;
}

/* Two head blocks of 4 and two neuron blocks of 8 (step 2): the best moves heads 2+2 -> 1+3 and neurons
 * 4+4 -> 6+2 (two moves). */
static void test_reaches_best(void) {
  op_move_block b[4] = {{0, 0, 4, 2, 1, 1, 1, NULL}, {1, 0, 4, 2, 1, 1, 1, NULL},
                        {0, 1, 8, 4, 2, 2, 1, NULL}, {1, 1, 8, 4, 2, 2, 1, NULL}};
  int64_t best[4] = {1, 3, 6, 2};
  quad q;
  op_alloc_trials t;
  size_t bi;
  CHECK(climb(b, 4, 20, best, &q, &t, &bi) == 0);
  for (int i = 0; i < 4; i++) CHECK_EQ_INT(t.v[bi].removed[i], best[i]);
  CHECK(t.v[bi].score == 0 && t.v[bi].accepted && t.v[0].accepted);
  CHECK(!scored_twice(&q));
  CHECK_EQ_INT(q.calls, (int)t.n);
  for (size_t k = 0; k < t.n; k++) { /* totals per kind stay; floors hold */
    CHECK_EQ_INT(t.v[k].removed[0] + t.v[k].removed[1], 4);
    CHECK_EQ_INT(t.v[k].removed[2] + t.v[k].removed[3], 8);
    for (int i = 0; i < 4; i++) CHECK(t.v[k].removed[i] >= 0 && b[i].n - t.v[k].removed[i] >= b[i].min_keep);
  }
  op_alloc_trials_free(&t);
}

/* The best lies beyond a block's floor: the climb stops at the floor (one unit kept). */
static void test_floor(void) {
  op_move_block b[2] = {{0, 0, 4, 2, 1, 1, 1, NULL}, {1, 0, 4, 2, 1, 1, 1, NULL}};
  int64_t best[2] = {4, 0}; /* would empty block 0 */
  quad q;
  op_alloc_trials t;
  size_t bi;
  CHECK(climb(b, 2, 20, best, &q, &t, &bi) == 0);
  CHECK_EQ_INT(t.v[bi].removed[0], 3);
  CHECK_EQ_INT(t.v[bi].removed[1], 1);
  op_alloc_trials_free(&t);
}

/* The budget counts moves scored after the start; 0 scores the start only. */
static void test_budget(void) {
  op_move_block b[3] = {{0, 0, 8, 4, 1, 1, 1, NULL}, {1, 0, 8, 4, 1, 1, 1, NULL}, {2, 0, 8, 4, 1, 1, 1, NULL}};
  int64_t best[3] = {7, 1, 4};
  for (int64_t budget = 0; budget < 4; budget++) {
    quad q;
    op_alloc_trials t;
    size_t bi;
    CHECK(climb(b, 3, budget, best, &q, &t, &bi) == 0);
    CHECK_EQ_INT(q.calls, budget + 1);
    CHECK_EQ_INT(t.n, budget + 1);
    op_alloc_trials_free(&t);
  }
}

/* Curves order the moves: the move whose predicted cost is least is scored first. Block 1's next head
 * costs little and block 0's last removed head gave back much: 1 -> 0 first. */
static void test_curve_order(void) {
  const double c0[5] = {0, 1, 10, 11, 12}, c1[5] = {0, 1, 2, 2.1, 50};
  op_move_block b[2] = {{0, 0, 4, 2, 1, 1, 1, c0}, {1, 0, 4, 2, 1, 1, 1, c1}};
  int64_t best[2] = {0, 4}; /* unreachable past the floor: the climb goes 2+2 -> 1+3 */
  quad q;
  op_alloc_trials t;
  size_t bi;
  CHECK(climb(b, 2, 1, best, &q, &t, &bi) == 0);
  CHECK_EQ_INT(t.n, 2);
  CHECK_EQ_INT(t.v[1].from, 1);
  CHECK_EQ_INT(t.v[1].to, 0);
  CHECK_EQ_INT(t.v[1].removed[0], 1);
  CHECK_EQ_INT(t.v[1].removed[1], 3);
  op_alloc_trials_free(&t);
}

/* The kinds take turns: neuron moves the curves rate harmless do not crowd out the heads under a small
 * budget. The start is best, so no move is accepted and the first two moves are scored. */
static void test_kinds_alternate(void) {
  const double h[5] = {0, 1, 5, 50, 500}, f[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
  op_move_block b[4] = {{0, 0, 4, 2, 1, 1, 1, h}, {1, 0, 4, 2, 1, 1, 1, h},
                        {0, 1, 8, 4, 2, 2, 1, f}, {1, 1, 8, 4, 2, 2, 1, f}};
  int64_t best[4] = {2, 2, 4, 4};
  quad q;
  op_alloc_trials t;
  size_t bi;
  CHECK(climb(b, 4, 3, best, &q, &t, &bi) == 0);
  CHECK_EQ_INT(t.n, 4);
  CHECK_EQ_INT(bi, 0);
  CHECK_EQ_INT(b[t.v[1].from].kind, 1); /* promise 0 against 45 for a head */
  CHECK_EQ_INT(b[t.v[2].from].kind, 0);
  CHECK_EQ_INT(b[t.v[3].from].kind, 1);
  op_alloc_trials_free(&t);
}

/* A move that gives back more cost than it removes (a target would be missed) is never made. */
static void test_cost_kept(void) {
  op_move_block b[2] = {{0, 1, 8, 4, 2, 2, 1.0, NULL}, {1, 1, 8, 4, 2, 2, 3.0, NULL}};
  int64_t best[2] = {6, 2}; /* block 1's units cost 3: moving them to block 0 would keep more cost */
  quad q;
  op_alloc_trials t;
  size_t bi;
  CHECK(climb(b, 2, 10, best, &q, &t, &bi) == 0);
  for (size_t k = 0; k < t.n; k++) CHECK(1.0 * (double)t.v[k].removed[0] + 3.0 * (double)t.v[k].removed[1] >= 16);
  op_alloc_trials_free(&t);
}

static void test_output_error(void) {
  op_output_error e[3] = {{1, 4}, {0, 0}, {3, 4}}; /* an output without energy does not count */
  CHECK(fabs(op_output_error_score(e, 3) - 0.5) < 1e-12);
  CHECK(op_output_error_score(e + 1, 1) == 0);
}

static int fail_score(void *user, const int64_t *r, double *score, op_error *err) {
  (void)user, (void)r, (void)score;
  err->code = OP_INVALID;
  return -1;
}

static void test_failure(void) {
  op_move_block b[2] = {{0, 0, 4, 2, 1, 1, 1, NULL}, {1, 0, 4, 2, 1, 1, 1, NULL}};
  op_alloc_trials t;
  size_t bi;
  op_error err = {0};
  CHECK(op_alloc_climb(b, 2, 4, fail_score, NULL, &t, &bi, &err) == -1);
  CHECK(t.n == 0 && t.v == NULL);
}

int main(void) {
  test_reaches_best();
  test_floor();
  test_budget();
  test_curve_order();
  test_cost_kept();
  test_kinds_alternate();
  test_output_error();
  test_failure();
  return check_done("alloc_search");
}
