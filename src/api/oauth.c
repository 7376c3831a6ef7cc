/* OAuth 2.0 with Lever (authorization code, rotating refresh tokens):
 * the two routes, glue over engine/credentials.c.
 *
 * POST /v1/tenants/{tenant}/lever/oauth gives the authorize URL, whose state
 * (MAC'd, bound to the tenant, valid 10 minutes, single-use) the credentials
 * module makes. GET /oauth/lever/callback hands the code and the state to
 * it (it checks the state, exchanges the code, stores the tokens sealed and
 * starts provisioning) and answers a short HTML page. Refreshing the tokens
 * is the credentials module's too. */
#include "api/api.h"

#include "core/alloc.h"
#include "core/strbuf.h"
#include "core/time.h"
#include "engine/credentials.h"
#include "http/response.h"
#include "json/json.h"
#include "state/tenants.h"

#include <stdio.h>
#include <string.h>

/* ---- POST /v1/tenants/{tenant}/lever/oauth ----------------------------------- */

static void oauth_start(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const lb_tenant *t = lb_api_tenant_for(api, req, 0);
    if (t == NULL) return;
    if (!lb_cred_oauth_enabled(api->cred)) {
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
    int64_t link_expiry = 0;
    if (!lb_api_connect_grant_expiry(api, req, &link_expiry)) link_expiry = 0;
    char *url = lb_cred_oauth_authorize_url(api->cred, t->id, link_expiry);
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "authorize_url", url);
    yajl_gen_map_close(g);
    lb_free(url);
    lb_http_respond_json(req, 200, g);
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

/* A callback waiting for the credentials module. Owned by the handler;
 * freed once answered. */
typedef struct {
    lb_api *api;
    lb_http_req *req;
} callback_ctx;

static void finished(void *data, const lb_cred_oauth_result *r)
{
    callback_ctx *cc = data;
    lb_http_req *req = cc->req;
    switch (r->outcome) {
    case LB_CRED_OAUTH_CONNECTED: {
        char back[1536];
        int has_back = r->link_expiry > lb_time_now_ms();
        if (has_back) lb_api_connect_url(cc->api, r->tenant, r->link_expiry, back, sizeof(back));
        page_back(req, 200, "Lever connected",
                  "Lever is connected. leverbridge is now setting up the webhook in Lever.",
                  has_back ? back : NULL);
        break;
    }
    case LB_CRED_OAUTH_BAD_STATE:
        page(req, 400, "Not connected", r->why);
        break;
    case LB_CRED_OAUTH_USED:
        page(req, 400, "Not connected", "This authorization was already used; start again.");
        break;
    case LB_CRED_OAUTH_BUSY:
        page(req, 503, "Not connected", "The server cannot take this now; try again.");
        break;
    case LB_CRED_OAUTH_NO_CALL:
        page(req, 503, "Not connected", "The server cannot reach Lever now; try again.");
        break;
    case LB_CRED_OAUTH_UNREACHABLE:
        page(req, 502, "Not connected", "Lever could not be reached; try again.");
        break;
    case LB_CRED_OAUTH_REFUSED:
        page(req, 400, "Not connected", "Lever refused the authorization code; start again.");
        break;
    case LB_CRED_OAUTH_NO_TENANT:
        page(req, 404, "Not connected", "The tenant no longer exists.");
        break;
    case LB_CRED_OAUTH_NOT_STORED:
        page(req, 503, "Not connected", "The connection could not be stored; try again.");
        break;
    }
    lb_free(cc);
}

/* A 503 of the forwarding (the tenant's holder did not answer): a page. */
static void unavailable_page(lb_http_req *req, const char *msg)
{
    page(req, 503, "Not connected", msg);
}

static void callback(lb_http_req *req, void *data)
{
    lb_api *api = data;
    char error[256], desc[512], code[1024], state[512];
    if (!lb_cred_oauth_enabled(api->cred)) {
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
    /* The code exchange is a Lever call of the tenant: its lease holder
     * makes it, and stores and provisions the connection at once. */
    char tenant[LB_TENANT_ID_MAX + 1];
    const char *st = lb_api_query(req, "state", state, sizeof(state));
    if (lb_cred_oauth_state_tenant(api->cred, st, tenant, sizeof(tenant)) == 0 &&
        lb_api_forwarded_as(api, req, tenant, callback, unavailable_page))
        return;
    callback_ctx *cc = LB_NEW(callback_ctx);
    cc->api = api;
    cc->req = req;
    lb_cred_oauth_finish(api->cred, lb_api_query(req, "code", code, sizeof(code)),
                         lb_api_query(req, "state", state, sizeof(state)), finished, cc);
}

void lb_api_oauth_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "POST", "/v1/tenants/{tenant}/lever/oauth", oauth_start, api);
    lb_router_add(r, "GET", "/oauth/lever/callback", callback, api);
}
