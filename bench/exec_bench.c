/* exec_bench.c MODEL DATA.npz RUNS [BATCH]: median latency of one session run of our executor on the
 * first BATCH samples of DATA (default 1), printed as "ours_ms <value>" (and the process CPU time of
 * a run, "ours_cpu_ms": with one thread, a figure that other load on the machine disturbs less) after a "kernel <name>" line
 * saying which matrix-product path ran (ONNX_PRUNE_ISA picks another). Threads: OMP_NUM_THREADS
 * (oneDNN), OPENBLAS_NUM_THREADS (ONNX_PRUNE_ISA=openblas). */
#include "onnxprune.h"
#include "exec/exec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double clock_ms(clockid_t c) {
  struct timespec ts;
  clock_gettime(c, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec * 1e-6;
}

static int cmp(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: exec_bench MODEL DATA.npz RUNS [BATCH]\n");
    return 2;
  }
  op_error err;
  op_model *m = op_model_load(argv[1], &err);
  op_session *s = m ? op_session_new(m, &err) : NULL;
  op_dataset *d = s ? op_dataset_open(argv[2], &err) : NULL;
  if (!d) {
    fprintf(stderr, "exec_bench: %s\n", err.message);
    return 2;
  }
  printf("kernel %s\n", op_gemm_kernel());
  size_t n_fused = op_session_fused_count(s);
  printf("fused epilogues %zu%s", n_fused, n_fused ? ":" : " (ONNX_PRUNE_FUSE=0, or nothing to fuse)");
  for (size_t i = 0; i < n_fused; i++) {
    const char *node;
    bool bias;
    const char *act = op_session_fused_act(s, i, &node, &bias);
    printf(" %s%s%s", bias ? "bias" : "", bias && strcmp(act, "none") ? "+" : "", strcmp(act, "none") ? act : "");
  }
  printf("\n");
  int64_t batch = argc > 4 ? atoll(argv[4]) : 1;
  size_t n_in = op_session_input_count(s), n_out = op_session_output_count(s);
  op_tensor *in = calloc(n_in, sizeof *in), *out = calloc(n_out, sizeof *out);
  if (op_dataset_batch(d, s, 0, batch, in, &err)) {
    fprintf(stderr, "exec_bench: %s\n", err.message);
    return 2;
  }
  int runs = atoi(argv[3]);
  double *t = calloc((size_t)(runs > 0 ? runs : 1), sizeof *t), *cpu = calloc((size_t)(runs > 0 ? runs : 1), sizeof *cpu);
  for (int i = runs > 1 ? -3 : 0; i < runs; i++) { /* three warm-up runs */
    double t0 = clock_ms(CLOCK_MONOTONIC), c0 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
    if (op_session_run(s, in, out, NULL, NULL, &err)) {
      fprintf(stderr, "exec_bench: %s\n", err.message);
      return 2;
    }
    if (i >= 0) t[i] = clock_ms(CLOCK_MONOTONIC) - t0, cpu[i] = clock_ms(CLOCK_PROCESS_CPUTIME_ID) - c0;
    for (size_t k = 0; k < n_out; k++) op_tensor_clear(&out[k]);
  }
  qsort(t, (size_t)runs, sizeof *t, cmp);
  qsort(cpu, (size_t)runs, sizeof *cpu, cmp);
  printf("ours_ms %.3f\nours_cpu_ms %.3f\n", t[runs / 2], cpu[runs / 2]);
  return 0;
}
