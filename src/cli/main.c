/* main.c - the onnx-prune command line: a thin layer over libonnxprune.
 * Exit codes: 0 success, 2 bad input or usage (one line on stderr, nothing written),
 * 1 reserved for verification thresholds not met. */
#include "onnxprune.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_BAD 2

static const char *USAGE =
    "usage: onnx-prune <command> [options]\n"
    "\n"
    "commands:\n"
    "  inspect MODEL [--json]            list attention / FFN blocks per layer and parameter shares\n"
    "  prune MODEL -o OUT [options]      remove heads, FFN neurons or layers and write a smaller model\n"
    "  run MODEL --data PATH -o OUT.npz  run the model on the data with its own CPU executor, save the outputs\n"
    "  quantize MODEL -o OUT --data PATH [options]   int8 post-training quantisation to QDQ\n"
    "  compress MODEL -o OUT --config FILE.json --data PATH   prune, then quantize, from one config\n"
    "  verify REFERENCE CANDIDATE --data PATH [--json] [--min-cosine C] [--min-agreement A]\n"
    "                                    run both on the same samples and compare their outputs\n"
    "\n"
    "prune options:\n"
    "  --head-sparsity R     fraction of heads to remove, in [0, 1) (per layer, or see --scope)\n"
    "  --ffn-sparsity R      fraction of FFN neurons to remove, in [0, 1)\n"
    "  --width W             keep fraction W of heads and FFN neurons, in (0, 1] (DynaBERT style)\n"
    "  --num-heads N         heads to keep per layer\n"
    "  --ffn-size N          FFN width to keep per layer\n"
    "  --num-kv-heads N      grouped-query attention: kv groups to keep per layer (with all their query heads)\n"
    "  --kv-head-sparsity R  grouped-query attention: fraction of kv groups to remove\n"
    "  --keep-layers L       comma-separated layer indices to keep; the others are dropped\n"
    "  --config FILE.json    per-layer control (see README); flags given too override its top level\n"
    "  --importance M        l2 (default), l1, random, or activation (needs --data: rms activation on the data\n"
    "                        times the norm of the unit's output-projection rows)\n"
    "  --data PATH           calibration data for --importance activation (with --samples, --batch, --fill)\n"
    "  --seed N              seed for --importance random\n"
    "  --scope S             layer (default): each layer loses the same fraction; global: rank all layers together\n"
    "  --compact             remove heads and neurons whose weights are already all zero (exact)\n"
    "  --report FILE.json    write the report as JSON\n"
    "  --dry-run             print the plan and the report, write nothing\n"
    "  --external-data       store large tensors in OUT.data (automatic over 2 GiB)\n"
    "  -q, --quiet           print nothing on success\n"
    "\n"
    "run / verify options:\n"
    "  --data PATH           .npz (arrays named after the graph inputs), a folder of NAME.npy, or ONNX test\n"
    "                        data (input_N.pb, test_data_set_*/); the first axis is the sample axis\n"
    "  --batch N             samples per run (default 1)\n"
    "  --samples N           use only the first N samples\n"
    "  --fill NAME=VALUE     a constant for an input the data lacks (repeatable)\n"
    "  --json                (verify) print the report as JSON\n"
    "  --min-cosine C        (verify) exit 1 when an output's mean cosine similarity is below C\n"
    "  --min-agreement A     (verify) exit 1 when top-1 agreement is below A (a fraction)\n"
    "\n"
    "quantize options (calibration data: --data, --fill; --batch N samples per calibration run, default 8;\n"
    "--samples N calibration samples, default 256):\n"
    "  --method M[,M...]     abs_max, min_max, avg, hist, mse, kl (default), emd; several: try each, keep the best\n"
    "  --batches B[,B...]    calibrate on B batches; several: try each (with every method), keep the best\n"
    "  --eval-samples N      held-out samples that score the candidates (default 256)\n"
    "  --percentile P        for hist (default 99.99)\n"
    "  --weight-granularity channel|tensor   int8 weight scales per output channel (default) or per tensor\n"
    "  --activation-type int8|uint8          (default uint8)\n"
    "  --symmetric           symmetric activations (zero point 0 for int8)\n"
    "  --profile tensorrt|ort  tensorrt: int8 symmetric activations; ort: uint8 asymmetric (default)\n"
    "  --op-types LIST       MatMul,Gemm,Gather (default), AttentionMatMul, Add\n"
    "  --exclude GLOB[,...]  node names to leave in float\n"
    "  --bias-correction     fold each layer's expected weight-quantisation error into its bias\n"
    "  --report FILE.json, --external-data, -q as for prune\n";

static int fail(const op_error *err) {
  fprintf(stderr, "onnx-prune: %s\n", err->message);
  return EXIT_BAD;
}

static int usage_error(const char *fmt, const char *arg) {
  fprintf(stderr, "onnx-prune: ");
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (see onnx-prune --help)\n");
  return EXIT_BAD;
}

/* Writes text to path through a temporary file and a rename. */
static int write_text_file(const char *path, const char *text, op_error *err) {
  char tmp[PATH_MAX];
  if (snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", path) >= (int)sizeof tmp) {
    snprintf(err->message, sizeof err->message, "%s: path too long", path);
    return -1;
  }
  int fd = mkstemp(tmp);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!f) {
    snprintf(err->message, sizeof err->message, "%s: %s", path, strerror(errno));
    if (fd >= 0) close(fd), unlink(tmp);
    return -1;
  }
  bool ok = fputs(text, f) >= 0 && fputc('\n', f) != EOF;
  ok = (fclose(f) == 0) && ok;
  if (!ok || rename(tmp, path) != 0) {
    snprintf(err->message, sizeof err->message, "%s: %s", path, strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}

static int cmd_inspect(int argc, char **argv) {
  const char *model = NULL;
  bool json = false;
  for (int i = 0; i < argc; i++) {
    if (strcmp(argv[i], "--json") == 0) json = true;
    else if (argv[i][0] == '-' && argv[i][1]) return usage_error("inspect: unknown option '%s'", argv[i]);
    else if (model) return usage_error("inspect: unexpected argument '%s'", argv[i]);
    else model = argv[i];
  }
  if (!model) return usage_error("inspect: %s", "missing MODEL");
  op_error err = {0};
  op_model *m = op_model_load(model, &err);
  if (!m) return fail(&err);
  op_analysis *a = op_analyze(m, &err);
  if (!a) {
    op_model_free(m);
    return fail(&err);
  }
  char *text = json ? op_analysis_json(a) : op_analysis_table(a);
  fputs(text, stdout);
  if (json) fputc('\n', stdout);
  op_free(text);
  op_analysis_free(a);
  op_model_free(m);
  return 0;
}

/* Data options shared by run, verify, quantize and prune's activation importance. */
typedef struct data_args {
  const char *data;
  op_run_options run;
  const char *fills[64];
  int n_fills;
} data_args;

/* Consumes argv[*i] if it is a data option; returns 1 if consumed, 0 if not, -1 on error. */
static int data_option(int argc, char **argv, int *i, data_args *d, const char *cmd) {
  const char *a = argv[*i];
  bool known = !strcmp(a, "--data") || !strcmp(a, "--batch") || !strcmp(a, "--samples") || !strcmp(a, "--fill");
  if (!known) return 0;
  if (*i + 1 >= argc) {
    usage_error("%s needs a value", a);
    return -1;
  }
  const char *v = argv[++*i];
  if (!strcmp(a, "--data")) {
    d->data = v;
  } else if (!strcmp(a, "--fill")) {
    if (d->n_fills == 64) return usage_error("%s: too many --fill", cmd), -1;
    d->fills[d->n_fills++] = v;
  } else {
    char *e;
    errno = 0;
    long long n = strtoll(v, &e, 10);
    if (errno || *e || e == v || n < 1) {
      fprintf(stderr, "onnx-prune: %s: '%s' is not a whole number >= 1\n", a, v);
      return -1;
    }
    if (!strcmp(a, "--batch")) d->run.batch = n;
    else d->run.samples = n;
  }
  return 1;
}

static op_dataset *open_data(const data_args *d, op_error *err) {
  op_dataset *ds = op_dataset_open(d->data, err);
  for (int i = 0; ds && i < d->n_fills; i++)
    if (op_dataset_fill(ds, d->fills[i], err)) {
      op_dataset_free(ds);
      ds = NULL;
    }
  return ds;
}

/* Flags that map one-to-one onto config keys. */
static const struct {
  const char *flag, *key;
} CONFIG_FLAGS[] = {
    {"--head-sparsity", "head_sparsity"}, {"--ffn-sparsity", "ffn_sparsity"}, {"--width", "width"},
    {"--num-heads", "num_heads"},         {"--ffn-size", "ffn_size"},         {"--keep-layers", "keep_layers"},
    {"--importance", "importance"},       {"--seed", "seed"},                 {"--scope", "scope"},
    /* grouped-query attention (issue 9) */
    {"--num-kv-heads", "num_kv_heads"},   {"--kv-head-sparsity", "kv_head_sparsity"},
};

static int cmd_prune(int argc, char **argv) {
  const char *model = NULL, *out = NULL, *config = NULL, *report = NULL;
  bool dry = false, quiet = false, compact = false;
  op_save_options save = {0};
  const char *keys[32], *values[32];
  int nset = 0;
  data_args d = {.run = {.progress = false}};
  for (int i = 0; i < argc; i++) {
    int dr = data_option(argc, argv, &i, &d, "prune");
    if (dr < 0) return EXIT_BAD;
    if (dr) continue;
    const char *a = argv[i];
    const char *key = NULL;
    for (size_t k = 0; k < sizeof CONFIG_FLAGS / sizeof *CONFIG_FLAGS; k++)
      if (strcmp(a, CONFIG_FLAGS[k].flag) == 0) key = CONFIG_FLAGS[k].key;
    bool takes_value = key || !strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--config") ||
                       !strcmp(a, "--report");
    if (takes_value && i + 1 >= argc) return usage_error("prune: %s needs a value", a);
    if (key) {
      if (nset == 32) return usage_error("prune: too many options at '%s'", a);
      keys[nset] = key;
      values[nset++] = argv[++i];
    } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = argv[++i];
    else if (!strcmp(a, "--config")) config = argv[++i];
    else if (!strcmp(a, "--report")) report = argv[++i];
    else if (!strcmp(a, "--dry-run")) dry = true;
    else if (!strcmp(a, "--compact")) compact = true;
    else if (!strcmp(a, "--external-data")) save.external_data = 1;
    else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = true;
    else if (a[0] == '-' && a[1]) return usage_error("prune: unknown option '%s'", a);
    else if (model) return usage_error("prune: unexpected argument '%s'", a);
    else model = a;
  }
  if (!model) return usage_error("prune: %s", "missing MODEL");
  if (!out && !dry) return usage_error("prune: %s", "missing -o OUT (or --dry-run)");
  op_error err = {0};
  op_prune_config *c = op_prune_config_new();
  int rc = 0;
  if (config && op_prune_config_load_json(c, config, &err)) rc = -1;
  for (int i = 0; i < nset && !rc; i++) {
    op_error inner;
    if (op_prune_config_set(c, keys[i], values[i], &inner)) {
      /* name the flag as typed, not the config key */
      const char *flag = keys[i];
      for (size_t k = 0; k < sizeof CONFIG_FLAGS / sizeof *CONFIG_FLAGS; k++)
        if (!strcmp(CONFIG_FLAGS[k].key, keys[i])) flag = CONFIG_FLAGS[k].flag;
      const char *colon = strchr(inner.message, ':');
      snprintf(err.message, sizeof err.message, "%s%.900s", flag, colon ? colon : inner.message);
      rc = -1;
    }
  }
  if (!rc && compact) op_prune_config_set(c, "compact", "1", NULL);
  char num[32];
  if (!rc && d.run.batch) snprintf(num, sizeof num, "%lld", (long long)d.run.batch), rc = op_prune_config_set(c, "batch", num, &err);
  if (!rc && d.run.samples) snprintf(num, sizeof num, "%lld", (long long)d.run.samples), rc = op_prune_config_set(c, "samples", num, &err);
  if (rc) {
    op_prune_config_free(c);
    return fail(&err);
  }
  op_dataset *ds = d.data ? open_data(&d, &err) : NULL;
  if (d.data && !ds) {
    op_prune_config_free(c);
    return fail(&err);
  }
  op_prune_config_set_data(c, ds);
  op_model *m = op_model_load(model, &err);
  op_prune_report *r = m ? op_prune(m, c, &err) : NULL;
  op_prune_config_free(c);
  op_dataset_free(ds);
  if (!r) {
    op_model_free(m);
    return fail(&err);
  }
  rc = 0;
  if (!dry && op_model_save(m, out, &save, &err)) rc = -1;
  char *json = op_prune_report_json(r);
  if (!rc && report && !dry && write_text_file(report, json, &err)) rc = -1;
  if (!rc && (!quiet || dry)) {
    char *text = op_prune_report_text(r, dry);
    if (!dry) printf("%s -> %s\n", model, out);
    fputs(text, stdout);
    op_free(text);
  }
  op_free(json);
  op_prune_report_free(r);
  op_model_free(m);
  if (rc) {
    if (!dry && report) unlink(out); /* model written but the report failed: leave nothing half-done */
    return fail(&err);
  }
  return 0;
}

static int cmd_run(int argc, char **argv) {
  const char *model = NULL, *out = NULL;
  data_args d = {.run = {.progress = true}};
  for (int i = 0; i < argc; i++) {
    int r = data_option(argc, argv, &i, &d, "run");
    if (r < 0) return EXIT_BAD;
    if (r) continue;
    if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && i + 1 < argc) out = argv[++i];
    else if (argv[i][0] == '-' && argv[i][1]) return usage_error("run: unknown option '%s'", argv[i]);
    else if (model) return usage_error("run: unexpected argument '%s'", argv[i]);
    else model = argv[i];
  }
  if (!model || !d.data || !out) return usage_error("run: %s", "needs MODEL, --data PATH and -o OUT.npz");
  op_error err = {0};
  op_model *m = op_model_load(model, &err);
  op_dataset *ds = m ? open_data(&d, &err) : NULL;
  op_tensor *outs = NULL;
  size_t n = 0;
  int rc = ds ? op_run_dataset(m, ds, &d.run, &outs, &n, &err) : -1;
  if (!rc) {
    op_session *s = op_session_new(m, &err);
    const char **names = calloc(n ? n : 1, sizeof *names);
    for (size_t i = 0; s && i < n; i++) names[i] = op_session_output_name(s, i);
    rc = s ? op_npz_write(out, names, outs, n, &err) : -1;
    free(names);
    op_session_free(s);
  }
  for (size_t i = 0; i < n; i++) op_tensor_clear(&outs[i]);
  free(outs);
  op_dataset_free(ds);
  op_model_free(m);
  return rc ? fail(&err) : 0;
}

static int parse_threshold(const char *flag, const char *v, double *out) {
  char *e;
  errno = 0;
  double x = strtod(v, &e);
  if (errno || *e || e == v || !(x >= -1 && x <= 1)) {
    fprintf(stderr, "onnx-prune: %s: '%s' is outside [-1, 1]\n", flag, v);
    return -1;
  }
  *out = x;
  return 0;
}

static int cmd_verify(int argc, char **argv) {
  const char *paths[2] = {NULL, NULL};
  data_args d = {.run = {.progress = true}};
  bool json = false;
  double min_cos = -2, min_agree = -2;
  int np = 0;
  for (int i = 0; i < argc; i++) {
    int r = data_option(argc, argv, &i, &d, "verify");
    if (r < 0) return EXIT_BAD;
    if (r) continue;
    const char *a = argv[i];
    if (!strcmp(a, "--json")) json = true;
    else if (!strcmp(a, "--min-cosine") && i + 1 < argc) {
      if (parse_threshold(a, argv[++i], &min_cos)) return EXIT_BAD;
    } else if (!strcmp(a, "--min-agreement") && i + 1 < argc) {
      if (parse_threshold(a, argv[++i], &min_agree)) return EXIT_BAD;
    } else if (a[0] == '-' && a[1]) return usage_error("verify: unknown option or missing value '%s'", a);
    else if (np == 2) return usage_error("verify: unexpected argument '%s'", a);
    else paths[np++] = a;
  }
  if (np < 2 || !d.data) return usage_error("verify: %s", "needs REFERENCE, CANDIDATE and --data PATH");
  op_error err = {0};
  op_model *a = op_model_load(paths[0], &err);
  op_model *b = a ? op_model_load(paths[1], &err) : NULL;
  op_dataset *ds = b ? open_data(&d, &err) : NULL;
  op_verify_report *r = ds ? op_verify(a, b, ds, &d.run, &err) : NULL;
  int rc = 0;
  if (!r) {
    rc = fail(&err);
  } else {
    char *text = json ? op_verify_report_json(r) : op_verify_report_text(r);
    fputs(text, stdout);
    if (json) fputc('\n', stdout);
    op_free(text);
    if (min_cos > -2 && op_verify_min_cosine(r) < min_cos) {
      fprintf(stderr, "onnx-prune: verify: mean cosine %.6f is below --min-cosine %g\n", op_verify_min_cosine(r), min_cos);
      rc = 1;
    }
    if (min_agree > -2 && op_verify_min_agreement(r) < min_agree) {
      fprintf(stderr, "onnx-prune: verify: top-1 agreement %.4f is below --min-agreement %g\n", op_verify_min_agreement(r), min_agree);
      rc = 1;
    }
  }
  op_verify_report_free(r);
  op_dataset_free(ds);
  op_model_free(b);
  op_model_free(a);
  return rc;
}

static const struct {
  const char *flag, *key;
} QUANT_FLAGS[] = {
    {"--method", "method"},         {"--batches", "batches"},   {"--percentile", "percentile"},
    {"--weight-granularity", "weight_granularity"}, {"--activation-type", "activation_type"},
    {"--profile", "profile"},       {"--op-types", "op_types"}, {"--exclude", "exclude"},
    {"--eval-samples", "eval_samples"},
};

/* quantize and compress (prune first, from the config's "prune" section). */
static int cmd_quantize(int argc, char **argv, bool compress) {
  const char *cmd = compress ? "compress" : "quantize";
  const char *model = NULL, *out = NULL, *config = NULL, *report = NULL;
  data_args d = {.run = {.progress = true}};
  bool quiet = false;
  op_save_options save = {0};
  const char *keys[48], *values[48];
  int nset = 0;
  for (int i = 0; i < argc; i++) {
    int r = data_option(argc, argv, &i, &d, cmd);
    if (r < 0) return EXIT_BAD;
    if (r) continue;
    const char *a = argv[i], *key = NULL;
    for (size_t k = 0; k < sizeof QUANT_FLAGS / sizeof *QUANT_FLAGS; k++)
      if (!strcmp(a, QUANT_FLAGS[k].flag)) key = QUANT_FLAGS[k].key;
    bool takes = key || !strcmp(a, "-o") || !strcmp(a, "--output") || !strcmp(a, "--report") || !strcmp(a, "--config");
    if (takes && i + 1 >= argc) return usage_error("%s needs a value", a);
    if (key && nset < 46) keys[nset] = key, values[nset++] = argv[++i];
    else if (!strcmp(a, "--symmetric")) keys[nset] = "symmetric", values[nset++] = "true";
    else if (!strcmp(a, "--bias-correction")) keys[nset] = "bias_correction", values[nset++] = "true";
    else if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = argv[++i];
    else if (!strcmp(a, "--report")) report = argv[++i];
    else if (!strcmp(a, "--config") && compress) config = argv[++i];
    else if (!strcmp(a, "--external-data")) save.external_data = 1;
    else if (!strcmp(a, "-q") || !strcmp(a, "--quiet")) quiet = true;
    else if (a[0] == '-' && a[1]) return usage_error("unknown option '%s'", a);
    else if (model) return usage_error("unexpected argument '%s'", a);
    else model = a;
  }
  if (!model || !out || !d.data) return usage_error("%s", compress ? "compress needs MODEL, -o OUT, --config FILE.json and --data PATH" : "quantize needs MODEL, -o OUT and --data PATH");
  if (compress && !config) return usage_error("%s", "compress needs --config FILE.json");
  op_error err = {0};
  op_prune_config *pc = op_prune_config_new();
  op_quant_config *qc = op_quant_config_new();
  int rc = config ? op_compress_config_load(config, pc, qc, &err) : 0;
  for (int i = 0; i < nset && !rc; i++) rc = op_quant_config_set(qc, keys[i], values[i], &err);
  char num[32];
  if (!rc && d.run.batch) snprintf(num, sizeof num, "%lld", (long long)d.run.batch), rc = op_quant_config_set(qc, "batch", num, &err);
  if (!rc && d.run.samples)
    snprintf(num, sizeof num, "%lld", (long long)d.run.samples), rc = op_quant_config_set(qc, "calibration_samples", num, &err);
  op_model *m = rc ? NULL : op_model_load(model, &err);
  op_prune_report *pr = m && compress ? op_prune(m, pc, &err) : NULL;
  op_dataset *ds = m && (!compress || pr) ? open_data(&d, &err) : NULL;
  op_quant_report *qr = ds ? op_quantize(m, ds, qc, &err) : NULL;
  rc = qr ? op_model_save(m, out, &save, &err) : -1;
  if (!rc && report) {
    char *qj = op_quant_report_json(qr), *pj = pr ? op_prune_report_json(pr) : NULL, *json = qj;
    char *both = NULL;
    if (pj) { /* compress: one report with both steps */
      size_t n = strlen(qj) + strlen(pj) + 64;
      both = malloc(n);
      snprintf(both, n, "{\"prune\": %s, \"quantize\": %s}", pj, qj);
      json = both;
    }
    rc = write_text_file(report, json, &err);
    if (rc) unlink(out);
    op_free(qj), op_free(pj), free(both);
  }
  if (!rc && !quiet) {
    printf("%s -> %s\n", model, out);
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
  return rc ? fail(&err) : 0;
}

int main(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    fputs(USAGE, argc < 2 ? stderr : stdout);
    return argc < 2 ? EXIT_BAD : 0;
  }
  if (!strcmp(argv[1], "--version")) {
    puts("onnx-prune 0.1.0");
    return 0;
  }
  if (!strcmp(argv[1], "inspect")) return cmd_inspect(argc - 2, argv + 2);
  if (!strcmp(argv[1], "prune")) return cmd_prune(argc - 2, argv + 2);
  if (!strcmp(argv[1], "run")) return cmd_run(argc - 2, argv + 2);
  if (!strcmp(argv[1], "verify")) return cmd_verify(argc - 2, argv + 2);
  if (!strcmp(argv[1], "quantize")) return cmd_quantize(argc - 2, argv + 2, false);
  if (!strcmp(argv[1], "compress")) return cmd_quantize(argc - 2, argv + 2, true);
  return usage_error("unknown command '%s'", argv[1]);
}
