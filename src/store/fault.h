/* Test-only fault injection for the SQLite backend (internal to src/store/).
 *
 * Built only with the CMake option LB_FAULT_INJECTION (on when the tests are
 * built; release packages turn it off). With LB_FAULT_DISK_FULL=<path> in
 * the environment when the store first opens a database, a shim over
 * SQLite's default VFS becomes the default: while a file exists at <path>,
 * every write to a database, its WAL or its journal fails with SQLITE_FULL,
 * as on a full disk (reads, locks, syncs and the shared-memory index are
 * untouched). Creating and removing the file fills and frees the "disk" of
 * a running server, so a test can catch a full-disk bug on every run.
 * LB_FAULT_BATCH_DELAY_MS slows every batch (below). */
#ifndef LB_STORE_FAULT_H
#define LB_STORE_FAULT_H

/* Installs the shim when the build and the environment ask for it; once,
 * before SQLite opens anything. 1 if installed, else 0. */
int lb_store__fault_install(void);

/* With LB_FAULT_BATCH_DELAY_MS=<n> (0..10000), every batch waits n ms on the
 * store thread before it runs: a slow disk, or a start-up whose loading
 * takes long enough for a test to knock on the port meanwhile. */
void lb_store__fault_batch_delay(void);

#endif
