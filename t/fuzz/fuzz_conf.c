/*
 * fuzz_conf.c: the INI config parser on any text.
 *
 * conf_parse_string gets the text up to its first NUL byte. Inputs that
 * hold a NUL byte, or that are longer than one 4 KiB read, also go
 * through conf_load from a memfd, which must refuse the first and read
 * the second whole.
 *
 * Checked against conf.h's contract: a failure returns an errno value
 * and a "file:line: message" text (or "file: ..."), and sets nothing; a
 * success gives one reference, every agent and DID found again by its
 * own name, a sane RTP range, and lookups that do not crash.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "fuzz.h"
#include "log.h"
#include "conf.h"

#define PATH "/nonexistent/fuzz/sipcrm.conf"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *spec = getenv("FUZZ_LOG");

	(void)argc;
	(void)argv;
	log_force_level(spec ? spec : "error");
	return 0;
}

static void check_err(int e, const char *path, const char *err)
{
	size_t n = strlen(path);

	if (e <= 0 || !memchr(err, '\0', 512) || strncmp(err, path, n) ||
	    err[n] != ':') {
		fprintf(stderr, "fuzz_conf: error %d with message \"%s\"\n", e, err);
		abort();
	}
}

static void check_conf(const struct conf *c)
{
	struct sockaddr_in sin = { .sin_family = AF_INET };
	struct sockaddr_in6 sin6 = { .sin6_family = AF_INET6 };

	if (c->refs != 1 || !c->sip.domain || !c->media.ip)
		abort();
	if (c->media.rtp_min > c->media.rtp_max)
		abort();
	for (size_t i = 0; i < c->nagents; i++) {
		const struct conf_agent *a = &c->agents[i];

		if (!a->ext || conf_agent_find(c, a->ext) != a)
			abort();
		if (a->crm_user && !conf_agent_by_crm_user(c, a->crm_user))
			abort();
	}
	for (size_t i = 0; i < c->ndids; i++)
		if (!c->dids[i].number || conf_did_find(c, c->dids[i].number) != &c->dids[i])
			abort();
	for (size_t i = 0; i < c->ntrunks; i++)
		if (!c->trunks[i].name)
			abort();
	inet_pton(AF_INET, "127.0.0.1", &sin.sin_addr);
	inet_pton(AF_INET6, "::1", &sin6.sin6_addr);
	conf_trunk_match(c, (struct sockaddr *)&sin);
	conf_trunk_match(c, (struct sockaddr *)&sin6);
}

static void parse_string(const char *text)
{
	struct conf *c = NULL;
	char err[512];
	int e;

	memset(err, 0, sizeof(err));
	e = conf_parse_string(&c, PATH, text, err, sizeof(err));
	if (e) {
		if (c)
			abort();        /* *confp set on failure */
		check_err(e, PATH, err);
		return;
	}
	check_conf(c);
	conf_ref(c);
	conf_deref(c);
	conf_deref(c);
}

static void load_file(const uint8_t *data, size_t size, bool has_nul)
{
	struct conf *c = NULL;
	char path[64], err[512];
	int fd = memfd_create("fuzz_conf", 0), e;

	if (fd < 0)
		return;
	if (write(fd, data, size) != (ssize_t)size) {
		close(fd);
		return;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	memset(err, 0, sizeof(err));
	e = conf_load(&c, path, err, sizeof(err));
	close(fd);
	if (e) {
		if (c)
			abort();
		check_err(e, path, err);
		return;
	}
	if (has_nul)
		abort();        /* a NUL byte must not pass */
	check_conf(c);
	conf_deref(c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = fuzz_strndup(data, size);
	bool has_nul = memchr(data, '\0', size) != NULL;

	if (!text)
		return 0;
	parse_string(text);
	free(text);
	if (has_nul || size > 4096)
		load_file(data, size, has_nul);
	return 0;
}
