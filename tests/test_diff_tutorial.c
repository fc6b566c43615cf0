/*
 * test_diff_tutorial.c - the tutorial's three programs, kernel against ummap.
 *
 * 1. An anonymous private mapping holds "hello ksy".
 * 2. A shared mapping of the new, empty a.txt: the first write raises
 *    SIGBUS (BUS_ADRERR, si_addr the byte written) - once caught and
 *    survived, once fatal.
 * 3. a.txt truncated to 1024 bytes, mapped shared for 4096, "helloworld"
 *    copied in, the descriptor closed, and main returns without munmap or
 *    msync: the file must hold helloworld (the parent reads it after the
 *    child's exit, so ummap's writeback at exit is what is compared).
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "diff.h"

DIFF_TEST(tutorial, hello_ksy_anonymous)
{
	char *p = D_MMAP(log, o, NULL, 4096, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_READ(log, p, 4096); /* zero-filled */
	D_WRITE(log, p, "hello ksy", sizeof "hello ksy");
	D_READ(log, p, 4096);
	D_VAL(log, strcmp(p, "hello ksy"));
	D_CALL(log, o->munmap(p, 4096));
}

/* The tutorial writes byte by byte; the first store is to p[0]. */
static void write_hello(struct diff_log *log, char *p)
{
	D_WRITE(log, p, "helloworld", 10);
}

DIFF_TEST(tutorial, empty_file_sigbus_caught)
{
	int fd = D_OPEN(log, dir, "a.txt", O_RDWR | O_CREAT | O_EXCL);
	char *p = D_MMAP(log, o, NULL, 4096, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	DIFF_TRY(log) write_hello(log, p);
	/* A store in the middle of the page reports that byte. */
	DIFF_TRY(log) D_POKE(log, p + 1234, 'x');
	DIFF_TRY(log) D_PEEK(log, p + 4095);
	D_CALL(log, o->munmap(p, 4096));
	D_CALL(log, close(fd));
}

DIFF_TEST(tutorial, empty_file_sigbus_fatal)
{
	/* As the tutorial runs it: no handler of its own, the process dies
	 * (the harness logs the signal and ends the child). */
	int fd = D_OPEN(log, dir, "a.txt", O_RDWR | O_CREAT | O_EXCL);
	char *p = D_MMAP(log, o, NULL, 4096, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	write_hello(log, p);
	D_NOTE(log, "not reached");
}

DIFF_TEST(tutorial, truncate_helloworld_no_munmap)
{
	int fd = D_OPEN(log, dir, "a.txt", O_RDWR | O_CREAT);
	D_CALL(log, truncate(diff_path(dir, "a.txt"), 1024));
	char *p = D_MMAP(log, o, NULL, 4096, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	strcpy(p, "helloworld");
	D_NOTE(log, "strcpy done");
	D_CALL(log, close(fd));
	D_READ(log, p, 1024);
	/* Return without munmap or msync: exit(0) in the harness. */
}

DIFF_TEST(tutorial, truncate_helloworld_existing_file)
{
	/* a.txt already holds data: the first 10 bytes are overwritten, the
	 * rest of the 1024 stays, the bytes beyond 1024 are cut. */
	int fd = diff_mkfile(log, dir, "a.txt", 3000, 7);
	D_CALL(log, close(fd));
	fd = D_OPEN(log, dir, "a.txt", O_RDWR);
	D_CALL(log, ftruncate(fd, 1024));
	char *p = D_MMAP(log, o, NULL, 4096, PROT_READ | PROT_WRITE,
			 MAP_SHARED, fd, 0);
	strcpy(p, "helloworld");
	D_CALL(log, close(fd));
	D_READ(log, p, 1024);
	DIFF_TRY(log) D_PEEK(log, p + 4096 - 1); /* tail of the page: zero */
}
