/* test_fuse.c - the executor's epilogue planner (src/exec/fuse.c) on real exports: which products take
 * their bias and activation into their own output pass, whatever form the exporter wrote them in
 * (decomposed erf and tanh GELU, SiLU, opset 20's Gelu, com.microsoft BiasGelu / FastGelu).
 * `test_fuse list MODEL` prints a model's fused epilogues; `test_fuse FIXTURES SHARED_MODELS` checks
 * the expected ones (a missing model is a failure). Whether the fused outputs equal the unfused ones
 * is tests/e2e/kernel_paths.sh's part (ONNX_PRUNE_FUSE=0 against the default, on every kernel path). */
#include "check.h"
#include "exec/exec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* "bias+gelu(erf) bias ..." for a model, or NULL with the error printed. */
static char *fused_list(const char *path) {
  op_error err;
  op_model *m = op_model_load(path, &err);
  op_session *s = m ? op_session_new(m, &err) : NULL;
  if (!s) {
    fprintf(stderr, "%s\n", err.message);
    op_model_free(m);
    return NULL;
  }
  size_t n = op_session_fused_count(s), cap = 64 + n * 32, off = 0;
  char *buf = malloc(cap);
  buf[0] = 0;
  for (size_t i = 0; i < n; i++) {
    const char *node;
    bool bias;
    const char *act = op_session_fused_act(s, i, &node, &bias);
    bool has_act = strcmp(act, "none") != 0;
    off += (size_t)snprintf(buf + off, cap - off, "%s%s%s%s", i ? " " : "", bias ? "bias" : "", bias && has_act ? "+" : "",
                            has_act ? act : "");
  }
  op_session_free(s);
  op_model_free(m);
  return buf;
}

static int count_of(const char *list, const char *word) {
  int n = 0;
  for (const char *p = list; (p = strstr(p, word)); p += strlen(word)) n++;
  return n;
}

typedef struct expect {
  const char *dir;   /* under fixtures/ or (shared) under the shared models */
  bool shared;
  int total;         /* fused products */
  const char *act;   /* an activation they must include ... */
  int n_act;         /* ... this many times */
} expect;

static const expect EXPECT[] = {
    {"austen_bert", true, 24, "bias+gelu(erf)", 4},         /* torch's decomposed erf GELU: Div, Erf, Add, Mul, Mul */
    {"austen_gpt", true, 16, "bias+gelu(tanh)", 4},         /* GPT-2's tanh GELU: x*x*x, Mul, Add, Mul, Tanh, Add, Mul, Mul */
    {"digits_vit", true, 7, "bias+gelu(erf)", 2},           /* nn.TransformerEncoderLayer, gelu */
    {"bert_gelu_op_opset20", false, 0, "gelu(", 1},         /* opset 20's Gelu node after the bias Add */
    {"llama_swiglu_opset14", false, 0, "silu", 1},          /* gate * sigmoid(gate), times up */
    {"export_vit_ort_extended", false, 6, "bias+gelu(erf)", 2}, /* ONNX Runtime's optimizer: MatMul -> BiasGelu */
    {"real/gpt2_ortfused", true, 5, "bias+gelu(tanh)", 5},  /* ONNX Runtime's optimizer: MatMul -> FastGelu(x, bias) */
    {"gemm_transposed_opset12", false, 2, "bias+relu", 2},  /* Gemm's own C as the bias, then Relu */
};

typedef struct watch {
  const op_session *s;
  int seen, fused_away, gelu_out;
} watch;

static void observe(void *user, const char *name, const op_tensor *t) {
  watch *w = user;
  (void)t;
  w->seen++;
  w->fused_away += op_session_value_fused_away(w->s, name);
  w->gelu_out += strstr(name, "/Mul_1_output_0") != NULL; /* the decomposed GELU's last value, one per layer */
}

/* An observer sees every value unfused; with op_session_observe_fused, only what fused epilogues leave,
 * their chains' values included; the outputs are the same within 1e-5 of the largest either way. */
static void observed(const char *path, const char *data) {
  op_error err;
  op_model *m = op_model_load(path, &err);
  op_session *s = m ? op_session_new(m, &err) : NULL;
  op_dataset *d = s ? op_dataset_open(data, &err) : NULL;
  CHECK(d != NULL);
  if (!d) {
    fprintf(stderr, "%s\n", err.message);
    return;
  }
  op_tensor in[8] = {{0}}, plain = {0}, all = {0}, fused = {0};
  CHECK(op_session_input_count(s) <= 8 && op_session_output_count(s) == 1);
  CHECK(op_dataset_batch(d, s, 0, 4, in, &err) == 0);
  watch every = {s, 0, 0, 0}, left = {s, 0, 0, 0};
  CHECK(op_session_run(s, in, &plain, NULL, NULL, &err) == 0);
  CHECK(op_session_run(s, in, &all, observe, &every, &err) == 0);
  op_session_observe_fused(s, true);
  CHECK(op_session_run(s, in, &fused, observe, &left, &err) == 0);
  CHECK(every.fused_away > 0 && left.fused_away == 0 && left.seen < every.seen);
  CHECK(left.gelu_out == 4 && every.gelu_out == 4);
  size_t n = plain.nbytes / sizeof(float);
  double big = 0, d1 = 0, d2 = 0;
  for (size_t i = 0; i < n; i++) {
    float p = ((float *)plain.data)[i], a = ((float *)all.data)[i], f = ((float *)fused.data)[i];
    big = fmax(big, fabs(p)), d1 = fmax(d1, fabs(p - a)), d2 = fmax(d2, fabs(p - f));
  }
  CHECK(n > 0 && d1 <= 1e-5 * big && d2 <= 1e-5 * big);
  printf("observed: %d values unfused, %d fused (%d of them replaced by epilogues)\n", every.seen, left.seen, every.fused_away);
  for (size_t i = 0; i < op_session_input_count(s); i++) op_tensor_clear(&in[i]);
  op_tensor_clear(&plain), op_tensor_clear(&all), op_tensor_clear(&fused);
  op_dataset_free(d);
  op_session_free(s);
  op_model_free(m);
}

int main(int argc, char **argv) {
  if (argc == 3 && !strcmp(argv[1], "list")) {
    char *l = fused_list(argv[2]);
    if (!l) return 2;
    printf("%s\n", l);
    free(l);
    return 0;
  }
  if (argc != 3) {
    fprintf(stderr, "usage: test_fuse FIXTURES SHARED_MODELS | test_fuse list MODEL\n");
    return 2;
  }
  for (size_t i = 0; i < sizeof EXPECT / sizeof *EXPECT; i++) {
    const expect *e = &EXPECT[i];
    char path[4096];
    snprintf(path, sizeof path, "%s/%s/model.onnx", e->shared ? argv[2] : argv[1], e->dir);
    char *l = fused_list(path);
    CHECK(l != NULL);
    if (!l) continue;
    printf("%s: %s\n", e->dir, l);
    int total = *l ? count_of(l, " ") + 1 : 0;
    if (e->total) CHECK_EQ_INT(total, e->total);
    CHECK(count_of(l, e->act) >= e->n_act);
    free(l);
  }
  char path[4096], data[4096];
  snprintf(path, sizeof path, "%s/austen_bert/model.onnx", argv[2]);
  snprintf(data, sizeof data, "%s/austen_bert/dev.npz", argv[2]);
  observed(path, data);
  /* off: the unfused path, for comparison */
  setenv("ONNX_PRUNE_FUSE", "0", 1);
  char *l = fused_list(path);
  CHECK(l && !*l);
  free(l);
  return check_done("fuse");
}
