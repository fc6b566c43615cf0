/*
 * service.c - the library's side of the writeback service (proto.h): find
 * the user's service or start it, get each file's cache from it (shared
 * with every process of the user that maps the file), have it
 * write-protect pages in the other processes, tell it when a cache is gone.
 *
 * The service is the `ummap` program (`ummap service`), found at
 * $UMMAP_SERVICE, else in the bin directory beside the lib directory this
 * library was loaded from (an install to any PREFIX), else where the build
 * said `make install` would put it.  Without it ummap works as before, but
 * what is not yet written back when the process is killed is lost; um_mmap
 * says so once on stderr (UMMAP_SERVICE=none: silently).  A set-id program
 * never starts one (nor reads UMMAP_SERVICE).
 *
 * Starting it must not disturb the application: the helper process is
 * cloned without an exit signal (no SIGCHLD, invisible to the
 * application's wait()), runs only raw system calls (its own child execs
 * the starter, see svc_spawn), and is reaped here; the service detaches
 * itself and has bound its socket by the time the helper exits.
 *
 * A lost connection (an answer that did not come in time, the service
 * killed) is found by a watcher thread, which connects again (starting a
 * new service if needed) and hands every shared cache back (proto.h:
 * Reconnecting); meanwhile, requests fail and nothing is taken as clean.
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#ifndef UM_SERVICE_PATH
#define UM_SERVICE_PATH "/usr/local/bin/ummap"
#endif

extern char **environ;

	    /* this process's id at the service (proto.h) */
static int watch_fd = -1;   /* the watcher's own descriptor of the connection */
static pid_t watcher_of;    /* the process whose watcher thread runs */
static ino_t svc_ino;	    /* the connection's socket */


/* `ummap` in the bin directory beside the directory this library was
 * loaded from, if there is one there. */
static bool path_beside_library(char *buf, size_t n)
{
	Dl_info info;
	char lib[PATH_MAX];
	if (!dladdr((void *)svc_open, &info) || !info.dli_fname || !realpath(info.dli_fname, lib))
		return false;
	char *slash = strrchr(lib, '/');
	if (!slash)
		return false;
	*slash = 0;
	return snprintf(buf, n, "%s/../bin/ummap", lib) < (int)n && access(buf, X_OK) == 0;
}

static const char *service_path(void)
{
	static char beside[PATH_MAX];
	const char *p = secure_getenv("UMMAP_SERVICE");
	if (p && *p)
		return p;
	return path_beside_library(beside, sizeof beside) ? beside : UM_SERVICE_PATH;
}

/* A message from the service within ms, through signals the application
 * may take meanwhile (EINTR). */
static ssize_t recv_answer(int fd, struct msghdr *mh, int ms)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int r;
	while ((r = poll(&pfd, 1, ms)) < 0 && errno == EINTR)
		;
	if (r != 1)
		return -1;
	ssize_t n;
	while ((n = recvmsg(fd, mh, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	return n;
}

/* Close fd if it is still the connection's socket: an application that
 * closes every descriptor may have reused the number. */
static void close_ours(int fd)
{
	struct stat st;
	if (fd >= 0 && fstat(fd, &st) == 0 && st.st_ino == svc_ino) {
		shutdown(fd, SHUT_RDWR);
		close(fd);
	}
}

/* Give up the connection: the watcher sees it hang up and connects again.
 * (shutdown, not close alone: the watcher's descriptor keeps it open.) */
static void svc_drop(void)
{
	close_ours(um.svc);
	um.svc = -1;
}

/* One request that the service answers, with up to two descriptors (set
 * to -1 when not sent). */
static int svc_ask_fds(struct um_msg *m, const int *fds, int nfds, int *got)
{
	char ctl[CMSG_SPACE(2 * sizeof(int))];
	struct iovec iov = { .iov_base = m, .iov_len = sizeof *m };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
	uint32_t type = m->type;
	for (int i = 0; got && i < 2; i++)
		got[i] = -1;
	/* (The service answers between writebacks of what ended processes
	 * left, which can take a while on a slow disk.) */
	if (um.svc < 0 || um_send_msg(um.svc, m, fds, nfds) ||
	    recv_answer(um.svc, &mh, 30000) != (ssize_t)sizeof *m || m->type != type) {
		/* Until the watcher has connected again, shared caches are
		 * written back without being taken as clean (writeback.c). */
		svc_drop();
		return -EPROTO;
	}
	int n = 0;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm))
		if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS)
			for (size_t i = 0; i < (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int); i++) {
				int fd;
				memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof fd);
				if (got && n < 2)
					got[n++] = fd;
				else
					close(fd);
			}
	return 0;
}

static int svc_ask(struct um_msg *m)
{
	return svc_ask_fds(m, NULL, 0, NULL);
}

/* Connect and say HELLO; the service's socket, and this process's id in
 * *id, or -errno. */
static int svc_connect(int32_t *id)
{
	struct sockaddr_un a;
	socklen_t alen = um_service_addr(&a, geteuid());
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, alen) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	/* Anyone can bind an abstract name: only our own user's service is
	 * trusted with our data. */
	struct ucred cr;
	socklen_t crlen = sizeof cr;
	/* The probe page (proto.h): this library's code, never registered. */
	struct um_msg m = { .type = UM_MSG_HELLO, .version = UM_PROTO_VERSION,
			    .off = (uintptr_t)svc_connect & ~(UM_PAGE - 1) };
	struct iovec iov = { .iov_base = &m, .iov_len = sizeof m };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	int e = 0;
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) < 0)
		e = errno;
	else if (cr.uid != geteuid())
		e = EPERM;
	else if ((e = -um_send_msg(fd, &m, &um.uffd, 1)))
		;
	else if (recv_answer(fd, &mh, 5000) != sizeof m)
		e = EPROTO;
	else if (m.type != UM_MSG_HELLO || m.version != UM_PROTO_VERSION || !m.seq)
		e = EPROTO;
	if (e) {
		close(fd);
		return -e;
	}
	*id = (int32_t)m.seq;
	return fd;
}

static int svc_spawn(void)
{
	const char *path = service_path();
	/* A set-id program would run the service with its privileges. */
	if (getuid() != geteuid() || getgid() != getegid())
		return -EPERM;
	if (access(path, X_OK) < 0)
		return -errno;
	char *argv[] = { "ummap", "service", "--daemon", NULL };
	/* A helper forked without an exit signal, so the application sees no
	 * SIGCHLD and its wait() cannot take it.  The helper must not exec
	 * itself (execve resets the exit signal to SIGCHLD): its own child
	 * execs the starter, and it passes on that one's status.  Raw system
	 * calls only (async-signal-safe). */
	long pid = syscall(SYS_clone, 0UL, NULL, NULL, NULL, NULL);
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		long starter = syscall(SYS_clone, (unsigned long)SIGCHLD, NULL, NULL, NULL, NULL);
		if (starter == 0) {
			syscall(SYS_execve, path, argv, environ);
			syscall(SYS_exit_group, 127);
		}
		int sst = 0;
		if (starter < 0 || syscall(SYS_wait4, starter, &sst, 0, NULL) != starter)
			syscall(SYS_exit_group, 126);
		syscall(SYS_exit_group, WIFEXITED(sst) ? WEXITSTATUS(sst) : 125);
	}
	int st = -1; /* (not a status that says success) */
	while (waitpid((pid_t)pid, &st, __WCLONE) < 0 && errno == EINTR)
		;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -ENOEXEC;
}

/* The service's socket (started if none answers), or -errno. */
static int svc_reach(int32_t *id)
{
	/* A service that is just exiting (idle) may drop our connection:
	 * then the next attempt starts a new one. */
	int fd = -ECONNREFUSED;
	for (int attempt = 0; attempt < 3 && fd < 0; attempt++) {
		fd = svc_connect(id);
		if (fd == -ECONNREFUSED) {
			int e = svc_spawn();
			fd = e ? e : svc_connect(id);
		}
		if (fd != -EPROTO && fd != -ECONNREFUSED)
			break;
	}
	return fd;
}

/* A new service may know this process by another id (another PID
 * namespace): its entries in the tables follow. */
static void rekey(int32_t from, int32_t to)
{
	for (struct um_cache *c = um.caches; c; c = c->c_next) {
		if (!c->c_shared || from == to)
			continue;
		cache_lock(c);
		for (uint32_t i = 0; i < c->c_sh->nmaps; i++)
			if (c->c_sh->maps[i].id == from)
				c->c_sh->maps[i].id = to;
	}
}

static int file_errors(struct um_cache *c, struct um_msg *m)
{
	*m = (struct um_msg){ .type = UM_MSG_ERRQ, .version = UM_PROTO_VERSION, .dev = c->c_dev, .ino = c->c_ino };
	return svc_ask(m);
}

/* OPEN c with its own memfds: fresh ones, or (held) the ones it shares. */
static int open_with(struct um_cache *c, int fd, uint32_t flags, int *got)
{
	struct um_msg m = { .type = UM_MSG_OPEN, .version = UM_PROTO_VERSION, .dev = c->c_dev, .ino = c->c_ino,
			    .flags = flags };
	int fds[3] = { fd, c->c_memfd, c->c_statefd };
	if (svc_ask_fds(&m, fds, 3, got) || m.err || got[1] < 0) {
		for (int i = 0; i < 2; i++)
			if (got[i] >= 0)
				close(got[i]);
		return m.err ? -m.err : -EPROTO;
	}
	return 0;
}

/* Hand every shared cache to the service again (it may be a new one), and
 * learn its count of writeback errors. */
static void svc_register(void)
{
	for (struct um_cache *c = um.caches; c && um.svc >= 0; c = c->c_next) {
		int got[2];
		if (!c->c_shared || open_with(c, c->c_store ? c->c_store->fd : c->c_statefd, UM_OPEN_HELD, got))
			continue;
		close(got[0]);
		close(got[1]);
		struct um_msg m;
		if (!file_errors(c, &m))
			c->c_svc_seq = m.seq;
	}
}

/* Use connection fd, on which this process is known as id. */
static void svc_use(int fd, int32_t id)
{
	if (um.svc_id)
		rekey(um.svc_id, id);
	um.svc_id = id;
	um.svc = fd;
	watch_fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	struct stat st;
	svc_ino = fstat(fd, &st) == 0 ? st.st_ino : 0;
}

static void wait_hangup(int fd)
{
	struct pollfd p = { .fd = fd, .events = 0 };
	while (poll(&p, 1, -1) < 0 && errno == EINTR)
		;
}

/* The watcher: waits for the connection to hang up (the service is gone,
 * or a request gave it up), then connects again, once a second until it
 * can, and re-registers.  Connecting is done without um.lock: the
 * application's calls and faults go on meanwhile. */
static void *svc_watch(void *arg)
{
	for (;;) {
		if (watch_fd >= 0)
			wait_hangup(watch_fd);
		um_lock();
		svc_drop(); /* (shuts the socket down: safe before watch_fd's close) */
		close_ours(watch_fd);
		watch_fd = -1;
		um_unlock();
		int32_t id;
		int fd = svc_reach(&id);
		if (fd < 0) {
			nanosleep(&(struct timespec){ .tv_sec = 1 }, NULL);
			continue;
		}
		um_lock();
		svc_use(fd, id);
		svc_register();
		um_unlock();
	}
	return NULL;
}

/* Connect once per process (start the service if none answers); from then
 * on the watcher keeps the connection. */
static bool svc_ready(void)
{
	if (um.svc >= 0 || watcher_of == getpid())
		return um.svc >= 0;
	if (um.svc_tried)
		return false;
	um.svc_tried = true;
	const char *path = service_path();
	if (!strcmp(path, "none"))
		return false;
	int32_t id;
	int fd = svc_reach(&id);
	if (fd < 0) {
		fprintf(stderr,
			"ummap: no writeback service (%s: %s): data not yet written back is lost "
			"if this process is killed. Set UMMAP_SERVICE to the path of the `ummap` "
			"program, or UMMAP_SERVICE=none to run without it.\n",
			path, strerror(-fd));
		return false;
	}
	svc_use(fd, id);
	pthread_t t;
	if (um_thread_start(&t, svc_watch) == 0) {
		pthread_detach(t);
		watcher_of = getpid();
	}
	return true;
}

/*
 * The file's cache from the service (proto.h), into c: shared with the
 * processes that have the file cached, or c's own memfds, which the service
 * then holds for the next ones.  Called again when c's store becomes
 * writable, so that the service can write back what a killed process
 * leaves.  Without a service c stays this process's own.
 */
int svc_open(struct um_cache *c, int fd)
{
	if (!svc_ready())
		return -ENOTCONN;
	int got[2];
	int e = open_with(c, fd, c->c_shared ? UM_OPEN_HELD : 0, got);
	if (e)
		return e;
	if (c->c_shared) {
		close(got[0]);
		close(got[1]);
		return 0;
	}
	e = cache_shared_by_service(c, got[0], got[1]);
	if (e)
		return -e;
	/* Errors from before this process looked are not its to report
	 * (the kernel samples errseq at open). */
	struct um_msg m;
	if (!file_errors(c, &m))
		c->c_svc_seq = m.seq;
	return 0;
}

/* Write-protect [off, off+len) of c in the other processes that map it
 * (I3), if any do: the service holds their userfaultfds.  The caller holds
 * c's lock, so the table of mappings is stable.  0 only if it was done in
 * every one of them. */
int svc_protect(struct um_cache *c, uint64_t off, uint64_t len)
{
	struct um_shared *h = c->c_sh;
	bool others = false;
	for (uint32_t i = 0; i < h->nmaps && !others; i++)
		others = h->maps[i].id && h->maps[i].id != um.svc_id && off < h->maps[i].off + h->maps[i].len &&
			 h->maps[i].off < off + len;
	if (!others)
		return 0;
	struct um_msg m = { .type = UM_MSG_WP, .version = UM_PROTO_VERSION, .dev = c->c_dev, .ino = c->c_ino,
			    .off = off, .len = len };
	return svc_ask(&m) ? -ENOTCONN : -m.err;
}

void svc_wb_error(struct um_cache *c, int err)
{
	if (!c->c_shared || um.svc < 0)
		return;
	struct um_msg m = { .type = UM_MSG_WBERR, .version = UM_PROTO_VERSION, .dev = c->c_dev, .ino = c->c_ino,
			    .err = err };
	if (!svc_ask(&m))
		c->c_svc_seq = m.seq; /* this one is reported here already */
}

void svc_check_errors(struct um_cache *c)
{
	struct um_msg m;
	if (!c->c_shared || um.svc < 0 || file_errors(c, &m) || m.seq == c->c_svc_seq)
		return;
	c->c_svc_seq = m.seq;
	c->c_wb_err = m.err;
	c->c_wb_seq++;
}

/* This process is done with c: the service is told (it closes the cache
 * when its last process is), then c is freed. */
void svc_release(struct um_cache *c)
{
	cache_leave_table(c);
	if (c->c_shared && um.svc >= 0) {
		struct um_msg m = { .type = UM_MSG_DROP, .version = UM_PROTO_VERSION, .dev = c->c_dev,
				    .ino = c->c_ino };
		um_send_msg(um.svc, &m, NULL, 0);
	}
	cache_free(c);
}

/*
 * A file cache this process just made (fresh) or may now write through is
 * handed to the service: shared with every process of the user that maps
 * the file, where stores can be tracked in all of them (write-protect).
 * A fresh one takes the size just read, the newest.
 */
void svc_share(struct um_cache *c, bool fresh, uint64_t size)
{
	if (!um.wp || (!fresh && !c->c_shared))
		return;
	if (svc_open(c, c->c_store->fd) == 0 && fresh)
		cache_set_size(c, size);
}

/* Processes that map c: those with entries in its table, or this one. */
uint64_t svc_procs(struct um_cache *c)
{
	if (!c->c_shared)
		return 1;
	cache_lock(c);
	const struct um_shared *h = c->c_sh;
	uint64_t n = 0;
	bool mine = false;
	for (uint32_t i = 0; i < h->nmaps; i++) {
		int32_t id = h->maps[i].id;
		bool first = id != 0;
		for (uint32_t j = 0; j < i && first; j++)
			first = h->maps[j].id != id;
		n += first;
		mine |= id != 0 && id == um.svc_id;
	}
	return n + !mine;
}

/* A fork child must not keep the parent's connection open (the service
 * would not see the parent's end) nor speak on it; it has no watcher, and
 * its id is its own (HELLO). */
void svc_fork_child(void)
{
	if (um.svc >= 0)
		close(um.svc);
	if (watch_fd >= 0)
		close(watch_fd);
	um.svc = watch_fd = -1;
	um.svc_id = 0;
	um.svc_tried = true;
}
