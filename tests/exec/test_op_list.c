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
  size_t listed = 0, n_ops;
  const op_op *ops = op_exec_ops(&n_ops);
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
      const char *want = listed < n_ops ? ops[listed].name : NULL;
      if (!want || strcmp(p, want)) {
        fprintf(stderr, "README lists '%s' where the table has '%s'\n", p, want ? want : "(nothing)");
        check_failures++;
      }
      listed++;
      *q = save;
      p = q;
    }
  }
  CHECK_EQ_INT(listed, n_ops);
  for (size_t i = 1; i < n_ops; i++) /* bsearch needs the table sorted */
    CHECK(strcmp(ops[i - 1].name, ops[i].name) < 0);
  for (size_t i = 0; i < n_ops; i++) CHECK(op_exec_find_op(ops[i].name) == &ops[i]);
  op_read_file_free(text);
  return check_done("op_list");
}
