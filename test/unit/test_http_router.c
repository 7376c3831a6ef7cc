/* The router: HEAD served by the GET route (RFC 9110 9.3.2), and
 * lb_router_check, which runs the guard on a routed request before its body
 * is read (100 Continue). Only matched requests are driven here: the 404 and
 * 405 answers need a connection and are covered by test_http.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "http/router.h"

#include <llhttp.h>
#include <string.h>

typedef struct {
    int calls;
    const char *route;
    const char *tenant;
    int verdict;
} seen;

static void route_fn(lb_http_req *req, void *data)
{
    seen *s = data;
    s->calls++;
    s->route = req->route;
    s->tenant = lb_http_req_param(req, "tenant");
}

static int guard(lb_http_req *req, void *data)
{
    seen *s = data;
    s->calls++;
    s->route = req->route;
    s->tenant = lb_http_req_param(req, "tenant");
    return s->verdict;
}

static void req_init(lb_http_req *req, const char *method, const char *path)
{
    memset(req, 0, sizeof(*req));
    req->method_name = method;
    req->method = strcmp(method, "HEAD") == 0  ? HTTP_HEAD
                  : strcmp(method, "GET") == 0 ? HTTP_GET
                                               : HTTP_POST;
    req->path = path;
    req->query = "";
    req->body = "";
}

static void head_is_served_by_the_get_route(void **state)
{
    (void)state;
    seen get = {0}, post = {0};
    lb_router *r = lb_router_new();
    assert_int_equal(lb_router_add(r, "POST", "/healthz", route_fn, &post), 0);
    assert_int_equal(lb_router_add(r, "GET", "/healthz", route_fn, &get), 0);
    assert_int_equal(lb_router_add(r, "GET", "/v1/tenants/{tenant}", route_fn, &get), 0);
    lb_http_req req;
    req_init(&req, "HEAD", "/healthz");
    lb_router_dispatch(&req, r);
    assert_int_equal(get.calls, 1);
    assert_int_equal(post.calls, 0);
    assert_string_equal(get.route, "/healthz");
    req_init(&req, "HEAD", "/v1/tenants/acme");
    lb_router_dispatch(&req, r);
    assert_int_equal(get.calls, 2);
    assert_string_equal(get.route, "/v1/tenants/{tenant}");
    assert_string_equal(get.tenant, "acme");
    lb_router_free(r);
}

static void check_runs_the_guard_on_the_routed_request(void **state)
{
    (void)state;
    seen fn = {0}, g = {0};
    lb_router *r = lb_router_new();
    assert_int_equal(lb_router_add(r, "POST", "/v1/tenants/{tenant}/results", route_fn, &fn), 0);
    lb_http_req req;
    req_init(&req, "POST", "/v1/tenants/acme/results");
    assert_int_equal(lb_router_check(&req, r), 1); /* no guard: go on */
    lb_router_set_guard(r, guard, &g);
    g.verdict = 1;
    req_init(&req, "POST", "/v1/tenants/acme/results");
    assert_int_equal(lb_router_check(&req, r), 1);
    assert_int_equal(g.calls, 1);
    assert_string_equal(g.route, "/v1/tenants/{tenant}/results");
    assert_string_equal(g.tenant, "acme"); /* parameters are bound first */
    g.verdict = 0;
    req_init(&req, "POST", "/v1/tenants/acme/results");
    assert_int_equal(lb_router_check(&req, r), 0);
    assert_int_equal(g.calls, 2);
    assert_int_equal(fn.calls, 0); /* the handler runs only at dispatch */
    lb_router_free(r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(head_is_served_by_the_get_route),
        cmocka_unit_test(check_runs_the_guard_on_the_routed_request),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
