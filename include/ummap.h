/*
 * ummap.h - memory-mapped file I/O with paging done in user space.
 *
 * The um_* mapping calls take the same arguments, return the same values,
 * set the same errno and raise the same signals as mmap(2), munmap(2),
 * msync(2), mprotect(2), madvise(2) and mremap(2).  Pages of a ummap
 * mapping are cached by ummap itself (one cache per file, shared by every
 * mapping of that file), brought in by its own fault handling, bounded by
 * a memory budget and written back by ummap.
 *
 * Caveats (see the README for the complete list of differences):
 *  - Only memory returned by um_mmap is managed by ummap; pass it to the
 *    um_* calls, not to the libc ones.
 *  - A file shrunk behind ummap's back (ftruncate on another descriptor)
 *    is noticed at the next fault or by the watcher a moment later; use
 *    um_ftruncate to make the change take effect at once.
 *  - Child processes after fork() do not inherit ummap mappings yet.
 *
 * The library starts on first use with defaults and the environment
 * (UMMAP_BUDGET, UMMAP_FAULT_SIZE, UMMAP_WRITEBACK_MS); um_configure may be
 * called first to set them from code.
 */
#ifndef UMMAP_H
#define UMMAP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UMMAP_VERSION_MAJOR 0
#define UMMAP_VERSION_MINOR 1
#define UMMAP_VERSION_PATCH 0

/* The mapping calls: see the um_mmap(3) family of man pages. */
void *um_mmap(void *addr, size_t length, int prot, int flags, int fd,
	      off_t offset);
int um_munmap(void *addr, size_t length);
int um_msync(void *addr, size_t length, int flags);
int um_mprotect(void *addr, size_t length, int prot);
int um_madvise(void *addr, size_t length, int advice);
void *um_mremap(void *old_address, size_t old_size, size_t new_size,
		int flags, ... /* void *new_address */);

/*
 * ftruncate(2) that also tells ummap's caches of the file at once: pages
 * beyond the new end raise SIGBUS from the moment it returns, as with the
 * kernel's own page cache.
 */
int um_ftruncate(int fd, off_t length);

/* Process-wide settings; zero fields keep the current value. */
struct um_config {
	uint64_t budget;	/* bytes of cached and mapped pages, hard */
	uint64_t fault_size;	/* bytes brought in per fault, 4 KiB..2 MiB */
	uint64_t readahead_max;	/* bytes read ahead on a sequential scan */
	uint64_t writeback_ms;	/* dirty pages reach the file within this */
};
int um_configure(const struct um_config *cfg);
int um_get_config(struct um_config *cfg);

/*
 * Settings for the mapping (the whole range one um_mmap call made, even if
 * later split) that contains addr.  The budget is its file's: it bounds the
 * cache that every mapping of the file shares.
 */
enum um_param {
	UM_PARAM_BUDGET = 1,	 /* bytes the file's cache may hold, 0 = no own limit */
	UM_PARAM_FAULT_SIZE = 2, /* bytes per fault for this mapping */
	UM_PARAM_READAHEAD = 3,	 /* max readahead for this mapping, 0 = off */
};
int um_mapping_set(void *addr, enum um_param param, uint64_t value);

/*
 * Read errors.  By default a page that cannot be read raises SIGBUS
 * (si_code BUS_ADRERR, si_addr the faulting address) in the thread that
 * touched it, as the kernel does.  A handler registered here is called
 * instead, in ummap's fault-serving thread, with the faulting address, the
 * mapped file's descriptor (owned by ummap: do not close it), the file
 * offset and the errno; it returns what to do with the fault.
 */
enum um_error_action {
	UM_ERROR_SIGBUS = 0, /* deliver SIGBUS as the kernel would */
	UM_ERROR_RETRY = 1,  /* read the page again */
	UM_ERROR_ZERO = 2,   /* map a page of zeros (never written back) */
};
typedef enum um_error_action (*um_error_handler)(void *addr, int fd,
						  off_t offset, int err,
						  void *arg);
int um_set_error_handler(um_error_handler handler, void *arg);

/*
 * Where anonymous memory's evicted pages go.  By default each anonymous
 * mapping that outgrows the budget gets an unnamed file in $TMPDIR
 * (O_TMPFILE, mode 0600).  A store set here is used by the anonymous
 * mappings whose first eviction comes after: open() makes an empty store
 * for one mapping; read() and write() move len bytes at offset off (bytes
 * never written read as zeros) and return len or -errno; discard() (may be
 * NULL) says a range is no longer needed; close() ends it, at the last
 * munmap.  The callbacks run under ummap's lock, in its threads: they must
 * not call um_* functions or touch ummap mappings.  After fork() a store
 * may be used by both processes (shared anonymous memory stays shared), and
 * each closes its handle.  NULL restores the default.
 */
#define UM_SWAP_STORE_VERSION 1
struct um_swap_store {
	int version;	/* UM_SWAP_STORE_VERSION */
	void *arg;	/* passed to open */
	void *(*open)(void *arg); /* a handle, or NULL with errno set */
	ssize_t (*read)(void *h, void *buf, size_t len, uint64_t off);
	ssize_t (*write)(void *h, const void *buf, size_t len, uint64_t off);
	int (*discard)(void *h, uint64_t off, uint64_t len);
	void (*close)(void *h);
};
int um_set_swap_store(const struct um_swap_store *store);

/*
 * Counters, for the process (addr NULL) or for the mapping containing addr
 * (what one um_mmap call made, however split or moved since).  For a
 * mapping, the fault counters and bytes_read are its own, resident_bytes
 * and dirty_bytes count the cached pages of the ranges it maps, and
 * bytes_written, evictions and writebacks are those this process made in
 * its file's cache, which all mappings of the file share; the cache_*
 * fields describe that cache across every process that maps the file.
 */
struct um_stats {
	uint64_t faults;	  /* page faults served */
	uint64_t hits;		  /* faults found in the cache */
	uint64_t misses;	  /* faults that read the store */
	uint64_t wp_faults;	  /* first writes to clean pages */
	uint64_t bytes_read;	  /* from stores, faults and readahead */
	uint64_t bytes_written;	  /* to stores, by writeback */
	uint64_t readahead_bytes; /* read ahead of the faulting address */
	uint64_t evictions;	  /* pages dropped from the cache */
	uint64_t writebacks;	  /* pages written back */
	uint64_t resident_bytes;  /* cached bytes now, and private anon (process) */
	uint64_t dirty_bytes;	  /* of which dirty */
	uint64_t budget;	  /* the budget in force */
	uint64_t mappings;	  /* regions (VMAs) ummap manages, or of the mapping */
	uint64_t anon_bytes;	  /* of resident_bytes, private anonymous (process) */
	/* A mapping's file cache, which every process mapping the file
	 * shares (0 for the process): */
	uint64_t cache_bytes;	  /* cached bytes of the file, all processes */
	uint64_t cache_budget;	  /* the file's own budget, 0 = none */
	uint64_t cache_procs;	  /* processes that map the file through ummap */
};
int um_stats(void *addr, struct um_stats *st);

/* Kernel features ummap found at start, for `ummap check`. */
struct um_features {
	int uffd_ok;	     /* a userfaultfd could be opened */
	int uffd_errno;	     /* why not, if it could not */
	uint64_t features;   /* UFFD_FEATURE_* bits the kernel offers */
	int minor_shmem;     /* MINOR faults on shared memory */
	int wp_shmem;	     /* write-protect on shared memory */
	int thread_id;	     /* faulting thread id in events */
	int poison;	     /* UFFDIO_POISON */
};
int um_features(struct um_features *f);

#ifdef __cplusplus
}
#endif
#endif /* UMMAP_H */
