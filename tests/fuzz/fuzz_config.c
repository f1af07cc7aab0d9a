/* fuzz_config.c - libFuzzer target: JSON configs (prune and compress) are read or refused with one
 * error naming the file and the key; nesting, duplicate keys and numbers out of range never crash. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_caps();
  fuzz_write("config.json", data, size);
  op_error err;
  op_prune_config *p = op_prune_config_new();
  op_prune_config_load_json(p, fuzz_path("config.json"), &err);
  op_prune_config_free(p);
  p = op_prune_config_new();
  op_quant_config *q = op_quant_config_new();
  op_compress_config_load(fuzz_path("config.json"), p, q, &err);
  op_quant_config_free(q);
  op_prune_config_free(p);
  return 0;
}
