/*
 * db_store.c: WAL mode, migrations, cached statements, batched commits,
 * clear errors for unusable files.
 */
#include "config.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <sofia-sip/su.h>
#include <sofia-sip/su_wait.h>

#include "tap.h"
#include "clk.h"
#include "db.h"

static char dir[] = "/tmp/sipcrm-db-XXXXXX";
static char err[512];
static int commits;

static void on_commit(void *arg, int e)
{
	(void)arg;
	if (!e)
		commits++;
}

static const char *pragma_text(struct db *db, const char *sql)
{
	static char buf[64];
	sqlite3_stmt *st;

	buf[0] = '\0';
	if (sqlite3_prepare_v2(db_handle(db), sql, -1, &st, NULL) == SQLITE_OK) {
		if (sqlite3_step(st) == SQLITE_ROW)
			snprintf(buf, sizeof(buf), "%s", sqlite3_column_text(st, 0));
		sqlite3_finalize(st);
	}
	return buf;
}

static void test_open(su_root_t *root)
{
	char path[256];
	struct db *db = NULL;
	sqlite3_stmt *st, *st2;
	char ver[16];

	snprintf(path, sizeof(path), "%s/a.db", dir);
	ok(db_open(&db, path, root, err, sizeof(err)) == 0, "opens a new file (%s)", err);
	if (!db)
		return;
	is_str(pragma_text(db, "PRAGMA journal_mode"), "wal", "WAL mode");
	snprintf(ver, sizeof(ver), "%d", db_schema_version());
	is_str(pragma_text(db, "PRAGMA user_version"), ver, "schema at the current version");

	st = db_stmt(db, "INSERT INTO meta (key, value) VALUES (?, ?)");
	ok(st != NULL, "statement prepared");
	st2 = db_stmt(db, "INSERT INTO meta (key, value) VALUES (?, ?)");
	ok(st == st2, "same SQL pointer: cached statement");
	ok(db_stmt(db, "SELECT nonsense FROM nowhere") == NULL, "bad SQL gives NULL");

	db_on_commit(db, on_commit, NULL);
	db_tx(db);
	st = db_stmt(db, "INSERT INTO meta (key, value) VALUES (?, ?)");
	sqlite3_bind_text(st, 1, "k1", -1, SQLITE_STATIC);
	sqlite3_bind_text(st, 2, "v1", -1, SQLITE_STATIC);
	is_int(sqlite3_step(st), SQLITE_DONE, "insert in batched transaction");
	db_tx(db);
	ok(!sqlite3_get_autocommit(db_handle(db)), "transaction open before the loop turn");
	is_int(commits, 0, "no commit yet");
	for (int i = 0; i < 50 && commits == 0; i++)
		su_root_step(root, 10);
	is_int(commits, 1, "the loop turn committed once");
	ok(sqlite3_get_autocommit(db_handle(db)), "no transaction open afterwards");
	db = db_close(db);
	ok(db == NULL, "db_close returns NULL");
	ok(db_close(NULL) == NULL, "db_close(NULL) is fine");

	ok(db_open(&db, path, NULL, err, sizeof(err)) == 0, "reopens");
	if (db) {
		is_str(pragma_text(db, "SELECT value FROM meta WHERE key='k1'"), "v1",
		       "committed row survives a reopen");
		db_exec(db, "PRAGMA user_version = 999");
		db_close(db);
		db = NULL;
	}
	ok(db_open(&db, path, NULL, err, sizeof(err)) != 0, "a newer schema is refused");
	like(err, "newer than this sipcrmd", "newer schema message");
}

static long long file_size(const char *path)
{
	struct stat sb;

	return stat(path, &sb) ? 0 : (long long)sb.st_size;
}

/*
 * Under a steady stream of commits the checkpointer keeps the WAL bounded:
 * it copies the WAL into the database file, and once the WAL passes its
 * restart size it makes the next transaction start the WAL over. Before,
 * its connection had never read the database, so it was not in WAL mode
 * and every checkpoint did nothing: the database file stayed empty and the
 * WAL grew with every commit (280 MB in 20 s at 300 calls/s).
 */
static void test_checkpoint(su_root_t *root)
{
	char path[256], wal[300];
	struct db *db = NULL;
	static char blob[2000];
	long long written = 0, wal_max = 0;
	int64_t end;
	unsigned n = 0;

	snprintf(path, sizeof(path), "%s/ck.db", dir);
	snprintf(wal, sizeof(wal), "%s-wal", path);
	ok(db_open(&db, path, root, err, sizeof(err)) == 0, "opens for the checkpoint test (%s)",
	   err);
	if (!db)
		return;
	db_exec(db, "CREATE TABLE t (k TEXT PRIMARY KEY, v BLOB)");
	memset(blob, 'x', sizeof(blob));
	end = clk_mono_ms() + 6000;
	while (clk_mono_ms() < end) {
		db_tx(db);
		for (int i = 0; i < 50; i++) {
			sqlite3_stmt *st = db_stmt(db, "INSERT INTO t (k, v) VALUES (?, ?)");
			char key[32];

			snprintf(key, sizeof(key), "%08x%u", (n * 2654435761u), n);
			n++;
			sqlite3_bind_text(st, 1, key, -1, SQLITE_TRANSIENT);
			sqlite3_bind_blob(st, 2, blob, sizeof(blob), SQLITE_STATIC);
			if (sqlite3_step(st) == SQLITE_DONE)
				written += sizeof(blob);
		}
		su_root_step(root, 20);
		long long w = file_size(wal);

		if (w > wal_max)
			wal_max = w;
	}
	db_flush(db);
	printf("# %u rows, %lld MB written in 6 s; WAL at most %lld MB; database %lld MB\n",
	     n, written >> 20, wal_max >> 20, file_size(path) >> 20);
	ok(written > (40LL << 20), "a steady stream of commits wrote over 40 MB");
	ok(file_size(path) > written / 2,
	   "the checkpointer copied them into the database file");
	/* without checkpoints the WAL holds every page written: about 3 times
	   the blobs (173 MB); bounded, it peaked at 0.6-0.8 times them, more
	   when the machine is busy */
	ok(wal_max < written * 3 / 2, "the WAL started over instead of growing with every commit");
	db_close(db);
}

static void test_errors(void)
{
	struct db *db = NULL;
	char path[256];

	ok(db_open(&db, "/nonexistent-dir/x.db", NULL, err, sizeof(err)) != 0,
	   "missing folder fails");
	like(err, "cannot open database '/nonexistent-dir/x.db'", "missing folder message");

	snprintf(path, sizeof(path), "%s/ro", dir);
	mkdir(path, 0500);
	snprintf(path, sizeof(path), "%s/ro/x.db", dir);
	if (geteuid() == 0) {
		/* root ignores permissions: use a path that is a folder instead */
		snprintf(path, sizeof(path), "%s/ro", dir);
	}
	ok(db_open(&db, path, NULL, err, sizeof(err)) != 0, "unwritable path fails");
	like(err, "database", "unwritable path message names the database");
	ok(db == NULL, "no handle on failure");
}

int main(void)
{
	su_root_t *root;
	char cmd[300];

	if (!mkdtemp(dir))
		return 1;
	su_init();
	root = su_root_create(NULL);
	test_open(root);
	test_checkpoint(root);
	test_errors();
	su_root_destroy(root);
	su_deinit();
	snprintf(cmd, sizeof(cmd), "chmod -R u+w %s; rm -rf %s", dir, dir);
	if (system(cmd) != 0)
		printf("# cleanup failed\n");
	return tap_done();
}
