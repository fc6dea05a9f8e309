use serde::{Deserialize, Serialize};

use crate::{Contract, DecodeError};

/// A normalized, deduplicated URL ready to fetch: what normalize/dedup writes to `urls`.
/// Keyed by [`CrawlUrl::domain`], so one registrable domain's URLs share a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CrawlUrl {
    /// The normalized URL.
    pub url: String,
    /// Its registrable domain (eTLD+1, or the host itself for IP addresses and `localhost`).
    pub domain: String,
    /// Link depth from a seed.
    pub depth: u32,
    /// The page it was discovered on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// When normalize/dedup passed it on, in milliseconds since the Unix epoch.
    pub queued_at_ms: i64,
    /// What the last crawl of this URL returned to revalidate it with (a recrawl sends them
    /// as If-None-Match / If-Modified-Since); none for a URL not crawled before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validators: Option<Validators>,
    /// A sitemap: the crawler passes on the URLs it lists (see [`UrlIn::sitemap`]).
    ///
    /// [`UrlIn::sitemap`]: crate::UrlIn::sitemap
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sitemap: bool,
    /// The crawler deferred it before: its turn is already counted in its domain's schedule.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deferred: bool,
}

/// A response's cache validators, as HTTP sent them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// The `ETag` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// The `Last-Modified` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

impl Validators {
    /// Longest validator kept: a header longer than this is not worth a round trip back.
    pub const MAX_LEN: usize = 256;

    /// Validators from the two header values, each kept only if it is short, printable ASCII;
    /// `None` when neither is.
    pub fn from_headers(etag: Option<&str>, last_modified: Option<&str>) -> Option<Self> {
        let keep = |v: Option<&str>| {
            v.map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= Self::MAX_LEN)
                .filter(|v| v.bytes().all(|b| (b' '..=b'~').contains(&b)))
                .map(str::to_string)
        };
        let v = Validators {
            etag: keep(etag),
            last_modified: keep(last_modified),
        };
        (v.etag.is_some() || v.last_modified.is_some()).then_some(v)
    }
}

impl CrawlUrl {
    /// The URLs of a `crawl-url` message: one (a JSON object), or several of one domain (a
    /// JSON array), which normalize writes for the links of a page and the crawl frontier when
    /// it defers a domain's URLs together.
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<Self>, DecodeError> {
        crate::decode_one_or_many(bytes, Self::decode)
    }

    /// Several URLs as one message (a JSON array): see [`CrawlUrl::decode_all`].
    pub fn encode_all(items: &[Self]) -> Vec<u8> {
        serde_json::to_vec(items).expect("CrawlUrl serializes")
    }
}

impl Contract for CrawlUrl {
    const TYPE: &'static str = "crawl-url";

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("CrawlUrl serializes")
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let u = CrawlUrl {
            url: "http://example.com/".into(),
            domain: "example.com".into(),
            depth: 2,
            source: None,
            queued_at_ms: 1_700_000_000_000,
            validators: None,
            sitemap: false,
            deferred: false,
        };
        assert_eq!(CrawlUrl::decode(&u.encode()).unwrap(), u);
        assert!(!String::from_utf8(u.encode())
            .unwrap()
            .contains("validators"));
        let recrawl = CrawlUrl {
            validators: Validators::from_headers(Some("\"abc\""), None),
            ..u
        };
        assert_eq!(CrawlUrl::decode(&recrawl.encode()).unwrap(), recrawl);
        assert!(CrawlUrl::decode(b"http://example.com/").is_err());
    }

    #[test]
    fn a_message_holds_one_url_or_several() {
        let one = |n: u32| CrawlUrl {
            url: format!("http://example.com/{n}"),
            domain: "example.com".into(),
            depth: n,
            source: Some("http://example.com/".into()),
            queued_at_ms: 1,
            validators: None,
            sitemap: n == 2,
            deferred: false,
        };
        let several = vec![one(1), one(2), one(3)];
        assert_eq!(
            CrawlUrl::decode_all(&CrawlUrl::encode_all(&several)).unwrap(),
            several
        );
        assert_eq!(
            CrawlUrl::decode_all(&one(4).encode()).unwrap(),
            vec![one(4)]
        );
        assert_eq!(CrawlUrl::decode_all(b" \n[]").unwrap(), vec![]);
        assert!(CrawlUrl::decode_all(b"[1, 2]").is_err());
        assert!(CrawlUrl::decode_all(b"").is_err());
    }

    #[test]
    fn validators_keep_only_short_printable_values() {
        assert_eq!(Validators::from_headers(None, Some("  ")), None);
        let long = "x".repeat(Validators::MAX_LEN + 1);
        assert_eq!(Validators::from_headers(Some(&long), Some("a\u{7}b")), None);
        let v = Validators::from_headers(Some(" W/\"1\" "), Some(&long)).unwrap();
        assert_eq!(v.etag.as_deref(), Some("W/\"1\""));
        assert_eq!(v.last_modified, None);
    }
}
