/* test_model_io.c - loading, validation and saving: round trips keep every byte, unknown fields
 * survive, external data is written and read back, malformed buffers are refused cleanly. */
#include "check.h"
#include "model/graph.h"

#include <stdlib.h>
#include <unistd.h>

static char *slurp(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *buf = malloc((size_t)len + 64);
  *n = fread(buf, 1, (size_t)len, f);
  fclose(f);
  return buf;
}

static uint8_t *pack(const op_model *m, size_t *n) {
  *n = protobuf_c_message_get_packed_size(&m->proto->base);
  uint8_t *b = malloc(*n);
  protobuf_c_message_pack(&m->proto->base, b);
  return b;
}

/* Appends an unused float initializer of n elements holding i * 0.5. */
static void add_big(Onnx__GraphProto *g, const char *name, int64_t n) {
  Onnx__TensorProto *t = op_tensor_new(name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, &n, 1);
  float *f = (float *)t->raw_data.data;
  for (int64_t i = 0; i < n; i++) f[i] = (float)i * 0.5f;
  g->initializer = realloc(g->initializer, (g->n_initializer + 1) * sizeof *g->initializer);
  g->initializer[g->n_initializer++] = t;
}

static Onnx__TensorProto *find_init(const op_model *m, const char *name) {
  for (size_t i = 0; i < m->proto->graph->n_initializer; i++)
    if (strcmp(m->proto->graph->initializer[i]->name, name) == 0) return m->proto->graph->initializer[i];
  return NULL;
}

/* Large raw_data of a model loaded from a file is borrowed from its mapping, unaligned more often than
 * not; typed access gets an aligned copy, replacing and freeing never free the mapping's bytes, and
 * saving writes them out unchanged. Name lengths shift the payload through every alignment. */
static void test_borrowed(const char *fixture_path, const char *tmpdir) {
  op_error err = {0};
  char out[4096], out2[4096];
  snprintf(out, sizeof out, "%s/borrow.onnx", tmpdir);
  snprintf(out2, sizeof out2, "%s/borrow2.onnx", tmpdir);
  bool saw_unaligned = false;
  for (int shift = 0; shift < 4; shift++) {
    op_model *m = op_model_load(fixture_path, &err);
    char name[16] = "big", name2[16] = "other";
    memset(name + 3, 'x', (size_t)shift);
    name[3 + shift] = 0;
    add_big(m->proto->graph, name, 20000); /* 80000 bytes: over the borrowing threshold */
    add_big(m->proto->graph, name2, 20000);
    CHECK(op_model_save(m, out, NULL, &err) == 0);
    op_model_free(m);

    op_model *b = op_model_load(out, &err);
    Onnx__TensorProto *t = b ? find_init(b, name) : NULL, *t2 = b ? find_init(b, name2) : NULL;
    CHECK(t && t2 && op_tensor_is_borrowed(t) && op_tensor_is_borrowed(t2));
    if (!t || !t2) {
      op_model_free(b);
      continue;
    }
    saw_unaligned |= (uintptr_t)t->raw_data.data % sizeof(float) != 0;
    CHECK(!op_tensor_is_borrowed(find_init(b, b->proto->graph->initializer[0]->name))); /* small: copied */
    float *f = op_tensor_f32(t);
    CHECK(f && (uintptr_t)f % sizeof(float) == 0 && !op_tensor_is_borrowed(t));
    CHECK(f && f[0] == 0.f && f[19999] == 9999.5f);
    f[1] = 42.f; /* owned now: writable */
    int64_t one = 1;
    op_tensor_replace(t2, &one, 1, op_xcalloc(1, sizeof(float)), sizeof(float)); /* drops a borrowed buffer */
    CHECK(op_model_save(b, out2, NULL, &err) == 0);
    op_model_free(b); /* must not free the mapping's bytes (ASan) */

    op_model *c = op_model_load(out2, &err);
    Onnx__TensorProto *ct = c ? find_init(c, name) : NULL, *ct2 = c ? find_init(c, name2) : NULL;
    float v[3] = {0};
    if (ct) memcpy(v, ct->raw_data.data, sizeof v);
    CHECK(ct && v[0] == 0.f && v[1] == 42.f && v[2] == 1.f);
    CHECK(ct2 && ct2->n_dims == 1 && ct2->dims[0] == 1);
    op_model_free(c);
  }
  CHECK(saw_unaligned);
  /* a caller's buffer is never borrowed from: the model must outlive it */
  size_t n;
  char *buf = slurp(out, &n);
  op_model *m = buf ? op_model_load_buffer(buf, n, NULL, "buffer", &err) : NULL;
  free(buf);
  CHECK(m && find_init(m, "bigxxx") && !op_tensor_is_borrowed(find_init(m, "bigxxx")));
  CHECK(m && op_tensor_f32(find_init(m, "bigxxx"))[3] == 1.5f);
  op_model_free(m);
}

/* Regression (hfgen, DeBERTa-v2's TorchScript export): a value read only inside an If branch was deleted as
 * dead by the prune's cleanup and the If could be ordered before its producer. The branch's reads count as
 * the If node's: the producer survives op_graph_remove_dead and is ordered first. */
static void test_if_branch_reads_outer_value(void) {
  Onnx__GraphProto *g = calloc(1, sizeof *g), *branch = calloc(1, sizeof *branch);
  onnx__graph_proto__init(g);
  onnx__graph_proto__init(branch);
  const char *in_c[] = {"x"}, *out_c[] = {"c"}, *in_b[] = {"c"}, *out_b[] = {"t"}, *in_if[] = {"cond"}, *out_if[] = {"y"};
  op_graph_append(branch, op_node_new("Identity", "inner", in_b, 1, out_b, 1));
  branch->output = malloc(sizeof *branch->output);
  branch->output[0] = malloc(sizeof *branch->output[0]);
  onnx__value_info_proto__init(branch->output[0]);
  branch->output[0]->name = strdup("t");
  branch->n_output = 1;
  Onnx__NodeProto *iff = op_node_new("If", "if", in_if, 1, out_if, 1);
  Onnx__AttributeProto *at = malloc(sizeof *at);
  onnx__attribute_proto__init(at);
  at->name = strdup("then_branch");
  at->has_type = 1;
  at->type = ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__GRAPH;
  at->g = branch;
  iff->attribute = malloc(sizeof *iff->attribute);
  iff->attribute[iff->n_attribute++] = at;
  op_graph_append(g, iff); /* listed before the producer of what its branch reads */
  op_graph_append(g, op_node_new("Identity", "outer", in_c, 1, out_c, 1));
  g->output = malloc(sizeof *g->output);
  g->output[0] = malloc(sizeof *g->output[0]);
  onnx__value_info_proto__init(g->output[0]);
  g->output[0]->name = strdup("y");
  g->n_output = 1;
  g->input = malloc(2 * sizeof *g->input);
  for (int i = 0; i < 2; i++) {
    g->input[i] = malloc(sizeof *g->input[i]);
    onnx__value_info_proto__init(g->input[i]);
    g->input[i]->name = strdup(i ? "cond" : "x");
  }
  g->n_input = 2;
  op_graph_remove_dead(g);
  CHECK_EQ_INT(g->n_node, 2);
  CHECK(op_graph_toposort(g) == 0);
  CHECK(g->n_node == 2 && strcmp(op_node_name(g->node[0]), "outer") == 0);
  protobuf_c_message_free_unpacked(&g->base, NULL);
}

int main(int argc, char **argv) {
  if (argc < 3) return 2;
  const char *fixture = argv[1], *tmpdir = argv[2];
  char path[4096], out[4096];
  snprintf(path, sizeof path, "%s/bert_separate_mask_opset11/model.onnx", fixture);
  op_error err = {0};
  op_model *m = op_model_load(path, &err);
  CHECK(m != NULL);
  if (!m) return check_done("model_io");
  CHECK_EQ_INT(op_model_param_count(m), 18787);
  CHECK_EQ_INT(op_model_opset(m->proto), 11);

  /* round trip: what is saved packs to the same bytes as what was loaded */
  snprintf(out, sizeof out, "%s/roundtrip.onnx", tmpdir);
  CHECK(op_model_save(m, out, NULL, &err) == 0);
  op_model *m2 = op_model_load(out, &err);
  CHECK(m2 != NULL);
  size_t n1, n2;
  uint8_t *b1 = pack(m, &n1), *b2 = m2 ? pack(m2, &n2) : NULL;
  CHECK(b2 && n1 == n2 && memcmp(b1, b2, n1) == 0);
  free(b2);
  op_model_free(m2);

  /* refusing to overwrite the input */
  CHECK(op_model_save(m, path, NULL, &err) == -1);
  CHECK_EQ_INT(err.code, OP_ARG);
  CHECK_CONTAINS(err.message, "refusing to overwrite the input");

  /* external data: written beside the model, read back to the same model */
  snprintf(out, sizeof out, "%s/ext.onnx", tmpdir);
  op_save_options so = {.external_data = 1, .external_min_bytes = 256};
  CHECK(op_model_save(m, out, &so, &err) == 0);
  char data_path[4200];
  snprintf(data_path, sizeof data_path, "%s.data", out);
  CHECK(access(data_path, F_OK) == 0);
  size_t ext_size;
  char *ext = slurp(out, &ext_size);
  CHECK(ext && ext_size < n1 / 2); /* the weights went to the data file */
  free(ext);
  m2 = op_model_load(out, &err);
  CHECK(m2 != NULL);
  b2 = m2 ? pack(m2, &n2) : NULL;
  CHECK(b2 && n1 == n2 && memcmp(b1, b2, n1) == 0);
  free(b2);
  op_model_free(m2);
  /* and the in-memory model was left inline */
  b2 = pack(m, &n2);
  CHECK(n1 == n2 && memcmp(b1, b2, n1) == 0);
  free(b2);

  /* unknown fields survive: append field 1000 (varint 42) and field 1001 (bytes "xyz") */
  size_t fn;
  char *file = slurp(path, &fn);
  const uint8_t extra[] = {0xc0, 0x3e, 42, 0xca, 0x3e, 3, 'x', 'y', 'z'};
  memcpy(file + fn, extra, sizeof extra);
  op_model *mu = op_model_load_buffer(file, fn + sizeof extra, NULL, "unknown.onnx", &err);
  CHECK(mu != NULL);
  if (mu) {
    CHECK_EQ_INT(mu->proto->base.n_unknown_fields, 2);
    snprintf(out, sizeof out, "%s/unknown.onnx", tmpdir);
    CHECK(op_model_save(mu, out, NULL, &err) == 0);
    size_t on;
    char *o = slurp(out, &on);
    CHECK(o && on == n1 + sizeof extra && memcmp(o + n1, extra, sizeof extra) == 0);
    free(o);
  }
  op_model_free(mu);

  /* malformed buffers: one error each, never a model */
  CHECK(op_model_load_buffer(file, 0, NULL, "e.onnx", &err) == NULL);
  CHECK_CONTAINS(err.message, "e.onnx: empty file");
  CHECK(op_model_load_buffer(file, fn / 3, NULL, "t.onnx", &err) == NULL);
  CHECK_EQ_INT(err.code, OP_PARSE);
  CHECK_CONTAINS(err.message, "t.onnx: not a valid ONNX protobuf");
  const uint8_t varint_only[] = {0x08, 0x07}; /* ir_version = 7 and nothing else */
  CHECK(op_model_load_buffer(varint_only, sizeof varint_only, NULL, "v.onnx", &err) == NULL);
  CHECK_CONTAINS(err.message, "no graph");
  free(file);
  free(b1);

  /* topological order: a sorted graph is kept as it is; a reversed one is put back in a valid order;
   * a cycle is refused, by the sort and by a session */
  Onnx__GraphProto *g = m->proto->graph;
  size_t n = g->n_node;
  Onnx__NodeProto **orig = malloc(n * sizeof *orig);
  memcpy(orig, g->node, n * sizeof *orig);
  CHECK(op_graph_toposort(g) == 0 && memcmp(orig, g->node, n * sizeof *orig) == 0);
  for (size_t i = 0; i < n / 2; i++) {
    Onnx__NodeProto *t = g->node[i];
    g->node[i] = g->node[n - 1 - i];
    g->node[n - 1 - i] = t;
  }
  CHECK(op_graph_toposort(g) == 0);
  op_graph *gr = op_graph_build(g);
  bool valid = true;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j < g->node[i]->n_input; j++) {
      op_value *v = g->node[i]->input[j][0] ? op_graph_find(gr, g->node[i]->input[j]) : NULL;
      valid &= !v || v->producer < 0 || (size_t)v->producer < i;
    }
  CHECK(valid);
  op_graph_free(gr);
  size_t mm = 0; /* the first MatMul reads its weight; make it read the last node's output instead */
  while (mm < n && strcmp(g->node[mm]->op_type, "MatMul")) mm++;
  char *keep = g->node[mm]->input[0];
  g->node[mm]->input[0] = g->node[n - 1]->output[0];
  memcpy(orig, g->node, n * sizeof *orig);
  CHECK(op_graph_toposort(g) == -1 && memcmp(orig, g->node, n * sizeof *orig) == 0);
  CHECK(op_session_new(m, &err) == NULL);
  CHECK_CONTAINS(err.message, "waits on a cycle or an undefined value");
  g->node[mm]->input[0] = keep;
  free(orig);
  op_model_free(m);
  op_model_free(NULL);
  test_borrowed(path, tmpdir);
  test_if_branch_reads_outer_value();
  return check_done("model_io");
}
