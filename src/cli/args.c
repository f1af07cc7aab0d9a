/* args.c - see args.h. Parsing collects every flag first; checks, conflicts and the library setters
 * run afterwards, so `--profile tensorrt --activation-type uint8` and its reverse behave the same. */
#include "cli/args.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n ? n : 1);
  if (!q) {
    fputs("onnx-prune: out of memory\n", stderr);
    exit(2);
  }
  return q;
}

int cli_error(const cli_cmd *cmd, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "onnx-prune%s%s: ", cmd ? " " : "", cmd ? cmd->name : "");
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  return 2;
}

size_t cli_edit_distance(const char *a, const char *b) {
  size_t n = strlen(b);
  size_t *row = xrealloc(NULL, (n + 1) * sizeof *row);
  for (size_t j = 0; j <= n; j++) row[j] = j;
  for (size_t i = 1; a[i - 1]; i++) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= n; j++) {
      size_t up = row[j];
      size_t best = diag + (a[i - 1] != b[j - 1]);
      if (up + 1 < best) best = up + 1;
      if (row[j - 1] + 1 < best) best = row[j - 1] + 1;
      row[j] = best;
      diag = up;
    }
  }
  size_t d = row[n];
  free(row);
  return d;
}

const char *cli_suggest(const char *word, const char *const *cands, size_t n) {
  const char *best = NULL;
  size_t best_d = (size_t)-1;
  for (size_t i = 0; i < n; i++) {
    if (!cands[i]) continue;
    size_t d = cli_edit_distance(word, cands[i]);
    if (d < best_d) best_d = d, best = cands[i];
  }
  size_t len = strlen(word), limit = len / 3 > 2 ? len / 3 : 2;
  return best && best_d <= limit ? best : NULL;
}

static const cli_opt *find_opt(const cli_cmd *cmd, const char *name, size_t len) {
  for (size_t i = 0; i < cmd->n_opts; i++) {
    const cli_opt *o = &cmd->opts[i];
    if ((strlen(o->name) == len && !strncmp(o->name, name, len)) ||
        (o->alias && strlen(o->alias) == len && !strncmp(o->alias, name, len)))
      return o;
  }
  return NULL;
}

static size_t opt_index(const cli_cmd *cmd, const char *name) {
  for (size_t i = 0; i < cmd->n_opts; i++)
    if (!strcmp(cmd->opts[i].name, name)) return i;
  fprintf(stderr, "onnx-prune %s: internal error: no option '%s' in the table\n", cmd->name, name);
  abort();
}

static bool check_value(cli_check c, const char *v) {
  char *e;
  errno = 0;
  switch (c) {
  case CLI_NONE:
    return true;
  case CLI_COUNT:
  case CLI_NATURAL: {
    long long x = strtoll(v, &e, 10);
    return !errno && e != v && !*e && x >= (c == CLI_COUNT);
  }
  case CLI_REAL:
  case CLI_NONNEG:
  case CLI_SIGNED_UNIT: {
    double x = strtod(v, &e);
    if (errno || e == v || *e || !isfinite(x)) return false;
    return c == CLI_REAL || (c == CLI_NONNEG ? x >= 0 : x >= -1 && x <= 1);
  }
  case CLI_BYTES: {
    double x = strtod(v, &e);
    if (errno || e == v || !isfinite(x) || x < 0) return false;
    if (*e && strchr("kKmMgGtT", *e)) e++;
    if (*e == 'i' && e[-1] != *v) e++;
    if (*e == 'B') e++;
    return !*e;
  }
  }
  return false;
}

static const char *CHECK_TEXT[] = {
#define CLI_CHECK_TEXT(name, text) text,
    CLI_CHECKS(CLI_CHECK_TEXT)
#undef CLI_CHECK_TEXT
};

static int unknown_option(const cli_cmd *cmd, const char *arg, size_t len) {
  const char **names = xrealloc(NULL, (2 * cmd->n_opts + 1) * sizeof *names);
  size_t n = 0;
  for (size_t i = 0; i < cmd->n_opts; i++) {
    names[n++] = cmd->opts[i].name;
    if (cmd->opts[i].alias) names[n++] = cmd->opts[i].alias;
  }
  char *word = strndup(arg, len);
  const char *s = word ? cli_suggest(word, names, n) : NULL;
  if (s)
    cli_error(cmd, "unknown option '%s' (did you mean '%s'?)", word, s);
  else
    cli_error(cmd, "unknown option '%s' (see onnx-prune %s --help)", word ? word : arg, cmd->name);
  free(word);
  free(names);
  return 2;
}

static void record(cli_args *a, size_t idx, const char *typed, const char *value) {
  struct cli_got *g = &a->got[idx];
  if (!a->cmd->opts[idx].repeat) g->n = 0; /* the last one given counts */
  g->v = xrealloc(g->v, (g->n + 1) * sizeof *g->v);
  g->v[g->n++] = (cli_value){typed, value};
}

int cli_parse(const cli_cmd *cmd, int argc, char **argv, cli_args *a) {
  memset(a, 0, sizeof *a);
  a->cmd = cmd;
  a->got = xrealloc(NULL, cmd->n_opts * sizeof *a->got);
  memset(a->got, 0, cmd->n_opts * sizeof *a->got);
  a->pos = xrealloc(NULL, (size_t)(argc + 1) * sizeof *a->pos);
  bool only_pos = false;
  for (int i = 0; i < argc; i++) {
    const char *arg = argv[i];
    if (only_pos || arg[0] != '-' || !arg[1]) {
      a->pos[a->n_pos++] = arg;
      continue;
    }
    if (!strcmp(arg, "--")) {
      only_pos = true;
      continue;
    }
    if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
      cli_print_help(cmd, stdout);
      return 1;
    }
    const char *eq = arg[1] == '-' ? strchr(arg, '=') : NULL;
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    const cli_opt *o = find_opt(cmd, arg, len);
    if (!o) return unknown_option(cmd, arg, len);
    size_t idx = (size_t)(o - cmd->opts);
    /* the flag as typed, without "=value" */
    const char *typed = eq ? (len == strlen(o->name) ? o->name : o->alias) : arg;
    if (!o->meta) {
      if (eq) return cli_error(cmd, "option '%s' takes no value", typed);
      record(a, idx, typed, "1");
      continue;
    }
    const char *value = eq ? eq + 1 : i + 1 < argc ? argv[++i] : NULL;
    if (!value) return cli_error(cmd, "option '%s' needs a value (%s)", typed, o->meta);
    record(a, idx, typed, value);
  }
  if ((int)a->n_pos < cmd->min_pos) return cli_error(cmd, "missing %s (see onnx-prune %s --help)", cmd->pos_missing, cmd->name);
  if ((int)a->n_pos > cmd->max_pos) return cli_error(cmd, "unexpected argument '%s'", a->pos[cmd->max_pos]);
  for (size_t i = 0; i < cmd->n_opts; i++)
    for (size_t k = 0; k < a->got[i].n; k++)
      if (!check_value(cmd->opts[i].check, a->got[i].v[k].value))
        return cli_error(cmd, "%s: '%s' is not %s", a->got[i].v[k].typed, a->got[i].v[k].value,
                         CHECK_TEXT[cmd->opts[i].check]);
  if (cli_has(a, "--quiet") && cli_has(a, "--verbose"))
    return cli_error(cmd, "%s and %s contradict each other", cli_typed(a, "--quiet"), cli_typed(a, "--verbose"));
  a->verbosity = cli_has(a, "--quiet") ? -1 : cli_has(a, "--verbose") ? 1 : 0;
  return 0;
}

void cli_args_free(cli_args *a) {
  if (a->got)
    for (size_t i = 0; i < a->cmd->n_opts; i++) free(a->got[i].v);
  free(a->got);
  free(a->pos);
  memset(a, 0, sizeof *a);
}

static const struct cli_got *got(const cli_args *a, const char *name) {
  size_t i = opt_index(a->cmd, name);
  return &a->got[i];
}

const char *cli_get(const cli_args *a, const char *name) {
  const struct cli_got *g = got(a, name);
  return g->n ? g->v[g->n - 1].value : NULL;
}

bool cli_has(const cli_args *a, const char *name) {
  for (size_t i = 0; i < a->cmd->n_opts; i++)
    if (!strcmp(a->cmd->opts[i].name, name)) return a->got[i].n > 0;
  return false; /* an option the command does not have is never given */
}

const char *cli_typed(const cli_args *a, const char *name) {
  const struct cli_got *g = got(a, name);
  return g->n ? g->v[g->n - 1].typed : name;
}

const cli_value *cli_all(const cli_args *a, const char *name, size_t *n) {
  const struct cli_got *g = got(a, name);
  *n = g->n;
  return g->v;
}

long long cli_int(const cli_args *a, const char *name, long long dflt) {
  const char *v = cli_get(a, name);
  return v ? strtoll(v, NULL, 10) : dflt;
}

double cli_real(const cli_args *a, const char *name, double dflt) {
  const char *v = cli_get(a, name);
  return v ? strtod(v, NULL) : dflt;
}

int cli_apply(const cli_args *a, cli_setter set, void *config, op_error *err) {
  for (size_t i = 0; i < a->cmd->n_opts; i++) {
    const cli_opt *o = &a->cmd->opts[i];
    for (size_t k = 0; o->key && k < a->got[i].n; k++)
      if (set(config, o->key, o->meta ? a->got[i].v[k].value : "true", err)) return -1;
  }
  return 0;
}

/* '-' too, so that a message already saying "--exclude" is left alone */
static bool word_char(char c) { return isalnum((unsigned char)c) || c == '_' || c == '-'; }

int cli_fail(const cli_args *a, const op_error *err) {
  const char *m = err->message;
  size_t cap = strlen(m) * 2 + 64, off = 0;
  char *out = xrealloc(NULL, cap);
  for (size_t i = 0; m[i];) {
    const char *flag = NULL;
    size_t klen = 0;
    if (!i || !word_char(m[i - 1]))
      for (size_t k = 0; !flag && a && k < a->cmd->n_opts; k++) {
        const cli_opt *o = &a->cmd->opts[k];
        size_t n = o->key ? strlen(o->key) : 0;
        if (n && a->got[k].n && !strncmp(m + i, o->key, n) && !word_char(m[i + n]))
          flag = a->got[k].v[a->got[k].n - 1].typed, klen = n;
      }
    if (flag) {
      size_t fl = strlen(flag);
      if (off + fl + 1 >= cap) out = xrealloc(out, cap = cap * 2 + fl);
      memcpy(out + off, flag, fl);
      off += fl, i += klen;
    } else {
      if (off + 2 >= cap) out = xrealloc(out, cap *= 2);
      out[off++] = m[i++];
    }
  }
  out[off] = 0;
  cli_error(a ? a->cmd : NULL, "%s", out);
  free(out);
  return 2;
}

void cli_print_help(const cli_cmd *cmd, FILE *out) {
  fprintf(out, "usage: onnx-prune %s %s\n%s\n\noptions:\n", cmd->name, cmd->usage, cmd->summary);
  for (size_t i = 0; i < cmd->n_opts; i++) {
    const cli_opt *o = &cmd->opts[i];
    char left[96];
    snprintf(left, sizeof left, "%s%s%s%s%s", o->alias ? o->alias : "", o->alias ? ", " : "", o->name,
             o->meta ? " " : "", o->meta ? o->meta : "");
    if (strlen(left) > 26) fprintf(out, "  %s\n  %-26s %s", left, "", o->help); /* a long left column: own line */
    else fprintf(out, "  %-26s %s", left, o->help);
    if (o->def) fprintf(out, " (default: %s)", o->def);
    if (o->repeat) fputs(" [repeatable]", out);
    fputc('\n', out);
  }
}
