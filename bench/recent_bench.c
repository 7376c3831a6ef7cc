/* Memory and speed of the table of recent Lever delivery keys
 * (src/store/recent.h), beside the table it replaced, in the same run, with
 * the same keys:
 *  - new: lb_recent itself (12-byte slots, Robin Hood probing, 3/4 to 9/10
 *    full, SipHash-2-4 keyed per table);
 *  - old: a copy of the table before it (24-byte slots of a 64-bit FNV-1a
 *    hash, the full row number and the millisecond time; linear probing,
 *    at most 3/4 full, doubling), kept here as the reference.
 * Each inserts N keys shaped like the backend's (a tenant id, and
 * "<hook id>:<48 random characters>"), then looks up every key and as many
 * absent ones. Prints table bytes, bytes a key, the growth of the
 * process's resident set (RSS, from /proc/self/statm) across the build,
 * ns per insert and per lookup, and what the table would hold for 100
 * deliveries/s over the 72-hour window. Usage:
 *   recent_bench [--keys N] [--tenants T] */
#include "core/alloc.h"
#include "store/recent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- the reference: the table before this one (24 bytes a slot) ---------- */

typedef struct {
    uint64_t hash;
    int64_t seq;
    int64_t at_ms;
} old_entry;

typedef struct {
    old_entry *slots;
    size_t cap, count;
    int64_t horizon_ms;
} old_table;

static uint64_t old_hash(const char *tenant, const char *key)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)tenant; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    h *= 0x100000001b3ull;
    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 0x100000001b3ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h ? h : 1;
}

static void old_put(old_entry *slots, size_t cap, const old_entry *e)
{
    size_t i = (size_t)e->hash & (cap - 1);
    while (slots[i].seq != 0)
        i = (i + 1) & (cap - 1);
    slots[i] = *e;
}

static void old_add(old_table *t, uint64_t hash, int64_t seq, int64_t at_ms, int64_t now_ms)
{
    if (4 * (t->count + 1) > 3 * t->cap) {
        int64_t cutoff = now_ms - t->horizon_ms;
        size_t live = 0;
        for (size_t i = 0; i < t->cap; i++)
            live += t->slots[i].seq != 0 && t->slots[i].at_ms >= cutoff;
        size_t cap = 1024;
        while (cap < 2 * (live + 1))
            cap *= 2;
        old_entry *slots = lb_calloc(cap, sizeof(*slots));
        for (size_t i = 0; i < t->cap; i++)
            if (t->slots[i].seq != 0 && t->slots[i].at_ms >= cutoff)
                old_put(slots, cap, &t->slots[i]);
        lb_free(t->slots);
        t->slots = slots;
        t->cap = cap;
        t->count = live;
    }
    old_entry e = {.hash = hash, .seq = seq, .at_ms = at_ms};
    old_put(t->slots, t->cap, &e);
    t->count++;
}

static size_t old_find(const old_table *t, uint64_t hash)
{
    size_t n = 0;
    for (size_t i = (size_t)hash & (t->cap - 1);; i = (i + 1) & (t->cap - 1)) {
        if (t->slots[i].seq == 0) return n;
        n += t->slots[i].hash == hash;
    }
}

/* ---- the run ------------------------------------------------------------------ */

static size_t nkeys = 1000000, ntenants = 100;

/* Key i, the same in both runs: 48 characters from a fixed PRNG. */
static void key_of(size_t i, char *tenant, size_t tlen, char *key, size_t klen)
{
    static const char abc[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    uint64_t x = 0x9E3779B97F4A7C15ull * (i + 1);
    snprintf(tenant, tlen, "tenant-%zu", i % ntenants);
    int n = snprintf(key, klen, "hk_%06zu:", i % ntenants);
    for (int j = 0; j < 48 && (size_t)(n + j + 1) < klen; j++) {
        x ^= x >> 12, x ^= x << 25, x ^= x >> 27;
        key[n + j] = abc[(x * 0x2545F4914F6CDD1Dull >> 58) % (sizeof(abc) - 1)];
        key[n + j + 1] = '\0';
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static size_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, rss = 0;
    if (f != NULL) {
        if (fscanf(f, "%lu %lu", &size, &rss) != 2) rss = 0;
        fclose(f);
    }
    return (size_t)rss * (size_t)sysconf(_SC_PAGESIZE);
}

typedef struct {
    const char *name;
    size_t bytes, rss;
    double ns_add, ns_find;
    size_t found, false_candidates;
} result;

static void print(const result *r)
{
    double window = 100.0 * 72 * 3600; /* keys: 100 deliveries/s for 72 h */
    printf("%-4s %12zu %10.1f %12.1f %12.1f %10.0f %10.0f %14.2f\n", r->name, r->bytes,
           (double)r->bytes / (double)nkeys, (double)r->rss / 1048576.0,
           (double)r->rss / (double)nkeys, r->ns_add, r->ns_find,
           (double)r->bytes / (double)nkeys * window / 1073741824.0);
}

static const int64_t horizon = (72ll * 60 + 5) * 60 * 1000, now = 1764000000000ll;

static void run_new(result *res)
{
    char tenant[32], key[80];
    size_t rss0 = rss_bytes();
    lb_recent r;
    lb_recent_init(&r, horizon, 0);
    double t0 = now_s();
    for (size_t i = 0; i < nkeys; i++) {
        key_of(i, tenant, sizeof(tenant), key, sizeof(key));
        lb_recent_add(&r, lb_recent_hash(&r, tenant, key), (int64_t)i + 1, now, now);
    }
    double t1 = now_s();
    res->rss = rss_bytes() - rss0;
    res->bytes = lb_recent_bytes(&r);
    int64_t seqs[8];
    for (size_t i = 0; i < 2 * nkeys; i++) {
        key_of(i, tenant, sizeof(tenant), key, sizeof(key));
        size_t n = lb_recent_find(&r, lb_recent_hash(&r, tenant, key), seqs, 8, now);
        if (i < nkeys) {
            int hit = 0;
            for (size_t k = 0; k < n && k < 8; k++)
                hit |= seqs[k] == (int64_t)i + 1;
            res->found += (size_t)hit;
            res->false_candidates += n - (size_t)hit;
        } else {
            res->false_candidates += n;
        }
    }
    double t2 = now_s();
    res->ns_add = (t1 - t0) * 1e9 / (double)nkeys;
    res->ns_find = (t2 - t1) * 1e9 / (double)(2 * nkeys);
    lb_recent_free(&r);
}

static void run_old(result *res)
{
    char tenant[32], key[80];
    size_t rss0 = rss_bytes();
    old_table o = {.horizon_ms = horizon};
    double t0 = now_s();
    for (size_t i = 0; i < nkeys; i++) {
        key_of(i, tenant, sizeof(tenant), key, sizeof(key));
        old_add(&o, old_hash(tenant, key), (int64_t)i + 1, now, now);
    }
    double t1 = now_s();
    res->rss = rss_bytes() - rss0;
    res->bytes = o.cap * sizeof(old_entry);
    for (size_t i = 0; i < 2 * nkeys; i++) {
        key_of(i, tenant, sizeof(tenant), key, sizeof(key));
        size_t n = old_find(&o, old_hash(tenant, key));
        if (i < nkeys) {
            res->found += n > 0;
            res->false_candidates += n > 0 ? n - 1 : 0;
        } else {
            res->false_candidates += n;
        }
    }
    double t2 = now_s();
    res->ns_add = (t1 - t0) * 1e9 / (double)nkeys;
    res->ns_find = (t2 - t1) * 1e9 / (double)(2 * nkeys);
    lb_free(o.slots);
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--keys") == 0 && i + 1 < argc)
            nkeys = strtoull(argv[++i], NULL, 10);
        else if (strcmp(argv[i], "--tenants") == 0 && i + 1 < argc)
            ntenants = strtoull(argv[++i], NULL, 10);
        else {
            fprintf(stderr, "usage: recent_bench [--keys N] [--tenants T]\n");
            return 2;
        }
    }
    if (nkeys == 0 || ntenants == 0) return 2;

    result res[2] = {{.name = "new"}, {.name = "old"}};
    /* Each table in a child process of its own, so that neither inherits
     * the other's heap (glibc's mmap threshold moves with big frees). */
    for (int k = 0; k < 2; k++) {
        int fd[2];
        if (pipe(fd) != 0) return 1;
        pid_t pid = fork();
        if (pid < 0) return 1;
        if (pid == 0) {
            close(fd[0]);
            if (k == 0)
                run_new(&res[0]);
            else
                run_old(&res[1]);
            ssize_t w = write(fd[1], &res[k], sizeof(res[k]));
            _exit(w == (ssize_t)sizeof(res[k]) ? 0 : 1);
        }
        close(fd[1]);
        ssize_t got = read(fd[0], &res[k], sizeof(res[k]));
        close(fd[0]);
        int st = 0;
        waitpid(pid, &st, 0);
        if (got != (ssize_t)sizeof(res[k]) || !WIFEXITED(st) || WEXITSTATUS(st) != 0) return 1;
        res[k].name = k == 0 ? "new" : "old";
    }
    printf("%zu keys, %zu tenants (the old table's figures are its copy in this file)\n", nkeys,
           ntenants);
    printf("%-4s %12s %10s %12s %12s %10s %10s %14s\n", "", "table_bytes", "B/key", "RSS_MiB",
           "RSS_B/key", "ns/add", "ns/find", "GiB@100/s,72h");
    for (int i = 0; i < 2; i++)
        print(&res[i]);
    printf("found: new %zu/%zu, old %zu/%zu; false candidates (one row read each): new %zu, "
           "old %zu in %zu lookups\n",
           res[0].found, nkeys, res[1].found, nkeys, res[0].false_candidates,
           res[1].false_candidates, 2 * nkeys);
    printf("new/old: table %.2fx, RSS %.2fx\n", (double)res[0].bytes / (double)res[1].bytes,
           (double)res[0].rss / (double)res[1].rss);
    return res[0].found == nkeys && res[1].found == nkeys ? 0 : 1;
}
