/*
 * fuzz_auth.h: Digest parameters of a parsed Authorization header into
 * struct digest_resp, for the harnesses.
 *
 * This stands in for registrar.c's parse_digest(), which is static: once
 * that is exported (see t/fuzz/README), the harnesses should call it and
 * this file goes. Values are unquoted and unescaped as the registrar does.
 */
#ifndef SIPCRM_FUZZ_AUTH_H
#define SIPCRM_FUZZ_AUTH_H

#include <string.h>
#include <strings.h>

#include <sofia-sip/msg_types.h>

#include "sip/digest.h"

#define FUZZ_AUTH_VALUE_MAX 256

static inline const char *fuzz_auth_value(const char *p, const char *name,
					  char *buf, size_t size)
{
	size_t n = strlen(name), o = 0;

	if (strncasecmp(p, name, n) || p[n] != '=')
		return NULL;
	p += n + 1;
	if (*p == '"') {
		for (p++; *p && *p != '"' && o + 1 < size; p++) {
			if (*p == '\\' && p[1])
				p++;
			buf[o++] = *p;
		}
	}
	else {
		for (; *p && o + 1 < size; p++)
			buf[o++] = *p;
	}
	buf[o] = '\0';
	return buf;
}

static inline void fuzz_auth_params(const msg_param_t *params,
				    struct digest_resp *dr,
				    char bufs[10][FUZZ_AUTH_VALUE_MAX])
{
	static const char *const names[] = { "username", "realm", "nonce", "uri",
		"response", "algorithm", "cnonce", "qop", "nc", "opaque" };
	const char **fields[] = { &dr->username, &dr->realm, &dr->nonce, &dr->uri,
		&dr->response, &dr->algorithm, &dr->cnonce, &dr->qop, &dr->nc,
		&dr->opaque };

	memset(dr, 0, sizeof(*dr));
	for (size_t i = 0; params && params[i]; i++)
		for (size_t j = 0; j < 10; j++) {
			const char *v = fuzz_auth_value(params[i], names[j], bufs[j],
							FUZZ_AUTH_VALUE_MAX);

			if (v)
				*fields[j] = v;
		}
}

#endif
