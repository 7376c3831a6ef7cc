#include "core/config.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/time.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;

typedef enum { T_STR, T_OPTSTR, T_URL, T_DUR, T_SIZE, T_INT, T_RATE, T_LEVEL } opt_type;

typedef struct {
    const char *name; /* without the LEVERBRIDGE_ prefix */
    opt_type type;
    size_t off;
    const char *def; /* NULL: unset */
    double min, max; /* numeric bounds (durations in ms, sizes in bytes) */
    const char *help;
} opt;

#define O(f) offsetof(lb_config, f)
static const opt opts[] = {
    {"LISTEN", T_STR, O(listen), "127.0.0.1:8080", 0, 0, "address:port to serve"},
    {"PUBLIC_URL", T_URL, O(public_url), NULL, 0, 0,
     "base of hook URLs and the OAuth redirect (default http://LISTEN)"},
    {"DATA_DIR", T_STR, O(data_dir), "./data", 0, 0, "where generated files live"},
    {"DB", T_STR, O(db), NULL, 0, 0, "store location (default sqlite:DATA_DIR/leverbridge.db)"},
    {"MASTER_KEY", T_OPTSTR, O(master_key), NULL, 0, 0,
     "32 bytes, hex or base64 (default: DATA_DIR/master.key, generated)"},
    {"ADMIN_TOKEN", T_OPTSTR, O(admin_token), NULL, 0, 0,
     "admin API bearer token (default: DATA_DIR/admin-token, generated)"},
    {"LEVER_API_URL", T_URL, O(lever_api_url), "https://api.lever.co/v1", 0, 0,
     "Lever Data API root"},
    {"LEVER_AUTH_URL", T_URL, O(lever_auth_url), "https://auth.lever.co", 0, 0, "Lever OAuth host"},
    {"LEVER_CLIENT_ID", T_OPTSTR, O(lever_client_id), NULL, 0, 0,
     "OAuth client id (unset: OAuth off)"},
    {"LEVER_CLIENT_SECRET", T_OPTSTR, O(lever_client_secret), NULL, 0, 0, "OAuth client secret"},
    {"LEVER_RATE", T_RATE, O(lever_rate), "10", 0.001, 1e6, "per-tenant requests/s to Lever"},
    {"LEVER_BURST", T_INT, O(lever_burst), "20", 1, 1e6, "per-tenant burst to Lever"},
    {"WEBHOOK_DEADLINE", T_DUR, O(webhook_deadline_ms), "48h", 1, 1e12,
     "how long hook provisioning keeps retrying"},
    {"PROVISION_RETRY_BASE", T_DUR, O(provision_retry_base_ms), "30s", 1, 1e12,
     "hook provisioning backoff base"},
    {"PROVISION_RETRY_CAP", T_DUR, O(provision_retry_cap_ms), "1h", 1, 1e12,
     "hook provisioning backoff cap"},
    {"RETRY_BASE", T_DUR, O(retry_base_ms), "1s", 1, 1e12, "job backoff base"},
    {"RETRY_CAP", T_DUR, O(retry_cap_ms), "10m", 1, 1e12, "job backoff cap"},
    {"JOB_MAX_AGE", T_DUR, O(job_max_age_ms), "72h", 1, 1e12,
     "a job still failing after this is failed"},
    {"PLATFORM_URL", T_URL, O(platform_url), NULL, 0, 0, "assessment platform API"},
    {"PLATFORM_TOKEN", T_OPTSTR, O(platform_token), NULL, 0, 0, "assessment platform token"},
    {"PLATFORM_EVENTS_URL", T_URL, O(platform_events_url), NULL, 0, 0,
     "where events for the platform go (unset: off)"},
    {"PLATFORM_EVENTS_SECRET", T_OPTSTR, O(platform_events_secret), NULL, 0, 0,
     "whsec_... secret that signs events for the platform"},
    {"MAX_INFLIGHT", T_INT, O(max_inflight), "256", 1, 100000,
     "outbound requests in flight, all tenants together"},
    {"MAX_BODY", T_SIZE, O(max_body), "1MiB", 1, 1073741824.0, "largest request body accepted"},
    {"REPLAY_WINDOW", T_DUR, O(replay_window_ms), "72h", 1, 1e12,
     "Lever deliveries with older triggeredAt are refused"},
    {"RETENTION", T_DUR, O(retention_ms), "30d", 0, 1e13,
     "events and finished jobs older than this are pruned; 0 keeps all"},
    {"NODE_ID", T_OPTSTR, O(node_id), NULL, 0, 0,
     "this replica's name in logs, leases and /v1/cluster (default <hostname>-<pid>)"},
    {"ADVERTISE_URL", T_URL, O(advertise_url), NULL, 0, 0,
     "where the other replicas reach this one (default http://LISTEN; PostgreSQL only)"},
    {"LEASE_TTL", T_DUR, O(lease_ttl_ms), "15s", 1000, 600000,
     "how long a tenant lease lasts without renewal, 1s..10m (PostgreSQL only)"},
    {"FORWARD_TIMEOUT", T_DUR, O(forward_timeout_ms), "30s", 100, 600000,
     "how long a request forwarded to a tenant's lease holder may take (PostgreSQL only)"},
    {"LOG_LEVEL", T_LEVEL, O(log_level), "info", 0, 0, "debug, info, warn, error"},
    {"HEADER_TIMEOUT", T_DUR, O(header_timeout_ms), "10s", 1, 1e9,
     "time to send a request's headers"},
    {"BODY_TIMEOUT", T_DUR, O(body_timeout_ms), "30s", 1, 1e9,
     "time to send a request's whole body"},
    {"IDLE_TIMEOUT", T_DUR, O(idle_timeout_ms), "60s", 1, 1e9, "idle keep-alive time"},
    {"DRAIN_TIMEOUT", T_DUR, O(drain_timeout_ms), "10s", 0, 1e9,
     "how long SIGTERM waits for work in flight"},
    {"MAX_CONNECTIONS", T_INT, O(max_connections), "10000", 1, 1e6, "open client connections"},
    {"WEBHOOK_CHECK_INTERVAL", T_DUR, O(webhook_check_ms), "6h", 100, 1e12,
     "how often an active hook is looked up in Lever"},
    {"RECONCILE_INTERVAL", T_DUR, O(reconcile_interval_ms), "10m", 0, 1e12,
     "how often Lever is polled for missed stage changes; 0 turns it off"},
};
#undef O

#define PREFIX "LEVERBRIDGE_"

/* A node id: what tenant ids allow, at most LB_CONFIG_NODE_ID_MAX. */
static int node_id_check(const char *id)
{
    size_t n = strlen(id);
    if (n < 1 || n > LB_CONFIG_NODE_ID_MAX) return LB_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)id[i]) && id[i] != '.' && id[i] != '_' && id[i] != '-')
            return LB_EINVAL;
    return 0;
}

static void flag_name(const char *name, char *out, size_t n)
{
    size_t i = 0;
    for (; name[i] && i + 1 < n; i++)
        out[i] = name[i] == '_' ? '-' : (char)tolower((unsigned char)name[i]);
    out[i] = '\0';
}

static int parse_listen(lb_config *cfg, const char *v, char *err, size_t errlen)
{
    const char *colon = strrchr(v, ':');
    char *end;
    long port = colon ? strtol(colon + 1, &end, 10) : -1;
    if (colon == NULL || colon == v || colon[1] == '\0' || *end != '\0' || port < 0 ||
        port > 65535) {
        snprintf(err, errlen, "LEVERBRIDGE_LISTEN: expected address:port, got \"%s\"", v);
        return LB_EINVAL;
    }
    const char *h = v;
    size_t hl = (size_t)(colon - v);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') { /* [::1]:8080 */
        h++;
        hl -= 2;
    }
    cfg->listen_host = lb_strndup(h, hl);
    cfg->listen_port = (int)port;
    return 0;
}

static int set_opt(lb_config *cfg, const opt *o, const char *v, char *err, size_t errlen)
{
    void *field = (char *)cfg + o->off;
    double num = 0;
    switch (o->type) {
    case T_URL:
        if (strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0) {
            snprintf(err, errlen, PREFIX "%s: expected an http:// or https:// URL, got \"%s\"",
                     o->name, v);
            return LB_EINVAL;
        }
        /* fallthrough */
    case T_STR:
    case T_OPTSTR: {
        if (*v == '\0' && o->type != T_OPTSTR) {
            snprintf(err, errlen, PREFIX "%s: must not be empty", o->name);
            return LB_EINVAL;
        }
        char **s = field;
        lb_free(*s);
        *s = *v ? lb_strdup(v) : NULL;
        if (*s != NULL && o->type == T_URL) {
            size_t n = strlen(*s);
            while (n > 0 && (*s)[n - 1] == '/')
                (*s)[--n] = '\0';
        }
        return 0;
    }
    case T_DUR: {
        int64_t ms;
        if (lb_duration_parse(v, &ms) != 0) {
            snprintf(err, errlen,
                     PREFIX "%s: expected a duration like 250ms, 10s, 5m or 48h, got \"%s\"",
                     o->name, v);
            return LB_EINVAL;
        }
        *(int64_t *)field = ms;
        num = (double)ms;
        break;
    }
    case T_SIZE: {
        uint64_t b;
        if (lb_size_parse(v, &b) != 0) {
            snprintf(err, errlen, PREFIX "%s: expected a size like 1MiB or 65536, got \"%s\"",
                     o->name, v);
            return LB_EINVAL;
        }
        *(uint64_t *)field = b;
        num = (double)b;
        break;
    }
    case T_INT:
    case T_RATE: {
        char *end;
        errno = 0;
        num = strtod(v, &end);
        if (errno != 0 || end == v || *end != '\0' ||
            (o->type == T_INT && num != (double)(long)num)) {
            snprintf(err, errlen, PREFIX "%s: expected a%s number, got \"%s\"", o->name,
                     o->type == T_INT ? "n integer" : "", v);
            return LB_EINVAL;
        }
        if (o->type == T_INT)
            *(int *)field = (int)num;
        else
            *(double *)field = num;
        break;
    }
    case T_LEVEL: {
        lb_log_level l;
        if (lb_log_level_parse(v, &l) != 0) {
            snprintf(err, errlen, PREFIX "%s: expected debug, info, warn or error, got \"%s\"",
                     o->name, v);
            return LB_EINVAL;
        }
        *(int *)field = (int)l;
        return 0;
    }
    }
    if (num < o->min || num > o->max) {
        snprintf(err, errlen, PREFIX "%s: \"%s\" is out of range", o->name, v);
        return LB_EINVAL;
    }
    return 0;
}

static void usage(void)
{
    printf("leverbridge %s: Lever integration server\n\n"
           "usage: leverbridge [--name value | --name=value]...\n"
           "       leverbridge backup PATH [--name value]...   copy the SQLite store, online\n"
           "       leverbridge copy-store --from sqlite:PATH --to postgres://...\n"
           "                                 move a SQLite store into an empty PostgreSQL\n\n"
           "Every setting is an environment variable LEVERBRIDGE_NAME and a flag --name.\n"
           "Durations: 250ms, 10s, 5m, 48h. Sizes: 65536, 512KiB, 1MiB.\n\n",
           LB_VERSION);
    for (size_t i = 0; i < LB_COUNTOF(opts); i++) {
        char flag[64];
        flag_name(opts[i].name, flag, sizeof(flag));
        printf("  --%-24s %s%s\n  %-26s %s%s%s\n", flag, PREFIX, opts[i].name, "", opts[i].help,
               opts[i].def ? "; default " : "", opts[i].def ? opts[i].def : "");
    }
    printf("\n  --help                     this text\n  --version                  the version\n");
}

static const opt *find_flag(const char *flag, size_t len)
{
    for (size_t i = 0; i < LB_COUNTOF(opts); i++) {
        char name[64];
        flag_name(opts[i].name, name, sizeof(name));
        if (strlen(name) == len && memcmp(name, flag, len) == 0) return &opts[i];
    }
    return NULL;
}

/* The host of an http(s) URL, without userinfo, port or brackets. */
static void url_host(const char *url, char *out, size_t n)
{
    const char *h = strstr(url, "://");
    h = h ? h + 3 : url;
    size_t len = strcspn(h, "/?#");
    const char *at = memchr(h, '@', len);
    if (at != NULL) {
        len -= (size_t)(at + 1 - h);
        h = at + 1;
    }
    if (len > 0 && h[0] == '[') {
        const char *close = memchr(h, ']', len);
        len = close ? (size_t)(close - h - 1) : len - 1;
        h++;
    } else {
        const char *colon = memchr(h, ':', len);
        if (colon != NULL) len = (size_t)(colon - h);
    }
    if (len >= n) len = n - 1;
    for (size_t i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)h[i]);
    out[len] = '\0';
}

static int host_is(const char *host, const char *domain)
{
    size_t hl = strlen(host), dl = strlen(domain);
    return strcmp(host, domain) == 0 ||
           (hl > dl && host[hl - dl - 1] == '.' && strcmp(host + hl - dl, domain) == 0);
}

static int host_is_loopback(const char *host)
{
    return host_is(host, "localhost") || strncmp(host, "127.", 4) == 0 ||
           strcmp(host, "::1") == 0 || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "::") == 0 ||
           strncmp(host, "::ffff:127.", 11) == 0;
}

/* A real Lever (a *.lever.co API) can only deliver to a public https:// URL;
 * a simulator or a test Lever elsewhere may reach anything. */
static void public_url_check(lb_config *cfg)
{
    char lever[256], pub[256], msg[1024];
    url_host(cfg->lever_api_url, lever, sizeof(lever));
    url_host(cfg->public_url, pub, sizeof(pub));
    if (!host_is(lever, "lever.co")) return;
    if (host_is_loopback(pub))
        snprintf(msg, sizeof(msg),
                 PREFIX "PUBLIC_URL is %s, a loopback address that Lever cannot reach, so "
                        "no webhook will ever arrive: set " PREFIX "PUBLIC_URL to this "
                        "server's public https:// address and provision the webhook again.",
                 cfg->public_url);
    else if (strncmp(cfg->public_url, "http://", 7) == 0)
        snprintf(msg, sizeof(msg),
                 PREFIX "PUBLIC_URL is %s, plain http: Lever delivers webhooks only to "
                        "https:// URLs: set " PREFIX "PUBLIC_URL to this server's public "
                        "https:// address and provision the webhook again.",
                 cfg->public_url);
    else
        return;
    cfg->public_url_warning = lb_strdup(msg);
}

int lb_config_load(lb_config *cfg, int argc, char **argv, char **envp, char *err, size_t errlen)
{
    int rc;
    memset(cfg, 0, sizeof(*cfg));
    err[0] = '\0';
    for (size_t i = 0; i < LB_COUNTOF(opts); i++)
        if (opts[i].def && (rc = set_opt(cfg, &opts[i], opts[i].def, err, errlen)) != 0) return rc;

    if (envp == NULL) envp = environ;
    for (char **e = envp; *e != NULL; e++) {
        if (strncmp(*e, PREFIX, sizeof(PREFIX) - 1) != 0) continue;
        const char *name = *e + sizeof(PREFIX) - 1;
        const char *eq = strchr(name, '=');
        if (eq == NULL) continue;
        size_t i;
        for (i = 0; i < LB_COUNTOF(opts); i++)
            if (strlen(opts[i].name) == (size_t)(eq - name) &&
                memcmp(opts[i].name, name, (size_t)(eq - name)) == 0)
                break;
        if (i == LB_COUNTOF(opts)) {
            snprintf(err, errlen, "%.*s: unknown setting", (int)(eq - *e), *e);
            return LB_EINVAL;
        }
        if ((rc = set_opt(cfg, &opts[i], eq + 1, err, errlen)) != 0) return rc;
    }

    for (int a = 1; a < argc; a++) {
        const char *arg = argv[a];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage();
            return LB_CONFIG_EXIT;
        }
        if (strcmp(arg, "--version") == 0) {
            printf("leverbridge %s\n", LB_VERSION);
            return LB_CONFIG_EXIT;
        }
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "%s: unexpected argument (see --help)", arg);
            return LB_EINVAL;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t nlen = eq ? (size_t)(eq - name) : strlen(name);
        const opt *o = find_flag(name, nlen);
        if (o == NULL) {
            snprintf(err, errlen, "--%.*s: unknown flag (see --help)", (int)nlen, name);
            return LB_EINVAL;
        }
        const char *v = eq ? eq + 1 : NULL;
        if (v == NULL) {
            if (a + 1 >= argc) {
                snprintf(err, errlen, "--%.*s: needs a value", (int)nlen, name);
                return LB_EINVAL;
            }
            v = argv[++a];
        }
        if ((rc = set_opt(cfg, o, v, err, errlen)) != 0) return rc;
    }

    if ((rc = parse_listen(cfg, cfg->listen, err, errlen)) != 0) return rc;
    char tmp[1024];
    if (cfg->public_url == NULL) {
        snprintf(tmp, sizeof(tmp), "http://%s", cfg->listen);
        cfg->public_url = lb_strdup(tmp);
    }
    public_url_check(cfg);
    if (cfg->advertise_url == NULL) {
        snprintf(tmp, sizeof(tmp), "http://%s", cfg->listen);
        cfg->advertise_url = lb_strdup(tmp);
    }
    if (cfg->node_id == NULL) {
        char host[256] = "";
        if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0')
            snprintf(host, sizeof(host), "leverbridge");
        snprintf(tmp, sizeof(tmp), "%.200s-%ld", host, (long)getpid());
        cfg->node_id = lb_strdup(tmp);
    } else if (node_id_check(cfg->node_id) != 0) {
        snprintf(err, errlen, PREFIX "NODE_ID: expected 1 to %d of A-Z a-z 0-9 . _ -",
                 LB_CONFIG_NODE_ID_MAX);
        return LB_EINVAL;
    }
    if (cfg->db == NULL) {
        snprintf(tmp, sizeof(tmp), "sqlite:%s/leverbridge.db", cfg->data_dir);
        cfg->db = lb_strdup(tmp);
    } else if (strncmp(cfg->db, "sqlite:", 7) != 0 && strncmp(cfg->db, "postgres://", 11) != 0 &&
               strncmp(cfg->db, "postgresql://", 13) != 0 && strchr(cfg->db, '=') == NULL) {
        /* (not echoed: a conninfo string may hold a password) */
        snprintf(err, errlen,
                 PREFIX "DB: expected sqlite:<path>, postgres://... or a libpq conninfo string "
                        "(host=... dbname=...)");
        return LB_EINVAL;
    }
    if (cfg->provision_retry_base_ms > cfg->provision_retry_cap_ms) {
        snprintf(err, errlen, PREFIX "PROVISION_RETRY_BASE: must not exceed PROVISION_RETRY_CAP");
        return LB_EINVAL;
    }
    if (cfg->retry_base_ms > cfg->retry_cap_ms) {
        snprintf(err, errlen, PREFIX "RETRY_BASE: must not exceed RETRY_CAP");
        return LB_EINVAL;
    }
    if ((cfg->lever_client_id == NULL) != (cfg->lever_client_secret == NULL)) {
        snprintf(err, errlen, PREFIX "LEVER_CLIENT_%s: OAuth needs both client id and secret",
                 cfg->lever_client_id ? "SECRET" : "ID");
        return LB_EINVAL;
    }
    if ((cfg->platform_url == NULL) != (cfg->platform_token == NULL)) {
        snprintf(err, errlen, PREFIX "PLATFORM_%s: the platform needs both URL and token",
                 cfg->platform_url ? "TOKEN" : "URL");
        return LB_EINVAL;
    }
    if ((cfg->platform_events_url == NULL) != (cfg->platform_events_secret == NULL)) {
        snprintf(err, errlen,
                 PREFIX "PLATFORM_EVENTS_%s: events to the platform need both URL and secret",
                 cfg->platform_events_url ? "SECRET" : "URL");
        return LB_EINVAL;
    }
    if (cfg->platform_events_secret != NULL &&
        strncmp(cfg->platform_events_secret, "whsec_", 6) != 0) {
        snprintf(err, errlen, PREFIX "PLATFORM_EVENTS_SECRET: expected whsec_ and base64");
        return LB_EINVAL;
    }
    return LB_CONFIG_OK;
}

void lb_config_free(lb_config *cfg)
{
    for (size_t i = 0; i < LB_COUNTOF(opts); i++) {
        if (opts[i].type == T_STR || opts[i].type == T_OPTSTR || opts[i].type == T_URL) {
            char **s = (char **)((char *)cfg + opts[i].off);
            lb_free(*s);
            *s = NULL;
        }
    }
    lb_free(cfg->listen_host);
    cfg->listen_host = NULL;
    lb_free(cfg->public_url_warning);
    cfg->public_url_warning = NULL;
}
