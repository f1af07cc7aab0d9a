/* test_layers.c - encoder-decoder layers (issue 9): torch's run-time cut of a packed cross-attention
 * in-projection is folded into weights without changing the parameter count, a decoder layer is
 * one layer holding self-attention, cross-attention and FFN, layers are numbered per stack, and
 * layer references (N, encoder.N, decoder.N) parse, print and resolve with precise refusals. */
#include "check.h"
#include "match/match.h"

#include <stdlib.h>

static op_analysis *analyze(const char *root, const char *name, op_model **m) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s/model.onnx", root, name);
  op_error err;
  *m = op_model_load(path, &err);
  CHECK(*m != NULL); /* a fixture that does not load is a failure, never a skip */
  if (!*m) {
    fprintf(stderr, "%s\n", err.message);
    return NULL;
  }
  int64_t before = op_graph_param_count((*m)->proto->graph);
  op_analysis *a = op_analyze(*m, &err);
  CHECK(a != NULL);
  if (!a) fprintf(stderr, "%s\n", err.message);
  else CHECK_EQ_INT(a->params_total, before); /* folding moves weights, never adds any */
  return a;
}

/* Stacks and layer structure: enc encoder layers, then dec decoder layers. */
static void check_stacks(const char *root, const char *name, int enc, int dec, bool kv_packed) {
  op_model *m;
  op_analysis *a = analyze(root, name, &m);
  if (a) {
    CHECK_EQ_INT(a->unmatched.n, 0);
    CHECK_EQ_INT(a->layers.n, enc + dec);
    CHECK_EQ_INT(op_analysis_has_stacks(a), enc > 0 && dec > 0);
    for (size_t l = 0; l < a->layers.n && l < (size_t)(enc + dec); l++) {
      const op_layer *L = &a->layers.v[l];
      bool decoder = (int)l >= enc;
      CHECK_EQ_INT(L->stack, decoder ? OP_STACK_DECODER : OP_STACK_ENCODER);
      CHECK_EQ_INT(L->stack_index, decoder ? (int)l - enc : (int)l);
      const op_attn *self = op_layer_attn(a, (int)l), *cross = op_layer_cross(a, (int)l);
      CHECK(self && !self->cross && op_layer_ffn(a, (int)l));
      CHECK_EQ_INT(cross != NULL, decoder);
      if (cross) {
        CHECK(cross->cross && !strcmp(op_attn_kind(cross), "cross"));
        CHECK_EQ_INT(cross->kv_packed, kv_packed);
        CHECK(strcmp(cross->qkv[1].x, cross->qkv[0].x) != 0 && !strcmp(cross->qkv[1].x, cross->qkv[2].x));
        CHECK_EQ_INT(op_layer_first_block(a, (int)l), L->attn_block);
        CHECK_EQ_INT(op_layer_last_block(a, (int)l), L->ffn_block);
        CHECK(L->attn_block < L->cross_block && L->cross_block < L->ffn_block);
      }
      char buf[40];
      op_layer_label(a, (int)l, buf, sizeof buf);
      char want[40];
      if (enc && dec) snprintf(want, sizeof want, "%s.%d", decoder ? "decoder" : "encoder", L->stack_index);
      else snprintf(want, sizeof want, "%zu", l);
      CHECK(!strcmp(buf, want));
    }
    /* the run-time Slices of in_proj_weight are gone: weights now */
    for (size_t i = 0; i < a->gr->g->n_node; i++) {
      const Onnx__NodeProto *n = a->gr->g->node[i];
      CHECK(!(op_node_is(n, "Slice") && strstr(n->input[0], "multihead_attn.in_proj")));
    }
  }
  op_analysis_free(a);
  op_model_free(m);
}

static void check_refs(const char *root) {
  int ref;
  const char *end;
  char buf[40];
  CHECK(op_layer_ref_parse("3", &end, &ref) == 0 && ref == 3 && !*end);
  CHECK(op_layer_ref_parse("decoder.12,x", &end, &ref) == 0 && *end == ',');
  CHECK(op_layer_ref_is_stacked(ref) && op_layer_ref_stack(ref) == OP_STACK_DECODER && op_layer_ref_index(ref) == 12);
  CHECK(!strcmp(op_layer_ref_text(ref, buf, sizeof buf), "decoder.12"));
  CHECK(op_layer_ref_parse("encoder.0", &end, &ref) == 0 && op_layer_ref_stack(ref) == OP_STACK_ENCODER &&
        op_layer_ref_index(ref) == 0);
  CHECK(op_layer_ref_parse("encoder.", &end, &ref) < 0);
  CHECK(op_layer_ref_parse("decoder.-1", &end, &ref) < 0);
  CHECK(op_layer_ref_parse("middle.1", &end, &ref) < 0);
  CHECK(op_layer_ref_parse("-1", &end, &ref) < 0);

  op_model *m;
  op_error err;
  op_analysis *a = analyze(root, "torch_transformer_prenorm_opset14", &m); /* 2 encoder + 2 decoder layers */
  if (a) {
    CHECK_EQ_INT(op_layer_resolve(a, OP_LAYER_REF(OP_STACK_ENCODER, 1), "keep_layers", &err), 1);
    CHECK_EQ_INT(op_layer_resolve(a, OP_LAYER_REF(OP_STACK_DECODER, 0), "keep_layers", &err), 2);
    CHECK_EQ_INT(op_layer_resolve(a, 0, "keep_layers", &err), -1);
    CHECK_CONTAINS(err.message, "keep_layers: layer 0 is ambiguous: the model has an encoder stack (2 layers) and a "
                                "decoder stack (2 layers); name a layer encoder.N or decoder.N");
    CHECK_EQ_INT(op_layer_resolve(a, OP_LAYER_REF(OP_STACK_DECODER, 2), "layers", &err), -1);
    CHECK_CONTAINS(err.message, "layers: layer decoder.2 does not exist (the decoder stack has 2 layers, decoder.0-decoder.1)");
  }
  op_analysis_free(a);
  op_model_free(m);
  a = analyze(root, "torch_decoder_seqfirst_opset14", &m); /* decoder layers only: one stack */
  if (a) {
    CHECK_EQ_INT(op_layer_resolve(a, 1, "layers", &err), 1);
    CHECK_EQ_INT(op_layer_resolve(a, OP_LAYER_REF(OP_STACK_DECODER, 1), "layers", &err), 1);
    CHECK_EQ_INT(op_layer_resolve(a, OP_LAYER_REF(OP_STACK_ENCODER, 0), "layers", &err), -1);
    CHECK_CONTAINS(err.message, "the model has no encoder stack (it has a decoder stack only)");
    CHECK_EQ_INT(op_layer_resolve(a, 2, "layers", &err), -1);
    CHECK_CONTAINS(err.message, "layers: layer 2 does not exist (the model has 2 layers, 0-1)");
  }
  op_analysis_free(a);
  op_model_free(m);
  a = analyze(root, "bert_separate_mask_opset11", &m); /* no cross-attention: plain numbers only */
  if (a) {
    CHECK_EQ_INT(a->layers.v[0].stack, OP_STACK_NONE);
    CHECK_EQ_INT(op_layer_resolve(a, OP_LAYER_REF(OP_STACK_DECODER, 0), "layers", &err), -1);
    CHECK_CONTAINS(err.message, "the model has no decoder stack (it has one stack: number its layers 0, 1, ...)");
  }
  op_analysis_free(a);
  op_model_free(m);
}

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  check_stacks(argv[1], "torch_decoder_seqfirst_opset14", 0, 2, true);
  check_stacks(argv[1], "torch_decoder_batchfirst_prenorm_opset17", 0, 2, true);
  check_stacks(argv[1], "torch_transformer_prenorm_opset14", 2, 2, true);
  check_stacks(argv[1], "torch_transformer_seqfirst_postnorm_opset17", 2, 2, true);
  check_stacks(argv[1], "torch_mha_kdim_opset14", 0, 2, false);
  check_stacks(argv[1], "t5like_seq2seq_opset17", 2, 2, false);
  check_refs(argv[1]);
  return check_done("layers");
}
