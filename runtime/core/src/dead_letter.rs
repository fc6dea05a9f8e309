//! Dead-letter records: the original message plus why it failed, in headers.
//!
//! Header names (all values UTF-8):
//! `sluice.stage`, `sluice.error`, `sluice.error_code`, `sluice.attempts`,
//! `sluice.source.topic`, `sluice.source.partition`, `sluice.source.offset`, and
//! `sluice.value_dropped` (the original value's length) when the dead-letter topic refused the
//! record with its value.

use sluice_bus::{OutRecord, Record};

/// Header: the stage that gave up.
pub const STAGE: &str = "sluice.stage";
/// Header: the error text.
pub const ERROR: &str = "sluice.error";
/// Header: a stable error code.
pub const ERROR_CODE: &str = "sluice.error_code";
/// Header: how many attempts were made.
pub const ATTEMPTS: &str = "sluice.attempts";
/// Header: topic the record came from.
pub const SOURCE_TOPIC: &str = "sluice.source.topic";
/// Header: its partition.
pub const SOURCE_PARTITION: &str = "sluice.source.partition";
/// Header: its offset.
pub const SOURCE_OFFSET: &str = "sluice.source.offset";

/// Header: the value was left out (its length in bytes): the dead-letter topic refused it.
pub const VALUE_DROPPED: &str = "sluice.value_dropped";

/// The same dead letter without its value, for a dead-letter topic that refuses the whole
/// record as too large.
pub fn without_value(mut out: OutRecord) -> OutRecord {
    let len = std::mem::take(&mut out.value).len();
    out.headers
        .push((VALUE_DROPPED.to_string(), len.to_string().into_bytes()));
    out
}

/// Builds the dead-letter record for `record`: same key and value, original headers kept,
/// reason headers added.
pub fn record(
    dead_letter_topic: &str,
    stage: &str,
    record: &Record,
    code: &str,
    error: &str,
    attempts: u32,
) -> OutRecord {
    let mut out = OutRecord::new(dead_letter_topic, record.value.clone());
    out.key = record.key.clone();
    out.headers = record.headers.clone();
    out.headers.extend([
        (STAGE.to_string(), stage.as_bytes().to_vec()),
        (ERROR.to_string(), error.as_bytes().to_vec()),
        (ERROR_CODE.to_string(), code.as_bytes().to_vec()),
        (ATTEMPTS.to_string(), attempts.to_string().into_bytes()),
        (SOURCE_TOPIC.to_string(), record.topic.as_bytes().to_vec()),
        (
            SOURCE_PARTITION.to_string(),
            record.partition.to_string().into_bytes(),
        ),
        (
            SOURCE_OFFSET.to_string(),
            record.offset.to_string().into_bytes(),
        ),
    ]);
    out
}
