/* quantize.c - int8 post-training quantisation to QDQ ONNX.
 * Weights: int8 symmetric (zero point 0), per output channel by default, stored as int8 initializers
 * read through DequantizeLinear (axis follows the layout: MatMul [K, N] -> 1, Gemm transB -> 0).
 * Embedding tables are gathered as int8 and dequantized after the Gather (per hidden column), so a
 * run never dequantizes the whole table. Activations: one QuantizeLinear/DequantizeLinear pair per
 * tensor feeding a quantised node, with a per-tensor range from calibration; graph inputs and outputs
 * stay fp32. Calibration streams the data through the executor's observer twice: ranges (and
 * per-channel means for bias correction), then histograms of |x|. */
#include "exec/fastmath.h"
#include "parallel/parallel.h"
#include "files/files.h"
#include "prune/prune.h"
#include "quant/quant.h"
#include "report/json.h"
#include "verify/stream.h"

#include <cjson/cJSON.h>
#include <float.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- configuration ---- */

op_quant_config *op_quant_config_new(void) {
  op_quant_config *c = op_xcalloc(1, sizeof *c);
  c->methods[0] = OP_CAL_KL;
  c->n_methods = 1;
  c->percentile = 99.99;
  c->per_channel = true;
  c->act_signed = false; /* the ORT profile: uint8 asymmetric activations, int8 weights */
  c->symmetric = false;
  c->op_types = OP_Q_MATMUL | OP_Q_GEMM | OP_Q_GATHER;
  c->batch = 8;
  c->calib_samples = 256;
  c->act_type_set = c->symmetric_set = -1;
  return c;
}

void op_quant_config_free(op_quant_config *c) {
  if (!c) return;
  for (size_t i = 0; i < c->exclude.n; i++) free(c->exclude.v[i]);
  free(c->exclude.v);
  for (size_t i = 0; i < c->include.n; i++) free(c->include.v[i]);
  free(c->include.v);
  free(c);
}

static int parse_int(const char *key, const char *v, int64_t min, int64_t *out, op_error *err) {
  char *e;
  long long x = strtoll(v, &e, 10);
  if (e == v || *e || x < min) return op_fail(err, OP_ARG, "%s: '%s' is not a whole number >= %lld", key, v, (long long)min);
  *out = x;
  return 0;
}

static const struct {
  const char *name;
  unsigned bit;
} OP_TYPES[] = {{"MatMul", OP_Q_MATMUL}, {"Gemm", OP_Q_GEMM}, {"Gather", OP_Q_GATHER},
                {"AttentionMatMul", OP_Q_ATTENTION}, {"Add", OP_Q_ADD}, {"Conv", OP_Q_CONV}};

static int quant_config_set(op_quant_config *c, const char *key, const char *value, char *buf, op_error *err);

/* The activation type and symmetry follow from what was set explicitly and the profile, never from
 * the order they were set in (contradictions are refused by op_quant_config_check). */
static void resolve_activations(op_quant_config *c) {
  c->act_signed = c->act_type_set >= 0 ? c->act_type_set : c->profile == 2;
  c->symmetric = c->symmetric_set >= 0 ? c->symmetric_set : c->profile == 2;
}

int op_quant_config_set(op_quant_config *c, const char *key, const char *value, op_error *err) {
  char *buf = op_xstrdup(value); /* tokenised in place */
  int rc = quant_config_set(c, key, value, buf, err);
  free(buf);
  resolve_activations(c);
  return rc;
}

static bool method_chosen(const op_quant_config *c, op_cal_method m) {
  for (int i = 0; i < c->n_methods; i++)
    if (c->methods[i] == m) return true;
  return false;
}

int op_quant_config_check(const op_quant_config *c, op_error *err) {
  static const char *const PROFILES[] = {"", "ort", "tensorrt"};
  if (c->profile && c->act_type_set >= 0 && c->act_type_set != (c->profile == 2))
    return op_fail(err, OP_ARG, "profile '%s' (%s activations) conflicts with activation_type '%s'", PROFILES[c->profile],
                   c->profile == 2 ? "int8 symmetric" : "uint8 asymmetric", c->act_type_set ? "int8" : "uint8");
  if (c->profile == 1 && c->symmetric_set == 1)
    return op_fail(err, OP_ARG, "profile 'ort' (uint8 asymmetric activations) conflicts with symmetric");
  if (c->percentile_set && !method_chosen(c, OP_CAL_HIST))
    return op_fail(err, OP_ARG, "percentile: applies only to method hist (method is %s%s)",
                   op_cal_method_name(c->methods[0]), c->n_methods > 1 ? ", ..." : "");
  if (c->eval_samples_set && c->n_methods <= 1 && c->n_batches <= 1)
    return op_fail(err, OP_ARG, "eval_samples: only a search (several methods or batches) scores on held-out samples");
  return 0;
}

static int quant_config_set(op_quant_config *c, const char *key, const char *value, char *buf, op_error *err) {
  if (!strcmp(key, "method")) {
    c->n_methods = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
      int m = op_cal_method_parse(tok);
      if (m < 0) return op_fail(err, OP_ARG, "method: '%s' is not one of abs_max, min_max, avg, hist, mse, kl, emd", tok);
      if (c->n_methods == OP_CAL_COUNT) return op_fail(err, OP_ARG, "method: too many methods");
      c->methods[c->n_methods++] = (op_cal_method)m;
    }
    return c->n_methods ? 0 : op_fail(err, OP_ARG, "method: empty list");
  }
  if (!strcmp(key, "batches")) {
    c->n_batches = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
      if (c->n_batches == 16) return op_fail(err, OP_ARG, "batches: at most 16 values");
      if (parse_int(key, tok, 1, &c->batches[c->n_batches++], err)) return -1;
    }
    return c->n_batches ? 0 : op_fail(err, OP_ARG, "batches: empty list");
  }
  if (!strcmp(key, "percentile")) {
    char *e;
    double p = strtod(value, &e);
    if (e == value || *e || !(p > 0 && p <= 100)) return op_fail(err, OP_ARG, "percentile: '%s' is outside (0, 100]", value);
    c->percentile = p;
    c->percentile_set = true;
    return 0;
  }
  if (!strcmp(key, "weight_granularity")) {
    if (!strcmp(value, "channel")) c->per_channel = true;
    else if (!strcmp(value, "tensor")) c->per_channel = false;
    else return op_fail(err, OP_ARG, "weight_granularity: '%s' is not channel or tensor", value);
    return 0;
  }
  if (!strcmp(key, "activation_type")) {
    if (!strcmp(value, "int8")) c->act_type_set = 1;
    else if (!strcmp(value, "uint8")) c->act_type_set = 0;
    else return op_fail(err, OP_ARG, "activation_type: '%s' is not int8 or uint8", value);
    return 0;
  }
  if (!strcmp(key, "symmetric") || !strcmp(key, "bias_correction") || !strcmp(key, "reduce_range") ||
      !strcmp(key, "progress")) {
    bool on = !strcmp(value, "1") || !strcmp(value, "true");
    if (!on && strcmp(value, "0") && strcmp(value, "false")) return op_fail(err, OP_ARG, "%s: '%s' is not true or false", key, value);
    if (!strcmp(key, "symmetric")) c->symmetric_set = on;
    else if (!strcmp(key, "reduce_range")) c->reduce_range = on;
    else if (!strcmp(key, "progress")) c->progress = on;
    else c->bias_correction = on;
    return 0;
  }
  if (!strcmp(key, "profile")) {
    if (!strcmp(value, "tensorrt")) c->profile = 2;
    else if (!strcmp(value, "ort")) c->profile = 1;
    else return op_fail(err, OP_ARG, "profile: '%s' is not tensorrt or ort", value);
    return 0;
  }
  if (!strcmp(key, "op_types")) {
    c->op_types = 0;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
      unsigned bit = 0;
      for (size_t i = 0; i < sizeof OP_TYPES / sizeof *OP_TYPES; i++)
        if (!strcmp(tok, OP_TYPES[i].name)) bit = OP_TYPES[i].bit;
      if (!bit) return op_fail(err, OP_ARG, "op_types: '%s' is not one of MatMul, Gemm, Gather, Conv, AttentionMatMul, Add", tok);
      c->op_types |= bit;
    }
    return c->op_types ? 0 : op_fail(err, OP_ARG, "op_types: empty list");
  }
  if (!strcmp(key, "exclude") || !strcmp(key, "include")) {
    size_t before = key[0] == 'e' ? c->exclude.n : c->include.n;
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
      if (key[0] == 'e') OP_VEC_PUSH(c->exclude, op_xstrdup(tok));
      else OP_VEC_PUSH(c->include, op_xstrdup(tok));
    }
    return (key[0] == 'e' ? c->exclude.n : c->include.n) > before ? 0 : op_fail(err, OP_ARG, "%s: empty list", key);
  }
  if (!strcmp(key, "batch")) return parse_int(key, value, 1, &c->batch, err);
  if (!strcmp(key, "calibration_samples")) return parse_int(key, value, 1, &c->calib_samples, err);
  if (!strcmp(key, "eval_samples")) {
    c->eval_samples_set = true;
    return parse_int(key, value, 1, &c->eval_samples, err);
  }
  return op_fail(err, OP_ARG, "unknown quantize option '%s'", key);
}

int op_compress_config_load(const char *path, op_prune_config *p, op_quant_config *q, op_error *err) {
  cJSON *root = op_json_load(path, err);
  if (!root) return -1;
  int rc = 0;
  const cJSON *e;
  cJSON_ArrayForEach(e, root) {
    if (!strcmp(e->string, "prune")) {
      rc = op_prune_config_from_json(p, e, path, err);
    } else if (!strcmp(e->string, "quantize")) {
      const cJSON *o;
      if (!cJSON_IsObject(e)) rc = op_fail(err, OP_ARG, "%s: quantize: expected an object", path);
      cJSON_ArrayForEach(o, e) {
        char val[4096];
        op_error inner;
        if (rc) break;
        if (cJSON_IsArray(o) && cJSON_GetArraySize(o) > 0 && cJSON_IsString(cJSON_GetArrayItem(o, 0))) {
          size_t off = 0; /* a list of names: "kl,mse" */
          const cJSON *x;
          val[0] = 0;
          bool too_long = false;
          cJSON_ArrayForEach(x, o) {
            int w = snprintf(val + off, sizeof val - off, "%s%s", off ? "," : "", cJSON_IsString(x) ? x->valuestring : "?");
            if (w < 0 || (size_t)w >= sizeof val - off) {
              too_long = true;
              break;
            }
            off += (size_t)w;
          }
          if (too_long) {
            rc = op_fail(err, OP_ARG, "%s: quantize.%s: list too long", path, o->string);
            break;
          }
        } else if (!op_json_to_text(o, val, sizeof val)) {
          rc = op_fail(err, OP_ARG, "%s: quantize.%s: unsupported value", path, o->string);
          break;
        }
        if (op_quant_config_set(q, o->string, val, &inner)) rc = op_fail(err, OP_ARG, "%s: quantize.%s", path, inner.message);
      }
    } else {
      rc = op_fail(err, OP_ARG, "%s: unknown section '%s' (expected prune and quantize)", path, e->string);
    }
    if (rc) break;
  }
  cJSON_Delete(root);
  return rc;
}

/* ---- targets ---- */

typedef enum tkind { T_LINEAR, T_ATTENTION, T_GATHER, T_ADD } tkind;

typedef struct target {
  int node;
  tkind kind;
  int act_slots[2]; /* inputs quantised as activations, -1 when unused */
  int w_slot;       /* weight input slot (linear, gather), -1 otherwise */
  const char *w;    /* weight initializer */
  char *act;        /* the activation input's name before the rewrite (owned), for bias correction */
  int transpose;    /* Transpose node between the initializer and the node, or -1 */
  int w_axis;       /* output-channel axis of the stored weight */
  int32_t dtype;    /* the float type the node reads the weight in (a weight's DequantizeLinear writes it) */
} target;

static bool excluded(const op_quant_config *c, const Onnx__NodeProto *n) {
  bool listed = c->include.n == 0;
  for (size_t i = 0; i < c->include.n && !listed; i++) listed = fnmatch(c->include.v[i], op_node_name(n), 0) == 0;
  if (!listed) return true;
  for (size_t i = 0; i < c->exclude.n; i++)
    if (fnmatch(c->exclude.v[i], op_node_name(n), 0) == 0) return true;
  return false;
}

static bool is_activation(const op_graph *gr, const char *name) {
  return name[0] && !op_graph_const(gr, name);
}

/* The float 2-D weight behind input `slot` (directly or through a 2-D Transpose): an initializer or a
 * Constant node, possibly behind Identity (op_weight_source). */
static const char *weight_behind(const op_graph *gr, const Onnx__NodeProto *n, int slot, int *transpose) {
  *transpose = -1;
  const char *name = n->input[slot];
  Onnx__NodeProto *p = op_graph_producer(gr, name);
  if (p && op_node_is(p, "Transpose")) {
    *transpose = op_graph_node_index(gr, p);
    name = p->input[0];
  }
  Onnx__TensorProto *t;
  const char *src = op_weight_source(gr, name, &t); /* a shared weight keeps its float copy */
  if (!src || !op_weight_dtype_ok(t->data_type) || t->n_dims != 2) return NULL;
  return src;
}

/* The type a node reads from `name` when it is a stored weight behind Identity / Cast / Transpose: the
 * last Cast's `to`, else the stored type; 0 when the chain is anything else. */
static int32_t consumed_type(const op_graph *gr, const char *name) {
  for (int hop = 0; hop < 8; hop++) {
    const Onnx__TensorProto *t = op_graph_const(gr, name);
    if (t) return t->data_type;
    const Onnx__NodeProto *p = op_graph_producer(gr, name);
    if (!p || p->n_input < 1) return 0;
    if (op_node_is(p, "Cast")) return (int32_t)op_node_attr_int(p, "to", 0);
    if (!op_node_is(p, "Identity") && !op_node_is(p, "Transpose")) return 0;
    name = p->input[0];
  }
  return 0;
}

typedef OP_VEC(target) target_vec;

/* A Conv's float weight initializer [M, C/group, k...], read by this node only, or NULL. */
static const char *conv_weight(const op_graph *gr, const Onnx__NodeProto *n) {
  Onnx__TensorProto *t = op_graph_init(gr, n->input[1]);
  if (!t || !op_weight_dtype_ok(t->data_type) || t->n_dims < 3 || t->dims[0] < 1) return NULL;
  op_value *v = op_graph_find(gr, n->input[1]);
  return v->n_consumers == 1 ? t->name : NULL;
}

/* A weight read as float32 or float16 gets QDQ; bfloat16 is a target only to be refused by name (bf16_target);
 * float64 and anything else stay as they are. */
static bool quantizable_type(int32_t dt) {
  return dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16 ||
         dt == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16;
}

static void find_targets(const op_graph *gr, const op_quant_config *c, target_vec *out) {
  Onnx__GraphProto *g = gr->g;
  for (size_t i = 0; i < g->n_node; i++) {
    Onnx__NodeProto *n = g->node[i];
    if (excluded(c, n) || n->n_input < 2) continue;
    target t = {.node = (int)i, .kind = T_LINEAR, .act_slots = {-1, -1}, .w_slot = -1, .transpose = -1, .w_axis = 1};
    bool mm = op_node_is(n, "MatMul"), gemm = op_node_is(n, "Gemm");
    if ((mm && (c->op_types & OP_Q_MATMUL)) || (gemm && (c->op_types & OP_Q_GEMM))) {
      if (gemm && op_node_attr_int(n, "transA", 0)) continue;
      const char *w = is_activation(gr, n->input[0]) ? weight_behind(gr, n, 1, &t.transpose) : NULL;
      if (w) {
        t.w = w;
        t.w_slot = 1;
        t.act_slots[0] = 0;
        /* output channels: the stored weight's axis that becomes N */
        bool trans_b = gemm && op_node_attr_int(n, "transB", 0);
        bool via_transpose = t.transpose >= 0;
        t.w_axis = (trans_b != via_transpose) ? 0 : 1;
        t.dtype = consumed_type(gr, n->input[1]);
        if (quantizable_type(t.dtype)) OP_VEC_PUSH(*out, t);
        continue;
      }
    }
    if (op_node_is(n, "Conv") && (c->op_types & OP_Q_CONV) && is_activation(gr, n->input[0])) {
      const char *w = conv_weight(gr, n);
      if (w) { /* per output channel: axis 0 of [M, C/group, k...]; the bias stays float */
        t.w = w;
        t.w_slot = 1;
        t.act_slots[0] = 0;
        t.w_axis = 0;
        t.dtype = consumed_type(gr, n->input[1]);
        if (quantizable_type(t.dtype)) OP_VEC_PUSH(*out, t);
      }
      continue;
    }
    if (mm && (c->op_types & OP_Q_ATTENTION) && is_activation(gr, n->input[0]) && is_activation(gr, n->input[1])) {
      t.kind = T_ATTENTION;
      t.act_slots[0] = 0, t.act_slots[1] = 1;
      OP_VEC_PUSH(*out, t);
    } else if (op_node_is(n, "Gather") && (c->op_types & OP_Q_GATHER) && op_node_attr_int(n, "axis", 0) == 0) {
      int tr;
      const char *w = weight_behind(gr, n, 0, &tr);
      if (w && tr < 0) {
        t.kind = T_GATHER;
        t.w = w;
        t.w_slot = 0;
        t.w_axis = 1;
        t.dtype = consumed_type(gr, n->input[0]);
        if (quantizable_type(t.dtype)) OP_VEC_PUSH(*out, t);
      }
    } else if (op_node_is(n, "Add") && (c->op_types & OP_Q_ADD) && is_activation(gr, n->input[0]) &&
               is_activation(gr, n->input[1])) {
      t.kind = T_ADD;
      t.act_slots[0] = 0, t.act_slots[1] = 1;
      OP_VEC_PUSH(*out, t);
    }
  }
}

/* ---- calibration ---- */

typedef struct calib {
  op_graph *gr;
  op_stats **by_slot; /* per value slot of gr: stats of a calibrated tensor, or NULL */
  op_name_vec names;  /* calibrated tensors (owned copies) */
  op_stats *stats;
  int32_t *dtypes; /* per calibrated tensor: the type it was computed in (float16 is measured as float32) */
  bool hist; /* the methods need histograms, not only ranges */
  bool chan; /* per-channel means too (bias correction reads them; a pass over every value otherwise wasted) */
  /* memory budget (issue 10): the statistics live through calibration beside the session's values */
  const char *model_path;
  uint64_t budgeted; /* taken from the budget's running total, given back by calib_free */
} calib;

/* Takes the statistics' bytes (fine histograms when the methods need them) from the running total. */
static int calib_take_budget(calib *cal, op_error *err) {
  if (cal->budgeted) return 0;
  uint64_t each = sizeof(op_stats) + (cal->hist ? OP_FINE_BINS * sizeof *cal->stats->fine : 0);
  uint64_t bytes = each * cal->names.n;
  char what[600];
  snprintf(what, sizeof what, "%.500s: calibration statistics of %zu tensors", cal->model_path, cal->names.n);
  if (op_budget_take(bytes, what, err)) return -1;
  cal->budgeted = bytes;
  return 0;
}

static void observe(void *user, const char *name, const op_tensor *t) {
  calib *c = user;
  op_value *v = op_graph_find(c->gr, name);
  op_stats *s = v ? c->by_slot[v - c->gr->values] : NULL;
  if (!s || !op_dtype_is_float(t->dtype)) return;
  c->dtypes[s - c->stats] = t->dtype;
  int64_t n = (int64_t)(t->nbytes / op_dtype_size(t->dtype)), ch = !c->chan ? 0 : t->rank ? t->dims[t->rank - 1] : 1;
  const float *x = t->data;
  op_xt wide = {0};
  if (t->dtype != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) { /* float16, bfloat16, float64: measured as float32 */
    op_xt src = {.dtype = t->dtype, .rank = 1, .dims = {n}, .numel = n, .data = t->data};
    op_error e;
    if (op_xt_convert(&wide, &src, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, &e)) return;
    x = wide.data;
  }
  if (c->hist) op_stats_observe(s, x, n, ch); /* range and histogram in the same pass */
  else op_stats_range(s, x, n, ch);
  op_xt_release(&wide);
}

static bool needs_hist(const op_quant_config *c) {
  for (int i = 0; i < c->n_methods; i++)
    if (c->methods[i] >= OP_CAL_HIST) return true;
  return false;
}

/* Streams `batches` batches (or the calibration samples) through the model's session s once: ranges
 * and histograms together (one session for every calibration and trial: its weights are packed once);
 * cap > 0: never beyond sample cap (the rows a search holds out). */
static int calibrate(op_session *s, const op_dataset *d, const op_quant_config *c, int64_t batches, int64_t cap,
                     calib *cal, op_row_set *rows, op_error *err) {
  int64_t asked = batches > 0 ? batches * c->batch : c->calib_samples;
  if (cap > 0 && asked > cap) asked = cap;
  int64_t first, want = op_sample_window(d, s, 0, asked, &first, err);
  int rc = want < 0 ? -1 : 0;
  if (!rc && rows) op_row_set_capture(rows, d, first, want);
  cal->hist = needs_hist(c);
  cal->chan = c->bias_correction;
  if (!rc && calib_take_budget(cal, err)) rc = -1;
  /* the products keep their fused epilogues unless a tensor to calibrate exists only unfused */
  bool fused = true;
  for (size_t j = 0; j < cal->names.n && fused; j++) fused = !op_session_value_fused_away(s, cal->names.v[j]);
  op_session_observe_fused(s, fused);
  if (!rc) rc = op_stream(s, d, first, want, c->batch, observe, cal, true, NULL, NULL, c->progress, "calibrate", err);
  op_session_observe_fused(s, false);
  for (size_t j = 0; j < cal->names.n && !rc && cal->hist; j++) op_stats_finish(&cal->stats[j]);
  return rc;
}

static void calib_init(calib *cal, const op_model *m, const op_graph *tgr, const target *ts, size_t nt) {
  memset(cal, 0, sizeof *cal);
  cal->gr = op_graph_build(m->proto->graph);
  cal->model_path = op_model_path(m);
  cal->by_slot = op_xcalloc(cal->gr->cap, sizeof *cal->by_slot);
  for (size_t i = 0; i < nt; i++)
    for (int k = 0; k < 2; k++) {
      if (ts[i].act_slots[k] < 0) continue;
      const char *name = tgr->g->node[ts[i].node]->input[ts[i].act_slots[k]];
      bool seen = false;
      for (size_t j = 0; j < cal->names.n && !seen; j++) seen = !strcmp(cal->names.v[j], name);
      if (!seen) OP_VEC_PUSH(cal->names, op_xstrdup(name)); /* owned: the rewrite frees the graph's copy */
    }
  cal->stats = op_xcalloc(cal->names.n ? cal->names.n : 1, sizeof *cal->stats);
  cal->dtypes = op_xcalloc(cal->names.n ? cal->names.n : 1, sizeof *cal->dtypes);
  for (size_t j = 0; j < cal->names.n; j++) {
    op_stats_init(&cal->stats[j]);
    op_value *v = op_graph_find(cal->gr, cal->names.v[j]);
    if (v) cal->by_slot[v - cal->gr->values] = &cal->stats[j];
  }
}

static void calib_free(calib *cal) {
  for (size_t j = 0; j < cal->names.n; j++) {
    op_stats_free(&cal->stats[j]);
    free((char *)cal->names.v[j]);
  }
  free(cal->stats);
  free(cal->dtypes);
  free(cal->names.v);
  free(cal->by_slot);
  op_graph_free(cal->gr);
  op_budget_give(cal->budgeted);
}

static const op_stats *stats_of(const calib *cal, const char *name) {
  for (size_t j = 0; j < cal->names.n; j++)
    if (!strcmp(cal->names.v[j], name)) return &cal->stats[j];
  return NULL;
}

static int32_t dtype_of(const calib *cal, const char *name) {
  for (size_t j = 0; j < cal->names.n; j++)
    if (!strcmp(cal->names.v[j], name)) return cal->dtypes[j];
  return 0;
}

/* ---- rewrite ---- */

/* A fresh value name base+suffix (made unique in the graph). */
static char *fmt_name(op_graph *gr, const char *base, const char *suffix) {
  size_t len = strlen(base) + strlen(suffix) + 1;
  char *s = op_xmalloc(len);
  snprintf(s, len, "%s%s", base, suffix);
  char *u = op_graph_fresh_name(gr, s);
  free(s);
  return u;
}

/* Adds an initializer and returns its (unique) name. */
static const char *add_tensor(op_graph *gr, const char *name, int32_t dt, const int64_t *dims, size_t nd,
                              const void *data) {
  Onnx__TensorProto *t = op_tensor_new(name, dt, dims, nd);
  memcpy(t->raw_data.data, data, t->raw_data.len);
  return op_graph_add_init(gr, t);
}

/* ---- float16 models ----
 * A float16 model is calibrated in float32 (the executor measures float16 values as float32) and its
 * QDQ is written in one of two forms. Opset >= 19: QuantizeLinear and DequantizeLinear read and write
 * float16 themselves, with float16 scales (legal ONNX since 19). Below 19: the QDQ pair stays float32
 * between Casts (Cast to float32 -> QuantizeLinear -> DequantizeLinear -> Cast to float16; a weight's
 * DequantizeLinear -> Cast to float16), legal at every opset and run as written by ONNX Runtime. The
 * opset is never raised: ReduceX, Split, Squeeze/Unsqueeze, Softmax and Pad changed meaning on the way
 * (README, quantize). bfloat16 is refused before calibration (op_quantize). */
typedef enum qform { Q_F32, Q_F16_NATIVE, Q_F16_CAST } qform;
#define HALF_NATIVE "float16 QuantizeLinear/DequantizeLinear with float16 scales (opset >= 19)"
#define HALF_CAST "float32 QuantizeLinear/DequantizeLinear between Casts from and to float16 (opset < 19)"

static qform form_of(int32_t dtype, int64_t opset) {
  if (dtype != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16) return Q_F32;
  return opset >= 19 ? Q_F16_NATIVE : Q_F16_CAST;
}

/* A scale rounded to float16, at least float16's smallest normal, so that it stays > 0; quantising
 * with the rounded scale keeps the stored int8 values consistent with what DequantizeLinear reads. */
static float half_scale(float s) {
  float h = op_f16_to_f32(op_f32_to_f16(s));
  return h >= 0x1p-14f ? h : 0x1p-14f;
}

/* Adds n scales as a float32 or (Q_F16_NATIVE) float16 initializer of rank nd (0 or 1). */
static const char *add_scales(op_graph *gr, const char *name, qform f, const int64_t *n, size_t nd, const float *scales) {
  if (f != Q_F16_NATIVE) return add_tensor(gr, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, n, nd, scales);
  uint16_t *h = op_xmalloc((size_t)*n * sizeof *h);
  for (int64_t i = 0; i < *n; i++) h[i] = op_f32_to_f16(scales[i]);
  const char *r = add_tensor(gr, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, n, nd, h);
  free(h);
  return r;
}

/* Appends `out = Cast(in, to)` (out: a fresh name from in + suffix when NULL); returns out's name (owned). */
static char *add_cast(op_graph *gr, const char *in, int32_t to, const char *out, const char *suffix) {
  char *o = out ? op_xstrdup(out) : fmt_name(gr, in, suffix), *nn = fmt_name(gr, o, "_cast");
  const char *ins[1] = {in}, *outs[1] = {o};
  Onnx__NodeProto *c = op_node_new("Cast", nn, ins, 1, outs, 1);
  op_node_add_int(c, "to", to);
  op_graph_append(gr->g, c);
  free(nn);
  return o;
}

/* A float32 copy of a float32 / float16 / bfloat16 tensor held in raw bytes (maybe borrowed and
 * unaligned), or NULL when it is stored otherwise. */
static float *tensor_as_f32(const Onnx__TensorProto *t) {
  int64_t n = op_tensor_numel(t);
  size_t es = op_dtype_size(t->data_type);
  if (!t->has_raw_data || n < 0 || !op_weight_dtype_ok(t->data_type) || t->raw_data.len != (size_t)n * es) return NULL;
  float *f = op_xmalloc(n ? (size_t)n * sizeof *f : 1);
  if (t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
    if (n) memcpy(f, t->raw_data.data, (size_t)n * sizeof *f);
    return f;
  }
  for (int64_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, t->raw_data.data + 2 * i, 2);
    f[i] = t->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16 ? op_f16_to_f32(h) : op_bf16_to_f32(h);
  }
  return f;
}

/* Adds a report entry and returns it. */
static op_quant_entry *record(op_quant_report *r, const char *name, const char *kind, const char *method, double lo, double hi,
                   const float *scales, int64_t n_scales, int axis, int zero_point, int32_t qtype) {
  op_quant_entry e = {.name = op_xstrdup(name), .kind = kind, .method = method, .lo = lo, .hi = hi,
                      .n_scales = n_scales, .axis = axis, .zero_point = zero_point, .qtype = qtype};
  e.scale_min = e.scale_max = scales[0];
  for (int64_t i = 1; i < n_scales; i++) {
    e.scale_min = fmin(e.scale_min, scales[i]);
    e.scale_max = fmax(e.scale_max, scales[i]);
  }
  OP_VEC_PUSH(r->entries, e);
  return &r->entries.v[r->entries.n - 1];
}

/* One QuantizeLinear -> DequantizeLinear pair on an activation; returns the dequantized name (owned). */
static char *qdq_activation(op_graph *gr, const char *name, const op_stats *s, const op_quant_config *c,
                            op_cal_method m, qform f, op_quant_report *r) {
  double lo, hi;
  bool symmetric = c->symmetric || c->act_signed || m == OP_CAL_ABS_MAX; /* abs_max: [-max|x|, max|x|] */
  op_cal_range(s, m, c->percentile, symmetric, &lo, &hi);
  int32_t qt = c->act_signed ? ONNX__TENSOR_PROTO__DATA_TYPE__INT8 : ONNX__TENSOR_PROTO__DATA_TYPE__UINT8;
  float scale;
  int zp;
  /* apply() refused ranges beyond float; a range narrower than the smallest normal float gets that scale */
  if (symmetric) { /* int8: zero point 0, as TensorRT requires; uint8: the centre 128 */
    double T = fmax(fabs(lo), fabs(hi));
    scale = T > 0 ? (float)fmax(T / 127.0, FLT_MIN) : 1.f;
  } else {
    scale = hi > lo ? (float)fmax((hi - lo) / 255.0, FLT_MIN) : 1.f;
  }
  if (f == Q_F16_NATIVE) scale = half_scale(scale); /* the zero point follows the scale as stored */
  if (c->act_signed) {
    zp = 0;
  } else if (symmetric) {
    zp = 128;
  } else {
    double z = nearbyint(-lo / scale);
    zp = !(z > 0) ? 0 : z > 255 ? 255 : (int)z; /* clamped as a double: no out-of-range conversion */
  }
  char *sn = fmt_name(gr, name, "_scale"), *zn = fmt_name(gr, name, "_zero_point"), *qn = fmt_name(gr, name, "_quantized"),
       *dn = fmt_name(gr, name, "_dequantized");
  int64_t one = 1;
  const char *scale_name = add_scales(gr, sn, f, &one, 0, &scale);
  uint8_t zpb = (uint8_t)(c->act_signed ? (uint8_t)(int8_t)zp : (uint8_t)zp);
  const char *zp_name = add_tensor(gr, zn, qt, NULL, 0, &zpb);
  /* Q_F16_CAST: float32 QDQ between Casts */
  char *x = f == Q_F16_CAST ? add_cast(gr, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, NULL, "_float32") : op_xstrdup(name);
  char *d = f == Q_F16_CAST ? fmt_name(gr, dn, "_float32") : op_xstrdup(dn);
  const char *qin[3] = {x, scale_name, zp_name}, *qout[1] = {qn};
  op_graph_append(gr->g, op_node_new("QuantizeLinear", qn, qin, 3, qout, 1));
  const char *din[3] = {qn, scale_name, zp_name}, *dout[1] = {d};
  op_graph_append(gr->g, op_node_new("DequantizeLinear", dn, din, 3, dout, 1));
  if (f == Q_F16_CAST) free(add_cast(gr, d, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, dn, NULL));
  op_quant_entry *e = record(r, name, "activation", op_cal_method_name(m), s->min, s->max, &scale, 1, -1, zp, qt);
  e->range_lo = lo, e->range_hi = hi;
  free(sn), free(zn), free(qn), free(x), free(d);
  return dn;
}

/* The expected error a quantised weight adds to y = x W (+ b), moved into the bias. Returns 1 when a
 * bias was corrected. */
static int correct_bias(op_graph *gr, const Onnx__NodeProto *n, const target *t, const float *w, const float *dq,
                         int64_t rows, int64_t cols, const op_stats *xs) {
  if (!xs || !xs->chan_sum || xs->chan_rows == 0) return 0;
  Onnx__TensorProto *b = NULL;
  if (op_node_is(n, "Gemm") && n->n_input > 2) op_weight_source(gr, n->input[2], &b); /* initializer or Constant */
  if (!b) { /* MatMul followed by Add(bias) */
    op_value *v = op_graph_find(gr, n->output[0]);
    if (v && v->n_consumers == 1) {
      Onnx__NodeProto *add = gr->g->node[v->consumers[0]];
      if (op_node_is(add, "Add"))
        for (int s = 0; s < 2 && !b; s++) op_weight_source(gr, add->input[s], &b);
    }
  }
  bool w_kn = t->w_axis == 1; /* stored [K, N] */
  int64_t K = w_kn ? rows : cols, N = w_kn ? cols : rows;
  bool half = b && b->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16; /* a float16 model's bias */
  if (!b || (b->data_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT && !half) || op_tensor_numel(b) != N ||
      xs->channels != K)
    return 0;
  float *bias = half ? tensor_as_f32(b) : op_tensor_f32(b);
  if (!bias) return 0;
  for (int64_t o = 0; o < N; o++) {
    double delta = 0;
    for (int64_t k = 0; k < K; k++) {
      int64_t i = w_kn ? k * cols + o : o * cols + k;
      delta += xs->chan_sum[k] / (double)xs->chan_rows * (dq[i] - w[i]);
    }
    bias[o] -= (float)delta;
  }
  if (half) { /* written back as float16 (own bytes: the stored ones may be a read-only mapping) */
    uint16_t *h = op_xmalloc((size_t)N * sizeof *h);
    for (int64_t o = 0; o < N; o++) h[o] = op_f32_to_f16(bias[o]);
    int64_t *dims = op_xmalloc((b->n_dims ? b->n_dims : 1) * sizeof *dims);
    if (b->n_dims) memcpy(dims, b->dims, b->n_dims * sizeof *dims);
    op_tensor_replace(b, dims, b->n_dims, h, (size_t)N * sizeof *h);
    free(dims);
    free(bias);
  }
  return 1;
}

/* bfloat16 is refused by name: ONNX Runtime's CPU provider has no bfloat16 kernels (not even Gather or
 * MatMul), so a bfloat16 QDQ model could be neither run nor checked by the peer. The first target that
 * computes in bfloat16 (a weight read as bfloat16, or with cal, a calibrated activation), or NULL. */
static const Onnx__NodeProto *bf16_target(const op_graph *gr, const target *ts, size_t nt, const calib *cal,
                                           const char **what) {
  for (size_t i = 0; i < nt; i++) {
    const Onnx__NodeProto *n = gr->g->node[ts[i].node];
    if (ts[i].w && ts[i].dtype == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16) return *what = ts[i].w, n;
    for (int k = 0; k < 2 && cal; k++)
      if (ts[i].act_slots[k] >= 0 && dtype_of(cal, n->input[ts[i].act_slots[k]]) == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16)
        return *what = n->input[ts[i].act_slots[k]], n;
  }
  return NULL;
}

/* A 2-D bfloat16 initializer, or NULL: names the weights of a bfloat16 model whose storage (typed
 * int32_data) kept find_targets from seeing them. */
static const char *bf16_matrix(const Onnx__GraphProto *g) {
  for (size_t i = 0; i < g->n_initializer; i++)
    if (g->initializer[i]->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16 && g->initializer[i]->n_dims == 2)
      return g->initializer[i]->name;
  return NULL;
}

static void *fail_bf16(op_error *err, const char *path, const Onnx__NodeProto *n, const char *what) {
  return op_fail_null(err, OP_UNSUPPORTED,
                      "%s: node '%s' (%s) computes in bfloat16 ('%s'): quantize writes float32 and float16 QDQ "
                      "only (ONNX Runtime's CPU provider has no bfloat16 kernels to run a bfloat16 QDQ model): "
                      "quantise the float32 or float16 model",
                      path, op_node_name(n), n->op_type, what);
}

/* A float32 weight's values, read only: its bytes in place when they are raw, aligned and complete (a
 * weight borrowed from the file mapping stays there, its pages given back once it is quantised), else
 * op_tensor_f32's own copy. */
static const float *weight_values(Onnx__TensorProto *w, float **owned) {
  *owned = NULL;
  if (w->data_type == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT && w->has_raw_data && (uintptr_t)w->raw_data.data % sizeof(float) == 0 &&
      w->raw_data.len == (size_t)op_tensor_numel(w) * sizeof(float))
    return (const float *)w->raw_data.data;
  return *owned = tensor_as_f32(w); /* float16/bfloat16 widened, or unaligned bytes copied */
}

/* ---- weights: read, checked and quantised in parallel ----
 * Every target's weight is read once, checked for NaN/infinity, measured and quantised by a few
 * threads (one weight per task, largest first, so the embedding table does not leave one thread
 * alone at the end) before the serial rewrite, which only adds the results to the graph. On BERT-base
 * this was most of what `quantize` spent beyond its calibration run, on one thread and through libm's
 * fmaxf; the loops below keep independent lanes so that the compiler vectorises them. Symmetric int8
 * (zero point 0) along the output-channel axis (per channel) or as a whole, to [-levels, levels]: 127,
 * or 63 for reduce_range (7 bits, so that u8 x s8 products summed in pairs cannot saturate int16 on
 * CPUs without VNNI). The results do not depend on the thread count. */

typedef struct wquant {
  Onnx__TensorProto *w;    /* the float weight, read only */
  int64_t rows, cols, nch; /* a Conv kernel [M, C/group, k...] is the matrix [M, C/group * k...] */
  int axis;                /* channel axis (0: rows, 1: columns), when per_channel */
  bool per_channel, half;  /* half: scales rounded to the float16 DequantizeLinear reads */
  bool unread, finite;     /* unread: not raw bytes (a defect); finite: no NaN or infinity */
  float lo, hi;            /* the weight's range, for the report */
  float *scales;           /* [nch] */
  Onnx__TensorProto *q;    /* the int8 weight (unnamed until the rewrite adds it), or NULL when not finite */
} wquant;

/* Per-column min and max over the rows of x[rows, cols] (MatMul's [K, N], channel axis 1). */
static bool column_range(const float *x, int64_t rows, int64_t cols, float *mn, float *mx) {
  float *z = op_xcalloc((size_t)(cols ? cols : 1), sizeof *z);
  for (int64_t c = 0; c < cols; c++) mn[c] = INFINITY, mx[c] = -INFINITY;
  for (int64_t r = 0; r < rows; r++) {
    const float *row = x + r * cols;
    for (int64_t c = 0; c < cols; c++) {
      float v = row[c];
      mn[c] = v < mn[c] ? v : mn[c];
      mx[c] = v > mx[c] ? v : mx[c];
      z[c] += v * 0.f;
    }
  }
  float s = 0.f;
  for (int64_t c = 0; c < cols; c++) s += z[c];
  free(z);
  return s == 0.f;
}

/* q = clamp(round(x / s), -L, L), s per element of a row (scale_step 1) or one for all (0) */
OP_VECTOR_CLONES static void quantize_span(const float *x, int64_t n, const float *s, int scale_step, float L, int8_t *q) {
  if (scale_step) {
    for (int64_t i = 0; i < n; i++) {
      float v = nearbyintf(x[i] / s[i]);
      q[i] = (int8_t)(v > L ? L : v < -L ? -L : v);
    }
  } else {
    float d = s[0];
    for (int64_t i = 0; i < n; i++) {
      float v = nearbyintf(x[i] / d);
      q[i] = (int8_t)(v > L ? L : v < -L ? -L : v);
    }
  }
}

static float abs_of_range(float lo, float hi) {
  float a = -lo > hi ? -lo : hi;
  return a > 0.f ? a : 0.f; /* an empty range (lo = inf, hi = -inf) gives 0 */
}

static void wq_one(wquant *j, int levels) {
  float *owned = NULL;
  const float *x = weight_values(j->w, &owned);
  if (!x) {
    j->unread = true;
    return;
  }
  int64_t rows = j->rows, cols = j->cols;
  j->scales = op_xmalloc((size_t)(j->nch ? j->nch : 1) * sizeof *j->scales);
  float lo = INFINITY, hi = -INFINITY;
  bool finite = true;
  if (j->per_channel && j->axis == 1) {
    float *mn = op_xmalloc((size_t)(cols ? cols : 1) * sizeof *mn), *mx = op_xmalloc((size_t)(cols ? cols : 1) * sizeof *mx);
    finite = column_range(x, rows, cols, mn, mx);
    for (int64_t c = 0; c < cols; c++) {
      lo = mn[c] < lo ? mn[c] : lo, hi = mx[c] > hi ? mx[c] : hi;
      j->scales[c] = abs_of_range(mn[c], mx[c]);
    }
    free(mn), free(mx);
  } else if (j->per_channel) {
    for (int64_t r = 0; r < rows; r++) {
      float a, b;
      finite &= op_finite_range(x + r * cols, cols, &a, &b);
      lo = a < lo ? a : lo, hi = b > hi ? b : hi;
      j->scales[r] = abs_of_range(a, b);
    }
  } else {
    finite = op_finite_range(x, rows * cols, &lo, &hi);
    j->scales[0] = abs_of_range(lo, hi);
  }
  j->lo = lo, j->hi = hi, j->finite = finite;
  if (finite) {
    const float L = (float)levels;
    for (int64_t c = 0; c < j->nch; c++) {
      j->scales[c] = j->scales[c] > 0 ? j->scales[c] / L : 1.f; /* scales stay > 0 */
      if (j->half) j->scales[c] = half_scale(j->scales[c]);      /* the float16 scale DequantizeLinear will read */
    }
    j->q = op_tensor_new("", ONNX__TENSOR_PROTO__DATA_TYPE__INT8, j->w->dims, j->w->n_dims);
    int8_t *q = (int8_t *)j->q->raw_data.data;
    for (int64_t r = 0; r < rows; r++) {
      bool by_row = j->per_channel && j->axis == 0;
      const float *s = !j->per_channel ? j->scales : by_row ? j->scales + r : j->scales;
      quantize_span(x + r * cols, cols, s, j->per_channel && j->axis == 1, L, q + r * cols);
    }
  }
  free(owned);
  /* read once: its pages of the file mapping can go (read again from the file should anything touch
   * them), so peak memory is not the whole file plus its int8 copy */
  if (op_tensor_is_borrowed(j->w)) op_release_pages(j->w->raw_data.data, j->w->raw_data.len);
}

/* The weight as DequantizeLinear will read it back, float [rows, cols] (for bias correction). */
static float *dequantized(const wquant *j) {
  float *d = op_xmalloc((size_t)(j->rows * j->cols > 0 ? j->rows * j->cols : 1) * sizeof *d);
  const int8_t *q = (const int8_t *)j->q->raw_data.data;
  for (int64_t r = 0; r < j->rows; r++)
    for (int64_t c = 0; c < j->cols; c++) {
      int64_t ch = !j->per_channel ? 0 : j->axis == 0 ? r : c;
      d[r * j->cols + c] = (float)q[r * j->cols + c] * j->scales[ch];
    }
  return d;
}

typedef struct wq_pool {
  wquant *v;
  size_t *order; /* largest first */
  size_t n, next;
  int levels;
} wq_pool;

static void wq_worker(void *ctx, int64_t lo, int64_t hi) {
  wq_pool *p = ctx;
  for (int64_t k = lo; k < hi; k++)
    for (size_t i; (i = __atomic_fetch_add(&p->next, 1, __ATOMIC_RELAXED)) < p->n;) wq_one(&p->v[p->order[i]], p->levels);
}

typedef struct wq_size {
  int64_t nel;
  size_t i;
} wq_size;

static int wq_larger(const void *a, const void *b) {
  const wq_size *x = a, *y = b;
  return x->nel > y->nel ? -1 : x->nel < y->nel ? 1 : (x->i > y->i) - (x->i < y->i);
}

/* Reads, checks and quantises the weight of every target that has one, in parallel; out[i] is ts[i]'s
 * (w NULL when it has none). */
static wquant *weights_quantise(op_graph *gr, const target *ts, size_t nt, const op_quant_config *c, int64_t opset) {
  wquant *v = op_xcalloc(nt ? nt : 1, sizeof *v);
  wq_size *by = op_xmalloc((nt ? nt : 1) * sizeof *by);
  size_t n = 0;
  bool pc = c->per_channel && opset >= 13; /* no per-axis DequantizeLinear before opset 13 */
  for (size_t i = 0; i < nt; i++) {
    Onnx__TensorProto *w = ts[i].w ? op_graph_const(gr, ts[i].w) : NULL;
    if (!w) continue;
    wquant *j = &v[i];
    j->w = w;
    j->rows = w->n_dims ? w->dims[0] : 1;
    int64_t nel = op_tensor_numel(w);
    j->cols = j->rows ? nel / j->rows : 0;
    j->axis = ts[i].w_axis;
    j->per_channel = pc;
    j->nch = pc ? (j->axis == 0 ? j->rows : j->cols) : 1;
    j->half = form_of(ts[i].dtype, opset) == Q_F16_NATIVE;
    by[n++] = (wq_size){nel, i};
  }
  qsort(by, n, sizeof *by, wq_larger);
  wq_pool p = {v, op_xmalloc((n ? n : 1) * sizeof *p.order), n, 0, c->reduce_range ? 63 : 127};
  for (size_t k = 0; k < n; k++) p.order[k] = by[k].i;
  free(by);
  int threads = op_thread_count();
  op_parallel_for(threads < (int)n ? threads : (int)(n ? n : 1), OP_PARALLEL_GRAIN, wq_worker, &p);
  free(p.order);
  return v;
}

static void weights_free(wquant *v, size_t nt) {
  for (size_t i = 0; v && i < nt; i++) {
    free(v[i].scales);
    op_tensor_free(v[i].q);
  }
  free(v);
}

static int apply(op_model *m, const op_quant_config *c, const calib *cal, op_cal_method method, op_quant_report *r,
                 op_error *err) {
  Onnx__GraphProto *g = m->proto->graph;
  if (cal->names.n) { /* every calibrated tensor's threshold at once, in parallel (the rewrite then reads them) */
    op_stats **all = op_xmalloc(cal->names.n * sizeof *all);
    for (size_t j = 0; j < cal->names.n; j++) all[j] = &cal->stats[j];
    bool symmetric = c->symmetric || c->act_signed || method == OP_CAL_ABS_MAX; /* as qdq_activation decides */
    op_cal_prepare(all, cal->names.n, method, c->percentile, symmetric ? 127 : 255);
    free(all);
  }
  op_graph *gr = op_graph_build(g);
  target_vec ts = {0};
  find_targets(gr, c, &ts);
  const char *bf16_what = NULL;
  const Onnx__NodeProto *bf16 = bf16_target(gr, ts.v, ts.n, cal, &bf16_what);
  const Onnx__NodeProto *att16 = NULL; /* float16 QDQ on both inputs of attention's MatMuls */
  for (size_t i = 0; i < ts.n && !bf16 && !att16; i++)
    if (ts.v[i].kind == T_ATTENTION &&
        dtype_of(cal, g->node[ts.v[i].node]->input[0]) == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16)
      att16 = g->node[ts.v[i].node];
  if (bf16 || att16) {
    if (bf16) fail_bf16(err, m->path, bf16, bf16_what);
    else /* seen with onnxruntime-node 1.30 on tests/fixtures/export_half_encoder, in both float16 forms */
      op_fail(err, OP_UNSUPPORTED, "%s: node '%s' (MatMul): AttentionMatMul is refused on float16 models: ONNX Runtime's "
              "CPU provider crashes creating a session (optimisation level 'all') for such a model; quantise the "
              "projections only (the default op types)", m->path, op_node_name(att16));
    for (size_t j = 0; j < ts.n; j++) free(ts.v[j].act);
    free(ts.v);
    op_graph_free(gr);
    return -1;
  }
  int64_t opset = op_model_opset(m->proto);
  wquant *wq = weights_quantise(gr, ts.v, ts.n, c, opset); /* every weight read and quantised, in parallel */
  /* a range or weight that is not finite has no int8 scale: refuse before any rewrite, never write NaN scales */
  for (size_t i = 0; i < ts.n; i++) {
    Onnx__NodeProto *n = g->node[ts.v[i].node];
    const char *bad = NULL, *what = NULL;
    for (int k = 0; k < 2 && !bad; k++) {
      int slot = ts.v[i].act_slots[k];
      const op_stats *st = slot < 0 ? NULL : stats_of(cal, n->input[slot]);
      if (!st || st->count == 0) continue;
      /* every method's range lies within the observed [min, max], so checking those (cheaply) covers all */
      double lo = st->min, hi = st->max;
      if (!isfinite(lo) || !isfinite(hi) || !(lo <= hi) || !isfinite(st->absmax) || (hi - lo) / 255.0 > FLT_MAX ||
          fmax(fabs(lo), fabs(hi)) / 127.0 > FLT_MAX)
        bad = n->input[slot], what = "activation";
    }
    if (!bad && wq[i].w && !wq[i].unread && !wq[i].finite) bad = ts.v[i].w, what = "weight";
    if (!bad && ts.v[i].w && (!wq[i].w || wq[i].unread)) { /* op_weight_source made it raw; its size was checked at load: a defect if reached */
      op_fail(err, OP_INVALID, "%s: node '%s' (%s): weight '%s' is not stored as raw bytes", m->path, op_node_name(n),
              n->op_type, ts.v[i].w);
      bad = ts.v[i].w;
    } else if (bad) {
      op_fail(err, OP_INVALID, "%s: node '%s' (%s): %s '%s' holds NaN, infinity or values beyond float range: it has no int8 scale",
              m->path, op_node_name(n), n->op_type, what, bad);
    }
    if (bad) {
      weights_free(wq, ts.n);
      for (size_t j = 0; j < ts.n; j++) free(ts.v[j].act);
      free(ts.v);
      op_graph_free(gr);
      return -1;
    }
  }
  bool per_axis_ok = opset >= 13;
  r->per_tensor_fallback = c->per_channel && !per_axis_ok;
  /* activations: one QDQ pair per tensor, shared by every quantised consumer */
  OP_VEC(char *) src_names = {0}, dq_names = {0};
  for (size_t i = 0; i < ts.n; i++) {
    Onnx__NodeProto *n = g->node[ts.v[i].node];
    for (int k = 0; k < 2; k++) {
      int slot = ts.v[i].act_slots[k];
      if (slot < 0) continue;
      const char *name = n->input[slot], *dq = NULL;
      for (size_t j = 0; j < src_names.n && !dq; j++)
        if (!strcmp(src_names.v[j], name)) dq = dq_names.v[j];
      const op_stats *st = dq ? NULL : stats_of(cal, name);
      int32_t adt = dtype_of(cal, name); /* float64 activations stay float */
      if (st && st->count > 0 && (adt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || adt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16)) {
        char *made = qdq_activation(gr, name, st, c, method, form_of(dtype_of(cal, name), opset), r);
        OP_VEC_PUSH(src_names, op_xstrdup(name));
        OP_VEC_PUSH(dq_names, made);
        dq = made;
      }
      if (k == 0 && ts.v[i].kind == T_LINEAR) ts.v[i].act = op_xstrdup(name);
      if (dq) op_node_set_input(n, (size_t)slot, dq);
    }
  }
  /* weights: quantised above; here they only join the graph */
  for (size_t i = 0; i < ts.n; i++) {
    const target *t = &ts.v[i];
    if (!t->w) continue;
    Onnx__NodeProto *n = g->node[t->node];
    wquant *j = &wq[i];
    Onnx__TensorProto *w = j->w;
    qform f = form_of(t->dtype, opset);
    int64_t rows = j->rows, cols = j->cols, nch = j->nch;
    bool pc = j->per_channel;
    if (c->bias_correction && t->kind == T_LINEAR && t->act) {
      float *wf_owned, *dqw = dequantized(j);
      const float *wf = weight_values(w, &wf_owned); /* read above */
      r->biases_corrected += correct_bias(gr, n, t, wf, dqw, rows, cols, stats_of(cal, t->act));
      free(wf_owned), free(dqw);
      if (op_tensor_is_borrowed(w)) op_release_pages(w->raw_data.data, w->raw_data.len);
    }
    char *qn = fmt_name(gr, t->w, "_quantized"), *sn = fmt_name(gr, t->w, "_scale"),
         *zn = fmt_name(gr, t->w, "_zero_point"), *dn = fmt_name(gr, t->w, "_dequantized");
    int8_t *zeros = op_xcalloc((size_t)nch, 1);
    free(j->q->name);
    j->q->name = op_xstrdup(qn);
    const char *q_name = op_graph_add_init(gr, j->q); /* the graph owns it now */
    j->q = NULL;
    const char *s_name = add_scales(gr, sn, f, &nch, pc ? 1 : 0, j->scales);
    const char *z_name = add_tensor(gr, zn, ONNX__TENSOR_PROTO__DATA_TYPE__INT8, &nch, pc ? 1 : 0, zeros);
    record(r, t->w, t->kind == T_GATHER ? "embedding" : "weight", pc ? "abs_max per channel" : "abs_max per tensor", j->lo,
           j->hi, j->scales, nch, pc ? t->w_axis : -1, 0, ONNX__TENSOR_PROTO__DATA_TYPE__INT8);
    /* Q_F16_CAST: DequantizeLinear writes float32, a Cast the float16 the node reads */
    if (t->kind == T_GATHER) { /* Gather(int8 table) -> DequantizeLinear over the hidden axis */
      char *gathered = fmt_name(gr, n->output[0], "_int8");
      char *d = f == Q_F16_CAST ? fmt_name(gr, n->output[0], "_float32") : op_xstrdup(n->output[0]);
      const char *din[3] = {gathered, s_name, z_name}, *dout[1] = {d};
      Onnx__NodeProto *dqn = op_node_new("DequantizeLinear", dn, din, 3, dout, 1);
      if (pc) op_node_add_int(dqn, "axis", -1);
      op_graph_append(g, dqn);
      if (f == Q_F16_CAST) free(add_cast(gr, d, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, n->output[0], NULL));
      free(n->output[0]);
      n->output[0] = gathered;
      op_node_set_input(n, 0, q_name);
      free(d);
    } else {
      char *d = f == Q_F16_CAST ? fmt_name(gr, dn, "_float32") : op_xstrdup(dn);
      const char *din[3] = {q_name, s_name, z_name}, *dout[1] = {d};
      Onnx__NodeProto *dqn = op_node_new("DequantizeLinear", dn, din, 3, dout, 1);
      if (pc) op_node_add_int(dqn, "axis", t->w_axis);
      op_graph_append(g, dqn);
      if (f == Q_F16_CAST) free(add_cast(gr, d, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16, dn, NULL));
      if (t->transpose >= 0) op_node_set_input(g->node[t->transpose], 0, dn);
      else op_node_set_input(n, (size_t)t->w_slot, dn);
      free(d);
    }
    if (f != Q_F32) r->half_form = f == Q_F16_NATIVE ? HALF_NATIVE : HALF_CAST;
    free(zeros);
    free(qn), free(sn), free(zn), free(dn);
  }
  weights_free(wq, ts.n);
  for (size_t i = 0; i < ts.n; i++) free(ts.v[i].act);
  for (size_t i = 0; i < dq_names.n; i++) free(dq_names.v[i]), free(src_names.v[i]);
  free(dq_names.v);
  free(src_names.v);
  free(ts.v);
  op_graph_free(gr);
  op_graph_remove_dead(g);
  if (op_graph_toposort(g)) return op_fail(err, OP_INVALID, "%s: the quantised graph has a cycle", m->path);
  return 0;
}

/* ---- search and entry point ---- */

static void report_reset(op_quant_report *r) {
  for (size_t i = 0; i < r->entries.n; i++) free(r->entries.v[i].name);
  r->entries.n = 0;
}

op_quant_report *op_quantize(op_model *m, const op_dataset *d, const op_quant_config *c, op_error *err) {
  if (op_quant_config_check(c, err)) return NULL;
  op_quant_report *r = op_xcalloc(1, sizeof *r);
  r->reduce_range = c->reduce_range;
  r->model = op_xstrdup(m->path);
  r->act_signed = c->act_signed;
  r->symmetric = c->symmetric || c->act_signed;
  r->bias_correction = c->bias_correction;
  op_graph *tgr = op_graph_build(m->proto->graph);
  char *already = op_quantized_form(tgr);
  if (already) {
    op_fail(err, OP_UNSUPPORTED, "%s: the model is already quantised, %s: quantize the float model", m->path, already);
    free(already);
    op_graph_free(tgr);
    op_quant_report_free(r);
    return NULL;
  }
  target_vec ts = {0};
  find_targets(tgr, c, &ts);
  const char *bf16_what = NULL;
  const Onnx__NodeProto *bf16 = bf16_target(tgr, ts.v, ts.n, NULL, &bf16_what);
  const char *bf16_weight = ts.n ? NULL : bf16_matrix(m->proto->graph);
  if (ts.n == 0 || bf16) {
    if (bf16) fail_bf16(err, m->path, bf16, bf16_what);
    else if (bf16_weight)
      op_fail(err, OP_UNSUPPORTED, "%s: the weights are bfloat16 (e.g. '%s'): quantize writes float32 and float16 QDQ only "
              "(ONNX Runtime's CPU provider has no bfloat16 kernels to run a bfloat16 QDQ model): quantise the float32 "
              "or float16 model", m->path, bf16_weight);
    else op_fail(err, OP_UNSUPPORTED, "%s: no node to quantise (op_types, include and exclude leave none)", m->path);
    free(ts.v);
    op_graph_free(tgr);
    op_quant_report_free(r);
    return NULL;
  }
  int n_b = c->n_batches ? c->n_batches : 1;
  bool search = c->n_methods > 1 || n_b > 1;
  int64_t total = -1;
  op_session *s = op_session_new(m, err); /* freed before apply() rewrites m */
  if (!s) goto fail;
  if (search && (total = op_dataset_samples(d, s, err)) < 0) goto fail; /* held-out samples follow the largest calibration set */
  int64_t max_calib = 0;
  for (int b = 0; b < n_b; b++) {
    int64_t want = c->n_batches ? c->batches[b] * c->batch : c->calib_samples;
    max_calib = want > max_calib ? want : max_calib;
  }
  int64_t eval_first = max_calib, eval_n = c->eval_samples ? c->eval_samples : 256, cap = 0;
  if (search && total < 2) {
    op_fail(err, OP_ARG, "%s: a search needs at least 2 samples (one to calibrate, one to score); the data has %lld",
            m->path, (long long)total);
    goto fail;
  }
  if (search && eval_first >= total) {
    /* too little data to hold some out after the calibration rows: calibration gives up the last
     * quarter, so that scoring rows never overlap calibration rows */
    eval_first = total - (total / 4 > 0 ? total / 4 : 1);
    cap = eval_first;
  }
  if (search && eval_first + eval_n > total) eval_n = total - eval_first;
  r->calib_cap = cap;
  r->data_samples = total;
  int n_trials = n_b * c->n_methods, trial = 0;
  bool tell = c->progress && isatty(STDERR_FILENO);
  double best_score = -INFINITY;
  int best_m = 0, best_b = 0;
  for (int b = 0; b < n_b && search; b++) {
    calib cal;
    calib_init(&cal, m, tgr, ts.v, ts.n);
    if (calibrate(s, d, c, c->n_batches ? c->batches[b] : 0, cap, &cal, NULL, err)) {
      calib_free(&cal);
      goto fail;
    }
    for (int k = 0; k < c->n_methods; k++) {
      if (tell)
        fprintf(stderr, "candidate %d/%d: method %s, %s%lld batches\n", ++trial, n_trials, op_cal_method_name(c->methods[k]),
                c->n_batches ? "" : "all calibration samples, ", (long long)(c->n_batches ? c->batches[b] : 0));
      op_model *q = op_model_clone(m, err);
      op_quant_report scratch = {0};
      int rc = q ? apply(q, c, &cal, c->methods[k], &scratch, err) : -1;
      op_verify_report *v = rc ? NULL : op_verify(m, q, d, &(op_run_options){.batch = c->batch, .samples = eval_n, .first = eval_first, .progress = c->progress}, err);
      report_reset(&scratch);
      free(scratch.entries.v);
      op_model_free(q);
      if (!v) {
        calib_free(&cal);
        goto fail;
      }
      op_quant_trial tr = {c->methods[k], c->n_batches ? c->batches[b] : 0, op_verify_min_cosine(v),
                           op_verify_min_agreement(v), op_verify_candidate_accuracy(v)};
      op_verify_report_free(v);
      OP_VEC_PUSH(r->trials, tr);
      double score = tr.agreement * 10 + tr.cosine; /* agreement first, cosine breaks ties */
      if (score > best_score) best_score = score, best_m = k, best_b = b;
    }
    calib_free(&cal);
  }
  r->method = c->methods[best_m];
  r->batches = c->n_batches ? c->batches[best_b] : 0;
  r->eval_first = eval_first;
  r->eval_samples = search ? eval_n : 0;
  calib cal;
  calib_init(&cal, m, tgr, ts.v, ts.n);
  if (search) op_row_set_capture(&r->eval_rows, d, eval_first, eval_n);
  int rc = calibrate(s, d, c, r->batches, cap, &cal, &r->calib_rows, err);
  op_session_free(s);
  s = NULL;
  if (!rc) rc = apply(m, c, &cal, r->method, r, err);
  calib_free(&cal);
  if (rc) goto fail;
  free(ts.v);
  op_graph_free(tgr);
  return r;
fail:
  op_session_free(s);
  free(ts.v);
  op_graph_free(tgr);
  op_quant_report_free(r);
  return NULL;
}

void op_quant_report_free(op_quant_report *r) {
  if (!r) return;
  report_reset(r);
  free(r->entries.v);
  free(r->trials.v);
  free(r->model);
  op_row_set_free(&r->calib_rows);
  op_row_set_free(&r->eval_rows);
  free(r);
}

char *op_quant_report_text(const op_quant_report *r) {
  size_t cap = 4096 + (r->trials.n + r->entries.n) * 200, off = 0;
  char *s = op_xmalloc(cap);
#define P(...) off += (size_t)snprintf(s + off, cap - off, __VA_ARGS__)
  if (r->trials.n) {
    P("%-8s %8s %12s %15s %10s\n", "method", "batches", "mean_cosine", "top1_agreement", "accuracy");
    for (size_t i = 0; i < r->trials.n; i++) {
      const op_quant_trial *t = &r->trials.v[i];
      char acc[16] = "-";
      if (t->accuracy >= 0) snprintf(acc, sizeof acc, "%.2f%%", 100 * t->accuracy);
      P("%-8s %8lld %12.6f %14.2f%% %10s%s\n", op_cal_method_name(t->method), (long long)t->batches, t->cosine,
        100 * t->agreement, acc, t->method == r->method && t->batches == r->batches ? "  <- kept" : "");
    }
    if (r->calib_cap)
      P("(the data holds %lld samples, too few to hold any out after the calibration samples asked for: calibration "
        "used samples 0..%lld only, and the candidates were scored against the fp32 model on samples %lld..%lld)\n",
        (long long)r->data_samples, (long long)(r->calib_cap - 1), (long long)r->eval_first,
        (long long)(r->eval_first + r->eval_samples - 1));
    else
      P("(scored against the fp32 model on samples %lld..%lld, held out of calibration)\n", (long long)r->eval_first,
        (long long)(r->eval_first + r->eval_samples - 1));
  }
  for (int k = 0; k < 2; k++) { /* which file rows calibrated and scored */
    const op_row_set *rs = k ? &r->eval_rows : &r->calib_rows;
    if (!rs->n) continue;
    char *rule = op_row_set_rule(rs);
    P("%s rows: %.300s\n", k ? "evaluation" : "calibration", rule);
    free(rule);
  }
  int nw = 0, na = 0;
  for (size_t i = 0; i < r->entries.n; i++) {
    if (strcmp(r->entries.v[i].kind, "activation")) nw++;
    else na++;
  }
  P("quantised: %d weight tensors (int8%s, symmetric%s), %d activation tensors (%s, %s, method %s)%s%s", nw,
    r->reduce_range ? " reduced to 7 bits [-63, 63]" : "", r->per_tensor_fallback ? ", per tensor: opset < 13 has no per-axis DequantizeLinear" : "", na,
    r->act_signed ? "int8" : "uint8", r->symmetric ? "symmetric" : "asymmetric", op_cal_method_name(r->method),
    r->bias_correction ? ", biases corrected: " : "\n", "");
  if (r->bias_correction) P("%d\n", r->biases_corrected);
  if (r->half_form) P("float16 model: %s\n", r->half_form);
#undef P
  return s;
}

char *op_quant_report_json(const op_quant_report *r) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "model", r->model);
  cJSON_AddStringToObject(root, "method", op_cal_method_name(r->method));
  if (r->calib_rows.n) {
    cJSON *rows = cJSON_AddObjectToObject(root, "rows");
    cJSON_AddItemToObject(rows, "calibration", op_row_set_json(&r->calib_rows));
    if (r->eval_rows.n) cJSON_AddItemToObject(rows, "evaluation", op_row_set_json(&r->eval_rows));
  }
  if (r->batches) cJSON_AddNumberToObject(root, "calibration_batches", (double)r->batches);
  cJSON_AddStringToObject(root, "activation_type", r->act_signed ? "int8" : "uint8");
  cJSON_AddBoolToObject(root, "symmetric_activations", r->symmetric);
  cJSON_AddBoolToObject(root, "bias_correction", r->bias_correction);
  cJSON_AddBoolToObject(root, "reduce_range", r->reduce_range);
  if (r->calib_cap) cJSON_AddNumberToObject(root, "calibration_capped_at", (double)r->calib_cap);
  cJSON_AddNumberToObject(root, "biases_corrected", r->biases_corrected);
  if (r->half_form) cJSON_AddStringToObject(root, "float16_form", r->half_form);
  cJSON *tr = cJSON_AddArrayToObject(root, "trials");
  for (size_t i = 0; i < r->trials.n; i++) {
    const op_quant_trial *t = &r->trials.v[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "method", op_cal_method_name(t->method));
    cJSON_AddNumberToObject(o, "batches", (double)t->batches);
    cJSON_AddNumberToObject(o, "mean_cosine", t->cosine);
    cJSON_AddNumberToObject(o, "top1_agreement", t->agreement);
    if (t->accuracy >= 0) cJSON_AddNumberToObject(o, "accuracy", t->accuracy);
    cJSON_AddItemToArray(tr, o);
  }
  cJSON *ts = cJSON_AddArrayToObject(root, "tensors");
  for (size_t i = 0; i < r->entries.n; i++) {
    const op_quant_entry *e = &r->entries.v[i];
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", e->name);
    cJSON_AddStringToObject(o, "kind", e->kind);
    cJSON_AddStringToObject(o, "method", e->method);
    cJSON_AddStringToObject(o, "type", e->qtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT8 ? "int8" : "uint8");
    cJSON *range = cJSON_AddArrayToObject(o, "observed_range");
    cJSON_AddItemToArray(range, cJSON_CreateNumber(e->lo));
    cJSON_AddItemToArray(range, cJSON_CreateNumber(e->hi));
    if (!strcmp(e->kind, "activation")) {
      cJSON *q = cJSON_AddArrayToObject(o, "quantization_range");
      cJSON_AddItemToArray(q, cJSON_CreateNumber(e->range_lo));
      cJSON_AddItemToArray(q, cJSON_CreateNumber(e->range_hi));
      cJSON_AddNumberToObject(o, "scale", e->scale_min);
    } else {
      cJSON_AddNumberToObject(o, "channels", (double)e->n_scales);
      if (e->axis >= 0) cJSON_AddNumberToObject(o, "axis", e->axis);
      cJSON_AddNumberToObject(o, "scale_min", e->scale_min);
      cJSON_AddNumberToObject(o, "scale_max", e->scale_max);
    }
    cJSON_AddNumberToObject(o, "zero_point", e->zero_point);
    cJSON_AddItemToArray(ts, o);
  }
  return op_json_finish(root);
}

/* issue 12: the calibration and evaluation rows one by one, for -v */
char *op_quant_report_rows(const op_quant_report *r) {
  if (!r->calib_rows.n) return NULL;
  char *c = op_row_set_list(&r->calib_rows), *e = op_row_set_list(&r->eval_rows);
  size_t n = strlen(c) + strlen(e) + 64;
  char *s = op_xmalloc(n);
  snprintf(s, n, "calibration rows: %s\n%s%s%s", c, r->eval_rows.n ? "evaluation rows: " : "", e, r->eval_rows.n ? "\n" : "");
  free(c);
  free(e);
  return s;
}
