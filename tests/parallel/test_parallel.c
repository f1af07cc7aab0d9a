/* test_parallel.c - the fork-join loop covers every index exactly once, splits only loops worth it,
 * and honours ONNX_PRUNE_THREADS. */
#include "check.h"
#include "parallel/parallel.h"

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

int main(void) {
  bool once;
  setenv("ONNX_PRUNE_THREADS", "4", 1);
  CHECK_EQ_INT(op_thread_count(), 4);
  CHECK_EQ_INT(run(1000, OP_PARALLEL_GRAIN / 10, &once), 4); /* 100 grains of work: all 4 threads */
  CHECK(once);
  CHECK_EQ_INT(run(1001, OP_PARALLEL_GRAIN, &once), 4); /* uneven split */
  CHECK(once);
  CHECK_EQ_INT(run(3, OP_PARALLEL_GRAIN, &once), 3); /* fewer items than threads */
  CHECK(once);
  CHECK_EQ_INT(run(1000, 64, &once), 1); /* 64 KB in all: not worth a thread */
  CHECK(once);
  CHECK_EQ_INT(run(0, 64, &once), 0);
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
