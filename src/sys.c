/*
 * sys.c - the system calls the engine makes, issued directly so that an
 * LD_PRELOAD shim interposing the libc symbols can never recurse into itself.
 */
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <fcntl.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "compat.h"
#include "internal.h"

void *sys_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
	return (void *)syscall(SYS_mmap, addr, len, prot, flags, fd, off);
}

/*
 * The engine's own mappings (page states, headers, buffers) go in a
 * zone of their own, far below where the kernel places the application's
 * (top down from below the stack): taken from the top like those, they
 * would fill the application's holes, where an access must fault, and
 * which an mremap of several VMAs keeps as holes.  The address is a hint:
 * where the zone is taken (a sanitizer's shadow memory), the kernel places
 * the mapping as usual.  The gap after each lets it grow in place.
 */
#define ENGINE_ZONE (1UL << 45)		/* 32 TiB: above ASan's shadow too */
#define ENGINE_ZONE_END (1UL << 46)	/* 64 TiB */
#define ENGINE_GAP (64UL << 20)
void *sys_mmap_engine(size_t len, int prot, int flags, int fd, off_t off)
{
	static uintptr_t next = ENGINE_ZONE;
	uintptr_t step = ((len + (2UL << 20) - 1) & ~((2UL << 20) - 1)) + ENGINE_GAP;
	uintptr_t at = __atomic_fetch_add(&next, step, __ATOMIC_RELAXED);
	if (at + step > ENGINE_ZONE_END) {
		__atomic_store_n(&next, ENGINE_ZONE, __ATOMIC_RELAXED);
		at = 0;
	}
	return sys_mmap((void *)at, len, prot, flags, fd, off);
}

int sys_munmap(void *addr, size_t len) { return (int)syscall(SYS_munmap, addr, len); }
int sys_mprotect(void *addr, size_t len, int prot) { return (int)syscall(SYS_mprotect, addr, len, prot); }
int sys_madvise(void *addr, size_t len, int advice) { return (int)syscall(SYS_madvise, addr, len, advice); }
int sys_msync(void *addr, size_t len, int flags) { return (int)syscall(SYS_msync, addr, len, flags); }
int sys_mlock(void *addr, size_t len) { return (int)syscall(SYS_mlock, addr, len); }
int sys_munlock(void *addr, size_t len) { return (int)syscall(SYS_munlock, addr, len); }
int sys_mlock2(void *addr, size_t len, unsigned flags) { return (int)syscall(SYS_mlock2, addr, len, flags); }

void *sys_mremap(void *old, size_t old_size, size_t new_size, int flags, void *new_addr)
{
	return (void *)syscall(SYS_mremap, old, old_size, new_size, flags, new_addr);
}

/*
 * A userfaultfd that also serves faults taken in kernel mode (a mapped
 * buffer handed to read(2)), so never UFFD_USER_MODE_ONLY.  /dev/userfaultfd
 * (Linux 6.1) needs only access to the device node; the system call needs
 * CAP_SYS_PTRACE unless vm.unprivileged_userfaultfd is 1.
 */
int sys_uffd_open(int *err)
{
	int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		int fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		int e = errno;
		close(dev);
		if (fd >= 0)
			return fd;
		errno = e;
	}
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0)
		*err = errno;
	return fd;
}

/* The UFFDIO_API handshake: asks for want, returns the features granted.
 * Asking with want == 0 reports everything the kernel offers. */
int sys_uffd_api(int fd, uint64_t want, uint64_t *got)
{
	struct uffdio_api api = { .api = UFFD_API, .features = want };
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		return -errno;
	*got = api.features;
	return 0;
}

/* A thread being started: its function, and the sign that it runs. */
struct start {
	void *(*fn)(void *);
	sem_t running;
};

static void *run_started(void *arg)
{
	struct start *st = arg;
	void *(*fn)(void *) = st->fn;
	sem_post(&st->running); /* (st is the starter's, gone after this) */
	return fn(NULL);
}

/*
 * An engine thread, with every signal blocked: an application's handler
 * run there could call um_* (the thread may hold um.lock) or touch a
 * mapping (the fault thread would wait for itself).  Returns once the
 * thread runs: a fork() made while a thread is still starting can leave
 * the child with a runtime's thread-list lock held (seen with
 * AddressSanitizer), on which the child's own engine threads then block.
 */
int um_thread_start(pthread_t *t, void *(*fn)(void *))
{
	struct start st = { .fn = fn };
	sigset_t all, old;
	if (sem_init(&st.running, 0, 0) < 0)
		return -errno;
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	int e = pthread_create(t, NULL, run_started, &st);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	while (!e && sem_wait(&st.running) < 0 && errno == EINTR)
		;
	sem_destroy(&st.running);
	return -e;
}
