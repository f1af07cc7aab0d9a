/* ops_einsum.c - Einsum on float32: any equation of explicit or implicit form with ellipses. One
 * operand is transposed, summed or diagonalised element by element; two operands become one batched
 * GEMM (shared kept letters batch, the rest M, N, K), so attention's "bhqd,bhkd->bhqk" runs at BLAS
 * speed; more operands are folded left pairwise. */
#include "exec/ops_util.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define LETTERS 128 /* letters are chars; ellipsis axes get the chars '0'..'7' */

typedef struct term {
  int n;
  char l[OP_MAX_RANK];
} term;

/* Parses one operand's letters (ellipsis expanded to `ell` axes) into t; -1 on a malformed term. */
static int parse_term(const char *s, size_t len, int rank, term *t, int *ell_rank) {
  t->n = 0;
  int letters = 0;
  bool has_ell = false;
  for (size_t i = 0; i < len; i++)
    if (isalpha((unsigned char)s[i])) letters++;
    else if (s[i] == '.') has_ell = true;
    else if (s[i] != ' ') return -1;
  int ell = has_ell ? rank - letters : 0;
  if (ell < 0 || (!has_ell && letters != rank) || rank > OP_MAX_RANK) return -1;
  if (has_ell) *ell_rank = ell > *ell_rank ? ell : *ell_rank;
  for (size_t i = 0; i < len; i++) {
    if (isalpha((unsigned char)s[i])) t->l[t->n++] = s[i];
    else if (s[i] == '.' && i + 2 < len + 0 && s[i + 1] == '.' && s[i + 2] == '.') {
      for (int e = 0; e < ell; e++) t->l[t->n++] = (char)('0' + (8 - ell) + e); /* right-aligned */
      i += 2;
    } else if (s[i] == '.') {
      return -1;
    }
  }
  return t->n == rank ? 0 : -1;
}

static bool has(const term *t, char c) { return memchr(t->l, c, (size_t)t->n) != NULL; }

/* out[tout] = sum of x[tin] over the letters tout lacks; repeated letters of tin take the diagonal.
 * Output axes keep x's own sizes (a size-1 axis broadcasts later, in gather). */
static int einsum1(const op_xt *x, const term *tin, const term *tout, op_xt *out, op_error *err) {
  int64_t dims[OP_MAX_RANK], ost[OP_MAX_RANK];
  for (int i = 0; i < tout->n; i++) {
    const char *p = memchr(tin->l, tout->l[i], (size_t)tin->n);
    if (!p) return op_fail(err, OP_INVALID, "Einsum: output letter '%c' is not in its operand", tout->l[i]);
    dims[i] = x->dims[p - tin->l];
  }
  if (op_xt_alloc(out, T_FLOAT, dims, tout->n, err)) return -1;
  ou_strides(dims, tout->n, ost);
  memset(out->data, 0, (size_t)out->numel * sizeof(float));
  int64_t idx[OP_MAX_RANK] = {0}, val[LETTERS];
  const float *a = x->data;
  float *o = out->data;
  for (int64_t i = 0; i < x->numel; i++) {
    bool diag = true;
    for (int d = 0; d < tin->n; d++) val[(int)tin->l[d]] = -1;
    for (int d = 0; d < tin->n; d++) {
      int64_t *v = &val[(int)tin->l[d]];
      if (*v >= 0 && *v != idx[d]) diag = false;
      *v = idx[d];
    }
    if (diag) {
      int64_t off = 0;
      for (int j = 0; j < tout->n; j++) off += val[(int)tout->l[j]] * ost[j];
      o[off] += a[i];
    }
    for (int d = tin->n - 1; d >= 0; d--) {
      if (++idx[d] < x->dims[d]) break;
      idx[d] = 0;
    }
  }
  return 0;
}

/* The unique letters of t, in order, that satisfy keep(c). */
static void pick(const term *t, term *dst, bool (*keep)(char, const void *), const void *ctx) {
  for (int i = 0; i < t->n; i++)
    if (!has(dst, t->l[i]) && keep(t->l[i], ctx)) dst->l[dst->n++] = t->l[i];
}
static bool always(char c, const void *ctx) { return (void)c, (void)ctx, true; }

/* x (term t) copied into the letter order `order`, broadcasting size-1 axes to dimof. */
static float *gather(const op_xt *x, const term *t, const term *order, const int64_t *dimof) {
  int64_t st[OP_MAX_RANK], ost[OP_MAX_RANK], n = 1;
  ou_strides(x->dims, x->rank, st);
  for (int i = 0; i < order->n; i++) {
    const char *p = memchr(t->l, order->l[i], (size_t)t->n);
    int d = (int)(p - t->l);
    ost[i] = x->dims[d] == 1 ? 0 : st[d];
    n *= dimof[(int)order->l[i]];
  }
  float *dst = op_xmalloc((size_t)(n ? n : 1) * sizeof(float));
  int64_t idx[OP_MAX_RANK] = {0};
  const float *a = x->data;
  for (int64_t i = 0; i < n; i++) {
    int64_t off = 0;
    for (int d = 0; d < order->n; d++) off += idx[d] * ost[d];
    dst[i] = a[off];
    for (int d = order->n - 1; d >= 0; d--) {
      if (++idx[d] < dimof[(int)order->l[d]]) break;
      idx[d] = 0;
    }
  }
  return dst;
}

typedef struct keepset {
  const term *keep; /* letters needed after this step */
  const term *other;
} keepset;
static bool in_keep(char c, const void *ctx) { return has(((const keepset *)ctx)->keep, c); }
static bool in_other(char c, const void *ctx) { return has(((const keepset *)ctx)->other, c); }
static bool alone_needed(char c, const void *ctx) { return in_keep(c, ctx) || in_other(c, ctx); }

/* a (ta) x b (tb) -> out with letters `keep` order as produced (batch, M, N). */
static int contract(op_xt *a, const term *ta, op_xt *b, const term *tb, const term *keep, const int64_t *dimof,
                    op_xt *out, term *tout, op_error *err) {
  op_xt ra = {0}, rb = {0};
  term ua = {0}, ub = {0};
  keepset ka = {keep, tb}, kb = {keep, ta};
  /* sum away what only one side has and nobody needs, and take diagonals */
  pick(ta, &ua, alone_needed, &ka);
  pick(tb, &ub, alone_needed, &kb);
  if (einsum1(a, ta, &ua, &ra, err) || einsum1(b, tb, &ub, &rb, err)) {
    op_xt_release(&ra);
    op_xt_release(&rb);
    return -1;
  }
  term batch = {0}, M = {0}, N = {0}, K = {0};
  for (int i = 0; i < ua.n; i++) {
    char c = ua.l[i];
    bool inb = has(&ub, c), kept = has(keep, c);
    term *dst = inb ? (kept ? &batch : &K) : &M;
    dst->l[dst->n++] = c;
  }
  for (int i = 0; i < ub.n; i++)
    if (!has(&ua, ub.l[i])) N.l[N.n++] = ub.l[i];
  int64_t nb = 1, nm = 1, nn = 1, nk = 1;
  for (int i = 0; i < batch.n; i++) nb *= dimof[(int)batch.l[i]];
  for (int i = 0; i < M.n; i++) nm *= dimof[(int)M.l[i]];
  for (int i = 0; i < N.n; i++) nn *= dimof[(int)N.l[i]];
  for (int i = 0; i < K.n; i++) nk *= dimof[(int)K.l[i]];
  term oa = batch, ob = batch;
  memcpy(oa.l + oa.n, M.l, (size_t)M.n), oa.n += M.n;
  memcpy(oa.l + oa.n, K.l, (size_t)K.n), oa.n += K.n;
  memcpy(ob.l + ob.n, K.l, (size_t)K.n), ob.n += K.n;
  memcpy(ob.l + ob.n, N.l, (size_t)N.n), ob.n += N.n;
  *tout = batch;
  memcpy(tout->l + tout->n, M.l, (size_t)M.n), tout->n += M.n;
  memcpy(tout->l + tout->n, N.l, (size_t)N.n), tout->n += N.n;
  int rc = -1;
  if (tout->n > OP_MAX_RANK || oa.n > OP_MAX_RANK || ob.n > OP_MAX_RANK) {
    op_fail(err, OP_UNSUPPORTED, "Einsum: intermediate rank over %d", OP_MAX_RANK);
  } else {
    float *A = gather(&ra, &ua, &oa, dimof), *B = gather(&rb, &ub, &ob, dimof);
    int64_t dims[OP_MAX_RANK];
    for (int i = 0; i < tout->n; i++) dims[i] = dimof[(int)tout->l[i]];
    if (!op_xt_alloc(out, T_FLOAT, dims, tout->n, err)) {
      float *C = out->data;
      if (nk == 0) memset(C, 0, (size_t)out->numel * sizeof(float));
      else
        for (int64_t q = 0; q < nb; q++)
          op_sgemm(false, false, nm, nn, nk, 1.f, A + q * nm * nk, nk, B + q * nk * nn, nn, 0.f, C + q * nm * nn, nn);
      rc = 0;
    }
    free(A);
    free(B);
  }
  op_xt_release(&ra);
  op_xt_release(&rb);
  return rc;
}

OP_KERNEL(op_k_einsum) {
  (void)n_out;
  Onnx__AttributeProto *eqa = op_node_attr(k->node, "equation");
  if (!eqa || !eqa->s.len) return op_kfail(k, err, "equation is missing");
  const char *eq = (const char *)eqa->s.data;
  size_t len = eqa->s.len;
  for (size_t i = 0; i < n_in; i++)
    if (ou_want(k, in[i], "input", true, false, false, err)) return -1;
  const char *arrow = NULL;
  for (size_t i = 0; i + 1 < len; i++)
    if (eq[i] == '-' && eq[i + 1] == '>') arrow = eq + i;
  size_t lhs = arrow ? (size_t)(arrow - eq) : len;
  term *t = op_xcalloc(n_in, sizeof *t), out_t = {0};
  int ell = 0, rc = -1;
  size_t start = 0, idx = 0;
  int64_t dimof[LETTERS];
  int counts[LETTERS] = {0};
  for (int c = 0; c < LETTERS; c++) dimof[c] = -1;
  op_xt cur = {0};
  term cur_t;
  for (size_t i = 0; i <= lhs; i++) {
    if (i < lhs && eq[i] != ',') continue;
    if (idx >= n_in || parse_term(eq + start, i - start, in[idx]->rank, &t[idx], &ell)) {
      rc = op_kfail(k, err, "equation '%.*s' does not match the %zu inputs' ranks", (int)len, eq, n_in);
      goto done;
    }
    for (int d = 0; d < t[idx].n; d++) {
      int c = (int)t[idx].l[d];
      int64_t dim = in[idx]->dims[d];
      counts[c]++;
      if (dimof[c] < 0 || dimof[c] == 1) dimof[c] = dim;
      else if (dim != 1 && dim != dimof[c]) {
        rc = op_kfail(k, err, "letter '%c' has sizes %lld and %lld", c, (long long)dimof[c], (long long)dim);
        goto done;
      }
    }
    idx++;
    start = i + 1;
  }
  if (idx != n_in) {
    rc = op_kfail(k, err, "equation names %zu operands for %zu inputs", idx, n_in);
    goto done;
  }
  if (arrow) {
    int dummy = 0;
    const char *r = arrow + 2;
    size_t rl = len - lhs - 2, letters = 0;
    bool e = false;
    for (size_t i = 0; i < rl; i++) letters += isalpha((unsigned char)r[i]) != 0, e |= r[i] == '.';
    if (parse_term(r, rl, (int)letters + (e ? ell : 0), &out_t, &dummy)) {
      rc = op_kfail(k, err, "malformed output term");
      goto done;
    }
    for (int i = 0; i < out_t.n; i++)
      if (dimof[(int)out_t.l[i]] < 0) {
        rc = op_kfail(k, err, "output letter '%c' is in no input", out_t.l[i]);
        goto done;
      }
  } else { /* implicit: ellipsis axes, then letters seen once, alphabetically */
    for (int e = 0; e < ell; e++) out_t.l[out_t.n++] = (char)('0' + 8 - ell + e);
    for (int c = 'A'; c <= 'z'; c++)
      if (isalpha(c) && counts[c] == 1) {
        if (out_t.n >= OP_MAX_RANK) {
          rc = ou_unsupported(k, err, "output rank over %d", OP_MAX_RANK);
          goto done;
        }
        out_t.l[out_t.n++] = (char)c;
      }
  }
  /* fold left: each step keeps the letters the output or a later operand still needs */
  cur_t = t[0];
  if (n_in == 1) {
    rc = einsum1(in[0], &t[0], &out_t, out, err);
    goto done;
  }
  for (size_t i = 1; i < n_in; i++) {
    term keep = out_t;
    for (size_t j = i + 1; j < n_in; j++) pick(&t[j], &keep, always, NULL);
    op_xt next = {0};
    term next_t;
    rc = contract(i == 1 ? in[0] : &cur, &cur_t, in[i], &t[i], &keep, dimof, &next, &next_t, err);
    op_xt_release(&cur);
    if (rc) goto done;
    cur = next, cur_t = next_t;
  }
  rc = einsum1(&cur, &cur_t, &out_t, out, err); /* the final axis order */
  op_xt_release(&cur);
done:
  if (rc && err->message[0] && !strstr(err->message, "node '")) {
    char why[sizeof err->message];
    snprintf(why, sizeof why, "%s", err->message);
    op_kfail(k, err, "%s", why);
  }
  free(t);
  return rc;
}
