// outbound.c is the benchmark's outbound HTTP module: one GET through
// wasi_experimental_http to $TARGET, the whole body read, the response
// closed, and the time that took (CLOCK_MONOTONIC, around req, body_read
// and close) printed as "ns=N". With $NOCALL set it answers the same way
// without calling, for the cost of the request alone. Rebuild with build.sh.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define IMPORT(name) __attribute__((import_module("wasi_experimental_http"), import_name(name)))

IMPORT("req")
uint32_t req(const char *url, size_t url_len, const char *method, size_t method_len,
	     const char *headers, size_t headers_len, const uint8_t *body, size_t body_len,
	     uint16_t *status, uint32_t *handle);
IMPORT("close") uint32_t close_handle(uint32_t handle);
IMPORT("body_read") uint32_t body_read(uint32_t handle, uint8_t *buf, size_t buf_len, size_t *written);

static uint8_t buf[4096];

static int64_t now(void) {
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int main(void) {
	const char *url = getenv("TARGET");
	if (!url) url = "";
	uint16_t status = 0;
	size_t total = 0;
	int64_t start = now();
	if (!getenv("NOCALL")) {
		uint32_t handle;
		uint32_t err = req(url, strlen(url), "GET", 3, "", 0, (const uint8_t *)"", 0, &status, &handle);
		if (err) {
			printf("Status: 502\nContent-Type: text/plain\n\nerror=%u\n", err);
			return 0;
		}
		size_t n;
		while (body_read(handle, buf, sizeof buf, &n) == 0 && n > 0) total += n;
		close_handle(handle);
	}
	int64_t ns = now() - start;
	printf("Content-Type: text/plain\n\nstatus=%u bytes=%zu ns=%lld\n", status, total, (long long)ns);
	return 0;
}
