/*
 * fill_paths.c - what each way of moving a file's bytes into a memfd (and
 * back) costs, without the rest of the engine (`make bench-fill`): the CPU
 * time per GiB of filling a 64 MiB memfd from a 512 MiB file in runs of
 * 4 KiB, 64 KiB and 8 MiB (page cache warm: the copying, not the disk), by
 *  - populate+pread: MADV_POPULATE_WRITE on a shared mapping of the memfd,
 *    then pread into it (the engine's way before it kept RSS in budget);
 *  - populate+pread+zap: the same, then MADV_DONTNEED of that mapping, so
 *    that the pages are not mapped twice;
 *  - bounce: pread into a 256 KiB buffer, pwrite into the memfd (ummap);
 *  - splice: file to a 1 MiB pipe to the memfd (copy_file_range between
 *    the two refuses: EXDEV);
 * then of writing 64 MiB back in 4 KiB and 256 KiB runs: from the mapping
 * (read faults), from it then zapped, and pread of the memfd into the
 * buffer then pwrite.  Best of 3 per cell.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define MiB (1UL << 20)
#define FILE_SIZE (512 * MiB)
#define CACHE (64 * MiB)
#define BOUNCE (256 * 1024UL)

enum how { POPULATE, ZAP, BOUNCED, SPLICED, HOWS };
static const char *names[HOWS] = { "populate+pread", "populate+pread+zap", "bounce 256 KiB", "splice 1 MiB pipe" };
static int file, memfd, pipefd[2];
static char *win, *buf;

static double cpu(void)
{
	struct timespec t;
	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void check(int ok, const char *what)
{
	if (!ok) {
		perror(what);
		exit(1);
	}
}

static void fill_splice(size_t off, size_t moff, size_t len)
{
	loff_t in = (loff_t)off, out = (loff_t)moff;
	while (len) {
		ssize_t n = splice(file, &in, pipefd[1], NULL, len < MiB ? len : MiB, 0);
		check(n > 0, "splice");
		for (ssize_t m = n; m > 0;) {
			ssize_t k = splice(pipefd[0], NULL, memfd, &out, (size_t)m, 0);
			check(k > 0, "splice");
			m -= k;
		}
		len -= (size_t)n;
	}
}

/* File bytes [off, off+len) into the memfd at off % CACHE. */
static void fill(enum how h, size_t off, size_t len)
{
	size_t moff = off % CACHE;
	switch (h) {
	case POPULATE:
	case ZAP:
		madvise(win + moff, len, MADV_POPULATE_WRITE);
		check(pread(file, win + moff, len, (off_t)off) == (ssize_t)len, "pread");
		if (h == ZAP)
			madvise(win + moff, len, MADV_DONTNEED);
		break;
	case BOUNCED:
		for (size_t d = 0; d < len; d += BOUNCE) {
			size_t n = len - d < BOUNCE ? len - d : BOUNCE;
			check(pread(file, buf, n, (off_t)(off + d)) == (ssize_t)n, "pread");
			check(pwrite(memfd, buf, n, (off_t)(moff + d)) == (ssize_t)n, "pwrite");
		}
		break;
	default:
		fill_splice(off, moff, len);
	}
}

/* Memfd bytes [off, off+len) back to the file. */
static void write_back(enum how h, size_t off, size_t len)
{
	if (h != BOUNCED) {
		check(pwrite(file, win + off, len, (off_t)off) == (ssize_t)len, "pwrite");
		if (h == ZAP)
			madvise(win + off, len, MADV_DONTNEED);
		return;
	}
	for (size_t d = 0; d < len; d += BOUNCE) {
		size_t n = len - d < BOUNCE ? len - d : BOUNCE;
		check(pread(memfd, buf, n, (off_t)(off + d)) == (ssize_t)n, "pread");
		check(pwrite(file, buf, n, (off_t)(off + d)) == (ssize_t)n, "pwrite");
	}
}

static void empty_cache(void)
{
	fallocate(memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, CACHE);
}

/* Best of 3, CPU seconds per GiB. */
static double fill_cost(enum how h, size_t run)
{
	size_t total = run < 64 * 1024 ? CACHE : FILE_SIZE;
	double best = 1e9;
	for (int rep = 0; rep < 3; rep++) {
		empty_cache();
		double t = cpu();
		for (size_t off = 0; off < total; off += run) {
			if (off && off % CACHE == 0)
				empty_cache();
			fill(h, off, run);
		}
		t = (cpu() - t) * (double)(1024 * MiB) / (double)total;
		best = t < best ? t : best;
	}
	return best;
}

static double write_cost(enum how h, size_t run)
{
	double best = 1e9;
	for (int rep = 0; rep < 3; rep++) {
		madvise(win, CACHE, MADV_DONTNEED);
		double t = cpu();
		for (size_t off = 0; off < CACHE; off += run)
			write_back(h, off, run);
		t = (cpu() - t) * (double)(1024 * MiB) / (double)CACHE;
		best = t < best ? t : best;
	}
	return best;
}

int main(void)
{
	char path[] = "/tmp/ummap-fill.XXXXXX";
	file = mkstemp(path);
	check(file >= 0, "mkstemp");
	unlink(path);
	memfd = memfd_create("fill", MFD_CLOEXEC);
	check(memfd >= 0 && ftruncate(memfd, CACHE) == 0, "memfd");
	win = mmap(NULL, CACHE, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
	buf = mmap(NULL, MiB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	check(win != MAP_FAILED && buf != MAP_FAILED, "mmap");
	check(pipe(pipefd) == 0, "pipe");
	fcntl(pipefd[1], F_SETPIPE_SZ, (int)MiB);
	for (size_t off = 0; off < FILE_SIZE; off += MiB) {
		memset(buf, (int)(off / MiB), MiB);
		check(pwrite(file, buf, MiB, (off_t)off) == (ssize_t)MiB, "pwrite");
	}
	const size_t fills[] = { 4096, 64 * 1024, 8 * MiB }, writes[] = { 4096, 256 * 1024 };
	printf("fill, CPU s per GiB   %10s %10s %10s\n", "4 KiB", "64 KiB", "8 MiB");
	for (int h = 0; h < HOWS; h++)
		printf("%-20s %10.3f %10.3f %10.3f\n", names[h], fill_cost(h, fills[0]), fill_cost(h, fills[1]),
		       fill_cost(h, fills[2]));
	printf("writeback, CPU s per GiB %7s %10s\n", "4 KiB", "256 KiB");
	for (int h = 0; h < SPLICED; h++)
		printf("%-20s %10.3f %10.3f\n", h == POPULATE ? "from the mapping" : h == ZAP ? "mapping, zapped" : names[h],
		       write_cost(h, writes[0]), write_cost(h, writes[1]));
	return 0;
}
