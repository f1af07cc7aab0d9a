/* sequential.c - pruning by reconstruction, block after block: each block's output-projection input is
 * collected on the calibration data through the model as pruned so far (a session over the nodes that
 * compute it, streamed batch by batch), its units ranked (recon.c) and its output projection refit in
 * place, its removed rows zeroed so later blocks see what the pruned model computes. The rewrite then
 * slices what the plan removes, as for any importance. */
#include "prune/recon.h"
#include "exec/exec.h"
#include "verify/stream.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RIDGE 1e-2 /* x the mean diagonal of H: enough for the rank-deficient H of padded or dead channels */

bool op_recon_wanted(const op_prune_config *c) {
  return c->importance == OP_IMP_RECONSTRUCTION || (c->data && c->compensate == 1);
}

/* ---- weights as float64 [in + 1, out]: the rows per input channel, then the bias ---- */

static double elem_get(const uint8_t *p, int32_t dt) {
  if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
    float f;
    memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  memcpy(&h, p, 2);
  return dt == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16 ? op_bf16_to_f32(h) : op_f16_to_f32(h);
}

static void elem_set(uint8_t *p, int32_t dt, double v) {
  float f = (float)v;
  if (dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
    memcpy(p, &f, 4);
    return;
  }
  uint16_t h = dt == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16 ? op_f32_to_bf16(f) : op_f32_to_f16(f);
  memcpy(p, &h, 2);
}

/* The stored weight or bias of a projection in raw float32/float16/bfloat16 bytes; NULL with *err. */
static Onnx__TensorProto *raw_tensor(const op_analysis *a, const char *name, int64_t numel, op_error *err) {
  Onnx__TensorProto *t = op_proj_tensor(a, name);
  if (!t || op_tensor_to_raw(t) || !op_weight_dtype_ok(t->data_type) || op_tensor_numel(t) != numel ||
      t->raw_data.len != (size_t)numel * op_dtype_size(t->data_type))
    return op_fail_null(err, OP_UNSUPPORTED, "%s: weight '%s': compensation reads and writes float32, float16 or "
                        "bfloat16 raw data only", a->model->path, name);
  return t;
}

static int load_proj(const op_analysis *a, const op_proj *p, double *W, op_error *err) {
  int64_t in = p->in, out = p->out;
  Onnx__TensorProto *w = raw_tensor(a, p->w, in * out, err), *b = NULL;
  if (!w || (p->b && !(b = raw_tensor(a, p->b, out, err)))) return -1;
  size_t es = op_dtype_size(w->data_type);
  for (int64_t c = 0; c < in; c++)
    for (int64_t j = 0; j < out; j++)
      W[c * out + j] = elem_get(w->raw_data.data + (size_t)(p->w_out_major ? j * in + c : c * out + j) * es, w->data_type);
  for (int64_t j = 0; j < out; j++)
    W[in * out + j] = b ? elem_get(b->raw_data.data + (size_t)j * op_dtype_size(b->data_type), b->data_type) : 0;
  return 0;
}

/* Writes W back in the tensors' own types and layouts (new buffers: the old ones may be borrowed). */
static int store_proj(const op_analysis *a, const op_proj *p, const double *W, op_error *err) {
  int64_t in = p->in, out = p->out;
  Onnx__TensorProto *w = raw_tensor(a, p->w, in * out, err), *b = NULL;
  if (!w || (p->b && !(b = raw_tensor(a, p->b, out, err)))) return -1;
  for (int64_t j = 0; !b && j < out; j++)
    if (W[in * out + j] != 0)
      return op_fail(err, OP_UNSUPPORTED, "%s: output projection '%s' has no bias to compensate into", a->model->path,
                     p->w);
  size_t es = op_dtype_size(w->data_type);
  uint8_t *nw = op_xmalloc((size_t)(in * out) * es + 1);
  for (int64_t c = 0; c < in; c++)
    for (int64_t j = 0; j < out; j++)
      elem_set(nw + (size_t)(p->w_out_major ? j * in + c : c * out + j) * es, w->data_type, W[c * out + j]);
  int64_t dims[2] = {w->dims[0], w->dims[1]};
  op_tensor_replace(w, dims, 2, nw, (size_t)(in * out) * es);
  if (b) {
    size_t bes = op_dtype_size(b->data_type);
    uint8_t *nb = op_xmalloc((size_t)out * bes + 1);
    for (int64_t j = 0; j < out; j++) elem_set(nb + (size_t)j * bes, b->data_type, W[in * out + j]);
    int64_t bd[1] = {out};
    op_tensor_replace(b, bd, 1, nb, (size_t)out * bes);
  }
  return 0;
}

/* ---- biases where there are none ---- */

/* y = MatMul(x, W) becomes t = MatMul(x, W); y = Add(t, zeros): every consumer still reads y. Gemm gets C. */
static int add_bias(op_graph *gr, const op_proj *p, const char *model, op_error *err) {
  Onnx__GraphProto *g = gr->g;
  Onnx__NodeProto *n = g->node[p->node];
  int64_t dims[1] = {p->out};
  char base[64];
  snprintf(base, sizeof base, "%.40s_bias", op_node_name(n));
  const char *bname = op_graph_add_init(gr, op_tensor_new(base, p->dtype, dims, 1));
  if (op_node_is(n, "Gemm")) {
    if (op_node_attr_float(n, "beta", 1.f) != 1.f)
      return op_fail(err, OP_UNSUPPORTED, "%s: node '%s': Gemm without C but with beta != 1: cannot add a bias to "
                     "compensate into (use --no-compensate)", model, op_node_name(n));
    n->input = op_xrealloc(n->input, (n->n_input + 1) * sizeof *n->input);
    while (n->n_input < 2) n->input[n->n_input++] = op_xstrdup("");
    n->input[n->n_input++] = op_xstrdup(bname);
    return 0;
  }
  char *t = op_graph_fresh_name(gr, n->output[0]);
  const char *ins[2] = {t, bname};
  const char *outs[1] = {n->output[0]};
  char name[80];
  snprintf(name, sizeof name, "%.60s_bias_add", op_node_name(n));
  Onnx__NodeProto *add = op_node_new("Add", name, ins, 2, outs, 1);
  free(n->output[0]);
  n->output[0] = t;
  op_graph_append(g, add);
  return 0;
}

int op_recon_add_biases(op_model *m, const op_analysis *a, const op_plan *plan, op_error *err) {
  op_graph *gr = op_graph_build(m->proto->graph);
  int added = 0, rc = 0;
  for (size_t l = 0; l < plan->n && !rc; l++) {
    const op_layer_plan *lp = &plan->layers[l];
    const op_attn *at = op_layer_attn(a, (int)l);
    const op_ffn *f = op_layer_ffn(a, (int)l);
    if (lp->drop_layer) continue;
    if (at && !lp->drop_attn && !at->out.b && op_plan_kept(lp->keep_head, lp->heads) < lp->heads)
      rc = add_bias(gr, &at->out, m->path, err), added++;
    if (!rc && f && !lp->drop_ffn && !f->down.b && op_plan_kept(lp->keep_neuron, lp->width) < lp->width)
      rc = add_bias(gr, &f->down, m->path, err), added++;
  }
  op_graph_free(gr);
  if (rc) return -1;
  if (added && op_graph_toposort(m->proto->graph))
    return op_fail(err, OP_INVALID, "%s: the graph cannot be ordered after adding biases", m->path);
  return added;
}

/* ---- collecting a projection's input ---- */

/* A view of the model that computes one value: the nodes it depends on, that value as the only output.
 * It shares everything else (initializers included) with the model, so edits show through. */
typedef struct prefix_model {
  op_model m;
  Onnx__ModelProto proto;
  Onnx__GraphProto g;
  Onnx__ValueInfoProto out;
  Onnx__ValueInfoProto *outp;
} prefix_model;

static bool has_subgraphs(const Onnx__GraphProto *g) {
  for (size_t i = 0; i < g->n_node; i++)
    for (size_t k = 0; k < g->node[i]->n_attribute; k++)
      if (g->node[i]->attribute[k]->g || g->node[i]->attribute[k]->n_graphs) return true;
  return false;
}

static void prefix_init(prefix_model *pm, const op_analysis *a, const char *value) {
  const Onnx__GraphProto *g0 = a->model->proto->graph;
  pm->m = *a->model;
  pm->proto = *a->model->proto;
  pm->g = *g0;
  pm->proto.graph = &pm->g;
  pm->m.proto = &pm->proto;
  onnx__value_info_proto__init(&pm->out);
  pm->out.name = (char *)value;
  pm->outp = &pm->out;
  pm->g.output = &pm->outp;
  pm->g.n_output = 1;
  pm->g.node = op_xmalloc((g0->n_node ? g0->n_node : 1) * sizeof *pm->g.node);
  pm->g.n_node = 0;
  if (has_subgraphs(g0)) { /* their outer-scope reads are not edges: keep every node */
    memcpy(pm->g.node, g0->node, g0->n_node * sizeof *pm->g.node);
    pm->g.n_node = g0->n_node;
    return;
  }
  bool *need = op_xcalloc(g0->n_node ? g0->n_node : 1, 1);
  int *todo = op_xmalloc((g0->n_node + 1) * sizeof *todo);
  size_t nt = 0;
  op_value *v = op_graph_find(a->gr, value);
  if (v && v->producer >= 0) need[v->producer] = true, todo[nt++] = v->producer;
  while (nt) {
    const Onnx__NodeProto *n = g0->node[todo[--nt]];
    for (size_t j = 0; j < n->n_input; j++) {
      op_value *iv = n->input[j][0] ? op_graph_find(a->gr, n->input[j]) : NULL;
      if (iv && iv->producer >= 0 && !need[iv->producer]) need[iv->producer] = true, todo[nt++] = iv->producer;
    }
  }
  for (size_t i = 0; i < g0->n_node; i++)
    if (need[i]) pm->g.node[pm->g.n_node++] = g0->node[i];
  free(need);
  free(todo);
}

typedef struct collect {
  op_recon_moments mo;
  float *rows;
  size_t cap;
  const char *model, *value;
} collect;

static int collect_batch(void *user, const op_tensor *outputs, int64_t count, op_error *err) {
  (void)count;
  collect *c = user;
  const op_tensor *t = &outputs[0];
  int64_t n = c->mo.n, ch = t->rank ? t->dims[t->rank - 1] : 0;
  size_t es = op_dtype_size(t->dtype);
  if (ch != n || !es || !op_weight_dtype_ok(t->dtype))
    return op_fail(err, OP_UNSUPPORTED, "%s: '%s': expected a float tensor of %lld channels on its last axis", c->model,
                   c->value, (long long)n);
  int64_t numel = (int64_t)(t->nbytes / es), rows = numel / n;
  if ((size_t)numel > c->cap) c->rows = op_xrealloc(c->rows, (size_t)numel * sizeof *c->rows), c->cap = (size_t)numel;
  for (int64_t i = 0; i < numel; i++) c->rows[i] = (float)elem_get((const uint8_t *)t->data + (size_t)i * es, t->dtype);
  op_recon_moments_add(&c->mo, c->rows, rows);
  return 0;
}

/* Second moments of the value x (n channels) over the calibration samples, through the model as it is. */
static int collect_moments(const op_analysis *a, const op_prune_config *c, const char *x, int64_t n, const char *label,
                           op_recon_moments *mo, op_error *err) {
  prefix_model pm;
  prefix_init(&pm, a, x);
  collect col = {.model = a->model->path, .value = x};
  op_recon_moments_init(&col.mo, n);
  op_session *s = op_session_new(&pm.m, err);
  int64_t first = 0, total = s ? op_sample_window(c->data, s, 0, c->samples, &first, err) : -1;
  int rc = total < 0 ? -1
                     : op_stream(s, c->data, first, total, c->batch, NULL, NULL, false, collect_batch, &col, c->progress,
                                 label, err);
  op_session_free(s);
  free(pm.g.node);
  free(col.rows);
  if (rc) op_recon_moments_free(&col.mo);
  else *mo = col.mo;
  return rc;
}

/* ---- one block ---- */

typedef struct block_ref {
  int layer, node;
  bool attn;
} block_ref;

static int cmp_blocks(const void *x, const void *y) {
  const block_ref *a = x, *b = y;
  return (a->node > b->node) - (a->node < b->node);
}

/* Ranks the block's units by OBS on mo and chooses the block again from those scores. */
static int rank_block(const op_analysis *a, const op_prune_config *c, op_plan *plan, const block_ref *br,
                      const op_recon_moments *mo, const double *W, const op_proj *p, double damp, op_error *err) {
  op_layer_plan *lp = &plan->layers[br->layer];
  const op_attn *at = br->attn ? op_layer_attn(a, br->layer) : NULL;
  int64_t n = p->in, *unit_of = op_xmalloc((size_t)n * sizeof *unit_of);
  int rc = 0;
  if (at) {
    for (int64_t ch = 0; ch < n; ch++) unit_of[ch] = ch / at->head_dim;
    rc = op_recon_rank(mo, W, p->out, unit_of, at->heads, at->heads - op_plan_kept(lp->keep_head, at->heads), damp,
                       lp->head_score, err);
    if (!rc && at->kv_heads != at->heads) {
      for (int64_t ch = 0; ch < n; ch++) unit_of[ch] = op_attn_kv_of(at, ch / at->head_dim);
      rc = op_recon_rank(mo, W, p->out, unit_of, at->kv_heads, at->kv_heads - op_plan_kept(lp->keep_kv, at->kv_heads),
                         damp, lp->kv_score, err);
    }
  } else {
    for (int64_t ch = 0; ch < n; ch++) unit_of[ch] = ch;
    rc = op_recon_rank(mo, W, p->out, unit_of, n, n - op_plan_kept(lp->keep_neuron, n), damp, lp->neuron_score, err);
  }
  free(unit_of);
  if (rc) {
    char why[sizeof err->message];
    snprintf(why, sizeof why, "%s", err->message);
    return op_fail(err, OP_INVALID, "%s: layer %d %s: %s", a->model->path, br->layer, at ? "attention" : "ffn", why);
  }
  return op_plan_reselect(a, c, plan, br->layer, br->attn, err);
}

/* Which input channels of the output projection stay (none when the block goes). */
static void kept_channels(const op_analysis *a, const op_layer_plan *lp, const block_ref *br, int64_t n, bool *keep) {
  const op_attn *at = br->attn ? op_layer_attn(a, br->layer) : NULL;
  bool gone = lp->drop_layer || (br->attn ? lp->drop_attn : lp->drop_ffn);
  for (int64_t ch = 0; ch < n; ch++) {
    if (gone) keep[ch] = false;
    else if (at) keep[ch] = lp->keep_head[ch / at->head_dim] && lp->keep_kv[op_attn_kv_of(at, ch / at->head_dim)];
    else keep[ch] = lp->keep_neuron[ch];
  }
}

static int do_block(op_analysis *a, const op_prune_config *c, op_plan *plan, const block_ref *br, op_error *err) {
  op_layer_plan *lp = &plan->layers[br->layer];
  const op_proj *p = br->attn ? &op_layer_attn(a, br->layer)->out : &op_layer_ffn(a, br->layer)->down;
  bool gone = lp->drop_layer || (br->attn ? lp->drop_attn : lp->drop_ffn);
  int64_t n = p->in, out = p->out, m = n + 1;
  double *W = op_xmalloc((size_t)(m * out) * sizeof *W), *Wn = op_xmalloc((size_t)(m * out) * sizeof *Wn);
  bool *keep = op_xmalloc((size_t)n);
  int rc = load_proj(a, p, W, err);
  if (!rc && gone) { /* a removed block adds nothing to the stream: later blocks calibrate without it */
    memset(Wn, 0, (size_t)(m * out) * sizeof *Wn);
    rc = store_proj(a, p, Wn, err);
    goto done;
  }
  bool recon = c->importance == OP_IMP_RECONSTRUCTION;
  kept_channels(a, lp, br, n, keep);
  int64_t kept = 0;
  for (int64_t ch = 0; ch < n; ch++) kept += keep[ch];
  if (rc || kept == n) goto done; /* nothing to remove in this block: nothing to rank or refit */
  char label[48];
  snprintf(label, sizeof label, "layer %d %s", br->layer, br->attn ? "attention" : "ffn");
  op_recon_moments mo;
  if ((rc = collect_moments(a, c, p->x, n, label, &mo, err))) goto done;
  double damp = op_recon_damp(&mo, RIDGE);
  if (recon && !(rc = rank_block(a, c, plan, br, &mo, W, p, damp, err))) kept_channels(a, lp, br, n, keep);
  bool compensate = c->compensate == 1;
  if (!rc) rc = op_recon_refit(&mo, W, out, keep, compensate, damp, Wn, err);
  if (!rc) rc = store_proj(a, p, Wn, err);
  if (!rc) { /* errors relative to the block's output energy on the calibration rows */
    double energy = op_recon_error(&mo, W, out), *dW = op_xmalloc((size_t)(m * out) * sizeof *dW), dn = 0;
    for (int64_t i = 0; i < m * out; i++) dW[i] = Wn[i] - W[i];
    for (int64_t i = 0; i < n * out; i++) dn += dW[i] * dW[i];
    double predicted = op_recon_error(&mo, dW, out) + damp * dn;
    rc = load_proj(a, p, Wn, err); /* as written, in the weights' own type */
    for (int64_t i = 0; i < m * out; i++) dW[i] = Wn[i] - W[i];
    double measured = rc ? 0 : op_recon_error(&mo, dW, out);
    free(dW);
    double *pr = br->attn ? &lp->attn_predicted_error : &lp->ffn_predicted_error;
    double *me = br->attn ? &lp->attn_measured_error : &lp->ffn_measured_error;
    *pr = energy > 0 ? predicted / energy : 0;
    *me = energy > 0 ? measured / energy : 0;
  }
  op_recon_moments_free(&mo);
done:
  free(W);
  free(Wn);
  free(keep);
  return rc;
}

int op_recon_run(op_analysis *a, const op_prune_config *c, op_plan *plan, op_error *err) {
  if (!c->data)
    return op_fail(err, OP_ARG, "importance %s needs calibration data (--data PATH)",
                   c->importance == OP_IMP_RECONSTRUCTION ? "reconstruction" : "compensation");
  OP_VEC(block_ref) blocks = {0};
  for (size_t l = 0; l < plan->n; l++) {
    plan->layers[l].attn_predicted_error = plan->layers[l].attn_measured_error = -1;
    plan->layers[l].ffn_predicted_error = plan->layers[l].ffn_measured_error = -1;
    const op_attn *at = op_layer_attn(a, (int)l);
    const op_ffn *f = op_layer_ffn(a, (int)l);
    if (at) OP_VEC_PUSH(blocks, ((block_ref){(int)l, at->out.node, true}));
    if (f) OP_VEC_PUSH(blocks, ((block_ref){(int)l, f->down.node, false}));
  }
  if (blocks.n) qsort(blocks.v, blocks.n, sizeof *blocks.v, cmp_blocks);
  int rc = 0;
  for (size_t i = 0; i < blocks.n && !rc; i++) rc = do_block(a, c, plan, &blocks.v[i], err);
  free(blocks.v);
  return rc;
}
