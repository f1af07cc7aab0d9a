/* verify.c - runs a reference and a candidate model on the same samples, batch by batch, and keeps
 * running figures per output (memory does not grow with the number of samples): max abs diff, mean
 * per-sample cosine similarity, top-1 agreement for logits-like outputs, task accuracy of both
 * when the data has labels. */
#include "data/data.h"
#include "exec/exec.h"
#include "verify/progress.h"
#include "verify/stream.h"
#include "report/json.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct vout {
  char *name;
  double max_abs, cos_sum;
  int64_t n;
  bool logits; /* [samples, classes] float */
  int64_t agree, ref_correct, cand_correct;
  int64_t elements, mismatches; /* elements outside atol + rtol * |reference| */
  /* language model: [samples, seq, vocab] logits scored against next-token labels [samples, seq] */
  bool lm;
  double ref_nll, cand_nll; /* summed over the scored tokens */
  int64_t tokens, ref_tok_correct, cand_tok_correct;
} vout;

struct op_verify_report {
  char *reference, *candidate;
  int64_t samples;
  int64_t sets; /* ONNX test data: the number of sets compared (each one complete run), else 0 */
  bool has_labels;
  int label_output; /* the output scored against labels, or -1 */
  int lm_output;    /* the output scored as a language model against next-token labels, or -1 */
  double atol, rtol;
  int64_t ignore_index; /* label value of tokens not scored (language models) */
  OP_VEC(vout) outs;
};

void op_verify_report_free(op_verify_report *r) {
  if (!r) return;
  for (size_t i = 0; i < r->outs.n; i++) free(r->outs.v[i].name);
  free(r->outs.v);
  free(r->reference);
  free(r->candidate);
  free(r);
}

/* Element i of an output or label array of any numeric type. */
static double as_double(const op_tensor *t, int64_t i) {
  switch (t->dtype) {
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT: return ((const float *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE: return ((const double *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16: return op_f16_to_f32(((const uint16_t *)t->data)[i]);
    case ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16: return op_bf16_to_f32(((const uint16_t *)t->data)[i]);
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT64: return (double)((const int64_t *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT64: return (double)((const uint64_t *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT32: return ((const int32_t *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT32: return ((const uint32_t *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT16: return ((const int16_t *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__UINT16: return ((const uint16_t *)t->data)[i];
    case ONNX__TENSOR_PROTO__DATA_TYPE__INT8: return ((const int8_t *)t->data)[i];
    default: return ((const uint8_t *)t->data)[i]; /* uint8, bool */
  }
}

/* The first index of the largest of n elements from `first`. */
static int64_t argmax(const op_tensor *t, int64_t first, int64_t n) {
  int64_t best = 0;
  double top = as_double(t, first);
  for (int64_t j = 1; j < n; j++) {
    double v = as_double(t, first + j);
    if (v > top) top = v, best = j;
  }
  return best;
}

/* log(sum(exp(x))) - x[y] and whether x[y] is the (first) largest, over n logits from `at`. */
static double token_nll(const op_tensor *t, int64_t at, int64_t n, int64_t y, bool *top) {
  double mx = -INFINITY;
  int64_t best = 0;
  for (int64_t j = 0; j < n; j++) {
    double x = as_double(t, at + j);
    if (x > mx) mx = x, best = j;
  }
  double sum = 0;
  for (int64_t j = 0; j < n; j++) sum += exp(as_double(t, at + j) - mx);
  *top = best == y;
  return mx + log(sum) - as_double(t, at + y);
}

/* Language-model figures of one batch: logits [count, seq, vocab] against labels [rows, seq] read at each
 * sample's file row; tokens labelled with the ignore index are skipped, any other label must be a token. */
static int score_lm(vout *v, const op_tensor *a, const op_tensor *b, const op_tensor *labels, const op_dataset *d,
                    int64_t first, const op_verify_report *r, op_error *err) {
  int64_t rows = a->dims[0], seq = a->dims[1], vocab = a->dims[2];
  for (int64_t i = 0; i < rows; i++) {
    int64_t row = op_dataset_row(d, first + i);
    for (int64_t t = 0; t < seq; t++) {
      int64_t y = (int64_t)as_double(labels, row * seq + t);
      if (y == r->ignore_index) continue;
      if (y < 0 || y >= vocab)
        return op_fail(err, OP_ARG,
                       "labels: %lld at row %lld, position %lld is not a token of output '%s' (vocabulary %lld) nor the "
                       "ignore index %lld",
                       (long long)y, (long long)row, (long long)t, v->name, (long long)vocab, (long long)r->ignore_index);
      bool ta, tb;
      int64_t at = (i * seq + t) * vocab;
      v->ref_nll += token_nll(a, at, vocab, y, &ta);
      v->cand_nll += token_nll(b, at, vocab, y, &tb);
      v->ref_tok_correct += ta;
      v->cand_tok_correct += tb;
      v->tokens++;
    }
  }
  return 0;
}

/* Folds one batch of one output into its figures: one sample per entry along the output's batch axis
 * (the whole tensor is one sample when it has none, e.g. a test data set's output of unknown layout). */
static int compare(vout *v, const op_tensor *a, const op_tensor *b, const op_tensor *labels, const op_dataset *d,
                   int64_t first, bool score, int axis, const op_verify_report *r, op_error *err) {
  /* outputs of two float types (a float16 export against its float32 original) compare as doubles */
  bool same = (a->dtype == b->dtype || (op_dtype_is_float(a->dtype) && op_dtype_is_float(b->dtype))) &&
              a->rank == b->rank && a->rank >= 1;
  for (int i = 0; same && i < a->rank; i++) same = a->dims[i] == b->dims[i];
  if (!same) return op_fail(err, OP_ARG, "output '%s': reference and candidate differ in type or shape", v->name);
  if (axis >= a->rank) axis = OP_AXIS_NONE;
  int64_t numel = (int64_t)(a->nbytes / op_dtype_size(a->dtype)), rows = axis >= 0 ? a->dims[axis] : 1, outer = 1;
  for (int i = 0; i < axis; i++) outer *= a->dims[i];
  int64_t inner = rows && outer ? numel / (rows * outer) : 0;
  v->logits = op_dtype_is_float(a->dtype) && a->rank == 2 && axis == 0 && a->dims[1] > 1;
  for (int64_t r0 = 0; r0 < rows; r0++) {
    double dot = 0, na = 0, nb = 0;
    for (int64_t o = 0; o < outer; o++)
      for (int64_t j = 0; j < inner; j++) {
        int64_t k = (o * rows + r0) * inner + j;
        double x = as_double(a, k), y = as_double(b, k), d = fabs(x - y);
        if (d > v->max_abs || isnan(d)) v->max_abs = isnan(d) ? INFINITY : d;
        if (!(d <= r->atol + r->rtol * fabs(x))) v->mismatches++;
        dot += x * y, na += x * x, nb += y * y;
      }
    v->cos_sum += na == 0 && nb == 0 ? 1.0 : (na == 0 || nb == 0) ? 0.0 : dot / sqrt(na * nb);
    if (v->logits) {
      int64_t pa = argmax(a, r0 * inner, inner), pb = argmax(b, r0 * inner, inner);
      v->agree += pa == pb;
      if (score && labels) {
        int64_t y = (int64_t)as_double(labels, op_dataset_row(d, first + r0));
        v->ref_correct += pa == y;
        v->cand_correct += pb == y;
      }
    }
  }
  v->n += rows;
  v->elements += numel;
  return 0;
}

op_verify_report *op_verify(const op_model *ref, const op_model *cand, const op_dataset *d, const op_run_options *o,
                            op_error *err) {
  op_session *sa = op_session_new(ref, err), *sb = sa ? op_session_new(cand, err) : NULL;
  if (!sb) {
    op_session_free(sa);
    return NULL;
  }
  op_verify_report *r = op_xcalloc(1, sizeof *r);
  r->reference = op_xstrdup(ref->path);
  r->candidate = op_xstrdup(cand->path);
  r->label_output = -1;
  r->lm_output = -1;
  r->atol = o ? o->atol : 0;
  r->rtol = o ? o->rtol : 0;
  r->ignore_index = o && o->ignore_index_set ? o->ignore_index : -100;
  size_t na_in = op_session_input_count(sa), nb_in = op_session_input_count(sb), n_out = op_session_output_count(sa);
  int64_t first, first_b;
  int64_t total = op_sample_window(d, sa, o ? o->first : 0, o ? o->samples : 0, &first, err);
  int64_t total_b = total >= 0 ? op_sample_window(d, sb, o ? o->first : 0, o ? o->samples : 0, &first_b, err) : -1;
  bool ok = total >= 0 && total_b >= 0;
  if (ok && n_out != op_session_output_count(sb)) {
    op_fail(err, OP_ARG, "%s and %s have different numbers of outputs", ref->path, cand->path);
    ok = false;
  }
  for (size_t i = 0; ok && i < n_out; i++) {
    if (strcmp(op_session_output_name(sa, i), op_session_output_name(sb, i)) != 0) {
      op_fail(err, OP_ARG, "output %zu is '%s' in %s but '%s' in %s", i, op_session_output_name(sa, i), ref->path,
              op_session_output_name(sb, i), cand->path);
      ok = false;
    }
    vout v = {.name = op_xstrdup(op_session_output_name(sa, i))};
    OP_VEC_PUSH(r->outs, v);
  }
  if (!ok) {
    op_session_free(sa);
    op_session_free(sb);
    op_verify_report_free(r);
    return NULL;
  }
  int *in_axes = op_xcalloc(na_in ? na_in : 1, sizeof *in_axes), *out_axes = op_xcalloc(n_out ? n_out : 1, sizeof *out_axes);
  if (op_dataset_axes(d, sa, in_axes, out_axes, err)) {
    free(in_axes), free(out_axes);
    op_session_free(sa);
    op_session_free(sb);
    op_verify_report_free(r);
    return NULL;
  }
  r->sets = (int64_t)op_dataset_set_count(d) ? total : 0;
  const op_tensor *labels = op_dataset_array(d, "labels");
  /* classes: one label per row; language model: one per row and position ([rows, seq]) */
  r->has_labels = labels && labels->rank >= 1;
  for (int64_t k = 0; r->has_labels && k < total; k++) {
    int64_t row = op_dataset_row(d, first + k);
    r->has_labels = row >= 0 && row < labels->dims[0];
  }
  bool class_labels = r->has_labels && (int64_t)(labels->nbytes / op_dtype_size(labels->dtype)) == labels->dims[0];
  bool token_labels = r->has_labels && labels->rank == 2;
  int64_t batch = o && o->batch > 0 && !r->sets ? o->batch : 1; /* a test data set is one complete run */
  op_tensor *ia = op_xcalloc(na_in ? na_in : 1, sizeof *ia), *ib = op_xcalloc(nb_in ? nb_in : 1, sizeof *ib);
  op_tensor *oa = op_xcalloc(n_out, sizeof *oa), *ob = op_xcalloc(n_out, sizeof *ob);
  op_progress bar;
  op_progress_begin(&bar, o && o->progress, total, "verify");
  int rc = 0;
  for (int64_t start = 0; start < total && !rc; start += batch) {
    int64_t count = total - start < batch ? total - start : batch;
    rc = op_dataset_batch(d, sa, first + start, count, ia, err);
    if (!rc) rc = op_dataset_batch(d, sb, first + start, count, ib, err);
    if (!rc) rc = op_session_run(sa, ia, oa, NULL, NULL, err);
    if (!rc) rc = op_session_run(sb, ib, ob, NULL, NULL, err);
    for (size_t i = 0; i < n_out && !rc; i++) {
      vout *v = &r->outs.v[i];
      if (!r->sets && count > 1 && out_axes[i] < 0) {
        rc = op_fail(err, OP_ARG,
                     "%s: output '%s': cannot tell its batch axis (none of its dimensions is named like the inputs' batch), "
                     "so its samples cannot be compared one by one; give --batch-axis N, or --batch 1",
                     ref->path, v->name);
        break;
      }
      bool logits = op_dtype_is_float(oa[i].dtype) && oa[i].rank == 2 && out_axes[i] == 0 && oa[i].dims[1] > 1;
      if (r->label_output < 0 && logits && class_labels) r->label_output = (int)i;
      rc = compare(v, &oa[i], &ob[i], class_labels ? labels : NULL, d, first + start, (int)i == r->label_output,
                   r->sets ? out_axes[i] : out_axes[i] >= 0 ? out_axes[i] : OP_AXIS_NONE, r, err);
      /* [samples, seq, vocab] logits against [rows, seq] next-token labels: perplexity, next-token accuracy */
      bool lm = token_labels && !r->sets && op_dtype_is_float(oa[i].dtype) && oa[i].rank == 3 && out_axes[i] == 0 &&
                oa[i].dims[2] > 1 && oa[i].dims[1] == labels->dims[1];
      if (!rc && lm && (r->lm_output < 0 || r->lm_output == (int)i)) {
        r->lm_output = (int)i;
        v->lm = true;
        rc = score_lm(v, &oa[i], &ob[i], labels, d, first + start, r, err);
      }
    }
    for (size_t i = 0; i < na_in; i++) op_tensor_clear(&ia[i]);
    for (size_t i = 0; i < nb_in; i++) op_tensor_clear(&ib[i]);
    for (size_t i = 0; i < n_out; i++) op_tensor_clear(&oa[i]), op_tensor_clear(&ob[i]);
    op_progress_update(&bar, start + count);
  }
  op_progress_end(&bar);
  r->samples = r->sets && n_out ? r->outs.v[0].n : total; /* with sets: the samples their batch axes hold */
  free(ia), free(ib), free(oa), free(ob), free(in_axes), free(out_axes);
  op_session_free(sa);
  op_session_free(sb);
  if (rc) {
    op_verify_report_free(r);
    return NULL;
  }
  return r;
}

size_t op_verify_output_count(const op_verify_report *r) { return r->outs.n; }
const char *op_verify_output_name(const op_verify_report *r, size_t i) { return r->outs.v[i].name; }
int64_t op_verify_output_elements(const op_verify_report *r, size_t i) { return r->outs.v[i].elements; }
int64_t op_verify_output_mismatches(const op_verify_report *r, size_t i) { return r->outs.v[i].mismatches; }

double op_verify_min_cosine(const op_verify_report *r) {
  double m = 1;
  for (size_t i = 0; i < r->outs.n; i++)
    if (r->outs.v[i].n) m = fmin(m, r->outs.v[i].cos_sum / (double)r->outs.v[i].n);
  return m;
}

double op_verify_candidate_accuracy(const op_verify_report *r) {
  if (r->label_output < 0) return -1;
  const vout *v = &r->outs.v[r->label_output];
  return v->n ? (double)v->cand_correct / (double)v->n : -1;
}

double op_verify_min_agreement(const op_verify_report *r) {
  double m = 1;
  for (size_t i = 0; i < r->outs.n; i++)
    if (r->outs.v[i].logits && r->outs.v[i].n) m = fmin(m, (double)r->outs.v[i].agree / (double)r->outs.v[i].n);
  return m;
}

char *op_verify_report_text(const op_verify_report *r) {
  /* sized from the names it prints: output names and paths have no length limit */
  size_t cap = 1024 + strlen(r->reference) + strlen(r->candidate), off = 0;
  for (size_t i = 0; i < r->outs.n; i++) cap += 768 + strlen(r->outs.v[i].name);
  char *s = op_xmalloc(cap);
  off += (size_t)snprintf(s + off, cap - off, "reference: %s\ncandidate: %s\nsamples:   %lld\n", r->reference, r->candidate,
                          (long long)r->samples);
  if (r->sets) off += (size_t)snprintf(s + off, cap - off, "sets:      %lld (ONNX test data, compared set by set)\n", (long long)r->sets);
  off += (size_t)snprintf(s + off, cap - off, "%-24s %14s %12s %15s  %s\n", "output", "max_abs_diff", "mean_cosine",
                          "top1_agreement", r->label_output >= 0 ? "accuracy (reference -> candidate)" : "");
  for (size_t i = 0; i < r->outs.n; i++) {
    const vout *v = &r->outs.v[i];
    double n = v->n ? (double)v->n : 1;
    char agree[32] = "-", acc[64] = "";
    if (v->logits) snprintf(agree, sizeof agree, "%.2f%%", 100.0 * (double)v->agree / n);
    if ((int)i == r->label_output)
      snprintf(acc, sizeof acc, "%.2f%% -> %.2f%%", 100.0 * (double)v->ref_correct / n, 100.0 * (double)v->cand_correct / n);
    off += (size_t)snprintf(s + off, cap - off, "%-24s %14.6g %12.6f %15s  %s\n", v->name, v->max_abs, v->cos_sum / n,
                            agree, acc);
  }
  if (r->lm_output >= 0) { /* language model: perplexity and next-token accuracy */
    const vout *v = &r->outs.v[r->lm_output];
    double t = v->tokens ? (double)v->tokens : 1;
    off += (size_t)snprintf(s + off, cap - off,
                            "language model (%s against next-token labels, ignore index %lld): %lld tokens\n"
                            "  perplexity:          %.4f -> %.4f (%+.2f%%)\n"
                            "  next-token accuracy: %.2f%% -> %.2f%%\n",
                            v->name, (long long)r->ignore_index, (long long)v->tokens, exp(v->ref_nll / t),
                            exp(v->cand_nll / t), 100.0 * (exp((v->cand_nll - v->ref_nll) / t) - 1),
                            100.0 * (double)v->ref_tok_correct / t, 100.0 * (double)v->cand_tok_correct / t);
  }
  return s;
}

double op_verify_perplexity(const op_verify_report *r, bool candidate) {
  if (r->lm_output < 0 || !r->outs.v[r->lm_output].tokens) return -1;
  const vout *v = &r->outs.v[r->lm_output];
  return exp((candidate ? v->cand_nll : v->ref_nll) / (double)v->tokens);
}

double op_verify_reference_accuracy(const op_verify_report *r) {
  if (r->label_output < 0) return -1;
  const vout *v = &r->outs.v[r->label_output];
  return v->n ? (double)v->ref_correct / (double)v->n : -1;
}

char *op_verify_report_json(const op_verify_report *r) {
  cJSON *root = cJSON_CreateObject();
  cJSON_AddStringToObject(root, "reference", r->reference);
  cJSON_AddStringToObject(root, "candidate", r->candidate);
  cJSON_AddNumberToObject(root, "samples", (double)r->samples);
  cJSON_AddNumberToObject(root, "atol", r->atol);
  cJSON_AddNumberToObject(root, "rtol", r->rtol);
  if (r->sets) cJSON_AddNumberToObject(root, "sets", (double)r->sets);
  cJSON *outs = cJSON_AddArrayToObject(root, "outputs");
  for (size_t i = 0; i < r->outs.n; i++) {
    const vout *v = &r->outs.v[i];
    double n = v->n ? (double)v->n : 1;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "name", v->name);
    cJSON_AddNumberToObject(o, "max_abs_diff", isinf(v->max_abs) ? 1e308 : v->max_abs);
    cJSON_AddNumberToObject(o, "mean_cosine", v->cos_sum / n);
    if (v->logits) cJSON_AddNumberToObject(o, "top1_agreement", (double)v->agree / n);
    else cJSON_AddNullToObject(o, "top1_agreement");
    if ((int)i == r->label_output) {
      cJSON_AddNumberToObject(o, "reference_accuracy", (double)v->ref_correct / n);
      cJSON_AddNumberToObject(o, "candidate_accuracy", (double)v->cand_correct / n);
    }
    if (v->lm) {
      double t = v->tokens ? (double)v->tokens : 1;
      cJSON_AddNumberToObject(o, "tokens", (double)v->tokens);
      cJSON_AddNumberToObject(o, "ignore_index", (double)r->ignore_index);
      cJSON_AddNumberToObject(o, "reference_perplexity", exp(v->ref_nll / t));
      cJSON_AddNumberToObject(o, "candidate_perplexity", exp(v->cand_nll / t));
      cJSON_AddNumberToObject(o, "reference_next_token_accuracy", (double)v->ref_tok_correct / t);
      cJSON_AddNumberToObject(o, "candidate_next_token_accuracy", (double)v->cand_tok_correct / t);
    }
    cJSON_AddNumberToObject(o, "elements", (double)v->elements);
    cJSON_AddNumberToObject(o, "outside_tolerance", (double)v->mismatches); /* |c - r| > atol + rtol |r| */
    cJSON_AddItemToArray(outs, o);
  }
  return op_json_finish(root);
}
