/* plan.c - the pruning configuration (flags and JSON share one setter) and the plan it yields:
 * per layer, which heads and FFN neurons stay, chosen by importance (L2/L1 norm of each unit's
 * weights, or random) or by being all zero already (--compact). */
#include "prune/prune.h"
#include "prune/target.h"
#include "parallel/parallel.h"
#include "verify/stream.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- configuration ---- */

op_prune_config *op_prune_config_new(void) {
  op_prune_config *c = op_xcalloc(1, sizeof *c);
  c->head_sparsity = c->ffn_sparsity = c->width = -1;
  c->ffn_size = c->num_heads = -1;
  c->kv_head_sparsity = -1;
  c->num_kv_heads = -1;
  c->importance = OP_IMP_L2;
  c->samples = 256;
  c->batch = 8;
  c->target_flops = c->target_params = -1;
  c->flops_seq = 128;
  c->multiple_of = 1;
  c->max_drop = c->min_agreement = c->max_ppl_increase = -1;
  c->min_cosine = -2; /* a cosine floor may be -1 */
  c->eval_samples = 256;
  c->search_steps = 6;
  c->compensate = -1;
  c->alloc_steps = -1; /* issue 12: the allocation search, auto */
  return c;
}

/* Data given: reconstruction ranks units unless the caller chose, and compensation is on unless off. */
void op_prune_config_set_data(op_prune_config *c, const op_dataset *d) {
  c->data = d;
  if (d && !c->importance_set) c->importance = OP_IMP_RECONSTRUCTION;
  if (d && c->compensate < 0) c->compensate = 1;
}

void op_prune_config_free(op_prune_config *c) {
  if (!c) return;
  for (size_t i = 0; i < c->layers.n; i++) {
    free(c->layers.v[i].heads.v);
    free(c->layers.v[i].neurons.v);
    free(c->layers.v[i].kv_heads.v);
    free(c->layers.v[i].cross_heads.v);
  }
  free(c->layers.v);
  free(c->keep_layers.v);
  free(c);
}

static int parse_fraction(const char *key, const char *s, double lo, bool lo_open, double hi, bool hi_open,
                          double *out, op_error *err) {
  char *e;
  errno = 0;
  double v = strtod(s, &e);
  bool bad = errno || e == s || *e || isnan(v) || (lo_open ? v <= lo : v < lo) || (hi_open ? v >= hi : v > hi);
  if (bad)
    return op_fail(err, OP_ARG, "%s: '%s' is outside %s%g, %g%s", key, s, lo_open ? "(" : "[", lo, hi,
                   hi_open ? ")" : "]");
  *out = v;
  return 0;
}

static int parse_count(const char *key, const char *s, int64_t min, int64_t *out, op_error *err) {
  char *e;
  errno = 0;
  long long v = strtoll(s, &e, 10);
  if (errno || e == s || *e || v < min)
    return op_fail(err, OP_ARG, "%s: '%s' is not a whole number >= %lld", key, s, (long long)min);
  *out = v;
  return 0;
}

static int parse_list(const char *key, const char *s, op_int_vec *out, op_error *err) {
  out->n = 0;
  const char *p = s;
  while (*p) {
    char *e;
    errno = 0;
    long v = strtol(p, &e, 10);
    if (errno || e == p || v < 0 || v > 1000000 || (*e && *e != ','))
      return op_fail(err, OP_ARG, "%s: '%s' is not a comma-separated list of indices", key, s);
    OP_VEC_PUSH(*out, (int)v);
    p = *e ? e + 1 : e;
  }
  if (out->n == 0) return op_fail(err, OP_ARG, "%s: empty list", key);
  return 0;
}

/* Layer references "0,3" or "encoder.0,decoder.1" (resolved against the model when planning). */
static int parse_layer_list(const char *key, const char *s, op_int_vec *out, op_error *err) {
  out->n = 0;
  const char *p = s;
  while (*p) {
    const char *e;
    int ref;
    if (op_layer_ref_parse(p, &e, &ref) || (*e && *e != ','))
      return op_fail(err, OP_ARG, "%s: '%s' is not a comma-separated list of layers (N, encoder.N or decoder.N)", key, s);
    OP_VEC_PUSH(*out, ref);
    p = *e ? e + 1 : e;
  }
  if (out->n == 0) return op_fail(err, OP_ARG, "%s: empty list", key);
  return 0;
}

int op_prune_config_set(op_prune_config *c, const char *key, const char *value, op_error *err) {
  if (strcmp(key, "head_sparsity") == 0) return parse_fraction(key, value, 0, false, 1, true, &c->head_sparsity, err);
  if (strcmp(key, "ffn_sparsity") == 0) return parse_fraction(key, value, 0, false, 1, true, &c->ffn_sparsity, err);
  if (strcmp(key, "width") == 0) return parse_fraction(key, value, 0, true, 1, false, &c->width, err);
  if (strcmp(key, "ffn_size") == 0) return parse_count(key, value, 1, &c->ffn_size, err);
  if (strcmp(key, "num_heads") == 0) return parse_count(key, value, 1, &c->num_heads, err);
  if (strcmp(key, "kv_head_sparsity") == 0)
    return parse_fraction(key, value, 0, false, 1, true, &c->kv_head_sparsity, err);
  if (strcmp(key, "num_kv_heads") == 0) return parse_count(key, value, 1, &c->num_kv_heads, err);
  if (strcmp(key, "seed") == 0) {
    int64_t s = 0;
    if (parse_count(key, value, 0, &s, err)) return -1;
    c->seed = (uint64_t)s;
    c->seed_set = true;
    return 0;
  }
  /* issue 12: targets */
  if (strcmp(key, "target_flops") == 0) return parse_fraction(key, value, 0, true, 1, false, &c->target_flops, err);
  if (strcmp(key, "target_params") == 0) return parse_fraction(key, value, 0, true, 1, false, &c->target_params, err);
  if (strcmp(key, "flops_seq") == 0) return parse_count(key, value, 1, &c->flops_seq, err);
  if (strcmp(key, "multiple_of") == 0) return parse_count(key, value, 1, &c->multiple_of, err);
  /* issue 12: the accuracy floor */
  if (strcmp(key, "max_drop") == 0) return parse_fraction(key, value, 0, false, 100, false, &c->max_drop, err);
  if (strcmp(key, "min_agreement") == 0) return parse_fraction(key, value, 0, false, 1, false, &c->min_agreement, err);
  if (strcmp(key, "min_cosine") == 0) return parse_fraction(key, value, -1, false, 1, false, &c->min_cosine, err);
  if (strcmp(key, "max_ppl_increase") == 0) return parse_fraction(key, value, 0, false, 1e9, false, &c->max_ppl_increase, err);
  if (strcmp(key, "eval_samples") == 0) return parse_count(key, value, 1, &c->eval_samples, err);
  if (strcmp(key, "search_steps") == 0) return parse_count(key, value, 1, &c->search_steps, err);
  if (strcmp(key, "samples") == 0) return parse_count(key, value, 1, &c->samples, err);
  if (strcmp(key, "alloc_steps") == 0) { /* issue 12: the allocation judged end to end (alloc_search.h) */
    if (strcmp(value, "auto") == 0) return c->alloc_steps = -1, 0;
    return parse_count(key, value, 0, &c->alloc_steps, err);
  }
  if (strcmp(key, "batch") == 0) return parse_count(key, value, 1, &c->batch, err);
  if (strcmp(key, "keep_layers") == 0) {
    c->keep_layers_set = true;
    return parse_layer_list(key, value, &c->keep_layers, err);
  }
  if (strcmp(key, "importance") == 0) {
    int i = OP_IMP_L2;
    while (i <= OP_IMP_RECONSTRUCTION && strcmp(value, op_importance_key((op_importance)i))) i++;
    if (i > OP_IMP_RECONSTRUCTION)
      return op_fail(err, OP_ARG, "importance: '%s' is not one of l1, l2, random, activation, reconstruction", value);
    c->importance = (op_importance)i;
    c->importance_set = true;
    return 0;
  }
  if (strcmp(key, "scope") == 0) {
    if (strcmp(value, "layer") == 0) c->global = false;
    else if (strcmp(value, "global") == 0) c->global = true;
    else return op_fail(err, OP_ARG, "scope: '%s' is not one of layer, global", value);
    return 0;
  }
  if (strcmp(key, "progress") == 0) {
    c->progress = strcmp(value, "1") == 0 || strcmp(value, "true") == 0;
    return 0;
  }
  if (strcmp(key, "compensate") == 0 || strcmp(key, "no_compensate") == 0) { /* reconstruction (recon.h) */
    bool on = strcmp(value, "1") == 0 || strcmp(value, "true") == 0;
    if (!on && strcmp(value, "0") != 0 && strcmp(value, "false") != 0)
      return op_fail(err, OP_ARG, "%s: '%s' is not true or false", key, value);
    c->compensate = key[0] == 'n' ? !on : on;
    return 0;
  }
  if (strcmp(key, "compact") == 0) {
    if (strcmp(value, "1") == 0 || strcmp(value, "true") == 0) c->compact = true;
    else if (strcmp(value, "0") == 0 || strcmp(value, "false") == 0) c->compact = false;
    else return op_fail(err, OP_ARG, "compact: '%s' is not true or false", value);
    return 0;
  }
  return op_fail(err, OP_ARG, "unknown option '%s'", key);
}

/* issue 12: a target decides every count itself, so a ratio or count beside it would be silently overridden */
static int check_target(const op_prune_config *c, op_error *err) {
  if (c->target_flops < 0 && c->target_params < 0) return 0;
  const char *key = c->target_flops >= 0 ? "target_flops" : "target_params";
  if (c->target_flops >= 0 && c->target_params >= 0)
    return op_fail(err, OP_ARG, "target_flops and target_params contradict each other: give one");
  const char *other = c->head_sparsity >= 0 ? "head_sparsity" : c->ffn_sparsity >= 0 ? "ffn_sparsity"
                      : c->width >= 0 ? "width" : c->num_heads >= 0 ? "num_heads" : c->ffn_size >= 0 ? "ffn_size"
                      : c->kv_head_sparsity >= 0 ? "kv_head_sparsity" : c->num_kv_heads >= 0 ? "num_kv_heads"
                      : c->global ? "scope" : c->layers.n ? "layers" : c->compact ? "compact" : NULL;
  if (other) return op_fail(err, OP_ARG, "%s: decides the heads and FFN widths itself; %s contradicts it", key, other);
  return 0;
}

int op_prune_config_check(const op_prune_config *c, op_error *err) {
  if (check_target(c, err)) return -1;
  /* issue 12 (alloc_search.c): the allocation search moves counts between layers; asked for where the
   * counts cannot differ or are not judged by reconstruction, it would silently do nothing */
  if (c->alloc_steps > 0 && !c->global && c->target_flops <= 0 && c->target_params <= 0 && !op_prune_config_has_floor(c))
    return op_fail(err, OP_ARG, "alloc_steps: moves heads and neurons between layers, which only scope global, a "
                   "target or an accuracy floor lets differ");
  if (c->alloc_steps > 0 && c->importance_set && c->importance != OP_IMP_RECONSTRUCTION)
    return op_fail(err, OP_ARG, "alloc_steps: applies with importance reconstruction (the counts come from its error "
                   "curves), not '%s'", op_importance_key(c->importance));
  /* the seed also orders the rows of calibration data (data/rows.c) */
  if (c->seed_set && c->importance != OP_IMP_RANDOM && !op_prune_config_uses_data(c))
    return op_fail(err, OP_ARG, "seed: applies only to importance random (importance is '%s')",
                   op_importance_key(c->importance));
  /* reconstruction allocates global counts from every block's error curve (recon_alloc.c); per-layer
   * settings would be overridden by it */
  if (c->global && c->importance == OP_IMP_RECONSTRUCTION && c->layers.n)
    return op_fail(err, OP_ARG, "scope: global with importance reconstruction allocates every layer's count from "
                   "the measured errors; per-layer settings contradict it: use scope layer");
  return 0;
}

bool op_prune_config_has_floor(const op_prune_config *c) {
  return c->max_drop >= 0 || c->min_agreement >= 0 || c->min_cosine >= -1 ||
         c->max_ppl_increase >= 0;
}

bool op_prune_config_uses_data(const op_prune_config *c) {
  return c->importance == OP_IMP_ACTIVATION || c->importance == OP_IMP_RECONSTRUCTION || c->compensate == 1 ||
         op_prune_config_has_floor(c);
}

/* JSON scalar or list -> the text form op_prune_config_set takes. */
bool op_json_to_text(const cJSON *v, char *buf, size_t n) {
  if (cJSON_IsBool(v)) return snprintf(buf, n, "%s", cJSON_IsTrue(v) ? "true" : "false") > 0;
  if (cJSON_IsString(v)) return snprintf(buf, n, "%s", v->valuestring) < (int)n;
  if (cJSON_IsNumber(v)) {
    if (v->valuedouble == floor(v->valuedouble) && fabs(v->valuedouble) < 1e15)
      return snprintf(buf, n, "%lld", (long long)v->valuedouble) > 0;
    return snprintf(buf, n, "%.17g", v->valuedouble) > 0;
  }
  if (cJSON_IsArray(v)) {
    size_t off = 0;
    buf[0] = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, v) {
      int w;
      if (cJSON_IsString(x)) /* layer names: "decoder.1" */
        w = snprintf(buf + off, n - off, "%s%s", off ? "," : "", x->valuestring);
      else if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble)) return false;
      else if (fabs(x->valuedouble) >= 1e15) /* past long long: the list's parser refuses it by its text */
        w = snprintf(buf + off, n - off, "%s%.17g", off ? "," : "", x->valuedouble);
      else w = snprintf(buf + off, n - off, "%s%lld", off ? "," : "", (long long)x->valuedouble);
      if (w < 0 || (size_t)w >= n - off) return false;
      off += (size_t)w;
    }
    return true;
  }
  return false;
}

static int layer_entry(op_prune_config *c, const cJSON *e, int index, const char *path, op_error *err) {
  op_layer_cfg L = {.layer = index, .head_sparsity = -1, .ffn_sparsity = -1, .num_heads = -1, .ffn_size = -1,
                    .kv_head_sparsity = -1, .num_kv_heads = -1, .attention = -1, .ffn = -1, .cross_attention = -1};
  char shown[40];
  op_layer_ref_text(index, shown, sizeof shown);
  char text[4096];
  const cJSON *f;
  int rc = 0;
  cJSON_ArrayForEach(f, e) {
    const char *k = f->string;
    char key[96];
    snprintf(key, sizeof key, "%s: layers[%s].%s", path, shown, k);
    if (!op_json_to_text(f, text, sizeof text)) {
      rc = op_fail(err, OP_ARG, "%s: unsupported value", key);
    } else if (strcmp(k, "layer") == 0) {
      continue;
    } else if (strcmp(k, "head_sparsity") == 0) {
      rc = parse_fraction(key, text, 0, false, 1, true, &L.head_sparsity, err);
    } else if (strcmp(k, "ffn_sparsity") == 0) {
      rc = parse_fraction(key, text, 0, false, 1, true, &L.ffn_sparsity, err);
    } else if (strcmp(k, "num_heads") == 0) {
      rc = parse_count(key, text, 1, &L.num_heads, err);
    } else if (strcmp(k, "ffn_size") == 0) {
      rc = parse_count(key, text, 1, &L.ffn_size, err);
    } else if (strcmp(k, "kv_head_sparsity") == 0) {
      rc = parse_fraction(key, text, 0, false, 1, true, &L.kv_head_sparsity, err);
    } else if (strcmp(k, "num_kv_heads") == 0) {
      rc = parse_count(key, text, 1, &L.num_kv_heads, err);
    } else if (strcmp(k, "kv_heads") == 0) {
      L.kv_heads_set = true;
      if (text[0]) rc = parse_list(key, text, &L.kv_heads, err);
    } else if (strcmp(k, "heads") == 0) {
      L.heads_set = true;
      if (text[0]) rc = parse_list(key, text, &L.heads, err);
    } else if (strcmp(k, "neurons") == 0) {
      L.neurons_set = true;
      if (text[0]) rc = parse_list(key, text, &L.neurons, err);
    } else if (strcmp(k, "cross_heads") == 0) {
      L.cross_heads_set = true;
      if (text[0]) rc = parse_list(key, text, &L.cross_heads, err);
    } else if (strcmp(k, "attention") == 0 || strcmp(k, "ffn") == 0 || strcmp(k, "cross_attention") == 0) {
      if (!cJSON_IsBool(f)) rc = op_fail(err, OP_ARG, "%s: expected true or false", key);
      else if (k[0] == 'a') L.attention = cJSON_IsTrue(f);
      else if (k[0] == 'c') L.cross_attention = cJSON_IsTrue(f);
      else L.ffn = cJSON_IsTrue(f);
    } else {
      rc = op_fail(err, OP_ARG, "%s: unknown key", key);
    }
    if (rc) break;
  }
  if (rc) {
    free(L.heads.v);
    free(L.neurons.v);
    free(L.kv_heads.v);
    free(L.cross_heads.v);
    return -1;
  }
  OP_VEC_PUSH(c->layers, L);
  return 0;
}

int op_prune_config_from_json(op_prune_config *c, const cJSON *root, const char *path, op_error *err) {
  if (!cJSON_IsObject(root)) return op_fail(err, OP_ARG, "%s: not a JSON object", path);
  int rc = 0;
  const cJSON *e;
  cJSON_ArrayForEach(e, root) {
    char key[160], text[4096];
    snprintf(key, sizeof key, "%s: %s", path, e->string);
    if (strcmp(e->string, "layers") == 0) {
      const cJSON *l;
      int pos = 0;
      size_t first_layer = c->layers.n;
      cJSON_ArrayForEach(l, e) {
        int idx = pos;
        if (cJSON_IsArray(e)) {
          const cJSON *li = cJSON_GetObjectItemCaseSensitive(l, "layer");
          const char *e = NULL;
          if (li && cJSON_IsString(li)) { /* a layer name: "decoder.1" */
            if (op_layer_ref_parse(li->valuestring, &e, &idx) || *e) {
              rc = op_fail(err, OP_ARG, "%s: layers[%d]: layer: '%.200s' is not N, encoder.N or decoder.N", path, pos,
                           li->valuestring);
              break;
            }
          } else if (li) { /* a layer index: a whole number that fits, never clamped or wrapped */
            double v = cJSON_IsNumber(li) ? li->valuedouble : -1;
            if (!cJSON_IsNumber(li) || v != floor(v) || v < 0 || v > INT_MAX) {
              char shown[64] = "not a number";
              if (cJSON_IsNumber(li))
                snprintf(shown, sizeof shown, fabs(v) < 1e15 && v == floor(v) ? "%.0f" : "%g", v);
              rc = op_fail(err, OP_ARG, "%s: layers[%d]: layer: %s is not a whole number in [0, %d]", path, pos, shown,
                           INT_MAX);
              break;
            }
            idx = (int)v;
          }
        } else {
          char *end;
          errno = 0;
          long v = strtol(l->string, &end, 10);
          const char *e2;
          if (!op_layer_ref_parse(l->string, &e2, &idx) && !*e2 && op_layer_ref_is_stacked(idx)) {
            /* "decoder.1": a layer name */
          } else if (errno || end == l->string || *end || v < 0 || v > INT_MAX) {
            rc = op_fail(err, OP_ARG, "%s: layers: key '%.200s' is not a layer index", path, l->string);
            break;
          } else {
            idx = (int)v;
          }
        }
        bool seen = false; /* one entry per layer: a second would silently win */
        for (size_t k = first_layer; k < c->layers.n; k++) seen |= c->layers.v[k].layer == idx;
        if (seen) {
          char shown[40];
          rc = op_fail(err, OP_ARG, "%s: layers: layer %s appears twice", path, op_layer_ref_text(idx, shown, sizeof shown));
          break;
        }
        if (!cJSON_IsObject(l)) {
          rc = op_fail(err, OP_ARG, "%s: layers[%d]: expected an object", path, pos);
          break;
        }
        if ((rc = layer_entry(c, l, idx, path, err))) break;
        pos++;
      }
    } else if (!op_json_to_text(e, text, sizeof text)) {
      rc = op_fail(err, OP_ARG, "%s: unsupported value", key);
    } else {
      op_error inner;
      rc = op_prune_config_set(c, e->string, text, &inner);
      if (rc) op_fail(err, OP_ARG, "%s: %s", path, inner.message);
    }
    if (rc) break;
  }
  return rc;
}

/* The deepest nesting of [ and { in text, strings skipped; stops counting past limit. */
static int json_depth(const char *s, int limit) {
  int depth = 0, max = 0;
  bool in_str = false;
  for (; *s && max <= limit; s++) {
    if (in_str) {
      if (*s == '\\' && s[1]) s++;
      else if (*s == '"') in_str = false;
    } else if (*s == '"') {
      in_str = true;
    } else if (*s == '[' || *s == '{') {
      if (++depth > max) max = depth;
    } else if (*s == ']' || *s == '}') {
      depth--;
    }
  }
  return max;
}

static int cmp_keys(const void *a, const void *b) {
  return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* A key given twice in one object: JSON leaves it undefined, cJSON would keep the first silently. */
static int json_unique_keys(const cJSON *v, const char *path, const char *where, op_error *err) {
  size_t n = 0;
  const cJSON *c;
  cJSON_ArrayForEach(c, v) n++;
  if (cJSON_IsObject(v) && n > 1) {
    const cJSON **keys = op_xmalloc(n * sizeof *keys);
    size_t k = 0;
    cJSON_ArrayForEach(c, v) keys[k++] = c;
    qsort(keys, n, sizeof *keys, cmp_keys);
    for (k = 1; k < n; k++)
      if (strcmp(keys[k]->string, keys[k - 1]->string) == 0) {
        int rc = op_fail(err, OP_ARG, "%s: %s%skey '%.200s' appears twice", path, where, where[0] ? ": " : "",
                         keys[k]->string);
        free(keys);
        return rc;
      }
    free(keys);
  }
  int i = 0;
  cJSON_ArrayForEach(c, v) {
    char sub[512];
    if (cJSON_IsObject(v)) snprintf(sub, sizeof sub, "%s%s%.200s", where, where[0] ? "." : "", c->string);
    else snprintf(sub, sizeof sub, "%s[%d]", where, i);
    i++;
    if (json_unique_keys(c, path, sub, err)) return -1;
  }
  return 0;
}

cJSON *op_json_load(const char *path, op_error *err) {
  char *text = op_read_file(path, NULL, err);
  if (!text) return NULL;
  if (json_depth(text, OP_JSON_MAX_DEPTH) > OP_JSON_MAX_DEPTH) {
    op_read_file_free(text);
    return op_fail_null(err, OP_ARG, "%s: JSON nested deeper than %d levels", path, OP_JSON_MAX_DEPTH);
  }
  cJSON *root = cJSON_Parse(text);
  if (!root) {
    const char *at = cJSON_GetErrorPtr();
    long off = at && at >= text ? (long)(at - text) : -1;
    op_read_file_free(text);
    return op_fail_null(err, OP_ARG, "%s: not valid JSON (at byte %ld)", path, off);
  }
  op_read_file_free(text);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return op_fail_null(err, OP_ARG, "%s: not a JSON object", path);
  }
  if (json_unique_keys(root, path, "", err)) {
    cJSON_Delete(root);
    return NULL;
  }
  return root;
}

int op_prune_config_load_json(op_prune_config *c, const char *path, op_error *err) {
  cJSON *root = op_json_load(path, err);
  if (!root) return -1;
  int rc = op_prune_config_from_json(c, root, path, err);
  cJSON_Delete(root);
  return rc;
}

/* ---- importance ---- */

const char *op_importance_key(op_importance imp) {
  static const char *const keys[] = {"l2", "l1", "random", "activation", "reconstruction"}; /* op_importance's order */
  return (unsigned)imp < sizeof keys / sizeof *keys ? keys[imp] : "?";
}

const char *op_importance_name(op_importance imp) {
  switch (imp) {
    case OP_IMP_L1:
      return "l1 (sum of |w| over each head's / neuron's weights and biases)";
    case OP_IMP_RANDOM:
      return "random (seeded)";
    case OP_IMP_ACTIVATION:
      return "activation (sum over a unit's channels of rms activation on the data x L2 norm of its output-projection row)";
    case OP_IMP_RECONSTRUCTION:
      return "reconstruction (increase of the block's output error on the data when the unit is removed and the rest "
             "refit: structured OBS, greedy, block by block)";
    default:
      return "l2 (norm of each head's / neuron's weights and biases)";
  }
}

/* Sum of |w| or w^2 over one row, with independent partial sums so the adds pipeline (a single
 * double accumulator would serialise them), and whether any entry is nonzero. */
static double row_sum(const float *w, int64_t n, bool l1, bool *any) {
  double s[4] = {0, 0, 0, 0};
  bool nz = false;
  int64_t c = 0;
  for (; c + 4 <= n; c += 4)
    for (int k = 0; k < 4; k++) {
      double x = w[c + k];
      s[k] += l1 ? fabs(x) : x * x;
      nz |= w[c + k] != 0.f;
    }
  for (; c < n; c++) {
    double x = w[c];
    s[0] += l1 ? fabs(x) : x * x;
    nz |= w[c] != 0.f;
  }
  *any = nz;
  return (s[0] + s[1]) + (s[2] + s[3]);
}

/* n elements of a float32 / float16 / bfloat16 tensor's raw (maybe unaligned) bytes as float32:
 * weights of every float type are scored in float32. */
static void load_f32(float *dst, const uint8_t *src, int64_t n, int32_t dtype) {
  if (dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
    memcpy(dst, src, (size_t)n * sizeof *dst);
    return;
  }
  for (int64_t i = 0; i < n; i++) {
    uint16_t h;
    memcpy(&h, src + 2 * i, 2);
    uint32_t bits;
    if (dtype == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16) {
      bits = (uint32_t)h << 16;
    } else { /* IEEE half: sign, 5-bit exponent, 10-bit mantissa */
      uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1f, m = h & 0x3ffu;
      if (e == 0x1f) bits = sign | 0x7f800000u | (m << 13);
      else if (e) bits = sign | ((e + 112) << 23) | (m << 13);
      else if (!m) bits = sign;
      else { /* subnormal: normalise */
        e = 113;
        while (!(m & 0x400u)) m <<= 1, e--;
        bits = sign | (e << 23) | ((m & 0x3ffu) << 13);
      }
    }
    memcpy(&dst[i], &bits, 4);
  }
}

/* One channel_sums job: a [rows, cols] weight in raw (maybe unaligned) bytes of its float type. */
typedef struct sums_job {
  const uint8_t *W;
  int32_t dtype;
  size_t es;
  int64_t rows, cols;
  bool l1;
  double *sum;
  bool *nz;
} sums_job;

/* Channels are rows: rows [lo, hi), each summed on its own. */
static void row_sums(void *ctx, int64_t lo, int64_t hi) {
  const sums_job *j = ctx;
  float *w = op_xmalloc((size_t)j->cols * sizeof *w);
  for (int64_t r = lo; r < hi; r++) {
    load_f32(w, j->W + (size_t)(r * j->cols) * j->es, j->cols, j->dtype);
    j->sum[r] = row_sum(w, j->cols, j->l1, &j->nz[r]);
  }
  free(w);
}

/* Channels are columns: columns [lo, hi) over all rows in order, so every column's sum is formed in
 * the same order however the columns are split between threads. */
static void col_sums(void *ctx, int64_t lo, int64_t hi) {
  const sums_job *j = ctx;
  int64_t n = hi - lo;
  float *w = op_xmalloc((size_t)n * sizeof *w);
  double *sum = j->sum + lo;
  bool *nz = j->nz + lo;
  for (int64_t r = 0; r < j->rows; r++) {
    load_f32(w, j->W + (size_t)(r * j->cols + lo) * j->es, n, j->dtype);
    if (j->l1)
      for (int64_t c = 0; c < n; c++) sum[c] += fabsf(w[c]);
    else
      for (int64_t c = 0; c < n; c++) sum[c] += (double)w[c] * w[c];
    for (int64_t c = 0; c < n; c++) nz[c] |= w[c] != 0.f;
  }
  free(w);
}

/* Per-channel sums of |w| or w^2 and nonzero flags over a projection's output channels (with the
 * bias) or input channels. sum and nz have one entry per channel. The weight is read from its raw
 * bytes, which may be borrowed from the model file and unaligned: scoring must not make a copy of
 * every weight. */
static void channel_sums(const op_analysis *a, const op_proj *p, bool out_side, op_importance imp, double *sum,
                         bool *nz) {
  Onnx__TensorProto *wt = op_proj_tensor(a, p->w), *bt = op_proj_tensor(a, p->b);
  int64_t nch = out_side ? p->out : p->in;
  float *B = NULL;
  if (out_side && bt && op_tensor_to_raw(bt) == 0) { /* the bias belongs to the output channels */
    B = op_xmalloc((size_t)nch * sizeof *B);
    load_f32(B, bt->raw_data.data, nch, bt->data_type);
  }
  sums_job j = {.W = op_tensor_to_raw(wt) == 0 ? wt->raw_data.data : NULL,
                .dtype = wt->data_type,
                .es = op_dtype_size(wt->data_type),
                .rows = p->w_out_major ? p->out : p->in,
                .cols = p->w_out_major ? p->in : p->out,
                .l1 = imp == OP_IMP_L1,
                .sum = sum,
                .nz = nz};
  memset(sum, 0, (size_t)nch * sizeof *sum);
  memset(nz, 0, (size_t)nch);
  if (out_side == p->w_out_major)
    op_parallel_for(j.rows, j.cols * (int64_t)j.es, row_sums, &j);
  else
    op_parallel_for(j.cols, j.rows * (int64_t)j.es, col_sums, &j);
  for (int64_t c = 0; out_side && B && c < nch; c++) {
    sum[c] += j.l1 ? fabsf(B[c]) : (double)B[c] * B[c];
    nz[c] |= B[c] != 0.f;
  }
  free(B);
}

/* Adds channels [c0, c0+n) of sum into acc grouped by `group` channels, OR-ing nz into any. */
static void fold(const double *sum, const bool *nz, int64_t c0, int64_t n, int64_t group, double *acc, bool *any) {
  for (int64_t c = 0; c < n; c++) {
    acc[c / group] += sum[c0 + c];
    if (any) any[c / group] |= nz[c0 + c];
  }
}

static uint64_t mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static void finish_scores(double *s, int64_t n, op_importance imp, uint64_t seed, int layer, int kind) {
  for (int64_t i = 0; i < n; i++) {
    if (imp == OP_IMP_L2) s[i] = sqrt(s[i]);
    else if (imp == OP_IMP_RANDOM) s[i] = (double)(mix(seed ^ mix(((uint64_t)layer << 32) ^ ((uint64_t)kind << 60) ^ (uint64_t)i)) >> 11) / 9007199254740992.0;
  }
}

/* ---- fused attention (match_fused.c): MultiHeadAttention's bias input packs the q, k and v biases of
 * separate projections ---- */
static void add_packed_bias(const op_analysis *a, const op_attn *at, int k, op_importance imp, double *sum, bool *nz) {
  Onnx__TensorProto *bt = at->packed_bias ? op_proj_tensor(a, at->packed_bias) : NULL;
  if (!bt || op_tensor_to_raw(bt) != 0) return;
  int64_t off, w = op_attn_part(at, k, &off);
  float *B = op_xmalloc((size_t)(off + w) * sizeof *B);
  load_f32(B, bt->raw_data.data, off + w, bt->data_type);
  for (int64_t c = 0; c < w; c++) {
    float x = B[off + c];
    sum[c] += imp == OP_IMP_L1 ? fabsf(x) : (double)x * x;
    nz[c] |= x != 0.f;
  }
  free(B);
}

/* Head scores (q columns, k/v columns when each head has its own, output rows), kv-group scores
 * (their query heads' scores and their k/v columns) and which heads and groups contribute nothing
 * (all output rows zero, or v all zero). kv_score and dead_kv have kv_heads entries. */
static void score_heads(const op_analysis *a, const op_attn *at, op_importance imp, double *score, bool *dead,
                        double *kv_score, bool *dead_kv) {
  int64_t H = at->heads, KV = at->kv_heads, E = H * at->head_dim, cap = 3 * E;
  bool grouped = KV != H;
  for (int k = 0; k < 3; k++) cap = at->qkv[k].out > cap ? at->qkv[k].out : cap; /* parts of other widths */
  cap = at->out.in > cap ? at->out.in : cap;
  double *sum = op_xmalloc((size_t)cap * sizeof *sum);
  bool *nz = op_xmalloc((size_t)cap), *o_nz = op_xcalloc((size_t)H, 1), *v_nz = op_xcalloc((size_t)KV, 1);
  if (at->packed) { /* q of H heads, k and v of KV heads each (Attention's qkv_hidden_sizes: widths differ) */
    channel_sums(a, &at->qkv[0], true, imp, sum, nz);
    for (int k = 0; k < 3; k++) {
      int64_t off, w = op_attn_part(at, k, &off);
      bool kv = k > 0 && grouped;
      fold(sum, nz, off, w, w / (kv ? KV : H), kv ? kv_score : score, k == 2 ? v_nz : NULL);
    }
  } else if (at->kv_packed) { /* q, then k|v in one projection (never grouped) */
    int64_t d = at->head_dim;
    channel_sums(a, &at->qkv[0], true, imp, sum, nz);
    fold(sum, nz, 0, E, d, score, NULL);
    channel_sums(a, &at->qkv[1], true, imp, sum, nz);
    for (int k = 0; k < 2; k++) fold(sum, nz, k * E, E, d, score, k == 1 ? v_nz : NULL);
  } else {
    for (int k = 0; k < 3; k++) {
      bool kv = k > 0 && grouped;
      channel_sums(a, &at->qkv[k], true, imp, sum, nz);
      add_packed_bias(a, at, k, imp, sum, nz);
      fold(sum, nz, 0, at->qkv[k].out, at->qkv[k].out / (kv ? KV : H), kv ? kv_score : score, k == 2 ? v_nz : NULL);
    }
  }
  channel_sums(a, &at->out, false, imp, sum, nz);
  fold(sum, nz, 0, at->out.in, op_attn_v_head_dim(at), score, o_nz);
  for (int64_t h = 0; h < H; h++) dead[h] = !o_nz[h] || (!grouped && !v_nz[h]);
  for (int64_t g = 0; g < KV; g++) dead_kv[g] = !v_nz[g];
  if (grouped) {
    for (int64_t g = 0; g < KV; g++) dead_kv[g] = true;
    for (int64_t h = 0; h < H; h++) {
      kv_score[op_attn_kv_of(at, h)] += score[h];
      dead_kv[op_attn_kv_of(at, h)] &= dead[h];
    }
    for (int64_t g = 0; g < KV; g++) dead_kv[g] |= !v_nz[g];
  }
  free(sum);
  free(nz);
  free(o_nz);
  free(v_nz);
}

static void score_neurons(const op_analysis *a, const op_ffn *f, op_importance imp, double *score, bool *dead) {
  int64_t F = f->down.in;
  double *sum = op_xmalloc((size_t)F * sizeof *sum);
  bool *nz = op_xmalloc((size_t)F), *alive = op_xcalloc((size_t)F, 1);
  channel_sums(a, &f->down, false, imp, sum, nz);
  fold(sum, nz, 0, F, 1, score, alive);
  for (int u = 0; u < f->n_up; u++) {
    channel_sums(a, &f->up[u], true, imp, sum, nz);
    fold(sum, nz, 0, F, 1, score, NULL);
    /* a zero input column kills the neuron if the activation maps 0 to 0, or it is the linear branch */
    if (f->zero_preserving || u == 1)
      for (int64_t i = 0; i < F; i++) alive[i] &= nz[i];
  }
  for (int64_t i = 0; i < F; i++) dead[i] = !alive[i];
  free(sum);
  free(nz);
  free(alive);
}

/* ---- activation importance ---- */

/* Per layer: sums of squares per channel of the attention context (the output projection's input)
 * and of the FFN activation (the down projection's input), over every token of the data. */
typedef struct act_sums {
  double *attn, *ffn;
  int64_t attn_rows, ffn_rows;
  double *cross; /* a decoder layer's cross-attention context (issue 9) */
  int64_t cross_rows;
} act_sums;

/* What an observed value is to the activation importance: layer * ACT_KINDS + one of these. */
enum { ACT_ATTN, ACT_FFN, ACT_CROSS, ACT_KINDS };

typedef struct act_obs {
  const op_analysis *a;
  act_sums *by_layer;
  int *slot_layer; /* value slot -> layer * ACT_KINDS + kind, or -1 */
} act_obs;

static void observe_act(void *user, const char *name, const op_tensor *t) {
  act_obs *o = user;
  op_value *v = op_graph_find(o->a->gr, name);
  int code = v ? o->slot_layer[v - o->a->gr->values] : -1;
  if (code < 0 || t->dtype != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT || t->rank < 1) return;
  act_sums *s = &o->by_layer[code / ACT_KINDS];
  int kind = code % ACT_KINDS;
  int64_t ch = t->dims[t->rank - 1], n = (int64_t)(t->nbytes / sizeof(float)), rows = ch ? n / ch : 0;
  double *acc = kind == ACT_FFN ? s->ffn : kind == ACT_CROSS ? s->cross : s->attn;
  const float *x = t->data;
  for (int64_t r = 0; r < rows; r++)
    for (int64_t c2 = 0; c2 < ch; c2++) acc[c2] += (double)x[r * ch + c2] * x[r * ch + c2];
  if (kind == ACT_FFN) s->ffn_rows += rows;
  else if (kind == ACT_CROSS) s->cross_rows += rows;
  else s->attn_rows += rows;
}

static int collect_activations(const op_analysis *a, const op_prune_config *c, act_sums *acts, op_error *err) {
  if (!c->data) return op_fail(err, OP_ARG, "importance activation needs calibration data (--data PATH)");
  act_obs o = {a, acts, op_xmalloc(a->gr->cap * sizeof(int))};
  for (size_t i = 0; i < a->gr->cap; i++) o.slot_layer[i] = -1;
  for (size_t l = 0; l < a->layers.n; l++) {
    const op_attn *at = op_layer_attn(a, (int)l);
    const op_ffn *f = op_layer_ffn(a, (int)l);
    op_value *v;
    if (at && (v = op_graph_find(a->gr, at->out.x))) {
      acts[l].attn = op_xcalloc((size_t)at->out.in, sizeof(double));
      o.slot_layer[v - a->gr->values] = (int)l * ACT_KINDS + ACT_ATTN;
    }
    if (f && (v = op_graph_find(a->gr, f->down.x))) {
      acts[l].ffn = op_xcalloc((size_t)f->down.in, sizeof(double));
      o.slot_layer[v - a->gr->values] = (int)l * ACT_KINDS + ACT_FFN;
    }
    const op_attn *cr = op_layer_cross(a, (int)l);
    if (cr && (v = op_graph_find(a->gr, cr->out.x))) {
      acts[l].cross = op_xcalloc((size_t)cr->out.in, sizeof(double));
      o.slot_layer[v - a->gr->values] = (int)l * ACT_KINDS + ACT_CROSS;
    }
  }
  op_session *s = op_session_new(a->model, err);
  int64_t first = 0, total = s ? op_sample_window(c->data, s, 0, c->samples, &first, err) : -1;
  int rc = total < 0 ? -1 : op_stream(s, c->data, first, total, c->batch, observe_act, &o, false, NULL, NULL, c->progress, "importance", err);
  op_session_free(s);
  free(o.slot_layer);
  return rc;
}

/* The activation score of units of `group` channels: sum of rms(x_c) * ||W_out row c||. */
static void activation_scores(const op_analysis *a, const op_proj *out, const double *x_ss, int64_t rows, int64_t group,
                              double *score) {
  int64_t n = out->in;
  double *w = op_xmalloc((size_t)n * sizeof *w);
  bool *nz = op_xmalloc((size_t)n);
  channel_sums(a, out, false, OP_IMP_L2, w, nz);
  for (int64_t c = 0; c < n; c++) score[c / group] += sqrt(x_ss[c] / (double)(rows ? rows : 1)) * sqrt(w[c]);
  free(w);
  free(nz);
}

/* ---- selection ---- */

int64_t op_plan_kept(const bool *keep, int64_t n) {
  int64_t k = 0;
  for (int64_t i = 0; i < n; i++) k += keep[i];
  return k;
}

static const double *sort_scores; /* qsort has no context argument; plan building is single-threaded */
static int cmp_by_score(const void *x, const void *y) {
  double a = sort_scores[*(const int64_t *)x], b = sort_scores[*(const int64_t *)y];
  return a < b ? -1 : a > b ? 1 : (*(const int64_t *)x > *(const int64_t *)y) - (*(const int64_t *)x < *(const int64_t *)y);
}

/* Removes the lowest-scoring kept units until `target` are removed (never the last one). */
static void remove_lowest(bool *keep, const double *score, int64_t n, int64_t target) {
  int64_t kept = op_plan_kept(keep, n);
  int64_t *order = op_xmalloc((size_t)n * sizeof *order);
  for (int64_t i = 0; i < n; i++) order[i] = i;
  sort_scores = score;
  qsort(order, (size_t)n, sizeof *order, cmp_by_score);
  for (int64_t i = 0; i < n && n - kept < target && kept > 1; i++)
    if (keep[order[i]]) {
      keep[order[i]] = false;
      kept--;
    }
  free(order);
}

static int64_t round_count(double frac, int64_t n) { return (int64_t)floor(frac * (double)n + 0.5); }

static const op_layer_cfg *layer_cfg(const op_prune_config *c, int layer) {
  for (size_t i = c->layers.n; i-- > 0;)
    if (c->layers.v[i].layer == layer) return &c->layers.v[i];
  return NULL;
}

/* How many of n units the layer should remove, or -1 when nothing asks for it. */
static int64_t target_removed(double layer_sparsity, int64_t layer_keep, double g_sparsity, int64_t g_keep,
                              double width, int64_t n) {
  if (layer_keep >= 0) return n - (layer_keep < n ? layer_keep : n);
  if (layer_sparsity >= 0) return round_count(layer_sparsity, n);
  if (g_keep >= 0) return n - (g_keep < n ? g_keep : n);
  if (width >= 0) return n - round_count(width, n);
  if (g_sparsity >= 0) return round_count(g_sparsity, n);
  return -1;
}

typedef struct unit {
  double score;
  int layer;
  int64_t index;
  bool cross; /* a head of the layer's cross-attention */
} unit;

static int cmp_units(const void *x, const void *y) {
  const unit *a = x, *b = y;
  return a->score < b->score ? -1 : a->score > b->score;
}

/* Global scope: rank units of all layers without their own setting together. */
static void remove_global(op_plan *plan, const op_prune_config *c, double frac, bool heads) {
  OP_VEC(unit) all = {0};
  for (size_t l = 0; l < plan->n; l++) {
    op_layer_plan *lp = &plan->layers[l];
    const op_layer_cfg *lc = layer_cfg(c, (int)l);
    if (lp->drop_layer) continue;
    bool own = lc && (heads ? (lc->heads_set || lc->num_heads >= 0 || lc->head_sparsity >= 0)
                            : (lc->neurons_set || lc->ffn_size >= 0 || lc->ffn_sparsity >= 0));
    bool own_cross = lc && (lc->cross_heads_set || lc->num_heads >= 0 || lc->head_sparsity >= 0);
    if (heads && lp->cross && !lp->drop_cross && !own_cross) /* cross-attention heads rank too */
      for (int64_t i = 0; i < lp->cross->heads; i++)
        if (lp->cross->keep_head[i]) OP_VEC_PUSH(all, ((unit){lp->cross->head_score[i], (int)l, i, true}));
    if (own || (heads ? lp->drop_attn : lp->drop_ffn)) continue;
    int64_t n = heads ? lp->heads : lp->width;
    for (int64_t i = 0; i < n && (heads ? lp->keep_head != NULL : lp->keep_neuron != NULL); i++)
      if ((heads ? lp->keep_head : lp->keep_neuron)[i])
        OP_VEC_PUSH(all, ((unit){(heads ? lp->head_score : lp->neuron_score)[i], (int)l, i, false}));
  }
  int64_t target = round_count(frac, (int64_t)all.n);
  if (all.n) qsort(all.v, all.n, sizeof *all.v, cmp_units);
  for (size_t i = 0; i < all.n && target > 0; i++) {
    op_layer_plan *lp = &plan->layers[all.v[i].layer];
    if (all.v[i].cross) lp = lp->cross;
    bool *keep = heads ? lp->keep_head : lp->keep_neuron;
    int64_t n = heads ? lp->heads : lp->width;
    if (op_plan_kept(keep, n) <= 1) continue;
    keep[all.v[i].index] = false;
    target--;
  }
  free(all.v);
}

/* Does v list every index in [0, n)? */
static bool lists_all(const op_int_vec *v, int64_t n) {
  for (int64_t h = 0; h < n; h++)
    if (!op_int_vec_has(v, (int)h)) return false;
  return true;
}

/* A layer as the user addresses it ("3", "decoder.1"), for messages: a rotating buffer, enough for
 * one message (planning is single-threaded). */
static const char *lbl(const op_analysis *a, int l) {
  static char bufs[4][40];
  static int k;
  return op_layer_label(a, l, bufs[k++ & 3], sizeof bufs[0]);
}

static int check_indices(const op_int_vec *v, int64_t n, const char *layer, const char *what, op_error *err) {
  for (size_t i = 0; i < v->n; i++)
    if (v->v[i] >= n)
      return op_fail(err, OP_ARG, "layer %s: %s %d does not exist (the layer has %lld)", layer, what, v->v[i],
                     (long long)n);
  return 0;
}

/* A count to keep that is larger than a block has would silently keep everything. */
static int check_keep_counts(const op_analysis *a, const op_prune_config *c, op_error *err) {
  for (size_t l = 0; l < a->layers.n; l++) {
    const op_layer_cfg *lc = layer_cfg(c, (int)l);
    const op_attn *at = op_layer_attn(a, (int)l);
    const op_ffn *f = op_layer_ffn(a, (int)l);
    int64_t heads = lc && lc->num_heads >= 0 ? lc->num_heads : c->num_heads;
    int64_t width = lc && lc->ffn_size >= 0 ? lc->ffn_size : c->ffn_size;
    const char *hk = lc && lc->num_heads >= 0 ? "layers: num_heads" : "num_heads";
    const char *fk = lc && lc->ffn_size >= 0 ? "layers: ffn_size" : "ffn_size";
    if (at && heads > at->heads)
      return op_fail(err, OP_ARG, "%s: %lld is more than the %lld heads of layer %s", hk, (long long)heads,
                     (long long)at->heads, lbl(a, (int)l));
    const op_attn *cr = op_layer_cross(a, (int)l); /* cross-attention heads take the same count */
    if (cr && heads > cr->heads)
      return op_fail(err, OP_ARG, "%s: %lld is more than the %lld cross-attention heads of layer %s", hk,
                     (long long)heads, (long long)cr->heads, lbl(a, (int)l));
    if (f && width > f->down.in)
      return op_fail(err, OP_ARG, "%s: %lld is more than the %lld FFN neurons of layer %s", fk, (long long)width,
                     (long long)f->down.in, lbl(a, (int)l));
  }
  return 0;
}

static int validate(const op_analysis *a, const op_prune_config *c, op_error *err) {
  int n = (int)a->layers.n;
  if (op_prune_config_check(c, err) || check_keep_counts(a, c, err)) return -1;
  bool removes_blocks = c->keep_layers_set;
  for (size_t i = 0; i < c->layers.n; i++) removes_blocks |= c->layers.v[i].attention == 0 || c->layers.v[i].ffn == 0;
  if (removes_blocks && a->unmatched_attn) /* an unmatched block splits a layer in two: dropping by index would cut wrong */
    return op_fail(err, OP_UNSUPPORTED,
                   "%s: %d attention block(s) are not matched (%s), so layers cannot be numbered reliably: removing "
                   "layers or blocks is refused; heads and FFN neurons can still be pruned",
                   a->model->path, a->unmatched_attn, a->unmatched.v[0]);
  for (size_t i = 0; i < c->keep_layers.n; i++)
    if (c->keep_layers.v[i] >= n)
      return op_fail(err, OP_ARG, "keep_layers: layer %d does not exist (the model has %d layers, 0-%d)",
                     c->keep_layers.v[i], n, n - 1);
  for (size_t i = 0; i < c->layers.n; i++) {
    const op_layer_cfg *lc = &c->layers.v[i];
    if (lc->layer < 0 || lc->layer >= n)
      return op_fail(err, OP_ARG, "layers: layer %d does not exist (the model has %d layers, 0-%d)", lc->layer, n,
                     n - 1);
    const op_attn *at = op_layer_attn(a, lc->layer);
    const op_ffn *f = op_layer_ffn(a, lc->layer);
    bool wants_attn = lc->heads_set || lc->num_heads >= 0 || lc->head_sparsity >= 0 || lc->attention == 0;
    bool wants_ffn = lc->neurons_set || lc->ffn_size >= 0 || lc->ffn_sparsity >= 0 || lc->ffn == 0;
    if (wants_attn && !at && !op_layer_cross(a, lc->layer)) return op_fail(err, OP_ARG, "layer %s: has no attention block to prune", lbl(a, lc->layer));
    if (wants_ffn && !f) return op_fail(err, OP_ARG, "layer %s: has no FFN block to prune", lbl(a, lc->layer));
    if (at && check_indices(&lc->heads, at->heads, lbl(a, lc->layer), "head", err)) return -1;
    if (f && check_indices(&lc->neurons, f->down.in, lbl(a, lc->layer), "neuron", err)) return -1;
    const op_attn *cr = op_layer_cross(a, lc->layer); /* a decoder layer's cross-attention (issue 9) */
    if ((lc->cross_heads_set || lc->cross_attention == 0) && !cr)
      return op_fail(err, OP_ARG, "layer %s: has no cross-attention block to prune", lbl(a, lc->layer));
    if (cr && check_indices(&lc->cross_heads, cr->heads, lbl(a, lc->layer), "cross-attention head", err)) return -1;
    if (cr && lc->cross_heads_set && lists_all(&lc->cross_heads, cr->heads) && lc->cross_attention != 0)
      return op_fail(err, OP_ARG, "layer %s: removing every cross-attention head needs \"cross_attention\": false",
                     lbl(a, lc->layer));
    bool wants_kv = lc->kv_heads_set || lc->num_kv_heads >= 0 || lc->kv_head_sparsity >= 0;
    if (wants_kv && (!at || at->kv_heads == at->heads))
      return op_fail(err, OP_ARG, "layer %s: kv heads: the layer has no grouped-query attention", lbl(a, lc->layer));
    if (at && check_indices(&lc->kv_heads, at->kv_heads, lbl(a, lc->layer), "kv head", err)) return -1;
    if (at && lc->heads_set && (int64_t)lc->heads.n >= at->heads && lc->attention != 0) {
      bool all = true;
      for (int64_t h = 0; h < at->heads && all; h++) {
        bool listed = false;
        for (size_t k = 0; k < lc->heads.n; k++) listed |= lc->heads.v[k] == h;
        all = listed;
      }
      if (all)
        return op_fail(err, OP_ARG, "layer %s: removing every head needs \"attention\": false", lbl(a, lc->layer));
    }
    if (f && lc->neurons_set && (int64_t)lc->neurons.n >= f->down.in && lc->ffn != 0)
      return op_fail(err, OP_ARG, "layer %s: removing every neuron needs \"ffn\": false", lbl(a, lc->layer));
  }
  return 0;
}

/* What one layer asks of one kind of unit (heads or neurons). */
typedef struct unit_rule {
  const op_int_vec *remove; /* explicit list, or NULL */
  double layer_sparsity;
  int64_t layer_keep;
  double sparsity;
  int64_t keep;
} unit_rule;

/* Chooses the kept units of one block: dead ones go first under --compact (one always stays, as a
 * zero unit keeps the block exact), then the explicit list or the lowest scores up to the target.
 * In global scope a layer without its own setting is left to remove_global. */
static void select_units(const op_prune_config *c, const unit_rule *r, int layer, int kind, int64_t n,
                         const bool *dead, double *score, bool *keep) {
  finish_scores(score, n, c->importance, c->seed, layer, kind);
  for (int64_t i = 0; i < n; i++) keep[i] = !(c->compact && dead[i]);
  if (!op_plan_kept(keep, n)) keep[0] = true;
  if (r->remove) {
    for (size_t k = 0; k < r->remove->n; k++) keep[r->remove->v[k]] = false;
  } else if (!c->global || r->layer_keep >= 0 || r->layer_sparsity >= 0) {
    int64_t t = target_removed(r->layer_sparsity, r->layer_keep, r->sparsity, r->keep, c->width, n);
    if (t > 0) remove_lowest(keep, score, n, t);
  }
}

/* ---- grouped attention: kv groups, and the same number of query heads in each ---- */

static const double *group_rank_score;
static const bool *group_rank_dead;
/* dead heads first (under --compact), then by score, then by index */
static int cmp_group_heads(const void *x, const void *y) {
  int64_t i = *(const int64_t *)x, j = *(const int64_t *)y;
  if (group_rank_dead && group_rank_dead[i] != group_rank_dead[j]) return group_rank_dead[i] ? -1 : 1;
  double a = group_rank_score[i], b = group_rank_score[j];
  return a < b ? -1 : a > b ? 1 : (i > j) - (i < j);
}

/* Keeps `per` query heads in every kept kv group: the explicit removal list must remove as many
 * from each group; otherwise the lowest-ranked heads of each group go. Heads of removed groups go. */
static int keep_per_group(const op_attn *at, op_layer_plan *lp, int64_t per, const op_int_vec *remove,
                          const bool *dead, int layer, op_error *err) {
  int64_t H = at->heads, KV = at->kv_heads, rep = H / KV;
  int64_t *members = op_xmalloc((size_t)rep * sizeof *members);
  int rc = 0;
  for (int64_t g = 0; g < KV && !rc; g++) {
    int64_t n = 0;
    for (int64_t h = 0; h < H; h++)
      if (op_attn_kv_of(at, h) == g) members[n++] = h;
    if (!lp->keep_kv[g]) {
      for (int64_t k = 0; k < n; k++) lp->keep_head[members[k]] = false;
      continue;
    }
    if (remove) {
      int64_t kept = 0;
      for (int64_t k = 0; k < n; k++) kept += lp->keep_head[members[k]];
      if (kept != per)
        rc = op_fail(err, OP_ARG,
                     "layer %d: heads: kv group %lld keeps %lld query heads, another %lld; grouped attention needs "
                     "the same number in every group",
                     layer, (long long)g, (long long)kept, (long long)per);
      continue;
    }
    group_rank_score = lp->head_score;
    group_rank_dead = dead;
    qsort(members, (size_t)n, sizeof *members, cmp_group_heads);
    for (int64_t k = 0; k < n; k++) lp->keep_head[members[k]] = k >= n - per;
  }
  free(members);
  return rc;
}

/* Chooses kv groups, then `per` query heads in each kept group. want_heads: heads the layer should
 * keep (from the head rule, or after global ranking), -1 when only groups are asked for. */
static int select_grouped(const op_prune_config *c, const op_attn *at, op_layer_plan *lp, const unit_rule *kv_rule,
                          const op_int_vec *remove, int64_t want_heads, const bool *dead, const bool *dead_kv,
                          int layer, op_error *err) {
  int64_t H = at->heads, KV = at->kv_heads, rep = H / KV;
  if (kv_rule) select_units(c, kv_rule, layer, 2, KV, dead_kv, lp->kv_score, lp->keep_kv);
  int64_t KV2 = op_plan_kept(lp->keep_kv, KV);
  if (want_heads >= 0 && want_heads < KV2) { /* fewer heads than groups: one head in each of that many */
    remove_lowest(lp->keep_kv, lp->kv_score, KV, KV - (want_heads > 0 ? want_heads : 1));
    KV2 = op_plan_kept(lp->keep_kv, KV);
  }
  int64_t per = want_heads < 0 ? rep : want_heads / KV2;
  if (per > rep) per = rep;
  if (per < 1) per = 1;
  if (remove) {
    per = -1;
    for (int64_t g = 0; g < KV && per < 0; g++) {
      if (!lp->keep_kv[g]) continue;
      per = 0;
      for (int64_t h = 0; h < H; h++) per += op_attn_kv_of(at, h) == g && lp->keep_head[h];
    }
  }
  if (c->compact && !remove && dead) { /* only dead heads may go: at most the fewest dead of any kept group */
    int64_t fewest = rep;
    for (int64_t g = 0; g < KV; g++) {
      if (!lp->keep_kv[g]) continue;
      int64_t nd = 0;
      for (int64_t h = 0; h < H; h++) nd += op_attn_kv_of(at, h) == g && dead[h];
      if (nd < fewest) fewest = nd;
    }
    if (want_heads < 0) per = rep - fewest > 0 ? rep - fewest : 1;
  }
  return keep_per_group(at, lp, per, remove, c->compact ? dead : NULL, layer, err);
}

/* Grouped attention: the kv groups by the layer's and the command's kv rules, and the heads' count when a
 * rule asked for one (rule: the heads' rule the layer's heads were chosen by). */
static int select_kv(const op_prune_config *c, const op_layer_cfg *lc, const unit_rule *rule, const op_attn *at,
                     op_layer_plan *lp, const bool *dead, const bool *dead_kv, int l, op_error *err) {
  unit_rule kv_rule = {lc && lc->kv_heads_set ? &lc->kv_heads : NULL, lc ? lc->kv_head_sparsity : -1,
                       lc ? lc->num_kv_heads : -1, c->kv_head_sparsity, c->num_kv_heads};
  bool head_target = rule->remove || rule->layer_sparsity >= 0 || rule->layer_keep >= 0 ||
                     (!c->global && (c->head_sparsity >= 0 || c->num_heads >= 0 || c->width >= 0));
  return select_grouped(c, at, lp, &kv_rule, rule->remove, head_target ? op_plan_kept(lp->keep_head, at->heads) : -1,
                        dead, dead_kv, l, err);
}

/* ---- issue 12: a target instead of ratios, and kept widths rounded to a multiple (target.h) ---- */

static void round_plan(const op_analysis *a, const op_prune_config *c, op_plan *plan) {
  for (size_t l = 0; l < plan->n; l++) {
    op_layer_plan *lp = &plan->layers[l];
    const op_attn *at = op_layer_attn(a, (int)l);
    if (lp->keep_neuron) op_round_kept(lp->keep_neuron, lp->neuron_score, lp->width, c->multiple_of);
    if (at && lp->keep_head) op_round_kept(lp->keep_head, lp->head_score, lp->heads, op_head_step(at, c->multiple_of));
  }
}

/* Allocates the removals that keep the fraction asked of the blocks' FLOPs or parameters, by the scores
 * the plan ranked units with; grouped layers then keep the same number of query heads per kv group. */
static int apply_target(const op_analysis *a, const op_prune_config *c, op_plan *plan, op_error *err) {
  bool params = c->target_params > 0;
  double keep = params ? c->target_params : c->target_flops, total = 0;
  op_alloc_block *b = op_xcalloc(2 * plan->n + 1, sizeof *b);
  size_t nb = 0;
  for (size_t l = 0; l < plan->n; l++) {
    op_layer_plan *lp = &plan->layers[l];
    op_unit_cost ca, cf;
    op_block_costs(a, (int)l, c->flops_seq, &ca, &cf);
    if (lp->drop_layer) continue;
    const op_attn *at = op_layer_attn(a, (int)l);
    if (at && !lp->drop_attn) {
      b[nb++] = (op_alloc_block){(int)l, 0, lp->heads, lp->head_score, params ? ca.unit_params : ca.unit_flops,
                                 params ? ca.fixed_params : ca.fixed_flops, op_head_step(at, c->multiple_of),
                                 lp->keep_head};
      total += op_cost_of(&ca, lp->heads, params);
    }
    if (lp->keep_neuron && !lp->drop_ffn) {
      b[nb++] = (op_alloc_block){(int)l, 1, lp->width, lp->neuron_score, params ? cf.unit_params : cf.unit_flops,
                                 params ? cf.fixed_params : cf.fixed_flops, c->multiple_of, lp->keep_neuron};
      total += op_cost_of(&cf, lp->width, params);
    }
  }
  op_allocate_removals(b, nb, (1 - keep) * total);
  int rc = 0;
  for (size_t i = 0; i < nb && !rc; i++) {
    op_layer_plan *lp = &plan->layers[b[i].layer];
    bool *k = b[i].keep;
    if (op_plan_kept(k, b[i].n) == 0) { /* the target emptied the block: it is removed whole */
      if (b[i].kind == 0) lp->drop_attn = true;
      else lp->drop_ffn = true;
      for (int64_t u = 0; u < b[i].n; u++) k[u] = true;
      continue;
    }
    const op_attn *at = op_layer_attn(a, b[i].layer);
    if (b[i].kind == 0 && at->kv_heads != at->heads)
      rc = select_grouped(c, at, lp, NULL, NULL, op_plan_kept(lp->keep_head, lp->heads), NULL, NULL, b[i].layer, err);
  }
  free(b);
  if (rc) op_plan_free(plan);
  return rc;
}

static int plan_build(const op_analysis *a, const op_prune_config *c, op_plan *plan, op_error *err);

/* Plans the heads of one attention block: a layer's self-attention, or (cross) a decoder layer's
 * cross-attention, which has its own head list and removal flag and otherwise the layer's rules.
 * x_ss / x_rows: activation sums of its context, or NULL. */
static int plan_attention(const op_analysis *a, const op_prune_config *c, const op_attn *at, op_layer_plan *lp,
                          const op_layer_cfg *lc, int l, const double *x_ss, int64_t x_rows, bool cross, op_error *err) {
  int64_t H = at->heads, KV = at->kv_heads;
  lp->heads = H;
  lp->kv_heads = KV;
  lp->drop_attn = lc && (cross ? lc->cross_attention : lc->attention) == 0;
  lp->keep_head = op_xmalloc((size_t)H * sizeof(bool));
  lp->head_score = op_xcalloc((size_t)H, sizeof(double));
  lp->keep_kv = op_xmalloc((size_t)KV * sizeof(bool));
  lp->kv_score = op_xcalloc((size_t)KV, sizeof(double));
  for (int64_t g = 0; g < KV; g++) lp->keep_kv[g] = true;
  bool *dead = op_xcalloc((size_t)H, sizeof(bool)), *dead_kv = op_xcalloc((size_t)KV, sizeof(bool));
  score_heads(a, at, c->importance, lp->head_score, dead, lp->kv_score, dead_kv);
  if (x_ss) {
    memset(lp->head_score, 0, (size_t)H * sizeof(double));
    activation_scores(a, &at->out, x_ss, x_rows, op_attn_v_head_dim(at), lp->head_score);
    if (KV != H) {
      memset(lp->kv_score, 0, (size_t)KV * sizeof(double));
      for (int64_t h = 0; h < H; h++) lp->kv_score[op_attn_kv_of(at, h)] += lp->head_score[h];
    }
  }
  const op_int_vec *list = !lc ? NULL : cross ? (lc->cross_heads_set ? &lc->cross_heads : NULL)
                                              : (lc->heads_set ? &lc->heads : NULL);
  unit_rule rule = {list, lc ? lc->head_sparsity : -1, lc ? lc->num_heads : -1, c->head_sparsity, c->num_heads};
  select_units(c, &rule, l, cross ? 3 : 0, H, dead, lp->head_score, lp->keep_head);
  int rc = 0;
  if (KV != H) rc = select_kv(c, lc, &rule, at, lp, dead, dead_kv, l, err);
  free(dead);
  free(dead_kv);
  return rc;
}

/* The config with its layer references (N, encoder.N, decoder.N) resolved to layer indices: a copy
 * sharing the per-layer lists (free only r->layers.v and r->keep_layers.v). Two references to one
 * layer are an error. */
static int resolve_config(const op_analysis *a, const op_prune_config *c, op_prune_config *r, op_error *err) {
  *r = *c;
  memset(&r->layers, 0, sizeof r->layers);
  memset(&r->keep_layers, 0, sizeof r->keep_layers);
  int rc = 0;
  for (size_t i = 0; i < c->keep_layers.n && !rc; i++) {
    int l = op_layer_resolve(a, c->keep_layers.v[i], "keep_layers", err);
    if (l < 0) rc = -1;
    else OP_VEC_PUSH(r->keep_layers, l);
  }
  for (size_t i = 0; i < c->layers.n && !rc; i++) {
    op_layer_cfg L = c->layers.v[i];
    if ((L.layer = op_layer_resolve(a, c->layers.v[i].layer, "layers", err)) < 0) {
      rc = -1;
      break;
    }
    for (size_t k = 0; k < r->layers.n && !rc; k++)
      if (r->layers.v[k].layer == L.layer) {
        char t1[40], t2[40];
        rc = op_fail(err, OP_ARG, "layers: %s and %s name the same layer", op_layer_ref_text(c->layers.v[k].layer, t1, sizeof t1),
                     op_layer_ref_text(c->layers.v[i].layer, t2, sizeof t2));
      }
    OP_VEC_PUSH(r->layers, L);
  }
  if (rc) {
    free(r->layers.v);
    free(r->keep_layers.v);
  }
  return rc;
}

int op_plan_build(const op_analysis *a, const op_prune_config *orig, op_plan *plan, op_error *err) {
  memset(plan, 0, sizeof *plan);
  op_prune_config resolved;
  if (resolve_config(a, orig, &resolved, err)) return -1;
  int rc = plan_build(a, &resolved, plan, err);
  free(resolved.layers.v);
  free(resolved.keep_layers.v);
  return rc;
}

static int plan_build(const op_analysis *a, const op_prune_config *c, op_plan *plan, op_error *err) {
  if (validate(a, c, err)) return -1;
  act_sums *acts = NULL;
  if (c->importance == OP_IMP_ACTIVATION) {
    acts = op_xcalloc(a->layers.n ? a->layers.n : 1, sizeof *acts);
    if (collect_activations(a, c, acts, err)) {
      for (size_t l = 0; l < a->layers.n; l++) free(acts[l].attn), free(acts[l].ffn), free(acts[l].cross);
      free(acts);
      return -1;
    }
  }
  plan->n = a->layers.n;
  plan->layers = op_xcalloc(plan->n ? plan->n : 1, sizeof *plan->layers);
  for (size_t l = 0; l < plan->n; l++) {
    op_layer_plan *lp = &plan->layers[l];
    const op_layer_cfg *lc = layer_cfg(c, (int)l);
    const op_attn *at = op_layer_attn(a, (int)l);
    const op_ffn *f = op_layer_ffn(a, (int)l);
    if (c->keep_layers_set) {
      lp->drop_layer = true;
      for (size_t k = 0; k < c->keep_layers.n; k++) lp->drop_layer &= c->keep_layers.v[k] != (int)l;
    }
    const op_attn *cr = op_layer_cross(a, (int)l);
    if (cr) lp->cross = op_xcalloc(1, sizeof *lp->cross);
    if ((at && plan_attention(a, c, at, lp, lc, (int)l, acts ? acts[l].attn : NULL, acts ? acts[l].attn_rows : 0,
                              false, err)) ||
        (cr && plan_attention(a, c, cr, lp->cross, lc, (int)l, acts ? acts[l].cross : NULL,
                              acts ? acts[l].cross_rows : 0, true, err))) {
      for (size_t k = 0; acts && k < a->layers.n; k++) free(acts[k].attn), free(acts[k].ffn), free(acts[k].cross);
      free(acts);
      plan->n = l + 1;
      op_plan_free(plan);
      return -1;
    }
    if (cr) lp->drop_cross = lp->cross->drop_attn;
    if (f) {
      lp->width = f->down.in;
      lp->drop_ffn = lc && lc->ffn == 0;
      lp->keep_neuron = op_xmalloc((size_t)f->down.in * sizeof(bool));
      lp->neuron_score = op_xcalloc((size_t)f->down.in, sizeof(double));
      bool *dead = op_xcalloc((size_t)f->down.in, sizeof(bool));
      score_neurons(a, f, c->importance, lp->neuron_score, dead);
      if (acts && acts[l].ffn) {
        memset(lp->neuron_score, 0, (size_t)f->down.in * sizeof(double));
        activation_scores(a, &f->down, acts[l].ffn, acts[l].ffn_rows, 1, lp->neuron_score);
      }
      unit_rule rule = {lc && lc->neurons_set ? &lc->neurons : NULL, lc ? lc->ffn_sparsity : -1, lc ? lc->ffn_size : -1,
                        c->ffn_sparsity, c->ffn_size};
      select_units(c, &rule, (int)l, 1, f->down.in, dead, lp->neuron_score, lp->keep_neuron);
      free(dead);
    }
  }
  for (size_t l = 0; acts && l < a->layers.n; l++) free(acts[l].attn), free(acts[l].ffn), free(acts[l].cross);
  free(acts);
  if (c->global) {
    double hf = c->head_sparsity >= 0 ? c->head_sparsity : c->width >= 0 ? 1 - c->width : -1;
    double ff = c->ffn_sparsity >= 0 ? c->ffn_sparsity : c->width >= 0 ? 1 - c->width : -1;
    if (hf > 0) {
      remove_global(plan, c, hf, true);
      for (size_t l = 0; l < plan->n; l++) { /* grouped layers: as many heads in every group as ranking left */
        const op_attn *at = op_layer_attn(a, (int)l);
        op_layer_plan *lp = &plan->layers[l];
        const op_layer_cfg *lc = layer_cfg(c, (int)l);
        if (!at || at->kv_heads == at->heads || (lc && lc->heads_set)) continue;
        if (select_grouped(c, at, lp, NULL, NULL, op_plan_kept(lp->keep_head, lp->heads), NULL, NULL, (int)l, err)) {
          op_plan_free(plan);
          return -1;
        }
      }
    }
    if (ff > 0) remove_global(plan, c, ff, false);
  }
  if (c->target_flops > 0 || c->target_params > 0) return apply_target(a, c, plan, err);
  if (c->multiple_of > 1) round_plan(a, c, plan);
  return 0;
}

void op_plan_free(op_plan *plan) {
  for (size_t l = 0; l < plan->n; l++) {
    free(plan->layers[l].keep_head);
    free(plan->layers[l].keep_neuron);
    free(plan->layers[l].head_score);
    free(plan->layers[l].neuron_score);
    free(plan->layers[l].keep_kv);
    free(plan->layers[l].kv_score);
    free(plan->layers[l].head_curve); /* issue 12: the allocation's error curves */
    free(plan->layers[l].neuron_curve);
    if (plan->layers[l].cross) { /* its own plan, attention fields only */
      op_plan sub = {.layers = plan->layers[l].cross, .n = 1};
      op_plan_free(&sub);
    }
  }
  free(plan->layers);
  plan->layers = NULL;
  plan->n = 0;
  free(plan->out_heads); /* output-head compensation's record */
  plan->out_heads = NULL;
  plan->n_out_heads = 0;
}

/* ---- reconstruction (sequential.c): one block chosen again from the scores it computed ---- */

static bool has_target(const op_prune_config *c) { return c->target_flops > 0 || c->target_params > 0; }

/* Under a target the allocation fixed each block's kept count (by the scores the plan had); the
 * sequential pass then re-chooses which units within that count by its reconstruction ranking. */
int op_plan_reselect(const op_analysis *a, const op_prune_config *c, op_plan *plan, int l, bool heads, op_error *err) {
  op_layer_plan *lp = &plan->layers[l];
  const op_layer_cfg *lc = layer_cfg(c, l);
  int rc = 0;
  if (heads) {
    const op_attn *at = op_layer_attn(a, l);
    int64_t H = at->heads, KV = at->kv_heads;
    bool *dead = op_xcalloc((size_t)H, 1), *dead_kv = op_xcalloc((size_t)KV, 1);
    double *s = op_xcalloc((size_t)H, sizeof *s), *s_kv = op_xcalloc((size_t)KV, sizeof *s_kv);
    score_heads(a, at, OP_IMP_L2, s, dead, s_kv, dead_kv); /* only for which units are dead (--compact) */
    int64_t kept = op_plan_kept(lp->keep_head, H); /* what a target allocated to this block */
    for (int64_t g = 0; g < KV; g++) lp->keep_kv[g] = true;
    unit_rule rule = {lc && lc->heads_set ? &lc->heads : NULL, lc ? lc->head_sparsity : -1, lc ? lc->num_heads : -1,
                      c->head_sparsity, c->num_heads};
    /* a target or global scope allocated the count (recon_alloc.c): it stays, the choice is re-made */
    if (has_target(c) || c->global) rule = (unit_rule){NULL, -1, kept, -1, -1};
    select_units(c, &rule, l, 0, H, dead, lp->head_score, lp->keep_head);
    if (KV != H) rc = select_kv(c, lc, &rule, at, lp, dead, dead_kv, l, err);
    free(dead), free(dead_kv), free(s), free(s_kv);
  } else {
    const op_ffn *f = op_layer_ffn(a, l);
    int64_t F = f->down.in;
    bool *dead = op_xcalloc((size_t)F, 1);
    double *s = op_xcalloc((size_t)F, sizeof *s);
    score_neurons(a, f, OP_IMP_L2, s, dead);
    int64_t kept = op_plan_kept(lp->keep_neuron, F);
    unit_rule rule = {lc && lc->neurons_set ? &lc->neurons : NULL, lc ? lc->ffn_sparsity : -1, lc ? lc->ffn_size : -1,
                      c->ffn_sparsity, c->ffn_size};
    if (has_target(c) || c->global) rule = (unit_rule){NULL, -1, kept, -1, -1};
    select_units(c, &rule, l, 1, F, dead, lp->neuron_score, lp->keep_neuron);
    free(dead), free(s);
  }
  return rc;
}
