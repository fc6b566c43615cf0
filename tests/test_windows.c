/*
 * test_windows.c - the windows where a mapping is reachable before ummap
 * knows it, or where ummap's region map and the kernel's VMAs disagree:
 * bytes nobody wrote, stores lost, stores that never return.
 *
 * Two kinds of test:
 *  - differential scenarios (tests/lib/diff.h): the same calls on the
 *    kernel and on ummap, every return value, errno, signal and byte
 *    compared.  A run that hangs is killed by the harness (DIFF_TIMEOUT)
 *    and shows as a divergence in how the child ended;
 *  - threaded stress runs, which check a rule the kernel keeps (a read of a
 *    mapped page sees a byte someone wrote; a store reaches the file).  Each
 *    runs in a forked child that reports its progress in shared memory; the
 *    parent waits for it (guarded()), and only if the child has not ended
 *    after GUARD_SECS does it kill it and fail with the progress made, so a
 *    hang is a failure and nothing is timed on the way to a pass.
 *
 * Built with -DDIFF_KERNEL_ONLY, every call goes to the kernel: each test
 * must pass there, which is how the tests themselves are checked:
 *   cc -std=c11 -D_GNU_SOURCE -DDIFF_KERNEL_ONLY -pthread -Iinclude -Isrc \
 *      -Itests/lib -o build/test_windows_kernel tests/test_windows.c \
 *      tests/lib/diff.c tests/lib/fds.c -lcriterion
 * WINDOWS_VERBOSE=1 prints the counts of the stress runs.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
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

/* The calls of the stress runs (the kernel's in -DDIFF_KERNEL_ONLY builds). */
static const struct mm_ops *uo = &ummap_ops;

/* ------------------------------------------------ guarded stress runs */

/* What a stress run reports to the parent, in memory shared with it. */
struct report {
	atomic_long steps;	/* progress: iterations done */
	long total;		/* iterations planned */
	atomic_long checked;	/* observations that count */
	atomic_long bad;	/* of which broke the rule */
	atomic_long bad_aside;	/* of which were of a kind of their own (see each) */
	atomic_long other;	/* a second count of the run's own (see each) */
	atomic_int setup_err;	/* errno of a failed set-up call, 0 if none */
	char first[160];	/* the first bad observation, described */
	atomic_flag first_taken;
};

#define GUARD_SECS 120

static void report_bad(struct report *rep, const char *fmt, long a, long b)
{
	atomic_fetch_add(&rep->bad, 1);
	if (!atomic_flag_test_and_set(&rep->first_taken))
		snprintf(rep->first, sizeof rep->first, fmt, a, b);
}

static void setup_failed(struct report *rep, int err)
{
	int zero = 0;
	atomic_compare_exchange_strong(&rep->setup_err, &zero, err ? err : -1);
}

/*
 * Runs fn in a forked child and waits for it to end: until the child
 * closes its end of a pipe (by exiting or dying).  After GUARD_SECS
 * without that, the child is killed and the test fails with the progress
 * it had made.  Returns the report (kernel memory, shared) on a clean exit.
 */
static struct report *guarded(const char *what, void (*fn)(struct report *), long total)
{
	struct report *rep = mmap(NULL, sizeof *rep, PROT_READ | PROT_WRITE,
				  MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(rep != MAP_FAILED, "mmap: %s", strerror(errno));
	memset(rep, 0, sizeof *rep);
	rep->total = total;
	int pfd[2];
	cr_assert(pipe(pfd) == 0, "pipe: %s", strerror(errno));
	fflush(NULL);
	pid_t pid = fork();
	cr_assert(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(pfd[0]);
		fn(rep);
		_exit(0);
	}
	close(pfd[1]);
	struct pollfd pf = { .fd = pfd[0], .events = POLLIN };
	int n;
	while ((n = poll(&pf, 1, GUARD_SECS * 1000)) < 0 && errno == EINTR)
		;
	close(pfd[0]);
	if (n == 0)
		kill(pid, SIGKILL);
	int st = 0;
	waitpid(pid, &st, 0);
	cr_assert(n != 0, "%s: hung (killed after %d s) at step %ld of %ld, "
		  "%ld bad so far", what, GUARD_SECS, atomic_load(&rep->steps),
		  rep->total, atomic_load(&rep->bad));
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "%s: the child ended with %s %d at step %ld of %ld", what,
		  WIFEXITED(st) ? "exit" : "signal",
		  WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
		  atomic_load(&rep->steps), rep->total);
	cr_assert(atomic_load(&rep->setup_err) == 0, "%s: set-up failed: %s",
		  what, strerror(atomic_load(&rep->setup_err)));
	if (getenv("WINDOWS_VERBOSE"))
		fprintf(stderr, "%s (%s): %ld steps, %ld checked, %ld bad, %ld other\n",
			what, uo->name, atomic_load(&rep->steps),
			atomic_load(&rep->checked), atomic_load(&rep->bad),
			atomic_load(&rep->other));
	return rep;
}

/* A file of len bytes of c in TMPDIR, already unlinked; O_RDWR. */
static int byte_file(size_t len, int c)
{
	const char *tmp = getenv("TMPDIR");
	char path[256];
	snprintf(path, sizeof path, "%s/ummap-windows-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0)
		return -1;
	unlink(path);
	char *buf = malloc(len);
	if (!buf) {
		close(fd);
		return -1;
	}
	memset(buf, c, len);
	ssize_t w = pwrite(fd, buf, len, 0);
	free(buf);
	if (w != (ssize_t)len) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Reads that may fault: SIGSEGV/SIGBUS in a thread that armed its guard
 * jumps back to it (each thread has its own). */
static _Thread_local sigjmp_buf guard_env;
static _Thread_local volatile sig_atomic_t guard_armed;

static void on_guard_signal(int sig, siginfo_t *si, void *uc)
{
	if (guard_armed) {
		guard_armed = 0;
		siglongjmp(guard_env, 1);
	}
	signal(sig, SIG_DFL); /* not ours: die of it */
}

static void guard_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_guard_signal;
	/* No mask to restore after the jump: the signal is not blocked in
	 * its handler, so sigsetjmp need not save the mask (a system call). */
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
}

/* The byte at p, or -1 if reading it faulted. */
static int guarded_peek(const volatile char *p)
{
	if (sigsetjmp(guard_env, 0))
		return -1;
	guard_armed = 1;
	int v = (unsigned char)*p;
	guard_armed = 0;
	return v;
}

/* ------------------------------------- 1. a mapping read while it is made */

/*
 * One thread maps a 16 KiB file of 'a' at the same hint address (or private
 * anonymous memory, or a mapping moved there by mremap), stores into every
 * byte and unmaps it, CHURN_MAPS times; two threads read at the hint all
 * along.  The generation counter says where the mapper is: 1 (mod 4) in the
 * call that maps, 2 between its return and the munmap, 3 in munmap, 0
 * unmapped.  A read made wholly in one generation's phase 2 must see a byte
 * that mapping can hold: 'a' or 'b' for the file, 0 or this generation's
 * byte for anonymous memory; in phases 1 and 3 it may also fault (as with
 * the kernel, a mapping appears and goes at once), never see another byte.
 * The mremap variant maps the file's pages 1-4 elsewhere and moves them to
 * the hint, next to a mapping of page 0 (the kernel merges the two), and
 * pages them out before unmapping them, so that the next mapping's pages
 * are absent from the cache when they are moved.  steps: mappings made;
 * bad_aside: bad reads in phases 1 and 3; other: mappings the system placed
 * elsewhere (not used).
 */
#define CHURN_MAPS 2000
#define CHURN_LEN (4 * PG)
#define CHURN_READERS 2

enum churn_kind { CHURN_FILE, CHURN_ANON, CHURN_MREMAP };

struct churn {
	enum churn_kind kind;
	int fd;
	char *hint, *park; /* park: where CHURN_MREMAP maps before moving */
	atomic_ulong gen;  /* 4 per mapping: the phases above */
	atomic_bool done;
	struct report *rep;
};

static enum churn_kind churn_kind;

/* The byte generation g stores. */
static int churn_byte(const struct churn *ch, unsigned long g)
{
	return ch->kind == CHURN_ANON ? 'b' + (int)(g / 4 % 16) : 'b';
}

/* May a read in phase g see v (-1: it faulted)? */
static bool churn_valid(const struct churn *ch, unsigned long g, int v)
{
	if (v < 0)
		return g % 4 != 2;
	if (ch->kind == CHURN_ANON)
		return v == 0 || v == churn_byte(ch, g);
	return v == 'a' || v == 'b';
}

static char *churn_map(struct churn *ch)
{
	int rw = PROT_READ | PROT_WRITE;
	if (ch->kind == CHURN_ANON)
		return uo->mmap(ch->hint, CHURN_LEN, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (ch->kind == CHURN_FILE)
		return uo->mmap(ch->hint, CHURN_LEN, rw, MAP_SHARED, ch->fd, 0);
	char *q = uo->mmap(ch->park, CHURN_LEN, rw, MAP_SHARED, ch->fd, PG);
	if (q == MAP_FAILED)
		return q;
	if (q < ch->hint + CHURN_LEN && q + CHURN_LEN > ch->hint)
		return q; /* placed over the hint: the caller drops it */
	char *p = uo->mremap(q, CHURN_LEN, CHURN_LEN, MREMAP_MAYMOVE | MREMAP_FIXED, ch->hint);
	if (p == MAP_FAILED)
		uo->munmap(q, CHURN_LEN);
	return p;
}

/* Stores this generation's byte everywhere and reads it back. */
static void churn_store(struct churn *ch, char *p, unsigned long g)
{
	int b = churn_byte(ch, g);
	memset(p, b, CHURN_LEN);
	const volatile char *v = p;
	for (size_t i = 0; i < CHURN_LEN; i++)
		if ((unsigned char)v[i] != b) {
			report_bad(ch->rep, "mapper read back %#lx at offset %ld",
				   (unsigned char)v[i], (long)i);
			break;
		}
}

static unsigned long churn_phase(struct churn *ch)
{
	return atomic_fetch_add(&ch->gen, 1) + 1;
}

static void churn_mapper(struct churn *ch)
{
	for (long i = 0; i < CHURN_MAPS; i++) {
		churn_phase(ch);
		char *p = churn_map(ch);
		if (p == MAP_FAILED) {
			setup_failed(ch->rep, errno);
			break;
		}
		if (p != ch->hint) {
			atomic_fetch_add(&ch->rep->other, 1);
			uo->munmap(p, CHURN_LEN);
			atomic_fetch_add(&ch->gen, 3);
			continue;
		}
		churn_store(ch, p, churn_phase(ch));
		churn_phase(ch);
		if (ch->kind == CHURN_MREMAP)
			uo->madvise(p, CHURN_LEN, MADV_PAGEOUT);
		uo->munmap(p, CHURN_LEN);
		churn_phase(ch);
		atomic_fetch_add(&ch->rep->steps, 1);
	}
	atomic_store(&ch->done, true);
}

static void *churn_reader(void *arg)
{
	struct churn *ch = arg;
	for (unsigned long k = 0; !atomic_load(&ch->done); k++) {
		size_t off = (size_t)(k * 4099) % CHURN_LEN;
		unsigned long g0 = atomic_load(&ch->gen);
		int v = guarded_peek(ch->hint + off);
		unsigned long g1 = atomic_load(&ch->gen);
		if (g0 != g1 || g0 % 4 == 0)
			continue;
		atomic_fetch_add(&ch->rep->checked, 1);
		if (churn_valid(ch, g0, v))
			continue;
		if (g0 % 4 != 2)
			atomic_fetch_add(&ch->rep->bad_aside, 1);
		report_bad(ch->rep, "read %ld (-1: a fault) at offset %ld",
				   v, (long)off);
	}
	return NULL;
}

/* The hint and park addresses: two holes in a reservation of the kernel's,
 * so that the threads' stacks and other mappings made meanwhile land
 * elsewhere. */
static bool churn_places(struct churn *ch)
{
	size_t span = 16 * CHURN_LEN;
	char *r = mmap(NULL, span, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (r == MAP_FAILED)
		return false;
	ch->hint = r + span / 2;
	ch->park = r + span / 4;
	return munmap(ch->hint, CHURN_LEN) == 0 && munmap(ch->park, CHURN_LEN) == 0;
}

static void churn_run(struct report *rep)
{
	struct churn ch = { .kind = churn_kind, .fd = -1, .rep = rep };
	guard_signals();
	if (ch.kind != CHURN_ANON && (ch.fd = byte_file(PG + CHURN_LEN, 'a')) < 0)
		return setup_failed(rep, errno);
	/* Start the engine (and its threads) before choosing the places. */
	char *w = uo->mmap(NULL, CHURN_LEN, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (w == MAP_FAILED || uo->munmap(w, CHURN_LEN))
		return setup_failed(rep, errno);
	pthread_t th[CHURN_READERS];
	if (!churn_places(&ch))
		return setup_failed(rep, errno);
	if (ch.kind == CHURN_MREMAP && uo->mmap(ch.hint - PG, PG, PROT_READ | PROT_WRITE,
					       MAP_SHARED | MAP_FIXED, ch.fd, 0) == MAP_FAILED)
		return setup_failed(rep, errno);
	for (int i = 0; i < CHURN_READERS; i++)
		if (pthread_create(&th[i], NULL, churn_reader, &ch))
			return setup_failed(rep, EAGAIN);
	churn_mapper(&ch);
	for (int i = 0; i < CHURN_READERS; i++)
		pthread_join(th[i], NULL);
}

static void churn_test(enum churn_kind kind, const char *what)
{
	churn_kind = kind;
	struct report *rep = guarded(what, churn_run, CHURN_MAPS);
	long bad = atomic_load(&rep->bad), checked = atomic_load(&rep->checked);
	long made = atomic_load(&rep->steps);
	cr_expect(bad == 0, "%s: %ld bad reads of %ld checked (%ld of them made "
		  "during the mapping or unmapping call); first: %s", what, bad,
		  checked, atomic_load(&rep->bad_aside), rep->first);
	/* Most mappings must land at the hint, or nothing was tested. */
	cr_expect(made >= CHURN_MAPS / 2, "%s: only %ld of %d mappings at the hint",
		  what, made, CHURN_MAPS);
	cr_expect(checked > 0, "%s: no read made while mapped", what);
}

Test(windows, read_while_file_mapped, .timeout = 300)
{
	churn_test(CHURN_FILE, "file 'a' mapped, 'b' stored, unmapped");
}

Test(windows, read_while_anon_mapped, .timeout = 300)
{
	churn_test(CHURN_ANON, "private anonymous mapped, stored, unmapped");
}

Test(windows, read_while_mremap_moves_in, .timeout = 300)
{
	churn_test(CHURN_MREMAP, "file moved by mremap next to its page 0, stored, unmapped");
}

/* ---------------------- 3. a store next to a piece of the file moved in */

/*
 * N maps pages 0-1 of a file at r; M maps page 2, parked at r + 5 pages.
 * MOVES times: msync(N, MS_SYNC) cleans N; M moves next to N (r + 2 pages:
 * the kernel merges the two) while another thread adds one to a counter in
 * N's page 1, then M moves back.  After each msync the counter in the file
 * must equal the one in memory: a store the engine did not see leaves the
 * page clean and the file behind.  M holds the number of moves made (stored
 * after each move) and must reach the file too.  checked: msyncs compared;
 * other: the file's counter at the end.
 */
#define MOVES 1000

struct mover {
	char *r;
	volatile long *ctr;	/* in N's page 1 */
	atomic_long turn, ack;	/* the counter's turn: the move's number */
	struct report *rep;
};

/* A delay that differs from move to move, so that the store falls at
 * every point of the move in turn. */
static void spin(long i)
{
	for (volatile long k = 0; k < i * 7919 % 4096; k++)
		;
}

static void *counter_thread(void *arg)
{
	struct mover *mv = arg;
	for (long i = 1; i <= MOVES; i++) {
		while (atomic_load(&mv->turn) != i)
			sched_yield();
		spin(i);
		*mv->ctr = *mv->ctr + 1;
		atomic_store(&mv->ack, i);
	}
	return NULL;
}

static long file_long(int fd, off_t off)
{
	long v = -1;
	return pread(fd, &v, sizeof v, off) == sizeof v ? v : -1;
}

/* Cleans N and compares the counter in the file with the one in memory. */
static void sync_and_compare(struct mover *mv, int fd)
{
	if (uo->msync(mv->r, 2 * PG, MS_SYNC))
		return setup_failed(mv->rep, errno);
	atomic_fetch_add(&mv->rep->checked, 1);
	long f = file_long(fd, PG), m = *mv->ctr;
	if (f != m)
		report_bad(mv->rep, "file counter %ld, memory %ld after MS_SYNC", f, m);
}

static bool move_m(struct mover *mv, char *from, char *to)
{
	if (uo->mremap(from, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, to) == to)
		return true;
	setup_failed(mv->rep, errno);
	return false;
}

static void mover_loop(struct mover *mv, int fd)
{
	char *next = mv->r + 2 * PG, *park = mv->r + 5 * PG;
	for (long i = 1; i <= MOVES; i++) {
		sync_and_compare(mv, fd);
		atomic_store(&mv->turn, i);
		if (!move_m(mv, park, next))
			break;
		while (atomic_load(&mv->ack) != i)
			sched_yield();
		*(volatile long *)next = i;
		if (!move_m(mv, next, park))
			break;
		atomic_fetch_add(&mv->rep->steps, 1);
	}
}

static void mover_run(struct report *rep)
{
	int rw = PROT_READ | PROT_WRITE;
	struct mover mv = { .rep = rep };
	int fd = byte_file(3 * PG, 0);
	mv.r = uo->mmap(NULL, 8 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fd < 0 || mv.r == MAP_FAILED ||
	    uo->mmap(mv.r, 2 * PG, rw, MAP_SHARED | MAP_FIXED, fd, 0) == MAP_FAILED ||
	    uo->mmap(mv.r + 5 * PG, PG, rw, MAP_SHARED | MAP_FIXED, fd, 2 * PG) == MAP_FAILED)
		return setup_failed(rep, errno);
	mv.ctr = (volatile long *)(mv.r + PG);
	pthread_t th;
	if (pthread_create(&th, NULL, counter_thread, &mv))
		return setup_failed(rep, EAGAIN);
	mover_loop(&mv, fd);
	atomic_store(&mv.turn, MOVES); /* lets the counter end if the loop broke */
	atomic_store(&mv.ack, MOVES);
	pthread_join(th, NULL);
	sync_and_compare(&mv, fd);
	if (uo->msync(mv.r + 5 * PG, PG, MS_SYNC))
		return setup_failed(rep, errno);
	if (file_long(fd, 2 * PG) != atomic_load(&rep->steps))
		report_bad(rep, "moved page: file %ld, moves %ld", file_long(fd, 2 * PG),
			   atomic_load(&rep->steps));
	atomic_store(&rep->other, file_long(fd, PG));
}

Test(windows, store_next_to_a_moved_piece_of_the_file, .timeout = 300)
{
	struct report *rep = guarded("counter next to moves", mover_run, MOVES);
	long bad = atomic_load(&rep->bad);
	cr_expect(atomic_load(&rep->steps) == MOVES, "%ld of %d moves made",
		  atomic_load(&rep->steps), MOVES);
	cr_expect(bad == 0, "%ld of %ld MS_SYNCs left the file behind memory; "
		  "the file's counter at the end: %ld of %d; first: %s", bad,
		  atomic_load(&rep->checked), atomic_load(&rep->other), MOVES, rep->first);
}

/* ------------------------- 6. a store into a page eviction just punched */

/*
 * A store into a clean page queues a write-protect fault; eviction may
 * punch the page before the fault is handled.  WP_WRITERS threads each read
 * then store into their own pages of a shared file mapping (the read makes
 * the page present and clean, the store faults for write protection), round
 * after round, while another thread reads the rest of the file to keep
 * eviction busy under a budget of a few pages.  Every store must return
 * and, at the end, be in memory and, after MS_SYNC, in the file.  steps:
 * stores made; checked: stored bytes compared (memory, then file); other:
 * the write-protect faults ummap served.
 */
#define WP_PAGES 64		/* stored into */
#define WP_READ_PAGES 512	/* read to force eviction */
#define WP_ROUNDS 128
#define WP_WRITERS 3

struct evict_run {
	char *map;
	pthread_barrier_t bar;
	atomic_int writing;
	struct report *rep;
};

struct evict_writer {
	struct evict_run *ev;
	int id;
	pthread_t th;
};

static uint8_t wp_byte(size_t pg, int round)
{
	return (uint8_t)(1 + (pg * 31 + (size_t)round) % 255);
}

static void *wp_writer(void *arg)
{
	struct evict_writer *w = arg;
	struct evict_run *ev = w->ev;
	pthread_barrier_wait(&ev->bar);
	volatile uint8_t *m = (volatile uint8_t *)ev->map;
	for (int round = 0; round < WP_ROUNDS; round++)
		for (size_t pg = (size_t)w->id; pg < WP_PAGES; pg += WP_WRITERS) {
			/* Then a read of another page, so that the page stored
			 * into is not this thread's last fault (which eviction
			 * spares). */
			(void)m[pg * PG + PG - 1];
			(void)m[(pg + WP_WRITERS) % WP_PAGES * PG + PG - 1];
			m[pg * PG + (size_t)round * 8] = wp_byte(pg, round);
			atomic_fetch_add(&ev->rep->steps, 1);
		}
	atomic_fetch_sub(&ev->writing, 1);
	return NULL;
}

static void *evicting_reader(void *arg)
{
	struct evict_run *ev = arg;
	pthread_barrier_wait(&ev->bar);
	for (size_t k = 0; atomic_load(&ev->writing) > 0; k++)
		(void)((volatile char *)ev->map)[(WP_PAGES + k % WP_READ_PAGES) * PG];
	return NULL;
}

/* Every stored byte of page pg in buf (the mapping or the file's bytes). */
static void check_stores(struct report *rep, const uint8_t *buf, const char *where)
{
	for (size_t pg = 0; pg < WP_PAGES; pg++)
		for (int round = 0; round < WP_ROUNDS; round++) {
			atomic_fetch_add(&rep->checked, 1);
			uint8_t v = ((const volatile uint8_t *)buf)[pg * PG + (size_t)round * 8];
			if (v != wp_byte(pg, round))
				report_bad(rep, where[0] == 'm' ? "memory: page %ld byte %ld lost"
								: "file: page %ld byte %ld lost",
					   (long)pg, (long)round * 8);
		}
}

static void evict_threads(struct evict_run *ev)
{
	struct evict_writer w[WP_WRITERS];
	pthread_t reader;
	pthread_barrier_init(&ev->bar, NULL, WP_WRITERS + 1);
	atomic_store(&ev->writing, WP_WRITERS);
	for (int i = 0; i < WP_WRITERS; i++) {
		w[i] = (struct evict_writer){ .ev = ev, .id = i };
		if (pthread_create(&w[i].th, NULL, wp_writer, &w[i]))
			abort();
	}
	if (pthread_create(&reader, NULL, evicting_reader, ev))
		abort();
	for (int i = 0; i < WP_WRITERS; i++)
		pthread_join(w[i].th, NULL);
	pthread_join(reader, NULL);
	pthread_barrier_destroy(&ev->bar);
}

static void evict_run(struct report *rep)
{
	size_t len = (WP_PAGES + WP_READ_PAGES) * PG;
	struct evict_run ev = { .rep = rep };
#ifndef DIFF_KERNEL_ONLY
	/* Page by page, so that a fault brings in only its page. */
	struct um_config cfg = { .budget = 16 * PG, .fault_size = PG };
	if (um_configure(&cfg))
		return setup_failed(rep, errno);
#endif
	int fd = byte_file(len, 0);
	if (fd < 0)
		return setup_failed(rep, errno);
	ev.map = uo->mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (ev.map == MAP_FAILED)
		return setup_failed(rep, errno);
	uo->madvise(ev.map, len, MADV_RANDOM); /* no readahead */
	evict_threads(&ev);
#ifndef DIFF_KERNEL_ONLY
	struct um_stats st;
	if (um_stats(ev.map, &st) == 0)
		atomic_store(&rep->other, (long)st.wp_faults);
#endif
	check_stores(rep, (uint8_t *)ev.map, "memory");
	uint8_t *buf = malloc(WP_PAGES * PG);
	if (!buf || uo->msync(ev.map, len, MS_SYNC) ||
	    pread(fd, buf, WP_PAGES * PG, 0) != (ssize_t)(WP_PAGES * PG))
		return setup_failed(rep, errno);
	check_stores(rep, buf, "file");
	free(buf);
}

Test(windows, store_into_a_page_eviction_punched, .timeout = 300)
{
	long stores = (long)WP_ROUNDS * WP_PAGES;
	struct report *rep = guarded("stores under eviction", evict_run, stores);
	cr_expect(atomic_load(&rep->steps) == stores, "%ld of %ld stores made",
		  atomic_load(&rep->steps), stores);
	cr_expect(atomic_load(&rep->bad) == 0, "%ld of %ld stored bytes lost; first: %s",
		  atomic_load(&rep->bad), atomic_load(&rep->checked), rep->first);
}

#ifndef DIFF_KERNEL_ONLY
#include "internal.h" /* the engine's lock, to hold a fault in its window */

/*
 * The same window made certain with the engine's own lock: a store to a
 * clean page faults (write-protect) while this thread holds um.lock, so the
 * fault thread has read the message and waits; the page is punched
 * meanwhile, which leaves the kernel's write-protect marker in its place;
 * then the lock goes.  The store must complete, and reach the file.  (The
 * engine before this test also passes it: its retried store met the marker
 * and came back as a missing-page fault.  The endless loop reported for
 * this window was not reproduced; the fault path now serves such a fault
 * as a write fault at once.)
 */
static atomic_int stale_tid;

static void *stale_store(void *arg)
{
	atomic_store(&stale_tid, (int)gettid());
	((volatile char *)arg)[100] = 'S';
	return NULL;
}

/* Is thread tid asleep in the kernel's userfaultfd handler? */
static bool in_userfault(int tid)
{
	char path[64], buf[64] = "";
	snprintf(path, sizeof path, "/proc/self/task/%d/wchan", tid);
	int fd = open(path, O_RDONLY);
	ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
	if (fd >= 0)
		close(fd);
	return n > 0 && strstr(buf, "userfault");
}

static void stale_wp_run(struct report *rep)
{
	int fd = byte_file(4 * PG, 'a');
	char *p = um_mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (fd < 0 || p == MAP_FAILED)
		return setup_failed(rep, errno);
	if (p[100] != 'a') /* present and clean: write-protected */
		report_bad(rep, "read %ld, not 'a' (%ld)", p[100], 'a');
	pthread_t t;
	um_lock();
	if (pthread_create(&t, NULL, stale_store, p))
		return setup_failed(rep, EAGAIN);
	while (!atomic_load(&stale_tid) || !in_userfault(atomic_load(&stale_tid)))
		sched_yield();
	struct um_region *r = region_at((uintptr_t)p);
	cache_drop(r->r_cache, r->r_off, PG, false);
	um_unlock();
	pthread_join(t, NULL);
	atomic_store(&rep->steps, 1);
	char c = 0;
	if (um_msync(p, 4 * PG, MS_SYNC) || pread(fd, &c, 1, 100) != 1)
		return setup_failed(rep, errno);
	atomic_store(&rep->checked, 2);
	if (p[100] != 'S' || c != 'S')
		report_bad(rep, "memory %ld, file %ld, not 'S'", p[100], c);
}

Test(windows, store_whose_page_is_punched_before_its_fault_is_served, .timeout = 300)
{
	struct report *rep = guarded("stale write-protect fault", stale_wp_run, 1);
	cr_expect(atomic_load(&rep->bad) == 0, "%s", rep->first);
}
#endif

/* ------------------------------------------------ 2. mremap over a hole */

/*
 * p: 12 pages of private anonymous memory (page i filled with 'a' + i, or
 * left PROT_NONE), followed by a reserved page so that it cannot grow in
 * place; mremap(p + 5 pages, 7 pages, 8 pages, MREMAP_MAYMOVE) moves the
 * tail away and leaves a hole at [p + 5, p + 12).
 */
static char *holed(const struct mm_ops *o, struct diff_log *log, int prot)
{
	char *p = D_MMAP(log, o, NULL, 13 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_MMAP(log, o, p, 12 * PG, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
	for (int i = 0; prot != PROT_NONE && i < 12; i++)
		D_FILL(log, p + i * PG, 'a' + i, PG);
	char *t = D_MREMAP(log, o, p + 5 * PG, 7 * PG, 8 * PG, MREMAP_MAYMOVE);
	if (t != MAP_FAILED && prot != PROT_NONE)
		T_READ(log, t, 8 * PG);
	return p;
}

/* A byte of each of the first n pages at p: read, or the signal. */
static void peek_pages(struct diff_log *log, char *p, int n)
{
	for (volatile int i = 0; i < n; i++)
		T_PEEK(log, p + i * PG + 7);
}

/* Each of the first n pages at p whole: its bytes, or the signal. */
static void read_pages(struct diff_log *log, char *p, int n)
{
	for (volatile int i = 0; i < n; i++)
		T_READ(log, p + i * PG, PG);
}

/* A store into each of the first n pages at p, or the signal. */
static void poke_pages(struct diff_log *log, char *p, int n)
{
	for (volatile int i = 0; i < n; i++)
		T_POKE(log, p + i * PG + 9, 'p');
}

DIFF_TEST(windows, mremap_same_length_over_a_hole)
{
	char *p = holed(o, log, PROT_READ | PROT_WRITE);
	D_MREMAP(log, o, p + 3 * PG, 6 * PG, 6 * PG, 0);
	peek_pages(log, p, 13);
	T_POKE(log, p + 5 * PG, 'z');
	peek_pages(log, p, 13);
}

DIFF_TEST(windows, mremap_shrink_over_a_hole)
{
	char *p = holed(o, log, PROT_READ | PROT_WRITE);
	D_MREMAP(log, o, p + 3 * PG, 6 * PG, 4 * PG, 0);
	peek_pages(log, p, 13);
	D_MREMAP(log, o, p + 2 * PG, 8 * PG, 3 * PG, 0);
	peek_pages(log, p, 13);
}

DIFF_TEST(windows, mremap_maymove_over_a_hole)
{
	char *p = holed(o, log, PROT_READ | PROT_WRITE);
	D_MREMAP(log, o, p + 3 * PG, 6 * PG, 6 * PG, MREMAP_MAYMOVE);
	peek_pages(log, p, 13);
	D_MREMAP(log, o, p + 1 * PG, 7 * PG, 5 * PG, MREMAP_MAYMOVE);
	peek_pages(log, p, 13);
	/* Growing over the hole: the old range is not one mapping. */
	D_MREMAP(log, o, p + 3 * PG, 6 * PG, 8 * PG, MREMAP_MAYMOVE);
	peek_pages(log, p, 13);
}

DIFF_TEST(windows, mremap_prot_none_over_a_hole_then_mprotect)
{
	char *p = holed(o, log, PROT_NONE);
	D_MREMAP(log, o, p + 3 * PG, 6 * PG, 6 * PG, 0);
	D_CALL(log, o->mprotect(p + 3 * PG, 6 * PG, PROT_READ | PROT_WRITE));
	peek_pages(log, p, 13);
	D_CALL(log, o->mprotect(p, 5 * PG, PROT_READ));
	peek_pages(log, p, 13);
}

/* ------------------------------------ 4. MADV_FREE marks and a later store */

/*
 * Pages given MADV_FREE are the kernel's to drop until they are stored
 * into again; a store after fork() (the child has exited) or after the
 * range moved must keep its page through MADV_PAGEOUT.  Only the page
 * stored into is compared: whether the kernel drops the others at once
 * depends on its LRU batches.
 */
static char *freed_pages(const struct mm_ops *o, struct diff_log *log)
{
	char *a = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_FILL(log, a, 'f', 4 * PG);
	D_CALL(log, o->madvise(a, 4 * PG, MADV_FREE));
	return a;
}

static void store_then_pageout(const struct mm_ops *o, struct diff_log *log, char *a)
{
	D_FILL(log, a, 'x', 8);
	D_CALL(log, o->madvise(a, 4 * PG, MADV_PAGEOUT));
	D_READ(log, a, PG);
	D_CALL(log, o->munmap(a, 4 * PG));
}

DIFF_TEST(windows, madv_free_then_fork_then_store)
{
	char *a = freed_pages(o, log);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0)
		_exit(0);
	int st = -1;
	D_CALL(log, waitpid(pid, &st, 0) == pid);
	D_VAL(log, st);
	store_then_pageout(o, log, a);
}

DIFF_TEST(windows, madv_free_then_mremap_then_store)
{
	char *a = freed_pages(o, log);
	char *r = D_MMAP(log, o, NULL, 4 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *b = D_MREMAP_TO(log, o, a, 4 * PG, 4 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, r);
	if (b != MAP_FAILED)
		store_then_pageout(o, log, b);
}

/* ---------------------------- 5. a store after mprotect failed half-way */

/*
 * mprotect over a hole fails with ENOMEM after changing what comes before
 * the hole, splitting the mapping there; stores into the changed and the
 * unchanged part (under MADV_SEQUENTIAL, whose readahead spans the split)
 * must return, and every page then read and written as with the kernel.
 */
DIFF_TEST(windows, store_after_mprotect_failed_half_way)
{
	int rw = PROT_READ | PROT_WRITE;
	int fd0 = diff_mkfile(log, dir, "f", 4 * PG, 7);
	int fd = D_OPEN(log, dir, "f", O_RDONLY);
	char *a = D_MMAP(log, o, NULL, 32 * PG, rw, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_CALL(log, o->munmap(a + 16 * PG, 4 * PG));
	D_MMAP(log, o, a + 24 * PG, 4 * PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	D_CALL(log, o->madvise(a, 16 * PG, MADV_SEQUENTIAL));
	D_CALL(log, o->mprotect(a + 8 * PG, 24 * PG, rw | PROT_EXEC));
	T_FILL(log, a + PG, 0x5a, 0xbe09);
	read_pages(log, a, 32);
	poke_pages(log, a, 32);
	D_READ(log, a, 16 * PG);
	close(fd);
	close(fd0);
}

/* ------------------------------------ 7. one mremap moving several VMAs */

/*
 * Linux 6.17 moves a range spanning several VMAs in one
 * mremap(MREMAP_MAYMOVE | MREMAP_FIXED [| MREMAP_DONTUNMAP]) when the
 * length stays the same: the VMAs keep their kinds and protections, gaps
 * between them stay gaps at the destination; a gap at the start, or a
 * length change, is EFAULT.  Older kernels refuse any such move (EFAULT):
 * these tests are then skipped, after a probe of the kernel's own mremap.
 */
static bool kernel_moves_several_vmas(void)
{
	char *a = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *d = mmap(NULL, 4 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	cr_assert(a != MAP_FAILED && d != MAP_FAILED, "mmap: %s", strerror(errno));
	cr_assert(mprotect(a + PG, PG, PROT_READ) == 0, "mprotect: %s", strerror(errno));
	void *m = mremap(a, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, d);
	munmap(a, 8 * PG);
	munmap(d, 4 * PG);
	return m != MAP_FAILED;
}

#define MOVE_TEST(name)                                                      \
	static void windows__##name(const struct mm_ops *o,                  \
				    struct diff_log *log, const char *dir);  \
	Test(windows, name, .timeout = 180)                                  \
	{                                                                    \
		if (!kernel_moves_several_vmas())                            \
			cr_skip_test("the running kernel does not move several " \
				     "VMAs in one mremap (Linux 6.17+)");     \
		diff_run("windows::" #name, windows__##name);                 \
	}                                                                    \
	static void windows__##name(const struct mm_ops *o,                  \
				    struct diff_log *log, const char *dir)

/* What each two-page piece of a range to move is. */
enum piece { P_ANON, P_RDONLY, P_FILE_SHARED, P_ANON_SHARED, P_FILE_PRIVATE, P_HOLE };
#define NPIECES 4

/* Piece i at s + 2i pages, filled with 'A' + i where it can be. */
static void map_piece(const struct mm_ops *o, struct diff_log *log, char *s, int i, int kind, int fd)
{
	char *p = s + 2 * i * PG;
	int rw = PROT_READ | PROT_WRITE, fixed = MAP_FIXED;
	off_t off = 2 * i * (off_t)PG;
	if (kind == P_HOLE) {
		D_CALL(log, o->munmap(p, 2 * PG));
		return;
	}
	if (kind == P_ANON || kind == P_RDONLY)
		D_MMAP(log, o, p, 2 * PG, rw, MAP_PRIVATE | MAP_ANONYMOUS | fixed, -1, 0);
	else if (kind == P_ANON_SHARED)
		D_MMAP(log, o, p, 2 * PG, rw, MAP_SHARED | MAP_ANONYMOUS | fixed, -1, 0);
	else
		D_MMAP(log, o, p, 2 * PG, rw, (kind == P_FILE_SHARED ? MAP_SHARED : MAP_PRIVATE) | fixed, fd, off);
	D_FILL(log, p, 'A' + i, 2 * PG);
	if (kind == P_RDONLY)
		D_CALL(log, o->mprotect(p, 2 * PG, PROT_READ));
}

/*
 * The pieces side by side (8 pages, a reserved page on each side), moved
 * with flags to 2 pages into a reservation of 12 pages; then what is
 * mapped where, with which bytes and protection, at both places, and the
 * file after msync.
 */
static void move_pieces(const struct mm_ops *o, struct diff_log *log, const char *dir,
			const int kind[NPIECES], size_t len, int flags)
{
	int fd = diff_mkfile(log, dir, "f", 8 * PG, 11);
	char *r = D_MMAP(log, o, NULL, 10 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *d = D_MMAP(log, o, NULL, 12 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *s = r + PG;
	for (int i = 0; i < NPIECES; i++)
		map_piece(o, log, s, i, kind[i], fd);
	D_MREMAP_TO(log, o, s, 8 * PG, len, flags, d + 2 * PG);
	read_pages(log, r, 10);
	read_pages(log, d, 12);
	poke_pages(log, d, 12);
	poke_pages(log, r, 10);
	D_CALL(log, o->msync(d + 2 * PG, 8 * PG, MS_SYNC));
	/* (A refused move leaves the file mapped at the old place: pread
	 * sees its stores once written back, README: read(2) coherence.) */
	D_CALL(log, o->msync(r, 10 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 8 * PG);
	close(fd);
}

#define MOVE (MREMAP_MAYMOVE | MREMAP_FIXED)

MOVE_TEST(move_several_vmas_of_different_protections)
{
	move_pieces(o, log, dir, (const int[]){ P_ANON, P_RDONLY, P_ANON, P_RDONLY }, 8 * PG, MOVE);
}

MOVE_TEST(move_file_next_to_anonymous_and_shared_next_to_private)
{
	move_pieces(o, log, dir, (const int[]){ P_ANON, P_FILE_SHARED, P_ANON_SHARED, P_FILE_PRIVATE }, 8 * PG, MOVE);
}

MOVE_TEST(move_several_vmas_with_gaps)
{
	move_pieces(o, log, dir, (const int[]){ P_FILE_SHARED, P_HOLE, P_ANON, P_HOLE }, 8 * PG, MOVE);
}

MOVE_TEST(move_several_vmas_dontunmap)
{
	move_pieces(o, log, dir, (const int[]){ P_ANON, P_FILE_SHARED, P_RDONLY, P_ANON_SHARED },
		    8 * PG, MOVE | MREMAP_DONTUNMAP);
}

/* The kernel's refusals: a gap at the start, a length that changes. */
MOVE_TEST(move_several_vmas_refused)
{
	move_pieces(o, log, dir, (const int[]){ P_HOLE, P_ANON, P_RDONLY, P_ANON }, 8 * PG, MOVE);
	move_pieces(o, log, dir, (const int[]){ P_ANON, P_RDONLY, P_ANON, P_RDONLY }, 7 * PG, MOVE);
	move_pieces(o, log, dir, (const int[]){ P_ANON, P_FILE_SHARED, P_ANON, P_RDONLY }, 9 * PG, MOVE);
}

/*
 * A page moved away and back next to the PROT_NONE rest of its mapping:
 * the kernel merges it with that rest, one VMA over two of ummap's regions
 * (an mprotect that changed nothing split them), and drops the
 * registration of the whole VMA.  Every page must be read from the file
 * afterwards.
 */
DIFF_TEST(windows, move_back_next_to_two_regions_of_one_vma)
{
	int rw = PROT_READ | PROT_WRITE;
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 13);
	char *d = D_MMAP(log, o, NULL, PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *p = D_MMAP(log, o, NULL, 3 * PG, rw, MAP_SHARED, fd, PG);
	D_CALL(log, o->mprotect(p + PG, PG, rw));
	D_CALL(log, o->mprotect(p, 3 * PG, PROT_NONE));
	D_MREMAP_TO(log, o, p + 2 * PG, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, d);
	D_MREMAP_TO(log, o, d, PG, PG, MREMAP_MAYMOVE | MREMAP_FIXED, p + 2 * PG);
	D_CALL(log, o->mprotect(p, 3 * PG, PROT_READ));
	read_pages(log, p, 3);
	close(fd);
}

/*
 * A move made VMA by VMA whose pieces merge again at the destination: the
 * kernel merges each moved PROT_NONE piece with the one moved before it
 * and drops the registration of the whole VMA, which spans several of
 * ummap's regions (here three: an mprotect that changed nothing split the
 * first two).  Every page must be read from the file afterwards.
 */
MOVE_TEST(move_pieces_that_merge_at_the_destination)
{
	int rw = PROT_READ | PROT_WRITE;
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 13);
	char *d = D_MMAP(log, o, NULL, 5 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	char *p = D_MMAP(log, o, NULL, 3 * PG, rw, MAP_SHARED, fd, PG);
	D_CALL(log, o->mprotect(p + PG, PG, rw));
	D_CALL(log, o->mprotect(p, 2 * PG, PROT_NONE));
	D_CALL(log, o->mprotect(p + 2 * PG, PG, PROT_READ));
	char *q = D_MREMAP_TO(log, o, p, 3 * PG, 3 * PG, MOVE, d + PG);
	if (q != MAP_FAILED) {
		D_CALL(log, o->mprotect(q, 3 * PG, PROT_READ));
		read_pages(log, q, 3);
	}
	close(fd);
}
