/* common.c - helpers the commands share: the data set behind --data/--fill, run options, verbose
 * step notes, and the file-safety check of a command's outputs against its inputs. */
#include "cli/commands.h"

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

op_dataset *cli_open_data(const cli_args *a, op_error *err) {
  op_dataset *ds = op_dataset_open(cli_get(a, "--data"), err);
  size_t n;
  const cli_value *fills = cli_all(a, "--fill", &n);
  int rc = 0;
  for (size_t i = 0; ds && !rc && i < n; i++) rc = op_dataset_fill(ds, fills[i].value, err);
  const cli_value *axes = cli_all(a, "--batch-axis", &n);
  for (size_t i = 0; ds && !rc && i < n; i++) rc = op_dataset_batch_axis(ds, axes[i].value, err);
  if (ds && !rc && op_dataset_set_count(ds) && (cli_has(a, "--batch") || cli_has(a, "--samples"))) {
    err->code = OP_ARG;
    snprintf(err->message, sizeof err->message,
             "%s: %s does not apply to ONNX test data: each test data set is one complete run of the model",
             cli_get(a, "--data"), cli_has(a, "--batch") ? cli_typed(a, "--batch") : cli_typed(a, "--samples"));
    rc = -1;
  }
  if (rc) {
    op_dataset_free(ds);
    ds = NULL;
  }
  return ds;
}

int cli_sample_order(const cli_args *a, op_dataset *ds, op_error *err) {
  const char *order = cli_has(a, "--sample-order") ? cli_get(a, "--sample-order") : "spread";
  if (op_dataset_set_order(ds, order, (uint64_t)cli_int(a, "--seed", 0), err)) {
    snprintf(err->message, sizeof err->message, "%s: '%s' is not one of first, spread, random",
             cli_typed(a, "--sample-order"), order);
    return -1;
  }
  return 0;
}

void cli_note_rows(const cli_args *a, char *rows) {
  if (rows && a->verbosity > 0) fprintf(stderr, "onnx-prune %s: %s", a->cmd->name, rows);
  op_free(rows);
}

op_run_options cli_run_options(const cli_args *a, int64_t default_batch) {
  return (op_run_options){.batch = cli_int(a, "--batch", default_batch),
                          .samples = cli_int(a, "--samples", 0),
                          .progress = a->verbosity >= 0};
}

int cli_check_paths(const op_model *m, const cli_path *ins, size_t n_in, const cli_path *outs, size_t n_out,
                    op_error *err) {
  op_paths *p = op_paths_new();
  int rc = m ? op_paths_model(p, "model", m, err) : 0;
  for (size_t i = 0; i < n_in && !rc; i++)
    if (ins[i].path) rc = op_paths_input(p, ins[i].role, ins[i].path, err);
  for (size_t i = 0; i < n_out && !rc; i++)
    if (outs[i].path) rc = op_paths_output(p, outs[i].role, outs[i].path, err);
  if (!rc) rc = op_paths_check(p, err);
  op_paths_free(p);
  return rc;
}

char *cli_external_data_path(const cli_args *a, const op_model *m, const char *out) {
  if (!out || !(cli_has(a, "--external-data") || (m && op_model_saves_external(m)))) return NULL;
  size_t n = strlen(out) + 6;
  char *p = malloc(n);
  if (p) snprintf(p, n, "%s.data", out);
  return p;
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double last; /* the CLI runs one command per process */

void cli_clock_start(void) { last = now(); }

void cli_note(const cli_args *a, const char *fmt, ...) {
  double t = now();
  if (a->verbosity > 0) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "onnx-prune %s: ", a->cmd->name);
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, " (%.2f s)\n", t - last);
    va_end(ap);
  }
  last = t;
}
