//! Which addresses a DNS question may be sent to when the address was learnt from a
//! tenant's delegation (the A records of its NS hosts).
//!
//! A tenant controls its delegation, so it can name any address as its nameserver:
//! loopback, a private range, a link-local or cluster address. Asking there would be
//! a port-53 probe of our own network whose result the tenant then reads in its
//! check. Only globally reachable unicast addresses are asked; the servers the
//! operator configured (`DNS_NAMESERVERS`, the system resolvers) are not filtered.
//!
//! `std`'s `IpAddr::is_global` is unstable, so the ranges are written out here
//! (IANA's IPv4 and IPv6 special-purpose address registries, RFC 6890).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Whether `ip` is a globally reachable unicast address: the only kind a
/// nameserver learnt from a tenant's delegation may have.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_global_v4(v4),
        IpAddr::V6(v6) => is_global_v6(v6),
    }
}

/// `(network, prefix length)` of the IPv4 ranges that are not global.
const NON_GLOBAL_V4: &[([u8; 4], u8)] = &[
    ([0, 0, 0, 0], 8),       // "this network", 0.0.0.0 unspecified (RFC 791, 1122)
    ([10, 0, 0, 0], 8),      // private (RFC 1918)
    ([100, 64, 0, 0], 10),   // shared address space, CGNAT (RFC 6598)
    ([127, 0, 0, 0], 8),     // loopback (RFC 1122)
    ([169, 254, 0, 0], 16),  // link-local, cloud metadata (RFC 3927)
    ([172, 16, 0, 0], 12),   // private (RFC 1918)
    ([192, 0, 0, 0], 24),    // IETF protocol assignments (RFC 6890)
    ([192, 0, 2, 0], 24),    // documentation, TEST-NET-1 (RFC 5737)
    ([192, 88, 99, 0], 24),  // deprecated 6to4 relay anycast (RFC 7526)
    ([192, 168, 0, 0], 16),  // private (RFC 1918)
    ([198, 18, 0, 0], 15),   // benchmarking (RFC 2544)
    ([198, 51, 100, 0], 24), // documentation, TEST-NET-2 (RFC 5737)
    ([203, 0, 113, 0], 24),  // documentation, TEST-NET-3 (RFC 5737)
    ([224, 0, 0, 0], 4),     // multicast (RFC 5771)
    ([240, 0, 0, 0], 4),     // reserved, and 255.255.255.255 broadcast (RFC 1112, 919)
];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn is_global_v4(ip: Ipv4Addr) -> bool {
    !NON_GLOBAL_V4.iter().any(|(net, len)| in_v4(ip, *net, *len))
}

/// `(network, prefix length)` of the IPv6 ranges that are not global (those that
/// embed an IPv4 address are judged by it, see [`embedded_v4`]).
const NON_GLOBAL_V6: &[(u128, u8)] = &[
    (0, 96),                      // ::/96: unspecified, loopback, IPv4-compatible (deprecated)
    (0x0064_ff9b_0001 << 80, 48), // 64:ff9b:1::/48 local-use IPv4/IPv6 translation (RFC 8215)
    (0x0100 << 112, 64),          // 100::/64 discard-only (RFC 6666)
    (0x2001 << 112, 23),          // 2001::/23 IETF protocol assignments, Teredo (RFC 2928, 4380)
    (0x2001_0db8 << 96, 32),      // 2001:db8::/32 documentation (RFC 3849)
    (0x3fff << 112, 20),          // 3fff::/20 documentation (RFC 9637)
    (0xfc00 << 112, 7),           // fc00::/7 unique local (RFC 4193)
    (0xfe80 << 112, 10),          // fe80::/10 link-local (RFC 4291)
    (0xfec0 << 112, 10),          // fec0::/10 site-local, deprecated (RFC 3879)
    (0xff00 << 112, 8),           // ff00::/8 multicast (RFC 4291)
];

fn in_v6(ip: Ipv6Addr, net: u128, len: u8) -> bool {
    let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
    u128::from(ip) & mask == net & mask
}

/// The IPv4 address a packet to `ip` ends up at: IPv4-mapped `::ffff:a.b.c.d`
/// (RFC 4291), the NAT64 well-known prefix `64:ff9b::a.b.c.d` (RFC 6052) and 6to4
/// `2002:aabb:ccdd::` (RFC 3056).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from((bits & 0xffff_ffff) as u32);
    if in_v6(ip, 0xffff << 32, 96) || in_v6(ip, 0x0064_ff9b << 96, 96) {
        return Some(low32);
    }
    if in_v6(ip, 0x2002 << 112, 16) {
        return Some(Ipv4Addr::from(((bits >> 80) & 0xffff_ffff) as u32));
    }
    None
}

fn is_global_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = embedded_v4(ip) {
        return is_global_v4(v4);
    }
    !NON_GLOBAL_V6.iter().any(|(net, len)| in_v6(ip, *net, *len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn global(s: &str) -> bool {
        is_global(s.parse().unwrap())
    }

    #[test]
    fn public_unicast_addresses_are_global() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "205.251.192.1",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.3.1",
            "198.17.255.255",
            "223.255.255.255",
            "2001:4860:4860::8888",
            "2606:4700:4700::1111",
            "2a00:1450:4001::1",
            "::ffff:8.8.8.8",
            "64:ff9b::8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert!(global(a), "{a} should be global");
        }
    }

    #[test]
    fn loopback_private_cgnat_and_link_local_ipv4_are_not_global() {
        for a in [
            "127.0.0.1",
            "127.255.255.254",
            "10.0.0.1",
            "10.96.0.10", // a Kubernetes cluster DNS service
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "100.127.255.255",
            "169.254.169.254", // cloud metadata
        ] {
            assert!(!global(a), "{a} should not be global");
        }
    }

    #[test]
    fn unspecified_multicast_broadcast_documentation_and_reserved_ipv4_are_not_global() {
        for a in [
            "0.0.0.0",
            "0.1.2.3",
            "224.0.0.251",
            "239.255.255.250",
            "255.255.255.255",
            "240.0.0.1",
            "192.0.2.53",
            "198.51.100.53",
            "203.0.113.53",
            "198.18.0.1",
            "192.0.0.8",
        ] {
            assert!(!global(a), "{a} should not be global");
        }
    }

    #[test]
    fn loopback_unspecified_unique_and_link_local_ipv6_are_not_global() {
        for a in [
            "::1",
            "::",
            "fc00::1",
            "fd12:3456:789a::53",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "::127.0.0.1", // IPv4-compatible (deprecated)
        ] {
            assert!(!global(a), "{a} should not be global");
        }
    }

    #[test]
    fn multicast_documentation_and_special_ipv6_are_not_global() {
        for a in [
            "ff02::1",
            "ff05::fb",
            "ff0e::1",
            "2001:db8::53",
            "3fff::1",
            "100::1",
            "2001::1",   // Teredo
            "2001:2::1", // benchmarking
            "64:ff9b:1::1",
        ] {
            assert!(!global(a), "{a} should not be global");
        }
    }

    #[test]
    fn ipv6_addresses_that_lead_to_a_non_global_ipv4_address_are_not_global() {
        for a in [
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.53",
            "::ffff:169.254.169.254",
            "::ffff:0.0.0.0",
            "64:ff9b::192.168.0.1",
            "2002:7f00:0001::1", // 6to4 of 127.0.0.1
        ] {
            assert!(!global(a), "{a} should not be global");
        }
    }
}
