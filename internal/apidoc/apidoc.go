// Package apidoc loads and checks the OpenAPI 3 documents components ship
// (openapi = "…" in velo.toml) and Velo's own, with getkin/kin-openapi: at
// deploy (a broken document fails the deployment with its line and
// reason), in the router (calls checked against it when validate = true)
// and in the dashboard (rendered). It only reads documents; it never
// fetches a $ref from elsewhere.
package apidoc

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
)

// Load parses and validates an OpenAPI 3 document (YAML or JSON). The
// error names the line of the problem when it can be told, and the
// reason: "line 12: invalid operation GET: value of responses must be an
// object".
func Load(ctx context.Context, data []byte) (*openapi3.T, error) {
	l := openapi3.NewLoader()
	l.IsExternalRefsAllowed = false
	l.Context = ctx
	doc, err := l.LoadFromData(data)
	if err != nil {
		return nil, located(data, err)
	}
	if doc.OpenAPI == "" || !strings.HasPrefix(doc.OpenAPI, "3.") {
		return nil, fmt.Errorf("line %d: not an OpenAPI 3 document (openapi: %q)", lineOf(data, "openapi"), doc.OpenAPI)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, located(data, err)
	}
	return doc, nil
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// located prefixes err with the line of the document it is about: the
// line a parser names, or the line of the last path, operation or key the
// message names that the document holds.
func located(data []byte, err error) error {
	msg := err.Error()
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		n, _ := strconv.Atoi(m[1])
		return fmt.Errorf("line %d: %s", n, strings.TrimSpace(yamlLine.ReplaceAllString(msg, "")))
	}
	line := 0
	from := 0
	for _, f := range strings.FieldsFunc(msg, func(r rune) bool { return r == ' ' || r == ':' || r == '"' || r == ',' }) {
		if f == "" {
			continue
		}
		name := f
		if isMethod(f) {
			name = strings.ToLower(f)
		} else if !strings.HasPrefix(f, "/") && !strings.Contains(msg, `"`+f+`"`) {
			continue
		}
		if n := lineFrom(data, name, from); n > 0 {
			line, from = n, n
		}
	}
	if line == 0 {
		return err
	}
	return fmt.Errorf("line %d: %s", line, msg)
}

func isMethod(s string) bool {
	switch s {
	case "GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE":
		return true
	}
	return false
}

// lineFrom is the line number (1-based) of the first line at or after
// line from whose key is key (YAML "key:" or JSON "\"key\":"), 0 if none.
func lineFrom(data []byte, key string, from int) int {
	for i, l := range strings.Split(string(data), "\n") {
		if i+1 < from {
			continue
		}
		t := strings.TrimLeft(strings.TrimSpace(l), "- ")
		if strings.HasPrefix(t, key+":") || strings.HasPrefix(t, `"`+key+`":`) || strings.HasPrefix(t, `'`+key+`':`) {
			return i + 1
		}
	}
	return 0
}

func lineOf(data []byte, key string) int { return max(1, lineFrom(data, key, 0)) }

// Validator checks calls against a component's document.
type Validator struct {
	router routers.Router
}

// NewValidator makes a Validator of doc, whose paths are relative to the
// component's mount (its servers are not used).
func NewValidator(doc *openapi3.T) (*Validator, error) {
	d := *doc
	d.Servers = nil
	r, err := legacy.NewRouter(&d)
	if err != nil {
		return nil, fmt.Errorf("openapi router: %w", err)
	}
	return &Validator{router: r}, nil
}

// Refusal is why a call does not match the document: the status to
// answer (400, or 404/405 for no such operation) and a message naming the
// parameter or the body.
type Refusal struct {
	Status int
	Msg    string
}

// Check checks req, whose URL path is relative to the component's mount.
// It reads the body and puts it back. nil means the call matches.
func (v *Validator) Check(req *http.Request) *Refusal {
	route, params, err := v.router.FindRoute(req)
	if err != nil {
		for _, m := range []string{"GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE"} {
			other := *req
			other.Method = m
			if _, _, err := v.router.FindRoute(&other); m != req.Method && err == nil {
				return &Refusal{Status: http.StatusMethodNotAllowed, Msg: fmt.Sprintf("the API has no %s %s", req.Method, req.URL.Path)}
			}
		}
		return &Refusal{Status: http.StatusNotFound, Msg: fmt.Sprintf("the API has no operation at %s", req.URL.Path)}
	}
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc, MultiError: false}}
	err = openapi3filter.ValidateRequest(req.Context(), in)
	if err == nil {
		return nil
	}
	var re *openapi3filter.RequestError
	if errors.As(err, &re) {
		switch {
		case re.Parameter != nil:
			return &Refusal{Status: http.StatusBadRequest, Msg: fmt.Sprintf("%s parameter %q: %s", re.Parameter.In, re.Parameter.Name, reason(re))}
		case re.RequestBody != nil:
			return &Refusal{Status: http.StatusBadRequest, Msg: "request body: " + reason(re)}
		}
	}
	return &Refusal{Status: http.StatusBadRequest, Msg: err.Error()}
}

func reason(re *openapi3filter.RequestError) string {
	var se *openapi3.SchemaError
	if errors.As(re.Err, &se) {
		if p := se.JSONPointer(); len(p) > 0 {
			return fmt.Sprintf("%s at /%s", se.Reason, strings.Join(p, "/"))
		}
		return se.Reason
	}
	if re.Err != nil {
		if re.Reason != "" {
			return re.Reason + ": " + re.Err.Error()
		}
		return re.Err.Error()
	}
	return re.Reason
}
