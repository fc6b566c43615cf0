/*
 * service.c - `ummap service`, the per-user writeback service, and the
 * `ummap stat` / `ummap recover` commands that talk to it (proto.h: why
 * and how).
 *
 * The service keeps the caches of the user's files (proto.h): the first
 * process to map a file hands its fresh memfds over, the next ones get
 * the same (OPEN), so they share one cache.  It holds each client's
 * userfaultfd, with which it write-protects a range of a cache in the
 * processes that map it, for the one that is about to clean it (WP).  When
 * the last process using a cache drops it, or ends -- its pidfd says the
 * process is gone, or its connection closes (exec, or it closed our
 * socket) -- every page whose state is DIRTY or WRITING (and not ZERO) is
 * written from the data memfd to the file, clipped at the file's current
 * end, and the cache is closed.  A cache whose writeback fails (ENOSPC,
 * EIO) is kept and retried every second (and given to the next process
 * that maps the file), `ummap stat` shows it and `ummap recover` retries it
 * at once.  It also keeps each file's writeback error sequence (proto.h),
 * so that msync in every process reports a write that failed in another.
 * With no client and nothing pending for a while, the service exits.
 *
 * A connection that closes while its process's address space lives (the
 * library gave it up, proto.h: Reconnecting) leaves the client
 * disconnected, not ended: its userfaultfd and caches are kept, and its
 * HELLO on a new connection takes them over.  A client ends when its
 * process does, or its address space (exec).  The table entries of ended
 * processes are freed here (scrub), when the cache's lock is free.
 *
 * Started by the library (--daemon), the service leaves the application's
 * cgroups for its own (leave_cgroups), so that what stops the application
 * (its cgroup killed, an OOM group kill) does not stop it.
 *
 * One thread, one poll loop; a client's messages are handled in order.  It
 * never waits for a cache's lock (the process asking for WP holds it).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "compat.h"
#include "proto.h"
#include "service.h"

#define PAGE 4096UL
#define MAX_CLIENTS 1024
#define RETRY_MS 1000

/* A file's cache. */
struct cache {
	dev_t dev;
	ino_t ino;
	ino_t data_ino;	  /* the data memfd's inode: which cache a held OPEN means */
	bool scrub_due;	  /* table entries of ended processes to free */
	int file, data, state;
	struct um_shared *hdr; /* the state memfd's header, mapped */
	int users;	  /* clients that opened it and did not drop it */
	int err;	  /* errno of the last failed writeback, 0 if none */
	char path[256];	  /* for the operator */
	struct cache *next;
};
static struct cache *caches;

struct use {
	struct cache *c;
	struct use *next;
};

struct client {
	int sock, pidfd, uffd; /* sock -1: disconnected */
	pid_t pid;	  /* as this service sees it: the process's id (proto.h) */
	uint64_t probe;	  /* HELLO's page that is never registered */
	bool ended;	  /* its process (or address space) is gone; the record
			   * stays while the process does (pidfd), so its id reads
			   * as gone */
	struct use *uses; /* caches it opened */
};

static struct client clients[MAX_CLIENTS];
static int nclients;

/* Files whose writeback failed: how often, and the last errno. */
struct file_errors {
	dev_t dev;
	ino_t ino;
	uint64_t seq;
	int err;
	struct file_errors *next;
};
static struct file_errors *errors;

static struct file_errors *errors_of(dev_t dev, ino_t ino, bool add)
{
	struct file_errors *f = errors;
	while (f && (f->dev != dev || f->ino != ino))
		f = f->next;
	if (!f && add && (f = calloc(1, sizeof *f))) {
		f->dev = dev;
		f->ino = ino;
		f->next = errors;
		errors = f;
	}
	return f;
}

static void note_error(dev_t dev, ino_t ino, int err)
{
	struct file_errors *f = errors_of(dev, ino, true);
	if (f) {
		f->seq++;
		f->err = err;
	}
}
static bool foreground;
static unsigned idle_s = 30;

static void say(const char *fmt, ...)
{
	if (!foreground)
		return;
	va_list ap;
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
}

static void cache_close(struct cache *c)
{
	struct cache **p = &caches;
	while (*p != c)
		p = &(*p)->next;
	*p = c->next;
	munmap(c->hdr, UM_STATE_HDR);
	close(c->file);
	close(c->data);
	close(c->state);
	free(c);
}

/* Pages owed to the file: dirty or being written, not error zeros. */
static bool owed(uint8_t s)
{
	return (s & (PG_DIRTY | PG_WRITING)) && !(s & PG_ZERO);
}

/* The page states of c, mapped (*n of them), or NULL. */
static uint8_t *states(const struct cache *c, uint64_t *n, int prot)
{
	struct stat st;
	if (fstat(c->state, &st) < 0 || (uint64_t)st.st_size <= UM_STATE_HDR)
		return NULL;
	*n = (uint64_t)st.st_size - UM_STATE_HDR;
	uint8_t *ps = mmap(NULL, *n, prot, MAP_SHARED, c->state, UM_STATE_HDR);
	return ps == MAP_FAILED ? NULL : ps;
}

/* Bytes c's states mark as owed to the file. */
static uint64_t pending_bytes(const struct cache *c)
{
	uint64_t n, owe = 0;
	uint8_t *ps = states(c, &n, PROT_READ);
	for (uint64_t p = 0; ps && p < n; p++)
		owe += owed(ps[p]) ? PAGE : 0;
	if (ps)
		munmap(ps, n);
	return owe;
}

static int write_all(int fd, const uint8_t *buf, uint64_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, buf, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? errno : EIO;
		buf += n;
		len -= (uint64_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Write back what c owes its file, with nobody using it.  0, or the errno
 * (c is then kept). */
static int settle_locked(struct cache *c, uint64_t *written)
{
	struct stat fst, dst;
	uint64_t n;
	if (fstat(c->file, &fst) < 0 || fstat(c->data, &dst) < 0)
		return errno;
	uint8_t *ps = states(c, &n, PROT_READ);
	if (!ps)
		return 0;
	uint64_t fsize = (uint64_t)fst.st_size, dsize = (uint64_t)dst.st_size;
	uint64_t limit = (fsize < dsize ? fsize : dsize);
	int err = 0;
	for (uint64_t p = 0; p < n && p * PAGE < limit && !err;) {
		if (!owed(ps[p])) {
			p++;
			continue;
		}
		uint64_t q = p;
		while (q < n && owed(ps[q]) && q * PAGE < limit)
			q++;
		/* A file truncated since is not extended: bytes past its end now
		 * are not file data (as the kernel drops such pages). */
		uint64_t off = p * PAGE, len = (q - p) * PAGE;
		if (off + len > limit)
			len = limit - off;
		uint8_t *d = mmap(NULL, len, PROT_READ, MAP_SHARED, c->data, (off_t)off);
		if (d == MAP_FAILED) {
			err = errno;
			break;
		}
		err = write_all(c->file, d, len, off);
		munmap(d, len);
		if (!err)
			*written += len;
		p = q;
	}
	munmap(ps, n);
	return err;
}

/* After a process died holding c's lock: what it was writing is owed to
 * the file again, and the counters are recounted (as the library's
 * cache_repair does). */
static void repair(struct cache *c)
{
	uint64_t n, resident = 0, dirty = 0;
	uint8_t *ps = states(c, &n, PROT_READ | PROT_WRITE);
	for (uint64_t p = 0; ps && p < n; p++) {
		if (ps[p] & PG_WRITING)
			ps[p] = (uint8_t)((ps[p] & ~PG_WRITING) | PG_DIRTY);
		resident += (ps[p] & PG_PRESENT) ? PAGE : 0;
		dirty += (ps[p] & PG_DIRTY) ? PAGE : 0;
	}
	if (ps)
		munmap(ps, n);
	c->hdr->resident = resident;
	c->hdr->dirty = dirty;
}

/* Take c's lock if it is free, or was held by a process that died
 * (robust: then taken over); never waited for. */
static bool lock_free(struct cache *c)
{
	int e = pthread_mutex_trylock(&c->hdr->lock);
	if (e == EOWNERDEAD) {
		repair(c);
		pthread_mutex_consistent(&c->hdr->lock);
	}
	return !e || e == EOWNERDEAD;
}

static int settle(struct cache *c, uint64_t *written)
{
	if (!lock_free(c))
		return EAGAIN;
	int e = settle_locked(c, written);
	pthread_mutex_unlock(&c->hdr->lock);
	return e;
}

/* The record of process pid: a client, or (ended) one that is gone. */
static struct client *by_pid(pid_t pid, bool ended)
{
	for (int i = 0; i < nclients; i++)
		if (clients[i].pid == pid && clients[i].ended == ended && (ended || clients[i].uffd >= 0))
			return &clients[i];
	return NULL;
}

/* Are the table entries of id those of a process that is gone (or of an
 * address space that is)?  An id this service never saw may be a process
 * that has not reconnected yet: gone only if no such process exists. */
static bool id_gone(int32_t id)
{
	if (by_pid(id, false))
		return false;
	return by_pid(id, true) || (kill(id, 0) < 0 && errno == ESRCH);
}

/* Free c's table entries of processes that are gone, now if c's lock is
 * free, else at a later turn of the loop. */
static void scrub(struct cache *c)
{
	c->scrub_due = !lock_free(c);
	if (c->scrub_due)
		return;
	struct um_shared *h = c->hdr;
	if (h->nmaps > UM_MAX_MAPS)
		h->nmaps = UM_MAX_MAPS;
	for (uint32_t i = 0; i < h->nmaps; i++)
		if (h->maps[i].id && id_gone(h->maps[i].id))
			h->maps[i].id = 0;
	while (h->nmaps && !h->maps[h->nmaps - 1].id)
		h->nmaps--;
	pthread_mutex_unlock(&h->lock);
}

/* A cache nobody uses any more: written back and closed, or kept. */
static void release(struct cache *c, pid_t who)
{
	if (c->users)
		return;
	uint64_t written = 0;
	int e = settle(c, &written);
	if (e) {
		if (e != c->err && e != EAGAIN) {
			say("ummap service: %s: writeback failed (%s), will retry\n", c->path, strerror(e));
			note_error(c->dev, c->ino, e);
		}
		c->err = e;
		return;
	}
	if (written)
		say("ummap service: pid %d ended: %llu bytes written to %s\n", (int)who,
		    (unsigned long long)written, c->path);
	cache_close(c);
}

/* The process (or its address space) is gone: its caches are released and
 * its table entries freed. */
static void client_end(struct client *cl)
{
	if (cl->ended)
		return;
	if (cl->sock >= 0)
		close(cl->sock);
	if (cl->uffd >= 0)
		close(cl->uffd);
	cl->sock = cl->uffd = -1;
	cl->ended = true;
	while (cl->uses) {
		struct use *u = cl->uses;
		cl->uses = u->next;
		scrub(u->c);
		u->c->users--;
		release(u->c, cl->pid);
		free(u);
	}
}

/* Does cl's address space still exist?  (proto.h: the probe page.) */
static bool mm_alive(const struct client *cl)
{
	struct uffdio_writeprotect wp = { .range = { cl->probe, PAGE }, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
	return cl->uffd >= 0 && (ioctl(cl->uffd, UFFDIO_WRITEPROTECT, &wp) == 0 || errno != ESRCH);
}

/* The connection closed (or said nonsense): the client ends, unless its
 * address space lives on -- the library gave the connection up and will
 * connect again; meanwhile its userfaultfd still protects its pages. */
static void disconnect(struct client *cl)
{
	close(cl->sock);
	cl->sock = -1;
	if (!mm_alive(cl))
		client_end(cl);
}

/* cl says HELLO with its userfaultfd: another record of its process (a
 * connection it gave up) passes its caches on to it. */
static void take_over(struct client *cl)
{
	for (int i = 0; i < nclients; i++) {
		struct client *o = &clients[i];
		if (o == cl || o->pid != cl->pid || o->ended || o->uffd < 0)
			continue;
		if (!mm_alive(o)) {
			client_end(o); /* an exec'd image's */
			continue;
		}
		struct use **tail = &cl->uses;
		while (*tail)
			tail = &(*tail)->next;
		*tail = o->uses;
		o->uses = NULL;
		if (o->sock >= 0)
			close(o->sock);
		if (o->pidfd >= 0)
			close(o->pidfd);
		close(o->uffd);
		*o = (struct client){ .sock = -1, .pidfd = -1, .uffd = -1, .ended = true };
	}
}

static void reply(int sock, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line, fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof line)
		n = sizeof line - 1;
	send(sock, line, (size_t)n, MSG_NOSIGNAL);
}

static void report(int sock, bool recover)
{
	unsigned pending = 0, n = 0, procs = 0;
	for (int i = 0; i < nclients; i++)
		procs += !clients[i].ended;
	for (struct cache *c = caches, *next; c; c = next) {
		next = c->next;
		if (recover && !c->users) {
			c->err = 0;
			release(c, 0);
		}
	}
	for (struct cache *c = caches; c; c = c->next) {
		n++;
		pending += !c->users;
		char budget[40] = "";
		if (c->hdr->budget)
			snprintf(budget, sizeof budget, ", budget %llu KiB", (unsigned long long)c->hdr->budget >> 10);
		reply(sock, "%-7s %10llu bytes dirty  %s  (%d process(es), %llu KiB cached%s)%s%s\n",
		      c->users ? "in use" : "ended", (unsigned long long)pending_bytes(c), c->path, c->users,
		      (unsigned long long)c->hdr->resident >> 10, budget, c->err ? "  last error: " : "",
		      c->err ? strerror(c->err) : "");
	}
	reply(sock, "%u process(es), %u cache(s) kept, %u left behind by ended processes%s\n", procs, n, pending,
	      pending ? (recover ? ": still failing" : " (ummap recover retries)") : "");
	send(sock, "", 0, MSG_NOSIGNAL);
}

static void take_fds(struct msghdr *mh, int *fds, int *nfds)
{
	*nfds = 0;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		int n = (int)((cm->cmsg_len - CMSG_LEN(0)) / sizeof(int));
		for (int i = 0; i < n; i++) {
			int fd;
			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
			if (*nfds < 3)
				fds[(*nfds)++] = fd;
			else
				close(fd);
		}
	}
}

/* The file's cache; held: the one whose data memfd is data (a client that
 * reconnects holds that one, even if another was made meanwhile). */
static struct cache *cache_of(dev_t dev, ino_t ino, bool held, int data)
{
	struct stat st;
	if (held && fstat(data, &st) < 0)
		return NULL;
	struct cache *c = caches;
	while (c && (c->dev != dev || c->ino != ino || (held && c->data_ino != st.st_ino)))
		c = c->next;
	return c;
}

static bool writable(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	return fl >= 0 && (fl & O_ACCMODE) != O_RDONLY;
}

/* fds: the file (the client could open it: it may have its cache), a fresh
 * data and state memfd, or (held) those of the cache the client shares.
 * The file's cache, made of them if it has none. */
static struct cache *open_cache(struct client *cl, const int *fds, bool held)
{
	struct stat st;
	if (fstat(fds[0], &st) < 0 || !S_ISREG(st.st_mode))
		return NULL;
	struct cache *c = cache_of(st.st_dev, st.st_ino, held, fds[1]);
	if (c) {
		/* A writable descriptor lets the service write back. */
		if (!writable(c->file) && writable(fds[0])) {
			close(c->file);
			c->file = fds[0];
		} else {
			close(fds[0]);
		}
		close(fds[1]);
		close(fds[2]);
	} else {
		struct um_shared *h = mmap(NULL, UM_STATE_HDR, PROT_READ | PROT_WRITE, MAP_SHARED, fds[2], 0);
		if (h == MAP_FAILED || h->magic != UM_SHARED_MAGIC || !(c = calloc(1, sizeof *c))) {
			if (h != MAP_FAILED)
				munmap(h, UM_STATE_HDR);
			return NULL;
		}
		struct stat dst;
		fstat(fds[1], &dst);
		*c = (struct cache){ .dev = st.st_dev, .ino = st.st_ino, .data_ino = dst.st_ino, .file = fds[0],
				     .data = fds[1], .state = fds[2], .hdr = h, .next = caches };
		char link[64];
		snprintf(link, sizeof link, "/proc/self/fd/%d", c->file);
		ssize_t n = readlink(link, c->path, sizeof c->path - 1);
		c->path[n > 0 ? n : 0] = 0;
		struct stat sst;
		if (fstat(fds[2], &sst) == 0 && sst.st_ino == st.st_ino && sst.st_dev == st.st_dev)
			snprintf(c->path, sizeof c->path, "(shared anonymous memory, shared across fork)");
		caches = c;
		if (held)
			scrub(c); /* entries of processes gone since a former service */
	}
	for (struct use *u = cl->uses; u; u = u->next)
		if (u->c == c)
			return c;
	struct use *u = malloc(sizeof *u);
	if (!u)
		return NULL;
	*u = (struct use){ .c = c, .next = cl->uses };
	cl->uses = u;
	c->users++;
	c->err = 0; /* a new user writes back what an ended one left */
	return c;
}

static void drop_cache(struct client *cl, dev_t dev, ino_t ino)
{
	for (struct use **up = &cl->uses; *up; up = &(*up)->next) {
		struct cache *c = (*up)->c;
		if (c->dev == dev && c->ino == ino) {
			struct use *u = *up;
			*up = u->next;
			free(u);
			c->users--;
			release(c, cl->pid);
			return;
		}
	}
}

/* Write-protect [off, off+len) of the cache in every process but the
 * asker's that maps it (its table of mappings; the asker holds the lock).
 * An error if a process that may store there could not be reached. */
static int protect(struct client *asker, dev_t dev, ino_t ino, uint64_t off, uint64_t len)
{
	struct use *u = asker->uses;
	while (u && (u->c->dev != dev || u->c->ino != ino))
		u = u->next;
	if (!u)
		return ENOENT; /* not a cache the asker opened */
	struct um_shared *h = u->c->hdr;
	int err = 0;
	for (uint32_t i = 0; i < h->nmaps && i < UM_MAX_MAPS; i++) {
		struct um_map_ent e = h->maps[i];
		uint64_t lo = off > e.off ? off : e.off, hi = off + len < e.off + e.len ? off + len : e.off + e.len;
		if (!e.id || e.id == asker->pid || lo >= hi)
			continue;
		struct client *t = by_pid(e.id, false);
		if (!t) {
			if (!id_gone(e.id))
				err = ENOTCONN; /* not reconnected yet */
			continue;
		}
		struct uffdio_writeprotect wp = { .range = { e.start + (lo - e.off), hi - lo },
						  .mode = UFFDIO_WRITEPROTECT_MODE_WP };
		/* ENOENT: that process no longer maps the range; ESRCH: its
		 * address space is gone. */
		if (ioctl(t->uffd, UFFDIO_WRITEPROTECT, &wp) < 0 && errno != ENOENT && errno != ESRCH)
			err = errno;
	}
	return err;
}

/* One message from a client; false when the connection is over. */
static bool client_read(struct client *cl)
{
	struct um_msg m;
	char ctl[CMSG_SPACE(3 * sizeof(int))];
	struct iovec iov = { .iov_base = &m, .iov_len = sizeof m };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
	ssize_t n = recvmsg(cl->sock, &mh, MSG_CMSG_CLOEXEC);
	if (n < 0 && (errno == EINTR || errno == EAGAIN))
		return true;
	int fds[3], nfds;
	take_fds(&mh, fds, &nfds);
	bool ok = n == (ssize_t)sizeof m && m.version == UM_PROTO_VERSION;
	if (ok && m.type == UM_MSG_OPEN && nfds == 3) {
		struct cache *c = open_cache(cl, fds, m.flags & UM_OPEN_HELD);
		m.err = c ? 0 : EPROTO;
		if (c)
			um_send_msg(cl->sock, &m, (int[]){ c->data, c->state }, 2);
		else
			um_send_msg(cl->sock, &m, NULL, 0);
		return true;
	}
	if (ok && m.type == UM_MSG_HELLO && nfds == 1 && cl->uffd < 0) {
		cl->uffd = fds[0];
		cl->probe = m.off;
		nfds = 0;
		take_over(cl);
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (!ok)
		return false;
	switch (m.type) {
	case UM_MSG_HELLO:
		if (cl->pidfd < 0)
			cl->pidfd = (int)syscall(SYS_pidfd_open, cl->pid, 0);
		m.seq = (uint64_t)cl->pid;
		um_send_msg(cl->sock, &m, NULL, 0);
		return true;
	case UM_MSG_DROP:
		drop_cache(cl, (dev_t)m.dev, (ino_t)m.ino);
		return true;
	case UM_MSG_WP:
		m.err = protect(cl, (dev_t)m.dev, (ino_t)m.ino, m.off, m.len);
		um_send_msg(cl->sock, &m, NULL, 0);
		return true;
	case UM_MSG_WBERR:
	case UM_MSG_ERRQ: {
		if (m.type == UM_MSG_WBERR)
			note_error((dev_t)m.dev, (ino_t)m.ino, m.err);
		struct file_errors *f = errors_of((dev_t)m.dev, (ino_t)m.ino, false);
		m.seq = f ? f->seq : 0;
		m.err = f ? f->err : 0;
		um_send_msg(cl->sock, &m, NULL, 0);
		return true;
	}
	case UM_MSG_STAT:
	case UM_MSG_RECOVER:
		report(cl->sock, m.type == UM_MSG_RECOVER);
		return true;
	default:
		return false;
	}
}

static void accept_client(int lsock)
{
	int s = accept4(lsock, NULL, NULL, SOCK_CLOEXEC);
	if (s < 0)
		return;
	struct ucred cr;
	socklen_t len = sizeof cr;
	/* (pid 0: a process this service cannot see, in a PID namespace
	 * beside its own; it could not be told apart from others.) */
	if (nclients == MAX_CLIENTS || getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 ||
	    cr.uid != geteuid() || cr.pid <= 0) {
		close(s);
		return;
	}
	clients[nclients++] = (struct client){ .sock = s, .pidfd = -1, .uffd = -1, .pid = cr.pid };
}

/* Forget clients that ended and whose process is gone. */
static void compact(void)
{
	int j = 0;
	for (int i = 0; i < nclients; i++)
		if (!clients[i].ended || clients[i].pidfd >= 0)
			clients[j++] = clients[i];
	nclients = j;
}

/* Once a turn: disconnected clients whose address space went (exec) end;
 * table entries left to free are freed. */
static void housekeep(void)
{
	for (int i = 0; i < nclients; i++)
		if (!clients[i].ended && clients[i].sock < 0 && !mm_alive(&clients[i]))
			client_end(&clients[i]);
	for (struct cache *c = caches; c; c = c->next)
		if (c->scrub_due)
			scrub(c);
}

static bool any_pending(void)
{
	for (struct cache *c = caches; c; c = c->next)
		if (!c->users)
			return true;
	return false;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static int serve(int lsock)
{
	static struct pollfd pfd[1 + 2 * MAX_CLIENTS];
	static int who[1 + 2 * MAX_CLIENTS];
	double idle_since = now_s();
	for (;;) {
		int n = 0;
		pfd[n++] = (struct pollfd){ .fd = lsock, .events = POLLIN };
		for (int i = 0; i < nclients; i++) {
			if (clients[i].sock >= 0) {
				who[n] = i;
				pfd[n++] = (struct pollfd){ .fd = clients[i].sock, .events = POLLIN };
			}
			if (clients[i].pidfd >= 0) {
				who[n] = i;
				pfd[n++] = (struct pollfd){ .fd = clients[i].pidfd, .events = POLLIN };
			}
		}
		bool pending = any_pending();
		int r = poll(pfd, (nfds_t)n, pending ? RETRY_MS : 1000);
		if (r < 0 && errno != EINTR)
			return 1;
		if (r > 0 && (pfd[0].revents & POLLIN))
			accept_client(lsock);
		for (int i = 1; r > 0 && i < n; i++) {
			struct client *cl = &clients[who[i]];
			if (!pfd[i].revents)
				continue;
			/* The pidfd is readable once the process is gone; the
			 * socket reads EOF when it is gone, exec'd, or gave the
			 * connection up. */
			if (pfd[i].fd == cl->pidfd) {
				client_end(cl);
				close(cl->pidfd);
				cl->pidfd = -1;
			} else if (pfd[i].fd == cl->sock && !client_read(cl)) {
				disconnect(cl);
			}
		}
		housekeep();
		if (pending)
			for (struct cache *c = caches, *next; c; c = next) {
				next = c->next;
				release(c, 0);
			}
		compact();
		if (nclients || caches)
			idle_since = now_s();
		else if (idle_s && now_s() - idle_since > idle_s)
			return 0;
	}
}

static bool write_file(const char *dir, const char *name, const char *text)
{
	char p[PATH_MAX];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	int fd = open(p, O_WRONLY | O_CLOEXEC);
	bool ok = fd >= 0 && write(fd, text, strlen(text)) == (ssize_t)strlen(text);
	int e = errno;
	if (fd >= 0)
		close(fd);
	errno = e;
	return ok;
}

static void copy_file(const char *from, const char *to, const char *name)
{
	char p[PATH_MAX], text[256];
	snprintf(p, sizeof p, "%s/%s", from, name);
	int fd = open(p, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, text, sizeof text - 1) : -1;
	if (fd >= 0)
		close(fd);
	text[n > 0 ? n : 0] = 0;
	if (n > 0)
		write_file(to, name, text);
}

/* Join (make) the cgroup "ummap-service" at the root of the hierarchy
 * mounted at mnt, if this user may. */
static void join_cgroup(const char *mnt)
{
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s/ummap-service", mnt);
	if ((mkdir(dir, 0755) < 0 && errno != EEXIST) || write_file(dir, "cgroup.procs", "0") || errno != ENOSPC)
		return;
	/* A new cpuset (v1) has no CPUs and memory nodes for its tasks yet. */
	copy_file(mnt, dir, "cpuset.cpus");
	copy_file(mnt, dir, "cpuset.mems");
	write_file(dir, "cgroup.procs", "0");
}

/* Leave the application's cgroups, in every hierarchy mounted here (v1 and
 * v2), so that what stops the application -- its cgroup killed, `systemctl
 * stop`, an OOM group kill -- leaves the service and the pages it holds for
 * ended processes alone.  Where this user may not (README), it stays. */
static void leave_cgroups(void)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096], mnt[2048], type[64];
	while (f && fgets(line, sizeof line, f)) {
		const char *dash = strstr(line, " - ");
		if (dash && sscanf(line, "%*s %*s %*s %*s %2047s", mnt) == 1 && sscanf(dash + 3, "%63s", type) == 1 &&
		    (!strcmp(type, "cgroup") || !strcmp(type, "cgroup2")))
			join_cgroup(mnt);
	}
	if (f)
		fclose(f);
}

/* `ummap service [--daemon] [--idle SECONDS]` */
int service_main(int argc, char **argv)
{
	bool daemon = false;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--daemon"))
			daemon = true;
		else if (!strcmp(argv[i], "--idle") && i + 1 < argc)
			idle_s = (unsigned)atoi(argv[++i]);
		else {
			fprintf(stderr, "usage: ummap service [--daemon] [--idle SECONDS (0: never exit)]\n");
			return 2;
		}
	}
	if (daemon) {
		/* Started by the library: drop whatever the application had
		 * open, and every signal setting it left. */
		int null = open("/dev/null", O_RDWR | O_CLOEXEC);
		for (int fd = 0; fd < 3; fd++)
			dup2(null, fd);
		syscall(SYS_close_range, 3U, ~0U, 0U);
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		for (int s = 1; s < 32; s++)
			signal(s, SIG_DFL);
		if (chdir("/") < 0)
			return 1;
	}
	foreground = !daemon;
	signal(SIGPIPE, SIG_IGN);
	/* Three descriptors per client and per cache: as many as allowed. */
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	struct sockaddr_un a;
	socklen_t alen = um_service_addr(&a, geteuid());
	int lsock = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (lsock < 0 || bind(lsock, (struct sockaddr *)&a, alen) < 0) {
		if (errno == EADDRINUSE) {
			say("ummap service: one already runs for uid %u\n", (unsigned)geteuid());
			return 0;
		}
		fprintf(stderr, "ummap service: cannot bind: %s\n", strerror(errno));
		return 1;
	}
	if (daemon) {
		/* The service is not the starter's child; the starter returns
		 * once it listens, so the library's connect succeeds.  It
		 * listens itself, so that SO_PEERCRED names it to clients. */
		int ready[2];
		if (pipe(ready) < 0)
			return 1;
		pid_t pid = fork();
		if (pid < 0)
			return 1;
		if (pid > 0) {
			char c;
			close(ready[1]);
			_exit(read(ready[0], &c, 1) == 1 ? 0 : 1);
		}
		close(ready[0]);
		setsid();
		leave_cgroups();
		if (listen(lsock, 64) < 0 || write(ready[1], "r", 1) != 1)
			return 1;
		close(ready[1]);
	} else if (listen(lsock, 64) < 0) {
		fprintf(stderr, "ummap service: cannot listen: %s\n", strerror(errno));
		return 1;
	}
	say("ummap service: serving uid %u (pid %d)\n", (unsigned)geteuid(), (int)getpid());
	return serve(lsock);
}

static int ask(enum um_msg_type type)
{
	struct sockaddr_un a;
	socklen_t alen = um_service_addr(&a, geteuid());
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, alen) < 0) {
		printf("no ummap service runs for uid %u: nothing is kept or pending\n", (unsigned)geteuid());
		return 0;
	}
	struct um_msg m = { .type = type, .version = UM_PROTO_VERSION };
	if (send(s, &m, sizeof m, MSG_NOSIGNAL) != sizeof m) {
		perror("ummap: service");
		return 1;
	}
	char line[513];
	int failing = 0;
	for (;;) {
		ssize_t n = recv(s, line, sizeof line - 1, 0);
		if (n <= 0)
			break;
		line[n] = 0;
		fputs(line, stdout);
		failing |= strstr(line, "still failing") != NULL;
	}
	close(s);
	return failing;
}

int service_stat(void) { return ask(UM_MSG_STAT); }
int service_recover(void) { return ask(UM_MSG_RECOVER); }
