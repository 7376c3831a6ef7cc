#include "core/metrics.h"

#include "core/alloc.h"
#include "core/error.h"

#include <stdio.h>
#include <string.h>

typedef enum { M_COUNTER, M_GAUGE, M_HISTOGRAM } metric_type;

struct family;

struct lb_metric {
    lb_metric *next; /* next series of the same family */
    const struct family *fam;
    char *labels;
    uint32_t hash;
    double value;      /* counter/gauge value; histogram sum */
    uint64_t count;    /* histogram observations */
    uint64_t *buckets; /* histogram: nbounds cumulative-at-render counts */
};

typedef struct family {
    struct family *next;
    char *name;
    char *help;
    metric_type type;
    const double *bounds;
    size_t nbounds;
    lb_metric *series;
    lb_metric **tail;
} family;

static family *families;
static family **families_tail = &families;
static size_t nseries;
static lb_metric dropped_sink;
static uint64_t ndropped;

const double lb_metrics_latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                            0.1,    0.25,  0.5,    1,     2.5,  5,     10};
const size_t lb_metrics_latency_nbounds = LB_COUNTOF(lb_metrics_latency_bounds);

static uint32_t fnv1a(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static family *family_get(const char *name, const char *help, metric_type type,
                          const double *bounds, size_t nbounds)
{
    for (family *f = families; f != NULL; f = f->next)
        if (strcmp(f->name, name) == 0) return f;
    family *f = LB_NEW(family);
    f->name = lb_strdup(name);
    f->help = lb_strdup(help);
    f->type = type;
    f->bounds = bounds;
    f->nbounds = nbounds;
    f->tail = &f->series;
    *families_tail = f;
    families_tail = &f->next;
    return f;
}

static lb_metric *series_get(const char *name, const char *help, metric_type type,
                             const char *labels, const double *bounds, size_t nbounds)
{
    family *f = family_get(name, help, type, bounds, nbounds);
    uint32_t h = fnv1a(labels);
    for (lb_metric *m = f->series; m != NULL; m = m->next)
        if (m->hash == h && strcmp(m->labels, labels) == 0) return m;
    if (nseries >= LB_METRICS_MAX_SERIES) {
        ndropped++;
        memset(&dropped_sink, 0, sizeof(dropped_sink));
        return &dropped_sink;
    }
    lb_metric *m = LB_NEW(lb_metric);
    m->labels = lb_strdup(labels);
    m->hash = h;
    m->fam = f;
    if (type == M_HISTOGRAM) m->buckets = lb_calloc(f->nbounds, sizeof(uint64_t));
    *f->tail = m;
    f->tail = &m->next;
    nseries++;
    return m;
}

lb_metric *lb_metrics_counter(const char *name, const char *help, const char *labels)
{
    return series_get(name, help, M_COUNTER, labels, NULL, 0);
}

void lb_metrics_declare_counter(const char *name, const char *help)
{
    family_get(name, help, M_COUNTER, NULL, 0);
}

lb_metric *lb_metrics_gauge(const char *name, const char *help, const char *labels)
{
    return series_get(name, help, M_GAUGE, labels, NULL, 0);
}

lb_metric *lb_metrics_histogram(const char *name, const char *help, const char *labels,
                                const double *bounds, size_t nbounds)
{
    return series_get(name, help, M_HISTOGRAM, labels, bounds, nbounds);
}

void lb_metric_add(lb_metric *m, double v)
{
    m->value += v;
}

void lb_metric_set(lb_metric *m, double v)
{
    m->value = v;
}

void lb_metric_observe(lb_metric *m, double v)
{
    m->value += v;
    m->count++;
    if (m->buckets == NULL) /* the dropped sink */
        return;
    /* Linear scan: a dozen bounds, cheaper than bisecting. Buckets hold
     * per-bucket counts; rendering accumulates them. */
    for (size_t i = 0; i < m->fam->nbounds; i++) {
        if (v <= m->fam->bounds[i]) {
            m->buckets[i]++;
            return;
        }
    }
}

static void fmt_labels(lb_strbuf *out, const char *labels, const char *extra)
{
    if (*labels == '\0' && extra == NULL) return;
    lb_strbuf_cat(out, "{");
    lb_strbuf_cat(out, labels);
    if (extra != NULL) {
        if (*labels != '\0') lb_strbuf_cat(out, ",");
        lb_strbuf_cat(out, extra);
    }
    lb_strbuf_cat(out, "}");
}

int lb_metrics_render(lb_strbuf *out)
{
    static const char *const types[] = {"counter", "gauge", "histogram"};
    for (const family *f = families; f != NULL; f = f->next) {
        lb_strbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", f->name, f->help, f->name,
                         types[f->type]);
        for (const lb_metric *m = f->series; m != NULL; m = m->next) {
            if (f->type != M_HISTOGRAM) {
                lb_strbuf_cat(out, f->name);
                fmt_labels(out, m->labels, NULL);
                lb_strbuf_printf(out, " %.17g\n", m->value);
                continue;
            }
            uint64_t cum = 0;
            char le[64];
            for (size_t i = 0; i < f->nbounds; i++) {
                cum += m->buckets[i];
                snprintf(le, sizeof(le), "le=\"%g\"", f->bounds[i]);
                lb_strbuf_printf(out, "%s_bucket", f->name);
                fmt_labels(out, m->labels, le);
                lb_strbuf_printf(out, " %llu\n", (unsigned long long)cum);
            }
            lb_strbuf_printf(out, "%s_bucket", f->name);
            fmt_labels(out, m->labels, "le=\"+Inf\"");
            lb_strbuf_printf(out, " %llu\n%s_sum", (unsigned long long)m->count, f->name);
            fmt_labels(out, m->labels, NULL);
            lb_strbuf_printf(out, " %.17g\n%s_count", m->value, f->name);
            fmt_labels(out, m->labels, NULL);
            lb_strbuf_printf(out, " %llu\n", (unsigned long long)m->count);
        }
    }
    lb_strbuf_printf(out,
                     "# HELP leverbridge_metrics_dropped_total Series refused past the bound.\n"
                     "# TYPE leverbridge_metrics_dropped_total counter\n"
                     "leverbridge_metrics_dropped_total %llu\n",
                     (unsigned long long)ndropped);
    return out->failed ? LB_ETOOBIG : 0;
}

void lb_metrics_reset(void)
{
    family *f = families;
    while (f != NULL) {
        family *fn = f->next;
        lb_metric *m = f->series;
        while (m != NULL) {
            lb_metric *mn = m->next;
            lb_free(m->labels);
            lb_free(m->buckets);
            lb_free(m);
            m = mn;
        }
        lb_free(f->name);
        lb_free(f->help);
        lb_free(f);
        f = fn;
    }
    families = NULL;
    families_tail = &families;
    nseries = 0;
    ndropped = 0;
}
