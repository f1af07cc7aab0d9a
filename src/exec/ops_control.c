/* ops_control.c - If: both branches are sessions of their own, built with the node's session; the
 * condition picks one, which runs with the outer-scope values it reads (appended to the node's
 * inputs by the executor, in the order op_if_capture_name gives). */
#include "exec/ops_util.h"

#include <stdlib.h>
#include <string.h>

struct op_if_aux {
  op_session *branch[2]; /* then, else */
  size_t *map[2];        /* capture i of a branch is the node's hidden input map[b][i] */
  OP_VEC(char *) names;  /* the union of both branches' captures */
};

void op_if_free(op_if_aux *a) {
  if (!a) return;
  for (int b = 0; b < 2; b++) op_session_free(a->branch[b]), free(a->map[b]);
  for (size_t i = 0; i < a->names.n; i++) free(a->names.v[i]);
  free(a->names.v);
  free(a);
}

size_t op_if_capture_count(const op_if_aux *a) { return a->names.n; }
const char *op_if_capture_name(const op_if_aux *a, size_t i) { return a->names.v[i]; }

op_if_aux *op_if_prepare(const op_model *m, const Onnx__NodeProto *nd, op_error *err) {
  op_if_aux *a = op_xcalloc(1, sizeof *a);
  static const char *const attr[2] = {"then_branch", "else_branch"};
  for (int b = 0; b < 2; b++) {
    Onnx__AttributeProto *at = op_node_attr(nd, attr[b]);
    if (!at || !at->g) {
      op_fail(err, OP_INVALID, "%s: node '%s' (If): attribute '%s' is missing", m->path, op_node_name(nd), attr[b]);
      goto fail;
    }
    if (at->g->n_input) {
      op_fail(err, OP_INVALID, "%s: node '%s' (If): '%s' has inputs", m->path, op_node_name(nd), attr[b]);
      goto fail;
    }
    if (at->g->n_output != nd->n_output) {
      op_fail(err, OP_INVALID, "%s: node '%s' (If): '%s' has %zu outputs, the node %zu", m->path, op_node_name(nd),
              attr[b], at->g->n_output, nd->n_output);
      goto fail;
    }
    if (!(a->branch[b] = op_session_new_sub(m, at->g, err))) goto fail;
    size_t n = op_session_capture_count(a->branch[b]);
    a->map[b] = op_xmalloc((n ? n : 1) * sizeof(size_t));
    for (size_t i = 0; i < n; i++) {
      const char *nm = op_session_capture_name(a->branch[b], i);
      size_t j = 0;
      while (j < a->names.n && strcmp(a->names.v[j], nm)) j++;
      if (j == a->names.n) OP_VEC_PUSH(a->names, op_xstrdup(nm));
      a->map[b][i] = j;
    }
  }
  return a;
fail:
  op_if_free(a);
  return NULL;
}

OP_KERNEL(op_k_if) {
  const op_if_aux *a = k->sub;
  op_xt *cond = in[0];
  if (!a) return op_kfail(k, err, "branches were not prepared");
  if (ou_want(k, cond, "condition", false, false, true, err)) return -1;
  if (cond->numel != 1) return op_kfail(k, err, "condition holds %lld values, expected one", (long long)cond->numel);
  int b = ((const uint8_t *)cond->data)[0] ? 0 : 1;
  size_t declared = k->node->n_input, n = op_session_capture_count(a->branch[b]);
  const op_xt **cap = op_xmalloc((n ? n : 1) * sizeof *cap);
  for (size_t i = 0; i < n; i++) {
    size_t slot = declared + a->map[b][i];
    cap[i] = slot < n_in ? in[slot] : NULL;
    if (!cap[i] || !cap[i]->dtype) {
      free(cap);
      return op_kfail(k, err, "outer value '%s' is not defined before this node", op_session_capture_name(a->branch[b], i));
    }
  }
  int rc = op_session_run_sub(a->branch[b], cap, out, n_out, err);
  free(cap);
  return rc;
}
