/*
 * service.c - `ummap service`, the per-user writeback service, and the
 * `ummap stat` / `ummap recover` commands that talk to it (proto.h: why
 * and how).
 *
 * The service keeps, for each client process, the caches it handed over
 * (file, data memfd, page-state memfd).  A cache the client frees is
 * dropped.  When the client ends -- its pidfd says the process is gone, or
 * its connection closes (exec, or it closed our socket) -- every page whose
 * state is DIRTY or WRITING (and not ZERO) is written from the data memfd
 * to the file, clipped at the file's current end; the descriptors are then
 * closed.  A cache whose writeback fails (ENOSPC, EIO) is kept and retried
 * every second, `ummap stat` shows it and `ummap recover` retries it at
 * once.  It also keeps each file's writeback error sequence (proto.h), so
 * that msync in every process reports a write that failed in another.
 * With no client and nothing pending for a while, the service exits.
 *
 * One thread, one poll loop; a client's messages are handled in order.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "proto.h"
#include "service.h"

#define PAGE 4096UL
#define MAX_CLIENTS 1024
#define RETRY_MS 1000

struct kept {
	uint64_t id;
	dev_t dev;
	ino_t ino;
	int file, data, state;
	int err;	  /* errno of the last failed writeback, 0 if none */
	char path[256];	  /* for the operator */
	struct kept *next;
};

struct client {
	int sock, pidfd;
	pid_t pid;
	bool ended;	  /* its process is gone: caches are owed to their files */
	struct kept *caches;
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

static void kept_close(struct kept *k)
{
	close(k->file);
	close(k->data);
	close(k->state);
	free(k);
}

/* Pages owed to the file: dirty or being written, not error zeros. */
static bool owed(uint8_t s)
{
	return (s & (PG_DIRTY | PG_WRITING)) && !(s & PG_ZERO);
}

/* Bytes k's state marks as owed to the file. */
static uint64_t kept_pending(const struct kept *k)
{
	struct stat st;
	if (fstat(k->state, &st) < 0 || !st.st_size)
		return 0;
	uint8_t *ps = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, k->state, 0);
	if (ps == MAP_FAILED)
		return 0;
	uint64_t n = 0;
	for (off_t p = 0; p < st.st_size; p++)
		n += owed(ps[p]) ? PAGE : 0;
	munmap(ps, (size_t)st.st_size);
	return n;
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

/* Write back what k owes its file.  0, or the errno (k is then kept). */
static int settle(struct kept *k, uint64_t *written)
{
	struct stat sst, fst, dst;
	if (fstat(k->state, &sst) < 0 || fstat(k->file, &fst) < 0 || fstat(k->data, &dst) < 0)
		return errno;
	if (!sst.st_size)
		return 0;
	uint8_t *ps = mmap(NULL, (size_t)sst.st_size, PROT_READ, MAP_SHARED, k->state, 0);
	if (ps == MAP_FAILED)
		return errno;
	uint64_t fsize = (uint64_t)fst.st_size, dsize = (uint64_t)dst.st_size;
	uint64_t n = (uint64_t)sst.st_size, limit = (fsize < dsize ? fsize : dsize);
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
		uint8_t *d = mmap(NULL, len, PROT_READ, MAP_SHARED, k->data, (off_t)off);
		if (d == MAP_FAILED) {
			err = errno;
			break;
		}
		err = write_all(k->file, d, len, off);
		munmap(d, len);
		if (!err)
			*written += len;
		p = q;
	}
	munmap(ps, (size_t)sst.st_size);
	return err;
}

/* Write back every cache of an ended client; keep the ones that fail. */
static void settle_client(struct client *cl)
{
	struct kept **kp = &cl->caches;
	while (*kp) {
		struct kept *k = *kp;
		uint64_t written = 0;
		int e = settle(k, &written);
		if (e) {
			if (e != k->err) {
				say("ummap service: pid %d: %s: writeback failed (%s), will retry\n",
				    (int)cl->pid, k->path, strerror(e));
				note_error(k->dev, k->ino, e);
			}
			k->err = e;
			kp = &k->next;
			continue;
		}
		if (written)
			say("ummap service: pid %d ended: %llu bytes written to %s\n", (int)cl->pid,
			    (unsigned long long)written, k->path);
		*kp = k->next;
		kept_close(k);
	}
}

static void client_end(struct client *cl)
{
	if (cl->sock >= 0)
		close(cl->sock);
	if (cl->pidfd >= 0)
		close(cl->pidfd);
	cl->sock = cl->pidfd = -1;
	cl->ended = true;
	settle_client(cl);
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
	unsigned pending = 0, kept = 0, procs = 0;
	for (int i = 0; i < nclients; i++) {
		struct client *cl = &clients[i];
		if (recover && cl->ended)
			settle_client(cl);
		procs += cl->caches != NULL || cl->pidfd >= 0;
		for (struct kept *k = cl->caches; k; k = k->next) {
			uint64_t owe = kept_pending(k);
			kept++;
			pending += cl->ended;
			reply(sock, "pid %-7d %-7s %10llu bytes dirty  %s%s%s\n", (int)cl->pid,
			      cl->ended ? "ended" : "running", (unsigned long long)owe, k->path,
			      k->err ? "  last error: " : "", k->err ? strerror(k->err) : "");
		}
	}
	reply(sock, "%u process(es), %u cache(s) kept, %u left behind by ended processes%s\n", procs,
	      kept, pending, pending ? (recover ? ": still failing" : " (ummap recover retries)") : "");
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

static void add_cache(struct client *cl, uint64_t id, const int *fds)
{
	struct kept *k = calloc(1, sizeof *k);
	if (!k) {
		for (int i = 0; i < 3; i++)
			close(fds[i]);
		return;
	}
	struct stat st;
	k->id = id;
	if (fstat(fds[0], &st) == 0) {
		k->dev = st.st_dev;
		k->ino = st.st_ino;
	}
	k->file = fds[0];
	k->data = fds[1];
	k->state = fds[2];
	char link[64];
	snprintf(link, sizeof link, "/proc/self/fd/%d", k->file);
	ssize_t n = readlink(link, k->path, sizeof k->path - 1);
	k->path[n > 0 ? n : 0] = 0;
	k->next = cl->caches;
	cl->caches = k;
}

static void drop_cache(struct client *cl, uint64_t id)
{
	for (struct kept **kp = &cl->caches; *kp; kp = &(*kp)->next) {
		if ((*kp)->id == id) {
			struct kept *k = *kp;
			*kp = k->next;
			kept_close(k);
			return;
		}
	}
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
	if (ok && m.type == UM_MSG_ADD && nfds == 3) {
		add_cache(cl, m.id, fds);
		return true;
	}
	for (int i = 0; i < nfds; i++)
		close(fds[i]);
	if (!ok)
		return false;
	switch (m.type) {
	case UM_MSG_HELLO:
		if (cl->pidfd < 0)
			cl->pidfd = (int)syscall(SYS_pidfd_open, cl->pid, 0);
		send(cl->sock, &m, sizeof m, MSG_NOSIGNAL);
		return true;
	case UM_MSG_DROP:
		drop_cache(cl, m.id);
		return true;
	case UM_MSG_WBERR:
	case UM_MSG_ERRQ: {
		if (m.type == UM_MSG_WBERR)
			note_error((dev_t)m.dev, (ino_t)m.ino, m.err);
		struct file_errors *f = errors_of((dev_t)m.dev, (ino_t)m.ino, false);
		m.seq = f ? f->seq : 0;
		m.err = f ? f->err : 0;
		send(cl->sock, &m, sizeof m, MSG_NOSIGNAL);
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
	if (nclients == MAX_CLIENTS || getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &len) < 0 ||
	    cr.uid != geteuid()) {
		close(s);
		return;
	}
	clients[nclients++] = (struct client){ .sock = s, .pidfd = -1, .pid = cr.pid };
}

/* Forget clients that ended with nothing left to write. */
static void compact(void)
{
	int j = 0;
	for (int i = 0; i < nclients; i++)
		if (!clients[i].ended || clients[i].caches)
			clients[j++] = clients[i];
	nclients = j;
}

static bool any_pending(void)
{
	for (int i = 0; i < nclients; i++)
		if (clients[i].ended && clients[i].caches)
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
			if (!pfd[i].revents || cl->ended)
				continue;
			/* The pidfd is readable once the process is gone; the
			 * socket reads EOF when it is gone or exec'd. */
			if (pfd[i].fd == cl->pidfd || !client_read(cl))
				client_end(cl);
		}
		if (pending)
			for (int i = 0; i < nclients; i++)
				if (clients[i].ended && clients[i].caches)
					settle_client(&clients[i]);
		compact();
		if (nclients)
			idle_since = now_s();
		else if (idle_s && now_s() - idle_since > idle_s)
			return 0;
	}
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
