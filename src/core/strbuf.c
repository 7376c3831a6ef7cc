#include "core/strbuf.h"

#include "core/alloc.h"
#include "core/error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static char empty[1];

void lb_strbuf_init(lb_strbuf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->data = empty;
    b->max = max;
}

void lb_strbuf_init_fixed(lb_strbuf *b, char *mem, size_t size)
{
    memset(b, 0, sizeof(*b));
    b->data = mem;
    b->data[0] = '\0';
    b->cap = size;
    b->max = size - 1;
    b->fixed = 1;
}

void lb_strbuf_free(lb_strbuf *b)
{
    if (!b->fixed && b->data != empty) lb_free(b->data);
    b->data = b->fixed ? b->data : empty;
    b->len = 0;
    if (!b->fixed) b->cap = 0;
    b->failed = 0;
}

void lb_strbuf_reset(lb_strbuf *b)
{
    b->len = 0;
    b->failed = 0;
    if (b->data != empty) b->data[0] = '\0';
}

char *lb_strbuf_steal(lb_strbuf *b, size_t *len)
{
    char *p = b->data == empty || b->fixed ? lb_strndup(b->data, b->len) : b->data;
    if (len != NULL) *len = b->len;
    if (!b->fixed) {
        b->data = empty;
        b->cap = 0;
    }
    b->len = 0;
    b->failed = 0;
    return p;
}

static int reserve(lb_strbuf *b, size_t n)
{
    if (n > b->max - b->len) {
        b->failed = 1;
        return LB_ETOOBIG;
    }
    size_t need = b->len + n + 1;
    if (need <= b->cap) return 0;
    if (b->fixed) {
        b->failed = 1;
        return LB_ETOOBIG;
    }
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > b->max + 1) cap = b->max + 1;
    b->data = b->data == empty ? lb_malloc(cap) : lb_realloc(b->data, cap);
    b->cap = cap;
    return 0;
}

int lb_strbuf_add(lb_strbuf *b, const void *p, size_t n)
{
    int rc = reserve(b, n);
    if (rc != 0) return rc;
    if (n > 0) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int lb_strbuf_cat(lb_strbuf *b, const char *s)
{
    return lb_strbuf_add(b, s, strlen(s));
}

int lb_strbuf_printf(lb_strbuf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0) return LB_EINVAL;
    if ((size_t)n < sizeof(small)) return lb_strbuf_add(b, small, (size_t)n);
    int rc = reserve(b, (size_t)n);
    if (rc != 0) return rc;
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int lb_strbuf_json_str(lb_strbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t start = b->len;
    int rc = lb_strbuf_add(b, "\"", 1);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        switch (c) {
        case '"':
            rc = lb_strbuf_add(b, "\\\"", 2);
            break;
        case '\\':
            rc = lb_strbuf_add(b, "\\\\", 2);
            break;
        case '\n':
            rc = lb_strbuf_add(b, "\\n", 2);
            break;
        case '\r':
            rc = lb_strbuf_add(b, "\\r", 2);
            break;
        case '\t':
            rc = lb_strbuf_add(b, "\\t", 2);
            break;
        default:
            if (c < 0x20 || c == 0x7f) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                rc = lb_strbuf_add(b, esc, 6);
            } else {
                size_t j = i;
                while (j < n && (unsigned char)s[j] >= 0x20 && s[j] != '"' && s[j] != '\\' &&
                       s[j] != 0x7f)
                    j++;
                rc = lb_strbuf_add(b, s + i, j - i);
                i = j - 1;
            }
        }
    }
    if (rc == 0) rc = lb_strbuf_add(b, "\"", 1);
    if (rc != 0) { /* all or nothing */
        b->len = start;
        b->data[start] = '\0';
    }
    return rc;
}
