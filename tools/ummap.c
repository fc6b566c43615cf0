/*
 * ummap - the command-line tool: `ummap check` tells whether this machine can
 * run ummap and what to do if not; `ummap demo` maps a real file larger than
 * the budget, scans and rewrites it, and prints ummap's statistics.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include "service.h"
#include "ummap.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t parse_size(const char *s)
{
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	switch (*end) {
	case 'k': case 'K': v <<= 10; break;
	case 'm': case 'M': v <<= 20; break;
	case 'g': case 'G': v <<= 30; break;
	case '\0': break;
	default: return 0;
	}
	return v;
}

static void mib(const char *what, uint64_t v)
{
	printf("  %-18s %10.1f MiB\n", what, (double)v / (1 << 20));
}

static int read_int_file(const char *path)
{
	FILE *f = fopen(path, "r");
	int v = -1;
	if (f) {
		if (fscanf(f, "%d", &v) != 1)
			v = -1;
		fclose(f);
	}
	return v;
}

static int cmd_check(void)
{
	struct utsname u;
	uname(&u);
	struct um_features f;
	um_features(&f);
	printf("kernel            %s\n", u.release);
	printf("/dev/userfaultfd  %s\n", access("/dev/userfaultfd", R_OK | W_OK) == 0 ? "accessible" : "not accessible");
	int unpriv = read_int_file("/proc/sys/vm/unprivileged_userfaultfd");
	printf("vm.unprivileged_userfaultfd = %d\n", unpriv);
	if (!f.uffd_ok) {
		printf("userfaultfd       UNAVAILABLE: %s\n\n", strerror(f.uffd_errno));
		printf("ummap needs a userfaultfd that also serves faults taken inside system calls.\n"
		       "Grant one of:\n"
		       "  - access to /dev/userfaultfd (Linux 6.1+): e.g. `sudo setfacl -m u:$USER:rw /dev/userfaultfd`\n"
		       "    or a udev rule giving a group of yours rw on it;\n"
		       "  - `sudo sysctl vm.unprivileged_userfaultfd=1`;\n"
		       "  - CAP_SYS_PTRACE for the program.\n"
		       "Until then um_mmap falls back to the kernel's mmap.\n");
		return 1;
	}
	printf("userfaultfd       ok, features 0x%" PRIx64 "\n", f.features);
	printf("  MINOR faults on shared memory   %s\n", f.minor_shmem ? "yes" : "NO (Linux 5.14+ needed)");
	printf("  write-protect on shared memory  %s\n",
	       f.wp_shmem ? "yes" : "no: dirty tracking falls back to treating writable pages as dirty");
	printf("  faulting thread id              %s\n", f.thread_id ? "yes" : "NO (SIGBUS cannot be delivered)");
	printf("  poison                          %s\n", f.poison ? "yes" : "no");
	if (!f.minor_shmem) {
		printf("\nThis kernel is too old for ummap (needs Linux 5.14 or newer).\n");
		return 1;
	}
	struct um_config c;
	um_get_config(&c);
	printf("budget            %" PRIu64 " MiB (UMMAP_BUDGET)\n", c.budget >> 20);
	printf("fault size        %" PRIu64 " KiB (UMMAP_FAULT_SIZE)\n", c.fault_size >> 10);
	printf("readahead max     %" PRIu64 " KiB (UMMAP_READAHEAD)\n", c.readahead_max >> 10);
	printf("writeback         %" PRIu64 " ms (UMMAP_WRITEBACK_MS)\n", c.writeback_ms);
	printf("ummap can run here.\n");
	return 0;
}

static void progress(const char *what, uint64_t done, uint64_t total)
{
	if (!isatty(STDOUT_FILENO))
		return;
	int pct = (int)(done * 100 / (total ? total : 1));
	printf("\r  %-8s [%-40.*s] %3d%%", what, pct * 40 / 100, "########################################", pct);
	fflush(stdout);
	if (done == total)
		printf("\r%70s\r", "");
}

/* The word the demo expects at offset off after `pass` rewrites. */
static uint64_t pattern(uint64_t off, uint64_t pass)
{
	return (off * 0x9e3779b97f4a7c15ULL) ^ 0x5bd1e995 ^ pass;
}

static int cmd_demo(int argc, char **argv)
{
	uint64_t size = 256ULL << 20, budget = 32ULL << 20;
	const char *path = NULL;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--size") && i + 1 < argc)
			size = parse_size(argv[++i]);
		else if (!strcmp(argv[i], "--budget") && i + 1 < argc)
			budget = parse_size(argv[++i]);
		else if (argv[i][0] != '-')
			path = argv[i];
		else {
			fprintf(stderr, "usage: ummap demo [--size 256M] [--budget 32M] [FILE]\n");
			return 2;
		}
	}
	size &= ~7ULL;
	if (!size || !budget) {
		fprintf(stderr, "ummap demo: bad size or budget\n");
		return 2;
	}
	char tmp[4096];
	if (!path) {
		const char *dir = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
		snprintf(tmp, sizeof tmp, "%s/ummap-demo.XXXXXX", dir);
		int t = mkstemp(tmp);
		if (t < 0) {
			fprintf(stderr, "ummap demo: cannot create a file in %s: %s\n", dir, strerror(errno));
			return 1;
		}
		close(t);
		path = tmp;
	}
	printf("ummap demo: a %" PRIu64 " MiB file through a %" PRIu64 " MiB budget\n", size >> 20, budget >> 20);
	printf("  file %s\n", path);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	if (fd < 0) {
		fprintf(stderr, "ummap demo: %s: %s\n", path, strerror(errno));
		return 1;
	}
	/* Write the file with write(2), so the mapping has real data to find. */
	uint64_t buf[8192];
	for (uint64_t off = 0; off < size; off += sizeof buf) {
		size_t n = size - off < sizeof buf ? size - off : sizeof buf;
		for (size_t i = 0; i < n / 8; i++)
			buf[i] = pattern(off + i * 8, 0);
		if (pwrite(fd, buf, n, (off_t)off) != (ssize_t)n) {
			fprintf(stderr, "ummap demo: writing %s: %s\n", path, strerror(errno));
			return 1;
		}
		progress("create", off + n, size);
	}
	fsync(fd);
	struct um_config cfg = { .budget = budget };
	um_configure(&cfg);

	double t0 = now();
	uint64_t *m = um_mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		fprintf(stderr, "ummap demo: um_mmap: %s\n", strerror(errno));
		return 1;
	}
	close(fd); /* the mapping keeps the file, as with mmap */
	uint64_t bad = 0, peak = 0, words = size / 8;
	struct um_stats st;
	for (uint64_t i = 0; i < words; i++) {
		if (m[i] != pattern(i * 8, 0))
			bad++;
		if ((i & 0x3ffff) == 0x3ffff || i == words - 1) {
			um_stats(NULL, &st);
			peak = st.resident_bytes > peak ? st.resident_bytes : peak;
			progress("read", i + 1, words);
		}
	}
	double t1 = now();
	for (uint64_t i = 0; i < words; i++) {
		m[i] ^= 1;
		if ((i & 0x3ffff) == 0x3ffff || i == words - 1) {
			um_stats(NULL, &st);
			peak = st.resident_bytes > peak ? st.resident_bytes : peak;
			progress("write", i + 1, words);
		}
	}
	if (um_msync(m, size, MS_SYNC) < 0)
		fprintf(stderr, "ummap demo: um_msync: %s\n", strerror(errno));
	double t2 = now();
	um_stats(NULL, &st);
	if (um_munmap(m, size) < 0)
		fprintf(stderr, "ummap demo: um_munmap: %s\n", strerror(errno));

	/* Check every word on disk with plain reads. */
	fd = open(path, O_RDONLY);
	for (uint64_t off = 0; fd >= 0 && off < size; off += sizeof buf) {
		size_t n = size - off < sizeof buf ? size - off : sizeof buf;
		if (pread(fd, buf, n, (off_t)off) != (ssize_t)n) {
			bad++;
			break;
		}
		for (size_t i = 0; i < n / 8; i++)
			bad += buf[i] != (pattern(off + i * 8, 0) ^ 1);
	}
	if (fd >= 0)
		close(fd);
	if (path == tmp)
		unlink(tmp);

	printf("  read pass          %8.2f s  %8.0f MiB/s\n", t1 - t0, (double)size / (1 << 20) / (t1 - t0));
	printf("  write pass + sync  %8.2f s  %8.0f MiB/s\n", t2 - t1, (double)size / (1 << 20) / (t2 - t1));
	printf("statistics:\n");
	printf("  faults             %10" PRIu64 "  (hits %" PRIu64 ", misses %" PRIu64 ", first writes %" PRIu64 ")\n",
	       st.faults, st.hits, st.misses, st.wp_faults);
	mib("read from file", st.bytes_read);
	mib("of which readahead", st.readahead_bytes);
	mib("written to file", st.bytes_written);
	printf("  evictions          %10" PRIu64 " pages\n", st.evictions);
	mib("peak resident", peak);
	mib("budget", st.budget);
	bool over = peak > budget + (2ULL << 20);
	printf("result: %s, %" PRIu64 " wrong words, resident %s the budget\n", bad || over ? "FAILED" : "ok", bad,
	       over ? "OVER" : "within");
	return bad || over ? 1 : 0;
}

static void usage(FILE *to)
{
	fprintf(to, "usage: ummap COMMAND [ARGS]\n"
		    "  check                 can this machine run ummap? what to do if not\n"
		    "  demo [--size N] [--budget N] [FILE]\n"
		    "                        map a file larger than the budget, scan and rewrite it\n"
		    "  stat                  what the writeback service keeps, and what is pending\n"
		    "  recover               write back now what ended processes left behind\n"
		    "  service [--idle S]    run the writeback service (the library starts it)\n"
		    "  version               print the version\n");
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "check"))
		return cmd_check();
	if (!strcmp(argv[1], "demo"))
		return cmd_demo(argc - 2, argv + 2);
	if (!strcmp(argv[1], "stat"))
		return service_stat();
	if (!strcmp(argv[1], "recover"))
		return service_recover();
	if (!strcmp(argv[1], "service"))
		return service_main(argc - 2, argv + 2);
	if (!strcmp(argv[1], "version")) {
		printf("ummap %d.%d.%d\n", UMMAP_VERSION_MAJOR, UMMAP_VERSION_MINOR, UMMAP_VERSION_PATCH);
		return 0;
	}
	if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "ummap: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
