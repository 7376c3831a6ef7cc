/* The pruner: one timer and at most one LB_STORE_PRUNE op in flight. */
#include "store/prune.h"

#include "core/alloc.h"
#include "core/error.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/time.h"

#define MOD "prune"
#define MAX_INTERVAL_MS (60 * 1000)

struct lb_pruner {
    uv_timer_t timer;
    lb_store *store;
    int64_t retention_ms, interval_ms;
    lb_store_op op;
    int busy;    /* op in flight */
    int closing; /* close asked: no new op; close the timer once idle */
    size_t pass_jobs, pass_events;
    lb_pruner_stats stats;
    void (*close_cb)(void *data);
    void *close_data;
};

static void on_timer(uv_timer_t *t);

static void closed_cb(uv_handle_t *h)
{
    lb_pruner *p = h->data;
    void (*cb)(void *) = p->close_cb;
    void *data = p->close_data;
    lb_free(p);
    if (cb != NULL) cb(data);
}

static void count(const char *table, size_t n)
{
    static lb_metric *jobs, *events;
    if (jobs == NULL) {
        const char *help = "Rows deleted by retention";
        jobs = lb_metrics_counter("leverbridge_store_pruned_total", help, "table=\"jobs\"");
        events = lb_metrics_counter("leverbridge_store_pruned_total", help, "table=\"events\"");
    }
    if (n > 0) lb_metric_add(table[0] == 'j' ? jobs : events, (double)n);
}

static void end_pass(lb_pruner *p)
{
    p->stats.passes++;
    p->stats.last_pass_ms = lb_time_now_ms();
    if (p->pass_jobs + p->pass_events > 0)
        lb_info(MOD, "pruned %zu job(s) and %zu event(s) older than %lld s", p->pass_jobs,
                p->pass_events, (long long)(p->retention_ms / 1000));
    if (!p->closing) uv_timer_start(&p->timer, on_timer, (uint64_t)p->interval_ms, 0);
}

static int submit(lb_pruner *p);

static void op_done(lb_store_op *op)
{
    lb_pruner *p = op->data;
    p->busy = 0;
    if (op->status != 0) {
        /* A full disk, a closing store: try again next interval. */
        lb_debug(MOD, "prune batch failed: %s", lb_strerror(op->status));
    } else {
        count("jobs", op->prune.jobs);
        count("events", op->prune.events);
        p->stats.jobs += op->prune.jobs;
        p->stats.events += op->prune.events;
        p->pass_jobs += op->prune.jobs;
        p->pass_events += op->prune.events;
    }
    if (p->closing) {
        uv_close((uv_handle_t *)&p->timer, closed_cb);
        return;
    }
    /* A full batch means more is waiting: the next one joins a later commit. */
    int more =
        op->status == 0 && (op->prune.jobs == LB_PRUNE_BATCH || op->prune.events == LB_PRUNE_BATCH);
    if (!more || submit(p) != 0) end_pass(p);
}

static int submit(lb_pruner *p)
{
    p->op = (lb_store_op){.kind = LB_STORE_PRUNE, .cb = op_done, .data = p};
    p->op.prune.before = lb_time_now_ms() - p->retention_ms;
    p->op.prune.limit = LB_PRUNE_BATCH;
    int rc = lb_store_submit(p->store, &p->op);
    if (rc == 0) p->busy = 1;
    return rc;
}

static void start_pass(lb_pruner *p)
{
    if (p->busy || p->closing) return;
    uv_timer_stop(&p->timer);
    p->pass_jobs = p->pass_events = 0;
    if (submit(p) != 0) end_pass(p); /* the queue is full: next interval */
}

static void on_timer(uv_timer_t *t)
{
    start_pass(t->data);
}

int lb_pruner_start(uv_loop_t *loop, lb_store *store, int64_t retention_ms, lb_pruner **out)
{
    *out = NULL;
    if (retention_ms <= 0) return LB_EINVAL;
    lb_pruner *p = LB_NEW(lb_pruner);
    p->store = store;
    p->retention_ms = retention_ms;
    p->interval_ms = retention_ms / 2 < MAX_INTERVAL_MS ? retention_ms / 2 : MAX_INTERVAL_MS;
    if (p->interval_ms < 1) p->interval_ms = 1;
    int rc = uv_timer_init(loop, &p->timer);
    if (rc != 0) {
        lb_free(p);
        return rc;
    }
    p->timer.data = p;
    uv_timer_start(&p->timer, on_timer, (uint64_t)p->interval_ms, 0);
    count("jobs", 0); /* the series exist from the start, at 0 */
    *out = p;
    return 0;
}

void lb_pruner_kick(lb_pruner *p)
{
    start_pass(p);
}

void lb_pruner_stats_get(const lb_pruner *p, lb_pruner_stats *out)
{
    *out = p->stats;
}

void lb_pruner_close(lb_pruner *p, void (*cb)(void *data), void *data)
{
    p->closing = 1;
    p->close_cb = cb;
    p->close_data = data;
    uv_timer_stop(&p->timer);
    if (!p->busy) uv_close((uv_handle_t *)&p->timer, closed_cb);
}
