//! A fixture web server for crawl tests: one loopback listener serving many hostnames (the
//! crawler reaches them through its `resolve:` map), with a log of every request and the peak
//! number of concurrent requests per registrable domain, as the server saw them.
//!
//! Hosts:
//! - `edge.test` — the hard cases: robots.txt rules and Crawl-delay, redirect chains and
//!   loops, 404/500/503/429 with Retry-After, a slow page, an endless body, a gzip bomb,
//!   Latin-1 and Shift_JIS pages without any charset declaration, non-HTML content, relative,
//!   absolute and protocol-relative links;
//! - `other.test` — a second site that scope rules must keep the crawler out of;
//! - `<x>.grid<N>.test` — generated sites (`grid` below) for politeness tests: every page
//!   answers after `grid_delay` and links to a few others;
//! - `hop<N>.test` — redirects every URL to `www.hop<N>.test`, which serves a grid site;
//! - `robots503.test`, `robots404.test` — grid sites whose robots.txt answers 503 or 404;
//! - `slow.test` — `SLOW_PAGES` pages all linking to each other, behind a Crawl-delay of 1 s;
//! - `etag.test` — a page with an ETag that answers a matching If-None-Match with 304;
//! - `calendar.test` — a crawler trap (every page links to two new ones);
//! - `huge.test` — a 20 MiB page;
//! - `sitemap.test` — pages linked from nowhere but sitemaps: robots.txt names a sitemap
//!   index (and one out of scope) listing a gzip sitemap, an XML one and a text one, each of
//!   `SITEMAP_PAGES` pages;
//! - `bigmap.test` — `/big.xml`, a sitemap of `BIG_SITEMAP` pages (for a budget below it);
//! - `bigpages.test` — a home page linking to `BIG_PAGES` pages of `BIG_PAGE_BYTES` each,
//!   each sent in two halves 200 ms apart.
//!
//! [`black_hole`] is a second listener that accepts connections and never answers.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;

/// Pages in each of sitemap.test's three sitemaps.
pub const SITEMAP_PAGES: usize = 10;
/// Pages in bigmap.test's sitemap.
pub const BIG_SITEMAP: usize = 200;

/// Pages linked from bigpages.test's home page.
pub const BIG_PAGES: usize = 6;
/// Bytes of each of them.
pub const BIG_PAGE_BYTES: usize = 200 << 10;

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct Hit {
    pub host: String,
    pub path: String,
    pub at: Instant,
    /// The request's If-None-Match, if any.
    pub if_none_match: Option<String>,
}

#[derive(Default)]
struct Shared {
    hits: Mutex<Vec<Hit>>,
    /// Per domain: (in flight now, peak).
    active: Mutex<HashMap<String, (usize, usize)>>,
    /// Per path: how many times it was asked (for fail-once pages).
    asked: Mutex<HashMap<String, usize>>,
    grid_delay_ms: AtomicUsize,
}

/// The running server.
pub struct FixtureWeb {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
}

/// Bytes of `huge.test`'s page, far over any `max_body` a test sets.
pub const HUGE_PAGE: usize = 20 << 20;

/// A listener that accepts connections and never answers nor closes them: a black hole.
pub async fn black_hole() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    addr
}

/// Pages of `slow.test`, each linking to all of them; its robots.txt asks for a 1 s
/// Crawl-delay.
pub const SLOW_PAGES: usize = 20;

/// Pages per generated grid host.
pub const GRID_PAGES: usize = 12;

fn domain_of(host: &str) -> String {
    let parts: Vec<&str> = host.split('.').collect();
    parts[parts.len().saturating_sub(2)..].join(".")
}

impl FixtureWeb {
    /// Starts the server on an ephemeral loopback port.
    pub async fn start() -> Self {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { addr, shared }
    }

    /// How long each grid page takes to answer.
    pub fn set_grid_delay(&self, d: Duration) {
        self.shared
            .grid_delay_ms
            .store(d.as_millis() as usize, Ordering::SeqCst);
    }

    /// When, after `since`, the server last saw a request for a host `of` accepts.
    pub fn last_hit(&self, since: Instant, of: impl Fn(&str) -> bool) -> Duration {
        self.hits()
            .iter()
            .filter(|h| of(&h.host))
            .map(|h| h.at.duration_since(since))
            .max()
            .expect("no request for those hosts")
    }

    /// Asserts that the pages of `host` (robots.txt aside) were asked at least `gap` apart.
    pub fn assert_spaced(&self, host: &str, gap: Duration) {
        let mut at: Vec<Instant> = self
            .hits()
            .iter()
            .filter(|h| h.host == host && h.path != "/robots.txt")
            .map(|h| h.at)
            .collect();
        at.sort();
        for pair in at.windows(2) {
            assert!(
                pair[1] - pair[0] >= gap,
                "{host}: requests closer than {gap:?}: {at:?}"
            );
        }
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.shared.hits.lock().unwrap().clone()
    }

    /// Peak concurrent requests per registrable domain.
    pub fn peaks(&self) -> HashMap<String, usize> {
        self.shared
            .active
            .lock()
            .unwrap()
            .iter()
            .map(|(d, (_, peak))| (d.clone(), *peak))
            .collect()
    }

    /// `resolve:` entries sending `hosts` to this server.
    pub fn resolve_yaml(&self, hosts: &[String], indent: usize) -> String {
        hosts
            .iter()
            .map(|h| format!("{}{h}: \"{}\"\n", " ".repeat(indent), self.addr))
            .collect()
    }
}

/// URLs of every page of grid host `host` (index first).
pub fn grid_urls(host: &str) -> Vec<String> {
    (0..GRID_PAGES)
        .map(|i| format!("http://{host}/p{i}.html"))
        .collect()
}

struct InFlight {
    shared: Arc<Shared>,
    domain: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(e) = self.shared.active.lock().unwrap().get_mut(&self.domain) {
            e.0 -= 1;
        }
    }
}

fn html(body: impl Into<String>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
        .body(Body::from(body.into()))
        .unwrap()
}

fn status(code: u16) -> Response {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/html")
        .body(Body::from(format!("<h1>{code}</h1>")))
        .unwrap()
}

fn redirect(code: u16, to: &str) -> Response {
    Response::builder()
        .status(code)
        .header(header::LOCATION, to)
        .body(Body::empty())
        .unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn typed(content_type: &str, body: impl Into<Body>) -> Response {
    Response::builder()
        .header(header::CONTENT_TYPE, content_type)
        .body(body.into())
        .unwrap()
}

fn urlset(urls: impl Iterator<Item = String>) -> String {
    let entries: String = urls
        .map(|u| format!("<url><loc>{u}</loc></url>\n"))
        .collect();
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n\
         <urlset xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\n{entries}</urlset>"
    )
}

/// sitemap.test and bigmap.test (see the module doc); `None` for other hosts.
fn sitemaps(host: &str, path: &str) -> Option<Response> {
    let pages = |prefix: &'static str, n: usize| {
        (0..n).map(move |i| format!("http://{host}/{prefix}{i}.html"))
    };
    let response = match (host, path) {
        ("sitemap.test", "/robots.txt") => typed(
            "text/plain",
            "User-agent: *\nDisallow: /private/\n\
             Sitemap: http://sitemap.test/index.xml\nSitemap: http://other.test/sitemap.xml\n",
        ),
        ("sitemap.test", "/index.xml") => typed(
            "application/xml",
            "<?xml version=\"1.0\"?><sitemapindex xmlns=\"http://www.sitemaps.org/schemas/sitemap/0.9\">\
             <sitemap><loc>http://sitemap.test/a.xml.gz</loc></sitemap>\
             <sitemap><loc>http://sitemap.test/b.xml</loc></sitemap>\
             <sitemap><loc>http://sitemap.test/c.txt</loc></sitemap></sitemapindex>",
        ),
        ("sitemap.test", "/a.xml.gz") => typed(
            "application/gzip",
            gzip(urlset(pages("a", SITEMAP_PAGES)).as_bytes()),
        ),
        ("sitemap.test", "/b.xml") => typed(
            "application/xml",
            urlset(pages("b", SITEMAP_PAGES).chain(["http://other.test/b.html".to_string()])),
        ),
        ("sitemap.test", "/c.txt") => typed(
            "text/plain",
            pages("c", SITEMAP_PAGES).collect::<Vec<_>>().join("\n"),
        ),
        ("bigmap.test" | "bigpages.test", "/robots.txt") => status(404),
        ("bigpages.test", "/") => html(
            (0..BIG_PAGES)
                .map(|i| format!("<a href=\"/b{i}.html\">{i}</a>"))
                .collect::<String>(),
        ),
        ("bigpages.test", _) => {
            // Half now, half 200 ms later: the requests overlap, so their bodies do too.
            use futures::StreamExt;
            let head = "<title>big</title><p>";
            let half = BIG_PAGE_BYTES / 2;
            let first = Bytes::from(format!("{head}{}", "y".repeat(half - head.len())));
            let second = Bytes::from("z".repeat(BIG_PAGE_BYTES - half));
            let stream = futures::stream::once(async move { Ok::<_, Infallible>(first) }).chain(
                futures::stream::once(async move {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(second)
                }),
            );
            Response::builder()
                .header(header::CONTENT_TYPE, "text/html")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        ("bigmap.test", "/big.xml") => typed("application/xml", urlset(pages("d", BIG_SITEMAP))),
        ("sitemap.test" | "bigmap.test", _) => html("<title>listed</title><p>no links here</p>"),
        _ => return None,
    };
    Some(response)
}

/// 64 MiB of zeros, gzipped (about 64 KiB).
fn gzip_bomb() -> &'static [u8] {
    static BOMB: OnceLock<Vec<u8>> = OnceLock::new();
    BOMB.get_or_init(|| {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![b' '; 1 << 20];
        enc.write_all(b"<html><body>").unwrap();
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        enc.finish().unwrap()
    })
}

const EDGE_INDEX: &str = r##"<!DOCTYPE html><html><head><title>Edge cases</title></head><body>
<a href="rel.html">relative</a>
<a href="http://edge.test/abs.html">absolute</a>
<a href="//edge.test/proto.html#section">protocol-relative with a fragment</a>
<a href="/dir/../up.html">dot segments</a>
<a href="/private/secret.html">disallowed by robots.txt</a>
<a href="/r/1">redirect chain</a>
<a href="/loop/a">redirect loop</a>
<a href="/chain/0">endless redirects</a>
<a href="/missing">404</a>
<a href="/broken">500 every time</a>
<a href="/flaky">503 once</a>
<a href="/busy">429 once, Retry-After 1</a>
<a href="/slow">slower than the timeout</a>
<a href="/endless">endless body</a>
<a href="/bomb">gzip bomb</a>
<a href="/latin1.html">Latin-1 without charset</a>
<a href="/sjis.html">Shift_JIS without charset</a>
<a href="/doc.pdf">a PDF</a>
<a href="/nofollow-target.html" rel="nofollow">nofollow</a>
<a href="http://other.test/">another site</a>
<a href="mailto:someone@edge.test">mail</a>
<a href="javascript:void(0)">script</a>
</body></html>"##;

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Result<Response, Infallible> {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let path = req.uri().path().to_string();
    let domain = domain_of(&host);
    let if_none_match = req
        .headers()
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    shared.hits.lock().unwrap().push(Hit {
        host: host.clone(),
        path: path.clone(),
        at: Instant::now(),
        if_none_match: if_none_match.clone(),
    });
    let _in_flight = {
        let mut active = shared.active.lock().unwrap();
        let e = active.entry(domain.clone()).or_default();
        e.0 += 1;
        e.1 = e.1.max(e.0);
        InFlight {
            shared: shared.clone(),
            domain: domain.clone(),
        }
    };
    let times_asked = {
        let mut asked = shared.asked.lock().unwrap();
        let n = asked.entry(format!("{host}{path}")).or_default();
        *n += 1;
        *n
    };
    if host == "calendar.test" {
        // A crawler trap: every month links to the next two, forever.
        let n: u64 = path
            .strip_prefix("/cal/")
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        return Ok(match path.as_str() {
            "/robots.txt" => status(404),
            _ => html(format!(
                "<a href=\"/cal/{}\">next</a><a href=\"/cal/{}\">after</a>",
                n + 1,
                n + 2
            )),
        });
    }
    if let Some(response) = sitemaps(&host, &path) {
        return Ok(response);
    }
    if host == "huge.test" {
        return Ok(match path.as_str() {
            "/robots.txt" => status(404),
            _ => html(format!(
                "<title>huge</title><p>{}</p>",
                "x".repeat(HUGE_PAGE)
            )),
        });
    }
    if host == "etag.test" {
        // One page that never changes: a conditional GET with its ETag gets 304.
        const ETAG: &str = "\"v1\"";
        return Ok(if if_none_match.as_deref() == Some(ETAG) {
            Response::builder()
                .status(304)
                .header(header::ETAG, ETAG)
                .body(Body::empty())
                .unwrap()
        } else {
            Response::builder()
                .header(header::CONTENT_TYPE, "text/html")
                .header(header::ETAG, ETAG)
                .header(header::LAST_MODIFIED, "Tue, 03 Nov 2026 10:00:00 GMT")
                .body(Body::from("<title>unchanged</title><p>same as ever</p>"))
                .unwrap()
        });
    }
    if host == "slow.test" {
        return Ok(match path.as_str() {
            "/robots.txt" => Response::builder()
                .header(header::CONTENT_TYPE, "text/plain")
                .body(Body::from("User-agent: *\nCrawl-delay: 1\n"))
                .unwrap(),
            _ => {
                let links: String = (0..SLOW_PAGES)
                    .map(|i| format!("<a href=\"/s{i}.html\">s{i}</a>\n"))
                    .collect();
                html(format!("<title>slow {path}</title>{links}"))
            }
        });
    }
    if host == "robots503.test" || host == "robots404.test" {
        return Ok(match path.as_str() {
            "/robots.txt" if host == "robots503.test" => status(503),
            "/robots.txt" => status(404),
            _ => grid_page(&host, &path),
        });
    }
    if domain.starts_with("hop") {
        // Every URL of the bare host, robots.txt included, moves to its `www.` host.
        return Ok(match host.strip_prefix("www.") {
            Some(_) => grid_page(&host, &path),
            None => redirect(301, &format!("http://www.{host}{path}")),
        });
    }
    if domain.starts_with("grid") {
        let delay = shared.grid_delay_ms.load(Ordering::SeqCst) as u64;
        tokio::time::sleep(Duration::from_millis(delay)).await;
        return Ok(grid_page(&host, &path));
    }
    Ok(match (host.as_str(), path.as_str()) {
        ("edge.test", "/robots.txt") => Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(
                "User-agent: SomeOtherBot\nDisallow: /\n\nUser-agent: *\nDisallow: /private/\nCrawl-delay: 0.05\n",
            ))
            .unwrap(),
        ("edge.test", "/") => html(EDGE_INDEX),
        ("edge.test", "/rel.html" | "/abs.html" | "/proto.html" | "/up.html" | "/final.html") => {
            html(format!("<title>{path}</title><a href=\"/\">home</a>"))
        }
        ("edge.test", "/private/secret.html") => html("secret"),
        ("edge.test", "/r/1") => redirect(301, "http://edge.test/r/2"),
        ("edge.test", "/r/2") => redirect(302, "/r/3"),
        ("edge.test", "/r/3") => redirect(307, "../final.html"),
        ("edge.test", "/loop/a") => redirect(302, "/loop/b"),
        ("edge.test", "/loop/b") => redirect(302, "/loop/a"),
        ("edge.test", p) if p.starts_with("/chain/") => {
            let n: u32 = p[7..].parse().unwrap_or(0);
            redirect(302, &format!("/chain/{}", n + 1))
        }
        ("edge.test", "/broken") => status(500),
        ("edge.test", "/flaky") if times_asked == 1 => status(503),
        ("edge.test", "/flaky") => html("<p>flaky worked</p>"),
        ("edge.test", "/busy") if times_asked == 1 => Response::builder()
            .status(429)
            .header(header::RETRY_AFTER, "1")
            .body(Body::from("slow down"))
            .unwrap(),
        ("edge.test", "/busy") => html("<p>busy worked</p>"),
        ("edge.test", "/slow") => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            html("too late")
        }
        ("edge.test", "/endless") => {
            let chunk = Bytes::from_static(b"<p>and on and on and on and on and on</p>\n");
            let stream = futures::stream::repeat_with(move || Ok::<_, Infallible>(chunk.clone()));
            Response::builder()
                .header(header::CONTENT_TYPE, "text/html")
                .body(Body::from_stream(stream))
                .unwrap()
        }
        ("edge.test", "/bomb") => Response::builder()
            .header(header::CONTENT_TYPE, "text/html")
            .header(header::CONTENT_ENCODING, "gzip")
            .body(Body::from(gzip_bomb()))
            .unwrap(),
        ("edge.test", "/latin1.html") => Response::builder()
            .header(header::CONTENT_TYPE, "text/html")
            .body(Body::from(
                encoding_rs::WINDOWS_1252
                    .encode("<html><body><p>Der Bäcker backt frische Brötchen für die Straße, jeden Morgen um fünf Uhr früh.</p></body></html>")
                    .0
                    .into_owned(),
            ))
            .unwrap(),
        ("edge.test", "/sjis.html") => Response::builder()
            .header(header::CONTENT_TYPE, HeaderValue::from_static("text/html"))
            .body(Body::from(
                encoding_rs::SHIFT_JIS
                    .encode("<html><body><p>日本語のページです。文字コードの宣言はありません。東京都の天気は晴れです。</p></body></html>")
                    .0
                    .into_owned(),
            ))
            .unwrap(),
        ("edge.test", "/doc.pdf") => Response::builder()
            .header(header::CONTENT_TYPE, "application/pdf")
            .body(Body::from("%PDF-1.4 not really"))
            .unwrap(),
        ("edge.test", "/nofollow-target.html") => html("should not be discovered"),
        ("other.test", _) => html("<a href=\"/more\">more</a>"),
        _ => status(404),
    })
}

/// Grid page `p<i>.html` of `host`: links to the next three pages (wrapping), so a crawl from
/// `p0.html` reaches all of them; `/robots.txt` disallows `/private/`.
fn grid_page(host: &str, path: &str) -> Response {
    if path == "/robots.txt" {
        return Response::builder()
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("User-agent: *\nDisallow: /private/\n"))
            .unwrap();
    }
    let Some(i) = path
        .strip_prefix("/p")
        .and_then(|p| p.strip_suffix(".html"))
        .and_then(|p| p.parse::<usize>().ok())
        .filter(|i| *i < GRID_PAGES)
    else {
        return status(404);
    };
    let links: String = (1..=3)
        .map(|k| format!("<a href=\"/p{}.html\">next {k}</a>\n", (i + k) % GRID_PAGES))
        .collect();
    html(format!(
        "<html><head><title>{host} page {i}</title></head><body>{links}<a href=\"/private/p{i}.html\">private</a></body></html>"
    ))
}
