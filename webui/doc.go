// Package webui is Velo's dashboard: server-rendered pages (html/template,
// hand-written CSS and a little vanilla JavaScript, all embedded) for
// signing in, the components list with hit sparklines, a component's
// graphs, deployments, build logs, live log tail, environment, and the
// buttons that pause, resume, roll back and delete it, and onboarding.
//
// It owns no authorization: every read and every action goes through the
// REST API (deploymgr), called in-process with the visitor's session cookie
// and, for actions, the CSRF token from the submitted form, so the API's
// per-user scoping and CSRF check decide for the dashboard too. It reads
// nothing else: no store, so it cannot show what the API would not.
package webui
