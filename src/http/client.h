/* Outbound HTTP: libcurl's multi interface driven by the libuv loop
 * (curl_multi_socket_action; one uv_poll per socket, one single-shot
 * uv_timer for curl's timeout). One client, so one multi handle, per process:
 * connections to Lever are reused across tenants and calls.
 *
 * A call is started with lb_http_client_start() and completes exactly once
 * through its callback, on the loop thread, unless it is cancelled first.
 * At most `max_inflight` calls run at once: past that, start() refuses with
 * LB_ETOOBIG (the scheduler keeps work queued instead). Responses are
 * captured up to `max_response` bytes; a longer one fails the call. */
#ifndef LB_HTTP_CLIENT_H
#define LB_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

typedef struct lb_http_client lb_http_client;
typedef struct lb_http_call lb_http_call;

typedef struct {
    int max_inflight;        /* LEVERBRIDGE_MAX_INFLIGHT */
    long connect_timeout_ms; /* default 5 s */
    long timeout_ms;         /* whole call; default 30 s */
    size_t max_response;     /* default 1 MiB */
    const char *user_agent;  /* copied; NULL: "leverbridge/<version>" */
} lb_http_client_config;

/* The most header bytes kept of one answer when a call asks for them. */
#define LB_HTTP_KEPT_HEADERS_MAX (16 * 1024)

typedef struct {
    const char *method; /* "GET", "POST", "PUT", "DELETE" */
    const char *url;
    const char *const *headers; /* "Name: value" strings, NULL-terminated, or NULL */
    const char *body;           /* copied; NULL for none */
    size_t body_len;
    const char *userpwd; /* Basic auth "user:password", or NULL */
    long timeout_ms;     /* 0: the client's default */
    int keep_headers;    /* 1: the response's `headers` has the answer's header lines */
} lb_http_request;

typedef struct {
    int status;             /* HTTP status; 0 when no response arrived */
    int error;              /* 0; a transport failure: its CURLcode (> 0); or,
                               for a call that never went out (from the
                               outbound queue), a negative code:
                               LB_ECLOSED when cancelled or closing, else
                               why it could not start */
    const char *error_text; /* words for error, or NULL */
    int tls_setup;          /* 1: the failure is TLS setup (CA bundle, certificate),
                               which retrying will not mend */
    const char *body;       /* NUL-terminated, "" when empty */
    size_t body_len;
    const char *retry_after;  /* the Retry-After header value, or NULL */
    const char *location;     /* the Location header value, or NULL */
    const char *content_type; /* the Content-Type header value, or NULL */
    /* keep_headers: the final answer's header lines as "Name: value\r\n",
     * up to LB_HTTP_KEPT_HEADERS_MAX bytes (lines past it are dropped);
     * "" otherwise. */
    const char *headers;
    size_t headers_len;
    double seconds; /* total time */
} lb_http_response;

/* Runs once per call on the loop thread. The response lives until it returns. */
typedef void (*lb_http_call_cb)(const lb_http_response *res, void *data);

/* Once per process, before any thread starts: curl_global_init with the
 * project's allocator. */
int lb_http_client_global_init(void);
void lb_http_client_global_cleanup(void);

int lb_http_client_new(uv_loop_t *loop, const lb_http_client_config *cfg, lb_http_client **out);
/* 0 and *out (may be NULL), or a negative code and cb is never called:
 * LB_ETOOBIG at the in-flight cap, LB_ECLOSED after close, LB_EINVAL. */
int lb_http_client_start(lb_http_client *c, const lb_http_request *req, lb_http_call_cb cb,
                         void *data, lb_http_call **out);
/* Stops a call that has not completed; its callback will not run. */
void lb_http_call_cancel(lb_http_call *call);
size_t lb_http_client_inflight(const lb_http_client *c);
int lb_http_client_has_room(const lb_http_client *c);
/* Cancels every call (no callbacks), closes every handle, frees the client
 * in the last close callback, then calls cb. */
void lb_http_client_close(lb_http_client *c, void (*cb)(void *data), void *data);

/* Parses a Retry-After value: delay-seconds or an HTTP date (relative to
 * now_ms, wall clock). 0 and *ms, or LB_EPARSE. */
int lb_http_retry_after_ms(const char *value, int64_t now_ms, int64_t *ms);

#endif
