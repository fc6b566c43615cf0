/*
 * mman.c - um_mmap, um_munmap, um_msync, um_mprotect, um_madvise and
 * um_ftruncate: the kernel's calls, on ummap's caches (um_mremap is
 * mremap.c).
 *
 * Each call first lets the kernel do what it does to its VMAs: um_mmap asks
 * the kernel for the very mapping the caller asked for (without populating
 * or locking it), so the kernel checks every argument, returns its own errno
 * and chooses the address; ummap then maps its cache's memfd over that range
 * with MAP_FIXED and registers it with the userfaultfd.  munmap, mprotect,
 * madvise, msync and mremap are made on the real VMAs, so their errno and
 * their splitting of ranges are the kernel's; ummap then updates its region
 * map and does its part (writeback, readahead, eviction).  The few checks
 * the kernel cannot make on a memfd mapping (PROT_WRITE on a shared mapping
 * of a file opened read-only) are made here, in the kernel's order.
 *
 * Calls return as the POSIX calls do: MAP_FAILED or -1 with errno.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

#define MAP_TYPE_MASK 0x0f

static void *fail_ptr(int err)
{
	errno = err;
	return MAP_FAILED;
}

static int fail(int err)
{
	errno = err;
	return -1;
}

static bool is_shared(int flags)
{
	int t = flags & MAP_TYPE_MASK;
	return t == MAP_SHARED || t == MAP_SHARED_VALIDATE;
}

/* The file offset one past the last page of the file that r may map. */
static uint64_t eof_page(const struct um_region *r)
{
	if (!r->r_cache || !r->r_cache->c_store)
		return UINT64_MAX;
	return um_pgup(r->r_cache->c_size);
}

/* MAP_POPULATE: fault the mapping in through the fault thread; private
 * writable mappings are populated for writing, like the kernel's
 * populate_vma_page_range does.  Pages beyond the end of file stop it
 * without a signal (see signal.c), as the kernel's populate stops there. */
static void populate(void *p, size_t len, int prot, int flags)
{
	int adv = (!is_shared(flags) && (prot & PROT_WRITE)) ? MADV_POPULATE_WRITE : MADV_POPULATE_READ;
	if (prot & (PROT_READ | PROT_WRITE))
		sys_madvise(p, len, adv);
}

/* What the kernel would allow a later mprotect of a mapping of fd: write
 * (a shared mapping needs a descriptor open for writing and a file not
 * sealed against writes), exec (not on a noexec mount). */
static void file_may(struct um_region *r, int fd, bool shared)
{
	int acc = fcntl(fd, F_GETFL) & O_ACCMODE;
	int seals = fcntl(fd, F_GET_SEALS);
	struct statvfs sv;
	r->r_maywrite = !shared || (acc == O_RDWR && (seals < 0 || !(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE))));
	r->r_mayexec = fstatvfs(fd, &sv) < 0 || !(sv.f_flag & ST_NOEXEC);
}

/*
 * MAP_LOCKED's own checks, which the probe (made without it, so as not to
 * populate the file's mapping) does not make: EPERM without the right to
 * lock memory, EAGAIN beyond RLIMIT_MEMLOCK.  A locked PROT_NONE mapping
 * of the length makes them and populates nothing.  0 or the errno.
 */
static int lock_allowed(size_t length)
{
	void *l = sys_mmap(NULL, length, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_LOCKED, -1, 0);
	if (l == MAP_FAILED)
		return errno;
	sys_munmap(l, length);
	return 0;
}

/*
 * The kernel checks the arguments, and chooses the address, by making the
 * very mapping asked for (without populating or locking it), which ummap
 * then replaces.  With MAP_FIXED over a mapping in use, that probe would be
 * reachable at the address in between: a store into it would reach the
 * file's page cache unseen and be lost under ummap's copy.  There the probe
 * is made elsewhere and dropped; the address's old mapping stays until
 * ummap's replaces it.  Returns 0 with um.lock held and *p the address, or
 * an errno.
 */
static int probe(void *addr, size_t length, int prot, int flags, int fd, off_t offset, void **p)
{
	int pflags = flags & ~(MAP_POPULATE | MAP_LOCKED | MAP_NONBLOCK);
	bool elsewhere = (flags & MAP_FIXED) && !(flags & MAP_FIXED_NOREPLACE);
	if (elsewhere && ((uintptr_t)addr & (UM_PAGE - 1)))
		return EINVAL;
	um_lock();
	void *q = sys_mmap(elsewhere ? NULL : addr, length, prot, elsewhere ? pflags & ~MAP_FIXED : pflags, fd, offset);
	if (q == MAP_FAILED) {
		int e = errno;
		um_unlock();
		return e;
	}
	if (elsewhere)
		sys_munmap(q, length);
	int e = flags & MAP_LOCKED ? lock_allowed(length) : 0;
	if (e) {
		if (!elsewhere)
			sys_munmap(q, length);
		um_unlock();
		return e;
	}
	*p = elsewhere ? addr : q;
	return 0;
}

/*
 * MAP_FIXED over the very same mapping of the file (a program mapping its
 * file again where it already is): the kernel's new VMA would map the same
 * pages, so ummap keeps its own, registered all along (a replacement would
 * leave the range unreachable for a moment), and resets only what a new
 * mapping resets: advice, locking, the mapping's counters, what mprotect
 * may allow.  False if [s, s+len) is not that, under um.lock.
 */
static bool remap_same(uintptr_t s, uint64_t len, int prot, int flags, int fd, const struct stat *st, off_t off)
{
	struct um_cache *c = cache_by_file(st->st_dev, st->st_ino);
	struct um_mapping *m = c ? calloc(1, sizeof *m) : NULL;
	uintptr_t a = s;
	if (!m || region_split_at(s) || region_split_at(s + len)) {
		free(m);
		return false;
	}
	size_t first = region_find(s), i;
	for (i = first; i < um.nregions && um.regions[i].r_start < s + len; i++) {
		const struct um_region *r = &um.regions[i];
		if (r->r_start != a || r->r_cache != c || r->r_kind != UM_FILE_SHARED ||
		    r->r_prot != (prot & (PROT_READ | PROT_WRITE | PROT_EXEC)) || r->r_off != (uint64_t)off + (a - s))
			break;
		a = r->r_end;
	}
	int err;
	bool fresh;
	struct um_region may;
	file_may(&may, fd, true);
	bool up = may.r_maywrite && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR;
	if (a != s + len || (up && !cache_get(fd, st, true, &fresh, &err))) {
		free(m);
		return false;
	}
	if (up)
		svc_share(c, false, 0); /* (the service may write now) */
	sys_madvise((void *)s, len, MADV_NORMAL);
	sys_madvise((void *)s, len, MADV_DOFORK);
	if (!(flags & MAP_LOCKED))
		sys_munlock((void *)s, len);
	for (i = first; i < um.nregions && um.regions[i].r_start < s + len; i++) {
		struct um_region *r = &um.regions[i];
		r->r_maywrite = may.r_maywrite;
		r->r_mayexec = may.r_mayexec;
		r->r_advice = MADV_NORMAL;
		r->r_dontfork = false;
		r->r_ra_win = 0;
		c->c_locked += (int)!!(flags & MAP_LOCKED) - (int)r->r_locked;
		r->r_locked = flags & MAP_LOCKED;
		mapping_put(r->r_map);
		r->r_map = m;
		m->m_refs++;
	}
	return true;
}

/*
 * Is a region of ummap's in [s, s+len) sealed (mseal(2))?  The kernel
 * refuses MAP_FIXED over a sealed VMA (EPERM) and leaves it; ummap, whose
 * probe was made elsewhere, must find out before it drops its regions
 * there.  mprotect to the protection a region has changes nothing, and is
 * refused on a sealed VMA.
 */
static bool sealed(uintptr_t s, uint64_t len)
{
	for (size_t i = region_find(s); i < um.nregions && um.regions[i].r_start < s + len; i++) {
		const struct um_region *r = &um.regions[i];
		uintptr_t a = r->r_start > s ? r->r_start : s, b = r->r_end < s + len ? r->r_end : s + len;
		if (sys_mprotect((void *)a, b - a, r->r_prot) < 0 && errno == EPERM)
			return true;
	}
	return false;
}

void *um_mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
	if (um_init())
		return sys_mmap(addr, length, prot, flags, fd, offset);
	bool anon = flags & MAP_ANONYMOUS, shared = is_shared(flags);
	struct stat st;
	/* What ummap does not serve goes to the kernel unchanged: huge pages,
	 * stacks that grow, private anonymous memory when it cannot be
	 * write-protected across fork (config.c), and anything but a regular
	 * file (the kernel also gives the errno of a bad descriptor). */
	if ((flags & (MAP_HUGETLB | MAP_GROWSDOWN)) || (anon && !shared && !um.wp) ||
	    (!anon && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)))) {
		void *p = sys_mmap(addr, length, prot, flags, fd, offset);
		if (p != MAP_FAILED && anon) {
			struct um_region r = { .r_start = (uintptr_t)p, .r_end = (uintptr_t)p + um_pgup(length),
					       .r_kind = UM_ANON_KERNEL, .r_prot = prot, .r_maywrite = true,
					       .r_mayexec = true,
					       .r_ra_max = UINT64_MAX };
			um_lock();
			region_remove_range(r.r_start, r.r_end);
			region_insert(&r);
			um_unlock();
		}
		return p;
	}
	void *p = NULL;
	int err = probe(addr, length, prot, flags, fd, offset, &p);
	if (err)
		return fail_ptr(err);
	uint64_t len = um_pgup(length);
	bool fixed = (flags & MAP_FIXED) && !(flags & MAP_FIXED_NOREPLACE);
	if (fixed && sealed((uintptr_t)p, len)) {
		um_unlock();
		return fail_ptr(EPERM);
	}
	if (fixed && !anon && shared && remap_same((uintptr_t)p, len, prot, flags, fd, &st, offset)) {
		um_unlock();
		goto populate;
	}
	/* Whatever was there is replaced (MAP_FIXED). */
	region_remove_range((uintptr_t)p, (uintptr_t)p + len);

	struct um_region r = {
		.r_start = (uintptr_t)p,
		.r_end = (uintptr_t)p + len,
		.r_off = anon ? 0 : (uint64_t)offset,
		.r_kind = anon ? (shared ? UM_ANON_SHARED : UM_ANON_PRIVATE) : shared ? UM_FILE_SHARED : UM_FILE_PRIVATE,
		.r_prot = prot & (PROT_READ | PROT_WRITE | PROT_EXEC), /* (mmap ignores the others) */
		.r_locked = flags & MAP_LOCKED,
		.r_advice = MADV_NORMAL,
		.r_ra_max = UINT64_MAX,
		.r_ra_next = UINT64_MAX,
	};
	struct um_cache *c = NULL;
	if (!(r.r_map = calloc(1, sizeof *r.r_map))) {
		err = ENOMEM;
		goto undo;
	}
	if (anon) {
		c = cache_new_anon(len, shared, &err);
		r.r_maywrite = r.r_mayexec = true;
	} else {
		file_may(&r, fd, shared);
		bool want_write = shared && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR, fresh;
		c = cache_get(fd, &st, want_write, &fresh, &err);
		if (c && (fresh || want_write))
			svc_share(c, fresh, (uint64_t)st.st_size); /* (writable: the service may write) */
	}
	if (!c)
		goto undo;
	if ((err = -cache_extend(c, r.r_off + len)))
		goto undo_cache;
	r.r_cache = c;
	r.r_wb_seen = c->c_wb_seq;
	/* Private anonymous memory too maps its memfd shared: no one else maps
	 * it, and its pages can then be evicted by punching. */
	int mflags = (shared || anon ? MAP_SHARED : MAP_PRIVATE) | (flags & MAP_NORESERVE);
	if ((err = -map_registered(&r, mflags, r.r_off)))
		goto undo_cache;
	if ((err = -region_insert(&r)))
		goto undo_cache;
	um_unlock();
populate:
	/* mlock populates the range as MAP_LOCKED does, and leaves the plain
	 * VM_LOCKED the kernel's MAP_LOCKED would (not VM_LOCKONFAULT). */
	if (flags & MAP_LOCKED)
		sys_mlock(p, len);
	else if (flags & MAP_POPULATE)
		populate(p, len, prot, flags);
	return p;

undo_cache:
	if (c->c_refs == 0)
		svc_release(c);
undo:
	free(r.r_map);
	sys_munmap(p, len);
	um_unlock();
	return fail_ptr(err);
}

int um_munmap(void *addr, size_t length)
{
	if (um_init())
		return sys_munmap(addr, length);
	um_lock();
	if (sys_munmap(addr, length) < 0) {
		int e = errno;
		um_unlock();
		return fail(e);
	}
	uintptr_t s = (uintptr_t)addr, e = s + um_pgup(length);
	int err = 0;
	for (size_t i = region_find(s); i < um.nregions && um.regions[i].r_start < e; i++) {
		struct um_region *r = &um.regions[i];
		if (r->r_kind == UM_FILE_SHARED)
			svc_check_errors(r->r_cache);
		if (!err)
			err = wb_take_error(r);
	}
	int werr = -region_remove_range(s, e);
	um_unlock();
	if (err || werr)
		return fail(err ? err : werr);
	return 0;
}

/*
 * The memfd is writable and executable, so the kernel would allow on
 * ummap's VMA what it refuses on the file's own (mprotect's VM_MAYWRITE
 * and VM_MAYEXEC checks): PROT_WRITE on a shared mapping of a file opened
 * read-only or sealed against writes, PROT_EXEC on a noexec mount,
 * MADV_REMOVE.  The address of the first region of [s, e) that refuses
 * prot, or 0: the call is then made up to there and fails with EACCES, as
 * the kernel's walk over the VMAs would.
 */
static uintptr_t first_denied(uintptr_t s, uintptr_t e, int prot)
{
	if ((s & (UM_PAGE - 1)) || s >= e || !(prot & (PROT_WRITE | PROT_EXEC)) ||
	    (prot & ~(PROT_READ | PROT_WRITE | PROT_EXEC | PROT_SEM)))
		return 0; /* EINVAL (an unaligned start, unknown bits,
			   * PROT_GROWSDOWN/UP ummap never maps), or nothing
			   * to do, comes first */
	for (size_t i = region_find(s); i < um.nregions && um.regions[i].r_start < e; i++) {
		const struct um_region *r = &um.regions[i];
		if (((prot & PROT_WRITE) && !r->r_maywrite) || ((prot & PROT_EXEC) && !r->r_mayexec))
			return r->r_start > s ? r->r_start : s;
	}
	return 0;
}

/* The first region of [s, e) on which the kernel's MADV_REMOVE stops, and
 * its errno, in madvise_remove's order: locked or anonymous private (no
 * file: EINVAL), then not shared-writable (private file mappings, shared
 * mappings of a file opened read-only: EACCES). */
static uintptr_t first_refusing_remove(uintptr_t s, uintptr_t e, int *err)
{
	if ((s & (UM_PAGE - 1)) || s >= e)
		return 0;
	for (size_t i = region_find(s); i < um.nregions && um.regions[i].r_start < e; i++) {
		struct um_region *r = &um.regions[i];
		bool shared = r->r_kind == UM_FILE_SHARED || r->r_kind == UM_ANON_SHARED;
		bool anon_private = r->r_kind == UM_ANON_PRIVATE || r->r_kind == UM_ANON_KERNEL;
		if (!shared || r->r_locked || !r->r_maywrite) {
			*err = r->r_locked || anon_private ? EINVAL : EACCES;
			return r->r_start > s ? r->r_start : s;
		}
	}
	return 0;
}

/* Where the kernel's walk over [s, e) meets its first hole (ENOMEM): the
 * regions before it took the new protection.  Gaps between ummap's
 * regions may hold other mappings; msync finds out which are holes. */
static uintptr_t first_hole(uintptr_t s, uintptr_t e)
{
	uintptr_t a = s;
	for (size_t i = region_find(s); i < um.nregions && um.regions[i].r_start < e; i++) {
		struct um_region *r = &um.regions[i];
		if (r->r_start > a && sys_msync((void *)a, r->r_start - a, MS_ASYNC) < 0)
			return a;
		a = r->r_end;
	}
	return e;
}

int um_mprotect(void *addr, size_t length, int prot)
{
	if (um_init())
		return sys_mprotect(addr, length, prot);
	uintptr_t s = (uintptr_t)addr, e = s + um_pgup(length);
	um_lock();
	uintptr_t deny = first_denied(s, e, prot), stop = deny ? deny : e;
	int rc = !deny ? sys_mprotect(addr, length, prot) : deny > s ? sys_mprotect(addr, deny - s, prot) : 0;
	int err = rc < 0 ? errno : deny ? EACCES : 0;
	/* The kernel changes VMA by VMA: a hole (ENOMEM) stops it where the
	 * VMAs before it already have the new protection. */
	uintptr_t done = rc < 0 ? (err == ENOMEM ? first_hole(s, stop) : s) : stop;
	if (done > s && !region_split_at(s) && !region_split_at(done))
		for (size_t i = region_find(s); i < um.nregions && um.regions[i].r_start < done; i++)
			um.regions[i].r_prot = prot;
	um_unlock();
	return err ? fail(err) : 0;
}

int um_msync(void *addr, size_t length, int flags)
{
	if (um_init())
		return sys_msync(addr, length, flags);
	um_lock();
	int rc = sys_msync(addr, length, flags);
	int kerr = rc < 0 ? errno : 0;
	if (kerr == EINVAL || kerr == EBUSY) {
		um_unlock();
		return fail(kerr);
	}
	uintptr_t s = (uintptr_t)addr, e = s + um_pgup(length);
	int err = 0;
	for (size_t i = region_find(s); i < um.nregions && um.regions[i].r_start < e; i++) {
		struct um_region *r = &um.regions[i];
		struct um_cache *c = r->r_cache;
		if (!c || !c->c_store)
			continue;
		uintptr_t a = r->r_start > s ? r->r_start : s, b = r->r_end < e ? r->r_end : e;
		uint64_t off = r->r_off + (a - r->r_start);
		if (r->r_kind == UM_FILE_SHARED && (flags & (MS_SYNC | MS_ASYNC))) {
			int we = -wb_range(c, off, b - a);
			if (!we && (flags & MS_SYNC))
				we = -wb_flush(c, off, b - a);
			/* Like fsync, report what other processes' writebacks of
			 * the file met since this one last looked. */
			if (flags & MS_SYNC)
				svc_check_errors(c);
			if (we && !err)
				err = we;
		}
		if (flags & MS_INVALIDATE)
			cache_drop(c, off, b - a, true);
		int pe = wb_take_error(r);
		if (pe && !err)
			err = pe;
	}
	um_unlock();
	if (err || kerr)
		return fail(err ? err : kerr);
	return 0;
}

/*
 * MADV_FREE on private anonymous memory: the data stays (the kernel drops
 * it only when memory is short), but MADV_PAGEOUT drops the pages not
 * stored into since, as the kernel's reclaim does.  Stores are seen by
 * write-protecting the range (fault.c clears the mark).  Pages ummap
 * swapped out under its budget are marked too, and keep the mark in swap:
 * to the kernel they would be in memory.
 */
static void mark_lazyfree(struct um_region *r, uintptr_t s, uintptr_t e)
{
	struct um_cache *c = r->r_cache;
	for (uintptr_t a = s; a < e; a += UM_PAGE) {
		uint64_t p = (r->r_off + (a - r->r_start)) / UM_PAGE;
		if (p < c->c_wext / UM_PAGE && (c->c_pstate[p] & (PG_PRESENT | PG_SWAPPED)))
			c->c_pstate[p] |= PG_LAZYFREE;
	}
	struct uffdio_writeprotect wp = { .range = { s, e - s }, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
	ioctl(um.uffd, UFFDIO_WRITEPROTECT, &wp);
}

static void discard_lazyfree(struct um_cache *c, uint64_t off, uint64_t len)
{
	for (uint64_t p = off / UM_PAGE; p < (off + len) / UM_PAGE && p < c->c_wext / UM_PAGE; p++)
		if (c->c_pstate[p] & PG_LAZYFREE) /* (in memory or in swap) */
			cache_discard(c, p * UM_PAGE, UM_PAGE);
}

/* What ummap adds to the kernel's madvise on [s, e) of region r. */
static void advise_region(struct um_region *r, uintptr_t s, uintptr_t e, int advice)
{
	struct um_cache *c = r->r_cache;
	uint64_t off = c ? r->r_off + (s - r->r_start) : 0, len = e - s;
	if (c)
		cache_lock(c);
	switch (advice) {
	case MADV_DONTFORK:
	case MADV_DOFORK:
		r->r_dontfork = advice == MADV_DONTFORK;
		break;
	case MADV_NORMAL:
	case MADV_RANDOM:
	case MADV_SEQUENTIAL:
		r->r_advice = advice;
		r->r_ra_win = 0;
		break;
	case MADV_WILLNEED:
		if (c && c->c_store) {
			uint64_t eof = eof_page(r);
			if (off + len > eof)
				len = off < eof ? eof - off : 0;
			if (len && !evict_for(c, len, off, len, false))
				cache_fill(c, off, len);
		}
		break;
	case MADV_REMOVE:
		/* The kernel punched the memfd; the file loses the range too. */
		if (c && c->c_store) {
			cache_drop(c, off, len, false);
			fallocate(c->c_store->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
		} else if (c) {
			cache_discard(c, off, len);
		}
		break;
	case MADV_DONTNEED:
		/* Private anonymous memory reads as zeros after. */
		if (r->r_kind == UM_ANON_PRIVATE)
			cache_discard(c, off, len);
		break;
	case MADV_WIPEONFORK:
	case MADV_KEEPONFORK:
		if (r->r_kind == UM_ANON_PRIVATE)
			r->r_wipeonfork = advice == MADV_WIPEONFORK;
		break;
	case MADV_PAGEOUT:
		if (c && c->c_store)
			cache_drop(c, off, len, true);
		else if (r->r_kind == UM_ANON_PRIVATE)
			discard_lazyfree(c, off, len);
		break;
	case MADV_FREE:
		if (r->r_kind == UM_ANON_PRIVATE)
			mark_lazyfree(r, s, e);
		break;
	case MADV_COLD:
		if (c)
			for (uint64_t p = off / UM_PAGE; p < (off + len) / UM_PAGE && p < c->c_wext / UM_PAGE; p++)
				c->c_pstate[p] &= (uint8_t)~PG_REF;
		break;
	}
}

/*
 * To the kernel, private anonymous memory of ummap's is a shared memfd
 * mapping, where it refuses MADV_FREE, MADV_WIPEONFORK and MADV_KEEPONFORK.
 * The advice it is given there instead (0: none); ummap does the rest
 * (advise_region).
 */
static int kernel_advice(const struct um_region *r, int advice)
{
	if (r->r_kind != UM_ANON_PRIVATE)
		return advice;
	/* MADV_FREE keeps the data until memory is short (ummap swaps it
	 * then); MADV_COLD gives its EINVAL on locked memory. */
	if (advice == MADV_FREE)
		return MADV_COLD;
	return advice == MADV_WIPEONFORK || advice == MADV_KEEPONFORK ? 0 : advice;
}

/*
 * madvise(2) over [s, e) in stretches, each private anonymous region of
 * ummap's given its kernel_advice, the rest the advice itself, walking as
 * the kernel does: it stops at the first error but ENOMEM (a hole), which
 * is returned at the end.  *done: where ummap's own part stops.
 */
static int madvise_by_stretch(uintptr_t s, uintptr_t e, int advice, uintptr_t *done)
{
	int nomem = 0;
	*done = e;
	for (uintptr_t a = s; a < e;) {
		size_t i = region_find(a);
		struct um_region *r = i < um.nregions ? &um.regions[i] : NULL;
		uintptr_t b = e;
		int adv = advice;
		if (r && r->r_start <= a && r->r_kind == UM_ANON_PRIVATE) {
			b = r->r_end < e ? r->r_end : e;
			adv = kernel_advice(r, advice);
		} else {
			for (; i < um.nregions && um.regions[i].r_start < e; i++)
				if (um.regions[i].r_kind == UM_ANON_PRIVATE && um.regions[i].r_start > a) {
					b = um.regions[i].r_start;
					break;
				}
		}
		if (adv && sys_madvise((void *)a, b - a, adv) < 0) {
			if (errno != ENOMEM) {
				*done = a;
				return errno;
			}
			nomem = ENOMEM;
		}
		a = b;
	}
	return nomem;
}

int um_madvise(void *addr, size_t length, int advice)
{
	if (um_init())
		return sys_madvise(addr, length, advice);
	uintptr_t s = (uintptr_t)addr, e = s + um_pgup(length);
	if (advice == MADV_POPULATE_READ || advice == MADV_POPULATE_WRITE) {
		/* Faults go through the fault thread: no lock held.  A page
		 * beyond the end of file ends up poisoned (signal.c), where the
		 * kernel's populate meets SIGBUS: both fail with EFAULT. */
		if (sys_madvise(addr, length, advice) < 0)
			return fail(errno == EHWPOISON ? EFAULT : errno);
		return 0;
	}
	um_lock();
	/* MADV_REMOVE applies VMA by VMA until one refuses it (the kernel's
	 * walk), so ummap does its part on that prefix too, and the refusal
	 * (or a hole's ENOMEM) is returned after. */
	int deny_err = 0;
	uintptr_t deny = advice == MADV_REMOVE ? first_refusing_remove(s, e, &deny_err) : 0;
	if (deny)
		e = deny;
	int kerr = 0;
	bool by_stretch = (advice == MADV_FREE || advice == MADV_WIPEONFORK || advice == MADV_KEEPONFORK) &&
			  !(s & (UM_PAGE - 1)) && s < e;
	uintptr_t done = e;
	if (by_stretch)
		kerr = madvise_by_stretch(s, e, advice, &done);
	else if ((!deny || deny > s) && sys_madvise(addr, deny ? deny - s : length, advice) < 0)
		kerr = errno;
	/* What the walk covered gets ummap's part, then the error: the
	 * kernel's walk goes on past holes (ENOMEM at the end). */
	e = done;
	if (kerr && !by_stretch && kerr != ENOMEM) {
		um_unlock();
		return fail(kerr);
	}
	bool split = advice == MADV_NORMAL || advice == MADV_RANDOM || advice == MADV_SEQUENTIAL ||
		     advice == MADV_DONTFORK || advice == MADV_DOFORK || advice == MADV_WIPEONFORK ||
		     advice == MADV_KEEPONFORK;
	if (!split || (!region_split_at(s) && !region_split_at(e)))
		for (size_t i = region_find(s); i < um.nregions && um.regions[i].r_start < e; i++) {
			struct um_region *r = &um.regions[i];
			advise_region(r, r->r_start > s ? r->r_start : s, r->r_end < e ? r->r_end : e, advice);
		}
	um_unlock();
	return deny ? fail(deny_err) : kerr ? fail(kerr) : 0;
}

int um_ftruncate(int fd, off_t length)
{
	struct stat st;
	if (!um.ready || fstat(fd, &st) < 0)
		return ftruncate(fd, length);
	/* Under the lock throughout, so that the inotify event of this very
	 * call cannot apply the new size first and hide the growth.  The size
	 * before is the file's own (a write(2) may have changed it unseen):
	 * the tail to zero on growth starts there. */
	um_lock();
	struct um_cache *c = cache_by_file(st.st_dev, st.st_ino);
	if (c)
		cache_refresh_size(c);
	int r = ftruncate(fd, length), e = errno;
	if (r == 0 && c && fstat(fd, &st) == 0) {
		if ((uint64_t)st.st_size > c->c_size)
			cache_grow_to(c, (uint64_t)st.st_size);
		else
			cache_set_size(c, (uint64_t)st.st_size);
	}
	um_unlock();
	errno = e;
	return r;
}
