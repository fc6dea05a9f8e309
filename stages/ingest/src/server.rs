//! The HTTP server.

use std::sync::Arc;

use anyhow::Context as _;
use async_trait::async_trait;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::json;
use sluice_runtime::stage::{Output, Source, StageContext};
use sluice_topics::Contract;

use crate::keys::ApiKeys;
use crate::parse::parse_body;
use crate::settings::Settings;

/// The running endpoint.
pub struct Ingest {
    pub(crate) settings: Settings,
    pub(crate) keys: ApiKeys,
    pub(crate) output: Output,
}

struct AppState {
    ctx: StageContext,
    settings: Settings,
    keys: ApiKeys,
    output: Output,
}

/// Most rejection reasons echoed back in one answer.
const MAX_REASONS: usize = 100;

fn presented_key(headers: &HeaderMap) -> Option<&[u8]> {
    if let Some(v) = headers.get("x-api-key") {
        return Some(v.as_bytes());
    }
    let auth = headers.get(header::AUTHORIZATION)?.as_bytes();
    // The scheme name is case-insensitive (RFC 7235).
    let (scheme, key) = auth.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| key.trim_ascii())
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn submit(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    if !st.keys.allows(presented_key(&headers)) {
        let mut r = error(StatusCode::UNAUTHORIZED, "missing or invalid API key");
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Bearer".parse().expect("static header"),
        );
        return r;
    }
    // Too large (413) or unreadable: the same JSON error shape as every other answer.
    let body = match body {
        Ok(b) => b,
        Err(e) => return error(e.status(), e.body_text()),
    };
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let parsed = match parse_body(&body, json, st.settings.max_url_length) {
        Ok(p) => p,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let total = parsed.accepted.len() + parsed.rejected.len();
    if total > st.settings.max_urls {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{total} URLs in one request; the limit is {}",
                st.settings.max_urls
            ),
        );
    }
    let mut out = st.ctx.emitter();
    let mut result = Ok(());
    for u in &parsed.accepted {
        result = out.send(&st.output, u.encode()).await;
        if result.is_err() {
            break;
        }
    }
    if result.is_ok() {
        result = out.flush().await;
    }
    for r in &parsed.rejected {
        st.ctx.metrics.event(&format!("rejected_{}", r.code));
    }
    let accepted = out.acknowledged();
    if let Err(why) = result {
        let failed = parsed.accepted.len() - accepted;
        tracing::warn!(failed, error = %format!("{why:#}"), "could not write URLs to the broker");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": format!("broker unavailable: {why}; resubmit (duplicates are removed downstream)"),
                "accepted": accepted,
                "failed": failed,
            })),
        )
            .into_response();
    }
    let reasons: Vec<_> = parsed.rejected.iter().take(MAX_REASONS).collect();
    (
        StatusCode::OK,
        Json(json!({
            "accepted": accepted,
            "rejected": parsed.rejected.len(),
            "errors": reasons,
        })),
    )
        .into_response()
}

#[async_trait]
impl Source for Ingest {
    async fn run(self: Box<Self>, ctx: StageContext) -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind(&self.settings.listen)
            .await
            .with_context(|| format!("ingest: cannot listen on {}", self.settings.listen))?;
        let addr = listener.local_addr()?;
        tracing::info!(stage = %ctx.name, %addr, "ingest listening: POST /v1/urls");
        let component = format!("stage:{}", ctx.name);
        ctx.health.ready(&component);
        let shutdown = ctx.shutdown.clone();
        let limit = self.settings.max_body_bytes;
        let state = Arc::new(AppState {
            ctx,
            settings: self.settings,
            keys: self.keys,
            output: self.output,
        });
        let app = Router::new()
            .route("/v1/urls", post(submit))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(state);
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .context("ingest server failed")
    }
}
