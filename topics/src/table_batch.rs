use serde::{Deserialize, Serialize};

use crate::{Contract, DecodeError};

/// A Parquet file that a stage finished: what parquet-batch and anchors publish (the
/// claim-check pattern — the rows stay in storage, the topic carries where they are).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableBatch {
    /// The table the file belongs to (`pages`, `anchors`, ...).
    pub table: String,
    /// Path of the file relative to the storage root (`pages/urls-p3-....parquet`).
    pub path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
    /// The topic whose records the rows came from.
    pub source_topic: String,
    /// Their partition.
    pub partition: i32,
    /// First offset covered.
    pub first_offset: i64,
    /// Last offset covered.
    pub last_offset: i64,
    /// Version of the table's schema (see the `sluice-tables` crate).
    pub schema_version: u32,
    /// When the file was completed, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Counters worth keeping with the file (`skipped_javascript`, `page_errors`, ...).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub counts: std::collections::BTreeMap<String, u64>,
}

impl Contract for TableBatch {
    const TYPE: &'static str = "table-batch";

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("TableBatch serializes")
    }

    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let b = TableBatch {
            table: "pages".into(),
            path: "pages/pages-p1-00000000000000000000-00000000000000000099.parquet".into(),
            rows: 100,
            bytes: 12345,
            source_topic: "pages".into(),
            partition: 1,
            first_offset: 0,
            last_offset: 99,
            schema_version: 1,
            created_at_ms: 1,
            counts: [("skipped_javascript".to_string(), 2)].into(),
        };
        assert_eq!(TableBatch::decode(&b.encode()).unwrap(), b);
    }
}
