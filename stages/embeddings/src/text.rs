//! A page's visible text, and its cutting into chunks the model sees whole.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use lol_html::html_content::EndTag;
use lol_html::{doc_text, element, HtmlRewriter, MemorySettings, Settings};
use sluice_web::text::collapse;

/// Elements whose content is not visible text.
/// (`head` itself is not: lol_html cannot see a `</head>` a page leaves out, and its visible
/// parts are handled one by one anyway.)
const HIDDEN: &str = "script, style, noscript, template, svg, math, iframe, object, canvas";

/// Memory lol_html may use per page.
const PARSER_MEMORY: usize = 16 << 20;

/// What lol_html calls at an element's end tag.
type EndTagHandler = Box<
    dyn for<'a, 'b> FnOnce(
        &'a mut EndTag<'b>,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>>,
>;

/// The visible text of an HTML page (its `<title>` first), entities decoded and whitespace
/// collapsed. Text found before a parse error is kept.
pub fn visible_text(html: &str) -> String {
    let out = Rc::new(RefCell::new(String::new()));
    let title = Rc::new(RefCell::new(String::new()));
    let hidden = Rc::new(Cell::new(0u32));
    let in_title = Rc::new(Cell::new(false));
    let (o, h1, h2, t1, it1, it2) = (
        out.clone(),
        hidden.clone(),
        hidden.clone(),
        title.clone(),
        in_title.clone(),
        in_title.clone(),
    );
    let settings = Settings::new()
        .with_strict(false)
        .with_memory_settings(MemorySettings::new().with_max_allowed_memory_usage(PARSER_MEMORY))
        .append_element_content_handler(element!(HIDDEN, move |el| {
            // Void or self-closed elements have no end tag: nothing to hide.
            if let Some(handlers) = el.end_tag_handlers() {
                h1.set(h1.get() + 1);
                let h = h1.clone();
                let on_end: EndTagHandler = Box::new(move |_| {
                    h.set(h.get().saturating_sub(1));
                    Ok(())
                });
                handlers.push(on_end);
            }
            Ok(())
        }))
        .append_element_content_handler(element!("title", move |el| {
            if let Some(handlers) = el.end_tag_handlers() {
                it1.set(true);
                let it = it1.clone();
                let on_end: EndTagHandler = Box::new(move |_| {
                    it.set(false);
                    Ok(())
                });
                handlers.push(on_end);
            }
            Ok(())
        }))
        .append_document_content_handler(doc_text!(move |t| {
            if it2.get() {
                let mut title = t1.borrow_mut();
                title.push_str(t.as_str());
                if t.last_in_text_node() {
                    title.push(' ');
                }
            } else if h2.get() == 0 {
                let mut o = o.borrow_mut();
                o.push_str(t.as_str());
                if t.last_in_text_node() {
                    o.push(' ');
                }
            }
            Ok(())
        }));
    let mut rewriter = HtmlRewriter::new(settings, |_: &[u8]| {});
    if rewriter.write(html.as_bytes()).is_ok() {
        let _ = rewriter.end();
    } else {
        drop(rewriter);
    }
    let title = title.borrow();
    let body = out.borrow();
    let all = format!("{} {}", title.as_str(), body.as_str());
    collapse(&html_escape::decode_html_entities(&all))
}

/// Cuts `text` into pieces of at most `window` tokens, each starting `window - overlap`
/// tokens after the previous one, given the tokens' byte offsets (from the model's
/// tokenizer). At most `max_chunks` pieces; a text with no tokens gives none.
pub fn chunks<'t>(
    text: &'t str,
    offsets: &[(usize, usize)],
    window: usize,
    overlap: usize,
    max_chunks: usize,
) -> Vec<&'t str> {
    let window = window.max(1);
    let step = window.saturating_sub(overlap).max(1);
    let mut out = Vec::new();
    let mut start = 0;
    while start < offsets.len() && out.len() < max_chunks {
        let end = (start + window).min(offsets.len());
        let (from, to) = (offsets[start].0, offsets[end - 1].1);
        if let Some(piece) = text.get(from..to) {
            out.push(piece);
        }
        if end == offsets.len() {
            break;
        }
        start += step;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_text_skips_scripts_styles_and_head_but_keeps_the_title() {
        let html = "<html><head><title>The  Title</title><style>p{color:red}</style>\
            <script>var x = '<p>no</p>';</script></head><body><h1>Heading</h1>\
            <p>First&nbsp;para &amp; more.</p><script>hidden()</script><noscript>nojs</noscript>\
            <p>Second<br>line</p><svg><text>svgtext</text></svg><img src=x alt=pic></body></html>";
        assert_eq!(
            visible_text(html),
            "The Title Heading First para & more. Second line"
        );
    }

    #[test]
    fn a_page_without_end_of_head_keeps_its_body() {
        assert_eq!(
            visible_text("<html><head><title>T</title><meta charset=utf-8><body><p>Body text</p>"),
            "T Body text"
        );
    }

    #[test]
    fn unclosed_and_self_closed_hidden_elements() {
        assert_eq!(visible_text("<p>a</p><svg/><p>b</p>"), "a b");
        assert_eq!(visible_text("<p>a</p><script>b"), "a");
        assert_eq!(visible_text(""), "");
    }

    #[test]
    fn chunks_cover_the_text_with_overlap() {
        let text = "a b c d e f g";
        let offsets: Vec<(usize, usize)> = (0..7).map(|i| (i * 2, i * 2 + 1)).collect();
        assert_eq!(
            chunks(text, &offsets, 3, 1, 10),
            vec!["a b c", "c d e", "e f g"]
        );
        assert_eq!(chunks(text, &offsets, 10, 2, 10), vec![text]);
        assert_eq!(chunks(text, &offsets, 3, 1, 2), vec!["a b c", "c d e"]);
        assert_eq!(
            chunks(text, &offsets, 3, 5, 10).len(),
            5,
            "overlap >= window still advances"
        );
        assert!(chunks("", &[], 3, 1, 10).is_empty());
    }
}
