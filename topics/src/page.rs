use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Contract, DecodeError};

/// One fetched URL: what the crawl stage writes to `pages`, exactly one per URL it takes from
/// its input, whether the fetch worked or not. Keyed by [`Page::domain`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    /// The URL as queued (normalized).
    pub url: String,
    /// The URL of the last response, after redirects.
    pub final_url: String,
    /// Each redirect followed, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub redirects: Vec<Redirect>,
    /// HTTP status of the last response; `None` when no response arrived.
    #[serde(default)]
    pub status: Option<u16>,
    /// Media type of the last response (`text/html`), without parameters.
    #[serde(default)]
    pub content_type: Option<String>,
    /// The character encoding the body was decoded from (`UTF-8`, `Shift_JIS`, ...).
    #[serde(default)]
    pub charset: Option<String>,
    /// When the last response started, in milliseconds since the Unix epoch.
    pub fetched_at_ms: i64,
    /// Time from the first request to the end of the body, in milliseconds.
    pub fetch_ms: u64,
    /// Response headers worth keeping (`etag`, `last-modified`, `content-language`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, String>,
    /// The body decoded to UTF-8; `None` for content types outside the allow list and failures.
    #[serde(default)]
    pub body: Option<String>,
    /// Size of the body as received (after content decoding, before charset decoding).
    #[serde(default)]
    pub body_bytes: u64,
    /// The body was cut at the stage's `max_body`.
    #[serde(default)]
    pub truncated: bool,
    /// Why the fetch failed or was not made (`robots_disallowed`, `timeout`, ...).
    #[serde(default)]
    pub error: Option<FetchError>,
    /// Link depth from a seed.
    pub depth: u32,
    /// Registrable domain of [`Page::url`].
    pub domain: String,
    /// The page this URL was discovered on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Number of links on the page that may be followed (in scope, not nofollow, within
    /// `max_depth`); links the crawler emitted recently are not sent to url-in again.
    #[serde(default)]
    pub links_out: u32,
}

/// One redirect hop.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    /// The URL that answered with a redirect.
    pub url: String,
    /// Its status (301, 302, 303, 307, 308).
    pub status: u16,
    /// Where it pointed, resolved to an absolute URL.
    pub location: String,
}

/// Why a page has no (or no usable) response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchError {
    /// Stable machine-readable code: `robots_disallowed`, `robots_unavailable`, `timeout`,
    /// `connect`, `http_status`, `too_many_redirects`, `redirect_loop`, `out_of_scope`,
    /// `blocked_address`, `bad_redirect`, `body`.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
}

impl Contract for Page {
    const TYPE: &'static str = "page";

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("Page serializes")
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_every_field() {
        let p = Page {
            url: "http://a.test/x".into(),
            final_url: "http://a.test/y".into(),
            redirects: vec![Redirect {
                url: "http://a.test/x".into(),
                status: 301,
                location: "http://a.test/y".into(),
            }],
            status: Some(200),
            content_type: Some("text/html".into()),
            charset: Some("Shift_JIS".into()),
            fetched_at_ms: 1,
            fetch_ms: 2,
            headers: [("etag".to_string(), "\"x\"".to_string())].into(),
            body: Some("日本語".into()),
            body_bytes: 6,
            truncated: false,
            error: None,
            depth: 1,
            domain: "a.test".into(),
            source: Some("http://a.test/".into()),
            links_out: 3,
        };
        assert_eq!(Page::decode(&p.encode()).unwrap(), p);
        assert!(Page::decode(b"{}").is_err());
    }
}
