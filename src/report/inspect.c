/* inspect.c - what `inspect` shows about a model besides its layers: opset imports, producer, graph
 * inputs and outputs (type, shape with symbolic axes by name), op counts by domain and parameters by
 * data type. Built once as JSON; the text form is rendered from that tree. */
#include "match/match.h"
#include "report/json.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *dtype_name(int32_t t) {
  static const char *const NAMES[] = {"undefined", "float32", "uint8",  "int8",    "uint16",     "int16",
                                      "int32",     "int64",   "string", "bool",    "float16",    "float64",
                                      "uint32",    "uint64",  "complex64", "complex128", "bfloat16"};
  return t >= 0 && t < (int32_t)(sizeof NAMES / sizeof *NAMES) ? NAMES[t] : "other";
}

static bool is_initializer(const Onnx__GraphProto *g, const char *name) {
  for (size_t i = 0; i < g->n_initializer; i++)
    if (!strcmp(g->initializer[i]->name, name)) return true;
  return false;
}

static cJSON *value_json(const Onnx__ValueInfoProto *v) {
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "name", v->name ? v->name : "");
  const Onnx__TypeProto *t = v->type;
  if (!t || t->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !t->tensor_type) {
    cJSON_AddStringToObject(o, "type", t ? "non-tensor" : "unknown");
    cJSON_AddNullToObject(o, "shape");
    return o;
  }
  cJSON_AddStringToObject(o, "type", dtype_name(t->tensor_type->elem_type));
  const Onnx__TensorShapeProto *s = t->tensor_type->shape;
  if (!s) {
    cJSON_AddNullToObject(o, "shape"); /* rank unknown */
    return o;
  }
  cJSON *dims = cJSON_AddArrayToObject(o, "shape");
  for (size_t i = 0; i < s->n_dim; i++) {
    const Onnx__TensorShapeProto__Dimension *d = s->dim[i];
    if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE)
      cJSON_AddItemToArray(dims, cJSON_CreateNumber((double)d->dim_value));
    else if (d->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM && d->dim_param && d->dim_param[0])
      cJSON_AddItemToArray(dims, cJSON_CreateString(d->dim_param));
    else
      cJSON_AddItemToArray(dims, cJSON_CreateNull()); /* dynamic, unnamed */
  }
  return o;
}

static void count_ops(cJSON *by_domain, const Onnx__GraphProto *g) {
  for (size_t i = 0; i < g->n_node; i++) {
    const Onnx__NodeProto *n = g->node[i];
    const char *dom = n->domain && n->domain[0] ? n->domain : "ai.onnx";
    cJSON *d = cJSON_GetObjectItemCaseSensitive(by_domain, dom);
    if (!d) d = cJSON_AddObjectToObject(by_domain, dom);
    cJSON *c = cJSON_GetObjectItemCaseSensitive(d, n->op_type);
    if (c) cJSON_SetNumberValue(c, c->valuedouble + 1);
    else cJSON_AddNumberToObject(d, n->op_type, 1);
    for (size_t k = 0; k < n->n_attribute; k++) /* subgraphs (If, Loop, Scan) count too */
      if (n->attribute[k]->g) count_ops(by_domain, n->attribute[k]->g);
  }
}

static cJSON *model_json(const op_model *m) {
  const Onnx__ModelProto *p = m->proto;
  const Onnx__GraphProto *g = p->graph;
  cJSON *o = cJSON_CreateObject();
  cJSON_AddStringToObject(o, "path", m->path);
  cJSON_AddNumberToObject(o, "ir_version", (double)p->ir_version);
  cJSON_AddStringToObject(o, "producer", p->producer_name ? p->producer_name : "");
  cJSON_AddStringToObject(o, "producer_version", p->producer_version ? p->producer_version : "");
  cJSON *ops = cJSON_AddArrayToObject(o, "opset_imports");
  for (size_t i = 0; i < p->n_opset_import; i++) {
    cJSON *x = cJSON_CreateObject();
    const char *d = p->opset_import[i]->domain;
    cJSON_AddStringToObject(x, "domain", d && d[0] ? d : "ai.onnx");
    cJSON_AddNumberToObject(x, "version", (double)p->opset_import[i]->version);
    cJSON_AddItemToArray(ops, x);
  }
  cJSON *ins = cJSON_AddArrayToObject(o, "inputs");
  for (size_t i = 0; g && i < g->n_input; i++)
    if (!is_initializer(g, g->input[i]->name)) cJSON_AddItemToArray(ins, value_json(g->input[i]));
  cJSON *outs = cJSON_AddArrayToObject(o, "outputs");
  for (size_t i = 0; g && i < g->n_output; i++) cJSON_AddItemToArray(outs, value_json(g->output[i]));
  cJSON *counts = cJSON_AddObjectToObject(o, "op_counts");
  if (g) count_ops(counts, g);
  cJSON *params = cJSON_AddObjectToObject(o, "parameters_by_type");
  for (size_t i = 0; g && i < g->n_initializer; i++) {
    const Onnx__TensorProto *t = g->initializer[i];
    int64_t n = op_tensor_numel(t);
    const char *dt = dtype_name(t->data_type);
    cJSON *c = cJSON_GetObjectItemCaseSensitive(params, dt);
    if (c) cJSON_SetNumberValue(c, c->valuedouble + (double)n);
    else cJSON_AddNumberToObject(params, dt, (double)n);
  }
  return o;
}

char *op_inspect_json(const op_model *m, const op_analysis *a) {
  char *an = op_analysis_json(a);
  cJSON *root = an ? cJSON_Parse(an) : NULL;
  op_free(an);
  if (!cJSON_IsObject(root)) {
    cJSON_Delete(root);
    return NULL;
  }
  cJSON_AddItemToObject(root, "graph", model_json(m));
  return op_json_finish(root);
}

typedef struct tbuf {
  char *s;
  size_t n, cap;
  bool failed;
} tbuf;

__attribute__((format(printf, 2, 3))) static void tb_printf(tbuf *b, const char *fmt, ...) {
  for (;;) {
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(b->s ? b->s + b->n : NULL, b->cap - b->n, fmt, ap);
    va_end(ap);
    if (w < 0) return;
    if ((size_t)w < b->cap - b->n) {
      b->n += (size_t)w;
      return;
    }
    size_t cap = (b->cap + (size_t)w + 1) * 2;
    char *s = realloc(b->s, cap);
    if (!s) {
      b->failed = true;
      return;
    }
    b->s = s, b->cap = cap;
  }
}

static void values_text(tbuf *b, const char *title, const cJSON *arr) {
  tb_printf(b, "%s:\n", title);
  const cJSON *v;
  cJSON_ArrayForEach(v, arr) {
    tb_printf(b, "  %-24s %-8s ", cJSON_GetObjectItem(v, "name")->valuestring,
              cJSON_GetObjectItem(v, "type")->valuestring);
    const cJSON *shape = cJSON_GetObjectItem(v, "shape"), *d;
    if (cJSON_IsNull(shape)) {
      tb_printf(b, "(shape unknown)\n");
      continue;
    }
    tb_printf(b, "[");
    int k = 0;
    cJSON_ArrayForEach(d, shape) {
      if (cJSON_IsNumber(d)) tb_printf(b, "%s%lld", k ? ", " : "", (long long)d->valuedouble);
      else if (cJSON_IsString(d)) tb_printf(b, "%s%s", k ? ", " : "", d->valuestring);
      else tb_printf(b, "%s?", k ? ", " : "");
      k++;
    }
    tb_printf(b, "]\n");
  }
}

char *op_inspect_text(const op_model *m, const op_analysis *a) {
  cJSON *o = model_json(m);
  tbuf b = {0};
  const cJSON *x;
  tb_printf(&b, "producer: %s %s (IR version %d)\nopsets:",
            cJSON_GetObjectItem(o, "producer")->valuestring[0] ? cJSON_GetObjectItem(o, "producer")->valuestring : "(none)",
            cJSON_GetObjectItem(o, "producer_version")->valuestring, cJSON_GetObjectItem(o, "ir_version")->valueint);
  cJSON_ArrayForEach(x, cJSON_GetObjectItem(o, "opset_imports"))
    tb_printf(&b, " %s %d", cJSON_GetObjectItem(x, "domain")->valuestring, cJSON_GetObjectItem(x, "version")->valueint);
  tb_printf(&b, "\n");
  values_text(&b, "inputs", cJSON_GetObjectItem(o, "inputs"));
  values_text(&b, "outputs", cJSON_GetObjectItem(o, "outputs"));
  tb_printf(&b, "ops:\n");
  cJSON_ArrayForEach(x, cJSON_GetObjectItem(o, "op_counts")) {
    tb_printf(&b, "  %s:", x->string);
    const cJSON *c;
    int k = 0;
    cJSON_ArrayForEach(c, x) tb_printf(&b, "%s %s %d", k++ ? "," : "", c->string, c->valueint);
    tb_printf(&b, "\n");
  }
  tb_printf(&b, "initializer elements by type:");
  int k = 0;
  cJSON_ArrayForEach(x, cJSON_GetObjectItem(o, "parameters_by_type"))
    tb_printf(&b, "%s %s %.0f", k++ ? "," : "", x->string, x->valuedouble);
  tb_printf(&b, "%s\n\n", k ? "" : " none");
  cJSON_Delete(o);
  char *table = op_analysis_table(a);
  if (table) tb_printf(&b, "%s", table);
  op_free(table);
  if (b.failed || !table) {
    free(b.s);
    return NULL;
  }
  return b.s;
}
