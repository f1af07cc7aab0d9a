/* graph.c - name index over a GraphProto and the graph edits shared by the pruning passes. */
#include "model/graph.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint64_t hash_str(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
  return h;
}

static op_value *slot_for(op_graph *gr, const char *name) {
  size_t i = hash_str(name) & (gr->cap - 1);
  while (gr->values[i].name && strcmp(gr->values[i].name, name) != 0) i = (i + 1) & (gr->cap - 1);
  op_value *v = &gr->values[i];
  if (!v->name) {
    v->name = op_xstrdup(name); /* owned: edits free the strings of the graph itself */
    v->producer = v->init = v->graph_input = -1;
    gr->n_values++;
  }
  return v;
}

op_value *op_graph_find(const op_graph *gr, const char *name) {
  size_t i = hash_str(name) & (gr->cap - 1);
  while (gr->values[i].name) {
    if (strcmp(gr->values[i].name, name) == 0) return &gr->values[i];
    i = (i + 1) & (gr->cap - 1);
  }
  return NULL;
}

static op_graph *build_index(Onnx__GraphProto *g);

static void push_int(int **v, size_t *n, size_t *cap, int x) {
  if (*n == *cap) {
    *cap = *cap ? *cap * 2 : 4;
    *v = op_xrealloc(*v, *cap * sizeof(int));
  }
  (*v)[(*n)++] = x;
}

typedef OP_VEC(char *) name_list;

/* Names a subgraph (and the subgraphs nested in it) reads without defining them: values of the
 * scopes around it. */
static void collect_outer_refs(Onnx__GraphProto *sg, name_list *out) {
  op_graph *sgr = build_index(sg);
  for (size_t i = 0; i < sgr->cap; i++) {
    op_value *v = &sgr->values[i];
    if (v->name && v->producer < 0 && v->init < 0 && v->graph_input < 0 && v->n_consumers > 0)
      OP_VEC_PUSH(*out, op_xstrdup(v->name));
  }
  for (size_t i = 0; i < sg->n_node; i++)
    for (size_t a = 0; a < sg->node[i]->n_attribute; a++) {
      Onnx__AttributeProto *at = sg->node[i]->attribute[a];
      name_list inner = {0};
      if (at->g) collect_outer_refs(at->g, &inner);
      for (size_t k = 0; k < at->n_graphs; k++) collect_outer_refs(at->graphs[k], &inner);
      for (size_t k = 0; k < inner.n; k++) {
        op_value *v = op_graph_find(sgr, inner.v[k]);
        if (v && (v->producer >= 0 || v->init >= 0 || v->graph_input >= 0)) free(inner.v[k]); /* defined here */
        else OP_VEC_PUSH(*out, inner.v[k]);
      }
      free(inner.v);
    }
  op_graph_free(sgr);
}

/* Records node i as an outer user of every value of gr its subgraphs read: a real dependency that
 * ordering, dead-node removal and "is this weight private" must see. */
static void record_outer_users(op_graph *gr, int i) {
  Onnx__NodeProto *n = gr->g->node[i];
  for (size_t a = 0; a < n->n_attribute; a++) {
    Onnx__AttributeProto *at = n->attribute[a];
    if (!at->g && !at->n_graphs) continue;
    name_list refs = {0};
    if (at->g) collect_outer_refs(at->g, &refs);
    for (size_t k = 0; k < at->n_graphs; k++) collect_outer_refs(at->graphs[k], &refs);
    for (size_t k = 0; k < refs.n; k++) {
      op_value *v = op_graph_find(gr, refs.v[k]); /* absent: a value of a scope further out */
      if (v && !(v->n_outer_users && v->outer_users[v->n_outer_users - 1] == i))
        push_int(&v->outer_users, &v->n_outer_users, &v->cap_outer_users, i);
      free(refs.v[k]);
    }
    free(refs.v);
  }
}

op_graph *op_graph_build(Onnx__GraphProto *g) {
  op_graph *gr = build_index(g);
  for (size_t i = 0; i < g->n_node; i++) record_outer_users(gr, (int)i);
  return gr;
}

static op_graph *build_index(Onnx__GraphProto *g) {
  op_graph *gr = op_xcalloc(1, sizeof *gr);
  gr->g = g;
  size_t want = g->n_input + g->n_output + g->n_initializer + 1;
  for (size_t i = 0; i < g->n_node; i++) want += g->node[i]->n_input + g->node[i]->n_output;
  gr->cap = 64;
  while (gr->cap < 2 * want) gr->cap *= 2;
  gr->values = op_xcalloc(gr->cap, sizeof *gr->values);
  for (size_t i = 0; i < g->n_input; i++) slot_for(gr, g->input[i]->name)->graph_input = (int)i;
  for (size_t i = 0; i < g->n_initializer; i++) slot_for(gr, g->initializer[i]->name)->init = (int)i;
  for (size_t i = 0; i < g->n_node; i++) {
    Onnx__NodeProto *n = g->node[i];
    for (size_t j = 0; j < n->n_output; j++)
      if (n->output[j][0]) slot_for(gr, n->output[j])->producer = (int)i;
    for (size_t j = 0; j < n->n_input; j++) {
      if (!n->input[j][0]) continue;
      op_value *v = slot_for(gr, n->input[j]);
      push_int(&v->consumers, &v->n_consumers, &v->cap_consumers, (int)i);
    }
  }
  for (size_t i = 0; i < g->n_output; i++) slot_for(gr, g->output[i]->name)->graph_output = true;
  return gr;
}

void op_graph_free(op_graph *gr) {
  if (!gr) return;
  for (size_t i = 0; i < gr->cap; i++) {
    free(gr->values[i].consumers);
    free(gr->values[i].outer_users);
    free((char *)gr->values[i].name);
  }
  free(gr->values);
  free(gr);
}

Onnx__NodeProto *op_graph_producer(const op_graph *gr, const char *name) {
  op_value *v = op_graph_find(gr, name);
  return v && v->producer >= 0 ? gr->g->node[v->producer] : NULL;
}

Onnx__NodeProto *op_graph_sole_consumer(const op_graph *gr, const char *name) {
  op_value *v = op_graph_find(gr, name);
  if (!v || v->graph_output || v->n_consumers != 1) return NULL;
  return gr->g->node[v->consumers[0]];
}

Onnx__TensorProto *op_graph_init(const op_graph *gr, const char *name) {
  op_value *v = op_graph_find(gr, name);
  return v && v->init >= 0 ? gr->g->initializer[v->init] : NULL;
}

Onnx__TensorProto *op_graph_const(const op_graph *gr, const char *name) {
  op_value *v = op_graph_find(gr, name);
  if (!v) return NULL;
  if (v->init >= 0 && v->graph_input < 0) return gr->g->initializer[v->init];
  if (v->producer < 0) return NULL;
  Onnx__NodeProto *n = gr->g->node[v->producer];
  if (!op_node_is(n, "Constant")) return NULL;
  Onnx__AttributeProto *a = op_node_attr(n, "value");
  return a ? a->t : NULL;
}

const char *op_graph_canonical(const op_graph *gr, const char *name) {
  op_value *v = op_graph_find(gr, name);
  if (!v) return name;
  if (v->producer >= 0) {
    Onnx__NodeProto *n = gr->g->node[v->producer];
    for (size_t i = 0; i < n->n_output; i++)
      if (strcmp(n->output[i], name) == 0) return n->output[i];
  }
  if (v->graph_input >= 0) return gr->g->input[v->graph_input]->name;
  if (v->init >= 0) return gr->g->initializer[v->init]->name;
  return name;
}

int op_graph_node_index(const op_graph *gr, const Onnx__NodeProto *n) {
  for (size_t i = 0; i < n->n_output; i++) {
    op_value *v = op_graph_find(gr, n->output[i]);
    if (v && v->producer >= 0 && gr->g->node[v->producer] == n) return v->producer;
  }
  for (size_t i = 0; i < gr->g->n_node; i++)
    if (gr->g->node[i] == n) return (int)i;
  return -1;
}

Onnx__AttributeProto *op_node_attr(const Onnx__NodeProto *n, const char *name) {
  for (size_t i = 0; i < n->n_attribute; i++)
    if (strcmp(n->attribute[i]->name, name) == 0) return n->attribute[i];
  return NULL;
}

int64_t op_node_attr_int(const Onnx__NodeProto *n, const char *name, int64_t dflt) {
  Onnx__AttributeProto *a = op_node_attr(n, name);
  return a && a->has_i ? a->i : dflt;
}

float op_node_attr_float(const Onnx__NodeProto *n, const char *name, float dflt) {
  Onnx__AttributeProto *a = op_node_attr(n, name);
  return a && a->has_f ? a->f : dflt;
}

bool op_node_is(const Onnx__NodeProto *n, const char *op_type) {
  return strcmp(n->op_type, op_type) == 0 && (!n->domain || !n->domain[0] || strcmp(n->domain, "ai.onnx") == 0);
}

const char *op_node_name(const Onnx__NodeProto *n) {
  return n->name && n->name[0] ? n->name : (n->n_output ? n->output[0] : "?");
}

void op_node_set_input(Onnx__NodeProto *n, size_t slot, const char *name) {
  char *s = op_xstrdup(name);
  free(n->input[slot]);
  n->input[slot] = s;
}

/* Makes room for one more name: rebuilds the index from the graph when it is half full. */
static void reserve_slot(op_graph *gr) {
  if (gr->n_values * 2 + 2 <= gr->cap) return;
  op_graph *fresh = op_graph_build(gr->g);
  for (size_t i = 0; i < gr->cap; i++) {
    free(gr->values[i].consumers);
    free(gr->values[i].outer_users);
    free((char *)gr->values[i].name);
  }
  free(gr->values);
  *gr = *fresh;
  free(fresh);
}

char *op_graph_fresh_name(op_graph *gr, const char *base) {
  size_t len = strlen(base) + 24;
  char *nm = op_xmalloc(len);
  snprintf(nm, len, "%s", base);
  for (unsigned k = 1; op_graph_find(gr, nm); k++) snprintf(nm, len, "%s_%u", base, k);
  reserve_slot(gr);
  slot_for(gr, nm);
  return nm;
}

const char *op_graph_add_init(op_graph *gr, Onnx__TensorProto *t) {
  Onnx__GraphProto *g = gr->g;
  char *nm = op_graph_fresh_name(gr, t->name);
  free(t->name);
  t->name = nm;
  g->initializer = op_xrealloc(g->initializer, (g->n_initializer + 1) * sizeof *g->initializer);
  g->initializer[g->n_initializer++] = t;
  op_graph_find(gr, nm)->init = (int)(g->n_initializer - 1);
  return t->name;
}

Onnx__NodeProto *op_node_new(const char *op_type, const char *name, const char *const *inputs, size_t n_in,
                             const char *const *outputs, size_t n_out) {
  Onnx__NodeProto *n = op_xmalloc(sizeof *n);
  onnx__node_proto__init(n);
  n->op_type = op_xstrdup(op_type);
  n->name = op_xstrdup(name);
  n->n_input = n_in;
  n->input = op_xmalloc((n_in ? n_in : 1) * sizeof(char *));
  for (size_t i = 0; i < n_in; i++) n->input[i] = op_xstrdup(inputs[i]);
  n->n_output = n_out;
  n->output = op_xmalloc((n_out ? n_out : 1) * sizeof(char *));
  for (size_t i = 0; i < n_out; i++) n->output[i] = op_xstrdup(outputs[i]);
  return n;
}

void op_node_add_int(Onnx__NodeProto *n, const char *name, int64_t v) {
  Onnx__AttributeProto *a = op_xmalloc(sizeof *a);
  onnx__attribute_proto__init(a);
  a->name = op_xstrdup(name);
  a->has_type = 1;
  a->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT;
  a->has_i = 1;
  a->i = v;
  n->attribute = op_xrealloc(n->attribute, (n->n_attribute + 1) * sizeof *n->attribute);
  n->attribute[n->n_attribute++] = a;
}

void op_graph_append(Onnx__GraphProto *g, Onnx__NodeProto *n) {
  g->node = op_xrealloc(g->node, (g->n_node + 1) * sizeof *g->node);
  g->node[g->n_node++] = n;
}

/* Min-heap of node indices, for a stable topological order. */
static void heap_push(int *h, size_t *n, int v) {
  size_t i = (*n)++;
  for (; i > 0 && h[(i - 1) / 2] > v; i = (i - 1) / 2) h[i] = h[(i - 1) / 2];
  h[i] = v;
}

static int heap_pop(int *h, size_t *n) {
  int top = h[0], last = h[--*n];
  size_t i = 0;
  for (size_t c; (c = 2 * i + 1) < *n; i = c) {
    if (c + 1 < *n && h[c + 1] < h[c]) c++;
    if (h[c] >= last) break;
    h[i] = h[c];
  }
  h[i] = last;
  return top;
}

size_t op_graph_order(const op_graph *gr, int *order) {
  const Onnx__GraphProto *g = gr->g;
  size_t n = g->n_node, heap_n = 0, placed = 0;
  bool *ready = op_xcalloc(gr->cap, 1);
  for (size_t i = 0; i < gr->cap; i++)
    if (gr->values[i].name && (gr->values[i].init >= 0 || gr->values[i].graph_input >= 0)) ready[i] = true;
  int *waiting = op_xcalloc(n ? n : 1, sizeof(int)), *heap = op_xmalloc((n ? n : 1) * sizeof(int));
  for (size_t i = 0; i < n; i++) {
    const Onnx__NodeProto *nd = g->node[i];
    for (size_t j = 0; j < nd->n_input; j++) {
      op_value *v = nd->input[j][0] ? op_graph_find(gr, nd->input[j]) : NULL;
      if (v && !ready[v - gr->values]) waiting[i]++;
    }
  }
  for (size_t i = 0; i < gr->cap; i++) /* a subgraph's reads of values produced here wait like inputs */
    if (gr->values[i].name && !ready[i] && gr->values[i].producer >= 0)
      for (size_t c = 0; c < gr->values[i].n_outer_users; c++) waiting[gr->values[i].outer_users[c]]++;
  for (size_t i = 0; i < n; i++)
    if (!waiting[i]) heap_push(heap, &heap_n, (int)i);
  while (heap_n) {
    int i = heap_pop(heap, &heap_n);
    const Onnx__NodeProto *nd = g->node[i];
    order[placed++] = i;
    for (size_t j = 0; j < nd->n_output; j++) {
      op_value *v = nd->output[j][0] ? op_graph_find(gr, nd->output[j]) : NULL;
      if (!v || ready[v - gr->values]) continue;
      ready[v - gr->values] = true;
      for (size_t c = 0; c < v->n_consumers; c++) /* a consumer appears once per input slot it uses */
        if (--waiting[v->consumers[c]] == 0) heap_push(heap, &heap_n, v->consumers[c]);
      for (size_t c = 0; c < v->n_outer_users; c++)
        if (--waiting[v->outer_users[c]] == 0) heap_push(heap, &heap_n, v->outer_users[c]);
    }
  }
  free(ready);
  free(waiting);
  free(heap);
  return placed;
}

int op_graph_toposort(Onnx__GraphProto *g) {
  size_t n = g->n_node;
  op_graph *gr = op_graph_build(g);
  int *order = op_xmalloc((n ? n : 1) * sizeof *order);
  int rc = op_graph_order(gr, order) == n ? 0 : -1;
  op_graph_free(gr);
  if (!rc) {
    Onnx__NodeProto **nodes = op_xmalloc((n ? n : 1) * sizeof *nodes);
    for (size_t i = 0; i < n; i++) nodes[i] = g->node[order[i]];
    memcpy(g->node, nodes, n * sizeof *nodes);
    free(nodes);
  }
  free(order);
  return rc;
}

static Onnx__NodeProto *new_identity(const char *in, const char *out) {
  size_t len = strlen(out) + 16;
  char *name = op_xmalloc(len);
  snprintf(name, len, "%s_bypass", out);
  const char *ins[1] = {in}, *outs[1] = {out};
  Onnx__NodeProto *n = op_node_new("Identity", name, ins, 1, outs, 1);
  free(name);
  return n;
}

void op_graph_replace_uses(op_graph *gr, const char *from, const char *to) {
  Onnx__GraphProto *g = gr->g;
  char *from_copy = op_xstrdup(from); /* `from` may be freed by the edits below */
  for (size_t i = 0; i < g->n_node; i++) {
    Onnx__NodeProto *n = g->node[i];
    for (size_t j = 0; j < n->n_input; j++)
      if (strcmp(n->input[j], from_copy) == 0) op_node_set_input(n, j, to);
  }
  for (size_t i = 0; i < g->n_output; i++) {
    if (strcmp(g->output[i]->name, from_copy) != 0) continue;
    /* the producer of `from` will die; an Identity keeps the output name stable */
    Onnx__NodeProto *id = new_identity(to, from_copy);
    op_value *v = op_graph_find(gr, from_copy);
    if (v && v->producer >= 0) {
      Onnx__NodeProto *p = g->node[v->producer];
      for (size_t j = 0; j < p->n_output; j++)
        if (strcmp(p->output[j], from_copy) == 0) {
          free(p->output[j]);
          size_t len = strlen(from_copy) + 16;
          p->output[j] = op_xmalloc(len);
          snprintf(p->output[j], len, "%s_dead", from_copy);
        }
    }
    op_graph_append(g, id);
  }
  free(from_copy);
}

void op_graph_remove_dead(Onnx__GraphProto *g) {
  for (bool changed = true; changed;) {
    changed = false;
    /* decide with the index, free after it is gone: it keys on strings owned by the nodes */
    op_graph *gr = op_graph_build(g);
    bool *dead = op_xcalloc(g->n_node, sizeof *dead);
    for (size_t i = 0; i < g->n_node; i++) {
      Onnx__NodeProto *n = g->node[i];
      bool used = false;
      for (size_t j = 0; j < n->n_output && !used; j++) {
        op_value *v = n->output[j][0] ? op_graph_find(gr, n->output[j]) : NULL;
        used = v && (v->n_consumers > 0 || v->n_outer_users > 0 || v->graph_output);
      }
      dead[i] = !used;
    }
    op_graph_free(gr);
    size_t w = 0;
    for (size_t i = 0; i < g->n_node; i++) {
      if (dead[i]) {
        protobuf_c_message_free_unpacked(&g->node[i]->base, NULL);
        changed = true;
      } else {
        g->node[w++] = g->node[i];
      }
    }
    g->n_node = w;
    free(dead);
  }
  op_graph *gr = op_graph_build(g);
  bool *dead_init = op_xcalloc(g->n_initializer, sizeof(bool)), *dead_vi = op_xcalloc(g->n_value_info, sizeof(bool));
  for (size_t i = 0; i < g->n_initializer; i++) {
    op_value *v = op_graph_find(gr, g->initializer[i]->name);
    dead_init[i] = !(v->n_consumers > 0 || v->n_outer_users > 0 || v->graph_output || v->graph_input >= 0);
  }
  for (size_t i = 0; i < g->n_value_info; i++) {
    op_value *v = g->value_info[i]->name ? op_graph_find(gr, g->value_info[i]->name) : NULL;
    dead_vi[i] = !(v && (v->producer >= 0 || v->graph_input >= 0 || v->init >= 0));
  }
  op_graph_free(gr);
  size_t w = 0;
  for (size_t i = 0; i < g->n_initializer; i++) {
    if (dead_init[i]) op_tensor_free(g->initializer[i]);
    else g->initializer[w++] = g->initializer[i];
  }
  g->n_initializer = w;
  w = 0;
  for (size_t i = 0; i < g->n_value_info; i++) {
    if (dead_vi[i]) protobuf_c_message_free_unpacked(&g->value_info[i]->base, NULL);
    else g->value_info[w++] = g->value_info[i];
  }
  g->n_value_info = w;
  free(dead_init);
  free(dead_vi);
}

int64_t op_model_opset(const Onnx__ModelProto *m) {
  for (size_t i = 0; i < m->n_opset_import; i++) {
    const char *d = m->opset_import[i]->domain;
    if (!d || !d[0] || strcmp(d, "ai.onnx") == 0) return m->opset_import[i]->version;
  }
  return 0;
}
