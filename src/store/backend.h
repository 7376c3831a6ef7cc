/* Internal to src/store/: what a backend implements and what the common part
 * (store.c) does for every backend. Callers include store.h only.
 *
 * Split of work:
 *  - store.c (loop thread): argument checks, the LB_STORE_QUEUE_MAX bound,
 *    the closing flag, statistics, readiness, the on_commit hook, discarding
 *    outputs of failed ops, calling op callbacks and the close callback.
 *  - a backend: moving ops to where they run, running a batch in one
 *    transaction, handing finished batches back to the loop through
 *    lb_store__complete(), and telling store.c it has stopped through
 *    lb_store__closed(). */
#ifndef LB_STORE_BACKEND_H
#define LB_STORE_BACKEND_H

#include "store/store.h"

typedef struct lb_store_vtable {
    const char *name;
    /* Takes an op that passed the common checks. 0, or a negative code (and
     * the op is not queued). Loop thread. */
    int (*submit)(lb_store *s, lb_store_op *op);
    /* Starts stopping: finish every op taken, then release everything and
     * call lb_store__closed(s) from a loop callback (never from inside this
     * call). Loop thread, called once. */
    void (*close)(lb_store *s);
    /* Frees the backend's memory (the struct that embeds lb_store). Called
     * by lb_store__closed. */
    void (*destroy)(lb_store *s);
} lb_store_vtable;

/* The common head of every backend's struct (embedded first). Owner: the
 * backend object; every field is touched on the loop thread only. */
struct lb_store {
    const lb_store_vtable *vt;
    uv_loop_t *loop;
    lb_store_stats stats;
    lb_store_commit_cb on_commit;
    void *on_commit_data;
    /* 0 while writes succeed; else why the last write failed (UV_ENOSPC on
     * a full disk, LB_EIO): the store is then read-only-degraded, and
     * lb_store_ready() is 0. Set through lb_store__health only. */
    int write_error;
    int closing;
    void (*close_cb)(void *data);
    void *close_data;
};

void lb_store__init(lb_store *s, const lb_store_vtable *vt, uv_loop_t *loop);

/* Hands a finished batch back: head..(count ops) linked by next, in
 * submission order, each with status set. committed == 0 means the batch's
 * transaction failed as a whole: the status of every op that writes is
 * forced to error (UV_ENOSPC on a full disk, else LB_EIO; 0 means LB_EIO),
 * while read-only ops (lb_store__op_readonly) keep the status the backend
 * set, having been run again on their own. Updates the statistics, calls
 * on_commit, then each op's callback. Readiness is not touched: see
 * lb_store__health. Loop thread. */
void lb_store__complete(lb_store *s, lb_store_op *head, size_t count, double seconds, int committed,
                        int error);

/* What the backend learnt about writing: 0 after a write committed (a
 * batch with writes, or the backend's own probe), else the code of the
 * failure. Sets write_error, and logs each change of state once (the
 * cause by name: "no space left on device"). Call it before the batch's
 * lb_store__complete, so callbacks see the new state. Loop thread. */
void lb_store__health(lb_store *s, int error);
/* 1 when ops of this kind only read: they must not fail because a write of
 * their batch did. Any thread. */
int lb_store__op_readonly(int kind);

/* Frees an op's outputs and clears them (the kind's discard rule), so that
 * a read-only op can be run again. Pure memory work: any thread that owns
 * the op. */
void lb_store__op_discard(lb_store_op *op);

/* The backend has stopped and released its handles: destroys it and calls
 * the close callback. Loop thread. */
void lb_store__closed(lb_store *s);

/* Backend constructors: path is the URL without its scheme; opt is filled
 * in (no zero fields). */
int lb_store_sqlite_open(uv_loop_t *loop, const char *path, const lb_store_options *opt,
                         lb_store **out, char *err, size_t errlen);
/* conninfo: a libpq URI (postgres://, postgresql://) or key=value string,
 * whole. */
int lb_store_pg_open(uv_loop_t *loop, const char *conninfo, const lb_store_options *opt,
                     lb_store **out, char *err, size_t errlen);
/* 1 when url names a PostgreSQL database: a libpq URI or a key=value
 * conninfo string. */
int lb_store__is_pg_url(const char *url);

#endif
