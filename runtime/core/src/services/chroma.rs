//! The Chroma collection the stage upserts into and `sluice search` queries (API v2).
//!
//! The chromadb crate does the collection calls; health (`/api/v2/heartbeat`) and the
//! server's batch limit (`/api/v2/pre-flight-checks`) are asked directly, because the crate's
//! own heartbeat calls the removed v1 API. Every call has a deadline (the crate sets none), and
//! a failed call drops the connection so the next one starts afresh.

use std::time::Duration;

use chromadb::client::{ChromaClient, ChromaClientOptions};
use chromadb::collection::{ChromaCollection, CollectionEntries, QueryOptions};
use serde_json::{json, Map, Value};
use tokio::sync::Mutex;

/// Per-request deadline.
const TIMEOUT: Duration = Duration::from_secs(30);
/// Chroma's documented largest batch, used when the server does not say.
const DEFAULT_MAX_BATCH: usize = 5461;

/// A Chroma failure.
#[derive(Debug, thiserror::Error)]
pub enum ChromaError {
    /// The server cannot be reached, timed out or failed (5xx): an outage.
    #[error("chroma at {url}: {message}")]
    Unavailable {
        /// The server.
        url: String,
        /// What happened.
        message: String,
    },
    /// The server refused the request (4xx): retrying the same request will not help.
    #[error("chroma at {url} refused the request: {message}")]
    Rejected {
        /// The server.
        url: String,
        /// What it said.
        message: String,
    },
}

/// One point to upsert.
#[derive(Debug, Clone)]
pub struct Point {
    /// Deterministic id (a content hash).
    pub id: String,
    /// The vector (shared with the table row and the vector cache; copied only into the
    /// request).
    pub vector: std::sync::Arc<[f32]>,
    /// The embedded text, stored as the document.
    pub text: String,
    /// Metadata (strings and numbers).
    pub metadata: Map<String, Value>,
}

/// One search result.
#[derive(Debug, Clone)]
pub struct Found {
    /// The point's id.
    pub id: String,
    /// Cosine similarity to the query.
    pub score: f32,
    /// The stored text.
    pub text: String,
    /// The stored metadata.
    pub metadata: Map<String, Value>,
}

struct Connected {
    collection: ChromaCollection,
    max_batch: usize,
}

/// A Chroma collection with cosine distance, connected on first use.
pub struct Chroma {
    url: String,
    name: String,
    http: reqwest::Client,
    conn: Mutex<Option<Connected>>,
}

impl Chroma {
    /// The collection `name` on the server at `url` (`http://host:port`). Nothing is
    /// contacted until the first call.
    pub fn new(url: &str, name: &str) -> Self {
        Self {
            url: url.trim_end_matches('/').to_string(),
            name: name.to_string(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .expect("a plain HTTP client builds"),
            conn: Mutex::new(None),
        }
    }

    /// The server's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The collection's name.
    pub fn collection_name(&self) -> &str {
        &self.name
    }

    /// Classifies a failure of `what`. Only a request the server found malformed (400, 413,
    /// 422) is the batch's fault; anything else — no connection, a timeout, 5xx, and also
    /// 401/403/404 (a proxy or server set up wrong, a collection deleted under us) — is an
    /// outage to wait out, so no batch is dead-lettered for it.
    fn error(&self, what: &str, e: impl std::fmt::Display) -> ChromaError {
        let raw = e.to_string();
        // The crate reports HTTP failures as "<status> <reason>: <body>".
        let status = raw.get(..3).and_then(|s| s.parse::<u16>().ok());
        let message = format!("{what}: {raw}");
        match status {
            Some(400 | 413 | 422) => ChromaError::Rejected {
                url: self.url.clone(),
                message,
            },
            _ => ChromaError::Unavailable {
                url: self.url.clone(),
                message,
            },
        }
    }

    async fn deadline<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, ChromaError> {
        match tokio::time::timeout(TIMEOUT, f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(self.error(what, e)),
            Err(_) => Err(self.error(what, format!("no answer within {TIMEOUT:?}"))),
        }
    }

    /// `GET /api/v2/heartbeat`.
    pub async fn heartbeat(&self) -> Result<(), ChromaError> {
        let url = format!("{}/api/v2/heartbeat", self.url);
        let resp = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| ChromaError::Unavailable {
                url: self.url.clone(),
                message: format!("heartbeat: {e}"),
            })?;
        if !resp.status().is_success() {
            return Err(ChromaError::Unavailable {
                url: self.url.clone(),
                message: format!("heartbeat: {}", resp.status()),
            });
        }
        Ok(())
    }

    async fn max_batch(&self) -> usize {
        let url = format!("{}/api/v2/pre-flight-checks", self.url);
        let answer: Option<Value> =
            async { self.http.get(&url).send().await.ok()?.json().await.ok() }.await;
        answer
            .and_then(|v| v.get("max_batch_size")?.as_u64())
            .map_or(DEFAULT_MAX_BATCH, |n| n.max(1) as usize)
    }

    async fn connect(&self) -> Result<Connected, ChromaError> {
        self.heartbeat().await?;
        let client = self
            .deadline(
                "connect",
                ChromaClient::new(ChromaClientOptions {
                    url: Some(self.url.clone()),
                    ..Default::default()
                }),
            )
            .await?;
        let mut metadata = Map::new();
        metadata.insert("hnsw:space".into(), json!("cosine"));
        let collection = self
            .deadline(
                "get or create collection",
                client.get_or_create_collection(&self.name, Some(metadata)),
            )
            .await?;
        let space = collection
            .metadata()
            .and_then(|m| m.get("hnsw:space"))
            .and_then(Value::as_str)
            .unwrap_or("l2");
        if space != "cosine" {
            tracing::warn!(collection = %self.name, space, "the collection exists with another distance; scores will not be cosine similarities");
        }
        let max_batch = self.max_batch().await;
        tracing::info!(url = %self.url, collection = %self.name, max_batch, "connected to chroma");
        Ok(Connected {
            collection,
            max_batch,
        })
    }

    /// Runs `f` on the connected collection, connecting first if needed; a failure drops the
    /// connection.
    async fn with<T>(
        &self,
        f: impl AsyncFnOnce(&Connected) -> Result<T, ChromaError>,
    ) -> Result<T, ChromaError> {
        let mut conn = self.conn.lock().await;
        if conn.is_none() {
            *conn = Some(self.connect().await?);
        }
        let result = f(conn.as_ref().expect("connected")).await;
        if result.is_err() {
            *conn = None;
        }
        result
    }

    /// Connects (if not yet) and checks the collection answers.
    pub async fn ensure(&self) -> Result<(), ChromaError> {
        self.with(async |_| Ok(())).await
    }

    /// Upserts `points` in batches of at most `batch` (and the server's limit). A repeated id
    /// keeps its first point (Chroma refuses a request with repeated ids).
    pub async fn upsert(&self, points: &[Point], batch: usize) -> Result<(), ChromaError> {
        let mut ids = std::collections::HashSet::new();
        let unique: Vec<&Point> = points
            .iter()
            .filter(|p| ids.insert(p.id.as_str()))
            .collect();
        if unique.is_empty() {
            return Ok(());
        }
        self.with(async |c| {
            for part in unique.chunks(batch.clamp(1, c.max_batch)) {
                let entries = CollectionEntries {
                    ids: part.iter().map(|p| p.id.as_str()).collect(),
                    embeddings: Some(part.iter().map(|p| p.vector.to_vec()).collect()),
                    metadatas: Some(part.iter().map(|p| p.metadata.clone()).collect()),
                    documents: Some(part.iter().map(|p| p.text.as_str()).collect()),
                };
                self.deadline("upsert", c.collection.upsert(entries, None))
                    .await?;
            }
            Ok(())
        })
        .await
    }

    /// Number of points in the collection.
    pub async fn count(&self) -> Result<usize, ChromaError> {
        self.with(async |c| self.deadline("count", c.collection.count()).await)
            .await
    }

    /// The `k` points nearest to `vector`, optionally filtered by a `where` document.
    pub async fn query(
        &self,
        vector: &[f32],
        k: usize,
        filter: Option<Value>,
    ) -> Result<Vec<Found>, ChromaError> {
        let result = self
            .with(async |c| {
                let options = QueryOptions {
                    query_embeddings: Some(vec![vector.to_vec()]),
                    n_results: Some(k),
                    where_metadata: filter,
                    include: Some(vec!["documents", "metadatas", "distances"]),
                    ..Default::default()
                };
                self.deadline("query", c.collection.query(options, None))
                    .await
            })
            .await?;
        let ids = result.ids.into_iter().next().unwrap_or_default();
        let mut docs = result
            .documents
            .and_then(|d| d.into_iter().next())
            .unwrap_or_default()
            .into_iter();
        let mut metas = result
            .metadatas
            .and_then(|m| m.into_iter().next())
            .unwrap_or_default()
            .into_iter();
        let mut dists = result
            .distances
            .and_then(|d| d.into_iter().next())
            .unwrap_or_default()
            .into_iter();
        Ok(ids
            .into_iter()
            .map(|id| Found {
                id,
                text: docs.next().unwrap_or_default(),
                metadata: metas.next().flatten().unwrap_or_default(),
                // Cosine distance is 1 - cosine similarity.
                score: 1.0 - dists.next().unwrap_or(1.0),
            })
            .collect())
    }
}

impl crate::health::Ping for Chroma {
    fn ping(&self) -> futures::future::BoxFuture<'_, Result<(), String>> {
        Box::pin(async move { self.heartbeat().await.map_err(|e| e.to_string()) })
    }
}
