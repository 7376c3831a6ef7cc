/* The tenants in memory: loaded from the store at start, changed only after
 * the store has committed the change. Loop thread only. Owner: main, through
 * lb_api. Ordered by (created_at, id) for newest-first pages. */
#ifndef LB_STATE_TENANTS_H
#define LB_STATE_TENANTS_H

#include "core/map.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

typedef struct lb_tenant {
    char id[LB_TENANT_ID_MAX + 1];
    char *name;
    int api_addon;
    double lever_rate; /* 0: the configured default */
    int lever_burst;   /* 0: the configured default */
    char *failure_tag; /* api.md "Failures visible in Lever"; NULL: off */
    int64_t created_at;
    int64_t updated_at;
    size_t pos; /* index in lb_tenants.order */
} lb_tenant;

typedef struct lb_tenants {
    lb_map by_id;
    lb_tenant **order; /* ascending (created_at, id) */
    size_t count;
    size_t cap;
} lb_tenants;

/* A cursor names the last item of a page: "<created_at>_<id>". */
#define LB_TENANT_CURSOR_MAX (24 + LB_TENANT_ID_MAX)

void lb_tenants_init(lb_tenants *ts);
void lb_tenants_free(lb_tenants *ts);
lb_tenant *lb_tenants_get(const lb_tenants *ts, const char *id);
/* Inserts or updates from a committed record; returns the tenant. */
lb_tenant *lb_tenants_apply(lb_tenants *ts, const lb_tenant_rec *rec);
void lb_tenants_remove(lb_tenants *ts, const char *id);

/* Up to limit tenants, newest first, after cursor (NULL: from the newest).
 * Returns how many were written to out; *more is 1 when others follow.
 * LB_EINVAL for a malformed cursor. */
int lb_tenants_page(const lb_tenants *ts, const char *cursor, lb_tenant **out, size_t limit,
                    size_t *n, int *more);
void lb_tenant_cursor(const lb_tenant *t, char out[LB_TENANT_CURSOR_MAX]);

/* [A-Za-z0-9._-]{1,64} */
int lb_tenant_id_valid(const char *id);

#endif
