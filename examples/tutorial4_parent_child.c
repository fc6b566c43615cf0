/*
 * tutorial4_parent_child.c - the tutorial's second way to share memory: a
 * parent and its child through one MAP_SHARED|MAP_ANONYMOUS mapping.
 *
 * The parent maps a table of records with um_mmap and forks; the child
 * fills the table and exits; the parent, after waitpid, reads what the child
 * wrote, rewrites it, and a second child reads the parent's version back.
 * No file, no msync: the pages themselves are shared, as with mmap(2).
 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ummap.h>

struct person {
	char name[16];
	int age;
};

#define N 10

static int wait_ok(pid_t pid)
{
	int status = 0;
	return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

int main(void)
{
	struct person *p = um_mmap(NULL, N * sizeof *p, PROT_READ | PROT_WRITE,
				   MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("um_mmap");
		return 1;
	}
	pid_t pid = fork();
	if (pid == 0) {
		for (int i = 0; i < N; i++) {
			snprintf(p[i].name, sizeof p[i].name, "child-%c", 'a' + i);
			p[i].age = 20 + i;
		}
		_exit(0);
	}
	if (pid < 0 || !wait_ok(pid)) {
		fprintf(stderr, "tutorial4: the first child failed\n");
		return 1;
	}
	int wrong = 0;
	for (int i = 0; i < N; i++) {
		char want[16];
		snprintf(want, sizeof want, "child-%c", 'a' + i);
		wrong += strcmp(p[i].name, want) != 0 || p[i].age != 20 + i;
	}
	printf("tutorial4: parent reads what the child wrote: %s ... %s (age %d), %d wrong\n", p[0].name,
	       p[N - 1].name, p[N - 1].age, wrong);
	for (int i = 0; i < N; i++)
		p[i].age += 100;
	pid = fork();
	if (pid == 0) {
		for (int i = 0; i < N; i++)
			if (p[i].age != 120 + i)
				_exit(2);
		_exit(0);
	}
	int back = pid > 0 && wait_ok(pid);
	printf("tutorial4: a second child reads the parent's update: %s\n", back ? "yes" : "NO");
	if (um_munmap(p, N * sizeof *p) != 0) {
		perror("um_munmap");
		return 1;
	}
	return wrong || !back;
}
