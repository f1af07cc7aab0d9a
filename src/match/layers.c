/* layers.c - groups residual blocks into layers (self-attention, cross-attention, FFN: one decoder
 * layer) and numbers them per stack, so that configs and the CLI address encoder.N and decoder.N;
 * and the layer references those name. */
#include "match/match.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const op_attn *block_attn(const op_analysis *a, int b) {
  return b >= 0 && a->blocks.v[b].kind == OP_BLOCK_ATTN ? &a->attn.v[a->blocks.v[b].index] : NULL;
}

/* Does block i continue the stream that block prev ends? */
static bool follows(const op_analysis *a, int prev, size_t i) {
  return i < a->blocks.n && op_match_continues_stream(a, a->blocks.v[prev].stream_out, a->blocks.v[i].stream_in);
}

void op_layers_assemble(op_analysis *a) {
  bool any_cross = false;
  for (size_t i = 0; i < a->blocks.n; i++) {
    op_layer L = {-1, -1, -1, OP_STACK_NONE, 0};
    int last = (int)i;
    const op_attn *at = block_attn(a, (int)i);
    if (at && !at->cross) {
      L.attn_block = (int)i;
      const op_attn *nx = block_attn(a, (int)i + 1);
      if (nx && nx->cross && follows(a, last, i + 1)) L.cross_block = last = (int)++i;
    } else if (at) {
      L.cross_block = (int)i; /* a decoder layer without self-attention */
    } else {
      L.ffn_block = (int)i;
    }
    if (L.ffn_block < 0 && i + 1 < a->blocks.n && a->blocks.v[i + 1].kind == OP_BLOCK_FFN && follows(a, last, i + 1))
      L.ffn_block = (int)++i;
    any_cross |= L.cross_block >= 0;
    OP_VEC_PUSH(a->layers, L);
  }
  int counts[3] = {0, 0, 0};
  for (size_t l = 0; l < a->layers.n; l++) {
    op_layer *L = &a->layers.v[l];
    L->stack = !any_cross ? OP_STACK_NONE : L->cross_block >= 0 ? OP_STACK_DECODER : OP_STACK_ENCODER;
    L->stack_index = counts[L->stack]++;
  }
}

const op_attn *op_layer_cross(const op_analysis *a, int layer) { return block_attn(a, a->layers.v[layer].cross_block); }

int op_layer_first_block(const op_analysis *a, int layer) {
  const op_layer *L = &a->layers.v[layer];
  return L->attn_block >= 0 ? L->attn_block : L->cross_block >= 0 ? L->cross_block : L->ffn_block;
}

int op_layer_last_block(const op_analysis *a, int layer) {
  const op_layer *L = &a->layers.v[layer];
  return L->ffn_block >= 0 ? L->ffn_block : L->cross_block >= 0 ? L->cross_block : L->attn_block;
}

static int stack_count(const op_analysis *a, op_stack s) {
  int n = 0;
  for (size_t l = 0; l < a->layers.n; l++) n += a->layers.v[l].stack == s;
  return n;
}

bool op_analysis_has_stacks(const op_analysis *a) {
  return stack_count(a, OP_STACK_ENCODER) > 0 && stack_count(a, OP_STACK_DECODER) > 0;
}

const char *op_stack_name(op_stack s) {
  return s == OP_STACK_ENCODER ? "encoder" : s == OP_STACK_DECODER ? "decoder" : NULL;
}

const char *op_layer_label(const op_analysis *a, int layer, char *buf, size_t n) {
  const op_layer *L = &a->layers.v[layer];
  if (op_analysis_has_stacks(a)) snprintf(buf, n, "%s.%d", op_stack_name(L->stack), L->stack_index);
  else snprintf(buf, n, "%d", layer);
  return buf;
}

int op_layer_ref_parse(const char *s, const char **end, int *ref) {
  op_stack st = OP_STACK_NONE;
  const char *p = s;
  if (strncmp(p, "encoder.", 8) == 0) st = OP_STACK_ENCODER, p += 8;
  else if (strncmp(p, "decoder.", 8) == 0) st = OP_STACK_DECODER, p += 8;
  if (*p < '0' || *p > '9') return -1;
  char *e;
  errno = 0;
  long v = strtol(p, &e, 10);
  if (errno || v < 0 || v > (st ? 0xffffff : 1000000)) return -1;
  *ref = st ? OP_LAYER_REF(st, v) : (int)v;
  if (end) *end = e;
  return 0;
}

const char *op_layer_ref_text(int ref, char *buf, size_t n) {
  if (op_layer_ref_is_stacked(ref))
    snprintf(buf, n, "%s.%d", op_stack_name(op_layer_ref_stack(ref)), op_layer_ref_index(ref));
  else snprintf(buf, n, "%d", ref);
  return buf;
}

int op_layer_resolve(const op_analysis *a, int ref, const char *what, op_error *err) {
  int n = (int)a->layers.n, enc = stack_count(a, OP_STACK_ENCODER), dec = stack_count(a, OP_STACK_DECODER);
  if (!op_layer_ref_is_stacked(ref)) {
    if (enc && dec) {
      op_fail(err, OP_ARG,
              "%s: layer %d is ambiguous: the model has an encoder stack (%d layers) and a decoder stack (%d layers); "
              "name a layer encoder.N or decoder.N",
              what, ref, enc, dec);
      return -1;
    }
    if (ref >= n) {
      op_fail(err, OP_ARG, "%s: layer %d does not exist (the model has %d layers, 0-%d)", what, ref, n, n - 1);
      return -1;
    }
    return ref;
  }
  op_stack st = op_layer_ref_stack(ref);
  int idx = op_layer_ref_index(ref), have = stack_count(a, st);
  if (!have) {
    op_fail(err, OP_ARG, "%s: layer %s.%d: the model has no %s stack (%s)", what, op_stack_name(st), idx,
            op_stack_name(st), dec ? "it has a decoder stack only" : "it has one stack: number its layers 0, 1, ...");
    return -1;
  }
  for (size_t l = 0; l < a->layers.n; l++)
    if (a->layers.v[l].stack == st && a->layers.v[l].stack_index == idx) return (int)l;
  op_fail(err, OP_ARG, "%s: layer %s.%d does not exist (the %s stack has %d layers, %s.0-%s.%d)", what,
          op_stack_name(st), idx, op_stack_name(st), have, op_stack_name(st), op_stack_name(st), have - 1);
  return -1;
}
