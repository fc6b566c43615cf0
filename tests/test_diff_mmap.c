/*
 * test_diff_mmap.c - um_mmap against mmap(2): protections, flags, argument
 * errors.  Every scenario runs on the kernel and on ummap in child
 * processes (see tests/lib/diff.h); the logs of calls, errno, bytes read,
 * signals and the bytes left on disk must be the same.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "diff.h"

#define PG DIFF_PG

#define MAP_UNKNOWN_BIT 0x200000 /* no MAP_* flag uses it */

static const int prots[] = {
	PROT_NONE,
	PROT_READ,
	PROT_WRITE,
	PROT_EXEC,
	PROT_READ | PROT_WRITE,
	PROT_READ | PROT_EXEC,
	PROT_WRITE | PROT_EXEC,
	PROT_READ | PROT_WRITE | PROT_EXEC,
};

/* For each protection: map 2 pages of the kind, read a byte of page 1,
 * store to page 0, read page 0 whole, unmap. */
static void prot_matrix(const struct mm_ops *o, struct diff_log *log,
			const char *dir, int kind)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 1);
	for (size_t i = 0; i < sizeof prots / sizeof *prots; i++) {
		D_NOTE(log, "%s prot %#x", diff_kind_names[kind], prots[i]);
		char *p = D_MAP_KIND(log, o, kind, fd, 2 * PG, prots[i], 0);
		T_READ(log, p + PG + 5, 3);
		T_POKE(log, p + 17 + (int)i, 0xA0 + (int)i);
		T_READ(log, p, PG);
		D_CALL(log, o->munmap(p, 2 * PG));
	}
	close(fd);
}

DIFF_TEST(mmap_prot, matrix_file_shared) { prot_matrix(o, log, dir, DIFF_FILE_SHARED); }
DIFF_TEST(mmap_prot, matrix_file_private) { prot_matrix(o, log, dir, DIFF_FILE_PRIVATE); }
DIFF_TEST(mmap_prot, matrix_anon_private) { prot_matrix(o, log, dir, DIFF_ANON_PRIVATE); }
DIFF_TEST(mmap_prot, matrix_anon_shared) { prot_matrix(o, log, dir, DIFF_ANON_SHARED); }

DIFF_TEST(mmap_prot, write_to_read_only_segv_accerr)
{
	int fd = diff_mkfile(log, dir, "f", 3 * PG, 2);
	close(fd);
	fd = D_OPEN(log, dir, "f", O_RDONLY);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ, MAP_SHARED, fd, 0);
	D_READ(log, p, 3 * PG);
	T_POKE(log, p + PG + 123, 'x');	 /* SEGV_ACCERR at m0+0x107b */
	T_POKE(log, p + 2 * PG + 4095, 'y'); /* last byte */
	D_READ(log, p + PG, PG);	 /* unchanged */
	char *q = D_MMAP(log, o, NULL, 3 * PG, PROT_READ, MAP_PRIVATE, fd, 0);
	T_POKE(log, q + 2 * PG + 7, 'z'); /* before any read of the page */
	D_READ(log, q, 3 * PG);
	D_CALL(log, o->munmap(p, 3 * PG));
	D_CALL(log, o->munmap(q, 3 * PG));
	/* Anonymous read-only memory too. */
	char *a = D_MMAP(log, o, NULL, 2 * PG, PROT_READ,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_READ(log, a, 2 * PG);
	T_POKE(log, a + PG + 1, 1);
	D_CALL(log, o->munmap(a, 2 * PG));
}

DIFF_TEST(mmap_prot, prot_none_then_mprotect)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 3);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_NONE, MAP_SHARED, fd, 0);
	T_PEEK(log, p + 99);	   /* SEGV_ACCERR */
	T_POKE(log, p + PG + 1, 5); /* SEGV_ACCERR */
	D_CALL(log, o->mprotect(p, 2 * PG, PROT_READ));
	D_READ(log, p, 2 * PG);
	T_POKE(log, p + PG + 1, 5);
	D_CALL(log, o->mprotect(p + PG, PG, PROT_READ | PROT_WRITE));
	T_POKE(log, p + PG + 1, 5);
	T_POKE(log, p + 1, 5);
	D_READ(log, p, 2 * PG);
	D_CALL(log, o->mprotect(p, 2 * PG, PROT_NONE));
	T_PEEK(log, p + PG + 1);
	D_CALL(log, o->munmap(p, 2 * PG));
	D_PREAD(log, fd, 0, 2 * PG);
	close(fd);
}

DIFF_TEST(mmap_shared, read_write_msync)
{
	int fd = diff_mkfile(log, dir, "f", 3 * PG, 4);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_READ(log, p, 3 * PG);
	D_PATTERN(log, p + PG + 100, 200, 9);
	D_FILL(log, p + 2 * PG + 4000, 0, 96);
	D_READ(log, p, 3 * PG);
	D_CALL(log, o->msync(p, 3 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 3 * PG);
	D_CALL(log, o->munmap(p, 3 * PG));
	close(fd);
}

DIFF_TEST(mmap_shared, two_mappings_coherent)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 5);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	char *q = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_READ(log, q, PG); /* q's page 0 mapped before p writes it */
	D_PATTERN(log, p + 10, 100, 6);
	D_READ(log, q, 2 * PG);
	D_PATTERN(log, q + PG + 500, 700, 7);
	D_READ(log, p + PG, PG);
	/* A third mapping at an offset sees both. */
	char *r = D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, fd, PG);
	D_READ(log, r, PG);
	D_CALL(log, o->msync(q, 2 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 2 * PG);
	D_CALL(log, o->munmap(p, 2 * PG));
	D_CALL(log, o->munmap(q, 2 * PG));
	D_CALL(log, o->munmap(r, PG));
	close(fd);
}

DIFF_TEST(mmap_shared, same_file_through_other_descriptors_and_links)
{
	/* One file, reached through two descriptors, a read-only one and a
	 * hard link: every shared mapping of it sees the same pages. */
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 9);
	char from[4096], to[4096];
	snprintf(from, sizeof from, "%s/f", dir);
	snprintf(to, sizeof to, "%s/link", dir);
	D_CALL(log, link(from, to));
	int fd2 = D_OPEN(log, dir, "f", O_RDWR);
	int ro = D_OPEN(log, dir, "f", O_RDONLY);
	int ln = D_OPEN(log, dir, "link", O_RDWR);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	char *q = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd2, 0);
	char *r = D_MMAP(log, o, NULL, 2 * PG, PROT_READ, MAP_SHARED, ro, 0);
	char *l = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, ln, 0);
	char *v = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, ro, 0);
	D_READ(log, r, PG);
	D_FILL(log, p + 5, 'p', 5);
	D_FILL(log, q + PG + 5, 'q', 5);
	D_FILL(log, l + 20, 'l', 5);
	D_READ(log, p, 2 * PG);
	D_READ(log, q, 2 * PG);
	D_READ(log, r, 2 * PG);
	D_READ(log, l, 2 * PG);
	D_READ(log, v, 2 * PG);
	D_CALL(log, o->munmap(p, 2 * PG));
	D_CALL(log, o->msync(l, 2 * PG, MS_SYNC));
	D_CALL(log, o->msync(q, 2 * PG, MS_SYNC));
	D_PREAD(log, ro, 0, 2 * PG);
	D_CALL(log, unlink(to));
	D_FILL(log, l + 30, 'L', 5); /* through the removed name */
	D_READ(log, r, 64);
	close(fd);
	close(fd2);
	close(ro);
	close(ln);
}

DIFF_TEST(mmap_shared, large_file_scattered_access)
{
	/* 16 MiB: sequential and scattered reads (readahead, fault units),
	 * scattered writes, a partial msync, then the whole file. */
	size_t len = 16ul << 20;
	int fd = diff_mkfile(log, dir, "big", len, 16);
	char *p = D_MMAP(log, o, NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED,
			 fd, 0);
	D_READ(log, p + 3 * PG + 17, 5 * PG);
	for (size_t i = 0, off = 12345; i < 64; i++) {
		off = (off * 2654435761u + 97) % (len - 64);
		D_READ(log, p + off, 64);
		if (i % 4 == 0)
			D_FILL(log, p + (off ^ 0x5000) % (len - 8), 'w' + (int)(i % 3), 8);
	}
	D_CALL(log, o->msync(p, len / 2, MS_SYNC));
	D_PREAD(log, fd, 0, len / 2);
	D_READ(log, p, len);
	D_CALL(log, o->munmap(p, len));
	close(fd);
}

DIFF_TEST(mmap_shared, validate_flags)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 8);
	char *p;
	p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
		   MAP_SHARED_VALIDATE, fd, 0);
	D_READ(log, p, 2 * PG);
	D_POKE(log, p + 3, 'v');
	D_CALL(log, o->munmap(p, 2 * PG));
	/* Unknown flag bits: refused with MAP_SHARED_VALIDATE... */
	D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
	       MAP_SHARED_VALIDATE | MAP_UNKNOWN_BIT, fd, 0);
	D_MMAP(log, o, NULL, 2 * PG, PROT_READ,
	       MAP_SHARED_VALIDATE | 0x1000000, fd, 0);
	/* MAP_SYNC needs DAX */
	D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
	       MAP_SHARED_VALIDATE | MAP_SYNC, fd, 0);
	/* ...ignored with MAP_SHARED and MAP_PRIVATE. */
	p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_UNKNOWN_BIT, fd, 0);
	D_READ(log, p, 2 * PG);
	D_POKE(log, p + PG + 3, 's');
	D_CALL(log, o->munmap(p, 2 * PG));
	p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
		   MAP_SHARED | MAP_SYNC, fd, 0);
	T_READ(log, p, 16);
	D_CALL(log, o->munmap(p, 2 * PG));
	p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
		   MAP_PRIVATE | MAP_UNKNOWN_BIT, fd, 0);
	D_POKE(log, p + 5, 'p');
	D_READ(log, p, 2 * PG);
	D_CALL(log, o->munmap(p, 2 * PG));
	/* Known legacy flags pass validation. */
	p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
		   MAP_SHARED_VALIDATE | MAP_POPULATE | MAP_NORESERVE |
			   MAP_DENYWRITE,
		   fd, 0);
	D_READ(log, p, 2 * PG);
	D_CALL(log, o->munmap(p, 2 * PG));
	/* Anonymous shared through MAP_SHARED_VALIDATE. */
	p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
		   MAP_SHARED_VALIDATE | MAP_ANONYMOUS, -1, 0);
	T_READ(log, p, 2 * PG);
	D_CALL(log, o->munmap(p, 2 * PG));
	D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
	       MAP_SHARED_VALIDATE | MAP_ANONYMOUS | MAP_UNKNOWN_BIT, -1, 0);
	close(fd);
}

DIFF_TEST(mmap_private, copy_on_write_never_reaches_file)
{
	int fd = diff_mkfile(log, dir, "f", 3 * PG, 10);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_READ(log, p, PG);
	D_PATTERN(log, p + PG + 7, 300, 11); /* page 1 never read before */
	D_FILL(log, p, 0x55, PG);
	D_READ(log, p, 3 * PG);
	D_PREAD(log, fd, 0, 3 * PG);
	D_CALL(log, o->msync(p, 3 * PG, MS_SYNC));
	D_CALL(log, o->msync(p, 3 * PG, MS_ASYNC | MS_INVALIDATE));
	D_READ(log, p, 3 * PG); /* still the private copies */
	D_PREAD(log, fd, 0, 3 * PG);
	D_CALL(log, o->munmap(p, 3 * PG));
	/* A new mapping sees the file, not the old private pages. */
	p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ, MAP_SHARED, fd, 0);
	D_READ(log, p, 3 * PG);
	close(fd);
	/* Left mapped: exit changes nothing on disk either. */
}

DIFF_TEST(mmap_private, sees_shared_writes_on_unwritten_pages)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 12);
	char *s = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	char *q = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_READ(log, q, 3 * PG); /* pages 0-2 read, page 3 untouched */
	D_FILL(log, q + PG + 100, 'Q', 50); /* page 1 now private */
	D_PATTERN(log, s, 4 * PG, 13);	    /* every page through s */
	D_READ(log, q, PG);		    /* sees s's write */
	D_READ(log, q + PG, PG);	    /* its own copy */
	D_READ(log, q + 2 * PG, PG);	    /* read before, not written: s's */
	D_READ(log, q + 3 * PG, PG);	    /* first touch after s wrote */
	D_FILL(log, s + PG, 'S', 200);	    /* no effect on q's page 1 */
	D_READ(log, q + PG, PG);
	D_CALL(log, o->msync(s, 4 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 4 * PG);
	D_CALL(log, o->munmap(q, 4 * PG));
	D_CALL(log, o->munmap(s, 4 * PG));
	close(fd);
}

DIFF_TEST(mmap_private, read_only_fd_private_write)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 14);
	close(fd);
	fd = D_OPEN(log, dir, "f", O_RDONLY);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_FILL(log, p + PG - 10, 'w', 20); /* across the page boundary */
	D_READ(log, p, 2 * PG);
	D_CALL(log, o->munmap(p, 2 * PG));
	D_PREAD(log, fd, 0, 2 * PG);
	close(fd);
}

static void anon_zero(const struct mm_ops *o, struct diff_log *log, int kind)
{
	char *p = D_MAP_KIND(log, o, kind, -1, 6 * PG, PROT_READ | PROT_WRITE, 0);
	D_READ(log, p, 6 * PG);
	D_PATTERN(log, p + PG + 10, 2 * PG, 15);
	D_READ(log, p, 6 * PG);
	D_CALL(log, o->munmap(p + 2 * PG, PG));
	T_PEEK(log, p + 2 * PG + 1); /* SEGV_MAPERR */
	D_READ(log, p + 3 * PG, 3 * PG);
	D_READ(log, p, 2 * PG);
	D_CALL(log, o->munmap(p, 6 * PG));
	T_PEEK(log, p);
}

DIFF_TEST(mmap_anon, private_zero_filled) { anon_zero(o, log, DIFF_ANON_PRIVATE); }
DIFF_TEST(mmap_anon, shared_zero_filled) { anon_zero(o, log, DIFF_ANON_SHARED); }

DIFF_TEST(mmap_anon, large_noreserve_sparse)
{
	size_t len = 1ul << 30;
	for (int kind = DIFF_ANON_PRIVATE; kind <= DIFF_ANON_SHARED; kind++) {
		char *p = D_MAP_KIND(log, o, kind, -1, len,
				     PROT_READ | PROT_WRITE, MAP_NORESERVE);
		D_READ(log, p + len - PG, PG);
		D_FILL(log, p + len / 2 + 3, 0x77, 10);
		D_READ(log, p + len / 2, 32);
		D_READ(log, p, 64);
		D_CALL(log, o->munmap(p, len));
	}
}

DIFF_TEST(mmap_fixed, replaces_parts_of_two_mappings)
{
	int fa = diff_mkfile(log, dir, "a", 4 * PG, 20);
	int fb = diff_mkfile(log, dir, "b", 4 * PG, 21);
	char *r = D_MMAP(log, o, NULL, 12 * PG, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	char *a = D_MMAP(log, o, r, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED, fa, 0);
	char *b = D_MMAP(log, o, r + 4 * PG, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED, fb, 0);
	D_READ(log, r, 8 * PG);
	/* Dirty pages about to be replaced: the kernel keeps them in the
	 * file's cache, so they reach the file. */
	D_FILL(log, a + 2 * PG + 1, 'A', 100);
	D_FILL(log, a + 3 * PG + 1, 'a', 100);
	D_FILL(log, b + PG + 1, 'B', 100);
	D_FILL(log, b + 2 * PG + 1, 'b', 100);
	char *z = D_MMAP(log, o, r + 2 * PG, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	D_READ(log, r, 8 * PG); /* a0 a1 0 0 0 0 b2 b3 */
	D_FILL(log, z + PG - 1, 'z', 2);
	D_READ(log, r + 2 * PG, 4 * PG);
	T_PEEK(log, r + 8 * PG + 5); /* still the PROT_NONE reservation */
	D_CALL(log, o->msync(r, 2 * PG, MS_SYNC));
	D_CALL(log, o->msync(r + 6 * PG, 2 * PG, MS_SYNC));
	D_CALL(log, o->msync(r, 8 * PG, MS_SYNC)); /* anon in range: fine */
	D_PREAD(log, fa, 0, 4 * PG);
	D_PREAD(log, fb, 0, 4 * PG);
	D_CALL(log, o->munmap(r, 12 * PG));
	close(fa);
	close(fb);
}

DIFF_TEST(mmap_fixed, file_over_file_middle)
{
	int fd = diff_mkfile(log, dir, "f", 8 * PG, 22);
	char *p = D_MMAP(log, o, NULL, 6 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_READ(log, p, 6 * PG);
	/* Map file pages 6-7 over p's pages 2-3, read-only. */
	char *q = D_MMAP(log, o, p + 2 * PG, 2 * PG, PROT_READ,
			 MAP_SHARED | MAP_FIXED, fd, 6 * PG);
	D_READ(log, p, 6 * PG);
	T_POKE(log, q + 5, 'x'); /* SEGV_ACCERR: the new protection */
	D_POKE(log, p + 4 * PG + 5, 'y');
	/* Private over shared, at the start. */
	D_MMAP(log, o, p, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED,
	       fd, 7 * PG);
	D_POKE(log, p + 9, 'p');
	D_READ(log, p, 6 * PG);
	D_CALL(log, o->munmap(p, 6 * PG));
	D_PREAD(log, fd, 0, 8 * PG);
	close(fd);
}

DIFF_TEST(mmap_fixed, noreplace)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 23);
	char *r = D_MMAP(log, o, NULL, 6 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_FILL(log, r, 'r', 6 * PG);
	D_MMAP(log, o, r + PG, PG, PROT_READ,
	       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	D_MMAP(log, o, r + PG, PG, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE,
	       fd, 0);
	D_READ(log, r, 6 * PG); /* untouched by the refused calls */
	D_CALL(log, o->munmap(r + 2 * PG, 2 * PG));
	char *q = D_MMAP(log, o, r + 2 * PG, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
	D_READ(log, r, 6 * PG);
	D_CALL(log, o->munmap(q + PG, PG));
	/* Overlapping the hole and a mapped page. */
	D_MMAP(log, o, r + 3 * PG, 2 * PG, PROT_READ,
	       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	T_PEEK(log, r + 3 * PG);
	D_MMAP(log, o, r + 3 * PG + 1, PG, PROT_READ,
	       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	D_POKE(log, q + 1, 'q');
	D_CALL(log, o->munmap(r, 6 * PG));
	close(fd);
}

DIFF_TEST(mmap_fixed, address_errors)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 24);
	char *r = D_MMAP(log, o, NULL, 4 * PG, PROT_READ,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_MMAP(log, o, r + 100, PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	D_MMAP(log, o, r + 1, PG, PROT_READ,
	       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	D_MMAP(log, o, r + 100, PG, PROT_READ,
	       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	D_READ(log, r, 4 * PG);
	/* Below mmap_min_addr, and running off the end of the address space. */
	D_MMAP(log, o, (void *)0, PG, PROT_READ,
	       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	D_CALL(log, o->munmap((void *)0, PG));
	D_MMAP(log, o, (void *)0x7ffffffff000ul, 1ul << 30, PROT_READ,
	       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	D_MMAP(log, o, (void *)(~0ul << 12), 2 * PG, PROT_READ,
	       MAP_SHARED | MAP_FIXED, fd, 0);
	D_CALL(log, o->munmap(r, 4 * PG));
	close(fd);
}

DIFF_TEST(mmap_fixed, hint_without_fixed)
{
	char *r = D_MMAP(log, o, NULL, 8 * PG, PROT_NONE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_CALL(log, o->munmap(r + 2 * PG, 4 * PG));
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 25);
	/* A free hint is taken. */
	char *p = D_MMAP(log, o, r + 3 * PG, PG, PROT_READ, MAP_SHARED, fd, 0);
	D_READ(log, p, PG);
	/* An unaligned free hint is rounded down... */
	char *q = D_MMAP(log, o, r + 4 * PG + 100, PG, PROT_READ,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_VAL(log, q == r + 4 * PG);
	/* ...and an occupied one is not used, without error. */
	char *s = D_MMAP(log, o, r, PG, PROT_READ, MAP_SHARED, fd, PG);
	D_READ(log, s, PG);
	T_PEEK(log, r);
	close(fd);
}

DIFF_TEST(mmap_flags, populate)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 30);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_POPULATE, fd, 0);
	D_READ(log, p, 4 * PG);
	D_FILL(log, p + PG, 'P', PG);
	D_CALL(log, o->msync(p, 4 * PG, MS_SYNC));
	char *q = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_POPULATE, fd, 0);
	D_READ(log, q, 4 * PG);
	D_FILL(log, q + 2 * PG, 'q', 10);
	D_READ(log, p + 2 * PG, PG);
	char *a = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	D_READ(log, a, 4 * PG);
	/* Populating past the end of the file is not an error. */
	int fs = diff_mkfile(log, dir, "short", 2 * PG + 500, 31);
	char *s = D_MMAP(log, o, NULL, 5 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_POPULATE, fs, 0);
	D_READ(log, s, 3 * PG);
	T_PEEK(log, s + 3 * PG + 1);
	T_POKE(log, s + 4 * PG + 2, 1);
	/* PROT_NONE populate. */
	char *n = D_MMAP(log, o, NULL, 2 * PG, PROT_NONE,
			 MAP_SHARED | MAP_POPULATE, fd, 0);
	T_PEEK(log, n);
	D_CALL(log, o->munmap(n, 2 * PG));
	D_CALL(log, o->munmap(p, 4 * PG));
	D_CALL(log, o->munmap(q, 4 * PG));
	D_CALL(log, o->munmap(a, 4 * PG));
	D_CALL(log, o->munmap(s, 5 * PG));
	close(fd);
	close(fs);
}

DIFF_TEST(mmap_flags, locked)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 32);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_LOCKED, fd, 0);
	D_READ(log, p, 4 * PG);
	D_FILL(log, p + 3 * PG + 3, 'L', 30);
	D_CALL(log, o->msync(p, 4 * PG, MS_INVALIDATE));
	D_CALL(log, o->msync(p + PG, PG, MS_SYNC | MS_INVALIDATE));
	D_CALL(log, o->msync(p, 4 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 4 * PG);
	char *q = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_LOCKED, fd, 0);
	D_FILL(log, q, 'l', 10);
	D_READ(log, q, 4 * PG);
	D_CALL(log, o->msync(q, 4 * PG, MS_INVALIDATE));
	char *a = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_LOCKED, -1, 0);
	D_READ(log, a, 4 * PG);
	D_CALL(log, o->msync(a, 4 * PG, MS_INVALIDATE));
	/* The locked part of a split range. */
	D_CALL(log, o->munmap(p + PG, PG));
	D_CALL(log, o->msync(p + 2 * PG, 2 * PG, MS_INVALIDATE));
	D_CALL(log, o->munmap(p, 4 * PG));
	D_CALL(log, o->munmap(q, 4 * PG));
	D_CALL(log, o->munmap(a, 4 * PG));
	close(fd);
}

DIFF_TEST(mmap_flags, ignored_flags)
{
	static const int extra[] = {
		MAP_NORESERVE, MAP_DENYWRITE, MAP_EXECUTABLE, MAP_STACK,
		MAP_NONBLOCK, MAP_DENYWRITE | MAP_EXECUTABLE | MAP_NORESERVE,
		MAP_UNKNOWN_BIT,
	};
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 33);
	for (size_t i = 0; i < sizeof extra / sizeof *extra; i++) {
		for (int kind = 0; kind < DIFF_NKINDS; kind++) {
			char *p = D_MAP_KIND(log, o, kind, fd, 2 * PG,
					     PROT_READ | PROT_WRITE, extra[i]);
			D_READ(log, p, 2 * PG);
			D_FILL(log, p + PG + (int)i * 8 + kind, 0x30 + (int)i, 1);
			D_READ(log, p + PG, 64);
			D_CALL(log, o->munmap(p, 2 * PG));
		}
	}
	close(fd);
}

DIFF_TEST(mmap_flags, offset_into_file)
{
	int fd = diff_mkfile(log, dir, "f", 8 * PG, 34);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 2 * PG);
	D_READ(log, p, 3 * PG);
	D_FILL(log, p + PG, 'o', PG);
	char *q = D_MMAP(log, o, NULL, PG, PROT_READ, MAP_PRIVATE, fd, 3 * PG);
	D_READ(log, q, PG);
	D_CALL(log, o->munmap(p, 3 * PG));
	D_PREAD(log, fd, 0, 8 * PG);
	/* At or beyond the end of the file: mapping works, access SIGBUS. */
	char *r = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 8 * PG);
	T_PEEK(log, r + 10);
	char *s = D_MMAP(log, o, NULL, 2 * PG, PROT_READ, MAP_PRIVATE, fd,
			 100 * PG);
	T_PEEK(log, s + PG + 10);
	close(fd);
}

DIFF_TEST(mmap_flags, mapping_survives_close)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 35);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	char *q = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_CALL(log, close(fd));
	D_READ(log, p, 2 * PG);
	D_FILL(log, p + 77, 'c', 10);
	D_READ(log, q, 2 * PG);
	D_CALL(log, o->msync(p, 2 * PG, MS_SYNC));
	D_CALL(log, o->munmap(p, 2 * PG));
	D_CALL(log, o->munmap(q, 2 * PG));
	/* The file may even be unlinked while mapped. */
	fd = diff_mkfile(log, dir, "g", PG, 36);
	p = D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_CALL(log, close(fd));
	D_CALL(log, unlink(diff_path(dir, "g")));
	D_READ(log, p, PG);
	D_FILL(log, p, 'u', 10);
	D_READ(log, p, 20);
	D_CALL(log, o->msync(p, PG, MS_SYNC));
	D_CALL(log, o->munmap(p, PG));
}

/* ------------------------------------------------------ argument errors */

DIFF_TEST(mmap_args, zero_length)
{
	int fd = diff_mkfile(log, dir, "f", PG, 40);
	for (int kind = 0; kind < DIFF_NKINDS; kind++)
		D_MAP_KIND(log, o, kind, fd, 0, PROT_READ, 0);
	close(fd);
}

DIFF_TEST(mmap_args, unaligned_offset)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 41);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, fd, 100);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_PRIVATE, fd, PG + 1);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, fd, 2 * PG - 1);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 100);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED | MAP_ANONYMOUS, -1, 12);
	/* An unaligned length is rounded up. */
	char *p = D_MMAP(log, o, NULL, PG + 1, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_READ(log, p, 2 * PG);
	D_CALL(log, o->munmap(p, PG + 1));
	T_PEEK(log, p + PG);
	close(fd);
}

DIFF_TEST(mmap_args, mapping_type)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 42);
	/* Neither MAP_SHARED nor MAP_PRIVATE. */
	D_MMAP(log, o, NULL, PG, PROT_READ, 0, fd, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_ANONYMOUS, -1, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_POPULATE, fd, 0);
	/* Both bits: that is MAP_SHARED_VALIDATE. */
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_PRIVATE, fd, 0);
	T_POKE(log, p + 1, 'b');
	T_READ(log, p, 16);
	/* Other values of the type field. */
	D_MMAP(log, o, NULL, PG, PROT_READ, 0x04, fd, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, 0x0f, fd, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, 0x0f | MAP_ANONYMOUS, -1, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_DROPPABLE, fd, 0);
	/* Unknown protection bits. */
	D_MMAP(log, o, NULL, PG, 0x100 | PROT_READ, MAP_SHARED, fd, 0);
	D_MMAP(log, o, NULL, PG, 0x10 | PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
}

DIFF_TEST(mmap_args, bad_descriptors)
{
	int fd = diff_mkfile(log, dir, "f", PG, 43);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, -1, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_PRIVATE, -1, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, 987, 0);
	D_CALL(log, close(fd));
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_PRIVATE, fd, 0);
	/* A descriptor with MAP_ANONYMOUS is ignored. */
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ,
			 MAP_PRIVATE | MAP_ANONYMOUS, 987, 0);
	D_READ(log, p, 16);
	/* Files that cannot be mapped. */
	int dfd = D_FD(log, open(dir, O_RDONLY | O_DIRECTORY));
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, dfd, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_PRIVATE, dfd, 0);
	int pfd[2];
	D_CALL(log, pipe(pfd));
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, pfd[0], 0);
	D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, pfd[1], 0);
	int sv[2];
	D_CALL(log, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, sv[0], 0);
	close(dfd);
}

DIFF_TEST(mmap_args, devices_and_hugetlb)
{
	/* What ummap does not serve itself must behave as the kernel does
	 * (served by the kernel, or refused with the kernel's errno). */
	int z = D_FD(log, open("/dev/zero", O_RDWR));
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, z, 0);
	T_READ(log, p, 2 * PG);
	T_FILL(log, p + 5, 'z', 5);
	T_READ(log, p, 16);
	char *q = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, z, 0);
	T_READ(log, q, 2 * PG);
	int n = D_FD(log, open("/dev/null", O_RDWR));
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, n, 0);
	/* MAP_HUGETLB with no huge pages reserved: the kernel's answer. */
	char *h = D_MMAP(log, o, NULL, 2ul << 20, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
	(void)h;
	close(z);
	close(n);
}

DIFF_TEST(mmap_args, access_modes)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 44);
	close(fd);
	int wo = D_OPEN(log, dir, "f", O_WRONLY);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, wo, 0);
	D_MMAP(log, o, NULL, PG, PROT_WRITE, MAP_SHARED, wo, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_PRIVATE, wo, 0);
	D_MMAP(log, o, NULL, PG, PROT_NONE, MAP_SHARED, wo, 0);
	int ro = D_OPEN(log, dir, "f", O_RDONLY);
	D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, ro, 0);
	D_MMAP(log, o, NULL, PG, PROT_WRITE, MAP_SHARED_VALIDATE, ro, 0);
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, ro, 0);
	D_READ(log, p, PG);
	D_CALL(log, o->mprotect(p, PG, PROT_READ | PROT_WRITE));
	T_POKE(log, p + 8, 1);
	D_CALL(log, o->mprotect(p, PG, PROT_READ | PROT_EXEC));
	char *q = D_MMAP(log, o, NULL, PG, PROT_READ, MAP_PRIVATE, ro, 0);
	D_CALL(log, o->mprotect(q, PG, PROT_READ | PROT_WRITE));
	T_POKE(log, q + 8, 1);
	D_READ(log, q, 16);
	close(wo);
	close(ro);
}

DIFF_TEST(mmap_args, append)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 45);
	close(fd);
	/* An O_APPEND descriptor. */
	int ap = D_OPEN(log, dir, "f", O_RDWR | O_APPEND);
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED,
			 ap, 0);
	T_POKE(log, p + 3, 'a');
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, ap, 0);
	close(ap);
	/* An append-only file (chattr +a): a writable descriptor must
	 * be O_APPEND, and the kernel refuses to map it shared. */
	fd = D_OPEN(log, dir, "f", O_RDONLY);
	int flags = 0;
	D_CALL(log, ioctl(fd, FS_IOC_GETFLAGS, &flags));
	flags |= FS_APPEND_FL;
	D_CALL(log, ioctl(fd, FS_IOC_SETFLAGS, &flags));
	D_OPEN(log, dir, "f", O_RDWR);
	ap = D_OPEN(log, dir, "f", O_RDWR | O_APPEND);
	D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, ap, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, ap, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED_VALIDATE, ap, 0);
	p = D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, ap, 0);
	T_POKE(log, p + 4, 'p');
	T_READ(log, p, 8);
	p = D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
	T_READ(log, p, PG);
	D_CALL(log, o->mprotect(p, PG, PROT_READ | PROT_WRITE));
	flags &= ~FS_APPEND_FL;
	D_CALL(log, ioctl(fd, FS_IOC_SETFLAGS, &flags));
	close(ap);
	close(fd);
}

DIFF_TEST(mmap_args, offset_overflow)
{
	int fd = diff_mkfile(log, dir, "f", PG, 46);
	D_MMAP(log, o, NULL, 2 * PG, PROT_READ, MAP_SHARED, fd,
	       (off_t)0x7ffffffffffff000ll);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_PRIVATE, fd,
	       (off_t)0x7ffffffffffff000ll);
	D_MMAP(log, o, NULL, 1ul << 40, PROT_READ, MAP_SHARED, fd,
	       (off_t)0x7fffff0000000000ll);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, fd, (off_t)-4096);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_PRIVATE, fd, (off_t)-4096);
	/* The largest offset that still fits. */
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, fd,
			 (off_t)0x7fffffffffffe000ll);
	T_PEEK(log, p);
	close(fd);
}

DIFF_TEST(mmap_args, huge_length)
{
	int fd = diff_mkfile(log, dir, "f", PG, 47);
	static const size_t lens[] = {
		SIZE_MAX, SIZE_MAX - PG + 2, (size_t)1 << 62, (size_t)1 << 48,
		(size_t)1 << 47,
	};
	for (size_t i = 0; i < sizeof lens / sizeof *lens; i++)
		for (int kind = 0; kind < DIFF_NKINDS; kind++)
			D_MAP_KIND(log, o, kind, fd, lens[i], PROT_READ, 0);
	close(fd);
}
