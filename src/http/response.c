#include "http/response.h"

#include "core/alloc.h"
#include "core/strbuf.h"

#include <string.h>

const char *lb_http_status_text(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}

char *lb_http_error_body(const char *code, const char *message, const char *field, size_t *len)
{
    lb_strbuf b;
    lb_strbuf_init(&b, 16 * 1024);
    lb_strbuf_cat(&b, "{\"error\":{\"code\":");
    lb_strbuf_json_str(&b, code, strlen(code));
    lb_strbuf_cat(&b, ",\"message\":");
    lb_strbuf_json_str(&b, message, strlen(message));
    if (field != NULL) {
        lb_strbuf_cat(&b, ",\"field\":");
        lb_strbuf_json_str(&b, field, strlen(field));
    }
    lb_strbuf_cat(&b, "}}");
    return lb_strbuf_steal(&b, len);
}

void lb_http_respond_error_ex(lb_http_req *req, int status, const char *code, const char *message,
                              const char *field, const char *extra_headers)
{
    size_t len;
    char *body = lb_http_error_body(code, message, field, &len);
    lb_http_respond(req, status, "application/json", extra_headers, body, len, lb_free, body);
}

void lb_http_respond_error(lb_http_req *req, int status, const char *code, const char *message,
                           const char *field)
{
    lb_http_respond_error_ex(req, status, code, message, field, NULL);
}

static void gen_free(void *g)
{
    yajl_gen_free(g);
}

void lb_http_respond_json(lb_http_req *req, int status, yajl_gen g)
{
    const unsigned char *buf;
    size_t len;
    yajl_gen_get_buf(g, &buf, &len);
    lb_http_respond(req, status, "application/json", NULL, buf, len, gen_free, g);
}

void lb_http_respond_static(lb_http_req *req, int status, const char *content_type,
                            const char *extra_headers, const char *body, size_t len)
{
    lb_http_respond(req, status, content_type, extra_headers, body, len, NULL, NULL);
}
