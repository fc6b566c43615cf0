/*
 * mman.c - um_mmap, um_munmap, um_msync, um_mprotect, um_madvise, um_mremap
 * and um_ftruncate: the kernel's calls, on ummap's caches.
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
#include <stdarg.h>
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

/*
 * Map region r's cache (offset off) over r's range, registered before any
 * access can reach it: mapped PROT_NONE, registered, then given r_prot.  An
 * access in between raises SIGSEGV, as before the call returns; shmem
 * itself never serves it (that would put a page of zeros in the cache, or
 * take a store unseen).  mflags: MAP_SHARED or MAP_PRIVATE and extras.
 */
static int map_registered(struct um_region *r, int mflags, uint64_t off)
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
	int probe_flags = flags & ~(MAP_POPULATE | MAP_LOCKED | MAP_NONBLOCK);
	int err = 0;
	um_lock();
	void *p = sys_mmap(addr, length, prot, probe_flags, fd, offset);
	if (p == MAP_FAILED) {
		err = errno;
		um_unlock();
		return fail_ptr(err);
	}
	uint64_t len = um_pgup(length);
	/* The kernel replaced whatever was there (MAP_FIXED). */
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
		c = cache_get(fd, &st, shared && (fcntl(fd, F_GETFL) & O_ACCMODE) == O_RDWR, &err);
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

	/* mlock populates the range as MAP_LOCKED does, and leaves the plain
	 * VM_LOCKED the kernel's MAP_LOCKED would (not VM_LOCKONFAULT). */
	if (flags & MAP_LOCKED)
		sys_mlock(p, len);
	else if (flags & MAP_POPULATE)
		populate(p, len, prot, flags);
	return p;

undo_cache:
	if (c->c_refs == 0)
		cache_free(c);
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
			evict_range(c, off, b - a, true);
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
 * write-protecting the range (fault.c clears the mark).
 */
static void mark_lazyfree(struct um_region *r, uintptr_t s, uintptr_t e)
{
	struct um_cache *c = r->r_cache;
	for (uintptr_t a = s; a < e; a += UM_PAGE) {
		uint64_t p = (r->r_off + (a - r->r_start)) / UM_PAGE;
		if (p < c->c_wext / UM_PAGE && (c->c_pstate[p] & PG_PRESENT))
			c->c_pstate[p] |= PG_LAZYFREE;
	}
	struct uffdio_writeprotect wp = { .range = { s, e - s }, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
	ioctl(um.uffd, UFFDIO_WRITEPROTECT, &wp);
}

static void discard_lazyfree(struct um_cache *c, uint64_t off, uint64_t len)
{
	for (uint64_t p = off / UM_PAGE; p < (off + len) / UM_PAGE && p < c->c_wext / UM_PAGE; p++)
		if ((c->c_pstate[p] & (PG_PRESENT | PG_LAZYFREE)) == (PG_PRESENT | PG_LAZYFREE))
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
			evict_range(c, off, len, false);
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
			evict_range(c, off, len, true);
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

/*
 * The kernel places a moved range by copying its VMA, which merges with a
 * neighbour at the destination when they continue each other (same memfd,
 * adjacent offsets, same flags, still registered), and only then drops the
 * registration of the result: the neighbour loses it too.  The moved range
 * is fenced (PROT_NONE) meanwhile, so only a PROT_NONE neighbour can merge
 * with it, which nothing can touch until it is registered again here, and
 * its write protection restored.
 */
static void reregister_merged(struct um_region *moved, struct um_region *nb)
{
	if (!nb || !nb->r_cache || nb->r_cache != moved->r_cache)
		return;
	bool before = nb->r_end == moved->r_start && nb->r_off + (nb->r_end - nb->r_start) == moved->r_off;
	bool after = nb->r_start == moved->r_end && moved->r_off + (moved->r_end - moved->r_start) == nb->r_off;
	if (!before && !after)
		return;
	uffd_register(nb);
	uffd_reprotect(nb);
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
		c->c_pstate[q] = PG_PRESENT | PG_REF;
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

static void *remap_locked(void *old_address, size_t old_size, size_t new_size, int flags, void *new_address);

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
			e = remap_locked((void *)a, b - a, b - a, flags, (void *)(ns + (a - os))) == MAP_FAILED ? errno : 0;
		else
			e = -move_foreign(a, b, flags, ns + (a - os));
		if (e)
			return fail_ptr(e); /* (the kernel too may have moved some) */
		a = b;
	}
	return (void *)ns;
}

/* mremap(2) under um.lock: MAP_FAILED with errno, or the new address. */
static void *remap_locked(void *old_address, size_t old_size, size_t new_size, int flags, void *new_address)
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
	bool may_move = (flags & (MREMAP_MAYMOVE | MREMAP_FIXED)) || !old_size;
	bool fenced = n && may_move && one_vma(moved, n, os, oe);
	if (fenced)
		fence(moved, n, os, oe, true);
	void *p = sys_mremap(old_address, old_size, new_size, flags, new_address);
	if (p == MAP_FAILED) {
		int e = errno;
		if (fenced)
			fence(moved, n, os, oe, false);
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
		um.remapping = true; /* the pages move with the regions */
		region_remove_range(os, oe);
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
			cache_put(c);
		mapping_put(moved[i].r_map);
	}
	if (flags & MREMAP_DONTUNMAP)
		dontunmap_private(moved, n, os, ns);
	if (ns != os && nlen) {
		size_t lo = region_find(ns), hi = region_find(ns + nlen);
		if (lo > 0 && lo < um.nregions && um.regions[lo].r_start == ns)
			reregister_merged(&um.regions[lo], &um.regions[lo - 1]);
		if (hi > 0 && hi < um.nregions && um.regions[hi - 1].r_end == ns + nlen)
			reregister_merged(&um.regions[hi - 1], &um.regions[hi]);
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
	void *p = remap_locked(old_address, old_size, new_size, flags, new_address);
	int e = errno;
	um_unlock();
	errno = e;
	return p;
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
