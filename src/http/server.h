/* HTTP/1.1 server on a libuv loop, parsed with llhttp.
 *
 * One lb_http_conn per client socket, owned by the server and freed in the
 * close callback of its last handle. Requests on a connection are handled one
 * at a time: after a request is parsed the parser is paused; the handler
 * answers (now or later, from any loop callback) with lb_http_respond(); then
 * the bytes buffered meanwhile (pipelined requests) are parsed. Reading goes
 * on while a handler works, into the connection's bounded buffer (a full
 * buffer stops it), so no request costs an epoll_ctl to stop and restart
 * reading; the end of the input is acted on after the answer. So responses
 * always leave in request order.
 *
 * Limits (answered, then the connection is closed after a lingering drain):
 * request line + headers 16 KiB (431), URL 8 KiB (414), 100 headers (431),
 * body MAX_BODY by Content-Length at header time and while streaming (413),
 * HEADER_TIMEOUT from the first byte to the end of headers (408),
 * BODY_TIMEOUT from the end of headers to the end of the body (408; a
 * deadline, not restarted by reads), IDLE_TIMEOUT on a kept-alive
 * connection (closed silently). At MAX_CONNECTIONS a new connection takes
 * the place of the longest idle one, else of the oldest request still being
 * read (503, closed); only when every slot has a request being handled is
 * it closed at once (counted, with one summary log line per 10 s).
 *
 * Framing is strict (llhttp's strict mode, no lenient flag, and more): one
 * space between the parts of the request line and an HTTP/1.x version
 * (400), no transfer coding but chunked (501), a chunk past MAX_BODY
 * refused at its size line (413). HEAD answers drop the body. */
#ifndef LB_HTTP_SERVER_H
#define LB_HTTP_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#define LB_HTTP_MAX_HEADER_BYTES (16 * 1024)
#define LB_HTTP_MAX_URL (8 * 1024)
#define LB_HTTP_MAX_HEADERS 100
#define LB_HTTP_MAX_PARAMS 4
#define LB_HTTP_PARAM_BYTES 512
#define LB_HTTP_LINGER_MS 2000

typedef struct lb_http_server lb_http_server;
typedef struct lb_http_conn lb_http_conn;

typedef struct {
    const char *name;
    const char *value;
    size_t len;
} lb_http_param;

/* The request being handled. Owned by its connection; valid from the handler
 * call until lb_http_respond() returns. All strings are NUL-terminated. */
typedef struct lb_http_req {
    lb_http_conn *conn;
    int method;              /* llhttp_method_t */
    const char *method_name; /* "GET" */
    const char *path;        /* raw path, without the query */
    const char *query;       /* after '?', "" when none */
    const char *body;        /* "" when none */
    size_t body_len;
    const char *route; /* set by the router: the matched pattern */
    lb_http_param params[LB_HTTP_MAX_PARAMS];
    int nparams;
    uint64_t start_ns;              /* uv_hrtime() when the headers were complete */
    void *ctx;                      /* the handler's own per-request data */
    char pbuf[LB_HTTP_PARAM_BYTES]; /* decoded parameter values */
} lb_http_req;

typedef void (*lb_http_handler)(lb_http_req *req, void *data);
/* Called for a request that asks for 100 Continue, once its headers are read
 * and before its body is: 1 to have the body sent (the server answers
 * 100 Continue), or 0 after answering req with lb_http_respond() before
 * returning (a 404, a 401...); the connection then closes after the answer.
 * req has its method, path, query and headers, no body. Synchronous. */
typedef int (*lb_http_check)(lb_http_req *req, void *data);

typedef struct {
    const char *host;
    int port;
    uint64_t max_body;
    int64_t header_timeout_ms;
    int64_t body_timeout_ms;
    int64_t idle_timeout_ms;
    int max_connections;
    lb_http_check check; /* NULL: every 100-continue request is let go on */
    void *check_data;
    /* 1: bind and listen, but accept nothing until lb_http_server_serve();
     * connections wait in the kernel's backlog meanwhile. For a start-up
     * that must know the port is free before it makes anything, and must
     * not answer before its state is loaded. */
    int paused;
} lb_http_server_config;

/* Binds and listens. 0, or a negative libuv code with nothing left open. */
int lb_http_server_start(uv_loop_t *loop, const lb_http_server_config *cfg, lb_http_handler handler,
                         void *data, lb_http_server **out);
/* Starts accepting on a server started paused (a no-op otherwise). */
void lb_http_server_serve(lb_http_server *s);
/* The port actually bound (useful with port 0). */
int lb_http_server_port(const lb_http_server *s);
/* Stops accepting. Idle connections close now, busy ones after their current
 * response. cb (if any) runs once no connection is left. */
void lb_http_server_drain(lb_http_server *s, void (*cb)(void *data), void *data);
int lb_http_server_draining(const lb_http_server *s);
size_t lb_http_server_connections(const lb_http_server *s);
/* Closes every connection and the listener; frees the server in the last
 * close callback, then calls cb. Handlers still owing a response must call
 * lb_http_respond() before this (their requests are discarded otherwise). */
void lb_http_server_close(lb_http_server *s, void (*cb)(void *data), void *data);

/* Header value by case-insensitive name, or NULL. */
const char *lb_http_req_header(const lb_http_req *req, const char *name, size_t *len);
/* Route parameter by name, or NULL. */
const char *lb_http_req_param(const lb_http_req *req, const char *name);

/* Answers req. extra_headers: preformatted "Name: value\r\n" lines or NULL.
 * The body is written without copying when the socket takes it at once, and
 * kept alive otherwise: free_body(free_arg) runs when it is no longer needed
 * (NULL for static bodies). Must be called exactly once per request. */
void lb_http_respond(lb_http_req *req, int status, const char *content_type,
                     const char *extra_headers, const void *body, size_t len,
                     void (*free_body)(void *arg), void *free_arg);

/* The reason phrase of a status code. */
const char *lb_http_status_text(int status);

#endif
