use std::path::PathBuf;

use serde::Deserialize;

/// `ingest` settings in pipeline.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Address to listen on (default `0.0.0.0:8080`).
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
            listen: "0.0.0.0:8080".into(),
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
