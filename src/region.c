/*
 * region.c - the region map: ummap's record of its mappings, one entry per
 * page range with uniform properties, sorted by address and never
 * overlapping.
 *
 * The kernel keeps the authoritative VMAs (each region is a real mapping of
 * its cache's memfd), so this map only needs what the kernel does not know:
 * which cache and offset a range maps, its kind, advice and settings.  It is
 * a sorted array: lookups are binary searches, insertions and splits move
 * the tail, which for the thousands of regions a process has costs less than
 * the system call that goes with them.  Entries are split like VMAs (a
 * partial munmap, mprotect or madvise splits at the range's ends); adjacent
 * entries are not merged, as merging changes no behaviour (the kernel merges
 * the VMAs themselves).
 *
 * I6, kept here (map_registered) and in mremap.c: no page of a region can
 * be reached before the region is registered with the userfaultfd.  A
 * memfd mapping is created PROT_NONE, registered, and only then given its
 * protection: an access in between faults (SIGSEGV, as before the call
 * returns) instead of being served by shmem itself, which would put a page
 * of zeros in the shared cache or take a store without marking it DIRTY.
 * When the kernel drops a region's write-protect bits (a move, a merge,
 * fork), uffd_reprotect puts them back from the page states before the
 * region is accessible again.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>

#include "compat.h"
#include "internal.h"

size_t region_find(uintptr_t addr)
{
	size_t lo = 0, hi = um.nregions;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (um.regions[mid].r_end <= addr)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct um_region *region_at(uintptr_t addr)
{
	size_t i = region_find(addr);
	if (i < um.nregions && um.regions[i].r_start <= addr)
		return &um.regions[i];
	return NULL;
}

int region_reserve(size_t n)
{
	if (n <= um.cap)
		return 0;
	size_t cap = um.cap ? um.cap * 2 : 64;
	while (cap < n)
		cap *= 2;
	struct um_region *v = realloc(um.regions, cap * sizeof *v);
	if (!v)
		return -ENOMEM;
	um.regions = v;
	um.cap = cap;
	return 0;
}

int region_insert(const struct um_region *r)
{
	if (region_reserve(um.nregions + 1))
		return -ENOMEM;
	size_t i = region_find(r->r_start);
	memmove(&um.regions[i + 1], &um.regions[i], (um.nregions - i) * sizeof *r);
	um.regions[i] = *r;
	um.nregions++;
	if (r->r_map)
		r->r_map->m_refs++;
	if (r->r_cache) {
		r->r_cache->c_refs++;
		r->r_cache->c_locked += r->r_locked;
		r->r_cache->c_maps_changed = true;
	}
	return 0;
}

/* Split the region containing addr so that a region starts at addr. */
int region_split_at(uintptr_t addr)
{
	size_t i = region_find(addr);
	if (i >= um.nregions || um.regions[i].r_start >= addr)
		return 0;
	if (region_reserve(um.nregions + 1))
		return -ENOMEM;
	struct um_region *r = &um.regions[i];
	memmove(r + 1, r, (um.nregions - i) * sizeof *r);
	um.nregions++;
	struct um_region *hi = r + 1;
	r->r_end = addr;
	hi->r_off += addr - hi->r_start;
	hi->r_start = addr;
	if (r->r_map)
		r->r_map->m_refs++;
	if (r->r_cache) {
		r->r_cache->c_refs++;
		r->r_cache->c_locked += r->r_locked;
		r->r_cache->c_maps_changed = true;
	}
	return 0;
}

void mapping_put(struct um_mapping *m)
{
	if (m && --m->m_refs == 0)
		free(m);
}

/*
 * Drop the cached pages of [off, off+len) of cache c that no region maps
 * any more, written back first.  Nothing keeps them coherent with write(2) to the file
 * while unmapped (ummap does not see it), so the next mapping reads them
 * afresh instead of seeing stale data.  Private anonymous pages no region
 * maps are unreachable: discarded, swapped copies too.
 */
void drop_unmapped(struct um_cache *c, uint64_t off, uint64_t len)
{
	uint64_t end = off + len;
	while (off < end) {
		/* The next stretch from off that no region of c maps. */
		uint64_t stop = end;
		bool covered = false;
		for (size_t i = 0; i < um.nregions && !covered; i++) {
			struct um_region *r = &um.regions[i];
			uint64_t ro = r->r_off, re = r->r_off + (r->r_end - r->r_start);
			if (r->r_cache != c || re <= off || ro >= stop)
				continue;
			if (ro <= off) {
				covered = true;
				off = re;
			} else {
				stop = ro;
			}
		}
		if (!covered) {
			if (c->c_private) {
				cache_discard(c, off, stop - off);
			} else {
				/* What was stored there is file data to read(2)
				 * now, as with the kernel's page cache. */
				if (c->c_store)
					wb_range(c, off, stop - off);
				cache_drop(c, off, stop - off, true);
			}
			off = stop;
		}
	}
}

/* Drop a reference to cache c.  The last one writes the cache back first
 * (what the kernel would have in its page cache is in the file when the
 * last mapping goes); what cannot be written stays, for the writeback
 * thread, which frees the cache once it is clean.  0 or -errno. */
int cache_release(struct um_cache *c)
{
	int e = c->c_refs == 1 && c->c_store && c->c_sh->dirty ? wb_cache(c) : 0;
	if (--c->c_refs == 0) {
		cache_lock(c);
		if (!c->c_store || !c->c_sh->dirty)
			svc_release(c);
	}
	return e;
}

/* Forget [start, end): trims or drops the regions it covers, writes back
 * what was stored through shared ones (the kernel would have it in its page
 * cache already) and releases their caches (the last release frees one).
 * Returns 0 or the first writeback -errno. */
int region_remove_range(uintptr_t start, uintptr_t end)
{
	int err = 0;
	if (!um.nregions)
		return 0;
	/* Splitting can only fail for lack of memory; the covered part is
	 * then trimmed in place below, which needs none. */
	region_split_at(start);
	region_split_at(end);
	size_t i = region_find(start), j = i;
	while (j < um.nregions && um.regions[j].r_start < end) {
		struct um_region *r = &um.regions[j];
		if (r->r_cache)
			r->r_cache->c_maps_changed = true;
		if (r->r_start < start || r->r_end > end) {
			/* Could not split: keep the part outside. */
			if (r->r_start < start)
				r->r_end = start;
			else {
				r->r_off += end - r->r_start;
				r->r_start = end;
			}
			um.regions[i++] = *r;
			j++;
			continue;
		}
		mapping_put(r->r_map);
		struct um_cache *c = r->r_cache;
		if (c) {
			int e = 0;
			/* (Moved pages stay dirty: their new region has them.) */
			if (r->r_kind == UM_FILE_SHARED && !um.remapping)
				e = wb_range(c, r->r_off, r->r_end - r->r_start);
			if (e && !err)
				err = e;
			c->c_locked -= r->r_locked;
			r->r_cache = NULL; /* no longer maps c, for drop_unmapped */
			bool last = c->c_refs == 1;
			e = cache_release(c);
			if (e && !err)
				err = e;
			if (!last && !um.remapping && (c->c_store || c->c_private))
				drop_unmapped(c, r->r_off, r->r_end - r->r_start);
		}
		j++;
	}
	memmove(&um.regions[i], &um.regions[j], (um.nregions - j) * sizeof *um.regions);
	um.nregions -= j - i;
	return err;
}

/* Register a region's range with the userfaultfd, in the modes its kind
 * needs: MISSING (page not in the memfd), MINOR (in the memfd, not mapped)
 * and, for shared file mappings, WP (first write to a clean page). */
int uffd_register(struct um_region *r)
{
	if (r->r_kind == UM_ANON_KERNEL)
		return 0;
	struct uffdio_register reg = {
		.range = { .start = r->r_start, .len = r->r_end - r->r_start },
		.mode = UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_MINOR,
	};
	r->r_wp = um.wp && r->r_kind == UM_FILE_SHARED;
	/* Anonymous memory is write-protected only while its pages are
	 * written to swap (and, private, across fork: config.c), not tracked. */
	if (r->r_wp || (um.wp && (r->r_kind == UM_ANON_PRIVATE || r->r_kind == UM_ANON_SHARED)))
		reg.mode |= UFFDIO_REGISTER_MODE_WP;
	if (ioctl(um.uffd, UFFDIO_REGISTER, &reg) < 0)
		return -errno;
	return 0;
}

/*
 * Map region r's cache (offset off) over r's range, registered before any
 * access can reach it: mapped PROT_NONE, registered, then given r_prot.  An
 * access in between raises SIGSEGV, as before the call returns; shmem
 * itself never serves it (that would put a page of zeros in the cache, or
 * take a store unseen).  mflags: MAP_SHARED or MAP_PRIVATE and extras.
 */
int map_registered(struct um_region *r, int mflags, uint64_t off)
{
	void *p = (void *)r->r_start;
	size_t len = r->r_end - r->r_start;
	if (sys_mmap(p, len, PROT_NONE, MAP_FIXED | mflags, r->r_cache->c_memfd, (off_t)off) == MAP_FAILED)
		return -errno;
	int e = uffd_register(r);
	if (!e && r->r_prot != PROT_NONE && sys_mprotect(p, len, r->r_prot) < 0)
		e = -errno;
	return e;
}

/* Does page p of r's cache need write protection in r: a clean page of a
 * write-tracked file region (I2), a page of private anonymous memory given
 * MADV_FREE (its first store must clear the mark)? */
static bool wants_wp(const struct um_region *r, uint64_t p)
{
	uint8_t s = r->r_cache->c_pstate[p];
	if (r->r_kind == UM_FILE_SHARED)
		return r->r_wp && !(s & PG_DIRTY);
	return r->r_kind == UM_ANON_PRIVATE && (s & PG_LAZYFREE);
}

/*
 * Write-protect again, in runs, the pages of r that need it, after the
 * kernel dropped r's write-protect bits (a move by mremap, a registration
 * lost to a merge, fork lifting it from private memory).  Pages without a
 * page-table entry get the kernel's write-protect marker, so nothing needs
 * to be mapped for this.
 */
void uffd_reprotect(struct um_region *r)
{
	struct um_cache *c = r->r_cache;
	if (!c || !REGION_WP(r))
		return;
	uint64_t p0 = r->r_off / UM_PAGE, end = (r->r_off + (r->r_end - r->r_start)) / UM_PAGE;
	if (end > c->c_wext / UM_PAGE)
		end = c->c_wext / UM_PAGE;
	for (uint64_t p = p0; p < end;) {
		bool want = wants_wp(r, p);
		uint64_t q = p + 1;
		while (q < end && wants_wp(r, q) == want)
			q++;
		if (want) {
			struct uffdio_writeprotect wp = {
				.range = { r->r_start + (p - p0) * UM_PAGE, (q - p) * UM_PAGE },
				.mode = UFFDIO_WRITEPROTECT_MODE_WP,
			};
			ioctl(um.uffd, UFFDIO_WRITEPROTECT, &wp);
		}
		p = q;
	}
}
