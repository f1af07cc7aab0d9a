/* common.c - helpers the commands share: the data set behind --data/--fill, run options, verbose
 * step notes, and text files written whole (temporary file + rename). */
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
  for (size_t i = 0; ds && i < n; i++)
    if (op_dataset_fill(ds, fills[i].value, err)) {
      op_dataset_free(ds);
      ds = NULL;
    }
  return ds;
}

op_run_options cli_run_options(const cli_args *a, int64_t default_batch) {
  return (op_run_options){.batch = cli_int(a, "--batch", default_batch),
                          .samples = cli_int(a, "--samples", 0),
                          .progress = a->verbosity >= 0};
}

int cli_write_text(const char *path, const char *text, op_error *err) {
  size_t n = strlen(path) + 16;
  char *tmp = malloc(n);
  if (!tmp) {
    err->code = OP_NOMEM;
    snprintf(err->message, sizeof err->message, "%s: out of memory", path);
    return -1;
  }
  snprintf(tmp, n, "%s.tmp.XXXXXX", path);
  int fd = mkstemp(tmp);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!f) {
    err->code = OP_IO;
    snprintf(err->message, sizeof err->message, "%s: %s", path, strerror(errno));
    if (fd >= 0) close(fd), unlink(tmp);
    free(tmp);
    return -1;
  }
  bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
  ok = (fclose(f) == 0) && ok;
  int rc = 0;
  if (!ok || rename(tmp, path) != 0) {
    err->code = OP_IO;
    snprintf(err->message, sizeof err->message, "%s: %s", path, strerror(errno));
    unlink(tmp);
    rc = -1;
  }
  free(tmp);
  return rc;
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
