// routes.c is a WAGI test module for sub-routes, entry points and files,
// written to the ABI of deislabs/wagi's docs/writing_modules.md: _routes
// prints "PATH EXPORT" lines, each export answers like a main. Rebuild with
// build.sh.
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EXPORT(name) __attribute__((export_name(name)))

// answer prints which handler ran and the variables routing sets.
static void answer(const char *handler) {
	printf("Content-Type: text/plain\n\n%s\n", handler);
	const char *vars[] = {"SCRIPT_NAME", "PATH_INFO", "X_RAW_PATH_INFO", "X_MATCHED_ROUTE", "REQUEST_METHOD", "QUERY_STRING", "GREETING"};
	for (size_t i = 0; i < sizeof vars / sizeof *vars; i++) {
		const char *v = getenv(vars[i]);
		printf("%s=%s\n", vars[i], v ? v : "(unset)");
	}
}

// The routes as a WAGI module prints them, with the blank lines and
// stray blanks WAGI tolerates. /one/two/... comes after /one/..., so it
// wins for the paths both match; /main maps back to the main entry.
EXPORT("_routes") void routes(void) {
	printf("/hello hello\n");
	printf("  /goodbye/...   goodbye  \n\n");
	printf("/one/... one\n");
	printf("/one/two/... two\n");
	printf("/main _start\n");
	printf("/write write_probe\n");
	printf("/exit exit_zero\n");
	printf("/fail fail\n");
	printf("/lenient lenient\n");
}

EXPORT("hello") void hello(void) { answer("hello"); }
EXPORT("goodbye") void goodbye(void) { answer("goodbye"); }
EXPORT("one") void one(void) { answer("one"); }
EXPORT("two") void two(void) { answer("two"); }

// alt is the entrypoint of a manifest that names one.
EXPORT("alt") void alt(void) { answer("alt"); }

// exit_zero ends with exit(0) inside an export, which is a normal end.
EXPORT("exit_zero") void exit_zero(void) {
	answer("exit_zero");
	fflush(stdout);
	exit(0);
}

// fail exits non-zero.
EXPORT("fail") void fail(void) {
	fprintf(stderr, "fail: giving up\n");
	exit(4);
}

// lenient prints a header line that is not "Name: value", which WAGI and
// Spin skip.
EXPORT("lenient") void lenient(void) {
	printf("Content-Type: text/plain\nthis is no header\nX-After: yes\n\nlenient\n");
}

// write_probe tries to change the mounted files and reports what the
// sandbox said.
EXPORT("write_probe") void write_probe(void) {
	printf("Content-Type: text/plain\n\n");
	int fd = open("/static/app.css", O_WRONLY);
	printf("open for writing: %s\n", fd < 0 ? strerror(errno) : "succeeded");
	fd = open("/static/new.txt", O_WRONLY | O_CREAT, 0644);
	printf("create: %s\n", fd < 0 ? strerror(errno) : "succeeded");
	printf("unlink: %s\n", unlink("/static/app.css") < 0 ? strerror(errno) : "succeeded");
	printf("mkdir: %s\n", mkdir("/static/d", 0755) < 0 ? strerror(errno) : "succeeded");
}

int main(void) {
	answer("main");
	return 0;
}
