/* parallel.c - a fork-join loop over contiguous ranges, on a pool of sleeping threads. The range is cut
 * into chunks that threads claim one at a time, the caller too, and the caller waits only for chunks
 * already claimed: on a loaded machine, a pool thread that does not get a core in time simply claims
 * nothing, where a fixed split would make the caller wait a scheduler slice for it. Pool threads sleep
 * on a condition variable between loops (they never spin), so they take no core from the BLAS's own
 * threads. One loop at a time: a loop started while another runs (another session, or a loop inside
 * a chunk) runs on its caller alone. */
#include "parallel/parallel.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <unistd.h>

#define MAX_THREADS 16
#define CHUNKS_PER_THREAD 4 /* finer than one per thread, so a late thread's share is taken by others */

int op_thread_count(void) {
  const char *env = getenv("ONNX_PRUNE_THREADS");
  long n = env && *env ? strtol(env, NULL, 10) : sysconf(_SC_NPROCESSORS_ONLN);
  return n < 1 ? 1 : n > MAX_THREADS ? MAX_THREADS : (int)n;
}

/* The loop in flight. A claim is a ticket (generation << 32 | chunk): a thread that woke for an
 * earlier loop fails to claim from a later one, so it never runs one loop's chunk with another's fn. */
static struct {
  pthread_once_t once;
  pthread_mutex_t busy; /* held by the caller of the loop in flight */
  pthread_mutex_t mu;
  pthread_cond_t wake;
  int workers;
  uint32_t gen;
  op_range_fn fn;
  void *ctx;
  int64_t n, chunks;
  atomic_uint_fast64_t ticket;
  atomic_int_fast64_t done; /* chunks finished */
} P = {.once = PTHREAD_ONCE_INIT, .busy = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER,
       .wake = PTHREAD_COND_INITIALIZER};

/* Claims and runs chunks of loop `gen` until none is left (or a later loop has started). */
static void run_chunks(uint32_t gen, op_range_fn fn, void *ctx, int64_t n, int64_t chunks) {
  uint_fast64_t t = atomic_load(&P.ticket);
  while ((uint32_t)(t >> 32) == gen && (int64_t)(t & 0xffffffffu) < chunks) {
    if (!atomic_compare_exchange_weak(&P.ticket, &t, t + 1)) continue; /* t reloaded */
    int64_t c = (int64_t)(t & 0xffffffffu);
    fn(ctx, n * c / chunks, n * (c + 1) / chunks);
    atomic_fetch_add(&P.done, 1);
    t = atomic_load(&P.ticket);
  }
}

static void *worker(void *arg) {
  (void)arg;
  uint32_t seen = 0;
  for (;;) {
    pthread_mutex_lock(&P.mu);
    while (P.gen == seen) pthread_cond_wait(&P.wake, &P.mu);
    seen = P.gen;
    op_range_fn fn = P.fn;
    void *ctx = P.ctx;
    int64_t n = P.n, chunks = P.chunks;
    pthread_mutex_unlock(&P.mu);
    run_chunks(seen, fn, ctx, n, chunks);
  }
  return NULL;
}

static void pool_start(void) {
  int want = op_thread_count() - 1;
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  for (int i = 0; i < want; i++) {
    pthread_t t;
    if (pthread_create(&t, &attr, worker, NULL) == 0) P.workers++;
  }
  pthread_attr_destroy(&attr);
}

void op_parallel_for(int64_t n, int64_t item_bytes, op_range_fn fn, void *ctx) {
  if (n <= 0) return;
  int64_t per_thread = item_bytes > 0 ? (OP_PARALLEL_GRAIN + item_bytes - 1) / item_bytes : n;
  int64_t t = n / (per_thread > 0 ? per_thread : 1);
  int threads = op_thread_count();
  if (t < threads) threads = t < 1 ? 1 : (int)t;
  int64_t chunks = (int64_t)threads * CHUNKS_PER_THREAD;
  if (chunks > n) chunks = n;
  if (threads > 1) pthread_once(&P.once, pool_start);
  if (threads == 1 || P.workers == 0 || pthread_mutex_trylock(&P.busy)) {
    fn(ctx, 0, n); /* small, no pool, or a loop already in flight: on the caller alone */
    return;
  }
  pthread_mutex_lock(&P.mu);
  uint32_t gen = ++P.gen ? P.gen : ++P.gen; /* 0 is the workers' "seen nothing yet" */
  P.fn = fn, P.ctx = ctx, P.n = n, P.chunks = chunks;
  atomic_store(&P.done, 0);
  atomic_store(&P.ticket, (uint_fast64_t)gen << 32);
  pthread_cond_broadcast(&P.wake);
  pthread_mutex_unlock(&P.mu);
  run_chunks(gen, fn, ctx, n, chunks);
  /* only chunks another thread claimed are left: it is running them */
  while (atomic_load(&P.done) < chunks) sched_yield();
  pthread_mutex_unlock(&P.busy);
}
