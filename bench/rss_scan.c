/*
 * rss_scan.c - what a scan of a file larger than the budget costs in time
 * and in resident memory as the kernel counts it (`make bench-rss`).
 *
 * A file of FILE_MIB (default 512) MiB is read through um_mmap under a
 * budget of BUDGET_MIB (default 64) MiB, its page cache dropped before each
 * run (cold): a sequential pass reading one word of every page, then a pass
 * reading RANDOM_PAGES pages in random order with MADV_RANDOM.  Each is run
 * three times; the medians are printed, with the process's VmHWM (reset
 * before each run through /proc/self/clear_refs) and, in one more sampled
 * sequential run, the peaks of VmRSS and of Pss (smaps_rollup).
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "ummap.h"

#define MiB (1UL << 20)
#define PAGE 4096UL
#define RUNS 3
#define RANDOM_PAGES 32768UL

static uint64_t file_size, budget;

static double clock_s(clockid_t id)
{
	struct timespec t;
	clock_gettime(id, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* A field of a /proc/self file, in bytes ("VmRSS:" in status, "Pss:" in
 * smaps_rollup). */
static uint64_t proc_kb(const char *file, const char *field)
{
	FILE *f = fopen(file, "r");
	char line[256];
	unsigned long kb = 0;
	size_t n = strlen(field);
	while (f && fgets(line, sizeof line, f))
		if (!strncmp(line, field, n)) {
			kb = strtoul(line + n, NULL, 10);
			break;
		}
	if (f)
		fclose(f);
	return (uint64_t)kb << 10;
}

static void reset_hwm(void)
{
	int fd = open("/proc/self/clear_refs", O_WRONLY);
	if (fd < 0 || write(fd, "5", 1) != 1)
		perror("clear_refs");
	if (fd >= 0)
		close(fd);
}

static int make_file(void)
{
	char path[] = "/tmp/ummap-bench.XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0) {
		perror("mkstemp");
		exit(1);
	}
	unlink(path);
	static uint64_t buf[MiB / 8];
	for (uint64_t off = 0; off < file_size; off += MiB) {
		for (size_t i = 0; i < MiB / 8; i++)
			buf[i] = off + i * 8;
		if (pwrite(fd, buf, MiB, (off_t)off) != (ssize_t)MiB) {
			perror("pwrite");
			exit(1);
		}
	}
	fdatasync(fd);
	return fd;
}

struct peaks {
	uint64_t rss, pss;
};

/* Seconds for one cold pass, elapsed and (*cpu) of the process's CPU, its
 * fault thread's included: every page in order (order NULL) or the pages
 * order lists; checks every word read; samples into pk if given. */
static double pass(int fd, const uint32_t *order, uint64_t n, struct peaks *pk, double *cpu)
{
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	volatile uint64_t *m = um_mmap(NULL, file_size, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		perror("um_mmap");
		exit(1);
	}
	if (order)
		um_madvise((void *)m, file_size, MADV_RANDOM);
	double t = clock_s(CLOCK_MONOTONIC), c = clock_s(CLOCK_PROCESS_CPUTIME_ID);
	for (uint64_t i = 0; i < n; i++) {
		uint64_t pg = order ? order[i] : i;
		if (m[pg * PAGE / 8] != pg * PAGE) {
			fprintf(stderr, "page %lu reads %lx\n", (unsigned long)pg, (unsigned long)m[pg * PAGE / 8]);
			exit(1);
		}
		if (pk && i % 512 == 0) {
			uint64_t rss = proc_kb("/proc/self/status", "VmRSS:");
			uint64_t pss = proc_kb("/proc/self/smaps_rollup", "Pss:");
			pk->rss = rss > pk->rss ? rss : pk->rss;
			pk->pss = pss > pk->pss ? pss : pk->pss;
		}
	}
	t = clock_s(CLOCK_MONOTONIC) - t;
	*cpu = clock_s(CLOCK_PROCESS_CPUTIME_ID) - c;
	um_munmap((void *)m, file_size);
	return t;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

static double median(double *v)
{
	qsort(v, RUNS, sizeof *v, cmp);
	return v[RUNS / 2];
}

int main(void)
{
	const char *fm = getenv("FILE_MIB"), *bm = getenv("BUDGET_MIB");
	file_size = (fm ? strtoul(fm, NULL, 10) : 512) * MiB;
	budget = (bm ? strtoul(bm, NULL, 10) : 64) * MiB;
	struct um_config cfg;
	um_get_config(&cfg);
	cfg.budget = budget;
	if (um_configure(&cfg) != 0) {
		perror("um_configure");
		return 1;
	}
	int fd = make_file();
	uint64_t pages = file_size / PAGE, nrand = RANDOM_PAGES < pages ? RANDOM_PAGES : pages;
	uint32_t *order = malloc(pages * sizeof *order);
	for (uint64_t i = 0; i < pages; i++)
		order[i] = (uint32_t)i;
	uint64_t x = 88172645463325252ULL;
	for (uint64_t i = pages - 1; i > 0; i--) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		uint64_t j = x % (i + 1);
		uint32_t t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	double seq[RUNS], seq_cpu[RUNS], rnd[RUNS], rnd_cpu[RUNS], hwm[RUNS], cpu;
	for (int r = 0; r < RUNS; r++) {
		reset_hwm();
		seq[r] = pass(fd, NULL, pages, NULL, &seq_cpu[r]);
		hwm[r] = (double)proc_kb("/proc/self/status", "VmHWM:") / MiB;
		rnd[r] = pass(fd, order, nrand, NULL, &rnd_cpu[r]);
	}
	struct peaks pk = { 0, 0 };
	reset_hwm();
	pass(fd, NULL, pages, &pk, &cpu);
	printf("%lu MiB file, %lu MiB budget, medians of %d cold runs\n", file_size / MiB, budget / MiB, RUNS);
	printf("sequential scan: %.3f s (CPU %.3f s)   VmHWM %.1f MiB\n", median(seq), median(seq_cpu), median(hwm));
	printf("random 4 KiB reads (%lu pages): %.3f s (CPU %.3f s), %.1f us per page\n", (unsigned long)nrand,
	       median(rnd), median(rnd_cpu), median(rnd) * 1e6 / (double)nrand);
	printf("sampled sequential scan: peak VmRSS %.1f MiB, peak Pss %.1f MiB, VmHWM %.1f MiB\n",
	       (double)pk.rss / MiB, (double)pk.pss / MiB,
	       (double)proc_kb("/proc/self/status", "VmHWM:") / MiB);
	return 0;
}
