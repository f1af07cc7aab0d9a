/* report.c - renders an analysis (inspect) and a pruning report as text tables and as JSON.
 * The text summary follows nn_pruning's style: totals before -> after with the reduction factor,
 * then `[3072, 768] => [552, 768] name` per changed tensor. */
#include "prune/prune.h"
#include "prune/alloc_search.h"

#include "report/json.h"
#include "report/textbuf.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_printf(sbuf *b, const char *fmt, ...) {
  va_list ap;
  for (;;) {
    size_t room = b->cap - b->n;
    va_start(ap, fmt);
    int w = vsnprintf(b->s ? b->s + b->n : NULL, room, fmt, ap);
    va_end(ap);
    if (w < 0) return;
    if ((size_t)w < room) {
      b->n += (size_t)w;
      return;
    }
    b->cap = (b->cap + (size_t)w + 1) * 2;
    b->s = op_xrealloc(b->s, b->cap);
  }
}

/* 1234567 -> "1,234,567" in a rotating static buffer (enough for one printf call). */
static const char *grouped(int64_t v) {
  static char bufs[8][32];
  static int k;
  char *out = bufs[k++ & 7], tmp[32];
  int n = snprintf(tmp, sizeof tmp, "%lld", (long long)(v < 0 ? -v : v)), o = 0;
  if (v < 0) out[o++] = '-';
  for (int i = 0; i < n; i++) {
    out[o++] = tmp[i];
    if ((n - i - 1) % 3 == 0 && i < n - 1) out[o++] = ',';
  }
  out[o] = 0;
  return out;
}

static double pct(int64_t part, int64_t total) { return total ? 100.0 * (double)part / (double)total : 0; }

static const char *proj_kind(const op_analysis *a, const op_proj *p) {
  const Onnx__NodeProto *n = a->gr->g->node[p->node];
  return op_node_is(n, "Gemm") ? "Gemm" : op_node_is(n, "MatMul") ? "MatMul" : n->op_type; /* FusedMatMul, Attention */
}

/* Distinct q/k/v projections: 1 packed q|k|v, 2 with packed k|v, else 3. */
static int qkv_count(const op_attn *at) { return at->packed ? 1 : at->kv_packed ? 2 : 3; }

static int64_t attn_params(const op_analysis *a, const op_attn *at) {
  int64_t n = op_proj_params(a, &at->out);
  for (int k = 0; k < qkv_count(at); k++) n += op_proj_params(a, &at->qkv[k]);
  return n;
}

static int64_t ffn_params(const op_analysis *a, const op_ffn *f) {
  int64_t n = op_proj_params(a, &f->down);
  for (int k = 0; k < f->n_up; k++) n += op_proj_params(a, &f->up[k]);
  return n;
}

static bool layer_pre_norm(const op_analysis *a, int l) { return a->blocks.v[op_layer_first_block(a, l)].pre_norm; }

/* The qkv column: how q, k and v are projected. */
static const char *qkv_form(const op_attn *at) { return at->packed ? "packed" : at->kv_packed ? "packed-kv" : "separate"; }

static void fused_state_text(const op_analysis *a, sbuf *b);

char *op_analysis_table(const op_analysis *a) {
  sbuf b = {0};
  int64_t heads = 0, neurons = 0;
  sb_printf(&b, "%s: opset %lld, %zu layers, %s parameters\n", a->model->path, (long long)a->opset, a->layers.n,
            grouped(a->params_total));
  int lw = op_analysis_has_stacks(a) ? 10 : 5; /* encoder.N / decoder.N */
  sb_printf(&b, "%*s  %-14s %-8s %-12s %-13s %-7s %6s  %-16s %-5s %12s\n", lw, "layer", "heads x dim", "kv", "attention",
            "qkv", "proj", "ffn", "activation", "norm", "parameters");
  for (size_t l = 0; l < a->layers.n; l++) {
    const op_attn *at = op_layer_attn(a, (int)l), *cr = op_layer_cross(a, (int)l);
    char label[40];
    op_layer_label(a, (int)l, label, sizeof label);
    if (!at && cr) at = cr, cr = NULL; /* a decoder layer without self-attention */
    const op_ffn *f = op_layer_ffn(a, (int)l);
    char hd[32] = "-", ffn[32] = "-", kv[32] = "-";
    int64_t params = 0;
    if (at) {
      snprintf(hd, sizeof hd, "%lld x %lld", (long long)at->heads, (long long)at->head_dim);
      snprintf(kv, sizeof kv, "%lld", (long long)at->kv_heads);
      heads += at->heads;
      params += attn_params(a, at);
    }
    if (f) {
      snprintf(ffn, sizeof ffn, "%lld", (long long)f->down.in);
      neurons += f->down.in;
      params += ffn_params(a, f);
    }
    if (cr) heads += cr->heads, params += attn_params(a, cr);
    sb_printf(&b, "%*s  %-14s %-8s %-12s %-13s %-7s %6s  %-16s %-5s %12s\n", lw, label, hd, kv, at ? op_attn_kind(at) : "-",
              at ? qkv_form(at) : "-", at ? proj_kind(a, &at->qkv[0]) : (f ? proj_kind(a, &f->down) : "-"),
              ffn, f ? f->activation : "-", layer_pre_norm(a, (int)l) ? "pre" : "post", grouped(params));
    if (cr) { /* the decoder layer's cross-attention, on a line of its own under it */
      snprintf(hd, sizeof hd, "%lld x %lld", (long long)cr->heads, (long long)cr->head_dim);
      snprintf(kv, sizeof kv, "%lld", (long long)cr->kv_heads);
      sb_printf(&b, "%*s  %-14s %-8s %-12s %-13s %s\n", lw, "+", hd, kv, op_attn_kind(cr), qkv_form(cr),
                proj_kind(a, &cr->qkv[0]));
    }
  }
  sb_printf(&b, "total: %lld heads, %lld FFN neurons\n", (long long)heads, (long long)neurons);
  int64_t other = a->params_total - a->params_embed - a->params_attn - a->params_ffn;
  sb_printf(&b, "parameters: embeddings %s (%.1f%%), attention %s (%.1f%%), ffn %s (%.1f%%), other %s (%.1f%%)\n",
            grouped(a->params_embed), pct(a->params_embed, a->params_total), grouped(a->params_attn),
            pct(a->params_attn, a->params_total), grouped(a->params_ffn), pct(a->params_ffn, a->params_total),
            grouped(other), pct(other, a->params_total));
  fused_state_text(a, &b);
  if (a->quantized) sb_printf(&b, "already quantised: %s\n", a->quantized);
  for (size_t i = 0; i < a->unmatched.n; i++) sb_printf(&b, "%s\n", a->unmatched.v[i]);
  return b.s;
}

static cJSON *proj_json(const op_analysis *a, const op_proj *p) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "node", op_node_name(a->gr->g->node[p->node]));
  cJSON_AddStringToObject(o, "op", proj_kind(a, p));
  cJSON_AddStringToObject(o, "weight", p->w);
  if (p->b) cJSON_AddStringToObject(o, "bias", p->b);
  cJSON_AddBoolToObject(o, "weight_out_major", p->w_out_major);
  cJSON_AddNumberToObject(o, "in", (double)p->in);
  cJSON_AddNumberToObject(o, "out", (double)p->out);
  return o;
}

/* ---- fused attention (match_fused.c): the op and the state interfaces that carry its heads ---- */
static void fused_state_json(const op_analysis *a, const op_attn *at, cJSON *o) {
  if (!at->fused_op) return;
  cJSON_AddStringToObject(o, "fused_op", at->fused_op);
  cJSON_AddNumberToObject(o, "v_head_dim", (double)op_attn_v_head_dim(at)); /* qkv_hidden_sizes may differ */
  op_fused_state st[4];
  int ns = op_fused_states(a, at, st);
  cJSON *arr = cJSON_AddArrayToObject(o, "state");
  for (int i = 0; i < ns; i++) {
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "name", st[i].name);
    cJSON_AddStringToObject(e, "interface", st[i].input ? "input" : "output");
    cJSON_AddNumberToObject(e, "head_axis", st[i].axis);
    cJSON_AddBoolToObject(e, "kv", st[i].kv);
    cJSON_AddItemToArray(arr, e);
  }
}

static void fused_state_text(const op_analysis *a, sbuf *b) {
  for (size_t l = 0; l < a->layers.n; l++) {
    const op_attn *at = op_layer_attn(a, (int)l);
    op_fused_state st[4];
    int ns = at ? op_fused_states(a, at, st) : 0;
    if (!ns) continue;
    sb_printf(b, "state: layer %zu:", l);
    for (int i = 0; i < ns; i++)
      sb_printf(b, "%s %s (graph %s, %s axis %d)", i ? "," : "", st[i].name, st[i].input ? "input" : "output",
                st[i].kv ? "kv-head" : "head", st[i].axis);
    sb_printf(b, ": pruning heads changes this axis\n");
  }
}

char *op_json_finish(cJSON *root) {
  char *s = cJSON_Print(root);
  cJSON_Delete(root);
  char *out = op_xstrdup(s ? s : "{}");
  free(s);
  return out;
}

char *op_analysis_json(const op_analysis *a) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "model", a->model->path);
  cJSON_AddNumberToObject(root, "opset", (double)a->opset);
  if (a->quantized) cJSON_AddStringToObject(root, "quantized", a->quantized);
  else cJSON_AddNullToObject(root, "quantized");
  cJSON *p = cJSON_AddObjectToObject(root, "parameters");
  cJSON_AddNumberToObject(p, "total", (double)a->params_total);
  cJSON_AddNumberToObject(p, "embeddings", (double)a->params_embed);
  cJSON_AddNumberToObject(p, "attention", (double)a->params_attn);
  cJSON_AddNumberToObject(p, "ffn", (double)a->params_ffn);
  cJSON_AddNumberToObject(p, "other", (double)(a->params_total - a->params_embed - a->params_attn - a->params_ffn));
  cJSON_AddBoolToObject(root, "stacks", op_analysis_has_stacks(a));
  cJSON *layers = cJSON_AddArrayToObject(root, "layers");
  for (size_t l = 0; l < a->layers.n; l++) {
    const op_ffn *f = op_layer_ffn(a, (int)l);
    cJSON *L = cJSON_CreateObject();
    cJSON_AddNumberToObject(L, "layer", (double)l);
    char label[40];
    cJSON_AddStringToObject(L, "name", op_layer_label(a, (int)l, label, sizeof label));
    const char *stack = op_stack_name(a->layers.v[l].stack);
    if (stack) cJSON_AddStringToObject(L, "stack", stack);
    else cJSON_AddNullToObject(L, "stack");
    cJSON_AddNumberToObject(L, "stack_index", a->layers.v[l].stack_index);
    cJSON_AddStringToObject(L, "norm", layer_pre_norm(a, (int)l) ? "pre" : "post");
    int64_t params = 0;
    for (int which = 0; which < 2; which++) { /* self-attention, then a decoder layer's cross-attention */
    const op_attn *at = which ? op_layer_cross(a, (int)l) : op_layer_attn(a, (int)l);
    const char *key = which ? "cross_attention" : "attention";
    if (at) {
      cJSON *o = cJSON_AddObjectToObject(L, key);
      cJSON_AddNumberToObject(o, "heads", (double)at->heads);
      cJSON_AddNumberToObject(o, "head_dim", (double)at->head_dim);
      cJSON_AddNumberToObject(o, "kv_heads", (double)at->kv_heads);
      cJSON_AddStringToObject(o, "kind", op_attn_kind(at));
      static const char *const kv_maps[] = {"same", "interleaved", "tiled"};
      cJSON_AddStringToObject(o, "kv_map", kv_maps[at->kv_map]);
      cJSON_AddBoolToObject(o, "rotary", at->rotary);
      cJSON_AddBoolToObject(o, "packed_qkv", at->packed);
      cJSON_AddBoolToObject(o, "packed_kv", at->kv_packed);
      cJSON_AddBoolToObject(o, "cross", at->cross);
      if (at->cross) cJSON_AddStringToObject(o, "memory", at->qkv[1].x);
      cJSON_AddStringToObject(o, "softmax", op_node_name(a->gr->g->node[at->fused_op ? at->fused_node : at->softmax]));
      fused_state_json(a, at, o);
      cJSON *pr = cJSON_AddArrayToObject(o, "projections");
      for (int k = 0; k < qkv_count(at); k++) cJSON_AddItemToArray(pr, proj_json(a, &at->qkv[k]));
      cJSON_AddItemToObject(o, "output", proj_json(a, &at->out));
      cJSON_AddNumberToObject(o, "parameters", (double)attn_params(a, at));
      params += attn_params(a, at);
    } else {
      cJSON_AddNullToObject(L, key);
    }
    }
    if (f) {
      cJSON *o = cJSON_AddObjectToObject(L, "ffn");
      cJSON_AddNumberToObject(o, "width", (double)f->down.in);
      cJSON_AddStringToObject(o, "activation", f->activation);
      cJSON_AddBoolToObject(o, "gated", f->n_up == 2);
      cJSON *up = cJSON_AddArrayToObject(o, "up");
      for (int k = 0; k < f->n_up; k++) cJSON_AddItemToArray(up, proj_json(a, &f->up[k]));
      cJSON_AddItemToObject(o, "down", proj_json(a, &f->down));
      cJSON_AddNumberToObject(o, "parameters", (double)ffn_params(a, f));
      params += ffn_params(a, f);
    } else {
      cJSON_AddNullToObject(L, "ffn");
    }
    cJSON_AddNumberToObject(L, "parameters", (double)params);
    cJSON_AddItemToArray(layers, L);
  }
  cJSON *um = cJSON_AddArrayToObject(root, "unmatched");
  for (size_t i = 0; i < a->unmatched.n; i++) cJSON_AddItemToArray(um, cJSON_CreateString(a->unmatched.v[i]));
  return op_json_finish(root);
}

/* ---- pruning report ---- */

static void dims_text(char *buf, size_t n, const int64_t *d, int rank) {
  if (d[0] < 0) snprintf(buf, n, "removed");
  else if (rank == 2) snprintf(buf, n, "[%lld, %lld]", (long long)d[0], (long long)d[1]);
  else snprintf(buf, n, "[%lld]", (long long)d[0]);
}

static cJSON *int_list(const op_int_vec *v);

static void layer_plan_text(sbuf *b, const op_layer_result *L) {
  sb_printf(b, "  layer %s: ", L->name[0] ? L->name : "?");
  if (L->dropped) {
    sb_printf(b, "dropped\n");
    return;
  }
  if (L->has_attn) {
    if (L->attn_removed) sb_printf(b, "attention removed");
    else sb_printf(b, "heads %lld -> %lld", (long long)L->heads_before, (long long)L->heads_after);
    if (!L->attn_removed && L->kv_before != L->heads_before)
      sb_printf(b, " (kv heads %lld -> %lld)", (long long)L->kv_before, (long long)L->kv_after);
  }
  if (L->has_cross) { /* a decoder layer's cross-attention */
    sb_printf(b, "%s", L->has_attn ? ", " : "");
    if (L->cross_removed) sb_printf(b, "cross-attention removed");
    else sb_printf(b, "cross heads %lld -> %lld", (long long)L->cross_before, (long long)L->cross_after);
  }
  if (L->has_ffn) {
    sb_printf(b, "%s", L->has_attn || L->has_cross ? ", " : "");
    if (L->ffn_removed) sb_printf(b, "ffn removed");
    else sb_printf(b, "ffn %lld -> %lld", (long long)L->ffn_before, (long long)L->ffn_after);
  }
  sb_printf(b, "\n");
}

char *op_prune_report_text(const op_prune_report *r, int with_plan) {
  sbuf b = {0};
  sb_printf(&b, "importance: %s%s\n", r->compact ? "all-zero units removed (--compact); " : "",
            op_importance_name(r->importance));
  if (with_plan) {
    sb_printf(&b, "plan:\n");
    for (size_t i = 0; i < r->layers.n; i++) layer_plan_text(&b, &r->layers.v[i]);
  }
  double factor = r->after ? (double)r->before / (double)r->after : 0;
  sb_printf(&b, "parameters: %s -> %s (%.2fx reduction, -%.1f%%)\n", grouped(r->before), grouped(r->after), factor,
            pct(r->before - r->after, r->before));
  if (r->flops_before > 0) /* issue 12: what a target counts */
    sb_printf(&b, "attention + FFN blocks: FLOPs per token (sequence %lld) %.4g -> %.4g (%.1f%% kept), parameters %s -> %s (%.1f%% kept)%s\n",
              (long long)r->flops_seq, r->flops_before, r->flops_after, 100 * r->flops_after / r->flops_before,
              grouped((int64_t)r->block_params_before), grouped((int64_t)r->block_params_after),
              r->block_params_before > 0 ? 100 * r->block_params_after / r->block_params_before : 0,
              r->target_flops > 0 ? " (target: FLOPs)" : r->target_params > 0 ? " (target: parameters)" : "");
  int layer = -2;
  for (size_t i = 0; i < r->changes.n; i++) {
    const op_tensor_change *c = &r->changes.v[i];
    if (c->layer != layer) { /* by the name configs use: "3", "decoder.1" */
      layer = c->layer;
      const char *name = NULL;
      for (size_t k = 0; k < r->layers.n && !name; k++)
        if (r->layers.v[k].layer == layer && r->layers.v[k].name[0]) name = r->layers.v[k].name;
      if (name) sb_printf(&b, "layer %s\n", name);
      else sb_printf(&b, "layer %d\n", layer);
    }
    char bd[48], ad[48];
    dims_text(bd, sizeof bd, c->before, c->rank);
    dims_text(ad, sizeof ad, c->after, c->rank);
    sb_printf(&b, "  %s => %s %s\n", bd, ad, c->name);
  }
  for (size_t i = 0; i < r->state.n; i++) { /* fused attention's past/present state follows the head count */
    const op_state_change *s = &r->state.v[i];
    sb_printf(&b, "state: layer %d: graph %s '%s' now holds %lld heads on axis %d (was %lld)%s\n", s->layer,
              s->input ? "input" : "output", s->name, (long long)s->after, s->axis, (long long)s->before,
              s->input ? ": feed it past state of that width (the present output of the pruned model)" : "");
  }
  for (size_t i = 0; i < r->unmatched.n; i++) sb_printf(&b, "%s\n", r->unmatched.v[i]);
  for (size_t i = 0; i < r->out_heads.n; i++) { /* issue 12: output-head compensation */
    const op_output_head_result *h = &r->out_heads.v[i];
    if (h->skip) sb_printf(&b, "output head '%s' (output '%s'): not refit: %s\n", h->node, h->output, h->skip);
    else sb_printf(&b, "output head '%s' (output '%s'): refit to the dense outputs, relative error %.4g -> %.4g\n",
                   h->node, h->output, h->error_before, h->error_after);
  }
  op_alloc_search_text(r->alloc_search, &b); /* issue 12: the allocation judged end to end */
  if (r->calib_rows.n) { /* issue 12: which file rows calibrated */
    char *rule = op_row_set_rule(&r->calib_rows);
    sb_printf(&b, "calibration rows: %s\n", rule);
    free(rule);
  }
  return b.s;
}

static cJSON *dims_json(const int64_t *d, int rank) {
  if (d[0] < 0) return cJSON_CreateNull();
  cJSON *a = cJSON_CreateArray();
  for (int i = 0; i < rank; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)d[i]));
  return a;
}

static cJSON *int_list(const op_int_vec *v) {
  cJSON *a = cJSON_CreateArray();
  for (size_t i = 0; i < v->n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v->v[i]));
  return a;
}

/* ---- issue 12: the accuracy-floor search's curve ---- */

static const op_search_point *kept_point(const op_prune_report *r) {
  const op_search_point *k = NULL; /* the smallest target that passed */
  for (size_t i = 0; i < r->curve.n; i++)
    if (r->curve.v[i].pass && (!k || r->curve.v[i].target < k->target)) k = &r->curve.v[i];
  return k;
}

static cJSON *search_json(const op_prune_report *r) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "floor", r->floor_text);
  cJSON_AddStringToObject(o, "target", r->target_params > 0 ? "parameters" : "flops");
  if (r->floor_metric) {
    cJSON_AddStringToObject(o, "metric", r->floor_metric);
    cJSON_AddNumberToObject(o, "threshold", r->floor_threshold);
  }
  const op_search_point *k = kept_point(r);
  if (k) cJSON_AddNumberToObject(o, "kept_target", k->target);
  else cJSON_AddNullToObject(o, "kept_target");
  cJSON_AddBoolToObject(o, "passed", k != NULL);
  cJSON *curve = cJSON_AddArrayToObject(o, "curve");
  for (size_t i = 0; i < r->curve.n; i++) {
    const op_search_point *p = &r->curve.v[i];
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "target", p->target);
    cJSON_AddNumberToObject(c, "flops_kept", p->flops_kept);
    cJSON_AddNumberToObject(c, "params_kept", p->params_kept);
#define OPT(key, v) (v) >= 0 ? cJSON_AddNumberToObject(c, key, v) : cJSON_AddNullToObject(c, key)
    OPT("accuracy", p->accuracy);
    OPT("reference_accuracy", p->ref_accuracy);
    OPT("perplexity", p->ppl);
    OPT("reference_perplexity", p->ref_ppl);
#undef OPT
    cJSON_AddNumberToObject(c, "agreement", p->agreement);
    cJSON_AddNumberToObject(c, "cosine", p->cosine);
    cJSON_AddBoolToObject(c, "pass", p->pass);
    cJSON_AddItemToArray(curve, c);
  }
  return o;
}

char *op_prune_report_curve(const op_prune_report *r) {
  if (!r->searched) return NULL;
  sbuf b = {0};
  char *rule = r->eval_rows.n ? op_row_set_rule(&r->eval_rows) : NULL;
  sb_printf(&b, "floor: %s\njudged on %s\n", r->floor_text, rule ? rule : "no rows");
  free(rule);
  sb_printf(&b, "%8s %11s %12s %20s %10s %9s %24s  %s\n", "target", "flops_kept", "params_kept",
            "accuracy (reference)", "agreement", "cosine", "perplexity (reference)", "pass");
  const op_search_point *k = kept_point(r);
  for (size_t i = 0; i < r->curve.n; i++) {
    const op_search_point *p = &r->curve.v[i];
    char acc[48] = "-", ppl[48] = "-";
    if (p->accuracy >= 0) snprintf(acc, sizeof acc, "%.2f%% (%.2f%%)", 100 * p->accuracy, 100 * p->ref_accuracy);
    if (p->ppl >= 0) snprintf(ppl, sizeof ppl, "%.3f (%.3f)", p->ppl, p->ref_ppl);
    sb_printf(&b, "%8.4f %11.4f %12.4f %20s %9.2f%% %9.6f %24s  %s%s\n", p->target, p->flops_kept, p->params_kept, acc,
              100 * p->agreement, p->cosine, ppl, p->pass ? "yes" : "no", p == k ? "  <- kept" : "");
  }
  if (!k) sb_printf(&b, "no candidate passed: nothing written\n");
  return b.s;
}

/* Reconstruction (recon.h): per block the predicted and measured relative output error (null when
 * not computed), per unit the importance it was ranked by. */
static cJSON *error_json(double e) { return e < 0 ? cJSON_CreateNull() : cJSON_CreateNumber(e); }

static cJSON *doubles_json(const double *v, int64_t n) {
  cJSON *a = cJSON_CreateArray();
  for (int64_t i = 0; v && i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
  return a;
}

static void recon_json(cJSON *o, const op_layer_result *L) {
  if (L->has_attn) {
    cJSON *b = cJSON_AddObjectToObject(o, "attention_reconstruction");
    cJSON_AddItemToObject(b, "predicted_error", error_json(L->attn_predicted_error));
    cJSON_AddItemToObject(b, "measured_error", error_json(L->attn_measured_error));
    cJSON_AddItemToObject(o, "head_importance", doubles_json(L->head_importance, L->heads_before));
  }
  if (L->has_ffn) {
    cJSON *b = cJSON_AddObjectToObject(o, "ffn_reconstruction");
    cJSON_AddItemToObject(b, "predicted_error", error_json(L->ffn_predicted_error));
    cJSON_AddItemToObject(b, "measured_error", error_json(L->ffn_measured_error));
    cJSON_AddItemToObject(o, "neuron_importance", doubles_json(L->neuron_importance, L->ffn_before));
  }
}

char *op_prune_report_json(const op_prune_report *r) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "model", r->model);
  cJSON_AddStringToObject(root, "importance", op_importance_key(r->importance));
  cJSON_AddStringToObject(root, "importance_metric", op_importance_name(r->importance));
  cJSON_AddBoolToObject(root, "compact", r->compact);
  cJSON *p = cJSON_AddObjectToObject(root, "parameters");
  cJSON_AddNumberToObject(p, "before", (double)r->before);
  cJSON_AddNumberToObject(p, "after", (double)r->after);
  cJSON_AddNumberToObject(p, "reduction_factor", r->after ? (double)r->before / (double)r->after : 0);
  { /* issue 12: FLOPs per token and parameters of the attention and FFN blocks, the target */
    cJSON *bk = cJSON_AddObjectToObject(root, "blocks");
    cJSON_AddNumberToObject(bk, "flops_per_token_before", r->flops_before);
    cJSON_AddNumberToObject(bk, "flops_per_token_after", r->flops_after);
    cJSON_AddNumberToObject(bk, "flops_kept", r->flops_before > 0 ? r->flops_after / r->flops_before : 1);
    cJSON_AddNumberToObject(bk, "flops_sequence_length", (double)r->flops_seq);
    cJSON_AddNumberToObject(bk, "parameters_before", r->block_params_before);
    cJSON_AddNumberToObject(bk, "parameters_after", r->block_params_after);
    cJSON_AddNumberToObject(bk, "parameters_kept", r->block_params_before > 0 ? r->block_params_after / r->block_params_before : 1);
    cJSON_AddNumberToObject(bk, "multiple_of", (double)r->multiple_of);
    if (r->target_flops > 0) cJSON_AddNumberToObject(bk, "target_flops", r->target_flops);
    if (r->target_params > 0) cJSON_AddNumberToObject(bk, "target_params", r->target_params);
  }
  op_alloc_search_json(r->alloc_search, root); /* issue 12: the allocation judged end to end */
  if (r->out_heads.n) { /* issue 12: output-head compensation */
    cJSON *oh = cJSON_AddArrayToObject(root, "output_heads");
    for (size_t i = 0; i < r->out_heads.n; i++) {
      const op_output_head_result *h = &r->out_heads.v[i];
      cJSON *o = cJSON_CreateObject();
      cJSON_AddStringToObject(o, "node", h->node);
      cJSON_AddStringToObject(o, "output", h->output);
      cJSON_AddBoolToObject(o, "refit", h->skip == NULL);
      if (h->skip) cJSON_AddStringToObject(o, "reason", h->skip);
      if (h->error_before >= 0) cJSON_AddNumberToObject(o, "error_before", h->error_before);
      if (h->error_after >= 0) cJSON_AddNumberToObject(o, "error_after", h->error_after);
      cJSON_AddItemToArray(oh, o);
    }
  }
  cJSON *layers = cJSON_AddArrayToObject(root, "layers");
  for (size_t i = 0; i < r->layers.n; i++) {
    const op_layer_result *L = &r->layers.v[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "layer", L->layer);
    cJSON_AddStringToObject(o, "name", L->name);
    cJSON_AddBoolToObject(o, "dropped", L->dropped);
    if (L->has_cross) { /* a decoder layer's cross-attention */
      cJSON_AddNumberToObject(o, "cross_heads_before", (double)L->cross_before);
      cJSON_AddNumberToObject(o, "cross_heads_after", (double)L->cross_after);
      cJSON_AddBoolToObject(o, "cross_attention_removed", L->cross_removed);
      cJSON_AddItemToObject(o, "removed_cross_heads", int_list(&L->removed_cross_heads));
    }
    if (L->has_attn) {
      cJSON_AddNumberToObject(o, "heads_before", (double)L->heads_before);
      cJSON_AddNumberToObject(o, "heads_after", (double)L->heads_after);
      cJSON_AddBoolToObject(o, "attention_removed", L->attn_removed);
      cJSON_AddItemToObject(o, "removed_heads", int_list(&L->removed_heads));
      cJSON_AddNumberToObject(o, "kv_heads_before", (double)L->kv_before);
      cJSON_AddNumberToObject(o, "kv_heads_after", (double)L->kv_after);
      cJSON_AddItemToObject(o, "removed_kv_heads", int_list(&L->removed_kv_heads));
      cJSON_AddStringToObject(o, "attention_kind", L->attn_kind ? L->attn_kind : "self");
    }
    if (L->has_ffn) {
      cJSON_AddNumberToObject(o, "ffn_before", (double)L->ffn_before);
      cJSON_AddNumberToObject(o, "ffn_after", (double)L->ffn_after);
      cJSON_AddBoolToObject(o, "ffn_removed", L->ffn_removed);
      cJSON_AddItemToObject(o, "removed_neurons", int_list(&L->removed_neurons));
      cJSON_AddStringToObject(o, "activation", L->activation);
    }
    /* issue 12: the scores units were ranked by (the HTML report's histograms) */
    if (L->has_attn && r->head_scores && r->head_scores[i])
      cJSON_AddItemToObject(o, "head_scores", cJSON_CreateDoubleArray(r->head_scores[i], (int)L->heads_before));
    if (L->has_ffn && r->neuron_scores && r->neuron_scores[i])
      cJSON_AddItemToObject(o, "neuron_scores", cJSON_CreateDoubleArray(r->neuron_scores[i], (int)L->ffn_before));
    recon_json(o, L); /* reconstruction errors and importance values */
    cJSON_AddItemToArray(layers, o);
  }
  cJSON *ch = cJSON_AddArrayToObject(root, "tensors");
  for (size_t i = 0; i < r->changes.n; i++) {
    const op_tensor_change *c = &r->changes.v[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", c->name);
    cJSON_AddNumberToObject(o, "layer", c->layer);
    cJSON_AddItemToObject(o, "before", dims_json(c->before, c->rank));
    cJSON_AddItemToObject(o, "after", dims_json(c->after, c->rank));
    cJSON_AddItemToArray(ch, o);
  }
  cJSON *st = cJSON_AddArrayToObject(root, "state");
  for (size_t i = 0; i < r->state.n; i++) {
    const op_state_change *s = &r->state.v[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", s->name);
    cJSON_AddNumberToObject(o, "layer", s->layer);
    cJSON_AddStringToObject(o, "interface", s->input ? "input" : "output");
    cJSON_AddNumberToObject(o, "head_axis", s->axis);
    cJSON_AddNumberToObject(o, "before", (double)s->before);
    cJSON_AddNumberToObject(o, "after", (double)s->after);
    cJSON_AddItemToArray(st, o);
  }
  cJSON *um = cJSON_AddArrayToObject(root, "unmatched");
  for (size_t i = 0; i < r->unmatched.n; i++) cJSON_AddItemToArray(um, cJSON_CreateString(r->unmatched.v[i]));
  if (r->calib_rows.n || r->eval_rows.n) { /* issue 12: which file rows calibrated and judged */
    cJSON *rows = cJSON_AddObjectToObject(root, "rows");
    if (r->calib_rows.n) cJSON_AddItemToObject(rows, "calibration", op_row_set_json(&r->calib_rows));
    if (r->eval_rows.n) cJSON_AddItemToObject(rows, "evaluation", op_row_set_json(&r->eval_rows));
  }
  if (r->searched) cJSON_AddItemToObject(root, "search", search_json(r));
  return op_json_finish(root);
}

/* issue 12: the calibration rows one by one, for -v */
char *op_prune_report_rows(const op_prune_report *r) {
  if (!r->calib_rows.n) return NULL;
  char *list = op_row_set_list(&r->calib_rows);
  sbuf b = {0};
  sb_printf(&b, "calibration rows: %s\n", list);
  free(list);
  return b.s;
}
