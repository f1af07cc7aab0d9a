/* graph.h - an index over a GraphProto (who produces and who consumes each value, constants) and
 * the few edits the passes make: repointing inputs, adding initializers, removing dead code. */
#ifndef OP_GRAPH_H
#define OP_GRAPH_H

#include "model/model.h"

typedef struct op_value {
  const char *name; /* the index's own copy */
  int producer;     /* node index, or -1 */
  int init;         /* initializer index, or -1 */
  int graph_input;  /* index in graph inputs, or -1 */
  bool graph_output;
  int *consumers;   /* node indices (a node appears once per input slot it uses) */
  size_t n_consumers, cap_consumers;
  int *outer_users; /* If/Loop/Scan nodes whose subgraphs read this value from the outer scope (once each) */
  size_t n_outer_users, cap_outer_users;
} op_value;

typedef struct op_graph {
  Onnx__GraphProto *g;
  op_value *values;
  size_t n_values, cap; /* open addressing, cap is a power of two */
} op_graph;

/* Builds the index. Edits made later are not reflected in it (rebuild), but never leave it dangling. */
op_graph *op_graph_build(Onnx__GraphProto *g);
void op_graph_free(op_graph *gr);
op_value *op_graph_find(const op_graph *gr, const char *name);
/* The node producing name, or NULL. */
Onnx__NodeProto *op_graph_producer(const op_graph *gr, const char *name);
/* The single consumer of name, or NULL when it has none or several (or is a graph output). */
Onnx__NodeProto *op_graph_sole_consumer(const op_graph *gr, const char *name);
/* Constant value of name: an initializer or a Constant node's `value`; NULL otherwise. */
Onnx__TensorProto *op_graph_const(const op_graph *gr, const char *name);
/* Initializer named name, or NULL. */
Onnx__TensorProto *op_graph_init(const op_graph *gr, const char *name);
/* The graph's own copy of a value name (producer output, graph input or initializer), which stays
 * valid while edits repoint node inputs. */
const char *op_graph_canonical(const op_graph *gr, const char *name);
int op_graph_node_index(const op_graph *gr, const Onnx__NodeProto *n);

/* Attributes. */
Onnx__AttributeProto *op_node_attr(const Onnx__NodeProto *n, const char *name);
int64_t op_node_attr_int(const Onnx__NodeProto *n, const char *name, int64_t dflt);
float op_node_attr_float(const Onnx__NodeProto *n, const char *name, float dflt);
bool op_node_is(const Onnx__NodeProto *n, const char *op_type); /* default-domain op of that type */
const char *op_node_name(const Onnx__NodeProto *n);

/* Edits (the index must be rebuilt afterwards). */
void op_node_set_input(Onnx__NodeProto *n, size_t slot, const char *name);
/* Adds t as an initializer; its name is made unique from the one it has. Returns the name. */
const char *op_graph_add_init(op_graph *gr, Onnx__TensorProto *t);
/* A value name not yet used in the graph, made from base (base itself when free); it is reserved in
 * the index. Returns a string the caller frees. */
char *op_graph_fresh_name(op_graph *gr, const char *base);
/* Replaces every use of `from` (node inputs) by `to`. A graph output named `from` keeps its name:
 * an Identity node carries `to` into it. */
void op_graph_replace_uses(op_graph *gr, const char *from, const char *to);
/* Removes nodes whose outputs nobody uses, unused initializers and value_info of vanished values. */
void op_graph_remove_dead(Onnx__GraphProto *g);
/* A new node (owned by the caller until added): op type, inputs, outputs and name are copied. */
Onnx__NodeProto *op_node_new(const char *op_type, const char *name, const char *const *inputs, size_t n_in,
                             const char *const *outputs, size_t n_out);
/* Adds an int attribute to a node. */
void op_node_add_int(Onnx__NodeProto *n, const char *name, int64_t v);
/* Appends a node to the graph (the graph must be re-sorted with op_graph_toposort afterwards). */
void op_graph_append(Onnx__GraphProto *g, Onnx__NodeProto *n);
/* A topological order of the nodes (indices into order), the smallest by index, so an order that is
 * already valid is kept. Returns how many nodes it placed: fewer than all when some wait on a cycle or
 * on a value nobody defines. */
size_t op_graph_order(const op_graph *gr, int *order);
/* Reorders the graph's nodes by op_graph_order. Returns -1 (graph unchanged) when not all can be placed. */
int op_graph_toposort(Onnx__GraphProto *g);
/* Default-domain opset version imported by the model (0 if none). */
int64_t op_model_opset(const Onnx__ModelProto *m);

#endif
