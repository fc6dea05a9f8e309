//! A small stage-kind catalog for the tests; no real stages live in this crate.

#![allow(dead_code)]

use std::time::Duration;

use serde::Deserialize;
use sluice_config::{check_with, HumanDuration, KindInfo, PortInfo, Spanned};

/// Settings of the `http-source` kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSettings {
    pub listen: Spanned<String>,
}

/// Settings of the `normalize-dedup` kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NormalizeSettings {
    #[serde(default)]
    pub recrawl_after: Option<HumanDuration>,
    #[serde(default)]
    pub strip_query: bool,
}

/// Settings of the `crawl` kind.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CrawlSettings {
    #[serde(default)]
    pub user_agent: Option<String>,
    #[serde(default, with = "sluice_config::serde_duration::option")]
    pub timeout: Option<Duration>,
}

/// Settings of the `sink` kind (none).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoSettings {}

pub fn catalog() -> Vec<KindInfo> {
    vec![
        KindInfo {
            name: "http-source",
            summary: "accepts URLs over HTTP",
            input: None,
            outputs: vec![PortInfo {
                field: "output",
                message_type: "RawUrl",
                required: true,
            }],
            check_settings: check_with::<SourceSettings>,
            deployment: Default::default(),
        },
        KindInfo {
            name: "normalize-dedup",
            summary: "normalizes and deduplicates URLs",
            input: Some("RawUrl"),
            outputs: vec![PortInfo {
                field: "output",
                message_type: "Url",
                required: true,
            }],
            check_settings: check_with::<NormalizeSettings>,
            deployment: Default::default(),
        },
        KindInfo {
            name: "crawl",
            summary: "fetches pages",
            input: Some("Url"),
            outputs: vec![
                PortInfo {
                    field: "output",
                    message_type: "Page",
                    required: true,
                },
                PortInfo {
                    field: "discovered",
                    message_type: "RawUrl",
                    required: false,
                },
            ],
            check_settings: check_with::<CrawlSettings>,
            deployment: Default::default(),
        },
        KindInfo {
            name: "sink",
            summary: "stores pages",
            input: Some("Page"),
            outputs: vec![],
            check_settings: check_with::<NoSettings>,
            deployment: Default::default(),
        },
    ]
}

/// A fake environment from `NAME=value` pairs.
pub fn env_from(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let pairs: Vec<(String, String)> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}
