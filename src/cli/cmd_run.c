/* cmd_run.c - `run` (outputs of the executor over a data set, saved as .npz) and `verify` (two models
 * compared on the same samples; thresholds, tolerances, and dumps of intermediate values). */
#include "cli/commands.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const cli_opt RUN_OPTS[] = {
    CLI_OPT("--output", "-o", "OUT.npz", NULL, NULL, NONE, false,
            "where to save every graph output (ONNX test data: arrays SET/OUTPUT, or OUT/SET/output_N.pb when OUT is a folder)")
    CLI_DATA_OPTS(CLI_DATA_HELP, "1", NULL, "all", NULL)
    CLI_COMMON_OPTS
};

const cli_cmd CMD_RUN = {"run", "MODEL --data PATH -o OUT.npz [options]",
                         "run the model on the data with onnx-prune's CPU executor and save its outputs", 1, 1, "MODEL",
                         RUN_OPTS, sizeof RUN_OPTS / sizeof *RUN_OPTS};

/* Writes OUT/SET/output_I.pb for every set, as ONNX lays out test data: first into a temporary folder
 * beside OUT, renamed into place once every file is written, so that a failure leaves nothing behind
 * (OUT is new or empty: check_out_folder). */
static int write_set_folder(const char *out, const op_dataset *ds, char **names, const op_tensor *all, size_t n_out,
                            op_error *err) {
  char final[PATH_MAX], tmp[PATH_MAX + 16];
  size_t len = strlen(out);
  while (len > 1 && out[len - 1] == '/') len--;
  if (len >= sizeof final) {
    err->code = OP_IO;
    snprintf(err->message, sizeof err->message, "%.900s: path too long", out);
    return -1;
  }
  memcpy(final, out, len);
  final[len] = 0;
  snprintf(tmp, sizeof tmp, "%s.tmp.XXXXXX", final);
  if (!mkdtemp(tmp)) {
    err->code = OP_IO;
    snprintf(err->message, sizeof err->message, "%.900s: %s", final, strerror(errno));
    return -1;
  }
  size_t sets = op_dataset_set_count(ds);
  int rc = 0;
  for (size_t k = 0; k < sets && !rc; k++) {
    const char *set = op_dataset_set_name(ds, k);
    char dir[2 * PATH_MAX + 32], path[2 * PATH_MAX + 64];
    snprintf(dir, sizeof dir, "%s/%s", tmp, set[0] ? set : "test_data_set_0");
    if (mkdir(dir, 0777) && errno != EEXIST) {
      err->code = OP_IO;
      snprintf(err->message, sizeof err->message, "%.900s: %s", final, strerror(errno));
      rc = -1;
    }
    for (size_t i = 0; i < n_out && !rc; i++) {
      snprintf(path, sizeof path, "%s/output_%zu.pb", dir, i);
      const char *name = strrchr(names[k * n_out + i], '/') ? strrchr(names[k * n_out + i], '/') + 1 : names[k * n_out + i];
      rc = op_pb_write(path, name, &all[k * n_out + i], err);
    }
  }
  struct stat st;
  if (!rc && stat(final, &st) == 0 && rmdir(final)) { /* an empty folder given as OUT is replaced */
    err->code = OP_IO;
    snprintf(err->message, sizeof err->message, "%.900s: %s", final, strerror(errno));
    rc = -1;
  }
  if (!rc && rename(tmp, final)) {
    err->code = OP_IO;
    snprintf(err->message, sizeof err->message, "%.900s: %s", final, strerror(errno));
    rc = -1;
  }
  if (rc) { /* remove what was written: the set folders and their output_I.pb */
    for (size_t k = 0; k < sets; k++) {
      const char *set = op_dataset_set_name(ds, k);
      char dir[2 * PATH_MAX + 32], path[2 * PATH_MAX + 64];
      snprintf(dir, sizeof dir, "%s/%s", tmp, set[0] ? set : "test_data_set_0");
      for (size_t i = 0; i < n_out; i++) snprintf(path, sizeof path, "%s/output_%zu.pb", dir, i), unlink(path);
      rmdir(dir);
    }
    rmdir(tmp);
  }
  return rc;
}

/* ONNX test data: each set is one complete run. Its outputs go to OUT.npz as arrays named SET/OUTPUT
 * (plain OUTPUT for input_N.pb given directly), or, when OUT is a folder (it exists or ends in '/'), to
 * OUT/SET/output_N.pb as ONNX lays out test data. Every set runs before anything is written. */
static int run_sets(const op_model *m, const op_dataset *ds, const char *out, bool progress, op_error *err) {
  size_t sets = op_dataset_set_count(ds), n_out = 0, n = 0;
  op_tensor *all = NULL;
  char **names = NULL;
  int rc = 0;
  for (size_t k = 0; k < sets && !rc; k++) {
    op_tensor *outs = NULL;
    op_run_options o = {.first = (int64_t)k, .samples = 1, .batch = 1, .progress = progress};
    rc = op_run_dataset(m, ds, &o, &outs, &n_out, err);
    op_session *s = rc ? NULL : op_session_new(m, err);
    if (!rc && !s) rc = -1;
    for (size_t i = 0; i < n_out && !rc; i++) {
      const char *set = op_dataset_set_name(ds, k), *name = op_session_output_name(s, i);
      size_t len = strlen(set) + strlen(name) + 2;
      op_tensor *grown_all = realloc(all, (n + 1) * sizeof *all);
      char **grown_names = grown_all ? realloc(names, (n + 1) * sizeof *names) : NULL;
      if (grown_all) all = grown_all;
      if (grown_names) names = grown_names;
      if (!grown_all || !grown_names || !(names[n] = malloc(len))) {
        err->code = OP_NOMEM;
        snprintf(err->message, sizeof err->message, "%s: out of memory", out);
        rc = -1;
        break;
      }
      snprintf(names[n], len, "%s%s%s", set, set[0] ? "/" : "", name);
      all[n++] = outs[i];
      outs[i] = (op_tensor){0};
    }
    for (size_t i = 0; i < n_out; i++) op_tensor_clear(&outs[i]);
    free(outs);
    op_session_free(s);
  }
  size_t len = strlen(out);
  struct stat st;
  bool folder = (len && out[len - 1] == '/') || (stat(out, &st) == 0 && S_ISDIR(st.st_mode));
  if (!rc && !folder) rc = op_npz_write(out, (const char *const *)names, all, n, err);
  if (!rc && folder) rc = write_set_folder(out, ds, names, all, n_out, err);
  for (size_t i = 0; i < n; i++) op_tensor_clear(&all[i]), free(names[i]);
  free(all);
  free(names);
  return rc;
}

/* -o as a folder of ONNX test data (it exists or ends in '/'); it must be new or empty, so that no
 * file of an input (a data folder's own output_N.pb) is ever replaced. */
static int check_out_folder(const char *out, op_error *err) {
  size_t len = strlen(out);
  struct stat st;
  bool exists = stat(out, &st) == 0;
  if (!(len && out[len - 1] == '/') && !(exists && S_ISDIR(st.st_mode))) return 0;
  DIR *d = exists ? opendir(out) : NULL;
  bool empty = true;
  for (struct dirent *e; d && (e = readdir(d));) empty = empty && (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."));
  if (d) closedir(d);
  if (empty) return 0;
  err->code = OP_ARG;
  snprintf(err->message, sizeof err->message, "%.900s: -o as a folder of test data must be new or empty", out);
  return -1;
}

int cmd_run(const cli_args *a) {
  if (!cli_has(a, "--data")) return cli_error(a->cmd, "missing --data PATH");
  if (!cli_has(a, "--output")) return cli_error(a->cmd, "missing -o OUT.npz");
  const char *model = a->pos[0], *out = cli_get(a, "--output");
  op_error err = {0};
  op_run_options ro = cli_run_options(a, 1);
  op_model *m = op_model_load(model, &err);
  cli_path ins[] = {{"--data", cli_get(a, "--data")}}, outs_p[] = {{"-o", out}};
  size_t out_len = strlen(out);
  struct stat st;
  bool to_folder = (out_len && out[out_len - 1] == '/') || (stat(out, &st) == 0 && S_ISDIR(st.st_mode));
  if (m && (to_folder ? check_out_folder(out, &err) : cli_check_paths(m, ins, 1, outs_p, 1, &err))) op_model_free(m), m = NULL;
  op_dataset *ds = m ? cli_open_data(a, &err) : NULL;
  op_tensor *outs = NULL;
  size_t n = 0;
  bool sets = ds && op_dataset_set_count(ds);
  int rc = sets ? run_sets(m, ds, out, ro.progress, &err) : ds ? op_run_dataset(m, ds, &ro, &outs, &n, &err) : -1;
  if (!rc && !sets) {
    cli_note(a, "ran %s", model);
    op_session *s = op_session_new(m, &err);
    const char **names = calloc(n ? n : 1, sizeof *names);
    for (size_t i = 0; s && names && i < n; i++) names[i] = op_session_output_name(s, i);
    rc = s && names ? op_npz_write(out, names, outs, n, &err) : -1;
    free(names);
    op_session_free(s);
  }
  for (size_t i = 0; i < n; i++) op_tensor_clear(&outs[i]);
  free(outs);
  op_dataset_free(ds);
  op_model_free(m);
  return rc ? cli_fail(a, &err) : 0;
}

static const cli_opt VERIFY_OPTS[] = {
    CLI_DATA_OPTS(CLI_DATA_HELP, "1", NULL, "all", NULL)
    CLI_OPT("--json", NULL, NULL, NULL, NULL, NONE, false, "print the report as JSON")
    CLI_OPT("--min-cosine", NULL, "C", NULL, NULL, SIGNED_UNIT, false,
            "exit 1 when an output's mean cosine similarity is below C")
    CLI_OPT("--min-agreement", NULL, "A", NULL, NULL, SIGNED_UNIT, false,
            "exit 1 when an output's top-1 agreement is below A (a fraction)")
    CLI_OPT("--atol", NULL, "X", "0 with --rtol", NULL, NONNEG, false,
            "exit 1 when an output has an element with |candidate - reference| > atol + rtol * |reference|")
    CLI_OPT("--rtol", NULL, "X", "0 with --atol", NULL, NONNEG, false, "relative tolerance of that test")
    CLI_OPT("--ignore-index", NULL, "N", "-100", NULL, NONE, false,
            "language models: next-token labels equal to N are not scored")
    CLI_OPT("--holdout", NULL, "REPORT.json", NULL, NULL, NONE, false,
            "leave out every row a prune / quantize / compress report lists (calibration and search rows)")
    CLI_OPT("--dump", NULL, "NAME[,NAME...]", NULL, NULL, NONE, true,
            "save these intermediate values of both models on the first batch")
    CLI_OPT("--dump-to", NULL, "FILE.npz", NULL, NULL, NONE, false,
            "where --dump writes (arrays reference/NAME and candidate/NAME)")
    CLI_COMMON_OPTS
};

const cli_cmd CMD_VERIFY = {"verify", "REFERENCE CANDIDATE --data PATH [options]",
                            "run both models on the same samples and compare their outputs", 2, 2,
                            "REFERENCE and CANDIDATE", VERIFY_OPTS, sizeof VERIFY_OPTS / sizeof *VERIFY_OPTS};

/* --dump: the named values seen while one model runs its first batch. */
typedef struct dump_set {
  char **names;
  size_t n;
  op_tensor *got; /* [n], dtype 0 until seen */
} dump_set;

static void dump_observe(void *user, const char *name, const op_tensor *t) {
  dump_set *d = user;
  for (size_t i = 0; i < d->n; i++)
    if (!strcmp(d->names[i], name) && !d->got[i].data) {
      op_tensor *c = &d->got[i];
      *c = *t;
      c->data = malloc(t->nbytes ? t->nbytes : 1);
      if (!c->data) {
        c->dtype = 0;
        continue;
      }
      memcpy(c->data, t->data, t->nbytes);
    }
}

static void dump_clear(dump_set *d) {
  for (size_t i = 0; i < d->n; i++) free(d->got[i].data);
  memset(d->got, 0, d->n * sizeof *d->got);
}

/* Runs one model on the first batch and keeps the named values; every name must be seen. */
static int dump_run(const cli_args *a, const op_model *m, const char *path, const op_dataset *ds, int64_t batch,
                    dump_set *d, op_error *err) {
  op_session *s = op_session_new(m, err);
  if (!s) return -1;
  size_t ni = op_session_input_count(s), no = op_session_output_count(s);
  op_tensor *in = calloc(ni ? ni : 1, sizeof *in), *out = calloc(no ? no : 1, sizeof *out);
  int64_t total = op_dataset_samples(ds, s, err);
  int rc = in && out && total >= 0 ? 0 : -1;
  if (!rc) rc = op_dataset_batch(ds, s, 0, total < batch ? total : batch, in, err);
  if (!rc) rc = op_session_run(s, in, out, dump_observe, d, err);
  for (size_t i = 0; in && i < ni; i++) op_tensor_clear(&in[i]);
  for (size_t i = 0; out && i < no; i++) op_tensor_clear(&out[i]);
  free(in), free(out);
  op_session_free(s);
  for (size_t i = 0; !rc && i < d->n; i++)
    if (!d->got[i].data) {
      err->code = OP_ARG;
      snprintf(err->message, sizeof err->message, "%s: %s: no node of %s computes a value named '%s'",
               a->cmd->name, cli_typed(a, "--dump"), path, d->names[i]);
      rc = -1;
    }
  return rc;
}

static int dump_values(const cli_args *a, const op_model *ref, const op_model *cand, const op_dataset *ds,
                       op_error *err) {
  dump_set d = {0};
  size_t nv;
  const cli_value *vals = cli_all(a, "--dump", &nv);
  for (size_t k = 0; k < nv; k++) {
    char *list = strdup(vals[k].value), *save = NULL;
    for (char *t = list ? strtok_r(list, ",", &save) : NULL; t; t = strtok_r(NULL, ",", &save)) {
      char **grown = realloc(d.names, (d.n + 1) * sizeof *d.names);
      if (!grown) break;
      d.names = grown;
      d.names[d.n++] = strdup(t);
    }
    free(list);
  }
  const char **labels = calloc(2 * d.n + 1, sizeof *labels);
  op_tensor *all = calloc(2 * d.n + 1, sizeof *all);
  d.got = calloc(d.n + 1, sizeof *d.got);
  int rc = labels && all && d.got ? 0 : -1;
  int64_t batch = cli_int(a, "--batch", 1);
  for (int side = 0; side < 2 && !rc; side++) {
    const op_model *m = side ? cand : ref;
    rc = dump_run(a, m, a->pos[side], ds, batch, &d, err);
    for (size_t i = 0; !rc && i < d.n; i++) {
      size_t len = strlen(d.names[i]) + 16;
      char *lab = malloc(len);
      if (lab) snprintf(lab, len, "%s/%s", side ? "candidate" : "reference", d.names[i]);
      labels[side * d.n + i] = lab;
      all[side * d.n + i] = d.got[i];
    }
    if (!rc) memset(d.got, 0, d.n * sizeof *d.got); /* now owned by `all` */
    else dump_clear(&d);
  }
  if (!rc) rc = op_npz_write(cli_get(a, "--dump-to"), labels, all, 2 * d.n, err);
  for (size_t i = 0; i < 2 * d.n; i++) {
    if (labels) free((void *)labels[i]);
    if (all) free(all[i].data);
  }
  for (size_t i = 0; i < d.n; i++) free(d.names[i]);
  free(d.names), free(d.got), free(labels), free(all);
  return rc;
}

int cmd_verify(const cli_args *a) {
  if (!cli_has(a, "--data")) return cli_error(a->cmd, "missing --data PATH");
  if (cli_has(a, "--dump") != cli_has(a, "--dump-to"))
    return cli_error(a->cmd, "%s needs %s", cli_has(a, "--dump") ? cli_typed(a, "--dump") : cli_typed(a, "--dump-to"),
                     cli_has(a, "--dump") ? "--dump-to FILE.npz" : "--dump NAME[,NAME...]");
  op_error err = {0};
  op_model *ref = op_model_load(a->pos[0], &err);
  op_model *cand = ref ? op_model_load(a->pos[1], &err) : NULL;
  cli_path ins[] = {{"CANDIDATE", a->pos[1]}, {"--data", cli_get(a, "--data")}, {"--holdout", cli_get(a, "--holdout")}},
           outs[] = {{"--dump-to", cli_get(a, "--dump-to")}};
  if (cand && cli_has(a, "--dump-to") && cli_check_paths(ref, ins, 3, outs, 1, &err)) op_model_free(cand), cand = NULL;
  op_dataset *ds = cand ? cli_open_data(a, &err) : NULL;
  if (ds) cli_note(a, "loaded both models and the data");
  if (ds && cli_has(a, "--holdout") && op_dataset_hold_out_report(ds, cli_get(a, "--holdout"), &err)) op_dataset_free(ds), ds = NULL;
  op_run_options ro = cli_run_options(a, 1);
  if (cli_has(a, "--ignore-index")) {
    char *end;
    ro.ignore_index_set = true;
    ro.ignore_index = strtoll(cli_get(a, "--ignore-index"), &end, 10);
    if (*end || end == cli_get(a, "--ignore-index")) {
      op_dataset_free(ds);
      op_model_free(cand);
      op_model_free(ref);
      return cli_error(a->cmd, "%s: '%s' is not a whole number", cli_typed(a, "--ignore-index"), cli_get(a, "--ignore-index"));
    }
  }
  bool tol = cli_has(a, "--atol") || cli_has(a, "--rtol");
  ro.atol = cli_real(a, "--atol", 0);
  ro.rtol = cli_real(a, "--rtol", 0);
  op_verify_report *r = ds ? op_verify(ref, cand, ds, &ro, &err) : NULL;
  int rc = r ? 0 : cli_fail(a, &err);
  if (r) cli_note(a, "compared");
  if (r && cli_has(a, "--dump")) {
    if (dump_values(a, ref, cand, ds, &err)) rc = cli_fail(a, &err);
    else cli_note(a, "wrote %s", cli_get(a, "--dump-to"));
  }
  if (r && !rc) {
    char *text = cli_has(a, "--json") ? op_verify_report_json(r) : op_verify_report_text(r);
    if (a->verbosity >= 0 || cli_has(a, "--json")) {
      fputs(text, stdout);
      if (cli_has(a, "--json")) fputc('\n', stdout);
    }
    op_free(text);
    if (cli_has(a, "--min-cosine") && op_verify_min_cosine(r) < cli_real(a, "--min-cosine", 0)) {
      cli_error(a->cmd, "mean cosine %.6f is below %s %s", op_verify_min_cosine(r), cli_typed(a, "--min-cosine"),
                cli_get(a, "--min-cosine"));
      rc = 1;
    }
    if (cli_has(a, "--min-agreement") && op_verify_min_agreement(r) < cli_real(a, "--min-agreement", 0)) {
      cli_error(a->cmd, "top-1 agreement %.4f is below %s %s", op_verify_min_agreement(r),
                cli_typed(a, "--min-agreement"), cli_get(a, "--min-agreement"));
      rc = 1;
    }
    for (size_t i = 0; tol && i < op_verify_output_count(r); i++) {
      int64_t bad = op_verify_output_mismatches(r, i), total = op_verify_output_elements(r, i);
      if (a->verbosity >= 0 && !cli_has(a, "--json"))
        printf("%s: %s (%lld of %lld elements outside atol %g + rtol %g x |reference|)\n", op_verify_output_name(r, i),
               bad ? "FAIL" : "pass", (long long)bad, (long long)total, ro.atol, ro.rtol);
      if (bad) rc = 1;
    }
    if (tol && rc == 1) cli_error(a->cmd, "outputs differ beyond --atol/--rtol");
  }
  op_verify_report_free(r);
  op_dataset_free(ds);
  op_model_free(cand);
  op_model_free(ref);
  return rc;
}
