/* commands.h - the onnx-prune commands (one option table and one function each) and the helpers
 * they share: data options, verbose notes, text files written whole. */
#ifndef OP_CLI_COMMANDS_H
#define OP_CLI_COMMANDS_H

#include "cli/args.h"

extern const cli_cmd CMD_INSPECT, CMD_PRUNE, CMD_RUN, CMD_VERIFY, CMD_QUANTIZE, CMD_COMPRESS;

int cmd_inspect(const cli_args *a);
int cmd_prune(const cli_args *a);
int cmd_run(const cli_args *a);
int cmd_verify(const cli_args *a);
int cmd_quantize(const cli_args *a);
int cmd_compress(const cli_args *a);

/* Options every command has. */
#define CLI_COMMON_OPTS                                                                               \
  CLI_OPT("--quiet", "-q", NULL, NULL, NULL, NONE, false, "print nothing but errors (no progress, no summary)") \
  CLI_OPT("--verbose", "-v", NULL, NULL, NULL, NONE, false, "also say what each step does and how long it took") \
  CLI_OPT("--max-memory", NULL, "SIZE", "3/4 of available memory", NULL, BYTES, false,                  \
          "refuse any model- or data-sized allocation over SIZE (K, M, G, T suffixes)")                 \
  CLI_OPT("--help", "-h", NULL, NULL, NULL, NONE, false, "print this help")

/* Data options (run, verify, quantize, compress, prune's activation importance); batch_key and
 * samples_key name the library config keys the values go to (NULL: the command reads them itself). */
#define CLI_DATA_OPTS(data_help, batch_def, batch_key, samples_def, samples_key)                          \
  CLI_OPT("--data", NULL, "PATH", NULL, NULL, NONE, false, data_help)                                    \
  CLI_OPT("--batch", NULL, "N", batch_def, batch_key, COUNT, false, "samples per run")                   \
  CLI_OPT("--samples", NULL, "N", samples_def, samples_key, COUNT, false, "use the first N samples")     \
  CLI_OPT("--fill", NULL, "NAME=VALUE", NULL, NULL, NONE, true,                                          \
          "a constant for an input the data lacks (e.g. attention_mask=1)")                              \
  CLI_OPT("--batch-axis", NULL, "N|NAME=N", NULL, NULL, NONE, true,                                      \
          "the axis that holds the samples where the model's dimension names do not say (NAME=N per "    \
          "input; NAME=none: the input has none and is passed whole)")

/* Which rows calibrate (issue 12): prune, quantize, compress. */
#define CLI_SAMPLE_OPTS                                                                                   \
  CLI_OPT("--sample-order", NULL, "first|spread|random", "spread", NULL, NONE, false,                     \
          "which rows calibrate: spread over the whole file, the first ones, or random (seeded by --seed); " \
          "rows that score a search are taken after them in the same order, so never the same")

/* The accuracy floor (issue 12): prune and compress search the target and keep the smallest model that passes. */
#define CLI_FLOOR_OPTS                                                                                    \
  CLI_OPT("--max-drop", NULL, "P", NULL, "max_drop", NONE, false,                                         \
          "accuracy floor: at most P points of task accuracy below the original (data with labels)")      \
  CLI_OPT("--min-agreement", NULL, "A", NULL, "min_agreement", NONE, false,                               \
          "accuracy floor: top-1 agreement with the original at least A (a fraction)")                    \
  CLI_OPT("--min-cosine", NULL, "C", NULL, "min_cosine", NONE, false,                                     \
          "accuracy floor: mean cosine similarity with the original's outputs at least C")                \
  CLI_OPT("--max-ppl-increase", NULL, "P", NULL, "max_ppl_increase", NONE, false,                         \
          "accuracy floor: perplexity at most P percent above the original's (language models)")          \
  CLI_OPT("--eval-samples", NULL, "N", "256", "eval_samples", NONE, false,                                \
          "rows that judge the floor, taken after the calibration rows in the same order")                \
  CLI_OPT("--search-steps", NULL, "N", "6", "search_steps", NONE, false,                                  \
          "candidates the floor's bisection tries")

#define CLI_DATA_HELP                                                                                     \
  ".npz (arrays named after the graph inputs), a folder of NAME.npy, or ONNX test data (input_N.pb, "   \
  "test_data_set_*/: each set one complete run); samples are cut along the model's batch axis"

/* Opens --data with its --fill values; NULL and *err on failure. */
op_dataset *cli_open_data(const cli_args *a, op_error *err);
/* Sets the data's sample order from --sample-order (default spread) and --seed (default 0). */
int cli_sample_order(const cli_args *a, op_dataset *ds, op_error *err);
/* With -v: the rows text (op_*_report_rows) on stderr; frees it. */
void cli_note_rows(const cli_args *a, char *rows);
/* The run options of the data flags (progress on unless -q). */
op_run_options cli_run_options(const cli_args *a, int64_t default_batch);
/* File safety, before any work: every output path given (NULL entries are skipped) is compared with
 * the model's files, every input and every other output; one line names both on a clash. */
typedef struct cli_path {
  const char *role, *path;
} cli_path;
int cli_check_paths(const op_model *m, const cli_path *ins, size_t n_in, const cli_path *outs, size_t n_out,
                    op_error *err);
/* OUT.data, which --external-data writes beside OUT, and so does saving a model whose weights reach 2 GiB
 * (judged on m as loaded: pruning and quantising only shrink it); NULL when neither; free with free(). */
char *cli_external_data_path(const cli_args *a, const op_model *m, const char *out);
/* With -v: "onnx-prune CMD: MESSAGE (0.12 s)" on stderr, the time since the previous note. */
void cli_clock_start(void);
void cli_note(const cli_args *a, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
