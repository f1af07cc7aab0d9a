/* pb.c - writes a tensor as an ONNX TensorProto file: the output_N.pb of ONNX's test data layout
 * (dims, data_type, name, raw_data little-endian), through a temporary file and a rename. */
#include "data/data.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int op_pb_write(const char *path, const char *name, const op_tensor *t, op_error *err) {
  Onnx__TensorProto p = ONNX__TENSOR_PROTO__INIT;
  int64_t dims[OP_MAX_DIMS];
  memcpy(dims, t->dims, (size_t)t->rank * sizeof *dims);
  p.n_dims = (size_t)t->rank;
  p.dims = dims;
  p.has_data_type = 1;
  p.data_type = t->dtype;
  p.name = (char *)name;
  p.has_raw_data = 1;
  p.raw_data.len = t->nbytes;
  p.raw_data.data = t->data;
  size_t n = onnx__tensor_proto__get_packed_size(&p);
  uint8_t *buf = op_xmalloc(n ? n : 1);
  onnx__tensor_proto__pack(&p, buf);
  char tmp[PATH_MAX];
  FILE *f = op_temp_open(path, tmp, err);
  if (!f) {
    free(buf);
    return -1;
  }
  bool ok = fwrite(buf, 1, n, f) == n;
  free(buf);
  if (op_temp_close(f, tmp, !ok, path, err)) return -1;
  if (rename(tmp, path) != 0) {
    unlink(tmp);
    return op_fail(err, OP_IO, "%s: %s", path, strerror(errno));
  }
  return 0;
}
