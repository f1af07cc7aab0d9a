/* report.c - renders an analysis (inspect) and a pruning report as text tables and as JSON.
 * The text summary follows nn_pruning's style: totals before -> after with the reduction factor,
 * then `[3072, 768] => [552, 768] name` per changed tensor. */
#include "prune/prune.h"

#include "report/json.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sbuf {
  char *s;
  size_t n, cap;
} sbuf;

__attribute__((format(printf, 2, 3))) static void sb_printf(sbuf *b, const char *fmt, ...) {
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
  return op_node_is(n, "Gemm") ? "Gemm" : "MatMul";
}

static int64_t attn_params(const op_analysis *a, const op_attn *at) {
  int64_t n = op_proj_params(a, &at->out);
  for (int k = 0; k < (at->packed ? 1 : 3); k++) n += op_proj_params(a, &at->qkv[k]);
  return n;
}

static int64_t ffn_params(const op_analysis *a, const op_ffn *f) {
  int64_t n = op_proj_params(a, &f->down);
  for (int k = 0; k < f->n_up; k++) n += op_proj_params(a, &f->up[k]);
  return n;
}

static bool layer_pre_norm(const op_analysis *a, int l) {
  const op_layer *L = &a->layers.v[l];
  return a->blocks.v[L->attn_block >= 0 ? L->attn_block : L->ffn_block].pre_norm;
}

char *op_analysis_table(const op_analysis *a) {
  sbuf b = {0};
  int64_t heads = 0, neurons = 0;
  sb_printf(&b, "%s: opset %lld, %zu layers, %s parameters\n", a->model->path, (long long)a->opset, a->layers.n,
            grouped(a->params_total));
  sb_printf(&b, "%5s  %-14s %-8s %-12s %-13s %-7s %6s  %-16s %-5s %12s\n", "layer", "heads x dim", "kv", "attention",
            "qkv", "proj", "ffn", "activation", "norm", "parameters");
  for (size_t l = 0; l < a->layers.n; l++) {
    const op_attn *at = op_layer_attn(a, (int)l);
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
    sb_printf(&b, "%5zu  %-14s %-8s %-12s %-13s %-7s %6s  %-16s %-5s %12s\n", l, hd, kv, at ? op_attn_kind(at) : "-",
              at ? (at->packed ? "packed" : "separate") : "-", at ? proj_kind(a, &at->qkv[0]) : (f ? proj_kind(a, &f->down) : "-"),
              ffn, f ? f->activation : "-", layer_pre_norm(a, (int)l) ? "pre" : "post", grouped(params));
  }
  sb_printf(&b, "total: %lld heads, %lld FFN neurons\n", (long long)heads, (long long)neurons);
  int64_t other = a->params_total - a->params_embed - a->params_attn - a->params_ffn;
  sb_printf(&b, "parameters: embeddings %s (%.1f%%), attention %s (%.1f%%), ffn %s (%.1f%%), other %s (%.1f%%)\n",
            grouped(a->params_embed), pct(a->params_embed, a->params_total), grouped(a->params_attn),
            pct(a->params_attn, a->params_total), grouped(a->params_ffn), pct(a->params_ffn, a->params_total),
            grouped(other), pct(other, a->params_total));
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
  cJSON *layers = cJSON_AddArrayToObject(root, "layers");
  for (size_t l = 0; l < a->layers.n; l++) {
    const op_attn *at = op_layer_attn(a, (int)l);
    const op_ffn *f = op_layer_ffn(a, (int)l);
    cJSON *L = cJSON_CreateObject();
    cJSON_AddNumberToObject(L, "layer", (double)l);
    cJSON_AddStringToObject(L, "norm", layer_pre_norm(a, (int)l) ? "pre" : "post");
    int64_t params = 0;
    if (at) {
      cJSON *o = cJSON_AddObjectToObject(L, "attention");
      cJSON_AddNumberToObject(o, "heads", (double)at->heads);
      cJSON_AddNumberToObject(o, "head_dim", (double)at->head_dim);
      cJSON_AddNumberToObject(o, "kv_heads", (double)at->kv_heads);
      cJSON_AddStringToObject(o, "kind", op_attn_kind(at));
      static const char *const kv_maps[] = {"same", "interleaved", "tiled"};
      cJSON_AddStringToObject(o, "kv_map", kv_maps[at->kv_map]);
      cJSON_AddBoolToObject(o, "rotary", at->rotary);
      cJSON_AddBoolToObject(o, "packed_qkv", at->packed);
      cJSON_AddStringToObject(o, "softmax", op_node_name(a->gr->g->node[at->softmax]));
      cJSON *pr = cJSON_AddArrayToObject(o, "projections");
      for (int k = 0; k < (at->packed ? 1 : 3); k++) cJSON_AddItemToArray(pr, proj_json(a, &at->qkv[k]));
      cJSON_AddItemToObject(o, "output", proj_json(a, &at->out));
      cJSON_AddNumberToObject(o, "parameters", (double)attn_params(a, at));
      params += attn_params(a, at);
    } else {
      cJSON_AddNullToObject(L, "attention");
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
  sb_printf(b, "  layer %d: ", L->layer);
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
  if (L->has_ffn) {
    sb_printf(b, "%s", L->has_attn ? ", " : "");
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
  int layer = -2;
  for (size_t i = 0; i < r->changes.n; i++) {
    const op_tensor_change *c = &r->changes.v[i];
    if (c->layer != layer) sb_printf(&b, "layer %d\n", layer = c->layer);
    char bd[48], ad[48];
    dims_text(bd, sizeof bd, c->before, c->rank);
    dims_text(ad, sizeof ad, c->after, c->rank);
    sb_printf(&b, "  %s => %s %s\n", bd, ad, c->name);
  }
  for (size_t i = 0; i < r->unmatched.n; i++) sb_printf(&b, "%s\n", r->unmatched.v[i]);
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
  static const char *imp_names[] = {"l2", "l1", "random", "activation", "reconstruction"};
  cJSON_AddStringToObject(root, "importance", imp_names[r->importance]);
  cJSON_AddStringToObject(root, "importance_metric", op_importance_name(r->importance));
  cJSON_AddBoolToObject(root, "compact", r->compact);
  cJSON *p = cJSON_AddObjectToObject(root, "parameters");
  cJSON_AddNumberToObject(p, "before", (double)r->before);
  cJSON_AddNumberToObject(p, "after", (double)r->after);
  cJSON_AddNumberToObject(p, "reduction_factor", r->after ? (double)r->before / (double)r->after : 0);
  cJSON *layers = cJSON_AddArrayToObject(root, "layers");
  for (size_t i = 0; i < r->layers.n; i++) {
    const op_layer_result *L = &r->layers.v[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "layer", L->layer);
    cJSON_AddBoolToObject(o, "dropped", L->dropped);
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
  cJSON *um = cJSON_AddArrayToObject(root, "unmatched");
  for (size_t i = 0; i < r->unmatched.n; i++) cJSON_AddItemToArray(um, cJSON_CreateString(r->unmatched.v[i]));
  return op_json_finish(root);
}
