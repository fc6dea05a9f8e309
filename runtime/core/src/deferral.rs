//! Deferring a record: a stage hands a record it cannot serve soon to a delay topic with the
//! time it is due, and a `delay` stage passes it back when that time comes. The runtime knows
//! nothing of why; the crawl frontier uses it for URLs of domains that are busy for a while.

use sluice_bus::{now_ms, OutRecord, Record};

/// Header: the time (Unix ms, decimal) before which the record should not be handled again.
pub const NOT_BEFORE: &str = "sluice.not_before";

/// `record` again, for `topic`, due `after_ms` from now: key, value and headers kept (an
/// earlier due time replaced).
pub fn deferred(record: &Record, topic: &str, after_ms: i64) -> OutRecord {
    let mut out = passed_on(record, topic);
    out.headers.push((
        NOT_BEFORE.to_string(),
        (now_ms() + after_ms.max(0)).to_string().into_bytes(),
    ));
    out
}

/// `record` again, for `topic`, without its due time: what a delay stage passes on.
pub fn passed_on(record: &Record, topic: &str) -> OutRecord {
    let mut out = OutRecord::new(topic, record.value.clone());
    out.key = record.key.clone();
    out.headers = record
        .headers
        .iter()
        .filter(|(name, _)| name != NOT_BEFORE)
        .cloned()
        .collect();
    out
}

/// When `record` is due (Unix ms), if it carries a readable due time.
pub fn not_before(record: &Record) -> Option<i64> {
    std::str::from_utf8(record.header(NOT_BEFORE)?)
        .ok()?
        .parse()
        .ok()
}
