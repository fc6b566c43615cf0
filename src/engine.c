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
 * served by the kernel's own.  Settings are config.c, fork is fork.c.
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

void um_lock(void) { pthread_mutex_lock(&um.lock); }
void um_unlock(void)
{
	cache_unlock_all();
	pthread_mutex_unlock(&um.lock);
}

/*
 * An engine thread, with every signal blocked: an application's handler
 * run there could call um_* (the thread may hold um.lock) or touch a
 * mapping (the fault thread would wait for itself).
 */
int um_thread_start(pthread_t *t, void *(*fn)(void *))
{
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int e = pthread_create(t, NULL, fn, NULL);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -e;
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
