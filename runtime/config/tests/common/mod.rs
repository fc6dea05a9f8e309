//! A small stage-kind catalog for the tests; no real stages live in this crate.

#![allow(dead_code)]

use std::time::Duration;

use serde::Deserialize;
use sluice_config::{check_with, HumanDuration, KindInfo, Spanned, StaticKind};

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

pub fn catalog() -> Vec<StaticKind> {
    vec![
        StaticKind {
            info: KindInfo::new("http-source", "accepts URLs over HTTP").output("output", "RawUrl"),
            check: check_with::<SourceSettings>,
        },
        StaticKind {
            info: KindInfo::new("normalize-dedup", "normalizes and deduplicates URLs")
                .input("RawUrl")
                .output("output", "Url"),
            check: check_with::<NormalizeSettings>,
        },
        StaticKind {
            info: KindInfo::new("crawl", "fetches pages")
                .input("Url")
                .output("output", "Page")
                .optional_output("discovered", "RawUrl"),
            check: check_with::<CrawlSettings>,
        },
        StaticKind {
            info: KindInfo::new("sink", "stores pages").input("Page"),
            check: check_with::<NoSettings>,
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
