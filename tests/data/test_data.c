/* test_data.c - data readers in every type: .npy arrays of each numpy dtype the executor takes,
 * TensorProtos in typed storage (float16/bfloat16/small integers packed in int32_data as the ONNX spec
 * says, uint32/uint64 in uint64_data) and in raw_data, and .npz writing (bfloat16 widened to float32).
 * Usage: test_data TMPDIR */
#include "check.h"
#include "data/data.h"
#include "exec/exec.h"
#include "files/files.h"
#include "model/model.h"

#include <stdio.h>
#include <stdlib.h>

static op_error err;

/* A v1 .npy image of n elements of es bytes. */
static uint8_t *npy(const char *descr, const char *shape, const void *data, size_t nbytes, size_t *size) {
  char h[256];
  int len = snprintf(h, sizeof h, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }", descr, shape);
  size_t hlen = (size_t)len + 1, pad = (64 - (10 + hlen) % 64) % 64;
  hlen += pad;
  *size = 10 + hlen + nbytes;
  uint8_t *b = malloc(*size);
  memcpy(b, "\x93NUMPY\x01\x00", 8);
  b[8] = (uint8_t)hlen, b[9] = (uint8_t)(hlen >> 8);
  memcpy(b + 10, h, (size_t)len);
  memset(b + 10 + len, ' ', pad);
  b[10 + hlen - 1] = '\n';
  memcpy(b + 10 + hlen, data, nbytes);
  return b;
}

static void test_npy_reads_every_dtype(void) {
  static const struct {
    const char *descr;
    int32_t dtype;
    size_t es;
  } cases[] = {{"<f2", 10, 2}, {"<f4", 1, 4}, {"<f8", 11, 8}, {"|i1", 3, 1}, {"|u1", 2, 1}, {"<i2", 5, 2}, {"<u2", 4, 2},
               {"<i4", 6, 4}, {"<u4", 12, 4}, {"<i8", 7, 8}, {"<u8", 13, 8}, {"|b1", 9, 1}};
  uint8_t bytes[24];
  for (size_t i = 0; i < sizeof bytes; i++) bytes[i] = (uint8_t)(i * 37 + 1);
  for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
    size_t n;
    uint8_t *b = npy(cases[c].descr, "(3,)", bytes, 3 * cases[c].es, &n);
    op_tensor t;
    CHECK_EQ_INT(op_npy_parse(b, n, "x.npy", &t, &err), 0);
    CHECK_EQ_INT(t.dtype, cases[c].dtype);
    CHECK(t.rank == 1 && t.dims[0] == 3 && t.nbytes == 3 * cases[c].es);
    CHECK(t.data && memcmp(t.data, bytes, t.nbytes) == 0); /* the bytes as they are: little-endian */
    CHECK(op_dtype_descr(cases[c].dtype) && strcmp(op_dtype_descr(cases[c].dtype), cases[c].descr) == 0);
    op_tensor_clear(&t);
    free(b);
  }
}

/* The bug: "'<f2' is not supported" for every float16 array. */
static void test_npy_float16_array_is_read(void) {
  uint16_t h[2] = {0x3e00, 0xc000}; /* 1.5, -2 */
  size_t n;
  uint8_t *b = npy("<f2", "(1, 2)", h, sizeof h, &n);
  op_tensor t;
  CHECK_EQ_INT(op_npy_parse(b, n, "half.npy", &t, &err), 0);
  CHECK(t.dtype == 10 && t.rank == 2 && t.dims[1] == 2);
  CHECK(t.data && op_f16_to_f32(((uint16_t *)t.data)[0]) == 1.5f && op_f16_to_f32(((uint16_t *)t.data)[1]) == -2.f);
  op_tensor_clear(&t);
  free(b);
}

static void test_npy_refuses_other_dtypes_by_name(void) {
  const char *bad[] = {">f4", "<c8", "<M8", "|S3"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    size_t n;
    uint8_t *b = npy(bad[i], "(1,)", "\0\0\0\0\0\0\0\0", 8, &n);
    op_tensor t;
    CHECK(op_npy_parse(b, n, "x.npy", &t, &err) != 0);
    CHECK_CONTAINS(err.message, bad[i]);
    free(b);
  }
}

static Onnx__TensorProto *proto(int32_t dt, int64_t *dims, size_t rank) {
  Onnx__TensorProto *t = calloc(1, sizeof *t);
  onnx__tensor_proto__init(t);
  t->data_type = dt, t->has_data_type = 1;
  t->dims = dims, t->n_dims = rank;
  t->name = "t";
  return t;
}

static void test_pb_typed_storage_of_every_type(void) {
  int64_t dims[1] = {3};
  op_xt x;
  /* float16 and bfloat16: the bits of each element in int32_data */
  int32_t halves[3] = {0x3c00, 0xc000, 0x7bff};
  Onnx__TensorProto *t = proto(10, dims, 1);
  t->int32_data = halves, t->n_int32_data = 3;
  CHECK_EQ_INT(op_xt_from_proto(&x, t, "f16.pb", &err), 0);
  CHECK(x.dtype == 10 && op_f16_to_f32(((uint16_t *)x.data)[0]) == 1.f && op_f16_to_f32(((uint16_t *)x.data)[2]) == 65504.f);
  op_xt_release(&x);
  int32_t bf[3] = {0x3f80, 0x4049, 0xc000};
  t->data_type = 16, t->int32_data = bf;
  CHECK_EQ_INT(op_xt_from_proto(&x, t, "bf16.pb", &err), 0);
  CHECK(x.dtype == 16 && op_bf16_to_f32(((uint16_t *)x.data)[1]) == 3.140625f);
  op_xt_release(&x);
  /* int8 / int16 values, sign included; uint8, uint16, bool */
  int32_t small[3] = {-5, 127, -128};
  t->data_type = 3, t->int32_data = small;
  CHECK_EQ_INT(op_xt_from_proto(&x, t, "i8.pb", &err), 0);
  CHECK(((int8_t *)x.data)[0] == -5 && ((int8_t *)x.data)[2] == -128);
  op_xt_release(&x);
  int32_t shorts[3] = {-32768, 1, 32767};
  t->data_type = 5, t->int32_data = shorts;
  CHECK_EQ_INT(op_xt_from_proto(&x, t, "i16.pb", &err), 0);
  CHECK(((int16_t *)x.data)[0] == -32768 && ((int16_t *)x.data)[2] == 32767);
  op_xt_release(&x);
  int32_t ushorts[3] = {65535, 0, 7};
  t->data_type = 4, t->int32_data = ushorts;
  CHECK_EQ_INT(op_xt_from_proto(&x, t, "u16.pb", &err), 0);
  CHECK(((uint16_t *)x.data)[0] == 65535 && ((uint16_t *)x.data)[2] == 7);
  op_xt_release(&x);
  int32_t bytes[3] = {255, 0, 1};
  t->data_type = 2, t->int32_data = bytes;
  CHECK_EQ_INT(op_xt_from_proto(&x, t, "u8.pb", &err), 0);
  CHECK(((uint8_t *)x.data)[0] == 255 && ((uint8_t *)x.data)[2] == 1);
  op_xt_release(&x);
  int32_t bools[3] = {1, 0, 1};
  t->data_type = 9, t->int32_data = bools;
  CHECK_EQ_INT(op_xt_from_proto(&x, t, "b.pb", &err), 0);
  CHECK(x.dtype == 9 && ((uint8_t *)x.data)[0] == 1 && ((uint8_t *)x.data)[1] == 0);
  op_xt_release(&x);
  /* uint32 and uint64 in uint64_data */
  uint64_t wide[3] = {0xffffffffu, 0, UINT64_MAX};
  t->int32_data = NULL, t->n_int32_data = 0;
  t->uint64_data = wide, t->n_uint64_data = 3;
  t->data_type = 12;
  wide[2] = 5;
  CHECK_EQ_INT(op_xt_from_proto(&x, t, "u32.pb", &err), 0);
  CHECK(((uint32_t *)x.data)[0] == 0xffffffffu && ((uint32_t *)x.data)[2] == 5);
  op_xt_release(&x);
  wide[2] = UINT64_MAX;
  t->data_type = 13;
  CHECK_EQ_INT(op_xt_from_proto(&x, t, "u64.pb", &err), 0);
  CHECK(((uint64_t *)x.data)[2] == UINT64_MAX);
  op_xt_release(&x);
  /* float64 in double_data */
  double d[3] = {0.1, -2, 1e300};
  t->uint64_data = NULL, t->n_uint64_data = 0;
  t->double_data = d, t->n_double_data = 3;
  t->data_type = 11;
  CHECK_EQ_INT(op_xt_from_proto(&x, t, "f64.pb", &err), 0);
  CHECK(((double *)x.data)[0] == 0.1 && ((double *)x.data)[2] == 1e300);
  op_xt_release(&x);
  /* a count that does not match the dims is an error, not a short read */
  t->n_double_data = 2;
  CHECK(op_xt_from_proto(&x, t, "short.pb", &err) != 0);
  CHECK_CONTAINS(err.message, "short.pb");
  /* raw_data: little-endian bytes of the type */
  uint16_t raw[3] = {0x3c00, 0x4000, 0x4200};
  t->double_data = NULL, t->n_double_data = 0;
  t->raw_data.data = (uint8_t *)raw, t->raw_data.len = sizeof raw, t->has_raw_data = 1;
  t->data_type = 10;
  CHECK_EQ_INT(op_xt_from_proto(&x, t, "raw.pb", &err), 0);
  CHECK(op_f16_to_f32(((uint16_t *)x.data)[2]) == 3.f);
  op_xt_release(&x);
  free(t);
}

static void test_npz_write_keeps_types_and_widens_bfloat16(const char *tmp) {
  char path[4096];
  snprintf(path, sizeof path, "%s/types_written.npz", tmp);
  uint16_t bf[2] = {0x3f80, 0xc049}, hf[2] = {0x3c00, 0x7bff};
  uint64_t u[2] = {UINT64_MAX, 1};
  op_tensor arrays[3] = {{.dtype = 16, .rank = 1, .dims = {2}, .data = bf, .nbytes = 4},
                         {.dtype = 10, .rank = 1, .dims = {2}, .data = hf, .nbytes = 4},
                         {.dtype = 13, .rank = 1, .dims = {2}, .data = u, .nbytes = 16}};
  const char *names[3] = {"b", "h", "u"};
  CHECK_EQ_INT(op_npz_write(path, names, arrays, 3, &err), 0);
  size_t n;
  uint8_t *buf = (uint8_t *)op_read_file(path, &n, &err);
  op_named_vec got = {0};
  CHECK(buf && op_npz_parse(buf, n, path, &got, &err) == 0);
  CHECK_EQ_INT(got.n, 3);
  if (got.n == 3) {
    CHECK(got.v[0].t.dtype == 1 && ((float *)got.v[0].t.data)[0] == 1.f && ((float *)got.v[0].t.data)[1] == -3.140625f);
    CHECK(got.v[1].t.dtype == 10 && memcmp(got.v[1].t.data, hf, 4) == 0);
    CHECK(got.v[2].t.dtype == 13 && memcmp(got.v[2].t.data, u, 16) == 0);
  }
  for (size_t i = 0; i < got.n; i++) free(got.v[i].name), op_tensor_clear(&got.v[i].t);
  free(got.v);
  op_read_file_free(buf);
  remove(path);
}

/* Whole-file reads and arrays read from .npy and .npz take their bytes from the memory budget's running
 * total and give them back when freed: what a dataset held is back after op_dataset_free. */
static void test_budget_running_total_returns(const char *tmp) {
  float v[6] = {1, 2, 3, 4, 5, 6};
  size_t n;
  uint8_t *b = npy("<f4", "(2, 3)", v, sizeof v, &n);
  char path[512];
  snprintf(path, sizeof path, "%s/x.npy", tmp);
  FILE *f = fopen(path, "wb");
  CHECK(f && fwrite(b, 1, n, f) == n);
  if (f) fclose(f);
  free(b);
  uint64_t before = op_budget_held();
  size_t size;
  char *text = op_read_file(path, &size, &err);
  CHECK(text && size == n);
  CHECK(op_budget_held() == before + n + 1); /* the buffer and its NUL */
  op_read_file_free(text);
  CHECK(op_budget_held() == before);
  op_dataset *d = op_dataset_open(path, &err);
  CHECK(d != NULL);
  CHECK(op_budget_held() >= before + sizeof v); /* the array stays counted while the dataset lives */
  op_dataset_free(d);
  CHECK(op_budget_held() == before);
  const char *names[1] = {"x"};
  op_tensor arr = {.dtype = 1, .rank = 2, .dims = {2, 3}, .data = v, .nbytes = sizeof v};
  snprintf(path, sizeof path, "%s/x.npz", tmp);
  CHECK_EQ_INT(op_npz_write(path, names, &arr, 1, &err), 0);
  d = op_dataset_open(path, &err);
  CHECK(d != NULL);
  CHECK(op_budget_held() >= before + sizeof v);
  op_dataset_free(d);
  CHECK(op_budget_held() == before);
  remove(path);
  snprintf(path, sizeof path, "%s/x.npy", tmp);
  remove(path);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_data TMPDIR\n");
    return 2;
  }
  test_npy_reads_every_dtype();
  test_npy_float16_array_is_read();
  test_npy_refuses_other_dtypes_by_name();
  test_pb_typed_storage_of_every_type();
  test_npz_write_keeps_types_and_widens_bfloat16(argv[1]);
  test_budget_running_total_returns(argv[1]);
  return check_done("data");
}
