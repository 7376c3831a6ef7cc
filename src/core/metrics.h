/* Prometheus metrics. One registry for the process, used from the loop thread
 * only (other threads hand figures to the loop first). Series are created on
 * first use and live until lb_metrics_reset(); their number is bounded, and a
 * series past the bound is counted in leverbridge_metrics_dropped_total
 * instead. Labels never carry tenant ids. */
#ifndef LB_CORE_METRICS_H
#define LB_CORE_METRICS_H

#include "core/strbuf.h"

#include <stddef.h>
#include <stdint.h>

#define LB_METRICS_MAX_SERIES 2048

typedef struct lb_metric lb_metric;

/* labels: the inside of {...} already escaped, e.g. "route=\"/healthz\",code=\"200\"",
 * or "" for none. The returned pointer stays valid until lb_metrics_reset(). */
lb_metric *lb_metrics_counter(const char *name, const char *help, const char *labels);
lb_metric *lb_metrics_gauge(const char *name, const char *help, const char *labels);
/* bounds: ascending upper bounds in the metric's unit (seconds), +Inf implied.
 * Every series of one histogram family must use the same bounds. */
lb_metric *lb_metrics_histogram(const char *name, const char *help, const char *labels,
                                const double *bounds, size_t nbounds);

/* Declares a labelled counter family before its first series, so that
 * /metrics names it from the start. */
void lb_metrics_declare_counter(const char *name, const char *help);

void lb_metric_add(lb_metric *m, double v);     /* counters and gauges */
void lb_metric_set(lb_metric *m, double v);     /* gauges */
void lb_metric_observe(lb_metric *m, double v); /* histograms */

/* Default latency buckets (seconds), 0.5 ms .. 10 s. */
extern const double lb_metrics_latency_bounds[];
extern const size_t lb_metrics_latency_nbounds;

/* Renders every family in Prometheus text format 0.0.4. */
int lb_metrics_render(lb_strbuf *out);
void lb_metrics_reset(void);

#endif
