/*
 * diff.h - the differential test harness: the kernel is the oracle.
 *
 * A scenario is a function that maps, touches, syncs, protects, advises,
 * remaps and truncates through a table of operations (struct mm_ops) and
 * logs everything it observes.  diff_run() runs it twice, each time in a
 * fresh forked child with a fresh temporary directory: once with the
 * kernel's calls (kernel_ops) and once with ummap's (ummap_ops).  The two
 * logs are then compared entry by entry; the first entry that differs is
 * printed with both sides' values and the Criterion test fails.
 *
 * The log lives in memory shared with the parent (MAP_SHARED|MAP_ANONYMOUS,
 * made with the kernel's mmap before the fork), so it survives the child's
 * death.  It records, in order:
 *  - every call's return value and, when it failed, its errno (D_CALL,
 *    D_MMAP, D_MREMAP, D_OPEN, D_PREAD, ...);
 *  - the bytes read from memory or from a file (D_READ, D_PREAD, D_FILE):
 *    length and hash, plus the bytes themselves (kept in a blob area so a
 *    divergence can show the first differing offset);
 *  - every SIGSEGV/SIGBUS with si_signo, si_code and si_addr.  Addresses
 *    differ between the runs, so an address is logged as "mapping k +
 *    offset", k being the index of a mapping registered in the log (each
 *    successful D_MMAP/D_MREMAP registers one);
 *  - how the child ended (exit code, or the signal that killed it), logged
 *    by the parent, and then the size and bytes of every file in the
 *    scenario's directory, read by the parent after the child is gone.
 *
 * Signals: a SIGSEGV or SIGBUS outside DIFF_TRY is logged and ends the
 * child with _exit(DIFF_EXIT_FATAL) (no exit handlers run).  Inside
 *
 *	DIFF_TRY(log) { ...code that may fault... }
 *
 * the signal is logged and control jumps back to the end of the block, so
 * the scenario goes on; a block that ends without a signal logs that too.
 * Do not leave a DIFF_TRY block with break, goto or return, do not nest
 * them, and make locals modified inside one volatile if used after it.
 *
 * A scenario that returns makes the child exit(0), so exit handlers (and
 * with them ummap's writeback at exit) run, as when main returns.
 *
 * Building against the kernel only (-DDIFF_KERNEL_ONLY) points ummap_ops at
 * the kernel's calls: every scenario must then report equality, which is
 * how the harness itself is checked.
 *
 * Environment: DIFF_VERBOSE=1 prints both logs of every run; DIFF_TIMEOUT
 * sets the seconds a child may run (default 30).
 */
#ifndef DIFF_H
#define DIFF_H

#include <errno.h>
#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "compat.h"

/* The seven calls under test. */
struct mm_ops {
	const char *name;
	void *(*mmap)(void *addr, size_t len, int prot, int flags, int fd,
		      off_t off);
	int (*munmap)(void *addr, size_t len);
	int (*msync)(void *addr, size_t len, int flags);
	int (*mprotect)(void *addr, size_t len, int prot);
	int (*madvise)(void *addr, size_t len, int advice);
	void *(*mremap)(void *old, size_t old_size, size_t new_size,
			int flags, ... /* void *new_address */);
	int (*ftruncate)(int fd, off_t len);
};

extern const struct mm_ops kernel_ops;
extern const struct mm_ops ummap_ops;

#define DIFF_PG 4096UL

/* How an address is logged. */
enum diff_ptr_class {
	DP_NULL = 0,	/* NULL */
	DP_FAILED,	/* MAP_FAILED */
	DP_MAP,		/* mapping idx + off (off may pass the mapping's end) */
	DP_NEW,		/* a new mapping (placement left to the system) */
	DP_SAME,	/* mremap: the old address */
	DP_HINT,	/* mmap: the hint given without MAP_FIXED */
	DP_ABS,		/* a small absolute value (below 64 KiB) */
	DP_UNREG,	/* far from every registered mapping: not compared */
};

struct diff_ptr {
	int cls;
	int idx;
	long long off;
};

enum diff_kind {
	DK_INT = 1,	/* a call returning an integer: val, err if -1 */
	DK_PTR,		/* a call returning a pointer: ptr, err if failed */
	DK_MEM,		/* bytes read from memory: len, hash, blob */
	DK_WROTE,	/* bytes written to memory: len, hash */
	DK_IO,		/* pread/read/recv: val (ret), err, bytes got */
	DK_VAL,		/* a value the scenario computed */
	DK_NOTE,	/* a label */
	DK_SIGNAL,	/* a signal caught inside DIFF_TRY */
	DK_FATAL,	/* a signal outside DIFF_TRY: the child ends */
	DK_TRYEND,	/* a DIFF_TRY block ended without a signal */
	DK_HARNESS,	/* the harness itself failed (never expected) */
	DK_EXIT,	/* parent: how the child ended */
	DK_DISK,	/* parent: one file of the directory: size, bytes */
	DK_END,		/* the scenario returned */
};

#define DIFF_TEXT 120

struct diff_entry {
	int kind;
	int line;
	char text[DIFF_TEXT];
	long long val;
	int err;	/* errno; for signals si_code */
	int signo;
	struct diff_ptr ptr;
	uint64_t len;
	uint64_t hash;
	uint64_t blob; /* offset + 1 of the bytes in the blob area, 0 = none */
	uintptr_t raw; /* the raw address, printed but never compared */
};

#define DIFF_MAX_ENTRIES 4096
#define DIFF_MAX_MAPS 512
#define DIFF_BLOB_BYTES (64UL << 20)

struct diff_log {
	const char *side;
	int n;
	int overflow;
	int harness_errors;
	int nmaps;
	struct {
		uintptr_t base;
		size_t len;
	} maps[DIFF_MAX_MAPS];
	uint64_t blob_used;
	uint8_t *blob;
	struct diff_entry e[DIFF_MAX_ENTRIES];
};

typedef void (*diff_scenario)(const struct mm_ops *o, struct diff_log *log,
			      const char *dir);

/*
 * Runs fn with the kernel and with ummap and fails the Criterion test on a
 * divergence, or if the kernel run itself hit a harness error.
 */
void diff_run(const char *name, diff_scenario fn);

/*
 * The same with nproc processes per side, all forked before either uses the
 * calls under test (so each starts ummap on its own, as unrelated processes
 * do), sharing the scenario's directory, each with a log of its own: the
 * logs of process i are compared between the sides, and the files once all
 * have ended.  In the scenario, diff_me() is the process's index and
 * D_SYNC(log) waits until every process has reached its own D_SYNC (a
 * barrier; a process that never arrives is a harness failure).
 */
void diff_run_procs(const char *name, diff_scenario fn, int nproc);
int diff_me(void);
void diff_sync(struct diff_log *log, int line);
#define D_SYNC(log) diff_sync((log), __LINE__)

/*
 * Runs fn with a and b; returns the number of differing entries (0 = the
 * same), or -1 if the harness itself failed.  Prints the divergence unless
 * quiet.  Does not touch Criterion's state: diff_run and the self-test use it.
 */
int diff_run_ops(const char *name, diff_scenario fn, const struct mm_ops *a,
		 const struct mm_ops *b, int quiet);
int diff_run_ops_procs(const char *name, diff_scenario fn, int nproc,
		       const struct mm_ops *a, const struct mm_ops *b, int quiet);

/* Scenario declaration: DIFF_TEST(suite, name) { ...body using o, log, dir... } */
#define DIFF_TEST(suite, name)                                               \
	static void suite##__##name(const struct mm_ops *o,                  \
				    struct diff_log *log, const char *dir);  \
	Test(suite, name, .timeout = 180)                                    \
	{                                                                    \
		diff_run(#suite "::" #name, suite##__##name);                \
	}                                                                    \
	static void suite##__##name(const struct mm_ops *o,                  \
				    struct diff_log *log, const char *dir)

/* A scenario of nproc processes: DIFF_TEST_PROCS(suite, name, nproc) { ... } */
#define DIFF_TEST_PROCS(suite, name, nproc)                                  \
	static void suite##__##name(const struct mm_ops *o,                  \
				    struct diff_log *log, const char *dir);  \
	Test(suite, name, .timeout = 180)                                    \
	{                                                                    \
		diff_run_procs(#suite "::" #name, suite##__##name, (nproc)); \
	}                                                                    \
	static void suite##__##name(const struct mm_ops *o,                  \
				    struct diff_log *log, const char *dir)

#define DIFF_MAX_PROCS 8

/* ---- logging, called through the D_* macros below ---- */
void diff_log_int(struct diff_log *log, int line, const char *text,
		  long long v, int err);
void diff_log_ptr(struct diff_log *log, int line, const char *text, void *p,
		  int err);
void diff_log_val(struct diff_log *log, int line, const char *text,
		  long long v);
void diff_log_note(struct diff_log *log, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void diff_log_harness(struct diff_log *log, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Logs len bytes at buf (already copied to ordinary memory). */
void diff_log_bytes(struct diff_log *log, int kind, int line,
		    const char *text, long long ret, int err,
		    const void *buf, size_t len);

/* Registers [p, p+len) as the next mapping index; returns the index. */
int diff_register(struct diff_log *log, const void *p, size_t len);
/* Expresses p relative to the registered mappings. */
struct diff_ptr diff_addr(const struct diff_log *log, const void *p);

/* Logged mmap: registers a successful result.  See D_MMAP. */
void *diff_mmap(struct diff_log *log, int line, const char *text,
		const struct mm_ops *o, void *addr, size_t len, int prot,
		int flags, int fd, off_t off);
/* Logged mremap (new_addr used only with MREMAP_FIXED). */
void *diff_mremap(struct diff_log *log, int line, const char *text,
		  const struct mm_ops *o, void *old, size_t old_size,
		  size_t new_size, int flags, void *new_addr);

/* Memory access, byte by byte through volatile pointers, then logged. */
void diff_read(struct diff_log *log, int line, const char *text,
	       const void *p, size_t len);
void diff_write(struct diff_log *log, int line, const char *text, void *p,
		const void *src, size_t len);
void diff_fill(struct diff_log *log, int line, const char *text, void *p,
	       int c, size_t len);
void diff_write_pattern(struct diff_log *log, int line, const char *text,
			void *p, size_t len, unsigned seed, uint64_t base);

/* File helpers.  Paths are dir/name. */
const char *diff_path(const char *dir, const char *name); /* static buffer */
/* Creates dir/name with size bytes of diff_pat(seed, offset); returns an
 * O_RDWR descriptor (logs a harness error and returns -1 on failure). */
int diff_mkfile(struct diff_log *log, const char *dir, const char *name,
		size_t size, unsigned seed);
/* open(2) logged as success or errno (descriptor numbers differ between
 * the runs, so they are not logged). */
int diff_open(struct diff_log *log, int line, const char *text,
	      const char *dir, const char *name, int flags);
void diff_pread(struct diff_log *log, int line, const char *text, int fd,
		off_t off, size_t len);
void diff_pwrite(struct diff_log *log, int line, const char *text, int fd,
		 off_t off, const void *src, size_t len);
/* Logs the size and all bytes of the file open at fd (via fstat, pread). */
void diff_file(struct diff_log *log, int line, const char *text, int fd);

/* The four kinds of mapping most scenarios run over. */
enum diff_map_kind {
	DIFF_FILE_SHARED,
	DIFF_FILE_PRIVATE,
	DIFF_ANON_PRIVATE,
	DIFF_ANON_SHARED,
	DIFF_NKINDS,
};
extern const char *const diff_kind_names[DIFF_NKINDS];
/* Maps len bytes of the given kind (fd for the file kinds, offset 0) with
 * prot and flags | the kind's flags; logged and registered like D_MMAP. */
char *diff_map_kind(struct diff_log *log, int line, const struct mm_ops *o,
		    int kind, int fd, size_t len, int prot, int flags);
#define D_MAP_KIND(log, o, kind, fd, len, prot, flags)                       \
	diff_map_kind((log), __LINE__, (o), (kind), (fd), (len), (prot), (flags))

/* The byte at offset off of pattern seed: never 0, differs page to page. */
static inline uint8_t diff_pat(unsigned seed, uint64_t off)
{
	uint64_t x = off * 0x9E3779B97F4A7C15ull +
		     (uint64_t)(seed + 1) * 0xD6E8FEB86659FD93ull;
	x ^= x >> 29;
	x *= 0xBF58476D1CE4E5B9ull;
	x ^= x >> 32;
	return (uint8_t)(1 + x % 255);
}

/* ---- DIFF_TRY ---- */
extern sigjmp_buf diff_try_env;
void diff_try_enter(struct diff_log *log, int line);
void diff_try_leave(struct diff_log *log, int line);

#define DIFF_TRY(log)                                                        \
	for (int diff_once_ = (diff_try_enter((log), __LINE__), 1);          \
	     diff_once_; diff_once_ = 0, diff_try_leave((log), __LINE__))    \
		if (sigsetjmp(diff_try_env, 1) == 0)

/* ---- the scenario-facing macros ---- */

/* Any call: pointer results are logged relative to the registered
 * mappings, integer results as values; errno when the call failed. */
#define D_CALL(log, expr)                                                    \
	__extension__({                                                      \
		errno = 0;                                                   \
		__typeof__(expr) d_r_ = (expr);                              \
		int d_e_ = errno;                                            \
		_Generic(d_r_, void *: diff_call_ptr_, char *: diff_call_ptr_, \
			 unsigned char *: diff_call_ptr_,                    \
			 default: diff_call_int_)((log), __LINE__, #expr,    \
						  d_r_, d_e_);               \
		d_r_;                                                        \
	})

static inline void diff_call_ptr_(struct diff_log *log, int line,
				  const char *text, const void *p, int err)
{
	diff_log_ptr(log, line, text, (void *)p, err);
}
static inline void diff_call_int_(struct diff_log *log, int line,
				  const char *text, long long v, int err)
{
	diff_log_int(log, line, text, v, err);
}

/* p = D_MMAP(log, o, addr, len, prot, flags, fd, off): a char *. */
#define D_MMAP(log, o, addr, len, prot, flags, fd, off)                      \
	((char *)diff_mmap((log), __LINE__,                                  \
			   "mmap(" #addr ", " #len ", " #prot ", " #flags    \
			   ", " #fd ", " #off ")",                           \
			   (o), (addr), (len), (prot), (flags), (fd), (off)))
#define D_MREMAP(log, o, old, osz, nsz, flags)                               \
	((char *)diff_mremap((log), __LINE__,                                \
			     "mremap(" #old ", " #osz ", " #nsz ", " #flags ")", \
			     (o), (old), (osz), (nsz), (flags), NULL))
#define D_MREMAP_TO(log, o, old, osz, nsz, flags, newp)                      \
	((char *)diff_mremap((log), __LINE__,                                \
			     "mremap(" #old ", " #osz ", " #nsz ", " #flags   \
			     ", " #newp ")",                                 \
			     (o), (old), (osz), (nsz), (flags), (newp)))

#define D_READ(log, p, len) diff_read((log), __LINE__, "read " #p ", " #len, (p), (len))
#define D_WRITE(log, p, src, len)                                            \
	diff_write((log), __LINE__, "write " #p " <- " #src ", " #len, (p), (src), (len))
#define D_FILL(log, p, c, len)                                               \
	diff_fill((log), __LINE__, "fill " #p ", " #c ", " #len, (p), (c), (len))
#define D_PATTERN(log, p, len, seed)                                         \
	diff_write_pattern((log), __LINE__, "pattern " #p ", " #len ", " #seed, \
			   (p), (len), (seed), 0)
#define D_PEEK(log, p) D_READ(log, p, 1)
/* One access that may fault, inside its own DIFF_TRY. */
#define T_READ(log, p, len) DIFF_TRY(log) D_READ(log, p, len)
#define T_PEEK(log, p) DIFF_TRY(log) D_PEEK(log, p)
#define T_POKE(log, p, c) DIFF_TRY(log) D_POKE(log, p, c)
#define T_FILL(log, p, c, len) DIFF_TRY(log) D_FILL(log, p, c, len)
#define T_PATTERN(log, p, len, seed) DIFF_TRY(log) D_PATTERN(log, p, len, seed)
#define D_POKE(log, p, c) D_FILL(log, p, c, 1)
#define D_OPEN(log, dir, name, flags)                                        \
	diff_open((log), __LINE__, "open " #name ", " #flags, (dir), (name), (flags))
#define D_PREAD(log, fd, off, len)                                           \
	diff_pread((log), __LINE__, "pread " #fd ", " #off ", " #len, (fd), (off), (len))
#define D_PWRITE(log, fd, off, src, len)                                     \
	diff_pwrite((log), __LINE__, "pwrite " #fd ", " #off ", " #src ", " #len, \
		    (fd), (off), (src), (len))
#define D_FILE(log, fd) diff_file((log), __LINE__, "file " #fd, (fd))
/* A call returning a descriptor: logged as success (0) or -1 and errno,
 * never the number (the runs open different descriptors of their own). */
#define D_FD(log, expr)                                                      \
	__extension__({                                                      \
		errno = 0;                                                   \
		int d_fd_ = (expr);                                          \
		diff_log_int((log), __LINE__, #expr, d_fd_ < 0 ? -1 : 0, errno); \
		d_fd_;                                                       \
	})
#define D_VAL(log, expr) diff_log_val((log), __LINE__, #expr, (long long)(expr))
#define D_NOTE(log, ...) diff_log_note((log), __LINE__, __VA_ARGS__)

#define DIFF_EXIT_FATAL 99   /* the child died of a SIGSEGV/SIGBUS */
#define DIFF_EXIT_HARNESS 98 /* the harness could not run the scenario */

#endif
