// rollout.c is the WAGI module of the rollout tests (health gate, automatic
// rollback, canaries): one module whose behaviour its deployment's [env]
// picks. GET /healthz answers the status in HEALTH (200 when unset) and
// says so; every other path answers VERSION, with status 500 when FAIL is
// set.
// Rebuild: clang --target=wasm32-wasi -O2 -s -o rollout.wasm rollout.c
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
	const char *path = getenv("PATH_INFO");
	const char *version = getenv("VERSION");
	if (!version) version = "unversioned";
	if (path && strcmp(path, "/healthz") == 0) {
		const char *health = getenv("HEALTH");
		if (!health) health = "200";
		printf("Status: %s\nContent-Type: text/plain\n\nhealth of %s: %s\n", health, version, health);
		return 0;
	}
	if (getenv("FAIL")) {
		printf("Status: 500 Internal Server Error\nContent-Type: text/plain\n\n%s is broken\n", version);
		return 0;
	}
	printf("Content-Type: text/plain\n\n%s\n", version);
	return 0;
}
