/* test_plan.c - configuration parsing and the plan it yields: counts per layer, global ranking,
 * explicit lists, all-zero units found by --compact, and refusals of configs that do not fit. */
#include "check.h"
#include "prune/prune.h"
#include "prune/target.h"

#include <stdlib.h>
#include <string.h>

static op_model *load(const char *dir, const char *name) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s/model.onnx", dir, name);
  op_error err;
  op_model *m = op_model_load(path, &err);
  if (!m) fprintf(stderr, "%s\n", err.message);
  return m;
}

static int64_t kept_heads(const op_plan *p, int l) { return op_plan_kept(p->layers[l].keep_head, p->layers[l].heads); }
static int64_t kept_neurons(const op_plan *p, int l) {
  return op_plan_kept(p->layers[l].keep_neuron, p->layers[l].width);
}

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  fputs(text, f);
  fclose(f);
}

/* Heads kept in each kv group of layer l (interleaved: group g holds heads g*rep .. g*rep+rep-1). */
static void kept_per_group(const op_plan *p, int l, int64_t *out) {
  const op_layer_plan *lp = &p->layers[l];
  int64_t rep = lp->heads / lp->kv_heads;
  for (int64_t g = 0; g < lp->kv_heads; g++) {
    out[g] = 0;
    for (int64_t k = 0; k < rep; k++) out[g] += lp->keep_head[g * rep + k];
  }
}

/* grouped-query attention (8 query heads, 2 kv groups): heads go in equal numbers from every group,
 * whole groups go with their heads, and lists that would unbalance the groups are refused */
static void test_grouped(const char *fixtures, const char *tmp) {
  op_error err;
  op_model *m = load(fixtures, "llama_gqa_opset14");
  CHECK(m != NULL);
  if (!m) return;
  op_analysis *a = op_analyze(m, &err);
  CHECK(a != NULL);
  if (!a) return;
  op_plan p;
  int64_t per[2];
  op_prune_config *c = op_prune_config_new();
  op_prune_config_set(c, "head_sparsity", "0.5", &err);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  kept_per_group(&p, 0, per);
  CHECK(per[0] == 2 && per[1] == 2 && op_plan_kept(p.layers[0].keep_kv, 2) == 2);
  op_plan_free(&p);
  op_prune_config_free(c);

  c = op_prune_config_new();
  op_prune_config_set(c, "num_kv_heads", "1", &err);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  kept_per_group(&p, 1, per);
  CHECK(op_plan_kept(p.layers[1].keep_kv, 2) == 1 && kept_heads(&p, 1) == 4);
  CHECK((per[0] == 4 && per[1] == 0) || (per[0] == 0 && per[1] == 4));
  op_plan_free(&p);
  op_prune_config_free(c);

  /* one head left in all: one group with one head */
  c = op_prune_config_new();
  op_prune_config_set(c, "num_heads", "1", &err);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  CHECK(op_plan_kept(p.layers[0].keep_kv, 2) == 1 && kept_heads(&p, 0) == 1);
  op_plan_free(&p);
  op_prune_config_free(c);

  /* global ranking leaves every group of a layer the same number of heads */
  c = op_prune_config_new();
  op_prune_config_set(c, "head_sparsity", "0.5", &err);
  op_prune_config_set(c, "scope", "global", &err);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  for (int l = 0; l < 2; l++) {
    kept_per_group(&p, l, per);
    CHECK(per[0] == per[1]);
  }
  op_plan_free(&p);
  op_prune_config_free(c);

  char cfg[4200];
  snprintf(cfg, sizeof cfg, "%s/plan_gqa.json", tmp);
  write_file(cfg, "{\"layers\": [{\"layer\": 0, \"heads\": [1, 2]}]}");
  c = op_prune_config_new();
  CHECK(op_prune_config_load_json(c, cfg, &err) == 0);
  CHECK(op_plan_build(a, c, &p, &err) == -1);
  CHECK_CONTAINS(err.message, "the same number in every group");
  op_prune_config_free(c);
  write_file(cfg, "{\"layers\": [{\"layer\": 0, \"kv_heads\": [2]}]}");
  c = op_prune_config_new();
  CHECK(op_prune_config_load_json(c, cfg, &err) == 0);
  CHECK(op_plan_build(a, c, &p, &err) == -1);
  CHECK_CONTAINS(err.message, "layer 0: kv head 2 does not exist (the layer has 2)");
  op_prune_config_free(c);
  write_file(cfg, "{\"layers\": [{\"layer\": 1, \"kv_heads\": [0], \"heads\": [5]}]}");
  c = op_prune_config_new();
  CHECK(op_prune_config_load_json(c, cfg, &err) == 0);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  kept_per_group(&p, 1, per);
  CHECK(per[0] == 0 && per[1] == 3 && !p.layers[1].keep_head[5]);
  op_plan_free(&p);
  op_prune_config_free(c);

  /* --compact: zero the output rows of group 1's heads 4 and 5 in layer 0: two heads per group go */
  const op_attn *at = op_layer_attn(a, 0);
  float *wo = op_tensor_f32(op_graph_init(a->gr, at->out.w));
  int64_t cols = at->out.out;
  CHECK(!at->out.w_out_major && at->kv_heads == 2);
  for (int64_t r = 4 * at->head_dim; r < 6 * at->head_dim; r++)
    for (int64_t k = 0; k < cols; k++) wo[r * cols + k] = 0;
  c = op_prune_config_new();
  op_prune_config_set(c, "compact", "true", &err);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  kept_per_group(&p, 0, per);
  CHECK(per[0] == 4 && per[1] == 4); /* group 0 has no dead head, so none can go from either */
  op_plan_free(&p);
  op_prune_config_free(c);
  for (int64_t r = 0; r < 4 * at->head_dim; r++) /* now group 0 is dead whole */
    for (int64_t k = 0; k < cols; k++) wo[r * cols + k] = 0;
  c = op_prune_config_new();
  op_prune_config_set(c, "compact", "true", &err);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  kept_per_group(&p, 0, per);
  CHECK(per[0] == 0 && per[1] == 2 && !p.layers[0].keep_kv[0]);
  op_plan_free(&p);
  op_prune_config_free(c);
  op_analysis_free(a);
  op_model_free(m);
}

/* --multiple-of's head step: both the Q/K width and the V/output width (wider V heads, as ONNX Runtime's
 * qkv_hidden_sizes allows) become multiples; none when it does not fit or the attention is grouped. */
static void test_head_step(void) {
  op_attn at;
  memset(&at, 0, sizeof at);
  at.heads = at.kv_heads = 4;
  at.head_dim = 8;
  at.out.in = 32;
  CHECK_EQ_INT(op_head_step(&at, 1), 1);
  CHECK_EQ_INT(op_head_step(&at, 16), 2); /* 2 heads x 8 */
  at.out.in = 48;                         /* V heads of 12 */
  CHECK_EQ_INT(op_head_step(&at, 16), 4); /* 4 x 8 and 4 x 12 = 48 */
  CHECK_EQ_INT(op_head_step(&at, 8), 2);  /* 2 x 12 = 24 */
  CHECK_EQ_INT(op_head_step(&at, 64), 1); /* 8 heads: more than the layer has */
  at.out.in = 32;
  at.kv_heads = 2;
  CHECK_EQ_INT(op_head_step(&at, 16), 1);
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  const char *fixtures = argv[1], *tmp = argv[2];
  op_error err;
  test_head_step();

  /* option values */
  op_prune_config *c = op_prune_config_new();
  CHECK(op_prune_config_set(c, "head_sparsity", "0.5", &err) == 0);
  CHECK(op_prune_config_set(c, "head_sparsity", "1", &err) == -1);
  CHECK_CONTAINS(err.message, "head_sparsity: '1' is outside [0, 1)");
  CHECK(op_prune_config_set(c, "width", "0", &err) == -1);
  CHECK(op_prune_config_set(c, "width", "1", &err) == 0);
  CHECK(op_prune_config_set(c, "ffn_size", "0", &err) == -1);
  CHECK(op_prune_config_set(c, "keep_layers", "0,,1", &err) == -1);
  CHECK(op_prune_config_set(c, "importance", "l3", &err) == -1);
  CHECK(op_prune_config_set(c, "nonsense", "1", &err) == -1);
  CHECK_CONTAINS(err.message, "unknown option 'nonsense'");
  op_prune_config_free(c);

  op_model *m = load(fixtures, "bert_separate_mask_opset11");
  CHECK(m != NULL); /* a fixture that does not load is a failure, never a skip */
  if (!m) return check_done("plan");
  op_analysis *a = op_analyze(m, &err);
  CHECK(a != NULL);
  op_plan p;

  /* per layer: the same fraction everywhere, at least one head left */
  c = op_prune_config_new();
  op_prune_config_set(c, "head_sparsity", "0.5", &err);
  op_prune_config_set(c, "ffn_size", "10", &err);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  CHECK_EQ_INT(kept_heads(&p, 0), 2);
  CHECK_EQ_INT(kept_heads(&p, 1), 2);
  CHECK_EQ_INT(kept_neurons(&p, 0), 10);
  /* the kept heads are the ones with the highest L2 scores */
  for (int l = 0; l < 2; l++)
    for (int h = 0; h < 4; h++)
      for (int k = 0; k < 4; k++)
        if (p.layers[l].keep_head[h] && !p.layers[l].keep_head[k]) CHECK(p.layers[l].head_score[h] >= p.layers[l].head_score[k]);
  op_plan_free(&p);
  op_prune_config_set(c, "head_sparsity", "0.99", &err);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  CHECK_EQ_INT(kept_heads(&p, 0), 1);
  op_plan_free(&p);
  op_prune_config_free(c);

  /* global: 4 of 8 heads go, wherever they score lowest, never a layer's last */
  c = op_prune_config_new();
  op_prune_config_set(c, "head_sparsity", "0.5", &err);
  op_prune_config_set(c, "scope", "global", &err);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  CHECK_EQ_INT(kept_heads(&p, 0) + kept_heads(&p, 1), 4);
  CHECK(kept_heads(&p, 0) >= 1 && kept_heads(&p, 1) >= 1);
  op_plan_free(&p);
  op_prune_config_free(c);

  /* JSON config: explicit lists, block removal, and its refusals */
  char cfg[4200];
  snprintf(cfg, sizeof cfg, "%s/cfg.json", tmp);
  write_file(cfg, "{\"ffn_sparsity\": 0.5, \"layers\": {\"0\": {\"heads\": [0, 3], \"neurons\": [1, 2, 3]},"
                  " \"1\": {\"attention\": false}}}");
  c = op_prune_config_new();
  CHECK(op_prune_config_load_json(c, cfg, &err) == 0);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  CHECK(!p.layers[0].keep_head[0] && p.layers[0].keep_head[1] && p.layers[0].keep_head[2] && !p.layers[0].keep_head[3]);
  CHECK_EQ_INT(kept_neurons(&p, 0), 61);
  CHECK_EQ_INT(kept_neurons(&p, 1), 32);
  CHECK(p.layers[1].drop_attn && !p.layers[0].drop_attn);
  op_plan_free(&p);
  op_prune_config_free(c);
  write_file(cfg, "{\"layers\": [{\"layer\": 1, \"neurons\": [64]}]}");
  c = op_prune_config_new();
  CHECK(op_prune_config_load_json(c, cfg, &err) == 0);
  CHECK(op_plan_build(a, c, &p, &err) == -1);
  CHECK_CONTAINS(err.message, "layer 1: neuron 64 does not exist (the layer has 64)");
  op_prune_config_free(c);
  write_file(cfg, "{\"layers\": [{\"layer\": 0, \"head_sparsity\": \"x\"}]}");
  c = op_prune_config_new();
  CHECK(op_prune_config_load_json(c, cfg, &err) == -1);
  CHECK_CONTAINS(err.message, "layers[0].head_sparsity: 'x' is outside");
  op_prune_config_free(c);

  /* --compact: zero head 2's output rows and neuron 5's down row in layer 1; exactly those go */
  const op_attn *at = op_layer_attn(a, 1);
  const op_ffn *f = op_layer_ffn(a, 1);
  float *wo = op_tensor_f32(op_graph_init(a->gr, at->out.w));
  float *wd = op_tensor_f32(op_graph_init(a->gr, f->down.w));
  int64_t E = at->out.in, cols = at->out.out;
  CHECK(!at->out.w_out_major);
  for (int64_t r = 2 * at->head_dim; r < 3 * at->head_dim && r < E; r++)
    for (int64_t k = 0; k < cols; k++) wo[r * cols + k] = 0;
  for (int64_t k = 0; k < f->down.out; k++) wd[5 * f->down.out + k] = 0;
  c = op_prune_config_new();
  op_prune_config_set(c, "compact", "true", &err);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  CHECK_EQ_INT(kept_heads(&p, 0), 4);
  CHECK_EQ_INT(kept_heads(&p, 1), 3);
  CHECK(!p.layers[1].keep_head[2]);
  CHECK_EQ_INT(kept_neurons(&p, 1), 63);
  CHECK(!p.layers[1].keep_neuron[5]);
  op_plan_free(&p);
  op_prune_config_free(c);

  /* activation importance: the head whose output rows are zero contributes nothing and goes first */
  c = op_prune_config_new();
  op_prune_config_set(c, "importance", "activation", &err);
  op_prune_config_set(c, "num_heads", "3", &err);
  CHECK(op_plan_build(a, c, &p, &err) == -1);
  CHECK_CONTAINS(err.message, "needs calibration data");
  char data_dir[4200];
  snprintf(data_dir, sizeof data_dir, "%s/bert_separate_mask_opset11", fixtures);
  op_dataset *ds = op_dataset_open(data_dir, &err);
  CHECK(ds != NULL);
  op_prune_config_set_data(c, ds);
  CHECK(op_plan_build(a, c, &p, &err) == 0);
  CHECK(!p.layers[1].keep_head[2] && kept_heads(&p, 1) == 3);
  CHECK(p.layers[1].head_score[2] == 0 && p.layers[1].head_score[0] > 0);
  op_plan_free(&p);
  op_prune_config_free(c);
  op_dataset_free(ds);

  op_analysis_free(a);
  op_model_free(m);
  test_grouped(fixtures, tmp);
  return check_done("plan");
}
