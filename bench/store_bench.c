/* Durable single-row writes per second through lb_store (SQLite backend,
 * WAL, synchronous=FULL), two ways in the same run and on the same file:
 *  1. group commit: keep --inflight upserts submitted at all times;
 *  2. one transaction per operation: submit one, wait for it, submit the next.
 * Each write inserts a new tenant row. Prints ops/s for both, the ratio and
 * the mean batch size. Usage:
 *   store_bench --dir DIR [--ops N] [--inflight K] [--serial-seconds S] */
#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "store/store.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct bench bench;

typedef struct {
    lb_store_op op;
    bench *b;
} req;

typedef struct {
    uint64_t ops;
    uint64_t commits;
    double commit_sum;
    double commit_max;
} phase_stats;

struct bench {
    uv_loop_t loop;
    lb_store *store;
    req *reqs;
    uint64_t next_id;   /* ids are unique across phases */
    uint64_t submitted; /* in the current phase */
    uint64_t completed;
    uint64_t target;   /* group phase: total ops */
    uint64_t deadline; /* serial phase: uv_hrtime() to stop at */
    int serial;
    phase_stats ph;
};

static void die(const char *what, int rc)
{
    fprintf(stderr, "store_bench: %s: %s\n", what, lb_strerror(rc));
    exit(1);
}

static void on_commit(double seconds, size_t ops, void *data)
{
    bench *b = data;
    b->ph.commits++;
    b->ph.commit_sum += seconds;
    if (seconds > b->ph.commit_max) b->ph.commit_max = seconds;
}

static void req_cb(lb_store_op *op);

static void submit(bench *b, req *r)
{
    memset(&r->op, 0, sizeof(r->op));
    r->op.kind = LB_STORE_TENANT_UPSERT;
    r->op.cb = req_cb;
    r->op.data = r;
    snprintf(r->op.tenant_upsert.rec.id, sizeof(r->op.tenant_upsert.rec.id), "bench-%012llu",
             (unsigned long long)b->next_id++);
    r->op.tenant_upsert.rec.name = "Benchmark Tenant";
    r->op.tenant_upsert.rec.api_addon = 1;
    int rc = lb_store_submit(b->store, &r->op);
    if (rc != 0) die("submit", rc);
    b->submitted++;
}

static void req_cb(lb_store_op *op)
{
    req *r = op->data;
    bench *b = r->b;
    if (op->status != 0) die("write", op->status);
    b->completed++;
    if (b->serial) {
        if (uv_hrtime() < b->deadline) submit(b, r);
    } else if (b->submitted < b->target) {
        submit(b, r);
    }
}

static void closed_cb(void *data)
{
    int *closed = data;
    *closed = 1;
}

static double phase_end(bench *b, uint64_t t0, const char *name)
{
    double secs = (double)(uv_hrtime() - t0) / 1e9;
    double rate = (double)b->completed / secs;
    printf("%-22s %9llu writes in %6.3f s = %9.0f writes/s | commits %llu, mean batch %.1f,"
           " commit mean %.3f ms max %.3f ms\n",
           name, (unsigned long long)b->completed, secs, rate, (unsigned long long)b->ph.commits,
           b->ph.commits ? (double)b->completed / (double)b->ph.commits : 0.0,
           b->ph.commits ? b->ph.commit_sum / (double)b->ph.commits * 1e3 : 0.0,
           b->ph.commit_max * 1e3);
    return rate;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    uint64_t ops = 500000;
    size_t inflight = 10000;
    double serial_seconds = 3.0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc)
            dir = argv[++i];
        else if (strcmp(argv[i], "--ops") == 0 && i + 1 < argc)
            ops = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--inflight") == 0 && i + 1 < argc)
            inflight = strtoul(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--serial-seconds") == 0 && i + 1 < argc)
            serial_seconds = strtod(argv[++i], NULL);
        else {
            fprintf(stderr, "usage: store_bench --dir DIR [--ops N] [--inflight K]"
                            " [--serial-seconds S]\n");
            return 2;
        }
    }
    if (dir == NULL || inflight == 0 || inflight > LB_STORE_QUEUE_MAX || ops == 0) {
        fprintf(stderr, "store_bench: --dir is required; 1 <= --inflight <= %d\n",
                LB_STORE_QUEUE_MAX);
        return 2;
    }
    lb_alloc_install();
    lb_log_set_level(LB_LOG_WARN);

    char path[4096], url[4200];
    snprintf(path, sizeof(path), "%s/store_bench.db", dir);
    static const char *const sfx[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < LB_COUNTOF(sfx); i++) {
        char p[4200];
        snprintf(p, sizeof(p), "%s%s", path, sfx[i]);
        unlink(p); /* a fresh database each run */
    }
    snprintf(url, sizeof(url), "sqlite:%s", path);

    bench b;
    memset(&b, 0, sizeof(b));
    uv_loop_init(&b.loop);
    char err[256];
    int rc = lb_store_open(&b.loop, url, NULL, &b.store, err, sizeof(err));
    if (rc != 0) {
        fprintf(stderr, "store_bench: %s\n", err);
        return 1;
    }
    lb_store_set_on_commit(b.store, on_commit, &b);
    b.reqs = lb_calloc(inflight, sizeof(req));
    for (size_t i = 0; i < inflight; i++)
        b.reqs[i].b = &b;

    printf("store_bench: %s, journal_mode=WAL, synchronous=FULL, one row per write\n", path);

    /* 1. group commit */
    b.target = ops;
    uint64_t t0 = uv_hrtime();
    for (size_t i = 0; i < inflight && b.submitted < b.target; i++)
        submit(&b, &b.reqs[i]);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    char name[64];
    snprintf(name, sizeof(name), "group (%zu in flight)", inflight);
    double group = phase_end(&b, t0, name);

    /* 2. one transaction per operation */
    memset(&b.ph, 0, sizeof(b.ph));
    b.serial = 1;
    b.submitted = b.completed = 0;
    t0 = uv_hrtime();
    b.deadline = t0 + (uint64_t)(serial_seconds * 1e9);
    submit(&b, &b.reqs[0]);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    double serial = phase_end(&b, t0, "one per transaction");

    printf("ratio group/serial: %.1fx\n", serial > 0 ? group / serial : 0.0);

    int closed = 0;
    lb_store_close(b.store, closed_cb, &closed);
    uv_run(&b.loop, UV_RUN_DEFAULT);
    lb_free(b.reqs);
    if (!closed || uv_loop_close(&b.loop) != 0) {
        fprintf(stderr, "store_bench: store did not close cleanly\n");
        return 1;
    }
    return 0;
}
