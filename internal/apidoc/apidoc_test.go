package apidoc

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const petstore = `openapi: 3.0.3
info:
  title: Pets
  version: "1"
paths:
  /pets:
    get:
      parameters:
        - name: limit
          in: query
          required: true
          schema:
            type: integer
            maximum: 100
      responses:
        "200":
          description: the pets
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema:
              type: object
              required: [name]
              properties:
                name:
                  type: string
      responses:
        "201":
          description: made
  /pets/{id}:
    get:
      parameters:
        - name: id
          in: path
          required: true
          schema:
            type: integer
      responses:
        "200":
          description: one pet
`

func TestLoadBroken(t *testing.T) {
	for _, tc := range []struct{ name, doc, want string }{
		{"yaml syntax", "openapi: 3.0.3\ninfo:\n  title: [x\n", "line "},
		{"not openapi 3", "swagger: \"2.0\"\ninfo:\n  title: x\n  version: \"1\"\npaths: {}\n", "not an OpenAPI 3 document"},
		{"response without description", strings.Replace(petstore, "          description: one pet\n", "          content: {}\n", 1), "line 33:"},
		{"bad schema type", strings.Replace(petstore, "type: integer\n            maximum", "type: integr\n            maximum", 1), "integr"},
	} {
		_, err := Load(context.Background(), []byte(tc.doc))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want it to say %q", tc.name, err, tc.want)
		}
	}
	if _, err := Load(context.Background(), []byte(petstore)); err != nil {
		t.Fatalf("petstore: %v", err)
	}
}

func TestValidator(t *testing.T) {
	doc, err := Load(context.Background(), []byte(petstore))
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewValidator(doc)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		method, target, body string
		status               int
		want                 string
	}{
		{"GET", "/pets?limit=10", "", 0, ""},
		{"GET", "/pets", "", 400, `query parameter "limit"`},
		{"GET", "/pets?limit=abc", "", 400, `query parameter "limit"`},
		{"GET", "/pets?limit=1000", "", 400, `query parameter "limit"`},
		{"GET", "/pets/7", "", 0, ""},
		{"GET", "/pets/seven", "", 400, `path parameter "id"`},
		{"POST", "/pets", `{"name":"rex"}`, 0, ""},
		{"POST", "/pets", `{"nom":"rex"}`, 400, "request body"},
		{"DELETE", "/pets", "", 405, "no DELETE /pets"},
		{"GET", "/cats", "", 404, "no operation at /cats"},
	} {
		req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
		if tc.body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		r := v.Check(req)
		switch {
		case tc.status == 0 && r != nil:
			t.Errorf("%s %s: refused %d %q", tc.method, tc.target, r.Status, r.Msg)
		case tc.status != 0 && (r == nil || r.Status != tc.status || !strings.Contains(r.Msg, tc.want)):
			t.Errorf("%s %s: %+v, want %d %q", tc.method, tc.target, r, tc.status, tc.want)
		}
	}
	_ = http.StatusOK
}
