#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/config.h"
#include "core/error.h"
#include "core/heap.h"
#include "core/map.h"
#include "core/metrics.h"
#include "core/strbuf.h"
#include "core/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void durations(void **state)
{
    (void)state;
    int64_t ms;
    assert_int_equal(lb_duration_parse("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(lb_duration_parse("10s", &ms), 0);
    assert_int_equal(ms, 10000);
    assert_int_equal(lb_duration_parse("5m", &ms), 0);
    assert_int_equal(ms, 300000);
    assert_int_equal(lb_duration_parse("48h", &ms), 0);
    assert_int_equal(ms, 172800000);
    assert_int_equal(lb_duration_parse("30", &ms), 0);
    assert_int_equal(ms, 30000);
    assert_int_equal(lb_duration_parse("1.5s", &ms), 0);
    assert_int_equal(ms, 1500);
    assert_int_equal(lb_duration_parse("10x", &ms), LB_EPARSE);
    assert_int_equal(lb_duration_parse("-1s", &ms), LB_EPARSE);
    assert_int_equal(lb_duration_parse("", &ms), LB_EPARSE);
    assert_int_equal(lb_duration_parse("s", &ms), LB_EPARSE);
    /* plain decimal numbers only: no leading zero, exponent, hex or spaces */
    static const char *const bad[] = {"01h", "00",  "0030m", "1e3s", "0x10s",
                                      "1.s", ".5s", "1 s",   "inf",  "1.5.5s"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(lb_duration_parse(bad[i], &ms), LB_EPARSE);
    assert_int_equal(lb_duration_parse("0", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(lb_duration_parse("0.5s", &ms), 0);
    assert_int_equal(ms, 500);
    assert_int_equal(lb_duration_parse("30d", &ms), 0);
    assert_int_equal(ms, 2592000000);
    assert_int_equal(lb_duration_parse("10ms", &ms), 0);
    assert_int_equal(ms, 10);
}

static void sizes(void **state)
{
    (void)state;
    uint64_t b;
    assert_int_equal(lb_size_parse("1MiB", &b), 0);
    assert_int_equal(b, 1048576);
    assert_int_equal(lb_size_parse("512KiB", &b), 0);
    assert_int_equal(b, 524288);
    assert_int_equal(lb_size_parse("65536", &b), 0);
    assert_int_equal(b, 65536);
    assert_int_equal(lb_size_parse("1kb", &b), 0);
    assert_int_equal(b, 1000);
    assert_int_equal(lb_size_parse("abc", &b), LB_EPARSE);
    assert_int_equal(lb_size_parse("1 MiB", &b), LB_EPARSE);
    assert_int_equal(lb_size_parse("99999999999999999999GiB", &b), LB_EPARSE);
}

static void times(void **state)
{
    (void)state;
    char s[LB_TIME_STR_SIZE];
    lb_time_format(1795750580123, s);
    assert_string_equal(s, "2026-11-27T03:36:20.123Z");
    int64_t ms;
    assert_int_equal(lb_time_parse(s, strlen(s), &ms), 0);
    assert_int_equal(ms, 1795750580123);
    const char *off = "2026-11-27T05:36:20.5+02:00";
    assert_int_equal(lb_time_parse(off, strlen(off), &ms), 0);
    assert_int_equal(ms, 1795750580500);
    const char *bad = "2026-13-27T03:36:20Z";
    assert_int_equal(lb_time_parse(bad, strlen(bad), &ms), LB_EPARSE);
    bad = "2026-11-27 03:36:20Z";
    assert_int_equal(lb_time_parse(bad, strlen(bad), &ms), LB_EPARSE);
    /* real calendar dates only: month lengths and leap years */
    static const char *const not_dates[] = {
        "2026-02-30T00:00:00Z",
        "2026-02-29T00:00:00Z",
        "2100-02-29T00:00:00Z",
        "2026-04-31T00:00:00Z",
        "2026-11-31T12:00:00.000Z",
        "2026-00-10T00:00:00Z",
        /* the year floor: nothing before 1970 (times are ms since then) */
        "0000-01-01T00:00:00Z",
        "1969-12-31T23:59:59.999Z",
        "1970-01-01T00:30:00+01:00",
    };
    for (size_t i = 0; i < sizeof(not_dates) / sizeof(not_dates[0]); i++)
        assert_int_equal(lb_time_parse(not_dates[i], strlen(not_dates[i]), &ms), LB_EPARSE);
    static const char *const dates[] = {"2028-02-29T00:00:00Z", "2000-02-29T00:00:00Z",
                                        "2026-12-31T23:59:59.999Z", "1970-01-01T00:00:00Z"};
    for (size_t i = 0; i < sizeof(dates) / sizeof(dates[0]); i++)
        assert_int_equal(lb_time_parse(dates[i], strlen(dates[i]), &ms), 0);
    assert_int_equal(lb_time_parse("1970-01-01T00:00:00Z", 20, &ms), 0);
    assert_int_equal(ms, 0);
}

static void strbuf_bounds(void **state)
{
    (void)state;
    lb_strbuf b;
    lb_strbuf_init(&b, 8);
    assert_int_equal(lb_strbuf_cat(&b, "12345678"), 0);
    assert_int_equal(lb_strbuf_cat(&b, "9"), LB_ETOOBIG);
    assert_string_equal(b.data, "12345678"); /* unchanged by the refused append */
    lb_strbuf_free(&b);
    char mem[8];
    lb_strbuf_init_fixed(&b, mem, sizeof(mem));
    assert_int_equal(lb_strbuf_printf(&b, "%d", 1234567), 0);
    assert_int_equal(lb_strbuf_cat(&b, "x"), LB_ETOOBIG);
    lb_strbuf_reset(&b);
    assert_int_equal(lb_strbuf_json_str(&b, "a\"b", 3), 0);
    assert_string_equal(mem, "\"a\\\"b\"");
    lb_strbuf_reset(&b);
    assert_int_equal(lb_strbuf_json_str(&b, "\n\n\n", 3), LB_ETOOBIG);
    assert_int_equal(b.len, 0); /* all or nothing */
}

static void map_ops(void **state)
{
    (void)state;
    lb_map m;
    lb_map_init(&m);
    static char keys[2000][8];
    for (int i = 0; i < 2000; i++) {
        snprintf(keys[i], sizeof(keys[i]), "k%d", i);
        assert_null(lb_map_put(&m, keys[i], keys[i]));
    }
    assert_int_equal(m.count, 2000);
    for (int i = 0; i < 2000; i += 2)
        assert_ptr_equal(lb_map_del(&m, keys[i]), keys[i]);
    for (int i = 0; i < 2000; i++)
        assert_ptr_equal(lb_map_get(&m, keys[i]), i % 2 ? keys[i] : NULL);
    assert_int_equal(m.count, 1000);
    assert_null(lb_map_del(&m, "missing"));
    /* A walk sees each entry once. */
    static char seen[2000];
    memset(seen, 0, sizeof(seen));
    size_t pos = 0, n = 0;
    const char *v;
    while ((v = lb_map_next(&m, &pos)) != NULL) {
        int i = atoi(v + 1);
        assert_true(i % 2 == 1 && !seen[i]);
        seen[i] = 1;
        n++;
    }
    assert_int_equal(n, 1000);
    assert_null(lb_map_next(&m, &pos)); /* and stays at the end */
    lb_map_free(&m);
    lb_map_init(&m);
    pos = 0;
    assert_null(lb_map_next(&m, &pos)); /* empty */
}

typedef struct {
    lb_heap_node node;
    int id;
} item;

static void heap_order_and_remove(void **state)
{
    (void)state;
    lb_heap h;
    lb_heap_init(&h);
    item items[500];
    srand(7);
    for (int i = 0; i < 500; i++) {
        items[i].id = i;
        items[i].node.idx = 0;
        items[i].node.key = rand() % 1000;
        lb_heap_push(&h, &items[i].node);
    }
    for (int i = 0; i < 500; i += 3)
        lb_heap_remove(&h, &items[i].node);
    assert_false(lb_heap_contains(&items[0].node));
    int64_t last = -1;
    size_t n = 0;
    lb_heap_node *x;
    while ((x = lb_heap_pop(&h)) != NULL) {
        assert_true(x->key >= last);
        assert_true(LB_CONTAINER_OF(x, item, node)->id % 3 != 0);
        last = x->key;
        n++;
    }
    assert_int_equal(n, 500 - 167);
    lb_heap_free(&h);
}

static void metrics_render(void **state)
{
    (void)state;
    lb_metric_add(lb_metrics_counter("t_total", "help", "code=\"200\""), 2);
    lb_metric_add(lb_metrics_counter("t_total", "help", "code=\"200\""), 1);
    lb_metric *h = lb_metrics_histogram("t_seconds", "h", "", lb_metrics_latency_bounds,
                                        lb_metrics_latency_nbounds);
    lb_metric_observe(h, 0.003);
    lb_metric_observe(h, 20);
    lb_strbuf b;
    lb_strbuf_init(&b, 1 << 20);
    assert_int_equal(lb_metrics_render(&b), 0);
    assert_non_null(strstr(b.data, "# TYPE t_total counter\nt_total{code=\"200\"} 3\n"));
    assert_non_null(strstr(b.data, "t_seconds_bucket{le=\"0.0025\"} 0\n"));
    assert_non_null(strstr(b.data, "t_seconds_bucket{le=\"0.005\"} 1\n"));
    assert_non_null(strstr(b.data, "t_seconds_bucket{le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(b.data, "t_seconds_count 2\n"));
    lb_strbuf_free(&b);
    lb_metrics_reset();
}

static void config_defaults_and_errors(void **state)
{
    (void)state;
    lb_config cfg;
    char err[256];
    char *env0[] = {NULL};
    char *argv0[] = {"leverbridge", NULL};
    assert_int_equal(lb_config_load(&cfg, 1, argv0, env0, err, sizeof(err)), 0);
    assert_string_equal(cfg.listen_host, "127.0.0.1");
    assert_int_equal(cfg.listen_port, 8080);
    assert_string_equal(cfg.public_url, "http://127.0.0.1:8080");
    assert_string_equal(cfg.db, "sqlite:./data/leverbridge.db");
    assert_int_equal(cfg.webhook_deadline_ms, 48LL * 3600 * 1000);
    assert_int_equal(cfg.max_body, 1048576);
    assert_int_equal(cfg.lever_burst, 20);
    assert_string_equal(cfg.advertise_url, "http://127.0.0.1:8080");
    assert_int_equal(cfg.lease_ttl_ms, 15000);
    char pid[32];
    snprintf(pid, sizeof(pid), "-%ld", (long)getpid()); /* <hostname>-<pid> */
    assert_true(strlen(cfg.node_id) > strlen(pid) &&
                strcmp(cfg.node_id + strlen(cfg.node_id) - strlen(pid), pid) == 0);
    lb_config_free(&cfg);

    char *env5[] = {"LEVERBRIDGE_LEASE_TTL=500ms", NULL};
    assert_true(lb_config_load(&cfg, 1, argv0, env5, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "LEVERBRIDGE_LEASE_TTL"));
    lb_config_free(&cfg);
    char *env6[] = {"LEVERBRIDGE_NODE_ID=a b", NULL};
    assert_true(lb_config_load(&cfg, 1, argv0, env6, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "LEVERBRIDGE_NODE_ID"));
    lb_config_free(&cfg);
    char *env7[] = {"LEVERBRIDGE_NODE_ID=pod-7", "LEVERBRIDGE_LEASE_TTL=2s",
                    "LEVERBRIDGE_ADVERTISE_URL=http://10.0.0.7:8080/", NULL};
    assert_int_equal(lb_config_load(&cfg, 1, argv0, env7, err, sizeof(err)), 0);
    assert_string_equal(cfg.node_id, "pod-7");
    assert_int_equal(cfg.lease_ttl_ms, 2000);
    assert_string_equal(cfg.advertise_url, "http://10.0.0.7:8080");
    assert_int_equal(cfg.forward_timeout_ms, 30000);
    lb_config_free(&cfg);
    char *env8[] = {"LEVERBRIDGE_FORWARD_TIMEOUT=1500ms", NULL};
    assert_int_equal(lb_config_load(&cfg, 1, argv0, env8, err, sizeof(err)), 0);
    assert_int_equal(cfg.forward_timeout_ms, 1500);
    lb_config_free(&cfg);
    char *env9[] = {"LEVERBRIDGE_FORWARD_TIMEOUT=0", NULL};
    assert_true(lb_config_load(&cfg, 1, argv0, env9, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "LEVERBRIDGE_FORWARD_TIMEOUT"));
    lb_config_free(&cfg);

    char *env1[] = {"LEVERBRIDGE_LISTEN=0.0.0.0:9000", "LEVERBRIDGE_RETRY_BASE=250ms", NULL};
    char *argv1[] = {"leverbridge", "--listen", "127.0.0.1:9001", "--public-url=https://x.test/",
                     NULL};
    assert_int_equal(lb_config_load(&cfg, 4, argv1, env1, err, sizeof(err)), 0);
    assert_int_equal(cfg.listen_port, 9001); /* the flag wins */
    assert_int_equal(cfg.retry_base_ms, 250);
    assert_string_equal(cfg.public_url, "https://x.test"); /* no trailing slash */
    lb_config_free(&cfg);

    char *env2[] = {"LEVERBRIDGE_MAX_BODY=lots", NULL};
    assert_true(lb_config_load(&cfg, 1, argv0, env2, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "LEVERBRIDGE_MAX_BODY"));
    lb_config_free(&cfg);
    char *env3[] = {"LEVERBRIDGE_LEVER_CLIENT_ID=abc", NULL};
    assert_true(lb_config_load(&cfg, 1, argv0, env3, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "LEVERBRIDGE_LEVER_CLIENT_SECRET"));
    lb_config_free(&cfg);
    char *env4[] = {"LEVERBRIDGE_LISTN=1", NULL};
    assert_true(lb_config_load(&cfg, 1, argv0, env4, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "LEVERBRIDGE_LISTN"));
    lb_config_free(&cfg);
    char *argv2[] = {"leverbridge", "--bogus", NULL};
    assert_true(lb_config_load(&cfg, 2, argv2, env0, err, sizeof(err)) < 0);
    assert_non_null(strstr(err, "--bogus"));
    lb_config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(durations),      cmocka_unit_test(sizes),
        cmocka_unit_test(times),          cmocka_unit_test(strbuf_bounds),
        cmocka_unit_test(map_ops),        cmocka_unit_test(heap_order_and_remove),
        cmocka_unit_test(metrics_render), cmocka_unit_test(config_defaults_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
