/* rewrite.c - applies a plan: slices projection weights and biases to the kept heads / neurons,
 * rewrites the shape constants that carry the head count, bypasses removed blocks and layers,
 * then removes what became dead. Every weight edit is recorded for the report. */
#include "parallel/parallel.h"
#include "prune/prune.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* name: the stored weight as the projection names it (a Constant node's tensor has no name of its own). */
static void record(op_prune_report *r, int layer, const char *name, const Onnx__TensorProto *t, const int64_t *after) {
  op_tensor_change ch = {.layer = layer, .name = op_xstrdup(name), .rank = (int)t->n_dims};
  for (size_t i = 0; i < t->n_dims && i < 2; i++) {
    ch.before[i] = t->dims[i];
    ch.after[i] = after ? after[i] : -1;
  }
  OP_VEC_PUSH(r->changes, ch);
}

/* Copies the kept channels of one row: keep is increasing, so runs of consecutive channels (a head's
 * d columns) go in one memcpy. Bytes, not floats: the source may be borrowed and unaligned. */
static void gather_row(uint8_t *dst, const uint8_t *src, const int64_t *keep, int64_t nk, size_t es) {
  for (int64_t k = 0; k < nk;) {
    int64_t run = 1;
    while (k + run < nk && keep[k + run] == keep[k] + run) run++;
    if (run < 4 && es == 4) /* scattered neurons: a fixed-size copy compiles to one move */
      for (int64_t j = 0; j < run; j++) memcpy(dst + (size_t)(k + j) * 4, src + (size_t)(keep[k] + j) * 4, 4);
    else
      memcpy(dst + (size_t)k * es, src + (size_t)keep[k] * es, (size_t)run * es);
    k += run;
  }
}

/* One weight slice: keep the listed rows, or in every row the listed columns. */
typedef struct slice_job {
  uint8_t *dst;
  const uint8_t *src;
  const int64_t *keep;
  int64_t nk;
  size_t row_bytes, es;
} slice_job;

static void keep_rows(void *ctx, int64_t lo, int64_t hi) {
  const slice_job *j = ctx;
  for (int64_t k = lo; k < hi; k++)
    memcpy(j->dst + (size_t)k * j->row_bytes, j->src + (size_t)j->keep[k] * j->row_bytes, j->row_bytes);
}

static void keep_cols(void *ctx, int64_t lo, int64_t hi) {
  const slice_job *j = ctx;
  for (int64_t i = lo; i < hi; i++)
    gather_row(j->dst + (size_t)(i * j->nk) * j->es, j->src + (size_t)i * j->row_bytes, j->keep, j->nk, j->es);
}

/* Keeps the listed channels of a projection, on its output side (weight columns of [in, out] and the
 * bias) or its input side (weight rows of [in, out]). */
static int slice_proj(op_analysis *a, const op_proj *p, bool out_side, const int64_t *keep, int64_t nk, int layer,
                      op_prune_report *r, op_error *err) {
  Onnx__TensorProto *w = op_proj_tensor(a, p->w);
  const uint8_t *W = w && op_tensor_to_raw(w) == 0 ? w->raw_data.data : NULL;
  int64_t rows = p->w_out_major ? p->out : p->in, cols = p->w_out_major ? p->in : p->out;
  /* the weight must still have the shape it was matched with: nothing else may have sliced it */
  if (!W || w->n_dims != 2 || w->dims[0] != rows || w->dims[1] != cols)
    return op_fail(err, OP_UNSUPPORTED, "%s: weight '%s' changed shape during the rewrite", a->model->path, p->w);
  bool chan_is_row = out_side == p->w_out_major;
  int64_t nd[2] = {chan_is_row ? nk : rows, chan_is_row ? cols : nk};
  size_t es = op_dtype_size(w->data_type), bytes = (size_t)(nd[0] * nd[1]) * es;
  slice_job j = {op_xmalloc(bytes ? bytes : 1), W, keep, nk, (size_t)cols * es, es};
  if (chan_is_row)
    op_parallel_for(nk, (int64_t)j.row_bytes, keep_rows, &j);
  else
    op_parallel_for(rows, (int64_t)j.row_bytes, keep_cols, &j);
  record(r, layer, p->w, w, nd);
  op_tensor_replace(w, nd, 2, j.dst, bytes);
  if (out_side && p->b) {
    /* a bias shared with other nodes: this node's own copy (made here, or below when read through Identity) */
    Onnx__TensorProto *b = p->b_cow ? op_proj_tensor(a, p->b) : op_fused_own_bias(a, p->bias_node, p->b);
    const uint8_t *B = op_tensor_to_raw(b) == 0 ? b->raw_data.data : NULL;
    size_t bes = op_dtype_size(b->data_type);
    uint8_t *NB = op_xmalloc((size_t)nk * bes + 1);
    gather_row(NB, B, keep, nk, bes);
    int64_t bd[2] = {nk, 0};
    if (p->b_cow) { /* read through Identity from a constant other users share: this projection's own copy */
      record(r, layer, p->b, b, bd);
      Onnx__TensorProto *mine = op_tensor_new(p->b, b->data_type, bd, 1);
      memcpy(mine->raw_data.data, NB, (size_t)nk * bes);
      free(NB);
      op_node_set_input(a->gr->g->node[p->b_user], (size_t)p->b_slot, op_graph_add_init(a->gr, mine));
    } else {
      record(r, layer, b != op_proj_tensor(a, p->b) ? b->name : p->b, b, bd); /* a private copy: its own name */
      op_tensor_replace(b, bd, 1, NB, (size_t)nk * bes);
    }
  }
  return 0;
}

/* Channels of the listed heads of size d, for each of `parts` parts of width W (1, or 3 for packed
 * q|k|v). */
static int64_t head_channels(const int64_t *heads, int64_t nh, int64_t d, int parts, int64_t W, int64_t *out) {
  int64_t n = 0;
  for (int p = 0; p < parts; p++)
    for (int64_t i = 0; i < nh; i++)
      for (int64_t j = 0; j < d; j++) out[n++] = p * W + heads[i] * d + j;
  return n;
}

/* The kept query heads in their new order, so that the repeat still pairs each with its kv head:
 * interleaved (h / rep) keeps each kept group's heads together, tiled (h % KV) deals them round. */
static int64_t kept_query_heads(const op_attn *at, const bool *keep, const bool *keep_kv, int64_t *out) {
  int64_t H = at->heads, n = 0;
  if (at->kv_map != OP_KV_TILED) {
    for (int64_t h = 0; h < H; h++)
      if (keep[h] && keep_kv[op_attn_kv_of(at, h)]) out[n++] = h;
    return n;
  }
  for (int64_t r = 0; r < H; r++) /* r-th kept head of every kept group, group by group */
    for (int64_t g = 0; g < at->kv_heads; g++) {
      if (!keep_kv[g]) continue;
      int64_t seen = 0;
      for (int64_t h = g; h < H; h += at->kv_heads)
        if (keep[h] && seen++ == r) out[n++] = h;
    }
  return n;
}

static int prune_heads(op_analysis *a, const op_attn *at, const bool *keep, const bool *keep_kv, int layer,
                       op_prune_report *r, op_error *err) {
  int64_t H = at->heads, d = at->head_dim, KV = at->kv_heads;
  int64_t *qh = op_xmalloc((size_t)H * sizeof *qh), *kvh = op_xmalloc((size_t)KV * sizeof *kvh);
  int64_t H2 = kept_query_heads(at, keep, keep_kv, qh), KV2 = 0;
  for (int64_t g = 0; g < KV; g++)
    if (keep_kv[g]) kvh[KV2++] = g;
  if (KV == H) KV2 = H2; /* one kv head per query head: they go together */
  int rc = 0;
  if (H2 == H && KV2 == KV) goto done;
  if (KV2 == 0 || H2 % KV2)
    rc = op_fail(err, OP_UNSUPPORTED, "layer %d: %lld query heads cannot share %lld kv heads equally", layer,
                 (long long)H2, (long long)KV2);
  int64_t cap = 3 * H * d;
  for (int k = 0; k < 3; k++) cap = at->qkv[k].out > cap ? at->qkv[k].out : cap;
  cap = at->out.in > cap ? at->out.in : cap;
  int64_t *ch = op_xmalloc((size_t)cap * sizeof(int64_t));
  if (!rc && at->packed) { /* q of H heads, then k and v of KV heads (their widths may differ) */
    int64_t n = 0;
    for (int k = 0; k < 3; k++) {
      int64_t off, w = op_attn_part(at, k, &off);
      bool kv = k > 0 && KV != H;
      int64_t nh = head_channels(kv ? kvh : qh, kv ? KV2 : H2, w / (kv ? KV : H), 1, 0, ch + n);
      for (int64_t i = 0; i < nh; i++) ch[n + i] += off;
      n += nh;
    }
    rc = slice_proj(a, &at->qkv[0], true, ch, n, layer, r, err);
  } else if (!rc && at->kv_packed) { /* q; k|v in one projection, both halves lose the same heads */
    int64_t n = head_channels(qh, H2, d, 1, 0, ch);
    rc = slice_proj(a, &at->qkv[0], true, ch, n, layer, r, err);
    n = head_channels(qh, H2, d, 2, H * d, ch);
    if (!rc) rc = slice_proj(a, &at->qkv[1], true, ch, n, layer, r, err);
  } else if (!rc) {
    for (int k = 0; k < 3 && !rc; k++) {
      bool kv = k > 0 && KV != H;
      int64_t n = head_channels(kv ? kvh : qh, kv ? KV2 : H2, at->qkv[k].out / (kv ? KV : H), 1, 0, ch);
      rc = slice_proj(a, &at->qkv[k], true, ch, n, layer, r, err);
    }
  }
  int64_t n = head_channels(qh, H2, op_attn_v_head_dim(at), 1, 0, ch);
  if (!rc) rc = slice_proj(a, &at->out, false, ch, n, layer, r, err);
  free(ch);
  op_head_counts c = {H, H2, KV, KV2, d};
  for (size_t i = 0; i < at->sites.n && !rc; i++) {
    const op_site *s = &at->sites.v[i];
    if (s->role == OP_SITE_PARTS)
      rc = op_shape_rewrite_parts(a->gr, a->gr->g->node[s->node], H * d, H2 * d, a->opset, err);
    else
      rc = op_shape_rewrite(a->gr, s, &c, &at->region, err);
  }
  if (!rc && at->fused_op) rc = op_fused_rewrite_heads(a, at, qh, H2, kvh, KV2, layer, r, err);
done:
  free(qh);
  free(kvh);
  return rc;
}

static int prune_neurons(op_analysis *a, const op_ffn *f, const bool *keep, int layer, op_prune_report *r,
                         op_error *err) {
  int64_t F = f->down.in, n = 0;
  if (op_plan_kept(keep, F) == F) return 0;
  int64_t *ch = op_xmalloc((size_t)F * sizeof(int64_t));
  for (int64_t i = 0; i < F; i++)
    if (keep[i]) ch[n++] = i;
  int rc = 0;
  for (int u = 0; u < f->n_up && !rc; u++) rc = slice_proj(a, &f->up[u], true, ch, n, layer, r, err);
  if (!rc) rc = slice_proj(a, &f->down, false, ch, n, layer, r, err);
  for (size_t i = 0; i < f->region.n && !rc; i++) /* Reshapes between the projections carry the width */
    if (op_node_is(a->gr->g->node[f->region.v[i]], "Reshape"))
      rc = op_shape_rewrite_width(a->gr, a->gr->g->node[f->region.v[i]], F, n, err);
  free(ch);
  return rc;
}

/* Records every weight of a block as removed. */
static void record_removed(op_analysis *a, const op_proj *ps, int n, int layer, op_prune_report *r) {
  for (int i = 0; i < n; i++) {
    record(r, layer, ps[i].w, op_proj_tensor(a, ps[i].w), NULL);
    if (ps[i].b) record(r, layer, ps[i].b, op_proj_tensor(a, ps[i].b), NULL);
  }
}

static void record_block_removed(op_analysis *a, const op_block *b, int layer, op_prune_report *r) {
  if (b->kind == OP_BLOCK_ATTN) {
    const op_attn *at = &a->attn.v[b->index];
    record_removed(a, at->qkv, at->packed ? 1 : at->kv_packed ? 2 : 3, layer, r);
    record_removed(a, &at->out, 1, layer, r);
  } else {
    const op_ffn *f = &a->ffn.v[b->index];
    record_removed(a, f->up, f->n_up, layer, r);
    record_removed(a, &f->down, 1, layer, r);
  }
}

/* Bypasses made so far: a later bypass whose target was itself bypassed must go to that one's
 * target, or consecutive removed blocks would bring the first back to life. */
typedef struct bypass {
  char *from;
  const char *to;
} bypass;
typedef OP_VEC(bypass) bypass_vec;

static void bypass_to(op_analysis *a, bypass_vec *done, const char *from, const char *to) {
  for (size_t i = done->n; i-- > 0;)
    if (strcmp(done->v[i].from, to) == 0) to = done->v[i].to;
  OP_VEC_PUSH(*done, ((bypass){op_xstrdup(from), to}));
  op_graph_replace_uses(a->gr, from, to);
}

int op_rewrite(op_analysis *a, const op_plan *plan, op_prune_report *r, op_error *err) {
  if (op_fused_check_plan(a, plan, err)) return -1; /* before anything changes */
  /* 1. weights and shape constants (no node is added or removed, so indices hold) */
  for (size_t l = 0; l < plan->n; l++) {
    const op_layer_plan *lp = &plan->layers[l];
    const op_attn *at = op_layer_attn(a, (int)l);
    const op_ffn *f = op_layer_ffn(a, (int)l);
    if (lp->drop_layer) continue;
    if (at && !lp->drop_attn && prune_heads(a, at, lp->keep_head, lp->keep_kv, (int)l, r, err)) return -1;
    const op_attn *cr = op_layer_cross(a, (int)l);
    if (cr && !lp->drop_cross && prune_heads(a, cr, lp->cross->keep_head, lp->cross->keep_kv, (int)l, r, err)) return -1;
    if (f && !lp->drop_ffn && prune_neurons(a, f, lp->keep_neuron, (int)l, r, err)) return -1;
  }
  /* 2. bypasses: the residual stream skips removed blocks and layers */
  bypass_vec done = {0};
  int rc = 0;
  for (size_t l = 0; l < plan->n && !rc; l++) {
    const op_layer_plan *lp = &plan->layers[l];
    const op_layer *L = &a->layers.v[l];
    const op_block *first = &a->blocks.v[op_layer_first_block(a, (int)l)];
    const op_block *last = &a->blocks.v[op_layer_last_block(a, (int)l)];
    if (lp->drop_layer) {
      if (!last->stream_out_known) {
        rc = op_fail(err, OP_UNSUPPORTED, "layer %zu: cannot find where its post-norm ends, so it cannot be dropped", l);
        break;
      }
      if (L->attn_block >= 0) record_block_removed(a, &a->blocks.v[L->attn_block], (int)l, r);
      if (L->cross_block >= 0) record_block_removed(a, &a->blocks.v[L->cross_block], (int)l, r);
      if (L->ffn_block >= 0) record_block_removed(a, &a->blocks.v[L->ffn_block], (int)l, r);
      /* the layer's blocks in stream order (self-attention, cross-attention, FFN) */
      const op_block *bl[3];
      int nb = 0;
      int ids[3] = {L->attn_block, L->cross_block, L->ffn_block};
      for (int k = 0; k < 3; k++)
        if (ids[k] >= 0) bl[nb++] = &a->blocks.v[ids[k]];
      bool joined = true;
      for (int k = 1; k < nb; k++) joined &= strcmp(bl[k - 1]->stream_out, bl[k]->stream_in) == 0;
      if (joined) {
        bypass_to(a, &done, last->stream_out, first->stream_in);
        continue;
      }
      /* the blocks are joined through re-layouts of the stream (a Cast, a Reshape): skip each */
      for (int k = 0; k < nb && !rc; k++)
        if (!bl[k]->stream_out_known)
          rc = op_fail(err, OP_UNSUPPORTED, "layer %zu: cannot find where its post-norm ends, so it cannot be dropped", l);
      for (int k = 0; k < nb && !rc; k++) bypass_to(a, &done, bl[k]->stream_out, bl[k]->stream_in);
      continue;
    }
    for (int k = 0; k < 3; k++) { /* self-attention, cross-attention, FFN: in stream order */
      int bi = k == 0 ? L->attn_block : k == 1 ? L->cross_block : L->ffn_block;
      bool drop = k == 0 ? lp->drop_attn : k == 1 ? lp->drop_cross : lp->drop_ffn;
      if (bi < 0 || !drop) continue;
      const op_block *b = &a->blocks.v[bi];
      record_block_removed(a, b, (int)l, r);
      bypass_to(a, &done, b->add_out, b->stream_in);
    }
  }
  for (size_t i = 0; i < done.n; i++) free(done.v[i].from);
  free(done.v);
  if (rc) return rc;
  /* 3. stale shape annotations of tensors whose width changed */
  Onnx__GraphProto *g = a->gr->g;
  op_name_vec stale = {0};
  for (size_t l = 0; l < plan->n; l++) {
    const op_attn *at = op_layer_attn(a, (int)l), *cr = op_layer_cross(a, (int)l);
    const op_ffn *f = op_layer_ffn(a, (int)l);
    if (at)
      for (size_t i = 0; i < at->region.n; i++) OP_VEC_PUSH(stale, at->region.v[i]);
    if (cr)
      for (size_t i = 0; i < cr->region.n; i++) OP_VEC_PUSH(stale, cr->region.v[i]);
    if (f) {
      for (size_t i = 0; i < f->region.n; i++) OP_VEC_PUSH(stale, g->node[f->region.v[i]]->output[0]);
      for (int u = 0; u < f->n_up; u++) {
        OP_VEC_PUSH(stale, f->up[u].y);
        OP_VEC_PUSH(stale, g->node[f->up[u].node]->output[0]);
      }
    }
  }
  size_t w = 0;
  for (size_t i = 0; i < g->n_value_info; i++) {
    bool drop = false;
    for (size_t k = 0; k < stale.n && !drop && g->value_info[i]->name; k++)
      drop = strcmp(stale.v[k], g->value_info[i]->name) == 0;
    if (drop) protobuf_c_message_free_unpacked(&g->value_info[i]->base, NULL);
    else g->value_info[w++] = g->value_info[i];
  }
  g->n_value_info = w;
  free(stale.v);
  return 0;
}
