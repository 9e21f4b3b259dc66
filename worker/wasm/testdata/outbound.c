// outbound.c is a test module for wasi_experimental_http, the same program
// as outbound.rs and outbound-go: it calls the URL in the request's X-Url
// header (method X-Method, default GET; the request body as its body;
// headers x-lang and, when X-Auth is set, authorization), X-Open times
// without closing the responses, and prints what it got back:
//
//	status=200
//	x-echo=<first value of the answer's X-Echo header, or error=N>
//	all:
//	<headers_get_all>
//	body:
//	<the body>
//
// or "error=N" (after "opened=K" when X-Open > 1). The imports are declared
// here as wasi-experimental-http's raw bindings declare them. Rebuild with
// build.sh.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IMPORT(name) __attribute__((import_module("wasi_experimental_http"), import_name(name)))

IMPORT("req")
uint32_t req(const char *url, size_t url_len, const char *method, size_t method_len,
	     const char *headers, size_t headers_len, const uint8_t *body, size_t body_len,
	     uint16_t *status, uint32_t *handle);
IMPORT("close") uint32_t close_handle(uint32_t handle);
IMPORT("header_get")
uint32_t header_get(uint32_t handle, const char *name, size_t name_len, char *value,
		    size_t value_len, size_t *written);
IMPORT("headers_get_all")
uint32_t headers_get_all(uint32_t handle, char *buf, size_t buf_len, size_t *written);
IMPORT("body_read") uint32_t body_read(uint32_t handle, uint8_t *buf, size_t buf_len, size_t *written);

static uint8_t in[1 << 16];
static char headers[4096];
static char buf[1 << 16];

static const char *env(const char *name, const char *def) {
	const char *v = getenv(name);
	return v && *v ? v : def;
}

int main(void) {
	const char *url = env("HTTP_X_URL", "");
	const char *method = env("HTTP_X_METHOD", "GET");
	int open = atoi(env("HTTP_X_OPEN", "1"));
	size_t body_len = fread(in, 1, sizeof in, stdin);
	const char *auth = getenv("HTTP_X_AUTH");
	snprintf(headers, sizeof headers, "x-lang:c\ncontent-type:text/plain\n%s%s%s",
		 auth ? "authorization:" : "", auth ? auth : "", auth ? "\n" : "");

	printf("Content-Type: text/plain\n\n");
	uint16_t status = 0;
	uint32_t handle = 0;
	for (int i = 0; i < open; i++) {
		uint32_t err = req(url, strlen(url), method, strlen(method), headers, strlen(headers),
				   in, body_len, &status, &handle);
		if (err) {
			if (open > 1) printf("opened=%d\n", i);
			printf("error=%u\n", err);
			return 0;
		}
	}
	printf("status=%u\n", status);
	size_t n = 0;
	uint32_t err = header_get(handle, "X-Echo", 6, buf, sizeof buf, &n);
	if (err) printf("x-echo=error=%u\n", err);
	else printf("x-echo=%.*s\n", (int)n, buf);
	err = headers_get_all(handle, buf, sizeof buf, &n);
	if (err) printf("all=error=%u\n", err);
	else printf("all:\n%.*s", (int)n, buf);
	printf("body:\n");
	for (;;) {
		err = body_read(handle, (uint8_t *)buf, 1000, &n);
		if (err) {
			printf("\nbody=error=%u\n", err);
			break;
		}
		if (n == 0) break;
		fwrite(buf, 1, n, stdout);
	}
	close_handle(handle);
	err = body_read(handle, (uint8_t *)buf, sizeof buf, &n);
	printf("\nafter close=%u\n", err);
	return 0;
}
