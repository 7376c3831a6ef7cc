/* lever-sim: Lever's OAuth server (auth.lever.co, an Auth0 tenant):
 * GET /authorize (auto-approves, or denies on a control switch) and
 * POST /oauth/token (authorization_code and refresh_token grants, refresh
 * tokens rotated on every use), plus its control route /_sim/oauth. */
#include "lever_sim.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "core/time.h"
#include "json/json.h"

#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define CODE_TTL_MS (10 * 60 * 1000)
#define ACCESS_SWEEP_AT 50000
#define PARAM_SIZE 2048
/* What a grant without a requested scope holds (the client's default). */
#define ALL_SCOPES                                                                                 \
    "opportunities:write:admin applications:read:admin notes:write:admin stages:read:admin "       \
    "postings:read:admin tags:read:admin webhooks:write:admin offline_access"

static const char *const audiences[] = {"https://api.lever.co/v1/",
                                        "https://api.sandbox.lever.co/v1/"};

void lv_oauth_error(lb_http_req *req, int status, const char *error, const char *description)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "error", error);
    lb_json_kv_str(g, "error_description", description);
    yajl_gen_map_close(g);
    sim_respond_json_extra(req, status, g, "Cache-Control: no-store\r\n");
}

static void page(lb_http_req *req, int status, const char *text)
{
    lb_strbuf b;
    lb_strbuf_init(&b, 4096);
    lb_strbuf_printf(&b, "<!doctype html><title>Lever sim</title><p>%s</p>\n", text);
    size_t len;
    char *body = lb_strbuf_steal(&b, &len);
    sim_respond(req, status, "text/html; charset=utf-8", NULL, body, len, lb_free, body);
}

static int has_ctl(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == 0x7f) return 1;
    return 0;
}

static int uri_allowed(const lv_client *c, const char *uri)
{
    return c->redirect_uris.n == 0 || sim_strv_index(&c->redirect_uris, uri) >= 0;
}

/* ---- GET /authorize ------------------------------------------------------------- */

static void r_authorize(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    char client_id[256], redirect[PARAM_SIZE], rtype[64], state[PARAM_SIZE], audience[512],
        scope[PARAM_SIZE], prompt[64];
    sim_query_get(req, "client_id", client_id, sizeof(client_id));
    int has_redirect = sim_query_get(req, "redirect_uri", redirect, sizeof(redirect));
    sim_query_get(req, "response_type", rtype, sizeof(rtype));
    int has_state = sim_query_get(req, "state", state, sizeof(state));
    int has_audience = sim_query_get(req, "audience", audience, sizeof(audience));
    int has_scope = sim_query_get(req, "scope", scope, sizeof(scope));
    int has_prompt = sim_query_get(req, "prompt", prompt, sizeof(prompt));

    lv_client *c = lb_map_get(&s->clients, client_id);
    if (c == NULL) {
        page(req, 400, "Unknown client_id.");
        return;
    }
    if (!has_redirect || redirect[0] == '\0' || has_ctl(redirect) ||
        (strncmp(redirect, "http://", 7) != 0 && strncmp(redirect, "https://", 8) != 0)) {
        page(req, 400, "Missing or invalid redirect_uri.");
        return;
    }
    if (!uri_allowed(c, redirect)) {
        page(req, 400, "The redirect_uri is not registered for this client (exact match).");
        return;
    }

    const char *error = NULL;
    char desc[640] = "";
    if (strcmp(rtype, "code") != 0) {
        error = "unsupported_response_type";
        snprintf(desc, sizeof(desc), "Unsupported response type: %s", rtype);
    } else if (has_prompt) {
        error = "invalid_request";
        snprintf(desc, sizeof(desc), "The prompt parameter is not supported");
    } else if (c->check_audience) {
        int ok = 0;
        for (size_t i = 0; has_audience && i < LB_COUNTOF(audiences); i++)
            ok |= strcmp(audience, audiences[i]) == 0;
        ok |= has_audience && s->audience != NULL && strcmp(audience, s->audience) == 0;
        if (!ok) {
            error = "access_denied";
            snprintf(desc, sizeof(desc), "Service not found: %s",
                     has_audience ? audience : "(no audience)");
        }
    }
    if (error == NULL && c->deny) {
        error = "access_denied";
        snprintf(desc, sizeof(desc), "The user denied access to Lever");
    }

    lb_strbuf loc;
    lb_strbuf_init(&loc, 16 * 1024);
    lb_strbuf_cat(&loc, "Location: ");
    lb_strbuf_cat(&loc, redirect);
    lb_strbuf_cat(&loc, strchr(redirect, '?') ? "&" : "?");
    if (error != NULL) {
        lb_strbuf_cat(&loc, "error=");
        sim_url_encode(&loc, error);
        lb_strbuf_cat(&loc, "&error_description=");
        sim_url_encode(&loc, desc);
    } else {
        char code[41];
        sim_random_chars(code, 40);
        lv_code *cd = LB_NEW(lv_code);
        cd->code = lb_strdup(code);
        cd->redirect_uri = lb_strdup(redirect);
        cd->client = c;
        cd->account = lv_account_get(s, c->account, 1);
        if (has_scope && scope[0] != '\0') {
            cd->perms = lv_scope_perms(scope, &cd->offline);
            cd->scope = lb_strdup(scope);
        } else {
            cd->perms = c->default_perms;
            cd->offline = 1;
            cd->scope = NULL;
        }
        cd->expires_ms = lb_time_now_ms() + CODE_TTL_MS;
        lb_map_put(&s->codes, cd->code, cd);
        lb_strbuf_cat(&loc, "code=");
        lb_strbuf_cat(&loc, code);
        lb_debug("lever-sim", "authorize: code issued to %s", c->client_id);
    }
    if (has_state) {
        lb_strbuf_cat(&loc, "&state=");
        sim_url_encode(&loc, state);
    }
    lb_strbuf_cat(&loc, "\r\n");
    if (loc.failed) {
        lb_strbuf_free(&loc);
        page(req, 400, "The redirect is too long.");
        return;
    }
    static const char body[] = "Redirecting\n";
    sim_respond(req, 302, "text/plain", loc.data, body, sizeof(body) - 1, NULL, NULL);
    lb_strbuf_free(&loc);
}

/* ---- POST /oauth/token ------------------------------------------------------------ */

static void copy_cut(char *dst, size_t size, const char *src)
{
    size_t n = strlen(src);
    if (n >= size) n = size - 1;
    memcpy(dst, src, n);
    dst[n] = '\0';
}

typedef struct {
    yajl_val json; /* when the body is JSON */
    const char *form;
    size_t form_len;
} params;

static int param(const params *p, const char *name, char *out, size_t size)
{
    if (p->json != NULL) {
        const char *v = sim_json_str(p->json, name);
        if (v == NULL) {
            out[0] = '\0';
            return 0;
        }
        copy_cut(out, size, v);
        return 1;
    }
    return sim_form_get(p->form, p->form_len, name, out, size);
}

/* Client credentials from HTTP Basic, if any: "id:secret". */
static void basic_client(lb_http_req *req, char *id, size_t idsz, char *secret, size_t ssz)
{
    size_t n;
    const char *h = lb_http_req_header(req, "authorization", &n);
    if (h == NULL || n < 7 || strncasecmp(h, "Basic ", 6) != 0) return;
    char buf[1024];
    size_t olen = 0;
    if (sodium_base642bin((unsigned char *)buf, sizeof(buf) - 1, h + 6, n - 6, NULL, &olen, NULL,
                          sodium_base64_VARIANT_ORIGINAL) != 0)
        return;
    buf[olen] = '\0';
    char *colon = strchr(buf, ':');
    if (colon == NULL) return;
    *colon = '\0';
    copy_cut(id, idsz, buf);
    copy_cut(secret, ssz, colon + 1);
}

static void sweep_access(lv_sim *s)
{
    int64_t now = lb_time_now_ms();
    sim_strv dead = {0};
    for (size_t i = 0; i < s->access.cap; i++) {
        lv_access *t = s->access.slots[i].key ? s->access.slots[i].value : NULL;
        if (t != NULL && t->expires_ms + 3600 * 1000 < now) SIM_PUSH(dead, t->token);
    }
    for (size_t i = 0; i < dead.n; i++) {
        lv_access *t = lb_map_del(&s->access, dead.v[i]);
        lb_free(t);
    }
    sim_strv_free(&dead); /* frees the tokens */
}

static void issue(lb_http_req *req, lv_sim *s, lv_grant *gr)
{
    if (s->access.count >= ACCESS_SWEEP_AT) sweep_access(s);
    char tok[49];
    sim_random_chars(tok, 48);
    lv_access *t = LB_NEW(lv_access);
    t->token = lb_strdup(tok);
    t->grant = gr;
    t->expires_ms = lb_time_now_ms() + gr->client->access_ttl_ms;
    lb_map_put(&s->access, t->token, t);

    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "access_token", t->token);
    if (gr->refresh != NULL) lb_json_kv_str(g, "refresh_token", gr->refresh);
    lb_json_kv_str(g, "token_type", "Bearer");
    if (gr->scope != NULL)
        lb_json_kv_str(g, "scope", gr->scope);
    else
        lb_json_kv_str(g, "scope", ALL_SCOPES);
    lb_json_kv_int(g, "expires_in", gr->client->access_ttl_ms / 1000);
    yajl_gen_map_close(g);
    sim_respond_json_extra(req, 200, g, "Cache-Control: no-store\r\nPragma: no-cache\r\n");
}

static void new_refresh(lv_sim *s, lv_grant *gr)
{
    char tok[49];
    sim_random_chars(tok, 48);
    if (gr->refresh != NULL)
        SIM_PUSH(gr->old_refresh, gr->refresh); /* still a map key: refused as rotated */
    gr->refresh = lb_strdup(tok);
    lb_map_put(&s->refresh, gr->refresh, gr);
}

static void invalid_grant(lb_http_req *req, const lv_client *c, const char *desc)
{
    lv_oauth_error(req, c->invalid_grant_status, "invalid_grant", desc);
}

static void r_token(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    params p = {.form = req->body, .form_len = req->body_len};
    size_t n;
    const char *ct = lb_http_req_header(req, "content-type", &n);
    if (ct != NULL && strncasecmp(ct, "application/json", 16) == 0) {
        char err[128];
        p.json = lb_json_parse(req->body, req->body_len, err, sizeof(err));
        if (p.json == NULL) {
            lv_oauth_error(req, 400, "invalid_request", "The body is not valid JSON");
            return;
        }
    }
    char grant_type[64], client_id[256] = "", secret[256] = "", code[256], redirect[PARAM_SIZE],
                         refresh[256];
    param(&p, "grant_type", grant_type, sizeof(grant_type));
    basic_client(req, client_id, sizeof(client_id), secret, sizeof(secret));
    if (client_id[0] == '\0') {
        param(&p, "client_id", client_id, sizeof(client_id));
        param(&p, "client_secret", secret, sizeof(secret));
    }
    int has_code = param(&p, "code", code, sizeof(code));
    int has_redirect = param(&p, "redirect_uri", redirect, sizeof(redirect));
    int has_refresh = param(&p, "refresh_token", refresh, sizeof(refresh));
    if (p.json != NULL) yajl_tree_free(p.json);

    lv_client *c = lb_map_get(&s->clients, client_id);
    if (grant_type[0] == '\0') {
        lv_oauth_error(req, 400, "invalid_request", "Missing required parameter: grant_type");
        return;
    }
    if (c == NULL || strcmp(c->secret, secret) != 0) {
        lv_oauth_error(req, 401, "invalid_client", "Unknown client or wrong client secret");
        return;
    }
    if (strcmp(grant_type, "authorization_code") == 0) {
        lv_code *cd = has_code ? lb_map_get(&s->codes, code) : NULL;
        if (cd == NULL || cd->client != c) {
            invalid_grant(req, c, "Invalid authorization code");
            return;
        }
        if (cd->used) {
            invalid_grant(req, c, "Invalid authorization code (already used)");
            return;
        }
        if (lb_time_now_ms() > cd->expires_ms) {
            invalid_grant(req, c, "Invalid authorization code (expired)");
            return;
        }
        if (!has_redirect || strcmp(redirect, cd->redirect_uri) != 0) {
            invalid_grant(req, c, "redirect_uri does not match the one of the authorization");
            return;
        }
        cd->used = 1;
        lv_grant *gr = LB_NEW(lv_grant);
        char id[32];
        snprintf(id, sizeof(id), "g%llu", (unsigned long long)++s->grant_seq);
        gr->id = lb_strdup(id);
        gr->client = c;
        gr->account = cd->account;
        gr->perms = cd->perms;
        gr->scope = cd->scope ? lb_strdup(cd->scope) : NULL;
        gr->offline = cd->offline;
        gr->created = gr->refreshed = lb_time_now_ms();
        SIM_PUSH(s->grant_list, gr);
        lb_map_put(&s->grants, gr->id, gr);
        if (gr->offline) new_refresh(s, gr);
        lb_debug("lever-sim", "token: grant %s for %s", gr->id, c->client_id);
        issue(req, s, gr);
    } else if (strcmp(grant_type, "refresh_token") == 0) {
        lv_grant *gr = has_refresh ? lb_map_get(&s->refresh, refresh) : NULL;
        if (gr == NULL || gr->client != c) {
            invalid_grant(req, c, "Unknown or invalid refresh token.");
            return;
        }
        if (gr->revoked) {
            invalid_grant(req, c, "Unknown or invalid refresh token. (revoked)");
            return;
        }
        if (gr->refresh == NULL || strcmp(gr->refresh, refresh) != 0) {
            if (c->reuse_detection) gr->revoked = 1;
            invalid_grant(req, c, "Unknown or invalid refresh token. (rotated)");
            return;
        }
        new_refresh(s, gr);
        gr->refreshes++;
        gr->refreshed = lb_time_now_ms();
        issue(req, s, gr);
    } else {
        lv_oauth_error(req, 400, "unsupported_grant_type", "Unsupported grant_type");
    }
}

/* ---- control: /_sim/oauth ------------------------------------------------------------ */

static void gen_client(yajl_gen g, const lv_client *c)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "client_id", c->client_id);
    lb_json_kv_str(g, "client_secret", c->secret);
    lb_json_key(g, "redirect_uris");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < c->redirect_uris.n; i++)
        lb_json_str(g, c->redirect_uris.v[i]);
    yajl_gen_array_close(g);
    lb_json_kv_int(g, "access_ttl_ms", c->access_ttl_ms);
    lb_json_kv_bool(g, "deny", c->deny);
    lb_json_kv_str(g, "account", c->account);
    lb_json_kv_bool(g, "check_audience", c->check_audience);
    lb_json_kv_bool(g, "reuse_detection", c->reuse_detection);
    lb_json_kv_int(g, "invalid_grant_status", c->invalid_grant_status);
    if (c->rate >= 0)
        lb_json_kv_double(g, "rate", c->rate);
    else
        lb_json_kv_null(g, "rate");
    if (c->burst >= 0)
        lb_json_kv_int(g, "burst", c->burst);
    else
        lb_json_kv_null(g, "burst");
    lb_json_key(g, "permissions");
    lv_perms_gen(g, c->default_perms);
    yajl_gen_map_close(g);
}

static void gen_grant(yajl_gen g, lv_sim *s, const lv_grant *gr)
{
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "id", gr->id);
    lb_json_kv_str(g, "client_id", gr->client->client_id);
    lb_json_kv_str(g, "account", gr->account->name);
    lb_json_kv_str(g, "scope", gr->scope);
    lb_json_key(g, "permissions");
    lv_perms_gen(g, gr->perms);
    lb_json_kv_str(g, "refresh_token", gr->refresh);
    lb_json_key(g, "old_refresh_tokens");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < gr->old_refresh.n; i++)
        lb_json_str(g, gr->old_refresh.v[i]);
    yajl_gen_array_close(g);
    lb_json_kv_bool(g, "revoked", gr->revoked);
    lb_json_kv_int(g, "refreshes", (int64_t)gr->refreshes);
    lb_json_kv_int(g, "created", gr->created);
    lb_json_kv_int(g, "refreshed", gr->refreshed);
    int64_t live = 0, now = lb_time_now_ms();
    for (size_t i = 0; i < s->access.cap; i++) {
        const lv_access *t = s->access.slots[i].key ? s->access.slots[i].value : NULL;
        if (t != NULL && t->grant == gr && t->expires_ms > now) live++;
    }
    lb_json_kv_int(g, "live_access_tokens", live);
    yajl_gen_map_close(g);
}

static void oauth_state(lb_http_req *req, lv_sim *s, int status)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "clients");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < s->client_list.n; i++)
        gen_client(g, s->client_list.v[i]);
    yajl_gen_array_close(g);
    lb_json_key(g, "grants");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < s->grant_list.n; i++)
        gen_grant(g, s, s->grant_list.v[i]);
    yajl_gen_array_close(g);
    lb_json_kv_str(g, "audience", s->audience ? s->audience : audiences[0]);
    yajl_gen_map_close(g);
    sim_respond_json(req, status, g);
}

static void r_oauth_get(lb_http_req *req, void *data)
{
    oauth_state(req, data, 200);
}

static void ctl_bad(lb_http_req *req, const char *msg)
{
    sim_control_error(req, 400, "bad_request", msg);
}

static void r_oauth_post(lb_http_req *req, void *data)
{
    lv_sim *s = data;
    yajl_val b = sim_body_json(req, ctl_bad);
    if (b == NULL) return;
    const char *id = sim_json_str(b, "client_id");
    const char *secret = sim_json_str(b, "client_secret");
    const char *msg = NULL;
    lv_client *c = id ? lb_map_get(&s->clients, id) : NULL;
    uint64_t perms = LV_PERMS_ALL;
    char bad[160];
    yajl_val uris = lb_json_get(b, "redirect_uris");
    int64_t n;
    double d;
    if (id == NULL || id[0] == '\0')
        msg = "client_id is required";
    else if (c == NULL && (secret == NULL || secret[0] == '\0'))
        msg = "client_secret is required for a new client";
    else if (uris != NULL && !YAJL_IS_ARRAY(uris))
        msg = "redirect_uris must be a list";
    else if ((lb_json_get(b, "permissions") || lb_json_get(b, "except")) &&
             lv_perms_parse(lb_json_get(b, "permissions"), lb_json_get(b, "except"), &perms, bad,
                            sizeof(bad)) != 0)
        msg = "unknown permission";
    if (msg != NULL) {
        yajl_tree_free(b);
        ctl_bad(req, msg);
        return;
    }
    if (c == NULL) {
        c = LB_NEW(lv_client);
        c->client_id = lb_strdup(id);
        c->secret = lb_strdup(secret);
        c->account = lb_strdup("default");
        c->access_ttl_ms = 3600 * 1000;
        c->check_audience = 1;
        c->invalid_grant_status = 400;
        c->default_perms = LV_PERMS_ALL;
        c->rate = -1;
        c->burst = -1;
        lb_map_put(&s->clients, c->client_id, c);
        SIM_PUSH(s->client_list, c);
    } else if (secret != NULL && secret[0] != '\0') {
        lb_free(c->secret);
        c->secret = lb_strdup(secret);
    }
    if (uris != NULL) {
        sim_strv_free(&c->redirect_uris);
        for (size_t i = 0; i < uris->u.array.len; i++)
            if (YAJL_IS_STRING(uris->u.array.values[i]))
                SIM_PUSH(c->redirect_uris, lb_strdup(uris->u.array.values[i]->u.string));
    }
    if (lb_json_get(b, "permissions") || lb_json_get(b, "except")) c->default_perms = perms;
    if (sim_json_num(b, "access_ttl", &d)) c->access_ttl_ms = (int64_t)(d * 1000);
    if (lb_json_get_int(b, "access_ttl_ms", &n) == 0) c->access_ttl_ms = n;
    c->deny = sim_json_bool(b, "deny", c->deny);
    c->check_audience = sim_json_bool(b, "check_audience", c->check_audience);
    c->reuse_detection = sim_json_bool(b, "reuse_detection", c->reuse_detection);
    if (lb_json_get_int(b, "invalid_grant_status", &n) == 0 && n >= 400 && n <= 499)
        c->invalid_grant_status = (int)n;
    const char *acct = sim_json_str(b, "account");
    if (acct != NULL) {
        lv_account_get(s, acct, 1);
        lb_free(c->account);
        c->account = lb_strdup(acct);
    }
    if (sim_json_num(b, "rate", &d)) c->rate = d;
    if (lb_json_get_int(b, "burst", &n) == 0) c->burst = (int)n;
    const char *aud = sim_json_str(b, "audience");
    if (aud != NULL) {
        lb_free(s->audience);
        s->audience = lb_strdup(aud);
    }
    /* Actions on the client's grants. */
    const char *one = sim_json_str(b, "revoke_grant");
    int revoke_all = sim_json_bool(b, "revoke", 0);
    int expire = sim_json_bool(b, "expire_access_tokens", 0);
    for (size_t i = 0; i < s->grant_list.n; i++) {
        lv_grant *gr = s->grant_list.v[i];
        if (gr->client == c && (revoke_all || (one && strcmp(one, gr->id) == 0))) gr->revoked = 1;
    }
    if (expire) {
        int64_t past = lb_time_now_ms() - 1;
        for (size_t i = 0; i < s->access.cap; i++) {
            lv_access *t = s->access.slots[i].key ? s->access.slots[i].value : NULL;
            if (t != NULL && t->grant->client == c) t->expires_ms = past;
        }
    }
    yajl_tree_free(b);
    oauth_state(req, s, 200);
}

void lv_oauth_register(lv_sim *s)
{
    lb_router *r = s->app.router;
    lb_router_add(r, "GET", "/authorize", r_authorize, s);
    lb_router_add(r, "POST", "/oauth/token", r_token, s);
    lb_router_add(r, "GET", "/_sim/oauth", r_oauth_get, s);
    lb_router_add(r, "POST", "/_sim/oauth", r_oauth_post, s);
}
