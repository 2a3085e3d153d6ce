/*
 * rnd.h: random bytes for identifiers (call ids, event ids, SDP session
 * ids), drawn from OpenSSL's CSPRNG in blocks.
 *
 * RAND_bytes() costs about 6,000 instructions and a getpid() (its fork
 * check) per call whatever the size; a call took seven. Drawing 512 bytes
 * at a time and handing them out makes that once per about thirty calls,
 * with the same generator. Signalling thread only: the buffer is a static
 * of each file that includes this header, unlocked.
 */
#ifndef SIPCRM_RND_H
#define SIPCRM_RND_H

#include <stddef.h>
#include <string.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>

/* Fills p with n random bytes. Returns 0, or -1 when OpenSSL has none. */
static inline int rnd_bytes(void *p, size_t n)
{
	static unsigned char buf[512];
	static size_t left;
	unsigned char *out = p;

	while (n) {
		size_t k;

		if (!left) {
			if (RAND_bytes(buf, sizeof(buf)) != 1)
				return -1;
			left = sizeof(buf);
		}
		k = n < left ? n : left;
		memcpy(out, buf + sizeof(buf) - left, k);
		/* what is handed out does not stay in memory */
		OPENSSL_cleanse(buf + sizeof(buf) - left, k);
		left -= k;
		out += k;
		n -= k;
	}
	return 0;
}

#endif
