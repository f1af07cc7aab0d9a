/* cmd_quant.c - `quantize` (int8 QDQ) and `compress` (prune from a config, then quantize). */
#include "cli/commands.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QUANT_OPTS                                                                                           \
  CLI_OPT("--output", "-o", "OUT", NULL, NULL, NONE, false, "where to write the quantised model")          \
  CLI_DATA_OPTS("calibration data (" CLI_DATA_HELP ")", "8", "batch", "256", "calibration_samples")        \
  CLI_SAMPLE_OPTS                                                                                          \
  CLI_OPT("--seed", NULL, "N", "0", NULL, NATURAL, false, "seed of --sample-order spread|random")          \
  CLI_OPT("--method", NULL, "M[,M...]", "kl", "method", NONE, false,                                       \
          "abs_max, min_max, avg, hist, mse, kl, emd; several: try each, keep the best")                  \
  CLI_OPT("--batches", NULL, "B[,B...]", NULL, "batches", NONE, false,                                     \
          "calibrate on B batches; several: try each (with every method), keep the best")                \
  CLI_OPT("--eval-samples", NULL, "N", "256", "eval_samples", NONE, false,                                 \
          "held-out samples that score the candidates of a search")                                       \
  CLI_OPT("--percentile", NULL, "P", "99.99", "percentile", NONE, false, "for --method hist")              \
  CLI_OPT("--weight-granularity", NULL, "channel|tensor", "channel", "weight_granularity", NONE, false,    \
          "int8 weight scales per output channel or per tensor")                                          \
  CLI_OPT("--activation-type", NULL, "int8|uint8", "uint8", "activation_type", NONE, false,                \
          "activation type")                                                                              \
  CLI_OPT("--symmetric", NULL, NULL, NULL, "symmetric", NONE, false, "symmetric activations (zero point 0 for int8)") \
  CLI_OPT("--profile", NULL, "tensorrt|ort", "ort", "profile", NONE, false,                                \
          "tensorrt: int8 symmetric activations; ort: uint8 asymmetric")                                  \
  CLI_OPT("--op-types", NULL, "LIST", "MatMul,Gemm,Gather", "op_types", NONE, false,                       \
          "op types to quantise: MatMul, Gemm, Gather, Conv, AttentionMatMul, Add")                       \
  CLI_OPT("--include", NULL, "GLOB[,...]", NULL, "include", NONE, true,                                    \
          "quantise only nodes whose names match (ONNX Runtime's nodes_to_quantize)")                     \
  CLI_OPT("--exclude", NULL, "GLOB[,...]", NULL, "exclude", NONE, true, "node names to leave in float")    \
  CLI_OPT("--reduce-range", NULL, NULL, NULL, "reduce_range", NONE, false,                                 \
          "7-bit weights (ONNX Runtime's reduce_range, for CPUs without VNNI)")                           \
  CLI_OPT("--bias-correction", NULL, NULL, NULL, "bias_correction", NONE, false,                           \
          "fold each layer's expected weight-quantisation error into its bias")                           \
  CLI_OPT("--report", NULL, "FILE.json", NULL, NULL, NONE, false, "write the report as JSON")              \
  CLI_OPT("--external-data", NULL, NULL, NULL, NULL, NONE, false,                                          \
          "store tensors of 1 KiB and more in OUT.data (automatic over 2 GiB)")                           \
  CLI_COMMON_OPTS

static const cli_opt QUANTIZE_OPTS[] = {QUANT_OPTS};
static const cli_opt COMPRESS_OPTS[] = {
    CLI_OPT("--config", NULL, "FILE.json", NULL, NULL, NONE, false,
            "{\"prune\": {...}, \"quantize\": {...}} (see README); flags override its quantize part")
    /* issue 12: the accuracy floor, each candidate pruned and quantised (prune config keys) */
    CLI_OPT("--max-drop", NULL, "P", NULL, NULL, NONE, false,
            "accuracy floor: at most P points of task accuracy below the original (data with labels)")
    CLI_OPT("--min-agreement", NULL, "A", NULL, NULL, NONE, false, "accuracy floor: top-1 agreement at least A")
    CLI_OPT("--min-cosine", NULL, "C", NULL, NULL, NONE, false, "accuracy floor: mean cosine similarity at least C")
    CLI_OPT("--max-ppl-increase", NULL, "P", NULL, NULL, NONE, false,
            "accuracy floor: perplexity at most P percent above the original's (language models)")
    CLI_OPT("--html", NULL, "FILE.html", NULL, NULL, NONE, false,
            "write the pruning report as one self-contained page (head grids, FFN widths, score histograms, search curve)")
    QUANT_OPTS
};

const cli_cmd CMD_QUANTIZE = {"quantize", "MODEL -o OUT --data PATH [options]",
                              "int8 post-training quantisation to QDQ (weights per channel, calibrated activations)",
                              1, 1, "MODEL", QUANTIZE_OPTS, sizeof QUANTIZE_OPTS / sizeof *QUANTIZE_OPTS};
const cli_cmd CMD_COMPRESS = {"compress", "MODEL -o OUT --config FILE.json --data PATH [options]",
                              "prune, then quantise, from one config", 1, 1, "MODEL", COMPRESS_OPTS,
                              sizeof COMPRESS_OPTS / sizeof *COMPRESS_OPTS};

static int quant_setter(void *c, const char *key, const char *value, op_error *err) {
  return op_quant_config_set(c, key, value, err);
}

static char *join_reports(const char *pj, const char *qj) {
  size_t n = strlen(qj) + strlen(pj) + 64;
  char *both = malloc(n);
  if (both) snprintf(both, n, "{\"prune\": %s, \"quantize\": %s}", pj, qj);
  return both;
}

/* The floor flags of compress set prune config keys (its other flags are quantize options). */
static int compress_floor_flags(const cli_args *a, op_prune_config *pc, op_error *err) {
  static const char *const flags[][2] = {{"--max-drop", "max_drop"}, {"--min-agreement", "min_agreement"},
                                         {"--min-cosine", "min_cosine"}, {"--max-ppl-increase", "max_ppl_increase"}};
  for (size_t i = 0; i < sizeof flags / sizeof *flags; i++)
    if (cli_has(a, flags[i][0]) && op_prune_config_set(pc, flags[i][1], cli_get(a, flags[i][0]), err)) {
      const char *colon = strchr(err->message, ':');
      char msg[sizeof err->message];
      snprintf(msg, sizeof msg, "%s%s", cli_typed(a, flags[i][0]), colon ? colon : "");
      snprintf(err->message, sizeof err->message, "%s", msg);
      return -1;
    }
  return 0;
}

static int quantize_or_compress(const cli_args *a, bool compress) {
  if (!cli_has(a, "--output")) return cli_error(a->cmd, "missing -o OUT");
  if (!cli_has(a, "--data")) return cli_error(a->cmd, "missing --data PATH");
  if (compress && !cli_has(a, "--config")) return cli_error(a->cmd, "missing --config FILE.json");
  const char *model = a->pos[0], *out = cli_get(a, "--output"), *report = cli_get(a, "--report");
  op_error err = {0};
  op_prune_config *pc = op_prune_config_new();
  op_quant_config *qc = op_quant_config_new();
  int rc = pc && qc ? 0 : -1;
  if (rc) err.code = OP_NOMEM, snprintf(err.message, sizeof err.message, "out of memory");
  if (!rc && compress) rc = op_compress_config_load(cli_get(a, "--config"), pc, qc, &err);
  if (!rc) rc = cli_apply(a, quant_setter, qc, &err);
  if (!rc && compress) rc = compress_floor_flags(a, pc, &err);
  /* one calibration sample count for both steps: the floor's evaluation rows start after the larger */
  if (!rc && compress && cli_has(a, "--samples")) rc = op_prune_config_set(pc, "samples", cli_get(a, "--samples"), &err);
  if (!rc && a->verbosity >= 0) {
    op_quant_config_set(qc, "progress", "true", NULL);
    op_prune_config_set(pc, "progress", "true", NULL);
  }
  if (!rc) rc = op_quant_config_check(qc, &err);
  if (!rc && compress) rc = op_prune_config_check(pc, &err);
  op_dataset *ds = rc ? NULL : cli_open_data(a, &err);
  if (ds && cli_sample_order(a, ds, &err)) op_dataset_free(ds), ds = NULL;
  if (ds && compress && op_prune_config_uses_data(pc)) op_prune_config_set_data(pc, ds);
  op_model *m = ds ? op_model_load(model, &err) : NULL;
  if (m) cli_note(a, "loaded %s", model);
  char *out_data = cli_external_data_path(a, m, out);
  cli_path ins[] = {{"--config", compress ? cli_get(a, "--config") : NULL}, {"--data", cli_get(a, "--data")}};
  const char *html = compress ? cli_get(a, "--html") : NULL;
  cli_path outs[] = {{"-o", out}, {"-o's external data", out_data}, {"--report", report}, {"--html", html}};
  if (m && cli_check_paths(m, ins, 2, outs, 4, &err)) op_model_free(m), m = NULL;
  free(out_data);
  bool floor = compress && op_prune_config_has_floor(pc);
  op_model *best = NULL;
  op_quant_report *qr = NULL;
  op_prune_report *pr = !m || !compress ? NULL : floor ? op_prune_search(m, pc, qc, &best, &qr, &err) : op_prune(m, pc, &err);
  if (pr) cli_note(a, floor ? "searched (each candidate pruned and quantised)" : "pruned");
  if (pr && floor && !op_prune_report_passed(pr)) {
    char *curve = op_prune_report_curve(pr);
    if (curve) fputs(curve, stderr);
    op_free(curve);
    cli_error(a->cmd, "no candidate met the accuracy floor: nothing written");
    op_prune_report_free(pr);
    op_dataset_free(ds);
    op_model_free(m);
    op_quant_config_free(qc);
    op_prune_config_free(pc);
    return 1;
  }
  if (best) op_model_free(m), m = best;
  if (!floor) qr = m && (!compress || pr) ? op_quantize(m, ds, qc, &err) : NULL;
  if (qr) cli_note(a, "quantised");
  if (qr) cli_note_rows(a, op_quant_report_rows(qr));
  op_save_options save = {.external_data = cli_has(a, "--external-data")};
  rc = qr ? 0 : -1;
  op_staged *staged = NULL; /* the report appears only once the model is in place */
  if (!rc && report) {
    char *qj = op_quant_report_json(qr), *pj = pr ? op_prune_report_json(pr) : NULL;
    char *both = pj ? join_reports(pj, qj) : NULL;
    if (!(staged = op_stage_text(report, pj ? both : qj, &err))) rc = -1;
    op_free(qj), op_free(pj), free(both);
  }
  op_staged *page = NULL; /* the HTML report (issue 12), committed with the JSON one */
  if (!rc && html && pr) {
    char *text = op_prune_report_html(pr, "then quantised to int8 (QDQ); every candidate of a search was judged quantised");
    if (!(page = op_stage_text(html, text, &err))) rc = -1;
    op_free(text);
  }
  if (!rc) rc = op_model_save(m, out, &save, &err);
  if (rc) op_staged_abort(staged), op_staged_abort(page);
  else if ((rc = op_staged_commit(staged, &err))) op_staged_abort(page);
  else rc = op_staged_commit(page, &err);
  if (!rc) cli_note(a, "wrote %s", out);
  if (!rc && a->verbosity >= 0) {
    printf("%s -> %s\n", model, out);
    if (pr && floor) {
      char *curve = op_prune_report_curve(pr);
      if (curve) fputs(curve, stdout);
      op_free(curve);
    }
    if (pr) {
      char *t = op_prune_report_text(pr, 0);
      fputs(t, stdout);
      op_free(t);
    }
    char *t = op_quant_report_text(qr);
    fputs(t, stdout);
    op_free(t);
  }
  op_quant_report_free(qr);
  op_prune_report_free(pr);
  op_dataset_free(ds);
  op_model_free(m);
  op_quant_config_free(qc);
  op_prune_config_free(pc);
  return rc ? cli_fail(a, &err) : 0;
}

int cmd_quantize(const cli_args *a) { return quantize_or_compress(a, false); }
int cmd_compress(const cli_args *a) { return quantize_or_compress(a, true); }
