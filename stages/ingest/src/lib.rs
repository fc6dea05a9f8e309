//! # ingest
//!
//! An HTTP endpoint for submitting URLs: `POST /v1/urls` with a JSON array (of URL strings or
//! `{"url": ..., "depth": ...}` objects) or newline-separated text. Requests need an API key
//! (`Authorization: Bearer KEY` or `X-API-Key: KEY`) unless `auth: false`. Accepted URLs are
//! written to the output topic as [`UrlIn`] messages, and the answer comes only after the
//! broker acknowledged them, so "accepted" means durable.
//!
//! Files: `settings.rs` (pipeline.yaml fields and API keys), `parse.rs` (request bodies),
//! `server.rs` (the HTTP server).
//!
//! [`UrlIn`]: sluice_topics::UrlIn

mod keys;
mod parse;
mod server;
mod settings;

use sluice_config::KindInfo;
use sluice_runtime::stage::{StageContext, StageImpl, StageKind};
use sluice_topics::{Contract, UrlIn};

pub use parse::{parse_body, Parsed, Rejected};
pub use settings::{Settings, DEFAULT_LISTEN};

/// The `ingest` stage kind.
pub struct Kind;

impl StageKind for Kind {
    type Settings = Settings;

    fn info(&self) -> KindInfo {
        KindInfo::new(
            "ingest",
            "HTTP endpoint POST /v1/urls that writes submitted URLs to a topic",
        )
        .output("output", UrlIn::TYPE)
        .deployment(settings::deployment())
    }

    async fn build(&self, settings: Settings, ctx: StageContext) -> anyhow::Result<StageImpl> {
        let keys = keys::ApiKeys::load(&settings)?;
        let output = ctx.output("output")?;
        Ok(StageImpl::Source(Box::new(server::Ingest {
            settings,
            keys,
            output,
        })))
    }
}
