/*
 * test_diff_syscalls.c - mapped memory as a system call buffer, kernel
 * against ummap.  read(2)/pread(2)/readv(2) into a mapped range and
 * write(2)/pwrite(2)/send(2)/writev(2) from one, on pages never touched
 * before, must succeed with the same bytes (no EFAULT); ranges the
 * protection or the end of the file forbid must fail (or come up short)
 * the same way.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "diff.h"

#define PG DIFF_PG

/* Logs ret/errno and the first ret bytes of buf. */
#define D_GOT(log, what, ret, buf)                                           \
	diff_log_bytes((log), DK_IO, __LINE__, what, (long long)(ret), errno,   \
		       (buf), (ret) > 0 ? (size_t)(ret) : 0)

DIFF_TEST(syscalls, read_into_untouched_mapping)
{
	int src = diff_mkfile(log, dir, "src", 3 * PG, 1);
	int dst = diff_mkfile(log, dir, "dst", 4 * PG, 2);
	for (int kind = 0; kind < DIFF_NKINDS; kind++) {
		char *p = D_MAP_KIND(log, o, kind, dst, 4 * PG,
				     PROT_READ | PROT_WRITE, 0);
		D_CALL(log, lseek(src, 0, SEEK_SET));
		D_CALL(log, read(src, p + 100, 3 * PG));
		D_READ(log, p, 4 * PG);
		if (kind == DIFF_FILE_SHARED) {
			D_CALL(log, o->msync(p, 4 * PG, MS_SYNC));
			D_PREAD(log, dst, 0, 4 * PG);
		}
		/* pread into the last page only, at an odd offset. */
		D_CALL(log, pread(src, p + 3 * PG + 1, PG - 1, 5));
		D_READ(log, p + 3 * PG, PG);
		D_CALL(log, o->munmap(p, 4 * PG));
	}
	close(src);
	close(dst);
}

DIFF_TEST(syscalls, read_large_into_untouched_file_mapping)
{
	/* 64 pages copied by one read(2): many faults inside one call. */
	size_t len = 64 * PG;
	int src = diff_mkfile(log, dir, "src", len, 3);
	int dst = diff_mkfile(log, dir, "dst", len, 4);
	char *p = D_MMAP(log, o, NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED,
			 dst, 0);
	D_CALL(log, read(src, p, len));
	D_READ(log, p, len);
	D_CALL(log, o->munmap(p, len));
	D_PREAD(log, dst, 0, len);
	/* And from the mapping out, into another file, untouched. */
	p = D_MMAP(log, o, NULL, len, PROT_READ, MAP_PRIVATE, src, 0);
	int out = D_OPEN(log, dir, "out", O_RDWR | O_CREAT | O_TRUNC);
	D_CALL(log, write(out, p, len));
	D_PREAD(log, out, 0, len);
	close(src);
	close(dst);
	close(out);
}

DIFF_TEST(syscalls, write_pwrite_send_from_untouched_mapping)
{
	int src = diff_mkfile(log, dir, "src", 3 * PG, 5);
	int out = D_OPEN(log, dir, "out", O_RDWR | O_CREAT | O_TRUNC);
	int sv[2];
	D_CALL(log, socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	static char buf[4 * PG];
	for (int kind = 0; kind < DIFF_NKINDS; kind++) {
		D_NOTE(log, "%s", diff_kind_names[kind]);
		char *p = D_MAP_KIND(log, o, kind, src, 3 * PG, PROT_READ, 0);
		D_CALL(log, write(out, p + 10, 2 * PG + 5));
		D_CALL(log, pwrite(out, p + PG, PG, 3 * PG));
		D_PREAD(log, out, 0, 4 * PG);
		D_CALL(log, o->munmap(p, 3 * PG));
		p = D_MAP_KIND(log, o, kind, src, 3 * PG, PROT_READ, 0);
		D_CALL(log, send(sv[0], p + 1, 3 * PG - 2, 0));
		ssize_t got = 0, r;
		while (got < (ssize_t)(3 * PG - 2) &&
		       (r = recv(sv[1], buf + got, sizeof buf - (size_t)got,
				 0)) > 0)
			got += r;
		D_GOT(log, "recv", got, buf);
		D_CALL(log, o->munmap(p, 3 * PG));
		D_CALL(log, ftruncate(out, 0));
		D_CALL(log, lseek(out, 0, SEEK_SET));
	}
	close(src);
	close(out);
	close(sv[0]);
	close(sv[1]);
}

DIFF_TEST(syscalls, readv_writev_across_mappings)
{
	int a = diff_mkfile(log, dir, "a", 2 * PG, 6);
	int b = diff_mkfile(log, dir, "b", 2 * PG, 7);
	char *pa = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			  MAP_SHARED, a, 0);
	char *pb = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE, b, 0);
	char *pc = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int out = D_OPEN(log, dir, "out", O_RDWR | O_CREAT | O_TRUNC);
	struct iovec w[3] = {
		{ pa + PG - 7, 300 }, { pb + 5, PG + 3 }, { pc + PG, 50 },
	};
	D_CALL(log, writev(out, w, 3));
	D_PREAD(log, out, 0, 2 * PG);
	struct iovec rv[3] = {
		{ pc + 3, 200 }, { pa + PG + 1, 1000 }, { pb + PG, 2000 },
	};
	D_CALL(log, preadv(out, rv, 3, 0));
	D_READ(log, pa, 2 * PG);
	D_READ(log, pb, 2 * PG);
	D_READ(log, pc, 2 * PG);
	D_CALL(log, o->msync(pa, 2 * PG, MS_SYNC));
	D_PREAD(log, a, 0, 2 * PG);
	close(a);
	close(b);
	close(out);
}

DIFF_TEST(syscalls, read_file_into_its_own_mapping)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 8);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	/* Page 0 of the file into page 2, through the mapping. */
	D_CALL(log, pread(fd, p + 2 * PG, PG, 0));
	D_READ(log, p + 2 * PG, PG);
	/* The mapping's page 3 (untouched) out to the file at page 1. */
	D_CALL(log, o->msync(p, 4 * PG, MS_SYNC));
	D_CALL(log, pwrite(fd, p + 3 * PG, PG, PG));
	D_CALL(log, o->msync(p, 4 * PG, MS_INVALIDATE));
	D_READ(log, p, 4 * PG);
	D_CALL(log, o->munmap(p, 4 * PG));
	D_PREAD(log, fd, 0, 4 * PG);
	close(fd);
}

DIFF_TEST(syscalls, efault_protection_and_holes)
{
	int src = diff_mkfile(log, dir, "src", 2 * PG, 9);
	int out = D_OPEN(log, dir, "out", O_RDWR | O_CREAT | O_TRUNC);
	/* Into a read-only mapping: EFAULT, nothing changes. */
	char *ro = D_MMAP(log, o, NULL, 2 * PG, PROT_READ, MAP_SHARED, src, 0);
	D_CALL(log, pread(src, ro, PG, PG));
	D_READ(log, ro, 2 * PG);
	/* From PROT_NONE: EFAULT. */
	char *none = D_MMAP(log, o, NULL, 2 * PG, PROT_NONE, MAP_SHARED, src, 0);
	D_CALL(log, write(out, none, 100));
	D_CALL(log, o->mprotect(none, PG, PROT_READ));
	D_CALL(log, write(out, none + PG - 100, 200)); /* short: 100 */
	D_PREAD(log, out, 0, PG);
	/* Into an unmapped hole. */
	D_CALL(log, o->munmap(ro + PG, PG));
	D_CALL(log, pread(src, ro + PG, 10, 0));
	D_CALL(log, write(out, ro + PG - 10, 20)); /* short: 10 */
	D_PREAD(log, out, 0, PG);
	close(src);
	close(out);
}

DIFF_TEST(syscalls, efault_beyond_eof)
{
	/* A buffer reaching past the end of a mapped file: the kernel copies
	 * the bytes before the end and returns a short count (or EFAULT if
	 * there are none), and raises no signal.  Each call is inside a
	 * DIFF_TRY so that a signal is logged rather than fatal. */
	int src = diff_mkfile(log, dir, "src", 2 * PG, 12);
	int out = D_OPEN(log, dir, "out", O_RDWR | O_CREAT | O_TRUNC);
	int small = diff_mkfile(log, dir, "small", PG + 100, 10);
	char *s = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED, small, 0);
	DIFF_TRY(log) D_CALL(log, pwrite(out, s + PG, 2 * PG, 0));
	DIFF_TRY(log) D_CALL(log, pwrite(out, s + 2 * PG, 100, 0));
	D_PREAD(log, out, 0, 3 * PG);
	DIFF_TRY(log) D_CALL(log, pread(src, s + 2 * PG - 10, 100, 0));
	DIFF_TRY(log) D_CALL(log, pread(src, s + 2 * PG, 100, 0));
	D_READ(log, s + PG, PG);
	D_CALL(log, o->msync(s, 3 * PG, MS_SYNC));
	close(src);
	close(out);
	close(small);
}

DIFF_TEST(syscalls, pipe_round_trip)
{
	int src = diff_mkfile(log, dir, "src", 2 * PG, 11);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ, MAP_PRIVATE, src, 0);
	char *q = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int fds[2];
	D_CALL(log, pipe(fds));
	D_CALL(log, write(fds[1], p + 123, PG + 77));
	D_CALL(log, read(fds[0], q + 1, 2 * PG - 1));
	D_READ(log, q, 2 * PG);
	close(fds[0]);
	close(fds[1]);
	close(src);
}
