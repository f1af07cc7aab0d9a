/* run.c - runs a model over a data set in batches cut along the model's batch axis, and gathers each
 * output along its own batch axis (op_dataset_axes says which); ONNX test data runs set by set. */
#include "data/data.h"
#include "exec/exec.h"
#include "verify/progress.h"
#include "verify/stream.h"

#include <stdlib.h>
#include <string.h>

/* Appends a batch's output to the gathered output along `axis`. The first batch is taken as it is;
 * gathering a second needs a known batch axis, which every batch must fill with its own samples. */
static int gather(op_tensor *all, const op_tensor *part, int axis, int64_t count, const char *model, const char *name,
                  op_error *err) {
  if (!all->data) {
    *all = *part;
    all->data = op_xmalloc(part->nbytes ? part->nbytes : 1);
    memcpy(all->data, part->data, part->nbytes);
    return 0;
  }
  if (axis < 0)
    return op_fail(err, OP_ARG,
                   "%s: output '%s': cannot tell its batch axis (none of its dimensions is named like the inputs' batch), "
                   "so batches cannot be gathered; give --batch-axis N, or run all samples in one batch",
                   model, name);
  bool same = all->dtype == part->dtype && all->rank == part->rank && axis < part->rank;
  for (int i = 0; same && i < part->rank; i++) same = i == axis || all->dims[i] == part->dims[i];
  if (!same) return op_fail(err, OP_UNSUPPORTED, "%s: output '%s' changes shape between batches", model, name);
  if (part->dims[axis] != count)
    return op_fail(err, OP_ARG, "%s: output '%s': its batch axis %d has %lld entries for a batch of %lld samples", model,
                   name, axis, (long long)part->dims[axis], (long long)count);
  int64_t outer = 1, na = all->dims[axis], np = part->dims[axis];
  for (int i = 0; i < axis; i++) outer *= all->dims[i];
  size_t a_step = outer ? all->nbytes / (size_t)outer : 0, p_step = outer ? part->nbytes / (size_t)outer : 0;
  char *joined = op_xmalloc(all->nbytes + part->nbytes + 1);
  for (int64_t o = 0; o < outer; o++) {
    memcpy(joined + (size_t)o * (a_step + p_step), (char *)all->data + (size_t)o * a_step, a_step);
    memcpy(joined + (size_t)o * (a_step + p_step) + a_step, (const char *)part->data + (size_t)o * p_step, p_step);
  }
  free(all->data);
  all->data = joined;
  all->nbytes += part->nbytes;
  all->dims[axis] = na + np;
  return 0;
}

int64_t op_sample_window(const op_dataset *d, const op_session *s, int64_t first, int64_t samples, int64_t *first_out,
                         op_error *err) {
  int64_t total = op_dataset_samples(d, s, err);
  if (total < 0) return -1;
  first = first > 0 ? (first < total ? first : total) : 0;
  total -= first;
  if (samples > 0 && samples < total) total = samples;
  *first_out = first;
  return total;
}

int op_stream(op_session *s, const op_dataset *d, int64_t first, int64_t total, int64_t batch, op_observer observer,
              void *obs_user, bool observe_inputs, op_batch_fn on_batch, void *batch_user, bool progress,
              const char *label, op_error *err) {
  size_t n_in = op_session_input_count(s), n_out = op_session_output_count(s);
  op_tensor *in = op_xcalloc(n_in ? n_in : 1, sizeof *in), *out = op_xcalloc(n_out ? n_out : 1, sizeof *out);
  if (batch < 1 || op_dataset_set_count(d)) batch = 1; /* a test data set is one complete run */
  op_progress bar;
  op_progress_begin(&bar, progress, total, label);
  int rc = 0;
  for (int64_t start = 0; start < total && !rc; start += batch) {
    int64_t count = total - start < batch ? total - start : batch;
    rc = op_dataset_batch(d, s, first + start, count, in, err);
    for (size_t i = 0; i < n_in && !rc && observe_inputs && observer; i++) /* graph inputs are no node's output */
      observer(obs_user, op_session_input_name(s, i), &in[i]);
    if (!rc) rc = op_session_run(s, in, out, observer, obs_user, err);
    if (!rc && on_batch) rc = on_batch(batch_user, out, count, err);
    for (size_t i = 0; i < n_in; i++) op_tensor_clear(&in[i]);
    for (size_t i = 0; i < n_out; i++) op_tensor_clear(&out[i]);
    op_progress_update(&bar, start + count);
  }
  op_progress_end(&bar);
  free(in);
  free(out);
  return rc;
}

typedef struct gathered {
  op_tensor *all;
  const int *axes; /* each output's batch axis */
  const op_session *s;
  const char *model;
} gathered;

static int gather_batch(void *user, const op_tensor *outputs, int64_t count, op_error *err) {
  gathered *g = user;
  for (size_t i = 0; i < op_session_output_count(g->s); i++)
    if (gather(&g->all[i], &outputs[i], g->axes[i], count, g->model, op_session_output_name(g->s, i), err)) return -1;
  return 0;
}

int op_run_dataset(const op_model *m, const op_dataset *d, const op_run_options *o, op_tensor **outputs, size_t *n,
                   op_error *err) {
  op_session *s = op_session_new(m, err);
  if (!s) return -1;
  size_t n_in = op_session_input_count(s), n_out = op_session_output_count(s);
  int *in_axes = op_xcalloc(n_in ? n_in : 1, sizeof *in_axes), *out_axes = op_xcalloc(n_out ? n_out : 1, sizeof *out_axes);
  int64_t first, total = op_sample_window(d, s, o ? o->first : 0, o ? o->samples : 0, &first, err);
  if (total >= 0 && op_dataset_axes(d, s, in_axes, out_axes, err)) total = -1;
  if (total > 1 && op_dataset_set_count(d)) {
    op_fail(err, OP_ARG, "%s: ONNX test data: each test data set is one complete run; run the sets one at a time", m->path);
    total = -1;
  }
  gathered g = {op_xcalloc(n_out ? n_out : 1, sizeof *g.all), out_axes, s, m->path};
  int rc = total < 0 ? -1
                     : op_stream(s, d, first, total, o && o->batch > 0 ? o->batch : 1, NULL, NULL, false, gather_batch,
                                 &g, o && o->progress, "run", err);
  op_session_free(s);
  free(in_axes);
  free(out_axes);
  if (rc) {
    for (size_t i = 0; i < n_out; i++) op_tensor_clear(&g.all[i]);
    free(g.all);
    return -1;
  }
  *outputs = g.all;
  *n = n_out;
  return 0;
}
