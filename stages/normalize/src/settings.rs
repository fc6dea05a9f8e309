use serde::Deserialize;
use sluice_config::HumanDuration;
use sluice_web::normalize::NormalizeOptions;

/// `normalize-dedup` settings in pipeline.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// A URL is passed on again only after this long (default `24h`). Part of the recrawl
    /// clock, which the crawl stage fed by this one shares.
    pub recrawl_after: HumanDuration,
    /// Deduplicate through the cache (default true). Off: every valid URL passes.
    pub dedup: bool,
    /// Prefix of the cache keys, so pipelines can share one memcached.
    pub key_prefix: String,
    /// Longest normalized URL accepted (default 2048).
    pub max_length: usize,
    /// Query parameters removed; `name*` matches a prefix (default: tracking parameters).
    pub strip_params: Vec<String>,
    /// Sort the remaining query parameters (default false: order can matter to a site).
    pub sort_query: bool,
    /// Accepted schemes (default http, https).
    pub schemes: Vec<String>,
    /// Drop session ids (`;jsessionid=`, `PHPSESSID`, `sid`, …) so that a site handing out a
    /// new one per visit is not an endless supply of new URLs (default true).
    pub strip_session_ids: bool,
}

impl Default for Settings {
    fn default() -> Self {
        let n = NormalizeOptions::default();
        let clock = sluice_recrawl::ClockSettings::default();
        Self {
            recrawl_after: clock.recrawl_after,
            dedup: true,
            key_prefix: clock.key_prefix,
            max_length: n.max_length,
            strip_params: n.strip_params,
            sort_query: n.sort_query,
            schemes: n.schemes,
            strip_session_ids: n.strip_session_ids,
        }
    }
}

impl Settings {
    /// The normalizer's options.
    pub fn normalize_options(&self) -> NormalizeOptions {
        NormalizeOptions {
            max_length: self.max_length,
            strip_params: self.strip_params.clone(),
            sort_query: self.sort_query,
            schemes: self.schemes.clone(),
            strip_session_ids: self.strip_session_ids,
        }
    }
}

impl sluice_config::Validate for Settings {}
