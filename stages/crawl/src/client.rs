//! The process's one HTTP client, and the address guard in its DNS resolver.
//!
//! The SSRF guard sits in the resolver, so the address checked is the address connected to:
//! a host that resolves to a public address for the check and a private one for the
//! connection (DNS rebinding) cannot slip through. IP-literal URLs never reach a resolver, so
//! [`AddressGuard::check_url`] covers those before each request (each redirect hop included).

use anyhow::Context as _;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::settings::Settings;

/// Refuses non-public addresses unless told otherwise, and applies `resolve:` overrides.
#[derive(Clone)]
pub struct AddressGuard {
    allow_private: bool,
    overrides: Arc<HashMap<String, SocketAddr>>,
}

/// Why an address is refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "{host} resolves to {addr}, a {range} address (set allow_private_addresses: true to allow)"
)]
pub struct Blocked {
    host: String,
    addr: IpAddr,
    range: &'static str,
}

/// The kind of non-public range `ip` is in, if any.
pub fn non_public_range(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_private() {
                Some("private")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_unspecified() || o[0] == 0 {
                Some("unspecified")
            } else if v4.is_broadcast() || v4.is_multicast() || o[0] >= 240 {
                Some("reserved")
            } else if o[0] == 100 && (o[1] & 0xc0) == 64 {
                Some("shared (carrier-grade NAT)")
            } else if o[0] == 198 && (o[1] & 0xfe) == 18 {
                Some("benchmarking")
            } else if matches!(o[..3], [192, 0, 2] | [198, 51, 100] | [203, 0, 113]) {
                Some("documentation")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return non_public_range(IpAddr::V4(v4));
            }
            let s = v6.segments();
            if v6.is_loopback() {
                Some("loopback")
            } else if v6.is_unspecified() {
                Some("unspecified")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("private (unique local)")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("link-local")
            } else if (s[0] & 0xffc0) == 0xfec0 {
                Some("private (site-local)")
            } else if v6.is_multicast() {
                Some("reserved")
            } else if s[..6] == [0; 6] {
                // IPv4-compatible (::a.b.c.d, deprecated): no public host has one.
                Some("reserved (IPv4-compatible)")
            } else if s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1 {
                Some("private (local-use NAT64)")
            } else if s[0] == 0x64 && s[1] == 0xff9b {
                // NAT64 embeds an IPv4 address: judge that one.
                non_public_range(IpAddr::V4(v4_of(s[6], s[7])))
            } else if s[0] == 0x2002 {
                // 6to4 embeds an IPv4 address after the prefix: judge that one.
                non_public_range(IpAddr::V4(v4_of(s[1], s[2])))
            } else if s[0] == 0x2001 && s[1] == 0x0db8 {
                Some("documentation")
            } else {
                None
            }
        }
    }
}

/// The IPv4 address held in two IPv6 segments.
fn v4_of(high: u16, low: u16) -> std::net::Ipv4Addr {
    let [a, b] = high.to_be_bytes();
    let [c, d] = low.to_be_bytes();
    std::net::Ipv4Addr::new(a, b, c, d)
}

impl AddressGuard {
    /// A guard from the stage settings.
    pub fn new(settings: &Settings) -> Self {
        let overrides = settings
            .resolve
            .iter()
            .filter_map(|(h, a)| Some((h.to_ascii_lowercase(), a.parse().ok()?)))
            .collect();
        Self {
            allow_private: settings.allow_private_addresses,
            overrides: Arc::new(overrides),
        }
    }

    /// Checks one address of `host`.
    pub fn check(&self, host: &str, addr: IpAddr) -> Result<(), Blocked> {
        if self.allow_private {
            return Ok(());
        }
        match non_public_range(addr) {
            Some(range) => Err(Blocked {
                host: host.to_string(),
                addr,
                range,
            }),
            None => Ok(()),
        }
    }

    /// Checks a URL whose host is an IP literal (names are checked when resolved).
    pub fn check_url(&self, url: &Url) -> Result<(), Blocked> {
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        self.check(&ip.to_string(), ip)
    }
}

impl Resolve for AddressGuard {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.clone();
        let host = name.as_str().to_ascii_lowercase();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = match guard.overrides.get(&host) {
                Some(a) => vec![*a],
                None => tokio::net::lookup_host((host.as_str(), 0)).await?.collect(),
            };
            // Any refused address refuses the host: a mixed answer is how rebinding works.
            for a in &addrs {
                guard.check(&host, a.ip())?;
            }
            if addrs.is_empty() {
                return Err(format!("{host}: no addresses").into());
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// Builds the process's HTTP client: pooled, HTTP/1.1 and HTTP/2, gzip/brotli/deflate, no
/// automatic redirects (each hop is checked by the crawler), no proxy from the environment.
pub fn http_client(settings: &Settings, guard: AddressGuard) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .user_agent(settings.user_agent.clone())
        .connect_timeout(settings.connect_timeout.0)
        .timeout(settings.timeout.0)
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(Arc::new(guard))
        .no_proxy()
        .pool_max_idle_per_host(settings.per_domain_concurrency.max(8) as usize)
        .tcp_nodelay(true)
        .build()
        .context("building the HTTP client")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_ranges_are_named() {
        for (a, r) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "private (unique local)"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("64:ff9b::a00:1", "private"),
            ("64:ff9b:1::808:808", "private (local-use NAT64)"),
            ("::7f00:1", "reserved (IPv4-compatible)"),
            ("::808:808", "reserved (IPv4-compatible)"),
            ("2002:a00:1::1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("fec0::1", "private (site-local)"),
            ("feff::1", "private (site-local)"),
            ("192.0.2.10", "documentation"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.255", "documentation"),
            ("2001:db8::1", "documentation"),
        ] {
            assert_eq!(non_public_range(ip(a)), Some(r), "{a}");
        }
        for a in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "172.32.0.1",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "192.0.3.1",
            "203.0.114.1",
            "2001:db9::1",
        ] {
            assert_eq!(non_public_range(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn guard_refuses_ip_literals_unless_allowed() {
        let mut s = Settings::default();
        let g = AddressGuard::new(&s);
        assert!(g
            .check_url(&"http://169.254.169.254/latest".parse().unwrap())
            .is_err());
        assert!(g.check_url(&"http://[::1]:8080/".parse().unwrap()).is_err());
        assert!(g.check_url(&"http://example.org/".parse().unwrap()).is_ok());
        s.allow_private_addresses = true;
        let g = AddressGuard::new(&s);
        assert!(g.check_url(&"http://127.0.0.1/".parse().unwrap()).is_ok());
    }

    #[tokio::test]
    async fn resolver_applies_overrides_and_the_guard() {
        let mut s = Settings::default();
        s.resolve
            .insert("site.test".into(), "127.0.0.1:8081".into());
        let g = AddressGuard::new(&s);
        let name: Name = "site.test".parse().unwrap();
        let err = g.resolve(name).await.err().expect("loopback refused");
        assert!(err.to_string().contains("loopback"), "{err}");
        s.allow_private_addresses = true;
        let g = AddressGuard::new(&s);
        let addrs: Vec<_> = g
            .resolve("SITE.test".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert_eq!(addrs, vec!["127.0.0.1:8081".parse().unwrap()]);
        // localhost resolves through the system and is loopback.
        let g = AddressGuard::new(&Settings::default());
        assert!(g.resolve("localhost".parse().unwrap()).await.is_err());
    }
}
