#include "state/tenants.h"

#include "core/alloc.h"
#include "core/error.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void lb_tenants_init(lb_tenants *ts)
{
    memset(ts, 0, sizeof(*ts));
    lb_map_init(&ts->by_id);
}

void lb_tenants_free(lb_tenants *ts)
{
    for (size_t i = 0; i < ts->count; i++) {
        lb_free(ts->order[i]->name);
        lb_free(ts->order[i]->failure_tag);
        lb_free(ts->order[i]);
    }
    lb_free(ts->order);
    lb_map_free(&ts->by_id);
    memset(ts, 0, sizeof(*ts));
}

lb_tenant *lb_tenants_get(const lb_tenants *ts, const char *id)
{
    return lb_map_get(&ts->by_id, id);
}

static int cmp_key(int64_t ca, const char *ida, int64_t cb, const char *idb)
{
    if (ca != cb) return ca < cb ? -1 : 1;
    return strcmp(ida, idb);
}

/* First index whose key is greater than (created_at, id). */
static size_t upper_bound(const lb_tenants *ts, int64_t created_at, const char *id)
{
    size_t lo = 0, hi = ts->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const lb_tenant *t = ts->order[mid];
        if (cmp_key(t->created_at, t->id, created_at, id) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

static void reindex(lb_tenants *ts, size_t from)
{
    for (size_t i = from; i < ts->count; i++)
        ts->order[i]->pos = i;
}

static void order_remove(lb_tenants *ts, lb_tenant *t)
{
    size_t i = t->pos;
    memmove(&ts->order[i], &ts->order[i + 1], (ts->count - i - 1) * sizeof(*ts->order));
    ts->count--;
    reindex(ts, i);
}

static void order_insert(lb_tenants *ts, lb_tenant *t)
{
    if (ts->count == ts->cap) {
        ts->cap = ts->cap ? ts->cap * 2 : 64;
        ts->order = lb_realloc(ts->order, ts->cap * sizeof(*ts->order));
    }
    size_t i = upper_bound(ts, t->created_at, t->id);
    memmove(&ts->order[i + 1], &ts->order[i], (ts->count - i) * sizeof(*ts->order));
    ts->order[i] = t;
    ts->count++;
    reindex(ts, i);
}

lb_tenant *lb_tenants_apply(lb_tenants *ts, const lb_tenant_rec *rec)
{
    lb_tenant *t = lb_map_get(&ts->by_id, rec->id);
    if (t == NULL) {
        t = LB_NEW(lb_tenant);
        memcpy(t->id, rec->id, sizeof(t->id));
        t->created_at = rec->created_at;
        lb_map_put(&ts->by_id, t->id, t);
        order_insert(ts, t);
    } else if (t->created_at != rec->created_at) {
        order_remove(ts, t);
        t->created_at = rec->created_at;
        order_insert(ts, t);
    }
    lb_free(t->name);
    t->name = lb_strdup(rec->name ? rec->name : "");
    lb_free(t->failure_tag);
    t->failure_tag = rec->failure_tag ? lb_strdup(rec->failure_tag) : NULL;
    t->api_addon = rec->api_addon;
    t->lever_rate = rec->lever_rate;
    t->lever_burst = rec->lever_burst;
    t->updated_at = rec->updated_at;
    return t;
}

void lb_tenants_remove(lb_tenants *ts, const char *id)
{
    lb_tenant *t = lb_map_del(&ts->by_id, id);
    if (t == NULL) return;
    order_remove(ts, t);
    lb_free(t->name);
    lb_free(t->failure_tag);
    lb_free(t);
}

void lb_tenant_cursor(const lb_tenant *t, char out[LB_TENANT_CURSOR_MAX])
{
    snprintf(out, LB_TENANT_CURSOR_MAX, "%lld_%s", (long long)t->created_at, t->id);
}

int lb_tenants_page(const lb_tenants *ts, const char *cursor, lb_tenant **out, size_t limit,
                    size_t *n, int *more)
{
    size_t end = ts->count; /* exclusive: items before it, newest last */
    if (cursor != NULL) {
        char *us;
        long long ca = strtoll(cursor, &us, 10);
        if (us == cursor || *us != '_' || !lb_tenant_id_valid(us + 1)) return LB_EINVAL;
        /* Everything strictly older than the cursor's item. */
        size_t lo = 0, hi = ts->count;
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            const lb_tenant *t = ts->order[mid];
            if (cmp_key(t->created_at, t->id, ca, us + 1) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        end = lo;
    }
    size_t k = 0;
    while (k < limit && k < end) {
        out[k] = ts->order[end - 1 - k];
        k++;
    }
    *n = k;
    *more = end > k;
    return 0;
}

int lb_tenant_id_valid(const char *id)
{
    size_t n = 0;
    for (; id[n] != '\0'; n++) {
        char c = id[n];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
        if (n == LB_TENANT_ID_MAX) return 0;
    }
    /* "." and ".." would name directories wherever an id meets a path. */
    return n > 0 && strcmp(id, ".") != 0 && strcmp(id, "..") != 0;
}
