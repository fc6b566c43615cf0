/*
 * tutorial5_two_programs.c - the tutorial's first way to share memory: two
 * programs that map one ordinary file talk through it.
 *
 * Run without arguments, it creates the file and starts two programs (this
 * one again, by exec: unrelated to each other, as two programs started from
 * a shell are): `writer FILE` and `reader FILE`.  Each maps the file with
 * um_mmap, MAP_SHARED.  The writer puts a record in the file, then waits
 * until the reader has acknowledged it (through the file too) before
 * writing the next.  There is no msync and no munmap in between: each
 * side sees the other's stores at once, as with mmap(2), because both
 * processes share one cache of the file.
 */
#include <fcntl.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ummap.h>

#define N 10

struct person {
	char name[16];
	int age;
};

/* The file: a record slot, and two counters that hand it back and forth. */
struct mailbox {
	atomic_int written; /* records the writer has put in `slot` */
	atomic_int acked;   /* records the reader has taken */
	struct person slot;
};

extern char **environ;

static struct mailbox *map_file(const char *path)
{
	int fd = open(path, O_RDWR);
	if (fd < 0) {
		perror(path);
		exit(1);
	}
	struct mailbox *m = um_mmap(NULL, sizeof *m, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED) {
		perror("um_mmap");
		exit(1);
	}
	close(fd);
	return m;
}

/* Wait until *v reaches want; false after 10 s (the stores never came). */
static int wait_for(atomic_int *v, int want)
{
	struct timespec pause = { 0, 100000 };
	for (int i = 0; i < 100000; i++) {
		if (atomic_load(v) >= want)
			return 1;
		nanosleep(&pause, NULL);
	}
	return 0;
}

static int writer(const char *path)
{
	struct mailbox *m = map_file(path);
	for (int i = 0; i < N; i++) {
		snprintf(m->slot.name, sizeof m->slot.name, "person-%c", 'a' + i);
		m->slot.age = 20 + i;
		atomic_store(&m->written, i + 1);
		if (!wait_for(&m->acked, i + 1)) {
			fprintf(stderr, "tutorial5 writer: the reader never acknowledged record %d\n", i);
			return 1;
		}
	}
	return um_munmap(m, sizeof *m) ? 1 : 0;
}

static int reader(const char *path)
{
	struct mailbox *m = map_file(path);
	int wrong = 0;
	for (int i = 0; i < N; i++) {
		if (!wait_for(&m->written, i + 1)) {
			fprintf(stderr, "tutorial5 reader: record %d never arrived\n", i);
			return 1;
		}
		char want[16];
		snprintf(want, sizeof want, "person-%c", 'a' + i);
		wrong += strcmp(m->slot.name, want) != 0 || m->slot.age != 20 + i;
		printf("tutorial5 reader: got %s, age %d\n", m->slot.name, m->slot.age);
		atomic_store(&m->acked, i + 1);
	}
	um_munmap(m, sizeof *m);
	return wrong ? 1 : 0;
}

static pid_t start(const char *role, const char *path)
{
	char *argv[] = { "tutorial5_two_programs", (char *)role, (char *)path, NULL };
	pid_t pid;
	if (posix_spawn(&pid, "/proc/self/exe", NULL, NULL, argv, environ)) {
		perror("posix_spawn");
		exit(1);
	}
	return pid;
}

static int ended_ok(pid_t pid)
{
	int st = 0;
	return waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "writer"))
		return writer(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "reader"))
		return reader(argv[2]);
	char path[] = "/tmp/tutorial5-XXXXXX";
	int fd = mkstemp(path);
	if (fd < 0 || ftruncate(fd, sizeof(struct mailbox)) < 0) {
		perror("tutorial5: file");
		return 1;
	}
	close(fd);
	pid_t r = start("reader", path), w = start("writer", path);
	int ok = ended_ok(w) & ended_ok(r);
	/* Both ended: what they exchanged is in the file. */
	struct mailbox last;
	fd = open(path, O_RDONLY);
	ok &= fd >= 0 && pread(fd, &last, sizeof last, 0) == (ssize_t)sizeof last && last.acked == N &&
	      !strcmp(last.slot.name, "person-j");
	if (fd >= 0)
		close(fd);
	unlink(path);
	printf("tutorial5: %s\n", ok ? "two programs exchanged 10 records through one mapped file, each seeing "
				       "the other's stores at once (no msync)"
				     : "FAILED");
	return ok ? 0 : 1;
}
