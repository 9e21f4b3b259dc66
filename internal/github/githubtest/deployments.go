package githubtest

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Deployment is a deployment recorded by the stand-in, as requested.
type Deployment struct {
	ID          int64
	SHA         string
	Ref         string
	Task        string
	Environment string
	Description string
	// AutoMerge is the request's auto_merge (GitHub's default: true).
	AutoMerge bool
	// RequiredContexts is the request's required_contexts; nil when the
	// request left it out (GitHub then requires every context to pass).
	RequiredContexts      []string
	TransientEnvironment  bool
	ProductionEnvironment bool
	CreatedAt             time.Time
	// Statuses in the order they were created.
	Statuses []DeploymentStatus
}

// DeploymentStatus is one status of a Deployment.
type DeploymentStatus struct {
	ID             int64
	State          string
	Description    string
	Environment    string
	EnvironmentURL string
	LogURL         string
	TargetURL      string
	CreatedAt      time.Time
}

// Deployments returns the deployments of owner/repo, oldest first.
func (s *Server) Deployments(owner, repo string) []Deployment {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.repos[strings.ToLower(owner+"/"+repo)]
	if r == nil {
		return nil
	}
	out := make([]Deployment, 0, len(r.deployments()))
	for _, d := range r.deployments() {
		c := *d
		c.Statuses = slices.Clone(d.Statuses)
		c.RequiredContexts = slices.Clone(d.RequiredContexts)
		out = append(out, c)
	}
	return out
}

// deployments lives on the server, keyed by repo, to keep Repo small.
func (r *Repo) deployments() []*Deployment { return r.s.deploys[r.ID] }

func (s *Server) deploymentJSONLocked(r *Repo, d *Deployment) map[string]any {
	u := s.URL() + "repos/" + r.FullName() + "/deployments/" + strconv.FormatInt(d.ID, 10)
	return map[string]any{
		"url": u, "id": d.ID, "node_id": "DE_" + strconv.FormatInt(d.ID, 10),
		"sha": d.SHA, "ref": d.Ref, "task": d.Task, "payload": map[string]any{},
		"original_environment": d.Environment, "environment": d.Environment,
		"description": d.Description,
		"creator":     map[string]any{"login": s.AppSlug + "[bot]", "id": s.AppID, "type": "Bot"},
		"created_at":  d.CreatedAt.Format(time.RFC3339), "updated_at": d.CreatedAt.Format(time.RFC3339),
		"statuses_url":           u + "/statuses",
		"repository_url":         s.URL() + "repos/" + r.FullName(),
		"transient_environment":  d.TransientEnvironment,
		"production_environment": d.ProductionEnvironment,
		"performed_via_github_app": map[string]any{
			"id": s.AppID, "slug": s.AppSlug,
		},
	}
}

func (s *Server) statusJSONLocked(r *Repo, d *Deployment, st DeploymentStatus) map[string]any {
	du := s.URL() + "repos/" + r.FullName() + "/deployments/" + strconv.FormatInt(d.ID, 10)
	return map[string]any{
		"url": du + "/statuses/" + strconv.FormatInt(st.ID, 10), "id": st.ID,
		"node_id": "DES_" + strconv.FormatInt(st.ID, 10), "state": st.State,
		"description": st.Description, "environment": st.Environment,
		"target_url": st.TargetURL, "log_url": st.LogURL, "environment_url": st.EnvironmentURL,
		"creator":    map[string]any{"login": s.AppSlug + "[bot]", "id": s.AppID, "type": "Bot"},
		"created_at": st.CreatedAt.Format(time.RFC3339), "updated_at": st.CreatedAt.Format(time.RFC3339),
		"deployment_url": du, "repository_url": s.URL() + "repos/" + r.FullName(),
	}
}

// createDeployment serves POST /repos/{o}/{r}/deployments.
func (s *Server) createDeployment(w http.ResponseWriter, req *http.Request, r *Repo) {
	var body struct {
		Ref                   string    `json:"ref"`
		Task                  *string   `json:"task"`
		AutoMerge             *bool     `json:"auto_merge"`
		RequiredContexts      *[]string `json:"required_contexts"`
		Environment           *string   `json:"environment"`
		Description           *string   `json:"description"`
		TransientEnvironment  *bool     `json:"transient_environment"`
		ProductionEnvironment *bool     `json:"production_environment"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	if body.Ref == "" {
		validationFailed(w, "Deployment", "ref", "ref is missing")
		return
	}
	c := r.resolveLocked(body.Ref)
	if c == nil {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]any{
			"message": "No ref found for: " + body.Ref, "documentation_url": docsURL,
		})
		return
	}
	d := &Deployment{
		ID: s.newIDLocked(), SHA: c.sha, Ref: body.Ref, Task: "deploy", Environment: "production",
		AutoMerge: true, CreatedAt: time.Now().UTC().Truncate(time.Second),
	}
	if body.Task != nil {
		d.Task = *body.Task
	}
	if body.AutoMerge != nil {
		d.AutoMerge = *body.AutoMerge
	}
	if body.RequiredContexts != nil {
		d.RequiredContexts = append([]string{}, *body.RequiredContexts...)
	}
	if body.Environment != nil {
		d.Environment = *body.Environment
	}
	if body.Description != nil {
		d.Description = *body.Description
		if utf8.RuneCountInString(d.Description) > 140 {
			validationFailed(w, "Deployment", "description", "description is too long (maximum is 140 characters)")
			return
		}
	}
	if body.TransientEnvironment != nil {
		d.TransientEnvironment = *body.TransientEnvironment
	}
	// GitHub's default: production_environment is true for "production".
	d.ProductionEnvironment = d.Environment == "production"
	if body.ProductionEnvironment != nil {
		d.ProductionEnvironment = *body.ProductionEnvironment
	}
	s.deploys[r.ID] = append(s.deploys[r.ID], d)
	writeJSON(w, http.StatusCreated, s.deploymentJSONLocked(r, d))
}

func (s *Server) listDeployments(w http.ResponseWriter, req *http.Request, r *Repo) {
	ds := slices.Clone(r.deployments())
	slices.Reverse(ds) // newest first, as GitHub lists them
	if sha := req.URL.Query().Get("sha"); sha != "" {
		ds = slices.DeleteFunc(ds, func(d *Deployment) bool { return d.SHA != sha })
	}
	if env := req.URL.Query().Get("environment"); env != "" {
		ds = slices.DeleteFunc(ds, func(d *Deployment) bool { return d.Environment != env })
	}
	lo, hi := paginate(w, req, s.srv.URL, len(ds))
	out := []map[string]any{}
	for _, d := range ds[lo:hi] {
		out = append(out, s.deploymentJSONLocked(r, d))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) findDeploymentLocked(w http.ResponseWriter, req *http.Request, r *Repo) *Deployment {
	id, _ := strconv.ParseInt(req.PathValue("id"), 10, 64)
	for _, d := range r.deployments() {
		if d.ID == id {
			return d
		}
	}
	writeError(w, http.StatusNotFound, "Not Found")
	return nil
}

func (s *Server) getDeployment(w http.ResponseWriter, req *http.Request, r *Repo) {
	if d := s.findDeploymentLocked(w, req, r); d != nil {
		writeJSON(w, http.StatusOK, s.deploymentJSONLocked(r, d))
	}
}

func (s *Server) createDeploymentStatus(w http.ResponseWriter, req *http.Request, r *Repo) {
	d := s.findDeploymentLocked(w, req, r)
	if d == nil {
		return
	}
	var body struct {
		State          string  `json:"state"`
		TargetURL      string  `json:"target_url"`
		LogURL         string  `json:"log_url"`
		Description    string  `json:"description"`
		Environment    *string `json:"environment"`
		EnvironmentURL string  `json:"environment_url"`
		AutoInactive   *bool   `json:"auto_inactive"`
	}
	if err := json.NewDecoder(req.Body).Decode(&body); err != nil {
		writeError(w, http.StatusBadRequest, "Problems parsing JSON")
		return
	}
	states := []string{"error", "failure", "inactive", "in_progress", "queued", "pending", "success"}
	if !slices.Contains(states, body.State) {
		validationFailed(w, "DeploymentStatus", "state", "state is not included in the list")
		return
	}
	if utf8.RuneCountInString(body.Description) > 140 {
		validationFailed(w, "DeploymentStatus", "description", "description is too long (maximum is 140 characters)")
		return
	}
	st := DeploymentStatus{
		ID: s.newIDLocked(), State: body.State, Description: body.Description,
		Environment: d.Environment, EnvironmentURL: body.EnvironmentURL,
		LogURL: body.LogURL, TargetURL: body.TargetURL,
		CreatedAt: time.Now().UTC().Truncate(time.Second),
	}
	// log_url replaces target_url; GitHub mirrors one into the other.
	if st.LogURL == "" {
		st.LogURL = st.TargetURL
	} else if st.TargetURL == "" {
		st.TargetURL = st.LogURL
	}
	if body.Environment != nil {
		st.Environment = *body.Environment
	}
	d.Statuses = append(d.Statuses, st)
	// auto_inactive (default true): a success marks the earlier
	// deployments of the same environment inactive, if they succeeded and
	// are neither transient nor production.
	if st.State == "success" && (body.AutoInactive == nil || *body.AutoInactive) {
		for _, o := range r.deployments() {
			if o == d || o.Environment != d.Environment || o.TransientEnvironment || o.ProductionEnvironment ||
				len(o.Statuses) == 0 || o.Statuses[len(o.Statuses)-1].State != "success" {
				continue
			}
			o.Statuses = append(o.Statuses, DeploymentStatus{
				ID: s.newIDLocked(), State: "inactive", Environment: o.Environment, CreatedAt: st.CreatedAt,
			})
		}
	}
	writeJSON(w, http.StatusCreated, s.statusJSONLocked(r, d, st))
}

func (s *Server) listDeploymentStatuses(w http.ResponseWriter, req *http.Request, r *Repo) {
	d := s.findDeploymentLocked(w, req, r)
	if d == nil {
		return
	}
	sts := slices.Clone(d.Statuses)
	slices.Reverse(sts)
	lo, hi := paginate(w, req, s.srv.URL, len(sts))
	out := []map[string]any{}
	for _, st := range sts[lo:hi] {
		out = append(out, s.statusJSONLocked(r, d, st))
	}
	writeJSON(w, http.StatusOK, out)
}
