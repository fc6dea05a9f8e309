//! One HTTP GET: status, the headers we keep, and the body up to a size cap.
//!
//! The body is read chunk by chunk after content decoding, so the cap holds for a gzip bomb
//! as for an endless stream: reading stops at `max_body` and the response is dropped (closing
//! its connection). With a memory budget, the body's bytes are reserved as they arrive
//! (`memory.rs`), and a body the budget has no room for by the deadline stops there too.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use reqwest::StatusCode;
use url::Url;

use sluice_topics::Validators;

use crate::client::Blocked;
use crate::memory::{MemoryBudget, Reservation, BODY_FACTOR, RECORD_ROOM};

/// A response as far as the crawler cares.
pub struct Response {
    /// HTTP status.
    pub status: StatusCode,
    /// All response headers.
    pub headers: HeaderMap,
    /// The body up to the cap; `None` when it was not read (content type not wanted).
    pub body: Option<Vec<u8>>,
    /// The body was longer than the cap (or than the memory budget had room for).
    pub truncated: bool,
    /// The body's share of the memory budget, if one was given.
    pub reservation: Option<Reservation>,
}

impl Response {
    /// The Content-Type header value.
    pub fn content_type(&self) -> Option<&str> {
        self.headers.get(CONTENT_TYPE)?.to_str().ok()
    }

    /// The Location header resolved against `base`.
    pub fn location(&self, base: &Url) -> Option<Result<Url, String>> {
        let raw = self.headers.get(LOCATION)?;
        Some(
            String::from_utf8(raw.as_bytes().to_vec())
                .map_err(|_| "Location is not UTF-8".to_string())
                .and_then(|l| {
                    base.join(l.trim())
                        .map_err(|e| format!("Location `{l}`: {e}"))
                }),
        )
    }

    /// Retry-After as a delay (seconds or an HTTP date).
    pub fn retry_after(&self) -> Option<Duration> {
        let v = self.headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        let at = httpdate::parse_http_date(v).ok()?;
        Some(
            at.duration_since(std::time::SystemTime::now())
                .unwrap_or(Duration::ZERO),
        )
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `timeout`, `connect`, `blocked_address`, `body`, `request`.
    pub code: &'static str,
    /// Detail.
    pub message: String,
}

impl Failure {
    /// Worth another attempt.
    pub fn transient(&self) -> bool {
        matches!(self.code, "timeout" | "connect" | "body")
    }
}

/// Whether a media type's body is wanted: decided from the header, or by sniffing when the
/// server sent none.
pub enum BodyPolicy<'a> {
    /// Keep bodies whose media type is in this list (lowercase).
    Types(&'a [String]),
    /// Keep every body (robots.txt).
    Any,
}

/// The media type of a Content-Type value, lowercased, parameters removed.
pub fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Whether a body without Content-Type looks like HTML.
pub fn sniff_html(body: &[u8]) -> bool {
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(body.len());
    let head: Vec<u8> = body[start..body.len().min(start + 64)].to_ascii_lowercase();
    [
        &b"<!doctype html"[..],
        b"<html",
        b"<head",
        b"<body",
        b"<!--",
        b"<p",
        b"<div",
        b"<a ",
    ]
    .iter()
    .any(|p| head.starts_with(p))
}

fn classify(e: &reqwest::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(b) = s.downcast_ref::<Blocked>() {
            return Failure {
                code: "blocked_address",
                message: b.to_string(),
            };
        }
        source = s.source();
    }
    let message = format!("{}", ErrorChain(e));
    let code = if e.is_timeout() {
        "timeout"
    } else if message.contains("allow_private_addresses") {
        "blocked_address"
    } else if e.is_connect() {
        "connect"
    } else if e.is_body() || e.is_decode() {
        "body"
    } else {
        "request"
    };
    let code = if code == "request" && (message.contains("connection") || message.contains("reset"))
    {
        "connect"
    } else {
        code
    };
    Failure { code, message }
}

/// Formats an error with its sources, `a: b: c`.
struct ErrorChain<'a>(&'a (dyn std::error::Error + 'static));

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// What to ask for and keep of one GET.
pub struct Ask<'a> {
    /// Body bytes read at most.
    pub max_body: u64,
    /// Which bodies are read at all.
    pub policy: BodyPolicy<'a>,
    /// Makes it a conditional GET (If-None-Match, If-Modified-Since), which a server may
    /// answer with 304.
    pub validators: Option<&'a Validators>,
    /// Reserve the body's memory here, waiting for room until the deadline.
    pub memory: Option<(&'a MemoryBudget, Instant)>,
}

impl<'a> Ask<'a> {
    /// A plain GET keeping bodies up to `max_body` as `policy` says.
    pub fn new(max_body: u64, policy: BodyPolicy<'a>) -> Self {
        Self {
            max_body,
            policy,
            validators: None,
            memory: None,
        }
    }
}

/// GETs `url` as `ask` says.
pub async fn get(client: &reqwest::Client, url: &Url, ask: Ask<'_>) -> Result<Response, Failure> {
    let Ask {
        max_body,
        policy,
        validators,
        memory,
    } = ask;
    let mut request = client.get(url.clone()).header(
        reqwest::header::ACCEPT,
        "text/html,application/xhtml+xml;q=0.9,*/*;q=0.5",
    );
    if let Some(v) = validators {
        if let Some(etag) = &v.etag {
            request = request.header(reqwest::header::IF_NONE_MATCH, etag.as_str());
        }
        if let Some(date) = &v.last_modified {
            request = request.header(reqwest::header::IF_MODIFIED_SINCE, date.as_str());
        }
    }
    let mut resp = request.send().await.map_err(|e| classify(&e))?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let declared = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(media_type);
    // A redirect's body is never used.
    let wanted = !status.is_redirection()
        && match (&policy, &declared) {
            (BodyPolicy::Any, _) => true,
            (BodyPolicy::Types(types), Some(t)) => types.iter().any(|w| w == t),
            (BodyPolicy::Types(_), None) => true, // sniffed below
        };
    if !wanted {
        return Ok(Response {
            status,
            headers,
            body: None,
            truncated: false,
            reservation: None,
        });
    }
    let mut body = Vec::new();
    let mut truncated = false;
    let mut reservation =
        memory.map(|(budget, _)| budget.reserve(max_body as usize * BODY_FACTOR + RECORD_ROOM));
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                let mut room = (max_body as usize).saturating_sub(body.len());
                if let (Some(r), Some((_, deadline))) = (reservation.as_mut(), memory) {
                    let want = body.len() + chunk.len().min(room);
                    if !r.grow_to(want * BODY_FACTOR + RECORD_ROOM, deadline).await {
                        // No room in time: keep what fits what is already held.
                        let held = r.bytes().saturating_sub(RECORD_ROOM) / BODY_FACTOR;
                        room = held.saturating_sub(body.len());
                        body.extend_from_slice(&chunk[..room.min(chunk.len())]);
                        truncated = true;
                        break;
                    }
                }
                if chunk.len() > room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = true;
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return Err(classify(&e)),
        }
    }
    if declared.is_none() && matches!(policy, BodyPolicy::Types(_)) && !sniff_html(&body) {
        return Ok(Response {
            status,
            headers,
            body: None,
            truncated: false,
            reservation: None,
        });
    }
    Ok(Response {
        status,
        headers,
        body: Some(body),
        truncated,
        reservation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types_and_sniffing() {
        assert_eq!(media_type("Text/HTML; charset=utf-8"), "text/html");
        assert!(sniff_html(b"  \n<!DOCTYPE html><html>"));
        assert!(sniff_html(b"<html><body>"));
        assert!(!sniff_html(b"%PDF-1.4"));
        assert!(!sniff_html(b"{\"json\": true}"));
    }
}
