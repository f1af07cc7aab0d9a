/* fuse.c - the executor's epilogue planner: after a product with a packed weight, finds a constant
 * bias add and an activation (however the exporter spelled it) that the product can apply in its
 * own output pass, so the nodes in between never run and their tensors never exist. */
#include "exec/exec.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define T_FLOAT ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT
#define MAX_REGION 24 /* nodes of one activation (tanh GELU as torch exports it has 9) */

bool op_fuse_enabled(void) {
  const char *e = getenv("ONNX_PRUNE_FUSE");
  return !(e && !strcmp(e, "0"));
}

void op_epilogue_free(op_epilogue *ep) {
  free(ep->skip);
  ep->skip = NULL;
  ep->n_skip = 0;
}

/* The float32 value of a one-element constant (initializer or Constant node). */
static bool scalar_const(const op_graph *gr, const char *name, double *v) {
  const Onnx__TensorProto *t = op_graph_const(gr, name);
  if (!t || t->data_type != T_FLOAT || op_tensor_numel(t) != 1 || t->n_dims > 1) return false;
  op_xt x = {0};
  op_error e;
  if (op_xt_from_proto(&x, t, "", &e)) return false;
  *v = *(const float *)x.data;
  op_xt_release(&x);
  return true;
}

/* A constant float32 row of N elements along the last axis (leading axes 1): a bias. */
static bool bias_const(const op_xt *c, int64_t N) {
  if (c->dtype != T_FLOAT || c->numel != N || c->rank < 1 || c->dims[c->rank - 1] != N) return false;
  return c->rank <= 2; /* [N] or [1, N]: never widens the product's output rank beyond 2 */
}

/* ---- activations as elementwise subgraphs: evaluated on sample points and compared ---- */

typedef enum { E_ADD, E_SUB, E_MUL, E_DIV, E_POW, E_ERF, E_TANH, E_SIGMOID, E_NEG, E_RELU, E_SQRT, E_GELU, E_GELU_TANH } eop;

static const struct {
  const char *name;
  bool contrib; /* com.microsoft */
  eop op;
  int arity;
} EOPS[] = {
    {"Add", false, E_ADD, 2},   {"Sub", false, E_SUB, 2},         {"Mul", false, E_MUL, 2},   {"Div", false, E_DIV, 2},
    {"Pow", false, E_POW, 2},   {"Erf", false, E_ERF, 1},         {"Tanh", false, E_TANH, 1}, {"Sigmoid", false, E_SIGMOID, 1},
    {"Neg", false, E_NEG, 1},   {"Relu", false, E_RELU, 1},       {"Sqrt", false, E_SQRT, 1}, {"Gelu", false, E_GELU, 1},
    {"Gelu", true, E_GELU, 1},  {"FastGelu", true, E_GELU_TANH, 1},
};

static int eop_of(const Onnx__NodeProto *n) {
  bool contrib = op_exec_is_contrib_domain(n->domain);
  bool std = !n->domain || !n->domain[0] || !strcmp(n->domain, "ai.onnx");
  if (!contrib && !std) return -1;
  for (size_t i = 0; i < sizeof EOPS / sizeof *EOPS; i++)
    if (EOPS[i].contrib == contrib && !strcmp(EOPS[i].name, n->op_type)) {
      size_t present = 0;
      for (size_t j = 0; j < n->n_input; j++) present += n->input[j][0] != 0;
      if ((int)present != EOPS[i].arity || n->n_input != (size_t)EOPS[i].arity || n->n_output != 1) return -1;
      int op = (int)EOPS[i].op;
      if (op == E_GELU && !contrib) { /* opset 20's Gelu: approximate="tanh" is the tanh form */
        const Onnx__AttributeProto *a = op_node_attr(n, "approximate");
        if (a && a->s.len == 4 && !memcmp(a->s.data, "tanh", 4)) op = E_GELU_TANH;
      }
      return op;
    }
  return -1;
}

static double gelu_erf(double x) { return 0.5 * x * (1 + erf(x * M_SQRT1_2)); }
static double gelu_tanh(double x) { return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x))); }

static double eval1(eop op, double a, double b) {
  switch (op) {
  case E_ADD: return a + b;
  case E_SUB: return a - b;
  case E_MUL: return a * b;
  case E_DIV: return a / b;
  case E_POW: return pow(a, b);
  case E_ERF: return erf(a);
  case E_TANH: return tanh(a);
  case E_SIGMOID: return 1 / (1 + exp(-a));
  case E_NEG: return -a;
  case E_RELU: return a > 0 ? a : 0;
  case E_SQRT: return sqrt(a);
  case E_GELU: return gelu_erf(a);
  case E_GELU_TANH: return gelu_tanh(a);
  }
  return NAN;
}

static double act_ref(op_act a, double x) {
  switch (a) {
  case OP_ACT_RELU: return x > 0 ? x : 0;
  case OP_ACT_GELU_ERF: return gelu_erf(x);
  case OP_ACT_GELU_TANH: return gelu_tanh(x);
  case OP_ACT_SILU: return x / (1 + exp(-x));
  default: return x;
  }
}

typedef struct region {
  int node[MAX_REGION]; /* graph node indices, in an order where inputs come first */
  int n;
  int value[MAX_REGION]; /* the value id each node writes */
} region;

static bool in_region(const region *r, int node) {
  for (int i = 0; i < r->n; i++)
    if (r->node[i] == node) return true;
  return false;
}

/* Where value id v comes from for a region that starts at value x: 0 = x, 1.. = region node i+1,
 * -2 = a scalar constant (its value in *c), -1 = anything else. */
static int operand(const op_graph *gr, const region *r, int x, const char *name, double *c) {
  op_value *v = op_graph_find(gr, name);
  if (!v) return -1;
  int id = (int)(v - gr->values);
  if (id == x) return 0;
  for (int i = 0; i < r->n; i++)
    if (r->value[i] == id) return i + 1;
  return scalar_const(gr, name, c) ? -2 : -1;
}

/* The activation f the region computes from x, if f is one the product can apply: f is evaluated in
 * double on points over [-12, 12] and compared with each candidate. */
static op_act identify(const op_graph *gr, const region *r, int x, int exit_i) {
  double vals[MAX_REGION + 1];
  op_act found = OP_ACT_COUNT;
  for (int a = OP_ACT_RELU; a < OP_ACT_COUNT && found == OP_ACT_COUNT; a++) {
    bool ok = true;
    for (int p = -240; p <= 240 && ok; p++) {
      vals[0] = p / 20.0 + 0.0123; /* off the grid of round numbers */
      for (int i = 0; i < r->n; i++) {
        const Onnx__NodeProto *nd = gr->g->node[r->node[i]];
        eop op = (eop)eop_of(nd);
        double in[2] = {0, 0};
        for (size_t j = 0; j < nd->n_input; j++) {
          double c = 0;
          int src = operand(gr, r, x, nd->input[j], &c);
          in[j] = src == -2 ? c : vals[src];
        }
        vals[i + 1] = eval1(op, in[0], in[1]);
      }
      double got = vals[exit_i + 1], want = act_ref((op_act)a, vals[0]);
      ok = isfinite(got) && fabs(got - want) <= 2e-6 * (1 + fabs(want));
    }
    if (ok) found = (op_act)a;
  }
  return found;
}

/* The elementwise subgraph hanging off value x: nodes whose inputs are x, its own values or scalar
 * constants. Succeeds when it has one value read outside it (exit) and x is read only inside it. */
static bool grow_region(const op_graph *gr, int x, region *r, int *exit_i) {
  r->n = 0;
  const op_value *xv = &gr->values[x];
  if (xv->graph_output || xv->n_consumers == 0) return false;
  for (bool grew = true; grew;) {
    grew = false;
    for (int i = -1; i < r->n && !grew; i++) {
      const op_value *v = i < 0 ? xv : &gr->values[r->value[i]];
      for (size_t c = 0; c < v->n_consumers && !grew; c++) {
        int ni = v->consumers[c];
        const Onnx__NodeProto *nd = gr->g->node[ni];
        if (in_region(r, ni) || eop_of(nd) < 0) continue;
        bool ready = true;
        for (size_t j = 0; j < nd->n_input && ready; j++) {
          double cst;
          ready = operand(gr, r, x, nd->input[j], &cst) != -1;
        }
        op_value *out = op_graph_find(gr, nd->output[0]);
        if (!ready || !out) continue;
        if (r->n == MAX_REGION) return false;
        r->node[r->n] = ni;
        r->value[r->n++] = (int)(out - gr->values);
        grew = true;
      }
    }
  }
  if (r->n == 0) return false;
  for (size_t c = 0; c < xv->n_consumers; c++)
    if (!in_region(r, xv->consumers[c])) return false;
  *exit_i = -1;
  for (int i = 0; i < r->n; i++) {
    const op_value *v = &gr->values[r->value[i]];
    bool outside = v->graph_output, inside = false;
    for (size_t c = 0; c < v->n_consumers; c++) {
      if (in_region(r, v->consumers[c])) inside = true;
      else outside = true;
    }
    if (!outside && !inside) return false; /* a dead end: leave such graphs alone */
    if (!outside) continue;
    if (inside || *exit_i >= 0) return false; /* the exit is the region's one sink */
    *exit_i = i;
  }
  return *exit_i >= 0;
}

static void skip_add(op_epilogue *ep, int node) {
  ep->skip = realloc(ep->skip, (ep->n_skip + 1) * sizeof *ep->skip);
  if (!ep->skip) abort();
  ep->skip[ep->n_skip++] = node;
}

/* The sole consumer (node index) of value id v, or -1 when it has none, several, or is a graph output. */
static int sole_consumer(const op_graph *gr, int v) {
  const op_value *val = &gr->values[v];
  return !val->graph_output && val->n_consumers == 1 ? val->consumers[0] : -1;
}

static int value_of(const op_graph *gr, const char *name) {
  op_value *v = name && name[0] ? op_graph_find(gr, name) : NULL;
  return v ? (int)(v - gr->values) : -1;
}

bool op_fuse_find(const op_graph *gr, int node, int64_t N, const op_xt *consts, op_epilogue *ep) {
  memset(ep, 0, sizeof *ep);
  ep->bias = -1;
  const Onnx__NodeProto *p = gr->g->node[node];
  if (p->n_output != 1) return false;
  int cur = value_of(gr, p->output[0]);
  if (cur < 0) return false;
  bool fixed_act = false;
  if (op_node_is(p, "Gemm")) { /* only what the wpack product computes: alpha 1, C a bias row with beta 1 */
    if (op_node_attr_int(p, "transA", 0) || op_node_attr_float(p, "alpha", 1.f) != 1.f) return false;
    int c = p->n_input > 2 ? value_of(gr, p->input[2]) : -1;
    if (p->n_input > 2 && p->input[2][0]) {
      if (c < 0 || !bias_const(&consts[c], N) || op_node_attr_float(p, "beta", 1.f) != 1.f) return false;
      ep->bias = c;
    }
  } else if (!op_node_is(p, "MatMul")) {
    return false;
  }
  int add = ep->bias < 0 ? sole_consumer(gr, cur) : -1;
  const Onnx__NodeProto *a = add >= 0 ? gr->g->node[add] : NULL;
  bool std_add = a && op_node_is(a, "Add") && a->n_input == 2 && a->n_output == 1;
  bool ms_bias_act = a && op_exec_is_contrib_domain(a->domain) && a->n_input == 2 && a->n_output == 1 &&
                     (!strcmp(a->op_type, "BiasGelu") || !strcmp(a->op_type, "FastGelu"));
  if (std_add || ms_bias_act) {
    int other = -1;
    for (int j = 0; j < 2; j++)
      if (value_of(gr, a->input[j]) != cur) other = value_of(gr, a->input[j]);
    bool first = value_of(gr, a->input[0]) == cur;
    /* BiasGelu / FastGelu take the product first and the bias second */
    if (other >= 0 && bias_const(&consts[other], N) && (std_add || first)) {
      ep->bias = other;
      skip_add(ep, add);
      cur = value_of(gr, a->output[0]);
      if (ms_bias_act) {
        ep->act = !strcmp(a->op_type, "BiasGelu") ? OP_ACT_GELU_ERF : OP_ACT_GELU_TANH;
        fixed_act = true;
      }
    }
  }
  region r;
  int exit_i;
  if (!fixed_act && cur >= 0 && grow_region(gr, cur, &r, &exit_i)) {
    op_act act = identify(gr, &r, cur, exit_i);
    if (act != OP_ACT_COUNT && act != OP_ACT_NONE) {
      ep->act = act;
      for (int i = 0; i < r.n; i++) skip_add(ep, r.node[i]);
      cur = r.value[exit_i];
    }
  }
  ep->out = cur;
  if (ep->n_skip == 0) { /* nothing replaced (a Gemm's own bias is already fused in its kernel) */
    op_epilogue_free(ep);
    return false;
  }
  return true;
}
