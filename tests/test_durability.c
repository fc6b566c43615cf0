/*
 * test_durability.c - what msync promises, on real filesystems: after
 * MS_SYNC the data is on the device (read back with O_DIRECT, past every
 * cache), and a filesystem that fills up (a small tmpfs) makes msync report
 * ENOSPC, keeps the data dirty, and writes it once there is room again --
 * also when the writer was killed and the writeback service holds its data
 * (`ummap stat` shows it pending, `ummap recover` writes it).
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ummap.h"

#define MiB (1UL << 20)

static uint8_t byte_at(uint64_t off, unsigned seed)
{
	return (uint8_t)((off * 2654435761u) >> 7) ^ (uint8_t)seed;
}

Test(durability, ms_sync_reaches_the_device)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	char path[256];
	snprintf(path, sizeof path, "%s/ummap-durable.XXXXXX", tmp);
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert(ftruncate(fd, 4 * MiB) == 0);
	int dfd = open(path, O_RDONLY | O_DIRECT);
	if (dfd < 0) {
		unlink(path);
		cr_skip_test("O_DIRECT is not supported in %s (%s)", tmp, strerror(errno));
	}
	uint8_t *m = um_mmap(NULL, 4 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(m != MAP_FAILED);
	for (uint64_t i = 0; i < 4 * MiB; i += 3)
		m[i] = byte_at(i, 1);
	cr_assert(um_msync(m, 4 * MiB, MS_SYNC) == 0);
	/* Past the page cache: what the device holds. */
	uint8_t *buf;
	cr_assert(posix_memalign((void **)&buf, 4096, 4 * MiB) == 0);
	cr_assert(pread(dfd, buf, 4 * MiB, 0) == (ssize_t)(4 * MiB));
	for (uint64_t i = 0; i < 4 * MiB; i++) {
		uint8_t want = i % 3 == 0 ? byte_at(i, 1) : 0;
		if (buf[i] != want)
			cr_assert_fail("byte %lu on the device is %u, want %u", i, buf[i], want);
	}
	free(buf);
	cr_assert(um_munmap(m, 4 * MiB) == 0);
	close(dfd);
	close(fd);
	unlink(path);
}

/* A 256 KiB tmpfs at dir (a mkdtemp template), in a mount namespace of
 * this test's own, so that the mount goes away with the process whatever
 * happens; returns a descriptor of dir/f (its name in path), a sparse
 * 1 MiB file: it fits until written. */
static int file_on_a_small_tmpfs(char *dir, char *path, size_t len)
{
	cr_assert(mkdtemp(dir) != NULL);
	if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
	    mount("ummap-test", dir, "tmpfs", 0, "size=256k") != 0) {
		int e = errno;
		rmdir(dir);
		cr_skip_test("cannot mount a small tmpfs (%s): run as root to check ENOSPC", strerror(e));
	}
	snprintf(path, len, "%s/f", dir);
	int fd = open(path, O_RDWR | O_CREAT, 0600);
	cr_assert(fd >= 0);
	cr_assert(ftruncate(fd, 1 * MiB) == 0);
	return fd;
}

/* The file behind fd holds byte_at(i, seed) for its first MiB; then the
 * small tmpfs at dir goes. */
static void file_holds_and_unmount(int fd, unsigned seed, const char *dir)
{
	uint8_t *buf = malloc(1 * MiB);
	cr_assert(pread(fd, buf, 1 * MiB, 0) == (ssize_t)(1 * MiB));
	for (uint64_t i = 0; i < 1 * MiB; i++)
		if (buf[i] != byte_at(i, seed))
			cr_assert_fail("byte %lu in the file is %u, want %u", i, buf[i], byte_at(i, seed));
	free(buf);
	close(fd);
	umount2(dir, MNT_DETACH);
	rmdir(dir);
}

Test(durability, a_full_filesystem_loses_nothing)
{
	char dir[] = "/tmp/ummap-full.XXXXXX", path[300];
	int fd = file_on_a_small_tmpfs(dir, path, sizeof path);
	uint8_t *m = um_mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(m != MAP_FAILED);
	for (uint64_t i = 0; i < 1 * MiB; i++)
		m[i] = byte_at(i, 2);
	errno = 0;
	cr_expect(um_msync(m, 1 * MiB, MS_SYNC) == -1 && errno == ENOSPC, "msync on a full filesystem: errno %d",
		  errno);
	struct um_stats st;
	cr_assert(um_stats(m, &st) == 0);
	cr_expect(st.dirty_bytes > 0, "what could not be written stays dirty");
	errno = 0;
	cr_expect(um_msync(m, 1 * MiB, MS_SYNC) == -1 && errno == ENOSPC, "still full: reported again (%d)", errno);
	/* Room again: everything is written. */
	cr_assert(mount(NULL, dir, NULL, MS_REMOUNT, "size=4m") == 0);
	cr_expect(um_msync(m, 1 * MiB, MS_SYNC) == 0, "msync once there is room: errno %d", errno);
	cr_assert(um_stats(m, &st) == 0);
	cr_expect(st.dirty_bytes == 0, "nothing left dirty (%lu)", st.dirty_bytes);
	cr_assert(um_munmap(m, 1 * MiB) == 0);
	file_holds_and_unmount(fd, 2, dir);
}

static void need_service(void)
{
	const char *svc = getenv("UMMAP_SERVICE");
	if (!svc || access(svc, X_OK) != 0)
		cr_skip_test("UMMAP_SERVICE does not name the ummap program (make test sets it)");
}

/* Runs `ummap ARG` (the program named by UMMAP_SERVICE); its output in out. */
static int ummap_cmd(const char *arg, char *out, size_t len)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "'%s' %s", getenv("UMMAP_SERVICE"), arg);
	FILE *p = popen(cmd, "r");
	cr_assert(p != NULL);
	size_t n = fread(out, 1, len - 1, p);
	out[n] = 0;
	int st = pclose(p);
	return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

Test(durability, a_killed_writer_on_a_full_filesystem_is_recovered)
{
	need_service();
	char dir[] = "/tmp/ummap-full.XXXXXX", path[300];
	int fd = file_on_a_small_tmpfs(dir, path, sizeof path);
	int p[2];
	cr_assert(pipe(p) == 0);
	pid_t pid = fork();
	if (pid == 0) {
		/* Writes 1 MiB (four times what fits), says so, waits to die. */
		uint8_t *m = um_mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		for (uint64_t i = 0; m != MAP_FAILED && i < 1 * MiB; i++)
			m[i] = byte_at(i, 3);
		if (write(p[1], "w", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	char c;
	cr_assert(read(p[0], &c, 1) == 1);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	/* The service tried at once and keeps it; stat says so. */
	char out[4096];
	bool seen = false;
	for (int i = 0; i < 200 && !seen; i++) {
		ummap_cmd("stat", out, sizeof out);
		seen = strstr(out, path) && strstr(out, "ended") && strstr(out, strerror(ENOSPC));
		if (!seen)
			usleep(10 * 1000);
	}
	cr_expect(seen, "ummap stat shows the pending writeback and its error:\n%s", out);
	cr_expect(ummap_cmd("recover", out, sizeof out) == 1, "recover fails while the filesystem is full:\n%s",
		  out);
	/* Room again: recover writes everything. */
	cr_assert(mount(NULL, dir, NULL, MS_REMOUNT, "size=4m") == 0);
	cr_expect(ummap_cmd("recover", out, sizeof out) == 0, "recover once there is room:\n%s", out);
	file_holds_and_unmount(fd, 3, dir);
}

/* A child that maps fd and runs fn on the mapping; returns its pid.  The
 * exit status is fn's. */
static pid_t mapper(int fd, int (*fn)(uint8_t *m, int fd, int in, int out), int in, int out)
{
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		uint8_t *m = um_mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		_exit(m == MAP_FAILED ? 100 : fn(m, fd, in, out));
	}
	return pid;
}

static int status_of(pid_t pid)
{
	int st = 0;
	waitpid(pid, &st, 0);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 200 + WTERMSIG(st);
}

/* B: maps the file early; once told, msync reports A's failure once. */
static int early_mapper(uint8_t *m, int fd, int in, int out)
{
	char c = (char)m[0];
	if (write(out, &c, 1) != 1 || read(in, &c, 1) != 1)
		return 10;
	int first = um_msync(m, 1 * MiB, MS_SYNC) == -1 && errno == ENOSPC;
	int second = um_msync(m, 1 * MiB, MS_SYNC) == 0;
	return (first ? 0 : 1) | (second ? 0 : 2);
}

/* D: like B, but learns of it from munmap. */
static int early_unmapper(uint8_t *m, int fd, int in, int out)
{
	char c = (char)m[0];
	if (write(out, &c, 1) != 1 || read(in, &c, 1) != 1)
		return 10;
	return um_munmap(m, 1 * MiB) == -1 && errno == ENOSPC ? 0 : 1;
}

/* A: fills the file past what the filesystem holds; msync fails.  It
 * then truncates the file, so that nothing stays dirty (no writeback of
 * the service's can fail later and move the sequence again). */
static int failing_writer(uint8_t *m, int fd, int in, int out)
{
	memset(m, 'a', 1 * MiB);
	int failed = um_msync(m, 1 * MiB, MS_SYNC) == -1 && errno == ENOSPC;
	return (failed ? 0 : 1) | (um_ftruncate(fd, 0) == 0 ? 0 : 2);
}

/* C: maps the file after the failure: nothing to report. */
static int late_mapper(uint8_t *m, int fd, int in, int out)
{
	(void)m[0];
	return um_msync(m, 1 * MiB, MS_SYNC) == 0 ? 0 : 1;
}

Test(durability, a_failed_writeback_is_reported_in_every_process)
{
	/* As the kernel's errseq: a writeback that failed in one process is
	 * reported by the next msync(MS_SYNC) (or munmap, as ummap's own
	 * errors are) of each process that had the file mapped, once; not to
	 * one that mapped it after. */
	need_service();
	char dir[] = "/tmp/ummap-full.XXXXXX", path[300];
	int fd = file_on_a_small_tmpfs(dir, path, sizeof path);
	int ready[2], go[2];
	cr_assert(pipe(ready) == 0 && pipe(go) == 0);
	pid_t b = mapper(fd, early_mapper, go[0], ready[1]);
	pid_t d = mapper(fd, early_unmapper, go[0], ready[1]);
	char c;
	cr_assert(read(ready[0], &c, 1) == 1 && read(ready[0], &c, 1) == 1);
	int a = status_of(mapper(fd, failing_writer, -1, -1));
	cr_expect(a == 0, "the writer's msync did not fail with ENOSPC (status %d)", a);
	int late = status_of(mapper(fd, late_mapper, -1, -1));
	cr_expect(late == 0, "a process that mapped the file after the failure got it reported (status %d)", late);
	cr_assert(write(go[1], "gg", 2) == 2);
	int early = status_of(b), unmapper = status_of(d);
	cr_expect(unmapper == 0, "the other process's munmap did not report ENOSPC (status %d)", unmapper);
	cr_expect(!(early & 1), "the other process's msync did not report ENOSPC (status %d)", early);
	cr_expect(!(early & 2) && early < 4, "it reported it more than once (status %d)", early);
	close(fd);
	umount2(dir, MNT_DETACH);
	rmdir(dir);
}
