/* test_chain.c - calibration passes that start where the previous one stopped (src/prune/chain.c),
 * against passes from the data on a fresh chain, on austen_bert: deeper values from the boundary, fewer
 * nodes run for it; a weight edited past the boundary, and one before it (the boundary is computed
 * again); an earlier value after a deep pass; and, to show the check can fail, an edit the chain is not
 * told of gives other values. */
#include "prune/chain.h"

#include "check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLES 40
#define BATCH 16

typedef struct fixture {
  op_model *m;
  op_graph *gr;
  op_dataset *d;
  const char *mm[64]; /* MatMul outputs, in graph order */
  const char *w[64];  /* their weights */
  size_t n_mm;
  /* weights edited: the model's bytes (a read-only mapping of the file) and the copies that replace them */
  Onnx__TensorProto *edited[8];
  uint8_t *orig[8];
  size_t n_edited;
} fixture;

/* Every batch of `name` in one float32 array (*n values); NULL on failure. */
static float *run_pass(op_chain *ch, const char *name, const char *const *edited, size_t n_edited, size_t *n,
                       size_t *nodes) {
  op_error err;
  if (op_chain_open(ch, &name, 1, edited, n_edited, false, NULL, &err)) {
    fprintf(stderr, "open %s: %s\n", name, err.message);
    return NULL;
  }
  if (nodes) *nodes = op_chain_nodes(ch);
  float *all = NULL;
  size_t len = 0;
  op_tensor t;
  int64_t count;
  int r;
  while ((r = op_chain_next(ch, &t, &count, &err)) == 1) {
    if (t.dtype != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) r = -1;
    size_t k = t.nbytes / sizeof(float);
    all = realloc(all, (len + k) * sizeof *all);
    memcpy(all + len, t.data, t.nbytes);
    len += k;
    op_tensor_clear(&t);
    if (r < 0) break;
  }
  op_chain_close(ch, r == 0);
  if (r < 0) {
    fprintf(stderr, "pass %s: %s\n", name, err.message);
    free(all);
    return NULL;
  }
  *n = len;
  return all;
}

static op_chain *chain(const fixture *f) {
  op_error err;
  op_chain *ch = op_chain_new(f->m, f->gr, f->d, SAMPLES, BATCH, f->mm, f->n_mm, false, &err);
  if (!ch) fprintf(stderr, "chain: %s\n", err.message);
  return ch;
}

/* The pass on ch agrees with a pass from the data on a fresh chain; returns the largest relative gap. */
static double compare(const fixture *f, op_chain *ch, const char *name, const char *const *edited, size_t n_edited,
                      size_t *nodes, size_t *fresh_nodes) {
  op_chain *ref = chain(f);
  size_t n = 0, nr = 0;
  float *got = ch ? run_pass(ch, name, edited, n_edited, &n, nodes) : NULL;
  float *want = ref ? run_pass(ref, name, NULL, 0, &nr, fresh_nodes) : NULL;
  double worst = INFINITY;
  if (got && want && n == nr && n > 0) {
    double scale = 0;
    for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    worst = 0;
    for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs(got[i] - want[i]) / (scale > 0 ? scale : 1));
  }
  printf("%-40s %3zu nodes run (%3zu from the data), largest gap %.3g\n", name, nodes ? *nodes : 0,
         fresh_nodes ? *fresh_nodes : 0, worst);
  free(got);
  free(want);
  op_chain_free(ref);
  return worst;
}

/* Gives the weight new bytes, scaled (as sequential.c does: the file's mapping is read-only). */
static void scale_weight(fixture *f, const char *name, float by) {
  Onnx__TensorProto *t = op_graph_init(f->gr, name);
  CHECK(t && t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT && op_tensor_to_raw(t) == 0 && f->n_edited < 8);
  if (!t || !t->raw_data.data || f->n_edited >= 8) return;
  float *v = malloc(t->raw_data.len); /* raw bytes are little-endian float32 on x86-64 */
  memcpy(v, t->raw_data.data, t->raw_data.len);
  for (size_t i = 0; i < t->raw_data.len / sizeof(float); i++) v[i] *= by;
  f->edited[f->n_edited] = t;
  f->orig[f->n_edited++] = t->raw_data.data;
  t->raw_data.data = (uint8_t *)v;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: test_chain SHARED_MODELS\n");
    return 2;
  }
  char path[4096], data[4096];
  snprintf(path, sizeof path, "%s/austen_bert/model.onnx", argv[1]);
  snprintf(data, sizeof data, "%s/austen_bert/dev.npz", argv[1]);
  op_error err;
  fixture f = {0};
  f.m = op_model_load(path, &err);
  f.d = f.m ? op_dataset_open(data, &err) : NULL;
  CHECK(f.m && f.d); /* a missing fixture fails */
  if (!f.m || !f.d) return check_done("chain");
  f.gr = op_graph_build(f.m->proto->graph);
  const Onnx__GraphProto *g = f.m->proto->graph;
  for (size_t i = 0; i < g->n_node && f.n_mm < 64; i++)
    if (op_node_is(g->node[i], "MatMul") && op_graph_init(f.gr, g->node[i]->input[1]))
      f.w[f.n_mm] = g->node[i]->input[1], f.mm[f.n_mm++] = g->node[i]->output[0];
  CHECK(f.n_mm >= 12); /* two layers' worth at least */
  if (f.n_mm < 12) return check_done("chain");

  op_chain *ch = chain(&f);
  CHECK(ch != NULL);
  size_t nodes = 0, fresh = 0;
  /* first pass: from the data */
  CHECK(compare(&f, ch, f.mm[3], NULL, 0, &nodes, &fresh) < 1e-6);
  CHECK_EQ_INT(nodes, fresh);
  /* deeper: from the boundary, running fewer nodes */
  CHECK(compare(&f, ch, f.mm[8], NULL, 0, &nodes, &fresh) < 1e-5);
  CHECK(nodes > 0 && nodes < fresh);
  /* a weight past the boundary edited (the next product's), then one before it: computed again */
  scale_weight(&f, f.w[9], 0.5f);
  const char *e1[] = {f.w[9]};
  CHECK(compare(&f, ch, f.mm[10], e1, 1, &nodes, &fresh) < 1e-5);
  CHECK(nodes < fresh);
  scale_weight(&f, f.w[1], 0.5f);
  const char *e2[] = {f.w[1]};
  CHECK(compare(&f, ch, f.mm[11], e2, 1, &nodes, &fresh) < 1e-5);
  /* an earlier value after a deep pass */
  CHECK(compare(&f, ch, f.mm[2], NULL, 0, &nodes, &fresh) < 1e-5);
  /* the chain told nothing of an edit before its boundary: its values are stale, which the check sees */
  CHECK(compare(&f, ch, f.mm[9], NULL, 0, &nodes, &fresh) < 1e-5);
  scale_weight(&f, f.w[4], 2.0f);
  CHECK(compare(&f, ch, f.mm[11], NULL, 0, &nodes, &fresh) > 1e-3);
  const char *e3[] = {f.w[4]};
  CHECK(compare(&f, ch, f.mm[11], e3, 1, &nodes, &fresh) < 1e-5);
  op_chain_free(ch);
  for (size_t i = f.n_edited; i-- > 0;) { /* the model's own bytes back, newest edit first */
    free(f.edited[i]->raw_data.data);
    f.edited[i]->raw_data.data = f.orig[i];
  }
  op_graph_free(f.gr);
  op_dataset_free(f.d);
  op_model_free(f.m);
  return check_done("chain");
}
