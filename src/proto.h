/*
 * proto.h - the wire protocol between the library and the writeback service
 * (`ummap service`), and the layout of what they share.
 *
 * Why a service.  With kernel mmap a store belongs to the kernel's page
 * cache the moment it is made: it reaches the file even if the process is
 * then killed.  ummap's dirty pages live in a memfd, and which pages are
 * dirty in a second memfd (the page states, PG_* below); both are handed to
 * the service when the cache first becomes writable.  The service holds
 * them, watches the process (pidfd), and when the process ends without
 * having written everything back -- _exit, a crash, SIGKILL, exec -- it
 * writes back every page marked dirty or being written.  I2 (a page is
 * marked DIRTY before a store into it is possible) makes that complete.
 *
 * Connection: a SOCK_SEQPACKET unix socket in the abstract namespace, named
 * per user and protocol version (no file to squat or to follow); each side
 * checks the other's uid with SO_PEERCRED.  The library sends HELLO with
 * its userfaultfd and waits for the service's answer, so the service opens
 * the pidfd while the process is certainly alive (no pid reuse).  The answer
 * carries the process's id: its pid as the service sees it, which differs
 * from getpid() in another PID namespace; the process keys its entries in
 * the mapping tables (below) by it.  HELLO's off is the address of a page
 * the process never registers: an UFFDIO_WRITEPROTECT there tells the
 * service whether the process's address space still exists (ENOENT) or
 * not (ESRCH: it ended or exec'd).  Messages are struct um_msg.
 *
 * Reconnecting.  A process whose connection is lost (an answer that does
 * not come, the service killed) connects again, says HELLO, and sends OPEN
 * with UM_OPEN_HELD for each cache it shares: "I hold this file's cache,
 * here are its memfds".  The service keeps the memfds it is given then (a
 * new service adopts the old caches; the next processes get them), and a
 * connection that closes while its process's address space lives does not
 * end the process there: the service keeps its userfaultfd.  While a
 * process that has entries in a cache's table cannot be write-protected
 * (the service does not know it: it has not reconnected yet), WP answers
 * an error, and the asker keeps the range dirty.  STAT and RECOVER (from `ummap stat` / `ummap
 * recover`) are answered by text lines, one message each, ended by an
 * empty message.
 *
 * Shared caches.  The service is also where processes find each other's
 * caches: OPEN carries a descriptor of the file (proof that the process
 * could open it) and a fresh data and state memfd; the service answers
 * with the memfds of the file's cache, which are the fresh ones if no
 * process has the file cached (device and inode, read from the descriptor,
 * are the key).  The state memfd begins with struct um_shared: the lock
 * every process takes before touching the cache's pages or states, the
 * counters, and the table of the processes' write-tracked mappings.  A
 * process that cleans a page must first write-protect it in every mapping
 * of every process (I3): its own with its userfaultfd, the others' by WP,
 * which the service does with the userfaultfds it holds, while the asking
 * process holds the lock.  The cache is written back and closed when its
 * last process drops it or ends.
 *
 * Writeback errors, file by file.  The kernel reports a failed writeback
 * to the next fsync/msync of every process that has the file open (errseq
 * on the inode).  The service keeps the sequence: a process whose write
 * fails says so (WBERR, answered with the file's new sequence number), and
 * msync(MS_SYNC) asks (ERRQ) whether the file's sequence moved since the
 * process last looked; the service's own failed writebacks count too.
 */
#ifndef UM_PROTO_H
#define UM_PROTO_H

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

#define UM_PROTO_VERSION 5
/* Abstract socket name: "\0" UM_SERVICE_NAME "-<uid>". */
#define UM_SERVICE_NAME "ummap-service-v5"

/* Page state bits, one byte per page of a cache, in the state memfd. */
enum {
	PG_PRESENT = 1 << 0, /* in the memfd */
	PG_DIRTY = 1 << 1,   /* differs from the store */
	PG_REF = 1 << 2,     /* faulted since the clock hand last passed */
	PG_ZERO = 1 << 3,    /* zeros the error handler chose: never written back */
	PG_SWAPPED = 1 << 4, /* anonymous: its content is in the swap store */
	PG_WRITING = 1 << 5, /* being written back: not DIRTY, not yet in the file */
	PG_LAZYFREE = 1 << 6, /* private anonymous, MADV_FREE: dropped, not kept,
			       * by MADV_PAGEOUT until the next store (also
			       * while in swap) */
};

enum um_msg_type {
	UM_MSG_HELLO = 1,   /* library -> service, fd: its userfaultfd, off: a
			     * page it never registers; answered by HELLO, seq:
			     * its id */
	UM_MSG_OPEN,	    /* fds file, data, state: the file's cache, please;
			     * answered by OPEN with fds data, state (or err) */
	UM_MSG_DROP,	    /* dev/ino: this process is done with the cache */
	UM_MSG_STAT,	    /* what is kept and pending; text answer */
	UM_MSG_RECOVER,	    /* write back what dead processes left, now */
	UM_MSG_WBERR,	    /* a writeback of dev/ino failed with err; answered
			     * with the file's new seq */
	UM_MSG_ERRQ,	    /* dev/ino's seq and last err, please */
	UM_MSG_WP,	    /* write-protect [off, off+len) of dev/ino in the
			     * other processes (the asker holds the lock); answered,
			     * err set if a process could not be reached */
};

struct um_msg {
	uint32_t type;
	uint32_t version; /* UM_PROTO_VERSION */
	uint64_t dev, ino; /* the file */
	uint64_t off, len; /* WP: the range */
	uint64_t seq;	  /* answers: writeback errors of the file so far */
	int32_t err;	  /* WBERR, answers: the last one's errno */
	uint32_t flags;	  /* OPEN: UM_OPEN_HELD */
};

#define UM_OPEN_HELD 1 /* OPEN: the memfds sent are the cache this process
			* already shares (reconnecting), not fresh ones */

/* A write-tracked mapping of a shared cache by one process: cache offsets
 * [off, off+len) at address start.  id: the process's id at the service
 * (HELLO), 0 for a free slot.  A process writes only its own entries; the
 * service frees those of processes that are gone. */
struct um_map_ent {
	int32_t id;
	uint32_t pad;
	uint64_t start, off, len;
};

#define UM_SHARED_MAGIC 0x756d6d6170763501ULL /* "ummapv5" 1: the layout below */
#define UM_STATE_HDR (64UL << 10) /* the page states follow the header */
#define UM_MAX_MAPS ((UM_STATE_HDR - 256) / sizeof(struct um_map_ent))

/* The head of a cache's state memfd, shared by the processes that map the
 * file and the service. */
struct um_shared {
	uint64_t magic;
	pthread_mutex_t lock;	/* robust, process-shared */
	uint64_t resident;	/* PRESENT pages * page size */
	uint64_t dirty;		/* DIRTY pages * page size */
	uint64_t budget;	/* the file's budget across processes, 0 = none */
	uint64_t size;		/* the file's size, as a process last learned it */
	uint32_t nmaps;		/* slots of maps[] in use or freed */
	uint32_t pad;
	struct um_map_ent maps[UM_MAX_MAPS];
};
_Static_assert(sizeof(struct um_shared) <= UM_STATE_HDR, "the header fits");

/* Send m with descriptors fds[0..nfds), nfds <= 3, on sock: 0 or -errno. */
static inline int um_send_msg(int sock, const struct um_msg *m, const int *fds, int nfds)
{
	char ctl[CMSG_SPACE(3 * sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = (void *)m, .iov_len = sizeof *m };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	if (nfds) {
		mh.msg_control = ctl;
		mh.msg_controllen = CMSG_SPACE(nfds * sizeof(int));
		struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(nfds * sizeof(int));
		memcpy(CMSG_DATA(cm), fds, nfds * sizeof(int));
	}
	ssize_t n;
	while ((n = sendmsg(sock, &mh, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	return n == (ssize_t)sizeof *m ? 0 : -errno;
}

/* The service's address for user uid; returns its length. */
static inline socklen_t um_service_addr(struct sockaddr_un *a, uid_t uid)
{
	memset(a, 0, sizeof *a);
	a->sun_family = AF_UNIX;
	int n = snprintf(a->sun_path + 1, sizeof a->sun_path - 1, "%s-%u", UM_SERVICE_NAME, (unsigned)uid);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

#endif
