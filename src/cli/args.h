/* args.h - the one argument parser of every onnx-prune subcommand. A command is a table of options
 * (cli_opt); parsing, the --help text with defaults, value checks, "did you mean" suggestions and
 * the mapping of flags onto library config keys all come from that table. */
#ifndef OP_CLI_ARGS_H
#define OP_CLI_ARGS_H

#include "onnxprune.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* How a value is checked once every flag is read (so the order of the flags never matters). */
#define CLI_CHECKS(X)                                                 \
  X(NONE, "")                                                         \
  X(COUNT, "a whole number >= 1")                                     \
  X(NATURAL, "a whole number >= 0")                                   \
  X(REAL, "a number")                                                 \
  X(NONNEG, "a number >= 0")                                          \
  X(SIGNED_UNIT, "a number in [-1, 1]")                               \
  X(BYTES, "a size in bytes (with an optional K, M, G or T suffix)")

typedef enum cli_check {
#define CLI_CHECK_ENUM(name, text) CLI_##name,
  CLI_CHECKS(CLI_CHECK_ENUM)
#undef CLI_CHECK_ENUM
} cli_check;

typedef struct cli_opt {
  const char *name;  /* "--head-sparsity" */
  const char *alias; /* "-o", or NULL */
  const char *meta;  /* value placeholder ("R"); NULL: a switch without value */
  const char *def;   /* default shown by --help, or NULL */
  const char *key;   /* library config key the value is set under, or NULL */
  cli_check check;
  bool repeat;       /* may be given several times; every value is kept */
  const char *help;
} cli_opt;

/* One table row; the X-macro tables in the commands expand to these. */
#define CLI_OPT(name, alias, meta, def, key, check, repeat, help) \
  {name, alias, meta, def, key, CLI_##check, repeat, help},

typedef struct cli_cmd {
  const char *name;
  const char *usage;   /* after "onnx-prune NAME " */
  const char *summary; /* one line */
  int min_pos, max_pos;
  const char *pos_missing; /* what to say when positionals are missing ("MODEL") */
  const cli_opt *opts;
  size_t n_opts;
} cli_cmd;

typedef struct cli_value {
  const char *typed; /* the flag as the user wrote it ("-o", "--data") */
  const char *value; /* "1" for a switch */
} cli_value;

typedef struct cli_args {
  const cli_cmd *cmd;
  const char **pos;
  size_t n_pos;
  struct cli_got {
    cli_value *v;
    size_t n;
  } *got; /* one per option of cmd, in table order */
  int verbosity; /* -1 quiet, 0 normal, 1 verbose */
} cli_args;

/* Parses argv (after the command name). Returns 0, 1 when --help was printed (exit 0), or 2 after
 * printing one error line. */
int cli_parse(const cli_cmd *cmd, int argc, char **argv, cli_args *a);
void cli_args_free(cli_args *a);

/* The last value of an option (by its long name, which must be in the table), or NULL. */
const char *cli_get(const cli_args *a, const char *name);
bool cli_has(const cli_args *a, const char *name);
/* The flag as typed for an option given, else its long name. */
const char *cli_typed(const cli_args *a, const char *name);
/* Every value of a repeatable option; *n receives the count. */
const cli_value *cli_all(const cli_args *a, const char *name, size_t *n);
long long cli_int(const cli_args *a, const char *name, long long dflt);
double cli_real(const cli_args *a, const char *name, double dflt);

/* Prints "onnx-prune CMD: MESSAGE" on stderr; returns 2. */
int cli_error(const cli_cmd *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* A library error, with each config key the command set from a flag replaced by the flag as typed
 * ("method: 'klx' ..." -> "--method: 'klx' ..."); returns 2. */
int cli_fail(const cli_args *a, const op_error *err);

/* Sets every option that has a config key through set(); the first error goes to *err. */
typedef int (*cli_setter)(void *config, const char *key, const char *value, op_error *err);
int cli_apply(const cli_args *a, cli_setter set, void *config, op_error *err);

/* Levenshtein distance, for suggestions. */
size_t cli_edit_distance(const char *a, const char *b);
/* The candidate closest to word, or NULL when none is close enough to be a typo. */
const char *cli_suggest(const char *word, const char *const *candidates, size_t n);

void cli_print_help(const cli_cmd *cmd, FILE *out);

#endif
