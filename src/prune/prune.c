/* prune.c - the pruning entry point: analyse, plan, rewrite, clean up, and fill the report. */
#include "prune/prune.h"
#include "prune/target.h"
#include "prune/recon.h"
#include "prune/alloc_search.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* issue 12: the blocks' FLOPs per token and parameters before and after, the target, and the scores units
 * were ranked by (the HTML report draws their distribution). */
static void record_costs(const op_analysis *a, const op_prune_config *c, const op_plan *plan, op_prune_report *r) {
  r->flops_seq = c->flops_seq;
  r->multiple_of = c->multiple_of;
  r->target_flops = c->target_flops;
  r->target_params = c->target_params;
  r->head_scores = op_xcalloc(plan->n + 1, sizeof *r->head_scores);
  r->neuron_scores = op_xcalloc(plan->n + 1, sizeof *r->neuron_scores);
  for (size_t l = 0; l < plan->n; l++) {
    const op_layer_plan *lp = &plan->layers[l];
    op_unit_cost ca, cf;
    op_block_costs(a, (int)l, c->flops_seq, &ca, &cf);
    int64_t heads = lp->drop_layer || lp->drop_attn ? 0 : lp->keep_head ? op_plan_kept(lp->keep_head, lp->heads) : 0;
    int64_t width = lp->drop_layer || lp->drop_ffn ? 0 : lp->keep_neuron ? op_plan_kept(lp->keep_neuron, lp->width) : 0;
    r->flops_before += op_cost_of(&ca, ca.units, false) + op_cost_of(&cf, cf.units, false);
    r->flops_after += op_cost_of(&ca, heads, false) + op_cost_of(&cf, width, false);
    r->block_params_before += op_cost_of(&ca, ca.units, true) + op_cost_of(&cf, cf.units, true);
    r->block_params_after += op_cost_of(&ca, heads, true) + op_cost_of(&cf, width, true);
    if (lp->head_score) {
      r->head_scores[l] = op_xmalloc((size_t)(lp->heads + 1) * sizeof(double));
      memcpy(r->head_scores[l], lp->head_score, (size_t)lp->heads * sizeof(double));
    }
    if (lp->neuron_score) {
      r->neuron_scores[l] = op_xmalloc((size_t)(lp->width + 1) * sizeof(double));
      memcpy(r->neuron_scores[l], lp->neuron_score, (size_t)lp->width * sizeof(double));
    }
  }
}

/* Reconstruction / compensation (recon.h): biases where compensation needs them (then the model is
 * analysed and planned again), and the sequential pass that ranks, refits and zeroes block by block.
 * On failure everything is freed. */
static int recon_prepare(op_model *m, const op_prune_config *c, op_analysis **a, op_plan *plan, op_error *err) {
  int added = c->compensate == 1 ? op_recon_add_biases(m, *a, c, plan, err) : 0;
  if (added > 0) {
    op_plan_free(plan);
    op_analysis_free(*a);
    if (!(*a = op_analyze(m, err))) return -1;
    if (op_plan_build(*a, c, plan, err)) {
      op_analysis_free(*a);
      return -1;
    }
  }
  if (added < 0 || op_recon_run(*a, c, plan, err)) {
    op_plan_free(plan);
    op_analysis_free(*a);
    return -1;
  }
  return 0;
}

/* The report's reconstruction errors and importance values of one layer. */
static void layer_recon_result(op_layer_result *lr, const op_layer_plan *lp, bool recon) {
  lr->attn_predicted_error = recon ? lp->attn_predicted_error : -1;
  lr->attn_measured_error = recon ? lp->attn_measured_error : -1;
  lr->ffn_predicted_error = recon ? lp->ffn_predicted_error : -1;
  lr->ffn_measured_error = recon ? lp->ffn_measured_error : -1;
  if (lp->head_score && lp->heads > 0) {
    lr->head_importance = op_xmalloc((size_t)lp->heads * sizeof(double));
    memcpy(lr->head_importance, lp->head_score, (size_t)lp->heads * sizeof(double));
  }
  if (lp->neuron_score && lp->width > 0) {
    lr->neuron_importance = op_xmalloc((size_t)lp->width * sizeof(double));
    memcpy(lr->neuron_importance, lp->neuron_score, (size_t)lp->width * sizeof(double));
  }
  if (lp->head_curve) { /* issue 12: the allocation's error curves, for the allocation search */
    lr->head_curve = op_xmalloc((size_t)(lp->heads + 1) * sizeof(double));
    memcpy(lr->head_curve, lp->head_curve, (size_t)(lp->heads + 1) * sizeof(double));
  }
  if (lp->neuron_curve) {
    lr->neuron_curve = op_xmalloc((size_t)(lp->width + 1) * sizeof(double));
    memcpy(lr->neuron_curve, lp->neuron_curve, (size_t)(lp->width + 1) * sizeof(double));
  }
}

/* Output-head compensation's record, copied out of the plan (its names live in the graph). */
static void record_out_heads(const op_analysis *a, const op_plan *plan, op_prune_report *r) {
  for (size_t i = 0; i < plan->n_out_heads; i++) {
    const op_output_head *h = &plan->out_heads[i];
    op_output_head_result o = {op_xstrdup(h->p.node >= 0 ? op_node_name(a->gr->g->node[h->p.node]) : ""),
                               op_xstrdup(h->output), h->skip ? op_xstrdup(h->skip) : NULL, h->error_before,
                               h->error_after};
    OP_VEC_PUSH(r->out_heads, o);
  }
}

op_prune_report *op_prune(op_model *m, const op_prune_config *c, op_error *err) {
  op_analysis *a = op_analyze(m, err);
  if (!a) return NULL;
  if (a->quantized) {
    op_fail(err, OP_UNSUPPORTED, "%s: the model is already quantised, %s: prune the float model, then quantize",
            m->path, a->quantized);
    op_analysis_free(a);
    return NULL;
  }
  if (a->layers.n == 0) {
    op_fail(err, OP_UNSUPPORTED, "%s: no attention or FFN block found%s%s", m->path, a->unmatched.n ? "; " : "",
            a->unmatched.n ? a->unmatched.v[0] : "");
    op_analysis_free(a);
    return NULL;
  }
  /* issue 12: the counts judged end to end first (alloc_search.c), on copies of the model */
  op_alloc_search *as = NULL;
  op_prune_config fixed;
  if (op_alloc_search_applies(a, c)) {
    if (!(as = op_alloc_search_run(m, a, c, err))) {
      op_analysis_free(a);
      return NULL;
    }
    if (as->fixed) fixed = *c, fixed.fixed_removed = as->fixed, c = &fixed;
  }
  op_plan plan;
  if (op_plan_build(a, c, &plan, err)) {
    op_alloc_search_free(as);
    op_analysis_free(a);
    return NULL;
  }
  bool recon = op_recon_wanted(c);
  if (recon && recon_prepare(m, c, &a, &plan, err)) {
    op_alloc_search_free(as);
    return NULL;
  }
  op_prune_report *r = op_xcalloc(1, sizeof *r);
  r->alloc_search = as;
  r->model = op_xstrdup(m->path);
  if (c->data && (c->importance == OP_IMP_ACTIVATION || recon)) /* rows ranked, refit or compensated on */
    op_row_set_capture(&r->calib_rows, c->data, 0, c->samples);
  r->importance = c->importance;
  r->compact = c->compact;
  r->before = op_graph_param_count(m->proto->graph);
  for (size_t l = 0; l < plan.n; l++) {
    const op_layer_plan *lp = &plan.layers[l];
    const op_attn *at = op_layer_attn(a, (int)l);
    const op_ffn *f = op_layer_ffn(a, (int)l);
    op_layer_result lr = {.layer = (int)l, .has_attn = at != NULL, .has_ffn = f != NULL, .dropped = lp->drop_layer,
                          .attn_removed = lp->drop_attn || lp->drop_layer, .ffn_removed = lp->drop_ffn || lp->drop_layer};
    for (int64_t h = 0; at && !lr.attn_removed && h < lp->heads; h++)
      if (!lp->keep_head[h]) OP_VEC_PUSH(lr.removed_heads, (int)h);
    for (int64_t i = 0; f && !lr.ffn_removed && i < lp->width; i++)
      if (!lp->keep_neuron[i]) OP_VEC_PUSH(lr.removed_neurons, (int)i);
    if (at) {
      lr.heads_before = lp->heads;
      lr.heads_after = lr.attn_removed ? 0 : op_plan_kept(lp->keep_head, lp->heads);
      lr.kv_before = lp->kv_heads;
      lr.kv_after = lr.attn_removed ? 0 : at->kv_heads == at->heads ? lr.heads_after : op_plan_kept(lp->keep_kv, lp->kv_heads);
      lr.attn_kind = op_attn_kind(at);
      for (int64_t g = 0; at->kv_heads != at->heads && !lr.attn_removed && g < lp->kv_heads; g++)
        if (!lp->keep_kv[g]) OP_VEC_PUSH(lr.removed_kv_heads, (int)g);
    }
    op_layer_label(a, (int)l, lr.name, sizeof lr.name);
    const op_attn *cr = op_layer_cross(a, (int)l); /* a decoder layer's cross-attention */
    if (cr) {
      lr.has_cross = true;
      lr.cross_removed = lp->drop_cross || lp->drop_layer;
      lr.cross_before = lp->cross->heads;
      lr.cross_after = lr.cross_removed ? 0 : op_plan_kept(lp->cross->keep_head, lp->cross->heads);
      for (int64_t h = 0; !lr.cross_removed && h < lp->cross->heads; h++)
        if (!lp->cross->keep_head[h]) OP_VEC_PUSH(lr.removed_cross_heads, (int)h);
      if (!at) lr.attn_kind = op_attn_kind(cr);
    }
    if (f) {
      lr.ffn_before = lp->width;
      lr.ffn_after = lr.ffn_removed ? 0 : op_plan_kept(lp->keep_neuron, lp->width);
      snprintf(lr.activation, sizeof lr.activation, "%s", f->activation);
    }
    layer_recon_result(&lr, lp, recon);
    OP_VEC_PUSH(r->layers, lr);
  }
  for (size_t i = 0; i < a->unmatched.n; i++) OP_VEC_PUSH(r->unmatched, op_xstrdup(a->unmatched.v[i]));
  record_costs(a, c, &plan, r);
  record_out_heads(a, &plan, r);
  int rc = op_rewrite(a, &plan, r, err);
  op_plan_free(&plan);
  op_analysis_free(a);
  if (rc) {
    op_prune_report_free(r);
    return NULL;
  }
  op_graph_remove_dead(m->proto->graph);
  op_graph_toposort(m->proto->graph); /* nodes the rewrite added (private copies of shared shapes) */
  r->after = op_graph_param_count(m->proto->graph);
  return r;
}

int64_t op_prune_report_params_before(const op_prune_report *r) { return r->before; }
int64_t op_prune_report_params_after(const op_prune_report *r) { return r->after; }

void op_prune_report_free(op_prune_report *r) {
  if (!r) return;
  for (size_t i = 0; i < r->changes.n; i++) free(r->changes.v[i].name);
  for (size_t i = 0; i < r->unmatched.n; i++) free(r->unmatched.v[i]);
  for (size_t i = 0; i < r->layers.n; i++) {
    free(r->layers.v[i].removed_heads.v);
    free(r->layers.v[i].removed_neurons.v);
    free(r->layers.v[i].removed_kv_heads.v);
    free(r->layers.v[i].removed_cross_heads.v);
    free(r->layers.v[i].head_importance);
    free(r->layers.v[i].neuron_importance);
    free(r->layers.v[i].head_curve);
    free(r->layers.v[i].neuron_curve);
  }
  op_alloc_search_free(r->alloc_search);
  for (size_t i = 0; i < r->state.n; i++) free(r->state.v[i].name);
  free(r->state.v);
  free(r->changes.v);
  free(r->layers.v);
  free(r->unmatched.v);
  free(r->model);
  op_row_set_free(&r->calib_rows);
  for (size_t i = 0; i < r->layers.n; i++) {
    if (r->head_scores) free(r->head_scores[i]);
    if (r->neuron_scores) free(r->neuron_scores[i]);
  }
  free(r->head_scores);
  free(r->neuron_scores);
  free(r->curve.v);
  for (size_t i = 0; i < r->out_heads.n; i++)
    free(r->out_heads.v[i].node), free(r->out_heads.v[i].output), free(r->out_heads.v[i].skip);
  free(r->out_heads.v);
  op_row_set_free(&r->eval_rows);
  free(r);
}
