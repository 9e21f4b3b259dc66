// Package github is Velo's client for GitHub as a GitHub App: installation
// tokens, commit tarballs, deployments and their statuses, the repositories a
// user or an installation can see, OAuth sign-in, the App manifest flow, and
// webhook verification and parsing.
//
// It owns the translation between GitHub's API (through go-github and
// ghinstallation) and the few plain types the rest of Velo needs (Push,
// Installation, Repo, CommitInfo). It must not decide what a push means for a
// deployment, touch the store or log: it returns errors and leaves policy to
// deploymgr. Every API base URL comes from Config, so GitHub Enterprise Server
// and the githubtest stand-in work the same as github.com.
package github
