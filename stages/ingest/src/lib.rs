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

use futures::future::BoxFuture;
use sluice_config::{KindInfo, PortInfo};
use sluice_runtime::stage::{StageContext, StageImpl, StageKind};
use sluice_topics::{Contract, UrlIn};

pub use parse::{parse_body, Parsed, Rejected};
pub use settings::{Settings, DEFAULT_LISTEN};

/// The `ingest` stage kind.
pub struct Kind;

impl StageKind for Kind {
    fn info(&self) -> KindInfo {
        KindInfo {
            name: "ingest",
            summary: "HTTP endpoint POST /v1/urls that writes submitted URLs to a topic",
            input: None,
            outputs: vec![PortInfo {
                field: "output",
                message_type: UrlIn::TYPE,
                required: true,
            }],
            check_settings: |node| {
                sluice_config::from_node::<Settings>(node)
                    .map(|_| ())
                    .map_err(|d| vec![d])
            },
            deployment: settings::deployment(),
        }
    }

    fn build(&self, ctx: StageContext) -> BoxFuture<'static, anyhow::Result<StageImpl>> {
        Box::pin(async move {
            let settings: Settings = ctx.settings()?;
            let keys = keys::ApiKeys::load(&settings)?;
            let output = ctx.output_topic("output")?;
            Ok(StageImpl::Source(Box::new(server::Ingest {
                settings,
                keys,
                output,
            })))
        })
    }
}
