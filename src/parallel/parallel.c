/* parallel.c - a fork-join loop over contiguous ranges with plain pthreads. Threads are created per
 * call: the loops this serves each move megabytes, so creation cost (tens of microseconds) does not
 * show, and there is no pool to tear down or to share with the BLAS threads. */
#include "parallel/parallel.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 16

int op_thread_count(void) {
  const char *env = getenv("ONNX_PRUNE_THREADS");
  long n = env && *env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

typedef struct range_job {
  op_range_fn fn;
  void *ctx;
  int64_t lo, hi;
} range_job;

static void *run_job(void *arg) {
  range_job *j = arg;
  j->fn(j->ctx, j->lo, j->hi);
  return NULL;
}

void op_parallel_for(int64_t n, int64_t item_bytes, op_range_fn fn, void *ctx) {
  if (n <= 0) return;
  int64_t per_thread = item_bytes > 0 ? (OP_PARALLEL_GRAIN + item_bytes - 1) / item_bytes : n;
  int64_t t = n / (per_thread > 0 ? per_thread : 1);
  int threads = op_thread_count();
  if (t < threads) threads = t < 1 ? 1 : (int)t;
  if (threads == 1) {
    fn(ctx, 0, n);
    return;
  }
  range_job jobs[MAX_THREADS];
  pthread_t tid[MAX_THREADS];
  bool started[MAX_THREADS] = {false};
  for (int i = 0; i < threads; i++) jobs[i] = (range_job){fn, ctx, n * i / threads, n * (i + 1) / threads};
  for (int i = 1; i < threads; i++) started[i] = pthread_create(&tid[i], NULL, run_job, &jobs[i]) == 0;
  fn(ctx, jobs[0].lo, jobs[0].hi);
  for (int i = 1; i < threads; i++) {
    if (started[i])
      pthread_join(tid[i], NULL);
    else
      run_job(&jobs[i]); /* no thread to be had: the caller does the range itself */
  }
}
