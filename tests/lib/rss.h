/*
 * rss.h - the test process's resident set size as the kernel reports it
 * (/proc/self/status), which is what top, ps and the OOM killer read.
 */
#ifndef RSS_H
#define RSS_H

#include <stdint.h>

uint64_t rss_now(void);	  /* VmRSS, bytes */
uint64_t rss_peak(void);  /* VmHWM: the most VmRSS has been, bytes */
void rss_peak_reset(void); /* VmHWM back to VmRSS (/proc/self/clear_refs) */

#endif
