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
        };
        assert_eq!(CrawlUrl::decode(&u.encode()).unwrap(), u);
        assert!(CrawlUrl::decode(b"http://example.com/").is_err());
    }
}
