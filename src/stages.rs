//! The stage kinds this binary knows: one line per kind. A new kind is a folder under
//! `stages/` plus a line here.

use sluice_runtime::registry::Registry;

/// Every stage kind.
pub fn registry() -> Registry {
    let mut r = Registry::new();
    r.register(sluice_stage_ingest::Kind);
    r.register(sluice_stage_normalize::Kind);
    r.register(sluice_stage_crawl::Kind);
    r.register(sluice_stage_delay::Kind);
    r.register(sluice_stage_batch::Kind);
    r.register(sluice_stage_anchors::Kind);
    r.register(sluice_stage_embeddings::Kind);
    r
}
