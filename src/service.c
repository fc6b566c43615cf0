/*
 * service.c - the library's side of the writeback service (proto.h): find
 * the user's service or start it, get each file's cache from it (shared
 * with every process of the user that maps the file), have it
 * write-protect pages in the other processes, tell it when a cache is gone.
 *
 * The service is the `ummap` program (`ummap service`), found at
 * $UMMAP_SERVICE or where `make install` put it.  Without it ummap works as
 * before, but what is not yet written back when the process is killed is
 * lost; um_mmap says so once on stderr (UMMAP_SERVICE=none: silently).
 *
 * Starting it must not disturb the application: the helper process is
 * cloned without an exit signal (no SIGCHLD, invisible to the
 * application's wait()), runs only raw system calls (its own child execs
 * the starter, see svc_spawn), and is reaped here; the service detaches
 * itself and has bound its socket by the time the helper exits.
 */
#include <errno.h>
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
#include <unistd.h>

#include "internal.h"

#ifndef UM_SERVICE_PATH
#define UM_SERVICE_PATH "/usr/local/bin/ummap"
#endif

extern char **environ;

static const char *service_path(void)
{
	const char *p = getenv("UMMAP_SERVICE");
	return p && *p ? p : UM_SERVICE_PATH;
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

/* One request that the service answers, with up to two descriptors (set
 * to -1 when not sent). */
static int svc_ask_fds(struct um_msg *m, const int *fds, int nfds, int *got)
{
	char ctl[CMSG_SPACE(2 * sizeof(int))];
	struct iovec iov = { .iov_base = m, .iov_len = sizeof *m };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof ctl };
	uint32_t type = m->type;
	/* (The service answers between writebacks of what ended processes
	 * left, which can take a while on a slow disk.) */
	if (um_send_msg(um.svc, m, fds, nfds) || recv_answer(um.svc, &mh, 30000) != (ssize_t)sizeof *m ||
	    m->type != type) {
		/* The service is gone (or confused): no more requests; shared
		 * caches are then written back without being taken as clean
		 * (writeback.c). */
		close(um.svc);
		um.svc = -1;
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
	for (; got && n < 2; n++)
		got[n] = -1;
	return 0;
}

static int svc_ask(struct um_msg *m)
{
	return svc_ask_fds(m, NULL, 0, NULL);
}

static int svc_connect(void)
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
	struct um_msg m = { .type = UM_MSG_HELLO, .version = UM_PROTO_VERSION };
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
	else if (m.type != UM_MSG_HELLO || m.version != UM_PROTO_VERSION)
		e = EPROTO;
	if (e) {
		close(fd);
		return -e;
	}
	return fd;
}

static int svc_spawn(void)
{
	const char *path = service_path();
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

/* Connect once per process; start the service if none answers. */
static bool svc_ready(void)
{
	if (um.svc >= 0)
		return true;
	if (um.svc_tried)
		return false;
	um.svc_tried = true;
	const char *path = service_path();
	if (!strcmp(path, "none"))
		return false;
	/* A service that is just exiting (idle) may drop our connection:
	 * then the next attempt starts a new one. */
	int fd = -ECONNREFUSED;
	for (int attempt = 0; attempt < 3 && fd < 0; attempt++) {
		fd = svc_connect();
		if (fd == -ECONNREFUSED) {
			int e = svc_spawn();
			fd = e ? e : svc_connect();
		}
		if (fd != -EPROTO && fd != -ECONNREFUSED)
			break;
	}
	if (fd < 0) {
		fprintf(stderr,
			"ummap: no writeback service (%s: %s): data not yet written back is lost "
			"if this process is killed. Set UMMAP_SERVICE to the path of the `ummap` "
			"program, or UMMAP_SERVICE=none to run without it.\n",
			path, strerror(-fd));
		return false;
	}
	um.svc = fd;
	return true;
}

static int file_errors(struct um_cache *c, struct um_msg *m)
{
	*m = (struct um_msg){ .type = UM_MSG_ERRQ, .version = UM_PROTO_VERSION, .dev = c->c_dev, .ino = c->c_ino };
	return svc_ask(m);
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
	struct um_msg m = { .type = UM_MSG_OPEN, .version = UM_PROTO_VERSION, .dev = c->c_dev, .ino = c->c_ino };
	int fds[3] = { fd, c->c_memfd, c->c_statefd }, got[2];
	if (svc_ask_fds(&m, fds, 3, got) || m.err || got[1] < 0) {
		for (int i = 0; i < 2; i++)
			if (got[i] >= 0)
				close(got[i]);
		return m.err ? -m.err : -EPROTO;
	}
	if (c->c_shared) {
		close(got[0]);
		close(got[1]);
		return 0;
	}
	int e = cache_shared_by_service(c, got[0], got[1]);
	if (e)
		return -e;
	/* Errors from before this process looked are not its to report
	 * (the kernel samples errseq at open). */
	if (!file_errors(c, &m))
		c->c_svc_seq = m.seq;
	return 0;
}

/* Write-protect [off, off+len) of c in the other processes that map it
 * (I3), if any do: the service holds their userfaultfds.  The caller holds
 * c's lock, so the table of mappings is stable. */
int svc_protect(struct um_cache *c, uint64_t off, uint64_t len)
{
	struct um_shared *h = c->c_sh;
	int32_t me = (int32_t)getpid();
	bool others = false;
	for (uint32_t i = 0; i < h->nmaps && !others; i++)
		others = h->maps[i].pid && h->maps[i].pid != me && off < h->maps[i].off + h->maps[i].len &&
			 h->maps[i].off < off + len;
	if (!others)
		return 0;
	if (um.svc < 0)
		return -ENOTCONN;
	struct um_msg m = { .type = UM_MSG_WP, .version = UM_PROTO_VERSION, .dev = c->c_dev, .ino = c->c_ino,
			    .off = off, .len = len };
	return svc_ask(&m) ? -EPROTO : -m.err;
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

void svc_forget(struct um_cache *c)
{
	if (!c->c_shared || um.svc < 0)
		return;
	struct um_msg m = { .type = UM_MSG_DROP, .version = UM_PROTO_VERSION, .dev = c->c_dev, .ino = c->c_ino };
	um_send_msg(um.svc, &m, NULL, 0);
	c->c_shared = false;
}

/* A fork child must not keep the parent's connection open (the service
 * would not see the parent's end) nor speak on it. */
void svc_fork_child(void)
{
	if (um.svc >= 0)
		close(um.svc);
	um.svc = -1;
	um.svc_tried = true;
}
