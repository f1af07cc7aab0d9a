/* dataset.c - input data for runs: a .npz or a folder of NAME.npy (arrays that stack samples along the
 * model's batch axis), or ONNX test data (input_N.pb in a folder, or test_data_set_*): each set one
 * complete run of the model, as ONNX's and ONNX Runtime's test runners read it. Also: constants for
 * inputs the data lacks (--fill); the batch axis of every input and output (the model's symbolic
 * dimension names, or --batch-axis); batches cut along it and checked against the session's inputs,
 * so a mismatch is reported with the input's name and both shapes. */
#include "data/data.h"
#include "exec/exec.h"
#include "files/files.h"

#include <ctype.h>
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

typedef struct axis_opt {
  char *name; /* NULL: every input (and output) */
  int axis;   /* OP_AXIS_NONE: the input has no batch axis */
} axis_opt;

typedef struct pb_set {
  char *name; /* test_data_set_N, or "" for input_N.pb given directly */
  op_named_vec arrays;
} pb_set;

struct op_dataset {
  char *path;
  op_named_vec arrays; /* .npz / .npy: samples stacked along the batch axis */
  OP_VEC(pb_set) sets; /* ONNX test data: one complete run each */
  OP_VEC(fill) fills;
  OP_VEC(axis_opt) axes;
  /* which file rows the samples are (rows.c): order, seed, rows held out, and the sequence for a
   * file of seq_total rows, a cache filled on first use (hence mutable through const) */
  op_sample_order order;
  uint64_t seed;
  OP_VEC(int64_t) held_out;
  int64_t *seq, seq_n, seq_total;
  int64_t seq_total_seen; /* the file's rows at the last op_dataset_samples, -1 before */
};

static void named_vec_free(op_named_vec *v) {
  for (size_t i = 0; i < v->n; i++) {
    free(v->v[i].name);
    op_tensor_clear(&v->v[i].t);
    op_budget_give(v->v[i].budgeted);
  }
  free(v->v);
  memset(v, 0, sizeof *v);
}

void op_dataset_free(op_dataset *d) {
  if (!d) return;
  named_vec_free(&d->arrays);
  for (size_t i = 0; i < d->sets.n; i++) {
    named_vec_free(&d->sets.v[i].arrays);
    free(d->sets.v[i].name);
  }
  for (size_t i = 0; i < d->fills.n; i++) free(d->fills.v[i].name);
  for (size_t i = 0; i < d->axes.n; i++) free(d->axes.v[i].name);
  free(d->sets.v);
  free(d->fills.v);
  free(d->axes.v);
  free(d->held_out.v);
  free(d->seq);
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
  op_read_file_free(buf);
  if (rc) return -1;
  a.budgeted = a.t.nbytes;
  a.name = op_xstrdup(name);
  OP_VEC_PUSH(d->arrays, a);
  return 0;
}

static int load_pb_file(op_named_vec *out, const char *path, int index, op_error *err) {
  size_t n;
  uint8_t *buf = (uint8_t *)op_read_file(path, &n, err);
  if (!buf) return -1;
  Onnx__TensorProto *t = onnx__tensor_proto__unpack(NULL, n, buf);
  op_read_file_free(buf);
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
  a.budgeted = x.owned ? x.cap : 0; /* still counted in the budget's running total, until named_vec_free */
  OP_VEC_PUSH(*out, a);
  return 0;
}

/* Loads input_0.pb, input_1.pb, ... of one folder as one set; returns how many inputs. */
static int load_pb_dir(op_dataset *d, const char *dir, const char *set_name, op_error *err) {
  pb_set set = {op_xstrdup(set_name), {0}};
  int count = 0;
  for (;; count++) {
    char p[8448];
    if (snprintf(p, sizeof p, "%s/input_%d.pb", dir, count) >= (int)sizeof p) {
      count = op_fail(err, OP_IO, "%s: path too long", dir);
      break;
    }
    struct stat st;
    if (stat(p, &st) != 0) break;
    if (load_pb_file(&set.arrays, p, count, err)) {
      count = -1;
      break;
    }
  }
  if (count > 0) {
    OP_VEC_PUSH(d->sets, set);
    return count;
  }
  named_vec_free(&set.arrays);
  free(set.name);
  return count;
}

/* test_data_set_N sorts by N, so set 10 follows set 9. */
static int cmp_set(const void *x, const void *y) {
  const char *a = *(char *const *)x, *b = *(char *const *)y;
  bool sa = strncmp(a, "test_data_set_", 14) == 0, sb = strncmp(b, "test_data_set_", 14) == 0;
  if (sa && sb) {
    long na = strtol(a + 14, NULL, 10), nb = strtol(b + 14, NULL, 10);
    if (na != nb) return na < nb ? -1 : 1;
  }
  return strcmp(a, b);
}

static int load_dir(op_dataset *d, const char *path, op_error *err) {
  DIR *dir = opendir(path);
  if (!dir) return op_fail(err, OP_IO, "%s: %s", path, strerror(errno));
  OP_VEC(char *) names = {0};
  for (struct dirent *e; (e = readdir(dir));)
    if (e->d_name[0] != '.') OP_VEC_PUSH(names, op_xstrdup(e->d_name));
  closedir(dir);
  if (names.n) qsort(names.v, names.n, sizeof *names.v, cmp_set);
  int rc = 0;
  for (size_t i = 0; i < names.n && !rc; i++) {
    if (strncmp(names.v[i], "test_data_set_", 14) != 0) continue;
    char p[8448];
    if (snprintf(p, sizeof p, "%s/%s", path, names.v[i]) >= (int)sizeof p) rc = op_fail(err, OP_IO, "%s: path too long", path);
    else if (load_pb_dir(d, p, names.v[i], err) < 0) rc = -1;
  }
  if (!rc && !d->sets.n && load_pb_dir(d, path, "", err) < 0) rc = -1;
  for (size_t i = 0; i < names.n && !rc && !d->sets.n; i++) {
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
  if (!rc && d->arrays.n == 0 && d->sets.n == 0)
    rc = op_fail(err, OP_ARG, "%s: no input data found (expected NAME.npy files, input_N.pb or test_data_set_*/)", path);
  return rc;
}

op_dataset *op_dataset_open(const char *path, op_error *err) {
  op_dataset *d = op_xcalloc(1, sizeof *d);
  d->path = op_xstrdup(path);
  d->seq_total = d->seq_total_seen = -1;
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
    pb_set set = {op_xstrdup(""), {0}};
    rc = load_pb_file(&set.arrays, path, 0, err);
    OP_VEC_PUSH(d->sets, set);
  } else {
    size_t n;
    uint8_t *buf = (uint8_t *)op_read_file(path, &n, err);
    rc = buf ? op_npz_parse(buf, n, path, &d->arrays, err) : -1;
    op_read_file_free(buf);
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

int op_dataset_batch_axis(op_dataset *d, const char *spec, op_error *err) {
  const char *eq = strrchr(spec, '='), *num = eq ? eq + 1 : spec;
  char *end = NULL;
  errno = 0;
  bool none = strcmp(num, "none") == 0;
  long v = none ? OP_AXIS_NONE : strtol(num, &end, 10);
  bool ok = (eq == NULL || eq > spec) && (none ? eq != NULL : end != num && !*end && !errno && v >= 0 && v < OP_MAX_DIMS);
  if (!ok) return op_fail(err, OP_ARG, "--batch-axis: '%s' is not N or NAME=N (NAME=none: the input has no batch axis)", spec);
  axis_opt a = {eq ? op_xmalloc((size_t)(eq - spec) + 1) : NULL, (int)v};
  if (eq) {
    memcpy(a.name, spec, (size_t)(eq - spec));
    a.name[eq - spec] = 0;
  }
  OP_VEC_PUSH(d->axes, a);
  return 0;
}

size_t op_dataset_set_count(const op_dataset *d) { return d->sets.n; }

const char *op_dataset_set_name(const op_dataset *d, size_t k) { return k < d->sets.n ? d->sets.v[k].name : NULL; }

const op_tensor *op_dataset_array(const op_dataset *d, const char *name) {
  for (size_t i = 0; i < d->arrays.n; i++)
    if (strcmp(d->arrays.v[i].name, name) == 0) return &d->arrays.v[i].t;
  return NULL;
}

/* The data array for session input i, by name (or by position in ONNX test data), in set `set`
 * (ONNX test data) or in the stacked arrays (set -1). */
static const op_named *input_array(const op_dataset *d, const op_session *s, size_t i, int64_t set) {
  const op_named_vec *v = set >= 0 ? &d->sets.v[set].arrays : &d->arrays;
  const char *name = op_session_input_name(s, i);
  for (size_t k = 0; k < v->n; k++)
    if (strcmp(v->v[k].name, name) == 0) return &v->v[k];
  if (set >= 0) {
    char pos[32];
    snprintf(pos, sizeof pos, "input_%zu", i);
    for (size_t k = 0; k < v->n; k++)
      if (strcmp(v->v[k].name, pos) == 0) return &v->v[k];
  }
  return NULL;
}

static const fill *input_fill(const op_dataset *d, const char *name) {
  for (size_t k = d->fills.n; k-- > 0;)
    if (strcmp(d->fills.v[k].name, name) == 0) return &d->fills.v[k];
  return NULL;
}

/* ---- The batch axis ------------------------------------------------------------------------------
 * Data is cut along the model's batch axis only. Per input, in this order: --batch-axis NAME=N, then
 * --batch-axis N, then the model's names: the one axis whose dim_param says batch (`batch`,
 * `batch_size`, `N`, `B`, `bs`, any case), so sequence-first exports ([seq, batch, ...]) and stacked
 * states ([2, batch, heads, past, dim]) are cut where their batch is. An input without such an axis in
 * a model that has one elsewhere has none (passed whole). In a model that names no batch, an input
 * with exactly one dynamic axis is cut along it, a fully static input along the one axis where the data
 * differs from it; anything else is unknown, and stacked data is refused rather than guessed. */

static bool contains_ci(const char *s, const char *w) {
  for (size_t n = strlen(w); *s; s++) {
    size_t k = 0;
    while (k < n && s[k] && tolower((unsigned char)s[k]) == w[k]) k++;
    if (k == n) return true;
  }
  return false;
}

static bool batch_like(const char *n) {
  return n && (contains_ci(n, "batch") || !strcmp(n, "N") || !strcmp(n, "B") || !strcmp(n, "bs") || !strcmp(n, "BS"));
}

static const axis_opt *axis_option(const op_dataset *d, const char *name) {
  for (size_t k = d->axes.n; k-- > 0;)
    if (name ? d->axes.v[k].name && !strcmp(d->axes.v[k].name, name) : !d->axes.v[k].name) return &d->axes.v[k];
  return NULL;
}

/* Which axis of input i holds the batch, with one of the reasons on failure. */
static int input_axis(const op_dataset *d, const op_session *s, size_t i, const op_tensor *data, bool model_names_batch,
                      op_error *err) {
  const char *name = op_session_input_name(s, i);
  int rank = op_session_input_rank(s, i);
  if (rank < 0 && data) rank = data->rank;
  const axis_opt *o = axis_option(d, name);
  if (o) {
    if (rank >= 0 && o->axis >= rank)
      return op_fail(err, OP_ARG, "%s: --batch-axis %s=%d: input '%s' has rank %d", d->path, name, o->axis, name, rank), OP_AXIS_ERROR;
    return o->axis;
  }
  if ((o = axis_option(d, NULL))) return rank >= 0 && o->axis >= rank ? OP_AXIS_NONE : o->axis;
  if (rank < 0) return OP_AXIS_UNKNOWN;
  int found = -1, n_found = 0, dyn = -1, n_dyn = 0;
  int32_t dt;
  int mrank;
  int64_t dims[OP_MAX_DIMS];
  op_session_input_info(s, i, &dt, &mrank, dims);
  for (int a = 0; a < rank && a < OP_MAX_DIMS; a++) {
    if (batch_like(op_session_input_dim_name(s, i, a))) found = a, n_found++;
    if (mrank > a && dims[a] < 0) dyn = a, n_dyn++;
  }
  if (n_found == 1) return found;
  if (n_found > 1)
    return op_fail(err, OP_ARG, "%s: input '%s' has several axes named like a batch; give the one with --batch-axis %s=N",
                   d->path, name, name),
           OP_AXIS_ERROR;
  if (model_names_batch) return OP_AXIS_NONE;
  if (n_dyn == 1) return dyn;
  if (n_dyn == 0 && data && data->rank == mrank) { /* a static export: samples stacked along the one axis that differs */
    int differ = -1, n_differ = 0;
    for (int a = 0; a < mrank; a++)
      if (data->dims[a] != dims[a]) differ = a, n_differ++;
    if (n_differ == 0) return OP_AXIS_NONE;
    if (n_differ == 1) return differ;
  }
  return OP_AXIS_UNKNOWN;
}

/* Which axis of output o holds the batch: --batch-axis N, the one axis named like a batch, or the one
 * axis named as an input's batch axis is. */
static int output_axis(const op_dataset *d, const op_session *s, size_t o, const int *in_axes) {
  int rank = op_session_output_rank(s, o);
  const axis_opt *opt = axis_option(d, NULL);
  if (opt) return rank >= 0 && opt->axis >= rank ? OP_AXIS_NONE : opt->axis;
  int found = -1, n_found = 0;
  for (int a = 0; a < rank; a++)
    if (batch_like(op_session_output_dim_name(s, o, a))) found = a, n_found++;
  if (n_found == 1) return found;
  if (n_found > 1) return OP_AXIS_UNKNOWN;
  for (int a = 0; a < rank; a++) {
    const char *nm = op_session_output_dim_name(s, o, a);
    bool hit = false;
    for (size_t i = 0; nm && !hit && i < op_session_input_count(s); i++) {
      const char *in = in_axes[i] >= 0 ? op_session_input_dim_name(s, i, in_axes[i]) : NULL;
      hit = in && !strcmp(in, nm);
    }
    if (hit) found = a, n_found++;
  }
  return n_found == 1 ? found : OP_AXIS_UNKNOWN;
}

int op_dataset_axes(const op_dataset *d, const op_session *s, int *in_axes, int *out_axes, op_error *err) {
  size_t n_in = op_session_input_count(s);
  bool names_batch = false;
  for (size_t i = 0; i < n_in && !names_batch; i++)
    for (int a = 0; a < op_session_input_rank(s, i) && !names_batch; a++)
      names_batch = batch_like(op_session_input_dim_name(s, i, a));
  for (size_t i = 0; i < n_in; i++) {
    const op_named *a = input_array(d, s, i, d->sets.n ? 0 : -1);
    in_axes[i] = input_axis(d, s, i, a ? &a->t : NULL, names_batch, err);
    if (in_axes[i] == OP_AXIS_ERROR) return -1;
  }
  for (size_t o = 0; out_axes && o < op_session_output_count(s); o++) out_axes[o] = output_axis(d, s, o, in_axes);
  return 0;
}

/* "[seq, batch, 32]": the model's shape of input i with its names, for messages. */
static void named_shape(const op_session *s, size_t i, char *buf, size_t n) {
  int32_t dt;
  int rank;
  int64_t dims[OP_MAX_DIMS];
  op_session_input_info(s, i, &dt, &rank, dims);
  size_t off = (size_t)snprintf(buf, n, "[");
  for (int a = 0; a < rank && off < n; a++) {
    const char *nm = op_session_input_dim_name(s, i, a);
    if (nm) off += (size_t)snprintf(buf + off, n - off, "%s%.40s", a ? ", " : "", nm);
    else if (dims[a] < 0) off += (size_t)snprintf(buf + off, n - off, "%s?", a ? ", " : "");
    else off += (size_t)snprintf(buf + off, n - off, "%s%lld", a ? ", " : "", (long long)dims[a]);
  }
  if (off < n) snprintf(buf + off, n - off, "]");
}

static int unknown_axis(const op_dataset *d, const op_session *s, size_t i, op_error *err) {
  char shape[256];
  const char *name = op_session_input_name(s, i);
  named_shape(s, i, shape, sizeof shape);
  return op_fail(err, OP_ARG,
                 "%s: cannot tell which axis of input '%s' %s is the batch (no axis is named like one); give it with "
                 "--batch-axis N, or --batch-axis %s=N per input",
                 d->path, name, shape, name);
}

/* Checks a data array against the model's input on every axis but its batch axis; an array with no
 * samples is refused too. */
static int check_array(const op_dataset *d, const op_session *s, size_t i, const op_tensor *t, int axis, op_error *err) {
  op_tensor probe = *t;
  if (axis >= 0 && axis < t->rank) {
    int32_t dt;
    int rank;
    int64_t dims[OP_MAX_DIMS];
    op_session_input_info(s, i, &dt, &rank, dims);
    if (axis < rank && dims[axis] >= 0) probe.dims[axis] = dims[axis]; /* the batch axis may hold more samples */
  } else if (axis >= 0) {
    return op_fail(err, OP_ARG, "%s: input '%s': the batch axis %d is beyond the array's rank %d", d->path,
                   op_session_input_name(s, i), axis, t->rank);
  }
  /* first_axis 1 words the message for data ("found"); axis 0 is then checked on its own */
  if (op_check_input(s, i, &probe, probe.rank >= 1 ? 1 : 0, d->path, err)) return -1;
  if (probe.rank >= 1 && op_check_input(s, i, &probe, 0, d->path, err)) return -1;
  if (axis >= 0 && t->dims[axis] == 0)
    return op_fail(err, OP_ARG, "%s: input '%s': the array is empty", d->path, op_session_input_name(s, i));
  return 0;
}

static int missing_input(const op_dataset *d, const op_session *s, size_t i, op_error *err) {
  const char *name = op_session_input_name(s, i);
  const op_named_vec *v = d->sets.n ? &d->sets.v[0].arrays : &d->arrays;
  size_t cap = 64, o = 0;
  for (size_t k = 0; k < v->n; k++) cap += strlen(v->v[k].name) + 2;
  char *have = op_xmalloc(cap);
  have[0] = 0;
  for (size_t k = 0; k < v->n; k++) o += (size_t)snprintf(have + o, cap - o, "%s%s", k ? ", " : "", v->v[k].name);
  op_fail(err, OP_ARG, "%s: input '%s' is not in the data (it has: %s); add it or use --fill %s=VALUE", d->path, name, have, name);
  free(have);
  return -1;
}

/* The rows of the file (sets of ONNX test data) for the session's inputs, before any order. */
static int64_t file_rows(const op_dataset *d, const op_session *s, op_error *err) {
  size_t n_in = op_session_input_count(s);
  int *axes = op_xcalloc(n_in ? n_in : 1, sizeof *axes);
  int64_t n = -1;
  bool backed = false;
  const char *first = NULL;
  if (op_dataset_axes(d, s, axes, NULL, err)) goto fail;
  for (size_t k = 0; k < (d->sets.n ? d->sets.n : 1); k++) {
    for (size_t i = 0; i < n_in; i++) {
      const char *name = op_session_input_name(s, i);
      const op_named *a = input_array(d, s, i, d->sets.n ? (int64_t)k : -1);
      if (!a) {
        if (input_fill(d, name)) continue;
        missing_input(d, s, i, err);
        goto fail;
      }
      backed = true;
      if (d->sets.n) { /* one complete run: the whole array must fit the model */
        if (check_array(d, s, i, &a->t, OP_AXIS_NONE, err)) goto fail;
        continue;
      }
      if (axes[i] == OP_AXIS_UNKNOWN) {
        unknown_axis(d, s, i, err);
        goto fail;
      }
      if (check_array(d, s, i, &a->t, axes[i], err)) goto fail;
      if (axes[i] < 0) continue;
      if (n >= 0 && a->t.dims[axes[i]] != n) {
        op_fail(err, OP_ARG, "%s: inputs disagree on the number of samples: '%s' has %lld, '%s' has %lld", d->path, first,
                (long long)n, name, (long long)a->t.dims[axes[i]]);
        goto fail;
      }
      n = a->t.dims[axes[i]];
      first = name;
    }
  }
  free(axes);
  if (!backed) {
    op_fail(err, OP_ARG, "%s: no model input is backed by data, so the number of samples is unknown", d->path);
    return -1;
  }
  if (d->sets.n) return (int64_t)d->sets.n;
  return n < 0 ? 1 : n; /* no input has a batch axis: the data is one run */
fail:
  free(axes);
  return -1;
}

/* The sample sequence for a file of `total` rows, or NULL when the samples are the rows in file order. */
static const int64_t *sequence(const op_dataset *d, int64_t total) {
  if (d->order == OP_ORDER_FIRST && !d->held_out.n) return NULL;
  if (!d->seq || d->seq_total != total) {
    op_dataset *m = (op_dataset *)d; /* a cache: the sequence is a function of (order, seed, held out, total) */
    free(m->seq);
    m->seq = op_rows_sequence(total, d->order, d->seed, d->held_out.v, d->held_out.n, &m->seq_n);
    m->seq_total = total;
  }
  return d->seq;
}

int64_t op_dataset_samples(const op_dataset *d, const op_session *s, op_error *err) {
  int64_t total = file_rows(d, s, err);
  if (total < 0) return -1;
  ((op_dataset *)d)->seq_total_seen = total; /* for reports: the file's rows */
  if (!sequence(d, total)) return total;
  if (d->seq_n == 0)
    return op_fail(err, OP_ARG, "%s: every one of its %lld rows is held out: no sample is left", d->path, (long long)total);
  return d->seq_n;
}

int op_dataset_set_order(op_dataset *d, const char *order, uint64_t seed, op_error *err) {
  op_sample_order o;
  if (op_sample_order_parse(order, &o))
    return op_fail(err, OP_ARG, "sample order: '%s' is not one of first, spread, random", order);
  d->order = o;
  d->seed = seed;
  d->seq_total = -1;
  return 0;
}

void op_dataset_hold_out(op_dataset *d, const int64_t *rows, size_t n) {
  for (size_t i = 0; i < n; i++) OP_VEC_PUSH(d->held_out, rows[i]);
  d->seq_total = -1;
}

int64_t op_dataset_row(const op_dataset *d, int64_t k) {
  if (d->order == OP_ORDER_FIRST && !d->held_out.n) return k;
  return d->seq && k >= 0 && k < d->seq_n ? d->seq[k] : -1;
}

op_sample_order op_dataset_order(const op_dataset *d, uint64_t *seed) {
  if (seed) *seed = d->seed;
  return d->order;
}

int64_t op_dataset_file_rows(const op_dataset *d) { return d->seq_total_seen; }

int64_t op_dataset_held_out_count(const op_dataset *d) { return (int64_t)d->held_out.n; }

const char *op_dataset_path_of(const op_dataset *d) { return d->path; }

/* One --fill value in the input's type (the one conversion Cast makes). */
static void put_value(void *p, int32_t dt, double v) {
  op_xt one = {.dtype = ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE, .numel = 1, .data = &v}, conv;
  op_error e;
  if (op_xt_convert(&conv, &one, dt, &e)) return; /* the input's type was checked numeric by the caller */
  memcpy(p, conv.data, op_dtype_size(dt));
  op_xt_release(&conv);
}

/* The size of the dynamic axis called `name` in this run, read off a data input that has it. */
static bool extent_by_name(const op_dataset *d, const op_session *s, int64_t set, const int *axes, int64_t count,
                           const char *name, int64_t *out) {
  for (size_t j = 0; name && j < op_session_input_count(s); j++) {
    const op_named *a = input_array(d, s, j, set);
    for (int b = 0; a && b < a->t.rank; b++) {
      const char *nm = op_session_input_dim_name(s, j, b);
      if (!nm || strcmp(nm, name) != 0) continue;
      *out = set < 0 && b == axes[j] ? count : a->t.dims[b];
      return true;
    }
  }
  return false;
}

/* A name that says nothing about the axis: torch's for dynamic axes given as a list, ONNX Runtime's
 * shape inference's. */
static bool generic_name(const char *n) { return !n || strstr(n, "_dynamic_axes_") || strncmp(n, "unk__", 5) == 0; }

/* A constant tensor for a --fill input: fixed axes from the model, the batch axis `count` long, other
 * dynamic axes as long as the data input that shares their name (or, without a telling name, the same
 * axis of a data input of the same rank). */
/* A batch tensor (a --fill constant or rows cut from the data) must fit what the budget has left beside
 * the values held now (the model's session, the dataset's arrays); it is checked, not held, as callers
 * free batches with op_tensor_clear. */
static int fill_input(const op_dataset *d, const op_session *s, size_t i, int64_t set, const int *axes, int64_t count,
                      op_tensor *t, op_error *err) {
  const char *name = op_session_input_name(s, i);
  const fill *f = input_fill(d, name);
  int32_t dt;
  int rank;
  int64_t dims[OP_MAX_DIMS];
  op_session_input_info(s, i, &dt, &rank, dims);
  if (!f || rank < 1 || !op_dtype_numeric(dt))
    return op_fail(err, OP_ARG, "%s: input '%s' is not in the data; add it or use --fill %s=VALUE", d->path, name, name);
  const op_named *ref = NULL; /* a data-backed input to borrow unnamed dynamic axes from */
  size_t ref_i = 0;
  for (size_t j = 0; j < op_session_input_count(s) && !ref; j++)
    if ((ref = input_array(d, s, j, set))) ref_i = j;
  t->dtype = dt;
  t->rank = rank;
  for (int k = 0; k < rank; k++) {
    t->dims[k] = dims[k];
    if (set < 0 && k == axes[i]) t->dims[k] = count;
    else if (dims[k] >= 0) continue;
    else if (extent_by_name(d, s, set, axes, count, op_session_input_dim_name(s, i, k), &t->dims[k])) continue;
    else if (ref && ref->t.rank == rank && generic_name(op_session_input_dim_name(s, i, k)))
      t->dims[k] = set < 0 && k == axes[ref_i] ? count : ref->t.dims[k];
    else
      return op_fail(err, OP_ARG, "%s: --fill %s: axis %d (%s) is dynamic and no data input shows its size", d->path,
                     name, k, op_session_input_dim_name(s, i, k) ? op_session_input_dim_name(s, i, k) : "unnamed");
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
  if (op_budget_fits(bytes, what, err)) return -1;
  t->nbytes = (size_t)numel * es;
  t->data = malloc(t->nbytes ? t->nbytes : 1);
  if (!t->data) return op_fail(err, OP_NOMEM, "%s: --fill %s: out of memory for a batch of %zu bytes", d->path, name, t->nbytes);
  for (int64_t k = 0; k < numel; k++) put_value((char *)t->data + k * (int64_t)es, dt, f->value);
  return 0;
}

/* t = src with `count` steps along `axis`, its storage allocated (checked against the memory budget);
 * *outer: the steps before the axis, *inner: the bytes of one step along it. */
static int alloc_rows(const op_tensor *src, int axis, int64_t count, op_tensor *t, const char *what, int64_t *outer,
                      size_t *inner, op_error *err) {
  int64_t n = src->dims[axis];
  *outer = 1;
  for (int a = 0; a < axis; a++) *outer *= src->dims[a];
  *inner = *outer && n ? src->nbytes / (size_t)(*outer * n) : 0;
  t->dims[axis] = count;
  t->nbytes = (size_t)(*outer * count) * *inner;
  t->data = NULL;
  if (op_budget_fits(t->nbytes, what, err)) return -1;
  t->data = malloc(t->nbytes ? t->nbytes : 1);
  if (!t->data) return op_fail(err, OP_NOMEM, "%s: out of memory for a batch of %zu bytes", what, t->nbytes);
  return 0;
}

/* Copies [start, start + count) of src along `axis` (the whole array when axis < 0) into t; -1 and
 * *err (OP_NOMEM, naming the input) when there is no memory for it. */
static int cut(const op_tensor *src, int axis, int64_t start, int64_t count, op_tensor *t, const char *what,
               op_error *err) {
  *t = *src;
  if (axis < 0) {
    t->data = NULL;
    if (op_budget_fits(src->nbytes, what, err)) return -1;
    t->data = malloc(src->nbytes ? src->nbytes : 1);
    if (!t->data) return op_fail(err, OP_NOMEM, "%s: out of memory for a batch of %zu bytes", what, src->nbytes);
    memcpy(t->data, src->data, src->nbytes);
    return 0;
  }
  int64_t outer, n = src->dims[axis];
  size_t inner;
  if (alloc_rows(src, axis, count, t, what, &outer, &inner, err)) return -1;
  for (int64_t o = 0; o < outer; o++)
    memcpy((char *)t->data + (size_t)(o * count) * inner, (const char *)src->data + (size_t)(o * n + start) * inner,
           (size_t)count * inner);
  return 0;
}

/* Copies the samples rows[0..count) of src along `axis` into t (the rows a sample order picked). */
static int cut_rows(const op_tensor *src, int axis, const int64_t *rows, int64_t count, op_tensor *t, const char *what,
                    op_error *err) {
  *t = *src;
  int64_t outer, n = src->dims[axis];
  size_t inner;
  if (alloc_rows(src, axis, count, t, what, &outer, &inner, err)) return -1;
  for (int64_t o = 0; o < outer; o++)
    for (int64_t k = 0; k < count; k++)
      memcpy((char *)t->data + (size_t)(o * count + k) * inner, (const char *)src->data + (size_t)(o * n + rows[k]) * inner,
             inner);
  return 0;
}

int op_dataset_batch(const op_dataset *d, const op_session *s, int64_t start, int64_t count, op_tensor *inputs,
                     op_error *err) {
  size_t n_in = op_session_input_count(s);
  memset(inputs, 0, n_in * sizeof *inputs);
  int *axes = op_xcalloc(n_in ? n_in : 1, sizeof *axes);
  const int64_t *seq = NULL; /* samples -> file rows, when an order or held-out rows apply */
  if (d->order != OP_ORDER_FIRST || d->held_out.n) {
    int64_t total = file_rows(d, s, err);
    if (total < 0) goto fail;
    seq = sequence(d, total);
    if (start < 0 || start >= d->seq_n) {
      op_fail(err, OP_ARG, "%s: sample %lld is past the %lld samples of its order", d->path, (long long)start,
              (long long)d->seq_n);
      goto fail;
    }
    if (start + count > d->seq_n) count = d->seq_n - start;
  }
  int64_t set = d->sets.n ? (seq ? seq[start] : start) : -1;
  if (op_dataset_axes(d, s, axes, NULL, err)) goto fail;
  if (set >= 0 && (count != 1 || set < 0 || (size_t)set >= d->sets.n)) {
    op_fail(err, OP_ARG, "%s: ONNX test data: each test data set is one complete run; sets cannot be batched", d->path);
    goto fail;
  }
  for (size_t i = 0; i < n_in && !seq; i++) { /* the run's extent along the batch axis, which a short last batch cuts */
    const op_named *a = set < 0 ? input_array(d, s, i, -1) : NULL;
    if (a && axes[i] >= 0 && axes[i] < a->t.rank && start + count > a->t.dims[axes[i]]) count = a->t.dims[axes[i]] - start;
  }
  for (size_t i = 0; i < n_in; i++) {
    const op_named *a = input_array(d, s, i, set);
    int axis = set >= 0 ? OP_AXIS_NONE : axes[i];
    if (!a) {
      if (fill_input(d, s, i, set, axes, count, &inputs[i], err)) goto fail;
      continue;
    }
    if (axis == OP_AXIS_UNKNOWN) {
      unknown_axis(d, s, i, err);
      goto fail;
    }
    if (check_array(d, s, i, &a->t, axis, err)) goto fail;
    char what[300];
    snprintf(what, sizeof what, "%s: input '%.200s'", d->path, op_session_input_name(s, i));
    if (seq && axis >= 0 ? cut_rows(&a->t, axis, seq + start, count, &inputs[i], what, err)
                         : cut(&a->t, axis, start, count, &inputs[i], what, err))
      goto fail;
  }
  free(axes);
  return 0;
fail:
  free(axes);
  for (size_t i = 0; i < n_in; i++) op_tensor_clear(&inputs[i]);
  return -1;
}
