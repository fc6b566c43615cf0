/*
 * engine.c - starting the engine, its lock and threads, and the kernel
 * features it found.
 *
 * The engine starts on the first um_* call: the userfaultfd handshake (once
 * to learn what the kernel offers, once to ask for it), the inotify
 * instance, the fault thread and the writeback thread, and an exit handler
 * that writes every dirty page back when the process exits normally.  If
 * it cannot start (no userfaultfd permission, a kernel without MINOR faults
 * on shared memory), um_mmap says why once on stderr and the um_* calls are
 * served by the kernel's own.  The settings' defaults and the environment
 * are read here; the calls that change them are config.c, fork is fork.c.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

struct um_engine um = { .lock = PTHREAD_MUTEX_INITIALIZER, .uffd = -1, .inotify = -1, .wake_fd = -1,
			 .svc = -1, .fork_pipe = { -1, -1 } };

static pthread_once_t once = PTHREAD_ONCE_INIT;

/* "512M", "2G", "4096", "64k": bytes, or 0 if malformed. */
uint64_t um_parse_size(const char *s)
{
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return 0;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	case 't': case 'T': v <<= 40; end++; break;
	}
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	return *end ? 0 : v;
}

bool um_valid_fault_size(uint64_t v)
{
	return v >= UM_PAGE && v <= (2UL << 20) && !(v & (v - 1));
}

static void env_size(const char *name, uint64_t *dst, bool (*ok)(uint64_t))
{
	const char *s = getenv(name);
	if (!s)
		return;
	uint64_t v = um_parse_size(s);
	if (!v || (ok && !ok(v)))
		fprintf(stderr, "ummap: ignoring %s=%s (not a valid size)\n", name, s);
	else
		*dst = v;
}

static void um_defaults(void)
{
	uint64_t phys = (uint64_t)sysconf(_SC_PHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
	um.cfg.budget = phys / 4;
	/* 4 KiB, measured (512 MiB file, 64 MiB budget): random reads cost
	 * 82, 205, 769 and 1745 us per access at 4, 16, 64 and 256 KiB faults
	 * (the time goes into allocating and filling pages that are not used),
	 * while a sequential scan took the same time at every size, since
	 * readahead grows the unit there. */
	um.cfg.fault_size = 4096;
	um.cfg.readahead_max = 8UL << 20; /* the kernel's read-ahead here */
	um.cfg.writeback_ms = 30000;	  /* dirty_expire_centisecs */
	env_size("UMMAP_BUDGET", &um.cfg.budget, NULL);
	env_size("UMMAP_FAULT_SIZE", &um.cfg.fault_size, um_valid_fault_size);
	const char *ra = getenv("UMMAP_READAHEAD");
	if (ra && !strcmp(ra, "0"))
		um.cfg.readahead_max = 0;
	else
		env_size("UMMAP_READAHEAD", &um.cfg.readahead_max, NULL);
	const char *wb = getenv("UMMAP_WRITEBACK_MS");
	if (wb && atoll(wb) > 0)
		um.cfg.writeback_ms = (uint64_t)atoll(wb);
}

static void at_exit(void)
{
	um_lock();
	if (um.ready)
		wb_all();
	um_unlock();
}

static int start(void)
{
	int err = 0;
	uint64_t offered;
	int fd = sys_uffd_open(&err);
	if (fd < 0)
		return -err;
	int e = sys_uffd_api(fd, 0, &offered);
	close(fd);
	if (e)
		return e;
	if (!(offered & UFFD_FEATURE_MINOR_SHMEM) || !(offered & UFFD_FEATURE_MISSING_SHMEM))
		return -ENOTSUP;
	um.uffd = sys_uffd_open(&err);
	if (um.uffd < 0)
		return -err;
	e = sys_uffd_api(um.uffd, offered & UM_WANT, &um.features);
	if (e)
		return e;
	/* Write-protect tracking of shmem needs UFFDIO_CONTINUE_MODE_WP (Linux
	 * 6.3), which has no feature bit; WP_UNPOPULATED came in 6.4. */
	um.wp = (um.features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM) && (offered & UFFD_FEATURE_WP_UNPOPULATED);
	um.inotify = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (um.inotify < 0)
		return -errno;
	if ((e = um_signal_install()) || (e = fault_start()) || (e = wb_start()))
		return e;
	atexit(at_exit);
	return 0;
}

/*
 * Under the engine's lock, so that a fork() in another thread (whose
 * handlers take the lock) sees the engine either not started or running.
 * A child forked just after can find pthread_once still in progress and run
 * this again: its engine is then decided already (fork_child).
 */
static void init_once(void)
{
	um_lock();
	if (um.ready || um.init_err) {
		um_unlock();
		return;
	}
	um_defaults();
	int e = start();
	if (e) {
		um.init_err = -e;
		fprintf(stderr,
			"ummap: cannot start (%s); mappings are served by the kernel's mmap. "
			"Run `ummap check` for what to do.\n", strerror(-e));
	} else {
		um.ready = true;
	}
	um_unlock();
}

/*
 * The fork handlers, registered before the application's (a constructor of
 * the highest priority an application may use): handlers registered earlier
 * run their prepare after ummap's and their child handler before ummap's,
 * that is while the engine's lock is held and private memory is
 * write-protected, or in a child whose private memory is still the parent's.
 * They do nothing until the engine has started.
 */
__attribute__((constructor(101))) static void register_fork_handlers(void)
{
	pthread_atfork(fork_prepare, fork_parent, fork_child);
}

int um_init(void)
{
	pthread_once(&once, init_once);
	return um.ready ? 0 : -um.init_err;
}

int um_features(struct um_features *f)
{
	memset(f, 0, sizeof *f);
	int err = 0;
	int fd = sys_uffd_open(&err);
	if (fd < 0) {
		f->uffd_errno = err;
		return 0;
	}
	int e = sys_uffd_api(fd, 0, &f->features);
	close(fd);
	if (e) {
		f->uffd_errno = -e;
		return 0;
	}
	f->uffd_ok = 1;
	f->minor_shmem = !!(f->features & UFFD_FEATURE_MINOR_SHMEM);
	f->wp_shmem = !!(f->features & UFFD_FEATURE_WP_HUGETLBFS_SHMEM);
	f->thread_id = !!(f->features & UFFD_FEATURE_THREAD_ID);
	f->poison = !!(f->features & UFFD_FEATURE_POISON);
	return 0;
}
