/* test_args.c - the argument parser on its own: --opt value and --opt=value, the flag as typed,
 * repeatable options without a fixed limit, last-one-wins, checks after every flag is read, edit
 * distance and suggestions, and library errors renamed to the flags that set them. */
#include "check.h"
#include "cli/args.h"

#include <stdlib.h>

static const cli_opt OPTS[] = {
    CLI_OPT("--output", "-o", "OUT", NULL, NULL, NONE, false, "out")
    CLI_OPT("--head-sparsity", NULL, "R", NULL, "head_sparsity", NONE, false, "r")
    CLI_OPT("--batch", NULL, "N", "1", NULL, COUNT, false, "n")
    CLI_OPT("--exclude", NULL, "GLOB", NULL, "exclude", NONE, true, "globs")
    CLI_OPT("--json", NULL, NULL, NULL, NULL, NONE, false, "json")
    CLI_OPT("--quiet", "-q", NULL, NULL, NULL, NONE, false, "quiet")
    CLI_OPT("--verbose", "-v", NULL, NULL, NULL, NONE, false, "verbose")
};
static const cli_cmd CMD = {"demo", "MODEL", "a demo", 1, 1, "MODEL", OPTS, sizeof OPTS / sizeof *OPTS};

static int parse(int argc, char **argv, cli_args *a) { return cli_parse(&CMD, argc, argv, a); }

typedef struct seen {
  int n;
  char last[64];
} seen;

static int record_set(void *user, const char *key, const char *value, op_error *err) {
  seen *s = user;
  s->n++;
  snprintf(s->last, sizeof s->last, "%s=%s", key, value);
  (void)err;
  return 0;
}

int main(void) {
  cli_args a;
  { /* both value forms, the alias as typed, last one wins */
    char *argv[] = {"m.onnx", "-o", "x", "--head-sparsity=0.5", "--output=y", "--batch", "4"};
    CHECK_EQ_INT(parse(7, argv, &a), 0);
    CHECK(!strcmp(cli_get(&a, "--output"), "y"));
    CHECK(!strcmp(cli_typed(&a, "--output"), "--output"));
    CHECK(!strcmp(cli_get(&a, "--head-sparsity"), "0.5"));
    CHECK_EQ_INT(cli_int(&a, "--batch", 1), 4);
    CHECK(!cli_has(&a, "--json"));
    CHECK(!strcmp(a.pos[0], "m.onnx"));
    cli_args_free(&a);
  }
  { /* a repeatable option has no limit on its count */
    int n = 1 + 2 * 500;
    char **argv = calloc((size_t)n, sizeof *argv);
    argv[0] = "m.onnx";
    for (int i = 1; i < n; i += 2) argv[i] = "--exclude", argv[i + 1] = "x*";
    CHECK_EQ_INT(parse(n, argv, &a), 0);
    size_t k;
    cli_all(&a, "--exclude", &k);
    CHECK_EQ_INT(k, 500);
    seen s = {0};
    CHECK_EQ_INT(cli_apply(&a, record_set, &s, NULL), 0);
    CHECK_EQ_INT(s.n, 500);
    CHECK(!strcmp(s.last, "exclude=x*"));
    cli_args_free(&a);
    free(argv);
  }
  { /* refusals: each returns 2 (the message goes to stderr) */
    char *missing_value[] = {"m.onnx", "-o"};
    CHECK_EQ_INT(parse(2, missing_value, &a), 2);
    cli_args_free(&a);
    char *switch_value[] = {"m.onnx", "--json=1"};
    CHECK_EQ_INT(parse(2, switch_value, &a), 2);
    cli_args_free(&a);
    char *bad_count[] = {"--batch", "0", "m.onnx"};
    CHECK_EQ_INT(parse(3, bad_count, &a), 2);
    cli_args_free(&a);
    char *unknown[] = {"m.onnx", "--jsno"};
    CHECK_EQ_INT(parse(2, unknown, &a), 2);
    cli_args_free(&a);
    char *no_model[] = {"--json"};
    CHECK_EQ_INT(parse(1, no_model, &a), 2);
    cli_args_free(&a);
    char *two_models[] = {"a.onnx", "b.onnx"};
    CHECK_EQ_INT(parse(2, two_models, &a), 2);
    cli_args_free(&a);
    char *both[] = {"m.onnx", "-q", "-v"};
    CHECK_EQ_INT(parse(3, both, &a), 2);
    cli_args_free(&a);
  }
  { /* "--" ends the options: a file named like a flag */
    char *argv[] = {"--", "-weird.onnx"};
    CHECK_EQ_INT(parse(2, argv, &a), 0);
    CHECK(!strcmp(a.pos[0], "-weird.onnx"));
    cli_args_free(&a);
  }
  /* suggestions */
  CHECK_EQ_INT(cli_edit_distance("prnue", "prune"), 2);
  CHECK_EQ_INT(cli_edit_distance("", "abc"), 3);
  CHECK_EQ_INT(cli_edit_distance("kitten", "sitting"), 3);
  const char *cmds[] = {"inspect", "prune", "run", "verify", "quantize", "compress"};
  CHECK(!strcmp(cli_suggest("prnue", cmds, 6), "prune"));
  CHECK(!strcmp(cli_suggest("quantise", cmds, 6), "quantize"));
  CHECK(cli_suggest("frobnicate", cmds, 6) == NULL);
  return check_done("args");
}
