//! Sitemaps (sitemaps.org): what a fetched sitemap lists.
//!
//! A sitemap is an XML `<urlset>` of page URLs, an XML `<sitemapindex>` of further sitemaps,
//! or a plain text file of one URL per line; any of them may be gzip-compressed as a file
//! (`sitemap.xml.gz`), apart from any Content-Encoding the HTTP client already undid. Every
//! size is capped: the decompressed text at the same byte cap as the download (a gzip bomb
//! stops there), and the entries at the protocol's 50,000 per file.

use std::borrow::Cow;
use std::io::Read;

use quick_xml::escape::unescape;
use quick_xml::events::Event;
use quick_xml::Reader;

/// Entries read from one sitemap at most (the protocol's own limit per file).
pub const MAX_ENTRIES: usize = 50_000;

/// Longest URL kept from a sitemap (the protocol allows 2,048 characters).
const MAX_URL_LEN: usize = 2048;

/// What one sitemap lists.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Listing {
    /// Page URLs (`<urlset>`, or a text sitemap).
    pub pages: Vec<String>,
    /// Further sitemaps (`<sitemapindex>`).
    pub sitemaps: Vec<String>,
    /// The file held more than was read: decompressed beyond the cap, or more than
    /// [`MAX_ENTRIES`] entries.
    pub truncated: bool,
}

/// Why a sitemap could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SitemapError {
    /// The gzip stream is broken.
    #[error("sitemap gzip stream: {0}")]
    Gzip(String),
    /// The XML is broken before any entry could be read.
    #[error("sitemap XML: {0}")]
    Xml(String),
}

/// The entries of a sitemap `body`, decompressed (if it is a gzip file) up to `max_bytes`.
pub fn read(body: &[u8], max_bytes: usize) -> Result<Listing, SitemapError> {
    let (text, cut) = if is_gzip(body) {
        let (text, cut) = gunzip(body, max_bytes)?;
        (Cow::Owned(text), cut)
    } else {
        (Cow::Borrowed(body), false)
    };
    let text = String::from_utf8_lossy(&text);
    let text = text.trim_start_matches('\u{feff}');
    let mut listing = if text.trim_start().starts_with('<') {
        parse_xml(text)?
    } else {
        parse_text(text)
    };
    listing.truncated |= cut;
    Ok(listing)
}

/// Whether `body` is a gzip file (by its magic bytes).
pub fn is_gzip(body: &[u8]) -> bool {
    body.starts_with(&[0x1f, 0x8b])
}

/// Decompresses a gzip file, stopping at `max_bytes`; also says whether it stopped there.
fn gunzip(body: &[u8], max_bytes: usize) -> Result<(Vec<u8>, bool), SitemapError> {
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(body)
        .take(max_bytes as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| SitemapError::Gzip(e.to_string()))?;
    let cut = out.len() > max_bytes;
    out.truncate(max_bytes);
    Ok((out, cut))
}

/// One URL per line; lines that are not absolute http(s) URLs are skipped.
fn parse_text(text: &str) -> Listing {
    let mut listing = Listing::default();
    for line in text.lines().map(str::trim).filter(|l| wanted(l)) {
        if listing.pages.len() == MAX_ENTRIES {
            listing.truncated = true;
            break;
        }
        listing.pages.push(line.to_string());
    }
    listing
}

fn wanted(url: &str) -> bool {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    url.len() <= MAX_URL_LEN && (lower.starts_with("http://") || lower.starts_with("https://"))
}

/// The `<loc>` of every `<url>` or `<sitemap>`, whatever the namespace prefix. A document
/// broken part way keeps the entries read before the break (a cut download ends that way).
fn parse_xml(text: &str) -> Result<Listing, SitemapError> {
    let mut reader = Reader::from_str(text);
    let mut listing = Listing::default();
    // The element a `<loc>` belongs to (`url` or `sitemap`), and the text of an open `<loc>`.
    let mut entry: Option<bool> = None;
    let mut loc: Option<String> = None;
    loop {
        let event = match reader.read_event() {
            Ok(e) => e,
            Err(e) if listing.pages.is_empty() && listing.sitemaps.is_empty() => {
                return Err(SitemapError::Xml(format!(
                    "at byte {}: {e}",
                    reader.error_position()
                )))
            }
            Err(_) => {
                listing.truncated = true;
                break;
            }
        };
        match event {
            Event::Start(e) => match e.local_name().as_ref() {
                b"url" => entry = Some(false),
                b"sitemap" => entry = Some(true),
                b"loc" if entry.is_some() => loc = Some(String::new()),
                _ => {}
            },
            Event::Text(t) => {
                if let (Some(loc), Ok(t)) = (loc.as_mut(), t.decode()) {
                    loc.push_str(&t);
                }
            }
            Event::CData(t) => {
                if let (Some(loc), Ok(t)) = (loc.as_mut(), t.decode()) {
                    loc.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                if let (Some(loc), Ok(name)) = (loc.as_mut(), r.decode()) {
                    if let Ok(ch) = unescape(&format!("&{name};")) {
                        loc.push_str(&ch);
                    }
                }
            }
            Event::End(e) => match e.local_name().as_ref() {
                b"loc" => {
                    let (Some(url), Some(is_sitemap)) = (loc.take(), entry) else {
                        continue;
                    };
                    let url = url.trim();
                    if !wanted(url) {
                        continue;
                    }
                    if listing.pages.len() + listing.sitemaps.len() == MAX_ENTRIES {
                        listing.truncated = true;
                        break;
                    }
                    let list = if is_sitemap {
                        &mut listing.sitemaps
                    } else {
                        &mut listing.pages
                    };
                    list.push(url.to_string());
                }
                b"url" | b"sitemap" => entry = None,
                _ => {}
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const URLSET: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
  <url><loc>http://a.test/one</loc><lastmod>2024-01-01</lastmod></url>
  <url><loc> http://a.test/two?x=1&amp;y=2 </loc></url>
  <url><loc><![CDATA[http://a.test/three]]></loc></url>
  <url><loc>javascript:alert(1)</loc></url>
</urlset>"#;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn a_urlset_lists_pages_with_entities_and_cdata_resolved() {
        let l = read(URLSET.as_bytes(), 1 << 20).unwrap();
        assert_eq!(
            l.pages,
            [
                "http://a.test/one",
                "http://a.test/two?x=1&y=2",
                "http://a.test/three"
            ]
        );
        assert!(l.sitemaps.is_empty() && !l.truncated);
    }

    #[test]
    fn an_index_lists_sitemaps_under_any_prefix() {
        let index = r#"<sm:sitemapindex xmlns:sm="http://www.sitemaps.org/schemas/sitemap/0.9">
            <sm:sitemap><sm:loc>http://a.test/s1.xml.gz</sm:loc></sm:sitemap>
            <sm:sitemap><sm:loc>http://a.test/s2.xml</sm:loc></sm:sitemap>
        </sm:sitemapindex>"#;
        let l = read(index.as_bytes(), 1 << 20).unwrap();
        assert_eq!(
            l.sitemaps,
            ["http://a.test/s1.xml.gz", "http://a.test/s2.xml"]
        );
        assert!(l.pages.is_empty());
    }

    #[test]
    fn gzip_files_and_text_sitemaps_are_read() {
        let l = read(&gzip(URLSET.as_bytes()), 1 << 20).unwrap();
        assert_eq!(l.pages.len(), 3);
        let text = "\u{feff}http://a.test/x\n\nnot a url\r\nhttps://a.test/y\n";
        let l = read(&gzip(text.as_bytes()), 1 << 20).unwrap();
        assert_eq!(l.pages, ["http://a.test/x", "https://a.test/y"]);
    }

    #[test]
    fn a_gzip_bomb_stops_at_the_cap_and_keeps_what_it_read() {
        let mut xml = String::from("<urlset>");
        for i in 0..100_000 {
            xml.push_str(&format!("<url><loc>http://a.test/{i}</loc></url>"));
        }
        let l = read(&gzip(xml.as_bytes()), 64 << 10).unwrap();
        assert!(l.truncated);
        assert!(
            l.pages.len() > 1000 && l.pages.len() < 3000,
            "{}",
            l.pages.len()
        );
    }

    #[test]
    fn entries_stop_at_the_protocol_limit() {
        let text: String = (0..MAX_ENTRIES + 10)
            .map(|i| format!("http://a.test/{i}\n"))
            .collect();
        let l = read(text.as_bytes(), 64 << 20).unwrap();
        assert!(l.truncated);
        assert_eq!(l.pages.len(), MAX_ENTRIES);
    }

    #[test]
    fn broken_input_is_an_error_only_before_the_first_entry() {
        assert!(matches!(
            read(
                b"<urlset><url><loc>http://a.test/</loc></url></nope>",
                1 << 20
            ),
            Ok(Listing {
                truncated: true,
                ..
            })
        ));
        assert!(matches!(
            read(b"<urlset></nope>", 1 << 20),
            Err(SitemapError::Xml(_))
        ));
        assert!(matches!(
            read(&[0x1f, 0x8b, 8, 0, 1, 2, 3], 1 << 20),
            Err(SitemapError::Gzip(_))
        ));
    }
}
