/*
 * writeback.c - dirty pages back to the store (eviction, its client, is
 * evict.c).
 *
 * Writeback of a run follows I3: write-protect the run in every shared
 * region that maps it (in other processes too, through the service, when
 * the cache is shared), clear DIRTY, then write.  A store racing with the
 * write takes a WP fault, which sets DIRTY again, so it is written next
 * time.  A failed write sets DIRTY back and records the errno in the cache
 * (c_wb_err, c_wb_seq), which the next msync or munmap of each region
 * reports once, like the kernel's errseq; the data stays and is retried.
 *
 * The writeback thread writes everything dirty every writeback_ms / 2, so a
 * page reaches the file within writeback_ms of its first store.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

/* Write-protect [off, off+len) of cache c in every region that tracks
 * writes, or (anonymous memory) is registered for write protection, and in
 * the other processes that map c.  False if that could not be done in the
 * others (the service is gone): then the range must not be taken as clean. */
bool wp_protect_cache_range(struct um_cache *c, uint64_t off, uint64_t len)
{
	for (size_t i = 0; i < um.nregions; i++) {
		struct um_region *r = &um.regions[i];
		if (r->r_cache != c || !REGION_WP(r))
			continue;
		uint64_t rlen = r->r_end - r->r_start;
		uint64_t lo = off > r->r_off ? off : r->r_off;
		uint64_t hi = off + len < r->r_off + rlen ? off + len : r->r_off + rlen;
		if (lo >= hi)
			continue;
		struct uffdio_writeprotect wp = {
			.range = { .start = r->r_start + (lo - r->r_off), .len = hi - lo },
			.mode = UFFDIO_WRITEPROTECT_MODE_WP,
		};
		/* Fails only for a range the kernel no longer maps (a race
		 * with munmap outside ummap), where there is nothing to protect. */
		ioctl(um.uffd, UFFDIO_WRITEPROTECT, &wp);
	}
	return !c->c_shared || svc_protect(c, off, len) == 0;
}

static int wb_run(struct um_cache *c, uint64_t p, uint64_t q)
{
	uint64_t off = p * UM_PAGE, len = (q - p) * UM_PAGE;
	/* A run not protected everywhere is written but stays dirty: a store
	 * made meanwhile elsewhere is then written next time too. */
	bool clean = um.wp && wp_protect_cache_range(c, off, len);
	if (clean) {
		/* WRITING keeps the run owed to the file until the write is
		 * done, should the process die in between (proto.h). */
		for (uint64_t i = p; i < q; i++)
			c->c_pstate[i] = (uint8_t)((c->c_pstate[i] & ~PG_DIRTY) | PG_WRITING);
		c->c_sh->dirty -= len;
	}
	/* Bytes past the end of the file never reach it (as with the kernel). */
	uint64_t wlen = off >= c->c_size ? 0 : (off + len > c->c_size ? c->c_size - off : len);
	ssize_t n = wlen ? cache_save(c, c->c_store, off, wlen) : 0;
	if (clean)
		for (uint64_t i = p; i < q; i++)
			c->c_pstate[i] = (uint8_t)((c->c_pstate[i] & ~PG_WRITING) | (n < 0 ? PG_DIRTY : 0));
	if (n < 0) {
		if (clean)
			c->c_sh->dirty += len;
		c->c_wb_err = (int)-n;
		c->c_wb_seq++;
		svc_wb_error(c, (int)-n);
		return (int)n;
	}
	/* Like the kernel's writeback of the page that straddles the end of
	 * file (ext4_bio_write_folio, block_write_full_folio), zero what lies
	 * beyond the end in it: stores there are not file data. */
	uint64_t eofpg = um_pgup(c->c_size);
	if (c->c_size > off && c->c_size < off + len && c->c_size < eofpg)
		cache_zero(c, c->c_size, eofpg - c->c_size);
	c->c_st.bytes_written += (uint64_t)n;
	um.st.bytes_written += (uint64_t)n;
	c->c_st.writebacks += q - p;
	um.st.writebacks += q - p;
	return 0;
}

/* Write back the dirty pages of [off, off+len).  0 or the first -errno. */
int wb_range(struct um_cache *c, uint64_t off, uint64_t len)
{
	cache_lock(c);
	/* A process that cannot write the file leaves other processes'
	 * stores to them (or to the service). */
	if (!c->c_store || !c->c_sh->dirty || !c->c_store->writable)
		return 0;
	/* What reaches the file is clipped at its end: that end must be the
	 * file's now, not the one last seen (a write(2) may have grown it,
	 * and the stores beyond the old end are then file data). */
	cache_refresh_size(c);
	uint64_t p = off / UM_PAGE, end = um_pgup(off + len) / UM_PAGE;
	if (end > c->c_wext / UM_PAGE)
		end = c->c_wext / UM_PAGE;
	int err = 0;
	while (p < end) {
		uint8_t s = c->c_pstate[p];
		if (!(s & PG_DIRTY) || (s & PG_ZERO)) {
			/* A page of zeros standing in for unreadable data must
			 * never overwrite it: its stores are dropped. */
			if ((s & PG_DIRTY) && um.wp) {
				c->c_pstate[p] &= (uint8_t)~PG_DIRTY;
				c->c_sh->dirty -= UM_PAGE;
			}
			p++;
			continue;
		}
		uint64_t q = run_end(c->c_pstate, p, end, PG_DIRTY | PG_ZERO, PG_DIRTY);
		int e = wb_run(c, p, q);
		if (e && !err)
			err = e;
		p = q;
	}
	return err;
}

/*
 * Make what was written of [off, off+len) durable (MS_SYNC).  When the
 * flush fails, the kernel may have dropped the pages it could not write
 * (it marks them clean after a failed writeback): every present page of the
 * range is marked dirty again, so the data still in the cache is written
 * again and nothing depends on the kernel's copy.
 */
int wb_flush(struct um_cache *c, uint64_t off, uint64_t len)
{
	cache_lock(c);
	int e = c->c_store->ops->flush(c->c_store);
	if (e)
		svc_wb_error(c, -e);
	if (!e || !um.wp)
		return e;
	uint64_t p = off / UM_PAGE, end = um_pgup(off + len) / UM_PAGE;
	if (end > c->c_wext / UM_PAGE)
		end = c->c_wext / UM_PAGE;
	for (; p < end; p++)
		if ((c->c_pstate[p] & (PG_PRESENT | PG_DIRTY | PG_ZERO)) == PG_PRESENT) {
			c->c_pstate[p] |= PG_DIRTY;
			c->c_sh->dirty += UM_PAGE;
		}
	return e;
}

int wb_cache(struct um_cache *c)
{
	return wb_range(c, 0, c->c_wext);
}

/* Write back every cache; free the ones no region maps any more. */
void wb_all(void)
{
	struct um_cache *c = um.caches, *next;
	for (; c; c = next) {
		next = c->c_next;
		if (c->c_sh->dirty)
			wb_cache(c);
		if (c->c_refs == 0 && !c->c_sh->dirty)
			svc_release(c);
	}
}

/* The error a region has not yet reported, consumed (errseq-like). */
int wb_take_error(struct um_region *r)
{
	struct um_cache *c = r->r_cache;
	if (!c || c->c_wb_seq == r->r_wb_seen)
		return 0;
	r->r_wb_seen = c->c_wb_seq;
	return c->c_wb_err;
}

void wb_kick(void)
{
	uint64_t one = 1;
	if (write(um.wake_fd, &one, sizeof one) < 0) {
		/* The counter is saturated: a wakeup is already pending. */
	}
}

static void *wb_thread(void *arg)
{
	for (;;) {
		struct pollfd pfd = { .fd = um.wake_fd, .events = POLLIN };
		/* um_configure may change it under the lock meanwhile. */
		uint64_t ms = __atomic_load_n(&um.cfg.writeback_ms, __ATOMIC_RELAXED) / 2;
		int n = poll(&pfd, 1, ms > INT32_MAX ? INT32_MAX : (int)(ms ? ms : 1));
		if (n > 0) {
			uint64_t v;
			if (read(um.wake_fd, &v, sizeof v) < 0) {
				/* EAGAIN: another reader drained it; write back anyway. */
			}
		}
		um_lock();
		wb_all();
		um_unlock();
	}
	return arg;
}

int wb_start(void)
{
	um.wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (um.wake_fd < 0)
		return -errno;
	return um_thread_start(&um.wb_thread, wb_thread);
}
