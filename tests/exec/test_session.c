/* test_session.c - sessions through the public API: the observer sees every node output once with
 * the shape the run produces; inputs are checked by name, type and shape; an unsupported operator
 * fails when the session is made, before any work. */
#include "check.h"
#include "files/files.h"
#include "model/model.h"

#include <stdlib.h>
#include <string.h>

typedef struct seen {
  int calls;
  bool saw_softmax;
  int64_t softmax_rank, softmax_last;
} seen;

static void observe(void *user, const char *name, const op_tensor *t) {
  seen *s = user;
  s->calls++;
  if (strstr(name, "Softmax")) {
    s->saw_softmax = true;
    s->softmax_rank = t->rank;
    s->softmax_last = t->dims[t->rank - 1];
    /* probabilities: every row sums to 1 */
    int64_t n = t->dims[t->rank - 1], rows = (int64_t)(t->nbytes / sizeof(float)) / n;
    for (int64_t r = 0; r < rows; r++) {
      double sum = 0;
      for (int64_t j = 0; j < n; j++) sum += ((const float *)t->data)[r * n + j];
      if (sum < 0.999 || sum > 1.001) s->saw_softmax = false;
    }
  }
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  char path[4096], data[4096];
  snprintf(path, sizeof path, "%s/bert_separate_mask_opset11/model.onnx", argv[1]);
  snprintf(data, sizeof data, "%s/bert_separate_mask_opset11", argv[1]);
  op_error err;
  uint64_t held0 = op_budget_held(); /* the memory budget's running total before any value exists */
  op_model *m = op_model_load(path, &err);
  CHECK(m != NULL);
  if (!m) return check_done("session");
  op_session *s = op_session_new(m, &err);
  CHECK(s != NULL);
  CHECK_EQ_INT(op_session_input_count(s), 2);
  CHECK(strcmp(op_session_input_name(s, 0), "input_ids") == 0);
  CHECK_EQ_INT(op_session_output_count(s), 1);
  int32_t dt;
  int rank;
  int64_t dims[OP_MAX_DIMS];
  op_session_input_info(s, 0, &dt, &rank, dims);
  CHECK(dt == 7 && rank == 2 && dims[0] == -1 && dims[1] == -1);

  op_dataset *d = op_dataset_open(data, &err);
  CHECK(d != NULL);
  CHECK_EQ_INT(op_dataset_samples(d, s, &err), 1); /* ONNX test data: one set, one complete run */
  op_tensor in[2], out[1];
  CHECK(op_dataset_batch(d, s, 0, 1, in, &err) == 0);
  CHECK(in[0].rank == 2 && in[0].dims[0] == 2);
  seen obs = {0};
  CHECK(op_session_run(s, in, out, observe, &obs, &err) == 0);
  CHECK(obs.calls > 50); /* every node output of a 2-layer encoder */
  CHECK(obs.saw_softmax && obs.softmax_rank == 4 && obs.softmax_last == 6);
  CHECK(out[0].rank == 2 && out[0].dims[0] == 2 && out[0].dims[1] == 3);
  op_tensor_clear(&out[0]);
  CHECK(op_budget_held() > held0); /* the session's kept buffers count against the budget */

  /* a second run of the same session gives the same outputs (nothing stale survives a run) */
  op_tensor again[1];
  CHECK(op_session_run(s, in, again, NULL, NULL, &err) == 0);
  op_tensor first[1];
  CHECK(op_session_run(s, in, first, NULL, NULL, &err) == 0);
  CHECK(again[0].nbytes == first[0].nbytes && memcmp(again[0].data, first[0].data, first[0].nbytes) == 0);
  op_tensor_clear(&again[0]);
  op_tensor_clear(&first[0]);

  /* a mis-shaped input names itself and both shapes */
  int64_t keep = in[0].rank;
  in[0].rank = 1;
  CHECK(op_session_run(s, in, out, NULL, NULL, &err) == -1);
  CHECK_CONTAINS(err.message, "input 'input_ids': expected int64 [?, ?], got int64 [2]");
  in[0].rank = (int)keep;
  in[1].dtype = 1;
  CHECK(op_session_run(s, in, out, NULL, NULL, &err) == -1);
  CHECK_CONTAINS(err.message, "input 'attention_mask': expected int64");
  op_tensor_clear(&in[0]);
  op_tensor_clear(&in[1]);
  op_dataset_free(d);
  op_session_free(s);
  CHECK_EQ_INT(op_budget_held(), held0); /* every byte taken was given back: no false OP_NOMEM in long runs */

  /* an unsupported operator fails when the session is made */
  free(m->proto->graph->node[5]->op_type);
  m->proto->graph->node[5]->op_type = strdup("NoSuchOp");
  CHECK(op_session_new(m, &err) == NULL);
  CHECK_CONTAINS(err.message, "unsupported operator 'NoSuchOp'");
  op_model_free(m);
  return check_done("session");
}
