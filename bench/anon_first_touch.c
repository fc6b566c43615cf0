/*
 * anon_first_touch.c - what paging private anonymous memory costs: the
 * first touch of every page of a 256 MiB MAP_PRIVATE|MAP_ANONYMOUS mapping,
 * in order and at random, with the kernel's mmap and with um_mmap, side by
 * side in one run (`make bench-anon`).  Prints each side's time per page
 * and the ratio ummap / kernel.
 */
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <time.h>

#include "ummap.h"

#define LEN (256UL << 20)
#define PAGE 4096UL
#define RANDOM_TOUCHES 20000

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

typedef void *(*map_fn)(void *, size_t, int, int, int, off_t);
typedef int (*unmap_fn)(void *, size_t);

/* Microseconds per page: sequential first touches, then random ones. */
static void run(map_fn map, unmap_fn unmap, double us[2])
{
	volatile char *p = map(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	double t = now();
	for (size_t i = 0; i < LEN; i += PAGE)
		p[i] = 1;
	us[0] = (now() - t) * 1e6 / (double)(LEN / PAGE);
	unmap((void *)p, LEN);
	p = map(NULL, LEN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint32_t x = 12345;
	t = now();
	for (int i = 0; i < RANDOM_TOUCHES; i++) {
		x = x * 1103515245u + 12345u;
		p[(x % (LEN / PAGE)) * PAGE] = 1;
	}
	us[1] = (now() - t) * 1e6 / RANDOM_TOUCHES;
	unmap((void *)p, LEN);
}

int main(void)
{
	double k[2], u[2];
	run(mmap, munmap, k);
	run(um_mmap, um_munmap, u);
	printf("first touch of private anonymous memory, 256 MiB (us per page):\n");
	printf("  %-10s %8s %8s %8s\n", "", "kernel", "ummap", "ratio");
	printf("  %-10s %8.2f %8.2f %8.2f\n", "sequential", k[0], u[0], u[0] / k[0]);
	printf("  %-10s %8.2f %8.2f %8.2f\n", "random", k[1], u[1], u[1] / k[1]);
	return 0;
}
