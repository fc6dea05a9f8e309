//! Where the tables live: a local directory (the default, `./data`) or an object store URL
//! (`s3://bucket/prefix`, configured by the usual `AWS_*` variables, so S3-compatible stores
//! work through `AWS_ENDPOINT_URL` and `AWS_ALLOW_HTTP`).
//!
//! Layout under the root: `<table>/<file>.parquet` for finished files, `_tmp/<table>/...` for
//! files being written. Query engines list `<table>/` only, so they never see a partial file.

use std::path::PathBuf;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

/// Storage errors. All of them are worth retrying (the store may be down) except `Config`.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The storage setting cannot be used.
    #[error("storage `{spec}`: {reason}")]
    Config {
        /// The setting.
        spec: String,
        /// Why.
        reason: String,
    },
    /// The store failed.
    #[error("storage: {0}")]
    Store(#[from] object_store::Error),
    /// A local file operation failed.
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
}

/// A handle to the dataset's storage. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    /// Prefix of everything inside the store.
    root: Path,
    /// The root as a URL (`file:///abs/dir/` or `s3://bucket/prefix/`).
    url: Url,
    /// The local directory, when local.
    local: Option<PathBuf>,
}

impl Storage {
    /// Opens `spec`: a directory path (created if missing) or an object store URL.
    pub fn open(spec: &str) -> Result<Self, StorageError> {
        let config = |reason: String| StorageError::Config {
            spec: spec.to_string(),
            reason,
        };
        let spec_trim = spec.trim();
        if spec_trim.is_empty() {
            return Err(config("empty".into()));
        }
        match Url::parse(spec_trim) {
            Ok(url) if url.scheme() != "file" && url.scheme().len() > 1 => {
                let (store, root): (Arc<dyn ObjectStore>, Path) = match url.scheme() {
                    "s3" | "s3a" => {
                        let bucket = url.host_str().ok_or_else(|| config("no bucket".into()))?;
                        let s3 = object_store::aws::AmazonS3Builder::from_env()
                            .with_bucket_name(bucket)
                            .build()
                            .map_err(|e| config(e.to_string()))?;
                        (Arc::new(s3), Path::from(url.path().trim_matches('/')))
                    }
                    _ => {
                        let (store, root) =
                            object_store::parse_url(&url).map_err(|e| config(e.to_string()))?;
                        (Arc::from(store), root)
                    }
                };
                let mut url = url;
                if !url.path().ends_with('/') {
                    url.set_path(&format!("{}/", url.path()));
                }
                Ok(Self {
                    store,
                    root,
                    url,
                    local: None,
                })
            }
            _ => {
                let dir = match Url::parse(spec_trim) {
                    Ok(u) if u.scheme() == "file" => u
                        .to_file_path()
                        .map_err(|_| config("not a local path".into()))?,
                    _ => PathBuf::from(spec_trim),
                };
                std::fs::create_dir_all(&dir)
                    .map_err(|e| config(format!("cannot create {}: {e}", dir.display())))?;
                let dir = dir
                    .canonicalize()
                    .map_err(|e| config(format!("{}: {e}", dir.display())))?;
                let store =
                    LocalFileSystem::new_with_prefix(&dir).map_err(|e| config(e.to_string()))?;
                let url = Url::from_directory_path(&dir)
                    .map_err(|_| config("not an absolute path".into()))?;
                Ok(Self {
                    store: Arc::new(store),
                    root: Path::default(),
                    url,
                    local: Some(dir),
                })
            }
        }
    }

    /// The object store.
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
    }

    /// The root as a URL, ending in `/`.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The local directory, if the storage is local.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local.as_deref()
    }

    fn under(&self, parts: &[&str]) -> Path {
        let mut p = self.root.clone();
        for part in parts {
            for piece in part.split('/').filter(|s| !s.is_empty()) {
                p = p.join(piece);
            }
        }
        p
    }

    /// Path of a finished file of `table`.
    pub fn table_file(&self, table: &str, file: &str) -> Path {
        self.under(&[table, file])
    }

    /// Path of a file being written for `table`.
    pub fn tmp_file(&self, table: &str, file: &str) -> Path {
        self.under(&["_tmp", table, file])
    }

    /// A path relative to the root (`pages/x.parquet`) inside the store.
    pub fn resolve(&self, relative: &str) -> Path {
        self.under(&[relative])
    }

    /// `path` relative to the root, for manifests.
    pub fn relative(&self, path: &Path) -> String {
        let full = path.as_ref();
        let root = self.root.as_ref();
        full.strip_prefix(root)
            .unwrap_or(full)
            .trim_start_matches('/')
            .to_string()
    }

    /// URL of a table's directory, for query engines.
    pub fn table_url(&self, table: &str) -> Url {
        self.url
            .join(&format!("{table}/"))
            .expect("table names are URL-safe")
    }

    /// Finished files of `table` whose name starts with `prefix`, with their sizes.
    pub async fn list(
        &self,
        table: &str,
        prefix: &str,
    ) -> Result<Vec<(String, u64)>, StorageError> {
        let dir = self.under(&[table]);
        let metas: Vec<_> = self.store.list(Some(&dir)).try_collect().await?;
        Ok(metas
            .into_iter()
            .filter_map(|m| {
                let name = m.location.filename()?.to_string();
                name.starts_with(prefix).then_some((name, m.size))
            })
            .collect())
    }

    /// Moves a finished temporary file into place and makes it durable: on a local disk the
    /// file and its directory are synced, so a crash after this cannot lose or half-keep it;
    /// an object store makes an upload visible only once complete.
    pub async fn publish(&self, tmp: &Path, dest: &Path) -> Result<u64, StorageError> {
        if let Some(dir) = &self.local {
            // Sync the content before the rename makes it visible.
            let tmp_fs = dir.join(self.relative(tmp));
            let dest_fs = dir.join(self.relative(dest));
            tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
                let f = std::fs::File::open(&tmp_fs)?;
                f.sync_all()?;
                let size = f.metadata()?.len();
                if let Some(parent) = dest_fs.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                std::fs::rename(&tmp_fs, &dest_fs)?;
                if let Some(parent) = dest_fs.parent() {
                    std::fs::File::open(parent)?.sync_all()?;
                }
                Ok(size)
            })
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))??;
            let size = self.store.head(dest).await?.size;
            return Ok(size);
        }
        self.store.rename(tmp, dest).await?;
        Ok(self.store.head(dest).await?.size)
    }

    /// Deletes a file, ignoring one that is already gone.
    pub async fn delete(&self, path: &Path) -> Result<(), StorageError> {
        match self.store.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Checks the store answers (lists the root).
    pub async fn ping(&self) -> Result<(), StorageError> {
        self.store.list_with_delimiter(Some(&self.root)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_storage_publishes_atomically_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let s = Storage::open(dir.path().join("data").to_str().unwrap()).unwrap();
        assert!(s.url().as_str().starts_with("file:///"));
        assert!(s.url().as_str().ends_with("/data/"));
        let tmp = s.tmp_file("pages", "x.parquet");
        s.store()
            .put(&tmp, bytes::Bytes::from_static(b"hello").into())
            .await
            .unwrap();
        assert!(
            s.list("pages", "").await.unwrap().is_empty(),
            "temp files are not in the table"
        );
        let dest = s.table_file("pages", "x.parquet");
        assert_eq!(s.publish(&tmp, &dest).await.unwrap(), 5);
        assert_eq!(
            s.list("pages", "x").await.unwrap(),
            vec![("x.parquet".into(), 5)]
        );
        assert_eq!(s.relative(&dest), "pages/x.parquet");
        assert!(dir.path().join("data/pages/x.parquet").is_file());
        assert!(s.table_url("pages").as_str().ends_with("/data/pages/"));
        s.delete(&dest).await.unwrap();
        s.delete(&dest).await.unwrap();
    }

    #[test]
    fn bad_specs_are_errors() {
        assert!(Storage::open("").is_err());
        assert!(Storage::open("s3://").is_err());
    }
}
