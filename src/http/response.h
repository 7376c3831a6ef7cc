/* Response helpers: the JSON error of the contract, JSON bodies from a
 * yajl generator (written without a copy), status texts. */
#ifndef LB_HTTP_RESPONSE_H
#define LB_HTTP_RESPONSE_H

#include "http/server.h"

#include <yajl/yajl_gen.h>

/* {"error":{"code":..,"message":..[,"field":..]}} as an lb_malloc'd string. */
char *lb_http_error_body(const char *code, const char *message, const char *field, size_t *len);

void lb_http_respond_error(lb_http_req *req, int status, const char *code, const char *message,
                           const char *field);
void lb_http_respond_error_ex(lb_http_req *req, int status, const char *code, const char *message,
                              const char *field, const char *extra_headers);
/* Answers with the generator's buffer and frees the generator afterwards. */
void lb_http_respond_json(lb_http_req *req, int status, yajl_gen g);
/* A body that outlives the request (static or owned elsewhere). */
void lb_http_respond_static(lb_http_req *req, int status, const char *content_type,
                            const char *extra_headers, const char *body, size_t len);

#endif
