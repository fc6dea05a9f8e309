//! What a browser does to an `href` before following it, shared by link discovery (crawl) and
//! anchor extraction (anchors) so that both stages see the same target for the same link.
//!
//! lol_html hands attribute values over with entities undecoded (`&amp;`), so decoding is part
//! of reading one.

use url::Url;

/// Decodes HTML entities in an attribute value or a text chunk.
pub fn decode(value: &str) -> String {
    html_escape::decode_html_entities(value).into_owned()
}

/// An href as a browser reads it: leading and trailing spaces and C0 controls trimmed, tabs
/// and newlines inside removed. Takes the decoded value.
pub fn clean(href: &str) -> String {
    href.trim_matches(|c: char| c <= ' ')
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect()
}

/// `href` (cleaned) resolved against `base`, when the result is an http(s) URL with a host;
/// the fragment is kept.
pub fn resolve_http(base: &Url, href: &str) -> Option<Url> {
    base.join(href)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
}

/// The base URL a `<base href>` (raw attribute value) sets on a page served at `page_url`.
/// A `javascript:` or `data:` base cannot resolve anything: `None`, and the page URL stays the
/// base.
pub fn base_href(page_url: &Url, raw: &str) -> Option<Url> {
    resolve_http(page_url, &clean(&decode(raw)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hrefs_are_cleaned_like_a_browser_does() {
        assert_eq!(clean(" \t/a\n/b\r \u{1}"), "/a/b");
        let page: Url = "http://s.test/dir/p".parse().unwrap();
        assert_eq!(
            resolve_http(&page, "../x#f").unwrap().as_str(),
            "http://s.test/x#f"
        );
        assert!(resolve_http(&page, "mailto:a@b.c").is_none());
        assert_eq!(
            base_href(&page, " /root/?a=1&amp;b=2 ").unwrap().as_str(),
            "http://s.test/root/?a=1&b=2"
        );
        assert!(base_href(&page, "javascript:alert(1)").is_none());
    }
}
