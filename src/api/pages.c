/* The hosted pages (api.md "Connect links and pages"): GET /connect/{token}
 * (the customer's connect page, or a 403 page for a bad or expired link),
 * GET /console (the operator's page) and GET /assets/{name} (their CSS and
 * JavaScript). Every file is built into the binary (pages.h).
 *
 * HTML is never cached (the connect URL carries a grant) and goes out with a
 * strict Content-Security-Policy: scripts, styles and API calls from this
 * origin only, no inline code, no framing, no referrer (so the token in the
 * URL is not sent to Lever on the OAuth redirect). Assets carry an ETag (a
 * hash of the content); the HTML asks for "/assets/<name>?v=<hash>", which
 * may be cached for a year because a new content has a new URL. */
#include "api/api.h"

#include "api/pages.h"
#include "core/time.h"
#include "http/response.h"

#include <stdio.h>
#include <string.h>

#define CSP                                                                                        \
    "Content-Security-Policy: default-src 'none'; script-src 'self'; style-src 'self'; "           \
    "connect-src 'self'; img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; "       \
    "base-uri 'none'\r\n"
#define COMMON_HEADERS                                                                             \
    CSP "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n"                      \
        "X-Frame-Options: DENY\r\n"
#define HTML_HEADERS "Cache-Control: no-store\r\n" COMMON_HEADERS

const char lb_api_page_headers[] = HTML_HEADERS;

static const lb_page_file *page_find(const char *name)
{
    for (size_t i = 0; i < lb_page_nfiles; i++)
        if (strcmp(lb_page_files[i].name, name) == 0) return &lb_page_files[i];
    return NULL;
}

void lb_api_page_asset_href(const char *name, char *out, size_t size)
{
    const lb_page_file *f = page_find(name);
    if (f != NULL)
        snprintf(out, size, "/assets/%s?v=%s", f->name, f->hash);
    else
        snprintf(out, size, "/assets/%s", name);
}

static void html(lb_http_req *req, int status, const char *name)
{
    const lb_page_file *f = page_find(name);
    if (f == NULL) { /* a build without the file: a bug, answered plainly */
        lb_http_respond_error(req, 500, "internal", "The page is missing from this build.", NULL);
        return;
    }
    lb_http_respond_static(req, status, f->content_type, HTML_HEADERS, (const char *)f->data,
                           f->len);
}

static void connect_page(lb_http_req *req, void *data)
{
    lb_api *api = data;
    const char *token = lb_http_req_param(req, "token");
    char tenant[LB_TENANT_ID_MAX + 1];
    int ok = token != NULL && lb_links_check(&api->links, api->tenants, token, strlen(token),
                                             lb_time_now_ms(), tenant, sizeof(tenant), NULL) == 0;
    html(req, ok ? 200 : 403, ok ? "connect.html" : "expired.html");
}

static void console_page(lb_http_req *req, void *data)
{
    (void)data;
    html(req, 200, "console.html");
}

int lb_api_etag_match(const lb_http_req *req, const char *hash)
{
    size_t len;
    const char *inm = lb_http_req_header(req, "if-none-match", &len);
    if (inm == NULL) return 0;
    if (len == 1 && inm[0] == '*') return 1;
    char etag[24];
    int n = snprintf(etag, sizeof(etag), "\"%s\"", hash);
    return memmem(inm, len, etag, (size_t)n) != NULL;
}

static void asset(lb_http_req *req, void *data)
{
    (void)data;
    const char *name = lb_http_req_param(req, "name");
    const lb_page_file *f = name ? page_find(name) : NULL;
    if (f == NULL || strstr(f->name, ".html") != NULL) {
        lb_http_respond_error(req, 404, "not_found", "No such asset.", NULL);
        return;
    }
    char v[32];
    const char *ver = lb_api_query(req, "v", v, sizeof(v));
    int versioned = ver != NULL && strcmp(ver, f->hash) == 0;
    char headers[1024];
    snprintf(headers, sizeof(headers), "Cache-Control: %s\r\nETag: \"%s\"\r\n" COMMON_HEADERS,
             versioned ? "public, max-age=31536000, immutable" : "no-cache", f->hash);
    if (lb_api_etag_match(req, f->hash)) {
        lb_http_respond(req, 304, NULL, headers, NULL, 0, NULL, NULL);
        return;
    }
    lb_http_respond_static(req, 200, f->content_type, headers, (const char *)f->data, f->len);
}

void lb_api_pages_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "GET", "/connect/{token}", connect_page, api);
    lb_router_add(r, "GET", "/console", console_page, api);
    lb_router_add(r, "GET", "/assets/{name}", asset, api);
}
