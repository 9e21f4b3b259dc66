// flaky.c is the WAGI module of the event engine's tests. It answers 503
// until the attempt (X-Velo-Attempt, HTTP_X_VELO_ATTEMPT) reaches the number
// in the query (?ok=N; 0 or absent: never), then 200 with the attempt, the
// method, the path and the request body. /sleep?ms=N spins for about N ms
// first, so that a test can catch a call in flight. A direct call (no
// attempt header) always gets 200.
// Rebuild (in testmods): clang --target=wasm32-wasi -O2 -s -o flaky.wasm src/flaky.c
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int main(void) {
	const char *attempt = getenv("HTTP_X_VELO_ATTEMPT");
	const char *path = getenv("PATH_INFO");
	const char *query = getenv("QUERY_STRING");
	const char *method = getenv("REQUEST_METHOD");
	int n = attempt ? atoi(attempt) : 0;
	int ok = 0, ms = 0;
	if (query) {
		const char *p = strstr(query, "ok=");
		if (p) ok = atoi(p + 3);
		p = strstr(query, "ms=");
		if (p) ms = atoi(p + 3);
	}
	if (ms > 0) {
		struct timespec start, now;
		clock_gettime(CLOCK_MONOTONIC, &start);
		do {
			clock_gettime(CLOCK_MONOTONIC, &now);
		} while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < ms);
	}
	if (attempt && (ok == 0 || n < ok)) {
		fprintf(stderr, "attempt %d fails\n", n);
		printf("Status: 503 Service Unavailable\nContent-Type: text/plain\n\nattempt %d fails\n", n);
		return 0;
	}
	printf("Content-Type: text/plain\nX-Flaky: yes\n\nattempt=%s method=%s path=%s body=", attempt ? attempt : "", method ? method : "", path ? path : "");
	char buf[4096];
	size_t r;
	while ((r = fread(buf, 1, sizeof buf, stdin)) > 0) fwrite(buf, 1, r, stdout);
	return 0;
}
