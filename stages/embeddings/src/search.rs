//! Semantic search over what the stage embedded: nearest texts to a query, from Chroma when
//! it is configured, otherwise by exact search over the `embeddings` table.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashSet};

use anyhow::Context as _;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Float32Type;
use futures::TryStreamExt;
use serde::Serialize;
use serde_json::{json, Value};
use sluice_tables::{embeddings_schema, read_columns, table, Storage};

use sluice_runtime::services::chroma::Chroma;

/// What to search.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// Results wanted.
    pub k: usize,
    /// Only this kind (`anchor` or `page`).
    pub kind: Option<String>,
    /// Only texts on pages of this registrable domain, or links into it.
    pub domain: Option<String>,
}

/// One result.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Hit {
    /// Cosine similarity to the query (1 is identical).
    pub score: f32,
    /// `anchor` or `page`.
    pub kind: String,
    /// The embedded text.
    pub text: String,
    /// The page the text is on.
    pub source_url: String,
    /// The link's target (anchors).
    pub target_url: Option<String>,
    /// The point's id.
    pub id: String,
}

/// The `where` filter for Chroma.
fn chroma_filter(q: &Query) -> Option<Value> {
    let mut parts = Vec::new();
    if let Some(k) = &q.kind {
        parts.push(json!({ "kind": k }));
    }
    if let Some(d) = &q.domain {
        parts.push(json!({ "$or": [{ "source_domain": d }, { "target_domain": d }] }));
    }
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(json!({ "$and": parts })),
    }
}

/// Nearest points in Chroma.
pub async fn search_chroma(chroma: &Chroma, vector: &[f32], q: &Query) -> anyhow::Result<Vec<Hit>> {
    let found = chroma.query(vector, q.k, chroma_filter(q)).await?;
    let s = |m: &serde_json::Map<String, Value>, k: &str| {
        m.get(k).and_then(Value::as_str).map(str::to_string)
    };
    Ok(found
        .into_iter()
        .map(|f| Hit {
            score: f.score,
            kind: s(&f.metadata, "kind").unwrap_or_default(),
            source_url: s(&f.metadata, "source_url").unwrap_or_default(),
            target_url: s(&f.metadata, "target_url"),
            text: f.text,
            id: f.id,
        })
        .collect())
}

/// A candidate in the top-k heap, ordered by score (lowest on top, to be evicted first).
struct Scored(f32, Hit);

impl PartialEq for Scored {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.total_cmp(&self.0)
    }
}

const COLUMNS: [&str; 8] = [
    "id",
    "kind",
    "text",
    "source_url",
    "target_url",
    "source_domain",
    "target_domain",
    "vector",
];

/// Adds the rows of `batch` matching `q` to the top-k `heap`.
fn scan(
    batch: &RecordBatch,
    vector: &[f32],
    q: &Query,
    heap: &mut BinaryHeap<Scored>,
    ids: &mut HashSet<String>,
) {
    let col = |name: &str| batch.column_by_name(name).expect("projected column");
    let id = col("id").as_string::<i32>();
    let kind = col("kind").as_string::<i32>();
    let text = col("text").as_string::<i32>();
    let source_url = col("source_url").as_string::<i32>();
    let target_url = col("target_url").as_string::<i32>();
    let source_domain = col("source_domain").as_string::<i32>();
    let target_domain = col("target_domain").as_string::<i32>();
    let vectors = col("vector").as_fixed_size_list();
    let values = vectors.values().as_primitive::<Float32Type>().values();
    let dims = vectors.value_length() as usize;
    if dims != vector.len() {
        return;
    }
    for i in 0..batch.num_rows() {
        if q.kind.as_deref().is_some_and(|k| kind.value(i) != k) {
            continue;
        }
        if let Some(d) = &q.domain {
            let on = source_domain.value(i) == d;
            let into = !target_domain.is_null(i) && target_domain.value(i) == d;
            if !on && !into {
                continue;
            }
        }
        let start = (vectors.offset() + i) * dims;
        let row = &values[start..start + dims];
        // Stored vectors are unit length: the dot product is the cosine similarity.
        let score: f32 = row.iter().zip(vector).map(|(a, b)| a * b).sum();
        if heap.len() >= q.k && heap.peek().is_some_and(|w| w.0 >= score) {
            continue;
        }
        // The same point in several files (a replayed or recrawled batch) counts once.
        if !ids.insert(id.value(i).to_string()) {
            continue;
        }
        heap.push(Scored(
            score,
            Hit {
                score,
                kind: kind.value(i).to_string(),
                text: text.value(i).to_string(),
                source_url: source_url.value(i).to_string(),
                target_url: (!target_url.is_null(i)).then(|| target_url.value(i).to_string()),
                id: id.value(i).to_string(),
            },
        ));
        if heap.len() > q.k {
            heap.pop();
        }
    }
}

/// Exact search: every row of every file of the `embeddings` table, read a few thousand rows
/// at a time.
pub async fn search_table(
    storage: &Storage,
    vector: &[f32],
    q: &Query,
) -> anyhow::Result<Vec<Hit>> {
    let mut heap = BinaryHeap::new();
    let mut ids = HashSet::new();
    let mut files = storage.list(table::EMBEDDINGS, "").await?;
    files.sort();
    for (name, _) in files {
        if !name.ends_with(".parquet") {
            continue;
        }
        let path = storage.table_file(table::EMBEDDINGS, &name);
        let mut stream = read_columns(storage, &path, &embeddings_schema(), &COLUMNS, 4096)
            .await
            .with_context(|| format!("reading {name}"))?;
        while let Some(batch) = stream
            .try_next()
            .await
            .with_context(|| format!("reading {name}"))?
        {
            scan(&batch, vector, q, &mut heap, &mut ids);
        }
    }
    let mut hits: Vec<Hit> = heap.into_iter().map(|s| s.1).collect();
    hits.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_combine() {
        assert_eq!(chroma_filter(&Query::default()), None);
        let q = Query {
            k: 3,
            kind: Some("anchor".into()),
            domain: Some("a.test".into()),
        };
        assert_eq!(
            chroma_filter(&q).unwrap(),
            json!({"$and": [{"kind": "anchor"}, {"$or": [{"source_domain": "a.test"}, {"target_domain": "a.test"}]}]})
        );
    }
}
