// echo.c is a WAGI test module for package wasm. It picks a behaviour from
// the first segment of PATH_INFO so that one compiled module covers every
// case the tests need. Rebuild with build.sh.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern char **environ;
extern unsigned char __heap_base;

// keep makes allocations observable so the compiler cannot drop them.
char *volatile keep;

static const char *path(void) {
	const char *p = getenv("PATH_INFO");
	return p ? p : "";
}

static int is(const char *route) {
	const char *p = path();
	size_t n = strlen(route);
	return strncmp(p, route, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

int main(int argc, char **argv) {
	if (is("/env")) {
		// Every variable and argument, one per line.
		printf("Content-Type: text/plain\n\n");
		for (char **e = environ; *e; e++) printf("%s\n", *e);
		for (int i = 0; i < argc; i++) printf("ARG%d=%s\n", i, argv[i]);
		return 0;
	}
	if (is("/echo")) {
		// The request body back, byte for byte.
		printf("Content-Type: application/octet-stream\r\n\r\n");
		char buf[4096];
		size_t n;
		while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) fwrite(buf, 1, n, stdout);
		return 0;
	}
	if (is("/status")) {
		printf("Status: 404 Not Found\nContent-Type: text/plain\n\nnothing here\n");
		return 0;
	}
	if (is("/redirect")) {
		printf("Location: /elsewhere\n\n");
		return 0;
	}
	if (is("/headers")) {
		printf("Content-Type: text/plain\nSet-Cookie: a=1\nSet-Cookie: b=2\nX-Test: yes\n\nheaders\n");
		return 0;
	}
	if (is("/stderr")) {
		fprintf(stderr, "first line\nsecond line\npartial");
		printf("Content-Type: text/plain\n\nlogged\n");
		return 0;
	}
	if (is("/loop")) {
		volatile unsigned long i = 0;
		for (;;) i++;
	}
	if (is("/exit")) {
		fprintf(stderr, "giving up\n");
		return 3;
	}
	if (is("/garbage")) {
		printf("this is not a CGI response");
		return 0;
	}
	if (is("/oom")) {
		// Grow memory until the runtime refuses, then trap.
		for (;;) {
			char *p = malloc(1 << 20);
			if (p == NULL) abort();
			memset(p, 1, 1 << 20);
			keep = p;
		}
	}
	if (is("/file")) {
		int fd = open("/etc/passwd", O_RDONLY);
		printf("Content-Type: text/plain\n\n");
		if (fd < 0) {
			printf("open failed: %s\n", strerror(errno));
			return 0;
		}
		char buf[64];
		ssize_t n = read(fd, buf, sizeof buf);
		printf("opened, read %zd bytes\n", n);
		return 0;
	}
	if (is("/dirty")) {
		// Fill 2 MiB of fresh memory with a marker, for /scan to look for.
		char *p = malloc(2 << 20);
		if (p == NULL) abort();
		memset(p, 0xAB, 2 << 20);
		keep = p;
		printf("Content-Type: text/plain\n\ndirtied\n");
		return 0;
	}
	if (is("/scan")) {
		// Grow memory by 64 pages, then count marker bytes anywhere above
		// the heap base: a fresh instance must see none.
		__builtin_wasm_memory_grow(0, 64);
		unsigned char *p = &__heap_base;
		unsigned char *end = (unsigned char *)(__builtin_wasm_memory_size(0) * 65536);
		unsigned long n = 0;
		for (; p < end; p++) n += *(volatile unsigned char *)p == 0xAB;
		printf("Content-Type: text/plain\n\nmarkers=%lu\n", n);
		return 0;
	}
	if (is("/big")) {
		// More output than a small response cap allows.
		printf("Content-Type: text/plain\n\n");
		for (int i = 0; i < 100000; i++) fputs("0123456789", stdout);
		return 0;
	}
	printf("Content-Type: text/plain\n\nhello from C\n");
	return 0;
}
