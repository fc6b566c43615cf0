/*
 * test_break.c - races and corner cases of the engine's mremap fence,
 * um_mmap's MAP_FIXED replacement and locked mappings: each test is a
 * scenario where the kernel's calls keep a rule that ummap's broke when
 * the test was written.
 *
 * Stress runs go to a forked child that reports in shared memory (a hang
 * is a failure after GUARD_SECS, nothing is timed on the way to a pass);
 * the other tests are differential scenarios (tests/lib/diff.h).  Built
 * with -DDIFF_KERNEL_ONLY every call goes to the kernel, and every test
 * must pass:
 *   cc -std=c11 -D_GNU_SOURCE -DDIFF_KERNEL_ONLY -pthread -Iinclude -Isrc \
 *      -Itests/lib -o build/test_break_kernel tests/test_break.c \
 *      tests/lib/diff.c tests/lib/fds.c -lcriterion
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "diff.h"

#define PG DIFF_PG
#define GUARD_SECS 120

static const struct mm_ops *uo = &ummap_ops;

/* What a stress run reports to the parent, in memory shared with it. */
struct report {
	atomic_long steps;	/* iterations done */
	atomic_long checked;	/* observations */
	atomic_long bad;	/* of which broke the rule */
	atomic_long lost;	/* stores lost (see each) */
	atomic_long back;	/* reads of a value older than one read before */
	atomic_int setup_err;	/* errno of a failed set-up call */
};

static void setup_failed(struct report *rep, int err)
{
	int zero = 0;
	atomic_compare_exchange_strong(&rep->setup_err, &zero, err ? err : -1);
}

/* Runs fn in a forked child; fails if it hangs (GUARD_SECS) or dies. */
static struct report *guarded(const char *what, void (*fn)(struct report *))
{
	struct report *rep = mmap(NULL, sizeof *rep, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	cr_assert(rep != MAP_FAILED, "mmap: %s", strerror(errno));
	memset(rep, 0, sizeof *rep);
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
	cr_assert(n != 0, "%s: hung (killed after %d s) at step %ld", what, GUARD_SECS, atomic_load(&rep->steps));
	cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: the child ended with %s %d at step %ld", what,
		  WIFEXITED(st) ? "exit" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st),
		  atomic_load(&rep->steps));
	cr_assert(atomic_load(&rep->setup_err) == 0, "%s: set-up failed: %s", what,
		  strerror(atomic_load(&rep->setup_err)));
	return rep;
}

/* A file of len zero bytes in TMPDIR, already unlinked; O_RDWR. */
static int zero_file(size_t len)
{
	const char *tmp = getenv("TMPDIR");
	char path[256];
	snprintf(path, sizeof path, "%s/ummap-break-XXXXXX", tmp && *tmp ? tmp : "/tmp");
	int fd = mkstemp(path);
	if (fd < 0)
		return -1;
	unlink(path);
	if (ftruncate(fd, (off_t)len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Accesses that may fault: SIGSEGV/SIGBUS in a thread that armed its
 * guard jumps back to it. */
static _Thread_local sigjmp_buf guard_env;
static _Thread_local volatile sig_atomic_t guard_armed;

static void on_guard_signal(int sig, siginfo_t *si, void *uc)
{
	if (guard_armed) {
		guard_armed = 0;
		siglongjmp(guard_env, 1);
	}
	signal(sig, SIG_DFL);
}

static void guard_signals(void)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_guard_signal;
	sa.sa_flags = SA_SIGINFO | SA_NODEFER;
	sigaction(SIGSEGV, &sa, NULL);
	sigaction(SIGBUS, &sa, NULL);
}

/* The long at p, or -1 if reading it faulted. */
static long guarded_load(const volatile long *p)
{
	if (sigsetjmp(guard_env, 0))
		return -1;
	guard_armed = 1;
	long v = *p;
	guard_armed = 0;
	return v;
}

/* *p incremented; false if an access faulted (then nothing was stored). */
static bool guarded_increment(volatile long *p)
{
	if (sigsetjmp(guard_env, 0))
		return false;
	guard_armed = 1;
	long v = *p;
	*p = v + 1;
	guard_armed = 0;
	return true;
}

/* ------------------------ 1. mremap that leaves the old range in place */

/*
 * mremap calls after which the first MAPPED pages of p are still mapped
 * where they were, as they were: MREMAP_MAYMOVE with the same length (a
 * no-op), old_size 0 (a duplicate elsewhere, then unmapped), growth in
 * place with MREMAP_MAYMOVE (room was left after p) and a shrink back.
 * The kernel does each under its mmap lock: a thread reading those pages
 * all along never faults.
 */
#define KEPT_CALLS 3000
#define MAPPED 4

enum kept_kind { KEPT_FILE, KEPT_ANON_SHARED, KEPT_ANON_PRIVATE };

struct kept {
	volatile long *p;
	atomic_bool done;
	struct report *rep;
};

static void *kept_reader(void *arg)
{
	struct kept *k = arg;
	for (unsigned long i = 0; !atomic_load(&k->done); i++) {
		long v = guarded_load(k->p + (i % MAPPED) * (PG / sizeof(long)));
		atomic_fetch_add(&k->rep->checked, 1);
		if (v != 7)
			atomic_fetch_add(&k->rep->bad, 1);
	}
	return NULL;
}

/* One of the calls above; false if it failed. */
static bool kept_call(struct kept *k, unsigned long i, bool shared)
{
	char *p = (char *)k->p;
	switch (i % 3) {
	case 0:
		return uo->mremap(p, MAPPED * PG, MAPPED * PG, MREMAP_MAYMOVE) == p;
	case 1:
		if (shared) {
			char *d = uo->mremap(p, 0, MAPPED * PG, MREMAP_MAYMOVE);
			return d != MAP_FAILED && uo->munmap(d, MAPPED * PG) == 0;
		}
		return true; /* (private memory cannot be duplicated) */
	default:
		return uo->mremap(p, MAPPED * PG, 2 * MAPPED * PG, MREMAP_MAYMOVE) == p &&
		       uo->mremap(p, 2 * MAPPED * PG, MAPPED * PG, 0) == p;
	}
}

static enum kept_kind kept_kind;

static void kept_run(struct report *rep)
{
	guard_signals();
	int fd = zero_file(2 * MAPPED * PG);
	int flags = kept_kind == KEPT_FILE ? MAP_SHARED : kept_kind == KEPT_ANON_SHARED ? MAP_SHARED | MAP_ANONYMOUS
											: MAP_PRIVATE | MAP_ANONYMOUS;
	/* Room after the mapping for growth in place, kept free. */
	char *p = fd < 0 ? MAP_FAILED : uo->mmap(NULL, 2 * MAPPED * PG, PROT_READ | PROT_WRITE, flags,
					       flags & MAP_ANONYMOUS ? -1 : fd, 0);
	if (p == MAP_FAILED || uo->munmap(p + MAPPED * PG, MAPPED * PG) < 0) {
		setup_failed(rep, errno);
		return;
	}
	for (int i = 0; i < MAPPED; i++)
		*(long *)(p + i * PG) = 7;
	struct kept k = { .p = (volatile long *)p, .rep = rep };
	pthread_t t;
	pthread_create(&t, NULL, kept_reader, &k);
	while (!atomic_load(&rep->checked)) /* (or a fast run may end before the reader's first read) */
		sched_yield();
	for (unsigned long i = 0; i < KEPT_CALLS; i++, atomic_fetch_add(&rep->steps, 1))
		if (!kept_call(&k, i, flags & MAP_SHARED)) {
			setup_failed(rep, errno);
			break;
		}
	atomic_store(&k.done, true);
	pthread_join(t, NULL);
}

static void kept_test(enum kept_kind kind, const char *what)
{
	kept_kind = kind;
	struct report *rep = guarded(what, kept_run);
	cr_expect(atomic_load(&rep->checked) > 0, "%s: no read made", what);
	cr_expect(atomic_load(&rep->bad) == 0, "%s: %ld of %ld reads of pages mremap left in place faulted "
		  "or read another value", what, atomic_load(&rep->bad), atomic_load(&rep->checked));
}

Test(break, read_while_mremap_keeps_a_shared_file_mapping, .timeout = 300)
{
	kept_test(KEPT_FILE, "shared file");
}

Test(break, read_while_mremap_keeps_shared_anonymous_memory, .timeout = 300)
{
	kept_test(KEPT_ANON_SHARED, "shared anonymous");
}

Test(break, read_while_mremap_keeps_private_anonymous_memory, .timeout = 300)
{
	kept_test(KEPT_ANON_PRIVATE, "private anonymous");
}

/* -------------------------- 2. MAP_FIXED over a mapping of the same file */

/*
 * A thread increments a counter in a shared file mapping (load, store),
 * another reads it, while the main thread maps the same page of the file
 * at the same address with MAP_FIXED, FIXED_MAPS times.  The kernel
 * replaces the mapping under its mmap lock, with the same page cache page:
 * no access faults, the counter never goes back, every increment is in
 * memory and in the file at the end.  steps: mappings made; bad: faults;
 * back: reads going back; lost: increments missing from memory.
 */
#define FIXED_MAPS 2000

struct fixed {
	volatile long *p;
	atomic_bool done;
	atomic_long incs;
	struct report *rep;
};

static void *fixed_incrementer(void *arg)
{
	struct fixed *f = arg;
	while (!atomic_load(&f->done))
		if (guarded_increment(f->p))
			atomic_fetch_add(&f->incs, 1);
		else
			atomic_fetch_add(&f->rep->bad, 1);
	return NULL;
}

static void *fixed_reader(void *arg)
{
	struct fixed *f = arg;
	long last = 0;
	while (!atomic_load(&f->done)) {
		long v = guarded_load(f->p);
		atomic_fetch_add(&f->rep->checked, 1);
		if (v < 0)
			atomic_fetch_add(&f->rep->bad, 1);
		else if (v < last)
			atomic_fetch_add(&f->rep->back, 1);
		else
			last = v;
	}
	return NULL;
}

static void fixed_run(struct report *rep)
{
	guard_signals();
	int fd = zero_file(PG);
	char *p = fd < 0 ? MAP_FAILED : uo->mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		setup_failed(rep, errno);
		return;
	}
	struct fixed f = { .p = (volatile long *)p, .rep = rep };
	pthread_t t[2];
	pthread_create(&t[0], NULL, fixed_incrementer, &f);
	pthread_create(&t[1], NULL, fixed_reader, &f);
	for (int i = 0; i < FIXED_MAPS; i++, atomic_fetch_add(&rep->steps, 1))
		if (uo->mmap(p, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0) != p) {
			setup_failed(rep, errno);
			break;
		}
	atomic_store(&f.done, true);
	pthread_join(t[0], NULL);
	pthread_join(t[1], NULL);
	long file = -1;
	if (uo->msync(p, PG, MS_SYNC) < 0 || pread(fd, &file, sizeof file, 0) != sizeof file)
		setup_failed(rep, errno);
	atomic_store(&rep->lost, atomic_load(&f.incs) - *f.p + (file != *f.p));
}

Test(break, store_while_mapped_fixed_over_itself, .timeout = 300)
{
	struct report *rep = guarded("MAP_FIXED over itself", fixed_run);
	cr_expect(atomic_load(&rep->bad) == 0, "%ld accesses faulted (%ld reads)", atomic_load(&rep->bad),
		  atomic_load(&rep->checked));
	cr_expect(atomic_load(&rep->back) == 0, "%ld reads saw the counter go back (of %ld)",
		  atomic_load(&rep->back), atomic_load(&rep->checked));
	cr_expect(atomic_load(&rep->lost) == 0, "%ld increments lost (or the file differs from memory)",
		  atomic_load(&rep->lost));
}

/* ------------------------------------- 3. a locked mapping grown in place */

/*
 * mremap grows a MAP_LOCKED mapping in place (no MREMAP_MAYMOVE): the
 * kernel populates the grown part inside the call, as mlock would.  Then
 * every page is read.  A call that never returns is killed by the harness
 * (DIFF_TIMEOUT) and shows as a divergence in how the child ended.
 */
static void grow_locked(const struct mm_ops *o, struct diff_log *log, const char *dir, int flags)
{
	int fd = diff_mkfile(log, dir, "f", 8 * PG, 5);
	char *p = D_MMAP(log, o, NULL, 8 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_CALL(log, o->munmap(p + 4 * PG, 4 * PG));
	D_MMAP(log, o, p, 4 * PG, PROT_READ | PROT_WRITE, flags | MAP_LOCKED | MAP_FIXED,
	       flags & MAP_ANONYMOUS ? -1 : fd, 0);
	D_FILL(log, p, 'x', 16);
	D_MREMAP(log, o, p, 4 * PG, 8 * PG, 0);
	for (volatile int i = 0; i < 8; i++)
		T_READ(log, p + i * PG, PG);
	close(fd);
}

DIFF_TEST(break, mremap_grows_a_locked_shared_file_mapping_in_place)
{
	grow_locked(o, log, dir, MAP_SHARED);
}

DIFF_TEST(break, mremap_grows_a_locked_private_file_mapping_in_place)
{
	grow_locked(o, log, dir, MAP_PRIVATE);
}


/* Each of the first n pages at p whole: its bytes, or the signal. */
static void read_pages(struct diff_log *log, char *p, int n)
{
	for (volatile int i = 0; i < n; i++)
		T_READ(log, p + i * PG, PG);
}

/* ------------------------------------------ 4. mprotect's argument checks */

/*
 * The kernel validates prot (unknown bits, PROT_GROWSDOWN on a mapping that
 * does not grow down: EINVAL) before it looks at a mapping's VM_MAYWRITE
 * (EACCES).  On a shared mapping of a file opened read-only both are wrong.
 */

DIFF_TEST(break, mprotect_bad_prot_on_a_read_only_shared_mapping)
{
	int fd0 = diff_mkfile(log, dir, "f", 4 * PG, 3);
	int fd = D_OPEN(log, dir, "f", O_RDONLY);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ, MAP_SHARED, fd, 0);
	D_CALL(log, o->mprotect(p, 4 * PG, PROT_READ | PROT_WRITE | 0x100));
	D_CALL(log, o->mprotect(p, 4 * PG, PROT_WRITE | PROT_GROWSDOWN));
	D_CALL(log, o->mprotect(p + 1, 4 * PG, PROT_WRITE));
	D_CALL(log, o->mprotect(p, 0, PROT_WRITE));
	D_CALL(log, o->mprotect(p, 8 * PG, PROT_WRITE));
	D_CALL(log, o->mprotect(p + 8 * PG, 4 * PG, PROT_WRITE));
	D_CALL(log, o->mprotect(p, (size_t)-PG, PROT_WRITE));
	close(fd);
	close(fd0);
}

/* ------------------------------------------- 5. mremap corners that held */

/* Copy-on-write pages of a private file mapping grown and moved, paged
 * out, made read-only, a piece moved back, then a fork child reads them. */
DIFF_TEST(break, private_file_cow_pages_moved_then_fork)
{
	int fd = diff_mkfile(log, dir, "f", 8 * PG, 4);
	char *p = D_MMAP(log, o, NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	D_FILL(log, p + PG, 'c', PG);
	D_FILL(log, p + 5 * PG, 'd', 100);
	char *q = D_MREMAP(log, o, p, 8 * PG, 16 * PG, MREMAP_MAYMOVE);
	read_pages(log, q, 16);
	D_CALL(log, o->madvise(q, 8 * PG, MADV_PAGEOUT));
	D_CALL(log, o->msync(q, 8 * PG, MS_INVALIDATE));
	D_READ(log, q, 8 * PG);
	D_CALL(log, o->mprotect(q, 8 * PG, PROT_READ));
	char *r = D_MREMAP_TO(log, o, q + 2 * PG, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, p);
	D_CALL(log, o->mprotect(q, 8 * PG, PROT_READ | PROT_WRITE));
	read_pages(log, q, 8);
	read_pages(log, r, 2);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		int ok = q[PG] == 'c' && q[5 * PG] == 'd';
		q[6 * PG] = 'e';
		_exit(ok ? 0 : 3);
	}
	int st = -1;
	D_CALL(log, waitpid(pid, &st, 0) == pid);
	D_VAL(log, st);
	D_READ(log, q, 8 * PG);
	D_PREAD(log, fd, 0, 8 * PG);
	close(fd);
}

/* Stores through duplicates (old_size 0) of a shared file mapping and
 * through a piece moved with MREMAP_DONTUNMAP reach the file. */
DIFF_TEST(break, stores_through_duplicates_of_a_shared_file_mapping)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 6);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_READ(log, p, 4 * PG);
	char *d = D_MREMAP(log, o, p, 0, 4 * PG, MREMAP_MAYMOVE);
	D_FILL(log, d + PG, 'z', PG);
	D_READ(log, p, 4 * PG);
	D_CALL(log, o->munmap(p, 4 * PG));
	D_CALL(log, o->msync(d, 4 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 4 * PG);
	char *e = D_MREMAP(log, o, d, 0, 8 * PG, MREMAP_MAYMOVE);
	read_pages(log, e, 8);
	char *f = D_MREMAP(log, o, d + PG, 2 * PG, 2 * PG, (MREMAP_MAYMOVE | MREMAP_DONTUNMAP));
	D_FILL(log, f, 'y', 10);
	read_pages(log, d, 4);
	D_CALL(log, o->msync(f, 2 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 4 * PG);
	close(fd);
}

/* Private anonymous memory next to a PROT_NONE piece: MREMAP_DONTUNMAP,
 * moves onto overlapping and neighbouring destinations, and the kernel's
 * refusals (EINVAL for an unaligned address, new_size 0, unknown flags,
 * DONTUNMAP with a length change), then fork. */
DIFF_TEST(break, anonymous_moves_next_to_a_prot_none_piece)
{
	char *p = D_MMAP(log, o, NULL, 12 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_FILL(log, p, 'a', 12 * PG);
	D_CALL(log, o->mprotect(p + 4 * PG, 4 * PG, PROT_NONE));
	char *q = D_MREMAP(log, o, p, 4 * PG, 4 * PG, MREMAP_MAYMOVE | MREMAP_DONTUNMAP);
	read_pages(log, p, 12);
	read_pages(log, q, 4);
	char *r = D_MREMAP(log, o, p + 4 * PG, 4 * PG, 6 * PG, MREMAP_MAYMOVE);
	read_pages(log, p, 12);
	D_CALL(log, o->mprotect(r, 6 * PG, PROT_READ));
	read_pages(log, r, 6);
	D_MREMAP_TO(log, o, q, 4 * PG, 4 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, q + 2 * PG);
	D_MREMAP_TO(log, o, q, 4 * PG, 4 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, p + 8 * PG);
	read_pages(log, p, 12);
	D_MREMAP_TO(log, o, p + 8 * PG, 4 * PG, 4 * PG, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, p + 10 * PG);
	D_MREMAP(log, o, p + 9 * PG, 0, 4 * PG, MREMAP_MAYMOVE);
	D_MREMAP(log, o, p + 1, 4 * PG, 4 * PG, MREMAP_MAYMOVE);
	D_MREMAP(log, o, p, 4 * PG, 0, MREMAP_MAYMOVE);
	D_MREMAP(log, o, p, 4 * PG, 4 * PG, 0x40);
	D_MREMAP_TO(log, o, p, 4 * PG, 8 * PG, MREMAP_MAYMOVE | MREMAP_FIXED | MREMAP_DONTUNMAP, p + 16 * PG);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0)
		_exit(p[0] == 'a' ? 0 : 3);
	int st = -1;
	D_CALL(log, waitpid(pid, &st, 0) == pid);
	D_VAL(log, st);
}

/* ------------------------------- 6. locked mappings that mremap grows */

#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>

/* Bytes locked in the process (VmLck), or -1. */
static long vm_locked(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	while (f && fgets(line, sizeof line, f))
		if (sscanf(line, "VmLck: %ld kB", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb < 0 ? -1 : kb * 1024;
}

/* The kernel's rules for locked memory of a process without
 * CAP_IPC_LOCK, under an RLIMIT_MEMLOCK of limit bytes. */
static void limit_memlock(struct diff_log *log, rlim_t limit)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2];
	D_CALL(log, syscall(SYS_capget, &h, d) == 0);
	d[CAP_IPC_LOCK / 32].effective &= ~(1U << (CAP_IPC_LOCK % 32));
	D_CALL(log, syscall(SYS_capset, &h, d) == 0);
	struct rlimit rl = { limit, limit };
	D_CALL(log, setrlimit(RLIMIT_MEMLOCK, &rl));
}

/* A shared file mapping of 4 pages, MAP_LOCKED or not, with 4 free pages
 * after it (growth in place). */
static char *map_with_room(struct diff_log *log, const struct mm_ops *o, int fd, int flags)
{
	char *p = D_MMAP(log, o, NULL, 8 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_CALL(log, o->munmap(p + 4 * PG, 4 * PG));
	return D_MMAP(log, o, p, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | flags, fd, 0);
}

/* mremap fails on a range of a locked and an unlocked mapping (EFAULT: it
 * spans two VMAs): the unlocked one stays unlocked. */
DIFF_TEST(break, mremap_refused_over_a_locked_and_an_unlocked_mapping)
{
	int fd = diff_mkfile(log, dir, "f", 8 * PG, 7);
	char *p = D_MMAP(log, o, NULL, 8 * PG, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	D_MMAP(log, o, p, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_LOCKED, fd, 0);
	D_MMAP(log, o, p + 2 * PG, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 4 * PG);
	D_CALL(log, o->munmap(p + 4 * PG, 4 * PG));
	D_VAL(log, vm_locked());
	D_MREMAP(log, o, p, 3 * PG, 6 * PG, MREMAP_MAYMOVE);
	D_VAL(log, vm_locked());
	D_MREMAP(log, o, p, 4 * PG, 5 * PG, 0);
	D_VAL(log, vm_locked());
	read_pages(log, p, 4);
	close(fd);
}

/* A MAP_LOCKED mapping unlocked since (munlock(2)) grows unlocked. */
DIFF_TEST(break, mremap_grows_a_locked_mapping_munlocked_since)
{
	int fd = diff_mkfile(log, dir, "f", 8 * PG, 8);
	char *p = map_with_room(log, o, fd, MAP_LOCKED);
	D_VAL(log, vm_locked());
	D_CALL(log, munlock(p, 4 * PG));
	D_MREMAP(log, o, p, 4 * PG, 8 * PG, MREMAP_MAYMOVE);
	D_VAL(log, vm_locked());
	read_pages(log, p, 8);
	close(fd);
}

/* A mapping locked with mlock(2) grows: the kernel populates (and locks)
 * the grown part inside mremap. */
DIFF_TEST(break, mremap_grows_a_mapping_locked_by_mlock)
{
	int fd = diff_mkfile(log, dir, "f", 8 * PG, 9);
	char *p = map_with_room(log, o, fd, 0);
	D_CALL(log, mlock(p, 4 * PG));
	D_MREMAP(log, o, p, 4 * PG, 8 * PG, MREMAP_MAYMOVE);
	D_VAL(log, vm_locked());
	read_pages(log, p, 8);
	close(fd);
}

/* Without CAP_IPC_LOCK: MAP_LOCKED beyond RLIMIT_MEMLOCK is EAGAIN, with
 * a limit of 0 EPERM, and mremap growing a locked mapping beyond it
 * EAGAIN, the mapping unchanged. */
DIFF_TEST(break, locked_mappings_beyond_rlimit_memlock)
{
	int fd = diff_mkfile(log, dir, "f", 16 * PG, 10);
	limit_memlock(log, 8 * PG);
	D_MMAP(log, o, NULL, 16 * PG, PROT_READ, MAP_SHARED | MAP_LOCKED, fd, 0);
	D_VAL(log, vm_locked());
	char *p = map_with_room(log, o, fd, MAP_LOCKED);
	D_VAL(log, vm_locked());
	D_MREMAP(log, o, p, 4 * PG, 8 * PG, 0);
	D_MREMAP(log, o, p, 4 * PG, 16 * PG, MREMAP_MAYMOVE);
	D_VAL(log, vm_locked());
	read_pages(log, p, 8);
	limit_memlock(log, 0);
	D_MMAP(log, o, NULL, PG, PROT_READ, MAP_SHARED | MAP_LOCKED, fd, 0);
	close(fd);
}

/* A duplicate (old_size 0) of a locked shared mapping. */
DIFF_TEST(break, duplicate_of_a_locked_shared_mapping)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 11);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED, fd, 0);
	char *d = D_MREMAP(log, o, p + PG, 0, 2 * PG, MREMAP_MAYMOVE);
	D_VAL(log, vm_locked());
	read_pages(log, d, 2);
	close(fd);
}

/* ---------------------------- 7. MAP_FIXED over a mapping of the same file */

/* MAP_FIXED over the same mapping of the file through a descriptor opened
 * read-only: the new mapping may not become writable (EACCES), nor may a
 * range that starts in it; a piece mapped again through the read-write
 * descriptor may. */
DIFF_TEST(break, map_fixed_same_file_through_a_read_only_descriptor)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 12);
	int rd = D_OPEN(log, dir, "f", O_RDONLY);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ, MAP_SHARED, fd, 0);
	D_CALL(log, o->mprotect(p, 4 * PG, PROT_READ | PROT_WRITE));
	D_CALL(log, o->mprotect(p, 4 * PG, PROT_READ));
	D_MMAP(log, o, p, 4 * PG, PROT_READ, MAP_SHARED | MAP_FIXED, rd, 0);
	D_CALL(log, o->mprotect(p, 4 * PG, PROT_READ | PROT_WRITE));
	D_MMAP(log, o, p + PG, 2 * PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, PG);
	D_CALL(log, o->mprotect(p, 4 * PG, PROT_READ | PROT_WRITE));
	D_CALL(log, o->mprotect(p + PG, 2 * PG, PROT_READ | PROT_WRITE));
	T_FILL(log, p + PG, 'w', 2 * PG);
	D_CALL(log, o->mprotect(p + PG, 3 * PG, PROT_READ | PROT_WRITE));
	T_FILL(log, p + 3 * PG, 'v', 1);
	D_CALL(log, o->msync(p, 4 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 4 * PG);
	close(rd);
	close(fd);
}

/* MAP_FIXED over the same mapping resets MADV_DONTFORK and locking: a
 * fork child has the pages mapped again, not those only advised. */
DIFF_TEST(break, map_fixed_same_file_after_dontfork_then_fork)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 13);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_LOCKED, fd, 0);
	D_CALL(log, o->madvise(p, 4 * PG, MADV_DONTFORK));
	D_MMAP(log, o, p + 2 * PG, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 2 * PG);
	D_VAL(log, vm_locked());
	D_MMAP(log, o, p + PG, PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED | MAP_LOCKED | MAP_POPULATE, fd, PG);
	D_VAL(log, vm_locked());
	D_FILL(log, p + 2 * PG, 'f', 8);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		int mapped = 0;
		for (int i = 0; i < 4; i++)
			mapped |= (msync(p + i * PG, PG, MS_ASYNC) == 0) << i;
		_exit(mapped | (p[2 * PG] == 'f') << 4);
	}
	int st = -1;
	D_CALL(log, waitpid(pid, &st, 0) == pid);
	D_VAL(log, st);
	close(fd);
}

/* mseal(2) (Linux 6.10): the kernel refuses to map over a sealed mapping
 * (EPERM) and leaves it as it was. */
#define SYS_mseal_ 462

DIFF_TEST(break, map_fixed_over_a_sealed_mapping)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 14);
	int g = diff_mkfile(log, dir, "g", 4 * PG, 15);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_FILL(log, p, 's', PG);
	D_CALL(log, syscall(SYS_mseal_, p, 4 * PG, 0));
	D_MMAP(log, o, p, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, g, 0);
	D_MMAP(log, o, p, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, 0);
	D_MMAP(log, o, p, 4 * PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	D_CALL(log, o->munmap(p, 4 * PG));
	read_pages(log, p, 4);
	T_FILL(log, p + PG, 't', PG);
	D_CALL(log, o->msync(p, 4 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 4 * PG);
	close(g);
	close(fd);
}

/* MAP_FIXED at addresses the kernel refuses (unaligned, beyond the top of
 * user space, lengths that overflow) leaves the mapping there as it was. */
DIFF_TEST(break, map_fixed_at_bad_addresses)
{
	int fd = diff_mkfile(log, dir, "f", 4 * PG, 16);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	D_FILL(log, p, 'b', 4 * PG);
	D_MMAP(log, o, p + 1, PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	D_MMAP(log, o, p, (size_t)-PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	D_MMAP(log, o, p, (size_t)-1, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	D_MMAP(log, o, p, 0, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	D_MMAP(log, o, p, PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 1);
	D_MMAP(log, o, p, PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, -PG);
	D_MMAP(log, o, p, 4 * PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0x7fffffffffffe000LL);
	D_MMAP(log, o, (void *)(1UL << 47), PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	D_MMAP(log, o, (void *)((1UL << 47) - PG), 2 * PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	D_MMAP(log, o, (void *)(1UL << 57), PG, PROT_READ, MAP_SHARED | MAP_FIXED, fd, 0);
	D_MMAP(log, o, p + 2 * PG, 2 * PG, PROT_READ, MAP_SHARED | MAP_FIXED_NOREPLACE, fd, 0);
	D_MMAP(log, o, p, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_FIXED | MAP_ANONYMOUS | MAP_SHARED, -1, 0);
	read_pages(log, p, 4);
	D_FILL(log, p + 3 * PG, 'c', 1);
	D_CALL(log, o->msync(p, 4 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 4 * PG);
	close(fd);
}

/* ----------------------- 8. duplicates (old_size 0) of shared mappings */

/* Duplicates from the middle of a shared file mapping, with an unaligned
 * size reaching past the end of file: contents, stores seen both ways,
 * SIGBUS beyond the end, mprotect, msync, munmap of the original, fork. */
DIFF_TEST(break, duplicate_from_the_middle_of_a_shared_file_mapping)
{
	int fd = diff_mkfile(log, dir, "f", 3 * PG + 100, 17);
	char *p = D_MMAP(log, o, NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	char *d = D_MREMAP(log, o, p + PG, 0, 3 * PG + 5, MREMAP_MAYMOVE);
	read_pages(log, d, 4); /* (its 4 pages: what follows them is not the test's) */
	T_FILL(log, d, 'd', 10);
	T_FILL(log, p + 2 * PG, 'p', 10);
	read_pages(log, d, 2);
	read_pages(log, p, 3);
	D_CALL(log, o->mprotect(d, PG, PROT_READ));
	T_FILL(log, d, 'e', 1);
	D_CALL(log, o->mprotect(d + PG, 2 * PG, PROT_NONE));
	T_READ(log, p + 2 * PG, 8);
	D_CALL(log, o->munmap(p, 4 * PG));
	D_CALL(log, o->mprotect(d + PG, 2 * PG, PROT_READ | PROT_WRITE));
	T_FILL(log, d + 2 * PG + 90, 'x', 20);
	D_CALL(log, o->msync(d, 3 * PG, MS_SYNC));
	D_PREAD(log, fd, 0, 4 * PG);
	D_CALL(log, o->ftruncate(fd, 6 * PG));
	read_pages(log, d, 4);
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		d[3 * PG] = 'c';
		_exit(d[0] == 'd' ? 0 : 3);
	}
	int st = -1;
	D_CALL(log, waitpid(pid, &st, 0) == pid);
	D_VAL(log, st);
	read_pages(log, d, 4);
	D_CALL(log, o->munmap(d, 4 * PG));
	close(fd);
}

/* Duplicates of shared anonymous memory: the object keeps its size (SIGBUS
 * beyond it), stores are seen through both, a duplicate of a duplicate,
 * MADV_REMOVE through one, fork. */
DIFF_TEST(break, duplicate_of_shared_anonymous_memory)
{
	char *p = D_MMAP(log, o, NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	D_FILL(log, p, 'a', 3 * PG);
	char *d = D_MREMAP(log, o, p + PG, 0, 4 * PG, MREMAP_MAYMOVE);
	read_pages(log, d, 4);
	T_FILL(log, d + PG, 'b', 10);
	char *e = D_MREMAP(log, o, d, 0, PG, MREMAP_MAYMOVE);
	T_FILL(log, e, 'e', 10);
	read_pages(log, p, 3);
	D_CALL(log, o->madvise(d, PG, MADV_REMOVE));
	read_pages(log, p, 3);
	read_pages(log, e, 1);
	D_CALL(log, o->munmap(p, 3 * PG));
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0) {
		d[PG + 1] = 'c';
		_exit(e[0] == 0 ? 0 : 3);
	}
	int st = -1;
	D_CALL(log, waitpid(pid, &st, 0) == pid);
	D_VAL(log, st);
	read_pages(log, d, 2);
	D_MREMAP(log, o, d, 0, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED);
	D_MREMAP(log, o, d + 2, 0, PG, MREMAP_MAYMOVE);
	D_MREMAP(log, o, d + 8 * PG, 0, PG, MREMAP_MAYMOVE);
	D_MREMAP(log, o, d, 0, 0, MREMAP_MAYMOVE);
	D_MREMAP(log, o, d, 0, PG, 0);
}
