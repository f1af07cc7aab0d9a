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

/* The layers of the chain of blocks starting at block `first`, following next[]; any_cross: holds a
 * cross-attention block. */
static void push_chain(op_analysis *a, const int *next, int first, bool *any_cross) {
  for (int i = first; i >= 0;) {
    op_layer L = {-1, -1, -1, OP_STACK_NONE, 0};
    int last = i;
    const op_attn *at = block_attn(a, i);
    if (at && !at->cross) {
      L.attn_block = i;
      const op_attn *nx = block_attn(a, next[i]);
      if (nx && nx->cross) L.cross_block = last = next[i];
    } else if (at) {
      L.cross_block = i; /* a decoder layer without self-attention */
    } else {
      L.ffn_block = i;
    }
    if (L.ffn_block < 0 && next[last] >= 0 && a->blocks.v[next[last]].kind == OP_BLOCK_FFN) L.ffn_block = last = next[last];
    *any_cross |= L.cross_block >= 0;
    OP_VEC_PUSH(a->layers, L);
    i = next[last];
  }
}

static bool chain_has_cross(const op_analysis *a, const int *next, int first) {
  for (int i = first; i >= 0; i = next[i])
    if (block_attn(a, i) && block_attn(a, i)->cross) return true;
  return false;
}

/* Blocks are chained by the stream, not by node order: an optimizer may place a decoder's first
 * self-attention (which needs no encoder output) before the whole encoder. Encoder chains (no
 * cross-attention) come first, each stack in the order of its first block. */
void op_layers_assemble(op_analysis *a) {
  size_t n = a->blocks.n;
  int *next = op_xmalloc((n ? n : 1) * sizeof *next);
  bool *has_prev = op_xcalloc(n ? n : 1, sizeof *has_prev), any_cross = false;
  for (size_t i = 0; i < n; i++) {
    next[i] = -1;
    for (size_t d = 1; d < n && next[i] < 0; d++) { /* the nearest later block first, then earlier ones */
      size_t j = (i + d) % n;
      if (!has_prev[j] && follows(a, (int)i, j)) next[i] = (int)j, has_prev[j] = true;
    }
  }
  for (int pass = 0; pass < 2; pass++)
    for (size_t i = 0; i < n; i++)
      if (!has_prev[i] && chain_has_cross(a, next, (int)i) == (pass == 1)) push_chain(a, next, (int)i, &any_cross);
  free(next);
  free(has_prev);
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
