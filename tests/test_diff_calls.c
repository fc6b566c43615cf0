/*
 * test_diff_calls.c - um_munmap, um_mprotect, um_msync, um_madvise and
 * um_mremap against the kernel's calls: partial ranges inside and across
 * regions, the data they keep or drop, their argument errors.
 *
 * Note on msync: the kernel's read(2)/pread(2) see writes made through a
 * shared mapping at once (one page cache); ummap's cache is its own, so
 * the scenarios pread a range of the file only after msync(MS_SYNC) or
 * munmap of that range, which is when both must agree.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "diff.h"
#include "ummap.h"

#define PG DIFF_PG

/* ------------------------------------------------------------- munmap */

DIFF_TEST(munmap, partial_middle)
{
	int fd = diff_mkfile(log, dir, "f", 6 * PG, 1);
	char *p = D_MMAP(log, o, NULL, 6 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, p + 2 * PG + 5, 'x', 10); /* dirty, then unmapped */
	D_CALL(log, o->munmap(p + 2 * PG, 2 * PG));
	D_PREAD(log, fd, 2 * PG, 2 * PG); /* written back by munmap */
	T_PEEK(log, p + 2 * PG);
	T_POKE(log, p + 4 * PG - 1, 1);
	D_READ(log, p, 2 * PG);
	D_READ(log, p + 4 * PG, 2 * PG);
	D_FILL(log, p + 5 * PG, 'y', 10);
	D_CALL(log, o->munmap(p + PG, 4 * PG)); /* over the hole */
	T_PEEK(log, p + 4 * PG);
	D_READ(log, p, PG);
	D_CALL(log, o->munmap(p, 6 * PG));
	T_PEEK(log, p);
	D_PREAD(log, fd, 0, 6 * PG);
	close(fd);
}

DIFF_TEST(munmap, across_regions)
{
	int fa = diff_mkfile(log, dir, "a", 3 * PG, 2);
	int fb = diff_mkfile(log, dir, "b", 3 * PG, 3);
	char *r = D_MMAP(log, o, NULL, 10 * PG, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	D_MMAP(log, o, r, 3 * PG, PROT_READ | PROT_WRITE,
	       MAP_SHARED | MAP_FIXED, fa, 0);
	D_MMAP(log, o, r + 3 * PG, 3 * PG, PROT_READ | PROT_WRITE,
	       MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	D_MMAP(log, o, r + 6 * PG, 3 * PG, PROT_READ | PROT_WRITE,
	       MAP_PRIVATE | MAP_FIXED, fb, 0);
	for (int i = 0; i < 9; i++)
		D_FILL(log, r + (size_t)i * PG + 100, 'a' + i, 10);
	D_CALL(log, o->munmap(r + 2 * PG, 5 * PG));
	D_READ(log, r, 2 * PG);
	T_PEEK(log, r + 2 * PG);
	T_PEEK(log, r + 4 * PG);
	T_PEEK(log, r + 6 * PG + 1);
	D_READ(log, r + 7 * PG, 2 * PG);
	T_PEEK(log, r + 9 * PG);
	D_CALL(log, o->msync(r, 2 * PG, MS_SYNC));
	D_PREAD(log, fa, 0, 3 * PG);
	D_PREAD(log, fb, 0, 3 * PG);
	close(fa);
	close(fb);
}

DIFF_TEST(munmap, arguments)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 4);
	/* Inside a reservation, so that p + 4 pages is ours. */
	char *r = D_MMAP(log, o, NULL, 6 * PG, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *p = D_MMAP(log, o, r, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED, fd, 0);
	D_CALL(log, o->munmap(p + 1, PG));
	D_CALL(log, o->munmap(p + PG + 100, PG));
	D_CALL(log, o->munmap(p, 0));
	D_CALL(log, o->munmap(p, SIZE_MAX));
	D_CALL(log, o->munmap(p, (size_t)1 << 62));
	D_CALL(log, o->munmap((void *)(~0ul << 12), 2 * PG));
	D_READ(log, p, 4 * PG); /* nothing was unmapped */
	D_CALL(log, o->munmap(p + 3 * PG, 1)); /* rounded up to a page */
	T_PEEK(log, p + 3 * PG + 100);
	D_CALL(log, o->munmap(p + 3 * PG, PG)); /* already unmapped: fine */
	D_CALL(log, o->munmap(p + 2 * PG, 3 * PG)); /* partly mapped: fine */
	T_PEEK(log, p + 2 * PG);
	T_PEEK(log, p + 4 * PG);
	T_PEEK(log, p + 5 * PG);
	D_READ(log, p, 2 * PG);
	D_CALL(log, o->munmap(r, 6 * PG));
	close(fd);
}

DIFF_TEST(munmap, writes_back_dirty_pages)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 5);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, p + PG, 'm', 2 * PG);
	D_FILL(log, p + 3 * PG + 4000, 'n', 96);
	D_CALL(log, o->munmap(p + PG, PG));
	D_PREAD(log, fd, PG, PG);
	D_CALL(log, o->munmap(p, 4 * PG));
	D_PREAD(log, fd, 0, 4 * PG);
	/* A private mapping's writes are dropped at munmap. */
	char *q = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_FILL(log, q, 'p', 4 * PG);
	D_CALL(log, o->munmap(q, 4 * PG));
	D_PREAD(log, fd, 0, 4 * PG);
	/* A second shared mapping keeps the page cached after the first
	 * is unmapped. */
	p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED,
		   fd, 0);
	q = D_MMAP(log, o, NULL, 2 * PG, PROT_READ, MAP_SHARED, fd, 0);
	D_FILL(log, p + 1, 's', 10);
	D_CALL(log, o->munmap(p, 2 * PG));
	D_READ(log, q, 32);
	D_PREAD(log, fd, 0, 32);
	close(fd);
}

/* ----------------------------------------------------------- mprotect */

DIFF_TEST(mprotect, partial_ranges)
{
	int fd = diff_mkfile(log, dir, "f", 5 * PG, 10);
	char *p = D_MMAP(log, o, NULL, 5 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_CALL(log, o->mprotect(p + PG, 2 * PG, PROT_READ));
	T_POKE(log, p + PG + 9, 1);
	T_POKE(log, p + 3 * PG - 1, 1);
	T_POKE(log, p + 9, 'a');
	T_POKE(log, p + 3 * PG, 'b');
	D_CALL(log, o->mprotect(p + 2 * PG, PG, PROT_NONE));
	T_PEEK(log, p + 2 * PG + 8);
	D_READ(log, p + PG, PG);
	D_CALL(log, o->mprotect(p + 2 * PG, 3 * PG, PROT_READ | PROT_WRITE));
	T_POKE(log, p + 2 * PG + 8, 'c');
	T_POKE(log, p + PG + 8, 'd');
	D_CALL(log, o->mprotect(p, 5 * PG, PROT_READ | PROT_WRITE));
	D_FILL(log, p + PG + 8, 'e', PG);
	D_READ(log, p, 5 * PG);
	D_CALL(log, o->msync(p, 5 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 5 * PG);
	D_CALL(log, o->munmap(p, 5 * PG));
	close(fd);
}

DIFF_TEST(mprotect, across_regions_and_holes)
{
	int fd = diff_mkfile(log, dir, "f", 3 * PG, 11);
	char *r = D_MMAP(log, o, NULL, 8 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_MMAP(log, o, r + 2 * PG, 3 * PG, PROT_READ | PROT_WRITE,
	       MAP_SHARED | MAP_FIXED, fd, 0);
	D_FILL(log, r, 'r', 8 * PG);
	D_CALL(log, o->mprotect(r + PG, 3 * PG, PROT_READ));
	T_POKE(log, r + PG, 1);
	T_POKE(log, r + 2 * PG, 1);
	T_POKE(log, r + 4 * PG, 'w');
	D_CALL(log, o->munmap(r + 6 * PG, PG));
	/* A hole: ENOMEM, after changing what comes before it. */
	D_CALL(log, o->mprotect(r + 4 * PG, 4 * PG, PROT_READ));
	T_POKE(log, r + 4 * PG, 1);
	T_POKE(log, r + 5 * PG, 1);
	T_POKE(log, r + 7 * PG, 'z');
	D_CALL(log, o->mprotect(r + 6 * PG, PG, PROT_READ)); /* all hole */
	D_CALL(log, o->mprotect(r, 6 * PG, PROT_READ | PROT_WRITE));
	D_FILL(log, r, 's', 6 * PG);
	D_CALL(log, o->msync(r + 2 * PG, 3 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 3 * PG);
	D_CALL(log, o->munmap(r, 8 * PG));
	close(fd);
}

DIFF_TEST(mprotect, arguments)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 12);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_CALL(log, o->mprotect(p + 1, PG, PROT_READ));
	D_CALL(log, o->mprotect(p, PG, 0x100));
	D_CALL(log, o->mprotect(p, PG, PROT_READ | 0x10));
	D_CALL(log, o->mprotect(p, PG, PROT_READ | PROT_GROWSDOWN));
	D_CALL(log, o->mprotect(p, PG, PROT_READ | PROT_GROWSUP));
	D_CALL(log, o->mprotect(p, 0, PROT_NONE));
	D_CALL(log, o->mprotect(p, SIZE_MAX & ~(PG - 1), PROT_READ));
	D_CALL(log, o->mprotect((void *)(~0ul << 12), PG, PROT_READ));
	D_CALL(log, o->mprotect(p, PG + 1, PROT_READ)); /* rounded up */
	T_POKE(log, p + PG + 1, 1);
	D_CALL(log, o->munmap(p, 2 * PG));
	D_CALL(log, o->mprotect(p, PG, PROT_READ)); /* unmapped: ENOMEM */
	close(fd);
}

DIFF_TEST(mprotect, private_copies_survive)
{
	int fd = diff_mkfile(log, dir, "f", 3 * PG, 13);
	char *q = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_FILL(log, q + PG, 'c', 30);
	D_CALL(log, o->mprotect(q, 3 * PG, PROT_READ));
	D_READ(log, q, 3 * PG);
	D_CALL(log, o->mprotect(q, 3 * PG, PROT_NONE));
	T_PEEK(log, q + PG);
	D_CALL(log, o->mprotect(q, 3 * PG, PROT_READ | PROT_WRITE));
	D_READ(log, q + PG, 64);
	D_FILL(log, q + 2 * PG, 'd', 30);
	D_READ(log, q, 3 * PG);
	D_CALL(log, o->mprotect(q, 3 * PG, PROT_READ | PROT_EXEC));
	D_READ(log, q, 3 * PG);
	D_CALL(log, o->munmap(q, 3 * PG));
	D_PREAD(log, fd, 0, 3 * PG);
	close(fd);
}

DIFF_TEST(mprotect, shared_write_then_read_only_keeps_data)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 14);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, p + 3, 'w', 5);
	D_CALL(log, o->mprotect(p, 2 * PG, PROT_READ));
	D_CALL(log, o->msync(p, 2 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 16);
	D_CALL(log, o->mprotect(p, 2 * PG, PROT_WRITE));
	D_FILL(log, p + PG, 'v', 5);
	D_CALL(log, o->munmap(p, 2 * PG));
	D_PREAD(log, fd, 0, 2 * PG);
	close(fd);
}

/* The memfd behind a ummap mapping may be written and executed; what the
 * kernel refuses on the file's own mapping (VM_MAYWRITE, VM_MAYEXEC) must
 * be refused too. */
DIFF_TEST(mprotect, write_refused_on_a_write_sealed_memfd)
{
	int seals[] = { F_SEAL_FUTURE_WRITE, F_SEAL_WRITE };
	for (int i = 0; i < 2; i++) {
		int fd = memfd_create("sealed", MFD_ALLOW_SEALING | MFD_CLOEXEC);
		D_VAL(log, fd >= 0 && ftruncate(fd, 2 * PG) == 0);
		D_VAL(log, fcntl(fd, F_ADD_SEALS, seals[i]));
		D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ, MAP_SHARED, fd, 0);
		D_CALL(log, o->mprotect(p, 2 * PG, PROT_READ | PROT_WRITE));
		D_CALL(log, o->mprotect(p + PG, PG, PROT_WRITE));
		char *q = D_MMAP(log, o, NULL, 2 * PG, PROT_READ, MAP_PRIVATE, fd, 0);
		D_CALL(log, o->mprotect(q, 2 * PG, PROT_READ | PROT_WRITE));
		D_FILL(log, q, 'q', 10);
		D_CALL(log, o->munmap(p, 2 * PG));
		D_CALL(log, o->munmap(q, 2 * PG));
		close(fd);
	}
}

static char noexec_dir[64];

static void exec_on_noexec(const struct mm_ops *o, struct diff_log *log, const char *dir)
{
	char path[128];
	snprintf(path, sizeof path, "%s/f%d", noexec_dir, (int)getpid());
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	D_VAL(log, fd >= 0 && ftruncate(fd, 2 * PG) == 0);
	D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_EXEC, MAP_SHARED, fd, 0);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_CALL(log, o->mprotect(p, 2 * PG, PROT_READ | PROT_EXEC));
	D_CALL(log, o->mprotect(p + PG, PG, PROT_READ));
	char *q = D_MMAP(log, o, NULL, 2 * PG, PROT_READ, MAP_PRIVATE, fd, 0);
	D_CALL(log, o->mprotect(q, 2 * PG, PROT_EXEC));
	D_CALL(log, o->munmap(p, 2 * PG));
	D_CALL(log, o->munmap(q, 2 * PG));
	close(fd);
	unlink(path);
}

Test(mprotect, exec_refused_on_a_noexec_mount, .timeout = 180)
{
	/* A tmpfs mounted noexec in a mount namespace of this test's own. */
	strcpy(noexec_dir, "/tmp/ummap-noexec-XXXXXX");
	if (!mkdtemp(noexec_dir))
		cr_assert_fail("mkdtemp: %s", strerror(errno));
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
	    mount("tmpfs", noexec_dir, "tmpfs", MS_NOEXEC, "size=1m") < 0) {
		rmdir(noexec_dir);
		cr_skip_test("no noexec mount can be made here (%s; needs root)", strerror(errno));
	}
	diff_run("mprotect::exec_refused_on_a_noexec_mount", exec_on_noexec);
	umount(noexec_dir);
	rmdir(noexec_dir);
}

DIFF_TEST(mprotect, dirty_pages_survive_prot_none)
{
	/* Written, then made inaccessible: the data must still reach the
	 * file at msync and at munmap. */
	int fd = diff_mkfile(log, dir, "f", 3 * PG, 15);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, p + 7, 'n', 9);
	D_FILL(log, p + 2 * PG + 7, 'm', 9);
	D_CALL(log, o->mprotect(p, 3 * PG, PROT_NONE));
	D_CALL(log, o->msync(p, PG, MS_SYNC));
	D_PREAD(log, fd, 0, PG);
	D_CALL(log, o->msync(p, 3 * PG, MS_SYNC | MS_INVALIDATE));
	T_PEEK(log, p + 7);
	D_CALL(log, o->mprotect(p, 3 * PG, PROT_READ));
	D_READ(log, p, 3 * PG);
	D_CALL(log, o->mprotect(p + 2 * PG, PG, PROT_NONE));
	D_CALL(log, o->munmap(p, 3 * PG));
	D_PREAD(log, fd, 0, 3 * PG);
	close(fd);
}

/* -------------------------------------------------------------- msync */

DIFF_TEST(msync, sync_partial_ranges)
{
	int fd = diff_mkfile(log, dir, "f", 6 * PG, 20);
	char *p = D_MMAP(log, o, NULL, 6 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	for (int i = 0; i < 6; i++)
		D_FILL(log, p + (size_t)i * PG + 10 * (size_t)i, '0' + i, 100);
	D_CALL(log, o->msync(p + PG, PG, MS_SYNC));
	D_PREAD(log, fd, PG, PG);
	D_CALL(log, o->msync(p + 3 * PG, 2 * PG, MS_SYNC));
	D_PREAD(log, fd, 3 * PG, 2 * PG);
	D_CALL(log, o->msync(p + 2 * PG, 100, MS_SYNC)); /* length rounded */
	D_PREAD(log, fd, 2 * PG, PG);
	D_CALL(log, o->msync(p, 6 * PG, MS_ASYNC));
	D_CALL(log, o->msync(p, 6 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 6 * PG);
	/* Written again after a sync. */
	D_FILL(log, p + 2, 'A', 2);
	D_CALL(log, o->msync(p, PG, MS_SYNC));
	D_PREAD(log, fd, 0, 8);
	D_CALL(log, o->munmap(p, 6 * PG));
	close(fd);
}

DIFF_TEST(msync, across_two_files_and_anon)
{
	int fa = diff_mkfile(log, dir, "a", 2 * PG, 21);
	int fb = diff_mkfile(log, dir, "b", 2 * PG, 22);
	char *r = D_MMAP(log, o, NULL, 6 * PG, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_MMAP(log, o, r, 2 * PG, PROT_READ | PROT_WRITE,
	       MAP_SHARED | MAP_FIXED, fa, 0);
	D_MMAP(log, o, r + 2 * PG, 2 * PG, PROT_READ | PROT_WRITE,
	       MAP_SHARED | MAP_FIXED, fb, 0);
	D_MMAP(log, o, r + 4 * PG, 2 * PG, PROT_READ | PROT_WRITE,
	       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	D_FILL(log, r + PG - 50, 'x', 100);	/* across the two files */
	D_FILL(log, r + 3 * PG + 10, 'y', 10);
	D_FILL(log, r + 4 * PG, 'z', 10);
	D_CALL(log, o->msync(r + PG, 4 * PG, MS_SYNC));
	D_PREAD(log, fa, PG, PG);
	D_PREAD(log, fb, 0, 2 * PG);
	D_CALL(log, o->msync(r, 6 * PG, MS_SYNC | MS_INVALIDATE));
	D_PREAD(log, fa, 0, 2 * PG);
	D_CALL(log, o->munmap(r, 6 * PG));
	close(fa);
	close(fb);
}

DIFF_TEST(msync, arguments)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 23);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_CALL(log, o->msync(p, PG, MS_SYNC | MS_ASYNC));
	D_CALL(log, o->msync(p, PG, 0x10));
	D_CALL(log, o->msync(p, PG, MS_SYNC | 0x100));
	D_CALL(log, o->msync(p + 1, PG, MS_SYNC));
	D_CALL(log, o->msync(p + 100, PG, MS_ASYNC));
	D_CALL(log, o->msync(p, 0, MS_SYNC));
	D_CALL(log, o->msync(p, PG, 0));
	D_CALL(log, o->msync(p, SIZE_MAX & ~(PG - 1), MS_SYNC));
	D_CALL(log, o->msync((void *)(~0ul << 12), PG, MS_SYNC));
	D_CALL(log, o->munmap(p + PG, PG));
	D_CALL(log, o->msync(p + PG, PG, MS_SYNC));	   /* unmapped: ENOMEM */
	D_FILL(log, p + 2 * PG, 'h', 10);
	D_CALL(log, o->msync(p, 4 * PG, MS_SYNC));	   /* over a hole */
	D_PREAD(log, fd, 2 * PG, PG);			   /* still synced */
	D_CALL(log, o->msync(p, 4 * PG, MS_ASYNC));
	D_CALL(log, o->msync(p, 4 * PG, MS_INVALIDATE));
	char *a = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_CALL(log, o->msync(a, 2 * PG, MS_SYNC));
	D_CALL(log, o->msync(a, 2 * PG, MS_INVALIDATE));
	D_CALL(log, o->munmap(p, 4 * PG));
	close(fd);
}

DIFF_TEST(msync, invalidate_shows_pwrite)
{
	/* The kernel shows a pwrite(2) in the mapping at once; after
	 * msync(MS_INVALIDATE) ummap must show it too.  Only what is read
	 * after the msync is logged. */
	int fd = diff_mkfile(log, dir, "f", 3 * PG, 24);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	volatile char sink = 0;
	for (size_t i = 0; i < 2 * PG; i += 64) /* page 0, 1 cached; 2 not */
		sink ^= p[i];
	(void)sink;
	char buf[3 * PG];
	memset(buf, 'N', sizeof buf);
	D_PWRITE(log, fd, 100, buf, 3 * PG - 200);
	D_CALL(log, o->msync(p, 3 * PG, MS_INVALIDATE));
	D_READ(log, p, 3 * PG);
	/* And with MS_SYNC | MS_INVALIDATE, on a partial range. */
	memset(buf, 'M', sizeof buf);
	D_PWRITE(log, fd, PG + 10, buf, 50);
	D_CALL(log, o->msync(p + PG, PG, MS_SYNC | MS_INVALIDATE));
	D_READ(log, p + PG, PG);
	D_CALL(log, o->munmap(p, 3 * PG));
	close(fd);
}

DIFF_TEST(msync, invalidate_private_unwritten_pages)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 25);
	char *q = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_READ(log, q, 2 * PG);
	D_FILL(log, q + PG, 'q', 10); /* page 1 private from here on */
	char buf[2 * PG];
	memset(buf, 'F', sizeof buf);
	D_PWRITE(log, fd, 0, buf, sizeof buf);
	D_CALL(log, o->msync(q, 2 * PG, MS_INVALIDATE));
	D_READ(log, q, 2 * PG); /* page 0 from the file, page 1 its own */
	D_CALL(log, o->munmap(q, 2 * PG));
	close(fd);
}

DIFF_TEST(msync, invalidate_keeps_dirty_data)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 26);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, p + 10, 'd', 100);
	D_CALL(log, o->msync(p, 2 * PG, MS_INVALIDATE));
	D_READ(log, p, 2 * PG);
	D_CALL(log, o->msync(p, 2 * PG, MS_ASYNC | MS_INVALIDATE));
	D_READ(log, p, 200);
	D_CALL(log, o->munmap(p, 2 * PG));
	D_PREAD(log, fd, 0, 2 * PG);
	close(fd);
}

DIFF_TEST(msync, invalidate_mlocked_ebusy)
{
	int fd = diff_mkfile(log, dir, "f", 3 * PG, 27);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_CALL(log, mlock(p + PG, PG));
	D_CALL(log, o->msync(p, PG, MS_INVALIDATE));
	D_CALL(log, o->msync(p, 3 * PG, MS_INVALIDATE));
	D_CALL(log, o->msync(p + PG, PG, MS_SYNC));
	D_CALL(log, munlock(p + PG, PG));
	D_CALL(log, o->msync(p, 3 * PG, MS_INVALIDATE));
	D_CALL(log, o->munmap(p, 3 * PG));
	close(fd);
}

/* ------------------------------------------------------------ madvise */

static const struct {
	int advice;
	const char *name;
} advices[] = {
	{ MADV_NORMAL, "MADV_NORMAL" },
	{ MADV_RANDOM, "MADV_RANDOM" },
	{ MADV_SEQUENTIAL, "MADV_SEQUENTIAL" },
	{ MADV_WILLNEED, "MADV_WILLNEED" },
	{ MADV_DONTNEED, "MADV_DONTNEED" },
	{ MADV_FREE, "MADV_FREE" },
	{ MADV_REMOVE, "MADV_REMOVE" },
	{ MADV_COLD, "MADV_COLD" },
	{ MADV_PAGEOUT, "MADV_PAGEOUT" },
	{ MADV_POPULATE_READ, "MADV_POPULATE_READ" },
	{ MADV_POPULATE_WRITE, "MADV_POPULATE_WRITE" },
	{ MADV_DONTFORK, "MADV_DONTFORK" },
	{ MADV_DOFORK, "MADV_DOFORK" },
	{ MADV_HUGEPAGE, "MADV_HUGEPAGE" },
	{ MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE" },
	{ MADV_DONTDUMP, "MADV_DONTDUMP" },
	{ MADV_DODUMP, "MADV_DODUMP" },
	{ MADV_WIPEONFORK, "MADV_WIPEONFORK" },
	{ MADV_KEEPONFORK, "MADV_KEEPONFORK" },
	{ 99, "unknown advice 99" },
	{ 12345, "unknown advice 12345" },
	{ -1, "advice -1" },
};

/*
 * For each advice, on a fresh 4-page mapping of the kind: page 0 read,
 * page 1 written, pages 2-3 untouched; advise pages 1-3 (then the whole
 * mapping), read everything, write page 3, read it back.
 */
static void advice_matrix(const struct mm_ops *o, struct diff_log *log,
			  const char *dir, int kind)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 30);
	for (size_t i = 0; i < sizeof advices / sizeof *advices; i++) {
		D_NOTE(log, "%s: %s", diff_kind_names[kind], advices[i].name);
		char *p = D_MAP_KIND(log, o, kind, fd, 4 * PG,
				     PROT_READ | PROT_WRITE, 0);
		D_READ(log, p, PG);
		D_FILL(log, p + PG + 8 * (int)i, 'A' + (int)i, 8);
		D_CALL(log, o->madvise(p + PG, 3 * PG, advices[i].advice));
		D_READ(log, p, 4 * PG);
		D_CALL(log, o->madvise(p, 4 * PG, advices[i].advice));
		D_FILL(log, p + 3 * PG + 8 * (int)i, 'a' + (int)i, 8);
		D_READ(log, p, 4 * PG);
		if (kind == DIFF_FILE_SHARED) {
			D_CALL(log, o->msync(p, 4 * PG, MS_SYNC));
			D_PREAD(log, fd, 0, 4 * PG);
		}
		D_CALL(log, o->munmap(p, 4 * PG));
	}
	close(fd);
}

DIFF_TEST(madvise, matrix_file_shared) { advice_matrix(o, log, dir, DIFF_FILE_SHARED); }
DIFF_TEST(madvise, matrix_file_private) { advice_matrix(o, log, dir, DIFF_FILE_PRIVATE); }
DIFF_TEST(madvise, matrix_anon_private) { advice_matrix(o, log, dir, DIFF_ANON_PRIVATE); }
DIFF_TEST(madvise, matrix_anon_shared) { advice_matrix(o, log, dir, DIFF_ANON_SHARED); }

DIFF_TEST(madvise, dontneed_refill)
{
	/* Private file pages refill from the file, anonymous private pages
	 * come back zero, shared pages keep their data. */
	int fd = diff_mkfile(log, dir, "f", 3 * PG, 31);
	for (int kind = 0; kind < DIFF_NKINDS; kind++) {
		char *p = D_MAP_KIND(log, o, kind, fd, 3 * PG,
				     PROT_READ | PROT_WRITE, 0);
		D_FILL(log, p + 100, 'x', 3 * PG - 200);
		D_CALL(log, o->madvise(p + PG, PG, MADV_DONTNEED));
		D_READ(log, p, 3 * PG);
		D_CALL(log, o->madvise(p, 3 * PG, MADV_DONTNEED));
		D_READ(log, p, 3 * PG);
		D_FILL(log, p + PG, 'y', 10);
		D_READ(log, p + PG, 20);
		/* Unmapped afterwards: shared file pages reach the file. */
		D_CALL(log, o->munmap(p, 3 * PG));
		D_PREAD(log, fd, 0, 3 * PG);
	}
	close(fd);
}

DIFF_TEST(madvise, remove_punches_hole)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 32);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, p + 2 * PG, 'r', PG); /* dirty, then removed */
	D_CALL(log, o->madvise(p + PG, 2 * PG, MADV_REMOVE));
	D_READ(log, p, 4 * PG);
	D_PREAD(log, fd, 0, 4 * PG);
	D_FILL(log, p + PG + 1, 's', 10);
	D_CALL(log, o->msync(p, 4 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 4 * PG);
	char *q = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_CALL(log, o->madvise(q, PG, MADV_REMOVE));
	char *a = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	D_FILL(log, a, 'a', 2 * PG);
	D_CALL(log, o->madvise(a + PG, PG, MADV_REMOVE));
	D_READ(log, a, 2 * PG);
	D_CALL(log, o->munmap(p, 4 * PG));
	D_CALL(log, o->munmap(q, 4 * PG));
	D_CALL(log, o->munmap(a, 2 * PG));
	close(fd);
}

DIFF_TEST(madvise, arguments_and_ranges)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 33);
	char *r = D_MMAP(log, o, NULL, 6 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_MMAP(log, o, r + 2 * PG, 2 * PG, PROT_READ | PROT_WRITE,
	       MAP_PRIVATE | MAP_FIXED, fd, 0);
	D_FILL(log, r, 'm', 6 * PG);
	D_CALL(log, o->madvise(r + 1, PG, MADV_NORMAL));
	D_CALL(log, o->madvise(r + 1, PG, MADV_DONTNEED));
	D_CALL(log, o->madvise(r, 0, MADV_DONTNEED));
	D_CALL(log, o->madvise(r, PG, 99));
	D_CALL(log, o->madvise(r, 0, 99));
	D_CALL(log, o->madvise(r, SIZE_MAX & ~(PG - 1), MADV_NORMAL));
	D_READ(log, r, 6 * PG);
	/* Across both regions. */
	D_CALL(log, o->madvise(r + PG, 3 * PG, MADV_DONTNEED));
	D_READ(log, r, 6 * PG);
	/* With a hole: ENOMEM, the mapped parts still advised. */
	D_FILL(log, r, 'n', 6 * PG);
	D_CALL(log, o->munmap(r + 4 * PG, PG));
	D_CALL(log, o->madvise(r + 3 * PG, 3 * PG, MADV_DONTNEED));
	D_READ(log, r + 3 * PG, PG);
	D_READ(log, r + 5 * PG, PG);
	D_CALL(log, o->madvise(r + 4 * PG, PG, MADV_NORMAL));
	D_CALL(log, o->madvise(r + 4 * PG, PG, MADV_WILLNEED));
	/* MADV_FREE is for anonymous private memory only. */
	D_CALL(log, o->madvise(r + 2 * PG, PG, MADV_FREE));
	D_CALL(log, o->madvise(r, PG, MADV_FREE));
	D_FILL(log, r, 'f', 10);
	D_READ(log, r, 16);
	D_CALL(log, o->munmap(r, 6 * PG));
	close(fd);
}

DIFF_TEST(madvise, populate_errors)
{
	int fd = diff_mkfile(log, dir, "f", PG + 10, 34);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_CALL(log, o->madvise(p, 2 * PG, MADV_POPULATE_READ));
	D_CALL(log, o->madvise(p, 3 * PG, MADV_POPULATE_READ)); /* past EOF */
	D_CALL(log, o->madvise(p, 3 * PG, MADV_POPULATE_WRITE));
	D_CALL(log, o->madvise(p, 3 * PG, MADV_WILLNEED));
	D_READ(log, p, 2 * PG);
	char *n = D_MMAP(log, o, NULL, PG, PROT_NONE, MAP_SHARED, fd, 0);
	D_CALL(log, o->madvise(n, PG, MADV_POPULATE_READ));
	D_CALL(log, o->madvise(n, PG, MADV_POPULATE_WRITE));
	char *ro = D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
	D_CALL(log, o->madvise(ro, PG, MADV_POPULATE_READ));
	D_CALL(log, o->madvise(ro, PG, MADV_POPULATE_WRITE));
	char *pr = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE, fd, 0);
	D_CALL(log, o->madvise(pr, 2 * PG, MADV_POPULATE_WRITE));
	D_READ(log, pr, 2 * PG);
	D_CALL(log, o->munmap(p, 3 * PG));
	D_CALL(log, o->munmap(n, PG));
	D_CALL(log, o->munmap(ro, PG));
	D_CALL(log, o->munmap(pr, 2 * PG));
	D_CALL(log, o->madvise(p, PG, MADV_POPULATE_READ)); /* unmapped */
	close(fd);
}

/* ------------------------------------------------------------- mremap */

DIFF_TEST(mremap, grow_in_place_and_shrink)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 40);
	char *r = D_MMAP(log, o, NULL, 8 * PG, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *p = D_MMAP(log, o, r, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED, fd, 0);
	D_FILL(log, p + 10, 'g', 10);
	D_CALL(log, o->munmap(r + 2 * PG, 6 * PG));
	char *q = D_MREMAP(log, o, p, 2 * PG, 4 * PG, 0);
	D_READ(log, q, 4 * PG);
	D_FILL(log, q + 3 * PG, 'h', 10);
	q = D_MREMAP(log, o, q, 4 * PG, 6 * PG, 0); /* past EOF */
	T_PEEK(log, q + 4 * PG);
	T_PEEK(log, q + 5 * PG + 9);
	q = D_MREMAP(log, o, q, 6 * PG, PG, 0); /* shrink */
	D_READ(log, q, PG);
	T_PEEK(log, q + PG);
	D_CALL(log, o->munmap(q, PG));
	D_PREAD(log, fd, 0, 4 * PG);
	close(fd);
}

DIFF_TEST(mremap, grow_blocked_and_maymove)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 41);
	char *r = D_MMAP(log, o, NULL, 8 * PG, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *p = D_MMAP(log, o, r, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED, fd, 0);
	D_FILL(log, p + PG + 1, 'b', 10); /* dirty data moves along */
	D_MREMAP(log, o, p, 2 * PG, 4 * PG, 0); /* ENOMEM: r follows */
	char *q = D_MREMAP(log, o, p, 2 * PG, 4 * PG, MREMAP_MAYMOVE);
	T_PEEK(log, p); /* the old range is gone */
	T_PEEK(log, r + 2 * PG); /* the reservation is still there */
	D_READ(log, q, 4 * PG);
	D_FILL(log, q + 3 * PG, 'c', 10);
	D_CALL(log, o->msync(q, 4 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 4 * PG);
	/* Moved again, shrinking. */
	char *s = D_MREMAP(log, o, q, 4 * PG, 2 * PG, MREMAP_MAYMOVE);
	D_READ(log, s, 2 * PG);
	T_PEEK(log, s + 2 * PG);
	D_CALL(log, o->munmap(s, 2 * PG));
	close(fd);
}

DIFF_TEST(mremap, fixed_keeps_contents)
{
	int fd = diff_mkfile(log, dir, "f", 3 * PG, 42);
	char *r = D_MMAP(log, o, NULL, 12 * PG, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, p + 2 * PG + 5, 'f', 10);
	char *q = D_MREMAP_TO(log, o, p, 3 * PG, 3 * PG,
			      MREMAP_MAYMOVE | MREMAP_FIXED, r + 4 * PG);
	T_PEEK(log, p);
	D_READ(log, q, 3 * PG);
	T_PEEK(log, r + 3 * PG); /* the reservation around it */
	T_PEEK(log, r + 7 * PG);
	/* Fixed and growing, over the rest of the reservation. */
	char *s = D_MREMAP_TO(log, o, q, 3 * PG, 4 * PG,
			      MREMAP_MAYMOVE | MREMAP_FIXED, r + 8 * PG);
	D_READ(log, s, 3 * PG);
	T_PEEK(log, s + 3 * PG);
	/* Anonymous private memory keeps its contents too. */
	char *a = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_FILL(log, a, 'a', 2 * PG);
	char *b = D_MREMAP_TO(log, o, a, 2 * PG, 3 * PG,
			      MREMAP_MAYMOVE | MREMAP_FIXED, r);
	D_READ(log, b, 3 * PG);
	/* A private file mapping keeps its private copies. */
	char *c = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_FILL(log, c + PG, 'c', 10);
	char *d = D_MREMAP(log, o, c, 2 * PG, 3 * PG, MREMAP_MAYMOVE);
	D_READ(log, d, 3 * PG);
	D_CALL(log, o->msync(s, 3 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 3 * PG);
	close(fd);
}

DIFF_TEST(mremap, arguments)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 43);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	char *r = D_MMAP(log, o, NULL, 8 * PG, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_MREMAP(log, o, p + 1, PG, 2 * PG, MREMAP_MAYMOVE);
	D_MREMAP(log, o, p, PG, 2 * PG, 0x80);
	D_MREMAP(log, o, p, 2 * PG, 0, MREMAP_MAYMOVE);
	D_MREMAP(log, o, p, 0, PG, MREMAP_MAYMOVE); /* private: EINVAL */
	D_MREMAP_TO(log, o, p, PG, PG, MREMAP_FIXED, r); /* needs MAYMOVE */
	D_MREMAP_TO(log, o, p, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED,
		    p + PG); /* overlapping */
	D_MREMAP_TO(log, o, p, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, r + 1);
	D_MREMAP(log, o, p, 4 * PG, SIZE_MAX & ~(PG - 1), MREMAP_MAYMOVE);
	D_CALL(log, o->munmap(r, 8 * PG));
	D_MREMAP(log, o, r, PG, 2 * PG, MREMAP_MAYMOVE); /* unmapped: EFAULT */
	D_READ(log, p, 4 * PG);
	/* Across two regions. */
	char *s = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_CALL(log, o->mprotect(s + 2 * PG, 2 * PG, PROT_READ));
	D_MREMAP(log, o, s, 4 * PG, 8 * PG, MREMAP_MAYMOVE);
	D_MREMAP(log, o, s + PG, 2 * PG, 3 * PG, MREMAP_MAYMOVE);
	/* Same size: nothing to do. */
	D_MREMAP(log, o, s, 2 * PG, 2 * PG, 0);
	D_CALL(log, o->munmap(p, 4 * PG));
	close(fd);
}

DIFF_TEST(mremap, part_of_a_mapping)
{
	int fd = diff_mkfile(log, dir, "f", 6 * PG, 44);
	char *p = D_MMAP(log, o, NULL, 6 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, p + 2 * PG + 3, 'm', 10);
	char *q = D_MREMAP(log, o, p + 2 * PG, 2 * PG, 3 * PG, MREMAP_MAYMOVE);
	D_READ(log, q, 3 * PG);
	T_PEEK(log, p + 2 * PG);
	T_PEEK(log, p + 3 * PG + 1);
	D_READ(log, p, 2 * PG);
	D_READ(log, p + 4 * PG, 2 * PG);
	D_FILL(log, q + PG, 'n', 10);
	D_CALL(log, o->munmap(q, 3 * PG));
	D_CALL(log, o->munmap(p, 6 * PG));
	D_PREAD(log, fd, 0, 6 * PG);
	close(fd);
}

DIFF_TEST(mremap, anonymous_grow)
{
	char *r = D_MMAP(log, o, NULL, 8 * PG, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *a = D_MMAP(log, o, r, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	char *s = D_MMAP(log, o, r + 4 * PG, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	D_FILL(log, a, 'a', 2 * PG);
	D_FILL(log, s, 's', 2 * PG);
	D_CALL(log, o->munmap(r + 2 * PG, 2 * PG));
	D_CALL(log, o->munmap(r + 6 * PG, 2 * PG));
	char *a2 = D_MREMAP(log, o, a, 2 * PG, 4 * PG, 0);
	D_READ(log, a2, 4 * PG);
	/* Shared anonymous memory keeps its original size: the grown part
	 * is beyond the end of the object. */
	char *s2 = D_MREMAP(log, o, s, 2 * PG, 4 * PG, 0);
	D_READ(log, s2, 2 * PG);
	T_PEEK(log, s2 + 2 * PG);
	T_POKE(log, s2 + 3 * PG, 1);
	/* Old size 0 duplicates a shared mapping. */
	char *dup = D_MREMAP(log, o, s2, 0, 2 * PG, MREMAP_MAYMOVE);
	T_READ(log, dup, 2 * PG);
	T_POKE(log, dup + 5, 'D');
	D_READ(log, s2, 16);
}

/* A piece of private anonymous memory that grows (moving or in place)
 * gets zeros past its old end, never the pages of the piece that follows
 * it in the original mapping; munmap and MADV_DONTNEED give zeros after. */
DIFF_TEST(mremap, private_pieces_grow_apart)
{
	char *r = D_MMAP(log, o, NULL, 16 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *a = D_MMAP(log, o, r, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	for (int i = 0; i < 4; i++)
		D_FILL(log, a + i * PG, 'a' + i, PG);
	char *m = D_MREMAP(log, o, a + PG, PG, 3 * PG, MREMAP_MAYMOVE);
	D_READ(log, m, 3 * PG);
	D_FILL(log, m + PG, 'x', PG);
	D_READ(log, a + 2 * PG, 2 * PG);
	D_CALL(log, o->munmap(r + 4 * PG, 12 * PG));
	D_CALL(log, o->munmap(a + 3 * PG, PG));
	char *g = D_MREMAP(log, o, a + 2 * PG, PG, 3 * PG, 0);
	D_READ(log, g, 3 * PG);
	D_CALL(log, o->madvise(g, PG, MADV_DONTNEED));
	D_READ(log, g, PG);
	D_CALL(log, o->munmap(a, PG));
	char *b = D_MMAP(log, o, a, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	D_READ(log, b, PG);
	/* Private memory cannot be duplicated. */
	D_MREMAP(log, o, m, 0, PG, MREMAP_MAYMOVE);
}

DIFF_TEST(mremap, duplicate_shared_file_mapping)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 45);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	char *q = D_MREMAP(log, o, p, 0, 2 * PG, MREMAP_MAYMOVE);
	T_READ(log, q, 2 * PG);
	T_POKE(log, q + 7, 'q');
	D_READ(log, p, 16);
	D_CALL(log, o->msync(p, 2 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 16);
	close(fd);
}

DIFF_TEST(mremap, dontunmap)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 46);
	char *a = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_FILL(log, a, 'a', 2 * PG);
	char *b = D_MREMAP(log, o, a, 2 * PG, 2 * PG,
			   MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
	D_READ(log, b, 2 * PG);
	T_READ(log, a, 2 * PG); /* still mapped, empty */
	D_MREMAP(log, o, b, 2 * PG, 3 * PG, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
	D_MREMAP(log, o, b, 2 * PG, 2 * PG, MREMAP_DONTUNMAP);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_FILL(log, p, 'p', 10);
	char *q = D_MREMAP(log, o, p, 2 * PG, 2 * PG,
			   MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
	T_READ(log, q, 2 * PG);
	T_READ(log, p, 2 * PG);
	char *s = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, s, 's', 10);
	char *t = D_MREMAP(log, o, s, 2 * PG, 2 * PG,
			   MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
	T_READ(log, t, 2 * PG);
	T_READ(log, s, 2 * PG);
	D_CALL(log, o->msync(t, 2 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 2 * PG);
	close(fd);
}

DIFF_TEST(mremap, lands_next_to_its_continuation)
{
	/* Pages 2-3 of a file moved right before a mapping of pages 4-7:
	 * the kernel merges the two.  The mapping that was there keeps the
	 * kernel's semantics: stores reach the file, the page beyond EOF
	 * raises SIGBUS, pages not yet touched come from the file. */
	int fd = diff_mkfile(log, dir, "f", 7 * PG - 100, 47);
	char *r = D_MMAP(log, o, NULL, 8 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *hi = D_MMAP(log, o, r + 2 * PG, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd,
			  4 * PG);
	D_PEEK(log, hi + 10); /* page 4 in the cache, mapped */
	char *lo = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 2 * PG);
	D_FILL(log, lo + 7, 'l', 10);
	char *m = D_MREMAP_TO(log, o, lo, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, r);
	D_FILL(log, hi + 20, 'h', 10);	    /* a mapped page */
	D_FILL(log, hi + PG + 30, 'i', 10); /* a page not mapped yet */
	D_READ(log, hi + 2 * PG, PG);
	T_PEEK(log, hi + 3 * PG + 1); /* beyond EOF */
	D_READ(log, m, 2 * PG);
	D_CALL(log, o->munmap(m, 2 * PG));
	D_CALL(log, o->munmap(hi, 4 * PG));
	D_PREAD(log, fd, 0, 8 * PG);
	close(fd);
}

/* MADV_FREE keeps the data until reclaim; MADV_PAGEOUT reclaims: pages
 * not stored into since read zeros, a page stored into keeps it all. */
DIFF_TEST(madvise, free_then_pageout)
{
	char *a = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_FILL(log, a, 'f', 4 * PG);
	D_CALL(log, o->madvise(a, 4 * PG, MADV_FREE));
	D_READ(log, a, 4 * PG);
	D_FILL(log, a + PG + 100, 'w', 8);
	D_CALL(log, o->madvise(a + 2 * PG, PG, MADV_DONTNEED));
	D_CALL(log, o->madvise(a, 4 * PG, MADV_PAGEOUT));
	D_READ(log, a, 4 * PG);
	D_FILL(log, a, 'g', 8);
	D_CALL(log, o->madvise(a, 4 * PG, MADV_PAGEOUT));
	D_READ(log, a, 4 * PG);
	D_CALL(log, o->munmap(a, 4 * PG));
}

/* The same under a budget of 8 pages, so that ummap swaps the pages given
 * MADV_FREE out (when another mapping is filled) and back in (when read):
 * being in swap rather than in memory must not make MADV_PAGEOUT keep them,
 * whether they went there before MADV_FREE or after. */
DIFF_TEST(madvise, free_then_pageout_under_a_small_budget)
{
#ifndef DIFF_KERNEL_ONLY
	um_configure(&(struct um_config){ .budget = 8 * PG }); /* (only ummap's side pages through it) */
#endif
	char *b = D_MMAP(log, o, NULL, 16 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0); /* (mapped first: evicted last) */
	char *a = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_FILL(log, a, 'f', 4 * PG);
	D_CALL(log, o->madvise(a, 2 * PG, MADV_FREE));
	D_FILL(log, b, 'b', 16 * PG); /* a's pages go to swap */
	D_READ(log, a, 4 * PG);	      /* and come back */
	D_FILL(log, b, 'c', 16 * PG); /* and go again */
	D_CALL(log, o->madvise(a + 2 * PG, 2 * PG, MADV_FREE));
	D_CALL(log, o->madvise(a, 4 * PG, MADV_PAGEOUT));
	D_READ(log, a, 4 * PG);
	D_CALL(log, o->munmap(a, 4 * PG));
	D_CALL(log, o->munmap(b, 16 * PG));
}

/* A piece of private anonymous memory grown over offsets another piece
 * holds moves to fresh ones (its pages copied): pages given MADV_FREE keep
 * their mark, and MADV_PAGEOUT drops them, as the kernel's. */
DIFF_TEST(madvise, free_then_grown_over_a_neighbour_then_pageout)
{
	char *a = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_FILL(log, a, 'f', 4 * PG);
	D_CALL(log, o->munmap(a + PG, PG));
	D_CALL(log, o->madvise(a, PG, MADV_FREE));
	char *q = D_MREMAP(log, o, a, PG, 3 * PG, MREMAP_MAYMOVE);
	D_CALL(log, o->madvise(q, 3 * PG, MADV_PAGEOUT));
	D_READ(log, q, PG);
	D_READ(log, a + 2 * PG, 2 * PG);
	D_CALL(log, o->munmap(q, 3 * PG));
	D_CALL(log, o->munmap(a + 2 * PG, 2 * PG));
}

static uint32_t fnv32(const char *p, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 16777619u;
	return h;
}

/* fork(): the child's private memory is a copy as at the fork (wiped where
 * MADV_WIPEONFORK says); neither side sees the other's later stores. */
DIFF_TEST(madvise, fork_copies_private_memory)
{
	char *a = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (int i = 0; i < 4; i++)
		D_FILL(log, a + i * PG, 'a' + i, PG);
	D_CALL(log, o->madvise(a + 3 * PG, PG, MADV_WIPEONFORK));
	D_CALL(log, o->madvise(a + 2 * PG, PG, MADV_KEEPONFORK));
	int go[2], back[2];
	if (pipe(go) || pipe(back))
		abort();
	pid_t pid = fork();
	if (pid == 0) {
		char b;
		a[0] = 'C';
		if (read(go[0], &b, 1) != 1)
			_exit(1);
		uint32_t v = fnv32(a, 4 * PG);
		_exit(write(back[1], &v, sizeof v) == sizeof v ? 0 : 2);
	}
	D_FILL(log, a + PG, 'P', 8);
	if (write(go[1], "g", 1) != 1)
		abort();
	uint32_t v = 0;
	if (read(back[0], &v, sizeof v) != sizeof v)
		v = 0;
	int st = 0;
	waitpid(pid, &st, 0);
	D_VAL(log, v);
	D_VAL(log, WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st));
	D_READ(log, a, 4 * PG);
	D_CALL(log, o->munmap(a, 4 * PG));
	close(go[0]);
	close(go[1]);
	close(back[0]);
	close(back[1]);
}

static void exit_with_segv_code(int sig, siginfo_t *si, void *uc)
{
	_exit(si->si_code == SEGV_MAPERR ? 20 : si->si_code == SEGV_ACCERR ? 21 : 22);
}

DIFF_TEST(madvise, dontfork_ranges_absent_in_the_child)
{
	/* The child has no mapping where MADV_DONTFORK was given (msync
	 * finds a hole, a touch is SEGV_MAPERR), and one again after
	 * MADV_DOFORK.  (What the child may do with inherited file pages is
	 * a documented difference; only their presence is compared.) */
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 48);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_PEEK(log, p + 3 * PG);
	D_CALL(log, o->madvise(p + 2 * PG, 2 * PG, MADV_DONTFORK));
	D_CALL(log, o->madvise(p + 3 * PG, PG, MADV_DOFORK));
	pid_t pid = fork();
	if (pid == 0) {
		int code = 0;
		if (msync(p, 2 * PG, MS_ASYNC) == 0)
			code |= 1;
		if (msync(p + 2 * PG, PG, MS_ASYNC) < 0 && errno == ENOMEM)
			code |= 2;
		if (msync(p + 3 * PG, PG, MS_ASYNC) == 0)
			code |= 4;
		if (code != 7)
			_exit(code);
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_sigaction = exit_with_segv_code;
		sa.sa_flags = SA_SIGINFO;
		sigaction(SIGSEGV, &sa, NULL);
		*(volatile char *)(p + 2 * PG + 5);
		_exit(23);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	D_VAL(log, WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st));
	D_CALL(log, o->munmap(p, 4 * PG));
	close(fd);
}

DIFF_TEST(fork, child_shares_file_mappings)
{
	/* A fork child faults pages of the parent's file mappings in itself,
	 * sees the parent's stores, and its own shared stores reach the
	 * parent and the file (it ends with _exit, unmapping nothing); its
	 * private stores stay its own, while the parent's private mapping
	 * sees the child's shared stores on pages the parent did not write. */
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 31);
	char *s = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	D_FILL(log, s + 10, 'P', 100);
	D_FILL(log, p + PG + 10, 'q', 100);
	int back[2];
	if (pipe(back))
		abort();
	pid_t pid = fork();
	if (pid == 0) {
		uint32_t v[4] = { fnv32(s, 4 * PG), fnv32(p, 4 * PG) };
		memset(s + 2 * PG + 20, 'C', 100);
		memset(p + 3 * PG + 20, 'c', 50);
		v[2] = fnv32(s, 4 * PG);
		v[3] = fnv32(p, 4 * PG);
		_exit(write(back[1], v, sizeof v) == sizeof v ? 0 : 2);
	}
	uint32_t v[4] = { 0 };
	if (read(back[0], v, sizeof v) != sizeof v)
		memset(v, 0, sizeof v);
	int st = 0;
	waitpid(pid, &st, 0);
	for (int i = 0; i < 4; i++)
		D_VAL(log, v[i]);
	D_VAL(log, WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st));
	D_READ(log, s, 4 * PG);
	D_READ(log, p, 4 * PG);
	D_CALL(log, o->munmap(s, 4 * PG));
	D_CALL(log, o->munmap(p, 4 * PG));
	D_PREAD(log, fd, 0, 4 * PG);
	close(fd);
	close(back[0]);
	close(back[1]);
}

DIFF_TEST(fork, child_that_execs_leaves_the_parent_working)
{
	/* The child's mappings go at exec; the parent's cache, and what the
	 * child stored before exec, stay. */
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 32);
	char *s = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_FILL(log, s + 10, 'P', 100);
	pid_t pid = fork();
	if (pid == 0) {
		memset(s + PG + 30, 'E', 40);
		execl("/bin/true", "true", (char *)NULL);
		_exit(127);
	}
	int st = 0;
	waitpid(pid, &st, 0);
	D_VAL(log, WIFEXITED(st) ? WEXITSTATUS(st) : 100 + WTERMSIG(st));
	D_READ(log, s, 2 * PG);
	D_FILL(log, s + PG + 100, 'Q', 10);
	D_CALL(log, o->msync(s, 2 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 2 * PG);
	D_CALL(log, o->munmap(s, 2 * PG));
	close(fd);
}
