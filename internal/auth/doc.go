// Package auth signs people in to Velo's dashboard and API: GitHub OAuth
// through the GitHub App, a one-click admin sign-in for `velo up`, and the
// sessions both create (a random secret in an HttpOnly cookie, only its
// sha256 stored, with an expiry). It also answers which repositories a
// signed-in GitHub user can reach through the App's installations, so that
// deploymgr shows them only their components.
//
// It owns cookies, sessions and users' GitHub tokens; it must not decide
// what a user may do with a component (deploymgr does, from the
// repositories reported here) or render pages (the dashboard does).
package auth
