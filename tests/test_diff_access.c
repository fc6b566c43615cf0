/*
 * test_diff_access.c - a file whose mode changed after it was opened,
 * kernel against ummap.  The kernel's mmap looks at the descriptor's access
 * mode only: a descriptor opened O_RDWR maps the file shared and writable
 * after a chmod 0444, and stores through the mapping reach the file.
 *
 * File permissions do not stop root, so when run as root each side drops
 * to the nobody user (uid 65534) after starting ummap's engine (a
 * userfaultfd usually needs privilege); otherwise it runs as the current
 * user, if it may open a userfaultfd, and is skipped with the reason if not.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "diff.h"
#include "ummap.h"

#define PG DIFF_PG
#define NOBODY 65534

/* The ummap side with a running engine, then without privilege over the
 * scenario's files. */
static void unprivileged(const struct mm_ops *o, struct diff_log *log, const char *dir)
{
	struct um_config cfg;
	if (o == &ummap_ops)
		um_get_config(&cfg);
	if (geteuid() != 0)
		return;
	if (chown(dir, NOBODY, NOBODY) || setgid(NOBODY) || setuid(NOBODY)) {
		diff_log_harness(log, __LINE__, "cannot drop to uid %d", NOBODY);
		_exit(DIFF_EXIT_HARNESS);
	}
}

/* The ummap side must have served the mapping itself. */
static void served(const struct mm_ops *o, struct diff_log *log, void *p)
{
	struct um_stats st;
	if (o == &ummap_ops && p != MAP_FAILED && um_stats(p, &st) != 0)
		diff_log_harness(log, __LINE__, "ummap does not manage the mapping");
}

static void skip_unless_able(void)
{
	struct um_features f;
	if (geteuid() != 0 && (um_features(&f) || !f.uffd_ok))
		cr_skip_test("this user may not open a userfaultfd, so ummap cannot start");
}

#define ACCESS_TEST(name)                                                            \
	static void access__##name(const struct mm_ops *o, struct diff_log *log, const char *dir); \
	Test(access, name, .timeout = 180)                                           \
	{                                                                            \
		skip_unless_able();                                                  \
		diff_run("access::" #name, access__##name);                          \
	}                                                                            \
	static void access__##name(const struct mm_ops *o, struct diff_log *log, const char *dir)

ACCESS_TEST(chmod_0444_after_open_rdwr_shared)
{
	unprivileged(o, log, dir);
	int fd = diff_mkfile(log, dir, "f", 2 * PG + 100, 1);
	D_CALL(log, fchmod(fd, 0444));
	D_CALL(log, lseek(fd, 7, SEEK_SET));
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	served(o, log, p);
	if (p == MAP_FAILED)
		return;
	D_READ(log, p, 64);
	D_FILL(log, p + 10, 'x', 100);
	D_FILL(log, p + 2 * PG + 50, 'y', 10);
	D_CALL(log, o->msync(p, 3 * PG, MS_SYNC));
	D_FILE(log, fd);
	/* The descriptor's file offset is the caller's: nothing moved it. */
	D_CALL(log, lseek(fd, 0, SEEK_CUR));
	close(fd);
	D_FILL(log, p + PG, 'z', 5); /* reaches the file at munmap */
	D_CALL(log, o->munmap(p, 3 * PG));
}

ACCESS_TEST(chmod_0444_read_mapping_then_write_mapping)
{
	unprivileged(o, log, dir);
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 2);
	int ro = D_OPEN(log, dir, "f", O_RDONLY);
	char *r = D_MMAP(log, o, NULL, 2 * PG, PROT_READ, MAP_SHARED, ro, 0);
	served(o, log, r);
	D_READ(log, r + PG, 16);
	D_CALL(log, fchmod(fd, 0444));
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	served(o, log, p);
	if (p != MAP_FAILED) {
		D_FILL(log, p + PG + 1, 'w', 3);
		D_READ(log, r + PG, 16);
		D_CALL(log, o->msync(p, 2 * PG, MS_SYNC));
		D_CALL(log, o->munmap(p, 2 * PG));
	}
	D_FILE(log, ro);
	D_CALL(log, o->munmap(r, 2 * PG));
	close(ro);
	close(fd);
}

ACCESS_TEST(chmod_0000_after_open_rdwr_private)
{
	unprivileged(o, log, dir);
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 3);
	D_CALL(log, fchmod(fd, 0));
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	served(o, log, p);
	if (p == MAP_FAILED)
		return;
	D_READ(log, p + 100, 16);
	D_FILL(log, p + 100, 'q', 8); /* private: never reaches the file */
	D_READ(log, p + 96, 16);
	D_CALL(log, o->munmap(p, 2 * PG));
	D_FILE(log, fd);
	close(fd);
}

/*
 * A known difference (README): through a descriptor in append mode, which
 * ummap cannot reopen, the mapping is refused with EACCES, where the kernel
 * maps it; ummap's writes through that open file description would
 * append.  The file is left as it was.
 */
Test(access, append_mode_descriptor_is_refused)
{
	skip_unless_able();
	char path[] = "/tmp/ummap-access.XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0 && ftruncate(fd, PG) == 0 && fchmod(fd, 0644) == 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		struct um_config cfg;
		um_get_config(&cfg);
		if (geteuid() == 0 && (fchown(fd, NOBODY, NOBODY) || setgid(NOBODY) || setuid(NOBODY)))
			_exit(2);
		int a = open(path, O_RDWR | O_APPEND);
		if (a < 0 || fchmod(a, 0444))
			_exit(3);
		char *p = um_mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, a, 0);
		_exit(p == MAP_FAILED && errno == EACCES ? 0 : 1);
	}
	int st;
	cr_assert(waitpid(pid, &st, 0) == pid);
	cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %#x (1: not refused with EACCES)", st);
	struct stat s;
	cr_expect(fstat(fd, &s) == 0 && s.st_size == (off_t)PG, "the file changed size");
	close(fd);
	unlink(path);
}
