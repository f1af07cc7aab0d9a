/* stream.h - feeding a window of a data set through a session batch by batch: the one loop that
 * `run`, calibration and verification share. */
#ifndef OP_STREAM_H
#define OP_STREAM_H

#include "onnxprune.h"

/* The samples [*first, *first + return) of d that a run uses: `first` and `samples` clamped to what
 * the data holds for the session's inputs (samples 0: all). Returns -1 with *err when the data does
 * not fit the inputs. */
int64_t op_sample_window(const op_dataset *d, const op_session *s, int64_t first, int64_t samples, int64_t *first_out,
                         op_error *err);

/* Called with each batch's outputs (one per session output) and its sample count. */
typedef int (*op_batch_fn)(void *user, const op_tensor *outputs, int64_t count, op_error *err);

/* Runs samples [first, first + total) in batches; the observer also sees every graph input when
 * observe_inputs is set. A progress bar labelled `label` is drawn when progress is asked for. */
int op_stream(op_session *s, const op_dataset *d, int64_t first, int64_t total, int64_t batch, op_observer observer,
              void *obs_user, bool observe_inputs, op_batch_fn on_batch, void *batch_user, bool progress,
              const char *label, op_error *err);

#endif
