/* model_io.c - loading and saving ONNX models.
 * Loading maps the file read-only and walks the protobuf wire format just far enough to find each
 * initializer's raw_data; large raw_data is not copied at all but borrowed from the mapping (which
 * the model keeps until it is freed), and protobuf-c unpacks only the rest. Weights are thus read
 * straight from the page cache, and only the tensors a pass changes or needs aligned ever get memory
 * of their own (tensor.c). Small payloads are copied, so the mapping's header pages can be given
 * back. External data is read relative to the model directory and may not escape it. Saving streams
 * the protobuf into a temporary file next to the target and renames it into place, so no reader
 * ever sees a half-written model.
 *
 * Caveat of borrowing, as with any mmap-based loader (ONNX Runtime maps external data the same way):
 * truncating the input file while a model loaded from it is alive makes later reads fault.
 *
 * Format note (ONNX external data): a TensorProto with data_location = EXTERNAL (1) carries
 * external_data entries "location" (path relative to the model file), "offset" and "length" (bytes,
 * decimal text); the bytes are the tensor's raw_data, little-endian. */
#include "model/graph.h"
#include "files/files.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define TWO_GIB ((uint64_t)2 << 30)

/* ---- protobuf wire scanning: just enough to split ModelProto.graph and GraphProto.initializer ---- */

typedef struct wire_field {
  uint32_t number;
  const uint8_t *start;   /* first byte of the key */
  const uint8_t *payload; /* length-delimited payload (wire type 2), else NULL */
  size_t payload_len;
  const uint8_t *end; /* one past the field */
} wire_field;

static bool read_varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64 && *p < end; shift += 7) {
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      *out = v;
      return true;
    }
  }
  return false;
}

/* Reads the next field at *p; returns false on malformed input. */
static bool next_field(const uint8_t **p, const uint8_t *end, wire_field *f) {
  uint64_t key, len;
  f->start = *p;
  f->payload = NULL;
  f->payload_len = 0;
  if (!read_varint(p, end, &key)) return false;
  f->number = (uint32_t)(key >> 3);
  if (f->number == 0) return false;
  switch (key & 7) {
    case 0:
      if (!read_varint(p, end, &len)) return false;
      break;
    case 1:
      if (end - *p < 8) return false;
      *p += 8;
      break;
    case 2:
      if (!read_varint(p, end, &len) || len > (uint64_t)(end - *p)) return false;
      f->payload = *p;
      f->payload_len = (size_t)len;
      *p += len;
      break;
    case 5:
      if (end - *p < 4) return false;
      *p += 4;
      break;
    default:
      return false; /* groups are not used by ONNX */
  }
  f->end = *p;
  return true;
}

typedef OP_VEC(uint8_t) byte_vec;

static void bytes_append(byte_vec *b, const uint8_t *data, size_t n) {
  if (b->n + n > b->cap) {
    b->cap = (b->n + n) * 2 + 64;
    b->v = op_xrealloc(b->v, b->cap);
  }
  memcpy(b->v + b->n, data, n);
  b->n += n;
}

#define MODEL_GRAPH_FIELD 7
#define GRAPH_INITIALIZER_FIELD 5
#define TENSOR_RAW_DATA_FIELD 9
#define BORROW_MIN 65536 /* smaller payloads are copied out of the mapping */

static const char *bad_proto = "%s: not a valid ONNX protobuf (truncated or corrupt)";

/* Where the bytes being unpacked come from: a model's own file mapping, whose large payloads may be
 * borrowed, or a caller's buffer, which must be copied. */
typedef struct byte_source {
  bool mapped;
} byte_source;

/* Unpacks one TensorProto; its raw_data is borrowed from the mapping or copied once into its own
 * buffer, never passed through protobuf-c's copy. */
static Onnx__TensorProto *unpack_tensor(const uint8_t *data, size_t size, const byte_source *src) {
  const uint8_t *p = data, *end = data + size;
  byte_vec rest = {0};
  wire_field raw = {0};
  bool has_raw = false;
  while (p < end) {
    wire_field f;
    if (!next_field(&p, end, &f)) {
      free(rest.v);
      return NULL;
    }
    if (f.number == TENSOR_RAW_DATA_FIELD && f.payload) { /* the last occurrence wins, as in protobuf */
      raw = f;
      has_raw = true;
    } else {
      bytes_append(&rest, f.start, (size_t)(f.end - f.start));
    }
  }
  Onnx__TensorProto *t = onnx__tensor_proto__unpack(NULL, rest.n, rest.v ? rest.v : (const uint8_t *)"");
  free(rest.v);
  if (!t || !has_raw) return t;
  if (src->mapped && raw.payload_len >= BORROW_MIN) {
    t->raw_data.data = (uint8_t *)raw.payload; /* read-only: tensor.c never writes borrowed bytes */
  } else {
    t->raw_data.data = op_xmalloc(raw.payload_len ? raw.payload_len : 1);
    memcpy(t->raw_data.data, raw.payload, raw.payload_len);
  }
  t->raw_data.len = raw.payload_len;
  t->has_raw_data = 1;
  return t;
}

/* Unpacks GraphProto from its bytes, one initializer at a time. */
static Onnx__GraphProto *unpack_graph(const uint8_t *data, size_t size, const byte_source *src, const char *origin,
                                      op_error *err) {
  const uint8_t *p = data, *end = data + size;
  byte_vec rest = {0};
  OP_VEC(Onnx__TensorProto *) inits = {0};
  Onnx__GraphProto *g = NULL;
  while (p < end) {
    wire_field f;
    if (!next_field(&p, end, &f)) goto bad;
    if (f.number == GRAPH_INITIALIZER_FIELD && f.payload) {
      Onnx__TensorProto *t = unpack_tensor(f.payload, f.payload_len, src);
      if (!t) goto bad;
      OP_VEC_PUSH(inits, t);
      /* the kernel maps pages around each header it faults in; borrowed bytes fault back on use */
      if (src->mapped) op_release_pages(f.payload, f.payload_len);
    } else {
      bytes_append(&rest, f.start, (size_t)(f.end - f.start));
    }
  }
  g = onnx__graph_proto__unpack(NULL, rest.n, rest.v ? rest.v : (const uint8_t *)"");
  if (!g) goto bad;
  free(rest.v);
  if (g->n_initializer) { /* a stray initializer kept in `rest` would be a wire-type oddity */
    for (size_t i = 0; i < g->n_initializer; i++) OP_VEC_PUSH(inits, g->initializer[i]);
    free(g->initializer);
  }
  g->initializer = inits.v;
  g->n_initializer = inits.n;
  return g;
bad:
  for (size_t i = 0; i < inits.n; i++) op_tensor_free(inits.v[i]);
  free(inits.v);
  free(rest.v);
  return op_fail_null(err, OP_PARSE, bad_proto, origin);
}

/* Message nesting protobuf-c's recursive unpack may meet: real models stay far below (a subgraph level
 * costs three: GraphProto > NodeProto > AttributeProto), while thousands of levels overflow the stack. */
#define MAX_NESTING 256

/* Whether no message inside [p, end) nests deeper than MAX_NESTING, following the schema's message
 * fields; each byte is looked at once per level it sits in. Malformed bytes are left to the parser. */
static bool nesting_ok(const uint8_t *p, const uint8_t *end, const ProtobufCMessageDescriptor *d, int depth) {
  if (depth > MAX_NESTING) return false;
  while (p < end) {
    wire_field f;
    if (!next_field(&p, end, &f)) return true;
    if (!f.payload) continue;
    const ProtobufCFieldDescriptor *fd = protobuf_c_message_descriptor_get_field(d, (unsigned)f.number);
    if (fd && fd->type == PROTOBUF_C_TYPE_MESSAGE &&
        !nesting_ok(f.payload, f.payload + f.payload_len, fd->descriptor, depth + 1))
      return false;
  }
  return true;
}

static Onnx__ModelProto *unpack_model(const uint8_t *data, size_t size, const byte_source *src, const char *origin,
                                      op_error *err) {
  const uint8_t *p = data, *end = data + size;
  if (!nesting_ok(data, end, &onnx__model_proto__descriptor, 0))
    return op_fail_null(err, OP_PARSE, "%s: messages nest deeper than %d levels (subgraphs inside subgraphs?)", origin,
                        MAX_NESTING);
  const wire_field *graph = NULL;
  wire_field graph_field;
  int n_graph = 0;
  byte_vec rest = {0};
  while (p < end) {
    wire_field f;
    if (!next_field(&p, end, &f)) {
      free(rest.v);
      return op_fail_null(err, OP_PARSE, bad_proto, origin);
    }
    if (f.number == MODEL_GRAPH_FIELD && f.payload) {
      graph_field = f;
      graph = &graph_field;
      n_graph++;
    } else {
      bytes_append(&rest, f.start, (size_t)(f.end - f.start));
    }
  }
  if (n_graph > 1) { /* protobuf merges repeated submessages; leave that to protobuf-c */
    free(rest.v);
    Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, size, data);
    return m ? m : op_fail_null(err, OP_PARSE, bad_proto, origin);
  }
  Onnx__ModelProto *m = onnx__model_proto__unpack(NULL, rest.n, rest.v ? rest.v : (const uint8_t *)"");
  free(rest.v);
  if (!m) return op_fail_null(err, OP_PARSE, bad_proto, origin);
  if (graph) {
    m->graph = unpack_graph(graph->payload, graph->payload_len, src, origin, err);
    if (!m->graph) {
      protobuf_c_message_free_unpacked(&m->base, NULL);
      return NULL;
    }
  }
  return m;
}

/* ---- external data ---- */

static const char *ext_entry(const Onnx__TensorProto *t, const char *key) {
  for (size_t i = 0; i < t->n_external_data; i++)
    if (t->external_data[i]->key && strcmp(t->external_data[i]->key, key) == 0) return t->external_data[i]->value;
  return NULL;
}

static bool parse_u64(const char *s, uint64_t *out) {
  if (!s || !*s) return false;
  char *e;
  errno = 0;
  unsigned long long v = strtoull(s, &e, 10);
  if (errno || *e || s[0] == '-') return false;
  *out = v;
  return true;
}

static bool path_inside(const char *dir_real, const char *file_real) {
  size_t n = strlen(dir_real);
  return strncmp(dir_real, file_real, n) == 0 && (file_real[n] == '/' || (n == 1 && dir_real[0] == '/'));
}

/* The mapping of an external data file, made once per file and kept until the model is freed. */
static const op_ext_file *ext_file(op_model *m, const char *real, const char *what, op_error *err) {
  for (size_t i = 0; i < m->ext.n; i++)
    if (strcmp(m->ext.v[i].real, real) == 0) return &m->ext.v[i];
  uint64_t size;
  int fd = op_open_regular(real, what, &size, NULL, NULL, err);
  if (fd < 0) return NULL;
  op_ext_file f = {op_xstrdup(real), NULL, (size_t)size};
  if (size) {
    f.map = mmap(NULL, (size_t)size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (f.map == MAP_FAILED) {
      close(fd);
      free(f.real);
      op_fail(err, OP_IO, "%s: cannot map: %s", what, strerror(errno));
      return NULL;
    }
    op_borrow_add(f.map, f.len);
  }
  close(fd); /* the mapping keeps the file */
  OP_VEC_PUSH(m->ext, f);
  return &m->ext.v[m->ext.n - 1];
}

/* Points an EXTERNAL tensor's raw_data at its bytes in the mapped file (copied when small, like inline
 * payloads), so external weights cost no more memory than inline ones. */
static int load_external(op_model *m, Onnx__TensorProto *t, op_error *err) {
  const char *name = t->name ? t->name : "";
  const char *loc = ext_entry(t, "location");
  if (!loc || !*loc)
    return op_fail(err, OP_INVALID, "%s: tensor '%s': external data without a location", m->path, name);
  if (!m->dir)
    return op_fail(err, OP_INVALID, "%s: tensor '%s': external data '%s' but no model directory", m->path, name, loc);
  if (loc[0] == '/' || strstr(loc, ".."))
    return op_fail(err, OP_INVALID, "%s: tensor '%s': external data location '%s' escapes the model directory",
                   m->path, name, loc);
  char full[PATH_MAX], real[PATH_MAX];
  if (snprintf(full, sizeof full, "%s/%s", m->dir, loc) >= (int)sizeof full)
    return op_fail(err, OP_INVALID, "%s: tensor '%s': external data path too long", m->path, name);
  if (!realpath(full, real))
    return op_fail(err, OP_IO, "%s: tensor '%s': external data '%s': %s", m->path, name, loc, strerror(errno));
  if (!path_inside(m->dir, real))
    return op_fail(err, OP_INVALID, "%s: tensor '%s': external data location '%s' escapes the model directory",
                   m->path, name, loc);
  uint64_t offset = 0, length, want;
  const char *off_s = ext_entry(t, "offset"), *len_s = ext_entry(t, "length");
  if (off_s && !parse_u64(off_s, &offset))
    return op_fail(err, OP_INVALID, "%s: tensor '%s': bad external data offset '%s'", m->path, name, off_s);
  int64_t numel = op_tensor_numel(t);
  size_t es = op_dtype_size(t->data_type);
  if (numel < 0 || !es)
    return op_fail(err, OP_INVALID, "%s: tensor '%s': external data of unsupported type or dims", m->path, name);
  if (!op_bytes_of(numel, es, &want))
    return op_fail(err, OP_INVALID, "%s: tensor '%s': dims need more bytes than can be addressed", m->path, name);
  if (len_s && !parse_u64(len_s, &length))
    return op_fail(err, OP_INVALID, "%s: tensor '%s': bad external data length '%s'", m->path, name, len_s);
  if (!len_s) length = want;
  if (length != want)
    return op_fail(err, OP_INVALID, "%s: tensor '%s': external data length %llu but dims and type need %llu",
                   m->path, name, (unsigned long long)length, (unsigned long long)want);
  size_t wlen = strlen(m->path) + strlen(name) + strlen(loc) + 64;
  char *what = op_xmalloc(wlen);
  snprintf(what, wlen, "%s: tensor '%s': external data '%s'", m->path, name, loc);
  const op_ext_file *f = ext_file(m, real, what, err);
  free(what);
  if (!f) return -1;
  if (offset > (uint64_t)f->len || length > (uint64_t)f->len - offset)
    return op_fail(err, OP_INVALID, "%s: tensor '%s': external data [%llu, +%llu) lies past the end of '%s'", m->path,
                   name, (unsigned long long)offset, (unsigned long long)length, loc);
  op_tensor_detach_borrowed(t);
  free(t->raw_data.data);
  const uint8_t *bytes = (const uint8_t *)f->map + offset;
  if (length >= BORROW_MIN) {
    t->raw_data.data = (uint8_t *)bytes; /* read-only: tensor.c never writes borrowed bytes */
  } else {
    t->raw_data.data = op_xmalloc(length ? length : 1);
    if (length) memcpy(t->raw_data.data, bytes, length);
  }
  t->raw_data.len = length;
  t->has_raw_data = 1;
  t->has_data_location = 0;
  t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT;
  for (size_t i = 0; i < t->n_external_data; i++) protobuf_c_message_free_unpacked(&t->external_data[i]->base, NULL);
  free(t->external_data);
  t->external_data = NULL;
  t->n_external_data = 0;
  return 0;
}

/* ---- structural checks that make a later pass safe ---- */

/* Minimum input counts of the default-domain ops that the passes read; sorted for bsearch. */
static const struct arity {
  const char *op;
  unsigned min_inputs;
} ARITY[] = {
    {"Add", 2},       {"Cast", 1},       {"Concat", 1},    {"ConstantOfShape", 1}, {"Div", 2},
    {"Dropout", 1},   {"Equal", 2},      {"Erf", 1},       {"Expand", 2},          {"Gather", 2},
    {"Gelu", 1},      {"Gemm", 2},       {"Identity", 1},  {"LayerNormalization", 2}, {"MatMul", 2},
    {"Mul", 2},       {"Pow", 2},        {"ReduceMean", 1}, {"Relu", 1},           {"Reshape", 2},
    {"Shape", 1},     {"Sigmoid", 1},    {"Slice", 1},     {"Softmax", 1},         {"Split", 1},
    {"Sqrt", 1},      {"Squeeze", 1},    {"Sub", 2},       {"Tanh", 1},            {"Transpose", 1},
    {"Unsqueeze", 1}, {"Where", 3},
};

static int cmp_arity(const void *key, const void *elem) {
  return strcmp((const char *)key, ((const struct arity *)elem)->op);
}

static int check_arity(const op_model *m, const Onnx__NodeProto *n, op_error *err) {
  if (n->n_output == 0)
    return op_fail(err, OP_INVALID, "%s: node '%s' (%s): has no output", m->path, op_node_name(n), n->op_type);
  bool default_domain = !n->domain || !n->domain[0] || strcmp(n->domain, "ai.onnx") == 0;
  const struct arity *a = default_domain ? bsearch(n->op_type, ARITY, sizeof ARITY / sizeof *ARITY, sizeof *ARITY, cmp_arity) : NULL;
  unsigned min = a ? a->min_inputs : 0;
  if (a && strcmp(a->op, "Slice") == 0 && op_model_opset(m->proto) >= 10) min = 3;
  size_t present = n->n_input;
  while (present > 0 && !n->input[present - 1][0]) present--; /* trailing optional inputs left out */
  for (size_t i = 0; i < min && i < n->n_input; i++)
    if (!n->input[i][0]) present = i < present ? i : present;
  if (present < min)
    return op_fail(err, OP_INVALID, "%s: node '%s' (%s): expected at least %u inputs, got %zu", m->path,
                   op_node_name(n), n->op_type, min, present);
  return 0;
}

/* Every value has one definition: a graph input, an initializer (which may also be listed as an input),
 * or one output of one node. */
static int check_names(const op_model *m, const op_graph *gr, op_error *err) {
  const Onnx__GraphProto *g = gr->g;
  for (size_t i = 0; i < g->n_input; i++)
    if (op_graph_find(gr, g->input[i]->name)->graph_input != (int)i)
      return op_fail(err, OP_INVALID, "%s: graph input '%s' is declared twice", m->path, g->input[i]->name);
  for (size_t i = 0; i < g->n_initializer; i++)
    if (op_graph_find(gr, g->initializer[i]->name)->init != (int)i)
      return op_fail(err, OP_INVALID, "%s: initializer '%s' is defined twice", m->path, g->initializer[i]->name);
  for (size_t i = 0; i < g->n_node; i++) {
    const Onnx__NodeProto *n = g->node[i];
    for (size_t j = 0; j < n->n_output; j++) {
      if (!n->output[j][0]) continue;
      const op_value *v = op_graph_find(gr, n->output[j]);
      bool twice_here = false;
      for (size_t k = 0; k < j; k++) twice_here |= strcmp(n->output[k], n->output[j]) == 0;
      if (v->producer != (int)i || twice_here)
        return op_fail(err, OP_INVALID, "%s: value '%s' is written by two nodes: '%s' (%s) and '%s' (%s)", m->path,
                       n->output[j], op_node_name(n), n->op_type, op_node_name(g->node[v->producer]),
                       g->node[v->producer]->op_type);
      if (v->init >= 0 || v->graph_input >= 0)
        return op_fail(err, OP_INVALID, "%s: node '%s' (%s): output '%s' has the name of a graph %s", m->path,
                       op_node_name(n), n->op_type, n->output[j], v->init >= 0 ? "initializer" : "input");
    }
  }
  return 0;
}

/* Once every input is defined, a node that cannot be ordered sits on a cycle. */
static int check_acyclic(const char *origin, const op_graph *gr, op_error *err) {
  size_t n = gr->g->n_node;
  int *order = op_xmalloc((n ? n : 1) * sizeof *order);
  size_t placed = op_graph_order(gr, order);
  int rc = 0;
  if (placed != n) {
    bool *done = op_xcalloc(n, 1);
    for (size_t i = 0; i < placed; i++) done[order[i]] = true;
    size_t i = 0;
    while (done[i]) i++;
    rc = op_fail(err, OP_INVALID, "%s: node '%s' (%s) is on a cycle (its input depends on its own output)", origin,
                 op_node_name(gr->g->node[i]), gr->g->node[i]->op_type);
    free(done);
  }
  free(order);
  return rc;
}

static int check_graph(op_model *m, op_error *err) {
  Onnx__ModelProto *p = m->proto;
  if (!p->graph) return op_fail(err, OP_PARSE, "%s: not an ONNX model: it has no graph", m->path);
  if (p->n_opset_import == 0 && p->ir_version >= 3)
    return op_fail(err, OP_PARSE, "%s: not an ONNX model: it imports no opset", m->path);
  if (p->ir_version <= 0) return op_fail(err, OP_PARSE, "%s: not an ONNX model: ir_version is missing", m->path);
  Onnx__GraphProto *g = p->graph;
  for (size_t i = 0; i < g->n_input; i++)
    if (!g->input[i]->name || !g->input[i]->name[0])
      return op_fail(err, OP_INVALID, "%s: graph input %zu has no name", m->path, i);
  for (size_t i = 0; i < g->n_output; i++)
    if (!g->output[i]->name || !g->output[i]->name[0])
      return op_fail(err, OP_INVALID, "%s: graph output %zu has no name", m->path, i);
  for (size_t i = 0; i < g->n_node; i++) {
    if (!g->node[i]->op_type || !g->node[i]->op_type[0])
      return op_fail(err, OP_INVALID, "%s: node %zu ('%s') has no op_type", m->path, i, op_node_name(g->node[i]));
    if (check_arity(m, g->node[i], err)) return -1;
    for (size_t a = 0; a < g->node[i]->n_attribute; a++)
      if (!g->node[i]->attribute[a]->name || !g->node[i]->attribute[a]->name[0])
        return op_fail(err, OP_INVALID, "%s: node '%s' (%s): attribute %zu has no name", m->path,
                       op_node_name(g->node[i]), g->node[i]->op_type, a);
  }
  for (size_t i = 0; i < g->n_initializer; i++) {
    Onnx__TensorProto *t = g->initializer[i];
    if (!t->name || !t->name[0]) return op_fail(err, OP_INVALID, "%s: initializer %zu has no name", m->path, i);
    if (t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) {
      if (load_external(m, t, err) != 0) return -1;
    }
    if (op_tensor_validate(t, m->path, err) != 0) return -1;
  }
  /* every consumed name must be defined somewhere in this graph */
  op_graph *gr = op_graph_build(g);
  int rc = 0;
  for (size_t i = 0; i < g->n_node && rc == 0; i++) {
    Onnx__NodeProto *n = g->node[i];
    for (size_t j = 0; j < n->n_input && rc == 0; j++) {
      op_value *v = n->input[j][0] ? op_graph_find(gr, n->input[j]) : NULL;
      if (v && v->producer < 0 && v->init < 0 && v->graph_input < 0)
        rc = op_fail(err, OP_INVALID,
                     "%s: node '%s' (%s): input '%s' is not produced by any node, initializer or graph input",
                     m->path, op_node_name(n), n->op_type, n->input[j]);
    }
  }
  for (size_t i = 0; i < g->n_output && rc == 0; i++) {
    op_value *v = op_graph_find(gr, g->output[i]->name);
    if (v->producer < 0 && v->init < 0 && v->graph_input < 0)
      rc = op_fail(err, OP_INVALID, "%s: graph output '%s' is not produced by any node", m->path, g->output[i]->name);
  }
  if (rc == 0) rc = check_names(m, gr, err);
  if (rc == 0) rc = check_acyclic(m->path, gr, err);
  op_graph_free(gr);
  return rc;
}

/* Frees a model tree whose initializers may borrow from a mapping that is still alive. */
static void free_proto(Onnx__ModelProto *proto) {
  if (!proto) return;
  if (proto->graph)
    for (size_t i = 0; i < proto->graph->n_initializer; i++) op_tensor_detach_borrowed(proto->graph->initializer[i]);
  protobuf_c_message_free_unpacked(&proto->base, NULL);
}

static void unmap(void *map, size_t len) {
  if (!map) return;
  op_borrow_remove(map);
  munmap(map, len);
}

/* Takes ownership of proto and of the mapping it may borrow from (map NULL: none). */
static op_model *finish_load(Onnx__ModelProto *proto, void *map, size_t map_len, const char *origin, const char *dir,
                             op_error *err) {
  op_model *m = op_xcalloc(1, sizeof *m);
  m->proto = proto;
  m->map = map;
  m->map_len = map_len;
  m->path = op_xstrdup(origin);
  m->dir = dir ? op_xstrdup(dir) : NULL;
  if (check_graph(m, err) != 0) {
    op_model_free(m);
    return NULL;
  }
  return m;
}

op_model *op_model_load_buffer(const void *data, size_t size, const char *base_dir, const char *origin,
                               op_error *err) {
  if (!origin) origin = "<buffer>";
  if (size == 0) return op_fail_null(err, OP_PARSE, "%s: empty file", origin);
  char dir_real[PATH_MAX];
  if (base_dir && !realpath(base_dir, dir_real))
    return op_fail_null(err, OP_IO, "%s: %s: %s", origin, base_dir, strerror(errno));
  byte_source src = {false};
  Onnx__ModelProto *proto = unpack_model(data, size, &src, origin, err);
  if (!proto) return NULL;
  return finish_load(proto, NULL, 0, origin, base_dir ? dir_real : NULL, err);
}

op_model *op_model_clone(const op_model *m, op_error *err) {
  size_t n = protobuf_c_message_get_packed_size(&m->proto->base);
  uint8_t *buf = op_xmalloc(n ? n : 1);
  protobuf_c_message_pack(&m->proto->base, buf);
  op_model *c = op_model_load_buffer(buf, n, NULL, m->path, err);
  free(buf);
  if (c && m->real_path) c->real_path = op_xstrdup(m->real_path);
  return c;
}

op_model *op_model_load(const char *path, op_error *err) {
  uint64_t fsize;
  int fd = op_open_regular(path, NULL, &fsize, NULL, NULL, err);
  if (fd < 0) return NULL;
  struct stat st = {.st_size = (off_t)fsize};
  if (st.st_size == 0) {
    close(fd);
    return op_fail_null(err, OP_PARSE, "%s: empty file", path);
  }
  void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) {
    close(fd);
    return op_fail_null(err, OP_IO, "%s: cannot map: %s", path, strerror(errno));
  }
  close(fd); /* the mapping keeps the file */
  size_t len = (size_t)st.st_size;
  op_borrow_add(map, len);
  byte_source src = {true};
  Onnx__ModelProto *proto = unpack_model(map, len, &src, path, err);
  char real[PATH_MAX], dir_buf[PATH_MAX];
  if (proto && !realpath(path, real)) {
    free_proto(proto);
    proto = op_fail_null(err, OP_IO, "%s: %s", path, strerror(errno));
  }
  if (!proto) {
    unmap(map, len);
    return NULL;
  }
  snprintf(dir_buf, sizeof dir_buf, "%s", real);
  op_model *m = finish_load(proto, map, len, path, dirname(dir_buf), err);
  if (m) m->real_path = op_xstrdup(real);
  return m;
}

void op_model_free(op_model *m) {
  if (!m) return;
  free_proto(m->proto);
  unmap(m->map, m->map_len);
  for (size_t i = 0; i < m->ext.n; i++) {
    unmap(m->ext.v[i].map, m->ext.v[i].len);
    free(m->ext.v[i].real);
  }
  free(m->ext.v);
  free(m->path);
  free(m->real_path);
  free(m->dir);
  free(m);
}

const char *op_model_path(const op_model *m) { return m->path; }

int64_t op_model_param_count(const op_model *m) {
  int64_t n = 0;
  const Onnx__GraphProto *g = m->proto->graph;
  for (size_t i = 0; i < g->n_initializer; i++)
    if (op_dtype_is_float(g->initializer[i]->data_type)) n += op_tensor_numel(g->initializer[i]);
  return n;
}

char *op_read_file(const char *path, size_t *size, op_error *err) {
  uint64_t len;
  int fd = op_open_regular(path, NULL, &len, NULL, NULL, err);
  if (fd < 0) return NULL;
  if (op_budget_fits(len, path, err)) { /* beside the values held now (the model's, the data's) */
    close(fd);
    return NULL;
  }
  char *buf = op_xmalloc((size_t)len + 1);
  size_t n = 0;
  bool failed = false;
  while (n < len) { /* never past the size seen at open: a growing file cannot run the buffer over */
    ssize_t r = read(fd, buf + n, (size_t)len - n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      failed = r < 0;
      break;
    }
    n += (size_t)r;
  }
  close(fd);
  if (failed) {
    free(buf);
    return op_fail_null(err, OP_IO, "%s: read error", path);
  }
  buf[n] = 0;
  if (size) *size = n;
  return buf;
}

/* ---- saving ---- */

#define WRITEBACK_STEP (16u << 20)

/* Starts the disk write of what the kernel already holds of f, every WRITEBACK_STEP bytes, so the
 * fsync that closes a temporary file finds most of it on disk already instead of waiting for all
 * of it (the same trick dpkg uses). Returns the new start of the not yet started range. */
static off_t start_writeback(FILE *f, off_t started) {
  off_t pos = lseek(fileno(f), 0, SEEK_CUR);
  if (pos - started < (off_t)WRITEBACK_STEP) return started;
  sync_file_range(fileno(f), started, pos - started, SYNC_FILE_RANGE_WRITE);
  return pos;
}

typedef struct file_buffer {
  ProtobufCBuffer base;
  FILE *f;
  bool failed;
  off_t started; /* writeback has been started up to here */
} file_buffer;

static void file_append(ProtobufCBuffer *b, size_t len, const uint8_t *data) {
  file_buffer *fb = (file_buffer *)b;
  if (!fb->failed && len && fwrite(data, 1, len, fb->f) != len) fb->failed = true;
  if (len >= BORROW_MIN) fb->started = start_writeback(fb->f, fb->started);
}

/* Opens a temporary file beside `target`; returns the FILE and its name in tmp (PATH_MAX). */
FILE *op_temp_open(const char *target, char *tmp, op_error *err) {
  if (snprintf(tmp, PATH_MAX, "%s.tmp.XXXXXX", target) >= PATH_MAX) {
    op_fail(err, OP_IO, "%s: path too long", target);
    return NULL;
  }
  int fd = mkstemp(tmp);
  if (fd < 0) {
    op_fail(err, OP_IO, "%s: cannot create a temporary file: %s", target, strerror(errno));
    return NULL;
  }
  fchmod(fd, 0644);
  FILE *f = fdopen(fd, "wb");
  if (!f) {
    close(fd);
    unlink(tmp);
    op_fail(err, OP_IO, "%s: %s", target, strerror(errno));
  }
  return f;
}

int op_temp_close(FILE *f, const char *tmp, bool failed, const char *target, op_error *err) {
  if (fflush(f) != 0 || fsync(fileno(f)) != 0) failed = true;
  if (fclose(f) != 0) failed = true;
  if (failed) {
    unlink(tmp);
    return op_fail(err, OP_IO, "%s: write failed: %s", target, strerror(errno ? errno : EIO));
  }
  return 0;
}

static Onnx__StringStringEntryProto *new_entry(const char *key, const char *value) {
  Onnx__StringStringEntryProto *e = op_xmalloc(sizeof *e);
  onnx__string_string_entry_proto__init(e);
  e->key = op_xstrdup(key);
  e->value = op_xstrdup(value);
  return e;
}

/* Where a tensor's bytes went while the model is packed with external data. */
typedef struct moved_tensor {
  Onnx__TensorProto *t;
  ProtobufCBinaryData raw;
} moved_tensor;

/* Moves large raw tensors into a data file and rewrites them as EXTERNAL references; the caller
 * restores them with restore_inline after packing. Returns the number moved, or -1. */
static long write_external(Onnx__GraphProto *g, const char *data_tmp, FILE *df, const char *location,
                           size_t min_bytes, moved_tensor *moved, op_error *err) {
  long n = 0;
  uint64_t offset = 0;
  off_t started = 0;
  for (size_t i = 0; i < g->n_initializer; i++) {
    Onnx__TensorProto *t = g->initializer[i];
    if (!t->has_raw_data || t->raw_data.len < min_bytes) continue;
    if (fwrite(t->raw_data.data, 1, t->raw_data.len, df) != t->raw_data.len) {
      op_fail(err, OP_IO, "%s: write failed: %s", data_tmp, strerror(errno));
      return -1;
    }
    started = start_writeback(df, started);
    char num[32];
    moved[n].t = t;
    moved[n].raw = t->raw_data;
    t->has_raw_data = 0;
    t->raw_data.data = NULL;
    t->raw_data.len = 0;
    t->has_data_location = 1;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    t->external_data = op_xmalloc(3 * sizeof *t->external_data);
    t->external_data[0] = new_entry("location", location);
    snprintf(num, sizeof num, "%llu", (unsigned long long)offset);
    t->external_data[1] = new_entry("offset", num);
    snprintf(num, sizeof num, "%zu", moved[n].raw.len);
    t->external_data[2] = new_entry("length", num);
    t->n_external_data = 3;
    offset += moved[n].raw.len;
    n++;
  }
  return n;
}

static void restore_inline(moved_tensor *moved, long n) {
  for (long i = 0; i < n; i++) {
    Onnx__TensorProto *t = moved[i].t;
    for (size_t j = 0; j < t->n_external_data; j++) protobuf_c_message_free_unpacked(&t->external_data[j]->base, NULL);
    free(t->external_data);
    t->external_data = NULL;
    t->n_external_data = 0;
    t->has_data_location = 0;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__DEFAULT;
    t->raw_data = moved[i].raw;
    t->has_raw_data = 1;
  }
}

static bool same_file(const char *a_real, const char *path) {
  struct stat a, b;
  return a_real && stat(a_real, &a) == 0 && stat(path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

/* Refuses a target that is one of the files the model was read from (by device and inode, so hard
 * links and other paths to them count too). */
static int check_target(const op_model *m, const char *path, op_error *err) {
  if (same_file(m->real_path, path)) return op_fail(err, OP_ARG, "%s: refusing to overwrite the input model", path);
  for (size_t i = 0; i < m->ext.n; i++)
    if (same_file(m->ext.v[i].real, path))
      return op_fail(err, OP_ARG, "%s: refusing to overwrite the input model's external data '%s'", path,
                     m->ext.v[i].real);
  return 0;
}

int op_model_saves_external(const op_model *m) {
  uint64_t total = 0;
  for (size_t i = 0; i < m->proto->graph->n_initializer; i++) total += m->proto->graph->initializer[i]->raw_data.len;
  return total >= TWO_GIB - (64u << 20);
}

int op_model_save(const op_model *cm, const char *path, const op_save_options *opts, op_error *err) {
  op_model *m = (op_model *)cm; /* external data is swapped in and out; the model is restored */
  if (check_target(m, path, err)) return -1;
  Onnx__GraphProto *g = m->proto->graph;
  op_graph *gr = op_graph_build(g); /* a pass must never get a cycle written */
  int cyc = check_acyclic(path, gr, err);
  op_graph_free(gr);
  if (cyc) return -1;
  bool external = (opts && opts->external_data) || op_model_saves_external(m);
  size_t min_bytes = opts && opts->external_min_bytes ? opts->external_min_bytes : 1024;

  char tmp[PATH_MAX], data_tmp[PATH_MAX], data_path[PATH_MAX], location[PATH_MAX];
  moved_tensor *moved = NULL;
  long n_moved = 0;
  FILE *df = NULL;
  if (external) {
    char base_buf[PATH_MAX];
    snprintf(base_buf, sizeof base_buf, "%s", path);
    snprintf(location, sizeof location, "%s.data", basename(base_buf));
    if (snprintf(data_path, sizeof data_path, "%s.data", path) >= (int)sizeof data_path)
      return op_fail(err, OP_IO, "%s: path too long", path);
    if (check_target(m, data_path, err)) return -1;
    df = op_temp_open(data_path, data_tmp, err);
    if (!df) return -1;
    moved = op_xmalloc((g->n_initializer + 1) * sizeof *moved);
    n_moved = write_external(g, data_tmp, df, location, min_bytes, moved, err);
    if (n_moved < 0 || op_temp_close(df, data_tmp, false, data_path, err) != 0) {
      if (n_moved > 0) restore_inline(moved, n_moved);
      if (n_moved < 0) { fclose(df); unlink(data_tmp); }
      free(moved);
      return -1;
    }
  }
  FILE *f = op_temp_open(path, tmp, err);
  if (!f) {
    if (external) { restore_inline(moved, n_moved); free(moved); unlink(data_tmp); }
    return -1;
  }
  setvbuf(f, NULL, _IOFBF, 1 << 20);
  file_buffer fb = {{file_append}, f, false, 0};
  protobuf_c_message_pack_to_buffer(&m->proto->base, &fb.base);
  if (external) {
    restore_inline(moved, n_moved);
    free(moved);
  }
  if (op_temp_close(f, tmp, fb.failed, path, err) != 0) {
    if (external) unlink(data_tmp);
    return -1;
  }
  if (external && rename(data_tmp, data_path) != 0) {
    unlink(tmp);
    unlink(data_tmp);
    return op_fail(err, OP_IO, "%s: %s", data_path, strerror(errno));
  }
  if (rename(tmp, path) != 0) {
    unlink(tmp);
    return op_fail(err, OP_IO, "%s: %s", path, strerror(errno));
  }
  return 0;
}
