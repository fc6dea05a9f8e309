//! Anchor extraction with lol_html's streaming rewriter: every `<a href>` of a page, with its
//! text (whitespace collapsed; image alt text when the link holds only images), title, rel,
//! the target resolved against the page URL and `<base href>`, and the fragment apart.
//!
//! lol_html does not build a tree, so the open anchors are kept on a small stack: text goes
//! to the innermost open anchor, and anchors never closed (bad HTML) end with the document.
//! Text chunks and attribute values come back with entities undecoded; they are decoded here,
//! and hrefs read as crawl reads them ([`sluice_web::href`]).

use std::cell::RefCell;
use std::rc::Rc;

use lol_html::html_content::EndTag;
use lol_html::{element, text, HtmlRewriter, MemorySettings, Settings};
use sluice_web::href::{self, decode};
pub use sluice_web::text::collapse;
use url::Url;

/// One link found on a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// Target without fragment.
    pub target: Url,
    /// Fragment without `#`, if any.
    pub fragment: Option<String>,
    /// Anchor text, whitespace collapsed.
    pub text: String,
    /// `text` is image alt text (the link held only images).
    pub from_alt: bool,
    /// The `title` attribute.
    pub title: Option<String>,
    /// The `rel` attribute.
    pub rel: Option<String>,
    /// Index among the page's `<a href>` elements, document order.
    pub position: u32,
}

impl Anchor {
    /// `rel` says the link is not endorsed (nofollow, ugc, sponsored).
    pub fn nofollow(&self) -> bool {
        self.rel.as_deref().is_some_and(|r| {
            r.split_ascii_whitespace().any(|t| {
                ["nofollow", "ugc", "sponsored"]
                    .iter()
                    .any(|n| t.eq_ignore_ascii_case(n))
            })
        })
    }
}

/// Links counted but not emitted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    /// `javascript:` hrefs.
    pub javascript: u64,
    /// `mailto:` hrefs.
    pub mailto: u64,
    /// `data:` hrefs.
    pub data: u64,
    /// Empty hrefs.
    pub empty: u64,
    /// Other schemes (`tel:`, `ftp:`...) and hrefs that do not resolve.
    pub other: u64,
}

impl Skipped {
    /// Adds another page's counts.
    pub fn add(&mut self, o: &Skipped) {
        self.javascript += o.javascript;
        self.mailto += o.mailto;
        self.data += o.data;
        self.empty += o.empty;
        self.other += o.other;
    }
}

/// The anchors of one page.
#[derive(Debug, Default)]
pub struct PageAnchors {
    /// Emitted links.
    pub anchors: Vec<Anchor>,
    /// Counted links.
    pub skipped: Skipped,
    /// Why parsing stopped early, if it did (what was found before counts).
    pub error: Option<String>,
}

#[derive(Default)]
struct Open {
    href: String,
    title: Option<String>,
    rel: Option<String>,
    text: String,
    alts: Vec<String>,
    position: u32,
}

#[derive(Default)]
struct State {
    base: Option<Url>,
    open: Vec<Open>,
    done: Vec<Open>,
    next_position: u32,
}

/// What lol_html calls at an element's end tag.
type EndTagHandler = Box<
    dyn for<'a, 'b> FnOnce(
        &'a mut EndTag<'b>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
>;

/// Memory lol_html may use per page (a hostile page stops here, with an error).
const PARSER_MEMORY: usize = 16 << 20;

/// Extracts the anchors of `html`, a page served at `page_url`.
pub fn extract(html: &str, page_url: &Url) -> PageAnchors {
    let state = Rc::new(RefCell::new(State::default()));
    let (s1, s2, s3, s4) = (state.clone(), state.clone(), state.clone(), state.clone());
    let settings = Settings::new()
        .with_strict(false)
        .with_memory_settings(MemorySettings::new().with_max_allowed_memory_usage(PARSER_MEMORY))
        .append_element_content_handler(element!("base[href]", move |el| {
            let mut s = s1.borrow_mut();
            if s.base.is_none() {
                if let Some(href) = el.get_attribute("href") {
                    s.base = href::base_href(page_url, &href);
                }
            }
            Ok(())
        }))
        .append_element_content_handler(element!("a[href]", move |el| {
            {
                let mut s = s2.borrow_mut();
                let position = s.next_position;
                s.next_position += 1;
                s.open.push(Open {
                    href: el.get_attribute("href").unwrap_or_default(),
                    title: el.get_attribute("title"),
                    rel: el.get_attribute("rel"),
                    position,
                    ..Open::default()
                });
            }
            let s = s2.clone();
            if let Some(handlers) = el.end_tag_handlers() {
                let on_end: EndTagHandler = Box::new(move |_end: &mut EndTag| {
                    let mut s = s.borrow_mut();
                    if let Some(a) = s.open.pop() {
                        s.done.push(a);
                    }
                    Ok(())
                });
                handlers.push(on_end);
            }
            Ok(())
        }))
        // A plain `img[alt]` with the open-anchor check below is much cheaper than the
        // descendant selector `a[href] img[alt]`, which makes lol_html track every element.
        .append_element_content_handler(element!("img[alt]", move |el| {
            let mut s = s3.borrow_mut();
            if let (Some(alt), Some(a)) = (el.get_attribute("alt"), s.open.last_mut()) {
                a.alts.push(alt);
            }
            Ok(())
        }))
        // Text inside anchors only: lol_html skips the callback for all other text.
        .append_element_content_handler(text!("a[href]", move |t| {
            let mut s = s4.borrow_mut();
            if let Some(a) = s.open.last_mut() {
                a.text.push_str(t.as_str());
            }
            Ok(())
        }));
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    let error = match rewriter.write(html.as_bytes()) {
        Ok(()) => rewriter.end().err(),
        Err(e) => Some(e),
    }
    .map(|e| e.to_string());
    // Taken rather than unwrapped: after a write error (a page over the parser's memory
    // limit) the rewriter, and the handlers' references to the state, are still alive.
    let state = std::mem::take(&mut *state.borrow_mut());
    let base = state.base.clone().unwrap_or_else(|| page_url.clone());
    let mut all: Vec<Open> = state.done;
    // Anchors never closed (bad HTML) end with the document.
    all.extend(state.open.into_iter().rev());
    all.sort_by_key(|a| a.position);
    let mut out = PageAnchors {
        error,
        ..PageAnchors::default()
    };
    for a in all {
        finalize(a, &base, &mut out);
    }
    out
}

fn finalize(a: Open, base: &Url, out: &mut PageAnchors) {
    let href = decode(&a.href);
    let href = href.trim_matches(|c: char| c <= ' ');
    let lower: String = href
        .chars()
        .take(11)
        .collect::<String>()
        .to_ascii_lowercase();
    if href.is_empty() {
        out.skipped.empty += 1;
        return;
    }
    if lower.starts_with("javascript:") {
        out.skipped.javascript += 1;
        return;
    }
    if lower.starts_with("mailto:") {
        out.skipped.mailto += 1;
        return;
    }
    if lower.starts_with("data:") {
        out.skipped.data += 1;
        return;
    }
    let Some(mut target) = href::resolve_http(base, &href::clean(href)) else {
        out.skipped.other += 1;
        return;
    };
    let fragment = target.fragment().map(str::to_string);
    target.set_fragment(None);
    let mut text = collapse(&decode(&a.text));
    let mut from_alt = false;
    if text.is_empty() && !a.alts.is_empty() {
        text = collapse(&decode(&a.alts.join(" ")));
        from_alt = !text.is_empty();
    }
    out.anchors.push(Anchor {
        target,
        fragment,
        text,
        from_alt,
        title: a.title.map(|t| collapse(&decode(&t))),
        rel: a.rel.map(|r| collapse(&decode(&r))),
        position: a.position,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> Url {
        "http://s.test/dir/page.html".parse().unwrap()
    }

    fn triples(html: &str) -> Vec<(String, Option<String>, String)> {
        extract(html, &page())
            .anchors
            .into_iter()
            .map(|a| (a.target.to_string(), a.fragment, a.text))
            .collect()
    }

    #[test]
    fn a_page_over_the_parser_memory_limit_keeps_its_anchors_and_says_why() {
        // An attribute value never closed: lol_html buffers it until its memory limit.
        let mut html = String::from(r#"<a href="/first">first</a><a href="/x" title=""#);
        html.push_str(&"a".repeat(PARSER_MEMORY + (1 << 20)));
        let out = extract(&html, &page());
        assert!(out.error.is_some(), "no error reported");
        assert!(
            out.anchors.iter().any(|a| a.target.path() == "/first"),
            "{:?}",
            out.anchors
                .iter()
                .map(|a| a.target.as_str())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn text_targets_and_fragments() {
        let got = triples(
            r##"<a href="b.html#sec-2">  The
               <b>second</b>&nbsp;section &amp; more </a>
               <a href="/abs?q=1&amp;r=2">abs</a><a href="#top">top</a>"##,
        );
        assert_eq!(
            got,
            vec![
                (
                    "http://s.test/dir/b.html".into(),
                    Some("sec-2".into()),
                    "The second section & more".into()
                ),
                ("http://s.test/abs?q=1&r=2".into(), None, "abs".into()),
                (
                    "http://s.test/dir/page.html".into(),
                    Some("top".into()),
                    "top".into()
                ),
            ]
        );
    }

    #[test]
    fn image_links_take_the_alt_text() {
        let r = extract(
            r#"<a href="/i"><img src="x.png" alt=" Logo  of S "></a><a href="/t"><img alt="ignored">Text</a>"#,
            &page(),
        );
        assert_eq!(r.anchors[0].text, "Logo of S");
        assert!(r.anchors[0].from_alt);
        assert_eq!(r.anchors[1].text, "Text");
        assert!(!r.anchors[1].from_alt);
    }

    #[test]
    fn non_http_hrefs_are_counted_not_emitted() {
        let r = extract(
            r#"<a href="javascript:void(0)">j</a><a href=" JavaScript:x">j</a><a href="mailto:a@b">m</a>
               <a href="data:text/html,hi">d</a><a href="">e</a><a href="  ">e</a><a href="tel:123">t</a>
               <a href="/ok">ok</a><a name="no-href">n</a>"#,
            &page(),
        );
        assert_eq!(r.anchors.len(), 1);
        assert_eq!(
            r.skipped,
            Skipped {
                javascript: 2,
                mailto: 1,
                data: 1,
                empty: 2,
                other: 1
            }
        );
        assert_eq!(r.anchors[0].position, 7, "positions count every <a href>");
    }

    #[test]
    fn base_title_rel_and_unclosed_anchors() {
        let r = extract(
            r#"<head><base href="http://cdn.test/root/"></head>
               <a href="x" title="T &amp; c" rel="nofollow ugc">x</a>
               <p><a href="y">never closed"#,
            &page(),
        );
        assert_eq!(r.anchors[0].target.as_str(), "http://cdn.test/root/x");
        assert_eq!(r.anchors[0].title.as_deref(), Some("T & c"));
        assert!(r.anchors[0].nofollow());
        assert_eq!(r.anchors[1].target.as_str(), "http://cdn.test/root/y");
        assert_eq!(r.anchors[1].text, "never closed");
    }
}
