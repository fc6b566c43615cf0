/*
 * test_diff_eof.c - the end of the file, kernel against ummap: SIGBUS
 * (BUS_ADRERR, si_addr the faulting byte) for pages wholly beyond EOF, the
 * zero tail of the last partial page whose writes never reach the file,
 * and growing and shrinking the file with o->ftruncate (ftruncate(2)
 * against um_ftruncate) while it is mapped.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "diff.h"

#define PG DIFF_PG

static void log_size(struct diff_log *log, int fd)
{
	struct stat st;
	fstat(fd, &st);
	D_VAL(log, st.st_size);
}

DIFF_TEST(eof, empty_file_sigbus_at_the_byte)
{
	int fd = D_OPEN(log, dir, "empty", O_RDWR | O_CREAT);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	T_POKE(log, p + 100, 'x');	   /* BUS_ADRERR at m0+0x64 */
	T_PEEK(log, p + PG + 7);	   /* m0+0x1007 */
	T_FILL(log, p + 2000, 'y', 100); /* at its first byte */
	char *q = D_MMAP(log, o, NULL, PG, PROT_READ, MAP_PRIVATE, fd, 0);
	T_PEEK(log, q + 4000);
	char *r = D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE,
			 fd, 0);
	T_POKE(log, r + 1, 'p'); /* a private write needs the page too */
	char *s = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_POPULATE, fd, 0);
	T_POKE(log, s + PG + 3, 'z');
	log_size(log, fd);
	D_CALL(log, o->munmap(p, 2 * PG));
	D_CALL(log, o->munmap(q, PG));
	D_CALL(log, o->munmap(r, PG));
	D_CALL(log, o->munmap(s, 2 * PG));
	close(fd);
}

DIFF_TEST(eof, sigbus_byte_addresses)
{
	int fd = diff_mkfile(log, dir, "f", PG, 1);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	T_POKE(log, p + 2 * PG + 777, 1);
	T_READ(log, p + 4 * PG - 1, 1);
	/* A read across EOF: the first bytes are read, the fault is at
	 * the first byte of page 1. */
	T_READ(log, p + PG - 2, 4);
	T_FILL(log, p + PG - 3, 'e', 6);
	D_READ(log, p + PG - 16, 16);
	D_CALL(log, o->msync(p, 4 * PG, MS_SYNC));
	D_CALL(log, o->munmap(p, 4 * PG));
	close(fd);
}

DIFF_TEST(eof, partial_last_page_shared)
{
	int fd = diff_mkfile(log, dir, "f", PG + 100, 2);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_READ(log, p, 2 * PG); /* 100 bytes of the file, then zeros */
	D_FILL(log, p + PG + 50, 'i', 10);   /* inside the file */
	D_FILL(log, p + PG + 200, 't', 300); /* in the tail */
	D_FILL(log, p + 2 * PG - 1, 'T', 1); /* last byte of the page */
	D_READ(log, p + PG, PG);
	T_PEEK(log, p + 2 * PG); /* the page after: SIGBUS */
	T_POKE(log, p + 2 * PG + 5, 1);
	D_CALL(log, o->msync(p, 3 * PG, MS_SYNC));
	log_size(log, fd);
	D_PREAD(log, fd, 0, 3 * PG); /* PG + 100 bytes, tail not there */
	D_READ(log, p + PG, 100);
	D_CALL(log, o->munmap(p, 3 * PG));
	close(fd);
}

DIFF_TEST(eof, partial_last_page_private)
{
	int fd = diff_mkfile(log, dir, "f", 2 * PG + 1, 3);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_READ(log, p + 2 * PG, PG);
	D_FILL(log, p + 2 * PG, 'a', PG); /* whole page, file byte too */
	D_READ(log, p + 2 * PG, PG);
	T_PEEK(log, p + 3 * PG + 1);
	D_CALL(log, o->munmap(p, 4 * PG));
	D_PREAD(log, fd, 0, 4 * PG);
	close(fd);
}

DIFF_TEST(eof, tail_write_not_seen_after_remap)
{
	/* Bytes stored past EOF in the last page are never written to the
	 * file; once written back and unmapped, a new mapping reads zeros
	 * there. */
	int fd = diff_mkfile(log, dir, "f", 1000, 4);
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED,
			 fd, 0);
	D_FILL(log, p + 10, 'h', 5);
	D_FILL(log, p + 1000, 'T', 3096);
	D_CALL(log, o->msync(p, PG, MS_SYNC));
	D_CALL(log, o->munmap(p, PG));
	D_PREAD(log, fd, 0, PG);
	p = D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, fd, 0);
	D_READ(log, p + 996, 8);
	D_READ(log, p, PG);
	D_CALL(log, o->munmap(p, PG));
	close(fd);
}

DIFF_TEST(eof, ftruncate_up_covers_new_pages)
{
	int fd = diff_mkfile(log, dir, "f", PG, 5);
	char *p = D_MMAP(log, o, NULL, 5 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	char *q = D_MMAP(log, o, NULL, 5 * PG, PROT_READ, MAP_PRIVATE, fd, 0);
	D_READ(log, p, PG);
	T_PEEK(log, p + 2 * PG + 1);
	T_PEEK(log, q + PG);
	D_CALL(log, o->ftruncate(fd, 3 * PG));
	log_size(log, fd);
	D_READ(log, p + PG, 2 * PG); /* zeros */
	D_READ(log, q + PG, 2 * PG);
	D_FILL(log, p + 2 * PG + 10, 'u', 20);
	D_READ(log, q + 2 * PG, 64); /* sees the shared write */
	T_PEEK(log, p + 3 * PG);
	/* Up to a partial page. */
	D_CALL(log, o->ftruncate(fd, 3 * PG + 10));
	D_READ(log, p + 3 * PG, PG);
	D_FILL(log, p + 3 * PG + 5, 'v', 10); /* 5 in the file, 5 in the tail */
	T_PEEK(log, p + 4 * PG);
	D_CALL(log, o->msync(p, 5 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 5 * PG);
	D_CALL(log, o->munmap(p, 5 * PG));
	D_CALL(log, o->munmap(q, 5 * PG));
	close(fd);
}

DIFF_TEST(eof, ftruncate_down_sigbus_beyond)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 6);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_READ(log, p, 4 * PG);
	D_FILL(log, p + 3 * PG + 1, 'd', 100); /* dirty, about to be cut */
	D_FILL(log, p + PG + 3000, 'D', 100);  /* dirty, half cut */
	D_CALL(log, o->ftruncate(fd, PG + PG / 2));
	log_size(log, fd);
	D_READ(log, p, PG);
	D_READ(log, p + PG, PG); /* zeros from 2048 on */
	T_PEEK(log, p + 2 * PG);
	T_POKE(log, p + 3 * PG + 5, 1);
	T_READ(log, p + 2 * PG - 8, 16);
	/* Grow it back: the cut pages come back as zeros. */
	D_CALL(log, o->ftruncate(fd, 4 * PG));
	D_READ(log, p + PG, 3 * PG);
	D_CALL(log, o->msync(p, 4 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 4 * PG);
	D_CALL(log, o->munmap(p, 4 * PG));
	close(fd);
}

DIFF_TEST(eof, ftruncate_down_private_and_second_mapping)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 7);
	char *s = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	char *q = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE, fd, 0);
	D_READ(log, q, 4 * PG);
	D_FILL(log, q + 3 * PG, 'c', 10); /* a private copy beyond the cut */
	D_FILL(log, q + 0, 'k', 10);	  /* a private copy before it */
	D_CALL(log, o->ftruncate(fd, 2 * PG));
	T_READ(log, q + 3 * PG, 16); /* the kernel drops private copies too */
	T_READ(log, q + 2 * PG, 16);
	T_READ(log, s + 2 * PG, 16);
	D_READ(log, q, 16);
	D_READ(log, s, 16);
	D_CALL(log, o->ftruncate(fd, 0));
	T_READ(log, q, 16);
	T_READ(log, s + 100, 16);
	D_CALL(log, o->ftruncate(fd, PG));
	T_READ(log, q, 16);
	T_READ(log, s, 16);
	D_CALL(log, o->munmap(s, 4 * PG));
	D_CALL(log, o->munmap(q, 4 * PG));
	close(fd);
}

DIFF_TEST(eof, file_grown_by_pwrite)
{
	int fd = diff_mkfile(log, dir, "f", PG, 8);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	T_PEEK(log, p + PG + 1);
	char buf[PG + 500];
	memset(buf, 'g', sizeof buf);
	D_PWRITE(log, fd, PG, buf, sizeof buf);
	D_READ(log, p + PG, 2 * PG);
	T_PEEK(log, p + 2 * PG + 500);
	D_CALL(log, o->munmap(p, 3 * PG));
	close(fd);
}

DIFF_TEST(eof, ftruncate_errors)
{
	int fd = diff_mkfile(log, dir, "f", PG, 9);
	close(fd);
	int ro = D_OPEN(log, dir, "f", O_RDONLY);
	D_CALL(log, o->ftruncate(ro, 0));
	int rw = D_OPEN(log, dir, "f", O_RDWR);
	D_CALL(log, o->ftruncate(rw, -1));
	D_CALL(log, o->ftruncate(-1, 0));
	D_CALL(log, o->ftruncate(987, 0));
	D_CALL(log, o->ftruncate(rw, 0x7fffffffffffffffll));
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED, rw, 0);
	D_CALL(log, o->ftruncate(ro, 0)); /* refused: the mapping keeps working */
	D_READ(log, p, PG);
	int dfd = D_FD(log, open(dir, O_RDONLY | O_DIRECTORY));
	D_CALL(log, o->ftruncate(dfd, 0));
	D_CALL(log, o->munmap(p, PG));
	close(ro);
	close(rw);
	close(dfd);
}

DIFF_TEST(eof, ftruncate_unaligned_shrink_and_grow)
{
	int fd = diff_mkfile(log, dir, "f", 3 * PG, 10);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, p + PG, 'x', PG); /* page 1 dirty throughout */
	D_CALL(log, o->ftruncate(fd, PG + 1234));
	D_READ(log, p + PG, PG); /* bytes past 1234 zeroed */
	D_CALL(log, o->ftruncate(fd, 2 * PG + 10));
	D_READ(log, p + PG, 2 * PG);
	D_FILL(log, p + 2 * PG, 'y', 20);
	D_CALL(log, o->msync(p, 3 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 3 * PG);
	D_CALL(log, o->munmap(p, 3 * PG));
	close(fd);
}

DIFF_TEST(eof, ftruncate_then_exit_without_munmap)
{
	/* Dirty pages, a shrink, more dirty pages, then exit: the file must
	 * hold what the kernel's page cache would. */
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 11);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	D_FILL(log, p + 3 * PG, 'a', PG);
	D_FILL(log, p, 'b', 10);
	D_CALL(log, o->ftruncate(fd, 2 * PG + 7));
	D_FILL(log, p + 2 * PG, 'c', 20); /* 7 in the file, 13 in the tail */
	D_FILL(log, p + PG, 'd', 10);
	close(fd);
}

DIFF_TEST(eof, ftruncate_up_zeroes_the_whole_old_tail)
{
	/* Bytes stored past EOF in the last page are not file data: a
	 * truncate that grows the file zeroes all of them, also those past
	 * the new size when it ends inside that page. */
	int fd = diff_mkfile(log, dir, "f", 100, 12);
	char *p = D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_FILL(log, p + 120, 'x', 100); /* bytes 120..219, past EOF */
	D_CALL(log, o->ftruncate(fd, 150));
	D_READ(log, p, PG);
	D_FILL(log, p + 300, 'y', 10); /* past EOF again */
	D_CALL(log, o->ftruncate(fd, 2 * PG));
	D_READ(log, p, PG);
	D_CALL(log, o->msync(p, PG, MS_SYNC));
	D_PREAD(log, fd, 0, PG);
	D_CALL(log, o->munmap(p, PG));
	close(fd);
}

DIFF_TEST(eof, file_renamed_over_while_mapped)
{
	/* A mapping keeps the inode it mapped: renaming another file over
	 * the name changes nothing for it, and a new mapping of the name
	 * maps the new inode. */
	int fd = diff_mkfile(log, dir, "f", 2 * PG, 13);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_FILL(log, p + 10, 'o', 20);
	int gd = diff_mkfile(log, dir, "g", PG, 14);
	D_CALL(log, rename(diff_path(dir, "g"), diff_path(dir, "f")));
	D_READ(log, p, 64);
	int nd = D_OPEN(log, dir, "f", O_RDWR);
	char *q = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, nd, 0);
	D_READ(log, q, 64);
	T_PEEK(log, q + PG + 1); /* the new file has one page */
	D_FILL(log, q + 5, 'n', 5);
	D_CALL(log, o->msync(p, 2 * PG, MS_SYNC));
	D_FILE(log, fd); /* the old inode, unlinked, still open */
	D_CALL(log, o->munmap(p, 2 * PG));
	D_CALL(log, o->munmap(q, 2 * PG));
	D_FILE(log, nd);
	close(fd);
	close(gd);
	close(nd);
}
