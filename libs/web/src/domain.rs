//! Registrable domain (eTLD+1) lookup through the Public Suffix List.
//!
//! The list is compiled into the binary from `data/public_suffix_list.dat`
//! (a copy of Debian's `publicsuffix` package) so that lookups never touch the
//! file system or network, and every stage in a deployment agrees on the same
//! list version. It is parsed once, on first use.
//!
//! Both the ICANN and the private section count: `alice.github.io` and
//! `bob.github.io` are different sites for politeness and link classification,
//! which is exactly what the private section is for.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::LazyLock;

use publicsuffix::{List, Psl};
use url::Url;

static LIST: LazyLock<List> = LazyLock::new(|| {
    include_str!("../data/public_suffix_list.dat")
        .parse()
        .expect("bundled public suffix list parses")
});

/// Registrable domain (public suffix plus one label) of a host name.
///
/// The host is lowercased and trailing dots are removed first. Hosts that
/// have no registrable domain are returned as they are (after that cleanup),
/// so the result can always serve as a grouping key:
///
/// - IP addresses: `127.0.0.1` stays, IPv6 comes back bracketed as in a URL
///   (`::1` and `[::1]` both give `[::1]`);
/// - single-label hosts such as `localhost`;
/// - hosts that are themselves a public suffix (`co.uk`, `github.io`);
/// - malformed names with empty labels where the lookup would yield one.
///
/// Unicode and punycode hosts are both understood, and each is answered in
/// the form it was given (`bücher.de`, `xn--bcher-kva.de`).
pub fn registrable_domain(host: &str) -> String {
    let host = host.trim_end_matches('.').to_lowercase();

    // Must come before the list lookup: the list's implicit `*` rule would
    // treat the last octet as a TLD and answer `0.1` for `127.0.0.1`.
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        if inner.parse::<Ipv6Addr>().is_ok() {
            return host;
        }
    }
    if host.parse::<Ipv6Addr>().is_ok() {
        return format!("[{host}]");
    }
    if host.parse::<Ipv4Addr>().is_ok() || !host.contains('.') {
        return host;
    }

    match LIST.domain(host.as_bytes()) {
        // Lookup results are suffixes of valid UTF-8 starting at a label
        // boundary (just after a `.`), so they are valid UTF-8 too.
        Some(domain) => match std::str::from_utf8(domain.as_bytes()) {
            Ok(domain) if !domain.starts_with('.') => domain.to_owned(),
            _ => host,
        },
        None => host,
    }
}

/// Registrable domain of a URL's host, or `None` if it has no (or an empty)
/// host, e.g. `mailto:` or `data:` URLs. See [`registrable_domain`].
pub fn registrable_domain_of(url: &Url) -> Option<String> {
    url.host_str()
        .filter(|host| !host.is_empty())
        .map(registrable_domain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(host: &str, expected: &str) {
        assert_eq!(registrable_domain(host), expected, "host {host:?}");
    }

    #[test]
    fn icann_suffixes() {
        check("www.example.co.uk", "example.co.uk");
        check("example.co.uk", "example.co.uk");
        check("a.b.example.com", "example.com");
        check("example.com", "example.com");
        check("www.example.com.au", "example.com.au");
        check("foo.bar.kawasaki.jp", "foo.bar.kawasaki.jp");
    }

    #[test]
    fn wildcard_and_exception_rules() {
        // `*.ck` makes every second-level .ck name a suffix, except `www.ck`.
        check("a.b.example.ck", "b.example.ck");
        check("www.ck", "www.ck");
        check("sub.www.ck", "www.ck");
    }

    #[test]
    fn private_section_counts() {
        check("foo.blogspot.com", "foo.blogspot.com");
        check("x.foo.blogspot.com", "foo.blogspot.com");
        check("alice.github.io", "alice.github.io");
        check("www.alice.github.io", "alice.github.io");
    }

    #[test]
    fn public_suffix_is_its_own_domain() {
        check("co.uk", "co.uk");
        check("github.io", "github.io");
        check("com", "com");
        check("blogspot.com", "blogspot.com");
    }

    #[test]
    fn ips_and_single_labels() {
        check("127.0.0.1", "127.0.0.1");
        check("10.1.2.3.", "10.1.2.3");
        check("[::1]", "[::1]");
        check("::1", "[::1]");
        check("[2001:DB8::1]", "[2001:db8::1]");
        check("localhost", "localhost");
        check("LOCALHOST.", "localhost");
        check("intranet", "intranet");
        check("", "");
        check(".", "");
    }

    #[test]
    fn case_and_trailing_dots() {
        check("example.com.", "example.com");
        check("WWW.Example.COM", "example.com");
        check("www.example.co.uk..", "example.co.uk");
    }

    #[test]
    fn idn_hosts() {
        check("xn--bcher-kva.de", "xn--bcher-kva.de");
        check("www.xn--bcher-kva.de", "xn--bcher-kva.de");
        check("www.bücher.de", "bücher.de");
        // Unicode and punycode spellings of a multi-label IDN suffix.
        check("foo.bar.公司.cn", "bar.公司.cn");
        check("foo.bar.xn--55qx5d.cn", "bar.xn--55qx5d.cn");
    }

    #[test]
    fn unknown_tld_uses_implicit_wildcard() {
        check("a.b.example.invalidtld", "example.invalidtld");
    }

    #[test]
    fn empty_labels_do_not_produce_dot_prefixed_domains() {
        check("example..com", "example..com");
        check("a..example.com", "example.com");
    }

    #[test]
    fn from_urls() {
        let of = |s: &str| registrable_domain_of(&Url::parse(s).unwrap());
        assert_eq!(
            of("https://www.example.co.uk/x"),
            Some("example.co.uk".into())
        );
        assert_eq!(of("http://127.0.0.1:8080/"), Some("127.0.0.1".into()));
        assert_eq!(of("http://[::1]:8080/"), Some("[::1]".into()));
        assert_eq!(of("http://bücher.de/"), Some("xn--bcher-kva.de".into()));
        assert_eq!(of("http://www.example.com./"), Some("example.com".into()));
        assert_eq!(of("mailto:x@y"), None);
        assert_eq!(of("file:///etc/passwd"), None);
    }
}
