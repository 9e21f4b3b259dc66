// hello.c is the small C WAGI module of the benchmark: it answers every
// request with a short greeting naming the path, like examples/hello-wasm
// does in Go, so the two differ in language runtime only. Rebuild with
// build.sh.
#include <stdio.h>
#include <stdlib.h>

int main(void) {
	const char *greeting = getenv("GREETING");
	const char *path = getenv("PATH_INFO");
	printf("Content-Type: text/plain; charset=utf-8\n\n");
	printf("%s from Velo! method=%s path=%s\n", greeting ? greeting : "hello",
	       getenv("REQUEST_METHOD") ? getenv("REQUEST_METHOD") : "",
	       path && *path ? path : "/");
	return 0;
}
