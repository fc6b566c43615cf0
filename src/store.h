/*
 * store.h - where a cache's pages come from and go to.
 *
 * The fault path, readahead, eviction and writeback talk only to this table,
 * so the file store, a swap store for anonymous memory and remote stores are
 * peers.  Every operation returns bytes transferred or -errno; a short read
 * means end of data (the rest of the page reads as zeros).
 */
#ifndef UM_STORE_H
#define UM_STORE_H

#include <stdint.h>
#include <sys/types.h>

struct um_store;

struct um_store_ops {
	int version; /* 1 */
	ssize_t (*read)(struct um_store *s, void *buf, size_t len, uint64_t off);
	ssize_t (*write)(struct um_store *s, const void *buf, size_t len, uint64_t off);
	int (*size)(struct um_store *s, uint64_t *size);
	int (*flush)(struct um_store *s); /* durable: data written so far */
	int (*discard)(struct um_store *s, uint64_t off, uint64_t len); /* may be NULL:
				 * the range is no longer needed (reads zeros) */
	void (*close)(struct um_store *s);
};

struct um_store {
	const struct um_store_ops *ops;
	int fd; /* the file for the file store, -1 otherwise */
	int writable;
};

/* store_file.c: the default store, a regular file. */
struct um_store *store_file_open(int fd, int want_write, int *err);
int store_file_upgrade(struct um_store *s, int fd);
/* store_swap.c: where anonymous memory's evicted pages go, the default or
 * the application's (um_set_swap_store). */
struct um_store *store_swap_open(int *err);

/* Fault injection for tests: when set, reads, writes or flushes of the
 * file store fail with this errno (0 = off). */
extern int store_fail_read, store_fail_write, store_fail_flush;

#endif
