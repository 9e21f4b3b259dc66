// secretenv.c is the WAGI module of the secrets tests: it shows what a
// component does with its environment. GET /get?NAME answers NAME's value
// (or "(unset)"); GET /leak?NAME prints the value to stderr, as a careless
// component would, so the tests can check it is redacted from the logs.
// Rebuild: clang --target=wasm32-wasi -O2 -s -o secretenv.wasm secretenv.c
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
	const char *path = getenv("PATH_INFO");
	const char *name = getenv("QUERY_STRING");
	const char *value = name && *name ? getenv(name) : NULL;
	if (path && strcmp(path, "/leak") == 0) {
		fprintf(stderr, "the value of %s is %s, oops\n", name, value ? value : "(unset)");
	}
	printf("Content-Type: text/plain\n\n%s", value ? value : "(unset)");
	return 0;
}
