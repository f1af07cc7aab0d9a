/* alloc_report.c - the allocation search (issue 12, prune/alloc_search.c) in the JSON report
 * (`allocation_search`) and the printed summary: the counts before and after, every candidate's judged
 * error, and what was done or why not. */
#include "prune/alloc_search.h"

#include "report/html.h"
#include "report/textbuf.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

/* {"heads": [per layer], "neurons": [per layer]} removed: -1 where the layer has no such block searched */
static cJSON *counts_json(const op_alloc_search *s, const int64_t *removed) {
  int layers = 0;
  for (size_t i = 0; i < s->nb; i++) layers = s->layer[i] + 1 > layers ? s->layer[i] + 1 : layers;
  cJSON *o = cJSON_CreateObject(), *k[2] = {cJSON_AddArrayToObject(o, "heads_removed"),
                                           cJSON_AddArrayToObject(o, "neurons_removed")};
  for (int l = 0; l < layers; l++)
    for (int kind = 0; kind < 2; kind++) {
      double v = -1;
      for (size_t i = 0; i < s->nb; i++)
        if (s->layer[i] == l && s->kind[i] == kind) v = (double)removed[i];
      cJSON_AddItemToArray(k[kind], cJSON_CreateNumber(v));
    }
  return o;
}

static void move_text(const op_alloc_search *s, const op_alloc_trial *t, char *buf, size_t n) {
  if (t->from < 0) snprintf(buf, n, "the error curves' allocation");
  else snprintf(buf, n, "one %s from layer %d to layer %d", s->kind[t->from] ? "group of neurons" : "head",
                s->layer[t->from], s->layer[t->to]);
}

void op_alloc_search_json(const op_alloc_search *s, cJSON *root) {
  if (!s) return;
  cJSON *o = cJSON_AddObjectToObject(root, "allocation_search");
  cJSON_AddBoolToObject(o, "ran", s->ran);
  cJSON_AddStringToObject(o, "note", s->note);
  cJSON_AddStringToObject(o, "metric", s->metric);
  cJSON_AddNumberToObject(o, "fit_samples", (double)s->fit_samples);
  cJSON_AddNumberToObject(o, "judge_samples", (double)s->judge_samples);
  cJSON_AddStringToObject(o, "split", "calibration samples in their order (spread over the file by default): the "
                                      "last quarter (at least 32 while half remain) judge each candidate, the rest fit it");
  cJSON_AddNumberToObject(o, "budget", (double)s->budget);
  cJSON_AddNumberToObject(o, "seconds", s->seconds);
  if (!s->ran) return;
  cJSON_AddItemToObject(o, "before", counts_json(s, s->trials.v[0].removed));
  cJSON_AddItemToObject(o, "after", counts_json(s, s->trials.v[s->best].removed));
  cJSON_AddNumberToObject(o, "error_before", s->trials.v[0].score);
  cJSON_AddNumberToObject(o, "error_after", s->trials.v[s->best].score);
  cJSON *cs = cJSON_AddArrayToObject(o, "candidates");
  for (size_t i = 0; i < s->trials.n; i++) {
    const op_alloc_trial *t = &s->trials.v[i];
    char what[96];
    move_text(s, t, what, sizeof what);
    cJSON *c = counts_json(s, t->removed);
    cJSON_AddStringToObject(c, "move", what);
    cJSON_AddNumberToObject(c, "error", t->score);
    cJSON_AddBoolToObject(c, "accepted", t->accepted);
    cJSON_AddItemToArray(cs, c);
  }
}

static void counts_text(const op_alloc_search *s, const int64_t *removed, sbuf *b) {
  for (int kind = 0; kind < 2; kind++) {
    sb_printf(b, kind ? "; neurons" : "heads");
    for (size_t i = 0; i < s->nb; i++)
      if (s->kind[i] == kind) sb_printf(b, " %lld", (long long)removed[i]);
  }
}

void op_alloc_search_text(const op_alloc_search *s, sbuf *b) {
  if (!s) return;
  sb_printf(b, "allocation search: %s\n", s->note);
  if (!s->ran) return;
  sb_printf(b, "  judged on %lld calibration samples, fit on the other %lld: relative output error %.4g -> %.4g\n",
            (long long)s->judge_samples, (long long)s->fit_samples, s->trials.v[0].score, s->trials.v[s->best].score);
  for (size_t i = 0; i < s->trials.n; i++) {
    const op_alloc_trial *t = &s->trials.v[i];
    char what[96];
    move_text(s, t, what, sizeof what);
    sb_printf(b, "  %-46s error %.4g%s (removed: ", what, t->score, t->accepted ? ", accepted" : "");
    counts_text(s, t->removed, b);
    sb_printf(b, ")\n");
  }
}

static void html_counts(sbuf *b, const cJSON *list) {
  const cJSON *v;
  bool first = true;
  cJSON_ArrayForEach(v, list) {
    if (v->valuedouble >= 0) sb_printf(b, "%s%.0f", first ? "" : " + ", v->valuedouble);
    else sb_printf(b, "%s-", first ? "" : " + ");
    first = false;
  }
}

void op_alloc_search_html(const cJSON *as, sbuf *b) {
  if (!as) return;
  const cJSON *note = cJSON_GetObjectItemCaseSensitive(as, "note");
  sb_printf(b, "<h2>Allocation search</h2><p class=\"note\" id=\"alloc-note\">");
  op_html_text(b, cJSON_IsString(note) ? note->valuestring : "");
  sb_printf(b, "</p>");
  const cJSON *cs = cJSON_GetObjectItemCaseSensitive(as, "candidates");
  if (!cJSON_IsArray(cs)) return;
  sb_printf(b, "<table class=\"alloc\"><tr><th class=\"l\">candidate</th><th>heads removed</th><th>neurons removed</th>"
               "<th>judged error</th><th>accepted</th></tr>");
  const cJSON *c;
  cJSON_ArrayForEach(c, cs) {
    const cJSON *mv = cJSON_GetObjectItemCaseSensitive(c, "move"), *err = cJSON_GetObjectItemCaseSensitive(c, "error");
    sb_printf(b, "<tr><td class=\"l\">");
    op_html_text(b, cJSON_IsString(mv) ? mv->valuestring : "");
    sb_printf(b, "</td><td>");
    html_counts(b, cJSON_GetObjectItemCaseSensitive(c, "heads_removed"));
    sb_printf(b, "</td><td>");
    html_counts(b, cJSON_GetObjectItemCaseSensitive(c, "neurons_removed"));
    sb_printf(b, "</td><td>%.4g</td><td>%s</td></tr>", cJSON_IsNumber(err) ? err->valuedouble : 0,
              cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(c, "accepted")) ? "yes" : "");
  }
  sb_printf(b, "</table>");
}
