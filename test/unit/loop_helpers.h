/* Helpers shared by the unit tests that run a loop with a fake peer: a
 * counting close callback, a loopback HTTP server for a router, a store op
 * run to its completion, the engine's closing order, and a temporary
 * directory.
 *
 * Include after cmocka.h. */
#ifndef LB_TEST_LOOP_HELPERS_H
#define LB_TEST_LOOP_HELPERS_H

#include "engine/jobs.h"
#include "engine/outbound.h"
#include "http/client.h"
#include "http/router.h"
#include "http/server.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <uv.h>

/* A close or done callback whose data is an int counter. */
static inline void lbt_count_cb(void *data)
{
    (*(int *)data)++;
}

/* Starts a server on 127.0.0.1, a port of the system's choice, dispatching
 * to r, with generous timeouts; returns its port. */
static inline int lbt_server_start(uv_loop_t *loop, lb_router *r, int max_connections,
                                   lb_http_server **out)
{
    lb_http_server_config sc = {.host = "127.0.0.1",
                                .port = 0,
                                .max_body = 65536,
                                .header_timeout_ms = 5000,
                                .body_timeout_ms = 5000,
                                .idle_timeout_ms = 5000,
                                .max_connections = max_connections};
    assert_int_equal(lb_http_server_start(loop, &sc, lb_router_dispatch, r, out), 0);
    return lb_http_server_port(*out);
}

static inline void lbt_store_done(lb_store_op *op)
{
    (*(int *)op->data)++;
}

/* Submits op (its cb and data are set here) and runs the loop until it
 * completes; op->status is the test's to check. */
static inline void lbt_store_run(uv_loop_t *loop, lb_store *store, lb_store_op *op)
{
    int done = 0;
    op->cb = lbt_store_done;
    op->data = &done;
    assert_int_equal(lb_store_submit(store, op), 0);
    while (!done)
        uv_run(loop, UV_RUN_ONCE);
}

/* Closes the engine's parts in their order: the jobs, the outbound queue
 * and the HTTP client (together), then the store; returns once all are
 * closed. */
static inline void lbt_engine_close(uv_loop_t *loop, lb_jobs *jobs, lb_outbound *ob,
                                    lb_http_client *client, lb_store *store)
{
    int n = 0;
    lb_jobs_close(jobs, lbt_count_cb, &n);
    lb_outbound_close(ob, lbt_count_cb, &n);
    lb_http_client_close(client, lbt_count_cb, &n);
    while (n < 3)
        uv_run(loop, UV_RUN_ONCE);
    lb_store_close(store, lbt_count_cb, &n);
    while (n < 4)
        uv_run(loop, UV_RUN_ONCE);
}

/* A fresh directory /tmp/<prefix>-XXXXXX in dir (size >= strlen + 12). */
static inline void lbt_tmpdir(char *dir, size_t size, const char *prefix)
{
    snprintf(dir, size, "/tmp/%s-XXXXXX", prefix);
    assert_non_null(mkdtemp(dir));
}

static inline void lbt_rmdir(const char *dir)
{
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

#endif
