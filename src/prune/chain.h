/* chain.h - calibration passes that start where the previous one stopped. Each block's statistics need
 * values deep in the model; running the model from its inputs for every block costs depth squared (24
 * forward passes over the calibration data for BERT-base's 12 layers). A chain keeps, per calibration
 * batch, the values that cross the boundary of what its passes have computed so far, in an unlinked
 * temporary file (so memory stays flat whatever the number of samples), and the next pass runs only the
 * nodes past that boundary, reading it back. Values that a weight edited since then reaches are computed
 * again from what is still valid. Graphs with If/Loop subgraphs (outer-scope reads are not edges) run
 * every pass from the data. */
#ifndef OP_CHAIN_H
#define OP_CHAIN_H

#include "model/graph.h"
#include "onnxprune.h"

typedef struct op_chain op_chain;

/* A chain over model m (gr: its index, kept up to date by the caller) fed by the first `samples`
 * samples of d (0: all) in batches of `batch`. targets: every value the chain's passes may ask for; the
 * boundary keeps only what computing them needs. Where the temporary file cannot be made or written (a
 * full disk), the chain goes on without it, every later pass from the data, and says so on stderr once
 * when `tell`. NULL with *err when the data does not fit the model. */
op_chain *op_chain_new(const op_model *m, const op_graph *gr, const op_dataset *d, int64_t samples, int64_t batch,
                       const char *const *targets, size_t n_targets, bool tell, op_error *err);
void op_chain_free(op_chain *ch);
/* The samples a pass runs over. */
int64_t op_chain_samples(const op_chain *ch);

/* Opens a pass that computes `names` for every batch, with the model's initializers as they are now.
 * edited: the initializers whose bytes changed since the chain's last pass. A progress bar labelled
 * `label` is drawn when progress is set. Returns 0, or -1 with *err. */
int op_chain_open(op_chain *ch, const char *const *names, size_t n, const char *const *edited, size_t n_edited,
                  bool progress, const char *label, op_error *err);
/* How many nodes the open pass runs (the rest come from the boundary or are not needed). */
size_t op_chain_nodes(const op_chain *ch);
/* The next batch: outputs[0..n) (the caller's, op_tensor_clear) and its sample count. Returns 1, 0 after
 * the last batch, or -1 with *err. */
int op_chain_next(op_chain *ch, op_tensor *outputs, int64_t *count, op_error *err);
/* Ends the pass. complete: it ran every batch, so its boundary becomes the chain's; otherwise the chain
 * forgets what it had (its next pass starts from the data). */
void op_chain_close(op_chain *ch, bool complete);

#endif
