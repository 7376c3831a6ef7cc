/* The recent dedupe keys of Lever deliveries: see recent.h. */
#include "store/recent.h"

#include "core/alloc.h"

#include <string.h>

#define MIN_SLOTS 1024

void lb_recent_init(lb_recent *r, int64_t horizon_ms)
{
    memset(r, 0, sizeof(*r));
    r->horizon_ms = horizon_ms;
}

void lb_recent_free(lb_recent *r)
{
    lb_free(r->slots);
    r->slots = NULL;
    r->cap = r->count = 0;
}

/* FNV-1a over tenant, a NUL, key; then MurmurHash3's finaliser so the low
 * bits, which pick the slot, depend on every byte. */
uint64_t lb_recent_hash(const char *tenant, const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)tenant; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    h *= 0x100000001b3ull; /* the separator */
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h ? h : 1;
}

size_t lb_recent_find(const lb_recent *r, uint64_t hash, int64_t *seqs, size_t max)
{
    size_t n = 0;
    if (r->cap == 0)
        return 0;
    for (size_t i = (size_t)hash & (r->cap - 1);; i = (i + 1) & (r->cap - 1)) {
        const lb_recent_entry *e = &r->slots[i];
        if (e->seq == 0)
            return n;
        if (e->hash == hash) {
            if (n < max)
                seqs[n] = e->seq;
            n++;
        }
    }
}

static void put(lb_recent_entry *slots, size_t cap, const lb_recent_entry *e)
{
    size_t i = (size_t)e->hash & (cap - 1);
    while (slots[i].seq != 0)
        i = (i + 1) & (cap - 1);
    slots[i] = *e;
}

static void rebuild(lb_recent *r, int64_t now_ms)
{
    int64_t cutoff = now_ms - r->horizon_ms;
    size_t live = 0;
    for (size_t i = 0; i < r->cap; i++)
        live += r->slots[i].seq != 0 && r->slots[i].at_ms >= cutoff;
    size_t cap = MIN_SLOTS;
    while (cap < 2 * (live + 1))
        cap *= 2;
    lb_recent_entry *slots = lb_calloc(cap, sizeof(*slots));
    for (size_t i = 0; i < r->cap; i++)
        if (r->slots[i].seq != 0 && r->slots[i].at_ms >= cutoff)
            put(slots, cap, &r->slots[i]);
    lb_free(r->slots);
    r->slots = slots;
    r->cap = cap;
    r->count = live;
}

void lb_recent_add(lb_recent *r, uint64_t hash, int64_t seq, int64_t at_ms, int64_t now_ms)
{
    if (4 * (r->count + 1) > 3 * r->cap)
        rebuild(r, now_ms);
    lb_recent_entry e = {.hash = hash, .seq = seq, .at_ms = at_ms};
    put(r->slots, r->cap, &e);
    r->count++;
}

size_t lb_recent_bytes(const lb_recent *r)
{
    return r->cap * sizeof(lb_recent_entry);
}
