/*
 * tokens.h: a token bucket, for pacing work on the loop (lookups to a CRM
 * that is down, a backlog of events).
 */
#ifndef SIPCRM_TOKENS_H
#define SIPCRM_TOKENS_H

#include <stdbool.h>
#include <stdint.h>

struct tokens {
	double n;
	int64_t ms;             /* when n was last filled */
};

/*
 * Fills b at rate a second up to burst, then takes one token if there is
 * one. now is monotonic ms.
 */
static inline bool tokens_take(struct tokens *b, int64_t now, double rate,
			       double burst)
{
	b->n += (double)(now - b->ms) * rate / 1000.0;
	b->ms = now;
	if (b->n > burst)
		b->n = burst;
	if (b->n < 1)
		return false;
	b->n -= 1;
	return true;
}

#endif
