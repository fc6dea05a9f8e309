//! Request bodies: a JSON array (strings or `{"url", "depth", "sitemap"}` objects) or text
//! lines.

use serde::{Deserialize, Serialize};
use sluice_topics::UrlIn;
use sluice_web::normalize::{normalize, NormalizeOptions};

/// A URL that was not accepted, and why.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rejected {
    /// Position in the request (0-based item, or line number from 1 for text bodies).
    pub position: usize,
    /// The URL as submitted (cut to 200 characters).
    pub url: String,
    /// Stable reason code.
    pub code: &'static str,
    /// Human-readable reason.
    pub reason: String,
}

/// The outcome of reading a body.
#[derive(Debug, Default)]
pub struct Parsed {
    /// URLs to write.
    pub accepted: Vec<UrlIn>,
    /// URLs refused.
    pub rejected: Vec<Rejected>,
}

/// One submitted URL.
#[derive(Deserialize)]
struct Object {
    url: String,
    #[serde(default)]
    depth: u32,
    /// A sitemap, whose listed URLs are crawled (see [`UrlIn::sitemap`]).
    #[serde(default)]
    sitemap: bool,
}

impl Object {
    fn url(url: String) -> Self {
        Self {
            url,
            depth: 0,
            sitemap: false,
        }
    }
}

/// One JSON array item: a URL string or `{"url", "depth", "sitemap"}`; anything else is
/// rejected alone.
fn item(v: serde_json::Value) -> Result<Object, String> {
    match v {
        serde_json::Value::String(u) => Ok(Object::url(u)),
        v @ serde_json::Value::Object(_) => serde_json::from_value::<Object>(v).map_err(|e| {
                format!("item must be a URL string or {{\"url\": ..., \"depth\": n, \"sitemap\": bool}}: {e}")
            }),
        other => Err(format!("item must be a URL string or object, not {other}")),
    }
}

fn cut(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Reads a body. JSON when `json` is true or the body starts with `[`; otherwise one URL per
/// line (blank lines and `#` comments skipped). A body that is not valid JSON is an error
/// (400); individual bad items and URLs are rejected with a reason.
pub fn parse_body(body: &[u8], json: bool, max_url_length: usize) -> Result<Parsed, String> {
    let text = std::str::from_utf8(body).map_err(|_| "body is not valid UTF-8".to_string())?;
    let opts = NormalizeOptions {
        max_length: max_url_length,
        ..NormalizeOptions::default()
    };
    let mut parsed = Parsed::default();
    let items: Vec<(usize, Object)> = if json || text.trim_start().starts_with('[') {
        let values: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| {
            format!("body must be a JSON array of URL strings or {{\"url\": ...}} objects: {e}")
        })?;
        let mut items = Vec::with_capacity(values.len());
        for (i, v) in values.into_iter().enumerate() {
            match item(v) {
                Ok(o) => items.push((i, o)),
                Err(reason) => parsed.rejected.push(Rejected {
                    position: i,
                    url: String::new(),
                    code: "invalid_item",
                    reason,
                }),
            }
        }
        items
    } else {
        text.lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .map(|(i, l)| (i, Object::url(l.to_string())))
            .collect()
    };
    for (
        position,
        Object {
            url,
            depth,
            sitemap,
        },
    ) in items
    {
        match normalize(&url, &opts) {
            Ok(_) => parsed.accepted.push(UrlIn {
                url: url.trim().to_string(),
                depth,
                source: None,
                sitemap,
            }),
            Err(r) => parsed.rejected.push(Rejected {
                position,
                url: cut(&url),
                code: r.code(),
                reason: r.to_string(),
            }),
        }
    }
    parsed.rejected.sort_by_key(|r| r.position);
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_lines() {
        let p = parse_body(
            b"https://a.org/\n\n# comment\nnot a url\nftp://x.org/\n",
            false,
            2048,
        )
        .unwrap();
        assert_eq!(p.accepted.len(), 1);
        assert_eq!(p.accepted[0].url, "https://a.org/");
        assert_eq!(p.rejected.len(), 2);
        assert_eq!(p.rejected[0].position, 4);
        assert_eq!(p.rejected[1].code, "unsupported_scheme");
    }

    #[test]
    fn json_strings_and_objects() {
        let p = parse_body(
            br#"["https://a.org/", {"url": "http://b.org/x", "depth": 2}, "javascript:alert(1)",
                {"url": "http://b.org/sitemap.xml", "sitemap": true}]"#,
            true,
            2048,
        )
        .unwrap();
        assert_eq!(p.accepted.len(), 3);
        assert_eq!(p.accepted[1].depth, 2);
        assert!(!p.accepted[1].sitemap && p.accepted[2].sitemap);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].position, 2);
    }

    #[test]
    fn a_bad_item_is_rejected_alone() {
        let p = parse_body(
            br#"["https://a.org/", {"url": "https://b.org/", "depth": -1}, 7]"#,
            true,
            2048,
        )
        .unwrap();
        assert_eq!(p.accepted.len(), 1);
        assert_eq!(p.rejected.len(), 2);
        assert!(p.rejected.iter().all(|r| r.code == "invalid_item"));
        assert_eq!(p.rejected[0].position, 1);
    }

    #[test]
    fn bad_json_is_an_error() {
        assert!(parse_body(b"[1, 2", true, 2048).is_err());
        assert!(parse_body(&[0xff], false, 2048).is_err());
    }

    #[test]
    fn long_urls_are_rejected() {
        let long = format!("https://a.org/{}", "x".repeat(100));
        let p = parse_body(long.as_bytes(), false, 50).unwrap();
        assert_eq!(p.rejected[0].code, "too_long");
    }
}
