/* fds.c - see fds.h. */
#include "fds.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int fds_each(void (*fn)(int fd, const char *target, void *arg), void *arg)
{
	return fds_each_of(0, fn, arg);
}

int fds_each_of(pid_t pid, void (*fn)(int fd, const char *target, void *arg), void *arg)
{
	char dir[64];
	if (pid)
		snprintf(dir, sizeof dir, "/proc/%d/fd", (int)pid);
	else
		snprintf(dir, sizeof dir, "/proc/self/fd");
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		n++;
		char link[400], target[512];
		snprintf(link, sizeof link, "%s/%s", dir, e->d_name);
		ssize_t k = readlink(link, target, sizeof target - 1);
		if (fn && k > 0) {
			target[k] = 0;
			fn(atoi(e->d_name), target, arg);
		}
	}
	closedir(d);
	return n;
}

int fds_is_ummap_object(const char *target)
{
	return strstr(target, "memfd:ummap") || (strstr(target, "/#") && strstr(target, "(deleted)"));
}

static void count_object(int fd, const char *target, void *arg)
{
	if (fds_is_ummap_object(target))
		++*(int *)arg;
}

int fds_ummap_objects(void)
{
	int n = 0;
	fds_each(count_object, &n);
	return n;
}
