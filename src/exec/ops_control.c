/* ops_control.c - If and Loop: branches and loop bodies are sessions of their own, built with the
 * node's session; they run with the outer-scope values they read (appended to the node's inputs by
 * the executor, in the order op_if_capture_name gives). */
#include "exec/ops_util.h"

#include <stdlib.h>
#include <string.h>

struct op_if_aux {
  op_session *branch[2]; /* If: then, else; Loop: body, NULL */
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
  bool loop = op_node_is(nd, "Loop");
  static const char *const if_attr[2] = {"then_branch", "else_branch"}, *const loop_attr[1] = {"body"};
  const char *const *attr = loop ? loop_attr : if_attr;
  for (int b = 0; b < (loop ? 1 : 2); b++) {
    Onnx__AttributeProto *at = op_node_attr(nd, attr[b]);
    if (!at || !at->g) {
      op_fail(err, OP_INVALID, "%s: node '%s' (If): attribute '%s' is missing", m->path, op_node_name(nd), attr[b]);
      goto fail;
    }
    if (loop && (nd->n_input < 2 || at->g->n_input != nd->n_input || at->g->n_output < at->g->n_input - 1 || nd->n_output != at->g->n_output - 1)) {
      op_fail(err, OP_INVALID, "%s: node '%s' (Loop): body has %zu inputs and %zu outputs for %zu inputs and %zu outputs",
              m->path, op_node_name(nd), at->g->n_input, at->g->n_output, nd->n_input, nd->n_output);
      goto fail;
    }
    if (!loop && at->g->n_input) {
      op_fail(err, OP_INVALID, "%s: node '%s' (If): '%s' has inputs", m->path, op_node_name(nd), attr[b]);
      goto fail;
    }
    if (!loop && at->g->n_output != nd->n_output) {
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
  int rc = op_session_run_sub(a->branch[b], NULL, cap, out, n_out, err);
  free(cap);
  return rc;
}

/* Loop: runs the body while the trip count (if given) is not reached and the condition (if given)
 * holds; carried values feed the next iteration, scan outputs are stacked along a new first axis. */
OP_KERNEL(op_k_loop) {
  const op_if_aux *a = k->sub;
  if (!a) return op_kfail(k, err, "body was not prepared");
  op_session *body = a->branch[0];
  size_t declared = k->node->n_input, N = declared - 2, K = n_out - N, nc = op_session_capture_count(body);
  op_xt *M = in[0], *cond = in[1];
  if ((M && (ou_want(k, M, "trip count", false, true, false, err) || M->numel != 1)) ||
      (cond && (ou_want(k, cond, "condition", false, false, true, err) || cond->numel != 1)))
    return M && M->numel != 1 ? op_kfail(k, err, "trip count must be a scalar") : -1;
  const op_xt **cap = op_xmalloc((nc ? nc : 1) * sizeof *cap);
  for (size_t i = 0; i < nc; i++) {
    size_t slot = declared + a->map[0][i];
    cap[i] = slot < n_in ? in[slot] : NULL;
    if (!cap[i] || !cap[i]->dtype) {
      free(cap);
      return op_kfail(k, err, "outer value '%s' is not defined before this node", op_session_capture_name(body, i));
    }
  }
  int64_t trips = M ? op_xt_int(M, 0) : INT64_MAX, iter = 0;
  bool go = cond ? ((uint8_t *)cond->data)[0] != 0 : true;
  op_xt *carried = op_xcalloc(N + 1, sizeof *carried), *res = op_xcalloc(1 + N + K, sizeof *res);
  OP_VEC(op_xt) *scans = op_xcalloc(K + 1, sizeof *scans);
  op_tensor *bin = op_xcalloc(2 + N, sizeof *bin);
  int64_t iv = 0;
  uint8_t cv = 1;
  int rc = 0;
  for (size_t j = 0; j < N && !rc; j++) { /* the initial values, copied so the loop owns every carried one */
    if (!in[2 + j]) rc = op_kfail(k, err, "loop-carried input %zu is missing", j);
    else if (!(rc = op_xt_alloc(&carried[j], in[2 + j]->dtype, in[2 + j]->dims, in[2 + j]->rank, err)))
      memcpy(carried[j].data, in[2 + j]->data, (size_t)in[2 + j]->numel * op_xt_elem_size(in[2 + j]->dtype));
  }
  while (!rc && go && iter < trips) {
    op_xt itx = {.dtype = T_INT64, .rank = 0, .numel = 1, .data = &iv}, cx = {.dtype = T_BOOL, .rank = 0, .numel = 1, .data = &cv};
    iv = iter, cv = 1;
    op_xt_to_tensor(&bin[0], &itx);
    op_xt_to_tensor(&bin[1], &cx);
    for (size_t j = 0; j < N; j++) op_xt_to_tensor(&bin[2 + j], &carried[j]);
    if ((rc = op_session_run_sub(body, bin, cap, res, 1 + N + K, err))) break;
    if (res[0].dtype != T_BOOL || res[0].numel != 1) {
      rc = op_kfail(k, err, "the body's condition output is not one bool");
      for (size_t j = 0; j < 1 + N + K; j++) op_xt_release(&res[j]);
      break;
    }
    go = ((uint8_t *)res[0].data)[0] != 0;
    op_xt_release(&res[0]);
    for (size_t j = 0; j < N; j++) op_xt_release(&carried[j]), carried[j] = res[1 + j];
    for (size_t j = 0; j < K; j++) OP_VEC_PUSH(scans[j], res[1 + N + j]);
    iter++;
  }
  for (size_t j = 0; j < N; j++) {
    if (rc) op_xt_release(&carried[j]);
    else out[j] = carried[j];
  }
  for (size_t j = 0; j < K; j++) {
    if (!rc) { /* every iteration's value must have the same type and shape */
      const op_xt *f = scans[j].n ? &scans[j].v[0] : NULL;
      int64_t dims[OP_MAX_RANK] = {(int64_t)scans[j].n};
      int rank = f ? f->rank + 1 : 1;
      if (rank > OP_MAX_RANK) rc = ou_unsupported(k, err, "scan output rank over %d", OP_MAX_RANK);
      for (int d = 1; !rc && f && d < rank; d++) dims[d] = f->dims[d - 1];
      for (size_t i = 1; !rc && i < scans[j].n; i++) {
        bool same = scans[j].v[i].dtype == f->dtype && scans[j].v[i].rank == f->rank;
        for (int d = 0; same && d < f->rank; d++) same = scans[j].v[i].dims[d] == f->dims[d];
        if (!same) rc = op_kfail(k, err, "scan output %zu changes type or shape between iterations", j);
      }
      if (!rc && !f) rc = ou_unsupported(k, err, "a scan output of a loop that ran no iteration (type unknown)");
      if (!rc && !(rc = op_xt_alloc(&out[N + j], f->dtype, dims, rank, err))) {
        size_t bytes = (size_t)f->numel * op_xt_elem_size(f->dtype);
        for (size_t i = 0; i < scans[j].n; i++) memcpy((char *)out[N + j].data + i * bytes, scans[j].v[i].data, bytes);
      }
    }
    for (size_t i = 0; i < scans[j].n; i++) op_xt_release(&scans[j].v[i]);
    free(scans[j].v);
  }
  free(scans), free(carried), free(res), free(bin), free(cap);
  return rc;
}
