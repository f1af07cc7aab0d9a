/* fuzz_cli.c - libFuzzer target: the command line. The input is argv, one argument per line; main.c
 * is compiled in (its main renamed op_cli_main) and runs in the scratch folder, where m.onnx (the
 * BERT fixture) and `.` (its test data, input_0.pb and input_1.pb) can be named. Arguments with '/' or '..' are skipped so no path outside
 * the scratch folder is ever read or written. */
#include "fuzz_util.h"

int op_cli_main(int argc, char **argv);

#define MAX_ARGS 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static bool ready;
  if (!ready) {
    size_t n;
    uint8_t *m = fuzz_fixture("bert_separate_mask_opset11/model.onnx", &n);
    fuzz_write("m.onnx", m, n);
    free(m);
    for (int i = 0; i < 2; i++) { /* test data: `--data .` reads input_0.pb and input_1.pb */
      char rel[64], name[16];
      snprintf(rel, sizeof rel, "bert_separate_mask_opset11/test_data_set_0/input_%d.pb", i);
      snprintf(name, sizeof name, "input_%d.pb", i);
      uint8_t *b = fuzz_fixture(rel, &n);
      fuzz_write(name, b, n);
      free(b);
    }
    if (chdir(fuzz_dir()) != 0) abort();
    int null = open("/dev/null", O_WRONLY);
    if (null < 0 || dup2(null, 1) < 0) abort(); /* the commands' reports; errors stay on stderr */
    close(null);
    ready = true;
  }
  if (size > 4096 || memchr(data, '/', size) || memmem(data, size, "..", 2)) return 0; /* `..` is outside too */
  char *buf = malloc(size + 1);
  memcpy(buf, data, size);
  buf[size] = 0;
  char *argv[MAX_ARGS + 10] = {"onnx-prune"};
  int argc = 1;
  for (char *tok = buf, *nl; tok && argc <= MAX_ARGS; tok = nl ? nl + 1 : NULL) {
    nl = strchr(tok, '\n');
    if (nl) *nl = 0;
    argv[argc++] = tok;
  }
  /* calibration is the slow part of quantize and compress: the quickest method on one batch keeps an
   * input under the time limit in the sanitizer build (flags given later win, so these override) */
  char *quick[] = {"--method", "abs_max", "--batches", "1", "--samples", "2", "--eval-samples", "1"};
  if (argc > 1 && (!strcmp(argv[1], "quantize") || !strcmp(argv[1], "compress")))
    for (size_t i = 0; i < sizeof quick / sizeof *quick && argc < MAX_ARGS + 8; i++) argv[argc++] = quick[i];
  argv[argc] = NULL;
  fuzz_caps();
  op_cli_main(argc, argv);
  fflush(stdout);
  free(buf);
  return 0;
}
