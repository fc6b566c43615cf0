/*
 * sys.c - the system calls the engine makes, issued directly so that an
 * LD_PRELOAD shim interposing the libc symbols can never recurse into itself.
 */
#include <errno.h>
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

int sys_munmap(void *addr, size_t len) { return (int)syscall(SYS_munmap, addr, len); }
int sys_mprotect(void *addr, size_t len, int prot) { return (int)syscall(SYS_mprotect, addr, len, prot); }
int sys_madvise(void *addr, size_t len, int advice) { return (int)syscall(SYS_madvise, addr, len, advice); }
int sys_msync(void *addr, size_t len, int flags) { return (int)syscall(SYS_msync, addr, len, flags); }
int sys_mlock(void *addr, size_t len) { return (int)syscall(SYS_mlock, addr, len); }

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
