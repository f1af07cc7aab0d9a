/* test_dataset.c - the batch axis and ONNX test data sets through the public data API: samples are
 * counted and cut along each input's own batch axis (past state [2, batch, ...] on axis 1, a
 * sequence-first src on axis 1), --batch-axis specs, and test data sets as complete runs. */
#include "check.h"
#include "data/data.h"
#include "files/files.h"
#include "onnxprune.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct fixture {
  op_model *m;
  op_session *s;
  op_dataset *d;
} fixture;

static int open_fixture(fixture *f, const char *dir, const char *name, const char *data) {
  char path[4096];
  op_error err;
  memset(f, 0, sizeof *f);
  snprintf(path, sizeof path, "%s/%s/model.onnx", dir, name);
  f->m = op_model_load(path, &err);
  f->s = f->m ? op_session_new(f->m, &err) : NULL;
  snprintf(path, sizeof path, "%s/%s%s%s", dir, name, data[0] ? "/" : "", data);
  f->d = f->s ? op_dataset_open(path, &err) : NULL;
  CHECK(f->d != NULL);
  return f->d ? 0 : -1;
}

static void close_fixture(fixture *f) {
  op_dataset_free(f->d);
  op_session_free(f->s);
  op_model_free(f->m);
}

/* past_0 [2, batch_size, 4, past_seq_len, 8]: samples 1 and 2 of 5 are past[:, 1:3] */
static void past_state(const char *dir) {
  fixture f;
  if (open_fixture(&f, dir, "export_past_state", "stacked.npz")) return close_fixture(&f);
  op_error err;
  CHECK_EQ_INT(op_dataset_samples(f.d, f.s, &err), 5);
  int in_axes[3], out_axes[2];
  CHECK(op_dataset_axes(f.d, f.s, in_axes, out_axes, &err) == 0);
  CHECK(in_axes[0] == 0 && in_axes[1] == 0 && in_axes[2] == 1); /* input_ids, attention_mask, past_0 */
  CHECK(out_axes[0] == 0 && out_axes[1] == 1);                    /* logits, present_0 */
  op_tensor in[3];
  CHECK(op_dataset_batch(f.d, f.s, 1, 2, in, &err) == 0);
  const op_tensor *past = op_dataset_array(f.d, "past_0");
  CHECK(in[2].rank == 5 && in[2].dims[0] == 2 && in[2].dims[1] == 2 && in[2].dims[3] == 3);
  const float *got = in[2].data, *all = past->data;
  size_t inner = 4 * 3 * 8, same = 0;
  for (size_t k = 0; k < 2; k++) /* the k/v pair on axis 0 */
    for (size_t b = 0; b < 2; b++)
      same += memcmp(got + (k * 2 + b) * inner, all + (k * 5 + 1 + b) * inner, inner * sizeof(float)) == 0;
  CHECK_EQ_INT(same, 4);
  CHECK(in[1].rank == 2 && in[1].dims[0] == 2 && in[1].dims[1] == 7);
  for (int i = 0; i < 3; i++) op_tensor_clear(&in[i]);
  /* a short last batch: samples [4, 5) */
  CHECK(op_dataset_batch(f.d, f.s, 4, 2, in, &err) == 0);
  CHECK(in[0].dims[0] == 1 && in[2].dims[1] == 1);
  for (int i = 0; i < 3; i++) op_tensor_clear(&in[i]);
  close_fixture(&f);
}

static void seq_first_and_options(const char *dir) {
  fixture f;
  if (open_fixture(&f, dir, "export_seqfirst_encoder", "stacked.npz")) return close_fixture(&f);
  op_error err;
  CHECK_EQ_INT(op_dataset_samples(f.d, f.s, &err), 8); /* src [5, 8, 32]: the batch is axis 1 */
  op_tensor in[1];
  CHECK(op_dataset_batch(f.d, f.s, 0, 3, in, &err) == 0);
  CHECK(in[0].dims[0] == 5 && in[0].dims[1] == 3 && in[0].dims[2] == 32);
  op_tensor_clear(&in[0]);
  /* --batch-axis overrides the names; bad specs are refused */
  CHECK(op_dataset_batch_axis(f.d, "src=0", &err) == 0);
  CHECK_EQ_INT(op_dataset_samples(f.d, f.s, &err), 5);
  CHECK(op_dataset_batch_axis(f.d, "src=none", &err) == 0);
  CHECK_EQ_INT(op_dataset_samples(f.d, f.s, &err), 1); /* no input has a batch axis: one run */
  CHECK(op_dataset_batch_axis(f.d, "src=7", &err) == 0);
  CHECK(op_dataset_samples(f.d, f.s, &err) == -1);
  CHECK_CONTAINS(err.message, "--batch-axis src=7: input 'src' has rank 3");
  const char *bad[] = {"x", "=1", "src=", "src=-1", "1x", "none", "99"};
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CHECK(op_dataset_batch_axis(f.d, bad[i], &err) == -1);
    CHECK_CONTAINS(err.message, "is not N or NAME=N");
  }
  close_fixture(&f);
}

/* a folder with test_data_set_0: one set, one complete run, never batched */
static void test_data_sets(const char *dir) {
  fixture f;
  if (open_fixture(&f, dir, "export_past_state", "")) return close_fixture(&f);
  op_error err;
  CHECK_EQ_INT(op_dataset_set_count(f.d), 1);
  CHECK(strcmp(op_dataset_set_name(f.d, 0), "test_data_set_0") == 0);
  CHECK(op_dataset_set_name(f.d, 1) == NULL);
  CHECK_EQ_INT(op_dataset_samples(f.d, f.s, &err), 1);
  op_tensor in[3];
  CHECK(op_dataset_batch(f.d, f.s, 0, 1, in, &err) == 0);
  CHECK(in[2].dims[0] == 2 && in[2].dims[1] == 2); /* the whole set */
  for (int i = 0; i < 3; i++) op_tensor_clear(&in[i]);
  CHECK(op_dataset_batch(f.d, f.s, 0, 2, in, &err) == -1);
  CHECK_CONTAINS(err.message, "sets cannot be batched");
  close_fixture(&f);
}

static void set_budget(uint64_t bytes) {
  char text[32];
  op_error err;
  snprintf(text, sizeof text, "%llu", (unsigned long long)bytes);
  CHECK(op_set_max_memory(text, &err) == 0);
}

/* A plain .npy array stays in the budget's running total beside the session's values for the dataset's
 * life; batches are checked against what is left; everything is given back when freed. */
static void budget_running_total(const char *dir) {
  char tmp[] = "/tmp/test_dataset_budget_XXXXXX", npy[64];
  CHECK(mkdtemp(tmp) != NULL);
  snprintf(npy, sizeof npy, "%s/src.npy", tmp);
  FILE *fp = fopen(npy, "wb"); /* src [5, 8, 32] float32: 5120 bytes of data */
  CHECK(fp != NULL);
  if (!fp) return;
  char header[128];
  int hl = snprintf(header, sizeof header, "{'descr': '<f4', 'fortran_order': False, 'shape': (5, 8, 32), }");
  while ((10 + hl + 1) % 64) header[hl++] = ' ';
  header[hl++] = '\n';
  fwrite("\x93NUMPY\x01\x00", 1, 8, fp);
  fputc(hl & 0xff, fp), fputc(hl >> 8, fp);
  fwrite(header, 1, (size_t)hl, fp);
  float zero[5 * 8 * 32] = {0};
  fwrite(zero, sizeof zero, 1, fp);
  fclose(fp);

  uint64_t held0 = op_budget_held(), budget0 = op_max_memory();
  char path[4096];
  op_error err;
  snprintf(path, sizeof path, "%s/export_seqfirst_encoder/model.onnx", dir);
  op_model *m = op_model_load(path, &err);
  op_session *s = m ? op_session_new(m, &err) : NULL;
  CHECK(s != NULL);
  if (s) {
    uint64_t with_session = op_budget_held();
    /* the file read whole (5,249 bytes with its NUL) and the array parsed from it (5,120) live together
     * for a moment, then the array alone: both fit beside the session, with 1000 bytes to spare */
    set_budget(with_session + 5249 + 5120 + 1000);
    op_dataset *d = op_dataset_open(npy, &err);
    CHECK(d != NULL);
    CHECK_EQ_INT(op_budget_held(), with_session + 5120);
    op_dataset *again = op_dataset_open(npy, &err); /* fits alone, not beside the first (its array is refused) */
    CHECK(again == NULL);
    CHECK_CONTAINS(err.message, "src.npy: 5 KiB exceeds what the memory budget of");
    CHECK_CONTAINS(err.message, "has left (--max-memory;");
    CHECK_EQ_INT(op_budget_held(), with_session + 5120); /* the refused read gave its bytes back */
    op_dataset_free(again);
    set_budget(with_session + 5120 + 1000); /* 1000 bytes left beside the array */
    op_tensor in[1];
    if (d) {
      CHECK(op_dataset_batch(d, s, 0, 1, in, &err) == 0); /* 640 bytes fit */
      op_tensor_clear(&in[0]);
      CHECK(op_dataset_batch(d, s, 0, 3, in, &err) == -1); /* 1920 bytes do not */
      CHECK_CONTAINS(err.message, "input 'src': 1.9 KiB exceeds what the memory budget of");
    }
    op_dataset_free(d);
    set_budget(budget0);
  }
  op_session_free(s);
  op_model_free(m);
  CHECK_EQ_INT(op_budget_held(), held0); /* every byte taken was given back */
  unlink(npy);
  rmdir(tmp);
}

int main(int argc, char **argv) {
  if (argc < 2) return fprintf(stderr, "usage: test_dataset FIXTURES\n"), 2;
  past_state(argv[1]);
  seq_first_and_options(argv[1]);
  test_data_sets(argv[1]);
  budget_running_total(argv[1]);
  return check_done("dataset");
}
