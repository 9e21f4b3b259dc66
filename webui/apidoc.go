package webui

import (
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
)

// The API page renders a component's OpenAPI document (GET
// /api/v1/components/{name}/openapi, servers set to its real URL) as
// HTML, on the server: operations by path, their parameters, bodies and
// answers.

type apiPage struct {
	base
	Name    string
	Title   string
	Version string
	Desc    string
	BaseURL string
	Ops     []apiOp
}

type apiOp struct {
	Method, Path, Summary, Desc string
	Params                      []apiParam
	Body                        []string // content types
	BodyRequired                bool
	Responses                   []docAnswer
}

type apiParam struct {
	Name, In, Type, Desc string
	Required             bool
}

// docAnswer is one documented answer of an operation, as the page shows it.
type docAnswer struct{ Code, Desc string }

func (u *UI) apiDoc(w http.ResponseWriter, r *http.Request, v visitor) {
	name := r.PathValue("name")
	var doc openapi3.T
	if err := u.call(r, http.MethodGet, "/api/v1/components/"+url.PathEscape(name)+"/openapi", "", nil, &doc); err != nil {
		u.failAPI(w, r, err)
		return
	}
	p := apiPage{base: base{Title: name + " API", visitor: v}, Name: name}
	if doc.Info != nil {
		p.Title, p.Version, p.Desc = doc.Info.Title, doc.Info.Version, doc.Info.Description
	}
	if len(doc.Servers) > 0 {
		p.BaseURL = doc.Servers[0].URL
	}
	if doc.Paths != nil {
		for _, path := range doc.Paths.InMatchingOrder() {
			item := doc.Paths.Value(path)
			ops := item.Operations()
			methods := make([]string, 0, len(ops))
			for m := range ops {
				methods = append(methods, m)
			}
			slices.Sort(methods)
			for _, m := range methods {
				op := ops[m]
				o := apiOp{Method: strings.ToUpper(m), Path: path, Summary: op.Summary, Desc: op.Description}
				for _, ps := range [][]*openapi3.ParameterRef{item.Parameters, op.Parameters} {
					for _, pr := range ps {
						if pr == nil || pr.Value == nil {
							continue
						}
						pv := pr.Value
						ap := apiParam{Name: pv.Name, In: pv.In, Desc: pv.Description, Required: pv.Required}
						if pv.Schema != nil && pv.Schema.Value != nil && pv.Schema.Value.Type != nil {
							ap.Type = strings.Join(pv.Schema.Value.Type.Slice(), " | ")
						}
						o.Params = append(o.Params, ap)
					}
				}
				if rb := op.RequestBody; rb != nil && rb.Value != nil {
					o.BodyRequired = rb.Value.Required
					for ct := range rb.Value.Content {
						o.Body = append(o.Body, ct)
					}
					slices.Sort(o.Body)
				}
				if op.Responses != nil {
					for code, rr := range op.Responses.Map() {
						d := ""
						if rr != nil && rr.Value != nil && rr.Value.Description != nil {
							d = *rr.Value.Description
						}
						o.Responses = append(o.Responses, docAnswer{Code: code, Desc: d})
					}
					slices.SortFunc(o.Responses, func(a, b docAnswer) int { return strings.Compare(a.Code, b.Code) })
				}
				p.Ops = append(p.Ops, o)
			}
		}
	}
	slices.SortStableFunc(p.Ops, func(a, b apiOp) int { return strings.Compare(a.Path, b.Path) })
	u.render(w, http.StatusOK, "api", p)
}
