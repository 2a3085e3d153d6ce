/*
 * db.h: the sqlite store (WAL), schema migrations and batched commits.
 *
 * Writes from the signalling thread go into one transaction per loop
 * iteration: db_tx() opens it if needed and a zero-delay timer commits it,
 * so the loop never waits for a sync per call.
 */
#ifndef SIPCRM_DB_H
#define SIPCRM_DB_H

#include <sqlite3.h>
#include <sofia-sip/su_wait.h>

struct db;

/*
 * Opens (creating if needed) path in WAL mode and migrates the schema to
 * the current version. root may be NULL (then db_tx commits only on
 * db_flush). Returns 0 or an errno value, with a message in err.
 */
int db_open(struct db **dbp, const char *path, su_root_t *root,
	    char *err, size_t errsz);
/* Commits what is pending and closes; NULL safe. */
struct db *db_close(struct db *db);

sqlite3 *db_handle(struct db *db);

/*
 * A prepared statement for sql, cached by the sql pointer (pass string
 * literals). It is reset and its bindings cleared. NULL on error (logged).
 */
sqlite3_stmt *db_stmt(struct db *db, const char *sql);

/* Runs statements without results. Returns 0 or EIO (logged). */
int db_exec(struct db *db, const char *sql);

/* Ensures a batched transaction is open; it commits on a later loop turn
 * (the next one, or up to 10 ms later under load: see db.c). */
void db_tx(struct db *db);
/* Commits the pending transaction now. Returns 0 or EIO. */
int db_flush(struct db *db);

/*
 * Runs after each commit with err 0 (e.g. to wake the outbox sender), or
 * EIO after a commit that failed and was rolled back (e.g. a full disk).
 * h NULL removes the hook registered with arg.
 */
typedef void (db_commit_h)(void *arg, int err);
void db_on_commit(struct db *db, db_commit_h *h, void *arg);

/* The schema version this build writes. */
int db_schema_version(void);

#endif
