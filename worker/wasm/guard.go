package wasm

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// Why outbound connections go through a guard: allowed_hosts names origins,
// but a name is only as good as its DNS. A listed "api.example.com" that
// resolves (or is rebound) to 127.0.0.1, 10.0.0.5 or 169.254.169.254 would
// let a module reach the worker, the control plane, the database or the
// cloud's metadata service. So every address a name resolves to is checked
// where it is dialed — in the net.Dialer's Control hook, on the address
// the socket connects to — and refused when it is special. An address only
// gets there when the module's URL names that very address and it is
// listed in allowed_hosts ("http://127.0.0.1:9000"): then the user chose
// it. A proxy from the environment is never used, since it would be dialed
// in place of the checked address.

// refusedError is a call the guard or the redirect check would not make.
type refusedError struct{ reason string }

func (e *refusedError) Error() string { return e.reason }

// guard dials outbound connections, refusing special addresses reached
// through a name.
type guard struct {
	own []netip.Prefix // this host's and the cluster's own addresses
	// lookup resolves a host name; tests replace it.
	lookup func(ctx context.Context, host string) ([]netip.Addr, error)
	dialer net.Dialer // with Control set to check
}

func newGuard(forbidden []netip.Prefix) *guard {
	g := &guard{own: append([]netip.Prefix(nil), forbidden...)}
	// The machine's own addresses, whatever they are: a worker on a
	// public address must not be reachable through a name either.
	if addrs, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(n.IP); ok {
					g.own = append(g.own, netip.PrefixFrom(ip.Unmap(), ip.Unmap().BitLen()))
				}
			}
		}
	}
	g.lookup = func(ctx context.Context, host string) ([]netip.Addr, error) {
		return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	}
	g.dialer = net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second, Control: g.control}
	return g
}

// dialContext is the Transport's DialContext. addr is the URL's host and
// port, which passed allowed_hosts.
func (g *guard) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		// The URL names this address and allowed_hosts lists it.
		return g.direct(ctx, network, ip.String(), port)
	}
	ips, err := g.lookup(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", host, err)
	}
	var errs []error
	for _, ip := range ips {
		if reason := g.forbidden(ip); reason != "" {
			errs = append(errs, &refusedError{reason: fmt.Sprintf("%s resolves to %s, %s", host, ip, reason)})
			continue
		}
		c, err := g.dialer.DialContext(ctx, network, net.JoinHostPort(ip.String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("resolve %s: no addresses", host)
	}
	return nil, errs[0]
}

// direct dials an address the URL names itself, without the check.
func (g *guard) direct(ctx context.Context, network, ip, port string) (net.Conn, error) {
	d := g.dialer
	d.Control = nil
	return d.DialContext(ctx, network, net.JoinHostPort(ip, port))
}

// control checks the address a socket is about to connect to.
func (g *guard) control(_, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return &refusedError{reason: fmt.Sprintf("dial %s: not an address", address)}
	}
	if reason := g.forbidden(ap.Addr()); reason != "" {
		return &refusedError{reason: fmt.Sprintf("%s is %s", ap.Addr(), reason)}
	}
	return nil
}

// specialPrefixes are the ranges no name may lead to besides loopback,
// private and link-local: "this network", shared address space (CGNAT),
// IETF protocol assignments, documentation and benchmarking ranges,
// reserved and broadcast, discard-only, Teredo, deprecated site-local.
var specialPrefixes = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("192.0.2.0/24"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("198.51.100.0/24"),
	netip.MustParsePrefix("203.0.113.0/24"),
	netip.MustParsePrefix("240.0.0.0/4"),
	netip.MustParsePrefix("100::/64"),
	netip.MustParsePrefix("2001::/32"),
	netip.MustParsePrefix("2001:db8::/32"),
	netip.MustParsePrefix("fec0::/10"),
}

// Prefixes that carry an IPv4 address, checked as that address: NAT64
// (RFC 6052) and 6to4.
var (
	nat64  = netip.MustParsePrefix("64:ff9b::/96")
	sixTo4 = netip.MustParsePrefix("2002::/16")
)

// forbidden says why a name may not lead to ip, or "" when it may.
func (g *guard) forbidden(ip netip.Addr) string {
	ip = ip.Unmap()
	if ip.Zone() != "" {
		return "a scoped address"
	}
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64.Contains(ip):
			if r := g.forbidden(netip.AddrFrom4([4]byte(b[12:16]))); r != "" {
				return r + " (through NAT64)"
			}
		case sixTo4.Contains(ip):
			if r := g.forbidden(netip.AddrFrom4([4]byte(b[2:6]))); r != "" {
				return r + " (through 6to4)"
			}
		}
	}
	switch {
	case ip.IsLoopback():
		return "a loopback address"
	case ip.IsPrivate():
		return "a private address"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return "a link-local address"
	case ip.IsUnspecified(), ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return "a special-purpose address"
	}
	for _, p := range specialPrefixes {
		if p.Contains(ip) {
			return "a special-purpose address"
		}
	}
	for _, p := range g.own {
		if p.Contains(ip) {
			return "an address of this Velo cluster"
		}
	}
	return ""
}
