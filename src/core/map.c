#include "core/map.h"

#include "core/alloc.h"

#include <stdint.h>
#include <string.h>

static uint64_t hash(const char *s)
{
    uint64_t h = 14695981039346656037ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

void lb_map_init(lb_map *m)
{
    memset(m, 0, sizeof(*m));
}

void lb_map_free(lb_map *m)
{
    lb_free(m->slots);
    lb_map_init(m);
}

static lb_map_slot *find(const lb_map *m, const char *key)
{
    if (m->cap == 0) return NULL;
    size_t i = (size_t)hash(key) & (m->cap - 1);
    for (;;) {
        lb_map_slot *s = &m->slots[i];
        if (s->key == NULL || strcmp(s->key, key) == 0) return s;
        i = (i + 1) & (m->cap - 1);
    }
}

void *lb_map_get(const lb_map *m, const char *key)
{
    lb_map_slot *s = find(m, key);
    return s != NULL && s->key != NULL ? s->value : NULL;
}

static void grow(lb_map *m)
{
    lb_map old = *m;
    m->cap = old.cap ? old.cap * 2 : 16;
    m->slots = lb_calloc(m->cap, sizeof(lb_map_slot));
    m->count = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i].key != NULL) lb_map_put(m, old.slots[i].key, old.slots[i].value);
    lb_free(old.slots);
}

void *lb_map_put(lb_map *m, const char *key, void *value)
{
    if ((m->count + 1) * 4 > m->cap * 3) grow(m);
    lb_map_slot *s = find(m, key);
    void *prev = s->key != NULL ? s->value : NULL;
    if (s->key == NULL) m->count++;
    s->key = key;
    s->value = value;
    return prev;
}

void *lb_map_del(lb_map *m, const char *key)
{
    lb_map_slot *s = find(m, key);
    if (s == NULL || s->key == NULL) return NULL;
    void *value = s->value;
    /* Backward-shift deletion keeps probe chains intact without tombstones. */
    size_t i = (size_t)(s - m->slots);
    size_t j = i;
    for (;;) {
        m->slots[i].key = NULL;
        for (;;) {
            j = (j + 1) & (m->cap - 1);
            if (m->slots[j].key == NULL) {
                m->count--;
                return value;
            }
            size_t k = (size_t)hash(m->slots[j].key) & (m->cap - 1);
            /* Move j back to i unless its home k lies cyclically in (i, j]. */
            if (i <= j ? (i < k && k <= j) : (i < k || k <= j)) continue;
            break;
        }
        m->slots[i] = m->slots[j];
        i = j;
    }
}

void *lb_map_next(const lb_map *m, size_t *pos)
{
    while (*pos < m->cap) {
        const lb_map_slot *sl = &m->slots[(*pos)++];
        if (sl->key != NULL) return sl->value;
    }
    return NULL;
}
