/*
 * fault.c - the fault thread: serves every userfaultfd event of the process.
 *
 * A fault on a page of a ummap region arrives as one of:
 *   MISSING  the page is not in the cache's memfd: fill the fault unit (and
 *            the readahead window on a sequential scan) from the store, then
 *            map it;
 *   MINOR    the page is in the memfd but not in this page table: map it;
 *   WP       first write to a clean, write-protected page: mark it dirty
 *            and lift the protection.
 * Mapping is UFFDIO_CONTINUE over runs of present pages, write-protected
 * (UFFDIO_CONTINUE_MODE_WP) for clean pages of shared file regions, so that
 * the first store to them is seen.  I2, kept here: a page is marked DIRTY
 * before it is mapped writable (prepare_page, on_wp_fault), so a store
 * never reaches a page writeback takes as clean.  A write-protect fault on
 * a page evicted meanwhile is served as a write fault on a missing page
 * (the kernel's marker would make it fault again otherwise).  A page wholly beyond the end of
 * file raises SIGBUS in the faulting thread with si_code BUS_ADRERR and the
 * exact faulting address, queued to that thread with rt_tgsigqueueinfo; a
 * read error does the same, or asks the application's error handler.
 *
 * One thread serves all faults, so faults taken inside system calls (a
 * mapped buffer passed to read(2)) wait for it like user-mode ones.  It also
 * watches the mapped files with inotify, so a file shrunk by another
 * descriptor loses its pages beyond the new end.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

/* Count n in field f of the process's and region r's mapping's counters. */
#define COUNT(r, f, n) ((r)->r_map->m_st.f += (n), um.st.f += (n))

static void wake(uintptr_t page)
{
	struct uffdio_range r = { .start = page, .len = UM_PAGE };
	ioctl(um.uffd, UFFDIO_WAKE, &r);
}

/*
 * SIGBUS for the thread blocked on addr.  The queued signal normally wakes
 * it; the explicit wake covers a thread sleeping where signals do not wake
 * it: its retried access finds the signal pending (a user-mode access runs
 * the handler first; a kernel-mode one fails with EFAULT).
 */
static void sigbus(pid_t tid, uintptr_t addr)
{
	um_signal_sigbus(tid, addr);
	wake(um_pgdown(addr));
}

/* UFFDIO_CONTINUE over [start, end), skipping pages already mapped (a racing
 * fault on the same unit mapped them first). */
static int map_run(uintptr_t start, uintptr_t end, uint64_t mode)
{
	int again = 0;
	while (start < end) {
		struct uffdio_continue uc = { .range = { start, end - start }, .mode = mode };
		if (ioctl(um.uffd, UFFDIO_CONTINUE, &uc) == 0)
			return 0;
		int e = errno;
		if (uc.mapped > 0)
			start += (uintptr_t)uc.mapped;
		if (e == EEXIST)
			start += UM_PAGE;
		else if (e != EAGAIN || ++again > 100)
			return -e;
	}
	return 0;
}

/* Mark page p of cache c dirty (I2), keeping the count in step. */
static void set_dirty(struct um_cache *c, uint64_t p)
{
	if (!(c->c_pstate[p] & PG_DIRTY)) {
		c->c_pstate[p] |= PG_DIRTY;
		c->c_sh->dirty += UM_PAGE;
	}
}

/*
 * Page p of region r is about to be mapped (`written`: by a write fault):
 * mark it dirty if it will be writable without a write-protect fault, and
 * return the UFFDIO_CONTINUE mode it goes in with: write-protected while
 * clean in a region that tracks writes.
 */
static uint64_t prepare_page(struct um_region *r, uint64_t p, bool written)
{
	struct um_cache *c = r->r_cache;
	if (r->r_kind == UM_FILE_SHARED && (written || (!um.wp && r->r_maywrite)))
		set_dirty(c, p);
	if (r->r_kind == UM_ANON_PRIVATE)
		/* A store to a page given MADV_FREE must be seen (it keeps the
		 * page): such pages go in write-protected. */
		return (c->c_pstate[p] & PG_LAZYFREE) ? UFFDIO_CONTINUE_MODE_WP : 0;
	return (r->r_wp && !(c->c_pstate[p] & PG_DIRTY)) ? UFFDIO_CONTINUE_MODE_WP : 0;
}

/*
 * Map the present pages of region r between addresses [start, end), in
 * runs of one mode.  `wpage` (the page written by a write fault, or 0) goes
 * in writable and dirty.  A run the kernel refuses (the region map and its
 * VMAs disagree: CONTINUE must stay within one registered VMA) is retried
 * page by page, so that a mismatch costs speed, never a fault that is
 * served forever without being resolved.
 */
static void map_pages(struct um_region *r, uintptr_t start, uintptr_t end, uintptr_t wpage)
{
	struct um_cache *c = r->r_cache;
	uintptr_t a = start;
	while (a < end) {
		uint64_t p = (r->r_off + (a - r->r_start)) / UM_PAGE;
		if (!(c->c_pstate[p] & PG_PRESENT)) {
			a += UM_PAGE;
			continue;
		}
		uint64_t mode = prepare_page(r, p, a == wpage);
		uintptr_t b = a + UM_PAGE;
		while (b < end && b != wpage) {
			uint64_t q = (r->r_off + (b - r->r_start)) / UM_PAGE;
			if (!(c->c_pstate[q] & PG_PRESENT) || prepare_page(r, q, false) != mode)
				break;
			b += UM_PAGE;
		}
		if (map_run(a, b, mode) < 0 && b - a > UM_PAGE)
			for (uintptr_t x = a; x < b; x += UM_PAGE)
				map_run(x, x + UM_PAGE, mode);
		a = b;
	}
}

/*
 * First store to a clean page.  A run of first stores (a sequential writer)
 * gets a window of pages made writable and dirty at once, doubling up to
 * UM_WP_WINDOW pages, as the kernel dirties a whole large folio; a lone store dirties
 * one page, so random writers do not write back more than they wrote.
 */
static void on_wp_fault(struct um_region *r, uintptr_t page)
{
	struct um_cache *c = r->r_cache;
	uint64_t p0 = (r->r_off + (page - r->r_start)) / UM_PAGE;
	c->c_pstate[p0] |= PG_REF; /* (a hot page stays mapped: faults alone tell) */
	/* (Never 0: a window of no page would lift no protection, and the
	 * retried store would fault here again, forever.) */
	uint64_t win = page == r->r_wp_next && r->r_wp_win ? r->r_wp_win * 2 : 1;
	if (win > UM_WP_WINDOW)
		win = UM_WP_WINDOW;
	uintptr_t end = page + win * UM_PAGE;
	if (end > r->r_end)
		end = r->r_end;
	if (r->r_off + (end - r->r_start) > c->c_wext)
		end = r->r_start + (c->c_wext - r->r_off);
	for (uintptr_t a = page; a < end; a += UM_PAGE) {
		uint64_t p = (r->r_off + (a - r->r_start)) / UM_PAGE;
		if (!(c->c_pstate[p] & PG_PRESENT)) {
			end = a; /* not mapped here: the run stops */
			break;
		}
		set_dirty(c, p);
	}
	r->r_wp_win = (end - page) / UM_PAGE;
	r->r_wp_next = end;
	COUNT(r, wp_faults, 1);
	struct uffdio_writeprotect wp = { .range = { page, end - page }, .mode = 0 };
	if (ioctl(um.uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		wake(page);
}

/* Thread tid's last fault unit, which eviction keeps while the thread's
 * next fault is served: the budget may be exceeded by one unit per thread. */
static void note_recent(pid_t tid, struct um_cache *c, uint64_t off, uint64_t len)
{
	struct um_span *slot = NULL;
	for (int i = 0; i < UM_RECENT && !slot; i++)
		if (um.recent[i].tid == tid)
			slot = &um.recent[i];
	if (!slot)
		slot = &um.recent[um.recent_next++ % UM_RECENT];
	*slot = (struct um_span){ .c = c, .off = off, .len = len, .tid = tid };
}

static uint64_t absent_bytes(struct um_cache *c, uint64_t off, uint64_t end)
{
	uint64_t n = 0;
	for (uint64_t p = off / UM_PAGE; p < end / UM_PAGE; p++)
		n += !(c->c_pstate[p] & PG_PRESENT);
	return n * UM_PAGE;
}

/* The faulting page could not be read: SIGBUS, or what the handler says.
 * Returns true when the page is now present. */
static bool read_error(struct um_cache *c, uint64_t off, uintptr_t addr, pid_t tid, int err)
{
	for (int tries = 0; tries < 1000; tries++) {
		enum um_error_action act = UM_ERROR_SIGBUS;
		if (um.err_handler && c->c_store) /* (a swap read error: SIGBUS) */
			act = um.err_handler((void *)addr, c->c_store->fd, (off_t)off, err, um.err_arg);
		if (act == UM_ERROR_RETRY) {
			err = -cache_fill(c, off, UM_PAGE);
			if (!err)
				return true;
			continue;
		}
		if (act == UM_ERROR_ZERO) {
			cache_zero(c, off, UM_PAGE);
			c->c_pstate[off / UM_PAGE] = PG_PRESENT | PG_REF | PG_ZERO;
			c->c_sh->resident += UM_PAGE;
			return true;
		}
		break;
	}
	sigbus(tid, addr);
	return false;
}

static void on_fault(const struct uffd_msg *m)
{
	uintptr_t addr = (uintptr_t)m->arg.pagefault.address;
	uintptr_t page = um_pgdown(addr);
	uint64_t flags = m->arg.pagefault.flags;
	pid_t tid = (pid_t)m->arg.pagefault.feat.ptid;
	struct um_region *r = region_at(addr);

	um.st.faults++;
	if (!r || !r->r_cache) {
		/* Unmapped or remapped since: the retried access finds out. */
		wake(page);
		return;
	}
	struct um_cache *c = r->r_cache;
	cache_lock(c);
	r->r_map->m_st.faults++;
	if ((flags & UFFD_PAGEFAULT_FLAG_WP) && (r->r_kind == UM_ANON_PRIVATE || r->r_kind == UM_ANON_SHARED)) {
		/* A store to anonymous memory write-protected while it was
		 * written to swap (writeback.c) or a fork child copied it
		 * (config.c): done once the lock is ours; or to a page given
		 * MADV_FREE, which is kept from now on. */
		uint64_t p = (r->r_off + (page - r->r_start)) / UM_PAGE;
		if (p < c->c_wext / UM_PAGE)
			c->c_pstate[p] &= (uint8_t)~PG_LAZYFREE;
		struct uffdio_writeprotect wp = { .range = { page, UM_PAGE }, .mode = 0 };
		if (ioctl(um.uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
			wake(page);
		return;
	}
	uint64_t off = r->r_off + (page - r->r_start);
	if (flags & UFFD_PAGEFAULT_FLAG_WP) {
		if (off < c->c_wext && (c->c_pstate[off / UM_PAGE] & PG_PRESENT)) {
			on_wp_fault(r, page);
			return;
		}
		/* Evicted between the store's fault and now: the punch left
		 * the kernel's write-protect marker, on which the retried
		 * store would fault here again.  Served as a write fault on a
		 * missing page instead: filled, dirtied, mapped writable
		 * (UFFDIO_CONTINUE replaces the marker). */
		flags |= UFFD_PAGEFAULT_FLAG_WRITE;
	}
	uint64_t rend = r->r_off + (r->r_end - r->r_start);
	if (c->c_store && off >= um_pgup(c->c_size)) {
		cache_refresh_size(c);
		if (off >= um_pgup(c->c_size)) {
			sigbus(tid, addr);
			return;
		}
	}
	if (off >= c->c_wext) {
		/* Within the file but the cache could not grow to hold it. */
		sigbus(tid, addr);
		return;
	}
	/* The fault unit, within the region and the file. */
	uint64_t fs = r->r_fault_size ? r->r_fault_size : um.cfg.fault_size;
	uint64_t s = off & ~(fs - 1), e = s + fs;
	if (s < r->r_off)
		s = r->r_off;
	/* Readahead: a fault where the last one ended continues a scan. */
	uint64_t ra_max = r->r_ra_max != UINT64_MAX ? r->r_ra_max : um.cfg.readahead_max;
	/* At most a quarter of the budget, so that readahead takes the room
	 * clean pages make and leaves dirty ones to writeback. */
	uint64_t budget = c->c_sh->budget && c->c_sh->budget < um.cfg.budget ? c->c_sh->budget : um.cfg.budget;
	if (ra_max > budget / 4)
		ra_max = um_pgdown(budget / 4);
	if (r->r_advice == MADV_RANDOM)
		ra_max = 0;
	if (ra_max && (s == r->r_ra_next || r->r_advice == MADV_SEQUENTIAL)) {
		r->r_ra_win = r->r_ra_win ? r->r_ra_win * 2 : fs;
		if (r->r_advice == MADV_SEQUENTIAL || r->r_ra_win > ra_max)
			r->r_ra_win = ra_max;
	} else {
		r->r_ra_win = 0;
	}
	uint64_t unit_end = e;
	e += r->r_ra_win;
	if (e > rend)
		e = rend;
	if (unit_end > e)
		unit_end = e;
	if (c->c_store && e > um_pgup(c->c_size))
		e = um_pgup(c->c_size);
	if (e > c->c_wext)
		e = c->c_wext;
	if (unit_end > e)
		unit_end = e;
	r->r_ra_next = e;

	uint64_t need = absent_bytes(c, s, e);
	if (need) {
		if (evict_for(c, need, s, e - s, true) < 0 && e > unit_end) {
			/* No room for the readahead: bring in the unit only. */
			e = unit_end;
			need = absent_bytes(c, s, e);
			evict_for(c, need, s, e - s, true);
		}
		COUNT(r, misses, 1);
		if (e > unit_end)
			COUNT(r, readahead_bytes, e - unit_end);
		uint64_t read_before = c->c_st.bytes_read;
		/* A failed read of the unit matters only for the faulting
		 * page: try that alone. */
		int err = cache_fill(c, s, e - s);
		if (err && !(c->c_pstate[off / UM_PAGE] & PG_PRESENT))
			err = cache_fill(c, off, UM_PAGE);
		else
			err = 0;
		r->r_map->m_st.bytes_read += c->c_st.bytes_read - read_before;
		if (err && !read_error(c, off, addr, tid, -err))
			return;
	} else {
		COUNT(r, hits, 1);
	}
	c->c_pstate[off / UM_PAGE] |= PG_REF;
	if ((flags & UFFD_PAGEFAULT_FLAG_WRITE) && r->r_kind == UM_ANON_PRIVATE)
		c->c_pstate[off / UM_PAGE] &= (uint8_t)~PG_LAZYFREE;
	bool write = (flags & UFFD_PAGEFAULT_FLAG_WRITE) && r->r_kind == UM_FILE_SHARED;
	map_pages(r, r->r_start + (s - r->r_off), r->r_start + (e - r->r_off), write ? page : 0);
	note_recent(tid, c, s, unit_end > s ? unit_end - s : UM_PAGE);
	wake(page);
}

static void on_inotify(void)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	ssize_t n;
	while ((n = read(um.inotify, buf, sizeof buf)) > 0) {
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			um_lock();
			struct um_cache *c = cache_by_wd(ev->wd);
			if (c)
				cache_refresh_size(c);
			um_unlock();
			p += sizeof *ev + ev->len;
		}
	}
}

static void *fault_thread(void *arg)
{
	struct uffd_msg msgs[32];
	struct pollfd pfd[2] = { { .fd = um.uffd, .events = POLLIN },
				 { .fd = um.inotify, .events = POLLIN } };
	for (;;) {
		if (poll(pfd, 2, -1) < 0)
			continue;
		if (pfd[1].revents & POLLIN)
			on_inotify();
		if (!(pfd[0].revents & POLLIN))
			continue;
		um_signal_batch();
		ssize_t n = read(um.uffd, msgs, sizeof msgs);
		if (n <= 0)
			continue;
		um_lock();
		for (size_t i = 0; i < (size_t)n / sizeof *msgs; i++)
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
				on_fault(&msgs[i]);
		um_unlock();
	}
	return arg;
}

int fault_start(void)
{
	return um_thread_start(&um.fault_thread, fault_thread);
}
