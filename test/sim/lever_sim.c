/* lever-sim: a Lever simulator for the integration tests and benchmarks.
 *
 *   lever-sim [--listen 127.0.0.1:0] [--rate 10] [--burst 20] [--seed FILE]
 *             [--audience URL] [--log-max N] [--log-level warn]
 *
 * Prints {"port":N} as its first stdout line once it listens. One libuv
 * loop, everything in memory. See README.md for the routes and the control
 * API; lever_sim.h for the pieces. */
#include "lever_sim.h"

#include "core/alloc.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "crypto/crypto.h"
#include "json/json.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SEED_MAX ((size_t)256 * 1024 * 1024)

static const char usage[] =
    "usage: lever-sim [options]\n"
    "  --listen HOST:PORT   address to serve (default 127.0.0.1:0; prints {\"port\":N})\n"
    "  --rate R             requests/second per key (token bucket); 0 disables (default 10)\n"
    "  --burst N            bucket size (default 20)\n"
    "  --seed FILE          load a seed document (see README) before serving\n"
    "  --audience URL       also accept this OAuth audience\n"
    "  --log-max N          request log entries kept (default 100000; 0: no log)\n"
    "  --log-level LEVEL    debug, info, warn, error (default warn)\n";

static void not_found(lb_http_req *req, void *data)
{
    (void)data;
    lv_error(req, 404, "ResourceNotFound", "Not found");
}

static const char *code_for(int status)
{
    switch (status) {
    case 400:
        return "BadRequestError";
    case 401:
        return "UnauthorizedError";
    case 403:
        return "ForbiddenError";
    case 404:
        return "ResourceNotFound";
    case 429:
        return "TooManyRequests";
    case 500:
        return "InternalServerError";
    case 502:
        return "BadGateway";
    case 503:
        return "ServiceUnavailable";
    case 504:
        return "GatewayTimeout";
    default:
        return "Error";
    }
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
    if (f->status == 204 || f->status == 304 || f->status < 200) {
        sim_respond(req, f->status, NULL, hdr, NULL, 0, NULL, NULL);
        return;
    }
    lv_error_ex(req, f->status, code_for(f->status), "Simulated fault", hdr);
}

static void on_response(sim_app *app, lb_http_req *req, sim_rctx *rc, int status)
{
    (void)app;
    (void)req;
    if (rc->stats != NULL) lv_stats_status(rc->stats, status);
}

static void on_shutdown(sim_app *app)
{
    lv_deliver_shutdown(app->data);
}

static int load_seed(lv_sim *s, const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "lever-sim: --seed: cannot open %s\n", path);
        return -1;
    }
    lb_strbuf b;
    lb_strbuf_init(&b, SEED_MAX);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof(buf), f)) > 0)
        if (lb_strbuf_add(&b, buf, n) != 0) break;
    fclose(f);
    char err[200];
    yajl_val doc = b.failed ? NULL : lb_json_parse(b.data, b.len, err, sizeof(err));
    lb_strbuf_free(&b);
    if (doc == NULL) {
        fprintf(stderr, "lever-sim: --seed: %s is not a JSON document\n", path);
        return -1;
    }
    int rc = lv_seed_doc(s, doc, NULL, err, sizeof(err));
    yajl_tree_free(doc);
    if (rc != 0) {
        fprintf(stderr, "lever-sim: --seed: %s\n", err);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static lv_sim s;
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"rate", required_argument, NULL, 'r'},
                                         {"burst", required_argument, NULL, 'b'},
                                         {"seed", required_argument, NULL, 's'},
                                         {"audience", required_argument, NULL, 'a'},
                                         {"log-max", required_argument, NULL, 'm'},
                                         {"log-level", required_argument, NULL, 'v'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    sim_options so = {.listen = "127.0.0.1:0", .log_max = 100000, .with_client = 1};
    const char *seed = NULL;
    lb_log_level level = LB_LOG_WARN;
    double rate = 10;
    long burst = 20;
    char *end;
    int c;

    lb_alloc_install();
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            so.listen = optarg;
            break;
        case 'r':
            rate = strtod(optarg, &end);
            if (*end != '\0' || rate < 0) {
                fprintf(stderr, "lever-sim: --rate: expected a number >= 0\n");
                return 2;
            }
            break;
        case 'b':
            burst = strtol(optarg, &end, 10);
            if (*end != '\0' || burst < 1 || burst > 1000000) {
                fprintf(stderr, "lever-sim: --burst: expected an integer >= 1\n");
                return 2;
            }
            break;
        case 's':
            seed = optarg;
            break;
        case 'a':
            s.audience = lb_strdup(optarg);
            break;
        case 'm':
            so.log_max = (size_t)strtoull(optarg, NULL, 10);
            break;
        case 'v':
            if (lb_log_level_parse(optarg, &level) != 0) {
                fprintf(stderr, "lever-sim: --log-level: debug, info, warn or error\n");
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
    lb_log_set_level(level);
    if (lb_crypto_init() != 0 || lb_http_client_global_init() != 0) {
        fprintf(stderr, "lever-sim: cannot initialise libsodium or libcurl\n");
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);

    lv_sim_init(&s);
    s.rate = rate;
    s.burst = (int)burst;
    sim_hooks hooks = {.name = "lever-sim",
                       .fault_respond = fault_respond,
                       .not_found = not_found,
                       .on_response = on_response,
                       .on_shutdown = on_shutdown};
    sim_app_init(&s.app, &hooks, &s);
    lv_api_register(&s);
    lv_oauth_register(&s);
    lv_control_register(&s);
    lv_deliver_register(&s);
    if (seed != NULL && load_seed(&s, seed) != 0) return 2;
    if (sim_app_start(&s.app, &so) != 0) return 2;
    int rc = sim_app_run(&s.app);

    lv_sim_free(&s);
    for (size_t i = 0; i < s.owned.n; i++)
        lb_free(s.owned.v[i]);
    SIM_VEC_FREE(s.owned);
    lb_free(s.retry_after_429);
    lb_free(s.audience);
    lb_http_client_global_cleanup();
    return rc;
}
