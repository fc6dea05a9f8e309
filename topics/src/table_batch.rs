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

/// What a finished file of a derived table holds, for [`TableBatch::derived`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerivedFile {
    /// The table.
    pub table: String,
    /// Path relative to the storage root.
    pub path: String,
    /// Rows.
    pub rows: u64,
    /// Size in bytes.
    pub bytes: u64,
    /// Version of the table's schema.
    pub schema_version: u32,
    /// When it was written, in milliseconds since the Unix epoch.
    pub created_at_ms: i64,
    /// Stage-specific counts.
    pub counts: std::collections::BTreeMap<String, u64>,
}

impl TableBatch {
    /// Decodes a manifest that must be of `table`; the error is a dead-letter code and reason.
    pub fn decode_of(bytes: &[u8], table: &str) -> Result<Self, (&'static str, String)> {
        let m = Self::decode(bytes)
            .map_err(|e| (e.code(), format!("undecodable table-batch message: {e}")))?;
        if m.table != table {
            return Err((
                "wrong_table",
                format!("a `{}` batch; this stage reads `{table}` batches", m.table),
            ));
        }
        Ok(m)
    }

    /// The manifest of a file made from this one's: same source topic, partition and offsets.
    pub fn derived(&self, file: DerivedFile) -> TableBatch {
        TableBatch {
            table: file.table,
            path: file.path,
            rows: file.rows,
            bytes: file.bytes,
            source_topic: self.source_topic.clone(),
            partition: self.partition,
            first_offset: self.first_offset,
            last_offset: self.last_offset,
            schema_version: file.schema_version,
            created_at_ms: file.created_at_ms,
            counts: file.counts,
        }
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
        assert_eq!(TableBatch::decode_of(&b.encode(), "pages").unwrap(), b);
        assert_eq!(
            TableBatch::decode_of(&b.encode(), "anchors").unwrap_err().0,
            "wrong_table"
        );
        assert!(TableBatch::decode_of(b"{", "pages").is_err());
        let d = b.derived(DerivedFile {
            table: "anchors".into(),
            path: "anchors/x.parquet".into(),
            rows: 3,
            bytes: 4,
            schema_version: 2,
            created_at_ms: 5,
            counts: Default::default(),
        });
        assert_eq!((d.partition, d.first_offset, d.last_offset), (1, 0, 99));
        assert_eq!(
            (d.table.as_str(), d.rows, d.schema_version),
            ("anchors", 3, 2)
        );
    }
}
