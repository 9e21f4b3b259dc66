// Package certs gives Velo's routers their TLS certificates: obtained and
// renewed with ACME through certmagic (or read from files the operator
// brings), kept in Velo's store so that every router of a cluster shares
// them and only one obtains each.
//
// It owns certmagic's Storage on the store (sealed with the secrets
// keyring, with a lease-based Locker), the on-demand policy (a certificate
// only for a host Velo serves, never for whatever name a client sends in
// SNI), and the plain-HTTP side: ACME HTTP-01 challenges answered, every
// other request redirected to HTTPS. It does not route: the router says
// which hosts it serves.
package certs
