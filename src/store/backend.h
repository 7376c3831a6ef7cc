/* Internal to src/store/: what a backend implements and what the common part
 * (store.c) does for every backend. Callers include store.h only.
 *
 * Split of work:
 *  - store.c (loop thread): argument checks, the LB_STORE_QUEUE_MAX bound,
 *    the closing flag, statistics, readiness, the on_commit hook, discarding
 *    outputs of failed ops, calling op callbacks and the close callback;
 *    and the hand-off between the loop and the store thread, which every
 *    backend has (lb_store_handoff: the queues, the idle handle that moves
 *    a loop turn's ops to the thread, the async handle that brings batches
 *    back, the thread's wait for work, closing and joining).
 *  - a backend: running a batch in one transaction on the store thread
 *    (vtable run), what the thread does while idle (its probe, its
 *    reconnection), and its connection's life. */
#ifndef LB_STORE_BACKEND_H
#define LB_STORE_BACKEND_H

#include "store/store.h"

#include <stdint.h>

/* Ops taken together by the store thread, run in one transaction, handed
 * back to the loop. Allocated by the store thread, freed by the loop after
 * its ops completed. A batch with no ops (head NULL) only reports health
 * (a probe that committed). */
typedef struct lb_store_batch {
    struct lb_store_batch *next;
    lb_store_op *head; /* ops in submission order, linked by next */
    size_t count;
    double seconds; /* BEGIN to the end of COMMIT (or of the failure) */
    int committed;
    int error;  /* !committed: what the writes get (UV_ENOSPC or LB_EIO) */
    int wrote;  /* it had a write, lost the database, or is a probe: health counts */
    int health; /* for lb_store__health: 0 if the writes are durable */
    /* A store opened waiting for its database (lb_store_waiting): 1 when
     * the thread has reached it and migrated; negative when it cannot use
     * it, with why in reached_err (lb_malloc'd, freed by the loop). The
     * batch is posted for this alone when it has no ops. */
    int reached;
    char *reached_err;
} lb_store_batch;

typedef struct lb_store_vtable {
    const char *name;
    const char *thread_name; /* the store thread's name, at most 15 characters */
    size_t batch_max;        /* most ops in one batch; 0: every pending op */
    /* Store thread: runs b's ops in one transaction and sets each op's
     * status and b's committed, error, health and seconds. b comes with
     * committed 0, error LB_EIO, and wrote 1 when one of its ops writes. */
    void (*run)(lb_store *s, lb_store_batch *b);
    /* Store thread, the hand-off's mutex held: how long to wait for work
     * before calling idle. */
    uint64_t (*idle_wait_ms)(lb_store *s);
    /* Store thread, mutex not held: the wait ended with nothing to do. To
     * tell the loop (a probe that committed), set p->wrote and p->health,
     * or p->reached; p is otherwise empty. */
    void (*idle)(lb_store *s, lb_store_batch *p);
    /* Store thread, once, after its last batch: closes the connection. */
    void (*thread_end)(lb_store *s);
    /* Frees the backend's memory (the struct that embeds lb_store), which
     * calls lb_store__release. Called once both handles have closed. */
    void (*destroy)(lb_store *s);
    /* Optional (NULL: nothing to report). Loop thread. listen starts
     * reporting changes (lb_store_listen); a handle it opens counts in
     * h.handles_open and is closed with lb_store__handle_closed_cb.
     * listen_stop (from lb_store_close, only after a listen that returned
     * 0) makes it close that handle. */
    int (*listen)(lb_store *s, lb_store_listen_cb cb, void *data);
    void (*listen_stop)(lb_store *s);
} lb_store_vtable;

/* The hand-off between the loop thread and the store thread (store.c).
 * sqlite.c's header comment and docs/internals/store.md have the picture. */
typedef struct {
    /* Loop thread only. */
    uv_async_t async; /* store thread -> loop: batches done, or stopped */
    uv_idle_t flush;  /* moves `local` to `in` before the loop polls */
    lb_store_op *local_head, *local_tail;
    size_t local_count;
    int handles_open;
    int joined;
    uv_thread_t thread;

    /* Guarded by mu (the backend may guard its own thread-shared fields
     * with it too). */
    uv_mutex_t mu;
    uv_cond_t cond;
    lb_store_op *in_head, *in_tail;
    size_t in_count;
    lb_store_batch *done_head, *done_tail;
    int stop;    /* loop -> thread: exit once `in` is empty */
    int stopped; /* thread -> loop: exited, connection closed */
    int notify;  /* the async handle exists: the thread may signal it */
} lb_store_handoff;

/* The common head of every backend's struct (embedded first). Owner: the
 * backend object; every field is touched on the loop thread only, but h's
 * as it says. */
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
    /* 1 while the backend waits for its database at start (set by the
     * backend at open; lb_store_waiting); negative: it cannot use it, with
     * why in wait_err. Changed by a batch's `reached`. */
    int waiting;
    char wait_err[256];
    int closing;
    int listening;                /* lb_store_listen succeeded */
    lb_store_listen_cb listen_cb; /* NULL once lb_store_unlisten ran */
    void *listen_data;
    void (*close_cb)(void *data);
    void *close_data;
    lb_store_handoff h;
};

/* Sets up the common part and the hand-off's mutex and condition variable
 * (the backend may use them before the thread starts). 0, or a negative
 * code with err set and nothing to undo. Opening thread. */
int lb_store__init(lb_store *s, const lb_store_vtable *vt, uv_loop_t *loop, char *err,
                   size_t errlen);
/* Starts the store thread and the loop's handles; from here the thread owns
 * the connection. 0, or a negative code with err set: the thread has been
 * stopped again (thread_end has run) and the backend frees itself. Opening
 * thread, last step of a backend's open. */
int lb_store__start(lb_store *s, char *err, size_t errlen);
/* Frees what lb_store__init made. From the backend's destroy (and its open's
 * failure paths). */
void lb_store__release(lb_store *s);
/* The close callback of every handle the store counts in h.handles_open
 * (its data is the lb_store): the last one destroys the backend. */
void lb_store__handle_closed_cb(uv_handle_t *handle);
/* Monotonic seconds, for batch timings. Any thread. */
double lb_store__mono_seconds(void);
/* Makes an error message one line (libpq's have newlines). Any thread. */
void lb_store__one_line(char *s);
/* The migrations' shared rule (migrate.c, pg_migrate.c): a database whose
 * schema version is newer than the last step this binary knows is refused,
 * in the same words on both backends. 0, or LB_EINVAL with err set. */
int lb_store__schema_check(int current, int latest, char *err, size_t errlen);

/* What the backend learnt about writing: 0 after a write committed (a
 * batch with writes, or the backend's own probe), else the code of the
 * failure. Sets write_error, and logs each change of state once (the
 * cause by name: "no space left on device"). The hand-off calls it for
 * each batch with `wrote` set, before the batch's callbacks, so they see
 * the new state; a backend calls it itself at open. Loop thread. */
void lb_store__health(lb_store *s, int error);
/* 1 when ops of this kind only read: they must not fail because a write of
 * their batch did. Any thread. */
int lb_store__op_readonly(int kind);

/* Frees an op's outputs and clears them (the kind's discard rule), so that
 * a read-only op can be run again. Pure memory work: any thread that owns
 * the op. */
void lb_store__op_discard(lb_store_op *op);

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
