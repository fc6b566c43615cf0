/*
 * test_security.c - another user cannot reach a process's cache objects.
 *
 * A process's caches are memfds and its swap files unnamed O_TMPFILE files:
 * nothing in the file system names them, and the only ways in, the
 * process's /proc/<pid>/fd and map_files entries, are closed to other
 * users.  The writeback service holds the file caches' memfds too, and
 * answers only its own user.  Checked from a child that drops to the nobody
 * user (needs root, and says so when it skips).  And the service hands a
 * file's cache only for a descriptor of that file (the proof that the
 * process could open it), whatever the request claims.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fds.h"
#include "proto.h"
#include "ummap.h"

#define MiB (1UL << 20)

/* ummap's descriptors in this process: cache memfds and swap files
 * (unnamed files show as "/dir/#inode (deleted)"). */
struct found {
	int fd[64];
	int n;
};

static void note_ummap_fd(int fd, const char *target, void *arg)
{
	struct found *f = arg;
	if (f->n < 64 && fds_is_ummap_object(target))
		f->fd[f->n++] = fd;
}

Test(security, other_users_cannot_open_cache_objects)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to drop to another user");
	char path[] = "/tmp/ummap-sec.XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert(fchmod(fd, 0644) == 0 && ftruncate(fd, 1 * MiB) == 0);
	char *f = um_mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(f != MAP_FAILED);
	memset(f, 'x', 1 * MiB);
	/* Shared anonymous memory beyond the budget: a swap file too. */
	struct um_config cfg = { .budget = 4 * MiB };
	cr_assert(um_configure(&cfg) == 0);
	char *a = um_mmap(NULL, 16 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(a != MAP_FAILED);
	memset(a, 'y', 16 * MiB);
	struct found found = { .n = 0 };
	fds_each(note_ummap_fd, &found);
	int *fds = found.fd, n = found.n;
	cr_assert(n >= 3, "expected the file's and the anonymous object's memfds and a swap file, found %d", n);
	pid_t parent = getpid();
	pid_t pid = fork();
	if (pid == 0) {
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(100);
		int opened = 0;
		for (int i = 0; i < n; i++) {
			char p[64];
			snprintf(p, sizeof p, "/proc/%d/fd/%d", (int)parent, fds[i]);
			int x = open(p, O_RDONLY);
			if (x >= 0) {
				opened++;
				close(x);
			}
		}
		/* Nor through the mappings. */
		char p[96];
		snprintf(p, sizeof p, "/proc/%d/map_files/%lx-%lx", (int)parent, (unsigned long)f,
			 (unsigned long)(f + 1 * MiB));
		int x = open(p, O_RDONLY);
		if (x >= 0) {
			opened++;
			close(x);
		}
		_exit(opened);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 100, "could not drop to uid 65534");
	cr_expect(WEXITSTATUS(status) == 0, "another user opened %d of ummap's objects", WEXITSTATUS(status));
	/* The same opens as this user work: the test looks at the right files. */
	char p[64];
	snprintf(p, sizeof p, "/proc/self/fd/%d", fds[0]);
	int x = open(p, O_RDONLY);
	cr_expect(x >= 0, "the owner can open %s: %s", p, strerror(errno));
	if (x >= 0)
		close(x);
	cr_assert(um_munmap(a, 16 * MiB) == 0 && um_munmap(f, 1 * MiB) == 0);
	close(fd);
	unlink(path);
}

/* Connects to uid's writeback service and says HELLO: 1 if it answers.
 * *pid gets the service's process id. */
static int service_answers(uid_t uid, pid_t *pid)
{
	struct sockaddr_un a;
	socklen_t alen = um_service_addr(&a, uid);
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (s < 0 || connect(s, (struct sockaddr *)&a, alen) < 0)
		return 0;
	struct ucred cr;
	socklen_t crlen = sizeof cr;
	if (pid && getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0)
		*pid = cr.pid;
	struct um_msg m = { .type = UM_MSG_HELLO, .version = UM_PROTO_VERSION };
	int ok = send(s, &m, sizeof m, MSG_NOSIGNAL) == sizeof m && recv(s, &m, sizeof m, 0) == sizeof m &&
		 m.type == UM_MSG_HELLO;
	close(s);
	return ok;
}

/* The inodes of this process's ummap memfds. */
struct inodes {
	ino_t ino[16];
	int n;
};

static void note_own_memfd(int fd, const char *target, void *arg)
{
	struct inodes *in = arg;
	struct stat st;
	if (in->n < 16 && strstr(target, "memfd:ummap-") && fstat(fd, &st) == 0)
		in->ino[in->n++] = st.st_ino;
}

/* The service's descriptors of this process's memfds (other processes of
 * the user may be using the service meanwhile). */
static pid_t service_pid;
static struct inodes own;

static void note_memfd(int fd, const char *target, void *arg)
{
	struct found *f = arg;
	char p[64];
	struct stat st;
	snprintf(p, sizeof p, "/proc/%d/fd/%d", (int)service_pid, fd);
	if (f->n >= 64 || !strstr(target, "memfd:ummap-") || stat(p, &st) < 0)
		return;
	for (int i = 0; i < own.n; i++)
		if (own.ino[i] == st.st_ino)
			f->fd[f->n++] = fd;
}

Test(security, other_users_cannot_use_the_service)
{
	if (geteuid() != 0)
		cr_skip_test("needs root to drop to another user");
	char path[] = "/tmp/ummap-sec.XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0 && ftruncate(fd, 1 * MiB) == 0);
	char *f = um_mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(f != MAP_FAILED);
	memset(f, 'x', 1 * MiB);
	pid_t svc = 0;
	cr_assert(service_answers(geteuid(), &svc), "no writeback service answers (is UMMAP_SERVICE set?)");
	/* The service holds this cache's memfds (data and page states). */
	/* (It reads this process's messages on their own connection.) */
	struct found found = { .n = 0 };
	fds_each(note_own_memfd, &own);
	service_pid = svc;
	for (int i = 0; i < 200 && found.n < 2; i++) {
		found.n = 0;
		fds_each_of(svc, note_memfd, &found);
		if (found.n < 2)
			usleep(10 * 1000);
	}
	cr_assert(found.n >= 2, "the service (pid %d) holds %d ummap memfds", (int)svc, found.n);
	pid_t pid = fork();
	if (pid == 0) {
		if (setgid(65534) != 0 || setuid(65534) != 0)
			_exit(100);
		int reached = service_answers(0, NULL);
		for (int i = 0; i < found.n; i++) {
			char p[64];
			snprintf(p, sizeof p, "/proc/%d/fd/%d", (int)svc, found.fd[i]);
			int x = open(p, O_RDONLY);
			if (x >= 0) {
				reached++;
				close(x);
			}
		}
		_exit(reached);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) != 100, "could not drop to uid 65534");
	cr_expect(WEXITSTATUS(status) == 0, "another user reached the service or %d of its objects",
		  WEXITSTATUS(status));
	/* The owner can: the test looks at the right things. */
	char p[64];
	snprintf(p, sizeof p, "/proc/%d/fd/%d", (int)svc, found.fd[0]);
	int x = open(p, O_RDONLY);
	cr_expect(x >= 0, "the owner can open %s: %s", p, strerror(errno));
	if (x >= 0)
		close(x);
	cr_assert(um_munmap(f, 1 * MiB) == 0);
	close(fd);
	unlink(path);
}

/* OPEN on a raw connection: the service's memfds for the file behind
 * `file`, while the message claims (dev, ino); -1 if refused. */
static int open_cache_for(int s, int file, dev_t dev, ino_t ino, int *mine)
{
	int data = memfd_create("test-data", MFD_CLOEXEC), state = memfd_create("test-state", MFD_CLOEXEC);
	cr_assert(data >= 0 && state >= 0 && ftruncate(state, UM_STATE_HDR) == 0);
	struct um_shared *h = mmap(NULL, UM_STATE_HDR, PROT_READ | PROT_WRITE, MAP_SHARED, state, 0);
	cr_assert(h != MAP_FAILED);
	h->magic = UM_SHARED_MAGIC;
	munmap(h, UM_STATE_HDR);
	struct um_msg m = { .type = UM_MSG_OPEN, .version = UM_PROTO_VERSION, .dev = dev, .ino = ino };
	int fds[3] = { file, data, state };
	cr_assert(um_send_msg(s, &m, fds, 3) == 0);
	struct iovec iov = { .iov_base = &m, .iov_len = sizeof m };
	struct msghdr mh;
	struct cmsghdr *cm;
	struct stat st;
	fstat(data, &st);
	*mine = (int)st.st_ino;
	close(data);
	close(state);
	char rctl[CMSG_SPACE(2 * sizeof(int))];
	mh = (struct msghdr){ .msg_iov = &iov, .msg_iovlen = 1, .msg_control = rctl, .msg_controllen = sizeof rctl };
	cr_assert(recvmsg(s, &mh, MSG_CMSG_CLOEXEC) == sizeof m);
	cm = CMSG_FIRSTHDR(&mh);
	if (m.err || !cm)
		return -1;
	int got[2];
	memcpy(got, CMSG_DATA(cm), sizeof got);
	close(got[1]);
	return got[0];
}

static int ino_of(int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 ? (int)st.st_ino : -1;
}

static void note_cache_memfd(int fd, const char *target, void *arg)
{
	if (strstr(target, "memfd:ummap-cache"))
		*(int *)arg = fd;
}

Test(security, a_cache_is_given_only_for_a_descriptor_of_its_file)
{
	/* The service keys caches by the file behind the descriptor a process
	 * sends, never by what the message claims; it refuses what is not a
	 * regular file. */
	char pa[] = "/tmp/ummap-sec-a.XXXXXX", pb[] = "/tmp/ummap-sec-b.XXXXXX";
	int a = mkstemp(pa), b = mkstemp(pb);
	cr_assert(a >= 0 && b >= 0 && ftruncate(a, 1 * MiB) == 0 && ftruncate(b, 1 * MiB) == 0);
	char *m = um_mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0);
	cr_assert(m != MAP_FAILED);
	m[0] = 'a';
	int ours = -1; /* this process's cache of file a */
	fds_each_of(getpid(), note_cache_memfd, &ours);
	cr_assert(ours >= 0);
	struct stat sa;
	fstat(a, &sa);
	struct sockaddr_un addr;
	socklen_t alen = um_service_addr(&addr, geteuid());
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	cr_assert(s >= 0 && connect(s, (struct sockaddr *)&addr, alen) == 0, "no service (is UMMAP_SERVICE set?)");
	struct um_msg hello = { .type = UM_MSG_HELLO, .version = UM_PROTO_VERSION };
	cr_assert(send(s, &hello, sizeof hello, 0) == sizeof hello && recv(s, &hello, sizeof hello, 0) == sizeof hello);
	int fresh;
	/* A descriptor of b, claiming a: b's cache (the fresh memfds), not a's. */
	int got = open_cache_for(s, b, sa.st_dev, sa.st_ino, &fresh);
	cr_expect(got >= 0 && ino_of(got) == fresh && ino_of(got) != ino_of(ours),
		  "a descriptor of another file gives that file's cache");
	close(got);
	/* A descriptor of a (read-only): a's cache, the one this process uses. */
	int ra = open(pa, O_RDONLY);
	got = open_cache_for(s, ra, 0, 0, &fresh);
	cr_expect(got >= 0 && ino_of(got) == ino_of(ours), "a descriptor of the file gives its cache");
	close(got);
	close(ra);
	/* Not a regular file: refused. */
	int p[2];
	cr_assert(pipe(p) == 0);
	cr_expect(open_cache_for(s, p[0], sa.st_dev, sa.st_ino, &fresh) < 0, "a pipe gets no cache");
	close(p[0]);
	close(p[1]);
	close(s);
	cr_assert(um_munmap(m, 1 * MiB) == 0);
	close(a);
	close(b);
	unlink(pa);
	unlink(pb);
}

static volatile int sigchld_seen;

static void on_sigchld(int sig)
{
	sigchld_seen++;
}

Test(service, is_started_unseen_by_the_application)
{
	/* With no service running, the first writable mapping starts one: it
	 * answers at once (what a process killed right after needs), and the
	 * application sees no SIGCHLD and has no child to wait for. */
	pid_t svc = 0;
	if (service_answers(geteuid(), &svc)) {
		kill(svc, SIGKILL);
		for (int i = 0; i < 500 && service_answers(geteuid(), NULL); i++)
			usleep(10000);
	}
	cr_assert(!service_answers(geteuid(), NULL), "the old service is gone");
	struct sigaction sa = { .sa_handler = on_sigchld };
	sigaction(SIGCHLD, &sa, NULL);
	char path[] = "/tmp/ummap-start.XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0 && ftruncate(fd, 1 * MiB) == 0);
	char *f = um_mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(f != MAP_FAILED);
	cr_expect(service_answers(geteuid(), NULL), "a service was started and answers");
	usleep(50000);
	cr_expect(sigchld_seen == 0, "the application saw %d SIGCHLD", sigchld_seen);
	cr_expect(waitpid(-1, NULL, WNOHANG) < 0 && errno == ECHILD, "the application has no child to wait for");
	cr_assert(um_munmap(f, 1 * MiB) == 0);
	close(fd);
	unlink(path);
}
