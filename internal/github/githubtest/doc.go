// Package githubtest is a stand-in for GitHub (api.github.com, github.com
// and codeload.github.com in one loopback httptest server) for tests across
// Velo. It speaks the documented REST API for what Velo uses — App JWTs
// and installation tokens, repositories, commits, tarballs (302 to a
// codeload-like URL), deployments and statuses, users and OAuth, the App
// manifest flow — with GitHub's status codes, error bodies and archive
// layout, and it sends webhooks signed exactly like GitHub's.
//
// It is faithful where Velo could get GitHub wrong (JWT claims, token
// scoping, redirect without credentials, signature headers) and simple
// elsewhere: repositories are in-memory snapshots of files, there is one
// App per server, and nothing ever leaves 127.0.0.1.
package githubtest
