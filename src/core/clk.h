/*
 * clk.h: the clocks. Monotonic time for timers and nonces, wall time for
 * what is stored or shown (expiry, CDR).
 */
#ifndef SIPCRM_CLK_H
#define SIPCRM_CLK_H

#include <stdint.h>
#include <time.h>

static inline int64_t clk_mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t clk_wall_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
