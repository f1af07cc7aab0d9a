/* test_fuse.c - the executor's epilogue planner (src/exec/fuse.c) on real exports: which products take
 * their bias and activation into their own output pass, whatever form the exporter wrote them in
 * (decomposed erf and tanh GELU, SiLU, opset 20's Gelu, com.microsoft BiasGelu / FastGelu).
 * `test_fuse list MODEL` prints a model's fused epilogues; `test_fuse FIXTURES SHARED_MODELS` checks
 * the expected ones (a missing model is a failure). Whether the fused outputs equal the unfused ones
 * is tests/e2e/kernel_paths.sh's part (ONNX_PRUNE_FUSE=0 against the default, on every kernel path). */
#include "check.h"
#include "exec/exec.h"

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
  /* off: the unfused path, for comparison */
  setenv("ONNX_PRUNE_FUSE", "0", 1);
  char path[4096];
  snprintf(path, sizeof path, "%s/austen_bert/model.onnx", argv[2]);
  char *l = fused_list(path);
  CHECK(l && !*l);
  free(l);
  return check_done("fuse");
}
