/*
 * Description: the engine's own promises, beyond what the kernel does: the
 * budget holds on a scan 8 times its size, every byte is right, dirty data
 * reaches the file in the background and at exit, read errors raise SIGBUS
 * or call the handler, writeback errors are reported and nothing is lost.
 */
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fds.h"
#include "rss.h"
#include "ummap.h"

/* Fault injection in the file store (src/store.h). */
extern int store_fail_read, store_fail_write, store_fail_flush;

#define MiB (1UL << 20)
#define UM_PAGE_WORDS (4096 / 8)

static char path[256];

static int make_file(uint64_t size, uint64_t seed)
{
	const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
	snprintf(path, sizeof path, "%s/ummap-test.XXXXXX", dir);
	int fd = mkstemp(path);
	cr_assert(fd >= 0);
	uint64_t buf[4096];
	for (uint64_t off = 0; off < size; off += sizeof buf) {
		for (size_t i = 0; i < 4096; i++)
			buf[i] = (off + i * 8) * 0x9e3779b97f4a7c15ULL + seed;
		size_t n = size - off < sizeof buf ? size - off : sizeof buf;
		cr_assert(pwrite(fd, buf, n, (off_t)off) == (ssize_t)n);
	}
	return fd;
}

static uint64_t word(uint64_t off, uint64_t seed)
{
	return off * 0x9e3779b97f4a7c15ULL + seed;
}

/* Bytes the kernel holds for ummap's caches: the memfds' allocated blocks,
 * found through /proc/self/fd independently of ummap's own counters. */
static void add_cache_blocks(int fd, const char *target, void *arg)
{
	struct stat st;
	if (strstr(target, "memfd:ummap-cache") && fstat(fd, &st) == 0)
		*(uint64_t *)arg += (uint64_t)st.st_blocks * 512;
}

/* Bytes the cache memfds hold, as the kernel counts them. */
static uint64_t cache_memory(void)
{
	uint64_t total = 0;
	fds_each(add_cache_blocks, &total);
	return total;
}

/* Rss of the mappings that cover [p, p+len), from /proc/self/smaps. */
static uint64_t smaps_rss(void *p, size_t len)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	uint64_t rss = 0;
	int in = 0;
	while (fgets(line, sizeof line, f)) {
		unsigned long a, b;
		if (sscanf(line, "%lx-%lx ", &a, &b) == 2 && strchr(line, ' ') == line + strcspn(line, " ")) {
			in = a < (unsigned long)p + len && b > (unsigned long)p;
			continue;
		}
		unsigned long kb;
		if (in && sscanf(line, "Rss: %lu kB", &kb) == 1)
			rss += kb * 1024;
	}
	fclose(f);
	return rss;
}

/*
 * The process's resident set as the kernel counts it (VmRSS, and its peak
 * VmHWM: what top, ps, monitoring and the OOM killer read) stays within
 * the budget and a slack: each cached page counted once.  The slack is
 * what the process held before mapping anything (the test program, libc,
 * Criterion and the libraries it loads, about 8 MiB here, most of it
 * shared library pages), measured, plus ENGINE_SLACK: the engine's own
 * memory (its copy buffer, 256 KiB; the page states, a byte a page; its
 * threads' stacks) and the budget's known overshoot (a fault unit per
 * faulting thread; kernel anonymous memory sampled every 10 ms).  About
 * 1 MiB of it is used on this scan.
 */
#define ENGINE_SLACK (4 * MiB)

struct rss_watch {
	uint64_t before, worst;
};

/* From now on: VmHWM reset, VmRSS before the mappings noted. */
static struct rss_watch rss_start(void)
{
	rss_peak_reset();
	return (struct rss_watch){ .before = rss_now(), .worst = 0 };
}

static void rss_sample(struct rss_watch *w)
{
	uint64_t rss = rss_now();
	w->worst = rss > w->worst ? rss : w->worst;
}

/* VmRSS as sampled and VmHWM within budget + slack. */
static void rss_check(struct rss_watch *w, uint64_t budget)
{
	rss_sample(w);
	uint64_t peak = rss_peak(), limit = budget + w->before + ENGINE_SLACK;
	cr_log_info("VmRSS %lu KiB before the mappings, sampled peak %lu KiB, VmHWM %lu KiB, budget %lu KiB",
		    w->before >> 10, w->worst >> 10, peak >> 10, budget >> 10);
	cr_expect(w->worst <= limit, "VmRSS %lu KiB > budget %lu KiB + %lu KiB before + slack", w->worst >> 10,
		  budget >> 10, w->before >> 10);
	cr_expect(peak <= limit, "VmHWM %lu KiB > budget %lu KiB + %lu KiB before + slack", peak >> 10, budget >> 10,
		  w->before >> 10);
}

Test(budget, scan_8x_budget_read_write)
{
	const uint64_t budget = 16 * MiB, size = 8 * budget, slack = 2 * MiB;
	int fd = make_file(size, 7);
	struct um_config cfg = { .budget = budget };
	cr_assert(um_configure(&cfg) == 0);
	struct rss_watch w = rss_start();
	uint64_t *m = um_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(m != MAP_FAILED);
	uint64_t worst_cache = 0, worst_stat = 0, worst_rss = 0;
	struct um_stats st;
	for (int pass = 0; pass < 2; pass++) {
		for (uint64_t i = 0; i < size / 8; i++) {
			uint64_t want = word(i * 8, 7) ^ (uint64_t)pass;
			if (m[i] != want)
				cr_assert_fail("pass %d: word %lu is %lx, want %lx", pass, i, m[i], want);
			m[i] ^= 1;
			if ((i & 0xfffff) == 0xfffff) {
				um_stats(NULL, &st);
				uint64_t cm = cache_memory(), rss = smaps_rss(m, size);
				worst_cache = cm > worst_cache ? cm : worst_cache;
				worst_stat = st.resident_bytes > worst_stat ? st.resident_bytes : worst_stat;
				worst_rss = rss > worst_rss ? rss : worst_rss;
				rss_sample(&w);
			}
		}
	}
	rss_check(&w, budget);
	cr_expect(worst_stat <= budget + slack, "um_stats resident %lu > budget %lu", worst_stat, budget);
	cr_expect(worst_cache <= budget + slack, "memfd blocks %lu > budget %lu", worst_cache, budget);
	cr_expect(worst_rss <= budget + slack, "smaps Rss %lu > budget %lu", worst_rss, budget);
	cr_expect(worst_stat > budget / 2, "the scan should fill the budget (resident %lu)", worst_stat);
	um_stats(NULL, &st);
	cr_expect(st.evictions > 0);
	cr_assert(um_munmap(m, size) == 0);
	/* Every word on disk was flipped twice, by the two passes. */
	static uint64_t buf[1 << 15];
	for (uint64_t off = 0; off < size; off += sizeof buf) {
		cr_assert(pread(fd, buf, sizeof buf, (off_t)off) == sizeof buf);
		for (size_t i = 0; i < sizeof buf / 8; i++)
			if (buf[i] != word(off + i * 8, 7))
				cr_assert_fail("disk word at %lu is %lx, want %lx", off + i * 8, buf[i],
					       word(off + i * 8, 7));
	}
	unlink(path);
}

Test(budget, process_rss_within_budget)
{
	/* A read scan of every page of a file 8 times the budget. */
	const uint64_t budget = 32 * MiB, size = 8 * budget;
	int fd = make_file(size, 17);
	struct um_config cfg = { .budget = budget };
	cr_assert(um_configure(&cfg) == 0);
	struct rss_watch w = rss_start();
	uint64_t *m = um_mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	cr_assert(m != MAP_FAILED);
	for (uint64_t i = 0; i < size / 8; i += UM_PAGE_WORDS) {
		if (m[i] != word(i * 8, 17))
			cr_assert_fail("word %lu is %lx", i, m[i]);
		if (i % (MiB / 8) == 0)
			rss_sample(&w);
	}
	rss_check(&w, budget);
	cr_expect(w.worst > w.before + budget / 2, "the scan should fill the budget (VmRSS %lu KiB)", w.worst >> 10);
	cr_assert(um_munmap(m, size) == 0);
	/* (The engine's own memory stays, and a sanitizer's grows.) */
	uint64_t after = rss_now();
	cr_expect(after <= w.before + ENGINE_SLACK, "munmap gave the pages back: VmRSS %lu KiB, %lu before",
		  after >> 10, w.before >> 10);
	unlink(path);
}

Test(writeback, background_within_interval)
{
	int fd = make_file(64 * 1024, 1);
	struct um_config cfg = { .writeback_ms = 200 };
	um_configure(&cfg);
	char *m = um_mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(m != MAP_FAILED);
	memcpy(m + 5000, "background", 10);
	char buf[10] = { 0 };
	/* Bounded wait: up to 50 intervals; it must arrive without msync. */
	for (int i = 0; i < 50 && memcmp(buf, "background", 10); i++) {
		usleep(200 * 1000);
		cr_assert(pread(fd, buf, 10, 5000) == 10);
	}
	cr_expect(memcmp(buf, "background", 10) == 0, "dirty data not written back in the background");
	um_munmap(m, 65536);
	unlink(path);
}

Test(writeback, exit_without_munmap)
{
	int fd = make_file(8192, 2);
	pid_t pid = fork();
	if (pid == 0) {
		char *m = um_mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (m == MAP_FAILED)
			_exit(3);
		memcpy(m + 100, "at exit", 7);
		exit(0);
	}
	int status;
	waitpid(pid, &status, 0);
	cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	char buf[7];
	cr_assert(pread(fd, buf, 7, 100) == 7);
	cr_expect(memcmp(buf, "at exit", 7) == 0);
	unlink(path);
}

static sigjmp_buf jb;
static volatile siginfo_t got;
static void on_bus(int sig, siginfo_t *si, void *uc)
{
	got = *si;
	siglongjmp(jb, 1);
}

Test(errors, read_error_raises_sigbus)
{
	int fd = make_file(65536, 3);
	struct sigaction sa = { .sa_sigaction = on_bus, .sa_flags = SA_SIGINFO };
	sigaction(SIGBUS, &sa, NULL);
	char *m = um_mmap(NULL, 65536, PROT_READ, MAP_SHARED, fd, 0);
	cr_assert(m != MAP_FAILED);
	store_fail_read = EIO;
	volatile char c = 0;
	if (!sigsetjmp(jb, 1)) {
		c = m[12345];
		cr_assert_fail("read of an unreadable page returned %d", c);
	}
	cr_expect(got.si_signo == SIGBUS && got.si_code == BUS_ADRERR);
	cr_expect(got.si_addr == m + 12345, "si_addr %p, want %p", got.si_addr, m + 12345);
	store_fail_read = 0;
	cr_expect(m[12345] == ((char *)&(uint64_t){ word(12344, 3) })[1], "page after the error heals");
	unlink(path);
}

static int handler_calls;
static off_t handler_off;
static enum um_error_action on_error(void *addr, int fd, off_t off, int err, void *arg)
{
	handler_calls++;
	handler_off = off;
	cr_expect(err == EIO);
	if (handler_calls == 2)
		store_fail_read = 0; /* the device recovers: the retry reads it */
	return handler_calls == 1 ? UM_ERROR_RETRY : *(enum um_error_action *)arg;
}

Test(errors, read_error_handler_retry_then_zero)
{
	int fd = make_file(65536, 4);
	enum um_error_action second = UM_ERROR_RETRY;
	um_set_error_handler(on_error, &second);
	uint64_t *m = um_mmap(NULL, 65536, PROT_READ, MAP_SHARED, fd, 0);
	store_fail_read = EIO;
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	cr_expect(m[1000] == word(8000, 4), "retried read gives the data");
	cr_expect(handler_calls == 2 && handler_off == 4096, "handler called %d times, off %ld", handler_calls,
		  (long)handler_off);
	second = UM_ERROR_ZERO;
	handler_calls = 1;
	store_fail_read = EIO;
	/* The handler runs in another thread: publish the stores above before
	 * the access that faults (the compiler cannot see that it calls it). */
	__atomic_thread_fence(__ATOMIC_SEQ_CST);
	cr_expect(m[4096] == 0, "a zero page when the handler asks for it");
	store_fail_read = 0;
	unlink(path);
}

Test(errors, writeback_error_reported_and_retried)
{
	int fd = make_file(65536, 5);
	char *m = um_mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	memcpy(m + 40000, "survives", 8);
	store_fail_write = ENOSPC;
	errno = 0;
	cr_expect(um_msync(m, 65536, MS_SYNC) == -1 && errno == ENOSPC, "msync gave errno %d", errno);
	struct um_stats st;
	um_stats(m, &st);
	cr_expect(st.dirty_bytes >= 4096, "the page stays dirty after a failed write");
	cr_expect(um_msync(m, 65536, MS_SYNC) == -1 && errno == ENOSPC, "still failing: reported again");
	store_fail_write = 0;
	cr_expect(um_msync(m, 65536, MS_SYNC) == 0, "space is back: msync succeeds");
	char buf[8];
	cr_assert(pread(fd, buf, 8, 40000) == 8);
	cr_expect(memcmp(buf, "survives", 8) == 0);
	/* A failed flush (fdatasync EIO: the kernel may have dropped the
	 * pages it could not write) leaves the range dirty, to be written
	 * again from the cache. */
	memcpy(m + 8000, "flushed", 7);
	store_fail_flush = EIO;
	errno = 0;
	cr_expect(um_msync(m, 65536, MS_SYNC) == -1 && errno == EIO, "msync with a failing flush: %d", errno);
	um_stats(m, &st);
	cr_expect(st.dirty_bytes == 8192, "the two pages in the cache (the ones written) are dirty again (%lu)",
		  st.dirty_bytes);
	store_fail_flush = 0;
	cr_expect(um_msync(m, 65536, MS_SYNC) == 0, "the device is back: msync succeeds");
	um_stats(m, &st);
	cr_expect(st.dirty_bytes == 0, "and nothing is left dirty (%lu)", st.dirty_bytes);
	/* An error met by background writeback is reported by munmap. */
	memcpy(m + 100, "late", 4);
	store_fail_write = EIO;
	struct um_config cfg = { .writeback_ms = 50 };
	um_configure(&cfg);
	usleep(300 * 1000);
	store_fail_write = 0;
	errno = 0;
	cr_expect(um_munmap(m, 65536) == -1 && errno == EIO, "munmap reports the background error (%d)", errno);
	cr_assert(pread(fd, buf, 4, 100) == 4);
	cr_expect(memcmp(buf, "late", 4) == 0, "and the data still reached the file");
	unlink(path);
}

Test(config, mapping_settings_and_stats)
{
	int fd = make_file(4 * MiB, 6);
	uint64_t *m = um_mmap(NULL, 4 * MiB, PROT_READ, MAP_PRIVATE, fd, 0);
	cr_assert(um_mapping_set(m, UM_PARAM_FAULT_SIZE, 4096) == 0);
	cr_assert(um_mapping_set(m, UM_PARAM_READAHEAD, 0) == 0);
	cr_assert(um_mapping_set(m, UM_PARAM_FAULT_SIZE, 3000) == -1 && errno == EINVAL);
	cr_assert(um_mapping_set(m, UM_PARAM_BUDGET, 64 * 1024) == 0);
	for (uint64_t i = 0; i < 4 * MiB / 8; i += 512)
		cr_assert(m[i] == word(i * 8, 6));
	struct um_stats st;
	um_stats(m, &st);
	cr_expect(st.misses == 1024, "4 KiB faults without readahead: %lu misses", st.misses);
	cr_expect(st.resident_bytes <= 64 * 1024 + 4096, "mapping budget: resident %lu", st.resident_bytes);
	cr_expect(um_stats((void *)16, &st) == -1 && errno == ENOMEM);
	unlink(path);
}

Test(budget, eviction_prefers_clean_pages)
{
	/* 2 MiB written, then a 32 MiB read scan through an 8 MiB budget:
	 * clean pages make the room, the dirty ones stay until writeback. */
	const uint64_t budget = 8 * MiB, size = 32 * MiB;
	int fd = make_file(size, 14);
	struct um_config cfg = { .budget = budget };
	cr_assert(um_configure(&cfg) == 0);
	struct rss_watch w = rss_start();
	uint64_t *m = um_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(m != MAP_FAILED);
	for (uint64_t i = 0; i < 2 * MiB / 8; i++)
		m[i] = ~word(i * 8, 14);
	for (uint64_t i = 2 * MiB / 8; i < size / 8; i++)
		if (m[i] != word(i * 8, 14))
			cr_assert_fail("word %lu is %lx", i, m[i]);
	rss_check(&w, budget);
	struct um_stats st;
	cr_assert(um_stats(m, &st) == 0);
	cr_expect(st.writebacks == 0, "eviction wrote %lu dirty pages back", st.writebacks);
	/* A run of first writes dirties a window ahead (up to 64 pages). */
	cr_expect(st.dirty_bytes >= 2 * MiB && st.dirty_bytes <= 2 * MiB + 256 * 1024, "dirty %lu", st.dirty_bytes);
	cr_expect(st.evictions > 0 && st.resident_bytes <= budget + 2 * MiB, "evictions %lu, resident %lu",
		  st.evictions, st.resident_bytes);
	cr_assert(um_munmap(m, size) == 0);
	uint64_t disk;
	cr_assert(pread(fd, &disk, 8, 8 * 1000) == 8);
	cr_expect(disk == ~word(8 * 1000, 14), "the dirty pages reached the file at munmap");
	unlink(path);
}

Test(budget, kernel_anonymous_memory_counts)
{
	/* Anonymous memory ummap leaves to the kernel (here a stack that
	 * grows down) counts against the budget: a scan of a file with 8 of
	 * the 16 MiB taken by anonymous pages caches at most the other 8
	 * (plus a fault unit and the sample lag, within the slack). */
	const uint64_t budget = 16 * MiB, anon = 8 * MiB, size = 64 * MiB, slack = 2 * MiB;
	int fd = make_file(size, 13);
	struct um_config cfg = { .budget = budget };
	cr_assert(um_configure(&cfg) == 0);
	struct rss_watch w = rss_start();
	char *a = um_mmap(NULL, anon, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_GROWSDOWN, -1, 0);
	cr_assert(a != MAP_FAILED);
	memset(a, 1, anon);
	uint64_t *m = um_mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0);
	cr_assert(m != MAP_FAILED);
	struct um_stats st;
	uint64_t worst_cache = 0, worst_rss = 0;
	for (uint64_t i = 0; i < size / 8; i++) {
		if (m[i] != word(i * 8, 13))
			cr_assert_fail("word %lu is %lx", i, m[i]);
		if ((i & 0x3ffff) == 0x3ffff) {
			uint64_t cm = cache_memory(), rss = smaps_rss(m, size);
			worst_cache = cm > worst_cache ? cm : worst_cache;
			worst_rss = rss > worst_rss ? rss : worst_rss;
			rss_sample(&w);
		}
	}
	rss_check(&w, budget); /* the anonymous pages and the cache */
	cr_assert(um_stats(NULL, &st) == 0);
	cr_expect(st.anon_bytes >= anon && st.anon_bytes < anon + slack, "anon_bytes %lu", st.anon_bytes);
	cr_expect(st.resident_bytes <= budget + slack, "resident %lu > budget", st.resident_bytes);
	cr_expect(worst_cache <= budget - anon + slack, "memfd blocks %lu > budget - anon", worst_cache);
	cr_expect(worst_rss <= budget - anon + slack, "file Rss %lu > budget - anon", worst_rss);
	cr_expect(worst_cache > (budget - anon) / 2, "the scan should fill what is left (%lu)", worst_cache);
	/* Freed anonymous memory gives its room back. */
	cr_assert(um_madvise(a, anon, MADV_DONTNEED) == 0);
	cr_assert(um_stats(NULL, &st) == 0);
	cr_expect(st.anon_bytes < slack, "after MADV_DONTNEED: anon_bytes %lu", st.anon_bytes);
	cr_assert(um_munmap(m, size) == 0 && um_munmap(a, anon) == 0);
	unlink(path);
}

/* size bytes of anonymous memory (MAP_SHARED or MAP_PRIVATE) under an 8
 * MiB budget: a word every 512 bytes written, then read back twice; cold
 * pages must have gone to swap and come back, resident staying within the
 * budget (and 2 MiB of slack).  Returns the mapping. */
static uint64_t *through_a_small_budget(int type, uint64_t size, unsigned seed)
{
	const uint64_t budget = 8 * MiB, slack = 2 * MiB;
	struct um_config cfg = { .budget = budget };
	cr_assert(um_configure(&cfg) == 0);
	struct rss_watch w = rss_start();
	uint64_t *m = um_mmap(NULL, size, PROT_READ | PROT_WRITE, type | MAP_ANONYMOUS, -1, 0);
	cr_assert(m != MAP_FAILED);
	struct um_stats st;
	uint64_t worst = 0;
	for (uint64_t i = 0; i < size / 8; i += 64) {
		m[i] = word(i * 8, seed);
		if ((i & 0xffff) == 0) {
			um_stats(NULL, &st);
			worst = st.resident_bytes > worst ? st.resident_bytes : worst;
			rss_sample(&w);
		}
	}
	for (int pass = 0; pass < 2; pass++)
		for (uint64_t i = 0; i < size / 8; i += 64)
			if (m[i] != word(i * 8, seed))
				cr_assert_fail("pass %d: word %lu is %lx, want %lx", pass, i, m[i], word(i * 8, seed));
	cr_expect(worst <= budget + slack, "resident %lu > budget %lu", worst, budget);
	rss_check(&w, budget);
	cr_assert(um_stats(m, &st) == 0);
	cr_expect(st.evictions > 0 && st.resident_bytes <= budget + slack, "evictions %lu, resident %lu",
		  st.evictions, st.resident_bytes);
	return m;
}

Test(budget, shared_anonymous_memory_beyond_the_budget)
{
	/* 32 MiB of shared anonymous memory under an 8 MiB budget: cold pages
	 * go to a swap file and come back with their contents; a fork child
	 * then sees every page, pages it in and out of swap itself, and its
	 * stores reach the parent; munmap gives the swap file back. */
	const uint64_t size = 32 * MiB;
	int fds = fds_ummap_objects();
	uint64_t *m = through_a_small_budget(MAP_SHARED, size, 15);
	/* MADV_REMOVE frees pages, swapped ones too: they read as zeros. */
	cr_assert(um_madvise(m, 1 * MiB, MADV_REMOVE) == 0);
	cr_expect(m[64] == 0 && m[1 * MiB / 8] == word(1 * MiB, 15), "after MADV_REMOVE");
	pid_t pid = fork();
	if (pid == 0) {
		/* The child pages it through its own budget too (the cache is
		 * shared: what one process swaps out, the other reads back). */
		for (uint64_t i = 1 * MiB / 8; i < size / 8; i += 64)
			if (m[i] != word(i * 8, 15))
				_exit(1);
		for (uint64_t i = 1 * MiB / 8; i < size / 8; i += 512)
			m[i] = 42 + i;
		struct um_stats st;
		um_stats(NULL, &st);
		_exit(st.evictions == 0 ? 2 : 0);
	}
	int status = 0;
	waitpid(pid, &status, 0);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child saw every page and swapped some out itself (status %#x)", status);
	uint64_t wrong = 0;
	for (uint64_t i = 1 * MiB / 8; i < size / 8; i += 64)
		wrong += m[i] != (i % 512 ? word(i * 8, 15) : 42 + i);
	cr_expect(wrong == 0, "the parent sees the child's stores on every page, %llu words wrong",
		  (unsigned long long)wrong);
	/* And after the fork the parent still swaps it out: a second pass stays
	 * within the budget. */
	struct um_stats st;
	um_stats(NULL, &st);
	cr_expect(st.resident_bytes <= st.budget + 2 * MiB, "resident %llu KiB after fork",
		  (unsigned long long)st.resident_bytes >> 10);
	cr_assert(um_munmap(m, size) == 0);
	cr_expect(fds_ummap_objects() == fds, "munmap closed the swap file (%d cache objects, %d before)",
		  fds_ummap_objects(), fds);
}

Test(budget, private_anonymous_memory_beyond_the_budget)
{
	/* 32 MiB of private anonymous memory under an 8 MiB budget: cold
	 * pages go to a swap file and come back with their contents;
	 * MADV_DONTNEED gives zeros; a fork child gets a copy of its own (its
	 * stores stay its own, the parent's later stores stay the parent's);
	 * munmap gives the swap file back. */
	const uint64_t size = 32 * MiB;
	int fds = fds_ummap_objects();
	uint64_t *m = through_a_small_budget(MAP_PRIVATE, size, 16);
	cr_assert(um_madvise(m, 1 * MiB, MADV_DONTNEED) == 0);
	cr_expect(m[64] == 0 && m[1 * MiB / 8] == word(1 * MiB, 16), "after MADV_DONTNEED");
	int go[2];
	cr_assert(pipe(go) == 0);
	const uint64_t last = size / 8 - 64;
	pid_t pid = fork();
	if (pid == 0) {
		char b;
		for (uint64_t i = 1 * MiB / 8; i < size / 8; i += 64)
			if (m[i] != word(i * 8, 16))
				_exit(1);
		m[last] = 42; /* the child's own */
		if (read(go[0], &b, 1) != 1)
			_exit(2);
		_exit(m[1 * MiB / 8] == word(1 * MiB, 16) ? 0 : 3);
	}
	m[1 * MiB / 8] = 7; /* the parent's own */
	cr_assert(write(go[1], "g", 1) == 1);
	int status = 0;
	waitpid(pid, &status, 0);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		  "the child saw every page as at fork, and not the parent's later store (status %#x)", status);
	cr_expect(m[last] == word(last * 8, 16), "the parent does not see the child's store");
	cr_assert(um_munmap(m, size) == 0);
	close(go[0]);
	close(go[1]);
	cr_expect(fds_ummap_objects() == fds, "munmap closed the swap file (%d cache objects, %d before)",
		  fds_ummap_objects(), fds);
}

Test(config, stats_per_mapping)
{
	/* Two mappings of one file: each counts its own faults, however it
	 * is split or moved; resident bytes are those of its own range. */
	int fd = make_file(1 * MiB, 9);
	uint64_t *a = um_mmap(NULL, 1 * MiB, PROT_READ, MAP_SHARED, fd, 0);
	uint64_t *b = um_mmap(NULL, 64 * 1024, PROT_READ, MAP_SHARED, fd, 512 * 1024);
	cr_assert(a != MAP_FAILED && b != MAP_FAILED);
	cr_assert(um_mapping_set(a, UM_PARAM_READAHEAD, 0) == 0);
	cr_assert(um_mapping_set(b, UM_PARAM_READAHEAD, 0) == 0);
	for (size_t i = 0; i < 64; i++) /* 64 pages of a */
		cr_assert(a[i * 512] == word(i * 4096, 9));
	struct um_stats sa, sb;
	cr_assert(um_stats(a, &sa) == 0 && um_stats(b, &sb) == 0);
	cr_expect(sa.faults == 64 && sa.misses == 64, "a: %lu faults %lu misses", sa.faults, sa.misses);
	cr_expect(sa.bytes_read == 64 * 4096, "a read %lu bytes", sa.bytes_read);
	cr_expect(sb.faults == 0, "b has not faulted: %lu", sb.faults);
	cr_expect(sa.resident_bytes == 64 * 4096 && sb.resident_bytes == 0, "resident a %lu b %lu",
		  sa.resident_bytes, sb.resident_bytes);
	/* b maps from 512 KiB on, which a has not touched: misses for b. */
	for (size_t i = 0; i < 16; i++)
		cr_assert(b[i * 512] == word(512 * 1024 + i * 4096, 9));
	cr_assert(um_stats(b, &sb) == 0);
	cr_expect(sb.faults == 16 && sb.misses == 16, "b: %lu faults %lu misses", sb.faults, sb.misses);
	/* Now a touches the pages b brought in: hits for a. */
	for (size_t i = 0; i < 16; i++)
		cr_assert(a[(512 * 1024 + i * 4096) / 8] == word(512 * 1024 + i * 4096, 9));
	cr_assert(um_stats(a, &sa) == 0);
	cr_expect(sa.faults == 80 && sa.hits == 16, "a: %lu faults %lu hits", sa.faults, sa.hits);
	/* Split a in three: each piece reports the whole mapping. */
	cr_assert(um_mprotect((char *)a + 256 * 1024, 4096, PROT_NONE) == 0);
	struct um_stats s1, s2;
	cr_assert(um_stats((char *)a + 900 * 1024, &s1) == 0 && um_stats(a, &s2) == 0);
	cr_expect(s1.faults == 80 && s2.faults == 80 && s1.mappings == 3, "split: %lu %lu faults, %lu regions",
		  s1.faults, s2.faults, s1.mappings);
	/* Move b: its counters move with it. */
	void *nb = um_mremap(b, 64 * 1024, 128 * 1024, MREMAP_MAYMOVE);
	cr_assert(nb != MAP_FAILED);
	cr_assert(um_stats(nb, &sb) == 0);
	cr_expect(sb.faults == 16, "moved b: %lu faults", sb.faults);
	cr_assert(um_munmap(a, 1 * MiB) == 0 && um_munmap(nb, 128 * 1024) == 0);
	cr_expect(um_stats(a, &sa) == -1 && errno == ENOMEM, "unmapped: no stats");
	unlink(path);
}

/* Until caches are shared between processes, a forked child cannot use the
 * parent's file mappings: it must get a clean SIGSEGV, never zeros, and
 * never disturb the parent's cache.  Its own um_* calls go to the kernel. */
Test(fork, child_works_on_the_parent_file_mappings)
{
	/* The child's engine serves its faults on the inherited mapping (an
	 * absent page is read from the file, not a hole of zeros), it sees
	 * the parent's unwritten store, its own store reaches the parent, and
	 * no other word changes. */
	int fd = make_file(65536, 8);
	uint64_t *m = um_mmap(NULL, 65536, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	m[0] = 42; /* dirty, not written back */
	pid_t pid = fork();
	if (pid == 0) {
		uint64_t *k = um_mmap(NULL, 65536, PROT_READ, MAP_SHARED, fd, 0);
		if (k == MAP_FAILED || k[1] != word(8, 8) || k[0] != 42)
			_exit(3);
		if (m[4096] != word(4096 * 8, 8)) /* absent page */
			_exit(4);
		m[4097] = 77;
		_exit(k[4097] == 77 ? 0 : 5);
	}
	int status;
	waitpid(pid, &status, 0);
	cr_expect(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %x", status);
	for (uint64_t i = 1; i < 8192; i++)
		if (i != 4097 && m[i] != word(i * 8, 8))
			cr_assert_fail("parent's word %lu changed", i);
	cr_expect(m[0] == 42);
	cr_expect(m[4097] == 77, "the child's store is seen by the parent");
	cr_assert(um_munmap(m, 65536) == 0);
	uint64_t v[2];
	cr_assert(pread(fd, &v[0], 8, 0) == 8 && pread(fd, &v[1], 8, 4097 * 8) == 8);
	cr_expect(v[0] == 42 && v[1] == 77);
	unlink(path);
}

extern char **environ;

Test(fork, exec_spawn_and_system_leave_the_mappings_working)
{
	/* vfork, posix_spawn and system() share or replace the address space
	 * without fork handlers; fork + exec replaces the child's.  The
	 * parent's mappings go on working, their stores reach the file. */
	int fd = make_file(1 * MiB, 16);
	uint64_t *m = um_mmap(NULL, 1 * MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	cr_assert(m != MAP_FAILED);
	m[0] = 7;
	char *argv[] = { "true", NULL };
	pid_t pid;
	int status = 0;
	cr_expect(posix_spawnp(&pid, "true", NULL, NULL, argv, environ) == 0, "posix_spawn");
	cr_expect(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0);
	cr_expect(system("true") == 0, "system()");
	pid = vfork();
	if (pid == 0) {
		execlp("true", "true", (char *)NULL);
		_exit(127);
	}
	cr_expect(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "vfork+exec");
	pid = fork();
	if (pid == 0) {
		execlp("true", "true", (char *)NULL);
		_exit(127);
	}
	cr_expect(waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork+exec");
	for (uint64_t i = 1; i < 1 * MiB / 8; i += 512)
		if (m[i] != word(i * 8, 16))
			cr_assert_fail("word %lu after the children is %lx", i, m[i]);
	m[1] = 8;
	cr_assert(um_munmap(m, 1 * MiB) == 0);
	uint64_t v[2];
	cr_assert(pread(fd, v, 16, 0) == 16);
	cr_expect(v[0] == 7 && v[1] == 8, "stores before and after the children reached the file");
	unlink(path);
}

/* An application's swap store: a memfd per handle (so it works from a fork
 * child too), counting what ummap asks of it. */
static struct {
	int opened, closed;
	uint64_t read, written, discarded;
} swap_calls;

static void *swap_open(void *arg)
{
	int fd = memfd_create((const char *)arg, MFD_CLOEXEC);
	if (fd < 0)
		return NULL;
	swap_calls.opened++;
	return (void *)(intptr_t)(fd + 1);
}

static ssize_t swap_read(void *h, void *buf, size_t len, uint64_t off)
{
	ssize_t n = pread((int)(intptr_t)h - 1, buf, len, (off_t)off);
	if (n < 0)
		return -errno;
	memset((char *)buf + n, 0, len - (size_t)n); /* never written: zeros */
	swap_calls.read += len;
	return (ssize_t)len;
}

static ssize_t swap_write(void *h, const void *buf, size_t len, uint64_t off)
{
	ssize_t n = pwrite((int)(intptr_t)h - 1, buf, len, (off_t)off);
	swap_calls.written += n > 0 ? (uint64_t)n : 0;
	return n < 0 ? -errno : n;
}

static int swap_discard(void *h, uint64_t off, uint64_t len)
{
	swap_calls.discarded += len;
	return fallocate((int)(intptr_t)h - 1, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len);
}

static void swap_close(void *h)
{
	close((int)(intptr_t)h - 1);
	swap_calls.closed++;
}

Test(budget, anonymous_memory_swaps_to_the_application_s_store)
{
	/* A swap store set through the API takes the evicted pages of both
	 * kinds of anonymous memory; MADV_REMOVE discards from it, munmap
	 * closes it; a bad table is refused. */
	struct um_swap_store bad = { .version = 2 };
	cr_expect(um_set_swap_store(&bad) == -1 && errno == EINVAL);
	struct um_swap_store s = { .version = UM_SWAP_STORE_VERSION, .arg = "test-swap", .open = swap_open,
				   .read = swap_read, .write = swap_write, .discard = swap_discard,
				   .close = swap_close };
	cr_assert(um_set_swap_store(&s) == 0);
	const uint64_t size = 32 * MiB;
	uint64_t *m = through_a_small_budget(MAP_SHARED, size, 17);
	cr_expect(swap_calls.opened == 1 && swap_calls.written > 0 && swap_calls.read > 0,
		  "opened %d, %llu bytes written, %llu read", swap_calls.opened,
		  (unsigned long long)swap_calls.written, (unsigned long long)swap_calls.read);
	cr_assert(um_madvise(m, 1 * MiB, MADV_REMOVE) == 0);
	cr_expect(swap_calls.discarded >= 1 * MiB, "MADV_REMOVE discarded %llu bytes",
		  (unsigned long long)swap_calls.discarded);
	cr_expect(m[0] == 0 && m[1 * MiB / 8] == word(1 * MiB, 17));
	cr_assert(um_munmap(m, size) == 0);
	uint64_t *p = through_a_small_budget(MAP_PRIVATE, size, 18);
	cr_expect(swap_calls.opened == 2, "private memory opened a store of its own too (%d)", swap_calls.opened);
	cr_assert(um_munmap(p, size) == 0);
	cr_expect(swap_calls.closed == 2, "munmap closed the stores (%d of %d)", swap_calls.closed, swap_calls.opened);
	cr_assert(um_set_swap_store(NULL) == 0);
}

static volatile pid_t handled_on;

static void note_tid(int sig)
{
	handled_on = (pid_t)syscall(SYS_gettid);
}

Test(engine, application_signals_never_run_on_engine_threads)
{
	/* A process-directed signal goes to a thread that does not block it.
	 * With the application's own thread blocking it, it must wait for
	 * that thread: ummap's threads block every signal (a handler there
	 * could call um_* while the thread holds ummap's lock, or fault on a
	 * page only that thread can serve). */
	int fd = make_file(65536, 21);
	char *m = um_mmap(NULL, 65536, PROT_READ, MAP_SHARED, fd, 0); /* the engine runs */
	cr_assert(m != MAP_FAILED && m[0] == (char)word(0, 21));
	struct sigaction sa = { .sa_handler = note_tid };
	sigaction(SIGUSR1, &sa, NULL);
	sigset_t one, old;
	sigemptyset(&one);
	sigaddset(&one, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &one, &old);
	handled_on = 0;
	kill(getpid(), SIGUSR1);
	usleep(20000);
	cr_expect(handled_on == 0, "the signal ran on thread %d, not the application's", (int)handled_on);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	cr_expect(handled_on == (pid_t)syscall(SYS_gettid), "then it runs on the application's thread");
	cr_assert(um_munmap(m, 65536) == 0);
	unlink(path);
}
