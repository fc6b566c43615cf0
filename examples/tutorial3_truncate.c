/*
 * tutorial3_truncate.c - data written through a mapping reaches the file
 * even if the program never calls um_msync or um_munmap.
 *
 * The tutorial: open a.txt, truncate it to 1024 bytes, map 4096 bytes
 * shared, strcpy "helloworld" into the mapping, close the descriptor and
 * return from main without unmapping.  ummap writes dirty pages back at
 * exit, and only the 1024 bytes the file has.
 *
 * To check that, the program forks first: the child runs the tutorial and
 * returns from main (so exit handlers run), then the parent reads the file
 * with read(2).
 */
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ummap.h>

/* The tutorial itself; runs in the child.  Returns main's exit status. */
static int tutorial(const char *path)
{
	int fd = open(path, O_RDWR | O_CREAT, 0644);
	if (fd < 0) {
		perror("open");
		return 1;
	}
	if (ftruncate(fd, 1024) != 0) {
		perror("ftruncate");
		return 1;
	}
	char *p = um_mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
			  0);
	if (p == MAP_FAILED) {
		perror("um_mmap");
		return 1;
	}
	strcpy(p, "helloworld");
	close(fd);
	printf("tutorial3: child wrote \"%s\", closed the descriptor and "
	       "returns from main without um_msync or um_munmap\n", p);
	return 0;
}

/* Reads the file back in the parent; 1 if it is what the tutorial wrote. */
static int check(const char *path)
{
	char buf[2048];
	size_t n = 0;
	struct stat st;
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		perror("open");
		return 0;
	}
	if (fstat(fd, &st) != 0) {
		perror("fstat");
		close(fd);
		return 0;
	}
	if (st.st_size != 1024) {
		printf("tutorial3: the file is %lld bytes, not 1024\n",
		       (long long)st.st_size);
		close(fd);
		return 0;
	}
	for (;;) {
		ssize_t r = read(fd, buf + n, sizeof buf - n);
		if (r < 0) {
			perror("read");
			close(fd);
			return 0;
		}
		if (r == 0 || (n += (size_t)r) == sizeof buf)
			break;
	}
	close(fd);

	size_t zeros = 0;
	for (size_t i = sizeof "helloworld" - 1; i < n; i++)
		zeros += buf[i] == 0;
	int starts = n >= 10 && memcmp(buf, "helloworld", 10) == 0;
	printf("tutorial3: parent read %zu bytes; starts with \"helloworld\": "
	       "%s; the other %zu bytes zero: %s\n", n, starts ? "yes" : "no",
	       n > 10 ? n - 10 : 0, n > 10 && zeros == n - 10 ? "yes" : "no");
	return n == 1024 && starts && zeros == n - 10;
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	char dir[PATH_MAX], path[PATH_MAX];

	if (!tmp || !*tmp)
		tmp = "/tmp";
	snprintf(dir, sizeof dir, "%s/ummap-tutorial3-XXXXXX", tmp);
	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	if ((size_t)snprintf(path, sizeof path, "%s/a.txt", dir) >=
	    sizeof path) {
		fprintf(stderr, "TMPDIR too long\n");
		rmdir(dir);
		return 1;
	}

	fflush(stdout);
	pid_t pid = fork();
	if (pid < 0) {
		perror("fork");
		rmdir(dir);
		return 1;
	}
	if (pid == 0)
		return tutorial(path); /* returning from main runs exit */

	alarm(60); /* a child that never exits must not hang the parent */
	int status, ok = 0;
	if (waitpid(pid, &status, 0) != pid) {
		perror("waitpid");
	} else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		printf("tutorial3: FAILED: the child did not exit 0 (status "
		       "0x%x)\n", (unsigned)status);
	} else if (check(path)) {
		printf("tutorial3: the file is 1024 bytes and starts with "
		       "\"helloworld\": the dirty page was written back at "
		       "exit, up to the end of the file\n");
		ok = 1;
	} else {
		printf("tutorial3: FAILED: the file is not what the child "
		       "wrote\n");
	}
	unlink(path);
	rmdir(dir);
	return ok ? 0 : 1;
}
