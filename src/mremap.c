/*
 * mremap.c - um_mremap: the kernel's mremap, on ummap's regions.
 *
 * The kernel moves, grows or shrinks the VMAs; ummap then moves its
 * regions with them, at the same distance from the start, growing only the
 * one that reaches the old end and only when the kernel grew it (a hole in
 * the old range stays a hole).  What a move costs the engine, and how it
 * keeps its invariants across it:
 *  - A move drops the moved VMA's userfaultfd registration and its pages'
 *    write-protect bits: the moved regions are fenced PROT_NONE across the
 *    call, registered again at the destination, write-protected again
 *    where they must be (uffd_reprotect), and only then given their
 *    protection back.  No access reaches a moved page unregistered.
 *  - The cache's cross-process lock is held across it, so that no other
 *    process cleans a moved page before the mapping table names its new
 *    address (I3).
 *  - Moved dirty pages stay dirty; pages no longer mapped (a shrink) are
 *    written back and dropped, as at munmap.
 *  - Private anonymous memory is a memfd of its own: growing it over
 *    offsets another piece of the mapping holds moves it to fresh ones.
 *  - Linux 6.17 moves several VMAs in one call, but not registered ones:
 *    ummap does those moves itself, VMA by VMA.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

static void *fail_ptr(int err)
{
	errno = err;
	return MAP_FAILED;
}

/* Does region b continue region a in memory and in a's cache? */
static bool continues(const struct um_region *a, const struct um_region *b)
{
	return a->r_cache && a->r_cache == b->r_cache && a->r_end == b->r_start &&
	       a->r_off + (a->r_end - a->r_start) == b->r_off;
}

/*
 * The kernel places a moved range by copying its VMA, which merges with a
 * neighbour at the destination when they continue each other (same memfd,
 * adjacent offsets, same flags, still registered), and only then drops the
 * registration of the result: the neighbour loses it too.  The moved range
 * is fenced (PROT_NONE) meanwhile, so only a PROT_NONE neighbour can merge
 * with it, which nothing can touch until it is registered again here, and
 * its write protection restored.  That VMA may span several regions (the
 * region map does not merge: a move made VMA by VMA leaves one region per
 * piece), so every region that continues the moved one, from i in
 * direction dir, is registered again.
 */
static void reregister_merged(size_t i, int dir)
{
	for (; i < um.nregions; i += (size_t)dir) { /* (i wraps below 0) */
		struct um_region *r = &um.regions[i], *prev = &um.regions[i - dir];
		if (dir > 0 ? !continues(prev, r) : !continues(r, prev))
			return;
		uffd_register(r);
		uffd_reprotect(r);
	}
}

/* Does a region of c map [from, to), or does c hold pages there? */
static bool offsets_taken(struct um_cache *c, uint64_t from, uint64_t to)
{
	for (size_t i = 0; i < um.nregions; i++) {
		struct um_region *o = &um.regions[i];
		if (o->r_cache == c && o->r_off < to && o->r_off + (o->r_end - o->r_start) > from)
			return true;
	}
	for (uint64_t p = from / UM_PAGE; p < to / UM_PAGE && p < c->c_wext / UM_PAGE; p++)
		if (c->c_pstate[p] & (PG_PRESENT | PG_SWAPPED))
			return true;
	return false;
}

/*
 * Map private anonymous region r at fresh offsets at the end of its memfd,
 * with the pages of its first `keep` bytes copied there (from memory or
 * swap); the old offsets are left to the caller.
 */
static int private_relocate(struct um_region *r, uint64_t keep)
{
	struct um_cache *c = r->r_cache;
	uint64_t len = r->r_end - r->r_start, noff = c->c_extent;
	int e = cache_extend(c, noff + len);
	if (e)
		return e;
	c->c_size = noff + len;
	for (uint64_t k = 0; k < keep / UM_PAGE; k++) {
		uint64_t p = r->r_off / UM_PAGE + k, q = noff / UM_PAGE + k;
		uint8_t s = c->c_pstate[p];
		if (!(s & (PG_PRESENT | PG_SWAPPED)))
			continue;
		uint8_t page[UM_PAGE];
		if (s & PG_PRESENT)
			cache_io(c, false, page, UM_PAGE, p * UM_PAGE);
		else
			c->c_swap->ops->read(c->c_swap, page, UM_PAGE, p * UM_PAGE);
		cache_io(c, true, page, UM_PAGE, q * UM_PAGE);
		/* (A page given MADV_FREE keeps its mark where it moves.) */
		c->c_pstate[q] = (uint8_t)(PG_PRESENT | PG_REF | (s & PG_LAZYFREE));
		c->c_sh->resident += UM_PAGE;
	}
	int e2 = map_registered(r, MAP_SHARED | MAP_NORESERVE, noff);
	if (e2)
		return e2;
	r->r_off = noff;
	return 0;
}

/*
 * Private anonymous region r grew in place or while moving (mremap): the
 * kernel maps the memfd offsets that follow its old end, which may belong
 * to another piece of the same mapping (a split one).  Private pages are
 * the region's alone, so it then moves to fresh offsets (the old ones are
 * dropped as unmapped).
 */
static int private_grow(struct um_region *r, uint64_t oldlen)
{
	struct um_cache *c = r->r_cache;
	uint64_t to = r->r_off + (r->r_end - r->r_start);
	if (offsets_taken(c, r->r_off + oldlen, to))
		return private_relocate(r, oldlen);
	if (to > c->c_size)
		c->c_size = to;
	return cache_extend(c, to);
}

/*
 * MREMAP_DONTUNMAP leaves the old range mapped and empty: private anonymous
 * memory reads zeros there (shared memory still maps its object).  The
 * moved pages go to fresh offsets and the old ones are discarded, so that
 * the old range keeps its VMA (as the kernel's does) and reads zeros.
 */
static void dontunmap_private(const struct um_region *moved, size_t n, uintptr_t os, uintptr_t ns)
{
	for (size_t i = 0; i < n; i++) {
		if (moved[i].r_kind != UM_ANON_PRIVATE)
			continue;
		uintptr_t a = moved[i].r_start > os ? moved[i].r_start : os;
		struct um_region *r = region_at(ns + (a - os));
		if (!r || r->r_cache != moved[i].r_cache)
			continue;
		uint64_t off = r->r_off, len = r->r_end - r->r_start;
		if (!private_relocate(r, len)) {
			uffd_register(r);
			cache_discard(r->r_cache, off, len);
		}
	}
}

/*
 * A move drops the registration of the moved VMA (UFFD_FEATURE_EVENT_REMAP
 * would keep it, but makes mremap wait until the fault thread reads an
 * event, while the fault thread may wait for um.lock), and with it the
 * write-protect bits of its pages.  Until the moved range is registered and
 * protected again at its destination, no access may reach it: the regions
 * of [os, oe) are fenced, PROT_NONE, across the call (on), then given their
 * protection back (off).
 */
static void fence(const struct um_region *moved, size_t n, uintptr_t os, uintptr_t oe, bool on)
{
	for (size_t i = 0; i < n; i++) {
		const struct um_region *r = &moved[i];
		if (r->r_kind == UM_ANON_KERNEL || r->r_prot == PROT_NONE)
			continue;
		uintptr_t a = r->r_start > os ? r->r_start : os, b = r->r_end < oe ? r->r_end : oe;
		if (a < b)
			sys_mprotect((void *)a, b - a, on ? PROT_NONE : r->r_prot);
	}
}

/*
 * Is [os, oe) one VMA as far as the fence can tell?  PROT_NONE would merge
 * neighbours that differ only in protection, which the kernel must see as
 * two VMAs (it moves several at once only since Linux 6.17, and never
 * userfaultfd-registered ones); gaps (holes, kernel memory) make several
 * VMAs too.  Such calls go to the kernel unfenced: it refuses to move
 * registered VMAs among several, and moves unregistered ones, which need
 * no fence.
 */
static bool one_vma(const struct um_region *moved, size_t n, uintptr_t os, uintptr_t oe)
{
	uintptr_t a = os;
	for (size_t i = 0; i < n; i++) {
		if (moved[i].r_start > a || (i && moved[i].r_prot != moved[i - 1].r_prot))
			return false;
		a = moved[i].r_end;
	}
	return a >= oe;
}

/* The regions of [os, oe) (old_size 0: the one at os) as they are after a
 * successful mremap to [ns, ns+nlen): each at the same distance from the
 * start, the one that reaches the old end grown if the mapping grew, all
 * cut at the new end; registered and protected again, and given their
 * protection back if fenced. */
static void place_moved(const struct um_region *moved, size_t n, uintptr_t os, uintptr_t oe, size_t old_size,
			uintptr_t ns, uint64_t nlen, bool fenced)
{
	uint64_t olen = old_size ? oe - os : 0;
	for (size_t i = 0; i < n; i++) {
		struct um_region r = moved[i];
		uintptr_t a = r.r_start < os ? os : r.r_start, b = r.r_end > oe ? oe : r.r_end;
		if (!old_size)
			b = a;
		r.r_off += a - r.r_start;
		r.r_start = ns + (a - os);
		r.r_end = ns + (b - os);
		if ((b == oe || !old_size) && nlen > olen)
			r.r_end = ns + nlen; /* the kernel grew the VMA at the end */
		if (r.r_end > ns + nlen)
			r.r_end = ns + nlen;
		if (r.r_start >= r.r_end)
			continue;
		r.r_ra_win = 0;
		/* A file's cache and private anonymous memory grow with their
		 * mappings; a shared anonymous object keeps its size, as shmem
		 * does, so the grown part raises SIGBUS. */
		struct um_cache *c = r.r_cache;
		if (c && c->c_store)
			cache_extend(c, r.r_off + (r.r_end - r.r_start));
		else if (c && c->c_private && r.r_end - r.r_start > b - a)
			private_grow(&r, b - a);
		uffd_register(&r);
		if (ns != os)
			uffd_reprotect(&r);
		if (fenced && r.r_prot != PROT_NONE && r.r_kind != UM_ANON_KERNEL)
			sys_mprotect((void *)r.r_start, r.r_end - r.r_start, r.r_prot);
		region_insert(&r);
	}
}

/*
 * Moving several VMAs at once (Linux 6.17): with MREMAP_FIXED and old_size
 * equal to new_size, the old range may span several mappings and the gaps
 * between them, which stay gaps at the destination; it must start mapped.
 * The kernel refuses it (EFAULT) when a VMA is registered with a
 * userfaultfd, as ummap's are, so ummap makes the moves itself, one VMA
 * at a time, where the running kernel would have made them all.
 */
static bool kernel_moves_several(void)
{
	static int known; /* 0: not probed yet, 1: yes, -1: no */
	if (!known) {
		/* Three VMAs of its own (the middle one read-only), moved. */
		uint8_t *p = sys_mmap(NULL, 6 * UM_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		known = -1;
		if (p != MAP_FAILED) {
			sys_mprotect(p + UM_PAGE, UM_PAGE, PROT_READ);
			if (sys_mremap(p, 3 * UM_PAGE, 3 * UM_PAGE, MREMAP_MAYMOVE | MREMAP_FIXED, p + 3 * UM_PAGE) !=
			    MAP_FAILED)
				known = 1;
			sys_munmap(p, 6 * UM_PAGE);
		}
	}
	return known > 0;
}

/* The start of the first VMA ending after a (or UINTPTR_MAX), and its end,
 * from /proc/self/maps: the VMAs of gaps between ummap's regions are not
 * ummap's to know otherwise. */
static uintptr_t next_vma(uintptr_t a, uintptr_t *end)
{
	char buf[8192]; /* (a line is at most a path and 80 bytes) */
	uintptr_t best = UINTPTR_MAX;
	int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return best;
	size_t have = 0;
	ssize_t n;
	while ((n = read(fd, buf + have, sizeof buf - 1 - have)) > 0 || have) {
		have += n > 0 ? (size_t)n : 0;
		buf[have] = 0;
		char *nl = strchr(buf, '\n');
		if (!nl && n > 0 && have < sizeof buf - 1)
			continue;
		if (nl)
			*nl = 0;
		char *dash;
		uintptr_t s = strtoul(buf, &dash, 16), e = *dash == '-' ? strtoul(dash + 1, NULL, 16) : 0;
		if (e > a) { /* (the lines are sorted) */
			best = s;
			*end = e;
			break;
		}
		size_t used = nl ? (size_t)(nl + 1 - buf) : have;
		memmove(buf, buf + used, have - used);
		have -= used;
	}
	close(fd);
	return best;
}

static bool can_move_each(uintptr_t os, size_t old_size, size_t new_size, int flags)
{
	uintptr_t end;
	return (flags & MREMAP_FIXED) && old_size && old_size == new_size && kernel_moves_several() &&
	       (region_at(os) || next_vma(os, &end) <= os);
}

/* Is the VMA at a one of the engine's own (a cache's page states or
 * header)?  The kernel may place them in a gap of the caller's: they
 * stay, as if the gap were a hole (in a process without ummap it would
 * be). */
static bool engine_vma(uintptr_t a)
{
	for (struct um_cache *c = um.caches; c; c = c->c_next) {
		uintptr_t ps = (uintptr_t)c->c_pstate, sh = (uintptr_t)c->c_sh;
		if ((c->c_pstate != MAP_FAILED && a >= ps && a < ps + c->c_pslen) || (a >= sh && a < sh + UM_STATE_HDR))
			return true;
	}
	return false;
}

/* Move [a, b), which no region of ummap's covers, VMA by VMA. */
static int move_foreign(uintptr_t a, uintptr_t b, int flags, uintptr_t to)
{
	uintptr_t s, e;
	while (a < b && (s = next_vma(a, &e)) < b) {
		s = s > a ? s : a;
		e = e < b ? e : b;
		if (!engine_vma(s) && sys_mremap((void *)s, e - s, e - s, flags, (void *)(to + (s - a))) == MAP_FAILED)
			return -errno;
		to += e - a;
		a = e;
	}
	return 0;
}

static void *remap_locked(void *old_address, size_t old_size, size_t new_size, int flags, void *new_address,
			  bool *relock);

static void *move_each(uintptr_t os, uint64_t len, int flags, uintptr_t ns)
{
	/* Each VMA replaces what is at its destination; what is opposite a
	 * gap stays, as with the kernel's. */
	for (uintptr_t a = os; a < os + len;) {
		size_t i = region_find(a);
		struct um_region *r = i < um.nregions && um.regions[i].r_start < os + len ? &um.regions[i] : NULL;
		uintptr_t b = !r ? os + len : r->r_start > a ? r->r_start : r->r_end < os + len ? r->r_end : os + len;
		int e = 0;
		if (r && r->r_start <= a)
		{
			bool relock = false; /* (equal sizes: nothing grows) */
			e = remap_locked((void *)a, b - a, b - a, flags, (void *)(ns + (a - os)), &relock) == MAP_FAILED
				? errno : 0;
		}
		else
			e = -move_foreign(a, b, flags, ns + (a - os));
		if (e)
			return fail_ptr(e); /* (the kernel too may have moved some) */
		a = b;
	}
	return (void *)ns;
}

/*
 * The kernel's mremap, fenced only where the range may really move: a
 * plain MREMAP_MAYMOVE call is first tried in place, unfenced (the kernel
 * resizes the VMA there when it can, keeping its registration, and a
 * thread using the range meanwhile must not fault); only if it cannot
 * (ENOMEM) does the range move, fenced.  *fenced says which it was.
 */
static void *kernel_remap(const struct um_region *moved, size_t n, uintptr_t os, uintptr_t oe, size_t old_size,
			  size_t new_size, int flags, void *new_address, bool *fenced)
{
	*fenced = false;
	if (flags == MREMAP_MAYMOVE && old_size) {
		void *p = sys_mremap((void *)os, old_size, new_size, 0, NULL);
		if (p != MAP_FAILED || errno != ENOMEM)
			return p;
	}
	bool may_move = (flags & (MREMAP_MAYMOVE | MREMAP_FIXED)) || !old_size;
	*fenced = n && may_move && one_vma(moved, n, os, oe);
	if (*fenced)
		fence(moved, n, os, oe, true);
	void *p = sys_mremap((void *)os, old_size, new_size, flags, new_address);
	if (p == MAP_FAILED && *fenced) {
		int e = errno;
		fence(moved, n, os, oe, false);
		errno = e;
	}
	return p;
}

/*
 * Is [a, a+len) all locked (mlock(2), MAP_LOCKED: the kernel's to say, as
 * mlock is not ummap's)?  MADV_COLD refuses a locked VMA (EINVAL) and
 * changes nothing there; VMA boundaries are found page by page, only as
 * long as the pages are locked.
 */
static bool all_locked(uintptr_t a, uint64_t len)
{
	if (a & (UM_PAGE - 1))
		return false;
	for (uintptr_t x = a; x - a < len; x += UM_PAGE)
		if (sys_madvise((void *)x, UM_PAGE, MADV_COLD) == 0 || errno != EINVAL)
			return false;
	return true;
}

/*
 * A duplicate (old_size 0) of a shared mapping: the kernel's copy of the
 * VMA would be reachable unregistered, and fencing the original would make
 * it fault under its other users, so ummap maps the cache again itself, as
 * the kernel's duplicate would map the same object.  Only the plain case
 * (MREMAP_MAYMOVE, the address the kernel chooses); NULL where ummap
 * leaves the call to the kernel.  *relock: lock it fully once um.lock is
 * released.
 */
static void *dup_shared(const struct um_region *r, uintptr_t os, size_t new_size, int flags, bool *relock)
{
	bool shared = r->r_kind == UM_FILE_SHARED || r->r_kind == UM_ANON_SHARED;
	if (flags != MREMAP_MAYMOVE || !new_size || (os & (UM_PAGE - 1)) || !shared || r->r_start > os)
		return NULL;
	uint64_t len = um_pgup(new_size);
	struct um_region d = *r;
	d.r_off += os - r->r_start;
	/* The place the kernel's duplicate would take: the cache's own
	 * placement (shmem aligns large mappings for huge pages), inaccessible
	 * until registered. */
	void *p = sys_mmap(NULL, len, PROT_NONE, MAP_SHARED | MAP_NORESERVE, d.r_cache->c_memfd, (off_t)d.r_off);
	if (p == MAP_FAILED)
		return p;
	d.r_start = (uintptr_t)p;
	d.r_end = d.r_start + len;
	/* The kernel's duplicate of a locked VMA is locked, within
	 * RLIMIT_MEMLOCK (EAGAIN), and populated: here locked on fault under
	 * um.lock, then populated by um_mremap. */
	d.r_locked = all_locked(os, UM_PAGE);
	d.r_ra_win = 0;
	int e = d.r_cache->c_store ? cache_extend(d.r_cache, d.r_off + len) : 0;
	if (!e && !(e = map_registered(&d, MAP_SHARED | MAP_NORESERVE, d.r_off)) && d.r_locked &&
	    sys_mlock2(p, len, MLOCK_ONFAULT) < 0)
		e = -EAGAIN;
	if (e || (e = region_insert(&d))) {
		sys_munmap(p, len);
		return fail_ptr(-e);
	}
	/* The kernel's duplicate is a copy of the VMA: its advice too (which
	 * decides what it merges with). */
	if (d.r_advice != MADV_NORMAL)
		sys_madvise(p, len, d.r_advice);
	if (d.r_dontfork)
		sys_madvise(p, len, MADV_DONTFORK);
	*relock = d.r_locked;
	return p;
}

/* mremap(2) under um.lock: MAP_FAILED with errno, or the new address.
 * *relock: the range (new, or old if it failed) is to be mlocked again. */
static void *remap_locked(void *old_address, size_t old_size, size_t new_size, int flags, void *new_address,
			  bool *relock)
{
	/* The regions that will move (or, for old_size 0, be duplicated), and
	 * room for the new ones, are taken before the kernel moves anything:
	 * an allocation afterwards could land in the range just vacated, which
	 * must stay unmapped as with the kernel. */
	uintptr_t os = (uintptr_t)old_address, oe = os + (old_size ? um_pgup(old_size) : UM_PAGE);
	size_t first = region_find(os), n = 0;
	while (first + n < um.nregions && um.regions[first + n].r_start < oe)
		n++;
	struct um_region *moved = malloc((n ? n : 1) * sizeof *moved);
	if (!moved || region_reserve(um.nregions + n + 4)) {
		free(moved);
		return fail_ptr(ENOMEM);
	}
	memcpy(moved, &um.regions[first], n * sizeof *moved);
	/* Private memory cannot be duplicated (the kernel's EINVAL for
	 * old_size 0 on a private mapping; to it ours is shared). */
	if (!old_size && n && moved[0].r_start <= os && moved[0].r_kind == UM_ANON_PRIVATE) {
		free(moved);
		return fail_ptr(EINVAL);
	}
	/* Moved pages are unprotected until they are registered again below:
	 * no other process may clean the cache meanwhile (its write-protect
	 * request would not reach them).  (Ranges spanning several caches,
	 * which the kernel refuses to move, take none.) */
	struct um_cache *one = NULL;
	bool several = false;
	for (size_t i = 0; i < n; i++)
		if (moved[i].r_cache) {
			several |= one && one != moved[i].r_cache;
			one = moved[i].r_cache;
		}
	if (one && !several)
		cache_lock(one);
	void *p = !old_size && n ? dup_shared(&moved[0], os, new_size, flags, relock) : NULL;
	if (p) {
		free(moved);
		return p;
	}
	/* A locked VMA that grows would have its new part populated inside
	 * the call, faulting while this thread holds um.lock, which the fault
	 * thread needs.  It is locked on fault across the call instead (still
	 * VM_LOCKED: the kernel's RLIMIT_MEMLOCK check is made, nothing is
	 * populated), and um_mremap locks it again once the lock is released.
	 * (A range locked only in part spans several VMAs: the kernel refuses
	 * to grow it, EFAULT, before populating anything.) */
	if (old_size && new_size > old_size && all_locked(os, oe - os) &&
	    sys_mlock2(old_address, old_size, MLOCK_ONFAULT) == 0)
		*relock = true;
	bool fenced;
	p = kernel_remap(moved, n, os, oe, old_size, new_size, flags, new_address, &fenced);
	if (p == MAP_FAILED) {
		int e = errno;
		free(moved);
		if (e == EFAULT && n && can_move_each(os, old_size, new_size, flags))
			return move_each(os, um_pgup(old_size), flags, (uintptr_t)new_address);
		return fail_ptr(e);
	}
	uintptr_t ns = (uintptr_t)p;
	uint64_t nlen = um_pgup(new_size);
	for (size_t i = 0; i < n; i++) { /* held across the move */
		if (moved[i].r_cache)
			moved[i].r_cache->c_refs++;
		if (moved[i].r_map)
			moved[i].r_map->m_refs++;
	}
	if (old_size && !(flags & MREMAP_DONTUNMAP)) {
		/* What a shrink leaves out is unmapped, as by munmap (its
		 * stores reach the file); the rest moves with its pages. */
		uintptr_t keep = nlen < oe - os ? os + nlen : oe;
		region_remove_range(keep, oe);
		um.remapping = true;
		region_remove_range(os, keep);
		um.remapping = false;
	}
	region_remove_range(ns, ns + nlen);
	if (one && !several)
		cache_lock(one); /* (again, if a mapping replaced at ns took another's) */
	place_moved(moved, n, os, oe, old_size, ns, nlen, fenced);
	/* What stayed behind (old_size 0, MREMAP_DONTUNMAP) gets its
	 * protection back. */
	if (fenced && (!old_size || (flags & MREMAP_DONTUNMAP)))
		fence(moved, n, os, oe, false);
	for (size_t i = 0; i < n; i++) {
		struct um_cache *c = moved[i].r_cache;
		/* Pages the mapping no longer maps (it shrank) leave the cache,
		 * as at munmap. */
		if (c && (c->c_store || c->c_private) && c->c_refs > 1)
			drop_unmapped(c, moved[i].r_off, moved[i].r_end - moved[i].r_start);
		if (c)
			cache_release(c);
		mapping_put(moved[i].r_map);
	}
	if (flags & MREMAP_DONTUNMAP)
		dontunmap_private(moved, n, os, ns);
	if (ns != os && nlen) {
		size_t lo = region_find(ns), hi = region_find(ns + nlen);
		if (lo > 0 && lo < um.nregions && um.regions[lo].r_start == ns)
			reregister_merged(lo - 1, -1);
		if (hi > 0 && hi < um.nregions && um.regions[hi - 1].r_end == ns + nlen)
			reregister_merged(hi, 1);
	}
	free(moved);
	return p;
}

void *um_mremap(void *old_address, size_t old_size, size_t new_size, int flags, ...)
{
	void *new_address = NULL;
	if (flags & MREMAP_FIXED) {
		va_list ap;
		va_start(ap, flags);
		new_address = va_arg(ap, void *);
		va_end(ap);
	}
	if (um_init())
		return sys_mremap(old_address, old_size, new_size, flags, new_address);
	um_lock();
	bool relock = false;
	void *p = remap_locked(old_address, old_size, new_size, flags, new_address, &relock);
	int e = errno;
	um_unlock();
	if (relock) /* (faults served now: mlock populates, as the kernel's mremap) */
		sys_mlock(p != MAP_FAILED ? p : old_address, p != MAP_FAILED ? new_size : old_size);
	errno = e;
	return p;
}
