/* GET /openapi.json (api.md "API description"), no token: the OpenAPI 3.1
 * document src/api/openapi.json, built into the binary (pages.h). It is
 * revalidated on every use (no-cache) against its ETag, a hash of the
 * content, so a client keeps its copy until the binary changes. */
#include "api/api.h"

#include "api/pages.h"
#include "http/response.h"

#include <stdio.h>

static void openapi(lb_http_req *req, void *data)
{
    (void)data;
    const lb_page_file *f = &lb_openapi_file;
    char headers[128];
    snprintf(headers, sizeof(headers),
             "Cache-Control: no-cache\r\nETag: \"%s\"\r\nX-Content-Type-Options: nosniff\r\n",
             f->hash);
    if (lb_api_etag_match(req, f->hash)) {
        lb_http_respond(req, 304, NULL, headers, NULL, 0, NULL, NULL);
        return;
    }
    lb_http_respond_static(req, 200, f->content_type, headers, (const char *)f->data, f->len);
}

void lb_api_openapi_register(lb_api *api, lb_router *r)
{
    lb_router_add(r, "GET", "/openapi.json", openapi, api);
}
