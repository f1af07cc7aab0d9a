/* progress.c - see progress.h. */
#include "verify/progress.h"

#include <stdio.h>
#include <time.h>
#include <unistd.h>

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

void op_progress_begin(op_progress *p, bool wanted, int64_t total, const char *label) {
  p->on = wanted && isatty(STDERR_FILENO);
  p->total = total;
  p->shown = -1;
  p->start = p->last = now();
  p->label = label;
}

void op_progress_update(op_progress *p, int64_t done) {
  if (!p->on) return;
  double t = now();
  if ((t - p->last < 0.2 && done < p->total) || done == p->shown) return;
  p->last = t;
  p->shown = done;
  double rate = t > p->start ? (double)done / (t - p->start) : 0;
  int eta = rate > 0 ? (int)((double)(p->total - done) / rate + 0.5) : 0;
  int width = 30, fill = p->total ? (int)((double)width * (double)done / (double)p->total) : width;
  char bar[64];
  for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
  bar[width] = 0;
  fprintf(stderr, "\r%s [%s] %lld/%lld samples  %.1f samples/s  ETA %d:%02d ", p->label, bar, (long long)done,
          (long long)p->total, rate, eta / 60, eta % 60);
  fflush(stderr);
}

void op_progress_end(op_progress *p) {
  if (!p->on) return;
  op_progress_update(p, p->total);
  fputc('\n', stderr);
}
