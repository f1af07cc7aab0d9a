/* test_op_list.c - the README's list of claimed operators is the executor's table, name for name and
 * in its order, so the two cannot drift. Usage: test_op_list README.md */
#include "check.h"
#include "exec/exec.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: test_op_list README.md\n");
    return 2;
  }
  op_error e = {0};
  char *text = op_read_file(argv[1], NULL, &e);
  CHECK(text != NULL);
  if (!text) {
    fprintf(stderr, "%s\n", e.message);
    return check_done("op_list");
  }
  char *open = strstr(text, "<!-- operators"), *body = open ? strstr(open, "-->") : NULL;
  char *close = body ? strstr(body, "<!-- /operators -->") : NULL;
  CHECK(open && body && close);
  size_t listed = 0;
  if (close) {
    *close = 0;
    char *p = body + 3;
    for (;;) {
      while (*p && (isspace((unsigned char)*p) || *p == ',' || *p == '.')) p++;
      if (!*p) break;
      char *q = p;
      while (*q && !isspace((unsigned char)*q) && *q != ',' && *q != '.') q++;
      char save = *q;
      *q = 0;
      const char *want = op_exec_op_name(listed);
      if (!want || strcmp(p, want)) {
        fprintf(stderr, "README lists '%s' where the table has '%s'\n", p, want ? want : "(nothing)");
        check_failures++;
      }
      listed++;
      *q = save;
      p = q;
    }
  }
  CHECK_EQ_INT(listed, op_exec_op_count());
  for (size_t i = 1; i < op_exec_op_count(); i++) /* bsearch needs the table sorted */
    CHECK(strcmp(op_exec_op_name(i - 1), op_exec_op_name(i)) < 0);
  for (size_t i = 0; i < op_exec_op_count(); i++) CHECK(op_exec_find_op(op_exec_op_name(i)) != NULL);
  free(text);
  return check_done("op_list");
}
