/* The outbound queue against the project's own HTTP server on one loop:
 * rate and burst honoured, round-robin fairness, 429 absorbed and retried. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "loop_helpers.h"

#include "core/alloc.h"
#include "core/error.h"
#include "engine/outbound.h"
#include "http/response.h"
#include "http/router.h"
#include "http/server.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CALLS 12000

typedef struct {
    uv_loop_t loop;
    lb_http_server *srv;
    lb_router *router;
    lb_http_client *client;
    lb_outbound *ob;
    char url[64];
    int throttle; /* answer 429 this many times */
    const char *retry_after_hdr;
    int served;
    uint64_t served_ns[MAX_CALLS];
    int done;
    int status_ok;
} fixture;

typedef struct {
    lb_ob_call call;
    fixture *f;
    uint64_t done_ns;
    int status;
    int calls;
} job;

static void handler(lb_http_req *req, void *data)
{
    fixture *f = data;
    if (f->throttle > 0) {
        f->throttle--;
        lb_http_respond_static(req, 429, "application/json", f->retry_after_hdr, "{}", 2);
        return;
    }
    if (f->served < MAX_CALLS) f->served_ns[f->served] = uv_hrtime();
    f->served++;
    lb_http_respond_static(req, 200, "application/json", NULL, "{\"ok\":true}", 11);
}

static int setup(void **state)
{
    fixture *f = LB_NEW(fixture);
    uv_loop_init(&f->loop);
    f->router = lb_router_new();
    lb_router_add(f->router, "GET", "/x", handler, f);
    int port = lbt_server_start(&f->loop, f->router, 1000, &f->srv);
    snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%d/x", port);
    lb_http_client_config cc = {.max_inflight = 64, .timeout_ms = 5000};
    assert_int_equal(lb_http_client_new(&f->loop, &cc, &f->client), 0);
    assert_int_equal(lb_outbound_new(&f->loop, f->client, &f->ob), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    int closed = 0;
    lb_http_client_close(f->client, lbt_count_cb, &closed);
    lb_outbound_close(f->ob, lbt_count_cb, &closed);
    lb_http_server_close(f->srv, lbt_count_cb, &closed);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(closed, 3);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    lb_router_free(f->router);
    lb_free(f);
    return 0;
}

static void job_done(lb_ob_call *call, const lb_http_response *res)
{
    job *j = (job *)call;
    j->done_ns = uv_hrtime();
    j->status = res->status;
    j->calls++;
    j->f->done++;
}

static job *submit_n(fixture *f, lb_ob_tenant *t, int n)
{
    job *jobs = lb_calloc((size_t)n, sizeof(job));
    for (int i = 0; i < n; i++) {
        jobs[i].f = f;
        jobs[i].call.req.method = "GET";
        jobs[i].call.req.url = f->url;
        jobs[i].call.cb = job_done;
        assert_int_equal(lb_outbound_submit(t, &jobs[i].call), 0);
    }
    return jobs;
}

static void run_until(fixture *f, int n)
{
    while (f->done < n)
        uv_run(&f->loop, UV_RUN_ONCE);
}

/* rate 200/s burst 20: 300 calls take (300-20)/200 = 1.4 s; never more than
 * 20 + 200*w calls in any window w. */
static void rate_and_burst(void **state)
{
    fixture *f = *state;
    lb_ob_tenant *t = lb_outbound_tenant(f->ob, "a", 200, 20);
    uint64_t t0 = uv_hrtime();
    job *jobs = submit_n(f, t, 300);
    run_until(f, 300);
    double took = (double)(uv_hrtime() - t0) / 1e9;
    assert_true(took > 1.4 * 0.98);
    assert_true(took < 1.4 * 1.10);
    /* in any 1 s window, at most burst + rate calls (+1 for the boundary) */
    for (int i = 0; i < f->served; i++) {
        int in = 0;
        for (int k = i; k < f->served && f->served_ns[k] - f->served_ns[i] < 1000000000ull; k++)
            in++;
        assert_true(in <= 20 + 200 + 1);
    }
    for (int i = 0; i < 300; i++)
        assert_int_equal(jobs[i].status, 200);
    lb_free(jobs);
}

/* A tenant with 10,000 queued calls does not hold back another's first. */
static void round_robin_fairness(void **state)
{
    fixture *f = *state;
    lb_ob_tenant *big = lb_outbound_tenant(f->ob, "big", 0, 0);
    lb_ob_tenant *small = lb_outbound_tenant(f->ob, "small", 0, 0);
    job *many = submit_n(f, big, 10000);
    /* let the big tenant get going */
    while (f->done < 200)
        uv_run(&f->loop, UV_RUN_ONCE);
    uint64_t t0 = uv_hrtime();
    job *one = submit_n(f, small, 1);
    while (one[0].calls == 0)
        uv_run(&f->loop, UV_RUN_ONCE);
    double waited = (double)(one[0].done_ns - t0) / 1e9;
    assert_true(waited < 0.1);
    assert_true(lb_outbound_tenant_queued(big) > 1000); /* it really was behind a backlog */
    run_until(f, 10001);
    assert_int_equal(f->served, 10001);
    for (int i = 0; i < 10000; i++)
        assert_int_equal(many[i].status, 200);
    lb_free(many);
    lb_free(one);
}

/* 429 with Retry-After: held at least that long, retried, one callback. */
static void throttled_call_is_retried(void **state)
{
    fixture *f = *state;
    f->throttle = 1;
    f->retry_after_hdr = "Retry-After: 1\r\n";
    lb_ob_tenant *t = lb_outbound_tenant(f->ob, "t", 10, 20);
    uint64_t t0 = uv_hrtime();
    job *jobs = submit_n(f, t, 3);
    run_until(f, 3);
    double took = (double)(uv_hrtime() - t0) / 1e9;
    assert_true(took >= 0.99 && took < 2.0);
    lb_outbound_stats st;
    lb_outbound_stats_get(f->ob, &st);
    assert_int_equal(st.throttled, 1);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(jobs[i].calls, 1);
        assert_int_equal(jobs[i].status, 200);
    }
    lb_free(jobs);
}

static void hold_bounds(void **state)
{
    (void)state;
    assert_int_equal(lb_outbound_hold_ms("0", 0, 1, 2000), 1000);      /* clamped up */
    assert_int_equal(lb_outbound_hold_ms("3", 0, 1, 2000), 3000);      /* not by the refill */
    assert_int_equal(lb_outbound_hold_ms("9999", 0, 1, 2000), 300000); /* clamped down */
    /* Without Retry-After, never longer than the bucket's refill time. */
    for (unsigned n = 1; n < 40; n++) {
        int64_t h = lb_outbound_hold_ms(NULL, 0, n, 2000);
        assert_true(h >= 250 && h <= 2000);
    }
    assert_int_equal(lb_outbound_refill_ms(10, 20), 2000);    /* Lever's defaults */
    assert_int_equal(lb_outbound_refill_ms(0, 0), 2000);      /* unlimited: Lever's defaults */
    assert_int_equal(lb_outbound_refill_ms(1000, 100), 1000); /* at least 1 s */
    assert_int_equal(lb_outbound_refill_ms(0.1, 20), 60000);  /* at most 1 min */
}

static void wake_cb(uv_timer_t *timer)
{
    (void)timer;
}

/* 50 calls of one tenant in flight, the first 20 answered 429 with no
 * Retry-After (a burst after a restart whose local bucket started full): one
 * throttling episode, one hold of at most the refill time, every call done
 * within a few seconds. Before episodes were counted, each 429 escalated the
 * backoff and the largest of ~20 draws up to 5 min held the tenant. */
static void burst_of_429s_is_one_episode(void **state)
{
    fixture *f = *state;
    f->throttle = 20;
    f->retry_after_hdr = NULL;
    lb_ob_tenant *t = lb_outbound_tenant(f->ob, "b", 1000, 100);
    uv_timer_t wake; /* bounds each loop turn, so a long hold fails the test, not hangs it */
    uv_timer_init(&f->loop, &wake);
    uv_timer_start(&wake, wake_cb, 50, 50);
    uint64_t t0 = uv_hrtime();
    job *jobs = submit_n(f, t, 50);
    while (f->done < 50 && uv_hrtime() - t0 < 20000000000ull)
        uv_run(&f->loop, UV_RUN_ONCE);
    double took = (double)(uv_hrtime() - t0) / 1e9;
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT); /* runs the close before wake leaves scope */
    assert_int_equal(f->done, 50);
    /* one hold of at most LB_OUTBOUND_REFILL_MIN_MS (100 / 1000 per s
     * refills in 0.1 s), with slack for the calls themselves */
    assert_true(took < (double)LB_OUTBOUND_REFILL_MIN_MS / 1000.0 + 1.0);
    lb_outbound_stats st;
    lb_outbound_stats_get(f->ob, &st);
    assert_int_equal(st.throttled, 20);
    for (int i = 0; i < 50; i++) {
        assert_int_equal(jobs[i].calls, 1);
        assert_int_equal(jobs[i].status, 200);
    }
    lb_free(jobs);
}

static void pause_and_remove(void **state)
{
    fixture *f = *state;
    lb_ob_tenant *t = lb_outbound_tenant(f->ob, "p", 0, 0);
    lb_outbound_tenant_pause(t, 1);
    job *jobs = submit_n(f, t, 5);
    for (int i = 0; i < 20; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->served, 0);
    assert_int_equal(lb_outbound_tenant_queued(t), 5);
    assert_int_equal(lb_outbound_cancel(&jobs[4].call), 1);
    lb_outbound_tenant_pause(t, 0);
    run_until(f, 4);
    assert_int_equal(jobs[4].calls, 0);
    /* removal cancels queued calls with a callback each */
    lb_ob_tenant *r = lb_outbound_tenant(f->ob, "r", 0, 0);
    lb_outbound_tenant_pause(r, 1);
    job *more = submit_n(f, r, 3);
    lb_outbound_tenant_remove(f->ob, "r");
    assert_int_equal(f->done, 7);
    assert_int_equal(more[0].status, 0);
    lb_free(jobs);
    lb_free(more);
}

int main(void)
{
    lb_http_client_global_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(rate_and_burst, setup, teardown),
        cmocka_unit_test_setup_teardown(round_robin_fairness, setup, teardown),
        cmocka_unit_test_setup_teardown(throttled_call_is_retried, setup, teardown),
        cmocka_unit_test(hold_bounds),
        cmocka_unit_test_setup_teardown(burst_of_429s_is_one_episode, setup, teardown),
        cmocka_unit_test_setup_teardown(pause_and_remove, setup, teardown),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    lb_http_client_global_cleanup();
    return rc;
}
