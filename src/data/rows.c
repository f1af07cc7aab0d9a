/* rows.c - which rows of a data file a command's samples are: in file order, spread over the whole
 * file (a seeded bit-reversal order: every prefix of it is spread too, so calibration rows taken first
 * and evaluation rows taken after them are both spread and never the same), or seeded random; rows
 * held out are skipped. Also the record of the rows a step used, for reports. */
#include "data/data.h"

#include <cjson/cJSON.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const ORDER_NAMES[] = {
#define OP_ORDER_NAME(name, text, help) text,
    OP_SAMPLE_ORDERS(OP_ORDER_NAME)
#undef OP_ORDER_NAME
};

const char *op_sample_order_name(op_sample_order o) { return ORDER_NAMES[o]; }

const char *op_sample_order_rule(op_sample_order o) {
  static const char *const rules[] = {
#define OP_ORDER_HELP(name, text, help) help,
      OP_SAMPLE_ORDERS(OP_ORDER_HELP)
#undef OP_ORDER_HELP
  };
  return rules[o];
}

int op_sample_order_parse(const char *s, op_sample_order *out) {
  for (size_t i = 0; i < sizeof ORDER_NAMES / sizeof *ORDER_NAMES; i++)
    if (strcmp(s, ORDER_NAMES[i]) == 0) {
      *out = (op_sample_order)i;
      return 0;
    }
  return -1;
}

/* splitmix64: the seeded stream of both the spread's digital shift and the random order */
static uint64_t mix(uint64_t *state) {
  uint64_t x = (*state += 0x9e3779b97f4a7c15ull);
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

static uint64_t bit_reverse(uint64_t v, int bits) {
  uint64_t r = 0;
  for (int b = 0; b < bits; b++) r |= ((v >> b) & 1u) << (bits - 1 - b);
  return r;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

int64_t *op_rows_sequence(int64_t total, op_sample_order order, uint64_t seed, const int64_t *held_out, size_t n_held,
                          int64_t *n_out) {
  int64_t *seq = op_xmalloc((size_t)(total > 0 ? total : 1) * sizeof *seq), n = 0;
  if (order == OP_ORDER_SPREAD) {
    /* van der Corput over the next power of two, digitally shifted by the seed (an XOR of the
     * reversed index keeps every prefix stratified); positions past the file are skipped */
    int bits = 0;
    while (((int64_t)1 << bits) < total) bits++;
    uint64_t state = seed, shift = bits ? mix(&state) & (((uint64_t)1 << bits) - 1) : 0;
    for (uint64_t i = 0; i < ((uint64_t)1 << bits) || (bits == 0 && i < (uint64_t)total); i++) {
      uint64_t r = bits ? bit_reverse(i, bits) ^ shift : i;
      if (r < (uint64_t)total) seq[n++] = (int64_t)r;
    }
  } else {
    for (int64_t i = 0; i < total; i++) seq[n++] = i;
    if (order == OP_ORDER_RANDOM) { /* Fisher-Yates */
      uint64_t state = seed;
      for (int64_t i = total - 1; i > 0; i--) {
        int64_t j = (int64_t)(mix(&state) % (uint64_t)(i + 1)), t = seq[i];
        seq[i] = seq[j];
        seq[j] = t;
      }
    }
  }
  if (n_held) { /* held-out rows are never samples */
    int64_t *h = op_xmalloc(n_held * sizeof *h), k = 0;
    memcpy(h, held_out, n_held * sizeof *h);
    qsort(h, n_held, sizeof *h, cmp_i64);
    for (int64_t i = 0; i < n; i++)
      if (!bsearch(&seq[i], h, n_held, sizeof *h, cmp_i64)) seq[k++] = seq[i];
    n = k;
    free(h);
  }
  *n_out = n;
  return seq;
}

void op_row_set_capture(op_row_set *rs, const op_dataset *d, int64_t first, int64_t count) {
  free(rs->rows);
  memset(rs, 0, sizeof *rs);
  rs->order = op_dataset_order(d, &rs->seed);
  rs->file_rows = op_dataset_file_rows(d);
  rs->held_out = op_dataset_held_out_count(d);
  rs->first = first;
  rs->rows = op_xmalloc((size_t)(count > 0 ? count : 1) * sizeof *rs->rows);
  for (int64_t k = 0; k < count; k++) {
    int64_t row = op_dataset_row(d, first + k);
    if (row < 0 || (rs->file_rows >= 0 && row >= rs->file_rows)) break; /* past the samples */
    rs->rows[rs->n++] = row;
  }
}

void op_row_set_free(op_row_set *rs) {
  if (!rs) return;
  free(rs->rows);
  memset(rs, 0, sizeof *rs);
}

char *op_row_set_rule(const op_row_set *rs) {
  size_t cap = 256;
  char *s = op_xmalloc(cap);
  int w = snprintf(s, cap, "%lld of %lld rows, %s", (long long)rs->n, (long long)rs->file_rows,
                   op_sample_order_rule(rs->order));
  if (rs->order != OP_ORDER_FIRST && w > 0 && (size_t)w < cap)
    w += snprintf(s + w, cap - (size_t)w, " (seed %llu)", (unsigned long long)rs->seed);
  if (rs->first && w > 0 && (size_t)w < cap)
    w += snprintf(s + w, cap - (size_t)w, ", after the first %lld of that order", (long long)rs->first);
  if (rs->held_out && w > 0 && (size_t)w < cap)
    snprintf(s + w, cap - (size_t)w, ", %lld rows held out", (long long)rs->held_out);
  return s;
}

cJSON *op_row_set_json(const op_row_set *rs) {
  cJSON *o = cJSON_CreateObject();
  char *rule = op_row_set_rule(rs);
  cJSON_AddNumberToObject(o, "count", (double)rs->n);
  cJSON_AddStringToObject(o, "order", op_sample_order_name(rs->order));
  cJSON_AddNumberToObject(o, "seed", (double)rs->seed);
  cJSON_AddNumberToObject(o, "file_rows", (double)rs->file_rows);
  cJSON_AddStringToObject(o, "rule", rule);
  cJSON *a = cJSON_AddArrayToObject(o, "rows");
  for (size_t i = 0; i < rs->n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber((double)rs->rows[i]));
  free(rule);
  return o;
}

char *op_row_set_list(const op_row_set *rs) {
  size_t cap = 16 + rs->n * 21, off = 0;
  char *s = op_xmalloc(cap);
  s[0] = 0;
  for (size_t i = 0; i < rs->n; i++) off += (size_t)snprintf(s + off, cap - off, "%s%lld", i ? "," : "", (long long)rs->rows[i]);
  return s;
}

/* Every row set of a report ({"rule": ..., "rows": [...]} at any depth) is held out of d. */
static size_t hold_out_sets(op_dataset *d, const cJSON *v) {
  size_t n = 0;
  const cJSON *rows = cJSON_IsObject(v) ? cJSON_GetObjectItemCaseSensitive(v, "rows") : NULL;
  if (cJSON_IsArray(rows) && cJSON_GetObjectItemCaseSensitive(v, "rule")) {
    const cJSON *x;
    cJSON_ArrayForEach(x, rows) {
      if (!cJSON_IsNumber(x) || x->valuedouble < 0) continue;
      int64_t r = (int64_t)x->valuedouble;
      op_dataset_hold_out(d, &r, 1);
      n++;
    }
    return n;
  }
  const cJSON *c;
  cJSON_ArrayForEach(c, v) n += hold_out_sets(d, c);
  return n;
}

int op_dataset_hold_out_report(op_dataset *d, const char *path, op_error *err) {
  char *text = op_read_file(path, NULL, err);
  if (!text) return -1;
  cJSON *root = cJSON_Parse(text);
  op_read_file_free(text);
  if (!root) return op_fail(err, OP_ARG, "%s: not valid JSON", path);
  size_t n = hold_out_sets(d, root);
  cJSON_Delete(root);
  if (!n) return op_fail(err, OP_ARG, "%s: lists no calibration or evaluation rows (a report of prune, quantize or compress run with --data)", path);
  return 0;
}
