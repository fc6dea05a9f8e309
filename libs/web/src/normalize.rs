//! Canonical form of crawlable URLs.
//!
//! The dedup stage keys on the string this module produces, so two spellings
//! of the same resource must come out identical and the function must be
//! idempotent: a URL that has already been through the pipeline (e.g. read
//! back from a topic) must not change key when normalized again.
//!
//! Most of the work is the WHATWG parser in the `url` crate, which already:
//! trims leading/trailing C0 controls and spaces and drops embedded tabs and
//! newlines; lowercases the scheme; lowercases the host and maps IDN labels to
//! punycode (UTS #46); canonicalizes IPv4 (`0x7f.1` → `127.0.0.1`) and IPv6
//! hosts; drops the scheme's default port; resolves `.`/`..` segments,
//! including their `%2e` spellings; treats `\` as `/` in special schemes;
//! gives special schemes a `/` path when it is empty; and percent-encodes
//! non-ASCII and unsafe characters with uppercase hex digits.
//!
//! What it deliberately does not do, and this module adds: strip the trailing
//! dot of a host, drop the fragment and an empty query, normalize existing
//! percent-escapes (decode unreserved ones, uppercase the rest, escape a stray
//! `%`), drop tracking parameters and optionally sort the query.

use std::borrow::Cow;

use serde::Deserialize;
use url::Url;

/// Settings for [`normalize`]; deserializable from stage configuration.
///
/// Unknown keys are rejected so that a typo in a config file fails loudly
/// instead of silently falling back to a default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NormalizeOptions {
    /// Longest accepted normalized URL, in bytes.
    pub max_length: usize,
    /// Query parameter names to drop. A trailing `*` makes the entry a
    /// prefix match (`utm_*`). Names are compared case-sensitively, after
    /// percent-escape normalization, so `%75tm_source` is caught too.
    pub strip_params: Vec<String>,
    /// Sort query parameters by name. The sort is stable, so repeated names
    /// keep their relative order (`a=2&a=1` stays that way), since servers
    /// often read repeated parameters as an ordered list.
    pub sort_query: bool,
    /// Accepted schemes, compared case-insensitively.
    pub schemes: Vec<String>,
    /// Drop session ids: a `;jsessionid=…` path parameter and the query parameters of
    /// [`SESSION_PARAMS`], whatever their case. A site that puts a new session id in every
    /// link would otherwise be an endless supply of new URLs for the same pages.
    pub strip_session_ids: bool,
}

/// Query parameters that carry a session id (compared case-insensitively).
pub const SESSION_PARAMS: [&str; 6] = [
    "jsessionid",
    "phpsessid",
    "sid",
    "sessionid",
    "session_id",
    "aspsessionid",
];

impl Default for NormalizeOptions {
    fn default() -> Self {
        Self {
            max_length: 2048,
            strip_params: [
                "utm_*", "fbclid", "gclid", "msclkid", "mc_cid", "mc_eid", "_ga", "yclid",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            sort_query: false,
            schemes: vec!["http".to_owned(), "https".to_owned()],
            strip_session_ids: true,
        }
    }
}

impl NormalizeOptions {
    fn allows_scheme(&self, scheme: &str) -> bool {
        self.schemes.iter().any(|s| s.eq_ignore_ascii_case(scheme))
    }

    fn strips_param(&self, name: &str) -> bool {
        if self.strip_session_ids && SESSION_PARAMS.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            return true;
        }
        self.strip_params
            .iter()
            .any(|pattern| match pattern.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == pattern,
            })
    }
}

/// Why a URL was not accepted by [`normalize`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// Nothing but whitespace and control characters.
    #[error("empty URL")]
    Empty,
    /// The WHATWG parser refused it (this includes relative URLs such as
    /// `//example.com` or `/path`, as there is no base to resolve against).
    #[error("unparsable URL: {0}")]
    Unparsable(url::ParseError),
    /// The scheme (lowercased) is not in [`NormalizeOptions::schemes`].
    #[error("unsupported scheme `{0}`")]
    UnsupportedScheme(String),
    /// The URL has no host, or only dots as a host.
    #[error("URL has no host")]
    NoHost,
    /// The normalized URL is longer than [`NormalizeOptions::max_length`].
    #[error("URL too long: {len} bytes, limit {max}")]
    TooLong {
        /// Length of the normalized URL in bytes.
        len: usize,
        /// The configured limit.
        max: usize,
    },
}

impl Reject {
    /// Every value [`Reject::code`] can return, so that metrics can
    /// pre-register one counter per reason.
    pub const CODES: &'static [&'static str] = &[
        "empty",
        "unparsable",
        "unsupported_scheme",
        "no_host",
        "too_long",
    ];

    /// Stable machine-readable reason, for metrics labels and dead-letter
    /// records. Unlike the `Display` text these never change.
    pub fn code(&self) -> &'static str {
        match self {
            Reject::Empty => "empty",
            Reject::Unparsable(_) => "unparsable",
            Reject::UnsupportedScheme(_) => "unsupported_scheme",
            Reject::NoHost => "no_host",
            Reject::TooLong { .. } => "too_long",
        }
    }
}

/// Normalizes an absolute URL, see the [module docs](self) for the rules.
///
/// The result is idempotent: normalizing its serialization again yields the
/// same URL.
///
/// # Errors
///
/// A [`Reject`] saying why the input is not a crawlable URL.
pub fn normalize(input: &str, opts: &NormalizeOptions) -> Result<Url, Reject> {
    // The parser trims these itself; checking here only lets us tell "empty"
    // apart from "unparsable".
    if input.trim_matches(|c: char| c <= ' ').is_empty() {
        return Err(Reject::Empty);
    }
    let mut url = Url::parse(input).map_err(|err| {
        // `ftp://` or `ws://` fail to parse (special schemes need a host), but
        // the useful reason is that we would not crawl them anyway.
        match leading_scheme(input) {
            Some(scheme) if !opts.allows_scheme(&scheme) => Reject::UnsupportedScheme(scheme),
            _ if err == url::ParseError::EmptyHost => Reject::NoHost,
            _ => Reject::Unparsable(err),
        }
    })?;

    if !opts.allows_scheme(url.scheme()) {
        return Err(Reject::UnsupportedScheme(url.scheme().to_owned()));
    }

    let host = match url.host_str() {
        Some(host) if !host.is_empty() => host,
        _ => return Err(Reject::NoHost),
    };
    // All trailing dots, not just one: `a.com..` would otherwise need two
    // passes to settle. Lowercasing only matters for non-special schemes
    // configured by the user; the parser already did it for http(s).
    let trimmed = host.trim_end_matches('.');
    if trimmed.is_empty() {
        return Err(Reject::NoHost);
    }
    if trimmed.len() != host.len() || trimmed.bytes().any(|b| b.is_ascii_uppercase()) {
        let new_host = trimmed.to_ascii_lowercase();
        url.set_host(Some(&new_host)).map_err(Reject::Unparsable)?;
    }

    url.set_fragment(None);

    let path = url.path();
    let without_session;
    let path = if opts.strip_session_ids {
        without_session = strip_path_session(path);
        without_session.as_ref()
    } else {
        path
    };
    let new_path = match normalize_escapes(path) {
        p if p.is_empty() => Cow::Borrowed("/"),
        p => p,
    };
    if new_path != url.path() {
        let new_path = new_path.into_owned();
        url.set_path(&new_path);
    }

    if let Some(query) = url.query() {
        let new_query = normalize_query(query, opts);
        if new_query.as_deref() != Some(query) {
            url.set_query(new_query.as_deref());
        }
    }

    let len = url.as_str().len();
    if len > opts.max_length {
        return Err(Reject::TooLong {
            len,
            max: opts.max_length,
        });
    }
    Ok(url)
}

/// [`normalize`], serialized.
///
/// # Errors
///
/// As [`normalize`].
pub fn normalize_str(input: &str, opts: &NormalizeOptions) -> Result<String, Reject> {
    normalize(input, opts).map(String::from)
}

/// `path` without `;jsessionid=…` parameters (any case), which servlet containers put in
/// every link of a client without cookies.
fn strip_path_session(path: &str) -> Cow<'_, str> {
    const PARAM: &str = ";jsessionid=";
    let lower = path.to_ascii_lowercase();
    if !lower.contains(PARAM) {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut rest = 0;
    while let Some(found) = lower[rest..].find(PARAM) {
        let start = rest + found;
        out.push_str(&path[rest..start]);
        // The id runs to the next segment or path parameter.
        let value = start + PARAM.len();
        rest = lower[value..]
            .find(['/', ';'])
            .map_or(path.len(), |end| value + end);
    }
    out.push_str(&path[rest..]);
    Cow::Owned(out)
}

/// The scheme the input would have, if it starts with something shaped like
/// one; used only to classify parse failures.
fn leading_scheme(input: &str) -> Option<String> {
    let trimmed = input.trim_start_matches(|c: char| c <= ' ');
    let (scheme, _) = trimmed.split_once(':')?;
    let mut chars = scheme.chars();
    let shaped = chars.next()?.is_ascii_alphabetic()
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    shaped.then(|| scheme.to_ascii_lowercase())
}

/// New query, or `None` when nothing is left of it.
fn normalize_query(query: &str, opts: &NormalizeOptions) -> Option<String> {
    let query = normalize_escapes(query);
    let name = |param: &str| -> usize { param.find('=').unwrap_or(param.len()) };
    // Empty pieces (`a=1&&b=2`, a leading `&`) carry nothing for form decoding
    // and would otherwise be left behind when a tracking parameter is removed.
    let mut params: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !opts.strips_param(&p[..name(p)]))
        .collect();
    if opts.sort_query {
        params.sort_by(|a, b| a[..name(a)].cmp(&b[..name(b)]));
    }
    if params.is_empty() {
        None
    } else {
        Some(params.join("&"))
    }
}

/// Decodes escapes of unreserved characters, uppercases the hex of the others
/// and escapes a `%` that does not start an escape.
///
/// Only unreserved characters may be decoded: `%2F`, `%3F`, `%26`, `%3D`,
/// `%2B`… mean something different from their literal forms to the server.
/// A stray `%` has to be escaped because decoding could otherwise glue it to
/// the following characters into a new escape (`%%61b` → `%ab`), which a
/// second pass would then change again.
fn normalize_escapes(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('%') {
        out.push_str(&rest[..pos]);
        let after = &rest.as_bytes()[pos + 1..];
        match (
            after.first().copied().and_then(hex_value),
            after.get(1).copied().and_then(hex_value),
        ) {
            (Some(hi), Some(lo)) => {
                let decoded = hi << 4 | lo;
                if is_unreserved(decoded) {
                    out.push(char::from(decoded));
                } else {
                    out.push('%');
                    out.push(char::from(HEX_UPPER[usize::from(hi)]));
                    out.push(char::from(HEX_UPPER[usize::from(lo)]));
                }
                rest = &rest[pos + 3..];
            }
            _ => {
                out.push_str("%25");
                rest = &rest[pos + 1..];
            }
        }
    }
    out.push_str(rest);
    if out == s {
        Cow::Borrowed(s)
    } else {
        Cow::Owned(out)
    }
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

fn hex_value(b: u8) -> Option<u8> {
    char::from(b).to_digit(16).map(|d| d as u8)
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(input: &str) -> Result<String, Reject> {
        normalize_str(input, &NormalizeOptions::default())
    }

    #[track_caller]
    fn ok(input: &str, expected: &str) {
        assert_eq!(norm(input).as_deref(), Ok(expected), "input {input:?}");
        assert_eq!(
            norm(expected).as_deref(),
            Ok(expected),
            "re-normalizing {expected:?}"
        );
    }

    #[track_caller]
    fn rejected(input: &str, code: &str) {
        match norm(input) {
            Err(reject) => assert_eq!(reject.code(), code, "input {input:?}: {reject}"),
            Ok(url) => panic!("input {input:?} accepted as {url:?}, expected {code}"),
        }
    }

    #[test]
    fn brief_example() {
        ok(
            "HTTP://Example.COM:80/a/./b/../c?utm_source=x&b=1#frag",
            "http://example.com/a/c?b=1",
        );
    }

    #[test]
    fn default_ports_are_dropped_and_others_kept() {
        ok("https://example.com:443", "https://example.com/");
        ok("http://example.com:443/", "http://example.com:443/");
        ok("https://example.com:80/", "https://example.com:80/");
        ok("http://example.com:08080/", "http://example.com:8080/");
    }

    #[test]
    fn idn_host_becomes_punycode() {
        ok("http://bücher.de/", "http://xn--bcher-kva.de/");
        ok("http://BÜCHER.de/", "http://xn--bcher-kva.de/");
        ok("http://xn--BCHER-kva.DE/", "http://xn--bcher-kva.de/");
    }

    #[test]
    fn unreserved_escapes_are_decoded() {
        ok("http://example.com/%7euser", "http://example.com/~user");
        ok("http://example.com/%7Euser", "http://example.com/~user");
        ok(
            "http://example.com/%41%2d%5F%2E%30",
            "http://example.com/A-_.0",
        );
        ok("http://example.com/?q=%61%62", "http://example.com/?q=ab");
    }

    #[test]
    fn reserved_escapes_stay_but_get_uppercase_hex() {
        ok("http://example.com/a%2fb", "http://example.com/a%2Fb");
        ok("http://example.com/a%2Fb", "http://example.com/a%2Fb");
        ok(
            "http://example.com/%e2%82%ac",
            "http://example.com/%E2%82%AC",
        );
        ok(
            "http://example.com/p%3fq%23r%25s?a%3db=c%26d%2be",
            "http://example.com/p%3Fq%23r%25s?a%3Db=c%26d%2Be",
        );
    }

    #[test]
    fn raw_non_ascii_is_encoded_by_the_parser() {
        ok("http://example.com/€", "http://example.com/%E2%82%AC");
        ok(
            "http://example.com/a b?c d",
            "http://example.com/a%20b?c%20d",
        );
    }

    #[test]
    fn stray_percent_is_escaped() {
        ok("http://example.com/100%", "http://example.com/100%25");
        ok("http://example.com/%zz", "http://example.com/%25zz");
        // Without escaping the first `%`, this would come out as `%ab` and
        // change again to `%AB` on the next pass.
        ok("http://example.com/%%61b", "http://example.com/%25ab");
    }

    #[test]
    fn host_trailing_dots_are_stripped() {
        ok("http://example.com.", "http://example.com/");
        ok("http://example.com../x", "http://example.com/x");
        ok("http://Example.COM.:8080/", "http://example.com:8080/");
        ok("http://1.2.3.4./", "http://1.2.3.4/");
        rejected("http://./", "no_host");
        rejected("http://.../", "no_host");
    }

    #[test]
    fn ip_hosts() {
        ok("http://[::1]:8080/", "http://[::1]:8080/");
        ok("http://[0:0:0:0:0:0:0:1]/", "http://[::1]/");
        ok("http://0x7f.1/", "http://127.0.0.1/");
        ok("http://127.0.0.1:80/", "http://127.0.0.1/");
    }

    #[test]
    fn dot_segments_and_empty_path() {
        ok("http://example.com", "http://example.com/");
        ok("http://example.com/a/../../..", "http://example.com/");
        ok(
            "http://example.com/a/%2e%2E/b/%2e/c",
            "http://example.com/b/c",
        );
        ok("http://example.com/a/./", "http://example.com/a/");
        ok("http://example.com\\a\\..\\b", "http://example.com/b");
        // Not a dot segment once decoded: the parser only looks at whole
        // segments, and decoding `%2E` inside one is harmless.
        ok(
            "http://example.com/a%2Eb/.%2E.",
            "http://example.com/a.b/...",
        );
    }

    #[test]
    fn fragment_and_empty_query_are_dropped() {
        ok("http://example.com?", "http://example.com/");
        ok("http://example.com/?#", "http://example.com/");
        ok("http://example.com/#frag", "http://example.com/");
        ok(
            "http://example.com/?a=1&utm_medium=2#x",
            "http://example.com/?a=1",
        );
    }

    #[test]
    fn tracking_params_are_stripped_in_order() {
        ok(
            "http://example.com/?z=1&utm_source=a&fbclid=b&y=2&gclid=c&x=3",
            "http://example.com/?z=1&y=2&x=3",
        );
        ok(
            "http://example.com/?utm_source=a&utm_campaign=b",
            "http://example.com/",
        );
        ok("http://example.com/?utm_source", "http://example.com/");
        ok(
            "http://example.com/?%75tm_source=x&a",
            "http://example.com/?a",
        );
        ok(
            "http://example.com/?&&a=1&&b=2&",
            "http://example.com/?a=1&b=2",
        );
        // Only the name matters, and only whole names (or prefixes with `*`).
        ok(
            "http://example.com/?a=utm_source&_gax=1",
            "http://example.com/?a=utm_source&_gax=1",
        );
        // Case-sensitive on purpose: parameter names are case-sensitive.
        ok(
            "http://example.com/?UTM_SOURCE=1",
            "http://example.com/?UTM_SOURCE=1",
        );
        // Encoding of what is kept is left alone (`+` is not turned into `%20`).
        ok(
            "http://example.com/?q=a+b&r=%20",
            "http://example.com/?q=a+b&r=%20",
        );
    }

    #[test]
    fn query_sorting_is_opt_in_and_stable() {
        let opts = NormalizeOptions {
            sort_query: true,
            ..NormalizeOptions::default()
        };
        let sorted = normalize_str("http://example.com/?b=1&a=2&c=3&a=1&utm_x=1", &opts);
        assert_eq!(sorted.as_deref(), Ok("http://example.com/?a=2&a=1&b=1&c=3"));
        assert_eq!(
            norm("http://example.com/?b=1&a=2").as_deref(),
            Ok("http://example.com/?b=1&a=2")
        );
    }

    #[test]
    fn whitespace_and_control_characters() {
        ok("  http://example.com/a  \n", "http://example.com/a");
        ok("http://exa\tmple.com/a\nb\r", "http://example.com/ab");
        rejected("", "empty");
        rejected(" \t\r\n ", "empty");
    }

    #[test]
    fn userinfo_is_kept() {
        ok("http://user:pw@Example.com/", "http://user:pw@example.com/");
        ok("http://@example.com/", "http://example.com/");
    }

    #[test]
    fn unsupported_schemes() {
        rejected("mailto:x@y", "unsupported_scheme");
        rejected("javascript:alert(1)", "unsupported_scheme");
        rejected("ftp://x", "unsupported_scheme");
        rejected("ftp://", "unsupported_scheme");
        rejected("data:text/plain,hi", "unsupported_scheme");
        rejected("file:///etc/passwd", "unsupported_scheme");
        assert_eq!(
            norm("FTP://x"),
            Err(Reject::UnsupportedScheme("ftp".to_owned()))
        );
    }

    #[test]
    fn no_host_or_unparsable() {
        rejected("http://", "no_host");
        rejected("https://:443/", "no_host");
        rejected("//example.com", "unparsable");
        rejected("/just/a/path", "unparsable");
        rejected("example.com", "unparsable");
        rejected("http://[::1/", "unparsable");
        rejected("http://example.com:99999/", "unparsable");
        rejected("http://exa mple.com/", "unparsable");
        assert_eq!(
            norm("//example.com"),
            Err(Reject::Unparsable(url::ParseError::RelativeUrlWithoutBase))
        );
    }

    #[test]
    fn length_limit_applies_to_normalized_form() {
        let long = format!("http://example.com/{}", "a".repeat(3000));
        assert_eq!(
            norm(&long),
            Err(Reject::TooLong {
                len: 3019,
                max: 2048
            })
        );
        // Long input that normalizes under the limit passes.
        let tracked = format!("http://example.com/?utm_source={}", "x".repeat(3000));
        assert_eq!(norm(&tracked).as_deref(), Ok("http://example.com/"));
        let exact = format!("http://example.com/{}", "a".repeat(2048 - 19));
        assert_eq!(norm(&exact).map(|u| u.len()), Ok(2048));
        let over = format!("{exact}b");
        assert_eq!(norm(&over).map_err(|r| r.code()), Err("too_long"));
    }

    #[test]
    fn custom_schemes() {
        let opts = NormalizeOptions {
            schemes: vec!["HTTPS".to_owned()],
            ..NormalizeOptions::default()
        };
        assert_eq!(
            normalize_str("https://a.com", &opts).as_deref(),
            Ok("https://a.com/")
        );
        assert_eq!(
            normalize_str("http://a.com", &opts),
            Err(Reject::UnsupportedScheme("http".to_owned()))
        );
        // A non-special scheme gets an opaque host from the parser; we still
        // lowercase it and give it a path.
        let opts = NormalizeOptions {
            schemes: vec!["gopher".to_owned()],
            ..NormalizeOptions::default()
        };
        assert_eq!(
            normalize_str("gopher://Example.COM.", &opts).as_deref(),
            Ok("gopher://example.com/")
        );
        assert_eq!(normalize_str("gopher:x", &opts), Err(Reject::NoHost));
    }

    #[test]
    fn reject_display_and_codes() {
        let all = [
            Reject::Empty,
            Reject::Unparsable(url::ParseError::EmptyHost),
            Reject::UnsupportedScheme("ftp".to_owned()),
            Reject::NoHost,
            Reject::TooLong { len: 3, max: 2 },
        ];
        let codes: Vec<_> = all.iter().map(Reject::code).collect();
        assert_eq!(codes, Reject::CODES);
        assert_eq!(
            Reject::Unparsable(url::ParseError::RelativeUrlWithoutBase).to_string(),
            "unparsable URL: relative URL without a base"
        );
        assert_eq!(
            Reject::TooLong { len: 3, max: 2 }.to_string(),
            "URL too long: 3 bytes, limit 2"
        );
    }

    #[test]
    fn options_deserialize() {
        let opts: NormalizeOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(opts, NormalizeOptions::default());
        let opts: NormalizeOptions =
            serde_json::from_str(r#"{"sort_query": true, "strip_params": ["ref"]}"#).unwrap();
        assert!(opts.sort_query);
        assert_eq!(opts.strip_params, ["ref"]);
        assert_eq!(opts.max_length, 2048);
        assert!(serde_json::from_str::<NormalizeOptions>(r#"{"max_len": 1}"#).is_err());
    }

    #[test]
    fn session_ids_are_dropped_from_path_and_query() {
        ok(
            "http://example.com/shop/item;jsessionid=A1B2C3?id=7&PHPSESSID=x&SID=y",
            "http://example.com/shop/item?id=7",
        );
        ok(
            "http://example.com/a;JSESSIONID=1/b;jsessionid=2;v=3",
            "http://example.com/a/b;v=3",
        );
        ok("http://example.com/?sessionid=1", "http://example.com/");
        ok(
            "http://example.com/?sidebar=1&session=2",
            "http://example.com/?sidebar=1&session=2",
        );
        let keep = NormalizeOptions {
            strip_session_ids: false,
            ..NormalizeOptions::default()
        };
        assert_eq!(
            normalize_str("http://example.com/p;jsessionid=1?sid=2", &keep).as_deref(),
            Ok("http://example.com/p;jsessionid=1?sid=2")
        );
    }

    #[test]
    fn escape_normalization_unit() {
        assert!(matches!(normalize_escapes("/a/b"), Cow::Borrowed(_)));
        assert!(matches!(normalize_escapes("/a%2F"), Cow::Borrowed(_)));
        assert_eq!(normalize_escapes("%2f%7e%"), "%2F~%25");
        assert_eq!(normalize_escapes("%4"), "%254");
    }
}
