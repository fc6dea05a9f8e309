//! Deferring a record: a stage hands a record it cannot serve soon to a delay topic with the
//! time it is due, and a `delay` stage passes it back when that time comes. The runtime knows
//! nothing of why; the crawl frontier uses it for URLs of domains that are busy for a while.
//!
//! The due time travels in the record's value, framed before the original bytes: [`MAGIC`],
//! then the due time as 8 bytes (Unix ms, big-endian), then the value as it was. A delay topic
//! is high-volume, and a header on every record would cost some brokers dearly (tansu's sqlite
//! engine scans a table without an index to fetch records with headers, so fetches slow down
//! as the topic grows: a 1,000-domain crawl stalled its broker). So a delay topic carries its
//! type's records, each framed; key and headers pass through untouched.

use sluice_bus::{now_ms, OutRecord, Record};

/// The first bytes of a framed value. A JSON or text value never starts with a NUL byte.
pub const MAGIC: &[u8; 4] = b"\0SLD";

/// Bytes of the frame before the original value.
const FRAME: usize = MAGIC.len() + 8;

/// `record` again, for `topic`, due `after_ms` from now: key, headers and value kept, the
/// value framed with its due time (an earlier frame replaced).
pub fn deferred(record: &Record, topic: &str, after_ms: i64) -> OutRecord {
    let mut out = framed(topic, unframed(&record.value), after_ms);
    out.key = record.key.clone();
    out.headers = record.headers.clone();
    out
}

/// A new record for `topic` holding `value`, due `after_ms` from now (no key, no headers):
/// for a stage that defers something other than the record it is processing.
pub fn framed(topic: &str, value: &[u8], after_ms: i64) -> OutRecord {
    let due = now_ms() + after_ms.max(0);
    let mut framed = Vec::with_capacity(FRAME + value.len());
    framed.extend_from_slice(MAGIC);
    framed.extend_from_slice(&due.to_be_bytes());
    framed.extend_from_slice(value);
    OutRecord::new(topic, framed)
}

/// `record` again, for `topic`, without its due time: what a delay stage passes on.
pub fn passed_on(record: &Record, topic: &str) -> OutRecord {
    let mut out = OutRecord::new(topic, unframed(&record.value).to_vec());
    out.key = record.key.clone();
    out.headers = record.headers.clone();
    out
}

/// When `record` is due (Unix ms), if its value is framed with a due time.
pub fn not_before(record: &Record) -> Option<i64> {
    let frame = record.value.strip_prefix(MAGIC.as_slice())?.get(..8)?;
    Some(i64::from_be_bytes(frame.try_into().ok()?))
}

/// A value without its frame (as it is if it has none).
fn unframed(value: &[u8]) -> &[u8] {
    match value.strip_prefix(MAGIC.as_slice()) {
        Some(rest) if rest.len() >= 8 => &rest[8..],
        _ => value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &[u8]) -> Record {
        Record {
            topic: "in".into(),
            partition: 0,
            offset: 7,
            key: Some(b"example.org".to_vec()),
            value: value.to_vec(),
            headers: vec![("trace".into(), b"1".to_vec())],
            timestamp_ms: None,
        }
    }

    #[test]
    fn a_deferred_record_carries_its_due_time_and_comes_back_as_it_was() {
        let original = record(br#"{"url":"http://example.org/"}"#);
        let before = now_ms();
        let later = deferred(&original, "deferred", 5_000);
        assert!(later.value.starts_with(MAGIC));
        assert_eq!(later.key, original.key);
        assert_eq!(later.headers, original.headers);
        let mut held = record(&later.value);
        held.headers = later.headers.clone();
        let due = not_before(&held).unwrap();
        assert!(due >= before + 5_000 && due <= now_ms() + 5_000);
        let back = passed_on(&held, "urls");
        assert_eq!(back.value, original.value);
        assert_eq!((back.key, back.headers), (original.key, original.headers));
        // Deferred again: one frame, the new due time.
        let again = deferred(&held, "deferred", 0);
        assert_eq!(again.value.len(), later.value.len());
        assert!(not_before(&record(&again.value)).unwrap() < due);
    }

    #[test]
    fn an_unframed_value_is_due_now_and_passes_unchanged() {
        for value in [&b"plain"[..], b"\0SLD123", b""] {
            let r = record(value);
            assert_eq!(not_before(&r), None);
            assert_eq!(passed_on(&r, "out").value, value);
        }
    }
}
