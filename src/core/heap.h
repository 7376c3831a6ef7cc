/* A binary min-heap of intrusive nodes keyed by a 64-bit time, with removal
 * of any node (each node knows its index). The owner bounds its size. */
#ifndef LB_CORE_HEAP_H
#define LB_CORE_HEAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t key;
    size_t idx; /* position + 1 while in a heap, 0 when not */
} lb_heap_node;

typedef struct {
    lb_heap_node **items;
    size_t count;
    size_t cap;
} lb_heap;

void lb_heap_init(lb_heap *h);
void lb_heap_free(lb_heap *h);
void lb_heap_push(lb_heap *h, lb_heap_node *n);
lb_heap_node *lb_heap_min(const lb_heap *h);
lb_heap_node *lb_heap_pop(lb_heap *h);
/* Removes n if it is in the heap. */
void lb_heap_remove(lb_heap *h, lb_heap_node *n);
static inline int lb_heap_contains(const lb_heap_node *n)
{
    return n->idx != 0;
}

/* The struct that embeds the node. */
#define LB_CONTAINER_OF(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

#endif
