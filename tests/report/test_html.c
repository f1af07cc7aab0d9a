/* test_html.c - the HTML report (src/report/html.c) renders what a report holds and only that:
 * reconstruction errors where a layer has them (a number, or one per block) and "not measured" where
 * not, one head cell per head, names escaped, no script. */
#include "check.h"
#include "report/html.h"

#include "onnxprune.h"

#include <stdlib.h>

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle)) n++;
  return n;
}

int main(void) {
  const char *json =
      "{\"model\": \"a<b>&.onnx\", \"importance_metric\": \"l2\", \"parameters\": {\"before\": 10, \"after\": 5},"
      " \"layers\": ["
      "  {\"layer\": 0, \"heads_before\": 4, \"heads_after\": 3, \"removed_heads\": [2], \"ffn_before\": 8, \"ffn_after\": 4,"
      "   \"removed_neurons\": [0, 1, 2, 3], \"head_scores\": [1, 2, 3, 4], \"neuron_scores\": [1, 2, 3, 4, 5, 6, 7, 8],"
      "   \"predicted_error\": {\"attention\": 0.125, \"ffn\": 0.25}, \"measured_error\": {\"attention\": 0.5}},"
      "  {\"layer\": 1, \"heads_before\": 2, \"heads_after\": 0, \"attention_removed\": true, \"removed_heads\": [],"
      "   \"ffn_before\": 8, \"ffn_after\": 8, \"removed_neurons\": [], \"predicted_error\": 0.75}],"
      " \"search\": {\"floor\": \"top-1 agreement >= 0.9\", \"metric\": \"agreement\", \"threshold\": 0.9,"
      "  \"kept_target\": 0.5, \"curve\": [{\"target\": 0.25, \"flops_kept\": 0.25, \"params_kept\": 0.2, \"agreement\": 0.8,"
      "  \"cosine\": 0.9, \"pass\": false}, {\"target\": 0.5, \"flops_kept\": 0.5, \"params_kept\": 0.45, \"agreement\": 0.95,"
      "  \"cosine\": 0.99, \"pass\": true}]}}";
  char *h = op_report_html(json, NULL);
  CHECK(h != NULL);
  if (!h) return check_done("html");
  CHECK_EQ_INT(count(h, "class=\"head kept\""), 3);
  CHECK_EQ_INT(count(h, "class=\"head removed\""), 3); /* one in layer 0, both of layer 1's removed attention */
  CHECK_CONTAINS(h, "<td>0.125</td>");
  CHECK_CONTAINS(h, "<td>0.25</td>");
  CHECK_CONTAINS(h, "<td>0.5</td>");
  CHECK_CONTAINS(h, "<td>0.75</td>");
  CHECK_EQ_INT(count(h, "not measured"), 3); /* layer 0: ffn measured; layer 1: both blocks measured */
  CHECK_EQ_INT(count(h, "<td>0.75</td>"), 2); /* one number for the layer: both its blocks */
  CHECK_CONTAINS(h, "a&lt;b&gt;&amp;.onnx");
  CHECK(!strstr(h, "a<b>"));
  CHECK(!strstr(h, "<script"));
  CHECK_EQ_INT(count(h, "class=\"point "), 2);
  CHECK_CONTAINS(h, "class=\"kept-point\"");
  CHECK_CONTAINS(h, "floor 0.9");
  CHECK(op_report_html("{not json", NULL) == NULL);
  op_free(h);
  return check_done("html");
}
