/*
 * test_crash.c - nothing stored through a shared mapping is lost when the
 * process dies: the crash loop of issue 3/5.
 *
 * Each cycle forks a writer that maps a file through ummap and writes
 * sequence-numbered records (200 bytes: they straddle pages), telling the
 * test over a pipe after each finished record; it then dies -- SIGKILL from
 * the test at a random moment, _exit, a SIGSEGV of its own, or abort().  The test
 * then waits at most the writeback interval (set to WAIT_MS for the writer)
 * for every finished record to be in the file, byte for byte.  Every other
 * cycle runs the writer under a 256 KiB budget with a short writeback
 * interval, so it dies while eviction and writeback are under way too.
 *
 * CRASH_CYCLES sets the cycles per ending (default 200; `make crash-long`
 * runs 10,000).  A last test shows the loop can fail: without the
 * writeback service, killed writers lose records.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ummap.h"

#define REC 200
#define FILE_SIZE (4UL << 20)
#define NREC ((unsigned)(FILE_SIZE / REC))
#define WAIT_MS 1000

enum ending { BY_SIGKILL, BY_EXIT, BY_SIGSEGV, BY_ABORT };

static void record(uint8_t *buf, unsigned cycle, unsigned seq)
{
	for (unsigned i = 0; i < REC; i++)
		buf[i] = (uint8_t)(seq * 31u + cycle * 7u + i);
	memcpy(buf, &seq, sizeof seq);
	memcpy(buf + 4, &cycle, sizeof cycle);
}

static void make_file(char *path, size_t len)
{
	const char *tmp = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(path, len, "%s/ummap-crash.XXXXXX", tmp);
	int fd = mkstemp(path);
	cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
	close(fd);
}

/* The writer: never returns. */
static void writer(const char *path, int out, unsigned cycle, enum ending how, unsigned stop, bool tight)
{
	struct rlimit no_core = { 0, 0 };
	setrlimit(RLIMIT_CORE, &no_core);
	struct um_config cfg = { .writeback_ms = WAIT_MS };
	if (tight) {
		cfg.budget = 256 << 10;
		cfg.writeback_ms = 20;
	}
	um_configure(&cfg);
	int fd = open(path, O_RDWR);
	uint8_t *m = um_mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	void *fence = mmap(NULL, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED || fence == MAP_FAILED)
		_exit(3);
	for (unsigned seq = 0; seq < NREC; seq++) {
		if (how != BY_SIGKILL && seq == stop) {
			if (how == BY_EXIT)
				_exit(0);
			if (how == BY_ABORT)
				abort();
			/* A real crash: a store to an inaccessible page, the
			 * default action (a sanitizer's handler would exit). */
			signal(SIGSEGV, SIG_DFL);
			*(volatile uint8_t *)fence = 1;
		}
		record(m + (size_t)seq * REC, cycle, seq);
		if (write(out, &seq, sizeof seq) != sizeof seq)
			_exit(4);
	}
	for (;;)
		pause();
}

/* The first record of [0, done) that the file does not hold, or done. */
static unsigned first_missing(int fd, unsigned cycle, unsigned done, uint8_t *file)
{
	if (pread(fd, file, FILE_SIZE, 0) != (ssize_t)FILE_SIZE)
		return 0;
	uint8_t want[REC];
	for (unsigned seq = 0; seq < done; seq++) {
		record(want, cycle, seq);
		if (memcmp(file + (size_t)seq * REC, want, REC))
			return seq;
	}
	return done;
}

static double now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}

static unsigned long long finished; /* records checked, for the log */

/* One cycle; returns the records lost (0 when all arrived in time). */
static unsigned cycle(const char *path, unsigned n, enum ending how, bool service)
{
	int fd = open(path, O_RDWR);
	cr_assert(fd >= 0);
	cr_assert(ftruncate(fd, 0) == 0 && ftruncate(fd, FILE_SIZE) == 0);
	int p[2];
	cr_assert(pipe(p) == 0);
	unsigned stop = (unsigned)rand() % 20000;
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		if (!service)
			setenv("UMMAP_SERVICE", "none", 1);
		writer(path, p[1], n, how, stop, n % 2);
	}
	close(p[1]);
	unsigned seq, done = 0;
	if (how == BY_SIGKILL) {
		/* Kill it while it writes: after its first record, 0-3 ms on. */
		if (read(p[0], &seq, sizeof seq) == sizeof seq)
			done = seq + 1;
		usleep((useconds_t)(rand() % 3000));
		kill(pid, SIGKILL);
	}
	/* Until the writer is gone (EOF), then reap it. */
	while (read(p[0], &seq, sizeof seq) == sizeof seq)
		done = seq + 1;
	close(p[0]);
	int st;
	cr_assert(waitpid(pid, &st, 0) == pid);
	int want_sig = how == BY_SIGKILL ? SIGKILL : how == BY_SIGSEGV ? SIGSEGV : how == BY_ABORT ? SIGABRT : 0;
	if (want_sig)
		cr_assert(WIFSIGNALED(st) && WTERMSIG(st) == want_sig, "cycle %u: writer status %#x", n, st);
	else
		cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "cycle %u: writer status %#x", n, st);
	if (how != BY_SIGKILL)
		cr_assert_eq(done, stop, "cycle %u: writer stopped at %u, not %u", n, done, stop);

	uint8_t *file = malloc(FILE_SIZE);
	double t0 = now_ms();
	unsigned got;
	while ((got = first_missing(fd, n, done, file)) < done && now_ms() - t0 < WAIT_MS)
		usleep(2000);
	free(file);
	close(fd);
	finished += done;
	return done - got;
}

static unsigned cycles(void)
{
	const char *s = getenv("CRASH_CYCLES");
	return s && atoi(s) > 0 ? (unsigned)atoi(s) : 200;
}

static void crash_loop(enum ending how, const char *name)
{
	char path[256];
	make_file(path, sizeof path);
	srand(12345u + (unsigned)how);
	unsigned n = cycles();
	finished = 0;
	for (unsigned i = 0; i < n; i++) {
		unsigned lost = cycle(path, i, how, true);
		if (lost) {
			unlink(path);
			cr_assert_fail("%s, cycle %u: %u finished records not in the file", name, i, lost);
		}
	}
	unlink(path);
	cr_log_info("%s: %u cycles, %llu finished records checked, 0 lost", name, n, finished);
}

Test(crash, sigkill_loses_nothing) { crash_loop(BY_SIGKILL, "SIGKILL"); }
Test(crash, exit_loses_nothing) { crash_loop(BY_EXIT, "_exit"); }
Test(crash, sigsegv_loses_nothing) { crash_loop(BY_SIGSEGV, "SIGSEGV"); }
Test(crash, abort_loses_nothing) { crash_loop(BY_ABORT, "abort"); }

/* The loop's check can fail: with no writeback service a killed writer
 * loses what its own writeback had not written (its interval is 1 s, the
 * kill comes within 3 ms of its first record). */
Test(crash, without_the_service_records_are_lost)
{
	char path[256];
	make_file(path, sizeof path);
	srand(7);
	unsigned lost = 0;
	for (unsigned i = 0; i < 5; i++)
		lost += cycle(path, 2 * i, BY_SIGKILL, false);
	unlink(path);
	cr_expect(lost > 0, "5 killed writers without the service lost nothing: the check cannot fail");
}
