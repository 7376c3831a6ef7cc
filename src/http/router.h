/* A router over path patterns with parameters: "/v1/tenants/{tenant}/lever".
 * A parameter matches one non-empty segment and is percent-decoded into the
 * request. No match: 404 not_found; a path that matches under other methods:
 * 405 method_not_allowed with Allow. HEAD is served by the GET route (the
 * server drops the body) and Allow lists it next to GET. The matched
 * pattern becomes req->route,
 * the label of the request metrics. Routes are set up before serving. */
#ifndef LB_HTTP_ROUTER_H
#define LB_HTTP_ROUTER_H

#include "http/server.h"

typedef struct lb_router lb_router;
typedef void (*lb_route_fn)(lb_http_req *req, void *data);
/* 1 when the routed request may go on, else 0 after answering it (401...). */
typedef int (*lb_route_guard)(lb_http_req *req, void *data);

lb_router *lb_router_new(void);
void lb_router_free(lb_router *r);
/* method: "GET", "POST", ...; 0, or LB_EINVAL for a malformed pattern. */
int lb_router_add(lb_router *r, const char *method, const char *pattern, lb_route_fn fn,
                  void *data);
/* An lb_http_handler: pass the router as its data. */
void lb_router_dispatch(lb_http_req *req, void *router);
/* The guard lb_router_check runs on a routed request (one for the router). */
void lb_router_set_guard(lb_router *r, lb_route_guard fn, void *data);
/* An lb_http_check (100 Continue): 404 or 405 as dispatch would answer, else
 * the guard's verdict, else 1. Pass the router as its data. */
int lb_router_check(lb_http_req *req, void *router);

#endif
