// stream.c is a WAGI test module for the streaming call path of package
// wasm: large answers, answers that fail half way, heads that never end,
// and stderr with terminal escapes. The route is the first segment of
// PATH_INFO. Rebuild with build.sh.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int is(const char *route) {
	const char *p = getenv("PATH_INFO");
	if (p == NULL) p = "";
	size_t n = strlen(route);
	return strncmp(p, route, n) == 0 && (p[n] == '\0' || p[n] == '/');
}

static char chunk[64 << 10];

// writeAll writes n bytes to fd 1 or returns -1.
static int writeAll(const char *b, size_t n) {
	while (n > 0) {
		ssize_t w = write(1, b, n);
		if (w <= 0) return -1;
		b += w;
		n -= (size_t)w;
	}
	return 0;
}

int main(void) {
	memset(chunk, 'z', sizeof chunk);
	if (is("/echo")) {
		// The body back in 64 KiB reads and writes, and what CGI said its
		// length was, in a header.
		const char *cl = getenv("CONTENT_LENGTH");
		printf("Content-Type: application/octet-stream\nX-Content-Length: %s\n\n", cl ? cl : "");
		fflush(stdout);
		ssize_t n;
		while ((n = read(0, chunk, sizeof chunk)) > 0)
			if (writeAll(chunk, (size_t)n) < 0) return 1;
		return n < 0 ? 2 : 0;
	}
	if (is("/count")) {
		// How many body bytes stdin gave and what CONTENT_LENGTH said.
		ssize_t n;
		long total = 0;
		while ((n = read(0, chunk, sizeof chunk)) > 0) total += n;
		const char *cl = getenv("CONTENT_LENGTH");
		printf("Content-Type: text/plain\n\nread=%ld content_length=%s\n", total, cl ? cl : "");
		return 0;
	}
	if (is("/cut")) {
		// 256 KiB of answer, then a failure.
		printf("Content-Type: text/plain\n\n");
		fflush(stdout);
		for (int i = 0; i < 4; i++) writeAll(chunk, sizeof chunk);
		fprintf(stderr, "failing half way\n");
		return 3;
	}
	if (is("/spew")) {
		// Writes without end, ignoring failed writes.
		printf("Content-Type: text/plain\n\n");
		fflush(stdout);
		for (;;) (void)write(1, chunk, sizeof chunk);
	}
	if (is("/longhead")) {
		// Header lines without end: the head never closes.
		for (;;) {
			if (writeAll("X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n", 92) < 0) return 1;
		}
	}
	if (is("/headthenfail")) {
		// A valid head, a little body, then a failure: still a 502, since
		// nothing was sent.
		printf("Content-Type: text/plain\nSet-Cookie: from=module\n\npartial");
		fflush(stdout);
		return 4;
	}
	if (is("/escape")) {
		// Terminal control sequences on stderr.
		fprintf(stderr, "\x1b[31mred\x1b[0m\ttab\abell\r\n");
		fprintf(stderr, "\x1b]0;title\x07 and \xc2\x9b C1 CSI\n");
		printf("Content-Type: text/plain\n\nescaped\n");
		return 0;
	}
	printf("Content-Type: text/plain\n\nstream module\n");
	return 0;
}
