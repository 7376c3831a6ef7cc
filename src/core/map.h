/* A string-keyed hash map (open addressing, linear probing, FNV-1a). Keys
 * are borrowed: each key must live as long as its entry (usually it is a
 * field of the value). Not thread-safe; bounded by its owner. */
#ifndef LB_CORE_MAP_H
#define LB_CORE_MAP_H

#include <stddef.h>

typedef struct {
    const char *key;
    void *value;
} lb_map_slot;

typedef struct {
    lb_map_slot *slots;
    size_t cap; /* power of two, 0 when empty */
    size_t count;
} lb_map;

void lb_map_init(lb_map *m);
void lb_map_free(lb_map *m);
void *lb_map_get(const lb_map *m, const char *key);
/* Inserts or replaces; returns the previous value or NULL. */
void *lb_map_put(lb_map *m, const char *key, void *value);
/* Removes; returns the removed value or NULL. */
void *lb_map_del(lb_map *m, const char *key);
/* Walks the entries in no order: start with *pos = 0; returns the next
 * value, or NULL at the end. The map must not change during a walk. */
void *lb_map_next(const lb_map *m, size_t *pos);

#endif
