/* html.h - the visual pruning report (issue 12), drawn from the JSON report. */
#ifndef OP_REPORT_HTML_H
#define OP_REPORT_HTML_H

/* One self-contained HTML page (inline SVG and CSS, no script) from a prune report's JSON; note, when
 * not NULL, is a line under the title. Returns NULL when the JSON does not parse. Release with op_free. */
char *op_report_html(const char *prune_json, const char *note);

/* Appends text escaped for HTML (element content and attribute values alike). */
struct sbuf;
void op_html_text(struct sbuf *b, const char *s);

#endif
