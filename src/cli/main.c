/* main.c - the onnx-prune command line: a thin layer over libonnxprune. Each command is an option
 * table (args.h parses it) and a function; options that do not apply to what was asked are refused.
 * Exit codes: 0 success, 2 bad input or usage (one line on stderr, nothing written),
 * 1 verification thresholds not met. */
#include "cli/args.h"
#include "cli/commands.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const cli_cmd *const COMMANDS[] = {&CMD_INSPECT, &CMD_PRUNE, &CMD_RUN, &CMD_VERIFY, &CMD_QUANTIZE, &CMD_COMPRESS};
#define N_COMMANDS (sizeof COMMANDS / sizeof *COMMANDS)
static int (*const RUNNERS[N_COMMANDS])(const cli_args *) = {cmd_inspect, cmd_prune, cmd_run, cmd_verify,
                                                             cmd_quantize, cmd_compress};

static void usage(FILE *out) {
  fputs("usage: onnx-prune <command> [options]   (onnx-prune <command> --help for its options)\n\ncommands:\n", out);
  for (size_t i = 0; i < N_COMMANDS; i++)
    fprintf(out, "  %-9s %s\n            %s\n", COMMANDS[i]->name, COMMANDS[i]->usage, COMMANDS[i]->summary);
  fputs("  version   print the version (also -V, --version)\n"
        "\nenvironment: ONNX_PRUNE_THREADS=N  threads for pruning and the executor (default: all cores)\n",
        out);
}

static const cli_cmd *find_command(const char *name) {
  for (size_t i = 0; i < N_COMMANDS; i++)
    if (!strcmp(COMMANDS[i]->name, name)) return COMMANDS[i];
  return NULL;
}

/* A thread count the parallel loops would otherwise silently replace by their default. */
static int check_threads_env(const cli_cmd *cmd) {
  const char *v = getenv("ONNX_PRUNE_THREADS");
  if (!v || !*v) return 0;
  char *e;
  errno = 0;
  long long n = strtoll(v, &e, 10);
  if (errno || e == v || *e || n < 1)
    return cli_error(cmd, "ONNX_PRUNE_THREADS: '%s' is not a whole number >= 1", v);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 2) return cli_error(NULL, "missing command (see onnx-prune --help)");
  const char *c = argv[1];
  if (!strcmp(c, "-h") || !strcmp(c, "--help") || !strcmp(c, "help")) {
    const cli_cmd *cmd = argc > 2 && !strcmp(c, "help") ? find_command(argv[2]) : NULL;
    if (cmd) cli_print_help(cmd, stdout);
    else if (argc > 2 && !strcmp(c, "help")) return cli_error(NULL, "help: unknown command '%s'", argv[2]);
    else usage(stdout);
    return 0;
  }
  if (!strcmp(c, "-V") || !strcmp(c, "--version") || !strcmp(c, "version")) {
    if (argc > 2) return cli_error(NULL, "%s: unexpected argument '%s'", c, argv[2]);
    printf("onnx-prune %s\n", op_version());
    return 0;
  }
  const cli_cmd *cmd = find_command(c);
  if (!cmd) {
    const char *names[N_COMMANDS + 2];
    for (size_t i = 0; i < N_COMMANDS; i++) names[i] = COMMANDS[i]->name;
    names[N_COMMANDS] = "version";
    names[N_COMMANDS + 1] = "help";
    const char *s = c[0] == '-' ? NULL : cli_suggest(c, names, N_COMMANDS + 2);
    if (s) return cli_error(NULL, "unknown command '%s' (did you mean '%s'?)", c, s);
    return cli_error(NULL, "unknown command '%s' (see onnx-prune --help)", c);
  }
  cli_args a;
  int rc = cli_parse(cmd, argc - 2, argv + 2, &a);
  if (rc == 1) { /* --help was printed */
    cli_args_free(&a);
    return 0;
  }
  cli_clock_start();
  if (!rc) rc = check_threads_env(cmd);
  if (!rc && cli_has(&a, "--max-memory")) {
    op_error err = {0};
    if (op_set_max_memory(cli_get(&a, "--max-memory"), &err)) rc = cli_fail(&a, &err);
  }
  if (!rc) {
    size_t i = 0;
    while (COMMANDS[i] != cmd) i++;
    rc = RUNNERS[i](&a);
  }
  cli_args_free(&a);
  return rc;
}
