/* Forwarding a request that calls Lever for a tenant to the tenant's lease
 * holder, so that the tenant's Lever limit holds across the cluster
 * (docs/internals/cluster.md "Forwarding").
 *
 * A route whose handler calls Lever asks lb_cluster_fwd_route first:
 * - served here (0) when clustering is off, when this node holds the
 *   tenant, or when the request was forwarded to it already (one hop at
 *   most: the X-Leverbridge-Forwarded-By header);
 * - otherwise (1) the request is this module's to answer: sent on to the
 *   holder's ADVERTISE_URL (a live node other than this one) with the admin
 *   token and the holder's answer relayed; or, with no live holder, the
 *   lease taken first (lb_cluster_acquire) and the handler called again,
 *   which then serves it here. A holder that refuses the connection is
 *   taken for gone: the lease is asked for as well (the take succeeds only
 *   once it expired or was released). A holder that does not answer within
 *   the timeout gets no second try (it may still be calling Lever for the
 *   request): 503 unavailable. No 2xx is made up for an answer not had.
 *
 * Owner: main, which closes it (in-flight forwards answered 503) before the
 * cluster, and frees it after the loop. Loop thread only. */
#ifndef LB_CLUSTER_FORWARD_H
#define LB_CLUSTER_FORWARD_H

#include "cluster/cluster.h"
#include "http/client.h"
#include "http/server.h"

#include <stdint.h>

/* The header a forwarded request carries: the forwarding node's id. */
#define LB_CLUSTER_FORWARDED_BY "X-Leverbridge-Forwarded-By"
/* Most forwards in flight (past it: 503). */
#define LB_CLUSTER_FWD_MAX 256

typedef struct lb_cluster_fwd lb_cluster_fwd;

typedef struct {
    lb_cluster *cluster;     /* borrowed; outlives the forwarder's close */
    lb_http_client *http;    /* borrowed */
    const char *admin_token; /* borrowed: every replica has the same */
    int64_t timeout_ms;      /* LEVERBRIDGE_FORWARD_TIMEOUT */
} lb_cluster_fwd_config;

int lb_cluster_fwd_new(const lb_cluster_fwd_config *cfg, lb_cluster_fwd **out);
/* How a route answers a 503 of its own (an HTML page), msg saying why. */
typedef void (*lb_cluster_fwd_fail)(lb_http_req *req, const char *msg);
/* 0: serve req here now. 1: req is taken care of: it will be answered, or
 * again(req, data) called once this node holds the lease (the handler
 * itself: it asks again and is told 0). This module's 503s go through fail
 * (NULL: the JSON error `unavailable`). */
int lb_cluster_fwd_route(lb_cluster_fwd *f, lb_http_req *req, const char *tenant,
                         lb_http_handler again, void *data, lb_cluster_fwd_fail fail);
/* Answers every forward in flight 503 and cancels its call; later routes
 * are served here or answered 503. Before the cluster and the server close. */
void lb_cluster_fwd_close(lb_cluster_fwd *f);
/* After the loop ended. NULL: nothing. */
void lb_cluster_fwd_free(lb_cluster_fwd *f);

#endif
