/*
 * driver.c: runs a libFuzzer harness without libFuzzer, as a TAP test.
 *
 * Linked with one t/fuzz/fuzz_*.c instead of -fsanitize=fuzzer, it feeds
 * every file named on the command line (folders: every regular file in
 * them, in name order, dot files left out) to LLVMFuzzerTestOneInput, one
 * TAP line each.
 *
 * Without arguments the harness name (argv[0] without its directory and
 * "regress_" prefix, e.g. "sip") picks the default inputs:
 *   $top_srcdir/t/fuzz/regress/NAME   crashes found before (reproducers)
 *   $top_srcdir/t/fuzz/seeds/NAME     the committed seeds
 *   $FUZZ_CORPUS/NAME                 optional: a generated corpus
 *                                     (t/fuzz/make_seeds.py)
 * A missing folder is reported as a skipped check, not a failure.
 *
 * The inputs run in a child process, one after the other, from the state
 * LLVMFuzzerInitialize left. When an input crashes the child, trips a
 * sanitizer or does not return within FUZZ_TIMEOUT seconds (default 5: a
 * hang), its check fails and a new child goes on with the next input, so
 * one run reports every failing input. LeakSanitizer runs when a child
 * exits normally; a leak report fails one more check (leaks of inputs
 * that ran before a crash in the same child go unreported until that
 * crash is fixed). FUZZ_NOFORK=1 runs the
 * inputs in this process instead (for a debugger): the first crash or
 * hang then ends the run.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fuzz.h"

/* One TAP check: an input file, or a folder that is not there. */
struct entry {
	char *path;
	const char *skip;       /* non-NULL: "ok # SKIP" with this reason */
};

static struct entry *entries;
static size_t nentries, cap_entries;
static unsigned timeout_s = 5;

#define DONE (UINT32_MAX - 1)   /* a child's last word: every input returned */

static void add_entry(const char *path, const char *skip)
{
	if (nentries == cap_entries) {
		size_t cap = cap_entries ? cap_entries * 2 : 256;
		struct entry *e = realloc(entries, cap * sizeof(*e));

		if (!e)
			abort();
		entries = e;
		cap_entries = cap;
	}
	entries[nentries].path = strdup(path);
	entries[nentries].skip = skip;
	if (!entries[nentries].path)
		abort();
	nentries++;
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;

	if (!d) {
		add_entry(dir, strerror(errno));
		return;
	}
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			char **p = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*p));

			if (!p)
				abort();
			names = p;
		}
		if (!(names[n++] = strdup(de->d_name)))
			abort();
	}
	closedir(d);
	if (n)
		qsort(names, n, sizeof(*names), cmp_names);
	for (size_t i = 0; i < n; i++) {
		char path[4096];
		struct stat st;

		snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
		if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
			add_entry(path, NULL);
		free(names[i]);
	}
	free(names);
}

static void add_path(const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		add_dir(path);
	else
		add_entry(path, NULL);
}

/* "t/fuzz/regress_sip" -> "sip" */
static const char *harness_name(const char *argv0)
{
	const char *s = strrchr(argv0, '/');

	s = s ? s + 1 : argv0;
	if (!strncmp(s, "lt-", 3))
		s += 3;
	if (!strncmp(s, "regress_", 8))
		s += 8;
	else if (!strncmp(s, "fuzz_", 5))
		s += 5;
	return s;
}

static void add_defaults(const char *name)
{
	const char *top = getenv("top_srcdir");
	const char *corpus = getenv("FUZZ_CORPUS");
	char path[4096];

	if (!top)
		top = ".";
	snprintf(path, sizeof(path), "%s/t/fuzz/regress/%s", top, name);
	add_dir(path);
	snprintf(path, sizeof(path), "%s/t/fuzz/seeds/%s", top, name);
	add_dir(path);
	if (corpus && *corpus) {
		snprintf(path, sizeof(path), "%s/%s", corpus, name);
		add_dir(path);
	}
}

static int read_file(const char *path, uint8_t **datap, size_t *sizep)
{
	FILE *f = fopen(path, "rb");
	uint8_t *data = NULL;
	size_t size = 0, cap = 0, n;
	int e = 0;

	if (!f)
		return errno;
	do {
		if (size == cap) {
			uint8_t *p = realloc(data, cap = cap ? cap * 2 : 65536);

			if (!p) {
				e = ENOMEM;
				goto out;
			}
			data = p;
		}
		n = fread(data + size, 1, cap - size, f);
		size += n;
	} while (n > 0);
	if (ferror(f))
		e = EIO;
out:
	fclose(f);
	if (e) {
		free(data);
		return e;
	}
	*datap = data;
	*sizep = size;
	return 0;
}

/* Runs entry i; returns 0, or -1 when it could not be read (reported). */
static int run_entry(size_t i)
{
	const struct entry *en = &entries[i];
	uint8_t *data = NULL, *copy;
	size_t size = 0;
	int e;

	if (en->skip) {
		printf("ok %zu - %s # SKIP %s\n", i + 1, en->path, en->skip);
		return 0;
	}
	printf("# input %s\n", en->path);
	fflush(stdout);
	e = read_file(en->path, &data, &size);
	if (e) {
		printf("not ok %zu - %s: %s\n", i + 1, en->path, strerror(e));
		return -1;
	}
	/* an exact-size heap copy, so that reading past the end is caught */
	copy = malloc(size ? size : 1);
	if (!copy)
		abort();
	if (size)
		memcpy(copy, data, size);
	free(data);
	alarm(timeout_s);
	LLVMFuzzerTestOneInput(copy, size);
	alarm(0);
	free(copy);
	printf("ok %zu - %s (%zu bytes)\n", i + 1, en->path, size);
	fflush(stdout);
	return 0;
}

/*
 * A child runs entries from start on and tells the parent through fd
 * which one it starts, so that the parent knows which input a crash or a
 * hang belongs to. Returns the number of checks failed.
 */
static unsigned run_children(void)
{
	unsigned failed = 0, extra = 0;
	size_t start = 0;

	while (start < nentries) {
		int fds[2], st;
		uint32_t idx, last = UINT32_MAX;
		bool done = false;
		pid_t pid;

		if (pipe(fds))
			abort();
		fflush(stdout);
		pid = fork();
		if (pid < 0)
			abort();
		if (pid == 0) {
			close(fds[0]);
			signal(SIGALRM, SIG_DFL);
			for (size_t i = start; i < nentries; i++) {
				idx = (uint32_t)i;
				if (write(fds[1], &idx, sizeof(idx)) != sizeof(idx))
					_exit(99);
				if (run_entry(i))
					_exit(98);      /* unreadable: reported */
			}
			idx = DONE;
			if (write(fds[1], &idx, sizeof(idx)) != sizeof(idx))
				_exit(99);
			exit(0);        /* exit, not _exit: LeakSanitizer runs */
		}
		close(fds[1]);
		while (read(fds[0], &idx, sizeof(idx)) == sizeof(idx)) {
			if (idx == DONE)
				done = true;
			else
				last = idx;
		}
		close(fds[0]);
		while (waitpid(pid, &st, 0) < 0)
			if (errno != EINTR)
				abort();
		if (st == 0)
			break;
		failed++;
		if (last == UINT32_MAX || (WIFEXITED(st) && WEXITSTATUS(st) == 98)) {
			start = last == UINT32_MAX ? nentries : last + 1;
			continue;
		}
		if (done) {
			/* every input returned: the report is LeakSanitizer's */
			printf("not ok %zu - LeakSanitizer (exit status %d, the report is "
			       "above)\n", nentries + ++extra, WEXITSTATUS(st));
			break;
		}
		if (WIFSIGNALED(st) && WTERMSIG(st) == SIGALRM)
			printf("not ok %u - %s: no return within %u s (a hang)\n",
			       last + 1, entries[last].path, timeout_s);
		else if (WIFSIGNALED(st))
			printf("not ok %u - %s: killed by signal %d\n", last + 1,
			       entries[last].path, WTERMSIG(st));
		else
			printf("not ok %u - %s: exit status %d (the report is above)\n",
			       last + 1, entries[last].path, WEXITSTATUS(st));
		start = last + 1;
	}
	printf("1..%zu\n", nentries + extra);
	return failed;
}

static void on_alarm(int sig)
{
	static const char msg[] = "not ok - an input did not return (a hang)\n";
	ssize_t n = write(STDOUT_FILENO, msg, sizeof(msg) - 1);

	(void)sig;
	(void)n;
	_exit(1);
}

int main(int argc, char **argv)
{
	const char *t = getenv("FUZZ_TIMEOUT");
	unsigned failed = 0;

	if (t && atoi(t) > 0)
		timeout_s = (unsigned)atoi(t);
	setvbuf(stdout, NULL, _IOLBF, 0);
	LLVMFuzzerInitialize(&argc, &argv);
	if (argc > 1)
		for (int i = 1; i < argc; i++)
			add_path(argv[i]);
	else
		add_defaults(harness_name(argv[0]));
	if (getenv("FUZZ_NOFORK")) {
		signal(SIGALRM, on_alarm);
		for (size_t i = 0; i < nentries; i++)
			failed += run_entry(i) != 0;
		printf("1..%zu\n", nentries);
	}
	else {
		failed = run_children();
	}
	for (size_t i = 0; i < nentries; i++)
		free(entries[i].path);
	free(entries);
	return failed ? 1 : 0;
}
