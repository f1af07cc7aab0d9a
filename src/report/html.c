/* html.c - the visual pruning report (issue 12): one self-contained HTML page (inline SVG and CSS, no
 * script, no network) drawn from the JSON report: per layer the kept and removed heads as a grid and the
 * FFN width kept, the distribution of the scores units were ranked by, predicted vs measured
 * reconstruction error per block when the report has them, and the accuracy-floor search's curve.
 * Reading the JSON rather than the report struct lets fields other steps add (predicted_error,
 * measured_error) appear without this file knowing where they are computed. */
#include "prune/prune.h"
#include "prune/alloc_search.h"
#include "report/html.h"
#include "report/textbuf.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* text into HTML (element content and attribute values alike) */
void op_html_text(sbuf *b, const char *s) {
  for (; s && *s; s++) {
    switch (*s) {
      case '&': sb_printf(b, "&amp;"); break;
      case '<': sb_printf(b, "&lt;"); break;
      case '>': sb_printf(b, "&gt;"); break;
      case '"': sb_printf(b, "&quot;"); break;
      default: sb_printf(b, "%c", *s);
    }
  }
}

static double num(const cJSON *o, const char *key, double dflt) {
  const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
  return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}

static bool flag(const cJSON *o, const char *key) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, key)); }

static bool in_list(const cJSON *list, int64_t i) {
  const cJSON *x;
  cJSON_ArrayForEach(x, list) if (cJSON_IsNumber(x) && (int64_t)x->valuedouble == i) return true;
  return false;
}

static const char *CSS =
    "body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}"
    "h1{font-size:20px}h2{font-size:16px;margin-top:28px;border-bottom:1px solid #ccc}"
    "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:right}"
    "th{background:#f4f4f4}td.l,th.l{text-align:left}.layer{display:flex;gap:24px;align-items:flex-start;"
    "margin:10px 0;padding:8px;border:1px solid #eee}.layer h3{font-size:14px;margin:0 0 6px}"
    "rect.kept{fill:#2e7d32}rect.removed{fill:#e0e0e0;stroke:#b71c1c;stroke-width:1}"
    "rect.ffn-kept{fill:#1565c0}rect.ffn-all{fill:#e0e0e0}rect.bar-kept{fill:#2e7d32}rect.bar-removed{fill:#ef9a9a}"
    "polyline{fill:none;stroke:#1565c0;stroke-width:2}circle.pass{fill:#2e7d32}circle.fail{fill:#c62828}"
    "circle.kept-point{fill:none;stroke:#000;stroke-width:2}.note{color:#666}text{font-size:11px;fill:#333}"
    ".legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}";

/* The heads of one layer as a grid of squares, kept filled, removed hollow (nn_pruning's mask plots). */
static void head_grid(sbuf *b, const cJSON *L, int layer) {
  int64_t H = (int64_t)num(L, "heads_before", 0);
  bool gone = flag(L, "attention_removed") || flag(L, "dropped");
  const cJSON *removed = cJSON_GetObjectItemCaseSensitive(L, "removed_heads");
  int64_t cols = H <= 16 ? H : 16, rows = cols ? (H + cols - 1) / cols : 0, cell = 18;
  sb_printf(b, "<div><div>heads %lld &rarr; %lld</div>", (long long)H, (long long)num(L, "heads_after", 0));
  sb_printf(b, "<svg class=\"heads\" data-layer=\"%d\" width=\"%lld\" height=\"%lld\" role=\"img\">", layer,
     (long long)(cols * cell + 2), (long long)(rows * cell + 2));
  for (int64_t h = 0; h < H; h++) {
    bool kept = !gone && !in_list(removed, h);
    sb_printf(b, "<rect class=\"head %s\" data-head=\"%lld\" x=\"%lld\" y=\"%lld\" width=\"%lld\" height=\"%lld\"><title>head %lld: %s</title></rect>",
       kept ? "kept" : "removed", (long long)h, (long long)(1 + (h % cols) * cell), (long long)(1 + (h / cols) * cell),
       (long long)(cell - 3), (long long)(cell - 3), (long long)h, kept ? "kept" : "removed");
  }
  sb_printf(b, "</svg></div>");
}

static void ffn_bar(sbuf *b, const cJSON *L, int layer) {
  double before = num(L, "ffn_before", 0), after = flag(L, "dropped") || flag(L, "ffn_removed") ? 0 : num(L, "ffn_after", 0);
  double w = 200, kw = before > 0 ? w * after / before : 0;
  sb_printf(b, "<div><div>FFN %.0f &rarr; %.0f</div><svg class=\"ffn\" data-layer=\"%d\" data-before=\"%.0f\" data-after=\"%.0f\" "
        "width=\"%.0f\" height=\"18\"><rect class=\"ffn-all\" x=\"0\" y=\"2\" width=\"%.0f\" height=\"14\"/>"
        "<rect class=\"ffn-kept\" x=\"0\" y=\"2\" width=\"%.1f\" height=\"14\"/></svg></div>",
     before, after, layer, before, after, w, w, kw);
}

/* A histogram of the scores units were ranked by, kept and removed stacked. */
static void histogram(sbuf *b, const cJSON *scores, const cJSON *removed, bool all_removed, const char *what, int layer) {
  int n = cJSON_GetArraySize(scores);
  if (n <= 0) return;
  double lo = INFINITY, hi = -INFINITY;
  const cJSON *x;
  cJSON_ArrayForEach(x, scores) if (cJSON_IsNumber(x)) lo = fmin(lo, x->valuedouble), hi = fmax(hi, x->valuedouble);
  enum { BINS = 20 };
  int kept[BINS] = {0}, gone[BINS] = {0}, top = 1, i = 0;
  cJSON_ArrayForEach(x, scores) {
    int k = hi > lo ? (int)((x->valuedouble - lo) / (hi - lo) * BINS) : 0;
    if (k >= BINS) k = BINS - 1;
    if (k < 0) k = 0;
    if (all_removed || in_list(removed, i)) gone[k]++;
    else kept[k]++;
    if (kept[k] + gone[k] > top) top = kept[k] + gone[k];
    i++;
  }
  double W = 220, Hh = 60, bw = W / BINS;
  sb_printf(b, "<div><div>%s scores</div><svg class=\"hist\" data-layer=\"%d\" data-kind=\"%s\" width=\"%.0f\" height=\"%.0f\">", what,
     layer, what, W, Hh + 14);
  for (int k = 0; k < BINS; k++) {
    double hk = Hh * kept[k] / top, hg = Hh * gone[k] / top;
    if (gone[k]) sb_printf(b, "<rect class=\"bar-removed\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>", k * bw, Hh - hg, bw - 1, hg);
    if (kept[k]) sb_printf(b, "<rect class=\"bar-kept\" x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\"/>", k * bw, Hh - hg - hk, bw - 1, hk);
  }
  sb_printf(b, "<text x=\"0\" y=\"%.0f\">%.3g</text><text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%.3g</text></svg></div>", Hh + 12,
     lo, W, Hh + 12, hi);
}

/* predicted_error / measured_error of a layer: a number, or an object of numbers per block. */
static void error_cell(sbuf *b, const cJSON *v, const char *block) {
  if (cJSON_IsObject(v)) v = cJSON_GetObjectItemCaseSensitive(v, block);
  if (cJSON_IsNumber(v)) sb_printf(b, "<td>%.4g</td>", v->valuedouble);
  else sb_printf(b, "<td class=\"note\">not measured</td>");
}

static void errors_table(sbuf *b, const cJSON *layers) {
  sb_printf(b, "<h2>Reconstruction error per block</h2><table class=\"errors\"><tr><th>layer</th><th class=\"l\">block</th>"
        "<th>predicted</th><th>measured</th></tr>");
  const cJSON *L;
  cJSON_ArrayForEach(L, layers) {
    const char *blocks[] = {"attention", "ffn"};
    for (int k = 0; k < 2; k++) {
      if (!cJSON_GetObjectItemCaseSensitive(L, k ? "ffn_before" : "heads_before")) continue;
      sb_printf(b, "<tr><td>%.0f</td><td class=\"l\">%s</td>", num(L, "layer", 0), blocks[k]);
      /* the prune report's attention_reconstruction / ffn_reconstruction, or the fields on the layer itself */
      const cJSON *rec = cJSON_GetObjectItemCaseSensitive(L, k ? "ffn_reconstruction" : "attention_reconstruction");
      const cJSON *at = rec ? rec : L;
      error_cell(b, cJSON_GetObjectItemCaseSensitive(at, "predicted_error"), blocks[k]);
      error_cell(b, cJSON_GetObjectItemCaseSensitive(at, "measured_error"), blocks[k]);
      sb_printf(b, "</tr>");
    }
  }
  sb_printf(b, "</table>");
}

/* The figure the floor judged (the search says which), else the best one the curve has. */
static const char *curve_metric(const cJSON *s, const cJSON *curve, const char **label) {
  const char *m = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "metric"));
  if (m && !strcmp(m, "agreement")) return *label = "top-1 agreement", "agreement";
  if (m && !strcmp(m, "cosine")) return *label = "mean cosine", "cosine";
  if (m && !strcmp(m, "perplexity")) return *label = "perplexity", "perplexity";
  const cJSON *p0 = cJSON_GetArrayItem(curve, 0);
  if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(p0, "perplexity"))) return *label = "perplexity", "perplexity";
  if (cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(p0, "accuracy"))) return *label = "accuracy", "accuracy";
  return *label = "top-1 agreement", "agreement";
}

static void search_section(sbuf *b, const cJSON *s, const cJSON *rows) {
  const cJSON *curve = cJSON_GetObjectItemCaseSensitive(s, "curve");
  int n = cJSON_GetArraySize(curve);
  sb_printf(b, "<h2>Accuracy-floor search</h2><p>floor: ");
  op_html_text(b, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(s, "floor")));
  const cJSON *ev = cJSON_GetObjectItemCaseSensitive(rows, "evaluation");
  if (ev) {
    sb_printf(b, "; judged on ");
    op_html_text(b, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(ev, "rule")));
  }
  sb_printf(b, "</p>");
  if (n <= 0) return;
  const char *label, *key = curve_metric(s, curve, &label);
  double lo = INFINITY, hi = -INFINITY, thr = num(s, "threshold", NAN);
  const cJSON *p;
  cJSON_ArrayForEach(p, curve) {
    double v = num(p, key, NAN);
    if (!isnan(v)) lo = fmin(lo, v), hi = fmax(hi, v);
  }
  if (!isnan(thr)) lo = fmin(lo, thr), hi = fmax(hi, thr);
  if (!(hi > lo)) hi = lo + 1;
  double W = 420, H = 200, ml = 50, mb = 34;
  sb_printf(b, "<svg class=\"curve\" width=\"%.0f\" height=\"%.0f\"><line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#999\"/>"
        "<line x1=\"%.0f\" y1=\"0\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#999\"/>",
     W, H + mb, ml, H, W, H, ml, ml, H);
  sb_printf(b, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">FLOPs kept</text><text x=\"2\" y=\"10\">%s</text>",
     (W + ml) / 2, H + mb, label);
  sb_printf(b, "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%.3g</text><text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%.3g</text>",
     ml - 4, H, lo, ml - 4, 22.0, hi);
  for (int t = 0; t <= 4; t++) /* FLOPs kept: 0, 0.25, ..., 1 */
    sb_printf(b, "<text x=\"%.1f\" y=\"%.0f\" text-anchor=\"middle\">%.2f</text>", ml + (W - ml - 10) * t / 4.0, H + 12, t / 4.0);
  if (!isnan(thr)) {
    double y = H - (H - 20) * (thr - lo) / (hi - lo);
    sb_printf(b, "<line class=\"threshold\" x1=\"%.0f\" y1=\"%.1f\" x2=\"%.0f\" y2=\"%.1f\" stroke=\"#c62828\" stroke-dasharray=\"4 3\"/>"
          "<text x=\"%.0f\" y=\"%.1f\" text-anchor=\"end\">floor %.4g</text>",
       ml, y, W, y, W, y - 3, thr);
  }
  sb_printf(b, "<polyline points=\"");
  cJSON_ArrayForEach(p, curve) {
    double x = ml + (W - ml - 10) * num(p, "flops_kept", 0), y = H - (H - 20) * (num(p, key, lo) - lo) / (hi - lo);
    sb_printf(b, "%.1f,%.1f ", x, y);
  }
  sb_printf(b, "\"/>");
  double kept = num(s, "kept_target", -1);
  cJSON_ArrayForEach(p, curve) {
    double x = ml + (W - ml - 10) * num(p, "flops_kept", 0), y = H - (H - 20) * (num(p, key, lo) - lo) / (hi - lo);
    sb_printf(b, "<circle class=\"point %s\" cx=\"%.1f\" cy=\"%.1f\" r=\"4\"/>", flag(p, "pass") ? "pass" : "fail", x, y);
    if (num(p, "target", -2) == kept) sb_printf(b, "<circle class=\"kept-point\" cx=\"%.1f\" cy=\"%.1f\" r=\"8\"/>", x, y);
  }
  sb_printf(b, "</svg><div class=\"legend\"><span style=\"background:#2e7d32\"></span>passes<span style=\"background:#c62828\"></span>"
        "fails<span style=\"border:2px solid #000;border-radius:8px\"></span>kept</div>");
  sb_printf(b, "<table class=\"curve-table\"><tr><th>target</th><th>FLOPs kept</th><th>parameters kept</th><th>accuracy (reference)</th>"
        "<th>agreement</th><th>cosine</th><th>perplexity (reference)</th><th>passes</th></tr>");
  cJSON_ArrayForEach(p, curve) {
    sb_printf(b, "<tr><td>%.4f</td><td>%.4f</td><td>%.4f</td>", num(p, "target", 0), num(p, "flops_kept", 0), num(p, "params_kept", 0));
    if (num(p, "accuracy", -1) >= 0) sb_printf(b, "<td>%.2f%% (%.2f%%)</td>", 100 * num(p, "accuracy", 0), 100 * num(p, "reference_accuracy", 0));
    else sb_printf(b, "<td>-</td>");
    sb_printf(b, "<td>%.2f%%</td><td>%.5f</td>", 100 * num(p, "agreement", 0), num(p, "cosine", 0));
    if (num(p, "perplexity", -1) >= 0) sb_printf(b, "<td>%.3f (%.3f)</td>", num(p, "perplexity", 0), num(p, "reference_perplexity", 0));
    else sb_printf(b, "<td>-</td>");
    sb_printf(b, "<td>%s%s</td></tr>", flag(p, "pass") ? "yes" : "no", num(p, "target", -2) == kept ? " (kept)" : "");
  }
  sb_printf(b, "</table>");
}

char *op_report_html(const char *prune_json, const char *title_note) {
  cJSON *root = cJSON_Parse(prune_json);
  if (!root) return NULL;
  sbuf b = {0};
  sb_printf(&b, "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>onnx-prune report: ");
  op_html_text(&b, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "model")));
  sb_printf(&b, "</title><style>%s</style></head><body><h1>Pruning report: ", CSS);
  op_html_text(&b, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "model")));
  sb_printf(&b, "</h1>");
  if (title_note) {
    sb_printf(&b, "<p>");
    op_html_text(&b, title_note);
    sb_printf(&b, "</p>");
  }
  const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "parameters"), *bk = cJSON_GetObjectItemCaseSensitive(root, "blocks");
  sb_printf(&b, "<table class=\"summary\"><tr><th class=\"l\">importance</th><td class=\"l\">");
  op_html_text(&b, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(root, "importance_metric")));
  sb_printf(&b, "</td></tr><tr><th class=\"l\">parameters</th><td class=\"l\">%.0f &rarr; %.0f (%.2fx)</td></tr>", num(pp, "before", 0),
     num(pp, "after", 0), num(pp, "reduction_factor", 0));
  if (bk)
    sb_printf(&b, "<tr><th class=\"l\">attention + FFN FLOPs per token (sequence %.0f)</th><td class=\"l\">%.4g &rarr; %.4g (%.1f%% kept)</td></tr>",
       num(bk, "flops_sequence_length", 0), num(bk, "flops_per_token_before", 0), num(bk, "flops_per_token_after", 0),
       100 * num(bk, "flops_kept", 1));
  const cJSON *rows = cJSON_GetObjectItemCaseSensitive(root, "rows");
  const cJSON *cal = cJSON_GetObjectItemCaseSensitive(rows, "calibration");
  if (cal) {
    sb_printf(&b, "<tr><th class=\"l\">calibration rows</th><td class=\"l\">");
    op_html_text(&b, cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(cal, "rule")));
    sb_printf(&b, "</td></tr>");
  }
  sb_printf(&b, "</table><h2>Layers</h2><div class=\"legend\"><span style=\"background:#2e7d32\"></span>kept head"
         "<span style=\"background:#e0e0e0;border:1px solid #b71c1c\"></span>removed head"
         "<span style=\"background:#1565c0\"></span>FFN width kept</div>");
  const cJSON *layers = cJSON_GetObjectItemCaseSensitive(root, "layers"), *L;
  cJSON_ArrayForEach(L, layers) {
    int l = (int)num(L, "layer", 0);
    sb_printf(&b, "<div class=\"layer\" data-layer=\"%d\"><div><h3>layer %d%s</h3>", l, l, flag(L, "dropped") ? " (dropped)" : "");
    if (cJSON_GetObjectItemCaseSensitive(L, "heads_before")) head_grid(&b, L, l);
    if (cJSON_GetObjectItemCaseSensitive(L, "ffn_before")) ffn_bar(&b, L, l);
    sb_printf(&b, "</div>");
    bool attn_gone = flag(L, "dropped") || flag(L, "attention_removed"), ffn_gone = flag(L, "dropped") || flag(L, "ffn_removed");
    histogram(&b, cJSON_GetObjectItemCaseSensitive(L, "head_scores"), cJSON_GetObjectItemCaseSensitive(L, "removed_heads"),
              attn_gone, "head", l);
    histogram(&b, cJSON_GetObjectItemCaseSensitive(L, "neuron_scores"), cJSON_GetObjectItemCaseSensitive(L, "removed_neurons"),
              ffn_gone, "neuron", l);
    sb_printf(&b, "</div>");
  }
  errors_table(&b, layers);
  const cJSON *s = cJSON_GetObjectItemCaseSensitive(root, "search");
  if (s) search_section(&b, s, rows);
  else sb_printf(&b, "<h2>Accuracy-floor search</h2><p class=\"note\">no search (no floor was given)</p>");
  op_alloc_search_html(cJSON_GetObjectItemCaseSensitive(root, "allocation_search"), &b); /* issue 12 (alloc12) */
  sb_printf(&b, "</body></html>\n");
  cJSON_Delete(root);
  return b.s;
}

char *op_prune_report_html(const op_prune_report *r, const char *note) {
  char *json = op_prune_report_json(r);
  char *html = json ? op_report_html(json, note) : NULL;
  op_free(json);
  return html;
}
