/* test_match_fused.c - the recognisers of ONNX Runtime's fused graphs (src/match/match_fused.c) on the
 * generated fused fixtures, ONNX Runtime's saved optimized ViT and its test GPT-2: what each block
 * description holds (fused op, heads, part widths, biases held by fused ops, SkipLayerNormalization
 * residuals, state interfaces), and that a bias shared by several fused ops is copied, not sliced
 * under the others (src/prune/rewrite_fused.c). */
#include "check.h"
#include "prune/prune.h"

#include <stdlib.h>

typedef struct expect {
  const char *path;
  const char *fused_op; /* NULL: decomposed attention (FusedMatMul scores) */
  int layers, heads, kv_heads, head_dim, ffn;
  bool packed, pre_norm, fused_residual;
  int states; /* past/present interfaces per layer */
  const char *activation0;
} expect;

static op_analysis *load(const char *root, const char *rel, op_model **m) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", root, rel);
  op_error err;
  *m = op_model_load(path, &err);
  CHECK(*m != NULL); /* a missing fixture is a failure, never a skip */
  if (!*m) {
    fprintf(stderr, "%s: %s\n", path, err.message);
    return NULL;
  }
  op_analysis *a = op_analyze(*m, &err);
  CHECK(a != NULL);
  if (!a) fprintf(stderr, "%s: %s\n", path, err.message);
  return a;
}

static void check_model(const char *root, const expect *e) {
  op_model *m;
  op_analysis *a = load(root, e->path, &m);
  if (a) {
    CHECK_EQ_INT(a->layers.n, e->layers);
    CHECK_EQ_INT(a->unmatched.n, 0);
    for (size_t i = 0; i < a->unmatched.n; i++) fprintf(stderr, "%s: %s\n", e->path, a->unmatched.v[i]);
    for (size_t l = 0; l < a->layers.n; l++) {
      const op_attn *at = op_layer_attn(a, (int)l);
      const op_ffn *f = op_layer_ffn(a, (int)l);
      CHECK(at && f);
      if (!at || !f) continue;
      CHECK((e->fused_op == NULL) == (at->fused_op == NULL));
      if (e->fused_op && at->fused_op) {
        CHECK(strcmp(at->fused_op, e->fused_op) == 0);
        char kind[64];
        snprintf(kind, sizeof kind, "fused op (%s)", e->fused_op);
        CHECK(strcmp(op_attn_kind(at), kind) == 0);
      }
      CHECK_EQ_INT(at->heads, e->heads);
      CHECK_EQ_INT(at->kv_heads, e->kv_heads);
      CHECK_EQ_INT(at->head_dim, e->head_dim);
      CHECK_EQ_INT(f->down.in, e->ffn);
      const op_block *ab = &a->blocks.v[a->layers.v[l].attn_block], *fb = &a->blocks.v[a->layers.v[l].ffn_block];
      CHECK_EQ_INT(ab->pre_norm, e->pre_norm);
      CHECK_EQ_INT(fb->pre_norm, e->pre_norm);
      CHECK_EQ_INT(ab->fused_residual, e->fused_residual);
      CHECK_EQ_INT(fb->fused_residual, e->fused_residual);
      CHECK(strcmp(fb->stream_in, ab->stream_out) == 0); /* attention and FFN pair into one layer */
      op_fused_state st[4];
      CHECK_EQ_INT(op_fused_states(a, at, st), e->states);
      if (l == 0) {
        CHECK_EQ_INT(at->packed, e->packed);
        CHECK(strcmp(f->activation, e->activation0) == 0);
      }
    }
  }
  op_analysis_free(a);
  op_model_free(m);
}

/* Layer-by-layer details of the generated fixtures that the table above does not say. */
static void check_details(const char *fixtures) {
  op_model *m;
  op_analysis *a = load(fixtures, "fused_bert_attention/model.onnx", &m);
  if (a && a->layers.n == 2) {
    const op_attn *at = op_layer_attn(a, 1);
    const op_ffn *f = op_layer_ffn(a, 1);
    /* qkv_hidden_sizes [32, 32, 48]: v heads of 12 read by a FusedMatMul output projection stored [out, in] */
    CHECK_EQ_INT(at->part[0], 32);
    CHECK_EQ_INT(at->part[2], 48);
    int64_t off;
    CHECK_EQ_INT(op_attn_part(at, 2, &off), 48);
    CHECK_EQ_INT(off, 64);
    CHECK_EQ_INT(op_attn_v_head_dim(at), 12);
    CHECK(at->out.w_out_major);
    CHECK(strcmp(a->gr->g->node[at->out.node]->op_type, "FusedMatMul") == 0);
    /* FastGelu's bias is the up projection's; the down projection is a FusedMatMul with transB */
    CHECK(f->up[0].b && strcmp(f->up[0].b, "layer.1.ffn.up.bias") == 0);
    CHECK(f->down.w_out_major);
    CHECK(strcmp(op_layer_ffn(a, 0)->up[0].b, "layer.0.ffn.up.bias") == 0); /* BiasGelu's */
    CHECK(a->params_embed > 0); /* EmbedLayerNormalization's tables */
  }
  op_analysis_free(a);
  op_model_free(m);

  a = load(fixtures, "fused_gpt2_mha/model.onnx", &m);
  if (a && a->layers.n == 2) {
    CHECK(op_layer_attn(a, 0)->packed_bias && strcmp(op_layer_attn(a, 0)->packed_bias, "h.0.attn.qkv.bias") == 0);
    CHECK(op_layer_attn(a, 1)->packed_bias == NULL && op_layer_attn(a, 1)->qkv[2].b != NULL); /* MatMul + Add */
  }
  op_analysis_free(a);
  op_model_free(m);

  a = load(fixtures, "fused_llama_gqa/model.onnx", &m);
  if (a && a->layers.n == 2) {
    const op_attn *at = op_layer_attn(a, 1); /* packed [8 q heads | 2 k heads | 2 v heads] of 16 */
    CHECK(at->packed);
    CHECK_EQ_INT(op_attn_part(at, 0, NULL), 128);
    CHECK_EQ_INT(op_attn_part(at, 1, NULL), 32);
    CHECK_EQ_INT(at->kv_map, OP_KV_INTERLEAVED);
    CHECK(!op_layer_attn(a, 0)->packed);
    CHECK(strcmp(op_layer_ffn(a, 1)->activation, "gated-quickgelu") == 0);
  }
  op_analysis_free(a);
  op_model_free(m);
}

/* gpt2_ortfused shares one q|k|v bias between its five Attention ops: the first pruned one gets a copy,
 * the shared original keeps its values and width. */
static void check_shared_bias(const char *shared) {
  op_model *m;
  op_analysis *a = load(shared, "real/gpt2_ortfused/model.onnx", &m);
  if (a && a->layers.n == 5) {
    const op_attn *at = op_layer_attn(a, 0);
    const char *name = at->qkv[0].b;
    CHECK(name && strcmp(name, "transformer.h.0.attn.c_attn.bias") == 0);
    Onnx__TensorProto *orig = op_graph_const(a->gr, name);
    Onnx__TensorProto *own = op_fused_own_bias(a, at->fused_node, name);
    CHECK(own != NULL && own != orig);
    Onnx__NodeProto *n = a->gr->g->node[at->fused_node];
    CHECK(strcmp(n->input[2], name) != 0); /* repointed to the copy */
    CHECK(strcmp(a->gr->g->node[op_layer_attn(a, 1)->fused_node]->input[2], name) == 0); /* the others not */
    CHECK(own && orig && own->raw_data.len == orig->raw_data.len &&
          memcmp(own->raw_data.data, orig->raw_data.data, orig->raw_data.len) == 0);
    /* a private tensor is its node's own: no copy */
    Onnx__TensorProto *w = op_graph_const(a->gr, at->qkv[0].w);
    CHECK(op_fused_own_bias(a, at->fused_node, at->qkv[0].w) == w);
  }
  op_analysis_free(a);
  op_model_free(m);
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  const expect fixtures[] = {
      {"fused_bert_attention/model.onnx", "Attention", 2, 4, 4, 8, 64, true, false, true, 0, "gelu(BiasGelu)"},
      {"fused_gpt2_mha/model.onnx", "MultiHeadAttention", 2, 4, 4, 8, 128, false, true, true, 4, "gelu(FastGelu)"},
      {"fused_llama_gqa/model.onnx", "GroupQueryAttention", 2, 8, 2, 16, 48, false, true, true, 2, "gated-silu"},
      {"export_vit_ort_extended/model.onnx", NULL, 2, 4, 4, 8, 64, true, true, false, 0, "gelu(BiasGelu)"},
  };
  for (size_t i = 0; i < sizeof fixtures / sizeof *fixtures; i++) check_model(argv[1], &fixtures[i]);
  const expect gpt2 = {"real/gpt2_ortfused/model.onnx", "Attention", 5, 4, 4, 8, 128, true, true, true, 2,
                       "gelu(FastGelu)"};
  check_model(argv[2], &gpt2);
  check_details(argv[1]);
  check_shared_bias(argv[2]);
  return check_done("match_fused");
}
