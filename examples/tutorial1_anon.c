/*
 * tutorial1_anon.c - the smallest ummap program.
 *
 * A private anonymous mapping from um_mmap is ordinary memory, exactly as
 * with mmap(2): write a string into it, print it, unmap it.
 */
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#include <ummap.h>

int main(void)
{
	char *p = um_mmap(NULL, 4096, PROT_READ | PROT_WRITE,
			  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("um_mmap");
		return 1;
	}
	strcpy(p, "hello ksy");
	puts(p);
	if (um_munmap(p, 4096) != 0) {
		perror("um_munmap");
		return 1;
	}
	printf("tutorial1: a MAP_PRIVATE|MAP_ANONYMOUS mapping from um_mmap "
	       "held the string and was unmapped with um_munmap\n");
	return 0;
}
