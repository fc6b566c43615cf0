/*
 * scan_larger_than_budget.c - map a file eight times larger than the
 * memory budget, read all of it, write all of it, and check that ummap
 * stayed within the budget and lost no byte.
 *
 * The file is 64 MiB; each 8-byte word holds its offset ^ 0x5bd1e995.
 * With um_configure setting an 8 MiB budget, the scan must evict as it
 * goes and the writes must be written back as their pages are evicted.
 *
 * Exits 0 on success, 1 on failure, and 77 (skipped) if ummap could not
 * start here, so that the kernel's mmap served the mapping.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <ummap.h>

#define MIB (UINT64_C(1) << 20)
#define FILE_SIZE (64 * MIB)
#define BUDGET (8 * MIB)
#define SLACK (2 * MIB)		/* allowed above the budget */
#define SAMPLE_EVERY (2 * MIB)	/* how often resident_bytes is sampled */
#define CHUNK MIB		/* for pwrite and pread */
#define KEY UINT64_C(0x5bd1e995)

static char dir[PATH_MAX], path[PATH_MAX];
static uint64_t max_resident;

static uint64_t pattern(uint64_t off)
{
	return off ^ KEY;
}

static int sample(void)
{
	struct um_stats st;
	if (um_stats(NULL, &st) != 0) {
		perror("um_stats");
		return -1;
	}
	if (st.resident_bytes > max_resident)
		max_resident = st.resident_bytes;
	return 0;
}

static int make_file(void)
{
	static uint64_t buf[CHUNK / 8];
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
	if (fd < 0) {
		perror("open");
		return -1;
	}
	for (uint64_t off = 0; off < FILE_SIZE; off += CHUNK) {
		for (uint64_t i = 0; i < CHUNK / 8; i++)
			buf[i] = pattern(off + i * 8);
		if (pwrite(fd, buf, CHUNK, (off_t)off) != (ssize_t)CHUNK) {
			perror("pwrite");
			close(fd);
			return -1;
		}
	}
	return fd;
}

/* Checks the file on disk: every word must be its pattern plus one. */
static int verify_file(void)
{
	static uint64_t buf[CHUNK / 8];
	uint64_t bad = 0;
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		perror("open");
		return -1;
	}
	for (uint64_t off = 0; off < FILE_SIZE; off += CHUNK) {
		if (pread(fd, buf, CHUNK, (off_t)off) != (ssize_t)CHUNK) {
			perror("pread");
			close(fd);
			return -1;
		}
		for (uint64_t i = 0; i < CHUNK / 8; i++) {
			uint64_t want = pattern(off + i * 8) + 1;
			if (buf[i] != want && bad++ < 5)
				printf("scan: file offset %" PRIu64 " holds "
				       "%#" PRIx64 ", expected %#" PRIx64 "\n",
				       off + i * 8, buf[i], want);
		}
	}
	close(fd);
	if (bad)
		printf("scan: %" PRIu64 " words wrong on disk\n", bad);
	return bad ? -1 : 0;
}

static int run(void)
{
	struct um_config cfg = { .budget = BUDGET };
	struct um_stats st;
	uint64_t bad = 0;
	int ok = 1;

	if (um_configure(&cfg) != 0) {
		perror("um_configure");
		return -1;
	}
	int fd = make_file();
	if (fd < 0)
		return -1;
	uint64_t *w = um_mmap(NULL, FILE_SIZE, PROT_READ | PROT_WRITE,
			      MAP_SHARED, fd, 0);
	if (w == MAP_FAILED) {
		perror("um_mmap");
		close(fd);
		return -1;
	}
	close(fd); /* the mapping keeps the file */

	/* If ummap could not start (no userfaultfd permission, say), the
	 * kernel's mmap served the call and there is no budget to check. */
	if (um_stats(NULL, &st) != 0 || st.mappings == 0) {
		struct um_features f;
		um_features(&f);
		printf("scan: SKIPPED: ummap is not paging the mapping (%s); "
		       "run `ummap check`\n", f.uffd_ok ? "it could not start"
		       : strerror(f.uffd_errno));
		um_munmap(w, FILE_SIZE);
		return 77;
	}

	/* Read every word. */
	for (uint64_t i = 0; i < FILE_SIZE / 8; i++) {
		if (w[i] != pattern(i * 8) && bad++ < 5)
			printf("scan: read %#" PRIx64 " at offset %" PRIu64
			       ", expected %#" PRIx64 "\n", w[i], i * 8,
			       pattern(i * 8));
		if ((i + 1) % (SAMPLE_EVERY / 8) == 0 && sample() != 0)
			ok = 0;
	}
	printf("scan: read %" PRIu64 " MiB through the mapping, %" PRIu64
	       " words wrong\n", FILE_SIZE / MIB, bad);
	if (bad)
		ok = 0;

	/* Increment every word. */
	for (uint64_t i = 0; i < FILE_SIZE / 8; i++) {
		w[i]++;
		if ((i + 1) % (SAMPLE_EVERY / 8) == 0 && sample() != 0)
			ok = 0;
	}
	if (um_msync(w, FILE_SIZE, MS_SYNC) != 0) {
		perror("um_msync");
		ok = 0;
	}

	if (um_stats(NULL, &st) != 0) {
		perror("um_stats");
		ok = 0;
	} else {
		if (st.resident_bytes > max_resident)
			max_resident = st.resident_bytes;
		printf("scan: faults %" PRIu64 ", hits %" PRIu64
		       ", misses %" PRIu64 ", evictions %" PRIu64
		       ", writebacks %" PRIu64 "\n", st.faults, st.hits,
		       st.misses, st.evictions, st.writebacks);
		printf("scan: resident %" PRIu64 " KiB (highest sampled %"
		       PRIu64 " KiB), dirty %" PRIu64 " KiB, budget %" PRIu64
		       " KiB\n", st.resident_bytes >> 10, max_resident >> 10,
		       st.dirty_bytes >> 10, st.budget >> 10);
		printf("scan: bytes read %" PRIu64 " MiB (readahead %" PRIu64
		       " MiB), bytes written %" PRIu64 " MiB\n",
		       st.bytes_read / MIB, st.readahead_bytes / MIB,
		       st.bytes_written / MIB);
		if (st.evictions == 0) {
			printf("scan: FAILED: no evictions, yet the file is "
			       "larger than the budget\n");
			ok = 0;
		}
	}
	if (max_resident > BUDGET + SLACK) {
		printf("scan: FAILED: %" PRIu64 " KiB resident, more than the "
		       "budget of %" PRIu64 " KiB plus %" PRIu64 " KiB\n",
		       max_resident >> 10, BUDGET >> 10, SLACK >> 10);
		ok = 0;
	}

	if (um_munmap(w, FILE_SIZE) != 0) {
		perror("um_munmap");
		ok = 0;
	}
	if (verify_file() != 0)
		ok = 0;
	else
		printf("scan: every word on disk was incremented\n");
	return ok ? 0 : -1;
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	if (!tmp || !*tmp)
		tmp = "/tmp";
	snprintf(dir, sizeof dir, "%s/ummap-scan-XXXXXX", tmp);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	if ((size_t)snprintf(path, sizeof path, "%s/big", dir) >=
	    sizeof path) {
		fprintf(stderr, "TMPDIR too long\n");
		rmdir(dir);
		return 1;
	}

	alarm(300); /* a fault that is never served must not hang forever */
	int rc = run();
	unlink(path);
	rmdir(dir);
	if (rc == 77)
		return 77;
	if (rc == 0)
		printf("scan: OK: a %" PRIu64 " MiB file scanned and rewritten "
		       "within a %" PRIu64 " MiB budget\n", FILE_SIZE / MIB,
		       BUDGET / MIB);
	return rc == 0 ? 0 : 1;
}
