/* test_match.c - the matcher on real exports: every fixture and shared model is recognised with the
 * right heads, head size, FFN width, activation, norm placement and q/k/v packing, and the shape
 * reader finds the head count in each exporter's head-split Reshape. */
#include "check.h"
#include "match/match.h"

#include <stdlib.h>

typedef struct expect {
  const char *path;
  int layers, heads, head_dim, ffn;
  const char *activation;
  bool packed, pre_norm, gemm;
  int kv_heads; /* 0: one per query head */
  bool rotary;
} expect;

static void check_model(const char *root, const expect *e) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", root, e->path);
  op_error err;
  op_model *m = op_model_load(path, &err);
  CHECK(m != NULL);
  if (!m) {
    fprintf(stderr, "%s: %s\n", path, err.message);
    return;
  }
  op_analysis *a = op_analyze(m, &err);
  CHECK(a != NULL);
  if (a) {
    CHECK_EQ_INT(a->layers.n, e->layers);
    CHECK_EQ_INT(a->unmatched.n, 0);
    for (size_t l = 0; l < a->layers.n; l++) {
      const op_attn *at = op_layer_attn(a, (int)l);
      const op_ffn *f = op_layer_ffn(a, (int)l);
      CHECK(at && f);
      if (!at || !f) continue;
      CHECK_EQ_INT(at->heads, e->heads);
      CHECK_EQ_INT(at->kv_heads, e->kv_heads ? e->kv_heads : e->heads);
      CHECK_EQ_INT(at->kv_map, e->kv_heads && e->kv_heads != e->heads ? OP_KV_INTERLEAVED : OP_KV_SAME);
      CHECK_EQ_INT(at->rotary, e->rotary);
      CHECK(strcmp(op_attn_kind(at), !e->kv_heads ? "self" : e->kv_heads == 1 ? "multi-query" : "grouped") == 0);
      /* every grouped block carries its repeat (Expand) on k and v, and the fold back to query heads */
      int repeats = 0, folds = 0;
      for (size_t i = 0; i < at->sites.n; i++) {
        repeats += at->sites.v[i].role == OP_SITE_REPEAT;
        folds += at->sites.v[i].role == OP_SITE_HEADS;
      }
      CHECK_EQ_INT(repeats, e->kv_heads ? 2 : 0);
      CHECK_EQ_INT(folds, e->kv_heads ? 2 : 0);
      CHECK_EQ_INT(at->head_dim, e->head_dim);
      CHECK_EQ_INT(at->packed, e->packed);
      CHECK_EQ_INT(f->down.in, e->ffn);
      CHECK(strcmp(f->activation, e->activation) == 0);
      CHECK_EQ_INT(a->blocks.v[a->layers.v[l].attn_block].pre_norm, e->pre_norm);
      CHECK_EQ_INT(a->blocks.v[a->layers.v[l].ffn_block].pre_norm, e->pre_norm);
      CHECK(a->blocks.v[a->layers.v[l].ffn_block].stream_out_known);
      CHECK_EQ_INT(op_node_is(a->gr->g->node[at->qkv[0].node], "Gemm"), e->gemm);
      CHECK(at->out.b != NULL || !strcmp(e->activation, "gated-silu"));
    }
    char *t = op_analysis_table(a), *j = op_analysis_json(a);
    CHECK_CONTAINS(t, "total:");
    CHECK_CONTAINS(j, "\"head_dim\":");
    free(t);
    free(j);
  } else {
    fprintf(stderr, "%s: %s\n", path, err.message);
  }
  op_analysis_free(a);
  op_model_free(m);
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  const expect fixtures[] = {
      {"bert_separate_mask_opset11/model.onnx", 2, 4, 8, 64, "gelu(erf)", false, false, false, 0, false},
      {"bert_gelu_op_opset20/model.onnx", 2, 4, 8, 64, "gelu", false, false, false, 0, false},
      {"gemm_transposed_opset12/model.onnx", 2, 4, 8, 64, "relu", false, false, true, 0, false},
      {"gpt2_packed_split_opset13/model.onnx", 2, 4, 8, 64, "gelu(tanh)", true, true, false, 0, false},
      {"gpt2_packed_slices_opset15/model.onnx", 2, 4, 8, 64, "gelu(tanh)", true, true, false, 0, false},
      {"llama_swiglu_opset14/model.onnx", 2, 4, 8, 64, "gated-silu", false, true, false, 0, false},
      {"mha_layernorm_opset17/model.onnx", 2, 4, 8, 64, "relu", true, false, false, 0, false},
      {"llama_gqa_opset14/model.onnx", 2, 8, 12, 64, "gated-silu", false, true, false, 2, true},
      {"llama_mqa_opset14/model.onnx", 2, 8, 12, 64, "gated-silu", false, true, false, 1, true},
      {"bert_constant_weights_opset11/model.onnx", 2, 4, 8, 64, "gelu(erf)", false, false, false, 0, false},
      {"llama_fp16_weights_opset14/model.onnx", 2, 4, 8, 64, "gated-silu", false, true, false, 0, false},
      {"llama_half_opset14/model.onnx", 2, 4, 8, 64, "gated-silu", false, true, false, 0, false},
  };
  for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) check_model(argv[1], &fixtures[i]);
  const expect shared[] = {
      {"austen_bert/model.onnx", 4, 4, 64, 1024, "gelu(erf)", false, false, false, 0, false},
      {"digits_vit/model.onnx", 2, 4, 16, 256, "gelu(erf)", true, true, false, 0, false},
  };
  for (size_t i = 0; i < sizeof shared / sizeof *shared; i++) check_model(argv[2], &shared[i]);

  /* weights in Constant nodes (some behind Identity) and float16 weights behind Cast are counted as
   * the float32 initializers they came from */
  const char *same[][2] = {{"bert_separate_mask_opset11", "bert_constant_weights_opset11"},
                           {"llama_swiglu_opset14", "llama_fp16_weights_opset14"},
                           {"llama_swiglu_opset14", "llama_half_opset14"}};
  for (int k = 0; k < 3; k++) {
    int64_t totals[2] = {-1, -2}, attn[2] = {-1, -2};
    for (int i = 0; i < 2; i++) {
      char p[4096];
      snprintf(p, sizeof p, "%s/%s/model.onnx", argv[1], same[k][i]);
      op_error e;
      op_model *mm = op_model_load(p, &e);
      op_analysis *aa = mm ? op_analyze(mm, &e) : NULL;
      if (aa) totals[i] = aa->params_total, attn[i] = aa->params_attn;
      op_analysis_free(aa);
      op_model_free(mm);
    }
    CHECK_EQ_INT(totals[0], totals[1]);
    CHECK_EQ_INT(attn[0], attn[1]);
  }

  /* a model with no transformer block: nothing matched, and pruning says so */
  char path[4096];
  snprintf(path, sizeof path, "%s/austen_bert/model.onnx", argv[2]);
  op_error err;
  op_model *m = op_model_load(path, &err);
  CHECK(m != NULL); /* a fixture that does not load is a failure, never a skip */
  if (!m) fprintf(stderr, "%s\n", err.message);
  if (m) {
    Onnx__GraphProto *g = m->proto->graph;
    for (size_t i = 0; i < g->n_node; i++)
      if (op_node_is(g->node[i], "Softmax")) {
        free(g->node[i]->op_type);
        g->node[i]->op_type = strdup("LogSoftmax");
      }
    op_analysis *a = op_analyze(m, &err);
    CHECK(a && a->attn.n == 0 && a->ffn.n == 4);
    op_analysis_free(a);
  }
  op_model_free(m);
  return check_done("match");
}
