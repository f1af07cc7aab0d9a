/* onnxprune.h - the one public header of libonnxprune.
 * Load an ONNX transformer model, find its attention and FFN blocks, prune heads,
 * FFN neurons and layers, and write a valid smaller ONNX model back.
 * Every function that can fail takes an op_error* (may be NULL) and says how it reports failure. */
#ifndef ONNXPRUNE_H
#define ONNXPRUNE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "onnxprune_version.h" /* OP_VERSION_MAJOR / MINOR / PATCH / STRING, from meson.build */

/* Marks the public API: the library is built with hidden visibility and exports only these. */
#if defined(_WIN32) && defined(OP_BUILDING_LIBRARY)
#define OP_API __declspec(dllexport)
#elif defined(_WIN32)
#define OP_API
#elif defined(OP_BUILDING_LIBRARY)
#define OP_API __attribute__((visibility("default")))
#else
#define OP_API
#endif

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

/* The library's version, "MAJOR.MINOR.PATCH" (OP_VERSION_STRING of the build). */
OP_API const char *op_version(void);

/* Returns the static string for a status code ("I/O error"). */
OP_API const char *op_status_str(op_status code);

/* Frees a string or buffer returned by this library. Accepts NULL. */
OP_API void op_free(void *p);

/* ---- Model I/O ------------------------------------------------------------------------------ */

typedef struct op_model op_model;
typedef struct op_dataset op_dataset;

/* Loads an ONNX model, including tensors in external data files next to it.
 * Returns NULL and sets *err on failure (the model is never partially returned). */
OP_API op_model *op_model_load(const char *path, op_error *err);

/* Loads a model from a memory buffer; external data, if any, is resolved against base_dir
 * (NULL: external data is refused). Returns NULL and sets *err on failure. */
OP_API op_model *op_model_load_buffer(const void *data, size_t size, const char *base_dir,
                               const char *origin, op_error *err);

typedef struct op_save_options {
  int external_data;            /* 1: large tensors go to PATH.data; 0: only when the total is over 2 GiB */
  size_t external_min_bytes;    /* tensors smaller than this stay inline (0: 1024) */
} op_save_options;

/* Writes the model to path through a temporary file and a rename; refuses to overwrite the file
 * the model was loaded from. opts may be NULL. Returns 0, or -1 and sets *err. */
OP_API int op_model_save(const op_model *m, const char *path, const op_save_options *opts, op_error *err);
/* 1 when op_model_save would put m's tensors (as they are now) into PATH.data without being asked, because
 * they come near protobuf's 2 GiB limit; 0 otherwise. For checking PATH.data against inputs beforehand. */
OP_API int op_model_saves_external(const op_model *m);

/* Frees a model. Accepts NULL. */
OP_API void op_model_free(op_model *m);

/* Number of floating-point parameters held in initializers. */
OP_API int64_t op_model_param_count(const op_model *m);

/* Path the model was loaded from ("<buffer>" for op_model_load_buffer without origin). */
OP_API const char *op_model_path(const op_model *m);

/* ---- Analysis: attention / FFN blocks and layers ------------------------------------------------ */

typedef struct op_analysis op_analysis;

/* Finds attention and FFN blocks and the residual layers they form.
 * Returns NULL and sets *err on failure; blocks it cannot match are listed, not fatal.
 * It first folds Slices of stored weights whose bounds it can compute (torch's cross-attention
 * in-projection) into stored weights, in m itself: the model computes exactly what it did. */
OP_API op_analysis *op_analyze(const op_model *m, op_error *err);

/* Frees an analysis. Accepts NULL. */
OP_API void op_analysis_free(op_analysis *a);

/* Number of layers found. */
OP_API int op_analysis_layer_count(const op_analysis *a);

/* The analysis as a printable table / as JSON. Returns a string to release with op_free. */
OP_API char *op_analysis_table(const op_analysis *a);
OP_API char *op_analysis_json(const op_analysis *a);

/* What `onnx-prune inspect` prints: opset imports, producer, graph inputs and outputs (type and shape,
 * symbolic axes by name), op counts by domain, parameters by data type, then the analysis table;
 * the JSON has the same under "graph" next to the analysis. Returns a string to release with op_free,
 * or NULL when out of memory. */
OP_API char *op_inspect_text(const op_model *m, const op_analysis *a);
OP_API char *op_inspect_json(const op_model *m, const op_analysis *a);

/* ---- Pruning ------------------------------------------------------------------------------------ */

typedef struct op_prune_config op_prune_config;

/* A configuration with nothing to prune. Returns NULL only when out of memory. */
OP_API op_prune_config *op_prune_config_new(void);

/* Sets one option by its config-file name, value given as text (the CLI flags map onto these):
 * head_sparsity, ffn_sparsity, width, ffn_size, num_heads, keep_layers ("0,2,4"), importance
 * (l1|l2|random|activation|reconstruction), seed, scope (layer|global), compact (0|1), compensate
 * (true|false; no_compensate sets the opposite), samples and batch (for the calibration data), progress
 * (a progress bar on a terminal while activations are collected).
 * Returns 0, or -1 and sets *err (OP_ARG) for an unknown key or a value out of range. */
OP_API int op_prune_config_set(op_prune_config *c, const char *key, const char *value, op_error *err);

/* Calibration data for importance "activation" / "reconstruction" and for compensation (samples and
 * batch: config keys "samples", "batch"). Data given (d not NULL) makes importance "reconstruction"
 * unless importance was set, and turns compensation on unless it was set. The data set must outlive
 * the config's use. */
OP_API void op_prune_config_set_data(op_prune_config *c, const op_dataset *d);

/* Reads a JSON config file (see README) into c, on top of what is already set.
 * Returns 0, or -1 and sets *err naming the file and the offending entry. */
OP_API int op_prune_config_load_json(op_prune_config *c, const char *path, op_error *err);

/* Checks that the options set agree with each other (e.g. a seed needs importance random).
 * op_prune checks this too. Returns 0, or -1 and sets *err (OP_ARG) naming the config keys. */
OP_API int op_prune_config_check(const op_prune_config *c, op_error *err);

/* Whether the config uses calibration data (importance activation or reconstruction, or compensation
 * on), i.e. needs op_prune_config_set_data. */
OP_API bool op_prune_config_uses_data(const op_prune_config *c);

/* Frees a config. Accepts NULL. */
OP_API void op_prune_config_free(op_prune_config *c);

/* Whether the config sets an accuracy floor (max_drop, min_agreement, min_cosine, max_ppl_increase), to be
 * met by op_prune_search rather than op_prune. */
OP_API bool op_prune_config_has_floor(const op_prune_config *c);

typedef struct op_prune_report op_prune_report;

/* Prunes m in place as c says. Returns the report, or NULL and sets *err; on failure m is left
 * unchanged only if err->code is OP_ARG (validation happens before any rewrite). */
OP_API op_prune_report *op_prune(op_model *m, const op_prune_config *c, op_error *err);

typedef struct op_quant_config op_quant_config;
typedef struct op_quant_report op_quant_report;
/* The accuracy floor (issue 12): searches the target (target_flops, or target_params when that is set;
 * the value given, if any, is the least fraction tried) by bisection over search_steps candidates, each
 * pruned from a copy of m (and quantised as q says when q is not NULL) and judged against m on the
 * config's data: eval_samples rows taken after the calibration rows in the data's sample order. Keeps the
 * smallest candidate that passes in *best (with its quantisation report in *qbest when q is given).
 * Returns the report of the kept candidate with the whole curve, or NULL and sets *err; when no
 * candidate passes, returns the report with *best NULL (op_prune_report_passed says so). */
OP_API op_prune_report *op_prune_search(const op_model *m, const op_prune_config *c, const op_quant_config *q,
                                        op_model **best, op_quant_report **qbest, op_error *err);
/* Whether a search kept a candidate (true also for a report of op_prune, which has no floor). */
OP_API bool op_prune_report_passed(const op_prune_report *r);
/* The search curve as a table (target, FLOPs kept, parameters kept, accuracy or agreement, perplexity),
 * or NULL when there was no search. Release with op_free. */
OP_API char *op_prune_report_curve(const op_prune_report *r);

/* The report as one self-contained HTML page (inline SVG and CSS, no script, no network): per layer the
 * kept and removed heads and the FFN width kept, the distribution of the scores units were ranked by,
 * predicted vs measured reconstruction error per block where the report has them, the search curve.
 * note (or NULL): a line under the title. Returns a string to release with op_free. */
OP_API char *op_prune_report_html(const op_prune_report *r, const char *note);

/* The report as the printed summary / as JSON. Returns a string to release with op_free. */
OP_API char *op_prune_report_text(const op_prune_report *r, int with_plan);
OP_API char *op_prune_report_json(const op_prune_report *r);

/* The file rows calibration used, one by one ("calibration rows: 5,933,...\n"), or NULL when no data
 * was used. Release with op_free. */
OP_API char *op_prune_report_rows(const op_prune_report *r);

/* Parameter counts before and after pruning. */
OP_API int64_t op_prune_report_params_before(const op_prune_report *r);
OP_API int64_t op_prune_report_params_after(const op_prune_report *r);

/* Frees a report. Accepts NULL. */
OP_API void op_prune_report_free(op_prune_report *r);


/* ---- Running models: the CPU executor ----------------------------------------------------------- */

#define OP_MAX_DIMS 8

/* A dense tensor. dtype is the ONNX TensorProto data type (1 float, 2 uint8, 3 int8, 6 int32, 7 int64,
 * 9 bool). A tensor filled by this library owns its data; release it with op_tensor_clear. */
typedef struct op_tensor {
  int32_t dtype;
  int rank;
  int64_t dims[OP_MAX_DIMS];
  void *data;
  size_t nbytes;
} op_tensor;

/* Frees the data of a tensor this library filled and zeroes it. Accepts NULL. */
OP_API void op_tensor_clear(op_tensor *t);

typedef struct op_session op_session;

/* Prepares a model to run: every operator must be supported (checked here, before any work).
 * The model must outlive the session. Returns NULL and sets *err on failure. */
OP_API op_session *op_session_new(const op_model *m, op_error *err);
OP_API void op_session_free(op_session *s);

/* Graph inputs (initializers excluded) and outputs. dims of a dynamic axis read -1. */
OP_API size_t op_session_input_count(const op_session *s);
OP_API const char *op_session_input_name(const op_session *s, size_t i);
OP_API void op_session_input_info(const op_session *s, size_t i, int32_t *dtype, int *rank, int64_t dims[OP_MAX_DIMS]);
OP_API size_t op_session_output_count(const op_session *s);
OP_API const char *op_session_output_name(const op_session *s, size_t i);

/* Called with every node output as it is computed; the tensor is only valid during the call. */
typedef void (*op_observer)(void *user, const char *name, const op_tensor *value);

/* Runs the model on inputs (one per graph input, in order) and fills outputs (one per graph output).
 * observer may be NULL. Returns 0, or -1 and sets *err (naming the input or node at fault). */
OP_API int op_session_run(op_session *s, const op_tensor *inputs, op_tensor *outputs, op_observer observer, void *user,
                   op_error *err);

/* ---- Data: .npz, a folder of NAME.npy, or ONNX test data (input_N.pb, test_data_set_*) ------------ */

/* Opens input data. A .npz or a folder of NAME.npy stacks samples along the model's batch axis; ONNX
 * test data (input_N.pb in a folder, or test_data_set_N folders) holds sets, each one complete run.
 * Returns NULL and sets *err. */
OP_API op_dataset *op_dataset_open(const char *path, op_error *err);
OP_API void op_dataset_free(op_dataset *d);

/* Supplies a constant for an input the data lacks: "NAME=VALUE" (e.g. attention_mask=1). */
OP_API int op_dataset_fill(op_dataset *d, const char *spec, op_error *err);

/* Sets the batch axis, along which stacked data is cut and outputs are gathered, where the model's
 * symbolic dimension names do not give it: "N" for every input and output, "NAME=N" for one input,
 * "NAME=none" for an input without one (passed whole). Later specs override earlier ones. */
OP_API int op_dataset_batch_axis(op_dataset *d, const char *spec, op_error *err);

/* ONNX test data: the number of sets (0 for stacked data) and the name of set k ("test_data_set_0",
 * or "" for input_N.pb given directly). With sets, a "sample" of the calls below is one whole set. */
OP_API size_t op_dataset_set_count(const op_dataset *d);
OP_API const char *op_dataset_set_name(const op_dataset *d, size_t k);

/* Number of samples the data holds for the session's inputs (along each input's batch axis); -1 and
 * *err when an input is missing, its arrays disagree (the message names the input, the expected and
 * the found shape/dtype) or its batch axis cannot be known (the message says how to give it). */
OP_API int64_t op_dataset_samples(const op_dataset *d, const op_session *s, op_error *err);

/* Fills one tensor per session input with samples [start, start+count), cut along each input's
 * batch axis (inputs without one are passed whole); with ONNX test data, set `start` (count 1). */
OP_API int op_dataset_batch(const op_dataset *d, const op_session *s, int64_t start, int64_t count, op_tensor *inputs,
                     op_error *err);

/* Which file rows the samples are (stacked rows and test data sets alike): order "first" (file order,
 * the default), "spread" (over the whole file, in a seeded bit-reversal order, so the first N samples
 * are spread too and the next M are spread and never the same rows) or "random" (seeded).
 * Returns 0, or -1 and sets *err (OP_ARG) for an unknown order. */
OP_API int op_dataset_set_order(op_dataset *d, const char *order, uint64_t seed, op_error *err);
/* Holds these file rows out of every sample (rows another step calibrated or searched on). */
OP_API void op_dataset_hold_out(op_dataset *d, const int64_t *rows, size_t n);
/* Holds out every row a prune / quantize / compress report (JSON) lists as calibration or evaluation rows.
 * Returns 0, or -1 and sets *err when the file cannot be read or lists none. */
OP_API int op_dataset_hold_out_report(op_dataset *d, const char *report_path, op_error *err);
/* The file row of sample k under the order and the rows held out (valid after op_dataset_samples;
 * -1 when k is past the samples). Labels are read at this row. */
OP_API int64_t op_dataset_row(const op_dataset *d, int64_t k);

/* An array of the data by name (e.g. "labels"), or NULL. */
OP_API const op_tensor *op_dataset_array(const op_dataset *d, const char *name);

/* Writes one tensor as an ONNX TensorProto file (output_N.pb of ONNX test data), named `name`
 * (temporary file + rename). */
OP_API int op_pb_write(const char *path, const char *name, const op_tensor *t, op_error *err);

/* Writes named arrays as an uncompressed .npz (temporary file + rename). */
OP_API int op_npz_write(const char *path, const char *const *names, const op_tensor *arrays, size_t n, op_error *err);

/* ---- Running over a data set and comparing two models --------------------------------------------- */

typedef struct op_run_options {
  int64_t batch;   /* samples per run (0: 1) */
  int64_t samples; /* samples to use (0: all from `first` on) */
  int64_t first;   /* the first sample to use */
  bool progress;   /* progress bar on stderr */
  /* verify: an element passes when |candidate - reference| <= atol + rtol * |reference| */
  double atol, rtol;
  /* verify, language models: tokens whose label is the ignore index are not scored (-100 unless set) */
  bool ignore_index_set;
  int64_t ignore_index;
} op_run_options;

/* Runs m over the data set and returns its outputs concatenated over samples (one tensor per output,
 * in *outputs, count in *n). Returns 0, or -1 and sets *err. */
OP_API int op_run_dataset(const op_model *m, const op_dataset *d, const op_run_options *o, op_tensor **outputs, size_t *n,
                   op_error *err);

typedef struct op_verify_report op_verify_report;

/* Runs reference and candidate on the same samples and compares every output: max abs diff, mean
 * cosine similarity per sample, top-1 agreement for logits-like outputs ([samples, classes]) and,
 * when the data has a "labels" array, the task accuracy of both. Returns NULL and sets *err. */
OP_API op_verify_report *op_verify(const op_model *reference, const op_model *candidate, const op_dataset *d,
                            const op_run_options *o, op_error *err);
OP_API char *op_verify_report_text(const op_verify_report *r);
OP_API char *op_verify_report_json(const op_verify_report *r);
/* Worst mean cosine and worst top-1 agreement over the outputs (1 where not applicable). */
OP_API double op_verify_min_cosine(const op_verify_report *r);
OP_API double op_verify_min_agreement(const op_verify_report *r);
/* Language models ([samples, seq, vocab] logits, next-token labels [rows, seq] in the data): the
 * perplexity of the reference (candidate false) or the candidate over the scored tokens, or -1 when no
 * output is scored so. */
OP_API double op_verify_perplexity(const op_verify_report *r, bool candidate);
/* The reference's accuracy on the labels, or -1 when the data has none. */
OP_API double op_verify_reference_accuracy(const op_verify_report *r);
/* The candidate's accuracy on the labels, or -1 when the data has none. */
OP_API double op_verify_candidate_accuracy(const op_verify_report *r);
/* Per output: its name, its element count over the samples, and how many elements were outside the
 * tolerance of the run options (atol, rtol). i < op_verify_output_count(r). */
OP_API size_t op_verify_output_count(const op_verify_report *r);
OP_API const char *op_verify_output_name(const op_verify_report *r, size_t i);
OP_API int64_t op_verify_output_elements(const op_verify_report *r, size_t i);
OP_API int64_t op_verify_output_mismatches(const op_verify_report *r, size_t i);
OP_API void op_verify_report_free(op_verify_report *r);

/* ---- int8 quantisation to QDQ --------------------------------------------------------------------- */

typedef struct op_quant_config op_quant_config;

/* Defaults: method kl, per-channel int8 weights, uint8 asymmetric activations (the ORT profile),
 * MatMul, Gemm and embedding Gather quantised, 256 calibration samples in batches of 8. */
OP_API op_quant_config *op_quant_config_new(void);
OP_API void op_quant_config_free(op_quant_config *c);

/* Sets one option by name, value as text: method ("kl" or a list "kl,mse,hist" to search),
 * batches ("1,4,16"), percentile, weight_granularity (channel|tensor), activation_type (int8|uint8),
 * symmetric, profile (tensorrt|ort), op_types ("MatMul,Gemm,Gather,AttentionMatMul,Add"),
 * include and exclude (node-name globs; include: only these), reduce_range (7-bit weights), bias_correction,
 * batch, calibration_samples, eval_samples, progress (a progress bar on a terminal).
 * Returns 0, or -1 and sets *err (OP_ARG). */
OP_API int op_quant_config_set(op_quant_config *c, const char *key, const char *value, op_error *err);

/* Checks that the options set agree, whatever the order they were set in (e.g. profile tensorrt
 * with activation_type uint8, percentile without method hist). op_quantize checks this too.
 * Returns 0, or -1 and sets *err (OP_ARG) naming the config keys. */
OP_API int op_quant_config_check(const op_quant_config *c, op_error *err);

typedef struct op_quant_report op_quant_report;

/* Calibrates on d and rewrites m in place into QDQ form; with several methods or batch counts, each
 * candidate is scored against the fp32 model on held-out samples and the best is kept.
 * Returns the report, or NULL and sets *err. */
OP_API op_quant_report *op_quantize(op_model *m, const op_dataset *d, const op_quant_config *c, op_error *err);
/* Reads a compress config: {"prune": {...as op_prune_config_load_json...}, "quantize": {...options}}.
 * Returns 0, or -1 and sets *err naming the file and the entry. */
OP_API int op_compress_config_load(const char *path, op_prune_config *p, op_quant_config *q, op_error *err);
OP_API char *op_quant_report_text(const op_quant_report *r);
OP_API char *op_quant_report_json(const op_quant_report *r);
OP_API void op_quant_report_free(op_quant_report *r);
/* The file rows calibration and the search's scoring used, one by one, or NULL. Release with op_free. */
OP_API char *op_quant_report_rows(const op_quant_report *r);

/* ---- File safety and the memory budget ---------------------------------------------------------- */

/* The inputs and outputs of one command. Before anything is written, every output is compared with
 * every input and with the other outputs, by device and inode (or, for an output not yet there, by
 * its resolved folder and name), so no input is ever overwritten through any path to it. */
typedef struct op_paths op_paths;
OP_API op_paths *op_paths_new(void);
/* Accepts NULL. */
OP_API void op_paths_free(op_paths *p);
/* An input file, or a folder of inputs (its files and those one folder down); role names it in
 * messages ("--data"). Returns 0, or -1 and sets *err when it does not exist. */
OP_API int op_paths_input(op_paths *p, const char *role, const char *path, op_error *err);
/* A loaded model's file and every external data file it read. Returns 0 or -1 and sets *err. */
OP_API int op_paths_model(op_paths *p, const char *role, const op_model *m, op_error *err);
/* An output path: its folder must exist, and if it exists it must be a regular file.
 * Returns 0, or -1 and sets *err (OP_ARG). */
OP_API int op_paths_output(op_paths *p, const char *role, const char *path, op_error *err);
/* Returns 0, or -1 and sets *err (OP_ARG) with one line naming the clashing output and input/output. */
OP_API int op_paths_check(const op_paths *p, op_error *err);

/* A text output written (with a final newline) and synced to a temporary file beside path, renamed into
 * place by op_staged_commit, removed by op_staged_abort: it appears only when the whole command succeeded.
 * Returns NULL and sets *err on failure (nothing is left behind). */
typedef struct op_staged op_staged;
OP_API op_staged *op_stage_text(const char *path, const char *text, op_error *err);
/* Renames the staged file into place and frees s (NULL: nothing to do). Returns 0 or -1 and sets *err. */
OP_API int op_staged_commit(op_staged *s, op_error *err);
/* Removes the staged file and frees s. Accepts NULL. */
OP_API void op_staged_abort(op_staged *s);

/* The memory budget: every allocation sized by a model or by data (executor tensors, decompressed
 * arrays, external data) is checked against it first and refused with OP_NOMEM instead of exhausting
 * memory. Default: three quarters of the machine's available memory. text: bytes with an optional
 * K/M/G/T suffix (powers of 1024), e.g. "512M", "8G". Returns 0, or -1 and sets *err (OP_ARG). */
OP_API int op_set_max_memory(const char *text, op_error *err);
/* The budget in bytes. */
OP_API uint64_t op_max_memory(void);

#ifdef __cplusplus
}
#endif

#endif /* ONNXPRUNE_H */
