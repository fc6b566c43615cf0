/*
 * test_diff_procs.c - several processes at once, kernel against ummap: the
 * harness forks the scenario's processes before either side's calls are
 * used, so each starts ummap on its own as unrelated processes do; D_SYNC
 * orders their steps.
 *
 * These scenarios hold while every process has a cache of its own: no
 * process reads what another stores until that reached the file.  Sharing
 * one cache between processes (seeing each other's stores at once) is the
 * work of issue 2/5, whose scenarios come with it.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "diff.h"

#define PG DIFF_PG

/* Process 0 makes the file; the others open it once it exists. */
static int shared_file(struct diff_log *log, const char *dir, size_t size)
{
	int fd = -1;
	if (diff_me() == 0)
		fd = diff_mkfile(log, dir, "f", size, 60);
	D_SYNC(log);
	if (diff_me() != 0)
		fd = D_OPEN(log, dir, "f", O_RDWR);
	return fd;
}

static void disjoint_writers(const struct mm_ops *o, struct diff_log *log, const char *dir, int nproc)
{
	/* Each process stores into its own page of one shared mapping and
	 * unmaps; then process 0 reads the file: every store is there. */
	int fd = shared_file(log, dir, (size_t)nproc * PG);
	char *p = D_MMAP(log, o, NULL, (size_t)nproc * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_READ(log, p + (size_t)diff_me() * PG, 64);
	D_PATTERN(log, p + (size_t)diff_me() * PG + 100, 1000, 70 + (unsigned)diff_me());
	D_READ(log, p + (size_t)diff_me() * PG, PG);
	D_SYNC(log);
	D_CALL(log, o->munmap(p, (size_t)nproc * PG));
	D_SYNC(log);
	if (diff_me() == 0)
		D_PREAD(log, fd, 0, (size_t)nproc * PG);
	close(fd);
}

DIFF_TEST_PROCS(procs, two_disjoint_writers, 2)
{
	disjoint_writers(o, log, dir, 2);
}

DIFF_TEST_PROCS(procs, eight_disjoint_writers, 8)
{
	disjoint_writers(o, log, dir, 8);
}

DIFF_TEST_PROCS(procs, each_ends_its_own_way, 3)
{
	/* Stores reach the file whether the process returns from main
	 * without unmapping, unmaps, or syncs and calls _exit. */
	int fd = shared_file(log, dir, 3 * PG);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_FILL(log, p + (size_t)diff_me() * PG + 10, 'a' + diff_me(), 300);
	D_SYNC(log);
	if (diff_me() == 1)
		D_CALL(log, o->munmap(p, 3 * PG));
	if (diff_me() == 2) {
		D_CALL(log, o->msync(p, 3 * PG, MS_SYNC));
		_exit(0);
	}
}

DIFF_TEST_PROCS(procs, private_and_shared_mappers, 3)
{
	/* One process writes through a shared mapping, one through a
	 * private one (never reaching the file), one grows the file with
	 * um_ftruncate before the others map it. */
	int fd = shared_file(log, dir, 2 * PG);
	if (diff_me() == 2)
		D_CALL(log, o->ftruncate(fd, 4 * PG));
	D_SYNC(log);
	int priv = diff_me() == 1;
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, priv ? MAP_PRIVATE : MAP_SHARED, fd, 0);
	D_FILL(log, p + (size_t)diff_me() * PG + 5, priv ? 'p' : 's', 100);
	D_READ(log, p + (size_t)diff_me() * PG, PG);
	T_PEEK(log, p + 4 * PG - 1);
	D_CALL(log, o->munmap(p, 4 * PG));
	D_SYNC(log);
	D_PREAD(log, fd, 0, 4 * PG);
	close(fd);
}
