/*
 * config.c - starting the engine, settings, statistics, feature detection.
 *
 * The engine starts on the first um_* call: the userfaultfd handshake (once
 * to learn what the kernel offers, once to ask for it), the inotify
 * instance, the fault thread and the writeback thread, and an exit handler
 * that writes every dirty page back when the process exits normally.  If
 * it cannot start (no userfaultfd permission, a kernel without MINOR faults
 * on shared memory), um_mmap says why once on stderr and the um_* calls are
 * served by the kernel's own.
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

struct um_engine um = { .lock = PTHREAD_MUTEX_INITIALIZER, .uffd = -1, .inotify = -1, .wake_fd = -1,
			 .svc = -1, .fork_pipe = { -1, -1 } };

static pthread_once_t once = PTHREAD_ONCE_INIT;

void um_lock(void) { pthread_mutex_lock(&um.lock); }
void um_unlock(void)
{
	cache_unlock_all();
	pthread_mutex_unlock(&um.lock);
}

/* "512M", "2G", "4096", "64k": bytes, or 0 if malformed. */
/*
 * An engine thread, with every signal blocked: an application's handler
 * run there could call um_* (the thread may hold um.lock) or touch a
 * mapping (the fault thread would wait for itself).
 */
int um_thread_start(pthread_t *t, void *(*fn)(void *))
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int e = pthread_create(t, NULL, fn, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -e;
}

uint64_t um_parse_size(const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return 0;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	case 't': case 'T': v <<= 40; end++; break;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	return *end ? 0 : v;
}

static bool valid_fault_size(uint64_t v)
{
	return v >= UM_PAGE && v <= (2UL << 20) && !(v & (v - 1));
}

static void env_size(const char *name, uint64_t *dst, bool (*ok)(uint64_t))
{
	const char *s = getenv(name);
	if (!s)
		return;
	uint64_t v = um_parse_size(s);
	if (!v || (ok && !ok(v)))
		fprintf(stderr, "ummap: ignoring %s=%s (not a valid size)\n", name, s);
	else
		*dst = v;
}

static void defaults(void)
{
	uint64_t phys = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
	um.cfg.budget = phys / 4;
	/* 4 KiB, measured (512 MiB file, 64 MiB budget): random reads cost
	 * 82, 205, 769 and 1745 us per access at 4, 16, 64 and 256 KiB faults
	 * (the time goes into allocating and filling pages that are not used),
	 * while a sequential scan took the same time at every size, since
	 * readahead grows the unit there. */
	um.cfg.fault_size = 4096;
	um.cfg.readahead_max = 8UL << 20; /* the kernel's read-ahead here */
	um.cfg.writeback_ms = 30000;	  /* dirty_expire_centisecs */
	env_size("UMMAP_BUDGET", &um.cfg.budget, NULL);
	env_size("UMMAP_FAULT_SIZE", &um.cfg.fault_size, valid_fault_size);
	const char *ra = getenv("UMMAP_READAHEAD");
	if (ra && !strcmp(ra, "0"))
		um.cfg.readahead_max = 0;
	else
		env_size("UMMAP_READAHEAD", &um.cfg.readahead_max, NULL);
	const char *wb = getenv("UMMAP_WRITEBACK_MS");
	if (wb && atoll(wb) > 0)
		um.cfg.writeback_ms = (uint64_t)atoll(wb);
}

static void at_exit(void)
{
	um_lock();
	if (um.ready)
		wb_all();
	um_unlock();
}

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
static void fork_prepare(void)
{
	um_lock(); /* (the child re-creates it) */
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
static void fork_parent(void)
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

/* Features ummap uses when the kernel has them. */
#define UM_WANT (UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_THREAD_ID | \
		 UFFD_FEATURE_EXACT_ADDRESS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_POISON)

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

static void fork_child(void)
{
	if (!um.ready) {
		/* Not started, or a child's engine that could not start: the
		 * um_* calls stay the kernel's. */
		pthread_mutex_init(&um.lock, NULL);
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
	pthread_mutex_init(&um.lock, NULL);
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


static int start(void)
{
	int err = 0;
	uint64_t offered;
	int fd = sys_uffd_open(&err);
	if (fd < 0)
		return -err;
	int e = sys_uffd_api(fd, 0, &offered);
	close(fd);
	if (e)
		return e;
	if (!(offered & UFFD_FEATURE_MINOR_SHMEM) || !(offered & UFFD_FEATURE_MISSING_SHMEM))
		return -ENOTSUP;
	um.uffd = sys_uffd_open(&err);
	if (um.uffd < 0)
		return -err;
	e = sys_uffd_api(um.uffd, offered & UM_WANT, &um.features);
	if (e)
		return e;
	/* Write-protect tracking of shmem needs UFFDIO_CONTINUE_MODE_WP (Linux
	 * 6.3), which has no feature bit; WP_UNPOPULATED came in 6.4. */
	um.wp = (um.features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM) && (offered & UFFD_FEATURE_WP_UNPOPULATED);
	um.inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (um.inotify < 0)
		return -errno;
	if ((e = um_signal_install()) || (e = fault_start()) || (e = wb_start()))
		return e;
	atexit(at_exit);
	return 0;
}

/*
 * Under the engine's lock, so that a fork() in another thread (whose
 * handlers take the lock) sees the engine either not started or running.
 * A child forked just after can find pthread_once still in progress and run
 * this again: its engine is then decided already (fork_child).
 */
static void init_once(void)
{
	um_lock();
	if (um.ready || um.init_err) {
		um_unlock();
		return;
	}
	defaults();
	int e = start();
	if (e) {
		um.init_err = -e;
		fprintf(stderr,
			"ummap: cannot start (%s); mappings are served by the kernel's mmap. "
			"Run `ummap check` for what to do.\n", strerror(-e));
	} else {
		um.ready = true;
	}
	um_unlock();
}

/*
 * The fork handlers, registered before the application's (a constructor of
 * the highest priority an application may use): handlers registered earlier
 * run their prepare after ummap's and their child handler before ummap's,
 * that is while the engine's lock is held and private memory is
 * write-protected, or in a child whose private memory is still the parent's.
 * They do nothing until the engine has started.
 */
__attribute__((constructor(101))) static void register_fork_handlers(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

int um_init(void)
{
	pthread_once(&once, init_once);
	return um.ready ? 0 : -um.init_err;
}

/*
 * The um_* calls copy the caller's structs in and out with the engine's
 * lock released: a struct may lie in a ummap page not mapped at the moment,
 * whose fault the fault thread serves only once it has the lock.
 */
int um_configure(const struct um_config *cfg)
{
	if (!cfg) {
		errno = EINVAL;
		return -1;
	}
	struct um_config c = *cfg;
	if (c.fault_size && !valid_fault_size(c.fault_size)) {
		errno = EINVAL;
		return -1;
	}
	um_init();
	um_lock();
	if (c.budget)
		um.cfg.budget = c.budget;
	if (c.fault_size)
		um.cfg.fault_size = c.fault_size;
	if (c.readahead_max)
		um.cfg.readahead_max = c.readahead_max;
	if (c.writeback_ms)
		__atomic_store_n(&um.cfg.writeback_ms, c.writeback_ms, __ATOMIC_RELAXED);
	um_unlock();
	if (um.ready && c.writeback_ms)
		wb_kick(); /* a shorter interval takes effect now */
	return 0;
}

int um_get_config(struct um_config *cfg)
{
	um_init();
	um_lock();
	struct um_config c = um.cfg;
	um_unlock();
	*cfg = c;
	return 0;
}

int um_mapping_set(void *addr, enum um_param param, uint64_t value)
{
	if (param == UM_PARAM_FAULT_SIZE && !valid_fault_size(value)) {
		errno = EINVAL;
		return -1;
	}
	um_init();
	um_lock();
	struct um_region *r = region_at((uintptr_t)addr);
	int err = 0;
	if (!r || !r->r_cache)
		err = r ? EINVAL : ENOMEM;
	else if (param == UM_PARAM_BUDGET)
		r->r_cache->c_sh->budget = value;
	else if (param == UM_PARAM_FAULT_SIZE || param == UM_PARAM_READAHEAD) {
		struct um_mapping *m = r->r_map;
		for (size_t i = 0; i < um.nregions; i++) {
			if (um.regions[i].r_map != m)
				continue;
			if (param == UM_PARAM_FAULT_SIZE)
				um.regions[i].r_fault_size = value;
			else
				um.regions[i].r_ra_max = value;
		}
	} else
		err = EINVAL;
	um_unlock();
	if (err) {
		errno = err;
		return -1;
	}
	return 0;
}

int um_set_error_handler(um_error_handler handler, void *arg)
{
	um_init();
	um_lock();
	um.err_handler = handler;
	um.err_arg = arg;
	um_unlock();
	return 0;
}

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
	st->cache_procs = cache_procs(c);
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

int um_features(struct um_features *f)
{
	memset(f, 0, sizeof *f);
	int err = 0;
	int fd = sys_uffd_open(&err);
	if (fd < 0) {
		f->uffd_errno = err;
		return 0;
	}
	int e = sys_uffd_api(fd, 0, &f->features);
	close(fd);
	if (e) {
		f->uffd_errno = -e;
		return 0;
	}
	f->uffd_ok = 1;
	f->minor_shmem = !!(f->features & UFFD_FEATURE_MINOR_SHMEM);
	f->wp_shmem = !!(f->features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
	f->thread_id = !!(f->features & UFFD_FEATURE_THREAD_ID);
	f->poison = !!(f->features & UFFD_FEATURE_POISON);
	return 0;
}
