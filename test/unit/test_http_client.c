/* The curl-multi client against the project's own server, both on one loop. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "loop_helpers.h"

#include "core/alloc.h"
#include "core/error.h"
#include "http/client.h"
#include "http/response.h"
#include "http/router.h"
#include "http/server.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    uv_loop_t loop;
    lb_http_server *srv;
    lb_router *router;
    lb_http_client *client;
    char base[64];
    int done;
    int status[64];
    char body[64][256];
    int error[64];
    char retry_after[64];
    uv_timer_t delay;
    lb_http_req *held;
    void *slots[64]; /* contexts of calls not completed yet */
} fixture;

static void echo(lb_http_req *req, void *data)
{
    (void)data;
    char *copy = lb_memdup(req->body, req->body_len);
    lb_http_respond(req, 200, "application/json", NULL, copy, req->body_len, lb_free, copy);
}

static void busy(lb_http_req *req, void *data)
{
    (void)data;
    lb_http_respond_static(req, 429, "application/json", "Retry-After: 7\r\n", "{}", 2);
}

static void big(lb_http_req *req, void *data)
{
    (void)data;
    static char blob[4096];
    memset(blob, 'x', sizeof(blob));
    lb_http_respond_static(req, 200, "text/plain", NULL, blob, sizeof(blob));
}

/* Answers the request's User-Agent, with a header to keep. */
static void agent(lb_http_req *req, void *data)
{
    (void)data;
    size_t len = 0;
    const char *ua = lb_http_req_header(req, "user-agent", &len);
    char *copy = lb_memdup(ua ? ua : "", ua ? len : 0);
    lb_http_respond(req, 200, "text/plain; charset=utf-8", "Cache-Control: no-store\r\n", copy,
                    ua ? len : 0, lb_free, copy);
}

static void release_cb(uv_timer_t *t)
{
    fixture *f = t->data;
    lb_http_respond_static(f->held, 200, "application/json", NULL, "{}", 2);
    f->held = NULL;
}

static void slow(lb_http_req *req, void *data)
{
    fixture *f = data;
    f->held = req;
    uv_timer_start(&f->delay, release_cb, 500, 0);
}

static int setup(void **state)
{
    fixture *f = LB_NEW(fixture);
    uv_loop_init(&f->loop);
    f->router = lb_router_new();
    lb_router_add(f->router, "POST", "/echo", echo, f);
    lb_router_add(f->router, "PUT", "/echo", echo, f);
    lb_router_add(f->router, "GET", "/busy", busy, f);
    lb_router_add(f->router, "GET", "/big", big, f);
    lb_router_add(f->router, "GET", "/slow", slow, f);
    lb_router_add(f->router, "GET", "/agent", agent, f);
    int port = lbt_server_start(&f->loop, f->router, 100, &f->srv);
    snprintf(f->base, sizeof(f->base), "http://127.0.0.1:%d", port);
    lb_http_client_config cc = {.max_inflight = 4, .timeout_ms = 2000, .max_response = 1024};
    assert_int_equal(lb_http_client_new(&f->loop, &cc, &f->client), 0);
    uv_timer_init(&f->loop, &f->delay);
    f->delay.data = f;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    int closed = 0;
    if (f->client) lb_http_client_close(f->client, lbt_count_cb, &closed);
    lb_http_server_close(f->srv, lbt_count_cb, &closed);
    uv_close((uv_handle_t *)&f->delay, NULL);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, f->client ? 2 : 1);
    assert_int_equal(uv_loop_close(&f->loop), 0); /* no handle leaked */
    for (size_t i = 0; i < LB_COUNTOF(f->slots); i++)
        lb_free(f->slots[i]); /* calls closed without a callback */
    lb_router_free(f->router);
    lb_free(f);
    return 0;
}

typedef struct {
    fixture *f;
    int i;
} slot;

static void done_cb(const lb_http_response *res, void *data)
{
    slot *s = data;
    fixture *f = s->f;
    f->status[s->i] = res->status;
    f->error[s->i] = res->error;
    snprintf(f->body[s->i], sizeof(f->body[0]), "%.*s", (int)res->body_len, res->body);
    if (res->retry_after) snprintf(f->retry_after, sizeof(f->retry_after), "%s", res->retry_after);
    f->done++;
    f->slots[s->i] = NULL;
    lb_free(s);
}

static int start(fixture *f, int i, const char *method, const char *path, const char *body)
{
    char url[128];
    snprintf(url, sizeof(url), "%s%s", f->base, path);
    static const char *const hdrs[] = {"Content-Type: application/json", NULL};
    lb_http_request req = {.method = method,
                           .url = url,
                           .headers = hdrs,
                           .body = body,
                           .body_len = body ? strlen(body) : 0};
    slot *s = LB_NEW(slot);
    s->f = f;
    s->i = i;
    int rc = lb_http_client_start(f->client, &req, done_cb, s, NULL);
    if (rc != 0)
        lb_free(s);
    else
        f->slots[i] = s;
    return rc;
}

static void run_until(fixture *f, int n)
{
    while (f->done < n)
        uv_run(&f->loop, UV_RUN_ONCE);
}

static void post_and_put_echo(void **state)
{
    fixture *f = *state;
    assert_int_equal(start(f, 0, "POST", "/echo", "{\"a\":1}"), 0);
    assert_int_equal(start(f, 1, "PUT", "/echo", "{\"b\":2}"), 0);
    run_until(f, 2);
    assert_int_equal(f->status[0], 200);
    assert_string_equal(f->body[0], "{\"a\":1}");
    assert_int_equal(f->status[1], 200);
    assert_string_equal(f->body[1], "{\"b\":2}");
}

static void status_and_retry_after(void **state)
{
    fixture *f = *state;
    assert_int_equal(start(f, 0, "GET", "/busy", NULL), 0);
    assert_int_equal(start(f, 1, "GET", "/nope", NULL), 0);
    run_until(f, 2);
    assert_int_equal(f->status[0], 429);
    assert_string_equal(f->retry_after, "7");
    assert_int_equal(f->status[1], 404);
}

static void response_bound(void **state)
{
    fixture *f = *state;
    assert_int_equal(start(f, 0, "GET", "/big", NULL), 0);
    run_until(f, 1);
    assert_int_equal(f->status[0], 0);
    assert_int_not_equal(f->error[0], 0);
}

static void inflight_cap(void **state)
{
    fixture *f = *state;
    for (int i = 0; i < 4; i++)
        assert_int_equal(start(f, i, "GET", "/busy", NULL), 0);
    assert_int_equal(lb_http_client_has_room(f->client), 0);
    assert_int_equal(start(f, 4, "GET", "/busy", NULL), LB_ETOOBIG);
    run_until(f, 4);
    assert_int_equal(lb_http_client_inflight(f->client), 0);
    assert_int_equal(start(f, 4, "GET", "/busy", NULL), 0);
    run_until(f, 5);
}

static void refused_connection(void **state)
{
    fixture *f = *state;
    /* a port nobody listens on: bind one, then close it */
    snprintf(f->base, sizeof(f->base), "http://127.0.0.1:1");
    assert_int_equal(start(f, 0, "GET", "/x", NULL), 0);
    run_until(f, 1);
    assert_int_equal(f->status[0], 0);
    assert_int_not_equal(f->error[0], 0);
}

static void timeout(void **state)
{
    fixture *f = *state;
    char url[128];
    snprintf(url, sizeof(url), "%s/slow", f->base);
    lb_http_request req = {.method = "GET", .url = url, .timeout_ms = 100};
    slot *s = LB_NEW(slot);
    s->f = f;
    assert_int_equal(lb_http_client_start(f->client, &req, done_cb, s, NULL), 0);
    run_until(f, 1);
    assert_int_equal(f->status[0], 0);
    assert_int_not_equal(f->error[0], 0);
    while (f->held != NULL) /* let the server answer before teardown */
        uv_run(&f->loop, UV_RUN_ONCE);
}

static void close_with_calls_in_flight(void **state)
{
    fixture *f = *state;
    assert_int_equal(start(f, 0, "GET", "/slow", NULL), 0);
    assert_int_equal(start(f, 1, "POST", "/echo", "{}"), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    int closed = 0;
    lb_http_client_close(f->client, lbt_count_cb, &closed);
    f->client = NULL;
    while (f->held != NULL || closed == 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(closed, 1);
    assert_int_equal(f->done, 0); /* no callback after close */
}

static void cancel_call(void **state)
{
    fixture *f = *state;
    char url[128];
    snprintf(url, sizeof(url), "%s/slow", f->base);
    lb_http_request req = {.method = "GET", .url = url};
    slot *s = LB_NEW(slot);
    s->f = f;
    lb_http_call *call;
    assert_int_equal(lb_http_client_start(f->client, &req, done_cb, s, &call), 0);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    lb_http_call_cancel(call);
    lb_free(s);
    while (f->held != NULL)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_int_equal(f->done, 0);
    assert_int_equal(lb_http_client_inflight(f->client), 0);
}

static void retry_after_parsing(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(lb_http_retry_after_ms("120", 0, &ms), 0);
    assert_int_equal(ms, 120000);
    assert_int_equal(lb_http_retry_after_ms("0", 0, &ms), 0);
    assert_int_equal(ms, 0);
    /* Wed, 21 Oct 2015 07:28:00 GMT = 1445412480 */
    assert_int_equal(
        lb_http_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480000 - 5000, &ms), 0);
    assert_int_equal(ms, 5000);
    assert_int_equal(
        lb_http_retry_after_ms("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480000 + 5000, &ms), 0);
    assert_int_equal(ms, 0); /* in the past */
    assert_int_equal(lb_http_retry_after_ms("soon", 0, &ms), LB_EPARSE);
    assert_int_equal(lb_http_retry_after_ms("12abc", 0, &ms), LB_EPARSE);
    assert_int_equal(lb_http_retry_after_ms("-1", 0, &ms), LB_EPARSE);
    assert_int_equal(lb_http_retry_after_ms("", 0, &ms), LB_EPARSE);
}

typedef struct {
    int done;
    char body[128];
    char ctype[64];
    char headers[512];
} kept;

static void kept_cb(const lb_http_response *res, void *data)
{
    kept *k = data;
    k->done++;
    snprintf(k->body, sizeof(k->body), "%.*s", (int)res->body_len, res->body);
    snprintf(k->ctype, sizeof(k->ctype), "%s", res->content_type ? res->content_type : "");
    snprintf(k->headers, sizeof(k->headers), "%.*s", (int)res->headers_len, res->headers);
}

/* The configured User-Agent goes out; keep_headers gives the answer's
 * header lines (CRLF-ended), and every answer its Content-Type. */
static void agent_and_kept_headers(void **state)
{
    fixture *f = *state;
    lb_http_client *c;
    lb_http_client_config cc = {.max_inflight = 2, .user_agent = "lb-test (node n-1)"};
    assert_int_equal(lb_http_client_new(&f->loop, &cc, &c), 0);
    char url[128];
    snprintf(url, sizeof(url), "%s/agent", f->base);
    kept k[2] = {0};
    lb_http_request r = {.method = "GET", .url = url, .keep_headers = 1};
    assert_int_equal(lb_http_client_start(c, &r, kept_cb, &k[0], NULL), 0);
    r.keep_headers = 0;
    assert_int_equal(lb_http_client_start(c, &r, kept_cb, &k[1], NULL), 0);
    while (k[0].done + k[1].done < 2)
        uv_run(&f->loop, UV_RUN_ONCE);
    assert_string_equal(k[0].body, "lb-test (node n-1)");
    assert_string_equal(k[0].ctype, "text/plain; charset=utf-8");
    assert_non_null(strstr(k[0].headers, "Cache-Control: no-store\r\n"));
    assert_non_null(strstr(k[0].headers, "Content-Length: 18\r\n"));
    assert_null(strstr(k[0].headers, "HTTP/1.1"));
    assert_string_equal(k[1].headers, "");
    assert_string_equal(k[1].ctype, "text/plain; charset=utf-8");
    int closed = 0;
    lb_http_client_close(c, lbt_count_cb, &closed);
    while (!closed)
        uv_run(&f->loop, UV_RUN_ONCE);
}

int main(void)
{
    lb_http_client_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(post_and_put_echo, setup, teardown),
        cmocka_unit_test_setup_teardown(status_and_retry_after, setup, teardown),
        cmocka_unit_test_setup_teardown(response_bound, setup, teardown),
        cmocka_unit_test_setup_teardown(inflight_cap, setup, teardown),
        cmocka_unit_test_setup_teardown(refused_connection, setup, teardown),
        cmocka_unit_test_setup_teardown(timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(close_with_calls_in_flight, setup, teardown),
        cmocka_unit_test_setup_teardown(cancel_call, setup, teardown),
        cmocka_unit_test_setup_teardown(agent_and_kept_headers, setup, teardown),
        cmocka_unit_test(retry_after_parsing),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    lb_http_client_global_cleanup();
    return rc;
}
