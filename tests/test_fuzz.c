/*
 * test_fuzz.c - seeded random differential fuzzer: the kernel's mmap family
 * against ummap's um_* calls.
 *
 * One sequence of operations is generated up front from a seed (FUZZ_SEED,
 * default from the clock, always printed) and run twice, each run in its
 * own forked child with its own temporary directory of three files of
 * identical seeded content: once with mmap/munmap/mprotect/msync/madvise/
 * mremap/ftruncate (the reference), once with um_mmap/.../um_ftruncate.
 * Each child appends what it observes to a log the parent created with the
 * kernel's mmap (MAP_SHARED|MAP_ANONYMOUS): return values and errno,
 * addresses normalised to "slot + offset", hashes of the bytes read, file
 * sizes and hashes, and SIGSEGV/SIGBUS records (signo, si_code, si_addr as
 * slot + offset) caught with SA_SIGINFO + sigsetjmp/siglongjmp so the run
 * goes on.  The parent compares the two logs as they grow and then the
 * files left on disk; at the first difference it prints the seed, the op
 * index and description, both sides' records for that op and the replay
 * command, and fails.
 *
 * Environment:
 *   FUZZ_SEED=n        the seed (decimal or 0x hex); default from the clock
 *   FUZZ_OPS=n         operations to generate (default 5000)
 *   FUZZ_NO=a,b,...    operation kinds not to generate (names as printed in
 *                      descriptions: map unmap punch mprotect msync madvise
 *                      mremap read write fread fwrite trunc fcheck scan);
 *                      changes
 *                      the sequence, so it is part of the replay command
 *   FUZZ_COHERENCE=msync|none
 *                      msync (default): read(2)/write(2)/pread checks of a
 *                      file are bracketed by msync(MS_SYNC) of the windows
 *                      that map it (and msync(MS_INVALIDATE) after a
 *                      write(2)), the POSIX way to make a file and its
 *                      mappings agree.  none: no bracketing, i.e. expect the
 *                      kernel's page-cache coherence from ummap.
 *                      In msync mode a read(2)/write(2) whose mapped buffer
 *                      maps the very file range it transfers (a file copied
 *                      onto itself) is skipped, as no msync can make that
 *                      comparable; FUZZ_ALIAS=1 keeps it.
 *   FUZZ_MURKY=0       do not write (nor read(2) into) bytes beyond EOF in
 *                      the last partial page of a shared file mapping, to
 *                      look past divergences in that murky area (below)
 *   FUZZ_DUMP=n        each side prints its windows, its shadow of what is
 *                      mapped where and the VMAs around them before op n
 *   FUZZ_STATS=1       print what the reference side saw, per record kind
 *   FUZZ_SKIP=i,j-k    those ops do nothing on both sides (to minimise a
 *                      failing sequence by hand or by script)
 *   FUZZ_STALL=s       a side that makes no progress for s seconds is
 *                      declared hung and killed (default 60)
 *   FUZZ_KEEP=1        keep the temporary directories even on success
 *   FUZZ_VERBOSE=1     print every op description of the run (to stderr)
 *   FUZZ_PLANT=n       self-test: the second side flips one byte of the
 *                      first write access at or after op n; the fuzzer must
 *                      then report a divergence
 *   FUZZ_PERTURB=0     (FUZZ_KERNEL_ONLY builds) do not perturb the second
 *                      side's address-space layout
 *   FUZZ_MULTI=0       do not generate multi-VMA moves even if the kernel
 *                      makes them (Linux 6.17+; probed at start, printed
 *                      when it does not): changes the sequence, so it is
 *                      part of the replay command
 *
 * Build switch -DFUZZ_KERNEL_ONLY: both sides use the kernel calls (the
 * library is not referenced at all), and the second side scatters
 * PROT_NONE "spacer" mappings between operations so that its layout differs
 * from the first side's, as ummap's own mappings make it differ.  Zero
 * divergences there shows the fuzzer itself only relies on behaviour that
 * does not depend on where the kernel places things.
 *
 * How addresses stay comparable.  The run owns at most NSLOT "windows"
 * (slots): page ranges it mapped, each fully mapped at all times.  Every
 * operation names a slot and offsets inside its window, never an absolute
 * address; MAP_FIXED / MREMAP_FIXED targets are always inside an owned
 * window.  Whenever pages of a window get unmapped (munmap, mremap moving or
 * shrinking), the windows are trimmed at once; leftover pieces go to free
 * slots or are unmapped, so no operation ever touches a hole that some
 * other mapping (ummap's own, a later mmap) could have filled since.  The
 * only holes touched are fresh ones, within the op that made them ("punch",
 * the "tailcut" mremap that grows back in place, the "over a hole" mremap
 * whose old range spans a hole it has just punched, then reads the hole and
 * makes an mprotect/msync/madvise span it, and the multi-VMA move whose
 * range has a gap).  Ops on an empty slot
 * use a fixed low address range known to be unmapped (the "probe"), so
 * their errno is compared too.  Whether mremap(MREMAP_MAYMOVE) moved is
 * layout-dependent and is not logged; growth without MAYMOVE is only done
 * where its outcome is layout-independent.  After every op each window is
 * checked with the kernel's msync(MS_ASYNC) (ENOMEM = a hole) and a hole
 * found is logged as "hole".  Whether adjacent private VMAs merge depends
 * on the layout (anon_vma borrowed from neighbours), so mremap -- whose
 * EFAULT depends on VMA boundaries -- is skipped (and logged as skipped) on
 * a window that may span several VMAs with private pages; see split_by().
 * Not so an equal-length MAYMOVE|FIXED move on a kernel that moves several
 * VMAs at once (6.17+): it moves VMA by VMA whatever their boundaries.  The
 * "multi-VMA move" op first makes its range span several VMAs (two
 * protections, another mapping inside, a gap in the middle or at the end, a
 * hole at the start: EFAULT), sometimes asks for another length (EFAULT,
 * compared only where the range surely spans several VMAs) or DONTUNMAP.
 *
 * The end of the run: every window is scanned page by page, then unmapped
 * (ummap must write back), then each file is hashed with pread; the parent
 * also compares the files left on disk.
 *
 * Writes beyond the end of file within its last partial page through a
 * shared mapping are a murky area (what the kernel does with those bytes
 * depends on the filesystem, writeback timing and version); they are kept,
 * logged as "murky" records, and the report points them out when they
 * precede a divergence.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef FUZZ_KERNEL_ONLY
#include <ummap.h>
#endif
#include "compat.h"

#define PG 4096UL
#define NSLOT 8
#define NFILE 3
#define MAXPG 16		/* pages per mapping at mmap */
#define FILEMAX 65536		/* initial file sizes: 0..FILEMAX */
#define PROBE_BASE ((uintptr_t)0x10000000UL)
#define PROBE_PAGES 64
#define MAXSEG 512
#define RECS_PER_OP 40
#define NSPACER 32

static uint64_t pgup(uint64_t x) { return (x + PG - 1) & ~(PG - 1); }

/* ------------------------------------------------------------------ */
/* Random numbers: splitmix64 seeding xoshiro256**. */

struct rng { uint64_t s[4]; };

static uint64_t splitmix(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void rng_seed(struct rng *r, uint64_t seed)
{
	for (int i = 0; i < 4; i++)
		r->s[i] = splitmix(&seed);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rnext(struct rng *r)
{
	uint64_t *s = r->s, res = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl(s[3], 45);
	return res;
}

/* Uniform-ish in [0, n); n > 0. */
static uint64_t rnd(struct rng *r, uint64_t n) { return n ? rnext(r) % n : 0; }
/* True with probability pct percent. */
static bool pct(struct rng *r, unsigned p) { return rnd(r, 100) < p; }

#define FNV0 0xcbf29ce484222325ULL
#define FNVP 0x100000001b3ULL

static uint64_t fnv(uint64_t h, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * FNVP;
	return h;
}

/* The byte a write op with seed `seed` puts at position i. */
static uint8_t data_byte(uint64_t seed, uint64_t i)
{
	uint64_t x = seed ^ ((i >> 3) * 0x9e3779b97f4a7c15ULL);
	return (uint8_t)(splitmix(&x) >> ((i & 7) * 8));
}

/* ------------------------------------------------------------------ */
/* Operations. */

enum kind {
	OP_MAP, OP_UNMAP, OP_PUNCH, OP_MPROTECT, OP_MSYNC, OP_MADVISE,
	OP_MREMAP, OP_READ, OP_WRITE, OP_FREAD, OP_FWRITE, OP_TRUNC,
	OP_FCHECK, OP_SCAN, OP__N
};
static const char *const kind_name[OP__N] = {
	"map", "unmap", "punch", "mprotect", "msync", "madvise", "mremap",
	"read", "write", "fread", "fwrite", "trunc", "fcheck", "scan",
};
static const unsigned kind_weight[OP__N] = {
	12, 5, 2, 7, 5, 8, 9, 14, 14, 4, 4, 4, 4, 7,
};

/* Mapping types of OP_MAP. */
enum { MT_FSH, MT_FPR, MT_APR, MT_ASH };
static const char *const mt_name[] = { "file-shared", "file-private",
				       "anon-private", "anon-shared" };

/* Placement of OP_MAP. */
enum { PL_ANY, PL_FIXED, PL_NOREPLACE, PL_HINT, PL_BAD };

/* Bad-argument variants of OP_MAP. */
enum {
	MB_LEN0, MB_OFF_UNALIGNED, MB_FD_MINUS1, MB_FD_CLOSED, MB_FD_WRONLY,
	MB_RO_SHARED_WRITE, MB_NO_TYPE, MB_VALIDATE_SYNC, MB_HUGE_LEN,
	MB_WRAP_LEN, MB_NEG_OFF, MB_FIXED_UNALIGNED, MB_DIR_FD,
	MB_ANON_OFF_UNALIGNED, MB_BAD_PROT, MB__N
};
static const char *const mb_name[MB__N] = {
	"len 0", "unaligned offset", "fd -1", "closed fd", "O_WRONLY fd",
	"O_RDONLY fd shared+PROT_WRITE", "no MAP_SHARED/PRIVATE",
	"MAP_SHARED_VALIDATE|MAP_SYNC", "huge length", "length wraps",
	"negative offset", "MAP_FIXED unaligned", "directory fd",
	"anon unaligned offset", "PROT_GROWSDOWN",
};

/* Range variants of unmap/mprotect/msync/madvise. */
enum { RV_WHOLE, RV_PART, RV_UNALIGNED, RV_LEN0, RV_ODDLEN };
static const char *const rv_name[] = { "whole", "part", "unaligned",
				       "len0", "oddlen" };

/* mremap variants. */
enum {
	MR_WHOLE_MAYMOVE, MR_SHRINK, MR_SUB, MR_FIXED, MR_TAILCUT,
	MR_DONTUNMAP, MR_DUP, MR_BAD, MR_MULTI, MR_HOLE, MR__N
};
static const char *const mr_name[MR__N] = {
	"whole MAYMOVE", "whole shrink", "sub-range", "MAYMOVE|FIXED",
	"tailcut+grow in place", "MAYMOVE|DONTUNMAP", "dup (old_size 0)", "bad",
	"multi-VMA move", "over a hole",
};
/* MR_MULTI: how the op makes the range span several VMAs before moving it
 * with MAYMOVE|FIXED (Linux 6.17+; gaps keep what the destination had). */
enum { MV_PROT, MV_MAP, MV_GAP_MID, MV_GAP_END, MV_GAP_START, MV__N };
static const char *const mv_name[MV__N] = {
	"two protections", "another mapping inside", "gap in the middle",
	"gap at the end", "hole at the start",
};
/* MR_HOLE: where the op punches a hole in the old range, and the new
 * length against the old one. */
enum { HP_MID, HP_END, HP_START, HP__N };
static const char *const hp_name[HP__N] = { "middle", "end", "start" };
enum { HL_SHRINK, HL_SAME, HL_GROW, HL__N };
static const char *const hl_name[HL__N] = { "shrink", "same length", "grow" };
enum { MRB_UNALIGNED, MRB_NEW0, MRB_FIXED_NO_MAYMOVE, MRB_BADFLAG,
       MRB_HUGE_OLD, MRB_DONTUNMAP_NO_MAYMOVE, MRB__N };
static const char *const mrb_name[MRB__N] = {
	"unaligned old", "new_size 0", "FIXED without MAYMOVE", "unknown flag",
	"huge old_size", "DONTUNMAP without MAYMOVE",
};

struct op {
	uint8_t kind, var, s, t, f, mt, fdm, sub;
	int32_t prot, flags, arg;
	uint64_t off, len, off2, len2, seed;
};

static const int prot_set[] = {
	PROT_NONE, PROT_READ, PROT_WRITE, PROT_READ | PROT_WRITE,
	PROT_READ | PROT_EXEC, PROT_READ | PROT_WRITE | PROT_EXEC,
};
static const unsigned prot_weight[] = { 8, 25, 5, 55, 4, 3 };

static const int adv_set[] = {
	MADV_DONTNEED, MADV_WILLNEED, MADV_RANDOM, MADV_SEQUENTIAL,
	MADV_NORMAL, MADV_REMOVE, MADV_COLD, MADV_PAGEOUT, MADV_FREE,
	MADV_POPULATE_READ, MADV_POPULATE_WRITE, 999,
};
static const char *const adv_name[] = {
	"DONTNEED", "WILLNEED", "RANDOM", "SEQUENTIAL", "NORMAL", "REMOVE",
	"COLD", "PAGEOUT", "FREE", "POPULATE_READ", "POPULATE_WRITE",
	"bad(999)",
};

static const int msync_set[] = {
	MS_SYNC, MS_ASYNC, MS_INVALIDATE, MS_SYNC | MS_INVALIDATE,
	MS_ASYNC | MS_INVALIDATE, 0, MS_SYNC | MS_ASYNC, 0x10,
};
static const char *const msync_name[] = {
	"MS_SYNC", "MS_ASYNC", "MS_INVALIDATE", "MS_SYNC|MS_INVALIDATE",
	"MS_ASYNC|MS_INVALIDATE", "0", "MS_SYNC|MS_ASYNC", "bad(0x10)",
};

static unsigned pick_w(struct rng *r, const unsigned *w, unsigned n)
{
	unsigned tot = 0;
	for (unsigned i = 0; i < n; i++)
		tot += w[i];
	unsigned x = (unsigned)rnd(r, tot);
	for (unsigned i = 0; i < n; i++) {
		if (x < w[i])
			return i;
		x -= w[i];
	}
	return n - 1;
}

static const char *prot_str(int p, char *buf, size_t n)
{
	if (p == PROT_NONE)
		snprintf(buf, n, "NONE");
	else
		snprintf(buf, n, "%s%s%s%s", p & PROT_READ ? "R" : "",
			 p & PROT_WRITE ? "W" : "", p & PROT_EXEC ? "X" : "",
			 p & ~(PROT_READ | PROT_WRITE | PROT_EXEC) ? "+bad" : "");
	return buf;
}

static unsigned idx_of(const int *set, unsigned n, int v)
{
	for (unsigned i = 0; i < n; i++)
		if (set[i] == v)
			return i;
	return 0;
}

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

/* A readable description of op i. */
static void describe(const struct op *o, char *buf, size_t n)
{
	char pb[16];
	int k = 0;
	if (o->kind >= OP__N) {
		snprintf(buf, n, "(skipped by FUZZ_SKIP)");
		return;
	}
#define ADD(...) do { if ((size_t)k < n) k += snprintf(buf + k, n - (size_t)k, __VA_ARGS__); } while (0)
	ADD("%s ", kind_name[o->kind]);
	switch (o->kind) {
	case OP_MAP:
		ADD("slot %u: %s", o->s, mt_name[o->mt]);
		if (o->mt <= MT_FPR)
			ADD(" file %u%s off %" PRIu64 "p", o->f,
			    o->fdm ? " (O_RDONLY fd)" : "", o->off);
		ADD(" len %" PRIu64 " prot %s", o->len,
		    prot_str(o->prot, pb, sizeof pb));
		if (o->sub & 0x80)
			ADD(" MAP_SHARED_VALIDATE");
		if (o->flags & MAP_POPULATE)
			ADD(" MAP_POPULATE");
		if (o->flags & MAP_NORESERVE)
			ADD(" MAP_NORESERVE");
		if (o->var == PL_FIXED)
			ADD(" MAP_FIXED over slot %u +%" PRIu64 "p", o->t, o->off2);
		else if (o->var == PL_NOREPLACE)
			ADD(" MAP_FIXED_NOREPLACE over slot %u +%" PRIu64 "p", o->t, o->off2);
		else if (o->var == PL_HINT)
			ADD(" hint slot %u +%" PRIu64 "p", o->t, o->off2);
		else if (o->var == PL_BAD)
			ADD(" BAD: %s (slot %u +%" PRIu64 "p)", mb_name[o->sub & 0x7f], o->t, o->off2);
		break;
	case OP_UNMAP:
	case OP_MPROTECT:
	case OP_MSYNC:
	case OP_MADVISE:
		ADD("slot %u %s", o->s, rv_name[o->var]);
		if (o->var != RV_WHOLE)
			ADD(" +%" PRIu64 "p len %" PRIu64 "p", o->off, o->len);
		if (o->kind == OP_MPROTECT)
			ADD(" prot %s", prot_str(o->prot, pb, sizeof pb));
		if (o->kind == OP_MSYNC)
			ADD(" %s", msync_name[idx_of(msync_set, NELEM(msync_set), o->arg)]);
		if (o->kind == OP_MADVISE)
			ADD(" MADV_%s", adv_name[idx_of(adv_set, NELEM(adv_set), o->arg)]);
		break;
	case OP_PUNCH:
		ADD("slot %u +%" PRIu64 "p len %" PRIu64 "p, then over the whole window: ",
		    o->s, o->off, o->len);
		if (o->sub == 0)
			ADD("mprotect %s", prot_str(o->prot, pb, sizeof pb));
		else if (o->sub == 1)
			ADD("msync %s", msync_name[idx_of(msync_set, NELEM(msync_set), o->arg)]);
		else
			ADD("madvise MADV_%s", adv_name[idx_of(adv_set, NELEM(adv_set), o->arg)]);
		break;
	case OP_MREMAP:
		ADD("slot %u %s", o->s, mr_name[o->var]);
		if (o->var == MR_BAD)
			ADD(" (%s)", mrb_name[o->sub]);
		if (o->var == MR_MULTI)
			ADD(" (%s%s%s, prot %s, %s)", mv_name[o->sub],
			    o->flags & MREMAP_DONTUNMAP ? ", DONTUNMAP" : "",
			    o->arg ? ", lengths differ" : "", prot_str(o->prot, pb, sizeof pb),
			    mt_name[o->mt]);
		if (o->var == MR_HOLE)
			ADD(" (hole at the %s, %s%s%s)", hp_name[o->sub], hl_name[o->arg],
			    o->flags ? ", MAYMOVE" : "", o->prot == PROT_NONE ? ", PROT_NONE neighbour" : "");
		ADD(" off %" PRIu64 "p len %" PRIu64 "p new %" PRIu64 "p", o->off,
		    o->len, o->len2);
		if (o->var == MR_SUB && o->flags)
			ADD(" MAYMOVE");
		if (o->var == MR_FIXED || o->var == MR_MULTI)
			ADD(" to slot %u +%" PRIu64 "p", o->t, o->off2);
		if (o->var == MR_DUP)
			ADD(" into slot %u", o->t);
		break;
	case OP_READ:
	case OP_WRITE:
		ADD("slot %u +%" PRIu64 " len %" PRIu64, o->s, o->off, o->len);
		break;
	case OP_FREAD:
	case OP_FWRITE:
		ADD("file %u%s at %" PRIu64 " %s slot %u +%" PRIu64 " len %" PRIu64,
		    o->f, o->fdm ? (o->kind == OP_FREAD ? " (O_WRONLY fd)" : " (O_RDONLY fd)") : "",
		    o->off2, o->kind == OP_FREAD ? "into" : "from", o->s, o->off, o->len);
		break;
	case OP_TRUNC:
		ADD("file %u to %" PRIu64 "%s", o->f, o->len,
		    o->var == 1 ? " (O_RDONLY fd)" : o->var == 2 ? " (length -1)" : "");
		break;
	case OP_FCHECK:
		ADD("file %u", o->f);
		break;
	case OP_SCAN:
		ADD("slot %u: read every page", o->s);
		break;
	}
#undef ADD
}

/* ------------------------------------------------------------------ */
/* The generator: depends on the seed only.  A rough guess of which slots
 * are mapped (assuming maps succeed) steers ops towards mapped slots; the
 * executor clamps everything to the real windows. */

static uint64_t pages_in(struct rng *r, uint64_t g)
{
	return g ? rnd(r, g) : rnd(r, MAXPG);
}

static int pick_used(struct rng *r, const uint64_t *g)
{
	int c[NSLOT], n = 0;
	for (int i = 0; i < NSLOT; i++)
		if (g[i])
			c[n++] = i;
	if (!n || pct(r, 6))
		return (int)rnd(r, NSLOT);
	return c[rnd(r, (uint64_t)n)];
}

static int pick_free(struct rng *r, const uint64_t *g)
{
	int c[NSLOT], n = 0;
	for (int i = 0; i < NSLOT; i++)
		if (!g[i])
			c[n++] = i;
	if (!n || pct(r, 25))
		return (int)rnd(r, NSLOT);
	return c[rnd(r, (uint64_t)n)];
}

static int pick_prot(struct rng *r)
{
	return prot_set[pick_w(r, prot_weight, NELEM(prot_weight))];
}

static void gen_range(struct rng *r, struct op *o, const uint64_t *g, bool oddlen)
{
	uint64_t gp = g[o->s] ? g[o->s] : MAXPG;
	unsigned x = (unsigned)rnd(r, 100);
	o->var = x < 35 ? RV_WHOLE : x < 90 ? RV_PART : x < 94 ? RV_UNALIGNED :
		 x < 97 || !oddlen ? RV_LEN0 : RV_ODDLEN;
	o->off = rnd(r, gp);
	o->len = 1 + rnd(r, gp - o->off);
}

/* The variant-specific fields of an mremap op. */
static void gen_mremap_var(struct rng *r, struct op *o)
{
	if (o->var == MR_BAD)
		o->sub = (uint8_t)rnd(r, MRB__N);
	if (o->var == MR_MULTI || o->var == MR_HOLE) { /* ranges of a few pages */
		o->off = rnd(r, 3);
		o->len = 2 + rnd(r, MAXPG);
		o->off2 = rnd(r, 3);
	}
	if (o->var == MR_MULTI) {
		o->sub = (uint8_t)rnd(r, MV__N);
		o->flags = pct(r, 25) ? MREMAP_DONTUNMAP : 0;
		o->arg = pct(r, 15);
		o->prot = pick_prot(r);
		o->mt = (uint8_t)rnd(r, 4);
	}
	if (o->var == MR_HOLE) {
		o->sub = (uint8_t)rnd(r, HP__N);
		o->arg = (int32_t)rnd(r, HL__N);
		o->prot = pct(r, 30) ? PROT_NONE : PROT_READ | PROT_WRITE;
	}
}

/* multi: the kernel moves several VMAs in one mremap (MR_MULTI is made). */
static void gen_ops(uint64_t seed, size_t nops, struct op *ops, unsigned disabled, bool multi)
{
	struct rng R, *r = &R;
	uint64_t g[NSLOT] = { 0 };
	unsigned w[OP__N];

	rng_seed(r, seed);
	for (int k = 0; k < OP__N; k++)
		w[k] = disabled & (1u << k) ? 0 : kind_weight[k];
	for (size_t i = 0; i < nops; i++) {
		struct op *o = &ops[i];
		memset(o, 0, sizeof *o);
		o->kind = (uint8_t)pick_w(r, w, OP__N);
		o->seed = rnext(r);
		o->f = (uint8_t)rnd(r, NFILE);
		switch (o->kind) {
		case OP_MAP: {
			unsigned x = (unsigned)rnd(r, 100);
			o->s = (uint8_t)pick_free(r, g);
			o->t = (uint8_t)pick_used(r, g);
			o->mt = (uint8_t)(x < 40 ? MT_FSH : x < 65 ? MT_FPR : x < 85 ? MT_APR : MT_ASH);
			o->fdm = o->mt <= MT_FPR && pct(r, 15);
			o->prot = pick_prot(r);
			o->off = o->mt <= MT_FPR ? rnd(r, 20) : 0;
			uint64_t np = 1 + rnd(r, MAXPG);
			o->len = np * PG;
			if (pct(r, 20))
				o->len -= 1 + rnd(r, PG - 1);
			o->off2 = pages_in(r, g[o->t]);
			if (pct(r, 10))
				o->flags |= MAP_POPULATE;
			if (pct(r, 5))
				o->flags |= MAP_NORESERVE;
			if (o->mt == MT_FSH && pct(r, 10))
				o->sub |= 0x80; /* MAP_SHARED_VALIDATE */
			x = (unsigned)rnd(r, 100);
			o->var = x < 58 ? PL_ANY : x < 80 ? PL_FIXED : x < 84 ? PL_NOREPLACE :
				 x < 90 ? PL_HINT : PL_BAD;
			if (o->var == PL_BAD) {
				o->sub = (uint8_t)rnd(r, MB__N);
				if (o->sub == MB_RO_SHARED_WRITE || o->sub == MB_FD_WRONLY ||
				    o->sub == MB_VALIDATE_SYNC || o->sub == MB_DIR_FD)
					o->mt = MT_FSH;
				if (o->sub == MB_ANON_OFF_UNALIGNED)
					o->mt = MT_APR;
			} else if (o->var == PL_FIXED || (o->var == PL_NOREPLACE && !g[o->t])) {
				if (g[o->t])
					g[o->s] = g[o->t] - o->off2 < np ? g[o->t] - o->off2 : np;
				else
					g[o->s] = np;
			} else if (o->var != PL_NOREPLACE) {
				g[o->s] = np;
			}
			break;
		}
		case OP_UNMAP:
			o->s = (uint8_t)pick_used(r, g);
			gen_range(r, o, g, true);
			if (o->var == RV_WHOLE || (o->var == RV_PART && o->off == 0 && o->len >= g[o->s]))
				g[o->s] = 0;
			else if (o->var == RV_PART)
				g[o->s] = o->off ? o->off : g[o->s] - o->len;
			break;
		case OP_PUNCH:
			o->s = (uint8_t)pick_used(r, g);
			gen_range(r, o, g, false);
			o->var = RV_PART;
			o->sub = (uint8_t)rnd(r, 3);
			o->prot = pick_prot(r);
			o->arg = o->sub == 1 ? msync_set[rnd(r, 5)] : adv_set[rnd(r, NELEM(adv_set))];
			g[o->s] = o->off ? o->off : g[o->s] > o->len ? g[o->s] - o->len : 0;
			break;
		case OP_MPROTECT:
			o->s = (uint8_t)pick_used(r, g);
			gen_range(r, o, g, false);
			o->prot = pct(r, 4) ? (pct(r, 50) ? PROT_READ | PROT_GROWSDOWN : 0x40) : pick_prot(r);
			break;
		case OP_MSYNC:
			o->s = (uint8_t)pick_used(r, g);
			gen_range(r, o, g, false);
			o->arg = msync_set[pct(r, 8) ? 5 + rnd(r, 3) : rnd(r, 5)];
			break;
		case OP_MADVISE:
			o->s = (uint8_t)pick_used(r, g);
			gen_range(r, o, g, false);
			o->arg = adv_set[pct(r, 3) ? NELEM(adv_set) - 1 : rnd(r, NELEM(adv_set) - 1)];
			break;
		case OP_MREMAP: {
			unsigned mw[MR__N] = { 22, 12, 20, 14, 12, 6, 4, 10, 16, 14 };
			if (!multi)
				mw[MR_MULTI] = 0;
			o->s = (uint8_t)pick_used(r, g);
			o->t = (uint8_t)pick_used(r, g);
			o->var = (uint8_t)pick_w(r, mw, MR__N);
			uint64_t gp = g[o->s] ? g[o->s] : MAXPG;
			o->off = rnd(r, gp);
			o->len = 1 + rnd(r, gp - o->off);
			o->len2 = 1 + rnd(r, 24);
			o->off2 = pages_in(r, g[o->t]);
			o->flags = pct(r, 50) ? MREMAP_MAYMOVE : 0;
			gen_mremap_var(r, o);
			if (o->var == MR_WHOLE_MAYMOVE)
				g[o->s] = o->len2;
			else if (o->var == MR_SHRINK && g[o->s] > 1)
				g[o->s] = 1 + o->len2 % (g[o->s] - 1);
			else if (o->var == MR_DUP)
				g[o->t] = 1 + o->len2 % 8;
			else if (o->var == MR_SUB || o->var == MR_DONTUNMAP || o->var == MR_MULTI)
				g[o->s] = o->var == MR_SUB ? o->len2 : o->len;
			else if (o->var == MR_HOLE)
				g[o->s] = o->off + 1;
			break;
		}
		case OP_READ:
		case OP_WRITE: {
			o->s = (uint8_t)pick_used(r, g);
			uint64_t gb = (g[o->s] ? g[o->s] : MAXPG) * PG;
			unsigned x = (unsigned)rnd(r, 100);
			o->off = rnd(r, gb);
			o->len = x < 40 ? 1 + rnd(r, 64) : x < 80 ? 1 + rnd(r, PG) : 1 + rnd(r, MAXPG * PG);
			if (pct(r, 10)) /* around a page boundary */
				o->off = (o->off & ~(PG - 1)) + PG - 1 - rnd(r, 8);
			break;
		}
		case OP_FREAD:
		case OP_FWRITE: {
			o->s = (uint8_t)pick_used(r, g);
			uint64_t gb = (g[o->s] ? g[o->s] : MAXPG) * PG;
			o->off = rnd(r, gb);
			o->len = pct(r, 50) ? 1 + rnd(r, PG) : 1 + rnd(r, MAXPG * PG);
			o->off2 = pct(r, 70) ? rnd(r, FILEMAX + 8192) : rnd(r, FILEMAX / PG + 2) * PG;
			o->fdm = pct(r, 4);
			break;
		}
		case OP_TRUNC: {
			unsigned x = (unsigned)rnd(r, 100);
			o->len = x < 30 ? rnd(r, FILEMAX / PG + 3) * PG : rnd(r, FILEMAX + 8192);
			o->var = pct(r, 4) ? (uint8_t)(1 + rnd(r, 2)) : 0;
			break;
		}
		case OP_FCHECK:
			break;
		case OP_SCAN:
			o->s = (uint8_t)pick_used(r, g);
			break;
		}
	}
}

/* ------------------------------------------------------------------ */
/* The log. */

enum what {
	W_MMAP = 1, W_MUNMAP, W_RELEASE, W_MPROTECT, W_MSYNC, W_MADVISE,
	W_MREMAP, W_READ, W_WRITE, W_PREAD, W_PWRITE, W_VERIFY, W_FTRUNC,
	W_FCHECK, W_SYNCB, W_INVB, W_PROBE, W_HOLE, W_MURKY, W_MURKYEXT,
	W_UNEXPECTED, W_FINAL_UNMAP, W_FINAL_FILE, W_SLOTS, W_HASH,
	W_CUT, W_SHADOW, W_SCAN, W_FINAL_SCAN, W_HOLEREAD, W__N
};
static const char *const what_name[W__N] = {
	"?", "mmap", "munmap", "release(munmap)", "mprotect", "msync",
	"madvise", "mremap", "read", "write", "pread", "pwrite",
	"verify(pread)", "ftruncate", "file", "msync(MS_SYNC) bracket",
	"msync(MS_INVALIDATE) bracket", "probe over hole", "hole",
	"murky(post-EOF write)", "murky(size grows over post-EOF bytes)",
	"unexpected signal", "final munmap", "final file", "slots",
	"hash", "munmap in the op", "shadow", "scan", "final scan",
	"read of a fresh hole",
};

enum tag { T_RET = 1, T_SIG, T_HASH, T_FILE, T_INFO };

struct rec {
	uint32_t op;
	uint8_t what;
	uint8_t tag;
	uint16_t seq;
	int64_t a, b;
	uint64_t c;
};

struct logbuf {
	uint64_t nrec;		/* records published (atomic) */
	int64_t cur_op;		/* op being executed (atomic) */
	uint64_t cap;
	int32_t done;
	int32_t pad;
	uint64_t elapsed_ns;
	char msg[512];
	struct rec r[];
};

/* ------------------------------------------------------------------ */
/* One side of the comparison. */

struct api {
	const char *name;
	void *(*mmap)(void *, size_t, int, int, int, off_t);
	int (*munmap)(void *, size_t);
	int (*mprotect)(void *, size_t, int);
	int (*madvise)(void *, size_t, int);
	int (*msync)(void *, size_t, int);
	void *(*mremap)(void *, size_t, size_t, int, void *);
	int (*ftruncate)(int, off_t);
};

static void *k_mmap(void *a, size_t l, int p, int f, int fd, off_t o) { return mmap(a, l, p, f, fd, o); }
static int k_munmap(void *a, size_t l) { return munmap(a, l); }
static int k_mprotect(void *a, size_t l, int p) { return mprotect(a, l, p); }
static int k_madvise(void *a, size_t l, int adv) { return madvise(a, l, adv); }
static int k_msync(void *a, size_t l, int f) { return msync(a, l, f); }
static void *k_mremap(void *a, size_t os, size_t ns, int f, void *na) { return mremap(a, os, ns, f, na); }
static int k_ftruncate(int fd, off_t l) { return ftruncate(fd, l); }

static const struct api kernel_api = {
	"kernel", k_mmap, k_munmap, k_mprotect, k_madvise, k_msync, k_mremap, k_ftruncate,
};

#ifndef FUZZ_KERNEL_ONLY
static void *u_mremap(void *a, size_t os, size_t ns, int f, void *na) { return um_mremap(a, os, ns, f, na); }
static const struct api ummap_api = {
	"ummap", um_mmap, um_munmap, um_mprotect, um_madvise, um_msync, u_mremap, um_ftruncate,
};
#define SIDE1_API ummap_api
#else
#define SIDE1_API kernel_api
#endif

struct seg {
	uintptr_t s, e;
	uint8_t mt;
	int8_t f;
	uint64_t foff;
};

struct side {
	int id;
	const struct api *api;
	struct logbuf *L;
	uint32_t op;
	uint16_t seq;
	uintptr_t wb[NSLOT];
	uint64_t wl[NSLOT];	/* 0 = slot empty */
	bool pure[NSLOT];	/* the window lies within one VMA for sure */
	uint8_t last_slots[NSLOT];
	uint32_t last_used;
	struct seg seg[MAXSEG];
	int nseg;
	int fd[NFILE], fd_ro[NFILE], fd_wo[NFILE], dirfd;
	int closed_fd;
	unsigned murky[NFILE];
	uint8_t *buf;		/* scratch for pread checks */
	/* layout perturbation (FUZZ_KERNEL_ONLY, side 1) */
	bool perturb;
	struct rng prng;
	uintptr_t sp[NSPACER];
	size_t spl[NSPACER];
	int nsp;
	/* self-test */
	int64_t plant_at;
	bool planted;
};

static const struct op *g_ops;
static size_t g_nops;
static int g_coherence = 1;	/* 1 = msync brackets */
static int64_t g_dump = -1;	/* FUZZ_DUMP */
static int g_murky = 1;		/* FUZZ_MURKY=0 avoids post-EOF writes */
static int g_alias = 0;		/* FUZZ_ALIAS=1 keeps aliasing read(2)/write(2) */
static bool g_multi;		/* the kernel moves several VMAs in one mremap */

static void logr(struct side *S, int what, int tag, int64_t a, int64_t b, uint64_t c)
{
	struct logbuf *L = S->L;
	uint64_t n = L->nrec;
	if (n >= L->cap) {
		snprintf(L->msg, sizeof L->msg, "log full at op %u", S->op);
		_exit(3);
	}
	struct rec *r = &L->r[n];
	r->op = S->op;
	r->what = (uint8_t)what;
	r->tag = (uint8_t)tag;
	r->seq = S->seq++;
	r->a = a;
	r->b = b;
	r->c = c;
	__atomic_store_n(&L->nrec, n + 1, __ATOMIC_RELEASE);
}

static void log_ret(struct side *S, int what, long ret, uint64_t c)
{
	logr(S, what, T_RET, ret, ret < 0 ? errno : 0, c);
}

/* ------------------------------------------------------------------ */
/* Signals. */

static sigjmp_buf *volatile cur_jb;
static volatile int sig_no, sig_code;
static void *volatile sig_addr;
static pid_t main_tid;

static void on_fault(int sig, siginfo_t *si, void *uc)
{
	(void)uc;
	if (gettid() != main_tid || !cur_jb) {
		static const char m[] = "test_fuzz: SIGSEGV/SIGBUS outside the fuzzing thread or guard\n";
		if (write(2, m, sizeof m - 1) < 0) {
			/* nothing to do */
		}
		_exit(98);
	}
	sig_no = sig;
	sig_code = si->si_code;
	sig_addr = si->si_addr;
	siglongjmp(*cur_jb, 1);
}

/* ------------------------------------------------------------------ */
/* Windows and the shadow of what is mapped where. */

static bool used(const struct side *S, int s) { return S->wl[s] != 0; }

static void set_win(struct side *S, int s, uintptr_t b, uintptr_t e)
{
	S->wb[s] = b;
	S->wl[s] = e > b ? e - b : 0;
}

static int free_slot(const struct side *S)
{
	for (int s = 0; s < NSLOT; s++)
		if (!used(S, s))
			return s;
	return -1;
}

static bool covered(const struct side *S, uintptr_t a)
{
	for (int s = 0; s < NSLOT; s++)
		if (used(S, s) && a >= S->wb[s] && a < S->wb[s] + S->wl[s])
			return true;
	return false;
}

/* Location of an address as (slot code << 48 | offset): the first window
 * containing it, else the probe range, else relative to `rel`. */
static uint64_t loc(const struct side *S, uintptr_t a, uintptr_t rel)
{
	for (int s = 0; s < NSLOT; s++)
		if (used(S, s) && a >= S->wb[s] && a < S->wb[s] + S->wl[s])
			return (uint64_t)s << 48 | (a - S->wb[s]);
	if (a >= PROBE_BASE && a < PROBE_BASE + PROBE_PAGES * PG)
		return (uint64_t)8 << 48 | (a - PROBE_BASE);
	return (uint64_t)9 << 48 | ((a - rel) & 0xffffffffffffULL);
}

static void seg_remove(struct side *S, uintptr_t a, uintptr_t b)
{
	for (int i = 0; i < S->nseg; i++) {
		struct seg *g = &S->seg[i];
		if (g->e <= a || g->s >= b)
			continue;
		if (g->s < a && g->e > b) {
			if (S->nseg >= MAXSEG)
				_exit(4);
			memmove(&S->seg[i + 2], &S->seg[i + 1], (size_t)(S->nseg - i - 1) * sizeof *g);
			S->seg[i + 1] = *g;
			S->seg[i + 1].foff += b - g->s;
			S->seg[i + 1].s = b;
			g->e = a;
			S->nseg++;
			i++;
		} else if (g->s < a) {
			g->e = a;
		} else if (g->e > b) {
			g->foff += b - g->s;
			g->s = b;
		} else {
			memmove(g, g + 1, (size_t)(S->nseg - i - 1) * sizeof *g);
			S->nseg--;
			i--;
		}
	}
}

static void seg_add(struct side *S, uintptr_t a, uintptr_t b, int mt, int f, uint64_t foff)
{
	if (a >= b)
		return;
	if (S->nseg >= MAXSEG)
		_exit(4);
	S->seg[S->nseg++] = (struct seg){ a, b, (uint8_t)mt, (int8_t)f, foff };
}

/* The shadow after a successful mremap of [old, old+os) to [r, r+ns). */
static void seg_mremap(struct side *S, uintptr_t old, uint64_t os, uintptr_t r, uint64_t ns,
		       bool keep_old, bool dup)
{
	struct seg nw[MAXSEG];
	int n = 0;
	if (dup) {
		for (int i = 0; i < S->nseg; i++)
			if (old >= S->seg[i].s && old < S->seg[i].e) {
				struct seg g = S->seg[i];
				nw[n++] = (struct seg){ r, r + ns, g.mt, g.f, g.foff + (old - g.s) };
				break;
			}
	} else {
		uint64_t keep = os < ns ? os : ns;
		for (int i = 0; i < S->nseg; i++) {
			struct seg g = S->seg[i];
			uintptr_t lo = g.s > old ? g.s : old, hi = g.e < old + keep ? g.e : old + keep;
			if (lo >= hi)
				continue;
			nw[n++] = (struct seg){ r + (lo - old), r + (hi - old), g.mt, g.f,
						g.foff + (lo - g.s) };
			if (ns > os && hi == old + os)
				nw[n - 1].e = r + ns;
		}
		if (!keep_old)
			seg_remove(S, old, old + os);
	}
	/* Only under the pieces: a multi-VMA move leaves the destination's
	 * mappings where the source had gaps. */
	for (int i = 0; i < n; i++) {
		seg_remove(S, nw[i].s, nw[i].e);
		seg_add(S, nw[i].s, nw[i].e, nw[i].mt, nw[i].f, nw[i].foff);
	}
}

/* Unmap the pages of [a, b) no window covers any more. */
static void release_uncovered(struct side *S, uintptr_t a, uintptr_t b)
{
	uintptr_t p = a;
	while (p < b) {
		if (covered(S, p)) {
			p += PG;
			continue;
		}
		uintptr_t q = p;
		while (q < b && !covered(S, q))
			q += PG;
		int r = S->api->munmap((void *)p, q - p);
		log_ret(S, W_RELEASE, r, loc(S, p, a));
		seg_remove(S, p, q);
		p = q;
	}
}

struct pieces {
	int n;
	uintptr_t a[3 * NSLOT], b[3 * NSLOT];
	bool pure[3 * NSLOT];
};

static void piece(struct pieces *P, uintptr_t a, uintptr_t b, bool pure)
{
	if (a < b && P->n < 3 * NSLOT) {
		P->a[P->n] = a;
		P->b[P->n] = b;
		P->pure[P->n] = pure;
		P->n++;
	}
}

/*
 * VMA purity.  Whether two adjacent private VMAs merge depends on their
 * anon_vma, which the kernel may borrow at fault time from whatever VMA is
 * adjacent, including mappings outside the run's windows (ummap's own, or
 * the spacers): so whether a range of a window is one VMA is
 * layout-dependent once the window was split.  A window is "pure" while it
 * is certainly inside one VMA (made by one mmap/mremap, or a piece of one,
 * and not split since); mremap, the one call whose result depends on VMA
 * boundaries (EFAULT), is skipped on impure windows holding private pages.
 */
static void split_by(struct side *S, uintptr_t a, uintptr_t b, bool whole_ok)
{
	for (int w = 0; w < NSLOT; w++) {
		if (!used(S, w))
			continue;
		uintptr_t wb = S->wb[w], we = wb + S->wl[w];
		if (we <= a || wb >= b)
			continue;
		if (!(whole_ok && wb >= a && we <= b))
			S->pure[w] = false;
	}
}

/* A new mapping fills [a, b): windows inside it are one VMA now. */
static void filled(struct side *S, uintptr_t a, uintptr_t b)
{
	for (int w = 0; w < NSLOT; w++) {
		if (!used(S, w))
			continue;
		uintptr_t wb = S->wb[w], we = wb + S->wl[w];
		if (we <= a || wb >= b)
			continue;
		S->pure[w] = wb >= a && we <= b;
	}
}

static bool splits_vma(int advice)
{
	switch (advice) {
	case MADV_DONTNEED: case MADV_WILLNEED: case MADV_REMOVE: case MADV_COLD:
	case MADV_PAGEOUT: case MADV_FREE: case MADV_POPULATE_READ:
	case MADV_POPULATE_WRITE:
		return false;
	default:
		return true;
	}
}

/* Take [a, b) out of every window but `skip`; what is left of a window on
 * both sides goes to the orphans. */
static void trim(struct side *S, uintptr_t a, uintptr_t b, int skip, struct pieces *P)
{
	for (int w = 0; w < NSLOT; w++) {
		if (w == skip || !used(S, w))
			continue;
		uintptr_t wb = S->wb[w], we = wb + S->wl[w];
		if (we <= a || wb >= b)
			continue;
		if (wb < a) {
			set_win(S, w, wb, a);
			piece(P, b, we, S->pure[w]);
		} else if (we > b) {
			set_win(S, w, b, we);
		} else {
			set_win(S, w, 0, 0);
		}
	}
}

/* Orphans: into free slots in order, the rest unmapped where uncovered. */
static void adopt(struct side *S, struct pieces *P)
{
	bool gone[3 * NSLOT] = { false };
	for (int i = 0; i < P->n; i++) {
		int k = free_slot(S);
		if (k < 0)
			break;
		set_win(S, k, P->a[i], P->b[i]);
		S->pure[k] = P->pure[i];
		gone[i] = true;
	}
	for (int i = 0; i < P->n; i++)
		if (!gone[i])
			release_uncovered(S, P->a[i], P->b[i]);
}

/* [a, b) was unmapped: fix the windows and the shadow. */
static void hole(struct side *S, uintptr_t a, uintptr_t b)
{
	struct pieces P = { 0 };
	seg_remove(S, a, b);
	trim(S, a, b, -1, &P);
	adopt(S, &P);
}

/* Each window must be fully mapped; the kernel's msync(MS_ASYNC) says
 * ENOMEM for a hole and changes nothing else. */
static void check_windows(struct side *S)
{
	for (int s = 0; s < NSLOT; s++) {
		if (!used(S, s) || msync((void *)S->wb[s], S->wl[s], MS_ASYNC) == 0)
			continue;
		uintptr_t p = S->wb[s], e = p + S->wl[s];
		bool found = false;
		for (; p < e && !found; p += PG) {
			if (msync((void *)p, PG, MS_ASYNC) == 0)
				continue;
			uintptr_t q = p;
			while (q < e && msync((void *)q, PG, MS_ASYNC) != 0)
				q += PG;
			logr(S, W_HOLE, T_INFO, s, (int64_t)((p - S->wb[s]) / PG), (q - p) / PG);
			hole(S, p, q);
			found = true;
		}
		if (found)
			s = -1; /* windows changed: start over */
	}
}

/* Fuzzer self-check: every page of every window is in exactly one shadow
 * segment.  A failure is logged (and fails the run as a fuzzer bug). */
static void check_shadow(struct side *S)
{
	for (int s = 0; s < NSLOT; s++) {
		if (!used(S, s))
			continue;
		for (uintptr_t p = S->wb[s]; p < S->wb[s] + S->wl[s]; p += PG) {
			int k = 0;
			for (int i = 0; i < S->nseg; i++)
				k += p >= S->seg[i].s && p < S->seg[i].e;
			if (k != 1) {
				logr(S, W_SHADOW, T_INFO, s, (int64_t)((p - S->wb[s]) / PG), (uint64_t)k);
				return;
			}
		}
	}
}

/* A record of the slot table (pages per slot) when it changed. */
static void log_slots(struct side *S)
{
	uint8_t cur[NSLOT];
	for (int s = 0; s < NSLOT; s++)
		cur[s] = (uint8_t)(S->wl[s] / PG > 255 ? 255 : S->wl[s] / PG);
	if (!memcmp(cur, S->last_slots, NSLOT))
		return;
	memcpy(S->last_slots, cur, NSLOT);
	uint64_t c = 0;
	for (int s = 0; s < NSLOT; s++)
		c |= (uint64_t)cur[s] << (8 * s);
	logr(S, W_SLOTS, T_INFO, 0, 0, c);
}

/* ------------------------------------------------------------------ */
/* Guarded memory access. */

static volatile uint64_t acc_done, acc_hash;
static char plant_where[96];
static uint64_t loc(const struct side *S, uintptr_t a, uintptr_t rel);
static void loc_str(uint64_t c, char *buf, size_t n);
static void loc_str_side(const struct side *S, uintptr_t a)
{
	loc_str(loc(S, a, a), plant_where, sizeof plant_where);
}

/* Read or write [p, p+n) byte by byte in increasing order; a signal stops
 * it and is returned (0 = none).  acc_done/acc_hash say how far it got. */
static int touch(struct side *S, uint8_t *p, uint64_t n, bool write, uint64_t seed)
{
	sigjmp_buf jb, *prev = cur_jb;
	int got = 0;
	acc_done = 0;
	acc_hash = FNV0;
	cur_jb = &jb;
	if (sigsetjmp(jb, 1) == 0) {
		volatile uint8_t *vp = p;
		uint64_t h = FNV0;
		for (uint64_t i = 0; i < n; i++) {
			if (write) {
				uint8_t v = data_byte(seed, i);
				bool plant = S->plant_at >= 0 && S->op >= S->plant_at && !S->planted;
				vp[i] = plant ? v ^ 0x5a : v;
				if (plant) { /* the store did not fault */
					S->planted = true;
					loc_str_side(S, (uintptr_t)&vp[i]);
					fprintf(stderr, "fuzz: side %d: planted a flipped byte at op %u, %s\n",
						S->id + 1, S->op, plant_where);
				}
			} else {
				h = (h ^ vp[i]) * FNVP;
				acc_hash = h;
			}
			acc_done = i + 1;
		}
	} else {
		got = sig_no;
	}
	cur_jb = prev;
	return got;
}

static void log_sig(struct side *S, int what, uintptr_t rel)
{
	logr(S, what, T_SIG, sig_no, sig_code, loc(S, (uintptr_t)sig_addr, rel));
}

/* ------------------------------------------------------------------ */
/* Murky area: bytes beyond EOF in the last partial page, written through a
 * shared mapping (or by read(2) into one). */

static uint64_t fsize(int fd)
{
	struct stat st;
	return fstat(fd, &st) == 0 ? (uint64_t)st.st_size : UINT64_MAX;
}

/* Do the bytes [a, a+n) reach, through shared file segment g, past the end
 * of its file within the file's last partial page?  If so, *foff is the
 * file offset of the first such byte and *at its distance from a. */
static bool murky_byte(struct side *S, const struct seg *g, uintptr_t a, uint64_t n, uint64_t *foff,
		       uint64_t *at)
{
	if (g->mt != MT_FSH || g->e <= a || g->s >= a + n)
		return false;
	uintptr_t lo = g->s > a ? g->s : a, hi = g->e < a + n ? g->e : a + n;
	uint64_t flo = g->foff + (lo - g->s), fhi = flo + (hi - lo);
	uint64_t sz = fsize(S->fd[g->f]);
	if (sz % PG == 0 || fhi <= sz || flo >= pgup(sz))
		return false;
	*foff = flo > sz ? flo : sz;
	*at = (lo - a) + (*foff - flo);
	return true;
}

static void murky_check(struct side *S, uintptr_t a, uint64_t n)
{
	uint64_t first[NFILE] = { 0 };
	bool hit[NFILE] = { false };
	for (int i = 0; i < S->nseg; i++) {
		const struct seg *g = &S->seg[i];
		uint64_t at, dist;
		if (!murky_byte(S, g, a, n, &at, &dist))
			continue;
		if (!hit[g->f] || at < first[g->f])
			first[g->f] = at;
		hit[g->f] = true;
	}
	for (int f = 0; f < NFILE; f++)
		if (hit[f]) {
			logr(S, W_MURKY, T_INFO, f, (int64_t)first[f], 0);
			S->murky[f]++;
		}
}

/* FUZZ_MURKY=0: how many bytes from a can be written without reaching a
 * byte beyond EOF in the last partial page of a shared file mapping. */
static uint64_t murky_limit(struct side *S, uintptr_t a, uint64_t n)
{
	uint64_t lim = n;
	for (int i = 0; i < S->nseg; i++) {
		uint64_t foff, at;
		if (murky_byte(S, &S->seg[i], a, n, &foff, &at) && at < lim)
			lim = at;
	}
	return lim;
}

/* The size of file f changed from `before`. */
static void size_changed(struct side *S, int f, uint64_t before)
{
	uint64_t now = fsize(S->fd[f]);
	if (now == before)
		return;
	if (now > before && S->murky[f])
		logr(S, W_MURKYEXT, T_INFO, f, (int64_t)before, now);
	S->murky[f] = 0;
}

/* ------------------------------------------------------------------ */
/* Executing the ops. */

struct where {
	uintptr_t base;
	uint64_t W;
	int slot;	/* -1: the probe range */
};

static struct where where_of(const struct side *S, int s)
{
	if (used(S, s))
		return (struct where){ S->wb[s], S->wl[s], s };
	return (struct where){ PROBE_BASE, PROBE_PAGES * PG, -1 };
}

static void range_of(const struct side *S, const struct op *o, uintptr_t *a, uint64_t *l)
{
	struct where w = where_of(S, o->s);
	uint64_t wp = w.W / PG, po = o->off % wp, pl = o->len;
	if (pl > wp - po)
		pl = wp - po;
	switch (o->var) {
	case RV_WHOLE:
		*a = w.base;
		*l = w.W;
		break;
	case RV_PART:
		*a = w.base + po * PG;
		*l = pl * PG;
		break;
	case RV_UNALIGNED:
		*a = w.base + po * PG + 1 + o->seed % (PG - 1);
		*l = pl * PG - (*a & (PG - 1));
		break;
	case RV_LEN0:
		*a = w.base + po * PG;
		*l = 0;
		break;
	default: /* RV_ODDLEN */
		*a = w.base + po * PG;
		*l = pl * PG - 1 - o->seed % (PG - 1);
		break;
	}
}

static void bytes_of(const struct side *S, const struct op *o, uintptr_t *a, uint64_t *n)
{
	struct where w = where_of(S, o->s);
	uint64_t off = o->off % w.W, len = o->len;
	if (len > w.W - off)
		len = w.W - off;
	*a = w.base + off;
	*n = len;
}

static void exec_map(struct side *S, const struct op *o)
{
	int flags = o->flags, fd = -1, k = o->s, prot = o->prot;
	off_t off = (off_t)(o->off * PG);
	size_t len = o->len;
	uintptr_t addr = 0;
	bool fixed = false, hint = o->var == PL_HINT;
	int mb = o->var == PL_BAD ? o->sub & 0x7f : -1;

	switch (o->mt) {
	case MT_FSH:
		flags |= (o->sub & 0x80) ? MAP_SHARED_VALIDATE : MAP_SHARED;
		fd = o->fdm ? S->fd_ro[o->f] : S->fd[o->f];
		break;
	case MT_FPR:
		flags |= MAP_PRIVATE;
		fd = o->fdm ? S->fd_ro[o->f] : S->fd[o->f];
		break;
	case MT_APR:
		flags |= MAP_PRIVATE | MAP_ANONYMOUS;
		break;
	default:
		flags |= MAP_SHARED | MAP_ANONYMOUS;
		break;
	}
	if (o->var == PL_FIXED || o->var == PL_NOREPLACE || hint || mb == MB_FIXED_UNALIGNED) {
		if (used(S, o->t)) {
			uint64_t tp = S->wl[o->t] / PG, to = o->off2 % tp;
			addr = S->wb[o->t] + to * PG;
			if (len > S->wl[o->t] - to * PG)
				len = S->wl[o->t] - to * PG;
		} else if (mb == MB_FIXED_UNALIGNED) {
			addr = PROBE_BASE;
		} else {
			hint = false; /* no window to aim at: the kernel chooses */
		}
		if (addr && !hint) {
			fixed = true;
			flags |= o->var == PL_NOREPLACE ? MAP_FIXED_NOREPLACE : MAP_FIXED;
		}
	}
	switch (mb) {
	case MB_LEN0: len = 0; break;
	case MB_OFF_UNALIGNED: off += 100; break;
	case MB_FD_MINUS1: fd = -1; flags &= ~MAP_ANONYMOUS; break;
	case MB_FD_CLOSED: fd = S->closed_fd; flags &= ~MAP_ANONYMOUS; break;
	case MB_FD_WRONLY: fd = S->fd_wo[o->f]; break;
	case MB_RO_SHARED_WRITE: fd = S->fd_ro[o->f]; prot |= PROT_WRITE; break;
	case MB_NO_TYPE: flags &= ~(MAP_SHARED | MAP_PRIVATE | MAP_SHARED_VALIDATE); flags |= 0x4; break;
	case MB_VALIDATE_SYNC: flags = (flags & ~MAP_SHARED) | MAP_SHARED_VALIDATE | MAP_SYNC; break;
	case MB_HUGE_LEN: len = (size_t)1 << 47; break;
	case MB_WRAP_LEN: len = (size_t)0 - PG / 2; break;
	case MB_NEG_OFF: off = -(off_t)PG; break;
	case MB_FIXED_UNALIGNED: addr += 1 + o->seed % (PG - 1); break;
	case MB_DIR_FD: fd = S->dirfd; break;
	case MB_ANON_OFF_UNALIGNED: off = 100; break;
	case MB_BAD_PROT: prot |= PROT_GROWSDOWN; break;
	default: break;
	}

	void *r = S->api->mmap((void *)addr, len, prot, flags, fd, off);
	if (r == MAP_FAILED) {
		log_ret(S, W_MMAP, -1, 0);
		return;
	}
	uintptr_t nb = (uintptr_t)r;
	int64_t norm = fixed ? (int64_t)(nb - addr) : hint ? (nb == addr) : 0;
	if (nb & (PG - 1))
		norm = 0x7eadbeef;
	logr(S, W_MMAP, T_RET, norm, 0, 0);
	if (nb & (PG - 1) || len == 0)
		return; /* nonsense from the callee; the log shows it */
	uintptr_t ne = nb + pgup(len);
	uintptr_t ob = S->wb[k], oe = ob + S->wl[k];
	bool had = used(S, k);
	seg_remove(S, nb, ne);
	seg_add(S, nb, ne, o->mt, o->f, (uint64_t)off);
	set_win(S, k, 0, 0);
	filled(S, nb, ne);
	set_win(S, k, nb, ne);
	S->pure[k] = true;
	if (had)
		release_uncovered(S, ob, oe);
}

static void exec_unmap(struct side *S, const struct op *o)
{
	uintptr_t a;
	uint64_t l;
	range_of(S, o, &a, &l);
	int r = S->api->munmap((void *)a, l);
	log_ret(S, W_MUNMAP, r, 0);
	if (r == 0 && used(S, o->s) && l)
		hole(S, a, a + pgup(l));
}

static void exec_punch(struct side *S, const struct op *o)
{
	uintptr_t a;
	uint64_t l;
	range_of(S, o, &a, &l);
	int r = S->api->munmap((void *)a, l);
	log_ret(S, W_MUNMAP, r, 0);
	if (r != 0 || !used(S, o->s) || !l)
		return;
	void *b = (void *)S->wb[o->s];
	size_t W = S->wl[o->s];
	int p;
	if (o->sub == 0)
		p = S->api->mprotect(b, W, o->prot);
	else if (o->sub == 1)
		p = S->api->msync(b, W, o->arg);
	else
		p = S->api->madvise(b, W, o->arg);
	log_ret(S, W_PROBE, p, 0);
	if (o->sub == 0 || (o->sub == 2 && splits_vma(o->arg)))
		split_by(S, (uintptr_t)b, (uintptr_t)b + W, true);
	hole(S, a, a + pgup(l));
}

static void exec_rangeop(struct side *S, const struct op *o)
{
	uintptr_t a;
	uint64_t l;
	range_of(S, o, &a, &l);
	int r;
	if (o->kind == OP_MPROTECT) {
		r = S->api->mprotect((void *)a, l, o->prot);
		log_ret(S, W_MPROTECT, r, 0);
		split_by(S, a & ~(PG - 1), pgup(a + l), r == 0);
	} else if (o->kind == OP_MSYNC) {
		r = S->api->msync((void *)a, l, o->arg);
		log_ret(S, W_MSYNC, r, 0);
	} else {
		r = S->api->madvise((void *)a, l, o->arg);
		log_ret(S, W_MADVISE, r, 0);
		if (splits_vma(o->arg))
			split_by(S, a & ~(PG - 1), pgup(a + l), r == 0);
	}
}

/* Whether [a, b) of window s is one VMA is layout-dependent (see
 * split_by): the window may be split and [a, b) holds private pages. */
static bool layout_dependent(const struct side *S, int s, uintptr_t a, uintptr_t b)
{
	if (S->pure[s])
		return false;
	for (int i = 0; i < S->nseg; i++)
		if (S->seg[i].s < b && S->seg[i].e > a && S->seg[i].mt != MT_FSH &&
		    S->seg[i].mt != MT_ASH)
			return true;
	return false;
}

/* A successful mremap moved (or resized) [old, old+osz) of window s, once
 * [wb, wb+W), to [r, r+nsz): slot s becomes the new range; what is left of
 * the old window and of the windows the move vacated goes to the orphans. */
static void moved(struct side *S, int s, uintptr_t wb, uint64_t W, uintptr_t old, uint64_t osz,
		  uintptr_t r, uint64_t nsz, int flags)
{
	struct pieces P = { 0 };
	bool keep_old = flags & MREMAP_DONTUNMAP;
	uintptr_t va = 0, vb = 0; /* vacated */
	if (keep_old)
		;
	else if ((flags & MREMAP_FIXED) || ((flags & MREMAP_MAYMOVE) && nsz > osz))
		va = old, vb = old + osz;
	else if (nsz < osz)
		va = old + nsz, vb = old + osz;
	bool was_pure = S->pure[s];
	set_win(S, s, 0, 0);
	if (flags & MREMAP_FIXED)
		filled(S, r, r + nsz);
	set_win(S, s, r, r + nsz);
	S->pure[s] = true;
	if (keep_old) {
		piece(&P, wb, wb + W, was_pure);
	} else {
		piece(&P, wb, old, was_pure);
		piece(&P, old + osz, wb + W, was_pure);
	}
	if (va < vb)
		trim(S, va, vb, s, &P);
	adopt(S, &P);
}

/* A page count in [lo, hi] drawn from bits [sh, sh+16) of the op's seed. */
static uint64_t seed_pages(const struct op *o, int sh, uint64_t lo, uint64_t hi)
{
	return hi <= lo ? lo : lo + ((o->seed >> sh) & 0xffff) % (hi - lo + 1);
}

/* munmap [a, a+l) inside the op; the windows are fixed later by hole(). */
static bool cut(struct side *S, uintptr_t a, uint64_t l, uintptr_t rel)
{
	int r = S->api->munmap((void *)a, l);
	log_ret(S, W_CUT, r, loc(S, a, rel));
	return r == 0;
}

struct multi {
	uintptr_t old, na, ga, gb;	/* the range, its destination, the gap */
	uint64_t L;
	bool certain;			/* the range surely spans several VMAs */
};

/* Put a mapping of type o->mt over [a, a+l) of the range (MV_MAP). */
static bool map_inside(struct side *S, const struct op *o, uintptr_t a, uint64_t l)
{
	static const int type[] = { MAP_SHARED, MAP_PRIVATE, MAP_PRIVATE | MAP_ANONYMOUS,
				    MAP_SHARED | MAP_ANONYMOUS };
	int fd = o->mt <= MT_FPR ? S->fd[o->f] : -1;
	uint64_t foff = o->mt <= MT_FPR ? (o->seed >> 48) % 20 * PG : 0;
	void *r = S->api->mmap((void *)a, l, o->prot, type[o->mt] | MAP_FIXED, fd, (off_t)foff);
	logr(S, W_MMAP, T_RET, r == MAP_FAILED ? -1 : (int64_t)((uintptr_t)r - a),
	     r == MAP_FAILED ? errno : 0, 0);
	if (r == MAP_FAILED)
		return false;
	/* Anonymous shared memory is a file of its own: never merged. */
	bool apart = o->mt == MT_ASH;
	for (int i = 0; i < S->nseg; i++)
		if (S->seg[i].s < a && S->seg[i].e >= a)
			apart |= S->seg[i].mt != o->mt;
	seg_remove(S, a, a + l);
	seg_add(S, a, a + l, o->mt, o->f, foff);
	split_by(S, a, a + l, false);
	return apart;
}

/* Make the range of an MR_MULTI op span several VMAs. */
static void multi_setup(struct side *S, const struct op *o, struct multi *M)
{
	uint64_t n = M->L / PG, k = seed_pages(o, 0, 1, n - 1), m = seed_pages(o, 16, 1, n - k);
	if (n < 2)
		return;
	switch (o->sub) {
	case MV_PROT: {
		int p2 = prot_set[(idx_of(prot_set, NELEM(prot_set), o->prot) + 1 + o->seed % 5) %
				  NELEM(prot_set)];
		int r1 = S->api->mprotect((void *)M->old, k * PG, o->prot);
		log_ret(S, W_MPROTECT, r1, 0);
		int r2 = S->api->mprotect((void *)(M->old + k * PG), (n - k) * PG, p2);
		log_ret(S, W_MPROTECT, r2, 0);
		split_by(S, M->old, M->old + M->L, false);
		M->certain = r1 == 0 && r2 == 0;
		break;
	}
	case MV_MAP:
		M->certain = map_inside(S, o, M->old + k * PG, m * PG);
		break;
	case MV_GAP_MID:
	case MV_GAP_END:
	case MV_GAP_START:
		if (o->sub == MV_GAP_MID && k + m == n && m > 1)
			m--;
		M->ga = o->sub == MV_GAP_START ? M->old : M->old + k * PG;
		M->gb = o->sub == MV_GAP_START ? M->old + k * PG :
			o->sub == MV_GAP_END ? M->old + M->L : M->ga + m * PG;
		M->certain = cut(S, M->ga, M->gb - M->ga, M->old);
		if (!M->certain)
			M->ga = M->gb = 0;
		/* The gap maps nothing now: the move must not carry the old
		 * mapping's record over what stays opposite it (a mapping
		 * whose pages the file checks must then msync). */
		seg_remove(S, M->ga, M->gb);
		break;
	}
}

/* MR_MULTI: mremap(MAYMOVE|FIXED[|DONTUNMAP]) of a range of window s made
 * to span several VMAs (or a hole) into window t.  With equal lengths the
 * kernel (6.17+) moves VMA by VMA and keeps the gaps, so VMA boundaries do
 * not matter; with lengths that differ it needs one VMA (EFAULT), which is
 * compared only where that is certain or layout-independent. */
static void exec_multi(struct side *S, const struct op *o)
{
	int s = o->s, t = o->t;
	if (!used(S, t)) {
		logr(S, W_MREMAP, T_INFO, 3, 0, 0);
		return;
	}
	uintptr_t wb = S->wb[s];
	uint64_t W = S->wl[s], wp = W / PG, po = o->off % wp, n = o->len;
	uint64_t tp = S->wl[t] / PG, to = o->off2 % tp;
	n = n > wp - po ? wp - po : n;
	n = n > tp - to ? tp - to : n;
	struct multi M = { wb + po * PG, S->wb[t] + to * PG, 0, 0, n * PG, false };
	multi_setup(S, o, &M);
	uint64_t ns = M.L;
	if (o->arg)
		ns = M.L < (tp - to) * PG ? M.L + PG : M.L - PG;
	int flags = MREMAP_MAYMOVE | MREMAP_FIXED | (o->flags & MREMAP_DONTUNMAP);
	void *rp = MAP_FAILED;
	if (ns && ns != M.L && !M.certain && layout_dependent(S, s, M.old, M.old + M.L)) {
		logr(S, W_MREMAP, T_INFO, 1, 0, 0);
	} else {
		rp = S->api->mremap((void *)M.old, M.L, ns, flags, (void *)M.na);
		log_ret(S, W_MREMAP, rp == MAP_FAILED ? -1 : (int64_t)((uintptr_t)rp - M.na), 0);
	}
	if (rp != MAP_FAILED) {
		seg_mremap(S, M.old, M.L, (uintptr_t)rp, ns, flags & MREMAP_DONTUNMAP, false);
		moved(S, s, wb, W, M.old, M.L, (uintptr_t)rp, ns, flags);
		split_by(S, (uintptr_t)rp, (uintptr_t)rp + ns, false);
	}
	if (M.ga < M.gb)
		hole(S, M.ga, M.gb);
}

/* Log whether each page of the fresh hole [a, b) reads (it must not). */
static void probe_hole(struct side *S, uintptr_t a, uintptr_t b, uintptr_t rel)
{
	for (uintptr_t p = a; p < b; p += PG) {
		int sig = touch(S, (uint8_t *)p, 1, false, 0);
		logr(S, W_HOLEREAD, T_HASH, (int64_t)acc_done, 0, acc_hash);
		if (sig)
			log_sig(S, W_HOLEREAD, rel);
	}
}

/* MR_HOLE: punch a hole into a range of window s (optionally a PROT_NONE
 * page next to it), then mremap the range in place with a new length: the
 * kernel fails growth (EFAULT) and keeps the hole when the length stays or
 * shrinks; then the hole is read and an mprotect/msync/madvise spans it. */
static void exec_hole(struct side *S, const struct op *o)
{
	int s = o->s;
	uintptr_t wb = S->wb[s];
	uint64_t W = S->wl[s], wp = W / PG, po = o->off % wp, n = o->len;
	n = n > wp - po ? wp - po : n;
	if (n < 2) {
		logr(S, W_MREMAP, T_INFO, 4, 0, 0);
		return;
	}
	uintptr_t old = wb + po * PG;
	uint64_t k = o->sub == HP_START ? 0 : seed_pages(o, 0, 1, n - 1);
	uint64_t m = o->sub == HP_END ? n - k : seed_pages(o, 16, 1, n - k - (o->sub == HP_MID));
	uintptr_t ga = old + k * PG, gb = ga + m * PG;
	if (o->prot == PROT_NONE) {
		uintptr_t np = k ? ga - PG : gb < old + n * PG ? gb : 0;
		if (np) {
			int r = S->api->mprotect((void *)np, PG, PROT_NONE);
			log_ret(S, W_MPROTECT, r, loc(S, np, old));
			split_by(S, np, np + PG, r == 0);
		}
	}
	if (!cut(S, ga, gb - ga, old))
		return;
	uint64_t os = n * PG, ns = o->arg == HL_SAME ? os : o->arg == HL_GROW ?
		  os + seed_pages(o, 32, 1, 4) * PG : seed_pages(o, 32, 1, n - 1) * PG;
	int flags = o->flags & MREMAP_MAYMOVE;
	void *rp = S->api->mremap((void *)old, os, ns, flags, NULL);
	bool moves = (flags & MREMAP_MAYMOVE) && ns > os; /* where to: layout */
	log_ret(S, W_MREMAP, rp == MAP_FAILED ? -1 : moves ? 0 : (int64_t)((uintptr_t)rp - old), 0);
	probe_hole(S, ga, gb, old);
	int pr = o->seed >> 62 == 0 ? S->api->mprotect((void *)old, os, PROT_READ) :
		 o->seed >> 62 == 1 ? S->api->msync((void *)old, os, MS_ASYNC) :
		 S->api->madvise((void *)old, os, MADV_RANDOM);
	log_ret(S, W_PROBE, pr, 0);
	if (rp != MAP_FAILED) {
		seg_mremap(S, old, os, (uintptr_t)rp, ns, false, false);
		moved(S, s, wb, W, old, os, (uintptr_t)rp, ns, flags);
	}
	split_by(S, old, old + os, false);
	hole(S, ga, gb);
}

static void exec_mremap(struct side *S, const struct op *o)
{
	int s = o->s, flags = 0;
	uintptr_t old, na = 0;
	uint64_t os, ns;
	bool dup = false, keep_old = false;

	if (!used(S, s)) {
		void *r = S->api->mremap((void *)(PROBE_BASE + (o->off % MAXPG) * PG), o->len * PG,
					 o->len2 * PG, MREMAP_MAYMOVE, NULL);
		log_ret(S, W_MREMAP, r == MAP_FAILED ? -1 : 0x7eadbeef, 0);
		return; /* a success here would be a bug the log shows */
	}
	if (o->var == MR_MULTI || o->var == MR_HOLE) {
		(o->var == MR_MULTI ? exec_multi : exec_hole)(S, o);
		return;
	}
	uintptr_t wb = S->wb[s];
	uint64_t W = S->wl[s], wp = W / PG, po = o->off % wp, pl = o->len;
	if (pl > wp - po)
		pl = wp - po;

	/* The range the call needs to be one VMA; skipped if that is
	 * layout-dependent (see split_by).  MR_FIXED: below. */
	if (o->var != MR_BAD && o->var != MR_DUP && o->var != MR_FIXED) {
		bool whole = o->var == MR_WHOLE_MAYMOVE || o->var == MR_SHRINK ||
			     o->var == MR_TAILCUT;
		uintptr_t ra = whole ? wb : wb + po * PG;
		uintptr_t rb = whole ? wb + W : wb + (po + pl) * PG;
		if (layout_dependent(S, s, ra, rb)) {
			logr(S, W_MREMAP, T_INFO, 1, 0, 0);
			return;
		}
	}

	switch (o->var) {
	case MR_WHOLE_MAYMOVE:
		old = wb; os = W; ns = o->len2 * PG; flags = MREMAP_MAYMOVE;
		break;
	case MR_SHRINK:
		old = wb; os = W; ns = wp > 1 ? (1 + o->len2 % (wp - 1)) * PG : W;
		break;
	case MR_SUB:
		old = wb + po * PG; os = pl * PG; ns = o->len2 * PG; flags = o->flags;
		/* Growing in place at the window's end depends on what the
		 * kernel placed after it: only with MAYMOVE. */
		if (ns > os && po + pl == wp)
			flags = MREMAP_MAYMOVE;
		break;
	case MR_FIXED:
		old = wb + po * PG; os = pl * PG; ns = o->len2 * PG; flags = MREMAP_MAYMOVE;
		if (used(S, o->t)) {
			uint64_t tp = S->wl[o->t] / PG, to = o->off2 % tp;
			na = S->wb[o->t] + to * PG;
			if (ns > (tp - to) * PG)
				ns = (tp - to) * PG;
			flags |= MREMAP_FIXED;
		}
		/* A kernel that moves several VMAs at once (6.17+) does not
		 * care where the VMAs of an equal-length FIXED move end. */
		if (!(g_multi && (flags & MREMAP_FIXED) && ns == os) &&
		    layout_dependent(S, s, old, old + os)) {
			logr(S, W_MREMAP, T_INFO, 1, 0, 0);
			return;
		}
		break;
	case MR_TAILCUT:
		if (wp < 2) {
			old = wb; os = W; ns = W;
			break;
		}
		{
			uint64_t c = 1 + o->off % (wp - 1), g = 1 + o->len2 % c;
			uintptr_t cut = wb + W - c * PG;
			int r = S->api->munmap((void *)cut, c * PG);
			log_ret(S, W_CUT, r, 0);
			if (r != 0)
				return;
			hole(S, cut, wb + W);
			if (S->wb[s] != wb || S->wl[s] != W - c * PG)
				return; /* cannot happen: the slot keeps its left part */
			W = S->wl[s];
			old = wb; os = W; ns = os + g * PG;
		}
		break;
	case MR_DONTUNMAP:
		old = wb + po * PG; os = ns = pl * PG; flags = MREMAP_MAYMOVE | MREMAP_DONTUNMAP;
		keep_old = true;
		break;
	case MR_DUP:
		old = wb + po * PG; os = 0; ns = (1 + o->len2 % 8) * PG; flags = MREMAP_MAYMOVE;
		dup = true;
		break;
	default: /* MR_BAD */
		old = wb; os = W; ns = o->len2 * PG; flags = MREMAP_MAYMOVE;
		switch (o->sub) {
		case MRB_UNALIGNED: old += 1 + o->seed % (PG - 1); break;
		case MRB_NEW0: ns = 0; break;
		case MRB_FIXED_NO_MAYMOVE: flags = MREMAP_FIXED; na = wb; break;
		case MRB_BADFLAG: flags |= 0x100; break;
		/* Beyond the address space wherever the window is: a shrink
		 * within it would unmap everything above (ASLR places windows
		 * anywhere in a 1 TiB range). */
		case MRB_HUGE_OLD: os = (uint64_t)1 << 47; break;
		default: flags = MREMAP_DONTUNMAP; ns = os; break;
		}
		break;
	}

	void *rp = S->api->mremap((void *)old, os, ns, flags, (void *)na);
	if (rp == MAP_FAILED) {
		log_ret(S, W_MREMAP, -1, 0);
		return;
	}
	uintptr_t r = (uintptr_t)rp;
	int64_t norm;
	if (flags & MREMAP_FIXED)
		norm = (int64_t)(r - na);
	else if (!(flags & MREMAP_MAYMOVE) || (ns <= os && !keep_old))
		norm = (int64_t)(r - old);
	else
		norm = 0; /* moved or not: depends on the layout */
	if ((r & (PG - 1)) || o->var == MR_BAD)
		norm = 0x7eadbeef;
	logr(S, W_MREMAP, T_RET, norm, 0, 0);
	if (norm == 0x7eadbeef)
		return;

	uint64_t osz = pgup(os), nsz = pgup(ns);
	if (dup) {
		seg_mremap(S, old, osz, r, nsz, true, true);
		uintptr_t tb = S->wb[o->t], te = tb + S->wl[o->t];
		bool had = used(S, o->t);
		set_win(S, o->t, r, r + nsz);
		S->pure[o->t] = true;
		if (had)
			release_uncovered(S, tb, te);
		return;
	}
	seg_mremap(S, old, osz, r, nsz, keep_old, false);
	moved(S, s, wb, W, old, osz, r, nsz, flags);
}

static void exec_access(struct side *S, const struct op *o)
{
	uintptr_t a;
	uint64_t n;
	bool write = o->kind == OP_WRITE;
	bytes_of(S, o, &a, &n);
	if (write && !g_murky && used(S, o->s))
		n = murky_limit(S, a, n);
	int sig = touch(S, (uint8_t *)a, n, write, o->seed);
	logr(S, write ? W_WRITE : W_READ, T_HASH, (int64_t)acc_done, 0, write ? 0 : acc_hash);
	if (sig)
		log_sig(S, write ? W_WRITE : W_READ, a);
	if (write && acc_done && used(S, o->s))
		murky_check(S, a, acc_done);
}

/* msync the windows that map file f (shared only, unless `any`). */
static void bracket(struct side *S, int f, int flags, int what, bool any)
{
	if (!g_coherence)
		return;
	for (int s = 0; s < NSLOT; s++) {
		if (!used(S, s))
			continue;
		uintptr_t b = S->wb[s], e = b + S->wl[s];
		bool hit = false;
		for (int i = 0; i < S->nseg && !hit; i++) {
			const struct seg *g = &S->seg[i];
			hit = g->f == f && (g->mt == MT_FSH || (any && g->mt == MT_FPR)) &&
			      g->s < e && g->e > b;
		}
		if (hit) {
			int r = S->api->msync((void *)b, S->wl[s], flags);
			log_ret(S, what, r, (uint64_t)s);
		}
	}
}

/* Does [a, a+n) map file f at offsets overlapping [foff, foff+n)?  Then a
 * read(2)/write(2) between them copies a file onto itself: with the
 * kernel's page cache the copy sees its own progress, with a separate cache
 * it cannot, whatever msync says. */
static bool aliases(const struct side *S, int f, uintptr_t a, uint64_t n, uint64_t foff)
{
	for (int i = 0; i < S->nseg; i++) {
		const struct seg *g = &S->seg[i];
		if (g->f != f || (g->mt != MT_FSH && g->mt != MT_FPR) || g->e <= a || g->s >= a + n)
			continue;
		uintptr_t lo = g->s > a ? g->s : a, hi = g->e < a + n ? g->e : a + n;
		uint64_t flo = g->foff + (lo - g->s), fhi = flo + (hi - lo);
		if (flo < foff + n && fhi > foff)
			return true;
	}
	return false;
}

static void exec_fread(struct side *S, const struct op *o)
{
	int fd = o->fdm ? S->fd_wo[o->f] : S->fd[o->f];
	uintptr_t a;
	uint64_t n;
	bytes_of(S, o, &a, &n);
	if (!g_murky && used(S, o->s))
		n = murky_limit(S, a, n);
	if (g_coherence && !g_alias && used(S, o->s) && aliases(S, o->f, a, n, o->off2)) {
		logr(S, W_PREAD, T_INFO, 1, 0, 0);
		return;
	}
	bracket(S, o->f, MS_SYNC, W_SYNCB, false);
	ssize_t r = pread(fd, (void *)a, n, (off_t)o->off2);
	log_ret(S, W_PREAD, (long)r, 0);
	if (r <= 0)
		return;
	if (used(S, o->s))
		murky_check(S, a, (uint64_t)r);
	int sig = touch(S, (uint8_t *)a, (uint64_t)r, false, 0);
	logr(S, W_HASH, T_HASH, (int64_t)acc_done, 0, acc_hash);
	if (sig)
		log_sig(S, W_HASH, a);
}

static void file_hash(struct side *S, int what, int f)
{
	uint64_t sz = fsize(S->fd[f]), h = FNV0, off = 0;
	for (;;) {
		ssize_t r = pread(S->fd[f], S->buf, 1 << 20, (off_t)off);
		if (r <= 0) {
			if (r < 0)
				h = (uint64_t)errno;
			break;
		}
		h = fnv(h, S->buf, (size_t)r);
		off += (uint64_t)r;
	}
	logr(S, what, T_FILE, (int64_t)sz, f, h);
}

static void exec_fwrite(struct side *S, const struct op *o)
{
	int fd = o->fdm ? S->fd_ro[o->f] : S->fd[o->f];
	uintptr_t a;
	uint64_t n;
	bytes_of(S, o, &a, &n);
	if (g_coherence && !g_alias && used(S, o->s) && aliases(S, o->f, a, n, o->off2)) {
		logr(S, W_PWRITE, T_INFO, 1, 0, 0);
		return;
	}
	bracket(S, o->f, MS_SYNC, W_SYNCB, false);
	uint64_t before = fsize(S->fd[o->f]);
	ssize_t r = pwrite(fd, (void *)a, n, (off_t)o->off2);
	log_ret(S, W_PWRITE, (long)r, 0);
	size_changed(S, o->f, before);
	bracket(S, o->f, MS_INVALIDATE, W_INVB, true);
	if (r > 0) {
		ssize_t k = pread(S->fd[o->f], S->buf, (size_t)r, (off_t)o->off2);
		logr(S, W_VERIFY, T_HASH, k, k < 0 ? errno : 0, k > 0 ? fnv(FNV0, S->buf, (size_t)k) : 0);
	}
}

static void exec_trunc(struct side *S, const struct op *o)
{
	int fd = o->var == 1 ? S->fd_ro[o->f] : S->fd[o->f];
	off_t len = o->var == 2 ? -1 : (off_t)o->len;
	uint64_t before = fsize(S->fd[o->f]);
	int r = S->api->ftruncate(fd, len);
	log_ret(S, W_FTRUNC, r, 0);
	size_changed(S, o->f, before);
}

static void exec_fcheck(struct side *S, const struct op *o)
{
	bracket(S, o->f, MS_SYNC, W_SYNCB, false);
	file_hash(S, W_FCHECK, o->f);
}

/* Read every page of slot s (page by page, so a fault skips one page): one
 * record of the pages and a hash over each page's bytes or fault. */
static void scan_slot(struct side *S, int s, int what)
{
	struct where w = where_of(S, s);
	uint64_t h = FNV0, bad = 0;
	for (uint64_t p = 0; p < w.W / PG; p++) {
		int sig = touch(S, (uint8_t *)(w.base + p * PG), PG, false, 0);
		uint64_t v[4] = { p, (uint64_t)sig, sig ? (uint64_t)sig_code : acc_hash,
				  sig ? loc(S, (uintptr_t)sig_addr, w.base) : 0 };
		bad += sig != 0;
		h = fnv(h, (const uint8_t *)v, sizeof v);
	}
	logr(S, what, T_HASH, (int64_t)(w.W / PG), (int64_t)bad, h);
}

static void exec_op(struct side *S, const struct op *o)
{
	switch (o->kind) {
	case OP_MAP: exec_map(S, o); break;
	case OP_UNMAP: exec_unmap(S, o); break;
	case OP_PUNCH: exec_punch(S, o); break;
	case OP_MPROTECT:
	case OP_MSYNC:
	case OP_MADVISE: exec_rangeop(S, o); break;
	case OP_MREMAP: exec_mremap(S, o); break;
	case OP_READ:
	case OP_WRITE: exec_access(S, o); break;
	case OP_FREAD: exec_fread(S, o); break;
	case OP_FWRITE: exec_fwrite(S, o); break;
	case OP_TRUNC: exec_trunc(S, o); break;
	case OP_FCHECK: exec_fcheck(S, o); break;
	case OP_SCAN: scan_slot(S, o->s, W_SCAN); break;
	default: break; /* skipped */
	}
}

/* One op under a guard: a signal outside touch() (e.g. inside a call) is
 * logged and the run goes on with the next op. */
static void run_one(struct side *S, const struct op *o)
{
	sigjmp_buf jb;
	cur_jb = &jb;
	if (sigsetjmp(jb, 1) == 0)
		exec_op(S, o);
	else
		log_sig(S, W_UNEXPECTED, 0);
	cur_jb = &jb;
	if (sigsetjmp(jb, 1) == 0) {
		check_windows(S);
		check_shadow(S);
		log_slots(S);
	} else {
		log_sig(S, W_UNEXPECTED, 0);
	}
	cur_jb = NULL;
}

/* FUZZ_DUMP=n: each side prints its windows and the kernel's VMAs under
 * them (from /proc/self/maps) before op n. */
static void dump_side(const struct side *S)
{
	char line[512];
	fprintf(stderr, "--- side %d (%s) before op %u: windows\n", S->id + 1, S->api->name, S->op);
	for (int s = 0; s < NSLOT; s++)
		if (used(S, s))
			fprintf(stderr, "  slot %d: %#lx-%#lx (%" PRIu64 " pages)\n", s,
				(unsigned long)S->wb[s], (unsigned long)(S->wb[s] + S->wl[s]), S->wl[s] / PG);
	for (int i = 0; i < S->nseg; i++)
		fprintf(stderr, "  shadow %#lx-%#lx %s file %d foff %#" PRIx64 "\n", (unsigned long)S->seg[i].s,
			(unsigned long)S->seg[i].e, mt_name[S->seg[i].mt], S->seg[i].f, S->seg[i].foff);
	FILE *m = fopen("/proc/self/maps", "r");
	while (m && fgets(line, sizeof line, m)) {
		unsigned long a, b;
		if (sscanf(line, "%lx-%lx", &a, &b) != 2)
			continue;
		bool near = false;
		for (int s = 0; s < NSLOT; s++)
			if (used(S, s) && a < S->wb[s] + S->wl[s] + 64 * PG && b + 64 * PG > S->wb[s])
				near = true;
		if (near)
			fprintf(stderr, "  vma %s", line);
	}
	if (m)
		fclose(m);
}

/* Layout perturbation between ops: PROT_NONE spacers placed by the kernel,
 * so that this side's address space differs from the other's. */
static void perturb(struct side *S, const struct op *o)
{
	if (!S->perturb)
		return;
	unsigned x = (unsigned)rnd(&S->prng, 8);
	bool placing = o->kind == OP_MAP || o->kind == OP_MREMAP;
	if ((x == 0 || (placing && x < 4)) && S->nsp < NSPACER) {
		size_t l = (1 + rnd(&S->prng, 16)) * PG;
		void *p = mmap(NULL, l, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p != MAP_FAILED) {
			S->sp[S->nsp] = (uintptr_t)p;
			S->spl[S->nsp++] = l;
		}
	} else if (x == 4 && S->nsp > 0) {
		int i = (int)rnd(&S->prng, (uint64_t)S->nsp);
		munmap((void *)S->sp[i], S->spl[i]);
		S->sp[i] = S->sp[--S->nsp];
		S->spl[i] = S->spl[S->nsp];
	}
}

static void child_fail(struct logbuf *L, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(L->msg, sizeof L->msg, fmt, ap);
	va_end(ap);
	_exit(2);
}

static void child_main(int id, struct logbuf *L, const char *dir, uint64_t seed,
		       int64_t plant_at, bool perturb_layout)
{
	static struct side S0;
	struct side *S = &S0;
	struct timespec t0, t1;
	char path[PATH_MAX];

	clock_gettime(CLOCK_MONOTONIC, &t0);
	memset(S, 0, sizeof *S);
	S->id = id;
	S->api = id ? &SIDE1_API : &kernel_api;
	S->L = L;
	S->plant_at = id ? plant_at : -1;
	S->perturb = id && perturb_layout;
	rng_seed(&S->prng, seed ^ 0x5eed5eed5eedULL);
	main_tid = gettid();
	S->buf = malloc(1 << 20);
	if (!S->buf)
		child_fail(L, "malloc");
	for (int f = 0; f < NFILE; f++) {
		snprintf(path, sizeof path, "%s/f%d", dir, f);
		S->fd[f] = open(path, O_RDWR);
		S->fd_ro[f] = open(path, O_RDONLY);
		S->fd_wo[f] = open(path, O_WRONLY);
		if (S->fd[f] < 0 || S->fd_ro[f] < 0 || S->fd_wo[f] < 0)
			child_fail(L, "open %s: %s", path, strerror(errno));
	}
	S->dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	if (S->dirfd < 0)
		child_fail(L, "open %s: %s", dir, strerror(errno));
	S->closed_fd = 1000;
	while (fcntl(S->closed_fd, F_GETFD) >= 0)
		S->closed_fd++;
	for (uintptr_t p = PROBE_BASE; p < PROBE_BASE + PROBE_PAGES * PG; p += PG)
		if (msync((void *)p, PG, MS_ASYNC) == 0 || errno != ENOMEM)
			child_fail(L, "the probe range at %#lx is mapped", (unsigned long)PROBE_BASE);

	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_fault;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGSEGV, &sa, NULL) || sigaction(SIGBUS, &sa, NULL))
		child_fail(L, "sigaction: %s", strerror(errno));

	if (S->perturb)
		for (int i = 0; i < 4; i++)
			perturb(S, &(struct op){ .kind = OP_MAP });
	for (size_t i = 0; i < g_nops; i++) {
		S->op = (uint32_t)i;
		S->seq = 0;
		__atomic_store_n(&L->cur_op, (int64_t)i, __ATOMIC_RELEASE);
		perturb(S, &g_ops[i]);
		if ((int64_t)i == g_dump)
			dump_side(S);
		run_one(S, &g_ops[i]);
	}

	/* The end: unmap everything (ummap must write back), then the files. */
	S->op = (uint32_t)g_nops;
	S->seq = 0;
	__atomic_store_n(&L->cur_op, (int64_t)g_nops, __ATOMIC_RELEASE);
	sigjmp_buf jb;
	cur_jb = &jb;
	if (sigsetjmp(jb, 1) == 0) {
		for (int s = 0; s < NSLOT; s++)
			if (used(S, s))
				scan_slot(S, s, W_FINAL_SCAN);
		for (;;) {
			int s = 0;
			while (s < NSLOT && !used(S, s))
				s++;
			if (s == NSLOT)
				break; /* orphans adopted by earlier slots are seen too */
			uintptr_t b = S->wb[s], e = b + S->wl[s];
			int r = S->api->munmap((void *)b, e - b);
			log_ret(S, W_FINAL_UNMAP, r, (uint64_t)s);
			hole(S, b, e);
		}
		for (int f = 0; f < NFILE; f++)
			file_hash(S, W_FINAL_FILE, f);
	} else {
		log_sig(S, W_UNEXPECTED, 0);
	}
	cur_jb = NULL;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	L->elapsed_ns = (uint64_t)(t1.tv_sec - t0.tv_sec) * 1000000000ULL +
			(uint64_t)t1.tv_nsec - (uint64_t)t0.tv_nsec;
	__atomic_store_n(&L->done, 1, __ATOMIC_RELEASE);
	_exit(0);
}

/* ------------------------------------------------------------------ */
/* The parent: files, children, comparison, report. */

static const char *sig_name(int s)
{
	return s == SIGSEGV ? "SIGSEGV" : s == SIGBUS ? "SIGBUS" : "signal";
}

static const char *code_name(int sig, int code)
{
	if (sig == SIGSEGV)
		return code == SEGV_MAPERR ? "SEGV_MAPERR" : code == SEGV_ACCERR ? "SEGV_ACCERR" :
		       code == 4 ? "SEGV_PKUERR" : "?";
	if (sig == SIGBUS)
		return code == BUS_ADRERR ? "BUS_ADRERR" : code == BUS_ADRALN ? "BUS_ADRALN" :
		       code == BUS_OBJERR ? "BUS_OBJERR" : code == 4 ? "BUS_MCEERR_AR" :
		       code == 5 ? "BUS_MCEERR_AO" : code == SI_USER ? "SI_USER" :
		       code == SI_TKILL ? "SI_TKILL" : code == SI_QUEUE ? "SI_QUEUE" : "?";
	return "?";
}

static void loc_str(uint64_t c, char *buf, size_t n)
{
	unsigned s = (unsigned)(c >> 48);
	uint64_t off = c & 0xffffffffffffULL;
	if (s < NSLOT)
		snprintf(buf, n, "slot %u +%#" PRIx64, s, off);
	else if (s == 8)
		snprintf(buf, n, "probe +%#" PRIx64, off);
	else
		snprintf(buf, n, "outside windows, access base %+" PRId64, (int64_t)(off << 16) >> 16);
}

static void rec_str(const struct rec *r, char *buf, size_t n)
{
	char lb[96];
	const char *w = r->what < W__N ? what_name[r->what] : "?";
	switch (r->tag) {
	case T_RET:
		if (r->a == 0x7eadbeef)
			snprintf(buf, n, "%s: success where the kernel cannot succeed / unaligned result", w);
		else if (r->a < 0)
			snprintf(buf, n, "%s = %" PRId64 " errno %" PRId64 " (%s)", w, r->a, r->b,
				 strerror((int)r->b));
		else if (r->what == W_MMAP || r->what == W_MREMAP)
			snprintf(buf, n, "%s ok (result - expected address = %" PRId64 ")", w, r->a);
		else
			snprintf(buf, n, "%s = %" PRId64 "%s", w, r->a,
				 r->what == W_SYNCB || r->what == W_INVB || r->what == W_FINAL_UNMAP ?
				 (snprintf(lb, sizeof lb, " (slot %" PRIu64 ")", r->c), lb) : "");
		break;
	case T_SIG:
		loc_str(r->c, lb, sizeof lb);
		snprintf(buf, n, "%s: %s si_code %" PRId64 " (%s) si_addr %s", w,
			 sig_name((int)r->a), r->b, code_name((int)r->a, (int)r->b), lb);
		break;
	case T_HASH:
		if (r->what == W_SCAN || r->what == W_FINAL_SCAN)
			snprintf(buf, n, "%s: %" PRId64 " pages, %" PRId64 " faulted, hash %016" PRIx64,
				 w, r->a, r->b, r->c);
		else
			snprintf(buf, n, "%s: %" PRId64 " bytes%s%s hash %016" PRIx64, w, r->a,
				 r->b ? " errno " : "", r->b ? strerror((int)r->b) : "", r->c);
		break;
	case T_FILE:
		snprintf(buf, n, "%s: file %" PRId64 " size %" PRId64 " hash %016" PRIx64, w, r->b,
			 r->a, r->c);
		break;
	default:
		if (r->what == W_SLOTS) {
			int k = snprintf(buf, n, "slots (pages):");
			for (int s = 0; s < NSLOT && (size_t)k < n; s++)
				k += snprintf(buf + k, n - (size_t)k, " %u", (unsigned)(r->c >> (8 * s)) & 0xff);
		} else if (r->what == W_PREAD || r->what == W_PWRITE) {
			snprintf(buf, n, "%s skipped: the mapped buffer aliases the file range (a file copied "
				 "onto itself; not comparable with a separate cache)", w);
		} else if (r->what == W_MREMAP && r->a == 3) {
			snprintf(buf, n, "mremap skipped: no target window");
		} else if (r->what == W_MREMAP && r->a == 4) {
			snprintf(buf, n, "mremap skipped: a one-page range has no room for a hole");
		} else if (r->what == W_MREMAP) {
			snprintf(buf, n, "mremap skipped: the range may span VMAs whose merging is layout-dependent");
		} else if (r->what == W_SHADOW) {
			snprintf(buf, n, "fuzzer bug: slot %" PRId64 " page %" PRId64 " is in %" PRIu64
				 " shadow segments", r->a, r->b, r->c);
		} else if (r->what == W_HOLE) {
			snprintf(buf, n, "hole: slot %" PRId64 " pages %" PRId64 "..+%" PRIu64
				 " unmapped behind the fuzzer's back", r->a, r->b, r->c);
		} else if (r->what == W_MURKY) {
			snprintf(buf, n, "murky: wrote file %" PRId64 " bytes from %" PRId64
				 " (beyond EOF, in its last page) through a shared mapping", r->a, r->b);
		} else if (r->what == W_MURKYEXT) {
			snprintf(buf, n, "murky: file %" PRId64 " grows from %" PRId64 " to %" PRIu64
				 " over bytes written beyond EOF", r->a, r->b, r->c);
		} else {
			snprintf(buf, n, "%s %" PRId64 " %" PRId64 " %" PRIu64, w, r->a, r->b, r->c);
		}
		break;
	}
}

static bool rec_eq(const struct rec *x, const struct rec *y)
{
	return x->op == y->op && x->what == y->what && x->tag == y->tag && x->seq == y->seq &&
	       x->a == y->a && x->b == y->b && x->c == y->c;
}

static void print_op_recs(const struct logbuf *L, uint64_t n, uint32_t op, const char *who)
{
	char buf[256];
	int any = 0;
	fprintf(stderr, "  %s:\n", who);
	for (uint64_t i = 0; i < n; i++) {
		if (L->r[i].op != op)
			continue;
		rec_str(&L->r[i], buf, sizeof buf);
		fprintf(stderr, "    [%u] %s\n", L->r[i].seq, buf);
		any = 1;
	}
	if (!any)
		fprintf(stderr, "    (no records)\n");
}

static const char *last_slots(const struct logbuf *L, uint64_t n, uint32_t before, char *buf, size_t len)
{
	snprintf(buf, len, "slots (pages): all empty");
	for (uint64_t i = n; i-- > 0;)
		if (L->r[i].op < before && L->r[i].what == W_SLOTS) {
			rec_str(&L->r[i], buf, len);
			break;
		}
	return buf;
}

/* FUZZ_STATS=1: what the reference side saw, per kind of record. */
static void print_stats(const struct logbuf *L, uint64_t n)
{
	struct { uint64_t n, ok, err, sig; uint64_t errs[8]; } st[W__N];
	memset(st, 0, sizeof st);
	for (uint64_t i = 0; i < n; i++) {
		const struct rec *r = &L->r[i];
		if (r->what >= W__N)
			continue;
		st[r->what].n++;
		if (r->tag == T_SIG)
			st[r->what].sig++;
		else if (r->tag == T_RET && r->a < 0) {
			st[r->what].err++;
			for (int k = 0; k < 8; k++)
				if (st[r->what].errs[k] == 0 || st[r->what].errs[k] == (uint64_t)r->b) {
					st[r->what].errs[k] = (uint64_t)r->b;
					break;
				}
		} else
			st[r->what].ok++;
	}
	fprintf(stderr, "fuzz: records of side 1 (count, ok, failed, signals; errnos seen):\n");
	for (int w = 1; w < W__N; w++) {
		if (!st[w].n)
			continue;
		fprintf(stderr, "  %-32s %7" PRIu64 " %7" PRIu64 " %7" PRIu64 " %7" PRIu64 " ", what_name[w],
			st[w].n, st[w].ok, st[w].err, st[w].sig);
		for (int k = 0; k < 8 && st[w].errs[k]; k++)
			fprintf(stderr, " %s", strerrorname_np((int)st[w].errs[k]));
		fprintf(stderr, "\n");
	}
}

static int make_files(const char *dir, uint64_t seed, const uint64_t *sizes)
{
	char path[PATH_MAX];
	for (int f = 0; f < NFILE; f++) {
		snprintf(path, sizeof path, "%s/f%d", dir, f);
		int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			return -1;
		uint8_t *b = malloc(sizes[f] + 1);
		for (uint64_t i = 0; i < sizes[f]; i++)
			b[i] = data_byte(seed + (uint64_t)f, i);
		ssize_t w = sizes[f] ? write(fd, b, sizes[f]) : 0;
		free(b);
		close(fd);
		if (w != (ssize_t)sizes[f])
			return -1;
	}
	return 0;
}

static void rm_dir(const char *dir)
{
	char path[PATH_MAX];
	for (int f = 0; f < NFILE; f++) {
		snprintf(path, sizeof path, "%s/f%d", dir, f);
		unlink(path);
	}
	rmdir(dir);
}

/* Compare the files both sides left; -1 if equal, else the file index. */
static int compare_files(const char *d0, const char *d1, char *why, size_t n)
{
	char p0[PATH_MAX], p1[PATH_MAX];
	for (int f = 0; f < NFILE; f++) {
		snprintf(p0, sizeof p0, "%s/f%d", d0, f);
		snprintf(p1, sizeof p1, "%s/f%d", d1, f);
		FILE *a = fopen(p0, "rb"), *b = fopen(p1, "rb");
		if (!a || !b) {
			snprintf(why, n, "cannot open file %d", f);
			if (a)
				fclose(a);
			if (b)
				fclose(b);
			return f;
		}
		long off = 0;
		int ca, cb;
		do {
			ca = getc(a);
			cb = getc(b);
			off++;
		} while (ca == cb && ca != EOF);
		fclose(a);
		fclose(b);
		if (ca != cb) {
			snprintf(why, n, "file %d differs at byte %ld (kernel %d, other %d; -1 = EOF)",
				 f, off - 1, ca, cb);
			return f;
		}
	}
	return -1;
}

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *v = getenv(name);
	return v && *v ? strtoull(v, NULL, 0) : dflt;
}

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static unsigned parse_disabled(const char *v)
{
	unsigned m = 0;
	if (!v)
		return 0;
	for (int k = 0; k < OP__N; k++) {
		const char *p = v;
		size_t l = strlen(kind_name[k]);
		while ((p = strstr(p, kind_name[k]))) {
			if ((p == v || p[-1] == ',') && (p[l] == 0 || p[l] == ','))
				m |= 1u << k;
			p += l;
		}
	}
	return m;
}

#ifndef FUZZ_KERNEL_ONLY
/* Can ummap start here?  Asked in a throwaway child so that this process
 * never starts the engine before forking the sides. */
static int ummap_usable(char *why, size_t n)
{
	int pfd[2];
	if (pipe(pfd))
		return 1;
	pid_t p = fork();
	if (p == 0) {
		struct um_features f;
		memset(&f, 0, sizeof f);
		int r = um_features(&f);
		char m[200];
		int k = snprintf(m, sizeof m, "%s",
				 r != 0 ? "um_features failed" :
				 !f.uffd_ok ? strerror(f.uffd_errno) : "");
		if (write(pfd[1], m, (size_t)k) < 0) {
			/* nothing */
		}
		_exit(r == 0 && f.uffd_ok ? 0 : 1);
	}
	close(pfd[1]);
	ssize_t k = read(pfd[0], why, n - 1);
	why[k > 0 ? k : 0] = 0;
	close(pfd[0]);
	int st;
	if (p < 0 || waitpid(p, &st, 0) != p)
		return 1;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}
#endif

/* Does the running kernel move a range spanning several VMAs in one
 * mremap(MAYMOVE|FIXED) (Linux 6.17+)?  Asked of its own mappings, once;
 * FUZZ_MULTI=0 says no.  Printed once when it does not. */
static bool kernel_moves_multi(void)
{
	static int known = -1;
	if (known >= 0)
		return known;
	uint8_t *a = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	known = a != MAP_FAILED && mprotect(a + PG, PG, PROT_READ) == 0 &&
		mremap(a, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED, a + 2 * PG) != MAP_FAILED;
	if (a != MAP_FAILED)
		munmap(a, 4 * PG);
	if (!known)
		fprintf(stderr, "fuzz: this kernel does not move several VMAs in one mremap: "
			"multi-VMA moves are not generated\n");
	known = known && env_u64("FUZZ_MULTI", 1);
	return known;
}

static void fuzz_run(void);

Test(fuzz, differential)
{
	fuzz_run();
}

/* The same sequence with a budget of 16 pages (unless UMMAP_BUDGET says
 * otherwise), so that eviction and writeback run all along, under the
 * kernel's eye. */
Test(fuzz, differential_small_budget)
{
	setenv("UMMAP_BUDGET", "64K", 0);
	fuzz_run();
}

static void fuzz_run(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t seed = (uint64_t)ts.tv_sec * 1000003ULL ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
	seed = env_u64("FUZZ_SEED", seed);
	size_t nops = (size_t)env_u64("FUZZ_OPS", 5000);
	uint64_t stall = env_u64("FUZZ_STALL", 60);
	int64_t plant = getenv("FUZZ_PLANT") ? (int64_t)env_u64("FUZZ_PLANT", 0) : -1;
	const char *no = getenv("FUZZ_NO");
	const char *skip = getenv("FUZZ_SKIP");
	const char *coh = getenv("FUZZ_COHERENCE");
	unsigned disabled = parse_disabled(no);
	bool perturb_layout = false;
	g_coherence = !(coh && !strcmp(coh, "none"));
	g_dump = getenv("FUZZ_DUMP") ? (int64_t)env_u64("FUZZ_DUMP", 0) : -1;
	g_murky = env_u64("FUZZ_MURKY", 1) != 0;
	g_alias = env_u64("FUZZ_ALIAS", 0) != 0;
	g_multi = kernel_moves_multi();
#ifdef FUZZ_KERNEL_ONLY
	const char *mode = "kernel vs kernel (FUZZ_KERNEL_ONLY)";
	perturb_layout = env_u64("FUZZ_PERTURB", 1) != 0;
#else
	const char *mode = "kernel vs ummap";
	char why[256];
	if (!ummap_usable(why, sizeof why))
		cr_skip_test("ummap cannot start here (%s)", why);
#endif
	char replay[512];
	const char *budget = getenv("UMMAP_BUDGET");
	snprintf(replay, sizeof replay, "%s%s%sFUZZ_SEED=%" PRIu64 " FUZZ_OPS=%zu%s%s%s%s%s%s%s%s",
		 budget ? "UMMAP_BUDGET=" : "", budget ? budget : "", budget ? " " : "",
		 seed, nops, no ? " FUZZ_NO=" : "", no ? no : "", skip ? " FUZZ_SKIP=" : "", skip ? skip : "",
		 g_coherence ? "" : " FUZZ_COHERENCE=none", g_murky ? (g_alias ? " FUZZ_ALIAS=1" : "") :
		 (g_alias ? " FUZZ_MURKY=0 FUZZ_ALIAS=1" : " FUZZ_MURKY=0"),
		 plant >= 0 ? " FUZZ_PLANT=..." : "", g_multi ? "" : " FUZZ_MULTI=0");
	fprintf(stderr, "fuzz: %s, seed %" PRIu64 ", %zu ops%s (replay: %s)\n", mode, seed, nops,
		perturb_layout ? ", layout of side 2 perturbed" : "", replay);

	if (sysconf(_SC_PAGESIZE) != (long)PG)
		cr_skip_test("page size is not 4096");

	/* The ops, the files and the logs, all before forking. */
	struct op *ops = calloc(nops + 1, sizeof *ops);
	cr_assert_not_null(ops);
	gen_ops(seed, nops, ops, disabled, g_multi);
	/* FUZZ_SKIP=i,j-k: those ops do nothing (to minimise a failing run). */
	for (const char *p = getenv("FUZZ_SKIP"); p && *p;) {
		char *e;
		unsigned long a = strtoul(p, &e, 10), b = a;
		if (*e == '-')
			b = strtoul(e + 1, &e, 10);
		for (unsigned long i = a; i <= b && i < nops; i++)
			ops[i].kind = OP__N;
		p = *e ? e + 1 : e;
	}
	g_ops = ops;
	g_nops = nops;
	if (getenv("FUZZ_VERBOSE"))
		for (size_t i = 0; i < nops; i++) {
			char d[300];
			describe(&ops[i], d, sizeof d);
			fprintf(stderr, "op %zu: %s\n", i, d);
		}

	struct rng fr;
	rng_seed(&fr, seed ^ 0xf11e5ULL);
	uint64_t sizes[NFILE];
	for (int f = 0; f < NFILE; f++) {
		unsigned x = (unsigned)rnd(&fr, 100);
		sizes[f] = x < 10 ? 0 : x < 35 ? rnd(&fr, FILEMAX / PG + 1) * PG : rnd(&fr, FILEMAX + 1);
	}
	fprintf(stderr, "fuzz: initial file sizes %" PRIu64 " %" PRIu64 " %" PRIu64 "\n", sizes[0], sizes[1],
		sizes[2]);
	const char *tmp = getenv("TMPDIR");
	if (!tmp || !*tmp)
		tmp = "/tmp";
	char dir[2][1024];
	cr_assert_lt(strlen(tmp), 900, "TMPDIR too long");
	for (int i = 0; i < 2; i++) {
		snprintf(dir[i], sizeof dir[i], "%s/ummap-fuzz-%s-XXXXXX", tmp, i ? "b" : "a");
		cr_assert_not_null(mkdtemp(dir[i]), "mkdtemp: %s", strerror(errno));
		cr_assert_eq(make_files(dir[i], seed, sizes), 0, "creating files: %s", strerror(errno));
	}

	uint64_t cap = (uint64_t)(nops + 2) * RECS_PER_OP + 1024;
	size_t lsz = sizeof(struct logbuf) + cap * sizeof(struct rec);
	struct logbuf *L[2];
	for (int i = 0; i < 2; i++) {
		L[i] = mmap(NULL, lsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		cr_assert_neq(L[i], MAP_FAILED, "log mmap: %s", strerror(errno));
		L[i]->cap = cap;
		L[i]->cur_op = -1;
	}

	fflush(stdout);
	fflush(stderr);
	pid_t pid[2];
	double t0 = now_s();
	for (int i = 0; i < 2; i++) {
		pid[i] = fork();
		cr_assert_geq(pid[i], 0, "fork: %s", strerror(errno));
		if (pid[i] == 0)
			child_main(i, L[i], dir[i], seed, plant, perturb_layout);
	}

	/* Compare as the logs grow. */
	const char *side_name[2] = { "kernel", SIDE1_API.name };
	bool alive[2] = { true, true }, hung[2] = { false, false };
	int status[2] = { 0, 0 };
	uint64_t pos = 0, n[2] = { 0, 0 };
	int64_t last_op[2] = { -2, -2 };
	double last_change[2] = { t0, t0 };
	bool diverged = false;
	int64_t div_op = -1;
	uint64_t holes_seen = 0;
	for (;;) {
		for (int i = 0; i < 2; i++) {
			n[i] = __atomic_load_n(&L[i]->nrec, __ATOMIC_ACQUIRE);
			int64_t c = __atomic_load_n(&L[i]->cur_op, __ATOMIC_ACQUIRE);
			if (c != last_op[i]) {
				last_op[i] = c;
				last_change[i] = now_s();
			}
			if (alive[i] && waitpid(pid[i], &status[i], WNOHANG) == pid[i]) {
				alive[i] = false;
				n[i] = __atomic_load_n(&L[i]->nrec, __ATOMIC_ACQUIRE);
			}
		}
		uint64_t m = n[0] < n[1] ? n[0] : n[1];
		for (; pos < m && !diverged; pos++) {
			holes_seen += L[0]->r[pos].what == W_HOLE || L[0]->r[pos].what == W_SHADOW;
			if (!rec_eq(&L[0]->r[pos], &L[1]->r[pos])) {
				diverged = true;
				div_op = L[0]->r[pos].op < L[1]->r[pos].op ? L[0]->r[pos].op : L[1]->r[pos].op;
				break;
			}
		}
		if (!diverged && !alive[0] && !alive[1]) {
			if (n[0] != n[1] || pos < m) {
				diverged = true;
				div_op = pos < n[0] ? L[0]->r[pos].op : pos < n[1] ? L[1]->r[pos].op :
					 (int64_t)nops;
			}
			break;
		}
		if (!diverged && (!alive[0] || !alive[1])) {
			/* One side ended: the other's extra records are a divergence
			 * as soon as the ended side has nothing more to match. */
			int d = alive[0] ? 1 : 0;
			bool ok_end = __atomic_load_n(&L[d]->done, __ATOMIC_ACQUIRE) &&
				      WIFEXITED(status[d]) && WEXITSTATUS(status[d]) == 0;
			if (!ok_end && pos >= n[d] && n[1 - d] > n[d]) {
				diverged = true;
				div_op = L[1 - d]->r[pos].op;
			}
		}
		if (diverged) {
			/* Let both sides finish the op (or die), then stop them. */
			double until = now_s() + 10;
			while (now_s() < until) {
				bool past = true;
				for (int i = 0; i < 2; i++) {
					if (alive[i] && waitpid(pid[i], &status[i], WNOHANG) == pid[i])
						alive[i] = false;
					if (alive[i] && __atomic_load_n(&L[i]->cur_op, __ATOMIC_ACQUIRE) <= div_op)
						past = false;
				}
				if (past)
					break;
				usleep(10000);
			}
			for (int i = 0; i < 2; i++) {
				if (alive[i]) {
					kill(pid[i], SIGKILL);
					waitpid(pid[i], &status[i], 0);
					alive[i] = false;
				}
				n[i] = __atomic_load_n(&L[i]->nrec, __ATOMIC_ACQUIRE);
			}
			break;
		}
		double t = now_s();
		for (int i = 0; i < 2; i++)
			if (alive[i] && t - last_change[i] > (double)stall) {
				hung[i] = true;
				kill(pid[i], SIGKILL);
				waitpid(pid[i], &status[i], 0);
				alive[i] = false;
			}
		usleep(2000);
	}
	double elapsed = now_s() - t0;

	char why_f[256] = "";
	int fdiff = diverged ? -1 : compare_files(dir[0], dir[1], why_f, sizeof why_f);
	/* Equal logs prove nothing if a side stopped early (both killed from
	 * outside, or both hit the same fuzzer limit). */
	bool unfinished = false;
	for (int i = 0; i < 2; i++)
		unfinished |= !L[i]->done || !WIFEXITED(status[i]) || WEXITSTATUS(status[i]) != 0;
	bool fail = diverged || fdiff >= 0 || holes_seen || unfinished;

	for (int i = 0; i < 2; i++) {
		const char *how = hung[i] ? "hung (killed)" : "";
		char sb[64] = "";
		if (!hung[i] && WIFSIGNALED(status[i]))
			snprintf(sb, sizeof sb, "killed by signal %d", WTERMSIG(status[i]));
		else if (!hung[i] && WIFEXITED(status[i]) && WEXITSTATUS(status[i]))
			snprintf(sb, sizeof sb, "exit %d", WEXITSTATUS(status[i]));
		char at[48] = "";
		if (!L[i]->done)
			snprintf(at, sizeof at, " (did not finish: stopped in op %" PRId64 ")",
				 __atomic_load_n(&L[i]->cur_op, __ATOMIC_ACQUIRE));
		fprintf(stderr, "fuzz: side %d (%s): %" PRIu64 " records, %.3f s%s%s%s%s%s%s\n", i + 1,
			side_name[i], n[i], (double)L[i]->elapsed_ns / 1e9,
			*how || *sb ? ", " : "", how, sb, L[i]->msg[0] ? ": " : "", L[i]->msg, at);
	}

	if (diverged) {
		char d[300], sl[200];
		uint32_t op = (uint32_t)div_op;
		fprintf(stderr, "\nfuzz: DIVERGENCE at op %" PRId64 " (seed %" PRIu64 ")\n", div_op, seed);
		if (op < nops) {
			describe(&ops[op], d, sizeof d);
			fprintf(stderr, "  op %u: %s\n", op, d);
		} else {
			fprintf(stderr, "  op %u: the end of the run: munmap of every window, then the files\n", op);
		}
		fprintf(stderr, "  before it: %s\n", last_slots(L[0], n[0], op, sl, sizeof sl));
		fprintf(stderr, "  records of op %u:\n", op);
		for (int i = 0; i < 2; i++)
			print_op_recs(L[i], n[i], op, side_name[i]);
		fprintf(stderr, "  the ops before it:\n");
		for (uint32_t j = op > 12 ? op - 12 : 0; j < op && j < nops; j++) {
			describe(&ops[j], d, sizeof d);
			fprintf(stderr, "    op %u: %s\n", j, d);
		}
		/* Murky-area events that precede it (the last 10). */
		int nm = 0, shown = 0;
		for (uint64_t i = 0; i < n[0]; i++)
			nm += L[0]->r[i].op <= op && (L[0]->r[i].what == W_MURKY || L[0]->r[i].what == W_MURKYEXT);
		for (uint64_t i = 0; i < n[0]; i++) {
			const struct rec *r = &L[0]->r[i];
			if (r->op > op || (r->what != W_MURKY && r->what != W_MURKYEXT))
				continue;
			if (shown++ == 0)
				fprintf(stderr, "  murky-area events before it (writes beyond EOF in the last "
					"partial page; the kernel's behaviour there is filesystem-specific)%s:\n",
					nm > 10 ? ", the last 10" : "");
			if (shown <= nm - 10)
				continue;
			rec_str(r, d, sizeof d);
			fprintf(stderr, "    op %u: %s\n", r->op, d);
		}
		if (nm)
			fprintf(stderr, "  NOTE: %d murky-area event(s) precede this divergence; check whether "
				"it involves those bytes before calling it a bug\n", nm);
		fprintf(stderr, "  replay: %s\n", replay);
		fprintf(stderr, "  directories kept: %s (kernel) %s (%s)\n", dir[0], dir[1], side_name[1]);
	} else if (fdiff >= 0) {
		fprintf(stderr, "\nfuzz: DIVERGENCE in the final files: %s (seed %" PRIu64 ")\n  replay: %s\n"
			"  directories kept: %s %s\n", why_f, seed, replay, dir[0], dir[1]);
	} else if (holes_seen) {
		fprintf(stderr, "\nfuzz: the reference side saw %" PRIu64 " hole(s) in its own windows or "
			"shadow errors: a fuzzer bug (seed %" PRIu64 ")\n", holes_seen, seed);
		for (uint64_t i = 0; i < n[0]; i++)
			if (L[0]->r[i].what == W_HOLE || L[0]->r[i].what == W_SHADOW) {
				char d[300];
				rec_str(&L[0]->r[i], d, sizeof d);
				fprintf(stderr, "  first at op %u: %s\n", L[0]->r[i].op, d);
				break;
			}
	} else if (unfinished) {
		fprintf(stderr, "\nfuzz: a side did not finish the run (see its status above; seed %" PRIu64
			")\n  replay: %s\n", seed, replay);
	} else {
		fprintf(stderr, "fuzz: no divergence in %zu ops (%" PRIu64 " records per side, %.2f s "
			"wall)\n", nops, n[0], elapsed);
	}
	if (getenv("FUZZ_STATS"))
		print_stats(L[0], n[0]);
	if (!fail && !getenv("FUZZ_KEEP")) {
		rm_dir(dir[0]);
		rm_dir(dir[1]);
	}
	for (int i = 0; i < 2; i++)
		munmap(L[i], lsz);
	free(ops);
	cr_assert(!fail, "differential fuzzer: divergence (seed %" PRIu64 ", see above; replay: %s)",
		  seed, replay);
}

/* ------------------------------------------------------------------ */
/*
 * Concurrent map/read (fuzz/concurrent_map_read).  A seeded sequence of
 * MAP_FIXED maps, munmaps, mremap moves and resizes of shared mappings of
 * one file, stores and reads runs in a fixed arena (a low range the
 * kernel's top-down placement never uses, so nothing else lands there)
 * twice, in a child with the kernel's calls and in one with ummap's, while
 * a second thread of each child reads words all over the arena.
 *
 * What a reader may see.  Every word the file ever holds is a stamp of
 * (file page, word index, version): the file starts at version 0 and a
 * store rewrites a whole page with that page's next version.  So a word
 * read anywhere, at any time, must be a stamp with the right word index, of
 * a page of the file, of a version already begun -- or the read faults.
 * Zeros, or bytes of another word, are bytes nobody wrote.  The main thread
 * publishes which file page each arena page maps (a table, changed only
 * inside a seqlock's odd phase around each call); a read made wholly while
 * the table stood still must fault where the table says unmapped and must
 * see exactly that file page, at a version between the last store finished
 * before the read and the last begun after it.
 *
 * Differential: the main thread's results (returns, errno, the words it
 * reads, the faults it takes) are compared between the two children; at the
 * end each child unmaps the arena and checks every word of the file is the
 * stamp of its page's last version (no store lost).
 *
 *   FUZZ_CONC_OPS=n    operations (default 2000); FUZZ_SEED and FUZZ_MULTI
 *                      as above
 */
#include <pthread.h>

#define C_PAGES 32
#define C_FPAGES 24
#define C_ARENA ((uintptr_t)0x30000000UL)
#define C_MAXN 8

enum { C_MAP, C_UNMAP, C_MOVE, C_RESIZE, C_WRITE, C_READ, C_MSYNC, C__N };
static const char *const cop_name[C__N] = {
	"map", "unmap", "move", "resize", "store page", "read word", "msync",
};
static const unsigned cop_weight[C__N] = { 20, 8, 12, 6, 30, 20, 4 };

struct cop {
	uint8_t kind, a, b, n, m;
	uint16_t fp, w;
};

struct conc {
	/* the main thread's log, compared between the sides */
	uint64_t nlog, cap;
	int32_t done, cur_op;
	/* what the reader saw */
	uint64_t reads, stable, faults, bad, final_bad;
	char why[256];
	/* the child's own state, shared by its two threads */
	const struct api *api;
	int fd, stop;
	uint64_t seq;
	int32_t table[C_PAGES];		/* file page at each arena page, -1 */
					/* (C_FPAGES and above: beyond EOF) */
	uint32_t started[C_FPAGES], finished[C_FPAGES];
	uint64_t log[];
};

/* Does a table entry name a page of the file (not beyond its end)? */
static bool c_data(int32_t pg) { return pg >= 0 && pg < C_FPAGES; }

static uint64_t stamp(uint32_t pg, uint32_t w, uint32_t v)
{
	return 0x5a5aULL << 48 | (uint64_t)v << 20 | (uint64_t)pg << 9 | w;
}

/* Ranges are clipped to the arena when run. */
static void describe_cop(const struct cop *c, char *buf, size_t n)
{
	int k = snprintf(buf, n, "%s arena page %u", cop_name[c->kind], c->a);
	if (k < 0 || (size_t)k >= n)
		return;
	if (c->kind == C_MAP)
		snprintf(buf + k, n - (size_t)k, " +%u pages: file pages from %u", c->n, c->fp);
	else if (c->kind == C_MOVE)
		snprintf(buf + k, n - (size_t)k, " +%u pages to arena page %u", c->n, c->b);
	else if (c->kind == C_RESIZE)
		snprintf(buf + k, n - (size_t)k, " from %u to %u pages", c->n, c->m);
	else if (c->kind == C_READ)
		snprintf(buf + k, n - (size_t)k, " word %u", c->w);
	else if (c->kind != C_WRITE)
		snprintf(buf + k, n - (size_t)k, " +%u pages", c->n);
}

static void gen_cops(uint64_t seed, size_t nops, struct cop *ops)
{
	struct rng R;
	rng_seed(&R, seed ^ 0xc0c0ULL);
	for (size_t i = 0; i < nops; i++) {
		struct cop *c = &ops[i];
		c->kind = (uint8_t)pick_w(&R, cop_weight, C__N);
		c->a = (uint8_t)rnd(&R, C_PAGES);
		c->b = (uint8_t)rnd(&R, C_PAGES);
		c->n = (uint8_t)(1 + rnd(&R, C_MAXN));
		c->m = (uint8_t)(1 + rnd(&R, C_MAXN));
		c->fp = (uint16_t)rnd(&R, C_FPAGES);
		c->w = (uint16_t)rnd(&R, PG / 8);
	}
}

static void clog3(struct conc *C, uint64_t a, uint64_t b, uint64_t c)
{
	if (C->nlog + 3 > C->cap)
		_exit(3);
	C->log[C->nlog] = a;
	C->log[C->nlog + 1] = b;
	C->log[C->nlog + 2] = c;
	__atomic_store_n(&C->nlog, C->nlog + 3, __ATOMIC_RELEASE);
}

/* Reader's and main thread's guard: SIGSEGV/SIGBUS jump back, per thread. */
static __thread sigjmp_buf *c_jb;

static void conc_fault(int sig, siginfo_t *si, void *uc)
{
	(void)si;
	(void)uc;
	if (!c_jb)
		_exit(98);
	siglongjmp(*c_jb, sig);
}

/* Load the word at p; *sig is the signal taken instead (0 = none). */
static uint64_t guarded_load(const uint64_t *p, int *sig)
{
	sigjmp_buf jb;
	uint64_t v = 0;
	c_jb = &jb;
	int s = sigsetjmp(jb, 1);
	if (s == 0)
		v = __atomic_load_n(p, __ATOMIC_RELAXED);
	c_jb = NULL;
	*sig = s;
	return v;
}

static void reader_bad(struct conc *C, const char *fmt, ...)
{
	if (C->bad++ == 0) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(C->why, sizeof C->why, fmt, ap);
		va_end(ap);
	}
}

/* One read of word w of arena page a, checked as explained above. */
static void reader_once(struct conc *C, uint32_t a, uint32_t w)
{
	uint64_t s1 = __atomic_load_n(&C->seq, __ATOMIC_ACQUIRE);
	int32_t pg = __atomic_load_n(&C->table[a], __ATOMIC_RELAXED);
	pg = c_data(pg) ? pg : -1;
	uint32_t lo = pg >= 0 ? __atomic_load_n(&C->finished[pg], __ATOMIC_ACQUIRE) : 0;
	int sig;
	uint64_t x = guarded_load((const uint64_t *)(C_ARENA + a * PG + w * 8), &sig);
	__atomic_thread_fence(__ATOMIC_ACQUIRE);
	uint64_t s2 = __atomic_load_n(&C->seq, __ATOMIC_RELAXED);
	int op = __atomic_load_n(&C->cur_op, __ATOMIC_RELAXED);
	bool stable = s1 == s2 && !(s1 & 1);
	uint32_t xpg = (uint32_t)(x >> 9) & 2047, xv = (uint32_t)(x >> 20) & 0xfffffff;
	C->reads++;
	C->stable += stable;
	C->faults += sig != 0;
	if (sig) {
		if (stable && pg >= 0)
			reader_bad(C, "op %d: arena page %u (file page %d) faulted (signal %d)", op, a, pg, sig);
		return;
	}
	if (x >> 48 != 0x5a5a || (x & 511) != w || xpg >= C_FPAGES ||
	    xv > __atomic_load_n(&C->started[xpg], __ATOMIC_ACQUIRE)) {
		reader_bad(C, "op %d: arena page %u word %u reads %#018" PRIx64 ": nobody wrote that",
			   op, a, w, x);
		return;
	}
	if (!stable)
		return;
	uint32_t hi = pg >= 0 ? __atomic_load_n(&C->started[pg], __ATOMIC_ACQUIRE) : 0;
	if (pg < 0 || (int32_t)xpg != pg || xv < lo || xv > hi)
		reader_bad(C, "op %d: arena page %u word %u reads file page %u version %u; the table says "
			   "file page %d, versions %u..%u", op, a, w, xpg, xv, pg, lo, hi);
}

static void *reader_main(void *arg)
{
	struct conc *C = arg;
	struct rng R;
	rng_seed(&R, (uint64_t)(uintptr_t)arg ^ 0x7eadULL);
	while (!__atomic_load_n(&C->stop, __ATOMIC_ACQUIRE))
		reader_once(C, (uint32_t)rnd(&R, C_PAGES), (uint32_t)rnd(&R, PG / 8));
	return NULL;
}

/* The seqlock around a call that changes what the arena maps. */
static void c_begin(struct conc *C) { __atomic_store_n(&C->seq, C->seq + 1, __ATOMIC_RELEASE); }
static void c_end(struct conc *C) { __atomic_store_n(&C->seq, C->seq + 1, __ATOMIC_RELEASE); }

static void c_set(struct conc *C, uint32_t a, int32_t pg)
{
	__atomic_store_n(&C->table[a], pg, __ATOMIC_RELAXED);
}

static uint8_t *c_addr(uint32_t a) { return (uint8_t *)(C_ARENA + a * PG); }

/* Without multi-VMA moves (FUZZ_MULTI=0 or an older kernel), only ranges
 * mapping consecutive file pages (one VMA for sure) are moved. */
static bool c_movable(const struct conc *C, uint32_t a, uint32_t n)
{
	for (uint32_t i = 0; i < n && !g_multi; i++)
		if (C->table[a + i] < 0 || C->table[a + i] != C->table[a] + (int32_t)i)
			return false;
	return true;
}

/* mremap(MAYMOVE|FIXED) of [a, a+n) to b: gaps keep the destination's. */
static void c_move(struct conc *C, uint32_t a, uint32_t b, uint32_t n)
{
	if (!c_movable(C, a, n)) {
		clog3(C, C_MOVE, 1, 1);
		return;
	}
	void *r = C->api->mremap(c_addr(a), n * PG, n * PG, MREMAP_MAYMOVE | MREMAP_FIXED, c_addr(b));
	clog3(C, C_MOVE, r == MAP_FAILED ? (uint64_t)-errno : (uint64_t)((uint8_t *)r - c_addr(b)), 0);
	if (r == MAP_FAILED)
		return;
	int32_t src[C_MAXN];
	for (uint32_t i = 0; i < n; i++)
		src[i] = C->table[a + i];
	for (uint32_t i = 0; i < n; i++)
		c_set(C, a + i, -1);
	for (uint32_t i = 0; i < n; i++)
		if (src[i] >= 0)
			c_set(C, b + i, src[i]);
}

/* mremap in place from n to m pages: growth continues the file. */
static void c_resize(struct conc *C, uint32_t a, uint32_t n, uint32_t m)
{
	void *r = C->api->mremap(c_addr(a), n * PG, m * PG, 0, NULL);
	clog3(C, C_RESIZE, r == MAP_FAILED ? (uint64_t)-errno : (uint64_t)((uint8_t *)r - c_addr(a)), 0);
	if (r == MAP_FAILED)
		return;
	for (uint32_t i = m; i < n; i++)
		c_set(C, a + i, -1);
	for (uint32_t i = n; i < m; i++)
		c_set(C, a + i, C->table[a + n - 1] + (int32_t)(i - n + 1));
}

/* Store the next version of the file page at arena page a (or the first
 * mapped one after it). */
static void c_store(struct conc *C, uint32_t a)
{
	uint32_t k = 0;
	while (k < C_PAGES && !c_data(C->table[(a + k) % C_PAGES]))
		k++;
	if (k == C_PAGES) {
		clog3(C, C_WRITE, 0, 0);
		return;
	}
	/* (A fresh variable: one changed before sigsetjmp may be clobbered.) */
	const uint32_t at = (a + k) % C_PAGES;
	uint32_t pg = (uint32_t)C->table[at], v = C->started[pg] + 1;
	__atomic_store_n(&C->started[pg], v, __ATOMIC_RELEASE);
	sigjmp_buf jb;
	uint64_t *p = (uint64_t *)c_addr(at);
	c_jb = &jb;
	int sig = sigsetjmp(jb, 1);
	for (uint32_t w = 0; !sig && w < PG / 8; w++)
		__atomic_store_n(&p[w], stamp(pg, w, v), __ATOMIC_RELAXED);
	c_jb = NULL;
	if (!sig)
		__atomic_store_n(&C->finished[pg], v, __ATOMIC_RELEASE);
	clog3(C, C_WRITE, at << 16 | pg, (uint64_t)sig << 32 | v);
}

static void c_exec(struct conc *C, const struct cop *c)
{
	uint32_t a = c->a, n = c->n < C_PAGES - a ? c->n : C_PAGES - a;
	uint32_t b = c->b < C_PAGES - n ? c->b : C_PAGES - n, m = c->m < C_PAGES - a ? c->m : C_PAGES - a;
	uint32_t fp = c->fp;
	int sig, r;
	switch (c->kind) {
	case C_MAP: {
		c_begin(C);
		void *p = C->api->mmap(c_addr(a), n * PG, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED,
				       C->fd, (off_t)(fp * PG));
		if (p != MAP_FAILED)
			for (uint32_t i = 0; i < n; i++)
				c_set(C, a + i, (int32_t)(fp + i));
		c_end(C);
		clog3(C, C_MAP, p == MAP_FAILED ? (uint64_t)-errno : (uint64_t)((uint8_t *)p - c_addr(a)), 0);
		break;
	}
	case C_UNMAP:
		c_begin(C);
		r = C->api->munmap(c_addr(a), n * PG);
		for (uint32_t i = 0; r == 0 && i < n; i++)
			c_set(C, a + i, -1);
		c_end(C);
		clog3(C, C_UNMAP, r ? (uint64_t)-errno : 0, 0);
		break;
	case C_MOVE:
		c_begin(C);
		c_move(C, a, b, n);
		c_end(C);
		break;
	case C_RESIZE:
		c_begin(C);
		c_resize(C, a, n, m);
		c_end(C);
		break;
	case C_WRITE:
		c_store(C, a);
		break;
	case C_READ: {
		uint64_t x = guarded_load((const uint64_t *)(c_addr(a) + c->w * 8), &sig);
		clog3(C, C_READ, (uint64_t)sig, x);
		break;
	}
	default:
		r = C->api->msync(c_addr(a), n * PG, MS_SYNC);
		clog3(C, C_MSYNC, r ? (uint64_t)-errno : 0, 0);
		break;
	}
}

/* After the run: every word of the file is its page's last stamp. */
static void c_final(struct conc *C)
{
	int r = C->api->munmap(c_addr(0), C_PAGES * PG);
	clog3(C, C_UNMAP, r ? (uint64_t)-errno : 0, 1);
	uint64_t buf[PG / 8];
	for (uint32_t pg = 0; pg < C_FPAGES; pg++) {
		ssize_t k = pread(C->fd, buf, PG, (off_t)(pg * PG));
		for (uint32_t w = 0; w < PG / 8; w++) {
			if (k == (ssize_t)PG && buf[w] == stamp(pg, w, C->finished[pg]))
				continue;
			if (C->final_bad++ == 0 && !C->why[0])
				snprintf(C->why, sizeof C->why, "file page %u word %u is %#018" PRIx64
					 " after the run, not its last store (version %u)", pg, w,
					 k == (ssize_t)PG ? buf[w] : 0, C->finished[pg]);
		}
	}
}

static void conc_child(struct conc *C, const char *path, const struct cop *ops, size_t nops)
{
	struct sigaction sa;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = conc_fault;
	sa.sa_flags = SA_SIGINFO;
	if (sigaction(SIGSEGV, &sa, NULL) || sigaction(SIGBUS, &sa, NULL))
		_exit(2);
	C->fd = open(path, O_RDWR);
	for (uint32_t a = 0; a < C_PAGES; a++)
		C->table[a] = -1;
	if (C->fd < 0 || msync(c_addr(0), C_PAGES * PG, MS_ASYNC) == 0) /* the arena must be free */
		_exit(2);
	pthread_t th;
	if (pthread_create(&th, NULL, reader_main, C))
		_exit(2);
	for (size_t i = 0; i < nops; i++) {
		__atomic_store_n(&C->cur_op, (int32_t)i, __ATOMIC_RELAXED);
		c_exec(C, &ops[i]);
	}
	__atomic_store_n(&C->stop, 1, __ATOMIC_RELEASE);
	pthread_join(th, NULL);
	c_final(C);
	__atomic_store_n(&C->done, 1, __ATOMIC_RELEASE);
	_exit(0);
}

static int conc_file(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	uint64_t buf[PG / 8];
	bool ok = fd >= 0;
	for (uint32_t pg = 0; ok && pg < C_FPAGES; pg++) {
		for (uint32_t w = 0; w < PG / 8; w++)
			buf[w] = stamp(pg, w, 0);
		ok = write(fd, buf, PG) == (ssize_t)PG;
	}
	if (fd >= 0)
		close(fd);
	return ok ? 0 : -1;
}

/* The first op whose main-thread records differ, or -1. */
static int64_t conc_compare(struct conc *const C[2])
{
	uint64_t n = C[0]->nlog < C[1]->nlog ? C[0]->nlog : C[1]->nlog;
	for (uint64_t i = 0; i < n; i += 3)
		if (memcmp(&C[0]->log[i], &C[1]->log[i], 3 * sizeof(uint64_t)))
			return (int64_t)(i / 3);
	return C[0]->nlog == C[1]->nlog ? -1 : (int64_t)(n / 3);
}

static void conc_report(struct conc *const C[2], const struct cop *ops, size_t nops, int64_t div)
{
	const char *const side[2] = { "kernel", SIDE1_API.name };
	char d[200];
	for (int i = 0; i < 2; i++)
		fprintf(stderr, "fuzz: concurrent, side %d (%s): %s, %" PRIu64 " reads (%" PRIu64 " while the "
			"table stood still, %" PRIu64 " faults), %" PRIu64 " bad, %" PRIu64 " bad words in the "
			"file%s%s\n", i + 1, side[i], C[i]->done ? "finished" : "DID NOT FINISH", C[i]->reads,
			C[i]->stable, C[i]->faults, C[i]->bad, C[i]->final_bad, C[i]->why[0] ? "; first: " : "",
			C[i]->why);
	if (div < 0)
		return;
	fprintf(stderr, "fuzz: concurrent: DIVERGENCE of the main thread at op %" PRId64 "\n", div);
	for (int64_t j = div > 12 ? div - 12 : 0; j <= div && j < (int64_t)nops; j++) {
		describe_cop(&ops[j], d, sizeof d);
		fprintf(stderr, "    op %" PRId64 ": %s\n", j, d);
	}
	for (int i = 0; i < 2; i++)
		if ((uint64_t)div * 3 + 2 < C[i]->nlog)
			fprintf(stderr, "  %s: %" PRId64 " %#" PRIx64 " %#" PRIx64 "\n", side[i],
				(int64_t)C[i]->log[div * 3], C[i]->log[div * 3 + 1], C[i]->log[div * 3 + 2]);
}

Test(fuzz, concurrent_map_read)
{
#ifndef FUZZ_KERNEL_ONLY
	char why[256];
	if (!ummap_usable(why, sizeof why))
		cr_skip_test("ummap cannot start here (%s)", why);
#endif
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t seed = env_u64("FUZZ_SEED", (uint64_t)ts.tv_nsec ^ (uint64_t)ts.tv_sec);
	size_t nops = (size_t)env_u64("FUZZ_CONC_OPS", 2000);
	g_multi = kernel_moves_multi();
	char replay[128];
	snprintf(replay, sizeof replay, "FUZZ_SEED=%" PRIu64 " FUZZ_CONC_OPS=%zu%s", seed, nops,
		 g_multi ? "" : " FUZZ_MULTI=0");
	fprintf(stderr, "fuzz: concurrent map/read, seed %" PRIu64 ", %zu ops (replay: %s)\n", seed, nops,
		replay);
	struct cop *ops = calloc(nops, sizeof *ops);
	cr_assert_not_null(ops);
	gen_cops(seed, nops, ops);
	const char *tmp = getenv("TMPDIR");
	char path[2][1024];
	struct conc *C[2];
	size_t sz = sizeof(struct conc) + (nops + 2) * 3 * sizeof(uint64_t);
	pid_t pid[2];
	for (int i = 0; i < 2; i++) {
		snprintf(path[i], sizeof path[i], "%s/ummap-fuzz-conc-%d-%d", tmp && *tmp ? tmp : "/tmp",
			 (int)getpid(), i);
		cr_assert_eq(conc_file(path[i]), 0, "creating %s: %s", path[i], strerror(errno));
		C[i] = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		cr_assert_neq(C[i], MAP_FAILED);
		C[i]->cap = (nops + 2) * 3;
		C[i]->api = i ? &SIDE1_API : &kernel_api;
	}
	fflush(stderr);
	for (int i = 0; i < 2; i++) {
		pid[i] = fork();
		cr_assert_geq(pid[i], 0);
		if (pid[i] == 0)
			conc_child(C[i], path[i], ops, nops);
	}
	for (int i = 0; i < 2; i++)
		waitpid(pid[i], NULL, 0);
	int64_t div = conc_compare(C);
	conc_report(C, ops, nops, div);
	bool fail = div >= 0;
	for (int i = 0; i < 2; i++) {
		fail |= !C[i]->done || C[i]->bad || C[i]->final_bad || !C[i]->stable;
		unlink(path[i]);
	}
	cr_assert(!fail, "concurrent map/read: see above (replay: %s)", replay);
	for (int i = 0; i < 2; i++)
		munmap(C[i], sz);
	free(ops);
}
