/*
 * test_diff_procs.c - several processes at once, kernel against ummap: the
 * harness forks the scenario's processes before either side's calls are
 * used, so each starts ummap on its own as unrelated processes do; D_SYNC
 * orders their steps.
 *
 * Processes that map one file share its cache, as with the kernel's page
 * cache: a store is seen by the others at once, without msync; atomics and
 * a process-shared mutex placed in the file work across processes; a
 * private mapping sees others' stores on the pages it has not written.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "diff.h"
#include "ummap.h"

#define PG DIFF_PG
#define um_pgdown_(x) ((x) & ~(PG - 1))

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

DIFF_TEST_PROCS(procs, stores_are_seen_at_once, 3)
{
	/* Each process in turn stores into a page, then the others read it:
	 * no msync, no munmap in between. */
	int fd = shared_file(log, dir, 4 * PG);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_READ(log, p, 4 * PG); /* every page cached and mapped read-only first */
	for (int turn = 0; turn < 3; turn++) {
		D_SYNC(log);
		if (diff_me() == turn)
			D_PATTERN(log, p + (size_t)turn * PG + 7, 2000, 90 + (unsigned)turn);
		D_SYNC(log);
		D_READ(log, p, 4 * PG);
	}
	D_SYNC(log);
	D_CALL(log, o->munmap(p, 4 * PG));
	D_SYNC(log);
	if (diff_me() == 0)
		D_PREAD(log, fd, 0, 4 * PG);
	close(fd);
}

DIFF_TEST_PROCS(procs, writeback_of_one_keeps_the_next_store_of_another, 2)
{
	/* Process 0 syncs the page (cleaning it) after process 1 stored into
	 * it; process 1's next store must reach the file with its own msync. */
	int fd = shared_file(log, dir, 2 * PG);
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_READ(log, p, 2 * PG);
	D_SYNC(log);
	if (diff_me() == 1)
		D_FILL(log, p + 10, 'x', 100);
	D_SYNC(log);
	if (diff_me() == 0)
		D_CALL(log, o->msync(p, 2 * PG, MS_SYNC));
	D_SYNC(log);
	if (diff_me() == 1) {
		D_FILL(log, p + 200, 'y', 100);
		D_CALL(log, o->msync(p, 2 * PG, MS_SYNC));
	}
	D_SYNC(log);
	D_PREAD(log, fd, 0, 2 * PG);
	D_SYNC(log);
	D_CALL(log, o->munmap(p, 2 * PG));
	close(fd);
}

/* Each of the processes adds ROUNDS to a counter in the file, under a
 * process-shared mutex placed in the mapping, and to a C11 atomic. */
#define ROUNDS 20000
struct in_file {
	pthread_mutex_t lock;
	long plain;
	atomic_long atomic;
};

static void counters(const struct mm_ops *o, struct diff_log *log, const char *dir, int nproc)
{
	int fd = shared_file(log, dir, PG);
	struct in_file *f = (void *)D_MMAP(log, o, NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (diff_me() == 0) {
		pthread_mutexattr_t a;
		pthread_mutexattr_init(&a);
		pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
		pthread_mutex_init(&f->lock, &a);
		f->plain = 0;
		atomic_init(&f->atomic, 0);
	}
	D_SYNC(log);
	for (int i = 0; i < ROUNDS; i++) {
		pthread_mutex_lock(&f->lock);
		f->plain++;
		pthread_mutex_unlock(&f->lock);
		atomic_fetch_add(&f->atomic, 1);
	}
	D_SYNC(log);
	D_VAL(log, f->plain);
	D_VAL(log, atomic_load(&f->atomic));
	D_SYNC(log);
	D_CALL(log, o->munmap(f, PG));
	D_SYNC(log);
	if (diff_me() == 0)
		D_PREAD(log, fd, offsetof(struct in_file, plain), 2 * sizeof(long));
	close(fd);
}

DIFF_TEST_PROCS(procs, mutex_and_atomic_counter_in_the_file, 4)
{
	counters(o, log, dir, 4);
}

DIFF_TEST_PROCS(procs, private_mapping_sees_shared_stores_until_written, 2)
{
	/* Process 1 maps privately and writes page 1 only; process 0 then
	 * stores into pages 0 and 1 through a shared mapping.  Process 1 sees
	 * the store to page 0, and its own copy of page 1. */
	int fd = shared_file(log, dir, 2 * PG);
	int priv = diff_me() == 1;
	char *p = D_MMAP(log, o, NULL, 2 * PG, PROT_READ | PROT_WRITE, priv ? MAP_PRIVATE : MAP_SHARED, fd, 0);
	D_READ(log, p, 2 * PG);
	if (priv)
		D_FILL(log, p + PG + 50, 'c', 20);
	D_SYNC(log);
	if (!priv) {
		D_FILL(log, p + 40, 's', 30);
		D_FILL(log, p + PG + 40, 's', 30);
	}
	D_SYNC(log);
	D_READ(log, p, 2 * PG);
	D_SYNC(log);
	D_CALL(log, o->munmap(p, 2 * PG));
	close(fd);
}

DIFF_TEST_PROCS(procs, truncation_by_one_is_seen_by_the_other_at_once, 2)
{
	/* Process 0 shrinks the file to a page and a bit; process 1, which
	 * had every page mapped, gets SIGBUS beyond the new last page and
	 * zeros past the end within it, at once. */
	int fd = shared_file(log, dir, 3 * PG);
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_READ(log, p, 3 * PG);
	D_SYNC(log);
	if (diff_me() == 0)
		D_CALL(log, o->ftruncate(fd, PG + 100));
	D_SYNC(log);
	if (diff_me() == 1) {
		T_PEEK(log, p + 2 * PG + 8);
		D_READ(log, p + PG, PG);
	}
	D_SYNC(log);
	D_CALL(log, o->munmap(p, 3 * PG));
	close(fd);
}

/*
 * A random walk over one shared file by three processes, the same on both
 * sides: every process draws the same numbers, so all know who acts and
 * what the file's size is.  At each step one process stores through its
 * shared mapping, syncs, advises MADV_DONTNEED, touches a page that may lie
 * beyond the end (SIGBUS is compared), or (process 0 only, which also has a
 * private mapping: other processes' private copies beyond a truncation are
 * a known difference) stores privately or truncates the file; then every
 * process reads the same range of its shared mapping.  At the end the file
 * is compared.  PROCS_FUZZ_SEED and PROCS_FUZZ_STEPS pick another walk.
 */
#define WALK_PAGES 16

static uint64_t walk_next(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static uint64_t env_or(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	return v && *v ? strtoull(v, NULL, 0) : dflt;
}

/* (In functions of their own: sigsetjmp would clobber the walk's state.) */
static void walk_peek(struct diff_log *log, char *a)
{
	T_PEEK(log, a);
}

static void walk_read(struct diff_log *log, char *a, uint64_t n)
{
	T_READ(log, a, n);
}

static void random_walk(const struct mm_ops *o, struct diff_log *log, const char *dir, int nproc, uint64_t budget)
{
	if (budget) {
		struct um_config c = { .budget = budget, .writeback_ms = 10 };
		um_configure(&c); /* (only ummap's side pages through it) */
	}
	uint64_t x = env_or("PROCS_FUZZ_SEED", 3) * 0x9E3779B97F4A7C15ull | 1;
	uint64_t steps = env_or("PROCS_FUZZ_STEPS", 400), size = 8 * PG, len = WALK_PAGES * PG;
	int fd = shared_file(log, dir, size);
	char *s = D_MMAP(log, o, NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	char *p = diff_me() == 0 ? D_MMAP(log, o, NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0) : NULL;
	for (uint64_t step = 0; step < steps; step++) {
		int who = (int)(walk_next(&x) % (uint64_t)nproc), op = (int)(walk_next(&x) % 100);
		uint64_t off = size ? walk_next(&x) % size : 0;
		uint64_t n = size ? 1 + walk_next(&x) % (size - off < 3 * PG ? size - off : 3 * PG) : 0;
		uint64_t r1 = walk_next(&x), r2 = walk_next(&x);
		if (op >= 75 && who != 0)
			op = (int)(r1 % 75); /* private stores and truncation: process 0's */
		if (diff_me() == who && n) {
			if (op < 45)
				D_PATTERN(log, s + off, n, (unsigned)step);
			else if (op < 55)
				D_CALL(log, o->msync(s, len, MS_SYNC));
			else if (op < 65)
				D_CALL(log, o->madvise(s + um_pgdown_(off), PG, MADV_DONTNEED));
			else if (op < 75)
				walk_peek(log, s + (r1 % WALK_PAGES) * PG + r2 % PG);
			else if (op < 90)
				D_PATTERN(log, p + off, n, (unsigned)step + 1000);
		}
		if (op >= 90) {
			/* Process 0 truncates; all learn the new size. */
			uint64_t ns = (1 + r1 % WALK_PAGES) * PG - (r2 % 2 ? r2 % 1000 : 0);
			if (diff_me() == 0)
				D_CALL(log, o->ftruncate(fd, (off_t)ns));
			size = ns;
		}
		D_SYNC(log);
		uint64_t roff = size ? r2 % size : 0, rlen = size - roff < 2 * PG ? size - roff : 2 * PG;
		if (rlen)
			walk_read(log, s + roff, rlen);
		if (p && rlen)
			walk_read(log, p + roff, rlen);
		D_SYNC(log);
	}
	D_CALL(log, o->msync(s, len, MS_SYNC));
	D_SYNC(log);
	D_CALL(log, o->munmap(s, len));
	if (p)
		D_CALL(log, o->munmap(p, len));
	D_SYNC(log);
	if (diff_me() == 0)
		D_PREAD(log, fd, 0, size);
	close(fd);
}

DIFF_TEST_PROCS(procs, random_walk_of_three, 3)
{
	random_walk(o, log, dir, 3, 0);
}

DIFF_TEST_PROCS(procs, random_walk_of_three_under_64k_budgets, 3)
{
	random_walk(o, log, dir, 3, 64 << 10);
}
