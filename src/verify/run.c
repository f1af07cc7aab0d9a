/* run.c - runs a model over a data set in batches and gathers its outputs along the sample axis. */
#include "data/data.h"
#include "exec/exec.h"
#include "verify/progress.h"

#include <stdlib.h>
#include <string.h>

/* Appends a batch output to the gathered output (first axis: samples). */
static int gather(op_tensor *all, const op_tensor *part, int64_t batch, const char *model, const char *name,
                  op_error *err) {
  if (part->rank < 1 || part->dims[0] != batch)
    return op_fail(err, OP_UNSUPPORTED, "%s: output '%s' has no sample axis (its first axis is not the batch of %lld)",
                   model, name, (long long)batch);
  if (!all->data) {
    *all = *part;
    all->data = op_xmalloc(part->nbytes ? part->nbytes : 1);
    memcpy(all->data, part->data, part->nbytes);
    return 0;
  }
  bool same = all->dtype == part->dtype && all->rank == part->rank;
  for (int i = 1; same && i < part->rank; i++) same = all->dims[i] == part->dims[i];
  if (!same) return op_fail(err, OP_UNSUPPORTED, "%s: output '%s' changes shape between batches", model, name);
  all->data = op_xrealloc(all->data, all->nbytes + part->nbytes);
  memcpy((char *)all->data + all->nbytes, part->data, part->nbytes);
  all->nbytes += part->nbytes;
  all->dims[0] += part->dims[0];
  return 0;
}

int op_run_dataset(const op_model *m, const op_dataset *d, const op_run_options *o, op_tensor **outputs, size_t *n,
                   op_error *err) {
  op_session *s = op_session_new(m, err);
  if (!s) return -1;
  int64_t total = op_dataset_samples(d, s, err);
  if (total < 0) {
    op_session_free(s);
    return -1;
  }
  int64_t first = o && o->first > 0 ? (o->first < total ? o->first : total) : 0;
  total -= first;
  if (o && o->samples > 0 && o->samples < total) total = o->samples;
  int64_t batch = o && o->batch > 0 ? o->batch : 1;
  size_t n_in = op_session_input_count(s), n_out = op_session_output_count(s);
  op_tensor *in = op_xcalloc(n_in ? n_in : 1, sizeof *in), *part = op_xcalloc(n_out, sizeof *part);
  op_tensor *all = op_xcalloc(n_out, sizeof *all);
  op_progress bar;
  op_progress_begin(&bar, o && o->progress, total, "run");
  int rc = 0;
  for (int64_t start = 0; start < total && !rc; start += batch) {
    int64_t count = total - start < batch ? total - start : batch;
    rc = op_dataset_batch(d, s, first + start, count, in, err);
    if (!rc) rc = op_session_run(s, in, part, NULL, NULL, err);
    for (size_t i = 0; i < n_out && !rc; i++) rc = gather(&all[i], &part[i], count, m->path, op_session_output_name(s, i), err);
    for (size_t i = 0; i < n_in; i++) op_tensor_clear(&in[i]);
    for (size_t i = 0; i < n_out; i++) op_tensor_clear(&part[i]);
    op_progress_update(&bar, start + count);
  }
  op_progress_end(&bar);
  free(in);
  free(part);
  op_session_free(s);
  if (rc) {
    for (size_t i = 0; i < n_out; i++) op_tensor_clear(&all[i]);
    free(all);
    return -1;
  }
  *outputs = all;
  *n = n_out;
  return 0;
}
