/* cmd_prune.c - `inspect` (what the matcher finds) and `prune` (remove heads, neurons, layers). */
#include "cli/commands.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const cli_opt INSPECT_OPTS[] = {
    CLI_OPT("--json", NULL, NULL, NULL, NULL, NONE, false, "print the same as JSON")
    CLI_COMMON_OPTS
};

const cli_cmd CMD_INSPECT = {"inspect", "MODEL [--json]",
                             "opsets, producer, inputs and outputs, op counts, parameters by type, and per layer the "
                             "attention / FFN blocks found",
                             1, 1, "MODEL", INSPECT_OPTS, sizeof INSPECT_OPTS / sizeof *INSPECT_OPTS};

int cmd_inspect(const cli_args *a) {
  const char *model = a->pos[0];
  op_error err = {0};
  op_model *m = op_model_load(model, &err);
  if (!m) return cli_fail(a, &err);
  cli_note(a, "loaded %s", model);
  op_analysis *an = op_analyze(m, &err);
  if (!an) {
    op_model_free(m);
    return cli_fail(a, &err);
  }
  bool json = cli_has(a, "--json");
  char *text = json ? op_inspect_json(m, an) : op_inspect_text(m, an);
  if (!text) {
    op_analysis_free(an);
    op_model_free(m);
    return cli_error(a->cmd, "%s: out of memory", model);
  }
  fputs(text, stdout);
  if (json) fputc('\n', stdout);
  op_free(text);
  op_analysis_free(an);
  op_model_free(m);
  return 0;
}

/* The options that ask for something to be removed; prune without any of them would copy the model. */
static const char *const PRUNING_FLAGS[] = {"--head-sparsity", "--ffn-sparsity",     "--width",
                                            "--num-heads",     "--ffn-size",         "--num-kv-heads",
                                            "--kv-head-sparsity", "--keep-layers",   "--compact", "--config",
                                            "--target-flops",  "--target-params",    "--max-drop",
                                            "--min-agreement", "--min-cosine",       "--max-ppl-increase"};

static const cli_opt PRUNE_OPTS[] = {
    CLI_OPT("--output", "-o", "OUT", NULL, NULL, NONE, false, "where to write the pruned model")
    CLI_OPT("--head-sparsity", NULL, "R", NULL, "head_sparsity", NONE, false,
            "fraction of heads to remove, in [0, 1) (per layer, or see --scope)")
    CLI_OPT("--ffn-sparsity", NULL, "R", NULL, "ffn_sparsity", NONE, false, "fraction of FFN neurons to remove, in [0, 1)")
    CLI_OPT("--width", NULL, "W", NULL, "width", NONE, false,
            "keep fraction W of heads and FFN neurons, in (0, 1] (DynaBERT's width multiplier)")
    CLI_OPT("--num-heads", NULL, "N", NULL, "num_heads", NONE, false, "heads to keep per layer")
    CLI_OPT("--ffn-size", NULL, "N", NULL, "ffn_size", NONE, false, "FFN neurons to keep per layer")
    CLI_OPT("--num-kv-heads", NULL, "N", NULL, "num_kv_heads", NONE, false,
            "grouped-query attention: kv groups to keep per layer (with all their query heads)")
    CLI_OPT("--kv-head-sparsity", NULL, "R", NULL, "kv_head_sparsity", NONE, false,
            "grouped-query attention: fraction of kv groups to remove")
    CLI_OPT("--keep-layers", NULL, "L", NULL, "keep_layers", NONE, false,
            "comma-separated layers to keep (0,2; encoder.0,decoder.1 with two stacks); the others are removed whole")
    CLI_OPT("--config", NULL, "FILE.json", NULL, NULL, NONE, false,
            "per-layer control (see README); flags given too override its top level")
    CLI_OPT("--target-flops", NULL, "R", NULL, "target_flops", NONE, false,
            "keep the fraction R, in (0, 1], of the attention and FFN blocks' FLOPs per token, removing heads and "
            "neurons where the importance is lowest per FLOP")
    CLI_OPT("--target-params", NULL, "R", NULL, "target_params", NONE, false,
            "the same for the attention and FFN blocks' parameters")
    CLI_OPT("--flops-seq", NULL, "N", "128", "flops_seq", NONE, false,
            "sequence length at which attention scores and context are counted in FLOPs")
    CLI_OPT("--multiple-of", NULL, "N", "1", "multiple_of", NONE, false,
            "round each kept FFN width (and heads x head size) to a multiple of N, so the products stay fast")
    CLI_FLOOR_OPTS
    CLI_OPT("--importance", NULL, "M", "l2; reconstruction with --data", "importance", NONE, false,
            "how units are ranked: l2, l1, random, activation or reconstruction (both need --data; reconstruction: "
            "the block output error when a unit is removed and the rest refit, block by block)")
    CLI_DATA_OPTS("calibration data for --importance activation / reconstruction, for compensation and for an accuracy "
                  "floor (" CLI_DATA_HELP ")", "8", "batch", "256", "samples")
    CLI_SAMPLE_OPTS
    CLI_OPT("--no-compensate", NULL, NULL, NULL, "no_compensate", NONE, false,
            "with --data, do not refit the kept output-projection rows and bias to the original block output")
    CLI_OPT("--seed", NULL, "N", "0", "seed", NONE, false,
            "seed for --importance random and for the --sample-order of --data")
    CLI_OPT("--scope", NULL, "S", "layer", "scope", NONE, false,
            "layer: each layer loses the same fraction; global: rank the units of all layers together")
    CLI_OPT("--alloc-steps", NULL, "N", "auto: 8, fewer when a candidate is slow", "alloc_steps", NONE, false,
            "with reconstruction and --scope global or a target: moves of heads / neurons between layers the "
            "allocation search judges end to end on the calibration data (0: off)")
    CLI_OPT("--compact", NULL, NULL, NULL, "compact", NONE, false,
            "remove heads and neurons whose weights are already all zero (exact)")
    CLI_OPT("--report", NULL, "FILE.json", NULL, NULL, NONE, false, "write the report as JSON")
    CLI_OPT("--html", NULL, "FILE.html", NULL, NULL, NONE, false,
            "write the report as one self-contained page (head grids, FFN widths, score histograms, search curve)")
    CLI_OPT("--dry-run", NULL, NULL, NULL, NULL, NONE, false, "print the plan and the report; write nothing")
    CLI_OPT("--external-data", NULL, NULL, NULL, NULL, NONE, false,
            "store tensors of 1 KiB and more in OUT.data (automatic over 2 GiB)")
    CLI_COMMON_OPTS
};

const cli_cmd CMD_PRUNE = {"prune", "MODEL -o OUT [options]",
                           "remove attention heads, FFN neurons or whole layers and write a smaller model", 1, 1,
                           "MODEL", PRUNE_OPTS, sizeof PRUNE_OPTS / sizeof *PRUNE_OPTS};

static int prune_setter(void *c, const char *key, const char *value, op_error *err) {
  return op_prune_config_set(c, key, value, err);
}

/* Refusals that need only the flags: nothing asked, nowhere to write, data options without data. */
static int prune_usage_checks(const cli_args *a) {
  bool asked = false;
  for (size_t i = 0; i < sizeof PRUNING_FLAGS / sizeof *PRUNING_FLAGS; i++) asked |= cli_has(a, PRUNING_FLAGS[i]);
  if (!asked)
    return cli_error(a->cmd, "nothing to prune: give --head-sparsity, --ffn-sparsity, --width, --num-heads, "
                             "--ffn-size, --num-kv-heads, --kv-head-sparsity, --keep-layers, --compact, --target-flops, "
                             "--target-params or --config");
  bool dry = cli_has(a, "--dry-run");
  if (!cli_has(a, "--output") && !dry) return cli_error(a->cmd, "missing -o OUT (or --dry-run)");
  if (dry && (cli_has(a, "--report") || cli_has(a, "--html")))
    return cli_error(a->cmd, "%s and --dry-run contradict each other (--dry-run writes nothing)",
                     cli_has(a, "--report") ? "--report" : "--html");
  const char *needs_data[] = {"--batch", "--samples", "--fill", "--sample-order", "--max-drop", "--min-agreement",
                              "--min-cosine", "--max-ppl-increase", "--eval-samples", "--search-steps", "--no-compensate",
                              "--alloc-steps"};
  for (size_t i = 0; i < sizeof needs_data / sizeof *needs_data; i++)
    if (cli_has(a, needs_data[i]) && !cli_has(a, "--data"))
      return cli_error(a->cmd, "%s applies only with --data (calibration data)", cli_typed(a, needs_data[i]));
  return 0;
}

/* issue 12: prints the search curve; a floor no candidate met is exit 1 (a threshold not met), nothing written. */
static int cli_search_outcome(const cli_args *a, const op_prune_report *r) {
  char *curve = op_prune_report_curve(r);
  bool passed = op_prune_report_passed(r);
  if (curve && (a->verbosity >= 0 || !passed)) fputs(curve, passed ? stdout : stderr);
  op_free(curve);
  if (passed) return 0;
  cli_error(a->cmd, "no candidate met the accuracy floor: nothing written");
  return 1;
}

int cmd_prune(const cli_args *a) {
  int rc = prune_usage_checks(a);
  if (rc) return rc;
  const char *model = a->pos[0], *out = cli_get(a, "--output"), *report = cli_get(a, "--report");
  bool dry = cli_has(a, "--dry-run");
  op_error err = {0};
  op_prune_config *c = op_prune_config_new();
  if (!c) return cli_error(a->cmd, "out of memory");
  if (cli_has(a, "--config") && op_prune_config_load_json(c, cli_get(a, "--config"), &err)) rc = -1;
  if (!rc && cli_apply(a, prune_setter, c, &err)) rc = -1;
  if (!rc && a->verbosity >= 0) op_prune_config_set(c, "progress", "true", NULL);
  op_dataset *ds = !rc && cli_has(a, "--data") ? cli_open_data(a, &err) : NULL;
  if (!rc && cli_has(a, "--data") && (!ds || cli_sample_order(a, ds, &err))) rc = -1;
  /* data: reconstruction and compensation unless chosen otherwise, before the check (a --seed orders
   * the data's rows then) */
  if (!rc) op_prune_config_set_data(c, ds);
  if (!rc && op_prune_config_check(c, &err)) rc = -1;
  if (rc) {
    op_dataset_free(ds);
    op_prune_config_free(c);
    return cli_fail(a, &err);
  }
  if (ds && !op_prune_config_uses_data(c)) {
    op_prune_config_free(c);
    op_dataset_free(ds);
    return cli_error(a->cmd, "%s applies only to --importance activation or reconstruction, to compensation or to an "
                     "accuracy floor (the data would not be used with --no-compensate)", cli_typed(a, "--data"));
  }
  op_model *m = op_model_load(model, &err);
  if (m) cli_note(a, "loaded %s", model);
  char *out_data = dry ? NULL : cli_external_data_path(a, m, out);
  cli_path ins[] = {{"--config", cli_get(a, "--config")}, {"--data", cli_get(a, "--data")}};
  const char *html = cli_get(a, "--html");
  cli_path outs[] = {{"-o", dry ? NULL : out}, {"-o's external data", out_data}, {"--report", dry ? NULL : report},
                     {"--html", dry ? NULL : html}};
  if (m && cli_check_paths(m, ins, 2, outs, 4, &err)) op_model_free(m), m = NULL;
  free(out_data);
  op_model *best = NULL; /* the accuracy floor's kept candidate (issue 12) */
  bool floor = op_prune_config_has_floor(c);
  op_prune_report *r = !m ? NULL : floor ? op_prune_search(m, c, NULL, &best, NULL, &err) : op_prune(m, c, &err);
  op_prune_config_free(c);
  op_dataset_free(ds);
  if (!r) {
    op_model_free(m);
    return cli_fail(a, &err);
  }
  cli_note(a, floor ? "searched" : "pruned");
  if (floor && (rc = cli_search_outcome(a, r))) {
    op_prune_report_free(r);
    op_model_free(m);
    return rc;
  }
  if (best) op_model_free(m), m = best;
  cli_note_rows(a, op_prune_report_rows(r));
  op_save_options save = {.external_data = cli_has(a, "--external-data")};
  char *json = op_prune_report_json(r);
  op_staged *staged = NULL; /* the report appears only once the model is in place */
  if (report && !dry && !(staged = op_stage_text(report, json, &err))) rc = -1;
  op_staged *page = NULL; /* the HTML report, committed with the JSON one */
  if (!rc && html && !dry) {
    char *text = op_prune_report_html(r, NULL);
    if (!(page = op_stage_text(html, text, &err))) rc = -1;
    op_free(text);
  }
  if (!rc && !dry && op_model_save(m, out, &save, &err)) rc = -1;
  if (rc) op_staged_abort(staged), op_staged_abort(page);
  else if (op_staged_commit(staged, &err)) op_staged_abort(page), rc = -1;
  else if (op_staged_commit(page, &err)) rc = -1;
  if (!rc && !dry) cli_note(a, "wrote %s", out);
  if (!rc && (a->verbosity >= 0 || dry)) {
    char *text = op_prune_report_text(r, dry);
    if (!dry) printf("%s -> %s\n", model, out);
    fputs(text, stdout);
    op_free(text);
  }
  op_free(json);
  op_prune_report_free(r);
  op_model_free(m);
  return rc ? cli_fail(a, &err) : 0;
}
