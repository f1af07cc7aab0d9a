/* test_quant_budget.c - the memory budget's running total around a whole quantize (issue 10): the
 * dataset's arrays, the session's values and the calibration statistics all give back what they took,
 * so held returns to its value before the command; a second command is not refused by leftovers. */
#include "check.h"
#include "files/files.h"
#include "onnxprune.h"

#include <stdio.h>

int main(int argc, char **argv) {
  if (argc < 2) return fprintf(stderr, "usage: test_quant_budget FIXTURE_DIR\n"), 2;
  char path[4096];
  op_error err;
  uint64_t held0 = op_budget_held();
  for (int round = 0; round < 2; round++) {
    snprintf(path, sizeof path, "%s/model.onnx", argv[1]);
    op_model *m = op_model_load(path, &err);
    op_dataset *d = m ? op_dataset_open(argv[1], &err) : NULL;
    op_quant_config *c = op_quant_config_new();
    CHECK(d != NULL);
    CHECK(op_quant_config_set(c, "method", "hist", &err) == 0);
    CHECK(op_budget_held() > held0); /* the dataset's arrays are held while it is open */
    op_quant_report *r = d ? op_quantize(m, d, c, &err) : NULL;
    if (!r) fprintf(stderr, "%s\n", err.message);
    CHECK(r != NULL);
    op_quant_report_free(r);
    op_quant_config_free(c);
    op_dataset_free(d);
    op_model_free(m);
    CHECK_EQ_INT(op_budget_held(), held0); /* every byte taken was given back */
  }
  return check_done("quant-budget");
}
