/* Credentials: see credentials.h and docs/internals/credentials.md. */
#include "engine/credentials.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/map.h"
#include "core/strbuf.h"
#include "core/time.h"
#include "engine/catalog.h"
#include "engine/provision.h"
#include "engine/backfill.h"
#include "engine/reconcile.h"
#include "json/json.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_TTL_MS (10 * 60 * 1000)
#define REFRESH_AHEAD_MS (5 * 60 * 1000)
#define MADE_UP_ID "00000000-0000-4000-8000-000000000000"
#define SCOPES                                                                                     \
    "offline_access opportunities:write:admin applications:read:admin notes:write:admin "          \
    "stages:read:admin postings:read:admin tags:read:admin webhooks:write:admin"

struct lb_cred {
    uv_loop_t *loop;
    lb_store *store;
    lb_conns *conns;
    const lb_tenants *tenants;
    lb_outbound *ob;
    lb_http_client *http;
    lb_cred_config cfg;
    lb_jobs *jobs;           /* attached; may be NULL */
    lb_provision *provision; /* attached; may be NULL */
    lb_catalog *catalog;     /* attached; may be NULL */
    lb_reconcile *reconcile; /* attached; may be NULL */
    lb_backfill *backfill;   /* attached; may be NULL */
    lb_map used;             /* OAuth state nonce -> used_nonce (the key lives in it) */
    lb_map refreshing;       /* tenant -> its refresh's token_call */
    uint8_t state_key[32];   /* the OAuth states' MAC key */
    uv_timer_t retry;        /* refreshes that failed in transit */
    int retry_open;
};

/* ---- connection writes ----------------------------------------------------- */

/* The platform event (if any) of the tenant's connection going from status
 * `was` to `now`, made into rec: 1 made, 0 none (rec zeroed). */
static int conn_event(lb_cred *cr, const char *tenant, int was, int now, lb_job_rec *rec)
{
    const char *type = NULL;
    memset(rec, 0, sizeof(*rec));
    if (now == was || cr->jobs == NULL) return 0;
    if (now == LB_CONN_CONNECTED)
        type = "connection.connected";
    else if (now == LB_CONN_NEEDS_REAUTH)
        type = "connection.needs_reauth";
    else if (now == LB_CONN_DISCONNECTED)
        type = "connection.disconnected";
    if (type == NULL) return 0;
    const lb_conn *c = lb_conns_get(cr->conns, tenant);
    const char *auth = c != NULL ? lb_auth_name(c->auth) : NULL;
    char data[64];
    if (now == LB_CONN_CONNECTED || auth == NULL)
        snprintf(data, sizeof(data), "{}");
    else
        snprintf(data, sizeof(data), "{\"auth\":\"%s\"}", auth);
    return lb_jobs_notify(cr->jobs, tenant, type, data, rec);
}

/* Puts rec (if made) on op as its notify_platform job. */
static void notify_attach(lb_store_op *op, lb_job_rec *rec)
{
    if (rec->action == NULL) return;
    op->notify = rec;
    op->nnotify = 1;
}

/* A connection change (and maybe its hook), written then applied. Owner:
 * whoever starts it; freed in saved(). */
typedef struct conn_write {
    lb_store_op op;
    lb_store_op hop;
    lb_cred *cr;
    lb_conn next;
    lb_hook hook;
    int with_hook;
    lb_conn_rec rec;
    lb_hook_rec hrec;
    int pending;
    int failed;
    void (*then)(struct conn_write *w, int ok);
    lb_job_rec notify; /* the connection's event, written with it */
    void *data;        /* then()'s */
    lb_cred_connect_cb connect_cb;
    lb_cred_hook_cb hook_cb;
} conn_write;

static void conn_write_free(conn_write *w)
{
    lb_job_rec_free(&w->notify);
    lb_conn_clear(&w->next);
    lb_hook_clear(&w->hook);
    lb_conn_rec_free(&w->rec);
    lb_hook_rec_free(&w->hrec);
    lb_free(w);
}

static void saved(lb_store_op *op)
{
    conn_write *w = op->data;
    if (op->status != 0) w->failed = op->status;
    if (--w->pending > 0) return;
    lb_jobs_notify_done(w->cr->jobs, &w->op, &w->notify);
    if (!w->failed) {
        lb_conns_apply(w->cr->conns, &w->next);
        if (w->with_hook) lb_conns_apply_hook(w->cr->conns, &w->hook);
    } else {
        lb_error("api", "tenant %s: connection not stored: %s", w->next.tenant_id,
                 lb_strerror(w->failed));
    }
    if (w->then) w->then(w, !w->failed);
    conn_write_free(w);
}

/* Stores w->next (and w->hook when with_hook) in one batch. 0, and saved()
 * runs later; or the submit's error, and nothing runs (the caller frees w). */
static int conn_write_submit(lb_cred *cr, conn_write *w)
{
    w->cr = cr;
    lb_conn_to_rec(cr->conns, &w->next, &w->rec);
    w->op.kind = LB_STORE_CONN_PUT;
    w->op.conn_put.rec = &w->rec;
    w->op.cb = saved;
    w->op.data = w;
    const lb_conn *old = lb_conns_get(cr->conns, w->next.tenant_id);
    conn_event(cr, w->next.tenant_id, old ? old->status : LB_CONN_DISCONNECTED, w->next.status,
               &w->notify);
    notify_attach(&w->op, &w->notify);
    int rc = lb_store_submit(cr->store, &w->op);
    if (rc != 0) return rc;
    w->pending = 1;
    if (w->with_hook) {
        lb_hook_to_rec(cr->conns, &w->hook, &w->hrec);
        w->hop.kind = LB_STORE_HOOK_PUT;
        w->hop.hook_put.rec = &w->hrec;
        w->hop.cb = saved;
        w->hop.data = w;
        if (lb_store_submit(cr->store, &w->hop) == 0)
            w->pending++;
        else
            w->failed = LB_EIO;
    }
    return 0;
}

/* The pending-hook reset of a (re)connect or a re-provision: the tenant's
 * hook as it was (same id, so provisioning can clean up) or a new one, set
 * pending with attempts 0 and a deadline from now. */
static void hook_pending(lb_cred *cr, lb_hook *h, const lb_hook *old, const char *tenant,
                         int64_t now)
{
    if (old != NULL) {
        lb_hook_copy(h, old);
    } else {
        char *hid = lb_random_id("", 24);
        snprintf(h->id, sizeof(h->id), "%s", hid);
        lb_free(hid);
        snprintf(h->tenant_id, sizeof(h->tenant_id), "%s", tenant);
    }
    h->status = LB_HOOK_PENDING;
    h->attempts = 0;
    h->next_attempt_at = now;
    h->deadline_at = now + cr->cfg.webhook_deadline_ms;
    lb_free(h->last_error);
    h->last_error = NULL;
}

/* A connection row written on its own, with its event. Owned by the store
 * op's callback. */
typedef struct {
    lb_store_op op;
    lb_cred *cr;
    lb_conn_rec rec;
    lb_job_rec notify;
} rec_write;

static void rec_saved(lb_store_op *op)
{
    rec_write *w = op->data;
    if (op->status != 0)
        lb_error("api", "tenant %s: connection state not stored: %s", w->rec.tenant_id,
                 lb_strerror(op->status));
    lb_jobs_notify_done(w->cr->jobs, op, &w->notify);
    lb_conn_rec_free(&w->rec);
    lb_free(w);
}

/* Stores a connection row (taking it) and its event (taking it too);
 * memory was already changed. */
static void store_conn_rec(lb_cred *cr, lb_conn_rec *rec, lb_job_rec *notify)
{
    rec_write *w = LB_NEW(rec_write);
    w->cr = cr;
    w->rec = *rec;
    memset(rec, 0, sizeof(*rec));
    w->notify = *notify;
    memset(notify, 0, sizeof(*notify));
    w->op.kind = LB_STORE_CONN_PUT;
    w->op.conn_put.rec = &w->rec;
    w->op.cb = rec_saved;
    w->op.data = w;
    notify_attach(&w->op, &w->notify);
    if (lb_store_submit(cr->store, &w->op) != 0) {
        lb_job_rec_free(&w->notify);
        lb_conn_rec_free(&w->rec);
        lb_free(w);
    }
}

/* Credentials came back (a connect, a refresh): the tenant's waiting jobs
 * run again. */
static void resume(lb_cred *cr, const char *tenant)
{
    if (cr->jobs != NULL) lb_jobs_tenant_resume(cr->jobs, tenant);
}

static void provision_start(lb_cred *cr, const char *tenant)
{
    if (cr->provision != NULL) lb_provision_start(cr->provision, tenant);
}

/* ---- the token endpoint ---------------------------------------------------- */

static int oauth_enabled(const lb_cred *cr)
{
    return cr->cfg.client_id != NULL && cr->cfg.client_secret != NULL;
}

int lb_cred_oauth_enabled(const lb_cred *cr)
{
    return oauth_enabled(cr);
}

static void redirect_uri(const lb_cred *cr, char *out, size_t size)
{
    snprintf(out, size, "%s/oauth/lever/callback", cr->cfg.public_url);
}

static void form_add(lb_strbuf *b, const char *k, const char *v)
{
    if (b->len > 0) lb_strbuf_cat(b, "&");
    lb_strbuf_cat(b, k);
    lb_strbuf_cat(b, "=");
    lb_lever_url_escape(b, v);
}

typedef struct token_call token_call;
typedef void (*token_cb)(token_call *tc, const lb_http_response *res);

/* One call to /oauth/token: a refresh (owned by cr->refreshing while it
 * runs) or a code exchange (owned by its starter). Freed in its callback. */
struct token_call {
    lb_cred *cr;
    char tenant[LB_TENANT_ID_MAX + 1];
    char *form;
    char url[1024];
    token_cb done;
    int forgotten;       /* a refresh whose tenant was forgotten meanwhile */
    lb_cred_oauth_cb cb; /* an exchange's caller */
    void *data;
    char nonce[96];      /* "oauth_state:<nonce>", the store key */
    int64_t link_expiry; /* the connect link OAuth was started from, or 0 */
    lb_job_rec notify;   /* the connection's event, written with op */
    lb_store_op op;
    lb_conn next;
    lb_conn_rec rec;
    lb_hook hook;
    lb_hook_rec hrec;
    lb_store_op hop;
    int pending;
    int failed;
};

static void token_call_free(token_call *tc)
{
    if (tc->form != NULL) {
        sodium_memzero(tc->form, strlen(tc->form));
        lb_free(tc->form);
    }
    lb_job_rec_free(&tc->notify);
    lb_conn_clear(&tc->next);
    lb_conn_rec_free(&tc->rec);
    lb_hook_clear(&tc->hook);
    lb_hook_rec_free(&tc->hrec);
    lb_free(tc);
}

static void token_http_done(const lb_http_response *res, void *data)
{
    token_call *tc = data;
    tc->done(tc, res);
}

static int token_post(token_call *tc)
{
    static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
                                       "Accept: application/json", NULL};
    snprintf(tc->url, sizeof(tc->url), "%s/oauth/token", tc->cr->cfg.lever_auth_url);
    lb_http_request r = {.method = "POST",
                         .url = tc->url,
                         .headers = hdrs,
                         .body = tc->form,
                         .body_len = strlen(tc->form)};
    return lb_http_client_start(tc->cr->http, &r, token_http_done, tc, NULL);
}

/* Reads {"access_token","refresh_token","expires_in"} into c. */
static int parse_tokens(const lb_http_response *res, lb_conn *c)
{
    char err[64];
    yajl_val v = lb_json_parse(res->body, res->body_len, err, sizeof(err));
    const char *access = lb_json_get_str(v, "access_token");
    const char *refresh = lb_json_get_str(v, "refresh_token");
    int64_t expires = 3600;
    lb_json_get_int(v, "expires_in", &expires);
    int rc = LB_EPARSE;
    if (access != NULL && *access != '\0') {
        lb_free(c->access_token);
        c->access_token = lb_strdup(access);
        if (refresh != NULL && *refresh != '\0') {
            lb_free(c->refresh_token);
            c->refresh_token = lb_strdup(refresh);
        }
        c->token_ttl_ms = (expires > 0 ? expires : 3600) * 1000;
        c->token_expires_at = lb_time_now_ms() + c->token_ttl_ms;
        rc = 0;
    }
    if (v != NULL) yajl_tree_free(v);
    return rc;
}

/* ---- refresh: single flight, retried by one timer ---------------------------- */

static void refresh_failed_later(lb_cred *cr, const char *tenant);

static void after_refresh(token_call *tc, int ok)
{
    lb_cred *cr = tc->cr;
    lb_map_del(&cr->refreshing, tc->tenant);
    const lb_conn *c = lb_conns_get(cr->conns, tc->tenant);
    if (ok && c != NULL) {
        resume(cr, tc->tenant);
        if (c->hook != NULL && c->hook->status == LB_HOOK_PENDING && cr->provision != NULL)
            lb_provision_kick(cr->provision, tc->tenant);
    }
    token_call_free(tc);
}

static void refresh_not_stored(token_call *tc, int status)
{
    lb_error("oauth", "tenant %s: rotated tokens not stored: %s", tc->tenant, lb_strerror(status));
    /* The new refresh token is lost with this memory: Lever has already
     * rotated it, so the connection needs a new authorization. */
    if (!tc->forgotten) lb_conns_stop(tc->cr->conns, tc->tenant);
    after_refresh(tc, 0);
}

static void refresh_saved(lb_store_op *op)
{
    token_call *tc = op->data;
    lb_cred *cr = tc->cr;
    lb_jobs_notify_done(cr->jobs, op, &tc->notify);
    if (op->status == 0 && !tc->forgotten && lb_conns_get(cr->conns, tc->tenant) != NULL) {
        lb_conns_apply(cr->conns, &tc->next);
        lb_conns_set_refreshed(cr->conns, tc->tenant, lb_time_now_ms());
        after_refresh(tc, 1);
        return;
    }
    refresh_not_stored(tc, op->status);
}

/* Submits tc->next; 0, and cb runs later; or the submit's error, and cb is
 * never called (the caller answers it). */
static int save_conn(token_call *tc, lb_store_op_cb cb)
{
    lb_cred *cr = tc->cr;
    lb_conn_to_rec(cr->conns, &tc->next, &tc->rec);
    tc->op.kind = LB_STORE_CONN_PUT;
    tc->op.conn_put.rec = &tc->rec;
    tc->op.cb = cb;
    tc->op.data = tc;
    const lb_conn *old = lb_conns_get(cr->conns, tc->tenant);
    conn_event(cr, tc->tenant, old ? old->status : LB_CONN_DISCONNECTED, tc->next.status,
               &tc->notify);
    notify_attach(&tc->op, &tc->notify);
    return lb_store_submit(cr->store, &tc->op);
}

static void mark_needs_reauth(lb_cred *cr, const char *tenant, const char *why)
{
    const lb_conn *c = lb_conns_get(cr->conns, tenant);
    if (c == NULL) return;
    lb_warn("oauth", "tenant %s: %s; the connection needs re-authorization", tenant, why);
    lb_job_rec notify;
    conn_event(cr, tenant, c->status, LB_CONN_NEEDS_REAUTH, &notify);
    lb_conns_stop(cr->conns, tenant); /* stop using the tokens now */
    lb_conn next;
    lb_conn_copy(&next, c);
    lb_conn_rec rec;
    lb_conn_to_rec(cr->conns, &next, &rec);
    lb_conn_clear(&next);
    store_conn_rec(cr, &rec, &notify); /* takes rec and notify */
}

static void refresh_done(token_call *tc, const lb_http_response *res)
{
    lb_cred *cr = tc->cr;
    if (tc->forgotten || lb_conns_get(cr->conns, tc->tenant) == NULL) {
        after_refresh(tc, 0);
        return;
    }
    if (res->status >= 200 && res->status < 300 && parse_tokens(res, &tc->next) == 0) {
        int rc = save_conn(tc, refresh_saved); /* stored before the new token is used */
        if (rc != 0) {
            tc->op.status = rc;
            lb_jobs_notify_done(cr->jobs, &tc->op, &tc->notify); /* drops the records */
            refresh_not_stored(tc, rc);
        }
        return;
    }
    if (lb_lever_classify(res) == LB_LEVER_RETRY) { /* transient, as for every Lever call */
        lb_warn("oauth", "tenant %s: token refresh failed (%d %s); retrying", tc->tenant,
                res->status, res->error_text ? res->error_text : "");
        refresh_failed_later(cr, tc->tenant);
        after_refresh(tc, 0);
        return;
    }
    mark_needs_reauth(cr, tc->tenant, "Lever refused the refresh token");
    after_refresh(tc, 0);
}

/* Starts one refresh for the tenant unless one runs. */
static void refresh_start(lb_cred *cr, const lb_conn *c)
{
    if (lb_map_get(&cr->refreshing, c->tenant_id) != NULL || c->refresh_token == NULL ||
        !oauth_enabled(cr))
        return;
    token_call *tc = LB_NEW(token_call);
    tc->cr = cr;
    snprintf(tc->tenant, sizeof(tc->tenant), "%s", c->tenant_id);
    lb_conn_copy(&tc->next, c);
    lb_strbuf b;
    lb_strbuf_init(&b, 8192);
    form_add(&b, "grant_type", "refresh_token");
    form_add(&b, "client_id", cr->cfg.client_id);
    form_add(&b, "client_secret", cr->cfg.client_secret);
    form_add(&b, "refresh_token", c->refresh_token);
    tc->form = lb_strbuf_steal(&b, NULL);
    tc->done = refresh_done;
    if (token_post(tc) != 0) {
        refresh_failed_later(cr, c->tenant_id);
        token_call_free(tc);
        return;
    }
    lb_map_put(&cr->refreshing, tc->tenant, tc);
}

static void retry_cb(uv_timer_t *t)
{
    lb_cred *cr = t->data;
    int64_t now = lb_time_now_ms(), next = 0;
    size_t pos = 0;
    const lb_conn *c;
    while ((c = lb_conns_next(cr->conns, &pos)) != NULL) {
        if (c->refresh_retry_at <= 0) continue;
        if (c->refresh_retry_at <= now) {
            lb_conns_set_refresh_retry(cr->conns, c->tenant_id, 0);
            /* The lease moved on since the refresh failed: the holder
             * refreshes when it needs the token (two replicas refreshing
             * would spend each other's rotating refresh token). */
            if (lb_gate_holds(cr->cfg.gate, c->tenant_id)) refresh_start(cr, c);
        } else if (next == 0 || c->refresh_retry_at < next) {
            next = c->refresh_retry_at;
        }
    }
    /* The retry times are wall-clock, the timer runs on the loop's clock,
     * which can be a few ms behind: a retry not yet due is waited for
     * again, never dropped. */
    if (next > 0 && cr->retry_open) uv_timer_start(&cr->retry, retry_cb, (uint64_t)(next - now), 0);
}

static void refresh_failed_later(lb_cred *cr, const char *tenant)
{
    if (lb_conns_get(cr->conns, tenant) == NULL) return;
    lb_conns_set_refresh_retry(cr->conns, tenant, lb_time_now_ms() + cr->cfg.refresh_retry_ms);
    if (cr->retry_open) uv_timer_start(&cr->retry, retry_cb, (uint64_t)cr->cfg.refresh_retry_ms, 0);
}

/* An OAuth connection's token: 0 when it may be used now. */
static int oauth_usable(lb_cred *cr, const lb_conn *c)
{
    int64_t now = lb_time_now_ms();
    if (c->access_token == NULL) return LB_ENOTFOUND;
    /* Refresh ahead: 5 minutes before expiry, or half-way for short tokens. */
    int64_t ttl = c->token_ttl_ms > 0 ? c->token_ttl_ms : 3600 * 1000;
    int64_t ahead = ttl / 2 < REFRESH_AHEAD_MS ? ttl / 2 : REFRESH_AHEAD_MS;
    if (c->token_expires_at - now < ahead && c->refresh_retry_at == 0) refresh_start(cr, c);
    /* Still valid for a moment: use it while the refresh runs. */
    return c->token_expires_at - now > 1000 ? 0 : UV_EAGAIN;
}

/* A 401 on an OAuth connection: refresh once; a second 401 soon after a
 * refresh means the grant is gone. 1 when a refresh was started. */
static int oauth_unauthorized(lb_cred *cr, const lb_conn *c)
{
    int64_t now = lb_time_now_ms();
    if (c->refresh_401_at > 0 && now - c->refresh_401_at < LB_CRED_REFRESH_401_MS)
        return 0; /* the token a 401 refreshed got a 401 too */
    /* the token is no good: don't hand it out */
    lb_conns_set_refresh_401(cr->conns, c->tenant_id, now);
    refresh_start(cr, c);
    return lb_map_get(&cr->refreshing, c->tenant_id) != NULL;
}

int lb_cred_refreshing(const lb_cred *cr, const char *tenant)
{
    return lb_map_get(&cr->refreshing, tenant) != NULL;
}

/* ---- use ------------------------------------------------------------------- */

int lb_cred_auth(lb_cred *cr, const char *tenant, lb_lever_auth *auth)
{
    const lb_conn *c = lb_conns_get(cr->conns, tenant);
    if (c == NULL || c->status != LB_CONN_CONNECTED) return LB_ENOTFOUND;
    auth->api_url = cr->cfg.lever_api_url;
    if (c->auth == LB_AUTH_API_KEY && c->api_key != NULL) {
        auth->api_key = c->api_key;
        return 0;
    }
    if (c->auth == LB_AUTH_OAUTH) {
        int rc = oauth_usable(cr, c);
        if (rc == 0) auth->access_token = c->access_token;
        return rc;
    }
    return LB_ENOTFOUND;
}

void lb_cred_rate(const lb_cred *cr, const char *tenant, double *rate, int *burst)
{
    const lb_tenant *t = cr->tenants != NULL ? lb_tenants_get(cr->tenants, tenant) : NULL;
    *rate = t && t->lever_rate > 0 ? t->lever_rate : cr->cfg.lever_rate;
    *burst = t && t->lever_burst > 0 ? t->lever_burst : cr->cfg.lever_burst;
}

void lb_cred_unauthorized(lb_cred *cr, const char *tenant)
{
    const lb_conn *c = lb_conns_get(cr->conns, tenant);
    if (c == NULL || c->status != LB_CONN_CONNECTED) return;
    if (c->auth == LB_AUTH_OAUTH && oauth_unauthorized(cr, c))
        return; /* a refresh runs; the waiting jobs resume after it */
    lb_warn("api",
            "tenant %s: Lever refused the credentials; the connection needs re-authorization",
            tenant);
    conn_write *w = LB_NEW(conn_write);
    lb_conn_copy(&w->next, c);
    w->next.status = LB_CONN_NEEDS_REAUTH;
    w->next.updated_at = lb_time_now_ms();
    /* Memory at once (in this same turn of the loop): calls in flight must
     * stop using the credentials now; the store follows. Submitted first so
     * that the write sees the change and carries its event. */
    if (conn_write_submit(cr, w) != 0) conn_write_free(w);
    lb_conns_stop(cr->conns, tenant);
}

/* The connection's list of missing permissions follows what Lever answers:
 * a 403 adds the call's permission, a 2xx removes it. Nothing is written
 * when the list does not change, so the success of every call costs a scan
 * of a list that is almost always empty. */
void lb_cred_permission(lb_cred *cr, const char *tenant, const char *permission, int granted)
{
    const lb_conn *c = lb_conns_get(cr->conns, tenant);
    if (c == NULL) return;
    size_t at = c->nmissing;
    for (size_t i = 0; i < c->nmissing; i++)
        if (strcmp(c->missing[i], permission) == 0) at = i;
    if (granted ? at == c->nmissing : at < c->nmissing || c->nmissing == LB_PERMISSIONS_MAX) return;
    conn_write *w = LB_NEW(conn_write);
    lb_conn_copy(&w->next, c);
    if (granted) {
        lb_info("api", "tenant %s: the Lever key now has \"%s\"", tenant, permission);
        lb_free(w->next.missing[at]);
        memmove(&w->next.missing[at], &w->next.missing[at + 1],
                (w->next.nmissing - at - 1) * sizeof(w->next.missing[0]));
        w->next.nmissing--;
    } else {
        lb_warn("api", "tenant %s: the Lever key lacks \"%s\"", tenant, permission);
        w->next.missing[w->next.nmissing++] = lb_strdup(permission);
    }
    w->next.updated_at = lb_time_now_ms();
    if (conn_write_submit(cr, w) != 0) conn_write_free(w);
}

const char *lb_cred_failure_tag(const lb_cred *cr, const char *tenant)
{
    const lb_tenant *t = cr->tenants != NULL ? lb_tenants_get(cr->tenants, tenant) : NULL;
    return t != NULL ? t->failure_tag : NULL;
}

static const char *env_failure_tag(void *data, const char *tenant)
{
    return lb_cred_failure_tag(data, tenant);
}

static int env_auth(void *data, const char *tenant, lb_lever_auth *auth)
{
    return lb_cred_auth(data, tenant, auth);
}

static void env_unauthorized(void *data, const char *tenant)
{
    lb_cred_unauthorized(data, tenant);
}

static void env_permission(void *data, const char *tenant, const char *permission, int granted)
{
    lb_cred_permission(data, tenant, permission, granted);
}

static void env_rate(void *data, const char *tenant, double *rate, int *burst)
{
    lb_cred_rate(data, tenant, rate, burst);
}

void lb_cred_env(lb_cred *cr, lb_jobs_env *env)
{
    *env = (lb_jobs_env){env_auth, env_unauthorized, env_permission, env_rate, cr, env_failure_tag};
}

/* ---- connecting with an API key: the permission probe ---------------------- */

/* Every read permission of lever.md's table, probed with a cheap GET. */
typedef enum {
    P_ALL_OPPS,
    P_OPP,
    P_ALL_CANDS,
    P_CAND,
    P_ALL_OPP_APPS,
    P_OPP_APP,
    P_ALL_CAND_APPS,
    P_OPP_NOTE,
    P_ALL_TAGS,
    P_STAGE,
    P_ALL_STAGES,
    P_POSTING,
    P_ALL_POSTINGS,
    P_ALL_WEBHOOKS,
    P_COUNT,
    /* helpers that find ids, not permissions of their own */
    X_NOTES = P_COUNT,
    X_COUNT
} probe_id;

_Static_assert(P_COUNT == LB_CRED_PROBES, "LB_CRED_PROBES counts the probes");

static const char *const probe_names[P_COUNT] = {
    [P_ALL_OPPS] = "find all opportunities",
    [P_OPP] = "find an opportunity",
    [P_ALL_CANDS] = "find all candidates",
    [P_CAND] = "find a candidate",
    [P_ALL_OPP_APPS] = "find all opportunity applications",
    [P_OPP_APP] = "find an opportunity application",
    [P_ALL_CAND_APPS] = "find all candidate applications",
    [P_OPP_NOTE] = "find an opportunity note",
    [P_ALL_TAGS] = "find all tags",
    [P_STAGE] = "find a stage",
    [P_ALL_STAGES] = "find all stages",
    [P_POSTING] = "find a posting",
    [P_ALL_POSTINGS] = "find all postings",
    [P_ALL_WEBHOOKS] = "find all webhooks",
};

typedef struct probe probe;

typedef struct {
    lb_ob_call call;
    lb_lever_req req;
    probe *pr;
    probe_id id;
} probe_call;

/* One API-key connect while Lever is asked. Owned by its starter; freed
 * once every call returned and cb ran (or the write was submitted). */
struct probe {
    lb_cred *cr;
    lb_cred_connect_cb cb;
    void *data;
    char tenant[LB_TENANT_ID_MAX + 1];
    char *key;
    probe_call calls[X_COUNT];
    int outstanding;
    int phase;
    int forbidden[P_COUNT];
    int unauthorized;
    int unavailable;
    int tls_setup; /* unavailable for a reason that waiting will not mend */
    char unavailable_msg[256];
    char *opp, *app, *note, *stage, *posting;
};

static void probe_free(probe *pr)
{
    for (int i = 0; i < X_COUNT; i++)
        lb_lever_req_free(&pr->calls[i].req);
    if (pr->key) {
        sodium_memzero(pr->key, strlen(pr->key));
        lb_free(pr->key);
    }
    lb_free(pr->opp);
    lb_free(pr->app);
    lb_free(pr->note);
    lb_free(pr->stage);
    lb_free(pr->posting);
    lb_free(pr);
}

static void probe_next_phase(probe *pr);

static char *first_id(const lb_http_response *res)
{
    lb_lever_page page;
    if (lb_lever_parse_page(res->body, res->body_len, &page) != 0) return NULL;
    char *id = page.count > 0 && page.items[0].id ? lb_strdup(page.items[0].id) : NULL;
    lb_lever_page_free(&page);
    return id;
}

static void probe_done(lb_ob_call *call, const lb_http_response *res)
{
    probe_call *pc = call->data;
    probe *pr = pc->pr;
    pr->outstanding--;
    if (res->status == 0 && res->error == LB_ECLOSED) {
        pr->unavailable = 1;
        snprintf(pr->unavailable_msg, sizeof(pr->unavailable_msg), "the server is stopping");
    } else {
        switch (lb_lever_classify(res)) {
        case LB_LEVER_OK:
            if (pc->id == P_ALL_OPPS)
                pr->opp = first_id(res);
            else if (pc->id == P_ALL_OPP_APPS)
                pr->app = first_id(res);
            else if (pc->id == X_NOTES)
                pr->note = first_id(res);
            else if (pc->id == P_ALL_STAGES)
                pr->stage = first_id(res);
            else if (pc->id == P_ALL_POSTINGS)
                pr->posting = first_id(res);
            break;
        case LB_LEVER_NOT_FOUND: /* a made-up id: the call itself was permitted */
            break;
        case LB_LEVER_FORBIDDEN:
            if (pc->id < P_COUNT) pr->forbidden[pc->id] = 1;
            break;
        case LB_LEVER_REAUTH:
            pr->unauthorized = 1;
            break;
        default:
            if (pc->id == X_NOTES) /* only a helper: a made-up note id will do */
                break;
            pr->unavailable = 1;
            pr->tls_setup |= res->tls_setup;
            lb_lever_describe(res, pr->unavailable_msg, sizeof(pr->unavailable_msg));
            break;
        }
    }
    if (pr->outstanding == 0) probe_next_phase(pr);
}

static int probe_send(probe *pr, probe_id id, const char *query, const char *fmt, const char *a,
                      const char *b)
{
    lb_cred *cr = pr->cr;
    probe_call *pc = &pr->calls[id];
    lb_lever_auth auth = {.api_url = cr->cfg.lever_api_url, .api_key = pr->key};
    lb_lever_req_free(&pc->req);
    lb_lever_req_init(&pc->req, &auth, "GET", query, fmt, a, b);
    pc->pr = pr;
    pc->id = id;
    memset(&pc->call, 0, sizeof(pc->call));
    pc->call.req = pc->req.http;
    pc->call.cb = probe_done;
    pc->call.data = pc;
    double rate;
    int burst;
    lb_cred_rate(cr, pr->tenant, &rate, &burst);
    int rc = lb_outbound_submit(lb_outbound_tenant(cr->ob, pr->tenant, rate, burst), &pc->call);
    if (rc == 0) pr->outstanding++;
    return rc;
}

static void key_connected(conn_write *w, int ok)
{
    lb_cred_probe_result r = {.outcome = ok ? LB_CRED_CONNECTED : LB_CRED_NOT_STORED};
    if (ok) {
        lb_info("api", "tenant %s: Lever connected with an API key", w->next.tenant_id);
        resume(w->cr, w->next.tenant_id);
        provision_start(w->cr, w->next.tenant_id);
    }
    w->connect_cb(w->data, &r);
}

static void probe_finish(probe *pr)
{
    lb_cred *cr = pr->cr;
    lb_cred_probe_result r = {.outcome = LB_CRED_CONNECTED};
    if (pr->unauthorized) {
        r.outcome = LB_CRED_REFUSED;
    } else if (pr->unavailable) {
        r.outcome = LB_CRED_UNAVAILABLE;
        r.message = pr->unavailable_msg;
        r.tls_setup = pr->tls_setup;
    } else {
        for (int i = 0; i < P_COUNT; i++)
            if (pr->forbidden[i]) r.missing[r.nmissing++] = probe_names[i];
        if (r.nmissing > 0) r.outcome = LB_CRED_MISSING;
    }
    if (r.outcome != LB_CRED_CONNECTED) {
        pr->cb(pr->data, &r);
        probe_free(pr);
        return;
    }
    /* Every read permission is there: store the connection and a pending
     * hook (the same hook id as before, so provisioning can clean up). */
    int64_t now = lb_time_now_ms();
    conn_write *w = LB_NEW(conn_write);
    const lb_conn *old = lb_conns_get(cr->conns, pr->tenant);
    snprintf(w->next.tenant_id, sizeof(w->next.tenant_id), "%s", pr->tenant);
    w->next.status = LB_CONN_CONNECTED;
    w->next.auth = LB_AUTH_API_KEY;
    w->next.api_key = lb_strdup(pr->key);
    w->next.permissions_checked_at = now;
    w->next.connected_at = now;
    w->next.updated_at = now;
    w->with_hook = 1;
    hook_pending(cr, &w->hook, old != NULL ? old->hook : NULL, pr->tenant, now);
    w->then = key_connected;
    w->connect_cb = pr->cb;
    w->data = pr->data;
    probe_free(pr);
    if (conn_write_submit(cr, w) != 0) {
        r.outcome = LB_CRED_NOT_STORED;
        w->connect_cb(w->data, &r);
        conn_write_free(w);
    }
}

static void probe_next_phase(probe *pr)
{
    if (pr->unauthorized || pr->unavailable || pr->phase == 3) {
        probe_finish(pr);
        return;
    }
    pr->phase++;
    const char *opp = pr->opp ? pr->opp : MADE_UP_ID;
    int rc = 0;
    if (pr->phase == 1) {
        /* One cheap call first: a wrong key or an unreachable Lever shows at once. */
        rc = probe_send(pr, P_ALL_OPPS, "limit=1", "/opportunities", NULL, NULL);
    } else if (pr->phase == 2) {
        rc |= probe_send(pr, P_OPP, NULL, "/opportunities/%s", opp, NULL);
        rc |= probe_send(pr, P_ALL_CANDS, "limit=1", "/candidates", NULL, NULL);
        rc |= probe_send(pr, P_CAND, NULL, "/candidates/%s", opp, NULL);
        rc |= probe_send(pr, P_ALL_OPP_APPS, NULL, "/opportunities/%s/applications", opp, NULL);
        rc |= probe_send(pr, P_ALL_CAND_APPS, NULL, "/candidates/%s/applications", opp, NULL);
        rc |= probe_send(pr, X_NOTES, NULL, "/opportunities/%s/notes", opp, NULL);
        rc |= probe_send(pr, P_ALL_TAGS, NULL, "/tags", NULL, NULL);
        rc |= probe_send(pr, P_ALL_STAGES, NULL, "/stages", NULL, NULL);
        rc |= probe_send(pr, P_ALL_POSTINGS, "limit=1", "/postings", NULL, NULL);
        rc |= probe_send(pr, P_ALL_WEBHOOKS, NULL, "/webhooks", NULL, NULL);
    } else {
        rc |= probe_send(pr, P_OPP_APP, NULL, "/opportunities/%s/applications/%s", opp,
                         pr->app ? pr->app : MADE_UP_ID);
        rc |= probe_send(pr, P_OPP_NOTE, NULL, "/opportunities/%s/notes/%s", opp,
                         pr->note ? pr->note : MADE_UP_ID);
        rc |= probe_send(pr, P_STAGE, NULL, "/stages/%s", pr->stage ? pr->stage : MADE_UP_ID, NULL);
        rc |= probe_send(pr, P_POSTING, NULL, "/postings/%s",
                         pr->posting ? pr->posting : MADE_UP_ID, NULL);
    }
    if (rc != 0) {
        pr->unavailable = 1;
        snprintf(pr->unavailable_msg, sizeof(pr->unavailable_msg),
                 "too many calls are queued for this tenant");
    }
    if (pr->outstanding == 0) probe_finish(pr);
}

void lb_cred_connect_key(lb_cred *cr, const char *tenant, const char *key, lb_cred_connect_cb cb,
                         void *data)
{
    probe *pr = LB_NEW(probe);
    pr->cr = cr;
    pr->cb = cb;
    pr->data = data;
    snprintf(pr->tenant, sizeof(pr->tenant), "%s", tenant);
    pr->key = lb_strdup(key);
    probe_next_phase(pr);
}

/* ---- connecting by OAuth: the state ------------------------------------------ */

static void state_mac(const lb_cred *cr, const char *payload, size_t len, char out[65])
{
    uint8_t mac[32];
    lb_hmac_sha256(cr->state_key, sizeof(cr->state_key), payload, len, mac);
    lb_hex_encode(mac, sizeof(mac), out);
}

/* "<tenant>.<expiry ms>.<nonce>.<mac>", the MAC an HMAC-SHA256 under a key
 * derived from the master key. link_expiry: when OAuth was started from a
 * connect link, that link's expiry, so the callback can link back to the
 * same connect page; else 0. It rides in the nonce field
 * ("<hex>-<expiry>"), under the MAC. */
static void make_state(const lb_cred *cr, const char *tenant, int64_t link_expiry, char *out,
                       size_t size)
{
    uint8_t nonce[16];
    char hex[33];
    lb_random_bytes(nonce, sizeof(nonce));
    lb_hex_encode(nonce, sizeof(nonce), hex);
    char payload[LB_TENANT_ID_MAX + 96], back[24] = "";
    if (link_expiry > 0) snprintf(back, sizeof(back), "-%lld", (long long)link_expiry);
    int n = snprintf(payload, sizeof(payload), "%s.%lld.%s%s", tenant,
                     (long long)(lb_time_now_ms() + STATE_TTL_MS), hex, back);
    char mac[65];
    state_mac(cr, payload, (size_t)n, mac);
    snprintf(out, size, "%s.%s", payload, mac);
}

/* Checks a state: NULL with tenant and nonce copied out, or a reason. */
static const char *check_state(const lb_cred *cr, const char *state, char *tenant, size_t tsize,
                               char *nonce, size_t nsize)
{
    const char *mac = strrchr(state, '.');
    if (mac == NULL || strlen(mac + 1) != 64) return "The state is malformed.";
    char want[65];
    state_mac(cr, state, (size_t)(mac - state), want);
    if (!lb_secure_equal(want, 64, mac + 1, 64)) return "The state is not one this server issued.";
    /* tenant.expiry.nonce: the tenant id has no '.'-free guarantee, so parse
     * from the right. */
    const char *n = NULL, *e = NULL;
    for (const char *p = mac - 1; p > state; p--) {
        if (*p != '.') continue;
        if (n == NULL)
            n = p;
        else {
            e = p;
            break;
        }
    }
    if (n == NULL || e == NULL) return "The state is malformed.";
    long long expiry = strtoll(e + 1, NULL, 10);
    if (expiry < lb_time_now_ms())
        return "The authorization took too long (over 10 minutes); start again.";
    size_t tl = (size_t)(e - state), nl = (size_t)(mac - n - 1);
    if (tl >= tsize || nl >= nsize) return "The state is malformed.";
    memcpy(tenant, state, tl);
    tenant[tl] = '\0';
    memcpy(nonce, n + 1, nl);
    nonce[nl] = '\0';
    return NULL;
}

int lb_cred_oauth_state_tenant(const lb_cred *cr, const char *state, char *tenant, size_t size)
{
    char nonce[64];
    if (state == NULL) return LB_EINVAL;
    return check_state(cr, state, tenant, size, nonce, sizeof(nonce)) == NULL ? 0 : LB_EINVAL;
}

/* A state's nonce seen by the callback, until the state would have expired. */
typedef struct {
    int64_t expires;
    char nonce[];
} used_nonce;

static void remember_nonce(lb_cred *cr, const char *nonce)
{
    int64_t now = lb_time_now_ms();
    /* Forget what expired, so the set stays bounded by ten minutes of use:
     * found in one walk, removed after it. */
    size_t n = 0, pos = 0;
    used_nonce **gone = lb_malloc((cr->used.count + 1) * sizeof(*gone));
    used_nonce *u;
    while ((u = lb_map_next(&cr->used, &pos)) != NULL)
        if (u->expires < now) gone[n++] = u;
    for (size_t i = 0; i < n; i++) {
        lb_map_del(&cr->used, gone[i]->nonce);
        lb_free(gone[i]);
    }
    lb_free(gone);
    size_t len = strlen(nonce);
    u = lb_malloc(sizeof(*u) + len + 1);
    u->expires = now + STATE_TTL_MS;
    memcpy(u->nonce, nonce, len + 1);
    lb_map_put(&cr->used, u->nonce, u);
}

char *lb_cred_oauth_authorize_url(lb_cred *cr, const char *tenant, int64_t link_expiry)
{
    char state[256], redirect[1024];
    make_state(cr, tenant, link_expiry, state, sizeof(state));
    redirect_uri(cr, redirect, sizeof(redirect));
    lb_strbuf b;
    lb_strbuf_init(&b, 8192);
    lb_strbuf_cat(&b, cr->cfg.lever_auth_url);
    lb_strbuf_cat(&b, "/authorize?client_id=");
    lb_lever_url_escape(&b, cr->cfg.client_id);
    lb_strbuf_cat(&b, "&redirect_uri=");
    lb_lever_url_escape(&b, redirect);
    lb_strbuf_cat(&b, "&response_type=code&state=");
    lb_lever_url_escape(&b, state);
    lb_strbuf_cat(&b, "&audience=");
    char audience[1024];
    snprintf(audience, sizeof(audience), "%s/", cr->cfg.lever_api_url);
    lb_lever_url_escape(&b, audience);
    lb_strbuf_cat(&b, "&scope=");
    lb_lever_url_escape(&b, SCOPES);
    return lb_strbuf_steal(&b, NULL);
}

/* ---- connecting by OAuth: the code exchange ----------------------------------- */

/* Answers the exchange's caller and frees it. */
static void exchange_end(token_call *tc, lb_cred_oauth_outcome outcome)
{
    lb_cred_oauth_result r = {
        .outcome = outcome, .tenant = tc->tenant, .link_expiry = tc->link_expiry};
    tc->cb(tc->data, &r);
    token_call_free(tc);
}

static void connected_saved(lb_store_op *op)
{
    token_call *tc = op->data;
    if (op->status != 0) tc->failed = op->status;
    if (--tc->pending > 0) return;
    lb_cred *cr = tc->cr;
    lb_jobs_notify_done(cr->jobs, &tc->op, &tc->notify);
    if (tc->failed) {
        exchange_end(tc, LB_CRED_OAUTH_NOT_STORED);
        return;
    }
    lb_conns_apply(cr->conns, &tc->next);
    lb_conns_apply_hook(cr->conns, &tc->hook);
    lb_conns_set_refreshed(cr->conns, tc->tenant, lb_time_now_ms());
    lb_info("oauth", "tenant %s: Lever connected by OAuth", tc->tenant);
    resume(cr, tc->tenant);
    provision_start(cr, tc->tenant);
    exchange_end(tc, LB_CRED_OAUTH_CONNECTED);
}

static void exchange_done(token_call *tc, const lb_http_response *res)
{
    lb_cred *cr = tc->cr;
    if (lb_lever_classify(res) == LB_LEVER_RETRY) {
        exchange_end(tc, LB_CRED_OAUTH_UNREACHABLE);
        return;
    }
    if (res->status < 200 || res->status >= 300 || parse_tokens(res, &tc->next) != 0) {
        char msg[300];
        lb_lever_describe(res, msg, sizeof(msg));
        lb_warn("oauth", "tenant %s: code exchange refused: %s", tc->tenant, msg);
        exchange_end(tc, LB_CRED_OAUTH_REFUSED);
        return;
    }
    if (cr->tenants != NULL && lb_tenants_get(cr->tenants, tc->tenant) == NULL) {
        exchange_end(tc, LB_CRED_OAUTH_NO_TENANT);
        return;
    }
    int64_t now = lb_time_now_ms();
    snprintf(tc->next.tenant_id, sizeof(tc->next.tenant_id), "%s", tc->tenant);
    tc->next.status = LB_CONN_CONNECTED;
    tc->next.auth = LB_AUTH_OAUTH;
    tc->next.connected_at = now;
    tc->next.updated_at = now;
    tc->next.permissions_checked_at = 0;
    const lb_conn *old = lb_conns_get(cr->conns, tc->tenant);
    hook_pending(cr, &tc->hook, old != NULL ? old->hook : NULL, tc->tenant, now);
    lb_conn_to_rec(cr->conns, &tc->next, &tc->rec);
    lb_hook_to_rec(cr->conns, &tc->hook, &tc->hrec);
    tc->op.kind = LB_STORE_CONN_PUT;
    tc->op.conn_put.rec = &tc->rec;
    tc->op.cb = connected_saved;
    tc->op.data = tc;
    conn_event(cr, tc->tenant, old != NULL ? old->status : LB_CONN_DISCONNECTED, LB_CONN_CONNECTED,
               &tc->notify);
    notify_attach(&tc->op, &tc->notify);
    tc->hop.kind = LB_STORE_HOOK_PUT;
    tc->hop.hook_put.rec = &tc->hrec;
    tc->hop.cb = connected_saved;
    tc->hop.data = tc;
    if (lb_store_submit(cr->store, &tc->op) != 0) {
        exchange_end(tc, LB_CRED_OAUTH_NOT_STORED);
        return;
    }
    tc->pending = 1;
    if (lb_store_submit(cr->store, &tc->hop) == 0)
        tc->pending++;
    else
        tc->failed = LB_EIO;
}

static void nonce_marked(lb_store_op *op)
{
    token_call *tc = op->data;
    if (op->status != 0) {
        exchange_end(tc, LB_CRED_OAUTH_BUSY);
        return;
    }
    memset(&tc->op, 0, sizeof(tc->op));
    if (token_post(tc) != 0) exchange_end(tc, LB_CRED_OAUTH_NO_CALL);
}

/* The used-nonce record in the store is read first: a state used before a
 * restart stays used. */
static void nonce_checked(lb_store_op *op)
{
    token_call *tc = op->data;
    if (op->status == 0) {
        lb_free(op->meta_get.value);
        exchange_end(tc, LB_CRED_OAUTH_USED);
        return;
    }
    if (op->status != LB_ENOTFOUND) {
        exchange_end(tc, LB_CRED_OAUTH_BUSY);
        return;
    }
    static const uint8_t used[] = {'1'};
    memset(&tc->op, 0, sizeof(tc->op));
    tc->op.kind = LB_STORE_META_PUT;
    tc->op.meta_put.key = tc->nonce;
    tc->op.meta_put.value = used;
    tc->op.meta_put.len = 1;
    tc->op.cb = nonce_marked;
    tc->op.data = tc;
    if (lb_store_submit(tc->cr->store, &tc->op) != 0) exchange_end(tc, LB_CRED_OAUTH_BUSY);
}

void lb_cred_oauth_finish(lb_cred *cr, const char *code, const char *state, lb_cred_oauth_cb cb,
                          void *data)
{
    char tenant[LB_TENANT_ID_MAX + 1], nonce[64];
    const char *why = code && *code && state
                          ? check_state(cr, state, tenant, sizeof(tenant), nonce, sizeof(nonce))
                          : "The code or the state is missing.";
    lb_cred_oauth_result r = {.outcome = LB_CRED_OAUTH_BAD_STATE, .why = why};
    if (why == NULL && lb_map_get(&cr->used, nonce) != NULL) r.outcome = LB_CRED_OAUTH_USED;
    if (why != NULL || r.outcome == LB_CRED_OAUTH_USED) {
        cb(data, &r);
        return;
    }
    remember_nonce(cr, nonce);
    token_call *tc = LB_NEW(token_call);
    tc->cr = cr;
    tc->cb = cb;
    tc->data = data;
    snprintf(tc->tenant, sizeof(tc->tenant), "%s", tenant);
    snprintf(tc->nonce, sizeof(tc->nonce), "oauth_state:%s", nonce);
    const char *dash = strchr(nonce, '-');
    tc->link_expiry = dash ? strtoll(dash + 1, NULL, 10) : 0;
    lb_strbuf b;
    lb_strbuf_init(&b, 8192);
    char redirect[1024];
    redirect_uri(cr, redirect, sizeof(redirect));
    form_add(&b, "grant_type", "authorization_code");
    form_add(&b, "client_id", cr->cfg.client_id);
    form_add(&b, "client_secret", cr->cfg.client_secret);
    form_add(&b, "code", code);
    form_add(&b, "redirect_uri", redirect);
    tc->form = lb_strbuf_steal(&b, NULL);
    tc->done = exchange_done;
    tc->op.kind = LB_STORE_META_GET;
    tc->op.meta_get.key = tc->nonce;
    tc->op.cb = nonce_checked;
    tc->op.data = tc;
    if (lb_store_submit(cr->store, &tc->op) != 0) exchange_end(tc, LB_CRED_OAUTH_BUSY);
}

/* ---- the hook again ---------------------------------------------------------- */

static void reprovisioned(conn_write *w, int ok)
{
    if (ok) provision_start(w->cr, w->next.tenant_id);
    w->hook_cb(w->data, ok ? 0 : w->failed, w->hook.deadline_at);
}

int lb_cred_reprovision(lb_cred *cr, const char *tenant, lb_cred_hook_cb cb, void *data)
{
    const lb_conn *c = lb_conns_get(cr->conns, tenant);
    if (c == NULL || c->status != LB_CONN_CONNECTED || c->hook == NULL) return LB_ENOTFOUND;
    conn_write *w = LB_NEW(conn_write);
    lb_conn_copy(&w->next, c);
    w->with_hook = 1;
    hook_pending(cr, &w->hook, c->hook, tenant, lb_time_now_ms());
    w->then = reprovisioned;
    w->hook_cb = cb;
    w->data = data;
    int rc = conn_write_submit(cr, w);
    if (rc != 0) conn_write_free(w);
    return rc;
}

/* ---- disconnecting ------------------------------------------------------------ */

/* The best-effort removal of the webhook in Lever, after the credentials
 * are gone from the store. Owned by itself; freed when the call returns. */
typedef struct {
    lb_ob_call call;
    lb_lever_req req;
} unhook;

static void unhook_done(lb_ob_call *call, const lb_http_response *res)
{
    unhook *u = call->data;
    if (lb_lever_classify(res) != LB_LEVER_OK && res->error != LB_ECLOSED) {
        char msg[256];
        lb_lever_describe(res, msg, sizeof(msg));
        lb_warn("api", "could not delete the Lever webhook: %s", msg);
    }
    lb_lever_req_free(&u->req);
    lb_free(u);
}

static void forget(lb_cred *cr, const char *tenant, int delete_hook);

void lb_cred_forget(lb_cred *cr, const char *tenant)
{
    forget(cr, tenant, 1);
}

void lb_cred_drop(lb_cred *cr, const char *tenant)
{
    forget(cr, tenant, 0);
}

static void forget(lb_cred *cr, const char *tenant, int delete_hook)
{
    const lb_conn *c = lb_conns_get(cr->conns, tenant);
    if (c == NULL) return;
    if (cr->jobs != NULL) lb_jobs_tenant_cancel(cr->jobs, tenant);
    if (cr->provision != NULL) lb_provision_forget(cr->provision, tenant);
    if (cr->reconcile != NULL) lb_reconcile_forget(cr->reconcile, tenant);
    if (cr->backfill != NULL) lb_backfill_forget(cr->backfill, tenant);
    /* A refresh in flight stays in the map (single flight, freed at exit
     * if its answer never comes), but its answer changes nothing. */
    token_call *tc = lb_map_get(&cr->refreshing, tenant);
    if (tc != NULL) tc->forgotten = 1;
    lb_lever_auth auth = {.api_url = cr->cfg.lever_api_url};
    if (c->auth == LB_AUTH_API_KEY)
        auth.api_key = c->api_key;
    else
        auth.access_token = c->access_token;
    if (delete_hook && c->hook != NULL && c->hook->lever_webhook_id != NULL &&
        (auth.api_key != NULL || auth.access_token != NULL)) {
        unhook *u = LB_NEW(unhook);
        lb_lever_req_init(&u->req, &auth, "DELETE", NULL, "/webhooks/%s",
                          c->hook->lever_webhook_id);
        u->call.req = u->req.http;
        u->call.cb = unhook_done;
        u->call.data = u;
        double rate;
        int burst;
        lb_cred_rate(cr, tenant, &rate, &burst);
        if (lb_outbound_submit(lb_outbound_tenant(cr->ob, tenant, rate, burst), &u->call) != 0) {
            lb_lever_req_free(&u->req);
            lb_free(u);
        }
    }
    lb_conns_remove(cr->conns, tenant);
    if (cr->catalog != NULL) lb_catalog_drop(cr->catalog, tenant);
}

typedef struct {
    lb_store_op op;
    lb_cred *cr;
    lb_cred_done_cb cb;
    void *data;
    char tenant[LB_TENANT_ID_MAX + 1];
    lb_job_rec notify; /* connection.disconnected, written with the delete */
} disconnect_ctx;

static void disconnected(lb_store_op *op)
{
    disconnect_ctx *d = op->data;
    lb_jobs_notify_done(d->cr->jobs, op, &d->notify);
    if (op->status == 0) lb_cred_forget(d->cr, d->tenant);
    d->cb(d->data, op->status);
    lb_free(d);
}

int lb_cred_disconnect(lb_cred *cr, const char *tenant, lb_cred_done_cb cb, void *data)
{
    disconnect_ctx *d = LB_NEW(disconnect_ctx);
    d->cr = cr;
    d->cb = cb;
    d->data = data;
    snprintf(d->tenant, sizeof(d->tenant), "%s", tenant);
    d->op.kind = LB_STORE_CONN_DELETE;
    snprintf(d->op.conn_delete.tenant_id, sizeof(d->op.conn_delete.tenant_id), "%s", tenant);
    d->op.cb = disconnected;
    d->op.data = d;
    const lb_conn *c = lb_conns_get(cr->conns, tenant);
    if (c != NULL) conn_event(cr, tenant, c->status, LB_CONN_DISCONNECTED, &d->notify);
    notify_attach(&d->op, &d->notify);
    int rc = lb_store_submit(cr->store, &d->op);
    if (rc != 0) {
        lb_job_rec_free(&d->notify);
        lb_free(d);
    }
    return rc;
}

/* ---- life ---------------------------------------------------------------------- */

int lb_cred_new(uv_loop_t *loop, lb_store *store, lb_conns *conns, const lb_tenants *tenants,
                lb_outbound *ob, lb_http_client *http, const lb_master_key *key,
                const lb_cred_config *cfg, lb_cred **out)
{
    lb_cred *cr = LB_NEW(lb_cred);
    cr->loop = loop;
    cr->store = store;
    cr->conns = conns;
    cr->tenants = tenants;
    cr->ob = ob;
    cr->http = http;
    cr->cfg = *cfg;
    if (cr->cfg.refresh_retry_ms <= 0) cr->cfg.refresh_retry_ms = LB_CRED_REFRESH_RETRY_MS;
    lb_map_init(&cr->used);
    lb_map_init(&cr->refreshing);
    static const char label[] = "leverbridge oauth state v1";
    lb_hmac_sha256(key->key, sizeof(key->key), label, sizeof(label) - 1, cr->state_key);
    int rc = uv_timer_init(loop, &cr->retry);
    if (rc != 0) {
        lb_map_free(&cr->used);
        lb_map_free(&cr->refreshing);
        sodium_memzero(cr->state_key, sizeof(cr->state_key));
        lb_free(cr);
        return rc;
    }
    cr->retry.data = cr;
    cr->retry_open = 1;
    *out = cr;
    return 0;
}

void lb_cred_attach(lb_cred *cr, lb_jobs *jobs, lb_provision *provision, lb_catalog *catalog,
                    lb_reconcile *reconcile)
{
    cr->reconcile = reconcile;
    cr->jobs = jobs;
    cr->provision = provision;
    cr->catalog = catalog;
}

void lb_cred_attach_backfill(lb_cred *cr, lb_backfill *backfill)
{
    cr->backfill = backfill;
}

/* The timer is embedded: its memory goes with cr in lb_cred_free, after
 * the loop has run the close. */
void lb_cred_close(lb_cred *cr)
{
    if (cr != NULL && cr->retry_open) {
        cr->retry_open = 0;
        uv_close((uv_handle_t *)&cr->retry, NULL);
    }
}

void lb_cred_free(lb_cred *cr)
{
    if (cr == NULL) return;
    size_t pos = 0;
    void *v;
    while ((v = lb_map_next(&cr->used, &pos)) != NULL)
        lb_free(v);
    lb_map_free(&cr->used);
    pos = 0;
    while ((v = lb_map_next(&cr->refreshing, &pos)) != NULL)
        token_call_free(v);
    lb_map_free(&cr->refreshing);
    sodium_memzero(cr->state_key, sizeof(cr->state_key));
    lb_free(cr);
}
