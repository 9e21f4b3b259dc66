// notify is a Velo WebAssembly component that does real work: it posts the
// request's body as a message to a webhook (Slack-style JSON,
// {"text": "…"}) with a key as a bearer token, and says how the webhook
// answered. The webhook's URL comes from WEBHOOK_URL and the key from
// NOTIFY_TOKEN, both in its environment; Velo lets the call out only to the
// origins velo.toml's allowed_hosts lists.
//
// Build it with: clang --target=wasm32-wasi -O2 -o notify.wasm notify.c
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

// The outbound HTTP functions Velo provides: the wasi_experimental_http
// module of deislabs/wasi-experimental-http, as WAGI has it. Each returns 0
// or an error number; results come back through the pointers.
#define IMPORT(name) __attribute__((import_module("wasi_experimental_http"), import_name(name)))
IMPORT("req")
uint32_t http_req(const char *url, size_t url_len, const char *method, size_t method_len,
		  const char *headers, size_t headers_len, const char *body, size_t body_len,
		  uint16_t *status, uint32_t *handle);
IMPORT("body_read") uint32_t http_body_read(uint32_t handle, char *buf, size_t len, size_t *written);
IMPORT("close") uint32_t http_close(uint32_t handle);

static const char *http_error(uint32_t e) {
	static const char *names[] = {
		"success", "invalid handle", "memory not found", "memory access error",
		"buffer too small", "header not found", "UTF-8 error",
		"destination not allowed (is it in allowed_hosts?)", "invalid method",
		"invalid encoding", "invalid URL", "request error", "runtime error",
		"too many sessions",
	};
	return e < sizeof names / sizeof names[0] ? names[e] : "unknown error";
}

static int answer(int status, const char *text) {
	printf("Status: %d\nContent-Type: text/plain; charset=utf-8\n\n%s\n", status, text);
	return 0;
}

enum { MAX_MESSAGE = 4096 };
static char message[MAX_MESSAGE + 1];
static char payload[6 * MAX_MESSAGE + 16]; // every byte escaped at worst
static char headers[8192];
static char reply[512];

// json_text writes {"text": msg} with msg escaped as a JSON string.
static void json_text(char *out, const char *msg, size_t n) {
	char *p = out + sprintf(out, "{\"text\":\"");
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)msg[i];
		if (c == '"' || c == '\\') {
			*p++ = '\\';
			*p++ = (char)c;
		} else if (c < 0x20) {
			p += sprintf(p, "\\u%04x", c);
		} else {
			*p++ = (char)c;
		}
	}
	strcpy(p, "\"}");
}

int main(void) {
	const char *url = getenv("WEBHOOK_URL"), *token = getenv("NOTIFY_TOKEN");
	const char *method = getenv("REQUEST_METHOD");
	if (!url || !*url || !token || !*token)
		return answer(500, "notify is not configured: set WEBHOOK_URL and NOTIFY_TOKEN");
	if (!method || strcmp(method, "POST") != 0) return answer(405, "POST the message as the request body");

	size_t n = fread(message, 1, MAX_MESSAGE, stdin);
	while (n > 0 && (message[n - 1] == '\n' || message[n - 1] == '\r' || message[n - 1] == ' ')) n--;
	if (n == 0) return answer(400, "the message is empty");
	json_text(payload, message, n);
	if (snprintf(headers, sizeof headers, "content-type:application/json\nauthorization:Bearer %s\n", token) >=
	    (int)sizeof headers)
		return answer(500, "NOTIFY_TOKEN is too long");

	uint16_t status = 0;
	uint32_t handle = 0;
	uint32_t err = http_req(url, strlen(url), "POST", 4, headers, strlen(headers), payload, strlen(payload),
				&status, &handle);
	if (err) {
		fprintf(stderr, "notify: webhook call: %s\n", http_error(err));
		snprintf(reply, sizeof reply, "the webhook could not be called: %s", http_error(err));
		return answer(502, reply);
	}
	// Keep the start of the webhook's answer for the logs.
	char body[201];
	size_t got = 0, w = 0;
	while (got < sizeof body - 1 && http_body_read(handle, body + got, sizeof body - 1 - got, &w) == 0 && w > 0)
		got += w;
	body[got] = 0;
	http_close(handle);
	if (status < 200 || status > 299) {
		fprintf(stderr, "notify: webhook answered %u: %s\n", status, body);
		snprintf(reply, sizeof reply, "the webhook answered %u", status);
		return answer(502, reply);
	}
	snprintf(reply, sizeof reply, "sent (the webhook answered %u)", status);
	return answer(200, reply);
}
