/*
 * db.c: the sqlite store.
 *
 * WAL with synchronous=NORMAL: a commit is durable against a crash of the
 * process (what CONTRACT §4 needs) without an fsync per commit. Writes are
 * batched into one transaction per loop turn.
 */
#include "config.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sofia-sip/su_wait.h>

#define LOG_MODULE "db"
#include "log.h"
#include "db.h"

/*
 * Schema migrations, in order. Each step runs in its own transaction and
 * bumps PRAGMA user_version; never edit a step once released, add one.
 */
static const char *const migrations[] = {
	/* 1: foundation */
	"CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
	/* 2: registrar */
	"CREATE TABLE registrations ("
	" ext TEXT NOT NULL, uri TEXT NOT NULL, received TEXT, path TEXT,"
	" instance TEXT, reg_id INTEGER NOT NULL DEFAULT 0, user_agent TEXT,"
	" call_id TEXT NOT NULL, cseq INTEGER NOT NULL, q1000 INTEGER NOT NULL,"
	" expires INTEGER NOT NULL, PRIMARY KEY (ext, uri));",
	/* 3: call detail records */
	"CREATE TABLE cdr (call_id TEXT PRIMARY KEY, direction TEXT NOT NULL,"
	" src TEXT NOT NULL, dst TEXT NOT NULL, did TEXT NOT NULL,"
	" disposition TEXT NOT NULL, started INTEGER NOT NULL, answered INTEGER,"
	" ended INTEGER NOT NULL, first_agent TEXT, last_agent TEXT,"
	" recording_url TEXT);"
	"CREATE INDEX cdr_started ON cdr (started);"
	"CREATE TABLE cdr_legs (call_id TEXT NOT NULL, idx INTEGER NOT NULL,"
	" target TEXT NOT NULL, agent TEXT, result INTEGER NOT NULL,"
	" started INTEGER NOT NULL, answered INTEGER, ended INTEGER,"
	" PRIMARY KEY (call_id, idx));",
	/* 4: CRM lookup cache (result as JSON, expires in Unix ms) */
	"CREATE TABLE crm_cache (phone TEXT NOT NULL, did TEXT NOT NULL,"
	" result TEXT NOT NULL, expires INTEGER NOT NULL,"
	" PRIMARY KEY (phone, did));",
	/* 5: the event outbox: undelivered events, in order per key */
	"CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" okey TEXT NOT NULL, body TEXT NOT NULL, created INTEGER NOT NULL,"
	" attempts INTEGER NOT NULL DEFAULT 0, dead INTEGER NOT NULL DEFAULT 0,"
	" last_error TEXT);"
	"CREATE INDEX outbox_pending ON outbox (dead, id);",
	/* 6: CRM adapters' own state (per call, OAuth tokens) as JSON, and the
	   CRM entities behind cached lookups, for webhooks that name an entity */
	"CREATE TABLE crm_state (scope TEXT PRIMARY KEY, state TEXT NOT NULL,"
	" updated INTEGER NOT NULL);"
	"CREATE INDEX crm_state_updated ON crm_state (updated);"
	"CREATE TABLE crm_entities (entity TEXT NOT NULL, phone TEXT NOT NULL,"
	" updated INTEGER NOT NULL, PRIMARY KEY (entity, phone));"
	"CREATE INDEX crm_entities_updated ON crm_entities (updated);",
	/* 7: media: a call's recording segments (names under record_dir, one
	   per line) and why a call was ended by sipcrm itself */
	"ALTER TABLE cdr ADD COLUMN recordings TEXT;"
	"ALTER TABLE cdr ADD COLUMN end_reason TEXT;",
};

#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))
#define STMT_CACHE 64
#define MAX_HOOKS 8

struct db_stmt_slot {
	const char *sql;
	sqlite3_stmt *stmt;
};

struct db {
	sqlite3 *h;
	su_root_t *root;
	su_timer_t *commit_tmr;
	bool in_tx;
	bool failing;                   /* the last commit failed (logged once) */
	struct db_stmt_slot stmts[STMT_CACHE];
	size_t nstmts;
	struct {
		db_commit_h *h;
		void *arg;
	} hooks[MAX_HOOKS];
	size_t nhooks;
};

int db_schema_version(void)
{
	return NMIGRATIONS;
}

int db_exec(struct db *db, const char *sql)
{
	char *msg = NULL;

	if (sqlite3_exec(db->h, sql, NULL, NULL, &msg) != SQLITE_OK) {
		log_err("%s (in: %.60s)", msg ? msg : sqlite3_errmsg(db->h), sql);
		sqlite3_free(msg);
		return EIO;
	}
	return 0;
}

static int get_version(struct db *db, int *v)
{
	sqlite3_stmt *st;
	int rc;

	if (sqlite3_prepare_v2(db->h, "PRAGMA user_version", -1, &st, NULL))
		return EIO;
	rc = sqlite3_step(st);
	*v = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : 0;
	sqlite3_finalize(st);
	return rc == SQLITE_ROW ? 0 : EIO;
}

static int migrate(struct db *db, char *err, size_t errsz)
{
	int v;

	if (get_version(db, &v)) {
		snprintf(err, errsz, "cannot read schema version: %s",
			 sqlite3_errmsg(db->h));
		return EIO;
	}
	if (v > NMIGRATIONS) {
		snprintf(err, errsz, "database schema %d is newer than this "
			 "sipcrmd (%d)", v, NMIGRATIONS);
		return EINVAL;
	}
	for (; v < NMIGRATIONS; v++) {
		char sql[64];
		char *msg = NULL;

		snprintf(sql, sizeof(sql), "PRAGMA user_version = %d;", v + 1);
		if (sqlite3_exec(db->h, "BEGIN IMMEDIATE", NULL, NULL, &msg) ||
		    sqlite3_exec(db->h, migrations[v], NULL, NULL, &msg) ||
		    sqlite3_exec(db->h, sql, NULL, NULL, &msg) ||
		    sqlite3_exec(db->h, "COMMIT", NULL, NULL, &msg)) {
			snprintf(err, errsz, "schema migration %d failed: %s", v + 1,
				 msg ? msg : sqlite3_errmsg(db->h));
			sqlite3_free(msg);
			sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
			return EIO;
		}
		log_info("database migrated to schema %d", v + 1);
	}
	return 0;
}

/*
 * Checkpoints like sqlite's own auto-checkpoint, but never makes a COMMIT
 * that succeeded report the checkpoint's failure (e.g. a full disk), so
 * the commit hooks learn the truth about the transaction.
 */
static int wal_hook(void *arg, sqlite3 *h, const char *name, int pages)
{
	(void)arg;
	if (pages >= 1000)
		sqlite3_wal_checkpoint_v2(h, name, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
	return SQLITE_OK;
}

static void commit_timer(su_root_magic_t *m, su_timer_t *t, su_timer_arg_t *arg)
{
	(void)m;
	(void)t;
	db_flush((struct db *)arg);
}

int db_open(struct db **dbp, const char *path, su_root_t *root,
	    char *err, size_t errsz)
{
	struct db *db = calloc(1, sizeof(*db));
	int rc, e = 0;

	if (!db)
		return ENOMEM;
	rc = sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE |
			     SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (rc != SQLITE_OK) {
		snprintf(err, errsz, "cannot open database '%s': %s (is the "
			 "folder there and writable?)", path,
			 db->h ? sqlite3_errmsg(db->h) : sqlite3_errstr(rc));
		e = EIO;
		goto out;
	}
	sqlite3_busy_timeout(db->h, 2000);
	sqlite3_extended_result_codes(db->h, 1);
	if (sqlite3_exec(db->h, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
			 "PRAGMA foreign_keys=ON;", NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(err, errsz, "cannot use database '%s': %s (is it "
			 "writable?)", path, sqlite3_errmsg(db->h));
		e = EIO;
		goto out;
	}
	e = migrate(db, err, errsz);
	if (e)
		goto out;
	sqlite3_wal_hook(db->h, wal_hook, NULL);
	if (root) {
		db->root = root;
		db->commit_tmr = su_timer_create(su_root_task(root), 0);
		if (!db->commit_tmr) {
			e = ENOMEM;
			goto out;
		}
	}
out:
	if (e) {
		db_close(db);
		return e;
	}
	*dbp = db;
	return 0;
}

struct db *db_close(struct db *db)
{
	if (!db)
		return NULL;
	if (db->h)
		db_flush(db);
	su_timer_destroy(db->commit_tmr);
	for (size_t i = 0; i < db->nstmts; i++)
		sqlite3_finalize(db->stmts[i].stmt);
	if (db->h)
		sqlite3_close_v2(db->h);
	free(db);
	return NULL;
}

sqlite3 *db_handle(struct db *db)
{
	return db->h;
}

sqlite3_stmt *db_stmt(struct db *db, const char *sql)
{
	sqlite3_stmt *st;

	for (size_t i = 0; i < db->nstmts; i++) {
		if (db->stmts[i].sql == sql) {
			st = db->stmts[i].stmt;
			sqlite3_reset(st);
			sqlite3_clear_bindings(st);
			return st;
		}
	}
	if (sqlite3_prepare_v3(db->h, sql, -1, SQLITE_PREPARE_PERSISTENT, &st,
			       NULL) != SQLITE_OK) {
		log_err("prepare failed: %s (in: %.60s)", sqlite3_errmsg(db->h), sql);
		return NULL;
	}
	if (db->nstmts < STMT_CACHE) {
		db->stmts[db->nstmts].sql = sql;
		db->stmts[db->nstmts++].stmt = st;
	}
	else {
		/* a full cache means a caller passes non-literal sql: a bug */
		log_err("statement cache full");
		sqlite3_finalize(st);
		return NULL;
	}
	return st;
}

void db_tx(struct db *db)
{
	if (db->in_tx)
		return;
	if (db_exec(db, "BEGIN") == 0)
		db->in_tx = true;
	if (db->commit_tmr)
		su_timer_set_interval(db->commit_tmr, commit_timer, db, 0);
}

int db_flush(struct db *db)
{
	if (!db->in_tx)
		return 0;
	db->in_tx = false;
	if (db->commit_tmr)
		su_timer_reset(db->commit_tmr);
	if (sqlite3_exec(db->h, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		/* a full or broken disk: the batch is lost, except what its
		   hooks keep (the outbox keeps its events); said once */
		if (!db->failing)
			log_err("cannot write the database: %s (logged once until "
				"it works again)", sqlite3_errmsg(db->h));
		db->failing = true;
		sqlite3_exec(db->h, "ROLLBACK", NULL, NULL, NULL);
		for (size_t i = 0; i < db->nhooks; i++)
			db->hooks[i].h(db->hooks[i].arg, EIO);
		return EIO;
	}
	if (db->failing)
		log_info("the database can be written again");
	db->failing = false;
	for (size_t i = 0; i < db->nhooks; i++)
		db->hooks[i].h(db->hooks[i].arg, 0);
	return 0;
}

void db_on_commit(struct db *db, db_commit_h *h, void *arg)
{
	if (!h) {
		for (size_t i = 0; i < db->nhooks; i++)
			if (db->hooks[i].arg == arg) {
				memmove(&db->hooks[i], &db->hooks[i + 1],
					(db->nhooks - i - 1) * sizeof(db->hooks[0]));
				db->nhooks--;
				break;
			}
		return;
	}
	if (db->nhooks < MAX_HOOKS) {
		db->hooks[db->nhooks].h = h;
		db->hooks[db->nhooks++].arg = arg;
	}
}
