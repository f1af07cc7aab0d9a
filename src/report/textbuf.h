/* textbuf.h - a growable text buffer the report renderers (text tables, HTML) print into. */
#ifndef OP_TEXTBUF_H
#define OP_TEXTBUF_H

#include <stddef.h>

typedef struct sbuf {
  char *s;
  size_t n, cap;
} sbuf;

/* Appends printf-formatted text, growing the buffer as needed (b->s stays NUL-terminated). */
__attribute__((format(printf, 2, 3))) void sb_printf(sbuf *b, const char *fmt, ...);

#endif
