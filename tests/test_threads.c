/*
 * test_threads.c - many threads faulting on one ummap file mapping at once.
 *
 * Not differential: every thread checks every byte it reads against the
 * pattern it must be (tests/lib/diff.h's diff_pat), writers own disjoint
 * pages or disjoint byte ranges of shared pages, and after the threads are
 * joined the mapping and then the file (after msync) are checked whole.
 * Also built and run under ThreadSanitizer by `make tsan`.
 *
 * Built with -DDIFF_KERNEL_ONLY it runs on the kernel's mmap, which is how
 * the test itself is checked.
 *
 * Criterion's runner cannot start under ThreadSanitizer (its inheritable
 * arena is mapped at a fixed address TSan reserves: "Could not initialize
 * inheritable arena", Criterion issue #274).  So under TSan (or with
 * -DTHREADS_OWN_MAIN) this file has its own main(), which runs each test
 * in a forked child and prints "N passed, M failed"; the checks below are
 * T_ASSERT/T_EXPECT, which are Criterion's cr_assert/cr_expect otherwise.
 */
#include <criterion/criterion.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef DIFF_KERNEL_ONLY
#include <ummap.h>
#endif

#include "diff.h"

#define PG DIFF_PG

#if defined(__SANITIZE_THREAD__)
#define THREADS_OWN_MAIN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define THREADS_OWN_MAIN 1
#endif
#endif

#ifdef THREADS_OWN_MAIN
static int t_failed;
#define T_EXPECT(cond, ...)                                                  \
	do {                                                                 \
		if (!(cond)) {                                               \
			fprintf(stderr, "%s:%d: ", __FILE__, __LINE__);      \
			fprintf(stderr, "" __VA_ARGS__);                     \
			fprintf(stderr, "\n");                               \
			t_failed = 1;                                        \
		}                                                            \
	} while (0)
#define T_ASSERT(cond, ...)                                                  \
	do {                                                                 \
		T_EXPECT(cond, __VA_ARGS__);                                 \
		if (t_failed)                                                \
			exit(1);                                             \
	} while (0)
#define THREAD_TEST(name, secs) static void name(void)
#else
#define T_EXPECT(cond, ...) cr_expect(cond, __VA_ARGS__)
#define T_ASSERT(cond, ...) cr_assert(cond, __VA_ARGS__)
#define THREAD_TEST(name, secs)                                              \
	static void name(void);                                              \
	Test(threads, name, .timeout = secs) { name(); }                     \
	static void name(void)
#endif
#define NTHREADS 8

static const struct mm_ops *o = &ummap_ops;

struct shared {
	char path[256];
	int fd;
	uint8_t *map;
	size_t pages;
	pthread_barrier_t bar;
	atomic_long errors;
	atomic_long first_bad; /* page*PG+offset of the first bad byte + 1 */
	unsigned seed;
};

struct worker {
	struct shared *s;
	int id;
	pthread_t th;
};

static void make_file(struct shared *s, size_t pages, unsigned seed)
{
	const char *tmp = getenv("TMPDIR");
	snprintf(s->path, sizeof s->path, "%s/ummap-threads-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	s->fd = mkstemp(s->path);
	T_ASSERT(s->fd >= 0, "mkstemp: %s", strerror(errno));
	unlink(s->path); /* removed when the test ends, whatever happens */
	uint8_t *buf = malloc(pages * PG);
	T_ASSERT(buf != NULL, "malloc");
	for (size_t i = 0; i < pages * PG; i++)
		buf[i] = diff_pat(seed, i);
	T_ASSERT(pwrite(s->fd, buf, pages * PG, 0) == (ssize_t)(pages * PG),
		 "pwrite: %s", strerror(errno));
	free(buf);
	s->pages = pages;
	s->seed = seed;
	atomic_init(&s->errors, 0);
	atomic_init(&s->first_bad, 0);
}

static void bad(struct shared *s, size_t off)
{
	if (atomic_fetch_add(&s->errors, 1) == 0)
		atomic_store(&s->first_bad, (long)off + 1);
}

/* Checks page pg of the mapping byte by byte against pattern seed. */
static void check_page(struct shared *s, size_t pg, unsigned seed)
{
	const volatile uint8_t *p = s->map + pg * PG;
	for (size_t i = 0; i < PG; i++)
		if (p[i] != diff_pat(seed, pg * PG + i)) {
			bad(s, pg * PG + i);
			return;
		}
}

static void run_workers(struct shared *s, void *(*fn)(void *), int n)
{
	struct worker w[NTHREADS];
	pthread_barrier_init(&s->bar, NULL, (unsigned)n);
	for (int i = 0; i < n; i++) {
		w[i].s = s;
		w[i].id = i;
		T_ASSERT(pthread_create(&w[i].th, NULL, fn, &w[i]) == 0,
			 "pthread_create");
	}
	for (int i = 0; i < n; i++)
		pthread_join(w[i].th, NULL);
	pthread_barrier_destroy(&s->bar);
}

static void expect_no_errors(struct shared *s, const char *what)
{
	long e = atomic_load(&s->errors);
	long at = atomic_load(&s->first_bad) - 1;
	T_EXPECT(e == 0, "%s: %ld bad pages, first bad byte at offset %#lx "
		     "(page %ld + %#lx)", what, e, at, at / (long)PG,
		     at % (long)PG);
}

/* Reads every page in an order of its own; all start together. */
static void *reader_all_pages(void *arg)
{
	struct worker *w = arg;
	struct shared *s = w->s;
	size_t n = s->pages, step = 7 + 2 * (size_t)w->id; /* odd: a cycle */
	while (n % step == 0)
		step += 2;
	pthread_barrier_wait(&s->bar);
	for (size_t k = 0, pg = (size_t)w->id * 13 % n; k < n;
	     k++, pg = (pg + step) % n)
		check_page(s, pg, s->seed);
	return NULL;
}

static void map_file(struct shared *s, int prot, int flags)
{
	s->map = o->mmap(NULL, s->pages * PG, prot, flags, s->fd, 0);
	T_ASSERT(s->map != MAP_FAILED, "mmap: %s", strerror(errno));
}

THREAD_TEST(readers_on_all_pages_shared, 120)
{
	struct shared s;
	make_file(&s, 512, 1);
	map_file(&s, PROT_READ, MAP_SHARED);
	run_workers(&s, reader_all_pages, NTHREADS);
	expect_no_errors(&s, "concurrent readers, MAP_SHARED");
	T_EXPECT(o->munmap(s.map, s.pages * PG) == 0, "munmap: %s", strerror(errno));
	close(s.fd);
}

THREAD_TEST(readers_on_all_pages_private, 120)
{
	struct shared s;
	make_file(&s, 512, 2);
	map_file(&s, PROT_READ | PROT_WRITE, MAP_PRIVATE);
	run_workers(&s, reader_all_pages, NTHREADS);
	expect_no_errors(&s, "concurrent readers, MAP_PRIVATE");
	T_EXPECT(o->munmap(s.map, s.pages * PG) == 0, "munmap: %s", strerror(errno));
	close(s.fd);
}

/* All threads fault the same page at the same moment, page after page. */
static void *same_page_lockstep(void *arg)
{
	struct worker *w = arg;
	struct shared *s = w->s;
	for (size_t pg = 0; pg < s->pages; pg++) {
		pthread_barrier_wait(&s->bar);
		/* Each starts at a different byte of the page. */
		const volatile uint8_t *p = s->map + pg * PG;
		size_t at = (size_t)w->id * (PG / NTHREADS);
		if (p[at] != diff_pat(s->seed, pg * PG + at))
			bad(s, pg * PG + at);
		check_page(s, pg, s->seed);
	}
	return NULL;
}

THREAD_TEST(same_page_same_moment, 120)
{
	struct shared s;
	make_file(&s, 64, 3);
	map_file(&s, PROT_READ, MAP_SHARED);
	run_workers(&s, same_page_lockstep, NTHREADS);
	expect_no_errors(&s, "same page, same moment");
	T_EXPECT(o->munmap(s.map, s.pages * PG) == 0, "munmap: %s", strerror(errno));
	close(s.fd);
}

/* Threads 0..3 write the pages they own (pg % 4 == id) with pattern
 * seed 100 + id and check them; threads 4..7 read the pages in the upper
 * half, which nobody writes, and check them. */
#define WRITERS 4
static void *writers_and_readers(void *arg)
{
	struct worker *w = arg;
	struct shared *s = w->s;
	size_t half = s->pages / 2;
	pthread_barrier_wait(&s->bar);
	if (w->id < WRITERS) {
		for (size_t pg = (size_t)w->id; pg < half; pg += WRITERS) {
			volatile uint8_t *p = s->map + pg * PG;
			unsigned seed = 100 + (unsigned)w->id;
			for (size_t i = 0; i < PG; i++)
				p[i] = diff_pat(seed, pg * PG + i);
			check_page(s, pg, seed);
		}
	} else {
		for (int round = 0; round < 3; round++)
			for (size_t pg = half + (size_t)w->id; pg < s->pages;
			     pg += NTHREADS - WRITERS)
				check_page(s, pg, s->seed);
	}
	return NULL;
}

static unsigned page_seed(struct shared *s, size_t pg)
{
	return pg < s->pages / 2 ? 100 + (unsigned)(pg % WRITERS) : s->seed;
}

static void check_file(struct shared *s, const char *what)
{
	uint8_t *buf = malloc(s->pages * PG);
	T_ASSERT(buf != NULL, "malloc");
	T_ASSERT(pread(s->fd, buf, s->pages * PG, 0) == (ssize_t)(s->pages * PG),
		 "pread: %s", strerror(errno));
	long errs = 0, first = -1;
	for (size_t pg = 0; pg < s->pages; pg++)
		for (size_t i = 0; i < PG; i++)
			if (buf[pg * PG + i] !=
			    diff_pat(page_seed(s, pg), pg * PG + i)) {
				if (first < 0)
					first = (long)(pg * PG + i);
				errs++;
			}
	free(buf);
	T_EXPECT(errs == 0, "%s: %ld bytes of the file wrong, first at "
		     "offset %#lx", what, errs, first);
}

/* Writers and readers over a shared mapping of a file of `pages` pages;
 * then every page in memory, and the file after msync and after munmap. */
static void writers_and_readers_on(size_t pages, unsigned seed, const char *what)
{
	struct shared s;
	make_file(&s, pages, seed);
	map_file(&s, PROT_READ | PROT_WRITE, MAP_SHARED);
	run_workers(&s, writers_and_readers, NTHREADS);
	expect_no_errors(&s, what);
	for (size_t pg = 0; pg < s.pages; pg++)
		check_page(&s, pg, page_seed(&s, pg));
	expect_no_errors(&s, "mapping after join");
	T_EXPECT(o->msync(s.map, s.pages * PG, MS_SYNC) == 0, "msync: %s", strerror(errno));
	check_file(&s, "file after msync");
	T_EXPECT(o->munmap(s.map, s.pages * PG) == 0, "munmap: %s", strerror(errno));
	check_file(&s, "file after munmap");
	close(s.fd);
}

THREAD_TEST(disjoint_page_writers_then_msync, 120)
{
	writers_and_readers_on(256, 4, "writers and readers");
}

/* Every thread writes its own eighth of every page: the first write to a
 * clean page races with the other threads' first writes to it. */
static void *slice_writer(void *arg)
{
	struct worker *w = arg;
	struct shared *s = w->s;
	size_t slice = PG / NTHREADS, lo = (size_t)w->id * slice;
	pthread_barrier_wait(&s->bar);
	for (size_t pg = 0; pg < s->pages; pg++) {
		volatile uint8_t *p = s->map + pg * PG;
		for (size_t i = lo; i < lo + slice; i++)
			p[i] = diff_pat(200, pg * PG + i);
	}
	for (size_t pg = 0; pg < s->pages; pg++) {
		const volatile uint8_t *p = s->map + pg * PG;
		for (size_t i = lo; i < lo + slice; i++)
			if (p[i] != diff_pat(200, pg * PG + i)) {
				bad(s, pg * PG + i);
				break;
			}
	}
	return NULL;
}

THREAD_TEST(same_page_disjoint_byte_writers, 120)
{
	struct shared s;
	make_file(&s, 128, 5);
	map_file(&s, PROT_READ | PROT_WRITE, MAP_SHARED);
	run_workers(&s, slice_writer, NTHREADS);
	expect_no_errors(&s, "slices after writing");
	s.seed = 200; /* every byte now has pattern 200 */
	for (size_t pg = 0; pg < s.pages; pg++)
		check_page(&s, pg, 200);
	expect_no_errors(&s, "mapping after join");
	T_EXPECT(o->msync(s.map, s.pages * PG, MS_SYNC) == 0, "msync: %s", strerror(errno));
	uint8_t *buf = malloc(s.pages * PG);
	T_ASSERT(buf != NULL, "malloc");
	T_ASSERT(pread(s.fd, buf, s.pages * PG, 0) == (ssize_t)(s.pages * PG),
		 "pread: %s", strerror(errno));
	long errs = 0;
	for (size_t i = 0; i < s.pages * PG; i++)
		errs += buf[i] != diff_pat(200, i);
	free(buf);
	T_EXPECT(errs == 0, "file after msync: %ld bytes wrong", errs);
	T_EXPECT(o->munmap(s.map, s.pages * PG) == 0, "munmap: %s", strerror(errno));
	close(s.fd);
}

/* Readers and writers with a budget far below the file, so pages are
 * evicted (and written back) while other threads fault them in again. */
THREAD_TEST(writers_and_readers_under_eviction, 180)
{
#ifndef DIFF_KERNEL_ONLY
	struct um_config cfg = { .budget = 64 * PG };
	T_ASSERT(um_configure(&cfg) == 0, "um_configure: %s", strerror(errno));
#endif
	writers_and_readers_on(1024, 6, "writers and readers under eviction");
}

#ifdef THREADS_OWN_MAIN
/* Runs each test in its own child process, as Criterion would. */
int main(void)
{
	static const struct {
		const char *name;
		void (*fn)(void);
		unsigned secs;
	} tests[] = {
		{ "readers_on_all_pages_shared", readers_on_all_pages_shared, 120 },
		{ "readers_on_all_pages_private", readers_on_all_pages_private, 120 },
		{ "same_page_same_moment", same_page_same_moment, 120 },
		{ "disjoint_page_writers_then_msync", disjoint_page_writers_then_msync, 120 },
		{ "same_page_disjoint_byte_writers", same_page_disjoint_byte_writers, 120 },
		{ "writers_and_readers_under_eviction", writers_and_readers_under_eviction, 180 },
	};
	int passed = 0, failed = 0;
	for (size_t i = 0; i < sizeof tests / sizeof *tests; i++) {
		fflush(NULL);
		pid_t pid = fork();
		if (pid == 0) {
			alarm(tests[i].secs);
			tests[i].fn();
			exit(t_failed ? 1 : 0);
		}
		int st = 0;
		if (pid < 0 || waitpid(pid, &st, 0) != pid)
			st = -1;
		int ok = st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0;
		printf("[%s] threads::%s", ok ? "PASS" : "FAIL", tests[i].name);
		if (!ok && st != -1 && WIFSIGNALED(st))
			printf(" (killed by signal %d)", WTERMSIG(st));
		else if (!ok && st != -1)
			printf(" (exit %d)", WEXITSTATUS(st));
		printf("\n");
		ok ? passed++ : failed++;
	}
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}
#endif
