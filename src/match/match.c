/* match.c - finds attention and FFN blocks by graph pattern, whatever exporter produced them, and
 * the residual blocks and layers they form. Attention is anchored on Softmax and walked outwards
 * to its projections; an FFN is anchored on a down projection and walked back through element-wise
 * activation code to its up projection(s). Anything that looks like a block but fails a check is
 * reported with the reason and left alone. */
#include "match/match.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Search limits. Exporters put a handful of nodes between the landmarks each walk looks for; the
 * limits are a few times that, so a walk ends on a graph that is not the expected form instead of
 * wandering through the model. */
#define MAX_WALK 24          /* q/k/v path: Softmax's MatMuls back to the projections */
#define MAX_SCORE_DEPTH 6    /* score MatMul behind the Softmax: scaling, mask Add, Where, Cast */
#define MAX_REGION 4096      /* tensors between the projections and the output projection */
#define MAX_SCORE_STEPS 8    /* score path forward from q.k to the Softmax */
#define MAX_MASK_INPUTS 32   /* mask-shaping producers examined */
#define MAX_PROBS_STEPS 4    /* Softmax output to the context MatMul (Dropout, Cast) */
#define MAX_MERGE_STEPS 8    /* context to the output projection (Transpose, Reshape) */
#define MAX_NORM_DEPTH 14    /* stream back to a block input through a decomposed norm */
#define MAX_NORM_NODES 64    /* nodes of one decomposed norm */
#define MAX_RESIDUAL_STEPS 6 /* block output to its residual Add */
#define MAX_STREAM_HOPS 4    /* re-layouts between one block's stream end and the next's start */

/* printf into a new heap string (reasons name nodes, whose names have any length). */
static char *vfmt(const char *fmt, va_list ap) {
  va_list ap2;
  va_copy(ap2, ap);
  int n = vsnprintf(NULL, 0, fmt, ap2);
  va_end(ap2);
  char *s = op_xmalloc(n > 0 ? (size_t)n + 1 : 1);
  vsnprintf(s, n > 0 ? (size_t)n + 1 : 1, fmt, ap);
  return s;
}

static void unmatched(op_analysis *a, const Onnx__NodeProto *n, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *why = vfmt(fmt, ap);
  va_end(ap);
  const char *name = op_node_name(n);
  size_t len = strlen(name) + strlen(why) + 32;
  char *line = op_xmalloc(len);
  snprintf(line, len, "not matched: %s: %s", name, why);
  free(why);
  OP_VEC_PUSH(a->unmatched, line);
}

/* A reason naming a node, kept until the next one (the analysis is single-threaded). */
static const char *why_fmt(op_analysis *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = vfmt(fmt, ap); /* the arguments may include the previous reason */
  va_end(ap);
  free(a->why);
  a->why = s;
  return a->why;
}

static Onnx__NodeProto *node_at(const op_analysis *a, int i) { return a->gr->g->node[i]; }

/* The constant behind name, looking through Identity/Cast (weights held in Constant nodes are often
 * read through one); NULL when it is computed. At most MAX_CONST_HOPS hops. */
#define MAX_CONST_HOPS 4
static Onnx__TensorProto *const_of(const op_analysis *a, const char *name) {
  for (int hop = 0; hop <= MAX_CONST_HOPS; hop++) {
    Onnx__TensorProto *t = op_graph_const(a->gr, name);
    if (t) return t;
    Onnx__NodeProto *p = op_graph_producer(a->gr, name);
    if (!p || !(op_node_is(p, "Identity") || op_node_is(p, "Cast")) || p->n_input < 1) return NULL;
    name = p->input[0];
  }
  return NULL;
}

static bool is_const(const op_analysis *a, const char *name) { return const_of(a, name) != NULL; }

/* Weight element types the passes read (scored in float32) and write back in their own type. */
bool op_weight_dtype_ok(int32_t dt) {
  return dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16 ||
         dt == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16;
}

/* At most this many Identity/Cast nodes between a stored weight and its user: exporters emit one or
 * two (paddle2onnx's Identity, a Cast of a float16 weight up to float32). */
#define MAX_WEIGHT_HOPS 4

const char *op_weight_source(const op_graph *gr, const char *name, Onnx__TensorProto **tensor) {
  *tensor = NULL;
  for (int hop = 0; hop <= MAX_WEIGHT_HOPS; hop++) {
    op_value *v = op_graph_find(gr, name);
    if (!v || v->graph_output || v->n_consumers != 1 || v->n_outer_users) return NULL; /* shared: never sliced under another user */
    Onnx__TensorProto *t = op_graph_const(gr, name);
    if (t) {
      if (op_tensor_to_raw(t) != 0) return NULL;
      *tensor = t;
      return name;
    }
    Onnx__NodeProto *p = op_graph_producer(gr, name);
    if (!p || !(op_node_is(p, "Identity") || op_node_is(p, "Cast")) || p->n_input < 1) return NULL;
    name = p->input[0];
  }
  return NULL;
}

/* The stored constant behind name through Identity nodes only, however many users it has (a shared
 * bias, copied on write); NULL otherwise. A Cast on the way would have to be copied too: not done. */
static const char *shared_source(const op_graph *gr, const char *name, Onnx__TensorProto **tensor) {
  *tensor = NULL;
  for (int hop = 0; hop <= MAX_WEIGHT_HOPS; hop++) {
    Onnx__TensorProto *t = op_graph_const(gr, name);
    if (t) {
      if (op_tensor_to_raw(t) != 0) return NULL;
      *tensor = t;
      return name;
    }
    Onnx__NodeProto *p = op_graph_producer(gr, name);
    if (!p || !op_node_is(p, "Identity") || p->n_input < 1) return NULL;
    name = p->input[0];
  }
  return NULL;
}

/* The bias read by input slot of node ni: private (op_weight_source) or shared (copied on write);
 * NULL when it is neither. */
static const char *bias_source(const op_analysis *a, int ni, int slot, op_proj *p, Onnx__TensorProto **tensor) {
  const char *name = node_at(a, ni)->input[slot];
  const char *src = op_weight_source(a->gr, name, tensor);
  p->b_cow = false;
  if (src) return src;
  src = shared_source(a->gr, name, tensor);
  if (src) p->b_cow = true, p->b_user = ni, p->b_slot = slot;
  return src;
}

/* A float (32, 16 or bfloat16) rank-2 weight, stored as an initializer or a Constant node, possibly
 * behind Identity/Cast, and used by one consumer only (tied weights cannot be pruned on one side). */
static Onnx__TensorProto *weight_init(const op_analysis *a, const char *name, const char **why) {
  Onnx__TensorProto *t;
  const char *src = op_weight_source(a->gr, name, &t);
  if (!src) {
    op_value *v = op_graph_find(a->gr, name);
    Onnx__NodeProto *p = op_graph_producer(a->gr, name);
    if (v && (v->n_consumers != 1 || v->graph_output)) *why = "weight is shared with other nodes";
    else if (p && (op_node_is(p, "Slice") || op_node_is(p, "Gather") || op_node_is(p, "Split")) && const_of(a, p->input[0]))
      *why = why_fmt((op_analysis *)a, "weight is cut at run time by %s '%s' from '%s' (an in-projection packed for "
                     "q and k/v, as torch exports cross-attention)", p->op_type, op_node_name(p), p->input[0]);
    else *why = "weight is not a constant matrix";
    return NULL;
  }
  if (!op_weight_dtype_ok(t->data_type) || t->n_dims != 2) {
    *why = "weight is not a float32/float16/bfloat16 matrix";
    return NULL;
  }
  return t;
}

/* The stored tensor of a weight or bias a projection names (initializer or Constant node). */
Onnx__TensorProto *op_proj_tensor(const op_analysis *a, const char *name) {
  return name ? op_graph_const(a->gr, name) : NULL;
}

/* Matches the MatMul/Gemm at node index mi as a linear layer with constant weights. */
static bool match_linear(const op_analysis *a, int mi, op_proj *p, const char **why) {
  Onnx__NodeProto *n = node_at(a, mi);
  memset(p, 0, sizeof *p);
  p->node = mi;
  p->bias_node = -1;
  bool trans = false;
  if (op_node_is(n, "Gemm")) {
    if (op_node_attr_int(n, "transA", 0) != 0 || op_node_attr_float(n, "alpha", 1.f) != 1.f) {
      *why = "Gemm with transA or alpha != 1";
      return false;
    }
    trans = op_node_attr_int(n, "transB", 0) != 0;
  } else if (!op_node_is(n, "MatMul")) {
    int fm = op_fused_matmul_linear(n, &trans, why); /* ONNX Runtime's FusedMatMul (transB, alpha) */
    if (fm <= 0) {
      if (!fm) *why = "not MatMul or Gemm";
      return false;
    }
  }
  if (n->n_input < 2 || is_const(a, n->input[0])) {
    *why = "no activation input";
    return false;
  }
  const char *wname = n->input[1];
  Onnx__NodeProto *tp = op_graph_producer(a->gr, wname);
  if (tp && op_node_is(tp, "Transpose")) { /* W given as Transpose(initializer) */
    Onnx__AttributeProto *perm = op_node_attr(tp, "perm");
    if (perm && !(perm->n_ints == 2 && perm->ints[0] == 1 && perm->ints[1] == 0)) {
      *why = "weight Transpose is not a 2-D transpose";
      return false;
    }
    op_value *tv = op_graph_find(a->gr, wname);
    if (tv->n_consumers != 1) {
      *why = "weight is shared with other nodes";
      return false;
    }
    wname = tp->input[0];
    trans = !trans;
  }
  Onnx__TensorProto *w = weight_init(a, wname, why);
  if (!w) return false;
  p->w = op_weight_source(a->gr, wname, &w);
  p->dtype = w->data_type;
  p->w_out_major = trans;
  p->in = trans ? w->dims[1] : w->dims[0];
  p->out = trans ? w->dims[0] : w->dims[1];
  p->x = n->input[0];
  p->y = n->output[0];
  if (op_node_is(n, "Gemm") && n->n_input > 2 && n->input[2][0]) {
    Onnx__TensorProto *c;
    const char *src = bias_source(a, mi, 2, p, &c);
    if (!src || !op_weight_dtype_ok(c->data_type) || op_tensor_numel(c) != p->out ||
        op_node_attr_float(n, "beta", 1.f) != 1.f) {
      *why = "Gemm bias is not a private vector of the output width";
      return false;
    }
    p->b = src;
  }
  return true;
}

/* Matches a projection whose final output (after an optional bias Add) is the tensor t. */
static bool match_proj_out(const op_analysis *a, const char *t, op_proj *p, const char **why) {
  const char *dummy;
  if (!why) why = &dummy;
  op_value *v = op_graph_find(a->gr, t);
  if (!v || v->producer < 0) {
    *why = "no producer";
    return false;
  }
  Onnx__NodeProto *n = node_at(a, v->producer);
  if (op_node_is(n, "Add") && n->n_input == 2) {
    for (int s = 0; s < 2; s++) {
      Onnx__TensorProto *b;
      op_value *mv = op_graph_find(a->gr, n->input[1 - s]);
      op_proj probe;
      if (!bias_source(a, v->producer, s, &probe, &b) || !mv || mv->producer < 0 || !op_weight_dtype_ok(b->data_type))
        continue;
      Onnx__NodeProto *mm = node_at(a, mv->producer);
      if (!op_fused_is_linear(mm) || mv->n_consumers != 1 || mv->graph_output) continue;
      if (!match_linear(a, mv->producer, p, why)) return false;
      if (p->b) { /* a Gemm bias and an Add bias */
        *why = "bias is not a private vector of the output width";
        return false;
      }
      const char *bsrc = bias_source(a, v->producer, s, p, &b);
      if ( !bsrc || op_tensor_numel(b) != p->out || b->n_dims != 1) {
        *why = "bias is not a private vector of the output width";
        return false;
      }
      p->b = bsrc;
      p->bias_node = v->producer;
      p->y = n->output[0];
      return true;
    }
  }
  if (op_fused_is_linear(n)) return match_linear(a, v->producer, p, why);
  *why = "not a projection";
  return false;
}

/* ---- attention ---- */

/* Is n one of ops, in ONNX's domain or ONNX Runtime's com.microsoft (FastGelu, BiasGelu, the fused
 * attention and normalisation ops live there)? */
static bool op_in(const Onnx__NodeProto *n, const char *const *ops) {
  bool ms = n->domain && strcmp(n->domain, "com.microsoft") == 0;
  for (; *ops; ops++)
    if (op_node_is(n, *ops) || (ms && strcmp(n->op_type, *ops) == 0)) return true;
  return false;
}

/* Op sets of the attention walkers, each named once. */
static const char *const SHAPING_OPS[] = {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Cast",
                                          "Dropout", "Split", "Slice", "Gather", "Contiguous", NULL};
static const char *const PART_OPS[] = {"Split", "Slice", "Gather", NULL}; /* take one part of a packed q|k|v */
static const char *const REPEAT_OPS[] = {"Expand", "Tile", NULL};         /* repeat kv heads for the query heads */
static const char *const RELAYOUT_OPS[] = {"Transpose", "Reshape", "Identity", "Cast", "Dropout", NULL};
static const char *const PASS_OPS[] = {"Identity", "Cast", "Dropout", NULL}; /* values pass unchanged */

static void push_site(op_attn *at, int node, op_site_role role, bool kv) {
  for (size_t i = 0; i < at->sites.n; i++)
    if (at->sites.v[i].node == node) return; /* a packed projection's Split is reached from q, k and v */
  OP_VEC_PUSH(at->sites, ((op_site){node, role, kv}));
}

/* The tensor a half of rotate_half() was sliced from: Slice(x) or Neg(Slice(x)). */
static const char *half_source(const op_analysis *a, const char *t) {
  Onnx__NodeProto *p = op_graph_producer(a->gr, t);
  if (p && op_node_is(p, "Neg")) p = op_graph_producer(a->gr, p->input[0]);
  return p && op_node_is(p, "Slice") ? p->input[0] : NULL;
}

/* Rotary embedding x*cos + rotate_half(x)*sin, with rotate_half = Concat(Neg(Slice(x)), Slice(x)) in
 * either order and cos/sin from anywhere: returns x, or NULL. Rotary acts within each head, so
 * nothing in it changes when heads are removed. */
static const char *rotary_input(const op_analysis *a, const Onnx__NodeProto *add) {
  if (!op_node_is(add, "Add") || add->n_input != 2) return NULL;
  for (int s = 0; s < 2; s++) {
    Onnx__NodeProto *m1 = op_graph_producer(a->gr, add->input[s]), *m2 = op_graph_producer(a->gr, add->input[1 - s]);
    if (!m1 || !m2 || !op_node_is(m1, "Mul") || !op_node_is(m2, "Mul") || m1->n_input != 2 || m2->n_input != 2)
      continue;
    for (int j = 0; j < 2; j++) {
      Onnx__NodeProto *cat = op_graph_producer(a->gr, m2->input[j]);
      if (!cat || !op_node_is(cat, "Concat") || cat->n_input != 2) continue;
      const char *x = half_source(a, cat->input[0]), *y = half_source(a, cat->input[1]);
      if (x && y && strcmp(x, y) == 0 && (strcmp(m1->input[0], x) == 0 || strcmp(m1->input[1], x) == 0)) return x;
    }
  }
  return NULL;
}

/* Walks from t (an input of the score or context MatMul) back to the projection that produced it,
 * through head shaping, scalar scaling, rotary embeddings and (on k/v) a repeat of the kv heads, and
 * tags every node whose constants carry a head count. Reshapes met before the repeat (walking back)
 * fold repeated kv heads into query heads; those after it split kv heads. At most MAX_WALK nodes:
 * exporters' head shaping is a handful of nodes, a longer path is not attention. */
static bool walk_to_proj(op_analysis *a, const char *t, bool kv_path, op_attn *at, op_proj *p, int *repeat,
                         const char **why) {
  op_int_vec reshapes = {0};
  bool ok = false;
  *why = "no projection found on the q/k/v path";
  for (int step = 0; step < MAX_WALK; step++) {
    const char *w = "not a projection";
    if (match_proj_out(a, t, p, &w)) {
      ok = true;
      break;
    }
    op_value *v = op_graph_find(a->gr, t);
    if (!v || v->producer < 0) break;
    Onnx__NodeProto *n = node_at(a, v->producer);
    if (op_node_is(n, "Add") && n->n_input == 2 && strcmp(w, "not a projection") == 0)
      for (int s = 0; s < 2; s++) { /* a biased projection whose weight or bias is no plain constant */
        Onnx__NodeProto *mm = op_graph_producer(a->gr, n->input[s]);
        op_proj tmp;
        if (mm && (op_node_is(mm, "MatMul") || op_node_is(mm, "Gemm")) &&
            !match_linear(a, op_graph_node_index(a->gr, mm), &tmp, &w))
          break;
        w = "not a projection";
      }
    if (strcmp(w, "not a projection") != 0) { /* a projection, but one that cannot be pruned: say why */
      *why = why_fmt(a, "projection behind %s '%s': %s", n->op_type, op_node_name(n), w);
      break;
    }
    const char *rot = rotary_input(a, n);
    if (rot) {
      at->rotary = true;
      t = rot;
    } else if (op_in(n, SHAPING_OPS)) {
      if (op_node_is(n, "Reshape")) OP_VEC_PUSH(reshapes, v->producer);
      if (op_in(n, PART_OPS)) push_site(at, v->producer, OP_SITE_PARTS, false);
      t = n->input[0];
    } else if (kv_path && op_in(n, REPEAT_OPS) && *repeat < 0) {
      *repeat = v->producer;
      push_site(at, v->producer, OP_SITE_REPEAT, true);
      for (size_t i = 0; i < reshapes.n; i++) push_site(at, reshapes.v[i], OP_SITE_HEADS, false);
      reshapes.n = 0;
      t = n->input[0];
    } else if ((op_node_is(n, "Mul") || op_node_is(n, "Div")) && n->n_input == 2 && is_const(a, n->input[1]) &&
               op_tensor_numel(const_of(a, n->input[1])) == 1) {
      t = n->input[0];
    } else if (op_node_is(n, "Mul") && n->n_input == 2 && is_const(a, n->input[0]) &&
               op_tensor_numel(const_of(a, n->input[0])) == 1) {
      t = n->input[1];
    } else {
      *why = why_fmt(a, "unexpected %s '%s' on the path", n->op_type, op_node_name(n));
      break;
    }
  }
  for (size_t i = 0; ok && i < reshapes.n; i++) push_site(at, reshapes.v[i], OP_SITE_SPLIT, kv_path);
  free(reshapes.v);
  return ok;
}

/* The MatMul computing attention scores behind t (through scaling, mask Add, Where, Cast). */
static int find_score_matmul(const op_analysis *a, const char *t, int depth) {
  op_value *v = op_graph_find(a->gr, t);
  if (!v || v->producer < 0 || depth > MAX_SCORE_DEPTH) return -1;
  Onnx__NodeProto *n = node_at(a, v->producer);
  if (op_node_is(n, "MatMul") || op_fused_matmul_activations(n))
    return !is_const(a, n->input[0]) && !is_const(a, n->input[1]) ? v->producer : -1;
  static const char *const through[] = {"Add", "Sub", "Mul", "Div", "Where", "Cast", "Identity", NULL};
  if (!op_in(n, through)) return -1;
  for (size_t i = 0; i < n->n_input; i++) {
    if (!n->input[i][0] || is_const(a, n->input[i])) continue;
    int r = find_score_matmul(a, n->input[i], depth + 1);
    if (r >= 0) return r;
  }
  return -1;
}

/* A fused operator of another domain (ONNX Runtime's FusedMatMul, ...) that computes the scores behind t
 * instead of a MatMul, for the reason a Softmax is not matched; NULL when there is none. */
static const Onnx__NodeProto *fused_score_op(const op_analysis *a, const char *t, int depth) {
  op_value *v = op_graph_find(a->gr, t);
  if (!v || v->producer < 0 || depth > MAX_SCORE_DEPTH) return NULL;
  const Onnx__NodeProto *n = node_at(a, v->producer);
  if (n->domain && n->domain[0] && strcmp(n->domain, "ai.onnx")) return n;
  static const char *const through[] = {"Add", "Sub", "Mul", "Div", "Where", "Cast", "Identity", NULL};
  if (!op_in(n, through)) return NULL;
  for (size_t i = 0; i < n->n_input; i++) {
    const Onnx__NodeProto *f = n->input[i][0] ? fused_score_op(a, n->input[i], depth + 1) : NULL;
    if (f) return f;
  }
  return NULL;
}

/* Follows the single real consumer (ignoring Shape readers) of t through the given ops. */
static Onnx__NodeProto *real_consumer(const op_analysis *a, const char *t, int *idx) {
  op_value *v = op_graph_find(a->gr, t);
  if (!v || v->graph_output) return NULL;
  int found = -1;
  for (size_t i = 0; i < v->n_consumers; i++) {
    Onnx__NodeProto *c = node_at(a, v->consumers[i]);
    if (op_node_is(c, "Shape")) continue;
    if (found >= 0 && found != v->consumers[i]) return NULL;
    found = v->consumers[i];
  }
  if (found < 0) return NULL;
  if (idx) *idx = found;
  return node_at(a, found);
}

static void collect_region(op_analysis *a, op_attn *at) {
  /* forward from the projection outputs to the output projection */
  const char *start[3];
  int ns = at->packed ? 1 : at->kv_packed ? 2 : 3;
  for (int i = 0; i < ns; i++) start[i] = at->qkv[i].y;
  for (int i = 0; i < ns; i++) OP_VEC_PUSH(at->region, start[i]);
  for (size_t k = 0; k < at->region.n && k < MAX_REGION; k++) {
    op_value *v = op_graph_find(a->gr, at->region.v[k]);
    for (size_t c = 0; v && c < v->n_consumers; c++) {
      int ci = v->consumers[c];
      Onnx__NodeProto *n = node_at(a, ci);
      if (ci == at->out.node || op_node_is(n, "Shape")) continue;
      for (size_t o = 0; o < n->n_output; o++) {
        bool seen = false;
        for (size_t r = 0; r < at->region.n && !seen; r++) seen = strcmp(at->region.v[r], n->output[o]) == 0;
        if (!seen) OP_VEC_PUSH(at->region, n->output[o]);
      }
    }
  }
}

/* Reshape/Expand nodes that shape a mask joining the score path between q.k and Softmax. */
static void collect_mask_nodes(op_analysis *a, op_attn *at, int qk) {
  op_name_vec todo = {0};
  /* the score path: forward from q.k to the Softmax */
  const char *t = a->gr->g->node[qk]->output[0];
  for (int step = 0; step < MAX_SCORE_STEPS; step++) {
    int ci;
    Onnx__NodeProto *c = real_consumer(a, t, &ci);
    if (!c || ci == at->softmax) break;
    for (size_t i = 0; i < c->n_input; i++)
      if (c->input[i][0] && strcmp(c->input[i], t) != 0 && !is_const(a, c->input[i])) OP_VEC_PUSH(todo, c->input[i]);
    t = c->output[0];
  }
  static const char *const through[] = {"Reshape", "Expand", "Cast", "Where", "Mul", "Sub", "Add", "Unsqueeze",
                                        "Not", "Identity", NULL};
  for (size_t k = 0; k < todo.n && k < MAX_MASK_INPUTS; k++) {
    Onnx__NodeProto *n = op_graph_producer(a->gr, todo.v[k]);
    if (!n || !op_in(n, through)) continue;
    int ni = op_graph_node_index(a->gr, n);
    if (op_node_is(n, "Reshape") || op_node_is(n, "Expand")) {
      push_site(at, ni, OP_SITE_MASK, false);
      OP_VEC_PUSH(todo, n->input[0]);
      continue;
    }
    for (size_t i = 0; i < n->n_input; i++)
      if (n->input[i][0] && !is_const(a, n->input[i])) OP_VEC_PUSH(todo, n->input[i]);
  }
  free(todo.v);
}

/* ---- score terms that carry heads (not pruned yet: refused by name) ---- */

#define MAX_TERM_NODES 24 /* producers examined behind one term added to the scores */

/* Does the shape tensor s (a constant, or a Concat of pieces) have an element equal to heads? */
static bool shape_names_heads(const op_analysis *a, const char *s, int64_t heads) {
  Onnx__NodeProto *cat = op_graph_producer(a->gr, s);
  size_t n = cat && op_node_is(cat, "Concat") ? cat->n_input : 1;
  for (size_t i = 0; i < n; i++) {
    Onnx__TensorProto *c = op_graph_const(a->gr, n > 1 || (cat && op_node_is(cat, "Concat")) ? cat->input[i] : s);
    int64_t v;
    for (int64_t e = 0; c && e < op_tensor_numel(c) && e < 8; e++)
      if (op_tensor_get_int(c, e, &v) && v == heads) return true;
  }
  return false;
}

/* A float constant of more than one element with an axis of size heads, at most MAX_TERM_NODES producers
 * behind t: a relative position bias table ([buckets, H], Swin's [1, H, N, N]) or ALiBi's slopes [H, 1]. */
static const char *head_constant_behind(const op_analysis *a, const char *t, int64_t heads, bool shaped) {
  op_name_vec todo = {0};
  const char *found = NULL;
  OP_VEC_PUSH(todo, t);
  for (size_t k = 0; k < todo.n && k < MAX_TERM_NODES && !found; k++) {
    Onnx__TensorProto *c = op_graph_const(a->gr, todo.v[k]);
    if (c) {
      for (size_t d = 0; d < c->n_dims && op_dtype_is_float(c->data_type) && op_tensor_numel(c) > 1; d++)
        if (c->dims[d] == heads) found = todo.v[k];
      continue;
    }
    Onnx__NodeProto *n = op_graph_producer(a->gr, todo.v[k]);
    if (shaped && n && op_node_is(n, "ConstantOfShape") && shape_names_heads(a, n->input[0], heads)) {
      found = todo.v[k]; /* a tensor made with a head axis (T5's zero position bias of cross-attention) */
      break;
    }
    for (size_t i = 0; n && i < n->n_input; i++)
      if (n->input[i][0]) OP_VEC_PUSH(todo, n->input[i]);
  }
  free(todo.v);
  return found;
}

/* The per-head constant behind a term added to the scores between q.k and the Softmax, or NULL. */
static const char *head_score_term(const op_analysis *a, const op_attn *at, int qk) {
  if (at->heads < 2) return NULL;
  const char *t = node_at(a, qk)->output[0];
  for (int step = 0; step < MAX_SCORE_STEPS; step++) {
    int ci;
    Onnx__NodeProto *c = real_consumer(a, t, &ci);
    if (!c || ci == at->softmax) break;
    for (size_t i = 0; i < c->n_input; i++) {
      if (!c->input[i][0] || strcmp(c->input[i], t) == 0) continue;
      /* cross-attention: also a tensor made with the head count, whose shape no site rewrites (T5's) */
      const char *h = head_constant_behind(a, c->input[i], at->heads, at->cross);
      if (h) return h;
    }
    t = c->output[0];
  }
  return NULL;
}

/* Why no score MatMul(q, k) was found before Softmax sm, when the scores have a known other form. */
static const char *diagnose_scores(op_analysis *a, const Onnx__NodeProto *sm) {
  static const char *const through[] = {"Add", "Sub", "Mul", "Div", "Where", "Cast", "Identity", "Reshape",
                                        "Transpose", "Unsqueeze", "Squeeze", "Expand", "GatherElements", NULL};
  op_name_vec todo = {0};
  int products = 0;
  const char *reshape = NULL, *product = NULL;
  OP_VEC_PUSH(todo, sm->input[0]);
  for (size_t k = 0; k < todo.n && k < MAX_TERM_NODES; k++) {
    Onnx__NodeProto *n = op_graph_producer(a->gr, todo.v[k]);
    if (!n) continue;
    if (op_node_is(n, "MatMul") && !is_const(a, n->input[0]) && !is_const(a, n->input[1])) {
      products++;
      product = op_node_name(n);
      continue;
    }
    if (!op_in(n, through)) continue;
    if (op_node_is(n, "Reshape") && !reshape) reshape = op_node_name(n);
    for (size_t i = 0; i < n->n_input; i++)
      if (n->input[i][0] && !is_const(a, n->input[i]) && !(op_node_is(n, "Reshape") && i > 0)) OP_VEC_PUSH(todo, n->input[i]);
  }
  free(todo.v);
  if (products >= 2)
    return why_fmt(a, "disentangled attention: scores are a sum of %d products (relative-position terms, as "
                      "DeBERTa's c2c + c2p + p2c)", products);
  if (products == 1 && reshape)
    return why_fmt(a, "scores of MatMul '%s' reach the Softmax through Reshape '%s' with a term added on "
                      "[B*H, S, S] (as ALiBi's baddbmm)", product, reshape);
  return NULL;
}

static void attn_free(op_attn *at) {
  free(at->sites.v);
  free(at->region.v);
}

/* k/v heads: as many as q's, or fewer (grouped / multi-query) and repeated for the query heads by
 * an Expand (head h reads kv head h / rep) or a Tile (h reads h % KV) on both the k and v paths. */
static bool match_kv_heads(op_analysis *a, const Onnx__NodeProto *sm, op_attn *at, const int *repeat) {
  int64_t Ekv = at->packed ? at->qkv[0].out / 3 : at->kv_packed ? at->qkv[1].out / 2 : at->qkv[1].out, d = at->head_dim;
  if (Ekv % d || !Ekv || at->heads % (Ekv / d)) {
    unmatched(a, sm, "k/v width %lld is not a whole number of %lld-wide heads dividing %lld query heads",
              (long long)Ekv, (long long)d, (long long)at->heads);
    return false;
  }
  at->kv_heads = Ekv / d;
  at->kv_map = OP_KV_SAME;
  if (at->kv_heads == at->heads) return true;
  if (at->packed || at->kv_packed) {
    unmatched(a, sm, "packed q|k|v or k|v with fewer kv heads than query heads");
    return false;
  }
  if (repeat[1] < 0 || repeat[2] < 0) {
    unmatched(a, sm, "%lld kv heads for %lld query heads, but no Expand or Tile repeats the %s heads",
              (long long)at->kv_heads, (long long)at->heads, repeat[1] < 0 ? "k" : "v");
    return false;
  }
  bool tile = op_node_is(node_at(a, repeat[1]), "Tile");
  if (tile != op_node_is(node_at(a, repeat[2]), "Tile")) {
    unmatched(a, sm, "k and v heads are repeated differently (Expand on one, Tile on the other)");
    return false;
  }
  at->kv_map = tile && at->kv_heads > 1 ? OP_KV_TILED : OP_KV_INTERLEAVED;
  for (size_t i = 0; i < at->sites.n; i++) {
    const op_site *s = &at->sites.v[i];
    int64_t n;
    if (s->role == OP_SITE_SPLIT && s->kv && (n = op_shape_infer_heads(a->gr, node_at(a, s->node), Ekv)) &&
        n != at->kv_heads) {
      unmatched(a, sm, "Reshape '%s' splits k/v into %lld heads, the widths say %lld", op_node_name(node_at(a, s->node)),
                (long long)n, (long long)at->kv_heads);
      return false;
    }
  }
  return true;
}

/* The tensor name is a copy of, through Identity / Cast / Dropout: q and k of self-attention may
 * read one stream through such a node on one side only, which does not make them cross-attention. */
#define MAX_PASS_HOPS 4
static const char *pass_source(const op_analysis *a, const char *name) {
  for (int hop = 0; hop < MAX_PASS_HOPS; hop++) {
    Onnx__NodeProto *p = op_graph_producer(a->gr, name);
    if (!p || !op_in(p, PASS_OPS) || p->n_input < 1) break;
    name = p->input[0];
  }
  return name;
}

static bool match_attention(op_analysis *a, int si, op_attn *at) {
  Onnx__NodeProto *sm = node_at(a, si);
  memset(at, 0, sizeof *at);
  at->softmax = si;
  const char *why = "";
  int qk = find_score_matmul(a, sm->input[0], 0);
  if (qk < 0) {
    const Onnx__NodeProto *f = fused_score_op(a, sm->input[0], 0);
    if (f)
      unmatched(a, sm, "the scores come from %s::%s '%s' (a fused graph of ONNX Runtime's optimizer): its attention is not pruned",
                f->domain, f->op_type, op_node_name(f));
    else if (diagnose_scores(a, sm))
      unmatched(a, sm, "%s", a->why);
    else
      unmatched(a, sm, "no score MatMul(q, k) before the Softmax");
    return false;
  }
  /* probabilities -> MatMul(probs, v) */
  const char *probs = sm->output[0];
  int av = -1;
  for (int step = 0; step < MAX_PROBS_STEPS && av < 0; step++) {
    int ci;
    Onnx__NodeProto *c = real_consumer(a, probs, &ci);
    if (!c) break;
    if ((op_node_is(c, "MatMul") || op_fused_matmul_activations(c)) && strcmp(c->input[0], probs) == 0) av = ci;
    else if (op_in(c, PASS_OPS)) probs = c->output[0];
    else break;
  }
  if (av < 0) {
    unmatched(a, sm, "Softmax output does not feed a MatMul with v");
    return false;
  }
  Onnx__NodeProto *qkn = node_at(a, qk), *avn = node_at(a, av);
  const char *paths[3] = {qkn->input[0], qkn->input[1], avn->input[1]};
  static const char *const role[3] = {"q", "k", "v"};
  int repeat[3] = {-1, -1, -1};
  for (int i = 0; i < 3; i++) {
    if (!walk_to_proj(a, paths[i], i > 0, at, &at->qkv[i], &repeat[i], &why)) {
      unmatched(a, sm, "%s path: %s", role[i], why);
      goto fail;
    }
  }
  if (at->qkv[0].node == at->qkv[1].node && at->qkv[1].node == at->qkv[2].node) {
    at->packed = true;
    if (at->qkv[0].out % 3) {
      unmatched(a, sm, "packed projection width %lld is not 3 equal parts", (long long)at->qkv[0].out);
      goto fail;
    }
  } else if (at->qkv[1].node == at->qkv[2].node && at->qkv[0].node != at->qkv[1].node) {
    at->kv_packed = true; /* k|v in one projection, cut in two (torch's cross-attention) */
    if (at->qkv[1].out % 2) {
      unmatched(a, sm, "packed k|v projection width %lld is not 2 equal parts", (long long)at->qkv[1].out);
      goto fail;
    }
  } else if (at->qkv[0].node == at->qkv[1].node || at->qkv[1].node == at->qkv[2].node ||
             at->qkv[0].node == at->qkv[2].node) {
    unmatched(a, sm, "q, k and v share some but not all projections");
    goto fail;
  } else if (at->qkv[1].out != at->qkv[2].out) {
    unmatched(a, sm, "k and v widths differ (%lld and %lld)", (long long)at->qkv[1].out, (long long)at->qkv[2].out);
    goto fail;
  }
  /* cross-attention: k and v read one other stream (an encoder's memory); q the block's own */
  if (strcmp(at->qkv[1].x, at->qkv[2].x) != 0) {
    unmatched(a, sm, "k and v read different inputs ('%s' and '%s')", at->qkv[1].x, at->qkv[2].x);
    goto fail;
  }
  at->cross = strcmp(pass_source(a, at->qkv[1].x), pass_source(a, at->qkv[0].x)) != 0;
  int64_t E = at->packed ? at->qkv[0].out / 3 : at->qkv[0].out;
  /* context -> merge heads -> output projection */
  const char *t = avn->output[0];
  bool found_out = false;
  for (int step = 0; step < MAX_MERGE_STEPS && !found_out; step++) {
    int ci;
    Onnx__NodeProto *c = real_consumer(a, t, &ci);
    if (!c) break;
    if (op_node_is(c, "Reshape")) push_site(at, ci, OP_SITE_MERGE, false);
    if (op_fused_is_linear(c) && strcmp(c->input[0], t) == 0) {
      if (!match_linear(a, ci, &at->out, &why)) {
        unmatched(a, sm, "output projection: %s", why);
        goto fail;
      }
      int bi;
      Onnx__NodeProto *b = real_consumer(a, at->out.y, &bi);
      op_proj with_bias;
      if (!at->out.b && b && op_node_is(b, "Add") && match_proj_out(a, b->output[0], &with_bias, NULL) &&
          with_bias.node == ci)
        at->out = with_bias;
      found_out = true;
    } else if (op_in(c, RELAYOUT_OPS)) {
      t = c->output[0];
    } else {
      break;
    }
  }
  if (!found_out) {
    unmatched(a, sm, "no output projection after the attention context");
    goto fail;
  }
  if (at->out.in != E) {
    unmatched(a, sm, "output projection reads %lld values, q/k/v give %lld", (long long)at->out.in, (long long)E);
    goto fail;
  }
  for (size_t i = 0; i < at->sites.n && !at->heads; i++)
    if (at->sites.v[i].role == OP_SITE_SPLIT && !at->sites.v[i].kv)
      at->heads = op_shape_infer_heads(a->gr, node_at(a, at->sites.v[i].node), E);
  if (!at->heads) {
    unmatched(a, sm, "cannot read the number of heads from the head-split Reshape");
    goto fail;
  }
  at->head_dim = E / at->heads;
  const char *hterm = head_score_term(a, at, qk);
  if (hterm) {
    unmatched(a, sm, "the scores add a term computed from per-head constant '%s' (a relative position bias or "
                     "ALiBi slopes): slicing it with the heads is not supported", hterm);
    goto fail;
  }
  if (!match_kv_heads(a, sm, at, repeat)) goto fail;
  collect_region(a, at);
  collect_mask_nodes(a, at, qk);
  return true;
fail:
  attn_free(at);
  return false;
}

/* ---- FFN ---- */

static const char *const ELEMENTWISE_OPS[] = {"Add", "Sub", "Mul", "Div", "Pow", "Erf", "Tanh", "Sigmoid",
                                              "Relu", "Gelu", "FastGelu", "LeakyRelu", "Elu", "Selu", "Softplus",
                                              "HardSigmoid", "HardSwish", "Clip", "Cast", "Identity", "Neg",
                                              "Mish", "Dropout", "BiasGelu", "QuickGelu", NULL};
static const char *const NONLINEAR_OPS[] = {"Erf", "Tanh", "Sigmoid", "Relu", "Gelu", "FastGelu", "LeakyRelu",
                                            "Elu", "Selu", "Softplus", "HardSigmoid", "HardSwish", "Clip", "Mish",
                                            "BiasGelu", "QuickGelu", NULL};

static bool has_op(const op_analysis *a, const op_int_vec *nodes, const char *op) {
  for (size_t i = 0; i < nodes->n; i++)
    if (op_node_is(node_at(a, nodes->v[i]), op)) return true;
  return false;
}

static void name_activation(const op_analysis *a, op_ffn *f) {
  const char *act = "unknown";
  bool zero = true;
  const char *fused = op_fused_activation(a, f);
  if (fused) act = fused;
  else if (has_op(a, &f->region, "Gelu") || has_op(a, &f->region, "FastGelu")) act = "gelu";
  else if (has_op(a, &f->region, "Erf")) act = "gelu(erf)";
  else if (has_op(a, &f->region, "Tanh") && has_op(a, &f->region, "Pow")) act = "gelu(tanh)";
  else if (has_op(a, &f->region, "Tanh") && has_op(a, &f->region, "Mul") && f->region.n > 3) act = "gelu(tanh)";
  else if (has_op(a, &f->region, "Sigmoid") && has_op(a, &f->region, "Mul")) act = "silu";
  else if (has_op(a, &f->region, "Relu")) act = "relu";
  else if (has_op(a, &f->region, "Tanh")) act = "tanh";
  else if (has_op(a, &f->region, "Sigmoid")) act = "sigmoid", zero = false;
  else zero = false;
  if (f->n_up == 2) snprintf(f->activation, sizeof f->activation, "gated-%s", act);
  else snprintf(f->activation, sizeof f->activation, "%s", act);
  f->zero_preserving = zero;
}


/* A Reshape between the FFN projections that keeps the width on the last axis (transformers' Conv1D
 * flattens tokens to [B*S, F] around each Gemm): part of the region, its constant width rewritten with the
 * neurons. */
static bool ffn_relayout(op_analysis *a, op_ffn *f, const op_value *v, op_name_vec *todo) {
  if (!v || v->producer < 0) return false;
  Onnx__NodeProto *n = node_at(a, v->producer);
  if (!op_node_is(n, "Reshape") || n->n_input < 2 || !op_shape_keeps_width(a->gr, n, f->down.in)) return false;
  if (!op_int_vec_has(&f->region, v->producer)) {
    OP_VEC_PUSH(f->region, v->producer);
    OP_VEC_PUSH(*todo, n->input[0]);
  }
  return true;
}

/* Tries the linear layer at node di as an FFN's down projection. */
static bool match_ffn(op_analysis *a, int di, op_ffn *f, const char **why) {
  memset(f, 0, sizeof *f);
  if (!match_linear(a, di, &f->down, why)) return false;
  op_proj with_bias;
  Onnx__NodeProto *b = real_consumer(a, f->down.y, NULL);
  if (!f->down.b && b && op_node_is(b, "Add") && match_proj_out(a, b->output[0], &with_bias, NULL) &&
      with_bias.node == di)
    f->down = with_bias;
  op_name_vec todo = {0};
  OP_VEC_PUSH(todo, f->down.x);
  bool ok = true;
  for (size_t k = 0; k < todo.n && ok; k++) {
    const char *t = todo.v[k];
    op_proj p;
    const char *w;
    if (match_proj_out(a, t, &p, &w) && p.node != di) {
      bool dup = false;
      for (int u = 0; u < f->n_up; u++) dup |= f->up[u].node == p.node;
      if (!dup) {
        if (f->n_up == 2) {
          *why = "more than two projections feed the activation";
          ok = false;
          break;
        }
        f->up[f->n_up++] = p;
      }
      continue;
    }
    op_value *v = op_graph_find(a->gr, t);
    if (ffn_relayout(a, f, v, &todo)) continue;
    Onnx__NodeProto *part = v && v->producer >= 0 ? node_at(a, v->producer) : NULL;
    Onnx__NodeProto *packed = part && op_in(part, PART_OPS) ? op_graph_producer(a->gr, part->input[0]) : NULL;
    if (packed && (op_node_is(packed, "MatMul") || op_node_is(packed, "Gemm"))) {
      *why = why_fmt(a, "gate and up projections packed in one %s '%s' and cut by %s '%s' (as Phi-3's gate_up_proj): "
                        "not supported", packed->op_type, op_node_name(packed), part->op_type, op_node_name(part));
      ok = false;
      break;
    }
    if (!v || v->producer < 0 || !op_in(node_at(a, v->producer), ELEMENTWISE_OPS)) {
      *why = v && v->producer >= 0 ? why_fmt(a, "%s '%s' between the projections is not element-wise",
                                             node_at(a, v->producer)->op_type, op_node_name(node_at(a, v->producer)))
                                   : "the activation does not come from an up projection";
      ok = false;
      break;
    }
    Onnx__NodeProto *n = node_at(a, v->producer);
    if (op_int_vec_has(&f->region, v->producer)) continue;
    OP_VEC_PUSH(f->region, v->producer);
    for (size_t i = 0; i < n->n_input; i++) {
      if (!n->input[i][0]) continue;
      Onnx__TensorProto *c = const_of(a, n->input[i]);
      if (c && op_fused_act_bias(n, i)) continue; /* the up projection's bias, attached below */
      if (c) {
        if (op_tensor_numel(c) != 1) {
          *why = why_fmt(a, "%s '%s' in the activation uses a per-neuron constant", n->op_type, op_node_name(n));
          ok = false;
        }
        continue;
      }
      if (op_node_is(n, "Dropout") && i > 0) continue;
      OP_VEC_PUSH(todo, n->input[i]);
    }
  }
  free(todo.v);
  if (ok && f->n_up == 0) *why = "no up projection", ok = false;
  if (ok) ok = op_fused_ffn_bias(a, f, why);
  if (ok) {
    bool nonlinear = false;
    for (size_t i = 0; i < f->region.n; i++) nonlinear |= op_in(node_at(a, f->region.v[i]), NONLINEAR_OPS);
    if (!nonlinear) *why = "no activation between the projections", ok = false;
  }
  for (int u = 0; ok && u < f->n_up; u++) {
    if (f->up[u].out != f->down.in) *why = "up and down projection widths differ", ok = false;
    else if (strcmp(f->up[u].x, f->up[0].x) != 0) *why = "gate and up projections read different inputs", ok = false;
  }
  /* nothing inside may leak out: every activation tensor feeds only the region or the down projection */
  for (size_t i = 0; ok && i < f->region.n; i++) {
    Onnx__NodeProto *n = node_at(a, f->region.v[i]);
    op_value *v = op_graph_find(a->gr, n->output[0]);
    for (size_t c = 0; ok && v && c < v->n_consumers; c++)
      if (v->consumers[c] != di && !op_int_vec_has(&f->region, v->consumers[c]) &&
          !op_node_is(node_at(a, v->consumers[c]), "Shape")) /* a size read at run time follows the width */
        *why = "an activation value is used outside the FFN", ok = false;
    if (v && v->graph_output) *why = "an activation value is a graph output", ok = false;
  }
  if (ok && f->n_up == 2) {
    /* the gate is the branch that goes through the nonlinearity: order it first */
    op_value *v = op_graph_find(a->gr, f->up[1].y);
    bool up1_nonlinear = false;
    for (size_t c = 0; v && c < v->n_consumers; c++) up1_nonlinear |= op_in(node_at(a, v->consumers[c]), NONLINEAR_OPS);
    if (up1_nonlinear) {
      op_proj tmp = f->up[0];
      f->up[0] = f->up[1];
      f->up[1] = tmp;
    }
  }
  if (ok) name_activation(a, f);
  else free(f->region.v);
  return ok;
}

/* ---- forms not (yet) recognised: said, never skipped silently ---- */

/* Operators that mean the weights are already quantised, by form. */
static const struct {
  const char *op, *form;
} QUANTISED_OPS[] = {
    {"DequantizeLinear", "QDQ"},         {"QuantizeLinear", "QDQ"},          {"DynamicQuantizeLinear", "QDQ"},
    {"QLinearMatMul", "QOperator"},      {"QLinearConv", "QOperator"},       {"MatMulInteger", "QOperator"},
    {"ConvInteger", "QOperator"},        {"QAttention", "QOperator"},        {"QGemm", "QOperator"},
    {"DynamicQuantizeMatMul", "QOperator"}, {"MatMulIntegerToFloat", "QOperator"}, {"QLinearAdd", "QOperator"},
    {"MatMulNBits", "MatMulNBits"},      {"GatherBlockQuantized", "MatMulNBits"}, {"MatMulBnb4", "MatMulNBits"},
};

/* "QDQ: 12 nodes, first DequantizeLinear 'x'" when the model is already quantised, else NULL. */
char *op_quantized_form(const op_graph *gr) {
  int count = 0;
  const Onnx__NodeProto *first = NULL;
  const char *form = NULL;
  for (size_t i = 0; i < gr->g->n_node; i++)
    for (size_t k = 0; k < sizeof QUANTISED_OPS / sizeof *QUANTISED_OPS; k++)
      if (strcmp(gr->g->node[i]->op_type, QUANTISED_OPS[k].op) == 0 &&
          (op_node_is(gr->g->node[i], QUANTISED_OPS[k].op) ||
           (gr->g->node[i]->domain && strcmp(gr->g->node[i]->domain, "com.microsoft") == 0))) {
        if (!count++) first = gr->g->node[i], form = QUANTISED_OPS[k].form;
        break;
      }
  if (!count) return NULL;
  size_t n = strlen(form) + strlen(first->op_type) + strlen(op_node_name(first)) + 64;
  char *s = op_xmalloc(n);
  snprintf(s, n, "%s (%d quantisation nodes, the first %s '%s')", form, count, first->op_type, op_node_name(first));
  return s;
}

/* Does the linear layer at di look like an FFN's down projection: its input comes, through at most a
 * few element-wise ops (MAX_ACT_WALK: activations are short chains), from a nonlinearity fed by
 * another MatMul/Gemm, and its output joins a residual Add or SkipLayerNormalization? Then a
 * failed match is worth a reason; a classifier head (no residual) is not. */
#define MAX_ACT_WALK 12
static bool looks_like_ffn(const op_analysis *a, int di) {
  Onnx__NodeProto *d = node_at(a, di);
  if (d->n_input < 2) return false;
  bool nonlinear = false, up = false;
  op_name_vec todo = {0};
  OP_VEC_PUSH(todo, d->input[0]);
  for (size_t k = 0; k < todo.n && k < MAX_ACT_WALK && !up; k++) {
    Onnx__NodeProto *p = op_graph_producer(a->gr, todo.v[k]);
    if (!p) continue;
    static const char *const linear[] = {"MatMul", "Gemm", "FusedMatMul", NULL};
    if (op_in(p, linear)) {
      up = nonlinear;
      continue;
    }
    if (op_in(p, PART_OPS)) { /* one part of a packed gate|up projection */
      OP_VEC_PUSH(todo, p->input[0]);
      continue;
    }
    if (!op_in(p, ELEMENTWISE_OPS)) continue;
    nonlinear |= op_in(p, NONLINEAR_OPS);
    for (size_t i = 0; i < p->n_input; i++)
      if (p->input[i][0] && !is_const(a, p->input[i])) OP_VEC_PUSH(todo, p->input[i]);
  }
  free(todo.v);
  if (!up) return false;
  const char *t = d->output[0];
  for (int step = 0; step < 3; step++) { /* bias Add, then the residual */
    Onnx__NodeProto *c = real_consumer(a, t, NULL);
    if (!c) return false;
    static const char *const skip_norm[] = {"SkipLayerNormalization", "SkipSimplifiedLayerNormalization", NULL};
    if (op_in(c, skip_norm)) return true;
    if (!op_node_is(c, "Add")) return false;
    const char *other = strcmp(c->input[0], t) == 0 ? c->input[1] : c->input[0];
    if (!is_const(a, other)) return true;
    t = c->output[0];
  }
  return false;
}

/* ---- residual blocks ---- */

static const char *const NORM_OPS[] = {"ReduceMean", "Sub", "Pow", "Add", "Sqrt", "Div", "Mul", "Cast",
                                       "LayerNormalization", "SimplifiedLayerNormalization", "RMSNormalization",
                                       "Reciprocal", "Identity", NULL};

/* Is r reached from x walking back through normalisation/transposition only? Sets *norm when a
 * normalisation lies on the way. */
static bool reaches_back(const op_analysis *a, const char *x, const char *r, int depth, bool *norm) {
  if (strcmp(x, r) == 0) return true;
  if (depth > MAX_NORM_DEPTH) return false;
  Onnx__NodeProto *n = op_graph_producer(a->gr, x);
  if (!n || !(op_in(n, NORM_OPS) || op_in(n, RELAYOUT_OPS))) return false;
  for (size_t i = 0; i < n->n_input; i++) {
    if (!n->input[i][0] || is_const(a, n->input[i])) continue;
    if (reaches_back(a, n->input[i], r, depth + 1, norm)) {
      /* anything but re-layout between the stream and the block input is the block's own norm */
      if (!op_in(n, RELAYOUT_OPS))
        *norm = true;
      return true;
    }
  }
  return false;
}

/* The end of a normalisation that starts at t: the one tensor of the norm subgraph used outside it. */
static const char *norm_end(const op_analysis *a, const char *t) {
  op_name_vec region = {0};
  op_int_vec nodes = {0};
  OP_VEC_PUSH(region, t);
  const char *end = NULL;
  for (size_t k = 0; k < region.n && k < MAX_NORM_NODES; k++) {
    op_value *v = op_graph_find(a->gr, region.v[k]);
    for (size_t c = 0; v && c < v->n_consumers; c++) {
      Onnx__NodeProto *n = node_at(a, v->consumers[c]);
      if (op_int_vec_has(&nodes, v->consumers[c]) || !op_in(n, NORM_OPS)) continue;
      bool inside = true;
      for (size_t i = 0; i < n->n_input && inside; i++) {
        if (!n->input[i][0] || is_const(a, n->input[i])) continue;
        bool found = false;
        for (size_t r = 0; r < region.n && !found; r++) found = strcmp(region.v[r], n->input[i]) == 0;
        inside = found;
      }
      if (!inside) continue;
      OP_VEC_PUSH(nodes, v->consumers[c]);
      OP_VEC_PUSH(region, n->output[0]);
    }
  }
  int outside_users = 0;
  for (size_t k = 0; k < region.n; k++) {
    op_value *v = op_graph_find(a->gr, region.v[k]);
    bool used_outside = v->graph_output;
    for (size_t c = 0; v && c < v->n_consumers; c++) used_outside |= !op_int_vec_has(&nodes, v->consumers[c]);
    if (used_outside) {
      outside_users++;
      end = region.v[k];
    }
  }
  bool ok = outside_users == 1 && end != t && nodes.n >= 1;
  free(region.v);
  free(nodes.v);
  return ok ? end : NULL;
}

/* Finds the residual Add that the block output y flows into, for a block reading x. */
static bool find_residual(op_analysis *a, const char *x, const char *y, op_block *blk) {
  const char *t = y;
  for (int step = 0; step < MAX_RESIDUAL_STEPS; step++) {
    int ci;
    Onnx__NodeProto *c = real_consumer(a, t, &ci);
    if (!c) return false;
    int fr = op_fused_residual(a, x, t, c, ci, blk); /* ONNX Runtime's SkipLayerNormalization */
    if (fr) return fr > 0;
    if (op_node_is(c, "Add") && c->n_input == 2) {
      const char *r = strcmp(c->input[0], t) == 0 ? c->input[1] : c->input[0];
      bool norm = false;
      if (!reaches_back(a, x, r, 0, &norm)) return false;
      blk->residual_add = ci;
      blk->stream_in = op_graph_canonical(a->gr, r);
      blk->add_out = c->output[0];
      blk->pre_norm = norm;
      blk->stream_out = blk->add_out;
      blk->stream_out_known = true;
      if (!norm) { /* post-norm: the block's stream ends after the norm that follows the Add */
        const char *end = norm_end(a, blk->add_out);
        blk->stream_out_known = end != NULL;
        if (end) blk->stream_out = end;
      }
      return true;
    }
    if (!op_in(c, RELAYOUT_OPS))
      return false;
    t = c->output[0];
  }
  return false;
}

/* Does the stream `in` continue `out` through value-preserving re-layouts only (a float-to-float Cast of
 * an RMSNorm, OPT's flatten of the stream to [B*S, E] around its FFN)? Then the blocks are one layer. */
static const char *const STREAM_OPS[] = {"Cast", "Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", NULL};

bool op_match_continues_stream(const op_analysis *a, const char *out, const char *in) {
  out = op_graph_canonical(a->gr, out);
  for (int hop = 0; hop <= MAX_STREAM_HOPS; hop++) {
    if (strcmp(op_graph_canonical(a->gr, in), out) == 0) return true;
    Onnx__NodeProto *n = op_graph_producer(a->gr, in);
    if (!n || !op_in(n, STREAM_OPS) || n->n_input < 1) return false;
    in = n->input[0];
  }
  return false;
}

static int cmp_blocks(const void *x, const void *y) {
  const op_block *a = x, *b = y;
  return a->residual_add - b->residual_add;
}

/* ---- parameters ---- */

static int64_t init_params(const op_analysis *a, const char *name) {
  Onnx__TensorProto *t = op_proj_tensor(a, name);
  return t && op_dtype_is_float(t->data_type) ? op_tensor_numel(t) : 0;
}

int64_t op_proj_params(const op_analysis *a, const op_proj *p) { return init_params(a, p->w) + init_params(a, p->b); }

/* A projection's own parameters: a bias shared with other users (copied on write) counts as "other",
 * once, not once per user. */
static int64_t owned_params(const op_analysis *a, const op_proj *p) {
  return init_params(a, p->w) + (p->b_cow ? 0 : init_params(a, p->b));
}

static void count_params(op_analysis *a) {
  a->params_total = op_graph_param_count(a->model->proto->graph);
  for (size_t i = 0; i < a->attn.n; i++) {
    const op_attn *at = &a->attn.v[i];
    for (int k = 0; k < (at->packed ? 1 : at->kv_packed ? 2 : 3); k++) a->params_attn += owned_params(a, &at->qkv[k]);
    a->params_attn += owned_params(a, &at->out);
  }
  for (size_t i = 0; i < a->ffn.n; i++) {
    const op_ffn *f = &a->ffn.v[i];
    for (int k = 0; k < f->n_up; k++) a->params_ffn += owned_params(a, &f->up[k]);
    a->params_ffn += owned_params(a, &f->down);
  }
  Onnx__GraphProto *g = a->gr->g;
  OP_VEC(const Onnx__TensorProto *) seen = {0}; /* a table gathered twice (BART's shared embedding) counts once */
  for (size_t i = 0; i < g->n_node; i++)
    if (op_node_is(g->node[i], "Gather")) {
      Onnx__TensorProto *t = const_of(a, g->node[i]->input[0]);
      bool counted = false;
      for (size_t k = 0; t && k < seen.n; k++) counted |= seen.v[k] == t;
      if (t && !counted && t->n_dims == 2 && op_dtype_is_float(t->data_type)) {
        a->params_embed += op_tensor_numel(t);
        OP_VEC_PUSH(seen, t);
      }
    }
  free(seen.v);
  a->params_embed += op_fused_embed_params(a); /* tables inside EmbedLayerNormalization */
  op_fused_count_biases(a);
}

int64_t op_graph_param_count(const Onnx__GraphProto *g) {
  int64_t n = 0;
  for (size_t i = 0; i < g->n_initializer; i++)
    if (op_dtype_is_float(g->initializer[i]->data_type)) n += op_tensor_numel(g->initializer[i]);
  for (size_t i = 0; i < g->n_node; i++) {
    if (!op_node_is(g->node[i], "Constant")) continue;
    Onnx__AttributeProto *v = op_node_attr(g->node[i], "value");
    int64_t k = v && v->t && op_dtype_is_float(v->t->data_type) ? op_tensor_numel(v->t) : 0;
    if (k > 1) n += k; /* scalars are arithmetic (an epsilon, a scale), not weights */
  }
  return n;
}

const char *op_attn_kind(const op_attn *at) {
  if (at->fused_op) return op_fused_kind(at);
  if (at->kv_heads == at->heads) return at->cross ? "cross" : "self";
  if (at->cross) return at->kv_heads == 1 ? "cross-multi-query" : "cross-grouped";
  return at->kv_heads == 1 ? "multi-query" : "grouped";
}

const op_attn *op_layer_attn(const op_analysis *a, int layer) {
  int b = a->layers.v[layer].attn_block;
  return b < 0 ? NULL : &a->attn.v[a->blocks.v[b].index];
}

const op_ffn *op_layer_ffn(const op_analysis *a, int layer) {
  int b = a->layers.v[layer].ffn_block;
  return b < 0 ? NULL : &a->ffn.v[a->blocks.v[b].index];
}

/* ---- entry points ---- */

op_analysis *op_analyze(const op_model *m, op_error *err) {
  int64_t opset = op_model_opset(m->proto);
  if (opset && opset < 11)
    return op_fail_null(err, OP_UNSUPPORTED, "%s: opset %lld is older than 11, the oldest supported", m->path,
                        (long long)opset);
  op_analysis *a = op_xcalloc(1, sizeof *a);
  a->model = m;
  a->opset = opset;
  op_fold_weight_slices(m->proto->graph); /* torch's run-time cut of a packed in-projection */
  a->gr = op_graph_build(m->proto->graph);
  a->quantized = op_quantized_form(a->gr);
  Onnx__GraphProto *g = m->proto->graph;
  bool *used = op_xcalloc(g->n_node, sizeof *used); /* projections already claimed by attention */
  for (size_t i = 0; i < g->n_node; i++) {
    if (!op_node_is(g->node[i], "Softmax")) continue;
    op_attn at;
    size_t before = a->unmatched.n;
    if (!match_attention(a, (int)i, &at)) {
      a->unmatched_attn += a->unmatched.n > before;
      continue;
    }
    op_block blk = {.kind = OP_BLOCK_ATTN, .index = (int)a->attn.n};
    if (!find_residual(a, at.qkv[0].x, at.out.y, &blk)) {
      unmatched(a, g->node[i], "attention output does not join a residual connection");
      attn_free(&at);
      continue;
    }
    bool shared = used[at.out.node];
    for (int k = 0; k < 3; k++) shared |= used[at.qkv[k].node];
    if (shared) {
      unmatched(a, g->node[i], "shares a projection with another block");
      attn_free(&at);
      continue;
    }
    for (int k = 0; k < 3; k++) used[at.qkv[k].node] = true;
    used[at.out.node] = true;
    OP_VEC_PUSH(a->attn, at);
    OP_VEC_PUSH(a->blocks, blk);
  }
  op_fused_match_attention(a, used); /* ONNX Runtime's Attention, MultiHeadAttention, GroupQueryAttention */
  for (size_t i = 0; i < g->n_node; i++) {
    if (used[i] || !op_fused_is_linear(g->node[i])) continue;
    op_ffn f;
    const char *why = "";
    if (!match_ffn(a, (int)i, &f, &why)) {
      if (looks_like_ffn(a, (int)i)) unmatched(a, g->node[i], "FFN down projection: %s", why);
      continue;
    }
    op_block blk = {.kind = OP_BLOCK_FFN, .index = (int)a->ffn.n};
    if (!find_residual(a, f.up[0].x, f.down.y, &blk)) { /* a classifier head, not a transformer FFN */
      Onnx__NodeProto *c = real_consumer(a, f.down.y, NULL);
      if (c && op_node_is(c, "Add")) /* but an FFN whose output is summed with something else is one */
        unmatched(a, g->node[i], "FFN output joins Add '%s', which is not a residual connection of its input "
                                 "(attention and FFN in parallel on one residual, as in Falcon and GPT-NeoX)",
                  op_node_name(c));
      free(f.region.v);
      continue;
    }
    bool shared = used[f.down.node];
    for (int u = 0; u < f.n_up; u++) shared |= used[f.up[u].node];
    if (shared) { /* a projection may be rewritten by one block only */
      unmatched(a, g->node[i], "shares a projection with another block");
      free(f.region.v);
      continue;
    }
    used[f.down.node] = true;
    for (int u = 0; u < f.n_up; u++) used[f.up[u].node] = true;
    OP_VEC_PUSH(a->ffn, f);
    OP_VEC_PUSH(a->blocks, blk);
  }
  free(used);
  if (a->blocks.n) qsort(a->blocks.v, a->blocks.n, sizeof *a->blocks.v, cmp_blocks); /* qsort(NULL, 0) is undefined */
  op_layers_assemble(a);
  count_params(a);
  return a;
}

void op_analysis_free(op_analysis *a) {
  if (!a) return;
  for (size_t i = 0; i < a->attn.n; i++) attn_free(&a->attn.v[i]);
  for (size_t i = 0; i < a->ffn.n; i++) free(a->ffn.v[i].region.v);
  for (size_t i = 0; i < a->unmatched.n; i++) free(a->unmatched.v[i]);
  free(a->attn.v);
  free(a->ffn.v);
  free(a->blocks.v);
  free(a->layers.v);
  free(a->unmatched.v);
  op_graph_free(a->gr);
  free(a->why);
  free(a->quantized);
  free(a);
}

int op_analysis_layer_count(const op_analysis *a) { return (int)a->layers.n; }

/* ---- shared with match_fused.c ---- */

bool op_match_linear(const op_analysis *a, int node, op_proj *p, const char **why) { return match_linear(a, node, p, why); }
bool op_match_proj_out(const op_analysis *a, const char *t, op_proj *p, const char **why) {
  return match_proj_out(a, t, p, why);
}
bool op_match_residual(op_analysis *a, const char *x, const char *y, op_block *blk) { return find_residual(a, x, y, blk); }
Onnx__NodeProto *op_match_real_consumer(const op_analysis *a, const char *t, int *idx) { return real_consumer(a, t, idx); }
void op_match_unmatched(op_analysis *a, const Onnx__NodeProto *n, const char *why) { unmatched(a, n, "%s", why); }
const char *op_match_why(op_analysis *a, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *s = vfmt(fmt, ap);
  va_end(ap);
  free(a->why);
  a->why = s;
  return a->why;
}
