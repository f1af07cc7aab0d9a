/* test_files.c - file safety: regular files only (never blocking on a FIFO), outputs compared with
 * inputs and with each other by identity, staged text outputs, and the memory budget's parsing and
 * message. */
#include "check.h"
#include "files/files.h"

#include <fcntl.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static void touch(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  if (f) fputs(text, f), fclose(f);
}

static bool exists(const char *path) { return access(path, F_OK) == 0; }

int main(int argc, char **argv) {
  if (argc < 2) return 2;
  char dir[4096], a[4200], b[4200], fifo[4200], link_[4200], missing[4200], sub[4200];
  snprintf(dir, sizeof dir, "%s/test_files_XXXXXX", argv[1]);
  CHECK(mkdtemp(dir) != NULL);
  snprintf(a, sizeof a, "%s/a.onnx", dir);
  snprintf(b, sizeof b, "%s/b.json", dir);
  snprintf(fifo, sizeof fifo, "%s/fifo", dir);
  snprintf(link_, sizeof link_, "%s/hard.onnx", dir);
  snprintf(missing, sizeof missing, "%s/no_such/x.onnx", dir);
  snprintf(sub, sizeof sub, "%s/./a.onnx", dir);
  touch(a, "model");
  CHECK(mkfifo(fifo, 0600) == 0);
  CHECK(link(a, link_) == 0);
  op_error err = {0};

  /* regular files only, without blocking */
  uint64_t size = 0;
  int fd = op_open_regular(a, NULL, &size, NULL, NULL, &err);
  CHECK(fd >= 0 && size == 5);
  if (fd >= 0) {
    CHECK((fcntl(fd, F_GETFL) & O_NONBLOCK) == 0);
    close(fd);
  }
  CHECK(op_open_regular(fifo, NULL, NULL, NULL, NULL, &err) == -1);
  CHECK_CONTAINS(err.message, "not a regular file (it is a FIFO)");
  CHECK(op_open_regular(dir, "the config", NULL, NULL, NULL, &err) == -1);
  CHECK_CONTAINS(err.message, "the config: not a regular file (it is a folder)");
  CHECK(op_open_regular("/dev/zero", NULL, NULL, NULL, NULL, &err) == -1);
  CHECK_CONTAINS(err.message, "a character device");

  /* outputs against inputs: another path, a hard link, each other, special files, missing folders */
  struct {
    const char *out, *out2, *want;
  } cases[] = {
      {sub, NULL, "refusing to overwrite the input model"},
      {link_, NULL, "refusing to overwrite the input model"},
      {b, b, "--report and -o name the same file"},
      {fifo, NULL, "is a FIFO, not a file that can be replaced"},
      {dir, NULL, "is a folder, not a file that can be replaced"},
      {missing, NULL, "No such file"},
      {b, NULL, NULL},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    op_paths *p = op_paths_new();
    err.message[0] = 0;
    int rc = op_paths_input(p, "model", a, &err);
    if (!rc) rc = op_paths_output(p, "-o", cases[i].out, &err);
    if (!rc && cases[i].out2) rc = op_paths_output(p, "--report", cases[i].out2, &err);
    if (!rc) rc = op_paths_check(p, &err);
    if (cases[i].want) {
      CHECK(rc == -1);
      CHECK_CONTAINS(err.message, cases[i].want);
    } else {
      CHECK(rc == 0);
    }
    op_paths_free(p);
  }
  op_paths_free(NULL);

  /* a staged text appears only on commit, and abort leaves nothing (not even the temporary file) */
  touch(b, "precious");
  op_staged *s = op_stage_text(b, "{}", &err);
  CHECK(s != NULL);
  FILE *f = fopen(b, "r");
  char buf[32] = "";
  if (f) {
    CHECK(fgets(buf, sizeof buf, f) != NULL);
    fclose(f);
  }
  CHECK(strcmp(buf, "precious") == 0);
  op_staged_abort(s);
  f = fopen(b, "r");
  if (f) {
    CHECK(fgets(buf, sizeof buf, f) != NULL);
    fclose(f);
  }
  CHECK(strcmp(buf, "precious") == 0);
  s = op_stage_text(b, "{}", &err);
  CHECK(op_staged_commit(s, &err) == 0);
  f = fopen(b, "r");
  if (f) {
    CHECK(fgets(buf, sizeof buf, f) != NULL);
    fclose(f);
  }
  CHECK(strcmp(buf, "{}\n") == 0);
  CHECK(op_stage_text(missing, "{}", &err) == NULL);
  CHECK(!exists(missing));

  /* the memory budget */
  CHECK(op_max_memory() > 0);
  CHECK(op_set_max_memory("1.5G", &err) == 0);
  CHECK_EQ_INT(op_max_memory(), 1536ull << 20);
  CHECK(op_set_max_memory("512MiB", &err) == 0);
  CHECK_EQ_INT(op_max_memory(), 512ull << 20);
  CHECK(op_set_max_memory("lots", &err) == -1);
  CHECK(op_set_max_memory("-1G", &err) == -1);
  CHECK(op_set_max_memory("1Q", &err) == -1);
  CHECK(op_budget_check(512ull << 20, NULL, &err) == 0);
  CHECK(op_budget_check((512ull << 20) + 1, "x.npy", &err) == -1);
  CHECK(err.code == OP_NOMEM);
  CHECK_CONTAINS(err.message, "x.npy: 512.0 MiB exceeds the memory budget of 512 MiB (--max-memory)");
  CHECK(op_budget_check(UINT64_MAX, NULL, &err) == -1);
  CHECK_CONTAINS(err.message, "16 EiB exceeds");

  unlink(a), unlink(b), unlink(fifo), unlink(link_);
  rmdir(dir);
  return check_done("files");
}
