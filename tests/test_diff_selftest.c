/*
 * test_diff_selftest.c - the differential harness checks itself.
 *
 * The kernel against the kernel must report no divergence, and the kernel
 * against a table of deliberately broken calls (each wrong in one way: a
 * protection not applied, an errno swallowed, a private mapping that is
 * shared, a hint ignored, a hang, a crash) must report one.  If these
 * fail, the differential tests prove nothing.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "diff.h"

#define PG DIFF_PG

/* ---- small scenarios, each sensitive to one kind of difference ---- */

static void sc_protect(const struct mm_ops *o, struct diff_log *log,
		       const char *dir)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 1);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_CALL(log, o->mprotect(p + PG, PG, PROT_READ));
	T_POKE(log, p + PG + 3, 1);
	D_READ(log, p + PG, 8);
}

static void sc_errno(const struct mm_ops *o, struct diff_log *log,
		     const char *dir)
{
	int fd = diff_mkfile(log, dir, "f", PG, 2);
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
	D_CALL(log, o->msync(p, PG, MS_SYNC | MS_ASYNC));
}

static void sc_private(const struct mm_ops *o, struct diff_log *log,
		       const char *dir)
{
	int fd = diff_mkfile(log, dir, "f", PG, 3);
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_FILL(log, p + 10, 'x', 1); /* only the file on disk shows it */
	D_CALL(log, o->munmap(p, PG));
}

static void sc_shared(const struct mm_ops *o, struct diff_log *log,
		      const char *dir)
{
	int fd = diff_mkfile(log, dir, "f", PG, 6);
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED,
			 fd, 0);
	D_FILL(log, p + 10, 'x', 1); /* only the file on disk shows it */
	D_CALL(log, o->munmap(p, PG));
}

static void sc_dontneed(const struct mm_ops *o, struct diff_log *log,
			const char *dir)
{
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_FILL(log, p + 4000, 'y', 1);
	D_CALL(log, o->madvise(p, PG, MADV_DONTNEED));
	D_READ(log, p, PG); /* one byte among 4096 differs */
}

static void sc_sigaddr(const struct mm_ops *o, struct diff_log *log,
		       const char *dir)
{
	int fd = D_OPEN(log, dir, "empty", O_RDWR | O_CREAT);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	T_POKE(log, p + 100, 1);
}

static void sc_fixed(const struct mm_ops *o, struct diff_log *log,
		     const char *dir)
{
	char *r = D_MMAP(log, o, NULL, 4 * PG, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_MMAP(log, o, r + PG, PG, PROT_READ,
	       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
}

static void sc_truncate(const struct mm_ops *o, struct diff_log *log,
			const char *dir)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 4);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ, MAP_SHARED, fd, 0);
	D_CALL(log, o->ftruncate(fd, PG));
	T_PEEK(log, p + PG);
}

static void sc_plain(const struct mm_ops *o, struct diff_log *log,
		     const char *dir)
{
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_FILL(log, p, 1, 10);
	D_READ(log, p, 16);
}

static void sc_fatal_then_disk(const struct mm_ops *o, struct diff_log *log,
			       const char *dir)
{
	int fd = diff_mkfile(log, dir, "f", PG, 5);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, p, 'a', 10);
	D_CALL(log, o->msync(p, PG, MS_SYNC));
	D_POKE(log, p + PG, 1); /* fatal SIGBUS: the child ends here */
}

/* ---- broken calls ---- */

static int bad_mprotect(void *a, size_t l, int prot)
{
	return mprotect(a, l, prot | PROT_WRITE); /* never read-only */
}
static int bad_msync(void *a, size_t l, int f)
{
	int r = msync(a, l, f);
	return r == -1 && errno == EINVAL ? 0 : r; /* swallows EINVAL */
}
static void *bad_mmap_private(void *a, size_t l, int prot, int flags, int fd,
			      off_t off)
{
	if ((flags & MAP_PRIVATE) && !(flags & MAP_ANONYMOUS))
		flags = (flags & ~MAP_PRIVATE) | MAP_SHARED;
	return mmap(a, l, prot, flags, fd, off);
}
static int bad_madvise(void *a, size_t l, int adv)
{
	return adv == MADV_DONTNEED ? 0 : madvise(a, l, adv);
}
static void *bad_mmap_fixed(void *a, size_t l, int prot, int flags, int fd,
			    off_t off)
{
	if (flags & MAP_FIXED) /* one page off */
		a = (char *)a + PG;
	return mmap(a, l, prot, flags, fd, off);
}
static int bad_ftruncate(int fd, off_t len)
{
	(void)fd;
	(void)len;
	return 0;
}
static void *hang_mmap(void *a, size_t l, int prot, int flags, int fd,
		       off_t off)
{
	for (;;)
		pause();
	return mmap(a, l, prot, flags, fd, off);
}
static void *crash_mmap(void *a, size_t l, int prot, int flags, int fd,
			off_t off)
{
	abort();
	return mmap(a, l, prot, flags, fd, off);
}
/* Writes that reach memory but not the file at munmap (a lost writeback). */
static int lossy_munmap(void *a, size_t l)
{
	madvise(a, l, MADV_REMOVE);
	return munmap(a, l);
}

static struct mm_ops with(const struct mm_ops *base)
{
	struct mm_ops o = *base;
	o.name = "broken";
	return o;
}

Test(diff_selftest, kernel_against_kernel_agrees)
{
	diff_scenario all[] = {
		sc_protect, sc_errno, sc_private, sc_shared, sc_dontneed, sc_sigaddr,
		sc_fixed, sc_truncate, sc_plain, sc_fatal_then_disk,
	};
	for (size_t i = 0; i < sizeof all / sizeof *all; i++)
		cr_expect_eq(diff_run_ops("selftest", all[i], &kernel_ops,
					  &kernel_ops, 0),
			     0, "scenario %zu diverged kernel against kernel", i);
}

static void expect_divergence(const char *what, diff_scenario fn,
			      const struct mm_ops *b)
{
	int r = diff_run_ops(what, fn, &kernel_ops, b, getenv("DIFF_VERBOSE") == NULL);
	cr_expect_gt(r, 0, "%s: planted difference not detected (%d)", what, r);
}

Test(diff_selftest, detects_planted_differences, .timeout = 120)
{
	struct mm_ops o;

	o = with(&kernel_ops);
	o.mprotect = bad_mprotect;
	expect_divergence("missing SIGSEGV", sc_protect, &o);

	o = with(&kernel_ops);
	o.msync = bad_msync;
	expect_divergence("swallowed errno", sc_errno, &o);

	o = with(&kernel_ops);
	o.mmap = bad_mmap_private;
	expect_divergence("private write on disk", sc_private, &o);

	o = with(&kernel_ops);
	o.madvise = bad_madvise;
	expect_divergence("one byte in memory", sc_dontneed, &o);

	o = with(&kernel_ops);
	o.mmap = bad_mmap_fixed;
	expect_divergence("MAP_FIXED address", sc_fixed, &o);

	o = with(&kernel_ops);
	o.ftruncate = bad_ftruncate;
	expect_divergence("missing SIGBUS after truncate", sc_truncate, &o);

	o = with(&kernel_ops);
	o.munmap = lossy_munmap;
	expect_divergence("lost writeback", sc_shared, &o);

	o = with(&kernel_ops);
	o.mmap = crash_mmap;
	expect_divergence("crash", sc_plain, &o);
}

Test(diff_selftest, detects_a_hang, .timeout = 120)
{
	setenv("DIFF_TIMEOUT", "2", 1);
	struct mm_ops o = with(&kernel_ops);
	o.mmap = hang_mmap;
	expect_divergence("hang", sc_plain, &o);
}

static void *sigaddr_mmap(void *a, size_t l, int prot, int flags, int fd,
			  off_t off)
{
	/* The first page of a file mapping made inaccessible: the access
	 * beyond EOF raises SIGSEGV instead of SIGBUS. */
	if (fd >= 0 && off == 0 && !(flags & MAP_ANONYMOUS)) {
		char *p = mmap(a, l, prot, flags, fd, 0);
		if (p != MAP_FAILED)
			mprotect(p, PG, PROT_NONE); /* SEGV instead of BUS */
		return p;
	}
	return mmap(a, l, prot, flags, fd, off);
}

Test(diff_selftest, detects_wrong_signal)
{
	struct mm_ops o = with(&kernel_ops);
	o.mmap = sigaddr_mmap;
	expect_divergence("SIGSEGV instead of SIGBUS", sc_sigaddr, &o);
}

static void sc_broken(const struct mm_ops *o, struct diff_log *log,
		      const char *dir)
{
	/* A scenario bug: crashes on the kernel side too, outside any
	 * mapping it made.  Both sides would agree; the harness must not. */
	char *volatile p = NULL;
	D_NOTE(log, "about to crash");
	*(volatile char *)(p + 12) = 1;
}

Test(diff_selftest, rejects_a_scenario_that_crashes_on_the_kernel)
{
	cr_expect_eq(diff_run_ops("broken scenario", sc_broken, &kernel_ops,
				  &kernel_ops, getenv("DIFF_VERBOSE") == NULL),
		     -1, "a scenario crashing on the kernel side was accepted");
}

/* Three processes store into their own pages, unmap, then process 0 reads
 * the file. */
static void sc_procs(const struct mm_ops *o, struct diff_log *log,
		     const char *dir)
{
	int fd = -1;
	if (diff_me() == 0)
		fd = diff_mkfile(log, dir, "f", 3 * PG, 11);
	D_SYNC(log);
	if (diff_me() != 0)
		fd = D_OPEN(log, dir, "f", O_RDWR);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, p + (size_t)diff_me() * PG, 'a' + diff_me(), 10);
	D_CALL(log, o->munmap(p, 3 * PG));
	D_SYNC(log);
	if (diff_me() == 0)
		D_PREAD(log, fd, 0, 3 * PG);
}

static void sc_procs_one_missing(const struct mm_ops *o, struct diff_log *log,
				 const char *dir)
{
	if (diff_me() == 1)
		return; /* never reaches the D_SYNC below */
	D_SYNC(log);
}

/* A shared file mapping made private: stores never reach the file. */
static void *lossy_mmap_shared(void *a, size_t l, int prot, int flags, int fd,
			       off_t off)
{
	if ((flags & MAP_SHARED) && !(flags & MAP_ANONYMOUS))
		flags = (flags & ~MAP_SHARED) | MAP_PRIVATE;
	return mmap(a, l, prot, flags, fd, off);
}

Test(diff_selftest, several_processes, .timeout = 120)
{
	cr_expect_eq(diff_run_ops_procs("procs", sc_procs, 3, &kernel_ops,
					&kernel_ops, 0),
		     0, "three processes diverged kernel against kernel");
	struct mm_ops o = with(&kernel_ops);
	o.mmap = lossy_mmap_shared;
	int r = diff_run_ops_procs("procs: lost stores", sc_procs, 3,
				   &kernel_ops, &o, getenv("DIFF_VERBOSE") == NULL);
	cr_expect_gt(r, 0, "a lost store of another process not detected (%d)", r);
	setenv("DIFF_TIMEOUT", "2", 1);
	r = diff_run_ops_procs("procs: one missing", sc_procs_one_missing, 3,
			       &kernel_ops, &kernel_ops, 1);
	cr_expect_eq(r, -1, "a process missing a D_SYNC is a harness failure (%d)", r);
}
