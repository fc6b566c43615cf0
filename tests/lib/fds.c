/* fds.c - see fds.h. */
#include "fds.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int fds_each(void (*fn)(int fd, const char *target, void *arg), void *arg)
{
	DIR *d = opendir("/proc/self/fd");
	if (!d)
		return -1;
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		n++;
		char link[300], target[512];
		snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
		ssize_t k = readlink(link, target, sizeof target - 1);
		if (fn && k > 0) {
			target[k] = 0;
			fn(atoi(e->d_name), target, arg);
		}
	}
	closedir(d);
	return n;
}
