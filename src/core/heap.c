#include "core/heap.h"

#include "core/alloc.h"

#include <string.h>

void lb_heap_init(lb_heap *h)
{
    memset(h, 0, sizeof(*h));
}

void lb_heap_free(lb_heap *h)
{
    for (size_t i = 0; i < h->count; i++)
        h->items[i]->idx = 0;
    lb_free(h->items);
    lb_heap_init(h);
}

static void place(lb_heap *h, size_t i, lb_heap_node *n)
{
    h->items[i] = n;
    n->idx = i + 1;
}

static void sift_up(lb_heap *h, size_t i)
{
    lb_heap_node *n = h->items[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (h->items[parent]->key <= n->key) break;
        place(h, i, h->items[parent]);
        i = parent;
    }
    place(h, i, n);
}

static void sift_down(lb_heap *h, size_t i)
{
    lb_heap_node *n = h->items[i];
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        int64_t mk = n->key;
        if (l < h->count && h->items[l]->key < mk) {
            m = l;
            mk = h->items[l]->key;
        }
        if (r < h->count && h->items[r]->key < mk) m = r;
        if (m == i) break;
        place(h, i, h->items[m]);
        i = m;
    }
    place(h, i, n);
}

void lb_heap_push(lb_heap *h, lb_heap_node *n)
{
    if (h->count == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 64;
        h->items = lb_realloc(h->items, h->cap * sizeof(*h->items));
    }
    place(h, h->count++, n);
    sift_up(h, h->count - 1);
}

lb_heap_node *lb_heap_min(const lb_heap *h)
{
    return h->count ? h->items[0] : NULL;
}

void lb_heap_remove(lb_heap *h, lb_heap_node *n)
{
    if (n->idx == 0) return;
    size_t i = n->idx - 1;
    n->idx = 0;
    h->count--;
    if (i == h->count) return;
    place(h, i, h->items[h->count]);
    if (i > 0 && h->items[(i - 1) / 2]->key > h->items[i]->key)
        sift_up(h, i);
    else
        sift_down(h, i);
}

lb_heap_node *lb_heap_pop(lb_heap *h)
{
    lb_heap_node *n = lb_heap_min(h);
    if (n != NULL) lb_heap_remove(h, n);
    return n;
}
