/* test_graph.c - the name index sees what subgraphs read from the outer scope: an If branch's use of
 * an outer Constant keeps it alive, orders it first and makes it shared (DeBERTa-v2's export). */
#include "check.h"
#include "model/graph.h"

#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  if (argc < 2) return fprintf(stderr, "usage: test_graph FIXTURES\n"), 2;
  char path[4096];
  snprintf(path, sizeof path, "%s/hf/deberta_v2_ts17/model.onnx", argv[1]);
  op_error err;
  op_model *m = op_model_load(path, &err);
  CHECK(m != NULL); /* a missing fixture fails */
  if (!m) return check_done("graph");
  Onnx__GraphProto *g = m->proto->graph;
  op_graph *gr = op_graph_build(g);
  int if_node = -1;
  for (size_t i = 0; i < g->n_node && if_node < 0; i++)
    if (op_node_is(g->node[i], "If")) if_node = (int)i;
  CHECK(if_node >= 0);
  /* some value produced at top level is read only inside If branches */
  const char *outer = NULL;
  for (size_t i = 0; i < gr->cap && !outer; i++) {
    op_value *v = &gr->values[i];
    if (v->name && v->producer >= 0 && v->n_consumers == 0 && v->n_outer_users >= 1)
      outer = v->name;
  }
  CHECK(outer != NULL);
  char *keep = outer ? strdup(outer) : NULL;
  op_graph_free(gr);

  /* reversed node order: sorting must place the outer value's producer before the If */
  for (size_t i = 0; i < g->n_node / 2; i++) {
    Onnx__NodeProto *t = g->node[i];
    g->node[i] = g->node[g->n_node - 1 - i], g->node[g->n_node - 1 - i] = t;
  }
  CHECK(op_graph_toposort(g) == 0);
  op_graph_remove_dead(g);
  gr = op_graph_build(g);
  op_value *v = keep ? op_graph_find(gr, keep) : NULL;
  CHECK(v != NULL && v->producer >= 0); /* not removed as dead */
  if (v && v->producer >= 0 && v->n_outer_users) CHECK(v->producer < v->outer_users[0]);
  op_graph_free(gr);
  free(keep);
  op_model_free(m);
  return check_done("graph");
}
