/*
 * test_fork.c - a fork storm: the main thread forks again and again while
 * two other threads keep faulting and storing, and (under a budget of a
 * third of the memory they touch) ummap keeps evicting and swapping.
 *
 * Each worker thread owns one 8-byte counter in every page of a private
 * and of a shared anonymous mapping, and one in every page of a shared file
 * mapping; it picks pages at random, increments its counters there and
 * counts the increments it made.  Each child sums its copy of the private
 * counters, per thread, and sends the sums back, adds one to a counter of
 * its own in the shared mapping, and exits.  At the end:
 *  - every counter holds exactly what its thread counted (no store lost to
 *    a fork, an eviction or a swap-out racing with it);
 *  - the children's sums never decrease from one fork to the next and never
 *    exceed the final sums (each child saw a snapshot, not pages from
 *    after its fork nor stale ones);
 *  - the shared counter of the children is the number of children;
 *  - the file holds the file counters after munmap;
 *  - no cache object (memfd, swap file) is left open once all is unmapped.
 * Bounded by counts (FORKS forks, ROUNDS increments per thread), not time.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fds.h"
#include "ummap.h"

#define MiB (1UL << 20)
#define PG 4096UL
#define SIZE (8 * MiB)
#define PAGES (SIZE / PG)
#define FILE_SIZE (2 * MiB)
#define FPAGES (FILE_SIZE / PG)
#define THREADS 2
#define FORKS 40
#define ROUNDS 40000

static uint64_t *priv, *shar, *file;
static uint32_t counts[THREADS][PAGES], fcounts[THREADS][FPAGES];
static int progress; /* thread 0's increments so far */

/* Thread t's counter in page p of a mapping. */
static volatile uint64_t *slot(uint64_t *m, uint64_t p, int t)
{
	return &m[p * (PG / 8) + (uint64_t)t];
}

static void *worker(void *arg)
{
	int t = (int)(intptr_t)arg;
	uint32_t x = 7u + (uint32_t)t * 7919u;
	for (int i = 0; i < ROUNDS; i++) {
		x = x * 1103515245u + 12345u;
		uint64_t p = (x >> 8) % PAGES;
		(*slot(priv, p, t))++;
		(*slot(shar, p, t))++;
		counts[t][p]++;
		uint64_t f = (x >> 4) % FPAGES;
		(*slot(file, f, t))++;
		fcounts[t][f]++;
		if (t == 0)
			__atomic_store_n(&progress, i + 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void child(int out)
{
	uint64_t sums[THREADS] = { 0 };
	for (uint64_t p = 0; p < PAGES; p++)
		for (int t = 0; t < THREADS; t++)
			sums[t] += *slot(priv, p, t);
	__atomic_fetch_add(slot(shar, 0, THREADS), 1, __ATOMIC_SEQ_CST);
	/* The child's own: the parent must not see it. */
	*slot(priv, 1, THREADS) = 0xc0ffee;
	_exit(write(out, sums, sizeof sums) == sizeof sums ? 0 : 1);
}

Test(fork, storm_while_threads_fault)
{
	struct um_config cfg = { .budget = 6 * MiB };
	cr_assert(um_configure(&cfg) == 0);
	int before = fds_ummap_objects();
	char path[] = "/tmp/ummap-fork.XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0 && ftruncate(fd, FILE_SIZE) == 0);
	priv = um_mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	shar = um_mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	file = um_mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(priv != MAP_FAILED && shar != MAP_FAILED && file != MAP_FAILED);

	pthread_t th[THREADS];
	for (int t = 0; t < THREADS; t++)
		cr_assert(pthread_create(&th[t], NULL, worker, (void *)(intptr_t)t) == 0);
	uint64_t seen[FORKS][THREADS];
	int children = 0;
	for (int k = 0; k < FORKS; k++) {
		/* Forks spread over the threads' run. */
		while (__atomic_load_n(&progress, __ATOMIC_RELAXED) < k * (ROUNDS / FORKS))
			usleep(100);
		int p[2];
		cr_assert(pipe(p) == 0);
		pid_t pid = fork();
		cr_assert(pid >= 0);
		if (pid == 0)
			child(p[1]);
		close(p[1]);
		int st;
		cr_assert(read(p[0], seen[k], sizeof seen[k]) == sizeof seen[k], "child %d sent nothing", k);
		cr_assert(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
			  "child %d: status %#x", k, st);
		close(p[0]);
		children++;
	}
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);

	uint64_t final[THREADS] = { 0 };
	for (uint64_t p = 0; p < PAGES; p++)
		for (int t = 0; t < THREADS; t++) {
			uint64_t v = *slot(priv, p, t), s = *slot(shar, p, t);
			if (v != counts[t][p] || s != counts[t][p])
				cr_assert_fail("page %lu thread %d: private %lu, shared %lu, counted %u", p, t, v, s,
					       counts[t][p]);
			final[t] += v;
		}
	for (int k = 0; k < FORKS; k++)
		for (int t = 0; t < THREADS; t++) {
			cr_expect(seen[k][t] <= final[t], "child %d saw %lu increments of thread %d, %lu in all", k,
				  seen[k][t], t, final[t]);
			if (k)
				cr_expect(seen[k][t] >= seen[k - 1][t], "child %d saw fewer increments than child %d", k,
					  k - 1);
		}
	cr_expect(*slot(shar, 0, THREADS) == (uint64_t)children, "children's shared counter %lu, %d children",
		  *slot(shar, 0, THREADS), children);
	cr_expect(*slot(priv, 1, THREADS) == 0, "a child's private store reached the parent");
	cr_assert(um_munmap(file, FILE_SIZE) == 0);
	uint64_t *disk = malloc(FILE_SIZE);
	cr_assert(pread(fd, disk, FILE_SIZE, 0) == (ssize_t)FILE_SIZE);
	for (uint64_t f = 0; f < FPAGES; f++)
		for (int t = 0; t < THREADS; t++)
			if (*slot(disk, f, t) != fcounts[t][f])
				cr_assert_fail("file page %lu thread %d: %lu on disk, counted %u", f, t, *slot(disk, f, t),
					       fcounts[t][f]);
	free(disk);
	cr_assert(um_munmap(priv, SIZE) == 0 && um_munmap(shar, SIZE) == 0);
	close(fd);
	unlink(path);
	cr_expect(fds_ummap_objects() == before, "cache objects left open: %d, %d before", fds_ummap_objects(), before);
	cr_log_info("%d forks while 2 threads made %d increments each; first child saw %lu+%lu, last %lu+%lu",
		    children, ROUNDS, seen[0][0], seen[0][1], seen[FORKS - 1][0], seen[FORKS - 1][1]);
}
