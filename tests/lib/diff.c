/*
 * diff.c - the differential test harness (see diff.h).
 *
 * Life of one diff_run():
 *   parent: make two shared logs (kernel mmap), then for each side:
 *     mkdtemp a fresh directory; fork;
 *     child: alarm, SIGSEGV/SIGBUS handlers, fn(ops, log, dir), exit(0);
 *     parent: wait (kill after the timeout), log the exit status, log every
 *     file of the directory (sorted by name: size, hash, bytes), remove it.
 *   Then compare the logs entry by entry and report the first divergence.
 *
 * The harness's own memory (logs, blobs) always comes from the kernel's
 * mmap, never from the ops under test.
 */
#include "diff.h"

#include <criterion/criterion.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef DIFF_KERNEL_ONLY
#include <ummap.h>
#endif

/* ---------------------------------------------------------------- ops */

/* The kernel's calls, for the reference side (and both sides of the
 * harness self-check build). */
#define KERNEL_CALLS                                                         \
	.mmap = mmap, .munmap = munmap, .msync = msync, .mprotect = mprotect, \
	.madvise = madvise, .mremap = mremap, .ftruncate = ftruncate

const struct mm_ops kernel_ops = { .name = "kernel", KERNEL_CALLS };

#ifdef DIFF_KERNEL_ONLY
/* Harness self-check build: both sides are the kernel. */
const struct mm_ops ummap_ops = { .name = "kernel-as-ummap", KERNEL_CALLS };
#else
const struct mm_ops ummap_ops = {
	.name = "ummap",
	.mmap = um_mmap,
	.munmap = um_munmap,
	.msync = um_msync,
	.mprotect = um_mprotect,
	.madvise = um_madvise,
	.mremap = um_mremap,
	.ftruncate = um_ftruncate,
};
#endif

/* ---------------------------------------------------------------- log */

static uint64_t fnv(const void *p, size_t n)
{
	const uint8_t *b = p;
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < n; i++) {
		h ^= b[i];
		h *= 0x100000001b3ull;
	}
	return h;
}

static struct diff_entry *entry(struct diff_log *log, int kind, int line,
				const char *text)
{
	if (log->n >= DIFF_MAX_ENTRIES) {
		log->overflow = 1;
		return NULL;
	}
	struct diff_entry *e = &log->e[log->n];
	memset(e, 0, sizeof *e);
	e->kind = kind;
	e->line = line;
	if (text) {
		size_t n = strlen(text);
		if (n >= DIFF_TEXT)
			n = DIFF_TEXT - 1;
		memcpy(e->text, text, n);
		e->text[n] = 0;
	}
	return e;
}

/* Publishes the entry last written by entry() (so a signal arriving while
 * one is being filled never shows half of it). */
static void commit(struct diff_log *log)
{
	if (log->n < DIFF_MAX_ENTRIES)
		__atomic_store_n(&log->n, log->n + 1, __ATOMIC_RELEASE);
}

void diff_log_int(struct diff_log *log, int line, const char *text,
		  long long v, int err)
{
	struct diff_entry *e = entry(log, DK_INT, line, text);
	if (!e)
		return;
	e->val = v;
	e->err = v == -1 ? err : 0;
	commit(log);
}

void diff_log_val(struct diff_log *log, int line, const char *text,
		  long long v)
{
	struct diff_entry *e = entry(log, DK_VAL, line, text);
	if (!e)
		return;
	e->val = v;
	commit(log);
}

void diff_log_note(struct diff_log *log, int line, const char *fmt, ...)
{
	char buf[DIFF_TEXT];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	struct diff_entry *e = entry(log, DK_NOTE, line, buf);
	if (e)
		commit(log);
}

void diff_log_harness(struct diff_log *log, int line, const char *fmt, ...)
{
	char buf[DIFF_TEXT];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof buf, fmt, ap);
	va_end(ap);
	log->harness_errors++;
	struct diff_entry *e = entry(log, DK_HARNESS, line, buf);
	if (e) {
		e->err = errno;
		commit(log);
	}
}

static uint64_t blob_put(struct diff_log *log, const void *buf, size_t len)
{
	if (!log->blob || len > DIFF_BLOB_BYTES - log->blob_used)
		return 0;
	uint64_t off = log->blob_used;
	memcpy(log->blob + off, buf, len);
	log->blob_used += (len + 7) & ~7ul;
	return off + 1;
}

void diff_log_bytes(struct diff_log *log, int kind, int line,
		    const char *text, long long ret, int err, const void *buf,
		    size_t len)
{
	struct diff_entry *e = entry(log, kind, line, text);
	if (!e)
		return;
	e->val = ret;
	e->err = ret < 0 ? err : 0;
	e->len = len;
	e->hash = fnv(buf, len);
	e->blob = len ? blob_put(log, buf, len) : 0;
	commit(log);
}

/* ---------------------------------------------------------- addresses */

int diff_register(struct diff_log *log, const void *p, size_t len)
{
	if (log->nmaps >= DIFF_MAX_MAPS) {
		log->overflow = 1;
		return -1;
	}
	log->maps[log->nmaps].base = (uintptr_t)p;
	log->maps[log->nmaps].len = len;
	return log->nmaps++;
}

struct diff_ptr diff_addr(const struct diff_log *log, const void *p)
{
	struct diff_ptr r = { DP_UNREG, -1, 0 };
	uintptr_t a = (uintptr_t)p;
	if (p == NULL) {
		r.cls = DP_NULL;
		return r;
	}
	if (p == MAP_FAILED) {
		r.cls = DP_FAILED;
		return r;
	}
	/* The most recent mapping containing p. */
	for (int i = log->nmaps - 1; i >= 0; i--) {
		if (a >= log->maps[i].base &&
		    a - log->maps[i].base < log->maps[i].len) {
			r.cls = DP_MAP;
			r.idx = i;
			r.off = (long long)(a - log->maps[i].base);
			return r;
		}
	}
	if (a < 0x10000) {
		r.cls = DP_ABS;
		r.off = (long long)a;
		return r;
	}
	/* Else the closest mapping that starts below p, within 16 MiB. */
	uintptr_t best = UINTPTR_MAX;
	for (int i = log->nmaps - 1; i >= 0; i--) {
		if (a >= log->maps[i].base && a - log->maps[i].base < best &&
		    a - log->maps[i].base < (16ul << 20)) {
			best = a - log->maps[i].base;
			r.cls = DP_MAP;
			r.idx = i;
			r.off = (long long)best;
		}
	}
	return r;
}

void diff_log_ptr(struct diff_log *log, int line, const char *text, void *p,
		  int err)
{
	struct diff_entry *e = entry(log, DK_PTR, line, text);
	if (!e)
		return;
	e->ptr = diff_addr(log, p);
	e->raw = (uintptr_t)p;
	e->err = p == MAP_FAILED ? err : 0;
	commit(log);
}

void *diff_mmap(struct diff_log *log, int line, const char *text,
		const struct mm_ops *o, void *addr, size_t len, int prot,
		int flags, int fd, off_t off)
{
	errno = 0;
	void *p = o->mmap(addr, len, prot, flags, fd, off);
	int err = errno;
	struct diff_entry *e = entry(log, DK_PTR, line, text);
	if (e) {
		e->raw = (uintptr_t)p;
		if (p == MAP_FAILED) {
			e->ptr.cls = DP_FAILED;
			e->err = err;
		} else if (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) {
			/* Where it landed, relative to what is registered
			 * (MAP_FIXED must return addr itself). */
			e->ptr = diff_addr(log, p);
			e->val = p == addr;
		} else if (addr) {
			e->ptr.cls = p == addr ? DP_HINT : DP_NEW;
		} else {
			e->ptr.cls = DP_NEW;
		}
	}
	if (p != MAP_FAILED) {
		int idx = diff_register(log, p, len);
		if (e && e->ptr.cls != DP_MAP)
			e->ptr.idx = idx;
		if (e)
			e->len = (uint64_t)(idx + 1); /* registered as m<idx> */
	}
	if (e)
		commit(log);
	errno = err;
	return p;
}

void *diff_mremap(struct diff_log *log, int line, const char *text,
		  const struct mm_ops *o, void *old, size_t old_size,
		  size_t new_size, int flags, void *new_addr)
{
	errno = 0;
	/* new_addr is always passed (NULL unless MREMAP_FIXED): the kernel
	 * also reads it for MREMAP_DONTUNMAP, as a hint. */
	void *p = o->mremap(old, old_size, new_size, flags, new_addr);
	int err = errno;
	struct diff_entry *e = entry(log, DK_PTR, line, text);
	if (e) {
		e->raw = (uintptr_t)p;
		if (p == MAP_FAILED) {
			e->ptr.cls = DP_FAILED;
			e->err = err;
		} else if (p == old && !(flags & MREMAP_FIXED)) {
			e->ptr.cls = DP_SAME;
		} else if (flags & MREMAP_FIXED) {
			e->ptr = diff_addr(log, p);
			e->val = p == new_addr;
		} else {
			e->ptr.cls = DP_NEW;
		}
	}
	if (p != MAP_FAILED) {
		int idx = diff_register(log, p, new_size);
		if (e && e->ptr.cls != DP_MAP)
			e->ptr.idx = idx;
		if (e)
			e->len = (uint64_t)(idx + 1);
	}
	if (e)
		commit(log);
	errno = err;
	return p;
}

const char *const diff_kind_names[DIFF_NKINDS] = {
	"file MAP_SHARED", "file MAP_PRIVATE", "anonymous MAP_PRIVATE",
	"anonymous MAP_SHARED",
};

char *diff_map_kind(struct diff_log *log, int line, const struct mm_ops *o,
		    int kind, int fd, size_t len, int prot, int flags)
{
	static const int kflags[DIFF_NKINDS] = {
		MAP_SHARED, MAP_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS,
		MAP_SHARED | MAP_ANONYMOUS,
	};
	char text[DIFF_TEXT];
	int anon = kind == DIFF_ANON_PRIVATE || kind == DIFF_ANON_SHARED;
	snprintf(text, sizeof text, "mmap %s, %zu bytes, prot %#x, flags %#x",
		 diff_kind_names[kind], len, prot, flags);
	return diff_mmap(log, line, text, o, NULL, len, prot,
			 flags | kflags[kind], anon ? -1 : fd, 0);
}

/* ------------------------------------------------------ memory access */

void diff_read(struct diff_log *log, int line, const char *text,
	       const void *p, size_t len)
{
	/* One buffer kept for the whole run: a read that faults leaves by
	 * siglongjmp, which must not leak what it was reading into. */
	static uint8_t *buf;
	static size_t cap;
	if (len > cap) {
		uint8_t *nb = realloc(buf, len);
		if (!nb) {
			diff_log_harness(log, line, "malloc(%zu) failed", len);
			return;
		}
		buf = nb;
		cap = len;
	}
	const volatile uint8_t *v = p;
	for (size_t i = 0; i < len; i++)
		buf[i] = v[i];
	diff_log_bytes(log, DK_MEM, line, text, 0, 0, buf, len);
}

static void wrote(struct diff_log *log, int line, const char *text,
		  const void *p, size_t len, uint64_t hash)
{
	/* Logs what was meant to be written (not read back: reading is a
	 * separate, explicit step). */
	struct diff_entry *e = entry(log, DK_WROTE, line, text);
	if (!e)
		return;
	e->len = len;
	e->hash = hash;
	e->ptr = diff_addr(log, p);
	e->raw = (uintptr_t)p;
	commit(log);
}

void diff_write(struct diff_log *log, int line, const char *text, void *p,
		const void *src, size_t len)
{
	volatile uint8_t *v = p;
	const uint8_t *s = src;
	for (size_t i = 0; i < len; i++)
		v[i] = s[i];
	wrote(log, line, text, p, len, fnv(src, len));
}

void diff_fill(struct diff_log *log, int line, const char *text, void *p,
	       int c, size_t len)
{
	volatile uint8_t *v = p;
	for (size_t i = 0; i < len; i++)
		v[i] = (uint8_t)c;
	wrote(log, line, text, p, len, (uint64_t)(uint8_t)c);
}

void diff_write_pattern(struct diff_log *log, int line, const char *text,
			void *p, size_t len, unsigned seed, uint64_t base)
{
	volatile uint8_t *v = p;
	for (size_t i = 0; i < len; i++)
		v[i] = diff_pat(seed, base + i);
	wrote(log, line, text, p, len, seed + base);
}

/* -------------------------------------------------------------- files */

const char *diff_path(const char *dir, const char *name)
{
	static char buf[PATH_MAX + 256];
	snprintf(buf, sizeof buf, "%s/%s", dir, name);
	return buf;
}

int diff_mkfile(struct diff_log *log, const char *dir, const char *name,
		size_t size, unsigned seed)
{
	int fd = open(diff_path(dir, name), O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0) {
		diff_log_harness(log, 0, "create %s: %s", name, strerror(errno));
		return -1;
	}
	uint8_t buf[65536];
	for (size_t off = 0; off < size;) {
		size_t n = size - off < sizeof buf ? size - off : sizeof buf;
		for (size_t i = 0; i < n; i++)
			buf[i] = diff_pat(seed, off + i);
		ssize_t w = pwrite(fd, buf, n, (off_t)off);
		if (w <= 0) {
			diff_log_harness(log, 0, "write %s: %s", name,
					 strerror(errno));
			close(fd);
			return -1;
		}
		off += (size_t)w;
	}
	return fd;
}

int diff_open(struct diff_log *log, int line, const char *text,
	      const char *dir, const char *name, int flags)
{
	errno = 0;
	int fd = open(diff_path(dir, name), flags, 0644);
	diff_log_int(log, line, text, fd < 0 ? -1 : 0, errno);
	return fd;
}

void diff_pread(struct diff_log *log, int line, const char *text, int fd,
		off_t off, size_t len)
{
	uint8_t *buf = malloc(len ? len : 1);
	if (!buf) {
		diff_log_harness(log, line, "malloc(%zu) failed", len);
		return;
	}
	errno = 0;
	ssize_t r = pread(fd, buf, len, off);
	int err = errno;
	diff_log_bytes(log, DK_IO, line, text, r, err, buf, r > 0 ? (size_t)r : 0);
	free(buf);
}

void diff_pwrite(struct diff_log *log, int line, const char *text, int fd,
		 off_t off, const void *src, size_t len)
{
	errno = 0;
	ssize_t r = pwrite(fd, src, len, off);
	diff_log_int(log, line, text, r, errno);
}

static int read_all(int fd, uint8_t **out, size_t *outlen)
{
	struct stat st;
	if (fstat(fd, &st) != 0)
		return -1;
	size_t size = (size_t)st.st_size;
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return -1;
	size_t got = 0;
	while (got < size) {
		ssize_t r = pread(fd, buf + got, size - got, (off_t)got);
		if (r < 0) {
			free(buf);
			return -1;
		}
		if (r == 0)
			break;
		got += (size_t)r;
	}
	*out = buf;
	*outlen = got;
	return 0;
}

void diff_file(struct diff_log *log, int line, const char *text, int fd)
{
	uint8_t *buf;
	size_t len;
	errno = 0;
	if (read_all(fd, &buf, &len) != 0) {
		diff_log_bytes(log, DK_IO, line, text, -1, errno, "", 0);
		return;
	}
	diff_log_bytes(log, DK_IO, line, text, (long long)len, 0, buf, len);
	free(buf);
}

/* ------------------------------------------------------------ signals */

sigjmp_buf diff_try_env;
static struct diff_log *volatile cur_log;
static volatile sig_atomic_t try_active;
static volatile sig_atomic_t try_line;

void diff_try_enter(struct diff_log *log, int line)
{
	cur_log = log;
	try_line = line;
	try_active = 1;
}

void diff_try_leave(struct diff_log *log, int line)
{
	if (try_active) {
		try_active = 0;
		struct diff_entry *e = entry(log, DK_TRYEND, line,
					     "try block ended without a signal");
		if (e)
			commit(log);
	}
}

static void on_signal(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	struct diff_log *log = cur_log;
	int caught = try_active;
	int line = caught ? try_line
			  : (log->n > 0 ? log->e[log->n - 1].line : 0);
	struct diff_entry *e = entry(log, caught ? DK_SIGNAL : DK_FATAL, line,
				     caught ? "signal in try block"
					    : "signal outside a try block");
	if (e) {
		e->signo = si->si_signo;
		e->err = si->si_code;
		e->ptr = diff_addr(log, si->si_addr);
		e->raw = (uintptr_t)si->si_addr;
		e->val = sig;
		commit(log);
	}
	if (caught) {
		try_active = 0;
		siglongjmp(diff_try_env, 1);
	}
	_exit(DIFF_EXIT_FATAL);
}

/* ---------------------------------------------------------- one run */

static int child_timeout(void)
{
	const char *s = getenv("DIFF_TIMEOUT");
	int t = s ? atoi(s) : 0;
	return t > 0 ? t : 30;
}

static double now(void);

/* The processes of one side's run: their barrier, in memory they share. */
struct diff_barrier {
	atomic_int arrived;
	atomic_int generation;
};
static struct diff_barrier *proc_barrier;
static int proc_me, proc_n = 1;

int diff_me(void)
{
	return proc_me;
}

void diff_sync(struct diff_log *log, int line)
{
	if (proc_n < 2)
		return;
	struct diff_barrier *b = proc_barrier;
	int gen = atomic_load(&b->generation);
	if (atomic_fetch_add(&b->arrived, 1) + 1 == proc_n) {
		atomic_store(&b->arrived, 0);
		atomic_fetch_add(&b->generation, 1);
		return;
	}
	double deadline = now() + child_timeout();
	while (atomic_load(&b->generation) == gen) {
		if (now() > deadline) {
			diff_log_harness(log, line, "D_SYNC: another process never arrived");
			_exit(DIFF_EXIT_HARNESS);
		}
		usleep(100);
	}
}

static void run_child(diff_scenario fn, const struct mm_ops *o,
		      struct diff_log *log, const char *dir)
{
	cur_log = log;
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_signal;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, NULL) != 0 ||
	    sigaction(SIGBUS, &sa, NULL) != 0) {
		diff_log_harness(log, 0, "sigaction: %s", strerror(errno));
		_exit(DIFF_EXIT_HARNESS);
	}
	signal(SIGPIPE, SIG_IGN);
	alarm((unsigned)child_timeout());
	fn(o, log, dir);
	struct diff_entry *e = entry(log, DK_END, 0, "scenario returned");
	if (e)
		commit(log);
	exit(0); /* exit handlers run, as when main returns */
}

static int cmp_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Logs each regular file of dir (sorted), then removes dir and its files. */
static void log_dir(struct diff_log *log, const char *dir)
{
	DIR *d = opendir(dir);
	char *names[256];
	int n = 0;
	if (!d) {
		diff_log_harness(log, 0, "opendir: %s", strerror(errno));
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)) && n < 256) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		names[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, (size_t)n, sizeof *names, cmp_name);
	for (int i = 0; i < n; i++) {
		char path[PATH_MAX + 256], text[DIFF_TEXT];
		snprintf(path, sizeof path, "%s/%s", dir, names[i]);
		snprintf(text, sizeof text, "on disk: %s", names[i]);
		int fd = open(path, O_RDONLY);
		uint8_t *buf;
		size_t len;
		if (fd < 0 || read_all(fd, &buf, &len) != 0) {
			diff_log_bytes(log, DK_DISK, 0, text, -1, errno, "", 0);
		} else {
			diff_log_bytes(log, DK_DISK, 0, text, (long long)len, 0,
				       buf, len);
			free(buf);
		}
		if (fd >= 0) {
			/* A scenario may have made it append-only or
			 * immutable: clear that so it can be removed. */
			int flags = 0;
			ioctl(fd, FS_IOC_GETFLAGS, &flags);
			if (flags & (FS_APPEND_FL | FS_IMMUTABLE_FL)) {
				flags &= ~(FS_APPEND_FL | FS_IMMUTABLE_FL);
				ioctl(fd, FS_IOC_SETFLAGS, &flags);
			}
			close(fd);
		}
		unlink(path);
		free(names[i]);
	}
	if (rmdir(dir) != 0)
		diff_log_harness(log, 0, "rmdir %s: %s", dir, strerror(errno));
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* How child pid ended, into log. */
static void log_exit(struct diff_log *log, int status)
{
	struct diff_entry *e;
	if (WIFEXITED(status)) {
		e = entry(log, DK_EXIT, 0, "child exited");
		if (e) {
			e->val = WEXITSTATUS(status);
			commit(log);
		}
	} else {
		e = entry(log, DK_EXIT, 0, "child killed by a signal");
		if (e) {
			e->signo = WTERMSIG(status);
			e->val = -1;
			commit(log);
		}
	}
}

/* Runs fn with o in nproc processes, process i into logs[i] (already
 * mapped); the directory's files go to logs[0].  Returns 0, or -1 if the
 * run could not be made. */
static int run_side(diff_scenario fn, const struct mm_ops *o,
		    struct diff_log **logs, int nproc)
{
	const char *tmp = getenv("TMPDIR");
	char dir[PATH_MAX];
	snprintf(dir, sizeof dir, "%s/ummap-diff-XXXXXX",
		 tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(dir)) {
		fprintf(stderr, "diff: mkdtemp %s: %s\n", dir, strerror(errno));
		return -1;
	}
	struct diff_barrier *bar = mmap(NULL, sizeof *bar, PROT_READ | PROT_WRITE,
					MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (bar == MAP_FAILED) {
		fprintf(stderr, "diff: barrier: %s\n", strerror(errno));
		rmdir(dir);
		return -1;
	}
	fflush(NULL);
	pid_t pid[DIFF_MAX_PROCS];
	int status[DIFF_MAX_PROCS] = { 0 }, live = 0;
	for (int i = 0; i < nproc; i++) {
		pid[i] = fork();
		if (pid[i] < 0) {
			fprintf(stderr, "diff: fork: %s\n", strerror(errno));
			for (int k = 0; k < i; k++) {
				kill(pid[k], SIGKILL);
				waitpid(pid[k], NULL, 0);
			}
			munmap(bar, sizeof *bar);
			log_dir(logs[0], dir);
			return -1;
		}
		if (pid[i] == 0) {
			proc_me = i;
			proc_n = nproc;
			proc_barrier = bar;
			run_child(fn, o, logs[i], dir);
		}
		live++;
	}
	double deadline = now() + child_timeout() + 10;
	while (live > 0) {
		for (int i = 0; i < nproc; i++) {
			if (!pid[i])
				continue;
			pid_t r = waitpid(pid[i], &status[i], WNOHANG);
			if (r == pid[i] || (r < 0 && errno != EINTR)) {
				pid[i] = 0;
				live--;
			}
		}
		if (live && now() > deadline) {
			for (int i = 0; i < nproc; i++)
				if (pid[i]) {
					kill(pid[i], SIGKILL);
					waitpid(pid[i], &status[i], 0);
					pid[i] = 0;
					live--;
				}
		}
		if (live)
			usleep(2000);
	}
	for (int i = 0; i < nproc; i++)
		log_exit(logs[i], status[i]);
	log_dir(logs[0], dir);
	munmap(bar, sizeof *bar);
	return 0;
}

/* ------------------------------------------------------- comparison */

static const char *kind_name(int k)
{
	static const char *names[] = {
		[DK_INT] = "call", [DK_PTR] = "call", [DK_MEM] = "memory",
		[DK_WROTE] = "store", [DK_IO] = "io", [DK_VAL] = "value",
		[DK_NOTE] = "note", [DK_SIGNAL] = "SIGNAL",
		[DK_FATAL] = "FATAL SIGNAL", [DK_TRYEND] = "try",
		[DK_HARNESS] = "HARNESS ERROR", [DK_EXIT] = "exit",
		[DK_DISK] = "disk", [DK_END] = "end",
	};
	if (k > 0 && k < (int)(sizeof names / sizeof *names) && names[k])
		return names[k];
	return "?";
}

static const char *code_name(int signo, int code)
{
	if (signo == SIGSEGV) {
		switch (code) {
		case SEGV_MAPERR: return "SEGV_MAPERR";
		case SEGV_ACCERR: return "SEGV_ACCERR";
#ifdef SEGV_PKUERR
		case SEGV_PKUERR: return "SEGV_PKUERR";
#endif
		}
	} else if (signo == SIGBUS) {
		switch (code) {
		case BUS_ADRALN: return "BUS_ADRALN";
		case BUS_ADRERR: return "BUS_ADRERR";
		case BUS_OBJERR: return "BUS_OBJERR";
#ifdef BUS_MCEERR_AR
		case BUS_MCEERR_AR: return "BUS_MCEERR_AR";
		case BUS_MCEERR_AO: return "BUS_MCEERR_AO";
#endif
		}
	}
	switch (code) {
	case SI_USER: return "SI_USER";
	case SI_KERNEL: return "SI_KERNEL";
	case SI_QUEUE: return "SI_QUEUE";
	case SI_TKILL: return "SI_TKILL";
	}
	return "?";
}

static void fmt_ptr(char *buf, size_t n, const struct diff_entry *e)
{
	const struct diff_ptr *p = &e->ptr;
	switch (p->cls) {
	case DP_NULL: snprintf(buf, n, "NULL"); break;
	case DP_FAILED: snprintf(buf, n, "MAP_FAILED"); break;
	case DP_MAP:
		snprintf(buf, n, "m%d+0x%llx", p->idx, (unsigned long long)p->off);
		break;
	case DP_NEW: snprintf(buf, n, "new mapping m%d", p->idx); break;
	case DP_SAME: snprintf(buf, n, "old address, now m%d", p->idx); break;
	case DP_HINT: snprintf(buf, n, "the hint, now m%d", p->idx); break;
	case DP_ABS: snprintf(buf, n, "0x%llx", (unsigned long long)p->off); break;
	default:
		snprintf(buf, n, "unregistered address %#lx",
			 (unsigned long)e->raw);
		break;
	}
}

static const uint8_t *blob_of(const struct diff_log *log,
			      const struct diff_entry *e)
{
	return e->blob ? log->blob + e->blob - 1 : NULL;
}

static void fmt_bytes(char *buf, size_t n, const struct diff_log *log,
		      const struct diff_entry *e)
{
	const uint8_t *b = blob_of(log, e);
	int k = snprintf(buf, n, "%llu bytes, hash %016llx",
			 (unsigned long long)e->len,
			 (unsigned long long)e->hash);
	if (b && e->len <= 24 && k > 0 && (size_t)k < n) {
		k += snprintf(buf + k, n - (size_t)k, ":");
		for (uint64_t i = 0; i < e->len && (size_t)k < n - 4; i++)
			k += snprintf(buf + k, n - (size_t)k, " %02x", b[i]);
	}
}

static void describe(char *buf, size_t n, const struct diff_log *log,
		     const struct diff_entry *e)
{
	char pb[96], bb[160];
	switch (e->kind) {
	case DK_INT:
		if (e->val == -1)
			snprintf(buf, n, "returned -1, errno %s (%s)",
				 strerrorname_np(e->err) ? strerrorname_np(e->err) : "?",
				 strerror(e->err));
		else
			snprintf(buf, n, "returned %lld", e->val);
		break;
	case DK_PTR:
		fmt_ptr(pb, sizeof pb, e);
		if (e->ptr.cls == DP_FAILED)
			snprintf(buf, n, "returned MAP_FAILED, errno %s (%s)",
				 strerrorname_np(e->err) ? strerrorname_np(e->err) : "?",
				 strerror(e->err));
		else if (e->ptr.cls == DP_MAP && e->len)
			snprintf(buf, n, "returned %s%s (registered as m%d)", pb,
				 e->val ? ", the address asked for" : ", NOT the address asked for",
				 (int)e->len - 1);
		else
			snprintf(buf, n, "returned %s", pb);
		break;
	case DK_MEM:
		fmt_bytes(bb, sizeof bb, log, e);
		snprintf(buf, n, "read %s", bb);
		break;
	case DK_WROTE:
		fmt_ptr(pb, sizeof pb, e);
		snprintf(buf, n, "stored %llu bytes at %s",
			 (unsigned long long)e->len, pb);
		break;
	case DK_IO:
	case DK_DISK:
		fmt_bytes(bb, sizeof bb, log, e);
		if (e->val < 0)
			snprintf(buf, n, "returned %lld, errno %s (%s)", e->val,
				 strerrorname_np(e->err) ? strerrorname_np(e->err) : "?",
				 strerror(e->err));
		else
			snprintf(buf, n, "%s %lld, %s",
				 e->kind == DK_DISK ? "size" : "returned",
				 e->val, bb);
		break;
	case DK_VAL:
		snprintf(buf, n, "= %lld (%#llx)", e->val, (unsigned long long)e->val);
		break;
	case DK_SIGNAL:
	case DK_FATAL:
		fmt_ptr(pb, sizeof pb, e);
		snprintf(buf, n, "%s si_code %d (%s) si_addr %s",
			 strsignal(e->signo), e->err, code_name(e->signo, e->err), pb);
		break;
	case DK_EXIT:
		if (e->val >= 0)
			snprintf(buf, n, "exit code %lld%s", e->val,
				 e->val == DIFF_EXIT_FATAL ? " (fatal signal)" :
				 e->val == DIFF_EXIT_HARNESS ? " (harness error)" : "");
		else
			snprintf(buf, n, "killed by signal %d (%s)%s", e->signo,
				 strsignal(e->signo),
				 e->signo == SIGALRM || e->signo == SIGKILL
					 ? " - timed out?" : "");
		break;
	case DK_HARNESS:
		snprintf(buf, n, "harness error, errno %d", e->err);
		break;
	default:
		snprintf(buf, n, "-");
		break;
	}
}

static int same(const struct diff_log *la, const struct diff_entry *a,
		const struct diff_log *lb, const struct diff_entry *b)
{
	(void)la;
	(void)lb;
	if (a->kind != b->kind || a->line != b->line || strcmp(a->text, b->text))
		return 0;
	switch (a->kind) {
	case DK_INT:
	case DK_VAL:
		return a->val == b->val && a->err == b->err;
	case DK_PTR:
	case DK_WROTE:
		if (a->ptr.cls != b->ptr.cls || a->err != b->err ||
		    a->val != b->val || a->len != b->len || a->hash != b->hash)
			return 0;
		if (a->ptr.cls == DP_MAP || a->ptr.cls == DP_ABS)
			return a->ptr.idx == b->ptr.idx && a->ptr.off == b->ptr.off;
		return 1;
	case DK_MEM:
	case DK_IO:
	case DK_DISK:
		return a->val == b->val && a->err == b->err &&
		       a->len == b->len && a->hash == b->hash;
	case DK_SIGNAL:
	case DK_FATAL:
		if (a->signo != b->signo || a->err != b->err ||
		    a->ptr.cls != b->ptr.cls)
			return 0;
		if (a->ptr.cls == DP_MAP || a->ptr.cls == DP_ABS)
			return a->ptr.idx == b->ptr.idx && a->ptr.off == b->ptr.off;
		return 1;
	case DK_EXIT:
		return a->val == b->val && a->signo == b->signo;
	default:
		return 1;
	}
}

static void print_entry(FILE *f, const char *mark, int i,
			const struct diff_log *log, const struct diff_entry *e)
{
	char d[320];
	describe(d, sizeof d, log, e);
	fprintf(f, "%s #%-3d [%s] line %d: %s: %s\n", mark, i,
		kind_name(e->kind), e->line, e->text, d);
}

/* For two differing byte entries with blobs, shows where they differ. */
static void print_byte_diff(FILE *f, const struct diff_log *la,
			    const struct diff_entry *a,
			    const struct diff_log *lb,
			    const struct diff_entry *b)
{
	const uint8_t *x = blob_of(la, a), *y = blob_of(lb, b);
	if (!x || !y)
		return;
	uint64_t n = a->len < b->len ? a->len : b->len, first = UINT64_MAX,
		 count = 0;
	for (uint64_t i = 0; i < n; i++) {
		if (x[i] != y[i]) {
			if (first == UINT64_MAX)
				first = i;
			count++;
		}
	}
	if (first == UINT64_MAX) {
		fprintf(f, "    the first %llu bytes agree; lengths %llu vs %llu\n",
			(unsigned long long)n, (unsigned long long)a->len,
			(unsigned long long)b->len);
		return;
	}
	fprintf(f, "    %llu of %llu common bytes differ; first at offset %#llx "
		"(page %llu + %#llx)\n", (unsigned long long)count,
		(unsigned long long)n, (unsigned long long)first,
		(unsigned long long)(first / DIFF_PG),
		(unsigned long long)(first % DIFF_PG));
	uint64_t s = first >= 8 ? first - 8 : 0, e = s + 24 < n ? s + 24 : n;
	const uint8_t *rows[2] = { x, y };
	const char *who[2] = { la->side, lb->side };
	for (int r = 0; r < 2; r++) {
		fprintf(f, "    %-16s @%#llx:", who[r], (unsigned long long)s);
		for (uint64_t i = s; i < e; i++)
			fprintf(f, i == first ? " [%02x]" : " %02x", rows[r][i]);
		fprintf(f, "\n");
	}
}

static void print_log(FILE *f, const struct diff_log *log, int from, int to,
		      int mark)
{
	for (int i = from; i < to && i < log->n; i++)
		print_entry(f, i == mark ? ">>" : "  ", i, log, &log->e[i]);
}

static int compare(const char *name, const struct diff_log *a,
		   const struct diff_log *b, int quiet)
{
	int n = a->n > b->n ? a->n : b->n, first = -1, ndiff = 0;
	for (int i = 0; i < n; i++) {
		if (i >= a->n || i >= b->n ||
		    !same(a, &a->e[i], b, &b->e[i])) {
			if (first < 0)
				first = i;
			ndiff++;
		}
	}
	if (a->overflow || b->overflow) {
		if (!quiet)
			fprintf(stderr, "diff %s: log overflow (%s %d, %s %d)\n",
				name, a->side, a->overflow, b->side, b->overflow);
		return ndiff ? ndiff : 1;
	}
	if (first < 0)
		return 0;
	if (quiet)
		return ndiff;
	FILE *f = stderr;
	fprintf(f, "\n==== DIVERGENCE in %s at step #%d (%d of %d entries "
		"differ) ====\n", name, first, ndiff, n);
	const struct diff_log *ls[2] = { a, b };
	for (int s = 0; s < 2; s++) {
		const struct diff_log *l = ls[s];
		if (first < l->n) {
			char d[320];
			describe(d, sizeof d, l, &l->e[first]);
			fprintf(f, "  %-16s line %d %s [%s]: %s\n", l->side,
				l->e[first].line, l->e[first].text,
				kind_name(l->e[first].kind), d);
		} else {
			fprintf(f, "  %-16s <log ended after %d entries>\n",
				l->side, l->n);
		}
	}
	if (first < a->n && first < b->n)
		print_byte_diff(f, a, &a->e[first], b, &b->e[first]);
	for (int s = 0; s < 2; s++) {
		const struct diff_log *l = ls[s];
		fprintf(f, "  -- %s log (%d entries; >> marks the divergence):\n",
			l->side, l->n);
		int from = first > 12 ? first - 12 : 0;
		if (from > 0)
			fprintf(f, "     ... %d earlier entries\n", from);
		print_log(f, l, from, first + 12, first);
		if (first + 12 < l->n) {
			int tail = l->n - 8 > first + 12 ? l->n - 8 : first + 12;
			if (tail > first + 12)
				fprintf(f, "     ... %d entries\n", tail - first - 12);
			print_log(f, l, tail, l->n, first);
		}
	}
	fprintf(f, "==== end of %s ====\n\n", name);
	return ndiff;
}

static struct diff_log *new_log(const char *side)
{
	/* The kernel's mmap, always: this memory is the harness's own. */
	struct diff_log *log = mmap(NULL, sizeof *log, PROT_READ | PROT_WRITE,
				    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (log == MAP_FAILED)
		return NULL;
	uint8_t *blob = mmap(NULL, DIFF_BLOB_BYTES, PROT_READ | PROT_WRITE,
			     MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (blob == MAP_FAILED) {
		munmap(log, sizeof *log);
		return NULL;
	}
	log->side = side;
	log->blob = blob;
	return log;
}

static void free_log(struct diff_log *log)
{
	if (!log)
		return;
	munmap(log->blob, DIFF_BLOB_BYTES);
	munmap(log, sizeof *log);
}

/* The kernel side's log must show a sound scenario: no crash outside its
 * own mappings, no death by a signal. */
static int check_reference(const char *name, struct diff_log *l, int quiet)
{
	for (int i = 0; i < l->n; i++) {
		const struct diff_entry *e = &l->e[i];
		if ((e->kind == DK_FATAL && e->ptr.cls != DP_MAP) ||
		    (e->kind == DK_EXIT && e->val < 0)) {
			l->harness_errors++;
			if (!quiet)
				fprintf(stderr, "diff %s: the scenario itself "
					"failed on the %s side (entry #%d)\n",
					name, l->side, i);
		}
	}
	if (l->harness_errors && !quiet) {
		fprintf(stderr, "diff %s: the harness failed on the %s side:\n",
			name, l->side);
		print_log(stderr, l, 0, l->n, -1);
	}
	return l->harness_errors;
}

int diff_run_ops_procs(const char *name, diff_scenario fn, int nproc,
		       const struct mm_ops *a, const struct mm_ops *b, int quiet)
{
	struct diff_log *la[DIFF_MAX_PROCS] = { 0 }, *lb[DIFF_MAX_PROCS] = { 0 };
	int ret = -1;
	if (nproc < 1 || nproc > DIFF_MAX_PROCS) {
		fprintf(stderr, "diff %s: %d processes (1 to %d)\n", name, nproc,
			DIFF_MAX_PROCS);
		return -1;
	}
	for (int i = 0; i < nproc; i++) {
		la[i] = new_log(a->name);
		lb[i] = new_log(b->name);
		if (!la[i] || !lb[i]) {
			fprintf(stderr, "diff %s: cannot map the logs: %s\n",
				name, strerror(errno));
			goto out;
		}
	}
	if (run_side(fn, a, la, nproc) != 0 || run_side(fn, b, lb, nproc) != 0)
		goto out;
	const char *v = getenv("DIFF_VERBOSE");
	for (int i = 0; v && *v && *v != '0' && i < nproc; i++) {
		fprintf(stderr, "---- %s: process %d, %s log\n", name, i, la[i]->side);
		print_log(stderr, la[i], 0, la[i]->n, -1);
		fprintf(stderr, "---- %s: process %d, %s log\n", name, i, lb[i]->side);
		print_log(stderr, lb[i], 0, lb[i]->n, -1);
	}
	int bad = 0;
	for (int i = 0; i < nproc; i++)
		bad += check_reference(name, la[i], quiet);
	if (bad)
		goto out;
	ret = 0;
	for (int i = 0; i < nproc; i++) {
		char who[256];
		if (nproc > 1)
			snprintf(who, sizeof who, "%s (process %d)", name, i);
		else
			snprintf(who, sizeof who, "%s", name);
		ret += compare(who, la[i], lb[i], quiet);
	}
out:
	for (int i = 0; i < nproc; i++) {
		free_log(la[i]);
		free_log(lb[i]);
	}
	return ret;
}

int diff_run_ops(const char *name, diff_scenario fn, const struct mm_ops *a,
		 const struct mm_ops *b, int quiet)
{
	return diff_run_ops_procs(name, fn, 1, a, b, quiet);
}

void diff_run_procs(const char *name, diff_scenario fn, int nproc)
{
	int r = diff_run_ops_procs(name, fn, nproc, &kernel_ops, &ummap_ops, 0);
	if (r < 0)
		cr_assert_fail("%s: the harness could not run the scenario", name);
	else if (r > 0)
		cr_assert_fail("%s: %s and %s diverge (%d entries differ; see above)",
			name, kernel_ops.name, ummap_ops.name, r);
}

void diff_run(const char *name, diff_scenario fn)
{
	diff_run_procs(name, fn, 1);
}
