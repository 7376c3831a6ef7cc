#include "state/connections.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "json/json.h"

#include <sodium.h>
#include <stdio.h>
#include <string.h>

static const char *const conn_names[] = {"disconnected", "connected", "needs_reauth"};
static const char *const hook_names[] = {"none", "pending", "active", "failed"};

const char *lb_conn_status_name(lb_conn_status s)
{
    return conn_names[s];
}

const char *lb_auth_name(lb_auth_kind a)
{
    return a == LB_AUTH_API_KEY ? "api_key" : a == LB_AUTH_OAUTH ? "oauth" : NULL;
}

const char *lb_hook_status_name(lb_hook_status s)
{
    return hook_names[s];
}

static int parse_name(const char *s, const char *const *names, int n)
{
    for (int i = 0; s != NULL && i < n; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return 0;
}

static void wipe_free(char *s)
{
    if (s != NULL) {
        sodium_memzero(s, strlen(s));
        lb_free(s);
    }
}

static char *dup_or_null(const char *s)
{
    return s ? lb_strdup(s) : NULL;
}

/* ---- copies ------------------------------------------------------------ */

void lb_hook_clear(lb_hook *h)
{
    lb_free(h->lever_webhook_id);
    wipe_free(h->signature_token);
    lb_free(h->last_error);
    memset(h, 0, sizeof(*h));
}

void lb_hook_copy(lb_hook *dst, const lb_hook *src)
{
    *dst = *src;
    dst->lever_webhook_id = dup_or_null(src->lever_webhook_id);
    dst->signature_token = dup_or_null(src->signature_token);
    dst->last_error = dup_or_null(src->last_error);
}

void lb_conn_clear(lb_conn *c)
{
    wipe_free(c->api_key);
    wipe_free(c->access_token);
    wipe_free(c->refresh_token);
    for (size_t i = 0; i < c->nmissing; i++)
        lb_free(c->missing[i]);
    memset(c, 0, sizeof(*c));
}

void lb_conn_copy(lb_conn *dst, const lb_conn *src)
{
    *dst = *src;
    dst->api_key = dup_or_null(src->api_key);
    dst->access_token = dup_or_null(src->access_token);
    dst->refresh_token = dup_or_null(src->refresh_token);
    for (size_t i = 0; i < src->nmissing; i++)
        dst->missing[i] = lb_strdup(src->missing[i]);
    dst->hook = NULL;
}

/* ---- registry ------------------------------------------------------------ */

void lb_conns_init(lb_conns *cs, const lb_master_key *key)
{
    lb_map_init(&cs->by_tenant);
    lb_map_init(&cs->hooks);
    cs->key = key;
}

static void hook_free(lb_hook *h)
{
    lb_hook_clear(h);
    lb_free(h);
}

void lb_conns_free(lb_conns *cs)
{
    size_t pos = 0;
    lb_conn *c;
    while ((c = lb_map_next(&cs->by_tenant, &pos)) != NULL) {
        if (c->hook) hook_free(c->hook);
        lb_conn_clear(c);
        lb_free(c);
    }
    lb_map_free(&cs->by_tenant);
    lb_map_free(&cs->hooks);
}

const lb_conn *lb_conns_get(const lb_conns *cs, const char *tenant)
{
    return lb_map_get(&cs->by_tenant, tenant);
}

const lb_hook *lb_conns_hook(const lb_conns *cs, const char *hook_id)
{
    return lb_map_get(&cs->hooks, hook_id);
}

const lb_conn *lb_conns_next(const lb_conns *cs, size_t *pos)
{
    return lb_map_next(&cs->by_tenant, pos);
}

static lb_conn *conn_slot(lb_conns *cs, const char *tenant)
{
    lb_conn *c = lb_map_get(&cs->by_tenant, tenant);
    if (c == NULL) {
        c = LB_NEW(lb_conn);
        snprintf(c->tenant_id, sizeof(c->tenant_id), "%s", tenant);
        lb_map_put(&cs->by_tenant, c->tenant_id, c);
    }
    return c;
}

const lb_hook *lb_conns_apply_hook(lb_conns *cs, const lb_hook *h)
{
    lb_conn *c = conn_slot(cs, h->tenant_id);
    if (c->hook != NULL) {
        lb_map_del(&cs->hooks, c->hook->id);
        hook_free(c->hook);
    }
    c->hook = LB_NEW(lb_hook);
    lb_hook_copy(c->hook, h);
    lb_map_put(&cs->hooks, c->hook->id, c->hook);
    return c->hook;
}

const lb_conn *lb_conns_apply(lb_conns *cs, const lb_conn *src)
{
    lb_conn *c = conn_slot(cs, src->tenant_id);
    lb_hook *hook = c->hook;
    lb_conn_clear(c);
    lb_conn_copy(c, src);
    c->hook = hook;
    if (src->hook != NULL) lb_conns_apply_hook(cs, src->hook);
    return c;
}

void lb_conns_remove(lb_conns *cs, const char *tenant)
{
    lb_conn *c = lb_map_del(&cs->by_tenant, tenant);
    if (c == NULL) return;
    if (c->hook != NULL) {
        lb_map_del(&cs->hooks, c->hook->id);
        hook_free(c->hook);
    }
    lb_conn_clear(c);
    lb_free(c);
}

void lb_conns_stop(lb_conns *cs, const char *tenant)
{
    lb_conn *c = lb_map_get(&cs->by_tenant, tenant);
    if (c != NULL) c->status = LB_CONN_NEEDS_REAUTH;
}

void lb_conns_set_refreshed(lb_conns *cs, const char *tenant, int64_t at)
{
    lb_conn *c = lb_map_get(&cs->by_tenant, tenant);
    if (c != NULL) c->refreshed_at = at;
}

void lb_conns_set_refresh_retry(lb_conns *cs, const char *tenant, int64_t at)
{
    lb_conn *c = lb_map_get(&cs->by_tenant, tenant);
    if (c != NULL) c->refresh_retry_at = at;
}

void lb_conns_set_refresh_401(lb_conns *cs, const char *tenant, int64_t at)
{
    lb_conn *c = lb_map_get(&cs->by_tenant, tenant);
    if (c == NULL) return;
    c->refresh_401_at = at;
    c->token_expires_at = at;
}

void lb_conns_hook_delivered(lb_conns *cs, const char *hook_id, int64_t at)
{
    lb_hook *h = lb_map_get(&cs->hooks, hook_id);
    if (h != NULL && at > h->last_delivery_at) h->last_delivery_at = at;
}

/* ---- sealing ----------------------------------------------------------- */

static void context(char *out, size_t n, const char *kind, const char *id)
{
    snprintf(out, n, "%s:%s", kind, id);
}

static uint8_t *seal_str(const lb_conns *cs, const char *ctx, const char *plain, size_t *len)
{
    size_t n = strlen(plain);
    uint8_t *out = lb_malloc(lb_seal_size(n, strlen(ctx)));
    *len = lb_seal(cs->key, ctx, plain, n, out);
    return out;
}

/* Opens to a NUL-terminated lb_malloc'd string, or NULL. */
static char *open_str(const lb_conns *cs, const char *ctx, const uint8_t *sealed, size_t len)
{
    if (sealed == NULL || len == 0) return NULL;
    char *out = lb_malloc(len + 1);
    long n = lb_open(cs->key, ctx, sealed, len, (uint8_t *)out);
    if (n < 0) {
        lb_free(out);
        return NULL;
    }
    out[n] = '\0';
    return out;
}

void lb_conn_to_rec(const lb_conns *cs, const lb_conn *c, lb_conn_rec *rec)
{
    memset(rec, 0, sizeof(*rec));
    memcpy(rec->tenant_id, c->tenant_id, sizeof(rec->tenant_id));
    rec->status = lb_strdup(lb_conn_status_name(c->status));
    rec->auth = dup_or_null(lb_auth_name(c->auth));
    if (c->auth != LB_AUTH_NONE) {
        lb_strbuf b;
        lb_strbuf_init(&b, 64 * 1024);
        lb_strbuf_cat(&b, "{");
        const char *keys[] = {"api_key", "access_token", "refresh_token"};
        const char *vals[] = {c->api_key, c->access_token, c->refresh_token};
        int first = 1;
        for (int i = 0; i < 3; i++) {
            if (vals[i] == NULL) continue;
            if (!first) lb_strbuf_cat(&b, ",");
            first = 0;
            lb_strbuf_json_str(&b, keys[i], strlen(keys[i]));
            lb_strbuf_cat(&b, ":");
            lb_strbuf_json_str(&b, vals[i], strlen(vals[i]));
        }
        lb_strbuf_cat(&b, "}");
        char ctx[96];
        context(ctx, sizeof(ctx), "connection", c->tenant_id);
        rec->secret = seal_str(cs, ctx, b.data, &rec->secret_len);
        sodium_memzero(b.data, b.len);
        lb_strbuf_free(&b);
    }
    rec->token_expires_at = c->token_expires_at;
    lb_strbuf m;
    lb_strbuf_init(&m, 64 * 1024);
    lb_strbuf_cat(&m, "[");
    for (size_t i = 0; i < c->nmissing; i++) {
        if (i > 0) lb_strbuf_cat(&m, ",");
        lb_strbuf_json_str(&m, c->missing[i], strlen(c->missing[i]));
    }
    lb_strbuf_cat(&m, "]");
    rec->permissions_missing = lb_strbuf_steal(&m, NULL);
    rec->permissions_checked_at = c->permissions_checked_at;
    rec->connected_at = c->connected_at;
    rec->updated_at = c->updated_at;
}

void lb_hook_to_rec(const lb_conns *cs, const lb_hook *h, lb_hook_rec *rec)
{
    memset(rec, 0, sizeof(*rec));
    memcpy(rec->id, h->id, sizeof(rec->id));
    memcpy(rec->tenant_id, h->tenant_id, sizeof(rec->tenant_id));
    rec->lever_webhook_id = dup_or_null(h->lever_webhook_id);
    if (h->signature_token != NULL) {
        char ctx[96];
        context(ctx, sizeof(ctx), "hook", h->id);
        rec->signature_token = seal_str(cs, ctx, h->signature_token, &rec->token_len);
    }
    rec->status = lb_strdup(lb_hook_status_name(h->status));
    rec->attempts = h->attempts;
    rec->next_attempt_at = h->next_attempt_at;
    rec->deadline_at = h->deadline_at;
    rec->last_error = dup_or_null(h->last_error);
    rec->active_since = h->active_since;
    rec->last_delivery_at = h->last_delivery_at;
    rec->checked_at = h->checked_at;
}

void lb_conns_load(lb_conns *cs, const lb_conn_rec *conns, size_t nconns, const lb_hook_rec *hooks,
                   size_t nhooks)
{
    for (size_t i = 0; i < nconns; i++) {
        const lb_conn_rec *r = &conns[i];
        lb_conn c;
        memset(&c, 0, sizeof(c));
        memcpy(c.tenant_id, r->tenant_id, sizeof(c.tenant_id));
        c.status = (lb_conn_status)parse_name(r->status, conn_names, 3);
        c.auth = r->auth == NULL                   ? LB_AUTH_NONE
                 : strcmp(r->auth, "oauth") == 0   ? LB_AUTH_OAUTH
                 : strcmp(r->auth, "api_key") == 0 ? LB_AUTH_API_KEY
                                                   : LB_AUTH_NONE;
        if (r->secret != NULL) {
            char ctx[96];
            context(ctx, sizeof(ctx), "connection", r->tenant_id);
            char *plain = open_str(cs, ctx, r->secret, r->secret_len);
            char err[32];
            yajl_val v = plain ? lb_json_parse(plain, strlen(plain), err, sizeof(err)) : NULL;
            if (v == NULL) {
                lb_error("state", "tenant %s: stored credentials do not open; reconnect Lever",
                         r->tenant_id);
                c.status = LB_CONN_NEEDS_REAUTH;
            } else {
                c.api_key = dup_or_null(lb_json_get_str(v, "api_key"));
                c.access_token = dup_or_null(lb_json_get_str(v, "access_token"));
                c.refresh_token = dup_or_null(lb_json_get_str(v, "refresh_token"));
                yajl_tree_free(v);
            }
            if (plain != NULL) {
                sodium_memzero(plain, strlen(plain));
                lb_free(plain);
            }
        }
        c.token_expires_at = r->token_expires_at;
        if (r->permissions_missing != NULL) {
            char err[32];
            yajl_val m = lb_json_parse(r->permissions_missing, strlen(r->permissions_missing), err,
                                       sizeof(err));
            for (size_t k = 0;
                 m && YAJL_IS_ARRAY(m) && k < m->u.array.len && c.nmissing < LB_PERMISSIONS_MAX;
                 k++)
                if (YAJL_IS_STRING(m->u.array.values[k]))
                    c.missing[c.nmissing++] = lb_strdup(m->u.array.values[k]->u.string);
            if (m != NULL) yajl_tree_free(m);
        }
        c.permissions_checked_at = r->permissions_checked_at;
        c.connected_at = r->connected_at;
        c.updated_at = r->updated_at;
        lb_conns_apply(cs, &c);
        lb_conn_clear(&c);
    }
    for (size_t i = 0; i < nhooks; i++) {
        const lb_hook_rec *r = &hooks[i];
        lb_hook h;
        memset(&h, 0, sizeof(h));
        memcpy(h.id, r->id, sizeof(h.id));
        memcpy(h.tenant_id, r->tenant_id, sizeof(h.tenant_id));
        h.lever_webhook_id = dup_or_null(r->lever_webhook_id);
        if (r->signature_token != NULL) {
            char ctx[96];
            context(ctx, sizeof(ctx), "hook", r->id);
            h.signature_token = open_str(cs, ctx, r->signature_token, r->token_len);
            if (h.signature_token == NULL)
                lb_error("state", "hook %s: stored signature token does not open", r->id);
        }
        h.status = (lb_hook_status)parse_name(r->status, hook_names, 4);
        h.attempts = r->attempts;
        h.next_attempt_at = r->next_attempt_at;
        h.deadline_at = r->deadline_at;
        h.last_error = dup_or_null(r->last_error);
        h.active_since = r->active_since;
        h.last_delivery_at = r->last_delivery_at;
        h.checked_at = r->checked_at;
        lb_conns_apply_hook(cs, &h);
        lb_hook_clear(&h);
    }
}

void lb_conns_count(const lb_conns *cs, size_t conns[3], size_t hooks[4])
{
    memset(conns, 0, 3 * sizeof(conns[0]));
    memset(hooks, 0, 4 * sizeof(hooks[0]));
    size_t pos = 0;
    const lb_conn *c;
    while ((c = lb_map_next(&cs->by_tenant, &pos)) != NULL) {
        if ((unsigned)c->status < 3) conns[c->status]++;
        hooks[c->hook != NULL && (unsigned)c->hook->status < 4 ? c->hook->status : LB_HOOK_NONE]++;
    }
}
