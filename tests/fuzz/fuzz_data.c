/* fuzz_data.c - libFuzzer target: the data readers. The first byte picks the reader: a .npz archive,
 * a .npy array or an ONNX TensorProto (.pb), each written to a file and opened as a data set, as
 * `--data` does; every input either loads or is refused, within the memory budget (zip bombs too). */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1) return 0;
  fuzz_caps();
  static const char *names[] = {"data.npz", "input_ids.npy", "input_0.pb"};
  const char *name = names[data[0] % 3];
  fuzz_write(name, data + 1, size - 1);
  op_error err;
  op_dataset *d = op_dataset_open(fuzz_path(name), &err);
  if (d) {
    op_dataset_fill(d, "attention_mask=1", &err);
    op_dataset_array(d, "input_ids");
  }
  op_dataset_free(d);
  return 0;
}
