/*
 * thr.h: helper threads that must not delay the signalling thread.
 */
#ifndef SIPCRM_THR_H
#define SIPCRM_THR_H

#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

/*
 * Lowers the calling thread to nice 10: on a busy core the scheduler then
 * gives it about a tenth of the time the signalling thread gets, so a
 * WAL checkpoint's or a recording's disk work does not hold SIP answers
 * back. It is still scheduled when the core is saturated (not SCHED_IDLE),
 * so the WAL cannot grow for ever. Linux's setpriority() on a thread id
 * affects that thread only.
 */
static inline void thr_background(void)
{
	(void)setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), 10);
}

#endif
