/*
 * fds.h - a test program's view of its own descriptors (/proc/self/fd), or
 * another process's, to find ummap's cache objects (memfds, swap files) and
 * count descriptors.
 */
#ifndef FDS_H
#define FDS_H

#include <sys/types.h>

/* Calls fn(fd, target, arg) for each open descriptor with what it links to
 * (fn may be NULL); returns how many there were. */
int fds_each(void (*fn)(int fd, const char *target, void *arg), void *arg);
/* The same for process pid (0: this one). */
int fds_each_of(pid_t pid, void (*fn)(int fd, const char *target, void *arg), void *arg);
/* Does a descriptor's target name one of ummap's objects: a memfd, or a
 * swap file (unnamed files show as "/dir/#inode (deleted)")? */
int fds_is_ummap_object(const char *target);
/* How many of this process's descriptors are ummap's objects. */
int fds_ummap_objects(void);

#endif
