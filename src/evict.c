/*
 * evict.c - eviction under the budget: which cached pages go, and how.
 *
 * Eviction is a clock over chunks of UM_EVICT_CHUNK pages of each cache:
 * a chunk faulted since the hand last passed (PG_REF) gets a second chance;
 * chunks with dirty pages are taken only when clean ones do not free
 * enough, and are written back before they are punched (I4: only clean,
 * unpinned pages outside the range being faulted are punched).  Punching a
 * memfd range unmaps it from every VMA, shared or private (private copies
 * stay), so eviction needs no page-table walk of its own.  Anonymous
 * memory's victims go to its swap store first.
 *
 * The budgets: a file's own (c_sh->budget, shared by every process that
 * maps it) and the process's (um.cfg.budget, less the kernel anonymous
 * memory ummap does not page, sampled by anon_refresh).
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

/* Is any page of [off, off+len) of c mapped by a locked region? */
static bool chunk_locked(struct um_cache *c, uint64_t off, uint64_t len)
{
	if (!c->c_locked)
		return false;
	for (size_t i = 0; i < um.nregions; i++) {
		struct um_region *r = &um.regions[i];
		if (r->r_cache == c && r->r_locked && off < r->r_off + (r->r_end - r->r_start) &&
		    r->r_off < off + len)
			return true;
	}
	return false;
}

_Static_assert(UM_EVICT_CHUNK == 64, "a chunk's pages are one 64-bit mask");

/* The pages of the chunk at chunk_off that [off, off+len) covers, as bits. */
static uint64_t span_mask(uint64_t chunk_off, uint64_t off, uint64_t len)
{
	uint64_t end = chunk_off + UM_EVICT_CHUNK * UM_PAGE;
	if (!len || off >= end || off + len <= chunk_off)
		return 0;
	uint64_t a = off > chunk_off ? (off - chunk_off) / UM_PAGE : 0;
	uint64_t b = off + len < end ? um_pgup(off + len - chunk_off) / UM_PAGE : UM_EVICT_CHUNK;
	return (b - a == 64 ? ~0ULL : ((1ULL << (b - a)) - 1)) << a;
}

/* Evict the clean pages of the chunk at off, except the range being faulted
 * in (busy, of cache busy_c) and the threads' last fault units. */
static void evict_chunk(struct um_cache *c, uint64_t off, uint64_t busy_off, uint64_t busy_len,
			struct um_cache *busy_c)
{
	uint64_t keep = c == busy_c ? span_mask(off, busy_off, busy_len) : 0;
	for (int i = 0; i < UM_RECENT; i++)
		if (um.recent[i].c == c)
			keep |= span_mask(off, um.recent[i].off, um.recent[i].len);
	for (unsigned i = 0; i < UM_EVICT_CHUNK;) {
		if ((keep >> i) & 1) {
			i++;
			continue;
		}
		unsigned j = i;
		while (j < UM_EVICT_CHUNK && !((keep >> j) & 1))
			j++;
		cache_drop(c, off + i * UM_PAGE, (j - i) * UM_PAGE, true);
		i = j;
	}
}

/*
 * Anonymous memory has no file: its evicted pages go to a swap store,
 * opened on first need (shared memory's, before a fork: config.c).  Not
 * shared memory that fork children map as kernel memory: they must find
 * every page in memory.
 */
static bool can_swap(struct um_cache *c)
{
	int err;
	if (c->c_fork_pinned)
		return false;
	if (!c->c_swap)
		c->c_swap = store_swap_open(&err);
	return c->c_swap != NULL;
}

/* Write the present pages of [p, pend) to the swap store (all of them:
 * nothing tracks stores to anonymous pages) and mark them swapped.  They
 * are write-protected first: a store racing with the write (another
 * thread's) waits in the fault path until they are punched, then finds
 * them in swap, instead of landing in a page about to be dropped. */
static int swap_out(struct um_cache *c, uint64_t p, uint64_t pend)
{
	if (!wp_protect_cache_range(c, p * UM_PAGE, (pend - p) * UM_PAGE))
		return -EPROTO; /* not in every process: a store could be lost */
	for (uint64_t i = p; i < pend;) {
		if (!(c->c_pstate[i] & PG_PRESENT)) {
			i++;
			continue;
		}
		uint64_t j = run_end(c->c_pstate, i, pend, PG_PRESENT, PG_PRESENT);
		uint64_t off = i * UM_PAGE, len = (j - i) * UM_PAGE;
		ssize_t n = cache_save(c, c->c_swap, off, len);
		if (n < 0)
			return (int)n;
		for (uint64_t k = i; k < j; k++)
			c->c_pstate[k] |= PG_SWAPPED;
		i = j;
	}
	return 0;
}

/* One clock sweep of cache c until `want` bytes are freed; returns bytes
 * freed.  Chunks holding dirty pages are passed over (as if not there)
 * unless dirty_ok: they are written back and dropped only when clean ones
 * do not free enough. */
static uint64_t sweep(struct um_cache *c, uint64_t want, uint64_t busy_off, uint64_t busy_len,
		      struct um_cache *busy_c, bool dirty_ok)
{
	/* The last chunk may be partial (a shared anonymous object of any size). */
	uint64_t pages = c->c_wext / UM_PAGE, chunks = (pages + UM_EVICT_CHUNK - 1) / UM_EVICT_CHUNK, freed = 0;
	bool taken;
	if (!chunks || !c->c_sh->resident || (!dirty_ok && c->c_sh->dirty >= c->c_sh->resident) ||
	    (!c->c_store && !can_swap(c)) || !cache_trylock(c, &taken))
		return 0;
	for (uint64_t step = 0; step < 2 * chunks && freed < want; step++) {
		uint64_t k = c->c_clock++ % chunks;
		uint64_t p = k * UM_EVICT_CHUNK, pend = p + UM_EVICT_CHUNK < pages ? p + UM_EVICT_CHUNK : pages;
		uint64_t off = p * UM_PAGE, len = (pend - p) * UM_PAGE;
		uint8_t any = 0;
		for (uint64_t i = p; i < pend; i++)
			any |= c->c_pstate[i];
		if (!(any & PG_PRESENT) || (!dirty_ok && (any & PG_DIRTY)))
			continue;
		if (any & PG_REF) {
			for (uint64_t i = p; i < pend; i++)
				c->c_pstate[i] &= (uint8_t)~PG_REF;
			continue;
		}
		if (chunk_locked(c, off, len))
			continue;
		if (!c->c_store ? swap_out(c, p, pend) < 0 : (any & PG_DIRTY) && wb_range(c, off, len) < 0)
			continue;
		uint64_t before = c->c_sh->resident;
		evict_chunk(c, off, busy_off, busy_len, busy_c);
		freed += before - c->c_sh->resident;
	}
	if (taken)
		cache_unlock(c);
	return freed;
}

/*
 * Kernel anonymous memory (what ummap does not page: after a fork child's
 * copy, or without write-protect support) counts against the process
 * budget: its resident size,
 * measured with mincore(2) over the regions at most every ANON_SAMPLE_NS
 * (or now), leaves that much less room for cached pages.
 */
#define ANON_SAMPLE_NS 10000000ULL
void anon_refresh(bool now)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	uint64_t t = (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
	if (!now && t - um.anon_at < ANON_SAMPLE_NS)
		return;
	um.anon_at = t;
	static unsigned char vec[4096];
	uint64_t pages = 0;
	for (size_t i = 0; i < um.nregions; i++) {
		const struct um_region *r = &um.regions[i];
		if (r->r_kind != UM_ANON_KERNEL)
			continue;
		for (uintptr_t a = r->r_start; a < r->r_end; a += sizeof vec * UM_PAGE) {
			size_t len = r->r_end - a < sizeof vec * UM_PAGE ? r->r_end - a : sizeof vec * UM_PAGE;
			if (mincore((void *)a, len, vec) < 0)
				continue;
			for (size_t k = 0; k < len / UM_PAGE; k++)
				pages += vec[k] & 1;
		}
	}
	um.anon = pages * UM_PAGE;
}

/*
 * Make room for `need` more bytes in cache c: first under c's own budget,
 * then under the process budget less private anonymous memory, taking from
 * every cache; clean pages first, then, if dirty_ok, dirty ones.  [busy_off,
 * busy_len) of c is the range being faulted in and is never a victim.
 * Returns 0, or -ENOMEM when nothing more can be evicted (everything left
 * is pinned, anonymous or being faulted): the fault then goes over budget.
 */
int evict_for(struct um_cache *c, uint64_t need, uint64_t busy_off, uint64_t busy_len, bool dirty_ok)
{
	/* A sweep goes round twice (REF bits, then victims): clean pages in
	 * the first round, dirty ones too in the next (if dirty_ok). */
	int rounds = dirty_ok ? 3 : 1;
	bool over = false;
	if (c)
		cache_lock(c);
	for (int round = 0; round < rounds && c && c->c_sh->budget && c->c_sh->resident + need > c->c_sh->budget; round++)
		sweep(c, c->c_sh->resident + need - c->c_sh->budget, busy_off, busy_len, c, round > 0);
	if (c && c->c_sh->budget && c->c_sh->resident + need > c->c_sh->budget)
		over = true;
	anon_refresh(false);
	uint64_t budget = um.cfg.budget > um.anon ? um.cfg.budget - um.anon : 0;
	/* Summed once (a walk over every cache), then less what each sweep
	 * frees. */
	uint64_t resident = cache_resident_all();
	for (int round = 0; round < rounds && resident + need > budget; round++)
		for (struct um_cache *v = um.caches; v && resident + need > budget; v = v->c_next)
			resident -= sweep(v, resident + need - budget, busy_off, busy_len, c, round > 0);
	return over || resident + need > budget ? -ENOMEM : 0;
}
