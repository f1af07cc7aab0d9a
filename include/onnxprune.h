/* onnxprune.h - the one public header of libonnxprune.
 * Load an ONNX transformer model, find its attention and FFN blocks, prune heads,
 * FFN neurons and layers, and write a valid smaller ONNX model back.
 * Every function that can fail takes an op_error* (may be NULL) and says how it reports failure. */
#ifndef ONNXPRUNE_H
#define ONNXPRUNE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes and their strings come from one list. */
#define OP_STATUS_MAP(X)                                   \
  X(OK, "ok")                                              \
  X(IO, "I/O error")                                       \
  X(PARSE, "not a valid ONNX model")                       \
  X(INVALID, "invalid model")                              \
  X(UNSUPPORTED, "unsupported")                            \
  X(ARG, "invalid argument")                               \
  X(NOMEM, "out of memory")

typedef enum op_status {
#define OP_STATUS_ENUM(name, str) OP_##name,
  OP_STATUS_MAP(OP_STATUS_ENUM)
#undef OP_STATUS_ENUM
} op_status;

/* An error value: the code and a one-line message with context ("model.onnx: node 'x': ..."). */
typedef struct op_error {
  op_status code;
  char message[1024];
} op_error;

/* Returns the static string for a status code ("I/O error"). */
const char *op_status_str(op_status code);

/* Frees a string or buffer returned by this library. Accepts NULL. */
void op_free(void *p);

/* ---- Model I/O ------------------------------------------------------------------------------ */

typedef struct op_model op_model;

/* Loads an ONNX model, including tensors in external data files next to it.
 * Returns NULL and sets *err on failure (the model is never partially returned). */
op_model *op_model_load(const char *path, op_error *err);

/* Loads a model from a memory buffer; external data, if any, is resolved against base_dir
 * (NULL: external data is refused). Returns NULL and sets *err on failure. */
op_model *op_model_load_buffer(const void *data, size_t size, const char *base_dir,
                               const char *origin, op_error *err);

typedef struct op_save_options {
  int external_data;            /* 1: large tensors go to PATH.data; 0: only when the total is over 2 GiB */
  size_t external_min_bytes;    /* tensors smaller than this stay inline (0: 1024) */
} op_save_options;

/* Writes the model to path through a temporary file and a rename; refuses to overwrite the file
 * the model was loaded from. opts may be NULL. Returns 0, or -1 and sets *err. */
int op_model_save(const op_model *m, const char *path, const op_save_options *opts, op_error *err);

/* Frees a model. Accepts NULL. */
void op_model_free(op_model *m);

/* Number of floating-point parameters held in initializers. */
int64_t op_model_param_count(const op_model *m);

/* Path the model was loaded from ("<buffer>" for op_model_load_buffer without origin). */
const char *op_model_path(const op_model *m);

/* ---- Analysis: attention / FFN blocks and layers ------------------------------------------------ */

typedef struct op_analysis op_analysis;

/* Finds attention and FFN blocks and the residual layers they form.
 * Returns NULL and sets *err on failure; blocks it cannot match are listed, not fatal. */
op_analysis *op_analyze(const op_model *m, op_error *err);

/* Frees an analysis. Accepts NULL. */
void op_analysis_free(op_analysis *a);

/* Number of layers found. */
int op_analysis_layer_count(const op_analysis *a);

/* The analysis as a printable table / as JSON. Returns a string to release with op_free. */
char *op_analysis_table(const op_analysis *a);
char *op_analysis_json(const op_analysis *a);

/* ---- Pruning ------------------------------------------------------------------------------------ */

typedef struct op_prune_config op_prune_config;

/* A configuration with nothing to prune. Returns NULL only when out of memory. */
op_prune_config *op_prune_config_new(void);

/* Sets one option by its config-file name, value given as text (the CLI flags map onto these):
 * head_sparsity, ffn_sparsity, width, ffn_size, num_heads, keep_layers ("0,2,4"), importance
 * (l1|l2|random), seed, scope (layer|global), compact (0|1).
 * Returns 0, or -1 and sets *err (OP_ARG) for an unknown key or a value out of range. */
int op_prune_config_set(op_prune_config *c, const char *key, const char *value, op_error *err);

/* Reads a JSON config file (see README) into c, on top of what is already set.
 * Returns 0, or -1 and sets *err naming the file and the offending entry. */
int op_prune_config_load_json(op_prune_config *c, const char *path, op_error *err);

/* Frees a config. Accepts NULL. */
void op_prune_config_free(op_prune_config *c);

typedef struct op_prune_report op_prune_report;

/* Prunes m in place as c says. Returns the report, or NULL and sets *err; on failure m is left
 * unchanged only if err->code is OP_ARG (validation happens before any rewrite). */
op_prune_report *op_prune(op_model *m, const op_prune_config *c, op_error *err);

/* The report as the printed summary / as JSON. Returns a string to release with op_free. */
char *op_prune_report_text(const op_prune_report *r, int with_plan);
char *op_prune_report_json(const op_prune_report *r);

/* Parameter counts before and after pruning. */
int64_t op_prune_report_params_before(const op_prune_report *r);
int64_t op_prune_report_params_after(const op_prune_report *r);

/* Frees a report. Accepts NULL. */
void op_prune_report_free(op_prune_report *r);

#ifdef __cplusplus
}
#endif

#endif /* ONNXPRUNE_H */
