/*
 * fork.c - what ummap does around fork(): the parent's private memory
 * copied for the child, and the child's engine of its own.
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

/*
 * fork(): the child has none of the engine's threads, its copies of the
 * VMAs lost their userfaultfd registration, and the inherited userfaultfd
 * still acts on the parent's address space.  The child starts an engine of
 * its own for its file and shared anonymous mappings (child_restart):
 * their caches are shared with the parent through the service, like any
 * two processes' (fork_prepare hands shared anonymous memory to it).
 * Without the service, shared anonymous memory becomes the child's kernel
 * memory (fork_prepare brought every page back into the memfd) and the
 * child's file mappings are replaced by inaccessible memory (an access raises
 * SIGSEGV instead of reading holes of the cache as zeros and corrupting the
 * parent's pages) and its um_* calls are the kernel's.  vfork and
 * posix_spawn run no fork handlers and share the parent's memory, so they
 * are unaffected.
 */
/*
 * Private anonymous memory is a memfd mapped shared, which the child would
 * share: the child copies it into kernel anonymous memory of its own
 * (fork_child), while the parent's private regions are write-protected
 * (its other threads' stores wait) and the parent waits for the copy.
 */
static void protect_private(bool on)
{
	for (size_t i = 0; i < um.nregions; i++) {
		struct um_region *r = &um.regions[i];
		if (r->r_kind != UM_ANON_PRIVATE)
			continue;
		struct uffdio_writeprotect wp = {
			.range = { r->r_start, r->r_end - r->r_start },
			.mode = on ? UFFDIO_WRITEPROTECT_MODE_WP : 0,
		};
		ioctl(um.uffd, UFFDIO_WRITEPROTECT, &wp);
		if (!on)
			uffd_reprotect(r); /* pages given MADV_FREE stay protected */
		if (on && um.fork_pipe[0] < 0 && pipe2(um.fork_pipe, O_CLOEXEC) < 0)
			um.fork_pipe[0] = um.fork_pipe[1] = -1;
	}
}

/* The child's copy of private region r, with what the parent has in
 * memory or in swap; wiped on fork: zeros.  If no memory can be had, the
 * range is fenced off (sharing the parent's pages would corrupt them). */
static void private_copy(struct um_region *r)
{
	size_t len = r->r_end - r->r_start;
	struct um_cache *c = r->r_cache;
	uint8_t *n = sys_mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (n == MAP_FAILED) {
		sys_mmap((void *)r->r_start, len, PROT_NONE, MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
			 -1, 0);
		return;
	}
	uint64_t p0 = r->r_off / UM_PAGE, np = len / UM_PAGE;
	for (uint64_t k = 0; !r->r_wipeonfork && k < np;) {
		uint8_t kind = c->c_pstate[p0 + k] & (PG_PRESENT | PG_SWAPPED);
		uint64_t j = run_end(c->c_pstate + p0, k, np, PG_PRESENT | PG_SWAPPED, kind);
		uint64_t off = (p0 + k) * UM_PAGE, blen = (j - k) * UM_PAGE;
		if (kind & PG_PRESENT)
			cache_io(c, false, n + k * UM_PAGE, blen, off);
		else if (kind)
			c->c_swap->ops->read(c->c_swap, n + k * UM_PAGE, blen, off);
		k = j;
	}
	sys_mprotect(n, len, r->r_prot);
	sys_mremap(n, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)r->r_start);
	if (r->r_locked)
		sys_mlock((void *)r->r_start, len);
}

/*
 * Shared anonymous memory is shared with fork children like a file's
 * cache: through the service (so that swap-out write-protects it in every
 * process), with one swap store, opened now so that the child has it.
 * False if it cannot be.
 */
static bool share_anon(struct um_cache *c)
{
	int err;
	if (c->c_shared)
		return true;
	if (!um.wp || (!c->c_swap && !(c->c_swap = store_swap_open(&err))))
		return false;
	return svc_open(c, c->c_statefd) == 0;
}

/* Before fork(): shared anonymous memory is shared with the child, or, if
 * it cannot be, its swapped pages come back (the child then maps it as
 * kernel memory, finding every page in the memfd) and none is swapped out
 * from now on; private memory waits for the child's copy. */
void fork_prepare(void)
{
	um_lock(); /* (the child releases it: fork_child) */
	if (!um.ready)
		return;
	protect_private(true);
	for (struct um_cache *c = um.caches; c; c = c->c_next) {
		if (c->c_store || c->c_private || share_anon(c))
			continue;
		c->c_fork_pinned = true;
		if (!c->c_swap)
			continue;
		/* In runs, one read each; present pages in between are
		 * skipped by cache_fill. */
		uint64_t n = c->c_wext / UM_PAGE;
		for (uint64_t p = 0; p < n;) {
			if (!(c->c_pstate[p] & PG_SWAPPED)) {
				p++;
				continue;
			}
			uint64_t q = run_end(c->c_pstate, p, n, PG_SWAPPED, PG_SWAPPED);
			cache_fill(c, p * UM_PAGE, (q - p) * UM_PAGE);
			p = q;
		}
	}
	/* The child starts with no cache lock; release them before it is made. */
	cache_unlock_all();
}
void fork_parent(void)
{
	if (um.fork_pipe[0] >= 0) {
		/* One byte from the child, or end of file if there is none. */
		char b;
		close(um.fork_pipe[1]);
		while (read(um.fork_pipe[0], &b, 1) < 0 && errno == EINTR)
			;
		close(um.fork_pipe[0]);
		um.fork_pipe[0] = um.fork_pipe[1] = -1;
	}
	protect_private(false);
	um_unlock();
}

/* The child's copies of the engine's descriptors act on the parent's
 * address space (userfaultfd) or share the parent's queues (inotify,
 * eventfd): close them. */
static void child_close_engine_fds(void)
{
	int *fds[] = { &um.uffd, &um.inotify, &um.wake_fd };
	for (size_t i = 0; i < sizeof fds / sizeof *fds; i++) {
		if (*fds[i] >= 0)
			close(*fds[i]);
		*fds[i] = -1;
	}
}

/*
 * The child's own engine for its file and shared anonymous mappings: a
 * userfaultfd of its own with the regions registered again, its own fault
 * and writeback threads, and the service told about it, so that the
 * parent's writeback and swap-out write-protect the child's mappings too.
 * Only caches shared through the service can be: 0, or -errno (the child
 * then fences those mappings, fork_child).
 */
static int child_restart(void)
{
	int err = 0;
	uint64_t got;
	um.svc_tried = false; /* a connection of the child's own */
	um.uffd = sys_uffd_open(&err);
	if (um.uffd < 0)
		return -err;
	int e = sys_uffd_api(um.uffd, um.features & UM_WANT, &got);
	if (e)
		return e;
	um.inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (um.inotify < 0)
		return -errno;
	for (struct um_cache *c = um.caches; c; c = c->c_next) {
		c->c_wd = -1;
		if (!c->c_shared || svc_open(c, c->c_store ? c->c_store->fd : c->c_statefd))
			return -ENOTCONN;
		if (c->c_store)
			cache_watch(c);
	}
	for (size_t i = 0; i < um.nregions; i++) {
		struct um_region *r = &um.regions[i];
		if (!r->r_cache)
			continue;
		/* A shared mapping gets its pages from the cache as it faults,
		 * each mapped the way the page's state says (I2). */
		if (r->r_kind != UM_FILE_PRIVATE)
			sys_madvise((void *)r->r_start, r->r_end - r->r_start, MADV_DONTNEED);
		if ((e = uffd_register(r)))
			return e;
		r->r_cache->c_maps_changed = true;
	}
	memset(um.recent, 0, sizeof um.recent);
	if ((e = fault_start()) || (e = wb_start()))
		return e;
	um.ready = true;
	um.init_err = 0;
	return 0;
}

void fork_child(void)
{
	if (!um.ready) {
		/* Not started, or a child's engine that could not start: the
		 * um_* calls stay the kernel's.  (The lock fork_prepare took
		 * is released by the child's only thread, the one that took
		 * it: re-initializing a held mutex loses its history for
		 * ThreadSanitizer, which then reports races under it.) */
		pthread_mutex_unlock(&um.lock);
		return;
	}
	for (size_t i = 0; i < um.nregions; i++) {
		struct um_region *r = &um.regions[i];
		/* (MADV_DONTFORK ranges are not in the child at all.) */
		if (!r->r_dontfork && r->r_kind == UM_ANON_PRIVATE)
			private_copy(r);
	}
	if (um.fork_pipe[1] >= 0) {
		if (write(um.fork_pipe[1], "c", 1) < 0) {
			/* The parent then reads end of file when we exit. */
		}
		close(um.fork_pipe[0]);
		close(um.fork_pipe[1]);
		um.fork_pipe[0] = um.fork_pipe[1] = -1;
	}
	svc_fork_child();
	child_close_engine_fds();
	pthread_mutex_unlock(&um.lock); /* (as above) */
	um.nheld = 0;
	/* Forget the MADV_DONTFORK ranges.  The child's private memory is its
	 * own now, and shared anonymous memory that could not be shared the
	 * kernel's (every page is in the memfd: fork_prepare brought back what
	 * was swapped out; the kernel fills holes with zeros, as ummap would):
	 * the parent's objects for them are not kept alive by it. */
	size_t n = 0;
	for (size_t i = 0; i < um.nregions; i++) {
		struct um_region *r = &um.regions[i];
		bool anon = r->r_kind == UM_ANON_PRIVATE || (r->r_kind == UM_ANON_SHARED && !r->r_cache->c_shared);
		if ((r->r_dontfork || anon) && r->r_cache) {
			r->r_cache->c_refs--;
			r->r_cache->c_locked -= r->r_locked;
			r->r_cache = NULL;
		}
		if (r->r_dontfork) {
			mapping_put(r->r_map);
			continue;
		}
		if (anon)
			r->r_kind = UM_ANON_KERNEL;
		um.regions[n++] = *r;
	}
	um.nregions = n;
	for (struct um_cache *c = um.caches, *next; c; c = next) {
		next = c->c_next;
		c->c_wd = -1; /* the parent's watches */
		if (c->c_refs == 0)
			cache_free(c); /* the child's copy only: nothing is punched */
	}
	if (um.wp && child_restart() == 0)
		return;
	/* No engine: file mappings are replaced by inaccessible memory (an
	 * access raises SIGSEGV instead of reading holes of the cache as
	 * zeros and corrupting the parent's pages), and the um_* calls are
	 * the kernel's. */
	for (size_t i = 0; i < um.nregions; i++) {
		struct um_region *r = &um.regions[i];
		if (r->r_cache) /* (shared anonymous memory may be in swap) */
			sys_mmap((void *)r->r_start, r->r_end - r->r_start, PROT_NONE,
				 MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	}
	child_close_engine_fds();
	svc_fork_child();
	um.ready = false;
	um.init_err = ECHILD;
}
