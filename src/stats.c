/*
 * stats.c - um_stats: the counters of the process and of one mapping.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

/* The counters of mapping m (of cache c): its own fault counters, the
 * resident and dirty bytes of the ranges it maps, and its file's writeback
 * and eviction counters (pages are the file's, not the mapping's). */
static void mapping_stats(const struct um_mapping *m, struct um_cache *c, struct um_stats *st)
{
	*st = m->m_st;
	st->evictions = c->c_st.evictions;
	st->writebacks = c->c_st.writebacks;
	st->bytes_written = c->c_st.bytes_written;
	st->budget = c->c_sh->budget ? c->c_sh->budget : um.cfg.budget;
	st->cache_bytes = c->c_sh->resident;
	st->cache_budget = c->c_sh->budget;
	st->cache_procs = svc_procs(c);
	for (size_t i = 0; i < um.nregions; i++) {
		const struct um_region *r = &um.regions[i];
		if (r->r_map != m)
			continue;
		st->mappings++;
		uint64_t end = r->r_off + (r->r_end - r->r_start);
		if (end > c->c_wext)
			end = c->c_wext;
		for (uint64_t p = r->r_off / UM_PAGE; p < end / UM_PAGE; p++) {
			st->resident_bytes += (c->c_pstate[p] & PG_PRESENT) ? UM_PAGE : 0;
			st->dirty_bytes += (c->c_pstate[p] & PG_DIRTY) ? UM_PAGE : 0;
		}
	}
}

/* The process's counters. */
static void process_stats(struct um_stats *st)
{
	*st = um.st;
	anon_refresh(true);
	st->resident_bytes = cache_resident_all() + um.anon;
	st->anon_bytes = um.anon;
	st->dirty_bytes = 0;
	for (struct um_cache *c = um.caches; c; c = c->c_next)
		st->dirty_bytes += c->c_sh->dirty;
	st->budget = um.cfg.budget;
	st->mappings = um.nregions;
}

int um_stats(void *addr, struct um_stats *st)
{
	struct um_stats s; /* (copied out unlocked) */
	um_init();
	um_lock();
	int err = 0;
	if (!addr) {
		process_stats(&s);
	} else {
		struct um_region *r = region_at((uintptr_t)addr);
		if (!r || !r->r_cache)
			err = r ? EINVAL : ENOMEM;
		else
			mapping_stats(r->r_map, r->r_cache, &s);
	}
	um_unlock();
	if (err) {
		errno = err;
		return -1;
	}
	*st = s;
	return 0;
}
