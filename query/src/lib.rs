//! SQL over the crawl dataset with DataFusion: the `sluice query` command.
//!
//! The tables `pages`, `anchors` and `embeddings` are registered from the pipeline's storage
//! (a local directory or an object store) as listing tables over their Parquet files, with
//! the schemas from `sluice-tables` — so a table with no files yet is empty, not an error.
//! Files being written live under `_tmp/`, outside every table: queries never see them.
//!
//! DataFusion lives in this crate only; the stages do not link it.

use std::io::Write;
use std::sync::Arc;

use anyhow::Context;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use sluice_tables::{anchors_schema, pages_schema, table, Storage};

/// How results are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON object per line.
    Json,
    /// A Parquet file.
    Parquet,
}

/// A DataFusion context with the dataset's tables registered.
pub async fn context(storage: &Storage) -> anyhow::Result<SessionContext> {
    let ctx = SessionContext::new();
    if storage.local_dir().is_none() {
        let mut store_url = storage.url().clone();
        store_url.set_path("/");
        ctx.register_object_store(&store_url, storage.store());
    }
    let known: [(&str, Option<SchemaRef>); 3] = [
        (table::PAGES, Some(pages_schema())),
        (table::ANCHORS, Some(anchors_schema())),
        (table::EMBEDDINGS, None),
    ];
    for (name, schema) in known {
        if let Some(dir) = storage.local_dir() {
            std::fs::create_dir_all(dir.join(name))
                .with_context(|| format!("creating {}", dir.join(name).display()))?;
        }
        let url = ListingTableUrl::parse(storage.table_url(name).as_str())?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
        let config = ListingTableConfig::new(url).with_listing_options(options);
        let config = match schema {
            Some(s) => config.with_schema(s),
            None => match config.infer_schema(&ctx.state()).await {
                Ok(c) => c,
                // No files yet and no fixed schema: the table does not exist.
                Err(_) => continue,
            },
        };
        ctx.register_table(name, Arc::new(ListingTable::try_new(config)?))?;
    }
    Ok(ctx)
}

/// Runs `sql` over the dataset in `storage`.
pub async fn query(storage: &Storage, sql: &str) -> anyhow::Result<Vec<RecordBatch>> {
    let ctx = context(storage).await?;
    let df = ctx.sql(sql).await?;
    Ok(df.collect().await?)
}

/// Writes `batches` to `out` in `format`.
pub fn render(
    batches: &[RecordBatch],
    format: Format,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    use datafusion::arrow::{csv, json, util::pretty};
    match format {
        Format::Table => {
            writeln!(out, "{}", pretty::pretty_format_batches(batches)?)?;
        }
        Format::Csv => {
            let mut w = csv::WriterBuilder::new().with_header(true).build(out);
            for b in batches {
                w.write(b)?;
            }
        }
        Format::Json => {
            let mut w = json::LineDelimitedWriter::new(out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
        Format::Parquet => {
            let Some(first) = batches.first() else {
                return Ok(());
            };
            let mut w =
                datafusion::parquet::arrow::ArrowWriter::try_new(out, first.schema(), None)?;
            for b in batches {
                w.write(b)?;
            }
            w.close()?;
        }
    }
    Ok(())
}

/// Rows in `batches`.
pub fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}
