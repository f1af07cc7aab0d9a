/* shape_expr.c - reading and rewriting the target shapes that carry an attention block's head
 * count: a constant shape, or a Concat of constants and Shape/Gather arithmetic as exporters emit.
 * A shape is seen as a list of elements; each is a constant or a small dynamic expression whose
 * Mul/Div constants may be the head count (B*H, E/H). */
#include "match/match.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ELEMS 16
#define MAX_LEAVES 16

typedef struct elem {
  bool is_const;
  int64_t value;
  int slot;        /* Concat input slot, or -1 when the whole shape is one constant */
  int index;       /* element index inside that constant */
  const char *src; /* tensor of that constant / root of the dynamic expression */
} elem;

typedef struct shape_view {
  Onnx__NodeProto *concat; /* NULL: the whole shape is a constant */
  elem e[MAX_ELEMS];
  int n;
} shape_view;

typedef struct leaf {
  Onnx__NodeProto *node;
  int slot;
  int64_t value;
  bool is_div;      /* divisor of a Div */
  bool from_region; /* the dividend is a size of a tensor that scales with heads */
} leaf;

/* Integer constant values behind name, looking through Unsqueeze/Squeeze/Cast/Identity. */
static int const_ints(const op_graph *gr, const char *name, int64_t *vals, int max, Onnx__TensorProto **src) {
  for (int depth = 0; depth < 4; depth++) {
    Onnx__TensorProto *t = op_graph_const(gr, name);
    if (t) {
      int64_t n = op_tensor_numel(t);
      if (n < 0 || n > max) return -1;
      for (int64_t i = 0; i < n; i++)
        if (!op_tensor_get_int(t, i, &vals[i])) return -1;
      if (src) *src = t;
      return (int)n;
    }
    Onnx__NodeProto *p = op_graph_producer(gr, name);
    if (!p || !(op_node_is(p, "Unsqueeze") || op_node_is(p, "Squeeze") || op_node_is(p, "Cast") ||
                op_node_is(p, "Identity")))
      return -1;
    name = p->input[0];
  }
  return -1;
}

static bool view_shape(const op_graph *gr, const char *shape, shape_view *v) {
  memset(v, 0, sizeof *v);
  int64_t vals[MAX_ELEMS];
  int n = const_ints(gr, shape, vals, MAX_ELEMS, NULL);
  if (n >= 0) {
    for (int i = 0; i < n; i++) v->e[i] = (elem){true, vals[i], -1, i, shape};
    v->n = n;
    return true;
  }
  Onnx__NodeProto *c = op_graph_producer(gr, shape);
  /* torch's expand() flattens its Concat with Reshape(-1) before the Where that resolves -1s */
  if (c && op_node_is(c, "Reshape") && c->n_input == 2 && const_ints(gr, c->input[1], vals, 1, NULL) == 1 &&
      vals[0] == -1)
    c = op_graph_producer(gr, c->input[0]);
  if (!c || !op_node_is(c, "Concat")) return false;
  v->concat = c;
  for (size_t s = 0; s < c->n_input; s++) {
    int k = const_ints(gr, c->input[s], vals, MAX_ELEMS, NULL);
    if (k < 0) {
      if (v->n >= MAX_ELEMS) return false;
      v->e[v->n++] = (elem){false, 0, (int)s, 0, c->input[s]};
      continue;
    }
    for (int i = 0; i < k; i++) {
      if (v->n >= MAX_ELEMS) return false;
      v->e[v->n++] = (elem){true, vals[i], (int)s, i, c->input[s]};
    }
  }
  return true;
}

static bool is_passthrough(const Onnx__NodeProto *n) {
  static const char *ops[] = {"Unsqueeze", "Squeeze", "Cast", "Identity", "Floor", "Ceil", "Add", "Sub", "Gather", "Mul", "Div", "Concat", "Slice", "Reshape"};
  for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
    if (op_node_is(n, ops[i])) return true;
  return false;
}

static bool in_region(const op_name_vec *region, const char *name) {
  for (size_t i = 0; region && i < region->n; i++)
    if (strcmp(region->v[i], name) == 0) return true;
  return false;
}

/* Does the integer expression behind name read the size of a region tensor? */
static bool reads_region_size(const op_graph *gr, const char *name, const op_name_vec *region, int depth) {
  Onnx__NodeProto *p = op_graph_producer(gr, name);
  if (!p || depth > 10) return false;
  if (op_node_is(p, "Shape")) return in_region(region, p->input[0]);
  if (!is_passthrough(p)) return false;
  for (size_t i = 0; i < p->n_input; i++)
    if (p->input[i][0] && reads_region_size(gr, p->input[i], region, depth + 1)) return true;
  return false;
}

/* Mul/Div constants inside the dynamic expression behind name. */
static void collect_leaves(const op_graph *gr, const char *name, const op_name_vec *region, leaf *lv, int *n,
                           int depth) {
  Onnx__NodeProto *p = op_graph_producer(gr, name);
  if (!p || depth > 10 || op_node_is(p, "Shape") || !is_passthrough(p)) return;
  bool muldiv = op_node_is(p, "Mul") || op_node_is(p, "Div");
  for (size_t s = 0; s < p->n_input; s++) {
    if (!p->input[s][0]) continue;
    int64_t v;
    Onnx__TensorProto *t = op_graph_const(gr, p->input[s]);
    if (muldiv && t && op_tensor_numel(t) == 1 && op_tensor_get_int(t, 0, &v)) {
      if (*n < MAX_LEAVES) {
        bool is_div = op_node_is(p, "Div") && s == 1;
        lv[(*n)++] = (leaf){p, (int)s, v, is_div, is_div && reads_region_size(gr, p->input[0], region, 0)};
      }
    } else if (!t) {
      collect_leaves(gr, p->input[s], region, lv, n, depth + 1);
    }
  }
}

int64_t op_shape_infer_heads(const op_graph *gr, const Onnx__NodeProto *reshape, int64_t E) {
  shape_view v;
  if (reshape->n_input < 2 || !view_shape(gr, reshape->input[1], &v) || v.n < 2 || E <= 1) return 0;
  const elem *last = &v.e[v.n - 1], *prev = &v.e[v.n - 2];
  if (prev->is_const && prev->value > 1 && E % prev->value == 0) {
    if (last->is_const && last->value > 0 && prev->value * last->value == E) return prev->value;
    if ((last->is_const && last->value == -1) || !last->is_const) return prev->value;
  }
  if (last->is_const && last->value > 1 && last->value < E && E % last->value == 0) return E / last->value;
  leaf lv[MAX_LEAVES];
  int nl = 0;
  for (int i = 0; i < v.n; i++)
    if (!v.e[i].is_const) collect_leaves(gr, v.e[i].src, NULL, lv, &nl, 0);
  for (int pass = 0; pass < 2; pass++) /* Mul (B*H) first, then Div (E/H) */
    for (int i = 0; i < nl; i++)
      if (lv[i].is_div == (pass == 1) && lv[i].value > 1 && lv[i].value < E && E % lv[i].value == 0) return lv[i].value;
  return 0;
}

/* A copy of constant t with element values replaced by vals (same dtype and dims). */
static Onnx__TensorProto *const_like(const Onnx__TensorProto *t, const char *name, const int64_t *vals, int64_t n) {
  Onnx__TensorProto *c = op_tensor_new(name, t->data_type, t->dims, t->n_dims);
  for (int64_t i = 0; i < n; i++) {
    if (t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__INT32) {
      int32_t x = (int32_t)vals[i];
      memcpy(c->raw_data.data + 4 * i, &x, 4);
    } else {
      memcpy(c->raw_data.data + 8 * i, &vals[i], 8);
    }
  }
  return c;
}

/* Points node input slot at a new int64 1-D initializer holding vals. */
static void set_input_ints(op_graph *gr, Onnx__NodeProto *node, int slot, const char *base, const int64_t *vals,
                           int64_t n) {
  size_t len = strlen(base) + 16;
  char *nm = op_xmalloc(len);
  snprintf(nm, len, "%s_pruned", base);
  Onnx__TensorProto *t = op_tensor_new(nm, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, &n, 1);
  free(nm);
  memcpy(t->raw_data.data, vals, (size_t)n * 8);
  op_node_set_input(node, (size_t)slot, op_graph_add_init(gr, t));
}

static void set_input_like(op_graph *gr, Onnx__NodeProto *node, int slot, const Onnx__TensorProto *like,
                           const int64_t *vals, int64_t n) {
  size_t len = strlen(node->input[slot]) + 16;
  char *nm = op_xmalloc(len);
  snprintf(nm, len, "%s_pruned", node->input[slot]);
  Onnx__TensorProto *t = const_like(like, nm, vals, n);
  free(nm);
  op_node_set_input(node, (size_t)slot, op_graph_add_init(gr, t));
}

static int rewrite_shape_input(op_graph *gr, Onnx__NodeProto *reshape, int slot, op_site_role role, bool kv,
                               const op_head_counts *c, const op_name_vec *region, op_error *err);

int op_shape_rewrite(op_graph *gr, const op_site *site, const op_head_counts *c, const op_name_vec *region,
                     op_error *err) {
  Onnx__NodeProto *reshape = gr->g->node[site->node];
  if (reshape->n_input < 2)
    return op_fail(err, OP_UNSUPPORTED, "node '%s': cannot read its target shape", op_node_name(reshape));
  /* a shape chosen by Where(cond, a, b) (torch's expand(-1, H, -1, -1)): both candidates */
  Onnx__NodeProto *w = site->role == OP_SITE_MASK || site->role == OP_SITE_REPEAT
                           ? op_graph_producer(gr, reshape->input[1])
                           : NULL;
  if (w && op_node_is(w, "Where") && w->n_input == 3)
    return rewrite_shape_input(gr, w, 1, site->role, site->kv, c, region, err) ||
           rewrite_shape_input(gr, w, 2, site->role, site->kv, c, region, err);
  return rewrite_shape_input(gr, reshape, 1, site->role, site->kv, c, region, err);
}

/* The kv-head repeat: Expand [.., KV, rep, S, d] (both may change) or Tile repeats [.., rep, ..]. */
static void rewrite_repeat(const shape_view *v, const op_head_counts *c, bool tile, int64_t *newv, bool *changed) {
  int64_t rep = c->H / c->kv, rep2 = c->H2 / c->kv2;
  for (int i = 0; tile && i < v->n; i++)
    if (v->e[i].is_const && v->e[i].value == rep && rep > 1) newv[i] = rep2, changed[i] = rep != rep2;
  /* [.., KV, rep, ..]: a constant kv count first, so that [B, 2, 2, S, d] (KV == rep, B read from a shape)
   * is not taken as [KV=B, rep=2]; then a kv count read from k's shape (it follows by itself) */
  for (int pass = 0; !tile && pass < 2; pass++)
    for (int i = 0; i + 1 < v->n; i++) {
      bool kv_here = pass == 0 ? v->e[i].is_const && v->e[i].value == c->kv : !v->e[i].is_const;
      if (!kv_here || !v->e[i + 1].is_const || v->e[i + 1].value != rep) continue;
      if (v->e[i].is_const) newv[i] = c->kv2, changed[i] = c->kv != c->kv2;
      newv[i + 1] = rep2, changed[i + 1] = rep != rep2;
      return;
    }
  /* one kv head broadcast straight to [B, H, S, d]: the repeat count is the head count */
  if (!tile && c->kv == 1) rewrite_repeat(v, c, true, newv, changed);
}

/* The Concat that builds user's input slot, made private to user when other nodes read it too (the
 * dynamo exporter builds one [B, KV, rep, S, d] for the repeat of every layer's k and v): each block
 * rewrites its own copy, so layers pruned differently never change each other's shapes. */
static Onnx__NodeProto *private_concat(op_graph *gr, Onnx__NodeProto *user, int slot, Onnx__NodeProto *concat) {
  op_value *v = op_graph_find(gr, concat->output[0]);
  if (strcmp(user->input[slot], concat->output[0]) != 0 || !v || (v->n_consumers <= 1 && !v->graph_output))
    return concat;
  char *out = op_graph_fresh_name(gr, concat->output[0]); /* unique, so also the node's name */
  const char *outs[1] = {out};
  Onnx__NodeProto *c = op_node_new("Concat", out, (const char *const *)concat->input, concat->n_input, outs, 1);
  op_node_add_int(c, "axis", op_node_attr_int(concat, "axis", 0));
  op_graph_append(gr->g, c); /* placed by the topological sort after pruning */
  op_node_set_input(user, (size_t)slot, out);
  free(out);
  return c;
}

static int rewrite_shape_input(op_graph *gr, Onnx__NodeProto *reshape, int slot, op_site_role role, bool kv,
                               const op_head_counts *c, const op_name_vec *region, op_error *err) {
  shape_view v;
  if (!view_shape(gr, reshape->input[slot], &v)) {
    /* a computed shape (ConstantOfShape, ...) carries no head count */
    if (role == OP_SITE_MASK || role == OP_SITE_REPEAT) return 0;
    return op_fail(err, OP_UNSUPPORTED, "node '%s': cannot read its target shape", op_node_name(reshape));
  }
  int64_t H = kv ? c->kv : c->H, H2 = kv ? c->kv2 : c->H2, d = c->d;
  int64_t E = H * d, E2 = H2 * d;
  int64_t newv[MAX_ELEMS];
  bool changed[MAX_ELEMS] = {false};
  /* [.., H, d] or [.., H, -1]: only then is the element before the last the head count */
  const elem *tail = v.n ? &v.e[v.n - 1] : NULL;
  bool split_tail_ok = tail && (!tail->is_const || tail->value == d || tail->value == -1);
  if (role == OP_SITE_REPEAT) {
    for (int i = 0; i < v.n; i++) newv[i] = v.e[i].value;
    rewrite_repeat(&v, c, op_node_is(reshape, "Tile"), newv, changed);
  }
  for (int i = 0; i < v.n && role != OP_SITE_REPEAT; i++) {
    elem *e = &v.e[i];
    int from_end = v.n - i;
    newv[i] = e->value;
    if (role == OP_SITE_MERGE && from_end == 1 && !(e->is_const && e->value <= 0)) {
      newv[i] = E2; /* the merged width feeds the output projection: it is E2 whatever it was */
      changed[i] = true;
      continue;
    }
    if (!e->is_const) continue;
    if (e->value == E && E != E2) {
      newv[i] = E2;
      changed[i] = true;
    } else if (e->value == 3 * E) {
      newv[i] = 3 * E2;
      changed[i] = true;
    } else if (role == OP_SITE_SPLIT && from_end == 2 && e->value == H && split_tail_ok) {
      newv[i] = H2;
      changed[i] = true;
    } else if (role == OP_SITE_HEADS && from_end >= 2 && e->value == H) { /* [B, H, S, d] */
      newv[i] = H2;
      changed[i] = true;
    } else if (role == OP_SITE_MASK && v.n == 4 && i == 1 && e->value == H) { /* [B, H, Sq, Sk] */
      newv[i] = H2;
      changed[i] = true;
    }
  }
  /* constant elements, rewritten per source constant */
  if (!v.concat) {
    bool any = false;
    for (int i = 0; i < v.n; i++) any |= changed[i];
    if (any) set_input_ints(gr, reshape, slot, reshape->input[slot], newv, v.n);
  } else {
    bool any_change = false;
    for (int i = 0; i < v.n; i++) any_change |= changed[i];
    if (any_change) v.concat = private_concat(gr, reshape, slot, v.concat);
    for (int i = 0; i < v.n;) {
      int j = i;
      bool any = false;
      while (j < v.n && v.e[j].slot == v.e[i].slot) any |= changed[j++];
      if (any) set_input_ints(gr, v.concat, v.e[i].slot, v.e[i].src, &newv[i], j - i);
      i = j;
    }
  }
  /* dynamic elements: B*H and E/H constants */
  for (int i = 0; i < v.n && role != OP_SITE_REPEAT; i++) {
    if (v.e[i].is_const || changed[i]) continue;
    leaf lv[MAX_LEAVES];
    int nl = 0;
    collect_leaves(gr, v.e[i].src, region, lv, &nl, 0);
    for (int k = 0; k < nl; k++) {
      bool rewrite = lv[k].value == H && (!lv[k].is_div || lv[k].from_region);
      /* repeated kv heads folded as (kv heads read from the shape) * rep */
      int64_t rep = c->H / c->kv, rep2 = c->H2 / c->kv2, to = H2;
      if (!rewrite && role == OP_SITE_HEADS && !lv[k].is_div && lv[k].value == rep && rep != H) rewrite = true, to = rep2;
      if (!rewrite) continue;
      Onnx__TensorProto *ct = op_graph_const(gr, lv[k].node->input[lv[k].slot]);
      set_input_like(gr, lv[k].node, lv[k].slot, ct, &to, 1);
    }
  }
  return 0;
}

bool op_shape_keeps_width(const op_graph *gr, const Onnx__NodeProto *reshape, int64_t F) {
  shape_view v;
  if (reshape->n_input < 2 || !view_shape(gr, reshape->input[1], &v) || v.n < 1) return false;
  const elem *last = &v.e[v.n - 1];
  return !last->is_const || last->value == F;
}

int op_shape_rewrite_width(op_graph *gr, Onnx__NodeProto *reshape, int64_t F, int64_t F2, op_error *err) {
  shape_view v;
  if (reshape->n_input < 2 || !view_shape(gr, reshape->input[1], &v) || v.n < 1)
    return op_fail(err, OP_UNSUPPORTED, "node '%s': cannot read its target shape", op_node_name(reshape));
  const elem *last = &v.e[v.n - 1];
  if (!last->is_const || F == F2) return 0; /* a size read at run time follows the new width */
  if (last->value != F)
    return op_fail(err, OP_UNSUPPORTED, "node '%s': last axis %lld is not the FFN width %lld", op_node_name(reshape),
                   (long long)last->value, (long long)F);
  int64_t newv[MAX_ELEMS];
  for (int i = 0; i < v.n; i++) newv[i] = v.e[i].value;
  newv[v.n - 1] = F2;
  if (!v.concat) {
    set_input_ints(gr, reshape, 1, reshape->input[1], newv, v.n);
    return 0;
  }
  Onnx__NodeProto *c = private_concat(gr, reshape, 1, v.concat);
  int i = v.n - 1;
  while (i > 0 && v.e[i - 1].slot == last->slot) i--;
  set_input_ints(gr, c, last->slot, last->src, &newv[i], v.n - i);
  return 0;
}

int op_shape_rewrite_parts(op_graph *gr, Onnx__NodeProto *n, int64_t E, int64_t E2, int64_t opset, op_error *err) {
  int64_t vals[MAX_ELEMS];
  Onnx__TensorProto *src = NULL;
  if (op_node_is(n, "Split")) {
    Onnx__AttributeProto *a = op_node_attr(n, "split");
    if (a && opset < 13) {
      for (size_t i = 0; i < a->n_ints; i++)
        if (a->ints[i] == E) a->ints[i] = E2;
      return 0;
    }
    if (n->n_input < 2 || !n->input[1][0]) return 0; /* equal split follows the input */
    int k = const_ints(gr, n->input[1], vals, MAX_ELEMS, &src);
    if (k < 0) return op_fail(err, OP_UNSUPPORTED, "node '%s': split sizes are not constant", op_node_name(n));
    for (int i = 0; i < k; i++)
      if (vals[i] == E) vals[i] = E2;
    set_input_like(gr, n, 1, src, vals, k);
    return 0;
  }
  if (op_node_is(n, "Slice")) {
    for (int slot = 1; slot <= 2 && (size_t)slot < n->n_input; slot++) {
      int k = const_ints(gr, n->input[slot], vals, MAX_ELEMS, &src);
      if (k < 0) continue; /* computed from the input's size, so it follows the new width */
      bool any = false;
      for (int i = 0; i < k; i++)
        for (int64_t m = 1; m <= 3; m++)
          if (vals[i] == m * E) {
            vals[i] = m * E2;
            any = true;
          }
      if (any) set_input_like(gr, n, slot, src, vals, k);
    }
  }
  return 0;
}
