/* dataset.c - input data for runs: a .npz, a folder of NAME.npy, or ONNX test data (input_N.pb in a
 * folder or in test_data_set_*), all held as arrays whose first axis is the sample axis; constants for
 * inputs the data lacks (--fill); batches cut to the session's inputs with their types and shapes
 * checked, so a mismatch is reported with the input's name and both shapes. */
#include "data/data.h"
#include "exec/exec.h"
#include "files/files.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct fill {
  char *name;
  double value;
} fill;

struct op_dataset {
  char *path;
  op_named_vec arrays;
  bool positional; /* ONNX test data: input_N matches the N-th graph input when names are absent */
  OP_VEC(fill) fills;
};

void op_dataset_free(op_dataset *d) {
  if (!d) return;
  for (size_t i = 0; i < d->arrays.n; i++) {
    free(d->arrays.v[i].name);
    op_tensor_clear(&d->arrays.v[i].t);
  }
  for (size_t i = 0; i < d->fills.n; i++) free(d->fills.v[i].name);
  free(d->arrays.v);
  free(d->fills.v);
  free(d->path);
  free(d);
}

static bool ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && strcmp(s + a - b, suffix) == 0;
}

static int load_npy_file(op_dataset *d, const char *path, const char *name, op_error *err) {
  size_t n;
  uint8_t *buf = (uint8_t *)op_read_file(path, &n, err);
  if (!buf) return -1;
  op_named a = {0};
  int rc = op_npy_parse(buf, n, path, &a.t, err);
  free(buf);
  if (rc) return -1;
  a.name = op_xstrdup(name);
  OP_VEC_PUSH(d->arrays, a);
  return 0;
}

static int load_pb_file(op_dataset *d, const char *path, int index, op_error *err) {
  size_t n;
  uint8_t *buf = (uint8_t *)op_read_file(path, &n, err);
  if (!buf) return -1;
  Onnx__TensorProto *t = onnx__tensor_proto__unpack(NULL, n, buf);
  free(buf);
  if (!t) return op_fail(err, OP_PARSE, "%s: not a valid ONNX TensorProto", path);
  op_xt x = {0};
  int rc = op_xt_from_proto(&x, t, path, err);
  char name[64];
  snprintf(name, sizeof name, "input_%d", index);
  op_named a = {.name = op_xstrdup(t->name && t->name[0] ? t->name : name)};
  op_tensor_free(t);
  if (rc) {
    free(a.name);
    return -1;
  }
  op_xt_to_tensor(&a.t, &x); /* the dataset owns the storage from here */
  OP_VEC_PUSH(d->arrays, a);
  return 0;
}

/* Loads input_0.pb, input_1.pb, ... of one folder; returns how many. */
static int load_pb_dir(op_dataset *d, const char *dir, op_error *err) {
  int count = 0;
  for (;; count++) {
    char p[8448];
    if (snprintf(p, sizeof p, "%s/input_%d.pb", dir, count) >= (int)sizeof p) return op_fail(err, OP_IO, "%s: path too long", dir);
    struct stat st;
    if (stat(p, &st) != 0) break;
    if (load_pb_file(d, p, count, err)) return -1;
  }
  return count;
}

/* Appends the rows of b to a (same name, type and trailing shape), for several test_data_set_*. */
static int concat_rows(op_tensor *a, const op_tensor *b, const char *name, const char *set, op_error *err) {
  bool same = a->dtype == b->dtype && a->rank == b->rank && a->rank >= 1;
  for (int i = 1; same && i < a->rank; i++) same = a->dims[i] == b->dims[i];
  if (!same) return op_fail(err, OP_ARG, "%s: input '%s': this test data set differs in type or shape from the first", set, name);
  if (op_budget_check(a->nbytes + b->nbytes, set, err)) return -1;
  a->data = op_xrealloc(a->data, a->nbytes + b->nbytes);
  memcpy((char *)a->data + a->nbytes, b->data, b->nbytes);
  a->nbytes += b->nbytes;
  a->dims[0] += b->dims[0];
  return 0;
}

static int cmp_str(const void *x, const void *y) { return strcmp(*(char *const *)x, *(char *const *)y); }

static int load_dir(op_dataset *d, const char *path, op_error *err) {
  DIR *dir = opendir(path);
  if (!dir) return op_fail(err, OP_IO, "%s: %s", path, strerror(errno));
  OP_VEC(char *) names = {0};
  for (struct dirent *e; (e = readdir(dir));)
    if (e->d_name[0] != '.') OP_VEC_PUSH(names, op_xstrdup(e->d_name));
  closedir(dir);
  if (names.n) qsort(names.v, names.n, sizeof *names.v, cmp_str);
  int rc = 0, sets = 0;
  for (size_t i = 0; i < names.n && !rc; i++) {
    char p[8448];
    if (snprintf(p, sizeof p, "%s/%s", path, names.v[i]) >= (int)sizeof p) {
      rc = op_fail(err, OP_IO, "%s: path too long", path);
      break;
    }
    if (strncmp(names.v[i], "test_data_set_", 14) == 0) {
      op_dataset part = {0};
      int n = load_pb_dir(&part, p, err);
      if (n < 0) rc = -1;
      for (int k = 0; k < n && !rc; k++) {
        if (sets == 0) {
          OP_VEC_PUSH(d->arrays, part.arrays.v[k]);
          part.arrays.v[k].t.data = NULL, part.arrays.v[k].name = NULL;
        } else if ((size_t)k < d->arrays.n) {
          rc = concat_rows(&d->arrays.v[k].t, &part.arrays.v[k].t, d->arrays.v[k].name, p, err);
        }
      }
      for (size_t k = 0; k < part.arrays.n; k++) {
        free(part.arrays.v[k].name);
        op_tensor_clear(&part.arrays.v[k].t);
      }
      free(part.arrays.v);
      sets++;
      d->positional = true;
    }
  }
  if (!rc && !sets) {
    int n = load_pb_dir(d, path, err);
    if (n < 0) rc = -1;
    else if (n > 0) d->positional = true;
  }
  for (size_t i = 0; i < names.n && !rc && !d->positional; i++) {
    if (!ends_with(names.v[i], ".npy")) continue;
    char p[8448], nm[256];
    if (snprintf(p, sizeof p, "%s/%s", path, names.v[i]) >= (int)sizeof p) {
      rc = op_fail(err, OP_IO, "%s: path too long", path);
      break;
    }
    snprintf(nm, sizeof nm, "%.*s", (int)strlen(names.v[i]) - 4, names.v[i]);
    rc = load_npy_file(d, p, nm, err);
  }
  for (size_t i = 0; i < names.n; i++) free(names.v[i]);
  free(names.v);
  if (!rc && d->arrays.n == 0)
    rc = op_fail(err, OP_ARG, "%s: no input data found (expected NAME.npy files, input_N.pb or test_data_set_*/)", path);
  return rc;
}

op_dataset *op_dataset_open(const char *path, op_error *err) {
  op_dataset *d = op_xcalloc(1, sizeof *d);
  d->path = op_xstrdup(path);
  struct stat st;
  int rc;
  if (stat(path, &st) != 0) {
    rc = op_fail(err, OP_IO, "%s: %s", path, strerror(errno));
  } else if (S_ISDIR(st.st_mode)) {
    rc = load_dir(d, path, err);
  } else if (ends_with(path, ".npy")) {
    const char *base = strrchr(path, '/') ? strrchr(path, '/') + 1 : path;
    char nm[256];
    snprintf(nm, sizeof nm, "%.*s", (int)strlen(base) - 4, base);
    rc = load_npy_file(d, path, nm, err);
  } else if (ends_with(path, ".pb")) {
    rc = load_pb_file(d, path, 0, err);
    d->positional = true;
  } else {
    size_t n;
    uint8_t *buf = (uint8_t *)op_read_file(path, &n, err);
    rc = buf ? op_npz_parse(buf, n, path, &d->arrays, err) : -1;
    free(buf);
    if (!rc && d->arrays.n == 0) rc = op_fail(err, OP_ARG, "%s: the archive holds no arrays", path);
  }
  if (rc) {
    op_dataset_free(d);
    return NULL;
  }
  return d;
}

int op_dataset_fill(op_dataset *d, const char *spec, op_error *err) {
  const char *eq = strchr(spec, '=');
  char *end = NULL;
  double v = eq ? strtod(eq + 1, &end) : 0;
  if (!eq || eq == spec || !end || end == eq + 1 || *end)
    return op_fail(err, OP_ARG, "--fill: '%s' is not NAME=NUMBER", spec);
  fill f = {op_xmalloc((size_t)(eq - spec) + 1), v};
  memcpy(f.name, spec, (size_t)(eq - spec));
  f.name[eq - spec] = 0;
  OP_VEC_PUSH(d->fills, f);
  return 0;
}

const op_tensor *op_dataset_array(const op_dataset *d, const char *name) {
  for (size_t i = 0; i < d->arrays.n; i++)
    if (strcmp(d->arrays.v[i].name, name) == 0) return &d->arrays.v[i].t;
  return NULL;
}

/* The data array for session input i, by name (or by position in ONNX test data). */
static const op_named *input_array(const op_dataset *d, const op_session *s, size_t i) {
  const char *name = op_session_input_name(s, i);
  for (size_t k = 0; k < d->arrays.n; k++)
    if (strcmp(d->arrays.v[k].name, name) == 0) return &d->arrays.v[k];
  if (d->positional) {
    char pos[32];
    snprintf(pos, sizeof pos, "input_%zu", i);
    for (size_t k = 0; k < d->arrays.n; k++)
      if (strcmp(d->arrays.v[k].name, pos) == 0) return &d->arrays.v[k];
  }
  return NULL;
}

static const fill *input_fill(const op_dataset *d, const char *name) {
  for (size_t k = d->fills.n; k-- > 0;)
    if (strcmp(d->fills.v[k].name, name) == 0) return &d->fills.v[k];
  return NULL;
}

/* Checks a data array against the model's input; an empty array is refused too. */
static int check_array(const op_dataset *d, const op_session *s, size_t i, const op_tensor *t, op_error *err) {
  if (op_check_input(s, i, t, 1, d->path, err)) return -1;
  if (t->dims[0] == 0) return op_fail(err, OP_ARG, "%s: input '%s': the array is empty", d->path, op_session_input_name(s, i));
  return 0;
}

int64_t op_dataset_samples(const op_dataset *d, const op_session *s, op_error *err) {
  int64_t n = -1;
  const char *first = NULL;
  for (size_t i = 0; i < op_session_input_count(s); i++) {
    const char *name = op_session_input_name(s, i);
    const op_named *a = input_array(d, s, i);
    if (!a) {
      if (input_fill(d, name)) continue;
      char have[512] = "";
      size_t o = 0;
      for (size_t k = 0; k < d->arrays.n && o < sizeof have; k++)
        o += (size_t)snprintf(have + o, sizeof have - o, "%s%s", k ? ", " : "", d->arrays.v[k].name);
      op_fail(err, OP_ARG, "%s: input '%s' is not in the data (it has: %s); add it or use --fill %s=VALUE", d->path, name,
              have, name);
      return -1;
    }
    if (check_array(d, s, i, &a->t, err)) return -1;
    if (n >= 0 && a->t.dims[0] != n) {
      op_fail(err, OP_ARG, "%s: inputs disagree on the number of samples: '%s' has %lld, '%s' has %lld", d->path, first,
              (long long)n, name, (long long)a->t.dims[0]);
      return -1;
    }
    n = a->t.dims[0];
    first = name;
  }
  if (n < 0) op_fail(err, OP_ARG, "%s: no model input is backed by data, so the number of samples is unknown", d->path);
  return n;
}

/* One --fill value in the input's type (the one conversion Cast makes). */
static void put_value(void *p, int32_t dt, double v) {
  op_xt one = {.dtype = ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE, .numel = 1, .data = &v}, conv;
  op_error e;
  if (op_xt_convert(&conv, &one, dt, &e)) return; /* the input's type was checked numeric by the caller */
  memcpy(p, conv.data, op_dtype_size(dt));
  op_xt_release(&conv);
}

int op_dataset_batch(const op_dataset *d, const op_session *s, int64_t start, int64_t count, op_tensor *inputs,
                     op_error *err) {
  size_t n_in = op_session_input_count(s);
  memset(inputs, 0, n_in * sizeof *inputs);
  const op_tensor *ref = NULL; /* a data-backed input to borrow dynamic axes from for filled ones */
  for (size_t i = 0; i < n_in && !ref; i++) {
    const op_named *a = input_array(d, s, i);
    if (a) ref = &a->t;
  }
  for (size_t i = 0; i < n_in; i++) {
    const op_named *a = input_array(d, s, i);
    op_tensor *t = &inputs[i];
    if (a) {
      if (check_array(d, s, i, &a->t, err)) goto fail;
      size_t row = a->t.nbytes / (size_t)a->t.dims[0];
      if (start + count > a->t.dims[0]) count = a->t.dims[0] - start;
      *t = a->t;
      t->dims[0] = count;
      t->nbytes = row * (size_t)count;
      t->data = malloc(t->nbytes ? t->nbytes : 1);
      if (!t->data) {
        op_fail(err, OP_NOMEM, "%s: input '%s': out of memory for a batch of %zu bytes", d->path,
                op_session_input_name(s, i), t->nbytes);
        goto fail;
      }
      memcpy(t->data, (char *)a->t.data + row * (size_t)start, t->nbytes);
      continue;
    }
    const char *name = op_session_input_name(s, i);
    const fill *f = input_fill(d, name);
    int32_t dt;
    int rank;
    int64_t dims[OP_MAX_DIMS];
    op_session_input_info(s, i, &dt, &rank, dims);
    if (!f || rank < 1 || !op_dtype_numeric(dt)) {
      op_fail(err, OP_ARG, "%s: input '%s' is not in the data; add it or use --fill %s=VALUE", d->path, name, name);
      goto fail;
    }
    t->dtype = dt;
    t->rank = rank;
    t->dims[0] = count;
    for (int k = 1; k < rank; k++) {
      t->dims[k] = dims[k];
      if (dims[k] < 0) {
        if (!ref || ref->rank != rank) {
          op_fail(err, OP_ARG, "%s: --fill %s: axis %d is dynamic and no data input of the same rank shows its size",
                  d->path, name, k);
          goto fail;
        }
        t->dims[k] = ref->dims[k];
      }
    }
    int64_t numel = 1;
    uint64_t bytes = 0;
    bool huge = false;
    for (int k = 0; k < rank; k++) {
      if (t->dims[k] && numel > INT64_MAX / t->dims[k]) huge = true;
      else numel *= t->dims[k];
    }
    size_t es = op_dtype_size(dt);
    if (huge || !op_bytes_of(numel, es, &bytes)) bytes = UINT64_MAX;
    char what[300];
    snprintf(what, sizeof what, "%s: --fill %.200s", d->path, name);
    if (op_budget_check(bytes, what, err)) goto fail;
    t->nbytes = (size_t)numel * es;
    t->data = malloc(t->nbytes ? t->nbytes : 1);
    if (!t->data) {
      op_fail(err, OP_NOMEM, "%s: --fill %s: out of memory for a batch of %zu bytes", d->path, name, t->nbytes);
      goto fail;
    }
    for (int64_t k = 0; k < numel; k++) put_value((char *)t->data + k * (int64_t)es, dt, f->value);
  }
  return 0;
fail:
  for (size_t i = 0; i < n_in; i++) op_tensor_clear(&inputs[i]);
  return -1;
}
