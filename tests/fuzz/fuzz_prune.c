/* fuzz_prune.c - libFuzzer target: the prune passes driven by a fuzzed JSON config on a real model
 * (the BERT fixture): every plan either applies and the result saves, or is refused before any rewrite. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static uint8_t *model;
  static size_t model_size;
  if (!model) model = fuzz_fixture("bert_separate_mask_opset11/model.onnx", &model_size);
  fuzz_caps();
  fuzz_write("config.json", data, size);
  op_error err;
  op_prune_config *c = op_prune_config_new();
  if (op_prune_config_load_json(c, fuzz_path("config.json"), &err) == 0) {
    op_model *m = op_model_load_buffer(model, model_size, NULL, "bert.onnx", &err);
    if (!m) abort(); /* the fixture must load */
    op_prune_report *r = op_prune(m, c, &err);
    if (r) {
      op_free(op_prune_report_json(r));
      op_free(op_prune_report_text(r, 1));
      op_model_save(m, fuzz_path("pruned.onnx"), NULL, &err);
    }
    op_prune_report_free(r);
    op_model_free(m);
  }
  op_prune_config_free(c);
  return 0;
}
