/*
 * store_swap.c - where anonymous memory's evicted pages go.
 *
 * By default each anonymous object gets a file store on an unnamed file
 * (O_TMPFILE in $TMPDIR, mode 0600: no name anyone could open), holding
 * evicted pages at their offsets; holes read as zeros, discarding punches
 * holes, closing frees its space.  An application can give its own store
 * instead (um_set_swap_store): each object then opens one of the
 * application's, which this file adapts to the store table (store.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include "internal.h"

static struct um_swap_store app; /* the application's, if app.open */

struct app_store {
	struct um_store s;
	struct um_swap_store ops; /* as set when this one was opened */
	void *h;
};

static ssize_t app_read(struct um_store *s, void *buf, size_t len, uint64_t off)
{
	struct app_store *a = (struct app_store *)s;
	return a->ops.read(a->h, buf, len, off);
}

static ssize_t app_write(struct um_store *s, const void *buf, size_t len, uint64_t off)
{
	struct app_store *a = (struct app_store *)s;
	return a->ops.write(a->h, buf, len, off);
}

static int app_size(struct um_store *s, uint64_t *size)
{
	return -ENOTSUP; /* (a swap store has no size of its own) */
}

static int app_flush(struct um_store *s)
{
	return 0; /* (swapped pages need not outlive the process) */
}

static int app_discard(struct um_store *s, uint64_t off, uint64_t len)
{
	struct app_store *a = (struct app_store *)s;
	return a->ops.discard ? a->ops.discard(a->h, off, len) : 0;
}

static void app_close(struct um_store *s)
{
	struct app_store *a = (struct app_store *)s;
	a->ops.close(a->h);
	free(a);
}

static const struct um_store_ops app_ops = {
	.version = 1,
	.read = app_read,
	.write = app_write,
	.size = app_size,
	.flush = app_flush,
	.discard = app_discard,
	.close = app_close,
};

struct um_store *store_swap_open(int *err)
{
	if (app.open) {
		struct app_store *a = calloc(1, sizeof *a);
		if (!a) {
			*err = ENOMEM;
			return NULL;
		}
		a->s = (struct um_store){ .ops = &app_ops, .fd = -1, .writable = 1 };
		a->ops = app;
		errno = EIO;
		if (!(a->h = app.open(app.arg))) {
			*err = errno;
			free(a);
			return NULL;
		}
		return &a->s;
	}
	const char *dir = getenv("TMPDIR");
	int fd = open(dir && *dir ? dir : "/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		*err = errno;
		return NULL;
	}
	struct um_store *s = store_file_open(fd, 1, err);
	close(fd);
	return s;
}

/* The application's store from now on (a copy; NULL fields: the default),
 * under um.lock. */
void store_swap_set(const struct um_swap_store *s)
{
	app = *s;
}
