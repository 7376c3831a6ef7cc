/* OAuth 2.0 with Lever (authorization code, rotating refresh tokens).
 *
 * POST /v1/tenants/{tenant}/lever/oauth gives the authorize URL. Its state
 * is "<tenant>.<expiry ms>.<nonce>.<mac>", the MAC an HMAC-SHA256 under a key
 * derived from the master key: bound to the tenant, valid 10 minutes, and
 * single-use (a used nonce is remembered in memory and in the store).
 * GET /oauth/lever/callback exchanges the code, stores the tokens (sealed),
 * starts provisioning and answers a short HTML page.
 *
 * Refresh: when a Lever call needs credentials and the access token expires
 * within 5 minutes (or after one 401), one refresh runs for the tenant; the
 * rotated refresh token is stored before the new access token is used, and
 * the tenant's waiting jobs resume. A refresh Lever refuses turns the
 * connection needs_reauth; a transport failure is retried 30 s later. */
#include "api/api.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/map.h"
#include "core/strbuf.h"
#include "core/time.h"
#include "engine/jobs.h"
#include "engine/provision.h"
#include "http/client.h"
#include "http/response.h"
#include "json/json.h"
#include "state/connections.h"
#include "state/tenants.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_TTL_MS (10 * 60 * 1000)
#define REFRESH_AHEAD_MS (5 * 60 * 1000)
#define REFRESH_RETRY_MS (30 * 1000)
#define SCOPES                                                                                     \
    "offline_access opportunities:write:admin applications:read:admin notes:write:admin "          \
    "stages:read:admin postings:read:admin tags:read:admin webhooks:write:admin"

/* Loop-thread state of the OAuth module. */
static struct {
    lb_map used;       /* nonce -> used_nonce (the key lives in it) */
    lb_map refreshing; /* tenant -> refresh ctx */
    uint8_t state_key[32];
    uv_timer_t retry;
    int retry_open;
    lb_api *api;
} oa;

static int enabled(const lb_api *api)
{
    return api->cfg->lever_client_id != NULL && api->cfg->lever_client_secret != NULL;
}

static void redirect_uri(const lb_api *api, char *out, size_t size)
{
    snprintf(out, size, "%s/oauth/lever/callback", api->cfg->public_url);
}

static void url_escape(lb_strbuf *b, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '_' || c == '.' || c == '~') {
            lb_strbuf_add(b, s, 1);
        } else {
            char e[3] = {'%', hex[c >> 4], hex[c & 15]};
            lb_strbuf_add(b, e, 3);
        }
    }
}

/* ---- state ---------------------------------------------------------------- */

static void state_mac(const char *payload, size_t len, char out[65])
{
    uint8_t mac[32];
    lb_hmac_sha256(oa.state_key, sizeof(oa.state_key), payload, len, mac);
    lb_hex_encode(mac, sizeof(mac), out);
}

/* link_expiry: when OAuth was started from a connect link, that link's
 * expiry, so the callback can link back to the same connect page; else 0.
 * It rides in the nonce field ("<hex>-<expiry>"), under the MAC. */
static void make_state(const char *tenant, int64_t link_expiry, char *out, size_t size)
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
    state_mac(payload, (size_t)n, mac);
    snprintf(out, size, "%s.%s", payload, mac);
}

/* Checks a state: 0 with tenant and nonce copied out, or a reason. */
static const char *check_state(const char *state, char *tenant, size_t tsize, char *nonce,
                               size_t nsize)
{
    const char *mac = strrchr(state, '.');
    if (mac == NULL || strlen(mac + 1) != 64) return "The state is malformed.";
    char want[65];
    state_mac(state, (size_t)(mac - state), want);
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

/* A state's nonce seen by the callback, until the state would have expired. */
typedef struct {
    int64_t expires;
    char nonce[];
} used_nonce;

static void remember_nonce(const char *nonce)
{
    int64_t now = lb_time_now_ms();
    /* Forget what expired, so the set stays bounded by ten minutes of use:
     * found in one walk, removed after it. */
    size_t n = 0, pos = 0;
    used_nonce **gone = lb_malloc((oa.used.count + 1) * sizeof(*gone));
    used_nonce *u;
    while ((u = lb_map_next(&oa.used, &pos)) != NULL)
        if (u->expires < now) gone[n++] = u;
    for (size_t i = 0; i < n; i++) {
        lb_map_del(&oa.used, gone[i]->nonce);
        lb_free(gone[i]);
    }
    lb_free(gone);
    size_t len = strlen(nonce);
    u = lb_malloc(sizeof(*u) + len + 1);
    u->expires = now + STATE_TTL_MS;
    memcpy(u->nonce, nonce, len + 1);
    lb_map_put(&oa.used, u->nonce, u);
}

/* ---- POST /v1/tenants/{tenant}/lever/oauth ----------------------------------- */

static void oauth_start(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    if (!enabled(api)) {
        lb_http_respond_error(req, 404, "oauth_not_configured",
                              "OAuth is not configured on this server (set "
                              "LEVERBRIDGE_LEVER_CLIENT_ID and _CLIENT_SECRET); use an API key.",
                              NULL);
        return;
    }
    if (!t->api_addon) {
        lb_http_respond_error(req, 403, "api_addon_required",
                              "This tenant does not have the API add-on, which connecting Lever "
                              "needs.",
                              NULL);
        return;
    }
    char state[256], redirect[1024];
    int64_t link_expiry = 0;
    if (!lb_api_connect_grant_expiry(api, req, &link_expiry)) link_expiry = 0;
    make_state(t->id, link_expiry, state, sizeof(state));
    redirect_uri(api, redirect, sizeof(redirect));
    lb_strbuf b;
    lb_strbuf_init(&b, 8192);
    lb_strbuf_cat(&b, api->cfg->lever_auth_url);
    lb_strbuf_cat(&b, "/authorize?client_id=");
    url_escape(&b, api->cfg->lever_client_id);
    lb_strbuf_cat(&b, "&redirect_uri=");
    url_escape(&b, redirect);
    lb_strbuf_cat(&b, "&response_type=code&state=");
    url_escape(&b, state);
    lb_strbuf_cat(&b, "&audience=");
    char audience[1024];
    snprintf(audience, sizeof(audience), "%s/", api->cfg->lever_api_url);
    url_escape(&b, audience);
    lb_strbuf_cat(&b, "&scope=");
    url_escape(&b, SCOPES);
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "authorize_url", b.data);
    yajl_gen_map_close(g);
    lb_strbuf_free(&b);
    lb_http_respond_json(req, 200, g);
}

/* ---- the token endpoint -------------------------------------------------- */

typedef struct token_call token_call;
typedef void (*token_cb)(token_call *tc, const lb_http_response *res);

/* One call to /oauth/token. Owned by its starter; freed in its callback. */
struct token_call {
    lb_api *api;
    char tenant[LB_TENANT_ID_MAX + 1];
    char *form;
    char url[1024];
    token_cb done;
    lb_http_req *req;    /* the callback request waiting, or NULL */
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
    lb_api *api = tc->api;
    static const char *const hdrs[] = {"Content-Type: application/x-www-form-urlencoded",
                                       "Accept: application/json", NULL};
    snprintf(tc->url, sizeof(tc->url), "%s/oauth/token", api->cfg->lever_auth_url);
    lb_http_request r = {.method = "POST",
                         .url = tc->url,
                         .headers = hdrs,
                         .body = tc->form,
                         .body_len = strlen(tc->form)};
    return lb_http_client_start(api->http, &r, token_http_done, tc, NULL);
}

static void form_add(lb_strbuf *b, const char *k, const char *v)
{
    if (b->len > 0) lb_strbuf_cat(b, "&");
    lb_strbuf_cat(b, k);
    lb_strbuf_cat(b, "=");
    url_escape(b, v);
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

/* ---- refresh --------------------------------------------------------------- */

static void refresh_failed_later(lb_api *api, const char *tenant);

static void after_refresh(token_call *tc, int ok)
{
    lb_api *api = tc->api;
    lb_map_del(&oa.refreshing, tc->tenant);
    const lb_conn *c = lb_conns_get(api->conns, tc->tenant);
    if (ok && c != NULL) {
        lb_jobs_tenant_resume(api->jobs, tc->tenant);
        if (c->hook != NULL && c->hook->status == LB_HOOK_PENDING)
            lb_provision_kick(api->provision, tc->tenant);
    }
    token_call_free(tc);
}

static void refresh_not_stored(token_call *tc, int status)
{
    lb_error("oauth", "tenant %s: rotated tokens not stored: %s", tc->tenant, lb_strerror(status));
    /* The new refresh token is lost with this memory: Lever has already
     * rotated it, so the connection needs a new authorization. */
    lb_conns_stop(tc->api->conns, tc->tenant);
    after_refresh(tc, 0);
}

static void refresh_saved(lb_store_op *op)
{
    token_call *tc = op->data;
    lb_jobs_notify_done(tc->api->jobs, op, &tc->notify);
    if (op->status == 0 && lb_conns_get(tc->api->conns, tc->tenant) != NULL) {
        lb_conns_apply(tc->api->conns, &tc->next);
        lb_conns_set_refreshed(tc->api->conns, tc->tenant, lb_time_now_ms());
        after_refresh(tc, 1);
        return;
    }
    refresh_not_stored(tc, op->status);
}

/* Submits tc->next; 0, and cb runs later; or the submit's error, and cb is
 * never called (the caller answers it). */
static int save_conn(token_call *tc, lb_store_op_cb cb)
{
    lb_conn_to_rec(tc->api->conns, &tc->next, &tc->rec);
    tc->op.kind = LB_STORE_CONN_PUT;
    tc->op.conn_put.rec = &tc->rec;
    tc->op.cb = cb;
    tc->op.data = tc;
    const lb_conn *old = lb_conns_get(tc->api->conns, tc->tenant);
    lb_api_conn_event(tc->api, tc->tenant, old ? old->status : LB_CONN_DISCONNECTED,
                      tc->next.status, &tc->notify);
    lb_api_notify_attach(&tc->op, &tc->notify);
    return lb_store_submit(tc->api->store, &tc->op);
}

static void mark_needs_reauth(lb_api *api, const char *tenant, const char *why)
{
    const lb_conn *c = lb_conns_get(api->conns, tenant);
    if (c == NULL) return;
    lb_warn("oauth", "tenant %s: %s; the connection needs re-authorization", tenant, why);
    lb_job_rec notify;
    lb_api_conn_event(api, tenant, c->status, LB_CONN_NEEDS_REAUTH, &notify);
    lb_conns_stop(api->conns, tenant); /* stop using the tokens now */
    lb_conn next;
    lb_conn_copy(&next, c);
    lb_conn_rec rec;
    lb_conn_to_rec(api->conns, &next, &rec);
    lb_conn_clear(&next);
    lb_api_store_conn_rec(api, &rec, &notify); /* takes rec and notify */
}

static void refresh_done(token_call *tc, const lb_http_response *res)
{
    lb_api *api = tc->api;
    if (lb_conns_get(api->conns, tc->tenant) == NULL) {
        after_refresh(tc, 0);
        return;
    }
    if (res->status >= 200 && res->status < 300 && parse_tokens(res, &tc->next) == 0) {
        int rc = save_conn(tc, refresh_saved); /* stored before the new token is used */
        if (rc != 0) {
            tc->op.status = rc;
            lb_jobs_notify_done(api->jobs, &tc->op, &tc->notify); /* drops the records */
            refresh_not_stored(tc, rc);
        }
        return;
    }
    if (lb_lever_classify(res) == LB_LEVER_RETRY) { /* transient, as for every Lever call */
        lb_warn("oauth", "tenant %s: token refresh failed (%d %s); retrying", tc->tenant,
                res->status, res->error_text ? res->error_text : "");
        refresh_failed_later(api, tc->tenant);
        after_refresh(tc, 0);
        return;
    }
    mark_needs_reauth(api, tc->tenant, "Lever refused the refresh token");
    after_refresh(tc, 0);
}

/* Starts one refresh for the tenant unless one runs. */
static void refresh_start(lb_api *api, const lb_conn *c)
{
    if (lb_map_get(&oa.refreshing, c->tenant_id) != NULL || c->refresh_token == NULL ||
        !enabled(api))
        return;
    token_call *tc = LB_NEW(token_call);
    tc->api = api;
    snprintf(tc->tenant, sizeof(tc->tenant), "%s", c->tenant_id);
    lb_conn_copy(&tc->next, c);
    lb_strbuf b;
    lb_strbuf_init(&b, 8192);
    form_add(&b, "grant_type", "refresh_token");
    form_add(&b, "client_id", api->cfg->lever_client_id);
    form_add(&b, "client_secret", api->cfg->lever_client_secret);
    form_add(&b, "refresh_token", c->refresh_token);
    tc->form = lb_strbuf_steal(&b, NULL);
    tc->done = refresh_done;
    if (token_post(tc) != 0) {
        refresh_failed_later(api, c->tenant_id);
        token_call_free(tc);
        return;
    }
    lb_map_put(&oa.refreshing, tc->tenant, tc);
}

static void retry_cb(uv_timer_t *t)
{
    lb_api *api = t->data;
    size_t pos = 0;
    const lb_conn *c;
    while ((c = lb_conns_next(api->conns, &pos)) != NULL) {
        if (c->refresh_retry_at > 0 && c->refresh_retry_at <= lb_time_now_ms()) {
            lb_conns_set_refresh_retry(api->conns, c->tenant_id, 0);
            refresh_start(api, c);
        }
    }
}

static void refresh_failed_later(lb_api *api, const char *tenant)
{
    if (lb_conns_get(api->conns, tenant) == NULL) return;
    lb_conns_set_refresh_retry(api->conns, tenant, lb_time_now_ms() + REFRESH_RETRY_MS);
    if (oa.retry_open) uv_timer_start(&oa.retry, retry_cb, REFRESH_RETRY_MS, 0);
}

/* Called by lb_api_lever_auth for OAuth connections: 0 when the access
 * token may be used now. */
int lb_api_oauth_usable(lb_api *api, const lb_conn *c)
{
    int64_t now = lb_time_now_ms();
    if (c->access_token == NULL) return LB_ENOTFOUND;
    /* Refresh ahead: 5 minutes before expiry, or half-way for short tokens. */
    int64_t ttl = c->token_ttl_ms > 0 ? c->token_ttl_ms : 3600 * 1000;
    int64_t ahead = ttl / 2 < REFRESH_AHEAD_MS ? ttl / 2 : REFRESH_AHEAD_MS;
    if (c->token_expires_at - now < ahead && c->refresh_retry_at == 0) refresh_start(api, c);
    /* Still valid for a moment: use it while the refresh runs. */
    return c->token_expires_at - now > 1000 ? 0 : UV_EAGAIN;
}

/* A 401 on an OAuth connection: refresh once; a second 401 soon after a
 * refresh means the grant is gone. 1 when a refresh was started. */
int lb_api_oauth_unauthorized(lb_api *api, const lb_conn *c)
{
    int64_t now = lb_time_now_ms();
    if (c->refresh_401_at > 0 && now - c->refresh_401_at < 60000)
        return 0; /* the token a 401 refreshed got a 401 too */
    /* the token is no good: don't hand it out */
    lb_conns_set_refresh_401(api->conns, c->tenant_id, now);
    refresh_start(api, c);
    return lb_map_get(&oa.refreshing, c->tenant_id) != NULL;
}

/* ---- GET /oauth/lever/callback ---------------------------------------------- */

static void html_escape(lb_strbuf *b, const char *text)
{
    for (const char *p = text; *p; p++) {
        switch (*p) {
        case '<':
            lb_strbuf_cat(b, "&lt;");
            break;
        case '>':
            lb_strbuf_cat(b, "&gt;");
            break;
        case '&':
            lb_strbuf_cat(b, "&amp;");
            break;
        case '"':
            lb_strbuf_cat(b, "&quot;");
            break;
        default:
            lb_strbuf_add(b, p, 1);
        }
    }
}

/* The callback's answer: a page in the style of the connect page (its
 * stylesheet, under the pages' CSP: no inline style). back: the connect
 * page to return to, or NULL (OAuth started with the admin token, or a
 * failure: only a finished authorization earns the link, so a state seen
 * elsewhere cannot be turned into a grant). */
static void page_back(lb_http_req *req, int status, const char *title, const char *text,
                      const char *back)
{
    char css[96];
    lb_api_page_asset_href("style.css", css, sizeof(css));
    lb_strbuf b;
    lb_strbuf_init(&b, 16384);
    lb_strbuf_printf(&b,
                     "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                     "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
                     "<meta name=\"referrer\" content=\"no-referrer\">\n"
                     "<meta name=\"robots\" content=\"noindex\">\n"
                     "<title>%s</title>\n<link rel=\"icon\" href=\"data:,\">\n"
                     "<link rel=\"stylesheet\" href=\"%s\">\n</head>\n<body>\n"
                     "<header class=\"top\"><div class=\"wrap\"><h1>Connect Lever</h1></div>"
                     "</header>\n<main id=\"main\" class=\"wrap\">\n"
                     "<section class=\"panel\" aria-labelledby=\"h\">\n<h2 id=\"h\">%s</h2>\n"
                     "<div class=\"alert %s\"><p>",
                     title, css, title, status == 200 ? "ok" : "error");
    html_escape(&b, text);
    lb_strbuf_cat(&b, "</p></div>\n");
    if (back != NULL) {
        lb_strbuf_cat(&b, "<p><a class=\"button\" id=\"back\" href=\"");
        html_escape(&b, back);
        lb_strbuf_cat(&b, "\">Back to the connect page</a></p>\n");
    } else if (status == 200) {
        lb_strbuf_cat(&b, "<p>You can close this page and return to the application.</p>\n");
    } else {
        lb_strbuf_cat(&b, "<p>Go back to the connect page (your browser's Back button, or "
                          "<strong>ATS Integrations</strong> in the application) and try "
                          "again.</p>\n");
    }
    lb_strbuf_cat(&b, "</section>\n</main>\n</body>\n</html>\n");
    size_t len;
    char *body = lb_strbuf_steal(&b, &len);
    lb_http_respond(req, status, "text/html; charset=utf-8", lb_api_page_headers, body, len,
                    lb_free, body);
}

static void page(lb_http_req *req, int status, const char *title, const char *text)
{
    page_back(req, status, title, text, NULL);
}

static void connected_saved(lb_store_op *op)
{
    token_call *tc = op->data;
    if (op->status != 0) tc->failed = op->status;
    if (--tc->pending > 0) return;
    lb_api *api = tc->api;
    lb_jobs_notify_done(api->jobs, &tc->op, &tc->notify);
    if (tc->failed) {
        page(tc->req, 503, "Not connected", "The connection could not be stored; try again.");
        token_call_free(tc);
        return;
    }
    lb_conns_apply(api->conns, &tc->next);
    lb_conns_apply_hook(api->conns, &tc->hook);
    lb_conns_set_refreshed(api->conns, tc->tenant, lb_time_now_ms());
    lb_info("oauth", "tenant %s: Lever connected by OAuth", tc->tenant);
    lb_jobs_tenant_resume(api->jobs, tc->tenant);
    lb_provision_start(api->provision, tc->tenant);
    char back[1536];
    int has_back = tc->link_expiry > lb_time_now_ms();
    if (has_back) lb_api_connect_url(api, tc->tenant, tc->link_expiry, back, sizeof(back));
    page_back(tc->req, 200, "Lever connected",
              "Lever is connected. leverbridge is now setting up the webhook in Lever.",
              has_back ? back : NULL);
    token_call_free(tc);
}

static void exchange_done(token_call *tc, const lb_http_response *res)
{
    lb_api *api = tc->api;
    if (lb_lever_classify(res) == LB_LEVER_RETRY) {
        page(tc->req, 502, "Not connected", "Lever could not be reached; try again.");
        token_call_free(tc);
        return;
    }
    if (res->status < 200 || res->status >= 300 || parse_tokens(res, &tc->next) != 0) {
        char msg[300];
        lb_lever_describe(res, msg, sizeof(msg));
        lb_warn("oauth", "tenant %s: code exchange refused: %s", tc->tenant, msg);
        page(tc->req, 400, "Not connected", "Lever refused the authorization code; start again.");
        token_call_free(tc);
        return;
    }
    if (lb_tenants_get(api->tenants, tc->tenant) == NULL) {
        page(tc->req, 404, "Not connected", "The tenant no longer exists.");
        token_call_free(tc);
        return;
    }
    int64_t now = lb_time_now_ms();
    snprintf(tc->next.tenant_id, sizeof(tc->next.tenant_id), "%s", tc->tenant);
    tc->next.status = LB_CONN_CONNECTED;
    tc->next.auth = LB_AUTH_OAUTH;
    tc->next.connected_at = now;
    tc->next.updated_at = now;
    tc->next.permissions_checked_at = 0;
    const lb_conn *old = lb_conns_get(api->conns, tc->tenant);
    if (old != NULL && old->hook != NULL) {
        lb_hook_copy(&tc->hook, old->hook);
    } else {
        char *hid = lb_random_id("", 24);
        snprintf(tc->hook.id, sizeof(tc->hook.id), "%s", hid);
        lb_free(hid);
        snprintf(tc->hook.tenant_id, sizeof(tc->hook.tenant_id), "%s", tc->tenant);
    }
    tc->hook.status = LB_HOOK_PENDING;
    tc->hook.attempts = 0;
    tc->hook.next_attempt_at = now;
    tc->hook.deadline_at = now + api->cfg->webhook_deadline_ms;
    lb_free(tc->hook.last_error);
    tc->hook.last_error = NULL;
    lb_conn_to_rec(api->conns, &tc->next, &tc->rec);
    lb_hook_to_rec(api->conns, &tc->hook, &tc->hrec);
    tc->op.kind = LB_STORE_CONN_PUT;
    tc->op.conn_put.rec = &tc->rec;
    tc->op.cb = connected_saved;
    tc->op.data = tc;
    lb_api_conn_event(api, tc->tenant, old != NULL ? old->status : LB_CONN_DISCONNECTED,
                      LB_CONN_CONNECTED, &tc->notify);
    lb_api_notify_attach(&tc->op, &tc->notify);
    tc->hop.kind = LB_STORE_HOOK_PUT;
    tc->hop.hook_put.rec = &tc->hrec;
    tc->hop.cb = connected_saved;
    tc->hop.data = tc;
    if (lb_store_submit(api->store, &tc->op) != 0) {
        page(tc->req, 503, "Not connected", "The connection could not be stored; try again.");
        token_call_free(tc);
        return;
    }
    tc->pending = 1;
    if (lb_store_submit(api->store, &tc->hop) == 0)
        tc->pending++;
    else
        tc->failed = LB_EIO;
}

/* The used-nonce record in the store is read first: a state used before a
 * restart stays used. */
static void nonce_checked(lb_store_op *op);

static void callback(lb_http_req *req, void *data)
{
    lb_api *api = data;
    char error[256], desc[512], code[1024], state[512];
    if (!enabled(api)) {
        page(req, 404, "Not found", "OAuth is not configured on this server.");
        return;
    }
    if (lb_api_query(req, "error", error, sizeof(error)) != NULL) {
        const char *d = lb_api_query(req, "error_description", desc, sizeof(desc));
        char msg[800];
        snprintf(msg, sizeof(msg), "Lever did not authorize the connection: %s",
                 d && *d ? d : error);
        page(req, 400, "Not connected", msg);
        return;
    }
    const char *c = lb_api_query(req, "code", code, sizeof(code));
    const char *s = lb_api_query(req, "state", state, sizeof(state));
    char tenant[LB_TENANT_ID_MAX + 1], nonce[64];
    const char *why = c && *c && s ? check_state(s, tenant, sizeof(tenant), nonce, sizeof(nonce))
                                   : "The code or the state is missing.";
    if (why == NULL && lb_map_get(&oa.used, nonce) != NULL)
        why = "This authorization was already used; start again.";
    if (why != NULL) {
        page(req, 400, "Not connected", why);
        return;
    }
    remember_nonce(nonce);
    token_call *tc = LB_NEW(token_call);
    tc->api = api;
    tc->req = req;
    snprintf(tc->tenant, sizeof(tc->tenant), "%s", tenant);
    snprintf(tc->nonce, sizeof(tc->nonce), "oauth_state:%s", nonce);
    const char *dash = strchr(nonce, '-');
    tc->link_expiry = dash ? strtoll(dash + 1, NULL, 10) : 0;
    lb_strbuf b;
    lb_strbuf_init(&b, 8192);
    char redirect[1024];
    redirect_uri(api, redirect, sizeof(redirect));
    form_add(&b, "grant_type", "authorization_code");
    form_add(&b, "client_id", api->cfg->lever_client_id);
    form_add(&b, "client_secret", api->cfg->lever_client_secret);
    form_add(&b, "code", c);
    form_add(&b, "redirect_uri", redirect);
    tc->form = lb_strbuf_steal(&b, NULL);
    tc->done = exchange_done;
    tc->op.kind = LB_STORE_META_GET;
    tc->op.meta_get.key = tc->nonce;
    tc->op.cb = nonce_checked;
    tc->op.data = tc;
    if (lb_store_submit(api->store, &tc->op) != 0) {
        page(req, 503, "Not connected", "The server cannot take this now; try again.");
        token_call_free(tc);
    }
}

static void nonce_marked(lb_store_op *op)
{
    token_call *tc = op->data;
    if (op->status != 0) {
        page(tc->req, 503, "Not connected", "The server cannot take this now; try again.");
        token_call_free(tc);
        return;
    }
    memset(&tc->op, 0, sizeof(tc->op));
    if (token_post(tc) != 0) {
        page(tc->req, 503, "Not connected", "The server cannot reach Lever now; try again.");
        token_call_free(tc);
    }
}

static void nonce_checked(lb_store_op *op)
{
    token_call *tc = op->data;
    if (op->status == 0) {
        lb_free(op->meta_get.value);
        page(tc->req, 400, "Not connected", "This authorization was already used; start again.");
        token_call_free(tc);
        return;
    }
    if (op->status != LB_ENOTFOUND) {
        page(tc->req, 503, "Not connected", "The server cannot take this now; try again.");
        token_call_free(tc);
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
    if (lb_store_submit(tc->api->store, &tc->op) != 0) {
        page(tc->req, 503, "Not connected", "The server cannot take this now; try again.");
        token_call_free(tc);
    }
}

/* ---- life ---------------------------------------------------------------- */

void lb_api_oauth_register(lb_api *api, lb_router *r)
{
    lb_map_init(&oa.used);
    lb_map_init(&oa.refreshing);
    static const char label[] = "leverbridge oauth state v1";
    lb_hmac_sha256(api->key->key, sizeof(api->key->key), label, sizeof(label) - 1, oa.state_key);
    oa.api = api;
    uv_timer_init(api->loop, &oa.retry);
    oa.retry.data = api;
    oa.retry_open = 1;
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/lever/oauth", oauth_start, api);
    lb_router_add(r, "GET", "/oauth/lever/callback", callback, api);
}

/* Closes the retry timer; refreshes in flight are cancelled with the HTTP
 * client (their memory is freed here). */
void lb_api_oauth_close(void)
{
    if (oa.retry_open) {
        oa.retry_open = 0;
        uv_close((uv_handle_t *)&oa.retry, NULL);
    }
}

void lb_api_oauth_free(void)
{
    size_t pos = 0;
    void *v;
    while ((v = lb_map_next(&oa.used, &pos)) != NULL)
        lb_free(v);
    lb_map_free(&oa.used);
    pos = 0;
    while ((v = lb_map_next(&oa.refreshing, &pos)) != NULL)
        token_call_free(v);
    lb_map_free(&oa.refreshing);
    sodium_memzero(oa.state_key, sizeof(oa.state_key));
}
