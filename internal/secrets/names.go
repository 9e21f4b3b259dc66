package secrets

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// Limits on what one component may hold.
const (
	MaxName         = 128      // bytes in a name
	MaxValue        = 32 << 10 // bytes in a value
	MaxPerComponent = 100      // secrets of one component
)

// reserved are the variables a runtime sets itself, which a secret must
// not shadow: WAGI's CGI variables (worker/wasm sets them per request; a
// test there keeps this list in step) and Docker's PORT.
var reserved = map[string]bool{
	"GATEWAY_INTERFACE": true, "SERVER_SOFTWARE": true, "REQUEST_METHOD": true, "SCRIPT_NAME": true,
	"X_MATCHED_ROUTE": true, "PATH_INFO": true, "PATH_TRANSLATED": true, "X_RAW_PATH_INFO": true,
	"QUERY_STRING": true, "CONTENT_TYPE": true, "CONTENT_LENGTH": true, "SERVER_NAME": true,
	"SERVER_PORT": true, "SERVER_PROTOCOL": true, "REMOTE_ADDR": true, "REMOTE_HOST": true,
	"AUTH_TYPE": true, "REMOTE_USER": true, "X_FULL_URL": true, "PORT": true,
}

// Reserved reports whether name is set by a runtime itself (a CGI variable,
// a request header's HTTP_*, PORT) and so cannot be a secret.
func Reserved(name string) bool {
	return reserved[name] || strings.HasPrefix(name, "HTTP_")
}

// ValidName checks a secret's name: an environment variable name
// ([A-Za-z_][A-Za-z0-9_]*, at most MaxName bytes) that no runtime sets
// itself.
func ValidName(name string) error {
	if name == "" {
		return fmt.Errorf("secret name is empty")
	}
	if len(name) > MaxName {
		return fmt.Errorf("secret name %.20q… is longer than %d bytes", name, MaxName)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		ok := c == '_' || 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || i > 0 && '0' <= c && c <= '9'
		if !ok {
			return fmt.Errorf("secret name %q: want letters, digits and '_', not starting with a digit (an environment variable name)", name)
		}
	}
	if Reserved(name) {
		return fmt.Errorf("secret name %q is set by the runtime itself (CGI variables, HTTP_* request headers, PORT)", name)
	}
	return nil
}

// ValidValue checks a secret's value: at most MaxValue bytes of UTF-8
// without NUL (it becomes an environment variable).
func ValidValue(name, value string) error {
	switch {
	case len(value) > MaxValue:
		return fmt.Errorf("secret %s: value is %d bytes, at most %d", name, len(value), MaxValue)
	case strings.IndexByte(value, 0) >= 0:
		return fmt.Errorf("secret %s: value holds a NUL byte, which an environment variable cannot", name)
	case !utf8.ValidString(value):
		return fmt.Errorf("secret %s: value is not UTF-8 text (base64-encode binary values)", name)
	}
	return nil
}
