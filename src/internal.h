/*
 * internal.h - the engine's shared state and the contracts between its files.
 *
 * Design in one paragraph.  Every ummap mapping is a real kernel VMA: a
 * mapping of the file's cache object, a memfd (shared memory) that holds the
 * cached pages at their file offsets.  MAP_SHARED maps the memfd shared,
 * MAP_PRIVATE maps it private, so the kernel itself gives copy-on-write,
 * coherence between mappings, VMA splitting and merging and the errno of
 * munmap/mprotect/madvise/mremap.  The VMA is registered with a userfaultfd:
 * a page absent from the memfd raises a MISSING fault, a page present in the
 * memfd but not in the page table a MINOR fault, and a first write to a clean
 * page a write-protect (WP) fault.  One fault thread serves them (so faults
 * taken inside system calls work), filling the memfd from the store and
 * mapping pages with UFFDIO_CONTINUE.  Evicting a page is punching it out of
 * the memfd: the kernel unmaps it from every VMA (shared and private, never
 * touching private copies), so the next access faults again.  Anonymous
 * memory is a cache without a file: shared, or private (a memfd of its own
 * mapped shared, which no other process maps; fork() gives the child a copy,
 * fork.c), its evicted pages kept in a swap store.  The page states of a
 * file's cache live in a memfd the writeback service also holds (proto.h),
 * so that a killed process's dirty pages still reach the file; through the
 * service, every process that maps the file uses the same two memfds, so
 * they share one cache, as with the kernel's page cache.
 *
 * Invariants (all under um.lock and, for a cache shared between processes,
 * the cache's lock).  Each is stated again, with how it is kept, at the top
 * of the file named:
 *  I1 (cache.c). A page is PRESENT in pstate iff it was filled into the
 *      memfd and not punched since; the header counts PRESENT pages.
 *  I2 (fault.c). A page that may differ from the store is DIRTY.  With
 *      write-protect tracking, a clean page is mapped write-protected in
 *      every shared region of every process, so the first write to it
 *      faults and sets DIRTY before the store can be written.  Without it,
 *      pages of writable shared regions are marked DIRTY when they are
 *      mapped (and caches are not shared between processes).
 *  I3 (writeback.c). Writeback write-protects a run first (in the other
 *      processes too, through the service), then clears DIRTY, then
 *      writes: a store racing with it faults and sets DIRTY again.
 *  I4 (evict.c). Only clean, unpinned pages outside the range being
 *      faulted are punched; dirty victims are written back first.
 *  I5 (cache.c). Nothing in the engine touches user mappings while holding
 *      um.lock; it reads and writes cache pages through the memfd
 *      (pread/pwrite), so that a cached page is mapped once in the process,
 *      in the user's mapping, and counted once in its RSS.
 *  I6 (region.c, mremap.c). No page of a ummap mapping can be reached
 *      before the mapping is registered with the userfaultfd: a memfd is
 *      mapped PROT_NONE, registered, then given its protection; a moved
 *      range is fenced PROT_NONE until registered again.  (Reached
 *      unregistered, shmem would serve it itself: a page of zeros put in
 *      the cache, or a store not marked DIRTY.)
 *
 * Layers: each file calls only files below it in this list.
 *   the calls          mman.c mremap.c config.c stats.c fork.c
 *   start-up           engine.c (um_init, which every call makes first)
 *   the fault path     fault.c
 *   the region map     region.c
 *   eviction           evict.c
 *   writeback          writeback.c
 *   sharing            service.c (the client of the per-user service)
 *   caches             cache.c (pages, states, the engine's and the caches'
 *                      locks)
 *   stores             store_swap.c, store_file.c
 *   the kernel         signal.c, sys.c
 * Two places read, without calling up, the region map they are below: I3
 * write-protects every region that maps a run (writeback.c), and a
 * truncation unmaps private copies beyond the new end (cache.c), as the
 * kernel's truncate does; the caches' tables of write-tracked mappings are
 * rebuilt from it (cache.c, sync_maps).
 *
 * Locking: one mutex, um.lock, taken by the fault thread, the writeback
 * thread and every um_* call; it is never held across a call that can fault
 * on a registered range (MADV_POPULATE_*, mlock).  A cache shared between
 * processes also has a robust process-shared mutex in its header, taken
 * after um.lock when the engine first touches the cache (cache_lock) and
 * released by um_unlock.  A thread blocks on at most one cache lock at a
 * time (taking one releases the others: each cache operation is complete
 * before the next cache is touched); eviction only try-locks other caches.
 * No process waits for another while holding a cache lock, except for the
 * service's WP answer, and the service never waits for a lock.
 */
#ifndef UM_INTERNAL_H
#define UM_INTERNAL_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "ummap.h"
#include "proto.h"
#include "store.h"

#define UM_PAGE 4096UL
#define UM_PAGE_SHIFT 12
#define UM_WP_WINDOW 64 /* most pages one write-protect fault dirties */
#define UM_EVICT_CHUNK 64 /* pages punched together by the evictor: 256 KiB, so
			    * one TLB shootdown frees a whole fault unit */

static inline uint64_t um_pgup(uint64_t x) { return (x + UM_PAGE - 1) & ~(UM_PAGE - 1); }
static inline uint64_t um_pgdown(uint64_t x) { return x & ~(UM_PAGE - 1); }


/* A cache object: the cached pages of one file (or of one shared anonymous
 * mapping, which has no store). */
struct um_cache {
	dev_t c_dev;		/* key: device and inode of the file */
	ino_t c_ino;
	struct um_store *c_store; /* NULL for shared anonymous memory */
	struct um_store *c_swap; /* anonymous: where evicted pages go, once needed */
	int c_memfd;		/* the pages, at their file offsets */
	uint64_t c_extent;	/* memfd size: the furthest mapped offset */
	uint64_t c_wext;	/* what can be cached (page states kept), bytes */
	struct um_shared *c_sh;	/* header: lock, counters, mappings (proto.h) */
	uint8_t *c_pstate;	/* PG_* per page, c_wext / UM_PAGE entries: they
				 * follow the header in c_statefd for a file */
	int c_statefd;		/* memfd of the header and page states */
	uint64_t c_pslen;	/* bytes of header and states mapped */
	bool c_shared;		/* the service's: other processes may map it */
	bool c_maps_changed;	/* regions changed: c_sh->maps to update */
	bool c_private;		/* private anonymous memory: one process's, its
				 * pages unreachable once unmapped */
	bool c_fork_pinned;	/* shared anonymous memory that fork children map
				 * as kernel memory: kept in memory */
	uint64_t c_size;	/* file size as last seen */
	int c_refs;		/* regions that map this cache */
	int c_locked;		/* of which MAP_LOCKED / mlocked */
	int c_wd;		/* inotify watch, -1 if none */
	uint64_t c_clock;	/* eviction hand, page index */
	int c_wb_err;		/* last writeback errno, 0 if none */
	uint64_t c_wb_seq;	/* bumped at each writeback error */
	uint64_t c_svc_seq;	/* the file's error sequence at the service, as
				 * last seen (proto.h) */
	struct um_stats c_st;	/* bytes read and written, writebacks, evictions */
	struct um_cache *c_next;
};

enum um_kind {
	UM_FILE_SHARED,
	UM_FILE_PRIVATE,
	UM_ANON_SHARED,
	UM_ANON_PRIVATE, /* private anonymous memory paged by ummap: a memfd of
			  * its own, mapped shared (no one else maps it) */
	UM_ANON_KERNEL,	 /* kernel anonymous memory, recorded only */
};

/* The end of the run of pages from p (before end) whose state, masked,
 * is value: the loops over a cache's pages work run by run, one system call
 * or I/O per run. */
static inline uint64_t run_end(const uint8_t *ps, uint64_t p, uint64_t end, uint8_t mask, uint8_t value)
{
	while (p < end && (ps[p] & mask) == value)
		p++;
	return p;
}

/* Is r registered for write protection (the ranges writeback and swap-out
 * protect)? */
#define REGION_WP(r) ((r)->r_wp || (um.wp && ((r)->r_kind == UM_ANON_SHARED || (r)->r_kind == UM_ANON_PRIVATE)))

/* One um_mmap call, shared by the regions it became (splits, moves). */
struct um_mapping {
	unsigned m_refs;	/* regions that point here */
	struct um_stats m_st;	/* fault counters of this mapping */
};

/* A region: a page range of one mapping, as the kernel's VMA would be. */
struct um_region {
	uintptr_t r_start, r_end; /* [start, end), page aligned */
	uint64_t r_off;		  /* cache offset of r_start */
	enum um_kind r_kind;
	int r_prot;
	bool r_maywrite;	/* PROT_WRITE allowed (fd opened for writing, not sealed) */
	bool r_mayexec;		/* PROT_EXEC allowed (not a noexec mount) */
	bool r_wp;		/* registered for write-protect tracking */
	bool r_locked;
	bool r_dontfork;		/* MADV_DONTFORK: absent from a fork child */
	bool r_wipeonfork;	/* MADV_WIPEONFORK (private anonymous): zeros in a child */
	int r_advice;		/* MADV_NORMAL, RANDOM or SEQUENTIAL */
	uint64_t r_fault_size;	/* 0 = process default */
	uint64_t r_ra_max;	/* UINT64_MAX = process default */
	uint64_t r_ra_next;	/* cache offset a sequential scan reaches next */
	uint64_t r_ra_win;	/* current readahead window */
	uintptr_t r_wp_next;	/* address a run of first writes reaches next */
	uint64_t r_wp_win;	/* pages made writable by the last WP fault */
	uint64_t r_wb_seen;	/* c_wb_seq already reported to this region */
	struct um_mapping *r_map; /* the um_mmap call that made it; NULL if kernel memory */
	struct um_cache *r_cache;
};

/* A range of a cache that eviction leaves alone: each faulting thread's
 * last fault unit (a system call copying across two pages faults them one
 * after the other and needs both at once). */
struct um_span {
	struct um_cache *c;
	uint64_t off, len;
	pid_t tid;
};
#define UM_RECENT 64

/* The process's engine. */
struct um_engine {
	pthread_mutex_t lock;
	bool ready;
	int init_err;		/* errno if the engine could not start */
	int uffd;
	uint64_t features;	/* UFFD_FEATURE_* granted */
	bool wp;		/* write-protect tracking of shmem available */
	int inotify;
	int wake_fd;		/* eventfd: wakes the writeback thread */
	pthread_t fault_thread, wb_thread;
	struct um_config cfg;
	struct um_cache *held[4]; /* shared caches whose lock this thread holds */
	int nheld;
	bool remapping;		/* um_mremap moves regions: keep their pages, dirty */
	int fork_pipe[2];	/* a fork child says it has copied its private memory */
	uint64_t anon;		/* private anonymous bytes resident, sampled */
	uint64_t anon_at;	/* when (CLOCK_MONOTONIC ns) */
	struct um_stats st;	/* process counters (resident/dirty derived) */
	struct um_span recent[UM_RECENT]; /* by thread; replaced round robin */
	unsigned recent_next;
	struct um_cache *caches;
	struct um_region *regions; /* sorted by r_start, non-overlapping */
	size_t nregions, cap;
	int svc;		/* connection to the writeback service, -1 if none */
	int32_t svc_id;		/* this process's id there, in the caches' mapping
				 * tables (proto.h), 0 if none */
	bool svc_tried;		/* connecting failed once: do not retry */
	um_error_handler err_handler;
	void *err_arg;
};

extern struct um_engine um;

/* sys.c: raw system calls, so a preload shim can never recurse into them. */
void *sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *sys_mmap_engine(size_t len, int prot, int flags, int fd, off_t off); /* away from the caller's */
int sys_munmap(void *addr, size_t len);
int sys_mprotect(void *addr, size_t len, int prot);
int sys_madvise(void *addr, size_t len, int advice);
int sys_msync(void *addr, size_t len, int flags);
int sys_mlock(void *addr, size_t len);
int sys_munlock(void *addr, size_t len);
int sys_mlock2(void *addr, size_t len, unsigned flags);
void *sys_mremap(void *old, size_t old_size, size_t new_size, int flags, void *new_addr);
int sys_uffd_open(int *err);
int um_thread_start(pthread_t *t, void *(*fn)(void *)); /* every signal blocked; 0 or -errno */
int sys_uffd_api(int fd, uint64_t want, uint64_t *got);

/* engine.c: start-up, with the settings' defaults and the environment. */
int um_init(void); /* 0 or -errno; starts the engine once */
uint64_t um_parse_size(const char *s);
bool um_valid_fault_size(uint64_t v);

/* region.c: the sorted region map. */
size_t region_find(uintptr_t addr); /* index of first region with end > addr */
struct um_region *region_at(uintptr_t addr);
int region_reserve(size_t n); /* room for n regions, 0 or -ENOMEM */
int region_insert(const struct um_region *r);
int region_remove_range(uintptr_t start, uintptr_t end); /* 0 or -errno of writeback */
int region_split_at(uintptr_t addr);
void drop_unmapped(struct um_cache *c, uint64_t off, uint64_t len);
void mapping_put(struct um_mapping *m); /* drop a region's reference */
int cache_release(struct um_cache *c); /* drop a region's reference (region.c) */
int uffd_register(struct um_region *r);
int map_registered(struct um_region *r, int mflags, uint64_t off); /* r's cache over r, registered */
void uffd_reprotect(struct um_region *r); /* after the kernel dropped its WP bits */

/* cache.c: the engine lock (um.lock) and the caches under it. */
void um_lock(void);
void um_unlock(void); /* and the caches' locks taken under it */
void store_swap_set(const struct um_swap_store *s); /* store_swap.c, under um.lock */
struct um_cache *cache_get(int fd, const struct stat *st, bool want_write, bool *fresh, int *err);
struct um_cache *cache_new_anon(uint64_t len, bool shared, int *err);
int cache_shared_by_service(struct um_cache *c, int memfd, int statefd); /* 0 or errno */
void cache_watch(struct um_cache *c); /* inotify on a file cache's file */
void cache_drop(struct um_cache *c, uint64_t off, uint64_t len, bool clean_only); /* punch */
void cache_leave_table(struct um_cache *c); /* before the service is told */
void cache_free(struct um_cache *c);
void cache_lock(struct um_cache *c);	/* the cache's own lock, if shared */
bool cache_trylock(struct um_cache *c, bool *taken);
void cache_unlock(struct um_cache *c);
void cache_unlock_all(void);		/* and update changed mapping tables */
uint64_t cache_resident_all(void);	/* PRESENT bytes of every cache */
void cache_discard(struct um_cache *c, uint64_t off, uint64_t len); /* anonymous: to zeros */
int cache_extend(struct um_cache *c, uint64_t end);
int cache_fill(struct um_cache *c, uint64_t off, uint64_t len);
/* Bytes [off, off+len) of the memfd written to store s: bytes written or
 * -errno (of the memfd's read or the store's write). */
ssize_t cache_save(struct um_cache *c, struct um_store *s, uint64_t off, uint64_t len);
int cache_io(struct um_cache *c, bool wr, void *buf, size_t len, uint64_t off); /* pread/pwrite of the memfd */
void cache_zero(struct um_cache *c, uint64_t off, uint64_t len); /* within one page */
void cache_set_size(struct um_cache *c, uint64_t size);
void cache_grow_to(struct um_cache *c, uint64_t size);
int cache_refresh_size(struct um_cache *c);
struct um_cache *cache_by_wd(int wd);
struct um_cache *cache_by_file(dev_t dev, ino_t ino);

/* writeback.c: writeback (I3) and the writeback thread. */
int wb_range(struct um_cache *c, uint64_t off, uint64_t len);
int wb_cache(struct um_cache *c);
int wb_flush(struct um_cache *c, uint64_t off, uint64_t len); /* MS_SYNC */
void wb_all(void);
bool wp_protect_cache_range(struct um_cache *c, uint64_t off, uint64_t len);
int wb_start(void);
void wb_kick(void);
int wb_take_error(struct um_region *r);

/* evict.c: eviction under the budgets (I4). */
int evict_for(struct um_cache *c, uint64_t need, uint64_t busy_off, uint64_t busy_len, bool dirty_ok);
void anon_refresh(bool now);

/* signal.c: SIGBUS raised in a faulting thread on the fault thread's behalf. */
int um_signal_no(void);
int um_signal_install(void);
void um_signal_sigbus(pid_t tid, uintptr_t addr);
void um_signal_batch(void);

/* service.c: the library's side of the writeback service (proto.h). */
int svc_open(struct um_cache *c, int fd); /* the file's shared cache, in c */
void svc_release(struct um_cache *c); /* done with c: the service told, c freed */
void svc_share(struct um_cache *c, bool fresh, uint64_t size); /* with other processes */
uint64_t svc_procs(struct um_cache *c); /* processes that map c */
int svc_protect(struct um_cache *c, uint64_t off, uint64_t len); /* in others */
void svc_wb_error(struct um_cache *c, int err); /* a writeback of c failed */
void svc_check_errors(struct um_cache *c); /* others' failed writebacks of c's file */
void svc_fork_child(void);

/* Features ummap uses when the kernel has them. */
#define UM_WANT (UFFD_FEATURE_MISSING_SHMEM | UFFD_FEATURE_MINOR_SHMEM | UFFD_FEATURE_THREAD_ID | \
		 UFFD_FEATURE_EXACT_ADDRESS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM | UFFD_FEATURE_POISON)

/* fork.c: the handlers engine.c registers with pthread_atfork. */
void fork_prepare(void);
void fork_parent(void);
void fork_child(void);

/* fault.c */
int fault_start(void);

#endif
