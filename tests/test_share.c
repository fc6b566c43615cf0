/*
 * test_share.c - processes sharing one file's cache under pressure.
 *
 * PROCS unrelated processes (forked before any of them uses ummap, so each
 * starts its own engine) with THREADS threads each map one file MAP_SHARED
 * and, ROUNDS times per thread:
 *  - increment the thread's own counter in the file's first page (plain
 *    stores; no other thread writes it),
 *  - increment a C11 atomic counter that every thread shares,
 *  - append a record: take the next slot with an atomic fetch-add on a
 *    second shared counter and write (process, thread, round, check) there.
 * The records span many times the budget each process has (BUDGET, with a
 * short writeback interval), so eviction and writeback of pages other
 * processes are storing into run all along.  At the end every counter and
 * every record is exact, in memory (each process checks all of them while
 * still mapped) and on disk (after every process has unmapped).
 * Bounded by counts, not time.
 *
 * And a file's budget, set by one process, bounds the cache every process
 * fills; and two processes that read a whole file hold one copy of it.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fds.h"
#include "ummap.h"

#define PROCS 4
#define THREADS 2
#define ROUNDS 50000
#define PG 4096UL
#define NREC ((uint64_t)PROCS * THREADS * ROUNDS)
#define BUDGET (1UL << 20)

struct head {
	uint64_t count[PROCS][THREADS]; /* plain, one writer each */
	atomic_uint_least64_t total;	/* every thread's increments */
	atomic_uint_least64_t next;	/* next record slot */
};

struct rec {
	uint32_t proc, thread, round, check;
	char fill[48];
};

#define FILE_SIZE (PG + NREC * sizeof(struct rec))

static uint32_t check_of(uint32_t p, uint32_t t, uint32_t r)
{
	return (p * 2654435761u) ^ (t * 40503u) ^ (r * 2246822519u) ^ 0x5eed;
}

static struct head *head;
static struct rec *recs;
static int me;

static void *worker(void *arg)
{
	uint32_t t = (uint32_t)(uintptr_t)arg;
	for (uint32_t r = 0; r < ROUNDS; r++) {
		head->count[me][t]++;
		atomic_fetch_add(&head->total, 1);
		uint64_t i = atomic_fetch_add(&head->next, 1);
		struct rec *x = &recs[i];
		memset(x->fill, (int)(r & 0x7f), sizeof x->fill);
		x->proc = (uint32_t)me;
		x->thread = t;
		x->round = r;
		x->check = check_of((uint32_t)me, t, r);
	}
	return NULL;
}

/* Every counter and record right: 0, or a message in why. */
static int verify(const struct head *h, const struct rec *rs, char *why, size_t n)
{
	static uint8_t seen[PROCS][THREADS][ROUNDS];
	memset(seen, 0, sizeof seen);
	for (int p = 0; p < PROCS; p++)
		for (int t = 0; t < THREADS; t++)
			if (h->count[p][t] != ROUNDS)
				return snprintf(why, n, "counter of process %d thread %d is %llu", p, t,
						(unsigned long long)h->count[p][t]);
	if (h->total != NREC || h->next != NREC)
		return snprintf(why, n, "shared counters %llu and %llu, want %llu", (unsigned long long)h->total,
				(unsigned long long)h->next, (unsigned long long)NREC);
	for (uint64_t i = 0; i < NREC; i++) {
		const struct rec *x = &rs[i];
		if (x->proc >= PROCS || x->thread >= THREADS || x->round >= ROUNDS ||
		    x->check != check_of(x->proc, x->thread, x->round) || x->fill[47] != (char)(x->round & 0x7f))
			return snprintf(why, n, "record %llu is wrong", (unsigned long long)i);
		if (seen[x->proc][x->thread][x->round]++)
			return snprintf(why, n, "record %llu is a duplicate", (unsigned long long)i);
	}
	return 0;
}

/* A barrier for n processes forked after this. */
static pthread_barrier_t *barrier_of(unsigned n)
{
	pthread_barrier_t *b = mmap(NULL, sizeof *b, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(b != MAP_FAILED);
	pthread_barrierattr_t a;
	pthread_barrierattr_init(&a);
	pthread_barrierattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	pthread_barrier_init(b, &a, n);
	return b;
}

/* One process: its threads, then the check of everything in memory. */
static int child(const char *path, pthread_barrier_t *all)
{
	struct um_config cfg = { .budget = BUDGET, .writeback_ms = 20 };
	if (um_configure(&cfg))
		return 10;
	int fd = open(path, O_RDWR);
	char *m = um_mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return 11;
	close(fd);
	head = (struct head *)m;
	recs = (struct rec *)(m + PG);
	pthread_barrier_wait(all);
	pthread_t th[THREADS];
	for (uintptr_t t = 0; t < THREADS; t++)
		pthread_create(&th[t], NULL, worker, (void *)t);
	for (int t = 0; t < THREADS; t++)
		pthread_join(th[t], NULL);
	pthread_barrier_wait(all);
	struct um_stats ms;
	if (um_stats(m, &ms) || ms.cache_procs != PROCS) {
		fprintf(stderr, "process %d: the cache has %llu processes, want %d\n", me,
			(unsigned long long)ms.cache_procs, PROCS);
		return 14;
	}
	char why[200];
	int bad = verify(head, recs, why, sizeof why);
	if (bad)
		fprintf(stderr, "process %d, in memory: %s\n", me, why);
	struct um_stats st;
	um_stats(NULL, &st);
	fprintf(stderr, "process %d: %llu faults, %llu evictions, %llu pages written back\n", me,
		(unsigned long long)st.faults, (unsigned long long)st.evictions,
		(unsigned long long)st.writebacks);
	pthread_barrier_wait(all);
	if (um_munmap(m, FILE_SIZE))
		return 12;
	return bad ? 13 : 0;
}

Test(share, four_processes_two_threads_one_file_under_a_small_budget, .timeout = 0)
{
	char path[] = "/tmp/ummap-share-XXXXXX";
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	cr_assert(ftruncate(fd, (off_t)FILE_SIZE) == 0);
	close(fd);
	pthread_barrier_t *all = barrier_of(PROCS);
	pid_t pids[PROCS];
	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		cr_assert(pids[p] >= 0);
		if (pids[p] == 0) {
			me = p;
			_exit(child(path, all));
		}
	}
	for (int p = 0; p < PROCS; p++) {
		int st;
		cr_assert(waitpid(pids[p], &st, 0) == pids[p]);
		cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "process %d ended with status %#x", p, st);
	}
	/* On disk, once every process has unmapped. */
	char *buf = malloc(FILE_SIZE);
	fd = open(path, O_RDONLY);
	cr_assert(pread(fd, buf, FILE_SIZE, 0) == (ssize_t)FILE_SIZE);
	close(fd);
	unlink(path);
	char why[200];
	cr_expect(verify((struct head *)buf, (struct rec *)(buf + PG), why, sizeof why) == 0, "on disk: %s", why);
	free(buf);
}

#define BIG (16UL << 20)
#define FILE_BUDGET (2UL << 20)

/* A BIG-byte file whose i-th 8-byte word is i, at path (a mkstemp template). */
static void make_big_file(char *path)
{
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	uint64_t *w = malloc(BIG);
	for (uint64_t i = 0; i < BIG / 8; i++)
		w[i] = i;
	cr_assert(write(fd, w, BIG) == (ssize_t)BIG);
	free(w);
	close(fd);
}

static int budget_setter(const char *path, pthread_barrier_t *all)
{
	int fd = open(path, O_RDONLY);
	uint64_t *m = um_mmap(NULL, BIG, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED || um_mapping_set(m, UM_PARAM_BUDGET, FILE_BUDGET))
		return 20;
	pthread_barrier_wait(all); /* the budget is set */
	pthread_barrier_wait(all); /* the other process has scanned */
	struct um_stats st;
	um_stats(m, &st);
	return um_munmap(m, BIG) || st.cache_budget != FILE_BUDGET ? 21 : 0;
}

static int scanner(const char *path, pthread_barrier_t *all)
{
	pthread_barrier_wait(all);
	int fd = open(path, O_RDONLY);
	uint64_t *m = um_mmap(NULL, BIG, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return 30;
	uint64_t most = 0, wrong = 0;
	struct um_stats st;
	for (uint64_t i = 0; i < BIG / 8; i++) {
		wrong += m[i] != i;
		if (i % (PG / 8) == 0) {
			um_stats(m, &st);
			most = st.cache_bytes > most ? st.cache_bytes : most;
		}
	}
	um_stats(m, &st);
	fprintf(stderr, "scanner: file budget %llu KiB, most cached %llu KiB, %llu evictions, %llu processes\n",
		(unsigned long long)st.cache_budget >> 10, (unsigned long long)most >> 10,
		(unsigned long long)st.evictions, (unsigned long long)st.cache_procs);
	pthread_barrier_wait(all);
	int bad = wrong ? 31 : st.cache_budget != FILE_BUDGET ? 32 : st.cache_procs != 2 ? 33
		: most > FILE_BUDGET + (1UL << 20) ? 34 : st.evictions == 0 ? 35 : 0;
	return um_munmap(m, BIG) ? 36 : bad;
}

Test(share, a_file_budget_set_in_one_process_bounds_the_others, .timeout = 0)
{
	char path[] = "/tmp/ummap-budget-XXXXXX";
	make_big_file(path);
	pthread_barrier_t *all = barrier_of(2);
	pid_t setter = fork();
	if (setter == 0)
		_exit(budget_setter(path, all));
	pid_t scan = fork();
	if (scan == 0)
		_exit(scanner(path, all));
	int st1, st2;
	waitpid(setter, &st1, 0);
	waitpid(scan, &st2, 0);
	unlink(path);
	cr_expect(WIFEXITED(st1) && WEXITSTATUS(st1) == 0, "setter status %#x", st1);
	cr_expect(WIFEXITED(st2) && WEXITSTATUS(st2) == 0, "scanner status %#x", st2);
}

/* The inode and allocated bytes of this process's cache memfd for a file. */
struct copy {
	uint64_t ino, bytes;
};

static void note_cache(int fd, const char *target, void *arg)
{
	struct stat st;
	if (strstr(target, "memfd:ummap-cache") && fstat(fd, &st) == 0)
		*(struct copy *)arg = (struct copy){ (uint64_t)st.st_ino, (uint64_t)st.st_blocks * 512 };
}

static int reader(const char *path, pthread_barrier_t *all, int out)
{
	int fd = open(path, O_RDONLY);
	uint64_t *m = um_mmap(NULL, BIG, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED)
		return 40;
	uint64_t wrong = 0;
	for (uint64_t i = 0; i < BIG / 8; i += 64)
		wrong += m[i] != i;
	pthread_barrier_wait(all); /* both have read it all */
	struct copy c = { 0, 0 };
	fds_each(note_cache, &c);
	struct um_stats st;
	um_stats(m, &st);
	int ok = write(out, &c, sizeof c) == sizeof c;
	pthread_barrier_wait(all);
	return um_munmap(m, BIG) || !ok ? 41 : wrong ? 42 : st.cache_procs != 2 ? 43 : 0;
}

Test(share, two_processes_that_read_a_file_hold_one_copy, .timeout = 0)
{
	char path[] = "/tmp/ummap-once-XXXXXX";
	make_big_file(path);
	pthread_barrier_t *all = barrier_of(2);
	int pipefd[2];
	cr_assert(pipe(pipefd) == 0);
	pid_t pids[2];
	for (int i = 0; i < 2; i++)
		if ((pids[i] = fork()) == 0)
			_exit(reader(path, all, pipefd[1]));
	struct copy c[2];
	for (int i = 0; i < 2; i++)
		cr_assert(read(pipefd[0], &c[i], sizeof c[i]) == sizeof c[i]);
	for (int i = 0; i < 2; i++) {
		int st;
		waitpid(pids[i], &st, 0);
		cr_expect(WIFEXITED(st) && WEXITSTATUS(st) == 0, "reader %d status %#x", i, st);
	}
	unlink(path);
	cr_expect(c[0].ino && c[0].ino == c[1].ino, "both processes use one cache object (%llu, %llu)",
		  (unsigned long long)c[0].ino, (unsigned long long)c[1].ino);
	cr_expect(c[0].bytes >= BIG && c[0].bytes <= BIG + (2UL << 20), "it holds the file once: %llu KiB",
		  (unsigned long long)c[0].bytes >> 10);
}
