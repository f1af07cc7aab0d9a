/* fuzz_exec.c - libFuzzer target: small fuzzed models run through the executor on generated inputs
 * (dynamic axes 2, at most 4096 elements each) and, when that succeeds, are quantised on the same data;
 * every kernel either computes or refuses (bad shapes, out-of-range axes, sizes over the 256 MiB budget). */
#include "fuzz_util.h"
#include "model/model.h"

#define MAX_ELEMS 4096
#define MAX_QUANT_NODES 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  fuzz_caps();
  op_error err;
  op_model *m = op_model_load_buffer(data, size, NULL, "fuzz.onnx", &err);
  if (!m) return 0;
  op_session *s = op_session_new(m, &err);
  size_t n_in = s ? op_session_input_count(s) : 0, n_out = s ? op_session_output_count(s) : 0;
  if (!s || n_in > 16 || n_out > 16) {
    op_session_free(s);
    op_model_free(m);
    return 0;
  }
  op_tensor in[16] = {{0}}, out[16] = {{0}};
  const char *names[16];
  bool ok = true;
  for (size_t i = 0; i < n_in && ok; i++) {
    op_tensor *t = &in[i];
    op_session_input_info(s, i, &t->dtype, &t->rank, t->dims);
    if (!t->dtype) t->dtype = 1;
    if (t->rank < 0) t->rank = 2;
    int64_t n = 1;
    for (int d = 0; d < t->rank && ok; d++) {
      if (t->dims[d] < 0) t->dims[d] = 2;
      if (t->dims[d] > MAX_ELEMS || (n *= t->dims[d]) > MAX_ELEMS) ok = false;
    }
    if (!ok) break;
    size_t es = t->dtype == 7 || t->dtype == 11 ? 8 : t->dtype == 6 || t->dtype == 1 ? 4 : t->dtype == 5 ? 2 : 1;
    t->nbytes = (size_t)n * es;
    t->data = calloc(t->nbytes ? t->nbytes : 1, 1);
    for (size_t b = 0; b < t->nbytes; b++) ((uint8_t *)t->data)[b] = (uint8_t)(b % es == 0 ? b / es % 2 : 0);
    names[i] = op_session_input_name(s, i);
  }
  if (ok && op_session_run(s, in, out, NULL, NULL, &err) == 0) {
    for (size_t i = 0; i < n_out; i++) op_tensor_clear(&out[i]);
    /* quantise on the same inputs, written as a data set (small graphs only, with the quickest method:
     * one input must stay well under the time limit in the sanitizer build) */
    if (n_in > 0 && m->proto->graph->n_node <= MAX_QUANT_NODES && op_npz_write(fuzz_path("data.npz"), names, in, n_in, &err) == 0) {
      op_dataset *d = op_dataset_open(fuzz_path("data.npz"), &err);
      op_quant_config *q = op_quant_config_new();
      op_quant_config_set(q, "calibration_samples", "2", &err);
      op_quant_config_set(q, "eval_samples", "1", &err);
      op_quant_config_set(q, "batch", "1", &err);
      op_quant_config_set(q, "method", "abs_max", &err);
      op_quant_config_set(q, "op_types", "MatMul,Gemm,Gather,AttentionMatMul,Add", &err);
      op_quant_report *r = d ? op_quantize(m, d, q, &err) : NULL;
      if (r) {
        op_free(op_quant_report_json(r));
        op_free(op_quant_report_text(r));
        op_model_save(m, fuzz_path("quantized.onnx"), NULL, &err);
      }
      op_quant_report_free(r);
      op_quant_config_free(q);
      op_dataset_free(d);
    }
  }
  for (size_t i = 0; i < n_in; i++) free(in[i].data);
  op_session_free(s);
  op_model_free(m);
  return 0;
}
