// pristine.c is a WAGI test module that leaves state behind in every way it
// can, for the tests that a reused instance shows each request a pristine
// one (warm.go). /probe reports what a fresh instance must see (a counter
// at 1, the same stack and heap addresses, an untouched static buffer, the
// first free descriptor) and then dirties all of it; the other routes end
// in the ways that must not leak: an exit code, a trap, stdout closed, a
// file left open, memory grown, deep in the stack. Rebuild with build.sh.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int counter;
static char scratch[64];
char *volatile keep;

static int is(const char *route) {
	const char *p = getenv("PATH_INFO");
	return p && strcmp(p, route) == 0;
}

// deep exits from a frame that moved the stack pointer.
__attribute__((noinline)) static void deep(int n, int code) {
	volatile char pad[4096];
	pad[0] = (char)n;
	if (n > 0) deep(n - 1, code);
	fflush(stdout);
	exit(code + pad[0] * 0);
}

int main(int argc, char **argv) {
	if (is("/probe")) {
		int local = 0;
		char *heap = malloc(100);
		int fd = open("static/a.txt", O_RDONLY);
		printf("Content-Type: text/plain\n\n");
		printf("count=%d stack=%p heap=%p scratch=[%s] fd=%d argc=%d arg1=%s query=%s\n", ++counter,
		       (void *)&local, (void *)heap, scratch, fd, argc, argc > 1 ? argv[1] : "",
		       getenv("QUERY_STRING"));
		if (fd >= 0) close(fd);
		strcpy(scratch, "dirty");
		keep = heap; // leaked on purpose
		return 0;
	}
	printf("Content-Type: text/plain\n\n");
	counter += 100;
	strcpy(scratch, "left");
	keep = malloc(1000);
	if (is("/exit0")) {
		printf("bye\n");
		fflush(stdout);
		exit(0);
	}
	if (is("/exit3")) {
		printf("bye\n");
		exit(3);
	}
	if (is("/deep")) deep(8, 0);
	if (is("/trap")) __builtin_trap();
	if (is("/closeout")) {
		fflush(stdout);
		close(1);
		return 0;
	}
	if (is("/open")) {
		int fd = open("static/a.txt", O_RDONLY);
		printf("opened %d\n", fd);
		return 0;
	}
	if (is("/grow")) {
		keep = malloc(4 << 20);
		memset(keep, 1, 4 << 20);
		printf("grown\n");
		return 0;
	}
	printf("unknown route\n");
	return 0;
}
