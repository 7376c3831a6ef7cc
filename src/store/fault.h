/* Test-only fault injection (internal to src/store/): the commits and ops
 * of every backend, and SQLite's disk.
 *
 * Built only with the CMake option LB_FAULT_INJECTION (on when the tests are
 * built; release packages turn it off). With LB_FAULT_DISK_FULL=<path> in
 * the environment when the store first opens a database, a shim over
 * SQLite's default VFS becomes the default: while a file exists at <path>,
 * every write to a database, its WAL or its journal fails with SQLITE_FULL,
 * as on a full disk (reads, locks, syncs and the shared-memory index are
 * untouched). Creating and removing the file fills and frees the "disk" of
 * a running server, so a test can catch a full-disk bug on every run.
 * LB_FAULT_BATCH_DELAY_MS slows every batch (below). LB_FAULT_STORE fails
 * a commit or one op of any backend (below). */
#ifndef LB_STORE_FAULT_H
#define LB_STORE_FAULT_H

#include "store/store.h"

/* ---- Every backend: fail the next commit, fail op N ---------------------
 *
 * Faults decided above the backends, applied by each in its own batch,
 * through the paths a real failure takes (docs/internals/store.md, "Fault
 * injection"):
 *  - fail op N: the Nth op submitted from the arming fails alone, with
 *    LB_EIO, after its statements ran (SQLite: its savepoint is rolled
 *    back; PostgreSQL: a failing statement follows the op's, so the batch
 *    is sent again without it); the batch's other ops commit;
 *  - fail the next commit: the batch holding the next write op submitted
 *    from the arming fails as a whole (SQLite: its COMMIT is not run and the
 *    transaction rolls back; PostgreSQL: a statement that fails the
 *    transaction goes before COMMIT): its writes get LB_EIO, its reads run
 *    again alone, readiness drops until a write commits.
 * A read run again after a failed batch is not failed again.
 *
 * Armed by a unit test with lb_store__fault_arm, or by a test of a running
 * server through the control file named by LB_FAULT_STORE=<path>: when the
 * file exists at a submit and ends in a newline (one still being written
 * is left for a later submit), it is read and removed, and its words arm the
 * faults from that submit on: "commit" (the next commit), "commit K" (the
 * next K), "op N". The ops of several replicas' upkeep (NODE_BEAT,
 * CLUSTER_READ, LEASE_WRITE) are not counted. Built only with
 * LB_FAULT_INJECTION; without it every
 * function below does nothing. */

/* Adds commits (>= 0) failing commits, and makes the op_n-th op submitted
 * from now fail (0: keeps the current op fault). Any thread. */
void lb_store__fault_arm(int commits, long op_n);
/* Forgets every armed fault. Any thread. */
void lb_store__fault_clear(void);
/* Called by store.c for each op it is about to hand to the backend (loop
 * thread); undo 1 when the backend refused it after all. */
void lb_store__fault_submit(const lb_store_op *op, int undo);
/* Called by a backend once per batch, on its thread, before running it:
 * *fail_op is the op of the batch to fail alone (or NULL), *fail_commit 1
 * when the batch's commit must fail. */
void lb_store__fault_batch(const lb_store_op *head, const lb_store_op **fail_op, int *fail_commit);

/* ---- SQLite only: a full disk, a slow disk ------------------------------ */

/* Installs the shim when the build and the environment ask for it; once,
 * before SQLite opens anything. 1 if installed, else 0. */
int lb_store__fault_install(void);

/* With LB_FAULT_BATCH_DELAY_MS=<n> (0..10000), every batch waits n ms on the
 * store thread before it runs: a slow disk, or a start-up whose loading
 * takes long enough for a test to knock on the port meanwhile. */
void lb_store__fault_batch_delay(void);

#endif
