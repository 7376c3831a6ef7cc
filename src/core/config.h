/* Configuration: every setting is an environment variable LEVERBRIDGE_<NAME>
 * and the flag --<name> (lower case, '-' for '_'); a flag wins over the
 * environment. Values are validated here; what needs files or crypto (master
 * key, admin token) is resolved by its own module at start-up. */
#ifndef LB_CORE_CONFIG_H
#define LB_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *listen; /* "host:port" as given */
    char *listen_host;
    int listen_port;
    char *public_url; /* without a trailing '/' */
    char *data_dir;
    char *db;          /* "sqlite:<path>" or "postgres://..." */
    char *master_key;  /* NULL: use DATA_DIR/master.key */
    char *admin_token; /* NULL: use DATA_DIR/admin-token */
    char *lever_api_url;
    char *lever_auth_url;
    char *lever_client_id; /* NULL: OAuth off */
    char *lever_client_secret;
    double lever_rate;
    int lever_burst;
    int64_t webhook_deadline_ms;
    int64_t provision_retry_base_ms;
    int64_t provision_retry_cap_ms;
    int64_t retry_base_ms;
    int64_t retry_cap_ms;
    int64_t job_max_age_ms;
    char *platform_url;
    char *platform_token;
    char *platform_events_url;    /* NULL: events to the platform off */
    char *platform_events_secret; /* "whsec_<base64>"; decoded by main */
    int max_inflight;
    uint64_t max_body;
    int64_t replay_window_ms;
    int64_t retention_ms; /* 0: keep all */
    int log_level;        /* lb_log_level */
    /* Several replicas (api.md "Several replicas (PostgreSQL)"). */
    char *node_id;        /* default <hostname>-<pid> */
    char *advertise_url;  /* default http://LISTEN */
    int64_t lease_ttl_ms; /* 1s..10m */
    /* A request forwarded to a tenant's lease holder: its whole time. */
    int64_t forward_timeout_ms;
    /* Server limits beyond api.md's table (documented in docs/configuration.md). */
    int64_t header_timeout_ms;
    int64_t body_timeout_ms;
    int64_t idle_timeout_ms;
    int64_t drain_timeout_ms;
    int max_connections;
    int64_t webhook_check_ms;
    int64_t reconcile_interval_ms; /* 0: reconciliation off */
    /* Derived, not a setting: why Lever cannot deliver to PUBLIC_URL (a real
     * Lever host with a loopback or plain-http PUBLIC_URL), or NULL. */
    char *public_url_warning;
} lb_config;

/* Longest NODE_ID: a hostname of 200 and a pid fit. */
#define LB_CONFIG_NODE_ID_MAX 220

enum { LB_CONFIG_OK = 0, LB_CONFIG_EXIT = 1 };

/* Fills cfg from defaults, then envp (NULL: environ), then argv. Returns
 * LB_CONFIG_OK; LB_CONFIG_EXIT after printing --help or --version to stdout;
 * or a negative code with one line naming the setting in err. */
int lb_config_load(lb_config *cfg, int argc, char **argv, char **envp, char *err, size_t errlen);
void lb_config_free(lb_config *cfg);

#endif
