package main

import (
	"fmt"
	"net/http"
	"net/netip"
	"strings"
)

// Who a request comes from, for a key's IP allowlist and the admin-token
// throttle: the connection's address, unless the connection comes from one
// of --trusted-proxies. Then it is the right-most address in
// X-Forwarded-For that is not a trusted proxy's: each proxy appends the
// address it heard from, so everything to the left of what trusted proxies
// appended is the client's own word. A forwarded address is never taken
// from a peer that is not trusted, and a list a trusted proxy passed on
// that cannot be read (an entry that is not an address) gives no address
// at all, which no allowlist holds: an allowlist fails closed.

// maxAllowedIPs is how many CIDRs a key's allowlist may hold.
const maxAllowedIPs = 100

// clientIP is the address r comes from, as above; the zero Addr when it
// cannot be told (r nil, an unreadable forwarded list).
func (s *server) clientIP(r *http.Request) netip.Addr {
	if r == nil {
		return netip.Addr{}
	}
	peer := peerAddr(r.RemoteAddr)
	if len(s.cfg.trustedProxies) == 0 || !prefixesContain(s.cfg.trustedProxies, peer) {
		return peer
	}
	return forwardedClient(r.Header["X-Forwarded-For"], peer, s.cfg.trustedProxies)
}

// peerAddr is the address of a connection's "host:port", unmapped (an
// IPv4 client of an IPv6 socket is its IPv4 address) and without a zone.
func peerAddr(remote string) netip.Addr {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().WithZone("").Unmap()
}

// forwardedClient walks the X-Forwarded-For values (all the header's
// lines, in order, as one comma-separated list) from the right, past the
// trusted proxies' addresses, to the first that is not one. Empty list
// elements are skipped; an element that is not an address ends the walk
// with none. If every element is trusted, the request came from a trusted
// proxy itself: the left-most of them, or peer when there are none.
func forwardedClient(values []string, peer netip.Addr, trusted []netip.Prefix) netip.Addr {
	client := peer
	for i := len(values) - 1; i >= 0; i-- {
		v := values[i]
		for end := len(v); end >= 0; {
			start := strings.LastIndexByte(v[:end], ',') + 1
			if item := strings.Trim(v[start:end], " \t"); item != "" {
				a := forwardedAddr(item)
				if !a.IsValid() {
					return netip.Addr{}
				}
				if !prefixesContain(trusted, a) {
					return a
				}
				client = a
			}
			end = start - 1
		}
	}
	return client
}

// forwardedAddr reads one X-Forwarded-For element: an address, maybe with
// a port ("192.0.2.1:5678", "[2001:db8::1]:80") or in brackets; the zero
// Addr if it is none of these.
func forwardedAddr(s string) netip.Addr {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.WithZone("").Unmap()
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().WithZone("").Unmap()
	}
	if inner, ok := strings.CutPrefix(s, "["); ok {
		if inner, ok = strings.CutSuffix(inner, "]"); ok {
			if a, err := netip.ParseAddr(inner); err == nil && a.Is6() {
				return a.WithZone("").Unmap()
			}
		}
	}
	return netip.Addr{}
}

func prefixesContain(prefixes []netip.Prefix, a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	for _, p := range prefixes {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// parseCIDRs reads a list of CIDRs, each an address with a prefix length
// ("10.0.0.0/8", "2001:db8::/32") or a bare address, which stands for
// itself alone (/32, /128). The bits past the prefix length must be zero,
// so that "10.0.0.1/8" (meant as 10.0.0.0/8, or as 10.0.0.1?) is refused
// rather than guessed at; IPv4-mapped IPv6 and zones are refused, since
// client addresses are compared unmapped.
func parseCIDRs(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, s := range list {
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				return nil, fmt.Errorf("%q is not a CIDR like 192.0.2.0/24 or 2001:db8::/32", s)
			}
			if p.Masked() != p {
				return nil, fmt.Errorf("%q has bits set past its prefix length: write %s, or the address alone", s, p.Masked())
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil || a.Zone() != "" {
				return nil, fmt.Errorf("%q is not a CIDR like 192.0.2.0/24 or 2001:db8::/32", s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() {
			return nil, fmt.Errorf("%q is an IPv4-mapped IPv6 prefix: write it as IPv4", s)
		}
		out = append(out, p)
	}
	return out, nil
}

// canonicalCIDRs checks a key's "allowed_ips" and writes each as its
// canonical prefix (a bare address gets its /32 or /128); none is nil.
func canonicalCIDRs(list []string) ([]string, *apiError) {
	if len(list) > maxAllowedIPs {
		return nil, invalidRequest(`Field "allowed_ips" may hold at most %d CIDRs.`, maxAllowedIPs)
	}
	prefixes, err := parseCIDRs(list)
	if err != nil {
		return nil, invalidRequest(`Field "allowed_ips" holds %s.`, err)
	}
	var out []string
	for _, p := range prefixes {
		out = append(out, p.String())
	}
	return out, nil
}

// parseTrustedProxies reads --trusted-proxies, a comma-separated list of
// CIDRs or addresses.
func parseTrustedProxies(spec string) ([]netip.Prefix, error) {
	if strings.TrimSpace(spec) == "" {
		return nil, nil
	}
	var list []string
	for _, item := range strings.Split(spec, ",") {
		list = append(list, strings.TrimSpace(item))
	}
	prefixes, err := parseCIDRs(list)
	if err != nil {
		return nil, fmt.Errorf("--trusted-proxies: %w", err)
	}
	return prefixes, nil
}
