/* fuzz_model_load.c - libFuzzer target: any bytes either load as a model that analyses, prunes and
 * saves cleanly, or are refused with an error; nothing may crash, leak or read out of bounds.
 * Build: meson setup build-fuzz -Dfuzz=true (clang), then build-fuzz/tests/fuzz_model_load CORPUS */
#include "onnxprune.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  op_error err;
  op_model *m = op_model_load_buffer(data, size, NULL, "fuzz.onnx", &err);
  if (!m) return 0;
  op_analysis *a = op_analyze(m, &err);
  if (a) {
    op_free(op_analysis_table(a));
    op_free(op_analysis_json(a));
    op_analysis_free(a);
  }
  op_prune_config *c = op_prune_config_new();
  op_prune_config_set(c, "head_sparsity", "0.5", &err);
  op_prune_config_set(c, "ffn_sparsity", "0.5", &err);
  op_prune_report *r = op_prune(m, c, &err);
  if (r) op_free(op_prune_report_json(r));
  op_prune_report_free(r);
  op_prune_config_free(c);
  op_model_free(m);
  return 0;
}
