/* platform-sim: the assessment platform's invitation API, as leverbridge's
 * send_assessment uses it (api.md, "Outbound: the assessment platform").
 *
 *   platform-sim [--listen 127.0.0.1:0] [--token TOKEN] [--public-url URL]
 *                [--log-max N] [--log-level warn]
 *
 * POST /invitations with "Authorization: Bearer TOKEN" and an
 * Idempotency-Key header: 201 {"invitation_id","url"}; the same key again
 * answers the same invitation (and counts a replay); the same key with
 * another tenant, assessment, opportunity or email is 422.
 *
 * POST /events (api.md "Events to the platform"): a Standard Webhooks
 * receiver that records every delivery as it came (headers webhook-id,
 * webhook-timestamp, webhook-signature, Content-Type and the raw body) and
 * answers 204; it checks nothing, so that tests verify signatures on their
 * own. Faults (/_sim/faults, path_prefix "/events") make it fail.
 *
 * Control routes under /_sim (see README.md). Prints {"port":N} first on
 * stdout. */
#include "sim.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/map.h"
#include "core/time.h"
#include "crypto/crypto.h"
#include "json/json.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_INVITATIONS 1000000
#define MAX_EVENTS 100000

/* One delivery to POST /events, as received. */
typedef struct {
    char *id, *timestamp, *signature, *content_type, *body;
    int64_t received;
} event_rec;

typedef struct {
    char *id, *url, *key, *tenant, *assessment, *name, *email, *opp, *cand, *posting;
    int64_t created;
    uint64_t requests;
} invitation;

/* Owned by main. */
typedef struct {
    sim_app app;
    char *token;
    char *public_url;
    int require_key;
    SIM_VEC(invitation *) list;
    lb_map by_key;
    uint64_t unauthorized, bad;
    SIM_VEC(event_rec *) events;
} platform;

static void p_error(lb_http_req *req, int status, const char *code, const char *message,
                    const char *extra)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "error");
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "code", code);
    lb_json_kv_str(g, "message", message);
    yajl_gen_map_close(g);
    yajl_gen_map_close(g);
    sim_respond_json_extra(req, status, g, extra);
}

static void bad_json(lb_http_req *req, const char *msg)
{
    p_error(req, 400, "invalid_json", msg, NULL);
}

static void not_found(lb_http_req *req, void *data)
{
    (void)data;
    p_error(req, 404, "not_found", "No such route.", NULL);
}

static void fault_respond(lb_http_req *req, const sim_fault *f)
{
    char buf[1024];
    const char *hdr = sim_fault_headers(f, buf, sizeof(buf));
    if (f->body != NULL) {
        sim_respond_copy(req, f->status, f->content_type ? f->content_type : "application/json",
                         hdr, f->body, strlen(f->body));
        return;
    }
    p_error(req, f->status, f->status == 429 ? "rate_limited" : "unavailable", "Simulated fault",
            hdr);
}

static void inv_free(invitation *v)
{
    lb_free(v->id);
    lb_free(v->url);
    lb_free(v->key);
    lb_free(v->tenant);
    lb_free(v->assessment);
    lb_free(v->name);
    lb_free(v->email);
    lb_free(v->opp);
    lb_free(v->cand);
    lb_free(v->posting);
    lb_free(v);
}

static void clear(platform *p)
{
    for (size_t i = 0; i < p->list.n; i++)
        inv_free(p->list.v[i]);
    p->list.n = 0;
    lb_map_free(&p->by_key);
    lb_map_init(&p->by_key);
}

static int eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static char *opt_dup(const char *s)
{
    return s ? lb_strdup(s) : NULL;
}

static void respond_invitation(lb_http_req *req, const invitation *v, int replay)
{
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "invitation_id", v->id);
    lb_json_kv_str(g, "url", v->url);
    yajl_gen_map_close(g);
    sim_respond_json_extra(req, 201, g, replay ? "Idempotent-Replayed: true\r\n" : NULL);
}

/* An optional string member: absent or null is fine, another type is not. */
static int opt_str(yajl_val o, const char *key, const char **out)
{
    yajl_val v = lb_json_get(o, key);
    *out = NULL;
    if (v == NULL || YAJL_IS_NULL(v)) return 0;
    if (!YAJL_IS_STRING(v)) return -1;
    *out = v->u.string;
    return 0;
}

static void r_invite(lb_http_req *req, void *data)
{
    platform *p = data;
    sim_rctx *rc = req->ctx;
    if (strcmp(rc->auth, "bearer") != 0 || rc->cred == NULL ||
        !lb_secure_equal(rc->cred, strlen(rc->cred), p->token, strlen(p->token))) {
        p->unauthorized++;
        p_error(req, 401, "unauthorized", "Missing or wrong bearer token.",
                "WWW-Authenticate: Bearer\r\n");
        return;
    }
    rc->principal = lb_strdup("platform-token");
    size_t klen = 0;
    const char *key = lb_http_req_header(req, "idempotency-key", &klen);
    if ((key == NULL || klen == 0) && p->require_key) {
        p->bad++;
        p_error(req, 400, "idempotency_key_required", "The Idempotency-Key header is required.",
                NULL);
        return;
    }
    yajl_val b = sim_body_json(req, bad_json);
    if (b == NULL) {
        p->bad++;
        return;
    }
    yajl_val cand = lb_json_get(b, "candidate"), lever = lb_json_get(b, "lever");
    const char *tenant = sim_json_str(b, "tenant_id");
    const char *assessment = sim_json_str(b, "assessment");
    const char *name = sim_json_str(cand, "name");
    const char *email = sim_json_str(cand, "email");
    const char *opp = sim_json_str(lever, "opportunity_id");
    const char *cid = NULL, *pid = NULL;
    const char *field = NULL;
    if (!YAJL_IS_OBJECT(b))
        field = "(body)";
    else if (tenant == NULL || tenant[0] == '\0')
        field = "tenant_id";
    else if (assessment == NULL || assessment[0] == '\0')
        field = "assessment";
    else if (!YAJL_IS_OBJECT(cand))
        field = "candidate";
    else if (name == NULL)
        field = "candidate.name";
    else if (email == NULL || strchr(email, '@') == NULL)
        field = "candidate.email";
    else if (!YAJL_IS_OBJECT(lever))
        field = "lever";
    else if (opp == NULL || opp[0] == '\0')
        field = "lever.opportunity_id";
    else if (opt_str(lever, "candidate_id", &cid) != 0)
        field = "lever.candidate_id";
    else if (opt_str(lever, "posting_id", &pid) != 0)
        field = "lever.posting_id";
    if (field != NULL) {
        char msg[128];
        snprintf(msg, sizeof(msg), "%s is missing or invalid.", field);
        p->bad++;
        yajl_tree_free(b);
        p_error(req, 400, "invalid_request", msg, NULL);
        return;
    }
    char *k = key && klen ? lb_strndup(key, klen) : NULL;
    invitation *v = k ? lb_map_get(&p->by_key, k) : NULL;
    if (v != NULL) {
        int same = eq(v->tenant, tenant) && eq(v->assessment, assessment) && eq(v->opp, opp) &&
                   eq(v->email, email);
        lb_free(k);
        yajl_tree_free(b);
        if (!same) {
            p_error(req, 422, "idempotency_key_reused",
                    "This Idempotency-Key was used with a different request.", NULL);
            return;
        }
        v->requests++;
        respond_invitation(req, v, 1);
        return;
    }
    if (p->list.n >= MAX_INVITATIONS) {
        lb_free(k);
        yajl_tree_free(b);
        p_error(req, 503, "full", "Too many invitations in the simulator.", NULL);
        return;
    }
    v = LB_NEW(invitation);
    char rnd[21];
    sim_random_chars(rnd, 20);
    char id[32];
    snprintf(id, sizeof(id), "inv_%s", rnd);
    v->id = lb_strdup(id);
    size_t ulen = strlen(p->public_url) + strlen(id) + 2;
    v->url = lb_malloc(ulen);
    snprintf(v->url, ulen, "%s/%s", p->public_url, id);
    v->key = k;
    v->tenant = lb_strdup(tenant);
    v->assessment = lb_strdup(assessment);
    v->name = lb_strdup(name);
    v->email = lb_strdup(email);
    v->opp = lb_strdup(opp);
    v->cand = opt_dup(cid);
    v->posting = opt_dup(pid);
    v->created = lb_time_now_ms();
    v->requests = 1;
    yajl_tree_free(b);
    SIM_PUSH(p->list, v);
    if (v->key != NULL) lb_map_put(&p->by_key, v->key, v);
    lb_debug("platform-sim", "invitation %s for %s", v->id, v->tenant);
    respond_invitation(req, v, 0);
}

/* ---- events ------------------------------------------------------------------------- */

static char *header_dup(const lb_http_req *req, const char *name)
{
    size_t len = 0;
    const char *v = lb_http_req_header(req, name, &len);
    return v != NULL ? lb_strndup(v, len) : NULL;
}

static void event_free(event_rec *e)
{
    lb_free(e->id);
    lb_free(e->timestamp);
    lb_free(e->signature);
    lb_free(e->content_type);
    lb_free(e->body);
    lb_free(e);
}

static void events_clear(platform *p)
{
    for (size_t i = 0; i < p->events.n; i++)
        event_free(p->events.v[i]);
    p->events.n = 0;
}

static void r_event(lb_http_req *req, void *data)
{
    platform *p = data;
    if (p->events.n >= MAX_EVENTS) {
        p_error(req, 503, "full", "Too many events in the simulator.", NULL);
        return;
    }
    event_rec *e = LB_NEW(event_rec);
    e->id = header_dup(req, "webhook-id");
    e->timestamp = header_dup(req, "webhook-timestamp");
    e->signature = header_dup(req, "webhook-signature");
    e->content_type = header_dup(req, "content-type");
    e->body = lb_strndup(req->body ? req->body : "", req->body_len);
    e->received = lb_time_now_ms();
    SIM_PUSH(p->events, e);
    lb_debug("platform-sim", "event %s", e->id ? e->id : "(no id)");
    sim_respond(req, 204, NULL, NULL, NULL, 0, NULL, NULL);
}

static void r_events(lb_http_req *req, void *data)
{
    platform *p = data;
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    for (size_t i = 0; i < p->events.n; i++) {
        const event_rec *e = p->events.v[i];
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "webhook_id", e->id);
        lb_json_kv_str(g, "webhook_timestamp", e->timestamp);
        lb_json_kv_str(g, "webhook_signature", e->signature);
        lb_json_kv_str(g, "content_type", e->content_type);
        lb_json_kv_str(g, "body", e->body);
        lb_json_kv_int(g, "received_ms", e->received);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    lb_json_kv_int(g, "count", (int64_t)p->events.n);
    yajl_gen_map_close(g);
    sim_respond_json(req, 200, g);
}

static void r_events_clear(lb_http_req *req, void *data)
{
    events_clear(data);
    sim_respond(req, 204, NULL, NULL, NULL, 0, NULL, NULL);
}

/* ---- control ------------------------------------------------------------------------ */

static void r_list(lb_http_req *req, void *data)
{
    platform *p = data;
    char tenant[256];
    int by_tenant = sim_query_get(req, "tenant_id", tenant, sizeof(tenant));
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_key(g, "data");
    yajl_gen_array_open(g);
    size_t count = 0;
    for (size_t i = 0; i < p->list.n; i++) {
        const invitation *v = p->list.v[i];
        if (by_tenant && strcmp(v->tenant, tenant) != 0) continue;
        count++;
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "invitation_id", v->id);
        lb_json_kv_str(g, "url", v->url);
        lb_json_kv_str(g, "idempotency_key", v->key);
        lb_json_kv_str(g, "tenant_id", v->tenant);
        lb_json_kv_str(g, "assessment", v->assessment);
        lb_json_key(g, "candidate");
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "name", v->name);
        lb_json_kv_str(g, "email", v->email);
        yajl_gen_map_close(g);
        lb_json_key(g, "lever");
        yajl_gen_map_open(g);
        lb_json_kv_str(g, "opportunity_id", v->opp);
        lb_json_kv_str(g, "candidate_id", v->cand);
        lb_json_kv_str(g, "posting_id", v->posting);
        yajl_gen_map_close(g);
        lb_json_kv_int(g, "created_ms", v->created);
        lb_json_kv_int(g, "requests", (int64_t)v->requests);
        yajl_gen_map_close(g);
    }
    yajl_gen_array_close(g);
    lb_json_kv_int(g, "count", (int64_t)count);
    lb_json_kv_int(g, "unauthorized", (int64_t)p->unauthorized);
    lb_json_kv_int(g, "bad_requests", (int64_t)p->bad);
    yajl_gen_map_close(g);
    sim_respond_json(req, 200, g);
}

static void r_clear(lb_http_req *req, void *data)
{
    platform *p = data;
    clear(p);
    p->unauthorized = p->bad = 0;
    sim_respond(req, 204, NULL, NULL, NULL, 0, NULL, NULL);
}

static void ctl_bad(lb_http_req *req, const char *msg)
{
    sim_control_error(req, 400, "bad_request", msg);
}

static void r_config(lb_http_req *req, void *data)
{
    platform *p = data;
    if (req->body_len > 0) {
        yajl_val b = sim_body_json(req, ctl_bad);
        if (b == NULL) return;
        const char *t = sim_json_str(b, "token");
        if (t != NULL && t[0] != '\0') {
            lb_free(p->token);
            p->token = lb_strdup(t);
        }
        const char *u = sim_json_str(b, "public_url");
        if (u != NULL && u[0] != '\0') {
            lb_free(p->public_url);
            p->public_url = lb_strdup(u);
        }
        p->require_key = sim_json_bool(b, "require_idempotency_key", p->require_key);
        yajl_tree_free(b);
    }
    yajl_gen g = lb_json_gen_new();
    yajl_gen_map_open(g);
    lb_json_kv_str(g, "token", p->token);
    lb_json_kv_str(g, "public_url", p->public_url);
    lb_json_kv_bool(g, "require_idempotency_key", p->require_key);
    yajl_gen_map_close(g);
    sim_respond_json(req, 200, g);
}

static const char usage[] =
    "usage: platform-sim [options]\n"
    "  --listen HOST:PORT   address to serve (default 127.0.0.1:0; prints {\"port\":N})\n"
    "  --token TOKEN        bearer token the API accepts (default platform-token)\n"
    "  --public-url URL     base of invitation URLs (default https://assess.example.test/i)\n"
    "  --log-max N          request log entries kept (default 100000; 0: no log)\n"
    "  --log-level LEVEL    debug, info, warn, error (default warn)\n";

int main(int argc, char **argv)
{
    static platform p;
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"token", required_argument, NULL, 't'},
                                         {"public-url", required_argument, NULL, 'u'},
                                         {"log-max", required_argument, NULL, 'm'},
                                         {"log-level", required_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    sim_options so = {.listen = "127.0.0.1:0", .log_max = 100000};
    const char *token = "platform-token", *url = "https://assess.example.test/i";
    lb_log_level level = LB_LOG_WARN;
    int c;

    lb_alloc_install();
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            so.listen = optarg;
            break;
        case 't':
            token = optarg;
            break;
        case 'u':
            url = optarg;
            break;
        case 'm':
            so.log_max = (size_t)strtoull(optarg, NULL, 10);
            break;
        case 'v':
            if (lb_log_level_parse(optarg, &level) != 0) {
                fprintf(stderr, "platform-sim: --log-level: debug, info, warn or error\n");
                return 2;
            }
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (token[0] == '\0') {
        fprintf(stderr, "platform-sim: --token must not be empty\n");
        return 2;
    }
    lb_log_set_level(level);
    if (lb_crypto_init() != 0) {
        fprintf(stderr, "platform-sim: cannot initialise libsodium\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    p.token = lb_strdup(token);
    p.public_url = lb_strdup(url);
    p.require_key = 1;
    lb_map_init(&p.by_key);

    sim_hooks hooks = {
        .name = "platform-sim", .fault_respond = fault_respond, .not_found = not_found};
    sim_app_init(&p.app, &hooks, &p);
    lb_router *r = p.app.router;
    lb_router_add(r, "POST", "/invitations", r_invite, &p);
    lb_router_add(r, "GET", "/_sim/invitations", r_list, &p);
    lb_router_add(r, "DELETE", "/_sim/invitations", r_clear, &p);
    lb_router_add(r, "POST", "/events", r_event, &p);
    lb_router_add(r, "GET", "/_sim/events", r_events, &p);
    lb_router_add(r, "DELETE", "/_sim/events", r_events_clear, &p);
    lb_router_add(r, "GET", "/_sim/config", r_config, &p);
    lb_router_add(r, "POST", "/_sim/config", r_config, &p);
    if (sim_app_start(&p.app, &so) != 0) return 2;
    int rc = sim_app_run(&p.app);
    clear(&p);
    events_clear(&p);
    SIM_VEC_FREE(p.events);
    SIM_VEC_FREE(p.list);
    lb_map_free(&p.by_key);
    lb_free(p.token);
    lb_free(p.public_url);
    return rc;
}
