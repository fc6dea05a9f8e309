use std::path::PathBuf;

use serde::Deserialize;
use sluice_config::{DeploymentInfo, ListenPort};

/// Where ingest listens when `listen` is not set; also the port its deployment opens then.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8080";

/// `ingest` settings in pipeline.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on (default [`DEFAULT_LISTEN`]).
    pub listen: String,
    /// Require an API key (default true).
    pub auth: bool,
    /// Environment variable holding comma-separated API keys (default `SLUICE_API_KEYS`).
    pub api_keys_env: String,
    /// File with one API key per line (`#` comments allowed), e.g. a mounted Secret.
    pub api_keys_file: Option<PathBuf>,
    /// Largest request body in bytes (default 1 MiB); larger gets 413.
    pub max_body_bytes: usize,
    /// Most URLs in one request (default 10,000).
    pub max_urls: usize,
    /// Longest URL accepted (default 2048).
    pub max_url_length: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: DEFAULT_LISTEN.into(),
            auth: true,
            api_keys_env: "SLUICE_API_KEYS".into(),
            api_keys_file: None,
            max_body_bytes: 1 << 20,
            max_urls: 10_000,
            max_url_length: 2048,
        }
    }
}

impl sluice_config::Validate for Settings {}

/// What a deployment of ingest opens: the `listen` port, behind a Service for clients in the
/// cluster, and `/v1/urls` through an Ingress when one is rendered.
pub(crate) fn deployment() -> DeploymentInfo {
    DeploymentInfo {
        listens: vec![ListenPort {
            setting: "listen",
            default_address: DEFAULT_LISTEN,
            name: "http",
            service_port: Some(80),
            ingress_path: Some("/v1/urls"),
        }],
        ..DeploymentInfo::default()
    }
}
