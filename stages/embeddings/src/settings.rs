//! `embeddings` settings in pipeline.yaml.

use std::path::PathBuf;

use serde::Deserialize;

use crate::model::{ModelSpec, MAX_TOKENS, MODEL_SHA256};

/// Where the model files are when neither the setting nor `SLUICE_MODEL_DIR` says.
pub fn default_model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SLUICE_MODEL_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
    home.join(".cache/sluice/models/all-MiniLM-L6-v2")
}

/// Expands a leading `~/`.
fn expand(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => PathBuf::from(home).join(rest),
        _ => PathBuf::from(p),
    }
}

/// `embeddings` settings. Every field has a default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// Directory with `model.onnx` and the tokenizer files (default: `SLUICE_MODEL_DIR`, else
    /// `~/.cache/sluice/models/all-MiniLM-L6-v2`, where `fetch-model.sh` puts them).
    pub model_dir: Option<String>,
    /// The ONNX Runtime library (default: `ORT_DYLIB_PATH`, else `<model_dir>/libonnxruntime.so`).
    pub onnxruntime: Option<String>,
    /// Expected sha256 of `model.onnx`.
    pub model_sha256: String,
    /// Texts per model run (texts of similar length run together).
    pub batch_size: usize,
    /// Model sessions run side by side (default: one per core).
    pub sessions: Option<usize>,
    /// ONNX Runtime intra-op threads per session.
    pub threads: Option<usize>,
    /// Anchor texts shorter than this many characters are skipped (and counted).
    pub min_chars: usize,
    /// Also embed the pages' visible text, in chunks.
    pub embed_pages: bool,
    /// Tokens per page chunk (at most the model's 256, special tokens included).
    pub chunk_tokens: usize,
    /// Tokens shared by consecutive chunks.
    pub chunk_overlap: usize,
    /// Chunks per page at most (the rest of a very long page is not embedded, and counted).
    pub max_chunks_per_page: usize,
    /// The Chroma collection (created with cosine distance if missing).
    pub collection: String,
    /// Points per Chroma upsert (capped at the server's maximum batch size).
    pub upsert_batch: usize,
    /// Vectors of recent texts kept in memory, so repeated texts (navigation links) and
    /// retried batches are not embedded again.
    pub vector_cache: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            model_dir: None,
            onnxruntime: None,
            model_sha256: MODEL_SHA256.into(),
            batch_size: 2,
            sessions: None,
            threads: None,
            min_chars: 2,
            embed_pages: false,
            chunk_tokens: MAX_TOKENS,
            chunk_overlap: 32,
            max_chunks_per_page: 32,
            collection: "sluice".into(),
            upsert_batch: 1000,
            vector_cache: 50_000,
        }
    }
}

impl Settings {
    /// The model these settings load.
    pub fn model(&self) -> ModelSpec {
        ModelSpec {
            dir: self
                .model_dir
                .as_deref()
                .filter(|d| !d.trim().is_empty())
                .map_or_else(default_model_dir, expand),
            onnxruntime: self
                .onnxruntime
                .as_deref()
                .filter(|p| !p.trim().is_empty())
                .map(expand),
            sha256: self.model_sha256.clone(),
            sessions: self.sessions,
            threads: self.threads,
        }
    }
}

impl sluice_config::Validate for Settings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.batch_size == 0 {
            return Err(("batch_size", "batch_size must be at least 1".into()));
        }
        if self.threads == Some(0) {
            return Err(("threads", "threads must be at least 1".into()));
        }
        if self.sessions == Some(0) {
            return Err(("sessions", "sessions must be at least 1".into()));
        }
        if !(8..=MAX_TOKENS).contains(&self.chunk_tokens) {
            return Err((
                "chunk_tokens",
                format!("chunk_tokens must be between 8 and {MAX_TOKENS} (the model's length)"),
            ));
        }
        if self.chunk_overlap >= self.chunk_tokens / 2 {
            return Err((
                "chunk_overlap",
                "chunk_overlap must be less than half of chunk_tokens".into(),
            ));
        }
        if !(1..=1024).contains(&self.max_chunks_per_page) {
            return Err((
                "max_chunks_per_page",
                "max_chunks_per_page must be between 1 and 1024".into(),
            ));
        }
        if self.upsert_batch == 0 {
            return Err(("upsert_batch", "upsert_batch must be at least 1".into()));
        }
        if self.model_sha256.len() != 64
            || !self.model_sha256.chars().all(|c| c.is_ascii_hexdigit())
        {
            return Err((
                "model_sha256",
                "model_sha256 must be 64 hexadecimal digits".into(),
            ));
        }
        let name_ok = (3..=512).contains(&self.collection.len())
            && self
                .collection
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            && self
                .collection
                .starts_with(|c: char| c.is_ascii_alphanumeric())
            && self
                .collection
                .ends_with(|c: char| c.is_ascii_alphanumeric());
        if !name_ok {
            return Err((
                "collection",
                "collection must be 3-512 characters of [a-zA-Z0-9._-], starting and ending with a letter or digit (Chroma's rule)".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sluice_config::Validate;

    use super::*;

    #[test]
    fn defaults_are_valid_and_rules_hold() {
        assert!(Settings::default().validate().is_ok());
        let bad = |f: fn(&mut Settings)| {
            let mut s = Settings::default();
            f(&mut s);
            s.validate().unwrap_err().0
        };
        assert_eq!(bad(|s| s.batch_size = 0), "batch_size");
        assert_eq!(bad(|s| s.chunk_tokens = 300), "chunk_tokens");
        assert_eq!(bad(|s| s.chunk_overlap = 200), "chunk_overlap");
        assert_eq!(bad(|s| s.collection = "a b".into()), "collection");
        assert_eq!(bad(|s| s.collection = "-ab".into()), "collection");
        assert_eq!(bad(|s| s.model_sha256 = "xyz".into()), "model_sha256");
    }

    #[test]
    fn model_dir_expands_home() {
        let s = Settings {
            model_dir: Some("~/models/m".into()),
            ..Settings::default()
        };
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(s.model().dir, PathBuf::from(home).join("models/m"));
        }
        let s = Settings {
            model_dir: Some("/opt/m".into()),
            ..Settings::default()
        };
        assert_eq!(s.model().dir, PathBuf::from("/opt/m"));
    }
}
