package apidoc

import (
	"context"
	"strings"
	"testing"
)

// FuzzLoad: whatever a component ships as its document, Load returns a
// document or an error, never panics (its line finding included).
func FuzzLoad(f *testing.F) {
	f.Add([]byte(petstore))
	f.Add([]byte(strings.Replace(petstore, "          description: one pet\n", "          content: {}\n", 1)))
	f.Add([]byte(`{"openapi":"3.0.3","info":{"title":"x","version":"1"},"paths":{"/a/{b}":{"get":{"responses":{}}}}}`))
	f.Add([]byte("openapi: 3.1.0\npaths: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		doc, err := Load(context.Background(), data)
		if err == nil {
			if _, err := NewValidator(doc); err != nil && doc.Paths != nil && doc.Paths.Len() == 0 {
				t.Fatalf("validator of a valid document without paths: %v", err)
			}
		}
	})
}
