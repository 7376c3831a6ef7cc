/* Tenants' Lever connections and hooks in memory, with their credentials
 * and signature tokens decrypted: the hot path (webhook signature checks,
 * job credentials) reads nothing from disk. Loaded at start; changed only
 * after the store confirmed the write. Loop thread only. Owner: main,
 * through lb_api. Secrets are wiped when replaced or freed. */
#ifndef LB_STATE_CONNECTIONS_H
#define LB_STATE_CONNECTIONS_H

#include "core/map.h"
#include "crypto/crypto.h"
#include "store/store.h"

#include <stddef.h>
#include <stdint.h>

typedef enum { LB_CONN_DISCONNECTED, LB_CONN_CONNECTED, LB_CONN_NEEDS_REAUTH } lb_conn_status;
typedef enum { LB_AUTH_NONE, LB_AUTH_API_KEY, LB_AUTH_OAUTH } lb_auth_kind;
typedef enum { LB_HOOK_NONE, LB_HOOK_PENDING, LB_HOOK_ACTIVE, LB_HOOK_FAILED } lb_hook_status;

#define LB_PERMISSIONS_MAX 32

typedef struct lb_hook {
    char id[LB_HOOK_ID_MAX + 1];
    char tenant_id[LB_TENANT_ID_MAX + 1];
    char *lever_webhook_id;
    char *signature_token; /* in the clear; NULL until the webhook exists */
    lb_hook_status status;
    int attempts;
    int64_t next_attempt_at;
    int64_t deadline_at;
    char *last_error;
    int64_t active_since;
    int64_t last_delivery_at;
    int64_t checked_at;
} lb_hook;

typedef struct lb_conn {
    char tenant_id[LB_TENANT_ID_MAX + 1];
    lb_conn_status status;
    lb_auth_kind auth;
    char *api_key; /* in the clear */
    char *access_token;
    char *refresh_token;
    int64_t token_expires_at;
    char *missing[LB_PERMISSIONS_MAX]; /* in Lever's words */
    size_t nmissing;
    int64_t permissions_checked_at;
    int64_t connected_at;
    int64_t updated_at;
    lb_hook *hook; /* NULL: none */
    /* Not stored: */
    int64_t refreshed_at;     /* last OAuth refresh (or connect) */
    int64_t refresh_retry_at; /* a failed refresh is retried then */
    int64_t refresh_401_at;   /* the last refresh a 401 asked for */
    int64_t token_ttl_ms;     /* lifetime of the access token; 0: unknown */
} lb_conn;

typedef struct lb_conns {
    lb_map by_tenant; /* tenant id -> lb_conn */
    lb_map hooks;     /* hook id -> lb_hook */
    const lb_master_key *key;
} lb_conns;

void lb_conns_init(lb_conns *cs, const lb_master_key *key);
void lb_conns_free(lb_conns *cs);

/* Reads. Nothing outside state/ writes a connection's or a hook's fields:
 * it changes them through the functions below. */
const lb_conn *lb_conns_get(const lb_conns *cs, const char *tenant);
const lb_hook *lb_conns_hook(const lb_conns *cs, const char *hook_id);
/* The next connection after *pos (start at 0), or NULL after the last. */
const lb_conn *lb_conns_next(const lb_conns *cs, size_t *pos);

/* Takes rows loaded from the store, opening their sealed secrets. A row that
 * does not open is logged and loaded without its secret (needs_reauth). */
void lb_conns_load(lb_conns *cs, const lb_conn_rec *conns, size_t nconns, const lb_hook_rec *hooks,
                   size_t nhooks);

/* Makes (and seals) the store row for c: the caller submits it, and applies
 * c to memory with lb_conns_apply once the store confirmed. Free the row
 * with lb_conn_rec_free. */
void lb_conn_to_rec(const lb_conns *cs, const lb_conn *c, lb_conn_rec *rec);
void lb_hook_to_rec(const lb_conns *cs, const lb_hook *h, lb_hook_rec *rec);

/* Replaces the tenant's connection with a copy of c (its hook is kept unless
 * c->hook is set, then replaced by a copy). Returns the stored one. */
const lb_conn *lb_conns_apply(lb_conns *cs, const lb_conn *c);
/* Replaces the tenant's hook with a copy of h. */
const lb_hook *lb_conns_apply_hook(lb_conns *cs, const lb_hook *h);
void lb_conns_remove(lb_conns *cs, const char *tenant);

/* Changes in memory only. Each is a no-op for a tenant (or hook) that is not
 * there.
 *
 * lb_conns_stop: the tenant's credentials are not handed out from now on
 * (status needs_reauth), in this same turn of the loop, so that calls in
 * flight stop using them. It is the one change made before its store
 * write: the caller submits the row that says so (or, when Lever rotated a
 * refresh token that could not be stored, the stored row is no longer
 * usable anyway). */
void lb_conns_stop(lb_conns *cs, const char *tenant);
/* OAuth refresh bookkeeping, never stored: the last refresh (or connect);
 * when a failed refresh is retried (0: not waiting); a 401 asked for a
 * refresh at `at`, and the access token counts as expired from then. */
void lb_conns_set_refreshed(lb_conns *cs, const char *tenant, int64_t at);
void lb_conns_set_refresh_retry(lb_conns *cs, const char *tenant, int64_t at);
void lb_conns_set_refresh_401(lb_conns *cs, const char *tenant, int64_t at);
/* A delivery to the hook, received at `at`, was stored (the time is kept
 * in memory only; it only ever grows). */
void lb_conns_hook_delivered(lb_conns *cs, const char *hook_id, int64_t at);

/* Deep copies and frees for working copies. */
void lb_conn_copy(lb_conn *dst, const lb_conn *src);
void lb_conn_clear(lb_conn *c);
void lb_hook_copy(lb_hook *dst, const lb_hook *src);
void lb_hook_clear(lb_hook *h);

/* How many connections are in each lb_conn_status and hooks in each
 * lb_hook_status (for /metrics: counts, never tenant ids). */
void lb_conns_count(const lb_conns *cs, size_t conns[3], size_t hooks[4]);

const char *lb_conn_status_name(lb_conn_status s);
const char *lb_auth_name(lb_auth_kind a); /* NULL for none */
const char *lb_hook_status_name(lb_hook_status s);

#endif
