//! Dead-letter records: the original message plus why it failed, in headers.
//!
//! Header names (all values UTF-8):
//! `sluice.stage`, `sluice.error`, `sluice.error_code`, `sluice.attempts`,
//! `sluice.source.topic`, `sluice.source.partition`, `sluice.source.offset`.

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
