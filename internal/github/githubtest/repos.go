package githubtest

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha1"
	"encoding/hex"
	"fmt"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Repo is a repository on the stand-in. Its fields are fixed at AddRepo.
type Repo struct {
	ID             int64
	Owner          string
	Name           string
	DefaultBranch  string
	InstallationID int64
	Private        bool

	s        *Server
	created  time.Time
	branches map[string]string // branch → head sha
	commits  map[string]*commit
	perms    map[string]string // lower-case login → role
	// exec holds the paths committed with git's executable mode (100755),
	// which GitHub's tarballs carry as 0775.
	exec map[string]bool
}

// SetExecutable marks path as executable in every commit's tree, as `git
// update-index --chmod=+x path` does for a repository whose history always
// had it so.
func (r *Repo) SetExecutable(path string) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.exec == nil {
		r.exec = map[string]bool{}
	}
	r.exec[path] = true
}

type commit struct {
	sha, tree, parent, message string
	files                      map[string]string
	time                       time.Time
}

// FullName returns "owner/name".
func (r *Repo) FullName() string { return r.Owner + "/" + r.Name }

// AddRepo creates an empty private repository covered by installationID,
// installing the App on owner (as a "User" account) if that installation
// does not exist yet. It has no commits until Commit is called.
func (s *Server) AddRepo(owner, name, defaultBranch string, installationID int64) *Repo {
	s.mu.Lock()
	defer s.mu.Unlock()
	key := strings.ToLower(owner + "/" + name)
	if _, ok := s.repos[key]; ok {
		s.t.Fatalf("githubtest: repo %s/%s exists", owner, name)
	}
	s.addInstallationLocked(installationID, owner, "User")
	r := &Repo{
		ID: s.newIDLocked(), Owner: owner, Name: name, DefaultBranch: defaultBranch,
		InstallationID: installationID, Private: true,
		s: s, created: time.Now().UTC().Truncate(time.Second),
		branches: map[string]string{}, commits: map[string]*commit{},
	}
	s.repos[key] = r
	return r
}

// Repo returns the repository owner/name, or nil.
func (s *Server) Repo(owner, name string) *Repo {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.repos[strings.ToLower(owner+"/"+name)]
}

// Commit commits files (path → content; the complete tree of the new
// commit, not a change set) to the default branch and returns the new
// commit's 40-hex SHA.
func (r *Repo) Commit(files map[string]string, message string) string {
	return r.CommitTo(r.DefaultBranch, files, message)
}

// CommitTo is Commit on branch; a new branch starts from the default
// branch's head.
func (r *Repo) CommitTo(branch string, files map[string]string, message string) string {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	parent, ok := r.branches[branch]
	if !ok {
		parent = r.branches[r.DefaultBranch]
	}
	c := &commit{parent: parent, message: message, files: map[string]string{}, time: time.Now().UTC().Truncate(time.Second)}
	h := sha1.New()
	var tree []string
	for p, content := range files {
		p = strings.TrimPrefix(path.Clean("/"+p), "/")
		c.files[p] = content
		tree = append(tree, p)
	}
	slices.Sort(tree)
	th := sha1.New()
	for _, p := range tree {
		fmt.Fprintf(th, "%s\x00%d\x00%s", p, len(c.files[p]), c.files[p])
	}
	c.tree = hex.EncodeToString(th.Sum(nil))
	// Unique even for identical trees and messages, like a real commit
	// whose committer time differs.
	fmt.Fprintf(h, "tree %s\nparent %s\n%d\n%s\n%s", c.tree, parent, r.s.newIDLocked(), c.time, message)
	c.sha = hex.EncodeToString(h.Sum(nil))
	r.commits[c.sha] = c
	r.branches[branch] = c.sha
	return c.sha
}

// Head returns the SHA branch points to, or "".
func (r *Repo) Head(branch string) string {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	return r.branches[branch]
}

// resolveLocked turns a ref (branch, refs/heads/branch, SHA or a SHA prefix
// of at least 7 digits) into a commit.
func (r *Repo) resolveLocked(ref string) *commit {
	if ref == "" {
		ref = r.DefaultBranch
	}
	ref = strings.TrimPrefix(ref, "refs/heads/")
	if sha, ok := r.branches[ref]; ok {
		return r.commits[sha]
	}
	if c, ok := r.commits[ref]; ok {
		return c
	}
	if len(ref) >= 7 {
		var found *commit
		for sha, c := range r.commits {
			if strings.HasPrefix(sha, ref) {
				if found != nil {
					return nil // ambiguous
				}
				found = c
			}
		}
		return found
	}
	return nil
}

func (s *Server) reposOfLocked(installationID int64) []*Repo {
	var out []*Repo
	for _, r := range s.repos {
		if r.InstallationID == installationID {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b *Repo) int { return int(a.ID - b.ID) })
	return out
}

func sortedIDs[V any](m map[int64]V) []int64 {
	ids := make([]int64, 0, len(m))
	for id := range m {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func (s *Server) ownerJSONLocked(r *Repo) map[string]any {
	in := s.installations[r.InstallationID]
	typ, id := "User", int64(0)
	if in != nil {
		typ, id = in.accountType, in.accountID
	}
	return map[string]any{
		"login": r.Owner, "id": id, "node_id": "U_" + strconv.FormatInt(id, 10),
		"avatar_url":  "https://avatars.githubusercontent.com/u/" + strconv.FormatInt(id, 10) + "?v=4",
		"gravatar_id": "", "url": s.URL() + "users/" + r.Owner, "html_url": s.WebURL() + "/" + r.Owner,
		"type": typ, "site_admin": false,
	}
}

// repoJSONLocked is the repository object of the REST API.
func (s *Server) repoJSONLocked(r *Repo) map[string]any {
	visibility := "public"
	if r.Private {
		visibility = "private"
	}
	return map[string]any{
		"id": r.ID, "node_id": "R_" + strconv.FormatInt(r.ID, 10), "name": r.Name, "full_name": r.FullName(),
		"private": r.Private, "owner": s.ownerJSONLocked(r),
		"html_url": s.WebURL() + "/" + r.FullName(), "description": nil, "fork": false,
		"url":            s.URL() + "repos/" + r.FullName(),
		"clone_url":      s.WebURL() + "/" + r.FullName() + ".git",
		"default_branch": r.DefaultBranch, "visibility": visibility,
		"archived": false, "disabled": false,
		"created_at": r.created.Format(time.RFC3339), "updated_at": r.created.Format(time.RFC3339),
		"pushed_at": r.created.Format(time.RFC3339),
	}
}

// repoHandler runs with s.mu held, for an authorized caller.
type repoHandler func(w http.ResponseWriter, req *http.Request, r *Repo)

// repoAuth admits an installation token of the installation covering the
// repository, or a user token of a user with access to that installation.
// Like GitHub: unknown or expired token 401 "Bad credentials"; no token, or
// a valid token without access, 404 — private repositories do not exist
// for those who cannot see them.
func (s *Server) repoAuth(h repoHandler) http.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request) {
		s.mu.Lock()
		defer s.mu.Unlock()
		tok := bearer(req)
		var covers func(int64) bool
		if id, ok := s.installationForLocked(tok); ok {
			covers = func(inst int64) bool { return inst == id }
		} else if u, ok := s.users[tok]; ok {
			covers = u.has
		} else if tok != "" {
			writeError(w, http.StatusUnauthorized, "Bad credentials")
			return
		}
		r := s.repos[strings.ToLower(req.PathValue("owner")+"/"+req.PathValue("repo"))]
		if r == nil || covers == nil || !covers(r.InstallationID) {
			writeError(w, http.StatusNotFound, "Not Found")
			return
		}
		h(w, req, r)
	}
}

func (s *Server) getRepo(w http.ResponseWriter, _ *http.Request, r *Repo) {
	writeJSON(w, http.StatusOK, s.repoJSONLocked(r))
}

// commitJSONLocked is the commit object of GET /repos/{o}/{r}/commits/{ref}.
func (s *Server) commitJSONLocked(r *Repo, c *commit) map[string]any {
	who := map[string]any{"name": "Mona Lisa", "email": "mona@example.com", "date": c.time.Format(time.RFC3339)}
	parents := []map[string]any{}
	if c.parent != "" {
		parents = append(parents, map[string]any{
			"sha": c.parent, "url": s.URL() + "repos/" + r.FullName() + "/commits/" + c.parent,
			"html_url": s.WebURL() + "/" + r.FullName() + "/commit/" + c.parent,
		})
	}
	return map[string]any{
		"sha": c.sha, "node_id": "C_" + c.sha[:12],
		"commit": map[string]any{
			"author": who, "committer": who, "message": c.message,
			"tree":          map[string]any{"sha": c.tree, "url": s.URL() + "repos/" + r.FullName() + "/git/trees/" + c.tree},
			"url":           s.URL() + "repos/" + r.FullName() + "/git/commits/" + c.sha,
			"comment_count": 0,
		},
		"url":       s.URL() + "repos/" + r.FullName() + "/commits/" + c.sha,
		"html_url":  s.WebURL() + "/" + r.FullName() + "/commit/" + c.sha,
		"author":    map[string]any{"login": "octocat", "id": 583231, "type": "User"},
		"committer": map[string]any{"login": "web-flow", "id": 19864447, "type": "User"},
		"parents":   parents,
	}
}

func (s *Server) getBranch(w http.ResponseWriter, req *http.Request, r *Repo) {
	name := req.PathValue("branch")
	sha, ok := r.branches[name]
	if !ok {
		writeError(w, http.StatusNotFound, "Branch not found")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"name": name, "commit": s.commitJSONLocked(r, r.commits[sha]), "protected": false,
		"_links": map[string]any{
			"self": s.URL() + "repos/" + r.FullName() + "/branches/" + name,
			"html": s.WebURL() + "/" + r.FullName() + "/tree/" + name,
		},
	})
}

func (s *Server) getCommit(w http.ResponseWriter, req *http.Request, r *Repo) {
	ref := req.PathValue("ref")
	c := r.resolveLocked(ref)
	if c == nil || ref == "" {
		writeError(w, http.StatusUnprocessableEntity, "No commit found for SHA: "+ref)
		return
	}
	writeJSON(w, http.StatusOK, s.commitJSONLocked(r, c))
}

// tarballLink answers like GitHub: 302 to a codeload URL that carries its
// own short-lived token, so the download needs no Authorization header.
func (s *Server) tarballLink(w http.ResponseWriter, req *http.Request, r *Repo) {
	c := r.resolveLocked(req.PathValue("ref"))
	if c == nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	tok := "GHSAT0AAAAAA" + strings.ToUpper(randAlnum(40))
	s.archiveTokens[tok] = archiveToken{repo: r, sha: c.sha, expires: time.Now().Add(5 * time.Minute)}
	loc := fmt.Sprintf("%s/_codeload/%s/%s/legacy.tar.gz/%s?token=%s", s.srv.URL, r.Owner, r.Name, c.sha, tok)
	w.Header().Set("Location", loc)
	w.WriteHeader(http.StatusFound)
}

// Download records one request to the codeload stand-in.
type Download struct {
	Path string
	// Authorization is the header the download arrived with; GitHub's
	// client must not send one (the installation token would leak to
	// another host).
	Authorization string
	Status        int
}

// Downloads returns the tarball downloads so far, in order.
func (s *Server) Downloads() []Download {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.downloads)
}

func (s *Server) codeload(w http.ResponseWriter, req *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := Download{Path: req.URL.Path, Authorization: req.Header.Get("Authorization"), Status: http.StatusNotFound}
	defer func() { s.downloads = append(s.downloads, d) }()
	at, ok := s.archiveTokens[req.URL.Query().Get("token")]
	if !ok || time.Now().After(at.expires) || at.sha != req.PathValue("sha") ||
		!strings.EqualFold(at.repo.FullName(), req.PathValue("owner")+"/"+req.PathValue("repo")) {
		http.Error(w, "404: Not Found", http.StatusNotFound)
		return
	}
	r, c := at.repo, at.repo.commits[at.sha]
	prefix := fmt.Sprintf("%s-%s-%s", r.Owner, r.Name, c.sha[:7])
	w.Header().Set("Content-Type", "application/x-gzip")
	w.Header().Set("Content-Disposition", "attachment; filename="+prefix+".tar.gz")
	d.Status = http.StatusOK
	if err := writeTarball(w, prefix, c, r.exec); err != nil {
		s.t.Errorf("githubtest: write tarball: %v", err)
	}
}

// writeTarball writes the archive as git archive (and so GitHub) does: a pax
// global header whose comment is the commit SHA, then every directory and
// file under prefix/, directories before their contents, in git's order.
func writeTarball(w http.ResponseWriter, prefix string, c *commit, exec map[string]bool) error {
	zw := gzip.NewWriter(w)
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{
		Typeflag:   tar.TypeXGlobalHeader,
		Name:       "pax_global_header",
		PAXRecords: map[string]string{"comment": c.sha},
	}); err != nil {
		return err
	}
	// Entries sort by path with directories compared as "dir/", which puts
	// every directory right before its contents.
	entries := map[string]bool{prefix + "/": true}
	for p := range c.files {
		entries[prefix+"/"+p] = true
		for d := path.Dir(p); d != "."; d = path.Dir(d) {
			entries[prefix+"/"+d+"/"] = true
		}
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		hdr := &tar.Header{Name: n, ModTime: c.time, Uname: "root", Gname: "root"}
		if strings.HasSuffix(n, "/") {
			hdr.Typeflag, hdr.Mode = tar.TypeDir, 0o775
		} else {
			p := strings.TrimPrefix(n, prefix+"/")
			content := c.files[p]
			hdr.Typeflag, hdr.Mode, hdr.Size = tar.TypeReg, 0o664, int64(len(content))
			if exec[p] {
				hdr.Mode = 0o775
			}
			if err := tw.WriteHeader(hdr); err != nil {
				return err
			}
			if _, err := tw.Write([]byte(content)); err != nil {
				return err
			}
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	return zw.Close()
}
