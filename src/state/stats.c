/* Hourly counts: a ring of LB_STATS_HOURS slots per tenant, each stamped
 * with its hour, so a slot from a day ago is reused (zeroed) when its hour
 * comes round again. The total is kept as its own ring, so deleting a
 * tenant does not change the past. */
#include "state/stats.h"

#include <string.h>

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/time.h"

#define MOD "stats"
#define TOTAL "\x01total" /* not a tenant id: those are [A-Za-z0-9._-] */

typedef struct {
    char tenant[LB_TENANT_ID_MAX + 1];
    int64_t hour[LB_STATS_HOURS]; /* 0: never used */
    uint32_t count[LB_STATS_HOURS][LB_STATS_KINDS];
    uint32_t dirty; /* bit i: slot i changed since the last write */
} ring;

struct lb_stats {
    uv_timer_t timer;
    lb_store *store;
    int64_t flush_ms;
    lb_map rings; /* tenant (TOTAL, "" for no tenant) -> ring */
    lb_store_op op;
    lb_stats_rec *recs; /* the op's rows, LB_STORE_STATS_MAX */
    int busy, closing;
    void (*close_cb)(void *data);
    void *close_data;
};

static ring *ring_get(lb_stats *st, const char *tenant, int create)
{
    ring *r = lb_map_get(&st->rings, tenant);
    if (r == NULL && create) {
        r = LB_NEW(ring);
        snprintf(r->tenant, sizeof(r->tenant), "%s", tenant);
        lb_map_put(&st->rings, r->tenant, r);
    }
    return r;
}

/* The slot for `hour`, zeroed if it held another hour. */
static size_t slot(ring *r, int64_t hour)
{
    size_t i = (size_t)(hour % LB_STATS_HOURS);
    if (r->hour[i] != hour) {
        r->hour[i] = hour;
        memset(r->count[i], 0, sizeof(r->count[i]));
    }
    return i;
}

static void bump(lb_stats *st, const char *tenant, lb_stat what, int64_t hour)
{
    ring *r = ring_get(st, tenant, 1);
    size_t i = slot(r, hour);
    if (r->count[i][what] < UINT32_MAX) r->count[i][what]++;
    r->dirty |= 1u << i;
}

void lb_stats_add(lb_stats *st, const char *tenant, lb_stat what, int64_t now_ms)
{
    if (st == NULL || (unsigned)what >= LB_STATS_KINDS) return;
    int64_t hour = now_ms / LB_HOUR_MS;
    bump(st, TOTAL, what, hour);
    bump(st, tenant ? tenant : "", what, hour);
}

void lb_stats_load(lb_stats *st, const lb_stats_rec *recs, size_t n, int64_t now_ms)
{
    int64_t first = now_ms / LB_HOUR_MS - (LB_STATS_HOURS - 1);
    for (size_t k = 0; k < n; k++) {
        const lb_stats_rec *rec = &recs[k];
        if (rec->hour < first) continue;
        ring *r = ring_get(st, rec->tenant_id, 1);
        size_t i = slot(r, rec->hour);
        memcpy(r->count[i], rec->count, sizeof(r->count[i]));
    }
}

void lb_stats_get(const lb_stats *st, const char *tenant, int64_t now_ms, lb_stats_series *out)
{
    memset(out, 0, sizeof(*out));
    int64_t last = now_ms / LB_HOUR_MS;
    const ring *r = lb_map_get(&st->rings, tenant ? tenant : TOTAL);
    for (int k = 0; k < LB_STATS_HOURS; k++) {
        int64_t hour = last - (LB_STATS_HOURS - 1) + k;
        out->hour[k] = hour;
        size_t i = (size_t)(hour % LB_STATS_HOURS);
        if (r != NULL && r->hour[i] == hour)
            memcpy(out->count[k], r->count[i], sizeof(out->count[k]));
    }
}

void lb_stats_forget(lb_stats *st, const char *tenant)
{
    if (st == NULL) return;
    ring *r = lb_map_del(&st->rings, tenant);
    lb_free(r);
}

/* ---- writing ------------------------------------------------------------------ */

static void flush(lb_stats *st);

static void closed_cb(uv_handle_t *h)
{
    lb_stats *st = h->data;
    void (*cb)(void *) = st->close_cb;
    void *data = st->close_data;
    size_t pos = 0;
    ring *r;
    while ((r = lb_map_next(&st->rings, &pos)) != NULL)
        lb_free(r);
    lb_map_free(&st->rings);
    lb_free(st->recs);
    lb_free(st);
    if (cb != NULL) cb(data);
}

/* The first n rows were not written: mark their hours again, so the next
 * write carries them. */
static void remark(lb_stats *st, size_t n)
{
    for (size_t k = 0; k < n; k++) {
        const lb_stats_rec *rec = &st->recs[k];
        ring *r = ring_get(st, rec->tenant_id, 0);
        size_t i = (size_t)(rec->hour % LB_STATS_HOURS);
        if (r != NULL && r->hour[i] == rec->hour) r->dirty |= 1u << i;
    }
}

static void written(lb_store_op *op)
{
    lb_stats *st = op->data;
    st->busy = 0;
    if (op->status != 0) {
        remark(st, op->stats_put.count);
        lb_debug(MOD, "hourly counts not written: %s", lb_strerror(op->status));
    }
    if (st->closing) uv_close((uv_handle_t *)&st->timer, closed_cb);
}

/* One op with the changed hours (at most LB_STORE_STATS_MAX; the rest wait
 * for the next tick). */
static void flush(lb_stats *st)
{
    if (st->busy || st->store == NULL) return;
    size_t n = 0, pos = 0;
    ring *r;
    while (n < LB_STORE_STATS_MAX && (r = lb_map_next(&st->rings, &pos)) != NULL) {
        for (size_t i = 0; i < LB_STATS_HOURS && n < LB_STORE_STATS_MAX; i++) {
            if (!(r->dirty & (1u << i))) continue;
            r->dirty &= ~(1u << i);
            lb_stats_rec *rec = &st->recs[n++];
            memset(rec, 0, sizeof(*rec));
            snprintf(rec->tenant_id, sizeof(rec->tenant_id), "%s", r->tenant);
            rec->hour = r->hour[i];
            memcpy(rec->count, r->count[i], sizeof(rec->count));
        }
    }
    st->op = (lb_store_op){.kind = LB_STORE_STATS_PUT, .cb = written, .data = st};
    st->op.stats_put.recs = st->recs;
    st->op.stats_put.count = n;
    st->op.stats_put.forget_before = lb_time_now_ms() / LB_HOUR_MS - 2 * LB_STATS_HOURS;
    if (lb_store_submit(st->store, &st->op) == 0)
        st->busy = 1;
    else
        remark(st, n); /* a full queue or a closing store: next time */
}

static void on_timer(uv_timer_t *t)
{
    flush(t->data);
}

int lb_stats_new(uv_loop_t *loop, lb_store *store, int64_t flush_ms, lb_stats **out)
{
    *out = NULL;
    lb_stats *st = LB_NEW(lb_stats);
    st->store = store;
    st->flush_ms = flush_ms > 0 ? flush_ms : 60 * 1000;
    lb_map_init(&st->rings);
    st->recs = lb_calloc(LB_STORE_STATS_MAX, sizeof(*st->recs));
    int rc = uv_timer_init(loop, &st->timer);
    if (rc != 0) {
        lb_map_free(&st->rings);
        lb_free(st->recs);
        lb_free(st);
        return rc;
    }
    st->timer.data = st;
    if (store != NULL)
        uv_timer_start(&st->timer, on_timer, (uint64_t)st->flush_ms, (uint64_t)st->flush_ms);
    *out = st;
    return 0;
}

void lb_stats_close(lb_stats *st, void (*cb)(void *data), void *data)
{
    st->close_cb = cb;
    st->close_data = data;
    uv_timer_stop(&st->timer);
    flush(st); /* the last minute */
    st->closing = 1;
    if (!st->busy) uv_close((uv_handle_t *)&st->timer, closed_cb);
}
