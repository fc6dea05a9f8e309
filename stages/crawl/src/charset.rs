//! Decoding a body to UTF-8: BOM, then the Content-Type charset, then `<meta charset>` or
//! `http-equiv` in the first bytes (the HTML prescan), then statistical detection (chardetng,
//! Firefox's detector) for everything else. The result is always valid UTF-8: bytes that do
//! not decode become U+FFFD.

use std::cell::RefCell;

use chardetng::{EncodingDetector, Iso2022JpDetection, Utf8Detection};
use encoding_rs::{Encoding, UTF_16BE, UTF_16LE, UTF_8, WINDOWS_1252};
use lol_html::{element, HtmlRewriter, Settings as RewriterSettings};

/// How many leading bytes the meta prescan reads (the HTML standard says 1024; pages with
/// long head scripts put the tag later, so look a little further).
const PRESCAN_BYTES: usize = 4096;

/// A body decoded to UTF-8, and where its encoding came from.
pub struct Decoded {
    /// The text.
    pub text: String,
    /// The encoding's WHATWG name (`UTF-8`, `Shift_JIS`, `windows-1252`...).
    pub charset: &'static str,
}

/// The charset parameter of a Content-Type value.
pub fn header_charset(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches(['"', '\'']))
    })
}

/// Finds `<meta charset=...>` or `<meta http-equiv=content-type content="...charset=...">`
/// in the first bytes, read as an ASCII-compatible encoding as the standard's prescan does.
fn meta_charset(head: &[u8]) -> Option<&'static Encoding> {
    let found: RefCell<Option<&'static Encoding>> = RefCell::new(None);
    let settings = RewriterSettings::new()
        .with_strict(false)
        .with_encoding(WINDOWS_1252.try_into().expect("ASCII-compatible"))
        .append_element_content_handler(element!("meta", |el| {
            if found.borrow().is_some() {
                return Ok(());
            }
            let label = el.get_attribute("charset").or_else(|| {
                let equiv = el.get_attribute("http-equiv")?;
                if !equiv.trim().eq_ignore_ascii_case("content-type") {
                    return None;
                }
                header_charset(&el.get_attribute("content")?).map(str::to_string)
            });
            if let Some(enc) = label.and_then(|l| Encoding::for_label(l.trim().as_bytes())) {
                *found.borrow_mut() = Some(enc);
            }
            Ok(())
        }));
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    // A parse error in a hostile head just ends the prescan.
    let _ = rewriter.write(&head[..head.len().min(PRESCAN_BYTES)]);
    drop(rewriter);
    found.into_inner()
}

/// A meta tag claiming UTF-16 in an ASCII-compatible byte stream is wrong by construction;
/// the standard reads it as UTF-8.
fn ascii_compatible(enc: &'static Encoding) -> &'static Encoding {
    if enc == UTF_16BE || enc == UTF_16LE {
        UTF_8
    } else {
        enc
    }
}

/// Decodes `body`. `content_type` is the response header; `tld` (`jp`, `de`...) helps the
/// detector when nothing declares the encoding.
pub fn decode(body: &[u8], content_type: Option<&str>, tld: Option<&[u8]>) -> Decoded {
    let encoding = Encoding::for_bom(body)
        .map(|(enc, _)| enc)
        .or_else(|| {
            content_type
                .and_then(header_charset)
                .and_then(|l| Encoding::for_label(l.as_bytes()))
        })
        .or_else(|| meta_charset(body).map(ascii_compatible))
        .unwrap_or_else(|| {
            let mut detector = EncodingDetector::new(Iso2022JpDetection::Allow);
            detector.feed(body, true);
            detector.guess(tld, Utf8Detection::Allow)
        });
    // `decode` strips a BOM and replaces malformed sequences.
    let (text, used, _) = encoding.decode(body);
    Decoded {
        text: text.into_owned(),
        charset: used.name(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use encoding_rs::SHIFT_JIS;

    #[test]
    fn header_charset_is_parsed() {
        assert_eq!(
            header_charset("text/html; charset=ISO-8859-1"),
            Some("ISO-8859-1")
        );
        assert_eq!(header_charset("text/html;Charset=\"utf-8\""), Some("utf-8"));
        assert_eq!(header_charset("text/html"), None);
    }

    #[test]
    fn bom_wins_over_everything() {
        let mut body = vec![0xEF, 0xBB, 0xBF];
        body.extend_from_slice("<meta charset=latin1>é".as_bytes());
        let d = decode(&body, Some("text/html; charset=shift_jis"), None);
        assert_eq!(d.charset, "UTF-8");
        assert!(d.text.ends_with('é'));
    }

    #[test]
    fn header_then_meta() {
        let latin1 = b"<p>caf\xe9</p>";
        let d = decode(latin1, Some("text/html; charset=iso-8859-1"), None);
        assert_eq!(d.text, "<p>café</p>");
        let mut page = b"<html><head><meta charset=\"shift_jis\"></head><body>".to_vec();
        let (sjis, _, _) = SHIFT_JIS.encode("日本語のページ");
        page.extend_from_slice(&sjis);
        let d = decode(&page, Some("text/html"), None);
        assert_eq!(d.charset, "Shift_JIS");
        assert!(d.text.contains("日本語のページ"));
        let equiv =
            b"<meta http-equiv=Content-Type content='text/html; charset=windows-1252'>\x93q\x94";
        let d = decode(equiv, None, None);
        assert_eq!(d.charset, "windows-1252");
        assert!(d.text.contains("\u{201c}q\u{201d}"));
    }

    #[test]
    fn undeclared_encodings_are_detected() {
        let text =
            "日本語のウェブページです。文字コードの宣言がありません。これは検出のテストです。";
        let (sjis, _, _) = SHIFT_JIS.encode(text);
        let mut page = b"<html><body><p>".to_vec();
        page.extend_from_slice(&sjis);
        let d = decode(&page, None, Some(b"jp"));
        assert_eq!(d.charset, "Shift_JIS");
        assert!(d.text.contains(text));
        let latin = b"<p>Der B\xe4cker backt Br\xf6tchen f\xfcr die Stra\xdfe.</p>";
        let d = decode(latin, None, None);
        assert!(
            d.text.contains("Bäcker backt Brötchen für die Straße"),
            "{}",
            d.text
        );
    }

    #[test]
    fn invalid_bytes_never_make_invalid_utf8() {
        let d = decode(b"<meta charset=utf-8>\xff\xfe\xc3", None, None);
        assert!(d.text.contains('\u{fffd}'));
    }
}
