//! The anchors stage's extractor against an independent implementation — html5ever (through
//! the `scraper` crate), a full HTML5 tree builder — on every page of a real documentation
//! site (Debian's python3.11-doc): the (source, target, text) triples must agree on at least
//! 99.5% of links, and the differences are listed when they do not.

mod common;

use std::collections::HashMap;
use std::path::PathBuf;

use common::site_pages;

use scraper::{Html, Selector};
use url::Url;

fn collapse(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

type Triple = (String, String, String);

/// The reference: what a browser's DOM says the page's links are.
fn reference(html: &str, page: &Url) -> Vec<Triple> {
    let doc = Html::parse_document(html);
    let base_sel = Selector::parse("base[href]").unwrap();
    let a_sel = Selector::parse("a[href]").unwrap();
    let img_sel = Selector::parse("img[alt]").unwrap();
    let base = doc
        .select(&base_sel)
        .next()
        .and_then(|b| page.join(b.value().attr("href")?.trim()).ok())
        .filter(|b| matches!(b.scheme(), "http" | "https"))
        .unwrap_or_else(|| page.clone());
    let mut out = Vec::new();
    for a in doc.select(&a_sel) {
        let href = a.value().attr("href").unwrap_or("").trim();
        let lower = href.to_ascii_lowercase();
        if href.is_empty()
            || lower.starts_with("javascript:")
            || lower.starts_with("mailto:")
            || lower.starts_with("data:")
        {
            continue;
        }
        let Ok(mut target) = base.join(href) else {
            continue;
        };
        if !matches!(target.scheme(), "http" | "https") {
            continue;
        }
        target.set_fragment(None);
        let mut text = collapse(&a.text().collect::<String>());
        if text.is_empty() {
            let alts: Vec<&str> = a
                .select(&img_sel)
                .filter_map(|i| i.value().attr("alt"))
                .collect();
            text = collapse(&alts.join(" "));
        }
        out.push((page.to_string(), target.to_string(), text));
    }
    out
}

fn ours(html: &str, page: &Url) -> Vec<Triple> {
    sluice_stage_anchors::extract(html, page)
        .anchors
        .into_iter()
        .map(|a| (page.to_string(), a.target.to_string(), a.text))
        .collect()
}

fn counts(v: Vec<Triple>) -> HashMap<Triple, usize> {
    let mut m = HashMap::new();
    for t in v {
        *m.entry(t).or_default() += 1;
    }
    m
}

#[test]
fn extraction_agrees_with_html5ever_on_a_real_site() {
    let root = PathBuf::from(
        std::env::var("SLUICE_TEST_DOCSITE_ROOT")
            .expect("SLUICE_TEST_DOCSITE_ROOT: run the suite with tests/run.sh"),
    );
    let base: Url = "http://docs.test/".parse().unwrap();
    let (mut total_ours, mut total_ref, mut agree) = (0usize, 0usize, 0usize);
    let mut differences = Vec::new();
    let files = site_pages(&root, &base);
    assert!(files.len() > 400, "{} pages", files.len());
    for (f, page) in &files {
        let html = String::from_utf8_lossy(&std::fs::read(f).unwrap()).into_owned();
        let (a, b) = (counts(ours(&html, page)), counts(reference(&html, page)));
        total_ours += a.values().sum::<usize>();
        total_ref += b.values().sum::<usize>();
        for (t, n) in &a {
            let m = b.get(t).copied().unwrap_or(0);
            agree += (*n).min(m);
            if *n > m && differences.len() < 30 {
                differences.push(format!("only ours ×{}: {t:?}", n - m));
            }
        }
        for (t, m) in &b {
            let n = a.get(t).copied().unwrap_or(0);
            if *m > n && differences.len() < 30 {
                differences.push(format!("only html5ever ×{}: {t:?}", m - n));
            }
        }
    }
    let agreement = agree as f64 / total_ours.max(total_ref) as f64;
    eprintln!(
        "{} pages: {total_ours} links (ours), {total_ref} (html5ever), agreement {:.4}%",
        files.len(),
        agreement * 100.0
    );
    assert!(total_ref > 50_000, "the site has {total_ref} links");
    assert!(
        agreement >= 0.995,
        "agreement {:.3}% < 99.5%; differences:\n{}",
        agreement * 100.0,
        differences.join("\n")
    );
}
