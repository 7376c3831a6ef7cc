/* A growable byte buffer with a hard maximum (curl's dynbuf idea). Appends
 * past the maximum fail with LB_ETOOBIG and leave the buffer as it was; a
 * buffer over a caller's fixed array never allocates. The content is always
 * NUL-terminated. Owner: whoever embeds it; lb_strbuf_free releases it. */
#ifndef LB_CORE_STRBUF_H
#define LB_CORE_STRBUF_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data;
    size_t len;
    size_t cap; /* allocated bytes, NUL included */
    size_t max; /* most content bytes ever allowed */
    unsigned fixed : 1;
    unsigned failed : 1; /* an append was refused: content is incomplete */
} lb_strbuf;

void lb_strbuf_init(lb_strbuf *b, size_t max);
/* Uses mem[0..size) as storage, never grows (max = size - 1). */
void lb_strbuf_init_fixed(lb_strbuf *b, char *mem, size_t size);
void lb_strbuf_free(lb_strbuf *b);
void lb_strbuf_reset(lb_strbuf *b);
/* Hands the allocated content to the caller (who lb_free()s it) and resets. */
char *lb_strbuf_steal(lb_strbuf *b, size_t *len);

int lb_strbuf_add(lb_strbuf *b, const void *p, size_t n);
int lb_strbuf_cat(lb_strbuf *b, const char *s);
int lb_strbuf_printf(lb_strbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends s[0..n) as a quoted JSON string, escaping what JSON requires. */
int lb_strbuf_json_str(lb_strbuf *b, const char *s, size_t n);

#endif
