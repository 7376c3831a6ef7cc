/* Shared pieces of the simulators (lever-sim, platform-sim): the process
 * skeleton (loop, server, router, signals, clean shutdown), the request log,
 * fault injection, query/form parsing and JSON helpers.
 *
 * Everything runs on the one loop thread. Each request gets a sim_rctx
 * (req->ctx) from sim_handle() until it is answered through sim_respond(),
 * which records it in the request log. Handlers of the simulators answer
 * only through sim_respond() and the helpers built on it.
 *
 * Not part of the server: this code may reach one step past src/http's
 * public API, and says so where it does (sim_reset_conn). */
#ifndef LB_SIM_H
#define LB_SIM_H

#include "core/strbuf.h"
#include "http/client.h"
#include "http/router.h"
#include "http/server.h"

#include <stddef.h>
#include <stdint.h>
#include <yajl/yajl_gen.h>
#include <yajl/yajl_tree.h>

/* ---- small containers ---------------------------------------------------- */

#define SIM_VEC(T)                                                                                 \
    struct {                                                                                       \
        T *v;                                                                                      \
        size_t n, cap;                                                                             \
    }
#define SIM_PUSH(vec, item)                                                                        \
    do {                                                                                           \
        if ((vec).n == (vec).cap) {                                                                \
            (vec).cap = (vec).cap ? (vec).cap * 2 : 8;                                             \
            (vec).v = lb_realloc((vec).v, (vec).cap * sizeof(*(vec).v));                           \
        }                                                                                          \
        (vec).v[(vec).n++] = (item);                                                               \
    } while (0)
#define SIM_VEC_FREE(vec)                                                                          \
    do {                                                                                           \
        lb_free((vec).v);                                                                          \
        (vec).v = NULL;                                                                            \
        (vec).n = (vec).cap = 0;                                                                   \
    } while (0)

typedef SIM_VEC(char *) sim_strv;
void sim_strv_free(sim_strv *s);
int sim_strv_index(const sim_strv *s, const char *x); /* -1 when absent */
void sim_strv_add_unique(sim_strv *s, const char *x);

/* Sliding 1-second window of event times (ms): the most events seen in any
 * window of 1000 ms. Bounded: past SIM_WINDOW_MAX events per second the
 * oldest are dropped (the figure then saturates at that bound). */
#define SIM_WINDOW_MAX (1u << 20)
typedef struct {
    uint64_t *t;
    size_t cap, head, n;
    uint64_t max;
} sim_window;
void sim_window_add(sim_window *w, uint64_t now_ms);
void sim_window_free(sim_window *w);

/* Loop lag: a repeating 10 ms timer notes how late it fires, that is how long
 * the loop could not run (busy, or the process not scheduled). A witness
 * whose loop stalls reads the requests that arrived over the stall as one
 * burst, and a client whose loop stalls sends them as one: the tests use the
 * figure to tell a limiter's fault from the machine's. Embedded in its owner;
 * sim_lag_close() closes the timer (the owner outlives the loop run). */
typedef struct {
    uv_timer_t timer;
    uint64_t due_ns, max_ns;
} sim_lag;
void sim_lag_start(uv_loop_t *loop, sim_lag *lag);
void sim_lag_close(sim_lag *lag);
double sim_lag_max_ms(const sim_lag *lag);
void sim_lag_reset(sim_lag *lag);

/* ---- the application skeleton ------------------------------------------- */

typedef struct sim_app sim_app;

typedef struct sim_fault {
    char *id;
    char *path_prefix;  /* NULL: any path (outside /_sim) */
    char *method;       /* NULL: any method */
    int status;         /* 0: no status (delay only, then normal handling) */
    int reset;          /* close the connection without answering */
    int64_t remaining;  /* -1: unlimited */
    double probability; /* 0 or 1: every matching request */
    char *retry_after;  /* Retry-After value, or NULL */
    char *location;     /* Location value (for 3xx), or NULL */
    char *body;         /* body override, or NULL */
    char *content_type; /* with body */
    int64_t delay_ms;
    uint64_t hits;
} sim_fault;

/* Per request; owned by the request from sim_handle() to sim_respond(). */
typedef struct sim_rctx {
    sim_app *app;
    int64_t ts_ms;   /* wall clock at arrival */
    char auth[8];    /* "basic", "bearer" or "" */
    char *cred;      /* the key (basic user) or token (bearer) as sent */
    char *principal; /* what the app resolved the credentials to, or NULL */
    char *note;      /* extra word for the log ("fault", "rate_limited"...) */
    void *stats;     /* app data for on_response */
    int control;     /* a /_sim route: not logged */
} sim_rctx;

typedef struct {
    const char *name; /* "lever-sim" */
    /* Answers a request hit by a fault with f->status (never NULL);
     * sim_fault_headers() gives its extra header lines. */
    void (*fault_respond)(lb_http_req *req, const sim_fault *f);
    /* Answers an unknown route (the router's catch-all). */
    void (*not_found)(lb_http_req *req, void *data);
    /* Runs for every answered request before it is logged (may be NULL). */
    void (*on_response)(sim_app *app, lb_http_req *req, sim_rctx *rc, int status);
    /* Runs first at shutdown: answer requests the app still owes. */
    void (*on_shutdown)(sim_app *app);
} sim_hooks;

typedef struct {
    uint64_t seq;
    int64_t ts_ms;
    double ms;
    int status;
    const char *method; /* static */
    char *path, *query, *auth, *cred, *principal, *note, *body, *user_agent, *extra;
    char *webhook_id; /* the webhook-id header (Standard Webhooks), or NULL */
} sim_logent;

typedef struct sim_delay sim_delay;

/* Owner of everything; one per process, lives in main(). */
struct sim_app {
    uv_loop_t loop;
    lb_router *router;
    lb_http_server *server;
    lb_http_client *client; /* NULL unless the app asked for one */
    uv_signal_t sigterm, sigint;
    sim_hooks hooks;
    void *data;
    SIM_VEC(sim_fault *) faults;
    uint64_t fault_seq;
    sim_logent *log; /* ring of log_cap entries */
    size_t log_cap, log_head, log_n;
    uint64_t log_seq;
    sim_delay *delays; /* requests waiting on a fault's delay */
    sim_lag lag;
    int stopping;
};

typedef struct {
    const char *listen; /* "host:port" */
    size_t log_max;     /* request log entries kept */
    int with_client;    /* create an outbound HTTP client */
    uint64_t max_body;
} sim_options;

/* Initialises the loop and the router; the app then adds its routes. */
void sim_app_init(sim_app *app, const sim_hooks *hooks, void *data);
/* Registers the common /_sim routes and the catch-alls (after the app's
 * routes), starts listening and prints {"port":N} on stdout. 0 or a negative
 * code with a line on stderr. */
int sim_app_start(sim_app *app, const sim_options *opt);
/* Runs the loop until SIGTERM/SIGINT, then closes everything. Exit status. */
int sim_app_run(sim_app *app);

/* "host:port" -> host (lb_malloc'd) and port. 0 or LB_EINVAL. */
int sim_parse_listen(const char *s, char **host, int *port);

/* The top-level lb_http_handler (data: the app). */
void sim_handle(lb_http_req *req, void *app);
/* Routes req (after faults): what sim_handle does after the fault check. */
void sim_dispatch(sim_app *app, lb_http_req *req);

/* Every answer goes through here: logs, then lb_http_respond(). */
void sim_respond(lb_http_req *req, int status, const char *content_type, const char *extra_headers,
                 const void *body, size_t len, void (*free_body)(void *), void *free_arg);
void sim_respond_json(lb_http_req *req, int status, yajl_gen g);
void sim_respond_json_extra(lb_http_req *req, int status, yajl_gen g, const char *extra_headers);
void sim_respond_copy(lb_http_req *req, int status, const char *content_type,
                      const char *extra_headers, const char *body, size_t len);
/* {"error":"<code>","message":"<message>"}: the control API's errors. */
void sim_control_error(lb_http_req *req, int status, const char *code, const char *message);

/* "Retry-After: ..\r\nLocation: ..\r\n" for a fault's answer, or NULL when none. */
const char *sim_fault_headers(const sim_fault *f, char *buf, size_t size);

/* Drop every fault; empty the request log. */
void sim_faults_clear(sim_app *app);
void sim_log_clear(sim_app *app);

/* Closes req's connection without an answer (a "reset" fault). Finds the
 * connection's TCP handle with uv_walk (the server keeps the connection in
 * handle->data), sets SO_LINGER 0 and shuts the socket down, then answers so
 * the server's write fails and it closes the connection. */
void sim_reset_conn(sim_app *app, lb_http_req *req);

/* ---- parsing ---------------------------------------------------------------- */

/* Iterates "a=b&c=d" (query string or form body), percent-decoding and
 * turning '+' into ' '. Values longer than the buffers are cut. 1 with a
 * pair, 0 at the end. */
int sim_form_next(const char **cur, const char *end, char *name, size_t nsz, char *val, size_t vsz);
/* First value of name in s[0..len): 1 when present. */
int sim_form_get(const char *s, size_t len, const char *name, char *val, size_t vsz);
int sim_query_get(const lb_http_req *req, const char *name, char *val, size_t vsz);
/* 1 when the query has name with a value other than "0"/"false"/"no". */
int sim_query_flag(const lb_http_req *req, const char *name);
/* Percent-encodes everything but unreserved characters. */
void sim_url_encode(lb_strbuf *b, const char *s);

/* Parses the JSON body; on failure answers 400 through bad() and returns NULL. */
yajl_val sim_body_json(lb_http_req *req, void (*bad)(lb_http_req *req, const char *msg));

/* ---- JSON ----------------------------------------------------------------------- */

void sim_json_emit(yajl_gen g, yajl_val v);
yajl_val sim_json_clone(yajl_val v);
/* A string member, or NULL when absent or of another type. */
const char *sim_json_str(yajl_val obj, const char *key);
/* Number member as double (integer or not); 1 when present. */
int sim_json_num(yajl_val obj, const char *key, double *out);
/* Boolean member; def when absent or another type. */
int sim_json_bool(yajl_val obj, const char *key, int def);

/* A random id: 8-4-4-4-12 hex like Lever's UUIDs. out: 37 bytes. */
void sim_uuid(char out[37]);
/* n random characters from [A-Za-z0-9]. out: n + 1 bytes. */
void sim_random_chars(char *out, size_t n);

/* Monotonic ms (uv_hrtime based). */
uint64_t sim_mono_ms(void);

/* 1 when url is http(s) to a loopback host (127.0.0.0/8, ::1, localhost). */
int sim_url_is_loopback(const char *url);

#endif
