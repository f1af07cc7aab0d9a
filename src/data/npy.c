/* npy.c - NumPy .npy arrays and .npz archives (a zip of .npy members, stored or deflated).
 * Format notes: .npy is "\x93NUMPY", version (1|2|3).0, a little-endian header length (u16 for v1,
 * u32 after), then a Python dict literal with 'descr', 'fortran_order' and 'shape', padded so the data
 * starts aligned; the data follows in C order. A zip member is found through the central directory
 * (end record 0x06054b50, entries 0x02014b50, local headers 0x04034b50); every member's CRC-32 is
 * checked so a corrupt archive is an error, not wrong numbers. Types: '<f4' '<f8' '<f2' '|b1' and the
 * little-endian integers; numpy has no bfloat16, so bfloat16 arrays are written as '<f4' (exact). */
#include "data/data.h"
#include "files/files.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

static const struct {
  const char *descr;
  int32_t dtype;
} DESCRS[] = {
    {"<f4", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT}, {"<f8", ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE},
    {"<i8", ONNX__TENSOR_PROTO__DATA_TYPE__INT64}, {"<i4", ONNX__TENSOR_PROTO__DATA_TYPE__INT32},
    {"|b1", ONNX__TENSOR_PROTO__DATA_TYPE__BOOL},  {"|u1", ONNX__TENSOR_PROTO__DATA_TYPE__UINT8},
    {"|i1", ONNX__TENSOR_PROTO__DATA_TYPE__INT8},  {"<i2", ONNX__TENSOR_PROTO__DATA_TYPE__INT16},
    {"<f2", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT16}, {"<u2", ONNX__TENSOR_PROTO__DATA_TYPE__UINT16},
    {"<u4", ONNX__TENSOR_PROTO__DATA_TYPE__UINT32}, {"<u8", ONNX__TENSOR_PROTO__DATA_TYPE__UINT64},
};

const char *op_dtype_descr(int32_t dtype) {
  for (size_t i = 0; i < sizeof DESCRS / sizeof *DESCRS; i++)
    if (DESCRS[i].dtype == dtype) return DESCRS[i].descr;
  return NULL;
}

/* Value of 'key' in the header dict: points just after "'key':" and its spaces. */
static const char *dict_value(const char *h, const char *key) {
  char pat[32];
  snprintf(pat, sizeof pat, "'%s':", key);
  const char *p = strstr(h, pat);
  if (!p) return NULL;
  p += strlen(pat);
  while (*p == ' ') p++;
  return p;
}

int op_npy_parse(const uint8_t *buf, size_t size, const char *origin, op_tensor *out, op_error *err) {
  memset(out, 0, sizeof *out);
  if (size < 10 || memcmp(buf, "\x93NUMPY", 6) != 0) return op_fail(err, OP_PARSE, "%s: not a .npy array", origin);
  size_t hlen, hoff;
  if (buf[6] == 1) {
    hlen = (size_t)buf[8] | (size_t)buf[9] << 8;
    hoff = 10;
  } else if ((buf[6] == 2 || buf[6] == 3) && size >= 12) {
    hlen = (size_t)buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
    hoff = 12;
  } else {
    return op_fail(err, OP_PARSE, "%s: unsupported .npy version %d", origin, buf[6]);
  }
  if (hlen > 65536 || hoff + hlen > size) return op_fail(err, OP_PARSE, "%s: truncated .npy header", origin);
  char *h = op_xmalloc(hlen + 1);
  memcpy(h, buf + hoff, hlen);
  h[hlen] = 0;
  int rc = 0;
  const char *d = dict_value(h, "descr"), *f = dict_value(h, "fortran_order"), *s = dict_value(h, "shape");
  if (!d || !f || !s || *d != '\'' || *s != '(') {
    rc = op_fail(err, OP_PARSE, "%s: malformed .npy header", origin);
    goto done;
  }
  if (strncmp(f, "False", 5) != 0) {
    rc = op_fail(err, OP_UNSUPPORTED, "%s: Fortran-ordered arrays are not supported", origin);
    goto done;
  }
  out->dtype = 0;
  for (size_t i = 0; i < sizeof DESCRS / sizeof *DESCRS; i++)
    if (strncmp(d + 1, DESCRS[i].descr, 3) == 0 && d[4] == '\'') out->dtype = DESCRS[i].dtype;
  if (!out->dtype) {
    const char *end = strchr(d + 1, '\'');
    rc = op_fail(err, OP_UNSUPPORTED, "%s: array type '%.*s' is not supported", origin, end ? (int)(end - d - 1) : 8, d + 1);
    goto done;
  }
  int64_t numel = 1;
  for (const char *p = s + 1; *p && *p != ')';) {
    while (*p == ' ' || *p == ',') p++;
    if (*p == ')') break;
    char *e;
    errno = 0;
    long long v = strtoll(p, &e, 10);
    if (e == p || errno || v < 0 || out->rank >= OP_MAX_DIMS || (v && numel > (INT64_C(1) << 40) / v)) {
      rc = op_fail(err, OP_PARSE, "%s: malformed .npy shape", origin);
      goto done;
    }
    out->dims[out->rank++] = v;
    numel *= v;
    p = e;
  }
  size_t es = op_dtype_size(out->dtype), need = (size_t)numel * es, have = size - hoff - hlen;
  if (have < need) {
    rc = op_fail(err, OP_PARSE, "%s: truncated .npy data (%zu of %zu bytes)", origin, have, need);
    goto done;
  }
  if (op_budget_take(need, origin, err)) { /* given back by whoever frees the array (op_named.budgeted) */
    rc = -1;
    goto done;
  }
  out->nbytes = need;
  out->data = malloc(need ? need : 1);
  if (!out->data) {
    op_budget_give(need);
    rc = op_fail(err, OP_NOMEM, "%s: out of memory for %zu bytes of array data", origin, need);
    goto done;
  }
  memcpy(out->data, buf + hoff + hlen, need);
done:
  free(h);
  return rc;
}

static uint32_t u16(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8; }
static uint32_t u32(const uint8_t *p) { return u16(p) | u16(p + 2) << 16; }

int op_npz_parse(const uint8_t *buf, size_t size, const char *origin, op_named_vec *out, op_error *err) {
  if (size < 22) return op_fail(err, OP_PARSE, "%s: not a .npz (zip) archive", origin);
  size_t eocd = size - 22;
  while (eocd > 0 && u32(buf + eocd) != 0x06054b50 && size - eocd < 22 + 65536) eocd--;
  if (u32(buf + eocd) != 0x06054b50) return op_fail(err, OP_PARSE, "%s: not a .npz (zip) archive", origin);
  uint32_t count = u16(buf + eocd + 10), cd = u32(buf + eocd + 16);
  if (count == 0xffff || cd == 0xffffffffu) return op_fail(err, OP_UNSUPPORTED, "%s: zip64 archives are not supported", origin);
  for (uint32_t k = 0; k < count; k++) {
    if ((size_t)cd + 46 > size || u32(buf + cd) != 0x02014b50) return op_fail(err, OP_PARSE, "%s: corrupt zip directory", origin);
    uint32_t method = u16(buf + cd + 10), crc = u32(buf + cd + 16), csize = u32(buf + cd + 20), usize = u32(buf + cd + 24);
    uint32_t nlen = u16(buf + cd + 28), xlen = u16(buf + cd + 30), clen = u16(buf + cd + 32), local = u32(buf + cd + 42);
    if ((size_t)cd + 46 + nlen > size) return op_fail(err, OP_PARSE, "%s: corrupt zip directory", origin);
    char name[256];
    snprintf(name, sizeof name, "%.*s", (int)(nlen < 255 ? nlen : 255), (const char *)buf + cd + 46);
    cd += 46 + nlen + xlen + clen;
    if ((size_t)local + 30 > size || u32(buf + local) != 0x04034b50) return op_fail(err, OP_PARSE, "%s: %s: corrupt zip entry", origin, name);
    size_t start = (size_t)local + 30 + u16(buf + local + 26) + u16(buf + local + 28);
    if (start + csize > size) return op_fail(err, OP_PARSE, "%s: %s: truncated zip entry", origin, name);
    /* the member and its parsed copy live together for a moment (op_npy_parse takes the copy's bytes); the
     * arrays decompressed so far stay in the budget's running total (with the executor's values), so a zip
     * bomb stops at the budget */
    op_error why;
    if (op_budget_take(usize, NULL, &why)) {
      char a[32], b[32];
      return op_fail(err, OP_NOMEM, "%s: %s: decompressing it (%s) brings the arrays over the memory budget of %s (--max-memory)",
                     origin, name, op_bytes_text(usize, a, sizeof a), op_bytes_text(op_memory_budget(), b, sizeof b));
    }
    uint8_t *data = malloc(usize ? usize : 1);
    if (!data) {
      op_budget_give(usize);
      return op_fail(err, OP_NOMEM, "%s: %s: out of memory for %u bytes", origin, name, usize);
    }
    if (method == 0) {
      if (csize != usize) {
        free(data), op_budget_give(usize);
        return op_fail(err, OP_PARSE, "%s: %s: corrupt zip entry", origin, name);
      }
      memcpy(data, buf + start, usize);
    } else if (method == 8) {
      z_stream z = {0};
      z.next_in = (Bytef *)(buf + start);
      z.avail_in = csize;
      z.next_out = data;
      z.avail_out = usize;
      int zr = inflateInit2(&z, -MAX_WBITS);
      if (zr == Z_OK) zr = inflate(&z, Z_FINISH);
      bool ok = zr == Z_STREAM_END && z.total_out == usize;
      inflateEnd(&z);
      if (!ok) {
        free(data), op_budget_give(usize);
        return op_fail(err, OP_PARSE, "%s: %s: corrupt deflate data", origin, name);
      }
    } else {
      free(data), op_budget_give(usize);
      return op_fail(err, OP_UNSUPPORTED, "%s: %s: zip compression method %u", origin, name, method);
    }
    if ((uint32_t)crc32(0L, data, usize) != crc) {
      free(data), op_budget_give(usize);
      return op_fail(err, OP_PARSE, "%s: %s: CRC mismatch (corrupt archive)", origin, name);
    }
    op_named t = {0};
    char where[600];
    snprintf(where, sizeof where, "%s: %s", origin, name);
    int rc = op_npy_parse(data, usize, where, &t.t, err);
    free(data);
    op_budget_give(usize); /* the member is gone; its array stays counted */
    if (rc) return -1;
    t.budgeted = t.t.nbytes;
    size_t len = strlen(name);
    if (len > 4 && strcmp(name + len - 4, ".npy") == 0) name[len - 4] = 0;
    t.name = op_xstrdup(name);
    OP_VEC_PUSH(*out, t);
  }
  return 0;
}

/* ---- writing ---- */

static void put16(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v, p[1] = (uint8_t)(v >> 8); }
static void put32(uint8_t *p, uint32_t v) { put16(p, v & 0xffff), put16(p + 2, v >> 16); }

/* .npy bytes of one array: v1 header padded to 64 bytes. */
static uint8_t *npy_bytes(const op_tensor *t, size_t *n) {
  char dict[512];
  int off = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': (", op_dtype_descr(t->dtype));
  for (int i = 0; i < t->rank; i++) off += snprintf(dict + off, sizeof dict - (size_t)off, "%lld,%s", (long long)t->dims[i], i + 1 < t->rank ? " " : "");
  off += snprintf(dict + off, sizeof dict - (size_t)off, "), }");
  size_t hlen = (size_t)off + 1, total = 10 + hlen;
  size_t pad = (64 - total % 64) % 64;
  hlen += pad;
  *n = 10 + hlen + t->nbytes;
  uint8_t *b = op_xmalloc(*n);
  memcpy(b, "\x93NUMPY\x01\x00", 8);
  put16(b + 8, (uint32_t)hlen);
  memcpy(b + 10, dict, (size_t)off);
  memset(b + 10 + off, ' ', pad);
  b[10 + hlen - 1] = '\n';
  memcpy(b + 10 + hlen, t->data, t->nbytes);
  return b;
}

/* numpy has no bfloat16: such an array is written as float32, which holds every bfloat16 value exactly. */
static op_tensor bf16_as_f32(const op_tensor *t) {
  op_tensor w = *t;
  size_t n = t->nbytes / 2;
  float *f = op_xmalloc(n ? n * sizeof(float) : 1);
  for (size_t i = 0; i < n; i++) {
    uint32_t u = (uint32_t)((const uint16_t *)t->data)[i] << 16;
    memcpy(&f[i], &u, sizeof u);
  }
  w.dtype = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  w.data = f;
  w.nbytes = n * sizeof(float);
  return w;
}

int op_npz_write(const char *path, const char *const *names, const op_tensor *arrays, size_t n, op_error *err) {
  for (size_t i = 0; i < n; i++)
    if (!op_dtype_descr(arrays[i].dtype) && arrays[i].dtype != ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16)
      return op_fail(err, OP_UNSUPPORTED, "%s: array '%s' has a type .npy cannot hold", path, names[i]);
  char tmp[PATH_MAX];
  FILE *f = op_temp_open(path, tmp, err);
  if (!f) return -1;
  uint8_t *cdir = op_xmalloc(n * (46 + 256) + 22);
  size_t cdn = 0, off = 0;
  bool ok = true;
  for (size_t i = 0; i < n && ok; i++) {
    size_t len, nlen = strlen(names[i]) + 4;
    if (nlen > 250) nlen = 250;
    char fname[256];
    snprintf(fname, sizeof fname, "%.246s.npy", names[i]);
    nlen = strlen(fname);
    bool bf16 = arrays[i].dtype == ONNX__TENSOR_PROTO__DATA_TYPE__BFLOAT16;
    op_tensor wide = bf16 ? bf16_as_f32(&arrays[i]) : arrays[i];
    uint8_t *b = npy_bytes(&wide, &len);
    if (bf16) free(wide.data);
    uint32_t crc = (uint32_t)crc32(0L, b, (uInt)len);
    uint8_t lh[30] = {0};
    put32(lh, 0x04034b50), put16(lh + 4, 20), put32(lh + 14, crc), put32(lh + 18, (uint32_t)len);
    put32(lh + 22, (uint32_t)len), put16(lh + 26, (uint32_t)nlen);
    ok = len < 0xffffffffu && fwrite(lh, 1, 30, f) == 30 && fwrite(fname, 1, nlen, f) == nlen && fwrite(b, 1, len, f) == len;
    free(b);
    uint8_t *c = cdir + cdn;
    memset(c, 0, 46);
    put32(c, 0x02014b50), put16(c + 4, 20), put16(c + 6, 20), put32(c + 16, crc), put32(c + 20, (uint32_t)len);
    put32(c + 24, (uint32_t)len), put16(c + 28, (uint32_t)nlen), put32(c + 42, (uint32_t)off);
    memcpy(c + 46, fname, nlen);
    cdn += 46 + nlen;
    off += 30 + nlen + len;
  }
  uint8_t *e = cdir + cdn;
  memset(e, 0, 22);
  put32(e, 0x06054b50), put16(e + 8, (uint32_t)n), put16(e + 10, (uint32_t)n), put32(e + 12, (uint32_t)cdn);
  put32(e + 16, (uint32_t)off);
  ok = ok && off < 0xffffffffu && fwrite(cdir, 1, cdn + 22, f) == cdn + 22;
  free(cdir);
  if (op_temp_close(f, tmp, !ok, path, err)) return -1;
  if (rename(tmp, path) != 0) {
    unlink(tmp);
    return op_fail(err, OP_IO, "%s: %s", path, strerror(errno));
  }
  return 0;
}
