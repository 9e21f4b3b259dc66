// fileserver.c is a static file server written to WAGI's ABI, doing what
// deislabs/wagi-fileserver does: PATH_INFO, without its leading '/' and
// behind PATH_PREFIX when that is set, names a file under the first
// preopened directory; the answer carries a media type guessed from the
// extension and Cache-Control from CACHE_CONTROL (or the type's own
// variable), and "Status: 404" when the file cannot be opened. It logs the
// files it cannot open to stderr; wagi-fileserver logs every file it loads,
// but a line per request is a log write per request. Rebuild with build.sh.
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *suffix(const char *s, const char *ext) {
	size_t n = strlen(s), m = strlen(ext);
	return n >= m && strcmp(s + n - m, ext) == 0 ? s : NULL;
}

static const char *guess(const char *path) {
	static const char *types[][2] = {
		{".html", "text/html"}, {".htm", "text/html"}, {".css", "text/css"},
		{".js", "text/javascript"}, {".json", "application/json"}, {".txt", "text/plain"},
		{".md", "text/plain"}, {".png", "image/png"}, {".jpg", "image/jpeg"},
		{".gif", "image/gif"}, {".svg", "image/svg+xml"}, {".ico", "image/x-icon"},
		{".woff2", "font/woff2"}, {".wasm", "application/wasm"},
	};
	for (size_t i = 0; i < sizeof types / sizeof *types; i++)
		if (suffix(path, types[i][0])) return types[i][1];
	return "application/octet-stream";
}

static const char *env(const char *name, const char *def) {
	const char *v = getenv(name);
	return v ? v : def;
}

static const char *cache_control(const char *type) {
	const char *def = env("CACHE_CONTROL", "no-cache");
	if (strncmp(type, "image/", 6) == 0) return env("IMAGE_CACHE_CONTROL", def);
	if (strncmp(type, "font/", 5) == 0) return env("FONT_CACHE_CONTROL", def);
	if (strcmp(type, "text/css") == 0) return env("CSS_CACHE_CONTROL", def);
	if (strcmp(type, "text/javascript") == 0) return env("JS_CACHE_CONTROL", def);
	return def;
}

int main(void) {
	const char *info = env("PATH_INFO", "");
	if (*info == '/') info++;
	char path[1024];
	snprintf(path, sizeof path, "%s%s", env("PATH_PREFIX", ""), info);
	int fd = open(path, O_RDONLY);
	if (fd < 0) {
		fprintf(stderr, "Fileserver: cannot open %s\n", path);
		fputs("Status: 404\n\nNot Found", stdout);
		return 0;
	}
	const char *type = guess(path);
	printf("Content-Type: %s\nCache-Control: %s\n\n", type, cache_control(type));
	fflush(stdout);
	static char buf[16 << 10];
	ssize_t n;
	while ((n = read(fd, buf, sizeof buf)) > 0) {
		if (write(1, buf, n) != n) return 1;
	}
	close(fd);
	return n < 0;
}
