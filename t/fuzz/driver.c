/*
 * driver.c: runs a libFuzzer harness without libFuzzer, as a TAP test.
 *
 * Linked with one t/fuzz/fuzz_*.c instead of -fsanitize=fuzzer, it feeds
 * every file named on the command line (folders: every regular file in
 * them, in name order) to LLVMFuzzerTestOneInput, one TAP line each. A
 * crash or sanitizer report ends the program there: the TAP plan is then
 * missing and the exit status non-zero, and the last "# input" line names
 * the file that did it.
 *
 * Without arguments the harness name (argv[0] without its directory and
 * "regress_" prefix, e.g. "sip") picks the default inputs:
 *   $top_srcdir/t/fuzz/regress/NAME   crashes found before (reproducers)
 *   $top_srcdir/t/fuzz/seeds/NAME     the committed seeds
 *   $FUZZ_CORPUS/NAME                 optional: a generated corpus
 *                                     (t/fuzz/make_seeds.py)
 * A missing folder is reported as a skipped check, not a failure.
 *
 * An input that takes longer than FUZZ_TIMEOUT seconds (default 10) is a
 * hang: it fails its check and ends the run, so that `make check` does
 * not wait for a loop that never ends.
 */
#include "config.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fuzz.h"

static unsigned tests, failed;
static unsigned timeout_s = 10;
static char hang_msg[4200];     /* written by the alarm handler */

static void on_alarm(int sig)
{
	ssize_t n = write(STDOUT_FILENO, hang_msg, strlen(hang_msg));

	(void)sig;
	(void)n;
	_exit(1);
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

static void run_file(const char *path)
{
	uint8_t *data = NULL, *copy;
	size_t size = 0;
	int e;

	printf("# input %s\n", path);
	fflush(stdout);
	e = read_file(path, &data, &size);
	if (e) {
		printf("not ok %u - %s: %s\n", ++tests, path, strerror(e));
		failed++;
		return;
	}
	/* an exact-size heap copy, so that reading past the end is caught */
	copy = malloc(size ? size : 1);
	if (!copy)
		abort();
	if (size)
		memcpy(copy, data, size);
	free(data);
	snprintf(hang_msg, sizeof(hang_msg),
		 "not ok %u - %s: no return within %u s (a hang)\n1..%u\n",
		 tests + 1, path, timeout_s, tests + 1);
	alarm(timeout_s);
	LLVMFuzzerTestOneInput(copy, size);
	alarm(0);
	free(copy);
	printf("ok %u - %s (%zu bytes)\n", ++tests, path, size);
}

static int cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void run_dir(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char **names = NULL;
	size_t n = 0, cap = 0;

	if (!d) {
		printf("ok %u - %s # SKIP %s\n", ++tests, dir, strerror(errno));
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
			run_file(path);
		free(names[i]);
	}
	free(names);
}

static void run_path(const char *path)
{
	struct stat st;

	if (stat(path, &st) == 0 && S_ISDIR(st.st_mode))
		run_dir(path);
	else
		run_file(path);
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

static void run_defaults(const char *name)
{
	const char *top = getenv("top_srcdir");
	const char *corpus = getenv("FUZZ_CORPUS");
	char path[4096];

	if (!top)
		top = ".";
	snprintf(path, sizeof(path), "%s/t/fuzz/regress/%s", top, name);
	run_dir(path);
	snprintf(path, sizeof(path), "%s/t/fuzz/seeds/%s", top, name);
	run_dir(path);
	if (corpus && *corpus) {
		snprintf(path, sizeof(path), "%s/%s", corpus, name);
		run_dir(path);
	}
}

int main(int argc, char **argv)
{
	const char *t = getenv("FUZZ_TIMEOUT");

	if (t && atoi(t) > 0)
		timeout_s = (unsigned)atoi(t);
	signal(SIGALRM, on_alarm);
	setvbuf(stdout, NULL, _IOLBF, 0);
	LLVMFuzzerInitialize(&argc, &argv);
	if (argc > 1)
		for (int i = 1; i < argc; i++)
			run_path(argv[i]);
	else
		run_defaults(harness_name(argv[0]));
	printf("1..%u\n", tests);
	return failed ? 1 : 0;
}
