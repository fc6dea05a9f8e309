use serde::{Deserialize, Serialize};

use crate::{Contract, DecodeError};

/// A URL submitted for crawling: what users, the ingest endpoint and the crawler's link
/// discovery write to the `url-in` topic.
///
/// On the wire it is either a bare URL string (so `echo https://example.org | kcat -P -t url-in`
/// works) or JSON `{"url": "...", "depth": 0}`; the crawler writes the links of a page as a
/// JSON array of those ([`UrlIn::decode_all`]). It is not normalized yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlIn {
    /// The URL as given.
    pub url: String,
    /// Link depth from a seed: seeds are 0, links found on a depth-n page are n+1.
    #[serde(default)]
    pub depth: u32,
    /// The page this URL was discovered on, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The URL is a sitemap (sitemaps.org): the crawler reads the URLs it lists instead of
    /// storing it as a page. Robots.txt `Sitemap:` lines come this way; a user may submit one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sitemap: bool,
}

impl UrlIn {
    /// A seed URL (depth 0).
    pub fn seed(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            depth: 0,
            source: None,
            sitemap: false,
        }
    }
}

impl UrlIn {
    /// The URLs of a `url-in` message: one (a bare string or a JSON object), or several (a
    /// JSON array of objects), as the crawler writes the links found on a page.
    pub fn decode_all(bytes: &[u8]) -> Result<Vec<Self>, DecodeError> {
        crate::decode_one_or_many(bytes, Self::decode)
    }

    /// Several URLs as one message: the only one as [`Contract::encode`] writes it, more as a
    /// JSON array.
    pub fn encode_all(items: &[Self]) -> Vec<u8> {
        match items {
            [one] => one.encode(),
            _ => serde_json::to_vec(items).expect("UrlIn serializes"),
        }
    }
}

impl Contract for UrlIn {
    const TYPE: &'static str = "url-in";

    fn encode(&self) -> Vec<u8> {
        if self.depth == 0 && self.source.is_none() && !self.sitemap {
            // Seeds stay readable as plain text in any console consumer.
            self.url.as_bytes().to_vec()
        } else {
            serde_json::to_vec(self).expect("UrlIn serializes")
        }
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        let text = std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)?;
        let text = text.trim();
        if text.is_empty() {
            return Err(DecodeError::Empty);
        }
        if text.starts_with('{') {
            return Ok(serde_json::from_str(text)?);
        }
        Ok(UrlIn::seed(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_holds_one_url_or_several() {
        let links: Vec<UrlIn> = (0..3)
            .map(|n| UrlIn {
                url: format!("http://x.org/{n}"),
                depth: 2,
                source: Some("http://x.org/".into()),
                sitemap: n == 1,
            })
            .collect();
        assert_eq!(
            UrlIn::decode_all(&UrlIn::encode_all(&links)).unwrap(),
            links
        );
        let one = &links[..1];
        assert!(UrlIn::encode_all(one).starts_with(b"{"));
        assert_eq!(UrlIn::decode_all(&UrlIn::encode_all(one)).unwrap(), one);
        assert_eq!(
            UrlIn::decode_all(b" https://example.org/").unwrap(),
            vec![UrlIn::seed("https://example.org/")]
        );
        assert!(UrlIn::decode_all(b"[\"not an object\"]").is_err());
    }

    #[test]
    fn bare_string_is_a_seed() {
        let u = UrlIn::decode(b"  https://example.org/a \n").unwrap();
        assert_eq!(u, UrlIn::seed("https://example.org/a"));
    }

    #[test]
    fn json_form_carries_depth_and_source() {
        let u = UrlIn::decode(br#"{"url":"http://x.org/","depth":3,"source":"http://y.org/"}"#)
            .unwrap();
        assert_eq!(u.depth, 3);
        assert_eq!(u.source.as_deref(), Some("http://y.org/"));
        assert_eq!(UrlIn::decode(&u.encode()).unwrap(), u);
    }

    #[test]
    fn a_sitemap_says_so_on_the_wire() {
        let u = UrlIn {
            sitemap: true,
            ..UrlIn::seed("http://x.org/sitemap.xml")
        };
        assert_eq!(UrlIn::decode(&u.encode()).unwrap(), u);
        let plain = UrlIn::decode(br#"{"url":"http://x.org/s.xml","sitemap":true}"#).unwrap();
        assert!(plain.sitemap);
        assert!(!UrlIn::decode(b"http://x.org/").unwrap().sitemap);
    }

    #[test]
    fn seeds_encode_as_plain_text() {
        assert_eq!(UrlIn::seed("http://x.org/").encode(), b"http://x.org/");
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(matches!(UrlIn::decode(b"   "), Err(DecodeError::Empty)));
        assert!(matches!(
            UrlIn::decode(&[0xff, 0xfe]),
            Err(DecodeError::NotUtf8)
        ));
        assert!(matches!(
            UrlIn::decode(b"{\"depth\": 1}"),
            Err(DecodeError::Json(_))
        ));
    }
}
