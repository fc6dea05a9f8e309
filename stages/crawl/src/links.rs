//! Link discovery: every `<a href>` and `<area href>` of a page, resolved against the page URL
//! and its `<base href>`, with nofollow from `rel` and `<meta name=robots>`.
//!
//! lol_html streams the page without building a tree, so a huge or hostile page costs time in
//! proportion to its size and a bounded amount of memory. Hrefs are read as anchors reads them
//! ([`sluice_web::href`]).

use std::cell::RefCell;
use std::collections::HashSet;

use lol_html::{element, HtmlRewriter, MemorySettings, Settings};
use sluice_web::href;
use url::Url;

/// Links found on one page.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PageLinks {
    /// Absolute http(s) URLs without fragment, deduplicated, in page order.
    pub links: Vec<Link>,
    /// `<meta name=robots content=nofollow>` (or `none`) was present.
    pub meta_nofollow: bool,
    /// Links dropped because the page had more than the limit.
    pub over_limit: usize,
}

/// One discovered link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Absolute URL, fragment removed.
    pub url: Url,
    /// `rel` contains `nofollow`.
    pub nofollow: bool,
}

/// Extracts the links of `html` served at `page_url`; at most `limit` links are kept.
pub fn extract(html: &str, page_url: &Url, limit: usize) -> PageLinks {
    struct State {
        base: Option<Url>,
        raw: Vec<(String, bool)>,
        meta_nofollow: bool,
    }
    let state = RefCell::new(State {
        base: None,
        raw: Vec::new(),
        meta_nofollow: false,
    });
    // Resolution waits for the end: a `<base>` applies to links before it too.
    let memory = MemorySettings::new().with_max_allowed_memory_usage(16 << 20);
    let settings = Settings::new()
        .with_strict(false)
        .with_memory_settings(memory)
        .append_element_content_handler(element!("base[href]", |el| {
            let mut s = state.borrow_mut();
            if s.base.is_none() {
                if let Some(href) = el.get_attribute("href") {
                    s.base = href::base_href(page_url, &href);
                }
            }
            Ok(())
        }))
        .append_element_content_handler(element!("a[href], area[href]", |el| {
            let mut s = state.borrow_mut();
            if s.raw.len() < limit.saturating_mul(4).max(limit) {
                let href = el.get_attribute("href").unwrap_or_default();
                let nofollow = el.get_attribute("rel").is_some_and(|r| {
                    r.split_ascii_whitespace()
                        .any(|t| t.eq_ignore_ascii_case("nofollow"))
                });
                s.raw.push((href::decode(&href), nofollow));
            }
            Ok(())
        }))
        .append_element_content_handler(element!("meta[name][content]", |el| {
            let name = el.get_attribute("name").unwrap_or_default();
            if name.eq_ignore_ascii_case("robots") {
                let content = el
                    .get_attribute("content")
                    .unwrap_or_default()
                    .to_ascii_lowercase();
                if content
                    .split([',', ' '])
                    .any(|t| t == "nofollow" || t == "none")
                {
                    state.borrow_mut().meta_nofollow = true;
                }
            }
            Ok(())
        }));
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    // Bad HTML does not stop discovery: what was seen before the error counts.
    match rewriter.write(html.as_bytes()) {
        Ok(()) => drop(rewriter.end()),
        Err(_) => drop(rewriter),
    }
    let state = state.into_inner();
    let base = state.base.unwrap_or_else(|| page_url.clone());
    let mut seen = HashSet::new();
    let mut out = PageLinks {
        meta_nofollow: state.meta_nofollow,
        ..PageLinks::default()
    };
    for (href, nofollow) in state.raw {
        let Some(url) = resolve(&base, &href) else {
            continue;
        };
        if !seen.insert(url.as_str().to_string()) {
            continue;
        }
        if out.links.len() >= limit {
            out.over_limit += 1;
            continue;
        }
        out.links.push(Link { url, nofollow });
    }
    out
}

/// Resolves an href; `None` for fragments of the page itself, non-http(s) targets and
/// unparsable ones.
fn resolve(base: &Url, href: &str) -> Option<Url> {
    let href = href::clean(href);
    if href.is_empty() || href.starts_with('#') {
        return None;
    }
    let mut url = href::resolve_http(base, &href)?;
    url.set_fragment(None);
    Some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn urls(html: &str, page: &str) -> Vec<String> {
        extract(html, &page.parse().unwrap(), 100)
            .links
            .into_iter()
            .map(|l| l.url.to_string())
            .collect()
    }

    #[test]
    fn relative_absolute_and_protocol_relative_links_resolve() {
        let html = r##"<a href="b.html">b</a> <a href="/c?x=1&amp;y=2#frag">c</a>
            <a href="//other.test/d">d</a> <a href="https://abs.test/e">e</a>
            <a href="../up.html">up</a> <area href="map.html">
            <a href="mailto:x@y.z">m</a> <a href="javascript:void(0)">j</a> <a href="#top">t</a>
            <a href="">empty</a> <a href=" b.html ">dup</a>"##;
        assert_eq!(
            urls(html, "http://site.test/dir/page.html"),
            vec![
                "http://site.test/dir/b.html",
                "http://site.test/c?x=1&y=2",
                "http://other.test/d",
                "https://abs.test/e",
                "http://site.test/up.html",
                "http://site.test/dir/map.html",
            ]
        );
    }

    #[test]
    fn base_href_applies_to_every_link() {
        let html = r#"<a href="x">x</a><base href="/root/"><a href="y">y</a>"#;
        assert_eq!(
            urls(html, "http://s.test/a/b"),
            vec!["http://s.test/root/x", "http://s.test/root/y"]
        );
    }

    #[test]
    fn a_non_http_base_is_ignored() {
        let html = r#"<base href="javascript:alert(1)"><a href="y">y</a>"#;
        assert_eq!(urls(html, "http://s.test/a/b"), vec!["http://s.test/a/y"]);
    }

    #[test]
    fn nofollow_is_reported() {
        let html = r#"<meta name="ROBOTS" content="noindex, nofollow">
            <a rel="external NoFollow" href="/n">n</a><a href="/f">f</a>"#;
        let l = extract(html, &"http://s.test/".parse().unwrap(), 10);
        assert!(l.meta_nofollow);
        assert!(l.links[0].nofollow);
        assert!(!l.links[1].nofollow);
    }

    #[test]
    fn the_limit_caps_links_and_counts_the_rest() {
        let html: String = (0..50).map(|i| format!("<a href='/p{i}'>x</a>")).collect();
        let l = extract(&html, &"http://s.test/".parse().unwrap(), 10);
        assert_eq!(l.links.len(), 10);
        assert_eq!(l.over_limit, 30); // raw hrefs stop at 4 × the limit
    }

    #[test]
    fn broken_html_still_yields_links() {
        let html = "<a href='/ok'>ok</a><div <<< <a href=\"/also\"><table><a href=/third>";
        let got = urls(html, "http://s.test/");
        assert!(got.contains(&"http://s.test/ok".to_string()));
        assert!(got.contains(&"http://s.test/third".to_string()), "{got:?}");
    }
}
