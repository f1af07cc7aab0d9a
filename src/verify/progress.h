/* progress.h - a one-line progress bar on stderr (samples done, samples/s, ETA), drawn only when
 * stderr is a terminal and at most a few times a second. */
#ifndef OP_PROGRESS_H
#define OP_PROGRESS_H

#include <stdbool.h>
#include <stdint.h>

typedef struct op_progress {
  bool on;
  int64_t total, shown; /* shown: samples in the last line drawn */
  double start, last;
  const char *label;
} op_progress;

void op_progress_begin(op_progress *p, bool wanted, int64_t total, const char *label);
void op_progress_update(op_progress *p, int64_t done);
void op_progress_end(op_progress *p);

#endif
