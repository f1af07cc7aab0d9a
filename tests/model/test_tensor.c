/* test_tensor.c - element counts, size validation, typed-to-raw conversion and integer reads. */
#include "check.h"
#include "model/model.h"

#include <stdlib.h>

int main(void) {
  int64_t dims[2] = {3, 4};
  Onnx__TensorProto *t = op_tensor_new("w", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, dims, 2);
  op_error err;
  CHECK_EQ_INT(op_tensor_numel(t), 12);
  CHECK_EQ_INT(t->raw_data.len, 48);
  CHECK(op_tensor_validate(t, "m", &err) == 0);
  t->raw_data.len = 44; /* raw_data length disagrees with dims */
  CHECK(op_tensor_validate(t, "m.onnx", &err) == -1);
  CHECK_CONTAINS(err.message, "m.onnx: tensor 'w': raw_data has 44 bytes but dims and type need 48");
  t->raw_data.len = 48;
  t->dims[0] = -1;
  CHECK(op_tensor_validate(t, "m", &err) == -1);
  CHECK_CONTAINS(err.message, "invalid dims");
  op_tensor_free(t);

  /* typed int64 storage is readable and converts to raw */
  int64_t one = 3;
  t = op_tensor_new("s", ONNX__TENSOR_PROTO__DATA_TYPE__INT64, &one, 1);
  free(t->raw_data.data);
  t->raw_data.data = NULL;
  t->raw_data.len = 0;
  t->has_raw_data = 0;
  t->n_int64_data = 3;
  t->int64_data = malloc(3 * sizeof(int64_t));
  t->int64_data[0] = 5, t->int64_data[1] = -1, t->int64_data[2] = 64;
  CHECK(op_tensor_validate(t, "m", &err) == 0);
  int64_t v = 0;
  CHECK(op_tensor_get_int(t, 2, &v) && v == 64);
  CHECK(!op_tensor_get_int(t, 3, &v));
  CHECK(op_tensor_to_raw(t) == 0);
  CHECK(t->has_raw_data && t->raw_data.len == 24 && t->n_int64_data == 0);
  CHECK(op_tensor_get_int(t, 1, &v) && v == -1);
  t->n_int64_data = 0;
  op_tensor_free(t);

  /* float typed data -> raw */
  t = op_tensor_new("f", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, &one, 1);
  free(t->raw_data.data);
  t->has_raw_data = 0;
  t->raw_data.data = NULL;
  t->raw_data.len = 0;
  t->n_float_data = 3;
  t->float_data = malloc(3 * sizeof(float));
  t->float_data[0] = 1.5f, t->float_data[1] = 2.5f, t->float_data[2] = -3.f;
  float *f = op_tensor_f32(t);
  CHECK(f && f[0] == 1.5f && f[2] == -3.f);
  op_tensor_free(t);
  return check_done("tensor");
}
