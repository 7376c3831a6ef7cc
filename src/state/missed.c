/* Changes found only by reconciliation, per tenant and hour: see missed.h. */
#include "state/missed.h"

#include "core/alloc.h"
#include "state/stats.h"

#include <stdio.h>
#include <string.h>

/* One tenant's ring: slot hour % LB_MISSED_HOURS holds that hour's count
 * while hour[slot] says which hour it is. */
typedef struct {
    char tenant[LB_TENANT_ID_MAX + 1]; /* the map's key */
    int64_t hour[LB_MISSED_HOURS];
    uint32_t count[LB_MISSED_HOURS];
    int64_t last_at; /* ms: the newest change counted by this process */
} ring;

void lb_missed_init(lb_missed *m, int64_t now_ms)
{
    lb_map_init(&m->by_tenant);
    m->started_at = now_ms;
}

void lb_missed_free(lb_missed *m)
{
    size_t pos = 0;
    ring *r;
    while ((r = lb_map_next(&m->by_tenant, &pos)) != NULL)
        lb_free(r);
    lb_map_free(&m->by_tenant);
}

static void add(lb_missed *m, const char *tenant, int64_t hour, uint32_t n)
{
    ring *r = lb_map_get(&m->by_tenant, tenant);
    if (r == NULL) {
        r = LB_NEW(ring);
        snprintf(r->tenant, sizeof(r->tenant), "%s", tenant);
        lb_map_put(&m->by_tenant, r->tenant, r);
    }
    size_t slot = (size_t)(hour % LB_MISSED_HOURS);
    if (r->hour[slot] != hour) {
        r->hour[slot] = hour;
        r->count[slot] = 0;
    }
    r->count[slot] = r->count[slot] > UINT32_MAX - n ? UINT32_MAX : r->count[slot] + n;
}

void lb_missed_load(lb_missed *m, const lb_hour_count_rec *recs, size_t n, int64_t now_ms)
{
    int64_t oldest = now_ms / LB_HOUR_MS - LB_MISSED_HOURS + 1;
    for (size_t i = 0; i < n; i++)
        if (recs[i].hour >= oldest && recs[i].count > 0)
            add(m, recs[i].tenant_id, recs[i].hour, recs[i].count);
}

void lb_missed_set(lb_missed *m, const lb_hour_count_rec *recs, size_t n, int64_t now_ms)
{
    size_t pos = 0;
    ring *r;
    while ((r = lb_map_next(&m->by_tenant, &pos)) != NULL) {
        memset(r->hour, 0, sizeof(r->hour));
        memset(r->count, 0, sizeof(r->count));
    }
    lb_missed_load(m, recs, n, now_ms);
}

void lb_missed_add(lb_missed *m, const char *tenant, int64_t now_ms)
{
    add(m, tenant, now_ms / LB_HOUR_MS, 1);
    ring *r = lb_map_get(&m->by_tenant, tenant);
    if (now_ms > r->last_at) r->last_at = now_ms;
}

uint32_t lb_missed_count(const lb_missed *m, const char *tenant, int64_t now_ms)
{
    const ring *r = lb_map_get(&m->by_tenant, tenant);
    if (r == NULL) return 0;
    int64_t now_h = now_ms / LB_HOUR_MS;
    uint64_t sum = 0;
    for (size_t i = 0; i < LB_MISSED_HOURS; i++)
        if (r->hour[i] > now_h - LB_MISSED_HOURS && r->hour[i] <= now_h) sum += r->count[i];
    return sum > UINT32_MAX ? UINT32_MAX : (uint32_t)sum;
}

int lb_missed_recent(const lb_missed *m, const char *tenant, int64_t now_ms, int64_t window_ms)
{
    if (now_ms - m->started_at <= window_ms) return 1;
    const ring *r = lb_map_get(&m->by_tenant, tenant);
    return r != NULL && now_ms - r->last_at <= window_ms;
}

void lb_missed_forget(lb_missed *m, const char *tenant)
{
    ring *r = lb_map_del(&m->by_tenant, tenant);
    lb_free(r);
}
