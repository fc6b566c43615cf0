/*
 * test_hangs.c - um_* calls and fork handlers that touch ummap memory
 * while the engine is busy must not hang, and fork handlers' stores land in
 * the process that made them.
 *
 * Each scenario runs in a child process that writes a verdict ("ok" or what
 * went wrong) to a pipe and exits.  A hang cannot end by itself, so the
 * parent waits for the verdict with a watchdog of WATCHDOG_S seconds, a
 * failure detector only: a passing scenario answers in milliseconds and is
 * never cut short, while a hung one is killed and reported as hung.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ummap.h"

#define PG 4096UL
#define WATCHDOG_S 60

static int verdict_fd = -1; /* the child's end of the pipe */

/* The child's verdict: "ok", or what went wrong. */
static void say(const char *fmt, ...)
{
	char buf[256];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (write(verdict_fd, buf, (size_t)n) != n)
		_exit(2);
}

/* Runs fn in a child; its verdict, "hung" if none came within the
 * watchdog, or its exit status if it said nothing. */
static void run_child(void (*fn)(void), char *out, size_t outlen)
{
	int p[2];
	cr_assert(pipe(p) == 0);
	pid_t pid = fork();
	cr_assert(pid >= 0);
	if (pid == 0) {
		close(p[0]);
		verdict_fd = p[1];
		fn();
		_exit(0);
	}
	close(p[1]);
	size_t len = 0;
	struct pollfd pf = { .fd = p[0], .events = POLLIN };
	for (;;) {
		int r = poll(&pf, 1, WATCHDOG_S * 1000);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0) {
			kill(pid, SIGKILL);
			snprintf(out, outlen, "hung (no answer in %d s)", WATCHDOG_S);
			break;
		}
		ssize_t n = read(p[0], out + len, outlen - 1 - len);
		if (n <= 0)
			break;
		len += (size_t)n;
		out[len] = 0;
	}
	close(p[0]);
	int st;
	cr_assert(waitpid(pid, &st, 0) == pid);
	if (len == 0 && !strstr(out, "hung"))
		snprintf(out, outlen, "said nothing, status %#x", st);
}

#define expect_ok(fn)                                                    \
	do {                                                             \
		char v[512] = "";                                        \
		run_child(fn, v, sizeof v);                              \
		cr_expect(strcmp(v, "ok") == 0, "%s: %s", #fn, v);       \
	} while (0)

/* A shared file mapping of two pages never touched: the first access to
 * either faults and needs the fault thread. */
static char *fresh_mapping(void)
{
	char path[] = "/tmp/ummap-hangs.XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0 || ftruncate(fd, 2 * PG) < 0)
		return NULL;
	unlink(path);
	char *m = um_mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	return m == MAP_FAILED ? NULL : m;
}

/* Where a struct goes: across the boundary of the two fresh pages, 16 bytes
 * in the first, so that what a call reads to validate its argument before
 * taking the engine's lock leaves the second page untouched. */
static void *straddle(char *m)
{
	return m + PG - 16;
}

/* ---- um_* calls with their argument in a page not mapped yet ---- */

static void configure_from_fresh_page(void)
{
	char *m = fresh_mapping();
	struct um_config *cfg = straddle(m); /* zeros: change nothing */
	int r = um_configure(cfg);
	say(r == 0 ? "ok" : "um_configure: %d", r);
}

static void get_config_into_fresh_page(void)
{
	char *m = fresh_mapping();
	struct um_config *cfg = straddle(m);
	int r = um_get_config(cfg);
	say(r == 0 && cfg->fault_size >= PG ? "ok" : "um_get_config: %d, fault_size %lu", r,
	    (unsigned long)cfg->fault_size);
}

static void process_stats_into_fresh_page(void)
{
	char *m = fresh_mapping();
	struct um_stats *st = straddle(m);
	int r = um_stats(NULL, st);
	say(r == 0 && st->mappings >= 1 ? "ok" : "um_stats: %d, %lu mappings", r, (unsigned long)st->mappings);
}

static void mapping_stats_into_fresh_page(void)
{
	char *m = fresh_mapping();
	struct um_stats *st = straddle(m);
	int r = um_stats(m, st);
	say(r == 0 && st->mappings == 1 ? "ok" : "um_stats: %d, %lu mappings", r, (unsigned long)st->mappings);
}

Test(hangs, um_configure_reads_an_unmapped_page)
{
	expect_ok(configure_from_fresh_page);
}

Test(hangs, um_get_config_writes_an_unmapped_page)
{
	expect_ok(get_config_into_fresh_page);
}

Test(hangs, um_stats_writes_an_unmapped_page)
{
	expect_ok(process_stats_into_fresh_page);
	expect_ok(mapping_stats_into_fresh_page);
}

/* ---- um_set_swap_store with its argument's page dropped meanwhile ---- */

static void *swap_open(void *arg) { return arg; }
static ssize_t swap_read(void *h, void *buf, size_t len, uint64_t off) { return -EIO; }
static ssize_t swap_write(void *h, const void *buf, size_t len, uint64_t off) { return -EIO; }
static void swap_close(void *h) {}

static volatile int zapping;

/* Drops the page's entry again and again, as reclaim or an eviction by
 * another thread may at any time: the next access faults.  The page stays
 * in the cache (MADV_DONTNEED on a shared mapping). */
static void *zapper(void *page)
{
	while (__atomic_load_n(&zapping, __ATOMIC_RELAXED))
		madvise(page, PG, MADV_DONTNEED);
	return NULL;
}

/* Takes the engine's lock again and again, so that um_set_swap_store
 * often waits for it, with its argument's page dropped meanwhile. */
static void *locker(void *arg)
{
	struct um_stats st;
	while (__atomic_load_n(&zapping, __ATOMIC_RELAXED))
		um_stats(NULL, &st);
	return NULL;
}

#define SWAP_SETS 20000

/* um_set_swap_store validates its argument before the lock: the page can
 * be dropped between that and the copy made under the lock. */
static void set_swap_store_from_dropped_page(void)
{
	char *m = fresh_mapping();
	struct um_swap_store *s = (struct um_swap_store *)m;
	*s = (struct um_swap_store){ .version = UM_SWAP_STORE_VERSION, .open = swap_open, .read = swap_read,
				     .write = swap_write, .close = swap_close };
	pthread_t t, l;
	zapping = 1;
	if (pthread_create(&t, NULL, zapper, m) || pthread_create(&l, NULL, locker, NULL)) {
		say("pthread_create failed");
		return;
	}
	int bad = 0;
	for (int i = 0; i < SWAP_SETS; i++)
		bad += um_set_swap_store(s) != 0;
	zapping = 0;
	pthread_join(t, NULL);
	pthread_join(l, NULL);
	bad += um_set_swap_store(NULL) != 0;
	say(bad ? "%d calls failed" : "ok", bad);
}

Test(hangs, um_set_swap_store_reads_a_dropped_page)
{
	expect_ok(set_swap_store_from_dropped_page);
}

/* ---- fork handlers registered before ummap started ---- */

/* Private anonymous memory of ummap's; each handler stores its letter at
 * its own byte. */
static volatile char *priv;
enum { AT_PREPARE = 1, AT_PARENT = 2, AT_CHILD = 3 };

static void store_prepare(void) { priv[AT_PREPARE] = 'p'; }
static void store_parent(void) { priv[AT_PARENT] = 'P'; }
static void store_child(void) { priv[AT_CHILD] = 'c'; }

/* With the handlers registered before any um_* call, maps private
 * anonymous memory and forks; the child reports what it sees through its
 * status (0 = as expected) once the parent has run its handlers. */
static void fork_with_handlers(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
	priv = um_mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (priv == MAP_FAILED) {
		say("um_mmap: %s", strerror(errno));
		return;
	}
	priv[0] = 'a';
	int go[2];
	if (pipe(go)) {
		say("pipe failed");
		return;
	}
	pid_t pid = fork();
	if (pid == 0) {
		char b;
		close(go[1]);
		/* The parent has run its handlers. */
		if (read(go[0], &b, 1) != 1)
			_exit(9);
		int wrong = (priv[0] != 'a') | (priv[AT_PREPARE] != (prepare ? 'p' : 0)) << 1 |
			    (priv[AT_PARENT] != 0) << 2 | (priv[AT_CHILD] != (child ? 'c' : 0)) << 3;
		_exit(wrong);
	}
	close(go[0]);
	int st = 0;
	if (pid < 0 || write(go[1], "g", 1) != 1 || waitpid(pid, &st, 0) != pid) {
		say("fork or wait failed");
		return;
	}
	close(go[1]);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		say("the child's memory is wrong (status %#x: bit 1 prepare, 2 parent's store, 3 its own store) ", st);
	if (priv[AT_PREPARE] != (prepare ? 'p' : 0) || priv[AT_PARENT] != (parent ? 'P' : 0))
		say("the parent lost its handlers' stores ");
	if (priv[AT_CHILD])
		say("the child's handler stored into the parent's memory ");
	if (WIFEXITED(st) && !WEXITSTATUS(st) && priv[AT_PREPARE] == (prepare ? 'p' : 0) &&
	    priv[AT_PARENT] == (parent ? 'P' : 0) && !priv[AT_CHILD])
		say("ok");
}

static void fork_with_handler(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
	if (pthread_atfork(prepare, parent, child))
		say("pthread_atfork failed");
	else
		fork_with_handlers(prepare, parent, child);
}

static void prepare_handler_stores(void) { fork_with_handler(store_prepare, NULL, NULL); }
static void parent_handler_stores(void) { fork_with_handler(NULL, store_parent, NULL); }
static void child_handler_stores(void) { fork_with_handler(NULL, NULL, store_child); }

/* Handlers an application registers in a constructor of its own (default
 * priority), armed by one test only. */
static volatile int ctor_armed;
static void ctor_prepare(void) { if (ctor_armed) store_prepare(); }
static void ctor_parent(void) { if (ctor_armed) store_parent(); }
static void ctor_child(void) { if (ctor_armed) store_child(); }

__attribute__((constructor)) static void app_constructor(void)
{
	pthread_atfork(ctor_prepare, ctor_parent, ctor_child);
}

static void constructor_handlers_store(void)
{
	ctor_armed = 1;
	fork_with_handlers(store_prepare, store_parent, store_child);
}

Test(fork_handlers, prepare_handler_stores_into_private_memory)
{
	expect_ok(prepare_handler_stores);
}

Test(fork_handlers, parent_handler_stores_into_private_memory)
{
	expect_ok(parent_handler_stores);
}

Test(fork_handlers, child_handler_stores_stay_in_the_child)
{
	expect_ok(child_handler_stores);
}

Test(fork_handlers, handlers_of_an_application_constructor_store)
{
	expect_ok(constructor_handlers_store);
}
