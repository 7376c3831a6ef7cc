/* Allocation. Every allocation of the process goes through these wrappers
 * (libuv, curl and yajl are routed here by lb_alloc_install); running out of
 * memory aborts with one log line, so callers never check for NULL. Live bytes
 * are counted for /metrics and the benchmarks. */
#ifndef LB_CORE_ALLOC_H
#define LB_CORE_ALLOC_H

#include <stddef.h>
#include <stdint.h>

void *lb_malloc(size_t n);
void *lb_calloc(size_t count, size_t n);
void *lb_realloc(void *p, size_t n);
void lb_free(void *p);
char *lb_strdup(const char *s);
char *lb_strndup(const char *s, size_t n);
void *lb_memdup(const void *p, size_t n);

/* Bytes currently allocated through the wrappers. */
uint64_t lb_alloc_live_bytes(void);

/* Routes libuv's allocator through the wrappers. Call before any loop exists. */
int lb_alloc_install(void);

#define LB_NEW(type) ((type *)lb_calloc(1, sizeof(type)))
#define LB_COUNTOF(a) (sizeof(a) / sizeof((a)[0]))

#endif
