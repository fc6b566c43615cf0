/*
 * tutorial2_sigbus.c - touching a page beyond the end of the file.
 *
 * a.txt is new and empty, so the 4096-byte shared mapping of it covers no
 * byte of the file: the first write raises SIGBUS with si_code BUS_ADRERR
 * and si_addr the address touched, as with mmap(2).  A SIGBUS handler
 * records the siginfo and jumps back with siglongjmp.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <ummap.h>

#define LEN 4096

static sigjmp_buf jump_back;
static volatile sig_atomic_t got_sigbus;
static volatile int sig_code;
static void *volatile sig_addr;

static void on_sigbus(int sig, siginfo_t *si, void *uctx)
{
	(void)sig;
	(void)uctx;
	got_sigbus = 1;
	sig_code = si->si_code;
	sig_addr = si->si_addr;
	siglongjmp(jump_back, 1);
}

/* Writes "helloworld" to p, byte by byte so the first store is to p[0]. */
static void touch(char *p)
{
	if (sigsetjmp(jump_back, 1) == 0) {
		const char *msg = "helloworld";
		volatile char *vp = p;
		for (size_t i = 0; msg[i]; i++)
			vp[i] = msg[i];
	}
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	char dir[PATH_MAX], path[PATH_MAX];
	int ok = 0;

	if (!tmp || !*tmp)
		tmp = "/tmp";
	snprintf(dir, sizeof dir, "%s/ummap-tutorial2-XXXXXX", tmp);
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

	int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
	if (fd < 0) {
		perror("open");
		rmdir(dir);
		return 1;
	}
	char *p = um_mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
			  0);
	if (p == MAP_FAILED) {
		perror("um_mmap");
		goto out_file;
	}

	struct sigaction sa, old;
	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = on_sigbus;
	sa.sa_flags = SA_SIGINFO;
	sigemptyset(&sa.sa_mask);
	if (sigaction(SIGBUS, &sa, &old) != 0) {
		perror("sigaction");
		goto out_map;
	}
	alarm(30); /* a fault that is never served must not hang forever */

	touch(p);
	alarm(0);
	sigaction(SIGBUS, &old, NULL);

	if (!got_sigbus) {
		printf("tutorial2: FAILED: writing to the mapping of an empty "
		       "file raised no SIGBUS\n");
	} else {
		printf("tutorial2: SIGBUS, si_code %d (%s), si_addr %p, "
		       "mapping at %p\n", sig_code,
		       sig_code == BUS_ADRERR ? "BUS_ADRERR" : "not BUS_ADRERR",
		       sig_addr, (void *)p);
		if (sig_code == BUS_ADRERR && sig_addr == (void *)p) {
			printf("tutorial2: a.txt has 0 bytes, so the mapped "
			       "page lies wholly beyond the end of the file: "
			       "touching it raises SIGBUS (BUS_ADRERR) at the "
			       "address touched, as with mmap(2)\n");
			ok = 1;
		} else {
			printf("tutorial2: FAILED: expected si_code BUS_ADRERR "
			       "(%d) and si_addr %p\n", BUS_ADRERR, (void *)p);
		}
	}

out_map:
	if (um_munmap(p, LEN) != 0) {
		perror("um_munmap");
		ok = 0;
	}
out_file:
	close(fd);
	unlink(path);
	rmdir(dir);
	return ok ? 0 : 1;
}
