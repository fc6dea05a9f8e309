use std::time::Duration;

use serde::Deserialize;
use sluice_config::{ByteSize, HumanDuration};

/// `parquet-batch` settings in pipeline.yaml.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// A file is closed at this many rows.
    pub max_rows: usize,
    /// ... or at this many bytes of records.
    pub max_bytes: ByteSize,
    /// ... or this long after its first record.
    pub max_age: HumanDuration,
    /// All open files together: the biggest is closed beyond this.
    pub max_buffered: ByteSize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_rows: 10_000,
            max_bytes: ByteSize(128 << 20),
            max_age: HumanDuration(Duration::from_secs(60)),
            max_buffered: ByteSize(512 << 20),
        }
    }
}

impl Settings {
    /// Values that parse but make no sense, with the field to point at.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_rows == 0 {
            return Err(("max_rows", "max_rows must be at least 1".into()));
        }
        if self.max_bytes.0 == 0 {
            return Err(("max_bytes", "max_bytes must be more than 0".into()));
        }
        if self.max_age.0.is_zero() {
            return Err(("max_age", "max_age must be more than 0s".into()));
        }
        Ok(())
    }
}

impl sluice_config::Validate for Settings {
    fn validate(&self) -> Result<(), (&'static str, String)> {
        self.check()
    }
}
