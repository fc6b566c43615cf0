/*
 * cache.c - cache objects: one per file, keyed by device and inode, shared
 * by every mapping of that file in the process and, through the writeback
 * service (proto.h), by every process of the user that maps the file.
 *
 * A cache is a memfd holding the file's cached pages at their file offsets
 * (filled and written back with pread/pwrite of the memfd, never through a
 * mapping of it, so that a cached page is mapped once, in the user's
 * mapping: see bounce()), and one state byte per page (PG_*, proto.h; in a memfd of
 * their own for files, which the writeback service holds too, see
 * service.c; in plain memory for anonymous memory).  The memfd is as large as
 * the furthest mapped offset (c_extent), not the file: the end of file is
 * enforced by the fault path, which reads the file's size, so a file that
 * grows is usable at once.  The page states cover only what
 * can be cached (c_wext: up to the end of file, at most c_extent), so a
 * small file mapped at a huge offset costs nothing.  A page's life:
 *
 *      absent --cache_fill--> PRESENT --WP fault / map writable--> DIRTY
 *        ^                       |  ^                                |
 *        +-------cache_drop-------+  +------wb_range (I3)-------------+
 *
 * Truncation (cache_set_size) punches pages beyond the new end and zeroes
 * the tail of the last partial page, as the kernel's truncate does.
 *
 * Kept here: I1, a page is PRESENT iff it is in the memfd (cache_fill
 * marks it after the write succeeds and punches what a failed fill wrote;
 * cache_drop punches before clearing), and the header's counters follow
 * the states; I5, pages move between store and memfd by pread/pwrite of
 * the memfd through one buffer, never through a mapping.
 *
 * cache_lock does two things besides locking, both needed by whoever
 * touches the cache next: after a process died holding the lock, it
 * repairs the states (what was being written is dirty again); and it takes
 * a file size another process set (a truncation it saw), punching pages
 * beyond it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

#define EXTENT_ROUND (2UL << 20)

/* The engine's lock; releasing it releases the caches' locks taken under
 * it, after their mapping tables are brought up to date (cache_unlock_all). */
void um_lock(void) { pthread_mutex_lock(&um.lock); }
void um_unlock(void)
{
	cache_unlock_all();
	pthread_mutex_unlock(&um.lock);
}

struct um_cache *cache_by_file(dev_t dev, ino_t ino)
{
	for (struct um_cache *c = um.caches; c; c = c->c_next)
		if (c->c_store && c->c_dev == dev && c->c_ino == ino)
			return c;
	return NULL;
}

struct um_cache *cache_by_wd(int wd)
{
	for (struct um_cache *c = um.caches; c; c = c->c_next)
		if (c->c_wd == wd)
			return c;
	return NULL;
}

/* Map n bytes of the state memfd at off (or anonymous memory, fd -1). */
static void *map_states(int fd, uint64_t n, uint64_t off)
{
	int fl = fd >= 0 ? MAP_SHARED : MAP_PRIVATE | MAP_ANONYMOUS;
	return sys_mmap_engine(n, PROT_READ | PROT_WRITE, fl | MAP_NORESERVE, fd, (off_t)off);
}

/* A fresh header: nothing cached, the lock robust (a process that dies
 * holding it does not block the others) and process-shared. */
static void header_init(struct um_shared *h)
{
	pthread_mutexattr_t a;
	pthread_mutexattr_init(&a);
	pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&h->lock, &a);
	pthread_mutexattr_destroy(&a);
	h->magic = UM_SHARED_MAGIC;
}

/* A cache; its header and page states in a memfd of their own when other
 * processes and the writeback service are to see them (files), in plain
 * memory otherwise (anonymous memory: one descriptor fewer per mapping).
 * The header has a mapping of its own, which never moves: the lock in it
 * is on the robust list of the thread holding it. */
static struct um_cache *cache_alloc(bool shared_states, int *err)
{
	struct um_cache *c = calloc(1, sizeof *c);
	if (!c) {
		*err = ENOMEM;
		return NULL;
	}
	c->c_wd = -1;
	c->c_pstate = MAP_FAILED;
	c->c_memfd = memfd_create("ummap-cache", MFD_CLOEXEC);
	c->c_statefd = c->c_memfd < 0 || !shared_states ? -1 : memfd_create("ummap-state", MFD_CLOEXEC);
	void *h = MAP_FAILED;
	if (c->c_memfd >= 0 && (!shared_states || (c->c_statefd >= 0 && ftruncate(c->c_statefd, UM_STATE_HDR) == 0)))
		h = map_states(c->c_statefd, UM_STATE_HDR, 0);
	if (h == MAP_FAILED) {
		*err = errno;
		if (c->c_memfd >= 0)
			close(c->c_memfd);
		if (c->c_statefd >= 0)
			close(c->c_statefd);
		free(c);
		return NULL;
	}
	c->c_sh = h;
	header_init(c->c_sh);
	c->c_next = um.caches;
	um.caches = c;
	return c;
}

/* Adopt the service's memfds for the file's cache (another process has
 * it): ours, still empty, go. */
static int cache_adopt(struct um_cache *c, int memfd, int statefd)
{
	struct stat st;
	void *h = fstat(memfd, &st) < 0 ? MAP_FAILED : map_states(statefd, UM_STATE_HDR, 0);
	if (h == MAP_FAILED || ((struct um_shared *)h)->magic != UM_SHARED_MAGIC) {
		int e = h == MAP_FAILED ? errno : EPROTO;
		if (h != MAP_FAILED)
			sys_munmap(h, UM_STATE_HDR);
		return e;
	}
	sys_munmap(c->c_sh, UM_STATE_HDR);
	close(c->c_memfd);
	close(c->c_statefd);
	c->c_sh = h;
	c->c_memfd = memfd;
	c->c_statefd = statefd;
	c->c_extent = (uint64_t)st.st_size;
	return 0;
}

/* Bytes of the state memfd, which other processes may have grown. */
static uint64_t states_size(const struct um_cache *c)
{
	struct stat st;
	return fstat(c->c_statefd, &st) < 0 ? 0 : (uint64_t)st.st_size;
}

/* After a process died holding c's lock: what it was writing is dirty
 * again (it may not have reached the file), and the counters are
 * recounted from the states (it may have died between the two). */
static void cache_repair(struct um_cache *c)
{
	uint64_t n = states_size(c);
	uint8_t *ps = n > UM_STATE_HDR ? map_states(c->c_statefd, n - UM_STATE_HDR, UM_STATE_HDR) : MAP_FAILED;
	uint64_t resident = 0, dirty = 0;
	for (uint64_t p = 0; ps != MAP_FAILED && p < n - UM_STATE_HDR; p++) {
		if (ps[p] & PG_WRITING)
			ps[p] = (uint8_t)((ps[p] & ~PG_WRITING) | PG_DIRTY);
		resident += (ps[p] & PG_PRESENT) ? UM_PAGE : 0;
		dirty += (ps[p] & PG_DIRTY) ? UM_PAGE : 0;
	}
	if (ps != MAP_FAILED)
		sys_munmap(ps, n - UM_STATE_HDR);
	c->c_sh->resident = resident;
	c->c_sh->dirty = dirty;
}

static bool held(const struct um_cache *c)
{
	for (int i = 0; i < um.nheld; i++)
		if (um.held[i] == c)
			return true;
	return false;
}

static void took(struct um_cache *c, int e)
{
	if (e == EOWNERDEAD) {
		cache_repair(c);
		pthread_mutex_consistent(&c->c_sh->lock);
	}
	um.held[um.nheld++] = c;
	/* Another process learned of a new file size (um_ftruncate, or
	 * its inotify watch): this one takes it at once, as all processes
	 * share the kernel's. */
	if (c->c_store && c->c_sh->size != c->c_size)
		cache_set_size(c, c->c_sh->size);
}

void cache_lock(struct um_cache *c)
{
	if (!c->c_shared || held(c))
		return;
	while (um.nheld)
		cache_unlock(um.held[um.nheld - 1]);
	took(c, pthread_mutex_lock(&c->c_sh->lock));
}

/* Take c's lock if it is free (eviction, which holds another cache's);
 * *taken says whether the caller must release it. */
bool cache_trylock(struct um_cache *c, bool *taken)
{
	*taken = false;
	if (!c->c_shared || held(c))
		return true;
	if (um.nheld == (int)(sizeof um.held / sizeof *um.held))
		return false;
	int e = pthread_mutex_trylock(&c->c_sh->lock);
	if (e && e != EOWNERDEAD)
		return false;
	took(c, e);
	*taken = true;
	return true;
}

void cache_unlock(struct um_cache *c)
{
	for (int i = 0; i < um.nheld; i++)
		if (um.held[i] == c) {
			um.held[i] = um.held[--um.nheld];
			pthread_mutex_unlock(&c->c_sh->lock);
			return;
		}
}

/*
 * This process's entries in c's table of write-tracked mappings, rebuilt
 * from its regions (adjacent pieces in one entry), under c's lock.  They
 * carry the id the service knows this process by (proto.h), not its pid:
 * the service may see it in another PID namespace.  The service frees the
 * entries of processes that are gone; without an id (no service yet, in
 * a fork child) there are none to write.
 */
static void sync_maps(struct um_cache *c)
{
	struct um_shared *h = c->c_sh;
	int32_t me = um.svc_id;
	if (!me)
		return;
	for (uint32_t i = 0; i < h->nmaps; i++)
		if (h->maps[i].id == me)
			h->maps[i].id = 0;
	while (h->nmaps && !h->maps[h->nmaps - 1].id)
		h->nmaps--;
	struct um_map_ent *last = NULL;
	uint32_t free_at = 0;
	static bool warned;
	for (size_t i = 0; i < um.nregions; i++) {
		const struct um_region *r = &um.regions[i];
		if (r->r_cache != c || !REGION_WP(r))
			continue;
		if (last && last->start + last->len == r->r_start && last->off + last->len == r->r_off) {
			last->len += r->r_end - r->r_start;
			continue;
		}
		while (free_at < h->nmaps && h->maps[free_at].id)
			free_at++;
		if (free_at == h->nmaps && h->nmaps == UM_MAX_MAPS) {
			if (!warned)
				fprintf(stderr, "ummap: more than %zu pieces of one file mapped: stores through "
						"the others may be missed by other processes' writeback\n",
					(size_t)UM_MAX_MAPS);
			warned = true;
			break;
		}
		if (free_at == h->nmaps)
			h->nmaps++;
		last = &h->maps[free_at];
		*last = (struct um_map_ent){ .id = me, .start = r->r_start, .off = r->r_off,
					     .len = r->r_end - r->r_start };
	}
}

void cache_unlock_all(void)
{
	for (struct um_cache *c = um.caches; c; c = c->c_next)
		if (c->c_maps_changed) {
			c->c_maps_changed = false;
			if (c->c_shared) {
				cache_lock(c);
				sync_maps(c);
			}
		}
	while (um.nheld)
		cache_unlock(um.held[um.nheld - 1]);
}

uint64_t cache_resident_all(void)
{
	uint64_t n = 0;
	for (struct um_cache *c = um.caches; c; c = c->c_next)
		n += c->c_sh->resident;
	return n;
}

/* This process's entries leave c's table of write-tracked mappings (no
 * region maps c any more).  Before the service hears this process is done
 * with c: seeing entries left, it would keep the cache open and give it to
 * the file's next opener, stale. */
void cache_leave_table(struct um_cache *c)
{
	if (!c->c_shared)
		return;
	cache_lock(c);
	c->c_maps_changed = false;
	sync_maps(c);
	cache_unlock(c);
}

void cache_free(struct um_cache *c)
{
	cache_leave_table(c);
	struct um_cache **p = &um.caches;
	while (*p != c)
		p = &(*p)->c_next;
	*p = c->c_next;
	if (c->c_wd >= 0)
		inotify_rm_watch(um.inotify, c->c_wd);
	for (int i = 0; i < UM_RECENT; i++)
		if (um.recent[i].c == c)
			um.recent[i].c = NULL;
	c->c_shared = false;
	if (c->c_pstate != MAP_FAILED)
		sys_munmap(c->c_pstate, c->c_pslen);
	sys_munmap(c->c_sh, UM_STATE_HDR);
	close(c->c_memfd);
	if (c->c_statefd >= 0)
		close(c->c_statefd);
	if (c->c_store)
		c->c_store->ops->close(c->c_store);
	if (c->c_swap)
		c->c_swap->ops->close(c->c_swap);
	free(c);
}

static uint64_t round_extent(uint64_t x)
{
	uint64_t r = (x + EXTENT_ROUND - 1) & ~(EXTENT_ROUND - 1);
	return r < x ? UINT64_MAX & ~(EXTENT_ROUND - 1) : r;
}

/* Grow the page states to cover what can be cached now. */
static int cache_grow_states(struct um_cache *c)
{
	uint64_t want = c->c_store && c->c_size < c->c_extent ? round_extent(c->c_size) : c->c_extent;
	if (want > c->c_extent)
		want = c->c_extent;
	if (want <= c->c_wext)
		return 0;
	/* The page states grow in their memfd (never shrinking it: another
	 * process may use more) or memory; new bytes read as zero. */
	uint64_t pslen = um_pgup(want / UM_PAGE);
	if (pslen > c->c_pslen) {
		if (c->c_statefd >= 0 && states_size(c) < UM_STATE_HDR + pslen &&
		    ftruncate(c->c_statefd, (off_t)(UM_STATE_HDR + pslen)) < 0)
			return -errno;
		void *ps = c->c_pstate == MAP_FAILED
			? map_states(c->c_statefd, pslen, UM_STATE_HDR)
			: sys_mremap(c->c_pstate, c->c_pslen, pslen, MREMAP_MAYMOVE, NULL);
		if (ps == MAP_FAILED)
			return -errno;
		c->c_pstate = ps;
		c->c_pslen = pslen;
	}
	c->c_wext = want;
	return 0;
}

/* Grow the memfd to cover mappings up to offset end. */
int cache_extend(struct um_cache *c, uint64_t end)
{
	cache_lock(c);
	struct stat st;
	if (end > c->c_extent && c->c_shared && fstat(c->c_memfd, &st) == 0)
		c->c_extent = (uint64_t)st.st_size; /* another process grew it */
	if (end > c->c_extent) {
		uint64_t ext = round_extent(end);
		if (ext > (uint64_t)INT64_MAX)
			ext = end; /* the largest file size: no rounding room */
		if (ftruncate(c->c_memfd, (off_t)ext) < 0)
			return -errno;
		c->c_extent = ext;
	}
	return cache_grow_states(c);
}

/* The file's cache in this process, made if there is none (*fresh);
 * want_write: its store must be able to write the file. */
struct um_cache *cache_get(int fd, const struct stat *st, bool want_write, bool *fresh, int *err)
{
	struct um_cache *c = cache_by_file(st->st_dev, st->st_ino);
	*fresh = !c;
	if (c) {
		int e = want_write ? store_file_upgrade(c->c_store, fd) : 0;
		if (e) {
			*err = -e;
			return NULL;
		}
		return c;
	}
	c = cache_alloc(true, err);
	if (!c)
		return NULL;
	c->c_dev = st->st_dev;
	c->c_ino = st->st_ino;
	c->c_size = c->c_sh->size = (uint64_t)st->st_size;
	c->c_store = store_file_open(fd, want_write, err);
	if (!c->c_store) {
		cache_free(c);
		return NULL;
	}
	cache_watch(c);
	return c;
}

/* Watch c's file for a change of size made behind ummap's back. */
void cache_watch(struct um_cache *c)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", c->c_store->fd);
	c->c_wd = inotify_add_watch(um.inotify, path, IN_MODIFY | IN_ATTRIB);
}

/* The service's answer to OPEN: its memfds for the file's cache. */
int cache_shared_by_service(struct um_cache *c, int memfd, int statefd)
{
	struct stat a, b;
	if (fstat(memfd, &a) == 0 && fstat(c->c_memfd, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev) {
		/* Ours: this process is the file's first. */
		close(memfd);
		close(statefd);
	} else {
		int e = cache_adopt(c, memfd, statefd);
		if (e) {
			close(memfd);
			close(statefd);
			return e;
		}
	}
	c->c_shared = true;
	c->c_maps_changed = true; /* its mappings go in the table */
	return 0;
}

/* An anonymous object of exactly len bytes (as the kernel's shmem object
 * for MAP_SHARED|MAP_ANONYMOUS: growing the mapping later does not grow
 * it).  Shared memory keeps its page states in a memfd, so that fork
 * children can share the cache (config.c); its key is that memfd's
 * device and inode.  Private memory is this process's alone. */
struct um_cache *cache_new_anon(uint64_t len, bool shared, int *err)
{
	struct um_cache *c = cache_alloc(shared, err);
	if (!c)
		return NULL;
	c->c_private = !shared;
	struct stat st;
	if (shared && fstat(c->c_statefd, &st) == 0) {
		c->c_dev = st.st_dev;
		c->c_ino = st.st_ino;
	}
	int e = ftruncate(c->c_memfd, (off_t)len) < 0 ? -errno : 0;
	if (!e) {
		c->c_extent = len;
		c->c_size = len;
		e = cache_grow_states(c);
	}
	if (e) {
		*err = -e;
		cache_free(c);
		return NULL;
	}
	return c;
}

/* Anonymous memory [off, off+len) reads as zeros from now on: its pages and
 * their swapped copies go (MADV_REMOVE, MADV_DONTNEED on private memory). */
void cache_discard(struct um_cache *c, uint64_t off, uint64_t len)
{
	cache_drop(c, off, len, false);
	if (c->c_swap && c->c_swap->ops->discard)
		c->c_swap->ops->discard(c->c_swap, off, len);
	for (uint64_t p = off / UM_PAGE; p < (off + len) / UM_PAGE && p < c->c_wext / UM_PAGE; p++)
		c->c_pstate[p] &= (uint8_t)~(PG_SWAPPED | PG_LAZYFREE);
}

/* Drop the PRESENT pages of [off, off+len) from the memfd (dirty ones too
 * unless clean_only: truncation and MADV_REMOVE discard data). */
void cache_drop(struct um_cache *c, uint64_t off, uint64_t len, bool clean_only)
{
	cache_lock(c);
	uint64_t p = off / UM_PAGE, end = um_pgup(off + len) / UM_PAGE;
	if (end > c->c_wext / UM_PAGE)
		end = c->c_wext / UM_PAGE;
	while (p < end) {
		uint8_t s = c->c_pstate[p];
		if (!(s & PG_PRESENT) || (clean_only && (s & PG_DIRTY))) {
			p++;
			continue;
		}
		uint64_t q = p, dirty = 0;
		while (q < end && (c->c_pstate[q] & PG_PRESENT) &&
		       !(clean_only && (c->c_pstate[q] & PG_DIRTY))) {
			dirty += (c->c_pstate[q] & PG_DIRTY) != 0;
			/* A swapped copy stays, and with it the MADV_FREE mark:
			 * eviction is ummap's, not the kernel's reclaim, so the
			 * page is still the kernel's lazily freed one. */
			c->c_pstate[q] &= (c->c_pstate[q] & PG_SWAPPED) ? PG_SWAPPED | PG_LAZYFREE : 0;
			q++;
		}
		uint64_t boff = p * UM_PAGE, blen = (q - p) * UM_PAGE;
		/* Unmaps the pages from every VMA, then frees them. */
		fallocate(c->c_memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)boff, (off_t)blen);
		c->c_sh->resident -= blen;
		c->c_sh->dirty -= dirty * UM_PAGE;
		c->c_st.evictions += q - p;
		um.st.evictions += q - p;
		p = q;
	}
}

/*
 * Bytes move between the memfd and the stores through a buffer of the
 * engine's (pread/pwrite of the memfd), never through a mapping of the
 * memfd: a cached page also mapped there would be counted twice in the
 * process's RSS (it is in the user's mapping too), which is what top, ps,
 * monitoring and the OOM killer read.  Measured against filling a mapping
 * of the memfd (MADV_POPULATE_WRITE, then pread into it): 0.39 against 0.50
 * s of CPU per GiB in 8 MiB runs, 0.46 against 0.54 in 4 KiB runs (writing
 * a fresh page skips zeroing it and setting up page-table entries), while
 * zapping such a mapping after each run (MADV_DONTNEED) costs 1.08 in 4 KiB
 * runs.  A larger buffer saved nothing measurable.  One buffer, used under
 * um.lock.
 */
#define BOUNCE (256UL << 10)

static uint8_t *bounce(void)
{
	static uint8_t *buf;
	if (!buf) {
		void *b = sys_mmap_engine(BOUNCE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		buf = b == MAP_FAILED ? NULL : b;
	}
	return buf;
}

/* pread or pwrite of the memfd, all len bytes.  0 or -errno. */
int cache_io(struct um_cache *c, bool wr, void *vbuf, size_t len, uint64_t off)
{
	uint8_t *buf = vbuf;
	while (len) {
		ssize_t n = wr ? pwrite(c->c_memfd, buf, len, (off_t)off) : pread(c->c_memfd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		buf += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Store s's bytes [off, off+len) into the memfd.  Returns the bytes read
 * (fewer at the store's end) or -errno. */
static ssize_t cache_load(struct um_cache *c, struct um_store *s, uint64_t off, uint64_t len)
{
	uint8_t *b = bounce();
	uint64_t done = 0;
	if (!b)
		return -ENOMEM;
	while (done < len) {
		size_t want = len - done < BOUNCE ? len - done : BOUNCE;
		ssize_t n = s->ops->read(s, b, want, off + done);
		if (n < 0)
			return n;
		int e = n ? cache_io(c, true, b, (size_t)n, off + done) : 0;
		if (e)
			return e;
		done += (uint64_t)n;
		if ((size_t)n < want)
			break;
	}
	return (ssize_t)done;
}

ssize_t cache_save(struct um_cache *c, struct um_store *s, uint64_t off, uint64_t len)
{
	uint8_t *b = bounce();
	uint64_t done = 0, written = 0;
	if (!b)
		return -ENOMEM;
	while (done < len) {
		size_t n = len - done < BOUNCE ? len - done : BOUNCE;
		int e = cache_io(c, false, b, n, off + done);
		ssize_t w = e ? e : s->ops->write(s, b, n, off + done);
		if (w < 0)
			return w;
		done += n;
		written += (uint64_t)w;
	}
	return (ssize_t)written;
}

void cache_zero(struct um_cache *c, uint64_t off, uint64_t len)
{
	static uint8_t zeros[UM_PAGE]; /* (only ever read) */
	cache_io(c, true, zeros, len, off);
}

/*
 * Pages [off, off+len) of the memfd, absent: the first `want` bytes from
 * store s (NULL: none), the rest zeros.  Every page ends up in the memfd,
 * or (on failure) none: PRESENT means there (I1).  Returns the bytes read
 * or -errno.
 */
static ssize_t fill_run(struct um_cache *c, struct um_store *s, uint64_t off, uint64_t len, uint64_t want)
{
	ssize_t n = want ? cache_load(c, s, off, want) : 0;
	uint64_t got = n < 0 ? 0 : um_pgup((uint64_t)n);
	/* A new page written in part is zeroed around what was written;
	 * the pages after it are allocated zeroed. */
	if (n >= 0 && got < len && fallocate(c->c_memfd, 0, (off_t)(off + got), (off_t)(len - got)) < 0)
		n = -errno;
	if (n < 0)
		fallocate(c->c_memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
	return n;
}

/* Pages [p, q) of an anonymous cache: swapped ones read back from the
 * swap store, the others zero-filled. */
static int anon_fill(struct um_cache *c, uint64_t p, uint64_t q)
{
	while (p < q) {
		uint8_t swapped = c->c_pstate[p] & PG_SWAPPED;
		uint64_t r = run_end(c->c_pstate, p, q, PG_SWAPPED, swapped);
		uint64_t off = p * UM_PAGE, len = (r - p) * UM_PAGE;
		ssize_t n = fill_run(c, c->c_swap, off, len, swapped ? len : 0);
		if (n < 0)
			return (int)n;
		p = r;
	}
	return 0;
}

/* Bring [off, off+len) of the store into the memfd: pages not PRESENT are
 * read, in runs.  Returns 0 or -errno of the first failing read. */
int cache_fill(struct um_cache *c, uint64_t off, uint64_t len)
{
	cache_lock(c);
	uint64_t p = off / UM_PAGE, end = (off + len) / UM_PAGE;
	while (p < end) {
		if (c->c_pstate[p] & PG_PRESENT) {
			p++;
			continue;
		}
		uint64_t q = run_end(c->c_pstate, p, end, PG_PRESENT, 0);
		uint64_t boff = p * UM_PAGE, blen = (q - p) * UM_PAGE;
		if (c->c_store) {
			/* Bytes past the end of the file read as zeros. */
			uint64_t want = blen;
			if (boff >= c->c_size)
				want = 0;
			else if (boff + want > c->c_size)
				want = c->c_size - boff;
			ssize_t n = fill_run(c, c->c_store, boff, blen, want);
			if (n < 0)
				return (int)n;
			c->c_st.bytes_read += (uint64_t)n;
			um.st.bytes_read += (uint64_t)n;
		} else {
			int e = anon_fill(c, p, q);
			if (e)
				return e;
		}
		for (uint64_t i = p; i < q; i++) /* (the MADV_FREE mark of a page back from swap stays) */
			c->c_pstate[i] = PG_PRESENT | PG_REF | (c->c_pstate[i] & PG_LAZYFREE);
		c->c_sh->resident += blen;
		p = q;
	}
	return 0;
}

/* The file now has `size` bytes: forget pages beyond it, zero the tail of
 * the last partial page. */
void cache_set_size(struct um_cache *c, uint64_t size)
{
	cache_lock(c);
	uint64_t old = c->c_size;
	c->c_size = size;
	c->c_sh->size = size;
	if (size >= old) {
		/* If the states cannot grow, faults beyond them raise SIGBUS. */
		cache_grow_states(c);
		return;
	}
	uint64_t keep = um_pgup(size);
	/* Truncation unmaps even private copies beyond the new end (the
	 * kernel's truncate_pagecache); punching below only reaches pages of
	 * the cache itself. */
	for (size_t i = 0; i < um.nregions; i++) {
		struct um_region *r = &um.regions[i];
		uint64_t rend = r->r_off + (r->r_end - r->r_start);
		if (r->r_cache != c || r->r_kind != UM_FILE_PRIVATE || rend <= keep)
			continue;
		uintptr_t from = keep > r->r_off ? r->r_start + (keep - r->r_off) : r->r_start;
		sys_madvise((void *)from, r->r_end - from, MADV_DONTNEED);
	}
	if (size >= c->c_wext)
		return;
	if (keep < c->c_wext)
		cache_drop(c, keep, c->c_wext - keep, false);
	if (size < keep && (c->c_pstate[size / UM_PAGE] & PG_PRESENT))
		cache_zero(c, size, keep - size);
}

/*
 * The file grows to `size` through um_ftruncate: bytes stored past the old
 * end, in its last page, are not file data; the kernel zeroes them all (up
 * to the end of that page, even past the new size) when truncate grows the
 * file.  (Only here: a growth seen later, by inotify or a fault, may follow
 * stores made after it, which must stay.)
 */
void cache_grow_to(struct um_cache *c, uint64_t size)
{
	uint64_t old = c->c_size;
	if (old < um_pgup(old) && old < c->c_wext && (c->c_pstate[old / UM_PAGE] & PG_PRESENT))
		cache_zero(c, old, um_pgup(old) - old);
	cache_set_size(c, size);
}

/* Re-read the file's size from the store (after inotify says it changed,
 * or when a fault lands beyond the size we knew). */
int cache_refresh_size(struct um_cache *c)
{
	uint64_t size;
	if (!c->c_store)
		return 0;
	/* Read under the lock: a size read before it could be older than the
	 * one another process sets meanwhile (um_ftruncate holds the lock
	 * across its truncation). */
	cache_lock(c);
	int e = c->c_store->ops->size(c->c_store, &size);
	if (e)
		return e;
	if (size != c->c_size)
		cache_set_size(c, size);
	return 0;
}
