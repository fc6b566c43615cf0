/*
 * store_file.c - the default store: a regular file, read and written with
 * pread/pwrite on a descriptor of ummap's own.
 *
 * The descriptor is reopened through /proc/self/fd so that it has its own
 * access mode and no O_APPEND: the caller's descriptor may be closed right
 * after mmap (the tutorial does so), and may be read-only while a later
 * mapping of the same file needs writes (store_file_upgrade).  Where the
 * reopen is refused (the file's mode changed since the caller opened it,
 * which the kernel's mmap does not look at), the store uses a duplicate of
 * the caller's descriptor, which shares its open file description: so
 * nothing here moves the file offset, and a description in append mode is
 * not written through (pwrite would append, here and in the service).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store.h"

int store_fail_read, store_fail_write, store_fail_flush;

static ssize_t file_read(struct um_store *s, void *buf, size_t len, uint64_t off)
{
	if (store_fail_read)
		return -store_fail_read;
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(s->fd, (char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static ssize_t file_write(struct um_store *s, const void *buf, size_t len, uint64_t off)
{
	if (store_fail_write)
		return -store_fail_write;
	if (!s->writable)
		return -EBADF;
	size_t done = 0;
	while (done < len) {
		ssize_t n = pwrite(s->fd, (const char *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		done += (size_t)n;
	}
	return (ssize_t)done;
}

static int file_size(struct um_store *s, uint64_t *size)
{
	struct stat st;
	if (fstat(s->fd, &st) < 0)
		return -errno;
	*size = (uint64_t)st.st_size;
	return 0;
}

static int file_flush(struct um_store *s)
{
	if (store_fail_flush)
		return -store_fail_flush;
	return fdatasync(s->fd) < 0 ? -errno : 0;
}

static int file_discard(struct um_store *s, uint64_t off, uint64_t len)
{
	return fallocate(s->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) < 0 ? -errno : 0;
}

static void file_close(struct um_store *s)
{
	close(s->fd);
	free(s);
}

static const struct um_store_ops file_ops = {
	.version = 1,
	.read = file_read,
	.write = file_write,
	.size = file_size,
	.flush = file_flush,
	.discard = file_discard,
	.close = file_close,
};

static int reopen(int fd, int want_write)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
	int nfd = open(path, (want_write ? O_RDWR : O_RDONLY) | O_CLOEXEC);
	if (nfd >= 0)
		return nfd;
	int err = errno, fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (want_write && (fl & O_APPEND))) {
		errno = err;
		return -1;
	}
	return fcntl(fd, F_DUPFD_CLOEXEC, 0);
}

struct um_store *store_file_open(int fd, int want_write, int *err)
{
	struct um_store *s = calloc(1, sizeof *s);
	if (!s) {
		*err = ENOMEM;
		return NULL;
	}
	s->ops = &file_ops;
	s->fd = reopen(fd, want_write);
	if (s->fd < 0) {
		*err = errno;
		free(s);
		return NULL;
	}
	s->writable = want_write;
	return s;
}

/* Give a read-only store a writable descriptor, from fd (open for writing). */
int store_file_upgrade(struct um_store *s, int fd)
{
	if (s->writable)
		return 0;
	int nfd = reopen(fd, 1);
	if (nfd < 0)
		return -errno;
	close(s->fd);
	s->fd = nfd;
	s->writable = 1;
	return 0;
}
