/*
 * db.c: the sqlite store.
 *
 * WAL with synchronous=NORMAL: a commit is durable against a crash of the
 * process (what CONTRACT §4 needs) without an fsync per commit. Writes are
 * batched: a transaction opened by db_tx() commits on the next loop turn,
 * but no sooner than COMMIT_GAP_MS after the previous commit. Under load a
 * loop turn handles one datagram, so a per-turn commit is a commit (five
 * to ten WAL page writes and four fcntl locks) per call; the gap makes it
 * one per COMMIT_GAP_MS for every call in it, and costs an idle system
 * nothing (its first write still commits on the next turn).
 *
 * The commit is timed by a timerfd, not an su_timer: su_root rounds the
 * time to its next timer down to whole milliseconds, so the loop polls
 * without sleeping through the last millisecond before every su_timer
 * (about 1,000 epoll_wait calls each); a timerfd wakes epoll on time.
 *
 * Checkpoints (copying the WAL into the database file, with an fsync of
 * each) run on a thread of their own with its own connection, once a
 * second: sqlite's automatic checkpoint would run them inside a commit on
 * the signalling thread, stalling it for the length of two fsyncs every
 * thousand pages.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/timerfd.h>

#include <sofia-sip/su_wait.h>

#define LOG_MODULE "db"
#include "log.h"
#include "clk.h"
#include "db.h"

/*
 * Schema migrations, in order. Each step runs in its own transaction and
 * bumps PRAGMA user_version; never edit a step once released, add one.
 */
static const char *const migrations[] = {
	/* 1: foundation */
	"CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);",
	/* 2: registrar */
	("CREATE TABLE registrations ("
	" ext TEXT NOT NULL, uri TEXT NOT NULL, received TEXT, path TEXT,"
	" instance TEXT, reg_id INTEGER NOT NULL DEFAULT 0, user_agent TEXT,"
	" call_id TEXT NOT NULL, cseq INTEGER NOT NULL, q1000 INTEGER NOT NULL,"
	" expires INTEGER NOT NULL, PRIMARY KEY (ext, uri));"),
	/* 3: call detail records */
	("CREATE TABLE cdr (call_id TEXT PRIMARY KEY, direction TEXT NOT NULL,"
	" src TEXT NOT NULL, dst TEXT NOT NULL, did TEXT NOT NULL,"
	" disposition TEXT NOT NULL, started INTEGER NOT NULL, answered INTEGER,"
	" ended INTEGER NOT NULL, first_agent TEXT, last_agent TEXT,"
	" recording_url TEXT);"
	"CREATE INDEX cdr_started ON cdr (started);"
	"CREATE TABLE cdr_legs (call_id TEXT NOT NULL, idx INTEGER NOT NULL,"
	" target TEXT NOT NULL, agent TEXT, result INTEGER NOT NULL,"
	" started INTEGER NOT NULL, answered INTEGER, ended INTEGER,"
	" PRIMARY KEY (call_id, idx));"),
	/* 4: CRM lookup cache (result as JSON, expires in Unix ms) */
	("CREATE TABLE crm_cache (phone TEXT NOT NULL, did TEXT NOT NULL,"
	" result TEXT NOT NULL, expires INTEGER NOT NULL,"
	" PRIMARY KEY (phone, did));"),
	/* 5: the event outbox: undelivered events, in order per key */
	("CREATE TABLE outbox (id INTEGER PRIMARY KEY AUTOINCREMENT,"
	" okey TEXT NOT NULL, body TEXT NOT NULL, created INTEGER NOT NULL,"
	" attempts INTEGER NOT NULL DEFAULT 0, dead INTEGER NOT NULL DEFAULT 0,"
	" last_error TEXT);"
	"CREATE INDEX outbox_pending ON outbox (dead, id);"),
	/* 6: CRM adapters' own state (per call, OAuth tokens) as JSON, and the
	   CRM entities behind cached lookups, for webhooks that name an entity */
	("CREATE TABLE crm_state (scope TEXT PRIMARY KEY, state TEXT NOT NULL,"
	" updated INTEGER NOT NULL);"
	"CREATE INDEX crm_state_updated ON crm_state (updated);"
	"CREATE TABLE crm_entities (entity TEXT NOT NULL, phone TEXT NOT NULL,"
	" updated INTEGER NOT NULL, PRIMARY KEY (entity, phone));"
	"CREATE INDEX crm_entities_updated ON crm_entities (updated);"),
	/* 7: media: a call's recording segments (names under record_dir, one
	   per line) and why a call was ended by sipcrm itself */
	("ALTER TABLE cdr ADD COLUMN recordings TEXT;"
	"ALTER TABLE cdr ADD COLUMN end_reason TEXT;"),
	/* 8: calls in progress, written with their events and deleted with
	   their CDR row: what a crash leaves here becomes a CDR row and a
	   call.ended at the next start (CONTRACT §4: one call.ended per call).
	   ev: the event's from, to and did (JSON); seq: its last event's */
	("CREATE TABLE open_calls (call_id TEXT PRIMARY KEY,"
	" direction TEXT NOT NULL, src TEXT NOT NULL, dst TEXT NOT NULL,"
	" did TEXT NOT NULL, started INTEGER NOT NULL, answered INTEGER,"
	" first_agent TEXT, last_agent TEXT, ev TEXT NOT NULL,"
	" seq INTEGER NOT NULL);"),
};

#define NMIGRATIONS ((int)(sizeof(migrations) / sizeof(migrations[0])))
#define STMT_CACHE 64
#define MAX_HOOKS 8
#define COMMIT_GAP_MS 10        /* at most one commit per this, under load */

struct db_stmt_slot {
	const char *sql;
	sqlite3_stmt *stmt;
};

struct db {
	sqlite3 *h;
	su_root_t *root;
	int commit_fd;                  /* timerfd: commit due; -1: no loop */
	su_wait_t commit_wait;
	int commit_idx;                 /* su_root_register() index, 0: none */
	bool in_tx;
	int64_t last_commit_ms;         /* clk_mono_ms() of the last commit */
	bool failing;                   /* the last commit failed (logged once) */
	struct db_stmt_slot stmts[STMT_CACHE];
	size_t nstmts;
	struct {
		db_commit_h *h;
		void *arg;
	} hooks[MAX_HOOKS];
	size_t nhooks;
	struct {                        /* the checkpointer thread */
		sqlite3 *h;
		pthread_t th;
		pthread_mutex_t mu;
		pthread_cond_t cv;
		bool stop, running;
		atomic_bool catch_up;   /* the loop: checkpoint after a commit */
	} ck;
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

static int commit_due(su_root_magic_t *m, su_wait_t *w, su_wakeup_arg_t *arg)
{
	struct db *db = (struct db *)arg;
	uint64_t n;

	(void)m;
	(void)w;
	/* EAGAIN: a flush disarmed it since it became readable */
	if (read(db->commit_fd, &n, sizeof(n)) == sizeof(n) || errno == EAGAIN)
		db_flush(db);
	return 0;
}

/* Arms (at > 0: CLOCK_MONOTONIC ms; 1 is "now") or disarms (0) the commit. */
static void commit_arm(struct db *db, int64_t at_ms)
{
	struct itimerspec its = { { 0, 0 }, { at_ms / 1000, at_ms % 1000 * 1000000 } };

	if (db->commit_fd >= 0 &&
	    timerfd_settime(db->commit_fd, TFD_TIMER_ABSTIME, &its, NULL) < 0)
		log_err("cannot arm the commit timer: %s", strerror(errno));
}

#define CKPT_INTERVAL_MS 1000
/*
 * A passive checkpoint copies what was committed when it started, and the
 * WAL only starts over from its beginning when a transaction begins after
 * a checkpoint that copied everything. A loop that commits every few
 * milliseconds never leaves such a moment, so under steady load the WAL
 * would grow without end. Past CKPT_RESTART_FRAMES the checkpointer,
 * having copied the bulk, asks the loop to catch up: right after its next
 * commit the loop checkpoints the few frames written since (a millisecond
 * or two: those pages and two fsyncs), so its next transaction starts the
 * WAL over; journal_size_limit then trims the file.
 */
#define CKPT_RESTART_FRAMES 4096        /* 16 MiB of 4 KiB pages */
#define WAL_SIZE_LIMIT "67108864"       /* bytes kept after a restart */

static void *ckpt_main(void *arg)
{
	struct db *db = arg;
	struct timespec ts;
	int nlog, nck, rc;
	bool warned = false;

	pthread_mutex_lock(&db->ck.mu);
	while (!db->ck.stop) {
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += CKPT_INTERVAL_MS / 1000;
		pthread_cond_timedwait(&db->ck.cv, &db->ck.mu, &ts);
		if (db->ck.stop)
			break;
		pthread_mutex_unlock(&db->ck.mu);
		rc = sqlite3_wal_checkpoint_v2(db->ck.h, NULL, SQLITE_CHECKPOINT_PASSIVE,
					       &nlog, &nck);
		if (rc == SQLITE_OK && nlog >= CKPT_RESTART_FRAMES)
			atomic_store(&db->ck.catch_up, true);
		if (rc != SQLITE_OK && rc != SQLITE_BUSY && !warned) {
			/* a full disk: logged once; the loop's commits say more */
			log_warn("checkpoint failed: %s", sqlite3_errstr(rc));
			warned = true;
		}
		else if (rc == SQLITE_OK) {
			warned = false;
		}
		pthread_mutex_lock(&db->ck.mu);
	}
	pthread_mutex_unlock(&db->ck.mu);
	return NULL;
}

/* Starts the checkpointer; without it sqlite checkpoints as it always does. */
static void ckpt_start(struct db *db, const char *path)
{
	pthread_condattr_t ca;

	if (sqlite3_open_v2(path, &db->ck.h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX,
			    NULL) != SQLITE_OK) {
		log_warn("checkpoints stay on the loop: %s", sqlite3_errmsg(db->ck.h));
		sqlite3_close_v2(db->ck.h);
		db->ck.h = NULL;
		return;
	}
	/* a connection is in WAL mode only once it has read the database:
	   until then every checkpoint it is asked for does nothing (-1) */
	if (sqlite3_exec(db->ck.h, "PRAGMA journal_mode=WAL; SELECT count(*) FROM sqlite_master;",
			 NULL, NULL, NULL) != SQLITE_OK) {
		log_warn("checkpoints stay on the loop: %s", sqlite3_errmsg(db->ck.h));
		sqlite3_close_v2(db->ck.h);
		db->ck.h = NULL;
		return;
	}
	pthread_mutex_init(&db->ck.mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&db->ck.cv, &ca);
	pthread_condattr_destroy(&ca);
	if (pthread_create(&db->ck.th, NULL, ckpt_main, db)) {
		log_warn("checkpoints stay on the loop: no thread");
		pthread_cond_destroy(&db->ck.cv);
		pthread_mutex_destroy(&db->ck.mu);
		sqlite3_close_v2(db->ck.h);
		db->ck.h = NULL;
		return;
	}
	db->ck.running = true;
	sqlite3_wal_autocheckpoint(db->h, 0);
}

static void ckpt_stop(struct db *db)
{
	if (!db->ck.running)
		return;
	pthread_mutex_lock(&db->ck.mu);
	db->ck.stop = true;
	pthread_cond_signal(&db->ck.cv);
	pthread_mutex_unlock(&db->ck.mu);
	pthread_join(db->ck.th, NULL);
	pthread_cond_destroy(&db->ck.cv);
	pthread_mutex_destroy(&db->ck.mu);
	sqlite3_close_v2(db->ck.h);
	db->ck.h = NULL;
	db->ck.running = false;
}

static int commit_timer_init(struct db *db, su_root_t *root)
{
	db->root = root;
	db->commit_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (db->commit_fd < 0)
		return errno;
	if (su_wait_create(&db->commit_wait, db->commit_fd, SU_WAIT_IN) < 0)
		return ENOMEM;
	db->commit_idx = su_root_register(root, &db->commit_wait, commit_due, db, 0);
	return db->commit_idx > 0 ? 0 : ENOMEM;
}

int db_open(struct db **dbp, const char *path, su_root_t *root,
	    char *err, size_t errsz)
{
	struct db *db = calloc(1, sizeof(*db));
	int rc, e = 0;

	if (!db)
		return ENOMEM;
	db->commit_fd = -1;
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
			 "PRAGMA foreign_keys=ON; PRAGMA journal_size_limit="
			 WAL_SIZE_LIMIT ";", NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(err, errsz, "cannot use database '%s': %s (is it "
			 "writable?)", path, sqlite3_errmsg(db->h));
		e = EIO;
		goto out;
	}
	e = migrate(db, err, errsz);
	if (e)
		goto out;
	if (root)
		e = commit_timer_init(db, root);
	if (!e && root)
		ckpt_start(db, path);
	/* without the checkpointer thread (no loop, or it could not start),
	   sqlite checkpoints on commit, through our hook */
	if (!e && !db->ck.running)
		sqlite3_wal_hook(db->h, wal_hook, NULL);
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
	ckpt_stop(db);
	if (db->commit_idx > 0)
		su_root_deregister(db->root, db->commit_idx);
	else if (db->commit_fd >= 0)
		su_wait_destroy(&db->commit_wait);
	if (db->commit_fd >= 0)
		close(db->commit_fd);
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
	commit_arm(db, db->last_commit_ms + COMMIT_GAP_MS > clk_mono_ms() ?
		   db->last_commit_ms + COMMIT_GAP_MS : 1);
}

int db_flush(struct db *db)
{
	if (!db->in_tx)
		return 0;
	db->in_tx = false;
	db->last_commit_ms = clk_mono_ms();
	commit_arm(db, 0);
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
	if (db->ck.running && atomic_exchange(&db->ck.catch_up, false) &&
	    sqlite3_wal_checkpoint_v2(db->h, NULL, SQLITE_CHECKPOINT_PASSIVE,
				      NULL, NULL) == SQLITE_BUSY)
		atomic_store(&db->ck.catch_up, true);   /* the thread is at it */
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
