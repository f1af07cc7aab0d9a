/* json.h - the last step of every JSON report: cJSON tree to an owned string. */
#ifndef OP_REPORT_JSON_H
#define OP_REPORT_JSON_H

#include <cjson/cJSON.h>

/* Prints root, deletes it, and returns the text (release with op_free). */
char *op_json_finish(cJSON *root);

#endif
