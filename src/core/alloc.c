#include "core/alloc.h"

#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

static _Atomic uint64_t live_bytes;

static void oom(size_t n)
{
    /* No allocation here: the logger may need memory we do not have. */
    fprintf(stderr,
            "{\"level\":\"error\",\"mod\":\"core\",\"msg\":\"out of memory (%zu bytes)\"}\n", n);
    abort();
}

static void count_in(void *p)
{
    if (p != NULL)
        atomic_fetch_add_explicit(&live_bytes, malloc_usable_size(p), memory_order_relaxed);
}

static void count_out(void *p)
{
    if (p != NULL)
        atomic_fetch_sub_explicit(&live_bytes, malloc_usable_size(p), memory_order_relaxed);
}

void *lb_malloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (p == NULL) oom(n);
    count_in(p);
    return p;
}

void *lb_calloc(size_t count, size_t n)
{
    void *p = calloc(count ? count : 1, n ? n : 1);
    if (p == NULL) oom(count * n);
    count_in(p);
    return p;
}

void *lb_realloc(void *p, size_t n)
{
    count_out(p);
    void *q = realloc(p, n ? n : 1);
    if (q == NULL) oom(n);
    count_in(q);
    return q;
}

void lb_free(void *p)
{
    count_out(p);
    free(p);
}

char *lb_strndup(const char *s, size_t n)
{
    char *d = lb_malloc(n + 1);
    memcpy(d, s, n);
    d[n] = '\0';
    return d;
}

char *lb_strdup(const char *s)
{
    return lb_strndup(s, strlen(s));
}

void *lb_memdup(const void *p, size_t n)
{
    void *d = lb_malloc(n);
    memcpy(d, p, n);
    return d;
}

uint64_t lb_alloc_live_bytes(void)
{
    return atomic_load_explicit(&live_bytes, memory_order_relaxed);
}

int lb_alloc_install(void)
{
    return uv_replace_allocator(lb_malloc, lb_realloc, lb_calloc, lb_free);
}
