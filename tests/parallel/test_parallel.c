/* test_parallel.c - the fork-join loop covers every index exactly once (back to back, nested, and from
 * two callers at once), splits only loops worth it, and honours ONNX_PRUNE_THREADS. */
#include "check.h"
#include "parallel/parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

typedef struct visits {
  int *count;
  atomic_int calls;
} visits;

static void visit(void *ctx, int64_t lo, int64_t hi) {
  visits *v = ctx;
  atomic_fetch_add(&v->calls, 1);
  for (int64_t i = lo; i < hi; i++) v->count[i]++; /* ranges are disjoint: no two threads share an index */
}

/* Runs the loop and returns how many ranges it was split into; *once: every index seen exactly once. */
static int run(int64_t n, int64_t item_bytes, bool *once) {
  visits v = {calloc((size_t)(n ? n : 1), sizeof(int)), 0};
  op_parallel_for(n, item_bytes, visit, &v);
  *once = true;
  for (int64_t i = 0; i < n; i++) *once &= v.count[i] == 1;
  free(v.count);
  return atomic_load(&v.calls);
}

/* A loop whose every range starts a loop of its own: that one runs on its caller (one range). */
static atomic_int inner_ranges, inner_bad;
static void outer(void *ctx, int64_t lo, int64_t hi) {
  (void)ctx;
  for (int64_t i = lo; i < hi; i++) {
    bool once;
    atomic_fetch_add(&inner_ranges, run(100, OP_PARALLEL_GRAIN, &once));
    if (!once) atomic_fetch_add(&inner_bad, 1);
  }
}

/* Many loops back to back from one caller: a pool thread that woke late for one loop never runs a
 * range of the next with the first one's context. */
static void *many(void *arg) {
  int *bad = arg;
  for (int r = 0; r < 2000; r++) {
    bool once;
    int calls = run(37 + r % 50, OP_PARALLEL_GRAIN, &once);
    if (!once || calls < 1) (*bad)++;
  }
  return NULL;
}

int main(void) {
  bool once;
  setenv("ONNX_PRUNE_THREADS", "4", 1);
  CHECK_EQ_INT(op_thread_count(), 4);
  /* 100 grains of work: cut into up to 4 ranges per thread, which the threads claim */
  int calls = run(1000, OP_PARALLEL_GRAIN / 10, &once);
  CHECK(calls > 1 && calls <= 16);
  CHECK(once);
  calls = run(1001, OP_PARALLEL_GRAIN, &once); /* uneven split */
  CHECK(calls > 1 && calls <= 16);
  CHECK(once);
  CHECK_EQ_INT(run(3, OP_PARALLEL_GRAIN, &once), 3); /* fewer items than threads */
  CHECK(once);
  CHECK_EQ_INT(run(1000, 64, &once), 1); /* 64 KB in all: not worth a thread */
  CHECK(once);
  CHECK_EQ_INT(run(0, 64, &once), 0);
  visits v = {calloc(8, sizeof(int)), 0};
  op_parallel_for(8, OP_PARALLEL_GRAIN, outer, &v);
  CHECK_EQ_INT(atomic_load(&inner_bad), 0);
  CHECK(atomic_load(&inner_ranges) >= 8 && atomic_load(&inner_ranges) <= 8 * 16);
  free(v.count);
  int bad[2] = {0, 0};
  pthread_t t;
  CHECK(pthread_create(&t, NULL, many, &bad[0]) == 0);
  many(&bad[1]); /* two callers at once: one of them runs its loops alone */
  pthread_join(t, NULL);
  CHECK_EQ_INT(bad[0] + bad[1], 0);
  setenv("ONNX_PRUNE_THREADS", "1", 1);
  CHECK_EQ_INT(run(1000, OP_PARALLEL_GRAIN, &once), 1);
  CHECK(once);
  setenv("ONNX_PRUNE_THREADS", "0", 1);
  CHECK_EQ_INT(op_thread_count(), 1);
  setenv("ONNX_PRUNE_THREADS", "1000", 1);
  CHECK_EQ_INT(op_thread_count(), 16);
  setenv("ONNX_PRUNE_THREADS", "3", 1);
  CHECK_EQ_INT(op_thread_count(), 3);
  unsetenv("ONNX_PRUNE_THREADS");
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  CHECK_EQ_INT(op_thread_count(), online < 1 ? 1 : online > 16 ? 16 : online);
  return check_done("parallel");
}
