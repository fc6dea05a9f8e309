//! The crawl dataset's tables, shared by the stages that write them and `sluice query`:
//!
//! - the storage they live in is the runtime's service (`sluice_runtime::services::Storage`),
//!   re-exported here;
//! - `naming.rs` — file names derived from the Kafka offsets they cover;
//! - `writer.rs` — one Parquet file, written aside and published when complete;
//! - `reader.rs` — some columns of one file, a few rows at a time;
//! - `pages.rs`, `anchors.rs`, `embeddings.rs` — each table's Arrow schema and row builder.

mod anchors;
mod embeddings;
mod naming;
mod pages;
mod reader;
mod writer;

pub use anchors::{anchors_schema, AnchorRow, AnchorRows, ANCHORS_SCHEMA_VERSION};
pub use embeddings::{
    embeddings_schema, kind, EmbeddingRow, EmbeddingRows, EMBEDDINGS_SCHEMA_VERSION, EMBEDDING_DIMS,
};
pub use naming::{prefix as file_prefix, FileName};
pub use pages::{pages_schema, PageRows, PAGES_SCHEMA_VERSION};
pub use reader::{read_columns, ReadError};
pub use sluice_runtime::services::{Storage, StorageError};
pub use writer::{tmp_name, TableWriter, WriteError, Written, ROW_GROUP_BYTES};

/// Table names.
pub mod table {
    /// Crawled pages.
    pub const PAGES: &str = "pages";
    /// Links between pages.
    pub const ANCHORS: &str = "anchors";
    /// Embedded texts.
    pub const EMBEDDINGS: &str = "embeddings";
}
