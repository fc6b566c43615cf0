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
#include <sys/mman.h>
#include <sys/stat.h>
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

void *um_mmap(void *addr, size_t length, int prot, int flags, int fd, off_t offset)
{
	if (um_init())
		return sys_mmap(addr, length, prot, flags, fd, offset);
	bool anon = flags & MAP_ANONYMOUS, shared = is_shared(flags);
	struct stat st;
	/* What ummap does not serve goes to the kernel unchanged: private
	 * anonymous memory, huge pages, and anything but a regular file (the
	 * kernel also gives the errno of a bad descriptor). */
	if ((anon && !shared) || (flags & MAP_HUGETLB) ||
	    (!anon && (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)))) {
		void *p = sys_mmap(addr, length, prot, flags, fd, offset);
		if (p != MAP_FAILED && anon) {
			struct um_region r = { .r_start = (uintptr_t)p, .r_end = (uintptr_t)p + um_pgup(length),
					       .r_kind = UM_ANON_PRIVATE, .r_prot = prot, .r_maywrite = true,
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
		.r_kind = anon ? UM_ANON_SHARED : shared ? UM_FILE_SHARED : UM_FILE_PRIVATE,
		.r_prot = prot,
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
		c = cache_new_anon(len, &err);
		r.r_maywrite = true;
	} else {
		int acc = fcntl(fd, F_GETFL) & O_ACCMODE;
		r.r_maywrite = !shared || acc == O_RDWR;
		c = cache_get(fd, &st, shared && acc == O_RDWR, &err);
	}
	if (!c)
		goto undo;
	if ((err = -cache_extend(c, r.r_off + len)))
		goto undo_cache;
	r.r_cache = c;
	r.r_wb_seen = c->c_wb_seq;
	int mflags = MAP_FIXED | (shared ? MAP_SHARED : MAP_PRIVATE) | (flags & MAP_NORESERVE);
	if (sys_mmap(p, len, prot, mflags, c->c_memfd, (off_t)r.r_off) == MAP_FAILED) {
		err = errno;
		goto undo_cache;
	}
	if ((err = -uffd_register(&r)))
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
	for (size_t i = region_find(s); i < um.nregions && um.regions[i].r_start < e; i++)
		if (!err)
			err = wb_take_error(&um.regions[i]);
	int werr = -region_remove_range(s, e);
	um_unlock();
	if (err || werr)
		return fail(err ? err : werr);
	return 0;
}

/*
 * The memfd is writable, so the kernel would allow on ummap's VMA what it
 * refuses on a shared mapping of a file opened read-only (PROT_WRITE,
 * MADV_REMOVE).  The address of the first such region in [s, e), or 0: the
 * call is then made up to there and fails with EACCES, as the kernel's walk
 * over the VMAs would.
 */
static uintptr_t first_readonly_shared(uintptr_t s, uintptr_t e)
{
	if ((s & (UM_PAGE - 1)) || s >= e)
		return 0; /* EINVAL, or nothing to do, comes first */
	for (size_t i = region_find(s); i < um.nregions && um.regions[i].r_start < e; i++)
		if (!um.regions[i].r_maywrite)
			return um.regions[i].r_start > s ? um.regions[i].r_start : s;
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
		if (!shared || r->r_locked || !r->r_maywrite) {
			*err = r->r_locked || r->r_kind == UM_ANON_PRIVATE ? EINVAL : EACCES;
			return r->r_start > s ? r->r_start : s;
		}
	}
	return 0;
}

int um_mprotect(void *addr, size_t length, int prot)
{
	if (um_init())
		return sys_mprotect(addr, length, prot);
	uintptr_t s = (uintptr_t)addr, e = s + um_pgup(length);
	um_lock();
	uintptr_t deny = (prot & PROT_WRITE) ? first_readonly_shared(s, e) : 0;
	int rc = deny ? (deny > s ? sys_mprotect(addr, deny - s, prot) : 0) : sys_mprotect(addr, length, prot);
	int err = rc < 0 ? errno : deny ? EACCES : 0;
	uintptr_t done = deny ? (rc < 0 ? s : deny) : (rc < 0 ? s : e);
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

/* What ummap adds to the kernel's madvise on [s, e) of region r. */
static void advise_region(struct um_region *r, uintptr_t s, uintptr_t e, int advice)
{
	struct um_cache *c = r->r_cache;
	uint64_t off = c ? r->r_off + (s - r->r_start) : 0, len = e - s;
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
		if (c) {
			evict_range(c, off, len, false);
			struct um_store *st = c->c_store ? c->c_store : c->c_swap;
			if (st && st->fd >= 0)
				fallocate(st->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
			for (uint64_t p = off / UM_PAGE; p < (off + len) / UM_PAGE && p < c->c_wext / UM_PAGE; p++)
				c->c_pstate[p] &= (uint8_t)~PG_SWAPPED;
		}
		break;
	case MADV_PAGEOUT:
		if (c && c->c_store)
			evict_range(c, off, len, true);
		break;
	case MADV_COLD:
		if (c)
			for (uint64_t p = off / UM_PAGE; p < (off + len) / UM_PAGE && p < c->c_wext / UM_PAGE; p++)
				c->c_pstate[p] &= (uint8_t)~PG_REF;
		break;
	}
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
	if ((!deny || deny > s) && sys_madvise(addr, deny ? deny - s : length, advice) < 0)
		kerr = errno;
	if (kerr && !(advice == MADV_REMOVE && kerr == ENOMEM)) {
		um_unlock();
		return fail(kerr);
	}
	bool split = advice == MADV_NORMAL || advice == MADV_RANDOM || advice == MADV_SEQUENTIAL ||
		     advice == MADV_DONTFORK || advice == MADV_DOFORK;
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
 * registration of the result: the neighbour loses it too.  Register it
 * again, and unmap its shared pages so that they come back through the
 * fault path write-protected (their write-protect bits went with it).
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
	if (nb->r_wp)
		sys_madvise((void *)nb->r_start, nb->r_end - nb->r_start, MADV_DONTNEED);
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
		um_unlock();
		return fail_ptr(ENOMEM);
	}
	memcpy(moved, &um.regions[first], n * sizeof *moved);
	void *p = sys_mremap(old_address, old_size, new_size, flags, new_address);
	if (p == MAP_FAILED) {
		int e = errno;
		free(moved);
		um_unlock();
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
	if (old_size && !(flags & MREMAP_DONTUNMAP))
		region_remove_range(os, oe);
	region_remove_range(ns, ns + nlen);
	for (size_t i = 0; i < n; i++) {
		struct um_region r = moved[i];
		uintptr_t a = r.r_start < os ? os : r.r_start;
		r.r_off += a - r.r_start;
		r.r_start = ns + (a - os);
		r.r_end = ns + ((r.r_end > oe ? oe : r.r_end) - os);
		if (i == n - 1 || r.r_end > ns + nlen)
			r.r_end = ns + nlen;
		if (r.r_start < r.r_end) {
			r.r_ra_win = 0;
			/* A file's cache grows with its mappings; a shared
			 * anonymous object keeps its size, as shmem does, so
			 * the grown part raises SIGBUS. */
			if (r.r_cache && r.r_cache->c_store)
				cache_extend(r.r_cache, r.r_off + (r.r_end - r.r_start));
			/* Without UFFD_FEATURE_EVENT_REMAP the kernel drops the
			 * registration (and write-protect bits) of moved pages:
			 * register again and unmap shared pages so they come back
			 * through the fault path write-protected. */
			uffd_register(&r);
			if (ns != os && r.r_wp)
				sys_madvise((void *)r.r_start, r.r_end - r.r_start, MADV_DONTNEED);
			region_insert(&r);
		}
		if (moved[i].r_cache)
			cache_put(moved[i].r_cache);
		mapping_put(moved[i].r_map);
	}
	if (ns != os && nlen) {
		size_t lo = region_find(ns), hi = region_find(ns + nlen);
		if (lo > 0 && lo < um.nregions && um.regions[lo].r_start == ns)
			reregister_merged(&um.regions[lo], &um.regions[lo - 1]);
		if (hi > 0 && hi < um.nregions && um.regions[hi - 1].r_end == ns + nlen)
			reregister_merged(&um.regions[hi - 1], &um.regions[hi]);
	}
	free(moved);
	um_unlock();
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
