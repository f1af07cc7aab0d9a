/* chain.c - calibration passes that start where the previous one stopped (see chain.h).
 *
 * done[]: the nodes whose results the chain's cache stands for. The cache holds, per batch, the values
 * those nodes produce that a node outside them still needs (one that some target depends on): the
 * boundary. A pass runs the nodes its names need that the boundary does not already give, fed by the
 * graph inputs (from the data, every pass) and the boundary values they read; it writes the new boundary
 * of done + what it ran as it goes. A weight edit invalidates every node it reaches (taint); a node whose
 * needed output is then missing from the cache is run again, and so on up the graph. */
#include "prune/chain.h"
#include "files/files.h"
#include "verify/progress.h"
#include "verify/stream.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A model that shares m's initializers and graph inputs; its nodes, inputs and outputs are set apart. */
typedef struct view {
  op_model m;
  Onnx__ModelProto proto;
  Onnx__GraphProto g;
} view;

static void view_init(view *v, const op_model *m) {
  v->m = *m;
  v->proto = *m->proto;
  v->g = *m->proto->graph;
  v->proto.graph = &v->g;
  v->m.proto = &v->proto;
}

typedef struct pass {
  view v;
  Onnx__ValueInfoProto *vis;      /* the boundary values read, as extra graph inputs, then the outputs */
  Onnx__ValueInfoProto **in, **out;
  op_session *s;
  size_t n_names, n_cin, n_sout;
  int *cin;      /* cache slots fed to the session, after the graph inputs */
  int *name_src; /* per name: session output index, or -1 - cache slot */
  int *nvals;    /* the new boundary's values */
  int *nsrc;     /* per new boundary value: session output index, or -1 - cache slot */
  size_t n_nvals;
  bool read_old; /* any value comes from the cache */
  bool *nd;      /* done once this pass completes */
  FILE *next;
  int64_t start;
  op_progress bar;
} pass;

struct op_chain {
  const op_model *m;
  const op_graph *gr;
  const Onnx__GraphProto *g;
  const op_dataset *d;
  view fv; /* the graph inputs alone: fed from the data for every pass */
  op_session *feeder;
  size_t n_in;
  int64_t first, total, batch;
  int *ord;       /* nodes in topological order */
  int **outs;     /* per node: its output value ids (-1: unnamed) */
  bool flat;      /* subgraphs, or no order: every pass runs every node from the data */
  bool uncached;  /* the temporary file failed (a full disk): every later pass runs from the data */
  bool tell;      /* say so on stderr (progress wanted) */
  bool *useful;   /* nodes some target depends on */
  bool *done;
  FILE *cache;
  int *cvals;     /* the boundary values, in the order each batch stores them */
  size_t n_cvals;
  const char *tmpdir;
  bool open;
  pass p;
};

static int value_id(const op_chain *ch, const char *name) {
  const op_value *v = name && name[0] ? op_graph_find(ch->gr, name) : NULL;
  return v ? (int)(v - ch->gr->values) : -1;
}

static int producer(const op_chain *ch, int id) { return id < 0 ? -1 : ch->gr->values[id].producer; }

static bool has_subgraphs(const Onnx__GraphProto *g) {
  for (size_t i = 0; i < g->n_node; i++)
    for (size_t k = 0; k < g->node[i]->n_attribute; k++)
      if (g->node[i]->attribute[k]->g || g->node[i]->attribute[k]->n_graphs) return true;
  return false;
}

/* Kahn's order over the index; false when some node waits on a cycle or an undefined value. */
static bool topo_order(op_chain *ch) {
  size_t n = ch->g->n_node;
  int *wait = op_xcalloc(n ? n : 1, sizeof *wait);
  size_t head = 0, tail = 0;
  for (size_t i = 0; i < n; i++) {
    const Onnx__NodeProto *nd = ch->g->node[i];
    for (size_t j = 0; j < nd->n_input; j++) wait[i] += producer(ch, value_id(ch, nd->input[j])) >= 0;
    if (!wait[i]) ch->ord[tail++] = (int)i;
  }
  while (head < tail) {
    int i = ch->ord[head++];
    for (size_t j = 0; j < ch->g->node[i]->n_output; j++) {
      int id = ch->outs[i][j];
      const op_value *v = id >= 0 ? &ch->gr->values[id] : NULL;
      for (size_t k = 0; v && k < v->n_consumers; k++)
        if (--wait[v->consumers[k]] == 0) ch->ord[tail++] = v->consumers[k];
    }
  }
  free(wait);
  return tail == n;
}

op_chain *op_chain_new(const op_model *m, const op_graph *gr, const op_dataset *d, int64_t samples, int64_t batch,
                       const char *const *targets, size_t n_targets, bool tell, op_error *err) {
  op_chain *ch = op_xcalloc(1, sizeof *ch);
  ch->tell = tell;
  ch->m = m;
  ch->gr = gr;
  ch->g = m->proto->graph;
  ch->d = d;
  view_init(&ch->fv, m);
  ch->fv.g.n_node = ch->fv.g.n_output = 0;
  ch->feeder = op_session_new(&ch->fv.m, err);
  ch->total = ch->feeder ? op_sample_window(d, ch->feeder, 0, samples, &ch->first, err) : -1;
  if (ch->total < 0) {
    op_chain_free(ch);
    return NULL;
  }
  ch->n_in = op_session_input_count(ch->feeder);
  ch->batch = batch < 1 || op_dataset_set_count(d) ? 1 : batch; /* a test data set is one complete run */
  size_t n = ch->g->n_node;
  ch->ord = op_xmalloc((n ? n : 1) * sizeof *ch->ord);
  ch->outs = op_xmalloc((n ? n : 1) * sizeof *ch->outs);
  for (size_t i = 0; i < n; i++) {
    const Onnx__NodeProto *nd = ch->g->node[i];
    ch->outs[i] = op_xmalloc((nd->n_output ? nd->n_output : 1) * sizeof **ch->outs);
    for (size_t j = 0; j < nd->n_output; j++) ch->outs[i][j] = value_id(ch, nd->output[j]);
  }
  ch->flat = has_subgraphs(ch->g) || !topo_order(ch);
  ch->done = op_xcalloc(n ? n : 1, 1);
  ch->useful = op_xcalloc(n ? n : 1, 1);
  bool *want = op_xcalloc(gr->cap, 1);
  for (size_t t = 0; t < n_targets; t++) {
    int id = value_id(ch, targets[t]);
    if (id >= 0) want[id] = true;
  }
  for (size_t k = n; !ch->flat && k-- > 0;) { /* backwards: a node is useful when a wanted value needs it */
    int i = ch->ord[k];
    const Onnx__NodeProto *nd = ch->g->node[i];
    for (size_t j = 0; j < nd->n_output && !ch->useful[i]; j++) {
      int id = ch->outs[i][j];
      ch->useful[i] = id >= 0 && want[id];
    }
    for (size_t j = 0; ch->useful[i] && j < nd->n_input; j++) {
      int id = value_id(ch, nd->input[j]);
      if (id >= 0) want[id] = true;
    }
  }
  free(want);
  const char *t = getenv("TMPDIR");
  ch->tmpdir = t && t[0] ? t : "/tmp";
  return ch;
}

int64_t op_chain_samples(const op_chain *ch) { return ch->total; }

static void drop_cache(op_chain *ch) {
  if (ch->cache) fclose(ch->cache);
  ch->cache = NULL;
  free(ch->cvals);
  ch->cvals = NULL;
  ch->n_cvals = 0;
  memset(ch->done, 0, ch->g->n_node ? ch->g->n_node : 1);
}

void op_chain_free(op_chain *ch) {
  if (!ch) return;
  if (ch->open) op_chain_close(ch, false);
  if (ch->done) drop_cache(ch);
  for (size_t i = 0; ch->outs && i < ch->g->n_node; i++) free(ch->outs[i]);
  free(ch->outs);
  free(ch->ord);
  free(ch->done);
  free(ch->useful);
  op_session_free(ch->feeder);
  free(ch);
}

/* ---- the boundary file: per batch, each value's header then its bytes ---- */

typedef struct tensor_head {
  int32_t dtype, rank;
  int64_t dims[OP_MAX_DIMS];
  uint64_t nbytes;
} tensor_head;

static int io_fail(const op_chain *ch, const char *what, op_error *err) {
  return op_fail(err, OP_IO, "%s: calibration passes: %s a temporary file in %s (the values kept between passes) "
                 "failed: %s; TMPDIR names the folder", ch->m->path, what, ch->tmpdir,
                 errno ? strerror(errno) : "short transfer");
}

/* Writing the boundary failed (a full or missing TMPDIR): the passes still compute the right values
 * from the data, only slower, so the chain goes on without its file, and says so once. */
static atomic_bool told; /* once per process, not once per chain */

static void give_up_file(op_chain *ch, const char *what) {
  if (ch->tell && !ch->uncached && !atomic_exchange(&told, true))
    fprintf(stderr, "\n%s: calibration passes: %s a temporary file in %s failed (%s): every later pass runs from "
            "the model's inputs, slower (TMPDIR names the folder)\n", ch->m->path, what, ch->tmpdir,
            errno ? strerror(errno) : "short transfer");
  ch->uncached = true;
}

static FILE *temp_file(op_chain *ch) {
  char path[4096];
  snprintf(path, sizeof path, "%s/onnx-prune-passXXXXXX", ch->tmpdir);
  errno = 0;
  int fd = mkstemp(path);
  if (fd < 0) return give_up_file(ch, "creating"), NULL;
  unlink(path); /* gone with the descriptor, whatever happens to the process */
  FILE *f = fdopen(fd, "w+b");
  if (!f) {
    give_up_file(ch, "opening");
    close(fd);
  }
  return f;
}

static int write_tensor(FILE *f, const op_tensor *t) {
  tensor_head h;
  memset(&h, 0, sizeof h);
  h.dtype = t->dtype;
  h.rank = t->rank;
  memcpy(h.dims, t->dims, (size_t)t->rank * sizeof *h.dims);
  h.nbytes = t->nbytes;
  errno = 0;
  return fwrite(&h, sizeof h, 1, f) != 1 || (t->nbytes && fwrite(t->data, t->nbytes, 1, f) != 1) ? -1 : 0;
}

static int read_tensor(const op_chain *ch, FILE *f, op_tensor *t, op_error *err) {
  tensor_head h;
  errno = 0;
  if (fread(&h, sizeof h, 1, f) != 1 || h.rank < 0 || h.rank > OP_MAX_DIMS) return io_fail(ch, "reading", err);
  if (op_budget_fits(h.nbytes, "calibration passes: a value between passes", err)) return -1;
  memset(t, 0, sizeof *t);
  t->dtype = h.dtype;
  t->rank = h.rank;
  memcpy(t->dims, h.dims, sizeof t->dims);
  t->nbytes = (size_t)h.nbytes;
  t->data = op_xmalloc(t->nbytes ? t->nbytes : 1);
  if (t->nbytes && fread(t->data, t->nbytes, 1, f) != 1) {
    op_tensor_clear(t);
    return io_fail(ch, "reading", err);
  }
  return 0;
}

static void tensor_copy(op_tensor *dst, const op_tensor *src) {
  *dst = *src;
  dst->data = op_xmalloc(src->nbytes ? src->nbytes : 1);
  memcpy(dst->data, src->data, src->nbytes);
}

/* ---- a pass ---- */

/* Whether value id leaves the nodes in nd: some node outside them that a target depends on reads it. */
static bool crosses(const op_chain *ch, int id, const bool *nd) {
  const op_value *v = &ch->gr->values[id];
  for (size_t k = 0; k < v->n_consumers; k++)
    if (!nd[v->consumers[k]] && ch->useful[v->consumers[k]]) return true;
  return false;
}

/* The nodes an edit reaches: a Constant node that holds the edited tensor, the readers of the value, then
 * everything downstream. */
static void taint(const op_chain *ch, const char *const *edited, size_t n_edited, bool *bad) {
  for (size_t e = 0; e < n_edited; e++) {
    int id = value_id(ch, edited[e]);
    if (producer(ch, id) >= 0) bad[producer(ch, id)] = true;
    for (size_t k = 0; id >= 0 && k < ch->gr->values[id].n_consumers; k++) bad[ch->gr->values[id].consumers[k]] = true;
  }
  for (size_t k = 0; k < ch->g->n_node; k++) {
    int i = ch->ord[k];
    for (size_t j = 0; bad[i] && j < ch->g->node[i]->n_output; j++) {
      const op_value *v = ch->outs[i][j] >= 0 ? &ch->gr->values[ch->outs[i][j]] : NULL;
      for (size_t c = 0; v && c < v->n_consumers; c++) bad[v->consumers[c]] = true;
    }
  }
}

/* A graph input or output slot for value id named as the index names it. */
static Onnx__ValueInfoProto *slot(pass *p, size_t k, const char *name) {
  onnx__value_info_proto__init(&p->vis[k]);
  p->vis[k].name = (char *)name;
  return &p->vis[k];
}

/* Plans the pass: which nodes run, what they read from the cache, what the session returns. */
static void plan_pass(op_chain *ch, const char *const *names, size_t n, const char *const *edited, size_t n_edited) {
  pass *p = &ch->p;
  size_t nn = ch->g->n_node, cap = ch->gr->cap;
  bool *run = op_xcalloc(nn ? nn : 1, 1), *bad = op_xcalloc(nn ? nn : 1, 1);
  bool *need = op_xcalloc(cap, 1), *avail = op_xcalloc(cap, 1);
  int *slot_of = op_xmalloc(cap * sizeof *slot_of), *out_of = op_xmalloc(cap * sizeof *out_of);
  for (size_t i = 0; i < cap; i++) slot_of[i] = out_of[i] = -1;
  p->nd = op_xcalloc(nn ? nn : 1, 1);
  if (ch->flat) memset(run, 1, nn);
  else {
    taint(ch, edited, n_edited, bad);
    for (size_t i = 0; i < nn; i++) ch->done[i] = ch->done[i] && !bad[i];
    for (size_t k = 0; k < ch->n_cvals; k++) {
      int id = ch->cvals[k];
      slot_of[id] = (int)k;
      avail[id] = ch->done[producer(ch, id)];
    }
    for (size_t j = 0; j < n; j++) {
      int id = value_id(ch, names[j]);
      if (id >= 0) need[id] = true;
    }
    for (size_t k = nn; k-- > 0;) { /* backwards: a node runs when a needed output of it is not in the cache */
      int i = ch->ord[k];
      const Onnx__NodeProto *nd = ch->g->node[i];
      for (size_t j = 0; j < nd->n_output && !run[i]; j++) {
        int id = ch->outs[i][j];
        run[i] = id >= 0 && need[id] && !avail[id];
      }
      for (size_t j = 0; run[i] && j < nd->n_input; j++) {
        int id = value_id(ch, nd->input[j]);
        if (id >= 0) need[id] = true;
      }
    }
  }
  /* the nodes, in the graph's order */
  p->v.g.node = op_xmalloc((nn ? nn : 1) * sizeof *p->v.g.node);
  p->v.g.n_node = 0;
  for (size_t i = 0; i < nn; i++)
    if (run[i]) p->v.g.node[p->v.g.n_node++] = ch->g->node[i];
  /* the boundary after this pass: done or run, less what cannot be stored (backwards, so a node given up
   * hands its inputs to the boundary in turn) */
  bool keep = !ch->flat && !ch->uncached; /* a boundary to write */
  for (size_t i = 0; i < nn && keep; i++) p->nd[i] = ch->done[i] || run[i];
  for (size_t k = nn; keep && k-- > 0;) {
    int i = ch->ord[k];
    for (size_t j = 0; p->nd[i] && j < ch->g->node[i]->n_output; j++) {
      int id = ch->outs[i][j];
      if (id >= 0 && !run[i] && !avail[id] && crosses(ch, id, p->nd)) p->nd[i] = false;
    }
  }
  size_t n_vis = 0, vcap = n + ch->n_cvals + 1;
  p->nvals = op_xmalloc(vcap * sizeof *p->nvals);
  p->n_nvals = 0;
  for (size_t k = 0; k < nn && keep; k++) {
    int i = ch->ord[k];
    for (size_t j = 0; p->nd[i] && j < ch->g->node[i]->n_output; j++) {
      int id = ch->outs[i][j];
      if (id < 0 || !crosses(ch, id, p->nd)) continue;
      if (p->n_nvals + 1 >= vcap) vcap *= 2, p->nvals = op_xrealloc(p->nvals, vcap * sizeof *p->nvals);
      p->nvals[p->n_nvals++] = id;
    }
  }
  /* session inputs: the graph's own, then the cached values a running node reads */
  p->cin = op_xmalloc((ch->n_cvals + 1) * sizeof *p->cin);
  p->vis = op_xmalloc((ch->n_cvals + n + p->n_nvals + 1) * sizeof *p->vis);
  p->in = op_xmalloc((ch->g->n_input + ch->n_cvals + 1) * sizeof *p->in);
  memcpy(p->in, ch->g->input, ch->g->n_input * sizeof *p->in);
  p->v.g.n_input = ch->g->n_input;
  for (size_t k = 0; k < ch->n_cvals; k++) {
    int id = ch->cvals[k];
    const op_value *v = &ch->gr->values[id];
    bool read = false;
    /* a value whose producer runs again comes from the session, not the cache (one definition each) */
    for (size_t c = 0; avail[id] && !run[producer(ch, id)] && c < v->n_consumers && !read; c++)
      read = run[v->consumers[c]];
    if (!read) continue;
    p->cin[p->n_cin++] = (int)k;
    p->in[p->v.g.n_input++] = slot(p, n_vis++, v->name);
  }
  p->v.g.input = p->in;
  /* session outputs: the names the cache does not hold, then the new boundary values computed here */
  p->out = op_xmalloc((n + p->n_nvals + 1) * sizeof *p->out);
  p->name_src = op_xmalloc((n ? n : 1) * sizeof *p->name_src);
  p->nsrc = op_xmalloc((p->n_nvals + 1) * sizeof *p->nsrc);
  p->read_old = p->n_cin > 0;
  for (size_t j = 0; j < n; j++) {
    int id = value_id(ch, names[j]);
    if (id >= 0 && avail[id]) {
      p->name_src[j] = -1 - slot_of[id], p->read_old = true;
      continue;
    }
    if (id >= 0 && out_of[id] >= 0) {
      p->name_src[j] = out_of[id];
      continue;
    }
    p->name_src[j] = (int)p->n_sout;
    if (id >= 0) out_of[id] = (int)p->n_sout;
    p->out[p->n_sout++] = slot(p, n_vis++, names[j]);
  }
  for (size_t k = 0; k < p->n_nvals; k++) {
    int id = p->nvals[k];
    if (!run[producer(ch, id)]) {
      p->nsrc[k] = -1 - slot_of[id], p->read_old = true;
      continue;
    }
    if (out_of[id] < 0) out_of[id] = (int)p->n_sout, p->out[p->n_sout++] = slot(p, n_vis++, ch->gr->values[id].name);
    p->nsrc[k] = out_of[id];
  }
  p->v.g.output = p->out;
  p->v.g.n_output = p->n_sout;
  free(run);
  free(bad);
  free(need);
  free(avail);
  free(slot_of);
  free(out_of);
}

static void pass_free(op_chain *ch) {
  pass *p = &ch->p;
  op_session_free(p->s);
  if (p->next) fclose(p->next);
  free(p->v.g.node);
  free(p->vis);
  free(p->in);
  free(p->out);
  free(p->cin);
  free(p->name_src);
  free(p->nvals);
  free(p->nsrc);
  free(p->nd);
  memset(p, 0, sizeof *p);
  ch->open = false;
}

int op_chain_open(op_chain *ch, const char *const *names, size_t n, const char *const *edited, size_t n_edited,
                  bool progress, const char *label, op_error *err) {
  if (ch->open) op_chain_close(ch, false);
  pass *p = &ch->p;
  memset(p, 0, sizeof *p);
  ch->open = true;
  view_init(&p->v, ch->m);
  plan_pass(ch, names, n, edited, n_edited);
  p->s = op_session_new(&p->v.m, err);
  if (!p->s) {
    pass_free(ch);
    drop_cache(ch);
    return -1;
  }
  if (p->n_nvals && !(p->next = temp_file(ch))) p->n_nvals = 0; /* the values are still computed */
  if (ch->cache) rewind(ch->cache);
  p->n_names = n;
  op_progress_begin(&p->bar, progress, ch->total, label);
  return 0;
}

size_t op_chain_nodes(const op_chain *ch) { return ch->open ? ch->p.v.g.n_node : 0; }

int op_chain_next(op_chain *ch, op_tensor *outputs, int64_t *count_out, op_error *err) {
  pass *p = &ch->p;
  if (p->start >= ch->total) return 0;
  int64_t count = ch->total - p->start < ch->batch ? ch->total - p->start : ch->batch;
  size_t n_sin = ch->n_in + p->n_cin;
  op_tensor *in = op_xcalloc(n_sin + 1, sizeof *in), *old = op_xcalloc(ch->n_cvals + 1, sizeof *old);
  op_tensor *sout = op_xcalloc(p->n_sout + 1, sizeof *sout);
  int rc = op_dataset_batch(ch->d, ch->feeder, ch->first + p->start, count, in, err);
  for (size_t k = 0; k < ch->n_cvals && !rc && p->read_old; k++) rc = read_tensor(ch, ch->cache, &old[k], err);
  for (size_t k = 0; k < p->n_cin && !rc; k++) in[ch->n_in + k] = old[p->cin[k]]; /* borrowed */
  if (!rc) rc = op_session_run(p->s, in, sout, NULL, NULL, err);
  for (size_t k = 0; k < p->n_nvals && !rc; k++)
    if (write_tensor(p->next, p->nsrc[k] >= 0 ? &sout[p->nsrc[k]] : &old[-1 - p->nsrc[k]])) {
      give_up_file(ch, "writing");
      fclose(p->next);
      p->next = NULL;
      p->n_nvals = 0;
    }
  for (size_t j = 0; j < p->n_names && !rc; j++)
    tensor_copy(&outputs[j], p->name_src[j] >= 0 ? &sout[p->name_src[j]] : &old[-1 - p->name_src[j]]);
  for (size_t i = 0; i < ch->n_in; i++) op_tensor_clear(&in[i]);
  for (size_t k = 0; k < ch->n_cvals; k++) op_tensor_clear(&old[k]);
  for (size_t k = 0; k < p->n_sout; k++) op_tensor_clear(&sout[k]);
  free(in);
  free(old);
  free(sout);
  if (rc) return -1;
  p->start += count;
  op_progress_update(&p->bar, p->start);
  *count_out = count;
  return 1;
}

void op_chain_close(op_chain *ch, bool complete) {
  if (!ch->open) return;
  pass *p = &ch->p;
  op_progress_end(&p->bar);
  errno = 0;
  complete = complete && p->start >= ch->total; /* a boundary of some batches only is no boundary */
  if (complete && p->next && (fflush(p->next) || ferror(p->next))) give_up_file(ch, "writing");
  if (!complete || ch->flat || ch->uncached) {
    pass_free(ch);
    drop_cache(ch);
    return;
  }
  if (ch->cache) fclose(ch->cache);
  ch->cache = p->next;
  p->next = NULL;
  free(ch->cvals);
  ch->cvals = p->nvals;
  ch->n_cvals = p->n_nvals;
  p->nvals = NULL;
  memcpy(ch->done, p->nd, ch->g->n_node);
  pass_free(ch);
}
