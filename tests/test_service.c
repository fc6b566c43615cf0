/*
 * test_service.c - the writeback service as the processes that use it
 * need it: a lost connection or a killed service costs no store and no
 * sharing, a process in another PID namespace is protected like any
 * other, the service outlives the cgroup of the application that started
 * it, and an installed library finds the installed service.
 *
 * Processes are forked before any of them uses ummap, so each starts its
 * engine (and its connection) of its own.  Some tests kill the running
 * service: it is this protocol version's, which only this build uses.
 * Waits for something the service or a watcher does "at once" poll with
 * a generous cap (WAIT_STEPS), only so that a broken build fails instead
 * of hanging.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "proto.h"
#include "ummap.h"

#define PG 4096UL
#define WAIT_STEPS 3000 /* of 10 ms */

/* The running service's pid (0 if none answers). */
static pid_t service_pid(void)
{
	struct sockaddr_un a;
	socklen_t alen = um_service_addr(&a, geteuid());
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct ucred cr = { 0 };
	socklen_t crlen = sizeof cr;
	if (s < 0 || connect(s, (struct sockaddr *)&a, alen) < 0 ||
	    getsockopt(s, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) < 0)
		cr.pid = 0;
	if (s >= 0)
		close(s);
	return cr.pid;
}

/* Kill the running service, if any, and wait until it is gone. */
static void service_kill(void)
{
	pid_t pid = service_pid();
	if (!pid)
		return;
	int pfd = (int)syscall(SYS_pidfd_open, pid, 0);
	kill(pid, SIGKILL);
	if (pfd >= 0) {
		struct pollfd p = { .fd = pfd, .events = POLLIN };
		poll(&p, 1, -1);
		close(pfd);
	}
	for (int i = 0; i < WAIT_STEPS && service_pid() == pid; i++)
		usleep(10000);
}

/* Start the service ($UMMAP_SERVICE) if none runs, from this process. */
static void service_start(void)
{
	if (service_pid())
		return;
	const char *path = getenv("UMMAP_SERVICE");
	cr_assert(path && *path, "UMMAP_SERVICE names the service to test");
	pid_t pid = fork();
	if (pid == 0) {
		execl(path, "ummap", "service", "--daemon", (char *)NULL);
		_exit(127);
	}
	int st;
	cr_assert(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s started", path);
}

/* The service's STAT answer, in buf ("" if none answers). */
static void service_stat(char *buf, size_t n)
{
	buf[0] = 0;
	struct sockaddr_un a;
	socklen_t alen = um_service_addr(&a, geteuid());
	int s = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	struct um_msg m = { .type = UM_MSG_STAT, .version = UM_PROTO_VERSION };
	if (s < 0 || connect(s, (struct sockaddr *)&a, alen) < 0 || send(s, &m, sizeof m, MSG_NOSIGNAL) < 0) {
		if (s >= 0)
			close(s);
		return;
	}
	size_t len = 0;
	ssize_t k;
	while (len + 1 < n && (k = recv(s, buf + len, n - len - 1, 0)) > 0)
		len += (size_t)k;
	buf[len] = 0;
	close(s);
}

/* Wait until the service lists path with `want` in its line. */
static bool wait_listed(const char *path, const char *want)
{
	static char buf[1 << 16];
	for (int i = 0; i < WAIT_STEPS; i++) {
		service_stat(buf, sizeof buf);
		for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
			char *end = strchr(l, '\n');
			size_t ll = end ? (size_t)(end - l) : strlen(l);
			char line[1024];
			snprintf(line, sizeof line, "%.*s", (int)(ll < sizeof line ? ll : sizeof line - 1), l);
			if (strstr(line, path) && strstr(line, want))
				return true;
		}
		usleep(10000);
	}
	return false;
}

/* A file of n pages of 'a', its path in path. */
static int file_of(char *path, size_t pages)
{
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	char page[PG];
	memset(page, 'a', sizeof page);
	for (size_t i = 0; i < pages; i++)
		cr_assert(pwrite(fd, page, PG, (off_t)(i * PG)) == (ssize_t)PG);
	return fd;
}

static char byte_at(const char *path, off_t off)
{
	int fd = open(path, O_RDONLY);
	char b = 0;
	cr_assert(fd >= 0 && pread(fd, &b, 1, off) == 1);
	close(fd);
	return b;
}

/* A pair of pipes between the test and one child: step() sends a byte one
 * way, await() waits for one. */
struct chan {
	int to[2], from[2];
};

static void chan_open(struct chan *c)
{
	cr_assert(pipe(c->to) == 0 && pipe(c->from) == 0);
}

static void step(int fd)
{
	char b = 's';
	if (write(fd, &b, 1) != 1)
		_exit(90);
}

static bool await(int fd)
{
	char b;
	return read(fd, &b, 1) == 1;
}

/* Child: map path shared, store `first` at byte 0 and tell; then, at each
 * go from the test, store the next of `then` at byte 0 and tell.  Killed
 * by the test. */
static void child_store(const char *path, struct chan *c, char first, const char *then, bool drop_connection)
{
	int fd = open(path, O_RDWR);
	char *p = um_mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		_exit(91);
	p[0] = first;
	if (drop_connection) {
		/* What the library does with an answer that does not come in
		 * time: give the connection up. */
		for (int s = 3; s < 1024; s++) {
			int type;
			socklen_t tl = sizeof type;
			if (getsockopt(s, SOL_SOCKET, SO_TYPE, &type, &tl) == 0 && type == SOCK_SEQPACKET)
				shutdown(s, SHUT_RDWR);
		}
	}
	step(c->from[1]);
	for (const char *t = then; *t; t++) {
		if (!await(c->to[0]))
			_exit(0);
		p[0] = *t;
		step(c->from[1]);
	}
	for (;;)
		pause();
}

static pid_t spawn_store(const char *path, struct chan *c, char first, const char *then, bool drop)
{
	chan_open(c);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* (a failing test ends here) */
		child_store(path, c, first, then, drop);
	}
	cr_assert(await(c->from[0]), "the child mapped the file");
	return pid;
}

static void reap(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* A process whose connection is lost (an answer that came too late) may
 * still store into pages others clean: the service keeps write-protecting
 * it, and its store after another process's msync reaches the file. */
Test(service, a_lost_connection_costs_no_store)
{
	char path[] = "/tmp/ummap-svc-lost.XXXXXX";
	int fd = file_of(path, 2);
	struct chan c;
	pid_t a = spawn_store(path, &c, 'x', "y", true);
	char *p = um_mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(p != MAP_FAILED);
	cr_assert(p[0] == 'x', "one cache: the other process's store is seen");
	cr_assert(um_msync(p, 2 * PG, MS_SYNC) == 0);
	step(c.to[1]);
	cr_assert(await(c.from[0]));
	cr_expect(p[0] == 'y');
	reap(a);
	cr_assert(um_munmap(p, 2 * PG) == 0);
	cr_expect(byte_at(path, 0) == 'y', "the store made after the msync reached the file (got '%c')",
		  byte_at(path, 0));
	close(fd);
	unlink(path);
}

/* The service is killed while two processes share a file's cache with a
 * store not yet written back: they connect to a new service and hand it
 * their cache, so a process started afterwards shares it, and a store of
 * theirs still reaches the file when they are killed in turn. */
Test(service, a_killed_service_is_replaced_and_given_the_caches)
{
	char path[] = "/tmp/ummap-svc-kill.XXXXXX";
	int fd = file_of(path, 2);
	struct chan c1, c2;
	pid_t a1 = spawn_store(path, &c1, 'x', "", false);
	pid_t a2 = spawn_store(path, &c2, 'x', "wv", false);
	service_kill();
	cr_assert(wait_listed(path, "2 process(es)"),
		  "the two processes connected to a new service and handed it the file's cache");
	char *p = um_mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(p != MAP_FAILED);
	cr_expect(p[0] == 'x', "a process started after the service was killed shares the cache (read '%c')", p[0]);
	step(c2.to[1]);
	cr_assert(await(c2.from[0]));
	cr_expect(p[0] == 'w', "and sees the others' stores (read '%c')", p[0]);
	cr_assert(um_munmap(p, 2 * PG) == 0);
	step(c2.to[1]);
	cr_assert(await(c2.from[0]));
	reap(a1);
	reap(a2);
	/* Only the new service holds the last store now. */
	for (int i = 0; i < WAIT_STEPS && byte_at(path, 0) != 'v'; i++)
		usleep(10000);
	cr_expect(byte_at(path, 0) == 'v', "the killed processes' store reached the file (got '%c')",
		  byte_at(path, 0));
	close(fd);
	unlink(path);
}

/* Can this process make a PID namespace (root, or a user namespace)? */
static bool can_unshare_pid(void)
{
	pid_t pid = fork();
	if (pid == 0)
		_exit(unshare(CLONE_NEWPID) == 0 ? 0 : 1);
	int st;
	return pid > 0 && waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* A process in another PID namespace (its getpid() is 1) is write-protected
 * by others' writeback like any other: its store after another process's
 * msync reaches the file. */
Test(service, a_process_in_another_pid_namespace_is_protected)
{
	if (!can_unshare_pid())
		cr_skip_test("cannot make a PID namespace here (needs root or user namespaces)");
	/* The service runs outside the namespace (one started inside it
	 * would live and die in it: README). */
	service_start();
	char path[] = "/tmp/ummap-svc-pidns.XXXXXX";
	int fd = file_of(path, 2);
	struct chan c;
	chan_open(&c);
	pid_t outer = fork();
	cr_assert(outer >= 0);
	if (outer == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (unshare(CLONE_NEWPID) < 0)
			_exit(92);
		pid_t inner = fork(); /* pid 1 of the new namespace */
		if (inner == 0) {
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			child_store(path, &c, 'x', "y", false);
		}
		waitpid(inner, NULL, 0);
		_exit(0);
	}
	cr_assert(await(c.from[0]), "the process in the namespace mapped the file");
	char *p = um_mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(p != MAP_FAILED);
	cr_assert(p[0] == 'x', "one cache across the namespaces");
	cr_assert(um_msync(p, 2 * PG, MS_SYNC) == 0);
	step(c.to[1]);
	cr_assert(await(c.from[0]));
	cr_expect(p[0] == 'y');
	cr_assert(um_munmap(p, 2 * PG) == 0);
	reap(outer);
	cr_expect(byte_at(path, 0) == 'y', "the store made after the msync reached the file (got '%c')",
		  byte_at(path, 0));
	close(fd);
	unlink(path);
}

/* `make && make install PREFIX=DIR`: a program built against DIR with
 * pkg-config and run without UMMAP_SERVICE is served by DIR's service
 * (the library looks beside itself before the path the build named).  In
 * a sanitizer build the program is built with the same sanitizer
 * (UM_TEST_SAN), as an instrumented library needs. */
Test(install, an_installed_library_starts_the_installed_service)
{
	char dir[] = "/tmp/ummap-inst.XXXXXX";
	cr_assert(mkdtemp(dir));
	const char *b = getenv("B") ? getenv("B") : "build";
	char cmd[4096], file[512], exe[512], want[512];
	snprintf(file, sizeof file, "%s/data", dir);
	FILE *f = fopen(file, "w");
	cr_assert(f && fputs("aaaa", f) >= 0 && fclose(f) == 0);
	snprintf(cmd, sizeof cmd,
		 "set -e; make -s install B=%s PREFIX=%s >%s/install.log 2>&1\n"
		 "cat >%s/prog.c <<'END'\n"
		 "#include <fcntl.h>\n#include <stdio.h>\n#include <sys/mman.h>\n#include <ummap.h>\n"
		 "int main(int argc, char **argv) {\n"
		 "	int fd = open(argv[1], O_RDWR);\n"
		 "	char *p = um_mmap(NULL, 4, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);\n"
		 "	if (p == MAP_FAILED) return 1;\n"
		 "	p[0] = 'b';\n"
		 "	return um_munmap(p, 4) != 0;\n"
		 "}\nEND\n"
		 "export PKG_CONFIG_PATH=%s/lib/pkgconfig\n"
		 "cc $UM_TEST_SAN -o %s/prog %s/prog.c $(pkg-config --cflags --libs ummap)\n"
		 "env -u UMMAP_SERVICE LD_LIBRARY_PATH=%s/lib %s/prog %s 2>%s/prog.err\n"
		 "test ! -s %s/prog.err",
		 b, dir, dir, dir, dir, dir, dir, dir, dir, file, dir, dir);
	service_kill();
	int st = system(cmd);
	snprintf(cmd, sizeof cmd, "cat %s/install.log %s/prog.err 1>&2", dir, dir);
	if (st)
		system(cmd);
	cr_expect(st == 0, "installed, built with pkg-config and run without a word on stderr");
	pid_t svc = service_pid();
	char link[64];
	snprintf(link, sizeof link, "/proc/%d/exe", (int)svc);
	ssize_t n = svc ? readlink(link, exe, sizeof exe - 1) : -1;
	exe[n > 0 ? n : 0] = 0;
	snprintf(want, sizeof want, "%s/bin/ummap", dir);
	cr_expect(!strcmp(exe, want), "the service runs from %s (runs: '%s')", want, exe);
	service_kill();
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	cr_assert(system(cmd) == 0);
}

/* A cgroup hierarchy this process may make cgroups in: cgroup v1's memory
 * controller, or cgroup v2 (with cgroup.kill); NULL if none. */
static const char *cgroup_root(bool *v2)
{
	static const char *const roots[] = { "/sys/fs/cgroup/memory", "/sys/fs/cgroup", "/sys/fs/cgroup/unified" };
	for (size_t i = 0; i < sizeof roots / sizeof *roots; i++) {
		char p[256];
		snprintf(p, sizeof p, "%s/cgroup.procs", roots[i]);
		if (access(p, W_OK) < 0)
			continue;
		snprintf(p, sizeof p, "%s/cgroup.kill", roots[i]);
		*v2 = access(p, F_OK) == 0;
		if (*v2 && i == 0)
			continue;
		return roots[i];
	}
	return NULL;
}

static bool write_to(const char *dir, const char *name, const char *text)
{
	char p[512];
	snprintf(p, sizeof p, "%s/%s", dir, name);
	FILE *f = fopen(p, "w");
	return f && fputs(text, f) >= 0 && fclose(f) == 0;
}

/* Kill every process of cgroup dir (v1: one by one, until none is left). */
static void kill_cgroup(const char *dir, bool v2)
{
	if (v2 && write_to(dir, "cgroup.kill", "1"))
		return;
	char p[512];
	snprintf(p, sizeof p, "%s/cgroup.procs", dir);
	for (int i = 0; i < WAIT_STEPS; i++) {
		FILE *f = fopen(p, "r");
		int pid, n = 0;
		while (f && fscanf(f, "%d", &pid) == 1 && ++n)
			kill(pid, SIGKILL);
		if (f)
			fclose(f);
		if (!n)
			return;
		usleep(10000);
	}
}

/* The service, started by a process of an application's cgroup, outlives
 * that cgroup being killed (systemctl stop, an OOM group kill), and writes
 * back what the killed process left. */
Test(service, outlives_the_cgroup_that_started_it)
{
	bool v2;
	const char *root = cgroup_root(&v2);
	if (!root)
		cr_skip_test("no cgroup hierarchy this user may make cgroups in");
	char grp[256];
	snprintf(grp, sizeof grp, "%s/ummap-test-%d", root, (int)getpid());
	if (mkdir(grp, 0755) < 0)
		cr_skip_test("cannot make a cgroup in %s: %s", root, strerror(errno));
	service_kill();
	char path[] = "/tmp/ummap-svc-cgroup.XXXXXX";
	int fd = file_of(path, 2);
	struct chan c;
	chan_open(&c);
	pid_t a = fork();
	cr_assert(a >= 0);
	if (a == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (!write_to(grp, "cgroup.procs", "0"))
			_exit(93);
		child_store(path, &c, 'x', "", false); /* starts the service */
	}
	cr_assert(await(c.from[0]), "the process in the cgroup mapped the file");
	pid_t svc = service_pid();
	cr_assert(svc > 0, "it started a service");
	kill_cgroup(grp, v2);
	waitpid(a, NULL, 0);
	cr_expect(service_pid() == svc, "the service outlived the cgroup");
	for (int i = 0; i < WAIT_STEPS && byte_at(path, 0) != 'x'; i++)
		usleep(10000);
	cr_expect(byte_at(path, 0) == 'x', "the killed process's store reached the file (got '%c')", byte_at(path, 0));
	rmdir(grp);
	close(fd);
	unlink(path);
}
