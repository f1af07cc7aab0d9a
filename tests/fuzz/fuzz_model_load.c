/* fuzz_model_load.c - libFuzzer target: model bytes plus an external data file either load as a model
 * that analyses, prunes and saves cleanly, or are refused with an error; nothing may crash, leak or read
 * out of bounds. Input layout: a 2-byte little-endian length n, n bytes written to w.bin in the
 * model's folder (the seeds' external data location), then the model.
 * Build: meson setup build-fuzz -Dfuzz=true (clang), then build-fuzz/tests/fuzz_model_load CORPUS */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_caps();
  size_t n = size >= 2 ? (size_t)data[0] | (size_t)data[1] << 8 : 0;
  if (size < 2 || n > size - 2) n = 0;
  const uint8_t *ext = data + (size >= 2 ? 2 : 0), *model = ext + n;
  size_t model_size = size - (size_t)(model - data);
  fuzz_write("w.bin", ext, n);
  op_error err;
  op_model *m = op_model_load_buffer(model, model_size, fuzz_dir(), "fuzz.onnx", &err);
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
  if (r) {
    op_free(op_prune_report_json(r));
    op_free(op_prune_report_text(r, 1));
    op_save_options so = {.external_data = n & 1, .external_min_bytes = 64};
    op_model_save(m, fuzz_path("out.onnx"), &so, &err);
  }
  op_prune_report_free(r);
  op_prune_config_free(c);
  op_model_free(m);
  return 0;
}
