/* parallel.h - one loop split across threads, for the passes that stream over every weight
 * (scoring, slicing): on most machines one core cannot saturate memory bandwidth. */
#ifndef OP_PARALLEL_H
#define OP_PARALLEL_H

#include <stdint.h>

typedef void (*op_range_fn)(void *ctx, int64_t lo, int64_t hi);

/* Runs fn over [0, n) split into contiguous ranges, which the caller and a pool of threads claim, and
 * returns when all are done. item_bytes is the memory one item touches: each thread gets at least
 * OP_PARALLEL_GRAIN bytes of work, so small loops run on the caller alone. fn must give the same
 * result whatever the split, so the output never depends on the machine. */
void op_parallel_for(int64_t n, int64_t item_bytes, op_range_fn fn, void *ctx);

#define OP_PARALLEL_GRAIN (512 << 10)

/* Threads a loop may use: ONNX_PRUNE_THREADS when set (1 disables threading), else the online CPUs,
 * at most 16. */
int op_thread_count(void);

#endif
