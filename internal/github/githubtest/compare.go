package githubtest

import (
	"maps"
	"net/http"
	"slices"
	"strings"
)

// maxCompareFiles is the most files GitHub lists in a comparison; the list
// is cut there, and the file list does not page.
const maxCompareFiles = 300

// SetHead points branch at sha, as a force-push does (git reset --hard
// HEAD~1 && git push --force). sha must be a commit of the repository.
func (r *Repo) SetHead(branch, sha string) {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	if r.commits[sha] == nil {
		r.s.t.Fatalf("githubtest: %s has no commit %s", r.FullName(), sha)
	}
	r.branches[branch] = sha
}

// ancestorsLocked returns sha and every commit it descends from.
func (r *Repo) ancestorsLocked(sha string) map[string]bool {
	out := map[string]bool{}
	for c := r.commits[sha]; c != nil && !out[c.sha]; c = r.commits[c.parent] {
		out[c.sha] = true
	}
	return out
}

// chainLocked returns the commits reachable from head but not from base,
// oldest first.
func (r *Repo) chainLocked(base, head string) []*commit {
	from := r.ancestorsLocked(base)
	var chain []*commit
	for c := r.commits[head]; c != nil && !from[c.sha]; c = r.commits[c.parent] {
		chain = append(chain, c)
	}
	slices.Reverse(chain)
	return chain
}

// changedLocked returns the paths whose content differs between two trees
// (nil: the empty tree), sorted.
func changedLocked(a, b *commit) []string {
	var af, bf map[string]string
	if a != nil {
		af = a.files
	}
	if b != nil {
		bf = b.files
	}
	set := map[string]bool{}
	for p, v := range bf {
		if old, ok := af[p]; !ok || old != v {
			set[p] = true
		}
	}
	for p := range af {
		if _, ok := bf[p]; !ok {
			set[p] = true
		}
	}
	return slices.Sorted(maps.Keys(set))
}

// compare serves GET /repos/{o}/{r}/compare/{base}...{head} as GitHub
// documents it: status ahead, behind, identical or diverged with ahead_by,
// behind_by and total_commits; commits (reachable from head, not from
// base, oldest first) paginated; files changed from the merge base to head,
// at most 300 and on the first page only. An unknown ref is 404, as are
// commits without a common ancestor.
func (s *Server) compare(w http.ResponseWriter, req *http.Request, r *Repo) {
	base, head, ok := strings.Cut(req.PathValue("basehead"), "...")
	if !ok {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	bc, hc := r.resolveLocked(base), r.resolveLocked(head)
	if bc == nil || hc == nil || base == "" || head == "" {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	fromBase := r.ancestorsLocked(bc.sha)
	var mergeBase *commit
	for c := hc; c != nil; c = r.commits[c.parent] {
		if fromBase[c.sha] {
			mergeBase = c
			break
		}
	}
	if mergeBase == nil {
		writeError(w, http.StatusNotFound, "No common ancestor between "+base+" and "+head+".")
		return
	}
	ahead := r.chainLocked(bc.sha, hc.sha)
	behind := r.chainLocked(hc.sha, bc.sha)
	status := "diverged"
	switch {
	case len(ahead) == 0 && len(behind) == 0:
		status = "identical"
	case len(behind) == 0:
		status = "ahead"
	case len(ahead) == 0:
		status = "behind"
	}
	lo, hi := 0, len(ahead)
	q := req.URL.Query()
	paged := q.Has("per_page") || q.Has("page")
	if paged {
		lo, hi = paginate(w, req, s.srv.URL, len(ahead))
	} else {
		// Without paging parameters GitHub lists the newest 250.
		lo = max(0, len(ahead)-250)
	}
	commits := []map[string]any{}
	for _, c := range ahead[lo:hi] {
		commits = append(commits, s.commitJSONLocked(r, c))
	}
	files := []map[string]any{}
	if !paged || q.Get("page") == "" || q.Get("page") == "1" {
		for _, p := range changedLocked(mergeBase, hc) {
			if len(files) == maxCompareFiles {
				break
			}
			st := "modified"
			_, inBase := mergeBase.files[p]
			_, inHead := hc.files[p]
			switch {
			case !inBase:
				st = "added"
			case !inHead:
				st = "removed"
			}
			files = append(files, map[string]any{
				"sha": hc.tree, "filename": p, "status": st, "additions": 1, "deletions": 0, "changes": 1,
				"blob_url":     s.WebURL() + "/" + r.FullName() + "/blob/" + hc.sha + "/" + p,
				"raw_url":      s.WebURL() + "/" + r.FullName() + "/raw/" + hc.sha + "/" + p,
				"contents_url": s.URL() + "repos/" + r.FullName() + "/contents/" + p + "?ref=" + hc.sha,
			})
		}
	}
	u := s.URL() + "repos/" + r.FullName() + "/compare/" + base + "..." + head
	writeJSON(w, http.StatusOK, map[string]any{
		"url": u, "html_url": s.WebURL() + "/" + r.FullName() + "/compare/" + base + "..." + head,
		"permalink_url": s.WebURL() + "/" + r.FullName() + "/compare/" + r.Owner + ":" + bc.sha[:7] + "..." + r.Owner + ":" + hc.sha[:7],
		"diff_url":      s.WebURL() + "/" + r.FullName() + "/compare/" + base + "..." + head + ".diff",
		"patch_url":     s.WebURL() + "/" + r.FullName() + "/compare/" + base + "..." + head + ".patch",
		"base_commit":   s.commitJSONLocked(r, bc), "merge_base_commit": s.commitJSONLocked(r, mergeBase),
		"status": status, "ahead_by": len(ahead), "behind_by": len(behind), "total_commits": len(ahead),
		"commits": commits, "files": files,
	})
}
