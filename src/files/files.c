/* files.c - file safety in one place: regular files only (opened without blocking), the memory budget
 * that whole-file reads and model- or data-sized allocations are checked against, the comparison of
 * every output path with every input (by device and inode, or by resolved folder and name for an
 * output not yet there) and with each other, and text outputs staged in a temporary file so they
 * appear only when the whole command has succeeded. */
#include "files/files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- regular files ---- */

const char *op_file_kind(unsigned mode) {
  if (S_ISDIR(mode)) return "a folder";
  if (S_ISFIFO(mode)) return "a FIFO";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return S_ISREG(mode) ? "a regular file" : "not a regular file";
}

int op_open_regular(const char *path, const char *what, uint64_t *size, dev_t *dev, ino_t *ino, op_error *err) {
  if (!what) what = path;
  struct stat pre; /* a socket cannot be opened at all (ENXIO): name what it is first */
  if (stat(path, &pre) == 0 && S_ISSOCK(pre.st_mode))
    return op_fail(err, OP_IO, "%s: not a regular file (it is %s)", what, op_file_kind(pre.st_mode));
  /* O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer forever */
  int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) return op_fail(err, OP_IO, "%s: %s", what, strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int e = errno;
    close(fd);
    return op_fail(err, OP_IO, "%s: %s", what, strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    close(fd);
    return op_fail(err, OP_IO, "%s: not a regular file (it is %s)", what, op_file_kind(st.st_mode));
  }
  int fl = fcntl(fd, F_GETFL);
  if (fl >= 0) fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
  if (size) *size = (uint64_t)st.st_size;
  if (dev) *dev = st.st_dev;
  if (ino) *ino = st.st_ino;
  return fd;
}

/* ---- the memory budget ---- */

static _Atomic uint64_t budget; /* 0: not chosen yet */

char *op_bytes_text(uint64_t n, char *buf, size_t cap) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  int u = 0;
  double v = (double)n;
  while (v >= 1024 && u < 6) v /= 1024, u++;
  if (u == 0 || v == (double)(uint64_t)v) snprintf(buf, cap, "%llu %s", (unsigned long long)v, units[u]);
  else snprintf(buf, cap, "%.1f %s", v, units[u]);
  return buf;
}

/* Three quarters of MemAvailable (what can be had without swapping others out), else of physical memory. */
static uint64_t default_budget(void) {
  uint64_t avail = 0;
  FILE *f = fopen("/proc/meminfo", "r");
  if (f) {
    char line[256];
    unsigned long long kb;
    while (fgets(line, sizeof line, f))
      if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1) avail = (uint64_t)kb * 1024;
    fclose(f);
  }
  if (!avail) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) avail = (uint64_t)pages * (uint64_t)page;
  }
  if (!avail) avail = (uint64_t)8 << 30;
  return avail / 4 * 3;
}

uint64_t op_memory_budget(void) {
  uint64_t b = atomic_load(&budget);
  if (!b) {
    b = default_budget();
    atomic_store(&budget, b);
  }
  return b;
}

int op_set_max_memory(const char *text, op_error *err) {
  char *e;
  errno = 0;
  double v = text ? strtod(text, &e) : 0;
  if (!text || e == text || errno || !(v > 0)) goto bad;
  double mul = 1;
  switch (*e) {
    case 'k': case 'K': mul = 1024.0; e++; break;
    case 'm': case 'M': mul = 1024.0 * 1024; e++; break;
    case 'g': case 'G': mul = 1024.0 * 1024 * 1024; e++; break;
    case 't': case 'T': mul = 1024.0 * 1024 * 1024 * 1024; e++; break;
    default: break;
  }
  if (mul > 1 && *e == 'i') e++;
  if (*e == 'B' || *e == 'b') e++;
  if (*e || v * mul < 1 || v * mul > 1.8e19) goto bad;
  atomic_store(&budget, (uint64_t)(v * mul));
  return 0;
bad:
  return op_fail(err, OP_ARG, "--max-memory: '%s' is not a size (e.g. 512M, 8G, 1.5T)", text ? text : "");
}

uint64_t op_max_memory(void) { return op_memory_budget(); }

int op_budget_check(uint64_t bytes, const char *what, op_error *err) {
  uint64_t b = op_memory_budget();
  if (bytes <= b) return 0;
  char need[32], have[32];
  op_bytes_text(bytes, need, sizeof need);
  op_bytes_text(b, have, sizeof have);
  if (what) return op_fail(err, OP_NOMEM, "%s: %s exceeds the memory budget of %s (--max-memory)", what, need, have);
  return op_fail(err, OP_NOMEM, "%s exceeds the memory budget of %s (--max-memory)", need, have);
}

static _Atomic uint64_t held; /* bytes taken by live allocations (op_budget_take), shared by every thread */

int op_budget_take(uint64_t bytes, const char *what, op_error *err) {
  uint64_t b = op_memory_budget(), cur = atomic_load(&held);
  if (bytes > b) return op_budget_check(bytes, what, err);
  do {
    if (cur > b - bytes) {
      char need[32], have[32], other[32];
      op_bytes_text(bytes, need, sizeof need);
      op_bytes_text(b, have, sizeof have);
      op_bytes_text(cur, other, sizeof other);
      return op_fail(err, OP_NOMEM, "%s%s%s exceeds what the memory budget of %s has left (--max-memory; %s held by other values)",
                     what ? what : "", what ? ": " : "", need, have, other);
    }
  } while (!atomic_compare_exchange_weak(&held, &cur, cur + bytes));
  return 0;
}

void op_budget_give(uint64_t bytes) { atomic_fetch_sub(&held, bytes); }

uint64_t op_budget_held(void) { return atomic_load(&held); }

int op_budget_fits(uint64_t bytes, const char *what, op_error *err) {
  if (op_budget_take(bytes, what, err)) return -1;
  op_budget_give(bytes);
  return 0;
}

/* ---- inputs and outputs of one command ---- */

typedef struct path_entry {
  char *role, *path;
  char *resolved; /* realpath, or for a file not yet there: its folder's realpath + "/" + its name */
  bool exists, output;
  dev_t dev;
  ino_t ino;
} path_entry;

struct op_paths {
  OP_VEC(path_entry) v;
};

op_paths *op_paths_new(void) { return op_xcalloc(1, sizeof(op_paths)); }

void op_paths_free(op_paths *p) {
  if (!p) return;
  for (size_t i = 0; i < p->v.n; i++) free(p->v.v[i].role), free(p->v.v[i].path), free(p->v.v[i].resolved);
  free(p->v.v);
  free(p);
}

/* Resolves path; for one not yet there, its folder must exist. Returns NULL and sets *err otherwise. */
static char *resolve(const char *path, const char *role, struct stat *st, bool *exists, op_error *err) {
  char real[PATH_MAX];
  *exists = stat(path, st) == 0;
  if (*exists) {
    if (!realpath(path, real)) return op_fail_null(err, OP_IO, "%s: %s", path, strerror(errno));
    return op_xstrdup(real);
  }
  if (errno != ENOENT) return op_fail_null(err, OP_IO, "%s: %s", path, strerror(errno));
  size_t n = strlen(path);
  char *d = op_xstrdup(path), *b = op_xstrdup(path);
  const char *dir = dirname(d), *base = basename(b);
  char *out = NULL;
  if (!n || path[n - 1] == '/' || !strcmp(base, ".") || !strcmp(base, ".."))
    op_fail(err, OP_ARG, "%s: %s names a folder, not a file", path, role);
  else if (!realpath(dir, real))
    op_fail(err, OP_IO, "%s: %s: folder '%s': %s", path, role, dir, strerror(errno));
  else {
    size_t len = strlen(real) + strlen(base) + 2;
    out = op_xmalloc(len);
    snprintf(out, len, "%s%s%s", real, strcmp(real, "/") ? "/" : "", base);
  }
  free(d), free(b);
  return out;
}

static int add(op_paths *p, const char *role, const char *path, bool output, op_error *err) {
  struct stat st;
  path_entry e = {0};
  e.resolved = resolve(path, role, &st, &e.exists, err);
  if (!e.resolved) return -1;
  if (output && e.exists && !S_ISREG(st.st_mode)) {
    free(e.resolved);
    return op_fail(err, OP_ARG, "%s: %s is %s, not a file that can be replaced", path, role, op_file_kind(st.st_mode));
  }
  if (!output && !e.exists) {
    free(e.resolved);
    return op_fail(err, OP_IO, "%s: %s", path, strerror(ENOENT));
  }
  e.role = op_xstrdup(role);
  e.path = op_xstrdup(path);
  e.output = output;
  e.dev = st.st_dev;
  e.ino = st.st_ino;
  OP_VEC_PUSH(p->v, e);
  return 0;
}

/* A folder of inputs: the folder, its files and those of its sub-folders (test_data_set_*). */
static int add_folder(op_paths *p, const char *role, const char *path, int depth, op_error *err) {
  if (add(p, role, path, false, err)) return -1;
  DIR *dir = opendir(path);
  if (!dir) return 0; /* the reader will say why */
  int rc = 0;
  for (struct dirent *e; !rc && (e = readdir(dir));) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    size_t len = strlen(path) + strlen(e->d_name) + 2;
    char *sub = op_xmalloc(len);
    snprintf(sub, len, "%s/%s", path, e->d_name);
    struct stat st;
    if (stat(sub, &st) == 0) {
      if (S_ISDIR(st.st_mode) && depth > 0) rc = add_folder(p, role, sub, depth - 1, err);
      else if (S_ISREG(st.st_mode)) rc = add(p, role, sub, false, err);
    }
    free(sub);
  }
  closedir(dir);
  return rc;
}

int op_paths_input(op_paths *p, const char *role, const char *path, op_error *err) {
  struct stat st;
  if (stat(path, &st) == 0 && S_ISDIR(st.st_mode)) return add_folder(p, role, path, 1, err);
  return add(p, role, path, false, err);
}

int op_paths_model(op_paths *p, const char *role, const op_model *m, op_error *err) {
  if (m->real_path && add(p, role, m->path, false, err)) return -1; /* shown as given, compared by identity */
  for (size_t i = 0; i < m->ext.n; i++) {
    size_t len = strlen(role) + 32;
    char *r = op_xmalloc(len);
    snprintf(r, len, "%s's external data", role);
    int rc = add(p, r, m->ext.v[i].real, false, err);
    free(r);
    if (rc) return -1;
  }
  return 0;
}

int op_paths_output(op_paths *p, const char *role, const char *path, op_error *err) {
  return add(p, role, path, true, err);
}

static bool same(const path_entry *a, const path_entry *b) {
  if (a->exists && b->exists && a->dev == b->dev && a->ino == b->ino) return true;
  return strcmp(a->resolved, b->resolved) == 0;
}

int op_paths_check(const op_paths *p, op_error *err) {
  for (size_t i = 0; i < p->v.n; i++) {
    const path_entry *o = &p->v.v[i];
    if (!o->output) continue;
    for (size_t j = 0; j < p->v.n; j++) {
      const path_entry *x = &p->v.v[j];
      if (j == i || (x->output && j > i) || !same(o, x)) continue;
      if (x->output)
        return op_fail(err, OP_ARG, "%s: %s and %s name the same file ('%s')", o->path, o->role, x->role, x->path);
      return op_fail(err, OP_ARG, "%s: refusing to overwrite the input %s '%s' (%s names the same file)", o->path,
                     x->role, x->path, o->role);
    }
  }
  return 0;
}

/* ---- staged text outputs ---- */

struct op_staged {
  char *path;
  char tmp[PATH_MAX];
};

op_staged *op_stage_text(const char *path, const char *text, op_error *err) {
  op_staged *s = op_xcalloc(1, sizeof *s);
  FILE *f = op_temp_open(path, s->tmp, err);
  if (!f) {
    free(s);
    return NULL;
  }
  size_t n = strlen(text);
  bool failed = fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF;
  if (op_temp_close(f, s->tmp, failed, path, err)) {
    free(s);
    return NULL;
  }
  s->path = op_xstrdup(path);
  return s;
}

int op_staged_commit(op_staged *s, op_error *err) {
  if (!s) return 0;
  int rc = 0;
  if (rename(s->tmp, s->path) != 0) {
    rc = op_fail(err, OP_IO, "%s: %s", s->path, strerror(errno));
    unlink(s->tmp);
  }
  free(s->path);
  free(s);
  return rc;
}

void op_staged_abort(op_staged *s) {
  if (!s) return;
  unlink(s->tmp);
  free(s->path);
  free(s);
}
