/* sequential.c - pruning by reconstruction, block after block: each block's output-projection input is
 * collected on the calibration data through the model as pruned so far (a pass of chain.c, streamed
 * batch by batch, that starts where the previous block's stopped), its units ranked (recon.c) and its
 * output projection refit in place, its removed rows zeroed so later blocks see what the pruned model
 * computes. The rewrite then slices what the plan removes, as for any importance. */
#include "prune/recon.h"
#include "exec/exec.h"
#include "prune/chain.h"

#include <cblas.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RIDGE 1e-2 /* x the mean diagonal of H: enough for the rank-deficient H of padded or dead channels */
/* an output head sees one row per sample (a pooled token), not one per token: few rows for its inputs, so
 * it is held closer to its own weights (measured: 1 did better than 1e-2 and 1e-1 on austen_bert) */
#define HEAD_RIDGE 1.0

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

/* The output projections edited so far: their original bytes stay alive beside the new ones, so a
 * session over the dense model can be made at any time (swap_weights), and the model gets the new bytes
 * for good at the end (keep_weights) or its own back on failure. */
typedef struct tracked {
  Onnx__TensorProto *t;
  const char *value; /* the value nodes read it as: an initializer, or a Constant node's output */
  uint8_t *orig, *cur;
  size_t orig_len, cur_len;
  bool fresh; /* edited since the last pass through the pruned model */
} tracked;
/* The edits, and the two chains of calibration passes (chain.h): through the model as pruned so far
 * (cur) and through the dense one. */
typedef struct tracked_vec {
  tracked *v;
  size_t n, cap;
  op_chain *cur, *dense;
} tracked_vec;

static void swap_weights(tracked_vec *tv, bool dense) {
  for (size_t i = 0; i < tv->n; i++) {
    tv->v[i].t->raw_data.data = dense ? tv->v[i].orig : tv->v[i].cur;
    tv->v[i].t->raw_data.len = dense ? tv->v[i].orig_len : tv->v[i].cur_len;
  }
}

static void keep_weights(tracked_vec *tv, bool keep) {
  swap_weights(tv, true);
  for (size_t i = 0; i < tv->n; i++) {
    Onnx__TensorProto *t = tv->v[i].t;
    int64_t dims[2] = {t->n_dims > 0 ? t->dims[0] : 0, t->n_dims > 1 ? t->dims[1] : 0};
    if (keep) op_tensor_replace(t, dims, t->n_dims, tv->v[i].cur, tv->v[i].cur_len);
    else free(tv->v[i].cur);
  }
  free(tv->v);
  tv->v = NULL;
  tv->n = tv->cap = 0;
}

/* The names of the tensors edited since the last call (a pass through the pruned model). */
static size_t fresh_edits(tracked_vec *tv, const char **names) {
  size_t k = 0;
  for (size_t i = 0; i < tv->n; i++)
    if (tv->v[i].fresh) names[k++] = tv->v[i].value, tv->v[i].fresh = false;
  return k;
}

/* Gives tensor t (read as value) the bytes data (owned by tv from now on). */
static void set_bytes(tracked_vec *tv, Onnx__TensorProto *t, const char *value, uint8_t *data, size_t len) {
  tracked *e = NULL;
  for (size_t i = 0; i < tv->n && !e; i++)
    if (tv->v[i].t == t) e = &tv->v[i];
  if (!e) {
    OP_VEC_PUSH(*tv, ((tracked){t, value, t->raw_data.data, NULL, t->raw_data.len, 0, false}));
    e = &tv->v[tv->n - 1];
  }
  e->fresh = true;
  free(e->cur);
  e->cur = data;
  e->cur_len = len;
  t->raw_data.data = data;
  t->raw_data.len = len;
}

/* Writes W back in the tensors' own types and layouts, into new buffers. */
static int store_proj(const op_analysis *a, const op_proj *p, const double *W, tracked_vec *tv, op_error *err) {
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
  set_bytes(tv, w, p->w, nw, (size_t)(in * out) * es);
  if (b) {
    size_t bes = op_dtype_size(b->data_type);
    uint8_t *nb = op_xmalloc((size_t)out * bes + 1);
    for (int64_t j = 0; j < out; j++) elem_set(nb + (size_t)j * bes, b->data_type, W[in * out + j]);
    set_bytes(tv, b, p->b, nb, (size_t)out * bes);
  }
  return 0;
}

/* ---- biases where there are none ---- */

/* The type the product is computed in: the stored weight's, or what a Cast on its way turns it into
 * (float16 weights behind a Cast to float). */
static int32_t compute_dtype(const op_graph *gr, const Onnx__NodeProto *n, int32_t stored) {
  const char *v = n->input[1];
  for (int hops = 0; hops < 8; hops++) {
    const Onnx__NodeProto *pn = op_graph_producer(gr, v);
    if (!pn || pn->n_input < 1) break;
    if (op_node_is(pn, "Cast")) return (int32_t)op_node_attr_int(pn, "to", stored);
    if (!op_node_is(pn, "Identity") && !op_node_is(pn, "Transpose")) break;
    v = pn->input[0];
  }
  return stored;
}

/* y = MatMul(x, W) becomes t = MatMul(x, W); y = Add(t, zeros): every consumer still reads y. Gemm gets C. */
static int add_bias(op_graph *gr, const op_proj *p, const char *model, op_error *err) {
  Onnx__GraphProto *g = gr->g;
  Onnx__NodeProto *n = g->node[p->node];
  int64_t dims[1] = {p->out};
  char base[64];
  snprintf(base, sizeof base, "%.40s_bias", op_node_name(n));
  int32_t dt = compute_dtype(gr, n, p->dtype);
  if (!op_weight_dtype_ok(dt))
    return op_fail(err, OP_UNSUPPORTED, "%s: node '%s': computes in %s: no bias of that type to compensate into (use "
                   "--no-compensate)", model, op_node_name(n), op_dtype_name(dt));
  const char *bname = op_graph_add_init(gr, op_tensor_new(base, dt, dims, 1));
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

int op_recon_add_biases(op_model *m, const op_analysis *a, const op_prune_config *c, const op_plan *plan,
                        op_error *err) {
  op_graph *gr = op_graph_build(m->proto->graph);
  int added = 0, rc = 0;
  bool any = op_recon_alloc_applies(a, c); /* the counts are allocated again later: any block may lose units */
  for (size_t l = 0; l < plan->n && !rc; l++) {
    const op_layer_plan *lp = &plan->layers[l];
    const op_attn *at = op_layer_attn(a, (int)l);
    const op_ffn *f = op_layer_ffn(a, (int)l);
    if (lp->drop_layer) continue;
    if (at && !lp->drop_attn && !at->out.b && (any || op_plan_kept(lp->keep_head, lp->heads) < lp->heads))
      rc = add_bias(gr, &at->out, m->path, err), added++;
    if (!rc && f && !lp->drop_ffn && !f->down.b && (any || op_plan_kept(lp->keep_neuron, lp->width) < lp->width))
      rc = add_bias(gr, &f->down, m->path, err), added++;
  }
  op_graph_free(gr);
  if (rc) return -1;
  if (added && op_graph_toposort(m->proto->graph))
    return op_fail(err, OP_INVALID, "%s: the graph cannot be ordered after adding biases", m->path);
  return added;
}

/* ---- collecting a projection's input ---- */

/* Float32 rows of a float tensor whose last axis has `width` channels; NULL with *err otherwise. */
static float *float_rows(const op_tensor *t, int64_t width, int64_t *rows, float **buf, size_t *cap, const char *model,
                         const char *name, op_error *err) {
  size_t es = op_dtype_size(t->dtype);
  if (!t->rank || t->dims[t->rank - 1] != width || !es || !op_weight_dtype_ok(t->dtype))
    return op_fail_null(err, OP_UNSUPPORTED, "%s: '%s': expected a float tensor of %lld channels on its last axis",
                        model, name, (long long)width);
  int64_t numel = (int64_t)(t->nbytes / es);
  if ((size_t)numel > *cap) *buf = op_xrealloc(*buf, (size_t)numel * sizeof **buf), *cap = (size_t)numel;
  for (int64_t i = 0; i < numel; i++) (*buf)[i] = (float)elem_get((const uint8_t *)t->data + (size_t)i * es, t->dtype);
  *rows = numel / (width ? width : 1);
  return *buf;
}

/* Calibration statistics of a block's output projection: H of its input x through the model as pruned
 * so far, and, when blocks before it changed, C and yy against a target taken from the dense model:
 * what the block must add to the residual stream as it now arrives (s) for the stream to be the dense
 * one after it (dense residual sum - s), so the block also takes back the error of the blocks before
 * it; or, when the projection does not feed the residual Add directly, its dense output. The fields
 * allow a few projections that share x (one pass); the pass uses one. */
#define TARGETS_MAX 3
typedef struct collect {
  op_recon_moments mo;
  int nt;
  double *C[TARGETS_MAX], yy[TARGETS_MAX];
  int64_t out[TARGETS_MAX];
  const char *yname[TARGETS_MAX];
  op_chain *dense; /* the pass through the dense model, in step; NULL: the model before x is still dense */
  tracked_vec *tv;
  float *x, *y, *st;
  size_t xcap, ycap, scap;
  const char *model, *xname, *sname; /* sname: the stream s, or NULL */
  const char *ename; /* a value whose energy (sum of squares) is summed into ee, or NULL (curve pass) */
  double ee;
  /* pooled rows (pooled.c): only x's rows at the pooled positions count; outputs[iy] is the projection's
   * output in x's row order, outputs[iz] the same values as the residual Add reads them (stream order) */
  const op_pooling *pool;
  int iy, iz;
  int64_t pout, pooled_rows;
  bool *mask, *in_set;
  size_t mcap;
} collect;

static int rows_agree(const collect *c, const char *name, int64_t got, int64_t rows, op_error *err) {
  if (got == rows) return 0;
  return op_fail(err, OP_UNSUPPORTED, "%s: '%s' has %lld rows where '%s' has %lld", c->model, name, (long long)got,
                 c->xname, (long long)rows);
}

/* Keeps the rows of buf ([rows, width]) where mask is set, in order; returns how many. */
static int64_t keep_rows(float *buf, int64_t width, const bool *mask, int64_t rows) {
  int64_t k = 0;
  for (int64_t r = 0; r < rows; r++)
    if (mask[r]) memmove(buf + k * width, buf + r * width, (size_t)width * sizeof *buf), k++;
  return k;
}

/* c->mask over x's rows: those at pooled positions, found by their projection outputs' bytes. */
static int pooled_mask(collect *c, const op_tensor *outputs, int64_t rows, op_error *err) {
  const op_tensor *ty = &outputs[c->iy], *tz = &outputs[c->iz];
  size_t es = op_dtype_size(ty->dtype), rb = es * (size_t)c->pout;
  if (!es || ty->dtype != tz->dtype || ty->nbytes != tz->nbytes || tz->rank < 2 || tz->dims[tz->rank - 1] != c->pout ||
      ty->nbytes != rb * (size_t)rows)
    return op_fail(err, OP_UNSUPPORTED, "%s: '%s': its rows cannot be matched to the stream's pooled positions",
                   c->model, c->xname);
  if ((size_t)rows > c->mcap) {
    c->mask = op_xrealloc(c->mask, (size_t)rows), c->in_set = op_xrealloc(c->in_set, (size_t)rows);
    c->mcap = (size_t)rows;
  }
  bool token_axis = c->pool->axis < tz->rank - 1; /* a Gather of channels is no pooling: every row counts */
  for (int64_t r = 0; r < rows; r++) c->in_set[r] = !token_axis || op_pooling_row(c->pool, tz->dims, tz->rank, r);
  int64_t hits = 0;
  if (c->iy == c->iz) /* the projection feeds the residual Add as it is: same rows */
    for (int64_t r = 0; r < rows; r++) hits += c->mask[r] = c->in_set[r];
  else hits = op_rows_in(ty->data, rows, tz->data, c->in_set, rows, rb, c->mask);
  if (hits == 0)
    return op_fail(err, OP_UNSUPPORTED, "%s: '%s': no row found at the pooled positions", c->model, c->xname);
  c->pooled_rows += hits;
  return 0;
}

static int collect_batch(void *user, const op_tensor *outputs, int64_t count, op_error *err) {
  collect *c = user;
  int64_t rows, yrows, all_rows;
  if (!float_rows(&outputs[0], c->mo.n, &rows, &c->x, &c->xcap, c->model, c->xname, err)) return -1;
  all_rows = rows;
  if (c->pool) {
    if (pooled_mask(c, outputs, rows, err)) return -1;
    rows = keep_rows(c->x, c->mo.n, c->mask, rows);
  }
  op_recon_moments_add(&c->mo, c->x, rows);
  if (c->ename) {
    const op_tensor *e = &outputs[1];
    size_t es = op_dtype_size(e->dtype);
    if (!es || !op_weight_dtype_ok(e->dtype) || e->rank < 1)
      return op_fail(err, OP_UNSUPPORTED, "%s: '%s': expected a float tensor", c->model, c->ename);
    int64_t width = e->dims[e->rank - 1] > 0 ? e->dims[e->rank - 1] : 1;
    for (size_t i = 0; i < e->nbytes / es; i++) {
      if (c->pool && c->pool->axis < e->rank - 1 && !op_pooling_row(c->pool, e->dims, e->rank, (int64_t)i / width))
        continue;
      double v = elem_get((const uint8_t *)e->data + i * es, e->dtype);
      c->ee += v * v;
    }
  }
  if (!c->dense) return 0;
  op_tensor y[TARGETS_MAX] = {{0}};
  int64_t dcount = 0;
  swap_weights(c->tv, true); /* a Constant node's weight is read when it runs, not when its session is made */
  int rc = op_chain_next(c->dense, y, &dcount, err);
  swap_weights(c->tv, false);
  if (rc >= 0 && (rc == 0 || dcount != count))
    rc = op_fail(err, OP_INVALID, "%s: the dense model's pass fell out of step with the pruned one's", c->model);
  else if (rc > 0) rc = 0;
  for (int k = 0; k < c->nt && !rc; k++) {
    if (!float_rows(&y[k], c->out[k], &yrows, &c->y, &c->ycap, c->model, c->yname[k], err) ||
        rows_agree(c, c->yname[k], yrows, all_rows, err)) {
      rc = -1;
      break;
    }
    if (c->pool) keep_rows(c->y, c->out[k], c->mask, yrows);
    if (c->sname) { /* y -= s: what the block must add */
      int64_t srows;
      if (!float_rows(&outputs[1], c->out[k], &srows, &c->st, &c->scap, c->model, c->sname, err) ||
          rows_agree(c, c->sname, srows, all_rows, err)) {
        rc = -1;
        break;
      }
      if (c->pool) keep_rows(c->st, c->out[k], c->mask, srows);
      for (int64_t i = 0; i < rows * c->out[k]; i++) c->y[i] -= c->st[i];
    }
    op_recon_cross_add(&c->mo, c->C[k], c->out[k], c->x, c->y, rows);
    for (int64_t i = 0; i < rows * c->out[k]; i++) c->yy[k] += (double)c->y[i] * c->y[i];
  }
  for (int k = 0; k < c->nt; k++) op_tensor_clear(&y[k]);
  return rc;
}

static void collect_free(collect *col) {
  op_recon_moments_free(&col->mo);
  for (int k = 0; k < col->nt; k++) free(col->C[k]), col->C[k] = NULL;
}

/* What a pass through the pruned model asks for: x, the stream s or the energy value, and for pooled
 * rows the projection's output as x has its rows and as the residual Add reads them. */
#define PASS_NAMES 4

/* Statistics of the nt projections ps (one input) over the calibration samples; dense targets when tv
 * has edits. b: the block whose output projection ps[0] is (residual target), or NULL. */
static int collect_stats(const op_analysis *a, const op_prune_config *c, const op_proj *const *ps, int nt,
                         const op_block *b, tracked_vec *tv, bool dense_target, bool energy,
                         const op_pooling *pool, const char *label, collect *col, op_error *err) {
  const op_proj *p = ps[0];
  bool dense = dense_target && tv->n > 0;
  /* the residual target needs the projection's output to be one operand of the residual Add */
  const Onnx__NodeProto *ra = b ? a->gr->g->node[b->residual_add] : NULL;
  bool resid = dense && ra && nt == 1 && ra->n_input == 2 && b->stream_in &&
               ((strcmp(ra->input[0], p->y) == 0 && strcmp(ra->input[1], b->stream_in) == 0) ||
                (strcmp(ra->input[1], p->y) == 0 && strcmp(ra->input[0], b->stream_in) == 0));
  memset(col, 0, sizeof *col);
  col->nt = nt;
  col->model = a->model->path;
  col->xname = p->x;
  col->sname = resid ? b->stream_in : NULL;
  for (int k = 0; k < nt; k++) col->out[k] = ps[k]->out, col->yname[k] = resid ? ra->output[0] : ps[k]->y;
  /* energy: of the stream after the block (its residual sum), the scale its output error is judged on */
  col->ename = energy && !dense && ra ? ra->output[0] : NULL;
  const char *cur_names[PASS_NAMES] = {p->x, resid ? col->sname : col->ename};
  size_t n_names = resid || col->ename ? 2 : 1;
  /* pooled rows: the projection's output as x has its rows and as the residual Add reads them */
  const char *z = !pool || !ra || nt != 1 || ra->n_input != 2 || !b->stream_in ? NULL
                  : strcmp(ra->input[0], b->stream_in) == 0 ? ra->input[1]
                  : strcmp(ra->input[1], b->stream_in) == 0 ? ra->input[0] : NULL;
  if (z) {
    col->pool = pool;
    col->pout = p->out;
    col->iy = (int)n_names;
    cur_names[n_names++] = p->y;
    col->iz = col->iy;
    if (strcmp(z, p->y) != 0) col->iz = (int)n_names, cur_names[n_names++] = z;
  }
  op_recon_moments_init(&col->mo, p->in);
  char what[600]; /* memory budget: H lives beside the passes' values */
  snprintf(what, sizeof what, "%.300s: reconstruction moments of '%.200s'", col->model, p->x);
  int rc = op_recon_moments_budget(&col->mo, what, err);
  if (!rc) {
    const char **ed = op_xmalloc((tv->n + 1) * sizeof *ed);
    size_t n_ed = fresh_edits(tv, ed);
    rc = op_chain_open(tv->cur, cur_names, n_names, ed, n_ed, c->progress, label, err);
    free(ed);
  }
  if (!rc && dense) { /* the dense model's weights while its session is made */
    swap_weights(tv, true);
    rc = op_chain_open(tv->dense, col->yname, (size_t)nt, NULL, 0, false, NULL, err);
    swap_weights(tv, false);
    col->dense = rc ? NULL : tv->dense;
    col->tv = tv;
    for (int k = 0; k < nt && !rc; k++) col->C[k] = op_xcalloc((size_t)((p->in + 1) * col->out[k]), sizeof(double));
  }
  int64_t total = op_chain_samples(tv->cur);
  /* pooled rows only when there are at least as many as the refit's unknowns per output (p->in): fewer
   * leave the least squares to the ridge alone, and the refit fits those few rows and little else (a
   * ViT calibrated on 32 samples lost 22 points in ONNX Runtime's int8 that way) */
  if (col->pool && total * (int64_t)col->pool->n_idx < p->in) col->pool = NULL;
  op_tensor outs[PASS_NAMES] = {{0}};
  int64_t count = 0;
  for (int r = 1; !rc && r > 0;) {
    r = op_chain_next(tv->cur, outs, &count, err);
    if (r > 0) rc = collect_batch(col, outs, count, err);
    else if (r < 0) rc = -1;
    for (size_t i = 0; i < n_names; i++) op_tensor_clear(&outs[i]);
  }
  op_chain_close(tv->cur, rc == 0);
  if (col->dense) op_chain_close(tv->dense, rc == 0);
  col->dense = NULL;
  free(col->x);
  free(col->y);
  free(col->st);
  free(col->mask);
  free(col->in_set);
  if (rc) collect_free(col);
  return rc;
}

/* ---- one block ---- */

/* A block, by its layer and kind, with its output projection's node (for the order). */
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
    int64_t vd = op_attn_v_head_dim(at); /* the output projection reads V's heads, which may be wider */
    for (int64_t ch = 0; ch < n; ch++) unit_of[ch] = ch / vd;
    rc = op_recon_rank(mo, W, p->out, unit_of, at->heads, at->heads - op_plan_kept(lp->keep_head, at->heads), damp,
                       lp->head_score, err);
    if (!rc && at->kv_heads != at->heads) {
      for (int64_t ch = 0; ch < n; ch++) unit_of[ch] = op_attn_kv_of(at, ch / vd);
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
    else if (at)
      keep[ch] = lp->keep_head[ch / op_attn_v_head_dim(at)] && lp->keep_kv[op_attn_kv_of(at, ch / op_attn_v_head_dim(at))];
    else keep[ch] = lp->keep_neuron[ch];
  }
}

static int do_block(op_analysis *a, const op_prune_config *c, op_plan *plan, const block_ref *br, tracked_vec *tv,
                    const op_pooling *pool, op_error *err) {
  op_layer_plan *lp = &plan->layers[br->layer];
  const op_proj *p = br->attn ? &op_layer_attn(a, br->layer)->out : &op_layer_ffn(a, br->layer)->down;
  bool gone = lp->drop_layer || (br->attn ? lp->drop_attn : lp->drop_ffn);
  int64_t n = p->in, out = p->out, m = n + 1;
  size_t wbytes = (size_t)(m * out) * sizeof(double);
  double *W = op_xmalloc(wbytes), *Wn = op_xcalloc(1, wbytes), *Ws = NULL;
  bool *keep = op_xmalloc((size_t)n);
  int rc = load_proj(a, p, W, err);
  if (!rc && gone) { /* a removed block adds nothing to the stream: later blocks calibrate without it */
    rc = store_proj(a, p, Wn, tv, err);
    goto done;
  }
  bool recon = c->importance == OP_IMP_RECONSTRUCTION, compensate = c->compensate == 1;
  kept_channels(a, lp, br, n, keep);
  int64_t kept = 0;
  for (int64_t ch = 0; ch < n; ch++) kept += keep[ch];
  if (rc || kept == n) goto done; /* nothing to remove in this block: nothing to rank or refit */
  char label[48];
  snprintf(label, sizeof label, "layer %d %s", br->layer, br->attn ? "attention" : "ffn");
  collect col;
  const op_layer *L = &a->layers.v[br->layer];
  int bi = br->attn ? L->attn_block : L->ffn_block;
  if ((rc = collect_stats(a, c, &p, 1, bi >= 0 ? &a->blocks.v[bi] : NULL, tv, compensate, false, pool, label, &col, err)))
    goto done;
  const op_recon_moments *mo = &col.mo;
  double damp = op_recon_damp(mo, RIDGE);
  if (!col.C[0]) { /* the input is the dense model's: the target is x W */
    col.C[0] = op_xmalloc(wbytes);
    cblas_dsymm(CblasRowMajor, CblasLeft, CblasLower, (blasint)m, (blasint)out, 1.0, mo->H, (blasint)m, W, (blasint)out,
                0.0, col.C[0], (blasint)out);
    col.yy[0] = 0;
    for (int64_t i = 0; i < m * out; i++) col.yy[0] += W[i] * col.C[0][i];
  }
  /* the best weights for the target with every channel, from which units are removed and the rest refit */
  Ws = op_xmalloc(wbytes);
  if (compensate) rc = op_recon_fit(mo, col.C[0], W, out, damp, true, Ws, err);
  else memcpy(Ws, W, wbytes);
  if (!rc && recon && !(rc = rank_block(a, c, plan, br, mo, Ws, p, damp, err))) kept_channels(a, lp, br, n, keep);
  if (!rc) rc = op_recon_refit(mo, Ws, out, keep, compensate, damp, Wn, err);
  if (!rc) rc = store_proj(a, p, Wn, tv, err);
  if (!rc) { /* errors against the target, relative to its energy on the calibration rows */
    double *dW = op_xmalloc(wbytes), dn = 0;
    for (int64_t i = 0; i < m * out; i++) dW[i] = Wn[i] - Ws[i];
    for (int64_t i = 0; i < n * out; i++) dn += dW[i] * dW[i];
    double predicted = op_recon_residual(mo, col.C[0], col.yy[0], Ws, out) + op_recon_error(mo, dW, out) + damp * dn;
    free(dW);
    rc = load_proj(a, p, Wn, err); /* as written, in the weights' own type */
    double measured = rc ? 0 : op_recon_residual(mo, col.C[0], col.yy[0], Wn, out), yy = col.yy[0];
    *(br->attn ? &lp->attn_predicted_error : &lp->ffn_predicted_error) = yy > 0 ? predicted / yy : 0;
    *(br->attn ? &lp->attn_measured_error : &lp->ffn_measured_error) = yy > 0 ? measured / yy : 0;
  }
  collect_free(&col);
done:
  free(W);
  free(Wn);
  free(Ws);
  free(keep);
  return rc;
}

/* ---- output-head compensation ---- */

/* After the last block: each product that produces a graph output (a classifier) is refit by least
 * squares, ridge towards its own weights, to the dense model's output on the calibration rows, its input
 * coming from the pruned model; it is kept only when it lowers that error. What was found and why a head
 * was left alone goes to plan->out_heads for the report. */
static int refit_output_head(op_analysis *a, const op_prune_config *c, op_output_head *h, tracked_vec *tv,
                             op_error *err) {
  const op_proj *p = &h->p;
  int64_t m = p->in + 1, out = p->out;
  size_t wbytes = (size_t)(m * out) * sizeof(double);
  double *W = op_xmalloc(wbytes), *Ws = op_xmalloc(wbytes);
  collect col;
  int rc = load_proj(a, p, W, err);
  if (!rc) rc = collect_stats(a, c, &p, 1, NULL, tv, true, false, NULL, "output head", &col, err);
  if (rc) goto done;
  double damp = op_recon_damp(&col.mo, HEAD_RIDGE), yy = col.yy[0];
  rc = op_recon_fit(&col.mo, col.C[0], W, out, damp, p->b != NULL, Ws, err);
  if (!rc) {
    double before = op_recon_residual(&col.mo, col.C[0], yy, W, out);
    double after = op_recon_residual(&col.mo, col.C[0], yy, Ws, out);
    h->error_before = yy > 0 ? before / yy : 0;
    h->error_after = h->error_before;
    if (after < before && !(rc = store_proj(a, p, Ws, tv, err)) && !(rc = load_proj(a, p, Ws, err)))
      h->error_after = yy > 0 ? op_recon_residual(&col.mo, col.C[0], yy, Ws, out) / yy : 0; /* as written */
    else if (!rc) h->skip = "the refit did not lower its error on the calibration rows";
  }
  collect_free(&col);
done:
  free(W);
  free(Ws);
  return rc;
}

static int refit_output_heads(op_analysis *a, const op_prune_config *c, op_plan *plan, tracked_vec *tv,
                              op_error *err) {
  if (c->compensate != 1 || tv->n == 0) return 0; /* nothing changed before the heads: they are exact */
  plan->n_out_heads = op_output_heads_find(a, &plan->out_heads);
  int rc = 0;
  for (size_t i = 0; i < plan->n_out_heads && !rc; i++)
    if (!plan->out_heads[i].skip) rc = refit_output_head(a, c, &plan->out_heads[i], tv, err);
  if (rc) {
    char why[sizeof err->message];
    snprintf(why, sizeof why, "%s", err->message);
    return op_fail(err, err->code, "%s: output head '%s': %s", a->model->path,
                   op_node_name(a->gr->g->node[plan->out_heads[0].p.node]), why);
  }
  return 0;
}

/* ---- error curves for the allocation (recon_alloc.c) ---- */

/* Every block's units ranked by OBS on the dense model, all the way: its scores become the predicted
 * error of the block once each unit and those below it are gone, the curve op_recon_alloc_apply reads. */
static int curve_block(op_analysis *a, const op_prune_config *c, op_plan *plan, const block_ref *br, tracked_vec *tv,
                       const op_pooling *pool, op_error *err) {
  op_layer_plan *lp = &plan->layers[br->layer];
  const op_attn *at = br->attn ? op_layer_attn(a, br->layer) : NULL;
  const op_proj *p = at ? &at->out : &op_layer_ffn(a, br->layer)->down;
  if (lp->drop_layer || (at ? lp->drop_attn : lp->drop_ffn)) return 0;
  int64_t n = p->in, units = at ? at->heads : n, m = n + 1;
  double *W = op_xmalloc((size_t)(m * p->out) * sizeof *W);
  int64_t *unit_of = op_xmalloc((size_t)n * sizeof *unit_of);
  for (int64_t ch = 0; ch < n; ch++) unit_of[ch] = at ? ch / op_attn_v_head_dim(at) : ch;
  char label[48];
  snprintf(label, sizeof label, "layer %d %s curve", br->layer, at ? "attention" : "ffn");
  collect col;
  const op_layer *L = &a->layers.v[br->layer];
  int bi = br->attn ? L->attn_block : L->ffn_block;
  double *score = at ? lp->head_score : lp->neuron_score;
  int rc = load_proj(a, p, W, err);
  if (!rc && !(rc = collect_stats(a, c, &p, 1, bi >= 0 ? &a->blocks.v[bi] : NULL, tv, false, true, pool, label, &col, err))) {
    rc = op_recon_rank(&col.mo, W, p->out, unit_of, units, units - 1, op_recon_damp(&col.mo, RIDGE), score, err);
    /* relative to the stream it lands in: blocks compare across layers whatever the stream's scale there */
    for (int64_t u = 0; !rc && col.ee > 0 && u < units; u++) score[u] /= col.ee;
    collect_free(&col);
  }
  free(W);
  free(unit_of);
  return rc;
}

static int curve_scores(op_analysis *a, const op_prune_config *c, op_plan *plan, const block_ref *blocks, size_t nb,
                        tracked_vec *tv, const op_pooling *pool, size_t first_pooled, op_error *err) {
  /* counts fixed by the allocation search (alloc_search.c) need no curves: which units go is ranked later */
  for (size_t i = 0; i < nb && !c->fixed_removed; i++)
    if (curve_block(a, c, plan, &blocks[i], tv, i >= first_pooled ? pool : NULL, err)) {
      char why[sizeof err->message];
      snprintf(why, sizeof why, "%s", err->message);
      return op_fail(err, OP_INVALID, "%s: layer %d %s: %s", a->model->path, blocks[i].layer,
                     blocks[i].attn ? "attention" : "ffn", why);
    }
  op_recon_alloc_apply(a, c, plan);
  return 0;
}

/* Blocks from the last attention on (in stream order) add to a stream the outputs read at pooled
 * positions only, when the model pools (pooled.c): their index, or nb when none is pooled. */
static size_t pooled_from(const op_analysis *a, const block_ref *blocks, size_t nb, op_pooling *pl) {
  if (!nb) return nb;
  const op_layer *L = &a->layers.v[blocks[nb - 1].layer];
  int bi = blocks[nb - 1].attn ? L->attn_block : L->ffn_block;
  if (bi < 0 || !a->blocks.v[bi].add_out || !op_pooling_find(a, a->blocks.v[bi].add_out, pl)) return nb;
  size_t first = nb;
  for (size_t i = nb; i-- > 0 && first == nb;)
    if (blocks[i].attn) first = i;
  if (first == nb) op_pooling_free(pl);
  return first;
}

/* The two chains of passes, with every value a pass may ask for: each block's projection input and
 * output, the stream it adds to and the sum, and the output heads' input and output. */
static int open_chains(const op_analysis *a, const op_prune_config *c, const block_ref *blocks, size_t nb,
                       tracked_vec *tv, op_error *err) {
  op_output_head *heads = NULL;
  size_t nh = op_output_heads_find(a, &heads), n = 0;
  const char **t = op_xmalloc((4 * nb + 2 * nh + 1) * sizeof *t);
  for (size_t i = 0; i < nb; i++) {
    const op_layer *L = &a->layers.v[blocks[i].layer];
    int bi = blocks[i].attn ? L->attn_block : L->ffn_block;
    const op_proj *p = blocks[i].attn ? &op_layer_attn(a, blocks[i].layer)->out : &op_layer_ffn(a, blocks[i].layer)->down;
    t[n++] = p->x, t[n++] = p->y;
    if (bi >= 0 && a->blocks.v[bi].stream_in) t[n++] = a->blocks.v[bi].stream_in;
    if (bi >= 0) t[n++] = a->gr->g->node[a->blocks.v[bi].residual_add]->output[0];
  }
  for (size_t h = 0; h < nh; h++)
    if (heads[h].p.node >= 0) t[n++] = heads[h].p.x, t[n++] = heads[h].p.y;
  tv->cur = op_chain_new(a->model, a->gr, c->data, c->samples, c->batch, t, n, c->progress, err);
  tv->dense = tv->cur ? op_chain_new(a->model, a->gr, c->data, c->samples, c->batch, t, n, c->progress, err) : NULL;
  free(t);
  free(heads);
  return tv->dense ? 0 : -1;
}

int op_recon_run(op_analysis *a, const op_prune_config *c, op_plan *plan, op_error *err) {
  if (!c->data)
    return op_fail(err, OP_ARG, "importance %s needs calibration data (--data PATH)",
                   c->importance == OP_IMP_RECONSTRUCTION ? "reconstruction" : "compensation");
  if (c->global && c->importance == OP_IMP_RECONSTRUCTION && !op_recon_alloc_applies(a, c))
    return op_fail(err, OP_ARG, "%s: scope global with importance reconstruction allocates counts from error curves, "
                   "which grouped-query and cross-attention layers do not have yet: use scope layer", a->model->path);
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
  tracked_vec tv = {0};
  int rc = open_chains(a, c, blocks.v, blocks.n, &tv, err);
  op_pooling pl = {0};
  size_t first_pooled = pooled_from(a, blocks.v, blocks.n, &pl);
  if (!rc && op_recon_alloc_applies(a, c)) rc = curve_scores(a, c, plan, blocks.v, blocks.n, &tv, &pl, first_pooled, err);
  for (size_t i = 0; i < blocks.n && !rc; i++) rc = do_block(a, c, plan, &blocks.v[i], &tv, i >= first_pooled ? &pl : NULL, err);
  op_pooling_free(&pl);
  if (!rc) rc = refit_output_heads(a, c, plan, &tv, err);
  op_chain_free(tv.cur);
  op_chain_free(tv.dense);
  keep_weights(&tv, rc == 0);
  free(blocks.v);
  return rc;
}
