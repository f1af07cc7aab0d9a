/* files.h - the one place where onnx-prune touches the file system for safety's sake: opening only
 * regular files (never blocking on a FIFO or a device), whole-file reads within the memory budget,
 * and the comparison of every output path with every input and with each other (public part in
 * onnxprune.h: op_paths_*, op_stage_text). */
#ifndef OP_FILES_H
#define OP_FILES_H

#include "model/model.h"

#include <sys/types.h>

/* Opens path read-only without blocking (O_NONBLOCK) and refuses anything but a regular file:
 * a FIFO, a device, a socket or a folder is named as such. *size gets the file's length (may be NULL),
 * *dev and *ino its identity (may be NULL). `what` prefixes the message (NULL: the path itself).
 * Returns the descriptor (blocking mode restored), or -1 and sets *err. */
int op_open_regular(const char *path, const char *what, uint64_t *size, dev_t *dev, ino_t *ino, op_error *err);

/* Why a path is not a regular file ("a FIFO", "a folder", ...) from its st_mode. */
const char *op_file_kind(unsigned mode);

/* A human-readable byte count: "512 B", "3.0 GiB", "8 TiB". Returns buf. */
char *op_bytes_text(uint64_t n, char *buf, size_t cap);

/* The memory budget every allocation sized by a model or by data is checked against first
 * (default: three quarters of the memory available when first asked; op_set_max_memory). */
uint64_t op_memory_budget(void);
/* 0 when `bytes` fits the budget; else -1 and *err (OP_NOMEM): "<what>: <size> exceeds the memory budget
 * of <budget> (--max-memory)". what may be NULL. */
int op_budget_check(uint64_t bytes, const char *what, op_error *err);

/* The running total (issue 10): allocations that live together (executor tensors and intermediate values,
 * decompressed .npz arrays) take their bytes from the budget and give them back when freed, so values that
 * each fit but together do not are refused. op_budget_take: 0, or -1 and *err (OP_NOMEM): "<what>: <size>
 * exceeds the memory budget of <budget> (--max-memory)" when alone too big, else "<what>: <size> exceeds
 * what the memory budget of <budget> has left (--max-memory; <held> held by other values)". */
int op_budget_take(uint64_t bytes, const char *what, op_error *err);
void op_budget_give(uint64_t bytes);
uint64_t op_budget_held(void); /* bytes taken and not given back */
/* 0 when `bytes` fit what the running total has left now, else op_budget_take's error; nothing is held.
 * For buffers freed by callers that do not give back (--fill constants, data batches: op_tensor_clear). */
int op_budget_fits(uint64_t bytes, const char *what, op_error *err);

#endif
